/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_FLOWS_H
#define TRELLIS_CONTROL_FLOWS_H

/*
 * The flow-log collector's decisions, without I/O (docs/audit.md): whether a
 * batch a node sent is admitted, and whether the two ends' reports of one flow
 * agree. Storage and transport call these.
 *
 * Admission, in order, each refusal counted: the size (before anything is
 * read), the structure, the sender (a node submits in its own name only), the
 * signature with the sender's registered audit key, the sequence (one at or
 * below the last admitted is a replay). An admitted batch may still be flagged:
 * a sequence gap (batches lost on the node's side) or a broken chain (its
 * prev_hash is not the hash of the batch admitted before it).
 *
 * Pairing compares A's report of a flow with B's mirror-image report (A's tx is
 * B's rx): confirmed when each direction's received count is at most the sent
 * count and the shortfall is loss the transport explains; flagged otherwise,
 * or when only one end reported the flow and named the peer it came from or went
 * to. A sole report that names no peer (the node had none for the address: no
 * such node, or one it may not see) is no-peer: no other end could report it.
 */

#include <stdbool.h>
#include <stdint.h>

#include "crypto/crypto.h"
#include "proto/flowbatch.h"

/* Loss the transport explains: this many packets, or 1 % of those sent if more. */
#define FLOWS_LOSS_MIN_PACKETS 8
#define FLOWS_LOSS_PERCENT 1
/* An IP packet is at most this large: what a lost packet may take with it. */
#define FLOWS_PACKET_MAX 65535

struct flows_stats {
	uint64_t admitted;
	uint64_t oversized;	/* over FLOWBATCH_MAX_LEN */
	uint64_t malformed;	/* flowbatch_peek refused it */
	uint64_t wrong_sender;	/* claims another node's id */
	uint64_t bad_signature; /* or no audit key registered */
	uint64_t replayed;	/* seq at or below the last admitted */
	uint64_t gaps;		/* admitted after missing sequence numbers */
	uint64_t chain_breaks;	/* admitted with a prev_hash that does not link */
};

/* Where a node's batch chain stands: seq 0 before its first batch. */
struct flows_chain {
	uint64_t last_seq;
	uint8_t last_hash[FLOWBATCH_HASH_LEN];
};

#define FLOWS_F_GAP 0x1
#define FLOWS_F_CHAIN_BROKEN 0x2

/*
 * Admits buf from node sender whose audit key is pub (NULL: none registered).
 * On admission: 0, *ret the header, *ret_flags FLOWS_F_*, chain advanced.
 * Refusals: -EMSGSIZE, -EBADMSG (malformed), -EPERM (another node's name),
 * -EKEYREJECTED (signature), -EALREADY (replay); chain untouched.
 */
int flows_admit(struct flows_stats *st, struct flows_chain *chain, uint64_t sender,
		const uint8_t *pub, const uint8_t *buf, size_t len, struct flowbatch *ret,
		unsigned *ret_flags);

enum flows_verdict {
	FLOWS_CONFIRMED = 1,
	FLOWS_ONE_SIDED, /* only one end reported it */
	FLOWS_MISMATCH,	 /* the ends disagree beyond what loss explains */
	FLOWS_NO_PEER,	 /* only one end reported it, naming no peer: there is no other end */
};

/* The counters of one end of a flow, summed over its batches. */
struct flows_side {
	uint64_t tx_packets, tx_bytes, rx_packets, rx_bytes;
	bool no_peer; /* none of its records named a peer (a zero peer key) */
};

/* a: one end's totals; b: the other end's, or NULL when it did not report the flow. */
enum flows_verdict flows_pair(const struct flows_side *a, const struct flows_side *b);

const char *flows_verdict_name(enum flows_verdict v);

/* What `flows --flagged` lists: every verdict but confirmed and no-peer. */
bool flows_verdict_flagged(enum flows_verdict v);

/*
 * Retention (docs/audit.md): pruning removes the oldest batches of a tailnet and
 * leaves, per node, an anchor: its last removed batch, which the remaining chain
 * starts from. The anchors' digest goes into the configuration audit log with
 * each prune (`flows.prune`), so an edited anchor no longer matches it.
 */
struct flows_anchor {
	uint64_t node_id;
	uint64_t batch_id; /* the removed batch's row: every row at or below it is gone */
	uint64_t seq;
	uint32_t batches_dropped; /* as that batch signed it */
	uint8_t audit_key[FLOWBATCH_KEY_LEN];
	uint8_t hash[FLOWBATCH_HASH_LEN]; /* flowbatch_hash of that batch */
};

#define FLOWS_ANCHOR_DIGEST_LEN 32
/* Hex, as the audit entry carries it. */
#define FLOWS_ANCHOR_DIGEST_HEX (2 * FLOWS_ANCHOR_DIGEST_LEN + 1)

/* The digest over every anchor, fed in ascending node_id order. */
struct flows_anchor_digest {
	struct blake2s_state b;
};
void flows_anchor_digest_init(struct flows_anchor_digest *d);
void flows_anchor_digest_add(struct flows_anchor_digest *d, const struct flows_anchor *a);
void flows_anchor_digest_final(struct flows_anchor_digest *d, char ret[FLOWS_ANCHOR_DIGEST_HEX]);

#endif
