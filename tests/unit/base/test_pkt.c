/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/pkt.h"
#include "base/time.h"

static void test_pool_get_put(void **state)
{
	struct pkt_pool *pool = pkt_pool_new(8);
	struct pkt *p[10];
	unsigned n, i;

	(void)state;
	assert_non_null(pool);
	n = pkt_pool_get(pool, p, 10);
	assert_int_equal(n, 8); /* the pool runs dry instead of allocating */
	assert_int_equal(pkt_pool_available(pool), 0);
	for (i = 0; i < n; i++) {
		assert_ptr_equal(p[i]->pool, pool);
		assert_int_equal(pkt_headroom(p[i]), PKT_HEADROOM);
		assert_int_equal(p[i]->len, 0);
		assert_int_equal(pkt_tailroom(p[i]), PKT_BUF_SIZE - PKT_HEADROOM);
		/* 64-byte alignment keeps in-place crypto on cache-line boundaries. */
		assert_int_equal((uintptr_t)p[i]->buf % 64, 0);
		memset(p[i]->data, 0xff, PKT_BUF_MTU);
		p[i]->len = 100;
		p[i]->peer = p[i];
	}
	p[8] = NULL;
	pkt_free(p, 9); /* NULL entries are skipped */
	assert_int_equal(pkt_pool_available(pool), 8);
	n = pkt_pool_get(pool, p, 1);
	assert_int_equal(n, 1);
	assert_int_equal(p[0]->len, 0); /* reset on get */
	assert_null(p[0]->peer);
	pkt_free(p, 1);
	pkt_pool_free(pool);
	pkt_pool_free(NULL);
}

/*
 * A packet is carved from the pool's memory only when none that came back is free: a
 * pool sized for bursts that only ever holds two packets at once has touched two, and
 * its last ones are still handed out once the first are all taken (and distinct).
 */
static void test_pool_carves_on_demand(void **state)
{
	struct pkt_pool *pool = pkt_pool_new(1024);
	static struct pkt *p[1024];
	struct pkt *first[2];
	uintptr_t stride, at;
	unsigned char resident;
	unsigned round, i;
	long page;

	(void)state;
	assert_non_null(pool);
	assert_int_equal(pkt_pool_available(pool), 1024);
	assert_int_equal(pkt_pool_get(pool, first, 2), 2);
	assert_true((uint8_t *)first[1] > (uint8_t *)first[0]);
	stride = (uintptr_t)first[1] - (uintptr_t)first[0];
	/* Packet 1000's page was never written: not resident (mincore). */
	page = sysconf(_SC_PAGESIZE);
	at = ((uintptr_t)first[0] + 1000 * stride) & ~(uintptr_t)(page - 1);
	assert_int_equal(mincore((void *)at, (size_t)page, &resident), 0);
	assert_int_equal(resident & 1, 0);
	pkt_free(first, 2);
	for (round = 0; round < 100; round++) {
		assert_int_equal(pkt_pool_get(pool, p, 2), 2);
		assert_true(p[0] == first[0] || p[0] == first[1]);
		assert_true(p[1] == first[0] || p[1] == first[1]);
		pkt_free(p, 2);
	}
	assert_int_equal(pkt_pool_available(pool), 1024);
	assert_int_equal(pkt_pool_get(pool, p, 1024), 1024);
	assert_int_equal(pkt_pool_available(pool), 0);
	for (i = 1; i < 1024; i++) {
		assert_ptr_not_equal(p[i], p[i - 1]);
		assert_ptr_equal(p[i]->pool, pool);
		assert_int_equal(p[i]->cap, PKT_BUF_SIZE);
	}
	/* The two reused ones come first, then fresh ones in address order. */
	assert_true((uint8_t *)p[1023] > (uint8_t *)p[1022]);
	pkt_free(p, 1024);
	assert_int_equal(pkt_pool_available(pool), 1024);
	pkt_pool_free(pool);
}

static bool page_resident(const void *addr)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	unsigned char v = 0;

	assert_int_equal(mincore((void *)((uintptr_t)addr & ~(page - 1)), page, &v), 0);
	return v & 1;
}

/*
 * After a burst the free packets' pages go back, but only after a period without the
 * burst (the first trim keeps what the burst needed), never a page a packet in use shares
 * (its bytes survive), and packets given back work again with their header rewritten.
 */
