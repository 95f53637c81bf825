/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_KV_H
#define TRELLIS_CONTROL_KV_H

/*
 * The server's in-memory indexes (machine key -> node, tailnet + name -> node,
 * node -> connection, ...): one chained hash table from short byte strings to a
 * 64-bit value (an id or a pointer). Keys come partly from nodes (hostnames),
 * so the hash is seeded at random to keep collisions out of their hands.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KV_KEY_MAX 96

struct kv;

struct kv *kv_new(void);
void kv_free(struct kv *h);
/* true and *ret_val set when found. */
bool kv_get(const struct kv *h, const void *key, size_t len, uint64_t *ret_val);
/* Inserts or replaces. 0, -EINVAL (key too long), -ENOMEM. */
int kv_put(struct kv *h, const void *key, size_t len, uint64_t val);
/* true when something was removed. */
bool kv_del(struct kv *h, const void *key, size_t len);
size_t kv_count(const struct kv *h);
/* Calls fn for every entry (do not change h from fn). */
void kv_foreach(const struct kv *h, void (*fn)(void *ctx, const uint8_t *key, size_t len, uint64_t val),
		void *ctx);

#endif
