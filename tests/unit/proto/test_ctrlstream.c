/* SPDX-License-Identifier: MIT */
/*
 * The control channel in memory: client and server through any chunking, big
 * and many small messages, and the ways a peer can break it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.c"

enum chunking { CHUNK_ALL, CHUNK_ONE, CHUNK_RANDOM };

struct inbox {
	size_t n;
	size_t total;
	uint8_t *last;
	size_t last_len;
};

static uint8_t cpriv[32], cpub[32], spriv[32], spub[32];

static void keys(void)
{
	assert_int_equal(x25519_private_generate(cpriv), 0);
	assert_int_equal(x25519_public_from_private(cpub, cpriv), 0);
	assert_int_equal(x25519_private_generate(spriv), 0);
	assert_int_equal(x25519_public_from_private(spub, spriv), 0);
}

static void take(struct ctrlstream *to, struct inbox *box)
{
	const char *m = NULL;
	size_t len = 0;
	int r;

	while ((r = ctrlstream_recv(to, &m, &len)) == 1) {
		box->n++;
		box->total += len;
		free(box->last);
		box->last = malloc(len);
		assert_non_null(box->last);
		memcpy(box->last, m, len);
		box->last_len = len;
	}
	assert_int_equal(r, 0);
}

/* Moves all pending output of from into to; returns 0 or the first error of to. */
static int pump(struct ctrlstream *from, struct ctrlstream *to, enum chunking ch, struct inbox *box)
{
	const uint8_t *data;
	uint8_t *copy;
	size_t len, off = 0;
	int ret = 0;

	assert_int_equal(ctrlstream_output(from, &data, &len), 0);
	copy = malloc(len ? len : 1);
	assert_non_null(copy);
	memcpy(copy, data, len);
	ctrlstream_output_consume(from, len);
	while (off < len) {
		size_t n = len - off;
		ssize_t r;

		if (ch == CHUNK_ONE)
			n = 1;
		else if (ch == CHUNK_RANDOM) {
			size_t cut = (size_t)(rand() % 3000) + 1;

			n = MIN(n, cut);
		}
		/* feed may stop early: keep feeding the rest of this chunk */
		while (n > 0) {
			r = ctrlstream_feed(to, copy + off, n);
			if (r < 0) {
				ret = (int)r;
				goto out;
			}
			off += (size_t)r;
			n -= (size_t)r;
			take(to, box);
		}
	}
	take(to, box);
out:
	free(copy);
	return ret;
}

static void connect_pair(struct ctrlstream **c, struct ctrlstream **s, enum chunking ch)
{
	struct inbox box = {0};
	uint8_t k[32];

	keys();
	*c = ctrlstream_client_new(cpriv, spub);
	*s = ctrlstream_server_new(spriv);
	assert_non_null(*c);
	assert_non_null(*s);
	assert_int_equal(ctrlstream_remote_key(*s, k), -ENOENT);
	assert_int_equal(pump(*c, *s, ch, &box), 0);
	assert_true(ctrlstream_established(*s));
	assert_int_equal(ctrlstream_remote_key(*s, k), 0);
	assert_memory_equal(k, cpub, 32);
	assert_false(ctrlstream_established(*c));
	assert_int_equal(pump(*s, *c, ch, &box), 0);
	assert_true(ctrlstream_established(*c));
	assert_int_equal(box.n, 0);
}

static void exchange(enum chunking ch)
{
	struct ctrlstream *c, *s;
	struct inbox sbox = {0}, cbox = {0};
	char msg[64];
	int i, len;

	connect_pair(&c, &s, ch);
	for (i = 0; i < 20; i++) {
		len = snprintf(msg, sizeof(msg), "{\"type\":\"keepalive\",\"i\":%d}", i);
		assert_int_equal(ctrlstream_send(c, msg, (size_t)len), 0);
		assert_int_equal(pump(c, s, ch, &sbox), 0);
		assert_int_equal(sbox.n, (size_t)i + 1);
		assert_int_equal(sbox.last_len, (size_t)len);
		assert_memory_equal(sbox.last, msg, (size_t)len);
		assert_int_equal(ctrlstream_send(s, msg, (size_t)len), 0);
		assert_int_equal(pump(s, c, ch, &cbox), 0);
		assert_int_equal(cbox.n, (size_t)i + 1);
		assert_memory_equal(cbox.last, msg, (size_t)len);
	}
	free(sbox.last);
	free(cbox.last);
	ctrlstream_free(c);
	ctrlstream_free(s);
}

