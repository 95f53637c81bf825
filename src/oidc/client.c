// SPDX-License-Identifier: MIT
/*
 * The relying party's HTTP (client.h), on libcurl's easy interface: one handle per
 * request, so the worker threads share nothing but the cache below.
 *
 * State: the provider (discovery) and the JWKS are fetched at the first need and
 * kept; a token naming an unknown kid refetches the JWKS when the last fetch is
 * older than jwks_refetch_ns (so a stream of forged kids costs at most one fetch
 * per interval). The lock guards the cache only; no request runs under it.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "base/time.h"
#include "base/util.h"
#include "oidc/client.h"

#define TIMEOUT_MS_DEFAULT 10000
#define REFETCH_NS_DEFAULT (60ULL * 1000000000ULL)

struct oidc_client {
	char *issuer, *client_id, *secret, *redirect_uri, *ca_file, *domains_buf;
	char *groups_buf, *groups_claim;
	struct oidc_policy pol;
	unsigned timeout_ms;
	uint64_t refetch_ns;
	int auth; /* enum oidc_client_auth, or -1: what discovery chose */

	pthread_mutex_t lock; /* guards what follows */
	bool have_provider;
	struct oidc_provider provider;
	struct oidc_jwks *jwks;
	uint64_t jwks_fetched_ns; /* monotonic; 0: never */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void curl_init(void)
{
	curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct body {
	char *buf;
	size_t len, max;
	bool too_big;
};

static size_t body_write(char *data, size_t size, size_t n, void *arg)
{
	struct body *b = arg;
	size_t len = size * n;

	if (len > b->max - b->len) {
		b->too_big = true;
		return 0; /* curl stops with CURLE_WRITE_ERROR */
	}
	memcpy(b->buf + b->len, data, len);
	b->len += len;
	return len;
}

/*
 * One https request: GET when form is NULL, else POST form (urlencoded), with
 * basic credentials when user is set. The body (at most max bytes) lands in
 * *ret (malloc'd, NUL-terminated). what names the request in errors. HTTP 400
 * and 401 from the token endpoint carry an OAuth error body, so they are returned
 * too (with their status).
 */
static int http(struct oidc_client *c, const char *what, const char *url, const char *form,
		const char *user, const char *pass, size_t max, char **ret, long *ret_status,
		char *err, size_t err_len)
{
	struct body b = {.max = max};
	char curl_err[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdr = NULL;
	long status = 0;
	CURLcode cc;
	CURL *h;
	int r;

	pthread_once(&curl_once, curl_init);
	if (curl_init_result != CURLE_OK) {
		snprintf(err, err_len, "%s: libcurl did not initialize", what);
		return -EIO;
	}
	b.buf = malloc(max + 1);
	h = curl_easy_init();
	hdr = curl_slist_append(NULL, "Accept: application/json");
	if (!b.buf || !h || !hdr) {
		r = -ENOMEM;
		snprintf(err, err_len, "%s: out of memory", what);
		goto out;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)c->timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->timeout_ms);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (c->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "trellis-control");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
	if (form) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(form));
	}
	if (user) {
		curl_easy_setopt(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		curl_easy_setopt(h, CURLOPT_USERNAME, user);
		curl_easy_setopt(h, CURLOPT_PASSWORD, pass);
	}
	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	if (b.too_big || cc == CURLE_FILESIZE_EXCEEDED) {
		r = -EMSGSIZE;
		snprintf(err, err_len, "%s: %s answered with more than %zu bytes", what, url, max);
		goto out;
	}
	if (cc == CURLE_OPERATION_TIMEDOUT) {
		r = -ETIMEDOUT;
		snprintf(err, err_len, "%s: %s did not answer within %u ms", what, url,
			 c->timeout_ms);
		goto out;
	}
	if (cc != CURLE_OK) {
		r = -EIO;
		snprintf(err, err_len, "%s: %s: %s", what, url,
			 curl_err[0] ? curl_err : curl_easy_strerror(cc));
		goto out;
	}
	if (status != 200 && !(form && (status == 400 || status == 401))) {
		r = -EIO;
		snprintf(err, err_len, "%s: %s answered HTTP %ld", what, url, status);
		goto out;
	}
	b.buf[b.len] = '\0';
	*ret = b.buf;
	*ret_status = status;
	b.buf = NULL;
	r = 0;
out:
	curl_slist_free_all(hdr);
	curl_easy_cleanup(h);
	free(b.buf);
	return r;
}

static void config_free_parts(struct oidc_client *c)
{
	free(c->issuer);
	free(c->client_id);
	if (c->secret) {
		OPENSSL_cleanse(c->secret, strlen(c->secret));
		free(c->secret);
	}
	free(c->redirect_uri);
	free(c->ca_file);
	free(c->domains_buf);
	free(c->groups_buf);
	free(c->groups_claim);
}

