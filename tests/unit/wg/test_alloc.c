/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "../alloc_count.h"
#include "wg_harness.h"

/*
 * No malloc on the data path: after the handshake (and one packet each way so
 * every lazily created per-thread cipher context exists), thousands of data
 * packets both ways, inline and with worker callbacks, must not allocate
 * (counted with ASan's allocator hooks: ../alloc_count.h).
 */

#ifdef HAVE_ASAN
static void run(bool worker)
{
	struct h_node a, b;
	unsigned i;

	h_node_init(&a, 0, worker);
	h_node_init(&b, 1, worker);
	assert_int_equal(h_add_peer(&a, &b, true, NULL, 0), 0);
	assert_int_equal(h_add_peer(&b, &a, true, NULL, 0), 0);
	h_send(&a, &b, 100, 1);
	h_pump(&a, &b);
	h_send(&b, &a, 100, 2);
	h_pump(&a, &b);
	assert_int_equal(a.tun.n, 1);
	assert_int_equal(b.tun.n, 1);
	h_qfree(&a.tun);
	h_qfree(&b.tun);

	/* The hook itself works. */
	allocations = 0;
	counting = 1;
	free(malloc(16));
	counting = 0;
	assert_int_equal(allocations, 1);

	allocations = 0;
	counting = 1;
	for (i = 0; i < 5000; i++) {
		h_now += NSEC_PER_MSEC;
		h_send(&a, &b, 1 + i % 1400, (uint8_t)i);
		h_send(&b, &a, 1 + i % 1400, (uint8_t)i);
		if (i % 16 == 15) {
			wg_device_timers_run(a.dev, h_now);
			wg_device_timers_run(b.dev, h_now);
			h_pump(&a, &b);
			h_qfree(&a.tun);
			h_qfree(&b.tun);
		}
	}
	h_pump(&a, &b);
	counting = 0;
	h_qfree(&a.tun);
	h_qfree(&b.tun);
	assert_int_equal(allocations, 0);
	h_node_free(&a);
	h_node_free(&b);
}

static void test_no_alloc_inline(void **state)
{
	(void)state;
	run(false);
}

static void test_no_alloc_worker(void **state)
{
	(void)state;
	run(true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_alloc_inline),
		cmocka_unit_test(test_no_alloc_worker),
	};

	alloc_count_install();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
int main(void)
{
	printf("1..0 # SKIP allocation counting needs AddressSanitizer\n");
	return 0;
}
#endif
