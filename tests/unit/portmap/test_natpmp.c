/* SPDX-License-Identifier: MIT */
/*
 * The NAT-PMP engine (RFC 6886): requests byte for byte, the 250 ms doubling
 * retransmission of §3.1 and its nine tries, the address-then-mapping
 * sequence, renewal at half the lifetime (§3.3), deletion (§3.4), error
 * results, and malformed or foreign replies dropped and counted. Replies are
 * parsed from heap copies of exactly their size.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/time.h"
#include "base/util.h"
#include "portmap/natpmp.h"

#define SEC NSEC_PER_SEC
#define MS NSEC_PER_MSEC

static const uint8_t addr_request[2] = {0, 0};
/* UDP 41641 -> suggested 41641, 7200 s. */
static const uint8_t map_request[12] = {0, 1, 0, 0, 0xa2, 0xa9, 0xa2, 0xa9, 0, 0, 0x1c, 0x20};
/* §3.4: lifetime 0 and suggested port 0. */
static const uint8_t delete_request[12] = {0, 1, 0, 0, 0xa2, 0xa9, 0, 0, 0, 0, 0, 0};

static void init(struct natpmp_client *c)
{
	natpmp_client_init(c,
			   &(struct natpmp_client_cfg){.internal_port = 41641, .lifetime_s = 7200});
}

static size_t addr_response(uint8_t *b, uint16_t result, uint32_t epoch)
{
	static const uint8_t ext[4] = {203, 0, 113, 2};

	b[0] = 0;
	b[1] = 0x80;
	put_be16(b + 2, result);
	put_be32(b + 4, epoch);
	memcpy(b + 8, ext, 4);
	return NATPMP_ADDR_RESP_LEN;
}

static size_t map_response(uint8_t *b, uint16_t result, uint32_t epoch, uint16_t ext_port,
			   uint32_t lifetime)
{
	b[0] = 0;
	b[1] = 0x81;
	put_be16(b + 2, result);
	put_be32(b + 4, epoch);
	put_be16(b + 8, 41641);
	put_be16(b + 10, ext_port);
	put_be32(b + 12, lifetime);
	return NATPMP_MAP_RESP_LEN;
}

static int rx(struct natpmp_client *c, uint64_t now, const uint8_t *b, size_t len)
{
	uint8_t *copy = malloc(len ? len : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, b, len);
	r = natpmp_client_rx(c, now, copy, len);
	free(copy);
	return r;
}

static void test_request_bytes(void **state)
{
	uint8_t buf[16];

	(void)state;
	assert_int_equal(natpmp_addr_request_build(buf, sizeof(buf)), 2);
	assert_memory_equal(buf, addr_request, 2);
	assert_int_equal(natpmp_map_request_build(buf, sizeof(buf), 41641, 41641, 7200), 12);
	assert_memory_equal(buf, map_request, 12);
	assert_int_equal(natpmp_map_request_build(buf, 11, 41641, 41641, 7200), -ENOBUFS);
	assert_int_equal(natpmp_addr_request_build(buf, 1), -ENOBUFS);
}

/* §3.1: 250 ms, doubling, nine transmissions in all, then FAILED (retried later). */
static void test_retransmit(void **state)
{
	uint8_t buf[16];
	struct natpmp_client c;
	uint64_t now = SEC, rt = 250 * MS;
	unsigned i;

	(void)state;
	init(&c);
	assert_int_equal(natpmp_client_tx(&c, now, buf, sizeof(buf)), 0);
	natpmp_client_start(&c, now, true);
	for (i = 0; i < NATPMP_TRIES; i++) {
		assert_int_equal(natpmp_client_tx(&c, now, buf, sizeof(buf)), 2);
		assert_memory_equal(buf, addr_request, 2);
		assert_int_equal(natpmp_client_deadline(&c), now + rt);
		assert_int_equal(natpmp_client_tx(&c, now + rt - 1, buf, sizeof(buf)), 0);
		now += rt;
		rt *= 2;
	}
	/* 250 ms .. 64 s: the last one waited 64 s. */
	assert_int_equal(rt / 2, 64 * SEC);
	assert_int_equal(natpmp_client_tx(&c, now, buf, sizeof(buf)), 0);
	assert_int_equal(c.state, PORTMAP_FAILED);
	assert_int_equal(natpmp_client_deadline(&c), now + NATPMP_RETRY_S * SEC);
	assert_int_equal(natpmp_client_tx(&c, now + NATPMP_RETRY_S * SEC, buf, sizeof(buf)), 2);
	assert_int_equal(c.state, PORTMAP_REQUESTING);
}

