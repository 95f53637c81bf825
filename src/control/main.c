// SPDX-License-Identifier: MIT
/*
 * trellis-control [--state DIR] <command>: `serve` runs the coordination
 * server (server.c); `version` prints the version; everything else is the admin
 * CLI (admin.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/version.h"
#include "control/admin.h"
#include "control/server.h"

/*
 * One server per state directory: a second would write the same database behind the
 * first one's in-memory records and indexes, and the admin CLI asks the lock whether
 * a server runs. The lock ends with the process however it ends (kill -9 included),
 * so it never needs cleaning up. Returns the fd to keep open, or -1 (said why).
 */
static int state_lock(const char *dir)
{
	int fd = admin_state_lock(dir, true);

	if (fd == -EBUSY)
		fprintf(stderr, "trellis-control: another trellis-control serves %s\n", dir);
	else if (fd < 0)
		fprintf(stderr, "trellis-control: cannot lock %s/serve.lock: %s\n", dir,
			strerror(-fd));
	return fd < 0 ? -1 : fd;
}

static int serve(const char *state_dir, int argc, char **argv)
{
	struct control_serve_opts opts = {
		.state_dir = state_dir,
		.listen = CONTROL_LISTEN_DEFAULT,
		.stun_port = 3478,
	};
	int i, r, lock_fd;

	for (i = 0; i < argc; i++) {
		const char **dst = NULL;

		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			printf("usage: trellis-control [--state DIR] serve [--listen ADDR:PORT]\n"
			       "         [--tls-cert PEM --tls-key PEM] [--no-relay] [--stun-port N]\n"
			       "  --listen ADDR:PORT  HTTP(S) address (%s)\n"
			       "  --tls-cert, --tls-key  serve HTTPS with this PEM chain and key\n"
			       "  --no-relay          no embedded relay (GET /relay)\n"
			       "  --stun-port N       embedded STUN server's UDP port (3478; 0: none)\n"
			       "example: trellis-control serve --listen 0.0.0.0:8080\n",
			       CONTROL_LISTEN_DEFAULT);
			return 0;
		}
		if (strcmp(argv[i], "--no-relay") == 0) {
			opts.no_relay = true;
			continue;
		}
		if (strcmp(argv[i], "--stun-port") == 0 && i + 1 < argc) {
			char *end;
			long v = strtol(argv[++i], &end, 10);

			if (!argv[i][0] || *end || v < 0 || v > 65535) {
				fprintf(stderr, "trellis-control: serve: --stun-port: "
						"\"%s\" is not 0-65535\n", argv[i]);
				return 1;
			}
			opts.stun_port = (uint16_t)v;
			opts.stun_port_set = true;
			continue;
		}
		if (strcmp(argv[i], "--listen") == 0)
			dst = &opts.listen;
		else if (strcmp(argv[i], "--tls-cert") == 0)
			dst = &opts.tls_cert;
		else if (strcmp(argv[i], "--tls-key") == 0)
			dst = &opts.tls_key;
		else if (strcmp(argv[i], "--metrics-listen") == 0)
			dst = &opts.metrics_listen;
		if (!dst) {
			fprintf(stderr, "trellis-control: serve: unknown argument \"%s\"\n", argv[i]);
			return 1;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "trellis-control: serve: %s needs a value\n", argv[i]);
			return 1;
		}
		*dst = argv[++i];
	}
	if (!opts.tls_cert != !opts.tls_key) {
		fprintf(stderr, "trellis-control: serve: --tls-cert and --tls-key go together\n");
		return 1;
	}
	lock_fd = state_lock(state_dir);
	if (lock_fd < 0)
		return 1;
	log_info("trellis-control %s", trellis_version);
	r = control_serve(&opts);
	close(lock_fd);
	if (r == -ENOSYS) {
		fprintf(stderr, "trellis-control: serve: not built yet\n");
		return 1;
	}
	return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *state_dir = ADMIN_STATE_DIR_DEFAULT;
	bool offline = false;
	int i = 1;

	/*
	 * Before any thread exists. httpd's sockets send with MSG_NOSIGNAL, TLS
	 * included (net/sockbio.h); this covers any write that does not, so that
	 * one client's reset can never end the server (issue 7, finding 1).
	 */
	signal(SIGPIPE, SIG_IGN);
	log_init();
	if (argc == 2 && strcmp(argv[1], "--version") == 0) {
		printf("trellis-control %s\n", trellis_version);
		return 0;
	}
	while (i < argc && (strncmp(argv[i], "--state", 7) == 0 ||
			    strcmp(argv[i], "--offline") == 0)) {
		if (strcmp(argv[i], "--offline") == 0) {
			offline = true;
			i++;
		} else if (argv[i][7] == '=') {
			state_dir = argv[i] + 8;
			i++;
		} else if (argv[i][7] == '\0' && i + 1 < argc) {
			state_dir = argv[i + 1];
			i += 2;
		} else {
			fprintf(stderr, "trellis-control: --state needs a directory\n");
			return 1;
		}
	}
	if (!state_dir[0]) {
		fprintf(stderr, "trellis-control: --state needs a directory\n");
		return 1;
	}
	if (i < argc && strcmp(argv[i], "version") == 0) {
		printf("%s\n", trellis_version);
		return 0;
	}
	if (offline && i < argc && strcmp(argv[i], "serve") == 0) {
		fprintf(stderr, "trellis-control: --offline is for admin commands, not serve\n");
		return 1;
	}
	if (i < argc && strcmp(argv[i], "serve") == 0)
		return serve(state_dir, argc - i - 1, argv + i + 1);
	return admin_run(state_dir, offline, argc - i, argv + i);
}
