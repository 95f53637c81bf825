/* SPDX-License-Identifier: MIT */
/*
 * Coalescing of TCP segments and UDP datagrams for TUN: a group written as the kernel would
 * read it (vnet header, the first member whole, the others' payloads) must be a super-packet
 * that cutting again (offload_seg_*, as the kernel's GSO would) turns back into exactly the
 * packets that went in. Packets that must not join (out of order, other flows, any header
 * field that differs, flags, fragments, bad IPv4 header checksums, sizes, UDP without a
 * checksum) come out untouched, each alone, in their order. A bad L4 checksum does not keep a
 * packet out (decrypted packets are trusted, as the kernel's WireGuard trusts them): cutting
 * again gives it a good one, as the kernel would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "offload/offload.h"
#include "pktgen.h"

#define NPKT OFFLOAD_GRO_BATCH

struct ctx {
	struct pkt_pool *pool;
	struct pkt *pkts[NPKT];
	unsigned n;
	uint8_t orig[NPKT][2048];
	uint32_t orig_len[NPKT];
	struct pkt *orig_ptr[NPKT]; /* which buffer held which original */
	struct offload_gro_group groups[NPKT];
	unsigned ng;
	uint8_t flat[65536 + 64];
	struct pkt *segs[NPKT];
	unsigned want; /* OFFLOAD_GRO_* */
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->pool = pkt_pool_new(2 * NPKT);
	assert_non_null(c->pool);
	assert_int_equal(pkt_pool_get(c->pool, c->segs, NPKT), NPKT);
	c->want = OFFLOAD_GRO_TCP | OFFLOAD_GRO_UDP;
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	pkt_free(c->pkts, c->n);
	pkt_free(c->segs, NPKT);
	pkt_pool_free(c->pool);
	free(c);
	return 0;
}

static void add(struct ctx *c, const struct gen *g)
{
	struct pkt *p;

	assert_true(c->n < NPKT);
	assert_int_equal(pkt_pool_get(c->pool, &p, 1), 1);
	p->len = (uint32_t)gen_build(p->data, g);
	memcpy(c->orig[c->n], p->data, p->len);
	c->orig_len[c->n] = p->len;
	c->orig_ptr[c->n] = p;
	c->pkts[c->n++] = p;
}

/* Corrupts the last packet added, in the buffer and in its kept copy. */
static void poke_last(struct ctx *c, size_t off, uint8_t xor)
{
	c->pkts[c->n - 1]->data[off] ^= xor;
	c->orig[c->n - 1][off] ^= xor;
}

static void run(struct ctx *c)
{
	c->ng = offload_gro(c->pkts, c->n, c->want, c->groups);
}

/* The original index of the packet now at position i. */
static unsigned orig_of(const struct ctx *c, unsigned i)
{
	unsigned k;

	for (k = 0; k < c->n; k++)
		if (c->orig_ptr[k] == c->pkts[i])
			return k;
	fail();
	return 0;
}

/* Group g as written to TUN; returns the length after the vnet header. */
static size_t flatten(struct ctx *c, unsigned g)
{
	const struct offload_gro_group *gr = &c->groups[g];
	size_t len = 0;
	unsigned i;

	for (i = 0; i < gr->n; i++) {
		const struct pkt *p = c->pkts[gr->start + i];
		size_t skip = i ? gr->skip : 0;

		assert_true(p->len >= skip);
		memcpy(c->flat + len, p->data + skip, p->len - skip);
		len += p->len - skip;
	}
	return len;
}

/*
 * Group g must hold the originals `want` (indices, in order), and be written so that the
 * kernel's cutting gives them back byte for byte.
 */
