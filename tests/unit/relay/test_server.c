/* SPDX-License-Identifier: MIT */
/*
 * The relay server on loopback, in one thread: test clients are sockets
 * driven by the proto/relay client engine, and the loop runs until what a
 * test waits for happens (a client socket turns readable, a counter moves),
 * with a deadline that fails the test. Forwarding, presence, ping, admission
 * and revocation, the bad input of issue 9 (garbage after the upgrade, a
 * 2^32-1 frame length, a handshake never finished, a key not proven, a
 * sender flooding a stalled reader, a connection flood from one source), the
 * mesh (one hop between two relays), the allocation budget of forwarding and the X25519
 * operations a handshake costs the relay.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "../alloc_count.h"
#include "../loop_until.h"
#include "../x25519_count.h"
#include "base/base64.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "relay/mesh.h"
#include "relay/server.h"

struct env {
	struct loop *loop;
	struct httpd *h;
	struct relay_server *s;
	uint8_t priv[RELAY_KEY_LEN]; /* s's */
	uint16_t port;
	/* admission hook */
	uint8_t refused[RELAY_KEY_LEN];
	bool refuse_set;
	unsigned checks;
};

static struct env E;

/* The relay's X25519 operations are counted (x25519_count.h), the test clients' are not. */
enum { WHO_RELAY };

static int x25519_count_who(const uint8_t priv[X25519_KEY_LEN])
{
	return memcmp(priv, E.priv, X25519_KEY_LEN) ? -1 : WHO_RELAY;
}

struct client {
	int fd;
	struct relay_conn rc;
	uint8_t priv[RELAY_KEY_LEN], pub[RELAY_KEY_LEN];
	uint8_t in[2 * (RELAY_HDR_LEN + RELAY_FRAME_MAX)];
	size_t in_off, in_len;
};

/* ---- running the loop until something happens ---- */

static bool run_until_readable(int fd)
{
	return loop_until_readable(E.loop, fd, 10 * NSEC_PER_SEC);
}

struct cond_fn {
	bool (*fn)(void);
};

static bool call_cond(void *arg)
{
	return ((struct cond_fn *)arg)->fn();
}

/* Runs the loop until cond() holds; false on the deadline. */
static bool run_until(bool (*cond)(void))
{
	struct cond_fn c = {cond};

	return loop_until(E.loop, call_cond, &c, 10 * NSEC_PER_SEC);
}

/* ---- clients ---- */

static int tcp_connect(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Reads whatever there is, running the loop until there is some. 0 at EOF. */
static size_t client_read(struct client *c)
{
	ssize_t n;

	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	if (c->in_len == sizeof(c->in)) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	assert_true(run_until_readable(c->fd));
	n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
	if (n <= 0)
		return 0;
	c->in_len += (size_t)n;
	return (size_t)n;
}

/* Upgrades: sends the request and reads the 101 head; what follows stays in c->in. */
static void client_upgrade(struct client *c, uint16_t port)
{
	static const char req[] = "GET /relay HTTP/1.1\r\nHost: relay.test\r\n"
				  "Connection: Upgrade\r\nUpgrade: trellis-relay/1\r\n\r\n";
	char *end;

	memset(c, 0, sizeof(*c));
	c->fd = tcp_connect(port);
	send_all(c->fd, req, sizeof(req) - 1);
	do {
		assert_true(client_read(c) > 0);
		end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
	} while (!end);
	assert_memory_equal(c->in, "HTTP/1.1 101", 12);
	c->in_off = (size_t)(end + 4 - (char *)c->in);
}

static void client_flush(struct client *c)
{
	const uint8_t *d;
	size_t n;

	relay_conn_output(&c->rc, &d, &n);
	if (n)
		send_all(c->fd, d, n);
	relay_conn_output_consume(&c->rc, n);
}

/*
 * The next message from the relay: 1 with *m, 0 at EOF (or an error of the
 * engine: -errno).
 */
static int client_next(struct client *c, struct relay_msg *m)
{
	for (;;) {
		const uint8_t *p = c->in + c->in_off;
		size_t left = c->in_len - c->in_off;
		int r = relay_conn_feed(&c->rc, &p, &left, m);

		c->in_off = c->in_len - left;
		client_flush(c);
		if (r != 0)
			return r;
		if (client_read(c) == 0)
			return 0;
	}
}

static void client_keygen(struct client *c)
{
	assert_int_equal(x25519_private_generate(c->priv), 0);
	x25519_public_from_private(c->pub, c->priv);
}

/* A client that completes the handshake with its own (or a given) key. */
static void client_open(struct client *c, uint16_t port, const uint8_t *mesh_key)
{
	struct relay_msg m;

	client_upgrade(c, port);
	client_keygen(c);
	assert_int_equal(relay_conn_client_init(&c->rc, c->priv, NULL, mesh_key), 0);
	assert_int_equal(client_next(c, &m), 1);
	assert_int_equal(m.type, RELAY_SERVER_INFO);
	assert_true(relay_conn_established(&c->rc));
}

static void client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	relay_conn_clear(&c->rc);
}

