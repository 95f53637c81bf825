/* SPDX-License-Identifier: MIT */
/*
 * Netmap bookkeeping on the node side: a full map plus deltas. A delta is
 * applied all or nothing: everything that can fail (validation, allocation)
 * happens before the map is touched, so a node that gets a bad delta keeps a
 * consistent map (and its cache) and can ask for a full one.
 */
#include <errno.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>

#include "proto/netmap.h"

void netmap_free(struct netmap *nm)
{
	if (!nm)
		return;
	free(nm->peers);
	netmap_filter_free(nm->filter);
	netmap_reach_free(nm->reach);
	free(nm);
}

void netmap_delta_free(struct netmap_delta *d)
{
	if (!d)
		return;
	free(d->added);
	free(d->changed);
	free(d->removed);
	free(d->endpoints);
	free(d->online);
	free(d->relay_map);
	netmap_filter_free(d->filter);
	free(d->machine_cert);
	netmap_reach_free(d->reach);
	netmap_reach_patch_free(d->reach_patch);
	free(d);
}

void netmap_reach_free(struct netmap_reach *r)
{
	if (!r)
		return;
	free(r->sets);
	free(r->peers);
	free(r->ports);
	free(r);
}

void netmap_filter_free(struct netmap_filter *f)
{
	if (!f)
		return;
	free(f->rules);
	free(f->srcs);
	free(f->dsts);
	free(f);
}

bool netmap_flow_log_valid(const struct netmap_flow_log *fl)
{
	return fl->set && fl->interval_ms >= NETMAP_FLOW_LOG_INTERVAL_MIN_MS &&
	       fl->interval_ms <= NETMAP_FLOW_LOG_INTERVAL_MAX_MS;
}

/* malloc(0) may return NULL: one spare element keeps "NULL" meaning "out of memory". */
static void *array_dup(const void *p, size_t n, size_t size)
{
	void *q = malloc((n + 1) * size);

	if (q && n)
		memcpy(q, p, n * size);
	return q;
}

struct netmap_filter *netmap_filter_dup(const struct netmap_filter *f)
{
	struct netmap_filter *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->n_rules = f->n_rules;
	c->n_srcs = f->n_srcs;
	c->n_dsts = f->n_dsts;
	c->rules = array_dup(f->rules, f->n_rules, sizeof(*f->rules));
	c->srcs = array_dup(f->srcs, f->n_srcs, sizeof(*f->srcs));
	c->dsts = array_dup(f->dsts, f->n_dsts, sizeof(*f->dsts));
	if (!c->rules || !c->srcs || !c->dsts) {
		netmap_filter_free(c);
		return NULL;
	}
	return c;
}

struct netmap_reach *netmap_reach_dup(const struct netmap_reach *r)
{
	struct netmap_reach *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->n_sets = r->n_sets;
	c->n_peers = r->n_peers;
	c->n_ports = r->n_ports;
	c->sets = array_dup(r->sets, r->n_sets, sizeof(*r->sets));
	c->peers = array_dup(r->peers, r->n_peers, sizeof(*r->peers));
	c->ports = array_dup(r->ports, r->n_ports, sizeof(*r->ports));
	if (!c->sets || !c->peers || !c->ports) {
		netmap_reach_free(c);
		return NULL;
	}
	return c;
}

bool netmap_reach_valid(const struct netmap_reach *r)
{
	if (r->n_sets > NETMAP_REACH_SETS_MAX || r->n_peers > NETMAP_MAX_PEERS ||
	    r->n_ports > NETMAP_REACH_PORTS_MAX)
		return false;
	for (unsigned i = 0; i < r->n_ports; i++)
		if (!r->ports[i].proto || r->ports[i].first > r->ports[i].last)
			return false;
	for (unsigned i = 0; i < r->n_sets; i++) {
		const struct netmap_reach_set *s = &r->sets[i];

		/* One form for "every peer": the only set, no ids beside it. */
		if (s->all ? s->n_peers || r->n_sets != 1 || r->n_peers : !s->n_peers)
			return false;
		if (s->peer_off > r->n_peers || s->n_peers > r->n_peers - s->peer_off ||
		    !s->n_ports || s->port_off > r->n_ports ||
		    s->n_ports > r->n_ports - s->port_off)
			return false;
		/* One form per set: by protocol, then port, ranges of a protocol apart. */
		for (uint32_t k = 1; k < s->n_ports; k++) {
			const struct netmap_reach_port *a = &r->ports[s->port_off + k - 1];
			const struct netmap_reach_port *b = &r->ports[s->port_off + k];

			if (a->proto > b->proto || (a->proto == b->proto && a->last >= b->first))
				return false;
		}
	}
	return true;
}

