/* SPDX-License-Identifier: MIT */
/*
 * The packet filter: a filter made from the input (rules with sources, destinations with
 * port ranges and protocols, IPv4 and IPv6) compiled and then fed a script of packets both
 * ways, raw bytes or packets built from a few fields (so that addresses and ports meet the
 * rules), with the clock moving and the rules reinstalled now and then. A small flow table
 * keeps eviction busy. Refused packets get their reply (filter_reject) into room of any
 * size. Nothing may crash, leak or read out of bounds; the stats must add up, and a reply
 * fits its room, holds at least a header and keeps the packet's IP version.
 *
 * A second filter gets the same packets, those received in batches (filter_rx_batch, up to
 * BATCH at one time; a burst op brings many at once, runs of one flow among them): its
 * verdicts, the order of what passes, its counters and its table must be those of the
 * first, which judges them one by one.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/pkt.h"
#include "filter/filter.h"
#include "proto/netmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct in {
	const uint8_t *p;
	size_t n;
};

static uint8_t u8(struct in *in)
{
	uint8_t v = 0;

	if (in->n) {
		v = *in->p++;
		in->n--;
	}
	return v;
}

/* 100.64.0.x/len or fd7e:11e5:7a11::x/len */
static void prefix(struct in *in, struct netmap_prefix *p)
{
	uint8_t b = u8(in), x = u8(in);

	memset(p, 0, sizeof(*p));
	if (b & 0x80) {
		static const uint8_t ula[6] = {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11};

		p->family = AF_INET6;
		memcpy(p->addr, ula, 6);
		p->addr[15] = x;
		p->len = (uint8_t)(128 - (b & 0x7f) % 129);
	} else {
		p->family = AF_INET;
		p->addr[0] = 100, p->addr[1] = 64, p->addr[3] = x;
		p->len = (uint8_t)(32 - (b & 0x7f) % 33);
	}
}

static void addr_put(uint8_t *out, int v6, uint8_t x)
{
	static const uint8_t ula[6] = {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11};

	if (v6) {
		memset(out, 0, 16);
		memcpy(out, ula, 6);
		out[15] = x;
	} else {
		out[0] = 100, out[1] = 64, out[2] = 0, out[3] = x;
	}
}

/* A packet from fields: version, protocol, addresses, ports or ICMP type, flags, quote. */
static size_t build(struct in *in, uint8_t *out)
{
	static const uint8_t protos[] = {6, 17, 1, 58, 132, 47};
	uint8_t k = u8(in), proto = protos[(k >> 1) % 6], l4[48] = {0};
	int v6 = k & 1;
	size_t l4n = 20 + (u8(in) % 29), hl = v6 ? 40 : 20;

	for (size_t i = 0; i < 8; i++)
		l4[i] = u8(in);
	l4[12] = 0x50;
	l4[13] = u8(in);
	for (size_t i = 20; i < l4n; i++)
		l4[i] = u8(in);
	memset(out, 0, hl);
	if (v6) {
		out[0] = 0x60;
		out[4] = 0, out[5] = (uint8_t)l4n;
		out[6] = (k & 0x40) ? 44 : proto;
		addr_put(out + 8, 1, u8(in));
		addr_put(out + 24, 1, u8(in));
	} else {
		out[0] = 0x45;
		out[3] = (uint8_t)(hl + l4n);
		out[6] = (k & 0x40) ? 0x20 : 0;
		out[7] = (k & 0x80) ? 1 : 0;
		out[9] = proto;
		addr_put(out + 12, 0, u8(in));
		addr_put(out + 16, 0, u8(in));
	}
	if (v6 && (k & 0x40)) {
		/* A fragment header in front (offset from the input). */
		memmove(l4 + 8, l4, 40);
		l4[0] = proto;
		l4[2] = 0;
		l4[3] = (k & 0x80) ? 8 : 1;
		l4n = l4n + 8 > sizeof(l4) ? sizeof(l4) : l4n + 8;
		out[5] = (uint8_t)l4n;
	}
	memcpy(out + hl, l4, l4n);
	return hl + l4n;
}

/* More than a batch judges at once (64): batches of two parts too. */
#define BATCH 100

/* Received packets the batch filter has yet to judge, and the single filter's verdicts. */
struct pending {
	struct pkt_pool *pool;
	struct pkt *pk[BATCH];
	bool pass[BATCH];
	unsigned n;
	uint64_t now;
};

static void stats_same(struct filter *f, struct filter *g)
{
	struct filter_stats a, b;

	filter_stats_get(f, &a);
	filter_stats_get(g, &b);
	if (memcmp(a.drops, b.drops, sizeof(a.drops)) || a.fragments != b.fragments ||
	    a.ct_entries != b.ct_entries || a.ct_evicted != b.ct_evicted)
		abort();
}

/* g judges the pending packets as a batch: as f did one by one, in their order. */
static void flush(struct filter *f, struct filter *g, struct pending *q)
{
	unsigned i, k, want = 0;

	if (!q->n)
		return;
	for (i = 0; i < q->n; i++) {
		q->pk[i]->counter = i;
		want += q->pass[i];
	}
	k = filter_rx_batch(g, q->pk, q->n, q->now);
	if (k != want)
		abort();
	for (i = 0; i < q->n; i++)
		if (q->pass[q->pk[i]->counter] != (i < k) ||
		    (i && i < k && q->pk[i]->counter < q->pk[i - 1]->counter))
			abort();
	pkt_free(q->pk, q->n);
	q->n = 0;
	stats_same(f, g);
}