static void check_group(struct ctx *c, unsigned g, const unsigned *want, unsigned n_want)
{
	const struct offload_gro_group *gr = &c->groups[g];
	struct offload_vnet_hdr h;
	struct offload_seg s;
	uint8_t proto;
	bool v6, udp;
	size_t len;
	unsigned i;
	int r;

	assert_int_equal(gr->n, n_want);
	for (i = 0; i < n_want; i++)
		assert_int_equal(orig_of(c, gr->start + i), want[i]);
	assert_int_equal(offload_vnet_hdr_parse(gr->vnet, OFFLOAD_VNET_HDR_LEN, &h), 0);
	len = flatten(c, g);
	v6 = (c->flat[0] >> 4) == 6;
	proto = v6 ? c->flat[6] : c->flat[9];
	udp = proto == IPPROTO_UDP;
	if (n_want == 1) {
		/* Alone: untouched, and said to be a plain packet. */
		assert_int_equal(h.flags, 0);
		assert_int_equal(h.gso_type, OFFLOAD_GSO_NONE);
		assert_int_equal(len, c->orig_len[want[0]]);
		assert_memory_equal(c->flat, c->orig[want[0]], len);
		return;
	}
	assert_int_equal(h.flags, OFFLOAD_VNET_F_NEEDS_CSUM);
	if (udp) {
		assert_int_equal(h.gso_type, OFFLOAD_GSO_UDP_L4);
		assert_int_equal(h.csum_start + 8, h.hdr_len);
		/* The head's UDP length is the whole, as the pseudo-header's sum says. */
		assert_int_equal(gen_get16(c->flat + h.csum_start + 4), len - h.csum_start);
	} else {
		assert_int_equal(h.gso_type, v6 ? OFFLOAD_GSO_TCPV6 : OFFLOAD_GSO_TCPV4);
	}
	assert_int_equal(h.hdr_len, gr->skip);
	assert_int_equal(h.gso_size, c->orig_len[want[0]] - gr->skip);
	assert_int_equal(h.csum_offset, udp ? 6 : 16);
	/* The kernel computes the checksum from the pseudo-header's sum in the field. */
	{
		uint32_t l4_len = (uint32_t)(len - h.csum_start);
		uint16_t field = gen_get16(c->flat + h.csum_start + h.csum_offset);

		assert_int_equal(field, gen_csum(NULL, 0, gen_pseudo(c->flat, proto, l4_len)));
	}
	if ((c->flat[0] >> 4) == 4)
		assert_int_equal(gen_csum(c->flat, 20, 0), 0xffff);
	assert_int_equal(offload_seg_start(&s, &h, c->flat, len), 0);
	for (i = 0; i < NPKT; i++)
		pkt_reset(c->segs[i]);
	r = offload_seg_next(&s, c->segs, NPKT);
	assert_int_equal(r, (int)n_want);
	assert_true(offload_seg_done(&s));
	for (i = 0; i < n_want; i++) {
		assert_int_equal(c->segs[i]->len, c->orig_len[want[i]]);
		assert_memory_equal(c->segs[i]->data, c->orig[want[i]], c->segs[i]->len);
	}
}

/* A stream of n segments of `size` from seq (the last `last` bytes, 0: size). */
static void stream(struct ctx *c, struct gen g, unsigned n, uint32_t size, uint32_t last)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		struct gen e = g;

		e.pay = i == n - 1 && last ? last : size;
		e.seq = g.seq + i * size;
		e.pay_off = g.pay_off + i * size;
		e.id = (uint16_t)(g.id + i);
		if (i < n - 1)
			e.flags &= (uint8_t)~GEN_PSH;
		add(c, &e);
	}
}

static void test_flow4(void **state)
{
	struct ctx *c = *state;
	struct gen g = {
	    .seq = 0xfffffc00, .ack = 9, .flags = GEN_ACK | GEN_PSH, .id = 0xffff, .tcp_opts = 12};
	const unsigned want[] = {0, 1, 2, 3};

	stream(c, g, 4, 1000, 500);
	run(c);
	assert_int_equal(c->ng, 1);
	check_group(c, 0, want, 4);
	/* The head says PSH (the last segment's) and the whole length. */
	assert_int_equal(c->flat[20 + 13], GEN_ACK | GEN_PSH);
	assert_int_equal(gen_get16(c->flat + 2), 20 + 32 + 3500);
}

