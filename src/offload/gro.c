/* SPDX-License-Identifier: MIT */
/*
 * Coalescing of TCP segments and UDP datagrams bound for TUN (see offload.h for the rules).
 * One pass over the batch: each packet either joins the newest group of its flow, when that
 * group is open and the packet fits it exactly, or starts a group of its own; a packet of a
 * flow that does not join closes the flow's group, so nothing later can overtake it. Then the
 * array is put in group order and each group of several gets its headers and vnet header.
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
#define UDP_HDR_LEN 8

/*
 * A group is at most one batch. The kernel's GRO stops at 64 members (tcp_gro_receive,
 * UDP_GRO_CNT_MAX), and virtio_net_hdr_to_skb refuses a UDP_L4 packet of more than
 * UDP_MAX_SEGMENTS segments (64 before Linux 6.10, 128 since).
 */
_Static_assert(OFFLOAD_GRO_BATCH <= 64, "a group must stay within the kernel's segment limit");

/* What the pass learns of one TCP or UDP packet. */
struct seg_info {
	uint16_t l4_off, hdr_len; /* IP header, then IP and L4 headers */
	uint32_t pay;		  /* payload bytes */
	uint32_t seq;		  /* TCP */
	uint8_t flags;		  /* TCP */
	uint8_t proto;		  /* IPPROTO_TCP or IPPROTO_UDP: a flow key exists; 0: none */
	bool v6, opener;	  /* opener: may start or join a group */
	bool udp_closer; /* no flow key, but may be of a UDP flow of its addresses (below) */
};

struct group {
	unsigned first, last, n;  /* input indices of the first and last members */
	uint32_t next_seq, total; /* sequence number a member must have; payload so far */
	bool open;
};

