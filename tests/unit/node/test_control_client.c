/* SPDX-License-Identifier: MIT */
/*
 * The control client against an in-process fake server built from the same
 * proto pieces as trellis-control (http, ctrlstream server side, ctrlmsg):
 * register with an auth key, a netmap applied to a real wg_device, a delta,
 * reconnect after the server drops the connection (without spending the auth
 * key again), interactive login, a rejected key, and a changed server key.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <zstd.h>

#include "base/base64.h"
#include "base/pkt.h"
#include "base/time.h"
#include "crypto/crypto.h"
#include "node/control_client.h"
#include "node/machinecert.h"
#include "node/netmap_apply.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/http.h"
#include "proto/mapz.h"
#include "wg/device.h"

/* --- fake server --- */

enum scenario {
	SC_STREAM,
	SC_INTERACTIVE,
	SC_REJECT,
	SC_ROTATE,
	SC_FOLLOW,
	SC_EXPIRE,
	SC_DELETE,
	SC_ZSTD,
	SC_MCERT,
};

struct fake_server {
	int lfd;
	uint16_t port;
	pthread_t thread;
	uint8_t priv[32], pub[32];
	enum scenario sc;
	pthread_mutex_t lock;
	unsigned sessions;     /* POST /control seen */
	char auth_keys[4][CTRL_AUTHKEY_MAX];
	unsigned registers;
	unsigned map_endpoints;
	struct endpoint map_first;  /* the map_request's first endpoint */
	unsigned endpoint_msgs;	    /* endpoints updates since */
	struct endpoint last_first; /* the first endpoint of the last one */
	/* SC_ROTATE: the key registered first, and each rotation's old and new key. */
	uint8_t reg_key[32];
	unsigned rotations;
	uint8_t rot_old[2][32], rot_new[2][32];
	unsigned rot_refused; /* SC_EXPIRE: rotations refused because the key expired */
	unsigned zstd_offers; /* map_requests with "compress":"zstd" */
};

struct srv_conn {
	int fd;
	struct ctrlstream *cs;
	uint8_t buf[4096];
	size_t off, len;
};

