// SPDX-License-Identifier: MIT
/* Reading flow logs back (flows_query.h): pairing both ends, and verifying the chains. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/flows_query.h"
#include "crypto/crypto.h"

/* ---- pairing ---- */

struct collect {
	struct store_flow_total *v;
	size_t n, cap;
};

static int collect_one(void *arg, const struct store_flow_total *t)
{
	struct collect *c = arg;

	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 256;
		struct store_flow_total *v;

		if (c->n >= FLOWS_QUERY_MAX)
			return -E2BIG;
		v = realloc(c->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = *t;
	return 0;
}

/* An end of a flow: address, then port in network order, so memcmp orders them. */
static void end_of(const uint8_t addr[16], uint16_t port, uint8_t ret[18])
{
	memcpy(ret, addr, 16);
	ret[16] = (uint8_t)(port >> 8);
	ret[17] = (uint8_t)port;
}

/* Whether the reporting end (src) is the lower of the two: the flow's key puts it first. */
static bool src_is_low(const struct flowbatch_record *r)
{
	uint8_t s[18], d[18];

	end_of(r->src, r->src_port, s);
	end_of(r->dst, r->dst_port, d);
	return memcmp(s, d, sizeof(s)) <= 0;
}

/* The flow both ends share: tailnet, protocol, ICMP type and the two ends, lower first. */
static int flow_cmp(const struct store_flow_total *x, const struct store_flow_total *y)
{
	uint8_t xl[18], xh[18], yl[18], yh[18];
	int c;

	if (x->tailnet_id != y->tailnet_id)
		return x->tailnet_id < y->tailnet_id ? -1 : 1;
	if (x->r.proto != y->r.proto)
		return x->r.proto < y->r.proto ? -1 : 1;
	if (x->r.icmp_type != y->r.icmp_type)
		return x->r.icmp_type < y->r.icmp_type ? -1 : 1;
	if (src_is_low(&x->r)) {
		end_of(x->r.src, x->r.src_port, xl);
		end_of(x->r.dst, x->r.dst_port, xh);
	} else {
		end_of(x->r.dst, x->r.dst_port, xl);
		end_of(x->r.src, x->r.src_port, xh);
	}
	if (src_is_low(&y->r)) {
		end_of(y->r.src, y->r.src_port, yl);
		end_of(y->r.dst, y->r.dst_port, yh);
	} else {
		end_of(y->r.dst, y->r.dst_port, yl);
		end_of(y->r.src, y->r.src_port, yh);
	}
	c = memcmp(xl, yl, sizeof(xl));
	return c ? c : memcmp(xh, yh, sizeof(xh));
}

static int total_cmp(const void *a, const void *b)
{
	const struct store_flow_total *x = a, *y = b;
	int c = flow_cmp(x, y);

	if (c)
		return c;
	return x->node_id < y->node_id ? -1 : x->node_id > y->node_id;
}

static void side_of(const struct store_flow_total *t, struct flows_side *ret)
{
	static const uint8_t none[FLOWBATCH_KEY_LEN];

	ret->no_peer = !memcmp(t->r.peer_key, none, sizeof(none));
	ret->tx_packets = t->r.tx_packets;
	ret->tx_bytes = t->r.tx_bytes;
	ret->rx_packets = t->r.rx_packets;
	ret->rx_bytes = t->r.rx_bytes;
}

int flows_query(struct store *st, uint64_t node_id, uint64_t since_ns,
		int (*fn)(void *arg, const struct flows_pairing *p), void *arg)
{
	struct collect c = {0};
	size_t i, j, k;
	int r;

	/* Every node's reports: the other end of node_id's flows is another node's. */
	r = store_flow_totals(st, 0, since_ns, collect_one, &c);
	if (r < 0)
		goto out;
	if (c.n)
		qsort(c.v, c.n, sizeof(*c.v), total_cmp);
	for (i = 0; i < c.n; i = j) {
		struct flows_pairing p = {0};
		struct flows_side sa, sb;
		bool mine = !node_id;

		for (j = i + 1; j < c.n && flow_cmp(&c.v[i], &c.v[j]) == 0; j++)
			;
		for (k = i; k < j; k++)
			if (c.v[k].node_id == node_id)
				mine = true;
		if (!mine)
			continue;
		p.a = &c.v[i];
		for (k = i; k < j; k++)
			if (node_id && c.v[k].node_id == node_id) {
				p.a = &c.v[k];
				break;
			}
		if (j - i == 1) {
			side_of(p.a, &sa);
			p.verdict = flows_pair(&sa, NULL);
		} else {
			p.b = p.a == &c.v[i] ? &c.v[i + 1] : &c.v[i];
			/* Two reports from one side (or more than two): someone speaks for another.
			 */
			p.ambiguous = j - i > 2 || src_is_low(&p.a->r) == src_is_low(&p.b->r) ||
				      p.a->node_id == p.b->node_id;
			side_of(p.a, &sa);
			side_of(p.b, &sb);
			p.verdict = p.ambiguous ? FLOWS_MISMATCH : flows_pair(&sa, &sb);
		}
		r = fn(arg, &p);
		if (r < 0)
			goto out;
	}
	r = 0;
out:
	free(c.v);
	return r;
}

/* ---- verification ---- */

struct walk {
	struct flows_verify *v;
	const struct flows_anchor *anchors; /* ascending node_id */
	size_t n_anchors;
	uint64_t anchor_id; /* the node's anchor's batch row: no row of the node at or below it */
	uint64_t node_id;   /* the node whose chain is being walked; 0 before the first */
	uint64_t last_seq;
	uint32_t last_dropped;
	uint64_t missing;	 /* batches missing in this chain so far */
	uint64_t gap_lo, gap_hi; /* the first gap */
	uint8_t last_hash[FLOWBATCH_HASH_LEN];
	uint8_t key[FLOWBATCH_KEY_LEN];
};

static int bad(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(struct walk *w, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(w->v->why, sizeof(w->v->why), fmt, ap);
	va_end(ap);
	w->v->bad = true;
	return -ECANCELED;
}

static bool record_equal(const struct flowbatch_record *x, const struct flowbatch_record *y)
{
	return x->proto == y->proto && x->icmp_type == y->icmp_type && x->flags == y->flags &&
	       !memcmp(x->src, y->src, 16) && !memcmp(x->dst, y->dst, 16) &&
	       x->src_port == y->src_port && x->dst_port == y->dst_port &&
	       !memcmp(x->peer_key, y->peer_key, FLOWBATCH_KEY_LEN) &&
	       x->tx_packets == y->tx_packets && x->tx_bytes == y->tx_bytes &&
	       x->rx_packets == y->rx_packets && x->rx_bytes == y->rx_bytes &&
	       x->first_ns == y->first_ns && x->last_ns == y->last_ns && x->denied == y->denied;
}

/*
 * A chain's end: its gaps must be batches the node dropped from its spool, as its
 * last batch counts them (signed). A batch dropped from the spool is an older one
 * than the batch that first counts it, so the count is checked over the chain.
 */
static int chain_end(struct walk *w)
{
	if (w->missing <= w->last_dropped)
		return 0;
	return w->gap_lo == w->gap_hi
		   ? bad(w, "node %" PRIu64 " flow batch %" PRIu64 " missing (deleted)", w->node_id,
			 w->gap_lo)
		   : bad(w,
			 "node %" PRIu64 " flow batches %" PRIu64 "-%" PRIu64 " missing (deleted)",
			 w->node_id, w->gap_lo, w->gap_hi);
}

static const struct flows_anchor *anchor_of(const struct walk *w, uint64_t node_id)
{
	size_t lo = 0, hi = w->n_anchors;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (w->anchors[mid].node_id == node_id)
			return &w->anchors[mid];
		if (w->anchors[mid].node_id < node_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* A chain starts at seq 1, or after the anchor pruning left (its last removed batch). */
static void chain_start(struct walk *w, const struct flows_anchor *a, const uint8_t *key)
{
	w->last_seq = a ? a->seq : 0;
	w->last_dropped = a ? a->batches_dropped : 0;
	w->missing = 0;
	if (a)
		memcpy(w->last_hash, a->hash, sizeof(w->last_hash));
	else
		memset(w->last_hash, 0, sizeof(w->last_hash));
	if (a)
		memcpy(w->key, a->audit_key, sizeof(w->key));
	else if (key)
		memcpy(w->key, key, sizeof(w->key));
}

static int walk_one(void *arg, const struct store_flow_row *row)
{
	struct walk *w = arg;
	struct flowbatch b;
	struct flowbatch_record rec;
	uint64_t missing;

	if (row->node_id != w->node_id) {
		/* A node's first batch: its chain goes on from its anchor, if pruned. */
		const struct flows_anchor *a = anchor_of(w, row->node_id);

		if (chain_end(w) < 0)
			return -ECANCELED;
		w->v->nodes++;
		w->node_id = row->node_id;
		w->anchor_id = a ? a->batch_id : 0;
		chain_start(w, a, row->audit_key);
	}
	if (row->audit_key && memcmp(row->audit_key, w->key, sizeof(w->key)) != 0) {
		/* The first batch under a new audit key: a new chain. */
		if (chain_end(w) < 0)
			return -ECANCELED;
		chain_start(w, NULL, row->audit_key);
	}
	if (row->id <= w->anchor_id)
		return bad(w,
			   "node %" PRIu64 " flow batch %" PRIu64
			   " is older than the node's pruning anchor (inserted, or a prune undone)",
			   row->node_id, row->seq);
	if (!row->audit_key || flowbatch_peek(row->batch, row->len, &b) < 0 ||
	    flowbatch_verify(row->batch, row->len, row->audit_key) < 0 ||
	    b.node_id != row->node_id || b.seq != row->seq)
		return bad(w,
			   "node %" PRIu64 " flow batch %" PRIu64
			   " does not match its signature (edited)",
			   row->node_id, row->seq);
	if (b.seq <= w->last_seq)
		return bad(w,
			   "node %" PRIu64 " flow batch %" PRIu64 " comes after batch %" PRIu64
			   " (reordered or inserted)",
			   row->node_id, b.seq, w->last_seq);
	if (b.batches_dropped < w->last_dropped)
		return bad(w,
			   "node %" PRIu64 " flow batch %" PRIu64
			   " counts fewer dropped batches than the one before it",
			   row->node_id, b.seq);
	missing = b.seq - w->last_seq - 1;
	if (missing && !w->missing) {
		w->gap_lo = w->last_seq + 1;
		w->gap_hi = b.seq - 1;
	}
	w->missing += missing;
	if (!missing && !crypto_equal(b.prev_hash, w->last_hash, FLOWBATCH_HASH_LEN))
		return bad(w,
			   "node %" PRIu64 " flow batch %" PRIu64 " does not link to batch %" PRIu64
			   "%s",
			   row->node_id, b.seq, w->last_seq,
			   row->flags & FLOWS_F_CHAIN_BROKEN
			       ? " (so it came from the node: flagged at admission)"
			       : " (batch edited, or the chain rewritten from there)");
	for (unsigned i = 0; i < b.n_records; i++) {
		if (i >= row->n_records || row->idx[i] != i)
			return bad(w,
				   "node %" PRIu64 " flow batch %" PRIu64
				   ": record %u is missing (deleted)",
				   row->node_id, b.seq, i);
		flowbatch_record_get(row->batch, i, &rec);
		if (!record_equal(&rec, &row->records[i]))
			return bad(w,
				   "node %" PRIu64 " flow batch %" PRIu64
				   ": record %u does not match the signed batch (edited)",
				   row->node_id, b.seq, i);
	}
	if (row->n_records > b.n_records)
		return bad(w,
			   "node %" PRIu64 " flow batch %" PRIu64
			   ": %u records stored, the batch has %u (inserted)",
			   row->node_id, b.seq, row->n_records, b.n_records);
	w->last_seq = b.seq;
	w->last_dropped = b.batches_dropped;
	flowbatch_hash(row->batch, row->len, w->last_hash);
	w->v->batches++;
	w->v->records += b.n_records;
	return 0;
}

/* ---- retention anchors ---- */

struct anchors {
	struct flows_anchor *v;
	size_t n, cap;
	struct flows_anchor_digest d;
};

static int anchor_add(void *arg, const struct flows_anchor *a)
{
	struct anchors *as = arg;

	if (as->n == as->cap) {
		size_t cap = as->cap ? as->cap * 2 : 64;
		struct flows_anchor *v = realloc(as->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		as->v = v;
		as->cap = cap;
	}
	as->v[as->n++] = *a;
	flows_anchor_digest_add(&as->d, a);
	return 0;
}

/* The newest flows.prune entry's anchors digest. */
struct last_prune {
	uint64_t seq;
	char digest[FLOWS_ANCHOR_DIGEST_HEX];
};

static int prune_entry(void *arg, const struct audit_entry *e)
{
	struct last_prune *lp = arg;
	json_t *j;
	const char *d;

	if (strcmp(e->action, "flows.prune") != 0)
		return 0;
	lp->seq = e->seq;
	lp->digest[0] = '\0';
	j = json_loads(e->after, 0, NULL);
	d = json_string_value(json_object_get(j, "anchors"));
	if (d)
		snprintf(lp->digest, sizeof(lp->digest), "%s", d);
	json_decref(j);
	return 0;
}

/*
 * The anchors against the digest the newest prune wrote into the configuration audit
 * log (whose own chain `audit verify` checks): an anchor edited, deleted or added shows.
 */
static int anchors_check(struct store *st, struct anchors *as, struct walk *w)
{
	struct last_prune lp = {0};
	char digest[FLOWS_ANCHOR_DIGEST_HEX];
	int r;

	flows_anchor_digest_init(&as->d);
	r = store_flow_anchors(st, anchor_add, as);
	if (r < 0)
		return r;
	r = store_audit_read(st, 0, INT64_MIN, 0, prune_entry, &lp);
	if (r < 0)
		return r;
	flows_anchor_digest_final(&as->d, digest);
	if (!lp.seq)
		return as->n ? bad(w,
				   "%zu flow-log anchors but no flows.prune entry in the audit "
				   "log (anchors inserted, or the entry deleted)",
				   as->n)
			     : 0;
	if (strcmp(lp.digest, digest) != 0)
		return bad(w,
			   "the flow-log anchors do not match the digest in audit entry %" PRIu64
			   " (flows.prune): an anchor edited, deleted or inserted",
			   lp.seq);
	return 0;
}

int flows_verify(struct store *st, struct flows_verify *ret)
{
	struct anchors as = {0};
	struct walk w = {.v = ret};
	int r;

	memset(ret, 0, sizeof(*ret));
	r = anchors_check(st, &as, &w);
	if (r < 0)
		goto out;
	w.anchors = as.v;
	w.n_anchors = as.n;
	ret->anchors = as.n;
	r = store_flow_batches(st, 0, 0, walk_one, &w);
	if (r == 0)
		chain_end(&w);
out:
	free(as.v);
	if (r == -ECANCELED && ret->bad)
		return 0;
	return r;
}
