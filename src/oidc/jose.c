// SPDX-License-Identifier: MIT
/*
 * JWK sets and JWS compact verification (jose.h) on OpenSSL 3's EVP: public keys
 * are built from their parameters with EVP_PKEY_fromdata (RSA, EC) or as raw
 * Ed25519 keys, and checked (EC points on the curve) before they are kept.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include "oidc/jose.h"

/* JWK parameters are at most an 8192-bit modulus: 1024 bytes, 1366 characters. */
#define PARAM_BYTES_MAX 1024

int oidc_fail(char *err, size_t err_len, int r, const char *fmt, ...)
{
	va_list ap;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return r;
}

static int b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int oidc_b64url_decode(uint8_t *out, size_t out_cap, const char *in, size_t in_len)
{
	size_t n = in_len / 4 * 3 + (in_len % 4 ? in_len % 4 - 1 : 0), i, o = 0;
	uint32_t acc = 0;
	unsigned bits = 0;

	if (in_len % 4 == 1)
		return -EINVAL;
	if (n > out_cap)
		return -ENOBUFS;
	for (i = 0; i < in_len; i++) {
		int v = b64url_value(in[i]);

		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	/* One encoding per byte string: the bits past the last byte are zero. */
	if (acc != 0)
		return -EINVAL;
	return (int)o;
}

int oidc_b64url_encode(char *out, size_t out_len, const uint8_t *in, size_t in_len)
{
	static const char abc[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t need = in_len / 3 * 4 + (in_len % 3 ? in_len % 3 + 1 : 0), o = 0, i;

	if (need + 1 > out_len)
		return -ENOBUFS;
	for (i = 0; i + 2 < in_len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = abc[v >> 18];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = abc[v >> 6 & 63];
		out[o++] = abc[v & 63];
	}
	if (in_len - i == 1) {
		out[o++] = abc[in[i] >> 2];
		out[o++] = abc[(in[i] & 3) << 4];
	} else if (in_len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 8 | in[i + 1];

		out[o++] = abc[v >> 10];
		out[o++] = abc[v >> 4 & 63];
		out[o++] = abc[(v & 15) << 2];
	}
	out[o] = '\0';
	return (int)o;
}

const char *oidc_alg_name(enum oidc_alg alg)
{
	switch (alg) {
	case OIDC_ALG_RS256:
		return "RS256";
	case OIDC_ALG_ES256:
		return "ES256";
	case OIDC_ALG_EDDSA:
		return "EdDSA";
	default:
		return "?";
	}
}

static enum oidc_alg alg_parse(const char *s)
{
	if (!strcmp(s, "RS256"))
		return OIDC_ALG_RS256;
	if (!strcmp(s, "ES256"))
		return OIDC_ALG_ES256;
	if (!strcmp(s, "EdDSA"))
		return OIDC_ALG_EDDSA;
	return OIDC_ALG_NONE_KNOWN;
}

/* A base64url member of a JWK into buf; its length, or < 0. */
static int member_bytes(json_t *jwk, const char *name, uint8_t *buf, size_t cap)
{
	const char *s = json_string_value(json_object_get(jwk, name));

	if (!s)
		return -EINVAL;
	return oidc_b64url_decode(buf, cap, s, strlen(s));
}

static EVP_PKEY *pkey_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pkey = NULL;

	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		pkey = NULL;
	OSSL_PARAM_free(params);
	EVP_PKEY_CTX_free(ctx);
	return pkey;
}

static EVP_PKEY *rsa_key(json_t *jwk)
{
	uint8_t n[PARAM_BYTES_MAX], e[8];
	int nl = member_bytes(jwk, "n", n, sizeof(n)), el = member_bytes(jwk, "e", e, sizeof(e));
	BIGNUM *bn = NULL, *be = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY *pkey = NULL;

	if (nl <= 0 || el <= 0)
		return NULL;
	bn = BN_bin2bn(n, nl, NULL);
	be = BN_bin2bn(e, el, NULL);
	bld = OSSL_PARAM_BLD_new();
	if (!bn || !be || !bld)
		goto out;
	if (BN_num_bits(bn) < OIDC_RSA_BITS_MIN || BN_num_bits(bn) > OIDC_RSA_BITS_MAX ||
	    !BN_is_odd(be) || BN_is_one(be))
		goto out;
	if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
		goto out;
	pkey = pkey_fromdata("RSA", bld);
out:
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	return pkey;
}

static EVP_PKEY *ec_key(json_t *jwk)
{
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	uint8_t pt[65], x[33], y[33];
	OSSL_PARAM_BLD *bld = NULL;
	EVP_PKEY_CTX *check = NULL;
	EVP_PKEY *pkey = NULL;

	if (!crv || strcmp(crv, "P-256") != 0)
		return NULL;
	if (member_bytes(jwk, "x", x, sizeof(x)) != 32 ||
	    member_bytes(jwk, "y", y, sizeof(y)) != 32)
		return NULL;
	pt[0] = 0x04; /* uncompressed point, SEC 1 section 2.3.3 */
	memcpy(pt + 1, x, 32);
	memcpy(pt + 33, y, 32);
	bld = OSSL_PARAM_BLD_new();
	if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)))
		goto out;
	pkey = pkey_fromdata("EC", bld);
	if (!pkey)
		goto out;
	/* fromdata does not insist on the point being on the curve; this does. */
	check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!check || EVP_PKEY_public_check(check) != 1) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
