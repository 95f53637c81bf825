/* SPDX-License-Identifier: MIT */
/*
 * Noise_IK: the cacophony test vector for Noise_IK_25519_ChaChaPoly_BLAKE2s
 * (vectors/cacophony.txt, as also used by snow), both roles against each other,
 * and the failures: tampering, a wrong responder key, replayed or reordered
 * transport messages, nonce exhaustion.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"
#include "crypto/noise_ik.h"

static size_t unhex(uint8_t *out, const char *hex)
{
	size_t n = strlen(hex) / 2, i;

	for (i = 0; i < n; i++) {
		unsigned int v;

		sscanf(hex + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
	return n;
}

/* Noise_IK_25519_ChaChaPoly_BLAKE2s from cacophony's vectors. */
static const char *v_prologue = "4a6f686e2047616c74";
static const char *v_init_static = "e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1";
static const char *v_init_ephemeral =
	"893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a";
static const char *v_resp_static = "4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893";
static const char *v_resp_ephemeral =
	"bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b";
static const char *v_remote_static = "31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62";
static const struct {
	const char *payload;
	const char *ciphertext;
} v_msgs[] = {
	{"4c756477696720766f6e204d69736573",
	 "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c79440b03ddc7aac5123d06a1b23b"
	 "71670e32e76c28239a7ca4ac8f784de7e44c1adbfc6e83fef7352a58d9d56157400c0a737b1d171ce368229c"
	 "7b752ac25b8faf4eca690f6d896f543be02c996ab2b86b76"},
	{"4d757272617920526f746862617264",
	 "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843d9b5a8927f0ac9655ef76833"
	 "bc7e5561f42e691ac8404efd6fbd6308b6a27c"},
	{"462e20412e20486179656b", "2c256ed08fcd08c2980f954ee4beaccb61c9581340f5dd2fd1cf3b"},
	{"4361726c204d656e676572", "d6033f70eee20945c7c9dba304e397ee3b284ff5e00fd9efb095d3"},
	{"4a65616e2d426170746973746520536179",
	 "a9c068ca5d8babf72560652d8e851adbfac35c8a66e810d560863173e96adf4cfe"},
	{"457567656e2042f6686d20766f6e2042617765726b",
	 "2a09d8f459e5927e40fdd2eddc99bdafb04e13a26f145cb5cfe9e6ba34c94331ebc17d5156"},
};

static void test_vector(void **state)
{
	struct noise_ik ini, res;
	struct noise_cipher itx, irx, rtx, rrx;
	uint8_t pro[16], is[32], ie[32], rs[32], re[32], rpub[32], got_rs[32], ipub[32];
	uint8_t pay[64], ct[256], out[256], buf[256];
	size_t pro_len, pay_len, ct_len, i;
	int n;

	(void)state;
	pro_len = unhex(pro, v_prologue);
	unhex(is, v_init_static);
	unhex(ie, v_init_ephemeral);
	unhex(rs, v_resp_static);
	unhex(re, v_resp_ephemeral);
	unhex(rpub, v_remote_static);
	assert_int_equal(x25519_public_from_private(got_rs, rs), 0);
	assert_memory_equal(got_rs, rpub, 32);

	assert_int_equal(noise_ik_init_initiator(&ini, is, rpub, pro, pro_len), 0);
	assert_int_equal(noise_ik_set_ephemeral_for_test(&ini, ie), 0);
	assert_int_equal(noise_ik_init_responder(&res, rs, pro, pro_len), 0);
	assert_int_equal(noise_ik_set_ephemeral_for_test(&res, re), 0);

	/* message 1 */
	pay_len = unhex(pay, v_msgs[0].payload);
	ct_len = unhex(ct, v_msgs[0].ciphertext);
	n = noise_ik_write_message1(&ini, out, sizeof(out), pay, pay_len);
	assert_int_equal(n, (int)ct_len);
	assert_memory_equal(out, ct, ct_len);
	n = noise_ik_read_message1(&res, out, (size_t)n, buf, sizeof(buf));
	assert_int_equal(n, (int)pay_len);
	assert_memory_equal(buf, pay, pay_len);
	assert_int_equal(noise_ik_remote_static(&res, got_rs), 0);
	assert_int_equal(x25519_public_from_private(ipub, is), 0);
	assert_memory_equal(got_rs, ipub, 32);

	/* message 2 */
	pay_len = unhex(pay, v_msgs[1].payload);
	ct_len = unhex(ct, v_msgs[1].ciphertext);
	n = noise_ik_write_message2(&res, out, sizeof(out), pay, pay_len);
	assert_int_equal(n, (int)ct_len);
	assert_memory_equal(out, ct, ct_len);
	n = noise_ik_read_message2(&ini, out, (size_t)n, buf, sizeof(buf));
	assert_int_equal(n, (int)pay_len);
	assert_memory_equal(buf, pay, pay_len);

	assert_int_equal(noise_ik_split(&ini, &itx, &irx), 0);
	assert_int_equal(noise_ik_split(&res, &rtx, &rrx), 0);

	/* transport: initiator and responder alternate, initiator first */
	for (i = 2; i < sizeof(v_msgs) / sizeof(v_msgs[0]); i++) {
		bool from_ini = (i % 2) == 0;

		pay_len = unhex(pay, v_msgs[i].payload);
		ct_len = unhex(ct, v_msgs[i].ciphertext);
		n = noise_cipher_encrypt(from_ini ? &itx : &rtx, out, pay, pay_len);
		assert_int_equal(n, (int)ct_len);
		assert_memory_equal(out, ct, ct_len);
		n = noise_cipher_decrypt(from_ini ? &rrx : &irx, buf, out, ct_len);
		assert_int_equal(n, (int)pay_len);
		assert_memory_equal(buf, pay, pay_len);
	}
	noise_cipher_clear(&itx);
	noise_cipher_clear(&irx);
	noise_cipher_clear(&rtx);
	noise_cipher_clear(&rrx);
}

