/* SPDX-License-Identifier: MIT */
/*
 * Sliding-window replay check for data message counters (RFC 6479's bitmap,
 * as WireGuard uses it; whitepaper section 5.4.6).
 *
 * State: `greatest` is one more than the highest counter accepted so far (0 =
 * nothing accepted yet); working with counter + 1 lets 0 mean "empty" while
 * counter 0 stays a valid first message. The bitmap is a ring of 128 64-bit
 * words: bit (c % 64) of word ((c / 64) % 128) records shifted counter c. The
 * word holding `greatest` and the 127 words before it are live; when a larger
 * counter arrives, the words it skips over are zeroed (at most the whole ring)
 * before `greatest` moves. Because the current word may be only partly used, at
 * least REPLAY_WINDOW_SIZE = 8192 - 64 = 8128 counters below the highest one
 * are always tracked, which is the window we promise:
 *
 *   with G the highest counter accepted, a counter n is accepted iff it was not
 *   seen before, n < REPLAY_COUNTER_LIMIT and n >= G - REPLAY_WINDOW_SIZE.
 */
#include <string.h>

#include "base/util.h"
#include "crypto/replay.h"

#define RING_WORDS (REPLAY_WINDOW_BITS / REPLAY_WORD_BITS)

_Static_assert((RING_WORDS & (RING_WORDS - 1)) == 0, "ring size must be a power of two");

void replay_window_init(struct replay_window *w)
{
	memset(w, 0, sizeof(*w));
}

bool replay_window_check(struct replay_window *w, uint64_t counter)
{
	uint64_t c, word, cur, skip, i;
	uint64_t bit;

	if (unlikely(counter >= REPLAY_COUNTER_LIMIT))
		return false;
	c = counter + 1; /* cannot wrap: the limit is far below UINT64_MAX */

	/* Too old: below the window (written so that nothing can wrap). */
	if (c + REPLAY_WINDOW_SIZE < w->greatest)
		return false;

	word = c / REPLAY_WORD_BITS;
	if (c > w->greatest) {
		cur = w->greatest / REPLAY_WORD_BITS;
		skip = MIN(word - cur, (uint64_t)RING_WORDS);
		for (i = 1; i <= skip; i++)
			w->bitmap[(cur + i) & (RING_WORDS - 1)] = 0;
		w->greatest = c;
	}

	bit = 1ULL << (c % REPLAY_WORD_BITS);
	word &= RING_WORDS - 1;
	if (w->bitmap[word] & bit)
		return false;
	w->bitmap[word] |= bit;
	return true;
}
