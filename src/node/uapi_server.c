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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/log.h"
#include "base/time.h"
#include "base/util.h"
#include "node/uapi_server.h"
#include "wg/uapi.h"

#define IN_BUF_INITIAL 4096
/* "set=1\n" + body + "\n": the body itself may be UAPI_MAX_REQUEST bytes. */
#define IN_BUF_MAX ((size_t)UAPI_MAX_REQUEST + 16)
#ifndef SWEEP_INTERVAL_NS
#define SWEEP_INTERVAL_NS (1ULL * NSEC_PER_SEC)
#endif

struct conn {
	struct loop_fd lfd;
	struct uapi_server *srv;
	char *in;
	size_t in_len, in_cap;
	size_t scanned; /* bytes of `in` already searched for the terminator */
	char *out;
	size_t out_len, out_off;
	bool close_after_write;
	uint64_t last_ns;
};

struct uapi_server {
	struct loop *loop;
	struct loop_fd listen;
	struct loop_timer sweep;
	struct uapi_handler handler;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct conn *conns[UAPI_CONNS_MAX];
	unsigned n_conns;
};

int uapi_socket_path(const char *ifname, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/%s.sock", UAPI_SOCKET_DIR, ifname);

	if (n < 0 || (size_t)n >= len || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	return 0;
}

static int sockaddr_fill(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	strcpy(sun->sun_path, path);
	return 0;
}

int uapi_socket_check(const char *path)
{
	struct sockaddr_un sun;
	int fd, ret;

	ret = sockaddr_fill(&sun, path);
	if (ret < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		ret = -EADDRINUSE;
		goto out;
	}
	ret = 0;
	/* ECONNREFUSED: a socket file nobody listens on, left by a crash. */
	if (errno == ECONNREFUSED && unlink(path) < 0 && errno != ENOENT)
		ret = -errno;
out:
	close(fd);
	return ret;
}

static int mkdir_p(const char *dir)
{
	char buf[256];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static void conn_close(struct conn *c)
{
	struct uapi_server *srv = c->srv;
	unsigned i;

	loop_fd_del(srv->loop, &c->lfd);
	close(c->lfd.fd);
	for (i = 0; i < srv->n_conns; i++) {
		if (srv->conns[i] == c) {
			srv->conns[i] = srv->conns[--srv->n_conns];
			break;
		}
	}
	/* A set request carries private keys: wipe what the client sent. */
	if (c->in)
		explicit_bzero(c->in, c->in_cap);
	free(c->in);
	if (c->out)
		explicit_bzero(c->out, c->out_len);
	free(c->out);
	free(c);
	if (!srv->n_conns)
		loop_timer_disarm(srv->loop, &srv->sweep);
}

/* Sends what it can; 0 when all is out, 1 when the socket is full, -errno on error. */
static int conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t r = send(c->lfd.fd, c->out + c->out_off, c->out_len - c->out_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 1;
			return -errno;
		}
		c->out_off += (size_t)r;
		c->last_ns = loop_now_ns(c->srv->loop);
	}
	explicit_bzero(c->out, c->out_len);
	free(c->out);
	c->out = NULL;
	c->out_len = c->out_off = 0;
	return 0;
}

/*
 * Queues body (may be NULL) + "errno=N\n\n"; takes ownership of body. N is the
 * negative errno, as wireguard-go sends it: wg(8) negates what it reads to set
 * errno, so a positive value would print "Unknown error -98" instead of
 * "Address already in use".
 */
static int conn_reply(struct conn *c, char *body, size_t body_len, int err)
{
	char tail[32];
	int n = snprintf(tail, sizeof(tail), "errno=%d\n\n", err > 0 ? -err : err);
	char *out;

	/* Not realloc: the body may hold the private key, and the old copy must be wiped. */
	out = malloc(body_len + (size_t)n);
	if (out) {
		if (body_len)
			memcpy(out, body, body_len);
		memcpy(out + body_len, tail, (size_t)n);
	}
	if (body) {
		explicit_bzero(body, body_len);
		free(body);
	}
	if (!out)
		return -ENOMEM;
	c->out = out;
	c->out_len = body_len + (size_t)n;
	c->out_off = 0;
	return 0;
}

