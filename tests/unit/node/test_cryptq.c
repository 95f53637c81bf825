/* SPDX-License-Identifier: MIT */
/*
 * cryptq with a fake crypto step: many producers and workers, per-producer order
 * preserved on flush, drops counted when the ring is full, clean draining shutdown.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "node/cryptq.c"

#define MAX_PRODUCERS 8

struct lane_ctx {
	atomic_int in_flush; /* flush calls of one lane must never overlap */
	atomic_ulong flushed;
	atomic_ulong dropped;
	atomic_ulong bad; /* order or step violations (asserted 0 at the end) */
	uint64_t last_seq[MAX_PRODUCERS];
	struct cryptq *resubmit_q; /* when set, flush hands packets to lane 0 instead of freeing */
	atomic_int *gate;	   /* when set, step waits until *gate != 0 */
};

static void fake_step(void *ctx, struct pkt *p)
{
	struct lane_ctx *c = ctx;

	if (c->gate)
		while (!atomic_load(c->gate))
			sched_yield();
	/* Uneven work per packet so that workers finish batches out of order. */
	if ((p->counter & 7) == 3)
		sched_yield();
	p->err++;
}

static void fake_flush(void *ctx, struct pkt **pkts, unsigned n)
{
	struct lane_ctx *c = ctx;
	unsigned i;

	if (atomic_fetch_add(&c->in_flush, 1) != 0)
		atomic_fetch_add(&c->bad, 1);
	for (i = 0; i < n; i++) {
		unsigned prod = (unsigned)(pkts[i]->counter >> 32);
		uint64_t seq = pkts[i]->counter & 0xffffffffu;

		if (prod >= MAX_PRODUCERS || seq + 1 <= c->last_seq[prod] || pkts[i]->err < 1)
			atomic_fetch_add(&c->bad, 1);
		c->last_seq[prod] = seq + 1;
	}
	atomic_fetch_add(&c->flushed, n);
	atomic_fetch_sub(&c->in_flush, 1);
	if (c->resubmit_q) {
		for (i = 0; i < n; i++)
			pkts[i]->counter =
			    pkts[i]->counter & 0xffffffffu; /* producer 0 on lane 0 */
		cryptq_submit(c->resubmit_q, 0, pkts, n);
		return;
	}
	pkt_free(pkts, n);
}

static void fake_drop(void *ctx, struct pkt **pkts, unsigned n)
{
	struct lane_ctx *c = ctx;

	atomic_fetch_add(&c->dropped, n);
	pkt_free(pkts, n);
}

struct producer {
	pthread_t thread;
	struct cryptq *q;
	struct pkt_pool *pool;
	unsigned lane;
	unsigned id;
	unsigned batches;
	unsigned long submitted;
	unsigned seed;
};

static void *producer_main(void *arg)
{
	struct producer *pr = arg;
	struct pkt *pkts[150];
	uint64_t seq = 0;
	unsigned b;

	for (b = 0; b < pr->batches; b++) {
		unsigned want = 1 + (unsigned)rand_r(&pr->seed) % 150, got = 0, i;

		while (got < want) {
			got += pkt_pool_get(pr->pool, pkts + got, want - got);
			if (got < want)
				sched_yield();
		}
		for (i = 0; i < want; i++)
			pkts[i]->counter = ((uint64_t)pr->id << 32) | seq++;
		cryptq_submit(pr->q, pr->lane, pkts, want);
		pr->submitted += want;
	}
	return NULL;
}

static void run_mixed(unsigned workers, unsigned slots, unsigned batches)
{
	struct lane_ctx ctx[2] = {0};
	struct cryptq_lane lanes[2];
	struct producer prod[6];
	unsigned long submitted[2] = {0, 0};
	struct pkt_pool *pool;
	struct cryptq *q;
	unsigned i, total = 2 * slots * CRYPTQ_BATCH_MAX + 6 * 150;

	pool = pkt_pool_new(total);
	assert_non_null(pool);
	for (i = 0; i < 2; i++)
		lanes[i] = (struct cryptq_lane){
		    .ctx = &ctx[i], .step = fake_step, .flush = fake_flush, .drop = fake_drop};
	q = cryptq_new(lanes, 2, slots, workers);
	assert_non_null(q);
	for (i = 0; i < ARRAY_SIZE(prod); i++) {
		/* Producers 0-3 on lane 0 (encrypt-like), 4-5 on lane 1. */
		prod[i] = (struct producer){.q = q,
					    .pool = pool,
					    .lane = i < 4 ? 0 : 1,
					    .id = i,
					    .batches = batches,
					    .seed = 1234 + i};
		assert_int_equal(pthread_create(&prod[i].thread, NULL, producer_main, &prod[i]), 0);
	}
	for (i = 0; i < ARRAY_SIZE(prod); i++) {
		pthread_join(prod[i].thread, NULL);
		submitted[prod[i].lane] += prod[i].submitted;
	}
	cryptq_free(q);
	for (i = 0; i < 2; i++) {
		assert_int_equal(atomic_load(&ctx[i].bad), 0);
		assert_int_equal(atomic_load(&ctx[i].flushed) + atomic_load(&ctx[i].dropped),
				 submitted[i]);
		assert_true(atomic_load(&ctx[i].flushed) > 0);
	}
	assert_int_equal(pkt_pool_available(pool), total);
	pkt_pool_free(pool);
}

