// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "base/workq.h"
#include "control/mapper.h"
#include "control/mapstream.h"
#include "control/metrics.h"
#include "control/registry.h"
#include "control/session.h"

#define FLUSH_DELAY_NS (50 * NSEC_PER_MSEC) /* coalesces bursts; well inside the 1 s budget */
/* A flush that took long waits twice its duration before the next: bounded CPU share. */
#define FLUSH_DELAY_MAX_NS (400 * NSEC_PER_MSEC)
#define FULL_TURN_NS (10 * NSEC_PER_MSEC) /* full-map building per loop turn */
#define COMPILE_QUEUE_MAX 64 /* tailnets waiting for the compile thread; beyond, on the loop */

struct mapstream {
	struct loop *loop;
	struct mapper *m;
	struct registry *reg;
	struct metrics_counters *ctr;
	struct loop_timer flush_t, full_t;
	uint64_t flush_earliest_ns;          /* a long flush pushes the next one back */
	struct session *fq_head, *fq_tail;   /* sessions waiting to be sent a full netmap */
	size_t n_fq, n_full_inflight;
	size_t delta_backlog_max;
	struct workq *wq; /* the policy compiles (NULL: the mapper compiles on the loop) */
	bool stopping;	  /* mapstream_free: jobs coming back start nothing */
};

/* A tailnet's policy compile on the worker (mapper.h, "Compiling off the loop"). */
struct compile_job {
	struct workq_job job;
	struct mapstream *ms;
	struct mapper_compile *c;
};

static void compile_kick(struct mapstream *ms);

static void compile_work(struct workq_job *j)
{
	mapper_compile_run(container_of(j, struct compile_job, job)->c);
}

static void compile_done(struct workq_job *j, int err)
{
	struct compile_job *cj = container_of(j, struct compile_job, job);
	struct mapstream *ms = cj->ms;
	int r = mapper_compile_done(ms->m, cj->c, err == 0);

	free(cj);
	if (ms->stopping)
		return;
	/* Dropped as stale (the tailnet changed while it ran): compiled again at once. */
	if (r == -ESTALE)
		log_debug("control: a policy compile went stale, compiling again");
	mapstream_schedule(ms);
}

/* Every stale tailnet's compile goes to the worker, or runs here when it cannot. */
static void compile_kick(struct mapstream *ms)
{
	struct mapper_compile *c;

	while (ms->wq && mapper_compile_next(ms->m, &c) == 1) {
		struct compile_job *cj = calloc(1, sizeof(*cj));

		if (cj) {
			cj->ms = ms;
			cj->c = c;
			if (workq_submit(ms->wq, &cj->job, compile_work, compile_done) == 0)
				continue;
			free(cj);
		}
		mapper_compile_run(c);
		mapper_compile_done(ms->m, c, true);
	}
}

static void fq_push(struct mapstream *ms, struct session *ss)
{
	struct mapstream_conn *c = &ss->map;

	if (c->queued || ss->dead)
		return;
	c->queued = true;
	c->next = NULL;
	c->prev = ms->fq_tail;
	if (ms->fq_tail)
		ms->fq_tail->map.next = ss;
	else
		ms->fq_head = ss;
	ms->fq_tail = ss;
	ms->n_fq++;
	if (!ms->full_t.armed && ms->n_full_inflight < MAPSTREAM_FULL_INFLIGHT_MAX)
		loop_timer_arm(ms->loop, &ms->full_t, loop_now_ns(ms->loop));
}

static void fq_remove(struct mapstream *ms, struct session *ss)
{
	struct mapstream_conn *c = &ss->map;

	if (!c->queued)
		return;
	c->queued = false;
	if (c->prev)
		c->prev->map.next = c->next;
	else
		ms->fq_head = c->next;
	if (c->next)
		c->next->map.prev = c->prev;
	else
		ms->fq_tail = c->prev;
	c->prev = c->next = NULL;
	ms->n_fq--;
}

static void full_release(struct mapstream *ms, struct session *ss)
{
	if (!ss->map.inflight)
		return;
	ss->map.inflight = false;
	/* The node's silence counts from now (session.h). */
	ss->owed_ns = loop_now_ns(ms->loop);
	ms->n_full_inflight--;
	if (ms->fq_head && !ms->full_t.armed)
		loop_timer_arm(ms->loop, &ms->full_t, loop_now_ns(ms->loop));
}

void mapstream_full_request(struct mapstream *ms, struct session *ss, uint64_t id,
			    bool then_close)
{
	ss->map.want = true;
	ss->map.id = id;
	if (then_close)
		ss->map.close = true;
	if (!session_pending(ss))
		fq_push(ms, ss);
}

void mapstream_drained(struct mapstream *ms, struct session *ss)
{
	full_release(ms, ss);
	if (ss->map.want)
		fq_push(ms, ss);
}

void mapstream_forget(struct mapstream *ms, struct session *ss)
{
	fq_remove(ms, ss);
	full_release(ms, ss);
	ss->map.want = false;
}

