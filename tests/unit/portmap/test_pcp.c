/* SPDX-License-Identifier: MIT */
/*
 * The PCP engine (RFC 6887): MAP requests byte for byte, the retransmission
 * schedule of §8.1.1, renewal between 1/2 and 5/8 of the lifetime, expiry,
 * error results, deletion, fallback on a NAT-PMP gateway's answer, and every
 * malformed or foreign reply dropped and counted. Replies are parsed from heap
 * copies of exactly their size, so AddressSanitizer sees a read past the end.
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
#include "portmap/pcp.h"

#define SEC NSEC_PER_SEC

static const uint8_t client[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2};
static const uint8_t ext[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 2};
static const uint8_t nonce[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

/* MAP, UDP 41641 -> suggested 41641 at ::ffff:0.0.0.0, 7200 s, from 198.18.0.2. */
static const uint8_t map_request[60] = {
    0x02, 0x01, 0x00, 0x00, 0x00, 0x00, 0x1c, 0x20, /* v2, MAP, lifetime */
    0,	  0,	0,    0,    0,	  0,	0,    0,    0, 0,  0xff, 0xff,
    198,  18,	0,    2,					     /* client address */
    1,	  2,	3,    4,    5,	  6,	7,    8,    9, 10, 11,	 12, /* nonce */
    0x11, 0x00, 0x00, 0x00, 0xa2, 0xa9, 0xa2, 0xa9,		     /* UDP, ports */
    0,	  0,	0,    0,    0,	  0,	0,    0,    0, 0,  0xff, 0xff,
    0,	  0,	0,    0, /* no address preference */
};

static void init(struct pcp_client *c, unsigned max_tries)
{
	struct pcp_client_cfg cfg = {
	    .internal_port = 41641, .lifetime_s = 7200, .seed = 42, .max_tries = max_tries};

	memcpy(cfg.client_addr, client, 16);
	memcpy(cfg.nonce, nonce, 12);
	pcp_client_init(c, &cfg);
}

/* A MAP response as a server writes it. */
static size_t response(uint8_t *b, uint8_t result, uint32_t lifetime, uint32_t epoch,
		       uint16_t ext_port)
{
	memset(b, 0, PCP_MAP_MSG_LEN);
	b[0] = 2;
	b[1] = 0x81;
	b[3] = result;
	put_be32(b + 4, lifetime);
	put_be32(b + 8, epoch);
	memcpy(b + 24, nonce, 12);
	b[36] = 17;
	put_be16(b + 40, 41641);
	put_be16(b + 42, ext_port);
	memcpy(b + 44, ext, 16);
	return PCP_MAP_MSG_LEN;
}

static int rx(struct pcp_client *c, uint64_t now, const uint8_t *b, size_t len)
{
	uint8_t *copy = malloc(len ? len : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, b, len);
	r = pcp_client_rx(c, now, copy, len);
	free(copy);
	return r;
}

static void test_request_bytes(void **state)
{
	uint8_t buf[64];
	struct pcp_client c;

	(void)state;
	init(&c, 0);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 0); /* not started */
	assert_int_equal(pcp_client_deadline(&c), TIME_NEVER);
	pcp_client_start(&c, 5 * SEC);
	assert_int_equal(pcp_client_tx(&c, 5 * SEC, buf, 59), -ENOBUFS);
	assert_int_equal(pcp_client_tx(&c, 5 * SEC, buf, sizeof(buf)), 60);
	assert_memory_equal(buf, map_request, 60);
	assert_int_equal(pcp_client_tx(&c, 5 * SEC, buf, sizeof(buf)), 0); /* not due again */
}

