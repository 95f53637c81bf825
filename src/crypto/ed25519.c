/* SPDX-License-Identifier: MIT */
/*
 * Ed25519 (RFC 8032, pure: no prehash) over OpenSSL's EVP_PKEY. Used to sign
 * flow-log batches, a few per node per minute: the EVP_PKEY allocation per call
 * is acceptable there. WireGuard's X25519 keys cannot sign, so a node keeps a
 * separate Ed25519 audit key (docs/audit.md says why not XEdDSA).
 */
#include <errno.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "crypto/crypto.h"

int ed25519_private_generate(uint8_t ret_priv[ED25519_KEY_LEN])
{
	return crypto_random(ret_priv, ED25519_KEY_LEN);
}

int ed25519_public_from_private(uint8_t ret_pub[ED25519_KEY_LEN],
				const uint8_t priv[ED25519_KEY_LEN])
{
	EVP_PKEY *pkey;
	size_t len = ED25519_KEY_LEN;
	int ret = -EIO;

	pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL, priv, ED25519_KEY_LEN);
	if (!pkey)
		goto out;
	if (EVP_PKEY_get_raw_public_key(pkey, ret_pub, &len) != 1 || len != ED25519_KEY_LEN)
		goto out;
	ret = 0;
out:
	EVP_PKEY_free(pkey);
	if (ret)
		ERR_clear_error();
	return ret;
}

int ed25519_sign(uint8_t ret_sig[ED25519_SIG_LEN], const void *msg, size_t len,
		 const uint8_t priv[ED25519_KEY_LEN])
{
	EVP_MD_CTX *md = NULL;
	EVP_PKEY *pkey;
	size_t siglen = ED25519_SIG_LEN;
	int ret = -EIO;

	pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL, priv, ED25519_KEY_LEN);
	md = EVP_MD_CTX_new();
	if (!pkey || !md)
		goto out;
	if (EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, pkey, NULL) != 1 ||
	    EVP_DigestSign(md, ret_sig, &siglen, msg, len) != 1 || siglen != ED25519_SIG_LEN)
		goto out;
	ret = 0;
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	if (ret)
		ERR_clear_error();
	return ret;
}

int ed25519_verify(const uint8_t sig[ED25519_SIG_LEN], const void *msg, size_t len,
		   const uint8_t pub[ED25519_KEY_LEN])
{
	EVP_MD_CTX *md = NULL;
	EVP_PKEY *pkey;
	int ret = -EIO;

	pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, pub, ED25519_KEY_LEN);
	md = EVP_MD_CTX_new();
	if (!pkey || !md) {
		/* A public key OpenSSL will not take verifies nothing. */
		ret = pkey ? -EIO : -EBADMSG;
		goto out;
	}
	if (EVP_DigestVerifyInit_ex(md, NULL, NULL, NULL, NULL, pkey, NULL) != 1)
		goto out;
	ret = EVP_DigestVerify(md, sig, ED25519_SIG_LEN, msg, len) == 1 ? 0 : -EBADMSG;
out:
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return ret;
}
