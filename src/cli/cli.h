/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CLI_CLI_H
#define TRELLIS_CLI_CLI_H

/*
 * The `trellis` command: main.c parses the global options and dispatches to one
 * function per subcommand, each in its own file. A subcommand returns the
 * process exit status (0 on success, 1 on failure) and prints its own messages,
 * prefixed "trellis: NAME: ".
 */

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

/* Shared by the key commands (key.c). */
/* Warns on stderr, as wg(8) does, when stdout is a file others can read. */
void cli_key_warn_if_world_accessible(const char *cmd);
/* Writes the key as 44 base64 characters and a newline to stdout; 0 or exit status 1. */
int cli_key_print(const char *cmd, const uint8_t key[32]);

#endif
