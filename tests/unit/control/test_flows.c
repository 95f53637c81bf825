/* SPDX-License-Identifier: MIT */
/*
 * The collector's decisions (control/flows.c): which batches are admitted and
 * which refused (each refusal counted, the chain untouched), gaps and broken
 * chains flagged; and the pairing of both ends' reports against a table of
 * cases: loss within bounds confirms, under-reporting and one-sided reports
 * are flagged, a sole report that names no peer is not.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "control/flows.h"
#include "crypto/crypto.h"

static uint8_t priv_a[32], pub_a[32], priv_b[32], pub_b[32];

static void keys(void)
{
	memset(priv_a, 1, 32);
	memset(priv_b, 2, 32);
	assert_int_equal(ed25519_public_from_private(pub_a, priv_a), 0);
	assert_int_equal(ed25519_public_from_private(pub_b, priv_b), 0);
}

/* A one-record batch of node, linked to prev (NULL: zeros); its length. */
static int batch(uint8_t *buf, uint64_t node, uint64_t seq, const uint8_t *prev,
		 const uint8_t *priv)
{
	struct flowbatch_record r = {.proto = 17, .tx_packets = 1, .tx_bytes = 100};
	struct flowbatch b = {.node_id = node, .seq = seq, .n_records = 1, .records = &r};

	if (prev)
		memcpy(b.prev_hash, prev, FLOWBATCH_HASH_LEN);
	return flowbatch_encode(&b, priv, buf, FLOWBATCH_LEN(1));
}

static void test_admit(void **state)
{
	struct flows_stats st = {0};
	struct flows_chain ch = {0}, before;
	struct flowbatch h;
	uint8_t b1[FLOWBATCH_LEN(1)], b2[FLOWBATCH_LEN(1)], b3[FLOWBATCH_LEN(1)];
	uint8_t h1[32], h2[32];
	unsigned flags;
	int n1, n2, n3;

	(void)state;
	keys();
	n1 = batch(b1, 5, 1, NULL, priv_a);
	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b1, (size_t)n1, &h, &flags), 0);
	assert_int_equal(flags, 0);
	assert_int_equal(h.seq, 1);
	flowbatch_hash(b1, (size_t)n1, h1);
	assert_memory_equal(ch.last_hash, h1, 32);
	n2 = batch(b2, 5, 2, h1, priv_a);
	flowbatch_hash(b2, (size_t)n2, h2);

	before = ch;
	/* Refusals leave the chain as it was. */
	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b1, (size_t)n1, &h, &flags), -EALREADY);
	assert_int_equal(flows_admit(&st, &ch, 6, pub_a, b2, (size_t)n2, &h, &flags), -EPERM);
	assert_int_equal(flows_admit(&st, &ch, 5, pub_b, b2, (size_t)n2, &h, &flags),
			 -EKEYREJECTED);
	assert_int_equal(flows_admit(&st, &ch, 5, NULL, b2, (size_t)n2, &h, &flags), -EKEYREJECTED);
	b2[FLOWBATCH_HEADER_LEN + 40] ^= 1; /* a record edited in transit */
	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b2, (size_t)n2, &h, &flags),
			 -EKEYREJECTED);
	b2[FLOWBATCH_HEADER_LEN + 40] ^= 1;
	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b2, (size_t)n2 - 1, &h, &flags), -EBADMSG);
	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b2, FLOWBATCH_MAX_LEN + 1, &h, &flags),
			 -EMSGSIZE);
	/* B signs a batch in A's name: refused as B's sender, and as A's (wrong key). */
	n3 = batch(b3, 5, 2, h1, priv_b);
	assert_int_equal(flows_admit(&st, &ch, 7, pub_b, b3, (size_t)n3, &h, &flags), -EPERM);
	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b3, (size_t)n3, &h, &flags),
			 -EKEYREJECTED);
	assert_memory_equal(&ch, &before, sizeof(ch));
	assert_int_equal(st.replayed, 1);
	assert_int_equal(st.wrong_sender, 2);
	assert_int_equal(st.bad_signature, 4);
	assert_int_equal(st.malformed, 1);
	assert_int_equal(st.oversized, 1);

	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b2, (size_t)n2, &h, &flags), 0);
	assert_int_equal(flags, 0);
	/* Seq 4 after 2: admitted, the gap flagged. */
	n3 = batch(b3, 5, 4, h2, priv_a);
	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b3, (size_t)n3, &h, &flags), 0);
	assert_int_equal(flags, FLOWS_F_GAP);
	/* Seq 5 that does not link to 4: admitted, the break flagged. */
	n3 = batch(b3, 5, 5, h2, priv_a);
	assert_int_equal(flows_admit(&st, &ch, 5, pub_a, b3, (size_t)n3, &h, &flags), 0);
	assert_int_equal(flags, FLOWS_F_CHAIN_BROKEN);
	assert_int_equal(st.admitted, 4);
	assert_int_equal(st.gaps, 1);
	assert_int_equal(st.chain_breaks, 1);
}

