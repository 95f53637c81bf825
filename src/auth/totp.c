/* SPDX-License-Identifier: MIT */
#include "auth/totp.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "crypto/crypto.h"

static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

uint32_t totp_hotp(const uint8_t *key, size_t key_len, uint64_t counter, unsigned digits)
{
	uint8_t msg[8], mac[EVP_MAX_MD_SIZE];
	unsigned mac_len = 0, off;
	uint32_t bin, mod = 1;

	for (int i = 7; i >= 0; i--, counter >>= 8)
		msg[i] = (uint8_t)counter;
	if (!HMAC(EVP_sha1(), key, (int)key_len, msg, sizeof(msg), mac, &mac_len) || mac_len < 20)
		return UINT32_MAX; /* never a code: 10 digits */
	/* Dynamic truncation, RFC 4226 section 5.3. */
	off = mac[mac_len - 1] & 0x0f;
	bin = (uint32_t)(mac[off] & 0x7f) << 24 | (uint32_t)mac[off + 1] << 16 |
	      (uint32_t)mac[off + 2] << 8 | mac[off + 3];
	for (unsigned i = 0; i < digits; i++)
		mod *= 10;
	return bin % mod;
}

void totp_code(const uint8_t *key, size_t key_len, uint64_t t, unsigned digits, char *ret)
{
	snprintf(ret, digits + 1, "%0*u", (int)digits,
		 totp_hotp(key, key_len, t / TOTP_STEP_S, digits));
}

int totp_verify(const uint8_t *key, size_t key_len, const char *code, uint64_t now,
		uint64_t last_step, uint64_t *ret_step)
{
	uint64_t step = now / TOTP_STEP_S;
	uint32_t want = 0;
	bool replay = false;

	for (unsigned i = 0; i < TOTP_DIGITS; i++) {
		if (code[i] < '0' || code[i] > '9')
			return -EACCES;
		want = want * 10 + (uint32_t)(code[i] - '0');
	}
	if (code[TOTP_DIGITS])
		return -EACCES;
	/* Oldest first: the first step that matches and is unused wins. */
	for (uint64_t s = step >= TOTP_WINDOW ? step - TOTP_WINDOW : 0; s <= step + TOTP_WINDOW;
	     s++) {
		if (totp_hotp(key, key_len, s, TOTP_DIGITS) != want)
			continue;
		if (s <= last_step) {
			replay = true;
			continue;
		}
		*ret_step = s;
		return 0;
	}
	return replay ? -EALREADY : -EACCES;
}

void totp_base32_encode(const uint8_t *data, size_t len, char *ret)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		acc = acc << 8 | data[i];
		bits += 8;
		while (bits >= 5) {
			ret[o++] = b32[(acc >> (bits - 5)) & 31];
			bits -= 5;
		}
	}
	if (bits)
		ret[o++] = b32[(acc << (5 - bits)) & 31];
	ret[o] = '\0';
}

int totp_base32_decode(const char *s, uint8_t *ret, size_t cap)
{
	uint32_t acc = 0;
	unsigned bits = 0;
	size_t o = 0;

	for (; *s; s++) {
		char c = *s;
		const char *p;

		if (c == ' ' || c == '=' || c == '-')
			continue;
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		p = strchr(b32, c);
		if (!p || !c)
			return -EINVAL;
		acc = acc << 5 | (uint32_t)(p - b32);
		bits += 5;
		if (bits >= 8) {
			if (o == cap)
				return -EINVAL;
			ret[o++] = (uint8_t)(acc >> (bits - 8));
			bits -= 8;
		}
	}
	return (int)o;
}

/* RFC 3986 unreserved characters stay, everything else is %XX. */
static int pct(char *ret, size_t cap, size_t *off, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';

		if (*off + (plain ? 1 : 3) >= cap)
			return -ENOBUFS;
		if (plain) {
			ret[(*off)++] = (char)c;
		} else {
			ret[(*off)++] = '%';
			ret[(*off)++] = hex[c >> 4];
			ret[(*off)++] = hex[c & 15];
		}
	}
	ret[*off] = '\0';
	return 0;
}

static int put(char *ret, size_t cap, size_t *off, const char *s)
{
	size_t n = strlen(s);

	if (*off + n >= cap)
		return -ENOBUFS;
	memcpy(ret + *off, s, n + 1);
	*off += n;
	return 0;
}

int totp_uri(const char *issuer, const char *account, const uint8_t *key, size_t key_len, char *ret,
	     size_t cap)
{
	char secret[TOTP_SECRET_B32_MAX + 2];
	size_t off = 0;

	if (key_len * 8 / 5 + 2 > sizeof(secret) || !cap)
		return -ENOBUFS;
	totp_base32_encode(key, key_len, secret);
	if (put(ret, cap, &off, "otpauth://totp/") < 0 || pct(ret, cap, &off, issuer) < 0 ||
	    put(ret, cap, &off, ":") < 0 || pct(ret, cap, &off, account) < 0 ||
	    put(ret, cap, &off, "?secret=") < 0 || put(ret, cap, &off, secret) < 0 ||
	    put(ret, cap, &off, "&issuer=") < 0 || pct(ret, cap, &off, issuer) < 0)
		return -ENOBUFS;
	return 0;
}

int totp_recovery_generate(char ret[TOTP_RECOVERY_LEN])
{
	uint8_t r[10];

	if (crypto_random(r, sizeof(r)) < 0)
		return -EIO;
	for (int i = 0, o = 0; i < 10; i++) {
		if (i == 5)
			ret[o++] = '-';
		ret[o++] = (char)(b32[r[i] & 31] | 0x20); /* lower case: digits keep their value */
	}
	ret[11] = '\0';
	crypto_wipe(r, sizeof(r));
	return 0;
}

int totp_recovery_hash(const char *code, uint8_t ret[TOTP_RECOVERY_HASH_LEN])
{
	static const char ctx[] = "trellis recovery code v1";
	char norm[11];
	size_t n = 0;

	for (; *code; code++) {
		char c = *code;

		if (c == ' ' || c == '-')
			continue;
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (!strchr(b32, c) || !c || n == 10)
			return -EINVAL;
		norm[n++] = c;
	}
	if (n != 10)
		return -EINVAL;
	blake2s(ret, TOTP_RECOVERY_HASH_LEN, norm, n, ctx, sizeof(ctx) - 1);
	return 0;
}
