/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OIDC_FLOW_H
#define TRELLIS_OIDC_FLOW_H

/*
 * The authorization-code flow with PKCE (OpenID Connect Core 1.0 section 3.1,
 * RFC 7636) as a relying party sees it, without I/O:
 *
 *   discovery document -> struct oidc_provider
 *   oidc_request_new: state, nonce, PKCE verifier (random) and the authorization URL
 *   the browser comes back to redirect_uri?code=..&state=..: oidc_callback_parse,
 *     then oidc_request_state_check against the request the login kept
 *   token endpoint's answer -> oidc_token_response_parse -> the ID token
 *   ID token (jose.h verifies it) -> oidc_claims_check -> struct oidc_identity
 *
 * Bounded everywhere; errors are negative errno with a sentence in err.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "oidc/jose.h"

#define OIDC_DISCOVERY_MAX (64 * 1024)
#define OIDC_TOKEN_RESPONSE_MAX (64 * 1024)
#define OIDC_URL_MAX 2048
#define OIDC_CALLBACK_MAX 4096
#define OIDC_CODE_MAX 1024
/* 32 random bytes, base64url: state, nonce and the PKCE verifier. */
#define OIDC_TOKEN_LEN 43
#define OIDC_EMAIL_MAX 254
#define OIDC_NAME_MAX 255
#define OIDC_SUB_MAX 255
#define OIDC_DOMAINS_MAX 32
#define OIDC_GROUPS_MAX 32
/* Allowed clock difference between us and the provider for exp, iat and nbf. */
#define OIDC_SKEW_NS (60ULL * 1000000000ULL)

enum oidc_client_auth {
	OIDC_AUTH_SECRET_BASIC = 0,
	OIDC_AUTH_SECRET_POST,
};

/* What discovery tells us about a provider. */
struct oidc_provider {
	char issuer[OIDC_URL_MAX];
	char authorization_endpoint[OIDC_URL_MAX];
	char token_endpoint[OIDC_URL_MAX];
	char jwks_uri[OIDC_URL_MAX];
	enum oidc_client_auth auth; /* the best method both sides support */
};

/* One login attempt: kept by the caller (keyed by login) until the callback. */
struct oidc_request {
	char state[OIDC_TOKEN_LEN + 1];
	char nonce[OIDC_TOKEN_LEN + 1];
	char verifier[OIDC_TOKEN_LEN + 1];
	char url[OIDC_URL_MAX + 1024]; /* the authorization URL to send the browser to */
};

/* What the login needs from a verified ID token. */
struct oidc_identity {
	char sub[OIDC_SUB_MAX + 1];
	char email[OIDC_EMAIL_MAX + 1];
	bool email_verified;
	char name[OIDC_NAME_MAX + 1]; /* "" when the provider gave none */
	/* The provider says a second factor was used: its amr claim lists "mfa" (RFC 8176). */
	bool mfa;
};

/* How ID tokens are judged (OIDC Core section 3.1.3.7). */
struct oidc_policy {
	const char *issuer;
	const char *client_id;
	bool allow_unverified_email;
	/* Lower-case domains; none: any. An email must end in "@" one of them. */
	const char *domains[OIDC_DOMAINS_MAX];
	size_t n_domains;
	/* The groups claim must hold one of these; none: not checked. */
	const char *groups_claim; /* "groups" when NULL */
	const char *groups[OIDC_GROUPS_MAX];
	size_t n_groups;
};

/*
 * Parses a discovery document fetched for issuer (OpenID Connect Discovery 1.0):
 * its issuer must be exactly ours, the endpoints https URLs, PKCE S256 offered (when
 * it lists methods) and one of client_secret_basic or client_secret_post.
 */
int oidc_discovery_parse(const char *text, size_t len, const char *issuer,
			 struct oidc_provider *ret, char *err, size_t err_len);

/* PKCE S256 (RFC 7636 section 4.2): challenge = base64url(SHA-256(verifier)). */
int oidc_pkce_challenge(const char *verifier, char ret[OIDC_TOKEN_LEN + 1]);
/* 32 bytes from OpenSSL's RAND, base64url: 0 or -EIO. */
int oidc_random_token(char ret[OIDC_TOKEN_LEN + 1]);

/* New state, nonce and verifier, and the authorization URL that carries them. */
int oidc_request_new(const struct oidc_provider *p, const char *client_id, const char *redirect_uri,
		     struct oidc_request *ret, char *err, size_t err_len);
/* Constant time: does the callback's state belong to this request? */
bool oidc_request_state_check(const struct oidc_request *req, const char *state);

/*
 * The callback's query string (after '?'): code and state, or the provider's error
 * ("access_denied: ..."), as -EACCES with err set. Codes and states are copied
 * percent-decoded; each must be printable ASCII.
 */
int oidc_callback_parse(const char *query, size_t len, char ret_code[OIDC_CODE_MAX + 1],
			char ret_state[OIDC_TOKEN_LEN + 1], char *err, size_t err_len);

/*
 * The token endpoint's JSON answer (RFC 6749 section 5.1, OIDC Core 3.1.3.3): the
 * id_token, malloc'd into *ret_id_token. An error answer is -EACCES with the
 * provider's error and description in err.
 */
int oidc_token_response_parse(const char *text, size_t len, char **ret_id_token, char *err,
			      size_t err_len);

/*
 * The claims of a verified ID token: iss, aud, azp, exp, iat, nbf (with
 * OIDC_SKEW_NS), nonce, sub, email, email_verified, domains and groups; amr for
 * ret->mfa. now_ns is
 * the wall clock (CLOCK_REALTIME) in nanoseconds.
 */
int oidc_claims_check(json_t *claims, const struct oidc_policy *pol, const char *nonce,
		      uint64_t now_ns, struct oidc_identity *ret, char *err, size_t err_len);

/*
 * "a.example, b.example" into pol->domains, pointing into buf (a copy the caller
 * keeps, changed in place to lower case). -EINVAL for an empty or oversized list.
 */
int oidc_policy_domains_set(struct oidc_policy *pol, char *buf, char *err, size_t err_len);
/*
 * "eng, Domain Users" into pol->groups (commas separate; names are kept as they are,
 * spaces around them trimmed), pointing into buf. -EINVAL for an empty or oversized list.
 */
int oidc_policy_groups_set(struct oidc_policy *pol, char *buf, char *err, size_t err_len);

#endif
