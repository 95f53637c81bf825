/* SPDX-License-Identifier: MIT */
/*
 * trellis login [--login-server URL] [--auth-key KEY|file:PATH|-] [--hostname NAME]: logs in
 * anew (a new node key, an auth key or approval), as `trellis up --force-reauth`; also how a
 * logged-in node moves to another login server.
 */
#include "cli/cli.h"

int cli_login(int argc, char **argv, const struct cli_global *g)
{
	return cli_up_run(argc, argv, g, true);
}