static int write_all(int fd, const void *data, size_t len)
{
	const uint8_t *p = data;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int srv_flush(struct srv_conn *sc)
{
	const uint8_t *d;
	size_t l;

	if (ctrlstream_output(sc->cs, &d, &l) < 0)
		return -1;
	if (l && write_all(sc->fd, d, l) < 0)
		return -1;
	ctrlstream_output_consume(sc->cs, l);
	return 0;
}

static int srv_recv(struct srv_conn *sc, struct ctrl_msg *m)
{
	for (;;) {
		const char *j;
		size_t l;
		ssize_t n;
		int r = ctrlstream_recv(sc->cs, &j, &l);

		if (r < 0)
			return -1;
		if (r == 1)
			return ctrl_msg_decode(j, l, m) < 0 ? -1 : 0;
		if (sc->off < sc->len) {
			n = ctrlstream_feed(sc->cs, sc->buf + sc->off, sc->len - sc->off);
			if (n < 0)
				return -1;
			sc->off += (size_t)n;
			if (srv_flush(sc) < 0)
				return -1;
			continue;
		}
		n = recv(sc->fd, sc->buf, sizeof(sc->buf), 0);
		if (n <= 0)
			return -1;
		sc->off = 0;
		sc->len = (size_t)n;
	}
}

static int srv_send(struct srv_conn *sc, const struct ctrl_msg *m)
{
	char *json;
	size_t len;

	if (ctrl_msg_encode(m, &json, &len) < 0)
		return -1;
	if (ctrlstream_send(sc->cs, json, len) < 0) {
		free(json);
		return -1;
	}
	free(json);
	return srv_flush(sc);
}

static void node_init(struct netmap_node *n, uint64_t id)
{
	memset(n, 0, sizeof(*n));
	n->id = id;
	snprintf(n->name, sizeof(n->name), "node-%u", (unsigned)id);
	memset(n->node_key, (int)id, sizeof(n->node_key));
	memset(n->machine_key, (int)id + 100, sizeof(n->machine_key));
	n->n_allowed_ips = 1;
	n->allowed_ips[0] = (struct netmap_prefix){AF_INET, 32, {100, 64, 0, (uint8_t)id}};
	n->n_addresses = 1;
	n->addresses[0] = n->allowed_ips[0];
	n->n_endpoints = 1;
	endpoint_parse(&n->endpoints[0], "198.51.100.1:41641");
	snprintf(n->os, sizeof(n->os), "linux");
}

/* The netmap the fake server sends: self is node 1, peers 2.. */
static struct netmap *netmap_mk(uint64_t seq, unsigned n_peers, int64_t self_expiry)
{
	struct netmap *nm = calloc(1, sizeof(*nm));
	unsigned i;

	nm->seq = seq;
	snprintf(nm->tailnet, sizeof(nm->tailnet), "default");
	node_init(&nm->self, 1);
	nm->self.key_expiry = self_expiry;
	nm->n_peers = n_peers;
	nm->peers = calloc(n_peers, sizeof(*nm->peers));
	for (i = 0; i < n_peers; i++)
		node_init(&nm->peers[i], 2 + i);
	return nm;
}

static int send_netmap(struct srv_conn *sc, uint64_t seq, unsigned n_peers, int64_t self_expiry)
{
	struct ctrl_msg m = {.type = CTRL_MSG_NETMAP};
	int r;

	m.netmap = netmap_mk(seq, n_peers, self_expiry);
	r = srv_send(sc, &m);
	ctrl_msg_clear(&m);
	return r;
}

/* SC_ZSTD: a netmap as one zstd frame, as trellis-control sends one to a node that offers it. */
static int send_netmap_zstd(struct srv_conn *sc, uint64_t seq, unsigned n_peers)
{
	struct ctrl_msg m = {.type = CTRL_MSG_NETMAP};
	char *json = NULL;
	uint8_t *z = NULL;
	size_t len, zlen;
	int r = -1;

	m.netmap = netmap_mk(seq, n_peers, 0);
	if (ctrl_msg_encode(&m, &json, &len) == 0 && (z = malloc(ZSTD_compressBound(len)))) {
		zlen = ZSTD_compress(z, ZSTD_compressBound(len), json, len, 3);
		if (!ZSTD_isError(zlen) && ctrlstream_send(sc->cs, z, zlen) == 0)
			r = srv_flush(sc);
	}
	free(z);
	free(json);
	ctrl_msg_clear(&m);
	return r;
}

/* SC_ZSTD: a hostile server's bomb, a few hundred bytes that inflate past any message. */
static int send_zstd_bomb(struct srv_conn *sc)
{
	size_t big = CTRL_MSG_MAX + 1, cap = ZSTD_compressBound(big), zlen;
	char *zeros = calloc(1, big);
	uint8_t *z = malloc(cap);
	int r = -1;

	if (zeros && z) {
		zlen = ZSTD_compress(z, cap, zeros, big, 1);
		if (!ZSTD_isError(zlen) && ctrlstream_send(sc->cs, z, zlen) == 0)
			r = srv_flush(sc);
	}
	free(zeros);
	free(z);
	return r;
}

/* A machine certificate of another machine (tests/fuzz/corpus/fuzz_certfetch/cert.b64). */
static const char foreign_cert[] =
    "MIIBlzCCAUmgAwIBAgIUIn3+saWQegxlavt2rt3B15nGRCMwBQYDK2VwMBExDzANBgNVBAMMBmxhcHRv"
    "cDAeFw0yNjEyMDEyMzU5MzVaFw0yNjEyMzEyMzU5MzVaMBExDzANBgNVBAMMBmxhcHRvcDAqMAUGAytl"
    "cAMhAGGDzMcs17ce2LIRTrstXblOAWiJWgLYnqgy1sQxYQMto4GyMIGvMB0GA1UdDgQWBBSw1IGG9SUO"
    "k/hdhGKEx3qBkjmKSTAfBgNVHSMEGDAWgBSw1IGG9SUOk/hdhGKEx3qBkjmKSTBfBgNVHREEWDBWhlR1"
    "cm46dHJlbGxpczptYWNoaW5lOmY4YzczOTBjOWVhODJlNDQ1MzA0NGEyM2NmZWEyMjFkY2VjN2U5Mjc3"
    "YjVhYzliMzVmZmVhOTNhODAxODNmYjMwDAYDVR0TAQH/BAIwADAFBgMrZXADQQBjBr4byjB45pUac08T"
    "kipCQOFCppdmVjUPXstcPidxpS3tcSN0tY9bKgVp+YV78TZ2yR5ITFT8HCCiafpFDA0P";

static int send_delta_add(struct srv_conn *sc, uint64_t seq, uint64_t id)
{
	struct ctrl_msg m = {.type = CTRL_MSG_DELTA};
	struct netmap_delta *d = calloc(1, sizeof(*d));
	int r;

	d->seq = seq;
	d->n_added = 1;
	d->added = calloc(1, sizeof(*d->added));
	node_init(&d->added[0], id);
	m.delta = d;
	r = srv_send(sc, &m);
	ctrl_msg_clear(&m);
	return r;
}

/* Refuses the first rotation, accepts the second (and the key then never expires). */
static void srv_rotate(struct fake_server *fs, struct srv_conn *sc, const struct ctrl_register *reg,
		       int64_t expiry)
{
	struct ctrl_msg out = {.type = CTRL_MSG_REGISTER_RESPONSE};
	unsigned i;

	pthread_mutex_lock(&fs->lock);
	i = fs->rotations++;
	if (i < 2) {
		memcpy(fs->rot_old[i], reg->old_node_key, 32);
		memcpy(fs->rot_new[i], reg->node_key, 32);
	}
	pthread_mutex_unlock(&fs->lock);
	if (i == 0) {
		out.reg_resp.status = CTRL_REGISTER_ERROR;
		snprintf(out.reg_resp.error, sizeof(out.reg_resp.error), "try again");
	} else {
		out.reg_resp.status = CTRL_REGISTER_OK;
		out.reg_resp.has_node = true;
		node_init(&out.reg_resp.node, 1);
		memcpy(out.reg_resp.node.node_key, reg->node_key, 32);
		out.reg_resp.node.key_expiry = i == 1 ? 0 : expiry;
	}
	srv_send(sc, &out);
}

/* `trellis-control nodes expire`: the node's own record now carries an expiry in the past. */
static int send_self_expired(struct srv_conn *sc, uint64_t seq)
{
	struct ctrl_msg m = {.type = CTRL_MSG_DELTA};
	struct netmap_delta *d = calloc(1, sizeof(*d));
	int r;

	usleep(100 * 1000);
	d->seq = seq;
	d->has_self = true;
	node_init(&d->self, 1);
	d->self.key_expiry = time(NULL) - 1;
	m.delta = d;
	r = srv_send(sc, &m);
	ctrl_msg_clear(&m);
	return r;
}

/* As trellis-control answers a rotation of an expired node (register.c). */
static void srv_refuse_expired(struct fake_server *fs, struct srv_conn *sc)
{
	struct ctrl_msg out = {.type = CTRL_MSG_REGISTER_RESPONSE};

	pthread_mutex_lock(&fs->lock);
	fs->rot_refused++;
	pthread_mutex_unlock(&fs->lock);
	out.reg_resp.status = CTRL_REGISTER_ERROR;
	snprintf(out.reg_resp.error, sizeof(out.reg_resp.error),
		 "key rotation refused: node key expired (re-authenticate)");
	srv_send(sc, &out);
}

static void srv_session(struct fake_server *fs, struct srv_conn *sc, unsigned session_no)
{
	struct ctrl_msg m, out;

	/* register */
	if (srv_recv(sc, &m) < 0 || m.type != CTRL_MSG_REGISTER)
		return;
	pthread_mutex_lock(&fs->lock);
	if (fs->registers < 4)
		snprintf(fs->auth_keys[fs->registers], CTRL_AUTHKEY_MAX, "%s", m.reg.auth_key);
	memcpy(fs->reg_key, m.reg.node_key, 32);
	fs->registers++;
	pthread_mutex_unlock(&fs->lock);
	memset(&out, 0, sizeof(out));
	out.type = CTRL_MSG_REGISTER_RESPONSE;
	if (fs->sc == SC_REJECT) {
		out.reg_resp.status = CTRL_REGISTER_ERROR;
		snprintf(out.reg_resp.error, sizeof(out.reg_resp.error), "invalid auth key");
		srv_send(sc, &out);
		return;
	}
	if (fs->sc == SC_INTERACTIVE) {
		struct ctrl_msg wait = {.type = CTRL_MSG_REGISTER_RESPONSE};

		wait.reg_resp.status = CTRL_REGISTER_NEEDS_AUTH;
		snprintf(wait.reg_resp.auth_url, sizeof(wait.reg_resp.auth_url),
			 "http://192.0.2.1/register/abc");
		srv_send(sc, &wait);
		usleep(200 * 1000);
	}
	out.reg_resp.status = CTRL_REGISTER_OK;
	out.reg_resp.has_node = true;
	node_init(&out.reg_resp.node, 1);
	/* Expires soon: the client rotates (a quarter of the lifetime before expiry). */
	if (fs->sc == SC_ROTATE)
		out.reg_resp.node.key_expiry = time(NULL) + 4;
	if (srv_send(sc, &out) < 0)
		return;
	/* map_request */
	if (srv_recv(sc, &m) < 0 || m.type != CTRL_MSG_MAP_REQUEST || !m.map_req.stream)
		return;
	pthread_mutex_lock(&fs->lock);
	fs->map_endpoints = m.map_req.n_endpoints;
	if (m.map_req.n_endpoints)
		fs->map_first = m.map_req.endpoints[0];
	fs->zstd_offers += m.map_req.zstd;
	pthread_mutex_unlock(&fs->lock);
	if (session_no == 0 && fs->sc == SC_ZSTD) {
		send_netmap_zstd(sc, 10, 3);
		usleep(100 * 1000);
		send_zstd_bomb(sc);
		/* the client hangs up on it */
		while (srv_recv(sc, &m) == 0)
			ctrl_msg_clear(&m);
		return;
	}
	if (session_no == 0 && fs->sc == SC_STREAM) {
		send_netmap(sc, 10, 1, 0);
		usleep(100 * 1000);
		send_delta_add(sc, 11, 3);
		usleep(200 * 1000);
		return; /* drop the connection */
	}
	send_netmap(sc, 20, 3, out.reg_resp.node.key_expiry);
	if (fs->sc == SC_MCERT) {
		/* A server pushes a certificate that is not this machine's: refused, counted. */
		struct ctrl_msg d = {.type = CTRL_MSG_DELTA};

		d.delta = calloc(1, sizeof(*d.delta));
		d.delta->seq = 21;
		d.delta->machine_cert = strdup(foreign_cert);
		srv_send(sc, &d);
		ctrl_msg_clear(&d);
	}
	if (fs->sc == SC_EXPIRE)
		send_self_expired(sc, 21);
	if (fs->sc == SC_DELETE) {
		/* What trellis-control says to the stream of a node the admin deleted. */
		struct ctrl_msg e = {.type = CTRL_MSG_ERROR};

		usleep(100 * 1000);
		snprintf(e.error, sizeof(e.error), "node deleted");
		srv_send(sc, &e);
		return;
	}
	/* Follow until the client goes away. */
	while (srv_recv(sc, &m) == 0) {
		if (fs->sc == SC_ROTATE && m.type == CTRL_MSG_REGISTER && m.reg.has_old_node_key)
			srv_rotate(fs, sc, &m.reg, out.reg_resp.node.key_expiry);
		if (fs->sc == SC_EXPIRE && m.type == CTRL_MSG_REGISTER && m.reg.has_old_node_key)
			srv_refuse_expired(fs, sc);
		if (m.type == CTRL_MSG_ENDPOINTS && m.endpoints.n_endpoints) {
			pthread_mutex_lock(&fs->lock);
			fs->endpoint_msgs++;
			fs->last_first = m.endpoints.endpoints[0];
			pthread_mutex_unlock(&fs->lock);
		}
		ctrl_msg_clear(&m);
	}
}

static void *server_main(void *arg)
{
	struct fake_server *fs = arg;
	unsigned session_no = 0;

	for (;;) {
		struct srv_conn sc = {.fd = -1};
		struct http_request req;
		char head[HTTP_HEAD_MAX], resp[512], body[128];
		size_t have = 0;
		int r;

		sc.fd = accept(fs->lfd, NULL, NULL);
		if (sc.fd < 0)
			break;
		do {
			ssize_t n = recv(sc.fd, head + have, sizeof(head) - have, 0);

			if (n <= 0) {
				r = -1;
				break;
			}
			have += (size_t)n;
			r = http_request_parse(&req, head, have);
		} while (r == -EAGAIN);
		if (r < 0) {
			close(sc.fd);
			continue;
		}
		if (http_request_is(&req, "GET", "/key")) {
			char b64[KEY_BASE64_LEN + 1];
			int bl;

			key_to_base64(b64, fs->pub);
			bl = snprintf(body, sizeof(body), "{\"key\":\"%s\",\"version\":1}", b64);
			r = http_response_build(resp, sizeof(resp), 200,
						"Content-Type: application/json\r\n", (uint64_t)bl);
			write_all(sc.fd, resp, (size_t)r);
			write_all(sc.fd, body, (size_t)bl);
		} else if (http_request_is(&req, "POST", "/control")) {
			r = http_response_build(resp, sizeof(resp), 101,
						"Connection: Upgrade\r\nUpgrade: " HTTP_UPGRADE_TOKEN
						"\r\n",
						0);
			write_all(sc.fd, resp, (size_t)r);
			sc.cs = ctrlstream_server_new(fs->priv);
			memcpy(sc.buf, head + req.head_len, have - req.head_len);
			sc.len = have - req.head_len;
			pthread_mutex_lock(&fs->lock);
			fs->sessions++;
			pthread_mutex_unlock(&fs->lock);
			srv_session(fs, &sc, session_no++);
			ctrlstream_free(sc.cs);
		}
		close(sc.fd);
	}
	return NULL;
}

static void server_start(struct fake_server *fs, enum scenario sc)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof(sin);

	memset(fs, 0, sizeof(*fs));
	pthread_mutex_init(&fs->lock, NULL);
	fs->sc = sc;
	assert_int_equal(x25519_private_generate(fs->priv), 0);
	assert_int_equal(x25519_public_from_private(fs->pub, fs->priv), 0);
	fs->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fs->lfd >= 0);
	assert_int_equal(bind(fs->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fs->lfd, 8), 0);
	assert_int_equal(getsockname(fs->lfd, (struct sockaddr *)&sin, &sl), 0);
	fs->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&fs->thread, NULL, server_main, fs), 0);
}

