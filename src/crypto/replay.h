/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CRYPTO_REPLAY_H
#define TRELLIS_CRYPTO_REPLAY_H

/*
 * Sliding-window replay protection for data counters (RFC 6479 style bitmap,
 * as in the WireGuard whitepaper section 5.4.6). Not thread safe: the caller
 * serialises per keypair.
 */

#include <stdbool.h>
#include <stdint.h>

#define REPLAY_WINDOW_BITS 8192 /* bitmap size; the usable window is this minus one word */
#define REPLAY_WORD_BITS 64
#define REPLAY_WINDOW_SIZE (REPLAY_WINDOW_BITS - REPLAY_WORD_BITS)
/* REJECT_AFTER_MESSAGES: counters at or above this are never accepted. */
#define REPLAY_COUNTER_LIMIT (UINT64_MAX - (1ULL << 13))

struct replay_window {
	uint64_t greatest; /* highest counter accepted + 1; 0 = none yet */
	uint64_t bitmap[REPLAY_WINDOW_BITS / REPLAY_WORD_BITS];
};

void replay_window_init(struct replay_window *w);
/* True (and records the counter) if `counter` is new and within the window. */
bool replay_window_check(struct replay_window *w, uint64_t counter);

#endif
