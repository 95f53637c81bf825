/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_FILTER_INTERNAL_H
#define TRELLIS_FILTER_INTERNAL_H

/* Between the files of src/filter. */

#include <stdbool.h>
#include <stdint.h>

typedef unsigned __int128 u128;

struct filter_rules;

/* An address (4 or 16 bytes, network order) as a number. */
u128 filter_addr_u128(int family, const uint8_t *a);
bool filter_rules_match_u128(const struct filter_rules *r, int family, uint8_t proto, u128 src,
			     u128 dst, uint16_t dport);

#endif
