/* SPDX-License-Identifier: MIT */
/*
 * trellis status [--json]: this node and its peers, as a table or the contract JSON; the
 * state in words, health and the login URL before the table. Exit status (trellis(1)): 0
 * running, 1 no answer from trellisd, 2 not running (--json: 0 whenever trellisd answered).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

static const char *str(json_t *o, const char *k)
{
	const char *s = json_string_value(json_object_get(o, k));

	return s && *s ? s : "-";
}

/* Whose machine it is: its user, or its tags for a tagged node. */
static const char *owner(json_t *n)
{
	json_t *tags = json_object_get(n, "tags");

	if (!json_string_value(json_object_get(n, "user")) && json_array_size(tags))
		return json_string_value(json_array_get(tags, 0)) ?: "-";
	return str(n, "user");
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

static const char *proto_name(json_int_t p, char *buf, size_t len)
{
	switch (p) {
	case 0:
		return "any";
	case 1:
		return "icmp";
	case 6:
		return "tcp";
	case 17:
		return "udp";
	case 58:
		return "icmpv6";
	case 132:
		return "sctp";
	}
	snprintf(buf, len, "proto-%lld", (long long)p);
	return buf;
}

/* Appends to buf unless it is full; a full buffer ends in "...". */
static void put(char *buf, size_t len, const char *s)
{
	size_t have = strlen(buf), n = strlen(s);

	if (have + n + 4 > len) {
		if (have + 4 <= len && strcmp(buf + (have > 3 ? have - 3 : 0), "..."))
			strcat(buf, "...");
		return;
	}
	memcpy(buf + have, s, n + 1);
}

void cli_access_format(json_t *allowed_in, char *buf, size_t len)
{
	json_t *e, *pr;
	size_t i, j;

	buf[0] = '\0';
	if (json_is_null(allowed_in) || !allowed_in) {
		snprintf(buf, len, "%s", allowed_in ? "all" : "-");
		return;
	}
	if (!json_array_size(allowed_in)) {
		snprintf(buf, len, "none");
		return;
	}
	json_array_foreach(allowed_in, i, e)
	{
		char nb[16], item[32];
		json_t *ports = json_object_get(e, "ports");

		if (i)
			put(buf, len, " ");
		put(buf, len,
		    proto_name(json_integer_value(json_object_get(e, "proto")), nb, sizeof(nb)));
		json_array_foreach(ports, j, pr)
		{
			json_int_t a = json_integer_value(json_array_get(pr, 0));
			json_int_t b = json_integer_value(json_array_get(pr, 1));

			if (a == 0 && b == 65535)
				snprintf(item, sizeof(item), "%s*", j ? "," : ":");
			else if (a == b)
				snprintf(item, sizeof(item), "%s%lld", j ? "," : ":", (long long)a);
			else
				snprintf(item, sizeof(item), "%s%lld-%lld", j ? "," : ":",
					 (long long)a, (long long)b);
			put(buf, len, item);
		}
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
		printf("%-20s %-40s %-8s %-28s %-8s %-20s %-20s -\n", str(n, "hostname"), ips,
		       "self", "-", str(n, "os"), owner(n), "-");
		return;
	}
	char via[96], in[256], out[256];

	path = str(n, "path");
	if (!strcmp(path, "relay")) {
		/* Why, when the daemon knows: "relay fra (udp-blocked-here)". */
		if (json_is_string(json_object_get(n, "relay_reason")))
			snprintf(via, sizeof(via), "relay %s (%s)", str(n, "relay"),
				 str(n, "relay_reason"));
		else
			snprintf(via, sizeof(via), "relay %s", str(n, "relay"));
		path = via;
	} else if (json_is_string(json_object_get(n, "endpoint"))) {
		path = str(n, "endpoint");
	}
	cli_access_format(json_object_get(n, "allowed_in"), in, sizeof(in));
	/* What this node may open there (the server's word; "-": it did not say). */
	cli_access_format(json_object_get(n, "may_open"), out, sizeof(out));
	printf("%-20s %-40s %-8s %-28s %-8s %-20s %-20s %s\n", str(n, "hostname"), ips,
	       json_is_true(json_object_get(n, "online")) ? "online" : "offline", path,
	       str(n, "os"), owner(n), out, in);
}

/*
 * What the node's state means for a person, before the table (or instead of it): the
 * state in words, the login URL, what to do. Tailscale's `status` prints the same.
 */
static void state_lines(json_t *st, const char *state)
{
	const char *url = json_string_value(json_object_get(st, "auth_url"));
	const char *err = json_string_value(json_object_get(st, "error"));
	const char *server = json_string_value(json_object_get(st, "login_server"));

	if (!strcmp(state, "running"))
		return;
	if (!strcmp(state, "stopped")) {
		printf("Stopped: trellisd runs but the node is down (the login is kept); "
		       "`trellis up` connects.\n");
	} else if (!strcmp(state, "starting")) {
		printf("Starting: connecting to %s.\n", server ? server : "the login server");
	} else if (!strcmp(state, "needs_login")) {
		if (err && *err)
			printf("Logged out: %s\n", err);
		else if (url && *url)
			printf("Needs login: sign in at the URL below, or wait for an admin to "
			       "approve this node.\n");
		else if (server && *server)
			printf("Logged out. `trellis up` logs in to %s again.\n", server);
		else
			printf("Not logged in. `trellis up --login-server URL` joins a tailnet.\n");
		if (url && *url)
			printf("\nLog in at:\n\n\t%s\n\n", url);
	} else {
		printf("trellisd is %s\n", state);
	}
}

/* Unix seconds as "2026-12-02 14:00:00 UTC" ("?" when it does not convert). */
static void utc_format(json_int_t sec, char *ret, size_t cap)
{
	time_t t = (time_t)sec;
	struct tm tm;

	snprintf(ret, cap, "?");
	if (gmtime_r(&t, &tm))
		strftime(ret, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* The installed machine certificate, in one line (status --json: machine_cert). */
static void cert_line(json_t *c)
{
	char from[40], until[40];

	if (!json_is_object(c))
		return;
	if (json_is_string(json_object_get(c, "error"))) {
		printf("machine cert: %s\n", str(c, "error"));
		return;
	}
	utc_format(json_integer_value(json_object_get(c, "not_before")), from, sizeof(from));
	utc_format(json_integer_value(json_object_get(c, "not_after")), until, sizeof(until));
	printf("machine cert: %s, serial %s, valid from %s until %s, issuer %s (key id %s), %s\n",
	       str(c, "subject"), str(c, "serial"), from, until, str(c, "issuer"),
	       str(c, "issuer_key_id"),
	       json_is_true(json_object_get(c, "from_server")) ? "from the server"
	       : json_is_string(json_object_get(c, "sent_serial"))
		   ? "not the one the server sent last"
		   : "not sent by the server since trellisd started");
	if (json_integer_value(json_object_get(c, "server_refused")))
		printf("machine cert: %lld sent by the server refused (see the log)\n",
		       (long long)json_integer_value(json_object_get(c, "server_refused")));
}

/* "# Health:" and one line per problem; the error is already said by state_lines. */
static void health_lines(json_t *st, const char *state)
{
	const char *err = json_string_value(json_object_get(st, "error"));
	json_t *h = json_object_get(st, "health"), *v;
	bool head = false;
	size_t i;

	json_array_foreach(h, i, v) {
		const char *line = json_string_value(v);

		if (!line || (err && !strcmp(line, err) && !strcmp(state, "needs_login")))
			continue;
		if (!head)
			printf("# Health:\n");
		head = true;
		printf("#   - %s\n", line);
	}
}

int cli_status(int argc, char **argv, const struct cli_global *g)
{
	json_t *reply = NULL, *st, *v;
	bool as_json = false;
	const char *state;
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
	if (as_json) {
		r = json_dumpf(st, stdout, JSON_INDENT(2));
		fputc('\n', stdout);
		json_decref(reply);
		return r < 0 ? 1 : 0;
	}
	state = str(st, "backend_state");
	state_lines(st, state);
	health_lines(st, state);
	relay_lines(json_object_get(st, "relay"));
	cert_line(json_object_get(st, "machine_cert"));
	if (json_is_object(json_object_get(st, "self"))) {
		printf("%-20s %-40s %-8s %-28s %-8s %-20s %-20s %s\n", "NAME", "TAILNET IPS",
		       "STATUS", "PATH", "OS", "OWNER", "MAY OPEN THERE", "MAY OPEN HERE");
		row(json_object_get(st, "self"), true);
		json_array_foreach(json_object_get(st, "peers"), i, v)
			row(v, false);
	}
	r = strcmp(state, "running") ? 2 : 0;
	json_decref(reply);
	return r;
}
