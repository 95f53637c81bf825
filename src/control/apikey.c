// SPDX-License-Identifier: MIT
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/apikey.h"
#include "crypto/crypto.h"

/* Domain separation from auth keys: a hash here is only ever an API key's secret. */
static const char hash_key[] = "trellis admin api key v1";

static void secret_hash(uint8_t out[32], const char *secret_hex)
{
	blake2s(out, 32, secret_hex, APIKEY_SECRET_HEX, hash_key, sizeof(hash_key) - 1);
}

static void hex_encode(char *out, const uint8_t *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hex_decode(uint8_t *out, const char *in, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned v;

		if (sscanf(in + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static bool is_lower_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int apikey_generate(struct apikey *k, char ret_key[APIKEY_STR_MAX])
{
	uint8_t raw[APIKEY_ID_HEX / 2 + APIKEY_SECRET_HEX / 2];
	char secret[APIKEY_SECRET_HEX + 1];
	int r;

	r = crypto_random(raw, sizeof(raw));
	if (r < 0)
		goto out;
	hex_encode(k->id, raw, APIKEY_ID_HEX / 2);
	hex_encode(secret, raw + APIKEY_ID_HEX / 2, APIKEY_SECRET_HEX / 2);
	secret_hash(k->hash, secret);
	snprintf(ret_key, APIKEY_STR_MAX, "%s%s-%s", APIKEY_TEXT_PREFIX, k->id, secret);
out:
	crypto_wipe(raw, sizeof(raw));
	crypto_wipe(secret, sizeof(secret));
	return r;
}

int apikey_parse(const char *key, char ret_id[APIKEY_ID_HEX + 1], uint8_t ret_hash[32])
{
	const size_t pl = sizeof(APIKEY_TEXT_PREFIX) - 1;

	if (strlen(key) != APIKEY_LEN || strncmp(key, APIKEY_TEXT_PREFIX, pl) != 0 ||
	    key[pl + APIKEY_ID_HEX] != '-' || !is_lower_hex(key + pl, APIKEY_ID_HEX) ||
	    !is_lower_hex(key + pl + APIKEY_ID_HEX + 1, APIKEY_SECRET_HEX))
		return -EINVAL;
	memcpy(ret_id, key + pl, APIKEY_ID_HEX);
	ret_id[APIKEY_ID_HEX] = '\0';
	secret_hash(ret_hash, key + pl + APIKEY_ID_HEX + 1);
	return 0;
}

int apikey_id_from_text(const char *text, char ret_id[APIKEY_ID_HEX + 1])
{
	const size_t pl = sizeof(APIKEY_TEXT_PREFIX) - 1;

	if (strncmp(text, APIKEY_TEXT_PREFIX, pl) == 0)
		text += pl;
	if (strlen(text) < APIKEY_ID_HEX || !is_lower_hex(text, APIKEY_ID_HEX) ||
	    (text[APIKEY_ID_HEX] != '\0' && text[APIKEY_ID_HEX] != '-'))
		return -EINVAL;
	memcpy(ret_id, text, APIKEY_ID_HEX);
	ret_id[APIKEY_ID_HEX] = '\0';
	return 0;
}

const struct apikey *apikey_check(const struct apikey_set *set, const char *key, int64_t now)
{
	static const uint8_t dummy[32];
	const struct apikey *k = NULL;
	char id[APIKEY_ID_HEX + 1];
	uint8_t hash[32];
	bool match;

	if (apikey_parse(key, id, hash) < 0)
		return NULL;
	for (unsigned i = 0; i < set->n && !k; i++)
		if (strcmp(set->keys[i].id, id) == 0)
			k = &set->keys[i];
	/* One full compare whether or not the id exists: a miss costs what a hit does. */
	match = crypto_equal(k ? k->hash : dummy, hash, 32);
	crypto_wipe(hash, sizeof(hash));
	if (!k || !match || k->revoked || (k->expires && k->expires <= now))
		return NULL;
	return k;
}

int apikey_set_decode(const char *text, size_t len, struct apikey_set *ret)
{
	json_t *root, *e;
	size_t i;
	int r = -EINVAL;

	memset(ret, 0, sizeof(*ret));
	if (len == 0)
		return 0;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_array(root) || json_array_size(root) > APIKEY_MAX)
		goto out;
	json_array_foreach(root, i, e) {
		struct apikey *k = &ret->keys[ret->n];
		const char *id, *name = "", *hash;
		json_int_t created, expires;
		int revoked;

		if (json_unpack(e, "{s:s, s?s, s:s, s:I, s:I, s:b}", "id", &id, "name", &name,
				"hash", &hash, "created", &created, "expires", &expires, "revoked",
				&revoked) < 0 ||
		    strlen(id) != APIKEY_ID_HEX || !is_lower_hex(id, APIKEY_ID_HEX) ||
		    strlen(hash) != 64 || strlen(name) >= sizeof(k->name) ||
		    hex_decode(k->hash, hash, 32) < 0)
			goto out;
		memcpy(k->id, id, sizeof(k->id));
		snprintf(k->name, sizeof(k->name), "%s", name);
		k->created = created;
		k->expires = expires;
		k->revoked = revoked;
		ret->n++;
	}
	r = 0;
out:
	json_decref(root);
	return r;
}

char *apikey_set_encode(const struct apikey_set *set, size_t *ret_len)
{
	json_t *arr = json_array();
	char *text;

	for (unsigned i = 0; arr && i < set->n; i++) {
		const struct apikey *k = &set->keys[i];
		char hash[65];

		hex_encode(hash, k->hash, 32);
		json_array_append_new(arr, json_pack("{s:s, s:s, s:s, s:I, s:I, s:b}", "id", k->id,
						     "name", k->name, "hash", hash, "created",
						     (json_int_t)k->created, "expires",
						     (json_int_t)k->expires, "revoked", k->revoked));
	}
	text = arr ? json_dumps(arr, JSON_COMPACT) : NULL;
	json_decref(arr);
	if (text)
		*ret_len = strlen(text);
	return text;
}