static void test_chunk_all(void **state)
{
	(void)state;
	exchange(CHUNK_ALL);
}

static void test_chunk_one(void **state)
{
	(void)state;
	exchange(CHUNK_ONE);
}

static void test_chunk_random(void **state)
{
	int i;

	(void)state;
	for (i = 0; i < 20; i++)
		exchange(CHUNK_RANDOM);
}

/* Messages sent before the handshake are queued, then sealed. */
static void test_send_before_handshake(void **state)
{
	struct ctrlstream *c, *s;
	struct inbox box = {0};

	(void)state;
	keys();
	c = ctrlstream_client_new(cpriv, spub);
	s = ctrlstream_server_new(spriv);
	assert_int_equal(ctrlstream_send(c, "{\"type\":\"register\"}", 19), 0);
	/* frame 1 only */
	assert_int_equal(pump(c, s, CHUNK_ALL, &box), 0);
	assert_int_equal(box.n, 0);
	assert_int_equal(pump(s, c, CHUNK_ALL, &box), 0);
	assert_int_equal(pump(c, s, CHUNK_ALL, &box), 0);
	assert_int_equal(box.n, 1);
	assert_memory_equal(box.last, "{\"type\":\"register\"}", 19);
	free(box.last);
	ctrlstream_free(c);
	ctrlstream_free(s);
}

static void test_big_message(void **state)
{
	struct ctrlstream *c, *s;
	struct inbox box = {0};
	size_t len = 5U << 20, i;
	uint8_t *big = malloc(len);

	(void)state;
	assert_non_null(big);
	for (i = 0; i < len; i++)
		big[i] = (uint8_t)('a' + i % 26);
	connect_pair(&c, &s, CHUNK_ALL);
	assert_int_equal(ctrlstream_send(s, big, len), 0);
	assert_int_equal(ctrlstream_send(s, "{}", 2), 0);
	assert_int_equal(pump(s, c, CHUNK_RANDOM, &box), 0);
	assert_int_equal(box.n, 2);
	assert_int_equal(box.total, len + 2);
	/* check the big one by sending it back */
	assert_int_equal(ctrlstream_send(c, big, len), 0);
	assert_int_equal(pump(c, s, CHUNK_ALL, &box), 0);
	assert_int_equal(box.n, 3);
	assert_int_equal(box.last_len, len);
	assert_memory_equal(box.last, big, len);
	/* too big to send */
	assert_int_equal(ctrlstream_send(c, big, CTRL_MSG_MAX + 1), -EMSGSIZE);
	assert_int_equal(ctrlstream_send(c, big, 0), -EMSGSIZE);
	free(box.last);
	free(big);
	ctrlstream_free(c);
	ctrlstream_free(s);
}

static void test_many_small_in_one_frame(void **state)
{
	struct ctrlstream *c, *s;
	struct inbox box = {0};
	const uint8_t *data;
	size_t len;
	int i;

	(void)state;
	connect_pair(&c, &s, CHUNK_ALL);
	for (i = 0; i < 1000; i++)
		assert_int_equal(ctrlstream_send(c, "{\"type\":\"keepalive\"}", 20), 0);
	assert_int_equal(ctrlstream_output(c, &data, &len), 0);
	/* 24 kB of plaintext: one frame */
	assert_int_equal(len, 4 + 1000 * 24 + 16);
	assert_int_equal(pump(c, s, CHUNK_ALL, &box), 0);
	assert_int_equal(box.n, 1000);
	free(box.last);
	ctrlstream_free(c);
	ctrlstream_free(s);
}

static void test_tampered_frame(void **state)
{
	struct ctrlstream *c, *s;
	struct inbox box = {0};
	const uint8_t *data;
	uint8_t buf[256];
	size_t len;

	(void)state;
	connect_pair(&c, &s, CHUNK_ALL);
	assert_int_equal(ctrlstream_send(c, "{\"type\":\"keepalive\"}", 20), 0);
	assert_int_equal(ctrlstream_output(c, &data, &len), 0);
	memcpy(buf, data, len);
	buf[10] ^= 1;
	assert_int_equal(ctrlstream_feed(s, buf, len), -EBADMSG);
	/* dead for good */
	assert_int_equal(ctrlstream_feed(s, buf, len), -EBADMSG);
	assert_int_equal(ctrlstream_send(s, "{}", 2), -EBADMSG);
	assert_int_equal(ctrlstream_error(s), -EBADMSG);
	assert_false(ctrlstream_established(s));
	(void)box;
	ctrlstream_free(c);
	ctrlstream_free(s);
}

