/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_CRYPTQ_H
#define TRELLIS_NODE_CRYPTQ_H

/*
 * Parallel packet crypto that keeps submission order.
 *
 * Each lane (one per direction: encrypt, decrypt) is a bounded ring of batch
 * slots. Producers append batches; worker threads run `step` on every packet
 * of a batch, in any order and in parallel; batches leave through `flush`
 * strictly in the order they were appended. Submission order per lane implies
 * per-peer order, which is what WireGuard needs (the receiver's replay window
 * tolerates reordering, TCP above it does not like it).
 *
 * The queue never blocks a producer and never allocates after cryptq_new: when
 * the ring is full the packets go to `drop`.
 */

#include <stdint.h>

#include "base/pkt.h"

#define CRYPTQ_LANES_MAX 2
/* Packets per slot: a larger submission takes several slots. */
#define CRYPTQ_BATCH_MAX 64
/* Submissions this small run on the producer when no slot waits for a worker. */
#define CRYPTQ_INLINE_MAX 4

struct cryptq_lane {
	void *ctx;
	/* On a worker (or the producer when there are no workers); no lock held. */
	void (*step)(void *ctx, struct pkt *pkt);
	/*
	 * In submission order; calls for one lane never overlap. No cryptq lock is
	 * held, so this may submit again (to any lane). Takes ownership of the packets.
	 */
	void (*flush)(void *ctx, struct pkt **pkts, unsigned n);
	/* Packets not accepted (ring full or shutting down). Takes ownership. */
	void (*drop)(void *ctx, struct pkt **pkts, unsigned n);
};

struct cryptq_stats {
	uint64_t batches; /* slots filled */
	uint64_t packets; /* packets accepted */
	uint64_t dropped; /* packets handed to drop */
};

struct cryptq;

/*
 * slots: ring size per lane. workers: threads to start; 0 runs the step on the
 * submitting thread, still flushing in submission order across producers. With
 * workers, small submissions to an idle lane also run on the submitting thread.
 * NULL on failure (errno set).
 */
struct cryptq *cryptq_new(const struct cryptq_lane *lanes, unsigned n_lanes, unsigned slots,
			  unsigned workers);
/*
 * Multi-producer safe and non-blocking. Returns how many packets were accepted;
 * the rest have been passed to the lane's drop callback before returning.
 */
unsigned cryptq_submit(struct cryptq *q, unsigned lane, struct pkt **pkts, unsigned n);
void cryptq_stats_get(struct cryptq *q, unsigned lane, struct cryptq_stats *ret);
/*
 * Accepts NULL. Drains: every accepted packet is stepped and flushed before the
 * workers exit; later submissions are dropped. Producers must have stopped.
 */
void cryptq_free(struct cryptq *q);

#endif
