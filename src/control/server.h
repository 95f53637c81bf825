/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_SERVER_H
#define TRELLIS_CONTROL_SERVER_H

/* `trellis-control serve`: the coordination server (docs/control-protocol.md). */

#include <stdint.h>

struct oidc_config;
struct store_backend;

struct control_serve_opts {
	const char *state_dir; /* holds control.db (store.h) */
	const char *listen;    /* "ADDR:PORT" */
	const char *tls_cert;  /* PEM paths; both NULL = plain HTTP */
	const char *tls_key;
	/* "ADDR:PORT" for GET /metrics (a loopback address, say); NULL = no metrics. */
	const char *metrics_listen;
	bool no_relay;	    /* no embedded relay (GET /relay) */
	uint16_t stun_port; /* embedded STUN server; 0: none (serve's default is 3478) */
	bool stun_port_set; /* given explicitly: failing to bind it is an error */
	/*
	 * This server as others reach it (http:// or https://, checked by serve); NULL: none.
	 * Certificates signed through it name PUBLIC_URL/crl/NAME.crl (crlhttp.h).
	 */
	const char *public_url;
	/*
	 * serve --machine-cert-auto-renew: a node's certificate is renewed from its tailnet's
	 * signing CA when less than this is left of it (store_mcert_due) and pushed. 0: never.
	 */
	int64_t mcert_auto_renew_sec;
	/*
	 * serve --consumer-domains "D,D": shared email domains whose addresses each get a
	 * tailnet of their own at first sign-in (web.h); NULL: WEB_CONSUMER_DOMAINS_DEFAULT.
	 */
	const char *consumer_domains;
	/* OIDC sign-in (src/oidc/client.h), checked by serve; NULL: none. */
	const struct oidc_config *oidc;
	/* Tests: the store's backend (store.h); NULL: SQLite. */
	const struct store_backend *store_backend;
};

/* IPv4 any; "[::]:8080" listens on IPv6 and (dual-stack) IPv4. */
#define CONTROL_LISTEN_DEFAULT "0.0.0.0:8080"
/* The server's static X25519 key in the state directory (base64, mode 0600). */
#define CONTROL_SERVER_KEY_FILE "server.key"

/* Runs until SIGTERM/SIGINT. 0 on a clean stop, -errno on failure (logged). */
int control_serve(const struct control_serve_opts *opts);

/*
 * The same server in pieces, for tests and benchmarks that run it on a thread
 * of their own: new (opens the store, binds; port 0 picks a free port), run
 * (blocks until stop), stop (thread safe), free.
 */
struct control_server;
int control_server_new(const struct control_serve_opts *opts, struct control_server **ret);
uint16_t control_server_port(const struct control_server *srv);
/* The metrics listener's port, 0 without one. */
uint16_t control_server_metrics_port(const struct control_server *srv);
int control_server_run(struct control_server *srv);
void control_server_stop(struct control_server *srv);
void control_server_free(struct control_server *srv);

#endif
