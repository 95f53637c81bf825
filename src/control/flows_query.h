/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_FLOWS_QUERY_H
#define TRELLIS_CONTROL_FLOWS_QUERY_H

/*
 * Reading the collected flow logs back (docs/audit.md): each flow with both
 * ends' reports paired (`trellis-control flows`), and every node's batch
 * chain checked against the signatures and the records stored from it
 * (`trellis-control audit verify`).
 */

#include <stdbool.h>
#include <stdint.h>

#include "control/flows.h"
#include "control/store.h"

/* Flows one query pairs at most: beyond it the query is refused (narrow it with since). */
#define FLOWS_QUERY_MAX 1000000

/* One flow: the end that reported it (a), the other end's report (b) if any, the verdict. */
struct flows_pairing {
	const struct store_flow_total *a, *b; /* b NULL: one-sided or no-peer */
	enum flows_verdict verdict;
	bool ambiguous; /* more than one report for an end: a mismatch whatever the counts */
};

/*
 * Pairs the flows whose last record is at or after since_ns and calls fn for
 * each flow node_id (0: any) reported, once per flow (a is node_id's report
 * when it made one). 0, -E2BIG (over FLOWS_QUERY_MAX), -ENOMEM, the store's
 * -errno, or fn's negative return.
 */
int flows_query(struct store *st, uint64_t node_id, uint64_t since_ns,
		int (*fn)(void *arg, const struct flows_pairing *p), void *arg);

#define FLOWS_VERIFY_WHY_MAX 256

struct flows_verify {
	uint64_t batches, records, nodes;
	uint64_t anchors; /* nodes whose chain starts from a pruning anchor */
	bool bad;
	char why[FLOWS_VERIFY_WHY_MAX]; /* the first bad link */
};

/*
 * Checks the retention anchors against the digest of the newest flows.prune
 * audit entry, then walks every node's batch chain, from its anchor when it has
 * one: each batch's signature under the key stored with it, its seq and prev_hash against the
 * node's batch before (a gap is explained only by the node's signed count of batches it dropped),
 * and each stored record against the signed batch. Stops at the first bad link. 0 (see ret->bad),
 * or the store's -errno.
 */
int flows_verify(struct store *st, struct flows_verify *ret);

#endif
