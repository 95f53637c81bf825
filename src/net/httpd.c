// SPDX-License-Identifier: MIT
/*
 * The HTTP(S) front end (see httpd.h). A connection is READING its head, then
 * answered (writing its response, then closed) or taken over (httpd_upgrade:
 * gone from here but for its slot). Its timer is the head deadline while it
 * reads, the reply's write progress once answered, the linger after that.
 * Connections are never freed inside a call chain that may still use them:
 * conn_close marks them dead and a zero-delay timer frees them, with their
 * buffers (a handler's request points into them).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/hmap.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "net/httpd.h"
#include "net/sockbio.h"
#include "os/unixsock.h"

#define READ_CHUNK 16384
/* Plain TCP reads per event: level-triggered epoll comes back for more. */
#define READS_PER_EVENT 16
#define ACCEPTS_PER_EVENT 256
#define LISTEN_BACKLOG 4096
/* After the last reply: discard input until the client closes, this long at most. */
#define LINGER_NS (2 * NSEC_PER_SEC)
/* Out of descriptors and no spare to shed a connection with: listeners rest this long. */
#define ACCEPT_PAUSE_NS (100 * NSEC_PER_MSEC)
/* A source with no connections and a full bucket is forgotten this often. */
#define SOURCE_GC_NS NSEC_PER_SEC
/* The upgrade bucket, in nanoseconds of credit: one upgrade costs UPGRADE_COST_NS. */
#define UPGRADE_COST_NS (NSEC_PER_SEC / HTTPD_UPGRADE_RATE)
#define UPGRADE_BUCKET_NS (UPGRADE_COST_NS * HTTPD_UPGRADE_BURST)

struct route {
	char *method;
	char *path;
	size_t path_len;
	bool prefix; /* path ends with '/': matches what is under it */
	size_t body_max; /* 0: the body is not read */
	httpd_handler_fn fn;
	void *ctx;
};

struct listener {
	struct loop_fd lfd;
	struct httpd *h;
	uint16_t port;
	char name[128];
	char unix_path[108]; /* a unix socket's path, unlinked at the end; else "" */
};

/*
 * One source (an IPv4 address, an IPv6 /64): its connections, and its bucket
 * of upgrades (handshakes). It lives while it has connections or its bucket
 * is not full, so closing every connection does not refill it.
 */
struct source {
	struct hmap_node node;
	uint8_t key[HTTPD_SOURCE_KEY_MAX];
	uint8_t len;
	uint32_t n;     /* unauthenticated connections */
	uint32_t total; /* all connections */
	uint64_t credit_ns, credit_at_ns;
};

struct httpd_conn {
	struct httpd *h;
	struct loop_fd lh;
	struct loop_timer t;
	struct httpd_conn *prev, *next; /* live list, or the dead list */
	bool dead, answered, close_after_write, lingering;
	bool tls_more; /* TLS holds decrypted input the per-event cap left: read on the next round */
	uint32_t events;
	struct httpd_io io;
	struct httpd_slot slot;
	char peer[HTTPD_PEER_MAX];
	char host[HTTPD_HOST_MAX];
	uint64_t born_ns;
	uint64_t progress_ns; /* answered: when the reply was queued or last moved */
	char *in; /* the request head, HTTP_HEAD_MAX */
	size_t in_len, head_len;
	int64_t peer_uid; /* unix socket: SO_PEERCRED's uid; -1 otherwise */
	/* A route that reads the body: it runs once body_len reaches body_want. */
	const struct route *body_route;
	uint8_t *body;
	size_t body_len, body_want;
	/* While a handler runs: the rest of the read that completed the head. */
	const uint8_t *extra;
	size_t extra_len;
	char *out;
	size_t out_len, out_off;
};

struct httpd {
	struct loop *loop;
	char name[32];
	struct ssl_ctx_st *tls;
	struct listener **ls; /* the loop holds pointers into each */
	size_t n_ls;
	struct route *routes;
	size_t n_routes;
	struct httpd_conn *conns, *dead;
	struct loop_timer reap_t;
	struct hmap sources;
	struct loop_timer gc_t;
	int spare_fd;       /* closed to accept and shed a connection when out of descriptors */
	struct loop_timer resume_t; /* listeners paused: out of descriptors, no spare */
	bool paused;
	int sndbuf;
	uint64_t head_ns, stall_ns; /* httpd_timeouts_set */
	struct httpd_stats st;
};

static void conn_close(struct httpd_conn *c, int drop, const char *why);

/* ---- I/O ---- */

ssize_t httpd_io_read(struct httpd_io *io, void *buf, size_t cap)
{
	ssize_t n;
	int e;

	if (!io->ssl) {
		n = read(io->fd, buf, cap);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
		return n;
	}
	if (cap > INT32_MAX)
		cap = INT32_MAX;
	ERR_clear_error();
	n = SSL_read(io->ssl, buf, (int)cap);
	if (n > 0)
		return n;
	e = SSL_get_error(io->ssl, (int)n);
	if (e == SSL_ERROR_WANT_READ)
		return -EAGAIN;
	if (e == SSL_ERROR_WANT_WRITE) {
		io->wants_write = true;
		return -EAGAIN;
	}
	if (e == SSL_ERROR_ZERO_RETURN)
		return 0;
	return -EIO;
}

