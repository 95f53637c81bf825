/* SPDX-License-Identifier: MIT */
/*
 * Machine certificates over OpenSSL's X509 (mcert.h). What we sign is built from
 * fields we checked, never copied wholesale from a CSR, so a CSR cannot smuggle in
 * CA:TRUE, other names or other extensions. What we accept is checked in full:
 * the DER consumed exactly, v3, no unknown critical extension, an Ed25519 key, one
 * machine URI, then (mcert_verify) issuer, signature and time.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/crypto.h"
#include "crypto/mcert.h"

static const char proof_label[] = "trellis machine certificate proof v1";

const char *mcert_result_str(enum mcert_result r)
{
	switch (r) {
	case MCERT_OK:
		return "valid";
	case MCERT_MALFORMED:
		return "malformed";
	case MCERT_KEY_TYPE:
		return "its key is not Ed25519";
	case MCERT_NO_MACHINE:
		return "it names no machine key (one " MCERT_URI_PREFIX " URI)";
	case MCERT_BAD_SIGNATURE:
		return "its signature does not verify";
	case MCERT_WRONG_CA:
		return "not issued by this tailnet's CA";
	case MCERT_IS_CA:
		return "a CA certificate, not a machine's";
	case MCERT_NOT_YET_VALID:
		return "not yet valid";
	case MCERT_EXPIRED:
		return "expired";
	case MCERT_WRONG_MACHINE:
		return "issued for another machine key";
	case MCERT_WRONG_KEY:
		return "the proof is not made with the certificate's key";
	case MCERT_REVOKED:
		return "revoked";
	}
	return "?";
}

/* ---- helpers ---- */

static BIO *bio_of(const char *pem, size_t len)
{
	if (!pem || len == 0 || len > MCERT_PEM_MAX)
		return NULL;
	return BIO_new_mem_buf(pem, (int)len);
}

/* A memory BIO's contents into ret (NUL-terminated). Length, or -ENOSPC. */
static int bio_take(BIO *b, char *ret, size_t cap)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);

	if (n < 0 || (size_t)n >= cap)
		return -ENOSPC;
	memcpy(ret, p, (size_t)n);
	ret[n] = '\0';
	return (int)n;
}

static int time_of(const ASN1_TIME *t, int64_t *ret)
{
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return -EINVAL;
	*ret = (int64_t)timegm(&tm);
	return 0;
}

