/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CRYPTO_CRYPTO_INTERNAL_H
#define TRELLIS_CRYPTO_CRYPTO_INTERNAL_H

/* Shared between the files of src/crypto only; not part of the module's contract. */

#include <stdint.h>

#include <openssl/evp.h>

/* The cipher fetched once by crypto_init(); NULL if the provider lacks it. */
const EVP_CIPHER *crypto_chacha20poly1305_cipher(void);

static inline uint32_t crypto_load32_le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static inline void crypto_store32_le(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void crypto_store64_le(uint8_t *p, uint64_t v)
{
	crypto_store32_le(p, (uint32_t)v);
	crypto_store32_le(p + 4, (uint32_t)(v >> 32));
}

static inline uint32_t crypto_rotr32(uint32_t v, unsigned n)
{
	return v >> n | v << (32 - n);
}

static inline uint32_t crypto_rotl32(uint32_t v, unsigned n)
{
	return v << n | v >> (32 - n);
}

#endif
