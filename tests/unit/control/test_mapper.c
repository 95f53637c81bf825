/* SPDX-License-Identifier: MIT */
/*
 * The mapper: full maps, which subscribers a change reaches, coalescing,
 * expiry, tailnet isolation, and a randomized model check: a subscriber that
 * applies the deltas it is given to its first full map always holds the same
 * map as a freshly computed one.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "base/util.h"
#include "control/mapper.h"
#include "control/mapzc.h"
#include "policy/policy.h"
#include "proto/ctrlmsg.h"
#include "proto/mapz.h"

#include "mapper_tailnets.h"

#define T0 1800000000LL

static struct control_node mk_node(uint64_t id, uint64_t tailnet)
{
	struct control_node n;

	memset(&n, 0, sizeof(n));
	n.id = id;
	n.tailnet_id = tailnet;
	n.user_id = 100 + tailnet;
	snprintf(n.name, sizeof(n.name), "node-%llu", (unsigned long long)id);
	snprintf(n.hostname, sizeof(n.hostname), "node-%llu", (unsigned long long)id);
	snprintf(n.os, sizeof(n.os), "linux");
	memset(n.machine_key, (int)id, NETMAP_KEY_LEN);
	memset(n.node_key, (int)(id + 1), NETMAP_KEY_LEN);
	n.ipv4[0] = 100;
	n.ipv4[1] = 64 + (uint8_t)(id >> 16);
	n.ipv4[2] = (uint8_t)(id >> 8);
	n.ipv4[3] = (uint8_t)id;
	n.approved = true;
	n.created = T0;
	return n;
}

static struct endpoint mk_ep(unsigned a, unsigned port)
{
	struct endpoint ep;
	char s[64];

	memset(&ep, 0, sizeof(ep));
	snprintf(s, sizeof(s), "198.51.100.%u:%u", a % 256, port);
	assert_int_equal(endpoint_parse(&ep, s), 0);
	return ep;
}

static struct mapper *mk_mapper(void)
{
	return mapper_with_tailnets(3);
}

static void add(struct mapper *m, uint64_t id, uint64_t tailnet)
{
	struct control_node n = mk_node(id, tailnet);

	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
}

static bool has_peer(const struct netmap *nm, uint64_t id)
{
	return netmap_peer_find(nm, id) != NULL;
}

/* Takes every pending delta; returns the subscriber ids that got a non-empty one. */
static unsigned flush(struct mapper *m, uint64_t *ids, struct netmap_delta **deltas, unsigned max)
{
	unsigned n = 0;
	uint64_t id;

	while ((id = mapper_dirty_first(m))) {
		struct netmap_delta *d;

		assert_int_equal(mapper_take_delta(m, id, &d), 0);
		if (!d)
			continue;
		assert_true(n < max);
		ids[n] = id;
		deltas[n++] = d;
	}
	assert_int_equal(mapper_dirty_count(m), 0);
	return n;
}

static void free_deltas(struct netmap_delta **d, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		netmap_delta_free(d[i]);
}

static struct netmap_delta *delta_for(uint64_t *ids, struct netmap_delta **d, unsigned n,
				      uint64_t id)
{
	for (unsigned i = 0; i < n; i++)
		if (ids[i] == id)
			return d[i];
	return NULL;
}

static void test_full_map(void **state)
{
	struct mapper *m = mk_mapper();
	struct control_node n;
	struct netmap *nm;
	const struct netmap_node *p;
	uint8_t v6[16];

	(void)state;
	add(m, 1, 1);
	add(m, 2, 1);
	add(m, 3, 1);
	add(m, 4, 2);
	n = mk_node(5, 1); /* waits for approval */
	n.approved = false;
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	n = mk_node(6, 1); /* key already expired */
	n.key_expiry = T0 - 1;
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	n = mk_node(7, 1); /* expires later */
	n.key_expiry = T0 + 100;
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	assert_int_equal(mapper_node_count(m), 7);

	assert_int_equal(mapper_netmap(m, 1, T0, &nm), 0);
	assert_string_equal(nm->tailnet, "tailnet-1");
	assert_int_equal(nm->self.id, 1);
	assert_int_equal(nm->n_peers, 3);
	assert_true(has_peer(nm, 2) && has_peer(nm, 3) && has_peer(nm, 7));
	assert_false(has_peer(nm, 1) || has_peer(nm, 4) || has_peer(nm, 5) || has_peer(nm, 6));
	p = netmap_peer_find(nm, 7);
	assert_string_equal(p->name, "node-7");
	assert_string_equal(p->user, "user1@example.com");
	assert_string_equal(p->os, "linux");
	assert_int_equal(p->key_expiry, T0 + 100);
	assert_int_equal(p->n_addresses, 2);
	assert_int_equal(p->addresses[0].family, AF_INET);
	assert_int_equal(p->addresses[0].len, 32);
	assert_memory_equal(p->addresses[0].addr, ((uint8_t[]){ 100, 64, 0, 7 }), 4);
	netmap_ipv6_from_ipv4(v6, (uint8_t[]){ 100, 64, 0, 7 });
	assert_int_equal(p->addresses[1].family, AF_INET6);
	assert_int_equal(p->addresses[1].len, 128);
	assert_memory_equal(p->addresses[1].addr, v6, 16);
	assert_int_equal(p->n_allowed_ips, 2);
	assert_memory_equal(p->node_key, n.node_key, NETMAP_KEY_LEN);
	netmap_free(nm);

	/* An invisible node gets itself and nobody else. */
	assert_int_equal(mapper_netmap(m, 5, T0, &nm), 0);
	assert_int_equal(nm->self.id, 5);
	assert_int_equal(nm->n_peers, 0);
	netmap_free(nm);

	/* Tailnet isolation. */
	assert_int_equal(mapper_netmap(m, 4, T0, &nm), 0);
	assert_string_equal(nm->tailnet, "tailnet-2");
	assert_int_equal(nm->n_peers, 0);
	netmap_free(nm);

	/* Time passes: 7's key expires. */
	assert_int_equal(mapper_netmap(m, 1, T0 + 100, &nm), 0);
	assert_int_equal(nm->n_peers, 2);
	assert_false(has_peer(nm, 7));
	netmap_free(nm);

	assert_int_equal(mapper_netmap(m, 99, T0, &nm), -ENOENT);
	assert_int_equal(mapper_take_delta(m, 1, (struct netmap_delta **)&nm), -ENOENT);
	n = mk_node(0, 1);
	assert_int_equal(mapper_node_upsert(m, &n, T0), -EINVAL);
	n = mk_node(1, 2); /* nodes do not move between tailnets */
	assert_int_equal(mapper_node_upsert(m, &n, T0), -EINVAL);
	mapper_free(m);
}

static void subscribe_all(struct mapper *m, uint64_t lo, uint64_t hi)
{
	for (uint64_t id = lo; id <= hi; id++) {
		struct netmap *nm;

		assert_int_equal(mapper_subscribe(m, id), 0);
		assert_int_equal(mapper_netmap(m, id, T0, &nm), 0);
		netmap_free(nm);
	}
	assert_int_equal(mapper_dirty_count(m), 0);
}

static void test_delta_targets(void **state)
{
	struct mapper *m = mk_mapper();
	struct netmap_delta *d[16], *x;
	uint64_t ids[16];
	struct endpoint eps[2];
	struct control_node n;
	unsigned k;

	(void)state;
	add(m, 1, 1);
	add(m, 2, 1);
	add(m, 3, 1);
	add(m, 4, 2);
	add(m, 5, 2);
	subscribe_all(m, 1, 5);

	/* Added: every subscriber of tailnet 1 and nobody else. */
	add(m, 6, 1);
	assert_int_equal(mapper_dirty_count(m), 3);
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 3);
	for (uint64_t id = 1; id <= 3; id++) {
		x = delta_for(ids, d, k, id);
		assert_non_null(x);
		assert_int_equal(x->n_added, 1);
		assert_int_equal(x->added[0].id, 6);
		assert_int_equal(x->n_changed + x->n_removed + x->n_endpoints + x->n_online, 0);
		assert_false(x->has_self);
	}
	free_deltas(d, k);

	/* Changed: a rename reaches peers as a full record and the node as self. */
	n = mk_node(2, 1);
	snprintf(n.name, sizeof(n.name), "renamed");
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 3);
	x = delta_for(ids, d, k, 2);
	assert_true(x->has_self);
	assert_string_equal(x->self.name, "renamed");
	assert_int_equal(x->n_changed + x->n_added, 0);
	for (uint64_t id = 1; id <= 3; id += 2) {
		x = delta_for(ids, d, k, id);
		assert_int_equal(x->n_changed, 1);
		assert_string_equal(x->changed[0].name, "renamed");
		assert_false(x->has_self);
	}
	free_deltas(d, k);

	/* An upsert that changes nothing visible sends nothing. */
	snprintf(n.hostname, sizeof(n.hostname), "other-hostname");
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	assert_int_equal(mapper_dirty_count(m), 0);

	/* Endpoints: a patch, in tailnet 2 this time. */
	eps[0] = mk_ep(4, 41641);
	eps[1] = mk_ep(5, 41641);
	assert_int_equal(mapper_node_endpoints(m, 4, eps, 2), 0);
	assert_int_equal(mapper_node_endpoints(m, 4, eps, 2), 0); /* unchanged: no-op */
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 2);
	x = delta_for(ids, d, k, 5);
	assert_int_equal(x->n_endpoints, 1);
	assert_int_equal(x->endpoints[0].id, 4);
	assert_int_equal(x->endpoints[0].n_endpoints, 2);
	assert_true(endpoint_equal(&x->endpoints[0].endpoints[1], &eps[1]));
	assert_int_equal(x->n_added + x->n_changed + x->n_removed + x->n_online, 0);
	x = delta_for(ids, d, k, 4);
	assert_true(x->has_self);
	assert_int_equal(x->self.n_endpoints, 2);
	free_deltas(d, k);
	assert_int_equal(mapper_node_endpoints(m, 4, eps, NETMAP_MAX_ENDPOINTS + 1), -EINVAL);
	assert_int_equal(mapper_node_endpoints(m, 99, eps, 1), -ENOENT);

	/* Online: a patch; the unsubscribed node 6 gets nothing. */
	assert_int_equal(mapper_node_online(m, 6, true, T0 + 5), 0);
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 3);
	for (uint64_t id = 1; id <= 3; id++) {
		x = delta_for(ids, d, k, id);
		assert_int_equal(x->n_online, 1);
		assert_int_equal(x->online[0].id, 6);
		assert_true(x->online[0].online);
		assert_int_equal(x->online[0].last_seen, T0 + 5);
	}
	free_deltas(d, k);
	/* The mapper owns online: a later upsert from a store record does not reset it. */
	n = mk_node(6, 1);
	assert_int_equal(mapper_node_upsert(m, &n, T0 + 6), 0);
	assert_true(mapper_node_get(m, 6)->online);
	assert_int_equal(mapper_dirty_count(m), 0);

	/* Removed: peers drop it; a removed subscriber's stream ends. */
	assert_int_equal(mapper_node_remove(m, 3), 0);
	assert_false(mapper_subscribed(m, 3));
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 2);
	for (uint64_t id = 1; id <= 2; id++) {
		x = delta_for(ids, d, k, id);
		assert_int_equal(x->n_removed, 1);
		assert_int_equal(x->removed[0], 3);
	}
	free_deltas(d, k);
	assert_int_equal(mapper_node_remove(m, 3), -ENOENT);

	/* Unsubscribed nodes accumulate nothing. */
	mapper_unsubscribe(m, 1);
	mapper_unsubscribe(m, 1);
	assert_int_equal(mapper_node_endpoints(m, 2, eps, 1), 0);
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 1);
	assert_int_equal(ids[0], 2); /* only its own self update */
	free_deltas(d, k);
	mapper_free(m);
}

