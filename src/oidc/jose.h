/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OIDC_JOSE_H
#define TRELLIS_OIDC_JOSE_H

/*
 * The JOSE pieces an OpenID relying party needs, without I/O: base64url (RFC 4648
 * section 5, unpadded as JWS uses it), JWK sets (RFC 7517: RSA, EC P-256 and
 * Ed25519 public keys, as OpenSSL EVP keys) and JWS compact verification (RFC 7515)
 * for RS256, ES256 and EdDSA only. Everything else is refused: "none", HMAC (an
 * IdP's public key must never serve as an HMAC secret), a header naming a key we do
 * not hold, a key whose type does not fit the alg, critical header extensions.
 * Header parameters that point at keys (jku, jwk, x5u, x5c) are ignored: keys come
 * only from the provider's JWKS.
 *
 * Every input is bounded (OIDC_*_MAX); errors are -EINVAL with a sentence in err,
 * except an unknown key (-ENOKEY), which tells the caller to refetch the JWKS once:
 * the provider may have rotated its keys.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define OIDC_ERR_MAX 256
/* A JWKS document and the keys in it. */
#define OIDC_JWKS_MAX (256 * 1024)
#define OIDC_JWKS_KEYS_MAX 32
#define OIDC_KID_MAX 128
/* A compact JWS (an ID token), its decoded header and payload. */
#define OIDC_JWS_MAX (32 * 1024)
#define OIDC_JWS_HEADER_MAX 2048
/* RSA moduli we accept, in bits. */
#define OIDC_RSA_BITS_MIN 2048
#define OIDC_RSA_BITS_MAX 8192

enum oidc_alg {
	OIDC_ALG_NONE_KNOWN = 0,
	OIDC_ALG_RS256,
	OIDC_ALG_ES256,
	OIDC_ALG_EDDSA,
};

struct oidc_jwk {
	char kid[OIDC_KID_MAX + 1]; /* "" when the key has none */
	enum oidc_alg alg;	    /* the one its type allows (RSA: RS256, ...) */
	bool alg_pinned;	    /* the JWK's "alg" named it */
	void *pkey;		    /* EVP_PKEY *, public */
};

struct oidc_jwks {
	struct oidc_jwk keys[OIDC_JWKS_KEYS_MAX];
	size_t n;
	/* Keys left out (other types, curves, uses, bad parameters): not errors. */
	unsigned skipped;
};

/*
 * Unpadded base64url, strictly: the alphabet only, no '=', no stray bits in the
 * last character. Returns the byte count, -EINVAL or -ENOBUFS.
 */
int oidc_b64url_decode(uint8_t *out, size_t out_cap, const char *in, size_t in_len);
/* Writes the unpadded form and a NUL; returns its length or -ENOBUFS. */
int oidc_b64url_encode(char *out, size_t out_len, const uint8_t *in, size_t in_len);

/*
 * Parses a JWK set ({"keys": [...]}). Keys we cannot use (kty oct, other curves,
 * "use" other than "sig", malformed parameters) are skipped and counted; a set
 * with no usable key, more than OIDC_JWKS_KEYS_MAX keys, two keys with the same
 * kid, or that is not a JWK set at all is an error.
 */
int oidc_jwks_parse(const char *text, size_t len, struct oidc_jwks **ret, char *err,
		    size_t err_len);
void oidc_jwks_free(struct oidc_jwks *set);

/*
 * Verifies a compact JWS against set and returns its payload, parsed as a JSON
 * object (json_decref it). The key is the one named by the header's kid; without a
 * kid, the only key of the alg's type. 0; -ENOKEY: no such key in set (err says
 * which kid); -EINVAL: anything else (err says what). ret_alg, when not NULL, gets
 * the alg.
 */
int oidc_jws_verify(const char *jws, size_t len, const struct oidc_jwks *set, json_t **ret,
		    enum oidc_alg *ret_alg, char *err, size_t err_len);

const char *oidc_alg_name(enum oidc_alg alg);

/* For src/oidc: formats err (when not NULL) and returns r. */
int oidc_fail(char *err, size_t err_len, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
