/* SPDX-License-Identifier: MIT */
/*
 * Segmentation of TSO/USO super-packets, as a NIC would: every segment is the super-packet's
 * headers, fixed up, and the next gso_size bytes of payload. The headers are checked against
 * the packet itself; the vnet header only says how to cut.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "base/util.h"
#include "offload/offload.h"

#define TCP_FIN 0x01
#define TCP_PSH 0x08
#define TCP_CWR 0x80
/* At most this many IPv6 extension headers (hop-by-hop, routing, destination) before L4. */
#define IP6_EXT_MAX 8

/* The L4 header's offset and protocol of an IPv6 packet, past extension headers, or -errno. */
static int ip6_l4(const uint8_t *pkt, size_t len, uint8_t *ret_proto)
{
	size_t off = 40;
	uint8_t nh = pkt[6];
	unsigned i;

	for (i = 0; i < IP6_EXT_MAX; i++) {
		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS)
			break;
		if (off + 8 > len)
			return -EINVAL;
		nh = pkt[off];
		off += ((size_t)pkt[off + 1] + 1) * 8;
	}
	if (off > len)
		return -EINVAL;
	*ret_proto = nh;
	return (int)off;
}

int offload_seg_start(struct offload_seg *s, const struct offload_vnet_hdr *h, const uint8_t *pkt,
		      size_t len)
{
	uint8_t type = h->gso_type & (uint8_t)~OFFLOAD_GSO_ECN, proto;
	size_t l4_off, l4_len;
	int r;

	if (len < 20 || len > 65535 + 40)
		return -EINVAL;
	memset(s, 0, sizeof(*s));
	if ((pkt[0] >> 4) == 4) {
		if (type == OFFLOAD_GSO_TCPV6)
			return -EINVAL;
		l4_off = (size_t)(pkt[0] & 0xf) * 4;
		if (l4_off < 20 || l4_off > len || get_be16(pkt + 2) != len)
			return -EINVAL;
		/* A fragment (MF or an offset) has no L4 header to repeat. */
		if (get_be16(pkt + 6) & 0x3fff)
			return -EINVAL;
		proto = pkt[9];
	} else if ((pkt[0] >> 4) == 6) {
		if (type == OFFLOAD_GSO_TCPV4 || len < 40 || (size_t)get_be16(pkt + 4) + 40 != len)
			return -EINVAL;
		r = ip6_l4(pkt, len, &proto);
		if (r < 0)
			return r;
		l4_off = (size_t)r;
		s->v6 = true;
	} else {
		return -EINVAL;
	}
	if (type == OFFLOAD_GSO_UDP_L4) {
		if (proto != IPPROTO_UDP)
			return -EPROTONOSUPPORT;
		l4_len = 8;
	} else if (type == OFFLOAD_GSO_TCPV4 || type == OFFLOAD_GSO_TCPV6) {
		if (proto != IPPROTO_TCP)
			return -EPROTONOSUPPORT;
		if (l4_off + 20 > len)
			return -EINVAL;
		l4_len = (size_t)(pkt[l4_off + 12] >> 4) * 4;
		if (l4_len < 20)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	if (l4_off + l4_len > len)
		return -EINVAL;
	/* The kernel's partial checksum must be where we are about to write the full one. */
	if ((h->flags & OFFLOAD_VNET_F_NEEDS_CSUM) &&
	    (h->csum_start != l4_off || h->csum_offset != (proto == IPPROTO_TCP ? 16 : 6)))
		return -EINVAL;
	s->pkt = pkt;
	s->len = len;
	s->l4_off = (uint16_t)l4_off;
	s->hdr_len = (uint16_t)(l4_off + l4_len);
	s->mss = h->gso_size;
	s->proto = proto;
	s->off = s->hdr_len;
	return 0;
}

bool offload_seg_done(const struct offload_seg *s)
{
	/* A packet of headers only is still one segment. */
	return s->off >= s->len && (s->i > 0 || !s->pkt);
}

/* The i-th segment of s, `pay` payload bytes at s->off, into out (room checked). */
static void seg_write(const struct offload_seg *s, uint8_t *out, size_t pay, bool last)
{
	size_t total = s->hdr_len + pay, l4_len = total - s->l4_off;
	uint8_t *l4 = out + s->l4_off;
	uint16_t c;

	memcpy(out, s->pkt, s->hdr_len);
	memcpy(out + s->hdr_len, s->pkt + s->off, pay);
	if (s->v6) {
		put_be16(out + 4, (uint16_t)(total - 40));
	} else {
		put_be16(out + 2, (uint16_t)total);
		put_be16(out + 4, (uint16_t)(get_be16(s->pkt + 4) + s->i));
		out[10] = 0;
		out[11] = 0;
		c = (uint16_t)~offload_csum_fold(offload_csum_add(0, out, s->l4_off));
		memcpy(out + 10, &c, 2);
	}
	if (s->proto == IPPROTO_TCP) {
		put_be32(l4 + 4,
			 get_be32(s->pkt + s->l4_off + 4) + (uint32_t)(s->off - s->hdr_len));
		if (!last)
			l4[13] &= (uint8_t) ~(TCP_FIN | TCP_PSH);
		if (s->i > 0)
			l4[13] &= (uint8_t)~TCP_CWR;
		l4[16] = 0;
		l4[17] = 0;
		c = (uint16_t)~offload_csum_fold(offload_csum_add(
		    offload_csum_pseudo(out, IPPROTO_TCP, (uint32_t)l4_len), l4, l4_len));
		memcpy(l4 + 16, &c, 2);
	} else {
		put_be16(l4 + 4, (uint16_t)l4_len);
		l4[6] = 0;
		l4[7] = 0;
		c = (uint16_t)~offload_csum_fold(offload_csum_add(
		    offload_csum_pseudo(out, IPPROTO_UDP, (uint32_t)l4_len), l4, l4_len));
		/* 0 means "no checksum" in UDP: a computed 0 is sent as its other form. */
		if (c == 0)
			c = 0xffff;
		memcpy(l4 + 6, &c, 2);
	}
}

int offload_seg_next(struct offload_seg *s, struct pkt **outs, unsigned n)
{
	unsigned k;

	for (k = 0; k < n && !offload_seg_done(s); k++) {
		size_t pay = MIN((size_t)s->mss, s->len - s->off);
		bool last = s->off + pay >= s->len;

		if (s->hdr_len + pay > pkt_buf_mtu(outs[k]->cap) ||
		    s->hdr_len + pay > outs[k]->cap - pkt_headroom(outs[k]))
			return -EMSGSIZE;
		seg_write(s, outs[k]->data, pay, last);
		outs[k]->len = (uint32_t)(s->hdr_len + pay);
		s->off += pay;
		s->i++;
	}
	return (int)k;
}
