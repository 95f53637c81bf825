/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/pages.h"
#include "base/pkt.h"
#include "base/time.h"

/*
 * A mutex-protected stack of free packets. Callers move packets in batches, so
 * the lock is taken once per batch, not once per packet. The packets sit in one
 * allocation, each header followed by its buffer (a stride of header + buf_size,
 * a multiple of 64 so every buffer stays cache-line aligned).
 *
 * Packets are carved from the allocation on first use, lowest address first, and
 * only when the stack is empty: a pool sized for a burst costs address space, and
 * memory only for the most packets ever in flight at once (an idle daemon's pools
 * are a few pages, not megabytes).
 *
 * After a burst, pkt_pool_trim gives the memory of free packets back (MADV_DONTNEED on
 * the whole pages they cover): a free packet's memory is nobody's, so its page may go
 * and come back zeroed, which is why pkt_pool_get writes the header fields it relies on
 * each time. The trim sorts the free stack lowest address on top, so that packets taken
 * afterwards, and the ones a reader keeps in hand, gather at the start of the allocation
 * and the next trim finds long free runs.
 */
struct pkt_pool {
	pthread_mutex_t lock;
	unsigned count;
	unsigned carved; /* packets handed out at least once: mem[0..carved) */
	unsigned nfree;
	unsigned peak;	  /* the most packets in use at once since the last trim */
	unsigned mark;	  /* in use or kept resident at the last trim */
	atomic_bool grew; /* in use went above mark since: the next trim has work */
	uint32_t buf_size;
	size_t stride;
	uint8_t *mem;
	struct pkt **free;
};

_Static_assert(offsetof(struct pkt, buf) == sizeof(struct pkt), "the buffer follows the header");
_Static_assert(sizeof(struct pkt) % 64 == 0, "buffers stay aligned");

struct pkt_pool *pkt_pool_new_sized(unsigned count, uint32_t buf_size)
{
	struct pkt_pool *pool;

	if (buf_size <= PKT_HEADROOM + PKT_TAILROOM || buf_size > PKT_BUF_SIZE_MAX) {
		errno = EINVAL;
		return NULL;
	}
	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return NULL;
	pool->buf_size = buf_size;
	pool->stride = (sizeof(struct pkt) + buf_size + 63) & ~(size_t)63;
	pool->mem = aligned_alloc(64, pool->stride * count);
	/* A stack for the worst case, written only as deep as it gets (pages.h). */
	pool->free = pages_zalloc(count, sizeof(*pool->free));
	if (!pool->mem || !pool->free) {
		free(pool->mem);
		pages_free(pool->free, count, sizeof(*pool->free));
		free(pool);
		return NULL;
	}
	pthread_mutex_init(&pool->lock, NULL);
	pool->count = count;
	return pool;
}

/* Under the lock: the next packet never handed out. */
static struct pkt *carve(struct pkt_pool *pool)
{
	return (struct pkt *)(pool->mem + pool->stride * pool->carved++);
}

struct pkt_pool *pkt_pool_new(unsigned count)
{
	return pkt_pool_new_sized(count, PKT_BUF_SIZE);
}

uint32_t pkt_pool_buf_size(const struct pkt_pool *pool)
{
	return pool->buf_size;
}

unsigned pkt_pool_count(const struct pkt_pool *pool)
{
	return pool->count;
}

void pkt_pool_free(struct pkt_pool *pool)
{
	if (!pool)
		return;
	pthread_mutex_destroy(&pool->lock);
	free(pool->mem);
	pages_free(pool->free, pool->count, sizeof(*pool->free));
	free(pool);
}

unsigned pkt_pool_get(struct pkt_pool *pool, struct pkt **ret, unsigned n)
{
	unsigned i;

	pthread_mutex_lock(&pool->lock);
	if (n > pool->nfree + (pool->count - pool->carved))
		n = pool->nfree + (pool->count - pool->carved);
	for (i = 0; i < n; i++)
		ret[i] = pool->nfree ? pool->free[--pool->nfree] : carve(pool);
	if (pool->carved - pool->nfree > pool->peak) {
		pool->peak = pool->carved - pool->nfree;
		if (pool->peak > pool->mark)
			atomic_store_explicit(&pool->grew, true, memory_order_relaxed);
	}
	pthread_mutex_unlock(&pool->lock);
	for (i = 0; i < n; i++) {
		/* Set every time: a trim may have given the page back (it reads as zeroes). */
		ret[i]->pool = pool;
		ret[i]->cap = pool->buf_size;
		pkt_reset(ret[i]);
	}
	return n;
}

