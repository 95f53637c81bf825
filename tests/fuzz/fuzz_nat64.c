/* SPDX-License-Identifier: MIT */
/*
 * RFC 7050 prefix discovery on arbitrary AAAA answers (what a DNS64, or anyone who
 * answers for ipv4only.arpa, hands getaddrinfo): up to NAT64_ANSWERS_MAX addresses from
 * the input. A prefix found must have an RFC 6052 length, and every answer must
 * extract, under it, to one of the two well-known addresses and synthesize back to
 * itself but for the suffix bits, which RFC 6052 leaves to zero and a DNS64 may not.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/nat64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t v6[NAT64_ANSWERS_MAX][16];
	unsigned n = (unsigned)(size / 16), i;
	struct nat64_prefix p;
	char text[NAT64_PREFIX_STR_MAX];

	if (n > NAT64_ANSWERS_MAX)
		n = NAT64_ANSWERS_MAX;
	memcpy(v6, data, n * 16);
	if (nat64_prefix_from_answers((const uint8_t(*)[16])v6, n, &p) < 0)
		return 0;
	if (!nat64_len_valid(p.len))
		abort();
	nat64_prefix_str(&p, text, sizeof(text));
	if (!text[0])
		abort();
	for (i = 0; i < n; i++) {
		uint8_t v4[4], back[16];

		if (nat64_addr_extract(&p, v6[i], v4) < 0 || v4[0] != 192 || v4[1] || v4[2] ||
		    (v4[3] != 170 && v4[3] != 171))
			abort();
		if (nat64_addr_synthesize(&p, v4, back) < 0 ||
		    memcmp(back, v6[i], p.len == 96 ? 16 : p.len / 8 + 5))
			abort();
	}
	return 0;
}
