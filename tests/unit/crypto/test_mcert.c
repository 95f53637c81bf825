/* SPDX-License-Identifier: MIT */
/*
 * Machine certificates (crypto/mcert.h): a CA signs a node's CSR, and every check a
 * certificate must pass fails for the case it is there for: expired, not yet valid,
 * another CA, another machine, a CA certificate, a proof by another key or for another
 * session or node key, DER with bytes missing or added.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/crypto.h"
#include "crypto/mcert.h"

#define NOW 1800000000LL

struct ca {
	char key[MCERT_PEM_MAX], cert[MCERT_PEM_MAX];
};

struct fix {
	struct ca ca, other;
	uint8_t priv[MCERT_KEY_LEN], pub[MCERT_KEY_LEN], machine[MCERT_KEY_LEN];
	char csr[MCERT_PEM_MAX], cert[MCERT_PEM_MAX];
	uint8_t der[MCERT_DER_MAX];
	int der_len;
	struct mcert_info info;
};

static void ca_make(struct ca *ca, const char *cn)
{
	assert_int_equal(mcert_ca_make(cn, NOW, MCERT_CA_VALIDITY_SEC, ca->key, sizeof(ca->key),
				       ca->cert, sizeof(ca->cert)),
			 0);
}

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	struct mcert_info req;

	assert_non_null(f);
	ca_make(&f->ca, "Trellis machine CA corp");
	ca_make(&f->other, "Trellis machine CA other");
	assert_int_equal(ed25519_private_generate(f->priv), 0);
	assert_int_equal(ed25519_public_from_private(f->pub, f->priv), 0);
	assert_int_equal(crypto_random(f->machine, sizeof(f->machine)), 0);
	assert_true(mcert_csr_make(f->priv, f->machine, "build-1", f->csr, sizeof(f->csr)) > 0);
	assert_int_equal(mcert_csr_parse(f->csr, strlen(f->csr), &req), MCERT_OK);
	assert_true(mcert_sign(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), &req, NULL,
			       NOW - 60, NOW + 86400, &f->info, f->cert, sizeof(f->cert)) > 0);
	f->der_len = mcert_pem_to_der(f->cert, strlen(f->cert), f->der, sizeof(f->der));
	assert_true(f->der_len > 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	free(*state);
	return 0;
}

static void test_csr_round_trip(void **state)
{
	struct fix *f = *state;
	struct mcert_info req;

	assert_int_equal(mcert_csr_parse(f->csr, strlen(f->csr), &req), MCERT_OK);
	assert_memory_equal(req.pub, f->pub, MCERT_KEY_LEN);
	assert_memory_equal(req.machine_key, f->machine, MCERT_KEY_LEN);
	assert_string_equal(req.subject, "build-1");
	/* Not a CSR, or cut short. */
	assert_int_equal(mcert_csr_parse(f->cert, strlen(f->cert), &req), MCERT_MALFORMED);
	assert_int_equal(mcert_csr_parse(f->csr, strlen(f->csr) / 2, &req), MCERT_MALFORMED);
	assert_int_equal(mcert_csr_parse("", 0, &req), MCERT_MALFORMED);
}

/* A CSR whose key did not sign it: made with OpenSSL, the public key swapped after signing. */
static void test_csr_forged_signature(void **state)
{
	struct fix *f = *state;
	EVP_PKEY *a = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	EVP_PKEY *b = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	X509_REQ *req = X509_REQ_new();
	BIO *bio = BIO_new(BIO_s_mem());
	struct mcert_info info;
	char *p;
	long n;

	(void)f;
	assert_true(X509_REQ_set_pubkey(req, a) == 1 && X509_REQ_sign(req, a, NULL) > 0);
	assert_true(X509_REQ_set_pubkey(req, b) == 1); /* signature stays a's */
	assert_true(PEM_write_bio_X509_REQ(bio, req) == 1);
	n = BIO_get_mem_data(bio, &p);
	assert_int_equal(mcert_csr_parse(p, (size_t)n, &info), MCERT_BAD_SIGNATURE);
	BIO_free(bio);
	X509_REQ_free(req);
	EVP_PKEY_free(a);
	EVP_PKEY_free(b);
}