static void server_stop(struct fake_server *fs)
{
	shutdown(fs->lfd, SHUT_RDWR);
	pthread_join(fs->thread, NULL);
	close(fs->lfd);
	pthread_mutex_destroy(&fs->lock);
}

/* --- the node side: a real wg_device behind netmap_apply --- */

struct node {
	struct pkt_pool *pool;
	struct wg_device *dev;
	struct netmap_apply *na;
	struct netmap *nm;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum control_client_state state;
	char error[512], url[256];
	unsigned netmaps, deltas, needs_login_seen;
	char dir[64];
	/* Rotation callbacks (the daemon's state + netmap_apply_set_private_key). */
	bool rotate;
	uint64_t backoff_min_ns;
	unsigned rot_begins, rot_ok, rot_fail;
	uint8_t rot_key[32];
	/* A port mapping's endpoint (the daemon's portmap_endpoints), if has_extra. */
	bool has_extra;
	struct endpoint extra;
};

static void noop_send(void *ctx, struct pkt **p, unsigned n)
{
	unsigned i;

	(void)ctx;
	for (i = 0; i < n; i++)
		wg_pkt_release(p[i]);
	pkt_free(p, n);
}

static void cb_state(void *ctx, enum control_client_state s, const char *url, const char *err)
{
	struct node *n = ctx;

	pthread_mutex_lock(&n->lock);
	n->state = s;
	if (url) {
		snprintf(n->url, sizeof(n->url), "%s", url);
		n->needs_login_seen++;
	}
	if (err)
		snprintf(n->error, sizeof(n->error), "%s", err);
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

static int cb_netmap(void *ctx, struct netmap *nm)
{
	struct node *n = ctx;
	int r;

	pthread_mutex_lock(&n->lock);
	netmap_free(n->nm);
	n->nm = nm;
	r = netmap_apply_netmap(n->na, nm, time_now_ns());
	n->netmaps++;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
	return r;
}

static int cb_delta(void *ctx, struct netmap_delta *d)
{
	struct node *n = ctx;
	int r;

	pthread_mutex_lock(&n->lock);
	r = netmap_apply_delta(n->nm, d);
	if (r == 0)
		r = netmap_apply_netmap(n->na, n->nm, time_now_ns());
	n->deltas++;
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
	netmap_delta_free(d);
	return r;
}

static int cb_rotate_begin(void *ctx, uint8_t ret_key[32])
{
	struct node *n = ctx;
	int r;

	pthread_mutex_lock(&n->lock);
	r = x25519_private_generate(n->rot_key);
	if (r == 0)
		memcpy(ret_key, n->rot_key, 32);
	n->rot_begins++;
	pthread_mutex_unlock(&n->lock);
	return r;
}

static void cb_rotate_end(void *ctx, bool ok)
{
	struct node *n = ctx;

	pthread_mutex_lock(&n->lock);
	if (ok) {
		n->rot_ok++;
		assert_int_equal(netmap_apply_set_private_key(n->na, n->rot_key, time_now_ns()), 0);
	} else {
		n->rot_fail++;
	}
	pthread_cond_broadcast(&n->cond);
	pthread_mutex_unlock(&n->lock);
}

static unsigned cb_extra(void *ctx, struct endpoint *ret, unsigned cap)
{
	struct node *n = ctx;
	unsigned k = 0;

	pthread_mutex_lock(&n->lock);
	if (n->has_extra && cap)
		ret[k++] = n->extra;
	pthread_mutex_unlock(&n->lock);
	return k;
}

static uint16_t cb_port(void *ctx)
{
	(void)ctx;
	return 41641;
}

static void node_setup(struct node *n)
{
	static const struct wg_device_ops ops = {.udp_send = noop_send, .tun_write = noop_send};
	uint8_t priv[32];

	memset(n, 0, sizeof(*n));
	pthread_mutex_init(&n->lock, NULL);
	pthread_cond_init(&n->cond, NULL);
	n->pool = pkt_pool_new(64);
	n->dev = wg_device_new(&ops, n->pool);
	assert_non_null(n->dev);
	assert_int_equal(netmap_apply_new(n->dev, NULL, "tl0", 0, NULL, &n->na), 0);
	assert_int_equal(x25519_private_generate(priv), 0);
	assert_int_equal(netmap_apply_set_private_key(n->na, priv, 1), 0);
	snprintf(n->dir, sizeof(n->dir), "/tmp/test_cc.XXXXXX");
	assert_non_null(mkdtemp(n->dir));
}

static void node_teardown(struct node *n)
{
	char cmd[128];

	netmap_apply_free(n->na);
	wg_device_free(n->dev);
	pkt_pool_free(n->pool);
	netmap_free(n->nm);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", n->dir);
	assert_int_equal(system(cmd), 0);
}

static struct control_client *client_start(struct node *n, uint16_t port, const char *auth_key)
{
	struct control_client_cfg cfg = {0};
	struct control_client *cc = NULL;
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%u", port);
	cfg.login_server = url;
	cfg.auth_key = auth_key;
	cfg.hostname = "test-node";
	cfg.state_dir = n->dir;
	assert_int_equal(x25519_private_generate(cfg.machine_key), 0);
	assert_int_equal(x25519_private_generate(cfg.node_key), 0);
	cfg.ifname = "tl0";
	cfg.port = cb_port;
	cfg.port_ctx = n;
	cfg.endpoints_extra = cb_extra;
	cfg.ops = (struct control_client_ops){
	    .ctx = n, .state_changed = cb_state, .netmap = cb_netmap, .delta = cb_delta};
	cfg.backoff_min_ns = n->backoff_min_ns;
	if (n->rotate) {
		cfg.ops.rotate_begin = cb_rotate_begin;
		cfg.ops.rotate_end = cb_rotate_end;
	}
	assert_int_equal(control_client_start(&cfg, &cc), 0);
	return cc;
}

/* Waits (up to 10 s) until pred holds, under the node's lock. */
#define WAIT_FOR(n, pred)                                                                          \
	do {                                                                                       \
		struct timespec ts;                                                                \
		int _r = 0;                                                                        \
		clock_gettime(CLOCK_REALTIME, &ts);                                                \
		ts.tv_sec += 10;                                                                   \
		pthread_mutex_lock(&(n)->lock);                                                    \
		while (!(pred) && _r == 0)                                                         \
			_r = pthread_cond_timedwait(&(n)->cond, &(n)->lock, &ts);                  \
		pthread_mutex_unlock(&(n)->lock);                                                  \
		assert_true(pred);                                                                 \
	} while (0)

static unsigned device_peers(struct node *n)
{
	struct wg_device_info *info = NULL;
	unsigned k;

	assert_int_equal(wg_device_info_get(n->dev, &info), 0);
	k = info->n_peers;
	wg_device_info_free(info);
	return k;
}

static void test_stream_delta_reconnect(void **state)
{
	struct fake_server fs;
	struct control_client *cc;
	struct node n;
	char path[128];
	struct stat sb;

	(void)state;
	server_start(&fs, SC_STREAM);
	node_setup(&n);
	cc = client_start(&n, fs.port, "tskey-good");

	WAIT_FOR(&n, n.netmaps >= 1);
	WAIT_FOR(&n, n.deltas >= 1);
	assert_int_equal(device_peers(&n), 2);
	assert_int_equal(netmap_apply_peer_count(n.na), 2);
	/* The server drops us; the client comes back by itself with a full map. */
	WAIT_FOR(&n, n.netmaps >= 2);
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_RUNNING);
	assert_int_equal(device_peers(&n), 3);
	pthread_mutex_lock(&fs.lock);
	assert_int_equal(fs.sessions, 2);
	assert_string_equal(fs.auth_keys[0], "tskey-good");
	assert_string_equal(fs.auth_keys[1], ""); /* the key is not spent twice */
	pthread_mutex_unlock(&fs.lock);
	/* Trust on first use: the key is pinned. */
	snprintf(path, sizeof(path), "%s/%s", n.dir, CONTROL_SERVER_KEY_FILE);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);

	control_client_free(cc);

	/* Same URL, another key: refused for good. */
	assert_int_equal(x25519_private_generate(fs.priv), 0);
	assert_int_equal(x25519_public_from_private(fs.pub, fs.priv), 0);
	cc = client_start(&n, fs.port, NULL);
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_FAILED);
	assert_non_null(strstr(n.error, "server key"));
	control_client_free(cc);

	server_stop(&fs);
	node_teardown(&n);
}

