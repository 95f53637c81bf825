/* SPDX-License-Identifier: MIT */
/*
 * Coalescing of TCP segments bound for TUN (see offload.h for the rules). One pass over the
 * batch: each packet either joins the newest group of its flow, when that group is open and
 * the packet fits it exactly, or starts a group of its own; a packet of a flow that does not
 * join closes the flow's group, so nothing later can overtake it. Then the array is put in
 * group order and each group of several gets its headers and vnet header.
 */
#include <netinet/in.h>
#include <string.h>

#include "base/util.h"
#include "offload/offload.h"

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_PSH 0x08
#define TCP_ACK 0x10
#define TCP_URG 0x20
#define TCP_CWR 0x80
/* What one write may carry: the IP total length (or IPv6 payload length) field. */
#define GRO_LEN_MAX 65535

/* What the pass learns of one TCP packet. */
struct seg_info {
	uint16_t l4_off, hdr_len; /* IP header, then IP and TCP headers */
	uint32_t pay;		  /* payload bytes */
	uint32_t seq;
	uint8_t flags;
	bool v6, tcp, opener; /* tcp: a flow key exists; opener: may start or join a group */
};

struct group {
	unsigned first, last, n;  /* input indices of the first and last members */
	uint32_t next_seq, total; /* sequence number a member must have; payload so far */
	bool open;
};

/* Parses the IP and TCP headers; false for anything that is not plain TCP we may look at. */
static bool parse(const struct pkt *p, struct seg_info *ret)
{
	const uint8_t *d = p->data;
	size_t len = p->len, l4, thl;

	memset(ret, 0, sizeof(*ret));
	if (len < 20)
		return false;
	if ((d[0] >> 4) == 4) {
		l4 = (size_t)(d[0] & 0xf) * 4;
		if (l4 < 20 || d[9] != IPPROTO_TCP || get_be16(d + 2) != len || l4 > len)
			return false;
		/* Fragments have no ports (the later ones) or stand for more than they carry. */
		if (get_be16(d + 6) & 0x3fff)
			return false;
	} else if ((d[0] >> 4) == 6) {
		if (len < 40 || d[6] != IPPROTO_TCP || (size_t)get_be16(d + 4) + 40 != len)
			return false;
		l4 = 40;
		ret->v6 = true;
	} else {
		return false;
	}
	if (l4 + 20 > len)
		return false;
	thl = (size_t)(d[l4 + 12] >> 4) * 4;
	if (thl < 20 || l4 + thl > len)
		return false;
	ret->tcp = true;
	ret->l4_off = (uint16_t)l4;
	ret->hdr_len = (uint16_t)(l4 + thl);
	ret->pay = (uint32_t)(len - l4 - thl);
	ret->seq = get_be32(d + l4 + 4);
	ret->flags = d[l4 + 13];
	/* The kernel's GRO takes IPv4 only without options. */
	ret->opener = ret->pay > 0 && (ret->v6 || l4 == 20) &&
		      (ret->flags & (TCP_FIN | TCP_SYN | TCP_RST | TCP_URG | TCP_CWR)) == 0 &&
		      (ret->flags & TCP_ACK);
	return true;
}

/* Same addresses and ports, in the same direction. */
static bool same_flow(const struct pkt *a, const struct seg_info *ia, const struct pkt *b,
		      const struct seg_info *ib)
{
	if (ia->v6 != ib->v6)
		return false;
	if (ia->v6 ? memcmp(a->data + 8, b->data + 8, 32) : memcmp(a->data + 12, b->data + 12, 8))
		return false;
	return !memcmp(a->data + ia->l4_off, b->data + ib->l4_off, 4);
}

/*
 * The IPv4 header checksum must be right (the kernel's inet_gro_receive checks it too):
 * only the head's header survives coalescing, recomputed, so a bad one would be made good.
 *
 * The TCP checksum is not checked. Every packet here was decrypted and its Poly1305 tag
 * verified, so it is the packet the peer encrypted, bit for bit; the kernel's WireGuard
 * marks such packets CHECKSUM_UNNECESSARY at every level and its GRO then coalesces them
 * without summing, and the partial checksum of the super-packet (NEEDS_CSUM, which the
 * kernel takes as CHECKSUM_PARTIAL) is what its tcp_gro_complete leaves too. A checksum
 * that was already wrong when the peer encrypted it is thus made right on coalescing, as
 * it would be by the kernel; a packet that goes up alone keeps its checksum and the
 * kernel checks it (the vnet header says neither NEEDS_CSUM nor DATA_VALID).
 */
static bool ip_csum_ok(const struct pkt *p, const struct seg_info *si)
{
	return si->v6 || offload_csum_fold(offload_csum_add(0, p->data, 20)) == 0xffff;
}

/*
 * May b follow the group's last member a? Everything but lengths, ids, the sequence number
 * and PSH must be equal (the kernel compares the same fields).
 */