/* §8.1.1: 3 s, doubling, capped at 1024 s, each +-10%; MRC 0 never gives up. */
static void test_retransmit(void **state)
{
	uint8_t buf[64];
	struct pcp_client c;
	uint64_t now = 0, rt = PCP_IRT_NS, gap;
	unsigned i;

	(void)state;
	init(&c, 0);
	pcp_client_start(&c, now);
	for (i = 0; i < 14; i++) {
		assert_int_equal(pcp_client_tx(&c, now, buf, sizeof(buf)), 60);
		assert_memory_equal(buf, map_request, 60);
		gap = pcp_client_deadline(&c) - now;
		assert_true(gap >= rt / 10 * 9 && gap <= rt / 10 * 11);
		now = pcp_client_deadline(&c);
		rt = MIN(2 * rt, PCP_MRT_NS);
	}
	assert_int_equal(c.state, PORTMAP_REQUESTING);
	assert_int_equal(c.tx, 14);

	/* MRC 3: FAILED after the third transmission's timeout, retried later. */
	init(&c, 3);
	now = 0;
	pcp_client_start(&c, now);
	for (i = 0; i < 3; i++) {
		assert_int_equal(pcp_client_tx(&c, now, buf, sizeof(buf)), 60);
		now = pcp_client_deadline(&c);
	}
	assert_int_equal(pcp_client_tx(&c, now, buf, sizeof(buf)), 0);
	assert_int_equal(c.state, PORTMAP_FAILED);
	assert_int_equal(pcp_client_deadline(&c), now + PCP_RETRY_MIN_S * SEC);
	assert_int_equal(pcp_client_tx(&c, now + PCP_RETRY_MIN_S * SEC, buf, sizeof(buf)), 60);
	assert_int_equal(c.state, PORTMAP_REQUESTING);
}

static void test_map_renew_expire(void **state)
{
	uint8_t buf[64], r[64];
	struct pcp_client c;
	uint64_t now = 10 * SEC, renew;
	uint32_t epoch;

	(void)state;
	init(&c, 0);
	pcp_client_start(&c, now);
	assert_int_equal(pcp_client_tx(&c, now, buf, sizeof(buf)), 60);
	now += SEC / 10;
	/* The gateway gives another port than the one suggested. */
	assert_int_equal(rx(&c, now, r, response(r, PCP_SUCCESS, 120, 1000, 41000)), 1);
	assert_int_equal(c.state, PORTMAP_MAPPED);
	assert_true(pcp_client_mapped(&c));
	assert_memory_equal(c.map.ext_addr, ext, 16);
	assert_int_equal(c.map.ext_port, 41000);
	assert_int_equal(c.map.lifetime_s, 120);
	assert_int_equal(c.map.expires_ns, now + 120 * SEC);
	/* §11.2.1: renewal in 1/2..5/8 of the lifetime. */
	renew = pcp_client_deadline(&c);
	assert_true(renew >= now + 60 * SEC && renew <= now + 75 * SEC);
	assert_int_equal(pcp_client_tx(&c, renew - 1, buf, sizeof(buf)), 0);
	/* A duplicate answer while mapped changes nothing. */
	assert_int_equal(rx(&c, now, r, response(r, PCP_SUCCESS, 120, 1000, 41000)), 0);
	assert_int_equal(c.drops.unexpected, 1);

	/* The renewal names the mapping we hold: suggested port 41000 at 203.0.113.2. */
	assert_int_equal(pcp_client_tx(&c, renew, buf, sizeof(buf)), 60);
	assert_int_equal(c.state, PORTMAP_RENEWING);
	assert_int_equal(c.renewals, 1);
	assert_memory_equal(buf, map_request, 42);
	assert_int_equal(get_be16(buf + 42), 41000);
	assert_memory_equal(buf + 44, ext, 16);
	/* The server's clock moved as ours did. */
	epoch = 1000 + (uint32_t)((renew + SEC - now) / SEC);
	assert_int_equal(rx(&c, renew + SEC, r, response(r, PCP_SUCCESS, 120, epoch, 41000)), 1);
	assert_int_equal(c.state, PORTMAP_MAPPED);
	assert_int_equal(c.epoch_resets, 0);

	/* A renewal nobody answers: retransmitted, then the mapping is gone at expiry. */
	now = renew + SEC;
	renew = pcp_client_deadline(&c);
	assert_int_equal(pcp_client_tx(&c, renew, buf, sizeof(buf)), 60);
	while (pcp_client_deadline(&c) < now + 120 * SEC)
		assert_int_equal(pcp_client_tx(&c, pcp_client_deadline(&c), buf, sizeof(buf)), 60);
	assert_true(pcp_client_mapped(&c));
	assert_int_equal(pcp_client_deadline(&c), now + 120 * SEC);
	assert_int_equal(pcp_client_tx(&c, now + 120 * SEC, buf, sizeof(buf)), 60);
	assert_int_equal(c.state, PORTMAP_REQUESTING);
	assert_false(pcp_client_mapped(&c));
	assert_memory_equal(buf, map_request, 60); /* a fresh request, no preference */
}

