/* SPDX-License-Identifier: MIT */
/*
 * The relay protocol in memory: every frame through encode, the reader (at
 * every split point) and decode; the handshake between a client and a server
 * engine; and the ways a peer can break it: garbage, huge lengths, a key it
 * cannot prove, a client-info replayed from another connection or relay, a
 * forged server, mesh frames without the mesh key; and the X25519 operations a
 * handshake costs each end.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../x25519_count.h"
#include "base/pkt.h"
#include "proto/relay.c"

static uint8_t cpriv[32], cpub[32], spriv[32], spub[32];

enum { WHO_SERVER, WHO_CLIENT };

static int x25519_count_who(const uint8_t priv[X25519_KEY_LEN])
{
	if (!memcmp(priv, spriv, X25519_KEY_LEN))
		return WHO_SERVER;
	return memcmp(priv, cpriv, X25519_KEY_LEN) ? -1 : WHO_CLIENT;
}
static const uint8_t mesh_key[32] = {0x6d, 0x65, 0x73, 0x68};
static const struct relay_limits limits = {
    .keepalive_ms = 60000, .rate_bytes = 5000000, .burst_bytes = 10000000, .rate_packets = 20000};

static void keys(void)
{
	assert_int_equal(x25519_private_generate(cpriv), 0);
	assert_int_equal(x25519_public_from_private(cpub, cpriv), 0);
	assert_int_equal(x25519_private_generate(spriv), 0);
	assert_int_equal(x25519_public_from_private(spub, spriv), 0);
}

/* Takes all handshake output of from (a copy: it may be fed again as a replay). */
static size_t take_output(struct relay_conn *from, uint8_t *buf, size_t cap)
{
	const uint8_t *p;
	size_t n;

	relay_conn_output(from, &p, &n);
	assert_true(n <= cap);
	memcpy(buf, p, n);
	relay_conn_output_consume(from, n);
	return n;
}

/* Feeds bytes to c in chunks of step; returns the last feed result, events in *ev (type). */
static int feed(struct relay_conn *c, const uint8_t *p, size_t len, size_t step,
		struct relay_msg *last, unsigned *events)
{
	int r = 0;

	while (len > 0) {
		size_t n = MIN(len, step), left = n;
		const uint8_t *q = p;

		while ((r = relay_conn_feed(c, &q, &left, last)) == 1)
			(*events)++;
		if (r < 0)
			return r;
		assert_int_equal(left, 0);
		p += n;
		len -= n;
	}
	return r;
}

/*
 * A server and a client (node key client_priv, pinned to the server's key)
 * past server-key: returns the length of the client-info the client wrote to out.
 */
static size_t client_info(struct relay_conn *c, struct relay_conn *s, const uint8_t *client_priv,
			  const uint8_t *cmesh, const uint8_t *smesh, uint8_t out[RELAY_HS_OUT_MAX])
{
	uint8_t key[RELAY_HS_OUT_MAX];
	struct relay_msg d;
	unsigned ev = 0;
	size_t n;

	assert_int_equal(relay_conn_server_init(s, spriv, smesh), 0);
	assert_int_equal(relay_conn_client_init(c, client_priv, spub, cmesh), 0);
	n = take_output(s, key, sizeof(key));
	assert_int_equal(feed(c, key, n, 1000, &d, &ev), 0);
	assert_int_equal(ev, 0);
	return take_output(c, out, RELAY_HS_OUT_MAX);
}

