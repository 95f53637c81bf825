/* SPDX-License-Identifier: MIT */
/* trellis whois ADDR: the node behind a tailnet address. */
#include <stdio.h>

#include "cli/cli.h"

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s && *s ? s : "-";
}

int cli_whois(int argc, char **argv, const struct cli_global *g)
{
	json_t *req, *reply = NULL, *node, *v;
	char in[512];
	size_t i;
	int r;

	if (argc != 2 || argv[1][0] == '-') /* no flags: a leading '-' is one mistyped */
		return cli_usage_error(argc, argv, argc == 2 ? 1 : 2);
	req = json_pack("{s:s, s:s}", "cmd", "whois", "addr", argv[1]);
	r = req ? cli_api_call(argv[0], g, req, &reply) : -1;
	json_decref(req);
	if (r < 0)
		return 1;
	node = json_object_get(reply, "node");
	printf("Machine:\n  Name:     %s\n  ID:       %lld\n  OS:       %s\n  Key:      %s\n"
	       "  Addresses:",
	       str(node, "hostname"), (long long)json_integer_value(json_object_get(node, "id")),
	       str(node, "os"), str(node, "node_key"));
	json_array_foreach(json_object_get(node, "ips"), i, v)
		printf(" %s", json_string_value(v) ? json_string_value(v) : "");
	printf("\n  Tags:    ");
	json_array_foreach(json_object_get(node, "tags"), i, v)
		printf(" %s", json_string_value(v) ? json_string_value(v) : "");
	printf("\nUser:\n  Name:     %s\n", str(node, "user"));
	/*
	 * What it may open on this node, and this node on it (status's MAY OPEN THERE);
	 * neither is said for this node itself, nor the second by a server too old to send it.
	 */
	if (json_object_get(node, "allowed_in")) {
		cli_access_format(json_object_get(node, "allowed_in"), in, sizeof(in));
		printf("May open here:\n  %s\n", in);
	}
	if (json_object_get(node, "may_open")) {
		cli_access_format(json_object_get(node, "may_open"), in, sizeof(in));
		printf("May open there:\n  %s\n", in);
	}
	json_decref(reply);
	return 0;
}
