/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_FLOWS_PRUNE_H
#define TRELLIS_CONTROL_FLOWS_PRUNE_H

/*
 * Retention of flow logs (docs/audit.md): a tailnet's batches older than its
 * flow_retention_sec go, through the store's writer thread (STORE_OP_FLOW_PRUNE),
 * so the event loop never waits for the deletes. A round visits every tailnet
 * with a retention, in id order, one chunk of at most FLOWS_PRUNE_CHUNK batches
 * per server tick, and stays on a tailnet while its chunks come back full. Each
 * chunk is one transaction with its `flows.prune` audit entry. A round starts
 * every half of the shortest retention, at least every FLOWS_PRUNE_PERIOD_MAX_S.
 *
 *   idle --(round due)--> pruning tailnet T --(chunk written, full)--> pruning T
 *   pruning T --(chunk not full, or failed)--> next tailnet, or idle (round over)
 */

#include <stdint.h>

struct store;
struct registry;
struct flows_pruner;

#define FLOWS_PRUNE_CHUNK 1024
#define FLOWS_PRUNE_PERIOD_MAX_S 300

struct flows_prune_stats {
	uint64_t rounds, chunks, batches, failed;
};

/* 0 or -ENOMEM. */
int flows_pruner_new(struct store *st, const struct registry *reg, struct flows_pruner **ret);
/* After every store completion has run (the pruner's write may be in flight until then). */
void flows_pruner_free(struct flows_pruner *p);
/* On the loop thread, from the server's tick: the next chunk, if one is due and none in flight. */
void flows_pruner_tick(struct flows_pruner *p, int64_t now_s);
void flows_pruner_stats(const struct flows_pruner *p, struct flows_prune_stats *ret);

#endif
