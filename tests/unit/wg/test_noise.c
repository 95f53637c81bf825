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
	h_node_free(&A);
	h_node_free(&B);
	return 0;
}

static void initiate(struct message_handshake_initiation *init, uint64_t wall)
{
	A.dev->now_ns = B.dev->now_ns = h_now;
	assert_int_equal(noise_handshake_create_initiation(A.dev, &a_b->handshake, init, wall), 0);
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
	assert_ptr_equal(noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	assert_int_equal(noise_handshake_create_response(B.dev, &b_a->handshake, &resp), 0);
	assert_int_equal(le32_read(&resp.receiver_index), le32_read(&init.sender_index));
	assert_ptr_equal(noise_handshake_consume_response(A.dev, &resp), a_b);
	assert_int_equal(noise_handshake_begin_session(A.dev, &a_b->handshake, &a_b->keypairs,
						       h_now), 0);
	assert_int_equal(noise_handshake_begin_session(B.dev, &b_a->handshake, &b_a->keypairs,
						       h_now), 0);
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
	assert_true(noise_received_with_keypair(B.dev, &b_a->keypairs, kb));
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
	assert_ptr_equal(noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	assert_int_equal(noise_handshake_create_response(B.dev, &b_a->handshake, &resp), 0);
	assert_null(noise_handshake_consume_response(A.dev, &resp));
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
		assert_null(noise_handshake_consume_initiation(B.dev, &bad, h_now, &reason));
		assert_int_equal(reason, WG_DROP_RX_HANDSHAKE);
	}
	assert_ptr_equal(noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	assert_int_equal(noise_handshake_create_response(B.dev, &b_a->handshake, &resp), 0);
	for (i = 8; i < offsetof(struct message_handshake_response, macs); i += 5) {
		badr = resp;
		((uint8_t *)&badr)[i] ^= 0x80;
		assert_null(noise_handshake_consume_response(A.dev, &badr));
	}
	assert_ptr_equal(noise_handshake_consume_response(A.dev, &resp), a_b);
	/* A response is consumed once. */
	assert_null(noise_handshake_consume_response(A.dev, &resp));
}

static void test_replayed_initiation(void **state)
{
	struct message_handshake_initiation init, older;
	int reason;

	(void)state;
	initiate(&older, H_WALL_BASE);
	initiate(&init, H_WALL_BASE + NSEC_PER_SEC);
	assert_ptr_equal(noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	h_now += NSEC_PER_SEC;
	/* Same timestamp: replay. */
	assert_null(noise_handshake_consume_initiation(B.dev, &init, h_now, &reason));
	assert_int_equal(reason, WG_DROP_RX_REPLAYED_HANDSHAKE);
	/* Older timestamp: replay too. */
	assert_null(noise_handshake_consume_initiation(B.dev, &older, h_now, &reason));
	assert_int_equal(reason, WG_DROP_RX_REPLAYED_HANDSHAKE);
	/* Newer, but too soon after the last one consumed: flood. */
	initiate(&init, H_WALL_BASE + 2 * NSEC_PER_SEC);
	assert_ptr_equal(noise_handshake_consume_initiation(B.dev, &init, h_now, &reason), b_a);
	initiate(&init, H_WALL_BASE + 3 * NSEC_PER_SEC);
	assert_null(noise_handshake_consume_initiation(B.dev, &init, h_now + NSEC_PER_MSEC, &reason));
	assert_int_equal(reason, WG_DROP_RX_REPLAYED_HANDSHAKE);
	assert_ptr_equal(noise_handshake_consume_initiation(B.dev, &init,
							    h_now + NSEC_PER_SEC / 10, &reason),
			 b_a);
}

static void test_tai64n(void **state)
{
	uint8_t t[12], u[12];
	static const uint8_t want[12] = { 0x40, 0, 0, 0, 0x65, 0x53, 0xf1, 0x0a,
					  0x3b, 0x00, 0x00, 0x00 };

	(void)state;
	/* 2023-11-14T22:13:20Z + 0.99 s: seconds + 2^62 + 10, nanoseconds rounded to 2^24. */
	noise_tai64n(t, 1700000000ULL * NSEC_PER_SEC + 990000000ULL);
	assert_memory_equal(t, want, 12);
	noise_tai64n(u, 1700000000ULL * NSEC_PER_SEC + 990000001ULL);
	assert_memory_equal(t, u, 12);
	noise_tai64n(u, 1700000001ULL * NSEC_PER_SEC);
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
	assert_null(noise_handshake_consume_initiation(B.dev, &init, h_now, &reason));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_handshake_keys_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_psk_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tampered, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replayed_initiation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tai64n, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_identity, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
