/* SPDX-License-Identifier: MIT */
/*
 * The mapper (see mapper.h). State:
 *
 * - nodes: id -> struct mnode (the record, whether it is "shown", i.e. was
 *   visible when last evaluated, its tailnet, its slot in the expiry heap and
 *   its subscription if it has a map stream);
 * - tailnets: id -> struct mtailnet with arrays of its nodes and subscribers,
 *   so a change fans out to exactly the subscribers of one tailnet;
 * - per subscriber, a small open-addressed table peer id -> pending entry.
 *   An entry remembers whether the subscriber could see the peer when the
 *   entry was created (which is what its last map said, since every change of
 *   a peer's visibility or content creates or updates an entry before it is
 *   applied) and which parts of the record changed since. The delta is only
 *   materialised from the current records at take time: seen then and now ->
 *   changed/patches, only now -> added, only then -> removed, neither ->
 *   nothing. That is what coalesces bursts and cancels add-then-remove, and it
 *   keeps an entry at 16 bytes, so a change costs O(affected subscribers);
 * - a min-heap of shown nodes by key expiry, for mapper_expire;
 * - per tailnet, what a resuming subscriber is told although no change names it
 *   (mapper_resume): a min-heap of its nodes that have a key expiry, by expiry (those at
 *   or before now are a subtree at the root), and the list of its nodes not online. A
 *   resume walks that subtree and that list, not the tailnet: after a planned restart
 *   it finds few of either;
 * - per node, its record as netmap JSON once a full map needed it, dropped
 *   whenever anything it is rendered from changes. A full netmap of a big
 *   tailnet then costs a join of cached text instead of rendering and
 *   encoding every peer again, once per subscriber;
 * - per tailnet with an access policy, the policy compiled over its nodes (a
 *   policy_view: who sees whom) and per node its inbound filter. A change of the
 *   policy, or of what the policy looks at (a node added or removed, its user,
 *   tags or address), makes the tailnet stale; the next read (a netmap, a delta,
 *   the dirty list) recompiles it once, however many changes came in between,
 *   and marks for every subscriber the peers that appeared or disappeared and
 *   whether its filter changed. A policy removed cannot be said in a delta (no
 *   packet_filter means "unchanged"): its subscribers get a full map. At 10,000
 *   nodes a pair-by-pair comparison is 10^8 tests and every filter rebuilt is
 *   10,000 builds, so where the nodes kept their indices the rows are compared a
 *   word at a time (view_diff), and after a change of the policy alone only the
 *   filters made of a changed rule are built (policy_view_match);
 * - per tailnet with a policy, what the nodes of each policy class may open
 *   (policy_view_reach; a class's nodes are in the same rules the same way, so
 *   they share it): computed once per class on first use, refcounted by the
 *   nodes that were last told it, with its JSON kept for full maps. A new view
 *   drops the classes; each subscriber is then compared with its new class's
 *   (once per pair of old and new, not once per node) and told in a delta only
 *   when it differs. Without a policy nothing is computed nor sent: the node
 *   reads "may open anything" from the absent packet_filter. Each subscriber
 *   holds (refcounted) the class it was last told; one that takes patches
 *   (mapper_reach_patch_set) gets, instead of the new list, the patch from that
 *   one (netmap_reach_diff), made once per pair of lists and kept with the new
 *   class: a server joining under group:eng -> tag:server:22 costs each eng
 *   device one id, not the list of every server.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/hmap.h"
#include "base/util.h"
#include "control/mapper.h"
#include "control/mapzc.h"
#include "policy/policy.h"
#include "proto/ctrlmsg.h"
#include "proto/relaymap.h"

#define HEAP_NONE SIZE_MAX

/* The heaps a node can be in, each by a time: its slot and key in each are its own. */
enum {
	HEAP_SHOWN,    /* m->shown: shown nodes with a key expiry (mapper_expire) */
	HEAP_EXPIRING, /* tn->expiring: every node of the tailnet with a key expiry (resume) */
	HEAP_KINDS,
};

struct mnode;

/* A min-heap of nodes by heap_key[kind]. */
struct nheap {
	struct mnode **v;
	size_t n, cap;
	int kind;
};

/* What changed about a peer since the subscriber's last map. */
#define PEND_FULL 0x1     /* record fields: sent as a full replacement */
#define PEND_ENDPOINTS 0x2
#define PEND_ONLINE 0x4

struct pend {
	uint64_t id; /* 0 = empty slot */
	uint8_t flags;
	bool was_visible;
};

struct mnode;

/* What one policy class may open (NULL r: over the netmap's caps, not said). */
struct mreach {
	size_t refs;
	struct netmap_reach *r;
	char *json; /* ctrl_reach_encode of r, once a full map needed it */
	size_t json_len;
	/* The last new class this one was compared with, and the answer (compile_apply). */
	const struct mreach *cmp;
	bool cmp_equal;
	uint64_t
	    serial; /* unique in its tailnet, never 0: names it where a pointer could be reused */
	/*
	 * The last patch made to this list (patch_to), from the list of serial patch_base: NULL
	 * with patch_same (nothing changed) or without (the list is shorter: send it).
	 */
	uint64_t patch_base;
	struct netmap_reach_patch *patch;
	bool patch_same;
};

struct msub {
	struct mnode *node;
	size_t tn_idx; /* in tn->subs */
	struct pend *pend;
	size_t pend_cap, pend_n; /* cap is 0 or a power of two, load <= 1/2 */
	bool self_dirty;
	bool relay_dirty; /* the relay map changed since its last map */
	bool filter_dirty; /* its packet filter changed since its last map */
	bool flow_log_dirty; /* its tailnet's flow-log setting changed since its last map */
	bool reach_dirty;    /* what it may open changed since its last map */
	/*
	 * What it was last told it may open (a full map's, a delta's; NULL: unknown or none) and
	 * whether it takes a change of it as a patch (mapper_reach_patch_set): the patch is made
	 * from told, whatever came in between.
	 */
	struct mreach *told;
	bool reach_patch;
	bool overflow; /* a pending entry could not be allocated: only a full map is right now */
	/*
	 * A renewed machine certificate to push (mapper_node_mcert; malloc'd base64): kept past a
	 * full map, which does not carry one, so that the next delta does.
	 */
	char *mcert;
	bool dirty;
	struct msub *dirty_prev, *dirty_next;
};

struct mtailnet {
	uint64_t id;
	char name[NETMAP_NAME_MAX];
	struct mnode **nodes;
	size_t n_nodes, cap_nodes;
	struct msub **subs;
	size_t n_subs, cap_subs;
	/* The access policy (NULL: every node sees every other) compiled over pnodes. */
	struct policy *pol;
	struct policy_view *view;
	struct policy_node *pnodes;
	size_t n_pnodes;
	uint64_t filters_built; /* mapper_policy_filters_built */
	bool stale;	     /* view no longer matches pol and nodes: tailnet_sync */
	bool listed;	     /* on m->stale_head */
	bool pol_next_set;   /* pol_next replaces pol at the next sync */
	struct policy *pol_next;
	struct mtailnet *stale_next;
	uint64_t gen; /* moves with everything a compile reads: a job of another gen is stale */
	struct mapper_compile *inflight; /* the job off the loop (mapper_compile_next) */
	struct policy *orphan; /* the job's policy, replaced meanwhile: freed when it is back */
	struct netmap_flow_log flow_log; /* control_tailnet_flow_log of its record */
	struct mreach **reach;		 /* per class of view, NULL until a node of it needed it */
	size_t n_reach;
	uint64_t reach_serial; /* the last mreach.serial given */
	/* What a resume tells without a change naming it (mapper_resume). */
	struct nheap expiring;	/* nodes with a key expiry, by it */
	struct mnode **offline; /* nodes not online */
	size_t n_offline, cap_offline;
};

struct mnode {
	struct control_node rec;
	struct hmap_node by_key; /* m->keys: the relays' admission asks by node key */
	bool shown;
	struct mtailnet *tn;
	size_t tn_idx;   /* in tn->nodes */
	size_t heap_idx[HEAP_KINDS]; /* in each heap (m->shown, tn->expiring), or HEAP_NONE */
	int64_t heap_key[HEAP_KINDS];
	size_t off_idx; /* in tn->offline, or SIZE_MAX */
	struct msub *sub;
	char *json; /* ctrl_node_encode of render(), or NULL until a full map needs it */
	size_t json_len;
	size_t pidx; /* index in tn->view, SIZE_MAX when not compiled in */
	struct netmap_filter *filter; /* its filter under tn->view, when filter_known */
	bool filter_known;
	struct mreach *reach; /* what it may open under tn->view (a class's, shared) or NULL */
};

struct muser {
	uint64_t id;
	uint64_t tailnet_id;
	char name[NETMAP_USER_MAX];
};

/* uint64_t (non-zero) -> pointer, open addressing with linear probing. */
struct idmap {
	uint64_t *keys;
	void **vals;
	size_t cap, n; /* cap is 0 or a power of two, load <= 1/2 */
};

struct mapper {
	struct idmap nodes, tailnets, users;
	struct nheap shown;	/* shown nodes with a key expiry, by it */
	uint64_t resume_walked; /* mapper_resume_walked */
	struct msub *dirty_head, *dirty_tail;
	size_t n_dirty;
	uint64_t seq;
	struct netmap_version version; /* stamped on every netmap and delta */
	struct netmap_relay_map relay_map;
	char *relay_json; /* relaymap_encode of relay_map; NULL when it has no regions */
	size_t relay_json_len;
	struct hmap keys; /* node key -> mnode */
	uint64_t gen;	  /* mapper_generation */
	struct mtailnet *stale_head;
	bool async; /* mapper_compile_async */
	struct mapzc *zc; /* compressed full netmaps, made when a node first asks for one */
};

