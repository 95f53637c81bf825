/* SPDX-License-Identifier: MIT */
/*
 * The login pages (web.h). A session's state machine:
 *
 *   SIGN_IN  --POST login: password check queued--> CHECKING
 *   CHECKING --worker done: wrong--> SIGN_IN (a message; the failure counted)
 *            --right, TOTP enrolled--> TOTP
 *            --right, none yet--> ENROL (a fresh secret, shown as a QR code)
 *   TOTP     --POST totp: a code of an unused step, or a recovery code--> DONE
 *            (a factor an admin enrolled and no code confirmed yet takes a code only: this
 *            one confirms it)
 *   ENROL    --POST enrol: a code of the new secret--> DONE (recovery codes shown once)
 *   DONE     the registration is completed (web_login_complete); the code no longer waits
 *
 * A session lives as long as its code waits (or WEB_SESSION_TTL_NS): the first
 * browser that opens the URL owns it; the code is never bound twice.
 */
#include "control/web.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <qrencode.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/password.h"
#include "auth/totp.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "base/workq.h"
#include "control/pending.h"
#include "control/store.h"
#include "control/users.h"
#include "control/webform.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "proto/http.h"

#define WEB_SESSION_TTL_NS PENDING_TTL_NS
#define ID_BYTES 32
#define ID_HEX (2 * ID_BYTES)
#define COOKIE "trellis_session"
#define PAGE_MAX 24576
#define FORM_MAX 4096
#define SOURCE_MAX 17

enum step { STEP_SIGN_IN, STEP_CHECKING, STEP_TOTP, STEP_ENROL, STEP_DONE };

struct web_session {
	bool used;
	char id[ID_HEX + 1];
	char csrf[ID_HEX + 1];
	char code[PENDING_CODE_LEN + 1];
	enum step step;
	char email[CONTROL_EMAIL_MAX]; /* from the password step on */
	char msg[160];		       /* shown once on the next page */
	uint8_t enrol_secret[TOTP_SECRET_LEN];
	bool totp_pending; /* TOTP: the factor waits for its first code (model.h) */
	char done_html[2048]; /* DONE: the result, shown again on reload */
	uint64_t expires_ns;
};

struct limit_slot {
	uint64_t key;
	uint32_t fails;
	uint64_t until_ns;
};

/* A password check on the worker: copies of what it needs, wiped after. */
struct check_job {
	struct workq_job job;
	struct web *w;
	char session_id[ID_HEX + 1];
	char email[CONTROL_EMAIL_MAX];
	char password[PASSWORD_MAX + 1];
	char encoded[PASSWORD_HASH_MAX];
	bool known;
	char src[SOURCE_MAX];
	/* the worker's */
	int result;
	bool stale;
	char upgraded[PASSWORD_HASH_MAX];
};

struct web_method {
	char label[64];
	char suffix[32];
	web_method_fn fn;
	void *ctx;
};

struct web {
	struct web_env env;
	struct workq *wq;
	struct password_params params;
	char dummy[PASSWORD_HASH_MAX]; /* what an unknown address is checked against */
	struct workq_job dummy_job;
	uint8_t limit_key[32];
	struct limit_slot by_email[WEB_LIMIT_SLOTS], by_source[WEB_LIMIT_SLOTS];
	struct web_session sessions[WEB_SESSIONS_MAX];
	struct web_method methods[WEB_METHODS_MAX];
	unsigned n_methods;
};

/* ---- pages ---- */

struct page {
	char *buf;
	size_t len, cap;
	bool full;
};

static void put(struct page *p, const char *s)
{
	size_t n = strlen(s);

	if (p->len + n >= p->cap) {
		p->full = true;
		return;
	}
	memcpy(p->buf + p->len, s, n + 1);
	p->len += n;
}

__attribute__((format(printf, 2, 3))) static void putf(struct page *p, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(p->buf + p->len, p->cap - p->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= p->cap - p->len) {
		p->buf[p->len] = '\0';
		p->full = true;
		return;
	}
	p->len += (size_t)n;
}

static void esc(struct page *p, const char *s)
{
	if (webform_html_escape(p->buf, p->cap, &p->len, s) < 0)
		p->full = true;
}

static void head(struct page *p, const char *title)
{
	put(p, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
	       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
	       "<title>");
	esc(p, title);
	put(p,
	    " - Trellis</title><style>"
	    "body{font:16px/1.5 system-ui,sans-serif;max-width:34em;margin:3em auto;"
	    "padding:0 1em;color:#1d2330}"
	    "h1{font-size:1.4em}.machine{background:#f1f4f8;border-radius:6px;padding:.8em 1em}"
	    "label{display:block;margin:.8em 0 .2em}input{font:inherit;padding:.4em;width:100%;"
	    "box-sizing:border-box}button,.button{font:inherit;margin-top:1em;padding:.5em 1.2em;"
	    "background:#2750c4;color:#fff;border:0;border-radius:4px;text-decoration:none;"
	    "display:inline-block}.msg{color:#a8201a}.ok{color:#19703b}code,pre{font-size:.95em}"
	    "svg{width:14em;height:14em}</style></head><body>\n<h1>");
	esc(p, title);
	put(p, "</h1>\n");
}

/* The machine that asks, named before anyone approves it. */
static void machine(struct page *p, const struct pending_reg *pr)
{
	char mk[64];

	totp_base32_encode(pr->machine_key, 10, mk); /* a short fingerprint, as nodes show it */
	put(p, "<div class=\"machine\"><pre>");
	put(p, "hostname:    ");
	esc(p, pr->hostname);
	put(p, "\nos:          ");
	esc(p, pr->os[0] ? pr->os : "-");
	putf(p, "\nmachine key: %s\n</pre></div>\n", mk);
}

static void hidden_csrf(struct page *p, const struct web_session *ss)
{
	putf(p, "<input type=\"hidden\" name=\"csrf\" value=\"%s\">", ss->csrf);
}