/* A CSR with an RSA key, or without the machine URI. */
static void test_csr_key_type_and_machine(void **state)
{
	EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	X509_REQ *r1 = X509_REQ_new(), *r2 = X509_REQ_new();
	BIO *b1 = BIO_new(BIO_s_mem()), *b2 = BIO_new(BIO_s_mem());
	struct mcert_info info;
	char *p;
	long n;

	(void)state;
	assert_true(X509_REQ_set_pubkey(r1, rsa) == 1 && X509_REQ_sign(r1, rsa, EVP_sha256()) > 0);
	assert_true(PEM_write_bio_X509_REQ(b1, r1) == 1);
	n = BIO_get_mem_data(b1, &p);
	assert_int_equal(mcert_csr_parse(p, (size_t)n, &info), MCERT_KEY_TYPE);
	assert_true(X509_REQ_set_pubkey(r2, ed) == 1 && X509_REQ_sign(r2, ed, NULL) > 0);
	assert_true(PEM_write_bio_X509_REQ(b2, r2) == 1);
	n = BIO_get_mem_data(b2, &p);
	assert_int_equal(mcert_csr_parse(p, (size_t)n, &info), MCERT_NO_MACHINE);
	BIO_free(b1);
	BIO_free(b2);
	X509_REQ_free(r1);
	X509_REQ_free(r2);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(ed);
}

static void test_verify(void **state)
{
	struct fix *f = *state;
	const char *ca = f->ca.cert;
	size_t cl = strlen(ca);
	struct mcert_info info;

	assert_int_equal(mcert_verify(ca, cl, f->der, (size_t)f->der_len, NOW, &info), MCERT_OK);
	assert_string_equal(info.serial, f->info.serial);
	assert_true(strlen(info.serial) == 32); /* 16 bytes, top bit clear, second set */
	assert_memory_equal(info.machine_key, f->machine, MCERT_KEY_LEN);
	assert_memory_equal(info.pub, f->pub, MCERT_KEY_LEN);
	assert_int_equal(info.not_before, NOW - 60);
	assert_int_equal(info.not_after, NOW + 86400);
	assert_string_equal(info.subject, "build-1");
	/* Its issuer, as status shows it: the CA's name and key id (SHA-1 of its key: 40 hex). */
	{
		char kid[MCERT_KEY_ID_MAX], other[MCERT_KEY_ID_MAX];

		/* Cleaned as every CN we keep is: spaces become '-'. */
		assert_string_equal(info.issuer, "Trellis-machine-CA-corp");
		assert_int_equal(mcert_key_id(ca, cl, kid), 0);
		assert_int_equal(strlen(kid), 40);
		assert_string_equal(info.issuer_key_id, kid);
		assert_int_equal(mcert_key_id(f->other.cert, strlen(f->other.cert), other), 0);
		assert_string_not_equal(info.issuer_key_id, other);
		/* A node's certificate has a key id of its own, not its issuer's. */
		assert_int_equal(mcert_key_id(f->cert, strlen(f->cert), kid), 0);
		assert_string_not_equal(kid, info.issuer_key_id);
		assert_int_equal(mcert_key_id("not a certificate", 17, kid), -EINVAL);
		assert_string_equal(kid, "");
	}
	/* The edges of its validity: [not_before, not_after). */
	assert_int_equal(mcert_verify(ca, cl, f->der, (size_t)f->der_len, NOW - 60, &info),
			 MCERT_OK);
	assert_int_equal(mcert_verify(ca, cl, f->der, (size_t)f->der_len, NOW - 61, &info),
			 MCERT_NOT_YET_VALID);
	assert_int_equal(mcert_verify(ca, cl, f->der, (size_t)f->der_len, NOW + 86399, &info),
			 MCERT_OK);
	assert_int_equal(mcert_verify(ca, cl, f->der, (size_t)f->der_len, NOW + 86400, &info),
			 MCERT_EXPIRED);
	/* Another tailnet's CA. */
	assert_int_equal(mcert_verify(f->other.cert, strlen(f->other.cert), f->der,
				      (size_t)f->der_len, NOW, &info),
			 MCERT_WRONG_CA);
	/* Past the CA's own end. */
	assert_int_equal(
	    mcert_verify(ca, cl, f->der, (size_t)f->der_len, NOW + MCERT_CA_VALIDITY_SEC, &info),
	    MCERT_EXPIRED);
}

