/* SPDX-License-Identifier: MIT */
/*
 * Disco messages: each type through seal and open, and what must not open: another
 * key, any flipped byte, a cut datagram, an unknown type or version, a bad length.
 * Opens read from a heap copy of exactly the datagram, so AddressSanitizer catches a
 * read past it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "disco/msg.c"

static uint8_t priv_a[32], pub_a[32], priv_b[32], pub_b[32], shared_ab[32];

static int setup(void **state)
{
	uint8_t shared_ba[32];

	(void)state;
	assert_int_equal(x25519_private_generate(priv_a), 0);
	assert_int_equal(x25519_public_from_private(pub_a, priv_a), 0);
	assert_int_equal(x25519_private_generate(priv_b), 0);
	assert_int_equal(x25519_public_from_private(pub_b, priv_b), 0);
	assert_int_equal(disco_msg_shared(shared_ab, priv_a, pub_b), 0);
	assert_int_equal(disco_msg_shared(shared_ba, priv_b, pub_a), 0);
	assert_memory_equal(shared_ab, shared_ba, 32);
	return 0;
}

/* Opens a heap copy of exactly len bytes. */
static int open_copy(struct disco_msg *m, const uint8_t *d, size_t len, const uint8_t *key)
{
	uint8_t *c = malloc(len ? len : 1);
	int r;

	assert_non_null(c);
	memcpy(c, d, len);
	r = disco_msg_open(m, c, len, key);
	free(c);
	return r;
}

static void ep4(struct endpoint *ep, const char *s)
{
	assert_int_equal(endpoint_parse(ep, s), 0);
}

static void test_ping_roundtrip(void **state)
{
	struct disco_msg m = {.type = DISCO_PING}, o;
	uint8_t buf[DISCO_MSG_MAX];
	int len;

	(void)state;
	memset(m.txid, 0xab, sizeof(m.txid));
	memset(m.node_key, 0x42, sizeof(m.node_key));
	len = disco_msg_seal(buf, sizeof(buf), &m, pub_a, shared_ab);
	assert_int_equal(len, DISCO_HEADER_LEN + DISCO_PING_LEN + DISCO_TAG_LEN);
	/* What the wire carries: the magic and our key in clear, nothing else. */
	assert_memory_equal(buf, DISCO_MAGIC, DISCO_MAGIC_LEN);
	assert_memory_equal(buf + DISCO_MAGIC_LEN, pub_a, 32);
	assert_ptr_equal(disco_msg_sender(buf, (size_t)len), buf + DISCO_MAGIC_LEN);
	assert_null(memmem(buf + DISCO_HEADER_LEN, (size_t)len - DISCO_HEADER_LEN, m.node_key, 8));
	assert_int_equal(open_copy(&o, buf, (size_t)len, shared_ab), 0);
	assert_int_equal(o.type, DISCO_PING);
	assert_memory_equal(o.txid, m.txid, DISCO_TXID_LEN);
	assert_memory_equal(o.node_key, m.node_key, 32);
}

static void test_pong_roundtrip(void **state)
{
	struct disco_msg m = {.type = DISCO_PONG}, o;
	const char *addrs[] = {"198.51.100.7:41641", "[2001:db8::1]:3478"};
	uint8_t buf[DISCO_MSG_MAX];
	int len;

	(void)state;
	for (unsigned i = 0; i < 2; i++) {
		memset(m.txid, (int)i + 1, sizeof(m.txid));
		ep4(&m.observed, addrs[i]);
		len = disco_msg_seal(buf, sizeof(buf), &m, pub_a, shared_ab);
		assert_int_equal(len, DISCO_HEADER_LEN + DISCO_PONG_LEN + DISCO_TAG_LEN);
		assert_int_equal(open_copy(&o, buf, (size_t)len, shared_ab), 0);
		assert_int_equal(o.type, DISCO_PONG);
		assert_memory_equal(o.txid, m.txid, DISCO_TXID_LEN);
		assert_true(endpoint_equal(&o.observed, &m.observed));
	}
	/* A pong must name an address. */
	memset(&m.observed, 0, sizeof(m.observed));
	assert_int_equal(disco_msg_seal(buf, sizeof(buf), &m, pub_a, shared_ab), -EINVAL);
}

