/* SPDX-License-Identifier: MIT */
/*
 * The routing trie against a naive reference (a flat list, longest match by
 * scan) on random inputs, plus hand-written cases.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

/* Included for the node layout, to check the trie's shape invariants. */
#include "wg/allowedips.c"

/* Fake peers: only their addresses matter. */
static char peers[64];
#define P(i) ((void *)&peers[i])

/* ---- reference ---- */

struct ref_entry {
	int family;
	uint8_t addr[16];
	uint8_t cidr;
	void *peer;
};

struct ref {
	struct ref_entry *e;
	unsigned n, cap;
};

static void mask_addr(uint8_t *addr, int family, unsigned cidr)
{
	unsigned len = family == AF_INET ? 4 : 16;

	for (unsigned i = 0; i < len; i++) {
		if (cidr >= 8 * (i + 1))
			continue;
		if (cidr <= 8 * i)
			addr[i] = 0;
		else
			addr[i] &= (uint8_t)(0xff << (8 - (cidr - 8 * i)));
	}
}

static bool prefix_contains(const uint8_t *net, unsigned cidr, const uint8_t *addr)
{
	for (unsigned i = 0; i < cidr; i++) {
		unsigned b = 7 - (i & 7);

		if (((net[i / 8] >> b) & 1) != ((addr[i / 8] >> b) & 1))
			return false;
	}
	return true;
}

static struct ref_entry *ref_find(struct ref *r, int family, const uint8_t *addr, unsigned cidr)
{
	unsigned len = family == AF_INET ? 4 : 16;

	for (unsigned i = 0; i < r->n; i++)
		if (r->e[i].family == family && r->e[i].cidr == cidr &&
		    !memcmp(r->e[i].addr, addr, len))
			return &r->e[i];
	return NULL;
}

static void ref_insert(struct ref *r, int family, const uint8_t *addr_in, unsigned cidr, void *peer)
{
	uint8_t addr[16] = {0};
	struct ref_entry *e;

	memcpy(addr, addr_in, family == AF_INET ? 4 : 16);
	mask_addr(addr, family, cidr);
	e = ref_find(r, family, addr, cidr);
	if (e) {
		e->peer = peer;
		return;
	}
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 64;
		r->e = realloc(r->e, r->cap * sizeof(*r->e));
		assert_non_null(r->e);
	}
	e = &r->e[r->n++];
	e->family = family;
	memcpy(e->addr, addr, 16);
	e->cidr = (uint8_t)cidr;
	e->peer = peer;
}

static int ref_remove(struct ref *r, int family, const uint8_t *addr_in, unsigned cidr, void *peer)
{
	uint8_t addr[16] = {0};
	struct ref_entry *e;

	memcpy(addr, addr_in, family == AF_INET ? 4 : 16);
	mask_addr(addr, family, cidr);
	e = ref_find(r, family, addr, cidr);
	if (!e || e->peer != peer)
		return -ENOENT;
	*e = r->e[--r->n];
	return 0;
}

static void ref_remove_by_peer(struct ref *r, void *peer)
{
	for (unsigned i = 0; i < r->n;)
		if (r->e[i].peer == peer)
			r->e[i] = r->e[--r->n];
		else
			i++;
}

static void *ref_lookup(const struct ref *r, int family, const uint8_t *addr)
{
	void *best = NULL;
	int best_cidr = -1;

	for (unsigned i = 0; i < r->n; i++) {
		const struct ref_entry *e = &r->e[i];

		if (e->family == family && (int)e->cidr > best_cidr &&
		    prefix_contains(e->addr, e->cidr, addr)) {
			best = e->peer;
			best_cidr = e->cidr;
		}
	}
	return best;
}

/*
 * Every peerless node is a branch point with two children, children are longer
 * prefixes inside their parent, and the route count is right; so removals
 * leave no garbage behind.
 */
static void check_shape_one(const struct node *root, unsigned *routes)
{
	const struct node *stack[MAX_DEPTH + 2];
	unsigned sp = 0;

	if (root)
		stack[sp++] = root;
	while (sp) {
		const struct node *n = stack[--sp];

		if (n->peer)
			(*routes)++;
		else
			assert_true(n->child[0] && n->child[1]);
		for (unsigned i = 0; i < 2; i++) {
			const struct node *c = n->child[i];

			if (!c)
				continue;
			assert_true(c->cidr > n->cidr);
			assert_true(node_matches(n, &c->key));
			assert_int_equal(key_bit(&c->key, n->cidr), i);
			assert_true(sp < ARRAY_SIZE(stack));
			stack[sp++] = c;
		}
	}
}

