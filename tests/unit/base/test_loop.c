/* SPDX-License-Identifier: MIT */
/*
 * The control loop: timers in deadline order, async sources woken from other
 * threads and signal handlers, mailboxes, fd removal in callbacks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>

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
static struct loop_async wake_async;

static void on_wake(struct loop_async *a)
{
	(void)a;
	wakes++;
	loop_stop(g_loop);
}

static void *waker(void *arg)
{
	int i;

	(void)arg;
	usleep(20000);
	for (i = 0; i < 100; i++)
		loop_async_send(&wake_async);
	return NULL;
}

static void test_wake(void **state)
{
	pthread_t th;

	(void)state;
	g_loop = loop_new();
	wake_async.cb = on_wake;
	loop_async_add(g_loop, &wake_async);
	pthread_create(&th, NULL, waker, NULL);
	assert_int_equal(loop_run(g_loop), 0);
	pthread_join(th, NULL);
	/* Wakes coalesce: one callback (maybe two if the loop read between writes), not 100. */
	assert_true(wakes >= 1 && wakes < 100);
	loop_async_del(&wake_async);
	loop_free(g_loop);
}

static void guard_fire(struct loop_timer *t)
{
	(void)t;
	fail_msg("the loop was not woken within 20 s: a send was lost");
}

/* Stops a test's loop run if what it waits for never comes, instead of hanging. */
static struct loop_timer guard = {.cb = guard_fire};

static void guard_arm(void)
{
	loop_timer_arm(g_loop, &guard, time_now_ns() + 20 * NSEC_PER_SEC);
}

/*
 * Sixteen sources: each callback runs for its own source only, once per burst
 * of sends; a source deleted by another's callback in the same wake-up does
 * not run; a source never sent never runs.
 */
#define N_SRC 16
static struct loop_async src[N_SRC];
static int src_calls[N_SRC];

static void src_cb(struct loop_async *a)
{
	int i = (int)(a - src), k;

	src_calls[i]++;
	/* 0 and 1 are both pending in one wake-up: whichever runs first deletes the other. */
	if (i == 0 || i == 1)
		loop_async_del(&src[1 - i]);
	for (k = 2; k < N_SRC; k += 2)
		if (!src_calls[k])
			return;
	loop_stop(g_loop);
}

static void *src_sender(void *arg)
{
	int i, round;

	(void)arg;
	for (round = 0; round < 3; round++)
		for (i = 2; i < N_SRC; i += 2)
			loop_async_send(&src[i]);
	return NULL;
}

