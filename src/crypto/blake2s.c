/* SPDX-License-Identifier: MIT */
/*
 * BLAKE2s (RFC 7693), written here because OpenSSL 3.0's EVP digest offers
 * neither keys nor outputs shorter than 32 bytes, and WireGuard needs both
 * (MAC1/MAC2 are keyed 16-byte BLAKE2s).
 *
 * State: h is the chained hash, t the byte counter, f the finalisation flags.
 * buf holds up to one block; a full block stays buffered until more input
 * arrives, because only the very last block may be compressed with f[0] set.
 */
#include <assert.h>
#include <string.h>

#include "base/util.h"
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

static const uint32_t blake2s_iv[8] = {
	0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
	0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
};

/* Message word permutations, RFC 7693 section 2.7; BLAKE2s uses 10 rounds. */
static const uint8_t blake2s_sigma[10][16] = {
	{ 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 },
	{ 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3 },
	{ 11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4 },
	{ 7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8 },
	{ 9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13 },
	{ 2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9 },
	{ 12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11 },
	{ 13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10 },
	{ 6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5 },
	{ 10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0 },
};

/* The mixing function G with BLAKE2s's rotation constants (16, 12, 8, 7). */
#define G(v, a, b, c, d, x, y)                                                                     \
	do {                                                                                       \
		v[a] = v[a] + v[b] + (x);                                                          \
		v[d] = crypto_rotr32(v[d] ^ v[a], 16);                                             \
		v[c] = v[c] + v[d];                                                                \
		v[b] = crypto_rotr32(v[b] ^ v[c], 12);                                             \
		v[a] = v[a] + v[b] + (y);                                                          \
		v[d] = crypto_rotr32(v[d] ^ v[a], 8);                                              \
		v[c] = v[c] + v[d];                                                                \
		v[b] = crypto_rotr32(v[b] ^ v[c], 7);                                              \
	} while (0)

static void compress(struct blake2s_state *s, const uint8_t block[BLAKE2S_BLOCK_LEN])
{
	uint32_t m[16], v[16];
	int i;

	for (i = 0; i < 16; i++)
		m[i] = crypto_load32_le(block + 4 * i);
	for (i = 0; i < 8; i++) {
		v[i] = s->h[i];
		v[8 + i] = blake2s_iv[i];
	}
	v[12] ^= s->t[0];
	v[13] ^= s->t[1];
	v[14] ^= s->f[0];
	v[15] ^= s->f[1];

	for (i = 0; i < 10; i++) {
		const uint8_t *p = blake2s_sigma[i];

		G(v, 0, 4, 8, 12, m[p[0]], m[p[1]]);
		G(v, 1, 5, 9, 13, m[p[2]], m[p[3]]);
		G(v, 2, 6, 10, 14, m[p[4]], m[p[5]]);
		G(v, 3, 7, 11, 15, m[p[6]], m[p[7]]);
		G(v, 0, 5, 10, 15, m[p[8]], m[p[9]]);
		G(v, 1, 6, 11, 12, m[p[10]], m[p[11]]);
		G(v, 2, 7, 8, 13, m[p[12]], m[p[13]]);
		G(v, 3, 4, 9, 14, m[p[14]], m[p[15]]);
	}
	for (i = 0; i < 8; i++)
		s->h[i] ^= v[i] ^ v[8 + i];

	/* The message may be key material (keyed hashing, HMAC). */
	crypto_wipe(m, sizeof(m));
	crypto_wipe(v, sizeof(v));
}

static void counter_add(struct blake2s_state *s, uint32_t n)
{
	s->t[0] += n;
	if (s->t[0] < n)
		s->t[1]++;
}

void blake2s_init_key(struct blake2s_state *s, size_t out_len, const void *key, size_t key_len)
{
	assert(out_len >= 1 && out_len <= BLAKE2S_HASH_LEN);
	assert(key_len <= 32 && (key_len == 0 || key));

	memset(s, 0, sizeof(*s));
	memcpy(s->h, blake2s_iv, sizeof(s->h));
	/* Parameter block word 0: digest length, key length, fanout 1, depth 1. */
	s->h[0] ^= 0x01010000u ^ (uint32_t)key_len << 8 ^ (uint32_t)out_len;
	s->outlen = out_len;
	if (key_len) {
		/* The key, zero-padded to a full block, is the first message block. */
		memcpy(s->buf, key, key_len);
		s->buflen = BLAKE2S_BLOCK_LEN;
	}
}

void blake2s_init(struct blake2s_state *s, size_t out_len)
{
	blake2s_init_key(s, out_len, NULL, 0);
}

void blake2s_update(struct blake2s_state *s, const void *in, size_t in_len)
{
	const uint8_t *p = in;
	size_t n;

	while (in_len > 0) {
		if (s->buflen == BLAKE2S_BLOCK_LEN) {
			/* More input follows, so the buffered block is not the last one. */
			counter_add(s, BLAKE2S_BLOCK_LEN);
			compress(s, s->buf);
			s->buflen = 0;
		}
		n = MIN(BLAKE2S_BLOCK_LEN - s->buflen, in_len);
		memcpy(s->buf + s->buflen, p, n);
		s->buflen += n;
		p += n;
		in_len -= n;
	}
}

void blake2s_final(struct blake2s_state *s, uint8_t *out)
{
	uint8_t full[BLAKE2S_HASH_LEN];
	int i;

	counter_add(s, (uint32_t)s->buflen);
	memset(s->buf + s->buflen, 0, BLAKE2S_BLOCK_LEN - s->buflen);
	s->f[0] = 0xFFFFFFFFu;
	compress(s, s->buf);
	for (i = 0; i < 8; i++)
		crypto_store32_le(full + 4 * i, s->h[i]);
	memcpy(out, full, s->outlen);
	crypto_wipe(full, sizeof(full));
	crypto_wipe(s, sizeof(*s));
}

void blake2s(uint8_t *out, size_t out_len, const void *in, size_t in_len, const void *key,
	     size_t key_len)
{
	struct blake2s_state s;

	blake2s_init_key(&s, out_len, key, key_len);
	blake2s_update(&s, in, in_len);
	blake2s_final(&s, out);
}
