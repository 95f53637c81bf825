/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_APIKEY_H
#define TRELLIS_CONTROL_APIKEY_H

/*
 * Admin API keys: "trellis-api-<12 hex id>-<32 hex secret>", sent as
 * "Authorization: Bearer KEY" to the admin API on the server's port
 * (docs/admin-api.md). Shaped like auth keys (authkey.h): the id finds the
 * record, only a keyed BLAKE2s hash of the secret is stored and compared in
 * constant time, the key is shown once.
 *
 * The records live in one store setting (APIKEY_SETTING) as compact JSON, so
 * they need no table of their own: an admin has a handful of keys, and
 * APIKEY_MAX of them fit the setting. Every change is a read-modify-write of
 * that setting by one writer at a time: the server's loop thread, or the
 * offline CLI, which holds the state directory's lock.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define APIKEY_SETTING "admin.apikeys"
#define APIKEY_TEXT_PREFIX "trellis-api-"
#define APIKEY_ID_HEX 12
#define APIKEY_SECRET_HEX 32
#define APIKEY_LEN (sizeof(APIKEY_TEXT_PREFIX) - 1 + APIKEY_ID_HEX + 1 + APIKEY_SECRET_HEX)
#define APIKEY_STR_MAX (APIKEY_LEN + 1)
#define APIKEY_MAX 16
#define APIKEY_NAME_MAX 32

struct apikey {
	char id[APIKEY_ID_HEX + 1];
	char name[APIKEY_NAME_MAX]; /* the admin's note: who holds it */
	uint8_t hash[32];
	int64_t created, expires; /* Unix seconds; expires 0 = never */
	bool revoked;
};

struct apikey_set {
	unsigned n;
	struct apikey keys[APIKEY_MAX];
};

/* A fresh key: k->id and k->hash filled, its text in ret_key. 0 or -EIO. */
int apikey_generate(struct apikey *k, char ret_key[APIKEY_STR_MAX]);
/* Splits a key into its id and the hash of its secret. 0 or -EINVAL. */
int apikey_parse(const char *key, char ret_id[APIKEY_ID_HEX + 1], uint8_t ret_hash[32]);
/* The id from what an admin typed (the id, "trellis-api-<id>" or the key). 0 or -EINVAL. */
int apikey_id_from_text(const char *text, char ret_id[APIKEY_ID_HEX + 1]);
/*
 * Does key authenticate at now? Always one constant-time compare. Returns the
 * matching record or NULL (unknown, wrong secret, revoked or expired).
 */
const struct apikey *apikey_check(const struct apikey_set *set, const char *key, int64_t now);

/* The setting's text <-> the set. decode: 0 or -EINVAL (an empty text is no keys). */
int apikey_set_decode(const char *text, size_t len, struct apikey_set *ret);
/* malloc'd compact JSON, or NULL. */
char *apikey_set_encode(const struct apikey_set *set, size_t *ret_len);

#endif
