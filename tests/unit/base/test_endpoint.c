/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "base/endpoint.h"

static void test_parse_format_roundtrip(void **state)
{
	static const char *const good[] = {
		"192.0.2.1:51820", "0.0.0.0:0", "203.0.113.255:65535", "[2001:db8::1]:51820",
		"[::]:1", "[2001:db8:0:1::ff]:443",
	};
	char buf[ENDPOINT_STR_MAX];
	struct endpoint ep;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		assert_int_equal(endpoint_parse(&ep, good[i]), 0);
		assert_true(endpoint_is_set(&ep));
		assert_string_equal(endpoint_format(&ep, buf, sizeof(buf)), good[i]);
	}
	assert_int_equal(endpoint_parse(&ep, "198.51.100.7:9"), 0);
	assert_int_equal(ep.sa.sa_family, AF_INET);
	assert_int_equal(ntohs(ep.in4.sin_port), 9);
	assert_int_equal(endpoint_len(&ep), sizeof(struct sockaddr_in));
}

static void test_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"", ":", "192.0.2.1", "192.0.2.1:", "192.0.2.1:65536", "192.0.2.1:-1",
		"192.0.2.1:+1", "192.0.2.1:1x", "192.0.2:1", "2001:db8::1:51820", "[2001:db8::1]",
		"[2001:db8::1]51820", "[2001:db8::1:51820", "[192.0.2.1]:1", "host.example:1",
		"[2001:db8::1%]:1",
	};
	struct endpoint ep;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&ep, 0xa5, sizeof(ep));
		assert_int_equal(endpoint_parse(&ep, bad[i]), -EINVAL);
	}
}

static void test_equal(void **state)
{
	struct endpoint a, b;

	(void)state;
	assert_int_equal(endpoint_parse(&a, "192.0.2.1:1"), 0);
	assert_int_equal(endpoint_parse(&b, "192.0.2.1:1"), 0);
	assert_true(endpoint_equal(&a, &b));
	assert_int_equal(endpoint_parse(&b, "192.0.2.1:2"), 0);
	assert_false(endpoint_equal(&a, &b));
	assert_int_equal(endpoint_parse(&b, "[2001:db8::1]:1"), 0);
	assert_false(endpoint_equal(&a, &b));
	assert_int_equal(endpoint_parse(&a, "[2001:db8::1]:1"), 0);
	assert_true(endpoint_equal(&a, &b));
	memset(&a, 0, sizeof(a));
	assert_false(endpoint_is_set(&a));
	assert_int_equal(endpoint_len(&a), 0);
}

/* A handle is set but no address, compares by id, and is never sent anywhere (length 0). */
static void test_handle(void **state)
{
	struct endpoint a, b, addr;
	char buf[ENDPOINT_STR_MAX];

	(void)state;
	endpoint_handle_set(&a, 7);
	endpoint_handle_set(&b, 7);
	assert_true(endpoint_is_handle(&a));
	assert_true(endpoint_is_set(&a));
	assert_false(endpoint_is_addr(&a));
	assert_int_equal(endpoint_len(&a), 0);
	assert_true(endpoint_equal(&a, &b));
	endpoint_handle_set(&b, 8);
	assert_false(endpoint_equal(&a, &b));
	assert_string_equal(endpoint_format(&a, buf, sizeof(buf)), "handle:7");
	assert_int_equal(endpoint_parse(&addr, "192.0.2.1:7"), 0);
	assert_true(endpoint_is_addr(&addr));
	assert_false(endpoint_is_handle(&addr));
	assert_false(endpoint_equal(&a, &addr));
	assert_false(endpoint_equal(&addr, &a));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_format_roundtrip),
		cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_equal),
		cmocka_unit_test(test_handle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
