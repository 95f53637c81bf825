/* SPDX-License-Identifier: MIT */
/*
 * The worker pool: work on pool threads, done on the loop thread, exactly once
 * per job; cancel of a queued job, refusal of a running one; free with jobs
 * queued and running (queued ones cancelled, running ones waited for); the
 * queue cap. Jobs are malloc'd and freed in done, so ASan's leak check fails a
 * test that loses a done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>

#include "base/time.h"
#include "base/workq.c"

struct job {
	struct workq_job j;
	int id;
	pthread_t work_thread;
	bool worked;
};

static struct loop *g_loop;
static struct workq *g_q;
static pthread_t loop_thread;
static int dones, done_ok, done_cancelled, done_wrong_thread, done_before_work;
static atomic_int work_on_loop;
static int stop_at;
static int shutdown_refusals;

/* A gate that holds the work of jobs with id < gate_below until opened. */
static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open = true;
static int gate_below;
static int running;

static void job_work(struct workq_job *wj)
{
	struct job *jb = container_of(wj, struct job, j);

	jb->work_thread = pthread_self();
	if (pthread_equal(jb->work_thread, loop_thread))
		atomic_fetch_add(&work_on_loop, 1);
	pthread_mutex_lock(&gate_lock);
	running++;
	pthread_cond_broadcast(&gate_cond);
	while (jb->id < gate_below && !gate_open)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
	jb->worked = true;
}

static void job_done(struct workq_job *wj, int err)
{
	struct job *jb = container_of(wj, struct job, j);

	dones++;
	if (!pthread_equal(pthread_self(), loop_thread))
		done_wrong_thread++;
	if (err == 0) {
		done_ok++;
		if (!jb->worked)
			done_before_work++;
	} else {
		assert_int_equal(err, -ECANCELED);
		assert_false(jb->worked);
		done_cancelled++;
		/* Inside workq_free, nothing new is taken. */
		if (g_q && g_q->stopping) {
			assert_int_equal(workq_submit(g_q, wj, job_work, job_done), -ESHUTDOWN);
			shutdown_refusals++;
		}
	}
	free(jb);
	if (g_loop && dones == stop_at)
		loop_stop(g_loop);
}

static struct job *job_new(int id)
{
	struct job *jb = calloc(1, sizeof(*jb));

	assert_non_null(jb);
	jb->id = id;
	return jb;
}

static void counters_reset(void)
{
	dones = done_ok = done_cancelled = done_wrong_thread = done_before_work = 0;
	shutdown_refusals = running = 0;
	atomic_store(&work_on_loop, 0);
	gate_open = true;
	gate_below = 0;
}

static void guard_fire(struct loop_timer *t)
{
	(void)t;
	fail_msg("completions did not arrive within 20 s");
}

/* A fresh loop (this thread's) and pool, counters zeroed. */
static void start(unsigned threads, size_t queue_max)
{
	counters_reset();
	g_loop = loop_new();
	assert_non_null(g_loop);
	loop_thread = pthread_self();
	assert_int_equal(workq_new(g_loop, threads, queue_max, &g_q), 0);
}

static void finish(void)
{
	workq_free(g_q);
	g_q = NULL;
	loop_free(g_loop);
	g_loop = NULL;
}

/* Runs the loop until a done stops it; a guard fails the test after 20 s. */
static void run_loop(void)
{
	struct loop_timer guard = {.cb = guard_fire};

	loop_timer_arm(g_loop, &guard, time_now_ns() + 20 * NSEC_PER_SEC);
	assert_int_equal(loop_run(g_loop), 0);
	loop_timer_disarm(g_loop, &guard);
}

static void wait_running(int n)
{
	pthread_mutex_lock(&gate_lock);
	while (running < n)
		pthread_cond_wait(&gate_cond, &gate_lock);
	pthread_mutex_unlock(&gate_lock);
}

/* 200 jobs on 3 threads: every done once, on the loop thread, after its work on a pool thread. */
static void test_completions_on_loop(void **state)
{
	int i;

	(void)state;
	start(3, 1000);
	for (i = 0; i < 200; i++)
		assert_int_equal(workq_submit(g_q, &job_new(i)->j, job_work, job_done), 0);
	stop_at = 200;
	run_loop();
	assert_int_equal(dones, 200);
	assert_int_equal(done_ok, 200);
	assert_int_equal(done_wrong_thread, 0);
	assert_int_equal(done_before_work, 0);
	assert_int_equal(work_on_loop, 0);
	finish();
	assert_int_equal(dones, 200);
}