static void hex_of(const uint8_t *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int unhex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* "urn:trellis:machine:" and 64 lower-case hex digits: the key, or -EINVAL. */
static int machine_uri_parse(const unsigned char *s, int len, uint8_t ret[MCERT_KEY_LEN])
{
	size_t pl = sizeof(MCERT_URI_PREFIX) - 1;

	if (len != (int)(pl + 2 * MCERT_KEY_LEN) || memcmp(s, MCERT_URI_PREFIX, pl) != 0)
		return -EINVAL;
	for (size_t i = 0; i < MCERT_KEY_LEN; i++) {
		int hi = unhex((char)s[pl + 2 * i]), lo = unhex((char)s[pl + 2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		ret[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* The one machine URI among the names: 0, or MCERT_NO_MACHINE. */
static enum mcert_result machine_from_names(const GENERAL_NAMES *names, uint8_t ret[MCERT_KEY_LEN])
{
	int found = 0;

	for (int i = 0; names && i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const ASN1_IA5STRING *u;

		if (gn->type != GEN_URI)
			continue;
		u = gn->d.uniformResourceIdentifier;
		if (machine_uri_parse(ASN1_STRING_get0_data(u), ASN1_STRING_length(u), ret) == 0)
			found++;
	}
	return found == 1 ? MCERT_OK : MCERT_NO_MACHINE;
}

/* The raw Ed25519 key of pkey: 0, or MCERT_KEY_TYPE. */
static enum mcert_result ed25519_of(EVP_PKEY *pkey, uint8_t ret[MCERT_KEY_LEN])
{
	size_t n = MCERT_KEY_LEN;

	if (!pkey || EVP_PKEY_get_id(pkey) != EVP_PKEY_ED25519 ||
	    EVP_PKEY_get_raw_public_key(pkey, ret, &n) != 1 || n != MCERT_KEY_LEN)
		return MCERT_KEY_TYPE;
	return MCERT_OK;
}

/* A CN we keep: host-name characters, others replaced, at most MCERT_SUBJECT_MAX - 1. */
static void cn_clean(const char *in, size_t len, char ret[MCERT_SUBJECT_MAX])
{
	size_t n = 0;

	for (size_t i = 0; i < len && n + 1 < MCERT_SUBJECT_MAX; i++) {
		unsigned char c = (unsigned char)in[i];

		ret[n++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				   (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
			       ? (char)c
			       : '-';
	}
	ret[n] = '\0';
}

/* A key identifier as hex ("" and -EINVAL when absent or longer than we show). */
static int key_id_hex(const ASN1_OCTET_STRING *id, char ret[MCERT_KEY_ID_MAX])
{
	int n = id ? ASN1_STRING_length(id) : 0;

	ret[0] = '\0';
	if (n <= 0 || 2 * n >= MCERT_KEY_ID_MAX)
		return -EINVAL;
	hex_of(ASN1_STRING_get0_data(id), (size_t)n, ret);
	return 0;
}

static void cn_of(const X509_NAME *name, char ret[MCERT_SUBJECT_MAX])
{
	int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	const ASN1_STRING *s;

	ret[0] = '\0';
	if (i < 0)
		return;
	s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
	if (s)
		cn_clean((const char *)ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s),
			 ret);
}

static X509_NAME *name_make(const char *cn)
{
	X509_NAME *n = X509_NAME_new();

	if (n && cn[0] &&
	    X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_UTF8, (const unsigned char *)cn,
				       -1, -1, 0) != 1) {
		X509_NAME_free(n);
		return NULL;
	}
	return n;
}

static int ext_add(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	int ok = e && X509_add_ext(x, e, -1) == 1;

	X509_EXTENSION_free(e);
	return ok ? 0 : -EIO;
}

static void machine_uri(const uint8_t key[MCERT_KEY_LEN], char *ret, size_t cap)
{
	char hex[2 * MCERT_KEY_LEN + 1];

	hex_of(key, MCERT_KEY_LEN, hex);
	snprintf(ret, cap, "URI:%s%s", MCERT_URI_PREFIX, hex);
}

/* A signature digest for key: none for Ed25519, SHA-256 for ECDSA. */
static const EVP_MD *md_for(EVP_PKEY *key)
{
	return EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 ? NULL : EVP_sha256();
}

static int serial_hex(const ASN1_INTEGER *a, char ret[MCERT_SERIAL_MAX])
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(a, NULL);
	char *h = bn && !BN_is_negative(bn) && !BN_is_zero(bn) ? BN_bn2hex(bn) : NULL;
	int r = -EINVAL;

	if (h && strlen(h) < MCERT_SERIAL_MAX) {
		for (size_t i = 0; h[i]; i++)
			ret[i] = (char)(h[i] >= 'A' && h[i] <= 'F' ? h[i] - 'A' + 'a' : h[i]);
		ret[strlen(h)] = '\0';
		r = 0;
	}
	OPENSSL_free(h);
	BN_free(bn);
	return r;
}

/* ---- CSR ---- */

int mcert_csr_make(const uint8_t priv[MCERT_KEY_LEN], const uint8_t machine_pub[MCERT_KEY_LEN],
		   const char *cn, char *ret, size_t cap)
{
	EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, priv, MCERT_KEY_LEN);
	STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
	X509_REQ *req = X509_REQ_new();
	X509_NAME *name = NULL;
	X509_EXTENSION *san = NULL;
	char clean[MCERT_SUBJECT_MAX], uri[128];
	BIO *b = NULL;
	int r = -EIO;

	cn_clean(cn ? cn : "", cn ? strlen(cn) : 0, clean);
	machine_uri(machine_pub, uri, sizeof(uri));
	name = name_make(clean);
	san = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, uri);
	if (!pkey || !exts || !req || !name || !san || !sk_X509_EXTENSION_push(exts, san))
		goto out;
	san = NULL; /* the stack's */
	if (X509_REQ_set_version(req, X509_REQ_VERSION_1) != 1 ||
	    X509_REQ_set_subject_name(req, name) != 1 || X509_REQ_set_pubkey(req, pkey) != 1 ||
	    X509_REQ_add_extensions(req, exts) != 1 || X509_REQ_sign(req, pkey, NULL) <= 0)
		goto out;
	b = BIO_new(BIO_s_mem());
	if (!b || PEM_write_bio_X509_REQ(b, req) != 1)
		goto out;
	r = bio_take(b, ret, cap);
out:
	BIO_free(b);
	X509_EXTENSION_free(san);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(name);
	X509_REQ_free(req);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	return r;
}

enum mcert_result mcert_csr_parse(const char *pem, size_t len, struct mcert_info *ret)
{
	BIO *b = bio_of(pem, len);
	X509_REQ *req = b ? PEM_read_bio_X509_REQ(b, NULL, NULL, NULL) : NULL;
	STACK_OF(X509_EXTENSION) *exts = NULL;
	GENERAL_NAMES *names = NULL;
	EVP_PKEY *pkey;
	enum mcert_result r = MCERT_MALFORMED;

	memset(ret, 0, sizeof(*ret));
	if (!req)
		goto out;
	pkey = X509_REQ_get0_pubkey(req);
	r = ed25519_of(pkey, ret->pub);
	if (r)
		goto out;
	r = MCERT_BAD_SIGNATURE;
	if (X509_REQ_verify(req, pkey) != 1)
		goto out;
	exts = X509_REQ_get_extensions(req);
	for (int i = 0; exts && i < sk_X509_EXTENSION_num(exts); i++) {
		X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);

		if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name && !names)
			names = X509V3_EXT_d2i(e);
	}
	r = machine_from_names(names, ret->machine_key);
	if (r)
		goto out;
	cn_of(X509_REQ_get_subject_name(req), ret->subject);
out:
	GENERAL_NAMES_free(names);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_REQ_free(req);
	BIO_free(b);
	ERR_clear_error();
	return r;
}

/* ---- CA ---- */

static X509 *cert_read(const char *pem, size_t len)
{
	BIO *b = bio_of(pem, len);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	return x;
}

static EVP_PKEY *key_read(const char *pem, size_t len)
{
	BIO *b = bio_of(pem, len);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	return k;
}

static int validity_set(X509 *x, int64_t not_before, int64_t not_after)
{
	return ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before) &&
		       ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after)
		   ? 0
		   : -EIO;
}