/* The handshake of a client and a server just set up; step: the chunk size of every feed. */
static void handshake(struct relay_conn *c, struct relay_conn *s, size_t step)
{
	uint8_t buf[RELAY_HS_OUT_MAX * 2], k[32];
	struct relay_msg m;
	unsigned ev = 0;
	size_t n;

	assert_int_equal(relay_conn_peer_key(s, k), -ENOENT);
	assert_int_equal(relay_conn_peer_key(c, k), -ENOENT);

	n = take_output(s, buf, sizeof(buf));
	assert_int_equal(n, RELAY_HDR_LEN + SERVER_KEY_LEN);
	assert_int_equal(feed(c, buf, n, step, &m, &ev), 0);
	assert_int_equal(ev, 0);

	n = take_output(c, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(feed(s, buf, n, step, &m, &ev), 0);
	assert_int_equal(ev, 1);
	assert_int_equal(m.type, RELAY_CLIENT_INFO);
	assert_memory_equal(m.key, cpub, 32);
	assert_int_equal(relay_conn_peer_key(s, k), 0);
	assert_memory_equal(k, cpub, 32);
	assert_false(relay_conn_established(s));
	assert_int_equal(relay_conn_server_accept(s, &limits), 0);
	assert_true(relay_conn_established(s));

	n = take_output(s, buf, sizeof(buf));
	assert_int_equal(feed(c, buf, n, step, &m, &ev), 0);
	assert_int_equal(ev, 2);
	assert_int_equal(m.type, RELAY_SERVER_INFO);
	assert_memory_equal(m.key, spub, 32);
	assert_true(relay_conn_established(c));
	assert_memory_equal(relay_conn_limits(c), &limits, sizeof(limits));
	assert_int_equal(relay_conn_peer_key(c, k), 0);
	assert_memory_equal(k, spub, 32);
	assert_int_equal(c->version, RELAY_VERSION);
	/* The private keys are not kept once they have done their work. */
	static const uint8_t zero[32];
	assert_memory_equal(c->priv, zero, 32);
	assert_memory_equal(s->priv, zero, 32);
}

/* A full handshake; step is the chunk size for every feed. */
static void connect_pair(struct relay_conn *c, struct relay_conn *s, const uint8_t *cmesh,
			 const uint8_t *smesh, size_t step)
{
	assert_int_equal(relay_conn_server_init(s, spriv, smesh), 0);
	assert_int_equal(relay_conn_client_init(c, cpriv, spub, cmesh), 0);
	handshake(c, s, step);
}

static void test_handshake(void **state)
{
	size_t steps[] = {1, 2, 3, 5, 7, 37, 1000};
	struct relay_conn c, s;

	(void)state;
	keys();
	for (size_t i = 0; i < ARRAY_SIZE(steps); i++) {
		connect_pair(&c, &s, NULL, NULL, steps[i]);
		assert_false(relay_conn_is_mesh(&s));
		relay_conn_clear(&c);
		relay_conn_clear(&s);
	}
	/* Without a pinned key the client takes the one the server proves. */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(relay_conn_client_init(&c, cpriv, NULL, NULL), 0);
	relay_conn_clear(&c);
	relay_conn_clear(&s);
	relay_conn_clear(NULL);
}

/*
 * The X25519 operations a handshake costs each end, counted (never timed): the DH alone
 * when the end is given its key pair (relay_conn_*_init_pair: a relay's key or a node key,
 * its public half derived once), one more when it derives its public half itself. A public
 * half that is not the private key's opens no box.
 */
static void test_handshake_x25519(void **state)
{
	uint8_t opriv[32], opub[32], buf[RELAY_HS_OUT_MAX];
	struct x25519_count s0, c0, sn, cn;
	struct relay_conn c, s;
	struct relay_msg d;
	unsigned ev = 0;
	size_t n;

	(void)state;
	keys();
	s0 = x25519_count_get(WHO_SERVER);
	c0 = x25519_count_get(WHO_CLIENT);
	assert_int_equal(relay_conn_server_init_pair(&s, spriv, spub, NULL), 0);
	assert_int_equal(relay_conn_client_init_pair(&c, cpriv, cpub, spub, NULL), 0);
	handshake(&c, &s, 1000);
	sn = x25519_count_since(WHO_SERVER, s0);
	cn = x25519_count_since(WHO_CLIENT, c0);
	print_message("with the key pairs: server %" PRIu64 " derived, %" PRIu64
		      " scalar multiplications; client %" PRIu64 ", %" PRIu64 "\n",
		      sn.derived, sn.scalarmult, cn.derived, cn.scalarmult);
	assert_int_equal(sn.derived, 0);
	assert_int_equal(sn.scalarmult, 1);
	assert_int_equal(cn.derived, 0);
	assert_int_equal(cn.scalarmult, 1);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* Without them: each end derives its public half, once. */
	s0 = x25519_count_get(WHO_SERVER);
	c0 = x25519_count_get(WHO_CLIENT);
	connect_pair(&c, &s, NULL, NULL, 1000);
	sn = x25519_count_since(WHO_SERVER, s0);
	cn = x25519_count_since(WHO_CLIENT, c0);
	assert_int_equal(sn.derived, 1);
	assert_int_equal(sn.scalarmult, 2);
	assert_int_equal(cn.derived, 1);
	assert_int_equal(cn.scalarmult, 2);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* A wrong public half, the server's (i = 0) or the client's: refused at the server. */
	assert_int_equal(x25519_private_generate(opriv), 0);
	assert_int_equal(x25519_public_from_private(opub, opriv), 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(relay_conn_server_init_pair(&s, spriv, i ? spub : opub, NULL), 0);
		assert_int_equal(
		    relay_conn_client_init_pair(&c, cpriv, i ? opub : cpub, NULL, NULL), 0);
		n = take_output(&s, buf, sizeof(buf));
		assert_int_equal(feed(&c, buf, n, 1000, &d, &ev), 0);
		n = take_output(&c, buf, sizeof(buf));
		assert_int_equal(feed(&s, buf, n, 1000, &d, &ev), -EACCES);
		assert_int_equal(ev, 0);
		relay_conn_clear(&c);
		relay_conn_clear(&s);
	}
}

/* Feeds p to c in two pieces cut at cut; returns the events seen, asserting no error. */
static unsigned feed_cut(struct relay_conn *c, const uint8_t *p, size_t len, size_t cut,
			 struct relay_msg *m)
{
	unsigned ev = 0;

	assert_int_equal(feed(c, p, cut, len, m, &ev), 0);
	assert_int_equal(feed(c, p + cut, len - cut, len, m, &ev), 0);
	return ev;
}

/* Every handshake frame split at every point. */
static void test_handshake_every_split(void **state)
{
	uint8_t skey[RELAY_HS_OUT_MAX], cinfo[RELAY_HS_OUT_MAX], sinfo[RELAY_HS_OUT_MAX];
	struct relay_conn c, s;
	struct relay_msg m;
	size_t kn, cn, in;

	(void)state;
	keys();
	cn = client_info(&c, &s, cpriv, NULL, NULL, cinfo);
	kn = take_output(&s, skey, sizeof(skey)); /* nothing: already delivered */
	assert_int_equal(kn, 0);
	relay_conn_clear(&c);
	for (size_t cut = 0; cut <= cn; cut++) {
		/* The same server-key each time (fixed challenge), so the recorded frames stay
		 * valid. */
		assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
		assert_int_equal(relay_conn_set_challenge_for_test(&s, (const uint8_t[32]){7}), 0);
		assert_int_equal(relay_conn_client_init(&c, cpriv, spub, NULL), 0);
		kn = take_output(&s, skey, sizeof(skey));
		assert_int_equal(feed_cut(&c, skey, kn, cut % (kn + 1), &m), 0);
		cn = take_output(&c, cinfo, sizeof(cinfo));
		assert_int_equal(feed_cut(&s, cinfo, cn, cut, &m), 1);
		assert_int_equal(m.type, RELAY_CLIENT_INFO);
		assert_int_equal(relay_conn_server_accept(&s, &limits), 0);
		in = take_output(&s, sinfo, sizeof(sinfo));
		assert_int_equal(feed_cut(&c, sinfo, in, cut % (in + 1), &m), 1);
		assert_int_equal(m.type, RELAY_SERVER_INFO);
		assert_true(relay_conn_established(&c));
		relay_conn_clear(&c);
		relay_conn_clear(&s);
	}
}

/* One message of every type that follows the handshake. */
static size_t sample_msgs(struct relay_msg *m)
{
	static const uint8_t data[1400] = {1, 2, 3};
	static const char text[] = "duplicate connection for this node key";
	size_t n = 0;

	memset(m, 0, 12 * sizeof(*m));
	m[n].type = RELAY_SEND_PACKET;
	memset(m[n].key, 0xd1, 32);
	m[n].data = data;
	m[n++].len = sizeof(data);
	m[n].type = RELAY_RECV_PACKET;
	memset(m[n].key, 0x51, 32);
	m[n].data = data;
	m[n++].len = 148;
	m[n].type = RELAY_FORWARD_PACKET;
	memset(m[n].key, 0x51, 32);
	memset(m[n].dst, 0xd1, 32);
	m[n].data = data;
	m[n++].len = 32;
	m[n++].type = RELAY_KEEPALIVE;
	m[n].type = RELAY_NOTE_PREFERRED;
	m[n++].preferred = true;
	m[n].type = RELAY_PEER_GONE;
	memset(m[n].key, 0x99, 32);
	m[n++].reason = RELAY_GONE_NOT_HERE;
	m[n].type = RELAY_PEER_PRESENT;
	memset(m[n].key, 0x77, 32);
	m[n].ep.in6.sin6_family = AF_INET6;
	m[n].ep.in6.sin6_port = htons(41641);
	inet_pton(AF_INET6, "2001:db8::7", &m[n].ep.in6.sin6_addr);
	m[n++].flags = 1;
	m[n].type = RELAY_PEER_PRESENT;
	memset(m[n].key, 0x78, 32);
	m[n].ep.in4.sin_family = AF_INET;
	m[n].ep.in4.sin_port = htons(3478);
	inet_pton(AF_INET, "198.51.100.7", &m[n].ep.in4.sin_addr);
	n++;
	m[n++].type = RELAY_WATCH_CONNS;
	m[n].type = RELAY_CLOSE_PEER;
	memset(m[n++].key, 0x42, 32);
	m[n].type = RELAY_PING;
	memcpy(m[n++].ping, "12345678", 8);
	m[n].type = RELAY_HEALTH;
	m[n].data = (const uint8_t *)text;
	m[n++].len = sizeof(text) - 1;
	return n;
}

static void assert_msg_equal(const struct relay_msg *a, const struct relay_msg *b)
{
	assert_int_equal(a->type, b->type);
	assert_memory_equal(a->key, b->key, 32);
	assert_memory_equal(a->dst, b->dst, 32);
	assert_int_equal(a->len, b->len);
	if (a->len)
		assert_memory_equal(a->data, b->data, a->len);
	assert_memory_equal(a->ping, b->ping, 8);
	assert_int_equal(a->reason, b->reason);
	assert_int_equal(a->preferred, b->preferred);
	assert_true(endpoint_equal(&a->ep, &b->ep));
	assert_int_equal(a->flags, b->flags);
}

/* All sample frames back to back; sets offsets of each frame's start. */
static size_t sample_stream(uint8_t *buf, size_t cap, struct relay_msg *m, size_t *ret_n)
{
	size_t n = sample_msgs(m), off = 0;

	for (size_t i = 0; i < n; i++) {
		ssize_t r = relay_msg_encode(buf + off, cap - off, &m[i]);

		assert_true(r >= RELAY_HDR_LEN);
		off += (size_t)r;
	}
	*ret_n = n;
	return off;
}

static void test_msg_roundtrip(void **state)
{
	uint8_t buf[4096];
	struct relay_msg m[12], d;
	size_t n = sample_msgs(m);

	(void)state;
	for (size_t i = 0; i < n; i++) {
		ssize_t len = relay_msg_encode(buf, sizeof(buf), &m[i]);

		assert_true(len >= RELAY_HDR_LEN);
		assert_int_equal(buf[0], m[i].type);
		assert_int_equal(get_be32(buf + 1), (uint32_t)len - RELAY_HDR_LEN);
		assert_int_equal(
		    relay_msg_decode(&d, buf[0], buf + RELAY_HDR_LEN, (size_t)len - RELAY_HDR_LEN),
		    0);
		assert_msg_equal(&d, &m[i]);
		/* One byte short of room: refused, not truncated. */
		assert_int_equal(relay_msg_encode(buf, (size_t)len - 1, &m[i]), -ENOBUFS);
	}
	/* The bytes of a send-packet, spelled out. */
	assert_int_equal(relay_msg_encode(buf, sizeof(buf), &m[0]), 5 + 32 + 1400);
	assert_memory_equal(buf, ((uint8_t[]){0x04, 0, 0, 0x05, 0x98}), 5);
	/* A peer-gone of only a key means "disconnected". */
	assert_int_equal(relay_msg_decode(&d, RELAY_PEER_GONE, m[0].key, 32), 0);
	assert_int_equal(d.reason, RELAY_GONE_DISCONNECTED);
	/* A peer-present of only a key has no endpoint. */
	assert_int_equal(relay_msg_decode(&d, RELAY_PEER_PRESENT, m[0].key, 32), 0);
	assert_false(endpoint_is_set(&d.ep));
}

static void test_msg_malformed(void **state)
{
	static uint8_t p[RELAY_FRAME_MAX + 1], src[RELAY_PACKET_MAX + 1];
	struct relay_msg d,
	    big = {.type = RELAY_SEND_PACKET, .data = src, .len = RELAY_PACKET_MAX + 1};
	static const struct {
		uint8_t type;
		size_t len;
	} bad[] = {
	    {RELAY_SEND_PACKET, 31},
	    {RELAY_SEND_PACKET, 32 + RELAY_PACKET_MAX + 1},
	    {RELAY_RECV_PACKET, 0},
	    {RELAY_FORWARD_PACKET, 63},
	    {RELAY_KEEPALIVE, 1},
	    {RELAY_WATCH_CONNS, 4},
	    {RELAY_NOTE_PREFERRED, 0},
	    {RELAY_NOTE_PREFERRED, 2},
	    {RELAY_PEER_GONE, 31},
	    {RELAY_PEER_GONE, 34},
	    {RELAY_PEER_PRESENT, 33},
	    {RELAY_PEER_PRESENT, 49},
	    {RELAY_PEER_PRESENT, 52},
	    {RELAY_CLOSE_PEER, 33},
	    {RELAY_PING, 7},
	    {RELAY_PONG, 9},
	    {RELAY_HEALTH, RELAY_HEALTH_MAX + 1},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(relay_msg_decode(&d, bad[i].type, p, bad[i].len), -EBADMSG);
	p[0] = 2;
	assert_int_equal(relay_msg_decode(&d, RELAY_NOTE_PREFERRED, p, 1), -EBADMSG);
	/* Health text goes to logs: no control characters. */
	assert_int_equal(relay_msg_decode(&d, RELAY_HEALTH, (const uint8_t *)"a\nb", 3), -EBADMSG);
	assert_int_equal(relay_msg_decode(&d, RELAY_SERVER_KEY, p, 73), -EPROTO);
	assert_int_equal(relay_msg_decode(&d, RELAY_CLIENT_INFO, p, 100), -EPROTO);
	assert_int_equal(relay_msg_decode(&d, 0x7f, p, 3), -ENOTSUP);
	assert_int_equal(relay_msg_decode(&d, 0x00, p, 0), -ENOTSUP);
	assert_int_equal(relay_msg_encode(p, sizeof(p), &big), -EMSGSIZE);
	big.type = RELAY_SERVER_INFO;
	assert_int_equal(relay_msg_encode(p, sizeof(p), &big), -EINVAL);
	/* The largest packet fits, in both packet frames. */
	big.type = RELAY_FORWARD_PACKET;
	big.len = RELAY_PACKET_MAX;
	assert_int_equal(relay_msg_encode(p, sizeof(p), &big), -ENOBUFS); /* header + 65600 */
	big.type = RELAY_RECV_PACKET;
	assert_int_equal(relay_msg_encode(p, sizeof(p), &big),
			 RELAY_HDR_LEN + 32 + RELAY_PACKET_MAX);
	assert_int_equal(relay_msg_decode(&d, p[0], p + 5, 32 + RELAY_PACKET_MAX), 0);
}

/* Reads a whole stream split at cut (and then fed step bytes at a time); checks every frame. */
static void read_split(const uint8_t *buf, size_t len, size_t cut, size_t step,
		       const struct relay_msg *want, size_t n)
{
	struct relay_reader r;
	struct relay_frame f;
	struct relay_msg d;
	size_t got = 0, off = 0;

	relay_reader_init(&r, RELAY_FRAME_MAX);
	while (off < len) {
		size_t end = off < cut ? MIN(cut, off + step) : MIN(len, off + step);
		const uint8_t *p = buf + off;
		size_t left = end - off;
		int ret;

		while ((ret = relay_reader_next(&r, &p, &left, &f)) == 1) {
			assert_true(got < n);
			assert_int_equal(relay_msg_decode(&d, f.type, f.data, f.len), 0);
			assert_msg_equal(&d, &want[got]);
			got++;
		}
		assert_int_equal(ret, 0);
		assert_int_equal(left, 0);
		off = end;
	}
	assert_int_equal(got, n);
	relay_reader_clear(&r);
}

static void test_reader_every_split(void **state)
{
	static uint8_t buf[8192];
	struct relay_msg m[12];
	size_t n, len = sample_stream(buf, sizeof(buf), m, &n);

	(void)state;
	for (size_t cut = 0; cut <= len; cut++)
		read_split(buf, len, cut, len, m, n);
	read_split(buf, len, len, 1, m, n);
	read_split(buf, len, len, 4, m, n);
	read_split(buf, len, len, 6, m, n);
}

/* A frame that arrives whole is handed out in place; a split one costs a buffer. */
static void test_reader_zero_copy(void **state)
{
	uint8_t buf[64];
	struct relay_msg m = {.type = RELAY_PING, .ping = "abcdefgh"};
	struct relay_reader r;
	struct relay_frame f;
	const uint8_t *p = buf;
	size_t left;

	(void)state;
	left = (size_t)relay_msg_encode(buf, sizeof(buf), &m);
	relay_reader_init(&r, RELAY_FRAME_MAX);
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), 1);
	assert_ptr_equal(f.data, buf + RELAY_HDR_LEN);
	assert_null(r.buf);
	assert_int_equal(left, 0);
	relay_reader_clear(&r);
}

