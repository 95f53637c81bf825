/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <string.h>

#include "base/log.h"
#include "crypto/crypto.h"
#include "node/nodefilter.h"
#include "proto/ctrlmsg.h"

struct nodefilter {
	struct filter *f;
	struct netmap_filter *applied; /* the filter in force; NULL: none (or no policy) */
	char error[128];	       /* why the last filter was refused; "" = it was not */
};

int nodefilter_new(struct nodefilter **ret)
{
	struct nodefilter *nf = calloc(1, sizeof(*nf));
	uint64_t seed = 0;
	int r = -ENOMEM;

	if (!nf)
		return -ENOMEM;
	/* Peers choose the tuples: the flow hash is keyed. */
	r = crypto_random(&seed, sizeof(seed));
	if (r < 0)
		goto out;
	r = filter_new(0, seed, &nf->f);
	if (r < 0)
		goto out;
	*ret = nf;
	nf = NULL;
out:
	nodefilter_free(nf);
	return r;
}

void nodefilter_free(struct nodefilter *nf)
{
	if (!nf)
		return;
	filter_free(nf->f);
	netmap_filter_free(nf->applied);
	free(nf);
}

struct filter *nodefilter_filter(struct nodefilter *nf)
{
	return nf->f;
}

static bool same(const struct netmap_filter *a, const struct netmap_filter *b)
{
	return a->n_rules == b->n_rules && a->n_srcs == b->n_srcs && a->n_dsts == b->n_dsts &&
	       !memcmp(a->rules, b->rules, a->n_rules * sizeof(*a->rules)) &&
	       !memcmp(a->srcs, b->srcs, a->n_srcs * sizeof(*a->srcs)) &&
	       !memcmp(a->dsts, b->dsts, a->n_dsts * sizeof(*a->dsts));
}

int nodefilter_apply(struct nodefilter *nf, const struct netmap_filter *want)
{
	struct filter_rules *rules = NULL;
	struct netmap_filter *copy;
	int r;

	if (!want) {
		if (filter_active(nf->f))
			log_info("packet filter: no policy, every peer may reach us");
		filter_rules_set(nf->f, NULL);
		netmap_filter_free(nf->applied);
		nf->applied = NULL;
		nf->error[0] = '\0';
		return 0;
	}
	/* Every delta re-applies the map: recompile only what changed. */
	if (nf->applied && filter_active(nf->f) && same(nf->applied, want))
		return 0;
	r = filter_rules_compile(want, &rules);
	if (r < 0) {
		snprintf(nf->error, sizeof(nf->error), "cannot compile the filter: %s", strerror(-r));
		if (!filter_active(nf->f)) {
			log_warn("packet filter: %s; admitting no new flow", nf->error);
			filter_deny_all(nf->f);
		} else {
			log_warn("packet filter: %s; the previous one stays", nf->error);
		}
		return r;
	}
	/* The copy is what status shows and what the next netmap is compared with. */
	copy = netmap_filter_dup(want);
	filter_rules_set(nf->f, rules);
	netmap_filter_free(nf->applied);
	nf->applied = copy;
	nf->error[0] = '\0';
	log_info("packet filter: %u rules", want->n_rules);
	return 0;
}

json_t *nodefilter_status_json(struct nodefilter *nf)
{
	struct filter_stats st;
	json_t *o, *drops, *rules = NULL;
	char *text = NULL;
	size_t len;
	unsigned i;

	filter_stats_get(nf->f, &st);
	/* The rules as the netmap carries them (docs/control-protocol.md "Packet filter"). */
	if (nf->applied && ctrl_filter_encode(nf->applied, &text, &len) == 0) {
		json_t *pf = json_loadb(text, len, 0, NULL);

		rules = json_incref(json_object_get(pf, "rules"));
		json_decref(pf);
	}
	free(text);
	drops = json_object();
	for (i = 0; drops && i < FILTER_DROP__MAX; i++)
		json_object_set_new(drops, filter_drop_name(i), json_integer((json_int_t)st.drops[i]));
	o = json_pack(
	    "{s:b, s:o, s:s?, s:o, s:I, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I}}", "policy", st.active,
	    "rules", rules ? rules : json_null(), "error", nf->error[0] ? nf->error : NULL, "drops",
	    drops ? drops : json_null(), "fragments_passed", (json_int_t)st.fragments, "conntrack",
	    "entries", (json_int_t)st.ct_entries, "max", (json_int_t)st.ct_max, "evicted",
	    (json_int_t)st.ct_evicted, "rejects", "rate", (json_int_t)st.reject_rate, "sent",
	    (json_int_t)st.rejects_sent, "rate_limited", (json_int_t)st.rejects_limited);
	return o;
}

