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
/* GCC ships libasan with these entry points but not clang's header that declares them. */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
					      void (*free_hook)(const volatile void *));
size_t __sanitizer_get_allocated_size(const volatile void *p);
#endif

/*
 * Set `counting` around the code under test; `allocations` counts what it allocated, and
 * `live_bytes` / `peak_bytes` what it holds and held at most (a block allocated before and
 * freed while counting is not counted as freed below zero).
 */
static volatile int counting;
static volatile unsigned long allocations;
static volatile size_t live_bytes, peak_bytes;

static void alloc_count_malloc_hook(const volatile void *ptr, size_t size)
{
	(void)ptr;
	if (!counting)
		return;
	allocations++;
	live_bytes += size;
	if (live_bytes > peak_bytes)
		peak_bytes = live_bytes;
}

static void alloc_count_free_hook(const volatile void *ptr)
{
	size_t size;

	if (!counting || !ptr)
		return;
	size = __sanitizer_get_allocated_size(ptr);
	live_bytes -= size < live_bytes ? size : live_bytes;
}

static inline void alloc_count_install(void)
{
	__sanitizer_install_malloc_and_free_hooks(alloc_count_malloc_hook, alloc_count_free_hook);
}
#endif

#endif
