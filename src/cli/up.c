/* SPDX-License-Identifier: MIT */
/*
 * trellis up [--login-server URL] [--auth-key KEY|file:PATH|-] [--hostname NAME]
 *            [--force-reauth]: returns once the node runs. With interactive login the daemon
 * first answers needs_login with a URL, which is printed; the final answer follows on the
 * same connection. The daemon remembers the server and the hostname, so `trellis up` alone
 * reconnects. `trellis login` (login.c) is `up --force-reauth`, as in Tailscale.
 *
 * A key on the command line is visible to every local user in `ps` while `up` waits, so
 * scripts should pass `file:PATH` or `-` (standard input) instead.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

#include "cli/cli.h"
#include "crypto/crypto.h"

/* Auth keys are about 60 characters; anything much longer is not one. */
#define AUTHKEY_TEXT_MAX 512

/*
 * The key from "file:PATH", "-" (standard input) or the argument itself, trimmed of surrounding
 * white space. 0, or -1 after printing why.
 */
static int authkey_read(const char *cmd, const char *arg, char *buf, size_t cap)
{
	const char *path = NULL, *what;
	FILE *f = NULL;
	size_t n = 0, i;
	int ret = -1;

	if (!strncmp(arg, "file:", 5)) {
		path = arg + 5;
		what = path;
		f = fopen(path, "re");
		if (!f) {
			fprintf(stderr, "trellis: %s: --auth-key: %s: %s\n", cmd, path, strerror(errno));
			return -1;
		}
	} else if (!strcmp(arg, "-")) {
		what = "standard input";
		f = stdin;
	} else {
		what = "the argument";
		n = strlen(arg);
		if (n < cap)
			memcpy(buf, arg, n);
	}
	if (f) {
		n = fread(buf, 1, cap, f);
		if (ferror(f)) {
			fprintf(stderr, "trellis: %s: --auth-key: reading %s: %s\n", cmd, what,
				strerror(errno));
			goto out;
		}
	}
	if (n >= cap) {
		fprintf(stderr, "trellis: %s: --auth-key: %s is longer than an auth key\n", cmd, what);
		goto out;
	}
	buf[n] = '\0';
	while (n && isspace((unsigned char)buf[n - 1]))
		buf[--n] = '\0';
	for (i = 0; i < n && isspace((unsigned char)buf[i]); i++)
		;
	memmove(buf, buf + i, n - i + 1);
	if (!buf[0]) {
		fprintf(stderr, "trellis: %s: --auth-key: %s holds no key\n", cmd, what);
		goto out;
	}
	ret = 0;
out:
	if (f && f != stdin)
		fclose(f);
	if (ret < 0)
		crypto_wipe(buf, cap);
	return ret;
}

int cli_up_run(int argc, char **argv, const struct cli_global *g, bool force_reauth)
{
	static const struct option longopts[] = {
	    {"login-server", required_argument, NULL, 'l'},
	    {"auth-key", required_argument, NULL, 'a'},
	    {"authkey", required_argument, NULL, 'a'}, /* Tailscale's spelling */
	    {"hostname", required_argument, NULL, 'n'},
	    {"force-reauth", no_argument, NULL, 'F'},
	    {"timeout", required_argument, NULL, 't'},
	    {0},
	};
	unsigned long timeout_s = 0;
	char *end;
	const char *server = NULL, *authkey = NULL, *hostname = NULL;
	char key[AUTHKEY_TEXT_MAX + 1];
	struct cli_api *api = NULL;
	json_t *req = NULL, *msg = NULL;
	int c, ret = 1;

	optind = 1;
	opterr = 0;
	/* A leading ':' makes getopt tell a missing value (':') from an unknown option. */
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
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
		case 'F':
			force_reauth = true;
			break;
		case 't':
			/* Seconds, as "30" or "30s"; 0 waits for ever. */
			timeout_s = strtoul(optarg, &end, 10);
			if (end == optarg || (*end && strcmp(end, "s")) || *optarg == '-' ||
			    timeout_s > 86400) {
				fprintf(stderr,
					"trellis: %s: --timeout: \"%s\" is not a number of seconds "
					"(0..86400, e.g. 30s)\n",
					argv[0], optarg);
				goto usage;
			}
			break;
		case ':':
			fprintf(stderr, "trellis: %s: %s needs a value\n", argv[0],
				argv[optind - 1]);
			goto usage;
		default:
			return cli_usage_error(argc, argv, optind - 1);
		}
	}
	if (optind != argc)
		return cli_usage_error(argc, argv, optind);
	if (server && !*server) {
		fprintf(stderr, "trellis: %s: --login-server needs a URL\n", argv[0]);
		goto usage;
	}
	/* No server: the daemon's remembered one (it says so when there is none). */
	req = json_pack("{s:s, s:b}", "cmd", "up", "force_reauth", force_reauth);
	if (!req)
		goto out;
	if (server)
		json_object_set_new(req, "login_server", json_string(server));
	if (authkey) {
		if (authkey_read(argv[0], authkey, key, sizeof(key)) < 0)
			goto out;
		json_object_set_new(req, "auth_key", json_string(key));
		crypto_wipe(key, sizeof(key));
	}
	if (hostname)
		json_object_set_new(req, "hostname", json_string(hostname));
	if (cli_api_open(argv[0], g, req, &api) < 0)
		goto out;
	if (timeout_s) {
		struct timeval tv = {.tv_sec = (time_t)timeout_s};

		/* The daemon goes on trying after we give up (docs/localapi.md). */
		setsockopt(api->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
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
		"Usage: trellis %s [--login-server URL] [--auth-key KEY|file:PATH|-] [--hostname NAME]"
		" [--timeout SECONDS]%s\n",
		argv[0], force_reauth ? "" : " [--force-reauth]");
out:
	json_decref(msg);
	json_decref(req);
	cli_api_free(api);
	return ret;
}

int cli_up(int argc, char **argv, const struct cli_global *g)
{
	return cli_up_run(argc, argv, g, false);
}
