/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_USOCK_H
#define TRELLIS_NODE_USOCK_H

/*
 * A small unix-stream server on the control loop, shared by the local API and
 * the UAPI socket: listening (parent directory, mode, stale-socket detection),
 * accept with a connection cap, bounded per-connection input and output
 * buffers, idle timeouts and non-blocking writes. The protocol only decides
 * what a complete request is (on_data) and what to answer (usock_conn_send).
 *
 * Per connection, reading pauses while output is queued or the protocol holds
 * the connection (a request answered later), so memory per connection is
 * bounded by in_max + out_max. Input and output buffers are wiped before they
 * are freed: requests may carry keys.
 *
 * A socket other users may open (mode 0666) must not let one of them lock out
 * root: connections are counted per peer uid (SO_PEERCRED), some slots only
 * uid 0 may take, and a request has a total deadline that trickled bytes do
 * not extend. A connection closed after an error reply with input still
 * arriving lingers briefly (write side shut, input drained) so the client
 * reads the reply and an orderly EOF rather than a reset.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/loop.h"

struct usock_server;
struct usock_conn;

struct usock_limits {
	unsigned conns_max;	     /* more are accepted and closed at once */
	unsigned conns_per_uid_max;  /* per uid other than 0 (unknown uids share one); 0: no cap */
	unsigned conns_root_reserved; /* of conns_max, slots only uid 0 may take */
	size_t in_max;		     /* buffered input without a complete request */
	size_t out_max;		     /* queued output; SIZE_MAX for no cap */
	uint64_t idle_timeout_ns;    /* no progress for this long closes (held ones excepted) */
	/*
	 * From the moment a connection waits for a request (accepted, or its last
	 * request answered) until that request is answered and the reply is out;
	 * held time excepted. Bytes do not extend it. 0: no deadline.
	 */
	uint64_t request_timeout_ns;
	uint64_t sweep_interval_ns; /* how often idle connections are looked for */
	mode_t mode;		    /* of the socket file, e.g. 0600 */
	int backlog;
};

struct usock_ops {
	void *ctx;
	/* Extra zeroed bytes per connection for the protocol (usock_conn_priv). */
	size_t conn_priv_size;
	/* Optional. A new connection; -errno refuses it (on_close is not called). */
	int (*on_open)(void *ctx, struct usock_conn *c);
	/*
	 * The buffered input (len > 0). Returns the bytes of one complete request it
	 * handled (they are dropped), 0 if more bytes are needed, or -1 to close.
	 * Called again while bytes remain, nothing is queued and nothing holds.
	 */
	int (*on_data)(void *ctx, struct usock_conn *c, char *buf, size_t len);
	/* Optional. in_max bytes and no complete request: may queue an error; closes after. */
	void (*on_overflow)(void *ctx, struct usock_conn *c);
	/* Optional. The connection is going away (any reason). */
	void (*on_close)(void *ctx, struct usock_conn *c);
};

/*
 * Fails with -EADDRINUSE if something answers on path (another instance); a
 * stale socket file is removed. 0 or -errno.
 */
int usock_socket_check(const char *path);
/*
 * Creates the parent directory (0755), checks as usock_socket_check, binds with
 * exactly limits->mode whatever the umask (never more open meanwhile; no umask())
 * and listens. name prefixes log lines. 0 or -errno.
 */
int usock_server_new(struct loop *loop, const char *path, const char *name,
		     const struct usock_limits *limits, const struct usock_ops *ops,
		     struct usock_server **ret);
/* Accepts NULL. Closes every connection (on_close) and removes the socket file. */
void usock_server_free(struct usock_server *srv);

void *usock_conn_priv(struct usock_conn *c);
int usock_conn_fd(const struct usock_conn *c);
/* The peer's uid (SO_PEERCRED at accept); false if unknown. */
bool usock_conn_uid(const struct usock_conn *c, uid_t *ret);
/* Queues bytes (copied). 0, -EMSGSIZE past out_max, or -ENOMEM. Sent by usock_conn_kick. */
int usock_conn_send(struct usock_conn *c, const void *buf, size_t len);
/* Close once the queued output is out. */
void usock_conn_close_after_write(struct usock_conn *c);
/* Held: not read, not idle-closed; a hang-up closes it. */
void usock_conn_hold(struct usock_conn *c, bool hold);
/*
 * After send/hold outside on_data: flushes and resumes reading; requests already
 * buffered run from the loop, never inside the caller. Inside on_data it does
 * nothing (the caller's loop does it). false if the connection closed.
 */
bool usock_conn_kick(struct usock_conn *c);
/* Inside on_data the close is deferred until it returns. */
void usock_conn_close(struct usock_conn *c);

#endif
