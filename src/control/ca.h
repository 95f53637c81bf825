/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_CA_H
#define TRELLIS_CONTROL_CA_H

/*
 * Machine certificates, the server's side (docs/identity.md, "Machine certificates"):
 * each tailnet may have a CA (`trellis-control ca init`), which signs nodes' CSRs
 * (`ca sign`) and revokes certificates by serial (`ca revoke`); a tailnet setting
 * (`tailnets set NAME --require-machine-cert on`) makes a valid certificate, proven
 * at registration, a condition of every registration in it.
 *
 * Where things live. The CA's certificate, every certificate it signed and the
 * revocations are in the store (machine_cas, machine_certs). The CA's private key
 * is a file, STATE/ca/TAILNET_ID.key for a tailnet's first CA and
 * STATE/ca/TAILNET_ID-FINGERPRINT16.key for later ones (PKCS#8 PEM, unencrypted, mode
 * 0600 in a 0700 directory, like the server's own key): a copy of the database is not
 * a copy of the CA. Signing therefore happens where the state directory is: the server
 * (admin socket, API key) or --offline.
 *
 * Rotation. `ca rotate` adds a new CA to a tailnet that has one: from then on the new
 * one signs (ca sign, ca renew), and every CA not retired is trusted at registration,
 * so machines keep joining with certificates of the old one while the admin renews
 * them (`ca renew SERIAL`: the same key, machine and name, signed by the CA that signs
 * now; no new CSR). `ca retire` ends the old one's trust: refused while a machine has
 * a valid certificate of it and none of a CA that stays, unless forced, which expires
 * those machines' nodes (as a revocation does). The signing CA is never retired.
 *
 * Revocation lists. `ca crl` is a CA's X.509 CRL (RFC 5280, v2, signed with its key):
 * the certificates it signed that are revoked, and serials revoked without a record
 * (an imported CA's), valid for CA_CRL_VALIDITY_SEC, for other relying parties; the
 * server itself reads the store. The running server also serves each CA's CRL over plain
 * HTTP without authentication (crlhttp.h), and certificates signed through a server with a
 * --public-url name that URL as their CRL distribution point (not those signed --offline:
 * no server, no URL).
 *
 * Registration reads the store each time (no cache), so a revocation is in force for
 * the next registration after its commit. Revoking a certificate also expires the
 * node of its machine key in its tailnet (`nodes expire`, in the audit log), so the
 * node must register again, which a revoked certificate cannot do. A node registered
 * with a certificate gets a key expiry no later than the certificate's end.
 *
 * The operations follow admin_op.h: an actor, checked input, refusals with a
 * message in c->err, writes through admin_op_commit (the audit log).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/admin_op.h"
#include "control/model.h"
#include "crypto/mcert.h"
#include "proto/ctrlmsg.h"

#define CA_KEY_DIR "ca"
/* The refusal of a node without a certificate where one is required. */
#define CA_ERR_REQUIRED                                                                            \
	"this tailnet requires a machine certificate: run `trellis cert request`, have an "        \
	"admin sign it (trellis-control ca sign), then `trellis cert install`"

/*
 * A tailnet's new CA (NULL: the default tailnet): made here (validity_sec; 0 =
 * MCERT_CA_VALIDITY_SEC), or imported when cert_pem and key_pem are given. -EEXIST
 * when it has one, -EINVAL (c->err says what), -EIO (the key file). ret may be NULL.
 */
int ca_op_init(struct admin_op_ctx *c, const char *tailnet, int64_t validity_sec,
	       const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
	       struct control_ca *ret);
/*
 * A new CA beside the tailnet's (see Rotation): made or imported as at init. -ENOENT when
 * the tailnet has no CA in force.
 */
int ca_op_rotate(struct admin_op_ctx *c, const char *tailnet, int64_t validity_sec,
		 const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
		 struct control_ca *ret);
/* The tailnet's CA that signs (the newest not retired). 0, -ENOENT. */
int ca_op_get(struct admin_op_ctx *c, const char *tailnet, struct control_ca *ret);
/* Every CA of the tailnet, retired ones too, oldest first; *ret malloc'd. */
int ca_op_cas(struct admin_op_ctx *c, const char *tailnet, struct control_ca **ret,
	      size_t *ret_n);
/*
 * Retires a CA of the tailnet, named by its id or a prefix (8 hex digits or more) of its
 * key id (see Rotation). *ret_stranded: machines with a valid certificate of it and none of
 * a CA that stays; without force they make it -EBUSY. *ret_expired: their nodes expired.
 * -EALREADY (retired), -EINVAL (the signing CA), -ENOENT.
 */
int ca_op_retire(struct admin_op_ctx *c, const char *tailnet, const char *which, bool force,
		 unsigned *ret_stranded, unsigned *ret_expired);
/*
 * Signs again the certificate `serial` signed here (the same key, machine and name) with
 * its tailnet's signing CA, for validity_sec (0: MCERT_VALIDITY_DEFAULT_SEC); the old one
 * stays valid until its end or revocation. -EINVAL (revoked, or signed before its key was
 * kept), -ENOENT.
 */
int ca_op_renew(struct admin_op_ctx *c, const char *tailnet, const char *serial,
		int64_t validity_sec, char *ret_pem, size_t cap, struct control_mcert *ret);
