/* SPDX-License-Identifier: MIT */
/*
 * Local API server (docs/localapi.md).
 *
 * Per connection: READING (bytes accumulate up to LOCALAPI_REQUEST_MAX until a
 * newline) -> the request runs on the loop thread -> the reply is queued and
 * drains as the client reads. While a reply is queued or an `up` is pending
 * (req set), reading pauses, so one connection has at most one request in
 * flight and its memory is bounded by the request cap plus LOCALAPI_REPLY_MAX.
 * A pending `up` outlives its connection: if the client goes away, req->conn
 * becomes NULL and the backend's later answer is dropped.
 *
 * Bad input (not JSON, unknown command, an over-long line) gets an error line;
 * an over-long line then closes the connection. Connections beyond
 * LOCALAPI_CONNS_MAX are closed at once; idle ones (no pending up) after
 * LOCALAPI_IDLE_TIMEOUT_NS.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "node/localapi.h"

#define SWEEP_INTERVAL_NS (1ULL * 1000000000ULL)

struct conn;

struct localapi_req {
	struct localapi_server *srv;
	struct conn *conn; /* NULL once the client is gone */
	struct localapi_req *next;
};

struct conn {
	struct loop_fd lfd;
	struct localapi_server *srv;
	uid_t uid;
	bool uid_known;
	char in[LOCALAPI_REQUEST_MAX];
	size_t in_len;
	char *out;
	size_t out_len, out_off, out_cap;
	bool close_after_write;
	struct localapi_req *req;
	uint64_t last_ns;
};

struct localapi_server {
	struct loop *loop;
	struct loop_fd listen;
	struct loop_timer sweep;
	struct localapi_backend be;
	uid_t write_uid; /* 0; tests change it to check the permission path */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct conn *conns[LOCALAPI_CONNS_MAX];
	unsigned n_conns;
	struct localapi_req *reqs; /* pending ups, including orphaned ones */
};

json_t *localapi_reply_ok(void)
{
	return json_pack("{s:b}", "ok", 1);
}

json_t *localapi_reply_error(const char *text)
{
	return json_pack("{s:b, s:s}", "ok", 0, "error", text ? text : "error");
}

static void conn_close(struct conn *c)
{
	struct localapi_server *srv = c->srv;
	unsigned i;

	loop_fd_del(srv->loop, &c->lfd);
	close(c->lfd.fd);
	for (i = 0; i < srv->n_conns; i++) {
		if (srv->conns[i] == c) {
			srv->conns[i] = srv->conns[--srv->n_conns];
			break;
		}
	}
	if (c->req)
		c->req->conn = NULL;
	/* An up request carries the auth key. */
	explicit_bzero(c->in, sizeof(c->in));
	free(c->out);
	free(c);
	if (!srv->n_conns)
		loop_timer_disarm(srv->loop, &srv->sweep);
}

/* Queues msg (stolen) as one line. 0, or -EMSGSIZE / -ENOMEM (connection must close). */
static int conn_queue(struct conn *c, json_t *msg)
{
	char *text;
	size_t len;
	int ret = 0;

	if (!msg)
		return -ENOMEM;
	text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!text)
		return -ENOMEM;
	len = strlen(text);
	if (c->out_len - c->out_off + len + 1 > LOCALAPI_REPLY_MAX) {
		ret = -EMSGSIZE;
		goto out;
	}
	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + len + 1 > c->out_cap) {
		size_t cap = MAX(c->out_cap * 2, c->out_len + len + 1);
		char *out;

		if (c->out_off) {
			memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
			c->out_len -= c->out_off;
			c->out_off = 0;
		}
		out = realloc(c->out, cap);
		if (!out) {
			ret = -ENOMEM;
			goto out;
		}
		c->out = out;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, text, len);
	c->out[c->out_len + len] = '\n';
	c->out_len += len + 1;
out:
	free(text);
	return ret;
}

/* 0 when all is out, 1 when the socket is full, -errno on error. */
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
	c->out_off = c->out_len = 0;
	return 0;
}

static bool conn_pump(struct conn *c);

static bool may_write(const struct conn *c)
{
	return c->uid_known && c->uid == c->srv->write_uid;
}

static json_t *field_str(json_t *req, const char *name, bool *bad)
{
	json_t *v = json_object_get(req, name);

	if (v && !json_is_string(v) && !json_is_null(v))
		*bad = true;
	return v && json_is_string(v) ? v : NULL;
}

