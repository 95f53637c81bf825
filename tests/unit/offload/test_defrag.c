/* SPDX-License-Identifier: MIT */
/*
 * Reassembly of IP fragments bound for TUN (offload_defrag). Datagrams are built whole
 * (pktgen.h) and cut here the way RFC 791 and RFC 8200 say, independently of defrag.c; the
 * fragments that follow each other in a batch, first to last, must come back as exactly the
 * datagram that was cut, and anything else (a fragment missing, out of order, of another
 * datagram, overlapping, with DF, a bad header checksum, a whole that would not fit its
 * buffer or 64 KiB, IPv6 with another extension header first) must pass untouched, in order.
 * The joined datagrams of a flow then coalesce like any other.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "offload/offload.h"
#include "pktgen.h"

#define NPKT OFFLOAD_GRO_BATCH

struct ctx {
	struct pkt_pool *pool, *big;
	struct pkt *pkts[NPKT];
	struct pkt *orig_ptr[NPKT];
	uint8_t orig[NPKT][2048];
	uint32_t orig_len[NPKT];
	unsigned n;
	uint8_t whole[4][16384]; /* datagrams built whole, to compare with */
	size_t whole_len[4];
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->pool = pkt_pool_new(NPKT);
	c->big = pkt_pool_new_sized(4, PKT_BUF_SIZE_MAX);
	assert_non_null(c->pool);
	assert_non_null(c->big);
	*state = c;
	return 0;
}

static void reset(struct ctx *c)
{
	pkt_free(c->pkts, c->n);
	c->n = 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	reset(c);
	pkt_pool_free(c->pool);
	pkt_pool_free(c->big);
	free(c);
	return 0;
}

static struct pkt *add_bytes(struct ctx *c, const uint8_t *d, size_t len)
{
	struct pkt *p;

	assert_true(c->n < NPKT);
	assert_int_equal(pkt_pool_get(len > 2000 ? c->big : c->pool, &p, 1), 1);
	/* As a decrypted packet sits: after the 16-byte WireGuard data header. */
	p->data += 16;
	assert_true(len <= pkt_tailroom(p));
	memcpy(p->data, d, len);
	p->len = (uint32_t)len;
	if (len <= sizeof(c->orig[0]))
		memcpy(c->orig[c->n], d, len);
	c->orig_len[c->n] = (uint32_t)len;
	c->orig_ptr[c->n] = p;
	c->pkts[c->n++] = p;
	return p;
}

/* A whole UDP datagram of `pay` bytes into slot w; DF off (fragments never carry it). */
static void build(struct ctx *c, unsigned w, bool v6, uint32_t pay, uint16_t id)
{
	struct gen g = {.v6 = v6, .proto = IPPROTO_UDP, .pay = pay, .id = id, .no_df = true};

	assert_true(gen_l4(&g) + 8 + pay <= sizeof(c->whole[w]));
	c->whole_len[w] = gen_build(c->whole[w], &g);
}

/*
 * Cuts datagram w into fragments of at most `mtu` bytes and adds them from `from` to `to`
 * (indices, to exclusive; 0, 99 for all), with id for IPv6. Returns how many there were.
 */
static unsigned cut(struct ctx *c, unsigned w, uint32_t mtu, unsigned from, unsigned to)
{
	static uint8_t f[16384];
	unsigned k, count = 1;
	size_t len = 0;

	for (k = 0; k < count; k++) {
		count = gen_frag(c->whole[w], c->whole_len[w], mtu, 0x5eed00 + w, k, f, &len);
		if (k >= from && k < to)
			add_bytes(c, f, len);
	}
	return count;
}

/* pkts[i] must be datagram w, whole. */
static void assert_whole(struct ctx *c, unsigned i, unsigned w)
{
	assert_int_equal(c->pkts[i]->len, c->whole_len[w]);
	assert_memory_equal(c->pkts[i]->data, c->whole[w], c->whole_len[w]);
}

/* Nothing joined: every packet as it went in, in its place. */
static void assert_untouched(struct ctx *c)
{
	unsigned i;

	assert_int_equal(offload_defrag(c->pkts, c->n), c->n);
	for (i = 0; i < c->n; i++) {
		assert_ptr_equal(c->pkts[i], c->orig_ptr[i]);
		assert_int_equal(c->pkts[i]->len, c->orig_len[i]);
		assert_memory_equal(c->pkts[i]->data, c->orig[i], c->orig_len[i]);
	}
	reset(c);
}