static X509_CRL *crl_read(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509_CRL *crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	assert_non_null(crl);
	return crl;
}

static X509 *x509_read(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	assert_non_null(x);
	return x;
}

/* OpenSSL's own chain check of cert under ca with crl at NOW: its X509_V_* result. */
static int openssl_verify(const char *ca_pem, const char *cert_pem, X509_CRL *crl)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	X509 *ca = x509_read(ca_pem), *x = x509_read(cert_pem);
	int err;

	assert_int_equal(X509_STORE_add_cert(st, ca), 1);
	if (crl) {
		assert_int_equal(X509_STORE_add_crl(st, crl), 1);
		X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
	}
	assert_int_equal(X509_STORE_CTX_init(ctx, st, x, NULL), 1);
	X509_STORE_CTX_set_time(ctx, 0, (time_t)NOW);
	X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	err = X509_verify_cert(ctx) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(st);
	X509_free(ca);
	X509_free(x);
	return err;
}

/*
 * The CA's revocation list, read back by OpenSSL: signed by the CA (not by another), v2,
 * its issuer, dates, number and authority key id, every serial with its date; OpenSSL's
 * chain check with it refuses the revoked certificate and passes another of the same CA.
 */
static void test_crl(void **state)
{
	struct fix *f = *state;
	struct mcert_revoked list[2] = {{.revoked_at = NOW - 100}, {.revoked_at = NOW - 50}};
	char other_cert[MCERT_PEM_MAX], *pem = NULL, *empty = NULL;
	struct mcert_info req, other_info;
	ASN1_INTEGER *want = NULL, *num;
	X509_REVOKED *rv = NULL;
	EVP_PKEY *pub;
	X509 *ca;
	X509_CRL *crl;
	BIGNUM *bn = NULL;
	int64_t t;
	int n, crit = 0;

	snprintf(list[0].serial, sizeof(list[0].serial), "%s", f->info.serial);
	snprintf(list[1].serial, sizeof(list[1].serial), "a1b2c3");
	n = mcert_crl_make(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), list, 2,
			   42, NOW, NOW + 7 * 86400, &pem);
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(pem));
	assert_true(strncmp(pem, "-----BEGIN X509 CRL-----", 24) == 0);
	crl = crl_read(pem);
	ca = x509_read(f->ca.cert);
	pub = X509_get0_pubkey(ca);
	assert_int_equal(X509_CRL_verify(crl, pub), 1);
	assert_int_equal(X509_CRL_get_version(crl), X509_CRL_VERSION_2);
	assert_int_equal(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)), 0);
	{
		struct tm tm;

		assert_int_equal(ASN1_TIME_to_tm(X509_CRL_get0_lastUpdate(crl), &tm), 1);
		t = (int64_t)timegm(&tm);
		assert_int_equal(t, NOW);
		assert_int_equal(ASN1_TIME_to_tm(X509_CRL_get0_nextUpdate(crl), &tm), 1);
		assert_int_equal((int64_t)timegm(&tm), NOW + 7 * 86400);
	}
	num = X509_CRL_get_ext_d2i(crl, NID_crl_number, &crit, NULL);
	assert_non_null(num);
	assert_int_equal(ASN1_INTEGER_get(num), 42);
	ASN1_INTEGER_free(num);
	assert_non_null(X509_CRL_get0_extensions(crl));
	assert_true(X509_CRL_get_ext_by_NID(crl, NID_authority_key_identifier, -1) >= 0);
	assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
	/* Each serial, with its date. */
	for (int i = 0; i < 2; i++) {
		struct tm tm;

		assert_true(BN_hex2bn(&bn, list[i].serial) > 0);
		want = BN_to_ASN1_INTEGER(bn, NULL);
		assert_int_equal(X509_CRL_get0_by_serial(crl, &rv, want), 1);
		assert_int_equal(ASN1_TIME_to_tm(X509_REVOKED_get0_revocationDate(rv), &tm), 1);
		assert_int_equal((int64_t)timegm(&tm), list[i].revoked_at);
		ASN1_INTEGER_free(want);
		BN_free(bn);
		bn = NULL;
	}
	/* Not signed by another CA's key. */
	{
		X509 *o = x509_read(f->other.cert);

		assert_int_not_equal(X509_CRL_verify(crl, X509_get0_pubkey(o)), 1);
		X509_free(o);
	}
	/* OpenSSL's chain check: the revoked certificate refused, another one of the CA not. */
	assert_int_equal(openssl_verify(f->ca.cert, f->cert, NULL), X509_V_OK);
	assert_int_equal(openssl_verify(f->ca.cert, f->cert, crl), X509_V_ERR_CERT_REVOKED);
	assert_int_equal(mcert_csr_parse(f->csr, strlen(f->csr), &req), MCERT_OK);
	assert_true(mcert_sign(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), &req, NULL,
			       NOW - 60, NOW + 86400, &other_info, other_cert,
			       sizeof(other_cert)) > 0);
	assert_int_equal(openssl_verify(f->ca.cert, other_cert, crl), X509_V_OK);
	X509_CRL_free(crl);
	X509_free(ca);
	free(pem);

	/* An empty list is a valid CRL too. */
	assert_true(mcert_crl_make(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert),
				   NULL, 0, 1, NOW, NOW + 1, &empty) > 0);
	crl = crl_read(empty);
	assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(ca = x509_read(f->ca.cert))), 1);
	X509_free(ca);
	/* No entries: OpenSSL leaves the list out (-1 for a missing stack). */
	assert_true(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)) <= 0);
	X509_CRL_free(crl);
	free(empty);

	/* Refused: a serial that is not hex, an empty one, a next update not after now, a key
	 * that is not the CA's PEM. Nothing is returned. */
	pem = NULL;
	snprintf(list[1].serial, sizeof(list[1].serial), "xyz");
	assert_int_equal(mcert_crl_make(f->ca.key, strlen(f->ca.key), f->ca.cert,
					strlen(f->ca.cert), list, 2, 1, NOW, NOW + 1, &pem),
			 -EINVAL);
	list[1].serial[0] = '\0';
	assert_int_equal(mcert_crl_make(f->ca.key, strlen(f->ca.key), f->ca.cert,
					strlen(f->ca.cert), list, 2, 1, NOW, NOW + 1, &pem),
			 -EINVAL);
	assert_int_equal(mcert_crl_make(f->ca.key, strlen(f->ca.key), f->ca.cert,
					strlen(f->ca.cert), list, 1, 1, NOW, NOW, &pem),
			 -EINVAL);
	assert_int_equal(mcert_crl_make("junk", 4, f->ca.cert, strlen(f->ca.cert), list, 1, 1,
					NOW, NOW + 1, &pem),
			 -EINVAL);
	assert_null(pem);
}