static void test_order_workers(void **state)
{
	(void)state;
	run_mixed(4, 64, 400);
}

/* A tiny ring forces drops while producers race: the counts must still add up. */
static void test_order_small_ring(void **state)
{
	(void)state;
	run_mixed(3, 2, 400);
}

/* No workers: producers step their own batches, flush order still holds across them. */
static void test_order_inline(void **state)
{
	(void)state;
	run_mixed(0, 16, 300);
}

static void test_full_drops(void **state)
{
	enum { B = CRYPTQ_INLINE_MAX + 1 };
	atomic_int gate = 0;
	struct lane_ctx ctx = {.gate = &gate};
	struct cryptq_lane lane = {
	    .ctx = &ctx, .step = fake_step, .flush = fake_flush, .drop = fake_drop};
	struct cryptq_stats st;
	struct pkt_pool *pool = pkt_pool_new(256);
	struct pkt *pkts[100];
	struct cryptq *q;
	unsigned i;

	(void)state;
	q = cryptq_new(&lane, 1, 4, 1);
	assert_non_null(q);
	/*
	 * Four batches fill four slots while the worker is held at the gate. They are
	 * larger than CRYPTQ_INLINE_MAX so that the producer hands them to the worker
	 * rather than running them itself.
	 */
	for (i = 0; i < 4; i++) {
		unsigned k;

		assert_int_equal(pkt_pool_get(pool, pkts, B), B);
		for (k = 0; k < B; k++)
			pkts[k]->counter = i * B + k;
		assert_int_equal(cryptq_submit(q, 0, pkts, B), B);
	}
	assert_int_equal(pkt_pool_get(pool, pkts, 100), 100);
	for (i = 0; i < 100; i++)
		pkts[i]->counter = 4 * B + i;
	assert_int_equal(cryptq_submit(q, 0, pkts, 100), 0);
	assert_int_equal(atomic_load(&ctx.dropped), 100);
	assert_int_equal(atomic_load(&ctx.flushed), 0);
	cryptq_stats_get(q, 0, &st);
	assert_int_equal(st.dropped, 100);
	assert_int_equal(st.packets, 4 * B);
	assert_int_equal(st.batches, 4);
	atomic_store(&gate, 1);
	cryptq_free(q); /* drains the four held batches */
	assert_int_equal(atomic_load(&ctx.flushed), 4 * B);
	assert_int_equal(atomic_load(&ctx.bad), 0);
	assert_int_equal(pkt_pool_available(pool), 256);
	pkt_pool_free(pool);
}

static pthread_t step_thread;

static void thread_step(void *ctx, struct pkt *p)
{
	(void)ctx;
	step_thread = pthread_self();
	p->err++;
}

/* A small submission to an idle lane runs on the producer; a large one on a worker. */
static void test_small_batch_runs_on_producer(void **state)
{
	struct lane_ctx ctx = {0};
	struct cryptq_lane lane = {
	    .ctx = &ctx, .step = thread_step, .flush = fake_flush, .drop = fake_drop};
	struct pkt_pool *pool = pkt_pool_new(64);
	struct pkt *pkts[64];
	struct cryptq *q;
	unsigned k;

	(void)state;
	q = cryptq_new(&lane, 1, 4, 1);
	assert_non_null(q);
	assert_int_equal(pkt_pool_get(pool, pkts, CRYPTQ_INLINE_MAX), CRYPTQ_INLINE_MAX);
	for (k = 0; k < CRYPTQ_INLINE_MAX; k++)
		pkts[k]->counter = k;
	assert_int_equal(cryptq_submit(q, 0, pkts, CRYPTQ_INLINE_MAX), CRYPTQ_INLINE_MAX);
	/* Ran and flushed before submit returned, on this thread. */
	assert_int_equal(atomic_load(&ctx.flushed), CRYPTQ_INLINE_MAX);
	assert_true(pthread_equal(step_thread, pthread_self()));

	assert_int_equal(pkt_pool_get(pool, pkts, 32), 32);
	for (k = 0; k < 32; k++)
		pkts[k]->counter = CRYPTQ_INLINE_MAX + k;
	assert_int_equal(cryptq_submit(q, 0, pkts, 32), 32);
	cryptq_free(q);
	assert_int_equal(atomic_load(&ctx.flushed), CRYPTQ_INLINE_MAX + 32);
	assert_false(pthread_equal(step_thread, pthread_self()));
	assert_int_equal(atomic_load(&ctx.bad), 0);
	assert_int_equal(pkt_pool_available(pool), 64);
	pkt_pool_free(pool);
}

