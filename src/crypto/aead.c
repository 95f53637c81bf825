/* SPDX-License-Identifier: MIT */
/*
 * ChaCha20-Poly1305 over OpenSSL's EVP, and XChaCha20-Poly1305 on top of it.
 *
 * State: each thread owns one EVP_CIPHER_CTX, created on its first call with the
 * cipher fetched once by crypto_init() and freed by a pthread key destructor
 * when the thread exits. Every call re-keys that context with a NULL cipher,
 * which OpenSSL 3 treats as "same algorithm, new key and nonce" and so neither
 * resets nor reallocates the provider context: the data path allocates nothing.
 * The context holds the last key until the next call or thread exit; freeing it
 * cleanses it.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "base/util.h"
#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

static pthread_once_t ctx_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t ctx_key;
static bool ctx_key_ok;
static __thread EVP_CIPHER_CTX *thread_ctx;

static void ctx_destroy(void *p)
{
	EVP_CIPHER_CTX_free(p);
}

static void ctx_key_create(void)
{
	ctx_key_ok = pthread_key_create(&ctx_key, ctx_destroy) == 0;
}

static EVP_CIPHER_CTX *ctx_get(void)
{
	const EVP_CIPHER *cipher;
	EVP_CIPHER_CTX *ctx;

	if (likely(thread_ctx != NULL))
		return thread_ctx;

	cipher = crypto_chacha20poly1305_cipher();
	pthread_once(&ctx_key_once, ctx_key_create);
	if (!cipher || !ctx_key_ok)
		return NULL;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return NULL;
	/* Binds the algorithm once; later calls pass a NULL cipher to keep it. */
	if (EVP_CipherInit_ex2(ctx, cipher, NULL, NULL, 1, NULL) != 1 ||
	    pthread_setspecific(ctx_key, ctx) != 0) {
		EVP_CIPHER_CTX_free(ctx);
		ERR_clear_error();
		return NULL;
	}
	thread_ctx = ctx;
	return ctx;
}

/*
 * One AEAD pass over `len` bytes. Encrypting writes the tag to `tag`; decrypting
 * checks it. Returns 0, -EBADMSG on a tag mismatch, or another -errno.
 */
static int aead_crypt(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t *ad,
		      size_t ad_len, const uint8_t nonce[CHACHA20POLY1305_NONCE96_LEN],
		      const uint8_t key[CHACHA20POLY1305_KEY_LEN], int enc, uint8_t *tag)
{
	EVP_CIPHER_CTX *ctx;
	int outl = 0, finl = 0;
	int ret = -EIO;

	if (len > INT_MAX - 64 || ad_len > INT_MAX)
		return -EMSGSIZE;
	ctx = ctx_get();
	if (unlikely(!ctx))
		return -ENOMEM;

	if (unlikely(EVP_CipherInit_ex2(ctx, NULL, key, nonce, enc, NULL) != 1))
		goto out;
	if (!enc && unlikely(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG,
						 CHACHA20POLY1305_TAG_LEN, tag) != 1))
		goto out;
	if (ad_len && unlikely(EVP_CipherUpdate(ctx, NULL, &outl, ad, (int)ad_len) != 1))
		goto out;
	outl = 0;
	if (len && unlikely(EVP_CipherUpdate(ctx, dst, &outl, src, (int)len) != 1))
		goto out;
	if (EVP_CipherFinal_ex(ctx, dst + outl, &finl) != 1) {
		ret = enc ? -EIO : -EBADMSG;
		goto out;
	}
	if (unlikely((size_t)outl + (size_t)finl != len))
		goto out;
	if (enc && unlikely(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG,
						CHACHA20POLY1305_TAG_LEN, tag) != 1))
		goto out;
	ret = 0;
out:
	/* Keep OpenSSL's per-thread error queue from carrying stale entries. */
	if (unlikely(ret) && ERR_peek_error())
		ERR_clear_error();
	return ret;
}

