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
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