static size_t hash_u64(uint64_t x)
{
	/* splitmix64 finaliser: ids are sequential, the table wants them spread. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return (size_t)x;
}

static void *idmap_get(const struct idmap *h, uint64_t key)
{
	size_t mask, i;

	if (!h->cap)
		return NULL;
	mask = h->cap - 1;
	for (i = hash_u64(key) & mask; h->keys[i]; i = (i + 1) & mask)
		if (h->keys[i] == key)
			return h->vals[i];
	return NULL;
}

static int idmap_grow(struct idmap *h)
{
	size_t cap = h->cap ? h->cap * 2 : 16, mask = cap - 1;
	uint64_t *keys = calloc(cap, sizeof(*keys));
	void **vals = calloc(cap, sizeof(*vals));

	if (!keys || !vals) {
		free(keys);
		free(vals);
		return -ENOMEM;
	}
	for (size_t j = 0; j < h->cap; j++) {
		size_t i;

		if (!h->keys[j])
			continue;
		for (i = hash_u64(h->keys[j]) & mask; keys[i]; i = (i + 1) & mask)
			;
		keys[i] = h->keys[j];
		vals[i] = h->vals[j];
	}
	free(h->keys);
	free(h->vals);
	h->keys = keys;
	h->vals = vals;
	h->cap = cap;
	return 0;
}

/* key must not be present yet. */
static int idmap_put(struct idmap *h, uint64_t key, void *val)
{
	size_t mask, i;
	int ret;

	if ((h->n + 1) * 2 > h->cap) {
		ret = idmap_grow(h);
		if (ret < 0)
			return ret;
	}
	mask = h->cap - 1;
	for (i = hash_u64(key) & mask; h->keys[i]; i = (i + 1) & mask)
		;
	h->keys[i] = key;
	h->vals[i] = val;
	h->n++;
	return 0;
}

static void idmap_del(struct idmap *h, uint64_t key)
{
	size_t mask, i, j;

	if (!h->cap)
		return;
	mask = h->cap - 1;
	for (i = hash_u64(key) & mask; h->keys[i] != key; i = (i + 1) & mask)
		if (!h->keys[i])
			return;
	/* Backward-shift deletion: no tombstones, probe chains stay short. */
	for (j = (i + 1) & mask; h->keys[j]; j = (j + 1) & mask) {
		size_t home = hash_u64(h->keys[j]) & mask;

		/* Move j into the hole at i unless its home lies cyclically in (i, j]. */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			h->keys[i] = h->keys[j];
			h->vals[i] = h->vals[j];
			i = j;
		}
	}
	h->keys[i] = 0;
	h->vals[i] = NULL;
	h->n--;
}

static void idmap_clear(struct idmap *h)
{
	free(h->keys);
	free(h->vals);
	memset(h, 0, sizeof(*h));
}

/* Pointer arrays with a stored index in the element, for O(1) removal. */
static int ptrs_reserve(void ***arr, size_t n, size_t *cap)
{
	void **p;
	size_t c;

	if (n < *cap)
		return 0;
	c = *cap ? *cap * 2 : 8;
	p = realloc(*arr, c * sizeof(*p));
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = c;
	return 0;
}

/* ---- expiry heaps ---- */

static bool heap_less(const struct nheap *h, size_t a, size_t b)
{
	return h->v[a]->heap_key[h->kind] < h->v[b]->heap_key[h->kind];
}

static void heap_swap(struct nheap *h, size_t a, size_t b)
{
	struct mnode *t = h->v[a];

	h->v[a] = h->v[b];
	h->v[b] = t;
	h->v[a]->heap_idx[h->kind] = a;
	h->v[b]->heap_idx[h->kind] = b;
}

static void heap_fix(struct nheap *h, size_t i)
{
	while (i > 0 && heap_less(h, i, (i - 1) / 2)) {
		heap_swap(h, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, min = i;

		if (l < h->n && heap_less(h, l, min))
			min = l;
		if (r < h->n && heap_less(h, r, min))
			min = r;
		if (min == i)
			break;
		heap_swap(h, i, min);
		i = min;
	}
}

static void heap_del(struct nheap *h, struct mnode *x)
{
	size_t i = x->heap_idx[h->kind];

	if (i == HEAP_NONE)
		return;
	x->heap_idx[h->kind] = HEAP_NONE;
	if (i != --h->n) {
		h->v[i] = h->v[h->n];
		h->v[i]->heap_idx[h->kind] = i;
		heap_fix(h, i);
	}
}

/* The heap slot is reserved when the node is created, so this cannot fail. */
static void heap_set(struct nheap *h, struct mnode *x, int64_t key)
{
	x->heap_key[h->kind] = key;
	if (x->heap_idx[h->kind] == HEAP_NONE) {
		x->heap_idx[h->kind] = h->n++;
		h->v[x->heap_idx[h->kind]] = x;
	}
	heap_fix(h, x->heap_idx[h->kind]);
}

/* In the heap with this key when `in`, else out of it. */
static void heap_put(struct nheap *h, struct mnode *x, bool in, int64_t key)
{
	if (in)
		heap_set(h, x, key);
	else
		heap_del(h, x);
}

/* Slots reserved when the node is created, like the heaps'. */
static void offline_put(struct mtailnet *tn, struct mnode *x, bool in)
{
	if (in && x->off_idx == SIZE_MAX) {
		x->off_idx = tn->n_offline;
		tn->offline[tn->n_offline++] = x;
	} else if (!in && x->off_idx != SIZE_MAX) {
		tn->offline[x->off_idx] = tn->offline[--tn->n_offline];
		tn->offline[x->off_idx]->off_idx = x->off_idx;
		x->off_idx = SIZE_MAX;
	}
}

/*
 * After any change of x's record or visibility. A shown node with an expiry waits in the
 * mapper's heap (nothing else can change by time alone); the tailnet's indexes follow the
 * record as it is (mapper_resume).
 */
static void node_index(struct mapper *m, struct mnode *x)
{
	heap_put(&m->shown, x, x->shown && x->rec.key_expiry, x->rec.key_expiry);
	heap_put(&x->tn->expiring, x, x->rec.key_expiry != 0, x->rec.key_expiry);
	offline_put(x->tn, x, !x->rec.online);
}

/* Out of every index: x is being removed. */
static void node_unindex(struct mapper *m, struct mnode *x)
{
	heap_del(&m->shown, x);
	heap_del(&x->tn->expiring, x);
	offline_put(x->tn, x, false);
}

/* ---- subscribers: pending entries and the dirty list ---- */

static void dirty_add(struct mapper *m, struct msub *s)
{
	if (s->dirty)
		return;
	s->dirty = true;
	s->dirty_next = NULL;
	s->dirty_prev = m->dirty_tail;
	if (m->dirty_tail)
		m->dirty_tail->dirty_next = s;
	else
		m->dirty_head = s;
	m->dirty_tail = s;
	m->n_dirty++;
}

static void dirty_del(struct mapper *m, struct msub *s)
{
	if (!s->dirty)
		return;
	if (s->dirty_prev)
		s->dirty_prev->dirty_next = s->dirty_next;
	else
		m->dirty_head = s->dirty_next;
	if (s->dirty_next)
		s->dirty_next->dirty_prev = s->dirty_prev;
	else
		m->dirty_tail = s->dirty_prev;
	s->dirty = false;
	s->dirty_prev = s->dirty_next = NULL;
	m->n_dirty--;
}

static int pend_grow(struct msub *s)
{
	size_t cap = s->pend_cap ? s->pend_cap * 2 : 8, mask = cap - 1;
	struct pend *t = calloc(cap, sizeof(*t));

	if (!t)
		return -ENOMEM;
	for (size_t j = 0; j < s->pend_cap; j++) {
		size_t i;

		if (!s->pend[j].id)
			continue;
		for (i = hash_u64(s->pend[j].id) & mask; t[i].id; i = (i + 1) & mask)
			;
		t[i] = s->pend[j];
	}
	free(s->pend);
	s->pend = t;
	s->pend_cap = cap;
	return 0;
}

static void pend_reset(struct msub *s)
{
	/* Keep a small table for the next burst; give back what a big one took. */
	if (s->pend_cap > 64) {
		free(s->pend);
		s->pend = NULL;
		s->pend_cap = 0;
	} else if (s->pend_n) {
		memset(s->pend, 0, s->pend_cap * sizeof(*s->pend));
	}
	s->pend_n = 0;
	s->self_dirty = false;
	s->relay_dirty = false;
	s->filter_dirty = false;
	s->flow_log_dirty = false;
	s->reach_dirty = false;
	s->overflow = false;
}

/* A full map went to s: nothing pending but a certificate to push. */
static void sub_superseded(struct mapper *m, struct msub *s)
{
	pend_reset(s);
	dirty_del(m, s);
	if (s->mcert)
		dirty_add(m, s);
}

/*
 * Records that peer `id` changed for subscriber s. `was_visible` is whether s
 * could see it before this change; it only counts for the first change since
 * s's last map. Never fails: without memory the subscriber is flagged for a
 * full map instead.
 */
static void mark(struct mapper *m, struct msub *s, uint64_t id, uint8_t flags, bool was_visible)
{
	size_t mask, i;

	dirty_add(m, s);
	if (s->overflow)
		return;
	if ((s->pend_n + 1) * 2 > s->pend_cap && pend_grow(s) < 0) {
		s->overflow = true;
		return;
	}
	mask = s->pend_cap - 1;
	for (i = hash_u64(id) & mask; s->pend[i].id; i = (i + 1) & mask) {
		if (s->pend[i].id == id) {
			s->pend[i].flags |= flags;
			return;
		}
	}
	s->pend[i].id = id;
	s->pend[i].flags = flags;
	s->pend[i].was_visible = was_visible;
	s->pend_n++;
}

/* ---- who sees whom ---- */

/*
 * Whether viewer v's map lists p. The one place that decides it: both shown, and under a
 * policy, traffic allowed one way or the other (tailnet_sync marks what a new view changes).
 */
static bool pair_visible(const struct mnode *v, const struct mnode *p)
{
	const struct mtailnet *tn = v->tn;

	if (v == p || tn != p->tn || !v->shown || !p->shown)
		return false;
	return !tn->pol || (v->pidx != SIZE_MAX && p->pidx != SIZE_MAX &&
			    policy_view_sees(tn->view, v->pidx, p->pidx));
}

/* What the policy looks at changed: recompile before the next read. */
static void tailnet_stale(struct mapper *m, struct mtailnet *tn)
{
	tn->gen++;
	if (tn->stale || (!tn->pol && !tn->pol_next_set))
		return;
	tn->stale = true;
	if (tn->listed)
		return;
	tn->listed = true;
	tn->stale_next = m->stale_head;
	m->stale_head = tn;
}

static bool filter_equal(const struct netmap_filter *a, const struct netmap_filter *b)
{
	if (!a || !b)
		return a == b;
	/* The structs have no padding, and the compiler fills every field. */
	return a->n_rules == b->n_rules && a->n_srcs == b->n_srcs && a->n_dsts == b->n_dsts &&
	       (!a->n_rules || !memcmp(a->rules, b->rules, a->n_rules * sizeof(*a->rules))) &&
	       (!a->n_srcs || !memcmp(a->srcs, b->srcs, a->n_srcs * sizeof(*a->srcs))) &&
	       (!a->n_dsts || !memcmp(a->dsts, b->dsts, a->n_dsts * sizeof(*a->dsts)));
}

/*
 * A node's filter; one over the netmap's caps fails closed, as a filter without rules: the
 * policy is valid, the node gets its peers, and nobody may start a flow to it.
 */
static int view_filter(struct mtailnet *tn, const struct policy_view *v,
		       const struct policy_node *pn, size_t i, struct netmap_filter **ret)
{
	int r = policy_view_filter(v, pn, i, ret);

	tn->filters_built++;
	if (r == -E2BIG) {
		*ret = calloc(1, sizeof(**ret));
		r = *ret ? 0 : -ENOMEM;
	}
	return r;
}

/*
 * x's filter under the tailnet's current view (NULL: no policy). A node not compiled in yet
 * (tailnet_sync runs before any map is built) gets an empty filter: nobody may start a flow.
 */
static int node_filter(struct mnode *x, const struct netmap_filter **ret)
{
	struct mtailnet *tn = x->tn;
	int r;

	*ret = NULL;
	if (!tn->pol)
		return 0;
	if (!x->filter_known) {
		if (x->pidx == SIZE_MAX) {
			x->filter = calloc(1, sizeof(*x->filter));
			r = x->filter ? 0 : -ENOMEM;
		} else {
			r = view_filter(tn, tn->view, tn->pnodes, x->pidx, &x->filter);
		}
		if (r < 0)
			return r;
		x->filter_known = true;
	}
	*ret = x->filter;
	return 0;
}

static void filter_drop(struct mnode *x)
{
	netmap_filter_free(x->filter);
	x->filter = NULL;
	x->filter_known = false;
}

static void mreach_put(struct mreach *c)
{
	if (!c || --c->refs)
		return;
	netmap_reach_free(c->r);
	netmap_reach_patch_free(c->patch);
	free(c->json);
	free(c);
}

/* What s was told last (a new reference; NULL: nothing known). */
static void sub_told(struct msub *s, struct mreach *c)
{
	if (c)
		c->refs++;
	mreach_put(s->told);
	s->told = c;
}

static void reach_drop(struct mnode *x)
{
	mreach_put(x->reach);
	x->reach = NULL;
}

/* The classes of a view that is no longer in force. */
static void tailnet_reach_drop(struct mtailnet *tn)
{
	for (size_t i = 0; i < tn->n_reach; i++)
		mreach_put(tn->reach[i]);
	free(tn->reach);
	tn->reach = NULL;
	tn->n_reach = 0;
}

/*
 * What x may open under the tailnet's view, its class's, computed once per class (NULL: no
 * policy, or x not compiled in yet, or over the caps: not said). 0, -ENOMEM.
 */
static int node_reach(struct mnode *x, const struct mreach **ret)
{
	struct mtailnet *tn = x->tn;
	struct mreach *c;
	size_t cl;
	int r;

	*ret = NULL;
	if (!tn->pol || x->pidx == SIZE_MAX)
		return 0;
	if (x->reach) {
		*ret = x->reach;
		return 0;
	}
	cl = policy_view_class(tn->view, x->pidx);
	/* There are at most as many classes as nodes. */
	if (!tn->reach) {
		tn->reach = calloc(tn->n_pnodes ? tn->n_pnodes : 1, sizeof(*tn->reach));
		if (!tn->reach)
			return -ENOMEM;
		tn->n_reach = tn->n_pnodes;
	}
	if (cl >= tn->n_reach)
		return -EINVAL;
	c = tn->reach[cl];
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return -ENOMEM;
		r = policy_view_reach(tn->view, tn->pnodes, x->pidx, &c->r);
		if (r == 0)
			r = ctrl_reach_encode(c->r, &c->json, &c->json_len);
		/* Over the caps: nothing said, the node shows nothing rather than a wrong list. */
		if (r == -E2BIG || r == -EINVAL) {
			netmap_reach_free(c->r);
			c->r = NULL;
			r = 0;
		}
		if (r < 0) {
			netmap_reach_free(c->r);
			free(c);
			return r;
		}
		c->refs = 1;
		c->serial = ++tn->reach_serial;
		tn->reach[cl] = c;
	}
	c->refs++;
	x->reach = c;
	*ret = c;
	return 0;
}

