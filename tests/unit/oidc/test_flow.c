/* SPDX-License-Identifier: MIT */
/*
 * The relying party's flow without I/O (oidc/flow.c): PKCE against RFC 7636's
 * example, discovery documents, the authorization URL, callbacks, token answers, and
 * the ID token's claims: one good set, then each rule broken on its own.
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

#include "oidc/flow.h"

#define ISS "https://idp.example"
#define NOW 1800000000ULL
#define NS 1000000000ULL

static char err[OIDC_ERR_MAX];

static void test_pkce_rfc7636(void **state)
{
	char c[OIDC_TOKEN_LEN + 1], a[OIDC_TOKEN_LEN + 1], b[OIDC_TOKEN_LEN + 1];

	(void)state;
	assert_int_equal(oidc_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk", c), 0);
	assert_string_equal(c, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
	assert_int_equal(oidc_random_token(a), 0);
	assert_int_equal(oidc_random_token(b), 0);
	assert_int_equal(strlen(a), OIDC_TOKEN_LEN);
	assert_string_not_equal(a, b);
}

static const char discovery[] =
    "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":\"" ISS "/auth\","
    "\"token_endpoint\":\"" ISS "/token\",\"jwks_uri\":\"" ISS "/jwks\","
    "\"response_types_supported\":[\"code\"],"
    "\"code_challenge_methods_supported\":[\"plain\",\"S256\"]%s}";

static int disco(const char *extra, struct oidc_provider *p)
{
	char doc[2048];

	snprintf(doc, sizeof(doc), discovery, extra);
	err[0] = '\0';
	return oidc_discovery_parse(doc, strlen(doc), ISS, p, err, sizeof(err));
}

static void test_discovery(void **state)
{
	struct oidc_provider p;
	char *big;

	(void)state;
	assert_int_equal(disco("", &p), 0);
	assert_string_equal(p.token_endpoint, ISS "/token");
	assert_int_equal(p.auth, OIDC_AUTH_SECRET_BASIC);
	assert_int_equal(
	    disco(",\"token_endpoint_auth_methods_supported\":[\"client_secret_post\"]", &p), 0);
	assert_int_equal(p.auth, OIDC_AUTH_SECRET_POST);
	assert_int_equal(
	    disco(",\"token_endpoint_auth_methods_supported\":[\"private_key_jwt\"]", &p), -EINVAL);
	assert_int_equal(oidc_discovery_parse("{\"issuer\":\"https://evil.example\"}", 33, ISS, &p,
					      err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(disco(",\"x\":1", &p), 0);
	assert_int_equal(disco(",\"issuer\":1", &p), -EINVAL); /* duplicate key */
	{
		const char doc[] =
		    "{\"issuer\":\"https://evil.example\",\"authorization_endpoint\":"
		    "\"https://a\",\"token_endpoint\":\"https://a\",\"jwks_uri\":"
		    "\"https://a\"}";

		assert_int_equal(oidc_discovery_parse(doc, strlen(doc), ISS, &p, err, sizeof(err)),
				 -EINVAL);
		assert_non_null(strstr(err, "not the configured issuer"));
	}
	{
		const char doc[] = "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":"
				   "\"http://a\",\"token_endpoint\":\"https://a\",\"jwks_uri\":"
				   "\"https://a\"}";

		assert_int_equal(oidc_discovery_parse(doc, strlen(doc), ISS, &p, err, sizeof(err)),
				 -EINVAL);
		assert_non_null(strstr(err, "authorization_endpoint is not an https URL"));
	}
	{
		const char doc[] =
		    "{\"issuer\":\"" ISS "\",\"authorization_endpoint\":"
		    "\"https://a\",\"token_endpoint\":\"https://a\",\"jwks_uri\":"
		    "\"https://a\",\"code_challenge_methods_supported\":[\"plain\"]}";

		assert_int_equal(oidc_discovery_parse(doc, strlen(doc), ISS, &p, err, sizeof(err)),
				 -EINVAL);
		assert_non_null(strstr(err, "S256"));
	}
	big = calloc(1, OIDC_DISCOVERY_MAX + 2);
	memset(big, ' ', OIDC_DISCOVERY_MAX + 1);
	assert_int_equal(
	    oidc_discovery_parse(big, OIDC_DISCOVERY_MAX + 1, ISS, &p, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "larger"));
	free(big);
}

