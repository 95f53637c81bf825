// SPDX-License-Identifier: MIT
/*
 * OIDC on the login pages (weboidc.h). One login per waiting code, created when its
 * browser presses the button:
 *
 *   IDLE --GET /register/CODE/oidc, discovery cached--> REDIRECTED (302 to the provider)
 *        --not cached: begin on the pool--> BEGINNING --done--> READY
 *   READY --GET /register/CODE/oidc--> REDIRECTED (302)
 *   REDIRECTED --GET callback?code&state, this browser's session, this state--> FINISHING
 *              (the code exchange and ID-token checks on the pool)
 *              --GET /register/CODE/oidc again (the person came back)--> a new request
 *   FINISHING --done--> OK (the identity) or FAILED (the sentence shown)
 *   OK     --GET /register/CODE/oidc--> web_login_complete; the login goes
 *   FAILED --GET /register/CODE/oidc--> the reason and a way back; the login goes
 *
 * The callback is found by its state alone (constant-time compares against logins
 * that sent one), and is refused unless the browser holds the session bound to that
 * code: a provider's answer carried into another browser (login CSRF) approves
 * nothing. Jobs name their login by code, never by pointer: a login may go (expiry,
 * a new request) while its job runs, and the late answer is then dropped.
 */
#include "control/weboidc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "base/workq.h"
#include "control/pending.h"
#include "control/web.h"
#include "control/webform.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "proto/http.h"

#define LOGINS_MAX WEB_SESSIONS_MAX
#define LOGIN_TTL_NS PENDING_TTL_NS

enum step { IDLE, BEGINNING, READY, REDIRECTED, FINISHING, OK, FAILED };

struct login {
	bool used;
	char code[PENDING_CODE_LEN + 1];
	enum step step;
	uint64_t gen; /* which request a job belongs to: a newer one drops the older's answer */
	uint64_t expires_ns;
	struct oidc_request req;
	struct oidc_identity id;
	char err[OIDC_ERR_MAX];
};

struct weboidc {
	struct loop *loop;
	struct web *w;
	struct workq *wq;
	struct oidc_client *c;
	bool allow_unverified;
	uint64_t gen;
	struct workq_job discover_job;
	struct login logins[LOGINS_MAX];
};

struct begin {
	struct oidc_begin_job j;
	struct weboidc *o;
	char code[PENDING_CODE_LEN + 1];
	uint64_t gen;
};

struct finish {
	struct oidc_finish_job j;
	struct weboidc *o;
	char code[PENDING_CODE_LEN + 1];
	uint64_t gen;
};

static void login_end(struct login *l)
{
	crypto_wipe(l, sizeof(*l));
}

static struct login *login_get(struct weboidc *o, const char *code, bool create)
{
	uint64_t now = loop_now_ns(o->loop);
	struct login *free_slot = NULL;

	for (size_t i = 0; i < LOGINS_MAX; i++) {
		struct login *l = &o->logins[i];

		if (l->used && now >= l->expires_ns)
			login_end(l);
		if (l->used && !strcmp(l->code, code))
			return l;
		if (!l->used && !free_slot)
			free_slot = l;
	}
	if (!create || !free_slot)
		return NULL;
	free_slot->used = true;
	snprintf(free_slot->code, sizeof(free_slot->code), "%s", code);
	free_slot->step = IDLE;
	free_slot->expires_ns = now + LOGIN_TTL_NS;
	return free_slot;
}

static struct login *login_of_job(struct weboidc *o, const char *code, uint64_t gen, enum step st)
{
	struct login *l = login_get(o, code, false);

	return l && l->gen == gen && l->step == st ? l : NULL;
}

/* ---- the pool's answers ---- */

static void begin_done(struct oidc_begin_job *j, int err)
{
	struct begin *b = container_of(j, struct begin, j);
	struct login *l = login_of_job(b->o, b->code, b->gen, BEGINNING);

	if (l && err == 0) {
		l->req = j->req;
		l->step = READY;
	} else if (l) {
		log_info("control: web: %s: OIDC sign-in could not start: %s", l->code, j->err);
		snprintf(l->err, sizeof(l->err), "%s", j->err);
		l->step = FAILED;
	}
	crypto_wipe(b, sizeof(*b));
	free(b);
}

static void finish_done(struct oidc_finish_job *j, int err)
{
	struct finish *f = container_of(j, struct finish, j);
	struct login *l = login_of_job(f->o, f->code, f->gen, FINISHING);

	if (l && err == 0) {
		l->id = j->identity;
		l->step = OK;
	} else if (l) {
		log_info("control: web: %s: OIDC sign-in failed: %s", l->code, j->err);
		snprintf(l->err, sizeof(l->err), "%s", j->err);
		l->step = FAILED;
	}
	crypto_wipe(f, sizeof(*f));
	free(f);
}