ssize_t httpd_io_write(struct httpd_io *io, const void *buf, size_t len)
{
	ssize_t n;
	int e;

	if (!io->ssl) {
		n = send(io->fd, buf, len, MSG_NOSIGNAL);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? -EAGAIN : -errno;
		return n;
	}
	if (len > INT32_MAX)
		len = INT32_MAX;
	ERR_clear_error();
	n = SSL_write(io->ssl, buf, (int)len);
	if (n > 0)
		return n;
	e = SSL_get_error(io->ssl, (int)n);
	if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
		return -EAGAIN;
	return -EIO;
}

bool httpd_io_pending(const struct httpd_io *io)
{
	return io->ssl && SSL_pending(io->ssl) > 0;
}

void httpd_io_close(struct httpd_io *io)
{
	if (io->ssl) {
		SSL_free(io->ssl);
		io->ssl = NULL;
	}
	if (io->fd >= 0) {
		close(io->fd);
		io->fd = -1;
	}
}

int httpd_io_read_event(struct httpd_io *io, bool (*input)(void *ctx, const uint8_t *data,
							   size_t len),
			void *ctx)
{
	uint8_t buf[READ_CHUNK];

	for (unsigned i = 0;; i++) {
		ssize_t n;

		/*
		 * A cap per event, TLS included, so one busy peer cannot hold the
		 * loop. Level-triggered epoll comes back for what the socket holds;
		 * what OpenSSL has decrypted already it never signals: ask again.
		 */
		if (i >= READS_PER_EVENT)
			return io->ssl && SSL_pending(io->ssl) > 0 ? -EINPROGRESS : 0;
		n = httpd_io_read(io, buf, sizeof(buf));
		if (n == -EAGAIN)
			return 0;
		if (n == 0 || n == -ECONNRESET)
			return -EPIPE;
		if (n < 0)
			return (int)n;
		if (!input(ctx, buf, (size_t)n))
			return 0;
	}
	return 0;
}

/* ---- limits ---- */

static struct source *source_find(struct httpd *h, const uint8_t *key, size_t len, uint64_t hash)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&h->sources, hash); n; n = hmap_next_with_hash(n)) {
		struct source *x = container_of(n, struct source, node);

		if (x->len == len && memcmp(x->key, key, len) == 0)
			return x;
	}
	return NULL;
}

size_t httpd_source_key(const struct sockaddr_storage *ss, uint8_t ret[HTTPD_SOURCE_KEY_MAX])
{
	/* Local clients of a unix socket are one source: its file mode admits them. */
	if (ss->ss_family == AF_UNIX) {
		ret[0] = AF_UNIX;
		return 1;
	}
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;

		/* An IPv4-mapped address is the IPv4 source it is. */
		if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
			ret[0] = AF_INET;
			memcpy(ret + 1, a->sin6_addr.s6_addr + 12, 4);
			return 5;
		}
		/* One subscriber gets a /64 (RFC 6177): its addresses are one source. */
		ret[0] = AF_INET6;
		memcpy(ret + 1, &a->sin6_addr, 8);
		return 9;
	}
	ret[0] = AF_INET;
	memcpy(ret + 1, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	return 5;
}

static uint64_t source_credit(struct source *x, uint64_t now)
{
	uint64_t add = now - x->credit_at_ns;

	x->credit_at_ns = now;
	x->credit_ns = add >= UPGRADE_BUCKET_NS - x->credit_ns ? UPGRADE_BUCKET_NS
							       : x->credit_ns + add;
	return x->credit_ns;
}

static struct source *slot_source(struct httpd_slot *slot)
{
	struct httpd *h = slot->h;

	return source_find(h, slot->src, slot->src_len,
			   hmap_hash(&h->sources, slot->src, slot->src_len));
}

/* A source without connections goes once its bucket is full again (source_gc). */
static void source_put(struct httpd *h, struct source *x)
{
	if (x->total)
		return;
	if (source_credit(x, loop_now_ns(h->loop)) >= UPGRADE_BUCKET_NS) {
		hmap_remove(&h->sources, &x->node);
		free(x);
		return;
	}
	if (!h->gc_t.armed)
		loop_timer_arm(h->loop, &h->gc_t, loop_now_ns(h->loop) + SOURCE_GC_NS);
}

static void source_gc(struct loop_timer *t)
{
	struct httpd *h = container_of(t, struct httpd, gc_t);
	struct hmap_node *n, *next;
	bool idle = false;

	for (n = hmap_first(&h->sources); n; n = next) {
		struct source *x = container_of(n, struct source, node);

		next = hmap_next(&h->sources, n);
		if (x->total)
			continue;
		if (source_credit(x, loop_now_ns(h->loop)) >= UPGRADE_BUCKET_NS) {
			hmap_remove(&h->sources, &x->node);
			free(x);
		} else {
			idle = true;
		}
	}
	if (idle)
		loop_timer_arm(h->loop, t, loop_now_ns(h->loop) + SOURCE_GC_NS);
}

