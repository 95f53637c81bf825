/* SPDX-License-Identifier: MIT */
/*
 * HMAC-BLAKE2s (RFC 2104 with BLAKE2s-256 and its 64-byte block) and the
 * WireGuard whitepaper's KDF built on it (section 5.4, an HKDF variant).
 */
#include <string.h>

#include "crypto/crypto.h"

/* `out` may overlap `in` or `key`: both are consumed before `out` is written. */
void hmac_blake2s(uint8_t out[BLAKE2S_HASH_LEN], const uint8_t *key, size_t key_len,
		  const uint8_t *in, size_t in_len)
{
	uint8_t k[BLAKE2S_BLOCK_LEN] = { 0 };
	uint8_t inner[BLAKE2S_HASH_LEN];
	struct blake2s_state s;
	size_t i;

	/* RFC 2104 section 2: keys longer than a block are hashed first. */
	if (key_len > BLAKE2S_BLOCK_LEN)
		blake2s(k, BLAKE2S_HASH_LEN, key, key_len, NULL, 0);
	else if (key_len)
		memcpy(k, key, key_len);

	for (i = 0; i < sizeof(k); i++)
		k[i] ^= 0x36;
	blake2s_init(&s, BLAKE2S_HASH_LEN);
	blake2s_update(&s, k, sizeof(k));
	blake2s_update(&s, in, in_len);
	blake2s_final(&s, inner);

	/* 0x36 ^ 0x5c turns the inner pad into the outer pad. */
	for (i = 0; i < sizeof(k); i++)
		k[i] ^= 0x36 ^ 0x5c;
	blake2s_init(&s, BLAKE2S_HASH_LEN);
	blake2s_update(&s, k, sizeof(k));
	blake2s_update(&s, inner, sizeof(inner));
	blake2s_final(&s, out);

	crypto_wipe(k, sizeof(k));
	crypto_wipe(inner, sizeof(inner));
}

void wg_kdf(uint8_t *ret_t1, uint8_t *ret_t2, uint8_t *ret_t3, const uint8_t key[32],
	    const uint8_t *input, size_t input_len)
{
	uint8_t t0[BLAKE2S_HASH_LEN];
	/* Previous output followed by the counter byte. */
	uint8_t t[BLAKE2S_HASH_LEN + 1];

	hmac_blake2s(t0, key, 32, input, input_len);

	t[0] = 0x1;
	hmac_blake2s(t, t0, sizeof(t0), t, 1);
	if (ret_t1)
		memcpy(ret_t1, t, BLAKE2S_HASH_LEN);
	if (!ret_t2 && !ret_t3)
		goto out;

	t[BLAKE2S_HASH_LEN] = 0x2;
	hmac_blake2s(t, t0, sizeof(t0), t, sizeof(t));
	if (ret_t2)
		memcpy(ret_t2, t, BLAKE2S_HASH_LEN);
	if (!ret_t3)
		goto out;

	t[BLAKE2S_HASH_LEN] = 0x3;
	hmac_blake2s(t, t0, sizeof(t0), t, sizeof(t));
	memcpy(ret_t3, t, BLAKE2S_HASH_LEN);
out:
	crypto_wipe(t0, sizeof(t0));
	crypto_wipe(t, sizeof(t));
}
