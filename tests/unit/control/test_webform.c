/* SPDX-License-Identifier: MIT */
/* The login pages' form, cookie and HTML parsers/escaper (control/webform.c) as tables. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "control/webform.h"

static int field(const char *body, const char *name, char *ret, size_t cap)
{
	return webform_field((const uint8_t *)body, strlen(body), name, ret, cap);
}

static void test_field(void **state)
{
	static const struct {
		const char *body, *name;
		int r;
		const char *want;
	} v[] = {
	    {"a=1&b=2", "b", 1, "2"},
	    {"email=ann%40example.com&password=p+w%2B", "email", 15, "ann@example.com"},
	    {"email=ann%40example.com&password=p+w%2B", "password", 4, "p w+"},
	    {"a=1&b=2", "c", -ENOENT, NULL},
	    {"", "a", -ENOENT, NULL},
	    {"a", "a", 0, ""},
	    {"a=", "a", 0, ""},
	    {"&&a=x&&", "a", 1, "x"},
	    {"aa=1&a=2", "a", 1, "2"},
	    {"a=1&a=2", "a", -EINVAL, NULL}, /* twice */
	    {"a=%4", "a", -EINVAL, NULL},    /* short escape */
	    {"a=%zz", "a", -EINVAL, NULL},   /* bad escape */
	    {"a=x%00y", "a", -EINVAL, NULL}, /* NUL */
	    {"a=x%01y", "a", -EINVAL, NULL}, /* control */
	    {"a=x%0Ay", "a", 3, "x\ny"},
	    {"a=0123456789", "a", -ENOBUFS, NULL},
	    {"a=%E2%9C%93", "a", 3, "\xe2\x9c\x93"},
	};
	char buf[8];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char out[64];
		size_t cap = strcmp(v[i].body, "a=0123456789") == 0 ? sizeof(buf) : sizeof(out);
		int r = field(v[i].body, v[i].name, out, cap);

		if (r != v[i].r)
			fail_msg("%s [%s]: %d, want %d", v[i].body, v[i].name, r, v[i].r);
		if (v[i].want)
			assert_string_equal(out, v[i].want);
	}
	/* Exactly cap - 1 fits. */
	assert_int_equal(field("a=1234567", "a", buf, sizeof(buf)), 7);
	assert_int_equal(field("a=12345678", "a", buf, sizeof(buf)), -ENOBUFS);
}

static void test_cookie(void **state)
{
	static const struct {
		const char *hdr, *name;
		int r;
		const char *want;
	} v[] = {
	    {"trellis_session=abc123", "trellis_session", 6, "abc123"},
	    {"x=1; trellis_session=abc; y=2", "trellis_session", 3, "abc"},
	    {"x=1;trellis_session=abc", "trellis_session", 3, "abc"},
	    {"trellis_session=\"abc\"", "trellis_session", 3, "abc"},
	    {"xtrellis_session=abc", "trellis_session", -ENOENT, NULL},
	    {"trellis_session", "trellis_session", -ENOENT, NULL},
	    {"", "trellis_session", -ENOENT, NULL},
	    {"trellis_session=a; trellis_session=b", "trellis_session", -EINVAL, NULL},
	    {"trellis_session=a b", "trellis_session", -EINVAL, NULL},
	    {"trellis_session=a,b", "trellis_session", -EINVAL, NULL},
	    {"trellis_session=a\\b", "trellis_session", -EINVAL, NULL},
	    {"trellis_session=  ", "trellis_session", 0, ""},
	    {"trellis_session=0123456789abcdef0", "trellis_session", -ENOBUFS, NULL},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char out[17];
		int r = webform_cookie(v[i].hdr, strlen(v[i].hdr), v[i].name, out, sizeof(out));

		if (r != v[i].r)
			fail_msg("%s [%s]: %d, want %d", v[i].hdr, v[i].name, r, v[i].r);
		if (v[i].want)
			assert_string_equal(out, v[i].want);
	}
}

static void test_escape(void **state)
{
	char out[64] = "x";
	size_t off = 1;

	(void)state;
	assert_int_equal(webform_html_escape(out, sizeof(out), &off, "<a href=\"'&'\">"), 0);
	assert_string_equal(out, "x&lt;a href=&quot;&#39;&amp;&#39;&quot;&gt;");
	assert_int_equal(off, strlen(out));
	/* Empty input still leaves a terminated string. */
	memset(out, 'z', sizeof(out));
	off = 0;
	assert_int_equal(webform_html_escape(out, sizeof(out), &off, ""), 0);
	assert_int_equal(off, 0);
	assert_string_equal(out, "");
	assert_int_equal(webform_html_escape(out, 0, &off, ""), -ENOBUFS);
	off = 0;
	assert_int_equal(webform_html_escape(out, 5, &off, "ab<"), -ENOBUFS);
	assert_string_equal(out, "ab");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_field),
	    cmocka_unit_test(test_cookie),
	    cmocka_unit_test(test_escape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
