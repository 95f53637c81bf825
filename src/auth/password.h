/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_AUTH_PASSWORD_H
#define TRELLIS_AUTH_PASSWORD_H

/*
 * Password hashes for local accounts: Argon2id (RFC 9106) through libargon2,
 * in its PHC string form ("$argon2id$v=19$m=65536,t=3,p=1$SALT$HASH"), so the
 * parameters travel with the hash. When the server's parameters change, a
 * successful verification says so and the caller stores a fresh hash of the
 * password it just checked (upgrade on login).
 *
 * Hashing is deliberately slow (tens of milliseconds, 64 MiB): callers run it
 * on a worker, never on an event loop. No I/O besides the random salt.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PASSWORD_HASH_MAX 160 /* the PHC string with its NUL, for our parameter range */
#define PASSWORD_MAX 1024     /* longer passwords are refused, not truncated */
#define PASSWORD_SALT_LEN 16
#define PASSWORD_TAG_LEN 32

struct password_params {
	uint32_t m_kib; /* memory, KiB */
	uint32_t t;	/* passes */
	uint32_t p;	/* lanes */
};

/* RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes (we use 1: one worker). */
#define PASSWORD_PARAMS_DEFAULT ((struct password_params){.m_kib = 65536, .t = 3, .p = 1})

/* Hashes pw with a fresh salt into ret (PASSWORD_HASH_MAX bytes). 0, -EINVAL, -EIO. */
int password_hash(const char *pw, const struct password_params *params,
		  char ret[PASSWORD_HASH_MAX]);
/* Same with a given salt (tests and the fixed-cost dummy check). */
int password_hash_salt(const char *pw, const struct password_params *params,
		       const uint8_t salt[PASSWORD_SALT_LEN], char ret[PASSWORD_HASH_MAX]);
/*
 * Checks pw against encoded: 0 (match; *ret_stale set when encoded's parameters differ
 * from want, or it is not Argon2id), -EACCES (no match), -EINVAL (encoded is not a hash we
 * read).
 */
int password_verify(const char *encoded, const char *pw, const struct password_params *want,
		    bool *ret_stale);
/* The parameters recorded in encoded. 0 or -EINVAL. */
int password_params_parse(const char *encoded, struct password_params *ret);

#endif
