/* SPDX-License-Identifier: MIT */
/*
 * Replay window as a table of cases. With G the highest counter accepted and
 * W = REPLAY_WINDOW_SIZE (8128), a new counter n is accepted iff
 * n >= G - W and n < REPLAY_COUNTER_LIMIT (see src/crypto/replay.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "crypto/replay.h"

#define W REPLAY_WINDOW_SIZE
#define LIMIT REPLAY_COUNTER_LIMIT
#define MAX_STEPS 16

struct step {
	uint64_t counter;
	bool accept;
	bool used; /* false marks the end of a case */
};

struct replay_case {
	const char *name;
	struct step steps[MAX_STEPS];
};

#define OK(n) { (n), true, true }
#define NO(n) { (n), false, true }

static const struct replay_case cases[] = {
	{ "zero first", { OK(0), NO(0), OK(1), NO(1), NO(0) } },
	{ "in order", { OK(0), OK(1), OK(2), OK(3), OK(4), OK(5) } },
	{ "out of order", { OK(2), OK(0), OK(1), NO(1), OK(3), NO(2), OK(5), OK(4), NO(4) } },
	{ "duplicates", { OK(5), NO(5), NO(5), OK(6), NO(6), NO(5) } },
	{ "edge: G - W accepted, G - W - 1 rejected",
	  { OK(10000), OK(10000 - W), NO(10000 - W), NO(10000 - W - 1) } },
	{ "edge, reverse order", { OK(10000), NO(10000 - W - 1), OK(10000 - W) } },
	{ "edge where G - W is 0", { OK(W), OK(0), NO(0), OK(1) } },
	{ "edge where G - W is 1", { OK(W + 1), NO(0), OK(1), OK(2) } },
	{ "too old", { OK(20000), NO(0), NO(1), NO(20000 - W - 1), OK(20000 - W), OK(19999) } },
	{ "jump far ahead, old ones rejected",
	  { OK(1), OK(2), OK(3), OK(1000000), NO(3), NO(4), OK(999999), NO(999999),
	    OK(1000000 - W), NO(1000000 - W - 1), OK(1000001) } },
	{ "jump by exactly one ring", { OK(100), OK(100 + 8192), NO(100), OK(100 + 8192 - W) } },
	{ "counter limit",
	  { OK(LIMIT - 1), NO(LIMIT), NO(LIMIT + 1), NO(UINT64_MAX), NO(LIMIT - 1), OK(LIMIT - 2),
	    OK(LIMIT - 1 - W), NO(LIMIT - 2 - W) } },
	{ "rejected limit leaves the window alone", { NO(LIMIT), NO(UINT64_MAX), OK(0), OK(1) } },
	{ "huge jump from empty", { OK(UINT64_MAX / 2), NO(0), OK(UINT64_MAX / 2 - W) } },
};

static void test_table(void **state)
{
	struct replay_window w;
	size_t i, j;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		replay_window_init(&w);
		for (j = 0; j < MAX_STEPS && cases[i].steps[j].used; j++) {
			const struct step *s = &cases[i].steps[j];
			bool got = replay_window_check(&w, s->counter);

			if (got != s->accept)
				fail_msg("case \"%s\", step %zu: counter %llu %s, want %s",
					 cases[i].name, j, (unsigned long long)s->counter,
					 got ? "accepted" : "rejected",
					 s->accept ? "accepted" : "rejected");
		}
	}
}

/*
 * Both sides of the edge for G at every position within a word and across
 * word and ring boundaries: every unseen counter in [G - W, G) is accepted,
 * G - W - 1 is not.
 */
static void test_edge_every_offset(void **state)
{
	static const uint64_t bases[] = { W, 8191, 8192, 10000, 65536 * 3 + 17 };
	struct replay_window w;
	uint64_t g, n;
	size_t b;
	unsigned off;

	(void)state;
	for (b = 0; b < sizeof(bases) / sizeof(bases[0]); b++) {
		for (off = 0; off < 64; off++) {
			g = bases[b] + off;
			replay_window_init(&w);
			assert_true(replay_window_check(&w, g));
			assert_false(replay_window_check(&w, g - W - 1));
			for (n = g - W; n < g; n++)
				assert_true(replay_window_check(&w, n));
			for (n = g - W; n <= g; n++)
				assert_false(replay_window_check(&w, n));
		}
	}
}

/* Bits recycled from the oldest words must be cleared when the window moves. */
static void test_recycled_words_are_cleared(void **state)
{
	static const uint64_t jumps[] = { 1, 63, 64, 65, 64 * 5, 8191, 8192, 8193, 100000 };
	struct replay_window w;
	uint64_t n, g;
	size_t j;

	(void)state;
	for (j = 0; j < sizeof(jumps) / sizeof(jumps[0]); j++) {
		replay_window_init(&w);
		for (n = 0; n < 8192; n++)
			assert_true(replay_window_check(&w, n));
		g = 8191 + jumps[j];
		assert_true(replay_window_check(&w, g));
		/* Everything new in the window is accepted; everything seen is not. */
		for (n = g > W ? g - W : 0; n < g; n++)
			assert_true(replay_window_check(&w, n) == (n >= 8192));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_edge_every_offset),
		cmocka_unit_test(test_recycled_words_are_cleared),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