static void test_async_sources(void **state)
{
	pthread_t th;
	int i;

	(void)state;
	g_loop = loop_new();
	assert_non_null(g_loop);
	for (i = 0; i < N_SRC; i++) {
		src[i].cb = src_cb;
		loop_async_add(g_loop, &src[i]);
	}
	/* Sent before the loop runs: delivered by its first iteration. */
	loop_async_send(&src[0]);
	loop_async_send(&src[1]);
	guard_arm();
	assert_int_equal(pthread_create(&th, NULL, src_sender, NULL), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(loop_run(g_loop), 0);
	assert_int_equal(src_calls[0] + src_calls[1], 1);
	for (i = 2; i < N_SRC; i++) {
		if (i % 2)
			assert_int_equal(src_calls[i], 0);
		else
			/* three sends before the loop ran: one call */
			assert_int_equal(src_calls[i], 1);
	}
	loop_timer_disarm(g_loop, &guard);
	for (i = 0; i < N_SRC; i++)
		loop_async_del(&src[i]);
	loop_free(g_loop);
}

/*
 * Eight threads each publish a counter and send, 20,000 times, racing the
 * loop's reads. A lost send would leave the loop asleep with a counter unseen
 * (the guard timer fails the test); coalescing shows as far fewer calls than
 * sends.
 *
 * Then ping-pong: four threads each send and wait until the callback has seen
 * their send before the next one, 3,000 rounds each, so sends land in every
 * phase of the loop's wake-up (flags being cleared, sources being scanned).
 * A lost send leaves its thread waiting and the loop asleep.
 */
#define N_THREADS 8
#define N_SENDS 20000
#define N_PING_THREADS 4
#define N_PINGS 3000
static struct loop_async race_async;
static atomic_int race_seq[N_THREADS];
static int race_calls, race_threads;
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t seen_cond = PTHREAD_COND_INITIALIZER;
static int race_seen[N_THREADS];

static void race_cb(struct loop_async *a)
{
	int i, want = race_threads == N_THREADS ? N_SENDS : N_PINGS;
	bool all = true;

	(void)a;
	race_calls++;
	pthread_mutex_lock(&seen_lock);
	for (i = 0; i < race_threads; i++) {
		race_seen[i] = atomic_load(&race_seq[i]);
		all = all && race_seen[i] == want;
	}
	pthread_cond_broadcast(&seen_cond);
	pthread_mutex_unlock(&seen_lock);
	if (all)
		loop_stop(g_loop);
}

static void *race_sender(void *arg)
{
	int i = (int)(intptr_t)arg, k;

	for (k = 1; k <= N_SENDS; k++) {
		atomic_store(&race_seq[i], k);
		loop_async_send(&race_async);
	}
	return NULL;
}

static void *ping_sender(void *arg)
{
	int i = (int)(intptr_t)arg, k;

	for (k = 1; k <= N_PINGS; k++) {
		atomic_store(&race_seq[i], k);
		loop_async_send(&race_async);
		pthread_mutex_lock(&seen_lock);
		while (race_seen[i] < k)
			pthread_cond_wait(&seen_cond, &seen_lock);
		pthread_mutex_unlock(&seen_lock);
	}
	return NULL;
}

static void race_run(int threads, void *(*fn)(void *))
{
	pthread_t th[N_THREADS];
	int i;

	race_threads = threads;
	race_calls = 0;
	for (i = 0; i < threads; i++) {
		atomic_store(&race_seq[i], 0);
		race_seen[i] = 0;
	}
	guard_arm();
	for (i = 0; i < threads; i++)
		assert_int_equal(pthread_create(&th[i], NULL, fn, (void *)(intptr_t)i), 0);
	assert_int_equal(loop_run(g_loop), 0);
	loop_timer_disarm(g_loop, &guard);
	for (i = 0; i < threads; i++)
		pthread_join(th[i], NULL);
}

static void test_async_never_lost(void **state)
{
	int i;

	(void)state;
	g_loop = loop_new();
	assert_non_null(g_loop);
	race_async.cb = race_cb;
	loop_async_add(g_loop, &race_async);

	race_run(N_THREADS, race_sender);
	for (i = 0; i < N_THREADS; i++)
		assert_int_equal(race_seen[i], N_SENDS);
	printf("%d sends from %d threads: %d callbacks\n", N_THREADS * N_SENDS, N_THREADS,
	       race_calls);
	assert_true(race_calls >= 1 && race_calls < N_THREADS * N_SENDS);

	race_run(N_PING_THREADS, ping_sender);
	for (i = 0; i < N_PING_THREADS; i++)
		assert_int_equal(race_seen[i], N_PINGS);
	printf("ping-pong: %d sends from %d threads: %d callbacks\n", N_PING_THREADS * N_PINGS,
	       N_PING_THREADS, race_calls);

	loop_async_del(&race_async);
	loop_free(g_loop);
}

/* A send during the callback brings another call; a send from a signal handler works. */
static struct loop_async again_async;
static int again_calls;

static void again_cb(struct loop_async *a)
{
	if (++again_calls < 3)
		loop_async_send(a);
	else
		loop_stop(g_loop);
}

static void on_usr1(int signo)
{
	(void)signo;
	loop_async_send(&again_async);
}

static void test_async_again_and_signal(void **state)
{
	struct sigaction sa = {.sa_handler = on_usr1};

	(void)state;
	g_loop = loop_new();
	assert_non_null(g_loop);
	again_async.cb = again_cb;
	loop_async_add(g_loop, &again_async);
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);
	assert_int_equal(raise(SIGUSR1), 0);
	guard_arm();
	assert_int_equal(loop_run(g_loop), 0);
	assert_int_equal(again_calls, 3);
	signal(SIGUSR1, SIG_DFL);
	loop_timer_disarm(g_loop, &guard);
	loop_async_del(&again_async);
	loop_free(g_loop);
}

/* --- mailbox --- */

struct tmsg {
	struct loop_msg m;
	int producer, seq;
};

#define N_PRODUCERS 4
#define N_MSGS 5000
static struct loop_mailbox g_mb;
static pthread_t loop_thread;
static int next_seq[N_PRODUCERS + 1];
static int msgs_run, msgs_dropped, msgs_wrong_thread, msgs_out_of_order;

static void tmsg_run(struct loop_msg *m)
{
	struct tmsg *t = container_of(m, struct tmsg, m);

	if (!pthread_equal(pthread_self(), loop_thread))
		msgs_wrong_thread++;
	if (t->seq != next_seq[t->producer])
		msgs_out_of_order++;
	next_seq[t->producer] = t->seq + 1;
	msgs_run++;
	free(t);
	if (msgs_run == N_PRODUCERS * N_MSGS)
		loop_stop(g_loop);
}

static void tmsg_drop(struct loop_msg *m)
{
	msgs_dropped++;
	free(container_of(m, struct tmsg, m));
}

static struct tmsg *tmsg_new(int producer, int seq)
{
	struct tmsg *t = calloc(1, sizeof(*t));

	assert_non_null(t);
	t->m.run = tmsg_run;
	t->m.drop = tmsg_drop;
	t->producer = producer;
	t->seq = seq;
	return t;
}

static void *producer_main(void *arg)
{
	int p = (int)(intptr_t)arg, k;

	for (k = 0; k < N_MSGS; k++)
		loop_mailbox_post(&g_mb, &tmsg_new(p, k)->m);
	return NULL;
}

