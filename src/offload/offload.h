/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OFFLOAD_OFFLOAD_H
#define TRELLIS_OFFLOAD_OFFLOAD_H

/*
 * TUN offloads without I/O: the virtio-net header a TUN device opened with IFF_VNET_HDR puts
 * before every packet, segmentation of the super-packets the kernel hands over when TSO/USO
 * are on (what a NIC would do), and coalescing of a flow's consecutive TCP segments or UDP
 * datagrams into one super-packet for the kernel (what GRO would do). Bytes in, bytes out:
 * the TUN reads and writes are src/os/tun.c's.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/pkt.h"

/* struct virtio_net_hdr: no mergeable buffers, so no num_buffers field. */
#define OFFLOAD_VNET_HDR_LEN 10

#define OFFLOAD_VNET_F_NEEDS_CSUM 1 /* csum_start/csum_offset: the L4 checksum is partial */
#define OFFLOAD_VNET_F_DATA_VALID 2 /* the checksum was checked; nothing to do */

#define OFFLOAD_GSO_NONE 0
#define OFFLOAD_GSO_TCPV4 1
#define OFFLOAD_GSO_UDP 3 /* UFO (IP fragmentation): never enabled, refused */
#define OFFLOAD_GSO_TCPV6 4
#define OFFLOAD_GSO_UDP_L4 5 /* USO: UDP segmentation, either family */
#define OFFLOAD_GSO_ECN 0x80

/*
 * The header in host order. TUN uses the legacy virtio layout, which is the host's byte
 * order (we never set TUNSETVNETLE/BE).
 */
struct offload_vnet_hdr {
	uint8_t flags;
	uint8_t gso_type;
	uint16_t hdr_len;
	uint16_t gso_size;
	uint16_t csum_start;
	uint16_t csum_offset;
};

/*
 * Reads the header from the first OFFLOAD_VNET_HDR_LEN bytes of buf. Only what offload can
 * act on passes: -EINVAL for a short buffer, unknown flags or GSO type, a GSO packet without a
 * segment size; -EPROTONOSUPPORT for UFO.
 */
int offload_vnet_hdr_parse(const uint8_t *buf, size_t len, struct offload_vnet_hdr *ret);
void offload_vnet_hdr_write(const struct offload_vnet_hdr *h, uint8_t buf[OFFLOAD_VNET_HDR_LEN]);

/*
 * Internet checksum (RFC 1071) pieces. Sums are kept in host order and stored as they are;
 * each piece must start at an even offset of what is summed (an odd length only at the
 * end). offload_csum_add takes any sum and returns one below 2^34, to which a few small
 * terms may be added.
 */
uint64_t offload_csum_add(uint64_t sum, const uint8_t *p, size_t len);
uint16_t offload_csum_fold(uint64_t sum);
/* The pseudo-header of an IPv4 (ver 4) or IPv6 packet `ip` for protocol `proto`, L4 length. */
uint64_t offload_csum_pseudo(const uint8_t *ip, uint8_t proto, uint32_t l4_len);

/*
 * A packet that is not GSO but has NEEDS_CSUM: writes the full checksum the kernel left to us
 * (from csum_start to the end, at csum_start + csum_offset). Without NEEDS_CSUM nothing is
 * done. 0, or -EINVAL when the offsets do not fit the packet.
 */
int offload_csum_finish(const struct offload_vnet_hdr *h, uint8_t *pkt, size_t len);

/*
 * Segmentation of one GSO super-packet (TCP over IPv4/IPv6, UDP with USO), a few segments at
 * a time so that the caller's buffers bound the work and any segment count can be cut:
 * offload_seg_start checks the packet, each offload_seg_next writes the next segments into
 * outs (at each buffer's data pointer, with full checksums) until offload_seg_done.
 * Segments follow the kernel's rules: IPv4 id + i, TCP seq advanced, FIN and PSH on the last
 * segment only, CWR on the first only, the last segment short.
 * The input must stay in place until done.
 */
struct offload_seg {
	const uint8_t *pkt;
	size_t len;
	size_t off;	  /* next payload byte */
	uint16_t l4_off;  /* IP header length, extension headers included */
	uint16_t hdr_len; /* IP and L4 headers */
	uint16_t mss;
	uint8_t proto; /* IPPROTO_TCP or IPPROTO_UDP */
	bool v6;
	unsigned i; /* segments written */
};

