/* SPDX-License-Identifier: MIT */
/*
 * Published test vectors for the crypto primitives: RFC 7748 (X25519), RFC 8439
 * (ChaCha20-Poly1305), draft-irtf-cfrg-xchacha-03 (HChaCha20, XChaCha20-Poly1305),
 * RFC 7693 (BLAKE2s). HMAC-BLAKE2s and the KDF have no published vectors; theirs
 * were computed independently with Python's hashlib.blake2s and hmac.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/crypto.h"

static size_t unhex(uint8_t *out, size_t cap, const char *hex)
{
	size_t n = 0;

	while (*hex) {
		unsigned v;

		if (*hex == ' ' || *hex == ':') {
			hex++;
			continue;
		}
		assert_true(sscanf(hex, "%2x", &v) == 1);
		assert_true(n < cap);
		out[n++] = (uint8_t)v;
		hex += 2;
	}
	return n;
}

static void assert_hex(const uint8_t *got, const char *want_hex)
{
	uint8_t want[512];
	size_t n = unhex(want, sizeof(want), want_hex);

	assert_memory_equal(got, want, n);
}

/* RFC 7748 section 5.2: two single-shot vectors, then the iterated one. */
static void test_x25519_rfc7748_5_2(void **state)
{
	static const struct {
		const char *scalar, *u, *out;
	} v[] = {
		{ "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
		  "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
		  "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552" },
		/* The u-coordinate's top bit is set (0x93): it must be ignored. */
		{ "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
		  "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
		  "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957" },
	};
	uint8_t k[32], u[32], out[32];
	size_t i;
	int n;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		unhex(k, 32, v[i].scalar);
		unhex(u, 32, v[i].u);
		assert_int_equal(x25519_shared(out, k, u), 0);
		assert_hex(out, v[i].out);
	}

	/* k = u = 9; then repeatedly k, u = X25519(k, u), k. */
	memset(k, 0, 32);
	k[0] = 9;
	memcpy(u, k, 32);
	for (n = 1; n <= 1000; n++) {
		assert_int_equal(x25519_shared(out, k, u), 0);
		memcpy(u, k, 32);
		memcpy(k, out, 32);
		if (n == 1)
			assert_hex(k, "422c8e7a6227d7bca1350b3e2bb7279f"
				      "7897b87bb6854b783c60e80311ae3079");
	}
	assert_hex(k, "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51");
}