static void test_epoch(void **state)
{
	uint8_t buf[64], r[64];
	struct pcp_client c;

	(void)state;
	init(&c, 0);
	pcp_client_start(&c, 0);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 60);
	assert_int_equal(rx(&c, 0, r, response(r, PCP_SUCCESS, 120, 5000, 41641)), 1);
	assert_int_equal(pcp_client_tx(&c, pcp_client_deadline(&c), buf, sizeof(buf)), 60);
	/* The server's epoch went back: it restarted and lost its state (§8.5). */
	assert_int_equal(rx(&c, 70 * SEC, r, response(r, PCP_SUCCESS, 120, 10, 41641)), 1);
	assert_int_equal(c.epoch_resets, 1);
}

static void test_errors(void **state)
{
	uint8_t buf[64], r[64];
	struct pcp_client c;

	(void)state;
	init(&c, 0);
	pcp_client_start(&c, 0);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 60);
	/* §7.4: a short-lifetime error says when to ask again. */
	assert_int_equal(rx(&c, SEC, r, response(r, PCP_NO_RESOURCES, 100, 1, 0)), 1);
	assert_int_equal(c.state, PORTMAP_FAILED);
	assert_int_equal(c.last_result, PCP_NO_RESOURCES);
	assert_int_equal(pcp_client_deadline(&c), SEC + 100 * SEC);
	assert_int_equal(pcp_client_tx(&c, 101 * SEC, buf, sizeof(buf)), 60);
	/* ... clamped: a lifetime of 0 or of a day. */
	assert_int_equal(rx(&c, 102 * SEC, r, response(r, PCP_NOT_AUTHORIZED, 0, 2, 0)), 1);
	assert_int_equal(pcp_client_deadline(&c), 102 * SEC + PCP_RETRY_MIN_S * SEC);
	assert_int_equal(pcp_client_tx(&c, pcp_client_deadline(&c), buf, sizeof(buf)), 60);
	assert_int_equal(rx(&c, 200 * SEC, r, response(r, PCP_NOT_AUTHORIZED, 86400, 3, 0)), 1);
	assert_int_equal(pcp_client_deadline(&c), 200 * SEC + PCP_RETRY_MAX_S * SEC);

	/* A NAT-PMP gateway's "unsupported version" (RFC 6886 §3.5): fall back (§9). */
	init(&c, 0);
	pcp_client_start(&c, 0);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 60);
	{
		static const uint8_t natpmp[8] = {0, 0x81, 0, 1, 0, 0, 0, 9};

		assert_int_equal(rx(&c, 0, natpmp, sizeof(natpmp)), 1);
	}
	assert_int_equal(c.state, PORTMAP_UNSUPPORTED);
	assert_int_equal(pcp_client_deadline(&c), TIME_NEVER);
	assert_int_equal(pcp_client_tx(&c, 100 * SEC, buf, sizeof(buf)), 0);
}

