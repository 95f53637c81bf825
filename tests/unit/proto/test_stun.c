/* SPDX-License-Identifier: MIT */
/*
 * STUN against the published vectors of RFC 5769 (sections 2.1-2.3), our own
 * messages through both parsers, and malformed messages refused. Every parse
 * reads from a heap copy of exactly the message's size, so AddressSanitizer
 * catches a read one byte past it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/stun.c"

/* RFC 5769 2.1: Binding request with SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MI, FINGERPRINT.
 */
static const uint8_t rfc_request[] = {
    0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74, 0x65, 0x73,
    0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x01, 0xff,
    0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36, 0x00, 0x06, 0x00, 0x09,
    0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20, 0x20, 0x00, 0x08, 0x00, 0x14,
    0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e, 0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49,
    0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5, 0x7a, 0x3b, 0xcf,
};

/* RFC 5769 2.2: success response, XOR-MAPPED-ADDRESS 192.0.2.1:32853. */
static const uint8_t rfc_v4[] = {
    0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
    0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3, 0x8c, 0x74, 0x89, 0xf9,
    0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00, 0x04, 0xc0, 0x7d, 0x4c, 0x96,
};

/* RFC 5769 2.3: success response, XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
 */
static const uint8_t rfc_v6[] = {
    0x01, 0x01, 0x00, 0x48, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86,
    0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76, 0x65, 0x63,
    0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa,
    0xa5, 0xd3, 0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9, 0x00, 0x08, 0x00, 0x14,
    0xa3, 0x82, 0x95, 0x4e, 0x4b, 0xe6, 0x7b, 0xf1, 0x17, 0x84, 0xc9, 0x7c, 0x82, 0x92, 0xc2, 0x75,
    0xbf, 0xe3, 0xed, 0x41, 0x80, 0x28, 0x00, 0x04, 0xc8, 0xfb, 0x0b, 0x4c,
};

static const uint8_t rfc_txid[12] = {0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34,
				     0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae};

/* Parses a heap copy of exactly len bytes. */
static int response(const uint8_t *p, size_t len, uint8_t *txid, struct endpoint *ep)
{
	uint8_t *copy = malloc(len ? len : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, p, len);
	r = stun_binding_response_parse(copy, len, txid, ep);
	free(copy);
	return r;
}

static int request(const uint8_t *p, size_t len, struct stun_request *req)
{
	uint8_t *copy = malloc(len ? len : 1);
	int r;

	assert_non_null(copy);
	memcpy(copy, p, len);
	r = stun_binding_request_parse(req, copy, len);
	free(copy);
	return r;
}

static void assert_endpoint(const struct endpoint *ep, const char *text)
{
	char buf[ENDPOINT_STR_MAX];

	assert_string_equal(endpoint_format(ep, buf, sizeof(buf)), text);
}

static void test_crc32(void **state)
{
	(void)state;
	/* The CRC-32 check value (ISO 3309 / ITU-T V.42). */
	assert_int_equal(crc32((const uint8_t *)"123456789", 9), 0xcbf43926);
	assert_int_equal(crc32(NULL, 0), 0);
}

static void test_rfc5769_ipv4(void **state)
{
	struct endpoint ep;
	uint8_t txid[12], m[sizeof(rfc_v4)];

	(void)state;
	assert_true(stun_is(rfc_v4, sizeof(rfc_v4)));
	assert_int_equal(response(rfc_v4, sizeof(rfc_v4), txid, &ep), 0);
	assert_memory_equal(txid, rfc_txid, 12);
	assert_endpoint(&ep, "192.0.2.1:32853");
	/* The FINGERPRINT is checked: one bit of SOFTWARE changed and the message is refused. */
	memcpy(m, rfc_v4, sizeof(m));
	m[24] ^= 0x20;
	assert_int_equal(response(m, sizeof(m), txid, &ep), -EBADMSG);
}

static void test_rfc5769_ipv6(void **state)
{
	struct endpoint ep;
	uint8_t txid[12];

	(void)state;
	assert_int_equal(response(rfc_v6, sizeof(rfc_v6), txid, &ep), 0);
	assert_memory_equal(txid, rfc_txid, 12);
	assert_endpoint(&ep, "[2001:db8:1234:5678:11:2233:4455:6677]:32853");
}

