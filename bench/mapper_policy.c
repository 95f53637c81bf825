/* SPDX-License-Identifier: MIT */
/*
 * mapper_policy: what a policy change costs trellis-control's event loop, without sockets.
 * The mapper holds N nodes of one tailnet, every one with a map stream, under the policy
 * bench/control_scale.sh generates (rule 0 lets one address outside the tailnet reach every
 * node on one port, rule 1 lets the first 1,023 nodes reach one /28, the rest each let one /28
 * reach another on a port range). Timed, as CPU time of the process:
 *
 *   every:  the policy with rule 0 on another port (every node's filter changes);
 *   one:    the policy with one random rule's port range moved (the two /28s it names
 *           change, nobody else);
 *   join:   a node joins (in the /28 that rule 1 lets the first 1,023 nodes reach), then
 *           leaves again, untimed; its filter is the only one that changes;
 *   star:   last, in a fresh mapper: the allow-all policy ("*" may reach "*:*") set over N
 *           nodes, then 100 nodes' full maps, where what each node may open (may_open) lists
 *           every peer on 4 protocols, computed once per policy class (here one);
 *   class:  in a fresh mapper, rules that list peers one by one: group:eng may open tcp 22
 *           on tag:server and tcp 5432 on tag:db (80 % eng devices, 10 % each tag), every
 *           node with a map stream that takes may_open patches where the revision has them;
 *           a server joins (upsert, recompile, flush, its map), then leaves (timed apart):
 *           every eng device is told, the list by id or its patch;
 *
 * each as mapper_policy_set (what the loop pays when the change arrives) and the flush that
 * follows (mapper_take_delta and ctrl_msg_encode for every subscriber on the dirty list, what
 * mapstream's flush pays). Prints "key value" lines.
 *
 *   mapper_policy [-n NODES] [-r RULES] [-c CHANGES] [-C]   (-C: the class phase alone)
 *
 * bench/mapper_policy.sh builds it against this tree and a reference revision and runs them
 * in turns.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "control/mapper.h"
#include "policy/policy.h"
#include "proto/ctrlmsg.h"

/* Weak: the same program measures a revision from before the counter (0 there). */
uint64_t mapper_policy_filters_built(const struct mapper *m, uint64_t tailnet_id)
    __attribute__((weak));
/* Weak: a revision from before may_open patches sends every subscriber the list. */
int mapper_reach_patch_set(struct mapper *m, uint64_t id, bool on) __attribute__((weak));

static uint64_t filters_built(const struct mapper *m)
{
	return mapper_policy_filters_built ? mapper_policy_filters_built(m, 1) : 0;
}

static double cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: the machine may be busy */
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void group(char *buf, size_t len, size_t g)
{
	size_t a = 16 * g;

	snprintf(buf, len, "100.%zu.%zu.%zu/28", 64 + a / 65536, a / 256 % 256, a % 256);
}

/* The policy: rule 0 on port0; rule `moved` (if any) with its range shifted by `shift`. */
static struct policy *mk_policy(size_t n, size_t rules, unsigned port0, size_t moved,
				unsigned shift)
{
	size_t cap = 4096 + rules * 160, o = 0, joiners = (n + 1) / 16;
	char *text = malloc(cap), a[32], b[32], err[POLICY_ERR_MAX];
	struct policy *p = NULL;

	if (!text)
		exit(1);
	srand(7);
	group(b, sizeof(b), joiners);
	o += (size_t)snprintf(
	    text + o, cap - o,
	    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"100.127.255.254/32\"], "
	    "\"dst\": [\"*:%u\"], \"proto\": \"tcp\"},\n"
	    "{\"action\": \"accept\", \"src\": [\"100.64.0.0/22\"], "
	    "\"dst\": [\"%s:22\"], \"proto\": \"tcp\"},\n",
	    port0, b);
	for (size_t i = 2; i < rules; i++) {
		unsigned lo = 1 + (unsigned)rand() % 59000,
			 hi = lo + (unsigned[]){0, 0, 10, 100}[rand() % 4];

		group(a, sizeof(a), (size_t)rand() % joiners);
		group(b, sizeof(b), (size_t)rand() % joiners);
		if (i == moved) {
			lo += shift;
			hi += shift;
		}
		o += (size_t)snprintf(
		    text + o, cap - o,
		    "{\"action\": \"accept\", \"src\": [\"%s\"], \"dst\": [\"%s:%u-%u\"], "
		    "\"proto\": \"%s\"},\n",
		    a, b, lo, hi, rand() % 2 ? "tcp" : "udp");
	}
	o += (size_t)snprintf(text + o, cap - o, "]}\n");
	if (policy_parse(text, o, &p, err) < 0) {
		fprintf(stderr, "policy: %s\n", err);
		exit(1);
	}
	free(text);
	return p;
}