/*
 * A key close to expiry is rotated on the live stream: old = the registered key,
 * new = the daemon's next key; a refusal keeps the old key and is retried; no
 * reconnect meanwhile.
 */
static void test_rotate(void **state)
{
	struct fake_server fs;
	struct control_client *cc;
	struct node n;
	uint8_t pub[32];

	(void)state;
	server_start(&fs, SC_ROTATE);
	node_setup(&n);
	n.rotate = true;
	cc = client_start(&n, fs.port, "tskey-good");
	WAIT_FOR(&n, n.netmaps >= 1);
	WAIT_FOR(&n, n.rot_fail >= 1);
	WAIT_FOR(&n, n.rot_ok >= 1);
	pthread_mutex_lock(&n.lock);
	assert_int_equal(n.rot_begins, 2);
	assert_int_equal(x25519_public_from_private(pub, n.rot_key), 0);
	pthread_mutex_unlock(&n.lock);
	pthread_mutex_lock(&fs.lock);
	assert_int_equal(fs.sessions, 1);
	assert_int_equal(fs.rotations, 2);
	assert_memory_equal(fs.rot_old[0], fs.reg_key, 32);
	assert_memory_equal(fs.rot_old[1], fs.reg_key, 32); /* the refusal kept the old key */
	assert_memory_equal(fs.rot_new[1], pub, 32);
	pthread_mutex_unlock(&fs.lock);
	/* key_expiry 0 now: no further rotation. */
	usleep(1500 * 1000);
	pthread_mutex_lock(&n.lock);
	assert_int_equal(n.rot_begins, 2);
	assert_int_equal(n.state, CONTROL_CLIENT_RUNNING);
	pthread_mutex_unlock(&n.lock);
	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

/* fs->endpoint_msgs > msgs and the last update leads with ep, within 10 s. */
static bool server_got_first(struct fake_server *fs, unsigned msgs, const struct endpoint *ep)
{
	bool ok = false;

	for (int i = 0; i < 1000 && !ok; i++) {
		pthread_mutex_lock(&fs->lock);
		ok = fs->endpoint_msgs > msgs && endpoint_equal(&fs->last_first, ep);
		pthread_mutex_unlock(&fs->lock);
		if (!ok)
			usleep(10 * 1000);
	}
	return ok;
}

/*
 * Port-mapped endpoints (endpoints_extra) lead the list — a peer tries a netmap's
 * first endpoint — and a change the daemon announces is sent; its loss too.
 */
static void test_endpoints_extra(void **state)
{
	struct fake_server fs;
	struct control_client *cc;
	struct node n;
	struct endpoint first, second;
	unsigned msgs;

	(void)state;
	assert_int_equal(endpoint_parse(&first, "203.0.113.7:1234"), 0);
	assert_int_equal(endpoint_parse(&second, "203.0.113.7:4321"), 0);
	server_start(&fs, SC_FOLLOW);
	node_setup(&n);
	n.has_extra = true;
	n.extra = first;
	cc = client_start(&n, fs.port, "tskey-good");
	WAIT_FOR(&n, n.netmaps >= 1 && n.state == CONTROL_CLIENT_RUNNING);
	pthread_mutex_lock(&fs.lock);
	assert_true(fs.map_endpoints >= 1);
	assert_true(endpoint_equal(&fs.map_first, &first));
	msgs = fs.endpoint_msgs;
	pthread_mutex_unlock(&fs.lock);

	pthread_mutex_lock(&n.lock);
	n.extra = second;
	pthread_mutex_unlock(&n.lock);
	control_client_endpoints_changed(cc);
	assert_true(server_got_first(&fs, msgs, &second));

	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

/*
 * The daemon applies maps on its loop and asks for a resync when a delta does
 * not apply there: the client reconnects for a full map; a request from before
 * the newest map is stale and ignored.
 */
static void test_resync(void **state)
{
	struct fake_server fs;
	struct control_client *cc;
	struct node n;

	(void)state;
	server_start(&fs, SC_FOLLOW);
	node_setup(&n);
	cc = client_start(&n, fs.port, "tskey-good");
	WAIT_FOR(&n, n.netmaps >= 1 && n.state == CONTROL_CLIENT_RUNNING);
	assert_int_equal(control_client_resync(cc, 0, -EINVAL), -ESTALE);
	assert_int_equal(control_client_resync(cc, 1, -EINVAL), 0);
	WAIT_FOR(&n, n.netmaps >= 2 && n.state == CONTROL_CLIENT_RUNNING);
	assert_non_null(strstr(n.error, "asking for a full map"));
	pthread_mutex_lock(&fs.lock);
	assert_int_equal(fs.sessions, 2);
	assert_string_equal(fs.auth_keys[1], ""); /* the key is not spent twice */
	pthread_mutex_unlock(&fs.lock);
	assert_int_equal(control_client_resync(cc, 1, -EINVAL), -ESTALE);
	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

static void test_interactive(void **state)
{
	struct fake_server fs;
	struct control_client *cc;
	struct node n;

	(void)state;
	server_start(&fs, SC_INTERACTIVE);
	node_setup(&n);
	cc = client_start(&n, fs.port, NULL);
	WAIT_FOR(&n, n.needs_login_seen >= 1);
	assert_string_equal(n.url, "http://192.0.2.1/register/abc");
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_RUNNING);
	assert_int_equal(device_peers(&n), 3);
	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

static void test_rejected(void **state)
{
	struct fake_server fs;
	struct control_client *cc;
	struct node n;

	(void)state;
	server_start(&fs, SC_REJECT);
	node_setup(&n);
	cc = client_start(&n, fs.port, "tskey-bad");
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_FAILED);
	assert_non_null(strstr(n.error, "invalid auth key"));
	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

static void test_unreachable_then_stop(void **state)
{
	struct control_client *cc;
	struct node n;

	(void)state;
	node_setup(&n);
	/*
	 * An hour's backoff: free returns only if stopping wakes the sleep (a test that
	 * timed the free failed on a loaded machine's scheduling, not on the client).
	 */
	n.backoff_min_ns = 3600 * NSEC_PER_SEC;
	/* Port 9 on loopback: nothing listens (discard is not run here). */
	cc = client_start(&n, 9, NULL);
	WAIT_FOR(&n, n.error[0] != '\0');
	assert_non_null(strstr(n.error, "cannot reach"));
	control_client_free(cc); /* the meson timeout fails it if the sleep ran on */
	node_teardown(&n);
}

/*
 * `nodes expire` on a running node (issue 8, silent failure 2): the client says the key
 * expired and stops, instead of retrying the rotation (refused) about once a second.
 */
static void test_expired(void **state)
{
	struct fake_server fs;
	struct control_client *cc;
	struct node n;

	(void)state;
	server_start(&fs, SC_EXPIRE);
	node_setup(&n);
	n.rotate = true;
	cc = client_start(&n, fs.port, "tskey-good");
	WAIT_FOR(&n, n.netmaps >= 1);
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_EXPIRED);
	/* Long enough for several retries at the old pace (one a second) and a reconnect. */
	usleep(3500 * 1000);
	pthread_mutex_lock(&fs.lock);
	assert_true(fs.rot_refused <= 1);
	assert_int_equal(fs.sessions, 1);
	assert_int_equal(fs.registers, 1);
	pthread_mutex_unlock(&fs.lock);
	pthread_mutex_lock(&n.lock);
	assert_int_equal(n.state, CONTROL_CLIENT_EXPIRED);
	assert_non_null(strstr(n.error, "node key expired"));
	pthread_mutex_unlock(&n.lock);
	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

/*
 * `nodes delete` of an active node (issue 8, silent failure 5): the client stops for good
 * and says so, instead of registering again at once as a new node.
 */
static void test_deleted(void **state)
{
	struct fake_server fs;
	struct control_client *cc;
	struct node n;

	(void)state;
	server_start(&fs, SC_DELETE);
	node_setup(&n);
	cc = client_start(&n, fs.port, "tskey-good");
	WAIT_FOR(&n, n.netmaps >= 1);
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_REMOVED);
	assert_non_null(strstr(n.error, "deleted"));
	/* Past the first reconnect's backoff (at most 1.5 s). */
	usleep(2000 * 1000);
	pthread_mutex_lock(&fs.lock);
	assert_int_equal(fs.sessions, 1);
	assert_int_equal(fs.registers, 1);
	pthread_mutex_unlock(&fs.lock);
	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

/* The probe `trellis up` runs before it leaves a server: GET /key, then idle. */
static void test_probe(void **state)
{
	struct control_client_cfg cfg = {0};
	struct control_client *cc = NULL;
	struct fake_server fs;
	struct node n;
	char url[64];

	(void)state;
	server_start(&fs, SC_FOLLOW);
	node_setup(&n);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u", fs.port);
	cfg.login_server = url;
	cfg.state_dir = n.dir;
	cfg.probe = true;
	cfg.ops = (struct control_client_ops){.ctx = &n, .state_changed = cb_state};
	n.state = CONTROL_CLIENT_CONNECTING;
	assert_int_equal(control_client_start(&cfg, &cc), 0);
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_RUNNING);
	control_client_free(cc);
	pthread_mutex_lock(&fs.lock);
	assert_int_equal(fs.sessions, 0); /* no control session, no registration */
	pthread_mutex_unlock(&fs.lock);
	server_stop(&fs);

	/* Nothing listens: FAILED, saying why; no retry. */
	snprintf(url, sizeof(url), "http://127.0.0.1:9");
	n.state = CONTROL_CLIENT_CONNECTING;
	assert_int_equal(control_client_start(&cfg, &cc), 0);
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_FAILED);
	assert_non_null(strstr(n.error, "cannot reach"));
	control_client_free(cc);
	node_teardown(&n);
}

/*
 * The client offers compressed netmaps and takes one; a bomb that would inflate past
 * the largest message is refused and counted (nothing that size is allocated), and
 * the client reconnects to a plain JSON netmap.
 */
static void test_zstd(void **state)
{
	struct control_client_stats st;
	struct fake_server fs;
	struct control_client *cc;
	struct node n;

	(void)state;
	server_start(&fs, SC_ZSTD);
	node_setup(&n);
	cc = client_start(&n, fs.port, "tskey-good");

	WAIT_FOR(&n, n.netmaps >= 2);
	WAIT_FOR(&n, n.state == CONTROL_CLIENT_RUNNING);
	assert_int_equal(device_peers(&n), 3);
	control_client_stats_get(cc, &st);
	assert_int_equal(st.zstd_maps, 1);
	assert_int_equal(st.zstd_errors, 1);
	assert_true(st.zstd_bytes_out > st.zstd_bytes_in);
	pthread_mutex_lock(&fs.lock);
	assert_int_equal(fs.sessions, 2);
	assert_int_equal(fs.zstd_offers, 2);
	pthread_mutex_unlock(&fs.lock);
	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

/* A pushed certificate of another machine key is refused and counted; the stream goes on. */
static void test_mcert_foreign(void **state)
{
	struct control_client_stats st;
	struct fake_server fs;
	struct control_client *cc;
	struct node n;
	char path[160], csr[MCERT_PEM_MAX], err[256];
	uint8_t mk[32];

	(void)state;
	server_start(&fs, SC_MCERT);
	node_setup(&n);
	/* This node has a certificate key (as after `trellis cert request`): the refusal is the
	 * certificate's, not for want of a key. */
	assert_int_equal(x25519_private_generate(mk), 0);
	assert_true(machinecert_request(n.dir, mk, "n", csr, sizeof(csr), err, sizeof(err)) > 0);
	cc = client_start(&n, fs.port, "tskey-good");
	WAIT_FOR(&n, n.deltas >= 1);
	control_client_stats_get(cc, &st);
	assert_int_equal(st.mcerts_refused, 1);
	assert_int_equal(st.mcerts_installed, 0);
	assert_string_equal(st.mcert_sent_serial, "");
	snprintf(path, sizeof(path), "%s/%s", n.dir, MACHINECERT_CERT_FILE);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(n.state, CONTROL_CLIENT_RUNNING);
	control_client_free(cc);
	server_stop(&fs);
	node_teardown(&n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stream_delta_reconnect),
	    cmocka_unit_test(test_rotate),
	    cmocka_unit_test(test_resync),
	    cmocka_unit_test(test_endpoints_extra),
	    cmocka_unit_test(test_interactive),
	    cmocka_unit_test(test_rejected),
	    cmocka_unit_test(test_unreachable_then_stop),
	    cmocka_unit_test(test_expired),
	    cmocka_unit_test(test_deleted),
	    cmocka_unit_test(test_probe),
	    cmocka_unit_test(test_zstd),
	    cmocka_unit_test(test_mcert_foreign),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
