/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_RELAY_VERIFY_H
#define TRELLIS_RELAY_VERIFY_H

/*
 * Admission for a standalone relay (--verify-clients URL): asks the control
 * server's GET /relay/verify (docs/relay-protocol.md, "Admission") whether
 * node keys are registered, unexpired and not deleted. New clients wait for
 * the answer (keys batched, one request in flight); every 500 ms the relay
 * asks for the server's generation, and when it moved, asks again about every
 * client it holds and closes those refused. The requests run on a worker
 * thread; an unreachable server refuses new clients and keeps the admitted.
 */

#include <stdint.h>
#include <stdio.h>

struct loop;
struct relay_server;
struct relay_admit_ops;
struct relay_verify;

/* secret: the control server's relay-verify.secret (32 bytes). 0 or -errno (logged). */
int relay_verify_new(struct loop *loop, const char *url, const uint8_t secret[32],
		     struct relay_verify **ret);
/* The server it admits for and revokes in; polling starts. */
void relay_verify_attach(struct relay_verify *v, struct relay_server *s);
const struct relay_admit_ops *relay_verify_admit_ops(void);
/* Call after relay_server_free. Accepts NULL. */
void relay_verify_free(struct relay_verify *v);
void relay_verify_metrics_write(const struct relay_verify *v, FILE *f);

/* The request and the answer, shared with the control server's handler. */
#define RELAY_VERIFY_PATH "/relay/verify/" /* a prefix route: the query follows */
#define RELAY_VERIFY_KEYS_MAX 100	   /* per request: the head stays under 8 KiB */
#define RELAY_VERIFY_SECRET_FILE "relay-verify.secret"

#endif
