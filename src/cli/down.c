/* SPDX-License-Identifier: MIT */
/* trellis down: stop the tunnels; the login and keys stay for the next `up`. */
#include <stdio.h>

#include "cli/cli.h"

int cli_down(int argc, char **argv, const struct cli_global *g)
{
	json_t *req, *reply = NULL;
	int r;

	if (argc != 1)
		return cli_usage_error(argc, argv, 1);
	req = json_pack("{s:s}", "cmd", "down");
	r = req ? cli_api_call(argv[0], g, req, &reply) : -1;
	json_decref(req);
	json_decref(reply);
	return r < 0 ? 1 : 0;
}