static int serial_random(X509 *x)
{
	uint8_t raw[16];
	BIGNUM *bn = NULL;
	int r = crypto_random(raw, sizeof(raw));

	if (r < 0)
		return r;
	/* Positive, and 16 bytes long: a 127-bit random number (RFC 5280 4.1.2.2). */
	raw[0] = (uint8_t)((raw[0] & 0x7f) | 0x40);
	bn = BN_bin2bn(raw, sizeof(raw), NULL);
	r = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ? 0 : -EIO;
	BN_free(bn);
	return r;
}

int mcert_ca_make(const char *cn, int64_t now, int64_t validity_sec, char *key_pem, size_t key_cap,
		  char *cert_pem, size_t cert_cap)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	X509 *x = X509_new();
	X509_NAME *name = name_make(cn);
	X509V3_CTX ctx;
	BIO *b = NULL;
	int r = -EIO;

	if (!key || !x || !name || X509_set_version(x, X509_VERSION_3) != 1 ||
	    X509_set_subject_name(x, name) != 1 || X509_set_issuer_name(x, name) != 1 ||
	    X509_set_pubkey(x, key) != 1)
		goto out;
	r = serial_random(x);
	if (r == 0)
		r = validity_set(x, now - MCERT_BACKDATE_SEC, now + validity_sec);
	if (r < 0)
		goto out;
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	r = -EIO;
	if (ext_add(x, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
	    ext_add(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") ||
	    ext_add(x, &ctx, NID_subject_key_identifier, "hash") || X509_sign(x, key, NULL) <= 0)
		goto out;
	b = BIO_new(BIO_s_mem());
	if (!b || PEM_write_bio_X509(b, x) != 1)
		goto out;
	r = bio_take(b, cert_pem, cert_cap);
	if (r < 0)
		goto out;
	BIO_free(b);
	b = BIO_new(BIO_s_mem());
	r = -EIO;
	if (!b || PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) != 1)
		goto out;
	r = bio_take(b, key_pem, key_cap);
	if (r > 0)
		r = 0;
out:
	BIO_free(b);
	X509_NAME_free(name);
	X509_free(x);
	EVP_PKEY_free(key);
	ERR_clear_error();
	return r;
}

