/* SPDX-License-Identifier: MIT */
#include "control/crlhttp.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/time.h"
#include "control/ca.h"
#include "control/store.h"
#include "crypto/mcert.h"
#include "net/httpd.h"
#include "proto/http.h"

/* How long a proxy or client may keep a list before asking again: a revocation shows soon. */
#define CRL_MAX_AGE_SEC 60

struct crl_entry {
	struct control_ca ca;
	char name[MCERT_KEY_ID_MAX];
	uint8_t *der; /* NULL: not made since the last change */
	size_t len;
	int64_t made; /* its thisUpdate */
};

struct crlhttp {
	struct store *store;
	char *state_dir;
	bool loaded; /* entries read since the last change */
	struct crl_entry *e;
	size_t n;
	uint64_t number; /* the last CRL number given out */
	struct crlhttp_stats stats;
};

int crlhttp_new(struct store *store, const char *state_dir, struct crlhttp **ret)
{
	struct crlhttp *h = calloc(1, sizeof(*h));

	if (!h || !(h->state_dir = strdup(state_dir))) {
		free(h);
		return -ENOMEM;
	}
	h->store = store;
	*ret = h;
	return 0;
}

static void entries_free(struct crlhttp *h)
{
	for (size_t i = 0; i < h->n; i++)
		free(h->e[i].der);
	free(h->e);
	h->e = NULL;
	h->n = 0;
	h->loaded = false;
}

void crlhttp_free(struct crlhttp *h)
{
	if (!h)
		return;
	entries_free(h);
	free(h->state_dir);
	free(h);
}

void crlhttp_changed(struct crlhttp *h)
{
	if (h)
		entries_free(h);
}

static int entries_load(struct crlhttp *h)
{
	struct control_ca *cas = NULL;
	size_t n = 0;
	int r = store_ca_list(h->store, &cas, &n);

	if (r < 0)
		return r;
	h->e = calloc(n ? n : 1, sizeof(*h->e));
	if (!h->e) {
		free(cas);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		struct crl_entry *e = &h->e[h->n];

		if (ca_crl_name(&cas[i], e->name) < 0)
			continue;
		e->ca = cas[i];
		h->n++;
	}
	free(cas);
	h->loaded = true;
	return 0;
}

/* A new list for e; the old one stays when this fails. */
static int entry_make(struct crlhttp *h, struct crl_entry *e, int64_t now)
{
	struct admin_op_ctx c = {
	    .store = h->store, .actor = "server", .now = now, .state_dir = h->state_dir};
	uint64_t number = (uint64_t)now > h->number ? (uint64_t)now : h->number + 1;
	char *pem = NULL;
	uint8_t *der = NULL;
	int r = ca_crl_make(&c, &e->ca, number, &pem);

	if (r == 0)
		r = mcert_crl_der(pem, strlen(pem), &der);
	free(pem);
	if (r < 0) {
		h->stats.failed++;
		log_ratelimited(LOG_LEVEL_WARN, "control: CRL of CA %" PRIu64 ": %s", e->ca.id,
				c.err[0] ? c.err : strerror(-r));
		return r;
	}
	free(e->der);
	e->der = der;
	e->len = (size_t)r;
	e->made = now;
	h->number = number;
	h->stats.made++;
	return 0;
}

int crlhttp_get(struct crlhttp *h, const char *name, int64_t now, const uint8_t **ret,
		size_t *ret_len)
{
	struct crl_entry *e = NULL;
	int r;

	if (!h->loaded) {
		entries_free(h);
		r = entries_load(h);
		if (r < 0) {
			log_ratelimited(LOG_LEVEL_WARN, "control: CRL: cannot read the CAs: %s",
					strerror(-r));
			return -EIO;
		}
	}
	for (size_t i = 0; i < h->n && !e; i++)
		if (strcmp(h->e[i].name, name) == 0)
			e = &h->e[i];
	if (!e) {
		h->stats.unknown++;
		return -ENOENT;
	}
	/* Half its validity gone (or the clock went back): made again, so it is good for days. */
	if ((!e->der || now >= e->made + CA_CRL_VALIDITY_SEC / 2 || now < e->made) &&
	    entry_make(h, e, now) < 0 && (!e->der || now >= e->made + CA_CRL_VALIDITY_SEC))
		return -EIO;
	h->stats.served++;
	*ret = e->der;
	*ret_len = e->len;
	return 0;
}

void crlhttp_stats_get(const struct crlhttp *h, struct crlhttp_stats *ret)
{
	*ret = h->stats;
}

/* GET /crl/NAME.crl, NAME 8 to 64 hex digits (any case: openssl prints upper). */
static void get_crl(struct httpd_request *r, void *ctx)
{
	struct crlhttp *h = ctx;
	const struct http_request *req = r->head;
	size_t plen = strlen(CA_CRL_PATH), slen = strlen(CA_CRL_SUFFIX), n;
	char name[MCERT_KEY_ID_MAX], hdr[64];
	const uint8_t *der;
	size_t len;
	int rc;

	if (req->target_len < plen + slen)
		return httpd_error(r, 404, NULL);
	n = req->target_len - plen - slen;
	if (n < 8 || n >= sizeof(name) || memcmp(req->target + plen + n, CA_CRL_SUFFIX, slen) != 0)
		return httpd_error(r, 404, NULL);
	for (size_t i = 0; i < n; i++) {
		char ch = req->target[plen + i];

		if (ch >= 'A' && ch <= 'F')
			ch = (char)(ch - 'A' + 'a');
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return httpd_error(r, 404, NULL);
		name[i] = ch;
	}
	name[n] = '\0';
	rc = crlhttp_get(h, name, time_wall_s(), &der, &len);
	if (rc == -ENOENT)
		return httpd_error(r, 404, NULL);
	if (rc < 0)
		return httpd_error(r, 503, NULL);
	snprintf(hdr, sizeof(hdr), "Cache-Control: max-age=%d\r\n", CRL_MAX_AGE_SEC);
	httpd_reply_headers(r, 200, "application/pkix-crl", hdr, der, len);
}

int crlhttp_routes_add(struct crlhttp *h, struct httpd *httpd)
{
	return httpd_route_add(httpd, "GET", CA_CRL_PATH, get_crl, h);
}