static void test_flow6(void **state)
{
	struct ctx *c = *state;
	struct gen g = {.v6 = true, .seq = 1, .flags = GEN_ACK, .tos = 0x28};
	const unsigned want[] = {0, 1, 2, 3, 4, 5};

	stream(c, g, 6, 1348, 0);
	run(c);
	assert_int_equal(c->ng, 1);
	check_group(c, 0, want, 6);
	assert_int_equal(gen_get16(c->flat + 4), 20 + 6 * 1348);
}

static void test_interleaved(void **state)
{
	struct ctx *c = *state;
	struct gen a = {.seq = 100, .flags = GEN_ACK}, b = a, u = {.proto = IPPROTO_UDP, .pay = 40};
	const unsigned wa[] = {0, 2, 5}, wb[] = {1, 3}, wu[] = {4};
	unsigned i;

	b.sport = 40001;
	for (i = 0; i < 3; i++) {
		struct gen e = a;

		e.seq = a.seq + i * 1000, e.pay = 1000, e.pay_off = i * 1000, e.id = (uint16_t)i;
		add(c, &e);
		if (i == 2)
			break;
		e = b;
		e.seq = b.seq + i * 1000, e.pay = 1000, e.pay_off = i * 1000, e.id = (uint16_t)i;
		add(c, &e);
		if (i == 1)
			add(c, &u);
	}
	/* a0 b0 a1 b1 u a2 -> [a0 a1 a2] [b0 b1] [u] */
	run(c);
	assert_int_equal(c->ng, 3);
	check_group(c, 0, wa, 3);
	check_group(c, 1, wb, 2);
	check_group(c, 2, wu, 1);
}

/* The second packet of a pair, changed by `how`: they must stay two packets, untouched. */
enum change {
	SEQ_GAP,
	SEQ_BACK,
	TTL,
	TOS,
	OPTS,
	ACK,
	WIN,
	ECE,
	CWR,
	SYN,
	RST,
	URG,
	FIN,
	SPORT,
	SRC,
	BIGGER,
	BAD_IP_CSUM,
	ID_JUMP,
	FAMILY,
	CHANGE_MAX
};

static void test_no_join(void **state)
{
	struct ctx *c = *state;
	const unsigned w0[] = {0}, w1[] = {1};
	unsigned how;

	for (how = 0; how < CHANGE_MAX; how++) {
		struct gen a = {.seq = 5000,
				.flags = GEN_ACK,
				.pay = 1000,
				.tcp_opts = 12,
				.no_df = how == ID_JUMP},
			   b = a;

		b.seq = a.seq + 1000, b.pay_off = 1000, b.id = 1;
		switch ((enum change)how) {
		case SEQ_GAP:
			b.seq++;
			break;
		case SEQ_BACK:
			b.seq = a.seq;
			break;
		case TTL:
			b.ttl = 63;
			break;
		case TOS:
			b.tos = 1;
			break;
		case OPTS:
			b.opt_byte = 1;
			break;
		case ACK:
			b.ack = 1;
			break;
		case WIN:
			b.win = 513;
			break;
		case ECE:
			b.flags |= GEN_ECE;
			break;
		case CWR:
			b.flags |= GEN_CWR;
			break;
		case SYN:
			b.flags |= GEN_SYN;
			break;
		case RST:
			b.flags |= GEN_RST;
			break;
		case URG:
			b.flags |= GEN_URG;
			break;
		case FIN:
			b.flags |= GEN_FIN;
			break;
		case SPORT:
			b.sport = 1;
			break;
		case SRC:
			b.src_last = 9;
			break;
		case BIGGER:
			b.pay = 1001;
			break;
		case ID_JUMP:
			b.id = 2;
			break;
		case FAMILY:
			b.v6 = true;
			break;
		default:
			break;
		}
		add(c, &a);
		add(c, &b);
		if (how == BAD_IP_CSUM)
			poke_last(
			    c, 4,
			    1); /* the id (free under DF), under a checksum that no longer fits */
		run(c);
		if (c->ng != 2)
			print_error("change %u joined\n", how);
		assert_int_equal(c->ng, 2);
		check_group(c, 0, w0, 1);
		check_group(c, 1, w1, 1);
		pkt_free(c->pkts, c->n);
		c->n = 0;
	}
}

