/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_BASE64_H
#define TRELLIS_BASE_BASE64_H

/*
 * Standard base64 (RFC 4648 section 4, with padding) and the 44-character key
 * form used by wg(8). Encoding and decoding do not branch on the data, so keys
 * can go through them. Errors are negative errno values.
 */

#include <stddef.h>
#include <stdint.h>

/* Characters for `n` bytes, without the terminating NUL. */
#define BASE64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)
/* Most bytes that `n` characters can decode to. */
#define BASE64_DECODED_MAX(n) ((n) / 4 * 3)

#define KEY_LEN 32
#define KEY_BASE64_LEN 44 /* without the NUL */

/*
 * Writes BASE64_ENCODED_LEN(in_len) characters and a NUL. Returns the number of
 * characters, or -ENOBUFS when out_len is smaller than that plus one.
 */
int base64_encode(char *out, size_t out_len, const uint8_t *in, size_t in_len);

/*
 * Strict decoding: in_len must be a multiple of 4, only the alphabet is allowed,
 * '=' only as one or two final characters, and the unused bits before padding
 * must be zero (so every byte string has exactly one accepted encoding). Returns
 * the number of bytes, -EINVAL for bad input, -ENOBUFS when out_cap is too
 * small. Nothing is left in `out` on failure.
 */
int base64_decode(uint8_t *out, size_t out_cap, const char *in, size_t in_len);

/*
 * A key as wg(8) accepts it: exactly 44 characters, the last one '=' and the one
 * before it carrying no stray bits. 0 or -EINVAL; ret_key is set only on success.
 */
int key_from_base64(uint8_t ret_key[KEY_LEN], const char *s);
void key_to_base64(char out[KEY_BASE64_LEN + 1], const uint8_t key[KEY_LEN]);

#endif