static void test_pool_trim(void **state)
{
	struct pkt_pool *pool = pkt_pool_new(1024);
	static struct pkt *p[1024];
	struct pkt *held[2], *q[2];
	unsigned i, n;

	(void)state;
	assert_non_null(pool);
	assert_false(pkt_pool_grew(pool));
	assert_int_equal(pkt_pool_get(pool, p, 1024), 1024);
	assert_true(pkt_pool_grew(pool));
	for (i = 0; i < 1024; i++)
		memset(p[i]->buf, 0x5a, p[i]->cap);
	held[0] = p[10];
	held[1] = p[1000];
	p[10] = p[1000] = NULL;
	pkt_free(p, 1024);
	assert_true(page_resident(p[500]));

	/* The burst was this period: kept. */
	assert_int_equal(pkt_pool_trim(pool), 1022);
	assert_false(pkt_pool_grew(pool));
	assert_true(page_resident(p[500]));
	/* A quiet period: given back, except the pages of the two still in use. */
	assert_int_equal(pkt_pool_trim(pool), 0);
	assert_false(page_resident(p[500]));
	/* More than a page from p[10]'s last byte, whatever the allocation's alignment. */
	assert_false(page_resident(p[12]->buf + PKT_BUF_SIZE - 1));
	for (i = 0; i < 2; i++) {
		assert_true(page_resident(held[i]));
		assert_true(page_resident(held[i]->buf + held[i]->cap - 1));
		assert_ptr_equal(held[i]->pool, pool);
		for (n = 0; n < held[i]->cap; n++)
			if (held[i]->buf[n] != 0x5a)
				fail_msg("byte %u of a packet in use changed", n);
	}

	/* The lowest addresses come first now; a page given back reads as a fresh packet. */
	assert_int_equal(pkt_pool_get(pool, q, 2), 2);
	assert_ptr_equal(q[0], p[0]);
	assert_ptr_equal(q[1], p[1]);
	/* Beyond the two left resident: the next trim has work. */
	assert_true(pkt_pool_grew(pool));
	pkt_free(q, 2);
	n = pkt_pool_get(pool, p, 1024);
	assert_int_equal(n, 1022);
	for (i = 0; i < n; i++) {
		assert_ptr_equal(p[i]->pool, pool);
		assert_int_equal(p[i]->cap, PKT_BUF_SIZE);
		assert_int_equal(pkt_headroom(p[i]), PKT_HEADROOM);
		assert_ptr_not_equal(p[i], held[0]);
		assert_ptr_not_equal(p[i], held[1]);
		memset(p[i]->data, 1, PKT_BUF_MTU);
	}
	pkt_free(p, n);
	pkt_free(held, 2);
	assert_int_equal(pkt_pool_available(pool), 1024);
	pkt_pool_free(pool);
}

/* Resident pages from lo's page up to the last whole page before hi. */
static unsigned resident_pages(uintptr_t lo, uintptr_t hi)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	size_t n = ((hi & ~(page - 1)) - (lo & ~(page - 1))) / page, i;
	unsigned char *v = calloc(n ? n : 1, 1);
	unsigned count = 0;

	assert_non_null(v);
	assert_int_equal(mincore((void *)(lo & ~(page - 1)), n * page, v), 0);
	for (i = 0; i < n; i++)
		count += v[i] & 1;
	free(v);
	return count;
}

#define PERIOD_NS (10 * NSEC_PER_SEC)

/*
 * The shared trim policy, its clock driven by hand: idle, nothing is armed; after a burst
 * the pool holds far more than its idle floor (the pages of the one packet a reader keeps
 * in hand), and once the trim has had a quiet period it is back at exactly that floor
 * with nothing armed. Growth of any pool of the set arms it.
 */
static void test_trimmer(void **state)
{
	struct pkt_pool *a = pkt_pool_new(1024), *b = pkt_pool_new(64);
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo, hi;
	static struct pkt *p[1024];
	struct pkt_trimmer t, full;
	uint64_t now = 1000, due;
	struct pkt *held, *q;
	unsigned floor, n, i;

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	pkt_trimmer_init(&t, PERIOD_NS);
	assert_int_equal(pkt_trimmer_add(&t, a), 0);
	assert_int_equal(pkt_trimmer_add(&t, b), 0);
	assert_true(pkt_trimmer_run(&t, now) == TIME_NEVER);

	/* Idle: one packet in hand; the pool settles and the trimmer disarms. */
	assert_int_equal(pkt_pool_get(a, &held, 1), 1);
	memset(held->buf, 0x5a, held->cap);
	due = pkt_trimmer_run(&t, now);
	assert_true(due == now + PERIOD_NS);
	now = due;
	assert_true(pkt_trimmer_run(&t, now) == TIME_NEVER);

	/* A burst: every other packet of the pool, written, then returned. */
	n = pkt_pool_get(a, p, 1024);
	assert_int_equal(n, 1023);
	lo = hi = (uintptr_t)held;
	for (i = 0; i < n; i++) {
		memset(p[i]->buf, 1, p[i]->cap);
		lo = (uintptr_t)p[i] < lo ? (uintptr_t)p[i] : lo;
		hi = (uintptr_t)(p[i]->buf + p[i]->cap) > hi ? (uintptr_t)(p[i]->buf + p[i]->cap)
							     : hi;
	}
	pkt_free(p, n);
	/* The held packet was carved first: it is at the bottom of the span. */
	assert_true(lo == (uintptr_t)held);
	floor = (unsigned)(((uintptr_t)(held->buf + held->cap) - 1) / page - lo / page + 1);
	assert_true(resident_pages(lo, hi) > floor + 400);

	now += NSEC_PER_SEC;
	due = pkt_trimmer_run(&t, now);
	assert_true(due == now + PERIOD_NS);
	/* Not due yet: nothing given back. */
	assert_true(pkt_trimmer_run(&t, due - 1) == due);
	assert_true(resident_pages(lo, hi) > floor + 400);
	/* The first trim keeps what the burst needed (it may come back), and re-arms. */
	now = due;
	due = pkt_trimmer_run(&t, now);
	assert_true(due == now + PERIOD_NS);
	assert_true(resident_pages(lo, hi) > floor + 400);
	/* A quiet period: back at the floor, nothing armed. */
	now = due;
	assert_true(pkt_trimmer_run(&t, now) == TIME_NEVER);
	assert_int_equal(resident_pages(lo, hi), floor);
	for (i = 0; i < held->cap; i++)
		if (held->buf[i] != 0x5a)
			fail_msg("byte %u of the packet in hand changed", i);

	/* Any pool of the set that grows arms it again. */
	assert_int_equal(pkt_pool_get(b, &q, 1), 1);
	assert_true(pkt_trimmer_run(&t, now + 1) == now + 1 + PERIOD_NS);
	pkt_free(&q, 1);
	pkt_free(&held, 1);

	pkt_trimmer_init(&full, PERIOD_NS);
	for (i = 0; i < PKT_TRIMMER_POOLS_MAX; i++)
		assert_int_equal(pkt_trimmer_add(&full, a), 0);
	assert_int_equal(pkt_trimmer_add(&full, a), -ENOSPC);
	pkt_pool_free(a);
	pkt_pool_free(b);
}

