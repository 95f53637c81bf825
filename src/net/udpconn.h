/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_UDPCONN_H
#define TRELLIS_NET_UDPCONN_H

/*
 * The I/O half of the magicsock: the UDP sockets (one per address family on one
 * port, src/os/udp.h), the thread that reads them in batches into magicsock_rx, and
 * the batched send that is the magicsock's wire (udpconn_send as ops.wire_send).
 *
 * Socket changes (listen port, fwmark) come from one control thread and are race
 * free without a lock in the reader: udpconn_swap stops and joins the reader, swaps
 * the sockets under the write side of a lock that senders hold the read side of for
 * one batch, closes the old ones and restarts the reader. The caller opens the new
 * sockets first (udp_socks_open), so a port that cannot be bound changes nothing.
 *
 * A reader that finds its pool empty backs off for a millisecond (counted), and so does
 * one that cannot get the buffers to cut a coalesced datagram (UDP GRO) into: it is cut
 * whole, never in part, and nothing is read meanwhile. Nothing on the packet path
 * allocates. A datagram larger than its buffer is dropped and counted (a peer with a
 * larger MTU than ours sent it).
 */

#include <stdint.h>

#include "base/pkt.h"
#include "net/magicsock.h"
#include "os/udp.h"

struct udpconn_stats {
	uint64_t pool_dry;     /* reader found its pool empty */
	uint64_t rx_too_big;   /* datagrams larger than the reader's buffers: dropped */
	uint64_t send_errors;  /* datagrams the kernel did not take */
	uint64_t send_unreach; /* of those, in batches refused whole: no route (not logged) */
	uint64_t src_stale;    /* sent from the kernel's choice: their source address was gone */
	uint64_t rx_gro;       /* coalesced datagrams received (UDP GRO), each cut into several */
	uint64_t gro_lost;     /* datagrams of those dropped: a pool too small to cut them into */
	uint64_t gro_wait;     /* a coalesced datagram waited for buffers to be cut into (1 ms) */
};

struct udpconn;

/*
 * Binds `port` (0: the kernel picks) with `fwmark` and starts the reader, which takes
 * buffers from `pool` and hands every batch to magicsock_rx(ms). 0 or -errno.
 */
int udpconn_new(struct magicsock *ms, struct pkt_pool *pool, uint16_t port, uint32_t fwmark,
		struct udpconn **ret);
/* Stops the reader; sending still works (a drain may still flush packets out). */
void udpconn_stop(struct udpconn *uc);
/* Accepts NULL. Stops the reader and closes the sockets. */
void udpconn_free(struct udpconn *uc);

/* Any thread: sends to pkt->ep (addresses only) and frees the packets. */
void udpconn_send(struct udpconn *uc, struct pkt **pkts, unsigned n);

/*
 * Any thread: the reader takes its buffers from `pool` from its next read on (larger
 * buffers for a larger MTU). The old pool must outlive the packets it lent and the
 * reader's switch: the caller keeps it until udpconn_free.
 */
void udpconn_set_pool(struct udpconn *uc, struct pkt_pool *pool);
/* Control thread: the bound port. */
uint16_t udpconn_port(const struct udpconn *uc);
/* Control thread: replaces the sockets with ns (taken over) and restarts the reader. */
void udpconn_swap(struct udpconn *uc, struct udp_socks *ns);
/* Control thread: SO_MARK on the live sockets (safe against concurrent senders). */
int udpconn_set_fwmark(struct udpconn *uc, uint32_t fwmark);

void udpconn_stats_get(struct udpconn *uc, struct udpconn_stats *ret);

#endif
