/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OIDC_CLIENT_H
#define TRELLIS_OIDC_CLIENT_H

/*
 * The relying party's I/O (libcurl): discovery, the provider's JWKS (cached, and
 * refetched when a token names a key we do not hold, at most once per
 * jwks_refetch_ns, for key rotation) and the code exchange at the token endpoint.
 *
 * Every call here blocks up to timeout_ms and must not run on an event loop: a
 * server submits oidc_finish_job to its worker pool (base/workq.h), whose done runs
 * back on the loop with the identity or an error sentence. The functions are
 * thread safe (several logins may finish at once on the pool); responses are
 * capped (an oversized answer is an error, not a truncation), only https is
 * spoken, redirects are not followed, and TLS is verified against ca_file or the
 * system store.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/workq.h"
#include "oidc/flow.h"

struct oidc_config {
	const char *issuer; /* https URL, exactly as the provider names itself */
	const char *client_id;
	const char *client_secret;   /* copied and wiped at free */
	const char *redirect_uri;    /* where the provider sends the browser back */
	const char *ca_file;	     /* NULL: the system store (SSL_CERT_FILE honoured) */
	const char *allowed_domains; /* "a.example,b.example" or NULL */
	const char *allowed_groups;  /* "eng,ops": the groups claim must hold one; NULL: any */
	const char *groups_claim;    /* the claim that lists them; NULL: "groups" */
	bool allow_unverified_email;
	/* How we authenticate at the token endpoint; NULL: client_secret_basic when the
	 * provider offers it, else client_secret_post. */
	const char *token_auth;	  /* "client_secret_basic" or "client_secret_post" */
	unsigned timeout_ms;	  /* per request; 0: 10 s */
	uint64_t jwks_refetch_ns; /* 0: 60 s */
};

struct oidc_client;

/* Copies cfg. Does no I/O: discovery happens at the first need (or oidc_client_discover). */
int oidc_client_new(const struct oidc_config *cfg, struct oidc_client **ret, char *err,
		    size_t err_len);
void oidc_client_free(struct oidc_client *c);

/* Blocking. Fetches discovery (if not yet done) and the JWKS (if not cached). */
int oidc_client_discover(struct oidc_client *c, char *err, size_t err_len);
/* Blocking (discovery). A new request for one login; *ret is the caller's to keep. */
int oidc_client_request_new(struct oidc_client *c, struct oidc_request *ret, char *err,
			    size_t err_len);
/*
 * The same without I/O, from the cached discovery document (any thread, the loop's
 * too): -EAGAIN when discovery has not been done yet (then oidc_begin_submit).
 */
int oidc_client_request_new_cached(struct oidc_client *c, struct oidc_request *ret, char *err,
				   size_t err_len);
/*
 * Blocking: verifies an ID token (signature with the cached JWKS, refetched once on
 * an unknown kid within the rate limit; then the claims against nonce).
 */
int oidc_client_id_token_verify(struct oidc_client *c, const char *id_token, const char *nonce,
				struct oidc_identity *ret, char *err, size_t err_len);
/*
 * Blocking: the end of a login. Checks the callback (query after '?') against req,
 * exchanges the code with req's PKCE verifier and verifies the ID token.
 */
int oidc_client_finish(struct oidc_client *c, const struct oidc_request *req, const char *query,
		       struct oidc_identity *ret, char *err, size_t err_len);

/*
 * oidc_client_request_new on a worker pool (its first call fetches discovery): embed
 * in the caller's struct, zero before submit; done runs on the loop with req or err.
 */
struct oidc_begin_job;
typedef void (*oidc_begin_done_fn)(struct oidc_begin_job *j, int err);
struct oidc_begin_job {
	struct workq_job job;
	struct oidc_client *client;
	oidc_begin_done_fn done;
	int r;
	struct oidc_request req; /* when r == 0: keep state, nonce, verifier; send to url */
	char err[OIDC_ERR_MAX];
};
int oidc_begin_submit(struct workq *q, struct oidc_begin_job *j, struct oidc_client *c,
		      oidc_begin_done_fn done);

/* oidc_client_finish on a worker pool. Embed in the caller's struct; zero before submit. */
struct oidc_finish_job;
typedef void (*oidc_finish_done_fn)(struct oidc_finish_job *j, int err);
struct oidc_finish_job {
	struct workq_job job;
	/* in */
	struct oidc_client *client;
	struct oidc_request req;
	char query[OIDC_CALLBACK_MAX + 1];
	oidc_finish_done_fn done;
	/* out: identity when r == 0, else err (-ECANCELED: the pool stopped first) */
	int r;
	struct oidc_identity identity;
	char err[OIDC_ERR_MAX];
};
/* 0 or what workq_submit says (-EAGAIN: the pool is full) or -ENAMETOOLONG. */
int oidc_finish_submit(struct workq *q, struct oidc_finish_job *j, struct oidc_client *c,
		       const struct oidc_request *req, const char *query, oidc_finish_done_fn done);

#endif