out:
	EVP_PKEY_CTX_free(check);
	OSSL_PARAM_BLD_free(bld);
	return pkey;
}

static EVP_PKEY *okp_key(json_t *jwk)
{
	const char *crv = json_string_value(json_object_get(jwk, "crv"));
	uint8_t x[33];

	if (!crv || strcmp(crv, "Ed25519") != 0 || member_bytes(jwk, "x", x, sizeof(x)) != 32)
		return NULL;
	return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, 32);
}

/* 1: key added; 0: skipped; < 0: an error of the whole set. */
static int jwk_add(struct oidc_jwks *set, json_t *jwk, size_t index, char *err, size_t err_len)
{
	const char *kty = json_string_value(json_object_get(jwk, "kty"));
	const char *use = json_string_value(json_object_get(jwk, "use"));
	json_t *kidv = json_object_get(jwk, "kid"), *algv = json_object_get(jwk, "alg");
	json_t *ops = json_object_get(jwk, "key_ops");
	struct oidc_jwk *k = &set->keys[set->n];
	enum oidc_alg alg;
	EVP_PKEY *pkey;
	size_t i;

	if (!json_is_object(jwk) || !kty)
		return oidc_fail(err, err_len, -EINVAL, "JWKS key %zu is not a JWK (no kty)",
				 index);
	if ((use && strcmp(use, "sig") != 0) || json_object_get(jwk, "d"))
		return 0; /* an encryption key, or a private key published by mistake */
	if (ops) {
		bool verify = false;

		for (i = 0; json_is_array(ops) && i < json_array_size(ops); i++)
			verify |= json_is_string(json_array_get(ops, i)) &&
				  !strcmp(json_string_value(json_array_get(ops, i)), "verify");
		if (!verify)
			return 0;
	}
	if (!strcmp(kty, "RSA"))
		alg = OIDC_ALG_RS256;
	else if (!strcmp(kty, "EC"))
		alg = OIDC_ALG_ES256;
	else if (!strcmp(kty, "OKP"))
		alg = OIDC_ALG_EDDSA;
	else
		return 0;
	if (algv) {
		/* A key pinned to another alg (PS256, ES384, RSA-OAEP) is not for us. */
		if (!json_is_string(algv) || alg_parse(json_string_value(algv)) != alg)
			return 0;
	}
	if (kidv && (!json_is_string(kidv) || json_string_length(kidv) > OIDC_KID_MAX))
		return oidc_fail(err, err_len, -EINVAL,
				 "JWKS key %zu: kid is not a string of at most "
				 "%d bytes",
				 index, OIDC_KID_MAX);
	if (kidv) {
		for (i = 0; i < set->n; i++)
			if (!strcmp(set->keys[i].kid, json_string_value(kidv)))
				return oidc_fail(err, err_len, -EINVAL,
						 "JWKS: two keys with kid \"%s\"",
						 set->keys[i].kid);
	}
	pkey = alg == OIDC_ALG_RS256   ? rsa_key(jwk)
	       : alg == OIDC_ALG_ES256 ? ec_key(jwk)
				       : okp_key(jwk);
	if (!pkey)
		return 0;
	memset(k, 0, sizeof(*k));
	if (kidv)
		memcpy(k->kid, json_string_value(kidv), json_string_length(kidv));
	k->alg = alg;
	k->alg_pinned = algv != NULL;
	k->pkey = pkey;
	set->n++;
	return 1;
}