static void test_coalescing(void **state)
{
	struct mapper *m = mk_mapper();
	struct netmap_delta *d[16], *x;
	uint64_t ids[16];
	struct endpoint ep;
	struct control_node n;
	unsigned k;

	(void)state;
	add(m, 1, 1);
	add(m, 2, 1);
	subscribe_all(m, 1, 1);

	/* Five endpoint changes and two online flips of one peer: one patch each. */
	for (unsigned i = 0; i < 5; i++) {
		ep = mk_ep(10 + i, 41641);
		assert_int_equal(mapper_node_endpoints(m, 2, &ep, 1), 0);
	}
	assert_int_equal(mapper_node_online(m, 2, true, T0 + 1), 0);
	assert_int_equal(mapper_node_online(m, 2, false, T0 + 2), 0);
	assert_int_equal(mapper_dirty_count(m), 1);
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 1);
	x = d[0];
	assert_int_equal(x->n_endpoints, 1);
	assert_true(endpoint_equal(&x->endpoints[0].endpoints[0], &ep));
	assert_int_equal(x->n_online, 1);
	assert_false(x->online[0].online);
	assert_int_equal(x->online[0].last_seen, T0 + 2);
	assert_int_equal(x->n_added + x->n_changed + x->n_removed, 0);
	free_deltas(d, k);

	/* Add then remove within one flush cancels out. */
	add(m, 3, 1);
	assert_int_equal(mapper_node_endpoints(m, 3, &ep, 1), 0);
	assert_int_equal(mapper_node_remove(m, 3), 0);
	assert_int_equal(mapper_take_delta(m, 1, &x), 0);
	assert_null(x);
	assert_int_equal(mapper_dirty_count(m), 0);

	/* Added then patched: one "added" with the latest record. */
	add(m, 4, 1);
	assert_int_equal(mapper_node_endpoints(m, 4, &ep, 1), 0);
	assert_int_equal(mapper_take_delta(m, 1, &x), 0);
	assert_int_equal(x->n_added, 1);
	assert_int_equal(x->added[0].n_endpoints, 1);
	assert_int_equal(x->n_endpoints, 0);
	netmap_delta_free(x);

	/* Endpoints and a key rotation: the full record carries both. */
	ep = mk_ep(99, 1234);
	assert_int_equal(mapper_node_endpoints(m, 4, &ep, 1), 0);
	n = *mapper_node_get(m, 4);
	memset(n.node_key, 0xee, NETMAP_KEY_LEN);
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	assert_int_equal(mapper_take_delta(m, 1, &x), 0);
	assert_int_equal(x->n_changed, 1);
	assert_int_equal(x->n_endpoints, 0);
	assert_true(endpoint_equal(&x->changed[0].endpoints[0], &ep));
	assert_int_equal(x->changed[0].node_key[0], 0xee);
	netmap_delta_free(x);

	/* Removed then back (logout, then re-approval) in one flush: a changed record. */
	n.approved = false;
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	n.approved = true;
	snprintf(n.name, sizeof(n.name), "back");
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	assert_int_equal(mapper_take_delta(m, 1, &x), 0);
	assert_int_equal(x->n_changed, 1);
	assert_int_equal(x->n_added + x->n_removed, 0);
	assert_string_equal(x->changed[0].name, "back");
	netmap_delta_free(x);

	/* A pending delta is superseded by a full map. */
	assert_int_equal(mapper_node_online(m, 4, true, T0 + 3), 0);
	{
		struct netmap *nm;

		assert_int_equal(mapper_netmap(m, 1, T0 + 3, &nm), 0);
		assert_true(netmap_peer_find(nm, 4)->online);
		netmap_free(nm);
	}
	assert_int_equal(mapper_dirty_count(m), 0);
	assert_int_equal(mapper_take_delta(m, 1, &x), 0);
	assert_null(x);
	mapper_free(m);
}

static void test_expiry_and_approval(void **state)
{
	struct mapper *m = mk_mapper();
	struct netmap_delta *d[16], *x;
	uint64_t ids[16];
	struct control_node n;
	unsigned k;

	(void)state;
	add(m, 1, 1);
	add(m, 2, 1);
	n = mk_node(3, 1);
	n.key_expiry = T0 + 50;
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	n = mk_node(4, 1);
	n.key_expiry = T0 + 30;
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	subscribe_all(m, 1, 4);
	assert_int_equal(mapper_next_expiry(m), T0 + 30);

	assert_int_equal(mapper_expire(m, T0 + 29), 0);
	assert_int_equal(mapper_dirty_count(m), 0);
	assert_int_equal(mapper_expire(m, T0 + 40), 1);
	assert_int_equal(mapper_next_expiry(m), T0 + 50);
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 4);
	for (uint64_t id = 1; id <= 3; id++) {
		x = delta_for(ids, d, k, id);
		assert_int_equal(x->n_removed, 1);
		assert_int_equal(x->removed[0], 4);
	}
	/* The expired node learns it (self) and loses its peers. */
	x = delta_for(ids, d, k, 4);
	assert_true(x->has_self);
	assert_int_equal(x->n_removed, 3);
	free_deltas(d, k);

	/* Logout: the server sets the key expiry to now. */
	n = *mapper_node_get(m, 3);
	n.key_expiry = T0 + 41;
	assert_int_equal(mapper_node_upsert(m, &n, T0 + 41), 0);
	assert_int_equal(mapper_next_expiry(m), INT64_MAX);
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 3); /* 1, 2, and 3 itself; 4 sees nothing */
	assert_int_equal(delta_for(ids, d, k, 1)->removed[0], 3);
	free_deltas(d, k);

	/* Re-register with a fresh key: back in, for everyone that can see. */
	n.key_expiry = T0 + 1000;
	memset(n.node_key, 0x77, NETMAP_KEY_LEN);
	assert_int_equal(mapper_node_upsert(m, &n, T0 + 42), 0);
	k = flush(m, ids, d, 16);
	assert_int_equal(k, 3);
	x = delta_for(ids, d, k, 3);
	assert_int_equal(x->n_added, 2); /* 1 and 2 come back to its map */
	assert_int_equal(delta_for(ids, d, k, 1)->n_added, 1);
	free_deltas(d, k);

	/* Per-node opt-out: an old expiry no longer hides it. */
	n = mk_node(5, 1);
	n.key_expiry = T0 + 60;
	n.expiry_disabled = true;
	assert_int_equal(mapper_node_upsert(m, &n, T0 + 42), 0);
	free_deltas(d, flush(m, ids, d, 16));
	mapper_expire(m, T0 + 100);
	{
		struct netmap *nm;
		bool visible = control_node_visible(&n, T0 + 100);

		assert_int_equal(mapper_netmap(m, 1, T0 + 100, &nm), 0);
		assert_int_equal(has_peer(nm, 5), visible);
		netmap_free(nm);
	}

	/* Interactive registration: unapproved nodes are hidden until approved. */
	n = mk_node(6, 1);
	n.approved = false;
	assert_int_equal(mapper_node_upsert(m, &n, T0 + 100), 0);
	assert_int_equal(mapper_dirty_count(m), 0);
	n.approved = true;
	assert_int_equal(mapper_node_upsert(m, &n, T0 + 100), 0);
	k = flush(m, ids, d, 16);
	assert_true(k >= 3);
	assert_int_equal(delta_for(ids, d, k, 1)->n_added, 1);
	assert_int_equal(delta_for(ids, d, k, 1)->added[0].id, 6);
	assert_null(delta_for(ids, d, k, 4)); /* expired: sees nothing */
	free_deltas(d, k);
	mapper_free(m);
}

/* ---- randomized model check ---- */

#define MC_NODES 50
#define MC_TAILNETS 3

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

static uint64_t mc_tailnet(uint64_t id)
{
	return id % MC_TAILNETS + 1;
}

static int node_cmp(const void *a, const void *b)
{
	const struct netmap_node *x = a, *y = b;

	return (x->id > y->id) - (x->id < y->id);
}

/* A patch rewrites only the first n endpoints: what lies beyond n is not part of the map. */
static void normalize(struct netmap_node *n)
{
	memset(&n->endpoints[n->n_endpoints], 0,
	       (NETMAP_MAX_ENDPOINTS - n->n_endpoints) * sizeof(n->endpoints[0]));
}

static void assert_same_map(struct netmap *a, struct netmap *b)
{
	assert_string_equal(a->tailnet, b->tailnet);
	normalize(&a->self);
	normalize(&b->self);
	for (unsigned i = 0; i < a->n_peers; i++)
		normalize(&a->peers[i]);
	for (unsigned i = 0; i < b->n_peers; i++)
		normalize(&b->peers[i]);
	assert_memory_equal(&a->self, &b->self, sizeof(a->self));
	assert_int_equal(a->n_peers, b->n_peers);
	if (a->n_peers) {
		qsort(a->peers, a->n_peers, sizeof(*a->peers), node_cmp);
		qsort(b->peers, b->n_peers, sizeof(*b->peers), node_cmp);
		assert_memory_equal(a->peers, b->peers, a->n_peers * sizeof(*a->peers));
	}
}

static void assert_isolated(const struct netmap *nm, uint64_t self)
{
	for (unsigned i = 0; i < nm->n_peers; i++) {
		assert_int_equal(mc_tailnet(nm->peers[i].id), mc_tailnet(self));
		assert_int_not_equal(nm->peers[i].id, self);
	}
}

/*
 * mapper_netmap_json (from cached records) is byte for byte ctrl_msg_encode of
 * mapper_netmap. Both bump seq, so the struct is taken first and given the
 * seq the JSON gets. Returns the struct map, which is what the node now holds.
 */
static struct netmap *assert_json_same(struct mapper *m, uint64_t id, int64_t now)
{
	struct ctrl_msg msg = { .type = CTRL_MSG_NETMAP };
	struct netmap *nm;
	char *a, *b;
	size_t alen, blen;

	assert_int_equal(mapper_netmap(m, id, now, &nm), 0);
	nm->seq++;
	msg.netmap = nm;
	assert_int_equal(ctrl_msg_encode(&msg, &a, &alen), 0);
	assert_int_equal(mapper_netmap_json(m, id, now, &b, &blen), 0);
	assert_int_equal(alen, blen);
	assert_memory_equal(a, b, alen);
	assert_int_equal(b[blen], '\0');
	free(a);
	free(b);
	return nm;
}

