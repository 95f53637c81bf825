/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_HSLOG_H
#define TRELLIS_NODE_HSLOG_H

/*
 * The node's log lines for WireGuard handshakes (README, "Operating a node"): one when a peer
 * completes its first handshake since the daemon started, and one when a peer comes back
 * after a gap longer than WireGuard's reject time (its session had expired: the tunnel was
 * down). The rekeys every two minutes of a working tunnel say nothing. Lines are rate limited
 * on top of that (a burst, then one every few seconds), and the lines held back are counted
 * in the next one, so a node that meets thousands of peers at once does not flood its log.
 *
 * No I/O: snapshots of the engine and times go in, lines come out through a callback.
 */

#include <stdint.h>

#include "wg/config.h"
#include "wg/messages.h"

#define HSLOG_GAP_NS REJECT_AFTER_TIME_NS /* the session had expired: the tunnel was down */
#define HSLOG_BURST 10
#define HSLOG_REFILL_NS (6ULL * 1000000000ULL) /* one line more per 6 s: 10 a minute */
#define HSLOG_LINE_MAX 256

struct hslog;

/* What the caller knows of a peer: its name for the line; NULL: the key's base64. */
typedef const char *hslog_name_fn(void *ctx, const uint8_t key[WG_KEY_LEN]);
typedef void hslog_emit_fn(void *ctx, const char *line);

struct hslog *hslog_new(void);
void hslog_free(struct hslog *h); /* accepts NULL */
/*
 * Compares the engine's snapshot (peers and their last handshakes) with the one before and
 * emits a line per peer whose handshake is new to it, within the rate limit. now_ns is
 * monotonic (the rate limit), the handshake times are wall-clock as the engine gives them.
 * 0, or -ENOMEM (nothing changed: the next call compares with the same snapshot again).
 */
int hslog_update(struct hslog *h, const struct wg_device_info *info, uint64_t now_ns,
		 hslog_name_fn *name, hslog_emit_fn *emit, void *ctx);

#endif
