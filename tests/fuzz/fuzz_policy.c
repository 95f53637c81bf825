/* SPDX-License-Identifier: MIT */
/*
 * The policy parser (HuJSON, validation, the policy's own tests) and compiler on any bytes:
 * a refusal says where ("LINE:COL: ..."), an accepted policy compiles over a small tailnet of
 * users, tagged nodes and an untagged node without a user, every filter is valid, what each
 * node may open is valid, lists only peers it sees (and maybe itself) and is its class's, and
 * who sees whom is symmetric.
 */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "policy/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void node(struct policy_node *n, unsigned i, const char *user, const char *tag)
{
	memset(n, 0, sizeof(*n));
	n->id = i + 1;
	snprintf(n->name, sizeof(n->name), "n%u", i);
	snprintf(n->user, sizeof(n->user), "%s", user ? user : "");
	if (tag)
		snprintf(n->tags[n->n_tags++], NETMAP_TAG_MAX, "%s", tag);
	n->n_addrs = 2;
	n->addrs[0] = (struct netmap_prefix){ .family = AF_INET, .len = 32,
					      .addr = { 100, 64, 0, (uint8_t)(i + 1) } };
	n->addrs[1] = (struct netmap_prefix){ .family = AF_INET6, .len = 128,
					      .addr = { 0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11, [12] = 100,
							64, 0, (uint8_t)(i + 1) } };
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy_node n[6];
	struct policy *p = NULL;
	struct policy_view *v = NULL;
	char err[POLICY_ERR_MAX];
	int r;

	r = policy_parse((const char *)data, size, &p, err);
	if (r < 0) {
		assert(r == -EINVAL || r == -E2BIG || r == -ENOMEM);
		assert(r != -EINVAL || isdigit((unsigned char)err[0]));
		return 0;
	}
	node(&n[0], 0, "alice@example.com", NULL);
	node(&n[1], 1, "alice@example.com", NULL);
	node(&n[2], 2, "bob@example.com", NULL);
	node(&n[3], 3, NULL, "tag:server");
	node(&n[4], 4, NULL, "tag:web");
	node(&n[5], 5, "default", NULL);
	if (policy_compile(p, n, 6, &v) == 0) {
		struct netmap_reach *re[6] = {NULL};

		for (size_t a = 0; a < 6; a++) {
			struct netmap_filter *f;

			for (size_t b = 0; b < 6; b++)
				assert(policy_view_sees(v, a, b) == policy_view_sees(v, b, a));
			if (policy_view_filter(v, n, a, &f) == 0) {
				assert(netmap_filter_valid(f));
				netmap_filter_free(f);
			}
			if (policy_view_reach(v, n, a, &re[a]) == 0) {
				assert(netmap_reach_valid(re[a]));
				for (size_t b = 0; b < 6; b++)
					assert(a == b || !netmap_reach_find(re[a], n[b].id) ||
					       policy_view_sees(v, a, b) || re[a]->sets[0].all);
				/* The server sends one class's to all its nodes. */
				for (size_t b = 0; b < a; b++)
					assert(!re[b] ||
					       policy_view_class(v, a) != policy_view_class(v, b) ||
					       netmap_reach_equal(re[a], re[b]));
			}
			(void)policy_explain(p, &n[a], &n[(a + 1) % 6], 22, 6, err);
		}
		for (size_t a = 0; a < 6; a++)
			netmap_reach_free(re[a]);
		policy_view_free(v);
	}
	policy_free(p);
	return 0;
}