/* A new relay map reaches every subscriber of every tailnet once; a home region is a change. */
/* A tailnet's flow-log setting: in every full map, and a change reaches exactly its subscribers. */
static void test_flow_log(void **state)
{
	struct mapper *m = mk_mapper();
	struct control_tailnet tn = {.id = 1};
	struct netmap_delta *d[8];
	struct netmap *nm;
	uint64_t ids[8];
	unsigned n;

	(void)state;
	strcpy(tn.name, "tailnet-1");
	add(m, 1, 1);
	add(m, 2, 1);
	add(m, 3, 2);
	for (uint64_t i = 1; i <= 3; i++) {
		assert_int_equal(mapper_subscribe(m, i), 0);
		nm = assert_json_same(m, i, T0);
		assert_true(nm->flow_log.set);
		assert_true(nm->flow_log.enabled);
		assert_int_equal(nm->flow_log.interval_ms, NETMAP_FLOW_LOG_INTERVAL_DEFAULT_MS);
		netmap_free(nm);
	}
	/* The same record again (a rename, another setting): nothing to send. */
	assert_int_equal(mapper_tailnet_upsert(m, &tn), 0);
	assert_int_equal(mapper_dirty_count(m), 0);
	/* Off: tailnet 1's subscribers hear it, no one else, and no peer changes with it. */
	tn.flow_log_off = true;
	tn.flow_log_interval_ms = 2000;
	assert_int_equal(mapper_tailnet_upsert(m, &tn), 0);
	n = flush(m, ids, d, 8);
	assert_int_equal(n, 2);
	for (unsigned i = 0; i < n; i++) {
		assert_true(ids[i] == 1 || ids[i] == 2);
		assert_true(d[i]->flow_log.set);
		assert_false(d[i]->flow_log.enabled);
		assert_int_equal(d[i]->flow_log.interval_ms, 2000);
		assert_int_equal(d[i]->n_added + d[i]->n_changed + d[i]->n_removed, 0);
	}
	free_deltas(d, n);
	/* A later delta for another reason does not repeat it. */
	assert_int_equal(mapper_node_home_region(m, 2, 7), 0);
	n = flush(m, ids, d, 8);
	for (unsigned i = 0; i < n; i++)
		assert_false(d[i]->flow_log.set);
	free_deltas(d, n);
	/* Full maps carry it, on both paths alike; tailnet 2 keeps the default. */
	nm = assert_json_same(m, 1, T0);
	assert_false(nm->flow_log.enabled);
	assert_int_equal(nm->flow_log.interval_ms, 2000);
	netmap_free(nm);
	nm = assert_json_same(m, 3, T0);
	assert_true(nm->flow_log.enabled);
	assert_int_equal(nm->flow_log.interval_ms, NETMAP_FLOW_LOG_INTERVAL_DEFAULT_MS);
	netmap_free(nm);
	/* A stored interval out of bounds is clamped, never a map the encoder refuses. */
	tn.flow_log_off = false;
	tn.flow_log_interval_ms = 10;
	assert_int_equal(mapper_tailnet_upsert(m, &tn), 0);
	n = flush(m, ids, d, 8);
	assert_int_equal(n, 2);
	for (unsigned i = 0; i < n; i++) {
		assert_true(d[i]->flow_log.enabled);
		assert_int_equal(d[i]->flow_log.interval_ms, NETMAP_FLOW_LOG_INTERVAL_MIN_MS);
	}
	free_deltas(d, n);
	nm = assert_json_same(m, 2, T0);
	netmap_free(nm);
	mapper_free(m);
}

/*
 * A renewed machine certificate for one subscriber (mapper_node_mcert): only its next delta
 * carries it, once; a full map in between does not drop it, nor does the discard of a delta
 * that a full map supersedes; a later one replaces it; a node without a map stream, or one
 * over the cap, is refused.
 */
static void test_mcert_push(void **state)
{
	struct mapper *m = mk_mapper();
	struct netmap_delta *d[8];
	struct netmap *nm;
	uint64_t ids[8];
	char big[NETMAP_MCERT_MAX + 1];
	unsigned n;

	(void)state;
	add(m, 1, 1);
	add(m, 2, 1);
	assert_int_equal(mapper_node_mcert(m, 1, "QUJD"), -ENOENT);
	for (uint64_t i = 1; i <= 2; i++) {
		assert_int_equal(mapper_subscribe(m, i), 0);
		netmap_free(assert_json_same(m, i, T0));
	}
	assert_int_equal(mapper_node_mcert(m, 1, "QUJD"), 0);
	n = flush(m, ids, d, 8);
	assert_int_equal(n, 1);
	assert_int_equal(ids[0], 1);
	assert_string_equal(d[0]->machine_cert, "QUJD");
	assert_int_equal(d[0]->n_added + d[0]->n_changed + d[0]->n_removed, 0);
	free_deltas(d, n);
	assert_int_equal(mapper_dirty_count(m), 0);
	/* Replaced before it went; kept past a full map. */
	assert_int_equal(mapper_node_mcert(m, 1, "REVG"), 0);
	assert_int_equal(mapper_node_mcert(m, 1, "R0hJ"), 0);
	nm = assert_json_same(m, 1, T0);
	netmap_free(nm);
	n = flush(m, ids, d, 8);
	assert_int_equal(n, 1);
	assert_string_equal(d[0]->machine_cert, "R0hJ");
	free_deltas(d, n);
	/* Another reason for a delta does not repeat it. */
	assert_int_equal(mapper_node_home_region(m, 2, 7), 0);
	n = flush(m, ids, d, 8);
	assert_true(n >= 1);
	for (unsigned i = 0; i < n; i++)
		assert_null(d[i]->machine_cert);
	free_deltas(d, n);
	/* Dropped for a full map (mapstream's delta_discard): held, then sent after the map. */
	assert_int_equal(mapper_node_mcert(m, 1, "SktM"), 0);
	assert_int_equal(mapper_drop_delta(m, 1), 0);
	assert_int_equal(mapper_dirty_count(m), 0);
	netmap_free(assert_json_same(m, 1, T0));
	n = flush(m, ids, d, 8);
	assert_int_equal(n, 1);
	assert_string_equal(d[0]->machine_cert, "SktM");
	free_deltas(d, n);
	memset(big, 'A', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(mapper_node_mcert(m, 2, big), -EINVAL);
	/* Pending at unsubscribe: freed with it (ASan). */
	assert_int_equal(mapper_node_mcert(m, 2, "QUJD"), 0);
	mapper_unsubscribe(m, 2);
	assert_int_equal(mapper_node_mcert(m, 1, "QUJD"), 0);
	mapper_free(m);
}

static void test_relay_map_and_home(void **state)
{
	struct mapper *m = mk_mapper();
	struct netmap_relay_map rm = {.n_regions = 1};
	struct netmap_delta *d[8];
	struct netmap *nm;
	uint64_t ids[8];
	unsigned n;

	(void)state;
	add(m, 1, 1);
	add(m, 2, 1);
	add(m, 3, 2);
	for (uint64_t i = 1; i <= 3; i++) {
		assert_int_equal(mapper_subscribe(m, i), 0);
		nm = assert_json_same(m, i, T0);
		assert_int_equal(nm->relay_map.n_regions, 0);
		netmap_free(nm);
	}
	rm.regions[0].id = 5;
	strcpy(rm.regions[0].code, "fra");
	rm.regions[0].n_nodes = 1;
	strcpy(rm.regions[0].nodes[0].name, "r1");
	strcpy(rm.regions[0].nodes[0].host, "relay.example");
	rm.regions[0].nodes[0].stun_port = 3478;
	assert_int_equal(mapper_relaymap_set(m, &rm), 0);
	n = flush(m, ids, d, 8);
	assert_int_equal(n, 3);
	for (unsigned i = 0; i < n; i++) {
		assert_non_null(d[i]->relay_map);
		assert_int_equal(d[i]->relay_map->regions[0].id, 5);
		assert_int_equal(d[i]->n_added + d[i]->n_changed + d[i]->n_removed, 0);
	}
	free_deltas(d, n);
	/* The same map again: nothing to send. */
	assert_int_equal(mapper_relaymap_set(m, &rm), 0);
	assert_int_equal(mapper_dirty_count(m), 0);
	/* Full maps carry it, on both paths alike. */
	nm = assert_json_same(m, 3, T0);
	assert_int_equal(nm->relay_map.n_regions, 1);
	netmap_free(nm);
	/* An invalid map is refused and changes nothing. */
	rm.regions[0].id = 0;
	assert_int_equal(mapper_relaymap_set(m, &rm), -EINVAL);
	assert_int_equal(mapper_dirty_count(m), 0);

	/* Node 1 chose region 5: node 2 (same tailnet) hears, node 3 does not. */
	assert_int_equal(mapper_node_home_region(m, 1, 5), 0);
	n = flush(m, ids, d, 8);
	assert_non_null(delta_for(ids, d, n, 2));
	assert_int_equal(delta_for(ids, d, n, 2)->n_changed, 1);
	assert_int_equal(delta_for(ids, d, n, 2)->changed[0].home_region, 5);
	assert_null(delta_for(ids, d, n, 3));
	free_deltas(d, n);
	/* The same region again (every reconnect reports it): nothing changed, no delta. */
	assert_int_equal(mapper_node_home_region(m, 1, 5), 1);
	assert_int_equal(mapper_node_home_region(m, 1, 65536), -EINVAL);
	assert_int_equal(mapper_node_home_region(m, 99, 1), -ENOENT);
	/* Node 1's disco key (a daemon start): node 2 hears, node 3 does not. */
	{
		uint8_t dk[NETMAP_KEY_LEN];

		memset(dk, 0xd1, sizeof(dk));
		assert_int_equal(mapper_node_disco_key(m, 1, dk), 0);
		assert_int_equal(mapper_node_disco_key(m, 1, dk), 1);
		assert_int_equal(mapper_node_disco_key(m, 1, NULL), 1);
		assert_int_equal(mapper_node_disco_key(m, 99, dk), -ENOENT);
		n = flush(m, ids, d, 8);
		assert_non_null(delta_for(ids, d, n, 2));
		assert_true(delta_for(ids, d, n, 2)->changed[0].has_disco_key);
		assert_memory_equal(delta_for(ids, d, n, 2)->changed[0].disco_key, dk, sizeof(dk));
		assert_null(delta_for(ids, d, n, 3));
		free_deltas(d, n);
	}
	/* Node 1 is behind a hard NAT: node 2 hears, node 3 does not. */
	assert_int_equal(mapper_node_mapping_varies(m, 1, true), 0);
	assert_int_equal(mapper_node_mapping_varies(m, 1, true), 1);
	assert_int_equal(mapper_node_mapping_varies(m, 99, true), -ENOENT);
	n = flush(m, ids, d, 8);
	assert_non_null(delta_for(ids, d, n, 2));
	assert_true(delta_for(ids, d, n, 2)->changed[0].mapping_varies);
	assert_null(delta_for(ids, d, n, 3));
	free_deltas(d, n);
	/* An admin change of the record keeps what the node reported. */
	add(m, 1, 1);
	assert_int_equal(mapper_node_get(m, 1)->home_region, 5);
	assert_true(mapper_node_get(m, 1)->has_disco_key);
	assert_true(mapper_node_get(m, 1)->mapping_varies);
	n = flush(m, ids, d, 8);
	free_deltas(d, n);
	mapper_free(m);
}

static const char *const mc_policies[] = {
    "{\"tagOwners\": {\"tag:t0\": [], \"tag:t1\": [], \"tag:t2\": []}, \"acls\": ["
    "{\"action\": \"accept\", \"src\": [\"tag:t0\", \"tag:t1\"],"
    " \"dst\": [\"tag:t2:22\", \"autogroup:member:80\"]}]}",
    "{\"tagOwners\": {\"tag:t3\": []}, \"acls\": ["
    "{\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self:*\"]},"
    "{\"action\": \"accept\", \"src\": [\"tag:t3\"], \"dst\": [\"*:443\"], \"proto\": \"tcp\"}]}",
    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"100.64.0.0/28\"], \"dst\": [\"*:*\"]}]}",
    /* The first with one port moved, then split in two rules: most filters stay as they are. */
    "{\"tagOwners\": {\"tag:t0\": [], \"tag:t1\": [], \"tag:t2\": []}, \"acls\": ["
    "{\"action\": \"accept\", \"src\": [\"tag:t0\", \"tag:t1\"],"
    " \"dst\": [\"tag:t2:23\", \"autogroup:member:80\"]}]}",
    "{\"tagOwners\": {\"tag:t0\": [], \"tag:t1\": [], \"tag:t2\": []}, \"acls\": ["
    "{\"action\": \"accept\", \"src\": [\"tag:t0\", \"tag:t1\"], \"dst\": [\"tag:t2:22\"]},"
    "{\"action\": \"accept\", \"src\": [\"tag:t0\", \"tag:t1\"],"
    " \"dst\": [\"autogroup:member:80\"]}]}",
};

static void assert_same_filter(const struct netmap_filter *a, const struct netmap_filter *b)
{
	assert_int_equal(a == NULL, b == NULL);
	if (!a)
		return;
	assert_int_equal(a->n_rules, b->n_rules);
	assert_int_equal(a->n_srcs, b->n_srcs);
	assert_int_equal(a->n_dsts, b->n_dsts);
	if (a->n_rules)
		assert_memory_equal(a->rules, b->rules, a->n_rules * sizeof(*a->rules));
	if (a->n_srcs)
		assert_memory_equal(a->srcs, b->srcs, a->n_srcs * sizeof(*a->srcs));
	if (a->n_dsts)
		assert_memory_equal(a->dsts, b->dsts, a->n_dsts * sizeof(*a->dsts));
}

static int mem_cmp16(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct netmap_prefix));
}

