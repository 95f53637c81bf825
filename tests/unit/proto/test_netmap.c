/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/netmap.h"

static struct netmap_node node_make(uint64_t id)
{
	struct netmap_node n;

	memset(&n, 0, sizeof(n));
	n.id = id;
	snprintf(n.name, sizeof(n.name), "node-%llu", (unsigned long long)id);
	n.node_key[0] = (uint8_t)id;
	return n;
}

static struct netmap *netmap_make(uint64_t seq, unsigned n_peers)
{
	struct netmap *nm = calloc(1, sizeof(*nm));

	assert_non_null(nm);
	nm->seq = seq;
	nm->self = node_make(1);
	nm->peers = calloc(n_peers ? n_peers : 1, sizeof(*nm->peers));
	assert_non_null(nm->peers);
	for (unsigned i = 0; i < n_peers; i++)
		nm->peers[i] = node_make(10 + i);
	nm->n_peers = n_peers;
	return nm;
}

static struct netmap_delta *delta_new(uint64_t seq)
{
	struct netmap_delta *d = calloc(1, sizeof(*d));

	assert_non_null(d);
	d->seq = seq;
	return d;
}

static void test_free_null(void **state)
{
	(void)state;
	netmap_free(NULL);
	netmap_delta_free(NULL);
}

static void test_ipv6_mapping(void **state)
{
	static const uint8_t v4[4] = { 100, 64, 0, 7 };
	static const uint8_t want[16] = { 0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11, 0, 0,
					  0,    0,    0,    0,    0x64, 0x40, 0, 7 };
	uint8_t v6[16];

	(void)state;
	netmap_ipv6_from_ipv4(v6, v4);
	assert_memory_equal(v6, want, 16);
}

static void test_find(void **state)
{
	struct netmap *nm = netmap_make(1, 5);

	(void)state;
	assert_non_null(netmap_peer_find(nm, 12));
	assert_int_equal(netmap_peer_find(nm, 12)->id, 12);
	assert_null(netmap_peer_find(nm, 1)); /* self is not a peer */
	assert_null(netmap_peer_find(nm, 99));
	netmap_free(nm);
}

static void test_apply_all_kinds(void **state)
{
	struct netmap *nm = netmap_make(5, 4); /* peers 10..13 */
	struct netmap_delta *d = delta_new(6);
	const struct netmap_node *p;

	(void)state;
	d->n_added = 2;
	d->added = calloc(2, sizeof(*d->added));
	d->added[0] = node_make(20);
	d->added[1] = node_make(11); /* re-added: replaces */
	d->added[1].online = true;
	d->n_removed = 2;
	d->removed = calloc(2, sizeof(*d->removed));
	d->removed[0] = 10;
	d->removed[1] = 999; /* unknown: ignored, removal is idempotent */
	d->n_changed = 1;
	d->changed = calloc(1, sizeof(*d->changed));
	d->changed[0] = node_make(12);
	strcpy(d->changed[0].name, "renamed");
	d->n_endpoints = 1;
	d->endpoints = calloc(1, sizeof(*d->endpoints));
	d->endpoints[0].id = 20;
	d->endpoints[0].n_endpoints = 1;
	d->endpoints[0].endpoints[0].in4.sin_family = AF_INET;
	d->endpoints[0].endpoints[0].in4.sin_port = htons(41641);
	d->n_online = 1;
	d->online = calloc(1, sizeof(*d->online));
	d->online[0].id = 13;
	d->online[0].online = true;
	d->online[0].last_seen = 1795000000;
	d->has_self = true;
	d->self = node_make(1);
	strcpy(d->self.name, "me");

	assert_int_equal(netmap_apply_delta(nm, d), 0);
	assert_int_equal(nm->seq, 6);
	assert_int_equal(nm->n_peers, 4);
	assert_null(netmap_peer_find(nm, 10));
	assert_non_null(p = netmap_peer_find(nm, 11));
	assert_true(p->online);
	assert_string_equal(netmap_peer_find(nm, 12)->name, "renamed");
	assert_non_null(p = netmap_peer_find(nm, 13));
	assert_true(p->online);
	assert_int_equal(p->last_seen, 1795000000);
	assert_non_null(p = netmap_peer_find(nm, 20));
	assert_int_equal(p->n_endpoints, 1);
	assert_int_equal(ntohs(p->endpoints[0].in4.sin_port), 41641);
	assert_string_equal(nm->self.name, "me");
	netmap_delta_free(d);
	netmap_free(nm);
}

