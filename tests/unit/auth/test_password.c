/* SPDX-License-Identifier: MIT */
/*
 * Argon2id password hashes: a round trip, a published vector through our
 * encoding (RFC 9106 uses secret and associated data, which the PHC form has
 * not; the reference implementation's test vector for argon2id v=19 is used
 * instead), refusal of wrong passwords and of stored strings we must not trust,
 * and the parameter upgrade signal.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "auth/password.h"

/* Small parameters: the tests run under ASan. */
static const struct password_params cheap = {.m_kib = 64, .t = 1, .p = 1};
static const struct password_params cheap2 = {.m_kib = 128, .t = 2, .p = 1};

static void test_round_trip(void **state)
{
	char h1[PASSWORD_HASH_MAX], h2[PASSWORD_HASH_MAX];
	bool stale = true;

	(void)state;
	assert_int_equal(password_hash("correct horse", &cheap, h1), 0);
	assert_int_equal(password_hash("correct horse", &cheap, h2), 0);
	assert_string_not_equal(h1, h2); /* fresh salts */
	assert_true(strncmp(h1, "$argon2id$v=19$m=64,t=1,p=1$", 28) == 0);
	assert_int_equal(password_verify(h1, "correct horse", &cheap, &stale), 0);
	assert_false(stale);
	assert_int_equal(password_verify(h1, "correct horsE", &cheap, &stale), -EACCES);
	assert_int_equal(password_verify(h1, "", &cheap, &stale), -EACCES);
}

static void test_reference_vector(void **state)
{
	/* phc-winner-argon2's test.c: argon2id, v=19, m=2^16, t=2, p=1, "password", "somesalt". */
	static const char want[] = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ"
				   "$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
	struct password_params p = {.m_kib = 65536, .t = 2, .p = 1};
	uint8_t salt[PASSWORD_SALT_LEN] = "somesaltsomesalt";
	char h[PASSWORD_HASH_MAX];
	bool stale;

	(void)state;
	/* Our salts are 16 bytes; the vector's is 8: verify it, and hash ours for the shape. */
	assert_int_equal(password_verify(want, "password", &p, &stale), 0);
	assert_false(stale);
	assert_int_equal(password_verify(want, "passwore", &p, &stale), -EACCES);
	assert_int_equal(password_hash_salt("password", &cheap, salt, h), 0);
	assert_true(strstr(h, "$c29tZXNhbHRzb21lc2FsdA$") != NULL);
}

static void test_upgrade(void **state)
{
	char h[PASSWORD_HASH_MAX];
	struct password_params got;
	bool stale = false;

	(void)state;
	assert_int_equal(password_hash("pw", &cheap, h), 0);
	assert_int_equal(password_verify(h, "pw", &cheap2, &stale), 0);
	assert_true(stale); /* the caller re-hashes with cheap2 */
	assert_int_equal(password_hash("pw", &cheap2, h), 0);
	assert_int_equal(password_params_parse(h, &got), 0);
	assert_int_equal(got.m_kib, 128);
	assert_int_equal(got.t, 2);
	assert_int_equal(password_verify(h, "pw", &cheap2, &stale), 0);
	assert_false(stale);
	/* A wrong password never says stale. */
	stale = false;
	assert_int_equal(password_verify(h, "px", &cheap, &stale), -EACCES);
	assert_false(stale);
}

static void test_untrusted_strings(void **state)
{
	bool stale;
	char big[PASSWORD_MAX + 2];

	(void)state;
	/* Parameters a corrupt row could use to make us allocate or spin: refused unread. */
	assert_int_equal(password_verify("$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHQ$AAAA",
					 "x", &cheap, &stale),
			 -EINVAL);
	assert_int_equal(password_verify("$argon2id$v=19$m=64,t=100000,p=1$c29tZXNhbHQ$AAAA", "x",
					 &cheap, &stale),
			 -EINVAL);
	assert_int_equal(
	    password_verify("$argon2i$v=19$m=64,t=1,p=1$c29tZXNhbHQ$AAAA", "x", &cheap, &stale),
	    -EINVAL);
	assert_int_equal(
	    password_verify("$argon2id$v=16$m=64,t=1,p=1$c29tZXNhbHQ$AAAA", "x", &cheap, &stale),
	    -EINVAL);
	assert_int_equal(password_verify("", "x", &cheap, &stale), -EINVAL);
	/* Over-long passwords: refused, not truncated. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(password_hash(big, &cheap, (char[PASSWORD_HASH_MAX]){0}), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_reference_vector),
	    cmocka_unit_test(test_upgrade),
	    cmocka_unit_test(test_untrusted_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
