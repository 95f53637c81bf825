/* SPDX-License-Identifier: MIT */
/*
 * Replies to refused packets, byte by byte: a RST for TCP (the RFC 9293 sequence numbers
 * for a SYN, a SYN with data and FIN, and an ACK), ICMP and ICMPv6 "administratively
 * prohibited" quoting the packet within 576 and 1280 bytes, every checksum verified by a
 * separate sum over the reply, IPv4 and IPv6; no reply to a RST, an ICMP error, a fragment,
 * a multicast or unspecified address, or a malformed packet; the rate limit per second; no
 * allocation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "../alloc_count.h"
#include "filter/filter.h"

static const uint8_t A4[4] = {100, 64, 0, 1}, B4[4] = {100, 64, 0, 7};
static uint8_t A6[16], B6[16];

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)rd16(p) << 16 | rd16(p + 2);
}

/* The one's complement sum of the words, folded: 0xffff when a checksum inside is right. */
static uint16_t sum16(uint32_t acc, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		acc += i & 1 ? p[i] : (uint32_t)p[i] << 8;
	while (acc >> 16)
		acc = (acc & 0xffff) + (acc >> 16);
	return (uint16_t)acc;
}

/* The pseudo-header's share (RFC 9293 3.1, RFC 8200 8.1) of a reply r of family v4/v6. */
static uint32_t pseudo(const uint8_t *r, bool v4, uint8_t proto, size_t l4_len)
{
	uint32_t acc = proto + (uint32_t)l4_len;

	if (v4)
		return sum16(acc, r + 12, 8);
	return sum16(acc, r + 8, 32);
}

static size_t ip4(uint8_t *p, uint8_t proto, size_t l4_len)
{
	memset(p, 0, 20);
	p[0] = 0x45;
	p[2] = (uint8_t)((20 + l4_len) >> 8), p[3] = (uint8_t)(20 + l4_len);
	p[8] = 64, p[9] = proto;
	memcpy(p + 12, A4, 4);
	memcpy(p + 16, B4, 4);
	return 20;
}

static size_t ip6(uint8_t *p, uint8_t proto, size_t l4_len)
{
	memset(p, 0, 40);
	p[0] = 0x60;
	p[4] = (uint8_t)(l4_len >> 8), p[5] = (uint8_t)l4_len;
	p[6] = proto, p[7] = 64;
	memcpy(p + 8, A6, 16);
	memcpy(p + 24, B6, 16);
	return 40;
}

/* A TCP segment from A:40000 to B:80 with these flags, seq, ack and payload bytes. */
static size_t tcp(uint8_t *p, bool v4, uint8_t flags, uint32_t seq, uint32_t ack, size_t data)
{
	size_t hl = v4 ? ip4(p, 6, 20 + data) : ip6(p, 6, 20 + data);
	uint8_t *t = p + hl;

	memset(t, 0, 20 + data);
	t[0] = 0x9c, t[1] = 0x40, t[2] = 0, t[3] = 80;
	t[4] = (uint8_t)(seq >> 24), t[5] = (uint8_t)(seq >> 16), t[6] = (uint8_t)(seq >> 8);
	t[7] = (uint8_t)seq;
	t[8] = (uint8_t)(ack >> 24), t[9] = (uint8_t)(ack >> 16), t[10] = (uint8_t)(ack >> 8);
	t[11] = (uint8_t)ack;
	t[12] = 0x50, t[13] = flags;
	return hl + 20 + data;
}

static size_t udp(uint8_t *p, bool v4, size_t data)
{
	size_t hl = v4 ? ip4(p, 17, 8 + data) : ip6(p, 17, 8 + data);

	memset(p + hl, 0xab, 8 + data);
	p[hl] = 0x9c, p[hl + 1] = 0x40, p[hl + 2] = 0, p[hl + 3] = 53;
	p[hl + 4] = (uint8_t)((8 + data) >> 8), p[hl + 5] = (uint8_t)(8 + data);
	return hl + 8 + data;
}