static bool key_usable(EVP_PKEY *k)
{
	char group[32];

	if (EVP_PKEY_get_id(k) == EVP_PKEY_ED25519)
		return true;
	return EVP_PKEY_get_id(k) == EVP_PKEY_EC &&
	       EVP_PKEY_get_group_name(k, group, sizeof(group), NULL) == 1 &&
	       strcmp(group, "prime256v1") == 0;
}

int mcert_ca_check(const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
		   int64_t now, const char **ret_why)
{
	X509 *x = cert_read(cert_pem, cert_len);
	EVP_PKEY *key = key_read(key_pem, key_len);
	int64_t nb, na;
	int r = -EINVAL;

	if (!x)
		*ret_why = "the certificate is not a PEM X.509 certificate";
	else if (!key)
		*ret_why = "the key is not a PEM private key (unencrypted PKCS#8 or traditional)";
	else if (X509_check_ca(x) != 1)
		*ret_why = "the certificate is not a CA (basicConstraints CA:TRUE)";
	else if (!key_usable(key))
		*ret_why = "the key is neither Ed25519 nor ECDSA P-256";
	else if (X509_check_private_key(x, key) != 1)
		*ret_why = "the key does not belong to the certificate";
	else if (time_of(X509_get0_notBefore(x), &nb) < 0 ||
		 time_of(X509_get0_notAfter(x), &na) < 0 || now < nb || now >= na)
		*ret_why = "the certificate is not valid now";
	else
		r = 0;
	EVP_PKEY_free(key);
	X509_free(x);
	ERR_clear_error();
	return r;
}

int mcert_sign(const char *ca_key_pem, size_t ca_key_len, const char *ca_cert_pem,
	       size_t ca_cert_len, const struct mcert_info *req, const char *crl_url,
	       int64_t not_before, int64_t not_after, struct mcert_info *ret_info, char *ret,
	       size_t cap)
{
	EVP_PKEY *cakey = key_read(ca_key_pem, ca_key_len);
	X509 *ca = cert_read(ca_cert_pem, ca_cert_len), *x = X509_new();
	EVP_PKEY *pub =
	    EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, req->pub, MCERT_KEY_LEN);
	X509_NAME *name = NULL;
	char cn[MCERT_SUBJECT_MAX], uri[128], cdp[MCERT_CRL_URL_MAX + 8];
	X509V3_CTX ctx;
	BIO *b = NULL;
	int r = -EINVAL;

	if (!cakey || !ca || !pub || !x || not_after <= not_before)
		goto out;
	/* An URL of printable ASCII, no comma (the extension's value syntax separates by it). */
	if (crl_url && (strlen(crl_url) >= MCERT_CRL_URL_MAX ||
			strncmp(crl_url, "http", 4) != 0 || strpbrk(crl_url, ", \t\r\n")))
		goto out;
	cn_clean(req->subject, strlen(req->subject), cn);
	if (!cn[0]) {
		char hex[2 * MCERT_KEY_LEN + 1];

		hex_of(req->machine_key, MCERT_KEY_LEN, hex);
		snprintf(cn, sizeof(cn), "machine-%.16s", hex);
	}
	name = name_make(cn);
	r = -EIO;
	if (!name || X509_set_version(x, X509_VERSION_3) != 1 ||
	    X509_set_subject_name(x, name) != 1 ||
	    X509_set_issuer_name(x, X509_get_subject_name(ca)) != 1 || X509_set_pubkey(x, pub) != 1)
		goto out;
	r = serial_random(x);
	if (r == 0)
		r = validity_set(x, not_before, not_after);
	if (r < 0)
		goto out;
	machine_uri(req->machine_key, uri, sizeof(uri));
	X509V3_set_ctx(&ctx, ca, x, NULL, NULL, 0);
	r = -EIO;
	if (ext_add(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") ||
	    ext_add(x, &ctx, NID_key_usage, "critical,digitalSignature") ||
	    ext_add(x, &ctx, NID_ext_key_usage, "clientAuth") ||
	    ext_add(x, &ctx, NID_subject_key_identifier, "hash") ||
	    ext_add(x, &ctx, NID_authority_key_identifier, "keyid:always") ||
	    ext_add(x, &ctx, NID_subject_alt_name, uri))
		goto out;
	if (crl_url) {
		snprintf(cdp, sizeof(cdp), "URI:%s", crl_url);
		if (ext_add(x, &ctx, NID_crl_distribution_points, cdp))
			goto out;
	}
	if (X509_sign(x, cakey, md_for(cakey)) <= 0)
		goto out;
	b = BIO_new(BIO_s_mem());
	if (!b || PEM_write_bio_X509(b, x) != 1)
		goto out;
	memset(ret_info, 0, sizeof(*ret_info));
	memcpy(ret_info->pub, req->pub, MCERT_KEY_LEN);
	memcpy(ret_info->machine_key, req->machine_key, MCERT_KEY_LEN);
	snprintf(ret_info->subject, sizeof(ret_info->subject), "%s", cn);
	ret_info->not_before = not_before;
	ret_info->not_after = not_after;
	if (serial_hex(X509_get0_serialNumber(x), ret_info->serial) < 0)
		goto out;
	r = bio_take(b, ret, cap);
out:
	BIO_free(b);
	X509_NAME_free(name);
	X509_free(x);
	X509_free(ca);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(cakey);
	ERR_clear_error();
	return r;
}

