// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "control/addr.h"
#include "proto/netmap.h"

struct addr_pool {
	uint32_t first, count; /* range; bit i is first + i */
	uint64_t *bits;        /* NULL until first use */
	uint32_t hint;         /* no free usable bit below this index */
	unsigned used;
};

struct addr_pool *addr_pool_new_range(uint32_t first, uint32_t count)
{
	struct addr_pool *p;

	if (count < 3)
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->first = first;
	p->count = count;
	p->hint = 1; /* index 0 is the network address */
	return p;
}

struct addr_pool *addr_pool_new(void)
{
	return addr_pool_new_range(ADDR_CGNAT_FIRST, ADDR_CGNAT_COUNT);
}

void addr_pool_free(struct addr_pool *p)
{
	if (!p)
		return;
	free(p->bits);
	free(p);
}

static int bits_ensure(struct addr_pool *p)
{
	if (p->bits)
		return 0;
	p->bits = calloc((p->count + 63) / 64, sizeof(uint64_t));
	return p->bits ? 0 : -ENOMEM;
}

static uint32_t v4_u32(const uint8_t v4[4])
{
	return (uint32_t)v4[0] << 24 | (uint32_t)v4[1] << 16 | (uint32_t)v4[2] << 8 | v4[3];
}

/* Index of v4 in the usable range, or -1 (network, broadcast, outside). */
static int64_t usable_index(const struct addr_pool *p, const uint8_t v4[4])
{
	uint32_t a = v4_u32(v4);

	if (a <= p->first || a - p->first >= p->count - 1)
		return -1;
	return a - p->first;
}

static bool bit_test(const struct addr_pool *p, uint32_t i)
{
	return p->bits[i / 64] >> (i % 64) & 1;
}

int addr_pool_alloc(struct addr_pool *p, uint8_t ret_v4[4])
{
	uint32_t last = p->count - 1; /* broadcast index: never handed out */
	uint32_t w, i, a;
	int r;

	r = bits_ensure(p);
	if (r < 0)
		return r;
	/* Word at a time from the hint; full words are skipped with one compare. */
	for (w = p->hint / 64; w * 64 < last; w++) {
		uint64_t free_bits = ~p->bits[w];

		if (w == p->hint / 64)
			free_bits &= ~0ULL << (p->hint % 64);
		if (!free_bits)
			continue;
		i = w * 64 + (uint32_t)__builtin_ctzll(free_bits);
		if (i >= last)
			break;
		p->bits[w] |= 1ULL << (i % 64);
		p->used++;
		p->hint = i + 1;
		a = p->first + i;
		ret_v4[0] = a >> 24;
		ret_v4[1] = a >> 16;
		ret_v4[2] = a >> 8;
		ret_v4[3] = a;
		return 0;
	}
	p->hint = last;
	return -ENOSPC;
}

int addr_pool_mark(struct addr_pool *p, const uint8_t v4[4])
{
	int64_t i = usable_index(p, v4);
	int r;

	if (i < 0)
		return -ERANGE;
	r = bits_ensure(p);
	if (r < 0)
		return r;
	if (bit_test(p, (uint32_t)i))
		return -EEXIST;
	p->bits[i / 64] |= 1ULL << (i % 64);
	p->used++;
	return 0;
}

void addr_pool_release(struct addr_pool *p, const uint8_t v4[4])
{
	int64_t i = usable_index(p, v4);

	if (i < 0 || !p->bits || !bit_test(p, (uint32_t)i))
		return;
	p->bits[i / 64] &= ~(1ULL << (i % 64));
	p->used--;
	if ((uint32_t)i < p->hint)
		p->hint = (uint32_t)i;
}

unsigned addr_pool_used(const struct addr_pool *p)
{
	return p->used;
}

void addr_ipv6_from_ipv4(uint8_t ret_v6[16], const uint8_t v4[4])
{
	netmap_ipv6_from_ipv4(ret_v6, v4);
}
