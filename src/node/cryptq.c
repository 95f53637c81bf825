/* SPDX-License-Identifier: MIT */
/*
 * Ordered parallel crypto queue.
 *
 * A slot moves FREE -> QUEUED (a producer filled it at `tail`) -> BUSY (a worker
 * took it at `work`) -> DONE (its step ran on every packet) -> FREE (flushed at
 * `head`). head <= work <= tail are free-running 64-bit sequence numbers; the
 * slot of sequence s is slots[s % nslots], and the ring is full when
 * tail - head == nslots. Workers take slots in sequence order but finish in any
 * order; whoever marks a slot DONE then tries to flush: if nobody is flushing
 * the lane, it flushes every consecutive DONE slot from head, with the lock
 * dropped, then looks again, because workers that finished meanwhile saw
 * `flushing` and left their slot to it. That is the "flush lock" as a flag:
 * a worker never sleeps waiting for a flusher, it goes back to crypto.
 *
 * One mutex guards the indices of all lanes. It is taken once per batch by the
 * producer and twice per batch by a worker (take, finish), never per packet,
 * and never across a callback.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "node/cryptq.h"

enum slot_state {
	SLOT_FREE,
	SLOT_QUEUED,
	SLOT_BUSY,
	SLOT_DONE,
};

struct slot {
	enum slot_state state;
	unsigned n;
	struct pkt *pkts[CRYPTQ_BATCH_MAX];
};

struct lane {
	struct cryptq_lane ops;
	struct slot *slots;
	uint64_t head;
	uint64_t work;
	uint64_t tail;
	bool flushing;
	struct cryptq_stats stats;
};

struct cryptq {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned nslots;
	unsigned n_lanes;
	unsigned rr;   /* next lane a worker looks at first: lanes share the workers fairly */
	unsigned idle; /* workers waiting on cond: signal only when someone sleeps */
	bool stopping;
	struct lane lanes[CRYPTQ_LANES_MAX];
	unsigned n_threads;
	pthread_t *threads;
};

static struct slot *slot_at(struct cryptq *q, struct lane *l, uint64_t seq)
{
	return &l->slots[seq % q->nslots];
}

/* Called and returns with q->lock held. */
static void lane_flush(struct cryptq *q, struct lane *l)
{
	while (!l->flushing && l->head != l->tail && slot_at(q, l, l->head)->state == SLOT_DONE) {
		uint64_t from = l->head, to = l->head, s;

		while (to != l->tail && slot_at(q, l, to)->state == SLOT_DONE)
			to++;
		l->flushing = true;
		pthread_mutex_unlock(&q->lock);
		/*
		 * Slots [from, to) stay DONE and head does not move while we flush, so no
		 * producer can reuse them and no other thread flushes this lane.
		 */
		for (s = from; s != to; s++) {
			struct slot *sl = slot_at(q, l, s);

			l->ops.flush(l->ops.ctx, sl->pkts, sl->n);
		}
		pthread_mutex_lock(&q->lock);
		for (s = from; s != to; s++)
			slot_at(q, l, s)->state = SLOT_FREE;
		l->head = to;
		l->flushing = false;
	}
}

static void slot_run(struct lane *l, struct slot *sl)
{
	unsigned i;

	for (i = 0; i < sl->n; i++)
		l->ops.step(l->ops.ctx, sl->pkts[i]);
}

/* A lane with a slot waiting for a worker, round-robin, or NULL. Lock held. */
static struct lane *lane_pick(struct cryptq *q)
{
	unsigned i;