static void client_send(struct client *c, const uint8_t *dst, const void *data, size_t len)
{
	uint8_t frame[RELAY_HDR_LEN + RELAY_FRAME_MAX];
	struct relay_msg m = {.type = RELAY_SEND_PACKET, .data = data, .len = len};
	ssize_t n;

	memcpy(m.key, dst, RELAY_KEY_LEN);
	n = relay_msg_encode(frame, sizeof(frame), &m);
	assert_true(n > 0);
	send_all(c->fd, frame, (size_t)n);
}

/* Waits for EOF from the relay. */
static void client_expect_closed(struct client *c)
{
	struct relay_msg m;
	int r;

	do
		r = client_next(c, &m);
	while (r == 1);
	assert_true(r <= 0);
}

/* Reads and discards until the relay closes the connection. */
static void client_wait_eof(struct client *c)
{
	while (client_read(c) > 0)
		c->in_off = c->in_len;
}

static struct relay_stats stats(void)
{
	struct relay_stats st;

	relay_server_stats_get(E.s, &st);
	return st;
}

/* ---- setup ---- */

static int admit_check(void *ctx, const uint8_t key[RELAY_KEY_LEN], uint64_t token)
{
	(void)ctx;
	(void)token;
	E.checks++;
	return E.refuse_set && memcmp(key, E.refused, RELAY_KEY_LEN) == 0 ? 0 : 1;
}

static const struct relay_admit_ops admit_ops = {.check = admit_check};

static void server_start(struct relay_server_opts *o)
{
	struct httpd_opts ho = {.name = "test"};

	E.loop = loop_new();
	assert_non_null(E.loop);
	assert_int_equal(x25519_private_generate(E.priv), 0);
	o->priv = E.priv;
	o->admit = &admit_ops;
	assert_int_equal(relay_server_new(E.loop, o, &E.s), 0);
	assert_int_equal(httpd_new(E.loop, &ho, &E.h), 0);
	assert_int_equal(relay_server_route(E.s, E.h), 0);
	assert_int_equal(httpd_listen(E.h, "127.0.0.1:0"), 0);
	E.port = httpd_port(E.h);
}

static int setup(void **state)
{
	struct relay_server_opts o = {.name = "test"};

	(void)state;
	memset(&E, 0, sizeof(E));
	server_start(&o);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	relay_server_free(E.s);
	httpd_free(E.h);
	loop_free(E.loop);
	return 0;
}

/* ---- tests ---- */

static bool two_not_here(void)
{
	return stats().drops[RELAY_DROP_NOT_HERE] == 2;
}

static bool two_conns(void)
{
	return stats().conns == 2;
}