/* Builds, encodes and queues the full netmap ss waits for: once per node, into the stream. */
static void full_send(struct mapstream *ms, struct session *ss)
{
	char *json = NULL;
	size_t len = 0;
	int r;

	ss->map.want = false;
	/* Joined from per-node records the mapper keeps encoded: no render+encode per peer. */
	if (ss->map.zstd)
		r = mapper_netmap_zstd(ms->m, ss->map.id, time_wall_s(), (uint8_t **)&json, &len);
	else
		r = mapper_netmap_json(ms->m, ss->map.id, time_wall_s(), &json, &len);
	if (r == 0)
		r = session_queue_json(ss, json, len);
	free(json);
	if (r < 0) {
		log_ratelimited(LOG_LEVEL_WARN, "control: %s: cannot send the netmap: %s", ss->peer,
				strerror(-r));
		session_fail(ss, METRICS_DROP_IO, "cannot build the netmap");
		return;
	}
	ms->ctr->netmaps++;
	ms->ctr->netmaps_zstd += ss->map.zstd;
	*(ss->map.zstd ? &ms->ctr->netmap_bytes_zstd : &ms->ctr->netmap_bytes_json) += len;
	ss->map.inflight = true;
	ss->map.len = len;
	ms->n_full_inflight++;
	if (ss->map.close)
		ss->close_after_write = true;
	session_flush(ss);
}

static void full_pump(struct loop_timer *t)
{
	struct mapstream *ms = container_of(t, struct mapstream, full_t);
	uint64_t t0 = time_now_ns();

	while (ms->fq_head && ms->n_full_inflight < MAPSTREAM_FULL_INFLIGHT_MAX) {
		struct session *ss = ms->fq_head;

		fq_remove(ms, ss);
		/* Output that arrived since it was queued: the drain queues it again. */
		if (ss->dead || !ss->map.want || session_pending(ss))
			continue;
		full_send(ms, ss);
		/* Yield to I/O: a burst of streams must not stall everyone else's deltas. */
		if (time_now_ns() - t0 > FULL_TURN_NS)
			break;
	}
	if (ms->fq_head && ms->n_full_inflight < MAPSTREAM_FULL_INFLIGHT_MAX)
		loop_timer_arm(ms->loop, t, loop_now_ns(ms->loop));
}

void mapstream_schedule(struct mapstream *ms)
{
	compile_kick(ms);
	if (ms->flush_t.armed || !mapper_dirty_count(ms->m))
		return;
	loop_timer_arm(ms->loop, &ms->flush_t,
		       MAX(loop_now_ns(ms->loop) + FLUSH_DELAY_NS, ms->flush_earliest_ns));
}

/* Drops what is pending for a subscriber that gets a full netmap instead. */
static void delta_discard(struct mapstream *ms, uint64_t id)
{
	if (mapper_drop_delta(ms->m, id) > 0)
		ms->ctr->deltas_superseded++;
}

static void flush_cb(struct loop_timer *t)
{
	struct mapstream *ms = container_of(t, struct mapstream, flush_t);
	uint64_t id, t0 = time_now_ns(), dt;

	while ((id = mapper_dirty_first(ms->m))) {
		struct registry_node *e = registry_node_get(ms->reg, id);
		struct session *ss = e ? e->stream : NULL;
		struct ctrl_msg m = { .type = CTRL_MSG_DELTA };
		size_t allowed;
		int r;

		if (!ss || ss->dead) {
			mapper_unsubscribe(ms->m, id);
			continue;
		}
		if (ss->map.want) {
			delta_discard(ms, id);
			continue;
		}
		/* Behind by more than a full map and a backlog: resync instead of queueing. */
		allowed = (ss->map.inflight ? ss->map.len : 0) + ms->delta_backlog_max;
		if (session_pending(ss) > allowed) {
			ms->ctr->resyncs++;
			delta_discard(ms, id);
			mapstream_full_request(ms, ss, id, false);
			continue;
		}
		r = mapper_take_delta(ms->m, id, &m.delta);
		if (r < 0) {
			mapstream_full_request(ms, ss, id, false);
			continue;
		}
		if (!m.delta)
			continue;
		ms->ctr->deltas++;
		ms->ctr->may_open_lists += m.delta->reach != NULL;
		ms->ctr->may_open_patches += m.delta->reach_patch != NULL;
		session_send(ss, &m);
		ctrl_msg_clear(&m);
	}
	dt = time_now_ns() - t0;
	ms->flush_earliest_ns = loop_now_ns(ms->loop) + MIN(2 * dt, FLUSH_DELAY_MAX_NS);
}

int mapstream_new(struct loop *loop, struct mapper *m, struct registry *reg,
		  struct metrics_counters *ctr, struct mapstream **ret)
{
	struct mapstream *ms = calloc(1, sizeof(*ms));

	if (!ms)
		return -ENOMEM;
	ms->loop = loop;
	ms->m = m;
	ms->reg = reg;
	ms->ctr = ctr;
	ms->flush_t.cb = flush_cb;
	ms->full_t.cb = full_pump;
	ms->delta_backlog_max = MAPSTREAM_DELTA_BACKLOG_MAX;
	/* Without the thread, the mapper compiles on the loop as before: slower, as right. */
	if (workq_new(loop, 1, COMPILE_QUEUE_MAX, &ms->wq) == 0)
		mapper_compile_async(m, true);
	else
		log_warn("control: no policy compile thread: compiling on the loop");
	*ret = ms;
	return 0;
}

void mapstream_free(struct mapstream *ms)
{
	if (!ms)
		return;
	/* Jobs out come back (applied or cancelled) while the mapper still stands. */
	ms->stopping = true;
	workq_free(ms->wq);
	loop_timer_disarm(ms->loop, &ms->flush_t);
	loop_timer_disarm(ms->loop, &ms->full_t);
	free(ms);
}

size_t mapstream_waiting(const struct mapstream *ms)
{
	return ms->n_fq;
}

size_t mapstream_buffered(const struct mapstream *ms)
{
	return ms->n_full_inflight;
}

void mapstream_backlog_max_set(struct mapstream *ms, size_t bytes)
{
	ms->delta_backlog_max = bytes;
}
