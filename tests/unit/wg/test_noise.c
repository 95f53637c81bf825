/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "wg/internal.h"
#include "wg_harness.h"

/* The handshake state machine driven directly, without the device's send/receive paths. */

static struct h_node A, B;
static struct wg_peer *a_b, *b_a; /* A's peer B, B's peer A */

static int setup(void **state)
{
	(void)state;
	h_now = 10 * NSEC_PER_SEC;
	h_node_init(&A, 0, false);
	h_node_init(&B, 1, false);
	if (h_add_peer(&A, &B, false, NULL, 0) < 0 || h_add_peer(&B, &A, false, NULL, 0) < 0)
		return -1;
	a_b = wg_peer_lookup(A.dev, B.pub);
	b_a = wg_peer_lookup(B.dev, A.pub);
	return a_b && b_a ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	h_nodes_free(&A, &B);
	return 0;
}

static void initiate(struct message_handshake_initiation *init, uint64_t wall)
{
	A.dev->now_ns = B.dev->now_ns = h_now;
	assert_int_equal(wg_noise_handshake_create_initiation(A.dev, &a_b->handshake, init, wall),
			 0);
	assert_int_equal(le32_read(init), MESSAGE_HANDSHAKE_INITIATION);
}

static void test_handshake_keys_match(void **state)
{
	struct message_handshake_initiation init;
	struct message_handshake_response resp;
	struct noise_keypair *ka, *kb;
	int reason;

	(void)state;
	initiate(&init, H_WALL_BASE);
	assert_ptr_equal(wg_noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	assert_int_equal(wg_noise_handshake_create_response(B.dev, &b_a->handshake, &resp), 0);
	assert_int_equal(le32_read(&resp.receiver_index), le32_read(&init.sender_index));
	assert_ptr_equal(wg_noise_handshake_consume_response(A.dev, &resp), a_b);
	assert_int_equal(
	    wg_noise_handshake_begin_session(A.dev, &a_b->handshake, &a_b->keypairs, h_now), 0);
	assert_int_equal(
	    wg_noise_handshake_begin_session(B.dev, &b_a->handshake, &b_a->keypairs, h_now), 0);
	ka = a_b->keypairs.current;
	kb = b_a->keypairs.next; /* unconfirmed until the first data packet */
	assert_non_null(ka);
	assert_non_null(kb);
	assert_null(b_a->keypairs.current);
	assert_true(ka->initiator);
	assert_false(kb->initiator);
	assert_memory_equal(ka->send_key, kb->recv_key, 32);
	assert_memory_equal(ka->recv_key, kb->send_key, 32);
	assert_memory_not_equal(ka->send_key, ka->recv_key, 32);
	assert_int_equal(ka->remote_index, kb->entry.index);
	assert_int_equal(kb->remote_index, ka->entry.index);
	assert_ptr_equal(wg_index_lookup(A.dev, ka->entry.index, INDEX_KEYPAIR), &ka->entry);
	assert_true(wg_noise_received_with_keypair(B.dev, &b_a->keypairs, kb));
	assert_ptr_equal(b_a->keypairs.current, kb);
}

static void test_psk_mismatch(void **state)
{
	struct message_handshake_initiation init;
	struct message_handshake_response resp;
	int reason;

	(void)state;
	memset(b_a->handshake.preshared_key, 0x42, 32);
	initiate(&init, H_WALL_BASE);
	/* The initiation does not depend on the psk; the response does. */
	assert_ptr_equal(wg_noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	assert_int_equal(wg_noise_handshake_create_response(B.dev, &b_a->handshake, &resp), 0);
	assert_null(wg_noise_handshake_consume_response(A.dev, &resp));
	assert_int_equal(a_b->handshake.state, HANDSHAKE_CREATED_INITIATION);
}

static void test_tampered(void **state)
{
	struct message_handshake_initiation init, bad;
	struct message_handshake_response resp, badr;
	size_t i;
	int reason;

	(void)state;
	initiate(&init, H_WALL_BASE);
	/* Every byte from the ephemeral (the sender index is not authenticated by Noise) to the timestamp is authenticated. */
	for (i = 8; i < offsetof(struct message_handshake_initiation, macs); i += 7) {
		bad = init;
		((uint8_t *)&bad)[i] ^= 0x01;
		assert_null(wg_noise_handshake_consume_initiation(B.dev, &bad, h_now, &reason));
		assert_int_equal(reason, WG_DROP_RX_HANDSHAKE);
	}
	assert_ptr_equal(wg_noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	assert_int_equal(wg_noise_handshake_create_response(B.dev, &b_a->handshake, &resp), 0);
	for (i = 8; i < offsetof(struct message_handshake_response, macs); i += 5) {
		badr = resp;
		((uint8_t *)&badr)[i] ^= 0x80;
		assert_null(wg_noise_handshake_consume_response(A.dev, &badr));
	}
	assert_ptr_equal(wg_noise_handshake_consume_response(A.dev, &resp), a_b);
	/* A response is consumed once. */
	assert_null(wg_noise_handshake_consume_response(A.dev, &resp));
}

static void test_replayed_initiation(void **state)
{
	struct message_handshake_initiation init, older;
	int reason;

	(void)state;
	initiate(&older, H_WALL_BASE);
	initiate(&init, H_WALL_BASE + NSEC_PER_SEC);
	assert_ptr_equal(wg_noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	h_now += NSEC_PER_SEC;
	/* Same timestamp: replay. */
	assert_null(wg_noise_handshake_consume_initiation(B.dev, &init, h_now, &reason));
	assert_int_equal(reason, WG_DROP_RX_REPLAYED_HANDSHAKE);
	/* Older timestamp: replay too. */
	assert_null(wg_noise_handshake_consume_initiation(B.dev, &older, h_now, &reason));
	assert_int_equal(reason, WG_DROP_RX_REPLAYED_HANDSHAKE);
	/* Newer, but too soon after the last one consumed: flood. */
	initiate(&init, H_WALL_BASE + 2 * NSEC_PER_SEC);
	assert_ptr_equal(wg_noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	initiate(&init, H_WALL_BASE + 3 * NSEC_PER_SEC);
	assert_null(
	    wg_noise_handshake_consume_initiation(B.dev, &init, h_now + NSEC_PER_MSEC, &reason));
	assert_int_equal(reason, WG_DROP_RX_REPLAYED_HANDSHAKE);
	assert_ptr_equal(
	    wg_noise_handshake_consume_initiation(B.dev, &init, h_now + NSEC_PER_SEC / 10, &reason),
	    b_a);
}

static void test_tai64n(void **state)
{
	uint8_t t[12], u[12];
	static const uint8_t want[12] = { 0x40, 0, 0, 0, 0x65, 0x53, 0xf1, 0x0a,
					  0x3b, 0x00, 0x00, 0x00 };

	(void)state;
	/* 2023-11-14T22:13:20Z + 0.99 s: seconds + 2^62 + 10, nanoseconds rounded to 2^24. */
	wg_noise_tai64n(t, 1700000000ULL * NSEC_PER_SEC + 990000000ULL);
	assert_memory_equal(t, want, 12);
	wg_noise_tai64n(u, 1700000000ULL * NSEC_PER_SEC + 990000001ULL);
	assert_memory_equal(t, u, 12);
	wg_noise_tai64n(u, 1700000001ULL * NSEC_PER_SEC);
	assert_true(memcmp(u, t, 12) > 0);
}

static void test_no_identity(void **state)
{
	struct message_handshake_initiation init;
	struct wg_device_cfg cfg = { .has_private_key = true };
	int reason;

	(void)state;
	initiate(&init, H_WALL_BASE);
	/* Removing B's private key: nothing decrypts any more. */
	assert_int_equal(wg_device_apply(B.dev, &cfg, h_now), 0);
	assert_null(wg_noise_handshake_consume_initiation(B.dev, &init, h_now, &reason));
}

/* HASH(CONSTRUCTION) and HASH(that || IDENTIFIER): the values every implementation starts from. */
static const uint8_t spec_ck0[32] = {
	0x60, 0xe2, 0x6d, 0xae, 0xf3, 0x27, 0xef, 0xc0, 0x2e, 0xc3, 0x35, 0xe2,
	0xa0, 0x25, 0xd2, 0xd0, 0x16, 0xeb, 0x42, 0x06, 0xf8, 0x72, 0x77, 0xf5,
	0x2d, 0x38, 0xd1, 0x98, 0x8b, 0x78, 0xcd, 0x36,
};
static const uint8_t spec_h0[32] = {
	0x22, 0x11, 0xb3, 0x61, 0x08, 0x1a, 0xc5, 0x66, 0x69, 0x12, 0x43, 0xdb,
	0x45, 0x8a, 0xd5, 0x32, 0x2d, 0x9c, 0x6c, 0x66, 0x22, 0x93, 0xe8, 0xb7,
	0x0e, 0xe1, 0x9c, 0x65, 0xba, 0x07, 0x9e, 0xf3,
};

static void spec_hash(uint8_t h[32], const void *in, size_t len)
{
	struct blake2s_state s;

	blake2s_init(&s, 32);
	blake2s_update(&s, h, 32);
	blake2s_update(&s, in, len);
	blake2s_final(&s, h);
}

/*
 * The whitepaper's section 5.4 formulas, written out independently of noise.c, must open what
 * noise.c sends and arrive at the same keys: this pins the order of every MixHash/MixKey, the
 * psk placement, the mac1 key and the TAI64N plaintext.
 */
static void test_spec_derivation(void **state)
{
	struct message_handshake_initiation init;
	struct message_handshake_response resp;
	uint8_t ck[32], h[32], k[32], tau[32], dh[32], out[32], mackey[32], t_send[32], t_recv[32];
	uint8_t want_t[12], zero[16] = { 0 };
	uint8_t psk[32];
	struct noise_keypair *ka;
	struct blake2s_state bs;
	int reason;

	(void)state;
	memset(psk, 0x5a, 32);
	memcpy(a_b->handshake.preshared_key, psk, 32);
	memcpy(b_a->handshake.preshared_key, psk, 32);
	initiate(&init, H_WALL_BASE + 123456789);

	/* Initiation, as the responder B opens it. */
	blake2s(ck, 32, NOISE_CONSTRUCTION, strlen(NOISE_CONSTRUCTION), NULL, 0);
	assert_memory_equal(ck, spec_ck0, 32);
	memcpy(h, ck, 32);
	spec_hash(h, NOISE_IDENTIFIER, strlen(NOISE_IDENTIFIER));
	assert_memory_equal(h, spec_h0, 32);
	spec_hash(h, B.pub, 32);
	wg_kdf(ck, NULL, NULL, ck, init.unencrypted_ephemeral, 32);
	spec_hash(h, init.unencrypted_ephemeral, 32);
	assert_int_equal(x25519_shared(dh, B.priv, init.unencrypted_ephemeral), 0);
	wg_kdf(ck, k, NULL, ck, dh, 32);
	assert_int_equal(chacha20poly1305_decrypt(out, init.encrypted_static, 48, h, 32, 0, k), 0);
	assert_memory_equal(out, A.pub, 32);
	spec_hash(h, init.encrypted_static, 48);
	assert_int_equal(x25519_shared(dh, B.priv, A.pub), 0);
	wg_kdf(ck, k, NULL, ck, dh, 32);
	assert_int_equal(chacha20poly1305_decrypt(out, init.encrypted_timestamp, 28, h, 32, 0, k),
			 0);
	wg_noise_tai64n(want_t, H_WALL_BASE + 123456789);
	assert_memory_equal(out, want_t, 12);
	spec_hash(h, init.encrypted_timestamp, 28);
	assert_memory_equal(h, a_b->handshake.hash, 32);
	assert_memory_equal(ck, a_b->handshake.chaining_key, 32);
	/* mac1 = MAC(HASH("mac1----" || S_pub_responder), message up to mac1); no cookie yet. */
	wg_cookie_add_mac_to_packet(&a_b->cookie, (uint8_t *)&init, sizeof(init), h_now);
	blake2s_init(&bs, 32);
	blake2s_update(&bs, "mac1----", 8);
	blake2s_update(&bs, B.pub, 32);
	blake2s_final(&bs, mackey);
	blake2s(out, 16, &init, offsetof(struct message_handshake_initiation, macs), mackey, 32);
	assert_memory_equal(out, init.macs.mac1, 16);
	assert_memory_equal(init.macs.mac2, zero, 16);

	/* Response, as the initiator A opens it (with its ephemeral private key). */
	assert_ptr_equal(wg_noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	assert_int_equal(wg_noise_handshake_create_response(B.dev, &b_a->handshake, &resp), 0);
	wg_kdf(ck, NULL, NULL, ck, resp.unencrypted_ephemeral, 32);
	spec_hash(h, resp.unencrypted_ephemeral, 32);
	assert_int_equal(x25519_shared(dh, a_b->handshake.ephemeral_private,
				       resp.unencrypted_ephemeral), 0);
	wg_kdf(ck, NULL, NULL, ck, dh, 32);
	assert_int_equal(x25519_shared(dh, A.priv, resp.unencrypted_ephemeral), 0);
	wg_kdf(ck, NULL, NULL, ck, dh, 32);
	wg_kdf(ck, tau, k, ck, psk, 32);
	spec_hash(h, tau, 32);
	assert_int_equal(chacha20poly1305_decrypt(out, resp.encrypted_nothing, 16, h, 32, 0, k), 0);
	/* Transport keys: (T_send_i, T_recv_i) = KDF2(C, empty). */
	wg_kdf(t_send, t_recv, NULL, ck, NULL, 0);
	assert_ptr_equal(wg_noise_handshake_consume_response(A.dev, &resp), a_b);
	assert_int_equal(
	    wg_noise_handshake_begin_session(A.dev, &a_b->handshake, &a_b->keypairs, h_now), 0);
	ka = a_b->keypairs.current;
	assert_memory_equal(ka->send_key, t_send, 32);
	assert_memory_equal(ka->recv_key, t_recv, 32);
	assert_int_equal(ka->send_counter, 0);
	/* mac1 of the response is keyed with the initiator's public key. */
	blake2s_init(&bs, 32);
	blake2s_update(&bs, "mac1----", 8);
	blake2s_update(&bs, A.pub, 32);
	blake2s_final(&bs, mackey);
	wg_cookie_add_mac_to_packet(&b_a->cookie, (uint8_t *)&resp, sizeof(resp), h_now);
	blake2s(out, 16, &resp, offsetof(struct message_handshake_response, macs), mackey, 32);
	assert_memory_equal(out, resp.macs.mac1, 16);
}

static struct endpoint ep4(uint32_t addr, uint16_t port)
{
	struct endpoint ep = { 0 };

	ep.in4.sin_family = AF_INET;
	ep.in4.sin_addr.s_addr = htonl(addr);
	ep.in4.sin_port = htons(port);
	return ep;
}

/* 20 per second with a burst of 5, per IPv4 address or IPv6 /64; a hard table size. */
static void test_ratelimiter(void **state)
{
	struct ratelimiter *rl = wg_ratelimiter_new();
	struct endpoint a = ep4(0xc0000201, 1), a2 = ep4(0xc0000201, 2), b = ep4(0xc0000202, 1);
	struct endpoint v6 = { 0 }, v6b;
	uint64_t t = 10 * NSEC_PER_SEC;
	unsigned i, allowed;

	(void)state;
	assert_non_null(rl);
	for (i = 0; i < RATELIMITER_PACKETS_BURSTABLE; i++)
		assert_true(
		    wg_ratelimiter_allow(rl, i % 2 ? &a : &a2, t)); /* ports do not matter */
	assert_false(wg_ratelimiter_allow(rl, &a, t));
	assert_true(wg_ratelimiter_allow(rl, &b, t));
	t += NSEC_PER_SEC / RATELIMITER_PACKETS_PER_SECOND;
	assert_true(wg_ratelimiter_allow(rl, &a, t));
	assert_false(wg_ratelimiter_allow(rl, &a, t));
	/* Over a long run, 20 per second. */
	for (i = 0, allowed = 0; i < 1000; i++, t += NSEC_PER_MSEC)
		allowed += wg_ratelimiter_allow(rl, &a, t);
	assert_true(allowed >= 19 && allowed <= 21);

	v6.in6.sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8:1:2::1", &v6.in6.sin6_addr);
	v6b = v6;
	v6b.in6.sin6_addr.s6_addr[15] = 0x99; /* same /64 */
	for (i = 0; i < RATELIMITER_PACKETS_BURSTABLE; i++)
		assert_true(wg_ratelimiter_allow(rl, i % 2 ? &v6 : &v6b, t));
	assert_false(wg_ratelimiter_allow(rl, &v6b, t));

	/* The table is bounded: when full, new sources wait until idle entries are collected. */
	t += 2 * NSEC_PER_SEC;
	for (i = 0; i < RATELIMITER_MAX_ENTRIES; i++) {
		struct endpoint e = ep4(0xc6120000 + i, 1); /* 198.18.0.0/15 */

		assert_true(wg_ratelimiter_allow(rl, &e, t));
	}
	assert_false(wg_ratelimiter_allow(rl, &b, t));
	t += 2 * NSEC_PER_SEC;
	assert_true(wg_ratelimiter_allow(rl, &b, t));
	wg_ratelimiter_free(rl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_handshake_keys_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_psk_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replayed_initiation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tai64n, setup, teardown),
		cmocka_unit_test_setup_teardown(test_spec_derivation, setup, teardown),
		cmocka_unit_test(test_ratelimiter),
		cmocka_unit_test_setup_teardown(test_no_identity, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
