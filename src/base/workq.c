/* SPDX-License-Identifier: MIT */
/*
 * The worker pool (see workq.h). A job moves
 *
 *   idle -> queued -> running -> completed -> idle
 *              \-> (cancelled) ----------------/
 *
 * queued and running under the pool's lock; completed means its message sits
 * in the loop's mailbox; idle again just before done runs, so that done may
 * submit the same job anew.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "base/workq.h"

enum { JOB_IDLE, JOB_QUEUED, JOB_RUNNING, JOB_COMPLETED };

struct workq {
	struct loop_mailbox done; /* completions to the loop thread */
	pthread_mutex_t lock;
	pthread_cond_t work;
	struct workq_job *head, **tail;
	size_t queued, queue_max;
	bool stopping;
	unsigned n_threads;
	pthread_t threads[];
};

static void job_done_run(struct loop_msg *m)
{
	struct workq_job *j = container_of(m, struct workq_job, msg);

	j->state = JOB_IDLE;
	j->done(j, 0);
}

static void *worker_main(void *arg)
{
	struct workq *q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct workq_job *j;

		while (!q->head && !q->stopping)
			pthread_cond_wait(&q->work, &q->lock);
		if (!q->head)
			break;
		j = q->head;
		q->head = j->next;
		if (!q->head)
			q->tail = &q->head;
		q->queued--;
		j->state = JOB_RUNNING;
		pthread_mutex_unlock(&q->lock);

		j->work(j);

		pthread_mutex_lock(&q->lock);
		j->state = JOB_COMPLETED;
		pthread_mutex_unlock(&q->lock);
		/* workq_free runs the mailbox before closing it: never dropped. */
		loop_mailbox_post(&q->done, &j->msg);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

int workq_new(struct loop *loop, unsigned threads, size_t queue_max, struct workq **ret)
{
	struct workq *q;
	unsigned i;
	int r;

	if (!threads)
		return -EINVAL;
	q = calloc(1, sizeof(*q) + threads * sizeof(q->threads[0]));
	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->work, NULL);
	q->tail = &q->head;
	q->queue_max = queue_max;
	loop_mailbox_init(loop, &q->done);
	for (i = 0; i < threads; i++) {
		r = -pthread_create(&q->threads[i], NULL, worker_main, q);
		if (r < 0) {
			log_err("workq: cannot start a thread: %s", strerror(-r));
			workq_free(q);
			return r;
		}
		q->n_threads++;
	}
	*ret = q;
	return 0;
}

void workq_free(struct workq *q)
{
	struct workq_job *cancelled, *j;
	unsigned i;

	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	cancelled = q->head;
	q->head = NULL;
	q->tail = &q->head;
	q->queued = 0;
	pthread_cond_broadcast(&q->work);
	pthread_mutex_unlock(&q->lock);
	for (i = 0; i < q->n_threads; i++)
		pthread_join(q->threads[i], NULL);
	/* Work that ran reports first (it happened first), then what never started. */
	loop_mailbox_run(&q->done);
	while ((j = cancelled)) {
		cancelled = j->next;
		j->state = JOB_IDLE;
		j->done(j, -ECANCELED);
	}
	loop_mailbox_close(&q->done);
	pthread_cond_destroy(&q->work);
	pthread_mutex_destroy(&q->lock);
	free(q);
}

int workq_submit(struct workq *q, struct workq_job *j, workq_work_fn work, workq_done_fn done)
{
	int r = 0;

	pthread_mutex_lock(&q->lock);
	if (q->stopping)
		r = -ESHUTDOWN;
	else if (j->q && j->state != JOB_IDLE)
		r = -EBUSY;
	else if (q->queued >= q->queue_max)
		r = -EAGAIN;
	if (r < 0)
		goto out;
	j->work = work;
	j->done = done;
	j->q = q;
	j->next = NULL;
	j->msg = (struct loop_msg){.run = job_done_run};
	j->state = JOB_QUEUED;
	*q->tail = j;
	q->tail = &j->next;
	q->queued++;
	pthread_cond_signal(&q->work);
out:
	pthread_mutex_unlock(&q->lock);
	return r;
}

int workq_cancel(struct workq_job *j)
{
	struct workq *q = j->q;
	struct workq_job **pp;
	int r;

	if (!q)
		return -ENOENT;
	pthread_mutex_lock(&q->lock);
	if (j->state != JOB_QUEUED) {
		r = j->state == JOB_IDLE ? -ENOENT : -EBUSY;
		pthread_mutex_unlock(&q->lock);
		return r;
	}
	for (pp = &q->head; *pp != j; pp = &(*pp)->next)
		;
	*pp = j->next;
	if (!*pp)
		q->tail = pp;
	q->queued--;
	j->state = JOB_IDLE;
	pthread_mutex_unlock(&q->lock);
	j->done(j, -ECANCELED);
	return 0;
}