static void test_cmm_roundtrip(void **state)
{
	struct disco_msg m = {.type = DISCO_CALL_ME_MAYBE}, o;
	uint8_t buf[DISCO_MSG_MAX];
	char s[64];
	int len;

	(void)state;
	for (unsigned n = 0; n <= DISCO_CANDIDATES_MAX; n += 4) {
		m.n_candidates = n;
		for (unsigned i = 0; i < n; i++) {
			snprintf(s, sizeof(s), i & 1 ? "[2001:db8::%u]:%u" : "203.0.113.%u:%u",
				 i + 1, 1000 + i);
			ep4(&m.candidates[i], s);
		}
		len = disco_msg_seal(buf, sizeof(buf), &m, pub_a, shared_ab);
		assert_int_equal(len, DISCO_HEADER_LEN + 2 + n * DISCO_ADDR_LEN + DISCO_TAG_LEN);
		assert_int_equal(open_copy(&o, buf, (size_t)len, shared_ab), 0);
		assert_int_equal(o.type, DISCO_CALL_ME_MAYBE);
		assert_int_equal(o.n_candidates, n);
		for (unsigned i = 0; i < n; i++)
			assert_true(endpoint_equal(&o.candidates[i], &m.candidates[i]));
	}
	m.n_candidates = DISCO_CANDIDATES_MAX + 1;
	assert_int_equal(disco_msg_seal(buf, sizeof(buf), &m, pub_a, shared_ab), -EINVAL);
	m.n_candidates = DISCO_CANDIDATES_MAX;
	assert_int_equal(disco_msg_seal(buf, DISCO_MSG_MAX - 1, &m, pub_a, shared_ab), -ENOBUFS);
}

/* Another key, every flipped byte and every cut: -EBADMSG, and *ret untouched. */
static void test_refused(void **state)
{
	struct disco_msg m = {.type = DISCO_PING}, o;
	uint8_t buf[DISCO_MSG_MAX], other[32], sentinel[sizeof(o)];
	int len;

	(void)state;
	len = disco_msg_seal(buf, sizeof(buf), &m, pub_a, shared_ab);
	assert_true(len > 0);
	memset(other, 7, sizeof(other));
	memset(&o, 0x5a, sizeof(o));
	memcpy(sentinel, &o, sizeof(o));
	assert_int_equal(open_copy(&o, buf, (size_t)len, other), -EBADMSG);
	for (int i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		assert_int_equal(open_copy(&o, buf, (size_t)len, shared_ab), -EBADMSG);
		buf[i] ^= 0x01;
	}
	for (int i = 0; i < len; i++)
		assert_int_equal(open_copy(&o, buf, (size_t)i, shared_ab), -EBADMSG);
	assert_memory_equal(&o, sentinel, sizeof(o));
	assert_null(disco_msg_sender(buf, DISCO_MIN_LEN - 1));
}

/* Authentic boxes that say nothing we know: -EPROTO. */
static void test_malformed(void **state)
{
	struct {
		uint8_t plain[8];
		size_t len;
	} cases[] = {
	    {{9, 0}, 2},		      /* unknown type */
	    {{DISCO_PING, 1}, 2},	      /* unknown version */
	    {{DISCO_PING, 0}, 2},	      /* ping without body */
	    {{DISCO_PONG, 0, 1, 2}, 4},	      /* short pong */
	    {{DISCO_CALL_ME_MAYBE, 0, 1}, 3}, /* a candidate cut short */
	    {{DISCO_PING}, 1},		      /* no version */
	};
	uint8_t buf[DISCO_MSG_MAX];
	struct disco_header *h = (struct disco_header *)buf;
	struct disco_msg o;

	(void)state;
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(h->magic, DISCO_MAGIC, DISCO_MAGIC_LEN);
		memcpy(h->sender_key, pub_a, 32);
		memset(h->nonce, (int)i, sizeof(h->nonce));
		assert_int_equal(xchacha20poly1305_encrypt(buf + DISCO_HEADER_LEN, cases[i].plain,
							   cases[i].len, buf, DISCO_HEADER_LEN,
							   h->nonce, shared_ab),
				 0);
		assert_int_equal(
		    open_copy(&o, buf, DISCO_HEADER_LEN + cases[i].len + DISCO_TAG_LEN, shared_ab),
		    -EPROTO);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ping_roundtrip), cmocka_unit_test(test_pong_roundtrip),
	    cmocka_unit_test(test_cmm_roundtrip),  cmocka_unit_test(test_refused),
	    cmocka_unit_test(test_malformed),
	};

	assert_int_equal(crypto_init(), 0);
	return cmocka_run_group_tests(tests, setup, NULL);
}