/* The login pages' answer; location: a redirect's target (status 302), else NULL. */
static void reply_full(struct web *w, struct httpd_request *r, unsigned status,
		       const struct web_session *set_cookie, const char *location,
		       const struct page *p)
{
	char hdr[4000];
	int n;

	/* The URL holds the registration's code: it must not leak into a Referer. */
	n = snprintf(hdr, sizeof(hdr),
		     "Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\n"
		     "X-Frame-Options: DENY\r\nX-Content-Type-Options: nosniff\r\n"
		     "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
		     "img-src data:; form-action 'self'; frame-ancestors 'none'\r\n");
	if (set_cookie)
		n += snprintf(hdr + n, sizeof(hdr) - (size_t)n,
			      "Set-Cookie: " COOKIE
			      "=%s; Path=/register/; HttpOnly; SameSite=Lax%s\r\n",
			      set_cookie->id, w->env.tls ? "; Secure" : "");
	if (location && snprintf(hdr + n, sizeof(hdr) - (size_t)n, "Location: %s\r\n", location) >=
			    (int)(sizeof(hdr) - (size_t)n))
		return httpd_error(r, 500, "redirect too long");
	if (p->full)
		return httpd_error(r, 500, "login page too large");
	httpd_reply_headers(r, status, "text/html; charset=utf-8", hdr, p->buf, p->len);
}

static void reply_page(struct web *w, struct httpd_request *r, unsigned status,
		       const struct web_session *set_cookie, const struct page *p)
{
	reply_full(w, r, status, set_cookie, NULL, p);
}

static void simple(struct web *w, struct httpd_request *r, unsigned status, const char *title,
		   const char *text)
{
	web_reply_message(w, r, status, title, text, NULL);
}

/* An inline SVG of the QR code of text (libqrencode), or nothing if it does not encode. */
static void qr_svg(struct page *p, const char *text)
{
	QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
	int n;

	if (!q)
		return;
	n = q->width;
	putf(p,
	     "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"-4 -4 %d %d\" "
	     "shape-rendering=\"crispEdges\" role=\"img\" aria-label=\"QR code\">"
	     "<rect x=\"-4\" y=\"-4\" width=\"%d\" height=\"%d\" fill=\"#fff\"/><path d=\"",
	     n + 8, n + 8, n + 8, n + 8);
	for (int y = 0; y < n; y++)
		for (int x = 0; x < n; x++)
			if (q->data[y * n + x] & 1)
				putf(p, "M%d %dh1v1h-1z", x, y);
	put(p, "\"/></svg>\n");
	QRcode_free(q);
}

/* ---- sessions ---- */

static void hex(const uint8_t *b, size_t n, char *ret)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		ret[2 * i] = d[b[i] >> 4];
		ret[2 * i + 1] = d[b[i] & 15];
	}
	ret[2 * n] = '\0';
}

static int random_hex(char ret[ID_HEX + 1])
{
	uint8_t b[ID_BYTES];

	if (crypto_random(b, sizeof(b)) < 0)
		return -EIO;
	hex(b, sizeof(b), ret);
	return 0;
}

static void session_end(struct web_session *ss)
{
	crypto_wipe(ss, sizeof(*ss));
}

/* Sessions whose code no longer waits, or that are too old, go. */
static void sessions_sweep(struct web *w, uint64_t now)
{
	for (size_t i = 0; i < WEB_SESSIONS_MAX; i++) {
		struct web_session *ss = &w->sessions[i];

		if (!ss->used)
			continue;
		if (now >= ss->expires_ns ||
		    (ss->step != STEP_DONE && !w->env.pending_get(w->env.arg, ss->code)))
			session_end(ss);
	}
}

static struct web_session *session_by_code(struct web *w, const char *code)
{
	for (size_t i = 0; i < WEB_SESSIONS_MAX; i++)
		if (w->sessions[i].used && strcmp(w->sessions[i].code, code) == 0)
			return &w->sessions[i];
	return NULL;
}

static struct web_session *session_by_id(struct web *w, const char *id)
{
	if (strlen(id) != ID_HEX)
		return NULL;
	for (size_t i = 0; i < WEB_SESSIONS_MAX; i++)
		if (w->sessions[i].used && crypto_equal(w->sessions[i].id, id, ID_HEX))
			return &w->sessions[i];
	return NULL;
}

/* The session of r's cookie, if it is the one bound to code. */
static struct web_session *session_of(struct web *w, struct httpd_request *r, const char *code)
{
	const struct http_header *c =
	    http_header_find(r->head->headers, r->head->n_headers, "Cookie");
	char id[ID_HEX + 2];
	struct web_session *ss;

	if (!c || webform_cookie(c->value, c->value_len, COOKIE, id, sizeof(id)) != ID_HEX)
		return NULL;
	ss = session_by_id(w, id);
	return ss && strcmp(ss->code, code) == 0 ? ss : NULL;
}

/* ---- failure limits ---- */

static struct limit_slot *limit_slot(struct web *w, struct limit_slot *table, const char *kind,
				     const char *key)
{
	uint8_t h[8];
	uint64_t k;
	struct blake2s_state b;
	struct limit_slot *sl;

	blake2s_init_key(&b, sizeof(h), w->limit_key, sizeof(w->limit_key));
	blake2s_update(&b, kind, strlen(kind) + 1);
	blake2s_update(&b, key, strlen(key));
	blake2s_final(&b, h);
	memcpy(&k, h, sizeof(k));
	k |= 1; /* never 0: an empty slot */
	sl = &table[k % WEB_LIMIT_SLOTS];
	if (sl->key != k)
		*sl = (struct limit_slot){.key = k};
	return sl;
}

static void limit_fail(struct limit_slot *sl, uint32_t free_failures, uint64_t now)
{
	sl->fails++;
	if (sl->fails >= free_failures) {
		unsigned sh = MIN(sl->fails - free_failures, 20u);
		uint64_t d = MIN((uint64_t)NSEC_PER_SEC << sh, WEB_DELAY_MAX_NS);

		sl->until_ns = now + d;
	}
}

/* A source network as text: an IPv4 /24 (6 hex digits) or an IPv6 /64 (16). */
static void source_of(const char *peer, char ret[SOURCE_MAX])
{
	uint8_t a[16];

	if (inet_pton(AF_INET, peer, a) == 1)
		hex(a, 3, ret);
	else if (inet_pton(AF_INET6, peer, a) == 1)
		hex(a, 8, ret);
	else
		snprintf(ret, SOURCE_MAX, "other");
}

/* ---- the password worker ---- */

static void check_work(struct workq_job *j)
{
	struct check_job *c = (struct check_job *)j;
	struct web *w = c->w;

	/* The dummy was hashed by the first job on this (the only) worker thread. */
	if (!c->known)
		snprintf(c->encoded, sizeof(c->encoded), "%s", w->dummy);
	c->result = password_verify(c->encoded, c->password, &w->params, &c->stale);
	if (!c->known && c->result == 0)
		c->result = -EACCES; /* the dummy's password is random: cannot happen */
	if (c->result == 0 && c->stale && password_hash(c->password, &w->params, c->upgraded) < 0)
		c->stale = false;
	crypto_wipe(c->password, sizeof(c->password));
}