static void conn_get(struct conn *c)
{
	struct uapi_handler *h = &c->srv->handler;
	char *body = NULL;
	size_t len = 0;
	int err;

	err = h->get(h->ctx, &body, &len);
	if (err < 0) {
		log_warn("uapi get failed: %s", strerror(-err));
		body = NULL;
		len = 0;
	}
	if (conn_reply(c, body, len, err) < 0)
		c->close_after_write = true;
}

static void conn_set(struct conn *c, const char *body, size_t len)
{
	struct uapi_handler *h = &c->srv->handler;
	int err;

	err = h->set(h->ctx, body, len);
	if (conn_reply(c, NULL, 0, err) < 0)
		c->close_after_write = true;
}

/*
 * Executes at most one complete request from the front of the input buffer.
 * Returns 1 if one ran, 0 if more bytes are needed, -1 if the connection must close.
 */
static int conn_process_one(struct conn *c)
{
	size_t i, req_len;

	if (!c->in_len)
		return 0;
	/* The operation line decides early whether this is worth buffering at all. */
	if (c->in_len >= 6 && memcmp(c->in, "get=1\n", 6) != 0 &&
	    memcmp(c->in, "set=1\n", 6) != 0) {
		log_ratelimited(LOG_LEVEL_WARN, "uapi: invalid operation, closing connection");
		return -1;
	}
	if (c->in_len < 6)
		return memchr(c->in, '\n', c->in_len) ? -1 : 0;

	for (i = MAX(c->scanned, (size_t)6); i < c->in_len; i++)
		if (c->in[i] == '\n' && c->in[i - 1] == '\n')
			break;
	if (i == c->in_len) {
		c->scanned = c->in_len;
		return 0;
	}
	req_len = i + 1;
	if (c->in[0] == 'g') {
		if (req_len != 7) {
			/* "get=1\n" must be followed by the empty line, nothing else. */
			if (conn_reply(c, NULL, 0, -EINVAL) < 0)
				return -1;
			c->close_after_write = true;
		} else {
			conn_get(c);
		}
	} else {
		conn_set(c, c->in + 6, req_len - 7);
	}
	explicit_bzero(c->in, req_len);
	memmove(c->in, c->in + req_len, c->in_len - req_len);
	c->in_len -= req_len;
	c->scanned = 0;
	return 1;
}

static void conn_update_events(struct conn *c)
{
	/* While a reply is pending only EPOLLOUT: reading resumes once it is out. */
	loop_fd_mod(c->srv->loop, &c->lfd, c->out ? EPOLLOUT : EPOLLIN);
}

/* Runs requests while no reply is pending. false if the connection was closed. */
static bool conn_pump(struct conn *c)
{
	for (;;) {
		int r;

		if (c->out) {
			r = conn_flush(c);
			if (r < 0)
				goto close;
			if (r > 0)
				break;
		}
		if (c->close_after_write)
			goto close;
		r = conn_process_one(c);
		if (r < 0)
			goto close;
		if (r == 0)
			break;
	}
	conn_update_events(c);
	return true;
close:
	conn_close(c);
	return false;
}

