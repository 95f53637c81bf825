// SPDX-License-Identifier: MIT
/*
 * mapper_resume against the resume it replaced, which walked every node of the tailnet to
 * find the keys that lapsed and the peers not online (resume_walk_all below): on random
 * histories (nodes joining, leaving, changing, going offline, keys expiring while the
 * resuming node was away, access policies set, changed and removed; the resuming node
 * itself hidden or under a policy), both leave the same pending state and give the same
 * delta. And a resume looks at what it tells, not at the tailnet (mapper_resume_walked).
 * It includes mapper.c to reach the subscriber's pending state and the shared first half.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "control/mapper.c"
#include "policy/policy.h"
#include "proto/ctrlmsg.h"

#include "mapper_tailnets.h"

#define NOW0 1800000000LL /* the history starts here */
#define AWAY 100	  /* the resume comes this much later */
#define MAX_NODES 128
#define MAX_MISSED 64

/* The resume before the tailnet's indexes: every node looked at. The reference. */
static int resume_walk_all(struct mapper *m, uint64_t id, const struct mapper_missed *missed,
			   size_t n, bool relay, int64_t now)
{
	struct msub *s = resume_begin(m, id, missed, n, relay, now);
	const struct mnode *x;
	const struct mtailnet *tn;

	if (!s)
		return -ENOENT;
	x = s->node;
	tn = x->tn;
	for (size_t i = 0; i < tn->n_nodes; i++) {
		const struct mnode *p = tn->nodes[i];

		if (p == x)
			continue;
		if (p->rec.key_expiry && p->rec.key_expiry <= now && !pair_visible(x, p))
			mark(m, s, p->rec.id, PEND_FULL, true);
		else if (!p->rec.online && pair_visible(x, p))
			mark(m, s, p->rec.id, PEND_ONLINE, true);
	}
	return s->overflow ? -ENOMEM : 0;
}

/* xorshift64*: the same seed gives both mappers the same history. */
static uint64_t rnd_next(uint64_t *st)
{
	*st ^= *st >> 12;
	*st ^= *st << 25;
	*st ^= *st >> 27;
	return *st * 2685821657736338717ULL;
}

static unsigned rnd(uint64_t *st, unsigned n)
{
	return (unsigned)(rnd_next(st) >> 33) % n;
}

static const char *const policies[] = {
    "{\"tagOwners\": {\"tag:a\": [], \"tag:b\": []},"
    " \"acls\": [{\"action\": \"accept\", \"src\": [\"tag:a\"], \"dst\": [\"tag:b:22\"]}]}",
    "{\"tagOwners\": {\"tag:a\": [], \"tag:b\": []},"
    " \"acls\": [{\"action\": \"accept\", \"src\": [\"user1@example.com\"],"
    " \"dst\": [\"tag:a:*\"]}]}",
};

static struct policy *policy_make(unsigned i)
{
	struct policy *p = NULL;
	char err[POLICY_ERR_MAX];

	if (policy_parse(policies[i], strlen(policies[i]), &p, err))
		fail_msg("%s", err);
	return p;
}

static struct endpoint endpoint_at(const char *addr, unsigned port)
{
	struct endpoint ep;
	char text[64];

	memset(&ep, 0, sizeof(ep)); /* records are compared whole */
	snprintf(text, sizeof(text), "%s:%u", addr, 1000 + port);
	assert_int_equal(endpoint_parse(&ep, text), 0);
	return ep;
}

/* A node of tailnet 1 (most) or 2, in one of the states a resume must handle. */
static struct control_node node_make(uint64_t *st, uint64_t id, uint64_t tailnet)
{
	struct control_node n = {.id = id, .tailnet_id = tailnet, .created = NOW0};

