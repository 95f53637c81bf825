/* SPDX-License-Identifier: MIT */
/*
 * Segmentation of TSO/USO super-packets: each segment is compared byte for byte with the
 * packet a sender would have built by hand (lengths, IPv4 ids, sequence numbers, flags,
 * checksums), for TCP and UDP over IPv4 and IPv6, with IP options, extension headers and TCP
 * options, a short last segment, the kernel's partial checksum, few buffers at a time, and
 * super-packets that lie about themselves.
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

#define BIG (65536 + 128)
#define NOUT 80

struct ctx {
	struct pkt_pool *pool;
	struct pkt *outs[NOUT];
	uint8_t super[BIG];
	uint8_t want[4096];
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->pool = pkt_pool_new(NOUT);
	assert_non_null(c->pool);
	assert_int_equal(pkt_pool_get(c->pool, c->outs, NOUT), NOUT);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	pkt_free(c->outs, NOUT);
	pkt_pool_free(c->pool);
	free(c);
	return 0;
}

static struct offload_vnet_hdr vnet_of(const struct gen *g, uint16_t mss, bool partial)
{
	bool tcp = !g->proto || g->proto == IPPROTO_TCP;
	struct offload_vnet_hdr h = {
	    .flags = OFFLOAD_VNET_F_NEEDS_CSUM,
	    .gso_type = !tcp	? OFFLOAD_GSO_UDP_L4
			: g->v6 ? OFFLOAD_GSO_TCPV6
				: OFFLOAD_GSO_TCPV4,
	    .hdr_len = (uint16_t)(gen_l4(g) + (tcp ? 20 + g->tcp_opts : 8)),
	    .gso_size = mss,
	    .csum_start = (uint16_t)gen_l4(g),
	    .csum_offset = tcp ? 16 : 6,
	};

	if (!partial)
		h.flags = 0;
	return h;
}

/* As the kernel hands it over: the L4 checksum field holds only the pseudo-header's sum. */
static void make_partial(uint8_t *buf, size_t len, const struct gen *g)
{
	bool tcp = !g->proto || g->proto == IPPROTO_TCP;
	size_t l4 = gen_l4(g);
	uint16_t c = gen_csum(
	    NULL, 0, gen_pseudo(buf, tcp ? IPPROTO_TCP : IPPROTO_UDP, (uint32_t)(len - l4)));

	gen_be16(buf + l4 + (tcp ? 16 : 6), c);
}

/*
 * Cuts g (payload g->pay) at mss, `per_call` buffers at a time, and checks every segment
 * against a hand-built one.
 */
static void check_cut(struct ctx *c, const struct gen *g, uint16_t mss, bool partial,
		      unsigned per_call)
{
	struct offload_vnet_hdr h = vnet_of(g, mss, partial);
	size_t len = gen_build(c->super, g), off = 0, wlen;
	unsigned want_n = (g->pay + mss - 1) / mss, got = 0, k;
	struct offload_seg s;
	int r;

	if (!want_n)
		want_n = 1;
	if (partial)
		make_partial(c->super, len, g);
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), 0);
	while (!offload_seg_done(&s)) {
		assert_true(got + per_call <= NOUT);
		for (k = 0; k < per_call; k++)
			pkt_reset(c->outs[got + k]);
		r = offload_seg_next(&s, c->outs + got, per_call);
		assert_true(r > 0);
		got += (unsigned)r;
	}
	assert_int_equal(got, want_n);
	assert_int_equal(offload_seg_next(&s, c->outs, 1), 0);
	for (k = 0; k < got; k++) {
		struct gen e = *g;
		bool first = k == 0, last = k == got - 1;

		e.pay = (uint32_t)(g->pay - off < mss ? g->pay - off : mss);
		e.pay_off = g->pay_off + (uint32_t)off;
		e.seq = g->seq + (uint32_t)off;
		e.id = (uint16_t)(g->id + k);
		if (!last)
			e.flags &= (uint8_t) ~(GEN_FIN | GEN_PSH);
		if (!first)
			e.flags &= (uint8_t)~GEN_CWR;
		wlen = gen_build(c->want, &e);
		assert_int_equal(c->outs[k]->len, wlen);
		assert_memory_equal(c->outs[k]->data, c->want, wlen);
		off += e.pay;
	}
}

