/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_HMAP_H
#define TRELLIS_BASE_HMAP_H

/*
 * An intrusive hash table (as Open vSwitch's hmap): an element embeds one
 * struct hmap_node per table it sits in and is found by a 64-bit hash that the
 * caller computes with the table's hmap_hash; the caller compares keys itself
 * while it walks the elements of that hash. So a table stores typed elements
 * (container_of), never copies or boxes, and keys may be anything: a machine
 * key, a tailnet id and a name, an address.
 *
 * Inserting never allocates an element and never fails: the bucket array
 * doubles when the load passes 1, and if that allocation fails the chains just
 * grow longer. Several elements may have equal keys; lookups meet them in turn.
 *
 * The hash is seeded at random per table: some keys come from the network
 * (host names, addresses), and their senders must not be able to choose
 * collisions.
 */

#include <stddef.h>
#include <stdint.h>

struct hmap_node {
	struct hmap_node *next;
	uint64_t hash;
};

struct hmap {
	struct hmap_node **buckets;
	size_t mask; /* buckets - 1: a power of two minus one */
	size_t n;
	uint64_t seed;
};

/* 0 or -ENOMEM. */
int hmap_init(struct hmap *h);
/* Frees the bucket array; the elements are the caller's. Accepts a zeroed table. */
void hmap_fini(struct hmap *h);

uint64_t hmap_hash(const struct hmap *h, const void *key, size_t len);
/* The hash of a key made of an id and bytes (a tailnet id and a name). */
uint64_t hmap_hash_id(const struct hmap *h, uint64_t id, const void *key, size_t len);

void hmap_insert(struct hmap *h, struct hmap_node *node, uint64_t hash);
/* node must be in h. */
void hmap_remove(struct hmap *h, struct hmap_node *node);

static inline size_t hmap_count(const struct hmap *h)
{
	return h->n;
}

/* The first element with this hash, or NULL; hmap_next_with_hash gives the others. */
struct hmap_node *hmap_first_with_hash(const struct hmap *h, uint64_t hash);
struct hmap_node *hmap_next_with_hash(const struct hmap_node *node);

/*
 * Every element once, in no order. The table must not change during the walk,
 * except that an element already visited may be freed (without hmap_remove)
 * when the whole table is torn down: take the next one first.
 */
struct hmap_node *hmap_first(const struct hmap *h);
struct hmap_node *hmap_next(const struct hmap *h, const struct hmap_node *node);

#endif