/* Every failing delta leaves the map exactly as it was. */
static void test_apply_rejects(void **state)
{
	struct netmap *nm = netmap_make(5, 3), *copy = netmap_make(5, 3);
	struct netmap_delta *d;

	(void)state;
	d = delta_new(5); /* seq not increasing */
	assert_int_equal(netmap_apply_delta(nm, d), -EINVAL);
	netmap_delta_free(d);

	d = delta_new(6);
	d->n_online = 1;
	d->online = calloc(1, sizeof(*d->online));
	d->online[0].id = 77;
	assert_int_equal(netmap_apply_delta(nm, d), -EINVAL);
	netmap_delta_free(d);

	d = delta_new(6); /* patch of a peer removed in the same delta */
	d->n_removed = 1;
	d->removed = calloc(1, sizeof(*d->removed));
	d->removed[0] = 10;
	d->n_endpoints = 1;
	d->endpoints = calloc(1, sizeof(*d->endpoints));
	d->endpoints[0].id = 10;
	assert_int_equal(netmap_apply_delta(nm, d), -EINVAL);
	netmap_delta_free(d);

	d = delta_new(6);
	d->n_changed = 1;
	d->changed = calloc(1, sizeof(*d->changed));
	d->changed[0] = node_make(55);
	assert_int_equal(netmap_apply_delta(nm, d), -EINVAL);
	netmap_delta_free(d);

	d = delta_new(6); /* duplicate ids in added */
	d->n_added = 2;
	d->added = calloc(2, sizeof(*d->added));
	d->added[0] = node_make(30);
	d->added[1] = node_make(30);
	assert_int_equal(netmap_apply_delta(nm, d), -EINVAL);
	netmap_delta_free(d);

	assert_int_equal(nm->seq, copy->seq);
	assert_int_equal(nm->n_peers, copy->n_peers);
	assert_memory_equal(nm->peers, copy->peers, nm->n_peers * sizeof(*nm->peers));
	netmap_free(nm);
	netmap_free(copy);
}

static void test_apply_to_empty_and_patch_added(void **state)
{
	struct netmap *nm = calloc(1, sizeof(*nm));
	struct netmap_delta *d = delta_new(1);

	(void)state;
	d->n_added = 1;
	d->added = calloc(1, sizeof(*d->added));
	d->added[0] = node_make(40);
	d->n_online = 1;
	d->online = calloc(1, sizeof(*d->online));
	d->online[0].id = 40; /* a patch may name a peer added by the same delta */
	d->online[0].online = true;
	assert_int_equal(netmap_apply_delta(nm, d), 0);
	assert_int_equal(nm->n_peers, 1);
	assert_true(netmap_peer_find(nm, 40)->online);
	netmap_delta_free(d);
	netmap_free(nm);
}

/* Against a naive model: random deltas on a random map. */
static void test_apply_random(void **state)
{
	enum { IDS = 64 };
	struct netmap *nm = calloc(1, sizeof(*nm));
	bool model[IDS] = { 0 };
	bool online[IDS] = { 0 };
	unsigned seed = 1;

	(void)state;
	for (int round = 0; round < 500; round++) {
		struct netmap_delta *d = delta_new(nm->seq + 1);
		bool next[IDS], touched[IDS] = { 0 };

		memcpy(next, model, sizeof(next));
		d->added = calloc(IDS, sizeof(*d->added));
		d->removed = calloc(IDS, sizeof(*d->removed));
		d->online = calloc(IDS, sizeof(*d->online));
		for (int k = 0; k < 6; k++) {
			unsigned id = (unsigned)rand_r(&seed) % IDS;

			if (touched[id])
				continue;
			touched[id] = true;
			if (next[id] && rand_r(&seed) % 2) {
				d->removed[d->n_removed++] = id;
				next[id] = false;
			} else if (!next[id]) {
				d->added[d->n_added++] = node_make(id);
				next[id] = true;
				online[id] = false;
			}
		}
		for (unsigned id = 0; id < IDS; id++) {
			if (next[id] && rand_r(&seed) % 8 == 0) {
				d->online[d->n_online].id = id;
				d->online[d->n_online++].online = true;
				online[id] = true;
			}
		}
		assert_int_equal(netmap_apply_delta(nm, d), 0);
		memcpy(model, next, sizeof(model));
		netmap_delta_free(d);
		for (unsigned id = 0; id < IDS; id++) {
			const struct netmap_node *p = netmap_peer_find(nm, id);

			assert_int_equal(p != NULL, model[id]);
			if (p)
				assert_int_equal(p->online, online[id]);
		}
	}
	netmap_free(nm);
}