/* The request vector carries PRIORITY (0x0024, ICE): a plain Binding server answers 420. */
static void test_rfc5769_request(void **state)
{
	uint8_t buf[128], txid[12];
	struct stun_request req;
	struct endpoint ep;
	int len;

	(void)state;
	assert_int_equal(request(rfc_request, sizeof(rfc_request), &req), 0);
	assert_memory_equal(req.txid, rfc_txid, 12);
	assert_int_equal(req.n_unknown, 1);
	assert_int_equal(req.unknown[0], 0x0024);
	/* Not a response. */
	assert_int_equal(response(rfc_request, sizeof(rfc_request), txid, &ep), -EPROTO);
	assert_int_equal(request(rfc_v4, sizeof(rfc_v4), &req), -EPROTO);

	assert_int_equal(request(rfc_request, sizeof(rfc_request), &req), 0);
	len = stun_error_response_build(buf, sizeof(buf), &req, 420, true);
	/* header, ERROR-CODE (4 + "Unknown Attribute" padded to 20), UNKNOWN-ATTRIBUTES,
	 * FINGERPRINT */
	assert_int_equal(len, 20 + 4 + 24 + 4 + 4 + 8);
	assert_true(stun_is(buf, (size_t)len));
	static const uint8_t want[] = {
	    0x01, 0x11, 0x00, 0x2c, 0x21, 0x12, 0xa4, 0x42, /* error response, length 44 */
	    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87,
	    0xdf, 0xae, 0x00, 0x09, 0x00, 0x15, 0x00, 0x00, 0x04, 0x14, /* ERROR-CODE 420 */
	    'U',  'n',	'k',  'n',  'o',  'w',	'n',  ' ',  'A',  't',
	    't',  'r',	'i',  'b',  'u',  't',	'e',  0x00, 0x00, 0x00,
	    0x00, 0x0a, 0x00, 0x02, 0x00, 0x24, 0x00, 0x00, /* UNKNOWN-ATTRIBUTES: PRIORITY */
	    0x80, 0x28, 0x00, 0x04,
	};
	assert_memory_equal(buf, want, sizeof(want));
	/* Our own FINGERPRINT passes our own check (the walk is the same as for responses). */
	assert_int_equal(walk(&(struct walk){0}, buf, (size_t)len), 0);
	assert_int_equal(response(buf, (size_t)len, txid, &ep), -EPROTO);

	assert_int_equal(stun_error_response_build(buf, sizeof(buf), &req, 299, false), -EINVAL);
	assert_int_equal(stun_error_response_build(buf, 40, &req, 420, true), -ENOBUFS);
	len = stun_error_response_build(buf, sizeof(buf), &req, 400, false);
	assert_int_equal(len, 20 + 4 + 16);
}

static void test_request_build(void **state)
{
	static const uint8_t txid[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
	struct stun_request req;
	uint8_t buf[64];
	int len;

	(void)state;
	len = stun_binding_request_build(buf, sizeof(buf), txid, false);
	assert_int_equal(len, 20);
	assert_memory_equal(buf, ((uint8_t[]){0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42}), 8);
	assert_memory_equal(buf + 8, txid, 12);
	assert_int_equal(request(buf, (size_t)len, &req), 0);
	assert_memory_equal(req.txid, txid, 12);
	assert_int_equal(req.n_unknown, 0);

	len = stun_binding_request_build(buf, sizeof(buf), txid, true);
	assert_int_equal(len, 28);
	assert_true(stun_is(buf, 28));
	assert_int_equal(get_be16(buf + 2), 8);
	assert_int_equal(get_be16(buf + 20), 0x8028);
	assert_int_equal(get_be32(buf + 24), crc32(buf, 20) ^ 0x5354554e);
	assert_int_equal(request(buf, (size_t)len, &req), 0);
	buf[27] ^= 1;
	assert_int_equal(request(buf, (size_t)len, &req), -EBADMSG);

	assert_int_equal(stun_binding_request_build(buf, 27, txid, true), -ENOBUFS);
	assert_int_equal(stun_binding_request_build(buf, 19, txid, false), -ENOBUFS);
	assert_int_equal(stun_binding_request_build(buf, STUN_REQUEST_MAX, txid, true), 28);
}

static void test_response_build(void **state)
{
	static const char *addrs[] = {"192.0.2.1:32853",
				      "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
				      "203.0.113.9:1", "[2001:db8::1]:65535"};
	static char software[STUN_SOFTWARE_MAX + 2];
	uint8_t buf[STUN_RESPONSE_MAX], txid[12];
	struct endpoint ep, got;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(addrs); i++) {
		for (int fp = 0; fp < 2; fp++) {
			for (int sw = 0; sw < 3; sw++) {
				const char *s = sw == 0 ? NULL : sw == 1 ? "trellis" : software;
				int len;

				memset(software, 'x', STUN_SOFTWARE_MAX);
				assert_int_equal(endpoint_parse(&ep, addrs[i]), 0);
				len = stun_binding_response_build(buf, sizeof(buf), rfc_txid, &ep,
								  s, fp);
				assert_true(len >= 32);
				assert_int_equal(len % 4, 0);
				assert_int_equal(response(buf, (size_t)len, txid, &got), 0);
				assert_memory_equal(txid, rfc_txid, 12);
				assert_true(endpoint_equal(&got, &ep));
				assert_int_equal(stun_binding_response_build(buf, (size_t)len - 1,
									     rfc_txid, &ep, s, fp),
						 -ENOBUFS);
			}
		}
	}
	/* The attribute we write for the RFC's address is the RFC's, byte for byte. */
	assert_int_equal(endpoint_parse(&ep, "192.0.2.1:32853"), 0);
	assert_int_equal(stun_binding_response_build(buf, sizeof(buf), rfc_txid, &ep, NULL, false),
			 32);
	assert_memory_equal(buf + 20, rfc_v4 + 36, 12);
	assert_int_equal(endpoint_parse(&ep, "[2001:db8:1234:5678:11:2233:4455:6677]:32853"), 0);
	assert_int_equal(stun_binding_response_build(buf, sizeof(buf), rfc_txid, &ep, NULL, false),
			 44);
	assert_memory_equal(buf + 20, rfc_v6 + 36, 24);
	/* SOFTWARE over 763 bytes, no address family. */
	software[STUN_SOFTWARE_MAX] = 'x';
	assert_int_equal(
	    stun_binding_response_build(buf, sizeof(buf), rfc_txid, &ep, software, true), -EINVAL);
	memset(&ep, 0, sizeof(ep));
	assert_int_equal(stun_binding_response_build(buf, sizeof(buf), rfc_txid, &ep, NULL, true),
			 -EINVAL);
}