static void test_verify_bad_der(void **state)
{
	struct fix *f = *state;
	uint8_t buf[MCERT_DER_MAX + 2];
	size_t cl = strlen(f->ca.cert);
	struct mcert_info info;

	memcpy(buf, f->der, (size_t)f->der_len);
	assert_int_equal(mcert_verify(f->ca.cert, cl, buf, (size_t)f->der_len - 1, NOW, &info),
			 MCERT_MALFORMED);
	buf[f->der_len] = 0;
	assert_int_equal(mcert_verify(f->ca.cert, cl, buf, (size_t)f->der_len + 1, NOW, &info),
			 MCERT_MALFORMED);
	assert_int_equal(mcert_verify(f->ca.cert, cl, buf, 0, NOW, &info), MCERT_MALFORMED);
	assert_int_equal(mcert_verify(f->ca.cert, cl, buf, sizeof(buf), NOW, &info),
			 MCERT_MALFORMED);
	/* A flipped bit in the signature: still DER, no longer the CA's. */
	buf[f->der_len - 1] ^= 1;
	assert_int_equal(mcert_verify(f->ca.cert, cl, buf, (size_t)f->der_len, NOW, &info),
			 MCERT_WRONG_CA);
	/* The CA's own certificate is no machine's. */
	{
		uint8_t cad[MCERT_DER_MAX];
		int n = mcert_pem_to_der(f->ca.cert, cl, cad, sizeof(cad));

		assert_true(n > 0);
		assert_int_not_equal(mcert_verify(f->ca.cert, cl, cad, (size_t)n, NOW, &info),
				     MCERT_OK);
	}
}

