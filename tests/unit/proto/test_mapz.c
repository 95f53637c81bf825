/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zstd.h>

#include "proto/ctrlmsg.h"
#include "proto/mapz.h"

/* Frames of the pieces, one after the other, as the server sends them. */
static size_t frames(uint8_t *out, size_t cap, const char *const *pieces, size_t n)
{
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		size_t k = ZSTD_compress(out + len, cap - len, pieces[i], strlen(pieces[i]), 3);

		assert_false(ZSTD_isError(k));
		len += k;
	}
	return len;
}

static void test_roundtrip(void **state)
{
	static const char *const pieces[] = {"{\"type\":\"netmap\",\"peers\":[", "{\"id\":1}",
					     ",{\"id\":2}", "]}"};
	uint8_t z[1024];
	size_t zlen = frames(z, sizeof(z), pieces, 4), n;
	char *text;

	(void)state;
	assert_true(mapz_is_compressed(z, zlen));
	assert_false(mapz_is_compressed("{\"type\":\"netmap\"}", 17));
	assert_false(mapz_is_compressed(z, 3));
	assert_int_equal(mapz_decompress(z, zlen, CTRL_MSG_MAX, &text, &n), 0);
	assert_string_equal(text, "{\"type\":\"netmap\",\"peers\":[{\"id\":1},{\"id\":2}]}");
	assert_int_equal(n, strlen(text));
	free(text);
	/* exactly at the bound is fine, one byte under it is not */
	assert_int_equal(mapz_decompress(z, zlen, n, &text, &n), 0);
	free(text);
	assert_int_equal(mapz_decompress(z, zlen, n - 1, &text, &n), -EMSGSIZE);
}

/*
 * A hostile server: a small message that declares (or would inflate to) more than a
 * message may hold is refused before anything that size is allocated.
 */
static void test_bound(void **state)
{
	size_t big = CTRL_MSG_MAX + 1, zcap = ZSTD_compressBound(big), zlen, n;
	char *zeros = calloc(1, big), *text = NULL;
	uint8_t *z = malloc(zcap);
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	ZSTD_outBuffer ob;
	ZSTD_inBuffer ib;

	(void)state;
	assert_non_null(zeros);
	assert_non_null(z);
	zlen = ZSTD_compress(z, zcap, zeros, big, 1);
	assert_false(ZSTD_isError(zlen));
	assert_true(zlen < 4096); /* the bomb: kilobytes on the wire */
	assert_int_equal(mapz_decompress(z, zlen, CTRL_MSG_MAX, &text, &n), -EMSGSIZE);
	assert_null(text);

	/* a frame without its size: refused, the size is not known up front */
	assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0)));
	ob = (ZSTD_outBuffer){z, zcap, 0};
	ib = (ZSTD_inBuffer){zeros, 1000, 0};
	assert_int_equal(ZSTD_compressStream2(cc, &ob, &ib, ZSTD_e_end), 0);
	assert_int_equal(mapz_decompress(z, ob.pos, CTRL_MSG_MAX, &text, &n), -EMSGSIZE);

	ZSTD_freeCCtx(cc);
	free(z);
	free(zeros);
}

static void test_corrupt(void **state)
{
	static const char *const pieces[] = {
	    "{\"type\":\"netmap\",\"seq\":1,\"x\":\"aaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}"};
	uint8_t z[512], bad[512];
	size_t zlen = frames(z, sizeof(z), pieces, 1), n;
	char *text = NULL;

	(void)state;
	/* every truncation and every flipped byte: an error or the right text, never more */
	for (size_t cut = 0; cut < zlen; cut++)
		assert_int_not_equal(mapz_decompress(z, cut, CTRL_MSG_MAX, &text, &n), 0);
	for (size_t i = 0; i < zlen; i++) {
		memcpy(bad, z, zlen);
		bad[i] ^= 0x55;
		if (mapz_decompress(bad, zlen, CTRL_MSG_MAX, &text, &n) == 0) {
			assert_true(n <= 4096);
			free(text);
			text = NULL;
		}
	}
	/* JSON is not a compressed message */
	assert_int_equal(mapz_decompress("{}", 2, CTRL_MSG_MAX, &text, &n), -EBADMSG);
	/* frames then garbage */
	memcpy(bad, z, zlen);
	memcpy(bad + zlen, "{}", 2);
	assert_int_not_equal(mapz_decompress(bad, zlen + 2, CTRL_MSG_MAX, &text, &n), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_roundtrip),
	    cmocka_unit_test(test_bound),
	    cmocka_unit_test(test_corrupt),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
