/* SPDX-License-Identifier: MIT */
/*
 * ND user option datagrams (RTM_NEWNDUSEROPT, as the kernel sends them on
 * RTNLGRP_ND_USEROPT) through the PREF64 parser and into the per-interface table, one
 * second apart, then everything expired. Invariants: a taken option has an RFC 6052
 * length, zero bits past it and a lifetime in units of 8 s; the table stays within its
 * cap, its prefix in use is one of its entries, and nothing outlives its lifetime.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "net/pref64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct pref64_table t;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pref64_opt opts[PREF64_MSG_OPTS_MAX];
	struct pref64_stats st = {0};
	const struct pref64_entry *cur;
	uint64_t now = 1000000000ull;
	unsigned n, i, b;

	pref64_table_init(&t);
	n = pref64_netlink_parse(data, size, opts, PREF64_MSG_OPTS_MAX, &st);
	if (n > PREF64_MSG_OPTS_MAX || st.options != n)
		abort();
	for (i = 0; i < n; i++) {
		const struct pref64_opt *o = &opts[i];

		if (!nat64_len_valid(o->prefix.len) || o->lifetime_s % PREF64_LIFETIME_UNIT_S ||
		    o->lifetime_s > PREF64_LIFETIME_MAX_S)
			abort();
		for (b = o->prefix.len / 8; b < 16; b++)
			if (o->prefix.addr[b])
				abort();
		pref64_table_update(&t, o, now + i * 1000000000ull, &st);
		if (t.n > PREF64_TABLE_MAX)
			abort();
		cur = pref64_table_current(&t);
		if (t.n && (!cur || cur < t.e || cur >= t.e + t.n))
			abort();
		if (!t.n && cur)
			abort();
	}
	pref64_table_expire(&t, now + (uint64_t)(n + PREF64_LIFETIME_MAX_S) * 1000000000ull);
	if (t.n || pref64_table_current(&t) || pref64_table_next_expiry(&t))
		abort();
	return 0;
}
