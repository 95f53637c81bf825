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

/*
 * 32-bit words into a 64-bit sum: carries pile up in the high half, and since 2^16 = 1
 * modulo 0xffff, folding at the end gives the 16-bit one's complement sum of the host-order
 * words, which stored in host order is the checksum's bytes (RFC 1071, "byte order
 * independence").
 */
uint64_t offload_csum_add(uint64_t sum, const uint8_t *p, size_t len)
{
	uint32_t w;
	uint8_t tail[4] = {0};

	while (len >= 16) {
		uint32_t a, b, c, d;

		memcpy(&a, p, 4);
		memcpy(&b, p + 4, 4);
		memcpy(&c, p + 8, 4);
		memcpy(&d, p + 12, 4);
		sum += (uint64_t)a + b + c + d;
		p += 16;
		len -= 16;
	}
	while (len >= 4) {
		memcpy(&w, p, 4);
		sum += w;
		p += 4;
		len -= 4;
	}
	if (len) {
		memcpy(tail, p, len);
		memcpy(&w, tail, 4);
		sum += w;
	}
	return sum;
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
