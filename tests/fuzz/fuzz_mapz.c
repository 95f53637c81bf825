/* SPDX-License-Identifier: MIT */
/*
 * mapz_decompress on arbitrary bytes, as a node reads a compressed netmap from
 * its server: it either refuses, or returns at most the bound it was given, the
 * text NUL-terminated, and that text goes on to the message decoder.
 */
#include <stdint.h>
#include <stdlib.h>

#include "proto/ctrlmsg.h"
#include "proto/mapz.h"

/* Small enough for the fuzzer; the code is the same as at CTRL_MSG_MAX. */
#define BOUND (1U << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctrl_msg m;
	char *text;
	size_t n;

	if (mapz_decompress(data, size, BOUND, &text, &n))
		return 0;
	if (!mapz_is_compressed(data, size) || n > BOUND || text[n] != '\0')
		abort();
	if (ctrl_msg_decode(text, n, &m) == 0)
		ctrl_msg_clear(&m);
	free(text);
	return 0;
}