/* Parses "100.64.0.1" or "fd7e::1" or with a "/len" suffix; family or 0. */
static int addr_parse(const char *s, uint8_t ret[16])
{
	char buf[INET6_ADDRSTRLEN + 8];
	char *slash;

	snprintf(buf, sizeof(buf), "%s", s);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	memset(ret, 0, 16);
	if (inet_pton(AF_INET, buf, ret) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, buf, ret) == 1)
		return AF_INET6;
	return 0;
}

static bool node_has_addr(json_t *node, int family, const uint8_t addr[16])
{
	json_t *ips = json_object_get(node, "ips"), *v;
	size_t i;

	json_array_foreach(ips, i, v) {
		uint8_t a[16];

		if (json_is_string(v) && addr_parse(json_string_value(v), a) == family &&
		    !memcmp(a, addr, family == AF_INET ? 4 : 16))
			return true;
	}
	return false;
}

static json_t *cmd_read(struct conn *c, const char *cmd, json_t *req)
{
	struct localapi_backend *be = &c->srv->be;
	json_t *status = NULL, *reply = NULL;
	int r;

	r = be->status ? be->status(be->ctx, &status) : -ENOTSUP;
	if (r < 0)
		return localapi_reply_error(strerror(-r));
	if (!strcmp(cmd, "status")) {
		reply = json_pack("{s:b, s:O}", "ok", 1, "status", status);
	} else if (!strcmp(cmd, "ip")) {
		json_t *self = json_object_get(status, "self");
		json_t *ips = json_object_get(self, "ips");

		reply = json_pack("{s:b, s:o}", "ok", 1, "ips",
				  json_is_array(ips) ? json_incref(ips) : json_array());
	} else {
		json_t *addr = json_object_get(req, "addr"), *self, *peers, *v, *hit = NULL;
		uint8_t a[16];
		int family;
		size_t i;

		if (!json_is_string(addr) ||
		    !(family = addr_parse(json_string_value(addr), a))) {
			reply = localapi_reply_error("whois: \"addr\" must be an IP address");
			goto out;
		}
		self = json_object_get(status, "self");
		if (self && node_has_addr(self, family, a))
			hit = self;
		peers = json_object_get(status, "peers");
		json_array_foreach(peers, i, v) {
			if (!hit && node_has_addr(v, family, a))
				hit = v;
		}
		if (!hit)
			reply = localapi_reply_error("no node has that address");
		else
			reply = json_pack("{s:b, s:O}", "ok", 1, "node", hit);
	}
out:
	json_decref(status);
	return reply;
}

static void req_unlink(struct localapi_req *req)
{
	struct localapi_req **pp;

	for (pp = &req->srv->reqs; *pp; pp = &(*pp)->next) {
		if (*pp == req) {
			*pp = req->next;
			break;
		}
	}
}

static json_t *cmd_up(struct conn *c, json_t *req)
{
	struct localapi_backend *be = &c->srv->be;
	struct localapi_up_opts opts = {0};
	struct localapi_req *r;
	json_t *v;
	bool bad = false;

	v = field_str(req, "login_server", &bad);
	opts.login_server = v ? json_string_value(v) : NULL;
	v = field_str(req, "auth_key", &bad);
	opts.auth_key = v && *json_string_value(v) ? json_string_value(v) : NULL;
	v = field_str(req, "hostname", &bad);
	opts.hostname = v && *json_string_value(v) ? json_string_value(v) : NULL;
	if (bad)
		return localapi_reply_error("up: login_server, auth_key and hostname must be strings");
	if (!opts.login_server || !*opts.login_server)
		return localapi_reply_error("up: login_server is required");
	if (!be->up)
		return localapi_reply_error("up: not supported by this daemon");
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->srv = c->srv;
	r->conn = c;
	r->next = c->srv->reqs;
	c->srv->reqs = r;
	c->req = r;
	be->up(be->ctx, &opts, r); /* may finish at once */
	return NULL;
}

