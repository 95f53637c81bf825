/* SPDX-License-Identifier: MIT */
#include "control/ca.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base64.h"
#include "crypto/crypto.h"

/* ---- the CA's key file ---- */

/* STATE/ca/FILE, or the directory itself (file NULL). */
static int key_path(const struct admin_op_ctx *c, const char *file, char *buf, size_t len)
{
	int n = !file ? snprintf(buf, len, "%s/%s", c->state_dir, CA_KEY_DIR)
		      : snprintf(buf, len, "%s/%s/%s", c->state_dir, CA_KEY_DIR, file);

	return n < 0 || (size_t)n >= len || (file && (!file[0] || strchr(file, '/')))
		   ? -ENAMETOOLONG
		   : 0;
}

/* Written whole or not at all (temporary file, fsync, rename), mode 0600. */
static int key_write(struct admin_op_ctx *c, const char *file, const char *pem, size_t len)
{
	char dir[512], path[512], tmp[520];
	int fd = -1, r;

	r = key_path(c, NULL, dir, sizeof(dir));
	if (r == 0)
		r = key_path(c, file, path, sizeof(path));
	if (r < 0)
		return admin_op_refuse(c, r, "state directory path too long");
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return admin_op_refuse(c, -errno, "cannot create %s: %s", dir, strerror(errno));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return admin_op_refuse(c, -errno, "cannot write %s: %s", tmp, strerror(errno));
	r = fchmod(fd, 0600) < 0 || write(fd, pem, len) != (ssize_t)len || fsync(fd) < 0 ? -errno
											 : 0;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return admin_op_refuse(c, r, "cannot write %s: %s", path, strerror(-r));
	}
	return 0;
}

static int key_read(struct admin_op_ctx *c, const char *file, char *buf, size_t cap)
{
	char path[512];
	ssize_t n;
	int fd, r = key_path(c, file, path, sizeof(path));

	if (r < 0)
		return admin_op_refuse(c, r, "state directory path too long");
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return admin_op_refuse(c, -EIO, "cannot read the CA's key %s: %s", path, strerror(errno));
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n <= 0 || (size_t)n >= cap - 1)
		return admin_op_refuse(c, -EIO, "cannot read the CA's key %s: %s", path,
			      n < 0 ? strerror(errno) : "empty or too large");
	buf[n] = '\0';
	return (int)n;
}

/* ---- operations ---- */

static int tailnet_get(struct admin_op_ctx *c, const char *name, struct control_tailnet *ret)
{
	if (name && strcmp(name, ADMIN_DEFAULT_TAILNET) == 0)
		name = NULL;
	return admin_op_tailnet_resolve(c, name, ret);
}

/* The tailnet's CAs, in the order they were made (malloc'd; *ret_n may be 0). */
static int cas_of(struct admin_op_ctx *c, uint64_t tailnet_id, struct control_ca **ret,
		  size_t *ret_n)
{
	size_t k = 0;
	int r = store_ca_list(c->store, ret, ret_n);

	if (r < 0)
		return admin_op_refuse(c, r, "could not read the CAs: %s", strerror(-r));
	for (size_t i = 0; i < *ret_n; i++)
		if ((*ret)[i].tailnet_id == tailnet_id)
			(*ret)[k++] = (*ret)[i];
	*ret_n = k;
	return 0;
}

/*
 * A new CA for tailnet t, made here or imported: init (the tailnet has no CA in force) or
 * rotate (it has one; the new one signs from now on, the old one stays trusted until retired).
 */
static int ca_add(struct admin_op_ctx *c, const char *tailnet, bool rotate, int64_t validity_sec,
		  const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
		  struct control_ca *ret)
{
	struct store_op op = {.kind = STORE_OP_CA_PUT};
	struct control_ca *all = NULL;
	struct control_tailnet t;
	char *key = NULL, cn[96], path[512], fp[65];
	size_t n_all = 0;
	const char *why;
	int r;

