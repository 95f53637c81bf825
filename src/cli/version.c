/* SPDX-License-Identifier: MIT */
/*
 * trellis version [--daemon] [--json]: the version of this client and, with --daemon,
 * of the running trellisd (from its status), so a half-upgraded host shows itself.
 */
#include <stdio.h>
#include <string.h>

#include "base/version.h"
#include "cli/cli.h"

int cli_version(int argc, char **argv, const struct cli_global *g)
{
	json_t *reply = NULL, *out;
	const char *daemon_version = NULL;
	bool daemon = false, as_json = false;
	int i, r = 1;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--daemon")) {
			daemon = true;
		} else if (!strcmp(argv[i], "--json")) {
			as_json = true;
		} else {
			return cli_usage_error(argc, argv, i);
		}
	}
	if (daemon) {
		r = cli_status_call(argv[0], g, &reply);
		if (r < 0)
			return 1;
		daemon_version = json_string_value(json_object_get(reply, "version"));
		if (!daemon_version)
			daemon_version = "unknown (older than its version report)";
	}
	if (as_json) {
		out = json_pack("{s:s}", "client", trellis_version);
		if (out && daemon_version)
			json_object_set_new(out, "daemon", json_string(daemon_version));
		r = out ? json_dumpf(out, stdout, JSON_INDENT(2)) : -1;
		json_decref(out);
		if (r == 0)
			putchar('\n');
	} else {
		printf("%s\n", trellis_version);
		if (daemon_version)
			printf("daemon: %s\n", daemon_version);
		r = 0;
	}
	json_decref(reply);
	return r < 0 ? 1 : 0;
}