/* RFC 7748 section 6.1: Alice and Bob. */
static void test_x25519_rfc7748_6_1(void **state)
{
	uint8_t a[32], b[32], apub[32], bpub[32], s1[32], s2[32];

	(void)state;
	unhex(a, 32, "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
	unhex(b, 32, "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
	assert_int_equal(x25519_public_from_private(apub, a), 0);
	assert_hex(apub, "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
	assert_int_equal(x25519_public_from_private(bpub, b), 0);
	assert_hex(bpub, "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
	assert_int_equal(x25519_shared(s1, a, bpub), 0);
	assert_int_equal(x25519_shared(s2, b, apub), 0);
	assert_hex(s1, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
	assert_memory_equal(s1, s2, 32);
	/* Given our own public half too (the handshakes' way): the same secret. */
	memset(s1, 0, 32);
	assert_int_equal(x25519_shared_pair(s1, a, apub, bpub), 0);
	assert_hex(s1, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
	assert_int_equal(x25519_shared_pair(s2, b, bpub, apub), 0);
	assert_memory_equal(s1, s2, 32);
}

/* RFC 8032 section 7.1, tests 1 and 2; then a flipped bit fails. */
static void test_ed25519_rfc8032_7_1(void **state)
{
	static const struct {
		const char *priv, *pub, *msg, *sig;
	} v[] = {
		{"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
		 "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
		 "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc6"
		 "1e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
		{"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
		 "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
		 "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e45"
		 "8f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
	};
	uint8_t priv[32], pub[32], sig[64], msg[4] = { 0 };
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		unhex(priv, 32, v[i].priv);
		n = unhex(msg, sizeof(msg), v[i].msg);
		assert_int_equal(ed25519_public_from_private(pub, priv), 0);
		assert_hex(pub, v[i].pub);
		assert_int_equal(ed25519_sign(sig, msg, n, priv), 0);
		assert_hex(sig, v[i].sig);
		assert_int_equal(ed25519_verify(sig, msg, n, pub), 0);
		sig[5] ^= 1;
		assert_int_equal(ed25519_verify(sig, msg, n, pub), -EBADMSG);
		sig[5] ^= 1;
		msg[0] ^= 1;
		assert_int_equal(ed25519_verify(sig, msg, n ? n : 1, pub), -EBADMSG);
	}
}

static void test_x25519_low_order_and_generate(void **state)
{
	uint8_t priv[32], priv2[32], pub[32], pub2[32], s1[32], s2[32];
	uint8_t zero[32] = { 0 }, one[32] = { 1 };

	(void)state;
	assert_int_equal(x25519_private_generate(priv), 0);
	/* Clamped as wg(8) does. */
	assert_int_equal(priv[0] & 7, 0);
	assert_int_equal(priv[31] & 0xc0, 0x40);
	assert_int_equal(x25519_public_from_private(pub, priv), 0);

	/* Low-order points give an all-zero secret: refused, output untouched. */
	memset(s1, 0xaa, 32);
	assert_int_equal(x25519_shared(s1, priv, zero), -EINVAL);
	assert_int_equal(x25519_shared(s1, priv, one), -EINVAL);
	assert_int_equal(x25519_shared_pair(s1, priv, pub, zero), -EINVAL);
	assert_int_equal(s1[0], 0xaa);

	assert_int_equal(x25519_private_generate(priv2), 0);
	assert_memory_not_equal(priv, priv2, 32);
	assert_int_equal(x25519_public_from_private(pub2, priv2), 0);
	assert_int_equal(x25519_shared(s1, priv, pub2), 0);
	assert_int_equal(x25519_shared(s2, priv2, pub), 0);
	assert_memory_equal(s1, s2, 32);
}

static const char sunscreen[] = "Ladies and Gentlemen of the class of '99: If I could offer you "
				"only one tip for the future, sunscreen would be it.";

/* RFC 8439 section 2.8.2. */
static const char aead_key_hex[] =
	"808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f";
static const char aead_ad_hex[] = "50515253c0c1c2c3c4c5c6c7";
static const char aead_nonce_hex[] = "070000004041424344454647";
static const char aead_ct_hex[] = "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
				  "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
				  "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
				  "3ff4def08e4b7a9de576d26586cec64b6116"
				  "1ae10b594f09e26a7e902ecbd0600691";

static void test_aead_rfc8439_2_8_2(void **state)
{
	uint8_t key[32], ad[12], nonce[12], buf[256], pt[256];
	size_t len = strlen(sunscreen);

	(void)state;
	assert_int_equal(len, 114);
	unhex(key, 32, aead_key_hex);
	unhex(ad, 12, aead_ad_hex);
	unhex(nonce, 12, aead_nonce_hex);

	assert_int_equal(chacha20poly1305_encrypt_nonce96(buf, (const uint8_t *)sunscreen, len,
							  ad, sizeof(ad), nonce, key),
			 0);
	assert_hex(buf, aead_ct_hex);

	assert_int_equal(chacha20poly1305_decrypt_nonce96(pt, buf, len + 16, ad, sizeof(ad),
							  nonce, key),
			 0);
	assert_memory_equal(pt, sunscreen, len);

	/* In place, both ways. */
	memcpy(buf, sunscreen, len);
	assert_int_equal(chacha20poly1305_encrypt_nonce96(buf, buf, len, ad, sizeof(ad), nonce,
							  key),
			 0);
	assert_hex(buf, aead_ct_hex);
	assert_int_equal(chacha20poly1305_decrypt_nonce96(buf, buf, len + 16, ad, sizeof(ad),
							  nonce, key),
			 0);
	assert_memory_equal(buf, sunscreen, len);
}

static void test_aead_tamper(void **state)
{
	uint8_t key[32], ad[12], nonce[12], ct[256], buf[256];
	size_t len = strlen(sunscreen), i;
	size_t spots[] = { 0, 57, 113, 114, 129 }; /* ciphertext start/middle/end, tag */

	(void)state;
	unhex(key, 32, aead_key_hex);
	unhex(ad, 12, aead_ad_hex);
	unhex(nonce, 12, aead_nonce_hex);
	unhex(ct, sizeof(ct), aead_ct_hex);

	for (i = 0; i < sizeof(spots) / sizeof(spots[0]); i++) {
		memcpy(buf, ct, len + 16);
		buf[spots[i]] ^= 0x01;
		assert_int_equal(chacha20poly1305_decrypt_nonce96(buf, buf, len + 16, ad,
								  sizeof(ad), nonce, key),
				 -EBADMSG);
	}
	/* Wrong associated data, wrong key, short input. */
	memcpy(buf, ct, len + 16);
	ad[0] ^= 1;
	assert_int_equal(chacha20poly1305_decrypt_nonce96(buf, buf, len + 16, ad, sizeof(ad),
							  nonce, key),
			 -EBADMSG);
	ad[0] ^= 1;
	key[31] ^= 0x80;
	memcpy(buf, ct, len + 16);
	assert_int_equal(chacha20poly1305_decrypt_nonce96(buf, buf, len + 16, ad, sizeof(ad),
							  nonce, key),
			 -EBADMSG);
	key[31] ^= 0x80;
	assert_int_equal(chacha20poly1305_decrypt_nonce96(buf, ct, 15, ad, sizeof(ad), nonce,
							  key),
			 -EBADMSG);
	/* The context is still good after failures. */
	assert_int_equal(chacha20poly1305_decrypt_nonce96(buf, ct, len + 16, ad, sizeof(ad),
							  nonce, key),
			 0);
	assert_memory_equal(buf, sunscreen, len);
}

/* WireGuard's form must equal the raw form with nonce 0^32 || LE64(counter). */
static void test_aead_wg_nonce(void **state)
{
	static const uint64_t counters[] = { 0, 1, 0x0102030405060708ULL, UINT64_MAX - 8192 };
	uint8_t key[32], nonce[12], a[300], b[300], pt[300];
	size_t i, j, lens[] = { 0, 1, 16, 255 };

	(void)state;
	for (i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(0x11 * i);
	for (i = 0; i < sizeof(pt); i++)
		pt[i] = (uint8_t)i;

	for (i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		memset(nonce, 0, 4);
		for (j = 0; j < 8; j++)
			nonce[4 + j] = (uint8_t)(counters[i] >> (8 * j));
		for (j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
			assert_int_equal(chacha20poly1305_encrypt(a, pt, lens[j], NULL, 0,
								  counters[i], key),
					 0);
			assert_int_equal(chacha20poly1305_encrypt_nonce96(b, pt, lens[j], NULL, 0,
									  nonce, key),
					 0);
			assert_memory_equal(a, b, lens[j] + 16);
			assert_int_equal(chacha20poly1305_decrypt(a, a, lens[j] + 16, NULL, 0,
								  counters[i], key),
					 0);
			if (lens[j])
				assert_memory_equal(a, pt, lens[j]);
			/* Another counter does not authenticate. */
			assert_int_equal(chacha20poly1305_decrypt(a, b, lens[j] + 16, NULL, 0,
								  counters[i] ^ 1, key),
					 -EBADMSG);
		}
	}
}

/* draft-irtf-cfrg-xchacha-03 section 2.2.1. */
static void test_hchacha20(void **state)
{
	uint8_t key[32], nonce[16], out[32];

	(void)state;
	unhex(key, 32, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
	unhex(nonce, 16, "000000090000004a0000000031415927");
	hchacha20(out, key, nonce);
	assert_hex(out, "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc");
}

/* draft-irtf-cfrg-xchacha-03 appendix A.3.1. */
static void test_xchacha20poly1305(void **state)
{
	static const char ct_hex[] =
		"bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb"
		"731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452"
		"2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9"
		"21f9664c97637da9768812f615c68b13b52e"
		"c0875924c1c7987947deafd8780acf49";
	uint8_t key[32], ad[12], nonce[24], buf[256], pt[256];
	size_t len = strlen(sunscreen);

	(void)state;
	unhex(key, 32, aead_key_hex);
	unhex(ad, 12, aead_ad_hex);
	unhex(nonce, 24, "404142434445464748494a4b4c4d4e4f5051525354555657");
	assert_int_equal(xchacha20poly1305_encrypt(buf, (const uint8_t *)sunscreen, len, ad,
						   sizeof(ad), nonce, key),
			 0);
	assert_hex(buf, ct_hex);
	assert_int_equal(xchacha20poly1305_decrypt(pt, buf, len + 16, ad, sizeof(ad), nonce, key),
			 0);
	assert_memory_equal(pt, sunscreen, len);
	buf[len + 15] ^= 0x40;
	assert_int_equal(xchacha20poly1305_decrypt(pt, buf, len + 16, ad, sizeof(ad), nonce, key),
			 -EBADMSG);
}

/* RFC 7693 appendix B, plus the empty input and byte-at-a-time updates. */
static void test_blake2s_abc(void **state)
{
	static const char abc_hex[] =
		"508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982";
	struct blake2s_state s;
	uint8_t out[32];

	(void)state;
	blake2s(out, 32, "abc", 3, NULL, 0);
	assert_hex(out, abc_hex);

	blake2s_init(&s, 32);
	blake2s_update(&s, "a", 1);
	blake2s_update(&s, "", 0);
	blake2s_update(&s, "bc", 2);
	blake2s_final(&s, out);
	assert_hex(out, abc_hex);

	blake2s(out, 32, "", 0, NULL, 0);
	assert_hex(out, "69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9");

	/* WireGuard's initial chaining key: HASH("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"). */
	blake2s(out, 32, "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s", 37, NULL, 0);
	assert_hex(out, "60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36");
}

/* RFC 7693 appendix E's deterministic input: a Fibonacci generator. */
static void selftest_seq(uint8_t *out, size_t len, uint32_t seed)
{
	uint32_t a = 0xDEAD4BAD * seed, b = 1, t;
	size_t i;

	for (i = 0; i < len; i++) {
		t = a + b;
		a = b;
		b = t;
		out[i] = (uint8_t)(t >> 24);
	}
}

/* RFC 7693 appendix E: keyed and unkeyed, output lengths 16, 20, 28 and 32. */
static void test_blake2s_rfc7693_selftest(void **state)
{
	static const size_t md_len[] = { 16, 20, 28, 32 };
	static const size_t in_len[] = { 0, 3, 64, 65, 255, 1024 };
	uint8_t in[1024], md[32], key[32];
	struct blake2s_state grand;
	size_t i, j;

	(void)state;
	blake2s_init(&grand, 32);
	for (i = 0; i < 4; i++) {
		for (j = 0; j < 6; j++) {
			selftest_seq(in, in_len[j], (uint32_t)in_len[j]);
			blake2s(md, md_len[i], in, in_len[j], NULL, 0);
			blake2s_update(&grand, md, md_len[i]);

			selftest_seq(key, md_len[i], (uint32_t)md_len[i]);
			blake2s(md, md_len[i], in, in_len[j], key, md_len[i]);
			blake2s_update(&grand, md, md_len[i]);
		}
	}
	blake2s_final(&grand, md);
	assert_hex(md, "6a411f08ce25adcdfb02aba641451cec53c598b24f4fc787fbdc88797f4c1dfe");
}

/* Keyed 16-byte output, the shape of WireGuard's MAC1 (computed with hashlib). */
static void test_blake2s_mac16(void **state)
{
	uint8_t key[32], out[16];
	int i;

	(void)state;
	for (i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	blake2s(out, 16, "hello", 5, key, 32);
	assert_hex(out, "1f946dc212a39570bc06fd378517a91e");
}

/* Python: hmac.new(key, msg, hashlib.blake2s).digest() */
static void test_hmac_blake2s(void **state)
{
	static const char msg[] = "Trellis HMAC-BLAKE2s test message";
	uint8_t key[65], in[200], out[32];
	int i;

	(void)state;
	for (i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	hmac_blake2s(out, key, 32, (const uint8_t *)msg, strlen(msg));
	assert_hex(out, "06a3da0d640c92bb3deb6f9294017266dced7170029babc4cc1442492b8a1b30");

	/* A key longer than the block is hashed first. */
	for (i = 0; i < 65; i++)
		key[i] = (uint8_t)(0x40 + i);
	for (i = 0; i < 200; i++)
		in[i] = (uint8_t)i;
	hmac_blake2s(out, key, 65, in, 200);
	assert_hex(out, "0dafd9a9f4b0fe18c54f287e5a971b98a8ba6c8047335f96b61a4a5872287c65");

	hmac_blake2s(out, NULL, 0, NULL, 0);
	assert_hex(out, "eaf4bb25938f4d20e72656bbbc7a9bf63c0c18537333c35bdb67db1402661acd");
}

/*
 * Python: t0 = HMAC(key, input); t1 = HMAC(t0, b"\x01");
 * t2 = HMAC(t0, t1 + b"\x02"); t3 = HMAC(t0, t2 + b"\x03").
 */
static void test_wg_kdf(void **state)
{
	static const char t1_hex[] =
		"ade74bff75355dd0646061fcf4fe0c8738485c84681b402ee1af2e29085437eb";
	static const char t2_hex[] =
		"a014d8ba0bf3d035a556a879f2e3bc35c32e0d08173419699dead6ea0afdc3a7";
	static const char t3_hex[] =
		"b3b8c81411d46d924f37e641b4cf2204c5419005fc095afa03a673f82f2f553f";
	uint8_t key[32], in[64], t1[32], t2[32], t3[32];
	int i;

	(void)state;
	for (i = 0; i < 32; i++)
		key[i] = (uint8_t)i;
	for (i = 0; i < 64; i++)
		in[i] = (uint8_t)(0x20 + i);
	wg_kdf(t1, t2, t3, key, in, sizeof(in));
	assert_hex(t1, t1_hex);
	assert_hex(t2, t2_hex);
	assert_hex(t3, t3_hex);

	/* Partial outputs give the same values. */
	memset(t1, 0, 32);
	memset(t3, 0, 32);
	wg_kdf(NULL, NULL, t3, key, in, sizeof(in));
	assert_hex(t3, t3_hex);
	wg_kdf(t1, NULL, NULL, key, in, sizeof(in));
	assert_hex(t1, t1_hex);
	memset(t2, 0, 32);
	wg_kdf(NULL, t2, NULL, key, in, sizeof(in));
	assert_hex(t2, t2_hex);

	memset(key, 0xa5, 32);
	wg_kdf(t1, t2, t3, key, NULL, 0);
	assert_hex(t1, "558b822ba4b0a5a4ee107e1522e6169ec6471520db5c74ebce2edc9d5734e137");
	assert_hex(t2, "5ffc4f235e706b99eba7c09ab4966e898cd8a53f19ed2f1210187358c0936d79");
	assert_hex(t3, "dd127549f1912955f48a372f83b6cc91b6d06ae1b9a9b1d829e74323933b3972");
}

/* Each thread gets its own cipher context; contexts are freed at thread exit (LSan). */
static void *aead_thread(void *arg)
{
	uint8_t key[32], buf[600 + 16], pt[600];
	uintptr_t id = (uintptr_t)arg;
	uint64_t i;

	memset(key, (int)id, sizeof(key));
	for (i = 0; i < 2000; i++) {
		size_t len = (size_t)((i * 37 + id) % 600);

		memset(pt, (int)(i ^ id), len);
		if (chacha20poly1305_encrypt(buf, pt, len, key, 8, i, key) ||
		    chacha20poly1305_decrypt(buf, buf, len + 16, key, 8, i, key) ||
		    memcmp(buf, pt, len) != 0)
			return (void *)1;
	}
	return NULL;
}

static void test_aead_threads(void **state)
{
	pthread_t t[4];
	void *res;
	uintptr_t i;

	(void)state;
	for (i = 0; i < 4; i++)
		assert_int_equal(pthread_create(&t[i], NULL, aead_thread, (void *)(i + 1)), 0);
	for (i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], &res), 0);
		assert_null(res);
	}
}

static void test_helpers(void **state)
{
	uint8_t a[64] = { 0 }, b[64] = { 0 };

	(void)state;
	assert_int_equal(crypto_init(), 0);
	assert_int_equal(crypto_init(), 0);
	assert_true(crypto_equal(a, b, sizeof(a)));
	b[63] = 1;
	assert_false(crypto_equal(a, b, sizeof(a)));
	assert_int_equal(crypto_random(a, sizeof(a)), 0);
	assert_int_equal(crypto_random(b, sizeof(b)), 0);
	assert_false(crypto_equal(a, b, sizeof(a)));
	crypto_wipe(a, sizeof(a));
	memset(b, 0, sizeof(b));
	assert_true(crypto_equal(a, b, sizeof(a)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_helpers),
		cmocka_unit_test(test_x25519_rfc7748_5_2),
		cmocka_unit_test(test_x25519_rfc7748_6_1),
		cmocka_unit_test(test_x25519_low_order_and_generate),
	    cmocka_unit_test(test_ed25519_rfc8032_7_1),
		cmocka_unit_test(test_aead_rfc8439_2_8_2),
		cmocka_unit_test(test_aead_tamper),
		cmocka_unit_test(test_aead_wg_nonce),
		cmocka_unit_test(test_aead_threads),
		cmocka_unit_test(test_hchacha20),
		cmocka_unit_test(test_xchacha20poly1305),
		cmocka_unit_test(test_blake2s_abc),
		cmocka_unit_test(test_blake2s_rfc7693_selftest),
		cmocka_unit_test(test_blake2s_mac16),
		cmocka_unit_test(test_hmac_blake2s),
		cmocka_unit_test(test_wg_kdf),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
