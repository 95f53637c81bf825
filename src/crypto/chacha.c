/* SPDX-License-Identifier: MIT */
/*
 * HChaCha20 (draft-irtf-cfrg-xchacha-03 section 2.2): the ChaCha20 block
 * function without the final feed-forward addition, keeping words 0-3 and
 * 12-15. OpenSSL does not expose it, and it is only used for cookie replies,
 * so a plain portable version is enough.
 */
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

#define QUARTER_ROUND(a, b, c, d)                                                                  \
	do {                                                                                       \
		a += b;                                                                            \
		d = crypto_rotl32(d ^ a, 16);                                                      \
		c += d;                                                                            \
		b = crypto_rotl32(b ^ c, 12);                                                      \
		a += b;                                                                            \
		d = crypto_rotl32(d ^ a, 8);                                                       \
		c += d;                                                                            \
		b = crypto_rotl32(b ^ c, 7);                                                       \
	} while (0)

void hchacha20(uint8_t out[32], const uint8_t key[32], const uint8_t nonce[16])
{
	/* "expand 32-byte k" (RFC 8439 section 2.3). */
	uint32_t x[16] = { 0x61707865, 0x3320646e, 0x79622d32, 0x6b206574 };
	int i;

	for (i = 0; i < 8; i++)
		x[4 + i] = crypto_load32_le(key + 4 * i);
	for (i = 0; i < 4; i++)
		x[12 + i] = crypto_load32_le(nonce + 4 * i);

	for (i = 0; i < 10; i++) {
		/* Column round, then diagonal round: 20 rounds in all. */
		QUARTER_ROUND(x[0], x[4], x[8], x[12]);
		QUARTER_ROUND(x[1], x[5], x[9], x[13]);
		QUARTER_ROUND(x[2], x[6], x[10], x[14]);
		QUARTER_ROUND(x[3], x[7], x[11], x[15]);
		QUARTER_ROUND(x[0], x[5], x[10], x[15]);
		QUARTER_ROUND(x[1], x[6], x[11], x[12]);
		QUARTER_ROUND(x[2], x[7], x[8], x[13]);
		QUARTER_ROUND(x[3], x[4], x[9], x[14]);
	}

	for (i = 0; i < 4; i++) {
		crypto_store32_le(out + 4 * i, x[i]);
		crypto_store32_le(out + 16 + 4 * i, x[12 + i]);
	}
	crypto_wipe(x, sizeof(x));
}