static void test_pair(void **state)
{
	static const struct {
		struct flows_side a, b;
		enum flows_verdict want;
		const char *why;
	} cases[] = {
	    {{1000, 1400000, 500, 26000}, {500, 26000, 1000, 1400000}, FLOWS_CONFIRMED, "exact"},
	    {{1000, 1400000, 500, 26000}, {500, 26000, 990, 1386000}, FLOWS_CONFIRMED, "1% lost"},
	    {{10, 1000, 0, 0}, {0, 0, 2, 200}, FLOWS_CONFIRMED, "8 of 10 lost (minimum)"},
	    {{1000, 1400000, 500, 26000}, {500, 26000, 980, 1372000}, FLOWS_MISMATCH, "2% lost"},
	    {{1000, 1400000, 500, 26000},
	     {500, 26000, 1001, 1401400},
	     FLOWS_MISMATCH,
	     "more received than sent"},
	    {{1000, 1400000, 500, 26000},
	     {500, 26000, 1000, 700000},
	     FLOWS_MISMATCH,
	     "bytes under-reported, packets not"},
	    {{1000, 1400000, 500, 26000},
	     {400, 20000, 1000, 1400000},
	     FLOWS_MISMATCH,
	     "the other direction under-reported"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		enum flows_verdict v = flows_pair(&cases[i].a, &cases[i].b);

		if (v != cases[i].want)
			fail_msg("%s: %s, want %s", cases[i].why, flows_verdict_name(v),
				 flows_verdict_name(cases[i].want));
		/* Symmetric: which end is a does not matter. */
		assert_int_equal(flows_pair(&cases[i].b, &cases[i].a), v);
	}
	assert_int_equal(flows_pair(&cases[0].a, NULL), FLOWS_ONE_SIDED);
	assert_string_equal(flows_verdict_name(FLOWS_ONE_SIDED), "one-sided");
}

/* A sole report that names no peer has no other end: listed, not flagged. */
static void test_pair_no_peer(void **state)
{
	struct flows_side lone = {3, 252, 0, 0, .no_peer = true};
	struct flows_side peer = {0, 0, 3, 252};

	(void)state;
	assert_int_equal(flows_pair(&lone, NULL), FLOWS_NO_PEER);
	assert_string_equal(flows_verdict_name(FLOWS_NO_PEER), "no-peer");
	/* Both ends reported it after all (the peer left the netmap before the flush): paired. */
	assert_int_equal(flows_pair(&lone, &peer), FLOWS_CONFIRMED);
	assert_int_equal(flows_pair(&peer, &lone), FLOWS_CONFIRMED);
	peer.rx_packets = 0;
	peer.rx_bytes = 0;
	lone.tx_packets = 300;
	lone.tx_bytes = 25200;
	assert_int_equal(flows_pair(&lone, &peer), FLOWS_MISMATCH);
	assert_false(flows_verdict_flagged(FLOWS_CONFIRMED));
	assert_false(flows_verdict_flagged(FLOWS_NO_PEER));
	assert_true(flows_verdict_flagged(FLOWS_ONE_SIDED));
	assert_true(flows_verdict_flagged(FLOWS_MISMATCH));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_admit),
	    cmocka_unit_test(test_pair),
	    cmocka_unit_test(test_pair_no_peer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
