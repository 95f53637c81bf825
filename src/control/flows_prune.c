// SPDX-License-Identifier: MIT
/* Retention of flow logs (flows_prune.h): rounds of chunked prunes through the store. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "control/audit.h"
#include "control/flows_prune.h"
#include "control/registry.h"
#include "control/store.h"

struct flows_pruner {
	struct store *st;
	const struct registry *reg;
	bool round;		  /* a round is under way */
	bool inflight;		  /* a chunk is being written */
	uint64_t tailnet_id;	  /* the tailnet being pruned; the round's next is the next id up */
	int64_t before;		  /* the cut-off of the tailnet being pruned */
	int64_t round_s;	  /* when the round under way, or the last one, started */
	struct audit_entry audit; /* the chunk's entry: the store keeps a pointer until done */
	char target[AUDIT_TARGET_MAX];
	struct flows_prune_stats stats;
};

int flows_pruner_new(struct store *st, const struct registry *reg, struct flows_pruner **ret)
{
	struct flows_pruner *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->st = st;
	p->reg = reg;
	*ret = p;
	return 0;
}

void flows_pruner_free(struct flows_pruner *p)
{
	free(p);
}

/* The tailnet with a retention after `after` in id order, or NULL. */
static const struct control_tailnet *next_tailnet(const struct flows_pruner *p, uint64_t after)
{
	const struct control_tailnet *best = NULL;

	for (const struct registry_tailnet *t = registry_tailnet_next(p->reg, NULL); t;
	     t = registry_tailnet_next(p->reg, t))
		if (t->rec.flow_retention_sec > 0 && t->rec.id > after &&
		    (!best || t->rec.id < best->id))
			best = &t->rec;
	return best;
}

/* Half the shortest retention, so nothing outlives its retention by more than half of it. */
static int64_t period_s(const struct flows_pruner *p)
{
	int64_t period = FLOWS_PRUNE_PERIOD_MAX_S;

	for (const struct registry_tailnet *t = registry_tailnet_next(p->reg, NULL); t;
	     t = registry_tailnet_next(p->reg, t))
		if (t->rec.flow_retention_sec > 0 && t->rec.flow_retention_sec / 2 < period)
			period = t->rec.flow_retention_sec / 2;
	return period < 1 ? 1 : period;
}

static void written(void *ctx, int err, uint64_t n)
{
	struct flows_pruner *p = ctx;

	p->inflight = false;
	if (err < 0) {
		p->stats.failed++;
		log_ratelimited(LOG_LEVEL_WARN, "flows: pruning tailnet %" PRIu64 " failed: %s",
				p->tailnet_id, strerror(-err));
	} else {
		p->stats.chunks += n > 0;
		p->stats.batches += n;
	}
	/* A full chunk: more of this tailnet is old enough, the next tick goes on with it. */
	if (err < 0 || n < FLOWS_PRUNE_CHUNK)
		p->before = 0;
}

void flows_pruner_tick(struct flows_pruner *p, int64_t now_s)
{
	struct store_op op = {.kind = STORE_OP_FLOW_PRUNE};
	const struct control_tailnet *t;

	if (p->inflight)
		return;
	if (!p->round) {
		/* Due by the settings as they are now: a retention set since counts already. */
		if (p->round_s && now_s < p->round_s + period_s(p))
			return;
		p->round = true;
		p->round_s = now_s;
		p->tailnet_id = 0;
		p->before = 0;
		p->stats.rounds++;
	}
	if (!p->before) {
		/* The tailnet done: on to the next one with a retention. */
		t = next_tailnet(p, p->tailnet_id);
		if (!t) {
			p->round = false;
			return;
		}
		p->tailnet_id = t->id;
		p->before = now_s - t->flow_retention_sec;
		snprintf(p->target, sizeof(p->target), "tailnet:%s", t->name);
	}
	memset(&p->audit, 0, sizeof(p->audit));
	p->audit.time = now_s;
	snprintf(p->audit.actor, sizeof(p->audit.actor), "server");
	snprintf(p->audit.action, sizeof(p->audit.action), "flows.prune");
	snprintf(p->audit.target, sizeof(p->audit.target), "%s", p->target);
	p->audit.before = "";
	p->audit.after = ""; /* the store fills it in: the anchors' digest */
	op.flow_prune.tailnet_id = p->tailnet_id;
	op.flow_prune.before = p->before;
	op.flow_prune.max_batches = FLOWS_PRUNE_CHUNK;
	op.audit = &p->audit;
	if (store_submit(p->st, &op, written, p) < 0) {
		p->stats.failed++;
		return; /* the queue is full: the next tick tries again */
	}
	p->inflight = true;
}

void flows_pruner_stats(const struct flows_pruner *p, struct flows_prune_stats *ret)
{
	*ret = p->stats;
}