static void test_map_renew(void **state)
{
	uint8_t buf[16], r[16];
	struct natpmp_client c;
	uint64_t now = 0;

	(void)state;
	init(&c);
	natpmp_client_start(&c, now, true);
	assert_int_equal(natpmp_client_tx(&c, now, buf, sizeof(buf)), 2);
	assert_int_equal(rx(&c, now, r, addr_response(r, 0, 100)), 1);
	assert_true(c.have_addr);
	/* The mapping request follows at once. */
	assert_int_equal(natpmp_client_deadline(&c), now);
	assert_int_equal(natpmp_client_tx(&c, now, buf, sizeof(buf)), 12);
	assert_memory_equal(buf, map_request, 12);
	now += 10 * MS;
	assert_int_equal(rx(&c, now, r, map_response(r, 0, 100, 40000, 3600)), 1);
	assert_int_equal(c.state, PORTMAP_MAPPED);
	assert_int_equal(c.map.ext_port, 40000);
	assert_int_equal(c.map.lifetime_s, 3600);
	assert_int_equal(c.map.expires_ns, now + 3600 * SEC);
	assert_true(portmap_addr_is_v4(c.map.ext_addr));
	assert_int_equal(c.map.ext_addr[12], 203);
	assert_int_equal(c.map.ext_addr[15], 2);
	/* §3.3: renewal at half the lifetime: the address, then the port we hold. */
	assert_int_equal(natpmp_client_deadline(&c), now + 1800 * SEC);
	now += 1800 * SEC;
	assert_int_equal(natpmp_client_tx(&c, now, buf, sizeof(buf)), 2);
	assert_int_equal(c.state, PORTMAP_RENEWING);
	assert_true(natpmp_client_mapped(&c));
	assert_int_equal(rx(&c, now, r, addr_response(r, 0, 1900)), 1);
	assert_int_equal(natpmp_client_tx(&c, now, buf, sizeof(buf)), 12);
	assert_memory_equal(buf, map_request, 6);
	assert_int_equal(get_be16(buf + 6), 40000);
	assert_int_equal(get_be32(buf + 8), 7200);
	assert_int_equal(rx(&c, now, r, map_response(r, 0, 1900, 40000, 3600)), 1);
	assert_int_equal(c.state, PORTMAP_MAPPED);
	assert_int_equal(c.renewals, 1);
	assert_int_equal(c.epoch_resets, 0);

	/* A renewal unanswered: at expiry the mapping is gone and asked for anew. */
	now = natpmp_client_deadline(&c);
	assert_int_equal(natpmp_client_tx(&c, now, buf, sizeof(buf)), 2);
	while (natpmp_client_tx(&c, natpmp_client_deadline(&c), buf, sizeof(buf)) == 2 &&
	       c.state == PORTMAP_RENEWING)
		;
	assert_int_equal(c.state, PORTMAP_RENEWING);
	assert_int_equal(natpmp_client_deadline(&c), c.map.expires_ns);
	assert_int_equal(natpmp_client_tx(&c, c.map.expires_ns, buf, sizeof(buf)), 2);
	assert_int_equal(c.state, PORTMAP_REQUESTING);
	assert_false(natpmp_client_mapped(&c));
}

