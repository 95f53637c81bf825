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
 * LOCALAPI_CONNS_MAX, or beyond a non-root uid's share (localapi.h), are closed
 * at once; idle ones (no pending up) after LOCALAPI_IDLE_TIMEOUT_NS, and any
 * whose request is not answered LOCALAPI_REQUEST_TIMEOUT_NS after it began.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/time.h"
#include "base/version.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "base/version.h"
#include "node/localapi.h"
#include "node/usock.h"

#define SWEEP_INTERVAL_NS (1ULL * 1000000000ULL)

struct conn;

struct localapi_req {
	struct localapi_server *srv;
	struct conn *conn; /* NULL once the client is gone */
	struct localapi_req *next;
};

/* Per connection protocol state, kept in the usock connection (usock_conn_priv). */
struct conn {
	struct usock_conn *uc;
	struct localapi_server *srv;
	uid_t uid;
	bool uid_known;
	struct localapi_req *req;
};

struct localapi_server {
	struct usock_server *us;
	struct localapi_backend be;
	uid_t write_uid; /* 0; tests change it to check the permission path */
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

/* Queues msg (stolen) as one line. 0, or -EMSGSIZE / -ENOMEM (connection must close). */
static int conn_queue(struct conn *c, json_t *msg)
{
	char *text;
	size_t len;
	int ret;

	if (!msg)
		return -ENOMEM;
	text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!text)
		return -ENOMEM;
	len = strlen(text);
	text[len] = '\n'; /* replaces the NUL: the line goes out in one piece or not at all */
	ret = usock_conn_send(c->uc, text, len + 1);
	free(text);
	return ret;
}

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

/* A request answered later (up, ping): the connection reads nothing until it is. */
static struct localapi_req *req_start(struct conn *c)
{
	struct localapi_req *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->srv = c->srv;
	r->conn = c;
	r->next = c->srv->reqs;
	c->srv->reqs = r;
	c->req = r;
	usock_conn_hold(c->uc, true);
	return r;
}

static json_t *cmd_ping(struct conn *c, json_t *req, bool *started)
{
	struct localapi_backend *be = &c->srv->be;
	struct localapi_req *r;
	json_t *v;
	bool bad = false;

	v = field_str(req, "peer", &bad);
	if (bad || !v || !*json_string_value(v))
		return localapi_reply_error("ping: peer (a hostname or tailnet address) is required");
	if (!be->ping)
		return localapi_reply_error("ping: not supported by this daemon");
	r = req_start(c);
	if (!r)
		return NULL;
	*started = true;
	be->ping(be->ctx, json_string_value(v), r); /* may finish at once */
	return NULL;
}

static json_t *cmd_up(struct conn *c, json_t *req, bool *started)
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
	if (opts.login_server && !*opts.login_server)
		opts.login_server = NULL;
	v = json_object_get(req, "force_reauth");
	if (v && !json_is_boolean(v))
		return localapi_reply_error("up: force_reauth must be true or false");
	opts.force_reauth = json_is_true(v);
	if (!be->up)
		return localapi_reply_error("up: not supported by this daemon");
	r = req_start(c);
	if (!r)
		return NULL;
	*started = true;
	be->up(be->ctx, &opts, r); /* may finish at once */
	return NULL;
}

static json_t *cmd_set(struct conn *c, json_t *req)
{
	struct localapi_backend *be = &c->srv->be;
	struct localapi_set_opts opts = {0};
	char err[LOCALAPI_ERROR_MAX] = "";
	bool bad = false;
	json_t *v;
	int r;

	v = field_str(req, "hostname", &bad);
	if (bad || (v && !*json_string_value(v)))
		return localapi_reply_error("set: hostname must be a non-empty string");
	opts.hostname = v ? json_string_value(v) : NULL;
	if (!opts.hostname)
		return localapi_reply_error("set: nothing to set (hostname)");
	r = be->set ? be->set(be->ctx, &opts, err, sizeof(err)) : -ENOTSUP;
	if (r < 0)
		return localapi_reply_error(err[0] ? err : strerror(-r));
	return localapi_reply_ok();
}