static void test_join(void **state)
{
	struct ctx *c = *state;
	unsigned v6;

	for (v6 = 0; v6 < 2; v6++) {
		/* 1400 bytes at MTU 1420: two fragments, the second with 8 (IPv4) or 40 bytes. */
		build(c, 0, v6, 1400, 7);
		assert_int_equal(cut(c, 0, 1420, 0, 99), 2);
		assert_int_equal(offload_defrag(c->pkts, c->n), 1);
		assert_whole(c, 0, 0);
		assert_ptr_equal(c->pkts[0], c->orig_ptr[0]);
		assert_ptr_equal(c->pkts[1], c->orig_ptr[1]); /* taken in, to be freed */
		assert_true(
		    gen_csum_ok(c->pkts[0]->data, c->pkts[0]->len, v6 ? 40 : 20, IPPROTO_UDP));
		reset(c);
		/* Five fragments, odd sizes. */
		build(c, 0, v6, 1001, 8);
		assert_int_equal(cut(c, 0, 300, 0, 99), v6 ? 5 : 4);
		assert_int_equal(offload_defrag(c->pkts, c->n), 1);
		assert_whole(c, 0, 0);
		reset(c);
	}
}

/* Whole packets and joined datagrams keep their order; taken-in fragments go last. */
static void test_batch(void **state)
{
	struct ctx *c = *state;
	struct gen plain = {.proto = IPPROTO_UDP, .pay = 100};
	uint8_t b[256];
	struct pkt *x2, *y2;

	build(c, 0, false, 1400, 1);
	build(c, 1, true, 1800, 2);
	build(c, 2, false, 1400, 3);
	add_bytes(c, b, gen_build(b, &plain)); /* 0: A */
	cut(c, 0, 1420, 0, 99);		       /* 1, 2: X */
	x2 = c->pkts[2];
	add_bytes(c, b, gen_build(b, &plain)); /* 3: B */
	cut(c, 1, 1420, 0, 99);		       /* 4, 5: Y */
	y2 = c->pkts[5];
	cut(c, 2, 1420, 0, 1); /* 6: Z's first only */
	assert_int_equal(offload_defrag(c->pkts, c->n), 5);
	assert_ptr_equal(c->pkts[0], c->orig_ptr[0]);
	assert_whole(c, 1, 0);
	assert_ptr_equal(c->pkts[2], c->orig_ptr[3]);
	assert_whole(c, 3, 1);
	assert_ptr_equal(c->pkts[4], c->orig_ptr[6]);
	assert_memory_equal(c->pkts[4]->data, c->orig[6], c->orig_len[6]);
	assert_ptr_equal(c->pkts[5], x2);
	assert_ptr_equal(c->pkts[6], y2);
	reset(c);
}

static void set_byte(struct ctx *c, unsigned i, size_t off, uint8_t v, bool fix_csum)
{
	uint8_t *d = c->pkts[i]->data;

	d[off] = v;
	if (fix_csum && (d[0] >> 4) == 4) {
		d[10] = d[11] = 0;
		gen_be16(d + 10, (uint16_t)~gen_csum(d, 20, 0));
	}
	memcpy(c->orig[i], d, c->pkts[i]->len);
}

