/* SPDX-License-Identifier: MIT */
/*
 * The virtio-net header codec (round trip, what is refused) and the checksum pieces against
 * a plain 16-bit big-endian checksum on random data cut at random even offsets.
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
	    cmocka_unit_test(test_pseudo),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
