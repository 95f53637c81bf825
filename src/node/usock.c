/* SPDX-License-Identifier: MIT */
/*
 * Unix-stream server plumbing (see usock.h). A connection alternates between
 * reading (bytes accumulate, on_data takes complete requests from the front)
 * and writing (queued replies drain as the socket allows, EPOLLOUT); a held
 * connection waits for the protocol and only watches for a hang-up. A
 * connection the protocol is done with (close after write) while the peer
 * may still be sending lingers: the protocol has seen it close, our write
 * side is shut (the peer reads the reply, then EOF) and input is read and
 * dropped until the peer's EOF, LINGER_BYTES_MAX or LINGER_NS, then it
 * closes. Closing with unread input would make the kernel reset the peer,
 * whose blocked write then fails before it reads the reply.
 */
#include <errno.h>
#include <fcntl.h>
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
#include "node/usock.h"
#include "os/unixsock.h"

#define IN_BUF_INITIAL 4096
#define LINGER_NS (1ULL * 1000000000ULL)
#define LINGER_BYTES_MAX (1U << 20)
#define UID_UNKNOWN ((uid_t)-1)

struct usock_conn {
	struct loop_fd lfd;
	struct usock_server *srv;
	char *in;
	size_t in_len, in_cap;
	char *out;
	size_t out_len, out_off, out_cap;
	bool close_after_write;
	bool held;
	bool in_cb;	/* inside on_data: closes are deferred */
	bool doomed;	/* usock_conn_close was called inside on_data */
	bool peer_eof;	/* the peer shut its write side */
	bool lingering; /* the protocol saw on_close; draining until linger_until_ns */
	bool pump_pending; /* buffered requests wait for the defer timer (usock_conn_kick) */
	uid_t uid;	/* UID_UNKNOWN if SO_PEERCRED failed */
	uint64_t last_ns;  /* last progress, on the clock (see touch) */
	uint64_t start_ns; /* waiting for a request since, on the clock (request deadline) */
	uint64_t linger_until_ns;
	size_t drained;
	max_align_t priv[];
};

struct usock_server {
	struct loop *loop;
	struct loop_fd listen;
	struct loop_timer sweep;
	struct loop_timer defer; /* runs kicked connections' buffered requests */
	struct usock_limits lim;
	struct usock_ops ops;
	char name[32];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct usock_conn **conns;
	unsigned n_conns;
};

static int sockaddr_fill(struct sockaddr_un *sun, const char *path)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	if (!path || strlen(path) >= sizeof(sun->sun_path))
		return -ENAMETOOLONG;
	strcpy(sun->sun_path, path);
	return 0;
}

int usock_socket_check(const char *path)
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

static int mkdir_parent(const char *path)
{
	char buf[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *p;

	snprintf(buf, sizeof(buf), "%s", path);
	p = strrchr(buf, '/');
	if (!p || p == buf)
		return 0;
	*p = '\0';
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

void *usock_conn_priv(struct usock_conn *c)
{
	return c->priv;
}

int usock_conn_fd(const struct usock_conn *c)
{
	return c->lfd.fd;
}

bool usock_conn_uid(const struct usock_conn *c, uid_t *ret)
{
	if (c->uid == UID_UNKNOWN)
		return false;
	*ret = c->uid;
	return true;
}

static void wipe_free(char *p, size_t len)
{
	if (p)
		explicit_bzero(p, len);
	free(p);
}

/*
 * Progress is stamped with the clock, not with the loop's cached "now": that
 * dates from before the callback, and one callback can outlast the idle
 * timeout (reading megabytes, a slow handler), which made a busy connection
 * look idle to the next sweep.
 */
static uint64_t touch(struct usock_conn *c)
{
	return c->last_ns = time_now_ns();
}

void usock_conn_close(struct usock_conn *c)
{
	struct usock_server *srv = c->srv;
	unsigned i;

	if (c->in_cb) {
		c->doomed = true;
		return;
	}
	if (srv->ops.on_close && !c->lingering)
		srv->ops.on_close(srv->ops.ctx, c);
	loop_fd_del(srv->loop, &c->lfd);
	close(c->lfd.fd);
	for (i = 0; i < srv->n_conns; i++) {
		if (srv->conns[i] == c) {
			srv->conns[i] = srv->conns[--srv->n_conns];
			break;
		}
	}
	wipe_free(c->in, c->in_cap);
	wipe_free(c->out, c->out_cap);
	free(c);
	if (!srv->n_conns)
		loop_timer_disarm(srv->loop, &srv->sweep);
}

int usock_conn_send(struct usock_conn *c, const void *buf, size_t len)
{
	size_t pending = c->out_len - c->out_off, cap;
	char *out;

	if (len > c->srv->lim.out_max || pending > c->srv->lim.out_max - len)
		return -EMSGSIZE;
	if (c->out_len + len > c->out_cap) {
		/* Not realloc: the old buffer may hold keys and must be wiped. */
		cap = MAX(c->out_cap * 2, pending + len);
		out = malloc(cap);
		if (!out)
			return -ENOMEM;
		if (pending)
			memcpy(out, c->out + c->out_off, pending);
		wipe_free(c->out, c->out_cap);
		c->out = out;
		c->out_cap = cap;
		c->out_off = 0;
		c->out_len = pending;
	}
	memcpy(c->out + c->out_len, buf, len);
	c->out_len += len;
	return 0;
}

void usock_conn_close_after_write(struct usock_conn *c)
{
	c->close_after_write = true;
}

void usock_conn_hold(struct usock_conn *c, bool hold)
{
	c->held = hold;
	if (!hold)
		c->start_ns = touch(c);
}

/* 0 when all is out, 1 when the socket is full, -errno on error. */
static int conn_flush(struct usock_conn *c)
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
		touch(c);
	}
	/* Replies can be large (a full get): do not keep them around, nor their keys. */
	wipe_free(c->out, c->out_cap);
	c->out = NULL;
	c->out_len = c->out_off = c->out_cap = 0;
	return 0;
}