static void test_tcp4(void **state)
{
	struct gen g = {
	    .seq = 0xfffff000, .ack = 77, .flags = GEN_ACK | GEN_PSH, .pay = 4000, .id = 0xfffe};

	/* Sequence numbers and ids wrap. */
	check_cut(*state, &g, 1000, true, NOUT);
}

static void test_tcp4_short_last(void **state)
{
	struct gen g = {.seq = 1,
			.flags = GEN_ACK | GEN_PSH | GEN_FIN | GEN_CWR | GEN_ECE,
			.pay = 2501,
			.id = 9};

	check_cut(*state, &g, 1000, true, NOUT);
	/* Odd segment sizes. */
	check_cut(*state, &g, 999, false, NOUT);
}

static void test_tcp4_options(void **state)
{
	struct gen g = {.ip_opts = 8,
			.tcp_opts = 12,
			.opt_byte = 5,
			.seq = 100,
			.flags = GEN_ACK,
			.pay = 5000,
			.tos = 0xb8,
			.ttl = 3};

	check_cut(*state, &g, 1348, true, NOUT);
}

static void test_tcp4_largest(void **state)
{
	struct gen g = {
	    .tcp_opts = 12, .seq = 7, .flags = GEN_ACK | GEN_PSH, .pay = 65535 - 20 - 32};

	check_cut(*state, &g, 1368, true, NOUT);
	/* A tiny mss: more segments than buffers, cut 3 at a time would need 80+ calls. */
	g.pay = 2000;
	check_cut(*state, &g, 100, true, 3);
}

static void test_tcp6(void **state)
{
	struct gen g = {.v6 = true,
			.tcp_opts = 12,
			.seq = 5,
			.flags = GEN_ACK | GEN_PSH,
			.pay = 30000,
			.tos = 0x20};

	check_cut(*state, &g, 1348, true, NOUT);
	check_cut(*state, &g, 1348, false, 1);
}

static void test_tcp6_ext(void **state)
{
	struct gen g = {.v6 = true, .hbh = 16, .seq = 5, .flags = GEN_ACK, .pay = 3000};

	check_cut(*state, &g, 1200, true, NOUT);
}

static void test_udp(void **state)
{
	struct gen g4 = {.proto = IPPROTO_UDP, .pay = 14000, .id = 3};
	struct gen g6 = {.proto = IPPROTO_UDP, .v6 = true, .pay = 1000 * 7 + 1};

	check_cut(*state, &g4, 1400, true, NOUT);
	check_cut(*state, &g6, 1000, true, NOUT);
	check_cut(*state, &g6, 1000, false, 2);
}

static void test_headers_only(void **state)
{
	/* A super-packet of headers only is one segment of headers (the kernel never sends it). */
	struct gen g = {.seq = 5, .flags = GEN_ACK, .pay = 0};

	check_cut(*state, &g, 1000, false, NOUT);
}

static void test_too_big(void **state)
{
	struct ctx *c = *state;
	struct gen g = {.flags = GEN_ACK, .pay = 9000};
	struct offload_vnet_hdr h = vnet_of(&g, 4000, true);
	size_t len = gen_build(c->super, &g);
	struct offload_seg s;

	/* Segments of 4040 bytes do not fit 2 KiB buffers: refused, nothing written past. */
	make_partial(c->super, len, &g);
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), 0);
	pkt_reset(c->outs[0]);
	assert_int_equal(offload_seg_next(&s, c->outs, 1), -EMSGSIZE);
	assert_int_equal(c->outs[0]->len, 0);
}

