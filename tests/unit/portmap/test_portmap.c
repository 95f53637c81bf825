/* SPDX-License-Identifier: MIT */
/*
 * The port mapping client's pieces without a gateway: the --portmap list, and
 * which external addresses are offered to peers. (The client against real
 * gateways is tests/lab/test_portmap.sh.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "portmap/portmap.c"

static void test_protocols_parse(void **state)
{
	unsigned p = 99;

	(void)state;
	assert_int_equal(portmap_protocols_parse("auto", &p), 0);
	assert_int_equal(p, PORTMAP_ALL);
	assert_int_equal(portmap_protocols_parse("off", &p), 0);
	assert_int_equal(p, 0);
	assert_int_equal(portmap_protocols_parse("pcp", &p), 0);
	assert_int_equal(p, PORTMAP_PCP);
	assert_int_equal(portmap_protocols_parse("upnp,nat-pmp", &p), 0);
	assert_int_equal(p, PORTMAP_UPNP | PORTMAP_NATPMP);
	assert_int_equal(portmap_protocols_parse("pcp,pcp", &p), 0);
	assert_int_equal(p, PORTMAP_PCP);

	p = 99;
	assert_int_equal(portmap_protocols_parse("", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse(NULL, &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("pcp,", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse(",pcp", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("natpmp", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("pc", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("pcpx", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("auto,pcp", &p), -EINVAL);
	assert_int_equal(p, 99); /* untouched on error */

	assert_string_equal(portmap_proto_name(PORTMAP_NATPMP), "nat-pmp");
	assert_null(portmap_proto_name(0));
	assert_null(portmap_proto_name(PORTMAP_PCP | PORTMAP_UPNP));
}

/* A gateway that is itself behind a NAT maps onto an address nobody outside reaches. */
static void test_addr_usable(void **state)
{
	static const uint8_t yes[][4] = {{203, 0, 113, 2},    {198, 51, 100, 1}, {192, 0, 2, 9},
					 {100, 63, 255, 255}, {100, 128, 0, 0},	 {172, 32, 0, 1}};
	static const uint8_t no[][4] = {{0, 0, 0, 0},	  {10, 1, 2, 3},       {127, 0, 0, 1},
					{169, 254, 1, 1}, {172, 16, 0, 1},     {172, 31, 255, 255},
					{192, 168, 1, 1}, {100, 64, 0, 1},     {100, 127, 255, 255},
					{224, 0, 0, 1},	  {255, 255, 255, 255}};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(yes); i++)
		assert_true(addr_usable(yes[i]));
	for (size_t i = 0; i < ARRAY_SIZE(no); i++)
		assert_false(addr_usable(no[i]));
}

/* A pinhole is offered for a global unicast address only (2000::/3). */
static void test_addr6_global(void **state)
{
	static const uint8_t yes[][16] = {{0x20, 0x01, 0x0d, 0xb8, 0, 2, [15] = 2},
					  {0x3f, 0xff, [15] = 1}};
	static const uint8_t no[][16] = {{0xfe, 0x80, [15] = 1}, /* link-local */
					 {0xfd, 0x7e, [15] = 1}, /* ULA, as the tailnet's */
					 {[15] = 1},		 /* loopback */
					 {0xff, 0x02, [15] = 1}, /* multicast */
					 {[10] = 0xff, [11] = 0xff, 192, 0, 2, 1},
					 {0x40, [15] = 1}};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(yes); i++)
		assert_true(addr6_global(yes[i]));
	for (size_t i = 0; i < ARRAY_SIZE(no); i++)
		assert_false(addr6_global(no[i]));
}

/* The IPv4 mapping comes first, then the pinhole; a small cap takes the first. */
static void test_endpoints_order(void **state)
{
	struct portmap pm = {0};
	struct endpoint eps[3];

	(void)state;
	pthread_mutex_init(&pm.lock, NULL);
	assert_int_equal(endpoint_parse(&pm.pub, "192.0.2.2:41641"), 0);
	assert_int_equal(endpoint_parse(&pm.pub6, "[2001:db8:2::2]:41641"), 0);
	assert_int_equal(portmap_endpoints(&pm, eps, 3), 0);
	pm.has_pub6 = true;
	assert_int_equal(portmap_endpoints(&pm, eps, 3), 1);
	assert_true(endpoint_equal(&eps[0], &pm.pub6));
	pm.has_pub = true;
	assert_int_equal(portmap_endpoints(&pm, eps, 3), 2);
	assert_true(endpoint_equal(&eps[0], &pm.pub));
	assert_true(endpoint_equal(&eps[1], &pm.pub6));
	assert_int_equal(portmap_endpoints(&pm, eps, 1), 1);
	assert_true(endpoint_equal(&eps[0], &pm.pub));
	assert_int_equal(portmap_endpoints(NULL, eps, 3), 0);
	pthread_mutex_destroy(&pm.lock);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_protocols_parse),
	    cmocka_unit_test(test_addr_usable),
	    cmocka_unit_test(test_addr6_global),
	    cmocka_unit_test(test_endpoints_order),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