	if (!c->state_dir)
		return admin_op_refuse(c, -EINVAL, "no state directory to keep the CA's key in");
	r = tailnet_get(c, tailnet, &t);
	if (r < 0)
		return r;
	r = store_ca_get(c->store, t.id, &op.ca);
	if (r == 0 && !rotate)
		return admin_op_refuse(c, -EEXIST,
				       "tailnet \"%s\" has a CA already (ca rotate makes a new one)",
				       t.name);
	if (r < 0 && rotate)
		return admin_op_refuse(c, -ENOENT, "tailnet \"%s\" has no CA to rotate (ca init)",
				       t.name);
	memset(&op.ca, 0, sizeof(op.ca));
	if (!cert_pem != !key_pem)
		return admin_op_refuse(c, -EINVAL, "an imported CA needs its certificate and its key");
	r = cas_of(c, t.id, &all, &n_all);
	free(all);
	if (r < 0)
		return r;
	key = calloc(1, MCERT_PEM_MAX);
	if (!key)
		return admin_op_refuse(c, -ENOMEM, "out of memory");
	if (cert_pem) {
		r = mcert_ca_check(cert_pem, cert_len, key_pem, key_len, c->now, &why);
		if (r < 0) {
			r = admin_op_refuse(c, r, "cannot import the CA: %s", why);
			goto out;
		}
		if (cert_len >= sizeof(op.ca.cert) || key_len >= MCERT_PEM_MAX) {
			r = admin_op_refuse(c, -EINVAL, "cannot import the CA: too large");
			goto out;
		}
		memcpy(op.ca.cert, cert_pem, cert_len);
		memcpy(key, key_pem, key_len);
	} else {
		snprintf(cn, sizeof(cn), "Trellis machine CA %s%s", t.name, rotate ? " (rotated)" : "");
		r = mcert_ca_make(cn, c->now,
				  validity_sec > 0 ? validity_sec : MCERT_CA_VALIDITY_SEC, key,
				  MCERT_PEM_MAX, op.ca.cert, sizeof(op.ca.cert));
		if (r < 0) {
			r = admin_op_refuse(c, r, "cannot make the CA: %s", strerror(-r));
			goto out;
		}
	}
	/* The tailnet's first CA keeps the name it always had; later ones are named by key. */
	if (n_all == 0) {
		snprintf(op.ca.key_file, sizeof(op.ca.key_file), "%" PRIu64 ".key", t.id);
	} else {
		if (mcert_fingerprint(op.ca.cert, strlen(op.ca.cert), fp) < 0) {
			r = admin_op_refuse(c, -EINVAL, "cannot read the new CA's certificate");
			goto out;
		}
		snprintf(op.ca.key_file, sizeof(op.ca.key_file), "%" PRIu64 "-%.16s.key", t.id, fp);
	}
	/* The key first: a CA in the store whose key is missing could sign nothing. */
	r = key_write(c, op.ca.key_file, key, strlen(key));
	if (r < 0)
		goto out;
	op.ca.tailnet_id = t.id;
	op.ca.created = c->now;
	r = admin_op_commit(c, rotate ? "ca.rotate" : "ca.init", NULL, &op, &op.ca.id);
	if (r < 0) {
		if (key_path(c, op.ca.key_file, path, sizeof(path)) == 0)
			unlink(path);
		r = admin_op_refuse(c, r, "could not store the CA of \"%s\"", t.name);
		goto out;
	}
	if (ret)
		*ret = op.ca;
out:
	crypto_wipe(key, MCERT_PEM_MAX);
	free(key);
	return r;
}

int ca_op_init(struct admin_op_ctx *c, const char *tailnet, int64_t validity_sec,
	       const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
	       struct control_ca *ret)
{
	return ca_add(c, tailnet, false, validity_sec, cert_pem, cert_len, key_pem, key_len, ret);
}

int ca_op_rotate(struct admin_op_ctx *c, const char *tailnet, int64_t validity_sec,
		 const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
		 struct control_ca *ret)
{
	return ca_add(c, tailnet, true, validity_sec, cert_pem, cert_len, key_pem, key_len, ret);
}

int ca_op_cas(struct admin_op_ctx *c, const char *tailnet, struct control_ca **ret,
	      size_t *ret_n)
{
	struct control_tailnet t;
	int r = tailnet_get(c, tailnet, &t);

	if (r < 0)
		return r;
	return cas_of(c, t.id, ret, ret_n);
}

int ca_op_get(struct admin_op_ctx *c, const char *tailnet, struct control_ca *ret)
{
	struct control_tailnet t;
	int r = tailnet_get(c, tailnet, &t);

	if (r < 0)
		return r;
	if (store_ca_get(c->store, t.id, ret) < 0)
		return admin_op_refuse(c, -ENOENT,
			      "tailnet \"%s\" has no CA (trellis-control ca init --tailnet %s)",
			      t.name, t.name);
	return 0;
}

/* Signs req with the tailnet's signing CA ca and records the certificate (action: the log's). */
static int sign_with(struct admin_op_ctx *c, const struct control_ca *ca, const struct mcert_info *req,
		     int64_t validity_sec, const char *action, char *ret_pem, size_t cap,
		     struct control_mcert *ret)
{
	struct store_op op = {.kind = STORE_OP_MCERT_PUT};
	struct control_mcert *m = &op.mcert;
	char *key = calloc(1, MCERT_PEM_MAX), url[MCERT_CRL_URL_MAX];
	uint8_t *der = malloc(MCERT_DER_MAX);
	struct mcert_info info;
	int r, n;