/* Runs one request line (NUL-terminated). false if the connection must close. */
static bool conn_run(struct conn *c, const char *line, size_t len)
{
	struct localapi_backend *be = &c->srv->be;
	char err[LOCALAPI_ERROR_MAX];
	json_t *req, *reply = NULL;
	const char *cmd;
	json_error_t jerr;
	int r;

	req = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!req || !json_is_object(req) || !json_is_string(json_object_get(req, "cmd"))) {
		reply = localapi_reply_error("request must be a JSON object with a \"cmd\" string");
		goto out;
	}
	cmd = json_string_value(json_object_get(req, "cmd"));
	if (!strcmp(cmd, "status") || !strcmp(cmd, "ip") || !strcmp(cmd, "whois")) {
		reply = cmd_read(c, cmd, req);
		goto out;
	}
	if (strcmp(cmd, "up") && strcmp(cmd, "down") && strcmp(cmd, "logout")) {
		snprintf(err, sizeof(err), "unknown command \"%.64s\"", cmd);
		reply = localapi_reply_error(err);
		goto out;
	}
	if (!may_write(c)) {
		snprintf(err, sizeof(err), "%s: permission denied (run as root)", cmd);
		reply = localapi_reply_error(err);
		goto out;
	}
	if (!strcmp(cmd, "up")) {
		reply = cmd_up(c, req);
		if (!reply && c->req) {
			json_decref(req);
			return true; /* the answer comes through the req */
		}
		goto out;
	}
	err[0] = '\0';
	if (!strcmp(cmd, "down"))
		r = be->down ? be->down(be->ctx, err, sizeof(err)) : -ENOTSUP;
	else
		r = be->logout ? be->logout(be->ctx, err, sizeof(err)) : -ENOTSUP;
	if (r < 0)
		reply = localapi_reply_error(err[0] ? err : strerror(-r));
	else
		reply = localapi_reply_ok();
out:
	json_decref(req);
	if (conn_queue(c, reply) < 0)
		return false;
	return true;
}

/* Runs complete lines while nothing is pending. -1 close, 0 need bytes, 1 paused. */
static int conn_process(struct conn *c)
{
	while (!c->req && c->out_off == c->out_len && !c->close_after_write) {
		char *nl = memchr(c->in, '\n', c->in_len);
		size_t line_len;

		if (!nl) {
			if (c->in_len == sizeof(c->in)) {
				conn_queue(c, localapi_reply_error("request line too long"));
				c->close_after_write = true;
				c->in_len = 0;
				return 1;
			}
			return 0;
		}
		line_len = (size_t)(nl - c->in);
		*nl = '\0';
		if (line_len && !conn_run(c, c->in, line_len))
			return -1;
		explicit_bzero(c->in, line_len + 1);
		memmove(c->in, nl + 1, c->in_len - line_len - 1);
		c->in_len -= line_len + 1;
	}
	return 1;
}

static void conn_update_events(struct conn *c)
{
	uint32_t ev = 0;

	if (c->out_off < c->out_len)
		ev |= EPOLLOUT;
	else if (!c->req && !c->close_after_write)
		ev |= EPOLLIN;
	/* Nothing to wait for but the backend: still notice the client hanging up. */
	loop_fd_mod(c->srv->loop, &c->lfd, ev ? ev : EPOLLRDHUP);
}

/* false if the connection was closed. */
static bool conn_pump(struct conn *c)
{
	for (;;) {
		int r = conn_flush(c);

		if (r < 0)
			goto close;
		if (r > 0)
			break;
		if (c->close_after_write)
			goto close;
		r = conn_process(c);
		if (r < 0)
			goto close;
		if (c->out_off == c->out_len)
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
	ssize_t r;

	if (events & EPOLLOUT) {
		conn_pump(c);
		return;
	}
	if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && (c->req || c->close_after_write)) {
		conn_close(c);
		return;
	}
	if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
		return;
	for (;;) {
		if (c->req || c->out_off < c->out_len || c->in_len == sizeof(c->in))
			break;
		r = recv(c->lfd.fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			conn_close(c);
			return;
		}
		if (r == 0) {
			/* Half-close: lines already complete are answered, then we close. */
			if (conn_process(c) < 0) {
				conn_close(c);
				return;
			}
			if (c->req) {
				/* An up in progress: the client can still read its answer. */
				break;
			}
			c->close_after_write = true;
			conn_pump(c);
			return;
		}
		c->in_len += (size_t)r;
		c->last_ns = loop_now_ns(c->srv->loop);
		if (!conn_pump(c))
			return;
	}
	conn_pump(c);
}

