/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_ALLOWEDIPS_H
#define TRELLIS_WG_ALLOWEDIPS_H

/*
 * Cryptokey routing table: longest-prefix match from IPv4/IPv6 addresses to
 * peers (opaque pointers), one trie per family. Not thread safe: the device
 * lock serialises writers and readers. Lookups allocate nothing.
 */

#include <stdint.h>

struct allowedips;

struct allowedips *wg_allowedips_new(void);
void wg_allowedips_free(struct allowedips *t); /* accepts NULL */

/*
 * Inserts addr/cidr (host bits are masked off, as wg(8) does) owned by `peer`,
 * taking the prefix over from any other peer that held it.
 * 0, -EINVAL (bad family or cidr), -ENOMEM.
 */
int wg_allowedips_insert(struct allowedips *t, int family, const uint8_t *addr, uint8_t cidr,
			 void *peer);
/* Removes addr/cidr if `peer` owns it: 0, or -ENOENT. */
int wg_allowedips_remove(struct allowedips *t, int family, const uint8_t *addr, uint8_t cidr,
			 void *peer);
void wg_allowedips_remove_by_peer(struct allowedips *t, void *peer);
/* The peer owning the longest prefix containing addr, or NULL. */
void *wg_allowedips_lookup(const struct allowedips *t, int family, const uint8_t *addr);
/* Calls cb for each prefix owned by peer (IPv4 first); stops and returns cb's value if non-zero. */
int wg_allowedips_walk_by_peer(const struct allowedips *t, void *peer,
			       int (*cb)(void *ctx, int family, const uint8_t *addr, uint8_t cidr),
			       void *ctx);
/* Number of prefixes stored (for the caps). */
unsigned wg_allowedips_count(const struct allowedips *t);

#endif
