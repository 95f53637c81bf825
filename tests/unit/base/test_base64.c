/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/base64.h"

/* RFC 4648 section 10. */
static const struct {
	const char *raw, *b64;
} rfc4648[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
};

static void test_rfc4648_vectors(void **state)
{
	char enc[32];
	uint8_t dec[32];
	size_t i, n;

	(void)state;
	for (i = 0; i < sizeof(rfc4648) / sizeof(rfc4648[0]); i++) {
		n = strlen(rfc4648[i].raw);
		assert_int_equal(base64_encode(enc, sizeof(enc), (const uint8_t *)rfc4648[i].raw,
					       n),
				 strlen(rfc4648[i].b64));
		assert_string_equal(enc, rfc4648[i].b64);
		assert_int_equal(BASE64_ENCODED_LEN(n), strlen(rfc4648[i].b64));
		assert_int_equal(base64_decode(dec, sizeof(dec), rfc4648[i].b64,
					       strlen(rfc4648[i].b64)),
				 n);
		assert_memory_equal(dec, rfc4648[i].raw, n);
	}
}

static void test_all_bytes_roundtrip(void **state)
{
	uint8_t in[256], dec[256];
	char enc[BASE64_ENCODED_LEN(256) + 1];
	size_t len, i;
	int n;

	(void)state;
	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(255 - i);
	for (len = 0; len <= sizeof(in); len++) {
		n = base64_encode(enc, sizeof(enc), in, len);
		assert_int_equal(n, BASE64_ENCODED_LEN(len));
		assert_int_equal(base64_decode(dec, sizeof(dec), enc, (size_t)n), len);
		assert_memory_equal(dec, in, len);
	}
	/* The whole alphabet, in order. */
	for (i = 0; i < 48; i++)
		in[i] = 0;
	{
		static const char alphabet[] =
			"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

		assert_int_equal(base64_decode(dec, sizeof(dec), alphabet, 64), 48);
		assert_int_equal(base64_encode(enc, sizeof(enc), dec, 48), 64);
		assert_string_equal(enc, alphabet);
	}
}

static void test_decode_rejects(void **state)
{
	static const char *const bad[] = {
		/* Length not a multiple of 4. */
		"Zg", "Zg=", "Zm9vY",
		/* Padding in the wrong place or too much of it. */
		"====", "Z===", "=Zg=", "Zg=a", "Zm9v=Zm9",
		/* Stray bits before the padding. */
		"Zh==", "Zm9=",
		/* Characters outside the alphabet (incl. URL-safe ones and whitespace). */
		"Zm9v\n   ", "Zm 9", " Zm9", "Zm9-", "Zm9_", "Zm9\x80",
		"Zm9\0", /* must stay last: tested with length 4 */
	};
	uint8_t out[16];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		size_t len = strlen(bad[i]);

		if (i == sizeof(bad) / sizeof(bad[0]) - 1)
			len = 4; /* embedded NUL */
		memset(out, 0xee, sizeof(out));
		if (base64_decode(out, sizeof(out), bad[i], len) != -EINVAL)
			fail_msg("accepted \"%s\"", bad[i]);
	}
	/* Too little room. */
	assert_int_equal(base64_decode(out, 5, "Zm9vYmFy", 8), -ENOBUFS);
	assert_int_equal(base64_decode(out, 6, "Zm9vYmFy", 8), 6);
}

static void test_encode_short_buffer(void **state)
{
	char out[9];

	(void)state;
	assert_int_equal(base64_encode(out, 8, (const uint8_t *)"foobar", 6), -ENOBUFS);
	assert_int_equal(base64_encode(out, 9, (const uint8_t *)"foobar", 6), 8);
	assert_string_equal(out, "Zm9vYmFy");
}

static void test_keys(void **state)
{
	static const char counting[] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
	uint8_t key[KEY_LEN], want[KEY_LEN];
	char out[KEY_BASE64_LEN + 1];
	int i;

	(void)state;
	for (i = 0; i < KEY_LEN; i++)
		want[i] = (uint8_t)i;
	assert_int_equal(key_from_base64(key, counting), 0);
	assert_memory_equal(key, want, KEY_LEN);
	key_to_base64(out, key);
	assert_string_equal(out, counting);

	memset(want, 0xff, sizeof(want));
	key_to_base64(out, want);
	assert_string_equal(out, "//////////////////////////////////////////8=");
	assert_int_equal(key_from_base64(key, out), 0);
	assert_memory_equal(key, want, KEY_LEN);

	/* Rejections leave the output alone. */
	memset(key, 0x11, sizeof(key));
	assert_int_equal(key_from_base64(key, ""), -EINVAL);
	assert_int_equal(key_from_base64(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"),
			 -EINVAL);
	assert_int_equal(key_from_base64(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"),
			 -EINVAL);
	assert_int_equal(key_from_base64(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8A"),
			 -EINVAL);
	/* Last data character with stray low bits ('9' = 61): wg refuses it too. */
	assert_int_equal(key_from_base64(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9="),
			 -EINVAL);
	assert_int_equal(key_from_base64(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdH=8="),
			 -EINVAL);
	assert_int_equal(key_from_base64(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd=="),
			 -EINVAL);
	/* 33 bytes' worth (wrong length) and a 32-byte key with "==" shape. */
	assert_int_equal(key_from_base64(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g"),
			 -EINVAL);
	assert_int_equal(key_from_base64(key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh-="),
			 -EINVAL);
	for (i = 0; i < KEY_LEN; i++)
		assert_int_equal(key[i], 0x11);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4648_vectors),
		cmocka_unit_test(test_all_bytes_roundtrip),
		cmocka_unit_test(test_decode_rejects),
		cmocka_unit_test(test_encode_short_buffer),
		cmocka_unit_test(test_keys),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