static void test_no_open(void **state)
{
	struct ctx *c = *state;
	const unsigned w0[] = {0}, w1[] = {1};
	unsigned how;

	/*
	 * Firsts that cannot open a group: no payload, PSH, FIN, IPv4 options, a bad IPv4 header
	 * checksum.
	 */
	for (how = 0; how < 5; how++) {
		struct gen a = {.seq = 5000, .flags = GEN_ACK, .pay = 1000}, b = a;

		b.seq = a.seq + 1000, b.pay_off = 1000, b.id = 1;
		if (how == 0)
			a.pay = 0, b.seq = a.seq;
		if (how == 1)
			a.flags |= GEN_PSH;
		if (how == 2)
			a.flags |= GEN_FIN;
		if (how == 3)
			a.ip_opts = b.ip_opts = 4;
		add(c, &a);
		add(c, &b);
		if (how == 4) {
			/* The id (free under DF), under a checksum that no longer fits. */
			c->pkts[0]->data[4] ^= 1;
			c->orig[0][4] ^= 1;
		}
		run(c);
		assert_int_equal(c->ng, 2);
		check_group(c, 0, w0, 1);
		check_group(c, 1, w1, 1);
		pkt_free(c->pkts, c->n);
		c->n = 0;
	}
}

static void test_fixed_id(void **state)
{
	struct ctx *c = *state;
	struct gen g = {.seq = 1, .flags = GEN_ACK, .pay = 900, .id = 77};

	/* With DF the ids may stand still (Linux sends them so); cutting again runs them on. */
	add(c, &g);
	g.seq += 900, g.pay_off += 900;
	add(c, &g);
	g.seq += 900, g.pay_off += 900;
	add(c, &g);
	run(c);
	assert_int_equal(c->ng, 1);
	assert_int_equal(c->groups[0].n, 3);
	/* Not byte-equal on the way back (ids), so only the rest is checked. */
	{
		struct offload_vnet_hdr h;

		assert_int_equal(
		    offload_vnet_hdr_parse(c->groups[0].vnet, OFFLOAD_VNET_HDR_LEN, &h), 0);
		assert_int_equal(h.gso_size, 900);
		assert_int_equal(flatten(c, 0), 40 + 2700);
	}
}

static void test_closing(void **state)
{
	struct ctx *c = *state;
	struct gen g = {.seq = 1, .flags = GEN_ACK};
	const unsigned w01[] = {0, 1}, w234[] = {2, 3, 4}, w5[] = {5};

	/* full, short | full (the short one closed the group) */
	stream(c, g, 2, 1000, 400);
	g.seq = 1 + 1400, g.pay_off = 1400, g.id = 2;
	stream(c, g, 1, 1000, 0);
	/* which the next ones join up to PSH | full */
	g.seq = 1 + 2400, g.pay_off = 2400, g.id = 3, g.flags = GEN_ACK | GEN_PSH;
	stream(c, g, 2, 1000, 0);
	g.seq = 1 + 4400, g.pay_off = 4400, g.id = 5, g.flags = GEN_ACK;
	stream(c, g, 1, 1000, 0);
	run(c);
	assert_int_equal(c->ng, 3);
	check_group(c, 0, w01, 2);
	check_group(c, 1, w234, 3);
	check_group(c, 2, w5, 1);
}

static void test_order_kept(void **state)
{
	struct ctx *c = *state;
	struct gen g = {.seq = 1, .flags = GEN_ACK, .pay = 1000};
	const unsigned w0[] = {0}, w12[] = {1, 2};

	/* a0, a0 again (a retransmission), a1: a1 must not jump over the copy into a0's group. */
	add(c, &g);
	add(c, &g);
	g.seq += 1000, g.pay_off += 1000, g.id = 1;
	add(c, &g);
	run(c);
	assert_int_equal(c->ng, 2);
	check_group(c, 0, w0, 1);
	check_group(c, 1, w12, 2);
}