/*
 * After a new view is in force: what every subscriber may open now against what it was last
 * told; a difference marks it. Comparisons are per pair of classes (old, new), not per node.
 * Cannot fail: without memory, or when it can no longer be said, the subscriber gets a full map.
 */
static void reach_resync(struct mapper *m, struct mtailnet *tn)
{
	/* A memo of an earlier resync may name a class since freed and its address reused. */
	for (size_t i = 0; i < tn->n_subs; i++)
		if (tn->subs[i]->node->reach)
			tn->subs[i]->node->reach->cmp = NULL;
	for (size_t i = 0; i < tn->n_subs; i++) {
		struct msub *s = tn->subs[i];
		struct mreach *old = s->node->reach;
		const struct mreach *now;
		bool equal;

		s->node->reach = NULL;
		if (node_reach(s->node, &now) < 0) {
			s->overflow = true;
			dirty_add(m, s);
			mreach_put(old);
			continue;
		}
		if (!old || !now) {
			equal = !old && !now;
		} else if (old->cmp == now) {
			equal = old->cmp_equal;
		} else {
			equal = old == now || netmap_reach_equal(old->r, now->r);
			old->cmp = now;
			old->cmp_equal = equal;
		}
		/* "Not said" has no delta form: a full map says it. */
		if (!equal && (!now || !now->r)) {
			s->overflow = true;
			dirty_add(m, s);
		} else if (!equal) {
			s->reach_dirty = true;
			dirty_add(m, s);
		}
		mreach_put(old);
	}
}

/*
 * For a subscriber that takes patches: what it was told turned into now, list now's (a
 * class's) patch, made once per pair of lists and kept with now, so that the subscribers of a
 * class pay one diff between them. 1 with *ret (a copy; NULL: nothing changed), 0 when the
 * list is to be sent (no patch taken, nothing known, an all set, or a list shorter than the
 * patch), -ENOMEM.
 */
static int patch_to(struct msub *s, struct mreach *now, struct netmap_reach_patch **ret)
{
	struct mreach *told = s->told;
	const struct netmap_reach_patch *p;

	*ret = NULL;
	if (!s->reach_patch || !told || !told->r || !now->r)
		return 0;
	if (told == now)
		return 1;
	if (now->patch_base != told->serial) {
		struct netmap_reach_patch *q = NULL;
		int r = netmap_reach_diff(told->r, now->r, &q);

		if (r == -ENOMEM)
			return r;
		netmap_reach_patch_free(now->patch);
		now->patch = NULL;
		now->patch_base = told->serial;
		now->patch_same = r == 0 && !q->n_removed && !q->add->n_peers;
		/* A policy change may move most peers: then the list says it in fewer bytes. */
		if (r == 0 && !now->patch_same &&
		    q->n_removed + q->add->n_peers + q->add->n_ports <
			now->r->n_peers + now->r->n_ports) {
			now->patch = q;
			q = NULL;
		}
		netmap_reach_patch_free(q);
	}
	if (now->patch_same)
		return 1;
	p = now->patch;
	if (!p)
		return 0;
	*ret = netmap_reach_patch_dup(p);
	return *ret ? 1 : -ENOMEM;
}

/* Whatever render() reads of x changed (or may have): its cached JSON is stale. */
static void json_drop(struct mnode *x)
{
	free(x->json);
	x->json = NULL;
	x->json_len = 0;
}

static struct mnode *node_find(const struct mapper *m, uint64_t id)
{
	return id ? idmap_get(&m->nodes, id) : NULL;
}

/*
 * Tells everyone affected that x is about to change (fields in `flags`,
 * visibility from x->shown to new_shown), then applies the change. Marks come
 * first because an entry's was_visible must describe the state before.
 */
static void node_update(struct mapper *m, struct mnode *x, const struct control_node *rec,
			bool new_shown, uint8_t flags)
{
	struct mtailnet *tn = x->tn;
	bool vis_change = x->shown != new_shown;
	size_t i;

	if (!flags && !vis_change)
		return;
	json_drop(x);
	/* A peer hidden before and after is in no map: nothing to tell about it. */
	if (x->shown || new_shown) {
		uint8_t f = flags | (vis_change ? PEND_FULL : 0);

		for (i = 0; i < tn->n_subs; i++) {
			struct msub *s = tn->subs[i];

			/* A hidden viewer sees nothing; becoming shown marks all its peers. */
			if (s->node == x || !s->node->shown)
				continue;
			mark(m, s, x->rec.id, f, pair_visible(s->node, x));
		}
	}
	if (x->sub) {
		if (vis_change) {
			for (i = 0; i < tn->n_nodes; i++) {
				struct mnode *p = tn->nodes[i];

				if (p != x && p->shown)
					mark(m, x->sub, p->rec.id, PEND_FULL, pair_visible(x, p));
			}
		}
		x->sub->self_dirty = true;
		dirty_add(m, x->sub);
	}
	if (rec != &x->rec)
		x->rec = *rec;
	x->shown = new_shown;
	node_index(m, x);
}

/* ---- rendering ---- */

static void render(const struct mapper *m, const struct mnode *x, struct netmap_node *ret)
{
	const struct muser *u = x->rec.user_id ? idmap_get(&m->users, x->rec.user_id) : NULL;

	control_node_render(&x->rec, u ? u->name : NULL, ret);
}

/* ---- the access policy ---- */

static int tailnet_get(struct mapper *m, uint64_t id, struct mtailnet **ret);

/*
 * Marks for s the peers that appear or disappear going from the tailnet's view in force to
 * the row `now` of a new one (NULL: no policy, everyone shown is seen), a word at a time
 * instead of a pair at a time. Needs the view in force to have been compiled over the
 * nodes at their current indices (`compiled`: the nodes it holds), which is what a policy
 * change finds; `shown`: the nodes shown.
 */
