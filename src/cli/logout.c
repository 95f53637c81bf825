/* SPDX-License-Identifier: MIT */
/* trellis logout: disconnect and expire this node's key at the server. */
#include <stdio.h>

#include "cli/cli.h"

int cli_logout(int argc, char **argv, const struct cli_global *g)
{
	json_t *req, *reply = NULL;
	int r;

	if (argc != 1)
		return cli_usage_error(argc, argv, 1);
	req = json_pack("{s:s}", "cmd", "logout");
	r = req ? cli_api_call(argv[0], g, req, &reply) : -1;
	json_decref(req);
	json_decref(reply);
	return r < 0 ? 1 : 0;
}
