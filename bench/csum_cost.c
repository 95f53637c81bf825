/* SPDX-License-Identifier: MIT */
/*
 * The Internet checksum's cost (issue 14): ns per 1,400 bytes for the sum that the offload
 * path had before (32-bit words into one 64-bit sum, kept here as it was) and for
 * offload_csum_add, in the same run, on a segment in L1 (what coalescing and the partial
 * checksum completion sum) and on segments cut from a 64 KiB super-packet (what
 * segmentation does: copy, then sum the copy; or both at once in one loop, which was tried
 * for segmentation and not kept: it is no faster than the C library's memcpy and a sum).
 * `make bench-csum` builds it with the release flags and runs it; prints
 * "name ns_per_1400_bytes" lines, the best of 41 short runs of each, interleaved.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "offload/offload.h"

#define SEG 1400
#define SUPER 65536
#define RUNS 41
#define HOT_ITERS 40000
#define COLD_PASSES 800

static uint8_t super[SUPER + 64], out[SEG + 64];
static volatile uint64_t sink;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The sum as src/offload/vnet.c had it before issue 14. */
__attribute__((noinline)) static uint64_t old_csum_add(uint64_t sum, const uint8_t *p, size_t len)
{
	uint32_t w;
	uint8_t tail[4] = {0};

	while (len >= 16) {
		uint32_t a, b, c, d;

		memcpy(&a, p, 4);
		memcpy(&b, p + 4, 4);
		memcpy(&c, p + 8, 4);
		memcpy(&d, p + 12, 4);
		sum += (uint64_t)a + b + c + d;
		p += 16;
		len -= 16;
	}
	while (len >= 4) {
		memcpy(&w, p, 4);
		sum += w;
		p += 4;
		len -= 4;
	}
	if (len) {
		memcpy(tail, p, len);
		memcpy(&w, tail, 4);
		sum += w;
	}
	return sum;
}

/* Copy and sum in one pass: the words go through registers once, in two chains. */
__attribute__((noinline)) static uint64_t fused_copy(uint64_t sum, uint8_t *dst, const uint8_t *src,
						     size_t len)
{
	uint64_t s0 = 0, s1 = 0, c0 = 0, c1 = 0, w0, w1, w2, w3, t[3];

	while (len >= 32) {
		memcpy(&w0, src, 8);
		memcpy(&w1, src + 8, 8);
		memcpy(&w2, src + 16, 8);
		memcpy(&w3, src + 24, 8);
		memcpy(dst, &w0, 8);
		memcpy(dst + 8, &w1, 8);
		memcpy(dst + 16, &w2, 8);
		memcpy(dst + 24, &w3, 8);
		s0 += w0;
		c0 += s0 < w0;
		s1 += w1;
		c1 += s1 < w1;
		s0 += w2;
		c0 += s0 < w2;
		s1 += w3;
		c1 += s1 < w3;
		src += 32;
		dst += 32;
		len -= 32;
	}
	memcpy(dst, src, len);
	/* The partial sums are words like any other: summed as bytes, they add in. */
	t[0] = s0, t[1] = s1, t[2] = c0 + c1;
	return offload_csum_add(offload_csum_add(sum, (const uint8_t *)t, sizeof(t)), dst, len);
}

enum kind { HOT_OLD, HOT_NEW, CUT_OLD, CUT_NEW, CUT_FUSED, KINDS };

static const char *const names[KINDS] = {"hot_old", "hot_new", "cut_copy_then_old",
					 "cut_copy_then_new", "cut_fused_copy"};

/* ns per SEG bytes of one run of kind k. */
static double run(enum kind k)
{
	uint64_t t0, s = 0, n = 0;
	unsigned i;
	size_t off;

	t0 = now_ns();
	if (k == HOT_OLD || k == HOT_NEW) {
		for (i = 0; i < HOT_ITERS; i++, n++)
			s += k == HOT_OLD ? old_csum_add(s, out, SEG)
					  : offload_csum_add(s, out, SEG);
	} else {
		for (i = 0; i < COLD_PASSES; i++) {
			for (off = 0; off + SEG <= SUPER; off += SEG, n++) {
				if (k == CUT_FUSED) {
					s += fused_copy(s, out, super + off, SEG);
					continue;
				}
				memcpy(out, super + off, SEG);
				s += k == CUT_OLD ? old_csum_add(s, out, SEG)
						  : offload_csum_add(s, out, SEG);
			}
		}
	}
	sink = s;
	return (double)(now_ns() - t0) / (double)n;
}

int main(void)
{
	double best[KINDS];
	unsigned r, k;

	srand(14);
	for (k = 0; k < sizeof(super); k++)
		super[k] = (uint8_t)rand();
	memcpy(out, super, SEG);
	/* The sums agree before any is timed. */
	if (offload_csum_fold(old_csum_add(0, out, SEG)) !=
		offload_csum_fold(offload_csum_add(0, out, SEG)) ||
	    offload_csum_fold(fused_copy(0, out + 32, super, SEG)) !=
		offload_csum_fold(offload_csum_add(0, super, SEG)))
		return 1;
	for (k = 0; k < KINDS; k++)
		best[k] = 1e18;
	/* Interleaved runs, the best of each: other load on the machine only adds. */
	for (r = 0; r < RUNS; r++)
		for (k = 0; k < KINDS; k++) {
			double t = run((enum kind)k);

			if (t < best[k])
				best[k] = t;
		}
	for (k = 0; k < KINDS; k++)
		printf("%s %.1f\n", names[k], best[k]);
	return 0;
}
