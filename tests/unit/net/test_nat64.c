/* SPDX-License-Identifier: MIT */
/*
 * NAT64 address math against RFC 6052 §2.4's table (192.0.2.33 under all six prefix
 * lengths), the u octet (bits 64-71) skipped and checked, and RFC 7050 prefix discovery
 * from ipv4only.arpa's AAAA answers: found at each length, refused for answers without
 * the well-known addresses or that disagree.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "net/nat64.h"

static struct nat64_prefix prefix(const char *text, unsigned len)
{
	struct nat64_prefix p = {.len = len};

	assert_int_equal(inet_pton(AF_INET6, text, p.addr), 1);
	return p;
}

static void v6(const char *text, uint8_t ret[16])
{
	assert_int_equal(inet_pton(AF_INET6, text, ret), 1);
}

/* RFC 6052 §2.4. */
static const struct {
	const char *prefix;
	unsigned len;
	const char *addr;
} rfc6052[] = {
    {"2001:db8::", 32, "2001:db8:c000:221::"},
    {"2001:db8:100::", 40, "2001:db8:1c0:2:21::"},
    {"2001:db8:122::", 48, "2001:db8:122:c000:2:2100::"},
    {"2001:db8:122:300::", 56, "2001:db8:122:3c0:0:221::"},
    {"2001:db8:122:344::", 64, "2001:db8:122:344:c0:2:2100:0"},
    {"2001:db8:122:344::", 96, "2001:db8:122:344::192.0.2.33"},
    {"64:ff9b::", 96, "64:ff9b::192.0.2.33"},
};

static void test_rfc6052_table(void **state)
{
	static const uint8_t v4[4] = {192, 0, 2, 33};
	(void)state;
	for (unsigned i = 0; i < sizeof(rfc6052) / sizeof(rfc6052[0]); i++) {
		struct nat64_prefix p = prefix(rfc6052[i].prefix, rfc6052[i].len);
		uint8_t want[16], got[16], back[4];

		v6(rfc6052[i].addr, want);
		assert_int_equal(nat64_addr_synthesize(&p, v4, got), 0);
		assert_memory_equal(got, want, 16);
		/* The u octet is zero whatever the IPv4 address. */
		assert_int_equal(got[8], 0);
		assert_int_equal(nat64_addr_extract(&p, want, back), 0);
		assert_memory_equal(back, v4, 4);
	}
}

static void test_extract_refuses(void **state)
{
	struct nat64_prefix p = prefix("2001:db8:122:344::", 64);
	uint8_t a[16], v4[4];
	(void)state;

	/* Not under the prefix. */
	v6("2001:db8:122:345:c0:2:2100:0", a);
	assert_int_equal(nat64_addr_extract(&p, a, v4), -ENOENT);
	/* Under it, but the u octet is set: not an RFC 6052 address. */
	v6("2001:db8:122:344:1c0:2:2100:0", a);
	assert_int_equal(nat64_addr_extract(&p, a, v4), -ENOENT);
	/* Lengths RFC 6052 does not allow. */
	for (unsigned len = 0; len <= 128; len++) {
		p.len = len;
		assert_int_equal(nat64_len_valid(len), len == 32 || len == 40 || len == 48 ||
							   len == 56 || len == 64 || len == 96);
		if (!nat64_len_valid(len)) {
			assert_int_equal(nat64_addr_synthesize(&p, v4, a), -EINVAL);
			assert_int_equal(nat64_addr_extract(&p, a, v4), -EINVAL);
		}
	}
}

/* What a DNS64 with prefix p answers for ipv4only.arpa: both well-known addresses. */
static void answers_for(const struct nat64_prefix *p, uint8_t ret[2][16])
{
	static const uint8_t wka[2][4] = {{192, 0, 0, 170}, {192, 0, 0, 171}};

	assert_int_equal(nat64_addr_synthesize(p, wka[0], ret[0]), 0);
	assert_int_equal(nat64_addr_synthesize(p, wka[1], ret[1]), 0);
}