struct pair {
	uint8_t ipriv[32], ipub[32], rpriv[32], rpub[32];
	struct noise_ik ini, res;
};

static void pair_init(struct pair *p)
{
	assert_int_equal(x25519_private_generate(p->ipriv), 0);
	assert_int_equal(x25519_public_from_private(p->ipub, p->ipriv), 0);
	assert_int_equal(x25519_private_generate(p->rpriv), 0);
	assert_int_equal(x25519_public_from_private(p->rpub, p->rpriv), 0);
	assert_int_equal(noise_ik_init_initiator(&p->ini, p->ipriv, p->rpub, "pro", 3), 0);
	assert_int_equal(noise_ik_init_responder(&p->res, p->rpriv, "pro", 3), 0);
}

static void handshake(struct pair *p, struct noise_cipher c[4])
{
	uint8_t m[256], k[32];
	int n;

	n = noise_ik_write_message1(&p->ini, m, sizeof(m), NULL, 0);
	assert_int_equal(n, NOISE_IK_MSG1_LEN(0));
	assert_int_equal(noise_ik_read_message1(&p->res, m, (size_t)n, NULL, 0), 0);
	assert_int_equal(noise_ik_remote_static(&p->res, k), 0);
	assert_memory_equal(k, p->ipub, 32);
	n = noise_ik_write_message2(&p->res, m, sizeof(m), NULL, 0);
	assert_int_equal(n, NOISE_IK_MSG2_LEN(0));
	assert_int_equal(noise_ik_read_message2(&p->ini, m, (size_t)n, NULL, 0), 0);
	assert_int_equal(noise_ik_split(&p->ini, &c[0], &c[1]), 0);
	assert_int_equal(noise_ik_split(&p->res, &c[2], &c[3]), 0);
}

static void test_roundtrip(void **state)
{
	struct pair p;
	struct noise_cipher c[4];
	uint8_t a[100], b[100], msg[10];
	int i;

	(void)state;
	pair_init(&p);
	handshake(&p, c);
	for (i = 0; i < 50; i++) {
		memset(msg, i, sizeof(msg));
		/* initiator -> responder */
		assert_int_equal(noise_cipher_encrypt(&c[0], a, msg, sizeof(msg)), 26);
		assert_int_equal(noise_cipher_decrypt(&c[3], b, a, 26), 10);
		assert_memory_equal(b, msg, 10);
		/* responder -> initiator, in place */
		memcpy(a, msg, 10);
		assert_int_equal(noise_cipher_encrypt(&c[2], a, a, 10), 26);
		assert_int_equal(noise_cipher_decrypt(&c[1], a, a, 26), 10);
		assert_memory_equal(a, msg, 10);
	}
}

static void test_replay_and_reorder(void **state)
{
	struct pair p;
	struct noise_cipher c[4];
	uint8_t m0[32], m1[32], out[32], msg[8] = "abcdefg";

	(void)state;
	pair_init(&p);
	handshake(&p, c);
	assert_int_equal(noise_cipher_encrypt(&c[0], m0, msg, 8), 24);
	assert_int_equal(noise_cipher_encrypt(&c[0], m1, msg, 8), 24);
	/* out of order */
	assert_int_equal(noise_cipher_decrypt(&c[3], out, m1, 24), -EBADMSG);
	assert_int_equal(noise_cipher_decrypt(&c[3], out, m0, 24), 8);
	/* replay */
	assert_int_equal(noise_cipher_decrypt(&c[3], out, m0, 24), -EBADMSG);
	assert_int_equal(noise_cipher_decrypt(&c[3], out, m1, 24), 8);
	/* wrong direction: own key */
	assert_int_equal(noise_cipher_encrypt(&c[0], m0, msg, 8), 24);
	assert_int_equal(noise_cipher_decrypt(&c[1], out, m0, 24), -EBADMSG);
	/* short */
	assert_int_equal(noise_cipher_decrypt(&c[3], out, m0, 15), -EBADMSG);
	/* exhausted nonce */
	c[0].n = UINT64_MAX;
	assert_int_equal(noise_cipher_encrypt(&c[0], m0, msg, 8), -EOVERFLOW);
	c[3].n = UINT64_MAX;
	assert_int_equal(noise_cipher_decrypt(&c[3], out, m0, 24), -EOVERFLOW);
	c[0].n = UINT64_MAX - 1;
	assert_int_equal(noise_cipher_encrypt(&c[0], m0, msg, 8), 24);
	assert_int_equal(noise_cipher_encrypt(&c[0], m0, msg, 8), -EOVERFLOW);
}