void httpd_slot_authenticated(struct httpd_slot *slot)
{
	struct source *x;

	if (!slot->unauth)
		return;
	slot->unauth = false;
	slot->h->st.unauth--;
	x = slot_source(slot);
	if (x && x->n)
		x->n--;
}

void httpd_slot_release(struct httpd_slot *slot)
{
	struct source *x;

	httpd_slot_authenticated(slot);
	if (!slot->live)
		return;
	slot->live = false;
	slot->h->st.conns--;
	x = slot_source(slot);
	if (x && x->total)
		x->total--;
	if (x)
		source_put(slot->h, x);
}

/* ---- writing ---- */

static void events_set(struct httpd_conn *c, uint32_t ev)
{
	if (ev == c->events || c->dead)
		return;
	if (loop_fd_mod(c->h->loop, &c->lh, ev) == 0)
		c->events = ev;
}

/*
 * The reply is out. The client may still be sending (a body we refused, a
 * pipelined request), and a close with unread input makes TCP send a reset
 * that can destroy the reply before the client reads it (RFC 9112 9.6):
 * half-close instead and discard input until the client closes, for
 * LINGER_NS at most. The discarded bytes are read raw, not through TLS,
 * which could want to write after our FIN.
 */
static void conn_linger(struct httpd_conn *c)
{
	if (c->lingering)
		return;
	c->lingering = true;
	shutdown(c->io.fd, SHUT_WR);
	c->events = 0; /* force the change */
	events_set(c, EPOLLIN);
	loop_timer_arm(c->h->loop, &c->t, loop_now_ns(c->h->loop) + LINGER_NS);
}

static void conn_flush(struct httpd_conn *c)
{
	ssize_t w;

	if (c->dead)
		return;
	c->io.wants_write = false;
	while (c->out_off < c->out_len) {
		w = httpd_io_write(&c->io, c->out + c->out_off, c->out_len - c->out_off);
		if (w == -EAGAIN)
			break;
		if (w < 0) {
			conn_close(c, HTTPD_DROP_IO, "write failed");
			return;
		}
		c->out_off += (size_t)w;
		c->progress_ns = loop_now_ns(c->h->loop);
	}
	if (c->out_off == c->out_len && c->close_after_write) {
		conn_linger(c);
		return;
	}
	events_set(c, EPOLLIN | (c->out_off < c->out_len || c->io.wants_write ? EPOLLOUT : 0));
}

/* ---- replies ---- */

static void reply_ext(struct httpd_conn *c, unsigned status, const char *ctype, const char *more,
		      const void *body, size_t body_len)
{
	/* Room for a redirect to an identity provider: its Location is a long URL. */
	char extra[4096], head[4352];
	int n;

	if (c->dead || c->answered)
		return;
	c->answered = true;
	c->close_after_write = true;
	c->progress_ns = loop_now_ns(c->h->loop);
	n = snprintf(extra, sizeof(extra), "Content-Type: %s\r\nConnection: close\r\n%s", ctype,
		     more ? more : "");
	if (n < 0 || (size_t)n >= sizeof(extra)) {
		conn_close(c, HTTPD_DROP_IO, "response headers too large");
		return;
	}
	n = http_response_build(head, sizeof(head), status, extra, body_len);
	if (n < 0) {
		conn_close(c, HTTPD_DROP_IO, "response too large");
		return;
	}
	c->out = malloc((size_t)n + body_len);
	if (!c->out) {
		conn_close(c, HTTPD_DROP_IO, "out of memory");
		return;
	}
	memcpy(c->out, head, (size_t)n);
	if (body_len)
		memcpy(c->out + n, body, body_len);
	c->out_len = (size_t)n + body_len;
	c->out_off = 0;
}

static void reply(struct httpd_conn *c, unsigned status, const char *ctype, const void *body,
		  size_t body_len)
{
	reply_ext(c, status, ctype, NULL, body, body_len);
}

static void error_reply(struct httpd_conn *c, unsigned status, int drop, const char *why)
{
	char body[96];
	int n = snprintf(body, sizeof(body), "%u %s\n", status, http_status_reason(status));

	if (drop >= 0) {
		c->h->st.drops[drop]++;
		log_ratelimited(LOG_LEVEL_INFO, "%s: %s: HTTP %u: %s", c->h->name, c->peer, status,
				why);
	}
	reply(c, status, "text/plain; charset=utf-8", body, (size_t)n);
}

void httpd_reply(struct httpd_request *r, unsigned status, const char *content_type,
		 const void *body, size_t len)
{
	reply(r->conn, status, content_type, body, len);
}

void httpd_reply_headers(struct httpd_request *r, unsigned status, const char *content_type,
			 const char *extra_headers, const void *body, size_t len)
{
	reply_ext(r->conn, status, content_type, extra_headers, body, len);
}

void httpd_error(struct httpd_request *r, unsigned status, const char *why)
{
	error_reply(r->conn, status, why ? HTTPD_DROP_BAD : -1, why);
}

/* ---- hand-off ---- */

