/* SPDX-License-Identifier: MIT */
/*
 * The daemon's filter from the netmap: no policy lets everything in; a filter that does not
 * compile with none in force admits no new flow (fail closed), and with one in force keeps
 * it; status shows the rules, the refusal and the drops, and what this node may open on each
 * peer (the netmap's may_open).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "node/nodefilter.h"

static const uint8_t peer[4] = {100, 64, 0, 1}, me[4] = {100, 64, 0, 7};

/* A TCP SYN from the peer to our port. */
static size_t syn(uint8_t *p, uint16_t port)
{
	memset(p, 0, 40);
	p[0] = 0x45, p[3] = 40, p[9] = 6;
	memcpy(p + 12, peer, 4);
	memcpy(p + 16, me, 4);
	p[20] = 0x9c, p[21] = 0x40;
	p[22] = (uint8_t)(port >> 8), p[23] = (uint8_t)port;
	p[32] = 0x50, p[33] = 0x02;
	return 40;
}

static void test_apply(void **state)
{
	struct netmap_filter_rule rule = {.n_src = 1, .n_dst = 1, .n_protos = 1, .protos = {6}};
	struct netmap_prefix src = {.family = AF_INET, .len = 32};
	struct netmap_filter_dst dst = {
	    .prefix = {.family = AF_INET, .len = 32}, .port_first = 22, .port_last = 22};
	struct netmap_filter good = {
	    .n_rules = 1, .n_srcs = 1, .n_dsts = 1, .rules = &rule, .srcs = &src, .dsts = &dst};
	struct netmap_filter_rule bad_rule = rule;
	struct netmap_filter bad = good;
	struct nodefilter *nf = NULL;
	struct filter *f;
	uint8_t p[64];
	json_t *st;

	(void)state;
	memcpy(src.addr, peer, 4);
	memcpy(dst.prefix.addr, me, 4);
	bad_rule.n_src = 2; /* beyond the sources */
	bad.rules = &bad_rule;
	assert_int_equal(nodefilter_new(&nf), 0);
	f = nodefilter_filter(nf);
	/* No policy. */
	assert_true(filter_rx(f, p, syn(p, 80), 1));
	/* A bad filter first: fail closed. */
	assert_int_equal(nodefilter_apply(nf, &bad), -EINVAL);
	assert_false(filter_rx(f, p, syn(p, 22), 1));
	st = nodefilter_status_json(nf);
	assert_true(json_is_true(json_object_get(st, "policy")));
	assert_true(json_is_string(json_object_get(st, "error")));
	assert_true(json_is_null(json_object_get(st, "rules")));
	json_decref(st);
	/* A good one. */
	assert_int_equal(nodefilter_apply(nf, &good), 0);
	assert_true(filter_rx(f, p, syn(p, 22), 1));
	assert_false(filter_rx(f, p, syn(p, 80), 1));
	/* A bad one after it: the good one stays. */
	assert_int_equal(nodefilter_apply(nf, &bad), -EINVAL);
	assert_true(filter_rx(f, p, syn(p, 22), 1));
	assert_false(filter_rx(f, p, syn(p, 80), 1));
	st = nodefilter_status_json(nf);
	assert_int_equal(json_array_size(json_object_get(st, "rules")), 1);
	assert_true(json_is_string(json_object_get(st, "error")));
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(st, "drops"), "no_rule")), 3);
	json_decref(st);
	/* The same filter again (every delta re-applies the map): nothing changes. */
	assert_int_equal(nodefilter_apply(nf, &good), 0);
	assert_int_equal(nodefilter_apply(nf, &good), 0);
	/* No policy again. */
	assert_int_equal(nodefilter_apply(nf, NULL), 0);
	assert_true(filter_rx(f, p, syn(p, 80), 1));
	st = nodefilter_status_json(nf);
	assert_true(json_is_false(json_object_get(st, "policy")));
	assert_true(json_is_null(json_object_get(st, "error")));
	json_decref(st);
	nodefilter_free(nf);
}

/*
 * What a peer may open here, as status shows it: per protocol, port ranges merged across
 * rules; ICMP without ports; a rule for another source or another family adds nothing.
 */