	if (!key || !der) {
		r = admin_op_refuse(c, -ENOMEM, "out of memory");
		goto out;
	}
	if (validity_sec <= 0)
		validity_sec = MCERT_VALIDITY_DEFAULT_SEC;
	n = key_read(c, ca->key_file, key, MCERT_PEM_MAX);
	if (n < 0) {
		r = n;
		goto out;
	}
	/* Signed with a public URL known: the certificate says where its CA's CRL is. */
	if (c->public_url && ca_crl_url(c->public_url, ca, url, sizeof(url)) < 0) {
		r = admin_op_refuse(c, -EINVAL, "--public-url %.128s is too long or not http(s)",
				    c->public_url);
		goto out;
	}
	r = mcert_sign(key, (size_t)n, ca->cert, strlen(ca->cert), req, c->public_url ? url : NULL,
		       c->now - MCERT_BACKDATE_SEC, c->now + validity_sec, &info, ret_pem, cap);
	if (r < 0) {
		r = admin_op_refuse(c, r, "cannot sign: %s", strerror(-r));
		goto out;
	}
	/* Kept whole, so that the node's next registration can fetch it (ca_cert_newer). */
	n = mcert_pem_to_der(ret_pem, strlen(ret_pem), der, MCERT_DER_MAX);
	if (n <= 0) {
		r = admin_op_refuse(c, -EINVAL, "cannot read the certificate just signed");
		goto out;
	}
	op.mcert_der = der;
	op.mcert_der_len = (size_t)n;
	m->tailnet_id = ca->tailnet_id;
	m->ca_id = ca->id;
	snprintf(m->serial, sizeof(m->serial), "%s", info.serial);
	memcpy(m->machine_key, info.machine_key, NETMAP_KEY_LEN);
	snprintf(m->subject, sizeof(m->subject), "%s", info.subject);
	m->has_pub = true;
	memcpy(m->pub, info.pub, sizeof(m->pub));
	m->not_before = info.not_before;
	m->not_after = info.not_after;
	m->created = c->now;
	r = admin_op_commit(c, action, NULL, &op, &m->id);
	if (r < 0) {
		r = admin_op_refuse(c, r, "could not store the certificate: %s", strerror(-r));
		goto out;
	}
	if (ret)
		*ret = *m;
out:
	if (key)
		crypto_wipe(key, MCERT_PEM_MAX);
	free(key);
	free(der);
	return r;
}

/* Signing needs the CA's key, which is in the state directory: room for the CA, or the refusal. */
static int ca_op_begin(struct admin_op_ctx *c, struct control_ca **ret)
{
	*ret = NULL;
	if (!c->state_dir)
		return admin_op_refuse(c, -EINVAL, "no state directory: the CA's key is not here");
	*ret = malloc(sizeof(**ret));
	return *ret ? 0 : admin_op_refuse(c, -ENOMEM, "out of memory");
}

int ca_op_sign(struct admin_op_ctx *c, const char *tailnet, const char *csr, size_t csr_len,
	       int64_t validity_sec, char *ret_pem, size_t cap, struct control_mcert *ret)
{
	struct control_ca *ca;
	struct mcert_info req;
	enum mcert_result res;
	int r = ca_op_begin(c, &ca);

	if (r < 0)
		return r;
	r = ca_op_get(c, tailnet, ca);
	if (r < 0)
		goto out;
	res = mcert_csr_parse(csr, csr_len, &req);
	if (res != MCERT_OK) {
		r = admin_op_refuse(c, -EINVAL, "CSR refused: %s", mcert_result_str(res));
		goto out;
	}
	r = sign_with(c, ca, &req, validity_sec, "cert.sign", ret_pem, cap, ret);
out:
	free(ca);
	return r;
}

/* "0A:1b:..." to "a1b...": lower case, no colons or leading zeros. 0 or -EINVAL. */
static int serial_normalize(const char *in, char ret[MCERT_SERIAL_MAX])
{
	size_t n = 0;

	for (; *in; in++) {
		char ch = *in;

		if (ch == ':')
			continue;
		if (ch >= 'A' && ch <= 'F')
			ch = (char)(ch - 'A' + 'a');
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
			return -EINVAL;
		if (ch == '0' && n == 0)
			continue;
		if (n + 1 >= MCERT_SERIAL_MAX)
			return -EINVAL;
		ret[n++] = ch;
	}
	ret[n] = '\0';
	return n ? 0 : -EINVAL;
}

