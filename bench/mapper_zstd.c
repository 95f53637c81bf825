/* SPDX-License-Identifier: MIT */
/*
 * mapper_zstd: what a full netmap costs trellis-control when every stream of a tailnet
 * opens at once (a restart), as JSON and as zstd frames (control/mapzc.h), without sockets.
 * The mapper holds N nodes of one tailnet with endpoints and no policy; every node gets
 * its full map, first all as JSON, then all compressed, then all as JSON again (the two
 * JSON rounds bracket the compressed one against a machine whose speed drifts), then a
 * sample compressed whole per stream, as without the block cache. Timed as
 * CPU time of the process; the compressed round includes the block cache's first fill.
 * What goes on the wire is these bytes plus the channel's 20 bytes per 64 KiB frame.
 * Prints "key value" lines.
 *
 *   mapper_zstd [-n NODES]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "base/endpoint.h"
#include "control/mapper.h"
#include "control/mapzc.h"
#include "proto/ctrlmsg.h"

static double cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* CPU time: the machine may be busy */
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static struct control_node mk_node(size_t i)
{
	struct control_node x;
	uint32_t a = (uint32_t)(i + 1);
	char ep[64];

	memset(&x, 0, sizeof(x));
	x.id = i + 1;
	x.tailnet_id = 1;
	snprintf(x.name, sizeof(x.name), "node-%zu", i);
	snprintf(x.hostname, sizeof(x.hostname), "node-%zu", i);
	snprintf(x.os, sizeof(x.os), "linux");
	/* Keys are random-looking on a real server: they do not compress. */
	for (size_t k = 0; k < sizeof(x.node_key); k++) {
		x.machine_key[k] = (uint8_t)(a * 2654435761u >> (k % 24));
		x.node_key[k] = (uint8_t)((a + k) * 40503u >> (k % 13));
	}
	x.ipv4[0] = 100;
	x.ipv4[1] = (uint8_t)(64 + (a >> 16));
	x.ipv4[2] = (uint8_t)(a >> 8);
	x.ipv4[3] = (uint8_t)a;
	snprintf(ep, sizeof(ep), "198.51.%u.%u:%u", (a >> 8) & 255, a & 255, 41641 + a % 1000);
	x.n_endpoints = endpoint_parse(&x.endpoints[0], ep) == 0;
	x.approved = true;
	x.online = true;
	x.created = 1800000000;
	return x;
}

static void round_json(struct mapper *m, size_t n, const char *name)
{
	double t0 = cpu_ms();
	size_t bytes = 0;

	for (size_t i = 0; i < n; i++) {
		char *json;
		size_t len;

		if (mapper_netmap_json(m, i + 1, 1800000000, &json, &len) < 0)
			exit(1);
		bytes += len;
		free(json);
	}
	printf("%s_ms_per_map %.3f\n%s_bytes_per_map %zu\n", name, (cpu_ms() - t0) / (double)n,
	       name, bytes / n);
}

/* What it would cost without the block cache: the whole text compressed per stream (a sample). */
static void round_naive(struct mapper *m, size_t n)
{
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	double t0 = cpu_ms();
	size_t bytes = 0;

	for (size_t i = 0; cc && i < n; i++) {
		size_t len, cap, k;
		char *json;
		void *z;

		if (mapper_netmap_json(m, i + 1, 1800000000, &json, &len) < 0)
			exit(1);
		cap = ZSTD_compressBound(len);
		z = malloc(cap);
		k = z ? ZSTD_compressCCtx(cc, z, cap, json, len, MAPZC_LEVEL) : 0;
		if (!z || ZSTD_isError(k))
			exit(1);
		bytes += k;
		free(z);
		free(json);
	}
	printf("naive_ms_per_map %.3f\nnaive_bytes_per_map %zu\n", (cpu_ms() - t0) / (double)n,
	       bytes / n);
	ZSTD_freeCCtx(cc);
}

int main(int argc, char **argv)
{
	struct control_tailnet t = {.id = 1};
	struct mapper *m = mapper_new();
	struct mapzc_stats st;
	size_t n = 1000, bytes = 0;
	double t0;
	int c;

	while ((c = getopt(argc, argv, "n:")) != -1) {
		if (c == 'n')
			n = strtoul(optarg, NULL, 10);
		else
			return 2;
	}
	if (!m || n < 2)
		return 2;
	snprintf(t.name, sizeof(t.name), "bench");
	if (mapper_tailnet_upsert(m, &t) < 0)
		return 1;
	for (size_t i = 0; i < n; i++) {
		struct control_node x = mk_node(i);

		if (mapper_node_upsert(m, &x, 1800000000) < 0 || mapper_subscribe(m, x.id) < 0)
			return 1;
	}
	printf("nodes %zu\n", n);
	round_json(m, n, "json");
	t0 = cpu_ms();
	for (size_t i = 0; i < n; i++) {
		uint8_t *z;
		size_t len;

		if (mapper_netmap_zstd(m, i + 1, 1800000000, &z, &len) < 0)
			return 1;
		bytes += len;
		free(z);
	}
	printf("zstd_ms_per_map %.3f\nzstd_bytes_per_map %zu\n", (cpu_ms() - t0) / (double)n,
	       bytes / n);
	round_json(m, n, "json_again");
	round_naive(m, n < 200 ? n : 200);
	if (mapper_zstd_stats(m, &st) == 0)
		printf("zstd_blocks_reused %llu\nzstd_frames_made %llu\nzstd_cache_kib %zu\n",
		       (unsigned long long)st.blocks_reused, (unsigned long long)st.blocks_made,
		       st.cached / 1024);
	mapper_free(m);
	return 0;
}
