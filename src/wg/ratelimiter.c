/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/time.h"
#include "crypto/crypto.h"
#include "wg/ratelimiter.h"

/*
 * Token buckets in nanoseconds of credit: each packet costs 1/20 s, a bucket
 * holds at most 5 packets' worth. Entries come from a preallocated array linked
 * into hash chains, so nothing is allocated per source.
 */
#define PACKET_COST_NS (NSEC_PER_SEC / RATELIMITER_PACKETS_PER_SECOND)
#define TOKEN_MAX_NS (PACKET_COST_NS * RATELIMITER_PACKETS_BURSTABLE)
#define BUCKETS 4096
#define GC_INTERVAL_NS NSEC_PER_SEC

struct rl_entry {
	int next;
	uint8_t family;
	uint8_t key[8];
	uint64_t last_ns;
	uint64_t tokens_ns;
};

struct ratelimiter {
	uint64_t seed;
	uint64_t last_gc_ns;
	int free_head; /* entries collected by gc, reused first */
	/*
	 * Entries from here on were never used: taken in order, so their pages stay untouched
	 * (not resident) until a flood of sources needs them (issue 14: linking them all
	 * into the free list at start made 272 KiB resident on every idle node).
	 */
	int carved;
	int heads[BUCKETS];
	struct rl_entry entries[RATELIMITER_MAX_ENTRIES];
};

struct ratelimiter *wg_ratelimiter_new(void)
{
	struct ratelimiter *rl;
	int i;

	rl = calloc(1, sizeof(*rl));
	if (!rl)
		return NULL;
	crypto_random(&rl->seed, sizeof(rl->seed));
	for (i = 0; i < BUCKETS; i++)
		rl->heads[i] = -1;
	rl->free_head = -1;
	return rl;
}

void wg_ratelimiter_free(struct ratelimiter *rl)
{
	free(rl);
}

static unsigned bucket_of(const struct ratelimiter *rl, uint8_t family, const uint8_t key[8])
{
	uint64_t h;

	memcpy(&h, key, 8);
	h = hash_mix64(h ^ (rl->seed + family));
	return (unsigned)(h & (BUCKETS - 1));
}

static void gc(struct ratelimiter *rl, uint64_t now_ns)
{
	int b, *link, i;

	for (b = 0; b < BUCKETS; b++) {
		link = &rl->heads[b];
		while ((i = *link) >= 0) {
			if (now_ns - rl->entries[i].last_ns > GC_INTERVAL_NS) {
				*link = rl->entries[i].next;
				rl->entries[i].next = rl->free_head;
				rl->free_head = i;
			} else {
				link = &rl->entries[i].next;
			}
		}
	}
	rl->last_gc_ns = now_ns;
}

bool wg_ratelimiter_allow(struct ratelimiter *rl, const struct endpoint *src, uint64_t now_ns)
{
	uint8_t key[8] = { 0 };
	struct rl_entry *e;
	unsigned b;
	int i;

	if (src->sa.sa_family == AF_INET)
		memcpy(key, &src->in4.sin_addr, 4);
	else if (src->sa.sa_family == AF_INET6)
		memcpy(key, &src->in6.sin6_addr, 8); /* one bucket per /64 */
	else if (endpoint_is_handle(src))
		memcpy(key, &src->handle.id, sizeof(src->handle.id)); /* a peer's known path */
	else
		return false;
	if (now_ns - rl->last_gc_ns > GC_INTERVAL_NS)
		gc(rl, now_ns);

	b = bucket_of(rl, src->sa.sa_family, key);
	for (i = rl->heads[b]; i >= 0; i = rl->entries[i].next) {
		e = &rl->entries[i];
		if (e->family != src->sa.sa_family || memcmp(e->key, key, 8))
			continue;
		e->tokens_ns += now_ns - e->last_ns;
		if (e->tokens_ns > TOKEN_MAX_NS)
			e->tokens_ns = TOKEN_MAX_NS;
		e->last_ns = now_ns;
		if (e->tokens_ns < PACKET_COST_NS)
			return false;
		e->tokens_ns -= PACKET_COST_NS;
		return true;
	}
	if (rl->free_head >= 0) {
		i = rl->free_head;
		rl->free_head = rl->entries[i].next;
	} else if (rl->carved < RATELIMITER_MAX_ENTRIES) {
		i = rl->carved++;
	} else {
		return false;
	}
	e = &rl->entries[i];
	e->family = (uint8_t)src->sa.sa_family;
	memcpy(e->key, key, 8);
	e->last_ns = now_ns;
	e->tokens_ns = TOKEN_MAX_NS - PACKET_COST_NS;
	e->next = rl->heads[b];
	rl->heads[b] = i;
	return true;
}