/* The nodes of the certificate's machine in its tailnet lose their key now. */
static int nodes_expire(struct admin_op_ctx *c, const struct control_mcert *m, unsigned *ret_n)
{
	struct store_snapshot snap;
	char id[24];
	int r = admin_op_snapshot(c, NULL, &snap, NULL);

	*ret_n = 0;
	if (r < 0)
		return r;
	for (size_t i = 0; i < snap.n_nodes && r == 0; i++) {
		const struct control_node *n = &snap.nodes[i];

		if (n->tailnet_id != m->tailnet_id ||
		    memcmp(n->machine_key, m->machine_key, NETMAP_KEY_LEN) != 0)
			continue;
		snprintf(id, sizeof(id), "%" PRIu64, n->id);
		r = admin_op_node_expire(c, id, NULL);
		if (r == 0)
			(*ret_n)++;
	}
	store_snapshot_free(&snap);
	return r;
}

int ca_op_revoke(struct admin_op_ctx *c, const char *tailnet, const char *serial,
		 unsigned *ret_expired)
{
	struct store_op op = {.kind = STORE_OP_MCERT_PUT};
	struct control_mcert *m = &op.mcert;
	struct control_tailnet t;
	unsigned expired = 0;
	char norm[MCERT_SERIAL_MAX];
	int r;

	if (serial_normalize(serial, norm) < 0)
		return admin_op_refuse(c, -EINVAL, "bad serial \"%.64s\" (hex, as `ca list` shows it)",
			      serial);
	if (store_mcert_get(c->store, norm, m) == 0) {
		if (m->revoked)
			return admin_op_refuse(c, -EEXIST, "certificate %s is revoked already", norm);
	} else {
		/* Signed elsewhere by an imported CA: its serial goes on the list all the same. */
		r = tailnet_get(c, tailnet, &t);
		if (r < 0)
			return r;
		memset(m, 0, sizeof(*m));
		m->tailnet_id = t.id;
		snprintf(m->serial, sizeof(m->serial), "%s", norm);
		m->created = c->now;
	}
	m->revoked = true;
	m->revoked_at = c->now;
	r = admin_op_commit(c, m->id ? "cert.revoke" : "cert.revoke_unknown", NULL, &op, NULL);
	if (r < 0)
		return admin_op_refuse(c, r, "could not revoke %s: %s", norm, strerror(-r));
	if (m->id)
		r = nodes_expire(c, m, &expired);
	if (ret_expired)
		*ret_expired = expired;
	return r;
}

int ca_op_list(struct admin_op_ctx *c, const char *tailnet, struct control_mcert **ret,
	       size_t *ret_n)
{
	struct control_tailnet t;
	size_t k = 0;
	int r;

	if (tailnet) {
		r = tailnet_get(c, tailnet, &t);
		if (r < 0)
			return r;
	}
	r = store_mcert_list(c->store, ret, ret_n);
	if (r < 0)
		return admin_op_refuse(c, r, "could not read the certificates: %s", strerror(-r));
	for (size_t i = 0; tailnet && i < *ret_n; i++)
		if ((*ret)[i].tailnet_id == t.id)
			(*ret)[k++] = (*ret)[i];
	if (tailnet)
		*ret_n = k;
	return 0;
}

int ca_op_renew(struct admin_op_ctx *c, const char *tailnet, const char *serial,
		int64_t validity_sec, char *ret_pem, size_t cap, struct control_mcert *ret)
{
	struct control_ca *ca;
	struct mcert_info req = {0};
	struct control_tailnet t;
	struct control_mcert m;
	char norm[MCERT_SERIAL_MAX];
	int r = ca_op_begin(c, &ca);

	if (r < 0)
		return r;
	if (serial_normalize(serial, norm) < 0) {
		r = admin_op_refuse(c, -EINVAL, "bad serial \"%.64s\" (hex, as `ca list` shows it)",
				    serial);
		goto out;
	}
	r = -ENOENT;
	if (store_mcert_get(c->store, norm, &m) < 0 || !m.id) {
		admin_op_refuse(c, r, "no certificate %s was signed here", norm);
		goto out;
	}
	if (tailnet) {
		r = tailnet_get(c, tailnet, &t);
		if (r < 0)
			goto out;
		if (t.id != m.tailnet_id) {
			r = admin_op_refuse(c, -ENOENT, "certificate %s is not of tailnet \"%s\"", norm,
					    t.name);
			goto out;
		}
	}
	if (m.revoked) {
		r = admin_op_refuse(c, -EINVAL, "certificate %s is revoked: its machine needs a new "
					       "CSR (trellis cert request)", norm);
		goto out;
	}
	if (!m.has_pub) {
		r = admin_op_refuse(c, -EINVAL, "certificate %s was signed before renewal was "
					       "possible: sign a new CSR (trellis cert request)", norm);
		goto out;
	}
	if (store_ca_get(c->store, m.tailnet_id, ca) < 0) {
		r = admin_op_refuse(c, -ENOENT, "the tailnet of certificate %s has no CA", norm);
		goto out;
	}
	/* The same key, machine and name: the node installs it without a new request. */
	memcpy(req.pub, m.pub, sizeof(req.pub));
	memcpy(req.machine_key, m.machine_key, sizeof(req.machine_key));
	snprintf(req.subject, sizeof(req.subject), "%s", m.subject);
	r = sign_with(c, ca, &req, validity_sec, "cert.renew", ret_pem, cap, ret);
out:
	free(ca);
	return r;
}