/* Every prefix of a valid message is refused, and read within its bounds. */
static void test_truncated(void **state)
{
	const uint8_t *msgs[] = {rfc_v4, rfc_v6, rfc_request};
	size_t lens[] = {sizeof(rfc_v4), sizeof(rfc_v6), sizeof(rfc_request)};
	struct stun_request req;
	struct endpoint ep;
	uint8_t txid[12];

	(void)state;
	for (size_t m = 0; m < ARRAY_SIZE(msgs); m++) {
		for (size_t len = 0; len < lens[m]; len++) {
			assert_false(stun_is(msgs[m], len));
			assert_int_equal(response(msgs[m], len, txid, &ep), -EBADMSG);
			assert_int_equal(request(msgs[m], len, &req), -EBADMSG);
		}
	}
}

/* A response with the RFC's header and txid around the given attributes. */
static size_t make(uint8_t *buf, uint16_t type, const uint8_t *attrs, size_t len)
{
	memcpy(buf, rfc_v4, 20);
	put_be16(buf, type);
	put_be16(buf + 2, (uint16_t)len);
	memcpy(buf + 20, attrs, len);
	return 20 + len;
}

static void test_malformed(void **state)
{
	static const struct {
		const char *what;
		uint8_t attrs[40];
		size_t len;
		int want;
		bool in_address; /* a bad address value: only a response looks at it */
	} cases[] = {
	    {"lying attribute length",
	     {0x00, 0x20, 0x01, 0x00, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43},
	     12,
	     -EBADMSG},
	    {"length one past the end",
	     {0x00, 0x20, 0x00, 0x09, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43},
	     12,
	     -EBADMSG},
	    {"missing padding", {0x80, 0x22, 0x00, 0x05, 'a', 'b', 'c', 'd'}, 8, -EBADMSG},
	    {"wrong family",
	     {0x00, 0x20, 0x00, 0x08, 0x00, 0x03, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43},
	     12,
	     -EBADMSG,
	     true},
	    {"IPv4 with 16 bytes",
	     {0x00, 0x20, 0x00, 0x14, 0x00, 0x01, 0xa1, 0x47, [24 - 1] = 0},
	     24,
	     -EBADMSG,
	     true},
	    {"IPv6 with 4 bytes",
	     {0x00, 0x20, 0x00, 0x08, 0x00, 0x02, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43},
	     12,
	     -EBADMSG,
	     true},
	    {"address too short",
	     {0x00, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00},
	     8,
	     -EBADMSG,
	     true},
	    {"FINGERPRINT not last",
	     {0x80, 0x28, 0x00, 0x04, 0, 0, 0, 0, 0x80, 0x22, 0x00, 0x00},
	     12,
	     -EBADMSG},
	    {"FINGERPRINT of 8 bytes",
	     {0x80, 0x28, 0x00, 0x08, 0, 0, 0, 0, 0, 0, 0, 0},
	     12,
	     -EBADMSG},
	    {"no address", {0x80, 0x22, 0x00, 0x03, 'a', 'b', 'c', 0}, 8, -ENOENT},
	    {"unknown comprehension-required",
	     {0x00, 0x24, 0x00, 0x04, 0,    0,	  0,	1,    0x00, 0x20,
	      0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43},
	     20,
	     -ENOTSUP},
	    /* Section 14.5: what follows MESSAGE-INTEGRITY is ignored, an address too. */
	    {"address after MESSAGE-INTEGRITY",
	     {0x00, 0x08, 0x00, 0x14, [24] = 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
	      0x12, 0xa6, 0x43},
	     36,
	     -ENOENT},
	    /* Unknown but comprehension-optional: ignored. */
	    {"unknown optional",
	     {0xc0, 0x57, 0x00, 0x01, 0xff, 0,	  0,	0,    0x00, 0x20,
	      0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43},
	     20,
	     0},
	    /* Padding content is ignored (section 14); only the first XOR-MAPPED-ADDRESS counts. */
	    {"two addresses",
	     {0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
	      0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0,	0,    0,    0,	  0,	0},
	     24,
	     0},
	    /* Plain MAPPED-ADDRESS (not XORed) when there is no XOR-MAPPED-ADDRESS. */
	    {"MAPPED-ADDRESS",
	     {0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x80, 0x55, 0xc0, 0x00, 0x02, 0x01},
	     12,
	     0},
	};
	uint8_t buf[128], txid[12];
	struct stun_request req;
	struct endpoint ep;
	size_t len;

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int r;

		len = make(buf, STUN_BINDING_SUCCESS, cases[i].attrs, cases[i].len);
		r = response(buf, len, txid, &ep);
		if (r != cases[i].want)
			fail_msg("%s: %d, want %d", cases[i].what, r, cases[i].want);
		if (r == 0)
			assert_endpoint(&ep, "192.0.2.1:32853");
		/* The request parser walks the same attributes. */
		put_be16(buf, STUN_BINDING_REQUEST);
		r = request(buf, len, &req);
		if (cases[i].want == -EBADMSG && !cases[i].in_address)
			assert_int_equal(r, -EBADMSG);
		else
			assert_int_equal(r, 0);
	}

	/* Header: top bits, cookie, length not a multiple of 4, length vs datagram. */
	len = make(buf, STUN_BINDING_SUCCESS, cases[14].attrs, cases[14].len);
	assert_int_equal(response(buf, len, txid, &ep), 0);
	buf[0] |= 0x40;
	assert_int_equal(response(buf, len, txid, &ep), -EBADMSG);
	buf[0] &= 0x3f;
	buf[4] ^= 1;
	assert_int_equal(response(buf, len, txid, &ep), -EBADMSG);
	buf[4] ^= 1;
	assert_int_equal(response(buf, len + 4, txid, &ep), -EBADMSG); /* trailing bytes */
	put_be16(buf + 2, 13);
	buf[len] = 0;
	assert_int_equal(response(buf, 33, txid, &ep), -EBADMSG);
	put_be16(buf + 2, 12);
	/* An error response, a Binding indication, another method. */
	put_be16(buf, STUN_BINDING_ERROR);
	assert_int_equal(response(buf, len, txid, &ep), -EPROTO);
	put_be16(buf, 0x0011);
	assert_int_equal(response(buf, len, txid, &ep), -EPROTO);
	assert_int_equal(request(buf, len, &req), -EPROTO);
	put_be16(buf, 0x0103);
	assert_int_equal(response(buf, len, txid, &ep), -EPROTO);
	/* A WireGuard initiation is not STUN. */
	memset(buf, 0, sizeof(buf));
	buf[0] = 1;
	assert_false(stun_is(buf, sizeof(buf)));
}

