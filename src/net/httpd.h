/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_HTTPD_H
#define TRELLIS_NET_HTTPD_H

/*
 * The HTTP(S) front end of the servers (trellis-control, trellis-relay):
 * listening sockets, accept, TLS, connection limits, the strict bounded request
 * head (proto/http.h), a route table, replies -- and the hand-off of an
 * upgraded connection to the protocol that takes it over (the control stream,
 * the relay).
 *
 * A connection reads one request head, of at most HTTP_HEAD_MAX bytes. The
 * route whose method and path match gets it (no path matches: 404; only the
 * method differs: 405). Its handler either answers (httpd_reply, httpd_error:
 * the connection closes once the response is written, and input after the
 * request is ignored) or takes the connection over (httpd_upgrade): from then
 * on the socket, the TLS session and the bytes already read after the head
 * belong to the new protocol, and httpd forgets the connection but for its
 * slot in the limits.
 *
 * Limits, all on the loop thread, per source: an IPv4 address or an IPv6 /64
 * (httpd_source_key; docs/security.md):
 * - HTTPD_CONN_MAX connections at once (read heads and taken-over ones);
 * - HTTPD_CONN_PER_SOURCE connections per source, whatever their state;
 * - HTTPD_UNAUTH_PER_SOURCE unauthenticated connections per source: a
 *   connection counts against its source from accept until the protocol that
 *   took it over says it is what it should be (httpd_slot_authenticated; the
 *   control server does once the connection carries a registered node's map
 *   stream);
 * - upgrades (each one a handshake to come) per source: a token bucket of
 *   HTTPD_UPGRADE_BURST refilled at HTTPD_UPGRADE_RATE per second; an empty
 *   bucket gets 429;
 * - HTTPD_HANDSHAKE_TIMEOUT_NS from accept to a request head (and body; a
 *   slowloris); the protocols continue this deadline up to their own
 *   authentication (httpd_upgrade.born_ns). It is for receiving the request
 *   only: once answered, a reply may take as long as its reader needs, provided
 *   it keeps moving (HTTPD_REPLY_STALL_NS without a byte written closes it,
 *   counted HTTPD_DROP_SLOW_READER). A taken-over connection's timers are the
 *   taker's (the control stream's: docs/control-protocol.md, "Timeouts").
 * Out of descriptors, accept sheds the waiting connection with a spare
 * descriptor (or pauses the listeners briefly) instead of spinning. After a
 * reply the connection half-closes and drains input for at most 2 s before it
 * closes (a reset could destroy the reply).
 *
 * TLS is OpenSSL, non-blocking, under the same state machine: WANT_READ and
 * WANT_WRITE only change which events we wait for; the handshake runs inside
 * the first reads.
 */

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/time.h"
#include "proto/http.h"

struct loop;
struct ssl_st;
struct httpd;

#define HTTPD_CONN_MAX 65536
#define HTTPD_CONN_PER_SOURCE 4096
#define HTTPD_UNAUTH_PER_SOURCE 64
#define HTTPD_UPGRADE_RATE 20  /* per second, per source */
#define HTTPD_UPGRADE_BURST 64
#define HTTPD_SOURCE_KEY_MAX 9 /* family byte + IPv4 address or IPv6 /64 */
#define HTTPD_HANDSHAKE_TIMEOUT_NS (10 * NSEC_PER_SEC)
#define HTTPD_REPLY_STALL_NS (30 * NSEC_PER_SEC) /* a reply not written any further */
#define HTTPD_HOST_MAX 128
#define HTTPD_PEER_MAX (INET6_ADDRSTRLEN + 8)

