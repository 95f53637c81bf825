/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_AUTHKEY_H
#define TRELLIS_CONTROL_AUTHKEY_H

/*
 * Auth keys: "trellis-auth-<12 hex id>-<32 hex secret>". The id (stored in
 * control_authkey.prefix, shown in listings, used by `authkey revoke`) finds the
 * record; only a BLAKE2s hash of the secret is stored, and it is compared in
 * constant time. A key is printed once, at creation.
 */

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "control/model.h"

#define AUTHKEY_TEXT_PREFIX "trellis-auth-"
#define AUTHKEY_ID_HEX 12
#define AUTHKEY_SECRET_HEX 32
/* 13 + 12 + 1 + 32 */
#define AUTHKEY_LEN (sizeof(AUTHKEY_TEXT_PREFIX) - 1 + AUTHKEY_ID_HEX + 1 + AUTHKEY_SECRET_HEX)
#define AUTHKEY_STR_MAX (AUTHKEY_LEN + 1)

/* Distinct refusals (negative errno values), for clear messages to the node. */
#define AUTHKEY_ERR_UNKNOWN (-ENOENT)     /* malformed, unknown id or wrong secret */
#define AUTHKEY_ERR_REVOKED (-EKEYREVOKED)
#define AUTHKEY_ERR_EXPIRED (-EKEYEXPIRED)
#define AUTHKEY_ERR_USED (-EKEYREJECTED) /* a one-off key already used */

/*
 * Fills k->prefix and k->hash with a fresh key and writes its text form into
 * ret_key (AUTHKEY_STR_MAX bytes). Other fields are the caller's. 0 or -EIO.
 */
int authkey_generate(struct control_authkey *k, char ret_key[AUTHKEY_STR_MAX]);

/*
 * Splits a key into its id (the store lookup) and the hash of its secret.
 * Accepts surrounding whitespace. 0 or AUTHKEY_ERR_UNKNOWN when malformed.
 */
int authkey_parse(const char *key, char ret_id[AUTHKEY_ID_HEX + 1], uint8_t ret_hash[32]);

/*
 * May a node register with this key now? k may be NULL (id not found): the
 * hash is then compared against a dummy so that a miss costs what a hit does.
 * Order: secret, revoked, expired, used. 0 or an AUTHKEY_ERR_* value. Does not
 * count the use: the caller increments k->uses and stores it.
 */
int authkey_check(const struct control_authkey *k, const uint8_t hash[32], int64_t now);

/* "unknown auth key", "auth key revoked", ... */
const char *authkey_strerror(int err);

/*
 * Normalizes what an admin typed to name a key (the id, "trellis-auth-<id>",
 * or the whole key) into the id. 0 or -EINVAL.
 */
int authkey_id_from_text(const char *text, char ret_id[AUTHKEY_ID_HEX + 1]);

#endif
