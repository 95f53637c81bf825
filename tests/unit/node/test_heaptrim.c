/* SPDX-License-Identifier: MIT */
/*
 * The heap trim after a burst of control-plane work (src/node/heaptrim.h): every piece of
 * work pushes the trim out, so a burst is trimmed once, a quiet period after its last
 * piece; then nothing stays armed, so an idle daemon never wakes for it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../loop_until.h"
#include "base/loop.h"
#include "base/time.h"
#include "node/heaptrim.h"

static unsigned long trims, trims_wanted;

static void count_trim(void)
{
	trims++;
}

static bool trimmed(void *arg)
{
	(void)arg;
	return trims >= trims_wanted;
}

static bool trimmed_default(void *arg)
{
	return ((struct heap_trim *)arg)->trims > 0;
}

static bool never(void *arg)
{
	(void)arg;
	return false;
}

/* Kicks a second apart, each within the quiet period of the one before: the trim moves. */
static void test_burst_moves_the_trim(void **state)
{
	struct loop *loop = loop_new();
	struct heap_trim h;
	uint64_t t0;
	unsigned i;

	(void)state;
	assert_non_null(loop);
	heap_trim_init(&h, loop, 5 * NSEC_PER_SEC);
	h.trim = count_trim;
	trims = 0;
	assert_false(h.timer.armed); /* idle from the start */
	t0 = loop_now_ns(loop);
	for (i = 0; i < 10; i++) {
		heap_trim_kick(&h, t0 + i * NSEC_PER_SEC);
		assert_true(h.timer.armed);
		assert_int_equal(h.timer.deadline_ns, t0 + i * NSEC_PER_SEC + 5 * NSEC_PER_SEC);
	}
	/* The daemon's teardown: nothing fires after it. */
	heap_trim_stop(&h);
	assert_false(h.timer.armed);
	assert_int_equal(trims, 0);
	loop_free(loop);
}

/* Through the loop: a burst is one trim, after which nothing is armed and nothing fires. */
static void test_one_trim_then_idle(void **state)
{
	struct loop *loop = loop_new();
	struct heap_trim h;
	unsigned i;

	(void)state;
	assert_non_null(loop);
	heap_trim_init(&h, loop, NSEC_PER_MSEC);
	h.trim = count_trim;
	trims = 0;
	for (i = 0; i < 10; i++)
		heap_trim_kick(&h, loop_now_ns(loop));
	trims_wanted = 1;
	assert_true(loop_until(loop, trimmed, NULL, 5 * NSEC_PER_SEC));
	assert_int_equal(trims, 1);
	assert_int_equal(h.trims, 1);
	assert_false(h.timer.armed);
	/* Idle: the loop runs on and nothing trims again. */
	assert_false(loop_until(loop, never, NULL, 20 * NSEC_PER_MSEC));
	assert_int_equal(trims, 1);
	/* The next burst is trimmed again, once. */
	heap_trim_kick(&h, loop_now_ns(loop));
	trims_wanted = 2;
	assert_true(loop_until(loop, trimmed, NULL, 5 * NSEC_PER_SEC));
	assert_int_equal(h.trims, 2);
	assert_int_equal(trims, 2);
	heap_trim_stop(&h);
	loop_free(loop);
}

/* The real trim runs (malloc_trim) and counts. */
static void test_default_trim(void **state)
{
	struct loop *loop = loop_new();
	struct heap_trim h;

	(void)state;
	assert_non_null(loop);
	heap_trim_init(&h, loop, NSEC_PER_MSEC);
	heap_trim_kick(&h, loop_now_ns(loop));
	assert_true(loop_until(loop, trimmed_default, &h, 5 * NSEC_PER_SEC));
	assert_int_equal(h.trims, 1);
	loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_burst_moves_the_trim),
	    cmocka_unit_test(test_one_trim_then_idle),
	    cmocka_unit_test(test_default_trim),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