static int dst_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct netmap_filter_dst));
}

/*
 * The same filter but for the order of each rule's sources and destinations, which follows
 * the order the nodes were added in (a fresh mapper adds them by id).
 */
static void assert_equiv_filter(const struct netmap_filter *a, const struct netmap_filter *b)
{
	if (!a || !b) {
		assert_ptr_equal(a, b);
		return;
	}
	assert_int_equal(a->n_rules, b->n_rules);
	for (unsigned i = 0; i < a->n_rules; i++) {
		const struct netmap_filter_rule *x = &a->rules[i], *y = &b->rules[i];
		struct netmap_prefix *sx, *sy;
		struct netmap_filter_dst *dx, *dy;

		assert_int_equal(x->n_protos, y->n_protos);
		assert_memory_equal(x->protos, y->protos, sizeof(x->protos));
		assert_int_equal(x->n_src, y->n_src);
		assert_int_equal(x->n_dst, y->n_dst);
		sx = calloc(x->n_src + 1, sizeof(*sx));
		sy = calloc(x->n_src + 1, sizeof(*sy));
		dx = calloc(x->n_dst + 1, sizeof(*dx));
		dy = calloc(x->n_dst + 1, sizeof(*dy));
		assert_true(sx && sy && dx && dy);
		memcpy(sx, &a->srcs[x->src_off], x->n_src * sizeof(*sx));
		memcpy(sy, &b->srcs[y->src_off], y->n_src * sizeof(*sy));
		memcpy(dx, &a->dsts[x->dst_off], x->n_dst * sizeof(*dx));
		memcpy(dy, &b->dsts[y->dst_off], y->n_dst * sizeof(*dy));
		qsort(sx, x->n_src, sizeof(*sx), mem_cmp16);
		qsort(sy, y->n_src, sizeof(*sy), mem_cmp16);
		qsort(dx, x->n_dst, sizeof(*dx), dst_cmp);
		qsort(dy, y->n_dst, sizeof(*dy), dst_cmp);
		assert_memory_equal(sx, sy, x->n_src * sizeof(*sx));
		assert_memory_equal(dx, dy, x->n_dst * sizeof(*dx));
		free(sx);
		free(sy);
		free(dx);
		free(dy);
	}
}

/*
 * The filter every subscriber holds is what a mapper that only ever had the current nodes,
 * users and policies builds: kept filters (a change that left them alone) are never stale.
 */
static void mc_assert_fresh_filters(struct mapper *m, struct netmap **client, const int *pol_k,
				    char (*uname)[NETMAP_USER_MAX], int64_t now)
{
	struct mapper *fresh = mk_mapper();

	for (uint64_t t = 1; t <= MC_TAILNETS; t++) {
		struct control_user u = { .id = 100 + t, .tailnet_id = t };

		snprintf(u.name, sizeof(u.name), "%s", uname[t]);
		assert_int_equal(mapper_user_upsert(fresh, &u), 0);
	}
	for (uint64_t id = 1; id <= MC_NODES; id++)
		if (mapper_node_get(m, id))
			assert_int_equal(mapper_node_upsert(fresh, mapper_node_get(m, id), now), 0);
	for (uint64_t t = 1; t <= MC_TAILNETS; t++) {
		struct policy *pol = NULL;
		char err[POLICY_ERR_MAX];

		if (pol_k[t] < 0)
			continue;
		assert_int_equal(policy_parse(mc_policies[pol_k[t]], strlen(mc_policies[pol_k[t]]),
					      &pol, err),
				 0);
		assert_int_equal(mapper_policy_set(fresh, t, pol), 0);
	}
	for (uint64_t id = 1; id <= MC_NODES; id++) {
		struct netmap *b;

		if (!client[id])
			continue;
		assert_int_equal(mapper_netmap(fresh, id, now, &b), 0);
		assert_equiv_filter(client[id]->filter, b->filter);
		netmap_free(b);
	}
	mapper_free(fresh);
}

static unsigned mc_stale; /* compiles dropped as stale */

/* Off the loop: the job in flight (if any) comes back, then every stale tailnet is compiled. */
static void mc_compile_all(struct mapper *m, struct mapper_compile **job, bool *job_ran)
{
	if (*job) {
		if (!*job_ran)
			mapper_compile_run(*job);
		mc_stale += mapper_compile_done(m, *job, true) == -ESTALE;
		*job = NULL;
	}
	for (struct mapper_compile *c; mapper_compile_next(m, &c) == 1;) {
		mapper_compile_run(c);
		assert_int_equal(mapper_compile_done(m, c, true), 0);
	}
}

static unsigned model_check(uint64_t seed, bool async)
{
	struct mapper *m = mk_mapper();
	struct netmap *client[MC_NODES + 1] = { 0 };
	struct mapper_compile *job = NULL;
	bool job_ran = false;
	int64_t now = T0;
	unsigned deltas = 0;
	int pol_k[MC_TAILNETS + 1] = { -1, -1, -1, -1 };
	char uname[MC_TAILNETS + 1][NETMAP_USER_MAX];

	for (uint64_t t = 1; t <= MC_TAILNETS; t++)
		snprintf(uname[t], sizeof(uname[t]), "user%llu@example.com", (unsigned long long)t);
	rng_state = seed;
	mapper_compile_async(m, async);
	for (int round = 0; round < 2000; round++) {
		uint64_t id = 1 + rnd(MC_NODES);
		const struct control_node *cur = mapper_node_get(m, id);
		struct control_node n = cur ? *cur : mk_node(id, mc_tailnet(id));
		struct endpoint eps[3];
		unsigned op = rnd(15);
		struct control_user u;

		switch (op) {
		case 0: /* add or re-register */
		case 1:
			n.approved = rnd(5) != 0;
			n.key_expiry = rnd(3) ? 0 : now + (int64_t)rnd(20);
			memset(n.node_key, (int)rnd(256), 8);
			assert_int_equal(mapper_node_upsert(m, &n, now), 0);
			break;
		case 2: /* rename, tags */
			if (!cur)
				break;
			snprintf(n.name, sizeof(n.name), "n%u", rnd(1000));
			n.n_tags = rnd(3);
			for (unsigned t = 0; t < n.n_tags; t++)
				snprintf(n.tags[t], sizeof(n.tags[t]), "tag:t%u", rnd(4));
			assert_int_equal(mapper_node_upsert(m, &n, now), 0);
			break;
		case 3: /* remove */
			assert_int_equal(mapper_node_remove(m, id), cur ? 0 : -ENOENT);
			if (!cur)
				break;
			netmap_free(client[id]);
			client[id] = NULL;
			break;
		case 4: /* endpoints */
		case 5:
			if (!cur)
				break;
			for (unsigned e = 0; e < ARRAY_SIZE(eps); e++)
				eps[e] = mk_ep(rnd(4), 41641 + e);
			assert_int_equal(mapper_node_endpoints(m, id, eps, rnd(4)), 0);
			break;
		case 6: /* online */
			if (cur)
				assert_int_equal(mapper_node_online(m, id, rnd(2), now), 0);
			break;
		case 7: /* map stream starts or ends */
			if (!cur)
				break;
			if (client[id]) {
				mapper_unsubscribe(m, id);
				netmap_free(client[id]);
				client[id] = NULL;
			} else {
				assert_int_equal(mapper_subscribe(m, id), 0);
				assert_int_equal(mapper_netmap(m, id, now, &client[id]), 0);
				assert_isolated(client[id], id);
			}
			break;
		case 8: /* time passes */
			now += rnd(4);
			mapper_expire(m, now);
			break;
		case 9: /* logout */
			if (!cur)
				break;
			n.key_expiry = now;
			assert_int_equal(mapper_node_upsert(m, &n, now), 0);
			break;
		case 10: /* an admin renames a user: all its nodes change */
			memset(&u, 0, sizeof(u));
			u.id = 100 + mc_tailnet(id);
			u.tailnet_id = mc_tailnet(id);
			snprintf(u.name, sizeof(u.name), "user%u@example.com", rnd(100));
			assert_int_equal(mapper_user_upsert(m, &u), 0);
			memcpy(uname[u.tailnet_id], u.name, sizeof(u.name));
			break;
		case 11: /* a full map from cached JSON; a subscriber continues from it */
			if (!cur) {
				char *j;
				size_t jl;

				assert_int_equal(mapper_netmap_json(m, id, now, &j, &jl), -ENOENT);
				break;
			}
			netmap_free(client[id]);
			client[id] = assert_json_same(m, id, now);
			if (!mapper_subscribed(m, id)) {
				netmap_free(client[id]);
				client[id] = NULL;
			}
			break;
		case 12: { /* the tailnet's policy changes, or goes */
			unsigned k = rnd(ARRAY_SIZE(mc_policies) + 1);
			struct policy *pol = NULL;
			char err[POLICY_ERR_MAX];

			if (k < ARRAY_SIZE(mc_policies))
				assert_int_equal(policy_parse(mc_policies[k], strlen(mc_policies[k]),
							      &pol, err), 0);
			assert_int_equal(mapper_policy_set(m, mc_tailnet(id), pol), 0);
			pol_k[mc_tailnet(id)] = k < ARRAY_SIZE(mc_policies) ? (int)k : -1;
			break;
		}
		case 13: /* off the loop: a compile goes out, runs, or comes back (maybe stale) */
			if (!async)
				goto flush;
			if (!job) {
				assert_true(mapper_compile_next(m, &job) >= 0);
				job_ran = false;
			} else if (!job_ran) {
				mapper_compile_run(job);
				job_ran = true;
			} else {
				int r = mapper_compile_done(m, job, true);

				assert_true(r == 0 || r == -ESTALE);
				mc_stale += r == -ESTALE;
				job = NULL;
			}
			break;
		default: /* the server flushes */
		flush:
			if (async)
				mc_compile_all(m, &job, &job_ran);
			for (uint64_t s; (s = mapper_dirty_first(m));) {
				struct netmap_delta *d;
				int r;

				assert_non_null(client[s]);
				r = mapper_take_delta(m, s, &d);
				if (r == -ENOBUFS) {
					/* A removed policy: the server sends a full map. */
					netmap_free(client[s]);
					assert_int_equal(mapper_netmap(m, s, now, &client[s]), 0);
					continue;
				}
				assert_int_equal(r, 0);
				if (!d)
					continue;
				assert_int_equal(netmap_apply_delta(client[s], d), 0);
				netmap_delta_free(d);
				assert_isolated(client[s], s);
				deltas++;
			}
			/* Every subscriber's map now equals a fresh one. */
			for (uint64_t s = 1; s <= MC_NODES; s++) {
				struct netmap *fresh;

				if (!client[s])
					continue;
				assert_int_equal(mapper_netmap(m, s, now, &fresh), 0);
				assert_int_equal(mapper_dirty_count(m), 0);
				assert_same_map(client[s], fresh);
				assert_same_filter(client[s]->filter, fresh->filter);
				/* Continue from the fresh map: exercises both paths. */
				if (rnd(2)) {
					netmap_free(client[s]);
					client[s] = fresh;
				} else {
					client[s]->seq = fresh->seq;
					netmap_free(fresh);
				}
			}
			mc_assert_fresh_filters(m, client, pol_k, uname, now);
			break;
		}
	}
	if (job)
		mapper_compile_done(m, job, job_ran);
	for (uint64_t s = 1; s <= MC_NODES; s++)
		netmap_free(client[s]);
	mapper_free(m);
	return deltas;
}