static void test_discover_each_length(void **state)
{
	(void)state;
	for (unsigned i = 0; i < sizeof(rfc6052) / sizeof(rfc6052[0]); i++) {
		struct nat64_prefix p = prefix(rfc6052[i].prefix, rfc6052[i].len), got;
		uint8_t ans[2][16];
		char text[NAT64_PREFIX_STR_MAX];

		answers_for(&p, ans);
		memset(&got, 0xaa, sizeof(got));
		assert_int_equal(nat64_prefix_from_answers((const uint8_t(*)[16])ans, 2, &got), 0);
		assert_int_equal(got.len, p.len);
		assert_memory_equal(got.addr, p.addr, 16);
		/* One answer is enough too (a DNS64 may drop one). */
		assert_int_equal(
		    nat64_prefix_from_answers((const uint8_t(*)[16]) & ans[1], 1, &got), 0);
		assert_int_equal(got.len, p.len);
		nat64_prefix_str(&got, text, sizeof(text));
		assert_non_null(strstr(text, rfc6052[i].prefix));
	}
}

static void test_discover_none(void **state)
{
	struct nat64_prefix got, p = prefix("2001:db8:122:344::", 64);
	uint8_t ans[2][16];
	(void)state;

	/* No answers: a resolver without DNS64. */
	assert_int_equal(nat64_prefix_from_answers(NULL, 0, &got), -ENOENT);
	/* A real AAAA that embeds no well-known address. */
	v6("2001:db8:122:344::192.0.2.33", ans[0]);
	assert_int_equal(nat64_prefix_from_answers((const uint8_t(*)[16])ans, 1, &got), -ENOENT);
	/* Two answers under different prefixes fit no single one. */
	answers_for(&p, ans);
	ans[1][3] ^= 1;
	assert_int_equal(nat64_prefix_from_answers((const uint8_t(*)[16])ans, 2, &got), -ENOENT);
	/* The u octet set where a /64 puts it: no length fits. */
	answers_for(&p, ans);
	ans[0][8] = 1;
	ans[1][8] = 1;
	assert_int_equal(nat64_prefix_from_answers((const uint8_t(*)[16])ans, 2, &got), -ENOENT);
}

static void test_endpoint(void **state)
{
	struct nat64_prefix p = prefix("2001:db8:64:64::", 64), none = {0};
	struct endpoint ep = {0}, out;
	uint8_t want[16];
	(void)state;

	ep.in4.sin_family = AF_INET;
	ep.in4.sin_port = htons(3478);
	inet_pton(AF_INET, "192.0.2.1", &ep.in4.sin_addr);
	nat64_state_set(&none, true);
	assert_int_equal(nat64_endpoint_synthesize(&ep, &out), -ENOENT);
	nat64_state_set(&p, false);
	assert_int_equal(nat64_endpoint_synthesize(&ep, &out), 0);
	v6("2001:db8:64:64:c0:2:100:0", want);
	assert_int_equal(out.in6.sin6_family, AF_INET6);
	assert_int_equal(ntohs(out.in6.sin6_port), 3478);
	assert_memory_equal(&out.in6.sin6_addr, want, 16);
	/* Routed only without an IPv4 route of our own. */
	assert_int_equal(nat64_endpoint_route(&ep, &out), 1);
	assert_memory_equal(&out.in6.sin6_addr, want, 16);
	nat64_state_set(&p, true);
	assert_int_equal(nat64_endpoint_route(&ep, &out), 0);
	assert_int_equal(out.sa.sa_family, AF_INET);
	/* An IPv6 endpoint stays as it is. */
	assert_int_equal(nat64_endpoint_synthesize(&ep, &out), 0);
	assert_int_equal(nat64_endpoint_synthesize(&out, &ep), -EINVAL);
	nat64_state_set(&p, false);
	assert_int_equal(nat64_endpoint_route(&out, &ep), 0);
	assert_int_equal(ep.sa.sa_family, AF_INET6);
	nat64_state_set(&none, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_rfc6052_table),
	    cmocka_unit_test(test_extract_refuses),
	    cmocka_unit_test(test_discover_each_length),
	    cmocka_unit_test(test_discover_none),
	    cmocka_unit_test(test_endpoint),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
