/* SPDX-License-Identifier: MIT */
/*
 * Reassembly of a datagram's IP fragments bound for TUN, where the kernel would reassemble
 * them anyway (see offload.h for when). Why: a datagram a little larger than the tunnel MTU
 * crosses as two fragments, and each is a TUN write, a trip through the receiving kernel's
 * reassembly queue and a socket buffer charge twice the datagram's size; joined here it is
 * one packet, which UDP coalescing may then group with the flow's others.
 *
 * Nothing waits and nothing is kept: only fragments that follow each other in one batch, in
 * order, join. The tunnel keeps a peer's order, and a sender's kernel emits a datagram's
 * fragments first to last, so that is the usual case; anything else reaches the kernel as it
 * came.
 */
#include <netinet/in.h>
#include <string.h>

#include "base/util.h"
#include "offload/offload.h"

#define IP4_MF 0x2000
#define IP4_DF 0x4000
#define IP4_OFF_MASK 0x1fff
#define IP6_FRAG_LEN 8
#define IP6_OFF_MASK 0xfff8
#define IP6_MF 0x0001

/* A fragment as far as reassembly needs it. */
struct frag {
	uint32_t id;   /* IPv4 16 bits, IPv6 32 */
	uint32_t off;  /* byte offset of the payload in the datagram */
	uint16_t hdr;  /* bytes before the fragment's payload (IP header, fragment header) */
	uint8_t proto; /* the protocol of the datagram (IPv6: the fragment header's next) */
	bool more, v6;
};

/*
 * Parses an IPv4 fragment without DF (a header of any valid length whose checksum is right,
 * as only the first one's survives, recomputed) or an IPv6 packet whose fragment header
 * follows the fixed header directly. Anything else, a whole datagram among them, is not a
 * fragment here.
 */
static bool frag_parse(const struct pkt *p, struct frag *ret)
{
	const uint8_t *d = p->data;
	size_t len = p->len, ihl;
	uint16_t fo;

	if (len < 20)
		return false;
	if ((d[0] >> 4) == 4) {
		ihl = (size_t)(d[0] & 0xf) * 4;
		fo = get_be16(d + 6);
		if (ihl < 20 || ihl > len || get_be16(d + 2) != len ||
		    !(fo & (IP4_MF | IP4_OFF_MASK)))
			return false;
		/*
		 * DF on a fragment is legal but odd; the kernel then keeps DF on the whole for
		 * path MTU's sake. Not worth a rule of its own: the kernel reassembles it.
		 */
		if ((fo & IP4_DF) || offload_csum_fold(offload_csum_add(0, d, ihl)) != 0xffff)
			return false;
		*ret = (struct frag){.id = get_be16(d + 4),
				     .off = (uint32_t)(fo & IP4_OFF_MASK) * 8,
				     .hdr = (uint16_t)ihl,
				     .proto = d[9],
				     .more = fo & IP4_MF};
		return true;
	}
	if ((d[0] >> 4) != 6 || len < 40 + IP6_FRAG_LEN || (size_t)get_be16(d + 4) + 40 != len ||
	    d[6] != IPPROTO_FRAGMENT)
		return false;
	fo = get_be16(d + 42);
	/* An atomic fragment (offset 0, no more) is a whole datagram: the kernel takes it so. */
	if (!(fo & (IP6_MF | IP6_OFF_MASK)))
		return false;
	*ret = (struct frag){.id = get_be32(d + 44),
			     .off = fo & IP6_OFF_MASK,
			     .hdr = 40 + IP6_FRAG_LEN,
			     .proto = d[40],
			     .more = fo & IP6_MF,
			     .v6 = true};
	return true;
}

/*
 * May fragment b (parsed as fb) follow a datagram's fragments so far, the first at a, with
 * `have` payload bytes? Same addresses, protocol and id, the offset where the payload so far
 * ends; IPv4 also the same ToS (the kernel would merge ECN marks, a rule we leave to it).
 */
