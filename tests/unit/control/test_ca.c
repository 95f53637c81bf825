/* SPDX-License-Identifier: MIT */
/*
 * Machine certificates on the server (control/ca.c) with a real store: the CA's key file
 * and its mode, signing and its refusals, the check at registration (missing, wrong
 * machine, another session's proof, another tailnet's CA, expired, revoked), revocation
 * expiring the machine's node, the tailnet setting, and the audit entries of it all; CA
 * rotation (both trusted, the new one signs, retirement and what it strands), renewal, and
 * each CA's revocation list as OpenSSL reads it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "base/base64.h"
#include "base/util.h"
#include "control/ca.h"
#include "control/store.h"
#include "crypto/crypto.h"

#define T0 1800000000LL
#define DAY 86400LL

static char dir[64];
static struct store *st;
static struct admin_op_ctx c;

static int setup(void **state)
{
	char path[128];

	(void)state;
	strcpy(dir, "/tmp/trellis-ca-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
	assert_int_equal(store_open(path, &st), 0);
	memset(&c, 0, sizeof(c));
	c.store = st;
	c.actor = "cli:test";
	c.now = T0;
	c.state_dir = dir;
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];

	(void)state;
	store_free(st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

struct node {
	uint8_t priv[MCERT_KEY_LEN], machine[MCERT_KEY_LEN], node_key[MCERT_KEY_LEN];
	char csr[MCERT_PEM_MAX], cert[MCERT_PEM_MAX];
	struct control_mcert rec;
};

static void node_make(struct node *n, const char *tailnet)
{
	assert_int_equal(ed25519_private_generate(n->priv), 0);
	assert_int_equal(crypto_random(n->machine, sizeof(n->machine)), 0);
	assert_int_equal(crypto_random(n->node_key, sizeof(n->node_key)), 0);
	assert_true(mcert_csr_make(n->priv, n->machine, "laptop", n->csr, sizeof(n->csr)) > 0);
	assert_int_equal(ca_op_sign(&c, tailnet, n->csr, strlen(n->csr), 30 * DAY, n->cert,
				    sizeof(n->cert), &n->rec),
			 0);
}

/* The register message a node sends in a session with handshake hash `hash`. */
static void evidence(const struct node *n, const uint8_t hash[MCERT_HASH_LEN],
		     const uint8_t *session_machine, struct ca_evidence *ret)
{
	struct ctrl_register *msg = calloc(1, sizeof(*msg));
	uint8_t der[MCERT_DER_MAX], sig[MCERT_SIG_LEN];
	int len = mcert_pem_to_der(n->cert, strlen(n->cert), der, sizeof(der));

	assert_non_null(msg);
	assert_true(len > 0);
	memcpy(msg->node_key, n->node_key, MCERT_KEY_LEN);
	base64_encode(msg->machine_cert, sizeof(msg->machine_cert), der, (size_t)len);
	assert_int_equal(mcert_proof_sign(n->priv, hash, n->node_key, sig), 0);
	base64_encode(msg->machine_cert_proof, sizeof(msg->machine_cert_proof), sig, sizeof(sig));
	ca_evidence_make(ret, msg, session_machine, hash);
	free(msg);
}

static const char *check(uint64_t tid, const struct ca_evidence *ev, int64_t now, int64_t *na)
{
	static char buf[256];

	return ca_register_check(st, tid, ev, now, na, buf, sizeof(buf));
}

static int audit_row(void *arg, const struct audit_entry *e)
{
	char *acts = arg;

	strcat(acts, e->action);
	strcat(acts, " ");
	return 0;
}

