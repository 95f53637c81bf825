/* SPDX-License-Identifier: MIT */
#include <pthread.h>
#include <stdlib.h>

#include "base/pkt.h"

/*
 * A mutex-protected stack of free packets. Callers move packets in batches, so
 * the lock is taken once per batch, not once per packet.
 */
struct pkt_pool {
	pthread_mutex_t lock;
	unsigned count;
	unsigned nfree;
	struct pkt *mem;
	struct pkt **free;
};

struct pkt_pool *pkt_pool_new(unsigned count)
{
	struct pkt_pool *pool;
	unsigned i;

	pool = calloc(1, sizeof(*pool));
	if (!pool)
		return NULL;
	pool->mem = aligned_alloc(64, sizeof(struct pkt) * (size_t)count);
	pool->free = calloc(count, sizeof(*pool->free));
	if (!pool->mem || !pool->free) {
		free(pool->mem);
		free(pool->free);
		free(pool);
		return NULL;
	}
	pthread_mutex_init(&pool->lock, NULL);
	pool->count = count;
	for (i = 0; i < count; i++) {
		pool->mem[i].pool = pool;
		pool->free[i] = &pool->mem[count - 1 - i];
	}
	pool->nfree = count;
	return pool;
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
	if (n > pool->nfree)
		n = pool->nfree;
	for (i = 0; i < n; i++)
		ret[i] = pool->free[--pool->nfree];
	pthread_mutex_unlock(&pool->lock);
	for (i = 0; i < n; i++)
		pkt_reset(ret[i]);
	return n;
}

unsigned pkt_pool_available(struct pkt_pool *pool)
{
	unsigned n;

	pthread_mutex_lock(&pool->lock);
	n = pool->nfree;
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