/* One thread: job 0 runs (held at the gate), 1 and 2 wait; 1 is cancelled, 0 cannot be. */
static void test_cancel(void **state)
{
	struct job *a, *b, *c;

	(void)state;
	start(1, 2);
	gate_open = false;
	gate_below = 1;
	a = job_new(0);
	b = job_new(1);
	c = job_new(2);
	assert_int_equal(workq_submit(g_q, &a->j, job_work, job_done), 0);
	wait_running(1);
	assert_int_equal(workq_submit(g_q, &b->j, job_work, job_done), 0);
	assert_int_equal(workq_submit(g_q, &c->j, job_work, job_done), 0);
	/* The cap counts queued jobs (b, c), not the running one. */
	{
		struct job *d = job_new(3);

		assert_int_equal(workq_submit(g_q, &d->j, job_work, job_done), -EAGAIN);
		free(d);
	}
	/* In flight: not again. */
	assert_int_equal(workq_submit(g_q, &b->j, job_work, job_done), -EBUSY);

	assert_int_equal(workq_cancel(&b->j), 0);
	/* done ran inside cancel, with -ECANCELED, on this thread; b is freed */
	assert_int_equal(dones, 1);
	assert_int_equal(done_cancelled, 1);
	assert_int_equal(workq_cancel(&a->j), -EBUSY);

	pthread_mutex_lock(&gate_lock);
	gate_open = true;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
	stop_at = 3;
	run_loop();
	assert_int_equal(done_ok, 2);
	assert_int_equal(done_wrong_thread, 0);
	finish();
}

/* Opens the gate once workq_free has begun (it broadcasts the workers' condition). */
static void *gate_opener(void *arg)
{
	struct workq *q = arg;

	pthread_mutex_lock(&q->lock);
	while (!q->stopping)
		pthread_cond_wait(&q->work, &q->lock);
	pthread_mutex_unlock(&q->lock);
	pthread_mutex_lock(&gate_lock);
	gate_open = true;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_lock);
	return NULL;
}

/*
 * Two threads hold jobs 0 and 1 at the gate, eight more wait. workq_free
 * (never having run the loop) cancels the eight, waits for the two and runs
 * their done: all ten on this thread before it returns.
 */
static void test_free_with_pending(void **state)
{
	pthread_t opener;
	int i;

	(void)state;
	start(2, 100);
	gate_open = false;
	gate_below = 2;
	assert_int_equal(workq_submit(g_q, &job_new(0)->j, job_work, job_done), 0);
	assert_int_equal(workq_submit(g_q, &job_new(1)->j, job_work, job_done), 0);
	wait_running(2);
	for (i = 2; i < 10; i++)
		assert_int_equal(workq_submit(g_q, &job_new(i)->j, job_work, job_done), 0);
	assert_int_equal(pthread_create(&opener, NULL, gate_opener, g_q), 0);
	stop_at = -1;
	workq_free(g_q);
	g_q = NULL;
	pthread_join(opener, NULL);
	assert_int_equal(dones, 10);
	assert_int_equal(done_ok, 2);
	assert_int_equal(done_cancelled, 8);
	assert_int_equal(shutdown_refusals, 8);
	assert_int_equal(done_wrong_thread, 0);
	assert_int_equal(done_before_work, 0);
	loop_free(g_loop);
	g_loop = NULL;
}

/* A done may submit its own job again (chained work); a never-submitted job cannot be cancelled. */
static int chain_left;

static void chain_done(struct workq_job *wj, int err)
{
	struct job *jb = container_of(wj, struct job, j);

	assert_int_equal(err, 0);
	assert_true(pthread_equal(pthread_self(), loop_thread));
	if (--chain_left > 0) {
		jb->worked = false;
		assert_int_equal(workq_submit(g_q, wj, job_work, chain_done), 0);
		return;
	}
	assert_int_equal(workq_cancel(wj), -ENOENT);
	free(jb);
	loop_stop(g_loop);
}

static void test_resubmit_from_done(void **state)
{
	struct workq_job fresh = {0};

	(void)state;
	start(2, 10);
	assert_int_equal(workq_cancel(&fresh), -ENOENT);
	chain_left = 5;
	assert_int_equal(workq_submit(g_q, &job_new(0)->j, job_work, chain_done), 0);
	run_loop();
	assert_int_equal(chain_left, 0);
	finish();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_completions_on_loop),
	    cmocka_unit_test(test_cancel),
	    cmocka_unit_test(test_free_with_pending),
	    cmocka_unit_test(test_resubmit_from_done),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
