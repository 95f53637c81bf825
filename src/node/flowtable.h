/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_FLOWTABLE_H
#define TRELLIS_NODE_FLOWTABLE_H

/*
 * Flow accounting on the data path (docs/audit.md): per flow (protocol, local
 * and remote tailnet address and port, ICMP type), packets and bytes each way,
 * first and last seen, and packets the filter denied.
 *
 * Each data-path thread counts into a shard of its own (found through a
 * thread-local pointer), so a packet costs no lock and no allocation: a hash,
 * a probe of a fixed table and a few adds. A shard holds two tables; the
 * flusher (one thread, the daemon's loop) switches the shard's writers to the
 * other table, waits for a batch that may still be writing the old one to end
 * (one atomic flag a batch), then reads and clears it, and merges the shards'
 * entries of a flow. A full table counts the flows it cannot hold, each once an
 * interval (struct flowtable_overflow): memory is bounded (FLOWTABLE_SHARDS x 2
 * tables of FLOWTABLE_SLOTS entries and a fixed overflow record) whatever traffic
 * passes. Packets of threads beyond FLOWTABLE_SHARDS are not counted (counted).
 */

#include <stddef.h>
#include <stdint.h>

#include "proto/flowbatch.h"

#define FLOWTABLE_SHARDS 16
#define FLOWTABLE_SLOTS 4096 /* flows one thread counts between two flushes */

struct flowtable;
struct pkt;

int flowtable_new(struct flowtable **ret);
/* Accepts NULL. The data path must no longer use it. */
void flowtable_free(struct flowtable *ft);

/* Packets the node sends (read from TUN). Any data-path thread. */
void flowtable_tx(struct flowtable *ft, struct pkt *const *pkts, unsigned n, uint64_t now_ns);
/*
 * Packets from peers after the filter: the first `passed` went to TUN, the rest
 * (up to n) were denied. Any data-path thread.
 */
void flowtable_rx(struct flowtable *ft, struct pkt *const *pkts, unsigned passed, unsigned n,
		  uint64_t now_ns);
/* The same for one packet in a plain buffer (tests). */
void flowtable_packet(struct flowtable *ft, const uint8_t *p, size_t len, int dir, uint64_t now_ns);
#define FLOWTABLE_TX 0
#define FLOWTABLE_RX 1
#define FLOWTABLE_DENIED 2

/*
 * What the interval could not count (docs/audit.md, "Counting on the node"). flows: the
 * distinct flows (the record's key) at least one packet of which found no slot, each
 * once however many packets and threads missed it; exact up to 64 such flows a thread,
 * beyond that a linear-counting estimate (standard error under 1 % up to ~130,000). Such
 * a flow may still have a record with the packets another thread's table held. packets:
 * every packet not counted, exactly (no slot, or a thread beyond FLOWTABLE_SHARDS).
 */
struct flowtable_overflow {
	uint32_t flows;
	uint64_t packets;
	/*
	 * Not an overflow: packets the node sent to multicast, broadcast, link-local or
	 * unspecified destinations (its own ND and MLD), which no peer is reached at. They are
	 * counted here rather than as flows, which their peer could never confirm.
	 */
	uint64_t link_scope;
};

/*
 * What was counted since the last flush, one record a flow (peer_key zero; times
 * as given to the data path, plus wall_offset_ns), malloc'd in *ret (free()).
 * Returns how many, or -ENOMEM; *ret_overflow: what was not counted as a flow. Loop thread.
 */
int flowtable_flush(struct flowtable *ft, int64_t wall_offset_ns, struct flowbatch_record **ret,
		    struct flowtable_overflow *ret_overflow);

#endif