static void test_forward_presence_ping(void **state)
{
	struct client a, b;
	struct relay_msg m;
	static const char hello[] = "opaque datagram";
	struct relay_msg ping = {.type = RELAY_PING, .ping = "12345678"};
	uint8_t frame[64];

	(void)state;
	client_open(&a, E.port, NULL);
	client_open(&b, E.port, NULL);
	/* Registered before server-info went out. */
	assert_int_equal(stats().clients, 2);

	/* A -> B arrives as recv-packet from A, byte for byte. */
	client_send(&a, b.pub, hello, sizeof(hello));
	assert_int_equal(client_next(&b, &m), 1);
	assert_int_equal(m.type, RELAY_RECV_PACKET);
	assert_memory_equal(m.key, a.pub, RELAY_KEY_LEN);
	assert_int_equal(m.len, sizeof(hello));
	assert_memory_equal(m.data, hello, sizeof(hello));

	/* Ping -> pong with the same bytes. */
	assert_int_equal(relay_msg_encode(frame, sizeof(frame), &ping), RELAY_HDR_LEN + 8);
	send_all(b.fd, frame, RELAY_HDR_LEN + 8);
	assert_int_equal(client_next(&b, &m), 1);
	assert_int_equal(m.type, RELAY_PONG);
	assert_memory_equal(m.ping, "12345678", 8);

	/* B leaves: A, who sent to it, hears peer-gone (disconnected). */
	client_close(&b);
	assert_int_equal(client_next(&a, &m), 1);
	assert_int_equal(m.type, RELAY_PEER_GONE);
	assert_memory_equal(m.key, b.pub, RELAY_KEY_LEN);
	assert_int_equal(m.reason, RELAY_GONE_DISCONNECTED);

	/* To a key nobody holds: peer-gone (not here), once a second at most. */
	client_send(&a, b.pub, hello, sizeof(hello));
	client_send(&a, b.pub, hello, sizeof(hello));
	assert_int_equal(client_next(&a, &m), 1);
	assert_int_equal(m.type, RELAY_PEER_GONE);
	assert_int_equal(m.reason, RELAY_GONE_NOT_HERE);
	assert_true(run_until(two_not_here));
	assert_int_equal(stats().clients, 1);
	client_close(&a);
}

static bool no_conns(void)
{
	return stats().conns == 0;
}

static void test_garbage_after_upgrade(void **state)
{
	struct client c;
	static const char junk[] = "this is not a relay frame at all\r\n\r\n";
	/* A frame of the stream before the handshake: well formed, out of place. */
	static const uint8_t early[] = {RELAY_SEND_PACKET, 0, 0, 0, 1, 'x'};

	(void)state;
	client_upgrade(&c, E.port);
	send_all(c.fd, junk, sizeof(junk) - 1);
	client_wait_eof(&c);
	assert_true(run_until(no_conns));
	/* "this" reads as a frame type and a length over the handshake cap */
	assert_int_equal(stats().closes[RELAY_CLOSE_TOO_BIG], 1);
	close(c.fd);
	client_upgrade(&c, E.port);
	send_all(c.fd, early, sizeof(early));
	client_wait_eof(&c);
	assert_true(run_until(no_conns));
	assert_int_equal(stats().closes[RELAY_CLOSE_PROTOCOL], 1);
	assert_int_equal(stats().clients, 0);
	close(c.fd);
}

static void test_frame_length_max(void **state)
{
	static const uint8_t huge_hs[] = {RELAY_CLIENT_INFO, 0xff, 0xff, 0xff, 0xff};
	static const uint8_t huge[] = {RELAY_SEND_PACKET, 0xff, 0xff, 0xff, 0xff};
	struct client c;

	(void)state;
	/* During the handshake: closed on the header. */
	client_upgrade(&c, E.port);
	send_all(c.fd, huge_hs, sizeof(huge_hs));
	assert_true(run_until(no_conns));
	assert_int_equal(stats().closes[RELAY_CLOSE_TOO_BIG], 1);
	close(c.fd);

	/* After it: the same, and nothing was buffered for it. */
	client_open(&c, E.port, NULL);
	send_all(c.fd, huge, sizeof(huge));
	client_expect_closed(&c);
	assert_true(run_until(no_conns));
	assert_int_equal(stats().closes[RELAY_CLOSE_TOO_BIG], 2);
	assert_int_equal(stats().bufs_big, 0);
	client_close(&c);
}

static void test_handshake_never_finished(void **state)
{
	struct relay_server_opts o = {.name = "test", .handshake_timeout_ns = 300 * NSEC_PER_MSEC};
	struct client c;
	uint64_t t0;

	teardown(state);
	memset(&E, 0, sizeof(E));
	server_start(&o);
	t0 = time_now_ns();
	client_upgrade(&c, E.port);
	/* It reads server-key and then says nothing: closed at the deadline. */
	client_wait_eof(&c);
	assert_true(time_now_ns() - t0 >= 250 * NSEC_PER_MSEC);
	assert_true(run_until(no_conns));
	assert_int_equal(stats().closes[RELAY_CLOSE_HANDSHAKE_TIMEOUT], 1);
	assert_int_equal(stats().clients, 0);
	close(c.fd);
}

