/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_USERS_H
#define TRELLIS_CONTROL_USERS_H

/*
 * Local accounts (`trellis-control users add|list|passwd|delete|reset-2fa`) as
 * admin operations (admin_op.h: an actor, checked input, durable writes through
 * admin_op_commit). Passwords arrive hashed: the CLI runs Argon2id itself
 * (auth/password.h), so the server's event loop never spends 100 ms on a hash
 * for an admin and the password never crosses the admin socket. A hash is
 * accepted only in the form and parameter range password_verify reads.
 *
 * An account has no tailnet until its first login (web.h: tenancy by the email's
 * domain); deleting it ends its sign-ins, not the nodes it owns.
 */

#include <stdbool.h>
#include <stddef.h>

#include "auth/totp.h"
#include "control/admin_op.h"
#include "control/model.h"

/* The issuer an authenticator app shows beside the account (otpauth URIs). */
#define USERS_TOTP_ISSUER "Trellis"

/* A second factor enrolled at `users add --totp`: shown once, to be handed to the person. */
struct users_enrolment {
	uint8_t secret[TOTP_SECRET_LEN];
	char uri[TOTP_URI_MAX]; /* otpauth://totp/...: what the QR code carries */
	char recovery[CONTROL_RECOVERY_MAX][TOTP_RECOVERY_LEN];
};

/* Lower-cases a plausible address (local@domain.tld, no spaces or controls). 0 or -EINVAL. */
int users_email_normalize(const char *in, char ret[CONTROL_EMAIL_MAX]);
/* The part after '@' of a normalized address. */
const char *users_email_domain(const char *email);

/* 0, -EINVAL (address or hash), -EEXIST. ret may be NULL. */
int users_account_add(struct admin_op_ctx *c, const char *email, const char *password_hash,
		      bool admin, struct control_account *ret);
/*
 * The same with TOTP enrolled at once (no enrolment at the first login): a fresh secret
 * and recovery codes, stored (the codes hashed) and given in *ret (wipe it after use).
 */
int users_account_add_totp(struct admin_op_ctx *c, const char *email, const char *password_hash,
			   bool admin, struct users_enrolment *ret);
/*
 * Confirms the pending second factor of `users add --totp` (control_account_totp_pending)
 * with a code from the person's app at c->now: 0, -EACCES (wrong code), -ENOENT (no account,
 * or no second factor), -EALREADY (confirmed already), -EINVAL.
 */
int users_account_totp_confirm(struct admin_op_ctx *c, const char *email, const char *code);
/* 0, -EINVAL, -ENOENT. */
int users_account_passwd(struct admin_op_ctx *c, const char *email, const char *password_hash);
int users_account_delete(struct admin_op_ctx *c, const char *email);
/* Forgets the TOTP secret and recovery codes: the next login enrols again. */
int users_account_reset_2fa(struct admin_op_ctx *c, const char *email);
/* Every account; *ret malloc'd (free()). */
int users_account_list(struct admin_op_ctx *c, struct control_account **ret, size_t *ret_n);

#endif
