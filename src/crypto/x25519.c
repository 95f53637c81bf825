/* SPDX-License-Identifier: MIT */
/*
 * X25519 (RFC 7748) over OpenSSL's EVP_PKEY. Used at handshake rate, not per
 * packet, so the EVP_PKEY allocations here are acceptable. OpenSSL clamps the
 * scalar and masks the top bit of the u-coordinate itself, as the RFC requires.
 */
#include <errno.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "crypto/crypto.h"

int x25519_private_generate(uint8_t ret_priv[X25519_KEY_LEN])
{
	uint8_t k[X25519_KEY_LEN];
	int ret;

	ret = crypto_random(k, sizeof(k));
	if (ret < 0)
		goto out;
	/* Clamp as wg(8) does, so stored keys are already valid scalars (RFC 7748 section 5). */
	k[0] &= 248;
	k[31] = (k[31] & 127) | 64;
	memcpy(ret_priv, k, sizeof(k));
out:
	crypto_wipe(k, sizeof(k));
	return ret;
}

int x25519_public_from_private(uint8_t ret_pub[X25519_KEY_LEN],
			       const uint8_t priv[X25519_KEY_LEN])
{
	EVP_PKEY *pkey;
	size_t len = X25519_KEY_LEN;
	int ret = -EIO;

	pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, priv, X25519_KEY_LEN);
	if (!pkey)
		goto out;
	if (EVP_PKEY_get_raw_public_key(pkey, ret_pub, &len) != 1 || len != X25519_KEY_LEN)
		goto out;
	ret = 0;
out:
	EVP_PKEY_free(pkey); /* cleanses the private key */
	if (ret)
		ERR_clear_error();
	return ret;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	uint8_t acc = 0;
	size_t i;

	/* No early exit: the shared secret must not leak through timing. */
	for (i = 0; i < len; i++)
		acc |= p[i];
	return acc == 0;
}

/*
 * Our key as OpenSSL wants it. Given the private half alone, OpenSSL computes the public
 * half on import, a scalar multiplication as costly as the DH itself; given both (the
 * caller's own key pair), it takes them as they are. The DH reads only the private half.
 */
static EVP_PKEY *key_import(const uint8_t priv[X25519_KEY_LEN], const uint8_t *priv_pub)
{
	OSSL_PARAM params[3];
	EVP_PKEY_CTX *ctx;
	EVP_PKEY *pkey = NULL;

	if (!priv_pub)
		return EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, priv, X25519_KEY_LEN);
	params[0] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PRIV_KEY, (void *)priv,
						      X25519_KEY_LEN);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)priv_pub,
						      X25519_KEY_LEN);
	params[2] = OSSL_PARAM_construct_end();
	ctx = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
	if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(ctx);
	return pkey;
}

static int shared(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		  const uint8_t *priv_pub, const uint8_t pub[X25519_KEY_LEN])
{
	EVP_PKEY *pkey = NULL, *peer = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	uint8_t secret[X25519_KEY_LEN];
	size_t len = sizeof(secret);
	int ret = -EIO;

	pkey = key_import(priv, priv_pub);
	peer = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, pub, X25519_KEY_LEN);
	if (!pkey || !peer)
		goto out;
	ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!ctx || EVP_PKEY_derive_init(ctx) != 1)
		goto out;
	/*
	 * No public key validation: any 32 bytes are a u-coordinate; the zero check
	 * below is what rejects the low-order points.
	 */
	if (EVP_PKEY_derive_set_peer_ex(ctx, peer, 0) != 1)
		goto out;
	if (EVP_PKEY_derive(ctx, secret, &len) != 1) {
		/* OpenSSL itself refuses an all-zero result. */
		ret = -EINVAL;
		goto out;
	}
	if (len != X25519_KEY_LEN)
		goto out;
	if (all_zero(secret, sizeof(secret))) {
		ret = -EINVAL;
		goto out;
	}
	memcpy(ret_shared, secret, sizeof(secret));
	ret = 0;
out:
	crypto_wipe(secret, sizeof(secret));
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(peer);
	EVP_PKEY_free(pkey);
	if (ret)
		ERR_clear_error();
	return ret;
}

int x25519_shared(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		  const uint8_t pub[X25519_KEY_LEN])
{
	return shared(ret_shared, priv, NULL, pub);
}

int x25519_shared_pair(uint8_t ret_shared[X25519_KEY_LEN], const uint8_t priv[X25519_KEY_LEN],
		       const uint8_t priv_pub[X25519_KEY_LEN], const uint8_t pub[X25519_KEY_LEN])
{
	return shared(ret_shared, priv, priv_pub, pub);
}