static void test_tamper(void **state)
{
	uint8_t m[256], m2[256];
	size_t i;
	int n, n2;

	(void)state;
	/* every byte of message 1 matters */
	for (i = 0; i < NOISE_IK_MSG1_LEN(4); i += 7) {
		struct pair p;

		pair_init(&p);
		n = noise_ik_write_message1(&p.ini, m, sizeof(m), (const uint8_t *)"hi!!", 4);
		assert_int_equal(n, NOISE_IK_MSG1_LEN(4));
		m[i] ^= 0x01;
		assert_int_equal(noise_ik_read_message1(&p.res, m, (size_t)n, m2, sizeof(m2)),
				 -EBADMSG);
		/* a failed handshake stays failed */
		assert_int_equal(noise_ik_write_message2(&p.res, m2, sizeof(m2), NULL, 0), -EINVAL);
	}
	/* truncated message 1 */
	{
		struct pair p;

		pair_init(&p);
		n = noise_ik_write_message1(&p.ini, m, sizeof(m), NULL, 0);
		assert_int_equal(noise_ik_read_message1(&p.res, m, (size_t)n - 1, NULL, 0), -EBADMSG);
	}
	/* every byte of message 2 matters */
	for (i = 0; i < NOISE_IK_MSG2_LEN(0); i++) {
		struct pair p;

		pair_init(&p);
		n = noise_ik_write_message1(&p.ini, m, sizeof(m), NULL, 0);
		assert_int_equal(noise_ik_read_message1(&p.res, m, (size_t)n, NULL, 0), 0);
		n2 = noise_ik_write_message2(&p.res, m2, sizeof(m2), NULL, 0);
		m2[i] ^= 0x80;
		assert_int_equal(noise_ik_read_message2(&p.ini, m2, (size_t)n2, NULL, 0), -EBADMSG);
		noise_ik_clear(&p.res);
	}
}

static void test_wrong_responder_key(void **state)
{
	struct pair p;
	struct noise_ik other;
	uint8_t wrong[32], m[256];
	int n;

	(void)state;
	pair_init(&p);
	/* the initiator believes a different server key */
	assert_int_equal(x25519_private_generate(wrong), 0);
	assert_int_equal(noise_ik_init_responder(&other, wrong, "pro", 3), 0);
	n = noise_ik_write_message1(&p.ini, m, sizeof(m), NULL, 0);
	assert_int_equal(noise_ik_read_message1(&other, m, (size_t)n, NULL, 0), -EBADMSG);
	/* a different prologue fails too */
	pair_init(&p);
	noise_ik_clear(&p.res);
	assert_int_equal(noise_ik_init_responder(&p.res, p.rpriv, "pr0", 3), 0);
	n = noise_ik_write_message1(&p.ini, m, sizeof(m), NULL, 0);
	assert_int_equal(noise_ik_read_message1(&p.res, m, (size_t)n, NULL, 0), -EBADMSG);
	noise_ik_clear(&p.ini);
	noise_ik_clear(&other);
}

static void test_order_and_roles(void **state)
{
	struct pair p;
	struct noise_cipher tx, rx;
	uint8_t m[256];

	(void)state;
	pair_init(&p);
	assert_int_equal(noise_ik_write_message1(&p.res, m, sizeof(m), NULL, 0), -EINVAL);
	assert_int_equal(noise_ik_read_message1(&p.ini, m, 96, NULL, 0), -EINVAL);
	assert_int_equal(noise_ik_write_message2(&p.res, m, sizeof(m), NULL, 0), -EINVAL);
	assert_int_equal(noise_ik_split(&p.ini, &tx, &rx), -EINVAL);
	assert_int_equal(noise_ik_remote_static(&p.res, m), -EINVAL);
	assert_int_equal(noise_ik_write_message1(&p.ini, m, 10, NULL, 0), -EMSGSIZE);
	noise_ik_clear(&p.ini);
	noise_ik_clear(&p.res);
	noise_ik_clear(NULL);
	noise_cipher_clear(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vector),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_replay_and_reorder),
		cmocka_unit_test(test_tamper),
		cmocka_unit_test(test_wrong_responder_key),
		cmocka_unit_test(test_order_and_roles),
	};

	if (crypto_init() < 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