	snprintf(n.name, sizeof(n.name), "n%llu-%u", (unsigned long long)id, rnd(st, 1000));
	snprintf(n.hostname, sizeof(n.hostname), "%s", n.name);
	snprintf(n.os, sizeof(n.os), "linux");
	memset(n.machine_key, (int)(id * 3), NETMAP_KEY_LEN);
	memset(n.node_key, (int)(id * 5 + rnd(st, 2)), NETMAP_KEY_LEN);
	n.node_key[1] = (uint8_t)id; /* unique but for a rotation's low bit */
	n.ipv4[0] = 100;
	n.ipv4[1] = 64;
	n.ipv4[2] = (uint8_t)(id >> 8);
	n.ipv4[3] = (uint8_t)id;
	n.approved = rnd(st, 10) != 0;
	switch (rnd(st, 6)) {
	case 0:
		break;
	case 1:
		n.key_expiry = NOW0 - 50; /* lapsed before the history */
		break;
	case 2:
		n.key_expiry = NOW0 + 1 + rnd(st, AWAY - 1); /* lapses while away */
		break;
	case 3:
		n.key_expiry = NOW0 + AWAY; /* lapses at the resume's second */
		break;
	default:
		n.key_expiry = NOW0 + 1000000;
	}
	n.expiry_disabled = rnd(st, 8) == 0;
	switch (rnd(st, 3)) {
	case 0:
		n.user_id = 100 + tailnet;
		break;
	default:
		n.n_tags = 1;
		snprintf(n.tags[0], NETMAP_TAG_MAX, "tag:%c", rnd(st, 2) ? 'a' : 'b');
	}
	if (rnd(st, 2)) {
		n.n_endpoints = 1;
		n.endpoints[0] = endpoint_at("198.51.100.7", rnd(st, 60000));
	}
	n.online = rnd(st, 3) != 0;
	n.last_seen = NOW0;
	return n;
}

struct history {
	uint64_t resumer;
	struct mapper_missed missed[MAX_MISSED];
	size_t n_missed;
};

static void missed_add(struct history *h, uint64_t id, bool live_only)
{
	if (h->n_missed < MAX_MISSED)
		h->missed[h->n_missed++] = (struct mapper_missed){.id = id, .live_only = live_only};
}

/*
 * A mapper after one random history: nodes, a policy or none, other subscribers with maps,
 * then the changes the resuming node missed while away (named in h->missed, as the change
 * feed would, with a few rows that change nothing), then the resuming node subscribed.
 */
static struct mapper *history_build(uint64_t seed, struct history *h)
{
	struct mapper *m = mapper_with_tailnets(2);
	uint64_t st = seed * 0x9e3779b97f4a7c15ULL + 1, next_id;
	bool ids[MAX_NODES + 1] = {false};
	unsigned n = 8 + rnd(&st, 60), events = rnd(&st, 20);
	struct control_node rec;
	struct netmap *nm;

	memset(h, 0, sizeof(*h));
	if (rnd(&st, 2))
		assert_int_equal(mapper_policy_set(m, 1, policy_make(rnd(&st, 2))), 0);
	for (uint64_t id = 1; id <= n; id++) {
		rec = node_make(&st, id, id == 1 || rnd(&st, 5) ? 1 : 2);
		assert_int_equal(mapper_node_upsert(m, &rec, NOW0), 0);
		ids[id] = true;
	}
	next_id = n + 1;
	h->resumer = 1 + rnd(&st, n);
	for (uint64_t id = 1; id <= n; id += 1 + rnd(&st, 4)) {
		if (id == h->resumer)
			continue;
		assert_int_equal(mapper_subscribe(m, id), 0);
		assert_int_equal(mapper_netmap(m, id, NOW0, &nm), 0);
		netmap_free(nm);
	}

	/* While away. */
	for (unsigned e = 0; e < events; e++) {
		int64_t now = NOW0 + 1 + (int64_t)(e * (AWAY - 2) / (events ? events : 1));
		uint64_t id = 1 + rnd(&st, (unsigned)(next_id - 1));
		struct endpoint ep;

		switch (rnd(&st, 8)) {
		case 0: /* joins */
			if (next_id > MAX_NODES)
				break;
			rec = node_make(&st, next_id, rnd(&st, 5) ? 1 : 2);
			assert_int_equal(mapper_node_upsert(m, &rec, now), 0);
			ids[next_id] = true;
			missed_add(h, next_id++, false);
			break;
		case 1: /* leaves */
			if (!ids[id] || id == h->resumer)
				break;
			assert_int_equal(mapper_node_remove(m, id), 0);
			ids[id] = false;
			missed_add(h, id, false);
			break;
		case 2: /* changes: renamed, retagged, another expiry, approval */
		case 3:
			if (!ids[id])
				break;
			rec = node_make(&st, id, mapper_node_get(m, id)->tailnet_id);
			assert_int_equal(mapper_node_upsert(m, &rec, now), 0);
			missed_add(h, id, false);
			break;
		case 4: /* goes offline or comes back */
			if (!ids[id])
				break;
			assert_int_equal(
			    mapper_node_online(m, id, !mapper_node_get(m, id)->online, now), 0);
			missed_add(h, id, true);
			break;
		case 5: /* new endpoints */
			if (!ids[id])
				break;
			ep = endpoint_at("203.0.113.9", rnd(&st, 60000));
			assert_int_equal(mapper_node_endpoints(m, id, &ep, 1), 0);
			missed_add(h, id, true);
			break;
		case 6: /* the policy: another, or none */
			assert_int_equal(
			    mapper_policy_set(m, 1, rnd(&st, 3) ? policy_make(rnd(&st, 2)) : NULL),
			    0);
			break;
		default: /* a row that changed nothing the node sees (the feed may say more) */
			missed_add(h, id, rnd(&st, 2));
		}
	}
	assert_int_equal(mapper_subscribe(m, h->resumer), 0);
	return m;
}

