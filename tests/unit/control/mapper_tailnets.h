/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_TESTS_MAPPER_TAILNETS_H
#define TRELLIS_TESTS_MAPPER_TAILNETS_H

/*
 * What the mapper tests build on: a mapper with tailnets 1..n ("tailnet-N"), each with one
 * user (id 100 + N, "userN@example.com"). Include after <cmocka.h> and control/mapper.h.
 */

#include <stdio.h>

static struct mapper *mapper_with_tailnets(uint64_t n)
{
	struct mapper *m = mapper_new();

	assert_non_null(m);
	for (uint64_t t = 1; t <= n; t++) {
		struct control_tailnet tn = {.id = t};
		struct control_user u = {.id = 100 + t, .tailnet_id = t};

		snprintf(tn.name, sizeof(tn.name), "tailnet-%llu", (unsigned long long)t);
		snprintf(u.name, sizeof(u.name), "user%llu@example.com", (unsigned long long)t);
		assert_int_equal(mapper_tailnet_upsert(m, &tn), 0);
		assert_int_equal(mapper_user_upsert(m, &u), 0);
	}
	return m;
}

#endif