static void test_bad(void **state)
{
	struct ctx *c = *state;
	struct gen g = {.flags = GEN_ACK, .pay = 3000};
	struct gen g6 = {.v6 = true, .flags = GEN_ACK, .pay = 1000};
	struct gen gu = {.proto = IPPROTO_UDP, .pay = 3000};
	struct offload_vnet_hdr h = vnet_of(&g, 1000, true), x;
	size_t len = gen_build(c->super, &g);
	struct offload_seg s;

	assert_int_equal(offload_seg_start(&s, &h, c->super, len), 0);
	/* Lengths that disagree with the IP header. */
	assert_int_equal(offload_seg_start(&s, &h, c->super, len - 1), -EINVAL);
	assert_int_equal(offload_seg_start(&s, &h, c->super, 19), -EINVAL);
	/* The header says IPv6 and the packet is IPv4; UDP and it is TCP. */
	x = h;
	x.gso_type = OFFLOAD_GSO_TCPV6;
	assert_int_equal(offload_seg_start(&s, &x, c->super, len), -EINVAL);
	x.gso_type = OFFLOAD_GSO_UDP_L4;
	assert_int_equal(offload_seg_start(&s, &x, c->super, len), -EPROTONOSUPPORT);
	x.gso_type = OFFLOAD_GSO_NONE;
	assert_int_equal(offload_seg_start(&s, &x, c->super, len), -EINVAL);
	/* Partial checksum offsets somewhere else. */
	x = h;
	x.csum_start = 24;
	assert_int_equal(offload_seg_start(&s, &x, c->super, len), -EINVAL);
	x = h;
	x.csum_offset = 6;
	assert_int_equal(offload_seg_start(&s, &x, c->super, len), -EINVAL);
	/* A fragment. */
	c->super[6] |= 0x20;
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), -EINVAL);
	c->super[6] &= (uint8_t)~0x20;
	/* TCP data offset below 5, and past the end. */
	c->super[20 + 12] = 0x40;
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), -EINVAL);
	c->super[20 + 12] = 0x50;
	g.pay = 0;
	len = gen_build(c->super, &g);
	c->super[20 + 12] = 0xf0;
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), -EINVAL);
	g.pay = 3000;
	len = gen_build(c->super, &g);
	/* IHL below 5; version 5. */
	c->super[0] = 0x44;
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), -EINVAL);
	c->super[0] = 0x55;
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), -EINVAL);

	len = gen_build(c->super, &g6);
	h = vnet_of(&g6, 1000, true);
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), 0);
	x = h;
	x.gso_type = OFFLOAD_GSO_TCPV4;
	assert_int_equal(offload_seg_start(&s, &x, c->super, len), -EINVAL);
	assert_int_equal(offload_seg_start(&s, &h, c->super, len + 1), -EINVAL);
	/* A fragment header, and a hop-by-hop header running past the end. */
	c->super[6] = 44;
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), -EPROTONOSUPPORT);
	c->super[6] = 0;
	c->super[41] = 0xff;
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), -EINVAL);

	len = gen_build(c->super, &gu);
	h = vnet_of(&gu, 1000, true);
	assert_int_equal(offload_seg_start(&s, &h, c->super, len), 0);
	x = h;
	x.gso_type = OFFLOAD_GSO_TCPV4;
	assert_int_equal(offload_seg_start(&s, &x, c->super, len), -EPROTONOSUPPORT);
}

static void test_csum_finish(void **state)
{
	struct ctx *c = *state;
	struct gen g = {.tcp_opts = 12, .flags = GEN_ACK, .pay = 1001};
	struct gen g6 = {.v6 = true, .proto = IPPROTO_UDP, .pay = 77};
	struct offload_vnet_hdr h = vnet_of(&g, 0, true);
	size_t len = gen_build(c->want, &g);

	memcpy(c->super, c->want, len);
	make_partial(c->super, len, &g);
	assert_memory_not_equal(c->super, c->want, len);
	assert_int_equal(offload_csum_finish(&h, c->super, len), 0);
	assert_memory_equal(c->super, c->want, len);
	/* Offsets past the end. */
	h.csum_offset = (uint16_t)(len - h.csum_start - 1);
	assert_int_equal(offload_csum_finish(&h, c->super, len), -EINVAL);
	/* Without NEEDS_CSUM nothing is touched. */
	h.flags = 0;
	c->super[len - 1] ^= 1;
	assert_int_equal(offload_csum_finish(&h, c->super, len), 0);
	assert_false(gen_csum_ok(c->super, len, 20, IPPROTO_TCP));

	len = gen_build(c->want, &g6);
	h = vnet_of(&g6, 0, true);
	memcpy(c->super, c->want, len);
	make_partial(c->super, len, &g6);
	assert_int_equal(offload_csum_finish(&h, c->super, len), 0);
	assert_true(gen_csum_ok(c->super, len, 40, IPPROTO_UDP));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_tcp4, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp4_short_last, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp4_options, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp4_largest, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp6, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp6_ext, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_headers_only, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_csum_finish, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
