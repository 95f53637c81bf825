/* SPDX-License-Identifier: MIT */
/*
 * The in-process server and its blocking test clients, shared by
 * test_server.c and test_attack.c (each includes control/server.c first):
 * the server runs its loop on a thread of its own on 127.0.0.1 with a
 * temporary state directory; clients are built from proto/http + ctrlstream +
 * ctrlmsg over TCP.
 */
#ifndef TRELLIS_TESTS_SERVER_HARNESS_H
#define TRELLIS_TESTS_SERVER_HARNESS_H

struct env {
	char dir[64];
	struct control_server *srv;
	pthread_t thr;
	uint16_t port;
	uint16_t mport; /* /metrics */
	uint8_t server_pub[32];
	char reusable[AUTHKEY_STR_MAX];
	char oneoff[AUTHKEY_STR_MAX];
};

static struct env E;

static void *run(void *arg)
{
	control_server_run(arg);
	return NULL;
}

static void key_create(struct store *st, uint64_t tid, bool reusable, char out[AUTHKEY_STR_MAX])
{
	struct control_authkey k = { .tailnet_id = tid, .reusable = reusable };

	k.created = time(NULL);
	assert_int_equal(authkey_generate(&k, out), 0);
	assert_int_equal(store_authkey_create(st, &k), 0);
}

static int setup(void **state)
{
	struct control_serve_opts o = { .listen = "127.0.0.1:0", .metrics_listen = "127.0.0.1:0" };
	struct admin_op_ctx ac = { .actor = "test" };
	struct control_tailnet t;
	struct store *st;

	(void)state;
	strcpy(E.dir, "/tmp/trellis-server-XXXXXX");
	assert_non_null(mkdtemp(E.dir));
	/* Keys exist before the server starts (as `authkey create` would make them). */
	assert_int_equal(admin_store_open(E.dir, &st), 0);
	ac.store = st;
	ac.now = time(NULL);
	assert_int_equal(admin_op_tailnet_resolve(&ac, NULL, &t), 0);
	key_create(st, t.id, true, E.reusable);
	key_create(st, t.id, false, E.oneoff);
	store_free(st);
	o.state_dir = E.dir;
	assert_int_equal(control_server_new(&o, &E.srv), 0);
	/*
	 * Before the server thread starts. Small socket buffers make every test go
	 * through partial writes and EPOLLOUT, and let test_slow_reader fill the
	 * server's own buffers (a small backlog cap) with a few hundred deltas.
	 */
	mapstream_backlog_max_set(E.srv->ms, 4096);
	httpd_sndbuf_set(E.srv->httpd, 16384);
	E.port = control_server_port(E.srv);
	E.mport = control_server_metrics_port(E.srv);
	assert_int_equal(pthread_create(&E.thr, NULL, run, E.srv), 0);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	control_server_stop(E.srv);
	pthread_join(E.thr, NULL);
	control_server_free(E.srv);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", E.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	return 0;
}

/* ---- a blocking test client ---- */

static unsigned src_next;

static int rcvbuf_next; /* SO_RCVBUF of the next connection, 0 = default */

/* Connections come from this source when set (attack tests), else spread over 127.0.0.1-250. */
static uint32_t src_fixed;
static uint16_t port_next; /* the port of the next connection, 0 = the public one */

static int tcp_connect(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port_next ? port_next : E.port) };
	struct sockaddr_in src = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	if (rcvbuf_next)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf_next, sizeof(rcvbuf_next));
	/* Spread over 127.0.0.1-250: the server limits unauthenticated connections per address. */
	src.sin_addr.s_addr = htonl(src_fixed ? src_fixed : 0x7f000001U + src_next++ % 250);
	assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = write(fd, b, n);

		assert_true(w > 0);
		b += w;
		n -= (size_t)w;
	}
}

/* Reads until EOF or timeout; returns bytes read. */
static size_t read_until_close(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t len = 0;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, timeout_ms) <= 0)
			break;
		n = read(fd, buf + len, cap - len - 1);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return len;
}