static void test_mailbox_order(void **state)
{
	pthread_t th[N_PRODUCERS];
	int i;

	(void)state;
	g_loop = loop_new();
	assert_non_null(g_loop);
	loop_thread = pthread_self();
	loop_mailbox_init(g_loop, &g_mb);
	guard_arm();
	for (i = 0; i < N_PRODUCERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, producer_main, (void *)(intptr_t)i), 0);
	assert_int_equal(loop_run(g_loop), 0);
	for (i = 0; i < N_PRODUCERS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(msgs_run, N_PRODUCERS * N_MSGS);
	assert_int_equal(msgs_out_of_order, 0);
	assert_int_equal(msgs_wrong_thread, 0);
	for (i = 0; i < N_PRODUCERS; i++)
		assert_int_equal(next_seq[i], N_MSGS);
	loop_timer_disarm(g_loop, &guard);
	loop_mailbox_close(&g_mb);
	assert_int_equal(msgs_dropped, 0);
	loop_free(g_loop);
}

/*
 * After the loop stopped, a posted message waits and is dropped (not run) when
 * the owner closes the mailbox; after close, a post is dropped at once and
 * refused. Under ASan, a leaked message fails the test.
 */
static void *late_poster(void *arg)
{
	(void)arg;
	assert_int_equal(loop_mailbox_post(&g_mb, &tmsg_new(N_PRODUCERS, 100)->m), -EPIPE);
	return NULL;
}

static void stop_fire(struct loop_timer *t)
{
	(void)t;
	loop_stop(g_loop);
}

static void test_mailbox_close(void **state)
{
	struct loop_timer stop = {.cb = stop_fire};
	pthread_t th;

	(void)state;
	g_loop = loop_new();
	assert_non_null(g_loop);
	loop_thread = pthread_self();
	msgs_run = msgs_dropped = 0;
	next_seq[N_PRODUCERS] = 0;
	loop_mailbox_init(g_loop, &g_mb);
	/* Posted before the loop runs: run by it, in order. */
	assert_int_equal(loop_mailbox_post(&g_mb, &tmsg_new(N_PRODUCERS, 0)->m), 0);
	assert_int_equal(loop_mailbox_post(&g_mb, &tmsg_new(N_PRODUCERS, 1)->m), 0);
	loop_timer_arm(g_loop, &stop, time_now_ns() + 20 * NSEC_PER_MSEC);
	assert_int_equal(loop_run(g_loop), 0);
	assert_int_equal(msgs_run, 2);

	/* The loop has stopped: these wait. */
	assert_int_equal(loop_mailbox_post(&g_mb, &tmsg_new(N_PRODUCERS, 2)->m), 0);
	assert_int_equal(loop_mailbox_post(&g_mb, &tmsg_new(N_PRODUCERS, 3)->m), 0);
	assert_int_equal(msgs_run, 2);
	assert_int_equal(msgs_dropped, 0);
	loop_mailbox_close(&g_mb);
	assert_int_equal(msgs_run, 2);
	assert_int_equal(msgs_dropped, 2);
	loop_mailbox_close(&g_mb); /* idempotent */

	/* Closed: dropped at once, on the posting thread, and nothing ever runs. */
	assert_int_equal(pthread_create(&th, NULL, late_poster, NULL), 0);
	pthread_join(th, NULL);
	assert_int_equal(msgs_dropped, 3);
	assert_int_equal(loop_mailbox_run(&g_mb), 0);
	assert_int_equal(msgs_run, 2);
	loop_free(g_loop);
}

/* A message may post more and run the mailbox itself: post order holds. */
static int nest_order[4], n_nest;
static struct loop_msg nest[4];

static void nest_run(struct loop_msg *m)
{
	int i = (int)(m - nest);

	nest_order[n_nest++] = i;
	if (i == 0) {
		loop_mailbox_post(&g_mb, &nest[2]);
		loop_mailbox_post(&g_mb, &nest[3]);
		assert_int_equal(loop_mailbox_run(&g_mb), 3); /* 1 (taken already), 2, 3 */
	}
}

static void test_mailbox_nested(void **state)
{
	int i;

	(void)state;
	g_loop = loop_new();
	assert_non_null(g_loop);
	loop_mailbox_init(g_loop, &g_mb);
	for (i = 0; i < 4; i++)
		nest[i].run = nest_run;
	loop_mailbox_post(&g_mb, &nest[0]);
	loop_mailbox_post(&g_mb, &nest[1]);
	assert_int_equal(loop_mailbox_run(&g_mb), 1);
	assert_int_equal(n_nest, 4);
	for (i = 0; i < 4; i++)
		assert_int_equal(nest_order[i], i);
	loop_mailbox_close(&g_mb);
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
	    cmocka_unit_test(test_async_sources),
	    cmocka_unit_test(test_async_never_lost),
	    cmocka_unit_test(test_async_again_and_signal),
	    cmocka_unit_test(test_mailbox_order),
	    cmocka_unit_test(test_mailbox_close),
	    cmocka_unit_test(test_mailbox_nested),
	    cmocka_unit_test(test_fd_del_in_callback),
	    cmocka_unit_test(test_timers_random),
	    cmocka_unit_test(test_disarm_in_callback),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