static void test_replayed_frame(void **state)
{
	struct ctrlstream *c, *s;
	struct inbox box = {0};
	const uint8_t *data;
	uint8_t buf[256];
	size_t len;

	(void)state;
	connect_pair(&c, &s, CHUNK_ALL);
	assert_int_equal(ctrlstream_send(c, "{\"type\":\"keepalive\"}", 20), 0);
	assert_int_equal(ctrlstream_output(c, &data, &len), 0);
	memcpy(buf, data, len);
	assert_int_equal(ctrlstream_feed(s, buf, len), (ssize_t)len);
	take(s, &box);
	assert_int_equal(box.n, 1);
	assert_int_equal(ctrlstream_feed(s, buf, len), -EBADMSG);
	free(box.last);
	ctrlstream_free(c);
	ctrlstream_free(s);
}

static void test_bad_lengths(void **state)
{
	struct ctrlstream *c, *s;
	uint8_t big[4] = {0, 1, 0, 0}, zero[4] = {0};
	uint8_t msg[8];
	const uint8_t *data;
	size_t len;

	(void)state;
	/* frame length over 65535 on a fresh server */
	keys();
	s = ctrlstream_server_new(spriv);
	assert_int_equal(ctrlstream_feed(s, big, 4), -EMSGSIZE);
	ctrlstream_free(s);
	s = ctrlstream_server_new(spriv);
	assert_int_equal(ctrlstream_feed(s, zero, 4), -EPROTO);
	ctrlstream_free(s);
	/* a handshake frame of the wrong size */
	s = ctrlstream_server_new(spriv);
	{
		uint8_t f[4 + 10] = {0, 0, 0, 10};

		assert_int_equal(ctrlstream_feed(s, f, sizeof(f)), -EBADMSG);
	}
	ctrlstream_free(s);

	/* message length over CTRL_MSG_MAX inside a valid frame */
	connect_pair(&c, &s, CHUNK_ALL);
	/* 4-byte header claiming 16 MiB + 1, sent as the start of a message body */
	msg[0] = 0x01;
	msg[1] = 0x00;
	msg[2] = 0x00;
	msg[3] = 0x01;
	/* smuggle a raw header through: send a message whose bytes are the header of the next */
	assert_int_equal(ctrlstream_send(c, msg, 4), 0);
	assert_int_equal(ctrlstream_output(c, &data, &len), 0);
	assert_int_equal(len, 4 + 8 + 16);
	/* valid: a 4-byte message (content is not JSON, but the stream does not care) */
	{
		struct inbox box = {0};

		assert_int_equal(pump(c, s, CHUNK_ALL, &box), 0);
		assert_int_equal(box.n, 1);
		free(box.last);
	}
	ctrlstream_free(c);
	ctrlstream_free(s);
}

/*
 * Before the handshake only the handshake frame is valid, of an exact size: a
 * header that says anything else is refused at once, before its bytes come
 * (the server used to reserve up to 64 KiB and wait for them).
 */
static void test_handshake_frame_size(void **state)
{
	static const uint32_t lens[] = { 1, 95, 97, 4096, 65535 };
	struct ctrlstream *s, *c;
	uint8_t hdr[4];

	(void)state;
	keys();
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		s = ctrlstream_server_new(spriv);
		put_be32(hdr, lens[i]);
		assert_int_equal(ctrlstream_feed(s, hdr, 4), -EBADMSG);
		ctrlstream_free(s);
	}
	/* The client expects 48 bytes for frame 2. */
	c = ctrlstream_client_new(cpriv, spub);
	{
		const uint8_t *d;
		size_t len;

		assert_int_equal(ctrlstream_output(c, &d, &len), 0);
		ctrlstream_output_consume(c, len);
	}
	put_be32(hdr, 96);
	assert_int_equal(ctrlstream_feed(c, hdr, 4), -EBADMSG);
	ctrlstream_free(c);
	/* 96 to the server is a frame in progress. */
	s = ctrlstream_server_new(spriv);
	put_be32(hdr, 96);
	assert_int_equal(ctrlstream_feed(s, hdr, 4), 4);
	ctrlstream_free(s);
}

