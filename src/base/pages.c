/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "base/pages.h"

/* Under AddressSanitizer, calloc: its redzones catch an overrun that a mapping would not. */
#if defined(__SANITIZE_ADDRESS__)
#define PAGES_CALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PAGES_CALLOC 1
#endif
#endif

/* The bytes of n elements of size (at least 1: mmap of 0 bytes fails), 0 on overflow. */
static size_t pages_len(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return 0;
	return n && size ? n * size : 1;
}

void *pages_zalloc(size_t n, size_t size)
{
	size_t len = pages_len(n, size);
	void *p;

	if (!len) {
		errno = ENOMEM;
		return NULL;
	}
#ifdef PAGES_CALLOC
	p = calloc(1, len);
#else
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		p = NULL;
#endif
	return p;
}

void pages_free(void *p, size_t n, size_t size)
{
	if (!p)
		return;
#ifdef PAGES_CALLOC
	(void)n;
	(void)size;
	free(p);
#else
	munmap(p, pages_len(n, size));
#endif
}
