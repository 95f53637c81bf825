// SPDX-License-Identifier: MIT
/*
 * The relying party's side of the authorization-code flow (flow.h): discovery,
 * the authorization request, the callback, the token answer and the ID token's
 * claims. Nothing here does I/O or reads a clock.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "base/util.h"
#include "oidc/flow.h"

#define NS_PER_S 1000000000ULL

/* Printable copy for messages: at most 60 bytes, control characters as '?'. */
static const char *shown(const char *s, char buf[64])
{
	size_t i;

	for (i = 0; s[i] && i < 60; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	if (s[i])
		strcpy(buf + 57, "...");
	return buf;
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* An https URL without spaces or control characters that fits OIDC_URL_MAX. */
static int url_member(json_t *doc, const char *name, char *dst, char *err, size_t err_len)
{
	json_t *v = json_object_get(doc, name);
	const char *s = json_string_value(v);

	if (!s)
		return oidc_fail(err, err_len, -EINVAL, "discovery: no %s", name);
	if (json_string_length(v) >= OIDC_URL_MAX || strncmp(s, "https://", 8) != 0 || !s[8] ||
	    !printable(s))
		return oidc_fail(err, err_len, -EINVAL,
				 "discovery: %s is not an https URL of at most "
				 "%d bytes",
				 name, OIDC_URL_MAX - 1);
	memcpy(dst, s, json_string_length(v) + 1);
	return 0;
}

static bool array_has(json_t *arr, const char *s)
{
	for (size_t i = 0; i < json_array_size(arr); i++)
		if (json_is_string(json_array_get(arr, i)) &&
		    !strcmp(json_string_value(json_array_get(arr, i)), s))
			return true;
	return false;
}

int oidc_discovery_parse(const char *text, size_t len, const char *issuer,
			 struct oidc_provider *ret, char *err, size_t err_len)
{
	struct oidc_provider p = {.auth = OIDC_AUTH_SECRET_BASIC};
	json_t *doc, *v;
	json_error_t jerr;
	char show[64];
	int r;

	if (len > OIDC_DISCOVERY_MAX)
		return oidc_fail(err, err_len, -EINVAL, "discovery document larger than %d bytes",
				 OIDC_DISCOVERY_MAX);
	doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return oidc_fail(err, err_len, -EINVAL,
				 "discovery document is not a JSON object%s%s", doc ? "" : ": ",
				 doc ? "" : jerr.text);
	}
	if ((r = url_member(doc, "issuer", p.issuer, err, err_len)) < 0 ||
	    (r = url_member(doc, "authorization_endpoint", p.authorization_endpoint, err,
			    err_len)) < 0 ||
	    (r = url_member(doc, "token_endpoint", p.token_endpoint, err, err_len)) < 0 ||
	    (r = url_member(doc, "jwks_uri", p.jwks_uri, err, err_len)) < 0)
		goto out;
	/* Discovery section 4.3: a document for another issuer is not this provider's. */
	if (strcmp(p.issuer, issuer) != 0) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "discovery: issuer is \"%s\", not the configured "
			      "issuer",
			      shown(p.issuer, show));
		goto out;
	}
	v = json_object_get(doc, "response_types_supported");
	if (json_is_array(v) && !array_has(v, "code")) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "discovery: the provider does not offer the "
			      "authorization-code flow (response type code)");
		goto out;
	}
	v = json_object_get(doc, "code_challenge_methods_supported");
	if (json_is_array(v) && !array_has(v, "S256")) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "discovery: the provider does not offer PKCE S256");
		goto out;
	}
	/* The default, when the document is silent, is client_secret_basic (section 3). */
	v = json_object_get(doc, "token_endpoint_auth_methods_supported");
	if (json_is_array(v) && !array_has(v, "client_secret_basic")) {
		if (!array_has(v, "client_secret_post")) {
			r = oidc_fail(err, err_len, -EINVAL,
				      "discovery: the token endpoint takes neither "
				      "client_secret_basic nor client_secret_post");
			goto out;
		}
		p.auth = OIDC_AUTH_SECRET_POST;
	}
	*ret = p;
	r = 0;
out:
	json_decref(doc);
	return r;
}

int oidc_pkce_challenge(const char *verifier, char ret[OIDC_TOKEN_LEN + 1])
{
	uint8_t md[SHA256_DIGEST_LENGTH];

	if (!SHA256((const uint8_t *)verifier, strlen(verifier), md))
		return -EIO;
	return oidc_b64url_encode(ret, OIDC_TOKEN_LEN + 1, md, sizeof(md)) < 0 ? -ENOBUFS : 0;
}