/* Sends a whole request on fd, reads the answer to the close, closes fd: its status. */
static unsigned http_exchange_fd(int fd, const char *raw_request, char *body, size_t body_cap)
{
	char buf[16384];
	struct http_response resp;
	size_t len;

	write_all(fd, raw_request, strlen(raw_request));
	len = read_until_close(fd, buf, sizeof(buf), 10000);
	close(fd);
	if (http_response_parse(&resp, buf, len) < 0)
		return 0;
	if (body)
		snprintf(body, body_cap, "%s", buf + resp.head_len);
	return resp.status;
}

static unsigned http_status_at(uint16_t port, const char *raw_request, char *body,
			       size_t body_cap)
{
	int fd;

	port_next = port;
	fd = tcp_connect();
	port_next = 0;
	return http_exchange_fd(fd, raw_request, body, body_cap);
}

static unsigned http_status_of(const char *raw_request, char *body, size_t body_cap)
{
	return http_status_at(E.port, raw_request, body, body_cap);
}

struct client {
	int fd;
	struct ctrlstream *cs;
	uint8_t node_priv[32], node_pub[32];
	uint8_t pend[65536]; /* read but not yet fed */
	size_t pend_len, pend_off;
};

static void client_pump_out(struct client *c)
{
	const uint8_t *d;
	size_t n;

	assert_int_equal(ctrlstream_output(c->cs, &d, &n), 0);
	if (n) {
		write_all(c->fd, d, n);
		ctrlstream_output_consume(c->cs, n);
	}
}

/* The machine key of the next client_open when set (a machine on two connections). */
static bool machine_fixed;
static uint8_t machine_next[32];

static void client_open(struct client *c)
{
	uint8_t mpriv[32];
	char buf[4096];
	struct http_response resp;
	size_t len = 0;
	int n;

	memset(c, 0, sizeof(*c));
	if (machine_fixed)
		memcpy(mpriv, machine_next, sizeof(mpriv));
	else
		assert_int_equal(x25519_private_generate(mpriv), 0);
	assert_int_equal(x25519_private_generate(c->node_priv), 0);
	x25519_public_from_private(c->node_pub, c->node_priv);
	c->fd = tcp_connect();
	n = http_control_request_build(buf, sizeof(buf), "127.0.0.1");
	assert_true(n > 0);
	write_all(c->fd, buf, (size_t)n);
	for (;;) {
		ssize_t r = read(c->fd, buf + len, 1); /* byte by byte: nothing past the head */

		assert_true(r == 1);
		len++;
		n = http_response_parse(&resp, buf, len);
		if (n != -EAGAIN)
			break;
	}
	assert_int_equal(n, 0);
	assert_int_equal(resp.status, 101);
	c->cs = ctrlstream_client_new(mpriv, E.server_pub);
	assert_non_null(c->cs);
	crypto_wipe(mpriv, sizeof(mpriv));
	client_pump_out(c);
	/* Frame 2: a register's node key proof is bound to the handshake. */
	while (!ctrlstream_established(c->cs)) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ssize_t r, f;

		assert_int_equal(poll(&p, 1, 5000), 1);
		r = read(c->fd, c->pend, sizeof(c->pend));
		assert_true(r > 0);
		c->pend_len = (size_t)r;
		c->pend_off = 0;
		f = ctrlstream_feed(c->cs, c->pend, c->pend_len);
		assert_true(f >= 0);
		c->pend_off = (size_t)f;
	}
}

static void client_close(struct client *c)
{
	ctrlstream_free(c->cs);
	close(c->fd);
}

static void client_send(struct client *c, const struct ctrl_msg *m)
{
	char *json;
	size_t len;

	assert_int_equal(ctrl_msg_encode(m, &json, &len), 0);
	assert_int_equal(ctrlstream_send(c->cs, json, len), 0);
	free(json);
	client_pump_out(c);
}

static unsigned zstd_msgs; /* compressed messages client_recv took (proto/mapz.h) */

