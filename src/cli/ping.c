/* SPDX-License-Identifier: MIT */
/*
 * trellis ping PEER [-c N]: disco pings through the daemon (local API "ping"), one a
 * half second, each answer with its path and round trip:
 *
 *   pong from laptop via relay fra in 23.1 ms
 *   pong from laptop via 198.51.100.7:41641 in 4.2 ms
 *
 * Without -c it stops at the first direct answer (or after 10 pings); with -c it sends
 * exactly N. Exit status 0 when any answer came.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"

#define DEFAULT_MAX 10
#define COUNT_MAX 100000

static void pause_half_second(void)
{
	struct timespec ts = {.tv_sec = 0, .tv_nsec = 500000000L};

	nanosleep(&ts, NULL);
}

int cli_ping(int argc, char **argv, const struct cli_global *g)
{
	const char *peer = NULL;
	long count = 0;
	int i, answers = 0;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-c")) {
			char *end;

			if (i + 1 >= argc)
				return cli_usage_error(argc, argv, i + 1);
			count = strtol(argv[i + 1], &end, 10);
			if (*end || count < 1 || count > COUNT_MAX)
				return cli_usage_error(argc, argv, i + 1);
			i++;
		} else if (!peer && argv[i][0] != '-') {
			peer = argv[i];
		} else {
			return cli_usage_error(argc, argv, i);
		}
	}
	if (!peer)
		return cli_usage_error(argc, argv, argc);
	for (long n = 0; n < (count ? count : DEFAULT_MAX); n++) {
		json_t *req = json_pack("{s:s, s:s}", "cmd", "ping", "peer", peer), *reply = NULL;
		const char *via;
		struct cli_api *api;
		bool direct;
		int r;

		if (n)
			pause_half_second();
		r = req ? cli_api_open(argv[0], g, req, &api) : -1;
		json_decref(req);
		if (r < 0)
			return 1;
		r = cli_api_next(api, &reply);
		cli_api_free(api);
		if (r < 0)
			return 1;
		if (!json_is_true(json_object_get(reply, "ok"))) {
			const char *e = json_string_value(json_object_get(reply, "error"));

			printf("%s\n", e ? e : "no answer");
			json_decref(reply);
			/* A peer that does not exist or runs no disco will not start to. */
			if (e && !strstr(e, "no answer"))
				return 1;
			continue;
		}
		answers++;
		via = json_string_value(json_object_get(reply, "via"));
		direct = via && !strcmp(via, "direct");
		if (!direct)
			printf("pong from %s via relay %s in %.1f ms\n", peer,
			       json_string_value(json_object_get(reply, "relay")),
			       json_number_value(json_object_get(reply, "rtt_ms")));
		else
			printf("pong from %s via %s in %.1f ms\n", peer,
			       json_string_value(json_object_get(reply, "endpoint")),
			       json_number_value(json_object_get(reply, "rtt_ms")));
		fflush(stdout);
		json_decref(reply);
		if (!count && direct)
			break;
	}
	return answers ? 0 : 1;
}