static bool frag_follows(const struct pkt *a, const struct frag *fa, const struct pkt *b,
			 const struct frag *fb, uint32_t have)
{
	if (fb->v6 != fa->v6 || fb->proto != fa->proto || fb->id != fa->id || fb->off != have)
		return false;
	if (fa->v6)
		return !memcmp(a->data + 8, b->data + 8, 32);
	return a->data[1] == b->data[1] && !memcmp(a->data + 12, b->data + 12, 8);
}

/*
 * The run of fragments from pkts[i] (a first fragment) that makes a whole datagram: returns
 * how many (2 or more), or 0 when the datagram is not all there, in order, or would not fit
 * the first one's buffer or the IP length field.
 */
static unsigned datagram_run(struct pkt **pkts, unsigned i, unsigned n, const struct frag *f0)
{
	uint32_t have = pkts[i]->len - f0->hdr, added = 0, room = pkt_tailroom(pkts[i]);
	uint32_t max = f0->v6 ? 65535 : 65535 - f0->hdr;
	unsigned j;

	for (j = i + 1; j < n; j++) {
		struct frag f;
		uint32_t pay;

		if (!frag_parse(pkts[j], &f) || !frag_follows(pkts[i], f0, pkts[j], &f, have))
			return 0;
		pay = pkts[j]->len - f.hdr;
		if (have + pay > max || added + pay > room)
			return 0;
		have += pay;
		added += pay;
		if (!f.more)
			return j - i + 1;
	}
	return 0;
}

/*
 * Appends the payloads of pkts[i+1..i+k) to pkts[i] and gives it the header of the whole,
 * as the kernel's reassembly does: the first fragment's, without fragment fields.
 */
static void datagram_join(struct pkt **pkts, unsigned i, unsigned k, const struct frag *f0)
{
	struct pkt *p = pkts[i];
	unsigned j;
	uint16_t c;

	for (j = i + 1; j < i + k; j++) {
		/* datagram_run parsed it already: only its header length is wanted here. */
		const uint8_t *d = pkts[j]->data;
		uint32_t hdr = f0->v6 ? 40 + IP6_FRAG_LEN : (uint32_t)(d[0] & 0xf) * 4;

		memcpy(p->data + p->len, d + hdr, pkts[j]->len - hdr);
		p->len += pkts[j]->len - hdr;
	}
	if (f0->v6) {
		/* The fixed header moves over the fragment header; its next header takes over. */
		memmove(p->data + IP6_FRAG_LEN, p->data, 40);
		p->data += IP6_FRAG_LEN;
		p->len -= IP6_FRAG_LEN;
		p->data[6] = f0->proto;
		put_be16(p->data + 4, (uint16_t)(p->len - 40));
		return;
	}
	put_be16(p->data + 2, (uint16_t)p->len);
	put_be16(p->data + 6, 0);
	p->data[10] = 0;
	p->data[11] = 0;
	c = (uint16_t)~offload_csum_fold(offload_csum_add(0, p->data, f0->hdr));
	memcpy(p->data + 10, &c, 2);
}

unsigned offload_defrag(struct pkt **pkts, unsigned n)
{
	struct pkt *absorbed[OFFLOAD_GRO_BATCH];
	unsigned i, k, out = 0, na = 0;

	n = MIN(n, (unsigned)OFFLOAD_GRO_BATCH);
	for (i = 0; i < n; i += k) {
		struct frag f0;

		k = 1;
		if (frag_parse(pkts[i], &f0) && f0.off == 0 && f0.more) {
			k = datagram_run(pkts, i, n, &f0);
			if (k) {
				datagram_join(pkts, i, k, &f0);
				memcpy(absorbed + na, pkts + i + 1, (k - 1) * sizeof(*pkts));
				na += k - 1;
			} else {
				k = 1;
			}
		}
		pkts[out++] = pkts[i];
	}
	memcpy(pkts + out, absorbed, na * sizeof(*pkts));
	return out;
}