/*
 * A payload byte changed after the checksum was made, in the first member, a middle one and
 * the last, TCP and UDP, IPv4 and IPv6: all join, and cutting the group again gives every
 * packet back with a good checksum, the changed bytes kept (what the kernel's GRO does with
 * packets marked CHECKSUM_UNNECESSARY, as its WireGuard marks them).
 */
static void test_bad_l4_csum_joins(void **state)
{
	struct ctx *c = *state;
	const unsigned want[] = {0, 1, 2, 3};
	unsigned k, bad, i;

	for (k = 0; k < 4; k++) {
		bool v6 = k & 1;
		uint8_t proto = k & 2 ? IPPROTO_UDP : IPPROTO_TCP;
		size_t l4 = v6 ? 40 : 20, co = l4 + (proto == IPPROTO_UDP ? 6 : 16);

		for (bad = 0; bad < 4; bad++) {
			struct gen g = {
			    .v6 = v6, .proto = proto, .seq = 77, .flags = GEN_ACK, .tcp_opts = 12};
			struct offload_vnet_hdr h;
			struct offload_seg s;
			size_t len;

			stream(c, g, 4, 1000, 300);
			c->pkts[bad]->data[c->orig_len[bad] - 7] ^= 0x5a;
			c->orig[bad][c->orig_len[bad] - 7] ^= 0x5a;
			assert_false(gen_csum_ok(c->orig[bad], c->orig_len[bad], l4, proto));
			run(c);
			assert_int_equal(c->ng, 1);
			assert_int_equal(c->groups[0].n, 4);
			for (i = 0; i < 4; i++)
				assert_int_equal(orig_of(c, i), want[i]);
			assert_int_equal(
			    offload_vnet_hdr_parse(c->groups[0].vnet, OFFLOAD_VNET_HDR_LEN, &h), 0);
			assert_int_equal(h.flags, OFFLOAD_VNET_F_NEEDS_CSUM);
			len = flatten(c, 0);
			assert_int_equal(offload_seg_start(&s, &h, c->flat, len), 0);
			for (i = 0; i < NPKT; i++)
				pkt_reset(c->segs[i]);
			assert_int_equal(offload_seg_next(&s, c->segs, NPKT), 4);
			for (i = 0; i < 4; i++) {
				const uint8_t *got = c->segs[i]->data, *o = c->orig[i];

				assert_int_equal(c->segs[i]->len, c->orig_len[i]);
				assert_true(gen_csum_ok(got, c->segs[i]->len, l4, proto));
				/* All but the L4 checksum field as they came. */
				assert_memory_equal(got, o, co);
				assert_memory_equal(got + co + 2, o + co + 2,
						    c->orig_len[i] - co - 2);
				if (i != bad)
					assert_memory_equal(got + co, o + co, 2);
			}
			pkt_free(c->pkts, c->n);
			c->n = 0;
		}
	}
}

static void test_64k(void **state)
{
	struct ctx *c = *state;
	struct gen g = {.v6 = false, .seq = 1, .flags = GEN_ACK};
	unsigned want[NPKT], i;

	/* 20 + 20 + 46 * 1400 = 64440 fits the IPv4 length; a 47th would not. */
	stream(c, g, NPKT, 1400, 0);
	run(c);
	assert_int_equal(c->ng, 2);
	for (i = 0; i < NPKT; i++)
		want[i] = i;
	check_group(c, 0, want, 46);
	check_group(c, 1, want + 46, NPKT - 46);
}

/* --- UDP --- */

/* Writes a 16-bit field of packet k (and its kept copy); fix_ip: the IPv4 header checksum too. */
static void set16(struct ctx *c, unsigned k, size_t off, uint16_t v, bool fix_ip)
{
	uint8_t *d = c->pkts[k]->data;

	gen_be16(d + off, v);
	if (fix_ip) {
		gen_be16(d + 10, 0);
		gen_be16(d + 10, (uint16_t)~gen_csum(d, (size_t)(d[0] & 0xf) * 4, 0));
	}
	memcpy(c->orig[k], d, c->orig_len[k]);
}

