/* SPDX-License-Identifier: MIT */
#include "control/users.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "auth/password.h"
#include "crypto/crypto.h"

static int refuse(struct admin_op_ctx *c, int err, const char *what, const char *email)
{
	snprintf(c->err, sizeof(c->err), "%s \"%.100s\"", what, email);
	return err;
}

int users_email_normalize(const char *in, char ret[CONTROL_EMAIL_MAX])
{
	size_t n = strnlen(in, CONTROL_EMAIL_MAX), at = 0, ats = 0;
	const char *dot;

	if (n == 0 || n >= CONTROL_EMAIL_MAX)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)in[i];

		if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '<' || ch == '>' || ch == '\\' ||
		    ch == '/' || ch == '?' || ch == '#' || ch == '%' || ch == '&')
			return -EINVAL;
		if (ch == '@') {
			at = i;
			ats++;
		}
		ret[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
	}
	ret[n] = '\0';
	dot = strrchr(ret + at, '.');
	if (ats != 1 || at == 0 || !dot || dot == ret + at + 1 || !dot[1])
		return -EINVAL;
	return 0;
}

const char *users_email_domain(const char *email)
{
	const char *at = strchr(email, '@');

	return at ? at + 1 : "";
}

static int account_get(struct admin_op_ctx *c, const char *email, struct control_account *ret)
{
	char norm[CONTROL_EMAIL_MAX];

	if (users_email_normalize(email, norm) < 0)
		return refuse(c, -EINVAL, "not an email address:", email);
	if (store_account_get(c->store, norm, ret) < 0)
		return refuse(c, -ENOENT, "no local account", norm);
	return 0;
}

static int hash_check(struct admin_op_ctx *c, const char *hash)
{
	struct password_params p;

	if (strnlen(hash, CONTROL_PASSWORD_HASH_MAX) >= CONTROL_PASSWORD_HASH_MAX ||
	    password_params_parse(hash, &p) < 0) {
		snprintf(c->err, sizeof(c->err), "not an Argon2id password hash");
		return -EINVAL;
	}
	return 0;
}