/* The node key proof: bound to the node key, the server key and this session. */
static void test_node_key_proof(void **state)
{
	struct ctrlstream *c, *s, *c2, *s2;
	uint8_t npriv[32], npub[32], other[32], proof[32], hh_c[32], hh_s[32];

	(void)state;
	assert_int_equal(x25519_private_generate(npriv), 0);
	assert_int_equal(x25519_public_from_private(npub, npriv), 0);
	assert_int_equal(x25519_private_generate(other), 0);
	c = ctrlstream_client_new(cpriv, spub);
	assert_int_equal(ctrlstream_node_key_prove(c, npriv, proof), -ENOTCONN);
	ctrlstream_free(c);

	connect_pair(&c, &s, CHUNK_ALL);
	assert_int_equal(ctrlstream_handshake_hash(c, hh_c), 0);
	assert_int_equal(ctrlstream_handshake_hash(s, hh_s), 0);
	assert_memory_equal(hh_c, hh_s, 32);
	assert_int_equal(ctrlstream_node_key_prove(c, npriv, proof), 0);
	assert_int_equal(ctrlstream_node_key_check(s, spriv, npub, proof), 0);
	/* Wrong key, flipped bit, wrong end. */
	assert_int_equal(ctrlstream_node_key_check(s, spriv, cpub, proof), -EACCES);
	proof[5] ^= 1;
	assert_int_equal(ctrlstream_node_key_check(s, spriv, npub, proof), -EACCES);
	proof[5] ^= 1;
	assert_int_equal(ctrlstream_node_key_check(c, spriv, npub, proof), -EINVAL);
	/* A proof made with another private key. */
	{
		uint8_t bad[32];

		assert_int_equal(ctrlstream_node_key_prove(c, other, bad), 0);
		assert_int_equal(ctrlstream_node_key_check(s, spriv, npub, bad), -EACCES);
	}
	/* A low-order node key (all zero) proves nothing. */
	{
		uint8_t zero[32] = { 0 };

		assert_int_equal(ctrlstream_node_key_check(s, spriv, zero, proof), -EINVAL);
	}
	/* Replayed on another session of the same machine: refused. */
	connect_pair(&c2, &s2, CHUNK_ALL);
	assert_int_equal(ctrlstream_node_key_check(s2, spriv, npub, proof), -EACCES);
	ctrlstream_free(c2);
	ctrlstream_free(s2);
	ctrlstream_free(c);
	ctrlstream_free(s);
}

/* Seals arbitrary plaintext with the client's transport key, bypassing ctrlstream_send. */
static size_t raw_frame(struct ctrlstream *c, const uint8_t *pt, size_t len, uint8_t *out)
{
	put_be32(out, (uint32_t)(len + 16));
	assert_int_equal(noise_cipher_encrypt(&c->tx, out + 4, pt, len), (int)len + 16);
	return len + 20;
}

static void test_oversized_message(void **state)
{
	struct ctrlstream *c, *s;
	uint8_t pt[8], f[64];
	size_t n;

	(void)state;
	/* a header claiming CTRL_MSG_MAX + 1 */
	connect_pair(&c, &s, CHUNK_ALL);
	put_be32(pt, CTRL_MSG_MAX + 1);
	n = raw_frame(c, pt, 4, f);
	assert_int_equal(ctrlstream_feed(s, f, n), -EMSGSIZE);
	ctrlstream_free(c);
	ctrlstream_free(s);
	/* a zero-length message */
	connect_pair(&c, &s, CHUNK_ALL);
	put_be32(pt, 0);
	n = raw_frame(c, pt, 4, f);
	assert_int_equal(ctrlstream_feed(s, f, n), -EPROTO);
	ctrlstream_free(c);
	ctrlstream_free(s);
	/* CTRL_MSG_MAX exactly is accepted and costs only what arrived */
	connect_pair(&c, &s, CHUNK_ALL);
	put_be32(pt, CTRL_MSG_MAX);
	memcpy(pt + 4, "{\"a\"", 4);
	n = raw_frame(c, pt, 8, f);
	assert_int_equal(ctrlstream_feed(s, f, n), (ssize_t)n);
	assert_true(s->msg_cap <= 8);
	/* an empty transport frame is harmless */
	n = raw_frame(c, pt, 0, f);
	assert_int_equal(ctrlstream_feed(s, f, n), (ssize_t)n);
	assert_int_equal(ctrlstream_error(s), 0);
	ctrlstream_free(c);
	ctrlstream_free(s);
}

