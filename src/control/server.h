/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_SERVER_H
#define TRELLIS_CONTROL_SERVER_H

/* `trellis-control serve`: the coordination server (docs/control-protocol.md). */

struct control_serve_opts {
	const char *state_dir; /* holds control.db (store.h) */
	const char *listen;    /* "ADDR:PORT" */
	const char *tls_cert;  /* PEM paths; both NULL = plain HTTP */
	const char *tls_key;
};

#define CONTROL_LISTEN_DEFAULT "0.0.0.0:8080"

/* Runs until SIGTERM/SIGINT. 0 on a clean stop, -errno on failure (logged). */
int control_serve(const struct control_serve_opts *opts);

#endif
