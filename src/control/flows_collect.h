/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_FLOWS_COLLECT_H
#define TRELLIS_CONTROL_FLOWS_COLLECT_H

/*
 * The flow-log collector of trellis-control (docs/audit.md): batches come in on
 * a node's authenticated control session (a "flows" message), are admitted by
 * flows.c's rules against the node's chain, written through the store, and
 * answered ("flows_ack") once durable.
 *
 * Per node it keeps where the chain stands (read from the store at the node's
 * first batch since start) and whether a write is in flight: one batch per
 * node at a time, so a refused write can put the chain back. The bytes in
 * flight are capped over all nodes; beyond the cap a batch is answered "busy"
 * and the node sends it again later. Memory is thus bounded by the number of
 * nodes (a small entry each) plus FLOWS_COLLECT_INFLIGHT_MAX, whatever nodes
 * send. Loop thread only.
 */

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "control/flows.h"

struct store;
struct flows_collector;

/* Batch bytes waiting for the disk, over all nodes. */
#define FLOWS_COLLECT_INFLIGHT_MAX (32U << 20)

struct flows_collect_stats {
	struct flows_stats admit; /* flows.c's counts */
	uint64_t busy;		  /* answered "busy": a write in flight, or the cap */
	uint64_t store_failed;	  /* admitted, but the write failed (the node resends) */
	uint64_t stored;	  /* batches durable */
	uint64_t records;	  /* their records */
	uint64_t inflight_bytes;
};

/* The answer to one batch, once known: result is what the node is told (ctrl_flows_ack). */
typedef void (*flows_collect_done_fn)(void *ctx, uint64_t seq, const char *result);

int flows_collector_new(struct store *st, struct flows_collector **ret);
/* Accepts NULL. Writes in flight complete into nothing. */
void flows_collector_free(struct flows_collector *fc);

/*
 * A batch from node node_id of tailnet tailnet_id (as its control session
 * proved), whose registered audit key is pub (NULL: none). Takes buf (malloc'd)
 * in every case. 0: admitted and being written, done follows. Otherwise the
 * answer now: *ret_result and *ret_seq (0 when the batch did not parse).
 */
int flows_collector_submit(struct flows_collector *fc, uint64_t node_id, uint64_t tailnet_id,
			   const uint8_t *pub, uint8_t *buf, size_t len, int64_t now_s,
			   flows_collect_done_fn done, void *ctx, uint64_t *ret_seq,
			   const char **ret_result);

/* Node node_id's session (ctx) goes away: its pending answer is not delivered (the write goes on).
 */
void flows_collector_forget(struct flows_collector *fc, uint64_t node_id, void *ctx);

void flows_collector_stats(const struct flows_collector *fc, struct flows_collect_stats *ret);
/* The counters as Prometheus text (the server's /metrics). */
void flows_collector_metrics_write(const struct flows_collector *fc, FILE *f);

#endif