static void enrol_begin(struct web_session *ss)
{
	if (crypto_random(ss->enrol_secret, sizeof(ss->enrol_secret)) < 0)
		memset(ss->enrol_secret, 0, sizeof(ss->enrol_secret));
	ss->step = STEP_ENROL;
}

static void check_done(struct workq_job *j, int err)
{
	struct check_job *c = (struct check_job *)j;
	struct web *w = c->w;
	struct web_session *ss = session_by_id(w, c->session_id);
	uint64_t now = loop_now_ns(w->env.loop);
	struct control_account a;

	if (!ss || ss->step != STEP_CHECKING)
		goto out;
	if (err < 0 || c->result < 0 || store_account_get(w->env.store, c->email, &a) < 0) {
		/* One message for a wrong password and an unknown address. */
		limit_fail(limit_slot(w, w->by_email, "email", c->email), WEB_FREE_FAILURES, now);
		limit_fail(limit_slot(w, w->by_source, "source", c->src), WEB_FREE_FAILURES_SOURCE,
			   now);
		ss->step = STEP_SIGN_IN;
		snprintf(ss->msg, sizeof(ss->msg), "%s",
			 err == -ECANCELED ? "The server is busy. Try again."
					   : "Wrong email address or password.");
		log_info("control: web: %s: sign-in failed", ss->code);
		goto out;
	}
	limit_slot(w, w->by_email, "email", c->email)->fails = 0;
	if (c->stale && strcmp(a.password, c->encoded) == 0) {
		struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT, .account = a};

		/* Upgrade on login: the parameters changed since this hash was made. */
		snprintf(op.account.password, sizeof(op.account.password), "%s", c->upgraded);
		if (store_write(w->env.store, &op, NULL) == 0)
			log_info("control: web: %s: password hash upgraded", a.email);
		crypto_wipe(&op, sizeof(op));
	}
	snprintf(ss->email, sizeof(ss->email), "%s", a.email);
	ss->totp_pending = control_account_totp_pending(&a);
	if (a.totp)
		ss->step = STEP_TOTP;
	else
		enrol_begin(ss);
	crypto_wipe(&a, sizeof(a));
out:
	crypto_wipe(c, sizeof(*c));
	free(c);
}

/* ---- the pages of each step ---- */

/* What went wrong at the last step (wrong password, wrong code), if anything. */
static void alert(struct page *p, const struct web_session *ss)
{
	if (!ss->msg[0])
		return;
	put(p, "<p class=\"msg\" role=\"alert\">");
	esc(p, ss->msg);
	put(p, "</p>\n");
}

static void page_sign_in(struct web *w, struct page *p, const struct web_session *ss,
			 const struct pending_reg *pr)
{
	head(p, "Sign in to approve this machine");
	put(p, "<p>This machine asks to join a Trellis network:</p>\n");
	machine(p, pr);
	if (pr->node_id)
		put(p, "<p>It is in a network already and its key expired (or it made a new "
		       "one): the person it belongs to signs in to renew it.</p>\n");
	put(p, "<p>If you did not just run <code>trellis up</code> on it, close this page.</p>\n");
	alert(p, ss);
	putf(p, "<form method=\"post\" action=\"/register/%s/login\">", ss->code);
	hidden_csrf(p, ss);
	put(p, "<label for=\"email\">Email address</label><input id=\"email\" name=\"email\" "
	       "type=\"email\" autocomplete=\"username\" required autofocus>"
	       "<label for=\"password\">Password</label><input id=\"password\" name=\"password\" "
	       "type=\"password\" autocomplete=\"current-password\" required>"
	       "<button type=\"submit\">Sign in and approve</button></form>\n");
	for (unsigned i = 0; i < w->n_methods; i++) {
		putf(p, "<p><a class=\"button\" href=\"/register/%s/%s\">", ss->code,
		     w->methods[i].suffix);
		esc(p, w->methods[i].label);
		put(p, "</a></p>\n");
	}
	putf(p,
	     "<p><small>Or an administrator approves it on the server with "
	     "<code>trellis-control nodes approve reg:%s</code>.</small></p>\n",
	     ss->code);
}

static void page_totp(struct page *p, const struct web_session *ss, const struct pending_reg *pr)
{
	head(p, "Two-factor authentication");
	machine(p, pr);
	alert(p, ss);
	if (ss->totp_pending)
		put(p, "<p>Your administrator set up a second factor for your account. Type the "
		       "code your authenticator app shows for it: this confirms it.</p>\n");
	putf(p, "<form method=\"post\" action=\"/register/%s/totp\">", ss->code);
	hidden_csrf(p, ss);
	/* A pending factor takes no recovery code (model.h): the label does not offer one. */
	put(p, ss->totp_pending ? "<label for=\"code\">The 6-digit code from your authenticator "
				 "app</label>"
			       : "<label for=\"code\">The 6-digit code from your authenticator app, "
				 "or a recovery code</label>");
	put(p, "<input id=\"code\" name=\"code\" autocomplete=\"one-time-code\" "
	       "inputmode=\"numeric\" required autofocus>"
	       "<button type=\"submit\">Verify and approve</button></form>\n");
}

static void page_enrol(struct page *p, const struct web_session *ss, const struct pending_reg *pr)
{
	char uri[TOTP_URI_MAX], secret[TOTP_SECRET_B32_MAX];

	head(p, "Set up two-factor authentication");
	machine(p, pr);
	put(p, "<p>Your account needs a second factor. Scan this code with an authenticator app "
	       "(or enter the secret by hand), then type the code it shows.</p>\n");
	if (totp_uri(USERS_TOTP_ISSUER, ss->email, ss->enrol_secret, sizeof(ss->enrol_secret), uri,
		     sizeof(uri)) == 0)
		qr_svg(p, uri);
	totp_base32_encode(ss->enrol_secret, sizeof(ss->enrol_secret), secret);
	putf(p, "<p>Secret: <code id=\"secret\">%s</code></p>\n", secret);
	alert(p, ss);
	putf(p, "<form method=\"post\" action=\"/register/%s/enrol\">", ss->code);
	hidden_csrf(p, ss);
	put(p, "<label for=\"code\">Code from the app</label><input id=\"code\" name=\"code\" "
	       "autocomplete=\"one-time-code\" inputmode=\"numeric\" required autofocus>"
	       "<button type=\"submit\">Turn on and approve</button></form>\n");
	crypto_wipe(secret, sizeof(secret));
}