int httpd_upgrade(struct httpd_request *r, const char *extra_headers, struct httpd_upgrade *ret)
{
	struct httpd_conn *c = r->conn;
	struct httpd *h = c->h;
	char head[512];
	size_t in_rest = c->in_len - c->head_len;
	struct source *x;
	int n;

	if (c->dead || c->answered)
		return -EINVAL;
	x = slot_source(&c->slot);
	if (x && source_credit(x, loop_now_ns(h->loop)) < UPGRADE_COST_NS) {
		error_reply(c, 429, HTTPD_DROP_RATE, "too many handshakes from this source");
		return -EBUSY;
	}
	if (x)
		x->credit_ns -= UPGRADE_COST_NS;
	memset(ret, 0, sizeof(*ret));
	n = http_response_build(head, sizeof(head), 101, extra_headers, 0);
	ret->out = n > 0 ? malloc((size_t)n) : NULL;
	ret->rest_len = in_rest + c->extra_len;
	ret->rest = ret->rest_len ? malloc(ret->rest_len) : NULL;
	if (!ret->out || (ret->rest_len && !ret->rest)) {
		free(ret->out);
		free(ret->rest);
		memset(ret, 0, sizeof(*ret));
		conn_close(c, HTTPD_DROP_IO, "out of memory");
		return -ENOMEM;
	}
	memcpy(ret->out, head, (size_t)n);
	ret->out_len = (size_t)n;
	if (in_rest)
		memcpy(ret->rest, c->in + c->head_len, in_rest);
	if (c->extra_len)
		memcpy(ret->rest + in_rest, c->extra, c->extra_len);
	ret->io = c->io;
	ret->slot = c->slot;
	memcpy(ret->peer, c->peer, sizeof(ret->peer));
	memcpy(ret->host, c->host, sizeof(ret->host));
	ret->born_ns = c->born_ns;

	/* From here on nothing of the connection is ours. */
	c->answered = true;
	c->io.fd = -1;
	c->io.ssl = NULL;
	c->slot.unauth = c->slot.live = false;
	loop_fd_del(h->loop, &c->lh);
	conn_close(c, -1, NULL);
	return 0;
}

void httpd_upgrade_release(struct httpd_upgrade *up)
{
	httpd_io_close(&up->io);
	httpd_slot_release(&up->slot);
	free(up->out);
	free(up->rest);
	up->out = up->rest = NULL;
}

/* ---- reading the head ---- */

static bool route_match(const struct route *rt, const struct http_request *req)
{
	if (rt->prefix)
		return req->target_len >= rt->path_len &&
		       memcmp(req->target, rt->path, rt->path_len) == 0;
	return req->target_len == rt->path_len && memcmp(req->target, rt->path, rt->path_len) == 0;
}

static void host_take(struct httpd_conn *c, const struct http_request *req)
{
	const struct http_header *host = http_header_find(req->headers, req->n_headers, "Host");
	size_t i;

	if (!host || host->value_len >= sizeof(c->host))
		return;
	for (i = 0; i < host->value_len; i++) {
		char ch = host->value[i];

		/* It goes into URLs we send: only what a host:port may hold. */
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || strchr(".-:[]_", ch)))
			return;
	}
	memcpy(c->host, host->value, host->value_len);
	c->host[host->value_len] = '\0';
}

static void route_run(struct httpd_conn *c, const struct route *rt, const struct http_request *req)
{
	struct httpd_request r = {
		.head = req,
		.peer = c->peer,
		.host = c->host,
		.conn = c,
		.peer_uid = c->peer_uid,
		.body = c->body,
		.body_len = c->body_len,
	};

	rt->fn(&r, rt->ctx);
	/* Every request gets an answer, even from a handler that forgot. */
	if (!c->dead && !c->answered)
		error_reply(c, 500, -1, NULL);
}

/* Takes body bytes; runs the route once the body is complete. */
static void body_input(struct httpd_conn *c, const uint8_t *data, size_t len)
{
	struct http_request req;
	size_t take = MIN(len, c->body_want - c->body_len);

	memcpy(c->body + c->body_len, data, take);
	c->body_len += take;
	if (c->body_len < c->body_want)
		return;
	/* The head is still in c->in: parse it again rather than keep a copy. */
	if (http_request_parse(&req, c->in, c->head_len) < 0)
		return error_reply(c, 400, HTTPD_DROP_BAD, "malformed request");
	route_run(c, c->body_route, &req);
}

static void dispatch(struct httpd_conn *c, const struct http_request *req)
{
	struct httpd *h = c->h;
	bool path_known = false;

	host_take(c, req);
	for (size_t i = 0; i < h->n_routes; i++) {
		const struct route *rt = &h->routes[i];

		if (!route_match(rt, req))
			continue;
		path_known = true;
		if (req->method_len != strlen(rt->method) ||
		    memcmp(req->method, rt->method, req->method_len) != 0)
			continue;
		if (!rt->body_max || !req->has_content_length || !req->content_length)
			return route_run(c, rt, req);
		if (req->content_length > rt->body_max)
			return error_reply(c, 413, HTTPD_DROP_BAD, "request body too large");
		c->body = malloc(req->content_length);
		if (!c->body)
			return conn_close(c, HTTPD_DROP_IO, "out of memory");
		c->body_want = req->content_length;
		c->body_route = rt;
		/* What came after the head in this read: in c->in, then beyond it. */
		body_input(c, (const uint8_t *)c->in + c->head_len, c->in_len - c->head_len);
		if (!c->dead && !c->answered && c->extra_len)
			body_input(c, c->extra, c->extra_len);
		c->extra_len = 0;
		return;
	}
	error_reply(c, path_known ? 405 : 404, -1, NULL);
}

