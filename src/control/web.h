/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_WEB_H
#define TRELLIS_CONTROL_WEB_H

/*
 * The login pages (docs/identity.md): what the URL `trellis up` prints opens.
 *
 * A machine that registers without a credential waits (pending.h) under a code;
 * its URL is /register/CODE. The first browser that opens it gets a server-side
 * session (an opaque 256-bit id in an HttpOnly, SameSite=Lax cookie, Secure under
 * TLS) bound to the code; any other browser is refused, so the URL works once,
 * and it lasts as long as the registration waits (15 minutes). The page names the
 * machine (hostname, OS, machine key) before anyone signs in; signing in approves
 * it for the person who signs in. Every form carries the session's CSRF token.
 *
 *   sign-in --password (worker)--> checking --ok, 2FA enrolled--> totp --ok--> done
 *                                           \--ok, no 2FA yet---> enrol --ok--> done
 *   (wrong: back to sign-in, one message for a wrong password and an unknown address)
 *
 * Password checks run Argon2id on a worker thread (never on the event loop); the
 * page answering the POST refreshes itself (a meta refresh: no JavaScript) until
 * the check is done. An unknown address is checked against a dummy hash with the
 * same parameters: the same time, the same message. Failures are counted per
 * typed address and per source network (an IPv4 /24, an IPv6 /64): from the
 * WEB_FREE_FAILURES-th (WEB_FREE_FAILURES_SOURCE-th) on, each next try waits twice
 * as long (1 s, 2 s, ... up to WEB_DELAY_MAX_NS). A success clears the address's
 * count, never the source's (an attacker's own account must not reset it).
 *
 * The seam for other login methods (OIDC, src/oidc/): web_method_add puts a
 * button on the sign-in page linking to /register/CODE/<suffix> (a route of the
 * method's own); when the method has authenticated the person, its handler calls
 * web_login_complete with the code and who it is. That does everything after
 * authentication: the tailnet's 2FA requirement, tenancy (the email's domain
 * chooses the tailnet; the first user of a new company domain creates it and
 * becomes its admin; consumer domains get a personal tailnet each), the user
 * record, the tailnet's device approval setting, binding the machine to the user
 * and answering the waiting node; and it renders the result page.
 *
 * Loop thread only, but for the password worker.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/time.h"
#include "control/admin_op.h"

struct httpd;
struct httpd_request;
struct loop;
struct pending_reg;
struct store;
struct web;

#define WEB_SESSIONS_MAX 1024
#define WEB_FREE_FAILURES 3         /* per typed address */
#define WEB_FREE_FAILURES_SOURCE 10 /* per source network: an office shares one */
#define WEB_DELAY_MAX_NS (15 * 60 * NSEC_PER_SEC)
#define WEB_LIMIT_SLOTS 4096 /* per kind: addresses, sources (direct-mapped, keyed hash) */
#define WEB_METHODS_MAX 4
#define WEB_CONSUMER_DOMAINS_DEFAULT                                                               \
	"gmail.com,googlemail.com,outlook.com,hotmail.com,live.com,yahoo.com,icloud.com,me.com,"   \
	"proton.me,protonmail.com,gmx.de,gmx.net,web.de,aol.com,mail.com,yandex.com"

/* Who signed in, as the login method vouches for it. */
struct login_identity {
	const char *email;   /* any case; normalized here */
	bool email_verified; /* refused when false (the method may vouch: a configured exception) */
	const char *name;    /* display name, or NULL */
	const char *method;  /* "password", "oidc": for the log and the page */
	bool mfa;	     /* a second factor was used (TOTP here; an IdP's amr claim) */
};

struct web_env {
	struct loop *loop;
	struct store *store;
	bool tls;
	const char *consumer_domains; /* comma-separated; NULL: WEB_CONSUMER_DOMAINS_DEFAULT */
	/* The registration waiting under code, or NULL. */
	const struct pending_reg *(*pending_get)(void *arg, const char *code);
	/*
	 * Makes the registration under code a node of tailnet_id owned by user_id,
	 * approved or (device approval) waiting for an admin. 0 or -errno.
	 */
	int (*pending_complete)(void *arg, const char *code, uint64_t tailnet_id, uint64_t user_id,
				bool approved);
	/* Applies the tenancy's writes (tailnets, users) to the running server. */
	void (*committed)(void *arg, const char *actor, const struct store_op *op, uint64_t id);
	void *arg;
};

/* 0 or -errno. Starts the password worker; hashes the dummy password (a few ms to 1 s). */
int web_new(const struct web_env *env, struct web **ret);
/* Accepts NULL. */
void web_free(struct web *w);
/* POST /register/ routes (the GET is the server's, which calls web_page). 0 or -ENOMEM. */
int web_routes_add(struct web *w, struct httpd *h);

/* GET /register/CODE of a waiting registration: the page for this browser's step. */
void web_page(struct web *w, struct httpd_request *r, const char *code);

/*
 * A login method's own route: GET /register/CODE/<suffix>[?...], called for the
 * browser that holds the code's session while the registration waits and no
 * password sign-in is under way. The method answers r (web_reply_*, or
 * web_login_complete once it knows who it is).
 */
typedef void (*web_method_fn)(struct httpd_request *r, const char *code, void *ctx);
/*
 * Another login method: a button "label" on the sign-in page, to
 * /register/CODE/<suffix>, which fn answers. 0, -ENOSPC, -EINVAL.
 */
int web_method_add(struct web *w, const char *label, const char *suffix, web_method_fn fn,
		   void *ctx);
/* GET /register/CODE/<rest> (server.c's GET /register/ passes it on): a method's route. */
void web_method_page(struct web *w, struct httpd_request *r, const char *code, const char *rest);
/* Is r's cookie the session bound to code (of a registration that still waits)? */
bool web_session_owns(struct web *w, struct httpd_request *r, const char *code);
/*
 * Answers for a method's pages, with the login pages' headers: a page that says text
 * and asks for refresh_path again in a second (no JavaScript: work on a worker is
 * polled); a message with a way back to the code's sign-in page (code NULL: none);
 * a redirect (302) to url.
 */
void web_reply_wait(struct web *w, struct httpd_request *r, const char *title, const char *text,
		    const char *refresh_path);
void web_reply_message(struct web *w, struct httpd_request *r, unsigned status, const char *title,
		       const char *text, const char *code);
void web_reply_redirect(struct web *w, struct httpd_request *r, const char *url);
/*
 * The login method authenticated `who` for the registration under code, in
 * request r (whose cookie must be the session the code is bound to: a login
 * started in another browser is refused). Completes it (see above) and answers r.
 */
void web_login_complete(struct web *w, struct httpd_request *r, const char *code,
			const struct login_identity *who);
/*
 * serve --consumer-domains: "D,D" (spaces after commas allowed), each a domain name (letters,
 * digits, '-', '.'; at most 253). 0, or -EINVAL with the first bad entry said in err.
 */
int web_consumer_domains_check(const char *list, char *err, size_t err_len);
/*
 * The tenancy of an address: its tailnet (created when missing, *ret_created
 * set), its user there (created when missing). 0, -EINVAL (address), -errno.
 */
int web_tenancy(struct admin_op_ctx *c, const char *consumer_domains, const char *email,
		struct control_tailnet *ret_tailnet, struct control_user *ret_user,
		bool *ret_created);

#endif
