/* SPDX-License-Identifier: MIT */
/*
 * Replies to refused packets (filter.h, filter_reject_build): a TCP reset for a segment, an
 * ICMP or ICMPv6 "administratively prohibited" for anything else, so that the peer's
 * application hears "refused" at once instead of retrying into silence.
 *
 * The reply never answers what must not be answered: an ICMP error (RFC 1122 3.2.2,
 * RFC 4443 2.4 e), a RST (RFC 9293 3.10.7.1), a fragment, a packet to or from a multicast,
 * broadcast or unspecified address. Its size is bounded by the request's quote: at most
 * 576 bytes for IPv4 (RFC 1812 4.3.2.3) and 1280 for IPv6 (RFC 4443 2.4 c).
 */
#include <string.h>
#include <sys/socket.h>

#include "filter/filter.h"
#include "filter/internal.h"

#define ICMP4_QUOTE_TOTAL 576
#define ICMP6_QUOTE_TOTAL 1280
#define HOP_LIMIT 64

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void wr32(uint8_t *p, uint32_t v)
{
	wr16(p, (uint16_t)(v >> 16));
	wr16(p + 2, (uint16_t)v);
}

/* RFC 1071: the one's complement sum, 16 bits at a time, an odd last byte padded. */
static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t len)
{
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += rd16(p + i);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	return sum;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

/* The transport checksum's pseudo-header (RFC 9293 3.1, RFC 8200 8.1). */
static uint32_t pseudo_sum(const struct flow *in, uint8_t proto, size_t l4_len)
{
	size_t n = in->family == AF_INET ? 4 : 16;
	uint32_t sum = 0;

	/* The reply goes the other way, but the sum of the two addresses is the same. */
	sum = csum_add(sum, in->src, n);
	sum = csum_add(sum, in->dst, n);
	return sum + proto + (uint32_t)(l4_len >> 16) + (uint32_t)(l4_len & 0xffff);
}

/* Unicast, specified: an address a reply may go to or come from. */
static bool unicast(int family, const uint8_t *a)
{
	static const uint8_t zero[16];

	if (family == AF_INET)
		return a[0] != 0 && a[0] < 224 && rd32(a) != 0xffffffffu;
	return a[0] != 0xff && memcmp(a, zero, 16);
}

/* The reply's IP header (hl bytes) with the addresses swapped; returns hl. */
static size_t ip_header(uint8_t *out, const struct flow *in, uint8_t proto, size_t total)
{
	if (in->family == AF_INET) {
		memset(out, 0, 20);
		out[0] = 0x45;
		wr16(out + 2, (uint16_t)total);
		out[6] = 0x40; /* DF */
		out[8] = HOP_LIMIT;
		out[9] = proto;
		memcpy(out + 12, in->dst, 4);
		memcpy(out + 16, in->src, 4);
		wr16(out + 10, csum_fold(csum_add(0, out, 20)));
		return 20;
	}
	memset(out, 0, 40);
	out[0] = 0x60;
	wr16(out + 4, (uint16_t)(total - 40));
	out[6] = proto;
	out[7] = HOP_LIMIT;
	memcpy(out + 8, in->dst, 16);
	memcpy(out + 24, in->src, 16);
	return 40;
}

/* RFC 9293 3.10.7.1: a reset that the sender of seg accepts. */
static size_t tcp_reset(const struct flow *in, uint8_t *out, size_t cap)
{
	const uint8_t *seg = in->l4;
	size_t hl = in->family == AF_INET ? 20 : 40, doff = (size_t)(seg[12] >> 4) * 4;
	uint8_t *t = out + hl;
	uint32_t seq = 0, ack = 0;
	uint8_t flags;

	if (doff < 20 || doff > in->l4_len || cap < hl + 20)
		return 0;
	if (in->tcp_flags & TCP_ACK) {
		seq = rd32(seg + 8);
		flags = TCP_RST;
	} else {
		ack = rd32(seg + 4) + (uint32_t)(in->l4_len - doff) + !!(in->tcp_flags & TCP_SYN) +
		      !!(in->tcp_flags & TCP_FIN);
		flags = TCP_RST | TCP_ACK;
	}
	ip_header(out, in, 6, hl + 20);
	memset(t, 0, 20);
	wr16(t, in->dport);
	wr16(t + 2, in->sport);
	wr32(t + 4, seq);
	wr32(t + 8, ack);
	t[12] = 5 << 4;
	t[13] = flags;
	wr16(t + 16, csum_fold(csum_add(pseudo_sum(in, 6, 20), t, 20)));
	return hl + 20;
}

/* Destination unreachable, administratively prohibited, quoting what fits. */
static size_t unreachable(const struct flow *in, const uint8_t *pkt, size_t pkt_len, uint8_t *out,
			  size_t cap)
{
	bool v4 = in->family == AF_INET;
	size_t hl = v4 ? 20 : 40, total = v4 ? ICMP4_QUOTE_TOTAL : ICMP6_QUOTE_TOTAL, quote;
	uint8_t *m = out + hl;
	uint32_t sum;

	if (cap < total)
		total = cap;
	if (total < hl + 8 + (v4 ? 28 : 48)) /* the quoted IP header and 8 bytes of its data */
		return 0;
	quote = pkt_len < total - hl - 8 ? pkt_len : total - hl - 8;
	ip_header(out, in, v4 ? 1 : 58, hl + 8 + quote);
	memset(m, 0, 8);
	m[0] = v4 ? 3 : 1;  /* destination unreachable */
	m[1] = v4 ? 13 : 1; /* communication administratively prohibited (RFC 1812, RFC 4443) */
	memcpy(m + 8, pkt, quote);
	sum = csum_add(v4 ? 0 : pseudo_sum(in, 58, 8 + quote), m, 8 + quote);
	wr16(m + 2, csum_fold(sum));
	return hl + 8 + quote;
}

size_t filter_reject_build(const uint8_t *pkt, size_t len, uint8_t *out, size_t cap)
{
	struct flow in;
	size_t tot;

	if (filter_ip_parse(&in, pkt, len, false) || in.nonfirst || in.fragment ||
	    in.kind == K_ICMP_ERROR)
		return 0;
	if (!unicast(in.family, in.src) || !unicast(in.family, in.dst))
		return 0;
	if (in.proto == 6) {
		if (in.tcp_flags & TCP_RST)
			return 0;
		return tcp_reset(&in, out, cap);
	}
	/* The quote is the packet as sent: its own length, not the buffer's. */
	tot = in.family == AF_INET ? rd16(pkt + 2) : (size_t)rd16(pkt + 4) + 40;
	return unreachable(&in, pkt, tot < len ? tot : len, out, cap);
}
