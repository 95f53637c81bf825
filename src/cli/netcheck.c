/* SPDX-License-Identifier: MIT */
/*
 * trellis netcheck [--json]: what the daemon's last STUN round found out about this
 * node's network (status "netcheck" and "relay"; docs/localapi.md).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char *yes_no(json_t *o, const char *k)
{
	return json_is_true(json_object_get(o, k)) ? "yes" : "no";
}

static const char *text_or(json_t *o, const char *k, const char *none)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s && *s ? s : none;
}

/* How a STUN probe travelled, in words (status "via"). */
static const char *via_words(const char *via)
{
	if (!strcmp(via, "ipv6"))
		return "over IPv6";
	if (!strcmp(via, "ipv4"))
		return "over IPv4";
	if (!strcmp(via, "nat64"))
		return "to its IPv4 address through the NAT64";
	return via;
}

/* The region's STUN probes of the last round, one a line: relay, address, how, answer. */
static void stun_lines(json_t *region)
{
	json_t *pr;
	size_t i;

	json_array_foreach(json_object_get(region, "stun"), i, pr)
	{
		json_t *ms = json_object_get(pr, "latency_ms");

		printf("    STUN %s at %s %s: ", text_or(pr, "node", "?"),
		       text_or(pr, "address", "?"), via_words(text_or(pr, "via", "?")));
		if (json_is_number(ms))
			printf("%.1f ms\n", json_number_value(ms));
		else
			printf("no answer\n");
	}
}

int cli_netcheck(int argc, char **argv, const struct cli_global *g)
{
	json_t *reply = NULL, *st, *nc, *relay, *v, *out, *pm, *n64;
	bool as_json = false;
	size_t i;
	int r;

	if (argc == 2 && !strcmp(argv[1], "--json"))
		as_json = true;
	else if (argc != 1)
		return cli_usage_error(argc, argv, argc > 2 && !strcmp(argv[1], "--json") ? 2 : 1);
	r = cli_status_call(argv[0], g, &reply);
	if (r < 0)
		return 1;
	st = json_object_get(reply, "status");
	nc = json_object_get(st, "netcheck");
	relay = json_object_get(st, "relay");
	if (!json_is_object(nc)) {
		fprintf(stderr, "trellis: netcheck: this trellisd does not report its network\n");
		json_decref(reply);
		return 1;
	}
	if (as_json) {
		out = json_deep_copy(nc);
		if (out && json_is_object(relay)) {
			json_t *lat = json_object(), *stun = json_object();

			json_array_foreach(json_object_get(relay, "regions"), i, v)
			{
				json_object_set(lat, text_or(v, "code", "?"),
						json_object_get(v, "latency_ms"));
				json_object_set(stun, text_or(v, "code", "?"),
						json_object_get(v, "stun"));
			}
			json_object_set_new(out, "latency_ms", lat);
			json_object_set_new(out, "stun", stun);
		}
		r = out ? json_dumpf(out, stdout, JSON_INDENT(2)) : -1;
		fputc('\n', stdout);
		json_decref(out);
		json_decref(reply);
		return r < 0 ? 1 : 0;
	}
	if (!json_is_true(json_object_get(nc, "measured")))
		printf("(no STUN round yet: the node has no relay map, or it just started)\n");
	printf("UDP: %s\n", yes_no(nc, "udp"));
	printf("IPv4: %s\n", text_or(nc, "ipv4", "(none)"));
	printf("IPv6: %s\n", text_or(nc, "ipv6", "(none)"));
	printf("mapping varies by destination: %s\n", yes_no(nc, "mapping_varies_by_dest"));
	pm = json_object_get(nc, "portmap");
	if (!json_is_object(pm))
		printf("port mapping: off\n");
	else
		printf("port mapping: %s%s%s (answered: PCP %s, NAT-PMP %s, UPnP %s)\n",
		       text_or(pm, "active", "none"),
		       json_is_string(json_object_get(pm, "external")) ? " " : "",
		       json_is_string(json_object_get(pm, "external"))
			   ? json_string_value(json_object_get(pm, "external"))
			   : "",
		       yes_no(pm, "pcp"), yes_no(pm, "nat_pmp"), yes_no(pm, "upnp"));
	v = json_object_get(pm, "ipv6");
	if (json_is_object(v))
		printf("IPv6 pinhole: %s (PCP at %s: %s)\n", text_or(v, "external", "none"),
		       text_or(v, "gateway", "?"), text_or(v, "state", "?"));
	n64 = json_object_get(nc, "nat64");
	if (json_is_object(n64)) {
		json_t *ra = json_object_get(n64, "ra");
		const char *src = text_or(n64, "source", "");

		printf("NAT64: %s%s%s%s\n", text_or(n64, "prefix", "none"),
		       !strcmp(src, "ra")      ? " from a router advertisement on "
		       : !strcmp(src, "dns64") ? " from the DNS64"
					       : "",
		       !strcmp(src, "ra") ? text_or(ra, "interface", "?") : "",
		       json_is_true(json_object_get(n64, "active"))
			   ? " (no IPv4 route: IPv4 reached through it)"
			   : "");
	}
	printf("preferred relay: %s\n", text_or(nc, "preferred_relay", "(none)"));
	json_array_foreach(json_object_get(relay, "regions"), i, v) {
		json_t *ms = json_object_get(v, "latency_ms");

		if (json_is_number(ms))
			printf("  %-12s %.1f ms\n", text_or(v, "code", "?"), json_number_value(ms));
		else
			printf("  %-12s -\n", text_or(v, "code", "?"));
		stun_lines(v);
	}
	json_decref(reply);
	return 0;
}
