/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_WORKQ_H
#define TRELLIS_BASE_WORKQ_H

/*
 * A small pool of threads for blocking work (a database, a password hash, an
 * HTTP request to an identity provider, a port mapping request) on behalf of a
 * loop: the loop thread submits a job, a pool thread runs its work function,
 * and its done function runs back on the loop thread (through a loop mailbox),
 * so done may touch everything the loop owns without a lock. libuv's
 * uv_queue_work, with the job embedded in the caller's struct.
 *
 * Every submitted job's done runs exactly once, on the loop thread: err 0
 * after its work ran, or -ECANCELED when it never started (workq_cancel, or
 * workq_free with the job still queued). That single rule is what lets done
 * free the job.
 *
 * All functions but the work function run on the loop thread.
 */

#include <stddef.h>

#include "base/loop.h"

struct workq;
struct workq_job;

typedef void (*workq_work_fn)(struct workq_job *j);
typedef void (*workq_done_fn)(struct workq_job *j, int err);

/* Embedded in the caller's struct; zeroed before its first submit. */
struct workq_job {
	/* workq's, set by workq_submit. */
	workq_work_fn work;
	workq_done_fn done;
	struct workq *q;
	struct workq_job *next;
	struct loop_msg msg;
	int state;
};

/* threads >= 1; queue_max: queued (not running) jobs beyond which submit fails. */
int workq_new(struct loop *loop, unsigned threads, size_t queue_max, struct workq **ret);
/*
 * Accepts NULL. Cancels the queued jobs (done with -ECANCELED), waits for the
 * running ones to finish their work and runs their done (err 0), all before it
 * returns. Not from a work or done function. Work that may block for long
 * should bound itself (deadlines), since this waits for it.
 */
void workq_free(struct workq *q);

/* 0, -EAGAIN (queue_max jobs wait), -ESHUTDOWN (inside workq_free), -EBUSY (j in flight). */
int workq_submit(struct workq *q, struct workq_job *j, workq_work_fn work, workq_done_fn done);
/*
 * 0: j had not started; its done has run with -ECANCELED before this returns.
 * -EBUSY: its work is running or has run (done follows with 0). -ENOENT: j is
 * not in flight (done already ran).
 */
int workq_cancel(struct workq_job *j);

#endif