static void test_delete(void **state)
{
	uint8_t buf[64], r[64];
	struct pcp_client c;
	unsigned i;

	(void)state;
	init(&c, 0);
	pcp_client_start(&c, 0);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 60);
	assert_int_equal(rx(&c, 0, r, response(r, PCP_SUCCESS, 120, 1, 40000)), 1);
	pcp_client_stop(&c, SEC);
	assert_int_equal(c.state, PORTMAP_DELETING);
	assert_int_equal(pcp_client_tx(&c, SEC, buf, sizeof(buf)), 60);
	/* §15: lifetime 0, same nonce, the mapping named by what we were given. */
	assert_int_equal(get_be32(buf + 4), 0);
	assert_memory_equal(buf + 24, nonce, 12);
	assert_int_equal(get_be16(buf + 40), 41641);
	assert_int_equal(get_be16(buf + 42), 40000);
	assert_memory_equal(buf + 44, ext, 16);
	assert_int_equal(rx(&c, 2 * SEC, r, response(r, PCP_SUCCESS, 0, 2, 40000)), 1);
	assert_int_equal(c.state, PORTMAP_IDLE);
	assert_int_equal(pcp_client_deadline(&c), TIME_NEVER);

	/* Unanswered: PCP_DELETE_TRIES transmissions, then idle. */
	pcp_client_start(&c, 0);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 60);
	assert_int_equal(rx(&c, 0, r, response(r, PCP_SUCCESS, 120, 3, 40000)), 1);
	pcp_client_stop(&c, SEC);
	for (i = 0; i < PCP_DELETE_TRIES; i++)
		assert_int_equal(pcp_client_tx(&c, pcp_client_deadline(&c), buf, sizeof(buf)), 60);
	assert_int_equal(pcp_client_tx(&c, pcp_client_deadline(&c), buf, sizeof(buf)), 0);
	assert_int_equal(c.state, PORTMAP_IDLE);

	/* Nothing held: stop sends nothing. */
	init(&c, 0);
	pcp_client_start(&c, 0);
	pcp_client_stop(&c, 0);
	assert_int_equal(c.state, PORTMAP_IDLE);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 0);
}

/*
 * An IPv6 client (RFC 6887 §11, the IPv6 firewall case, as miniupnpd serves it): the
 * client address is ours, the suggested external address all zeros (not ::ffff:0.0.0.0),
 * and a pinhole's external endpoint, our own address and port, is what renewal and
 * deletion name.
 */
static void test_ipv6_pinhole(void **state)
{
	static const uint8_t a6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, [15] = 2};
	struct pcp_client_cfg cfg = {.internal_port = 41641, .lifetime_s = 7200, .seed = 42};
	uint8_t buf[64], r[64], zero[16] = {0};
	struct pcp_client c;

	(void)state;
	memcpy(cfg.client_addr, a6, 16);
	memcpy(cfg.nonce, nonce, 12);
	pcp_client_init(&c, &cfg);
	pcp_client_start(&c, 0);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 60);
	assert_memory_equal(buf, map_request, 8);
	assert_memory_equal(buf + 8, a6, 16);
	assert_memory_equal(buf + 24, map_request + 24, 20); /* nonce, UDP, ports */
	assert_memory_equal(buf + 44, zero, 16);

	response(r, PCP_SUCCESS, 120, 1, 41641);
	memcpy(r + 44, a6, 16);
	assert_int_equal(rx(&c, SEC, r, PCP_MAP_MSG_LEN), 1);
	assert_true(pcp_client_mapped(&c));
	assert_memory_equal(c.map.ext_addr, a6, 16);
	assert_int_equal(c.map.ext_port, 41641);

	assert_int_equal(pcp_client_tx(&c, pcp_client_deadline(&c), buf, sizeof(buf)), 60);
	assert_int_equal(c.state, PORTMAP_RENEWING);
	assert_memory_equal(buf + 8, a6, 16);
	assert_memory_equal(buf + 44, a6, 16);
	pcp_client_stop(&c, 70 * SEC);
	assert_int_equal(pcp_client_tx(&c, 70 * SEC, buf, sizeof(buf)), 60);
	assert_int_equal(get_be32(buf + 4), 0);
	assert_int_equal(get_be16(buf + 42), 41641);
	assert_memory_equal(buf + 44, a6, 16);
}

