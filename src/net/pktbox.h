/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_PKTBOX_H
#define TRELLIS_NET_PKTBOX_H

/*
 * A bounded mailbox of packets between threads: the UDP reader puts, the owner
 * (the STUN or disco engine's loop) takes. A put that finds the box full frees
 * the packets it cannot hold and counts them: a flood is dropped at the door,
 * never queued without bound and never blocking the reader.
 *
 * Notify: called (outside the lock) by a put that found the box empty and left it
 * non-empty, so one wakeup covers a burst. The owner then takes until the box is
 * empty; a box it leaves non-empty is not notified again.
 */

#include <pthread.h>
#include <stdatomic.h>

#include "base/pkt.h"

struct pktbox {
	pthread_mutex_t lock;
	struct pkt **ring;
	unsigned cap, head, n;
	void (*notify)(void *ctx);
	void *ctx;
	atomic_uint_fast64_t drops;
};

/* cap 0: a box nobody reads (every put is counted as dropped). notify may be NULL. 0 or -ENOMEM. */
int pktbox_init(struct pktbox *b, unsigned cap, void (*notify)(void *ctx), void *ctx);
/* Frees the packets still held. */
void pktbox_destroy(struct pktbox *b);
/* Any thread; takes ownership of all n. Returns how many were queued (the rest are dropped). */
unsigned pktbox_put(struct pktbox *b, struct pkt **pkts, unsigned n);
/* Any thread: up to n packets, oldest first; returns how many. Ownership passes to the caller. */
unsigned pktbox_take(struct pktbox *b, struct pkt **ret, unsigned n);
uint64_t pktbox_drops(struct pktbox *b);

#endif
