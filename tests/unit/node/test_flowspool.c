/* SPDX-License-Identifier: MIT */
/*
 * The node's flow-log chain and spool (node/flowspool.c): batches signed with
 * the audit key and chained across restarts; delivered oldest first, kept on
 * "busy" and removed on any other answer; more records than a batch holds
 * split; a full spool drops its oldest batch and the next batch counts it
 * (signed); a crash between the batch file and the chain file loses nothing.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "node/flowspool.h"

struct ctx {
	char dir[64];
	char spool[96];
	uint8_t priv[32], pub[32];
	uint8_t buf[FLOWBATCH_MAX_LEN];
	uint8_t last_hash[FLOWBATCH_HASH_LEN]; /* of the last batch taken */
	struct flowbatch_record recs[600];
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	strcpy(c->dir, "/tmp/trellis-flowspool-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(c->spool, sizeof(c->spool), "%s/flows", c->dir);
	memset(c->priv, 0x42, sizeof(c->priv));
	assert_int_equal(ed25519_public_from_private(c->pub, c->priv), 0);
	for (unsigned i = 0; i < 600; i++) {
		c->recs[i].proto = 17;
		c->recs[i].src_port = (uint16_t)(1000 + i);
		c->recs[i].tx_packets = i;
	}
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", c->dir);
	free(c);
	return 0;
}

/* The next batch to ship: signed with our key, its header in *h. */
static void next(struct ctx *c, struct flowspool *sp, struct flowbatch *h)
{
	size_t len = flowspool_next(sp, c->buf, sizeof(c->buf));

	assert_true(len > 0);
	assert_int_equal(flowbatch_peek(c->buf, len, h), 0);
	assert_int_equal(flowbatch_verify(c->buf, len, c->pub), 0);
	flowbatch_hash(c->buf, len, c->last_hash);
}

static void test_chain_and_delivery(void **state)
{
	struct ctx *c = *state;
	struct flowspool *sp;
	struct flowspool_stats st;
	struct flowbatch h;
	uint8_t h1[FLOWBATCH_HASH_LEN];

	assert_int_equal(flowspool_open(c->spool, c->priv, 16, &sp), 0);
	assert_int_equal(flowspool_next(sp, c->buf, sizeof(c->buf)), 0);
	/* 300 records: two batches (256 + 44), the table's overflow on the first only. */
	assert_int_equal(flowspool_add(sp, 7, 100, 200, 3, c->recs, 300), 0);
	next(c, sp, &h);
	assert_int_equal(h.node_id, 7);
	assert_int_equal(h.seq, 1);
	assert_int_equal(h.n_records, FLOWSPOOL_RECORDS_MAX);
	assert_int_equal(h.flows_dropped, 3);
	memcpy(h1, c->last_hash, sizeof(h1));
	/* Busy: the same batch again. Stored: the next one, linked to it. */
	flowspool_ack(sp, 1, "busy");
	next(c, sp, &h);
	assert_int_equal(h.seq, 1);
	flowspool_ack(sp, 1, "stored");
	next(c, sp, &h);
	assert_int_equal(h.seq, 2);
	assert_int_equal(h.n_records, 44);
	assert_int_equal(h.flows_dropped, 0);
	assert_memory_equal(h.prev_hash, h1, FLOWBATCH_HASH_LEN);
	/* An answer for another seq changes nothing. */
	flowspool_ack(sp, 9, "stored");
	flowspool_stats(sp, &st);
	assert_int_equal(st.spooled, 1);
	assert_int_equal(st.acked, 1);
	flowspool_free(sp);

	/* A restart: batch 2 still waits, and the chain goes on from it. */
	assert_int_equal(flowspool_open(c->spool, c->priv, 16, &sp), 0);
	next(c, sp, &h);
	assert_int_equal(h.seq, 2);
	memcpy(h1, c->last_hash, sizeof(h1));
	flowspool_ack(sp, 2, "replayed"); /* stored before the restart: gone too */
	assert_int_equal(flowspool_add(sp, 7, 200, 300, 0, c->recs, 1), 0);
	next(c, sp, &h);
	assert_int_equal(h.seq, 3);
	assert_memory_equal(h.prev_hash, h1, FLOWBATCH_HASH_LEN);
	/* A refusal removes it as well (logged), so one bad batch does not block the rest. */
	flowspool_ack(sp, 3, "bad_signature");
	assert_int_equal(flowspool_next(sp, c->buf, sizeof(c->buf)), 0);
	flowspool_stats(sp, &st);
	assert_int_equal(st.refused, 1);
	/* A new node id (registered anew): a new chain. */
	assert_int_equal(flowspool_add(sp, 8, 300, 400, 0, c->recs, 1), 0);
	next(c, sp, &h);
	assert_int_equal(h.node_id, 8);
	assert_int_equal(h.seq, 1);
	flowspool_free(sp);
}

static void test_overflow_and_crash(void **state)
{
	struct ctx *c = *state;
	struct flowspool *sp;
	struct flowspool_stats st;
	struct flowbatch h;
	char path[160];

	assert_int_equal(flowspool_open(c->spool, c->priv, 2, &sp), 0);
	for (unsigned i = 0; i < 4; i++)
		assert_int_equal(flowspool_add(sp, 7, i, i + 1, 0, c->recs, 1), 0);
	/* Room for two: batches 1 and 2 went, and batch 4 says two were dropped. */
	flowspool_stats(sp, &st);
	assert_int_equal(st.spooled, 2);
	assert_int_equal(st.batches_dropped, 2);
	next(c, sp, &h);
	assert_int_equal(h.seq, 3);
	assert_int_equal(h.batches_dropped, 1);
	flowspool_ack(sp, 3, "stored");
	next(c, sp, &h);
	assert_int_equal(h.seq, 4);
	assert_int_equal(h.batches_dropped, 2);
	flowspool_free(sp);

	/* The chain file lost (a crash before its write): the newest batch has the chain. */
	snprintf(path, sizeof(path), "%s/chain", c->spool);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(flowspool_open(c->spool, c->priv, 2, &sp), 0);
	assert_int_equal(flowspool_add(sp, 7, 9, 10, 0, c->recs, 1), 0);
	flowspool_ack(sp, 4, "stored");
	next(c, sp, &h);
	assert_int_equal(h.seq, 5);
	assert_int_equal(h.batches_dropped, 2);
	flowspool_free(sp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_chain_and_delivery, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_overflow_and_crash, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