/* Why connections were refused or closed; counted (httpd_stats), never an error path. */
enum httpd_drop {
	HTTPD_DROP_BAD,	    /* malformed head, or a handler's 4xx with a reason */
	HTTPD_DROP_TOO_BIG, /* head over HTTP_HEAD_MAX: 431 */
	HTTPD_DROP_TIMEOUT, /* no complete head in time */
	HTTPD_DROP_UNAUTH_LIMIT,
	HTTPD_DROP_CONN_LIMIT,
	HTTPD_DROP_IO,
	HTTPD_DROP_SOURCE_LIMIT, /* HTTPD_CONN_PER_SOURCE */
	HTTPD_DROP_RATE,	 /* upgrades over the source's bucket: 429 */
	HTTPD_DROP_FD_LIMIT,	 /* out of descriptors at accept */
	HTTPD_DROP_SLOW_READER,	 /* a reply that stopped moving for HTTPD_REPLY_STALL_NS */
	HTTPD_DROP_MAX,
};

struct httpd_stats {
	size_t conns;         /* open now, taken-over ones included */
	size_t unauth;        /* of those, not yet authenticated */
	uint64_t conns_total; /* accepted */
	uint64_t drops[HTTPD_DROP_MAX];
};

struct httpd_opts {
	const char *name;     /* log prefix: "control" */
	const char *tls_cert; /* PEM chain and key; both NULL = plain HTTP */
	const char *tls_key;
};

/* 0 or -errno (a TLS certificate that does not load: -EINVAL, logged). */
int httpd_new(struct loop *loop, const struct httpd_opts *opts, struct httpd **ret);
/*
 * Closes the listeners and the connections still reading a head. Connections
 * taken over must have released their slots before. Accepts NULL.
 */
void httpd_free(struct httpd *h);

/*
 * Listens on "ADDR:PORT" or "[V6ADDR]:PORT" ("[::]" is dual-stack; port 0
 * picks a free one). 0 or -errno (logged with the address).
 */
int httpd_listen(struct httpd *h, const char *spec);
/*
 * Listens on a unix socket at path, created with exactly mode (a stale socket
 * there is replaced: hold a lock that proves no one else serves it). Requests
 * carry the peer's uid (SO_PEERCRED). The file is removed by httpd_free.
 * 0 or -errno (logged).
 */
int httpd_listen_unix(struct httpd *h, const char *path, mode_t mode);
/* The first listener's port, and its "ADDR:PORT" with the port it got. */
uint16_t httpd_port(const struct httpd *h);
const char *httpd_listen_name(const struct httpd *h);
bool httpd_tls(const struct httpd *h);
/* SO_SNDBUF of accepted connections (0: the kernel's default); tests force partial writes. */
void httpd_sndbuf_set(struct httpd *h, int bytes);
/*
 * The head deadline and the reply's stall timeout (0: HTTPD_HANDSHAKE_TIMEOUT_NS,
 * HTTPD_REPLY_STALL_NS); tests shorten them.
 */
void httpd_timeouts_set(struct httpd *h, uint64_t head_ns, uint64_t stall_ns);
void httpd_stats_get(const struct httpd *h, struct httpd_stats *ret);

/* A request, as its handler sees it (valid during the call). */
struct httpd_request {
	const struct http_request *head;
	const char *peer; /* the source address, printable */
	const char *host; /* the Host header when it may go into a URL we send, else "" */
	struct httpd_conn *conn;
	int64_t peer_uid;   /* a unix socket's peer (SO_PEERCRED); -1 on TCP or unknown */
	const uint8_t *body; /* routes added with a body_max: the whole body, else NULL */
	size_t body_len;
};

typedef void (*httpd_handler_fn)(struct httpd_request *r, void *ctx);

/*
 * Routes method + path to fn. path is matched against the whole request
 * target: exactly, or as a prefix when it ends with '/' ("/register/").
 * 0 or -ENOMEM.
 */
int httpd_route_add(struct httpd *h, const char *method, const char *path, httpd_handler_fn fn,
		    void *ctx);
/*
 * The same, for a route that reads a request body (Content-Length, at most
 * body_max bytes, else 413) before its handler runs. The head deadline covers
 * the body too.
 */
int httpd_route_add_body(struct httpd *h, const char *method, const char *path, size_t body_max,
			 httpd_handler_fn fn, void *ctx);

/* The response, with Content-Type and Connection: close. A handler answers once. */
void httpd_reply(struct httpd_request *r, unsigned status, const char *content_type,
		 const void *body, size_t len);