int oidc_jwks_parse(const char *text, size_t len, struct oidc_jwks **ret, char *err, size_t err_len)
{
	struct oidc_jwks *set = NULL;
	json_error_t jerr;
	json_t *doc = NULL, *keys;
	size_t i;
	int r;

	if (len > OIDC_JWKS_MAX)
		return oidc_fail(err, err_len, -EINVAL, "JWKS larger than %d bytes", OIDC_JWKS_MAX);
	doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!doc)
		return oidc_fail(err, err_len, -EINVAL, "JWKS is not JSON: %s (at byte %d)",
				 jerr.text, jerr.position);
	keys = json_object_get(doc, "keys");
	if (!json_is_array(keys)) {
		r = oidc_fail(err, err_len, -EINVAL, "JWKS has no \"keys\" array");
		goto out;
	}
	if (json_array_size(keys) > OIDC_JWKS_KEYS_MAX) {
		r = oidc_fail(err, err_len, -EINVAL, "JWKS has %zu keys (at most %d)",
			      json_array_size(keys), OIDC_JWKS_KEYS_MAX);
		goto out;
	}
	set = calloc(1, sizeof(*set));
	if (!set) {
		r = oidc_fail(err, err_len, -ENOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < json_array_size(keys); i++) {
		r = jwk_add(set, json_array_get(keys, i), i, err, err_len);
		if (r < 0)
			goto out;
		if (r == 0)
			set->skipped++;
	}
	if (set->n == 0) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "JWKS has no usable signing key (RSA, EC P-256, "
			      "Ed25519; %u skipped)",
			      set->skipped);
		goto out;
	}
	*ret = set;
	set = NULL;
	r = 0;
out:
	oidc_jwks_free(set);
	json_decref(doc);
	return r;
}

void oidc_jwks_free(struct oidc_jwks *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		EVP_PKEY_free(set->keys[i].pkey);
	free(set);
}

/* JWS ES256 signatures are r || s, 32 bytes each; OpenSSL wants DER. */
static int es256_der(const uint8_t *sig, uint8_t *der, size_t cap)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, 32, NULL), *s = BN_bin2bn(sig + 32, 32, NULL);
	unsigned char *p = der;
	int n = -1;

	if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(es);
		return -1;
	}
	if (i2d_ECDSA_SIG(es, NULL) <= (int)cap)
		n = i2d_ECDSA_SIG(es, &p);
	ECDSA_SIG_free(es);
	return n;
}

static bool signature_ok(const struct oidc_jwk *k, const char *input, size_t input_len,
			 const uint8_t *sig, size_t sig_len)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint8_t der[80];
	bool ok = false;

	if (!md)
		return false;
	switch (k->alg) {
	case OIDC_ALG_RS256:
		ok = sig_len == (size_t)EVP_PKEY_get_size(k->pkey) &&
		     EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
		     EVP_DigestVerify(md, sig, sig_len, (const uint8_t *)input, input_len) == 1;
		break;
	case OIDC_ALG_ES256: {
		int n = sig_len == 64 ? es256_der(sig, der, sizeof(der)) : -1;

		ok = n > 0 && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, k->pkey) == 1 &&
		     EVP_DigestVerify(md, der, (size_t)n, (const uint8_t *)input, input_len) == 1;
		break;
	}
	case OIDC_ALG_EDDSA:
		ok = sig_len == 64 && EVP_DigestVerifyInit(md, NULL, NULL, NULL, k->pkey) == 1 &&
		     EVP_DigestVerify(md, sig, sig_len, (const uint8_t *)input, input_len) == 1;
		break;
	default:
		break;
	}
	EVP_MD_CTX_free(md);
	return ok;
}

static const struct oidc_jwk *key_find(const struct oidc_jwks *set, const char *kid,
				       enum oidc_alg alg, bool *ret_wrong_type)
{
	const struct oidc_jwk *found = NULL;
	size_t i, of_type = 0;

	*ret_wrong_type = false;
	for (i = 0; i < set->n; i++) {
		if (kid && !strcmp(set->keys[i].kid, kid)) {
			*ret_wrong_type = set->keys[i].alg != alg;
			return *ret_wrong_type ? NULL : &set->keys[i];
		}
		if (!kid && set->keys[i].alg == alg) {
			found = &set->keys[i];
			of_type++;
		}
	}
	/* Without a kid, only an unambiguous key will do. */
	return of_type == 1 ? found : NULL;
}

