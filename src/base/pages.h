/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_PAGES_H
#define TRELLIS_BASE_PAGES_H

#include <stddef.h>

/*
 * Zeroed tables that are mostly never written (hash chain heads, free stacks and rings
 * sized for the worst case), mapped straight from the kernel: a page of one is resident
 * only once something is written to it. calloc makes no such promise: a block below
 * malloc's mmap threshold (128 KiB at first, more once a larger block was freed) comes
 * from the heap, where calloc clears it, and every page of it is resident from the
 * start. On an idle node with 100 peers, 0.25 MiB of such zeros (issue 14).
 *
 * pages_zalloc: n elements of size bytes, zeroed, page-aligned; NULL with errno set (an
 * overflowing n * size too). pages_free takes the same n and size, and accepts NULL.
 */
void *pages_zalloc(size_t n, size_t size);
void pages_free(void *p, size_t n, size_t size);

#endif
