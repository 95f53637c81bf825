/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CLI_CLI_H
#define TRELLIS_CLI_CLI_H

/*
 * The `trellis` command: main.c parses the global options and dispatches to one
 * function per subcommand, each in its own file. A subcommand returns the
 * process exit status (0 on success, 1 on failure; status: 2 when the node is not
 * running) and prints its own messages, prefixed "trellis: NAME: ".
 */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Options given before the subcommand. */
struct cli_global {
	const char *socket_path; /* --socket PATH; NULL = the daemon's default */
};

/* Subcommands. argv[0] is the subcommand's name. */
int cli_genkey(int argc, char **argv, const struct cli_global *g);
int cli_genpsk(int argc, char **argv, const struct cli_global *g);
int cli_pubkey(int argc, char **argv, const struct cli_global *g);
int cli_up(int argc, char **argv, const struct cli_global *g);
int cli_login(int argc, char **argv, const struct cli_global *g);
int cli_set(int argc, char **argv, const struct cli_global *g);
int cli_cert(int argc, char **argv, const struct cli_global *g);
/* up and login (force_reauth): the same flags, one request (up.c). */
int cli_up_run(int argc, char **argv, const struct cli_global *g, bool force_reauth);
int cli_down(int argc, char **argv, const struct cli_global *g);
int cli_logout(int argc, char **argv, const struct cli_global *g);
int cli_status(int argc, char **argv, const struct cli_global *g);
int cli_ip(int argc, char **argv, const struct cli_global *g);
/*
 * A peer's "allowed_in" (docs/localapi.md) in words (status.c): "tcp:22,443 udp:* icmp",
 * "all" (no policy), "none", "-" (the daemon did not say).
 */
void cli_access_format(json_t *allowed_in, char *buf, size_t len);
int cli_whois(int argc, char **argv, const struct cli_global *g);
int cli_ping(int argc, char **argv, const struct cli_global *g);
int cli_netcheck(int argc, char **argv, const struct cli_global *g);
int cli_version(int argc, char **argv, const struct cli_global *g);

/*
 * A subcommand's bad arguments: names argv[bad] (or says one is missing when bad >= argc),
 * prints the usage line and where the help is. Returns the exit status 1.
 */
int cli_usage_error(int argc, char **argv, int bad);

/* The local API client (localapi_client.c; protocol in docs/localapi.md). */
#define CLI_DEFAULT_SOCKET "/var/run/trellis/trellisd.sock"
struct cli_api {
	int fd;
	const char *cmd;
	char *buf;
	size_t len, cap;
};
const char *cli_socket_path(const struct cli_global *g);
/* Connects and sends req; prints the reason (daemon not running, ...) on failure. 0 or -errno. */
int cli_api_open(const char *cmd, const struct cli_global *g, json_t *req, struct cli_api **ret);
/* The next reply line as a JSON object (new reference). 0 or -errno (printed). */
int cli_api_next(struct cli_api *api, json_t **ret);
void cli_api_free(struct cli_api *api);
/* One request, one reply with "ok": true; otherwise prints the daemon's error. 0 or -errno. */
int cli_api_call(const char *cmd, const struct cli_global *g, json_t *req, json_t **ret);
/* cli_api_call of {"cmd": "status"}: the reply (its "status" object) in *ret. */
int cli_status_call(const char *cmd, const struct cli_global *g, json_t **ret);

/* Shared by the key commands (key.c). */
/* Warns on stderr, as wg(8) does, when stdout is a file others can read. */
void cli_key_warn_if_world_accessible(const char *cmd);
/* Writes the key as 44 base64 characters and a newline to stdout; 0 or exit status 1. */
int cli_key_print(const char *cmd, const uint8_t key[32]);

#endif
