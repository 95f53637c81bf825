/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_HASH_H
#define TRELLIS_BASE_HASH_H

#include <stdint.h>

/*
 * The murmur3 64-bit finalizer (fmix64): every input bit affects every output bit,
 * so hash tables may index with the low bits. Mix a secret seed into the input where
 * a remote party chooses the keys.
 */
static inline uint64_t hash_mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

#endif
