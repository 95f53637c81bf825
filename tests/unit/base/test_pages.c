/* SPDX-License-Identifier: MIT */
/*
 * base/pages: tables of 16 KiB from pages_zalloc read as zeros and are resident only
 * where written (mincore), which calloc of a block from memory the heap used before
 * does not give (it clears it); sizes that overflow fail. Under AddressSanitizer
 * pages_zalloc is calloc: the residency check is skipped there.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/pages.h"

#define TABLES 16
#define N 4096 /* uint32_t: 16 KiB, 4 pages, as the filter's chain heads */

/* Resident pages among those [p, p + len) touches. */
static unsigned resident_pages(void *p, size_t len)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = (uintptr_t)p & ~(page - 1),
		  hi = ((uintptr_t)p + len + page - 1) & ~(page - 1);
	size_t n = (hi - lo) / page;
	unsigned char *vec = calloc(n, 1);
	unsigned count = 0;

	assert_non_null(vec);
	assert_int_equal(mincore((void *)lo, hi - lo, vec), 0);
	for (size_t i = 0; i < n; i++)
		count += vec[i] & 1;
	free(vec);
	return count;
}

static void test_lazy(void **state)
{
	uint32_t *t[TABLES];
	unsigned resident = 0;
	char *churn;

	(void)state;
	/* Memory the heap used before, as a daemon's heap has: calloc would clear it. */
	churn = malloc(120 * 1024);
	assert_non_null(churn);
	memset(churn, 1, 120 * 1024);
	free(churn);
	for (int i = 0; i < TABLES; i++) {
		t[i] = pages_zalloc(N, sizeof(*t[i]));
		assert_non_null(t[i]);
		assert_int_equal(t[i][N - 1], 0);
		t[i][N - 1] = 7; /* one entry written, in the last page */
	}
	for (int i = 0; i < TABLES; i++)
		resident += resident_pages(t[i], N * sizeof(*t[i]));
#if defined(__SANITIZE_ADDRESS__)
	(void)resident;
#else
	/* The written page of each, not the other three. */
	assert_int_equal(resident, TABLES);
#endif
	for (int i = 0; i < TABLES; i++)
		pages_free(t[i], N, sizeof(*t[i]));
}

static void test_sizes(void **state)
{
	void *p;

	(void)state;
	errno = 0;
	assert_null(pages_zalloc(SIZE_MAX / 2, 4));
	assert_int_equal(errno, ENOMEM);
	p = pages_zalloc(0, 8); /* an empty table is still a valid pointer */
	assert_non_null(p);
	pages_free(p, 0, 8);
	pages_free(NULL, 1, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_lazy),
	    cmocka_unit_test(test_sizes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
