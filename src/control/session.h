/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_SESSION_H
#define TRELLIS_CONTROL_SESSION_H

/*
 * The control session: one node's connection from the moment POST /control
 * was upgraded (net/httpd.h hands it over). It owns the socket from then on:
 *
 *   handshake --(Noise_IK completes)--> authenticated --> closed
 *
 * Handshake: the node proves its machine key (docs/control-protocol.md).
 * It must complete within 10 s of accept; before it, the only frame is the
 * handshake's (96 bytes). The connection counts against its source address
 * in the front end's limits until the owner releases it
 * (httpd_slot_authenticated, once the session is a registered node's map
 * stream): machine keys cost nothing to make. A register or map_request must
 * come within 10 s of the handshake, and a register must carry the proof of
 * its node key for this session (ctrlstream_node_key_check).
 *
 * Authenticated: framed, encrypted messages both ways. The session decodes
 * what the node sends (at most SESSION_MSG_MAX bytes, refused at the length
 * prefix) and dispatches register, map_request, endpoints and logout to its
 * owner (struct session_ops), and flow-log batches; keepalives it handles itself, anything else is
 * a protocol error. It sends a keepalive after 30 s of its own silence,
 * closes after 90 s of the node's (not counting time it waited for a full netmap
 * from us, nor bytes we had not read yet), after 30 s of pending output without write
 * progress, and when its output passes SESSION_OUTPUT_MAX (a backstop: the
 * map streams resynchronise slow readers long before).
 *
 * Closed: a protocol error after the handshake is first told to the node
 * (session_fail). Sessions are never freed inside a call chain that may still
 * use them: session_close marks them dead and a zero-delay timer frees them.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/loop.h"
#include "control/mapstream.h"
#include "net/httpd.h"
#include "proto/ctrlmsg.h"
#include "proto/netmap.h"

struct ctrlstream;
struct metrics_counters;
struct pending_reg;
struct reg_op; /* the server's */
struct session;

#define SESSION_MSG_MAX 65536           /* node -> server, checked before decoding */
#define SESSION_OUTPUT_MAX (64U << 20)  /* a reader this far behind is closed */

/* What the owner (the server) does with a session's messages and events. */
struct session_ops {
	void (*on_register)(struct session *ss, const struct ctrl_register *m);
	void (*on_map_request)(struct session *ss, const struct ctrl_map_request *m);
	void (*on_endpoints)(struct session *ss, const struct ctrl_endpoints *m);
	void (*on_logout)(struct session *ss);
	/* A flow-log batch: m->batch is the owner's to take (set it NULL) or leave. */
	void (*on_flows)(struct session *ss, struct ctrl_flows *m);
	/* All output is written. */
	void (*on_drained)(struct session *ss);
	/* The session is closing: it must be forgotten (it is freed later). */
	void (*on_close)(struct session *ss);
};

/* What the sessions of one server share; the owner fills the first fields. */
struct session_env {
	struct loop *loop;
	const uint8_t *server_priv; /* the server's static key, CTRLSTREAM_KEY_LEN */
	const uint8_t *server_pub;  /* its public half (NULL: derived per handshake) */
	const struct session_ops *ops;
	void *ctx; /* the owner's */
	struct metrics_counters *ctr;

	/* session.c's */
	struct session *live, *dead;
	size_t n_live;
	struct loop_timer reap_t;
};

struct session {
	/* The owner's: the node this session serves. */
	uint64_t node_id;      /* its map stream is this node's; 0 = none */
	uint64_t wait_id;      /* its registration waits for this node's approval */
	struct pending_reg *pend; /* its registration waits in memory (pending.h) */
	struct reg_op *op;     /* a registration or logout being written */
	struct mapstream_conn map;

	/* Set once the handshake completed; read-only for the owner. */
	struct session_env *env;
	uint8_t machine_key[NETMAP_KEY_LEN];
	char peer[HTTPD_PEER_MAX]; /* the source address, printable */
	char host[HTTPD_HOST_MAX]; /* the Host of its request ("" if unusable in a URL) */
	bool dead;

	/* session.c's */
	struct loop_fd h;
	struct loop_timer t;
	struct loop_timer more_t; /* TLS input the per-event read cap left */
	struct session *prev, *next; /* env's live list, or its dead list */
	bool authed, close_after_write;
	bool engaged; /* a register or map_request came */
	uint64_t authed_ns;
	uint32_t events;
	struct httpd_io io;
	struct httpd_slot slot;
	uint8_t *out; /* the 101 response, until written */
	size_t out_len, out_off;
	struct ctrlstream *cs;
	uint64_t born_ns, last_rx_ns, last_tx_ns;
	/*
	 * When we last stopped owing the node its full netmap (mapstream): while we owe it,
	 * the node has nothing to say and its silence is ours; after, it counts from here.
	 */
	uint64_t owed_ns;
	uint64_t stall_ns; /* output pending and no write progress since; 0 = none */
};

void session_env_init(struct session_env *env);
/* Closes every session and frees them (teardown). */
void session_env_close_all(struct session_env *env);

/*
 * Takes over an upgraded connection (all of *up): it carries a control stream
 * from now on. On failure the connection is closed and counted.
 */
void session_take(struct session_env *env, struct httpd_upgrade *up);

/* Encodes, queues and sends a message. 0 or -errno (logged, rate limited). */
int session_send(struct session *ss, const struct ctrl_msg *m);
/* Queues a message's JSON text without sending yet (session_flush sends). 0 or -errno. */
int session_queue_json(struct session *ss, const char *json, size_t len);
/* Sends what can be sent now; closes the session on a write error or when it is done. */
void session_flush(struct session *ss);
/* Bytes queued but not yet written. */
size_t session_pending(const struct session *ss);
/* Closes once everything queued is written. */
void session_close_after_write(struct session *ss);
/* drop: an enum metrics_drop to count, or -1; why: for the log. */
void session_close(struct session *ss, int drop, const char *why);
/* A protocol error after the handshake: tell the node why, then close. */
void session_fail(struct session *ss, int drop, const char *why);

#endif