static void accept_event(struct loop_fd *h, uint32_t events)
{
	struct localapi_server *srv = container_of(h, struct localapi_server, listen);
	(void)events;

	for (;;) {
		struct ucred cred;
		socklen_t clen = sizeof(cred);
		struct conn *c;
		int fd;

		fd = accept4(srv->listen.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_ratelimited(LOG_LEVEL_WARN, "localapi: accept: %s",
						strerror(errno));
			return;
		}
		if (srv->n_conns >= LOCALAPI_CONNS_MAX) {
			log_ratelimited(LOG_LEVEL_WARN, "localapi: too many connections");
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
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
			c->uid = cred.uid;
			c->uid_known = true;
		}
		if (loop_fd_add(srv->loop, &c->lfd, EPOLLIN | EPOLLRDHUP) < 0) {
			close(fd);
			free(c);
			continue;
		}
		srv->conns[srv->n_conns++] = c;
		if (!srv->sweep.armed)
			loop_timer_arm(srv->loop, &srv->sweep, c->last_ns + SWEEP_INTERVAL_NS);
	}
}

static void sweep_fire(struct loop_timer *t)
{
	struct localapi_server *srv = container_of(t, struct localapi_server, sweep);
	uint64_t now = loop_now_ns(srv->loop);
	unsigned i = 0;

	while (i < srv->n_conns) {
		struct conn *c = srv->conns[i];

		if (!c->req && now - c->last_ns > LOCALAPI_IDLE_TIMEOUT_NS) {
			conn_close(c);
			continue;
		}
		i++;
	}
	if (srv->n_conns)
		loop_timer_arm(srv->loop, &srv->sweep, now + SWEEP_INTERVAL_NS);
}

void localapi_req_progress(struct localapi_req *req, json_t *msg)
{
	struct conn *c = req->conn;

	if (!c) {
		json_decref(msg);
		return;
	}
	if (conn_queue(c, msg) < 0) {
		conn_close(c);
		return;
	}
	conn_pump(c);
}

void localapi_req_finish(struct localapi_req *req, json_t *msg)
{
	struct conn *c = req->conn;

	req_unlink(req);
	free(req);
	if (!c) {
		json_decref(msg);
		return;
	}
	c->req = NULL;
	if (conn_queue(c, msg) < 0) {
		conn_close(c);
		return;
	}
	conn_pump(c);
}