static void head_input(struct httpd_conn *c, const uint8_t *data, size_t len)
{
	struct http_request req;
	size_t take;
	int r;

	if (!c->in) {
		c->in = malloc(HTTP_HEAD_MAX);
		if (!c->in) {
			conn_close(c, HTTPD_DROP_IO, "out of memory");
			return;
		}
	}
	take = MIN(len, HTTP_HEAD_MAX - c->in_len);
	memcpy(c->in + c->in_len, data, take);
	c->in_len += take;
	r = http_request_parse(&req, c->in, c->in_len);
	if (r == -EAGAIN && c->in_len == HTTP_HEAD_MAX)
		r = -E2BIG;
	if (r == -EAGAIN)
		return;
	if (r == -EBADMSG)
		return error_reply(c, 400, HTTPD_DROP_BAD, "malformed request");
	if (r < 0)
		return error_reply(c, 431, HTTPD_DROP_TOO_BIG, "request head too large");
	c->head_len = req.head_len;
	c->extra = data + take;
	c->extra_len = len - take;
	dispatch(c, &req);
	c->extra = NULL;
	c->extra_len = 0;
}

/* ---- connection events ---- */

static bool conn_input(void *ctx, const uint8_t *data, size_t len)
{
	struct httpd_conn *c = ctx;

	/* Once answered, input is ignored until we close. */
	if (c->body_route && !c->answered)
		body_input(c, data, len);
	else if (!c->answered)
		head_input(c, data, len);
	return !c->dead;
}

static void linger_readable(struct httpd_conn *c)
{
	char buf[READ_CHUNK];

	for (int i = 0; i < READS_PER_EVENT; i++) {
		ssize_t n = read(c->io.fd, buf, sizeof(buf));

		if (n > 0)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c, -1, NULL); /* the client's end, or a reset */
		return;
	}
}

static void conn_readable(struct httpd_conn *c)
{
	int r;

	if (c->lingering)
		return linger_readable(c);
	r = httpd_io_read_event(&c->io, conn_input, c);
	if (c->dead)
		return;
	if (r == -EPIPE)
		conn_close(c, -1, NULL);
	else if (r == -EINPROGRESS)
		c->tls_more = true;
	else if (r < 0)
		conn_close(c, HTTPD_DROP_IO, "read failed");
}

static void conn_event(struct loop_fd *lh, uint32_t events)
{
	struct httpd_conn *c = container_of(lh, struct httpd_conn, lh);

	c->tls_more = false;
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP) || (c->io.ssl && !c->lingering))
		conn_readable(c);
	if (!c->dead && !c->lingering)
		conn_flush(c);
	/* Decrypted input left over: come back at once, after the others had their turn. */
	if (!c->dead && c->tls_more)
		loop_timer_arm(c->h->loop, &c->t, loop_now_ns(c->h->loop));
}

/* Whether the client's bytes wait for us: in the socket, or decrypted inside TLS. */
static bool input_waiting(const struct httpd_conn *c)
{
	int n = 0;

	if (c->io.ssl && SSL_pending(c->io.ssl) > 0)
		return true;
	return ioctl(c->io.fd, FIONREAD, &n) == 0 && n > 0;
}

static void conn_timer(struct loop_timer *t)
{
	struct httpd_conn *c = container_of(t, struct httpd_conn, t);
	uint64_t deadline = c->born_ns + c->h->head_ns;

	if (c->lingering) {
		conn_close(c, -1, NULL);
		return;
	}
	if (c->tls_more) {
		conn_event(&c->lh, 0);
		if (c->dead || c->tls_more)
			return;
	}
	/*
	 * The request is in and the reply under way: the head deadline is over (a large reply
	 * to a slow reader takes what it takes); a reader that stops taking it is not.
	 */
	if (c->answered) {
		deadline = c->progress_ns + c->h->stall_ns;
		if (loop_now_ns(c->h->loop) >= deadline) {
			conn_close(c, HTTPD_DROP_SLOW_READER, "reply stalled");
			return;
		}
		loop_timer_arm(c->h->loop, t, deadline);
		return;
	}
	/*
	 * Read first: a request that waits in the socket is ours to be late for (a loop behind
	 * in a reconnect storm: 10,000 connections ready, a few dozen events per round), not
	 * the client's. Closing it with its request unread would send a reset.
	 */
	if (input_waiting(c)) {
		conn_event(&c->lh, EPOLLIN);
		if (c->dead || c->lingering)
			return;
		/* Answered now: its timer is the reply's from here on. */
		if (c->answered) {
			loop_timer_arm(c->h->loop, t, c->progress_ns + c->h->stall_ns);
			return;
		}
	}

	if (loop_now_ns(c->h->loop) >= deadline) {
		conn_close(c, HTTPD_DROP_TIMEOUT, "no handshake within 10 s");
		return;
	}
	loop_timer_arm(c->h->loop, t, deadline);
}