/* A CA by its id or a prefix (8 hex digits or more) of its key id, among the tailnet's. */
static const struct control_ca *ca_find(const struct control_ca *cas, size_t n, const char *which)
{
	char kid[MCERT_KEY_ID_MAX];
	size_t len = strlen(which);
	char *end;
	unsigned long long id;

	errno = 0;
	id = strtoull(which, &end, 10);
	for (size_t i = 0; i < n; i++) {
		if (!*end && !errno && cas[i].id == id)
			return &cas[i];
		if (len >= 8 && mcert_key_id(cas[i].cert, strlen(cas[i].cert), kid) == 0 &&
		    strncasecmp(kid, which, len) == 0)
			return &cas[i];
	}
	return NULL;
}

/*
 * A machine whose valid certificate m is of the CA being retired is covered when it also has
 * a valid certificate of a CA that stays trusted (renewed, or signed anew, since rotation).
 */
static bool machine_covered(const struct control_mcert *all, size_t n, const struct control_mcert *m,
			    const struct control_ca *cas, size_t n_cas, uint64_t retiring,
			    int64_t now)
{
	for (size_t i = 0; i < n; i++) {
		const struct control_mcert *x = &all[i];

		if (x->tailnet_id != m->tailnet_id || x->revoked || x->not_after <= now ||
		    x->ca_id == retiring || memcmp(x->machine_key, m->machine_key, NETMAP_KEY_LEN))
			continue;
		for (size_t j = 0; j < n_cas; j++)
			if (cas[j].id == x->ca_id && !cas[j].retired_at)
				return true;
	}
	return false;
}