static void test_reader_huge_length(void **state)
{
	static const uint8_t hdr[] = {RELAY_SEND_PACKET, 0xff, 0xff, 0xff, 0xff, 'x', 'y'};
	struct relay_reader r;
	struct relay_frame f;
	const uint8_t *p;
	size_t left;

	(void)state;
	/* All at once: refused on the header, nothing allocated. */
	relay_reader_init(&r, RELAY_FRAME_MAX);
	p = hdr;
	left = sizeof(hdr);
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), -EMSGSIZE);
	assert_null(r.buf);
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), -EMSGSIZE);
	relay_reader_clear(&r);
	/* A byte at a time: refused when the fifth byte arrives. */
	relay_reader_init(&r, RELAY_FRAME_MAX);
	for (size_t i = 0; i < 4; i++) {
		p = hdr + i;
		left = 1;
		assert_int_equal(relay_reader_next(&r, &p, &left, &f), 0);
	}
	p = hdr + 4;
	left = 1;
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), -EMSGSIZE);
	assert_null(r.buf);
	relay_reader_clear(&r);
	/* The cap is inclusive: RELAY_FRAME_MAX passes, one more does not. */
	uint8_t h2[5] = {RELAY_FORWARD_PACKET};
	put_be32(h2 + 1, RELAY_FRAME_MAX);
	relay_reader_init(&r, RELAY_FRAME_MAX);
	p = h2;
	left = 5;
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), 0);
	relay_reader_clear(&r);
	put_be32(h2 + 1, RELAY_FRAME_MAX + 1);
	relay_reader_init(&r, RELAY_FRAME_MAX);
	p = h2;
	left = 5;
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), -EMSGSIZE);
	relay_reader_clear(&r);
	/* Also when the whole oversized frame is in one input (the no-copy path). */
	static uint8_t whole[5 + RELAY_FRAME_MAX + 1] = {RELAY_FORWARD_PACKET};
	put_be32(whole + 1, RELAY_FRAME_MAX + 1);
	relay_reader_init(&r, RELAY_FRAME_MAX);
	p = whole;
	left = sizeof(whole);
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), -EMSGSIZE);
	relay_reader_clear(&r);
	put_be32(whole + 1, RELAY_HS_FRAME_MAX + 1);
	relay_reader_init(&r, RELAY_HS_FRAME_MAX);
	p = whole;
	left = 5 + RELAY_HS_FRAME_MAX + 1;
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), -EMSGSIZE);
	relay_reader_clear(&r);
}