static void conn_close(struct httpd_conn *c, int drop, const char *why)
{
	struct httpd *h = c->h;

	if (c->dead)
		return;
	c->dead = true;
	if (drop >= 0) {
		h->st.drops[drop]++;
		log_ratelimited(LOG_LEVEL_INFO, "%s: %s: closed: %s", h->name, c->peer, why);
	}
	if (c->io.fd >= 0)
		loop_fd_del(h->loop, &c->lh);
	loop_timer_disarm(h->loop, &c->t);
	httpd_io_close(&c->io);
	httpd_slot_release(&c->slot);
	/* Live list -> dead list; the reaper frees it. */
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = NULL;
	c->next = h->dead;
	h->dead = c;
	loop_timer_arm(h->loop, &h->reap_t, loop_now_ns(h->loop));
}

static void reap(struct loop_timer *t)
{
	struct httpd *h = container_of(t, struct httpd, reap_t);
	struct httpd_conn *c, *n;

	for (c = h->dead; c; c = n) {
		n = c->next;
		free(c->in);
		free(c->body);
		free(c->out);
		free(c);
	}
	h->dead = NULL;
}

static void accept_one(struct httpd *h, int fd, const struct sockaddr_storage *ss)
{
	struct httpd_conn *c = NULL;
	struct source *x;
	uint64_t hash;
	int one = 1;

	if (h->st.conns >= HTTPD_CONN_MAX) {
		h->st.drops[HTTPD_DROP_CONN_LIMIT]++;
		log_ratelimited(LOG_LEVEL_WARN, "%s: connection limit reached", h->name);
		goto fail;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto fail;
	c->h = h;
	c->io.fd = fd;
	c->lh.fd = fd;
	c->lh.cb = conn_event;
	c->t.cb = conn_timer;
	c->slot.h = h;
	c->peer_uid = -1;
	if (ss->ss_family == AF_UNIX) {
		struct ucred cred;
		socklen_t cl = sizeof(cred);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0 && cl == sizeof(cred))
			c->peer_uid = cred.uid;
		snprintf(c->peer, sizeof(c->peer), "unix:uid%lld", (long long)c->peer_uid);
	} else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, c->peer,
			  sizeof(c->peer));
	else
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, c->peer,
			  sizeof(c->peer));
	c->slot.src_len = (uint8_t)httpd_source_key(ss, c->slot.src);
	hash = hmap_hash(&h->sources, c->slot.src, c->slot.src_len);
	x = source_find(h, c->slot.src, c->slot.src_len, hash);
	if (x && x->n >= HTTPD_UNAUTH_PER_SOURCE) {
		h->st.drops[HTTPD_DROP_UNAUTH_LIMIT]++;
		log_ratelimited(LOG_LEVEL_INFO, "%s: %s: too many unauthenticated connections",
				h->name, c->peer);
		goto fail;
	}
	if (x && x->total >= HTTPD_CONN_PER_SOURCE) {
		h->st.drops[HTTPD_DROP_SOURCE_LIMIT]++;
		log_ratelimited(LOG_LEVEL_INFO, "%s: %s: too many connections from this source",
				h->name, c->peer);
		goto fail;
	}
	if (!x) {
		x = calloc(1, sizeof(*x));
		if (!x)
			goto fail;
		memcpy(x->key, c->slot.src, c->slot.src_len);
		x->len = c->slot.src_len;
		x->credit_ns = UPGRADE_BUCKET_NS;
		x->credit_at_ns = loop_now_ns(h->loop);
		hmap_insert(&h->sources, &x->node, hash);
	}
	if (h->tls) {
		BIO *bio = sockbio_new(fd);

		c->io.ssl = bio ? SSL_new(h->tls) : NULL;
		if (!c->io.ssl) {
			BIO_free(bio);
			goto fail_source;
		}
		/* Never OpenSSL's socket BIO: its write() raises SIGPIPE on a reset connection. */
		SSL_set_bio(c->io.ssl, bio, bio);
		SSL_set_accept_state(c->io.ssl);
	}
	if (ss->ss_family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (h->sndbuf)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &h->sndbuf, sizeof(h->sndbuf));
	c->events = EPOLLIN;
	if (loop_fd_add(h->loop, &c->lh, EPOLLIN) < 0)
		goto fail_source;
	x->n++;
	x->total++;
	c->slot.unauth = true;
	c->slot.live = true;
	h->st.unauth++;
	h->st.conns++;
	h->st.conns_total++;
	c->born_ns = loop_now_ns(h->loop);
	loop_timer_arm(h->loop, &c->t, c->born_ns + h->head_ns);
	c->next = h->conns;
	if (h->conns)
		h->conns->prev = c;
	h->conns = c;
	return;
fail_source:
	source_put(h, x);
fail:
	if (c && c->io.ssl)
		SSL_free(c->io.ssl);
	free(c);
	close(fd);
}

static void listeners_set(struct httpd *h, uint32_t events)
{
	for (size_t i = 0; i < h->n_ls; i++)
		loop_fd_mod(h->loop, &h->ls[i]->lfd, events);
}

static void listeners_resume(struct loop_timer *t)
{
	struct httpd *h = container_of(t, struct httpd, resume_t);

	h->paused = false;
	if (h->spare_fd < 0)
		h->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	listeners_set(h, EPOLLIN);
}

