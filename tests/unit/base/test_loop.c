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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_timers),
	    cmocka_unit_test(test_wake),
	    cmocka_unit_test(test_fd_del_in_callback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
