/* SPDX-License-Identifier: MIT */
/*
 * Flow-log batches (proto/flowbatch.c): the bytes of a known batch, a round
 * trip, and refusal of every malformed or tampered form: a flipped bit
 * anywhere fails the signature, another node's key fails, a length that does
 * not match the count, undefined bits, a body over the limit.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "proto/flowbatch.h"

static uint8_t priv[32], pub[32], other_pub[32];

static void keys(void)
{
	uint8_t other[32];

	memset(priv, 7, sizeof(priv));
	memset(other, 8, sizeof(other));
	assert_int_equal(ed25519_public_from_private(pub, priv), 0);
	assert_int_equal(ed25519_public_from_private(other_pub, other), 0);
}

static void records_make(struct flowbatch_record *r, unsigned n)
{
	memset(r, 0, n * sizeof(*r));
	for (unsigned i = 0; i < n; i++) {
		r[i].proto = 6;
		r[i].flags = i & 1 ? FLOWBATCH_F_INBOUND : 0;
		r[i].src[10] = r[i].src[11] = 0xff;
		r[i].src[12] = 100;
		r[i].src[13] = 64;
		r[i].src[15] = 1;
		memcpy(r[i].dst, r[i].src, 16);
		r[i].dst[15] = 2;
		r[i].src_port = (uint16_t)(40000 + i);
		r[i].dst_port = 5201;
		memset(r[i].peer_key, 0xab, 32);
		r[i].tx_packets = 10 + i;
		r[i].tx_bytes = 10000 + i;
		r[i].rx_packets = 9;
		r[i].rx_bytes = 900;
		r[i].first_ns = 1800000000000000000ULL;
		r[i].last_ns = r[i].first_ns + 5000000000ULL;
		r[i].denied = i;
	}
}

static void test_layout_and_round_trip(void **state)
{
	struct flowbatch_record rec[3], got;
	struct flowbatch b = {.node_id = 42,
			      .seq = 7,
			      .start_ns = 1,
			      .end_ns = 2,
			      .flows_dropped = 3,
			      .batches_dropped = 4,
			      .n_records = 3};
	struct flowbatch d;
	uint8_t buf[FLOWBATCH_LEN(3)], h1[32], h2[32];
	int len;

	(void)state;
	keys();
	records_make(rec, 3);
	memset(b.prev_hash, 0x55, sizeof(b.prev_hash));
	b.records = rec;
	assert_int_equal(FLOWBATCH_RECORD_LEN, 124);
	assert_int_equal(flowbatch_encode(&b, priv, buf, sizeof(buf) - 1), -ENOSPC);
	len = flowbatch_encode(&b, priv, buf, sizeof(buf));
	assert_int_equal(len, FLOWBATCH_HEADER_LEN + 3 * 124 + 64);
	/* Bytes on the wire: magic, big-endian node id and seq, the count before the records. */
	assert_memory_equal(buf, "TFB1\0\0\0\0\0\0\0\x2a\0\0\0\0\0\0\0\x07", 20);
	assert_int_equal(buf[FLOWBATCH_HEADER_LEN - 1], 3);
	assert_int_equal(flowbatch_peek(buf, (size_t)len, &d), 0);
	assert_int_equal(d.node_id, 42);
	assert_int_equal(d.seq, 7);
	assert_int_equal(d.n_records, 3);
	assert_int_equal(d.flows_dropped, 3);
	assert_int_equal(d.batches_dropped, 4);
	assert_memory_equal(d.prev_hash, b.prev_hash, 32);
	assert_int_equal(flowbatch_verify(buf, (size_t)len, pub), 0);
	assert_int_equal(flowbatch_verify(buf, (size_t)len, other_pub), -EBADMSG);
	for (unsigned i = 0; i < 3; i++) {
		flowbatch_record_get(buf, i, &got);
		assert_memory_equal(&got, &rec[i], sizeof(got));
	}
	/* The chain: a different batch hashes differently. */
	flowbatch_hash(buf, (size_t)len, h1);
	b.seq = 8;
	assert_int_equal(flowbatch_encode(&b, priv, buf, sizeof(buf)), len);
	flowbatch_hash(buf, (size_t)len, h2);
	assert_memory_not_equal(h1, h2, 32);
}

/* Every single-bit change anywhere fails the structure check or the signature. */
static void test_every_bit_flip_refused(void **state)
{
	struct flowbatch_record rec[2];
	struct flowbatch b = {.node_id = 1, .seq = 1, .n_records = 2}, d;
	uint8_t buf[FLOWBATCH_LEN(2)];
	int len;

	(void)state;
	keys();
	records_make(rec, 2);
	b.records = rec;
	len = flowbatch_encode(&b, priv, buf, sizeof(buf));
	assert_true(len > 0);
	for (int i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit += 3) {
			buf[i] ^= (uint8_t)(1 << bit);
			assert_true(flowbatch_peek(buf, (size_t)len, &d) < 0 ||
				    flowbatch_verify(buf, (size_t)len, pub) == -EBADMSG);
			buf[i] ^= (uint8_t)(1 << bit);
		}
	}
	assert_int_equal(flowbatch_verify(buf, (size_t)len, pub), 0);
}

static void test_malformed(void **state)
{
	struct flowbatch_record rec[1];
	struct flowbatch b = {.node_id = 1, .seq = 1, .n_records = 1}, d;
	uint8_t buf[FLOWBATCH_LEN(1) + 1];
	uint8_t *big;
	int len;

	(void)state;
	keys();
	records_make(rec, 1);
	b.records = rec;
	len = flowbatch_encode(&b, priv, buf, sizeof(buf));
	assert_int_equal(flowbatch_peek(buf, (size_t)len - 1, &d), -EBADMSG);
	assert_int_equal(flowbatch_peek(buf, (size_t)len + 1, &d), -EBADMSG);
	assert_int_equal(flowbatch_peek(buf, 10, &d), -EBADMSG);
	assert_int_equal(flowbatch_peek(buf, 0, &d), -EBADMSG);
	buf[FLOWBATCH_HEADER_LEN - 1] = 2; /* the count says two, one is there */
	assert_int_equal(flowbatch_peek(buf, (size_t)len, &d), -EBADMSG);
	buf[FLOWBATCH_HEADER_LEN - 1] = 1;
	buf[FLOWBATCH_HEADER_LEN + 3] = 1; /* reserved */
	assert_int_equal(flowbatch_peek(buf, (size_t)len, &d), -EBADMSG);
	buf[FLOWBATCH_HEADER_LEN + 3] = 0;
	buf[FLOWBATCH_HEADER_LEN + 2] = 0x80; /* an undefined flag */
	assert_int_equal(flowbatch_peek(buf, (size_t)len, &d), -EBADMSG);
	/* Sequence 0 does not exist. */
	b.seq = 0;
	len = flowbatch_encode(&b, priv, buf, sizeof(buf));
	assert_int_equal(flowbatch_peek(buf, (size_t)len, &d), -EBADMSG);
	/* Over the limit: refused on its length alone. */
	big = calloc(1, FLOWBATCH_MAX_LEN + 1);
	assert_non_null(big);
	memcpy(big, "TFB1", 4);
	assert_int_equal(flowbatch_peek(big, FLOWBATCH_MAX_LEN + 1, &d), -EMSGSIZE);
	free(big);
	b.n_records = FLOWBATCH_RECORDS_MAX + 1;
	assert_int_equal(flowbatch_encode(&b, priv, buf, sizeof(buf)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_layout_and_round_trip),
	    cmocka_unit_test(test_every_bit_flip_refused),
	    cmocka_unit_test(test_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
