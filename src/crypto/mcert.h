/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CRYPTO_MCERT_H
#define TRELLIS_CRYPTO_MCERT_H

/*
 * Machine certificates (docs/identity.md, "Machine certificates"): X.509 through
 * OpenSSL, no I/O. A tailnet's CA (Ed25519, or an imported Ed25519 or ECDSA P-256
 * CA) signs a certificate for a node's Ed25519 certificate key; the certificate
 * names the node's machine key (X25519, which cannot sign) in one subjectAltName
 * URI, urn:trellis:machine:HEX. At registration the node signs the control
 * session's handshake hash and its node key with the certificate key
 * (mcert_proof_sign): the hash binds the proof to this session, the server key
 * and the machine key, so a proof seen once is worth nothing on another
 * connection or for another node key.
 *
 * Everything that arrives from outside (a CSR from an admin, a certificate from
 * a node) is parsed with a size cap and checked in full; the checks return a
 * reason (enum mcert_result) that mcert_result_str words for people.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MCERT_KEY_LEN 32 /* Ed25519 certificate keys, X25519 machine keys */
#define MCERT_SIG_LEN 64
#define MCERT_HASH_LEN 32    /* the control session's handshake hash */
#define MCERT_DER_MAX 2048   /* a node's certificate; ours are about 400 bytes */
#define MCERT_PEM_MAX 4096   /* a certificate, CSR or CA key as PEM */
#define MCERT_SERIAL_MAX 41  /* hex of at most 20 bytes (RFC 5280 4.1.2.2), NUL */
#define MCERT_SUBJECT_MAX 64 /* the common name we keep */
#define MCERT_KEY_ID_MAX 65  /* hex of a key identifier (ours: SHA-1, 40 digits), NUL */
#define MCERT_URI_PREFIX "urn:trellis:machine:"
/* Validity of a new CA, and of a certificate signed without one named. */
#define MCERT_CA_VALIDITY_SEC (10LL * 365 * 86400)
#define MCERT_VALIDITY_DEFAULT_SEC (365LL * 86400)
/* A certificate is valid from this long before its signing (clocks differ a little). */
#define MCERT_BACKDATE_SEC 300

enum mcert_result {
	MCERT_OK = 0,
	MCERT_MALFORMED,     /* not DER/PEM, too large, not v3, extensions we do not accept */
	MCERT_KEY_TYPE,	     /* a certificate or CSR key other than Ed25519 */
	MCERT_NO_MACHINE,    /* no (or more than one) urn:trellis:machine: URI */
	MCERT_BAD_SIGNATURE, /* a CSR whose self-signature does not verify */
	MCERT_WRONG_CA,	     /* not issued by this CA, or its signature does not verify */
	MCERT_IS_CA,	     /* a CA certificate where a machine's is wanted */
	MCERT_NOT_YET_VALID,
	MCERT_EXPIRED,
	MCERT_WRONG_MACHINE, /* issued for another machine key */
	MCERT_WRONG_KEY,     /* the proof is not by the certificate's key */
	MCERT_REVOKED,	     /* (the store's revocation list; not decided here) */
};

const char *mcert_result_str(enum mcert_result r);

struct mcert_info {
	char serial[MCERT_SERIAL_MAX];	    /* lower-case hex, no leading zeros */
	char subject[MCERT_SUBJECT_MAX];    /* the CN, "" if none */
	uint8_t pub[MCERT_KEY_LEN];	    /* the certificate's (or CSR's) Ed25519 key */
	uint8_t machine_key[MCERT_KEY_LEN]; /* from the URI */
	int64_t not_before, not_after;	    /* Unix seconds (certificates only) */
	char issuer[MCERT_SUBJECT_MAX];	    /* the issuer's CN (certificates only) */
	/* The issuer's key identifier (authority key identifier), hex; "" if none. */
	char issuer_key_id[MCERT_KEY_ID_MAX];
};

/*
 * A CSR for the certificate key priv (raw Ed25519) naming machine_pub, with CN
 * cn (a host name; may be ""). PEM into ret (cap bytes, NUL-terminated).
 * Returns its length or -errno.
 */
int mcert_csr_make(const uint8_t priv[MCERT_KEY_LEN], const uint8_t machine_pub[MCERT_KEY_LEN],
		   const char *cn, char *ret, size_t cap);

/* A CSR in PEM: its self-signature verified, an Ed25519 key, one machine URI. */
enum mcert_result mcert_csr_parse(const char *pem, size_t len, struct mcert_info *ret);

