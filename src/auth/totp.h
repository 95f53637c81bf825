/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_AUTH_TOTP_H
#define TRELLIS_AUTH_TOTP_H

/*
 * Time-based one-time passwords (RFC 6238 over RFC 4226's HOTP, HMAC-SHA-1,
 * 30 s steps, 6 digits: what authenticator apps do by default), their
 * base32 secrets (RFC 4648) and otpauth:// URIs, and recovery codes.
 *
 * Replay: a code is accepted for the step before, the current one and the
 * one after (clock skew), and only for a step later than the last one the
 * account used: the caller stores *ret_step with the account, so a code
 * seen once is refused for the rest of its window.
 *
 * No I/O, no clock: the time comes in.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOTP_SECRET_LEN 20 /* bytes: RFC 4226's recommended 160 bits */
#define TOTP_SECRET_B32_MAX 64
#define TOTP_STEP_S 30
#define TOTP_DIGITS 6
#define TOTP_WINDOW 1 /* steps either side */
#define TOTP_URI_MAX 512

/* HOTP value (RFC 4226 section 5.3) of counter, reduced to digits (6..8). */
uint32_t totp_hotp(const uint8_t *key, size_t key_len, uint64_t counter, unsigned digits);
/* The code for time t (Unix seconds) as digits decimal characters and a NUL. */
void totp_code(const uint8_t *key, size_t key_len, uint64_t t, unsigned digits, char *ret);
/*
 * Checks code (TOTP_DIGITS digits) at time now against the steps around it.
 * 0 with *ret_step the step it matched; -EACCES (wrong or malformed),
 * -EALREADY (right, but for a step at or before last_step: a replay).
 */
int totp_verify(const uint8_t *key, size_t key_len, const char *code, uint64_t now,
		uint64_t last_step, uint64_t *ret_step);

/* RFC 4648 base32 without padding; ret needs len * 8 / 5 + 2 bytes. */
void totp_base32_encode(const uint8_t *data, size_t len, char *ret);
/* Decodes (case-insensitive, spaces and '=' ignored). Bytes written, or -EINVAL. */
int totp_base32_decode(const char *s, uint8_t *ret, size_t cap);
/*
 * otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...: what the QR code carries.
 * Issuer and account are percent-encoded. 0 or -ENOBUFS.
 */
int totp_uri(const char *issuer, const char *account, const uint8_t *key, size_t key_len, char *ret,
	     size_t cap);

/*
 * Recovery codes: TOTP_RECOVERY_CODES of them, each 10 base32 characters shown as
 * "xxxxx-xxxxx" (50 random bits). Stored as BLAKE2s hashes: they are random, so
 * a fast hash suffices, and a leaked table does not give them back.
 */
#define TOTP_RECOVERY_CODES 8
#define TOTP_RECOVERY_LEN 12 /* "xxxxx-xxxxx" and a NUL */
#define TOTP_RECOVERY_HASH_LEN 32
int totp_recovery_generate(char ret[TOTP_RECOVERY_LEN]);
/* Hash of a code as typed: case, spaces and the dash do not matter. -EINVAL if malformed. */
int totp_recovery_hash(const char *code, uint8_t ret[TOTP_RECOVERY_HASH_LEN]);

#endif