bool localapi_req_gone(const struct localapi_req *req)
{
	return !req->conn;
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

int localapi_server_new(struct loop *loop, const char *path, const struct localapi_backend *be,
			struct localapi_server **ret)
{
	struct localapi_server *srv = NULL;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = -1, r;

	if (!path || strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	r = mkdir_parent(path);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
		r = -EADDRINUSE;
		goto fail;
	}
	/* A socket file nobody listens on was left by a crash. */
	if (errno == ECONNREFUSED && unlink(path) < 0 && errno != ENOENT) {
		r = -errno;
		goto fail;
	}
	close(fd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(path, 0666) < 0 || listen(fd, 64) < 0) {
		r = -errno;
		unlink(path);
		goto fail;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv) {
		r = -ENOMEM;
		unlink(path);
		goto fail;
	}
	srv->loop = loop;
	srv->be = *be;
	strcpy(srv->path, path);
	srv->listen.fd = fd;
	srv->listen.cb = accept_event;
	srv->sweep.cb = sweep_fire;
	srv->sweep.deadline_ns = TIME_NEVER;
	r = loop_fd_add(loop, &srv->listen, EPOLLIN);
	if (r < 0) {
		unlink(path);
		free(srv);
		goto fail;
	}
	*ret = srv;
	return 0;
fail:
	close(fd);
	return r;
}

void localapi_server_free(struct localapi_server *srv)
{
	if (!srv)
		return;
	while (srv->reqs) {
		struct localapi_req *req = srv->reqs;

		srv->reqs = req->next;
		if (req->conn)
			req->conn->req = NULL;
		if (srv->be.up_cancel)
			srv->be.up_cancel(srv->be.ctx, req);
		free(req);
	}
	while (srv->n_conns)
		conn_close(srv->conns[0]);
	loop_timer_disarm(srv->loop, &srv->sweep);
	loop_fd_del(srv->loop, &srv->listen);
	close(srv->listen.fd);
	unlink(srv->path);
	free(srv);
}

/* Status. */

static json_t *prefix_addr_json(const struct netmap_prefix *p)
{
	char buf[INET6_ADDRSTRLEN];

	if (!inet_ntop(p->family, p->addr, buf, sizeof(buf)))
		return NULL;
	return json_string(buf);
}

static const struct wg_peer_info *info_peer(const struct wg_device_info *info,
					    const uint8_t key[NETMAP_KEY_LEN])
{
	unsigned i;

	for (i = 0; info && i < info->n_peers; i++)
		if (!memcmp(info->peers[i].public_key, key, NETMAP_KEY_LEN))
			return &info->peers[i];
	return NULL;
}

static json_t *node_json(const struct netmap_node *n, const struct wg_device_info *info, bool self)
{
	const struct wg_peer_info *pi = self ? NULL : info_peer(info, n->node_key);
	char key[KEY_BASE64_LEN + 1], ep[ENDPOINT_STR_MAX];
	json_t *o, *ips, *tags, *eps;
	unsigned i;

	key_to_base64(key, n->node_key);
	o = json_pack("{s:I, s:s, s:s, s:b, s:s, s:s, s:I, s:I}", "id", (json_int_t)n->id,
		      "hostname", n->name, "node_key", key, "online", self ? 1 : n->online, "os",
		      n->os, "user", n->user, "last_seen", (json_int_t)n->last_seen, "key_expiry",
		      (json_int_t)n->key_expiry);
	ips = json_array();
	tags = json_array();
	eps = json_array();
	if (!o || !ips || !tags || !eps)
		goto fail;
	json_object_set_new(o, "ips", ips);
	json_object_set_new(o, "tags", tags);
	json_object_set_new(o, "endpoints", eps);
	for (i = 0; i < n->n_addresses && i < NETMAP_MAX_ADDRESSES; i++) {
		json_t *a = prefix_addr_json(&n->addresses[i]);

		if (a)
			json_array_append_new(ips, a);
	}
	for (i = 0; i < n->n_tags && i < NETMAP_MAX_TAGS; i++)
		json_array_append_new(tags, json_string(n->tags[i]));
	for (i = 0; i < n->n_endpoints && i < NETMAP_MAX_ENDPOINTS; i++)
		json_array_append_new(eps, json_string(endpoint_format(&n->endpoints[i], ep,
								       sizeof(ep))));
	if (self)
		return o;
	/* Only direct paths exist so far; "relay" arrives with the relay client. */
	json_object_set_new(o, "path", json_string("direct"));
	if (pi && endpoint_is_set(&pi->endpoint))
		json_object_set_new(o, "endpoint",
				    json_string(endpoint_format(&pi->endpoint, ep, sizeof(ep))));
	else if (n->n_endpoints)
		json_object_set_new(o, "endpoint", json_string(endpoint_format(&n->endpoints[0],
									       ep, sizeof(ep))));
	else
		json_object_set_new(o, "endpoint", json_null());
	json_object_set_new(o, "rx_bytes", json_integer(pi ? (json_int_t)pi->rx_bytes : 0));
	json_object_set_new(o, "tx_bytes", json_integer(pi ? (json_int_t)pi->tx_bytes : 0));
	json_object_set_new(o, "last_handshake",
			    json_integer(pi ? (json_int_t)(pi->last_handshake_wall_ns /
							    1000000000ULL)
					    : 0));
	return o;
fail:
	json_decref(o);
	json_decref(ips);
	json_decref(tags);
	json_decref(eps);
	return NULL;
}

int localapi_status_build(const char *backend_state, const struct netmap *nm,
			  const struct wg_device_info *info, json_t **ret)
{
	json_t *o, *peers, *n;
	unsigned i;

	o = json_pack("{s:s, s:s}", "backend_state", backend_state ? backend_state : "stopped",
		      "tailnet", nm ? nm->tailnet : "");
	peers = json_array();
	if (!o || !peers)
		goto fail;
	json_object_set_new(o, "peers", peers);
	if (!nm) {
		json_object_set_new(o, "self", json_null());
		*ret = o;
		return 0;
	}
	n = node_json(&nm->self, info, true);
	if (!n)
		goto fail_o;
	json_object_set_new(o, "self", n);
	for (i = 0; i < nm->n_peers; i++) {
		n = node_json(&nm->peers[i], info, false);
		if (!n || json_array_append_new(peers, n) < 0)
			goto fail_o;
	}
	*ret = o;
	return 0;
fail:
	json_decref(peers);
fail_o:
	json_decref(o);
	return -ENOMEM;
}
