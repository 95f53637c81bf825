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
	const char *help; /* for COMMAND --help: each flag, its default, an example */
};

static const struct command commands[] = {
    {"genkey", cli_genkey, "", "print a new private key (base64)",
     "Prints a new Curve25519 private key, base64, as `wg genkey` does. Warns when\n"
     "standard output is a file others can read.\n"
     "\n"
     "Example: umask 077; trellis genkey > wg0.key\n"},
    {"genpsk", cli_genpsk, "", "print a new preshared key (base64)",
     "Prints 32 random bytes, base64, for WireGuard's preshared-key.\n"
     "\n"
     "Example: trellis genpsk > wg0.psk\n"},
    {"pubkey", cli_pubkey, "< KEY", "print the public key of a private key on stdin",
     "Reads a base64 private key on standard input and prints its public key.\n"
     "\n"
     "Example: trellis pubkey < wg0.key\n"},
    {"up", cli_up,
     "[--login-server URL] [--auth-key KEY|file:PATH|-] [--hostname NAME] [--force-reauth]\n"
     "       [--timeout SECONDS]",
     "connect this node to a tailnet",
     "Connects this node to the tailnet of a coordination server and waits until it is\n"
     "running, or prints a login URL and waits for an admin to approve the node. The\n"
     "daemon remembers the server and the hostname: `trellis up` alone reconnects.\n"
     "Naming another server than the remembered one changes nothing unless that server\n"
     "answers, and moving a logged-in node to it needs --force-reauth.\n"
     "\n"
     "  --login-server URL  the coordination server (http:// or https://) (default: the\n"
     "                      remembered one; required the first time)\n"
     "  --auth-key KEY      an auth key (also --authkey); file:PATH reads it from a file\n"
     "                      and - from standard input, keeping it out of ps (default:\n"
     "                      none, interactive approval)\n"
     "  --hostname NAME     the node's name in the tailnet (default: the remembered one,\n"
     "                      else the host name)\n"
     "  --force-reauth      log in anew: a new node key, an auth key or approval (default:\n"
     "                      keep the login)\n"
     "  --timeout SECONDS   give up waiting after this long (e.g. 30s); the daemon goes on\n"
     "                      trying (default: 0, wait for ever)\n"
     "\n"
     "Example: trellis up --login-server https://ctl.example:8080 --auth-key file:/root/key\n"},
    {"login", cli_login,
     "[--login-server URL] [--auth-key KEY|file:PATH|-] [--hostname NAME] [--timeout SECONDS]",
     "log in anew (up --force-reauth)",
     "Logs this node in anew with a new node key: with an auth key, or interactively\n"
     "(prints a URL). The same as `trellis up --force-reauth`; also how a logged-in node\n"
     "moves to another coordination server.\n"
     "\n"
     "  --login-server URL  the coordination server (default: the remembered one)\n"
     "  --auth-key KEY      an auth key, file:PATH or - (default: interactive approval)\n"
     "  --hostname NAME     the node's name (default: the remembered one)\n"
     "  --timeout SECONDS   give up waiting after this long (default: 0, wait for ever)\n"
     "\n"
     "Example: trellis login --auth-key file:/root/key\n"},
    {"set", cli_set, "--hostname NAME", "change a remembered setting without a new login",
     "Changes one setting that `trellis up` remembers, without logging in again; a\n"
     "running node takes it at once (the server renames it).\n"
     "\n"
     "  --hostname NAME  the node's name in the tailnet\n"
     "\n"
     "Example: trellis set --hostname web-2\n"},
    {"cert", cli_cert, "request | install FILE|-", "this node's machine certificate",
     "request: prints a CSR for this machine (PEM) for a tailnet admin to sign with\n"
     "`trellis-control ca sign`; trellisd makes the certificate key in its state\n"
     "directory (machine-cert.key), and it never leaves the node.\n"
     "install: checks the signed certificate (this machine, this key, not expired) and\n"
     "keeps it (machine-cert.crt); every registration presents it from then on. A tailnet\n"
     "with --require-machine-cert admits only nodes with a valid one (docs/identity.md).\n"
     "\n"
     "Example: trellis cert request > node.csr; trellis cert install node.crt\n"},
    {"down", cli_down, "", "disconnect from the tailnet (keeps the login)",
     "Disconnects from the tailnet and removes the tunnels; `trellis up` reconnects\n"
     "with the same key and address.\n"
     "\n"
     "Example: trellis down\n"},
    {"logout", cli_logout, "", "disconnect and expire this node's key",
     "Disconnects and expires this node's key on the server; the login server and\n"
     "hostname stay remembered, and the next `trellis up` needs an auth key or approval\n"
     "again.\n"
     "\n"
     "Example: trellis logout\n"},
    {"status", cli_status, "[--json]", "show this node and its peers",
     "Shows the daemon's state, this node and its peers (addresses, endpoints, online),\n"
     "what is wrong (health) and, while the node waits for a login, the login URL.\n"
     "\n"
     "  --json  the whole status as JSON (default: a table)\n"
     "\n"
     "Exit status: 0 running; 1 trellisd cannot be reached (or a usage error); 2 trellisd\n"
     "runs but the node is not connected (stopped, needs login, starting). With --json: 0\n"
     "whenever trellisd answered.\n"
     "\n"
     "Example: trellis status --json\n"},
    {"ip", cli_ip, "[-4|-6]", "print this node's tailnet addresses",
     "Prints this node's tailnet addresses, one a line.\n"
     "\n"
     "  -4  only the IPv4 address\n"
     "  -6  only the IPv6 address\n"
     "(default: both)\n"
     "\n"
     "Example: ping $(trellis ip -4)\n"},
    {"ping", cli_ping, "PEER [-c N]", "disco ping a peer: its path and round trip",
     "Sends path discovery pings to a peer (hostname or tailnet address) and shows each\n"
     "answer's path (`via relay REGION` or `via IP:PORT`) and round trip. Stops once the\n"
     "path is direct, or after 10 pings.\n"
     "\n"
     "  -c N  exactly N pings, direct or not\n"
     "\n"
     "Example: trellis ping laptop -c 3\n"},
    {"netcheck", cli_netcheck, "[--json]", "show what this node's network allows",
     "Shows what the daemon's STUN probes found: whether UDP works, this node's addresses\n"
     "as the internet sees them, whether its NAT maps per destination (a hard NAT), the\n"
     "preferred relay and the latency to each relay region.\n"
     "\n"
     "  --json  as JSON\n"
     "\n"
     "Example: trellis netcheck\n"},
    {"whois", cli_whois, "ADDR", "show the node that has a tailnet address",
     "Shows the node, its owner and its keys for a tailnet address.\n"
     "\n"
     "Example: trellis whois 100.64.0.2\n"},
    {"version", cli_version, "[--daemon] [--json]", "print the version (and trellisd's)",
     "Prints the version of this command.\n"
     "\n"
     "  --daemon  also the running trellisd's version\n"
     "  --json    as JSON: {\"client\": ..., \"daemon\": ...}\n"
     "\n"
     "Example: trellis version --daemon\n"},
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
	fputs("  help     show this help (help COMMAND: the command's flags)\n", f);
}

