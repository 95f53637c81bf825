/* SPDX-License-Identifier: MIT */
/*
 * TOTP against RFC 6238 appendix B (SHA-1, 8 digits) and RFC 4226 appendix D,
 * the ±1 step window, replay refusal, base32 (RFC 4648 section 10) and
 * recovery codes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth/totp.h"

static const uint8_t rfc_key[] = "12345678901234567890";

static void test_rfc6238_vectors(void **state)
{
	static const struct {
		uint64_t t;
		const char *code;
	} v[] = {
	    {59, "94287082"},	      {1111111109, "07081804"}, {1111111111, "14050471"},
	    {1234567890, "89005924"}, {2000000000, "69279037"}, {20000000000, "65353130"},
	};
	char code[9];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		totp_code(rfc_key, 20, v[i].t, 8, code);
		assert_string_equal(code, v[i].code);
	}
}

static void test_rfc4226_vectors(void **state)
{
	static const uint32_t v[] = {755224, 287082, 359152, 969429, 338314,
				     254676, 287922, 162583, 399871, 520489};

	(void)state;
	for (uint64_t c = 0; c < 10; c++)
		assert_int_equal(totp_hotp(rfc_key, 20, c, 6), v[c]);
}

static void test_window_and_replay(void **state)
{
	uint64_t now = 1111111111, step = now / TOTP_STEP_S, got = 0;
	char prev[7], cur[7], next[7], far[7];

	(void)state;
	totp_code(rfc_key, 20, now - 30, 6, prev);
	totp_code(rfc_key, 20, now, 6, cur);
	totp_code(rfc_key, 20, now + 30, 6, next);
	totp_code(rfc_key, 20, now + 60, 6, far);
	assert_int_equal(totp_verify(rfc_key, 20, far, now, 0, &got), -EACCES);
	assert_int_equal(totp_verify(rfc_key, 20, prev, now, 0, &got), 0);
	assert_int_equal(got, step - 1);
	assert_int_equal(totp_verify(rfc_key, 20, cur, now, 0, &got), 0);
	assert_int_equal(got, step);
	/* The account used the current step: that code again is a replay, the older one too. */
	assert_int_equal(totp_verify(rfc_key, 20, cur, now, step, &got), -EALREADY);
	assert_int_equal(totp_verify(rfc_key, 20, prev, now, step, &got), -EALREADY);
	/* ... still within its window 29 s later. */
	assert_int_equal(totp_verify(rfc_key, 20, cur, now + 29, step, &got), -EALREADY);
	assert_int_equal(totp_verify(rfc_key, 20, next, now, step, &got), 0);
	assert_int_equal(got, step + 1);
	/* Malformed. */
	assert_int_equal(totp_verify(rfc_key, 20, "", now, 0, &got), -EACCES);
	assert_int_equal(totp_verify(rfc_key, 20, "12345", now, 0, &got), -EACCES);
	assert_int_equal(totp_verify(rfc_key, 20, "1234567", now, 0, &got), -EACCES);
	assert_int_equal(totp_verify(rfc_key, 20, "12a456", now, 0, &got), -EACCES);
}

static void test_base32(void **state)
{
	/* RFC 4648 section 10, without padding. */
	static const char *v[][2] = {{"", ""},
				     {"f", "MY"},
				     {"fo", "MZXQ"},
				     {"foo", "MZXW6"},
				     {"foob", "MZXW6YQ"},
				     {"fooba", "MZXW6YTB"},
				     {"foobar", "MZXW6YTBOI"}};
	char enc[32];
	uint8_t dec[32];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		totp_base32_encode((const uint8_t *)v[i][0], strlen(v[i][0]), enc);
		assert_string_equal(enc, v[i][1]);
		assert_int_equal(totp_base32_decode(v[i][1], dec, sizeof(dec)), strlen(v[i][0]));
		assert_memory_equal(dec, v[i][0], strlen(v[i][0]));
	}
	assert_int_equal(totp_base32_decode("mzxw 6ytb oi==", dec, sizeof(dec)), 6);
	assert_memory_equal(dec, "foobar", 6);
	assert_int_equal(totp_base32_decode("MZXW1", dec, sizeof(dec)), -EINVAL);
	assert_int_equal(totp_base32_decode("MZXW6YTBOI", dec, 5), -EINVAL);
}

static void test_uri(void **state)
{
	char uri[TOTP_URI_MAX];

	(void)state;
	assert_int_equal(totp_uri("Trellis lab", "ann@example.com", rfc_key, 20, uri, sizeof(uri)),
			 0);
	assert_string_equal(uri, "otpauth://totp/Trellis%20lab:ann%40example.com?secret="
				 "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Trellis%20lab");
	assert_int_equal(totp_uri("x", "y", rfc_key, 20, uri, 20), -ENOBUFS);
}

static void test_recovery(void **state)
{
	char a[TOTP_RECOVERY_LEN], b[TOTP_RECOVERY_LEN], typed[TOTP_RECOVERY_LEN + 2];
	uint8_t ha[TOTP_RECOVERY_HASH_LEN], hb[TOTP_RECOVERY_HASH_LEN], ht[TOTP_RECOVERY_HASH_LEN];

	(void)state;
	assert_int_equal(totp_recovery_generate(a), 0);
	assert_int_equal(totp_recovery_generate(b), 0);
	assert_int_equal(strlen(a), 11);
	assert_int_equal(a[5], '-');
	assert_string_not_equal(a, b);
	assert_int_equal(totp_recovery_hash(a, ha), 0);
	assert_int_equal(totp_recovery_hash(b, hb), 0);
	assert_memory_not_equal(ha, hb, sizeof(ha));
	/* Typed in upper case without the dash, with a space: the same code. */
	for (size_t i = 0, o = 0; i < 12; i++) {
		char c = a[i];

		if (c == '-')
			c = ' ';
		typed[o++] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
	}
	assert_int_equal(totp_recovery_hash(typed, ht), 0);
	assert_memory_equal(ha, ht, sizeof(ha));
	assert_int_equal(totp_recovery_hash("abcde-fghi", ht), -EINVAL);
	assert_int_equal(totp_recovery_hash("abcde-fghij1", ht), -EINVAL);
	assert_int_equal(totp_recovery_hash("abcde-fgh1j", ht), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc6238_vectors),
	    cmocka_unit_test(test_rfc4226_vectors),
	    cmocka_unit_test(test_window_and_replay),
	    cmocka_unit_test(test_base32),
	    cmocka_unit_test(test_uri),
	    cmocka_unit_test(test_recovery),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
