/* SPDX-License-Identifier: MIT */
/*
 * The rule compiler: a struct netmap_filter (rules of sources, destinations with port
 * ranges, protocols) into a lookup that answers "does some rule admit this new flow" in two
 * binary searches.
 *
 * Per address family, every IP protocol gets a bucket (those named by a rule, and TCP, UDP,
 * SCTP, DCCP, UDP-Lite, ICMP, ICMPv6 always); one more takes every other protocol, where
 * only rules for any protocol apply. In a bucket, the destination port ranges of the rules
 * that apply cut 0-65535 into disjoint segments; in each segment, per destination prefix of
 * the rules covering it, the union of those rules' sources is kept as sorted, merged
 * address ranges. Protocols without ports have one segment.
 *
 * The compiled size is segments x destination prefixes x source ranges; it is bounded
 * (FILTER_COMPILED_MAX) and a filter beyond it is refused (the node keeps its rules).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "filter/filter.h"
#include "filter/internal.h"
#include "proto/netmap.h"

enum { FAM_V4, FAM_V6, FAM_N };

#define BUCKETS_MAX 257

struct range {
	u128 lo, hi; /* inclusive */
};

struct dgroup {
	u128 dlo, dhi;	     /* the destination prefix as a range */
	uint32_t r_off, r_n; /* source ranges */
};

struct seg {
	uint32_t port_lo; /* up to the next segment's port_lo */
	uint32_t g_off, g_n;
};

struct bucket {
	uint32_t s_off, s_n;
	/*
	 * With more than PORT_INDEX_MIN segments: pidx + p_off, for each block of 256 ports
	 * b (0-256), the last segment starting at or below port 256 b, so that a lookup
	 * searches only the segments starting within its port's block (a binary search over
	 * all of 1,700 segments was 11 dependent loads, a third of a new flow's cost). NIL
	 * otherwise.
	 */
	uint32_t p_off;
};

#define PORT_BLOCKS 256
#define PORT_INDEX_MIN 16
#define NO_INDEX UINT32_MAX

struct famtab {
	uint16_t proto_bucket[256];
	unsigned n_buckets;
	struct bucket buckets[BUCKETS_MAX];
};

struct filter_rules {
	unsigned n_rules;
	struct famtab fam[FAM_N];
	struct seg *segs;
	struct dgroup *groups;
	struct range *ranges;
	uint32_t *pidx;
	uint32_t n_segs, n_groups, n_ranges, n_pidx;
	uint32_t cap_segs, cap_groups, cap_ranges, cap_pidx;
};

bool filter_proto_has_ports(uint8_t proto)
{
	return proto == 6 || proto == 17 || proto == 33 || proto == 132 || proto == 136;
}

u128 filter_addr_u128(int family, const uint8_t *a)
{
	u128 v = 0;
	unsigned i, n = family == AF_INET ? 4 : 16;

	for (i = 0; i < n; i++)
		v = (v << 8) | a[i];
	return v;
}

static void prefix_range(const struct netmap_prefix *p, struct range *ret)
{
	unsigned bits = p->family == AF_INET ? 32 : 128;
	u128 a = filter_addr_u128(p->family, p->addr);
	unsigned hbits = p->len >= bits ? 0 : bits - p->len;
	u128 host = hbits == 128 ? ~(u128)0 : (((u128)1 << hbits) - 1);

	if (bits == 32)
		host &= 0xffffffffu;
	ret->lo = a & ~host;
	ret->hi = ret->lo | host;
	if (bits == 32) {
		ret->lo &= 0xffffffffu;
		ret->hi &= 0xffffffffu;
	}
}

static int cmp_range(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	if (x->lo != y->lo)
		return x->lo < y->lo ? -1 : 1;
	return 0;
}

/* Sorts and merges r[0..n) in place (adjacent ranges join); returns the new count. */
static uint32_t ranges_merge(struct range *r, uint32_t n)
{
	uint32_t i, out = 0;

	if (!n)
		return 0;
	qsort(r, n, sizeof(*r), cmp_range);
	for (i = 1; i < n; i++) {
		if (r[i].lo <= r[out].hi || (r[out].hi != ~(u128)0 && r[i].lo == r[out].hi + 1)) {
			if (r[i].hi > r[out].hi)
				r[out].hi = r[i].hi;
		} else {
			r[++out] = r[i];
		}
	}
	return out + 1;
}