/* A per-stream limit (the server's 64 KiB) is enforced at the length prefix. */
static void test_max_message(void **state)
{
	struct ctrlstream *c, *s;
	struct inbox box = {0};
	uint8_t pt[8], f[64];
	const char *json;
	char *big;
	size_t n;

	(void)state;
	connect_pair(&c, &s, CHUNK_ALL);
	assert_int_equal(ctrlstream_set_max_message(s, 0), -EINVAL);
	assert_int_equal(ctrlstream_set_max_message(s, CTRL_MSG_MAX + 1), -EINVAL);
	assert_int_equal(ctrlstream_set_max_message(s, 65536), 0);
	/* exactly the limit passes, through several frames */
	big = malloc(65536);
	assert_non_null(big);
	memset(big, ' ', 65536);
	big[0] = '{';
	big[65535] = '}';
	assert_int_equal(ctrlstream_send(c, big, 65536), 0);
	assert_int_equal(pump(c, s, CHUNK_RANDOM, &box), 0);
	assert_int_equal(box.n, 1);
	assert_int_equal(box.last_len, 65536);
	free(big);
	/* one byte more dies on the header alone: nothing is buffered for it */
	put_be32(pt, 65537);
	memcpy(pt + 4, "{\"a\"", 4);
	n = raw_frame(c, pt, 8, f);
	assert_int_equal(ctrlstream_feed(s, f, n), -EMSGSIZE);
	assert_int_equal(ctrlstream_error(s), -EMSGSIZE);
	assert_int_equal(ctrlstream_recv(s, &json, &n), -EMSGSIZE);
	/* the other direction keeps the default */
	assert_int_equal(c->msg_max, CTRL_MSG_MAX);
	free(box.last);
	ctrlstream_free(c);
	ctrlstream_free(s);
}

static void test_wrong_server_key(void **state)
{
	struct ctrlstream *c, *s;
	struct inbox box = {0};
	uint8_t other[32];

	(void)state;
	keys();
	assert_int_equal(x25519_private_generate(other), 0);
	c = ctrlstream_client_new(cpriv, spub);
	s = ctrlstream_server_new(other);
	assert_int_equal(pump(c, s, CHUNK_ALL, &box), -EBADMSG);
	assert_false(ctrlstream_established(s));
	ctrlstream_free(c);
	ctrlstream_free(s);
}

/* The server must not speak first, and a forged frame 2 is refused. */
static void test_client_side_errors(void **state)
{
	struct ctrlstream *c, *s;
	struct inbox box = {0};
	uint8_t junk[4 + 48] = {0, 0, 0, 48};

	(void)state;
	keys();
	c = ctrlstream_client_new(cpriv, spub);
	assert_int_equal(ctrlstream_feed(c, junk, sizeof(junk)), -EPROTO);
	ctrlstream_free(c);
	c = ctrlstream_client_new(cpriv, spub);
	s = ctrlstream_server_new(spriv);
	assert_int_equal(pump(c, s, CHUNK_ALL, &box), 0);
	junk[10] = 1;
	assert_int_equal(ctrlstream_feed(c, junk, sizeof(junk)), -EBADMSG);
	ctrlstream_free(c);
	ctrlstream_free(s);
	ctrlstream_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_chunk_all),
		cmocka_unit_test(test_chunk_one),
		cmocka_unit_test(test_chunk_random),
		cmocka_unit_test(test_send_before_handshake),
		cmocka_unit_test(test_big_message),
		cmocka_unit_test(test_many_small_in_one_frame),
		cmocka_unit_test(test_tampered_frame),
		cmocka_unit_test(test_replayed_frame),
		cmocka_unit_test(test_bad_lengths),
		cmocka_unit_test(test_oversized_message),
		cmocka_unit_test(test_max_message),
		cmocka_unit_test(test_wrong_server_key),
		cmocka_unit_test(test_client_side_errors),
		cmocka_unit_test(test_handshake_frame_size),
		cmocka_unit_test(test_node_key_proof),
	};

	srand(1);
	if (crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
