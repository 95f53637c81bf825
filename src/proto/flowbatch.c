// SPDX-License-Identifier: MIT
/*
 * Flow-log batches (flowbatch.h): fixed-size fields at fixed offsets, so the
 * decoder checks the length against the record count once and then reads
 * without further bounds arithmetic on the input.
 */
#include <errno.h>
#include <string.h>

#include "base/util.h"
#include "crypto/crypto.h"
#include "proto/flowbatch.h"

_Static_assert(FLOWBATCH_KEY_LEN == ED25519_KEY_LEN, "audit keys are Ed25519 keys");
_Static_assert(FLOWBATCH_SIG_LEN == ED25519_SIG_LEN, "signatures are Ed25519's");

struct cur {
	uint8_t *p;
};

static void w8(struct cur *c, uint8_t v)
{
	*c->p++ = v;
}

static void w16(struct cur *c, uint16_t v)
{
	put_be16(c->p, v);
	c->p += 2;
}

static void w32(struct cur *c, uint32_t v)
{
	put_be32(c->p, v);
	c->p += 4;
}

static void w64(struct cur *c, uint64_t v)
{
	w32(c, (uint32_t)(v >> 32));
	w32(c, (uint32_t)v);
}

static void wmem(struct cur *c, const void *m, size_t n)
{
	memcpy(c->p, m, n);
	c->p += n;
}

struct rcur {
	const uint8_t *p;
};

static uint8_t r8(struct rcur *c)
{
	return *c->p++;
}

static uint16_t r16(struct rcur *c)
{
	uint16_t v = get_be16(c->p);

	c->p += 2;
	return v;
}

static uint32_t r32(struct rcur *c)
{
	uint32_t v = get_be32(c->p);

	c->p += 4;
	return v;
}

static uint64_t r64(struct rcur *c)
{
	uint64_t hi = r32(c);

	return hi << 32 | r32(c);
}

static void rmem(struct rcur *c, void *m, size_t n)
{
	memcpy(m, c->p, n);
	c->p += n;
}

int flowbatch_encode(const struct flowbatch *b, const uint8_t priv[32], uint8_t *buf, size_t cap)
{
	struct cur c = {buf};
	size_t len;
	int r;

	if (b->n_records > FLOWBATCH_RECORDS_MAX)
		return -EINVAL;
	len = FLOWBATCH_LEN(b->n_records);
	if (cap < len)
		return -ENOSPC;
	wmem(&c, FLOWBATCH_MAGIC, 4);
	w64(&c, b->node_id);
	w64(&c, b->seq);
	wmem(&c, b->prev_hash, FLOWBATCH_HASH_LEN);
	w64(&c, b->start_ns);
	w64(&c, b->end_ns);
	w32(&c, b->flows_dropped);
	w32(&c, b->batches_dropped);
	w16(&c, b->n_records);
	for (unsigned i = 0; i < b->n_records; i++) {
		const struct flowbatch_record *f = &b->records[i];

		w8(&c, f->proto);
		w8(&c, f->icmp_type);
		w8(&c, f->flags & FLOWBATCH_F_INBOUND);
		w8(&c, 0);
		wmem(&c, f->src, 16);
		w16(&c, f->src_port);
		wmem(&c, f->dst, 16);
		w16(&c, f->dst_port);
		wmem(&c, f->peer_key, FLOWBATCH_KEY_LEN);
		w64(&c, f->tx_packets);
		w64(&c, f->tx_bytes);
		w64(&c, f->rx_packets);
		w64(&c, f->rx_bytes);
		w64(&c, f->first_ns);
		w64(&c, f->last_ns);
		w32(&c, f->denied);
	}
	r = ed25519_sign(c.p, buf, len - FLOWBATCH_SIG_LEN, priv);
	return r < 0 ? r : (int)len;
}

int flowbatch_peek(const uint8_t *buf, size_t len, struct flowbatch *ret)
{
	struct rcur c = {buf};
	struct flowbatch b = {0};

	if (len > FLOWBATCH_MAX_LEN)
		return -EMSGSIZE;
	if (len < FLOWBATCH_LEN(0) || memcmp(buf, FLOWBATCH_MAGIC, 4) != 0)
		return -EBADMSG;
	c.p += 4;
	b.node_id = r64(&c);
	b.seq = r64(&c);
	rmem(&c, b.prev_hash, FLOWBATCH_HASH_LEN);
	b.start_ns = r64(&c);
	b.end_ns = r64(&c);
	b.flows_dropped = r32(&c);
	b.batches_dropped = r32(&c);
	b.n_records = r16(&c);
	if (b.n_records > FLOWBATCH_RECORDS_MAX || len != FLOWBATCH_LEN(b.n_records) || !b.seq)
		return -EBADMSG;
	/* Bits this version does not define are refused, not carried: the signature covers them. */
	for (unsigned i = 0; i < b.n_records; i++) {
		const uint8_t *r = buf + FLOWBATCH_HEADER_LEN + (size_t)i * FLOWBATCH_RECORD_LEN;

		if ((r[2] & ~FLOWBATCH_F_INBOUND) || r[3])
			return -EBADMSG;
	}
	*ret = b;
	return 0;
}

int flowbatch_verify(const uint8_t *buf, size_t len, const uint8_t pub[32])
{
	if (len < FLOWBATCH_SIG_LEN)
		return -EBADMSG;
	return ed25519_verify(buf + len - FLOWBATCH_SIG_LEN, buf, len - FLOWBATCH_SIG_LEN, pub) < 0
		   ? -EBADMSG
		   : 0;
}

void flowbatch_record_get(const uint8_t *buf, unsigned i, struct flowbatch_record *ret)
{
	struct rcur c = {buf + FLOWBATCH_HEADER_LEN + (size_t)i * FLOWBATCH_RECORD_LEN};

	memset(ret, 0, sizeof(*ret));
	ret->proto = r8(&c);
	ret->icmp_type = r8(&c);
	ret->flags = r8(&c);
	c.p++;
	rmem(&c, ret->src, 16);
	ret->src_port = r16(&c);
	rmem(&c, ret->dst, 16);
	ret->dst_port = r16(&c);
	rmem(&c, ret->peer_key, FLOWBATCH_KEY_LEN);
	ret->tx_packets = r64(&c);
	ret->tx_bytes = r64(&c);
	ret->rx_packets = r64(&c);
	ret->rx_bytes = r64(&c);
	ret->first_ns = r64(&c);
	ret->last_ns = r64(&c);
	ret->denied = r32(&c);
}

void flowbatch_hash(const uint8_t *buf, size_t len, uint8_t ret[FLOWBATCH_HASH_LEN])
{
	blake2s(ret, FLOWBATCH_HASH_LEN, buf, len, NULL, 0);
}