static bool can_join(const struct pkt *first, const struct seg_info *fi, const struct pkt *a,
		     const struct pkt *b, const struct seg_info *bi, const struct group *g)
{
	const uint8_t *x = first->data, *y = b->data;

	if (!g->open || !bi->opener || bi->hdr_len != fi->hdr_len || bi->seq != g->next_seq)
		return false;
	if (bi->pay > fi->pay ||
	    fi->hdr_len + g->total + bi->pay - (fi->v6 ? 40u : 0u) > GRO_LEN_MAX)
		return false;
	if (fi->v6) {
		/* version, traffic class, flow label; hop limit */
		if (memcmp(x, y, 4) || x[7] != y[7])
			return false;
	} else {
		uint16_t frag = get_be16(y + 6);

		/* ToS; DF; TTL */
		if (x[1] != y[1] || (get_be16(x + 6) ^ frag) || x[8] != y[8])
			return false;
		/* Without DF the ids must run on, so cutting it again gives them back. */
		if (!(frag & 0x4000) && get_be16(y + 4) != (uint16_t)(get_be16(a->data + 4) + 1))
			return false;
	}
	/* ack, data offset, flags but PSH, window, urgent pointer, options */
	x += fi->l4_off;
	y += bi->l4_off;
	if (memcmp(x + 8, y + 8, 5) || ((x[13] ^ y[13]) & (uint8_t)~TCP_PSH) ||
	    memcmp(x + 14, y + 14, 2) ||
	    memcmp(x + 18, y + 18, (size_t)fi->hdr_len - fi->l4_off - 18))
		return false;
	return ip_csum_ok(b, bi);
}

/* The group's first member becomes the super-packet's head; its vnet header says how to cut. */
static void group_finish(struct pkt *first, const struct seg_info *fi, const struct pkt *last,
			 const struct group *g, struct offload_gro_group *out)
{
	struct offload_vnet_hdr h = {0};
	uint8_t *d = first->data, *th = d + fi->l4_off;
	uint32_t total = fi->hdr_len + g->total, l4_len = total - fi->l4_off;
	uint16_t c;

	out->skip = fi->hdr_len;
	if (g->n == 1) {
		offload_vnet_hdr_write(&h, out->vnet);
		return;
	}
	if (fi->v6) {
		put_be16(d + 4, (uint16_t)(total - 40));
	} else {
		put_be16(d + 2, (uint16_t)total);
		d[10] = 0;
		d[11] = 0;
		c = (uint16_t)~offload_csum_fold(offload_csum_add(0, d, 20));
		memcpy(d + 10, &c, 2);
	}
	th[13] |= last->data[fi->l4_off + 13] & TCP_PSH;
	/* A partial checksum: the pseudo-header's sum, which the kernel completes per segment. */
	c = offload_csum_fold(offload_csum_pseudo(d, IPPROTO_TCP, l4_len));
	memcpy(th + 16, &c, 2);
	h.flags = OFFLOAD_VNET_F_NEEDS_CSUM;
	h.gso_type = fi->v6 ? OFFLOAD_GSO_TCPV6 : OFFLOAD_GSO_TCPV4;
	h.hdr_len = fi->hdr_len;
	h.gso_size = (uint16_t)fi->pay;
	h.csum_start = fi->l4_off;
	h.csum_offset = 16;
	offload_vnet_hdr_write(&h, out->vnet);
}

unsigned offload_gro(struct pkt **pkts, unsigned n, struct offload_gro_group *groups)
{
	struct seg_info info[OFFLOAD_GRO_BATCH];
	struct group gs[OFFLOAD_GRO_BATCH];
	struct pkt *order[OFFLOAD_GRO_BATCH];
	int next[OFFLOAD_GRO_BATCH];
	unsigned i, j, ng = 0, k;

	n = MIN(n, (unsigned)OFFLOAD_GRO_BATCH);
	for (i = 0; i < n; i++) {
		struct seg_info *si = &info[i];
		struct group *g = NULL;

		next[i] = -1;
		parse(pkts[i], si);
		/* The newest group of the flow: only it may grow, or order would break. */
		for (j = ng; si->tcp && j-- > 0;) {
			if (info[gs[j].first].tcp &&
			    same_flow(pkts[gs[j].first], &info[gs[j].first], pkts[i], si)) {
				g = &gs[j];
				break;
			}
		}
		if (g && can_join(pkts[g->first], &info[g->first], pkts[g->last], pkts[i], si, g)) {
			next[g->last] = (int)i;
			g->last = i;
			g->n++;
			g->total += si->pay;
			g->next_seq += si->pay;
			if (si->pay < info[g->first].pay || (si->flags & TCP_PSH))
				g->open = false;
			continue;
		}
		if (g)
			g->open = false;
		g = &gs[ng++];
		*g = (struct group){.first = i, .last = i, .n = 1, .total = si->pay};
		g->next_seq = si->seq + si->pay;
		g->open = si->opener && !(si->flags & TCP_PSH) && ip_csum_ok(pkts[i], si);
	}
	/* Group order, members in flow order. */
	for (j = 0, k = 0; j < ng; j++) {
		struct pkt *last = pkts[gs[j].last];
		int m;

		groups[j].start = k;
		groups[j].n = gs[j].n;
		group_finish(pkts[gs[j].first], &info[gs[j].first], last, &gs[j], &groups[j]);
		for (m = (int)gs[j].first; m >= 0; m = next[m])
			order[k++] = pkts[m];
	}
	memcpy(pkts, order, n * sizeof(*pkts));
	return ng;
}