/*
 * A node that opted out of key expiry shows key_expiry 0 ("does not expire") to its
 * peers and itself, whatever expiry its record still carries — the same as the
 * server's register response renders it.
 */
static void test_expiry_opt_out_renders_zero(void **state)
{
	struct mapper *m = mk_mapper();
	struct control_node n;
	struct netmap_node want;
	struct netmap *nm;
	const struct netmap_node *p;

	(void)state;
	add(m, 1, 1);
	n = mk_node(2, 1);
	n.key_expiry = T0 - 10; /* past, but the node opted out */
	n.expiry_disabled = true;
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	assert_int_equal(mapper_netmap(m, 1, T0, &nm), 0);
	p = netmap_peer_find(nm, 2);
	assert_non_null(p);
	assert_int_equal(p->key_expiry, 0);
	control_node_render(&n, NULL, &want);
	assert_int_equal(want.key_expiry, 0);
	netmap_free(nm);
	assert_int_equal(mapper_netmap(m, 2, T0, &nm), 0);
	assert_int_equal(nm->self.key_expiry, 0);
	netmap_free(nm);
	mapper_free(m);
}

static void test_model_check(void **state)
{
	unsigned deltas = 0;

	(void)state;
	for (uint64_t seed = 1; seed <= 5; seed++)
		deltas += model_check(seed * 0x9e3779b97f4a7c15ULL, false);
	print_message("model check: 5 x 2000 operations, %u deltas applied\n", deltas);
	assert_true(deltas > 1000);
}

/* The same with the policy compiled off the loop, jobs going stale while they are out. */
static void test_model_check_async(void **state)
{
	unsigned deltas = 0;

	(void)state;
	mc_stale = 0;
	for (uint64_t seed = 1; seed <= 5; seed++)
		deltas += model_check(seed * 0x2545f4914f6cdd1dULL, true);
	print_message("model check off the loop: %u deltas applied, %u compiles dropped stale\n",
		      deltas, mc_stale);
	assert_true(deltas > 1000);
	assert_true(mc_stale > 0);
}

static double elapsed_ms(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_nsec - a->tv_nsec) / 1e6;
}

/*
 * The compressed full map is the JSON map, text for text (but seq: each map takes
 * the next), and the peers' blocks are compressed once for everyone who gets the
 * same block: a map costs the head, the node's own block and the tail.
 */
static void assert_zstd_same(struct mapper *m, uint64_t id, size_t *ret_zlen, size_t *ret_len)
{
	char *json, *text, *a, *b;
	uint8_t *z;
	size_t len, zlen, tlen;

	assert_int_equal(mapper_netmap_zstd(m, id, T0, &z, &zlen), 0);
	assert_int_equal(mapper_netmap_json(m, id, T0, &json, &len), 0);
	assert_true(mapz_is_compressed(z, zlen));
	assert_int_equal(mapz_decompress(z, zlen, CTRL_MSG_MAX, &text, &tlen), 0);
	a = strstr(text, "\"seq\":");
	b = strstr(json, "\"seq\":");
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(strtoull(a + 6, &a, 10) + 1, strtoull(b + 6, &b, 10));
	assert_int_equal(tlen - (size_t)(a - text), len - (size_t)(b - json));
	assert_memory_equal(a, b, len - (size_t)(b - json));
	assert_memory_equal(text, json, (size_t)(strstr(json, "\"seq\":") - json));
	*ret_zlen = zlen;
	*ret_len = len;
	free(text);
	free(json);
	free(z);
}

static void test_zstd_full_map(void **state)
{
	enum { N = 5 * MAPZC_BLOCK - 20 };
	struct mapper *m = mk_mapper();
	struct endpoint ep = mk_ep(9, 1234);
	struct mapzc_stats s0, s1;
	size_t zlen, len;

	(void)state;
	for (uint64_t id = 1; id <= N; id++)
		add(m, id, 1);
	add(m, N + 1, 2);
	assert_int_equal(mapper_zstd_stats(m, &s0), -ENOENT);
	/* node 1 (block 0): every frame is new; its own block is not kept */
	assert_zstd_same(m, 1, &zlen, &len);
	assert_true(zlen * 4 < len);
	assert_int_equal(mapper_zstd_stats(m, &s0), 0);
	assert_int_equal(s0.maps, 1);
	assert_int_equal(s0.blocks_reused, 0);
	assert_int_equal(s0.blocks_made, 2 + 5);
	/* node 100 (block 1): blocks 2..4 as node 1 had them; 0 (whole, no comma) and its own made
	 */
	assert_zstd_same(m, 100, &zlen, &len);
	assert_int_equal(mapper_zstd_stats(m, &s1), 0);
	assert_int_equal(s1.blocks_reused - s0.blocks_reused, 3);
	assert_int_equal(s1.blocks_made - s0.blocks_made, 2 + 2);
	/* node 200 (block 3): every other block from the cache */
	s0 = s1;
	assert_zstd_same(m, 200, &zlen, &len);
	assert_int_equal(mapper_zstd_stats(m, &s1), 0);
	assert_int_equal(s1.blocks_reused - s0.blocks_reused, 4);
	assert_int_equal(s1.blocks_made - s0.blocks_made, 2 + 1);
	/* a peer in block 3 changes: that block is made again, never a stale frame */
	assert_int_equal(mapper_node_endpoints(m, 250, &ep, 1), 0);
	s0 = s1;
	assert_zstd_same(m, 2, &zlen, &len);
	assert_int_equal(mapper_zstd_stats(m, &s1), 0);
	assert_int_equal(s1.blocks_reused - s0.blocks_reused, 3);
	assert_int_equal(s1.blocks_made - s0.blocks_made, 2 + 2);
	/* another tailnet: its own cache; a node alone gets head and tail only */
	s0 = s1;
	assert_zstd_same(m, N + 1, &zlen, &len);
	assert_int_equal(mapper_zstd_stats(m, &s1), 0);
	assert_int_equal(s1.blocks_made - s0.blocks_made, 2);
	assert_int_equal(s1.blocks_reused, s0.blocks_reused);
	mapper_free(m);
}

static void test_scale_10k(void **state)
{
	enum { N = 10000 };
	struct mapper *m = mk_mapper();
	struct timespec t0, t1, t2, t3;
	struct endpoint ep = mk_ep(7, 41641);
	struct netmap *nm;
	unsigned got = 0;

	(void)state;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint64_t id = 1; id <= N; id++) {
		struct control_node n = mk_node(id, 1);

		assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	}
	for (uint64_t id = 1; id <= N; id++)
		assert_int_equal(mapper_subscribe(m, id), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_int_equal(mapper_netmap(m, 1, T0, &nm), 0);
	assert_int_equal(nm->n_peers, N - 1);
	netmap_free(nm);
	assert_int_equal(mapper_dirty_count(m), 0);
	{
		struct timespec j0, j1, j2;
		char *json;
		size_t len;

		clock_gettime(CLOCK_MONOTONIC, &j0);
		assert_int_equal(mapper_netmap_json(m, 1, T0, &json, &len), 0);
		free(json);
		clock_gettime(CLOCK_MONOTONIC, &j1);
		assert_int_equal(mapper_netmap_json(m, 2, T0, &json, &len), 0);
		clock_gettime(CLOCK_MONOTONIC, &j2);
		print_message("mapper scale: full netmap JSON (%zu bytes) cold %.1f ms, "
			      "cached %.1f ms\n", len, elapsed_ms(&j0, &j1), elapsed_ms(&j1, &j2));
		free(json);
		nm = assert_json_same(m, 3, T0);
		netmap_free(nm);
	}

	clock_gettime(CLOCK_MONOTONIC, &t2);
	assert_int_equal(mapper_node_endpoints(m, 42, &ep, 1), 0);
	for (uint64_t s; (s = mapper_dirty_first(m));) {
		struct netmap_delta *d;

		assert_int_equal(mapper_take_delta(m, s, &d), 0);
		if (d && d->n_endpoints == 1)
			got++;
		netmap_delta_free(d);
	}
	clock_gettime(CLOCK_MONOTONIC, &t3);
	assert_int_equal(got, N - 1);
	print_message("mapper scale: %u nodes added+subscribed in %.1f ms; "
		      "one endpoint change -> %u deltas in %.2f ms\n",
		      N, elapsed_ms(&t0, &t1), got, elapsed_ms(&t2, &t3));
	mapper_free(m);
}

/* The relays' admission: nodes by node key, and a generation that moves when one may go. */
static void test_node_by_key(void **state)
{
	struct mapper *m = mk_mapper();
	struct control_node n = mk_node(7, 1);
	uint8_t old_key[NETMAP_KEY_LEN], unknown[NETMAP_KEY_LEN];
	uint64_t gen;

	(void)state;
	memset(unknown, 0xee, sizeof(unknown));
	add(m, 7, 1);
	add(m, 8, 1);
	assert_ptr_equal(mapper_node_by_key(m, n.node_key), mapper_node_get(m, 7));
	assert_null(mapper_node_by_key(m, unknown));

	/* Key rotation: the old key finds nothing, the new one the node. */
	gen = mapper_generation(m);
	memcpy(old_key, n.node_key, NETMAP_KEY_LEN);
	memset(n.node_key, 0x77, NETMAP_KEY_LEN);
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	assert_true(mapper_generation(m) != gen);
	assert_null(mapper_node_by_key(m, old_key));
	assert_int_equal(mapper_node_by_key(m, n.node_key)->id, 7);

	/* Endpoints and presence do not move it; expiry and removal do. */
	gen = mapper_generation(m);
	{
		struct endpoint ep = mk_ep(1, 41641);

		assert_int_equal(mapper_node_endpoints(m, 7, &ep, 1), 0);
	}
	assert_int_equal(mapper_node_online(m, 7, true, T0), 0);
	assert_int_equal(mapper_generation(m), gen);
	n.key_expiry = T0 + 10;
	assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
	gen = mapper_generation(m);
	assert_int_equal(mapper_expire(m, T0 + 10), 1);
	assert_true(mapper_generation(m) != gen);
	gen = mapper_generation(m);
	assert_int_equal(mapper_node_remove(m, 7), 0);
	assert_true(mapper_generation(m) != gen);
	assert_null(mapper_node_by_key(m, n.node_key));
	assert_non_null(mapper_node_by_key(m, mk_node(8, 1).node_key));
	mapper_free(m);
}

static struct policy *mk_policy(const char *text)
{
	struct policy *p = NULL;
	char err[POLICY_ERR_MAX];

	if (policy_parse(text, strlen(text), &p, err))
		fail_msg("%s", err);
	return p;
}

static unsigned delta_index(const uint64_t *ids, unsigned n, uint64_t id)
{
	for (unsigned i = 0; i < n; i++)
		if (ids[i] == id)
			return i;
	return n;
}

/*
 * Under a policy a node sees only the peers it may reach or be reached by, and carries its
 * filter; a policy change and a node's tags change reach exactly the subscribers they affect;
 * removing the policy needs full maps.
 */
/*
 * A subscriber resuming a map it got from an earlier mapper (a restarted server): the changes
 * the caller names, and what no change names (a key that expired, a peer not online), turn
 * the old map into exactly the new one, in one delta whose seq the node accepts.
 */