/* The reply's IP header: from B back to A, hop limit 64, the right length and checksum. */
static size_t check_ip(const uint8_t *r, size_t n, bool v4, uint8_t proto)
{
	if (v4) {
		assert_int_equal(r[0], 0x45);
		assert_int_equal(rd16(r + 2), n);
		assert_int_equal(r[6] & 0x40, 0x40); /* DF */
		assert_int_equal(r[8], 64);
		assert_int_equal(r[9], proto);
		assert_memory_equal(r + 12, B4, 4);
		assert_memory_equal(r + 16, A4, 4);
		assert_int_equal(sum16(0, r, 20), 0xffff);
		return 20;
	}
	assert_int_equal(r[0], 0x60);
	assert_int_equal(rd16(r + 4) + 40, n);
	assert_int_equal(r[6], proto);
	assert_int_equal(r[7], 64);
	assert_memory_equal(r + 8, B6, 16);
	assert_memory_equal(r + 24, A6, 16);
	return 40;
}

/* A RST from B:80 to A:40000 with seq, ack and flags, its checksum right. */
static void check_rst(const uint8_t *r, size_t n, bool v4, uint32_t seq, uint32_t ack,
		      uint8_t flags)
{
	size_t hl = check_ip(r, n, v4, 6);
	const uint8_t *t = r + hl;

	assert_int_equal(n, hl + 20);
	assert_int_equal(rd16(t), 80);
	assert_int_equal(rd16(t + 2), 40000);
	assert_int_equal(rd32(t + 4), seq);
	assert_int_equal(rd32(t + 8), ack);
	assert_int_equal(t[12], 0x50);
	assert_int_equal(t[13], flags);
	assert_int_equal(rd16(t + 14), 0); /* window */
	assert_int_equal(sum16(pseudo(r, v4, 6, 20), t, 20), 0xffff);
}

static void test_tcp_reset(void **state)
{
	uint8_t p[1600], r[FILTER_REJECT_MAX];
	size_t n;

	(void)state;
	for (int v = 0; v < 2; v++) {
		bool v4 = v == 0;

		/* A SYN: RST|ACK acknowledging the SYN (RFC 9293 3.10.7.1, no ACK bit). */
		n = filter_reject_build(p, tcp(p, v4, 0x02, 1000, 0, 0), r, sizeof(r));
		check_rst(r, n, v4, 0, 1001, 0x14);
		/* SYN and FIN with 10 bytes: each counts. */
		n = filter_reject_build(p, tcp(p, v4, 0x03, 0xfffffffe, 0, 10), r, sizeof(r));
		check_rst(r, n, v4, 0, 0xfffffffeu + 12, 0x14);
		/* A segment with ACK (a revoked flow): RST with seq = its ack. */
		n = filter_reject_build(p, tcp(p, v4, 0x18, 5, 0xdeadbeef, 100), r, sizeof(r));
		check_rst(r, n, v4, 0xdeadbeef, 0, 0x04);
		/* Never a reply to a RST. */
		assert_int_equal(filter_reject_build(p, tcp(p, v4, 0x04, 1, 0, 0), r, sizeof(r)),
				 0);
		assert_int_equal(filter_reject_build(p, tcp(p, v4, 0x14, 1, 2, 0), r, sizeof(r)),
				 0);
		/* A data offset past the segment: malformed, no reply. */
		n = tcp(p, v4, 0x02, 1, 0, 0);
		p[n - 20 + 12] = 0xf0;
		assert_int_equal(filter_reject_build(p, n, r, sizeof(r)), 0);
	}
}