int oidc_random_token(char ret[OIDC_TOKEN_LEN + 1])
{
	uint8_t b[32];
	int r = RAND_bytes(b, sizeof(b)) == 1 ? 0 : -EIO;

	if (r == 0)
		oidc_b64url_encode(ret, OIDC_TOKEN_LEN + 1, b, sizeof(b));
	OPENSSL_cleanse(b, sizeof(b));
	return r;
}

/* Appends s percent-encoded (RFC 3986 unreserved kept) at *o; false when full. */
static bool put_enc(char *out, size_t cap, size_t *o, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';

		if (*o + (keep ? 1 : 3) >= cap)
			return false;
		if (keep) {
			out[(*o)++] = (char)c;
		} else {
			out[(*o)++] = '%';
			out[(*o)++] = hex[c >> 4];
			out[(*o)++] = hex[c & 15];
		}
	}
	out[*o] = '\0';
	return true;
}

static bool put_raw(char *out, size_t cap, size_t *o, const char *s)
{
	size_t n = strlen(s);

	if (*o + n >= cap)
		return false;
	memcpy(out + *o, s, n + 1);
	*o += n;
	return true;
}

int oidc_request_new(const struct oidc_provider *p, const char *client_id, const char *redirect_uri,
		     struct oidc_request *ret, char *err, size_t err_len)
{
	struct oidc_request q;
	char challenge[OIDC_TOKEN_LEN + 1];
	size_t o = 0, cap = sizeof(q.url);
	bool ok;
	int r;

	memset(&q, 0, sizeof(q));
	if (oidc_random_token(q.state) < 0 || oidc_random_token(q.nonce) < 0 ||
	    oidc_random_token(q.verifier) < 0 || oidc_pkce_challenge(q.verifier, challenge) < 0) {
		r = oidc_fail(err, err_len, -EIO, "no random bytes for state, nonce and PKCE");
		goto out;
	}
	ok = put_raw(q.url, cap, &o, p->authorization_endpoint) &&
	     put_raw(q.url, cap, &o, strchr(p->authorization_endpoint, '?') ? "&" : "?") &&
	     put_raw(q.url, cap, &o,
		     "response_type=code&scope=openid%20email%20profile"
		     "&client_id=") &&
	     put_enc(q.url, cap, &o, client_id) && put_raw(q.url, cap, &o, "&redirect_uri=") &&
	     put_enc(q.url, cap, &o, redirect_uri) && put_raw(q.url, cap, &o, "&state=") &&
	     put_raw(q.url, cap, &o, q.state) && put_raw(q.url, cap, &o, "&nonce=") &&
	     put_raw(q.url, cap, &o, q.nonce) && put_raw(q.url, cap, &o, "&code_challenge=") &&
	     put_raw(q.url, cap, &o, challenge) &&
	     put_raw(q.url, cap, &o, "&code_challenge_method=S256");
	if (!ok) {
		r = oidc_fail(err, err_len, -ENAMETOOLONG,
			      "authorization URL longer than %zu bytes", cap - 1);
		goto out;
	}
	*ret = q;
	r = 0;
out:
	OPENSSL_cleanse(&q, sizeof(q));
	return r;
}

bool oidc_request_state_check(const struct oidc_request *req, const char *state)
{
	return strlen(state) == OIDC_TOKEN_LEN && strlen(req->state) == OIDC_TOKEN_LEN &&
	       CRYPTO_memcmp(req->state, state, OIDC_TOKEN_LEN) == 0;
}

