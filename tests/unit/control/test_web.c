/* SPDX-License-Identifier: MIT */
/*
 * The login pages' pieces without a server (control/web.c, included for its statics):
 * the failure delays grow and are kept per address and per source network, a success
 * clears an address's count; source networks are /24 and /64; consumer domains match
 * whole names only; login methods are checked before they reach the page.
 */
#include "../../../src/control/web.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define S NSEC_PER_SEC

static void test_delays(void **state)
{
	static struct web w; /* big: not on the stack */
	struct limit_slot *a, *b;
	uint64_t now = 1000 * S;

	(void)state;
	memset(&w, 0, sizeof(w));
	a = limit_slot(&w, w.by_email, "email", "ann@example.com");
	for (unsigned i = 1; i < WEB_FREE_FAILURES; i++) {
		limit_fail(a, WEB_FREE_FAILURES, now);
		assert_int_equal(a->until_ns, 0); /* free tries: no wait */
	}
	/* Then 1 s, 2 s, 4 s, ... */
	limit_fail(a, WEB_FREE_FAILURES, now);
	assert_int_equal(a->until_ns, now + 1 * S);
	limit_fail(a, WEB_FREE_FAILURES, now);
	assert_int_equal(a->until_ns, now + 2 * S);
	limit_fail(a, WEB_FREE_FAILURES, now);
	assert_int_equal(a->until_ns, now + 4 * S);
	/* ... up to the cap. */
	for (int i = 0; i < 40; i++)
		limit_fail(a, WEB_FREE_FAILURES, now);
	assert_int_equal(a->until_ns, now + WEB_DELAY_MAX_NS);
	/* The same address again is the same slot; another address, and a source, are not. */
	assert_ptr_equal(limit_slot(&w, w.by_email, "email", "ann@example.com"), a);
	b = limit_slot(&w, w.by_email, "email", "bob@example.com");
	assert_int_equal(b->fails, 0);
	assert_int_equal(limit_slot(&w, w.by_source, "source", "c00002")->fails, 0);
	for (unsigned i = 1; i < WEB_FREE_FAILURES_SOURCE; i++)
		limit_fail(limit_slot(&w, w.by_source, "source", "c00002"),
			   WEB_FREE_FAILURES_SOURCE, now);
	assert_int_equal(limit_slot(&w, w.by_source, "source", "c00002")->until_ns, 0);
}

static void test_sources(void **state)
{
	char a[SOURCE_MAX], b[SOURCE_MAX];

	(void)state;
	source_of("192.0.2.11", a);
	source_of("192.0.2.200", b);
	assert_string_equal(a, b); /* one /24 */
	source_of("198.51.100.1", b);
	assert_string_not_equal(a, b);
	source_of("2001:db8:1:2::1", a);
	source_of("2001:db8:1:2:ffff::9", b);
	assert_string_equal(a, b); /* one /64 */
	source_of("2001:db8:1:3::1", b);
	assert_string_not_equal(a, b);
	source_of("unix:uid0", a);
	assert_string_equal(a, "other");
}

static void test_consumer(void **state)
{
	(void)state;
	assert_true(consumer("gmail.com,outlook.com", "gmail.com"));
	assert_true(consumer("gmail.com, outlook.com", "Outlook.COM"));
	assert_false(consumer("gmail.com", "mail.com"));
	assert_false(consumer("gmail.com", "gmail.co"));
	assert_false(consumer("", "gmail.com"));
}

static void method_fn(struct httpd_request *r, const char *code, void *ctx)
{
	(void)r;
	(void)code;
	(void)ctx;
}

static void test_methods(void **state)
{
	static struct web w;

	(void)state;
	memset(&w, 0, sizeof(w));
	assert_int_equal(web_method_add(&w, "Sign in with Example SSO", "oidc", method_fn, NULL),
			 0);
	assert_int_equal(web_method_add(&w, "x", "../admin", method_fn, NULL), -EINVAL);
	assert_int_equal(web_method_add(&w, "x", "a\"b", method_fn, NULL), -EINVAL);
	assert_int_equal(web_method_add(&w, "x", "", method_fn, NULL), -EINVAL);
	assert_int_equal(web_method_add(&w, "x", "y", NULL, NULL), -EINVAL);
	for (int i = 1; i < WEB_METHODS_MAX; i++)
		assert_int_equal(web_method_add(&w, "x", "m", method_fn, NULL), 0);
	assert_int_equal(web_method_add(&w, "x", "m", method_fn, NULL), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_delays),
	    cmocka_unit_test(test_sources),
	    cmocka_unit_test(test_consumer),
	    cmocka_unit_test(test_methods),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
