/* SPDX-License-Identifier: MIT */
/*
 * trellis set --hostname NAME: changes one remembered setting of `trellis up` without a new
 * login; a running node re-registers with it at once (the server renames the node).
 */
#include <getopt.h>
#include <stdio.h>

#include "cli/cli.h"

int cli_set(int argc, char **argv, const struct cli_global *g)
{
	static const struct option longopts[] = {
	    {"hostname", required_argument, NULL, 'n'},
	    {0},
	};
	const char *hostname = NULL;
	json_t *req, *reply = NULL;
	int c, r;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			hostname = optarg;
			break;
		case ':':
			fprintf(stderr, "trellis: %s: %s needs a value\n", argv[0],
				argv[optind - 1]);
			return cli_usage_error(argc, argv, argc);
		default:
			return cli_usage_error(argc, argv, optind - 1);
		}
	}
	if (optind != argc)
		return cli_usage_error(argc, argv, optind);
	if (!hostname || !*hostname) {
		fprintf(stderr, "trellis: %s: nothing to set (--hostname NAME)\n", argv[0]);
		return cli_usage_error(argc, argv, argc);
	}
	req = json_pack("{s:s, s:s}", "cmd", "set", "hostname", hostname);
	r = req ? cli_api_call(argv[0], g, req, &reply) : -1;
	json_decref(req);
	json_decref(reply);
	return r < 0 ? 1 : 0;
}
