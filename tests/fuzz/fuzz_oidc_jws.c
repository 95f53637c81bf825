/* SPDX-License-Identifier: MIT */
/*
 * The ID token's way in (oidc/jose.c, oidc/flow.c) on any bytes: a compact JWS
 * verified against a fixed JWK set (RFC 8037's Ed25519 key and an EC P-256 key; the
 * seeds are signed with them, so mutations reach the payload), and any bytes that
 * parse as JSON put through the claim checks. Accepts or refuses, never crashes; what
 * it accepts satisfies the rules.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oidc/flow.h"
#include "oidc/jose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char jwks_text[] = "{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"kid\":\"ed\","
				"\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"},"
				"{\"kid\":\"ec\",\"kty\":\"EC\",\"crv\":\"P-256\","
				"\"x\":\"tTtWZiqa2vgTUm8oaNXR48RThh6z1fGjrWd5AT0uWN8\","
				"\"y\":\"SfW9nIwCzBSe1hNkSUR3wSJZ7Ign6hcfNwGld4Bmn5M\"}]}";

static struct oidc_jwks *jwks;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct oidc_policy pol = {.issuer = "https://idp.example",
					       .client_id = "trellis",
					       .groups = {"eng"},
					       .n_groups = 1};
	char err[OIDC_ERR_MAX];
	struct oidc_identity id;
	json_t *claims = NULL;
	enum oidc_alg alg;

	if (!jwks && oidc_jwks_parse(jwks_text, strlen(jwks_text), &jwks, err, sizeof(err)) < 0)
		abort();
	if (oidc_jws_verify((const char *)data, size, jwks, &claims, &alg, err, sizeof(err)) == 0) {
		assert(json_is_object(claims));
		assert(alg == OIDC_ALG_EDDSA || alg == OIDC_ALG_ES256);
		json_decref(claims);
	} else {
		assert(err[0]);
	}
	claims = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
	if (json_is_object(claims) &&
	    oidc_claims_check(claims, &pol, "N1", 1800000000ULL * 1000000000ULL, &id, err,
			      sizeof(err)) == 0) {
		assert(id.email_verified && strchr(id.email, '@') && id.sub[0]);
	}
	json_decref(claims);
	return 0;
}