static void test_udp_flow(void **state)
{
	struct ctx *c = *state;
	unsigned want[12], i, v6;

	for (i = 0; i < 12; i++)
		want[i] = i;
	for (v6 = 0; v6 < 2; v6++) {
		/* Without DF (IPv4) the ids must run on: they do, across the wrap. */
		struct gen g = {
		    .v6 = v6 == 1, .proto = IPPROTO_UDP, .id = 0xfffb, .no_df = true, .tos = 0x28};
		uint32_t size = v6 ? 1372 : 1392;

		stream(c, g, 12, size, 500);
		run(c);
		assert_int_equal(c->ng, 1);
		check_group(c, 0, want, 12);
		if (v6)
			assert_int_equal(gen_get16(c->flat + 4), 8 + 11 * size + 500);
		else
			assert_int_equal(gen_get16(c->flat + 2), 28 + 11 * size + 500);
		pkt_free(c->pkts, c->n);
		c->n = 0;
	}
}

/* A datagram changed by `how` (IPv4 unless V6_*): it must not join, nor the ones after it. */
enum udp_change {
	U_SPORT,
	U_DPORT,
	U_SRC,
	U_DST,
	U_FAMILY,
	U_TCP,
	U_TTL,
	U_TOS,
	U_DF,
	U_ID_JUMP,
	U_BIGGER,
	U_EMPTY,
	U_MF,
	U_FRAG_OFF,
	U_OPTS,
	U_BAD_IP_CSUM,
	U_ZERO_CSUM,
	U_PADDED,
	U_V6_HOP,
	U_V6_TCLASS,
	U_V6_FLOW,
	U_V6_ZERO_CSUM,
	U_V6_HBH,
	U_CHANGE_MAX
};

/* Changes that keep a datagram from opening a group, not only from joining one. */
static bool udp_change_first_too(enum udp_change how)
{
	switch (how) {
	case U_EMPTY:
	case U_MF:
	case U_FRAG_OFF:
	case U_OPTS:
	case U_BAD_IP_CSUM:
	case U_ZERO_CSUM:
	case U_PADDED:
	case U_V6_ZERO_CSUM:
	case U_V6_HBH:
		return true;
	default:
		return false;
	}
}

/* Two datagrams of one flow, the first (target 0) or the second (1) changed by `how`. */
static void udp_pair(struct ctx *c, int how, unsigned target)
{
	struct gen g[2] = {{.v6 = how >= U_V6_HOP, .proto = IPPROTO_UDP, .pay = 1000, .id = 7}};
	struct gen *x = &g[target];
	unsigned k;
	size_t l4;

	g[1] = g[0];
	g[1].pay_off = 1000;
	g[1].id = 8;
	switch (how) {
	case U_SPORT:
		x->sport = 1;
		break;
	case U_DPORT:
		x->dport = 1;
		break;
	case U_SRC:
		x->src_last = 9;
		break;
	case U_DST:
		x->dst_last = 9;
		break;
	case U_FAMILY:
		x->v6 = true;
		break;
	case U_TCP:
		/* TCP between the same addresses and ports is another flow. */
		x->proto = IPPROTO_TCP;
		x->flags = GEN_ACK;
		break;
	case U_TTL:
	case U_V6_HOP:
		x->ttl = 63;
		break;
	case U_TOS:
	case U_V6_TCLASS:
		x->tos = 4;
		break;
	case U_DF:
		x->no_df = true;
		break;
	case U_ID_JUMP:
		g[0].no_df = g[1].no_df = true;
		g[1].id = 9;
		break;
	case U_BIGGER:
		x->pay = 1001;
		break;
	case U_EMPTY:
		x->pay = 0;
		break;
	case U_OPTS:
		x->ip_opts = 4;
		break;
	case U_V6_HBH:
		x->hbh = 8;
		break;
	default:
		break;
	}
	add(c, &g[0]);
	add(c, &g[1]);
	k = c->n - 2 + target;
	l4 = gen_l4(x);
	switch (how) {
	case U_MF:
		set16(c, k, 6, 0x4000 | 0x2000, true);
		break;
	case U_FRAG_OFF:
		set16(c, k, 6, 0x4000 | 185, true);
		break;
	case U_BAD_IP_CSUM:
		/* The id (free under DF), under a checksum that no longer fits. */
		c->pkts[k]->data[4] ^= 1;
		c->orig[k][4] ^= 1;
		break;
	case U_ZERO_CSUM:
	case U_V6_ZERO_CSUM:
		set16(c, k, l4 + 6, 0, false);
		break;
	case U_PADDED:
		/* The UDP length says less than the IP header: the kernel trims the rest. */
		set16(c, k, l4 + 4, (uint16_t)(c->orig_len[k] - l4 - 1), false);
		break;
	case U_V6_FLOW:
		c->pkts[k]->data[3] ^= 1;
		c->orig[k][3] ^= 1;
		break;
	default:
		break;
	}
}