int oidc_jws_verify(const char *jws, size_t len, const struct oidc_jwks *set, json_t **ret,
		    enum oidc_alg *ret_alg, char *err, size_t err_len)
{
	const char *dot1, *dot2, *p, *e = jws + len;
	uint8_t hbuf[OIDC_JWS_HEADER_MAX], sig[OIDC_RSA_BITS_MAX / 8];
	uint8_t *pbuf = NULL;
	json_t *hdr = NULL, *payload = NULL, *kidv;
	const struct oidc_jwk *k;
	const char *algs;
	json_error_t jerr;
	enum oidc_alg alg;
	bool wrong_type;
	int hl, pl, sl, r;

	if (len > OIDC_JWS_MAX)
		return oidc_fail(err, err_len, -EINVAL, "token larger than %d bytes", OIDC_JWS_MAX);
	dot1 = memchr(jws, '.', len);
	dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(e - dot1 - 1)) : NULL;
	if (!dot2 || memchr(dot2 + 1, '.', (size_t)(e - dot2 - 1)))
		return oidc_fail(err, err_len, -EINVAL, "token is not a compact JWS (three parts)");
	for (p = jws; p < e; p++)
		if (*p != '.' && b64url_value(*p) < 0)
			return oidc_fail(err, err_len, -EINVAL,
					 "token has a character outside base64url");
	hl = oidc_b64url_decode(hbuf, sizeof(hbuf), jws, (size_t)(dot1 - jws));
	if (hl < 0)
		return oidc_fail(err, err_len, -EINVAL,
				 "token header is not base64url or too long");
	hdr = json_loadb((const char *)hbuf, (size_t)hl, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(hdr)) {
		r = oidc_fail(err, err_len, -EINVAL, "token header is not a JSON object");
		goto out;
	}
	algs = json_string_value(json_object_get(hdr, "alg"));
	if (!algs) {
		r = oidc_fail(err, err_len, -EINVAL, "token header has no alg");
		goto out;
	}
	alg = alg_parse(algs);
	if (alg == OIDC_ALG_NONE_KNOWN) {
		char shown[24];

		snprintf(shown, sizeof(shown), "%s", algs);
		for (char *c = shown; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
		r = oidc_fail(err, err_len, -EINVAL,
			      "token alg \"%s\" refused (RS256, ES256, EdDSA only)", shown);
		goto out;
	}
	if (json_object_get(hdr, "crit")) {
		r = oidc_fail(err, err_len, -EINVAL, "token header has critical extensions (crit)");
		goto out;
	}
	kidv = json_object_get(hdr, "kid");
	if (kidv && (!json_is_string(kidv) || json_string_length(kidv) > OIDC_KID_MAX)) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "token kid is not a string of at most %d bytes", OIDC_KID_MAX);
		goto out;
	}
	k = key_find(set, kidv ? json_string_value(kidv) : NULL, alg, &wrong_type);
	if (!k && wrong_type) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "token alg %s does not fit the type of key \"%s\"", algs,
			      json_string_value(kidv));
		goto out;
	}
	if (!k) {
		char shown[OIDC_KID_MAX + 1] = "";

		if (kidv)
			snprintf(shown, sizeof(shown), "%s", json_string_value(kidv));
		for (char *c = shown; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f || *c == '"')
				*c = '?';
		r = oidc_fail(err, err_len, -ENOKEY,
			      kidv ? "no key with kid \"%s\" in the JWKS"
				   : "token has no kid and the JWKS has no single %s key",
			      kidv ? shown : algs);
		goto out;
	}
	sl = oidc_b64url_decode(sig, sizeof(sig), dot2 + 1, (size_t)(e - dot2 - 1));
	if (sl <= 0) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "token signature is not base64url or too long");
		goto out;
	}
	if (!signature_ok(k, jws, (size_t)(dot2 - jws), sig, (size_t)sl)) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "token signature does not verify (%s, kid \"%s\")", algs, k->kid);
		goto out;
	}
	pbuf = malloc((size_t)(dot2 - dot1));
	if (!pbuf) {
		r = oidc_fail(err, err_len, -ENOMEM, "out of memory");
		goto out;
	}
	pl = oidc_b64url_decode(pbuf, (size_t)(dot2 - dot1), dot1 + 1, (size_t)(dot2 - dot1 - 1));
	if (pl < 0) {
		r = oidc_fail(err, err_len, -EINVAL, "token payload is not base64url");
		goto out;
	}
	payload = json_loadb((const char *)pbuf, (size_t)pl, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(payload)) {
		r = oidc_fail(err, err_len, -EINVAL, "token payload is not a JSON object");
		goto out;
	}
	if (ret_alg)
		*ret_alg = alg;
	*ret = payload;
	payload = NULL;
	r = 0;
out:
	json_decref(payload);
	json_decref(hdr);
	free(pbuf);
	return r;
}
