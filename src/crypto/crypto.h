/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CRYPTO_CRYPTO_H
#define TRELLIS_CRYPTO_CRYPTO_H

/*
 * The primitives WireGuard needs, over OpenSSL 3 where it has them and written
 * here where it does not (BLAKE2s with keys and short outputs, HChaCha20).
 * All functions are thread safe. Errors are negative errno values.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define X25519_KEY_LEN 32
#define CHACHA20POLY1305_KEY_LEN 32
#define CHACHA20POLY1305_TAG_LEN 16
#define XCHACHA20POLY1305_NONCE_LEN 24
#define BLAKE2S_HASH_LEN 32
#define BLAKE2S_BLOCK_LEN 64

/*
 * Process-wide setup (fetches OpenSSL algorithms once; OpenSSL's error strings stay
 * unloaded, see crypto.c). Idempotent; 0 or -errno. A program calls it before its first
 * other OpenSSL call.
 */
int crypto_init(void);

/* Cryptographically secure random bytes; 0 or -EIO. */
int crypto_random(void *buf, size_t len);
/* Wipes memory in a way the compiler cannot elide. */
void crypto_wipe(void *buf, size_t len);
/* Constant-time equality. */
bool crypto_equal(const void *a, const void *b, size_t len);

/* X25519 (RFC 7748). Private keys are clamped when generated. */
int x25519_private_generate(uint8_t ret_priv[X25519_KEY_LEN]);
int x25519_public_from_private(uint8_t ret_pub[X25519_KEY_LEN],
			       const uint8_t priv[X25519_KEY_LEN]);
/* -EINVAL when the result is all zeros (low-order point), as WireGuard requires. */
int x25519_shared(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		  const uint8_t pub[X25519_KEY_LEN]);
/*
 * The same, for a private key whose public key the caller holds (its own static or
 * ephemeral pair): half the cost, since OpenSSL need not compute priv_pub. A priv_pub that
 * is not priv's does not change the result, which depends on priv and pub alone.
 */
int x25519_shared_pair(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		       const uint8_t priv_pub[X25519_KEY_LEN], const uint8_t pub[X25519_KEY_LEN]);

/*
 * Ed25519 (RFC 8032): the signatures of flow-log batches (docs/audit.md). A private
 * key is 32 random bytes (the RFC's seed). verify: 0, or -EBADMSG for a signature
 * that does not verify (or a public key that is not a point).
 */
#define ED25519_KEY_LEN 32
#define ED25519_SIG_LEN 64
int ed25519_private_generate(uint8_t ret_priv[ED25519_KEY_LEN]);
int ed25519_public_from_private(uint8_t ret_pub[ED25519_KEY_LEN],
				const uint8_t priv[ED25519_KEY_LEN]);
int ed25519_sign(uint8_t ret_sig[ED25519_SIG_LEN], const void *msg, size_t len,
		 const uint8_t priv[ED25519_KEY_LEN]);
int ed25519_verify(const uint8_t sig[ED25519_SIG_LEN], const void *msg, size_t len,
		   const uint8_t pub[ED25519_KEY_LEN]);

/*
 * ChaCha20-Poly1305 (RFC 8439) with WireGuard's nonce: 32 zero bits then the
 * 64-bit little-endian counter. dst may equal src (in place). encrypt writes
 * src_len + 16 bytes; decrypt takes src_len including the tag and writes
 * src_len - 16 bytes, returning -EBADMSG on authentication failure (or when
 * src_len < 16), in which case the src_len - 16 bytes at dst are zeroed: no
 * unauthenticated plaintext is ever handed out. Both return 0 on success and
 * -EMSGSIZE for lengths near INT_MAX (OpenSSL takes int lengths).
 * The hot path keeps a cipher context per thread: no allocation per call after
 * a thread's first (tests/unit/crypto/test_aead_alloc.c counts them).
 */