static void conn_event(struct loop_fd *h, uint32_t events)
{
	struct conn *c = container_of(h, struct conn, lfd);

	if (events & EPOLLOUT) {
		conn_pump(c);
		return;
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (;;) {
		ssize_t r;

		if (c->in_len == c->in_cap) {
			size_t cap = c->in_cap ? c->in_cap * 2 : IN_BUF_INITIAL;
			char *in;

			if (c->in_cap >= IN_BUF_MAX) {
				log_ratelimited(LOG_LEVEL_WARN,
						"uapi: request over %u bytes, closing",
						UAPI_MAX_REQUEST);
				if (!c->out && conn_reply(c, NULL, 0, -EMSGSIZE) == 0) {
					c->close_after_write = true;
					c->in_len = 0;
					conn_pump(c);
					return;
				}
				conn_close(c);
				return;
			}
			cap = MIN(cap, IN_BUF_MAX);
			/* Not realloc: the old buffer may hold keys and must be wiped. */
			in = malloc(cap);
			if (!in) {
				conn_close(c);
				return;
			}
			if (c->in) {
				memcpy(in, c->in, c->in_len);
				explicit_bzero(c->in, c->in_cap);
				free(c->in);
			}
			c->in = in;
			c->in_cap = cap;
		}
		r = recv(c->lfd.fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			conn_close(c);
			return;
		}
		if (r == 0) {
			/*
			 * EOF. Complete requests already ran after the read that finished
			 * them; a reply still pending is delivered before closing.
			 */
			c->close_after_write = true;
			if (c->out)
				conn_pump(c);
			else
				conn_close(c);
			return;
		}
		c->in_len += (size_t)r;
		c->last_ns = loop_now_ns(c->srv->loop);
		if (!conn_pump(c))
			return;
		if (c->out)
			return; /* reading is paused until the reply is out */
	}
}

static void sweep_fire(struct loop_timer *t)
{
	struct uapi_server *srv = container_of(t, struct uapi_server, sweep);
	uint64_t now = loop_now_ns(srv->loop);
	unsigned i = 0;

	while (i < srv->n_conns) {
		struct conn *c = srv->conns[i];

		if (now - c->last_ns > UAPI_IDLE_TIMEOUT_NS) {
			log_debug("uapi: closing idle connection");
			conn_close(c); /* moves the last entry into slot i */
			continue;
		}
		i++;
	}
	if (srv->n_conns)
		loop_timer_arm(srv->loop, &srv->sweep, now + SWEEP_INTERVAL_NS);
}

static void listen_event(struct loop_fd *h, uint32_t events)
{
	struct uapi_server *srv = container_of(h, struct uapi_server, listen);

	(void)events;
	for (;;) {
		struct conn *c;
		int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_ratelimited(LOG_LEVEL_WARN, "uapi: accept: %s",
						strerror(errno));
			return;
		}
		if (srv->n_conns == UAPI_CONNS_MAX) {
			log_ratelimited(LOG_LEVEL_WARN, "uapi: %u connections open, refusing",
					UAPI_CONNS_MAX);
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->srv = srv;
		c->lfd.fd = fd;
		c->lfd.cb = conn_event;
		c->last_ns = loop_now_ns(srv->loop);
		if (loop_fd_add(srv->loop, &c->lfd, EPOLLIN) < 0) {
			close(fd);
			free(c);
			continue;
		}
		srv->conns[srv->n_conns++] = c;
		if (!srv->sweep.armed)
			loop_timer_arm(srv->loop, &srv->sweep, c->last_ns + SWEEP_INTERVAL_NS);
	}
}

int uapi_server_new(struct loop *loop, const char *path, const struct uapi_handler *handler,
		    struct uapi_server **ret)
{
	struct uapi_server *srv = NULL;
	struct sockaddr_un sun;
	char dir[sizeof(sun.sun_path)];
	char *slash;
	mode_t old_mask;
	int fd = -1, r;

	r = sockaddr_fill(&sun, path);
	if (r < 0)
		goto out;
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		r = mkdir_p(dir);
		if (r < 0)
			goto out;
	}
	r = uapi_socket_check(path);
	if (r < 0)
		goto out;
	srv = calloc(1, sizeof(*srv));
	if (!srv) {
		r = -ENOMEM;
		goto out;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	/* umask, not chmod after bind: no window in which the socket is reachable by others. */
	old_mask = umask(0177);
	r = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
	umask(old_mask);
	if (r < 0) {
		r = -errno;
		goto out;
	}
	if (listen(fd, 16) < 0) {
		r = -errno;
		unlink(path);
		goto out;
	}
	srv->loop = loop;
	srv->handler = *handler;
	snprintf(srv->path, sizeof(srv->path), "%s", path);
	srv->listen.fd = fd;
	srv->listen.cb = listen_event;
	srv->sweep.cb = sweep_fire;
	srv->sweep.deadline_ns = TIME_NEVER;
	r = loop_fd_add(loop, &srv->listen, EPOLLIN);
	if (r < 0) {
		unlink(path);
		goto out;
	}
	*ret = srv;
	srv = NULL;
	fd = -1;
	r = 0;
out:
	if (fd >= 0)
		close(fd);
	free(srv);
	return r;
}

void uapi_server_free(struct uapi_server *srv)
{
	if (!srv)
		return;
	while (srv->n_conns)
		conn_close(srv->conns[0]);
	loop_timer_disarm(srv->loop, &srv->sweep);
	loop_fd_del(srv->loop, &srv->listen);
	close(srv->listen.fd);
	unlink(srv->path);
	free(srv);
}