static void test_peer_access(void **state)
{
	struct netmap_filter_rule rules[] = {
	    {.src_off = 0, .n_src = 1, .dst_off = 0, .n_dst = 2, .n_protos = 2, .protos = {6, 17}},
	    {.src_off = 1, .n_src = 1, .dst_off = 2, .n_dst = 1, .n_protos = 1, .protos = {6}},
	    {.src_off = 0, .n_src = 1, .dst_off = 3, .n_dst = 1, .n_protos = 1, .protos = {1}},
	    {.src_off = 2, .n_src = 1, .dst_off = 4, .n_dst = 1, .n_protos = 0},
	    {.src_off = 3, .n_src = 1, .dst_off = 5, .n_dst = 1, .n_protos = 1, .protos = {6}},
	};
	struct netmap_prefix srcs[] = {
	    {.family = AF_INET, .len = 32, .addr = {100, 64, 0, 1}},
	    {.family = AF_INET, .len = 10, .addr = {100, 64}},
	    {.family = AF_INET, .len = 32, .addr = {100, 64, 0, 2}}, /* another peer */
	    {.family = AF_INET6, .len = 128, .addr = {0xfd, 0x7e}},  /* another address */
	};
	struct netmap_filter_dst dsts[] = {
	    {.prefix = {.family = AF_INET, .len = 32}, .port_first = 22, .port_last = 22},
	    {.prefix = {.family = AF_INET, .len = 32}, .port_first = 443, .port_last = 443},
	    {.prefix = {.family = AF_INET, .len = 32}, .port_first = 20, .port_last = 23},
	    {.prefix = {.family = AF_INET, .len = 32}, .port_first = 0, .port_last = 65535},
	    {.prefix = {.family = AF_INET, .len = 32}, .port_first = 0, .port_last = 65535},
	    {.prefix = {.family = AF_INET6, .len = 128}, .port_first = 80, .port_last = 80},
	};
	struct netmap_filter f = {
	    .n_rules = 5, .n_srcs = 4, .n_dsts = 6, .rules = rules, .srcs = srcs, .dsts = dsts};
	struct netmap_node n = {.id = 1, .n_addresses = 2};
	struct nodefilter *nf = NULL;
	json_t *a;
	char *s;

	(void)state;
	n.addresses[0] = srcs[0];
	n.addresses[1] = (struct netmap_prefix){.family = AF_INET6, .len = 128, .addr = {0xfd}};
	assert_int_equal(nodefilter_new(&nf), 0);
	a = nodefilter_peer_access_json(nf, &n);
	assert_true(json_is_null(a)); /* no policy: anything */
	json_decref(a);
	assert_int_equal(nodefilter_apply(nf, &f), 0);
	a = nodefilter_peer_access_json(nf, &n);
	s = json_dumps(a, JSON_COMPACT);
	assert_string_equal(s, "[{\"proto\":1},{\"proto\":6,\"ports\":[[20,23],[443,443]]},"
			       "{\"proto\":17,\"ports\":[[22,22],[443,443]]}]");
	free(s);
	json_decref(a);
	/* The other peer: the any-protocol rule and the /10's. */
	n.addresses[0] = srcs[2];
	n.n_addresses = 1;
	a = nodefilter_peer_access_json(nf, &n);
	s = json_dumps(a, JSON_COMPACT);
	assert_string_equal(
	    s, "[{\"proto\":0,\"ports\":[[0,65535]]},{\"proto\":6,\"ports\":[[20,23]]}]");
	free(s);
	json_decref(a);
	/* An address outside every rule: nothing. */
	n.addresses[0].addr[0] = 101;
	a = nodefilter_peer_access_json(nf, &n);
	assert_true(json_is_array(a));
	assert_int_equal(json_array_size(a), 0);
	json_decref(a);
	nodefilter_free(nf);
}