static void test_udp_no_join(void **state)
{
	struct ctx *c = *state;
	const unsigned w0[] = {0}, w1[] = {1}, w01[] = {0, 1}, w23[] = {2, 3};
	unsigned target;
	int how;

	/* Unchanged, IPv4 (-1) and IPv6 (past the last change), they join. */
	udp_pair(c, -1, 0);
	udp_pair(c, U_CHANGE_MAX, 0);
	run(c);
	assert_int_equal(c->ng, 2);
	check_group(c, 0, w01, 2);
	check_group(c, 1, w23, 2);
	pkt_free(c->pkts, c->n);
	c->n = 0;
	for (how = 0; how < U_CHANGE_MAX; how++) {
		for (target = 0; target < 2; target++) {
			if (target == 0 && !udp_change_first_too((enum udp_change)how))
				continue;
			udp_pair(c, how, target);
			run(c);
			if (c->ng != 2)
				print_error("change %d of datagram %u joined\n", how, target);
			assert_int_equal(c->ng, 2);
			check_group(c, 0, w0, 1);
			check_group(c, 1, w1, 1);
			pkt_free(c->pkts, c->n);
			c->n = 0;
		}
	}
}

static void test_udp_sizes(void **state)
{
	struct ctx *c = *state;
	static const uint32_t sizes[] = {1000, 1000, 600, 1000, 1000, 400, 400};
	const unsigned w012[] = {0, 1, 2}, w345[] = {3, 4, 5}, w6[] = {6};
	struct gen g = {.proto = IPPROTO_UDP};
	unsigned i;

	/* A shorter datagram ends its group; the next ones start another. */
	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		g.pay = sizes[i];
		g.id = (uint16_t)i;
		add(c, &g);
		g.pay_off += sizes[i];
	}
	run(c);
	assert_int_equal(c->ng, 3);
	check_group(c, 0, w012, 3);
	check_group(c, 1, w345, 3);
	check_group(c, 2, w6, 1);
}

static void test_udp_interleaved(void **state)
{
	struct ctx *c = *state;
	struct gen a = {.proto = IPPROTO_UDP, .pay = 700}, b = a,
		   t = {.flags = GEN_ACK, .pay = 700};
	const unsigned wa[] = {0, 3, 6}, wb[] = {1, 4}, wt[] = {2, 5};
	unsigned i;

	b.sport = 40001;
	/* a0 b0 t0 a1 b1 t1 a2 -> [a0 a1 a2] [b0 b1] [t0 t1]: t is TCP on a's ports. */
	for (i = 0; i < 3; i++) {
		add(c, &a);
		a.id++, a.pay_off += 700;
		if (i == 2)
			break;
		add(c, &b);
		b.id++, b.pay_off += 700;
		add(c, &t);
		t.id++, t.pay_off += 700, t.seq += 700;
	}
	run(c);
	assert_int_equal(c->ng, 3);
	check_group(c, 0, wa, 3);
	check_group(c, 1, wb, 2);
	check_group(c, 2, wt, 2);
}

