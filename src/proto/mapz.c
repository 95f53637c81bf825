// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "proto/mapz.h"

/* The decoder's window: the server compresses with at most this (mapzc), a larger one is refused.
 */
#define MAPZ_WINDOW_LOG_MAX 21

bool mapz_is_compressed(const void *msg, size_t len)
{
	static const uint8_t magic[4] = {0x28, 0xb5, 0x2f, 0xfd}; /* ZSTD_MAGICNUMBER, LE */

	return len >= sizeof(magic) && memcmp(msg, magic, sizeof(magic)) == 0;
}

/* The sum of every frame's declared size (each must declare one), stopping past max. */
static int declared_size(const uint8_t *p, size_t len, size_t max, size_t *ret)
{
	size_t total = 0;

	while (len) {
		unsigned long long k = ZSTD_getFrameContentSize(p, len);
		size_t fl = ZSTD_findFrameCompressedSize(p, len);

		if (k == ZSTD_CONTENTSIZE_ERROR || ZSTD_isError(fl))
			return -EBADMSG;
		if (k == ZSTD_CONTENTSIZE_UNKNOWN || k > max - total)
			return -EMSGSIZE;
		total += (size_t)k;
		p += fl;
		len -= fl;
	}
	*ret = total;
	return total ? 0 : -EBADMSG;
}

int mapz_decompress(const void *msg, size_t len, size_t max, char **ret, size_t *ret_len)
{
	ZSTD_DCtx *d = NULL;
	char *out = NULL;
	size_t total, n;
	int r = -EBADMSG;

	if (!mapz_is_compressed(msg, len))
		goto out;
	/* Every frame's declared size, before anything is allocated for them. */
	r = declared_size(msg, len, max, &total);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	d = ZSTD_createDCtx();
	out = malloc(total + 1);
	if (!d || !out)
		goto out;
	ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, MAPZ_WINDOW_LOG_MAX);
	/* Into exactly the declared size: a frame that holds more fails with dstSize_tooSmall. */
	n = ZSTD_decompressDCtx(d, out, total, msg, len);
	r = -EBADMSG;
	if (ZSTD_isError(n) || n != total)
		goto out;
	out[n] = '\0';
	*ret = out;
	*ret_len = n;
	out = NULL;
	r = 0;
out:
	free(out);
	ZSTD_freeDCtx(d);
	return r;
}
