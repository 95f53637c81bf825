/* SPDX-License-Identifier: MIT */
/*
 * The virtio-net header codec (round trip, what is refused) and the checksum pieces against
 * a plain 16-bit big-endian checksum on random data cut at random even offsets, and against
 * a word-at-a-time reference at every length to 2,000 bytes, from any address, with any
 * starting sum.
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

static void test_roundtrip(void **state)
{
	struct offload_vnet_hdr h = {.flags = OFFLOAD_VNET_F_NEEDS_CSUM,
				     .gso_type = OFFLOAD_GSO_TCPV6 | OFFLOAD_GSO_ECN,
				     .hdr_len = 72,
				     .gso_size = 1348,
				     .csum_start = 40,
				     .csum_offset = 16},
				got;
	uint8_t buf[OFFLOAD_VNET_HDR_LEN];
	uint16_t v;

	(void)state;
	offload_vnet_hdr_write(&h, buf);
	/* The legacy layout: host order, fields at fixed offsets. */
	assert_int_equal(buf[0], 1);
	assert_int_equal(buf[1], 0x84);
	memcpy(&v, buf + 4, 2);
	assert_int_equal(v, 1348);
	assert_int_equal(offload_vnet_hdr_parse(buf, sizeof(buf), &got), 0);
	assert_memory_equal(&got, &h, sizeof(h));
	assert_int_equal(offload_vnet_hdr_parse(buf, sizeof(buf) - 1, &got), -EINVAL);
}

static void test_refused(void **state)
{
	uint8_t buf[OFFLOAD_VNET_HDR_LEN];
	struct offload_vnet_hdr h, got;
	unsigned t;

	(void)state;
	/* Every GSO type byte: what we cut passes, UFO is unsupported, the rest are wrong. */
	for (t = 0; t < 256; t++) {
		uint8_t base = (uint8_t)(t & 0x7f);
		int want;

		h = (struct offload_vnet_hdr){.gso_type = (uint8_t)t, .gso_size = 1000};
		offload_vnet_hdr_write(&h, buf);
		if (base == OFFLOAD_GSO_UDP)
			want = -EPROTONOSUPPORT;
		else if (base == OFFLOAD_GSO_TCPV4 || base == OFFLOAD_GSO_TCPV6 ||
			 base == OFFLOAD_GSO_UDP_L4 || t == OFFLOAD_GSO_NONE)
			want = 0;
		else
			want = -EINVAL;
		assert_int_equal(offload_vnet_hdr_parse(buf, sizeof(buf), &got), want);
	}
	/* GSO without a segment size. */
	h = (struct offload_vnet_hdr){.gso_type = OFFLOAD_GSO_TCPV4};
	offload_vnet_hdr_write(&h, buf);
	assert_int_equal(offload_vnet_hdr_parse(buf, sizeof(buf), &got), -EINVAL);
	/* Unknown flags (RSC_INFO and above). */
	h = (struct offload_vnet_hdr){.flags = 4};
	offload_vnet_hdr_write(&h, buf);
	assert_int_equal(offload_vnet_hdr_parse(buf, sizeof(buf), &got), -EINVAL);
	h.flags = OFFLOAD_VNET_F_DATA_VALID;
	offload_vnet_hdr_write(&h, buf);
	assert_int_equal(offload_vnet_hdr_parse(buf, sizeof(buf), &got), 0);
}

static void test_csum(void **state)
{
	uint8_t data[3001];
	unsigned round, i;

	(void)state;
	srand(7);
	for (round = 0; round < 2000; round++) {
		size_t len = (size_t)rand() % sizeof(data),
		       cut = ((size_t)rand() % (len + 1)) & ~1u;
		uint64_t sum;
		uint16_t c;
		uint8_t b[2];

		for (i = 0; i < len; i++)
			data[i] = (uint8_t)rand();
		if (round % 7 == 0)
			memset(data, 0xff, len);
		sum = offload_csum_add(offload_csum_add(0, data, cut), data + cut, len - cut);
		c = offload_csum_fold(sum);
		/* Stored in host order, the sum reads as the plain big-endian one. */
		memcpy(b, &c, 2);
		assert_int_equal(gen_get16(b), gen_csum(data, len, 0));
	}
}

