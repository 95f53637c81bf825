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
#include "control/admin_api.h"
#include "control/config.h"
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

static void serve_usage(void)
{
	printf("usage: trellis-control [--state DIR] serve [--config FILE] [--listen ADDR:PORT]\n"
	       "         [--tls-cert PEM --tls-key PEM] [--no-relay] [--stun-port N]\n"
	       "         [--metrics-listen ADDR:PORT]\n"
	       "  --config FILE       settings as key = value lines (trellis-control(8)); flags\n"
	       "                      override them: state, listen, tls-cert, tls-key,\n"
	       "                      metrics-listen, no-relay, stun-port\n"
	       "  --listen ADDR:PORT  HTTP(S) address (%s)\n"
	       "  --tls-cert, --tls-key  serve HTTPS with this PEM chain and key\n"
	       "  --no-relay          no embedded relay (GET /relay)\n"
	       "  --stun-port N       embedded STUN server's UDP port (3478; 0: none)\n"
	       "  --metrics-listen ADDR:PORT  GET /metrics there (none by default)\n"
	       "The admin API listens on STATE/%s (root) and under /admin/v1/ on the\n"
	       "public port (admin API keys).\n"
	       "example: trellis-control serve --config /etc/trellis/control.conf\n",
	       CONTROL_LISTEN_DEFAULT, ADMIN_SOCKET_NAME);
}

/* A value from the file unless a flag gave one. */
static void config_take(const char **dst, const char *flag, const char *file)
{
	*dst = flag ? flag : file ? file : *dst;
}

static int serve(const char *state_dir, bool state_set, int argc, char **argv)
{
	struct control_serve_opts opts = {
		.state_dir = state_dir,
		.listen = CONTROL_LISTEN_DEFAULT,
		.stun_port = 3478,
	};
	const char *listen = NULL, *cert = NULL, *key = NULL, *metrics = NULL, *config = NULL;
	const char *stun = NULL;
	struct control_config cf = { .no_relay = -1, .stun_port = -1 };
	char err[CONFIG_ERR_MAX];
	bool no_relay = false;
	int i, r, lock_fd;

	for (i = 0; i < argc; i++) {
		const char **dst = NULL;

		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			serve_usage();
			return 0;
		}
		if (strcmp(argv[i], "--no-relay") == 0) {
			no_relay = true;
			continue;
		}
		if (strcmp(argv[i], "--listen") == 0)
			dst = &listen;
		else if (strcmp(argv[i], "--tls-cert") == 0)
			dst = &cert;
		else if (strcmp(argv[i], "--tls-key") == 0)
			dst = &key;
		else if (strcmp(argv[i], "--metrics-listen") == 0)
			dst = &metrics;
		else if (strcmp(argv[i], "--stun-port") == 0)
			dst = &stun;
		else if (strcmp(argv[i], "--config") == 0)
			dst = &config;
		if (!dst) {
			fprintf(stderr, "trellis-control: serve: unknown argument \"%s\" (try "
					"serve --help)\n", argv[i]);
			return 1;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "trellis-control: serve: %s needs a value\n", argv[i]);
			return 1;
		}
		*dst = argv[++i];
	}
	if (stun && control_config_port_parse(stun, &opts.stun_port) < 0) {
		fprintf(stderr, "trellis-control: serve: --stun-port: \"%s\" is not 0-65535\n",
			stun);
		return 1;
	}
	opts.stun_port_set = stun != NULL;
	if (config && control_config_load(config, &cf, err, sizeof(err)) < 0) {
		fprintf(stderr, "trellis-control: serve: %s\n", err);
		return 1;
	}
	/* The file first, then the flags over it. */
	if (!state_set && cf.state_dir)
		opts.state_dir = state_dir = cf.state_dir;
	config_take(&opts.listen, listen, cf.listen);
	config_take(&opts.tls_cert, cert, cf.tls_cert);
	config_take(&opts.tls_key, key, cf.tls_key);
	config_take(&opts.metrics_listen, metrics, cf.metrics_listen);
	opts.no_relay = no_relay || cf.no_relay == 1;
	if (!stun && cf.stun_port >= 0) {
		opts.stun_port = (uint16_t)cf.stun_port;
		opts.stun_port_set = true;
	}
	if (!opts.tls_cert != !opts.tls_key) {
		fprintf(stderr, "trellis-control: serve: --tls-cert and --tls-key go together\n");
		control_config_free(&cf);
		return 1;
	}
	lock_fd = state_lock(state_dir);
	if (lock_fd < 0) {
		control_config_free(&cf);
		return 1;
	}
	log_info("trellis-control %s", trellis_version);
	if (config)
		log_info("control: settings from %s", config);
	r = control_serve(&opts);
	close(lock_fd);
	control_config_free(&cf);
	if (r == -ENOSYS) {
		fprintf(stderr, "trellis-control: serve: not built yet\n");
		return 1;
	}
	return r < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	const char *state_dir = ADMIN_STATE_DIR_DEFAULT;
	bool offline = false, state_set = false;
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
			state_set = true;
			i++;
		} else if (argv[i][7] == '\0' && i + 1 < argc) {
			state_dir = argv[i + 1];
			state_set = true;
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
		return serve(state_dir, state_set, argc - i - 1, argv + i + 1);
	return admin_run(state_dir, offline, argc - i, argv + i);
}