/*
 * A client that answers server-key with a client-info claiming the key claimed, its box
 * sealed with its own key: a proof that does not open.
 */
static void client_claim(struct client *c, const uint8_t claimed[RELAY_KEY_LEN])
{
	struct relay_msg m;
	const uint8_t *d;
	uint8_t buf[RELAY_HS_OUT_MAX];
	size_t n;
	int r;

	client_upgrade(c, E.port);
	client_keygen(c);
	assert_int_equal(relay_conn_client_init(&c->rc, c->priv, NULL, NULL), 0);
	/* Take server-key; client-info is queued. */
	{
		const uint8_t *p = c->in + c->in_off;
		size_t left = c->in_len - c->in_off;

		while (left < RELAY_HDR_LEN + RELAY_MAGIC_LEN + 1 + 2 * RELAY_KEY_LEN) {
			assert_true(client_read(c) > 0);
			p = c->in + c->in_off;
			left = c->in_len - c->in_off;
		}
		r = relay_conn_feed(&c->rc, &p, &left, &m);
		assert_int_equal(r, 0);
	}
	relay_conn_output(&c->rc, &d, &n);
	assert_true(n > RELAY_HDR_LEN + RELAY_KEY_LEN && n <= sizeof(buf));
	memcpy(buf, d, n);
	memcpy(buf + RELAY_HDR_LEN, claimed, RELAY_KEY_LEN);
	send_all(c->fd, buf, n);
}

static void test_key_not_proven(void **state)
{
	struct client c, other;

	(void)state;
	client_keygen(&other);
	/* Claim another node's key with a box sealed by ours. */
	client_claim(&c, other.pub);
	assert_true(run_until(no_conns));
	assert_int_equal(stats().closes[RELAY_CLOSE_PROOF], 1);
	assert_int_equal(stats().clients, 0);
	assert_int_equal(E.checks, 0); /* never got as far as admission */
	close(c.fd);
	relay_conn_clear(&c.rc);
}

static bool one_proof_refused(void)
{
	return stats().closes[RELAY_CLOSE_PROOF] == 1;
}

/*
 * What a handshake costs the relay in X25519 operations, counted (never timed). Its public
 * key is derived once, in relay_server_new, and the box key's DH is given the key pair
 * (x25519_shared_pair): one scalar multiplication per client, the DH itself. It was three:
 * the public key derived at every accept, and derived again inside the DH.
 */
static void test_handshake_x25519(void **state)
{
	enum { N = 16 };
	struct x25519_count c0, n;
	struct client a, x;
	struct relay_msg m;

	(void)state;
	c0 = x25519_count_get(WHO_RELAY);
	for (int i = 0; i < N; i++) {
		client_open(&a, E.port, NULL);
		client_close(&a);
	}
	n = x25519_count_since(WHO_RELAY, c0);
	print_message("relay, per handshake: %.2f public keys derived, %.2f X25519 scalar "
		      "multiplications\n",
		      (double)n.derived / N, (double)n.scalarmult / N);
	assert_int_equal(n.derived, 0);
	assert_int_equal(n.scalarmult, N);

	/* The key it presents is its own: a client pinned to it gets in... */
	client_upgrade(&a, E.port);
	client_keygen(&a);
	assert_int_equal(relay_conn_client_init(&a.rc, a.priv, relay_server_pub(E.s), NULL), 0);
	assert_int_equal(client_next(&a, &m), 1);
	assert_int_equal(m.type, RELAY_SERVER_INFO);
	assert_memory_equal(m.key, relay_server_pub(E.s), RELAY_KEY_LEN);
	/* ...and one pinned to another key refuses it. */
	client_upgrade(&x, E.port);
	client_keygen(&x);
	assert_int_equal(relay_conn_client_init(&x.rc, x.priv, a.pub, NULL), 0);
	assert_int_equal(client_next(&x, &m), -EACCES);
	assert_false(relay_conn_established(&x.rc));
	client_close(&x);

	/* A key claimed and not proven is refused, at the cost of the DH alone. */
	c0 = x25519_count_get(WHO_RELAY);
	client_claim(&x, a.pub);
	assert_true(run_until(one_proof_refused));
	n = x25519_count_since(WHO_RELAY, c0);
	assert_int_equal(n.derived, 0);
	assert_int_equal(n.scalarmult, 1);
	assert_int_equal(stats().clients, 1);
	close(x.fd);
	relay_conn_clear(&x.rc);
	client_close(&a);
}