static char *dup_or_null(const char *s, bool *fail)
{
	char *d = s ? strdup(s) : NULL;

	*fail |= s && !d;
	return d;
}

int oidc_client_new(const struct oidc_config *cfg, struct oidc_client **ret, char *err,
		    size_t err_len)
{
	struct oidc_client *c;
	bool nomem = false;
	int r;

	if (!cfg->issuer || strncmp(cfg->issuer, "https://", 8) != 0 ||
	    strlen(cfg->issuer) >= OIDC_URL_MAX) {
		snprintf(err, err_len, "OIDC issuer must be an https URL");
		return -EINVAL;
	}
	if (!cfg->client_id || !cfg->client_id[0] || !cfg->client_secret ||
	    !cfg->client_secret[0]) {
		snprintf(err, err_len, "OIDC needs a client id and a client secret");
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		goto nomem;
	c->issuer = dup_or_null(cfg->issuer, &nomem);
	c->client_id = dup_or_null(cfg->client_id, &nomem);
	c->secret = dup_or_null(cfg->client_secret, &nomem);
	c->redirect_uri = dup_or_null(cfg->redirect_uri, &nomem);
	c->ca_file = dup_or_null(cfg->ca_file, &nomem);
	c->domains_buf = dup_or_null(cfg->allowed_domains, &nomem);
	c->groups_buf = dup_or_null(cfg->allowed_groups, &nomem);
	c->groups_claim = dup_or_null(cfg->groups_claim, &nomem);
	if (nomem)
		goto nomem;
	/* Issuers are compared exactly, but a trailing '/' in the flag is a slip. */
	if (strlen(c->issuer) > 8 && c->issuer[strlen(c->issuer) - 1] == '/')
		c->issuer[strlen(c->issuer) - 1] = '\0';
	c->pol.issuer = c->issuer;
	c->pol.client_id = c->client_id;
	c->pol.allow_unverified_email = cfg->allow_unverified_email;
	r = 0;
	if (c->domains_buf)
		r = oidc_policy_domains_set(&c->pol, c->domains_buf, err, err_len);
	if (r == 0 && c->groups_buf)
		r = oidc_policy_groups_set(&c->pol, c->groups_buf, err, err_len);
	if (r == 0 && c->groups_claim && (!c->groups_claim[0] || strlen(c->groups_claim) > 64)) {
		snprintf(err, err_len, "OIDC groups claim name must have 1 to 64 bytes");
		r = -EINVAL;
	}
	if (r < 0) {
		config_free_parts(c);
		free(c);
		return r;
	}
	c->pol.groups_claim = c->groups_claim;
	c->auth = -1;
	if (cfg->token_auth && !strcmp(cfg->token_auth, "client_secret_basic")) {
		c->auth = OIDC_AUTH_SECRET_BASIC;
	} else if (cfg->token_auth && !strcmp(cfg->token_auth, "client_secret_post")) {
		c->auth = OIDC_AUTH_SECRET_POST;
	} else if (cfg->token_auth) {
		snprintf(err, err_len,
			 "OIDC token endpoint authentication \"%.40s\" is neither "
			 "client_secret_basic nor client_secret_post",
			 cfg->token_auth);
		config_free_parts(c);
		free(c);
		return -EINVAL;
	}
	c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : TIMEOUT_MS_DEFAULT;
	c->refetch_ns = cfg->jwks_refetch_ns ? cfg->jwks_refetch_ns : REFETCH_NS_DEFAULT;
	pthread_mutex_init(&c->lock, NULL);
	*ret = c;
	return 0;
nomem:
	if (c) {
		config_free_parts(c);
		free(c);
	}
	snprintf(err, err_len, "out of memory");
	return -ENOMEM;
}

void oidc_client_free(struct oidc_client *c)
{
	if (!c)
		return;
	config_free_parts(c);
	oidc_jwks_free(c->jwks);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static int provider_get(struct oidc_client *c, struct oidc_provider *ret, char *err, size_t err_len)
{
	struct oidc_provider p;
	char url[OIDC_URL_MAX + 64], *body = NULL;
	long status;
	int r;

	pthread_mutex_lock(&c->lock);
	if (c->have_provider) {
		*ret = c->provider;
		pthread_mutex_unlock(&c->lock);
		return 0;
	}
	pthread_mutex_unlock(&c->lock);
	snprintf(url, sizeof(url), "%s/.well-known/openid-configuration", c->issuer);
	r = http(c, "OIDC discovery", url, NULL, NULL, NULL, OIDC_DISCOVERY_MAX, &body, &status,
		 err, err_len);
	if (r < 0)
		return r;
	r = oidc_discovery_parse(body, strlen(body), c->issuer, &p, err, err_len);
	free(body);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	c->provider = p;
	c->have_provider = true;
	pthread_mutex_unlock(&c->lock);
	*ret = p;
	return 0;
}

/* Fetches the JWKS and replaces the cached one. */
static int jwks_fetch(struct oidc_client *c, const struct oidc_provider *p, char *err,
		      size_t err_len)
{
	struct oidc_jwks *set = NULL, *old;
	char *body = NULL;
	long status;
	int r;

	r = http(c, "OIDC JWKS", p->jwks_uri, NULL, NULL, NULL, OIDC_JWKS_MAX, &body, &status, err,
		 err_len);
	if (r < 0)
		return r;
	r = oidc_jwks_parse(body, strlen(body), &set, err, err_len);
	free(body);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	old = c->jwks;
	c->jwks = set;
	c->jwks_fetched_ns = time_now_ns();
	pthread_mutex_unlock(&c->lock);
	oidc_jwks_free(old);
	return 0;
}

int oidc_client_discover(struct oidc_client *c, char *err, size_t err_len)
{
	struct oidc_provider p;
	bool have;
	int r = provider_get(c, &p, err, err_len);

	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	have = c->jwks != NULL;
	pthread_mutex_unlock(&c->lock);
	return have ? 0 : jwks_fetch(c, &p, err, err_len);
}

static int request_new(struct oidc_client *c, const struct oidc_provider *p,
		       struct oidc_request *ret, char *err, size_t err_len)
{
	if (!c->redirect_uri) {
		snprintf(err, err_len, "OIDC: no redirect URI configured");
		return -EINVAL;
	}
	return oidc_request_new(p, c->client_id, c->redirect_uri, ret, err, err_len);
}

int oidc_client_request_new(struct oidc_client *c, struct oidc_request *ret, char *err,
			    size_t err_len)
{
	struct oidc_provider p;
	int r = provider_get(c, &p, err, err_len);

	return r < 0 ? r : request_new(c, &p, ret, err, err_len);
}

int oidc_client_request_new_cached(struct oidc_client *c, struct oidc_request *ret, char *err,
				   size_t err_len)
{
	struct oidc_provider p;
	bool have;

	pthread_mutex_lock(&c->lock);
	have = c->have_provider;
	if (have)
		p = c->provider;
	pthread_mutex_unlock(&c->lock);
	if (!have) {
		snprintf(err, err_len, "OIDC discovery not done yet");
		return -EAGAIN;
	}
	return request_new(c, &p, ret, err, err_len);
}

/* Signature with the cached keys, under the lock (the set may be replaced). */
static int verify_cached(struct oidc_client *c, const char *tok, json_t **ret, char *err,
			 size_t err_len)
{
	int r;

	pthread_mutex_lock(&c->lock);
	if (!c->jwks)
		r = -ENOKEY;
	else
		r = oidc_jws_verify(tok, strlen(tok), c->jwks, ret, NULL, err, err_len);
	pthread_mutex_unlock(&c->lock);
	return r;
}

int oidc_client_id_token_verify(struct oidc_client *c, const char *id_token, const char *nonce,
				struct oidc_identity *ret, char *err, size_t err_len)
{
	struct oidc_provider p;
	json_t *claims = NULL;
	bool refetch;
	int r;

	r = oidc_client_discover(c, err, err_len);
	if (r < 0)
		return r;
	r = verify_cached(c, id_token, &claims, err, err_len);
	if (r == -ENOKEY) {
		/* Maybe rotated: refetch, unless we just did (forged kids cost nothing). */
		pthread_mutex_lock(&c->lock);
		refetch = time_now_ns() - c->jwks_fetched_ns >= c->refetch_ns;
		p = c->provider;
		pthread_mutex_unlock(&c->lock);
		if (!refetch)
			return r;
		r = jwks_fetch(c, &p, err, err_len);
		if (r < 0)
			return r;
		r = verify_cached(c, id_token, &claims, err, err_len);
		if (r == -ENOKEY) {
			size_t n = strlen(err);

			snprintf(err + n, err_len - n, " (after refetching it)");
		}
	}
	if (r < 0)
		return r;
	r = oidc_claims_check(claims, &c->pol, nonce, time_wall_ns(), ret, err, err_len);
	json_decref(claims);
	return r;
}

static bool form_add(char *out, size_t cap, size_t *o, const char *key, const char *val)
{
	char *enc = curl_easy_escape(NULL, val, 0);
	int n;

	if (!enc)
		return false;
	n = snprintf(out + *o, cap - *o, "%s%s=%s", *o ? "&" : "", key, enc);
	curl_free(enc);
	if (n < 0 || (size_t)n >= cap - *o)
		return false;
	*o += (size_t)n;
	return true;
}

int oidc_client_finish(struct oidc_client *c, const struct oidc_request *req, const char *query,
		       struct oidc_identity *ret, char *err, size_t err_len)
{
	char code[OIDC_CODE_MAX + 1], state[OIDC_TOKEN_LEN + 1], *user = NULL, *pass = NULL;
	char form[OIDC_CODE_MAX * 3 + OIDC_URL_MAX * 3 + 1024], *body = NULL, *id_token = NULL;
	struct oidc_provider p;
	size_t o = 0;
	long status;
	bool ok;
	int r;

	r = oidc_callback_parse(query, strlen(query), code, state, err, err_len);
	if (r < 0)
		return r;
	/* A state we did not send is a forged or crossed callback (CSRF): no exchange. */
	if (!oidc_request_state_check(req, state)) {
		snprintf(err, err_len, "OIDC callback state does not match this login");
		return -EACCES;
	}
	r = provider_get(c, &p, err, err_len);
	if (r < 0)
		return r;
	if (c->auth >= 0)
		p.auth = (enum oidc_client_auth)c->auth;
	ok = form_add(form, sizeof(form), &o, "grant_type", "authorization_code") &&
	     form_add(form, sizeof(form), &o, "code", code) &&
	     form_add(form, sizeof(form), &o, "redirect_uri",
		      c->redirect_uri ? c->redirect_uri : "") &&
	     form_add(form, sizeof(form), &o, "code_verifier", req->verifier);
	if (ok && p.auth == OIDC_AUTH_SECRET_POST)
		ok = form_add(form, sizeof(form), &o, "client_id", c->client_id) &&
		     form_add(form, sizeof(form), &o, "client_secret", c->secret);
	if (ok && p.auth == OIDC_AUTH_SECRET_BASIC) {
		/* RFC 6749 section 2.3.1: both are form-encoded before Basic's base64. */
		user = curl_easy_escape(NULL, c->client_id, 0);
		pass = curl_easy_escape(NULL, c->secret, 0);
		ok = user && pass;
	}
	if (!ok) {
		snprintf(err, err_len, "OIDC token request too large");
		r = -ENOMEM;
		goto out;
	}
	r = http(c, "OIDC token exchange", p.token_endpoint, form, user, pass,
		 OIDC_TOKEN_RESPONSE_MAX, &body, &status, err, err_len);
	if (r < 0)
		goto out;
	r = oidc_token_response_parse(body, strlen(body), &id_token, err, err_len);
	if (r == 0 && status != 200) {
		snprintf(err, err_len, "OIDC token exchange: HTTP %ld", status);
		r = -EIO;
	}
	if (r < 0)
		goto out;
	r = oidc_client_id_token_verify(c, id_token, req->nonce, ret, err, err_len);
out:
	OPENSSL_cleanse(form, sizeof(form));
	if (pass) {
		OPENSSL_cleanse(pass, strlen(pass));
		curl_free(pass);
	}
	curl_free(user);
	free(body);
	free(id_token);
	return r;
}

static void begin_work(struct workq_job *w)
{
	struct oidc_begin_job *j = container_of(w, struct oidc_begin_job, job);

	j->r = oidc_client_request_new(j->client, &j->req, j->err, sizeof(j->err));
}

static void begin_done(struct workq_job *w, int err)
{
	struct oidc_begin_job *j = container_of(w, struct oidc_begin_job, job);

	if (err) {
		j->r = err;
		snprintf(j->err, sizeof(j->err), "OIDC login cancelled (server stopping)");
	}
	j->done(j, j->r);
}

int oidc_begin_submit(struct workq *q, struct oidc_begin_job *j, struct oidc_client *c,
		      oidc_begin_done_fn done)
{
	j->client = c;
	j->done = done;
	j->r = 0;
	j->err[0] = '\0';
	return workq_submit(q, &j->job, begin_work, begin_done);
}

static void finish_work(struct workq_job *w)
{
	struct oidc_finish_job *j = container_of(w, struct oidc_finish_job, job);

	j->r =
	    oidc_client_finish(j->client, &j->req, j->query, &j->identity, j->err, sizeof(j->err));
}

static void finish_done(struct workq_job *w, int err)
{
	struct oidc_finish_job *j = container_of(w, struct oidc_finish_job, job);

	if (err) {
		j->r = err;
		snprintf(j->err, sizeof(j->err), "OIDC login cancelled (server stopping)");
	}
	j->done(j, j->r);
}

int oidc_finish_submit(struct workq *q, struct oidc_finish_job *j, struct oidc_client *c,
		       const struct oidc_request *req, const char *query, oidc_finish_done_fn done)
{
	if (strlen(query) > OIDC_CALLBACK_MAX)
		return -ENAMETOOLONG;
	j->client = c;
	j->req = *req;
	strcpy(j->query, query);
	j->done = done;
	j->r = 0;
	j->err[0] = '\0';
	return workq_submit(q, &j->job, finish_work, finish_done);
}