/*
 * RFC 1071 the plain way: the starting sum folded, then host-order 16-bit words one at a time
 * (an odd last byte padded with a zero after it), the carry brought round after each. Zero
 * only for nothing but zeros, as offload_csum_fold gives it.
 */
static uint16_t ref_csum(uint64_t sum, const uint8_t *p, size_t len)
{
	uint64_t s = sum;
	size_t i;

	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	for (i = 0; i < len; i += 2) {
		uint8_t b[2] = {p[i], i + 1 < len ? p[i + 1] : 0};
		uint16_t w;

		memcpy(&w, b, 2);
		s += w;
		if (s > 0xffff)
			s -= 0xffff;
	}
	return (uint16_t)s;
}

static uint64_t rand64(void)
{
	return (uint64_t)rand() << 42 ^ (uint64_t)rand() << 21 ^ (uint64_t)rand();
}

/* Starting sums: the edges (a carry out of bit 63 at once) and random ones of any size. */
static uint64_t some_sum(unsigned k)
{
	static const uint64_t edge[] = {0, 1, 0xffff, 0x10000, 0xffffffff, UINT64_MAX,
					UINT64_MAX - 1, UINT64_MAX - 0xffff};

	if (k < sizeof(edge) / sizeof(edge[0]))
		return edge[k];
	return rand64() >> (rand() % 64);
}

#define REF_MAX 2000

static void fill(uint8_t *p, size_t len, unsigned kind)
{
	size_t i;

	/* All ones makes every add carry; zeros test the 0 / 0xffff distinction. */
	if (kind % 8 == 0)
		memset(p, 0xff, len);
	else if (kind % 8 == 1)
		memset(p, 0, len);
	else
		for (i = 0; i < len; i++)
			p[i] = (uint8_t)rand();
}

static void test_csum_reference(void **state)
{
	static uint8_t buf[REF_MAX + 64];
	size_t len;
	unsigned k;

	(void)state;
	srand(1071);
	for (len = 0; len <= REF_MAX; len++) {
		for (k = 0; k < 12; k++) {
			uint8_t *p = buf + rand() % 64;
			uint64_t sum = some_sum((unsigned)(len + k) % 16);

			fill(p, len, (unsigned)rand());
			if (offload_csum_fold(offload_csum_add(sum, p, len)) !=
			    ref_csum(sum, p, len))
				fail_msg("len %zu, offset %td, sum %#llx", len, p - buf,
					 (unsigned long long)sum);
			/* What callers add to a result must not carry out of it. */
			assert_true(offload_csum_add(sum, p, len) < (1ull << 34));
		}
	}
}

static void test_pseudo(void **state)
{
	uint8_t pkt[200];
	struct gen g4 = {.pay = 100}, g6 = {.v6 = true, .proto = IPPROTO_UDP, .pay = 33};
	uint16_t c;
	uint8_t b[2];

	(void)state;
	gen_build(pkt, &g4);
	c = offload_csum_fold(offload_csum_pseudo(pkt, IPPROTO_TCP, 120));
	memcpy(b, &c, 2);
	assert_int_equal(gen_get16(b), gen_csum(NULL, 0, gen_pseudo(pkt, IPPROTO_TCP, 120)));
	gen_build(pkt, &g6);
	c = offload_csum_fold(offload_csum_pseudo(pkt, IPPROTO_UDP, 70000));
	memcpy(b, &c, 2);
	assert_int_equal(gen_get16(b), gen_csum(NULL, 0, gen_pseudo(pkt, IPPROTO_UDP, 70000)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_csum),
	    cmocka_unit_test(test_csum_reference),
	    cmocka_unit_test(test_pseudo),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