/* The next frame is a health frame whose text holds what. */
static void expect_health(struct client *c, const char *what)
{
	struct relay_msg m;

	assert_int_equal(client_next(c, &m), 1);
	assert_int_equal(m.type, RELAY_HEALTH);
	assert_non_null(memmem(m.data, m.len, what, strlen(what)));
}

static void test_admission_and_revoke(void **state)
{
	struct client a, b;
	struct relay_msg m;

	(void)state;
	/* Refused by the hook: closed before server-info. */
	client_upgrade(&a, E.port);
	client_keygen(&a);
	memcpy(E.refused, a.pub, RELAY_KEY_LEN);
	E.refuse_set = true;
	assert_int_equal(relay_conn_client_init(&a.rc, a.priv, NULL, NULL), 0);
	assert_true(client_next(&a, &m) <= 0);
	assert_false(relay_conn_established(&a.rc));
	assert_int_equal(stats().closes[RELAY_CLOSE_REFUSED], 1);
	client_close(&a);
	E.refuse_set = false;

	/* Admitted, then revoked by key; then one refused at a recheck. */
	client_open(&a, E.port, NULL);
	client_open(&b, E.port, NULL);
	assert_true(relay_server_revoke(E.s, a.pub));
	expect_health(&a, "no longer admitted");
	client_expect_closed(&a);
	memcpy(E.refused, b.pub, RELAY_KEY_LEN);
	E.refuse_set = true;
	assert_int_equal(relay_server_recheck(E.s), 1);
	expect_health(&b, "no longer admitted");
	client_expect_closed(&b);
	assert_int_equal(stats().closes[RELAY_CLOSE_REVOKED], 2);
	assert_int_equal(stats().clients, 0);
	client_close(&a);
	client_close(&b);
}

static void test_replaced(void **state)
{
	struct client a1, a2;
	struct relay_msg m;

	(void)state;
	client_open(&a1, E.port, NULL);
	/* The same key again: the newer connection wins. */
	client_upgrade(&a2, E.port);
	memcpy(a2.priv, a1.priv, RELAY_KEY_LEN);
	assert_int_equal(relay_conn_client_init(&a2.rc, a2.priv, NULL, NULL), 0);
	assert_int_equal(client_next(&a2, &m), 1);
	expect_health(&a1, "replaced");
	client_expect_closed(&a1);
	assert_int_equal(stats().clients, 1);
	assert_int_equal(stats().closes[RELAY_CLOSE_REPLACED], 1);
	client_close(&a1);
	client_close(&a2);
}

static bool nonblock(int fd)
{
	return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0;
}

/*
 * A sends as fast as it can to B, which never reads; C sends to D meanwhile.
 * B's queue drops its oldest packets; every packet of C reaches D, in order;
 * A stays connected.
 */