static void test_ca_lifecycle(void **state)
{
	struct control_tailnet t, other;
	struct control_ca ca;
	struct node a, b;
	struct ca_evidence *ev = malloc(sizeof(*ev));
	struct control_node rec = {0}, got;
	struct control_mcert *all = NULL;
	uint8_t hash[MCERT_HASH_LEN];
	char path[256], acts[1024] = "", csr_bad[64];
	struct stat sb;
	unsigned expired = 99;
	size_t n = 0;
	int64_t na;

	(void)state;
	assert_non_null(ev);
	assert_int_equal(admin_op_tailnet_resolve(&c, NULL, &t), 0);
	/* No CA yet: nothing to sign with, and the setting cannot be turned on. */
	assert_int_equal(ca_op_require(&c, NULL, true), -EINVAL);
	assert_non_null(strstr(c.err, "has no CA"));
	assert_int_equal(ca_op_sign(&c, NULL, "x", 1, 0, a.cert, sizeof(a.cert), NULL), -ENOENT);

	assert_int_equal(ca_op_init(&c, NULL, 0, NULL, 0, NULL, 0, &ca), 0);
	assert_int_equal(ca.tailnet_id, t.id);
	snprintf(path, sizeof(path), "%s/ca/%llu.key", dir, (unsigned long long)t.id);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	snprintf(path, sizeof(path), "%s/ca", dir);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0700);
	assert_int_equal(ca_op_init(&c, NULL, 0, NULL, 0, NULL, 0, NULL), -EEXIST);
	assert_int_equal(ca_op_require(&c, "default", true), 0);
	assert_int_equal(store_tailnet_get(st, t.id, &t), 0);
	assert_true(t.require_machine_cert);

	/* A CSR that is none. */
	snprintf(csr_bad, sizeof(csr_bad), "-----BEGIN CERTIFICATE REQUEST-----\n");
	assert_int_equal(
	    ca_op_sign(&c, NULL, csr_bad, strlen(csr_bad), 0, a.cert, sizeof(a.cert), NULL),
	    -EINVAL);
	assert_non_null(strstr(c.err, "CSR refused"));

	node_make(&a, NULL);
	assert_int_equal(a.rec.not_after, T0 + 30 * DAY);
	assert_int_equal(crypto_random(hash, sizeof(hash)), 0);

	/* Valid: admitted, until the certificate's end. */
	evidence(&a, hash, a.machine, ev);
	assert_int_equal(ev->result, MCERT_OK);
	assert_null(check(t.id, ev, T0, &na));
	assert_int_equal(na, T0 + 30 * DAY);
	/* Expired, and not yet valid (signed 5 minutes back). */
	assert_string_equal(check(t.id, ev, T0 + 30 * DAY, &na),
			    "machine certificate refused: expired");
	assert_string_equal(check(t.id, ev, T0 - MCERT_BACKDATE_SEC - 1, &na),
			    "machine certificate refused: not yet valid");
	/* Without a certificate. */
	memset(ev, 0, sizeof(*ev));
	assert_string_equal(check(t.id, ev, T0, &na), CA_ERR_REQUIRED);
	assert_string_equal(check(t.id, NULL, T0, &na), CA_ERR_REQUIRED);
	/* Presented on another machine's session. */
	evidence(&a, hash, a.node_key, ev);
	assert_int_equal(ev->result, MCERT_WRONG_MACHINE);
	assert_non_null(strstr(check(t.id, ev, T0, &na), "another machine"));
	/* A proof made for another session: the hash the server has differs. */
	{
		struct ctrl_register *msg = calloc(1, sizeof(*msg));
		uint8_t der[MCERT_DER_MAX], sig[MCERT_SIG_LEN], other_hash[MCERT_HASH_LEN];
		int len = mcert_pem_to_der(a.cert, strlen(a.cert), der, sizeof(der));

		memcpy(other_hash, hash, sizeof(hash));
		other_hash[7] ^= 1;
		memcpy(msg->node_key, a.node_key, MCERT_KEY_LEN);
		base64_encode(msg->machine_cert, sizeof(msg->machine_cert), der, (size_t)len);
		assert_int_equal(mcert_proof_sign(a.priv, other_hash, a.node_key, sig), 0);
		base64_encode(msg->machine_cert_proof, sizeof(msg->machine_cert_proof), sig,
			      sizeof(sig));
		ca_evidence_make(ev, msg, a.machine, hash);
		assert_int_equal(ev->result, MCERT_WRONG_KEY);
		/* Garbage where the certificate goes. */
		snprintf(msg->machine_cert, sizeof(msg->machine_cert), "bm90IGEgY2VydA==");
		ca_evidence_make(ev, msg, a.machine, hash);
		assert_true(ev->present);
		assert_int_equal(ev->result, MCERT_MALFORMED);
		free(msg);
	}

	/* Another tailnet, its own CA: a's certificate is not its. */
	assert_int_equal(admin_op_tailnet_create(&c, "other", 0, 60, &other), 0);
	assert_int_equal(ca_op_init(&c, "other", 0, NULL, 0, NULL, 0, NULL), 0);
	evidence(&a, hash, a.machine, ev);
	assert_string_equal(check(other.id, ev, T0, &na),
			    "machine certificate refused: not issued by this tailnet's CA");
	node_make(&b, "other");

	/* a's machine has a node; revoking a's certificate expires it, b's stays. */
	rec.tailnet_id = t.id;
	snprintf(rec.name, sizeof(rec.name), "laptop");
	snprintf(rec.hostname, sizeof(rec.hostname), "laptop");
	memcpy(rec.machine_key, a.machine, MCERT_KEY_LEN);
	memcpy(rec.node_key, a.node_key, MCERT_KEY_LEN);
	rec.ipv4[0] = 100;
	rec.ipv4[3] = 7;
	rec.approved = true;
	rec.key_expiry = T0 + DAY;
	assert_int_equal(store_node_insert(st, &rec), 0);
	c.now = T0 + 10;
	{
		char upper[MCERT_SERIAL_MAX + 24];
		size_t k = 0;

		/* As openssl x509 -serial prints it: upper case, with a leading zero and colons. */
		upper[k++] = '0';
		for (size_t i = 0; a.rec.serial[i]; i++) {
			char ch = a.rec.serial[i];

			upper[k++] = ch >= 'a' && ch <= 'f' ? (char)(ch - 'a' + 'A') : ch;
			if (i % 2 == 0 && a.rec.serial[i + 1])
				upper[k++] = ':';
		}
		upper[k] = '\0';
		assert_int_equal(ca_op_revoke(&c, NULL, upper, &expired), 0);
	}
	assert_int_equal(expired, 1);
	assert_int_equal(store_node_get(st, rec.id, &got), 0);
	assert_int_equal(got.key_expiry, T0 + 10);
	evidence(&a, hash, a.machine, ev);
	assert_string_equal(check(t.id, ev, T0 + 20, &na), "machine certificate refused: revoked");
	assert_int_equal(ca_op_revoke(&c, NULL, a.rec.serial, NULL), -EEXIST);
	assert_int_equal(ca_op_revoke(&c, NULL, "not hex", NULL), -EINVAL);
	/* A serial signed elsewhere goes on the list too. */
	assert_int_equal(ca_op_revoke(&c, "other", "abcdef12", &expired), 0);
	assert_int_equal(expired, 0);

	assert_int_equal(ca_op_list(&c, NULL, &all, &n), 0);
	assert_int_equal(n, 3);
	free(all);
	assert_int_equal(ca_op_list(&c, "other", &all, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(all[0].serial, b.rec.serial);
	assert_false(all[0].revoked);
	assert_string_equal(all[1].serial, "abcdef12");
	assert_true(all[1].revoked);
	free(all);

	/* Everything went through the audit log. */
	assert_int_equal(store_audit_read(st, 0, 0, 0, audit_row, acts), 0);
	assert_non_null(strstr(acts, "ca.init tailnet.set cert.sign "));
	assert_non_null(strstr(acts, "cert.revoke node.expire "));
	assert_non_null(strstr(acts, "cert.revoke_unknown "));
	free(ev);
}

/* A node whose certificate the test made some other way (renewal): its evidence as usual. */
static void node_with_cert(struct node *n, const struct node *from, const char *pem)
{
	*n = *from;
	snprintf(n->cert, sizeof(n->cert), "%s", pem);
}

/* Is serial on the CRL (PEM) that ca_pem's key signed? Asserts the signature. */
static bool crl_lists(const char *crl_pem, const char *ca_pem, const char *serial)
{
	BIO *b = BIO_new_mem_buf(crl_pem, -1), *cb = BIO_new_mem_buf(ca_pem, -1);
	X509_CRL *crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL);
	X509 *ca = PEM_read_bio_X509(cb, NULL, NULL, NULL);
	X509_REVOKED *rv = NULL;
	BIGNUM *bn = NULL;
	ASN1_INTEGER *a;
	bool found;

	assert_non_null(crl);
	assert_non_null(ca);
	assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(ca)), 1);
	assert_true(BN_hex2bn(&bn, serial) > 0);
	a = BN_to_ASN1_INTEGER(bn, NULL);
	found = X509_CRL_get0_by_serial(crl, &rv, a) == 1;
	ASN1_INTEGER_free(a);
	BN_free(bn);
	X509_CRL_free(crl);
	X509_free(ca);
	BIO_free(b);
	BIO_free(cb);
	return found;
}

