// SPDX-License-Identifier: MIT
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/addr.h"
#include "control/store.h"

static uint32_t u32(const uint8_t a[4])
{
	return (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
}

static void test_lowest_free(void **state)
{
	struct addr_pool *p = addr_pool_new();
	uint8_t a[4], b[4], c[4];

	(void)state;
	assert_non_null(p);
	assert_int_equal(addr_pool_alloc(p, a), 0);
	assert_int_equal(u32(a), 0x64400001); /* 100.64.0.1: .0 is skipped */
	assert_int_equal(addr_pool_alloc(p, b), 0);
	assert_int_equal(u32(b), 0x64400002);
	assert_int_equal(addr_pool_alloc(p, c), 0);
	assert_int_equal(u32(c), 0x64400003);
	/* Reuse after delete: the lowest free again. */
	addr_pool_release(p, a);
	assert_int_equal(addr_pool_alloc(p, a), 0);
	assert_int_equal(u32(a), 0x64400001);
	addr_pool_release(p, b);
	addr_pool_release(p, b); /* twice: ignored */
	assert_int_equal(addr_pool_used(p), 2);
	assert_int_equal(addr_pool_alloc(p, b), 0);
	assert_int_equal(u32(b), 0x64400002);
	assert_int_equal(addr_pool_alloc(p, b), 0);
	assert_int_equal(u32(b), 0x64400004);
	/* Marks of loaded addresses. */
	assert_int_equal(addr_pool_mark(p, b), -EEXIST);
	b[3] = 5;
	assert_int_equal(addr_pool_mark(p, b), 0);
	assert_int_equal(addr_pool_alloc(p, b), 0);
	assert_int_equal(u32(b), 0x64400006);
	memcpy(b, (uint8_t[]){ 100, 64, 0, 0 }, 4);
	assert_int_equal(addr_pool_mark(p, b), -ERANGE);
	memcpy(b, (uint8_t[]){ 100, 127, 255, 255 }, 4);
	assert_int_equal(addr_pool_mark(p, b), -ERANGE);
	memcpy(b, (uint8_t[]){ 100, 128, 0, 1 }, 4);
	assert_int_equal(addr_pool_mark(p, b), -ERANGE);
	addr_pool_free(p);
	addr_pool_free(NULL);
}

static void test_exhaustion_small_range(void **state)
{
	/* 100.64.0.0/26: 62 usable addresses, then full; the broadcast is never handed out. */
	struct addr_pool *p = addr_pool_new_range(0x64400000, 64);
	uint8_t a[4], first[4];
	unsigned i;

	(void)state;
	for (i = 0; i < 62; i++) {
		assert_int_equal(addr_pool_alloc(p, a), 0);
		assert_int_equal(u32(a), 0x64400001 + i);
		if (i == 30)
			memcpy(first, a, 4);
	}
	assert_int_equal(addr_pool_alloc(p, a), -ENOSPC);
	assert_int_equal(addr_pool_alloc(p, a), -ENOSPC);
	addr_pool_release(p, first);
	assert_int_equal(addr_pool_alloc(p, a), 0);
	assert_memory_equal(a, first, 4);
	assert_int_equal(addr_pool_alloc(p, a), -ENOSPC);
	addr_pool_free(p);
}

static void test_full_range_walk(void **state)
{
	/* Across word boundaries in a bigger range: 5000 addresses in order. */
	struct addr_pool *p = addr_pool_new();
	uint8_t a[4];
	unsigned i;

	(void)state;
	for (i = 0; i < 5000; i++) {
		assert_int_equal(addr_pool_alloc(p, a), 0);
		assert_int_equal(u32(a), 0x64400001 + i);
	}
	a[2] = 2, a[3] = 3;
	addr_pool_release(p, a);
	assert_int_equal(addr_pool_alloc(p, a), 0);
	assert_int_equal(u32(a), 0x64400203);
	addr_pool_free(p);
}

/* Stability across reopen: addresses live in node records; a reloaded pool avoids them. */
static void test_stable_across_reopen(void **state)
{
	char dir[] = "/tmp/trellis-addr-XXXXXX", path[64], cmd[80];
	struct control_tailnet t = { .created = 1 };
	struct store_snapshot snap;
	struct addr_pool *p;
	struct control_node n;
	struct store *s;
	uint8_t a[4];
	size_t i;
	int k;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/control.db", dir);
	assert_int_equal(store_open(path, &s), 0);
	strcpy(t.name, "t");
	assert_int_equal(store_tailnet_create(s, &t), 0);
	p = addr_pool_new();
	for (k = 0; k < 3; k++) {
		memset(&n, 0, sizeof(n));
		n.tailnet_id = t.id;
		snprintf(n.name, sizeof(n.name), "n%d", k);
		n.machine_key[0] = (uint8_t)k;
		n.node_key[0] = (uint8_t)k; /* unique in a tailnet (schema 3) */
		assert_int_equal(addr_pool_alloc(p, n.ipv4), 0);
		assert_int_equal(store_node_insert(s, &n), 0);
	}
	/* n1 deleted: its address is free again after reload. */
	assert_int_equal(store_node_delete(s, 2), 0);
	store_free(s);
	addr_pool_free(p);

	assert_int_equal(store_open(path, &s), 0);
	assert_int_equal(store_load(s, &snap), 0);
	p = addr_pool_new();
	for (i = 0; i < snap.n_nodes; i++)
		assert_int_equal(addr_pool_mark(p, snap.nodes[i].ipv4), 0);
	assert_int_equal(snap.n_nodes, 2);
	assert_int_equal(u32(snap.nodes[0].ipv4), 0x64400001);
	assert_int_equal(u32(snap.nodes[1].ipv4), 0x64400003);
	assert_int_equal(addr_pool_alloc(p, a), 0);
	assert_int_equal(u32(a), 0x64400002);
	assert_int_equal(addr_pool_alloc(p, a), 0);
	assert_int_equal(u32(a), 0x64400004);
	store_snapshot_free(&snap);
	addr_pool_free(p);
	store_free(s);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void test_ipv6(void **state)
{
	static const uint8_t v4[4] = { 100, 64, 0, 7 };
	static const uint8_t want[16] = { 0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11, 0, 0,
					  0,    0,    0,    0,    100,  64,   0, 7 };
	uint8_t v6[16];

	(void)state;
	addr_ipv6_from_ipv4(v6, v4);
	assert_memory_equal(v6, want, 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lowest_free),
		cmocka_unit_test(test_exhaustion_small_range),
		cmocka_unit_test(test_full_range_walk),
		cmocka_unit_test(test_stable_across_reopen),
		cmocka_unit_test(test_ipv6),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