/* ---- revocation list ---- */

static ASN1_INTEGER *serial_of_hex(const char *hex)
{
	BIGNUM *bn = NULL;
	ASN1_INTEGER *a = NULL;
	size_t n = strlen(hex);

	if (n == 0 || n >= MCERT_SERIAL_MAX || strspn(hex, "0123456789abcdefABCDEF") != n ||
	    BN_hex2bn(&bn, hex) != (int)n)
		goto out;
	a = BN_to_ASN1_INTEGER(bn, NULL);
out:
	BN_free(bn);
	return a;
}

static int crl_entry_add(X509_CRL *crl, const struct mcert_revoked *e)
{
	X509_REVOKED *rv = X509_REVOKED_new();
	ASN1_INTEGER *serial = serial_of_hex(e->serial);
	ASN1_TIME *when = ASN1_TIME_set(NULL, (time_t)e->revoked_at);
	int r = -EINVAL;

	if (!rv || !serial || !when)
		goto out;
	r = -EIO;
	if (X509_REVOKED_set_serialNumber(rv, serial) != 1 ||
	    X509_REVOKED_set_revocationDate(rv, when) != 1 || X509_CRL_add0_revoked(crl, rv) != 1)
		goto out;
	rv = NULL; /* the CRL's */
	r = 0;
out:
	X509_REVOKED_free(rv);
	ASN1_INTEGER_free(serial);
	ASN1_TIME_free(when);
	return r;
}