/* A large submission spans several slots and stays in order. */
static void test_large_batch_split(void **state)
{
	struct lane_ctx ctx = {0};
	struct cryptq_lane lane = {
	    .ctx = &ctx, .step = fake_step, .flush = fake_flush, .drop = fake_drop};
	struct pkt_pool *pool = pkt_pool_new(1000);
	struct pkt *pkts[1000];
	struct cryptq *q;
	unsigned i;

	(void)state;
	q = cryptq_new(&lane, 1, 8, 2);
	assert_non_null(q);
	assert_int_equal(pkt_pool_get(pool, pkts, 1000), 1000);
	for (i = 0; i < 1000; i++)
		pkts[i]->counter = i;
	/* 8 slots x 64 packets: the first 512 are accepted, the rest dropped. */
	assert_int_equal(cryptq_submit(q, 0, pkts, 1000), 8 * CRYPTQ_BATCH_MAX);
	cryptq_free(q);
	assert_int_equal(atomic_load(&ctx.flushed), 8 * CRYPTQ_BATCH_MAX);
	assert_int_equal(atomic_load(&ctx.dropped), 1000 - 8 * CRYPTQ_BATCH_MAX);
	assert_int_equal(atomic_load(&ctx.bad), 0);
	assert_int_equal(pkt_pool_available(pool), 1000);
	pkt_pool_free(pool);
}

/*
 * A flush that submits to another lane (as a completed handshake releases staged
 * packets for encryption) must not deadlock.
 */
static void test_flush_resubmits(void **state)
{
	struct lane_ctx ctx[2] = {0};
	struct cryptq_lane lanes[2];
	struct pkt_pool *pool = pkt_pool_new(64);
	struct pkt *pkts[64];
	struct cryptq *q;
	unsigned i;

	(void)state;
	for (i = 0; i < 2; i++)
		lanes[i] = (struct cryptq_lane){
		    .ctx = &ctx[i], .step = fake_step, .flush = fake_flush, .drop = fake_drop};
	q = cryptq_new(lanes, 2, 4, 2);
	assert_non_null(q);
	ctx[1].resubmit_q = q;
	for (i = 0; i < 32; i++) {
		assert_int_equal(pkt_pool_get(pool, pkts, 2), 2);
		pkts[0]->counter = 2 * i;
		pkts[1]->counter = 2 * i + 1;
		if (cryptq_submit(q, 1, pkts, 2) != 2)
			sched_yield();
	}
	cryptq_free(q);
	assert_int_equal(atomic_load(&ctx[1].flushed) + atomic_load(&ctx[1].dropped), 64);
	assert_int_equal(atomic_load(&ctx[0].flushed) + atomic_load(&ctx[0].dropped),
			 atomic_load(&ctx[1].flushed));
	assert_int_equal(pkt_pool_available(pool), 64);
	pkt_pool_free(pool);
}

static void test_submit_after_free_start_drops(void **state)
{
	struct lane_ctx ctx = {0};
	struct cryptq_lane lane = {
	    .ctx = &ctx, .step = fake_step, .flush = fake_flush, .drop = fake_drop};
	struct pkt_pool *pool = pkt_pool_new(4);
	struct pkt *pkts[4];
	struct cryptq *q;

	(void)state;
	q = cryptq_new(&lane, 1, 4, 1);
	assert_non_null(q);
	/* Simulate the shutdown window: stopping is set before the workers are joined. */
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_mutex_unlock(&q->lock);
	assert_int_equal(pkt_pool_get(pool, pkts, 4), 4);
	assert_int_equal(cryptq_submit(q, 0, pkts, 4), 0);
	assert_int_equal(atomic_load(&ctx.dropped), 4);
	cryptq_free(q);
	assert_int_equal(pkt_pool_available(pool), 4);
	pkt_pool_free(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_order_workers),
	    cmocka_unit_test(test_order_small_ring),
	    cmocka_unit_test(test_order_inline),
	    cmocka_unit_test(test_full_drops),
		cmocka_unit_test(test_small_batch_runs_on_producer),
	    cmocka_unit_test(test_large_batch_split),
	    cmocka_unit_test(test_flush_resubmits),
	    cmocka_unit_test(test_submit_after_free_start_drops),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