/* The unknown-attribute list is bounded; more are still refused as a whole. */
static void test_many_unknown(void **state)
{
	uint8_t attrs[40], buf[128], txid[12];
	struct stun_request req;
	struct endpoint ep;
	size_t len;

	(void)state;
	for (int i = 0; i < 10; i++) {
		put_be16(attrs + 4 * i, (uint16_t)(0x0030 + i));
		put_be16(attrs + 4 * i + 2, 0);
	}
	len = make(buf, STUN_BINDING_REQUEST, attrs, sizeof(attrs));
	assert_int_equal(request(buf, len, &req), 0);
	assert_int_equal(req.n_unknown, STUN_UNKNOWN_MAX);
	assert_int_equal(req.unknown[3], 0x0033);
	put_be16(buf, STUN_BINDING_SUCCESS);
	assert_int_equal(response(buf, len, txid, &ep), -ENOTSUP);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_crc32),	  cmocka_unit_test(test_rfc5769_ipv4),
	    cmocka_unit_test(test_rfc5769_ipv6),  cmocka_unit_test(test_rfc5769_request),
	    cmocka_unit_test(test_request_build), cmocka_unit_test(test_response_build),
	    cmocka_unit_test(test_truncated),	  cmocka_unit_test(test_malformed),
	    cmocka_unit_test(test_many_unknown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
