/* SPDX-License-Identifier: MIT */
/*
 * Hand-built TCP and UDP packets for the offload tests, and a checksum written the plain way
 * (16-bit big-endian words, RFC 1071's first example), independent of offload_csum_*.
 */
#ifndef TRELLIS_TESTS_OFFLOAD_PKTGEN_H
#define TRELLIS_TESTS_OFFLOAD_PKTGEN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define GEN_FIN 0x01
#define GEN_SYN 0x02
#define GEN_RST 0x04
#define GEN_PSH 0x08
#define GEN_ACK 0x10
#define GEN_URG 0x20
#define GEN_ECE 0x40
#define GEN_CWR 0x80

struct gen {
	bool v6;
	uint8_t proto;	  /* IPPROTO_TCP (default) or IPPROTO_UDP */
	uint8_t ip_opts;  /* IPv4 option bytes (multiple of 4, NOPs) */
	uint8_t hbh;	  /* IPv6: a hop-by-hop header of this many bytes (multiple of 8) */
	uint8_t tcp_opts; /* TCP option bytes (multiple of 4) */
	uint8_t opt_byte; /* the TCP option bytes' content (varied to make them differ) */
	uint8_t tos, ttl; /* ttl 0: 64 */
	uint16_t id;
	bool no_df;
	uint16_t sport, dport; /* 0: 40000, 5201 */
	uint32_t seq, ack;
	uint16_t win; /* 0: 512 */
	uint8_t flags;
	uint32_t pay;
	uint32_t pay_off; /* payload byte i is (pay_off + i) * 7 + 3: contiguous streams agree */
	uint8_t src_last; /* the source address's last byte (0: 1) */
	uint8_t dst_last; /* the destination address's last byte (0: 2) */
	uint16_t mss_opt; /* with tcp_opts 4: an MSS option instead of filler bytes */
};

static inline uint16_t gen_csum(const uint8_t *p, size_t len, uint32_t sum)
{
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)p[len - 1] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

static inline uint32_t gen_pseudo(const uint8_t *ip, uint8_t proto, uint32_t l4_len)
{
	bool v6 = (ip[0] >> 4) == 6;
	uint32_t sum = gen_csum(v6 ? ip + 8 : ip + 12, v6 ? 32 : 8, 0);

	return sum + proto + (l4_len >> 16) + (l4_len & 0xffff);
}

static inline void gen_be16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline uint16_t gen_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t gen_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint8_t gen_pay_byte(uint32_t i)
{
	return (uint8_t)(i * 7 + 3);
}

/* The L4 header's offset of a packet gen_build made. */
static inline size_t gen_l4(const struct gen *g)
{
	return g->v6 ? 40u + g->hbh : 20u + g->ip_opts;
}