/*
 * Out of descriptors: the connection waits in the backlog and the
 * level-triggered listener would fire again at once, forever. Shed it with
 * the spare descriptor (the client sees its connection closed); without one,
 * rest the listeners for ACCEPT_PAUSE_NS. true: go on accepting.
 */
static bool accept_fd_limit(struct httpd *h, int lfd, int err)
{
	int fd, e;

	/* accept4 takes a descriptor before it looks at the backlog: EMFILE may mean nothing waits. */
	if (h->spare_fd >= 0) {
		close(h->spare_fd);
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		e = errno;
		if (fd >= 0)
			close(fd);
		h->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			h->st.drops[HTTPD_DROP_FD_LIMIT]++;
			log_ratelimited(LOG_LEVEL_WARN, "%s: accept: %s: connection shed", h->name,
					strerror(err));
			if (h->spare_fd >= 0)
				return true;
		} else if (e == EAGAIN && h->spare_fd >= 0) {
			return false; /* nothing was waiting */
		}
	}
	log_ratelimited(LOG_LEVEL_WARN, "%s: accept: %s: pausing", h->name, strerror(err));
	if (!h->paused) {
		h->paused = true;
		listeners_set(h, 0);
		loop_timer_arm(h->loop, &h->resume_t, loop_now_ns(h->loop) + ACCEPT_PAUSE_NS);
	}
	return false;
}

static void listener_event(struct loop_fd *lfd, uint32_t events)
{
	struct listener *l = container_of(lfd, struct listener, lfd);

	(void)events;
	for (int i = 0; i < ACCEPTS_PER_EVENT && !l->h->paused; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept4(lfd->fd, (struct sockaddr *)&ss, &sl,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if ((errno == EMFILE || errno == ENFILE) &&
			    accept_fd_limit(l->h, lfd->fd, errno))
				continue;
			return;
		}
		accept_one(l->h, fd, &ss);
	}
}

/* ---- setup ---- */

int httpd_route_add(struct httpd *h, const char *method, const char *path, httpd_handler_fn fn,
		    void *ctx)
{
	return httpd_route_add_body(h, method, path, 0, fn, ctx);
}

int httpd_route_add_body(struct httpd *h, const char *method, const char *path, size_t body_max,
			 httpd_handler_fn fn, void *ctx)
{
	struct route *arr = realloc(h->routes, (h->n_routes + 1) * sizeof(*arr));
	struct route *rt;

	if (!arr)
		return -ENOMEM;
	h->routes = arr;
	rt = &arr[h->n_routes];
	memset(rt, 0, sizeof(*rt));
	rt->method = strdup(method);
	rt->path = strdup(path);
	if (!rt->method || !rt->path) {
		free(rt->method);
		free(rt->path);
		return -ENOMEM;
	}
	rt->path_len = strlen(path);
	rt->prefix = rt->path_len && path[rt->path_len - 1] == '/';
	rt->body_max = body_max;
	rt->fn = fn;
	rt->ctx = ctx;
	h->n_routes++;
	return 0;
}

/* The listening socket fd of l (h->ls has room) goes on the loop; l is h's, or freed. */
static int listener_start(struct httpd *h, struct listener *l, int fd)
{
	int r;

	l->h = h;
	l->lfd.fd = fd;
	l->lfd.cb = listener_event;
	r = loop_fd_add(h->loop, &l->lfd, EPOLLIN);
	if (r < 0) {
		if (l->unix_path[0])
			unlink(l->unix_path);
		close(fd);
		free(l);
		return r;
	}
	h->ls[h->n_ls++] = l;
	return 0;
}

int httpd_listen(struct httpd *h, const char *spec)
{
	struct sockaddr_storage ss = { 0 };
	struct listener **arr, *l;
	char host[128];
	const char *colon;
	socklen_t sl;
	int fd, one = 1, r;
	long port;
	char *end;

	colon = strrchr(spec, ':');
	if (!colon || (size_t)(colon - spec) >= sizeof(host))
		goto bad;
	memcpy(host, spec, (size_t)(colon - spec));
	host[colon - spec] = '\0';
	port = strtol(colon + 1, &end, 10);
	if (!colon[1] || *end || port < 0 || port > 65535)
		goto bad;
	if (host[0] == '[') {
		struct sockaddr_in6 *a = (void *)&ss;
		size_t hl = strlen(host);

		if (hl < 2 || host[hl - 1] != ']')
			goto bad;
		host[hl - 1] = '\0';
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
			goto bad;
		sl = sizeof(*a);
	} else {
		struct sockaddr_in *a = (void *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		if (host[0] && strcmp(host, "*") && inet_pton(AF_INET, host, &a->sin_addr) != 1)
			goto bad;
		sl = sizeof(*a);
	}
	arr = realloc(h->ls, (h->n_ls + 1) * sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	h->ls = arr;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		free(l);
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6) {
		int zero = 0;

		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	}
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
		r = -errno;
		log_err("%s: cannot listen on %s: %s", h->name, spec, strerror(errno));
		close(fd);
		free(l);
		return r;
	}
	sl = sizeof(ss);
	getsockname(fd, (struct sockaddr *)&ss, &sl);
	l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						 : ((struct sockaddr_in *)&ss)->sin_port);
	snprintf(l->name, sizeof(l->name), "%.*s:%u", (int)(colon - spec), spec, l->port);
	return listener_start(h, l, fd);