/*
 * A datagram of the flow's addresses whose ports we do not read (an IPv4 fragment, an IPv6
 * extension header) closes the flow's group: the datagrams after it may not overtake it.
 * Another protocol between the same addresses does not.
 */
static void test_udp_order_kept(void **state)
{
	struct ctx *c = *state;
	const unsigned w01[] = {0, 1}, w2[] = {2}, w346[] = {3, 4, 6}, w5[] = {5};
	unsigned v6;

	for (v6 = 0; v6 < 2; v6++) {
		struct gen g = {.v6 = v6 == 1, .proto = IPPROTO_UDP, .pay = 800}, x = g;
		struct gen icmp = g;

		icmp.proto = 1, icmp.pay = 40;
		/* d0 d1 X d2 d3 I d4 -> [d0 d1] [X] [d2 d3 d4] [I]: X a fragment or extension
		 * header, I another protocol. */
		add(c, &g);
		g.id++, g.pay_off += 800;
		add(c, &g);
		g.id++, g.pay_off += 800;
		x.hbh = v6 ? 8 : 0;
		x.id = 999;
		add(c, &x);
		if (!v6)
			set16(c, 2, 6, 0x2000, true); /* MF, no DF */
		add(c, &g);
		g.id++, g.pay_off += 800;
		add(c, &g);
		g.id++, g.pay_off += 800;
		add(c, &icmp);
		add(c, &g);
		run(c);
		assert_int_equal(c->ng, 4);
		check_group(c, 0, w01, 2);
		check_group(c, 1, w2, 1);
		check_group(c, 2, w346, 3);
		check_group(c, 3, w5, 1);
		pkt_free(c->pkts, c->n);
		c->n = 0;
	}
}

/* Each protocol coalesces only where the device took its offload. */
static void test_udp_want(void **state)
{
	struct ctx *c = *state;
	const unsigned w012[] = {0, 1, 2}, w345[] = {3, 4, 5};
	unsigned k, i;

	for (k = 0; k < 2; k++) {
		struct gen u = {.proto = IPPROTO_UDP, .pay = 900},
			   t = {.flags = GEN_ACK, .pay = 900};

		c->want = k ? OFFLOAD_GRO_UDP : OFFLOAD_GRO_TCP;
		stream(c, u, 3, 900, 0);
		stream(c, t, 3, 900, 0);
		run(c);
		assert_int_equal(c->ng, 4);
		if (k) {
			check_group(c, 0, w012, 3);
			for (i = 0; i < 3; i++)
				check_group(c, 1 + i, w345 + i, 1);
		} else {
			for (i = 0; i < 3; i++)
				check_group(c, i, w012 + i, 1);
			check_group(c, 3, w345, 3);
		}
		pkt_free(c->pkts, c->n);
		c->n = 0;
	}
}

static void test_udp_limits(void **state)
{
	struct ctx *c = *state;
	unsigned want[NPKT], i, v6;

	for (i = 0; i < NPKT; i++)
		want[i] = i;
	for (v6 = 0; v6 < 2; v6++) {
		struct gen g = {.v6 = v6 == 1, .proto = IPPROTO_UDP};

		/*
		 * 28 + 47 * 1392 = 65452 fits the IPv4 length, 8 + 47 * 1392 the IPv6 payload
		 * length; a 48th would not.
		 */
		stream(c, g, NPKT, 1392, 0);
		run(c);
		assert_int_equal(c->ng, 2);
		check_group(c, 0, want, 47);
		check_group(c, 1, want + 47, NPKT - 47);
		pkt_free(c->pkts, c->n);
		c->n = 0;
		/* A whole batch of small ones is one group: 64 segments, the kernel's limit. */
		stream(c, g, NPKT, 100, 0);
		run(c);
		assert_int_equal(c->ng, 1);
		check_group(c, 0, want, NPKT);
		pkt_free(c->pkts, c->n);
		c->n = 0;
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_flow4, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flow6, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_interleaved, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_join, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_open, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_fixed_id, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_closing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_order_kept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_l4_csum_joins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_64k, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_flow, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_no_join, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_sizes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_interleaved, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_order_kept, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_want, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_limits, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