static void test_stalled_reader(void **state)
{
	struct client a, b, c, d;
	uint8_t frame[RELAY_HDR_LEN + RELAY_KEY_LEN + 1200];
	struct relay_msg m = {.type = RELAY_SEND_PACKET, .len = 1200};
	uint8_t payload[1200];
	size_t flen, sent_a = 0;
	int small = 4096;

	(void)state;
	client_open(&a, E.port, NULL);
	client_open(&b, E.port, NULL);
	client_open(&c, E.port, NULL);
	client_open(&d, E.port, NULL);
	setsockopt(b.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	memset(payload, 0xab, sizeof(payload));
	memcpy(m.key, b.pub, RELAY_KEY_LEN);
	m.data = payload;
	flen = (size_t)relay_msg_encode(frame, sizeof(frame), &m);
	assert_true(nonblock(a.fd));
	for (unsigned i = 0; i < 300; i++) {
		struct relay_msg got;
		uint32_t seq = i;

		/* A: as many as its socket takes right now. */
		for (unsigned k = 0; k < 32; k++) {
			ssize_t w = send(a.fd, frame, flen, MSG_NOSIGNAL);

			if (w < 0)
				break;
			assert_int_equal(w,
					 (ssize_t)flen); /* whole frames or nothing, for the test */
			sent_a++;
		}
		client_send(&c, d.pub, &seq, sizeof(seq));
		assert_int_equal(client_next(&d, &got), 1);
		assert_int_equal(got.type, RELAY_RECV_PACKET);
		assert_memory_equal(got.key, c.pub, RELAY_KEY_LEN);
		assert_int_equal(got.len, sizeof(seq));
		assert_memory_equal(got.data, &seq, sizeof(seq));
	}
	assert_true(sent_a > 1000);
	assert_true(stats().drops[RELAY_DROP_QUEUE_FULL] > 0);
	assert_int_equal(stats().clients, 4);
	assert_int_equal(stats().closes[RELAY_CLOSE_SLOW], 0);
	client_close(&a);
	client_close(&b);
	client_close(&c);
	client_close(&d);
}

#define BURST (3 * RELAY_QUEUE_MAX_DEFAULT)

static bool burst_in(void)
{
	return stats().packets_in == BURST;
}

/*
 * Three queues' worth of datagrams in one write to an idle receiver: the relay reads
 * them in one event, and the receiver's socket has room for all of them, so none is
 * dropped (the queue is handed to the socket when it fills, not only after the event).
 */
static void test_burst_to_idle_reader(void **state)
{
	static uint8_t buf[BURST * (RELAY_PACKET_HDR_LEN + 200)];
	struct relay_msg m = {.type = RELAY_SEND_PACKET, .len = 200};
	uint8_t payload[200] = {0};
	struct client a, b;
	size_t n = 0;

	(void)state;
	client_open(&a, E.port, NULL);
	client_open(&b, E.port, NULL);
	memcpy(m.key, b.pub, RELAY_KEY_LEN);
	m.data = payload;
	for (uint32_t i = 0; i < BURST; i++) {
		memcpy(payload, &i, sizeof(i));
		n += (size_t)relay_msg_encode(buf + n, sizeof(buf) - n, &m);
	}
	send_all(a.fd, buf, n);
	assert_true(run_until(burst_in));
	assert_int_equal(stats().drops[RELAY_DROP_QUEUE_FULL], 0);
	for (uint32_t i = 0; i < BURST; i++) {
		struct relay_msg got;

		assert_int_equal(client_next(&b, &got), 1);
		assert_int_equal(got.type, RELAY_RECV_PACKET);
		assert_int_equal(got.len, 200);
		assert_memory_equal(got.data, &i, sizeof(i));
	}
	client_close(&a);
	client_close(&b);
}

static bool flood_refused(void)
{
	struct httpd_stats hs;

	httpd_stats_get(E.h, &hs);
	return hs.drops[HTTPD_DROP_UNAUTH_LIMIT] >= 10;
}

/*
 * One source opens more connections than it may hold unauthenticated: the
 * extra ones are refused; a client already established keeps working; once
 * the flood goes, a new client gets in.
 */
static void test_connection_flood(void **state)
{
	int fds[HTTPD_UNAUTH_PER_SOURCE + 10];
	struct client a, b;
	struct relay_msg m;

	(void)state;
	client_open(&a, E.port, NULL);
	client_open(&b, E.port, NULL);
	for (size_t i = 0; i < ARRAY_SIZE(fds); i++) {
		static const char req[] = "GET /relay HTTP/1.1\r\nHost: x\r\n"
					  "Connection: Upgrade\r\nUpgrade: trellis-relay/1\r\n\r\n";

		fds[i] = tcp_connect(E.port);
		send_all(fds[i], req, sizeof(req) - 1);
	}
	assert_true(run_until(flood_refused));
	assert_true(stats().handshaking <= HTTPD_UNAUTH_PER_SOURCE);
	client_send(&a, b.pub, "x", 1);
	assert_int_equal(client_next(&b, &m), 1);
	assert_int_equal(m.type, RELAY_RECV_PACKET);
	for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
		close(fds[i]);
	assert_true(run_until(two_conns));
	client_close(&a);
	client_close(&b);
}

static bool rate_dropped(void)
{
	return stats().drops[RELAY_DROP_RATE_PACKETS] + stats().packets_fwd == 400;
}

/* A client over its packet rate: the excess is dropped and counted, it stays connected. */
static void test_rate_limit(void **state)
{
	struct relay_server_opts o = { .name = "test" };
	struct client a, b;
	struct relay_msg m;

	teardown(state);
	memset(&E, 0, sizeof(E));
	/* 100 datagrams/s, a bucket of 64: 400 at once cannot all pass. */
	o.limits.rate_packets = 100;
	server_start(&o);
	client_open(&a, E.port, NULL);
	client_open(&b, E.port, NULL);
	for (int i = 0; i < 400; i++)
		client_send(&a, b.pub, "x", 1);
	assert_true(run_until(rate_dropped));
	/* at 100/s, 200 more would take 2 s: far more than sending 400 frames does */
	assert_true(stats().drops[RELAY_DROP_RATE_PACKETS] >= 200);
	assert_true(stats().packets_fwd >= 64);
	for (uint64_t i = 0; i < stats().packets_fwd; i++) {
		assert_int_equal(client_next(&b, &m), 1);
		assert_int_equal(m.type, RELAY_RECV_PACKET);
	}
	assert_int_equal(stats().clients, 2);
	client_close(&a);
	client_close(&b);
}

/* Forwarding a warm path allocates nothing. */
static void test_no_malloc_per_packet(void **state)
{
#ifdef HAVE_ASAN
	struct client a, b;
	struct relay_msg m;
	uint8_t data[1000] = {0};

	(void)state;
	alloc_count_install();
	client_open(&a, E.port, NULL);
	client_open(&b, E.port, NULL);
	for (int i = 0; i < 10; i++) { /* warm the pool */
		client_send(&a, b.pub, data, sizeof(data));
		assert_int_equal(client_next(&b, &m), 1);
	}
	allocations = 0;
	counting = 1;
	for (int i = 0; i < 50; i++) {
		client_send(&a, b.pub, data, sizeof(data));
		assert_true(run_until_readable(b.fd));
	}
	counting = 0;
	for (int i = 0; i < 50; i++)
		assert_int_equal(client_next(&b, &m), 1);
	/* The test's own loop helpers allocate nothing either; cmocka's asserts may. */
	assert_int_equal(allocations, 0);
	client_close(&a);
	client_close(&b);
#else
	(void)state;
	skip();
#endif
}

/* ---- mesh ---- */

static struct relay_server *s2;
static struct httpd *h2;

static bool meshed(void)
{
	struct relay_stats a, b;

	relay_server_stats_get(E.s, &a);
	relay_server_stats_get(s2, &b);
	return a.mesh_out == 1 && b.mesh_out == 1 && a.mesh_in == 1 && b.mesh_in == 1;
}

static bool remote_seen(void)
{
	struct relay_stats a, b;

	relay_server_stats_get(E.s, &a);
	relay_server_stats_get(s2, &b);
	return a.remote == 1 && b.remote == 1;
}

static bool remote_gone(void)
{
	struct relay_stats a;

	relay_server_stats_get(E.s, &a);
	return a.remote == 0;
}

static bool proof_refused(void)
{
	struct relay_stats b;

	relay_server_stats_get(s2, &b);
	return b.closes[RELAY_CLOSE_PROOF] >= 1;
}

static void test_mesh_one_hop(void **state)
{
	struct relay_server_opts o = {.name = "r1"};
	struct httpd_opts ho = {.name = "r2"};
	uint8_t mesh_key[RELAY_KEY_LEN], priv2[RELAY_KEY_LEN], wrong[RELAY_KEY_LEN];
	struct relay_mesh *m1, *m2, *m3;
	char url1[64], url2[128], url3[128], b64[KEY_BASE64_LEN + 1];
	const char *u1 = url1, *u2 = url2, *u3 = url3;
	uint8_t pub2[RELAY_KEY_LEN];
	struct relay_stats st2;
	struct client a, b, x;
	struct relay_msg m;

	teardown(state);
	memset(&E, 0, sizeof(E));
	assert_int_equal(crypto_random(mesh_key, sizeof(mesh_key)), 0);
	o.mesh_key = mesh_key;
	server_start(&o);
	o.name = "r2";
	assert_int_equal(x25519_private_generate(priv2), 0);
	o.priv = priv2;
	assert_int_equal(relay_server_new(E.loop, &o, &s2), 0);
	assert_int_equal(httpd_new(E.loop, &ho, &h2), 0);
	assert_int_equal(relay_server_route(s2, h2), 0);
	assert_int_equal(httpd_listen(h2, "127.0.0.1:0"), 0);
	snprintf(url1, sizeof(url1), "http://127.0.0.1:%u", E.port);
	snprintf(url2, sizeof(url2), "http://127.0.0.1:%u", httpd_port(h2));
	/* Relay 1 pins relay 2's key; relay 2 dials relay 1 on the mesh key's proof alone. */
	assert_int_equal(x25519_public_from_private(pub2, priv2), 0);
	key_to_base64(b64, pub2);
	snprintf(url2 + strlen(url2), sizeof(url2) - strlen(url2), "#%s", b64);
	assert_int_equal(relay_mesh_new(E.loop, E.s, &u2, 1, &m1), 0);
	assert_int_equal(relay_mesh_new(E.loop, s2, &u1, 1, &m2), 0);
	assert_true(run_until(meshed));
	/* A link pinned to another key is refused at the handshake (and not taken as a peer). */
	key_to_base64(b64, mesh_key);
	snprintf(url3, sizeof(url3), "http://127.0.0.1:%u#%s", E.port, b64);
	assert_int_equal(relay_mesh_new(E.loop, s2, &u3, 1, &m3), 0);
	assert_true(run_until(proof_refused));
	relay_server_stats_get(s2, &st2);
	assert_int_equal(st2.mesh_out, 1);

	/* A on relay 1, B on relay 2: one hop through the mesh, both ways. */
	client_open(&a, E.port, NULL);
	client_open(&b, httpd_port(h2), NULL);
	assert_true(run_until(remote_seen));
	client_send(&a, b.pub, "to b", 4);
	assert_int_equal(client_next(&b, &m), 1);
	assert_int_equal(m.type, RELAY_RECV_PACKET);
	assert_memory_equal(m.key, a.pub, RELAY_KEY_LEN);
	assert_memory_equal(m.data, "to b", 4);
	client_send(&b, a.pub, "to a", 4);
	assert_int_equal(client_next(&a, &m), 1);
	assert_memory_equal(m.key, b.pub, RELAY_KEY_LEN);
	assert_memory_equal(m.data, "to a", 4);

	/* B leaves relay 2: relay 1 forgets it. */
	client_close(&b);
	assert_true(run_until(remote_gone));

	/* Without the mesh key, the mesh frames close the connection. */
	assert_int_equal(crypto_random(wrong, sizeof(wrong)), 0);
	client_upgrade(&x, E.port);
	client_keygen(&x);
	assert_int_equal(relay_conn_client_init(&x.rc, x.priv, NULL, wrong), 0);
	assert_true(client_next(&x, &m) <= 0);
	assert_true(stats().closes[RELAY_CLOSE_PROOF] >= 1);
	client_close(&x);
	client_close(&a);

	relay_server_free(s2);
	relay_server_free(E.s);
	E.s = NULL;
	relay_mesh_free(m1);
	relay_mesh_free(m2);
	relay_mesh_free(m3);
	httpd_free(h2);
	httpd_free(E.h);
	E.h = NULL;
	loop_free(E.loop);
	E.loop = NULL;
	memset(&E, 0, sizeof(E));
	server_start(&(struct relay_server_opts){.name = "test"});
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_forward_presence_ping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_garbage_after_upgrade, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_frame_length_max, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshake_never_finished, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_not_proven, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshake_x25519, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_admission_and_revoke, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replaced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stalled_reader, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_burst_to_idle_reader, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_flood, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rate_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_malloc_per_packet, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_mesh_one_hop, setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
