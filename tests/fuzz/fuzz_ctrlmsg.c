/* SPDX-License-Identifier: MIT */
/*
 * ctrl_msg_decode on arbitrary bytes. Whatever it accepts must encode again,
 * and that text must decode and re-encode to the same bytes: the codec has one
 * wire form per message and accepts everything it emits.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/ctrlmsg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctrl_msg m, m2;
	char *a, *b;
	size_t alen, blen;

	if (ctrl_msg_decode((const char *)data, size, &m))
		return 0;
	if (ctrl_msg_encode(&m, &a, &alen))
		abort();
	if (ctrl_msg_decode(a, alen, &m2))
		abort();
	if (ctrl_msg_encode(&m2, &b, &blen))
		abort();
	if (alen != blen || memcmp(a, b, alen))
		abort();
	free(a);
	free(b);
	ctrl_msg_clear(&m);
	ctrl_msg_clear(&m2);
	return 0;
}
