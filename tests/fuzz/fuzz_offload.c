/* SPDX-License-Identifier: MIT */
/*
 * The TUN read path on arbitrary input: a virtio-net header and the packet behind it, as a
 * TUN device with IFF_VNET_HDR hands them over. Whatever is accepted must be cut into
 * segments that fit their buffers, carry valid checksums and lengths that agree with the IP
 * header; the segments (TCP or UDP), coalesced again as the TUN write path would, must cut
 * back into exactly themselves. A packet that is not GSO gets its partial checksum finished in
 * bounds.
 */
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "offload/offload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NSEG OFFLOAD_GRO_BATCH

static struct pkt_pool *pool_small, *pool_seg;
static uint8_t copy[65536 + 128], flat[65536 + 128];

static void check_segment(const struct offload_seg *s, const struct pkt *p)
{
	const uint8_t *d = p->data;
	uint32_t l4_len = p->len - s->l4_off;

	if (p->len < s->hdr_len || p->len > pkt_buf_mtu(p->cap))
		abort();
	if (s->v6) {
		if ((size_t)get_be16(d + 4) + 40 != p->len)
			abort();
	} else if (get_be16(d + 2) != p->len ||
		   offload_csum_fold(offload_csum_add(0, d, s->l4_off)) != 0xffff) {
		abort();
	}
	if (offload_csum_fold(offload_csum_add(offload_csum_pseudo(d, s->proto, l4_len),
					       d + s->l4_off, l4_len)) != 0xffff)
		abort();
}

/* Coalesce the segments; every group must cut back into its members. */
static void regroup(struct pkt **segs, unsigned n)
{
	static uint8_t orig[NSEG][2048];
	static uint32_t orig_len[NSEG];
	struct offload_gro_group groups[NSEG];
	struct pkt *order[NSEG], *back[NSEG];
	struct offload_vnet_hdr h;
	struct offload_seg s;
	unsigned i, g, ng, k;
	size_t len;

	for (i = 0; i < n; i++) {
		memcpy(orig[i], segs[i]->data, segs[i]->len);
		orig_len[i] = segs[i]->len;
		order[i] = segs[i];
	}
	ng = offload_gro(order, n, OFFLOAD_GRO_TCP | OFFLOAD_GRO_UDP, groups);
	/* A single flow in order: the groups keep the segments' order. */
	for (g = 0, k = 0; g < ng; g++) {
		len = 0;
		for (i = 0; i < groups[g].n; i++) {
			const struct pkt *p = order[groups[g].start + i];
			size_t skip = i ? groups[g].skip : 0;

			if (p != segs[k + i])
				abort();
			memcpy(flat + len, p->data + skip, p->len - skip);
			len += p->len - skip;
		}
		if (offload_vnet_hdr_parse(groups[g].vnet, OFFLOAD_VNET_HDR_LEN, &h) < 0)
			abort();
		if (groups[g].n == 1) {
			if (h.gso_type != OFFLOAD_GSO_NONE || len != orig_len[k] ||
			    memcmp(flat, orig[k], len))
				abort();
			k++;
			continue;
		}
		if (offload_seg_start(&s, &h, flat, len) < 0)
			abort();
		if (pkt_pool_get(pool_seg, back, groups[g].n) != groups[g].n)
			abort();
		if (offload_seg_next(&s, back, groups[g].n) != (int)groups[g].n ||
		    !offload_seg_done(&s))
			abort();
		for (i = 0; i < groups[g].n; i++, k++)
			if (back[i]->len != orig_len[k] ||
			    memcmp(back[i]->data, orig[k], orig_len[k]))
				abort();
		pkt_free(back, groups[g].n);
	}
	if (k != n)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pkt *segs[NSEG];
	struct offload_vnet_hdr h;
	struct offload_seg s;
	size_t len;
	int r, got;

	if (!pool_small) {
		pool_small = pkt_pool_new(NSEG);
		pool_seg = pkt_pool_new(NSEG);
		if (!pool_small || !pool_seg)
			abort();
	}
	if (offload_vnet_hdr_parse(data, size, &h) < 0)
		return 0;
	len = MIN(size - OFFLOAD_VNET_HDR_LEN, sizeof(copy));
	memcpy(copy, data + OFFLOAD_VNET_HDR_LEN, len);
	if ((h.gso_type & (uint8_t)~OFFLOAD_GSO_ECN) == OFFLOAD_GSO_NONE) {
		if (offload_csum_finish(&h, copy, len) == 0 &&
		    (h.flags & OFFLOAD_VNET_F_NEEDS_CSUM) &&
		    (size_t)h.csum_start + h.csum_offset + 2 > len)
			abort();
		return 0;
	}
	if (offload_seg_start(&s, &h, copy, len) < 0)
		return 0;
	/* A few segments at a time; the first batch is also coalesced again. */
	if (pkt_pool_get(pool_small, segs, NSEG) != NSEG)
		abort();
	got = 0;
	while (!offload_seg_done(&s)) {
		r = offload_seg_next(&s, segs + got, (unsigned)MIN(NSEG - got, 7));
		if (r < 0)
			break;
		for (int i = 0; i < r; i++)
			check_segment(&s, segs[got + i]);
		got += r;
		if (got == NSEG)
			break;
	}
	if (got > 0)
		regroup(segs, (unsigned)got);
	pkt_free(segs, NSEG);
	return 0;
}