/* The TCP header of an IP packet whose header parse() took. */
static bool parse_tcp(const uint8_t *d, size_t len, size_t l4, struct seg_info *ret)
{
	size_t thl;

	if (l4 + 20 > len)
		return false;
	thl = (size_t)(d[l4 + 12] >> 4) * 4;
	if (thl < 20 || l4 + thl > len)
		return false;
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

/*
 * The UDP header. As the kernel's udp_gro_receive_segment: a datagram joins only with a
 * payload, a length field that says what the IP header says (no padding), and a checksum
 * that is not 0 — a datagram without a checksum (IPv4) would come back with one, and an IPv6
 * datagram with 0, which the kernel drops, would come back valid.
 */
static bool parse_udp(const uint8_t *d, size_t len, size_t l4, struct seg_info *ret)
{
	if (l4 + UDP_HDR_LEN > len)
		return false;
	ret->hdr_len = (uint16_t)(l4 + UDP_HDR_LEN);
	ret->pay = (uint32_t)(len - l4 - UDP_HDR_LEN);
	ret->opener = ret->pay > 0 && (ret->v6 || l4 == 20) && get_be16(d + l4 + 4) == len - l4 &&
		      get_be16(d + l4 + 6) != 0;
	return true;
}

/*
 * Parses the IP and L4 headers; false for anything that is not plain TCP or UDP (as `want`
 * says, OFFLOAD_GRO_*) we may look at. Of those, an IPv4 UDP fragment and an IPv6 packet
 * with an extension header (a fragment header among them) have no ports we read but may
 * belong to a UDP flow between their addresses: they are udp_closers.
 */
static bool parse(const struct pkt *p, unsigned want, struct seg_info *ret)
{
	const uint8_t *d = p->data;
	size_t len = p->len, l4;
	uint8_t proto;

	memset(ret, 0, sizeof(*ret));
	if (len < 20)
		return false;
	if ((d[0] >> 4) == 4) {
		l4 = (size_t)(d[0] & 0xf) * 4;
		proto = d[9];
		if (l4 < 20 || get_be16(d + 2) != len || l4 > len)
			return false;
		/* Fragments have no ports (the later ones) or stand for more than they carry. */
		if (get_be16(d + 6) & 0x3fff) {
			ret->udp_closer = proto == IPPROTO_UDP;
			return false;
		}
	} else if ((d[0] >> 4) == 6) {
		if (len < 40 || (size_t)get_be16(d + 4) + 40 != len)
			return false;
		/* Extension headers (a fragment header among them) are not looked into. */
		proto = d[6];
		l4 = 40;
		ret->v6 = true;
		ret->udp_closer = proto == IPPROTO_HOPOPTS || proto == IPPROTO_ROUTING ||
				  proto == IPPROTO_FRAGMENT || proto == IPPROTO_DSTOPTS;
	} else {
		return false;
	}
	if (proto == IPPROTO_TCP && (want & OFFLOAD_GRO_TCP)) {
		if (!parse_tcp(d, len, l4, ret))
			return false;
	} else if (proto == IPPROTO_UDP && (want & OFFLOAD_GRO_UDP)) {
		if (!parse_udp(d, len, l4, ret))
			return false;
	} else {
		return false;
	}
	ret->proto = proto;
	ret->l4_off = (uint16_t)l4;
	return true;
}

/* Same source and destination addresses (of one family), in the same direction. */
static bool same_addrs(const uint8_t *a, const uint8_t *b, bool v6)
{
	return v6 ? !memcmp(a + 8, b + 8, 32) : !memcmp(a + 12, b + 12, 8);
}

/* Same protocol, addresses and ports, in the same direction. */
static bool same_flow(const struct pkt *a, const struct seg_info *ia, const struct pkt *b,
		      const struct seg_info *ib)
{
	if (ia->v6 != ib->v6 || ia->proto != ib->proto)
		return false;
	if (!same_addrs(a->data, b->data, ia->v6))
		return false;
	return !memcmp(a->data + ia->l4_off, b->data + ib->l4_off, 4);
}

/*
 * A packet that may be of a UDP flow but has no ports we read (a udp_closer) closes the UDP
 * groups between its addresses: a datagram after it may not overtake it. (TCP groups are
 * left as they were: a TCP fragment or extension header is rare enough.)
 */
static void close_udp_groups(struct pkt **pkts, const struct seg_info *info, struct group *gs,
			     unsigned ng, const struct pkt *p, bool v6)
{
	unsigned j;

	for (j = 0; j < ng; j++) {
		const struct seg_info *fi = &info[gs[j].first];

		if (gs[j].open && fi->proto == IPPROTO_UDP && fi->v6 == v6 &&
		    same_addrs(pkts[gs[j].first]->data, p->data, v6))
			gs[j].open = false;
	}
}

/*
 * The IPv4 header checksum must be right (the kernel's inet_gro_receive checks it too):
 * only the head's header survives coalescing, recomputed, so a bad one would be made good.
 *
 * The TCP or UDP checksum is not checked. Every packet here was decrypted and its Poly1305
 * tag verified, so it is the packet the peer encrypted, bit for bit; the kernel's WireGuard
 * marks such packets CHECKSUM_UNNECESSARY at every level and its GRO then coalesces them
 * without summing, and the partial checksum of the super-packet (NEEDS_CSUM, which the
 * kernel takes as CHECKSUM_PARTIAL) is what its tcp_gro_complete (udp_gro_complete_segment)
 * leaves too. A checksum
 * that was already wrong when the peer encrypted it is thus made right on coalescing, as
 * it would be by the kernel; a packet that goes up alone keeps its checksum and the
 * kernel checks it (the vnet header says neither NEEDS_CSUM nor DATA_VALID).
 */
static bool ip_csum_ok(const struct pkt *p, const struct seg_info *si)
{
	return si->v6 || offload_csum_fold(offload_csum_add(0, p->data, 20)) == 0xffff;
}

/*
 * May IP header y follow x (the group's first) and prev (its last)? Everything but lengths
 * and ids must be equal (the kernel's inet_gro_receive/ipv6_gro_receive compare the same).
 */
static bool ip_can_join(const uint8_t *x, const uint8_t *prev, const uint8_t *y, bool v6)
{
	uint16_t frag;

	/* version, traffic class, flow label; hop limit */
	if (v6)
		return !memcmp(x, y, 4) && x[7] == y[7];
	frag = get_be16(y + 6);
	/* ToS; DF; TTL */
	if (x[1] != y[1] || (get_be16(x + 6) ^ frag) || x[8] != y[8])
		return false;
	/* Without DF the ids must run on, so cutting it again gives them back. */
	return (frag & 0x4000) || get_be16(y + 4) == (uint16_t)(get_be16(prev + 4) + 1);
}

/*
 * May TCP segment y follow the group's first x? ack, data offset, flags but PSH, window,
 * urgent pointer and options must be equal (x and y at their TCP headers).
 */
static bool tcp_can_join(const uint8_t *x, const uint8_t *y, size_t thl)
{
	return !memcmp(x + 8, y + 8, 5) && !((x[13] ^ y[13]) & (uint8_t)~TCP_PSH) &&
	       !memcmp(x + 14, y + 14, 2) && !memcmp(x + 18, y + 18, thl - 18);
}

/*
 * May b follow the group's last member a? For TCP the sequence number must run on; for UDP
 * the ports (same_flow) are all the kernel compares of the UDP header. Both: payloads of the
 * first's size but for a shorter last one.
 */
static bool can_join(const struct pkt *first, const struct seg_info *fi, const struct pkt *a,
		     const struct pkt *b, const struct seg_info *bi, const struct group *g)
{
	if (!g->open || !bi->opener || bi->hdr_len != fi->hdr_len)
		return false;
	if (fi->proto == IPPROTO_TCP && bi->seq != g->next_seq)
		return false;
	if (bi->pay > fi->pay ||
	    fi->hdr_len + g->total + bi->pay - (fi->v6 ? 40u : 0u) > GRO_LEN_MAX)
		return false;
	if (!ip_can_join(first->data, a->data, b->data, fi->v6))
		return false;
	if (fi->proto == IPPROTO_TCP &&
	    !tcp_can_join(first->data + fi->l4_off, b->data + bi->l4_off,
			  (size_t)fi->hdr_len - fi->l4_off))
		return false;
	return ip_csum_ok(b, bi);
}

/*
 * The group's first member becomes the super-packet's head; its vnet header says how to cut.
 * The L4 checksum field gets the pseudo-header's sum over the whole length, which the kernel
 * completes per segment (NEEDS_CSUM is CHECKSUM_PARTIAL; __udp_gso_segment swaps the UDP
 * length in that sum for each segment's).
 */
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
	c = offload_csum_fold(offload_csum_pseudo(d, fi->proto, l4_len));
	h.flags = OFFLOAD_VNET_F_NEEDS_CSUM;
	h.hdr_len = fi->hdr_len;
	h.gso_size = (uint16_t)fi->pay;
	h.csum_start = fi->l4_off;
	if (fi->proto == IPPROTO_UDP) {
		put_be16(th + 4, (uint16_t)l4_len);
		memcpy(th + 6, &c, 2);
		h.gso_type = OFFLOAD_GSO_UDP_L4;
		h.csum_offset = 6;
	} else {
		th[13] |= last->data[fi->l4_off + 13] & TCP_PSH;
		memcpy(th + 16, &c, 2);
		h.gso_type = fi->v6 ? OFFLOAD_GSO_TCPV6 : OFFLOAD_GSO_TCPV4;
		h.csum_offset = 16;
	}
	offload_vnet_hdr_write(&h, out->vnet);
}

unsigned offload_gro(struct pkt **pkts, unsigned n, unsigned want, struct offload_gro_group *groups)
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
		if (!parse(pkts[i], want, si) && si->udp_closer && (want & OFFLOAD_GRO_UDP))
			close_udp_groups(pkts, info, gs, ng, pkts[i], si->v6);
		/* The newest group of the flow: only it may grow, or order would break. */
		for (j = ng; si->proto && j-- > 0;) {
			if (info[gs[j].first].proto &&
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