/* Percent-decodes [s, e) into dst (cap with the NUL); '+' is a space. */
static int decode(const char *s, const char *e, char *dst, size_t cap)
{
	size_t o = 0;

	for (; s < e; s++) {
		int c = (unsigned char)*s;

		if (c == '%') {
			if (e - s < 3 || hex_digit(s[1]) < 0 || hex_digit(s[2]) < 0)
				return -EINVAL;
			c = hex_digit(s[1]) << 4 | hex_digit(s[2]);
			s += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (c == 0 || o + 1 >= cap)
			return -EINVAL;
		dst[o++] = (char)c;
	}
	dst[o] = '\0';
	return 0;
}

int oidc_callback_parse(const char *query, size_t len, char ret_code[OIDC_CODE_MAX + 1],
			char ret_state[OIDC_TOKEN_LEN + 1], char *err, size_t err_len)
{
	char code[OIDC_CODE_MAX + 1] = "", state[OIDC_TOKEN_LEN + 1] = "";
	char error[128] = "", desc[256] = "", show[64];
	bool have_code = false, have_state = false, have_error = false;
	const char *p = query, *e = query + len;

	if (len > OIDC_CALLBACK_MAX)
		return oidc_fail(err, err_len, -EINVAL, "callback query longer than %d bytes",
				 OIDC_CALLBACK_MAX);
	while (p < e) {
		const char *amp = memchr(p, '&', (size_t)(e - p)), *end = amp ? amp : e;
		const char *eq = memchr(p, '=', (size_t)(end - p)), *ve = end;
		size_t kl = (size_t)((eq ? eq : end) - p);
		char *dst = NULL;
		bool *seen = NULL;
		size_t cap = 0;

		if (kl == 4 && !memcmp(p, "code", 4)) {
			dst = code, cap = sizeof(code), seen = &have_code;
		} else if (kl == 5 && !memcmp(p, "state", 5)) {
			dst = state, cap = sizeof(state), seen = &have_state;
		} else if (kl == 5 && !memcmp(p, "error", 5)) {
			dst = error, cap = sizeof(error), seen = &have_error;
		} else if (kl == 17 && !memcmp(p, "error_description", 17)) {
			dst = desc, cap = sizeof(desc);
		}
		if (dst) {
			if (seen && *seen)
				return oidc_fail(err, err_len, -EINVAL,
						 "callback: %.*s given twice", (int)kl, p);
			if (!eq || decode(eq + 1, ve, dst, cap) < 0)
				return oidc_fail(err, err_len, -EINVAL,
						 "callback: bad or oversized %.*s", (int)kl, p);
			if (seen)
				*seen = true;
		}
		p = amp ? amp + 1 : e;
	}
	if (have_error)
		return oidc_fail(err, err_len, -EACCES, "the identity provider refused: %s%s%s",
				 shown(error, show), desc[0] ? ": " : "", desc);
	if (!have_code || !have_state || !code[0] || !printable(code) || !printable(state))
		return oidc_fail(err, err_len, -EINVAL, "callback without a code and state");
	memcpy(ret_code, code, sizeof(code));
	memcpy(ret_state, state, sizeof(state));
	return 0;
}

int oidc_token_response_parse(const char *text, size_t len, char **ret_id_token, char *err,
			      size_t err_len)
{
	json_t *doc, *tok;
	const char *type, *error;
	json_error_t jerr;
	char show[64], dshow[64];
	int r;

	if (len > OIDC_TOKEN_RESPONSE_MAX)
		return oidc_fail(err, err_len, -EINVAL, "token response larger than %d bytes",
				 OIDC_TOKEN_RESPONSE_MAX);
	doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(doc)) {
		r = oidc_fail(err, err_len, -EINVAL, "token response is not a JSON object");
		goto out;
	}
	error = json_string_value(json_object_get(doc, "error"));
	if (error) {
		const char *d = json_string_value(json_object_get(doc, "error_description"));

		r = oidc_fail(err, err_len, -EACCES, "token endpoint refused: %s%s%s",
			      shown(error, show), d ? ": " : "", d ? shown(d, dshow) : "");
		goto out;
	}
	type = json_string_value(json_object_get(doc, "token_type"));
	if (!type || strcasecmp(type, "Bearer") != 0) {
		r = oidc_fail(err, err_len, -EINVAL, "token response: token_type is not Bearer");
		goto out;
	}
	tok = json_object_get(doc, "id_token");
	if (!json_is_string(tok) || json_string_length(tok) > OIDC_JWS_MAX) {
		r = oidc_fail(err, err_len, -EINVAL,
			      "token response has no id_token (scope openid?) or "
			      "one larger than %d bytes",
			      OIDC_JWS_MAX);
		goto out;
	}
	*ret_id_token = strdup(json_string_value(tok));
	r = *ret_id_token ? 0 : oidc_fail(err, err_len, -ENOMEM, "out of memory");
out:
	json_decref(doc);
	return r;
}