/* Every pending delta taken and encoded, as mapstream's flush does: the deltas sent. */
static size_t flush(struct mapper *m, size_t *bytes)
{
	size_t n = 0;
	uint64_t id;

	while ((id = mapper_dirty_first(m))) {
		struct ctrl_msg msg = {.type = CTRL_MSG_DELTA};
		char *json;
		size_t len;

		if (mapper_take_delta(m, id, &msg.delta) < 0) {
			fprintf(stderr, "take_delta %llu failed\n", (unsigned long long)id);
			exit(1);
		}
		if (!msg.delta)
			continue;
		if (ctrl_msg_encode(&msg, &json, &len) < 0)
			exit(1);
		*bytes += len;
		free(json);
		ctrl_msg_clear(&msg);
		n++;
	}
	return n;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static void phase(struct mapper *m, const char *name, size_t n, size_t rules, size_t changes,
		  bool one)
{
	double set[64], fl[64];
	size_t sent = 0, bytes = 0;
	uint64_t built = 0;

	for (size_t c = 0; c < changes; c++) {
		struct policy *p =
		    one ? mk_policy(n, rules, 60999, 2 + c * 7919 % (rules - 2), 1 + (unsigned)c)
			: mk_policy(n, rules, 61000 + (unsigned)c, 0, 0);
		uint64_t b0 = filters_built(m);
		double t0 = cpu_ms(), t1, t2;

		if (mapper_policy_set(m, 1, p) < 0)
			exit(1);
		t1 = cpu_ms();
		sent += flush(m, &bytes);
		t2 = cpu_ms();
		built += filters_built(m) - b0;
		set[c] = t1 - t0;
		fl[c] = t2 - t1;
		/* Back to the base policy, untimed, so that each change starts from it. */
		if (mapper_policy_set(m, 1, mk_policy(n, rules, 60999, 0, 0)) < 0)
			exit(1);
		flush(m, &(size_t){0});
	}
	qsort(set, changes, sizeof(double), cmp_d);
	qsort(fl, changes, sizeof(double), cmp_d);
	printf("%s_set_ms %.2f\n", name, set[changes / 2]);
	printf("%s_flush_ms %.2f\n", name, fl[changes / 2]);
	printf("%s_deltas %.1f\n", name, (double)sent / (double)changes);
	printf("%s_filters_built %.1f\n", name, (double)built / (double)changes);
	printf("%s_delta_kib %.1f\n", name, (double)bytes / (double)changes / 1024);
}

static struct control_node mk_node(size_t i)
{
	struct control_node x;
	uint32_t a = (uint32_t)(i + 1);

	memset(&x, 0, sizeof(x));
	x.id = i + 1;
	x.tailnet_id = 1;
	snprintf(x.name, sizeof(x.name), "node-%zu", i);
	snprintf(x.hostname, sizeof(x.hostname), "node-%zu", i);
	memcpy(x.machine_key, &a, sizeof(a));
	memcpy(x.node_key, &a, sizeof(a));
	x.node_key[31] = 1;
	x.ipv4[0] = 100;
	x.ipv4[1] = (uint8_t)(64 + (a >> 16));
	x.ipv4[2] = (uint8_t)(a >> 8);
	x.ipv4[3] = (uint8_t)a;
	x.approved = true;
	x.online = true;
	return x;
}

/*
 * A node joins with a map stream: the upsert, the recompile and flush that follow (the
 * dirty list recompiles first), then its own full map, as the server pays them.
 */
static void phase_join(struct mapper *m, size_t n, size_t changes)
{
	double t[64];
	size_t sent = 0, bytes = 0;
	uint64_t built = 0;

	for (size_t c = 0; c < changes; c++) {
		struct control_node x = mk_node(n);
		uint64_t b0 = filters_built(m);
		double t0 = cpu_ms();
		char *json;
		size_t len;

		if (mapper_node_upsert(m, &x, 1800000000) < 0)
			exit(1);
		sent += flush(m, &bytes);
		if (mapper_subscribe(m, x.id) < 0 || mapper_netmap_json(m, x.id, 1800000000, &json,
									&len) < 0)
			exit(1);
		free(json);
		t[c] = cpu_ms() - t0;
		built += filters_built(m) - b0;
		/* It leaves again, untimed, so that each join starts from the same tailnet. */
		if (mapper_node_remove(m, x.id) < 0)
			exit(1);
		flush(m, &(size_t){0});
	}
	qsort(t, changes, sizeof(double), cmp_d);
	printf("join_ms %.2f\n", t[changes / 2]);
	printf("join_deltas %.1f\n", (double)sent / (double)changes);
	printf("join_filters_built %.1f\n", (double)built / (double)changes);
}

/*
 * The allow-all policy over a fresh tailnet of n nodes, then STAR_MAPS nodes' full maps (every
 * node's would be n maps of n peers, hours here): what may_open costs at its largest.
 */
#define STAR_MAPS 100

static void phase_star(size_t n)
{
	static const char text[] = "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], "
				   "\"dst\": [\"*:*\"]}]}";
	struct control_tailnet t = {.id = 1};
	struct mapper *m = mapper_new();
	char err[POLICY_ERR_MAX];
	struct policy *p = NULL;
	size_t map_bytes = 0, reach_bytes = 0;
	double t0, t1, t2;

	if (!m || mapper_tailnet_upsert(m, &t) < 0 ||
	    policy_parse(text, sizeof(text) - 1, &p, err) < 0)
		exit(1);
	for (size_t i = 0; i < n; i++) {
		struct control_node x = mk_node(i);

		if (mapper_node_upsert(m, &x, 1800000000) < 0)
			exit(1);
	}
	t0 = cpu_ms();
	if (mapper_policy_set(m, 1, p) < 0)
		exit(1);
	t1 = cpu_ms();
	for (size_t i = 0; i < STAR_MAPS; i++) {
		const char *r;
		char *json;
		size_t len;

		if (mapper_subscribe(m, i + 1) < 0 ||
		    mapper_netmap_json(m, i + 1, 1800000000, &json, &len) < 0)
			exit(1);
		map_bytes += len;
		r = strstr(json, ",\"may_open\":");
		reach_bytes += r ? len - (size_t)(r - json) : 0;
		free(json);
	}
	t2 = cpu_ms();
	printf("star_set_ms %.2f\n", t1 - t0);
	printf("star_map_ms %.2f\n", (t2 - t1) / STAR_MAPS);
	printf("star_map_kib %.1f\n", (double)map_bytes / STAR_MAPS / 1024);
	printf("star_may_open_kib %.1f\n", (double)reach_bytes / STAR_MAPS / 1024);
	mapper_free(m);
}

/* The class phase's tailnet: node i is a server (i % 10 == 0), a db (1) or an eng device. */
static struct control_node class_node(size_t i)
{
	struct control_node x = mk_node(i);

	if (i % 10 > 1) {
		x.user_id = 1;
	} else {
		x.n_tags = 1;
		snprintf(x.tags[0], sizeof(x.tags[0]), "%s", i % 10 ? "tag:db" : "tag:server");
	}
	return x;
}

static void phase_class(size_t n, size_t changes)
{
	static const char text[] =
	    "{\"groups\": {\"group:eng\": [\"eng@example.com\"]},"
	    " \"tagOwners\": {\"tag:server\": [], \"tag:db\": []}, \"acls\": ["
	    "{\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:server:22\"],"
	    " \"proto\": \"tcp\"},"
	    "{\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:db:5432\"],"
	    " \"proto\": \"tcp\"}]}";
	struct control_tailnet t = {.id = 1};
	struct control_user u = {.id = 1, .tailnet_id = 1};
	struct mapper *m = mapper_new();
	char err[POLICY_ERR_MAX];
	struct policy *p = NULL;
	double tj[64], tl[64];
	size_t sent = 0, bytes = 0, lbytes = 0;

	snprintf(u.name, sizeof(u.name), "eng@example.com");
	if (!m || mapper_tailnet_upsert(m, &t) < 0 || mapper_user_upsert(m, &u) < 0 ||
	    policy_parse(text, sizeof(text) - 1, &p, err) < 0)
		exit(1);
	for (size_t i = 0; i < n; i++) {
		struct control_node x = class_node(i);

		if (mapper_node_upsert(m, &x, 1800000000) < 0)
			exit(1);
	}
	if (mapper_policy_set(m, 1, p) < 0)
		exit(1);
	for (size_t i = 0; i < n; i++) {
		char *json;
		size_t len;

		if (mapper_subscribe(m, i + 1) < 0 ||
		    (mapper_reach_patch_set && mapper_reach_patch_set(m, i + 1, true) < 0) ||
		    mapper_netmap_json(m, i + 1, 1800000000, &json, &len) < 0)
			exit(1);
		free(json);
	}
	flush(m, &(size_t){0});
	for (size_t c = 0; c < changes; c++) {
		struct control_node x = class_node(n + 10 - n % 10); /* a server */
		double t0 = cpu_ms(), t1;
		char *json;
		size_t len;

		if (mapper_node_upsert(m, &x, 1800000000) < 0)
			exit(1);
		sent += flush(m, &bytes);
		if (mapper_subscribe(m, x.id) < 0 ||
		    (mapper_reach_patch_set && mapper_reach_patch_set(m, x.id, true) < 0) ||
		    mapper_netmap_json(m, x.id, 1800000000, &json, &len) < 0)
			exit(1);
		free(json);
		t1 = cpu_ms();
		tj[c] = t1 - t0;
		if (mapper_node_remove(m, x.id) < 0)
			exit(1);
		flush(m, &lbytes);
		tl[c] = cpu_ms() - t1;
	}
	qsort(tj, changes, sizeof(double), cmp_d);
	qsort(tl, changes, sizeof(double), cmp_d);
	printf("class_join_ms %.2f\n", tj[changes / 2]);
	printf("class_join_deltas %.1f\n", (double)sent / (double)changes);
	printf("class_join_kib %.1f\n", (double)bytes / (double)changes / 1024);
	printf("class_leave_ms %.2f\n", tl[changes / 2]);
	printf("class_leave_kib %.1f\n", (double)lbytes / (double)changes / 1024);
	mapper_free(m);
}

int main(int argc, char **argv)
{
	size_t n = 1000, rules = 1000, changes = 5, bytes = 0;
	bool class_only = false;
	struct control_tailnet t = {.id = 1};
	struct mapper *m = mapper_new();
	double t0;
	int c;

	while ((c = getopt(argc, argv, "n:r:c:C")) != -1) {
		if (c == 'n')
			n = strtoul(optarg, NULL, 10);
		else if (c == 'r')
			rules = strtoul(optarg, NULL, 10);
		else if (c == 'c')
			changes = strtoul(optarg, NULL, 10);
		else if (c == 'C')
			class_only = true; /* the class phase alone */
		else
			return 2;
	}
	if (!m || n < 32 || rules < 3 || !changes || changes > 64)
		return 2;
	if (class_only) {
		mapper_free(m);
		printf("nodes %zu\n", n);
		phase_class(n, changes);
		return 0;
	}
	snprintf(t.name, sizeof(t.name), "bench");
	if (mapper_tailnet_upsert(m, &t) < 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		struct control_node x = mk_node(i);

		if (mapper_node_upsert(m, &x, 1800000000) < 0)
			return 1;
	}
	/* As in the server: the policy is in force before the streams open. */
	t0 = cpu_ms();
	if (mapper_policy_set(m, 1, mk_policy(n, rules, 60999, 0, 0)) < 0)
		return 1;
	printf("nodes %zu\nrules %zu\n", n, rules);
	printf("first_set_ms %.2f\n", cpu_ms() - t0);
	/* Every stream opens with its full netmap, as the server sends it. */
	for (size_t i = 0; i < n; i++) {
		char *json;
		size_t len;

		if (mapper_subscribe(m, i + 1) < 0 ||
		    mapper_netmap_json(m, i + 1, 1800000000, &json, &len) < 0)
			return 1;
		free(json);
	}
	flush(m, &bytes);
	phase(m, "every", n, rules, changes, false);
	phase(m, "one", n, rules, changes, true);
	phase_join(m, n, changes);
	mapper_free(m);
	phase_star(n);
	phase_class(n, changes);
	return 0;
}
