/* SPDX-License-Identifier: MIT */
/*
 * The port mapping client's pieces without a gateway: the --portmap list, and
 * which external addresses are offered to peers. (The client against real
 * gateways is tests/lab/test_portmap.sh.)
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "portmap/portmap.c"

static void test_protocols_parse(void **state)
{
	unsigned p = 99;

	(void)state;
	assert_int_equal(portmap_protocols_parse("auto", &p), 0);
	assert_int_equal(p, PORTMAP_ALL);
	assert_int_equal(portmap_protocols_parse("off", &p), 0);
	assert_int_equal(p, 0);
	assert_int_equal(portmap_protocols_parse("pcp", &p), 0);
	assert_int_equal(p, PORTMAP_PCP);
	assert_int_equal(portmap_protocols_parse("upnp,nat-pmp", &p), 0);
	assert_int_equal(p, PORTMAP_UPNP | PORTMAP_NATPMP);
	assert_int_equal(portmap_protocols_parse("pcp,pcp", &p), 0);
	assert_int_equal(p, PORTMAP_PCP);

	p = 99;
	assert_int_equal(portmap_protocols_parse("", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse(NULL, &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("pcp,", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse(",pcp", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("natpmp", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("pc", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("pcpx", &p), -EINVAL);
	assert_int_equal(portmap_protocols_parse("auto,pcp", &p), -EINVAL);
	assert_int_equal(p, 99); /* untouched on error */

	assert_string_equal(portmap_proto_name(PORTMAP_NATPMP), "nat-pmp");
	assert_null(portmap_proto_name(0));
	assert_null(portmap_proto_name(PORTMAP_PCP | PORTMAP_UPNP));
}

/* A gateway that is itself behind a NAT maps onto an address nobody outside reaches. */
static void test_addr_usable(void **state)
{
	static const uint8_t yes[][4] = {{203, 0, 113, 2},    {198, 51, 100, 1}, {192, 0, 2, 9},
					 {100, 63, 255, 255}, {100, 128, 0, 0},	 {172, 32, 0, 1}};
	static const uint8_t no[][4] = {{0, 0, 0, 0},	  {10, 1, 2, 3},       {127, 0, 0, 1},
					{169, 254, 1, 1}, {172, 16, 0, 1},     {172, 31, 255, 255},
					{192, 168, 1, 1}, {100, 64, 0, 1},     {100, 127, 255, 255},
					{224, 0, 0, 1},	  {255, 255, 255, 255}};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(yes); i++)
		assert_true(addr_usable(yes[i]));
	for (size_t i = 0; i < ARRAY_SIZE(no); i++)
		assert_false(addr_usable(no[i]));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_protocols_parse),
	    cmocka_unit_test(test_addr_usable),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
