/* SPDX-License-Identifier: MIT */
/*
 * Base64 with arithmetic instead of table lookups, so that the time taken does
 * not depend on the bytes (private keys pass through here).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "base/base64.h"

/*
 * For a byte c, (lo - 1 - c) & (c - hi - 1) is negative exactly when
 * lo <= c <= hi; shifting it right by 8 then gives an all-ones or all-zeros mask.
 */
#define IN_RANGE_MASK(c, lo, hi) ((((lo)-1 - (c)) & ((c) - (hi)-1)) >> 8)

/* The 6-bit value of a base64 character, or -1. */
static int decode_char(unsigned char ch)
{
	int c = ch;
	int ret = -1;

	ret += IN_RANGE_MASK(c, 'A', 'Z') & (c - 'A' + 1);
	ret += IN_RANGE_MASK(c, 'a', 'z') & (c - 'a' + 27);
	ret += IN_RANGE_MASK(c, '0', '9') & (c - '0' + 53);
	ret += IN_RANGE_MASK(c, '+', '+') & 63;
	ret += IN_RANGE_MASK(c, '/', '/') & 64;
	return ret;
}

static char encode_char(unsigned v)
{
	int x = (int)v;

	/* Start from 'A' + x and shift into the right run of the alphabet. */
	x += 'A';
	x += ((25 - (int)v) >> 8) & 6;   /* 26..63: to 'a' */
	x -= ((51 - (int)v) >> 8) & 75;  /* 52..63: to '0' */
	x -= ((61 - (int)v) >> 8) & 15;  /* 62..63: to '+' */
	x += ((62 - (int)v) >> 8) & 3;   /* 63: to '/' */
	return (char)x;
}

int base64_encode(char *out, size_t out_len, const uint8_t *in, size_t in_len)
{
	size_t need, i, o = 0;
	uint32_t v;

	if (in_len > (SIZE_MAX - 1) / 4 * 3 - 2)
		return -ENOBUFS;
	need = BASE64_ENCODED_LEN(in_len);
	if (out_len < need + 1 || need > INT32_MAX)
		return -ENOBUFS;

	for (i = 0; i + 3 <= in_len; i += 3) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = encode_char(v >> 18 & 63);
		out[o++] = encode_char(v >> 12 & 63);
		out[o++] = encode_char(v >> 6 & 63);
		out[o++] = encode_char(v & 63);
	}
	if (in_len - i == 1) {
		v = (uint32_t)in[i] << 16;
		out[o++] = encode_char(v >> 18 & 63);
		out[o++] = encode_char(v >> 12 & 63);
		out[o++] = '=';
		out[o++] = '=';
	} else if (in_len - i == 2) {
		v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = encode_char(v >> 18 & 63);
		out[o++] = encode_char(v >> 12 & 63);
		out[o++] = encode_char(v >> 6 & 63);
		out[o++] = '=';
	}
	out[o] = '\0';
	return (int)o;
}

int base64_decode(uint8_t *out, size_t out_cap, const char *in, size_t in_len)
{
	size_t pad = 0, len, i, o = 0;
	int a, b, c, d, bad = 0;
	int ret = -EINVAL;

	if (in_len % 4)
		return -EINVAL;
	if (in_len == 0)
		return 0;
	if (in_len / 4 * 3 > INT32_MAX)
		return -ENOBUFS;
	if (in[in_len - 1] == '=')
		pad = in[in_len - 2] == '=' ? 2 : 1;
	len = in_len / 4 * 3 - pad;
	if (len > out_cap)
		return -ENOBUFS;

	/* Errors are collected rather than returned early, to keep timing flat. */
	for (i = 0; i < in_len; i += 4) {
		bool last = i + 4 == in_len;

		a = decode_char((unsigned char)in[i]);
		b = decode_char((unsigned char)in[i + 1]);
		c = last && pad == 2 ? 0 : decode_char((unsigned char)in[i + 2]);
		d = last && pad >= 1 ? 0 : decode_char((unsigned char)in[i + 3]);
		bad |= a | b | c | d; /* negative if any was invalid */

		out[o++] = (uint8_t)((unsigned)a << 2 | (unsigned)b >> 4);
		if (last && pad == 2) {
			bad |= -(b & 0x0f); /* bits that fall off the end must be zero */
			break;
		}
		out[o++] = (uint8_t)((unsigned)b << 4 | (unsigned)c >> 2);
		if (last && pad == 1) {
			bad |= -(c & 0x03);
			break;
		}
		out[o++] = (uint8_t)((unsigned)c << 6 | (unsigned)d);
	}
	if (bad < 0)
		goto out;
	ret = (int)len;
out:
	if (ret < 0)
		explicit_bzero(out, o);
	return ret;
}

int key_from_base64(uint8_t ret_key[KEY_LEN], const char *s)
{
	uint8_t key[KEY_LEN + 1];
	int ret = -EINVAL;

	/* The length and the final '=' are public; they may be checked with branches. */
	if (strnlen(s, KEY_BASE64_LEN + 1) != KEY_BASE64_LEN || s[KEY_BASE64_LEN - 1] != '=' ||
	    s[KEY_BASE64_LEN - 2] == '=')
		goto out;
	if (base64_decode(key, sizeof(key), s, KEY_BASE64_LEN) != KEY_LEN)
		goto out;
	memcpy(ret_key, key, KEY_LEN);
	ret = 0;
out:
	explicit_bzero(key, sizeof(key));
	return ret;
}

void key_to_base64(char out[KEY_BASE64_LEN + 1], const uint8_t key[KEY_LEN])
{
	base64_encode(out, KEY_BASE64_LEN + 1, key, KEY_LEN);
}