/* The buffer of a split frame grows with what arrives, not with what the header claims. */
static void test_reader_grows_with_data(void **state)
{
	uint8_t h[5 + 100] = {RELAY_SEND_PACKET};
	struct relay_reader r;
	struct relay_frame f;
	const uint8_t *p = h;
	size_t left = sizeof(h);

	(void)state;
	put_be32(h + 1, RELAY_FRAME_MAX);
	relay_reader_init(&r, RELAY_FRAME_MAX);
	assert_int_equal(relay_reader_next(&r, &p, &left, &f), 0);
	assert_true(r.cap <= 256);
	relay_reader_clear(&r);
}

static void test_stream_both_ways(void **state)
{
	static uint8_t buf[8192];
	struct relay_conn c, s;
	struct relay_msg m[12], d;
	unsigned ev = 0;

	(void)state;
	keys();
	connect_pair(&c, &s, mesh_key, mesh_key, 1000);
	assert_true(relay_conn_is_mesh(&s));
	size_t n = sample_msgs(m);
	for (size_t i = 0; i < n; i++) {
		bool to_server = senders[m[i].type] & FROM_CLIENT;
		bool to_client = senders[m[i].type] & FROM_SERVER;
		ssize_t len = relay_msg_encode(buf, sizeof(buf), &m[i]);

		assert_true(len > 0);
		for (size_t step = 1; step <= (size_t)len; step += step < 40 ? 1 : 97) {
			if (to_server) {
				ev = 0;
				assert_int_equal(feed(&s, buf, (size_t)len, step, &d, &ev), 0);
				assert_int_equal(ev, 1);
				assert_msg_equal(&d, &m[i]);
			}
			if (to_client) {
				ev = 0;
				assert_int_equal(feed(&c, buf, (size_t)len, step, &d, &ev), 0);
				assert_int_equal(ev, 1);
				assert_msg_equal(&d, &m[i]);
			}
		}
	}
	relay_conn_clear(&c);
	relay_conn_clear(&s);
}

