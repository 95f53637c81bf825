/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OS_TUN_H
#define TRELLIS_OS_TUN_H

#include <net/if.h>

#include "base/pkt.h"
#include "offload/offload.h"

/*
 * Opens (creating if needed) a layer-3 TUN device without packet info headers,
 * non-blocking, close-on-exec. name may be a pattern ("trellis%d"); NULL or ""
 * means "trellis%d".
 * Returns the fd and writes the kernel's name, or -errno.
 */
int tun_open(const char *name, char ret_name[IF_NAMESIZE]);
/*
 * The same with IFF_VNET_HDR: every packet read or written starts with a virtio-net header
 * (offload/offload.h), which is what lets the kernel hand over and take super-packets.
 */
int tun_open_vnet(const char *name, char ret_name[IF_NAMESIZE]);

/* Offloads of a TUN device opened with tun_open_vnet. */
#define TUN_OFFLOAD_CSUM 1 /* the kernel may leave L4 checksums to us (NEEDS_CSUM) */
#define TUN_OFFLOAD_TSO 2  /* TCP segmentation, IPv4 and IPv6 (with ECN) */
#define TUN_OFFLOAD_USO 4  /* UDP segmentation, IPv4 and IPv6 (Linux 6.2) */
/*
 * Asks the kernel for the offloads in `want` (CSUM is implied by the others); what it refuses
 * is left out, one feature at a time (USO first, then TSO). Returns the TUN_OFFLOAD_* bits in
 * force (0: none, a plain header on every packet).
 */
unsigned tun_offload_set(int fd, unsigned want);

/*
 * The reader's side of a vnet TUN: room for one super-packet and how far it is cut. One per
 * reader thread; {0} (or tun_rx_free'd) is a plain TUN without headers.
 */
struct tun_rx {
	uint8_t *big;		/* NULL: no vnet header */
	struct offload_seg seg; /* the super-packet being cut, until offload_seg_done */
	uint64_t bad;		/* packets refused: header or super-packet malformed, or its
				   segments too large for the buffers */
	uint64_t supers;	/* super-packets cut */
};

/* 0 or -ENOMEM. */
int tun_rx_init_vnet(struct tun_rx *rx);
void tun_rx_free(struct tun_rx *rx);

/*
 * Reads up to n packets without blocking, each into pkts[i]->data (at most
 * pkt_buf_mtu(cap) bytes: a longer packet, larger than its buffer can carry, is
 * dropped and counted).
 * With a vnet rx, a super-packet becomes its segments (those that do not fit in pkts stay
 * in rx and come first at the next call), and a partial checksum is completed.
 * Returns the count (0 when none are waiting) or -errno. *ret_dropped counts
 * packets discarded (truncated/empty); at most 64 are discarded per call, so a
 * return of 0 with *ret_dropped > 0 means "call again".
 */
int tun_read_batch(int fd, struct tun_rx *rx, struct pkt **pkts, unsigned n, unsigned *ret_dropped);
/*
 * Writes each packet; returns how many were written or -errno when none were.
 * vnet: the device has headers; gro (with vnet; OFFLOAD_GRO_TCP where the device took TSO,
 * OFFLOAD_GRO_UDP where it took USO): a datagram's fragments that follow each other go as
 * the whole datagram (offload_defrag), and consecutive TCP segments or UDP datagrams of a flow
 * as one super-packet (offload_gro); pkts is reordered. A fragment taken into its datagram
 * counts as written, and in *ret_joined (if not NULL), when every write of its batch of up
 * to OFFLOAD_GRO_BATCH packets succeeded (otherwise it counts as not written).
 */
int tun_write_batch(int fd, struct pkt **pkts, unsigned n, bool vnet, unsigned gro,
		    unsigned *ret_joined);

#endif
