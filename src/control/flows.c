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
	if (!b)
		return FLOWS_ONE_SIDED;
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
	}
	return "?";
}
