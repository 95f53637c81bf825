/* SPDX-License-Identifier: MIT */
/* The relay map: the admin's file (strict, errors that say where), the wire, deltas. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/ctrlmsg.h"
#include "proto/relaymap.h"

static const char example[] =
    "{\"regions\":[{\"id\":1,\"code\":\"fra\",\"name\":\"Frankfurt\",\"nodes\":["
    "{\"name\":\"fra1\",\"host\":\"relay1.example\",\"ipv4\":\"192.0.2.10\","
    "\"ipv6\":\"2001:db8::10\",\"relay_port\":443,\"stun_port\":3478,\"tls\":true},"
    "{\"name\":\"fra2\",\"host\":\"relay2.example\",\"relay_port\":8443,\"stun_port\":0,"
    "\"tls\":true,\"key\":\"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\"}]},"
    "{\"id\":2,\"code\":\"control\",\"name\":\"\",\"nodes\":[{\"name\":\"control\","
    "\"relay_port\":0,\"stun_port\":3478,\"tls\":false}]}]}";

static void test_parse_encode(void **state)
{
	struct netmap_relay_map rm, rm2;
	char err[RELAYMAP_ERR_MAX], *text;
	size_t len;

	(void)state;
	assert_int_equal(relaymap_parse(example, strlen(example), &rm, err, sizeof(err)), 0);
	assert_int_equal(rm.n_regions, 2);
	assert_int_equal(rm.regions[0].id, 1);
	assert_string_equal(rm.regions[0].code, "fra");
	assert_int_equal(rm.regions[0].n_nodes, 2);
	assert_true(rm.regions[0].nodes[0].has_ipv4 && rm.regions[0].nodes[0].has_ipv6);
	assert_int_equal(rm.regions[0].nodes[0].ipv4[3], 10);
	assert_int_equal(rm.regions[0].nodes[1].relay_port, 8443);
	assert_true(rm.regions[0].nodes[1].has_key);
	assert_int_equal(rm.regions[0].nodes[1].key[0], 1);
	assert_false(rm.regions[1].nodes[0].host[0]);
	/* The text form is canonical: what we parse is what we write. */
	assert_int_equal(relaymap_encode(&rm, &text, &len), 0);
	assert_int_equal(len, strlen(example));
	assert_string_equal(text, example);
	assert_int_equal(relaymap_parse(text, len, &rm2, err, sizeof(err)), 0);
	assert_true(relaymap_equal(&rm, &rm2));
	free(text);
	rm2.regions[0].nodes[1].stun_port = 1;
	assert_false(relaymap_equal(&rm, &rm2));
	/* stun_port defaults to 3478, relay_port to 0, tls to false. */
	{
		static const char t[] = "{\"regions\":[{\"id\":9,\"code\":\"x\",\"nodes\":"
					"[{\"name\":\"a\",\"ipv4\":\"198.51.100.1\"}]}]}";

		assert_int_equal(relaymap_parse(t, sizeof(t) - 1, &rm, err, sizeof(err)), 0);
	}
	assert_int_equal(rm.regions[0].nodes[0].stun_port, 3478);
	assert_int_equal(rm.regions[0].nodes[0].relay_port, 0);
	/* No regions: a valid map that turns relays off. */
	assert_int_equal(relaymap_parse("{\"regions\":[]}", 14, &rm, err, sizeof(err)), 0);
	assert_int_equal(rm.n_regions, 0);
}

static void bad(const char *text, const char *want)
{
	struct netmap_relay_map rm;
	char err[RELAYMAP_ERR_MAX] = "";

	assert_int_equal(relaymap_parse(text, strlen(text), &rm, err, sizeof(err)), -EINVAL);
	if (strcmp(err, want))
		fail_msg("%s\n  got:  %s\n  want: %s", text, err, want);
	assert_int_equal(rm.n_regions, 0);
}

#define R(nodes) "{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[" nodes "]}]}"

