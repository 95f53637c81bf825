/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_FLOWBATCH_H
#define TRELLIS_PROTO_FLOWBATCH_H

/*
 * A flow-log batch (docs/audit.md): what one node counted on its tunnels over a
 * few seconds, signed with the node's Ed25519 audit key and chained to the
 * node's previous batch by hash. The node encodes and signs; the collector in
 * trellis-control checks the signature with the key registered for that node,
 * then the sequence number and the chain, then decodes the records.
 *
 * Layout, big-endian, fixed-size fields (no lengths to lie about but the count):
 *
 *   magic "TFB1" | node_id u64 | seq u64 | prev_hash[32] | start_ns u64 | end_ns u64
 *   | flows_dropped u32 | batches_dropped u32 | n_records u16
 *   | n_records x record (FLOWBATCH_RECORD_LEN bytes)
 *   | signature[64] (Ed25519 over all bytes before it; the magic is the domain
 *     separation: nothing else is signed with an audit key)
 *
 *   record: proto u8 | icmp_type u8 | flags u8 | reserved u8 (0)
 *   | src[16] | src_port u16 | dst[16] | dst_port u16 (IPv4 as ::ffff:a.b.c.d)
 *   | peer_key[32] | tx_packets u64 | tx_bytes u64 | rx_packets u64 | rx_bytes u64
 *   | first_ns u64 | last_ns u64 | denied u32
 *
 * src is always the reporting node's side (tx: packets it sent on this flow);
 * FLOWBATCH_F_INBOUND says the peer opened the flow. The hash of a batch (the
 * next batch's prev_hash) is BLAKE2s-256 over its whole encoding, signature
 * included. No I/O, no clock.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FLOWBATCH_MAGIC "TFB1"
#define FLOWBATCH_HASH_LEN 32
#define FLOWBATCH_KEY_LEN 32
#define FLOWBATCH_SIG_LEN 64
#define FLOWBATCH_HEADER_LEN (4 + 8 + 8 + 32 + 8 + 8 + 4 + 4 + 2)
#define FLOWBATCH_RECORD_LEN (4 + 16 + 2 + 16 + 2 + 32 + 6 * 8 + 4)
/* Records in one batch: a node with more flows ships more batches. */
#define FLOWBATCH_RECORDS_MAX 1024
#define FLOWBATCH_LEN(n)                                                                           \
	(FLOWBATCH_HEADER_LEN + (size_t)(n)*FLOWBATCH_RECORD_LEN + FLOWBATCH_SIG_LEN)
/* The largest valid batch: anything longer is refused before it is read. */
#define FLOWBATCH_MAX_LEN FLOWBATCH_LEN(FLOWBATCH_RECORDS_MAX)

#define FLOWBATCH_F_INBOUND 0x01 /* the peer sent the flow's first packet */

struct flowbatch_record {
	uint8_t proto;	   /* IP protocol: 1 ICMP, 6 TCP, 17 UDP, 58 ICMPv6, ... */
	uint8_t icmp_type; /* ICMP/ICMPv6 type; ports are 0 then */
	uint8_t flags;
	uint8_t src[16], dst[16]; /* IPv4 mapped into IPv6 (::ffff:0:0/96) */
	uint16_t src_port, dst_port;
	uint8_t peer_key[FLOWBATCH_KEY_LEN]; /* the WireGuard key of the node at the other end */
	uint64_t tx_packets, tx_bytes, rx_packets, rx_bytes;
	uint64_t first_ns, last_ns; /* Unix nanoseconds */
	uint32_t denied;	    /* packets the packet filter refused */
};

struct flowbatch {
	uint64_t node_id;
	uint64_t seq;			       /* from 1, +1 a batch */
	uint8_t prev_hash[FLOWBATCH_HASH_LEN]; /* zeros for seq 1 */
	uint64_t start_ns, end_ns;	       /* the interval counted, Unix nanoseconds */
	uint32_t flows_dropped;		       /* flows not counted: the node's table was full */
	uint32_t batches_dropped;	       /* batches lost from the node's spool, ever */
	uint16_t n_records;
	const struct flowbatch_record *records; /* encode: n_records of them */
};

/*
 * Encodes and signs b into buf (cap at least FLOWBATCH_LEN(b->n_records)).
 * Returns the length, or -EINVAL (too many records), -ENOSPC, -EIO.
 */
int flowbatch_encode(const struct flowbatch *b, const uint8_t priv[32], uint8_t *buf, size_t cap);

/*
 * The header of an encoded batch, without checking its signature: which node
 * it claims to be, so the collector can look up the key. 0, -EMSGSIZE (over
 * FLOWBATCH_MAX_LEN), -EBADMSG (malformed: length, magic, count, reserved bits).
 */
int flowbatch_peek(const uint8_t *buf, size_t len, struct flowbatch *ret);

/* 0 when the signature verifies with pub; -EBADMSG otherwise. Call after flowbatch_peek. */
int flowbatch_verify(const uint8_t *buf, size_t len, const uint8_t pub[32]);

/* Record i (< n_records) of a batch flowbatch_peek accepted. */
void flowbatch_record_get(const uint8_t *buf, unsigned i, struct flowbatch_record *ret);

/* What the next batch's prev_hash must be. */
void flowbatch_hash(const uint8_t *buf, size_t len, uint8_t ret[FLOWBATCH_HASH_LEN]);

#endif
