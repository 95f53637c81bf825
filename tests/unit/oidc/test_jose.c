/* SPDX-License-Identifier: MIT */
/*
 * JOSE (oidc/jose.c): base64url against RFC 4648's vectors and its strictness; JWK
 * sets of every key type we take and the ones we skip or refuse; JWS verification
 * for RS256, ES256 and EdDSA (keys made here, plus RFC 8037's Ed25519 example), and
 * every refusal: alg none, HMAC, unknown kid, a key of the wrong type, tampering,
 * crit, malformed and oversized tokens.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jwt_sign.h"
#include "oidc/jose.h"

static char err[OIDC_ERR_MAX];

static void test_b64url(void **state)
{
	static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *const enc[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	static const char *const bad[] = {"Zh", "Zm9=", "a", "Zm9v+", "Zm/v", "Zm9v\n"};
	uint8_t out[16];
	char s[16];

	(void)state;
	for (size_t i = 0; i < 7; i++) {
		assert_int_equal(
		    oidc_b64url_encode(s, sizeof(s), (const uint8_t *)plain[i], strlen(plain[i])),
		    strlen(enc[i]));
		assert_string_equal(s, enc[i]);
		assert_int_equal(oidc_b64url_decode(out, sizeof(out), enc[i], strlen(enc[i])),
				 strlen(plain[i]));
		assert_memory_equal(out, plain[i], strlen(plain[i]));
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(oidc_b64url_decode(out, sizeof(out), bad[i], strlen(bad[i])),
				 -EINVAL);
	assert_int_equal(oidc_b64url_decode(out, 5, "Zm9vYmFy", 8), -ENOBUFS);
	assert_int_equal(oidc_b64url_encode(s, 8, (const uint8_t *)"foobar", 6), -ENOBUFS);
}

struct keys {
	EVP_PKEY *rsa, *ec, *ed;
	struct oidc_jwks *set;
};

static int jwks_of(json_t *keys, struct oidc_jwks **ret)
{
	json_t *doc = json_pack("{so}", "keys", keys);
	char *s = json_dumps(doc, JSON_COMPACT);
	int r;

	err[0] = '\0';
	r = oidc_jwks_parse(s, strlen(s), ret, err, sizeof(err));
	free(s);
	json_decref(doc);
	return r;
}

static int setup(void **state)
{
	struct keys *k = calloc(1, sizeof(*k));

	k->rsa = tkey_new(OIDC_ALG_RS256);
	k->ec = tkey_new(OIDC_ALG_ES256);
	k->ed = tkey_new(OIDC_ALG_EDDSA);
	assert_int_equal(
	    jwks_of(json_pack("[ooo{ss}{ssssss}]", tkey_jwk(k->rsa, OIDC_ALG_RS256, "r1"),
			      tkey_jwk(k->ec, OIDC_ALG_ES256, "e1"),
			      tkey_jwk(k->ed, OIDC_ALG_EDDSA, "d1"), "kty", "oct", "kty", "RSA",
			      "use", "enc", "kid", "x"),
		    &k->set),
	    0);
	assert_int_equal(k->set->n, 3);
	assert_int_equal(k->set->skipped, 2);
	*state = k;
	return 0;
}

static int teardown(void **state)
{
	struct keys *k = *state;

	EVP_PKEY_free(k->rsa);
	EVP_PKEY_free(k->ec);
	EVP_PKEY_free(k->ed);
	oidc_jwks_free(k->set);
	free(k);
	return 0;
}

static int verify(const char *tok, const struct oidc_jwks *set, json_t **ret)
{
	json_t *p = NULL;
	int r;

	err[0] = '\0';
	r = oidc_jws_verify(tok, strlen(tok), set, &p, NULL, err, sizeof(err));
	if (ret)
		*ret = p;
	else
		json_decref(p);
	return r;
}

/* Signs {"sub": "alice"} with key under header (alg, kid) and verifies it. */
static int sign_verify(struct keys *k, EVP_PKEY *key, enum oidc_alg alg, const char *algname,
		       const char *kid)
{
	json_t *h = theader(algname, kid), *p = json_pack("{ss}", "sub", "alice"), *got = NULL;
	char *tok = tjws_sign(key, alg, h, p);
	int r = verify(tok, k->set, &got);

	if (r == 0)
		assert_string_equal(json_string_value(json_object_get(got, "sub")), "alice");
	json_decref(got);
	json_decref(h);
	json_decref(p);
	free(tok);
	return r;
}