static void check_shape(const struct allowedips *t)
{
	unsigned routes = 0;

	check_shape_one(t->root4, &routes);
	check_shape_one(t->root6, &routes);
	assert_int_equal(routes, t->count);
}

/* ---- random inputs ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(void)
{
	/* xorshift64*: deterministic, so a failure reproduces. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint32_t)((rng_state * 0x2545f4914f6cdd1dULL) >> 32);
}

/*
 * Addresses cluster around a few bases, so prefixes overlap and nest often
 * instead of being scattered over an empty address space.
 */
static uint8_t bases[8][16];

static void random_addr(uint8_t *addr, int family)
{
	unsigned len = family == AF_INET ? 4 : 16;
	unsigned keep = rnd() % (8 * len + 1);

	memcpy(addr, bases[rnd() % 8], 16);
	for (unsigned i = keep; i < 8 * len; i++)
		if (rnd() & 1)
			addr[i / 8] ^= (uint8_t)(0x80 >> (i % 8));
}

static unsigned random_cidr(int family)
{
	unsigned max = family == AF_INET ? 32 : 128;

	/* Favour the extremes as well as the middle. */
	switch (rnd() % 8) {
	case 0:
		return max;
	case 1:
		return rnd() % 3;
	default:
		return rnd() % (max + 1);
	}
}

struct walk_ctx {
	const struct ref *ref;
	void *peer;
	unsigned seen;
	bool ok;
	int last_family;
};

static int check_walk(void *vctx, int family, const uint8_t *addr, uint8_t cidr)
{
	struct walk_ctx *ctx = vctx;
	uint8_t masked[16] = {0};
	struct ref_entry *e;

	memcpy(masked, addr, family == AF_INET ? 4 : 16);
	mask_addr(masked, family, cidr);
	/* Walk output must already be masked. */
	if (memcmp(masked, addr, family == AF_INET ? 4 : 16))
		ctx->ok = false;
	/* IPv4 first. */
	if (family == AF_INET && ctx->last_family == AF_INET6)
		ctx->ok = false;
	ctx->last_family = family;
	e = ref_find((struct ref *)ctx->ref, family, masked, cidr);
	if (!e || e->peer != ctx->peer)
		ctx->ok = false;
	ctx->seen++;
	return 0;
}

static void check_walks(const struct allowedips *t, const struct ref *r, unsigned npeers)
{
	for (unsigned p = 0; p < npeers; p++) {
		struct walk_ctx ctx = {.ref = r, .peer = P(p), .ok = true};
		unsigned want = 0;

		for (unsigned i = 0; i < r->n; i++)
			want += r->e[i].peer == P(p);
		assert_int_equal(wg_allowedips_walk_by_peer(t, P(p), check_walk, &ctx), 0);
		assert_true(ctx.ok);
		assert_int_equal(ctx.seen, want);
	}
}

static void random_round(int family, unsigned n_insert, unsigned npeers)
{
	struct allowedips *t = wg_allowedips_new();
	struct ref r = {0};
	uint8_t addr[16];
	unsigned cidr;

	assert_non_null(t);
	for (unsigned i = 0; i < 8; i++)
		for (unsigned j = 0; j < 16; j++)
			bases[i][j] = (uint8_t)rnd();

	for (unsigned i = 0; i < n_insert; i++) {
		void *peer = P(rnd() % npeers);

		memset(addr, 0, sizeof(addr));
		random_addr(addr, family);
		cidr = random_cidr(family);
		assert_int_equal(wg_allowedips_insert(t, family, addr, (uint8_t)cidr, peer), 0);
		ref_insert(&r, family, addr, cidr, peer);

		/* Occasionally remove something: existing, wrong owner, or absent. */
		if (rnd() % 4 == 0 && r.n) {
			struct ref_entry e = r.e[rnd() % r.n];
			void *who = rnd() % 4 ? e.peer : P(rnd() % npeers);
			int want = ref_remove(&r, e.family, e.addr, e.cidr, who);

			assert_int_equal(wg_allowedips_remove(t, e.family, e.addr, e.cidr, who),
					 want);
		}
		if (rnd() % 8 == 0) {
			random_addr(addr, family);
			cidr = random_cidr(family);
			void *who = P(rnd() % npeers);
			int want = ref_remove(&r, family, addr, cidr, who);

			assert_int_equal(wg_allowedips_remove(t, family, addr, (uint8_t)cidr, who),
					 want);
		}
	}
	assert_int_equal(wg_allowedips_count(t), r.n);
	check_shape(t);

	for (unsigned i = 0; i < 20000; i++) {
		memset(addr, 0, sizeof(addr));
		random_addr(addr, family);
		assert_ptr_equal(wg_allowedips_lookup(t, family, addr),
				 ref_lookup(&r, family, addr));
	}
	check_walks(t, &r, npeers);

	/* Drop a few peers entirely and check again. */
	for (unsigned p = 0; p < npeers; p += 3) {
		wg_allowedips_remove_by_peer(t, P(p));
		ref_remove_by_peer(&r, P(p));
	}
	assert_int_equal(wg_allowedips_count(t), r.n);
	check_shape(t);
	for (unsigned i = 0; i < 20000; i++) {
		random_addr(addr, family);
		assert_ptr_equal(wg_allowedips_lookup(t, family, addr),
				 ref_lookup(&r, family, addr));
	}
	check_walks(t, &r, npeers);

	/* Remove everything one by one: the trie must end up empty. */
	while (r.n) {
		struct ref_entry e = r.e[r.n - 1];

		assert_int_equal(wg_allowedips_remove(t, e.family, e.addr, e.cidr, e.peer), 0);
		r.n--;
		if (r.n % 97 == 0) {
			check_shape(t);
			random_addr(addr, family);
			assert_ptr_equal(wg_allowedips_lookup(t, family, addr),
					 ref_lookup(&r, family, addr));
		}
	}
	assert_int_equal(wg_allowedips_count(t), 0);
	assert_null(t->root4);
	assert_null(t->root6);
	random_addr(addr, family);
	assert_null(wg_allowedips_lookup(t, family, addr));

	free(r.e);
	wg_allowedips_free(t);
}

