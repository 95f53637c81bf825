/* SPDX-License-Identifier: MIT */
/*
 * Process-wide OpenSSL setup and the small helpers every other file uses.
 *
 * State: one fetched ChaCha20-Poly1305 EVP_CIPHER, fetched once under
 * pthread_once and never freed (it lives as long as the process). Fetching is
 * what takes OpenSSL's locks and allocates, so the data path must never do it.
 *
 * OpenSSL's error strings are not loaded up front (issue 14): its initialisation
 * would load them with the configuration file, calling a loader in each of some fifty
 * modules of libcrypto, which makes 0.3 MiB of its pages resident for text only an
 * error message reads. Whoever prints an OpenSSL reason loads them then
 * (dial_tls_reason in src/net).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "crypto/crypto.h"
#include "crypto/crypto_internal.h"

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *chacha20poly1305_cipher;

static void init_cipher(void)
{
	/* Before anything else asks OpenSSL to initialise: the first answer is the one kept. */
	OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CRYPTO_STRINGS, NULL);
	chacha20poly1305_cipher = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
	if (!chacha20poly1305_cipher)
		ERR_clear_error();
}

int crypto_init(void)
{
	pthread_once(&init_once, init_cipher);
	return chacha20poly1305_cipher ? 0 : -ENOSYS;
}

const EVP_CIPHER *crypto_chacha20poly1305_cipher(void)
{
	pthread_once(&init_once, init_cipher);
	return chacha20poly1305_cipher;
}

int crypto_random(void *buf, size_t len)
{
	uint8_t *p = buf;
	int n;

	/* RAND_bytes takes an int length. */
	while (len > 0) {
		n = len > INT_MAX ? INT_MAX : (int)len;
		if (RAND_bytes(p, n) != 1) {
			ERR_clear_error();
			return -EIO;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void crypto_wipe(void *buf, size_t len)
{
	if (buf && len)
		OPENSSL_cleanse(buf, len);
}

bool crypto_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}