/* A frame the other side may not send kills the connection. */
static void test_wrong_direction(void **state)
{
	struct relay_msg m = {.type = RELAY_RECV_PACKET, .len = 0};
	struct relay_conn c, s;
	uint8_t buf[256];
	unsigned ev = 0;
	ssize_t len;

	(void)state;
	keys();
	connect_pair(&c, &s, NULL, NULL, 1000);
	len = relay_msg_encode(buf, sizeof(buf), &m);
	assert_int_equal(feed(&s, buf, (size_t)len, 1000, &m, &ev), -EPROTO);
	/* Dead for good. */
	assert_int_equal(feed(&s, buf, (size_t)len, 1000, &m, &ev), -EPROTO);
	assert_false(relay_conn_established(&s));
	m.type = RELAY_SEND_PACKET;
	len = relay_msg_encode(buf, sizeof(buf), &m);
	assert_int_equal(feed(&c, buf, (size_t)len, 1000, &m, &ev), -EPROTO);
	relay_conn_clear(&c);
	relay_conn_clear(&s);
	/* A second handshake frame after the handshake. */
	connect_pair(&c, &s, NULL, NULL, 1000);
	buf[0] = RELAY_CLIENT_INFO;
	put_be32(buf + 1, 0);
	assert_int_equal(feed(&s, buf, 5, 1000, &m, &ev), -EPROTO);
	buf[0] = RELAY_SERVER_KEY;
	assert_int_equal(feed(&c, buf, 5, 1000, &m, &ev), -EPROTO);
	relay_conn_clear(&c);
	relay_conn_clear(&s);
}

static void test_mesh_privileges(void **state)
{
	struct relay_msg m = {.type = RELAY_WATCH_CONNS}, d;
	static const uint8_t other[32] = {1};
	uint8_t buf[256], out[RELAY_HS_OUT_MAX];
	struct relay_conn c, s;
	unsigned ev = 0;
	ssize_t len;
	size_t n;

	(void)state;
	keys();
	/* A plain client may not use the mesh frames. */
	connect_pair(&c, &s, NULL, mesh_key, 1000);
	assert_false(relay_conn_is_mesh(&s));
	len = relay_msg_encode(buf, sizeof(buf), &m);
	assert_int_equal(feed(&s, buf, (size_t)len, 1000, &d, &ev), -EPERM);
	relay_conn_clear(&c);
	relay_conn_clear(&s);
	connect_pair(&c, &s, NULL, mesh_key, 1000);
	m.type = RELAY_FORWARD_PACKET;
	len = relay_msg_encode(buf, sizeof(buf), &m);
	assert_int_equal(feed(&s, buf, (size_t)len, 1000, &d, &ev), -EPERM);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* A wrong mesh key, or one where the server has none, is refused outright. */
	for (int i = 0; i < 2; i++) {
		n = client_info(&c, &s, cpriv, i ? mesh_key : other, i ? NULL : mesh_key, out);
		assert_int_equal(feed(&s, out, n, 1000, &d, &ev), -EACCES);
		relay_conn_clear(&c);
		relay_conn_clear(&s);
	}
}

/*
 * Mesh peers prove the mesh key to each other and never send it: a relay that
 * answers at a mesh peer's URL without being of the mesh learns nothing from the
 * client-info it can open, and the dialing relay refuses its server-info.
 */
static void test_mesh_mutual(void **state)
{
	uint8_t out[RELAY_HS_OUT_MAX], buf[RELAY_HS_OUT_MAX], pt[RELAY_HS_FRAME_MAX];
	struct relay_conn c, s;
	struct relay_msg d;
	unsigned ev = 0;
	ssize_t pn;
	size_t n;

	(void)state;
	keys();
	/* The stranger (no mesh key) opens the mesh client's box, as it can. */
	n = client_info(&c, &s, cpriv, mesh_key, NULL, out);
	memcpy(s.client_pub, cpub, 32);
	assert_int_equal(box_key_derive(&s, cpub), 0);
	pn = open_sealed(&s, RELAY_CLIENT_INFO, out + RELAY_HDR_LEN + 32, n - RELAY_HDR_LEN - 32,
			 pt);
	assert_true(pn > 0);
	assert_null(memmem(pt, (size_t)pn, mesh_key, 32));
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* The stranger takes the mesh client as a plain one: its server-info proves nothing. */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(relay_conn_client_init(&c, cpriv, NULL, mesh_key), 0);
	n = take_output(&s, buf, sizeof(buf));
	c.has_mesh_key = false; /* client-info without the proof the stranger would refuse */
	assert_int_equal(feed(&c, buf, n, 1000, &d, &ev), 0);
	c.has_mesh_key = true;
	n = take_output(&c, buf, sizeof(buf));
	assert_int_equal(feed(&s, buf, n, 1000, &d, &ev), 0);
	assert_int_equal(relay_conn_server_accept(&s, &limits), 0);
	n = take_output(&s, buf, sizeof(buf));
	assert_int_equal(feed(&c, buf, n, 1000, &d, &ev), -EACCES);
	assert_false(relay_conn_established(&c));
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* Both of the mesh: both ends know it. */
	connect_pair(&c, &s, mesh_key, mesh_key, 7);
	assert_true(relay_conn_is_mesh(&s));
	assert_true(relay_conn_is_mesh(&c));
	relay_conn_clear(&c);
	relay_conn_clear(&s);
}