static void view_diff(struct mapper *m, struct msub *s, const uint64_t *now, const uint64_t *shown,
		      const uint64_t *compiled, size_t words)
{
	const struct mnode *x = s->node;
	const struct mtailnet *tn = x->tn;
	const uint64_t *old = NULL;
	size_t old_words = 0;

	if (tn->pol && x->pidx != SIZE_MAX) {
		old = policy_view_row(tn->view, x->pidx);
		old_words = policy_view_words(tn->view);
	}
	for (size_t w = 0; w < words; w++) {
		uint64_t was = !tn->pol ? ~0ULL : w < old_words ? old[w] & compiled[w] : 0;
		uint64_t d = (was ^ (now ? now[w] : ~0ULL)) & shown[w];

		if (w == x->tn_idx / 64)
			d &= ~(1ULL << (x->tn_idx % 64));
		for (; d; d &= d - 1) {
			size_t j = w * 64 + (size_t)__builtin_ctzll(d);

			mark(m, s, tn->nodes[j]->rec.id, PEND_FULL, was >> (j % 64) & 1);
		}
	}
}

/*
 * A recompile of one tailnet's policy, in three steps so that the costly middle one may run on
 * another thread (mapper.h, "Compiling off the loop"): prepare reads the mapper (the nodes as
 * the policy sees them, which filters the subscribers need), run reads only the job and what
 * the tailnet keeps unchanged while a job is in flight (its policy, view and compiled nodes),
 * apply tells every subscriber what changed — provided nothing the job read changed
 * meanwhile, which tn->gen says.
 */
struct mapper_compile {
	uint64_t tailnet_id;
	uint64_t gen;	      /* tn->gen at prepare */
	struct policy *pol;   /* NULL: no policy; owned by the tailnet (pol or pol_next) */
	const struct policy_view *old_view; /* the view in force (NULL: none) */
	const struct policy_node *old_pn;   /* what it was compiled over */
	size_t n_old;
	struct policy_node *pn; /* the tailnet's nodes, in tn->nodes order */
	size_t *oidx;		/* node i's index in old_pn, or SIZE_MAX */
	size_t n;
	bool pol_same; /* the policy in force (not a new one) */
	/* The subscribers' filters: node index, known in force, kept or built. */
	size_t *fidx;
	bool *fknown, *keep;
	struct netmap_filter **filters;
	size_t n_f;
	struct policy_view *view;
	uint64_t built; /* filters built */
	int err;
};

static void compile_free(struct mapper_compile *c)
{
	if (!c)
		return;
	for (size_t i = 0; c->filters && i < c->n_f; i++)
		netmap_filter_free(c->filters[i]);
	free(c->filters);
	free(c->fidx);
	free(c->fknown);
	free(c->keep);
	free(c->oidx);
	free(c->pn);
	policy_view_free(c->view);
	free(c);
}

static int compile_prepare(struct mapper *m, struct mtailnet *tn, struct mapper_compile **ret)
{
	struct mapper_compile *c = calloc(1, sizeof(*c));
	size_t n = tn->n_nodes, i;

	if (!c)
		return -ENOMEM;
	c->tailnet_id = tn->id;
	c->gen = tn->gen;
	c->pol = tn->pol_next_set ? tn->pol_next : tn->pol;
	c->pol_same = !tn->pol_next_set || tn->pol_next == tn->pol;
	c->old_view = tn->pol ? tn->view : NULL;
	c->old_pn = tn->pnodes;
	c->n_old = tn->n_pnodes;
	c->n = n;
	if (!c->pol) {
		*ret = c;
		return 0;
	}
	c->pn = calloc(n ? n : 1, sizeof(*c->pn));
	c->oidx = calloc(n ? n : 1, sizeof(*c->oidx));
	c->fidx = calloc(tn->n_subs ? tn->n_subs : 1, sizeof(*c->fidx));
	c->fknown = calloc(tn->n_subs ? tn->n_subs : 1, sizeof(*c->fknown));
	c->keep = calloc(tn->n_subs ? tn->n_subs : 1, sizeof(*c->keep));
	c->filters = calloc(tn->n_subs ? tn->n_subs : 1, sizeof(*c->filters));
	if (!c->pn || !c->oidx || !c->fidx || !c->fknown || !c->keep || !c->filters) {
		compile_free(c);
		return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		const struct control_node *rec = &tn->nodes[i]->rec;
		const struct muser *u = rec->user_id ? idmap_get(&m->users, rec->user_id) : NULL;

		control_node_policy(rec, u ? u->name : NULL, &c->pn[i]);
		c->oidx[i] = c->old_view ? tn->nodes[i]->pidx : SIZE_MAX;
	}
	for (i = 0; i < tn->n_subs; i++) {
		c->fidx[i] = tn->subs[i]->node->tn_idx;
		c->fknown[i] = tn->subs[i]->node->filter_known;
	}
	c->n_f = tn->n_subs;
	*ret = c;
	return 0;
}

/* Whether the policy sees two nodes alike: everything but the name, which it never reads. */
static bool pnode_same(const struct policy_node *a, const struct policy_node *b)
{
	return a->id == b->id && !memcmp(a->user, b->user, sizeof(a->user)) &&
	       a->n_tags == b->n_tags && !memcmp(a->tags, b->tags, sizeof(a->tags)) &&
	       a->n_addrs == b->n_addrs && !memcmp(a->addrs, b->addrs, sizeof(a->addrs));
}

/*
 * Which subscribers keep their filter in force unbuilt. After a change of the policy alone
 * (the same nodes at the same indices): those whose filter is made of rules equal to the
 * rules in force (policy_view_match). After a change of nodes alone (the same policy): those
 * whose filter lists none of the nodes that came, went or changed as a source, before or
 * after (policy_view_sourced), and did not change themselves. Anything else builds every
 * filter.
 */
static int compile_keep(struct mapper_compile *c)
{
	uint64_t *now_rows = NULL, *old_rows = NULL, *changed = NULL;
	size_t words = (c->n + 63) / 64, old_words, i;
	bool same_nodes = c->n == c->n_old, *old_used = NULL;
	int r = 0;

	if (!c->old_view)
		return 0;
	for (i = 0; same_nodes && i < c->n; i++)
		same_nodes = c->oidx[i] == i && pnode_same(&c->old_pn[i], &c->pn[i]);
	if (same_nodes) {
		/* Without the match (memory), every filter is built: slower, as right. */
		if (policy_view_match(c->old_view, c->view) < 0)
			return 0;
		for (i = 0; i < c->n_f; i++)
			c->keep[i] = c->fknown[i] &&
				     policy_view_filter_same(c->old_view, c->view, c->fidx[i]);
		return 0;
	}
	if (!c->pol_same)
		return 0;
	old_words = policy_view_words(c->old_view);
	r = -ENOMEM;
	now_rows = calloc(words ? words : 1, sizeof(*now_rows));
	changed = calloc(words ? words : 1, sizeof(*changed));
	old_rows = calloc(old_words ? old_words : 1, sizeof(*old_rows));
	old_used = calloc(c->n_old ? c->n_old : 1, sizeof(*old_used));
	if (!now_rows || !changed || !old_rows || !old_used)
		goto out;
	for (i = 0; i < c->n; i++) {
		size_t o = c->oidx[i];

		if (o != SIZE_MAX) {
			old_used[o] = true;
			if (pnode_same(&c->old_pn[o], &c->pn[i]))
				continue;
			policy_view_sourced(c->old_view, c->old_pn, o, old_rows);
		}
		changed[i / 64] |= 1ULL << (i % 64);
		policy_view_sourced(c->view, c->pn, i, now_rows);
	}
	for (i = 0; i < c->n_old; i++)
		if (!old_used[i])
			policy_view_sourced(c->old_view, c->old_pn, i, old_rows);
	for (i = 0; i < c->n_f; i++) {
		size_t x = c->fidx[i], o = c->oidx[x];

		c->keep[i] = c->fknown[i] && o != SIZE_MAX && !(changed[x / 64] >> (x % 64) & 1) &&
			     !(now_rows[x / 64] >> (x % 64) & 1) &&
			     !(old_rows[o / 64] >> (o % 64) & 1);
	}
	r = 0;
out:
	free(now_rows);
	free(old_rows);
	free(changed);
	free(old_used);
	return r == -ENOMEM ? 0 : r; /* without memory: every filter built */
}

void mapper_compile_run(struct mapper_compile *c)
{
	int r = 0;

	if (!c->pol)
		goto out;
	r = policy_compile(c->pol, c->pn, c->n, &c->view);
	if (r < 0)
		goto out;
	r = compile_keep(c);
	for (size_t i = 0; r == 0 && i < c->n_f; i++) {
		if (c->keep[i])
			continue;
		r = policy_view_filter(c->view, c->pn, c->fidx[i], &c->filters[i]);
		c->built++;
		/* Over the netmap's caps fails closed, as view_filter does. */
		if (r == -E2BIG) {
			c->filters[i] = calloc(1, sizeof(*c->filters[i]));
			r = c->filters[i] ? 0 : -ENOMEM;
		}
	}
out:
	c->err = r;
}

/*
 * Puts a compile in force and tells every subscriber what changed: peers that appear or
 * disappear (marked with what they were), and its filter. -ESTALE when the tailnet changed
 * since prepare (the job is dropped, the tailnet stays stale); on failure (memory) the
 * tailnet stays stale and the old view stays in force, consistently: the next read retries.
 * Either way the caller frees c.
 */