bool netmap_reach_equal(const struct netmap_reach *a, const struct netmap_reach *b)
{
	if (a == b)
		return true;
	if (!a || !b || a->n_sets != b->n_sets || a->n_peers != b->n_peers ||
	    a->n_ports != b->n_ports)
		return false;
	/* Field by field: the structs have padding a compound literal need not zero. */
	for (unsigned i = 0; i < a->n_sets; i++)
		if (a->sets[i].peer_off != b->sets[i].peer_off ||
		    a->sets[i].n_peers != b->sets[i].n_peers ||
		    a->sets[i].port_off != b->sets[i].port_off ||
		    a->sets[i].n_ports != b->sets[i].n_ports || a->sets[i].all != b->sets[i].all)
			return false;
	for (unsigned i = 0; i < a->n_ports; i++)
		if (a->ports[i].proto != b->ports[i].proto ||
		    a->ports[i].first != b->ports[i].first || a->ports[i].last != b->ports[i].last)
			return false;
	return !a->n_peers || !memcmp(a->peers, b->peers, a->n_peers * sizeof(*a->peers));
}

const struct netmap_reach_set *netmap_reach_find(const struct netmap_reach *r, uint64_t id)
{
	if (!r)
		return NULL;
	for (unsigned i = 0; i < r->n_sets; i++) {
		if (r->sets[i].all)
			return &r->sets[i];
		for (uint32_t k = 0; k < r->sets[i].n_peers; k++)
			if (r->peers[r->sets[i].peer_off + k] == id)
				return &r->sets[i];
	}
	return NULL;
}

bool netmap_prefix_valid(const struct netmap_prefix *p)
{
	return (p->family == AF_INET && p->len <= 32) || (p->family == AF_INET6 && p->len <= 128);
}

bool netmap_filter_valid(const struct netmap_filter *f)
{
	unsigned i, j;

	if (f->n_rules > NETMAP_FILTER_RULES_MAX || f->n_srcs > NETMAP_FILTER_PREFIXES_MAX ||
	    f->n_dsts > NETMAP_FILTER_PREFIXES_MAX)
		return false;
	for (i = 0; i < f->n_srcs; i++)
		if (!netmap_prefix_valid(&f->srcs[i]))
			return false;
	for (i = 0; i < f->n_dsts; i++)
		if (!netmap_prefix_valid(&f->dsts[i].prefix) ||
		    f->dsts[i].port_first > f->dsts[i].port_last)
			return false;
	for (i = 0; i < f->n_rules; i++) {
		const struct netmap_filter_rule *r = &f->rules[i];

		if (!r->n_src || r->src_off > f->n_srcs || r->n_src > f->n_srcs - r->src_off ||
		    !r->n_dst || r->dst_off > f->n_dsts || r->n_dst > f->n_dsts - r->dst_off ||
		    r->n_protos > NETMAP_FILTER_PROTOS_MAX)
			return false;
		for (j = 0; j < r->n_protos; j++)
			if (!r->protos[j])
				return false;
	}
	return true;
}

const struct netmap_node *netmap_peer_find(const struct netmap *nm, uint64_t id)
{
	for (unsigned i = 0; i < nm->n_peers; i++)
		if (nm->peers[i].id == id)
			return &nm->peers[i];
	return NULL;
}

const struct netmap_relay_region *netmap_relay_region_find(const struct netmap_relay_map *rm,
							   uint32_t id)
{
	for (unsigned i = 0; i < rm->n_regions && i < NETMAP_RELAY_REGIONS_MAX; i++)
		if (rm->regions[i].id == id)
			return &rm->regions[i];
	return NULL;
}

/* fd7e:11e5:7a11::/48, NETMAP_ULA_PREFIX */
static const uint8_t ula[6] = {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11};

void netmap_ipv6_from_ipv4(uint8_t ret_v6[16], const uint8_t v4[4])
{
	memset(ret_v6, 0, 16);
	memcpy(ret_v6, ula, sizeof(ula));
	memcpy(ret_v6 + 12, v4, 4);
}

