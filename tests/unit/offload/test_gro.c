/* SPDX-License-Identifier: MIT */
/*
 * Coalescing of TCP segments for TUN: a group written as the kernel would read it (vnet
 * header, the first member whole, the others' payloads) must be a super-packet that cutting
 * again (offload_seg_*, as the kernel's GSO would) turns back into exactly the segments that
 * went in. Segments that must not join (out of order, other flows, any header field that
 * differs, flags, bad IPv4 header checksums, sizes) come out untouched, each alone, in their
 * order. A bad TCP checksum does not keep a segment out (decrypted packets are trusted, as
 * the kernel's WireGuard trusts them): cutting again gives it a good one, as the kernel would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->pool = pkt_pool_new(2 * NPKT);
	assert_non_null(c->pool);
	assert_int_equal(pkt_pool_get(c->pool, c->segs, NPKT), NPKT);
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
	c->ng = offload_gro(c->pkts, c->n, c->groups);
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
	size_t len;
	unsigned i;
	int r;

	assert_int_equal(gr->n, n_want);
	for (i = 0; i < n_want; i++)
		assert_int_equal(orig_of(c, gr->start + i), want[i]);
	assert_int_equal(offload_vnet_hdr_parse(gr->vnet, OFFLOAD_VNET_HDR_LEN, &h), 0);
	len = flatten(c, g);
	if (n_want == 1) {
		/* Alone: untouched, and said to be a plain packet. */
		assert_int_equal(h.flags, 0);
		assert_int_equal(h.gso_type, OFFLOAD_GSO_NONE);
		assert_int_equal(len, c->orig_len[want[0]]);
		assert_memory_equal(c->flat, c->orig[want[0]], len);
		return;
	}
	assert_int_equal(h.flags, OFFLOAD_VNET_F_NEEDS_CSUM);
	assert_int_equal(h.gso_type,
			 (c->flat[0] >> 4) == 6 ? OFFLOAD_GSO_TCPV6 : OFFLOAD_GSO_TCPV4);
	assert_int_equal(h.hdr_len, gr->skip);
	assert_int_equal(h.gso_size, c->orig_len[want[0]] - gr->skip);
	assert_int_equal(h.csum_offset, 16);
	/* The kernel computes the checksum from the pseudo-header's sum in the field. */
	{
		uint32_t l4_len = (uint32_t)(len - h.csum_start);
		uint16_t field = gen_get16(c->flat + h.csum_start + 16);

		assert_int_equal(field,
				 gen_csum(NULL, 0, gen_pseudo(c->flat, IPPROTO_TCP, l4_len)));
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
 * the last, IPv4 and IPv6: all join, and cutting the group again gives every segment back
 * with a good checksum, the changed bytes kept (what the kernel's GRO does with packets
 * marked CHECKSUM_UNNECESSARY, as its WireGuard marks them).
 */
static void test_bad_tcp_csum_joins(void **state)
{
	struct ctx *c = *state;
	const unsigned want[] = {0, 1, 2, 3};
	unsigned v6, bad, i;

	for (v6 = 0; v6 < 2; v6++) {
		for (bad = 0; bad < 4; bad++) {
			struct gen g = {.v6 = v6 == 1, .seq = 77, .flags = GEN_ACK, .tcp_opts = 12};
			struct offload_vnet_hdr h;
			struct offload_seg s;
			size_t len, l4 = v6 ? 40 : 20;

			stream(c, g, 4, 1000, 300);
			c->pkts[bad]->data[c->orig_len[bad] - 7] ^= 0x5a;
			c->orig[bad][c->orig_len[bad] - 7] ^= 0x5a;
			assert_false(
			    gen_csum_ok(c->orig[bad], c->orig_len[bad], l4, IPPROTO_TCP));
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
				assert_true(gen_csum_ok(got, c->segs[i]->len, l4, IPPROTO_TCP));
				/* All but the TCP checksum field as they came. */
				assert_memory_equal(got, o, l4 + 16);
				assert_memory_equal(got + l4 + 18, o + l4 + 18,
						    c->orig_len[i] - l4 - 18);
				if (i != bad)
					assert_memory_equal(got + l4 + 16, o + l4 + 16, 2);
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
	    cmocka_unit_test_setup_teardown(test_bad_tcp_csum_joins, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_64k, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
