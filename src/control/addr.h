/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_ADDR_H
#define TRELLIS_CONTROL_ADDR_H

/*
 * Tailnet IPv4 allocation from 100.64.0.0/10, one pool per tailnet: the lowest
 * free address, never the network (100.64.0.0) or broadcast (100.127.255.255)
 * address. Stability is the caller's part: the address lives in the node
 * record, the server marks every loaded node's address with addr_pool_mark at
 * startup, and a re-login of the same machine key reuses its record.
 *
 * A bitmap (512 KiB for the whole /10), allocated on the first mark or alloc so
 * that empty tailnets cost nothing, and a "no free bit below" hint that makes
 * sequential allocation O(1) and a search after a release start at the release.
 */

#include <stdint.h>

#define ADDR_CGNAT_FIRST 0x64400000U /* 100.64.0.0 */
#define ADDR_CGNAT_COUNT (1U << 22)  /* /10 */

struct addr_pool;

/*
 * A pool over [first, first + count), excluding the first and the last address
 * of the range (network and broadcast). Tests use small ranges to reach
 * exhaustion. NULL on allocation failure.
 */
struct addr_pool *addr_pool_new_range(uint32_t first, uint32_t count);
/* The tailnet pool: 100.64.0.0/10. */
struct addr_pool *addr_pool_new(void);
void addr_pool_free(struct addr_pool *p);

/* Takes the lowest free address. 0, -ENOSPC (full), -ENOMEM. */
int addr_pool_alloc(struct addr_pool *p, uint8_t ret_v4[4]);
/* Marks a known address as used (loading). 0, -EEXIST (already used), -ERANGE, -ENOMEM. */
int addr_pool_mark(struct addr_pool *p, const uint8_t v4[4]);
/* Returns an address to the pool (node deleted). Unknown addresses are ignored. */
void addr_pool_release(struct addr_pool *p, const uint8_t v4[4]);
unsigned addr_pool_used(const struct addr_pool *p);

/* Both families of a tailnet address: v4 as given, v6 per netmap_ipv6_from_ipv4. */
void addr_ipv6_from_ipv4(uint8_t ret_v6[16], const uint8_t v4[4]);

#endif