static void test_resume(void **state)
{
	struct mapper *m = mk_mapper(), *m2 = mk_mapper();
	struct netmap_version v = {.feed = 77};
	const struct mapper_missed missed[] = {
	    {.id = 2}, {.id = 6}, {.id = 3}, {.id = 4, .live_only = true}, {.id = 1},
	};
	struct netmap *held, *want;
	struct netmap_delta *d;
	struct control_node n;
	struct endpoint ep = mk_ep(4, 4444);
	uint64_t ids[4];
	unsigned k;

	(void)state;
	for (uint64_t id = 1; id <= 7; id++) {
		if (id == 6)
			continue;
		n = mk_node(id, 1);
		if (id == 5)
			n.key_expiry = T0 + 10;
		assert_int_equal(mapper_node_upsert(m, &n, T0), 0);
		assert_int_equal(mapper_node_online(m, id, true, T0), 0);
	}
	assert_int_equal(mapper_subscribe(m, 1), 0);
	memset(v.digest, 0xd1, sizeof(v.digest));
	mapper_version_set(m, &v);
	for (int i = 0; i < 40; i++) { /* a map of an earlier run: its seq is ahead of m2's */
		assert_int_equal(mapper_netmap(m, 1, T0, &held), 0);
		netmap_free(held);
	}
	assert_int_equal(mapper_netmap(m, 1, T0, &held), 0);
	assert_int_equal(held->version.feed, 77);
	assert_int_equal(held->n_peers, 5);

	/* The next run: 2 renamed, 3 deleted, 4 back with new endpoints and offline, 5's key
	 * expired, 6 new, 7 as it was. */
	for (uint64_t id = 1; id <= 7; id++) {
		if (id == 3)
			continue;
		n = mk_node(id, 1);
		if (id == 2)
			snprintf(n.name, sizeof(n.name), "bee");
		if (id == 4) {
			n.n_endpoints = 1;
			n.endpoints[0] = ep;
		}
		if (id == 5)
			n.key_expiry = T0 + 10;
		n.online = id != 4;
		n.last_seen = id == 4 ? T0 + 5 : T0;
		assert_int_equal(mapper_node_upsert(m2, &n, T0 + 5), 0);
	}
	assert_int_equal(mapper_subscribe(m2, 1), 0);
	mapper_seq_floor(m2, held->seq);
	assert_int_equal(mapper_resume(m2, 1, missed, ARRAY_SIZE(missed), false, T0 + 20), 0);
	assert_int_equal(mapper_resume(m2, 99, missed, 1, false, T0 + 20), -ENOENT);
	assert_int_equal(flush(m2, ids, &d, 1), 1);
	assert_int_equal(ids[0], 1);
	assert_true(d->seq > held->seq);
	assert_true(d->has_self);
	assert_null(d->relay_map);
	/* exactly: 2 and 6 as records, 3 and 5 gone, 4 patched; 7 and self untouched */
	assert_int_equal(d->n_added, 2);
	assert_int_equal(d->n_changed, 0);
	k = d->added[0].id + d->added[1].id;
	assert_int_equal(k, 2 + 6);
	assert_int_equal(d->n_removed, 2);
	assert_int_equal(d->removed[0] + d->removed[1], 3 + 5);
	assert_int_equal(d->n_endpoints, 1);
	assert_int_equal(d->endpoints[0].id, 4);
	assert_int_equal(d->n_online, 1);
	assert_int_equal(d->online[0].id, 4);
	assert_false(d->online[0].online);

	assert_int_equal(netmap_apply_delta(held, d), 0);
	assert_int_equal(mapper_netmap(m2, 1, T0 + 20, &want), 0);
	assert_string_equal(netmap_peer_find(held, 2)->name, "bee");
	assert_same_map(held, want);
	netmap_delta_free(d);
	netmap_free(held);
	netmap_free(want);
	mapper_free(m);
	mapper_free(m2);
}

static void test_policy_views(void **state)
{
	struct mapper *m = mk_mapper();
	struct control_node n2 = mk_node(2, 1), n3 = mk_node(3, 1);
	struct netmap_delta *d[8];
	struct netmap *nm;
	uint64_t ids[8];
	unsigned n, k;
	char *json;
	size_t len;

	(void)state;
	add(m, 1, 1);
	n2.user_id = 0;
	n2.n_tags = 1;
	snprintf(n2.tags[0], NETMAP_TAG_MAX, "tag:server");
	n3.user_id = 0;
	n3.n_tags = 1;
	snprintf(n3.tags[0], NETMAP_TAG_MAX, "tag:other");
	assert_int_equal(mapper_node_upsert(m, &n2, T0), 0);
	assert_int_equal(mapper_node_upsert(m, &n3, T0), 0);
	for (uint64_t id = 1; id <= 3; id++) {
		assert_int_equal(mapper_subscribe(m, id), 0);
		assert_int_equal(mapper_netmap(m, id, T0, &nm), 0);
		assert_int_equal(nm->n_peers, 2);
		assert_null(nm->filter);
		/* No policy: nothing said of what it may open (anything, as no filter says). */
		assert_null(nm->reach);
		netmap_free(nm);
	}
	assert_false(mapper_policy_has(m, 1));

	assert_int_equal(mapper_policy_set(m, 1, mk_policy(
		"{\"tagOwners\": {\"tag:server\": [], \"tag:other\": []},"
		" \"acls\": [{\"action\": \"accept\", \"src\": [\"user1@example.com\"],"
		" \"dst\": [\"tag:server:22\"], \"proto\": \"tcp\"}]}")), 0);
	assert_true(mapper_policy_has(m, 1));
	n = flush(m, ids, d, 8);
	assert_int_equal(n, 3);
	/* 1: loses 3, gets an empty filter (nothing may start a flow to it). */
	k = delta_index(ids, n, 1);
	assert_int_equal(d[k]->n_removed, 1);
	assert_int_equal(d[k]->removed[0], 3);
	assert_non_null(d[k]->filter);
	assert_int_equal(d[k]->filter->n_rules, 0);
	/* ... and may open TCP 22 on 2, the one peer it sees: on every peer ("*"). */
	assert_non_null(d[k]->reach);
	assert_int_equal(d[k]->reach->n_sets, 1);
	assert_true(d[k]->reach->sets[0].all);
	assert_int_equal(d[k]->reach->n_peers, 0);
	assert_int_equal(d[k]->reach->n_ports, 1);
	assert_int_equal(d[k]->reach->ports[0].proto, 6);
	assert_int_equal(d[k]->reach->ports[0].first, 22);
	assert_int_equal(d[k]->reach->ports[0].last, 22);
	/* 2: loses 3; its filter lets 1's addresses reach port 22 over TCP. */
	k = delta_index(ids, n, 2);
	assert_int_equal(d[k]->n_removed, 1);
	assert_int_equal(d[k]->filter->n_rules, 1);
	assert_int_equal(d[k]->filter->n_srcs, 2);
	assert_int_equal(d[k]->filter->srcs[0].addr[3], 1);
	assert_int_equal(d[k]->filter->dsts[0].port_first, 22);
	assert_int_equal(d[k]->filter->rules[0].protos[0], 6);
	/* 2 may open nothing: said, as an empty list. */
	assert_non_null(d[k]->reach);
	assert_int_equal(d[k]->reach->n_sets, 0);
	/* 3: alone. */
	k = delta_index(ids, n, 3);
	assert_int_equal(d[k]->n_removed, 2);
	assert_non_null(d[k]->reach);
	assert_int_equal(d[k]->reach->n_sets, 0);
	free_deltas(d, n);

	assert_int_equal(mapper_netmap(m, 3, T0, &nm), 0);
	assert_int_equal(nm->n_peers, 0);
	assert_non_null(nm->filter);
	netmap_free(nm);
	assert_int_equal(mapper_netmap(m, 1, T0, &nm), 0);
	assert_int_equal(nm->n_peers, 1);
	assert_true(has_peer(nm, 2));
	netmap_free(nm);
	/* The text form carries the same filter; the hidden node's key is not in it. */
	assert_int_equal(mapper_netmap_json(m, 2, T0, &json, &len), 0);
	assert_non_null(strstr(json, "\"packet_filter\":{\"rules\":[{\"src\":[\"100.64.0.1/32\""));
	assert_null(strstr(json, "\"node-3\""));
	assert_non_null(strstr(json, ",\"may_open\":[]}"));
	free(json);
	assert_int_equal(mapper_netmap_json(m, 1, T0, &json, &len), 0);
	assert_non_null(strstr(json, ",\"may_open\":[{\"peers\":\"*\",\"ports\":[[6,22,22]]}]}"));
	free(json);
	assert_int_equal(mapper_netmap(m, 1, T0, &nm), 0);
	assert_non_null(nm->reach);
	assert_true(nm->reach->sets[0].all);
	netmap_free(nm);

	/* 3 becomes a server: 1 and 3 see each other; 2's filter and peers stay. */
	snprintf(n3.tags[0], NETMAP_TAG_MAX, "tag:server");
	assert_int_equal(mapper_node_upsert(m, &n3, T0), 0);
	n = flush(m, ids, d, 8);
	k = delta_index(ids, n, 1);
	assert_true(k < n);
	assert_int_equal(d[k]->n_added, 1);
	assert_int_equal(d[k]->added[0].id, 3);
	assert_null(d[k]->filter);
	/* 1 may open TCP 22 on 2 and 3, every peer it sees: "*" as before, nothing to say. */
	assert_null(d[k]->reach);
	k = delta_index(ids, n, 3);
	assert_true(k < n);
	assert_int_equal(d[k]->n_added, 1);
	assert_int_equal(d[k]->added[0].id, 1);
	assert_non_null(d[k]->filter);
	assert_int_equal(d[k]->filter->n_rules, 1);
	/* 2 sees 3's record change (its tags), nothing about its own view. */
	k = delta_index(ids, n, 2);
	assert_true(k == n ||
		    (!d[k]->filter && !d[k]->n_added && !d[k]->n_removed && !d[k]->reach));
	free_deltas(d, n);

	/* No policy again: "no filter" is said by full maps. */
	assert_int_equal(mapper_policy_set(m, 1, NULL), 0);
	assert_false(mapper_policy_has(m, 1));
	for (uint64_t id = 1; id <= 3; id++) {
		assert_int_equal(mapper_dirty_first(m) != 0, 1);
		assert_int_equal(mapper_take_delta(m, id, &d[0]), -ENOBUFS);
		assert_int_equal(mapper_netmap(m, id, T0, &nm), 0);
		assert_int_equal(nm->n_peers, 2);
		assert_null(nm->filter);
		assert_null(nm->reach);
		netmap_free(nm);
	}
	assert_int_equal(mapper_dirty_count(m), 0);
	mapper_free(m);
}

/*
 * Under "everyone reaches everyone" what a node may open is "*", the same bytes whatever the
 * tailnet's size: a join sends each subscriber the added peer and no may_open (a list by id
 * would send every node every id). A policy with a real difference between peers still sends
 * the list when a node joins.
 */
static void test_policy_may_open_join(void **state)
{
	static const char *const pols[] = {
	    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
	    /* also TCP 80 on 100.64.0.2 */
	    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\","
	    " \"100.64.0.2:80\"], \"proto\": \"tcp\"}]}",
	};
	struct netmap_delta *d[8];
	struct netmap *nm;
	uint64_t ids[8];
	unsigned n, k;
	char *json;
	size_t len;

	(void)state;
	for (size_t pi = 0; pi < 2; pi++) {
		struct mapper *m = mk_mapper();

		for (uint64_t id = 1; id <= 3; id++) {
			add(m, id, 1);
			assert_int_equal(mapper_subscribe(m, id), 0);
		}
		assert_int_equal(mapper_policy_set(m, 1, mk_policy(pols[pi])), 0);
		n = flush(m, ids, d, 8);
		free_deltas(d, n);
		for (uint64_t id = 1; id <= 3; id++) {
			assert_int_equal(mapper_netmap(m, id, T0, &nm), 0);
			assert_non_null(nm->reach);
			assert_int_equal(nm->reach->sets[0].all, pi == 0);
			netmap_free(nm);
		}
		assert_int_equal(mapper_netmap_json(m, 1, T0, &json, &len), 0);
		if (pi == 0)
			assert_non_null(strstr(json, "\"may_open\":[{\"peers\":\"*\",\"ports\":"
						     "[[1,0,65535],[6,0,65535],[17,0,65535],[58,0,"
						     "65535]]}]}"));
		free(json);

		/* Node 4 joins. */
		add(m, 4, 1);
		assert_int_equal(mapper_subscribe(m, 4), 0);
		n = flush(m, ids, d, 8);
		for (uint64_t id = 1; id <= 3; id++) {
			k = delta_index(ids, n, id);
			assert_true(k < n);
			assert_int_equal(d[k]->n_added, 1);
			assert_int_equal(d[k]->added[0].id, 4);
			if (pi == 0) {
				assert_null(d[k]->reach);
			} else {
				/* TCP 80 on 2 only, so a list, and 4 is in it. */
				assert_non_null(d[k]->reach);
				assert_false(d[k]->reach->sets[0].all);
				assert_int_equal(d[k]->reach->n_sets, 2);
				assert_non_null(netmap_reach_find(d[k]->reach, 4));
				assert_ptr_not_equal(netmap_reach_find(d[k]->reach, 4),
						     netmap_reach_find(d[k]->reach, 2));
			}
		}
		free_deltas(d, n);
		/* The joiner's full map says the same as its peers'. */
		assert_int_equal(mapper_netmap(m, 4, T0, &nm), 0);
		assert_int_equal(nm->n_peers, 3);
		assert_non_null(nm->reach);
		assert_int_equal(nm->reach->sets[0].all, pi == 0);
		netmap_free(nm);
		mapper_free(m);
	}
}