bad:
	log_err("%s: bad listen address \"%s\" (ADDR:PORT, [V6ADDR]:PORT)", h->name, spec);
	return -EINVAL;
}

int httpd_listen_unix(struct httpd *h, const char *path, mode_t mode)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct listener **arr, *l;
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(sun.sun_path) || strlen(path) >= sizeof(l->unix_path)) {
		log_err("%s: socket path too long: %s", h->name, path);
		return -ENAMETOOLONG;
	}
	strcpy(sun.sun_path, path);
	/* A socket left by a server that died; the caller holds the lock that says so. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	arr = realloc(h->ls, (h->n_ls + 1) * sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	h->ls = arr;
	l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		free(l);
		return r;
	}
	r = unix_bind_mode(fd, &sun, mode);
	if (r == 0 && listen(fd, LISTEN_BACKLOG) < 0)
		r = -errno;
	if (r < 0) {
		log_err("%s: cannot listen on %s: %s", h->name, path, strerror(-r));
		close(fd);
		free(l);
		return r;
	}
	snprintf(l->name, sizeof(l->name), "%s", path);
	strcpy(l->unix_path, path);
	return listener_start(h, l, fd);
}

static int tls_open(struct httpd *h, const char *cert, const char *key)
{
	h->tls = SSL_CTX_new(TLS_server_method());
	if (!h->tls)
		return -ENOMEM;
	SSL_CTX_set_min_proto_version(h->tls, TLS1_2_VERSION);
	SSL_CTX_set_mode(h->tls, SSL_MODE_ENABLE_PARTIAL_WRITE |
					 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_use_certificate_chain_file(h->tls, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(h->tls, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(h->tls) != 1) {
		log_err("%s: cannot load TLS certificate %s / key %s", h->name, cert, key);
		return -EINVAL;
	}
	return 0;
}

int httpd_new(struct loop *loop, const struct httpd_opts *opts, struct httpd **ret)
{
	struct httpd *h = calloc(1, sizeof(*h));
	int r;

	if (!h)
		return -ENOMEM;
	h->loop = loop;
	h->reap_t.cb = reap;
	h->gc_t.cb = source_gc;
	h->resume_t.cb = listeners_resume;
	httpd_timeouts_set(h, 0, 0);
	/* Kept for the day we run out of descriptors: see accept_fd_limit. */
	h->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	snprintf(h->name, sizeof(h->name), "%s", opts->name ? opts->name : "httpd");
	r = hmap_init(&h->sources);
	if (r < 0)
		goto out;
	if (opts->tls_cert) {
		r = tls_open(h, opts->tls_cert, opts->tls_key);
		if (r < 0)
			goto out;
	}
	*ret = h;
	h = NULL;
	r = 0;
out:
	httpd_free(h);
	return r;
}

void httpd_free(struct httpd *h)
{
	struct hmap_node *n, *next;

	if (!h)
		return;
	while (h->conns)
		conn_close(h->conns, -1, NULL);
	loop_timer_disarm(h->loop, &h->reap_t);
	loop_timer_disarm(h->loop, &h->gc_t);
	loop_timer_disarm(h->loop, &h->resume_t);
	reap(&h->reap_t);
	if (h->spare_fd >= 0)
		close(h->spare_fd);
	for (size_t i = 0; i < h->n_ls; i++) {
		loop_fd_del(h->loop, &h->ls[i]->lfd);
		close(h->ls[i]->lfd.fd);
		if (h->ls[i]->unix_path[0])
			unlink(h->ls[i]->unix_path);
		free(h->ls[i]);
	}
	free(h->ls);
	for (size_t i = 0; i < h->n_routes; i++) {
		free(h->routes[i].method);
		free(h->routes[i].path);
	}
	free(h->routes);
	for (n = hmap_first(&h->sources); n; n = next) {
		next = hmap_next(&h->sources, n);
		free(container_of(n, struct source, node));
	}
	hmap_fini(&h->sources);
	SSL_CTX_free(h->tls);
	free(h);
}

uint16_t httpd_port(const struct httpd *h)
{
	return h->n_ls ? h->ls[0]->port : 0;
}

const char *httpd_listen_name(const struct httpd *h)
{
	return h->n_ls ? h->ls[0]->name : "";
}

bool httpd_tls(const struct httpd *h)
{
	return h->tls != NULL;
}

void httpd_sndbuf_set(struct httpd *h, int bytes)
{
	h->sndbuf = bytes;
}

void httpd_timeouts_set(struct httpd *h, uint64_t head_ns, uint64_t stall_ns)
{
	h->head_ns = head_ns ? head_ns : HTTPD_HANDSHAKE_TIMEOUT_NS;
	h->stall_ns = stall_ns ? stall_ns : HTTPD_REPLY_STALL_NS;
}

void httpd_stats_get(const struct httpd *h, struct httpd_stats *ret)
{
	*ret = h->st;
}
