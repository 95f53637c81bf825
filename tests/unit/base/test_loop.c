/* SPDX-License-Identifier: MIT */
/* The control loop: timers in deadline order, wake from another thread, fd removal in callbacks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>

#include "base/loop.c"

static struct loop *g_loop;
static int fired[4];
static int order[4];
static int n_fired;

static struct loop_timer t[4];

static void timer_cb(struct loop_timer *timer)
{
	int idx = (int)(timer - t);

	fired[idx]++;
	order[n_fired++] = idx;
	if (n_fired == 3)
		loop_stop(g_loop);
}

static void test_timers(void **state)
{
	uint64_t now;
	int i;

	(void)state;
	g_loop = loop_new();
	assert_non_null(g_loop);
	now = time_now_ns();
	for (i = 0; i < 4; i++)
		t[i].cb = timer_cb;
	/* Different deadlines, armed out of order; t[3] is disarmed before it fires. */
	loop_timer_arm(g_loop, &t[2], now + 30 * NSEC_PER_MSEC);
	loop_timer_arm(g_loop, &t[0], now + 10 * NSEC_PER_MSEC);
	loop_timer_arm(g_loop, &t[3], now + 5 * NSEC_PER_MSEC);
	loop_timer_arm(g_loop, &t[1], now + 20 * NSEC_PER_MSEC);
	loop_timer_disarm(g_loop, &t[3]);
	assert_int_equal(loop_run(g_loop), 0);
	assert_int_equal(order[0], 0);
	assert_int_equal(order[1], 1);
	assert_int_equal(order[2], 2);
	assert_int_equal(fired[3], 0);
	assert_true(loop_now_ns(g_loop) >= now + 30 * NSEC_PER_MSEC);
	loop_free(g_loop);
}

static int wakes;

static void on_wake(struct loop *loop, void *ctx)
{
	(void)ctx;
	wakes++;
	loop_stop(loop);
}

static void *waker(void *arg)
{
	int i;

	usleep(20000);
	for (i = 0; i < 100; i++)
		loop_wake(arg);
	return NULL;
}

static void test_wake(void **state)
{
	pthread_t th;

	(void)state;
	g_loop = loop_new();
	loop_wake_cb_set(g_loop, on_wake, NULL);
	pthread_create(&th, NULL, waker, g_loop);
	assert_int_equal(loop_run(g_loop), 0);
	pthread_join(th, NULL);
	/* Wakes coalesce: one callback (maybe two if the loop read between writes), not 100. */
	assert_true(wakes >= 1 && wakes < 100);
	loop_free(g_loop);
}

struct pair {
	struct loop_fd a, b;
	int calls;
};

static struct pair g_pair;

/* Each handler deletes both: the other's pending event of this iteration must not run. */
static void pair_cb(struct loop_fd *h, uint32_t events)
{
	(void)events;
	g_pair.calls++;
	loop_fd_del(g_loop, h == &g_pair.a ? &g_pair.b : &g_pair.a);
	loop_fd_del(g_loop, h);
	loop_stop(g_loop);
}

static void test_fd_del_in_callback(void **state)
{
	int fa[2], fb[2];

	(void)state;
	g_loop = loop_new();
	assert_int_equal(pipe(fa), 0);
	assert_int_equal(pipe(fb), 0);
	g_pair.a = (struct loop_fd){.fd = fa[0], .cb = pair_cb};
	g_pair.b = (struct loop_fd){.fd = fb[0], .cb = pair_cb};
	assert_int_equal(loop_fd_add(g_loop, &g_pair.a, EPOLLIN), 0);
	assert_int_equal(loop_fd_add(g_loop, &g_pair.b, EPOLLIN), 0);
	/* Both readable before the loop runs: one epoll_wait returns both. */
	assert_int_equal(write(fa[1], "x", 1), 1);
	assert_int_equal(write(fb[1], "x", 1), 1);
	assert_int_equal(loop_run(g_loop), 0);
	assert_int_equal(g_pair.calls, 1);
	close(fa[0]);
	close(fa[1]);
	close(fb[0]);
	close(fb[1]);
	loop_free(g_loop);
}