/* ICMP(v6) destination unreachable, administratively prohibited, quoting q of len ql. */
static void check_unreach(const uint8_t *r, size_t n, bool v4, const uint8_t *q, size_t ql)
{
	size_t hl = check_ip(r, n, v4, v4 ? 1 : 58);
	const uint8_t *m = r + hl;

	assert_int_equal(n, hl + 8 + ql);
	assert_int_equal(m[0], v4 ? 3 : 1);
	assert_int_equal(m[1], v4 ? 13 : 1);
	assert_int_equal(rd32(m + 4), 0);
	assert_memory_equal(m + 8, q, ql);
	assert_int_equal(sum16(v4 ? 0 : pseudo(r, false, 58, 8 + ql), m, 8 + ql), 0xffff);
}

static void test_unreachable(void **state)
{
	uint8_t p[1600], r[FILTER_REJECT_MAX];
	size_t n, len;

	(void)state;
	for (int v = 0; v < 2; v++) {
		bool v4 = v == 0;

		/* A small datagram is quoted whole; an odd length checks the checksum's pad. */
		len = udp(p, v4, 33);
		n = filter_reject_build(p, len, r, sizeof(r));
		check_unreach(r, n, v4, p, len);
		/* Bytes past the IP length (a buffer's slack) are not quoted. */
		n = filter_reject_build(p, len + 7, r, sizeof(r));
		check_unreach(r, n, v4, p, len);
		/* A large one: the reply stops at 576 (IPv4) or 1280 (IPv6) bytes. */
		len = udp(p, v4, 1400);
		n = filter_reject_build(p, len, r, sizeof(r));
		assert_int_equal(n, v4 ? 576 : 1280);
		check_unreach(r, n, v4, p, n - (v4 ? 28 : 48));
		/* ... or at the room given, but not below the quoted header and 8 bytes. */
		n = filter_reject_build(p, len, r, 200);
		assert_int_equal(n, 200);
		check_unreach(r, n, v4, p, n - (v4 ? 28 : 48));
		assert_int_equal(filter_reject_build(p, len, r, v4 ? 55 : 95), 0);
		/* An echo request is refused with it too. */
		len = (v4 ? ip4(p, 1, 16) : ip6(p, 58, 16));
		memset(p + len, 0, 16);
		p[len] = v4 ? 8 : 128;
		n = filter_reject_build(p, len + 16, r, sizeof(r));
		check_unreach(r, n, v4, p, len + 16);
		/* An ICMP error never gets one. */
		p[len] = v4 ? 3 : 1;
		assert_int_equal(filter_reject_build(p, len + 16, r, sizeof(r)), 0);
		/* Nor another protocol's malformed packet: a length past the buffer. */
		len = udp(p, v4, 10);
		assert_int_equal(filter_reject_build(p, len - 1, r, sizeof(r)), 0);
	}
	/* GRE (no ports, no transport parse) is answered too. */
	len = ip4(p, 47, 12);
	memset(p + len, 0, 12);
	n = filter_reject_build(p, len + 12, r, sizeof(r));
	check_unreach(r, n, true, p, len + 12);
}

static void test_never(void **state)
{
	uint8_t p[1600], r[FILTER_REJECT_MAX];
	size_t len;

	(void)state;
	/* IPv4 fragments: the first (MF) and a later one. */
	len = udp(p, true, 100);
	p[6] = 0x20;
	assert_int_equal(filter_reject_build(p, len, r, sizeof(r)), 0);
	p[6] = 0x00, p[7] = 0x10;
	assert_int_equal(filter_reject_build(p, len, r, sizeof(r)), 0);
	/* An IPv6 first fragment (fragment header, offset 0, M set). */
	memset(p, 0, sizeof(p));
	ip6(p, 44, 8 + 8 + 10);
	p[40] = 17, p[43] = 1;
	p[48 + 5] = 18;
	assert_int_equal(filter_reject_build(p, 40 + 8 + 18, r, sizeof(r)), 0);
	/* Multicast, broadcast and unspecified addresses, either end. */
	len = udp(p, true, 10);
	p[16] = 224;
	assert_int_equal(filter_reject_build(p, len, r, sizeof(r)), 0);
	memset(p + 16, 255, 4);
	assert_int_equal(filter_reject_build(p, len, r, sizeof(r)), 0);
	len = udp(p, true, 10);
	memset(p + 12, 0, 4);
	assert_int_equal(filter_reject_build(p, len, r, sizeof(r)), 0);
	len = udp(p, false, 10);
	p[24] = 0xff;
	assert_int_equal(filter_reject_build(p, len, r, sizeof(r)), 0);
	len = tcp(p, false, 0x02, 1, 0, 0);
	memset(p + 8, 0, 16);
	assert_int_equal(filter_reject_build(p, len, r, sizeof(r)), 0);
	/* Not IP at all. */
	memset(p, 0, 64);
	assert_int_equal(filter_reject_build(p, 64, r, sizeof(r)), 0);
	assert_int_equal(filter_reject_build(p, 0, r, sizeof(r)), 0);
}

