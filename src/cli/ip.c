/* SPDX-License-Identifier: MIT */
/* trellis ip [-4|-6]: this node's tailnet addresses, one a line (for scripts). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int cli_ip(int argc, char **argv, const struct cli_global *g)
{
	json_t *req, *reply = NULL, *v;
	bool only4 = false, only6 = false;
	size_t i;
	int r, n = 0;

	if (argc == 2 && !strcmp(argv[1], "-4"))
		only4 = true;
	else if (argc == 2 && !strcmp(argv[1], "-6"))
		only6 = true;
	else if (argc != 1)
		return cli_usage_error(argc, argv, argc == 2 ? 1 : 2);
	req = json_pack("{s:s}", "cmd", "ip");
	r = req ? cli_api_call(argv[0], g, req, &reply) : -1;
	json_decref(req);
	if (r < 0)
		return 1;
	json_array_foreach(json_object_get(reply, "ips"), i, v) {
		const char *s = json_string_value(v);
		bool v6;

		if (!s)
			continue;
		v6 = strchr(s, ':') != NULL;
		if ((only4 && v6) || (only6 && !v6))
			continue;
		printf("%s\n", s);
		n++;
	}
	json_decref(reply);
	if (!n) {
		fprintf(stderr, "trellis: %s: no tailnet address (not logged in?)\n", argv[0]);
		return 1;
	}
	return 0;
}