int chacha20poly1305_encrypt_nonce96(uint8_t *dst, const uint8_t *src, size_t src_len,
				     const uint8_t *ad, size_t ad_len,
				     const uint8_t nonce[CHACHA20POLY1305_NONCE96_LEN],
				     const uint8_t key[CHACHA20POLY1305_KEY_LEN])
{
	if (src_len > SIZE_MAX - CHACHA20POLY1305_TAG_LEN)
		return -EMSGSIZE;
	return aead_crypt(dst, src, src_len, ad, ad_len, nonce, key, 1, dst + src_len);
}

int chacha20poly1305_decrypt_nonce96(uint8_t *dst, const uint8_t *src, size_t src_len,
				     const uint8_t *ad, size_t ad_len,
				     const uint8_t nonce[CHACHA20POLY1305_NONCE96_LEN],
				     const uint8_t key[CHACHA20POLY1305_KEY_LEN])
{
	size_t len;
	int ret;

	if (src_len < CHACHA20POLY1305_TAG_LEN)
		return -EBADMSG;
	len = src_len - CHACHA20POLY1305_TAG_LEN;
	ret = aead_crypt(dst, src, len, ad, ad_len, nonce, key, 0, (uint8_t *)(src + len));
	/* Never hand out plaintext that failed authentication. */
	if (ret)
		crypto_wipe(dst, len);
	return ret;
}

/* WireGuard's nonce: 32 zero bits, then the counter little-endian (whitepaper 5.4.6). */
static void wg_nonce(uint8_t out[CHACHA20POLY1305_NONCE96_LEN], uint64_t counter)
{
	memset(out, 0, 4);
	crypto_store64_le(out + 4, counter);
}

int chacha20poly1305_encrypt(uint8_t *dst, const uint8_t *src, size_t src_len, const uint8_t *ad,
			     size_t ad_len, uint64_t nonce,
			     const uint8_t key[CHACHA20POLY1305_KEY_LEN])
{
	uint8_t n[CHACHA20POLY1305_NONCE96_LEN];

	wg_nonce(n, nonce);
	return chacha20poly1305_encrypt_nonce96(dst, src, src_len, ad, ad_len, n, key);
}

int chacha20poly1305_decrypt(uint8_t *dst, const uint8_t *src, size_t src_len, const uint8_t *ad,
			     size_t ad_len, uint64_t nonce,
			     const uint8_t key[CHACHA20POLY1305_KEY_LEN])
{
	uint8_t n[CHACHA20POLY1305_NONCE96_LEN];

	wg_nonce(n, nonce);
	return chacha20poly1305_decrypt_nonce96(dst, src, src_len, ad, ad_len, n, key);
}

/* The subkey comes from the first 16 nonce bytes; the last 8 form the inner nonce. */
static void xchacha_derive(uint8_t subkey[32], uint8_t n96[CHACHA20POLY1305_NONCE96_LEN],
			   const uint8_t nonce[XCHACHA20POLY1305_NONCE_LEN], const uint8_t key[32])
{
	hchacha20(subkey, key, nonce);
	memset(n96, 0, 4);
	memcpy(n96 + 4, nonce + 16, 8);
}

int xchacha20poly1305_encrypt(uint8_t *dst, const uint8_t *src, size_t src_len, const uint8_t *ad,
			      size_t ad_len, const uint8_t nonce[XCHACHA20POLY1305_NONCE_LEN],
			      const uint8_t key[32])
{
	uint8_t subkey[32], n96[CHACHA20POLY1305_NONCE96_LEN];
	int ret;

	xchacha_derive(subkey, n96, nonce, key);
	ret = chacha20poly1305_encrypt_nonce96(dst, src, src_len, ad, ad_len, n96, subkey);
	crypto_wipe(subkey, sizeof(subkey));
	return ret;
}

int xchacha20poly1305_decrypt(uint8_t *dst, const uint8_t *src, size_t src_len, const uint8_t *ad,
			      size_t ad_len, const uint8_t nonce[XCHACHA20POLY1305_NONCE_LEN],
			      const uint8_t key[32])
{
	uint8_t subkey[32], n96[CHACHA20POLY1305_NONCE96_LEN];
	int ret;

	xchacha_derive(subkey, n96, nonce, key);
	ret = chacha20poly1305_decrypt_nonce96(dst, src, src_len, ad, ad_len, n96, subkey);
	crypto_wipe(subkey, sizeof(subkey));
	return ret;
}
