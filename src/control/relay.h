/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_RELAY_H
#define TRELLIS_CONTROL_RELAY_H

/*
 * The relay and STUN server embedded in `trellis-control serve`
 * (src/relay), and the admission endpoint that standalone relays ask
 * (GET /relay/verify/, docs/relay-protocol.md "Admission").
 *
 * Admission asks the mapper directly: a node key is admitted while a node
 * holds it that is approved and unexpired. The server calls
 * control_relay_tick after every change it applies; when the mapper's
 * generation moved, every client is checked again, so a deleted, expired,
 * logged-out or rotated-away key loses its relay connection within a tick.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct httpd;
struct loop;
struct mapper;
struct control_relay;

/* The embedded relay's key and the verify secret, in the state directory (base64, 0600). */
#define CONTROL_RELAY_KEY_FILE "relay.key"

struct control_relay_opts {
	const char *state_dir;
	bool relay;	    /* serve GET /relay (the embedded relay) */
	uint16_t stun_port; /* 0: no STUN server */
	bool stun_required; /* a STUN port that cannot be bound is an error, not a warning */
};

/* Registers its routes on h. 0 or -errno (logged). */
int control_relay_new(struct loop *loop, struct httpd *h, struct mapper *m,
		      const struct control_relay_opts *o, struct control_relay **ret);
/* The embedded relay's public key (for the default relay map), or NULL when it is off. */
const uint8_t *control_relay_pub(const struct control_relay *cr);
/* The UDP port the embedded STUN server serves, 0 when there is none. Accepts NULL. */
uint16_t control_relay_stun_port(const struct control_relay *cr);
/* The mapper may have changed: re-checks the relay's clients if it did. */
void control_relay_tick(struct control_relay *cr);
void control_relay_metrics_write(const struct control_relay *cr, FILE *f);
/* Before the httpd (the relay's connections hold its slots). Accepts NULL. */
void control_relay_free(struct control_relay *cr);

#endif
