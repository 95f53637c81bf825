// SPDX-License-Identifier: MIT
/*
 * trellis-relay: a standalone relay and STUN server (docs/relay-protocol.md).
 * One loop thread: the HTTP(S) front end (GET /relay, /metrics, /healthz),
 * the relay engine, the STUN socket, the mesh links and the admission checks
 * against the control server (--verify-clients); the mesh dials and the
 * checks run their blocking I/O on a small worker pool.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/version.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "relay/keyfile.h"
#include "relay/mesh.h"
#include "relay/server.h"
#include "relay/stund.h"
#include "relay/verify.h"

#define LISTEN_DEFAULT "0.0.0.0:443"
#define MESH_PEERS_MAX 32

static const char usage[] =
    "usage: trellis-relay [--listen ADDR:PORT] [--stun-port N] [--tls-cert FILE --tls-key FILE]\n"
    "                     [--key FILE] [--mesh-key FILE --mesh-peer URL ...]\n"
    "                     [--verify-clients URL --verify-secret FILE]\n"
    "       trellis-relay version\n"
    "\n"
    "  --listen ADDR:PORT   HTTP(S) address of GET /relay, /metrics, /healthz (" LISTEN_DEFAULT
    ")\n"
    "  --stun-port N        STUN Binding server on UDP port N (3478; 0: none)\n"
    "  --tls-cert, --tls-key  serve HTTPS with this PEM chain and key\n"
    "  --key FILE           the relay's static key (base64; created if missing; default: a\n"
    "                       new key each start)\n"
    "  --mesh-key FILE      the region's shared mesh key (base64, e.g. from `trellis genkey`)\n"
    "  --mesh-peer URL[#KEY] another relay of the region (http://HOST:PORT or https://...);\n"
    "                       repeat for each; #KEY pins its relay key (base64, as it logs)\n"
    "  --verify-clients URL admit only node keys the control server at URL knows\n"
    "                       (registered, unexpired, not deleted)\n"
    "  --verify-secret FILE the control server's relay-verify.secret (with --verify-clients)\n";

struct relay_main {
	struct loop *loop;
	struct httpd *httpd;
	struct relay_server *srv;
	struct stund *stun;
	struct relay_mesh *mesh;
	struct relay_verify *verify;
};

static void get_metrics(struct httpd_request *r, void *ctx)
{
	struct relay_main *m = ctx;
	struct httpd_stats hs;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return httpd_error(r, 500, NULL);
	relay_server_metrics_write(m->srv, f);
	stund_metrics_write(m->stun, f);
	relay_verify_metrics_write(m->verify, f);
	httpd_stats_get(m->httpd, &hs);
	fprintf(f,
		"# HELP trellis_relay_http_conns HTTP connections open (relay streams included).\n"
		"# TYPE trellis_relay_http_conns gauge\ntrellis_relay_http_conns %zu\n",
		hs.conns);
	if (fclose(f) != 0) {
		free(text);
		return httpd_error(r, 500, NULL);
	}
	httpd_reply(r, 200, "text/plain; version=0.0.4", text, len);
	free(text);
}

static void get_healthz(struct httpd_request *r, void *ctx)
{
	(void)ctx;
	httpd_reply(r, 200, "text/plain", "ok\n", 3);
}

static void on_signal(struct loop *loop, int signo)
{
	log_info("relay: signal %d: stopping", signo);
	loop_stop(loop);
}

static void nofile_raise(void)
{
	struct rlimit rl;

	/* Every client is a descriptor: 10,000 clients need more than the usual 1024. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int parse_port(const char *s, uint16_t *ret)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (!*s || *end || v < 0 || v > 65535)
		return -EINVAL;
	*ret = (uint16_t)v;
	return 0;
}

int main(int argc, char **argv)
{
	const char *listen = LISTEN_DEFAULT, *tls_cert = NULL, *tls_key = NULL, *key_file = NULL;
	const char *mesh_key_file = NULL, *verify_url = NULL, *verify_secret = NULL;
	const char *mesh_peers[MESH_PEERS_MAX];
	size_t n_peers = 0;
	uint16_t stun_port = 3478;
	uint8_t priv[32], mesh_key[32], secret[32];
	struct relay_main m = {0};
	struct relay_server_opts so = {.name = "relay", .priv = priv};
	struct httpd_opts ho = {.name = "relay"};
	char pub_b64[KEY_BASE64_LEN + 1];
	sigset_t set;
	int i, r = 1;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "version") == 0 || strcmp(a, "--version") == 0) {
			printf("trellis-relay %s\n", trellis_version);
			return 0;
		}
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "trellis-relay: %s: unknown argument or missing value\n%s",
				a, usage);
			return 1;
		}
		if (strcmp(a, "--listen") == 0) {
			listen = argv[++i];
		} else if (strcmp(a, "--stun-port") == 0) {
			if (parse_port(argv[++i], &stun_port) < 0) {
				fprintf(stderr,
					"trellis-relay: --stun-port: \"%s\" is not 0-65535\n",
					argv[i]);
				return 1;
			}
		} else if (strcmp(a, "--tls-cert") == 0) {
			tls_cert = argv[++i];
		} else if (strcmp(a, "--tls-key") == 0) {
			tls_key = argv[++i];
		} else if (strcmp(a, "--key") == 0) {
			key_file = argv[++i];
		} else if (strcmp(a, "--mesh-key") == 0) {
			mesh_key_file = argv[++i];
		} else if (strcmp(a, "--mesh-peer") == 0) {
			if (n_peers == MESH_PEERS_MAX) {
				fprintf(stderr, "trellis-relay: at most %d --mesh-peer\n",
					MESH_PEERS_MAX);
				return 1;
			}
			mesh_peers[n_peers++] = argv[++i];
		} else if (strcmp(a, "--verify-clients") == 0) {
			verify_url = argv[++i];
		} else if (strcmp(a, "--verify-secret") == 0) {
			verify_secret = argv[++i];
		} else {
			fprintf(stderr, "trellis-relay: unknown argument \"%s\"\n%s", a, usage);
			return 1;
		}
	}
	if (!tls_cert != !tls_key) {
		fprintf(stderr, "trellis-relay: --tls-cert and --tls-key go together\n");
		return 1;
	}
	if (n_peers && !mesh_key_file) {
		fprintf(stderr, "trellis-relay: --mesh-peer needs --mesh-key\n");
		return 1;
	}
	if (!verify_url != !verify_secret) {
		fprintf(stderr,
			"trellis-relay: --verify-clients and --verify-secret go together\n");
		return 1;
	}
	if (key_file ? relay_keyfile_load(key_file, priv, true) < 0
		     : x25519_private_generate(priv) < 0)
		return 1;
	if (mesh_key_file) {
		if (relay_keyfile_load(mesh_key_file, mesh_key, false) < 0)
			return 1;
		so.mesh_key = mesh_key;
	}
	if (verify_secret && relay_keyfile_load(verify_secret, secret, false) < 0)
		return 1;

	/* Before any thread exists, so that they all inherit the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	nofile_raise();
	ho.tls_cert = tls_cert;
	ho.tls_key = tls_key;
	m.loop = loop_new();
	if (!m.loop || loop_signals_catch(m.loop, on_signal) < 0)
		goto out;
	if (verify_url) {
		if (relay_verify_new(m.loop, verify_url, secret, &m.verify) < 0)
			goto out;
		so.admit = relay_verify_admit_ops();
		so.admit_ctx = m.verify;
	}
	if (relay_server_new(m.loop, &so, &m.srv) < 0)
		goto out;
	if (m.verify)
		relay_verify_attach(m.verify, m.srv);
	if (httpd_new(m.loop, &ho, &m.httpd) < 0)
		goto out;
	if (relay_server_route(m.srv, m.httpd) < 0 ||
	    httpd_route_add(m.httpd, "GET", "/metrics", get_metrics, &m) < 0 ||
	    httpd_route_add(m.httpd, "GET", "/healthz", get_healthz, &m) < 0)
		goto out;
	/*
	 * STUN before the public port, as trellis-control does: whoever sees the relay listen
	 * (a service manager, a test, a node's first netcheck) finds STUN answering too. A
	 * request to a port not yet bound gets an ICMP unreachable, which STUN clients take
	 * as "no STUN here".
	 */
	if (stun_port && stund_new(m.loop, stun_port, &m.stun) < 0)
		goto out;
	if (httpd_listen(m.httpd, listen) < 0)
		goto out;
	if (n_peers && relay_mesh_new(m.loop, m.srv, mesh_peers, n_peers, &m.mesh) < 0)
		goto out;
	key_to_base64(pub_b64, relay_server_pub(m.srv));
	log_info("trellis-relay %s", trellis_version);
	log_info("relay: listening on %s%s, STUN on UDP %u, key %s, %zu mesh peers%s",
		 httpd_listen_name(m.httpd), httpd_tls(m.httpd) ? " (TLS)" : "",
		 m.stun ? stund_port(m.stun) : 0, pub_b64, n_peers,
		 verify_url ? ", verifying clients" : "");
	r = loop_run(m.loop) < 0 ? 1 : 0;
out:
	/* The engine first: it closes the mesh links and the pending checks. */
	relay_server_free(m.srv);
	relay_mesh_free(m.mesh);
	relay_verify_free(m.verify);
	stund_free(m.stun);
	httpd_free(m.httpd);
	loop_free(m.loop);
	crypto_wipe(priv, sizeof(priv));
	crypto_wipe(mesh_key, sizeof(mesh_key));
	crypto_wipe(secret, sizeof(secret));
	return r;
}
