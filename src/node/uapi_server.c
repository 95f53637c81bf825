/* SPDX-License-Identifier: MIT */
/*
 * UAPI socket server (wireguard.com/xplatform framing).
 *
 * Per connection: READING (bytes accumulate until a request is complete: the
 * first "\n\n") -> the request is executed synchronously on the control thread
 * -> WRITING (the reply drains as the socket allows; reading pauses so a client
 * that never reads cannot make us buffer unbounded replies) -> READING again, as
 * wireguard-go keeps a connection open for further requests. wg(8) sends one
 * request per connection, but several in one buffer are handled in order.
 *
 * Failure modes, none of which affect the daemon: an unknown operation closes
 * the connection at once (there is no reply the protocol defines for it); a
 * request over UAPI_MAX_REQUEST gets "errno=-EMSGSIZE" and a close; a client that
 * makes no progress for UAPI_IDLE_TIMEOUT_NS is closed; connections beyond
 * UAPI_CONNS_MAX are refused. Memory per connection is therefore bounded by the
 * request cap plus one reply.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "base/log.h"
#include "base/time.h"
#include "base/util.h"
#include "node/uapi_server.h"
#include "node/usock.h"
#include "wg/uapi.h"

/* "set=1\n" + body + "\n": the body itself may be UAPI_MAX_REQUEST bytes. */
#define IN_BUF_MAX ((size_t)UAPI_MAX_REQUEST + 16)
#ifndef SWEEP_INTERVAL_NS
#define SWEEP_INTERVAL_NS (1ULL * NSEC_PER_SEC)
#endif

struct conn {
	size_t scanned; /* bytes of the input already searched for the terminator */
};

struct uapi_server {
	struct usock_server *us;
	struct uapi_handler handler;
};

int uapi_socket_path(const char *ifname, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.sock", UAPI_SOCKET_DIR, ifname);

	if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	return 0;
}

int uapi_socket_check(const char *path)
{
	return usock_socket_check(path);
}

/*
 * Queues body (may be NULL) + "errno=N\n\n"; takes ownership of body. N is the
 * negative errno, as wireguard-go sends it: wg(8) negates what it reads to set
 * errno, so a positive value would print "Unknown error -98" instead of
 * "Address already in use". On failure the connection closes once drained.
 */
static void conn_reply(struct usock_conn *c, char *body, size_t body_len, int err)
{
	char tail[32];
	int n = snprintf(tail, sizeof(tail), "errno=%d\n\n", err > 0 ? -err : err);

	if ((body_len && usock_conn_send(c, body, body_len) < 0) ||
	    usock_conn_send(c, tail, (size_t)n) < 0)
		usock_conn_close_after_write(c);
	if (body) {
		explicit_bzero(body, body_len);
		free(body);
	}
}

static void conn_get(struct uapi_server *srv, struct usock_conn *c)
{
	struct uapi_handler *h = &srv->handler;
	char *body = NULL;
	size_t len = 0;
	int err;

	err = h->get(h->ctx, &body, &len);
	if (err < 0) {
		log_warn("uapi get failed: %s", strerror(-err));
		body = NULL;
		len = 0;
	}
	conn_reply(c, body, len, err);
}

/*
 * Executes at most one complete request from the front of the input.
 * Returns its length if one ran, 0 if more bytes are needed, -1 to close.
 */
static int conn_data(void *ctx, struct usock_conn *c, char *in, size_t in_len)
{
	struct uapi_server *srv = ctx;
	struct conn *st = usock_conn_priv(c);
	size_t i, req_len;

	/* The operation line decides early whether this is worth buffering at all. */
	if (in_len >= 6 && memcmp(in, "get=1\n", 6) != 0 && memcmp(in, "set=1\n", 6) != 0) {
		log_ratelimited(LOG_LEVEL_WARN, "uapi: invalid operation, closing connection");
		return -1;
	}
	if (in_len < 6)
		return memchr(in, '\n', in_len) ? -1 : 0;

	for (i = MAX(st->scanned, (size_t)6); i < in_len; i++)
		if (in[i] == '\n' && in[i - 1] == '\n')
			break;
	if (i == in_len) {
		st->scanned = in_len;
		return 0;
	}
	req_len = i + 1;
	if (in[0] == 'g') {
		if (req_len != 7) {
			/* "get=1\n" must be followed by the empty line, nothing else. */
			conn_reply(c, NULL, 0, -EINVAL);
			usock_conn_close_after_write(c);
		} else {
			conn_get(srv, c);
		}
	} else {
		conn_reply(c, NULL, 0, srv->handler.set(srv->handler.ctx, in + 6, req_len - 7));
	}
	st->scanned = 0;
	return (int)req_len;
}

static void conn_overflow(void *ctx, struct usock_conn *c)
{
	(void)ctx;
	log_ratelimited(LOG_LEVEL_WARN, "uapi: request over %u bytes, closing", UAPI_MAX_REQUEST);
	conn_reply(c, NULL, 0, -EMSGSIZE);
}

int uapi_server_new(struct loop *loop, const char *path, const struct uapi_handler *handler,
		    struct uapi_server **ret)
{
	const struct usock_limits lim = {
		.conns_max = UAPI_CONNS_MAX,
		.in_max = IN_BUF_MAX,
		.out_max = SIZE_MAX, /* one reply at a time: reading pauses until it is out */
		.idle_timeout_ns = UAPI_IDLE_TIMEOUT_NS,
		.sweep_interval_ns = SWEEP_INTERVAL_NS,
		.mode = 0600,
		.backlog = 16,
	};
	struct usock_ops ops = {
		.conn_priv_size = sizeof(struct conn),
		.on_data = conn_data,
		.on_overflow = conn_overflow,
	};
	struct uapi_server *srv;
	int r;

	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->handler = *handler;
	ops.ctx = srv;
	r = usock_server_new(loop, path, "uapi", &lim, &ops, &srv->us);
	if (r < 0) {
		free(srv);
		return r;
	}
	*ret = srv;
	return 0;
}

void uapi_server_free(struct uapi_server *srv)
{
	if (!srv)
		return;
	usock_server_free(srv->us);
	free(srv);
}
