/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_WEBOIDC_H
#define TRELLIS_CONTROL_WEBOIDC_H

/*
 * Sign-in with an OpenID provider on the login pages (web.h, docs/identity.md): a
 * button on the sign-in page, to /register/CODE/oidc, and the redirect URI
 * WEBOIDC_CALLBACK_PATH the provider sends the browser back to. src/oidc does the
 * protocol; every request to the provider runs on this module's worker pool, and
 * the pages poll (a refresh each second) until it is done. Loop thread only.
 */

#include "oidc/client.h"

struct httpd;
struct loop;
struct web;
struct weboidc;

/* Under /register/: the session cookie's path, so the callback knows its browser. */
#define WEBOIDC_CALLBACK_PATH "/register/oidc/callback"
#define WEBOIDC_THREADS 2
#define WEBOIDC_QUEUE_MAX 64

/*
 * cfg->redirect_uri must be the server's public URL + WEBOIDC_CALLBACK_PATH. Adds the
 * method to w and starts discovery on the pool. 0, -EINVAL (err set), -ENOMEM.
 */
int weboidc_new(struct loop *loop, struct web *w, const struct oidc_config *cfg,
		struct weboidc **ret, char *err, size_t err_len);
/* GET WEBOIDC_CALLBACK_PATH: before the server's GET /register/ (the first match wins). */
int weboidc_routes_add(struct weboidc *o, struct httpd *h);
/* Accepts NULL. Waits for the requests running on the pool (bounded by their timeouts). */
void weboidc_free(struct weboidc *o);

#endif