static int compile_apply(struct mapper *m, struct mtailnet *tn, struct mapper_compile *c)
{
	struct policy *pol = c->pol;
	struct netmap_filter **nf = NULL;
	size_t *pos = NULL;
	uint64_t *shown = NULL, *compiled = NULL;
	bool same_idx = true, *keep = NULL;
	size_t i, j, words;
	int r;

	tn->filters_built += c->built;
	if (c->gen != tn->gen)
		return -ESTALE;
	if (c->err < 0)
		return c->err;
	r = -ENOMEM;
	nf = calloc(tn->n_subs ? tn->n_subs : 1, sizeof(*nf));
	keep = calloc(tn->n_subs ? tn->n_subs : 1, sizeof(*keep));
	pos = malloc((c->n ? c->n : 1) * sizeof(*pos));
	if (!nf || !keep || !pos)
		goto out;
	for (i = 0; i < c->n; i++)
		pos[i] = SIZE_MAX;
	for (i = 0; pol && i < c->n_f; i++)
		pos[c->fidx[i]] = i;
	/* Every subscriber's new filter first, so that nothing below can fail. */
	for (i = 0; pol && i < tn->n_subs; i++) {
		struct mnode *x = tn->subs[i]->node;
		const struct netmap_filter *old;

		j = pos[x->tn_idx];
		if (j != SIZE_MAX && c->keep[j] && x->filter_known) {
			keep[i] = true;
			continue;
		}
		if (j != SIZE_MAX && c->filters[j]) {
			nf[i] = c->filters[j];
			c->filters[j] = NULL;
		} else {
			/* Subscribed since prepare: built here, as rare as that. */
			r = view_filter(tn, c->view, c->pn, x->tn_idx, &nf[i]);
			if (r < 0)
				goto out;
		}
		/* The old one too, to compare: computed now, while the old view stands. */
		r = node_filter(x, &old);
		if (r < 0)
			goto out;
	}
	r = -ENOMEM;
	words = (tn->n_nodes + 63) / 64;
	shown = calloc(words ? words : 1, sizeof(*shown));
	compiled = calloc(words ? words : 1, sizeof(*compiled));
	if (!shown || !compiled)
		goto out;
	for (j = 0; j < tn->n_nodes; j++) {
		const struct mnode *p = tn->nodes[j];

		if (p->shown)
			shown[j / 64] |= 1ULL << (j % 64);
		if (p->pidx == j)
			compiled[j / 64] |= 1ULL << (j % 64);
		else if (p->pidx != SIZE_MAX)
			same_idx = false;
	}
	for (i = 0; i < tn->n_subs; i++) {
		struct msub *s = tn->subs[i];
		struct mnode *x = s->node;

		if (x->shown && same_idx) {
			view_diff(m, s, pol ? policy_view_row(c->view, x->tn_idx) : NULL, shown,
				  compiled, words);
		} else if (x->shown) {
			for (j = 0; j < tn->n_nodes; j++) {
				struct mnode *p = tn->nodes[j];
				bool was = pair_visible(x, p), now;

				if (p == x || !p->shown)
					continue;
				now = !pol || policy_view_sees(c->view, x->tn_idx, j);
				if (was != now)
					mark(m, s, p->rec.id, PEND_FULL, was);
			}
		}
		if (!pol) {
			/* Policy removed: "no filter" has no delta, a full map says it. */
			if (tn->pol) {
				s->overflow = true;
				dirty_add(m, s);
			}
			continue;
		}
		if (!keep[i] && (!tn->pol || !filter_equal(x->filter, nf[i]))) {
			s->filter_dirty = true;
			dirty_add(m, s);
		}
	}
	for (i = 0; i < tn->n_nodes; i++) {
		struct mnode *x = tn->nodes[i];

		if (!x->sub || !keep[x->sub->tn_idx])
			filter_drop(x);
		/* A subscriber's is compared with its new one below (reach_resync). */
		if (!x->sub || !pol)
			reach_drop(x);
		x->pidx = pol ? i : SIZE_MAX;
	}
	for (i = 0; i < tn->n_subs; i++) {
		struct mnode *x = tn->subs[i]->node;

		/* A subscriber keeps its filter cached: the next sync compares against it. */
		if (nf[i]) {
			x->filter = nf[i];
			x->filter_known = true;
			nf[i] = NULL;
		}
	}
	if (tn->pol_next_set && tn->pol != pol)
		policy_free(tn->pol);
	tn->pol = pol;
	tn->pol_next = NULL;
	tn->pol_next_set = false;
	policy_view_free(tn->view);
	free(tn->pnodes);
	tn->view = c->view;
	tn->pnodes = c->pn;
	tn->n_pnodes = pol ? tn->n_nodes : 0;
	c->view = NULL;
	c->pn = NULL;
	tn->stale = false;
	tailnet_reach_drop(tn);
	if (pol)
		reach_resync(m, tn);
	r = 0;
out:
	for (i = 0; nf && i < tn->n_subs; i++)
		netmap_filter_free(nf[i]);
	free(nf);
	free(keep);
	free(pos);
	free(shown);
	free(compiled);
	return r;
}

/* The three steps at once, on the loop. */
static int tailnet_sync(struct mapper *m, struct mtailnet *tn)
{
	struct mapper_compile *c = NULL;
	int r = compile_prepare(m, tn, &c);

	if (r < 0)
		return r;
	mapper_compile_run(c);
	r = compile_apply(m, tn, c);
	compile_free(c);
	return r;
}

/*
 * Recompiles every stale tailnet (see tailnet_sync); one that fails stays on the list. Off
 * the loop (mapper_compile_async), the server does it: reads keep the view in force.
 */
static void sync_all(struct mapper *m)
{
	struct mtailnet **pp = &m->stale_head;

	while (*pp) {
		struct mtailnet *tn = *pp;

		if (tn->stale && (m->async || tn->inflight || tailnet_sync(m, tn) < 0)) {
			pp = &tn->stale_next;
			continue;
		}
		*pp = tn->stale_next;
		tn->stale_next = NULL;
		tn->listed = false;
	}
}

void mapper_compile_async(struct mapper *m, bool on)
{
	m->async = on;
	if (!on)
		sync_all(m);
}

int mapper_compile_next(struct mapper *m, struct mapper_compile **ret)
{
	struct mtailnet **pp = &m->stale_head;
	int r;

	*ret = NULL;
	while (*pp) {
		struct mtailnet *tn = *pp;

		if (!tn->stale) {
			*pp = tn->stale_next;
			tn->stale_next = NULL;
			tn->listed = false;
			continue;
		}
		pp = &tn->stale_next;
		if (tn->inflight)
			continue;
		r = compile_prepare(m, tn, &tn->inflight);
		if (r < 0)
			return r;
		*ret = tn->inflight;
		return 1;
	}
	return 0;
}

int mapper_compile_done(struct mapper *m, struct mapper_compile *c, bool ran)
{
	struct mtailnet *tn = idmap_get(&m->tailnets, c->tailnet_id);
	int r = -ECANCELED;

	if (ran)
		r = compile_apply(m, tn, c);
	tn->inflight = NULL;
	/* The job's policy, replaced while it ran: in force nowhere (a stale job is dropped). */
	policy_free(tn->orphan);
	tn->orphan = NULL;
	compile_free(c);
	return r;
}

int mapper_policy_set(struct mapper *m, uint64_t tailnet_id, struct policy *pol)
{
	struct mtailnet *tn;
	int r;

	if (!tailnet_id) {
		policy_free(pol);
		return -EINVAL;
	}
	r = tailnet_get(m, tailnet_id, &tn);
	if (r < 0) {
		policy_free(pol);
		return r;
	}
	if (tn->pol_next_set && tn->pol_next != tn->pol) {
		/* A job off the loop still reads it: freed when the job is back. */
		if (tn->inflight && tn->inflight->pol == tn->pol_next)
			tn->orphan = tn->pol_next;
		else
			policy_free(tn->pol_next);
	}
	tn->pol_next = pol;
	tn->pol_next_set = true;
	/* Stale even without a policy in force (tailnet_stale would say no). */
	tn->pol_next_set = true;
	tailnet_stale(m, tn);
	/* Now, not at the next read: the subscribers it affects must land on the dirty list. */
	sync_all(m);
	return 0;
}

uint64_t mapper_policy_filters_built(const struct mapper *m, uint64_t tailnet_id)
{
	const struct mtailnet *tn = idmap_get(&m->tailnets, tailnet_id);

	return tn ? tn->filters_built : 0;
}

bool mapper_policy_has(const struct mapper *m, uint64_t tailnet_id)
{
	const struct mtailnet *tn = idmap_get(&m->tailnets, tailnet_id);

	return tn && (tn->pol_next_set ? tn->pol_next : tn->pol);
}

/* ---- public API ---- */

struct mapper *mapper_new(void)
{
	struct mapper *m = calloc(1, sizeof(struct mapper));

	if (m)
		m->shown.kind = HEAP_SHOWN;
	if (m && hmap_init(&m->keys) < 0) {
		free(m);
		return NULL;
	}
	return m;
}

static uint64_t key_hash(const struct mapper *m, const uint8_t *key)
{
	return hmap_hash(&m->keys, key, NETMAP_KEY_LEN);
}

static void node_destroy(struct mnode *x)
{
	json_drop(x);
	filter_drop(x);
	reach_drop(x);
	if (x->sub) {
		free(x->sub->pend);
		free(x->sub->mcert);
		mreach_put(x->sub->told);
	}
	free(x->sub);
	free(x);
}

void mapper_free(struct mapper *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nodes.cap; i++)
		if (m->nodes.keys[i])
			node_destroy(m->nodes.vals[i]);
	for (size_t i = 0; i < m->tailnets.cap; i++) {
		struct mtailnet *tn = m->tailnets.vals[i];

		if (!m->tailnets.keys[i])
			continue;
		free(tn->nodes);
		free(tn->subs);
		if (tn->pol_next != tn->pol)
			policy_free(tn->pol_next);
		policy_free(tn->pol);
		policy_free(tn->orphan);
		policy_view_free(tn->view);
		tailnet_reach_drop(tn);
		free(tn->pnodes);
		free(tn->expiring.v);
		free(tn->offline);
		free(tn);
	}
	for (size_t i = 0; i < m->users.cap; i++)
		if (m->users.keys[i])
			free(m->users.vals[i]);
	idmap_clear(&m->nodes);
	idmap_clear(&m->tailnets);
	idmap_clear(&m->users);
	hmap_fini(&m->keys);
	mapzc_free(m->zc);
	free(m->shown.v);
	free(m->relay_json);
	free(m);
}

static int tailnet_get(struct mapper *m, uint64_t id, struct mtailnet **ret)
{
	struct mtailnet *tn = idmap_get(&m->tailnets, id);
	int r;

	if (!tn) {
		tn = calloc(1, sizeof(*tn));
		if (!tn)
			return -ENOMEM;
		tn->id = id;
		tn->expiring.kind = HEAP_EXPIRING;
		/* A node may come before its tailnet's record: the default until it does. */
		control_tailnet_flow_log(&(struct control_tailnet){0}, &tn->flow_log);
		r = idmap_put(&m->tailnets, id, tn);
		if (r < 0) {
			free(tn);
			return r;
		}
	}
	*ret = tn;
	return 0;
}

int mapper_tailnet_upsert(struct mapper *m, const struct control_tailnet *t)
{
	struct netmap_flow_log fl;
	struct mtailnet *tn;
	int r;

	if (!t->id)
		return -EINVAL;
	r = tailnet_get(m, t->id, &tn);
	if (r < 0)
		return r;
	memcpy(tn->name, t->name, sizeof(tn->name));
	tn->name[sizeof(tn->name) - 1] = '\0';
	control_tailnet_flow_log(t, &fl);
	if (fl.enabled != tn->flow_log.enabled || fl.interval_ms != tn->flow_log.interval_ms) {
		tn->flow_log = fl;
		/* Rare (an admin's setting): every subscriber of the tailnet hears it. */
		for (size_t i = 0; i < tn->n_subs; i++) {
			tn->subs[i]->flow_log_dirty = true;
			dirty_add(m, tn->subs[i]);
		}
	}
	return 0;
}

