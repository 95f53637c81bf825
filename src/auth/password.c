/* SPDX-License-Identifier: MIT */
#include "auth/password.h"

#include <argon2.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"

/* What we accept from a stored hash: a corrupt row must not make us allocate gigabytes. */
#define M_KIB_MIN 8
#define M_KIB_MAX (1u << 21) /* 2 GiB */
#define T_MAX 64
#define P_MAX 16

static bool params_ok(const struct password_params *p)
{
	return p->m_kib >= M_KIB_MIN && p->m_kib <= M_KIB_MAX && p->t >= 1 && p->t <= T_MAX &&
	       p->p >= 1 && p->p <= P_MAX && p->m_kib >= 8 * p->p;
}

int password_hash_salt(const char *pw, const struct password_params *params,
		       const uint8_t salt[PASSWORD_SALT_LEN], char ret[PASSWORD_HASH_MAX])
{
	size_t len = strnlen(pw, PASSWORD_MAX + 1);

	if (len > PASSWORD_MAX || !params_ok(params))
		return -EINVAL;
	if (argon2id_hash_encoded(params->t, params->m_kib, params->p, pw, len, salt,
				  PASSWORD_SALT_LEN, PASSWORD_TAG_LEN, ret,
				  PASSWORD_HASH_MAX) != ARGON2_OK)
		return -EIO;
	return 0;
}

int password_hash(const char *pw, const struct password_params *params, char ret[PASSWORD_HASH_MAX])
{
	uint8_t salt[PASSWORD_SALT_LEN];

	if (crypto_random(salt, sizeof(salt)) < 0)
		return -EIO;
	return password_hash_salt(pw, params, salt, ret);
}

int password_params_parse(const char *encoded, struct password_params *ret)
{
	struct password_params p;
	unsigned v, m, t, l;
	int n = 0;

	if (sscanf(encoded, "$argon2id$v=%u$m=%u,t=%u,p=%u$%n", &v, &m, &t, &l, &n) != 4 || !n ||
	    v != ARGON2_VERSION_13)
		return -EINVAL;
	p = (struct password_params){.m_kib = m, .t = t, .p = l};
	if (!params_ok(&p))
		return -EINVAL;
	*ret = p;
	return 0;
}

int password_verify(const char *encoded, const char *pw, const struct password_params *want,
		    bool *ret_stale)
{
	struct password_params have;
	size_t len = strnlen(pw, PASSWORD_MAX + 1);
	int r;

	if (strnlen(encoded, PASSWORD_HASH_MAX) >= PASSWORD_HASH_MAX ||
	    password_params_parse(encoded, &have) < 0)
		return -EINVAL;
	if (len > PASSWORD_MAX)
		return -EACCES;
	r = argon2id_verify(encoded, pw, len);
	if (r == ARGON2_VERIFY_MISMATCH)
		return -EACCES;
	if (r != ARGON2_OK)
		return -EINVAL;
	*ret_stale = have.m_kib != want->m_kib || have.t != want->t || have.p != want->p;
	return 0;
}