/*
 * Under a rule that lists peers one by one (user1 may open tcp 22 on the servers and tcp 5432
 * on the db, so its list is by id, not "*"), a subscriber that takes patches is told of a
 * server that joins, leaves or changes its tag by that one id, not the whole list again;
 * applied, what it holds is exactly a fresh full map's list. One that did not offer patches
 * (an older node) still gets the list.
 */
static void test_policy_may_open_patch(void **state)
{
	static const char pol[] =
	    "{\"tagOwners\": {\"tag:server\": [], \"tag:db\": []}, \"acls\": ["
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": "
	    "[\"tag:server:22\"], \"proto\": \"tcp\"},"
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": "
	    "[\"tag:db:5432\"], \"proto\": \"tcp\"}]}";
	/* 1-4 user1's devices (4 an older node), 5-9 servers, 10-11 db */
	enum { OLD = 4, SUBS = 11, JOINER = 12 };
	struct netmap *client[JOINER + 1] = {0};
	struct mapper *m = mk_mapper();
	struct netmap_delta *d[16];
	struct control_node x;
	uint64_t ids[16];
	unsigned n;
	char *json;
	size_t len;

	(void)state;
	for (uint64_t id = 1; id <= SUBS; id++) {
		x = mk_node(id, 1);
		if (id >= 5) {
			x.user_id = 0;
			x.n_tags = 1;
			snprintf(x.tags[0], NETMAP_TAG_MAX, id <= 9 ? "tag:server" : "tag:db");
		}
		assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	}
	assert_int_equal(mapper_policy_set(m, 1, mk_policy(pol)), 0);
	for (uint64_t id = 1; id <= SUBS; id++) {
		assert_int_equal(mapper_subscribe(m, id), 0);
		assert_int_equal(mapper_reach_patch_set(m, id, id != OLD), 0);
		assert_int_equal(mapper_netmap(m, id, T0, &client[id]), 0);
	}
	assert_int_equal(mapper_reach_patch_set(m, 99, true), -ENOENT);
	assert_non_null(client[1]->reach);
	assert_int_equal(client[1]->reach->n_sets, 2);
	assert_int_equal(client[1]->reach->n_peers, 7);

	for (int step = 0; step < 3; step++) {
		/* a server joins; server 6 leaves; db 10 becomes a server */
		if (step == 0) {
			x = mk_node(JOINER, 1);
			x.user_id = 0;
			x.n_tags = 1;
			snprintf(x.tags[0], NETMAP_TAG_MAX, "tag:server");
			assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
		} else if (step == 1) {
			assert_int_equal(mapper_node_remove(m, 6), 0);
			netmap_free(client[6]);
			client[6] = NULL;
		} else {
			x = mk_node(10, 1);
			x.user_id = 0;
			x.n_tags = 1;
			snprintf(x.tags[0], NETMAP_TAG_MAX, "tag:server");
			assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
		}
		n = flush(m, ids, d, 16);
		for (uint64_t id = 1; id <= 4; id++) {
			struct netmap_delta *e = delta_for(ids, d, n, id);
			const struct netmap_reach_patch *p;
			struct ctrl_msg msg = {.type = CTRL_MSG_DELTA, .delta = e};

			assert_non_null(e);
			if (id == OLD) {
				assert_null(e->reach_patch);
				assert_non_null(e->reach);
				continue;
			}
			/* The change alone, not the list. */
			assert_null(e->reach);
			p = e->reach_patch;
			assert_non_null(p);
			assert_int_equal(p->n_removed, step == 1);
			assert_int_equal(p->add->n_peers, step != 1);
			if (step == 1)
				assert_int_equal(p->removed[0], 6);
			else
				assert_int_equal(p->add->peers[0], step == 0 ? JOINER : 10);
			assert_int_equal(ctrl_msg_encode(&msg, &json, &len), 0);
			assert_non_null(strstr(
			    json,
			    step == 0	? "\"may_open_patch\":{\"removed\":[],\"sets\":[{\"peers\":"
					  "[12],\"ports\":[[6,22,22]]}]}"
			    : step == 1 ? "\"may_open_patch\":{\"removed\":[6],\"sets\":[]}"
					: "\"may_open_patch\":{\"removed\":[],\"sets\":[{\"peers\":"
					  "[10],\"ports\":[[6,22,22]]}]}"));
			free(json);
		}
		for (unsigned i = 0; i < n; i++) {
			/* The servers and the db may open nothing, before and after. */
			if (ids[i] > 4)
				assert_true(!d[i]->reach && !d[i]->reach_patch);
			if (client[ids[i]])
				assert_int_equal(netmap_apply_delta(client[ids[i]], d[i]), 0);
		}
		free_deltas(d, n);
		if (step == 0) {
			assert_int_equal(mapper_subscribe(m, JOINER), 0);
			assert_int_equal(mapper_reach_patch_set(m, JOINER, true), 0);
			assert_int_equal(mapper_netmap(m, JOINER, T0, &client[JOINER]), 0);
		}
		/* Exactly what a full map says now, byte for byte. */
		for (uint64_t id = 1; id <= JOINER; id++) {
			struct netmap *fresh;

			if (!client[id])
				continue;
			assert_int_equal(mapper_netmap(m, id, T0, &fresh), 0);
			assert_true(netmap_reach_equal(client[id]->reach, fresh->reach));
			netmap_free(fresh);
		}
	}
	assert_int_equal(client[1]->reach->n_peers, 7);
	for (uint64_t id = 0; id <= JOINER; id++)
		netmap_free(client[id]);
	mapper_free(m);
}

/*
 * A policy change that touches one tag's rule rebuilds and sends the filters of that tag's
 * nodes and of no one else; rules that only moved within the policy rebuild nothing; what is
 * kept equals what a fresh build gives.
 */
static void test_policy_change_incremental(void **state)
{
	static const char *const pols[] = {
	    /* 0: web on 80, db on 5432 */
	    "{\"tagOwners\": {\"tag:web\": [], \"tag:db\": []}, \"acls\": ["
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": [\"tag:web:80\"]},"
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": "
	    "[\"tag:db:5432\"]}]}",
	    /* 1: web also on 443 */
	    "{\"tagOwners\": {\"tag:web\": [], \"tag:db\": []}, \"acls\": ["
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": "
	    "[\"tag:web:80,443\"]},"
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": "
	    "[\"tag:db:5432\"]}]}",
	    /* 2: the same rules as 1 in the other order, with a comment */
	    "{\"tagOwners\": {\"tag:web\": [], \"tag:db\": []}, \"acls\": [ // db first\n"
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": "
	    "[\"tag:db:5432\"]},"
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": "
	    "[\"tag:web:80,443\"]}]}",
	};
	struct mapper *m = mk_mapper(), *fresh;
	struct netmap_delta *d[16];
	struct netmap *a, *b;
	uint64_t ids[16], built;
	unsigned n;

	(void)state;
	/* 1-3 tag:web, 4-5 tag:db, 6-12 user1's devices. */
	for (uint64_t id = 1; id <= 12; id++) {
		struct control_node x = mk_node(id, 1);

		if (id <= 5) {
			x.user_id = 0;
			x.n_tags = 1;
			snprintf(x.tags[0], NETMAP_TAG_MAX, id <= 3 ? "tag:web" : "tag:db");
		}
		assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	}
	assert_int_equal(mapper_policy_set(m, 1, mk_policy(pols[0])), 0);
	for (uint64_t id = 1; id <= 12; id++) {
		assert_int_equal(mapper_subscribe(m, id), 0);
		assert_int_equal(mapper_netmap(m, id, T0, &a), 0);
		netmap_free(a);
	}
	free_deltas(d, flush(m, ids, d, 16));

	built = mapper_policy_filters_built(m, 1);
	assert_int_equal(mapper_policy_set(m, 1, mk_policy(pols[1])), 0);
	n = flush(m, ids, d, 16);
	/*
	 * Exactly the three web servers: a new filter, built once each, no peer change; and
	 * user1's seven devices: what they may open (443 on the web servers), no filter.
	 */
	assert_int_equal(mapper_policy_filters_built(m, 1) - built, 3);
	assert_int_equal(n, 10);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(d[i]->n_added + d[i]->n_removed + d[i]->n_changed, 0);
		if (ids[i] >= 6) {
			const struct netmap_reach_set *w;

			assert_null(d[i]->filter);
			assert_non_null(d[i]->reach);
			w = netmap_reach_find(d[i]->reach, 1);
			assert_non_null(w);
			assert_ptr_equal(netmap_reach_find(d[i]->reach, 3), w);
			assert_null(netmap_reach_find(d[i]->reach, 6));
			/* 80 and 443 over TCP and UDP, ICMP and ICMPv6. */
			assert_int_equal(w->n_ports, 6);
			continue;
		}
		assert_true(ids[i] >= 1 && ids[i] <= 3);
		assert_non_null(d[i]->filter);
		assert_int_equal(d[i]->filter->n_dsts, 4); /* two addresses x two ports */
		assert_null(d[i]->reach);
	}
	free_deltas(d, n);

	built = mapper_policy_filters_built(m, 1);
	assert_int_equal(mapper_policy_set(m, 1, mk_policy(pols[2])), 0);
	assert_int_equal(flush(m, ids, d, 16), 0);
	assert_int_equal(mapper_policy_filters_built(m, 1) - built, 0);

	/* What every node holds is what a mapper that only ever had policy 2 builds. */
	fresh = mk_mapper();
	for (uint64_t id = 1; id <= 12; id++)
		assert_int_equal(mapper_node_upsert(fresh, mapper_node_get(m, id), T0), 0);
	assert_int_equal(mapper_policy_set(fresh, 1, mk_policy(pols[2])), 0);
	for (uint64_t id = 1; id <= 12; id++) {
		assert_int_equal(mapper_netmap(m, id, T0, &a), 0);
		assert_int_equal(mapper_netmap(fresh, id, T0, &b), 0);
		assert_same_filter(a->filter, b->filter);
		assert_true(netmap_reach_equal(a->reach, b->reach));
		assert_int_equal(a->n_peers, b->n_peers);
		netmap_free(a);
		netmap_free(b);
	}
	mapper_free(fresh);

	/* A node change is not a policy change: a new db server rebuilds the filters. */
	{
		struct control_node x = mk_node(13, 1);

		x.user_id = 0;
		x.n_tags = 1;
		snprintf(x.tags[0], NETMAP_TAG_MAX, "tag:db");
		assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
		n = flush(m, ids, d, 16);
		/* user1's devices see it, and may open 5432 on it; no existing filter changed. */
		assert_int_equal(n, 7);
		for (unsigned i = 0; i < n; i++) {
			assert_true(ids[i] >= 6 && ids[i] <= 12);
			assert_int_equal(d[i]->n_added, 1);
			assert_null(d[i]->filter);
			assert_non_null(d[i]->reach);
			assert_ptr_equal(netmap_reach_find(d[i]->reach, 13),
					 netmap_reach_find(d[i]->reach, 4));
		}
		free_deltas(d, n);
	}
	mapper_free(m);
}