/* ---- what the node may open, patched (netmap_reach_diff, netmap_reach_patch_apply) ---- */

enum { RIDS = 40, RLISTS = 5 };

static const struct netmap_reach_port ritems[RLISTS][2] = {
    {{6, 22, 22}}, {{6, 22, 22}, {6, 443, 443}}, {{17, 53, 53}}, {{1, 0, 65535}, {6, 0, 65535}},
    {{6, 80, 80}},
};
static const uint32_t rn_items[RLISTS] = {1, 2, 1, 2, 1};

/* One set per assigned id, in id order: a list as no server orders one. */
static struct netmap_reach *reach_raw(const int *a)
{
	struct netmap_reach *r = calloc(1, sizeof(*r));

	assert_non_null(r);
	r->sets = calloc(RIDS + 1, sizeof(*r->sets));
	r->peers = calloc(RIDS + 1, sizeof(*r->peers));
	r->ports = calloc(2 * RIDS + 1, sizeof(*r->ports));
	assert_true(r->sets && r->peers && r->ports);
	for (int id = RIDS - 1; id >= 0; id--) {
		if (a[id] < 0)
			continue;
		r->sets[r->n_sets++] = (struct netmap_reach_set){.peer_off = r->n_peers,
								 .n_peers = 1,
								 .port_off = r->n_ports,
								 .n_ports = rn_items[a[id]]};
		r->peers[r->n_peers++] = (uint64_t)id + 1;
		for (uint32_t k = 0; k < rn_items[a[id]]; k++)
			r->ports[r->n_ports++] = ritems[a[id]][k];
	}
	return r;
}

/* The canonical list of assignment a: the raw one patched onto an empty list. */
static struct netmap_reach *reach_canon(const int *a)
{
	struct netmap_reach empty = {0}, *ret = NULL;
	struct netmap_reach_patch p = {.add = reach_raw(a)};

	assert_int_equal(netmap_reach_patch_apply(&empty, &p, &ret), 0);
	netmap_reach_free(p.add);
	return ret;
}

/* r says exactly assignment a, in the server's order (policy_view_reach). */
static void assert_reach_is(const struct netmap_reach *r, const int *a)
{
	assert_true(netmap_reach_valid(r));
	for (int id = 0; id < RIDS; id++) {
		const struct netmap_reach_set *s = netmap_reach_find(r, (uint64_t)id + 1);

		assert_int_equal(s != NULL, a[id] >= 0);
		if (!s)
			continue;
		assert_int_equal(s->n_ports, rn_items[a[id]]);
		for (uint32_t k = 0; k < s->n_ports; k++) {
			assert_int_equal(r->ports[s->port_off + k].proto, ritems[a[id]][k].proto);
			assert_int_equal(r->ports[s->port_off + k].first, ritems[a[id]][k].first);
		}
	}
	for (unsigned i = 0; i < r->n_sets; i++) {
		const struct netmap_reach_set *s = &r->sets[i];

		/* contiguous, peers ascending */
		assert_int_equal(s->peer_off,
				 i ? r->sets[i - 1].peer_off + r->sets[i - 1].n_peers : 0);
		for (uint32_t k = 1; k < s->n_peers; k++)
			assert_true(r->peers[s->peer_off + k - 1] < r->peers[s->peer_off + k]);
		/* sets by number of items, then items: here the first item tells them apart */
		if (i) {
			const struct netmap_reach_set *t = &r->sets[i - 1];
			const struct netmap_reach_port *x = &r->ports[t->port_off],
						       *y = &r->ports[s->port_off];

			assert_true(t->n_ports < s->n_ports ||
				    (t->n_ports == s->n_ports &&
				     (x->proto < y->proto ||
				      (x->proto == y->proto && x->first < y->first))));
		}
	}
}