static int id_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Sorts n elements of a list whose elements start with their id (an empty list may be NULL). */
static void by_id(void *list, size_t n, size_t size)
{
	if (n)
		qsort(list, n, size, id_cmp);
}

/* The subscriber's pending entries, in id order (their slots depend on insertion order). */
static size_t pend_sorted(const struct msub *s, struct pend *ret, size_t cap)
{
	size_t k = 0;

	for (size_t i = 0; i < s->pend_cap; i++)
		if (s->pend[i].id) {
			assert_true(k < cap);
			ret[k++] = s->pend[i];
		}
	by_id(ret, k, sizeof(*ret));
	return k;
}

/* The delta's text with its lists in id order (a delta's lists have no meaningful order). */
static char *delta_text(struct netmap_delta *d)
{
	struct ctrl_msg msg = {.type = CTRL_MSG_DELTA, .delta = d};
	char *json;
	size_t len;

	if (!d)
		return strdup("(none)");
	by_id(d->added, d->n_added, sizeof(*d->added));
	by_id(d->changed, d->n_changed, sizeof(*d->changed));
	by_id(d->removed, d->n_removed, sizeof(*d->removed));
	by_id(d->endpoints, d->n_endpoints, sizeof(*d->endpoints));
	by_id(d->online, d->n_online, sizeof(*d->online));
	assert_int_equal(ctrl_msg_encode(&msg, &json, &len), 0);
	return json;
}

static void resume_compare(uint64_t seed, uint64_t *ret_walked, uint64_t *ret_nodes)
{
	struct history ha, hb;
	struct mapper *a = history_build(seed, &ha), *b = history_build(seed, &hb);
	struct pend pa[2 * MAX_NODES], pb[2 * MAX_NODES];
	struct netmap_delta *da = NULL, *db = NULL;
	const struct msub *sa, *sb;
	uint64_t walked0 = mapper_resume_walked(a);
	int64_t now = NOW0 + AWAY;
	char *ta, *tb;
	size_t na, nb;
	int ra, rb;

	assert_int_equal(ha.resumer, hb.resumer);
	assert_int_equal(ha.n_missed, hb.n_missed);
	ra = mapper_resume(a, ha.resumer, ha.missed, ha.n_missed, seed % 3 == 0, now);
	rb = resume_walk_all(b, hb.resumer, hb.missed, hb.n_missed, seed % 3 == 0, now);
	assert_int_equal(ra, rb);
	*ret_walked = mapper_resume_walked(a) - walked0;
	*ret_nodes = node_find(a, ha.resumer)->tn->n_nodes;

	sa = node_find(a, ha.resumer)->sub;
	sb = node_find(b, hb.resumer)->sub;
	na = pend_sorted(sa, pa, ARRAY_SIZE(pa));
	nb = pend_sorted(sb, pb, ARRAY_SIZE(pb));
	assert_int_equal(na, nb);
	for (size_t i = 0; i < na; i++) {
		assert_int_equal(pa[i].id, pb[i].id);
		assert_int_equal(pa[i].flags, pb[i].flags);
		assert_int_equal(pa[i].was_visible, pb[i].was_visible);
	}
	assert_int_equal(sa->self_dirty, sb->self_dirty);
	assert_int_equal(sa->relay_dirty, sb->relay_dirty);
	assert_int_equal(sa->filter_dirty, sb->filter_dirty);
	assert_int_equal(sa->reach_dirty, sb->reach_dirty);
	assert_int_equal(sa->overflow, sb->overflow);

	ra = mapper_take_delta(a, ha.resumer, &da);
	rb = mapper_take_delta(b, hb.resumer, &db);
	assert_int_equal(ra, rb);
	ta = delta_text(da);
	tb = delta_text(db);
	assert_string_equal(ta, tb);
	free(ta);
	free(tb);
	netmap_delta_free(da);
	netmap_delta_free(db);
	mapper_free(a);
	mapper_free(b);
}

