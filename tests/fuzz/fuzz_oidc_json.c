/* SPDX-License-Identifier: MIT */
/*
 * What an identity provider (or a browser) sends the relying party besides the ID
 * token (oidc/jose.c, oidc/flow.c): the first byte picks the parser, the rest is its
 * input: 0 a discovery document, 1 a JWK set, 2 a token endpoint answer, 3 the
 * callback's query string. Accepts or refuses with a message, never crashes.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oidc/flow.h"
#include "oidc/jose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[OIDC_ERR_MAX] = "", code[OIDC_CODE_MAX + 1], state[OIDC_TOKEN_LEN + 1];
	const char *in = (const char *)data + 1;
	struct oidc_provider p;
	struct oidc_jwks *set = NULL;
	char *tok = NULL;
	size_t n = size - 1;
	int r = -1;

	if (size < 1)
		return 0;
	switch (data[0] & 3) {
	case 0:
		r = oidc_discovery_parse(in, n, "https://idp.example", &p, err, sizeof(err));
		if (r == 0)
			assert(!strncmp(p.jwks_uri, "https://", 8) &&
			       !strcmp(p.issuer, "https://idp.example"));
		break;
	case 1:
		r = oidc_jwks_parse(in, n, &set, err, sizeof(err));
		if (r == 0)
			assert(set->n > 0 && set->n <= OIDC_JWKS_KEYS_MAX);
		oidc_jwks_free(set);
		break;
	case 2:
		r = oidc_token_response_parse(in, n, &tok, err, sizeof(err));
		if (r == 0)
			assert(strlen(tok) <= OIDC_JWS_MAX);
		free(tok);
		break;
	case 3: {
		/* The query arrives NUL-terminated from the HTTP parser. */
		char *q = strndup(in, n);

		r = oidc_callback_parse(q, strlen(q), code, state, err, sizeof(err));
		if (r == 0)
			assert(code[0] && strlen(state) <= OIDC_TOKEN_LEN);
		free(q);
		break;
	}
	}
	assert(r == 0 || err[0]);
	return 0;
}