static void test_no_join4(void **state)
{
	struct ctx *c = *state;
	struct gen plain = {.proto = IPPROTO_UDP, .pay = 100};
	uint8_t b[256];
	unsigned k;

	build(c, 0, false, 1400, 5);
	build(c, 1, false, 1400, 6);
	cut(c, 0, 1420, 0, 1); /* the first alone */
	assert_untouched(c);
	cut(c, 0, 1420, 1, 2); /* the second before the first */
	cut(c, 0, 1420, 0, 1);
	assert_untouched(c);
	cut(c, 0, 1420, 0, 1); /* another datagram's second */
	cut(c, 1, 1420, 1, 2);
	assert_untouched(c);
	cut(c, 0, 1420, 0, 1); /* a packet between */
	add_bytes(c, b, gen_build(b, &plain));
	cut(c, 0, 1420, 1, 2);
	assert_untouched(c);
	/* One header field of the second differs (checksum kept right): ToS, src, dst, proto. */
	for (k = 0; k < 4; k++) {
		static const size_t off[] = {1, 15, 19, 9};

		cut(c, 0, 1420, 0, 99);
		set_byte(c, 1, off[k], (uint8_t)(c->pkts[1]->data[off[k]] ^ 0x04), true);
		assert_untouched(c);
	}
	/* An offset one unit short (overlap) or long (a gap). */
	for (k = 0; k < 2; k++) {
		cut(c, 0, 1420, 0, 99);
		set_byte(c, 1, 7, (uint8_t)(c->pkts[1]->data[7] + (k ? 1 : -1)), true);
		assert_untouched(c);
	}
	cut(c, 0, 1420, 0, 99); /* the last says more follow */
	set_byte(c, 1, 6, 0x20, true);
	assert_untouched(c);
	cut(c, 0, 1420, 0, 99); /* DF on both */
	set_byte(c, 0, 6, 0x60, true);
	set_byte(c, 1, 6, 0x40 | c->pkts[1]->data[6], true);
	assert_untouched(c);
	cut(c, 0, 1420, 0, 99); /* a bad header checksum */
	set_byte(c, 1, 10, (uint8_t)(c->pkts[1]->data[10] ^ 1), false);
	assert_untouched(c);
	cut(c, 0, 1420, 0, 99); /* a length field that says more than the packet holds */
	set_byte(c, 1, 3, (uint8_t)(c->pkts[1]->data[3] + 4), true);
	assert_untouched(c);
	/* Three fragments whose whole does not fit the first's buffer: the kernel's job. */
	build(c, 2, false, 3000, 7);
	assert_int_equal(cut(c, 2, 1420, 0, 99), 3);
	assert_untouched(c);
}

static void test_no_join6(void **state)
{
	struct ctx *c = *state;
	unsigned k;

	build(c, 0, true, 1400, 5);
	build(c, 1, true, 1400, 6);
	cut(c, 0, 1420, 0, 1);
	assert_untouched(c);
	cut(c, 0, 1420, 0, 1); /* another datagram's second (another id) */
	cut(c, 1, 1420, 1, 2);
	assert_untouched(c);
	/* The second's id, next header, source, offset, or its M flag still set. */
	for (k = 0; k < 5; k++) {
		static const size_t off[] = {47, 40, 23, 43, 43};
		static const uint8_t x[] = {0x01, 0x01, 0x01, 0x08, 0x01};

		cut(c, 0, 1420, 0, 99);
		set_byte(c, 1, off[k], (uint8_t)(c->pkts[1]->data[off[k]] ^ x[k]), false);
		assert_untouched(c);
	}
	/*
	 * A whole datagram with a hop-by-hop header whose padding, read as a fragment header,
	 * would say "first fragment, id 0x03000000", and a fragment that would continue it.
	 */
	{
		uint8_t d[2048];
		size_t len;

		len = 48 + 8 + 104;
		memset(d, 0, len);
		d[0] = 0x60;
		gen_be16(d + 4, (uint32_t)(len - 40));
		d[6] = IPPROTO_HOPOPTS;
		d[7] = 64;
		d[23] = 1, d[39] = 2;
		d[40] = IPPROTO_UDP;
		d[42] = 0;	      /* Pad1 */
		d[43] = 1, d[44] = 3; /* PadN over three bytes */
		add_bytes(c, d, len);
		memset(d + 40, 0, 8);
		d[6] = IPPROTO_FRAGMENT;
		d[40] = IPPROTO_UDP;
		gen_be16(d + 42, (uint32_t)(len - 48)); /* where the first would end, no more */
		d[44] = 3;
		len = 48 + 16;
		gen_be16(d + 4, (uint32_t)(len - 40));
		add_bytes(c, d, len);
		assert_untouched(c);
	}
	/* An atomic fragment (offset 0, no more): a whole datagram already. */
	build(c, 2, true, 100, 9);
	cut(c, 2, 1420, 0, 99);
	assert_untouched(c);
	/* Another extension header before the fragment header: not looked into. */
	cut(c, 0, 1420, 0, 99);
	for (k = 0; k < 2; k++) {
		uint8_t d[2048];
		size_t len = c->pkts[k]->len;

		memcpy(d, c->pkts[k]->data, 40);
		d[6] = IPPROTO_HOPOPTS;
		memset(d + 40, 0, 8);
		d[40] = IPPROTO_FRAGMENT;
		d[42] = 1, d[43] = 4; /* PadN */
		memcpy(d + 48, c->pkts[k]->data + 40, len - 40);
		gen_be16(d + 4, (uint32_t)(len + 8 - 40));
		memcpy(c->pkts[k]->data, d, len + 8);
		c->pkts[k]->len = (uint32_t)(len + 8);
		memcpy(c->orig[k], d, len + 8);
		c->orig_len[k] = (uint32_t)(len + 8);
	}
	assert_untouched(c);
}

