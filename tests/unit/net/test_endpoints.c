/* SPDX-License-Identifier: MIT */
/* Endpoint candidates: which addresses are never endpoints, against a table; collection. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "net/endpoints.h"

static const struct endpoints_prefix tailnet[] = {
    {.family = AF_INET, .addr = {100, 64}, .bits = 10},
    {.family = AF_INET6, .addr = {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11}, .bits = 48},
};

static bool skipped(const char *text)
{
	uint8_t a[16];
	int family = strchr(text, ':') ? AF_INET6 : AF_INET;

	assert_int_equal(inet_pton(family, text, a), 1);
	return endpoints_addr_skipped(family, a, tailnet, 2);
}

static void test_skipped(void **state)
{
	static const struct {
		const char *addr;
		bool skip;
	} cases[] = {
	    {"192.0.2.1", false},
	    {"198.18.0.7", false},
	    {"203.0.113.200", false},
	    {"100.64.0.1", true},
	    {"100.127.255.254", true},
	    {"100.63.255.255", false},
	    {"100.128.0.0", false},
	    {"127.0.0.1", true},
	    {"127.255.0.1", true},
	    {"0.0.0.0", true},
	    {"169.254.1.1", true},
	    {"169.253.1.1", false},
	    {"2001:db8::1", false},
	    {"fd7e:11e5:7a11::5", true},
	    {"fd7e:11e5:7a12::5", false},
	    {"fe80::1", true},
	    {"febf::1", true},
	    {"fec0::1", false},
	    {"::1", true},
	    {"::", true},
	    {"::2", false},
	    {"ff02::1", true},
	};
	unsigned i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (skipped(cases[i].addr) != cases[i].skip)
			fail_msg("%s: expected %s", cases[i].addr,
				 cases[i].skip ? "skipped" : "kept");
	/* Without skip prefixes the tailnet is an address like another. */
	{
		uint8_t a[4] = {100, 64, 0, 1};

		assert_false(endpoints_addr_skipped(AF_INET, a, NULL, 0));
	}
}

/* Whatever this machine has: never loopback or a skipped address, always our port. */
static void test_collect(void **state)
{
	struct endpoint eps[16];
	unsigned n, i;

	(void)state;
	assert_int_equal(endpoints_collect(0, NULL, tailnet, 2, eps, 16), 0);
	n = endpoints_collect(41641, NULL, tailnet, 2, eps, 16);
	assert_true(n <= 16);
	for (i = 0; i < n; i++) {
		if (eps[i].sa.sa_family == AF_INET) {
			assert_int_equal(ntohs(eps[i].in4.sin_port), 41641);
			assert_false(
			    endpoints_addr_skipped(AF_INET, &eps[i].in4.sin_addr, tailnet, 2));
		} else {
			assert_int_equal(eps[i].sa.sa_family, AF_INET6);
			assert_int_equal(ntohs(eps[i].in6.sin6_port), 41641);
			assert_int_equal(eps[i].in6.sin6_scope_id, 0);
			assert_false(
			    endpoints_addr_skipped(AF_INET6, &eps[i].in6.sin6_addr, tailnet, 2));
		}
	}
	assert_true(endpoints_collect(41641, NULL, tailnet, 2, eps, 0) == 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_skipped),
	    cmocka_unit_test(test_collect),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