int mapper_user_upsert(struct mapper *m, const struct control_user *u)
{
	struct muser *mu = idmap_get(&m->users, u->id);
	struct mtailnet *tn;
	int r;

	if (!u->id)
		return -EINVAL;
	if (!mu) {
		mu = calloc(1, sizeof(*mu));
		if (!mu)
			return -ENOMEM;
		r = idmap_put(&m->users, u->id, mu);
		if (r < 0) {
			free(mu);
			return r;
		}
		mu->id = u->id;
	} else if (!strncmp(mu->name, u->name, sizeof(mu->name))) {
		return 0;
	}
	memcpy(mu->name, u->name, sizeof(mu->name));
	mu->name[sizeof(mu->name) - 1] = '\0';
	mu->tailnet_id = u->tailnet_id;

	/* Rare (an admin rename): a scan of the tailnet is fine. */
	tn = idmap_get(&m->tailnets, u->tailnet_id);
	/* The policy names users: their nodes' peers and filters may change. */
	if (tn)
		tailnet_stale(m, tn);
	for (size_t i = 0; tn && i < tn->n_nodes; i++)
		if (tn->nodes[i]->rec.user_id == u->id)
			node_update(m, tn->nodes[i], &tn->nodes[i]->rec, tn->nodes[i]->shown,
				    PEND_FULL);
	return 0;
}

static bool endpoints_equal(const struct endpoint *a, unsigned na, const struct endpoint *b,
			    unsigned nb)
{
	if (na != nb)
		return false;
	for (unsigned i = 0; i < na; i++)
		if (!endpoint_equal(&a[i], &b[i]))
			return false;
	return true;
}

static bool tags_equal(const struct control_node *a, const struct control_node *b)
{
	if (a->n_tags != b->n_tags)
		return false;
	for (unsigned i = 0; i < a->n_tags; i++)
		if (strncmp(a->tags[i], b->tags[i], NETMAP_TAG_MAX))
			return false;
	return true;
}

/* Whether the fields that make up a peer's record (other than the patchable ones) differ. */
static bool record_differs(const struct control_node *a, const struct control_node *b)
{
	return strncmp(a->name, b->name, NETMAP_NAME_MAX) || strncmp(a->os, b->os, NETMAP_OS_MAX) ||
	       memcmp(a->node_key, b->node_key, NETMAP_KEY_LEN) ||
	       memcmp(a->machine_key, b->machine_key, NETMAP_KEY_LEN) ||
	       memcmp(a->ipv4, b->ipv4, 4) || a->user_id != b->user_id ||
	       a->key_expiry != b->key_expiry || !tags_equal(a, b);
}

static int node_add(struct mapper *m, const struct control_node *n, int64_t now)
{
	struct mtailnet *tn;
	struct mnode *x = NULL;
	int ret;

	ret = tailnet_get(m, n->tailnet_id, &tn);
	if (ret < 0)
		goto out;
	ret = -ENOMEM;
	x = calloc(1, sizeof(*x));
	if (!x)
		goto out;
	/* Reserve every slot now so that nothing after the table insert can fail. */
	if (ptrs_reserve((void ***)&tn->nodes, tn->n_nodes, &tn->cap_nodes) < 0 ||
	    ptrs_reserve((void ***)&tn->expiring.v, tn->n_nodes, &tn->expiring.cap) < 0 ||
	    ptrs_reserve((void ***)&tn->offline, tn->n_nodes, &tn->cap_offline) < 0 ||
	    ptrs_reserve((void ***)&m->shown.v, m->nodes.n, &m->shown.cap) < 0)
		goto out;
	ret = idmap_put(&m->nodes, n->id, x);
	if (ret < 0)
		goto out;
	x->rec = *n;
	x->tn = tn;
	hmap_insert(&m->keys, &x->by_key, key_hash(m, n->node_key));
	m->gen++;
	x->heap_idx[HEAP_SHOWN] = x->heap_idx[HEAP_EXPIRING] = HEAP_NONE;
	x->off_idx = SIZE_MAX;
	x->pidx = SIZE_MAX;
	x->tn_idx = tn->n_nodes;
	tn->nodes[tn->n_nodes++] = x;
	/* Born hidden, then shown through the same path as any change: peers get an "added". */
	node_update(m, x, &x->rec, control_node_visible(&x->rec, now), PEND_FULL);
	tailnet_stale(m, tn);
	x = NULL;
	ret = 0;
out:
	free(x);
	return ret;
}

int mapper_node_upsert(struct mapper *m, const struct control_node *n, int64_t now)
{
	struct mnode *x;
	struct control_node rec;
	uint8_t flags = 0;

	if (!n->id || !n->tailnet_id || n->n_endpoints > NETMAP_MAX_ENDPOINTS ||
	    n->n_tags > NETMAP_MAX_TAGS)
		return -EINVAL;
	x = node_find(m, n->id);
	if (!x)
		return node_add(m, n, now);
	if (x->tn->id != n->tailnet_id)
		return -EINVAL;

	rec = *n;
	rec.online = x->rec.online;
	rec.last_seen = x->rec.last_seen;
	rec.home_region = x->rec.home_region;
	rec.has_disco_key = x->rec.has_disco_key;
	memcpy(rec.disco_key, x->rec.disco_key, NETMAP_KEY_LEN);
	rec.mapping_varies = x->rec.mapping_varies;
	if (record_differs(&x->rec, &rec))
		flags |= PEND_FULL;
	if (!endpoints_equal(x->rec.endpoints, x->rec.n_endpoints, rec.endpoints, rec.n_endpoints))
		flags |= PEND_ENDPOINTS;
	if (memcmp(x->rec.node_key, rec.node_key, NETMAP_KEY_LEN) != 0) {
		hmap_remove(&m->keys, &x->by_key);
		hmap_insert(&m->keys, &x->by_key, key_hash(m, rec.node_key));
	}
	m->gen++;
	/* What the policy looks at: who owns the node, its tags, its address. */
	if (x->rec.user_id != rec.user_id || !tags_equal(&x->rec, &rec) ||
	    memcmp(x->rec.ipv4, rec.ipv4, 4))
		tailnet_stale(m, x->tn);
	node_update(m, x, &rec, control_node_visible(&rec, now), flags);
	/* Fields outside any netmap (hostname, expiry opt-out, ...) are kept without a delta. */
	x->rec = rec;
	/* Cheap insurance: an upsert is rare next to full maps, a stale record would be silent. */
	json_drop(x);
	node_index(m, x);
	return 0;
}

int mapper_node_remove(struct mapper *m, uint64_t id)
{
	struct mnode *x = node_find(m, id);
	struct mtailnet *tn;

	if (!x)
		return -ENOENT;
	tn = x->tn;
	mapper_unsubscribe(m, id);
	tailnet_stale(m, tn);
	/* Same as becoming hidden, as far as the peers are concerned. */
	node_update(m, x, &x->rec, false, 0);
	node_unindex(m, x);
	hmap_remove(&m->keys, &x->by_key);
	m->gen++;
	tn->nodes[x->tn_idx] = tn->nodes[--tn->n_nodes];
	tn->nodes[x->tn_idx]->tn_idx = x->tn_idx;
	idmap_del(&m->nodes, id);
	node_destroy(x);
	return 0;
}

int mapper_node_endpoints(struct mapper *m, uint64_t id, const struct endpoint *eps, unsigned n)
{
	struct mnode *x = node_find(m, id);
	struct control_node rec;

	if (!x)
		return -ENOENT;
	if (n > NETMAP_MAX_ENDPOINTS)
		return -EINVAL;
	if (endpoints_equal(x->rec.endpoints, x->rec.n_endpoints, eps, n))
		return 0;
	/* node_update copies the record; a whole control_node on the stack is ~1.3 KiB, fine. */
	rec = x->rec;
	memset(rec.endpoints, 0, sizeof(rec.endpoints));
	memcpy(rec.endpoints, eps, n * sizeof(*eps));
	rec.n_endpoints = n;
	node_update(m, x, &rec, x->shown, PEND_ENDPOINTS);
	return 0;
}

int mapper_node_home_region(struct mapper *m, uint64_t id, uint32_t region)
{
	struct mnode *x = node_find(m, id);
	struct control_node rec;

	if (!x)
		return -ENOENT;
	if (region > NETMAP_RELAY_REGION_ID_MAX)
		return -EINVAL;
	if (x->rec.home_region == region)
		return 1;
	/* Rare (a node's home moves with its network): a changed record, no patch of its own. */
	rec = x->rec;
	rec.home_region = region;
	node_update(m, x, &rec, x->shown, PEND_FULL);
	return 0;
}

int mapper_node_disco_key(struct mapper *m, uint64_t id, const uint8_t *key)
{
	struct mnode *x = node_find(m, id);
	struct control_node rec;

	if (!x)
		return -ENOENT;
	if (!key || (x->rec.has_disco_key && !memcmp(x->rec.disco_key, key, NETMAP_KEY_LEN)))
		return 1;
	/* Rare (once per daemon start): a changed record, like the home region. */
	rec = x->rec;
	rec.has_disco_key = true;
	memcpy(rec.disco_key, key, NETMAP_KEY_LEN);
	node_update(m, x, &rec, x->shown, PEND_FULL);
	return 0;
}

int mapper_node_mapping_varies(struct mapper *m, uint64_t id, bool varies)
{
	struct mnode *x = node_find(m, id);
	struct control_node rec;

	if (!x)
		return -ENOENT;
	if (x->rec.mapping_varies == varies)
		return 1;
	/* Rare (the node's network changed): a changed record, like the home region. */
	rec = x->rec;
	rec.mapping_varies = varies;
	node_update(m, x, &rec, x->shown, PEND_FULL);
	return 0;
}

int mapper_relaymap_set(struct mapper *m, const struct netmap_relay_map *rm)
{
	char *json = NULL;
	size_t len = 0, i, j;
	int r;

	if (relaymap_equal(&m->relay_map, rm))
		return 0;
	if (rm->n_regions) {
		r = relaymap_encode(rm, &json, &len);
		if (r < 0)
			return r;
	}
	free(m->relay_json);
	m->relay_json = json;
	m->relay_json_len = len;
	m->relay_map = *rm;
	/* Everyone with a stream gets it: the map is the same for every tailnet. */
	for (i = 0; i < m->tailnets.cap; i++) {
		struct mtailnet *tn = m->tailnets.keys[i] ? m->tailnets.vals[i] : NULL;

		for (j = 0; tn && j < tn->n_subs; j++) {
			tn->subs[j]->relay_dirty = true;
			dirty_add(m, tn->subs[j]);
		}
	}
	return 0;
}