static int addr_desc(const void *a, const void *b)
{
	struct pkt *const *pa = a, *const *pb = b;
	uintptr_t x = (uintptr_t)pa[0], y = (uintptr_t)pb[0];

	return x < y ? 1 : x > y ? -1 : 0;
}

/* Under the lock: gives back the whole pages inside [lo, hi). */
static void drop(uintptr_t lo, uintptr_t hi, uintptr_t page)
{
	lo = (lo + page - 1) & ~(page - 1);
	hi &= ~(page - 1);
	if (lo < hi)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

unsigned pkt_pool_trim(struct pkt_pool *pool)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t end = (uintptr_t)pool->mem + pool->stride * pool->count;
	unsigned in_use, keep, n, j;

	pthread_mutex_lock(&pool->lock);
	in_use = pool->carved - pool->nfree;
	/* What the last period needed beyond today's use stays: a pool in use keeps its set. */
	keep = pool->peak > in_use ? pool->peak - in_use : 0;
	keep = keep < pool->nfree ? keep : pool->nfree;
	qsort(pool->free, pool->nfree, sizeof(*pool->free), addr_desc);
	/* free[n..nfree), the lowest addresses, are taken next: they stay resident. */
	n = pool->nfree - keep;
	for (j = 0; j < n;) {
		uintptr_t hi = (uintptr_t)pool->free[j] + pool->stride, lo;

		/* The free run at the top borders never-carved packets: those pages go too. */
		if (hi == (uintptr_t)pool->mem + pool->stride * pool->carved)
			hi = end;
		while (j + 1 < n &&
		       (uintptr_t)pool->free[j + 1] + pool->stride == (uintptr_t)pool->free[j])
			j++;
		lo = (uintptr_t)pool->free[j++];
		drop(lo, hi, page);
	}
	pool->peak = in_use;
	pool->mark = in_use + keep;
	atomic_store_explicit(&pool->grew, false, memory_order_relaxed);
	pthread_mutex_unlock(&pool->lock);
	return keep;
}

bool pkt_pool_grew(const struct pkt_pool *pool)
{
	return atomic_load_explicit(&pool->grew, memory_order_relaxed);
}

void pkt_trimmer_init(struct pkt_trimmer *t, uint64_t period_ns)
{
	*t = (struct pkt_trimmer){.period_ns = period_ns, .due_ns = TIME_NEVER};
}

int pkt_trimmer_add(struct pkt_trimmer *t, struct pkt_pool *pool)
{
	if (t->n_pools == PKT_TRIMMER_POOLS_MAX)
		return -ENOSPC;
	t->pools[t->n_pools++] = pool;
	return 0;
}

static bool trimmer_grew(const struct pkt_trimmer *t)
{
	for (unsigned i = 0; i < t->n_pools; i++)
		if (pkt_pool_grew(t->pools[i]))
			return true;
	return false;
}

uint64_t pkt_trimmer_run(struct pkt_trimmer *t, uint64_t now_ns)
{
	unsigned busy = 0;

	if (t->due_ns == TIME_NEVER) {
		if (trimmer_grew(t))
			t->due_ns = now_ns + t->period_ns;
		return t->due_ns;
	}
	if (now_ns < t->due_ns)
		return t->due_ns;
	for (unsigned i = 0; i < t->n_pools; i++)
		busy += pkt_pool_trim(t->pools[i]);
	t->due_ns = busy || trimmer_grew(t) ? now_ns + t->period_ns : TIME_NEVER;
	return t->due_ns;
}

unsigned pkt_pool_available(struct pkt_pool *pool)
{
	unsigned n;

	pthread_mutex_lock(&pool->lock);
	n = pool->nfree + (pool->count - pool->carved);
	pthread_mutex_unlock(&pool->lock);
	return n;
}

void pkt_free(struct pkt **pkts, unsigned n)
{
	struct pkt_pool *pool = NULL;
	unsigned i;

	for (i = 0; i < n; i++) {
		struct pkt *p = pkts[i];

		if (!p)
			continue;
		if (p->pool != pool) {
			if (pool)
				pthread_mutex_unlock(&pool->lock);
			pool = p->pool;
			pthread_mutex_lock(&pool->lock);
		}
		pool->free[pool->nfree++] = p;
	}
	if (pool)
		pthread_mutex_unlock(&pool->lock);
}