/* The client waits for server-info: anything it sends before is a violation. */
static void test_early_bytes(void **state)
{
	uint8_t out[RELAY_HS_OUT_MAX + 5];
	struct relay_conn c, s;
	struct relay_msg d;
	unsigned ev = 0;
	size_t n;

	(void)state;
	keys();
	n = client_info(&c, &s, cpriv, NULL, NULL, out);
	/* client-info and a keepalive in one write */
	out[n] = RELAY_KEEPALIVE;
	put_be32(out + n + 1, 0);
	assert_int_equal(feed(&s, out, n + 5, 1000, &d, &ev), -EPROTO);
	assert_int_equal(ev, 1);
	assert_int_equal(relay_conn_server_accept(&s, &limits), -EPROTO);
	relay_conn_clear(&c);
	relay_conn_clear(&s);
}

static void test_garbage(void **state)
{
	static const struct {
		const char *p;
		size_t len;
	} garbage[] = {
	    {"GET /relay HTTP/1.1\r\nHost: relay.example\r\n\r\n", 44},
	    {"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 47},
	    {"\x02\x00\x00\x00\x00", 5},
	    {"\x7f\x00\x00\x00\x01z", 6},
	    {"\x00\x00\x00\x00\x00", 5},
	};
	/* A server-key frame of the right size with another protocol's magic. */
	uint8_t derp[RELAY_HDR_LEN + SERVER_KEY_LEN] = {
	    RELAY_SERVER_KEY, 0, 0, 0, SERVER_KEY_LEN, 'D', 'E', 'R', 'P', 0xf0, 0x9f, 0x94, 0x91};
	struct relay_conn c, s;
	struct relay_msg d;
	unsigned ev = 0;

	(void)state;
	keys();
	for (size_t i = 0; i < ARRAY_SIZE(garbage); i++) {
		const uint8_t *g = (const uint8_t *)garbage[i].p;
		size_t len = garbage[i].len;

		for (size_t step = 1; step <= len; step += 7) {
			const uint8_t *x = (const uint8_t *)"x";
			size_t one = 1;

			assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
			assert_int_equal(relay_conn_client_init(&c, cpriv, spub, NULL), 0);
			assert_true(feed(&s, g, len, step, &d, &ev) < 0);
			assert_true(feed(&c, g, len, step, &d, &ev) < 0);
			/* Dead for good. */
			assert_int_equal(relay_conn_feed(&s, &x, &one, &d), s.err);
			assert_int_equal(ev, 0);
			relay_conn_clear(&c);
			relay_conn_clear(&s);
		}
	}
	/* An HTTP request line is a frame of type 'G' and a length of "ET /": over the cap. */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(feed(&s, (const uint8_t *)garbage[0].p, garbage[0].len, 1000, &d, &ev),
			 -EMSGSIZE);
	relay_conn_clear(&s);
	/* Another magic: not our protocol. */
	assert_int_equal(relay_conn_client_init(&c, cpriv, NULL, NULL), 0);
	assert_int_equal(feed(&c, derp, sizeof(derp), 1000, &d, &ev), -EPROTO);
	relay_conn_clear(&c);
}

/* Before the client is proven, nothing over RELAY_HS_FRAME_MAX is buffered. */
static void test_handshake_cap(void **state)
{
	uint8_t h[5] = {RELAY_CLIENT_INFO};
	struct relay_conn s;
	struct relay_msg d;
	unsigned ev = 0;

	(void)state;
	keys();
	put_be32(h + 1, RELAY_HS_FRAME_MAX + 1);
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(feed(&s, h, 5, 1, &d, &ev), -EMSGSIZE);
	relay_conn_clear(&s);
	put_be32(h + 1, 0xffffffff);
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(feed(&s, h, 5, 5, &d, &ev), -EMSGSIZE);
	relay_conn_clear(&s);
}

/* After the handshake, 2^32-1 is refused on the header too. */
static void test_established_huge_length(void **state)
{
	static const uint8_t h[5] = {RELAY_SEND_PACKET, 0xff, 0xff, 0xff, 0xff};
	struct relay_conn c, s;
	struct relay_msg d;
	unsigned ev = 0;

	(void)state;
	keys();
	connect_pair(&c, &s, NULL, NULL, 1000);
	assert_int_equal(feed(&s, h, 5, 5, &d, &ev), -EMSGSIZE);
	assert_int_equal(feed(&c, h, 5, 1, &d, &ev), -EMSGSIZE);
	assert_null(s.rd.buf);
	relay_conn_clear(&c);
	relay_conn_clear(&s);
}

/* Frames of unknown types are skipped after the handshake, refused during it. */
static void test_unknown_types(void **state)
{
	uint8_t buf[64] = {0x7f, 0, 0, 0, 3, 'a', 'b', 'c'};
	struct relay_msg ka = {.type = RELAY_KEEPALIVE}, d;
	struct relay_conn c, s;
	unsigned ev = 0;

	(void)state;
	keys();
	connect_pair(&c, &s, NULL, NULL, 1000);
	assert_int_equal(relay_msg_encode(buf + 8, sizeof(buf) - 8, &ka), 5);
	assert_int_equal(feed(&s, buf, 13, 1000, &d, &ev), 0);
	assert_int_equal(ev, 1);
	assert_int_equal(d.type, RELAY_KEEPALIVE);
	assert_int_equal(s.unknown_frames, 1);
	relay_conn_clear(&c);
	relay_conn_clear(&s);
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(feed(&s, buf, 8, 1000, &d, &ev), -EPROTO);
	relay_conn_clear(&s);
}

/* A client claiming a node key whose private half it does not hold is refused. */
static void test_unproven_key(void **state)
{
	uint8_t out[RELAY_HS_OUT_MAX], other_priv[32], other_pub[32];
	struct relay_conn c, s;
	struct relay_msg d;
	unsigned ev = 0;
	size_t n;

	(void)state;
	keys();
	assert_int_equal(x25519_private_generate(other_priv), 0);
	assert_int_equal(x25519_public_from_private(other_pub, other_priv), 0);

	/* A real client's proof with another key written over its claim. */
	n = client_info(&c, &s, cpriv, NULL, NULL, out);
	memcpy(out + RELAY_HDR_LEN, other_pub, 32);
	assert_int_equal(feed(&s, out, n, 1000, &d, &ev), -EACCES);
	assert_int_equal(ev, 0);
	assert_int_equal(relay_conn_peer_key(&s, out), -ENOENT);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* Sealed with a key derived from the wrong private key: a client guessing. */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(relay_conn_client_init(&c, other_priv, spub, NULL), 0);
	memcpy(c.client_pub, cpub, 32); /* claims cpub, seals with other_priv */
	n = take_output(&s, out, sizeof(out));
	assert_int_equal(feed(&c, out, n, 1000, &d, &ev), 0);
	n = take_output(&c, out, sizeof(out));
	assert_memory_equal(out + RELAY_HDR_LEN, cpub, 32);
	assert_int_equal(feed(&s, out, n, 1000, &d, &ev), -EACCES);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* A tampered box. */
	n = client_info(&c, &s, cpriv, NULL, NULL, out);
	out[n - 1] ^= 1;
	assert_int_equal(feed(&s, out, n, 1000, &d, &ev), -EACCES);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* A low-order key (all zeros) proves nothing. */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	memset(out, 0, sizeof(out));
	out[0] = RELAY_CLIENT_INFO;
	put_be32(out + 1, CLIENT_INFO_MIN + 3);
	assert_int_equal(feed(&s, out, RELAY_HDR_LEN + CLIENT_INFO_MIN + 3, 1000, &d, &ev),
			 -EACCES);
	relay_conn_clear(&s);
}

/* A client-info captured on one connection opens on no other: same relay or another. */
static void test_replay(void **state)
{
	uint8_t captured[RELAY_HS_OUT_MAX], s2priv[32];
	struct relay_conn c, s, s2;
	struct relay_msg d;
	unsigned ev = 0;
	size_t cn;

	(void)state;
	keys();
	cn = client_info(&c, &s, cpriv, NULL, NULL, captured);
	assert_int_equal(feed(&s, captured, cn, 1000, &d, &ev), 0);
	assert_int_equal(ev, 1); /* the original is accepted */
	relay_conn_clear(&s);

	/* The same relay, a new connection: a new challenge. */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(feed(&s, captured, cn, 1000, &d, &ev), -EACCES);
	relay_conn_clear(&s);

	/* Even with the same challenge, the same bytes twice on one connection: -EPROTO. */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(relay_conn_set_challenge_for_test(&s, c.challenge), 0);
	assert_int_equal(feed(&s, captured, cn, 1000, &d, &ev), 0);
	assert_int_equal(ev, 2);
	assert_int_equal(feed(&s, captured, cn, 1000, &d, &ev), -EPROTO);
	relay_conn_clear(&s);

	/* Another relay (another key), even one that copied the challenge. */
	assert_int_equal(x25519_private_generate(s2priv), 0);
	assert_int_equal(relay_conn_server_init(&s2, s2priv, NULL), 0);
	assert_int_equal(relay_conn_set_challenge_for_test(&s2, c.challenge), 0);
	assert_int_equal(feed(&s2, captured, cn, 1000, &d, &ev), -EACCES);
	relay_conn_clear(&s2);
	relay_conn_clear(&c);
}

/*
 * The client side: a relay that is not the pinned one, and one that replays a
 * server-key and a server-info it cannot have made (it lacks the private key).
 */
static void test_forged_server(void **state)
{
	uint8_t out[RELAY_HS_OUT_MAX * 2], skey[RELAY_HS_OUT_MAX], sinfo[RELAY_HS_OUT_MAX];
	uint8_t other_pub[32], other_priv[32];
	struct relay_conn c, s;
	struct relay_msg d;
	unsigned ev = 0;
	size_t n, kn, in;

	(void)state;
	keys();
	assert_int_equal(x25519_private_generate(other_priv), 0);
	assert_int_equal(x25519_public_from_private(other_pub, other_priv), 0);
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(relay_conn_client_init(&c, cpriv, other_pub, NULL), 0);
	n = take_output(&s, out, sizeof(out));
	assert_int_equal(feed(&c, out, n, 1000, &d, &ev), -EACCES);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* Record a real server's key and info... */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(relay_conn_client_init(&c, cpriv, spub, NULL), 0);
	kn = take_output(&s, skey, sizeof(skey));
	assert_int_equal(feed(&c, skey, kn, 1000, &d, &ev), 0);
	n = take_output(&c, out, sizeof(out));
	ev = 0;
	assert_int_equal(feed(&s, out, n, 1000, &d, &ev), 0);
	assert_int_equal(ev, 1);
	assert_int_equal(relay_conn_server_accept(&s, &limits), 0);
	in = take_output(&s, sinfo, sizeof(sinfo));
	relay_conn_clear(&c);
	relay_conn_clear(&s);
	/*
	 * ...and play them verbatim to the same client on a new connection: the
	 * server-info is bound to the old client-info's nonce.
	 */
	assert_int_equal(relay_conn_client_init(&c, cpriv, spub, NULL), 0);
	assert_int_equal(feed(&c, skey, kn, 1000, &d, &ev), 0);
	assert_int_equal(feed(&c, sinfo, in, 1000, &d, &ev), -EACCES);
	assert_false(relay_conn_established(&c));
	relay_conn_clear(&c);
	/* A server-info before server-key is out of order. */
	assert_int_equal(relay_conn_client_init(&c, cpriv, spub, NULL), 0);
	assert_int_equal(feed(&c, sinfo, in, 1000, &d, &ev), -EPROTO);
	relay_conn_clear(&c);
}

static void test_versions(void **state)
{
	uint8_t out[RELAY_HS_OUT_MAX], pt[8];
	struct relay_conn c, s;
	struct relay_msg d;
	unsigned ev = 0;
	size_t n, pt_len = 0;

	(void)state;
	keys();
	/* An older server. */
	assert_int_equal(relay_conn_server_init(&s, spriv, NULL), 0);
	assert_int_equal(relay_conn_client_init(&c, cpriv, spub, NULL), 0);
	n = take_output(&s, out, sizeof(out));
	out[RELAY_HDR_LEN + RELAY_MAGIC_LEN] = 0;
	assert_int_equal(feed(&c, out, n, 1000, &d, &ev), -EPROTONOSUPPORT);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* A newer client (version 9, and an item this version does not know) gets version 1. */
	client_info(&c, &s, cpriv, NULL, NULL, out);
	info_put(pt, &pt_len, 0x40, "zz", 2);
	info_put(pt, &pt_len, INFO_VERSION, (const uint8_t[]){9}, 1);
	assert_int_equal(out_sealed(&c, RELAY_CLIENT_INFO, c.client_pub, 32, pt, pt_len), 0);
	n = take_output(&c, out, sizeof(out));
	ev = 0;
	assert_int_equal(feed(&s, out, n, 1000, &d, &ev), 0);
	assert_int_equal(ev, 1);
	assert_int_equal(relay_conn_server_accept(&s, &limits), 0);
	assert_int_equal(s.version, 1);
	n = take_output(&s, out, sizeof(out));
	ev = 0;
	assert_int_equal(feed(&c, out, n, 1000, &d, &ev), 0);
	assert_int_equal(ev, 1);
	assert_int_equal(c.version, 1);
	relay_conn_clear(&c);
	relay_conn_clear(&s);

	/* A server that picks a version other than the lower of both. */
	for (uint8_t v = 0; v < 3; v += 2) {
		n = client_info(&c, &s, cpriv, NULL, NULL, out);
		ev = 0;
		assert_int_equal(feed(&s, out, n, 1000, &d, &ev), 0);
		assert_int_equal(ev, 1);
		pt_len = 0;
		info_put(pt, &pt_len, INFO_VERSION, &v, 1);
		assert_int_equal(out_sealed(&s, RELAY_SERVER_INFO, NULL, 0, pt, pt_len), 0);
		n = take_output(&s, out, sizeof(out));
		assert_int_equal(feed(&c, out, n, 1000, &d, &ev), -EPROTONOSUPPORT);
		relay_conn_clear(&c);
		relay_conn_clear(&s);
	}

	/* An older client, a client-info without a version, or with the version twice. */
	static const uint8_t bad[][6] = {
	    {INFO_VERSION, 1, 0}, {0x40, 0}, {1, 1, 1, 1, 1, 1}, {1, 2, 1, 1}};
	static const size_t bad_len[] = {3, 2, 6, 4};
	static const int bad_err[] = {-EPROTONOSUPPORT, -EBADMSG, -EBADMSG, -EBADMSG};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		client_info(&c, &s, cpriv, NULL, NULL, out);
		assert_int_equal(
		    out_sealed(&c, RELAY_CLIENT_INFO, c.client_pub, 32, bad[i], bad_len[i]), 0);
		n = take_output(&c, out, sizeof(out));
		assert_int_equal(feed(&s, out, n, 1000, &d, &ev), bad_err[i]);
		relay_conn_clear(&c);
		relay_conn_clear(&s);
	}
}