/*
 * 0, or for a packet that is not what its header says: -EINVAL (malformed, inconsistent
 * lengths or checksum offsets, IP fragment), -EPROTONOSUPPORT (protocol or extension header
 * we do not cut).
 */
int offload_seg_start(struct offload_seg *s, const struct offload_vnet_hdr *h, const uint8_t *pkt,
		      size_t len);
/*
 * Writes up to n segments into outs[0..n) (data and len; the buffers must be reset, data at
 * their headroom). Returns how many (0 when done), or -EMSGSIZE when a segment is larger than
 * the buffers carry (pkt_buf_mtu of their capacity).
 */
int offload_seg_next(struct offload_seg *s, struct pkt **outs, unsigned n);
bool offload_seg_done(const struct offload_seg *s);

/*
 * Coalescing (GRO) of a batch of IP packets bound for TUN. Consecutive in-order TCP segments
 * (or UDP datagrams) of one flow become one super-packet the kernel segments again: before a
 * socket without UDP_GRO takes the datagrams, or if it forwards them. The flow's first packet
 * gets the headers of the whole (lengths, the PSH of the last, a partial checksum), and its
 * vnet header says how to cut (TCPV4/TCPV6, or UDP_L4 with gso_size the datagrams' payload).
 *
 * Members join as the kernel's GRO would let them: same protocol, addresses and ports, IPv4
 * without options and not a fragment (ToS, TTL, DF equal, ids incrementing unless DF) or IPv6
 * with TCP or UDP right after the fixed header (traffic class, flow label, hop limit equal),
 * payloads of the first's size but for a shorter last one, a valid IPv4 header checksum, at
 * most 64 KiB. TCP: the same TCP header but for the sequence number (ack, window, options,
 * flags other than PSH), contiguous sequence numbers. UDP: a payload, a length field that
 * agrees with the IP header and a checksum other than 0.
 * L4 checksums are not checked: the packets come decrypted and authenticated, and are
 * trusted as the kernel's WireGuard trusts them (gro.c says why). A TCP group opens with a
 * plain ACK segment carrying data and closes at a short or PSH segment, at 64 KiB, or at any
 * packet of its flow that cannot join; SYN, FIN, RST, URG, CWR pass alone. A UDP group
 * closes at a short datagram, at 64 KiB, at any datagram of its flow that cannot join, or
 * at an IPv4 fragment or IPv6 extension header between its addresses.
 */
#define OFFLOAD_GRO_BATCH 64

/* What offload_gro coalesces: TCP where the device took TSO, UDP where it took USO. */
#define OFFLOAD_GRO_TCP 1
#define OFFLOAD_GRO_UDP 2

struct offload_gro_group {
	unsigned start; /* index of the first member in the reordered array */
	unsigned n;	/* members */
	uint16_t skip;	/* header bytes of every member after the first, not written */
	uint8_t vnet[OFFLOAD_VNET_HDR_LEN]; /* the header to write before the group */
};

/*
 * Groups pkts[0..n), n <= OFFLOAD_GRO_BATCH, coalescing the protocols in `want`
 * (OFFLOAD_GRO_*; others pass alone). The array is reordered so that each group's
 * members are consecutive (each flow keeps its order; groups follow in the order their
 * first members came); the first member of a group of several is rewritten in place.
 * Fills groups (room for n) and returns their count. Written as one piece each, a group is
 * its vnet header, the first member whole, then each other member without its first
 * `skip` bytes.
 */
unsigned offload_gro(struct pkt **pkts, unsigned n, unsigned want,
		     struct offload_gro_group *groups);

/*
 * Reassembly, before coalescing, of the IP fragments of a datagram that follow each other in
 * pkts[0..n), n <= OFFLOAD_GRO_BATCH, first to last: the first fragment's buffer takes the
 * others' payloads and the header of the whole datagram, as the kernel's reassembly would
 * make it (IPv4: the first's header without MF and offset, its checksum recomputed; IPv6: the
 * fixed header without the fragment header, directly before it). Only IPv4 fragments without
 * DF and with right header checksums, or IPv6 fragment headers right after the fixed header;
 * same addresses, protocol, id (and IPv4 ToS); each offset where the last ended; the whole in
 * the first's tailroom and within 64 KiB. Anything else passes as it came.
 * The array is compacted: returns m, pkts[0..m) to write in their order, pkts[m..n) the
 * fragments taken into others, to be freed.
 */
unsigned offload_defrag(struct pkt **pkts, unsigned n);

#endif