/*
 * A new CA: an Ed25519 key (PKCS#8 PEM into key_pem) and its self-signed
 * certificate (PEM into cert_pem) with CN cn, valid from now - MCERT_BACKDATE_SEC
 * for validity_sec. 0 or -errno (-ENOSPC: a buffer too small).
 */
int mcert_ca_make(const char *cn, int64_t now, int64_t validity_sec, char *key_pem, size_t key_cap,
		  char *cert_pem, size_t cert_cap);

/*
 * An existing CA to import: the certificate must be a CA (basicConstraints
 * CA:TRUE) valid at now, its key Ed25519 or P-256, and key_pem its private key.
 * 0, or a reason (ret_why: what is wrong, in words).
 */
int mcert_ca_check(const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
		   int64_t now, const char **ret_why);

/* The longest CRL distribution point URL a certificate names. */
#define MCERT_CRL_URL_MAX 512

/*
 * Signs the certificate the CSR `req` asked for (its key, machine key and CN;
 * nothing else of the CSR is copied): a new random serial, valid
 * [not_before, not_after], CA:FALSE, digitalSignature, clientAuth, and with
 * crl_url (http:// or https://; NULL: none) a CRL distribution point (RFC 5280
 * 4.2.1.13) where relying parties fetch the CA's revocation list. PEM into
 * ret; *ret_info describes it. Returns the PEM's length or -errno.
 */
int mcert_sign(const char *ca_key_pem, size_t ca_key_len, const char *ca_cert_pem,
	       size_t ca_cert_len, const struct mcert_info *req, const char *crl_url,
	       int64_t not_before, int64_t not_after, struct mcert_info *ret_info, char *ret,
	       size_t cap);

/* A certificate's PEM to DER. Returns the DER's length or -EINVAL / -EMSGSIZE. */
int mcert_pem_to_der(const char *pem, size_t len, uint8_t *der, size_t cap);

/* A machine certificate (DER) read without its issuer: its shape, key and machine URI. */
enum mcert_result mcert_parse(const uint8_t *der, size_t len, struct mcert_info *ret);

/* A revoked certificate, for mcert_crl_make. */
struct mcert_revoked {
	char serial[MCERT_SERIAL_MAX]; /* hex */
	int64_t revoked_at;	       /* Unix seconds */
};
/* CRLs we make: at most this many entries (a tailnet revoking more has other problems). */
#define MCERT_CRL_MAX 100000

/*
 * The CA's certificate revocation list (RFC 5280 section 5, v2): the n revoked serials with
 * their dates, CRL number `number`, thisUpdate now, nextUpdate next_update, the CA's
 * authority key identifier, signed with its key. PEM into *ret (malloc'd, NUL-terminated;
 * set only on success). Returns its length or -errno (-EINVAL: a bad serial or key).
 */
int mcert_crl_make(const char *ca_key_pem, size_t ca_key_len, const char *ca_cert_pem,
		   size_t ca_cert_len, const struct mcert_revoked *list, size_t n, uint64_t number,
		   int64_t now, int64_t next_update, char **ret);

/* A CRL's PEM (mcert_crl_make's) as DER, malloc'd into *ret. Its length, -EINVAL, -ENOMEM. */
int mcert_crl_der(const char *pem, size_t len, uint8_t **ret);

/*
 * The full check of a node's certificate (DER) against its tailnet's CA (PEM):
 * mcert_parse, issued and signed by the CA, not a CA, valid at now. Revocation
 * is the caller's (by ret->serial).
 */
enum mcert_result mcert_verify(const char *ca_cert_pem, size_t ca_len, const uint8_t *der,
			       size_t len, int64_t now, struct mcert_info *ret);

/* The proof of the certificate key for one session and node key (see above). */
int mcert_proof_sign(const uint8_t priv[MCERT_KEY_LEN], const uint8_t hash[MCERT_HASH_LEN],
		     const uint8_t node_key[MCERT_KEY_LEN], uint8_t ret_sig[MCERT_SIG_LEN]);
bool mcert_proof_check(const uint8_t pub[MCERT_KEY_LEN], const uint8_t hash[MCERT_HASH_LEN],
		       const uint8_t node_key[MCERT_KEY_LEN], const uint8_t sig[MCERT_SIG_LEN]);

/* A SHA-256 fingerprint of a certificate's DER, as 64 hex digits (CA listings). */
int mcert_fingerprint(const char *cert_pem, size_t len, char ret[65]);
/*
 * A certificate's own key identifier (subject key identifier), hex: for a CA, what the
 * certificates it signs name as issuer_key_id. 0, or -EINVAL (none, too long, not PEM).
 */
int mcert_key_id(const char *cert_pem, size_t len, char ret[MCERT_KEY_ID_MAX]);

#endif