static void test_verify_each_alg(void **state)
{
	struct keys *k = *state;

	assert_int_equal(sign_verify(k, k->rsa, OIDC_ALG_RS256, "RS256", "r1"), 0);
	assert_int_equal(sign_verify(k, k->ec, OIDC_ALG_ES256, "ES256", "e1"), 0);
	assert_int_equal(sign_verify(k, k->ed, OIDC_ALG_EDDSA, "EdDSA", "d1"), 0);
	/* Without a kid, the one key of the type. */
	assert_int_equal(sign_verify(k, k->ec, OIDC_ALG_ES256, "ES256", NULL), 0);
}

static void test_refusals(void **state)
{
	struct keys *k = *state;
	EVP_PKEY *other = tkey_new(OIDC_ALG_RS256);

	/* alg none, with or without a signature */
	assert_int_equal(sign_verify(k, NULL, OIDC_ALG_RS256, "none", "r1"), -EINVAL);
	assert_non_null(strstr(err, "\"none\" refused"));
	assert_int_equal(sign_verify(k, NULL, OIDC_ALG_RS256, "HS256", "r1"), -EINVAL);
	assert_non_null(strstr(err, "HS256"));
	assert_int_equal(sign_verify(k, k->rsa, OIDC_ALG_RS256, "RS512", "r1"), -EINVAL);
	/* unknown kid: the caller may refetch */
	assert_int_equal(sign_verify(k, k->rsa, OIDC_ALG_RS256, "RS256", "r2"), -ENOKEY);
	assert_non_null(strstr(err, "\"r2\""));
	/* the right kid, the wrong key: a forgery */
	assert_int_equal(sign_verify(k, other, OIDC_ALG_RS256, "RS256", "r1"), -EINVAL);
	assert_non_null(strstr(err, "does not verify"));
	/* the kid of an EC key with an RSA alg (key confusion) */
	assert_int_equal(sign_verify(k, k->rsa, OIDC_ALG_RS256, "RS256", "e1"), -EINVAL);
	assert_non_null(strstr(err, "does not fit"));
	assert_int_equal(sign_verify(k, k->ed, OIDC_ALG_EDDSA, "ES256", "e1"), -EINVAL);
	EVP_PKEY_free(other);
}

static void test_tampering(void **state)
{
	struct keys *k = *state;
	json_t *h = theader("RS256", "r1"), *p = json_pack("{ss}", "sub", "alice");
	char *tok = tjws_sign(k->rsa, OIDC_ALG_RS256, h, p), *dot = strchr(tok, '.'), *big;
	json_t *crit = json_pack("{ss ss s[s]}", "alg", "EdDSA", "kid", "d1", "crit", "exp");
	char *tc = tjws_sign(k->ed, OIDC_ALG_EDDSA, crit, p);
	size_t n = strlen(tok);

	assert_int_equal(verify(tok, k->set, NULL), 0);
	dot[2] ^= 1; /* one payload character */
	assert_int_equal(verify(tok, k->set, NULL), -EINVAL);
	dot[2] ^= 1;
	tok[n - 2] = tok[n - 2] == 'A' ? 'B' : 'A';
	assert_int_equal(verify(tok, k->set, NULL), -EINVAL);
	assert_int_equal(verify("a.b", k->set, NULL), -EINVAL);
	assert_int_equal(verify("a.b.c.d", k->set, NULL), -EINVAL);
	assert_int_equal(verify("..", k->set, NULL), -EINVAL);
	assert_int_equal(verify("e30.e30.!!", k->set, NULL), -EINVAL);
	assert_int_equal(verify(tc, k->set, NULL), -EINVAL);
	assert_non_null(strstr(err, "crit"));
	big = malloc(OIDC_JWS_MAX + 2);
	memset(big, 'A', OIDC_JWS_MAX + 1);
	big[OIDC_JWS_MAX + 1] = '\0';
	assert_int_equal(verify(big, k->set, NULL), -EINVAL);
	assert_non_null(strstr(err, "larger"));
	free(big);
	free(tok);
	free(tc);
	json_decref(h);
	json_decref(crit);
	json_decref(p);
}