/* ---- GET /register/CODE/oidc ---- */

static void start(struct weboidc *o, struct httpd_request *r, struct login *l)
{
	char path[64];
	struct begin *b;
	int err;

	l->gen = ++o->gen;
	err = oidc_client_request_new_cached(o->c, &l->req, l->err, sizeof(l->err));
	if (err == 0) {
		l->step = REDIRECTED;
		return web_reply_redirect(o->w, r, l->req.url);
	}
	if (err != -EAGAIN)
		goto fail;
	/* Discovery first (the provider was down at start): on the pool, polled. */
	b = calloc(1, sizeof(*b));
	if (!b) {
		err = -ENOMEM;
		snprintf(l->err, sizeof(l->err), "out of memory");
		goto fail;
	}
	b->o = o;
	b->gen = l->gen;
	snprintf(b->code, sizeof(b->code), "%s", l->code);
	err = oidc_begin_submit(o->wq, &b->j, o->c, begin_done);
	if (err < 0) {
		free(b);
		snprintf(l->err, sizeof(l->err), "the server is busy");
		goto fail;
	}
	l->step = BEGINNING;
	snprintf(path, sizeof(path), "/register/%s/oidc", l->code);
	return web_reply_wait(o->w, r, "Signing in", "Contacting your identity provider...", path);
fail:
	log_info("control: web: %s: OIDC sign-in could not start: %s", l->code, l->err);
	web_reply_message(o->w, r, 503, "Cannot sign in",
			  "The identity provider cannot be reached now. Try again.", l->code);
	login_end(l);
}

static void method_page(struct httpd_request *r, const char *code, void *ctx)
{
	struct weboidc *o = ctx;
	struct login *l = login_get(o, code, true);
	struct login_identity who = {.method = "oidc"};
	char path[64], msg[OIDC_ERR_MAX + 64];

	if (!l)
		return web_reply_message(o->w, r, 503, "Busy",
					 "Too many sign-ins at once. Try again in a minute.", NULL);
	snprintf(path, sizeof(path), "/register/%s/oidc", code);
	switch (l->step) {
	case IDLE:
	case REDIRECTED: /* back from the provider's page: a new request, the old one dies */
		return start(o, r, l);
	case BEGINNING:
		return web_reply_wait(o->w, r, "Signing in", "Contacting your identity provider...",
				      path);
	case READY:
		l->step = REDIRECTED;
		return web_reply_redirect(o->w, r, l->req.url);
	case FINISHING:
		return web_reply_wait(o->w, r, "Signing in", "Checking your sign-in...", path);
	case OK:
		who.email = l->id.email;
		/* Unverified addresses reach here only when the server is set to take them. */
		who.email_verified = l->id.email_verified || o->allow_unverified;
		who.name = l->id.name[0] ? l->id.name : NULL;
		who.mfa = l->id.mfa;
		web_login_complete(o->w, r, code, &who);
		return login_end(l);
	case FAILED:
		snprintf(msg, sizeof(msg), "Your identity provider's sign-in failed: %s", l->err);
		web_reply_message(o->w, r, 403, "Sign-in failed", msg, code);
		return login_end(l);
	}
}

/* ---- GET /register/oidc/callback?code=..&state=.. ---- */

static struct login *login_by_state(struct weboidc *o, const char *state)
{
	struct login *found = NULL;

	if (strlen(state) != OIDC_TOKEN_LEN)
		return NULL;
	for (size_t i = 0; i < LOGINS_MAX; i++) {
		struct login *l = &o->logins[i];

		if (l->used && l->step == REDIRECTED &&
		    crypto_equal(l->req.state, state, OIDC_TOKEN_LEN))
			found = l;
	}
	return found;
}