static void test_errors(void **state)
{
	(void)state;
	bad("{\"regions\":[", "1:12: ']' expected near end of file");
	bad("[]", "the relay map must be an object with \"regions\"");
	bad("{\"region\":[]}", "relay map: unknown field \"region\"");
	bad("{\"regions\":{}}", "regions: must be an array of at most 32 regions");
	bad("{\"regions\":[{\"code\":\"a\",\"nodes\":[]}]}", "regions[0]: missing \"id\"");
	bad("{\"regions\":[{\"id\":0,\"code\":\"a\",\"nodes\":[]}]}",
	    "regions[0].id: must be an integer from 1 to 65535");
	bad("{\"regions\":[{\"id\":1,\"code\":\"A b\",\"nodes\":[]}]}",
	    "regions[0].code: \"A b\" is not a region code (1-15 of a-z, 0-9, '-')");
	bad("{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[]}]}",
	    "regions[0].nodes: must be an array of 1 to 4 relays");
	bad(R("{\"name\":\"n\",\"host\":\"h\",\"ipv4\":\"1.2.3\"}"),
	    "regions[0].nodes[0].ipv4: \"1.2.3\" is not an IPv4 address");
	bad(R("{\"name\":\"n\",\"ipv6\":\"fe80::1%eth0\"}"),
	    "regions[0].nodes[0].ipv6: \"fe80::1%eth0\" is not an IPv6 address");
	bad(R("{\"name\":\"n\",\"host\":\"h\",\"relay_port\":70000}"),
	    "regions[0].nodes[0].relay_port: must be a port number (0-65535)");
	bad(R("{\"name\":\"n\",\"host\":\"h\",\"tls\":\"yes\"}"),
	    "regions[0].nodes[0].tls: must be true or false");
	bad(R("{\"name\":\"n\",\"host\":\"h\",\"stun\":3478}"),
	    "regions[0].nodes[0]: unknown field \"stun\"");
	bad(R("{\"name\":\"n\",\"relay_port\":443}"),
	    "regions[0].nodes[0]: needs \"host\", \"ipv4\" or \"ipv6\" (only the control server "
	    "itself goes without, with relay_port 0)");
	bad(R("{\"name\":\"n\",\"host\":\"a b\"}"),
	    "regions[0].nodes[0].host: \"a b\" is not a host name");
	bad(R("{\"name\":\"n\",\"host\":\"h\",\"key\":\"abc\"}"),
	    "regions[0].nodes[0].key: not a key (44 characters of base64)");
	bad(R("{\"name\":\"n\",\"host\":\"h\"},{\"name\":\"n\",\"host\":\"g\"}"),
	    "regions[0].nodes[1].name: \"n\" twice in the region");
	bad("{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"host\":\"h\"}]},"
	    "{\"id\":1,\"code\":\"b\",\"nodes\":[{\"name\":\"n\",\"host\":\"h\"}]}]}",
	    "regions[1].id: 1 is also the id of regions[0]");
	bad("{\"regions\":[{\"id\":1,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"host\":\"h\"}]},"
	    "{\"id\":2,\"code\":\"a\",\"nodes\":[{\"name\":\"n\",\"host\":\"h\"}]}]}",
	    "regions[1].code: \"a\" is also the code of regions[0]");
	bad("{\"regions\":[],\"regions\":[]}", "1:23: duplicate object key near '\"regions\"'");
}

/* In a netmap the map is read leniently (newer servers may add fields) and deltas replace it. */
static void test_wire(void **state)
{
	static const char nm_text[] =
	    "{\"type\":\"netmap\",\"seq\":1,\"tailnet\":\"t\",\"self\":{\"id\":1,\"name\":\"a\","
	    "\"node_key\":\"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\",\"addresses\":[],"
	    "\"allowed_ips\":[],\"home_region\":7},\"peers\":[],\"relay_map\":{\"regions\":[{"
	    "\"id\":7,\"code\":\"x\",\"future\":1,\"nodes\":[{\"name\":\"n\",\"host\":\"h\"}]}]}}";
	static const char delta_text[] =
	    "{\"type\":\"delta\",\"seq\":2,\"relay_map\":{\"regions\":[]}}";
	struct ctrl_msg m, d;

	(void)state;
	assert_int_equal(ctrl_msg_decode(nm_text, strlen(nm_text), &m), 0);
	assert_int_equal(m.netmap->self.home_region, 7);
	assert_int_equal(m.netmap->relay_map.n_regions, 1);
	assert_non_null(netmap_relay_region_find(&m.netmap->relay_map, 7));
	assert_null(netmap_relay_region_find(&m.netmap->relay_map, 8));
	assert_int_equal(ctrl_msg_decode(delta_text, strlen(delta_text), &d), 0);
	assert_non_null(d.delta->relay_map);
	assert_int_equal(netmap_apply_delta(m.netmap, d.delta), 0);
	assert_int_equal(m.netmap->relay_map.n_regions, 0);
	ctrl_msg_clear(&d);
	/* A delta without one leaves the map alone. */
	assert_int_equal(ctrl_msg_decode("{\"type\":\"delta\",\"seq\":3}", 24, &d), 0);
	assert_null(d.delta->relay_map);
	ctrl_msg_clear(&d);
	/* A bad map in a netmap is a bad message; so is a home region out of range. */
	assert_int_equal(ctrl_msg_decode("{\"type\":\"delta\",\"seq\":3,\"relay_map\":{}}", 37, &d),
			 -EBADMSG);
	assert_int_equal(ctrl_msg_decode("{\"type\":\"endpoints\",\"endpoints\":[],"
					 "\"home_region\":65536}",
					 55, &d),
			 -EBADMSG);
	assert_int_equal(ctrl_msg_decode("{\"type\":\"endpoints\",\"endpoints\":[],"
					 "\"home_region\":3}",
					 51, &d),
			 0);
	assert_int_equal(d.endpoints.home_region, 3);
	ctrl_msg_clear(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_encode),
	    cmocka_unit_test(test_errors),
	    cmocka_unit_test(test_wire),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