static void test_ready_then_map(void **state)
{
	uint8_t buf[16], r[16];
	struct natpmp_client c;

	(void)state;
	init(&c);
	natpmp_client_start(&c, 0, false);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 2);
	assert_int_equal(rx(&c, 0, r, addr_response(r, 0, 1)), 1);
	assert_int_equal(c.state, PORTMAP_READY);
	assert_int_equal(natpmp_client_deadline(&c), TIME_NEVER);
	assert_int_equal(natpmp_client_tx(&c, 100 * SEC, buf, sizeof(buf)), 0);
	natpmp_client_map(&c, 100 * SEC);
	assert_int_equal(natpmp_client_tx(&c, 100 * SEC, buf, sizeof(buf)), 12);
	assert_memory_equal(buf, map_request, 12);
}

static void test_delete(void **state)
{
	uint8_t buf[16], r[16];
	struct natpmp_client c;
	unsigned i;

	(void)state;
	init(&c);
	natpmp_client_start(&c, 0, true);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 2);
	assert_int_equal(rx(&c, 0, r, addr_response(r, 0, 1)), 1);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 12);
	assert_int_equal(rx(&c, 0, r, map_response(r, 0, 1, 41641, 7200)), 1);
	natpmp_client_stop(&c, SEC);
	assert_int_equal(c.state, PORTMAP_DELETING);
	assert_int_equal(natpmp_client_tx(&c, SEC, buf, sizeof(buf)), 12);
	assert_memory_equal(buf, delete_request, 12);
	assert_int_equal(rx(&c, SEC, r, map_response(r, 0, 2, 0, 0)), 1);
	assert_int_equal(c.state, PORTMAP_IDLE);

	/* Unanswered: NATPMP_DELETE_TRIES, 250 ms apart and more, then idle. */
	natpmp_client_start(&c, 0, true);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 2);
	assert_int_equal(rx(&c, 0, r, addr_response(r, 0, 3)), 1);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 12);
	assert_int_equal(rx(&c, 0, r, map_response(r, 0, 3, 41641, 7200)), 1);
	natpmp_client_stop(&c, SEC);
	for (i = 0; i < NATPMP_DELETE_TRIES; i++)
		assert_int_equal(natpmp_client_tx(&c, natpmp_client_deadline(&c), buf, sizeof(buf)),
				 12);
	assert_int_equal(natpmp_client_deadline(&c), SEC + (250 + 500 + 1000) * MS);
	assert_int_equal(natpmp_client_tx(&c, natpmp_client_deadline(&c), buf, sizeof(buf)), 0);
	assert_int_equal(c.state, PORTMAP_IDLE);
}

static void test_results(void **state)
{
	uint8_t buf[16], r[16];
	struct natpmp_client c;

	(void)state;
	/* An error needs only the 8-byte header (§3.5). */
	init(&c);
	natpmp_client_start(&c, 0, true);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 2);
	addr_response(r, NATPMP_NETWORK_FAILURE, 1);
	assert_int_equal(rx(&c, SEC, r, 8), 1);
	assert_int_equal(c.state, PORTMAP_FAILED);
	assert_int_equal(c.last_result, NATPMP_NETWORK_FAILURE);
	assert_int_equal(natpmp_client_deadline(&c), SEC + NATPMP_RETRY_S * SEC);

	init(&c);
	natpmp_client_start(&c, 0, true);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 2);
	addr_response(r, NATPMP_UNSUPP_VERSION, 1);
	assert_int_equal(rx(&c, 0, r, 8), 1);
	assert_int_equal(c.state, PORTMAP_UNSUPPORTED);
	assert_int_equal(natpmp_client_deadline(&c), TIME_NEVER);

	/* Refused while renewing: kept until it expires, asked again before. */
	init(&c);
	natpmp_client_start(&c, 0, true);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 2);
	assert_int_equal(rx(&c, 0, r, addr_response(r, 0, 1)), 1);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 12);
	assert_int_equal(rx(&c, 0, r, map_response(r, 0, 1, 41641, 100)), 1);
	assert_int_equal(natpmp_client_tx(&c, 50 * SEC, buf, sizeof(buf)), 2);
	assert_int_equal(rx(&c, 50 * SEC, r, addr_response(r, 0, 51)), 1);
	assert_int_equal(natpmp_client_tx(&c, 50 * SEC, buf, sizeof(buf)), 12);
	map_response(r, NATPMP_NO_RESOURCES, 51, 0, 0);
	assert_int_equal(rx(&c, 50 * SEC, r, 8), 1);
	assert_int_equal(c.state, PORTMAP_MAPPED);
	assert_int_equal(natpmp_client_deadline(&c), 100 * SEC);
}