static void test_proof(void **state)
{
	struct fix *f = *state;
	uint8_t hash[MCERT_HASH_LEN], node[MCERT_KEY_LEN], sig[MCERT_SIG_LEN];
	uint8_t other[MCERT_KEY_LEN], other_pub[MCERT_KEY_LEN];

	assert_int_equal(crypto_random(hash, sizeof(hash)), 0);
	assert_int_equal(crypto_random(node, sizeof(node)), 0);
	assert_int_equal(mcert_proof_sign(f->priv, hash, node, sig), 0);
	assert_true(mcert_proof_check(f->info.pub, hash, node, sig));
	/* Another session (handshake hash) or another node key: replays fail. */
	hash[0] ^= 1;
	assert_false(mcert_proof_check(f->info.pub, hash, node, sig));
	hash[0] ^= 1;
	node[31] ^= 0x80;
	assert_false(mcert_proof_check(f->info.pub, hash, node, sig));
	node[31] ^= 0x80;
	/* Signed by a key the certificate does not hold. */
	assert_int_equal(ed25519_private_generate(other), 0);
	assert_int_equal(ed25519_public_from_private(other_pub, other), 0);
	assert_int_equal(mcert_proof_sign(other, hash, node, sig), 0);
	assert_false(mcert_proof_check(f->info.pub, hash, node, sig));
	assert_true(mcert_proof_check(other_pub, hash, node, sig));
}

/* What the CA copies from a CSR: key, machine and a cleaned name; nothing else. */
static void test_sign_cleans_subject(void **state)
{
	struct fix *f = *state;
	struct mcert_info req = {0}, info, got;
	char pem[MCERT_PEM_MAX];
	uint8_t der[MCERT_DER_MAX];
	int n;

	memcpy(req.pub, f->pub, MCERT_KEY_LEN);
	memcpy(req.machine_key, f->machine, MCERT_KEY_LEN);
	snprintf(req.subject, sizeof(req.subject), "a b/\"c");
	assert_true(mcert_sign(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), &req, NULL,
			       NOW, NOW + 10, &info, pem, sizeof(pem)) > 0);
	n = mcert_pem_to_der(pem, strlen(pem), der, sizeof(der));
	assert_true(n > 0);
	assert_int_equal(mcert_parse(der, (size_t)n, &got), MCERT_OK);
	assert_string_equal(got.subject, "a-b--c");
	/* Serials differ from one signature to the next. */
	assert_string_not_equal(got.serial, f->info.serial);
	/* An empty validity is refused. */
	assert_true(mcert_sign(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), &req, NULL,
			       NOW, NOW, &info, pem, sizeof(pem)) < 0);
}