int chacha20poly1305_encrypt(uint8_t *dst, const uint8_t *src, size_t src_len, const uint8_t *ad,
			     size_t ad_len, uint64_t nonce,
			     const uint8_t key[CHACHA20POLY1305_KEY_LEN]);
int chacha20poly1305_decrypt(uint8_t *dst, const uint8_t *src, size_t src_len, const uint8_t *ad,
			     size_t ad_len, uint64_t nonce,
			     const uint8_t key[CHACHA20POLY1305_KEY_LEN]);

/*
 * The same AEAD with a raw 96-bit nonce (RFC 8439 section 2.8), for published test
 * vectors and protocols whose nonce is not WireGuard's counter.
 */
#define CHACHA20POLY1305_NONCE96_LEN 12
int chacha20poly1305_encrypt_nonce96(uint8_t *dst, const uint8_t *src, size_t src_len,
				     const uint8_t *ad, size_t ad_len,
				     const uint8_t nonce[CHACHA20POLY1305_NONCE96_LEN],
				     const uint8_t key[CHACHA20POLY1305_KEY_LEN]);
int chacha20poly1305_decrypt_nonce96(uint8_t *dst, const uint8_t *src, size_t src_len,
				     const uint8_t *ad, size_t ad_len,
				     const uint8_t nonce[CHACHA20POLY1305_NONCE96_LEN],
				     const uint8_t key[CHACHA20POLY1305_KEY_LEN]);

/* HChaCha20 (draft-irtf-cfrg-xchacha, section 2.2). */
void hchacha20(uint8_t out[32], const uint8_t key[32], const uint8_t nonce[16]);
/* XChaCha20-Poly1305: HChaCha20 subkey + ChaCha20-Poly1305 with nonce 0^4 || nonce[16..24]. */
int xchacha20poly1305_encrypt(uint8_t *dst, const uint8_t *src, size_t src_len, const uint8_t *ad,
			      size_t ad_len, const uint8_t nonce[XCHACHA20POLY1305_NONCE_LEN],
			      const uint8_t key[32]);
int xchacha20poly1305_decrypt(uint8_t *dst, const uint8_t *src, size_t src_len, const uint8_t *ad,
			      size_t ad_len, const uint8_t nonce[XCHACHA20POLY1305_NONCE_LEN],
			      const uint8_t key[32]);

/* BLAKE2s (RFC 7693): out_len 1..32, key_len 0..32 (0 = unkeyed). */
struct blake2s_state {
	uint32_t h[8];
	uint32_t t[2];
	uint32_t f[2];
	uint8_t buf[BLAKE2S_BLOCK_LEN];
	size_t buflen;
	size_t outlen;
};
void blake2s_init(struct blake2s_state *s, size_t out_len);
void blake2s_init_key(struct blake2s_state *s, size_t out_len, const void *key, size_t key_len);
void blake2s_update(struct blake2s_state *s, const void *in, size_t in_len);
/* Writes out_len bytes and wipes the state. */
void blake2s_final(struct blake2s_state *s, uint8_t *out);
void blake2s(uint8_t *out, size_t out_len, const void *in, size_t in_len, const void *key,
	     size_t key_len);

/* HMAC-BLAKE2s (RFC 2104 over BLAKE2s-256, 64-byte blocks), as the whitepaper's HMAC. */
void hmac_blake2s(uint8_t out[BLAKE2S_HASH_LEN], const uint8_t *key, size_t key_len,
		  const uint8_t *in, size_t in_len);

/*
 * The whitepaper's KDF_n(key, input): t0 = HMAC(key, input); t1 = HMAC(t0, 0x1);
 * t_i = HMAC(t0, t_{i-1} || i). Writes t1, t2, t3 into the non-NULL outputs
 * (each 32 bytes); intermediates are wiped.
 */
void wg_kdf(uint8_t *ret_t1, uint8_t *ret_t2, uint8_t *ret_t3, const uint8_t key[32],
	    const uint8_t *input, size_t input_len);

#endif