static int grow(void **p, uint32_t *cap, uint32_t need, size_t size)
{
	uint32_t c = *cap ? *cap : 16;
	void *q;

	if (need <= *cap)
		return 0;
	if (need > FILTER_COMPILED_MAX)
		return -E2BIG;
	while (c < need)
		c *= 2;
	q = realloc(*p, (size_t)c * size);
	if (!q)
		return -ENOMEM;
	*p = q;
	*cap = c;
	return 0;
}

struct atom {
	uint32_t first, last;
	uint32_t rule;
	struct range dst;
};

static int cmp_atom_first(const void *a, const void *b)
{
	const struct atom *x = a, *y = b;

	return x->first < y->first ? -1 : x->first > y->first;
}

static int cmp_atom_dst(const void *a, const void *b)
{
	const struct atom *x = a, *y = b;

	if (x->dst.lo != y->dst.lo)
		return x->dst.lo < y->dst.lo ? -1 : 1;
	if (x->dst.hi != y->dst.hi)
		return x->dst.hi < y->dst.hi ? -1 : 1;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Work space of one compile. */
struct ctx {
	const struct netmap_filter *nf;
	struct filter_rules *r;
	/* Per rule and family: its merged sources, src_r[src_off[rule]..+src_n[rule]). */
	struct range *src_r;
	uint32_t *src_off, *src_n;
	struct atom *atoms, *active;
	uint32_t *bounds;
	struct range *tmp;
	uint32_t cap_tmp;
};

static bool rule_has_proto(const struct netmap_filter_rule *rule, int proto)
{
	unsigned i;

	if (!rule->n_protos)
		return true;
	if (proto < 0) /* the other-protocols bucket */
		return false;
	for (i = 0; i < rule->n_protos; i++)
		if (rule->protos[i] == proto)
			return true;
	return false;
}

static void rule_sources(struct ctx *c, int family)
{
	const struct netmap_filter *nf = c->nf;
	uint32_t i, j, n = 0;

	for (i = 0; i < nf->n_rules; i++) {
		const struct netmap_filter_rule *rule = &nf->rules[i];

		c->src_off[i] = n;
		for (j = 0; j < rule->n_src; j++) {
			const struct netmap_prefix *p = &nf->srcs[rule->src_off + j];

			if (p->family == family)
				prefix_range(p, &c->src_r[n++]);
		}
		c->src_n[i] = ranges_merge(&c->src_r[c->src_off[i]], n - c->src_off[i]);
		n = c->src_off[i] + c->src_n[i];
	}
}

/* One segment starting at port_lo with the atoms covering it (c->active[0..n)). */
static int segment_emit(struct ctx *c, uint32_t port_lo, uint32_t n)
{
	struct filter_rules *r = c->r;
	struct seg *s;
	uint32_t i = 0, j, k;
	int e;

	e = grow((void **)&r->segs, &r->cap_segs, r->n_segs + 1, sizeof(*r->segs));
	if (e < 0)
		return e;
	s = &r->segs[r->n_segs++];
	s->port_lo = port_lo;
	s->g_off = r->n_groups;
	s->g_n = 0;
	qsort(c->active, n, sizeof(*c->active), cmp_atom_dst);
	while (i < n) {
		struct dgroup *g;
		uint32_t m = 0;

		for (j = i; j < n && !cmp_atom_dst(&c->active[i], &c->active[j]); j++) {
			uint32_t rule = c->active[j].rule;

			e = grow((void **)&c->tmp, &c->cap_tmp, m + c->src_n[rule],
				 sizeof(*c->tmp));
			if (e < 0)
				return e;
			for (k = 0; k < c->src_n[rule]; k++)
				c->tmp[m++] = c->src_r[c->src_off[rule] + k];
		}
		m = ranges_merge(c->tmp, m);
		e = grow((void **)&r->groups, &r->cap_groups, r->n_groups + 1, sizeof(*r->groups));
		if (e < 0)
			return e;
		e = grow((void **)&r->ranges, &r->cap_ranges, r->n_ranges + m, sizeof(*r->ranges));
		if (e < 0)
			return e;
		g = &r->groups[r->n_groups++];
		g->dlo = c->active[i].dst.lo;
		g->dhi = c->active[i].dst.hi;
		g->r_off = r->n_ranges;
		g->r_n = m;
		memcpy(&r->ranges[r->n_ranges], c->tmp, m * sizeof(*c->tmp));
		r->n_ranges += m;
		s->g_n++;
		i = j;
	}
	return 0;
}

/* The bucket's port index (struct bucket), if it has enough segments to want one. */
static int port_index(struct filter_rules *r, struct bucket *b)
{
	const struct seg *segs = r->segs + b->s_off;
	uint32_t blk, s = 0, *idx;
	int e;

	if (b->s_n <= PORT_INDEX_MIN)
		return 0;
	e = grow((void **)&r->pidx, &r->cap_pidx, r->n_pidx + PORT_BLOCKS + 1, sizeof(*r->pidx));
	if (e < 0)
		return e;
	b->p_off = r->n_pidx;
	idx = r->pidx + b->p_off;
	for (blk = 0; blk <= PORT_BLOCKS; blk++) {
		while (s + 1 < b->s_n && segs[s + 1].port_lo <= blk * 256)
			s++;
		idx[blk] = s;
	}
	r->n_pidx += PORT_BLOCKS + 1;
	return 0;
}

/* The bucket of protocol proto (-1: every protocol without a bucket of its own). */
static int bucket_build(struct ctx *c, int family, int proto, struct bucket *b)
{
	const struct netmap_filter *nf = c->nf;
	bool ports = proto >= 0 && filter_proto_has_ports((uint8_t)proto);
	uint32_t i, j, n_atoms = 0, n_bounds = 0, n_active = 0, next = 0;
	int e;

	for (i = 0; i < nf->n_rules; i++) {
		const struct netmap_filter_rule *rule = &nf->rules[i];

		if (!c->src_n[i] || !rule_has_proto(rule, proto))
			continue;
		for (j = 0; j < rule->n_dst; j++) {
			const struct netmap_filter_dst *d = &nf->dsts[rule->dst_off + j];
			struct atom *a;

			if (d->prefix.family != family)
				continue;
			a = &c->atoms[n_atoms++];
			a->first = ports ? d->port_first : 0;
			a->last = ports ? d->port_last : 65535;
			a->rule = i;
			prefix_range(&d->prefix, &a->dst);
		}
	}
	b->s_off = c->r->n_segs;
	b->s_n = 0;
	b->p_off = NO_INDEX;
	if (!n_atoms)
		return 0;
	qsort(c->atoms, n_atoms, sizeof(*c->atoms), cmp_atom_first);
	c->bounds[n_bounds++] = 0;
	for (i = 0; i < n_atoms; i++) {
		c->bounds[n_bounds++] = c->atoms[i].first;
		if (c->atoms[i].last < 65535)
			c->bounds[n_bounds++] = c->atoms[i].last + 1;
	}
	qsort(c->bounds, n_bounds, sizeof(*c->bounds), cmp_u32);
	for (i = 0; i < n_bounds; i++) {
		uint32_t port = c->bounds[i];

		if (i && port == c->bounds[i - 1])
			continue;
		/* Sweep: atoms starting by here join, those that ended leave. */
		while (next < n_atoms && c->atoms[next].first <= port)
			c->active[n_active++] = c->atoms[next++];
		for (j = 0; j < n_active;) {
			if (c->active[j].last < port)
				c->active[j] = c->active[--n_active];
			else
				j++;
		}
		e = segment_emit(c, port, n_active);
		if (e < 0)
			return e;
		b->s_n++;
	}
	return ports ? port_index(c->r, b) : 0;
}

static int family_build(struct ctx *c, unsigned fi)
{
	static const uint8_t always[] = {1, 6, 17, 33, 58, 132, 136};
	int family = fi == FAM_V4 ? AF_INET : AF_INET6;
	struct famtab *t = &c->r->fam[fi];
	bool named[256] = {false};
	unsigned i, j;
	int e;

	rule_sources(c, family);
	for (i = 0; i < sizeof(always); i++)
		named[always[i]] = true;
	for (i = 0; i < c->nf->n_rules; i++)
		for (j = 0; j < c->nf->rules[i].n_protos; j++)
			named[c->nf->rules[i].protos[j]] = true;
	/* Bucket 0: every protocol without its own. */
	e = bucket_build(c, family, -1, &t->buckets[0]);
	if (e < 0)
		return e;
	t->n_buckets = 1;
	for (i = 0; i < 256; i++) {
		t->proto_bucket[i] = 0;
		if (!named[i])
			continue;
		e = bucket_build(c, family, (int)i, &t->buckets[t->n_buckets]);
		if (e < 0)
			return e;
		t->proto_bucket[i] = (uint16_t)t->n_buckets++;
	}
	return 0;
}

int filter_rules_compile(const struct netmap_filter *nf, struct filter_rules **ret)
{
	struct ctx c = {.nf = nf};
	size_t n_atoms = 1, n_src = 1;
	unsigned fi, i;
	int e;

	if (!netmap_filter_valid(nf))
		return -EINVAL;
	/* Rules may share sources and destinations: count what each rule names. */
	for (i = 0; i < nf->n_rules; i++) {
		n_src += nf->rules[i].n_src;
		n_atoms += nf->rules[i].n_dst;
	}
	if (n_src > FILTER_COMPILED_MAX || n_atoms > FILTER_COMPILED_MAX)
		return -E2BIG;
	c.r = calloc(1, sizeof(*c.r));
	c.src_r = calloc(n_src, sizeof(*c.src_r));
	c.src_off = calloc((size_t)nf->n_rules + 1, sizeof(*c.src_off));
	c.src_n = calloc((size_t)nf->n_rules + 1, sizeof(*c.src_n));
	c.atoms = calloc(n_atoms, sizeof(*c.atoms));
	c.active = calloc(n_atoms, sizeof(*c.active));
	c.bounds = calloc(2 * n_atoms + 1, sizeof(*c.bounds));
	e = -ENOMEM;
	if (!c.r || !c.src_r || !c.src_off || !c.src_n || !c.atoms || !c.active || !c.bounds)
		goto out;
	c.r->n_rules = nf->n_rules;
	for (fi = 0; fi < FAM_N; fi++) {
		e = family_build(&c, fi);
		if (e < 0)
			goto out;
	}
	*ret = c.r;
	c.r = NULL;
	e = 0;
out:
	filter_rules_free(c.r);
	free(c.src_r);
	free(c.src_off);
	free(c.src_n);
	free(c.atoms);
	free(c.active);
	free(c.bounds);
	free(c.tmp);
	return e;
}

void filter_rules_free(struct filter_rules *r)
{
	if (!r)
		return;
	free(r->segs);
	free(r->groups);
	free(r->ranges);
	free(r->pidx);
	free(r);
}

unsigned filter_rules_count(const struct filter_rules *r)
{
	return r ? r->n_rules : 0;
}

static bool ranges_contain(const struct range *r, uint32_t n, u128 a)
{
	uint32_t lo = 0, hi = n;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (a < r[mid].lo)
			hi = mid;
		else if (a > r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

bool filter_rules_match_u128(const struct filter_rules *r, int family, uint8_t proto, u128 src,
			     u128 dst, uint16_t dport)
{
	const struct famtab *t = &r->fam[family == AF_INET ? FAM_V4 : FAM_V6];
	const struct bucket *b = &t->buckets[t->proto_bucket[proto]];
	const struct seg *segs;
	uint32_t lo = 0, hi = b->s_n, i;
	uint32_t port = filter_proto_has_ports(proto) ? dport : 0;

	/* Before any pointer arithmetic: a filter without segments has no arrays (NULL + 0 is
	 * undefined, found by fuzz_filter). */
	if (!hi)
		return false;
	segs = r->segs + b->s_off;
	if (b->p_off != NO_INDEX) {
		/* The answer lies between the last segments starting by this block and the next. */
		lo = r->pidx[b->p_off + port / 256];
		hi = r->pidx[b->p_off + port / 256 + 1] + 1;
	}
	/* The last segment starting at or below port (the first starts at 0). */
	while (hi - lo > 1) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (segs[mid].port_lo <= port)
			lo = mid;
		else
			hi = mid;
	}
	for (i = 0; i < segs[lo].g_n; i++) {
		const struct dgroup *g = &r->groups[segs[lo].g_off + i];

		if (g->r_n && dst >= g->dlo && dst <= g->dhi &&
		    ranges_contain(r->ranges + g->r_off, g->r_n, src))
			return true;
	}
	return false;
}

bool filter_rules_match(const struct filter_rules *r, int family, uint8_t proto, const uint8_t *src,
			const uint8_t *dst, uint16_t dport)
{
	return filter_rules_match_u128(r, family, proto, filter_addr_u128(family, src),
				       filter_addr_u128(family, dst), dport);
}