static void test_rate(void **state)
{
	const uint64_t s = 1000000000ULL;
	uint8_t p[128], r[FILTER_REJECT_MAX];
	struct filter_stats st;
	struct filter *f = NULL;
	size_t len = tcp(p, true, 0x02, 7, 0, 0);

	(void)state;
	assert_int_equal(filter_new(64, 1, &f), 0);
	/* Off by default. */
	assert_false(filter_reject_on(f));
	assert_int_equal(filter_reject(f, p, len, r, sizeof(r), 10 * s), 0);
	filter_reject_set(f, 3);
	assert_true(filter_reject_on(f));
	for (int i = 0; i < 3; i++)
		assert_int_equal(filter_reject(f, p, len, r, sizeof(r), 10 * s + (uint64_t)i), 40);
	assert_int_equal(filter_reject(f, p, len, r, sizeof(r), 10 * s + s - 1), 0);
	/* What needs no reply spends no token. */
	p[33] = 0x04;
	assert_int_equal(filter_reject(f, p, len, r, sizeof(r), 11 * s), 0);
	p[33] = 0x02;
	for (int i = 0; i < 3; i++)
		assert_int_equal(filter_reject(f, p, len, r, sizeof(r), 11 * s + 5), 40);
	assert_int_equal(filter_reject(f, p, len, r, sizeof(r), 11 * s + 6), 0);
	filter_stats_get(f, &st);
	assert_int_equal(st.reject_rate, 3);
	assert_int_equal(st.rejects_sent, 6);
	assert_int_equal(st.rejects_limited, 2);
	filter_reject_set(f, 0);
	assert_int_equal(filter_reject(f, p, len, r, sizeof(r), 20 * s), 0);
	filter_free(f);
}

static void test_no_alloc(void **state)
{
#ifdef HAVE_ASAN
	uint8_t p[1600], r[FILTER_REJECT_MAX];
	struct filter *f = NULL;
	size_t a, b;

	(void)state;
	assert_int_equal(filter_new(64, 1, &f), 0);
	filter_reject_set(f, 1000);
	a = tcp(p, false, 0x02, 1, 0, 0);
	alloc_count_install();
	counting = 1;
	for (int i = 0; i < 100; i++) {
		b = filter_reject(f, p, a, r, sizeof(r), (uint64_t)i);
		assert_int_equal(b, 60);
	}
	b = filter_reject_build(p, udp(p, true, 1000), r, sizeof(r));
	counting = 0;
	assert_int_equal(b, 576);
	assert_int_equal(allocations, 0);
	filter_free(f);
#else
	(void)state;
	skip();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tcp_reset), cmocka_unit_test(test_unreachable),
	    cmocka_unit_test(test_never),     cmocka_unit_test(test_rate),
	    cmocka_unit_test(test_no_alloc),
	};

	inet_pton(AF_INET6, "fd7e:11e5:7a11::6440:1", A6);
	inet_pton(AF_INET6, "fd7e:11e5:7a11::6440:7", B6);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
