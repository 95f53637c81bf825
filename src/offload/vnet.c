/* SPDX-License-Identifier: MIT */
/* The virtio-net header and the Internet checksum. */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "offload/offload.h"

int offload_vnet_hdr_parse(const uint8_t *buf, size_t len, struct offload_vnet_hdr *ret)
{
	struct offload_vnet_hdr h;
	uint8_t type;

	if (len < OFFLOAD_VNET_HDR_LEN)
		return -EINVAL;
	h.flags = buf[0];
	h.gso_type = buf[1];
	memcpy(&h.hdr_len, buf + 2, 2);
	memcpy(&h.gso_size, buf + 4, 2);
	memcpy(&h.csum_start, buf + 6, 2);
	memcpy(&h.csum_offset, buf + 8, 2);
	if (h.flags & ~(OFFLOAD_VNET_F_NEEDS_CSUM | OFFLOAD_VNET_F_DATA_VALID))
		return -EINVAL;
	type = h.gso_type & (uint8_t)~OFFLOAD_GSO_ECN;
	switch (type) {
	case OFFLOAD_GSO_NONE:
		if (h.gso_type & OFFLOAD_GSO_ECN)
			return -EINVAL;
		break;
	case OFFLOAD_GSO_TCPV4:
	case OFFLOAD_GSO_TCPV6:
	case OFFLOAD_GSO_UDP_L4:
		if (!h.gso_size)
			return -EINVAL;
		break;
	case OFFLOAD_GSO_UDP:
		return -EPROTONOSUPPORT;
	default:
		return -EINVAL;
	}
	*ret = h;
	return 0;
}

void offload_vnet_hdr_write(const struct offload_vnet_hdr *h, uint8_t buf[OFFLOAD_VNET_HDR_LEN])
{
	buf[0] = h->flags;
	buf[1] = h->gso_type;
	memcpy(buf + 2, &h->hdr_len, 2);
	memcpy(buf + 4, &h->gso_size, 2);
	memcpy(buf + 6, &h->csum_start, 2);
	memcpy(buf + 8, &h->csum_offset, 2);
}

/* One word into a sum, its carry out counted in c. */
static inline void acc(uint64_t *s, uint64_t *c, uint64_t w)
{
	*s += w;
	*c += *s < w;
}

/* a + b modulo 2^64 - 1: the carry out comes back in at bit 0. */
static inline uint64_t add_carry(uint64_t a, uint64_t b)
{
	a += b;
	return a + (a < b);
}

/*
 * 64 bits into 32 (and a little), so that callers may add a few small terms to a sum
 * without a carry out of bit 63. Zero stays zero and only zero becomes zero, which
 * offload_csum_fold needs to tell "nothing" (0) from "all ones" (0xffff).
 */
static inline uint64_t reduce(uint64_t s)
{
	return (s >> 32) + (s & 0xffffffffu);
}

/* The last len < 8 bytes: the missing ones are zeros after them (an odd byte's pad). */
static inline uint64_t tail_word(const uint8_t *p, size_t len)
{
	uint64_t w = 0;

	memcpy(&w, p, len);
	return w;
}

/*
 * The Internet checksum (RFC 1071) over 64-bit words: since 2^64 - 1 is a multiple of 0xffff,
 * a sum of host-order 64-bit words with every carry out of bit 63 added back in (one's
 * complement addition modulo 2^64 - 1) folds to the 16-bit one's complement sum of the
 * host-order 16-bit words, which stored in host order is the checksum's bytes (RFC 1071,
 * "byte order independence"). The loop keeps four sums and counts their carries apart
 * (add, then add-with-carry of 0) so that four dependency chains run side by side, as the
 * kernel's csum_partial keeps two; the carries join the total once at the end. Unaligned
 * 64-bit loads cost next to nothing on x86-64 and arm64, so the start is not aligned first.
 */
uint64_t offload_csum_add(uint64_t sum, const uint8_t *p, size_t len)
{
	uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0, c0 = 0, c1 = 0, c2 = 0, c3 = 0, w0, w1, w2, w3;

	while (len >= 32) {
		memcpy(&w0, p, 8);
		memcpy(&w1, p + 8, 8);
		memcpy(&w2, p + 16, 8);
		memcpy(&w3, p + 24, 8);
		acc(&s0, &c0, w0);
		acc(&s1, &c1, w1);
		acc(&s2, &c2, w2);
		acc(&s3, &c3, w3);
		p += 32;
		len -= 32;
	}
	while (len >= 8) {
		memcpy(&w0, p, 8);
		acc(&s0, &c0, w0);
		p += 8;
		len -= 8;
	}
	if (len)
		acc(&s1, &c1, tail_word(p, len));
	/* Each carry count is below 2^61 (one per 8 bytes): their sum cannot overflow. */
	s0 = add_carry(add_carry(s0, s1), add_carry(s2, s3));
	return reduce(add_carry(add_carry(s0, c0 + c1 + c2 + c3), sum));
}

uint16_t offload_csum_fold(uint64_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

uint64_t offload_csum_pseudo(const uint8_t *ip, uint8_t proto, uint32_t l4_len)
{
	uint64_t sum;

	if ((ip[0] >> 4) == 4)
		sum = offload_csum_add(0, ip + 12, 8);
	else
		sum = offload_csum_add(0, ip + 8, 32);
	sum += htons(proto);
	sum += htonl(l4_len);
	return sum;
}

int offload_csum_finish(const struct offload_vnet_hdr *h, uint8_t *pkt, size_t len)
{
	uint16_t c;

	if (!(h->flags & OFFLOAD_VNET_F_NEEDS_CSUM))
		return 0;
	if ((size_t)h->csum_start + h->csum_offset + 2 > len)
		return -EINVAL;
	/* The field holds the pseudo-header's sum: summing over it includes it. */
	c = (uint16_t)~offload_csum_fold(
	    offload_csum_add(0, pkt + h->csum_start, len - h->csum_start));
	memcpy(pkt + h->csum_start + h->csum_offset, &c, 2);
	return 0;
}
