/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_FLOWSPOOL_H
#define TRELLIS_NODE_FLOWSPOOL_H

/*
 * The node's flow-log chain and spool (docs/audit.md): counted flows become
 * batches here, signed with the node's audit key and chained (seq, prev_hash),
 * and wait on disk until the collector acknowledges them, oldest first.
 *
 *   STATE/flows/chain        node id, last seq, last hash, batches dropped (ever)
 *   STATE/flows/NNNN...NNNN  one batch, named by its seq (20 digits), mode 0600
 *
 * Each batch is written (atomically) before the chain file moves past it, so a
 * crash loses neither: at open the chain is taken from the newest batch file
 * when it is ahead. The spool holds at most max batches: beyond, the oldest is
 * deleted and counted in batches_dropped, which every later batch carries
 * (signed), so the collector and `audit verify` tell a spool overflow from a
 * deletion. A batch is removed at any answer but "busy". A new node id (the
 * node registered anew) starts the chain over at seq 1.
 *
 * Batches are at most FLOWSPOOL_RECORDS_MAX records, so one fits a control
 * message (SESSION_MSG_MAX) in base64. Any thread: one mutex, held for file
 * operations only on the add and ack paths, never on the data path.
 */

#include <stddef.h>
#include <stdint.h>

#include "proto/flowbatch.h"

#define FLOWSPOOL_RECORDS_MAX 256
#define FLOWSPOOL_DEFAULT_MAX 4096 /* batches spooled: 20 min at one a second, 5.7 h at 5 s */

struct flowspool;

struct flowspool_stats {
	uint64_t seq;		  /* the last batch made */
	uint64_t batches_dropped; /* from the spool, ever */
	unsigned spooled;	  /* waiting for the collector */
	uint64_t acked, refused;  /* answered: stored or replayed / refused */
};

/* Opens (creating) dir; priv: the audit key (copied). 0 or -errno (logged). */
int flowspool_open(const char *dir, const uint8_t priv[32], unsigned max, struct flowspool **ret);
/* Accepts NULL; wipes the key. */
void flowspool_free(struct flowspool *sp);

/*
 * Signs and spools the records counted over [start_ns, end_ns) by node node_id,
 * as one batch or more (FLOWSPOOL_RECORDS_MAX each). 0 or -errno.
 */
int flowspool_add(struct flowspool *sp, uint64_t node_id, uint64_t start_ns, uint64_t end_ns,
		  uint32_t flows_dropped, const struct flowbatch_record *recs, unsigned n);

/* The oldest batch not yet acknowledged into buf: its length, or 0 (none, or cap too small). */
size_t flowspool_next(struct flowspool *sp, uint8_t *buf, size_t cap);
/* The collector's answer for seq (ctrl_flows_ack): all but "busy" remove the batch. */
void flowspool_ack(struct flowspool *sp, uint64_t seq, const char *result);

void flowspool_stats(struct flowspool *sp, struct flowspool_stats *ret);

#endif
