// SPDX-License-Identifier: MIT
/*
 * Pending interactive registrations (control/pending.c) with a fake clock:
 * the caps per source network and per tailnet, the tailnet's rate, the TTL,
 * a machine that comes back, and codes.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "control/pending.h"

#define T0 (1000 * NSEC_PER_SEC)

static struct pending *P;

static int setup(void **state)
{
	(void)state;
	assert_int_equal(pending_new(&P), 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	pending_free(P);
	return 0;
}

/* httpd's key of 198.51.100.x (x = host) or, with v6, of 2001:db8:0:net::/64. */
static size_t src_of(uint8_t net, uint8_t host, bool v6, uint8_t key[9])
{
	if (v6) {
		static const uint8_t pfx[8] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0 };

		key[0] = AF_INET6;
		memcpy(key + 1, pfx, 8);
		key[8] = net;
		return 9;
	}
	key[0] = AF_INET;
	key[1] = 198;
	key[2] = 51;
	key[3] = net;
	key[4] = host;
	return 5;
}

static int add(uint64_t tid, uint32_t machine, uint8_t net, uint8_t host, bool v6, uint64_t now,
	       struct pending_reg **ret)
{
	uint8_t mk[32] = { 0 }, nk[32] = { 1 }, key[9];
	size_t len = src_of(net, host, v6, key);

	memcpy(mk, &machine, sizeof(machine));
	memcpy(nk + 4, &machine, sizeof(machine));
	return pending_add(P, tid, mk, nk, "host", "linux", key, len, now, ret);
}

static void test_source_cap_by_24_and_64(void **state)
{
	struct pending_reg *e;
	uint32_t m = 1;

	(void)state;
	/* Different hosts of one /24 are one source. */
	for (int i = 0; i < PENDING_PER_SOURCE; i++)
		assert_int_equal(add(1, m++, 100, (uint8_t)(i + 1), false, T0, &e), 0);
	assert_int_equal(add(1, m++, 100, 200, false, T0, &e), -ENOSPC);
	/* The next /24 is another. */
	assert_int_equal(add(1, m++, 101, 1, false, T0, &e), 0);
	/* IPv6: the /64 (in another tailnet: this one's burst is not the point). */
	for (int i = 0; i < PENDING_PER_SOURCE; i++)
		assert_int_equal(add(5, m++, 7, (uint8_t)i, true, T0, &e), 0);
	assert_int_equal(add(5, m++, 7, 99, true, T0, &e), -ENOSPC);
	/* Removing one makes room for one. */
	pending_remove(P, pending_next(P, NULL));
	assert_int_equal(add(1, m++, 100, 250, false, T0, &e), 0);
}

static void test_rate_and_tailnet_cap(void **state)
{
	struct pending_reg *e;
	uint64_t now = T0;
	uint32_t m = 1000;
	unsigned n = 0, net = 0;
	int r;

	(void)state;
	/* The burst, from many sources at one instant; then the rate says no. */
	for (int i = 0; i < PENDING_BURST; i++)
		assert_int_equal(add(2, m++, (uint8_t)(i / 8), (uint8_t)i, false, now, &e), 0);
	assert_int_equal(add(2, m++, 200, 1, false, now, &e), -EBUSY);
	/* Another tailnet has a bucket of its own. */
	assert_int_equal(add(3, m++, 201, 1, false, now, &e), 0);
	/* One per 1/PENDING_RATE s after that, up to the tailnet's cap. */
	n = PENDING_BURST;
	for (;;) {
		now += NSEC_PER_SEC / PENDING_RATE;
		r = add(2, m++, (uint8_t)(10 + net / 8), (uint8_t)net, false, now, &e);
		net++;
		if (r < 0)
			break;
		n++;
	}
	assert_int_equal(r, -ENOSPC);
	assert_int_equal(n, PENDING_PER_TAILNET);
}

static void test_refresh_and_ttl(void **state)
{
	struct pending_reg *e, *again, *x;
	char code[PENDING_CODE_LEN + 1], parsed[PENDING_CODE_LEN + 1], arg[32];
	size_t n0 = pending_count(P);

	(void)state;
	assert_int_equal(add(4, 77, 50, 1, false, T0, &e), 0);
	snprintf(code, sizeof(code), "%s", e->code);
	assert_int_equal(strlen(code), PENDING_CODE_LEN);
	assert_ptr_equal(pending_get(P, code), e);
	/* The same machine later: the same entry and code, a fresh TTL, counted once. */
	assert_int_equal(add(4, 77, 50, 2, false, T0 + PENDING_TTL_NS / 2, &again), 0);
	assert_ptr_equal(again, e);
	assert_string_equal(again->code, code);
	assert_int_equal(pending_count(P), n0 + 1);
	/* Older entries (the other tests') expire first, this one at its new deadline. */
	while ((x = pending_expired(P, T0 + PENDING_TTL_NS)) && x != e)
		pending_remove(P, x);
	assert_null(pending_expired(P, T0 + PENDING_TTL_NS));
	assert_ptr_equal(pending_expired(P, T0 + PENDING_TTL_NS / 2 + PENDING_TTL_NS), e);
	pending_remove(P, e);
	assert_null(pending_get(P, code));
	/* Codes as the admin types them. */
	snprintf(arg, sizeof(arg), "reg:%s", code);
	assert_true(pending_code_parse(arg, parsed));
	assert_string_equal(parsed, code);
	assert_false(pending_code_parse(code, parsed));
	assert_false(pending_code_parse("reg:0123", parsed));
	assert_false(pending_code_parse("reg:0123456789ABCDEF", parsed));
	assert_false(pending_code_parse("reg:0123456789abcdeg", parsed));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_source_cap_by_24_and_64, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rate_and_tailnet_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refresh_and_ttl, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