static void test_request_and_callback(void **state)
{
	struct oidc_provider p;
	struct oidc_request req;
	char code[OIDC_CODE_MAX + 1], st[OIDC_TOKEN_LEN + 1], q[512], ch[OIDC_TOKEN_LEN + 1];
	const char *prefix = ISS "/auth?response_type=code&scope=openid%20email%20profile"
				 "&client_id=trellis%20test&redirect_uri=https%3A%2F%2Fctl.example"
				 "%2Foidc%2Fcallback&state=";

	(void)state;
	assert_int_equal(disco("", &p), 0);
	assert_int_equal(oidc_request_new(&p, "trellis test", "https://ctl.example/oidc/callback",
					  &req, err, sizeof(err)),
			 0);
	assert_int_equal(strncmp(req.url, prefix, strlen(prefix)), 0);
	assert_non_null(strstr(req.url, req.state));
	assert_non_null(strstr(req.url, req.nonce));
	assert_null(strstr(req.url, req.verifier)); /* the verifier never leaves */
	oidc_pkce_challenge(req.verifier, ch);
	assert_non_null(strstr(req.url, ch));
	assert_non_null(strstr(req.url, "&code_challenge_method=S256"));

	snprintf(q, sizeof(q), "code=a%%2Bb+c&state=%s&iss=x", req.state);
	assert_int_equal(oidc_callback_parse(q, strlen(q), code, st, err, sizeof(err)), -EINVAL);
	snprintf(q, sizeof(q), "code=a%%2Bb&state=%s&iss=x", req.state);
	assert_int_equal(oidc_callback_parse(q, strlen(q), code, st, err, sizeof(err)), 0);
	assert_string_equal(code, "a+b");
	assert_true(oidc_request_state_check(&req, st));
	st[3] ^= 1;
	assert_false(oidc_request_state_check(&req, st));
	assert_false(oidc_request_state_check(&req, ""));

	assert_int_equal(oidc_callback_parse("error=access_denied&error_description=no+way", 44,
					     code, st, err, sizeof(err)),
			 -EACCES);
	assert_string_equal(err, "the identity provider refused: access_denied: no way");
	assert_int_equal(
	    oidc_callback_parse("code=1&code=2&state=x", 21, code, st, err, sizeof(err)), -EINVAL);
	assert_int_equal(oidc_callback_parse("state=x", 7, code, st, err, sizeof(err)), -EINVAL);
	assert_int_equal(oidc_callback_parse("code=%00&state=x", 16, code, st, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(oidc_callback_parse("code=%4&state=x", 15, code, st, err, sizeof(err)),
			 -EINVAL);
	/* A state longer than ours can never match: refused while parsing. */
	memset(q, 'a', 100);
	memcpy(q, "code=1&state=", 13);
	assert_int_equal(oidc_callback_parse(q, 100, code, st, err, sizeof(err)), -EINVAL);
}

static void test_token_response(void **state)
{
	char *tok = NULL;
	const char ok[] =
	    "{\"access_token\":\"x\",\"token_type\":\"bearer\",\"id_token\":\"a.b.c\"}";
	const char e[] = "{\"error\":\"invalid_grant\",\"error_description\":\"grant request is "
			 "invalid\"}";

	(void)state;
	assert_int_equal(oidc_token_response_parse(ok, strlen(ok), &tok, err, sizeof(err)), 0);
	assert_string_equal(tok, "a.b.c");
	free(tok);
	assert_int_equal(oidc_token_response_parse(e, strlen(e), &tok, err, sizeof(err)), -EACCES);
	assert_string_equal(err, "token endpoint refused: invalid_grant: grant request is invalid");
	assert_int_equal(
	    oidc_token_response_parse("{\"token_type\":\"Bearer\"}", 23, &tok, err, sizeof(err)),
	    -EINVAL);
	assert_int_equal(oidc_token_response_parse("{\"token_type\":\"mac\",\"id_token\":\"a\"}",
						   35, &tok, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(oidc_token_response_parse("<html>", 6, &tok, err, sizeof(err)), -EINVAL);
}

static json_t *good_claims(void)
{
	return json_pack("{ss ss sI sI ss ss ss sb ss s[ss]}", "iss", ISS, "aud", "trellis", "exp",
			 (json_int_t)(NOW + 300), "iat", (json_int_t)NOW, "nonce", "N1", "sub",
			 "u-1", "email", "alice@example.com", "email_verified", 1, "name",
			 "Alice\x01", "groups", "staff", "eng");
}

static struct oidc_policy pol = {.issuer = ISS, .client_id = "trellis"};

static int check(json_t *c, uint64_t now_s, struct oidc_identity *id)
{
	struct oidc_identity tmp;
	int r;

	err[0] = '\0';
	r = oidc_claims_check(c, &pol, "N1", now_s * NS, id ? id : &tmp, err, sizeof(err));
	json_decref(c);
	return r;
}

/* good_claims with one member replaced (v NULL: removed), checked at NOW. */
static int with(const char *name, json_t *v)
{
	json_t *c = good_claims();

	if (v)
		json_object_set_new(c, name, v);
	else
		json_object_del(c, name);
	return check(c, NOW, NULL);
}

static void test_claims(void **state)
{
	struct oidc_identity id;
	char dom[] = "Example.COM, example.net";

	(void)state;
	assert_int_equal(check(good_claims(), NOW, &id), 0);
	assert_string_equal(id.email, "alice@example.com");
	assert_string_equal(id.sub, "u-1");
	assert_string_equal(id.name, "Alice?");
	assert_true(id.email_verified);
	assert_false(id.mfa);
	/* a second factor: the provider's amr says "mfa" (RFC 8176); methods alone do not */
	{
		json_t *c = good_claims();

		json_object_set_new(c, "amr", json_pack("[ss]", "pwd", "mfa"));
		assert_int_equal(check(c, NOW, &id), 0);
		assert_true(id.mfa);
		c = good_claims();
		json_object_set_new(c, "amr", json_pack("[ss]", "pwd", "otp"));
		assert_int_equal(check(c, NOW, &id), 0);
		assert_false(id.mfa);
		c = good_claims();
		json_object_set_new(c, "amr", json_string("mfa"));
		assert_int_equal(check(c, NOW, &id), 0);
		assert_false(id.mfa);
	}
	/* exp, with the skew either side */
	assert_int_equal(check(good_claims(), NOW + 300 + 59, NULL), 0);
	assert_int_equal(check(good_claims(), NOW + 300 + 61, NULL), -EINVAL);
	assert_non_null(strstr(err, "expired"));
	assert_int_equal(check(good_claims(), NOW - 59, NULL), 0);
	assert_int_equal(check(good_claims(), NOW - 61, NULL), -EINVAL);
	assert_non_null(strstr(err, "future"));

	assert_int_equal(with("iss", json_string(ISS "/")), -EINVAL);
	assert_int_equal(with("iss", NULL), -EINVAL);
	assert_int_equal(with("aud", json_string("other")), -EINVAL);
	assert_non_null(strstr(err, "aud"));
	assert_int_equal(with("aud", json_pack("[s]", "trellis")), 0);
	/* several audiences need azp = us */
	assert_int_equal(with("aud", json_pack("[ss]", "other", "trellis")), -EINVAL);
	{
		json_t *c = good_claims();

		json_object_set_new(c, "aud", json_pack("[ss]", "other", "trellis"));
		json_object_set_new(c, "azp", json_string("trellis"));
		assert_int_equal(check(c, NOW, NULL), 0);
	}
	assert_int_equal(with("azp", json_string("other")), -EINVAL);
	assert_int_equal(with("exp", NULL), -EINVAL);
	assert_int_equal(with("exp", json_string("soon")), -EINVAL);
	assert_int_equal(with("iat", NULL), -EINVAL);
	assert_int_equal(with("nbf", json_integer((json_int_t)NOW + 120)), -EINVAL);
	assert_int_equal(with("nbf", json_integer((json_int_t)NOW)), 0);
	assert_int_equal(with("nonce", json_string("N2")), -EINVAL);
	assert_non_null(strstr(err, "nonce"));
	assert_int_equal(with("nonce", NULL), -EINVAL);
	assert_int_equal(with("sub", json_string("")), -EINVAL);
	assert_int_equal(with("email", NULL), -EINVAL);
	assert_int_equal(with("email", json_string("alice")), -EINVAL);
	assert_int_equal(with("email", json_string("a@b@c")), -EINVAL);
	/* unverified addresses, unless allowed */
	assert_int_equal(with("email_verified", json_false()), -EACCES);
	assert_non_null(strstr(err, "has not verified alice@example.com"));
	assert_int_equal(with("email_verified", json_string("true")), -EACCES);
	assert_int_equal(with("email_verified", NULL), -EACCES);
	pol.allow_unverified_email = true;
	assert_int_equal(with("email_verified", json_false()), 0);
	pol.allow_unverified_email = false;
	/* domains */
	assert_int_equal(oidc_policy_domains_set(&pol, dom, err, sizeof(err)), 0);
	assert_int_equal(pol.n_domains, 2);
	assert_int_equal(check(good_claims(), NOW, NULL), 0);
	assert_int_equal(with("email", json_string("bob@example.org")), -EACCES);
	assert_non_null(strstr(err, "allowed domain"));
	assert_int_equal(with("email", json_string("bob@sub.example.com")), -EACCES);
	assert_int_equal(with("email", json_string("bob@EXAMPLE.net")), 0);
	pol.n_domains = 0;
	/* groups */
	pol.groups[0] = "admins";
	pol.n_groups = 1;
	assert_int_equal(check(good_claims(), NOW, NULL), -EACCES);
	pol.groups[1] = "eng";
	pol.n_groups = 2;
	assert_int_equal(check(good_claims(), NOW, NULL), 0);
	assert_int_equal(with("groups", json_string("eng")), -EACCES);
	/* another claim names them */
	pol.groups_claim = "roles";
	assert_int_equal(check(good_claims(), NOW, NULL), -EACCES);
	assert_non_null(strstr(err, "roles claim"));
	assert_int_equal(with("roles", json_pack("[s]", "eng")), 0);
	pol.groups_claim = NULL;
	pol.n_groups = 0;
}

static void test_groups_list(void **state)
{
	struct oidc_policy p = {0};
	char a[] = " eng , Domain Users,,", b[] = " , ", c[] = "ok,a\x01b", d[400];

	(void)state;
	assert_int_equal(oidc_policy_groups_set(&p, a, err, sizeof(err)), 0);
	assert_int_equal(p.n_groups, 2);
	assert_string_equal(p.groups[0], "eng");
	assert_string_equal(p.groups[1], "Domain Users");
	assert_int_equal(oidc_policy_groups_set(&p, b, err, sizeof(err)), -EINVAL);
	assert_int_equal(oidc_policy_groups_set(&p, c, err, sizeof(err)), -EINVAL);
	d[0] = '\0';
	for (int i = 0; i < OIDC_GROUPS_MAX + 1; i++)
		strcat(d, "g,");
	assert_int_equal(oidc_policy_groups_set(&p, d, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "more than"));
}

static void test_domains_list(void **state)
{
	struct oidc_policy p = {0};
	char a[] = " , ", b[] = "a@b", c[200];

	(void)state;
	assert_int_equal(oidc_policy_domains_set(&p, a, err, sizeof(err)), -EINVAL);
	assert_int_equal(oidc_policy_domains_set(&p, b, err, sizeof(err)), -EINVAL);
	c[0] = '\0';
	for (int i = 0; i < OIDC_DOMAINS_MAX + 1; i++)
		strcat(c, "d.x,");
	assert_int_equal(oidc_policy_domains_set(&p, c, err, sizeof(err)), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pkce_rfc7636),
	    cmocka_unit_test(test_discovery),
	    cmocka_unit_test(test_request_and_callback),
	    cmocka_unit_test(test_token_response),
	    cmocka_unit_test(test_claims),
	    cmocka_unit_test(test_domains_list),
	    cmocka_unit_test(test_groups_list),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
