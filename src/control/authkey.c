// SPDX-License-Identifier: MIT
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "control/authkey.h"
#include "crypto/crypto.h"

/* Domain separation: these hashes are only ever auth-key secrets. */
static const char hash_key[] = "trellis auth key v1";

static void secret_hash(uint8_t out[32], const char *secret_hex)
{
	blake2s(out, 32, secret_hex, AUTHKEY_SECRET_HEX, hash_key, sizeof(hash_key) - 1);
}

static void hex_encode(char *out, const uint8_t *in, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static bool is_lower_hex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

int authkey_generate(struct control_authkey *k, char ret_key[AUTHKEY_STR_MAX])
{
	uint8_t raw[AUTHKEY_ID_HEX / 2 + AUTHKEY_SECRET_HEX / 2];
	char id[AUTHKEY_ID_HEX + 1], secret[AUTHKEY_SECRET_HEX + 1];
	int r;

	r = crypto_random(raw, sizeof(raw));
	if (r < 0)
		goto out;
	hex_encode(id, raw, AUTHKEY_ID_HEX / 2);
	hex_encode(secret, raw + AUTHKEY_ID_HEX / 2, AUTHKEY_SECRET_HEX / 2);
	snprintf(k->prefix, sizeof(k->prefix), "%s", id);
	secret_hash(k->hash, secret);
	snprintf(ret_key, AUTHKEY_STR_MAX, "%s%s-%s", AUTHKEY_TEXT_PREFIX, id, secret);
out:
	crypto_wipe(raw, sizeof(raw));
	crypto_wipe(secret, sizeof(secret));
	return r;
}

int authkey_parse(const char *key, char ret_id[AUTHKEY_ID_HEX + 1], uint8_t ret_hash[32])
{
	const size_t pl = sizeof(AUTHKEY_TEXT_PREFIX) - 1;
	size_t len;

	while (isspace((unsigned char)*key))
		key++;
	len = strlen(key);
	while (len && isspace((unsigned char)key[len - 1]))
		len--;
	if (len != AUTHKEY_LEN || strncmp(key, AUTHKEY_TEXT_PREFIX, pl) != 0 ||
	    key[pl + AUTHKEY_ID_HEX] != '-' || !is_lower_hex(key + pl, AUTHKEY_ID_HEX) ||
	    !is_lower_hex(key + pl + AUTHKEY_ID_HEX + 1, AUTHKEY_SECRET_HEX))
		return AUTHKEY_ERR_UNKNOWN;
	memcpy(ret_id, key + pl, AUTHKEY_ID_HEX);
	ret_id[AUTHKEY_ID_HEX] = '\0';
	secret_hash(ret_hash, key + pl + AUTHKEY_ID_HEX + 1);
	return 0;
}

int authkey_check(const struct control_authkey *k, const uint8_t hash[32], int64_t now)
{
	static const uint8_t dummy[32];
	bool match;

	/* Always one full-length constant-time compare, whether or not the id exists. */
	match = crypto_equal(k ? k->hash : dummy, hash, 32);
	if (!k || !match)
		return AUTHKEY_ERR_UNKNOWN;
	if (k->revoked)
		return AUTHKEY_ERR_REVOKED;
	if (k->expires && k->expires <= now)
		return AUTHKEY_ERR_EXPIRED;
	if (!k->reusable && k->uses > 0)
		return AUTHKEY_ERR_USED;
	return 0;
}

const char *authkey_strerror(int err)
{
	switch (err) {
	case 0:
		return "ok";
	case AUTHKEY_ERR_UNKNOWN:
		return "unknown auth key";
	case AUTHKEY_ERR_REVOKED:
		return "auth key revoked";
	case AUTHKEY_ERR_EXPIRED:
		return "auth key expired";
	case AUTHKEY_ERR_USED:
		return "auth key already used";
	default:
		return "auth key refused";
	}
}

int authkey_id_from_text(const char *text, char ret_id[AUTHKEY_ID_HEX + 1])
{
	const size_t pl = sizeof(AUTHKEY_TEXT_PREFIX) - 1;

	if (strncmp(text, AUTHKEY_TEXT_PREFIX, pl) == 0)
		text += pl;
	if (strlen(text) < AUTHKEY_ID_HEX || !is_lower_hex(text, AUTHKEY_ID_HEX) ||
	    (text[AUTHKEY_ID_HEX] != '\0' && text[AUTHKEY_ID_HEX] != '-'))
		return -EINVAL;
	memcpy(ret_id, text, AUTHKEY_ID_HEX);
	ret_id[AUTHKEY_ID_HEX] = '\0';
	return 0;
}
