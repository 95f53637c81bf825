// SPDX-License-Identifier: MIT
/* The flow-log collector's decisions (flows.h): batch admission and pairing. */
#include <errno.h>
#include <string.h>

#include "control/flows.h"
#include "crypto/crypto.h"

int flows_admit(struct flows_stats *st, struct flows_chain *chain, uint64_t sender,
		const uint8_t *pub, const uint8_t *buf, size_t len, struct flowbatch *ret,
		unsigned *ret_flags)
{
	struct flowbatch b;
	unsigned flags = 0;
	int r;

	r = flowbatch_peek(buf, len, &b);
	if (r == -EMSGSIZE) {
		st->oversized++;
		return r;
	}
	if (r < 0) {
		st->malformed++;
		return -EBADMSG;
	}
	if (b.node_id != sender) {
		st->wrong_sender++;
		return -EPERM;
	}
	if (!pub || flowbatch_verify(buf, len, pub) < 0) {
		st->bad_signature++;
		return -EKEYREJECTED;
	}
	/* Checked after the signature: only the node itself can make us look at its seq. */
	if (b.seq <= chain->last_seq) {
		st->replayed++;
		return -EALREADY;
	}
	if (b.seq != chain->last_seq + 1) {
		flags |= FLOWS_F_GAP;
		st->gaps++;
	} else if (!crypto_equal(b.prev_hash, chain->last_hash, FLOWBATCH_HASH_LEN)) {
		flags |= FLOWS_F_CHAIN_BROKEN;
		st->chain_breaks++;
	}
	chain->last_seq = b.seq;
	flowbatch_hash(buf, len, chain->last_hash);
	st->admitted++;
	*ret = b;
	*ret_flags = flags;
	return 0;
}

/* What was sent one way against what arrived: explained by loss, or not. */
static bool direction_agrees(uint64_t sent_pkts, uint64_t sent_bytes, uint64_t recv_pkts,
			     uint64_t recv_bytes)
{
	uint64_t lost, allowed;

	/* More arriving than was sent is no loss: one end lies or counts wrong. */
	if (recv_pkts > sent_pkts || recv_bytes > sent_bytes)
		return false;
	lost = sent_pkts - recv_pkts;
	allowed = sent_pkts / (100 / FLOWS_LOSS_PERCENT);
	if (allowed < FLOWS_LOSS_MIN_PACKETS)
		allowed = FLOWS_LOSS_MIN_PACKETS;
	if (lost > allowed)
		return false;
	/* Bytes go missing only with packets. */
	return sent_bytes - recv_bytes <= lost * FLOWS_PACKET_MAX;
}

enum flows_verdict flows_pair(const struct flows_side *a, const struct flows_side *b)
{
	/*
	 * A sole report that names no peer: the node sent to an address no peer of its holds (no
	 * such node, or one policy hides from it), and the engine dropped it. No other end
	 * exists to report it, so its absence proves nothing. One that names a peer had an end.
	 */
	if (!b)
		return a->no_peer ? FLOWS_NO_PEER : FLOWS_ONE_SIDED;
	if (direction_agrees(a->tx_packets, a->tx_bytes, b->rx_packets, b->rx_bytes) &&
	    direction_agrees(b->tx_packets, b->tx_bytes, a->rx_packets, a->rx_bytes))
		return FLOWS_CONFIRMED;
	return FLOWS_MISMATCH;
}

const char *flows_verdict_name(enum flows_verdict v)
{
	switch (v) {
	case FLOWS_CONFIRMED:
		return "confirmed";
	case FLOWS_ONE_SIDED:
		return "one-sided";
	case FLOWS_MISMATCH:
		return "mismatch";
	case FLOWS_NO_PEER:
		return "no-peer";
	}
	return "?";
}

bool flows_verdict_flagged(enum flows_verdict v)
{
	return v != FLOWS_CONFIRMED && v != FLOWS_NO_PEER;
}

/* ---- retention anchors ---- */

/* Domain separation: no other hash covers the same bytes. */
static const char anchor_domain[] = "trellis flow anchors v1";

static void put_u64(struct blake2s_state *b, uint64_t v)
{
	uint8_t le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(v >> (8 * i));
	blake2s_update(b, le, sizeof(le));
}

void flows_anchor_digest_init(struct flows_anchor_digest *d)
{
	blake2s_init(&d->b, FLOWS_ANCHOR_DIGEST_LEN);
	blake2s_update(&d->b, anchor_domain, sizeof(anchor_domain));
}

void flows_anchor_digest_add(struct flows_anchor_digest *d, const struct flows_anchor *a)
{
	put_u64(&d->b, a->node_id);
	put_u64(&d->b, a->batch_id);
	put_u64(&d->b, a->seq);
	put_u64(&d->b, a->batches_dropped);
	blake2s_update(&d->b, a->audit_key, sizeof(a->audit_key));
	blake2s_update(&d->b, a->hash, sizeof(a->hash));
}

void flows_anchor_digest_final(struct flows_anchor_digest *d, char ret[FLOWS_ANCHOR_DIGEST_HEX])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t h[FLOWS_ANCHOR_DIGEST_LEN];

	blake2s_final(&d->b, h);
	for (size_t i = 0; i < sizeof(h); i++) {
		ret[2 * i] = hex[h[i] >> 4];
		ret[2 * i + 1] = hex[h[i] & 15];
	}
	ret[2 * sizeof(h)] = '\0';
}