/* The second factor of a new account: a secret, recovery codes (stored as hashes). */
static int enrol(struct control_account *a, struct users_enrolment *e)
{
	int r = crypto_random(e->secret, sizeof(e->secret));

	if (r < 0)
		return r;
	r = totp_uri(USERS_TOTP_ISSUER, a->email, e->secret, sizeof(e->secret), e->uri,
		     sizeof(e->uri));
	if (r < 0)
		return r;
	a->totp = true;
	memcpy(a->totp_secret, e->secret, sizeof(a->totp_secret));
	a->totp_last_step = 0;
	a->n_recovery = CONTROL_RECOVERY_MAX;
	for (unsigned i = 0; i < CONTROL_RECOVERY_MAX; i++) {
		r = totp_recovery_generate(e->recovery[i]);
		if (r == 0)
			r = totp_recovery_hash(e->recovery[i], a->recovery[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static int account_add(struct admin_op_ctx *c, const char *email, const char *password_hash,
		       bool admin, struct control_account *ret, struct users_enrolment *ret_totp)
{
	struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT};
	struct control_account *a = &op.account;
	int r;

	if (users_email_normalize(email, a->email) < 0)
		return refuse(c, -EINVAL, "not an email address:", email);
	r = hash_check(c, password_hash);
	if (r < 0)
		return r;
	if (store_account_get(c->store, a->email, &(struct control_account){0}) == 0)
		return refuse(c, -EEXIST, "a local account exists for", a->email);
	snprintf(a->password, sizeof(a->password), "%s", password_hash);
	a->admin = admin;
	a->created = c->now;
	if (ret_totp && enrol(a, ret_totp) < 0) {
		crypto_wipe(&op, sizeof(op));
		crypto_wipe(ret_totp, sizeof(*ret_totp));
		return refuse(c, -EIO, "could not make a second factor for", email);
	}
	r = admin_op_commit(c, "account.add", NULL, &op, &a->id);
	if (r == -EEXIST)
		return refuse(c, r, "a local account exists for", a->email);
	if (r < 0)
		return refuse(c, r, "could not store the account of", a->email);
	if (ret)
		*ret = *a;
	crypto_wipe(&op, sizeof(op));
	return 0;
}

int users_account_add(struct admin_op_ctx *c, const char *email, const char *password_hash,
		      bool admin, struct control_account *ret)
{
	return account_add(c, email, password_hash, admin, ret, NULL);
}

int users_account_add_totp(struct admin_op_ctx *c, const char *email, const char *password_hash,
			   bool admin, struct users_enrolment *ret)
{
	return account_add(c, email, password_hash, admin, NULL, ret);
}

static int put(struct admin_op_ctx *c, const char *action, struct store_op *op)
{
	int r = admin_op_commit(c, action, NULL, op, NULL);

	if (r < 0)
		r = refuse(c, r, "could not store the account of", op->account.email);
	crypto_wipe(op, sizeof(*op));
	return r;
}

int users_account_passwd(struct admin_op_ctx *c, const char *email, const char *password_hash)
{
	struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT};
	int r = account_get(c, email, &op.account);

	if (r == 0)
		r = hash_check(c, password_hash);
	if (r < 0)
		return r;
	snprintf(op.account.password, sizeof(op.account.password), "%s", password_hash);
	return put(c, "account.passwd", &op);
}

int users_account_totp_confirm(struct admin_op_ctx *c, const char *email, const char *code)
{
	struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT};
	struct control_account *a = &op.account;
	uint64_t step;
	int r = account_get(c, email, a);

	if (r < 0)
		return r;
	if (!a->totp)
		r = refuse(c, -ENOENT, "no second factor to confirm for", a->email);
	else if (!control_account_totp_pending(a))
		r = refuse(c, -EALREADY, "the second factor is confirmed already for", a->email);
	else if (c->now <= 0 ||
		 totp_verify(a->totp_secret, sizeof(a->totp_secret), code, (uint64_t)c->now, 0,
			     &step) < 0)
		r = refuse(c, -EACCES, "wrong code for the second factor of", a->email);
	if (r < 0) {
		crypto_wipe(&op, sizeof(op));
		return r;
	}
	/* The step is the replay floor too: the same code does not sign in afterwards. */
	a->totp_last_step = step;
	return put(c, "account.confirm_2fa", &op);
}

int users_account_reset_2fa(struct admin_op_ctx *c, const char *email)
{
	struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT};
	int r = account_get(c, email, &op.account);

	if (r < 0)
		return r;
	op.account.totp = false;
	memset(op.account.totp_secret, 0, sizeof(op.account.totp_secret));
	op.account.n_recovery = 0;
	return put(c, "account.reset_2fa", &op);
}

int users_account_delete(struct admin_op_ctx *c, const char *email)
{
	struct control_account a;
	struct store_op op = {.kind = STORE_OP_ACCOUNT_DELETE};
	char target[sizeof("account:") + CONTROL_EMAIL_MAX];
	int r = account_get(c, email, &a);

	if (r < 0)
		return r;
	op.id = a.id;
	/* Named by address: the record is gone once the entry is read. */
	snprintf(target, sizeof(target), "account:%s", a.email);
	crypto_wipe(&a, sizeof(a));
	r = admin_op_commit(c, "account.delete", target, &op, NULL);
	if (r < 0)
		return refuse(c, r, "could not delete the account of", email);
	return 0;
}

int users_account_list(struct admin_op_ctx *c, struct control_account **ret, size_t *ret_n)
{
	int r = store_account_list(c->store, ret, ret_n);

	if (r < 0)
		snprintf(c->err, sizeof(c->err), "could not read the accounts: %s", strerror(-r));
	return r;
}