static const struct command *command_find(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void command_help(const struct command *cmd, FILE *f)
{
	fprintf(f, "Usage: trellis %s%s%s\n\n%s", cmd->name, cmd->args[0] ? " " : "", cmd->args,
		cmd->help);
}

int cli_usage_error(int argc, char **argv, int bad)
{
	const struct command *cmd = command_find(argv[0]);

	if (bad < argc)
		fprintf(stderr, "trellis: %s: unexpected argument '%s'\n", argv[0], argv[bad]);
	else
		fprintf(stderr, "trellis: %s: missing argument\n", argv[0]);
	if (cmd)
		fprintf(stderr, "Usage: trellis %s%s%s\nSee 'trellis %s --help'.\n", cmd->name,
			cmd->args[0] ? " " : "", cmd->args, cmd->name);
	return 1;
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
		if (i + 1 < argc) {
			cmd = command_find(argv[i + 1]);
			if (!cmd) {
				fprintf(stderr, "trellis: help: unknown command '%s'\n",
					argv[i + 1]);
				return 1;
			}
			command_help(cmd, stdout);
			return 0;
		}
		usage(stdout);
		return 0;
	}
	cmd = command_find(argv[i]);
	if (!cmd) {
		fprintf(stderr, "trellis: unknown command '%s'\n\n", argv[i]);
		usage(stderr);
		return 1;
	}
	for (int j = i + 1; j < argc; j++) {
		if (is_help(argv[j])) {
			command_help(cmd, stdout);
			return 0;
		}
	}
	return cmd->run(argc - i, argv + i, &g);
}
