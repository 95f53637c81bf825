// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "base/hash.h"
#include "base/hmap.h"
#include "base/time.h"

#define BUCKETS_MIN 16

int hmap_init(struct hmap *h)
{
	memset(h, 0, sizeof(*h));
	h->buckets = calloc(BUCKETS_MIN, sizeof(*h->buckets));
	if (!h->buckets)
		return -ENOMEM;
	h->mask = BUCKETS_MIN - 1;
	/* Without the kernel's randomness the clock still keeps the seed out of reach. */
	if (getrandom(&h->seed, sizeof(h->seed), GRND_NONBLOCK) != sizeof(h->seed))
		h->seed = time_now_ns() ^ (uint64_t)(uintptr_t)h;
	return 0;
}

void hmap_fini(struct hmap *h)
{
	free(h->buckets);
	memset(h, 0, sizeof(*h));
}

static uint64_t mix(uint64_t x, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		x ^= p[i];
		x *= 0x100000001b3ULL;
		x ^= x >> 29;
	}
	return x;
}

uint64_t hmap_hash(const struct hmap *h, const void *key, size_t len)
{
	/* hash_mix64 spreads the low bits the bucket index takes. */
	return hash_mix64(mix(h->seed ^ (len * 0x9e3779b97f4a7c15ULL), key, len));
}

uint64_t hmap_hash_id(const struct hmap *h, uint64_t id, const void *key, size_t len)
{
	uint64_t x = mix(h->seed ^ ((len + 8) * 0x9e3779b97f4a7c15ULL), (const uint8_t *)&id,
			 sizeof(id));

	return hash_mix64(mix(x, key, len));
}

static void grow(struct hmap *h)
{
	size_t cap = (h->mask + 1) * 2;
	struct hmap_node **b = calloc(cap, sizeof(*b));

	if (!b)
		return; /* longer chains, still correct */
	for (size_t i = 0; i <= h->mask; i++) {
		struct hmap_node *n = h->buckets[i], *next;

		for (; n; n = next) {
			next = n->next;
			n->next = b[n->hash & (cap - 1)];
			b[n->hash & (cap - 1)] = n;
		}
	}
	free(h->buckets);
	h->buckets = b;
	h->mask = cap - 1;
}

void hmap_insert(struct hmap *h, struct hmap_node *node, uint64_t hash)
{
	struct hmap_node **b;

	if (h->n > h->mask)
		grow(h);
	b = &h->buckets[hash & h->mask];
	node->hash = hash;
	node->next = *b;
	*b = node;
	h->n++;
}

void hmap_remove(struct hmap *h, struct hmap_node *node)
{
	struct hmap_node **p = &h->buckets[node->hash & h->mask];

	while (*p != node)
		p = &(*p)->next;
	*p = node->next;
	node->next = NULL;
	h->n--;
}

struct hmap_node *hmap_first_with_hash(const struct hmap *h, uint64_t hash)
{
	struct hmap_node *n;

	if (!h->buckets)
		return NULL;
	for (n = h->buckets[hash & h->mask]; n && n->hash != hash; n = n->next)
		;
	return n;
}

struct hmap_node *hmap_next_with_hash(const struct hmap_node *node)
{
	struct hmap_node *n;

	for (n = node->next; n && n->hash != node->hash; n = n->next)
		;
	return n;
}

static struct hmap_node *first_from(const struct hmap *h, size_t i)
{
	for (; h->buckets && i <= h->mask; i++)
		if (h->buckets[i])
			return h->buckets[i];
	return NULL;
}

struct hmap_node *hmap_first(const struct hmap *h)
{
	return first_from(h, 0);
}

struct hmap_node *hmap_next(const struct hmap *h, const struct hmap_node *node)
{
	return node->next ? node->next : first_from(h, (node->hash & h->mask) + 1);
}
