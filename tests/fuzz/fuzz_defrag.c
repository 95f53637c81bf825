/* SPDX-License-Identifier: MIT */
/*
 * Reassembly of IP fragments bound for TUN (offload_defrag) on arbitrary batches: the input
 * is a list of packets, each a 2-byte big-endian length and its bytes, placed as decrypted
 * packets sit (after the WireGuard data header). Whatever it does, it stays in the buffers,
 * keeps every packet (the written ones first, then the ones it took in, in their order),
 * leaves each packet it did not join untouched, and makes each one it joined a datagram
 * whose lengths agree and whose IPv4 header checksum is right, carrying exactly the payloads
 * of the fragments it took in. The result is then coalesced, as the TUN write path does.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "offload/offload.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NPKT OFFLOAD_GRO_BATCH

static struct pkt_pool *pool;

/* The payload of a fragment (bytes after its IP and fragment headers), as the input had it. */
static size_t frag_payload(const uint8_t *d, size_t len)
{
	return (d[0] >> 4) == 4 ? len - (size_t)(d[0] & 0xf) * 4 : len - 48;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t orig[NPKT][2048];
	static uint32_t orig_len[NPKT];
	struct pkt *pkts[NPKT], *in[NPKT];
	struct offload_gro_group groups[NPKT];
	unsigned n = 0, m, i, j, k;

	if (!pool)
		pool = pkt_pool_new(NPKT);
	while (size >= 2 && n < NPKT) {
		size_t len = get_be16(data);

		data += 2, size -= 2;
		len = MIN(len, size);
		len = MIN(len, (size_t)PKT_BUF_MTU - 16);
		if (pkt_pool_get(pool, &pkts[n], 1) != 1)
			abort();
		pkts[n]->data += 16;
		memcpy(pkts[n]->data, data, len);
		pkts[n]->len = (uint32_t)len;
		memcpy(orig[n], data, len);
		orig_len[n] = (uint32_t)len;
		in[n] = pkts[n];
		data += len, size -= len;
		n++;
	}
	m = offload_defrag(pkts, n);
	if (m > n)
		abort();
	/* Each output packet is the input packet at or after the previous one's. */
	for (i = 0, j = 0; i < m; i++, j++) {
		struct pkt *p = pkts[i];
		size_t want;

		while (j < n && in[j] != p)
			j++;
		if (j == n || p->data < p->buf || (size_t)(p->data - p->buf) + p->len > p->cap)
			abort();
		if (p->len == orig_len[j] && !memcmp(p->data, orig[j], p->len))
			continue;
		/* Joined: the fragments from j on, up to the next output packet. */
		want = frag_payload(orig[j], orig_len[j]);
		for (k = j + 1; k < n && (i + 1 == m || in[k] != pkts[i + 1]); k++)
			want += frag_payload(orig[k], orig_len[k]);
		if ((p->data[0] >> 4) == 4) {
			size_t ihl = (size_t)(p->data[0] & 0xf) * 4;

			if (get_be16(p->data + 2) != p->len || get_be16(p->data + 6) != 0 ||
			    offload_csum_fold(offload_csum_add(0, p->data, ihl)) != 0xffff ||
			    p->len - ihl != want)
				abort();
		} else if ((size_t)get_be16(p->data + 4) + 40 != p->len || p->len - 40 != want) {
			abort();
		}
	}
	/* Taken in: all the others, in their order. */
	for (i = m, j = 0; i < n; i++, j++) {
		while (j < n && in[j] != pkts[i])
			j++;
		if (j == n)
			abort();
	}
	offload_gro(pkts, m, OFFLOAD_GRO_TCP | OFFLOAD_GRO_UDP, groups);
	pkt_free(pkts, n);
	return 0;
}
