/* SPDX-License-Identifier: MIT */
/*
 * base/hmap against a naive reference (an array of what must be in the table)
 * on random inserts and removals, with duplicate keys, growth and teardown.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/hmap.h"
#include "base/util.h"

struct elem {
	struct hmap_node node;
	uint32_t key;
	bool in;
};

#define N 3000

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

static unsigned count_key(const struct hmap *h, uint32_t key)
{
	struct hmap_node *n;
	unsigned c = 0;

	for (n = hmap_first_with_hash(h, hmap_hash(h, &key, sizeof(key))); n;
	     n = hmap_next_with_hash(n))
		c += container_of(n, struct elem, node)->key == key;
	return c;
}

static void test_against_reference(void **state)
{
	static struct elem e[N];
	struct hmap h;
	unsigned ref_n = 0;

	(void)state;
	assert_int_equal(hmap_init(&h), 0);
	/* Keys from a small range: many duplicates. */
	for (unsigned i = 0; i < N; i++)
		e[i].key = rnd() % (N / 3);
	for (unsigned round = 0; round < 20000; round++) {
		struct elem *x = &e[rnd() % N];

		if (x->in) {
			hmap_remove(&h, &x->node);
			ref_n--;
		} else {
			hmap_insert(&h, &x->node, hmap_hash(&h, &x->key, sizeof(x->key)));
			ref_n++;
		}
		x->in = !x->in;
		assert_int_equal(hmap_count(&h), ref_n);
		if (round % 997 == 0) {
			/* Every key is found exactly as often as the reference holds it. */
			for (unsigned k = 0; k < N / 3; k += 7) {
				unsigned want = 0;

				for (unsigned i = 0; i < N; i++)
					want += e[i].in && e[i].key == k;
				assert_int_equal(count_key(&h, k), want);
			}
		}
	}
	/* A walk meets each element that is in exactly once. */
	{
		static unsigned seen[N];
		struct hmap_node *n;
		unsigned total = 0;

		memset(seen, 0, sizeof(seen));
		for (n = hmap_first(&h); n; n = hmap_next(&h, n)) {
			seen[container_of(n, struct elem, node) - e]++;
			total++;
		}
		assert_int_equal(total, ref_n);
		for (unsigned i = 0; i < N; i++)
			assert_int_equal(seen[i], e[i].in ? 1 : 0);
	}
	assert_true(h.mask + 1 >= ref_n); /* it grew: load stays at most 1 */
	hmap_fini(&h);
}

static void test_hash_id_and_seed(void **state)
{
	struct hmap a, b;
	const char name[] = "laptop";

	(void)state;
	assert_int_equal(hmap_init(&a), 0);
	assert_int_equal(hmap_init(&b), 0);
	/* The id is part of the key. */
	assert_true(hmap_hash_id(&a, 1, name, 6) != hmap_hash_id(&a, 2, name, 6));
	assert_int_equal(hmap_hash_id(&a, 1, name, 6), hmap_hash_id(&a, 1, name, 6));
	/* Two tables hash alike only if their seeds are alike. */
	assert_true(a.seed != b.seed);
	assert_true(hmap_hash(&a, name, 6) != hmap_hash(&b, name, 6));
	hmap_fini(&a);
	hmap_fini(&b);
	hmap_fini(&a); /* twice is fine: zeroed */
}

/* Teardown frees every element while walking. */
static void test_teardown(void **state)
{
	struct hmap h;
	struct hmap_node *n, *next;

	(void)state;
	assert_int_equal(hmap_init(&h), 0);
	for (uint32_t i = 0; i < 1000; i++) {
		struct elem *x = calloc(1, sizeof(*x));

		assert_non_null(x);
		x->key = i;
		hmap_insert(&h, &x->node, hmap_hash(&h, &i, sizeof(i)));
	}
	for (n = hmap_first(&h); n; n = next) {
		next = hmap_next(&h, n);
		free(container_of(n, struct elem, node));
	}
	hmap_fini(&h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_against_reference),
		cmocka_unit_test(test_hash_id_and_seed),
		cmocka_unit_test(test_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