static void test_random_v4(void **state)
{
	(void)state;
	for (int round = 0; round < 6; round++)
		random_round(AF_INET, 3000, 1 + (unsigned)round * 10);
}

static void test_random_v6(void **state)
{
	(void)state;
	for (int round = 0; round < 6; round++)
		random_round(AF_INET6, 3000, 1 + (unsigned)round * 10);
}

static void test_random_mixed(void **state)
{
	struct allowedips *t = wg_allowedips_new();
	struct ref r = {0};
	uint8_t addr[16];

	(void)state;
	for (unsigned i = 0; i < 4000; i++) {
		int family = rnd() & 1 ? AF_INET : AF_INET6;
		unsigned cidr = random_cidr(family);
		void *peer = P(rnd() % 16);

		memset(addr, 0, sizeof(addr));
		random_addr(addr, family);
		assert_int_equal(wg_allowedips_insert(t, family, addr, (uint8_t)cidr, peer), 0);
		ref_insert(&r, family, addr, cidr, peer);
	}
	assert_int_equal(wg_allowedips_count(t), r.n);
	for (unsigned i = 0; i < 20000; i++) {
		int family = rnd() & 1 ? AF_INET : AF_INET6;

		memset(addr, 0, sizeof(addr));
		random_addr(addr, family);
		assert_ptr_equal(wg_allowedips_lookup(t, family, addr),
				 ref_lookup(&r, family, addr));
	}
	check_walks(t, &r, 16);
	check_shape(t);
	for (unsigned p = 0; p < 16; p += 2)
		wg_allowedips_remove_by_peer(t, P(p));
	check_shape(t);
	free(r.e);
	wg_allowedips_free(t);
}

/* ---- hand cases ---- */

static void *lookup4(struct allowedips *t, const char *s)
{
	uint8_t a[4];

	assert_int_equal(inet_pton(AF_INET, s, a), 1);
	return wg_allowedips_lookup(t, AF_INET, a);
}

static void *lookup6(struct allowedips *t, const char *s)
{
	uint8_t a[16];

	assert_int_equal(inet_pton(AF_INET6, s, a), 1);
	return wg_allowedips_lookup(t, AF_INET6, a);
}

static int insert4(struct allowedips *t, const char *s, uint8_t cidr, void *peer)
{
	uint8_t a[4];

	assert_int_equal(inet_pton(AF_INET, s, a), 1);
	return wg_allowedips_insert(t, AF_INET, a, cidr, peer);
}

static int insert6(struct allowedips *t, const char *s, uint8_t cidr, void *peer)
{
	uint8_t a[16];

	assert_int_equal(inet_pton(AF_INET6, s, a), 1);
	return wg_allowedips_insert(t, AF_INET6, a, cidr, peer);
}

static int remove4(struct allowedips *t, const char *s, uint8_t cidr, void *peer)
{
	uint8_t a[4];

	assert_int_equal(inet_pton(AF_INET, s, a), 1);
	return wg_allowedips_remove(t, AF_INET, a, cidr, peer);
}

