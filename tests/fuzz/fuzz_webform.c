/* SPDX-License-Identifier: MIT */
/*
 * The login pages' form and cookie parsers (control/webform.c) on any bytes:
 * they never read or write out of bounds, a value they return is NUL-terminated
 * at the length they say, and escaping never overflows.
 */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "control/webform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {"csrf", "email",	       "password",
					    "code", "trellis_session", "a"};
	char out[64], esc[96];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int r = webform_field(data, size, names[i], out, sizeof(out));

		assert(r == -ENOENT || r == -EINVAL || r == -ENOBUFS || (r >= 0 && r < 64));
		if (r >= 0) {
			size_t off = 0;

			assert(out[r] == '\0');
			r = webform_html_escape(esc, sizeof(esc), &off, out);
			assert(off < sizeof(esc) && esc[off] == '\0');
		}
		r = webform_cookie((const char *)data, size, names[i], out, sizeof(out));
		assert(r == -ENOENT || r == -EINVAL || r == -ENOBUFS || (r >= 0 && r < 64));
		if (r >= 0)
			assert(out[r] == '\0' && strlen(out) == (size_t)r);
	}
	return 0;
}