/* Many timers, armed, re-armed and disarmed at random, fire in deadline order. */
#define N_RAND 2000
static struct loop_timer rt[N_RAND];
static uint64_t rt_expect[N_RAND]; /* final deadline, or TIME_NEVER if disarmed */
static uint64_t last_fired;
static int n_rand_fired, n_rand_expected;

static void rand_cb(struct loop_timer *timer)
{
	int idx = (int)(timer - rt);

	assert_true(rt_expect[idx] != TIME_NEVER);
	/* fired with the deadline it was last armed with, never before an earlier one */
	assert_true(rt_expect[idx] >= last_fired);
	assert_true(rt_expect[idx] <= loop_now_ns(g_loop));
	last_fired = rt_expect[idx];
	rt_expect[idx] = TIME_NEVER;
	if (++n_rand_fired == n_rand_expected)
		loop_stop(g_loop);
}

static void heap_check(struct loop *loop)
{
	size_t i;

	for (i = 0; i < loop->heap_len; i++) {
		assert_int_equal(loop->heap[i]->heap_index, i);
		if (i > 0)
			assert_true(loop->heap[(i - 1) / 2]->deadline_ns <= loop->heap[i]->deadline_ns);
	}
}

static void test_timers_random(void **state)
{
	uint64_t now;
	int i, op;

	(void)state;
	srand(7);
	g_loop = loop_new();
	assert_non_null(g_loop);
	now = time_now_ns();
	for (i = 0; i < N_RAND; i++) {
		rt[i].cb = rand_cb;
		rt_expect[i] = TIME_NEVER;
	}
	for (op = 0; op < 20000; op++) {
		i = rand() % N_RAND;
		if (rand() % 4 == 0) {
			loop_timer_disarm(g_loop, &rt[i]);
			rt_expect[i] = TIME_NEVER;
		} else {
			uint64_t d = now + (uint64_t)(rand() % 50000) * 1000; /* within 50 ms */

			loop_timer_arm(g_loop, &rt[i], d);
			rt_expect[i] = d;
		}
		if (op % 1000 == 0)
			heap_check(g_loop);
	}
	heap_check(g_loop);
	n_rand_expected = 0;
	for (i = 0; i < N_RAND; i++)
		n_rand_expected += rt_expect[i] != TIME_NEVER;
	assert_true(n_rand_expected > 0);
	last_fired = 0;
	n_rand_fired = 0;
	assert_int_equal(loop_run(g_loop), 0);
	assert_int_equal(n_rand_fired, n_rand_expected);
	assert_int_equal(g_loop->heap_len, 0);
	loop_free(g_loop);
}

/* A callback disarms another due timer and re-arms a third: the disarmed one never fires. */
static struct loop_timer ct[3];
static int ct_fired[3];

static void cb_disarming(struct loop_timer *timer)
{
	int idx = (int)(timer - ct);

	ct_fired[idx]++;
	if (idx == 0) {
		loop_timer_disarm(g_loop, &ct[1]);
		loop_timer_arm(g_loop, &ct[2], loop_now_ns(g_loop) + 5 * NSEC_PER_MSEC);
		/* disarming oneself inside one's callback is harmless */
		loop_timer_disarm(g_loop, &ct[0]);
	} else if (idx == 2) {
		loop_stop(g_loop);
	}
}

static void test_disarm_in_callback(void **state)
{
	uint64_t now;
	int i;

	(void)state;
	g_loop = loop_new();
	assert_non_null(g_loop);
	now = time_now_ns();
	for (i = 0; i < 3; i++)
		ct[i].cb = cb_disarming;
	/* all three due in the same iteration */
	loop_timer_arm(g_loop, &ct[0], now + 1 * NSEC_PER_MSEC);
	loop_timer_arm(g_loop, &ct[1], now + 2 * NSEC_PER_MSEC);
	loop_timer_arm(g_loop, &ct[2], now + 3 * NSEC_PER_MSEC);
	usleep(10000);
	assert_int_equal(loop_run(g_loop), 0);
	assert_int_equal(ct_fired[0], 1);
	assert_int_equal(ct_fired[1], 0);
	assert_int_equal(ct_fired[2], 1);
	loop_free(g_loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_timers),
	    cmocka_unit_test(test_wake),
	    cmocka_unit_test(test_fd_del_in_callback),
	    cmocka_unit_test(test_timers_random),
	    cmocka_unit_test(test_disarm_in_callback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