const struct netmap_relay_map *mapper_relaymap(const struct mapper *m)
{
	return &m->relay_map;
}

int mapper_node_online(struct mapper *m, uint64_t id, bool online, int64_t now)
{
	struct mnode *x = node_find(m, id);
	struct control_node rec;

	if (!x)
		return -ENOENT;
	if (x->rec.online == online && x->rec.last_seen == now)
		return 0;
	rec = x->rec;
	rec.online = online;
	rec.last_seen = now;
	node_update(m, x, &rec, x->shown, PEND_ONLINE);
	return 0;
}

const struct control_node *mapper_node_get(const struct mapper *m, uint64_t id)
{
	const struct mnode *x = node_find(m, id);

	return x ? &x->rec : NULL;
}

size_t mapper_node_count(const struct mapper *m)
{
	return m->nodes.n;
}

const struct control_node *mapper_node_by_key(const struct mapper *m,
					      const uint8_t key[NETMAP_KEY_LEN])
{
	uint64_t hash = key_hash(m, key);

	for (struct hmap_node *n = hmap_first_with_hash(&m->keys, hash); n;
	     n = hmap_next_with_hash(n)) {
		const struct mnode *x = container_of(n, struct mnode, by_key);

		if (memcmp(x->rec.node_key, key, NETMAP_KEY_LEN) == 0)
			return &x->rec;
	}
	return NULL;
}

uint64_t mapper_generation(const struct mapper *m)
{
	return m->gen;
}

int mapper_expire(struct mapper *m, int64_t now)
{
	int count = 0;

	while (m->shown.n && m->shown.v[0]->heap_key[HEAP_SHOWN] <= now) {
		struct mnode *x = m->shown.v[0];
		int64_t key = x->heap_key[HEAP_SHOWN];

		heap_del(&m->shown, x);
		if (!control_node_visible(&x->rec, now)) {
			node_update(m, x, &x->rec, false, 0);
			m->gen++;
			count++;
		} else if (key == now) {
			/* Expiry may be exclusive of its second: look again one second later. */
			heap_set(&m->shown, x, now + 1);
		}
		/* Still visible past its expiry: exempt (expiry disabled); upsert re-arms it. */
	}
	return count;
}

int64_t mapper_next_expiry(const struct mapper *m)
{
	return m->shown.n ? m->shown.v[0]->heap_key[HEAP_SHOWN] : INT64_MAX;
}

int mapper_subscribe(struct mapper *m, uint64_t id)
{
	struct mnode *x = node_find(m, id);
	struct msub *s;
	struct mtailnet *tn;

	if (!x)
		return -ENOENT;
	if (x->sub)
		return 0;
	tn = x->tn;
	if (ptrs_reserve((void ***)&tn->subs, tn->n_subs, &tn->cap_subs) < 0)
		return -ENOMEM;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->node = x;
	s->tn_idx = tn->n_subs;
	tn->subs[tn->n_subs++] = s;
	x->sub = s;
	return 0;
}

void mapper_unsubscribe(struct mapper *m, uint64_t id)
{
	struct mnode *x = node_find(m, id);
	struct mtailnet *tn;
	struct msub *s;

	if (!x || !x->sub)
		return;
	s = x->sub;
	tn = x->tn;
	dirty_del(m, s);
	tn->subs[s->tn_idx] = tn->subs[--tn->n_subs];
	tn->subs[s->tn_idx]->tn_idx = s->tn_idx;
	free(s->pend);
	free(s->mcert);
	mreach_put(s->told);
	free(s);
	x->sub = NULL;
}

int mapper_node_mcert(struct mapper *m, uint64_t id, const char *b64)
{
	struct mnode *x = node_find(m, id);
	char *copy;

	if (!x || !x->sub)
		return -ENOENT;
	if (strnlen(b64, NETMAP_MCERT_MAX) >= NETMAP_MCERT_MAX)
		return -EINVAL;
	copy = strdup(b64);
	if (!copy)
		return -ENOMEM;
	free(x->sub->mcert);
	x->sub->mcert = copy;
	dirty_add(m, x->sub);
	return 0;
}

int mapper_reach_patch_set(struct mapper *m, uint64_t id, bool on)
{
	struct mnode *x = node_find(m, id);

	if (!x || !x->sub)
		return -ENOENT;
	x->sub->reach_patch = on;
	return 0;
}

bool mapper_subscribed(const struct mapper *m, uint64_t id)
{
	const struct mnode *x = node_find(m, id);

	return x && x->sub;
}

int mapper_netmap(struct mapper *m, uint64_t id, int64_t now, struct netmap **ret)
{
	const struct netmap_filter *f;
	const struct mreach *re;
	struct netmap *nm = NULL;
	struct mnode *x;
	struct mtailnet *tn;
	size_t i, n = 0;
	int r;

	mapper_expire(m, now);
	sync_all(m);
	r = -ENOENT;
	x = node_find(m, id);
	if (!x)
		goto out;
	tn = x->tn;
	for (i = 0; i < tn->n_nodes; i++)
		n += pair_visible(x, tn->nodes[i]);

	r = -ENOMEM;
	nm = calloc(1, sizeof(*nm));
	if (!nm)
		goto out;
	r = node_filter(x, &f);
	if (r < 0)
		goto out;
	r = node_reach(x, &re);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	if (f && !(nm->filter = netmap_filter_dup(f)))
		goto out;
	if (re && re->r && !(nm->reach = netmap_reach_dup(re->r)))
		goto out;
	if (n) {
		nm->peers = malloc(n * sizeof(*nm->peers));
		if (!nm->peers)
			goto out;
	}
	for (i = 0; i < tn->n_nodes; i++)
		if (pair_visible(x, tn->nodes[i]))
			render(m, tn->nodes[i], &nm->peers[nm->n_peers++]);
	render(m, x, &nm->self);
	memcpy(nm->tailnet, tn->name, sizeof(nm->tailnet));
	nm->relay_map = m->relay_map;
	nm->flow_log = tn->flow_log;
	nm->seq = ++m->seq;
	nm->version = m->version;
	if (x->sub) {
		sub_superseded(m, x->sub);
		sub_told(x->sub, x->reach);
	}
	*ret = nm;
	nm = NULL;
	r = 0;
out:
	netmap_free(nm);
	return r;
}

/* x's record as netmap JSON, encoded on first use and kept until x changes. */
static int node_json(const struct mapper *m, struct mnode *x, struct ctrl_json_piece *ret)
{
	struct netmap_node nn;
	int r;

	if (!x->json) {
		render(m, x, &nn);
		r = ctrl_node_encode(&nn, &x->json, &x->json_len);
		if (r < 0)
			return r;
	}
	ret->p = x->json;
	ret->len = x->json_len;
	return 0;
}

/*
 * The full netmap of node id as JSON text or, with zc, as the zstd frames of that
 * text (mapzc.h): the same text either way, one seq.
 */
static int netmap_build(struct mapper *m, uint64_t id, int64_t now, bool zc, char **ret,
			size_t *ret_len)
{
	struct ctrl_json_piece self, relay, filter = {0}, reach = {0}, *peers = NULL;
	struct mapzc_peer *zpeers = NULL;
	const struct netmap_filter *f;
	const struct mreach *re;
	char *fjson = NULL, *json = NULL;
	struct mnode *x;
	struct mtailnet *tn;
	size_t i, n = 0, k = 0;
	size_t len;
	int r;

	mapper_expire(m, now);
	sync_all(m);
	r = -ENOENT;
	x = node_find(m, id);
	if (!x)
		goto out;
	tn = x->tn;
	for (i = 0; i < tn->n_nodes; i++)
		n += pair_visible(x, tn->nodes[i]);
	r = -EINVAL;
	if (n > NETMAP_MAX_PEERS)
		goto out;
	r = -ENOMEM;
	if (n && !(peers = malloc(n * sizeof(*peers))))
		goto out;
	if (zc && n && !(zpeers = malloc(n * sizeof(*zpeers))))
		goto out;
	if (zc && !m->zc && (r = mapzc_new(&m->zc)) < 0)
		goto out;
	/* Same order as mapper_netmap, so both give the same text. */
	for (i = 0; i < tn->n_nodes; i++) {
		if (!pair_visible(x, tn->nodes[i]))
			continue;
		r = node_json(m, tn->nodes[i], &peers[k]);
		if (r < 0)
			goto out;
		if (zpeers)
			zpeers[k] = (struct mapzc_peer){.p = peers[k].p,
							.len = peers[k].len,
							.block = (uint32_t)(i / MAPZC_BLOCK)};
		k++;
	}
	r = node_json(m, x, &self);
	if (r < 0)
		goto out;
	relay.p = m->relay_json;
	relay.len = m->relay_json_len;
	r = node_filter(x, &f);
	if (r == 0 && f)
		r = ctrl_filter_encode(f, &fjson, &filter.len);
	if (r < 0)
		goto out;
	filter.p = fjson;
	r = node_reach(x, &re);
	if (r < 0)
		goto out;
	if (re && re->json) {
		reach.p = re->json;
		reach.len = re->json_len;
	}
	/* Compressed: the text without peers gives the head and the tail around them. */
	r = ctrl_netmap_join(m->seq + 1, &m->version, tn->name, &self, peers, zc ? 0 : (unsigned)n,
			     &relay, &filter, &tn->flow_log, &reach, &json, &len);
	if (r < 0)
		goto out;
	if (zc) {
		static const char mark[] = ",\"peers\":[";
		/* Strings are escaped ("\"), so the first such key is ours: self has no peers. */
		const char *p = memmem(json, len, mark, sizeof(mark) - 1);
		size_t head_len = (size_t)(p - json) + sizeof(mark) - 1;
		uint8_t *z = NULL;

		r = -EINVAL;
		if (!p)
			goto out;
		r = mapzc_netmap(m->zc, tn->id, json, head_len, zpeers, n,
				 (uint32_t)(x->tn_idx / MAPZC_BLOCK), json + head_len,
				 len - head_len, &z, &len);
		if (r < 0)
			goto out;
		free(json);
		json = (char *)z;
	}
	m->seq++;
	if (x->sub) {
		sub_superseded(m, x->sub);
		sub_told(x->sub, x->reach);
	}
	*ret = json;
	*ret_len = len;
	json = NULL;
out:
	free(json);
	free(fjson);
	free(zpeers);
	free(peers);
	return r;
}