static void render(struct web *w, struct httpd_request *r, struct web_session *ss,
		   const struct pending_reg *pr, bool set_cookie)
{
	char *buf = malloc(PAGE_MAX);
	struct page p = {.buf = buf, .cap = PAGE_MAX};

	if (!buf)
		return httpd_error(r, 503, "out of memory");
	buf[0] = '\0';
	switch (ss->step) {
	case STEP_SIGN_IN:
		page_sign_in(w, &p, ss, pr);
		break;
	case STEP_CHECKING:
		/* No JavaScript: the page asks again in a second until the worker is done. */
		head(&p, "Signing in");
		putf(&p,
		     "<meta http-equiv=\"refresh\" content=\"1; url=/register/%s\">"
		     "<p>Checking your password...</p>\n",
		     ss->code);
		break;
	case STEP_TOTP:
		page_totp(&p, ss, pr);
		break;
	case STEP_ENROL:
		page_enrol(&p, ss, pr);
		break;
	case STEP_DONE:
		head(&p, "Done");
		put(&p, ss->done_html);
		break;
	}
	put(&p, "</body></html>\n");
	ss->msg[0] = '\0';
	reply_page(w, r, 200, set_cookie ? ss : NULL, &p);
	free(buf);
}

void web_page(struct web *w, struct httpd_request *r, const char *code)
{
	uint64_t now = loop_now_ns(w->env.loop);
	const struct pending_reg *pr = w->env.pending_get(w->env.arg, code);
	struct web_session *ss, *bound;

	sessions_sweep(w, now);
	ss = session_of(w, r, code);
	if (ss && (pr || ss->step == STEP_DONE))
		return render(w, r, ss, pr, false);
	if (!pr)
		return simple(w, r, 404, "Not waiting",
			      "No registration waits under this code: it was approved, it expired "
			      "(15 minutes), or it never was. Run `trellis up` again.");
	bound = session_by_code(w, code);
	if (bound)
		return simple(w, r, 403, "Link already used",
			      "This login link was already opened in another browser: it works "
			      "once. Run `trellis up` on the machine again for a new one.");
	for (size_t i = 0; i < WEB_SESSIONS_MAX; i++) {
		if (w->sessions[i].used)
			continue;
		ss = &w->sessions[i];
		memset(ss, 0, sizeof(*ss));
		if (random_hex(ss->id) < 0 || random_hex(ss->csrf) < 0)
			return httpd_error(r, 503, "no randomness");
		ss->used = true;
		snprintf(ss->code, sizeof(ss->code), "%s", code);
		ss->expires_ns = now + WEB_SESSION_TTL_NS;
		ss->step = STEP_SIGN_IN;
		return render(w, r, ss, pr, true);
	}
	simple(w, r, 503, "Busy", "Too many sign-ins at once. Try again in a minute.");
}

/* ---- completing a login ---- */

static bool consumer(const char *list, const char *domain)
{
	size_t n = strlen(domain);

	for (const char *p = list; *p;) {
		size_t l = strcspn(p, ",");

		if (l == n && strncasecmp(p, domain, n) == 0)
			return true;
		p += l;
		while (*p == ',' || *p == ' ')
			p++;
	}
	return false;
}

#define DOMAIN_CHARS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."

int web_consumer_domains_check(const char *list, char *err, size_t err_len)
{
	const char *p = list;

	do {
		size_t l;

		while (*p == ' ')
			p++;
		l = strcspn(p, ",");
		if (!l || l > 253 || strspn(p, DOMAIN_CHARS) != l || p[0] == '.' || p[0] == '-') {
			snprintf(err, err_len, "\"%.*s\" is not a domain name (list them as D,D)",
				 (int)MIN(l, 64), p);
			return -EINVAL;
		}
		p += l;
	} while (*p++ == ',');
	return 0;
}

int web_tenancy(struct admin_op_ctx *c, const char *consumer_domains, const char *email,
		struct control_tailnet *ret_tailnet, struct control_user *ret_user,
		bool *ret_created)
{
	char norm[CONTROL_EMAIL_MAX], name[NETMAP_NAME_MAX];
	const char *domain;
	int r;

	if (users_email_normalize(email, norm) < 0)
		return -EINVAL;
	domain = users_email_domain(norm);
	if (consumer(consumer_domains ? consumer_domains : WEB_CONSUMER_DOMAINS_DEFAULT, domain)) {
		/* A personal tailnet: "ann-at-gmail.com", or a hash when that is too long. */
		size_t at = (size_t)(domain - 1 - norm);
		uint8_t h[8];

		if (snprintf(name, sizeof(name), "%.*s-at-%s", (int)at, norm, domain) >=
			(int)sizeof(name) ||
		    !admin_op_name_valid(name, sizeof(name), false)) {
			blake2s(h, sizeof(h), norm, strlen(norm), NULL, 0);
			snprintf(name, sizeof(name), "personal-");
			hex(h, sizeof(h), name + 9);
		}
	} else if (snprintf(name, sizeof(name), "%s", domain) >= (int)sizeof(name) ||
		   !admin_op_name_valid(name, sizeof(name), false)) {
		return -EINVAL;
	}
	*ret_created = false;
	r = store_tailnet_get_by_name(c->store, name, ret_tailnet);
	if (r == -ENOENT) {
		r = admin_op_tailnet_create(c, name, ADMIN_KEY_EXPIRY_DEFAULT_SEC,
					    ADMIN_EPHEMERAL_TIMEOUT_DEFAULT_SEC, ret_tailnet);
		*ret_created = r == 0;
		if (r == -EEXIST) /* another login made it a moment ago */
			r = store_tailnet_get_by_name(c->store, name, ret_tailnet);
	}
	if (r < 0)
		return r;
	r = store_user_get_by_name(c->store, ret_tailnet->id, norm, ret_user);
	if (r == -ENOENT)
		r = admin_op_user_create(c, name, norm, ret_user);
	return r;
}

#define ADMIN_SETTING_PREFIX "tailnet-admin/"
/* The last refused re-login of a node (an audited write: who tried, in the audit log). */
#define RELOGIN_REFUSED_PREFIX "relogin-refused/"