static void test_resume_same_as_walk(void **state)
{
	uint64_t walked = 0, nodes = 0;

	(void)state;
	for (uint64_t seed = 1; seed <= 400; seed++) {
		uint64_t w, n;

		resume_compare(seed, &w, &n);
		walked += w;
		nodes += n;
	}
	/* Random histories have many lapsed keys and offline nodes: no saving to show here. */
	print_message("400 resumes: %llu nodes looked at, of %llu in their tailnets\n",
		      (unsigned long long)walked, (unsigned long long)nodes);
}

/*
 * A planned restart of a big tailnet: everyone online, keys far from expiry but for three
 * that lapsed while the node was away, two peers offline. The resume looks at those five
 * (and the expiry heap's boundary), not at the 2,000 nodes; a crash (everyone offline) makes
 * it look at every offline peer, which it must tell.
 */
static void test_resume_walk_count(void **state)
{
	enum { N = 2000 };
	struct mapper *m = mapper_new();
	const struct mapper_missed missed[] = {{.id = 7}, {.id = 8, .live_only = true}};
	struct netmap_delta *d;
	uint64_t w0;

	(void)state;
	assert_non_null(m);
	for (uint64_t id = 1; id <= N; id++) {
		struct control_node n = {.id = id, .tailnet_id = 1, .approved = true};

		snprintf(n.name, sizeof(n.name), "n%llu", (unsigned long long)id);
		memset(n.node_key, (int)id, NETMAP_KEY_LEN);
		n.node_key[0] = (uint8_t)(id >> 8);
		n.ipv4[0] = 100;
		n.ipv4[1] = 64;
		n.ipv4[2] = (uint8_t)(id >> 8);
		n.ipv4[3] = (uint8_t)id;
		n.key_expiry = id % 500 == 3 ? NOW0 + 10 : NOW0 + 1000000 + (int64_t)id;
		n.online = id != 11 && id != 12;
		assert_int_equal(mapper_node_upsert(m, &n, NOW0), 0);
	}
	assert_int_equal(mapper_subscribe(m, 1), 0);
	w0 = mapper_resume_walked(m);
	assert_int_equal(mapper_resume(m, 1, missed, ARRAY_SIZE(missed), false, NOW0 + AWAY), 0);
	print_message("planned restart, %d nodes: a resume looked at %llu\n", N,
		      (unsigned long long)(mapper_resume_walked(m) - w0));
	/* 4 lapsed keys (ids 3, 503, 1003, 1503) and their heap children at most, 2 offline. */
	assert_true(mapper_resume_walked(m) - w0 <= 2 * 4 + 1 + 2);
	assert_int_equal(mapper_take_delta(m, 1, &d), 0);
	assert_int_equal(d->n_removed, 4);
	assert_int_equal(d->n_online, 3); /* 11 and 12 offline; 8 (live_only) as it is */
	netmap_delta_free(d);

	/* A crash: every peer offline, each told. */
	for (uint64_t id = 2; id <= N; id++)
		assert_int_equal(mapper_node_online(m, id, false, NOW0 + AWAY), 0);
	while (mapper_dirty_first(m)) {
		assert_int_equal(mapper_take_delta(m, mapper_dirty_first(m), &d), 0);
		netmap_delta_free(d);
	}
	w0 = mapper_resume_walked(m);
	assert_int_equal(mapper_resume(m, 1, NULL, 0, false, NOW0 + AWAY), 0);
	assert_int_equal(mapper_take_delta(m, 1, &d), 0);
	assert_int_equal(d->n_online, N - 1 - 4);
	assert_true(mapper_resume_walked(m) - w0 <= (N - 1) + 2 * 4 + 1 + 1);
	netmap_delta_free(d);
	mapper_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_resume_same_as_walk),
	    cmocka_unit_test(test_resume_walk_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
