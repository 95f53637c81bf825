/* SPDX-License-Identifier: MIT */
/*
 * Test-side JOSE: keys made with OpenSSL, their public JWKs, and compact JWS signed
 * with them (RS256, ES256, EdDSA, and "none"), so tests can mint any token they need
 * and the library under test only ever verifies.
 */
#ifndef TRELLIS_TESTS_JWT_SIGN_H
#define TRELLIS_TESTS_JWT_SIGN_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>

#include "oidc/jose.h"

static EVP_PKEY *tkey_new(enum oidc_alg alg)
{
	switch (alg) {
	case OIDC_ALG_RS256:
		return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	case OIDC_ALG_ES256:
		return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	case OIDC_ALG_EDDSA:
		return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	default:
		return NULL;
	}
}

static json_t *b64(const uint8_t *b, size_t n)
{
	char *s = malloc(n * 2 + 4);
	json_t *v;

	oidc_b64url_encode(s, n * 2 + 4, b, n);
	v = json_string(s);
	free(s);
	return v;
}

static json_t *bn_b64(EVP_PKEY *k, const char *name)
{
	BIGNUM *bn = NULL;
	uint8_t buf[1024];
	int n;

	EVP_PKEY_get_bn_param(k, name, &bn);
	n = BN_bn2bin(bn, buf);
	BN_free(bn);
	return b64(buf, (size_t)n);
}

/* The public JWK of k (kid may be NULL). */
static json_t *tkey_jwk(EVP_PKEY *k, enum oidc_alg alg, const char *kid)
{
	json_t *j = json_object();
	uint8_t pt[65];
	size_t n = sizeof(pt);

	if (alg == OIDC_ALG_RS256) {
		json_object_set_new(j, "kty", json_string("RSA"));
		json_object_set_new(j, "n", bn_b64(k, OSSL_PKEY_PARAM_RSA_N));
		json_object_set_new(j, "e", bn_b64(k, OSSL_PKEY_PARAM_RSA_E));
	} else if (alg == OIDC_ALG_ES256) {
		EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &n);
		json_object_set_new(j, "kty", json_string("EC"));
		json_object_set_new(j, "crv", json_string("P-256"));
		json_object_set_new(j, "x", b64(pt + 1, 32));
		json_object_set_new(j, "y", b64(pt + 33, 32));
	} else {
		n = 32;
		EVP_PKEY_get_raw_public_key(k, pt, &n);
		json_object_set_new(j, "kty", json_string("OKP"));
		json_object_set_new(j, "crv", json_string("Ed25519"));
		json_object_set_new(j, "x", b64(pt, 32));
	}
	if (kid)
		json_object_set_new(j, "kid", json_string(kid));
	json_object_set_new(j, "use", json_string("sig"));
	return j;
}

/* Compact JWS of payload under header; k NULL: an empty signature ("none"). malloc'd. */
static char *tjws_sign(EVP_PKEY *k, enum oidc_alg alg, json_t *header, json_t *payload)
{
	char *h = json_dumps(header, JSON_COMPACT), *p = json_dumps(payload, JSON_COMPACT);
	size_t cap = strlen(h) * 2 + strlen(p) * 2 + 2048;
	char *out = malloc(cap);
	uint8_t sig[1024], raw[64];
	size_t sl = sizeof(sig), o;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	o = (size_t)oidc_b64url_encode(out, cap, (uint8_t *)h, strlen(h));
	out[o++] = '.';
	o += (size_t)oidc_b64url_encode(out + o, cap - o, (uint8_t *)p, strlen(p));
	if (k) {
		EVP_DigestSignInit(md, NULL, alg == OIDC_ALG_EDDSA ? NULL : EVP_sha256(), NULL, k);
		EVP_DigestSign(md, sig, &sl, (uint8_t *)out, o);
		if (alg == OIDC_ALG_ES256) {
			const uint8_t *q = sig;
			ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)sl);

			BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
			BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
			ECDSA_SIG_free(es);
			memcpy(sig, raw, 64);
			sl = 64;
		}
	} else {
		sl = 0;
	}
	out[o++] = '.';
	oidc_b64url_encode(out + o, cap - o, sig, sl);
	EVP_MD_CTX_free(md);
	free(h);
	free(p);
	return out;
}

static json_t *theader(const char *alg, const char *kid)
{
	json_t *h = json_pack("{ss}", "alg", alg);

	if (kid)
		json_object_set_new(h, "kid", json_string(kid));
	return h;
}

#endif