static void node_row(const struct node *n, const char *name, struct control_node *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->tailnet_id = n->rec.tailnet_id;
	snprintf(rec->name, sizeof(rec->name), "%s", name);
	snprintf(rec->hostname, sizeof(rec->hostname), "%s", name);
	memcpy(rec->machine_key, n->machine, MCERT_KEY_LEN);
	memcpy(rec->node_key, n->node_key, MCERT_KEY_LEN);
	rec->ipv4[0] = 100;
	rec->ipv4[3] = (uint8_t)name[0];
	rec->approved = true;
	rec->key_expiry = T0 + DAY;
	assert_int_equal(store_node_insert(st, rec), 0);
}

/*
 * Rotation: the new CA signs, both are trusted; the old one cannot be retired while a
 * machine has only its certificate (unless forced: their nodes expire), renewal moves a
 * machine to the new CA without a CSR; after retirement the old CA's certificates are
 * refused and say why. The signing CA is never retired. Each CA's CRL lists its own.
 */
static void test_ca_rotation(void **state)
{
	struct control_ca ca1, ca2, *cas = NULL, got_ca;
	struct control_tailnet t;
	struct node a, b, cc, a2;
	struct ca_evidence *ev = malloc(sizeof(*ev));
	struct control_node brow, got;
	struct control_mcert renewed, m;
	uint8_t hash[MCERT_HASH_LEN];
	char path[256], acts[2048] = "", pem[MCERT_PEM_MAX], fp[65], kid[MCERT_KEY_ID_MAX];
	char *crl = NULL;
	unsigned stranded = 99, expired = 99;
	struct stat sb;
	size_t n = 0;
	int64_t na;

	(void)state;
	assert_non_null(ev);
	assert_int_equal(crypto_random(hash, sizeof(hash)), 0);
	assert_int_equal(admin_op_tailnet_resolve(&c, NULL, &t), 0);
	assert_int_equal(ca_op_rotate(&c, NULL, 0, NULL, 0, NULL, 0, NULL), -ENOENT);
	assert_int_equal(ca_op_init(&c, NULL, 0, NULL, 0, NULL, 0, &ca1), 0);
	assert_string_equal(ca1.key_file, "1.key");
	node_make(&a, NULL);
	node_make(&b, NULL);
	assert_int_equal(a.rec.ca_id, ca1.id);
	assert_true(a.rec.has_pub);
	node_row(&b, "b", &brow);

	/* Rotate: a second CA, its key file named by its fingerprint, mode 0600; it signs now. */
	c.now = T0 + 100;
	assert_int_equal(ca_op_rotate(&c, NULL, 0, NULL, 0, NULL, 0, &ca2), 0);
	assert_int_not_equal(ca2.id, ca1.id);
	assert_int_equal(mcert_fingerprint(ca2.cert, strlen(ca2.cert), fp), 0);
	snprintf(path, sizeof(path), "%llu-%.16s.key", (unsigned long long)t.id, fp);
	assert_string_equal(ca2.key_file, path);
	snprintf(path, sizeof(path), "%s/ca/%s", dir, ca2.key_file);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0600);
	assert_int_equal(ca_op_get(&c, NULL, &got_ca), 0);
	assert_int_equal(got_ca.id, ca2.id);
	assert_int_equal(ca_op_init(&c, NULL, 0, NULL, 0, NULL, 0, NULL), -EEXIST);
	assert_int_equal(ca_op_cas(&c, NULL, &cas, &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(cas[0].id, ca1.id);
	assert_int_equal(cas[0].retired_at, 0);
	assert_int_equal(cas[1].id, ca2.id);
	free(cas);
	node_make(&cc, NULL);
	assert_int_equal(cc.rec.ca_id, ca2.id);

	/* Both trusted. */
	evidence(&a, hash, a.machine, ev);
	assert_null(check(t.id, ev, T0 + 200, &na));
	evidence(&cc, hash, cc.machine, ev);
	assert_null(check(t.id, ev, T0 + 200, &na));

	/* The signing CA is not retired; the old one not while machines have only it. */
	snprintf(path, sizeof(path), "%llu", (unsigned long long)ca2.id);
	assert_int_equal(ca_op_retire(&c, NULL, path, false, NULL, NULL), -EINVAL);
	assert_non_null(strstr(c.err, "ca rotate first"));
	assert_int_equal(ca_op_retire(&c, NULL, "7", false, NULL, NULL), -ENOENT);
	snprintf(path, sizeof(path), "%llu", (unsigned long long)ca1.id);
	assert_int_equal(ca_op_retire(&c, NULL, path, false, &stranded, NULL), -EBUSY);
	assert_int_equal(stranded, 2);

	/* Renewal: a's certificate again, by the new CA, same key and machine: trusted. */
	assert_int_equal(ca_op_renew(&c, NULL, a.rec.serial, 60 * DAY, pem, sizeof(pem),
				     &renewed),
			 0);
	assert_int_equal(renewed.ca_id, ca2.id);
	assert_string_not_equal(renewed.serial, a.rec.serial);
	assert_memory_equal(renewed.machine_key, a.machine, MCERT_KEY_LEN);
	assert_memory_equal(renewed.pub, a.rec.pub, MCERT_KEY_LEN);
	assert_string_equal(renewed.subject, "laptop");
	assert_int_equal(renewed.not_after, T0 + 100 + 60 * DAY);
	node_with_cert(&a2, &a, pem);
	evidence(&a2, hash, a.machine, ev);
	assert_int_equal(ev->result, MCERT_OK);
	assert_null(check(t.id, ev, T0 + 200, &na));
	assert_int_equal(na, T0 + 100 + 60 * DAY);
	assert_int_equal(ca_op_renew(&c, NULL, "abc123", 0, pem, sizeof(pem), NULL), -ENOENT);
	assert_int_equal(ca_op_renew(&c, NULL, "zz", 0, pem, sizeof(pem), NULL), -EINVAL);

	/* Now only b is stranded; by key id prefix, forced: b's node expires. */
	assert_int_equal(mcert_key_id(ca1.cert, strlen(ca1.cert), kid), 0);
	kid[10] = '\0';
	assert_int_equal(ca_op_retire(&c, NULL, kid, false, &stranded, NULL), -EBUSY);
	assert_int_equal(stranded, 1);
	c.now = T0 + 300;
	assert_int_equal(ca_op_retire(&c, NULL, kid, true, &stranded, &expired), 0);
	assert_int_equal(stranded, 1);
	assert_int_equal(expired, 1);
	assert_int_equal(store_node_get(st, brow.id, &got), 0);
	assert_int_equal(got.key_expiry, T0 + 300);
	assert_int_equal(ca_op_retire(&c, NULL, path, false, NULL, NULL), -EALREADY);
	assert_int_equal(ca_op_get(&c, NULL, &got_ca), 0);
	assert_int_equal(got_ca.id, ca2.id);

	/* The old CA's certificates are refused, saying why; the new ones pass. */
	evidence(&a, hash, a.machine, ev);
	assert_non_null(strstr(check(t.id, ev, T0 + 400, &na), "its CA was retired"));
	evidence(&b, hash, b.machine, ev);
	assert_non_null(strstr(check(t.id, ev, T0 + 400, &na), "its CA was retired"));
	evidence(&a2, hash, a.machine, ev);
	assert_null(check(t.id, ev, T0 + 400, &na));
	evidence(&cc, hash, cc.machine, ev);
	assert_null(check(t.id, ev, T0 + 400, &na));

	/* Revocation lists: each CA's own revoked certificates, signed by it. */
	assert_int_equal(ca_op_revoke(&c, NULL, b.rec.serial, NULL), 0);
	assert_int_equal(ca_op_revoke(&c, NULL, cc.rec.serial, NULL), 0);
	assert_int_equal(ca_op_renew(&c, NULL, cc.rec.serial, 0, pem, sizeof(pem), NULL), -EINVAL);
	assert_non_null(strstr(c.err, "revoked"));
	assert_int_equal(ca_op_crl(&c, NULL, NULL, &crl), 0);
	assert_true(crl_lists(crl, ca2.cert, cc.rec.serial));
	assert_false(crl_lists(crl, ca2.cert, b.rec.serial));
	assert_false(crl_lists(crl, ca2.cert, a.rec.serial));
	free(crl);
	crl = NULL;
	assert_int_equal(ca_op_crl(&c, NULL, path, &crl), 0);
	assert_true(crl_lists(crl, ca1.cert, b.rec.serial));
	assert_false(crl_lists(crl, ca1.cert, cc.rec.serial));
	free(crl);
	crl = NULL;
	assert_int_equal(ca_op_crl(&c, NULL, "9", &crl), -ENOENT);
	assert_null(crl);

	/* A certificate signed before its key was kept cannot be renewed. */
	{
		struct store_op op = {.kind = STORE_OP_MCERT_PUT};

		op.mcert = a.rec;
		op.mcert.id = 0;
		op.mcert.has_pub = false;
		snprintf(op.mcert.serial, sizeof(op.mcert.serial), "5eed");
		assert_int_equal(store_write(st, &op, NULL), 0);
		assert_int_equal(store_mcert_get(st, "5eed", &m), 0);
		assert_false(m.has_pub);
		assert_int_equal(ca_op_renew(&c, NULL, "5eed", 0, pem, sizeof(pem), NULL), -EINVAL);
		assert_non_null(strstr(c.err, "before renewal"));
	}

	assert_int_equal(store_audit_read(st, 0, 0, 0, audit_row, acts), 0);
	assert_non_null(strstr(acts, "ca.init cert.sign cert.sign ca.rotate cert.sign cert.renew "
				     "ca.retire node.expire "));
	free(ev);
}

/* The serial of the certificate ca_cert_newer sends for ev, "" for none. */
static const char *newer(uint64_t tid, const struct ca_evidence *ev, int64_t now)
{
	static char b64[CTRL_MCERT_MAX];
	static struct mcert_info info;
	uint8_t der[MCERT_DER_MAX];
	int n;

	if (ca_cert_newer(st, tid, ev, now, b64, sizeof(b64)) < 0)
		return "";
	n = base64_decode(der, sizeof(der), b64, strlen(b64));
	assert_true(n > 0);
	assert_int_equal(mcert_parse(der, (size_t)n, &info), MCERT_OK);
	return info.serial;
}

/*
 * What a registration sends the node (docs/identity.md, "Renewed certificates"): the
 * certificate of its machine key and certificate key that ends last, later than the one it
 * presented; never a revoked one, one of a retired CA, one ending no later, one of another
 * certificate key, machine or tailnet, one not kept whole, or to a session whose proof failed.
 */
static void test_ca_newer(void **state)
{
	struct control_tailnet t, other;
	struct node a, x, r1, r2, r3;
	struct ca_evidence *ev = malloc(sizeof(*ev));
	struct control_mcert m1, m2, m3;
	struct control_ca ca1;
	uint8_t hash[MCERT_HASH_LEN], stranger[MCERT_KEY_LEN];
	char pem[MCERT_PEM_MAX], path[32];

	(void)state;
	assert_non_null(ev);
	assert_int_equal(crypto_random(hash, sizeof(hash)), 0);
	assert_int_equal(admin_op_tailnet_resolve(&c, NULL, &t), 0);
	assert_int_equal(ca_op_init(&c, NULL, 0, NULL, 0, NULL, 0, &ca1), 0);
	node_make(&a, NULL);
	evidence(&a, hash, a.machine, ev);
	assert_string_equal(newer(t.id, ev, T0), "");

	/* Renewed (60 days, then 90): the one that ends last. */
	assert_int_equal(ca_op_renew(&c, NULL, a.rec.serial, 60 * DAY, pem, sizeof(pem), &m1), 0);
	node_with_cert(&r1, &a, pem);
	assert_string_equal(newer(t.id, ev, T0), m1.serial);
	assert_int_equal(ca_op_renew(&c, NULL, a.rec.serial, 90 * DAY, pem, sizeof(pem), &m2), 0);
	node_with_cert(&r2, &a, pem);
	assert_string_equal(newer(t.id, ev, T0), m2.serial);
	/* Presenting the newest: nothing ends later. Presenting the middle one: the newest. */
	evidence(&r2, hash, a.machine, ev);
	assert_string_equal(newer(t.id, ev, T0), "");
	evidence(&r1, hash, a.machine, ev);
	assert_string_equal(newer(t.id, ev, T0), m2.serial);

	/* Revoked: never; the next one that ends later still is. */
	assert_int_equal(ca_op_revoke(&c, NULL, m2.serial, NULL), 0);
	evidence(&a, hash, a.machine, ev);
	assert_string_equal(newer(t.id, ev, T0), m1.serial);
	evidence(&r1, hash, a.machine, ev);
	assert_string_equal(newer(t.id, ev, T0), "");

	/* Not to another tailnet, nor to a session whose machine key or proof is not the node's. */
	evidence(&a, hash, a.machine, ev);
	assert_int_equal(admin_op_tailnet_create(&c, "other", 0, 60, &other), 0);
	assert_string_equal(newer(other.id, ev, T0), "");
	assert_int_equal(crypto_random(stranger, sizeof(stranger)), 0);
	evidence(&a, hash, stranger, ev);
	assert_int_equal(ev->result, MCERT_WRONG_MACHINE);
	assert_string_equal(newer(t.id, ev, T0), "");
	evidence(&a, hash, a.machine, ev);
	ev->result = MCERT_WRONG_KEY;
	assert_string_equal(newer(t.id, ev, T0), "");

	/* The same machine with another certificate key (a new request): not a's. */
	x = a;
	assert_int_equal(ed25519_private_generate(x.priv), 0);
	assert_true(mcert_csr_make(x.priv, x.machine, "laptop", x.csr, sizeof(x.csr)) > 0);
	assert_int_equal(
	    ca_op_sign(&c, NULL, x.csr, strlen(x.csr), 10 * DAY, x.cert, sizeof(x.cert), &x.rec),
	    0);
	evidence(&x, hash, a.machine, ev);
	assert_int_equal(ev->result, MCERT_OK);
	assert_string_equal(newer(t.id, ev, T0), "");

	/* A certificate recorded without its DER (signed before schema 14): never sent. */
	{
		struct store_op op = {.kind = STORE_OP_MCERT_PUT};

		op.mcert = m1;
		op.mcert.id = 0;
		op.mcert.not_after = T0 + 400 * DAY;
		snprintf(op.mcert.serial, sizeof(op.mcert.serial), "5eed");
		assert_int_equal(store_write(st, &op, NULL), 0);
		assert_int_equal(store_mcert_der(st, "5eed", (uint8_t *)pem, sizeof(pem)), -ENOENT);
	}
	evidence(&a, hash, a.machine, ev);
	assert_string_equal(newer(t.id, ev, T0), m1.serial);

	/* Rotation: r3, of the new CA, ends before r1; once r1's CA is retired, r3 it is. */
	c.now = T0 + 100;
	assert_int_equal(ca_op_rotate(&c, NULL, 0, NULL, 0, NULL, 0, NULL), 0);
	assert_int_equal(ca_op_renew(&c, NULL, a.rec.serial, 45 * DAY, pem, sizeof(pem), &m3), 0);
	node_with_cert(&r3, &a, pem);
	assert_string_equal(newer(t.id, ev, T0 + 200), m1.serial);
	snprintf(path, sizeof(path), "%llu", (unsigned long long)ca1.id);
	assert_int_equal(ca_op_retire(&c, NULL, path, true, NULL, NULL), 0);
	assert_string_equal(newer(t.id, ev, T0 + 200), m3.serial);
	/* Presented r1 (retired CA, ends later than r3): r3 ends no later, so not sent. */
	evidence(&r1, hash, a.machine, ev);
	assert_string_equal(newer(t.id, ev, T0 + 200), "");
	/* Past r3's end nothing is valid to send. */
	evidence(&a, hash, a.machine, ev);
	assert_string_equal(newer(t.id, ev, T0 + 100 + 45 * DAY), "");
	free(ev);
}

static void test_ca_import(void **state)
{
	char key[MCERT_PEM_MAX], cert[MCERT_PEM_MAX];

	(void)state;
	assert_int_equal(mcert_ca_make("imported", T0, DAY, key, sizeof(key), cert, sizeof(cert)),
			 0);
	/* The pair must belong together. */
	assert_int_equal(ca_op_init(&c, NULL, 0, cert, strlen(cert), "x", 1, NULL), -EINVAL);
	assert_non_null(strstr(c.err, "cannot import the CA"));
	assert_int_equal(ca_op_init(&c, NULL, 0, cert, strlen(cert), NULL, 0, NULL), -EINVAL);
	assert_int_equal(ca_op_init(&c, NULL, 0, cert, strlen(cert), key, strlen(key), NULL), 0);
	/* No state directory: no place for the key. */
	c.state_dir = NULL;
	assert_int_equal(ca_op_init(&c, "x", 0, NULL, 0, NULL, 0, NULL), -EINVAL);
}

static int size_cmp(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* One certificate of machine `machine` (its key `pub`) by CA ca_id, valid [nb, na). */
static struct control_mcert due_cert(uint8_t machine, uint8_t pub, uint64_t ca_id, int64_t nb,
				     int64_t na)
{
	struct control_mcert m = {
	    .tailnet_id = 1, .ca_id = ca_id, .not_before = nb, .not_after = na, .has_pub = true};

	memset(m.machine_key, machine, sizeof(m.machine_key));
	memset(m.pub, pub, sizeof(m.pub));
	return m;
}

/*
 * Who --machine-cert-auto-renew renews (ca_renew_due): per machine and certificate key only
 * the newest of a CA not retired, and only when it is valid, ends within the window, is not
 * revoked, can be renewed (key kept), and a renewal as long would not be due at once.
 */
static void test_ca_renew_due(void **state)
{
	const int64_t now = T0, w = 7 * DAY, life = 30 * DAY + MCERT_BACKDATE_SEC;
	const struct control_ca cas[] = {{.id = 1, .tailnet_id = 1},
					 {.id = 2, .tailnet_id = 1, .retired_at = T0 - DAY}};
	struct control_mcert c[12];
	size_t due[12];
	int n;

	(void)state;
	c[0] = due_cert(1, 1, 1, now + 5 * DAY - life, now + 5 * DAY);	 /* due */
	c[1] = due_cert(2, 2, 1, now + 10 * DAY - life, now + 10 * DAY); /* not yet */
	/* machine 3: the old one is due, but a renewal ends later: renewed already */
	c[2] = due_cert(3, 3, 1, now + DAY - life, now + DAY);
	c[3] = due_cert(3, 3, 1, now - DAY, now + 29 * DAY);
	c[4] = due_cert(4, 4, 1, now - life, now - 1);		       /* ended */
	c[5] = due_cert(5, 5, 1, now + 2 * DAY - life, now + 2 * DAY); /* revoked */
	c[5].revoked = true;
	c[6] = due_cert(6, 6, 2, now + 2 * DAY - life, now + 2 * DAY); /* retired CA */
	c[7] = due_cert(7, 7, 1, now + 2 * DAY - life, now + 2 * DAY); /* no key kept */
	c[7].has_pub = false;
	/* As long as the window: its renewal would be due at once */
	c[8] = due_cert(8, 8, 1, now + DAY - w - MCERT_BACKDATE_SEC, now + DAY);
	/* machine 9: its newest was revoked: the older one is not renewed in its place */
	c[9] = due_cert(9, 9, 1, now + 3 * DAY - life, now + 3 * DAY);
	c[10] = due_cert(9, 9, 1, now - DAY, now + 29 * DAY);
	c[10].revoked = true;
	/* machine 1 with another certificate key: its own line */
	c[11] = due_cert(1, 2, 1, now + 6 * DAY - life, now + 6 * DAY);

	n = ca_renew_due(c, ARRAY_SIZE(c), cas, ARRAY_SIZE(cas), now, w, due);
	assert_int_equal(n, 2);
	qsort(due, (size_t)n, sizeof(due[0]), size_cmp);
	assert_int_equal(due[0], 0);
	assert_int_equal(due[1], 11);
	/* Nothing at all, and a window of 0: nothing due. */
	assert_int_equal(ca_renew_due(c, 0, cas, ARRAY_SIZE(cas), now, w, due), 0);
	assert_int_equal(ca_renew_due(c, ARRAY_SIZE(c), cas, ARRAY_SIZE(cas), now, 0, due), 0);
}

/* ---- store_mcert_due: the same answer as ca_renew_due, from the store ---- */

static uint64_t due_ca_put(uint64_t tailnet_id, int64_t retired_at)
{
	struct store_op op = {.kind = STORE_OP_CA_PUT};
	uint64_t id;

	op.ca.tailnet_id = tailnet_id;
	snprintf(op.ca.cert, sizeof(op.ca.cert), "not a certificate");
	snprintf(op.ca.key_file, sizeof(op.ca.key_file), "x.key");
	op.ca.created = T0 - 100 * DAY;
	assert_int_equal(store_write(st, &op, &id), 0);
	if (retired_at) {
		op.ca.id = id;
		op.ca.retired_at = retired_at;
		assert_int_equal(store_write(st, &op, NULL), 0);
	}
	return id;
}

static void due_cert_put(const struct control_mcert *m)
{
	static unsigned serial;
	struct store_op op = {.kind = STORE_OP_MCERT_PUT, .mcert = *m};

	op.mcert.id = 0;
	snprintf(op.mcert.serial, sizeof(op.mcert.serial), "%x", ++serial);
	snprintf(op.mcert.subject, sizeof(op.mcert.subject), "m");
	op.mcert.created = T0;
	assert_int_equal(store_write(st, &op, NULL), 0);
}

static void due_put(struct control_mcert m)
{
	due_cert_put(&m);
}

static int id_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The ids ca_renew_due picks from the whole table and the ids store_mcert_due gives agree. */
static size_t due_compare(int64_t now, int64_t w)
{
	struct control_mcert *all = NULL, *due = NULL;
	struct control_ca *cas = NULL;
	size_t n = 0, n_cas = 0, n_due = 0, *idx;
	uint64_t *want;
	int k;

	assert_int_equal(store_mcert_list(st, &all, &n), 0);
	assert_int_equal(store_ca_list(st, &cas, &n_cas), 0);
	idx = calloc(n + 1, sizeof(*idx));
	want = calloc(n + 1, sizeof(*want));
	assert_non_null(idx);
	assert_non_null(want);
	k = ca_renew_due(all, n, cas, n_cas, now, w, idx);
	assert_true(k >= 0);
	for (int i = 0; i < k; i++)
		want[i] = all[idx[i]].id;
	qsort(want, (size_t)k, sizeof(*want), id_cmp);
	assert_int_equal(store_mcert_due(st, now, w, &due, &n_due), 0);
	assert_int_equal(n_due, (size_t)k);
	for (size_t i = 0; i < n_due; i++) {
		const struct control_mcert *a = &all[due[i].id - all[0].id]; /* ids 1, 2, ... */

		assert_int_equal(due[i].id, want[i]); /* in id order, whole records */
		assert_int_equal(a->id, due[i].id);
		assert_string_equal(due[i].serial, a->serial);
		assert_int_equal(due[i].not_after, a->not_after);
		assert_memory_equal(due[i].pub, a->pub, sizeof(a->pub));
	}
	free(all);
	free(cas);
	free(due);
	free(idx);
	free(want);
	return n_due;
}

/*
 * serve --machine-cert-auto-renew asks the store (store_mcert_due: an index range, not the
 * table): test_ca_renew_due's cases, then random tables of two tailnets, a retired CA, a CA of
 * the other tailnet, revoked ones, keyless ones and equal ends, at several times and windows.
 */
static void test_store_mcert_due(void **state)
{
	const int64_t now = T0, w = 7 * DAY, life = 30 * DAY + MCERT_BACKDATE_SEC;
	struct control_tailnet t1 = {0}, t2 = {0};
	struct control_mcert m;
	uint64_t ca1, ca2, ca3;
	uint32_t seed = 12345;

	(void)state;
	snprintf(t1.name, sizeof(t1.name), "one");
	assert_int_equal(store_tailnet_create(st, &t1), 0);
	assert_int_equal(t1.id, 1); /* due_cert's */
	snprintf(t2.name, sizeof(t2.name), "two");
	assert_int_equal(store_tailnet_create(st, &t2), 0);
	ca1 = due_ca_put(1, 0);
	ca2 = due_ca_put(1, T0 - DAY);
	ca3 = due_ca_put(t2.id, 0);
	assert_int_equal(due_compare(now, w), 0); /* none yet */
	due_put(due_cert(1, 1, ca1, now + 5 * DAY - life, now + 5 * DAY));
	due_put(due_cert(2, 2, ca1, now + 10 * DAY - life, now + 10 * DAY));
	due_put(due_cert(3, 3, ca1, now + DAY - life, now + DAY));
	due_put(due_cert(3, 3, ca1, now - DAY, now + 29 * DAY));
	due_put(due_cert(4, 4, ca1, now - life, now - 1));
	m = due_cert(5, 5, ca1, now + 2 * DAY - life, now + 2 * DAY);
	m.revoked = true;
	due_cert_put(&m);
	due_put(due_cert(6, 6, ca2, now + 2 * DAY - life, now + 2 * DAY));
	m = due_cert(7, 7, ca1, now + 2 * DAY - life, now + 2 * DAY);
	m.has_pub = false;
	due_cert_put(&m);
	due_put(due_cert(8, 8, ca1, now + DAY - w - MCERT_BACKDATE_SEC, now + DAY));
	due_put(due_cert(9, 9, ca1, now + 3 * DAY - life, now + 3 * DAY));
	m = due_cert(9, 9, ca1, now - DAY, now + 29 * DAY);
	m.revoked = true;
	due_cert_put(&m);
	due_put(due_cert(1, 2, ca1, now + 6 * DAY - life, now + 6 * DAY));
	/* A CA of the other tailnet does not vouch for this one's certificate. */
	due_put(due_cert(10, 10, ca3, now + 2 * DAY - life, now + 2 * DAY));
	assert_int_equal(due_compare(now, w), 2);
	assert_int_equal(due_compare(now, 0), 0);

	/* Random tables: few machines and few ends, so groups and equal ends are common. */
	for (int i = 0; i < 300; i++) {
		uint64_t cas[] = {ca1, ca2, ca3};

		seed = seed * 1103515245u + 12345u;
		m = due_cert((uint8_t)(11 + (seed >> 8) % 12), (uint8_t)(1 + (seed >> 12) % 2),
			     cas[(seed >> 14) % 3], 0, now + (int64_t)((seed >> 16) % 12) * DAY);
		m.tailnet_id = (seed >> 20) % 4 ? 1 : t2.id;
		m.not_before = m.not_after - ((seed >> 22) % 2 ? life : 5 * DAY);
		m.revoked = (seed >> 24) % 10 == 0;
		m.has_pub = (seed >> 27) % 10 != 0;
		if (!m.has_pub)
			memset(m.pub, 0, sizeof(m.pub));
		due_cert_put(&m);
	}
	for (int64_t t = now - 2 * DAY; t <= now + 12 * DAY; t += DAY / 2)
		for (int64_t win = 0; win <= 12 * DAY; win += 3 * DAY)
			due_compare(t, win);
	assert_true(due_compare(now + 3 * DAY, 9 * DAY) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_ca_lifecycle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ca_import, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ca_rotation, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ca_newer, setup, teardown),
	    cmocka_unit_test(test_ca_renew_due),
	    cmocka_unit_test_setup_teardown(test_store_mcert_due, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
