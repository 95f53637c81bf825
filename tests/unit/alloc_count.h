/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_TESTS_ALLOC_COUNT_H
#define TRELLIS_TESTS_ALLOC_COUNT_H

/*
 * Counting allocations through ASan's allocator hooks, for the tests that prove the
 * data path does not allocate. This only proves something under ASan, which is how
 * CI builds; elsewhere HAVE_ASAN stays undefined and such tests skip.
 */

#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#endif

#ifdef HAVE_ASAN
#if __has_include(<sanitizer/allocator_interface.h>)
#include <sanitizer/allocator_interface.h>
#else
/* GCC ships libasan with this entry point but not clang's header that declares it. */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
					      void (*free_hook)(const volatile void *));
#endif

/* Set `counting` around the code under test; `allocations` counts what it allocated. */
static volatile int counting;
static volatile unsigned long allocations;

static void alloc_count_malloc_hook(const volatile void *ptr, size_t size)
{
	(void)ptr;
	(void)size;
	if (counting)
		allocations++;
}

static void alloc_count_free_hook(const volatile void *ptr)
{
	(void)ptr;
}

static inline void alloc_count_install(void)
{
	__sanitizer_install_malloc_and_free_hooks(alloc_count_malloc_hook, alloc_count_free_hook);
}
#endif

#endif