/* Hands one request to the protocol. -1 close, 0 need bytes, 1 progress. */
static int conn_process_one(struct usock_conn *c)
{
	struct usock_server *srv = c->srv;
	int n;

	if (!c->in_len)
		return 0;
	c->in_cb = true;
	n = srv->ops.on_data(srv->ops.ctx, c, c->in, c->in_len);
	c->in_cb = false;
	if (n < 0 || c->doomed)
		return -1;
	if (n == 0) {
		if (c->in_len < srv->lim.in_max)
			return 0;
		if (srv->ops.on_overflow)
			srv->ops.on_overflow(srv->ops.ctx, c);
		c->close_after_write = true;
		n = (int)c->in_len;
	}
	if ((size_t)n > c->in_len)
		n = (int)c->in_len;
	/*
	 * An answered request restarts the deadline; one without an answer (an empty
	 * line) does not, or trickling those would keep a connection forever.
	 */
	if (c->out_off < c->out_len || c->held)
		c->start_ns = time_now_ns();
	explicit_bzero(c->in, (size_t)n);
	memmove(c->in, c->in + n, c->in_len - (size_t)n);
	c->in_len -= (size_t)n;
	return 1;
}

static void conn_update_events(struct usock_conn *c)
{
	uint32_t ev;

	if (c->out_off < c->out_len)
		ev = EPOLLOUT; /* reading resumes once the reply is out */
	else if (!c->held && !c->close_after_write)
		ev = EPOLLIN;
	else
		ev = EPOLLRDHUP; /* waiting for the protocol: still notice a hang-up */
	loop_fd_mod(c->srv->loop, &c->lfd, ev);
}