/* The session's login is done (ss->done_html says how): that page, with extra once. */
static void done_reply(struct web *w, struct httpd_request *r, struct web_session *ss,
		       const char *extra)
{
	struct page p;

	ss->step = STEP_DONE;
	ss->expires_ns = loop_now_ns(w->env.loop) + 60 * NSEC_PER_SEC;
	if (!extra)
		return render(w, r, ss, NULL, false);
	p = (struct page){.buf = malloc(PAGE_MAX), .cap = PAGE_MAX};
	if (!p.buf)
		return httpd_error(r, 503, "out of memory");
	head(&p, "Done");
	put(&p, ss->done_html);
	put(&p, extra);
	put(&p, "</body></html>\n");
	reply_page(w, r, 200, NULL, &p);
	crypto_wipe(p.buf, p.cap);
	free(p.buf);
}

/* A refusal after sign-in; extra (recovery codes just made) is still shown, once. */
static void refuse(struct web *w, struct httpd_request *r, unsigned status, const char *title,
		   const char *text, const char *extra)
{
	struct page p;

	if (!extra)
		return simple(w, r, status, title, text);
	p = (struct page){.buf = malloc(PAGE_MAX), .cap = PAGE_MAX};
	if (!p.buf)
		return httpd_error(r, 503, "out of memory");
	head(&p, title);
	put(&p, "<p class=\"msg\" role=\"alert\">");
	esc(&p, text);
	put(&p, "</p>\n");
	put(&p, extra);
	put(&p, "</body></html>\n");
	reply_page(w, r, status, NULL, &p);
	crypto_wipe(p.buf, p.cap);
	free(p.buf);
}

/* Someone else signed in for a known node's re-login: written, so the audit log has it. */
static void relogin_refused_audit(struct admin_op_ctx *c, uint64_t node_id, const char *email)
{
	struct store_op op = {.kind = STORE_OP_SETTING_SET};
	char target[AUDIT_TARGET_MAX];
	struct control_node n;
	int len;

	snprintf(op.setting.key, sizeof(op.setting.key), RELOGIN_REFUSED_PREFIX "%" PRIu64,
		 node_id);
	len = snprintf((char *)op.setting.value, sizeof(op.setting.value), "%s", email);
	op.setting.len = (size_t)MIN(len, (int)sizeof(op.setting.value) - 1);
	snprintf(target, sizeof(target), "node:%" PRIu64 " %s", node_id,
		 store_node_get(c->store, node_id, &n) == 0 ? n.name : "?");
	if (admin_op_commit(c, "node.relogin_refused", target, &op, NULL) < 0)
		log_warn("control: web: cannot audit the refused re-login of node %" PRIu64,
			 node_id);
}

/*
 * A known node logging in again (pending.h): only the user it belongs to renews it, in its
 * own tailnet. No tenancy: a refused sign-in creates nothing. The node keeps its record
 * (id, name, addresses) and takes the new key (server.c: pending_finish).
 */
static void relogin(struct web *w, struct httpd_request *r, struct web_session *ss,
		    const struct pending_reg *pr, const struct login_identity *who,
		    struct admin_op_ctx *c, const char *extra)
{
	char norm[CONTROL_EMAIL_MAX], code[PENDING_CODE_LEN + 1], hostname[NETMAP_NAME_MAX];
	uint64_t node_id = pr->node_id;
	struct control_tailnet t;
	struct control_user u;
	struct page p;
	bool valid;
	int err;

	snprintf(code, sizeof(code), "%s", ss->code);
	snprintf(hostname, sizeof(hostname), "%s", pr->hostname);
	valid = users_email_normalize(who->email, norm) == 0;
	if (!valid || store_user_get_by_name(w->env.store, pr->tailnet_id, norm, &u) < 0 ||
	    u.id != pr->owner_id) {
		log_info("control: web: %s: %s refused: node %" PRIu64 " (%s) is not theirs", code,
			 who->email, node_id, hostname);
		relogin_refused_audit(c, node_id, valid ? norm : who->email);
		/* The link is free again: the owner may open it in their own browser. */
		session_end(ss);
		return refuse(w, r, 403, "Not your machine",
			      "This machine belongs to another person: only they can sign in to "
			      "renew it. Nothing was changed.",
			      extra);
	}
	if (store_tailnet_get(w->env.store, pr->tailnet_id, &t) < 0)
		return refuse(w, r, 409, "Cannot approve",
			      "The machine could not be renewed. Run `trellis up` again.", extra);
	if (t.require_2fa && !who->mfa) {
		log_info("control: web: %s: %s refused: tailnet %s requires a second factor", code,
			 u.name, t.name);
		return refuse(w, r, 403, "Second factor required",
			      "This network requires a second factor at sign-in, and yours did "
			      "not use one.",
			      extra);
	}
	err = w->env.pending_complete(w->env.arg, code, t.id, u.id, true);
	if (err < 0) {
		log_info("control: web: %s: renewing node %" PRIu64 " for %s failed: %s", code,
			 node_id, u.name, strerror(-err));
		return refuse(w, r, 409, "Cannot approve",
			      "The machine could not be renewed. Run `trellis up` again.", extra);
	}
	log_info("control: web: %s (%s) signed in again by %s with %s%s: node %" PRIu64
		 " renewed in tailnet %s",
		 code, hostname, u.name, who->method, who->mfa ? " and a second factor" : "",
		 node_id, t.name);
	p = (struct page){.buf = ss->done_html, .cap = sizeof(ss->done_html)};
	ss->done_html[0] = '\0';
	put(&p, "<p class=\"ok\">");
	esc(&p, hostname);
	put(&p, " is signed in again as ");
	esc(&p, u.name);
	put(&p, " (tailnet ");
	esc(&p, t.name);
	put(&p, "): it keeps its name and addresses. You can close this page.</p>\n");
	done_reply(w, r, ss, extra);
}

