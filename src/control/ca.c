/* SPDX-License-Identifier: MIT */
#include "control/ca.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base64.h"
#include "crypto/crypto.h"

/* ---- the CA's key file ---- */

static int key_path(const struct admin_op_ctx *c, uint64_t tailnet_id, char *buf, size_t len,
		    bool dir_only)
{
	int n = dir_only ? snprintf(buf, len, "%s/%s", c->state_dir, CA_KEY_DIR)
			 : snprintf(buf, len, "%s/%s/%" PRIu64 ".key", c->state_dir, CA_KEY_DIR,
				    tailnet_id);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Written whole or not at all (temporary file, fsync, rename), mode 0600. */
static int key_write(struct admin_op_ctx *c, uint64_t tailnet_id, const char *pem, size_t len)
{
	char dir[512], path[512], tmp[520];
	int fd = -1, r;

	r = key_path(c, 0, dir, sizeof(dir), true);
	if (r == 0)
		r = key_path(c, tailnet_id, path, sizeof(path), false);
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

static int key_read(struct admin_op_ctx *c, uint64_t tailnet_id, char *buf, size_t cap)
{
	char path[512];
	ssize_t n;
	int fd, r = key_path(c, tailnet_id, path, sizeof(path), false);

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

int ca_op_init(struct admin_op_ctx *c, const char *tailnet, int64_t validity_sec,
	       const char *cert_pem, size_t cert_len, const char *key_pem, size_t key_len,
	       struct control_ca *ret)
{
	struct store_op op = {.kind = STORE_OP_CA_PUT};
	struct control_tailnet t;
	char *key = NULL, cn[96], path[512];
	const char *why;
	int r;

	if (!c->state_dir)
		return admin_op_refuse(c, -EINVAL, "no state directory to keep the CA's key in");
	r = tailnet_get(c, tailnet, &t);
	if (r < 0)
		return r;
	if (store_ca_get(c->store, t.id, &op.ca) == 0)
		return admin_op_refuse(c, -EEXIST, "tailnet \"%s\" has a CA already", t.name);
	if (!cert_pem != !key_pem)
		return admin_op_refuse(c, -EINVAL, "an imported CA needs its certificate and its key");
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
		snprintf(cn, sizeof(cn), "Trellis machine CA %s", t.name);
		r = mcert_ca_make(cn, c->now,
				  validity_sec > 0 ? validity_sec : MCERT_CA_VALIDITY_SEC, key,
				  MCERT_PEM_MAX, op.ca.cert, sizeof(op.ca.cert));
		if (r < 0) {
			r = admin_op_refuse(c, r, "cannot make the CA: %s", strerror(-r));
			goto out;
		}
	}
	/* The key first: a CA in the store whose key is missing could sign nothing. */
	r = key_write(c, t.id, key, strlen(key));
	if (r < 0)
		goto out;
	op.ca.tailnet_id = t.id;
	op.ca.created = c->now;
	r = admin_op_commit(c, "ca.init", NULL, &op, NULL);
	if (r < 0) {
		if (key_path(c, t.id, path, sizeof(path), false) == 0)
			unlink(path);
		r = admin_op_refuse(c, r,
			   r == -EEXIST ? "tailnet \"%s\" has a CA already"
					: "could not store the CA of \"%s\"",
			   t.name);
		goto out;
	}
	if (ret)
		*ret = op.ca;
out:
	crypto_wipe(key, MCERT_PEM_MAX);
	free(key);
	return r;
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

int ca_op_sign(struct admin_op_ctx *c, const char *tailnet, const char *csr, size_t csr_len,
	       int64_t validity_sec, char *ret_pem, size_t cap, struct control_mcert *ret)
{
	struct store_op op = {.kind = STORE_OP_MCERT_PUT};
	struct control_mcert *m = &op.mcert;
	struct control_ca *ca = malloc(sizeof(*ca));
	struct mcert_info req, info;
	char *key = calloc(1, MCERT_PEM_MAX);
	enum mcert_result res;
	int r, n;

	if (!ca || !key) {
		r = admin_op_refuse(c, -ENOMEM, "out of memory");
		goto out;
	}
	if (!c->state_dir) {
		r = admin_op_refuse(c, -EINVAL, "no state directory: the CA's key is not here");
		goto out;
	}
	r = ca_op_get(c, tailnet, ca);
	if (r < 0)
		goto out;
	res = mcert_csr_parse(csr, csr_len, &req);
	if (res != MCERT_OK) {
		r = admin_op_refuse(c, -EINVAL, "CSR refused: %s", mcert_result_str(res));
		goto out;
	}
	if (validity_sec <= 0)
		validity_sec = MCERT_VALIDITY_DEFAULT_SEC;
	n = key_read(c, ca->tailnet_id, key, MCERT_PEM_MAX);
	if (n < 0) {
		r = n;
		goto out;
	}
	r = mcert_sign(key, (size_t)n, ca->cert, strlen(ca->cert), &req,
		       c->now - MCERT_BACKDATE_SEC, c->now + validity_sec, &info, ret_pem, cap);
	if (r < 0) {
		r = admin_op_refuse(c, r, "cannot sign: %s", strerror(-r));
		goto out;
	}
	m->tailnet_id = ca->tailnet_id;
	snprintf(m->serial, sizeof(m->serial), "%s", info.serial);
	memcpy(m->machine_key, info.machine_key, NETMAP_KEY_LEN);
	snprintf(m->subject, sizeof(m->subject), "%s", info.subject);
	m->not_before = info.not_before;
	m->not_after = info.not_after;
	m->created = c->now;
	r = admin_op_commit(c, "cert.sign", NULL, &op, &m->id);
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
	ret->result = mcert_parse(ret->der, ret->len, &info);
	if (ret->result != MCERT_OK)
		return;
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
	struct control_ca *ca = NULL;
	struct control_mcert m;
	struct mcert_info info;
	enum mcert_result res = ev ? ev->result : MCERT_MALFORMED;

	*ret_not_after = 0;
	if (!ev || !ev->present)
		return CA_ERR_REQUIRED;
	if (res == MCERT_OK) {
		ca = malloc(sizeof(*ca));
		if (!ca || store_ca_get(s, tailnet_id, ca) < 0) {
			free(ca);
			snprintf(buf, cap, "machine certificate refused: the tailnet has no CA");
			return buf;
		}
		res = mcert_verify(ca->cert, strnlen(ca->cert, sizeof(ca->cert)), ev->der, ev->len,
				   now, &info);
		free(ca);
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