static void test_hand_v4(void **state)
{
	struct allowedips *t = wg_allowedips_new();

	(void)state;
	assert_null(lookup4(t, "192.0.2.1"));
	assert_int_equal(insert4(t, "0.0.0.0", 0, P(0)), 0);
	assert_ptr_equal(lookup4(t, "192.0.2.1"), P(0));
	assert_ptr_equal(lookup4(t, "255.255.255.255"), P(0));
	assert_int_equal(insert4(t, "192.0.2.0", 24, P(1)), 0);
	assert_int_equal(insert4(t, "192.0.2.128", 25, P(2)), 0);
	assert_int_equal(insert4(t, "192.0.2.200", 32, P(3)), 0);
	assert_int_equal(insert4(t, "198.51.100.0", 24, P(4)), 0);
	assert_ptr_equal(lookup4(t, "192.0.2.1"), P(1));
	assert_ptr_equal(lookup4(t, "192.0.2.127"), P(1));
	assert_ptr_equal(lookup4(t, "192.0.2.128"), P(2));
	assert_ptr_equal(lookup4(t, "192.0.2.200"), P(3));
	assert_ptr_equal(lookup4(t, "192.0.2.201"), P(2));
	assert_ptr_equal(lookup4(t, "192.0.3.1"), P(0));
	assert_ptr_equal(lookup4(t, "198.51.100.77"), P(4));
	assert_int_equal(wg_allowedips_count(t), 5);

	/* Host bits are masked off on insert: 192.0.2.77/24 is 192.0.2.0/24. */
	assert_int_equal(insert4(t, "192.0.2.77", 24, P(5)), 0);
	assert_int_equal(wg_allowedips_count(t), 5);
	assert_ptr_equal(lookup4(t, "192.0.2.1"), P(5));
	/* ... and on remove, and only the owner may remove. */
	assert_int_equal(remove4(t, "192.0.2.9", 24, P(1)), -ENOENT);
	assert_int_equal(remove4(t, "192.0.2.9", 24, P(5)), 0);
	assert_ptr_equal(lookup4(t, "192.0.2.1"), P(0));
	assert_int_equal(remove4(t, "192.0.2.0", 24, P(5)), -ENOENT);
	assert_int_equal(remove4(t, "192.0.2.0", 23, P(0)), -ENOENT);

	/* Removing the default route leaves the rest. */
	assert_int_equal(remove4(t, "0.0.0.0", 0, P(0)), 0);
	assert_null(lookup4(t, "192.0.3.1"));
	assert_ptr_equal(lookup4(t, "192.0.2.200"), P(3));
	assert_int_equal(wg_allowedips_count(t), 3);

	/* Invalid cidr and family. */
	assert_int_equal(insert4(t, "192.0.2.0", 33, P(1)), -EINVAL);
	assert_int_equal(insert4(t, "192.0.2.0", 255, P(1)), -EINVAL);
	assert_int_equal(wg_allowedips_insert(t, AF_UNIX, (const uint8_t *)"abcd", 8, P(1)),
			 -EINVAL);
	assert_null(wg_allowedips_lookup(t, AF_UNIX, (const uint8_t *)"abcd"));
	assert_int_equal(wg_allowedips_count(t), 3);

	wg_allowedips_free(t);
	wg_allowedips_free(NULL);
}

static void test_hand_v6(void **state)
{
	struct allowedips *t = wg_allowedips_new();

	(void)state;
	assert_int_equal(insert6(t, "::", 0, P(0)), 0);
	assert_int_equal(insert6(t, "2001:db8::", 32, P(1)), 0);
	assert_int_equal(insert6(t, "2001:db8:1::", 48, P(2)), 0);
	assert_int_equal(insert6(t, "2001:db8:1::1", 128, P(3)), 0);
	assert_int_equal(insert6(t, "2001:db8:1:0:8000::", 65, P(4)), 0);
	assert_ptr_equal(lookup6(t, "2001:db8:1::1"), P(3));
	assert_ptr_equal(lookup6(t, "2001:db8:1::2"), P(2));
	assert_ptr_equal(lookup6(t, "2001:db8:1:0:8000::2"), P(4));
	assert_ptr_equal(lookup6(t, "2001:db8:1:0:7fff::2"), P(2));
	assert_ptr_equal(lookup6(t, "2001:db8:2::1"), P(1));
	assert_ptr_equal(lookup6(t, "2001:db9::1"), P(0));
	assert_ptr_equal(lookup6(t, "ffff::1"), P(0));
	/* Families are separate tries. */
	assert_null(lookup4(t, "0.0.0.0"));
	assert_int_equal(insert6(t, "::", 129, P(1)), -EINVAL);

	/* Take-over of an exact prefix. */
	assert_int_equal(insert6(t, "2001:db8:1::", 48, P(7)), 0);
	assert_ptr_equal(lookup6(t, "2001:db8:1::2"), P(7));
	assert_int_equal(wg_allowedips_count(t), 5);

	wg_allowedips_remove_by_peer(t, P(7));
	assert_ptr_equal(lookup6(t, "2001:db8:1::2"), P(1));
	assert_ptr_equal(lookup6(t, "2001:db8:1::1"), P(3));
	assert_int_equal(wg_allowedips_count(t), 4);
	wg_allowedips_free(t);
}