static void test_pool_sized(void **state)
{
	static const uint32_t sizes[] = {PKT_HEADROOM + PKT_TAILROOM + 1, 4096, 9216,
					 PKT_BUF_SIZE_MAX};
	struct pkt_pool *pool;
	struct pkt *p[3];
	unsigned i, j;

	(void)state;
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		pool = pkt_pool_new_sized(3, sizes[i]);
		assert_non_null(pool);
		assert_int_equal(pkt_pool_buf_size(pool), sizes[i]);
		assert_int_equal(pkt_pool_count(pool), 3);
		assert_int_equal(pkt_pool_get(pool, p, 3), 3);
		for (j = 0; j < 3; j++) {
			assert_int_equal(p[j]->cap, sizes[i]);
			assert_int_equal(pkt_headroom(p[j]), PKT_HEADROOM);
			assert_int_equal(pkt_tailroom(p[j]), sizes[i] - PKT_HEADROOM);
			assert_int_equal((uintptr_t)p[j]->buf % 64, 0);
			/* The whole buffer is ours: ASan catches a write into the next packet. */
			memset(p[j]->buf, j, sizes[i]);
		}
		/* Neighbours did not overlap: each buffer still holds its own bytes. */
		for (j = 0; j < 3; j++)
			assert_int_equal(p[j]->buf[sizes[i] - 1], j);
		pkt_free(p, 3);
		pkt_pool_free(pool);
	}
	/* The largest buffer carries a full UDP datagram's worth of inner packet. */
	assert_true(pkt_buf_mtu(PKT_BUF_SIZE_MAX) >= 65535 - 8);
	assert_int_equal(pkt_buf_mtu(PKT_BUF_SIZE), PKT_BUF_MTU);

	errno = 0;
	assert_null(pkt_pool_new_sized(1, PKT_HEADROOM + PKT_TAILROOM));
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_null(pkt_pool_new_sized(1, PKT_BUF_SIZE_MAX + 1));
	assert_int_equal(errno, EINVAL);
	pool = pkt_pool_new(2);
	assert_int_equal(pkt_pool_buf_size(pool), PKT_BUF_SIZE);
	pkt_pool_free(pool);
}

static void test_free_mixed_pools(void **state)
{
	struct pkt_pool *a = pkt_pool_new(4), *b = pkt_pool_new(4);
	struct pkt *p[8];

	(void)state;
	assert_int_equal(pkt_pool_get(a, p, 2), 2);
	assert_int_equal(pkt_pool_get(b, p + 2, 2), 2);
	assert_int_equal(pkt_pool_get(a, p + 4, 2), 2);
	pkt_free(p, 6);
	assert_int_equal(pkt_pool_available(a), 4);
	assert_int_equal(pkt_pool_available(b), 4);
	pkt_pool_free(a);
	pkt_pool_free(b);
}

static struct pkt_pool *shared;

static void *churn(void *arg)
{
	struct pkt *p[16];
	int i;

	(void)arg;
	for (i = 0; i < 20000; i++) {
		unsigned n = pkt_pool_get(shared, p, 16);

		pkt_free(p, n);
	}
	return NULL;
}

static void test_threads(void **state)
{
	pthread_t t[4];
	int i;

	(void)state;
	shared = pkt_pool_new(40);
	for (i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, churn, NULL);
	for (i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(pkt_pool_available(shared), 40);
	pkt_pool_free(shared);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pool_get_put),     cmocka_unit_test(test_pool_carves_on_demand),
	    cmocka_unit_test(test_pool_trim),	     cmocka_unit_test(test_pool_sized),
	    cmocka_unit_test(test_free_mixed_pools), cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_trimmer),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
