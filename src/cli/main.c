/* SPDX-License-Identifier: MIT */
/*
 * trellis [--socket PATH] COMMAND [ARGS...]
 *
 * Global options come before the command; each command parses its own
 * arguments. New commands are one row in `commands` and one file.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "base/version.h"
#include "cli/cli.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv, const struct cli_global *g);
	const char *args; /* for the usage line */
	const char *summary;
};

static const struct command commands[] = {
    {"genkey", cli_genkey, "", "print a new private key (base64)"},
    {"genpsk", cli_genpsk, "", "print a new preshared key (base64)"},
    {"pubkey", cli_pubkey, "< KEY", "print the public key of a private key on stdin"},
    {"up", cli_up, "--login-server URL [--auth-key KEY] [--hostname NAME]",
     "connect this node to a tailnet"},
    {"down", cli_down, "", "disconnect from the tailnet (keeps the login)"},
    {"logout", cli_logout, "", "disconnect and expire this node's key"},
    {"status", cli_status, "[--json]", "show this node and its peers"},
    {"ip", cli_ip, "[-4|-6]", "print this node's tailnet addresses"},
    {"whois", cli_whois, "ADDR", "show the node that has a tailnet address"},
    {"version", cli_version, "[--daemon] [--json]", "print the version (and trellisd's)"},
};

static void usage(FILE *f)
{
	size_t i;

	fputs("Usage: trellis [--socket PATH] COMMAND [ARGS...]\n"
	      "\n"
	      "Options:\n"
	      "  --socket PATH  the trellisd local API socket\n"
	      "  -h, --help     show this help\n"
	      "  --version      print the version\n"
	      "\n"
	      "Commands:\n",
	      f);
	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fputs("  help     show this help\n", f);
}

static const struct command *command_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static bool is_help(const char *arg)
{
	return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

int main(int argc, char **argv)
{
	struct cli_global g = { 0 };
	const struct command *cmd;
	int i;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];

		if (is_help(a)) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			printf("%s\n", trellis_version);
			return 0;
		} else if (strcmp(a, "--socket") == 0) {
			if (i + 1 >= argc) {
				fputs("trellis: --socket needs a path\n", stderr);
				return 1;
			}
			g.socket_path = argv[++i];
		} else if (strncmp(a, "--socket=", 9) == 0) {
			g.socket_path = a + 9;
		} else {
			fprintf(stderr, "trellis: unknown option '%s'\n\n", a);
			usage(stderr);
			return 1;
		}
		if (g.socket_path[0] == '\0') {
			fputs("trellis: --socket needs a path\n", stderr);
			return 1;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return 1;
	}
	if (strcmp(argv[i], "help") == 0) {
		usage(stdout);
		return 0;
	}
	cmd = command_find(argv[i]);
	if (!cmd) {
		fprintf(stderr, "trellis: unknown command '%s'\n\n", argv[i]);
		usage(stderr);
		return 1;
	}
	if (i + 1 < argc && is_help(argv[i + 1])) {
		printf("Usage: trellis %s%s%s\n", cmd->name, cmd->args[0] ? " " : "", cmd->args);
		return 0;
	}
	return cmd->run(argc - i, argv + i, &g);
}