struct collect {
	char lines[16][64];
	unsigned n;
	int stop_after;
};

static int collect_cb(void *vctx, int family, const uint8_t *addr, uint8_t cidr)
{
	struct collect *c = vctx;
	char buf[INET6_ADDRSTRLEN];

	assert_true(c->n < 16);
	inet_ntop(family, addr, buf, sizeof(buf));
	snprintf(c->lines[c->n++], 64, "%s/%u", buf, cidr);
	if (c->stop_after && (int)c->n == c->stop_after)
		return 42;
	return 0;
}

static void test_walk(void **state)
{
	struct allowedips *t = wg_allowedips_new();
	struct collect c = {0};

	(void)state;
	assert_int_equal(insert6(t, "2001:db8::ff", 64, P(1)), 0);
	assert_int_equal(insert4(t, "198.51.100.7", 24, P(1)), 0);
	assert_int_equal(insert4(t, "192.0.2.7", 32, P(1)), 0);
	assert_int_equal(insert4(t, "192.0.2.0", 24, P(2)), 0);
	assert_int_equal(insert4(t, "100.64.0.0", 10, P(1)), 0);
	assert_int_equal(insert6(t, "::", 0, P(1)), 0);

	assert_int_equal(wg_allowedips_walk_by_peer(t, P(1), collect_cb, &c), 0);
	assert_int_equal(c.n, 5);
	/* IPv4 first, masked addresses. */
	assert_string_equal(c.lines[0], "100.64.0.0/10");
	assert_string_equal(c.lines[1], "192.0.2.7/32");
	assert_string_equal(c.lines[2], "198.51.100.0/24");
	assert_string_equal(c.lines[3], "::/0");
	assert_string_equal(c.lines[4], "2001:db8::/64");

	memset(&c, 0, sizeof(c));
	c.stop_after = 2;
	assert_int_equal(wg_allowedips_walk_by_peer(t, P(1), collect_cb, &c), 42);
	assert_int_equal(c.n, 2);

	memset(&c, 0, sizeof(c));
	assert_int_equal(wg_allowedips_walk_by_peer(t, P(9), collect_cb, &c), 0);
	assert_int_equal(c.n, 0);

	wg_allowedips_remove_by_peer(t, P(1));
	assert_int_equal(wg_allowedips_count(t), 1);
	assert_ptr_equal(lookup4(t, "192.0.2.7"), P(2));
	assert_null(lookup6(t, "2001:db8::1"));
	wg_allowedips_free(t);
}

/* Deep tries (one host route per cidr) exercise the fixed walk stacks. */
static void test_deep(void **state)
{
	struct allowedips *t = wg_allowedips_new();
	uint8_t a[16];

	(void)state;
	for (unsigned cidr = 0; cidr <= 128; cidr++) {
		memset(a, 0xff, sizeof(a));
		/* Each prefix of all-ones plus a sibling branch at every depth. */
		assert_int_equal(wg_allowedips_insert(t, AF_INET6, a, (uint8_t)cidr, P(cidr % 4)),
				 0);
		if (cidr < 128) {
			a[cidr / 8] ^= (uint8_t)(0x80 >> (cidr % 8));
			assert_int_equal(wg_allowedips_insert(t, AF_INET6, a, 128, P(5)), 0);
		}
	}
	assert_int_equal(wg_allowedips_count(t), 129 + 128);
	memset(a, 0xff, sizeof(a));
	assert_ptr_equal(wg_allowedips_lookup(t, AF_INET6, a), P(0));
	wg_allowedips_remove_by_peer(t, P(0));
	assert_ptr_equal(wg_allowedips_lookup(t, AF_INET6, a), P(3));
	wg_allowedips_remove_by_peer(t, P(5));
	check_shape(t);
	wg_allowedips_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hand_v4),	 cmocka_unit_test(test_hand_v6),
	    cmocka_unit_test(test_walk),	 cmocka_unit_test(test_deep),
	    cmocka_unit_test(test_random_v4),	 cmocka_unit_test(test_random_v6),
	    cmocka_unit_test(test_random_mixed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
