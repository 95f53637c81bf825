/* SPDX-License-Identifier: MIT */
/* trellis status [--json]: this node and its peers, as a table or the contract JSON. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s && *s ? s : "-";
}

/*
 * relay: home fra
 *   fra  connected  12.3 ms  (home)
 *   par  connecting          relay par1 (https://...): connection refused
 */
static void relay_lines(json_t *relay)
{
	json_t *v;
	size_t i;

	if (!json_is_object(relay) || !json_array_size(json_object_get(relay, "regions")))
		return;
	printf("relay: home %s\n", str(relay, "home"));
	json_array_foreach(json_object_get(relay, "regions"), i, v) {
		json_t *lat = json_object_get(v, "latency_ms");
		bool home = json_is_true(json_object_get(v, "home"));
		char ms[32] = "-";

		if (!home && !strcmp(str(v, "state"), "idle"))
			continue;
		if (json_is_number(lat))
			snprintf(ms, sizeof(ms), "%.1f ms", json_number_value(lat));
		printf("  %-16s %-11s %-10s %s%s\n", str(v, "code"), str(v, "state"), ms,
		       home ? "(home) " : "",
		       json_is_string(json_object_get(v, "error")) ? str(v, "error") : "");
	}
}

static void row(json_t *n, bool self)
{
	char ips[128] = "";
	const char *path;
	json_t *v;
	size_t i;

	json_array_foreach(json_object_get(n, "ips"), i, v) {
		const char *s = json_string_value(v);

		if (s)
			snprintf(ips + strlen(ips), sizeof(ips) - strlen(ips), "%s%s",
				 ips[0] ? "," : "", s);
	}
	if (self) {
		printf("%-20s %-40s %-8s %-28s %s\n", str(n, "hostname"), ips, "self", "-",
		       str(n, "os"));
		return;
	}
	char via[64];

	path = str(n, "path");
	if (!strcmp(path, "relay")) {
		snprintf(via, sizeof(via), "relay %s", str(n, "relay"));
		path = via;
	} else if (json_is_string(json_object_get(n, "endpoint"))) {
		path = str(n, "endpoint");
	}
	printf("%-20s %-40s %-8s %-28s %s\n", str(n, "hostname"), ips,
	       json_is_true(json_object_get(n, "online")) ? "online" : "offline", path,
	       str(n, "os"));
}

int cli_status(int argc, char **argv, const struct cli_global *g)
{
	json_t *req, *reply = NULL, *st, *v;
	bool as_json = false;
	const char *state;
	size_t i;
	int r;

	if (argc == 2 && !strcmp(argv[1], "--json"))
		as_json = true;
	else if (argc != 1)
		return cli_usage_error(argc, argv, argc > 2 && !strcmp(argv[1], "--json") ? 2 : 1);
	req = json_pack("{s:s}", "cmd", "status");
	r = req ? cli_api_call(argv[0], g, req, &reply) : -1;
	json_decref(req);
	if (r < 0)
		return 1;
	st = json_object_get(reply, "status");
	if (as_json) {
		r = json_dumpf(st, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(reply);
		return r < 0 ? 1 : 0;
	}
	state = str(st, "backend_state");
	if (strcmp(state, "running"))
		printf("trellisd is %s\n", state);
	relay_lines(json_object_get(st, "relay"));
	if (json_is_object(json_object_get(st, "self"))) {
		printf("%-20s %-40s %-8s %-28s %s\n", "NAME", "TAILNET IPS", "STATUS", "PATH", "OS");
		row(json_object_get(st, "self"), true);
		json_array_foreach(json_object_get(st, "peers"), i, v)
			row(v, false);
	}
	json_decref(reply);
	return 0;
}