/* A NumericDate claim (seconds since the epoch) in ns; -EINVAL when absent or odd. */
static int date_claim(json_t *claims, const char *name, uint64_t *ret)
{
	json_t *v = json_object_get(claims, name);
	double d;

	if (json_is_integer(v))
		d = (double)json_integer_value(v);
	else if (json_is_real(v))
		d = json_real_value(v);
	else
		return -ENOENT;
	/* Past the year 2500 is not a date a provider means. */
	if (d < 0 || d > 16725225600.0)
		return -EINVAL;
	*ret = (uint64_t)(d * (double)NS_PER_S);
	return 0;
}

static bool string_claim(json_t *claims, const char *name, char *dst, size_t cap)
{
	json_t *v = json_object_get(claims, name);

	if (!json_is_string(v) || json_string_length(v) >= cap ||
	    strlen(json_string_value(v)) != json_string_length(v))
		return false;
	memcpy(dst, json_string_value(v), json_string_length(v) + 1);
	return true;
}

static bool email_ok(const char *s)
{
	const char *at = strchr(s, '@');

	return at && at > s && at[1] && !strchr(at + 1, '@') && printable(s);
}

int oidc_claims_check(json_t *claims, const struct oidc_policy *pol, const char *nonce,
		      uint64_t now_ns, struct oidc_identity *ret, char *err, size_t err_len)
{
	struct oidc_identity id;
	json_t *aud = json_object_get(claims, "aud"), *v;
	const char *iss = json_string_value(json_object_get(claims, "iss"));
	const char *azp = json_string_value(json_object_get(claims, "azp"));
	const char *tnonce = json_string_value(json_object_get(claims, "nonce"));
	const char *gname = pol->groups_claim ? pol->groups_claim : "groups";
	uint64_t exp, iat, nbf;
	bool aud_ok = false;
	size_t i, j;
	char show[64];
	int r;

	memset(&id, 0, sizeof(id));
	if (!iss || strcmp(iss, pol->issuer) != 0)
		return oidc_fail(err, err_len, -EINVAL,
				 "ID token issuer \"%s\" is not the configured "
				 "issuer",
				 iss ? shown(iss, show) : "");
	if (json_is_string(aud)) {
		aud_ok = !strcmp(json_string_value(aud), pol->client_id);
	} else if (json_is_array(aud)) {
		for (i = 0; i < json_array_size(aud); i++)
			aud_ok |=
			    json_is_string(json_array_get(aud, i)) &&
			    !strcmp(json_string_value(json_array_get(aud, i)), pol->client_id);
	}
	if (!aud_ok)
		return oidc_fail(err, err_len, -EINVAL,
				 "ID token is not for us (aud lacks client id "
				 "\"%s\")",
				 pol->client_id);
	/* Core 3.1.3.7 items 4-5: with other audiences, azp must name us. */
	if ((json_is_array(aud) && json_array_size(aud) > 1 && !azp) ||
	    (json_object_get(claims, "azp") && (!azp || strcmp(azp, pol->client_id) != 0)))
		return oidc_fail(err, err_len, -EINVAL,
				 "ID token's authorized party (azp) is not us");
	r = date_claim(claims, "exp", &exp);
	if (r < 0)
		return oidc_fail(err, err_len, -EINVAL, "ID token has no valid exp");
	if (now_ns > exp + OIDC_SKEW_NS)
		return oidc_fail(err, err_len, -EINVAL, "ID token expired %llu s ago",
				 (unsigned long long)((now_ns - exp) / NS_PER_S));
	r = date_claim(claims, "iat", &iat);
	if (r < 0)
		return oidc_fail(err, err_len, -EINVAL, "ID token has no valid iat");
	if (iat > now_ns + OIDC_SKEW_NS)
		return oidc_fail(err, err_len, -EINVAL,
				 "ID token issued %llu s in the future (clocks?)",
				 (unsigned long long)((iat - now_ns) / NS_PER_S));
	r = date_claim(claims, "nbf", &nbf);
	if (r == -EINVAL || (r == 0 && nbf > now_ns + OIDC_SKEW_NS))
		return oidc_fail(err, err_len, -EINVAL, "ID token not valid yet (nbf)");
	if (!tnonce || strlen(tnonce) != strlen(nonce) ||
	    CRYPTO_memcmp(tnonce, nonce, strlen(nonce)) != 0)
		return oidc_fail(err, err_len, -EINVAL, "ID token nonce does not match this login");
	if (!string_claim(claims, "sub", id.sub, sizeof(id.sub)) || !id.sub[0])
		return oidc_fail(err, err_len, -EINVAL,
				 "ID token has no subject (sub) of at most %d "
				 "bytes",
				 OIDC_SUB_MAX);
	if (!string_claim(claims, "email", id.email, sizeof(id.email)) || !email_ok(id.email))
		return oidc_fail(err, err_len, -EINVAL,
				 "ID token has no email address (scope email?)");
	v = json_object_get(claims, "email_verified");
	id.email_verified = json_is_true(v);
	if (!id.email_verified && !pol->allow_unverified_email)
		return oidc_fail(err, err_len, -EACCES, "the provider has not verified %s",
				 shown(id.email, show));
	if (pol->n_domains) {
		const char *dom = strchr(id.email, '@') + 1;
		bool ok = false;

		for (i = 0; i < pol->n_domains; i++)
			ok |= !strcasecmp(dom, pol->domains[i]);
		if (!ok)
			return oidc_fail(err, err_len, -EACCES, "%s is not in an allowed domain",
					 shown(id.email, show));
	}
	if (pol->n_groups) {
		json_t *g = json_object_get(claims, gname);
		bool ok = false;

		for (i = 0; json_is_array(g) && i < json_array_size(g); i++)
			for (j = 0; j < pol->n_groups; j++)
				ok |= json_is_string(json_array_get(g, i)) &&
				      !strcmp(json_string_value(json_array_get(g, i)),
					      pol->groups[j]);
		if (!ok)
			return oidc_fail(err, err_len, -EACCES,
					 "%s is in none of the allowed groups (%s "
					 "claim)",
					 shown(id.email, show), gname);
	}
	/*
	 * RFC 8176: "mfa" is the provider's own word that more than one factor was used;
	 * its other values (pwd, otp, hwk, ...) name methods, not how many, so only it counts.
	 */
	v = json_object_get(claims, "amr");
	for (i = 0; json_is_array(v) && i < json_array_size(v); i++)
		id.mfa |= json_is_string(json_array_get(v, i)) &&
			  !strcmp(json_string_value(json_array_get(v, i)), "mfa");
	/* A display name only: an odd one is left out, not an error. */
	if (!string_claim(claims, "name", id.name, sizeof(id.name)))
		id.name[0] = '\0';
	for (char *c = id.name; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	*ret = id;
	return 0;
}

int oidc_policy_domains_set(struct oidc_policy *pol, char *buf, char *err, size_t err_len)
{
	char *save = NULL, *tok;

	pol->n_domains = 0;
	for (char *c = buf; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	for (tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
		if (pol->n_domains == OIDC_DOMAINS_MAX)
			return oidc_fail(err, err_len, -EINVAL, "more than %d allowed domains",
					 OIDC_DOMAINS_MAX);
		if (strchr(tok, '@') || !printable(tok) || strlen(tok) > 253)
			return oidc_fail(err, err_len, -EINVAL,
					 "allowed domain \"%.60s\" is not a "
					 "domain name",
					 tok);
		pol->domains[pol->n_domains++] = tok;
	}
	if (!pol->n_domains)
		return oidc_fail(err, err_len, -EINVAL, "empty list of allowed domains");
	return 0;
}

int oidc_policy_groups_set(struct oidc_policy *pol, char *buf, char *err, size_t err_len)
{
	char *save = NULL, *tok, *end;
	bool ok;

	pol->n_groups = 0;
	/* Group names may hold spaces ("Domain Users"): only commas separate them. */
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		while (*tok == ' ')
			tok++;
		end = tok + strlen(tok);
		while (end > tok && end[-1] == ' ')
			*--end = '\0';
		if (!*tok)
			continue;
		if (pol->n_groups == OIDC_GROUPS_MAX)
			return oidc_fail(err, err_len, -EINVAL, "more than %d allowed groups",
					 OIDC_GROUPS_MAX);
		/* Spaces and UTF-8 are part of names; control characters are not. */
		ok = strlen(tok) <= 255;
		for (const char *c = tok; *c; c++)
			ok &= (unsigned char)*c >= 0x20 && *c != 0x7f;
		if (!ok)
			return oidc_fail(err, err_len, -EINVAL,
					 "allowed group \"%.60s\" is not a name", tok);
		pol->groups[pol->n_groups++] = tok;
	}
	if (!pol->n_groups)
		return oidc_fail(err, err_len, -EINVAL, "empty list of allowed groups");
	return 0;
}