/*
 * A received packet: f judges it, g's batch waits. A refusal gets its reply into room that
 * may be short (its size from the input, unless full).
 */
static void receive(struct filter *f, struct filter *g, struct pending *q, struct in *in, bool full,
		    const uint8_t *pkt, size_t n, uint64_t now)
{
	uint8_t reply[FILTER_REJECT_MAX];

	if (pkt_pool_get(q->pool, &q->pk[q->n], 1) != 1)
		abort();
	memcpy(q->pk[q->n]->data, pkt, n);
	q->pk[q->n]->len = (uint32_t)n;
	q->now = now;
	q->pass[q->n] = filter_rx(f, pkt, n, now);
	if (!q->pass[q->n]) {
		size_t cap = full ? sizeof(reply) : u8(in), m;

		m = filter_reject(f, pkt, n, reply, cap, now);
		if (m > cap || (m && m < 40) || (m && (reply[0] >> 4 != pkt[0] >> 4)))
			abort();
	}
	if (++q->n == BATCH)
		flush(f, g, q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct in in = {data, size};
	struct netmap_filter nf = {0};
	struct netmap_filter_rule rules[16];
	struct netmap_prefix srcs[64];
	struct netmap_filter_dst dsts[48];
	static struct pkt_pool *pool;
	struct filter *f = NULL, *g = NULL;
	struct filter_rules *r = NULL, *r2 = NULL;
	struct filter_stats st;
	struct pending q = {.n = 0};
	uint64_t now = 1;
	unsigned i, j, steps = 0;
	uint8_t pkt[128];
	size_t n = 0;

	nf.rules = rules, nf.srcs = srcs, nf.dsts = dsts;
	nf.n_rules = u8(&in) % 17;
	for (i = 0; i < nf.n_rules; i++) {
		struct netmap_filter_rule *ru = &rules[i];
		uint8_t c = u8(&in);

		memset(ru, 0, sizeof(*ru));
		ru->src_off = nf.n_srcs;
		ru->n_src = 1 + c % 4;
		ru->dst_off = nf.n_dsts;
		ru->n_dst = 1 + (c >> 2) % 3;
		ru->n_protos = (c >> 4) % 4;
		for (j = 0; j < ru->n_src; j++)
			prefix(&in, &srcs[nf.n_srcs++]);
		for (j = 0; j < ru->n_dst; j++) {
			struct netmap_filter_dst *d = &dsts[nf.n_dsts++];
			uint8_t lo = u8(&in), span = u8(&in);

			prefix(&in, &d->prefix);
			d->port_first = span == 255 ? 0 : lo;
			d->port_last = span == 255 ? 65535 : (uint16_t)(lo + span);
		}
		for (j = 0; j < ru->n_protos; j++)
			ru->protos[j] = (uint8_t)(u8(&in) | 1);
	}
	if (!pool)
		pool = pkt_pool_new(BATCH); /* kept from one input to the next */
	q.pool = pool;
	if (!pool || filter_new(FILTER_CT_SHARDS * 2, 42, &f) < 0 ||
	    filter_new(FILTER_CT_SHARDS * 2, 42, &g) < 0) {
		filter_free(f);
		return 0;
	}
	filter_reject_set(f, 1000000);
	if (filter_rules_compile(&nf, &r) < 0 || filter_rules_compile(&nf, &r2) < 0)
		abort(); /* everything built above is valid */
	filter_rules_set(f, r);
	filter_rules_set(g, r2);
	while (in.n && steps++ < 256) {
		uint8_t op = u8(&in);

		/* A batch has one time and one filter, and precedes what the node sends next. */
		if (op >> 5 || (op & 3) == 3 || (op & 1))
			flush(f, g, &q);
		now += (uint64_t)(op >> 5) * 7 * 1000000000ULL;
		if ((op & 3) == 3) {
			/* Reinstall (a filter change), now and then none at all. */
			r = r2 = NULL;
			if (!(op & 4) && (filter_rules_compile(&nf, &r) < 0 ||
					  filter_rules_compile(&nf, &r2) < 0)) {
				filter_rules_free(r);
				filter_rules_free(r2);
				r = r2 = NULL;
			}
			filter_rules_set(f, r);
			filter_rules_set(g, r2);
			continue;
		}
		if ((op & 17) == 16) {
			/* A burst received at once: fields, or the packet before again (runs). */
			for (i = 1 + u8(&in) % BATCH; i > 0 && in.n; i--) {
				if (!(u8(&in) & 1))
					n = build(&in, pkt);
				receive(f, g, &q, &in, true, pkt, n, now);
			}
			continue;
		}
		if (op & 16) {
			/* The packet before again (none at first). */
		} else if (op & 8) {
			n = u8(&in) % sizeof(pkt);
			n = n > in.n ? in.n : n;
			memcpy(pkt, in.p, n);
			in.p += n, in.n -= n;
		} else {
			n = build(&in, pkt);
		}
		if (op & 1) {
			filter_tx(f, pkt, n, now);
			filter_tx(g, pkt, n, now);
			continue;
		}
		receive(f, g, &q, &in, op & 4, pkt, n, now);
	}
	flush(f, g, &q);
	filter_stats_get(f, &st);
	if (st.ct_entries > st.ct_max)
		abort();
	filter_free(f);
	filter_free(g);
	return 0;
}