int mcert_crl_make(const char *ca_key_pem, size_t ca_key_len, const char *ca_cert_pem,
		   size_t ca_cert_len, const struct mcert_revoked *list, size_t n, uint64_t number,
		   int64_t now, int64_t next_update, char **ret)
{
	EVP_PKEY *cakey = key_read(ca_key_pem, ca_key_len);
	X509 *ca = cert_read(ca_cert_pem, ca_cert_len);
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *this_t = ASN1_TIME_set(NULL, (time_t)now);
	ASN1_TIME *next_t = ASN1_TIME_set(NULL, (time_t)next_update);
	ASN1_INTEGER *num = ASN1_INTEGER_new();
	X509_EXTENSION *akid = NULL;
	X509V3_CTX ctx;
	BIO *b = NULL;
	char *p, *out;
	long len;
	int r = -EINVAL;

	if (!cakey || !ca || n > MCERT_CRL_MAX || next_update <= now)
		goto out;
	r = -EIO;
	if (!crl || !this_t || !next_t || !num || X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
	    X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) != 1 ||
	    X509_CRL_set1_lastUpdate(crl, this_t) != 1 ||
	    X509_CRL_set1_nextUpdate(crl, next_t) != 1 || ASN1_INTEGER_set_uint64(num, number) != 1)
		goto out;
	for (size_t i = 0; i < n; i++) {
		r = crl_entry_add(crl, &list[i]);
		if (r < 0)
			goto out;
	}
	r = -EIO;
	X509V3_set_ctx(&ctx, ca, NULL, NULL, crl, 0);
	akid = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
	if (!akid || X509_CRL_add_ext(crl, akid, -1) != 1 ||
	    X509_CRL_add1_ext_i2d(crl, NID_crl_number, num, 0, 0) != 1 || X509_CRL_sort(crl) != 1 ||
	    X509_CRL_sign(crl, cakey, md_for(cakey)) <= 0)
		goto out;
	b = BIO_new(BIO_s_mem());
	if (!b || PEM_write_bio_X509_CRL(b, crl) != 1)
		goto out;
	len = BIO_get_mem_data(b, &p);
	r = -ENOMEM;
	out = len > 0 ? malloc((size_t)len + 1) : NULL;
	if (!out)
		goto out;
	memcpy(out, p, (size_t)len);
	out[len] = '\0';
	*ret = out;
	r = (int)len;
out:
	BIO_free(b);
	X509_EXTENSION_free(akid);
	ASN1_INTEGER_free(num);
	ASN1_TIME_free(this_t);
	ASN1_TIME_free(next_t);
	X509_CRL_free(crl);
	X509_free(ca);
	EVP_PKEY_free(cakey);
	ERR_clear_error();
	return r;
}

int mcert_crl_der(const char *pem, size_t len, uint8_t **ret)
{
	BIO *b = len <= INT_MAX ? BIO_new_mem_buf(pem, (int)len) : NULL;
	X509_CRL *crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
	unsigned char *der = NULL;
	int n = crl ? i2d_X509_CRL(crl, &der) : -1;
	int r = n > 0 ? n : -EINVAL;

	if (n > 0) {
		*ret = malloc((size_t)n);
		if (*ret)
			memcpy(*ret, der, (size_t)n);
		else
			r = -ENOMEM;
	}
	OPENSSL_free(der);
	X509_CRL_free(crl);
	BIO_free(b);
	ERR_clear_error();
	return r;
}

int mcert_key_id(const char *cert_pem, size_t len, char ret[MCERT_KEY_ID_MAX])
{
	X509 *x = cert_read(cert_pem, len);
	int r = -EINVAL;

	ret[0] = '\0';
	if (x)
		r = key_id_hex(X509_get0_subject_key_id(x), ret);
	X509_free(x);
	ERR_clear_error();
	return r;
}

int mcert_fingerprint(const char *cert_pem, size_t len, char ret[65])
{
	X509 *x = cert_read(cert_pem, len);
	uint8_t md[32];
	unsigned n = sizeof(md);
	int r = -EINVAL;

	if (x && X509_digest(x, EVP_sha256(), md, &n) == 1 && n == sizeof(md)) {
		hex_of(md, sizeof(md), ret);
		r = 0;
	}
	X509_free(x);
	ERR_clear_error();
	return r;
}

/* ---- machine certificates ---- */

int mcert_pem_to_der(const char *pem, size_t len, uint8_t *der, size_t cap)
{
	X509 *x = cert_read(pem, len);
	int n = x ? i2d_X509(x, NULL) : -1;
	unsigned char *p = der;
	int r = -EINVAL;

	if (n > 0 && (size_t)n > cap)
		r = -EMSGSIZE;
	else if (n > 0 && i2d_X509(x, &p) == n)
		r = n;
	X509_free(x);
	ERR_clear_error();
	return r;
}

static enum mcert_result parse(const uint8_t *der, size_t len, X509 **ret_x, struct mcert_info *ret)
{
	const unsigned char *p = der;
	GENERAL_NAMES *names = NULL;
	X509 *x = NULL;
	enum mcert_result r = MCERT_MALFORMED;