	for (i = 0; i < q->n_lanes; i++) {
		struct lane *l = &q->lanes[(q->rr + i) % q->n_lanes];

		if (l->work != l->tail) {
			q->rr = (q->rr + i + 1) % q->n_lanes;
			return l;
		}
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	struct cryptq *q = arg;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct lane *l = lane_pick(q);
		struct slot *sl;

		if (!l) {
			/* Drain before exiting: stopping only ends the wait once nothing is queued.
			 */
			if (q->stopping)
				break;
			q->idle++;
			pthread_cond_wait(&q->cond, &q->lock);
			q->idle--;
			continue;
		}
		sl = slot_at(q, l, l->work++);
		sl->state = SLOT_BUSY;
		pthread_mutex_unlock(&q->lock);
		slot_run(l, sl);
		pthread_mutex_lock(&q->lock);
		sl->state = SLOT_DONE;
		lane_flush(q, l);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

struct cryptq *cryptq_new(const struct cryptq_lane *lanes, unsigned n_lanes, unsigned slots,
			  unsigned workers)
{
	struct cryptq *q;
	unsigned i;
	int err;

	if (n_lanes == 0 || n_lanes > CRYPTQ_LANES_MAX || slots == 0) {
		errno = EINVAL;
		return NULL;
	}
	q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	q->nslots = slots;
	q->n_lanes = n_lanes;
	for (i = 0; i < n_lanes; i++) {
		q->lanes[i].ops = lanes[i];
		q->lanes[i].slots = calloc(slots, sizeof(struct slot));
		if (!q->lanes[i].slots)
			goto fail;
	}
	if (workers) {
		q->threads = calloc(workers, sizeof(pthread_t));
		if (!q->threads)
			goto fail;
	}
	for (i = 0; i < workers; i++) {
		char name[16];
		int r = pthread_create(&q->threads[i], NULL, worker_main, q);

		if (r) {
			errno = r;
			goto fail;
		}
		q->n_threads++;
		snprintf(name, sizeof(name), "crypto-%u", i % 1000);
		pthread_setname_np(q->threads[i], name);
	}
	return q;
fail:
	err = errno;
	cryptq_free(q);
	errno = err;
	return NULL;
}

unsigned cryptq_submit(struct cryptq *q, unsigned lane, struct pkt **pkts, unsigned n)
{
	struct lane *l = &q->lanes[lane];
	unsigned accepted = 0, queued = 0;
	uint64_t first;
	bool self;

	pthread_mutex_lock(&q->lock);
	/*
	 * The producer runs its own slots when there are no workers, and also when
	 * the batch is small and no slot is waiting for a worker: handing one ping
	 * or a few ACKs to another thread costs two wake-ups (tens of microseconds of
	 * latency) and gains nothing. Under load batches are large or queued, and
	 * go to the workers. Order is unaffected: flush still runs in sequence.
	 */
	self = !q->n_threads || (l->work == l->tail && n <= CRYPTQ_INLINE_MAX);
	first = l->tail;
	while (!q->stopping && accepted < n && l->tail - l->head < q->nslots) {
		struct slot *sl = slot_at(q, l, l->tail++);
		unsigned k = MIN(n - accepted, (unsigned)CRYPTQ_BATCH_MAX);

		memcpy(sl->pkts, pkts + accepted, k * sizeof(*pkts));
		sl->n = k;
		/* Slots the producer runs are BUSY at once: no worker may take them. */
		sl->state = self ? SLOT_BUSY : SLOT_QUEUED;
		accepted += k;
		queued++;
	}
	if (self)
		l->work = l->tail;
	l->stats.batches += queued;
	l->stats.packets += accepted;
	l->stats.dropped += n - accepted;
	if (q->idle && !self) {
		if (queued > 1)
			pthread_cond_broadcast(&q->cond);
		else if (queued)
			pthread_cond_signal(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);

	if (self && queued) {
		uint64_t s;

		for (s = first; s != first + queued; s++)
			slot_run(l, slot_at(q, l, s));
		pthread_mutex_lock(&q->lock);
		for (s = first; s != first + queued; s++)
			slot_at(q, l, s)->state = SLOT_DONE;
		lane_flush(q, l);
		pthread_mutex_unlock(&q->lock);
	}
	if (accepted < n)
		l->ops.drop(l->ops.ctx, pkts + accepted, n - accepted);
	return accepted;
}

void cryptq_stats_get(struct cryptq *q, unsigned lane, struct cryptq_stats *ret)
{
	pthread_mutex_lock(&q->lock);
	*ret = q->lanes[lane].stats;
	pthread_mutex_unlock(&q->lock);
}

void cryptq_free(struct cryptq *q)
{
	unsigned i;

	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (i = 0; i < q->n_threads; i++)
		pthread_join(q->threads[i], NULL);
	/*
	 * Every worker left with nothing queued and every DONE slot flushed (a flusher
	 * re-checks after clearing `flushing`), so the rings are empty here.
	 */
	for (i = 0; i < q->n_lanes; i++)
		free(q->lanes[i].slots);
	free(q->threads);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q);
}
