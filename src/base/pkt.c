/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>

#include "base/pkt.h"

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
 */
struct pkt_pool {
	pthread_mutex_t lock;
	unsigned count;
	unsigned carved; /* packets handed out at least once: mem[0..carved) */
	unsigned nfree;
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
	pool->free = calloc(count, sizeof(*pool->free));
	if (!pool->mem || !pool->free) {
		free(pool->mem);
		free(pool->free);
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
	struct pkt *p = (struct pkt *)(pool->mem + pool->stride * pool->carved++);

	p->pool = pool;
	p->cap = pool->buf_size;
	return p;
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
	free(pool->free);
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
	pthread_mutex_unlock(&pool->lock);
	for (i = 0; i < n; i++)
		pkt_reset(ret[i]);
	return n;
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