static void test_bad_replies(void **state)
{
	uint8_t buf[16], r[1200];
	struct natpmp_client c;
	size_t n;

	(void)state;
	init(&c);
	assert_int_equal(rx(&c, 0, r, addr_response(r, 0, 1)), 0);
	assert_int_equal(c.drops.unexpected, 1); /* nothing asked */
	natpmp_client_start(&c, 0, true);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 2);

	n = addr_response(r, 0, 1);
	assert_int_equal(rx(&c, 0, r, 0), 0);
	assert_int_equal(rx(&c, 0, r, 7), 0);
	assert_int_equal(rx(&c, 0, r, n - 1), 0); /* success without the whole address */
	memset(r + n, 0, 1104 - n);
	assert_int_equal(rx(&c, 0, r, 1104), 0);
	assert_int_equal(c.drops.short_msg, 4);
	r[0] = 2; /* a PCP answer on the NAT-PMP socket */
	assert_int_equal(rx(&c, 0, r, n), 0);
	assert_int_equal(c.drops.version, 1);
	n = addr_response(r, 0, 1);
	r[1] = 0x00; /* a request */
	assert_int_equal(rx(&c, 0, r, n), 0);
	r[1] = 0x82; /* TCP mapping */
	assert_int_equal(rx(&c, 0, r, 16), 0);
	assert_int_equal(c.drops.opcode, 2);
	/* A mapping answer while the address is asked for. */
	assert_int_equal(rx(&c, 0, r, map_response(r, 0, 1, 41641, 7200)), 0);
	assert_int_equal(c.drops.unexpected, 2);
	n = addr_response(r, 0, 1);
	memset(r + 8, 0, 4);
	assert_int_equal(rx(&c, 0, r, n), 0);
	assert_int_equal(c.drops.bad_field, 1);
	assert_int_equal(c.rx, 0);
	assert_int_equal(c.state, PORTMAP_REQUESTING);

	assert_int_equal(rx(&c, 0, r, addr_response(r, 0, 1)), 1);
	assert_int_equal(natpmp_client_tx(&c, 0, buf, sizeof(buf)), 12);
	n = map_response(r, 0, 1, 41641, 7200);
	put_be16(r + 8, 41642); /* another internal port */
	assert_int_equal(rx(&c, 0, r, n), 0);
	assert_int_equal(c.drops.mismatch, 1);
	assert_int_equal(rx(&c, 0, r, map_response(r, 0, 1, 0, 7200)), 0);
	assert_int_equal(rx(&c, 0, r, map_response(r, 0, 1, 41641, 0)), 0);
	assert_int_equal(c.drops.bad_field, 3);
	assert_int_equal(rx(&c, 0, r, map_response(r, 0, 1, 41641, 7200) - 1), 0);
	assert_int_equal(c.drops.short_msg, 5);
	assert_int_equal(rx(&c, 0, r, map_response(r, 0, 1, 41641, 7200)), 1);
	assert_int_equal(c.state, PORTMAP_MAPPED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_bytes), cmocka_unit_test(test_retransmit),
	    cmocka_unit_test(test_map_renew),	  cmocka_unit_test(test_ready_then_map),
	    cmocka_unit_test(test_delete),	  cmocka_unit_test(test_results),
	    cmocka_unit_test(test_bad_replies),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