/*
 * The same with extra_headers: lines of "Name: value\r\n" (Set-Cookie, Location,
 * Cache-Control), the caller's own text, at most 4000 bytes.
 */
void httpd_reply_headers(struct httpd_request *r, unsigned status, const char *content_type,
			 const char *extra_headers, const void *body, size_t len);
/*
 * A plain-text error response. With a reason, the request counts as bad
 * (HTTPD_DROP_BAD) and the reason is logged (rate limited).
 */
void httpd_error(struct httpd_request *r, unsigned status, const char *why);

/* I/O on a connection: plain TCP, or TLS over the socket. */
struct httpd_io {
	int fd;
	struct ssl_st *ssl; /* NULL: plain TCP */
	bool wants_write;   /* TLS: the last read needs the socket writable */
};

/* Bytes read, 0 at the end of the stream, -EAGAIN, -ECONNRESET, or -EIO / -errno. */
ssize_t httpd_io_read(struct httpd_io *io, void *buf, size_t cap);
/* Bytes written, -EAGAIN, or -EIO / -errno. Never raises SIGPIPE on plain TCP. */
ssize_t httpd_io_write(struct httpd_io *io, const void *buf, size_t len);
/* TLS: OpenSSL holds decrypted bytes not read yet (epoll cannot see them). */
bool httpd_io_pending(const struct httpd_io *io);
/* Frees the TLS session and closes the socket. */
void httpd_io_close(struct httpd_io *io);
/*
 * Reads what one readiness event brought and hands it to input, chunk by
 * chunk, at most 16 times (level-triggered epoll comes back for the rest).
 * input returns false to stop (it closed the connection). 0 (nothing more for
 * now, or input stopped), -EINPROGRESS (TLS: OpenSSL holds decrypted bytes
 * that epoll will not signal: call again soon, after other connections had
 * their turn), -EPIPE (the peer closed or reset), or -EIO / -errno.
 */
int httpd_io_read_event(struct httpd_io *io, bool (*input)(void *ctx, const uint8_t *data,
							   size_t len),
			void *ctx);

/* The per-source key of an address (see above); returns its length. */
size_t httpd_source_key(const struct sockaddr_storage *ss, uint8_t ret[HTTPD_SOURCE_KEY_MAX]);

/* A connection's share of the limits; it travels with a taken-over connection. */
struct httpd_slot {
	struct httpd *h;
	uint8_t src[HTTPD_SOURCE_KEY_MAX]; /* the per-source key */
	uint8_t src_len;
	bool unauth; /* counted against its source */
	bool live;   /* counted in the total */
};

/* The connection proved who it is: it no longer counts against its source. Idempotent. */
void httpd_slot_authenticated(struct httpd_slot *slot);
/* The connection is closed. Idempotent. */
void httpd_slot_release(struct httpd_slot *slot);

/* A connection handed over by httpd_upgrade: all of it is the taker's. */
struct httpd_upgrade {
	struct httpd_io io;
	struct httpd_slot slot;
	char peer[HTTPD_PEER_MAX];
	char host[HTTPD_HOST_MAX];
	uint64_t born_ns; /* accept, on the loop's clock */
	/* The 101 response, not yet written: it goes out before anything else. malloc'd. */
	uint8_t *out;
	size_t out_len;
	/* What the client sent after the head: the new protocol's first input. malloc'd or NULL. */
	uint8_t *rest;
	size_t rest_len;
};

/*
 * Answers 101 Switching Protocols (with extra_headers: "Upgrade: ...\r\n
 * Connection: Upgrade\r\n") and hands the connection over in *ret. The
 * socket is no longer on the loop: the taker adds it, and reads once before
 * waiting for events (TLS may hold decrypted bytes already). 0, -EBUSY (the
 * source's upgrade bucket is empty: answered 429), or -ENOMEM (the connection
 * is closed).
 */
int httpd_upgrade(struct httpd_request *r, const char *extra_headers, struct httpd_upgrade *ret);
/* Closes a connection handed over but not taken (the taker failed). */
void httpd_upgrade_release(struct httpd_upgrade *up);

#endif