int mapper_netmap_json(struct mapper *m, uint64_t id, int64_t now, char **ret, size_t *ret_len)
{
	return netmap_build(m, id, now, false, ret, ret_len);
}

int mapper_netmap_zstd(struct mapper *m, uint64_t id, int64_t now, uint8_t **ret, size_t *ret_len)
{
	return netmap_build(m, id, now, true, (char **)ret, ret_len);
}

int mapper_zstd_stats(const struct mapper *m, struct mapzc_stats *ret)
{
	if (!m->zc)
		return -ENOENT;
	mapzc_stats(m->zc, ret);
	return 0;
}

enum pend_kind { PK_NONE, PK_ADDED, PK_REMOVED, PK_CHANGED, PK_PATCH };

static enum pend_kind pend_classify(const struct mapper *m, const struct mnode *v,
				    const struct pend *e, const struct mnode **ret_peer)
{
	const struct mnode *p = node_find(m, e->id);
	bool now = p && pair_visible(v, p);

	*ret_peer = p;
	if (!e->was_visible)
		return now ? PK_ADDED : PK_NONE;
	if (!now)
		return PK_REMOVED;
	return (e->flags & PEND_FULL) ? PK_CHANGED : PK_PATCH;
}

int mapper_take_delta(struct mapper *m, uint64_t id, struct netmap_delta **ret)
{
	struct netmap_delta *d = NULL;
	struct mnode *x = node_find(m, id);
	struct msub *s;
	unsigned n_add = 0, n_chg = 0, n_rm = 0, n_ep = 0, n_on = 0;
	size_t i;
	int r;

	sync_all(m);
	if (!x || !x->sub)
		return -ENOENT;
	s = x->sub;
	dirty_del(m, s);
	r = -ENOBUFS;
	if (s->overflow)
		goto out;

	for (i = 0; i < s->pend_cap; i++) {
		const struct pend *e = &s->pend[i];
		const struct mnode *p;

		if (!e->id)
			continue;
		switch (pend_classify(m, x, e, &p)) {
		case PK_ADDED:
			n_add++;
			break;
		case PK_REMOVED:
			n_rm++;
			break;
		case PK_CHANGED:
			n_chg++;
			break;
		case PK_PATCH:
			n_ep += !!(e->flags & PEND_ENDPOINTS);
			n_on += !!(e->flags & PEND_ONLINE);
			break;
		case PK_NONE:
			break;
		}
	}
	if (!n_add && !n_rm && !n_chg && !n_ep && !n_on && !s->self_dirty && !s->relay_dirty &&
	    !s->filter_dirty && !s->flow_log_dirty && !s->mcert && !s->reach_dirty) {
		pend_reset(s);
		*ret = NULL;
		return 0;
	}

	r = -ENOMEM;
	d = calloc(1, sizeof(*d));
	if (!d)
		goto out;
	if ((n_add && !(d->added = malloc(n_add * sizeof(*d->added)))) ||
	    (n_chg && !(d->changed = malloc(n_chg * sizeof(*d->changed)))) ||
	    (n_rm && !(d->removed = malloc(n_rm * sizeof(*d->removed)))) ||
	    (n_ep && !(d->endpoints = calloc(n_ep, sizeof(*d->endpoints)))) ||
	    (n_on && !(d->online = calloc(n_on, sizeof(*d->online)))) ||
	    (s->relay_dirty && !(d->relay_map = malloc(sizeof(*d->relay_map)))))
		goto out;
	if (s->relay_dirty)
		*d->relay_map = m->relay_map;
	if (s->filter_dirty) {
		const struct netmap_filter *f;

		r = node_filter(x, &f);
		if (r < 0 || (f && !(d->filter = netmap_filter_dup(f)))) {
			r = r < 0 ? r : -ENOMEM;
			goto out;
		}
		r = -ENOMEM;
	}
	if (s->reach_dirty) {
		const struct mreach *re;

		/* reach_resync marks only a class that can be said (else a full map). */
		r = node_reach(x, &re);
		if (r == 0 && re && re->r)
			r = patch_to(s, x->reach, &d->reach_patch);
		if (r < 0 || (r == 0 && re && re->r && !(d->reach = netmap_reach_dup(re->r)))) {
			r = r < 0 ? r : -ENOMEM;
			goto out;
		}
		r = -ENOMEM;
	}

	for (i = 0; i < s->pend_cap; i++) {
		const struct pend *e = &s->pend[i];
		const struct mnode *p;

		if (!e->id)
			continue;
		switch (pend_classify(m, x, e, &p)) {
		case PK_ADDED:
			render(m, p, &d->added[d->n_added++]);
			break;
		case PK_REMOVED:
			d->removed[d->n_removed++] = e->id;
			break;
		case PK_CHANGED:
			render(m, p, &d->changed[d->n_changed++]);
			break;
		case PK_PATCH:
			if (e->flags & PEND_ENDPOINTS) {
				struct netmap_endpoint_patch *ep = &d->endpoints[d->n_endpoints++];

				ep->id = e->id;
				ep->n_endpoints = p->rec.n_endpoints;
				memcpy(ep->endpoints, p->rec.endpoints,
				       p->rec.n_endpoints * sizeof(ep->endpoints[0]));
			}
			if (e->flags & PEND_ONLINE) {
				struct netmap_online_patch *op = &d->online[d->n_online++];

				op->id = e->id;
				op->online = p->rec.online;
				op->last_seen = p->rec.last_seen;
			}
			break;
		case PK_NONE:
			break;
		}
	}
	if (s->self_dirty) {
		d->has_self = true;
		render(m, x, &d->self);
	}
	if (s->flow_log_dirty)
		d->flow_log = x->tn->flow_log;
	d->machine_cert = s->mcert;
	s->mcert = NULL;
	d->seq = ++m->seq;
	d->version = m->version;
	if (s->reach_dirty)
		sub_told(s, x->reach);
	pend_reset(s);
	*ret = d;
	d = NULL;
	r = 0;
out:
	netmap_delta_free(d);
	return r;
}

int mapper_drop_delta(struct mapper *m, uint64_t id)
{
	struct netmap_delta *d = NULL;
	struct mnode *x = node_find(m, id);
	char *mcert;
	int r;

	if (!x || !x->sub)
		return -ENOENT;
	/* Not in a full map: held back, not dirty; the map's sub_superseded wakes it. */
	mcert = x->sub->mcert;
	x->sub->mcert = NULL;
	r = mapper_take_delta(m, id, &d);
	x->sub->mcert = mcert;
	r = r == 0 && d;
	netmap_delta_free(d);
	return r;
}

void mapper_version_set(struct mapper *m, const struct netmap_version *v)
{
	m->version = *v;
}

void mapper_seq_floor(struct mapper *m, uint64_t seq)
{
	m->seq = MAX(m->seq, seq);
}

/*
 * What a resume tells of the peers the caller names (the change feed since the held map):
 * the subscriber's pending state starts from it. Whether the node holds a peer we cannot
 * know: one it may see now comes as added (replacing a record it holds), one it may not as
 * removed (ignored if it holds none). Records first: a later endpoint patch of the same peer
 * only joins its entry. NULL: not subscribed.
 */
static struct msub *resume_begin(struct mapper *m, uint64_t id, const struct mapper_missed *missed,
				 size_t n, bool relay, int64_t now)
{
	struct mnode *x;
	struct msub *s;

	mapper_expire(m, now);
	sync_all(m);
	x = node_find(m, id);
	if (!x || !x->sub)
		return NULL;
	s = x->sub;
	pend_reset(s);
	s->self_dirty = true;
	s->relay_dirty = relay;
	/* Not worth knowing whether it changed: the filter is small next to a full map. */
	s->filter_dirty = x->tn->pol != NULL;
	s->reach_dirty = x->tn->pol != NULL;
	/* What the held map says of it is not known here: the list, not a patch. */
	sub_told(s, NULL);
	dirty_add(m, s);
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < n; i++) {
			const struct mnode *p = node_find(m, missed[i].id);
			bool seen = p && pair_visible(x, p);

			if (missed[i].id == id || missed[i].live_only != (pass == 1))
				continue;
			if (!missed[i].live_only)
				mark(m, s, missed[i].id, PEND_FULL, !seen);
			else if (seen)
				mark(m, s, missed[i].id, PEND_ENDPOINTS | PEND_ONLINE, true);
		}
	}
	return s;
}

/*
 * Keys that lapsed while it was away leave no trace in the feed: the nodes of the tailnet's
 * expiry heap at or before now, a subtree at its root (a subtree ends at its first later
 * expiry), so this costs what it finds, not the tailnet. Depth: the heap's, log2 of its size.
 */
static void resume_lapsed(struct mapper *m, struct msub *s, const struct nheap *h, size_t i,
			  int64_t now)
{
	const struct mnode *p;

	if (i >= h->n)
		return;
	m->resume_walked++;
	p = h->v[i];
	if (p->heap_key[HEAP_EXPIRING] > now)
		return;
	if (p != s->node && !pair_visible(s->node, p))
		mark(m, s, p->rec.id, PEND_FULL, true);
	resume_lapsed(m, s, h, 2 * i + 1, now);
	resume_lapsed(m, s, h, 2 * i + 2, now);
}

int mapper_resume(struct mapper *m, uint64_t id, const struct mapper_missed *missed, size_t n,
		  bool relay, int64_t now)
{
	struct mtailnet *tn;
	struct msub *s;

	s = resume_begin(m, id, missed, n, relay, now);
	if (!s)
		return -ENOENT;
	tn = s->node->tn;
	resume_lapsed(m, s, &tn->expiring, 0, now);
	/*
	 * Peers we do not know to be online: after a crash every node starts offline and the map
	 * it holds says otherwise (a planned restart presumes them online). A lapsed key is not
	 * visible: it was told above, never here.
	 */
	for (size_t i = 0; i < tn->n_offline; i++) {
		const struct mnode *p = tn->offline[i];

		m->resume_walked++;
		if (pair_visible(s->node, p))
			mark(m, s, p->rec.id, PEND_ONLINE, true);
	}
	return s->overflow ? -ENOMEM : 0;
}

uint64_t mapper_resume_walked(const struct mapper *m)
{
	return m->resume_walked;
}

uint64_t mapper_dirty_first(struct mapper *m)
{
	sync_all(m);
	return m->dirty_head ? m->dirty_head->node->rec.id : 0;
}

size_t mapper_dirty_count(struct mapper *m)
{
	sync_all(m);
	return m->n_dirty;
}