/* Is address a (of p's family) inside prefix p? */
static bool prefix_has(const struct netmap_prefix *p, const uint8_t *a)
{
	unsigned full = p->len / 8, rest = p->len % 8;

	if (memcmp(p->addr, a, full))
		return false;
	return !rest || !((p->addr[full] ^ a[full]) & (uint8_t)(0xff00 >> rest));
}

struct access {
	uint8_t proto; /* 0: any protocol */
	uint16_t first, last;
};

static int access_cmp(const void *a, const void *b)
{
	const struct access *x = a, *y = b;

	if (x->proto != y->proto)
		return x->proto - y->proto;
	return x->first != y->first ? x->first - y->first : x->last - y->last;
}

static int access_add(struct access **v, size_t *n, size_t *cap, uint8_t proto,
		      const struct netmap_filter_dst *d)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 16;
		struct access *nv = realloc(*v, c * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	/* Protocols without ports (ICMP, ...) are open or not: no ranges for them. */
	if (proto && !filter_proto_has_ports(proto))
		(*v)[(*n)++] = (struct access){proto, 0, 0};
	else
		(*v)[(*n)++] = (struct access){proto, d->port_first, d->port_last};
	return 0;
}

/* Does the rule let this address start a flow to us: which of its dsts (same family) apply. */
static int rule_access(const struct netmap_filter *f, const struct netmap_filter_rule *ru,
		       const struct netmap_prefix *addr, struct access **v, size_t *n, size_t *cap)
{
	bool from = false;
	uint32_t i, j;
	int r;

	for (i = 0; i < ru->n_src && !from; i++) {
		const struct netmap_prefix *s = &f->srcs[ru->src_off + i];

		from = s->family == addr->family && prefix_has(s, addr->addr);
	}
	for (i = 0; from && i < ru->n_dst; i++) {
		const struct netmap_filter_dst *d = &f->dsts[ru->dst_off + i];

		if (d->prefix.family != addr->family)
			continue;
		for (j = 0; j < (ru->n_protos ? ru->n_protos : 1); j++) {
			r = access_add(v, n, cap, ru->n_protos ? ru->protos[j] : 0, d);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* Sorted, ranges merged per protocol: [{"proto": 6, "ports": [[22, 22], [443, 443]]}, ...] */
static json_t *access_json(struct access *v, size_t n)
{
	json_t *out = json_array(), *cur = NULL, *ports = NULL;
	size_t i = 0, j;

	if (n)
		qsort(v, n, sizeof(*v), access_cmp);
	while (out && i < n) {
		uint8_t proto = v[i].proto;
		bool has_ports = !proto || filter_proto_has_ports(proto);

		cur = json_pack("{s:i}", "proto", proto);
		ports = has_ports ? json_array() : NULL;
		if (!cur || (has_ports && !ports))
			goto fail;
		for (; i < n && v[i].proto == proto; i = j) {
			uint16_t first = v[i].first, last = v[i].last;

			for (j = i + 1; j < n && v[j].proto == proto && v[j].first <= last + 1U;
			     j++)
				last = v[j].last > last ? v[j].last : last;
			if (ports)
				json_array_append_new(ports, json_pack("[i, i]", first, last));
		}
		if (ports)
			json_object_set_new(cur, "ports", ports);
		json_array_append_new(out, cur);
	}
	return out;
fail:
	json_decref(cur);
	json_decref(ports);
	json_decref(out);
	return NULL;
}

json_t *nodefilter_peer_access_json(struct nodefilter *nf, const struct netmap_node *peer)
{
	size_t n = 0, cap = 0;
	struct access *v = NULL;
	json_t *o = NULL;
	unsigned i, a;

	if (!filter_active(nf->f))
		return json_null();
	/* Active without rules applied: a refused first filter, which admits nothing. */
	for (i = 0; nf->applied && i < nf->applied->n_rules; i++) {
		for (a = 0; a < peer->n_addresses && a < NETMAP_MAX_ADDRESSES; a++) {
			if (rule_access(nf->applied, &nf->applied->rules[i], &peer->addresses[a],
					&v, &n, &cap) < 0)
				goto out;
		}
	}
	o = access_json(v, n);
out:
	free(v);
	return o;
}

/* A peer id and the may_open set that lists it first, sorted by id for a binary search. */
struct reach_ix {
	uint64_t id;
	uint32_t set;
};

static int reach_ix_cmp(const void *a, const void *b)
{
	const struct reach_ix *x = a, *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	return (x->set > y->set) - (x->set < y->set);
}

/* The peer's items as allowed_in's form ([] when the peer is in no set). NULL on ENOMEM. */
static json_t *reach_json(const struct netmap_reach *r, const struct reach_ix *ix, size_t n,
			  uint64_t id)
{
	const struct reach_ix key = {id, 0}, *hit;
	struct access *v = NULL;
	const struct netmap_reach_set *s;
	size_t lo = 0, hi = n;
	json_t *o;

	/* The first entry of id: the set netmap_reach_find would take. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (reach_ix_cmp(&ix[mid], &key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	hit = lo < n && ix[lo].id == id ? &ix[lo] : NULL;
	/* An all set ("*") is the only one and lists no ids: it takes in every peer. */
	s = r->n_sets && r->sets[0].all ? &r->sets[0] : hit ? &r->sets[hit->set] : NULL;
	if (!s)
		return json_array();
	v = calloc(s->n_ports, sizeof(*v));
	if (!v)
		return NULL;
	for (uint32_t k = 0; k < s->n_ports; k++) {
		const struct netmap_reach_port *q = &r->ports[s->port_off + k];
		bool ported = filter_proto_has_ports(q->proto);

		v[k] = (struct access){q->proto, ported ? q->first : 0, ported ? q->last : 0};
	}
	o = access_json(v, s->n_ports);
	free(v);
	return o;
}

void nodefilter_status_may_open(const struct netmap *nm, json_t *peers)
{
	const struct netmap_reach *r = nm->reach;
	struct reach_ix *ix = NULL;
	size_t n = 0, i;
	json_t *p;

	/* No policy: anything. A policy without may_open (an older server): not said. */
	if (!nm->filter) {
		json_array_foreach(peers, i, p)
		{
			json_object_set_new(p, "may_open", json_null());
		}
		return;
	}
	if (!r)
		return;
	/* An index once per status, not a scan of every set per peer. */
	ix = malloc((r->n_peers ? r->n_peers : 1) * sizeof(*ix));
	if (!ix)
		return;
	for (uint32_t k = 0; k < r->n_sets; k++)
		for (uint32_t q = 0; q < r->sets[k].n_peers; q++)
			ix[n++] = (struct reach_ix){r->peers[r->sets[k].peer_off + q], k};
	qsort(ix, n, sizeof(*ix), reach_ix_cmp);
	json_array_foreach(peers, i, p)
	{
		json_int_t id = json_integer_value(json_object_get(p, "id"));
		json_t *o = reach_json(r, ix, n, (uint64_t)id);

		if (o)
			json_object_set_new(p, "may_open", o);
	}
	free(ix);
}

void nodefilter_status_peers(struct nodefilter *nf, const struct netmap *nm, json_t *peers)
{
	json_t *p;
	size_t i;

	/* localapi_status_build lists the peers in the netmap's order. */
	json_array_foreach(peers, i, p)
	{
		const struct netmap_node *n = i < nm->n_peers ? &nm->peers[i] : NULL;
		json_int_t id = json_integer_value(json_object_get(p, "id"));

		if (!n || (json_int_t)n->id != id)
			n = netmap_peer_find(nm, (uint64_t)id);
		if (n)
			json_object_set_new(p, "allowed_in", nodefilter_peer_access_json(nf, n));
	}
}