bool netmap_prefix_is_tailnet_host(const struct netmap_prefix *p)
{
	if (p->family == AF_INET)
		return p->len == 32 && p->addr[0] == 100 && (p->addr[1] & 0xc0) == 64;
	if (p->family == AF_INET6)
		return p->len == 128 && memcmp(p->addr, ula, sizeof(ula)) == 0;
	return false;
}

/* An id -> position index, sorted by id, so a delta costs O((n + k) log n), not O(n * k). */
struct slot {
	uint64_t id;
	unsigned idx;
};

static int slot_cmp(const void *a, const void *b)
{
	const struct slot *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void index_build(struct slot *ix, const struct netmap_node *nodes, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		ix[i].id = nodes[i].id;
		ix[i].idx = i;
	}
	qsort(ix, n, sizeof(*ix), slot_cmp);
}

static const struct slot *index_find(const struct slot *ix, unsigned n, uint64_t id)
{
	struct slot key = { .id = id };

	if (!n)
		return NULL;
	return bsearch(&key, ix, n, sizeof(*ix), slot_cmp);
}

static bool ids_contain(const uint64_t *ids, unsigned n, uint64_t id)
{
	return n && bsearch(&id, ids, n, sizeof(*ids), u64_cmp);
}

void netmap_reach_patch_free(struct netmap_reach_patch *p)
{
	if (!p)
		return;
	free(p->removed);
	netmap_reach_free(p->add);
	free(p);
}

struct netmap_reach_patch *netmap_reach_patch_dup(const struct netmap_reach_patch *p)
{
	struct netmap_reach_patch *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->n_removed = p->n_removed;
	c->removed = array_dup(p->removed, p->n_removed, sizeof(*p->removed));
	c->add = netmap_reach_dup(p->add);
	if (!c->removed || !c->add) {
		netmap_reach_patch_free(c);
		return NULL;
	}
	return c;
}

static bool reach_has_all(const struct netmap_reach *r)
{
	return r->n_sets && r->sets[0].all;
}

bool netmap_reach_patch_valid(const struct netmap_reach_patch *p)
{
	return p->n_removed <= NETMAP_MAX_PEERS && (p->removed || !p->n_removed) && p->add &&
	       netmap_reach_valid(p->add) && !reach_has_all(p->add);
}

/*
 * Lists rebuilt from their peers. Every set of the lists looked at gets a rank by its items
 * (equal items, equal rank; ranks in the server's order of sets), every peer an entry with
 * its set's rank, and a list is made from entries sorted by rank and id: the sets in rank order,
 * their peers ascending. Ranking sets first keeps the sorts of peers to integer compares, so a
 * hostile list of long item lists costs a sort of its sets, not one per peer.
 */
struct rsetref {
	const struct netmap_reach_port *it;
	uint32_t n;
	uint32_t idx; /* in the sets of all lists: a's, then b's */
};

struct rent {
	uint64_t id;
	uint32_t rank;
	uint32_t set; /* idx of its set: a peer listed twice counts with the first */
};

/* The server's order of sets (policy_view_reach): number of items, then the items. */
static int items_cmp(const struct rsetref *x, const struct rsetref *y)
{
	if (x->n != y->n)
		return x->n < y->n ? -1 : 1;
	for (uint32_t k = 0; k < x->n; k++) {
		int c = netmap_reach_port_cmp(&x->it[k], &y->it[k]);

		if (c)
			return c;
	}
	return 0;
}