/* Writes the packet into buf with valid checksums; returns its length. */
static inline size_t gen_build(uint8_t *buf, const struct gen *g)
{
	uint8_t proto = g->proto ? g->proto : IPPROTO_TCP;
	size_t l4 = gen_l4(g), l4h = proto == IPPROTO_TCP ? 20u + g->tcp_opts : 8u;
	size_t len = l4 + l4h + g->pay, i;
	uint8_t *t = buf + l4;
	uint16_t c;

	memset(buf, 0, l4 + l4h);
	if (g->v6) {
		buf[0] = 0x60 | (g->tos >> 4);
		buf[1] = (uint8_t)(g->tos << 4) | 0x01; /* flow label 0x1abcd */
		buf[2] = 0xab;
		buf[3] = 0xcd;
		gen_be16(buf + 4, (uint32_t)(len - 40));
		buf[6] = g->hbh ? 0 : proto;
		buf[7] = g->ttl ? g->ttl : 64;
		buf[8] = 0x20, buf[9] = 0x01, buf[10] = 0x0d, buf[11] = 0xb8;
		buf[23] = g->src_last ? g->src_last : 1;
		buf[24] = 0x20, buf[25] = 0x01, buf[26] = 0x0d, buf[27] = 0xb8;
		buf[39] = g->dst_last ? g->dst_last : 2;
		if (g->hbh) {
			buf[40] = proto;
			buf[41] = (uint8_t)(g->hbh / 8 - 1);
			buf[42] = 1; /* PadN over the rest */
			buf[43] = (uint8_t)(g->hbh - 4);
		}
	} else {
		buf[0] = (uint8_t)(0x40 | (l4 / 4));
		buf[1] = g->tos;
		gen_be16(buf + 2, (uint32_t)len);
		gen_be16(buf + 4, g->id);
		gen_be16(buf + 6, g->no_df ? 0 : 0x4000);
		buf[8] = g->ttl ? g->ttl : 64;
		buf[9] = proto;
		buf[12] = 198, buf[13] = 18, buf[14] = 0, buf[15] = g->src_last ? g->src_last : 1;
		buf[16] = 198, buf[17] = 18, buf[18] = 0, buf[19] = g->dst_last ? g->dst_last : 2;
		for (i = 20; i < l4; i++)
			buf[i] = 1; /* NOP */
		c = (uint16_t)~gen_csum(buf, l4, 0);
		gen_be16(buf + 10, c);
	}
	gen_be16(t, g->sport ? g->sport : 40000);
	gen_be16(t + 2, g->dport ? g->dport : 5201);
	for (i = 0; i < g->pay; i++)
		t[l4h + i] = gen_pay_byte(g->pay_off + (uint32_t)i);
	if (proto == IPPROTO_TCP) {
		t[4] = (uint8_t)(g->seq >> 24), t[5] = (uint8_t)(g->seq >> 16);
		t[6] = (uint8_t)(g->seq >> 8), t[7] = (uint8_t)g->seq;
		t[8] = (uint8_t)(g->ack >> 24), t[9] = (uint8_t)(g->ack >> 16);
		t[10] = (uint8_t)(g->ack >> 8), t[11] = (uint8_t)g->ack;
		t[12] = (uint8_t)((l4h / 4) << 4);
		t[13] = g->flags;
		gen_be16(t + 14, g->win ? g->win : 512);
		for (i = 20; i < l4h; i++)
			t[i] = (uint8_t)(g->opt_byte + i);
		if (g->mss_opt && l4h == 24) {
			t[20] = 2;
			t[21] = 4;
			gen_be16(t + 22, g->mss_opt);
		}
		c = (uint16_t)~gen_csum(t, l4h + g->pay,
					gen_pseudo(buf, proto, (uint32_t)(l4h + g->pay)));
		gen_be16(t + 16, c);
	} else {
		gen_be16(t + 4, (uint32_t)(l4h + g->pay));
		c = (uint16_t)~gen_csum(t, l4h + g->pay,
					gen_pseudo(buf, proto, (uint32_t)(l4h + g->pay)));
		gen_be16(t + 6, c ? c : 0xffff);
	}
	return len;
}

/* Are the IPv4 header checksum (if any) and the L4 checksum of a packet right? */
static inline bool gen_csum_ok(const uint8_t *buf, size_t len, size_t l4, uint8_t proto)
{
	if ((buf[0] >> 4) == 4 && gen_csum(buf, l4, 0) != 0xffff)
		return false;
	return gen_csum(buf + l4, len - l4, gen_pseudo(buf, proto, (uint32_t)(len - l4))) == 0xffff;
}

/*
 * Fragment k of the datagram d (len bytes, built by gen_build, IPv4 without options) cut for
 * `mtu` as RFC 791 and RFC 8200 say: into out, its length into *out_len. IPv6 fragments
 * carry id6. Returns how many fragments the datagram makes (k beyond: nothing written).
 */
static inline unsigned gen_frag(const uint8_t *d, size_t len, uint32_t mtu, uint32_t id6,
				unsigned k, uint8_t *out, size_t *out_len)
{
	bool v6 = (d[0] >> 4) == 6;
	size_t hl = v6 ? 40 : 20, fh = v6 ? 48 : 20, pay = len - hl;
	size_t chunk = (mtu - fh) & ~(size_t)7, off = (size_t)k * chunk, n;
	unsigned count = (unsigned)((pay + chunk - 1) / chunk);

	if (k >= count)
		return count;
	n = pay - off < chunk ? pay - off : chunk;
	memcpy(out, d, hl);
	memcpy(out + fh, d + hl + off, n);
	if (v6) {
		out[6] = IPPROTO_FRAGMENT;
		gen_be16(out + 4, (uint32_t)(8 + n));
		out[40] = d[6];
		out[41] = 0;
		gen_be16(out + 42, (uint32_t)off | (k + 1 < count));
		out[44] = (uint8_t)(id6 >> 24), out[45] = (uint8_t)(id6 >> 16);
		out[46] = (uint8_t)(id6 >> 8), out[47] = (uint8_t)id6;
	} else {
		gen_be16(out + 2, (uint32_t)(20 + n));
		gen_be16(out + 6, (uint32_t)(off / 8) | (k + 1 < count ? 0x2000 : 0));
		out[10] = out[11] = 0;
		gen_be16(out + 10, (uint16_t)~gen_csum(out, 20, 0));
	}
	*out_len = fh + n;
	return count;
}

#endif
