/* SPDX-License-Identifier: MIT */
/*
 * The data path must not allocate: count OpenSSL's allocations around many
 * ChaCha20-Poly1305 calls after a warm-up call per thread.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/crypto.h>

#include "crypto/crypto.h"

static unsigned long alloc_count;

static void *count_malloc(size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	__atomic_fetch_add(&alloc_count, 1, __ATOMIC_RELAXED);
	return malloc(n);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
	(void)file;
	(void)line;
	__atomic_fetch_add(&alloc_count, 1, __ATOMIC_RELAXED);
	return realloc(p, n);
}

static void count_free(void *p, const char *file, int line)
{
	(void)file;
	(void)line;
	free(p);
}

static void test_no_alloc_per_call(void **state)
{
	uint8_t key[32] = { 7 }, ad[16] = { 1 }, buf[1500 + 16];
	unsigned long before;
	uint64_t i;

	(void)state;
	assert_int_equal(crypto_init(), 0);
	memset(buf, 0x5a, sizeof(buf));
	/* Warm-up: creates this thread's context and OpenSSL's per-thread state. */
	assert_int_equal(chacha20poly1305_encrypt(buf, buf, 1500, ad, sizeof(ad), 0, key), 0);
	assert_int_equal(chacha20poly1305_decrypt(buf, buf, 1516, ad, sizeof(ad), 0, key), 0);
	buf[3] ^= 1;
	assert_int_equal(chacha20poly1305_decrypt(buf, buf, 1516, ad, sizeof(ad), 0, key),
			 -EBADMSG);

	before = __atomic_load_n(&alloc_count, __ATOMIC_RELAXED);
	/* The hook is live: setting up OpenSSL and the context did allocate. */
	assert_true(before > 0);
	for (i = 1; i <= 1000; i++) {
		assert_int_equal(chacha20poly1305_encrypt(buf, buf, 1500, ad, sizeof(ad), i, key),
				 0);
		assert_int_equal(chacha20poly1305_decrypt(buf, buf, 1516, ad, sizeof(ad), i, key),
				 0);
		/* Failures (bad input from the network) must not allocate either. */
		assert_int_equal(chacha20poly1305_decrypt(buf, buf, 1516, ad, sizeof(ad), i + 1,
							  key),
				 -EBADMSG);
		/* Keepalive-sized messages: empty plaintext, no associated data. */
		assert_int_equal(chacha20poly1305_encrypt(buf, buf, 0, NULL, 0, i, key), 0);
	}
	assert_int_equal(__atomic_load_n(&alloc_count, __ATOMIC_RELAXED) - before, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_alloc_per_call),
	};

	/* Must precede every OpenSSL allocation. */
	if (!CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free))
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