static int cmp_rsetref(const void *a, const void *b)
{
	const struct rsetref *x = a, *y = b;
	int c = items_cmp(x, y);

	return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static int cmp_rent_id(const void *a, const void *b)
{
	const struct rent *x = a, *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return (x->set > y->set) - (x->set < y->set);
}

static int cmp_rent_rank(const void *a, const void *b)
{
	const struct rent *x = a, *y = b;

	if (x->rank != y->rank)
		return x->rank < y->rank ? -1 : 1;
	return (x->id > y->id) - (x->id < y->id);
}

/*
 * Ranks the sets of a and b (b may be NULL): rank[idx] for each set, rep[rank] one set of
 * that rank (its items). rank and rep hold a->n_sets + b->n_sets.
 */
static void rank_sets(const struct netmap_reach *a, const struct netmap_reach *b, uint32_t *rank,
		      struct rsetref *rep)
{
	const struct netmap_reach *l[2] = {a, b};
	size_t n = 0;
	uint32_t nr = 0;

	for (int w = 0; w < 2; w++)
		for (unsigned i = 0; l[w] && i < l[w]->n_sets; i++, n++)
			rep[n] = (struct rsetref){&l[w]->ports[l[w]->sets[i].port_off],
						  l[w]->sets[i].n_ports, (uint32_t)n};
	if (n)
		qsort(rep, n, sizeof(*rep), cmp_rsetref);
	for (size_t k = 0; k < n; k++) {
		if (k && items_cmp(&rep[k], &rep[k - 1]))
			nr++;
		rank[rep[k].idx] = nr;
		rep[nr] = rep[k];
	}
}

/* Entries of list r (sets numbered from base), appended to e unless their id is in drop. */
static size_t rent_add(struct rent *e, size_t n, const struct netmap_reach *r, uint32_t base,
		       const uint32_t *rank, const uint64_t *drop, size_t n_drop)
{
	for (unsigned i = 0; i < r->n_sets; i++)
		for (uint32_t k = 0; k < r->sets[i].n_peers; k++) {
			uint64_t id = r->peers[r->sets[i].peer_off + k];

			if (n_drop && bsearch(&id, drop, n_drop, sizeof(*drop), u64_cmp))
				continue;
			e[n++] = (struct rent){id, rank[base + i], base + i};
		}
	return n;
}

/* Sorted by id, a peer listed twice kept with its first set. The new count. */
static size_t rent_unique(struct rent *e, size_t n)
{
	size_t m = 0;

	if (n)
		qsort(e, n, sizeof(*e), cmp_rent_id);
	for (size_t k = 0; k < n; k++)
		if (!m || e[m - 1].id != e[k].id)
			e[m++] = e[k];
	return m;
}

/* The list of entries e (unique ids), sorted here by rank and id. 0, -EINVAL (caps), -ENOMEM. */
static int rent_build(struct rent *e, size_t n, const struct rsetref *rep,
		      struct netmap_reach **ret)
{
	struct netmap_reach *r = calloc(1, sizeof(*r));
	size_t n_sets = 0, n_ports = 0;

	if (!r)
		return -ENOMEM;
	if (n)
		qsort(e, n, sizeof(*e), cmp_rent_rank);
	for (size_t k = 0; k < n; k++)
		if (!k || e[k].rank != e[k - 1].rank) {
			n_sets++;
			n_ports += rep[e[k].rank].n;
		}
	if (n > NETMAP_MAX_PEERS || n_sets > NETMAP_REACH_SETS_MAX ||
	    n_ports > NETMAP_REACH_PORTS_MAX) {
		free(r);
		return -EINVAL;
	}
	r->sets = calloc(n_sets + 1, sizeof(*r->sets));
	r->peers = calloc(n + 1, sizeof(*r->peers));
	r->ports = calloc(n_ports + 1, sizeof(*r->ports));
	if (!r->sets || !r->peers || !r->ports) {
		netmap_reach_free(r);
		return -ENOMEM;
	}
	for (size_t k = 0; k < n; k++) {
		if (!k || e[k].rank != e[k - 1].rank) {
			const struct rsetref *q = &rep[e[k].rank];

			r->sets[r->n_sets++] = (struct netmap_reach_set){
			    .peer_off = r->n_peers, .port_off = r->n_ports, .n_ports = q->n};
			memcpy(&r->ports[r->n_ports], q->it, q->n * sizeof(*q->it));
			r->n_ports += q->n;
		}
		r->sets[r->n_sets - 1].n_peers++;
		r->peers[r->n_peers++] = e[k].id;
	}
	*ret = r;
	return 0;
}

int netmap_reach_diff(const struct netmap_reach *old, const struct netmap_reach *now,
		      struct netmap_reach_patch **ret)
{
	size_t n_sets = (size_t)old->n_sets + now->n_sets, no, nn, nc = 0, i = 0, j = 0;
	struct netmap_reach_patch *p = calloc(1, sizeof(*p));
	struct rent *eo = malloc(((size_t)old->n_peers + 1) * sizeof(*eo));
	struct rent *en = malloc(((size_t)now->n_peers + 1) * sizeof(*en));
	struct rsetref *rep = malloc((n_sets + 1) * sizeof(*rep));
	uint32_t *rank = malloc((n_sets + 1) * sizeof(*rank));
	int r = -ENOMEM;

	if (!p || !eo || !en || !rep || !rank ||
	    !(p->removed = malloc(((size_t)old->n_peers + 1) * sizeof(*p->removed))))
		goto out;
	r = -EINVAL;
	if (!netmap_reach_valid(old) || !netmap_reach_valid(now) || reach_has_all(old) ||
	    reach_has_all(now))
		goto out;
	rank_sets(old, now, rank, rep);
	no = rent_unique(eo, rent_add(eo, 0, old, 0, rank, NULL, 0));
	nn = rent_unique(en, rent_add(en, 0, now, old->n_sets, rank, NULL, 0));
	/* By id: gone (removed), come or with other items (add, reusing en's front). */
	while (i < no || j < nn) {
		if (j == nn || (i < no && eo[i].id < en[j].id)) {
			p->removed[p->n_removed++] = eo[i++].id;
		} else if (i == no || en[j].id < eo[i].id) {
			en[nc++] = en[j++];
		} else {
			if (eo[i].rank != en[j].rank)
				en[nc++] = en[j];
			i++;
			j++;
		}
	}
	r = rent_build(en, nc, rep, &p->add);
	if (r < 0)
		goto out;
	*ret = p;
	p = NULL;
out:
	netmap_reach_patch_free(p);
	free(eo);
	free(en);
	free(rep);
	free(rank);
	return r;
}

int netmap_reach_patch_apply(const struct netmap_reach *cur, const struct netmap_reach_patch *p,
			     struct netmap_reach **ret)
{
	size_t n_sets, n_drop, n = 0;
	uint64_t *drop = NULL;
	struct rent *e = NULL;
	struct rsetref *rep = NULL;
	uint32_t *rank = NULL;
	int r = -EINVAL;

	if (!cur || !netmap_reach_valid(cur) || reach_has_all(cur) || !netmap_reach_patch_valid(p))
		return -EINVAL;
	n_sets = (size_t)cur->n_sets + p->add->n_sets;
	n_drop = (size_t)p->n_removed + p->add->n_peers;
	r = -ENOMEM;
	drop = malloc((n_drop + 1) * sizeof(*drop));
	e = malloc(((size_t)cur->n_peers + p->add->n_peers + 1) * sizeof(*e));
	rep = malloc((n_sets + 1) * sizeof(*rep));
	rank = malloc((n_sets + 1) * sizeof(*rank));
	if (!drop || !e || !rep || !rank)
		goto out;
	/* Whatever the patch names leaves the set it was in; add's sets then take theirs in. */
	if (p->n_removed)
		memcpy(drop, p->removed, p->n_removed * sizeof(*drop));
	if (p->add->n_peers)
		memcpy(drop + p->n_removed, p->add->peers, p->add->n_peers * sizeof(*drop));
	if (n_drop)
		qsort(drop, n_drop, sizeof(*drop), u64_cmp);
	rank_sets(cur, p->add, rank, rep);
	n = rent_add(e, 0, cur, 0, rank, drop, n_drop);
	n = rent_add(e, n, p->add, cur->n_sets, rank, NULL, 0);
	r = rent_build(e, rent_unique(e, n), rep, ret);
out:
	free(drop);
	free(e);
	free(rep);
	free(rank);
	return r;
}

/* Is id a peer once removals and additions of d are done? */
static bool present_after(const struct slot *ix, unsigned n_ix, const uint64_t *removed,
			  unsigned n_removed, const uint64_t *added, unsigned n_added, uint64_t id)
{
	if (ids_contain(added, n_added, id))
		return true;
	return index_find(ix, n_ix, id) && !ids_contain(removed, n_removed, id);
}

int netmap_apply_delta(struct netmap *nm, const struct netmap_delta *d)
{
	struct slot *ix = NULL;
	struct netmap_filter *filter = NULL;
	struct netmap_reach *reach = NULL;
	uint64_t *removed = NULL, *added = NULL;
	struct netmap_node *peers;
	unsigned i, n, cap;
	int ret;

	if (d->seq <= nm->seq)
		return -EINVAL;
	if (d->n_added > NETMAP_MAX_PEERS || nm->n_peers > NETMAP_MAX_PEERS)
		return -EINVAL;
	cap = nm->n_peers + d->n_added;

	ret = -ENOMEM;
	ix = malloc(((size_t)cap + 1) * sizeof(*ix));
	removed = malloc(((size_t)d->n_removed + 1) * sizeof(*removed));
	added = malloc(((size_t)d->n_added + 1) * sizeof(*added));
	if (!ix || !removed || !added)
		goto out;

	index_build(ix, nm->peers, nm->n_peers);
	if (d->n_removed)
		memcpy(removed, d->removed, d->n_removed * sizeof(*removed));
	qsort(removed, d->n_removed, sizeof(*removed), u64_cmp);
	for (i = 0; i < d->n_added; i++)
		added[i] = d->added[i].id;
	qsort(added, d->n_added, sizeof(*added), u64_cmp);

	ret = -EINVAL;
	for (i = 1; i < d->n_added; i++)
		if (added[i] == added[i - 1])
			goto out;
	for (i = 0; i < d->n_changed; i++)
		if (!present_after(ix, nm->n_peers, removed, d->n_removed, added, d->n_added,
				   d->changed[i].id))
			goto out;
	for (i = 0; i < d->n_endpoints; i++)
		if (d->endpoints[i].n_endpoints > NETMAP_MAX_ENDPOINTS ||
		    !present_after(ix, nm->n_peers, removed, d->n_removed, added, d->n_added,
				   d->endpoints[i].id))
			goto out;
	for (i = 0; i < d->n_online; i++)
		if (!present_after(ix, nm->n_peers, removed, d->n_removed, added, d->n_added,
				   d->online[i].id))
			goto out;

	ret = -ENOMEM;
	if (d->filter && !(filter = netmap_filter_dup(d->filter)))
		goto out;
	if (d->reach && !(reach = netmap_reach_dup(d->reach)))
		goto out;
	/* A patch needs the list it was made against: without one, a full map. */
	if (d->reach_patch) {
		ret = d->reach ? -EINVAL
			       : netmap_reach_patch_apply(nm->reach, d->reach_patch, &reach);
		if (ret < 0)
			goto out;
	}
	/* The last allocation: from here on nothing fails and nm is changed. */
	if (cap > nm->n_peers) {
		ret = -ENOMEM;
		peers = realloc(nm->peers, (size_t)cap * sizeof(*peers));
		if (!peers)
			goto out;
		nm->peers = peers;
	}
	peers = nm->peers;

	/* An "added" peer we already have replaces the old record (a resend after reconnect). */
	for (i = 0, n = 0; i < nm->n_peers; i++) {
		if (ids_contain(removed, d->n_removed, peers[i].id) ||
		    ids_contain(added, d->n_added, peers[i].id))
			continue;
		if (n != i)
			peers[n] = peers[i];
		n++;
	}
	if (d->n_added)
		memcpy(peers + n, d->added, d->n_added * sizeof(*peers));
	n += d->n_added;
	nm->n_peers = n;

	index_build(ix, peers, n);
	for (i = 0; i < d->n_changed; i++)
		peers[index_find(ix, n, d->changed[i].id)->idx] = d->changed[i];
	for (i = 0; i < d->n_endpoints; i++) {
		const struct netmap_endpoint_patch *p = &d->endpoints[i];
		struct netmap_node *node = &peers[index_find(ix, n, p->id)->idx];

		node->n_endpoints = p->n_endpoints;
		memcpy(node->endpoints, p->endpoints, p->n_endpoints * sizeof(p->endpoints[0]));
	}
	for (i = 0; i < d->n_online; i++) {
		struct netmap_node *node = &peers[index_find(ix, n, d->online[i].id)->idx];

		node->online = d->online[i].online;
		node->last_seen = d->online[i].last_seen;
	}
	if (d->has_self)
		nm->self = d->self;
	if (d->relay_map)
		nm->relay_map = *d->relay_map;
	if (d->flow_log.set)
		nm->flow_log = d->flow_log;
	if (filter) {
		netmap_filter_free(nm->filter);
		nm->filter = filter;
		filter = NULL;
	}
	if (reach) {
		netmap_reach_free(nm->reach);
		nm->reach = reach;
		reach = NULL;
	}
	nm->seq = d->seq;
	if (d->version.feed)
		nm->version = d->version;
	ret = 0;
out:
	netmap_filter_free(filter);
	netmap_reach_free(reach);
	free(ix);
	free(removed);
	free(added);
	return ret;
}