/* IPv4: a whole above 65,535 bytes (the ping of death's shape) is left to the kernel. */
static void test_too_big(void **state)
{
	struct ctx *c = *state;
	static uint8_t f[34000];
	uint16_t offs[3] = {0, 4000, 8191}, pays[3] = {32000, 33528, 16};
	unsigned i;

	memset(f, 0x5a, sizeof(f));
	for (i = 0; i < 3; i++) {
		memset(f, 0, 20);
		f[0] = 0x45;
		gen_be16(f + 2, 20u + pays[i]);
		gen_be16(f + 4, 77);
		gen_be16(f + 6, offs[i] | (i < 2 ? 0x2000 : 0));
		f[8] = 64;
		f[9] = IPPROTO_UDP;
		f[12] = 198, f[13] = 18, f[15] = 1;
		f[16] = 198, f[17] = 18, f[19] = 2;
		gen_be16(f + 10, (uint16_t)~gen_csum(f, 20, 0));
		add_bytes(c, f, 20u + pays[i]);
	}
	assert_int_equal(offload_defrag(c->pkts, c->n), 3);
	reset(c);
}

/* Joined datagrams of one flow coalesce as one UDP group; cut again they are the datagrams. */
static void test_then_gro(void **state)
{
	struct ctx *c = *state;
	struct offload_gro_group groups[NPKT];
	struct offload_vnet_hdr h;
	struct offload_seg s;
	struct pkt *segs[4];
	static uint8_t flat[8192];
	unsigned i, m, ng;
	size_t len = 0;

	for (i = 0; i < 4; i++) {
		build(c, i, false, 1400, (uint16_t)(100 + i));
		/* The payload differs per datagram, as a flow's would. */
		c->whole[i][30] = (uint8_t)i;
		c->whole[i][26] = c->whole[i][27] = 0;
		gen_be16(c->whole[i] + 26,
			 (uint16_t)~gen_csum(c->whole[i] + 20, 1408,
					     gen_pseudo(c->whole[i], IPPROTO_UDP, 1408)));
		cut(c, i, 1420, 0, 99);
	}
	m = offload_defrag(c->pkts, c->n);
	assert_int_equal(m, 4);
	ng = offload_gro(c->pkts, m, OFFLOAD_GRO_UDP, groups);
	assert_int_equal(ng, 1);
	assert_int_equal(groups[0].n, 4);
	for (i = 0; i < 4; i++) {
		size_t skip = i ? groups[0].skip : 0;

		memcpy(flat + len, c->pkts[i]->data + skip, c->pkts[i]->len - skip);
		len += c->pkts[i]->len - skip;
	}
	assert_int_equal(offload_vnet_hdr_parse(groups[0].vnet, OFFLOAD_VNET_HDR_LEN, &h), 0);
	assert_int_equal(h.gso_size, 1400);
	assert_int_equal(offload_seg_start(&s, &h, flat, len), 0);
	assert_int_equal(pkt_pool_get(c->big, segs, 4), 4);
	assert_int_equal(offload_seg_next(&s, segs, 4), 4);
	assert_true(offload_seg_done(&s));
	for (i = 0; i < 4; i++) {
		assert_int_equal(segs[i]->len, c->whole_len[i]);
		assert_memory_equal(segs[i]->data, c->whole[i], c->whole_len[i]);
	}
	pkt_free(segs, 4);
	reset(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_join, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_join4, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_join6, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_then_gro, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