/* How long a revocation list is good for (its nextUpdate). */
#define CA_CRL_VALIDITY_SEC (7LL * 86400)
/* The CRL (PEM, malloc'd into *ret_pem) of the tailnet's CA `which` (NULL: the signing one). */
int ca_op_crl(struct admin_op_ctx *c, const char *tailnet, const char *which, char **ret_pem);
/* The same for the CA ca, numbered `number` (RFC 5280 5.2.3: it grows with each list). */
int ca_crl_make(struct admin_op_ctx *c, const struct control_ca *ca, uint64_t number,
		char **ret_pem);
/*
 * Where the server serves each CA's CRL (crlhttp.h): PUBLIC_URL/crl/NAME.crl, NAME the CA's key
 * identifier in hex (the fingerprint of its certificate for an imported CA without one), which
 * ca_crl_name gives (0 or -EINVAL). ca_crl_url: that URL, as certificates signed with a public
 * URL known name it (their CRL distribution point). 0, -EINVAL (not http(s)), -ENAMETOOLONG.
 */
#define CA_CRL_PATH "/crl/"
#define CA_CRL_SUFFIX ".crl"
int ca_crl_name(const struct control_ca *ca, char ret[MCERT_KEY_ID_MAX]);
int ca_crl_url(const char *public_url, const struct control_ca *ca, char *ret, size_t cap);
/*
 * Signs a CSR (PEM) for validity_sec (0: MCERT_VALIDITY_DEFAULT_SEC) with the tailnet's
 * CA: the certificate's PEM into ret_pem, its record into ret (may be NULL).
 */
int ca_op_sign(struct admin_op_ctx *c, const char *tailnet, const char *csr, size_t csr_len,
	       int64_t validity_sec, char *ret_pem, size_t cap, struct control_mcert *ret);
/*
 * Revokes a certificate by serial (hex, any case, optional colons) and expires the
 * node of its machine key; *ret_expired (may be NULL) counts such nodes. A serial the
 * CA never signed here (an imported CA's) is recorded revoked in `tailnet`.
 */
int ca_op_revoke(struct admin_op_ctx *c, const char *tailnet, const char *serial,
		 unsigned *ret_expired);
/* The certificates signed in the tailnet (NULL: all tailnets); *ret malloc'd. */
int ca_op_list(struct admin_op_ctx *c, const char *tailnet, struct control_mcert **ret,
	       size_t *ret_n);
/* The tailnet setting; turning it on needs a CA. 0, -ENOENT, -EINVAL. */
int ca_op_require(struct admin_op_ctx *c, const char *tailnet, bool on);

/*
 * What a register message shows of a certificate, checked against its session: the
 * certificate parses, names the session's machine key, and the proof is by its key
 * over this session's handshake hash and the node key registered. What remains is
 * the tailnet's (ca_register_check).
 */
struct ca_evidence {
	bool present;		  /* the node sent a certificate */
	enum mcert_result result; /* of the checks so far */
	uint8_t der[MCERT_DER_MAX];
	size_t len;
	struct mcert_info info; /* its fields, when it parsed */
};
void ca_evidence_make(struct ca_evidence *ret, const struct ctrl_register *msg,
		      const uint8_t machine_key[NETMAP_KEY_LEN],
		      const uint8_t hash[MCERT_HASH_LEN]);

/*
 * The tailnet's rule at registration: NULL (no certificate needed, or a valid one:
 * *ret_not_after is its end), or the refusal in words (in buf).
 */
const char *ca_register_check(struct store *s, uint64_t tailnet_id, const struct ca_evidence *ev,
			      int64_t now, int64_t *ret_not_after, char *buf, size_t cap);

/*
 * Renewal without a new install (docs/identity.md, "Renewed certificates"): for a register
 * message whose certificate checks out against its session (ev: it names the session's
 * machine key and its key signed this session's hash), the tailnet's newest certificate of
 * the same machine key and certificate key that is not revoked, of a CA not retired, valid
 * at now and ending later than the one presented: base64 DER into ret_b64 (cap bytes,
 * CTRL_MCERT_MAX fits any) for the register response. Certificates are public; only the
 * holder of both keys can use one. 0, -ENOENT (none), -errno.
 */
int ca_cert_newer(struct store *s, uint64_t tailnet_id, const struct ca_evidence *ev, int64_t now,
		  char *ret_b64, size_t cap);
/*
 * The same for a machine key and certificate key the caller vouches for: the push of a
 * renewal on the map stream (the server knows the node's machine key from its session; the
 * node takes only a certificate naming its own keys). not_after 0: the one ending last.
 */
int ca_cert_newer_of(struct store *s, uint64_t tailnet_id,
		     const uint8_t machine_key[NETMAP_KEY_LEN], const uint8_t pub[32],
		     int64_t not_after, int64_t now, char *ret_b64, size_t cap);

/*
 * Auto-renewal (serve --machine-cert-auto-renew DUR, docs/identity.md): which of certs (n, as
 * store_mcert_list gives them; cas: every CA) to renew at now. Per tailnet, machine key and
 * certificate key, the one ending last among those of a CA not retired, when it is not
 * revoked (a revoked newest one stops renewal), renewable (its key kept), valid at now with
 * less than window_sec left, and a renewal as long as it (its not_after - not_before -
 * MCERT_BACKDATE_SEC) would not be due at once; of two ending at once, the one with the
 * greater id. Their indexes into ret (room for n); how many, or -ENOMEM. No I/O. The
 * server asks the store instead (store_mcert_due: the same rules as one indexed query);
 * this is its reference (test_ca.c, bench/mcert_renew.sh).
 */
int ca_renew_due(const struct control_mcert *certs, size_t n, const struct control_ca *cas,
		 size_t n_cas, int64_t now, int64_t window_sec, size_t *ret);

#endif