/* web_login_complete, with extra HTML for this answer only (recovery codes: shown once). */
static void complete(struct web *w, struct httpd_request *r, const char *code,
		     const struct login_identity *who, const char *extra)
{
	struct admin_op_ctx c = {
	    .store = w->env.store,
	    .now = time_wall_s(),
	    .committed = w->env.committed,
	    .arg = w->env.arg,
	};
	const struct pending_reg *pr = w->env.pending_get(w->env.arg, code);
	struct web_session *ss = session_of(w, r, code);
	struct control_tailnet t;
	struct control_user u;
	struct control_account a;
	char actor[CONTROL_EMAIL_MAX + 8], key[STORE_SETTING_KEY_MAX], hostname[NETMAP_NAME_MAX];
	struct page p;
	bool created, admin = false;
	int err;

	if (!ss || !pr)
		return simple(w, r, 403, "Not signed in",
			      "This sign-in does not belong to a waiting registration of this "
			      "browser. Run `trellis up` again.");
	if (!who->email_verified)
		return simple(w, r, 403, "Address not verified",
			      "Your identity provider has not verified your email address.");
	snprintf(actor, sizeof(actor), "web:%.*s", CONTROL_EMAIL_MAX - 1, who->email);
	c.actor = actor;
	if (pr->node_id)
		return relogin(w, r, ss, pr, who, &c, extra);
	snprintf(hostname, sizeof(hostname), "%s", pr->hostname);
	err = web_tenancy(&c, w->env.consumer_domains, who->email, &t, &u, &created);
	if (err < 0) {
		log_info("control: web: %s: tenancy of %s refused: %s", code, who->email, c.err);
		return simple(w, r, 403, "Cannot sign in",
			      "This address cannot be given a network here.");
	}
	if (t.require_2fa && !who->mfa) {
		log_info("control: web: %s: %s refused: tailnet %s requires a second factor", code,
			 u.name, t.name);
		return simple(w, r, 403, "Second factor required",
			      "This network requires a second factor at sign-in, and yours did "
			      "not use one.");
	}
	if (created) {
		/* The first user of a new domain creates its tailnet and is its admin. */
		admin = true;
		snprintf(key, sizeof(key), ADMIN_SETTING_PREFIX "%" PRIu64, t.id);
		if (store_setting_set(w->env.store, key, u.name, strlen(u.name)) < 0)
			log_warn("control: web: cannot record %s as admin of %s", u.name, t.name);
		log_info("control: web: %s created tailnet %s and is its admin", u.name, t.name);
	} else {
		char who_created[CONTROL_EMAIL_MAX];
		int len;

		/* The tailnet's creator (by any method), or a local account made --admin. */
		snprintf(key, sizeof(key), ADMIN_SETTING_PREFIX "%" PRIu64, t.id);
		len = store_setting_get(w->env.store, key, who_created, sizeof(who_created) - 1);
		if (len >= 0 && (size_t)len < sizeof(who_created)) {
			who_created[len] = '\0';
			admin = strcmp(who_created, u.name) == 0;
		}
		if (!admin && store_account_get(w->env.store, u.name, &a) == 0) {
			admin = a.admin;
			crypto_wipe(&a, sizeof(a));
		}
	}
	err = w->env.pending_complete(w->env.arg, code, t.id, u.id, !t.device_approval);
	if (err < 0) {
		log_info("control: web: %s: completing for %s failed: %s", code, u.name,
			 strerror(-err));
		return simple(w, r, 409, "Cannot approve",
			      "The machine could not be added. Run `trellis up` again.");
	}
	log_info("control: web: %s (%s) signed in by %s with %s%s: %s joins tailnet %s%s", code,
		 hostname, u.name, who->method, who->mfa ? " and a second factor" : "", hostname,
		 t.name, t.device_approval ? " after an admin approves it" : "");
	p = (struct page){.buf = ss->done_html, .cap = sizeof(ss->done_html)};
	ss->done_html[0] = '\0';
	put(&p, "<p class=\"ok\">");
	esc(&p, hostname);
	put(&p, t.device_approval ? " is registered to " : " joins the network as ");
	esc(&p, u.name);
	put(&p, " (tailnet ");
	esc(&p, t.name);
	put(&p, admin ? ", where you are an admin)." : ").");
	put(&p, t.device_approval ? " An administrator approves new devices in this network: it "
				    "connects once they do.</p>\n"
				  : " You can close this page.</p>\n");
	done_reply(w, r, ss, extra);
}

void web_login_complete(struct web *w, struct httpd_request *r, const char *code,
			const struct login_identity *who)
{
	complete(w, r, code, who, NULL);
}

/* ---- posts ---- */

static bool csrf_ok(const struct web_session *ss, struct httpd_request *r)
{
	char got[ID_HEX + 2];

	return webform_field(r->body, r->body_len, "csrf", got, sizeof(got)) == ID_HEX &&
	       crypto_equal(got, ss->csrf, ID_HEX);
}

static void post_login(struct web *w, struct httpd_request *r, struct web_session *ss,
		       const struct pending_reg *pr)
{
	uint64_t now = loop_now_ns(w->env.loop);
	struct check_job *c;
	struct limit_slot *le, *ls;
	struct control_account a;
	uint64_t until;
	int pl;

	if (ss->step != STEP_SIGN_IN)
		return render(w, r, ss, pr, false);
	c = calloc(1, sizeof(*c));
	if (!c)
		return httpd_error(r, 503, "out of memory");
	c->w = w;
	memcpy(c->session_id, ss->id, sizeof(c->session_id));
	pl = webform_field(r->body, r->body_len, "password", c->password, sizeof(c->password));
	if (pl < 0 || webform_field(r->body, r->body_len, "email", a.email, sizeof(a.email)) < 0 ||
	    users_email_normalize(a.email, c->email) < 0) {
		snprintf(ss->msg, sizeof(ss->msg), "Wrong email address or password.");
		goto refuse;
	}
	source_of(r->peer, c->src);
	le = limit_slot(w, w->by_email, "email", c->email);
	ls = limit_slot(w, w->by_source, "source", c->src);
	until = MAX(le->until_ns, ls->until_ns);
	if (now < until) {
		snprintf(ss->msg, sizeof(ss->msg),
			 "Too many failed sign-ins. Try again in %" PRIu64 " seconds.",
			 (uint64_t)((until - now + NSEC_PER_SEC - 1) / NSEC_PER_SEC));
		goto refuse;
	}
	c->known = store_account_get(w->env.store, c->email, &a) == 0;
	if (c->known)
		snprintf(c->encoded, sizeof(c->encoded), "%s", a.password);
	crypto_wipe(&a, sizeof(a));
	if (workq_submit(w->wq, &c->job, check_work, check_done) < 0) {
		snprintf(ss->msg, sizeof(ss->msg), "The server is busy. Try again.");
		goto refuse;
	}
	ss->step = STEP_CHECKING;
	return render(w, r, ss, pr, false);
refuse:
	crypto_wipe(c, sizeof(*c));
	free(c);
	render(w, r, ss, pr, false);
}

static void totp_failed(struct web *w, struct web_session *ss, const char *src, int err)
{
	uint64_t now = loop_now_ns(w->env.loop);

	limit_fail(limit_slot(w, w->by_email, "email", ss->email), WEB_FREE_FAILURES, now);
	limit_fail(limit_slot(w, w->by_source, "source", src), WEB_FREE_FAILURES_SOURCE, now);
	snprintf(ss->msg, sizeof(ss->msg), "%s",
		 err == -EALREADY ? "That code was used already. Wait for the next one."
				  : "Wrong code.");
	log_info("control: web: %s: second factor of %s refused%s", ss->code, ss->email,
		 err == -EALREADY ? " (a replay)" : "");
}