static void linger_event(struct loop_fd *h, uint32_t events)
{
	struct usock_conn *c = container_of(h, struct usock_conn, lfd);
	char buf[4096];
	ssize_t r;

	(void)events;
	for (;;) {
		r = recv(c->lfd.fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (r > 0) {
			c->drained += (size_t)r;
			if (c->drained < LINGER_BYTES_MAX)
				continue;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else if (r < 0 && errno == EAGAIN) {
			break;
		}
		usock_conn_close(c); /* EOF, an error or enough */
		break;
	}
	explicit_bzero(buf, sizeof(buf)); /* the rest of a request may carry keys */
}

/* The reply is out and the protocol is done; the peer has not shut its side. */
static void conn_linger(struct usock_conn *c)
{
	struct usock_server *srv = c->srv;

	if (srv->ops.on_close)
		srv->ops.on_close(srv->ops.ctx, c);
	c->lingering = true;
	c->linger_until_ns = time_now_ns() + LINGER_NS;
	wipe_free(c->in, c->in_cap);
	c->in = NULL;
	c->in_len = c->in_cap = 0;
	if (shutdown(c->lfd.fd, SHUT_WR) < 0) {
		usock_conn_close(c);
		return;
	}
	c->lfd.cb = linger_event;
	loop_fd_mod(srv->loop, &c->lfd, EPOLLIN | EPOLLRDHUP);
	if (!srv->sweep.armed)
		loop_timer_arm(srv->loop, &srv->sweep, c->linger_until_ns);
}

/*
 * Flushes and runs requests while nothing is pending. false if the connection was closed
 * (for the protocol: a lingering one is closed too).
 */
static bool conn_pump(struct usock_conn *c)
{
	for (;;) {
		int r = conn_flush(c);

		if (r < 0)
			goto close;
		if (r > 0)
			break;
		if (c->close_after_write) {
			if (c->peer_eof)
				goto close;
			conn_linger(c);
			return false;
		}
		if (c->held)
			break;
		r = conn_process_one(c);
		if (r < 0)
			goto close;
		if (r == 0)
			break;
	}
	conn_update_events(c);
	return true;
close:
	usock_conn_close(c);
	return false;
}

/*
 * Outside on_data the caller is usually inside its own callback (a backend finishing
 * a request): running the next buffered request there would re-enter the protocol and
 * the backend under their feet (found by fuzz_localapi). So only the output goes now;
 * requests already buffered run from the loop.
 */
bool usock_conn_kick(struct usock_conn *c)
{
	struct usock_server *srv = c->srv;
	int r;

	if (c->in_cb)
		return !c->doomed;
	r = conn_flush(c);
	if (r < 0) {
		usock_conn_close(c);
		return false;
	}
	if (r == 0 && c->close_after_write) {
		if (c->peer_eof)
			usock_conn_close(c);
		else
			conn_linger(c);
		return false;
	}
	conn_update_events(c);
	if (r == 0 && !c->held && c->in_len) {
		c->pump_pending = true;
		if (!srv->defer.armed)
			loop_timer_arm(srv->loop, &srv->defer, loop_now_ns(srv->loop));
	}
	return true;
}

static void defer_fire(struct loop_timer *t)
{
	struct usock_server *srv = container_of(t, struct usock_server, defer);
	unsigned i = 0;

	while (i < srv->n_conns) {
		struct usock_conn *c = srv->conns[i];

		if (c->pump_pending) {
			c->pump_pending = false;
			conn_pump(c);
			if (i < srv->n_conns && srv->conns[i] != c)
				continue; /* closed: slot i holds another connection now */
		}
		i++;
	}
}

/* Makes room to read into; false if the connection was closed. */
static bool conn_in_grow(struct usock_conn *c)
{
	size_t max = c->srv->lim.in_max;
	size_t cap = MIN(c->in_cap ? c->in_cap * 2 : IN_BUF_INITIAL, max);
	char *in;

	/* Not realloc: the old buffer may hold keys and must be wiped. */
	in = malloc(cap);
	if (!in) {
		usock_conn_close(c);
		return false;
	}
	if (c->in_len)
		memcpy(in, c->in, c->in_len);
	wipe_free(c->in, c->in_cap);
	c->in = in;
	c->in_cap = cap;
	return true;
}

static void conn_event(struct loop_fd *h, uint32_t events)
{
	struct usock_conn *c = container_of(h, struct usock_conn, lfd);

	if (events & EPOLLOUT) {
		conn_pump(c);
		return;
	}
	if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && (c->held || c->close_after_write)) {
		usock_conn_close(c);
		return;
	}
	if (events & EPOLLRDHUP)
		c->peer_eof = true; /* the bytes before it are still read below */
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	while (!c->held && !c->close_after_write && c->out_off == c->out_len) {
		ssize_t r;

		if (c->in_len == c->in_cap && !conn_in_grow(c))
			return;
		r = recv(c->lfd.fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			usock_conn_close(c);
			return;
		}
		if (r == 0) {
			/*
			 * EOF. Complete requests already ran after the read that finished
			 * them; a reply still pending is delivered before closing. A held
			 * connection closes on the hang-up event.
			 */
			c->peer_eof = true;
			if (!c->held)
				c->close_after_write = true;
			break;
		}
		c->in_len += (size_t)r;
		touch(c);
		if (!conn_pump(c))
			return;
	}
	conn_pump(c);
}

static void sweep_fire(struct loop_timer *t)
{
	struct usock_server *srv = container_of(t, struct usock_server, sweep);
	uint64_t now = time_now_ns(); /* not older than any last_ns */
	unsigned i = 0;

	while (i < srv->n_conns) {
		struct usock_conn *c = srv->conns[i];

		if (c->lingering) {
			if (now >= c->linger_until_ns) {
				usock_conn_close(c); /* moves the last entry into slot i */
				continue;
			}
		} else if (!c->held && now - c->last_ns > srv->lim.idle_timeout_ns) {
			log_debug("%s: closing idle connection", srv->name);
			usock_conn_close(c);
			continue;
		} else if (!c->held && srv->lim.request_timeout_ns &&
			   now - c->start_ns > srv->lim.request_timeout_ns) {
			log_debug("%s: closing a connection past its request deadline", srv->name);
			usock_conn_close(c);
			continue;
		}
		i++;
	}
	if (srv->n_conns)
		loop_timer_arm(srv->loop, &srv->sweep, now + srv->lim.sweep_interval_ns);
}

static uid_t peer_uid(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred))
		return UID_UNKNOWN;
	return cred.uid;
}