/* The node wraps a datagram into a send-packet in the packet's headroom, without a copy. */
static void test_pkt_push(void **state)
{
	struct pkt_pool *pool = pkt_pool_new(1);
	struct relay_msg m = {.type = RELAY_SEND_PACKET}, d;
	uint8_t want[RELAY_PACKET_HDR_LEN + 100];
	struct pkt *p;
	uint8_t *data;

	(void)state;
	assert_non_null(pool);
	assert_int_equal(pkt_pool_get(pool, &p, 1), 1);
	/* As the WireGuard sender leaves it: a 16-byte header pushed into the headroom. */
	p->data -= 16;
	p->len = 100;
	memset(p->data, 0xab, p->len);
	data = p->data;
	memset(m.key, 0x5a, 32);
	m.data = data;
	m.len = 100;
	assert_int_equal(relay_msg_encode(want, sizeof(want), &m), sizeof(want));
	assert_int_equal(relay_pkt_push_send(p, m.key), 0);
	assert_ptr_equal(p->data, data - RELAY_PACKET_HDR_LEN);
	assert_int_equal(p->len, sizeof(want));
	assert_memory_equal(p->data, want, sizeof(want));
	assert_int_equal(relay_msg_decode(&d, p->data[0], p->data + 5, p->len - 5), 0);
	assert_ptr_equal(d.data, data);
	/* No room left for another header. */
	assert_int_equal(relay_pkt_push_send(p, m.key), -ENOBUFS);
	pkt_free(&p, 1);
	pkt_pool_free(pool);
	assert_int_equal(relay_packet_header_put(want, RELAY_PING, m.key, 1), -EINVAL);
	assert_int_equal(
	    relay_packet_header_put(want, RELAY_RECV_PACKET, m.key, RELAY_PACKET_MAX + 1),
	    -EMSGSIZE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_handshake),
	    cmocka_unit_test(test_handshake_x25519),
	    cmocka_unit_test(test_handshake_every_split),
	    cmocka_unit_test(test_msg_roundtrip),
	    cmocka_unit_test(test_msg_malformed),
	    cmocka_unit_test(test_reader_every_split),
	    cmocka_unit_test(test_reader_zero_copy),
	    cmocka_unit_test(test_reader_huge_length),
	    cmocka_unit_test(test_reader_grows_with_data),
	    cmocka_unit_test(test_stream_both_ways),
	    cmocka_unit_test(test_wrong_direction),
	    cmocka_unit_test(test_mesh_privileges),
	    cmocka_unit_test(test_mesh_mutual),
	    cmocka_unit_test(test_early_bytes),
	    cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_handshake_cap),
	    cmocka_unit_test(test_established_huge_length),
	    cmocka_unit_test(test_unknown_types),
	    cmocka_unit_test(test_unproven_key),
	    cmocka_unit_test(test_replay),
	    cmocka_unit_test(test_forged_server),
	    cmocka_unit_test(test_versions),
	    cmocka_unit_test(test_pkt_push),
	};

	if (crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