/* The peers' "may_open" in status: "all", the server's list per peer, or nothing said. */
static void test_may_open(void **state)
{
	/* Peers 3 and 9: tcp 22 and 443; peer 5 (listed twice: the first set counts): ICMP. */
	static const struct netmap_reach_set sets[] = {{0, 2, 0, 2}, {2, 1, 2, 1}, {3, 1, 3, 1}};
	static const uint64_t ids[] = {3, 9, 5, 5};
	static const struct netmap_reach_port ports[] = {
	    {6, 22, 22}, {6, 443, 443}, {1, 0, 65535}, {17, 53, 53}};
	struct netmap_reach r = {3,
				 4,
				 4,
				 (struct netmap_reach_set *)sets,
				 (uint64_t *)ids,
				 (struct netmap_reach_port *)ports};
	struct netmap_filter f = {0};
	struct netmap nm = {0};
	json_t *peers =
	    json_pack("[{s:i}, {s:i}, {s:i}, {s:i}]", "id", 9, "id", 5, "id", 4, "id", 3);
	char *s;

	(void)state;
	assert_non_null(peers);
	/* No policy: anything. */
	nodefilter_status_may_open(&nm, peers);
	s = json_dumps(peers, JSON_COMPACT);
	assert_string_equal(s, "[{\"id\":9,\"may_open\":null},{\"id\":5,\"may_open\":null},"
			       "{\"id\":4,\"may_open\":null},{\"id\":3,\"may_open\":null}]");
	free(s);
	/* A policy, the server's list. */
	nm.filter = &f;
	nm.reach = &r;
	nodefilter_status_may_open(&nm, peers);
	s = json_dumps(peers, JSON_COMPACT);
	assert_string_equal(
	    s, "[{\"id\":9,\"may_open\":[{\"proto\":6,\"ports\":[[22,22],[443,443]]}]},"
	       "{\"id\":5,\"may_open\":[{\"proto\":1}]},"
	       "{\"id\":4,\"may_open\":[]},"
	       "{\"id\":3,\"may_open\":[{\"proto\":6,\"ports\":[[22,22],[443,443]]}]}]");
	free(s);
	json_decref(peers);
	/* "*": every peer, on the set's items. */
	{
		static const struct netmap_reach_set all[] = {{0, 0, 2, 2, true}};
		struct netmap_reach ra = {1,
					  0,
					  4,
					  (struct netmap_reach_set *)all,
					  (uint64_t *)ids,
					  (struct netmap_reach_port *)ports};

		peers = json_pack("[{s:i}, {s:i}]", "id", 9, "id", 4);
		nm.reach = &ra;
		nodefilter_status_may_open(&nm, peers);
		s = json_dumps(peers, JSON_COMPACT);
		assert_string_equal(s, "[{\"id\":9,\"may_open\":[{\"proto\":1},"
				       "{\"proto\":17,\"ports\":[[53,53]]}]},"
				       "{\"id\":4,\"may_open\":[{\"proto\":1},"
				       "{\"proto\":17,\"ports\":[[53,53]]}]}]");
		free(s);
		json_decref(peers);
	}
	/* A policy and no list (an older server): nothing said. */
	peers = json_pack("[{s:i}]", "id", 9);
	nm.reach = NULL;
	nodefilter_status_may_open(&nm, peers);
	assert_null(json_object_get(json_array_get(peers, 0), "may_open"));
	json_decref(peers);
}

/*
 * A delta's may_open_patch applied to the list held: status says per peer what the server's
 * new list says, exactly (9 left, 4 came, 5 moved to tcp 22 and 443).
 */
static void test_may_open_patched(void **state)
{
	static const struct netmap_reach_set sets[] = {{0, 2, 0, 2}, {2, 1, 2, 1}};
	static const uint64_t ids[] = {3, 9, 5};
	static const struct netmap_reach_port ports[] = {{6, 22, 22}, {6, 443, 443}, {1, 0, 65535}};
	static const struct netmap_reach_set want_sets[] = {{0, 3, 0, 2}};
	static const uint64_t want_ids[] = {3, 4, 5};
	struct netmap_reach r = {2,
				 3,
				 3,
				 (struct netmap_reach_set *)sets,
				 (uint64_t *)ids,
				 (struct netmap_reach_port *)ports};
	struct netmap_reach want = {1,
				    3,
				    2,
				    (struct netmap_reach_set *)want_sets,
				    (uint64_t *)want_ids,
				    (struct netmap_reach_port *)ports};
	static const uint64_t add_ids[] = {4, 5};
	static const struct netmap_reach_set add_sets[] = {{0, 2, 0, 2}};
	struct netmap_reach add = {1,
				   2,
				   2,
				   (struct netmap_reach_set *)add_sets,
				   (uint64_t *)add_ids,
				   (struct netmap_reach_port *)ports};
	uint64_t removed[] = {9};
	struct netmap_reach_patch patch = {1, removed, &add};
	struct netmap_delta d = {.seq = 2, .reach_patch = &patch};
	struct netmap_filter f = {0};
	struct netmap nm = {.seq = 1, .filter = &f};
	json_t *peers =
	    json_pack("[{s:i}, {s:i}, {s:i}, {s:i}]", "id", 9, "id", 5, "id", 4, "id", 3);
	char *s;

	(void)state;
	assert_non_null(peers);
	nm.reach = netmap_reach_dup(&r);
	assert_non_null(nm.reach);
	assert_int_equal(netmap_apply_delta(&nm, &d), 0);
	assert_true(netmap_reach_equal(nm.reach, &want));
	nodefilter_status_may_open(&nm, peers);
	s = json_dumps(peers, JSON_COMPACT);
	assert_string_equal(
	    s, "[{\"id\":9,\"may_open\":[]},"
	       "{\"id\":5,\"may_open\":[{\"proto\":6,\"ports\":[[22,22],[443,443]]}]},"
	       "{\"id\":4,\"may_open\":[{\"proto\":6,\"ports\":[[22,22],[443,443]]}]},"
	       "{\"id\":3,\"may_open\":[{\"proto\":6,\"ports\":[[22,22],[443,443]]}]}]");
	free(s);
	json_decref(peers);
	netmap_reach_free(nm.reach);
	free(nm.peers);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_apply),
	    cmocka_unit_test(test_peer_access),
	    cmocka_unit_test(test_may_open),
	    cmocka_unit_test(test_may_open_patched),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
