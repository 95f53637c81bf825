/* SPDX-License-Identifier: MIT */
/*
 * trellis up --login-server URL [--auth-key KEY] [--hostname NAME]: returns once
 * the node runs. With interactive login the daemon first answers needs_login
 * with a URL, which is printed; the final answer follows on the same connection.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int cli_up(int argc, char **argv, const struct cli_global *g)
{
	static const struct option longopts[] = {
	    {"login-server", required_argument, NULL, 'l'},
	    {"auth-key", required_argument, NULL, 'a'},
	    {"hostname", required_argument, NULL, 'n'},
	    {0},
	};
	const char *server = NULL, *authkey = NULL, *hostname = NULL;
	struct cli_api *api = NULL;
	json_t *req = NULL, *msg = NULL;
	int c, ret = 1;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			server = optarg;
			break;
		case 'a':
			authkey = optarg;
			break;
		case 'n':
			hostname = optarg;
			break;
		default:
			goto usage;
		}
	}
	if (optind != argc || !server || !*server)
		goto usage;
	req = json_pack("{s:s, s:s}", "cmd", "up", "login_server", server);
	if (!req)
		goto out;
	if (authkey)
		json_object_set_new(req, "auth_key", json_string(authkey));
	if (hostname)
		json_object_set_new(req, "hostname", json_string(hostname));
	if (cli_api_open(argv[0], g, req, &api) < 0)
		goto out;
	for (;;) {
		json_t *e;
		const char *state;

		if (cli_api_next(api, &msg) < 0)
			goto out;
		if (!json_is_true(json_object_get(msg, "ok"))) {
			e = json_object_get(msg, "error");
			fprintf(stderr, "trellis: %s: %s\n", argv[0],
				json_is_string(e) ? json_string_value(e) : "failed");
			goto out;
		}
		state = json_string_value(json_object_get(msg, "state"));
		if (state && !strcmp(state, "needs_login")) {
			e = json_object_get(msg, "auth_url");
			printf("\nTo authenticate, visit:\n\n\t%s\n\n",
			       json_is_string(e) ? json_string_value(e) : "(no URL given)");
			fflush(stdout);
			json_decref(msg);
			msg = NULL;
			continue;
		}
		break;
	}
	ret = 0;
	goto out;
usage:
	fprintf(stderr,
		"Usage: trellis %s --login-server URL [--auth-key KEY] [--hostname NAME]\n",
		argv[0]);
out:
	json_decref(msg);
	json_decref(req);
	cli_api_free(api);
	return ret;
}