/*
 * Whether one more connection from uid fits: root only needs a free slot; anyone else
 * also a slot outside the reserve and room under the per-uid cap.
 */
static bool admit(const struct usock_server *srv, uid_t uid)
{
	unsigned i, same = 0, others = 0;

	if (srv->n_conns >= srv->lim.conns_max)
		return false;
	if (uid == 0)
		return true;
	for (i = 0; i < srv->n_conns; i++) {
		if (srv->conns[i]->uid == 0)
			continue;
		others++;
		if (srv->conns[i]->uid == uid)
			same++;
	}
	if (others + srv->lim.conns_root_reserved >= srv->lim.conns_max)
		return false;
	return !srv->lim.conns_per_uid_max || same < srv->lim.conns_per_uid_max;
}

static void listen_event(struct loop_fd *h, uint32_t events)
{
	struct usock_server *srv = container_of(h, struct usock_server, listen);

	(void)events;
	for (;;) {
		struct usock_conn *c;
		int fd = accept4(h->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		uid_t uid;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_ratelimited(LOG_LEVEL_WARN, "%s: accept: %s", srv->name,
						strerror(errno));
			return;
		}
		uid = peer_uid(fd);
		if (!admit(srv, uid)) {
			log_ratelimited(LOG_LEVEL_WARN,
					"%s: no connection slot for uid %ld, refusing", srv->name,
					uid == UID_UNKNOWN ? -1L : (long)uid);
			close(fd);
			continue;
		}
		c = calloc(1, sizeof(*c) + srv->ops.conn_priv_size);
		if (!c) {
			close(fd);
			continue;
		}
		c->srv = srv;
		c->lfd.fd = fd;
		c->lfd.cb = conn_event;
		c->uid = uid;
		c->start_ns = touch(c);
		if ((srv->ops.on_open && srv->ops.on_open(srv->ops.ctx, c) < 0) ||
		    loop_fd_add(srv->loop, &c->lfd, EPOLLIN | EPOLLRDHUP) < 0) {
			close(fd);
			free(c);
			continue;
		}
		srv->conns[srv->n_conns++] = c;
		if (!srv->sweep.armed)
			loop_timer_arm(srv->loop, &srv->sweep,
				       c->last_ns + srv->lim.sweep_interval_ns);
	}
}

int usock_server_new(struct loop *loop, const char *path, const char *name,
		     const struct usock_limits *limits, const struct usock_ops *ops,
		     struct usock_server **ret)
{
	struct usock_server *srv = NULL;
	struct sockaddr_un sun;
	int fd = -1, r;
	bool bound = false;

	r = sockaddr_fill(&sun, path);
	if (r < 0)
		goto out;
	r = mkdir_parent(path);
	if (r < 0)
		goto out;
	r = usock_socket_check(path);
	if (r < 0)
		goto out;
	srv = calloc(1, sizeof(*srv));
	if (srv)
		srv->conns = calloc(MAX(limits->conns_max, 1U), sizeof(*srv->conns));
	if (!srv || !srv->conns) {
		r = -ENOMEM;
		goto out;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	r = unix_bind_mode(fd, &sun, limits->mode & 0777);
	if (r < 0)
		goto out;
	bound = true;
	if (listen(fd, limits->backlog) < 0) {
		r = -errno;
		goto out;
	}
	srv->loop = loop;
	srv->lim = *limits;
	srv->ops = *ops;
	snprintf(srv->name, sizeof(srv->name), "%s", name);
	snprintf(srv->path, sizeof(srv->path), "%s", path);
	srv->listen.fd = fd;
	srv->listen.cb = listen_event;
	srv->sweep.cb = sweep_fire;
	srv->sweep.deadline_ns = TIME_NEVER;
	srv->defer.cb = defer_fire;
	srv->defer.deadline_ns = TIME_NEVER;
	r = loop_fd_add(loop, &srv->listen, EPOLLIN);
	if (r < 0)
		goto out;
	*ret = srv;
	srv = NULL;
	fd = -1;
	bound = false;
	r = 0;
out:
	if (bound)
		unlink(path);
	if (fd >= 0)
		close(fd);
	if (srv)
		free(srv->conns);
	free(srv);
	return r;
}

void usock_server_free(struct usock_server *srv)
{
	if (!srv)
		return;
	while (srv->n_conns)
		usock_conn_close(srv->conns[0]);
	loop_timer_disarm(srv->loop, &srv->sweep);
	loop_timer_disarm(srv->loop, &srv->defer);
	loop_fd_del(srv->loop, &srv->listen);
	close(srv->listen.fd);
	unlink(srv->path);
	free(srv->conns);
	free(srv);
}