/* cert_request -> {"ok":true,"csr":PEM}; cert_install {"cert":PEM} -> ok (root only). */
static json_t *cmd_cert(struct conn *c, const char *cmd, json_t *req)
{
	struct localapi_backend *be = &c->srv->be;
	json_t *pem = json_object_get(req, "cert"), *reply;
	char err[LOCALAPI_ERROR_MAX] = "", *csr = NULL;
	int r;

	if (!strcmp(cmd, "cert_request")) {
		r = be->cert_request ? be->cert_request(be->ctx, &csr, err, sizeof(err)) : -ENOTSUP;
		if (r < 0)
			return localapi_reply_error(err[0] ? err : strerror(-r));
		reply = localapi_reply_ok();
		json_object_set_new(reply, "csr", json_string(csr));
		free(csr);
		return reply;
	}
	if (!json_is_string(pem))
		return localapi_reply_error("cert_install: \"cert\" must be a string (PEM)");
	r = be->cert_install ? be->cert_install(be->ctx, json_string_value(pem),
						json_string_length(pem), err, sizeof(err))
			     : -ENOTSUP;
	if (r < 0)
		return localapi_reply_error(err[0] ? err : strerror(-r));
	return localapi_reply_ok();
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
	if (!strcmp(cmd, "ping")) {
		bool started = false;

		reply = cmd_ping(c, req, &started);
		if (!reply && started) {
			json_decref(req);
			return true; /* the answer comes through the req */
		}
		goto out;
	}
	if (strcmp(cmd, "up") && strcmp(cmd, "down") && strcmp(cmd, "logout") &&
	    strcmp(cmd, "set") && strcmp(cmd, "cert_request") && strcmp(cmd, "cert_install")) {
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
		bool started = false;

		reply = cmd_up(c, req, &started);
		if (!reply && started) {
			json_decref(req);
			return true; /* the answer comes through the req */
		}
		goto out;
	}
	if (!strcmp(cmd, "set")) {
		reply = cmd_set(c, req);
		goto out;
	}
	if (!strcmp(cmd, "cert_request") || !strcmp(cmd, "cert_install")) {
		reply = cmd_cert(c, cmd, req);
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

/* One request line from the front of the input: its length with the newline, 0, or -1. */
static int conn_data(void *ctx, struct usock_conn *uc, char *in, size_t in_len)
{
	struct conn *c = usock_conn_priv(uc);
	char *nl = memchr(in, '\n', in_len);
	size_t line_len;

	(void)ctx;
	if (!nl)
		return 0;
	line_len = (size_t)(nl - in);
	*nl = '\0';
	if (line_len && !conn_run(c, in, line_len))
		return -1;
	return (int)line_len + 1;
}

static void conn_overflow(void *ctx, struct usock_conn *uc)
{
	(void)ctx;
	conn_queue(usock_conn_priv(uc), localapi_reply_error("request line too long"));
}

static int conn_open(void *ctx, struct usock_conn *uc)
{
	struct conn *c = usock_conn_priv(uc);

	c->uc = uc;
	c->srv = ctx;
	c->uid_known = usock_conn_uid(uc, &c->uid);
	return 0;
}

static void conn_gone(void *ctx, struct usock_conn *uc)
{
	struct conn *c = usock_conn_priv(uc);

	(void)ctx;
	if (c->req)
		c->req->conn = NULL;
}

void localapi_req_progress(struct localapi_req *req, json_t *msg)
{
	struct conn *c = req->conn;

	if (!c) {
		json_decref(msg);
		return;
	}
	if (conn_queue(c, msg) < 0) {
		usock_conn_close(c->uc);
		return;
	}
	usock_conn_kick(c->uc);
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
	usock_conn_hold(c->uc, false);
	if (conn_queue(c, msg) < 0) {
		usock_conn_close(c->uc);
		return;
	}
	usock_conn_kick(c->uc);
}

bool localapi_req_gone(const struct localapi_req *req)
{
	return !req->conn;
}

int localapi_server_new(struct loop *loop, const char *path, const struct localapi_backend *be,
			struct localapi_server **ret)
{
	const struct usock_limits lim = {
		.conns_max = LOCALAPI_CONNS_MAX,
		.conns_per_uid_max = LOCALAPI_CONNS_PER_UID,
		.conns_root_reserved = LOCALAPI_CONNS_ROOT,
		.in_max = LOCALAPI_REQUEST_MAX,
		.out_max = LOCALAPI_REPLY_MAX,
		.idle_timeout_ns = LOCALAPI_IDLE_TIMEOUT_NS,
		.request_timeout_ns = LOCALAPI_REQUEST_TIMEOUT_NS,
		.sweep_interval_ns = SWEEP_INTERVAL_NS,
		.mode = 0666, /* anyone may read status; writes are checked per request */
		.backlog = 64,
	};
	struct usock_ops ops = {
		.conn_priv_size = sizeof(struct conn),
		.on_open = conn_open,
		.on_data = conn_data,
		.on_overflow = conn_overflow,
		.on_close = conn_gone,
	};
	struct localapi_server *srv;
	int r;

	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->be = *be;
	ops.ctx = srv;
	r = usock_server_new(loop, path, "localapi", &lim, &ops, &srv->us);
	if (r < 0) {
		free(srv);
		return r;
	}
	*ret = srv;
	return 0;
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
	usock_server_free(srv->us);
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
	/* The daemon replaces path and endpoint with the path layer's view (daemon.c). */
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

	o = json_pack("{s:s, s:s, s:s}", "backend_state", backend_state ? backend_state : "stopped",
		      "tailnet", nm ? nm->tailnet : "", "version", trellis_version);
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