/* The next message other than keepalive: 0, or -ETIMEDOUT / -EPIPE (closed). */
static int client_recv(struct client *c, struct ctrl_msg *ret, int timeout_ms)
{
	uint64_t end = time_now_ns() + (uint64_t)timeout_ms * NSEC_PER_MSEC;

	for (;;) {
		const char *json;
		size_t len;
		int r;

		while ((r = ctrlstream_recv(c->cs, &json, &len)) == 1) {
			char *text = NULL;

			if (mapz_is_compressed(json, len)) {
				assert_int_equal(
				    mapz_decompress(json, len, CTRL_MSG_MAX, &text, &len), 0);
				json = text;
				zstd_msgs++;
			}
			assert_int_equal(ctrl_msg_decode(json, len, ret), 0);
			free(text);
			if (ret->type != CTRL_MSG_KEEPALIVE)
				return 0;
			ctrl_msg_clear(ret);
		}
		assert_true(r >= 0);
		if (c->pend_off < c->pend_len) {
			ssize_t f = ctrlstream_feed(c->cs, c->pend + c->pend_off,
						    c->pend_len - c->pend_off);

			assert_true(f >= 0);
			c->pend_off += (size_t)f;
			/* Messages queued before the handshake completed are sealed now. */
			client_pump_out(c);
			continue;
		}
		uint64_t now = time_now_ns();
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		if (now >= end)
			return -ETIMEDOUT;
		if (poll(&p, 1, (int)((end - now) / NSEC_PER_MSEC) + 1) <= 0)
			continue;
		n = read(c->fd, c->pend, sizeof(c->pend));
		if (n <= 0)
			return -EPIPE;
		c->pend_len = (size_t)n;
		c->pend_off = 0;
	}
}

/* The node key proof of a register on c's session. */
static void client_prove(struct client *c, const uint8_t node_priv[32], struct ctrl_register *reg)
{
	assert_int_equal(ctrlstream_node_key_prove(c->cs, node_priv, reg->node_key_proof), 0);
	reg->has_node_key_proof = true;
}

static void client_register(struct client *c, const char *authkey, const char *host,
			    struct ctrl_msg *ret)
{
	struct ctrl_msg m = { .type = CTRL_MSG_REGISTER };

	memcpy(m.reg.node_key, c->node_pub, 32);
	client_prove(c, c->node_priv, &m.reg);
	snprintf(m.reg.hostname, sizeof(m.reg.hostname), "%s", host);
	snprintf(m.reg.os, sizeof(m.reg.os), "linux");
	if (authkey)
		snprintf(m.reg.auth_key, sizeof(m.reg.auth_key), "%s", authkey);
	client_send(c, &m);
	assert_int_equal(client_recv(c, ret, 5000), 0);
	assert_int_equal(ret->type, CTRL_MSG_REGISTER_RESPONSE);
}

static void client_map(struct client *c, const char *ep, struct ctrl_msg *ret)
{
	struct ctrl_msg m = { .type = CTRL_MSG_MAP_REQUEST };

	memcpy(m.map_req.node_key, c->node_pub, 32);
	m.map_req.stream = true;
	if (ep) {
		assert_int_equal(endpoint_parse(&m.map_req.endpoints[0], ep), 0);
		m.map_req.n_endpoints = 1;
	}
	client_send(c, &m);
	assert_int_equal(client_recv(c, ret, 5000), 0);
	assert_int_equal(ret->type, CTRL_MSG_NETMAP);
}

/* Nodes in the store, as the admin CLI sees them. */
static size_t store_node_count(void)
{
	struct store_snapshot snap;
	struct store *st;
	size_t n;

	assert_int_equal(admin_store_open(E.dir, &st), 0);
	assert_int_equal(store_load(st, &snap), 0);
	n = snap.n_nodes;
	store_snapshot_free(&snap);
	store_free(st);
	return n;
}

/* A sample of GET /metrics (on the metrics listener). */
static uint64_t metric(const char *name)
{
	static char body[16384];
	char line[128];
	char *p;

	assert_int_equal(http_status_at(E.mport, "GET /metrics HTTP/1.1\r\n\r\n", body, sizeof(body)),
			 200);
	snprintf(line, sizeof(line), "\n%s ", name); /* the sample, not its # TYPE line */
	p = strstr(body, line);
	assert_non_null(p);
	return strtoull(p + strlen(line), NULL, 10);
}

#endif
