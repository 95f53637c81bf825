// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "control/kv.h"
#include "crypto/crypto.h"

struct kv_entry {
	struct kv_entry *next;
	uint64_t hash;
	uint64_t val;
	uint8_t len;
	uint8_t key[];
};

struct kv {
	struct kv_entry **buckets;
	size_t mask; /* buckets - 1, a power of two minus one */
	size_t count;
	uint64_t seed;
};

static uint64_t hash_bytes(const struct kv *h, const uint8_t *p, size_t len)
{
	uint64_t x = h->seed ^ (len * 0x9e3779b97f4a7c15ULL);

	for (size_t i = 0; i < len; i++) {
		x ^= p[i];
		x *= 0x100000001b3ULL;
		x ^= x >> 29;
	}
	/* Finalizer (murmur3 fmix64): spreads the low bits we index with. */
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

struct kv *kv_new(void)
{
	struct kv *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->mask = 63;
	h->buckets = calloc(h->mask + 1, sizeof(*h->buckets));
	if (!h->buckets || crypto_random(&h->seed, sizeof(h->seed)) < 0) {
		free(h->buckets);
		free(h);
		return NULL;
	}
	return h;
}

void kv_free(struct kv *h)
{
	if (!h)
		return;
	for (size_t i = 0; i <= h->mask; i++) {
		struct kv_entry *e = h->buckets[i], *n;

		for (; e; e = n) {
			n = e->next;
			free(e);
		}
	}
	free(h->buckets);
	free(h);
}

static struct kv_entry **find(const struct kv *h, const void *key, size_t len, uint64_t hash)
{
	struct kv_entry **pp = &h->buckets[hash & h->mask];

	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == hash && (*pp)->len == len && memcmp((*pp)->key, key, len) == 0)
			return pp;
	return pp;
}

bool kv_get(const struct kv *h, const void *key, size_t len, uint64_t *ret_val)
{
	struct kv_entry **pp;

	if (len > KV_KEY_MAX)
		return false;
	pp = find(h, key, len, hash_bytes(h, key, len));
	if (!*pp)
		return false;
	*ret_val = (*pp)->val;
	return true;
}

static void grow(struct kv *h)
{
	size_t nmask = h->mask * 2 + 1;
	struct kv_entry **nb = calloc(nmask + 1, sizeof(*nb));

	if (!nb)
		return; /* longer chains, still correct */
	for (size_t i = 0; i <= h->mask; i++) {
		struct kv_entry *e = h->buckets[i], *n;

		for (; e; e = n) {
			n = e->next;
			e->next = nb[e->hash & nmask];
			nb[e->hash & nmask] = e;
		}
	}
	free(h->buckets);
	h->buckets = nb;
	h->mask = nmask;
}

int kv_put(struct kv *h, const void *key, size_t len, uint64_t val)
{
	uint64_t hash;
	struct kv_entry **pp, *e;

	if (len > KV_KEY_MAX)
		return -EINVAL;
	hash = hash_bytes(h, key, len);
	pp = find(h, key, len, hash);
	if (*pp) {
		(*pp)->val = val;
		return 0;
	}
	e = malloc(sizeof(*e) + len);
	if (!e)
		return -ENOMEM;
	e->next = NULL;
	e->hash = hash;
	e->val = val;
	e->len = (uint8_t)len;
	memcpy(e->key, key, len);
	*pp = e;
	if (++h->count > h->mask + 1)
		grow(h);
	return 0;
}

bool kv_del(struct kv *h, const void *key, size_t len)
{
	struct kv_entry **pp, *e;

	if (len > KV_KEY_MAX)
		return false;
	pp = find(h, key, len, hash_bytes(h, key, len));
	e = *pp;
	if (!e)
		return false;
	*pp = e->next;
	free(e);
	h->count--;
	return true;
}

size_t kv_count(const struct kv *h)
{
	return h->count;
}

void kv_foreach(const struct kv *h, void (*fn)(void *ctx, const uint8_t *key, size_t len, uint64_t val),
		void *ctx)
{
	for (size_t i = 0; i <= h->mask; i++)
		for (const struct kv_entry *e = h->buckets[i]; e; e = e->next)
			fn(ctx, e->key, e->len, e->val);
}
