/* SPDX-License-Identifier: MIT */
/*
 * The relay protocol as either end sees it. Input: byte 0 picks the mode,
 * byte 1 the chunk size the rest is fed in (its low 7 bits + 1, so split
 * frames and the reader's buffer are exercised as much as whole ones) and,
 * in its top bit, whether the server holds back a proven client (admission
 * pending) instead of accepting it; the rest is data:
 *   0: server, raw bytes from the first byte after the upgrade (client-info);
 *   1: client, raw bytes from the first byte (server-key, then server-info);
 *   2: server after a real handshake (with a mesh client unless the top bit
 *      of byte 1 is set): raw stream bytes;
 *   3: client after a real handshake: raw stream bytes;
 *   4: server: the data is the plaintext of a client-info, sealed for real;
 *   5: client: the data is the plaintext of a server-info, sealed for real.
 * Keys and the server's challenge are fixed so that seeds with a real
 * client-info stay valid. Every message handed out must encode and decode back
 * to itself.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/relay.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t cpriv[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t spriv[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
static const uint8_t challenge[32] = {0xc0, 0xff, 0xee};
static const uint8_t mesh[32] = {0x6d, 0x65, 0x73, 0x68};
static const struct relay_limits limits = {60000, 1 << 20, 2 << 20, 10000};

static void check_roundtrip(const struct relay_msg *m)
{
	static uint8_t buf[RELAY_HDR_LEN + RELAY_FRAME_MAX];
	struct relay_msg d;
	ssize_t n;

	if (m->type == RELAY_CLIENT_INFO || m->type == RELAY_SERVER_INFO)
		return;
	n = relay_msg_encode(buf, sizeof(buf), m);
	if (n < RELAY_HDR_LEN || get_be32(buf + 1) != (size_t)n - RELAY_HDR_LEN)
		abort();
	if (relay_msg_decode(&d, buf[0], buf + RELAY_HDR_LEN, (size_t)n - RELAY_HDR_LEN) < 0)
		abort();
	if (d.type != m->type || memcmp(d.key, m->key, 32) || memcmp(d.dst, m->dst, 32) ||
	    d.len != m->len || (m->len && memcmp(d.data, m->data, m->len)) ||
	    memcmp(d.ping, m->ping, 8) || d.reason != m->reason || d.preferred != m->preferred ||
	    !endpoint_equal(&d.ep, &m->ep) || d.flags != m->flags)
		abort();
}

/* Feeds p in chunks, accepting a proven client if asked. 0 or the engine's error. */
static int feed_all(struct relay_conn *c, const uint8_t *p, size_t len, size_t chunk, bool accept)
{
	struct relay_msg m;

	while (len > 0) {
		size_t n = MIN(len, chunk), left = n;
		const uint8_t *q = p;
		int r;

		while ((r = relay_conn_feed(c, &q, &left, &m)) == 1) {
			check_roundtrip(&m);
			if (m.type == RELAY_CLIENT_INFO && accept &&
			    relay_conn_server_accept(c, &limits) < 0)
				abort();
		}
		if (r < 0)
			return r;
		if (left)
			abort();
		p += n;
		len -= n;
	}
	return 0;
}

/* Moves the handshake output of from to to. */
static int deliver(struct relay_conn *from, struct relay_conn *to, size_t chunk, bool accept)
{
	const uint8_t *p;
	size_t n;
	int r;

	relay_conn_output(from, &p, &n);
	r = feed_all(to, p, n, chunk, accept);
	relay_conn_output_consume(from, n);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct relay_conn c, s;
	size_t chunk;
	uint8_t mode;
	bool accept;

	if (size < 2 || crypto_init() < 0)
		return 0;
	mode = data[0] % 6;
	chunk = (size_t)(data[1] & 0x7f) + 1;
	accept = !(data[1] & 0x80);
	data += 2;
	size -= 2;
	if (relay_conn_server_init(&s, spriv, mesh) < 0 ||
	    relay_conn_set_challenge_for_test(&s, challenge) < 0 ||
	    relay_conn_client_init(&c, cpriv, NULL, mode == 2 && accept ? mesh : NULL) < 0)
		abort();
	switch (mode) {
	case 0:
		feed_all(&s, data, size, chunk, accept);
		break;
	case 1:
		feed_all(&c, data, size, chunk, false);
		break;
	case 2:
	case 3:
		if (deliver(&s, &c, chunk, true) < 0 || deliver(&c, &s, chunk, true) < 0 ||
		    deliver(&s, &c, chunk, true) < 0)
			abort();
		if (!relay_conn_established(&c) || !relay_conn_established(&s) ||
		    relay_conn_is_mesh(&s) != (mode == 2 && accept))
			abort();
		feed_all(mode == 2 ? &s : &c, data, size, chunk, false);
		break;
	case 4:
		if (size > RELAY_HS_FRAME_MAX - CLIENT_INFO_MIN || deliver(&s, &c, chunk, true) < 0)
			break;
		/* The fuzzer's plaintext instead of the client's own. */
		relay_conn_output_consume(&c, RELAY_HS_OUT_MAX);
		if (out_sealed(&c, RELAY_CLIENT_INFO, c.client_pub, RELAY_KEY_LEN, data, size) < 0)
			abort();
		deliver(&c, &s, chunk, accept);
		break;
	case 5:
		/* Not accepted: the server's box key is still there to seal the fuzzer's info. */
		if (size > RELAY_HS_FRAME_MAX - SERVER_INFO_MIN)
			break;
		if (deliver(&s, &c, chunk, true) < 0 || deliver(&c, &s, chunk, false) < 0)
			abort();
		if (out_sealed(&s, RELAY_SERVER_INFO, NULL, 0, data, size) < 0)
			abort();
		deliver(&s, &c, chunk, true);
		break;
	}
	relay_conn_clear(&c);
	relay_conn_clear(&s);
	return 0;
}