	memset(ret, 0, sizeof(*ret));
	if (!der || len == 0 || len > MCERT_DER_MAX)
		goto out;
	x = d2i_X509(NULL, &p, (long)len);
	/* All of it, nothing after; v3; every critical extension one OpenSSL understood. */
	if (!x || p != der + len || X509_get_version(x) != X509_VERSION_3 ||
	    (X509_get_extension_flags(x) & (EXFLAG_CRITICAL | EXFLAG_INVALID)) ||
	    serial_hex(X509_get0_serialNumber(x), ret->serial) < 0 ||
	    time_of(X509_get0_notBefore(x), &ret->not_before) < 0 ||
	    time_of(X509_get0_notAfter(x), &ret->not_after) < 0)
		goto out;
	r = ed25519_of(X509_get0_pubkey(x), ret->pub);
	if (r)
		goto out;
	names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	r = machine_from_names(names, ret->machine_key);
	if (r)
		goto out;
	cn_of(X509_get_subject_name(x), ret->subject);
	cn_of(X509_get_issuer_name(x), ret->issuer);
	key_id_hex(X509_get0_authority_key_id(x), ret->issuer_key_id);
out:
	GENERAL_NAMES_free(names);
	if (r == MCERT_OK && ret_x)
		*ret_x = x;
	else
		X509_free(x);
	ERR_clear_error();
	return r;
}

enum mcert_result mcert_parse(const uint8_t *der, size_t len, struct mcert_info *ret)
{
	return parse(der, len, NULL, ret);
}

enum mcert_result mcert_verify(const char *ca_cert_pem, size_t ca_len, const uint8_t *der,
			       size_t len, int64_t now, struct mcert_info *ret)
{
	X509 *ca = cert_read(ca_cert_pem, ca_len), *x = NULL;
	int64_t ca_after;
	enum mcert_result r = parse(der, len, &x, ret);

	if (r)
		goto out;
	r = MCERT_WRONG_CA;
	if (!ca || X509_check_issued(ca, x) != X509_V_OK ||
	    X509_verify(x, X509_get0_pubkey(ca)) != 1)
		goto out;
	r = MCERT_IS_CA;
	if (X509_check_ca(x) != 0)
		goto out;
	if (now < ret->not_before)
		r = MCERT_NOT_YET_VALID;
	else if (now >= ret->not_after ||
		 (time_of(X509_get0_notAfter(ca), &ca_after) == 0 && now >= ca_after))
		r = MCERT_EXPIRED;
	else
		r = MCERT_OK;
out:
	X509_free(x);
	X509_free(ca);
	ERR_clear_error();
	return r;
}

/* ---- the proof at registration ---- */

static void proof_msg(const uint8_t hash[MCERT_HASH_LEN], const uint8_t node_key[MCERT_KEY_LEN],
		      uint8_t out[sizeof(proof_label) + MCERT_HASH_LEN + MCERT_KEY_LEN])
{
	memcpy(out, proof_label, sizeof(proof_label)); /* with its NUL: no ambiguity */
	memcpy(out + sizeof(proof_label), hash, MCERT_HASH_LEN);
	memcpy(out + sizeof(proof_label) + MCERT_HASH_LEN, node_key, MCERT_KEY_LEN);
}

int mcert_proof_sign(const uint8_t priv[MCERT_KEY_LEN], const uint8_t hash[MCERT_HASH_LEN],
		     const uint8_t node_key[MCERT_KEY_LEN], uint8_t ret_sig[MCERT_SIG_LEN])
{
	uint8_t m[sizeof(proof_label) + MCERT_HASH_LEN + MCERT_KEY_LEN];

	proof_msg(hash, node_key, m);
	return ed25519_sign(ret_sig, m, sizeof(m), priv);
}

bool mcert_proof_check(const uint8_t pub[MCERT_KEY_LEN], const uint8_t hash[MCERT_HASH_LEN],
		       const uint8_t node_key[MCERT_KEY_LEN], const uint8_t sig[MCERT_SIG_LEN])
{
	uint8_t m[sizeof(proof_label) + MCERT_HASH_LEN + MCERT_KEY_LEN];

	proof_msg(hash, node_key, m);
	return ed25519_verify(sig, m, sizeof(m), pub) == 0;
}