static void test_bad_replies(void **state)
{
	uint8_t buf[64], r[1200];
	struct pcp_client c;
	size_t n;

	(void)state;
	init(&c, 0);
	/* Nothing outstanding. */
	assert_int_equal(rx(&c, 0, r, response(r, PCP_SUCCESS, 120, 1, 41641)), 0);
	assert_int_equal(c.drops.unexpected, 1);
	pcp_client_start(&c, 0);
	assert_int_equal(pcp_client_tx(&c, 0, buf, sizeof(buf)), 60);

	n = response(r, PCP_SUCCESS, 120, 1, 41641);
	assert_int_equal(rx(&c, 0, r, 0), 0);
	assert_int_equal(rx(&c, 0, r, 3), 0);
	assert_int_equal(rx(&c, 0, r, 59), 0); /* not a multiple of 4 */
	assert_int_equal(rx(&c, 0, r, 56), 0); /* a header, not a whole MAP */
	assert_int_equal(rx(&c, 0, r, 20), 0); /* less than a header */
	memset(r + 60, 0, 1104 - 60);
	assert_int_equal(rx(&c, 0, r, 1104), 0); /* longer than 1100 */
	assert_int_equal(c.drops.short_msg, 6);

	r[0] = 1;
	assert_int_equal(rx(&c, 0, r, n), 0);
	r[0] = 0; /* version 0 but not "unsupported version" */
	assert_int_equal(rx(&c, 0, r, n), 0);
	assert_int_equal(c.drops.version, 2);
	n = response(r, PCP_SUCCESS, 120, 1, 41641);
	r[1] = 0x01; /* a request, not a response */
	assert_int_equal(rx(&c, 0, r, n), 0);
	r[1] = 0x82; /* PEER */
	assert_int_equal(rx(&c, 0, r, n), 0);
	assert_int_equal(c.drops.opcode, 2);

	n = response(r, PCP_SUCCESS, 120, 1, 41641);
	r[24] ^= 1; /* another nonce: someone else's, or forged */
	assert_int_equal(rx(&c, 0, r, n), 0);
	n = response(r, PCP_SUCCESS, 120, 1, 41641);
	r[36] = 6; /* TCP */
	assert_int_equal(rx(&c, 0, r, n), 0);
	n = response(r, PCP_SUCCESS, 120, 1, 41641);
	put_be16(r + 40, 41642);
	assert_int_equal(rx(&c, 0, r, n), 0);
	assert_int_equal(c.drops.mismatch, 3);

	assert_int_equal(rx(&c, 0, r, response(r, PCP_SUCCESS, 120, 1, 0)), 0);
	assert_int_equal(rx(&c, 0, r, response(r, PCP_SUCCESS, 0, 1, 41641)), 0);
	assert_int_equal(c.drops.bad_field, 2);
	assert_int_equal(c.state, PORTMAP_REQUESTING);
	assert_int_equal(c.rx, 0);

	/* Options after the MAP payload are allowed and skipped. */
	n = response(r, PCP_SUCCESS, 120, 1, 41641);
	memset(r + n, 0, 8);
	r[n] = 0x80;
	put_be16(r + n + 2, 4);
	assert_int_equal(rx(&c, 0, r, n + 8), 1);
	assert_int_equal(c.state, PORTMAP_MAPPED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_request_bytes),    cmocka_unit_test(test_retransmit),
	    cmocka_unit_test(test_map_renew_expire), cmocka_unit_test(test_epoch),
	    cmocka_unit_test(test_errors),	     cmocka_unit_test(test_delete),
	    cmocka_unit_test(test_bad_replies),	     cmocka_unit_test(test_ipv6_pinhole),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
