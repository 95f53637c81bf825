/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_RATELIMITER_H
#define TRELLIS_WG_RATELIMITER_H

/*
 * Per-source token bucket for handshake messages under load: 20 per second with
 * a burst of 5 per IPv4 address or IPv6 /64. The table is allocated once with a
 * hard number of entries; when it is full, new sources are refused, which is
 * what an attacker filling it deserves and what a real peer survives (it
 * retries after REKEY_TIMEOUT). Entries idle for a second are collected.
 * Under the device lock.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/endpoint.h"

#define RATELIMITER_PACKETS_PER_SECOND 20
#define RATELIMITER_PACKETS_BURSTABLE 5
#define RATELIMITER_MAX_ENTRIES 8192

struct ratelimiter;

struct ratelimiter *wg_ratelimiter_new(void);
void wg_ratelimiter_free(struct ratelimiter *rl);
bool wg_ratelimiter_allow(struct ratelimiter *rl, const struct endpoint *src, uint64_t now_ns);

#endif