/* Import: a P-256 CA made elsewhere signs and verifies; mismatched and non-CA pairs are refused. */
static void test_ca_import(void **state)
{
	struct fix *f = *state;
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();
	X509V3_CTX ctx;
	X509_EXTENSION *e;
	BIO *kb = BIO_new(BIO_s_mem()), *cb = BIO_new(BIO_s_mem());
	char *kp, *cp, cert[MCERT_PEM_MAX], key[MCERT_PEM_MAX], pem[MCERT_PEM_MAX];
	long kn, cn;
	const char *why = NULL;
	struct mcert_info req, info;
	uint8_t der[MCERT_DER_MAX];
	int n;

	assert_true(X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
					       (const unsigned char *)"corp CA", -1, -1, 0) == 1);
	assert_true(X509_set_version(x, X509_VERSION_3) == 1);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 7);
	assert_true(X509_set_subject_name(x, name) == 1 && X509_set_issuer_name(x, name) == 1);
	ASN1_TIME_set(X509_getm_notBefore(x), (time_t)(NOW - 10));
	ASN1_TIME_set(X509_getm_notAfter(x), (time_t)(NOW + 1000000));
	assert_true(X509_set_pubkey(x, k) == 1);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	e = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
	assert_true(X509_add_ext(x, e, -1) == 1);
	X509_EXTENSION_free(e);
	e = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
	assert_true(X509_add_ext(x, e, -1) == 1);
	X509_EXTENSION_free(e);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	assert_true(PEM_write_bio_X509(cb, x) == 1);
	assert_true(PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL) == 1);
	cn = BIO_get_mem_data(cb, &cp);
	kn = BIO_get_mem_data(kb, &kp);
	memcpy(cert, cp, (size_t)cn);
	cert[cn] = '\0';
	memcpy(key, kp, (size_t)kn);
	key[kn] = '\0';

	assert_int_equal(mcert_ca_check(cert, strlen(cert), key, strlen(key), NOW, &why), 0);
	assert_int_equal(mcert_csr_parse(f->csr, strlen(f->csr), &req), MCERT_OK);
	assert_true(mcert_sign(key, strlen(key), cert, strlen(cert), &req, NULL, NOW, NOW + 100, &info,
			       pem, sizeof(pem)) > 0);
	n = mcert_pem_to_der(pem, strlen(pem), der, sizeof(der));
	assert_true(n > 0);
	assert_int_equal(mcert_verify(cert, strlen(cert), der, (size_t)n, NOW, &info), MCERT_OK);
	assert_int_equal(mcert_verify(f->ca.cert, strlen(f->ca.cert), der, (size_t)n, NOW, &info),
			 MCERT_WRONG_CA);

	/* Another CA's key; a machine certificate as a CA; not valid now. */
	assert_int_equal(
	    mcert_ca_check(cert, strlen(cert), f->ca.key, strlen(f->ca.key), NOW, &why), -EINVAL);
	assert_non_null(strstr(why, "does not belong"));
	assert_int_equal(
	    mcert_ca_check(f->cert, strlen(f->cert), f->ca.key, strlen(f->ca.key), NOW, &why),
	    -EINVAL);
	assert_non_null(strstr(why, "not a CA"));
	assert_int_equal(mcert_ca_check(cert, strlen(cert), key, strlen(key), NOW + 2000000, &why),
			 -EINVAL);
	assert_non_null(strstr(why, "not valid now"));

	BIO_free(kb);
	BIO_free(cb);
	X509_NAME_free(name);
	X509_free(x);
	EVP_PKEY_free(k);
}

/*
 * A CRL distribution point: the certificate names the URL (OpenSSL reads it back), still
 * verifies, and a URL that is no http(s) URL or would break the extension's syntax is refused.
 * The CRL's DER is what OpenSSL reads.
 */