/* The second factor of an enrolled account: a TOTP code of an unused step, or a recovery code. */
static void post_totp(struct web *w, struct httpd_request *r, struct web_session *ss,
		      const struct pending_reg *pr)
{
	struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT};
	struct control_account *a = &op.account;
	struct login_identity who = {.method = "password", .email_verified = true, .mfa = true};
	uint64_t now = loop_now_ns(w->env.loop), until, step = 0;
	char code[32], src[SOURCE_MAX];
	uint8_t h[TOTP_RECOVERY_HASH_LEN];
	int err = -EACCES;
	bool pending;

	if (ss->step != STEP_TOTP)
		return render(w, r, ss, pr, false);
	source_of(r->peer, src);
	until = MAX(limit_slot(w, w->by_email, "email", ss->email)->until_ns,
		    limit_slot(w, w->by_source, "source", src)->until_ns);
	if (now < until) {
		snprintf(ss->msg, sizeof(ss->msg),
			 "Too many failed tries. Try again in %" PRIu64 " seconds.",
			 (uint64_t)((until - now + NSEC_PER_SEC - 1) / NSEC_PER_SEC));
		return render(w, r, ss, pr, false);
	}
	if (webform_field(r->body, r->body_len, "code", code, sizeof(code)) < 0 ||
	    store_account_get(w->env.store, ss->email, a) < 0 || !a->totp) {
		totp_failed(w, ss, src, -EACCES);
		goto out;
	}
	pending = control_account_totp_pending(a);
	err = totp_verify(a->totp_secret, sizeof(a->totp_secret), code, (uint64_t)time_wall_s(),
			  a->totp_last_step, &step);
	if (err == 0) {
		a->totp_last_step = step;
		if (pending)
			log_info("control: web: %s confirmed the second factor an admin enrolled",
				 a->email);
	} else if (!pending && totp_recovery_hash(code, h) == 0) {
		/* Not while pending: the factor counts only once the app has shown it holds it. */
		for (unsigned i = 0; i < a->n_recovery; i++) {
			if (!crypto_equal(h, a->recovery[i], sizeof(h)))
				continue;
			/* Spent: the last one takes its place. */
			memcpy(a->recovery[i], a->recovery[--a->n_recovery], sizeof(h));
			err = 0;
			log_info("control: web: %s used a recovery code (%u left)", a->email,
				 a->n_recovery);
			break;
		}
	}
	if (err < 0) {
		totp_failed(w, ss, src, err);
		goto out;
	}
	/* Durable before the login counts: a replay after a crash is still refused. */
	if (store_write(w->env.store, &op, NULL) < 0) {
		snprintf(ss->msg, sizeof(ss->msg), "The server is busy. Try again.");
		goto out;
	}
	limit_slot(w, w->by_email, "email", ss->email)->fails = 0;
	who.email = a->email;
	web_login_complete(w, r, ss->code, &who);
	crypto_wipe(&op, sizeof(op));
	return;
out:
	crypto_wipe(&op, sizeof(op));
	render(w, r, ss, pr, false);
}

/* First login: the new secret is kept once a code of it proves the app has it. */
static void post_enrol(struct web *w, struct httpd_request *r, struct web_session *ss,
		       const struct pending_reg *pr)
{
	struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT};
	struct control_account *a = &op.account;
	struct login_identity who = {.method = "password", .email_verified = true, .mfa = true};
	char code[32], src[SOURCE_MAX], rc[CONTROL_RECOVERY_MAX][TOTP_RECOVERY_LEN], done[2048];
	uint64_t step = 0;
	struct page p;
	int err;

	if (ss->step != STEP_ENROL)
		return render(w, r, ss, pr, false);
	source_of(r->peer, src);
	if (webform_field(r->body, r->body_len, "code", code, sizeof(code)) < 0 ||
	    store_account_get(w->env.store, ss->email, a) < 0 || a->totp) {
		totp_failed(w, ss, src, -EACCES);
		goto out;
	}
	err = totp_verify(ss->enrol_secret, sizeof(ss->enrol_secret), code, (uint64_t)time_wall_s(),
			  0, &step);
	if (err < 0) {
		totp_failed(w, ss, src, err);
		goto out;
	}
	a->totp = true;
	memcpy(a->totp_secret, ss->enrol_secret, sizeof(a->totp_secret));
	a->totp_last_step = step;
	a->n_recovery = CONTROL_RECOVERY_MAX;
	for (unsigned i = 0; i < CONTROL_RECOVERY_MAX; i++)
		if (totp_recovery_generate(rc[i]) < 0 ||
		    totp_recovery_hash(rc[i], a->recovery[i]) < 0)
			goto busy;
	if (store_write(w->env.store, &op, NULL) < 0)
		goto busy;
	log_info("control: web: %s enrolled a second factor", a->email);
	crypto_wipe(ss->enrol_secret, sizeof(ss->enrol_secret));
	who.email = a->email;
	/* The recovery codes, on this answer only (a reload does not show them again). */
	p = (struct page){.buf = done, .cap = sizeof(done)};
	done[0] = '\0';
	put(&p, "<p>Your recovery codes: each signs in once when you do not have your "
		"authenticator. Keep them somewhere safe: they are not shown again.</p>"
		"<pre id=\"recovery\">");
	for (unsigned i = 0; i < CONTROL_RECOVERY_MAX; i++)
		putf(&p, "%s\n", rc[i]);
	put(&p, "</pre>\n");
	complete(w, r, ss->code, &who, done);
	crypto_wipe(rc, sizeof(rc));
	crypto_wipe(done, sizeof(done));
	crypto_wipe(&op, sizeof(op));
	return;
busy:
	snprintf(ss->msg, sizeof(ss->msg), "The server is busy. Try again.");
out:
	crypto_wipe(rc, sizeof(rc));
	crypto_wipe(&op, sizeof(op));
	render(w, r, ss, pr, false);
}