/*
 * Random lists a and b: the patch from a to b applied to a is b byte for byte, and names only
 * the peers that left (removed) or came or changed (add).
 */
static void test_reach_patch_random(void **state)
{
	int a[RIDS], b[RIDS];
	unsigned seed = 7;

	(void)state;
	for (int id = 0; id < RIDS; id++)
		a[id] = (int)(rand_r(&seed) % (RLISTS + 1)) - 1;
	for (int round = 0; round < 300; round++) {
		struct netmap_reach *ra, *rb, *got = NULL;
		struct netmap_reach_patch *p = NULL;
		unsigned gone = 0, moved = 0;

		memcpy(b, a, sizeof(b));
		for (int k = 0, n = (int)(rand_r(&seed) % 6); k < n; k++)
			b[rand_r(&seed) % RIDS] = (int)(rand_r(&seed) % (RLISTS + 1)) - 1;
		if (round % 50 == 0) /* now and then everything moves */
			for (int id = 0; id < RIDS; id++)
				b[id] = (int)(rand_r(&seed) % (RLISTS + 1)) - 1;
		for (int id = 0; id < RIDS; id++) {
			gone += a[id] >= 0 && b[id] < 0;
			moved += b[id] >= 0 && a[id] != b[id];
		}
		ra = reach_canon(a);
		rb = reach_canon(b);
		assert_reach_is(ra, a);
		assert_reach_is(rb, b);
		assert_int_equal(netmap_reach_diff(ra, rb, &p), 0);
		assert_true(netmap_reach_patch_valid(p));
		assert_int_equal(p->n_removed, gone);
		assert_int_equal(p->add->n_peers, moved);
		for (unsigned k = 1; k < p->n_removed; k++)
			assert_true(p->removed[k - 1] < p->removed[k]);
		assert_int_equal(netmap_reach_patch_apply(ra, p, &got), 0);
		assert_true(netmap_reach_equal(got, rb));
		netmap_reach_free(got);
		netmap_reach_patch_free(p);
		netmap_reach_free(ra);
		netmap_reach_free(rb);
		memcpy(a, b, sizeof(a));
	}
}

/* A patch needs a list to apply to, and neither side may be "*". */
static void test_reach_patch_rejects(void **state)
{
	int a[RIDS];
	struct netmap_reach *r, *got = NULL, all = {0};
	struct netmap_reach_set all_set = {.n_ports = 1, .all = true};
	struct netmap_reach_port item = {6, 22, 22};
	struct netmap_reach_patch *p = NULL, bad;
	uint64_t id = 3;

	(void)state;
	for (int i = 0; i < RIDS; i++)
		a[i] = i % 3 - 1;
	r = reach_canon(a);
	all = (struct netmap_reach){1, 0, 1, &all_set, &id, &item};
	assert_true(netmap_reach_valid(&all));
	assert_int_equal(netmap_reach_diff(r, r, &p), 0);
	assert_int_equal(p->n_removed + p->add->n_peers, 0);
	assert_int_equal(netmap_reach_patch_apply(NULL, p, &got), -EINVAL);
	assert_int_equal(netmap_reach_patch_apply(&all, p, &got), -EINVAL);
	assert_int_equal(netmap_reach_diff(r, &all, &p), -EINVAL);
	assert_int_equal(netmap_reach_diff(&all, r, &p), -EINVAL);
	bad = (struct netmap_reach_patch){.add = &all};
	assert_false(netmap_reach_patch_valid(&bad));
	assert_int_equal(netmap_reach_patch_apply(r, &bad, &got), -EINVAL);
	assert_null(got);
	netmap_reach_patch_free(p);
	netmap_reach_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_free_null),
	    cmocka_unit_test(test_ipv6_mapping),
	    cmocka_unit_test(test_find),
	    cmocka_unit_test(test_apply_all_kinds),
	    cmocka_unit_test(test_apply_rejects),
	    cmocka_unit_test(test_apply_to_empty_and_patch_added),
	    cmocka_unit_test(test_apply_random),
	    cmocka_unit_test(test_reach_patch_random),
	    cmocka_unit_test(test_reach_patch_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
