/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_CRLHTTP_H
#define TRELLIS_CONTROL_CRLHTTP_H

/*
 * Each machine CA's revocation list over HTTP (docs/identity.md, "Revocation lists"):
 * GET /crl/NAME.crl answers the CA's current X.509 CRL as DER (application/pkix-crl,
 * RFC 5280 4.2.1.13 and RFC 2585), without authentication, for relying parties other
 * than the server (the server itself reads the store at each registration). NAME is
 * what ca_crl_name gives: the CA's key identifier, which a certificate of it carries
 * as its authority key identifier, so that nobody lists the tailnets' CAs by
 * counting; it is the URL certificates name as their CRL distribution point
 * (ca_crl_url). Retired CAs keep theirs.
 *
 * Nothing an unauthenticated request does makes the server sign: a CA's list is made
 * once and kept (a state per CA: none -> made -> stale -> made ...), and made anew only
 * when the store's CAs or certificates changed (a revocation, a new or retired CA:
 * crlhttp_changed, from the admin API's writes and the change feed) or when half of its
 * validity (CA_CRL_VALIDITY_SEC) has passed, so that a fetched list is always good for
 * days. The CA names are read from the store once per change too: an unknown NAME is a
 * 404 from memory. Making one fails rarely (the CA's key file gone): the old list is
 * served while it is valid, else 503.
 *
 * Loop thread only.
 */

#include <stddef.h>
#include <stdint.h>

struct httpd;
struct store;
struct crlhttp;

struct crlhttp_stats {
	uint64_t served, made, failed, unknown;
};

/* state_dir: where the CAs' keys are (ca.h), copied. 0 or -ENOMEM. */
int crlhttp_new(struct store *store, const char *state_dir, struct crlhttp **ret);
void crlhttp_free(struct crlhttp *h);
/* GET /crl/NAME.crl on h's server. 0 or -ENOMEM. */
int crlhttp_routes_add(struct crlhttp *h, struct httpd *httpd);
/* The store's CAs or certificates changed: every list is made again when next asked for. */
void crlhttp_changed(struct crlhttp *h);
/*
 * The DER of the list of the CA named `name` (lower-case hex) at now (Unix seconds), made if
 * need be; valid until the next crlhttp_changed or crlhttp_get. 0, -ENOENT (no such CA),
 * -EIO (none can be made and none is valid).
 */
int crlhttp_get(struct crlhttp *h, const char *name, int64_t now, const uint8_t **ret,
		size_t *ret_len);
void crlhttp_stats_get(const struct crlhttp *h, struct crlhttp_stats *ret);

#endif