static void test_crl_distribution_point(void **state)
{
	static const char url[] = "http://192.0.2.1:8080/crl/0123abcd.crl";
	struct fix *f = *state;
	struct mcert_info req = {0}, info, got;
	char pem[MCERT_PEM_MAX], *crl_pem = NULL;
	uint8_t der[MCERT_DER_MAX], *crl_der = NULL;
	const unsigned char *p;
	STACK_OF(DIST_POINT) *dps;
	const GENERAL_NAME *gn;
	X509_CRL *crl;
	X509 *x;
	int n;

	memcpy(req.pub, f->pub, MCERT_KEY_LEN);
	memcpy(req.machine_key, f->machine, MCERT_KEY_LEN);
	assert_true(mcert_sign(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), &req,
			       url, NOW - 60, NOW + 86400, &info, pem, sizeof(pem)) > 0);
	x = x509_read(pem);
	dps = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
	assert_non_null(dps);
	assert_int_equal(sk_DIST_POINT_num(dps), 1);
	assert_int_equal(sk_DIST_POINT_value(dps, 0)->distpoint->type, 0); /* fullName */
	gn = sk_GENERAL_NAME_value(sk_DIST_POINT_value(dps, 0)->distpoint->name.fullname, 0);
	assert_int_equal(gn->type, GEN_URI);
	assert_int_equal(ASN1_STRING_length(gn->d.uniformResourceIdentifier), strlen(url));
	assert_memory_equal(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier), url,
			    strlen(url));
	sk_DIST_POINT_pop_free(dps, DIST_POINT_free);
	X509_free(x);
	n = mcert_pem_to_der(pem, strlen(pem), der, sizeof(der));
	assert_true(n > 0);
	assert_int_equal(mcert_verify(f->ca.cert, strlen(f->ca.cert), der, (size_t)n, NOW, &got),
			 MCERT_OK);
	/* Without one, none. */
	assert_true(mcert_sign(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), &req,
			       NULL, NOW - 60, NOW + 86400, &info, pem, sizeof(pem)) > 0);
	x = x509_read(pem);
	assert_int_equal(X509_get_ext_by_NID(x, NID_crl_distribution_points, -1), -1);
	X509_free(x);
	assert_true(mcert_sign(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), &req,
			       "ldap://x/crl", NOW - 60, NOW + 86400, &info, pem, sizeof(pem)) < 0);
	assert_true(mcert_sign(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert), &req,
			       "http://x/a,URI:http://y", NOW - 60, NOW + 86400, &info, pem,
			       sizeof(pem)) < 0);
	/* The CRL as DER. */
	assert_true(mcert_crl_make(f->ca.key, strlen(f->ca.key), f->ca.cert, strlen(f->ca.cert),
				   NULL, 0, 7, NOW, NOW + 86400, &crl_pem) > 0);
	n = mcert_crl_der(crl_pem, strlen(crl_pem), &crl_der);
	assert_true(n > 0);
	p = crl_der;
	crl = d2i_X509_CRL(NULL, &p, n);
	assert_non_null(crl);
	assert_ptr_equal(p, crl_der + n);
	assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(x = x509_read(f->ca.cert))), 1);
	X509_free(x);
	X509_CRL_free(crl);
	assert_int_equal(mcert_crl_der("junk", 4, &crl_der), -EINVAL);
	free(crl_der);
	free(crl_pem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_csr_round_trip),
	    cmocka_unit_test(test_csr_forged_signature),
	    cmocka_unit_test(test_csr_key_type_and_machine),
	    cmocka_unit_test(test_verify),
	    cmocka_unit_test(test_verify_bad_der),
	    cmocka_unit_test(test_crl),
	    cmocka_unit_test(test_crl_distribution_point),
	    cmocka_unit_test(test_proof),
	    cmocka_unit_test(test_sign_cleans_subject),
	    cmocka_unit_test(test_ca_import),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