/* POST /register/CODE/{login,totp,enrol} */
static void post_register(struct httpd_request *r, void *ctx)
{
	struct web *w = ctx;
	const struct http_request *req = r->head;
	const char *t = req->target + 10, *slash;
	char code[PENDING_CODE_LEN + 1], arg[8 + PENDING_CODE_LEN], what[8];
	const struct pending_reg *pr;
	struct web_session *ss;
	size_t tl = req->target_len - 10;

	slash = memchr(t, '/', tl);
	if (!slash || (size_t)(slash - t) != PENDING_CODE_LEN || tl - PENDING_CODE_LEN - 1 >= 6)
		return httpd_error(r, 404, NULL);
	snprintf(arg, sizeof(arg), "reg:%.*s", PENDING_CODE_LEN, t);
	snprintf(what, sizeof(what), "%.*s", (int)(tl - PENDING_CODE_LEN - 1), slash + 1);
	if (!pending_code_parse(arg, code))
		return httpd_error(r, 404, NULL);
	sessions_sweep(w, loop_now_ns(w->env.loop));
	ss = session_of(w, r, code);
	pr = w->env.pending_get(w->env.arg, code);
	if (!ss || !pr)
		return simple(
		    w, r, 403, "Not signed in",
		    "This form does not belong to a waiting registration of this browser. "
		    "Open the link `trellis up` printed, or run it again.");
	if (!csrf_ok(ss, r))
		return httpd_error(r, 403, "login form without its CSRF token");
	if (strcmp(what, "login") == 0)
		return post_login(w, r, ss, pr);
	if (strcmp(what, "totp") == 0)
		return post_totp(w, r, ss, pr);
	if (strcmp(what, "enrol") == 0)
		return post_enrol(w, r, ss, pr);
	httpd_error(r, 404, NULL);
}

int web_routes_add(struct web *w, struct httpd *h)
{
	return httpd_route_add_body(h, "POST", "/register/", FORM_MAX, post_register, w);
}

int web_method_add(struct web *w, const char *label, const char *suffix, web_method_fn fn,
		   void *ctx)
{
	struct web_method *m;

	if (w->n_methods == WEB_METHODS_MAX)
		return -ENOSPC;
	if (strlen(label) >= sizeof(m->label) || strlen(suffix) >= sizeof(m->suffix) ||
	    strspn(suffix, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(suffix) ||
	    !suffix[0] || !fn)
		return -EINVAL;
	m = &w->methods[w->n_methods++];
	snprintf(m->label, sizeof(m->label), "%s", label);
	snprintf(m->suffix, sizeof(m->suffix), "%s", suffix);
	m->fn = fn;
	m->ctx = ctx;
	return 0;
}

void web_method_page(struct web *w, struct httpd_request *r, const char *code, const char *rest)
{
	const struct pending_reg *pr = w->env.pending_get(w->env.arg, code);
	size_t n = strcspn(rest, "?");
	struct web_session *ss;

	sessions_sweep(w, loop_now_ns(w->env.loop));
	ss = session_of(w, r, code);
	if (ss && ss->step == STEP_DONE)
		return render(w, r, ss, NULL, false);
	if (!ss || !pr)
		return simple(w, r, 403, "Not signed in",
			      "This sign-in does not belong to a waiting registration of this "
			      "browser. Open the link `trellis up` printed, or run it again.");
	/* A password sign-in under way in this session: its page, not another method's. */
	if (ss->step != STEP_SIGN_IN)
		return render(w, r, ss, pr, false);
	for (unsigned i = 0; i < w->n_methods; i++)
		if (strlen(w->methods[i].suffix) == n && !strncmp(w->methods[i].suffix, rest, n))
			return w->methods[i].fn(r, code, w->methods[i].ctx);
	httpd_error(r, 404, NULL);
}

bool web_session_owns(struct web *w, struct httpd_request *r, const char *code)
{
	struct web_session *ss = session_of(w, r, code);

	return ss && ss->step != STEP_DONE && w->env.pending_get(w->env.arg, code);
}

void web_reply_wait(struct web *w, struct httpd_request *r, const char *title, const char *text,
		    const char *refresh_path)
{
	char buf[4096];
	struct page p = {.buf = buf, .cap = sizeof(buf)};

	head(&p, title);
	put(&p, "<meta http-equiv=\"refresh\" content=\"1; url=");
	esc(&p, refresh_path);
	put(&p, "\"><p>");
	esc(&p, text);
	put(&p, "</p></body></html>\n");
	reply_page(w, r, 200, NULL, &p);
}

void web_reply_message(struct web *w, struct httpd_request *r, unsigned status, const char *title,
		       const char *text, const char *code)
{
	char buf[4096];
	struct page p = {.buf = buf, .cap = sizeof(buf)};

	head(&p, title);
	put(&p, "<p class=\"msg\" role=\"alert\">");
	esc(&p, text);
	put(&p, "</p>\n");
	if (code)
		putf(&p, "<p><a class=\"button\" href=\"/register/%s\">Back to sign-in</a></p>\n",
		     code);
	put(&p, "</body></html>\n");
	reply_page(w, r, status, NULL, &p);
}

void web_reply_redirect(struct web *w, struct httpd_request *r, const char *url)
{
	char buf[128];
	struct page p = {.buf = buf, .cap = sizeof(buf)};

	put(&p, "<!doctype html>\n<title>Redirecting - Trellis</title>\n");
	reply_full(w, r, 302, NULL, url, &p);
}

/* The hash an unknown address is checked against: of a random password nobody knows. */
static void dummy_work(struct workq_job *j)
{
	struct web *w = container_of(j, struct web, dummy_job);
	char pw[ID_HEX + 1];

	if (random_hex(pw) < 0 || password_hash(pw, &w->params, w->dummy) < 0)
		w->dummy[0] = '\0'; /* password_verify refuses it: -EINVAL, a failed sign-in */
	crypto_wipe(pw, sizeof(pw));
}

static void dummy_done(struct workq_job *j, int err)
{
	(void)j;
	(void)err;
}

int web_new(const struct web_env *env, struct web **ret)
{
	struct web *w = calloc(1, sizeof(*w));
	int r = -ENOMEM;

	if (!w)
		return -ENOMEM;
	w->env = *env;
	w->params = PASSWORD_PARAMS_DEFAULT;
	/* One thread: jobs run in order, so the dummy below is there before any check. */
	if (workq_new(env->loop, 1, 64, &w->wq) < 0)
		goto fail;
	r = -EIO;
	if (crypto_random(w->limit_key, sizeof(w->limit_key)) < 0)
		goto fail;
	r = workq_submit(w->wq, &w->dummy_job, dummy_work, dummy_done);
	if (r < 0)
		goto fail;
	*ret = w;
	return 0;
fail:
	web_free(w);
	return r;
}

void web_free(struct web *w)
{
	if (!w)
		return;
	workq_free(w->wq);
	crypto_wipe(w, sizeof(*w));
	free(w);
}