int ca_op_retire(struct admin_op_ctx *c, const char *tailnet, const char *which, bool force,
		 unsigned *ret_stranded, unsigned *ret_expired)
{
	struct store_op op = {.kind = STORE_OP_CA_PUT};
	struct control_ca *cas = NULL, signing;
	const struct control_ca *ca;
	struct control_mcert *all = NULL;
	struct control_tailnet t;
	size_t n_cas = 0, n = 0;
	unsigned stranded = 0, expired = 0, k;
	int r = tailnet_get(c, tailnet, &t);

	if (r == 0)
		r = cas_of(c, t.id, &cas, &n_cas);
	if (r < 0)
		return r;
	ca = ca_find(cas, n_cas, which);
	if (!ca) {
		r = admin_op_refuse(c, -ENOENT, "tailnet \"%s\" has no CA \"%.64s\" (ca show --all)",
				    t.name, which);
		goto out;
	}
	if (ca->retired_at) {
		r = admin_op_refuse(c, -EALREADY, "CA %" PRIu64 " is retired already", ca->id);
		goto out;
	}
	if (store_ca_get(c->store, t.id, &signing) == 0 && signing.id == ca->id) {
		r = admin_op_refuse(c, -EINVAL,
				    "CA %" PRIu64 " signs for tailnet \"%s\": ca rotate first, renew "
				    "its machines' certificates with the new CA, then retire it",
				    ca->id, t.name);
		goto out;
	}
	r = store_mcert_list(c->store, &all, &n);
	if (r < 0) {
		r = admin_op_refuse(c, r, "could not read the certificates: %s", strerror(-r));
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if (all[i].ca_id == ca->id && !all[i].revoked && all[i].not_after > c->now &&
		    !machine_covered(all, n, &all[i], cas, n_cas, ca->id, c->now))
			stranded++;
	if (ret_stranded)
		*ret_stranded = stranded;
	if (stranded && !force) {
		r = admin_op_refuse(c, -EBUSY,
				    "%u machine(s) have a valid certificate of CA %" PRIu64
				    " and none of another: renew them (ca renew SERIAL), or "
				    "--force to retire it and expire their nodes",
				    stranded, ca->id);
		goto out;
	}
	op.ca = *ca;
	op.ca.retired_at = c->now;
	r = admin_op_commit(c, "ca.retire", NULL, &op, NULL);
	if (r < 0) {
		r = admin_op_refuse(c, r, "could not retire CA %" PRIu64 ": %s", ca->id,
				    strerror(-r));
		goto out;
	}
	/* Their certificates are refused from now on: their nodes register again, as at revoke. */
	for (size_t i = 0; i < n && r == 0; i++)
		if (all[i].ca_id == ca->id && !all[i].revoked && all[i].not_after > c->now &&
		    !machine_covered(all, n, &all[i], cas, n_cas, ca->id, c->now)) {
			r = nodes_expire(c, &all[i], &k);
			expired += k;
		}
out:
	if (ret_expired)
		*ret_expired = expired;
	free(all);
	free(cas);
	return r;
}

int ca_crl_name(const struct control_ca *ca, char ret[MCERT_KEY_ID_MAX])
{
	size_t len = strnlen(ca->cert, sizeof(ca->cert));

	if (mcert_key_id(ca->cert, len, ret) == 0)
		return 0;
	_Static_assert(MCERT_KEY_ID_MAX >= 65, "a fingerprint fits");
	return mcert_fingerprint(ca->cert, len, ret);
}

int ca_crl_url(const char *public_url, const struct control_ca *ca, char *ret, size_t cap)
{
	char name[MCERT_KEY_ID_MAX];
	size_t n = strlen(public_url);
	int len;

	while (n && public_url[n - 1] == '/')
		n--;
	if (strncmp(public_url, "http://", 7) && strncmp(public_url, "https://", 8))
		return -EINVAL;
	if (ca_crl_name(ca, name) < 0)
		return -EINVAL;
	len = snprintf(ret, cap, "%.*s" CA_CRL_PATH "%s" CA_CRL_SUFFIX, (int)n, public_url, name);
	if (len < 0 || (size_t)len >= cap || (size_t)len >= MCERT_CRL_URL_MAX)
		return -ENAMETOOLONG;
	return 0;
}

int ca_crl_make(struct admin_op_ctx *c, const struct control_ca *ca, uint64_t number,
		char **ret_pem)
{
	struct control_mcert *all = NULL;
	struct mcert_revoked *list = NULL;
	size_t n = 0, k = 0;
	char *key = NULL;
	int r, len;

	if (!c->state_dir)
		return admin_op_refuse(c, -EINVAL, "no state directory: the CA's key is not here");
	r = store_mcert_list(c->store, &all, &n);
	if (r < 0)
		return admin_op_refuse(c, r, "could not read the certificates: %s", strerror(-r));
	list = calloc(n ? n : 1, sizeof(*list));
	key = calloc(1, MCERT_PEM_MAX);
	if (!list || !key) {
		r = admin_op_refuse(c, -ENOMEM, "out of memory");
		goto out;
	}
	/* Its own, and the serials revoked without a record (an imported CA's): on every list. */
	for (size_t i = 0; i < n; i++)
		if (all[i].revoked && all[i].tailnet_id == ca->tailnet_id &&
		    (all[i].ca_id == ca->id || all[i].ca_id == 0)) {
			snprintf(list[k].serial, sizeof(list[k].serial), "%s", all[i].serial);
			list[k++].revoked_at = all[i].revoked_at;
		}
	len = key_read(c, ca->key_file, key, MCERT_PEM_MAX);
	if (len < 0) {
		r = len;
		goto out;
	}
	r = mcert_crl_make(key, (size_t)len, ca->cert, strlen(ca->cert), list, k, number, c->now,
			   c->now + CA_CRL_VALIDITY_SEC, ret_pem);
	if (r < 0)
		r = admin_op_refuse(c, r, "cannot make the revocation list: %s", strerror(-r));
out:
	if (key)
		crypto_wipe(key, MCERT_PEM_MAX);
	free(key);
	free(list);
	free(all);
	return r < 0 ? r : 0;
}

int ca_op_crl(struct admin_op_ctx *c, const char *tailnet, const char *which, char **ret_pem)
{
	struct control_ca *cas = NULL, signing;
	const struct control_ca *ca = NULL;
	struct control_tailnet t;
	size_t n_cas = 0;
	int r = tailnet_get(c, tailnet, &t);

	if (r == 0)
		r = cas_of(c, t.id, &cas, &n_cas);
	if (r < 0)
		return r;
	if (which) {
		ca = ca_find(cas, n_cas, which);
	} else if (store_ca_get(c->store, t.id, &signing) == 0) {
		for (size_t i = 0; i < n_cas; i++)
			if (cas[i].id == signing.id)
				ca = &cas[i];
	}
	/* The number only grows: one CRL a second at most, which an admin's export is. */
	if (ca)
		r = ca_crl_make(c, ca, (uint64_t)c->now, ret_pem);
	else
		r = admin_op_refuse(c, -ENOENT, "tailnet \"%s\" has no CA%s%.64s%s", t.name,
				    which ? " \"" : "", which ? which : "", which ? "\"" : "");
	free(cas);
	return r;
}

int ca_op_require(struct admin_op_ctx *c, const char *tailnet, bool on)
{
	struct store_op op = {.kind = STORE_OP_TAILNET_UPDATE};
	struct control_ca *ca;
	int r = tailnet_get(c, tailnet, &op.tailnet);

	if (r < 0)
		return r;
	if (on) {
		ca = malloc(sizeof(*ca));
		r = ca ? store_ca_get(c->store, op.tailnet.id, ca) : -ENOMEM;
		free(ca);
		if (r < 0)
			return admin_op_refuse(
			    c, -EINVAL,
			    "tailnet \"%s\" has no CA: trellis-control ca init --tailnet %s "
			    "first",
			    op.tailnet.name, op.tailnet.name);
	}
	op.tailnet.require_machine_cert = on;
	r = admin_op_commit(c, "tailnet.set", NULL, &op, NULL);
	return r < 0 ? admin_op_refuse(c, r, "%s", strerror(-r)) : 0;
}

/* ---- registration ---- */

void ca_evidence_make(struct ca_evidence *ret, const struct ctrl_register *msg,
		      const uint8_t machine_key[NETMAP_KEY_LEN], const uint8_t hash[MCERT_HASH_LEN])
{
	uint8_t sig[MCERT_SIG_LEN + 3];
	struct mcert_info info;
	int n;

	memset(ret, 0, sizeof(*ret));
	if (!msg->machine_cert[0])
		return;
	ret->present = true;
	ret->result = MCERT_MALFORMED;
	n = base64_decode(ret->der, sizeof(ret->der), msg->machine_cert,
			  strnlen(msg->machine_cert, sizeof(msg->machine_cert)));
	if (n <= 0)
		return;
	ret->len = (size_t)n;
	ret->result = mcert_parse(ret->der, ret->len, &ret->info);
	if (ret->result != MCERT_OK)
		return;
	info = ret->info;
	if (memcmp(info.machine_key, machine_key, NETMAP_KEY_LEN) != 0) {
		ret->result = MCERT_WRONG_MACHINE;
		return;
	}
	n = base64_decode(sig, sizeof(sig), msg->machine_cert_proof,
			  strnlen(msg->machine_cert_proof, sizeof(msg->machine_cert_proof)));
	if (n != MCERT_SIG_LEN || !mcert_proof_check(info.pub, hash, msg->node_key, sig))
		ret->result = MCERT_WRONG_KEY;
}

const char *ca_register_check(struct store *s, uint64_t tailnet_id, const struct ca_evidence *ev,
			      int64_t now, int64_t *ret_not_after, char *buf, size_t cap)
{
	struct control_ca *cas = NULL;
	struct control_mcert m;
	struct mcert_info info;
	enum mcert_result res = ev ? ev->result : MCERT_MALFORMED, first = MCERT_WRONG_CA;
	size_t n = 0;
	bool any = false, retired = false;

	*ret_not_after = 0;
	if (!ev || !ev->present)
		return CA_ERR_REQUIRED;
	if (res == MCERT_OK) {
		if (store_ca_list(s, &cas, &n) < 0) {
			snprintf(buf, cap, "machine certificate refused: cannot read the CAs");
			return buf;
		}
		/*
		 * Every CA of the tailnet not retired is trusted (rotation: the old one until its
		 * machines have certificates of the new). The newest one's verdict is the one told.
		 */
		res = MCERT_WRONG_CA;
		for (size_t i = n; i-- > 0 && res != MCERT_OK;) {
			const struct control_ca *ca = &cas[i];
			enum mcert_result r;

			if (ca->tailnet_id != tailnet_id)
				continue;
			r = mcert_verify(ca->cert, strnlen(ca->cert, sizeof(ca->cert)), ev->der,
					 ev->len, now, &info);
			if (ca->retired_at) {
				retired = retired || r == MCERT_OK;
				continue;
			}
			if (!any)
				first = r;
			any = true;
			if (r == MCERT_OK)
				res = MCERT_OK;
		}
		free(cas);
		if (!any) {
			snprintf(buf, cap, "machine certificate refused: the tailnet has no CA");
			return buf;
		}
		if (res != MCERT_OK && retired) {
			snprintf(buf, cap, "machine certificate refused: its CA was retired (the "
					   "admin renews it: trellis-control ca renew SERIAL)");
			return buf;
		}
		if (res != MCERT_OK)
			res = first;
	}
	if (res == MCERT_OK && store_mcert_get(s, info.serial, &m) == 0 && m.revoked &&
	    m.tailnet_id == tailnet_id)
		res = MCERT_REVOKED;
	if (res != MCERT_OK) {
		snprintf(buf, cap, "machine certificate refused: %s", mcert_result_str(res));
		return buf;
	}
	*ret_not_after = info.not_after;
	return NULL;
}

int ca_cert_newer(struct store *s, uint64_t tailnet_id, const struct ca_evidence *ev, int64_t now,
		  char *ret_b64, size_t cap)
{
	/* Only to the holder of both keys: the session's machine key, the proof's key. */
	if (!ev || !ev->present || ev->result != MCERT_OK)
		return -ENOENT;
	return ca_cert_newer_of(s, tailnet_id, ev->info.machine_key, ev->info.pub,
				ev->info.not_after, now, ret_b64, cap);
}

int ca_cert_newer_of(struct store *s, uint64_t tailnet_id,
		     const uint8_t machine_key[NETMAP_KEY_LEN], const uint8_t pub[32],
		     int64_t not_after, int64_t now, char *ret_b64, size_t cap)
{
	struct control_ca *cas = NULL;
	struct control_mcert m;
	struct mcert_info info;
	uint8_t *der = NULL;
	size_t n_cas = 0;
	int r, len;

	r = store_mcert_newer(s, tailnet_id, machine_key, pub, not_after, now, &m);
	if (r < 0)
		return r;
	der = malloc(MCERT_DER_MAX);
	r = der ? store_mcert_der(s, m.serial, der, MCERT_DER_MAX) : -ENOMEM;
	if (r < 0)
		goto out;
	len = r;
	r = store_ca_list(s, &cas, &n_cas);
	if (r < 0)
		goto out;
	/* What the next registration will check: its CA's signature, its time, its keys. */
	r = -ENOENT;
	for (size_t i = 0; i < n_cas; i++)
		if (cas[i].id == m.ca_id && cas[i].tailnet_id == tailnet_id && !cas[i].retired_at &&
		    mcert_verify(cas[i].cert, strnlen(cas[i].cert, sizeof(cas[i].cert)), der,
				 (size_t)len, now, &info) == MCERT_OK &&
		    !memcmp(info.machine_key, machine_key, NETMAP_KEY_LEN) &&
		    !memcmp(info.pub, pub, sizeof(info.pub)))
			r = 0;
	if (r == 0 && base64_encode(ret_b64, cap, der, (size_t)len) < 0)
		r = -EMSGSIZE;
out:
	free(cas);
	free(der);
	return r;
}

/* Certificates of one machine and key side by side, the one ending last first. */
static int renew_cmp(const void *a, const void *b)
{
	const struct control_mcert *x = *(const struct control_mcert *const *)a;
	const struct control_mcert *y = *(const struct control_mcert *const *)b;
	int r;

	if (x->tailnet_id != y->tailnet_id)
		return x->tailnet_id < y->tailnet_id ? -1 : 1;
	r = memcmp(x->machine_key, y->machine_key, NETMAP_KEY_LEN);
	if (!r)
		r = memcmp(x->pub, y->pub, sizeof(x->pub));
	if (!r && x->not_after != y->not_after)
		r = x->not_after > y->not_after ? -1 : 1;
	/* The same end: the later one written (store_mcert_due's order too). */
	if (!r && x->id != y->id)
		r = x->id > y->id ? -1 : 1;
	return r;
}

static bool ca_trusted(const struct control_ca *cas, size_t n_cas, const struct control_mcert *m)
{
	for (size_t i = 0; i < n_cas; i++)
		if (cas[i].id == m->ca_id && cas[i].tailnet_id == m->tailnet_id)
			return !cas[i].retired_at;
	return false;
}

int ca_renew_due(const struct control_mcert *certs, size_t n, const struct control_ca *cas,
		 size_t n_cas, int64_t now, int64_t window_sec, size_t *ret)
{
	const struct control_mcert **v = n ? malloc(n * sizeof(*v)) : NULL;
	size_t k = 0, due = 0;

	if (n && !v)
		return -ENOMEM;
	/* A retired CA's never counts; a revoked one does, as the newest: it stops renewal. */
	for (size_t i = 0; i < n; i++)
		if (ca_trusted(cas, n_cas, &certs[i]))
			v[k++] = &certs[i];
	if (k)
		qsort(v, k, sizeof(*v), renew_cmp);
	for (size_t i = 0; i < k; i++) {
		const struct control_mcert *m = v[i];

		/* Only the newest of each machine and key: an older one is renewed already. */
		if (i && !memcmp(v[i - 1]->machine_key, m->machine_key, NETMAP_KEY_LEN) &&
		    !memcmp(v[i - 1]->pub, m->pub, sizeof(m->pub)) &&
		    v[i - 1]->tailnet_id == m->tailnet_id)
			continue;
		/* Revoked (the admin's word on this machine), or ended, or not yet begun. */
		if (m->revoked || !m->has_pub || m->not_before > now || m->not_after <= now ||
		    m->not_after - now >= window_sec)
			continue;
		/* A renewal of the same length would be due at once: renewed in a loop. */
		if (m->not_after - m->not_before - MCERT_BACKDATE_SEC <= window_sec)
			continue;
		ret[due++] = (size_t)(m - certs);
	}
	free(v);
	return (int)due;
}