static void callback(struct httpd_request *r, void *ctx)
{
	struct weboidc *o = ctx;
	const struct http_request *req = r->head;
	const char *q = memchr(req->target, '?', req->target_len);
	size_t plen = q ? (size_t)(q - req->target) : req->target_len;
	char state[OIDC_TOKEN_LEN + 2], query[OIDC_CALLBACK_MAX + 1], path[64];
	struct login *l;
	struct finish *f;
	size_t qlen;

	if (plen != strlen(WEBOIDC_CALLBACK_PATH) ||
	    memcmp(req->target, WEBOIDC_CALLBACK_PATH, plen) != 0)
		return httpd_error(r, 404, NULL);
	qlen = q ? req->target_len - plen - 1 : 0;
	if (!q || qlen > OIDC_CALLBACK_MAX ||
	    webform_field((const uint8_t *)q + 1, qlen, "state", state, sizeof(state)) < 0 ||
	    !(l = login_by_state(o, state))) {
		log_info("control: web: %s: OIDC callback with an unknown state refused", r->peer);
		return web_reply_message(
		    o->w, r, 400, "Not a sign-in of this server",
		    "This answer from your identity provider does not belong to a sign-in this "
		    "server is waiting for (it was used already, or it expired). Run `trellis up` "
		    "again.",
		    NULL);
	}
	if (!web_session_owns(o->w, r, l->code)) {
		log_info("control: web: %s: OIDC callback in another browser refused", l->code);
		return web_reply_message(o->w, r, 403, "Not signed in",
					 "This sign-in was started in another browser. Finish it "
					 "there, or run `trellis up` again.",
					 NULL);
	}
	memcpy(query, q + 1, qlen);
	query[qlen] = '\0';
	f = calloc(1, sizeof(*f));
	if (!f)
		return httpd_error(r, 503, "out of memory");
	f->o = o;
	f->gen = l->gen;
	snprintf(f->code, sizeof(f->code), "%s", l->code);
	if (oidc_finish_submit(o->wq, &f->j, o->c, &l->req, query, finish_done) < 0) {
		crypto_wipe(f, sizeof(*f));
		free(f);
		return web_reply_message(o->w, r, 503, "Busy", "The server is busy. Try again.",
					 l->code);
	}
	crypto_wipe(query, sizeof(query));
	/* The request has done its work: a second callback with its state finds nothing. */
	l->step = FINISHING;
	crypto_wipe(&l->req, sizeof(l->req));
	snprintf(path, sizeof(path), "/register/%s/oidc", l->code);
	web_reply_wait(o->w, r, "Signing in", "Checking your sign-in...", path);
}

/* ---- setup ---- */

static void discover_work(struct workq_job *j)
{
	struct weboidc *o = container_of(j, struct weboidc, discover_job);
	char err[OIDC_ERR_MAX];

	if (oidc_client_discover(o->c, err, sizeof(err)) < 0)
		log_warn("control: OIDC provider: %s (asked again at the next sign-in)", err);
}

static void discover_done(struct workq_job *j, int err)
{
	(void)j;
	(void)err;
}

/* "Sign in with HOST": the issuer's host, as people know their provider. */
static void label_of(const char *issuer, char *ret, size_t cap)
{
	const char *h = strstr(issuer, "://");

	h = h ? h + 3 : issuer;
	snprintf(ret, cap, "Sign in with %.*s", (int)MIN(strcspn(h, "/"), (size_t)40), h);
}

int weboidc_new(struct loop *loop, struct web *w, const struct oidc_config *cfg,
		struct weboidc **ret, char *err, size_t err_len)
{
	struct weboidc *o = calloc(1, sizeof(*o));
	char label[64];
	int r;

	if (!o) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	o->loop = loop;
	o->w = w;
	o->allow_unverified = cfg->allow_unverified_email;
	r = oidc_client_new(cfg, &o->c, err, err_len);
	if (r < 0)
		goto fail;
	r = workq_new(loop, WEBOIDC_THREADS, WEBOIDC_QUEUE_MAX, &o->wq);
	if (r < 0) {
		snprintf(err, err_len, "cannot start the OIDC workers: %s", strerror(-r));
		goto fail;
	}
	label_of(cfg->issuer, label, sizeof(label));
	r = web_method_add(w, label, "oidc", method_page, o);
	if (r < 0) {
		snprintf(err, err_len, "cannot add the OIDC login method: %s", strerror(-r));
		goto fail;
	}
	/* The first sign-in then redirects at once. */
	if (workq_submit(o->wq, &o->discover_job, discover_work, discover_done) < 0)
		log_warn("control: OIDC discovery not started (asked at the first sign-in)");
	*ret = o;
	return 0;
fail:
	weboidc_free(o);
	return r;
}

int weboidc_routes_add(struct weboidc *o, struct httpd *h)
{
	return httpd_route_add(h, "GET", "/register/oidc/", callback, o);
}

void weboidc_free(struct weboidc *o)
{
	if (!o)
		return;
	workq_free(o->wq);
	oidc_client_free(o->c);
	crypto_wipe(o, sizeof(*o));
	free(o);
}