/* RFC 8037 appendix A.4: verifies, and then fails on its payload (not a JSON object). */
static void test_rfc8037_ed25519(void **state)
{
	struct oidc_jwks *set = NULL;

	(void)state;
	assert_int_equal(jwks_of(json_pack("[{ssssss}]", "kty", "OKP", "crv", "Ed25519", "x",
					   "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"),
				 &set),
			 0);
	assert_int_equal(verify("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
				"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5B"
				"hVsPt9g7sVvpAr_MuM0KAg",
				set, NULL),
			 -EINVAL);
	assert_non_null(strstr(err, "payload is not a JSON object"));
	assert_int_equal(verify("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
				"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5B"
				"hVsPt9g7sVvpAr_MuM0KBg",
				set, NULL),
			 -EINVAL);
	assert_non_null(strstr(err, "does not verify"));
	oidc_jwks_free(set);
}

static void test_jwks_refusals(void **state)
{
	struct keys *k = *state;
	struct oidc_jwks *set = NULL;
	json_t *many = json_array(), *ec = tkey_jwk(k->ec, OIDC_ALG_ES256, "e1");
	EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	const char *bad[] = {"",
			     "[]",
			     "{}",
			     "{\"keys\":{}}",
			     "{\"keys\":[1]}",
			     "{\"keys\":[]}",
			     "{\"keys\":[{\"kty\":\"oct\",\"k\":\"AAAA\"}]}",
			     "{\"keys\":[],\"keys\":[]}"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(oidc_jwks_parse(bad[i], strlen(bad[i]), &set, err, sizeof(err)),
				 -EINVAL);
		assert_true(err[0]);
	}
	for (int i = 0; i <= OIDC_JWKS_KEYS_MAX; i++)
		json_array_append(many, ec);
	assert_int_equal(jwks_of(many, &set), -EINVAL);
	assert_non_null(strstr(err, "keys (at most"));
	assert_int_equal(jwks_of(json_pack("[OO]", ec, ec), &set), -EINVAL);
	assert_non_null(strstr(err, "two keys"));
	/* A point off the curve and a 1024-bit modulus are skipped, leaving nothing. */
	json_object_set_new(ec, "y", json_string("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"));
	assert_int_equal(jwks_of(json_pack("[Oo]", ec, tkey_jwk(small, OIDC_ALG_RS256, "s")), &set),
			 -EINVAL);
	assert_non_null(strstr(err, "no usable"));
	/* A key pinned to another alg is not used for ours. */
	json_decref(ec);
	ec = tkey_jwk(k->ec, OIDC_ALG_ES256, "e1");
	json_object_set_new(ec, "alg", json_string("ES384"));
	assert_int_equal(jwks_of(json_pack("[O]", ec), &set), -EINVAL);
	json_object_set_new(ec, "alg", json_string("ES256"));
	assert_int_equal(jwks_of(json_pack("[O]", ec), &set), 0);
	assert_true(set->keys[0].alg_pinned);
	oidc_jwks_free(set);
	json_decref(ec);
	EVP_PKEY_free(small);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_b64url),
	    cmocka_unit_test_setup_teardown(test_verify_each_alg, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tampering, setup, teardown),
	    cmocka_unit_test(test_rfc8037_ed25519),
	    cmocka_unit_test_setup_teardown(test_jwks_refusals, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