/* user1 may reach tag:web on 80 and 443 and tag:db on 5432. */
static const char inc_policy[] =
    "{\"tagOwners\": {\"tag:web\": [], \"tag:db\": []}, \"acls\": ["
    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": [\"tag:web:80,443\"]},"
    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"], \"dst\": [\"tag:db:5432\"]}]}";

static struct control_node inc_node(uint64_t id, const char *tag)
{
	struct control_node x = mk_node(id, 1);

	if (tag) {
		x.user_id = 0;
		x.n_tags = 1;
		snprintf(x.tags[0], NETMAP_TAG_MAX, "%s", tag);
	}
	return x;
}

/* 1-3 tag:web, 4-5 tag:db, 6-12 user1's devices, all subscribed, under inc_policy. */
static struct mapper *inc_setup(struct netmap **client)
{
	struct mapper *m = mk_mapper();
	struct netmap_delta *d[16];
	uint64_t ids[16];

	for (uint64_t id = 1; id <= 12; id++) {
		const char *tag = id <= 3 ? "tag:web" : id <= 5 ? "tag:db" : NULL;
		struct control_node x = inc_node(id, tag);

		assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	}
	assert_int_equal(mapper_policy_set(m, 1, mk_policy(inc_policy)), 0);
	for (uint64_t id = 1; id <= 12; id++) {
		assert_int_equal(mapper_subscribe(m, id), 0);
		assert_int_equal(mapper_netmap(m, id, T0, &client[id]), 0);
	}
	free_deltas(d, flush(m, ids, d, 16));
	return m;
}

/*
 * Every subscriber's map, its first one with the deltas applied, equals what a mapper that only
 * ever had the final nodes and policy builds: peers and filter.
 */
static void assert_like_fresh(struct mapper *m, struct netmap **client, uint64_t max_id,
			      const char *policy_text)
{
	struct mapper *fresh = mk_mapper();

	for (uint64_t id = 1; id <= max_id; id++)
		if (mapper_node_get(m, id))
			assert_int_equal(mapper_node_upsert(fresh, mapper_node_get(m, id), T0), 0);
	assert_int_equal(mapper_policy_set(fresh, 1, mk_policy(policy_text)), 0);
	for (uint64_t id = 1; id <= max_id; id++) {
		struct netmap *b;

		if (!client[id])
			continue;
		assert_int_equal(mapper_netmap(fresh, id, T0, &b), 0);
		assert_same_filter(client[id]->filter, b->filter);
		assert_same_map(client[id], b);
		netmap_free(b);
	}
	mapper_free(fresh);
}

/* Takes every pending delta and applies it to the subscriber's map. */
static unsigned flush_apply(struct mapper *m, struct netmap **client, uint64_t *ids,
			    unsigned *with_filter)
{
	struct netmap_delta *d[32];
	unsigned n = flush(m, ids, d, 32);

	*with_filter = 0;
	for (unsigned i = 0; i < n; i++) {
		assert_non_null(client[ids[i]]);
		*with_filter += d[i]->filter != NULL;
		assert_int_equal(netmap_apply_delta(client[ids[i]], d[i]), 0);
	}
	free_deltas(d, n);
	return n;
}

static bool in_ids(const uint64_t *ids, unsigned n, uint64_t id)
{
	return delta_index(ids, n, id) < n;
}

/*
 * A node change rebuilds only the filters that list the node as a source (and its own): a
 * db server that nobody's filter names, a device of user1 whose address goes into the web and
 * db servers' filters, then its address change, its tag change and its leaving.
 */
static void test_node_change_incremental(void **state)
{
	struct netmap *client[20] = { 0 };
	struct mapper *m = inc_setup(client);
	struct control_node x;
	uint64_t ids[32], built;
	unsigned n, nf;

	(void)state;
	/* Join of a db server: only user1's devices see it, no filter names it. */
	built = mapper_policy_filters_built(m, 1);
	x = inc_node(13, "tag:db");
	assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	n = flush_apply(m, client, ids, &nf);
	assert_int_equal(mapper_policy_filters_built(m, 1) - built, 0);
	assert_int_equal(n, 7);
	assert_int_equal(nf, 0);
	assert_int_equal(mapper_subscribe(m, 13), 0);
	assert_int_equal(mapper_netmap(m, 13, T0, &client[13]), 0);
	assert_like_fresh(m, client, 19, inc_policy);

	/* Join of a device of user1: the 3 web and 3 db servers' filters, built and sent. */
	built = mapper_policy_filters_built(m, 1);
	x = inc_node(14, NULL);
	assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	n = flush_apply(m, client, ids, &nf);
	assert_int_equal(mapper_policy_filters_built(m, 1) - built, 6);
	assert_int_equal(nf, 6);
	for (uint64_t id = 1; id <= 13; id++)
		assert_true(in_ids(ids, n, id) == (id <= 5 || id == 13));
	assert_like_fresh(m, client, 19, inc_policy);

	/* Its address changes: the same six. */
	built = mapper_policy_filters_built(m, 1);
	x.ipv4[3] = 200;
	assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	n = flush_apply(m, client, ids, &nf);
	assert_int_equal(mapper_policy_filters_built(m, 1) - built, 6);
	assert_int_equal(nf, 6);
	assert_like_fresh(m, client, 19, inc_policy);

	/* A rename is nothing the policy reads: no filter built. */
	built = mapper_policy_filters_built(m, 1);
	snprintf(x.name, sizeof(x.name), "renamed");
	assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	flush_apply(m, client, ids, &nf);
	assert_int_equal(mapper_policy_filters_built(m, 1) - built, 0);
	assert_int_equal(nf, 0);

	/* The db server becomes a web server: its own filter only (it is no one's source). */
	built = mapper_policy_filters_built(m, 1);
	x = inc_node(13, "tag:web");
	assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	n = flush_apply(m, client, ids, &nf);
	assert_int_equal(mapper_policy_filters_built(m, 1) - built, 1);
	assert_int_equal(nf, 1);
	assert_like_fresh(m, client, 19, inc_policy);

	/* The device leaves: the six again (the rest move index, which must not matter). */
	built = mapper_policy_filters_built(m, 1);
	assert_int_equal(mapper_node_remove(m, 14), 0);
	n = flush_apply(m, client, ids, &nf);
	assert_int_equal(mapper_policy_filters_built(m, 1) - built, 6);
	assert_int_equal(nf, 6);
	assert_like_fresh(m, client, 19, inc_policy);
	for (unsigned i = 0; i < ARRAY_SIZE(client); i++)
		netmap_free(client[i]);
	mapper_free(m);
}

/*
 * Off the loop: a compile whose tailnet changed while it ran (a node joined, the policy was
 * set again) is dropped without a delta, the tailnet is compiled again, and the final state
 * equals a fresh compile of the final nodes and policy.
 */
static void test_policy_compile_async(void **state)
{
	static const char pol2[] =
	    "{\"tagOwners\": {\"tag:web\": [], \"tag:db\": []}, \"acls\": ["
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"],"
	    " \"dst\": [\"tag:web:8080\"]},"
	    "{\"action\": \"accept\", \"src\": [\"tag:web\"], \"dst\": [\"tag:db:5432\"]}]}";
	static const char pol3[] =
	    "{\"tagOwners\": {\"tag:web\": [], \"tag:db\": []}, \"acls\": ["
	    "{\"action\": \"accept\", \"src\": [\"user1@example.com\"],"
	    " \"dst\": [\"tag:web:8443\"]},"
	    "{\"action\": \"accept\", \"src\": [\"tag:web\"], \"dst\": [\"tag:db:5432\"]}]}";
	struct netmap *client[20] = { 0 };
	struct mapper *m = inc_setup(client);
	struct mapper_compile *c, *c2;
	struct control_node x;
	uint64_t ids[32];
	unsigned nf;

	(void)state;
	mapper_compile_async(m, true);
	/* Reads keep the view in force: nothing is compiled or sent until the job is back. */
	assert_int_equal(mapper_policy_set(m, 1, mk_policy(pol2)), 0);
	assert_int_equal(mapper_dirty_count(m), 0);
	assert_int_equal(mapper_compile_next(m, &c), 1);
	assert_int_equal(mapper_compile_next(m, &c2), 0); /* one job per tailnet */
	mapper_compile_run(c);
	/* Meanwhile a node joins, and the policy is set again (the job's policy is replaced). */
	x = inc_node(13, "tag:db");
	assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	assert_int_equal(mapper_policy_set(m, 1, mk_policy(pol3)), 0);
	assert_int_equal(mapper_compile_done(m, c, true), -ESTALE);
	/* Nothing of the stale result went out: no filter, no peer (13 is not in the view). */
	assert_int_equal(flush_apply(m, client, ids, &nf), 0);
	assert_like_fresh(m, client, 12, inc_policy);

	/* Again, and a job that never ran (a cancelled submit) changes nothing either. */
	assert_int_equal(mapper_compile_next(m, &c), 1);
	assert_int_equal(mapper_compile_done(m, c, false), -ECANCELED);
	assert_int_equal(mapper_dirty_count(m), 0);
	assert_int_equal(mapper_compile_next(m, &c), 1);
	mapper_compile_run(c);
	assert_int_equal(mapper_compile_done(m, c, true), 0);
	assert_int_equal(mapper_compile_next(m, &c), 0);
	flush_apply(m, client, ids, &nf);
	assert_int_equal(nf, 5); /* the web and db servers' filters; user1's devices take none */
	assert_like_fresh(m, client, 19, pol3);

	/* A stale result over a node change alone: dropped, recompiled, right. */
	x = inc_node(14, NULL);
	assert_int_equal(mapper_node_upsert(m, &x, T0), 0);
	assert_int_equal(mapper_compile_next(m, &c), 1);
	mapper_compile_run(c);
	assert_int_equal(mapper_node_remove(m, 13), 0);
	assert_int_equal(mapper_compile_done(m, c, true), -ESTALE);
	assert_int_equal(mapper_compile_next(m, &c), 1);
	mapper_compile_run(c);
	assert_int_equal(mapper_compile_done(m, c, true), 0);
	flush_apply(m, client, ids, &nf);
	netmap_free(client[13]);
	client[13] = NULL;
	assert_like_fresh(m, client, 19, pol3);
	for (unsigned i = 0; i < ARRAY_SIZE(client); i++)
		netmap_free(client[i]);
	mapper_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_full_map),
	    cmocka_unit_test(test_delta_targets),
	    cmocka_unit_test(test_coalescing),
	    cmocka_unit_test(test_expiry_and_approval),
	    cmocka_unit_test(test_expiry_opt_out_renders_zero),
	    cmocka_unit_test(test_node_by_key),
	    cmocka_unit_test(test_model_check),
	    cmocka_unit_test(test_model_check_async),
	    cmocka_unit_test(test_relay_map_and_home),
	    cmocka_unit_test(test_flow_log),
	    cmocka_unit_test(test_mcert_push),
	    cmocka_unit_test(test_zstd_full_map),
	    cmocka_unit_test(test_scale_10k),
	    cmocka_unit_test(test_policy_views),
	    cmocka_unit_test(test_policy_may_open_join),
	    cmocka_unit_test(test_policy_may_open_patch),
	    cmocka_unit_test(test_policy_change_incremental),
	    cmocka_unit_test(test_node_change_incremental),
	    cmocka_unit_test(test_policy_compile_async),
	    cmocka_unit_test(test_resume),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
