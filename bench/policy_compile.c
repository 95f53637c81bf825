/* SPDX-License-Identifier: MIT */
/*
 * policy_compile: the server's cost of a policy (issue 12's control target). Generates a
 * tailnet of N nodes (users in groups, tagged servers) and a policy of R rules, then times
 * parsing, compiling (who sees whom) and building every node's filter, and prints
 * "key value" lines (bench/policy.sh turns them into a table).
 *
 *   policy_compile [-n NODES] [-r RULES]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "policy/policy.h"

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: the machine may be busy */
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	size_t n = 10000, rules = 1000, users = 2000, groups = 100, tags = 200, cap, o = 0;
	size_t peers = 0, fsrcs = 0, frules = 0;
	struct policy_node *nodes;
	struct policy_view *v;
	struct policy *p;
	char err[POLICY_ERR_MAX], *text;
	double t0, t1, t2, t3;
	struct rusage ru;
	int c;

	while ((c = getopt(argc, argv, "n:r:")) != -1) {
		if (c == 'n')
			n = strtoul(optarg, NULL, 10);
		else if (c == 'r')
			rules = strtoul(optarg, NULL, 10);
		else
			return 2;
	}
	cap = 4096 + rules * 160 + users * 32 + tags * 40;
	text = malloc(cap);
	nodes = calloc(n, sizeof(*nodes));
	if (!text || !nodes)
		return 1;
	o += (size_t)snprintf(text + o, cap - o, "{\n  \"groups\": {\n");
	for (size_t g = 0; g < groups; g++) {
		o += (size_t)snprintf(text + o, cap - o, "    \"group:g%zu\": [", g);
		for (size_t u = g; u < users; u += groups)
			o += (size_t)snprintf(text + o, cap - o, "\"u%zu@example.com\",", u);
		o += (size_t)snprintf(text + o, cap - o, "],\n");
	}
	o += (size_t)snprintf(text + o, cap - o, "  },\n  \"tagOwners\": {\n");
	for (size_t t = 0; t < tags; t++)
		o += (size_t)snprintf(text + o, cap - o, "    \"tag:t%zu\": [\"group:g0\"],\n", t);
	o += (size_t)snprintf(text + o, cap - o, "  },\n  \"acls\": [\n");
	for (size_t r = 0; r < rules; r++) {
		/* Mostly group -> tagged service on a few ports; some tag -> tag; one self rule. */
		if (r == 0)
			o += (size_t)snprintf(text + o, cap - o,
					      "    {\"action\": \"accept\", \"src\": [\"autogroup:member\"], "
					      "\"dst\": [\"autogroup:self:*\"]},\n");
		else if (r % 5 == 0)
			o += (size_t)snprintf(text + o, cap - o,
					      "    {\"action\": \"accept\", \"src\": [\"tag:t%zu\"], "
					      "\"dst\": [\"tag:t%zu:5432\"], \"proto\": \"tcp\"},\n",
					      r % tags, (r * 7 + 1) % tags);
		else
			o += (size_t)snprintf(text + o, cap - o,
					      "    {\"action\": \"accept\", \"src\": [\"group:g%zu\"], "
					      "\"dst\": [\"tag:t%zu:22,443,8000-8100\"]},\n",
					      r % groups, (r * 13) % tags);
	}
	o += (size_t)snprintf(text + o, cap - o, "  ],\n}\n");

	/* Three quarters users' devices, a quarter tagged servers. */
	for (size_t i = 0; i < n; i++) {
		struct policy_node *x = &nodes[i];
		uint32_t a = (uint32_t)i + 1;

		x->id = i + 1;
		snprintf(x->name, sizeof(x->name), "n%zu", i);
		if (i % 4 == 3) {
			x->n_tags = 1;
			snprintf(x->tags[0], sizeof(x->tags[0]), "tag:t%zu", (i / 4) % tags);
		} else {
			snprintf(x->user, sizeof(x->user), "u%zu@example.com", i % users);
		}
		x->n_addrs = 1;
		x->addrs[0].family = AF_INET;
		x->addrs[0].len = 32;
		x->addrs[0].addr[0] = 100;
		x->addrs[0].addr[1] = (uint8_t)(64 + (a >> 16));
		x->addrs[0].addr[2] = (uint8_t)(a >> 8);
		x->addrs[0].addr[3] = (uint8_t)a;
	}

	t0 = now_s();
	if (policy_parse(text, o, &p, err)) {
		fprintf(stderr, "policy_compile: %s\n", err);
		return 1;
	}
	t1 = now_s();
	if (policy_compile(p, nodes, n, &v))
		return 1;
	t2 = now_s();
	for (size_t i = 0; i < n; i++) {
		struct netmap_filter *f;

		if (policy_view_filter(v, nodes, i, &f))
			return 1;
		frules += f->n_rules;
		fsrcs += f->n_srcs;
		peers += policy_view_count(v, i);
		netmap_filter_free(f);
	}
	t3 = now_s();
	getrusage(RUSAGE_SELF, &ru);
	printf("nodes %zu\nrules %zu\npolicy_bytes %zu\n", n, rules, o);
	printf("parse_ms %.1f\ncompile_ms %.1f\nfilters_ms %.1f\ntotal_ms %.1f\n", (t1 - t0) * 1e3,
	       (t2 - t1) * 1e3, (t3 - t2) * 1e3, (t3 - t0) * 1e3);
	printf("peers_avg %.1f\nfilter_rules_avg %.1f\nfilter_srcs_avg %.1f\nmaxrss_mib %.1f\n",
	       (double)peers / (double)n, (double)frules / (double)n, (double)fsrcs / (double)n,
	       (double)ru.ru_maxrss / 1024);
	policy_view_free(v);
	policy_free(p);
	free(nodes);
	free(text);
	return 0;
}
