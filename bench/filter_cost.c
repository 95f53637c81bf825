/* SPDX-License-Identifier: MIT */
/*
 * The packet filter's cost per packet (bench/filter.sh builds and runs it): batches of 64
 * decrypted TCP packets judged by filter_rx_batch with no policy, with 1,000 rules on an
 * established flow (a flow-table hit), on new flows (the rules, then an insert), and the
 * established case on two threads at once (shared rules guard, separate shards).
 * Prints "name ns_per_packet" lines.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/pkt.h"
#include "filter/filter.h"
#include "proto/netmap.h"

#define BATCH 64
#define ITERS 20000

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void v4(uint8_t *a, unsigned x)
{
	a[0] = 100, a[1] = 64 + (x >> 16) % 64, a[2] = (uint8_t)(x >> 8), a[3] = (uint8_t)x;
}

static size_t tcp(uint8_t *p, unsigned src, unsigned sport, unsigned dport, uint8_t flags)
{
	memset(p, 0, 40);
	p[0] = 0x45, p[3] = 40, p[8] = 64, p[9] = 6;
	v4(p + 12, src);
	v4(p + 16, 7);
	p[20] = (uint8_t)(sport >> 8), p[21] = (uint8_t)sport;
	p[22] = (uint8_t)(dport >> 8), p[23] = (uint8_t)dport;
	p[32] = 0x50, p[33] = flags;
	return 40;
}

static struct filter_rules *rules_1000(void)
{
	static struct netmap_filter_rule r[1000];
	static struct netmap_prefix s[2000];
	static struct netmap_filter_dst d[1000];
	struct netmap_filter nf = {
	    .n_rules = 1000, .n_srcs = 2000, .n_dsts = 1000, .rules = r, .srcs = s, .dsts = d};
	struct filter_rules *out = NULL;
	unsigned i;

	srand(12);
	for (i = 0; i < 1000; i++) {
		unsigned lo = 1 + (unsigned)rand() % 60000;

		r[i] = (struct netmap_filter_rule){.src_off = 2 * i,
						   .n_src = 2,
						   .dst_off = i,
						   .n_dst = 1,
						   .n_protos = 1,
						   .protos = {6}};
		s[2 * i] = (struct netmap_prefix){.family = AF_INET, .len = 32};
		v4(s[2 * i].addr, 1000 + (unsigned)rand() % 100000);
		s[2 * i + 1] = (struct netmap_prefix){.family = AF_INET, .len = 24};
		v4(s[2 * i + 1].addr, (unsigned)rand() << 8);
		d[i].prefix = (struct netmap_prefix){.family = AF_INET, .len = 32};
		v4(d[i].prefix.addr, 7);
		d[i].port_first = (uint16_t)lo;
		d[i].port_last = (uint16_t)(lo + (i % 3 ? 0 : 1000));
	}
	/* The last rule admits source 1 to port 5201 (the benchmark's flow). */
	v4(s[1998].addr, 1);
	d[999].port_first = d[999].port_last = 5201;
	if (filter_rules_compile(&nf, &out) < 0)
		abort();
	return out;
}

struct run {
	struct filter *f;
	struct pkt_pool *pool;
	unsigned sport_base;
	int fresh; /* new flows each packet */
	double ns;
};

static void *run_main(void *arg)
{
	struct run *r = arg;
	struct pkt *pk[BATCH];
	uint64_t t0, total = 0, flow = 0;
	unsigned it, i;

	if (pkt_pool_get(r->pool, pk, BATCH) != BATCH)
		abort();
	for (it = 0; it < ITERS; it++) {
		for (i = 0; i < BATCH; i++) {
			unsigned sport = r->fresh ? (unsigned)(flow++ % 60000) + 1 : r->sport_base;

			pk[i]->data = pk[i]->buf + PKT_HEADROOM;
			pk[i]->len = (uint32_t)tcp(pk[i]->data, 1, sport, 5201, 0x10);
		}
		t0 = now_ns();
		if (filter_rx_batch(r->f, pk, BATCH, t0) != BATCH)
			abort();
		total += now_ns() - t0;
	}
	pkt_free(pk, BATCH);
	r->ns = (double)total / ((double)ITERS * BATCH);
	return NULL;
}

static double one(struct filter *f, struct pkt_pool *pool, unsigned sport, int fresh)
{
	struct run r = {.f = f, .pool = pool, .sport_base = sport, .fresh = fresh};

	run_main(&r);
	return r.ns;
}

int main(void)
{
	struct pkt_pool *pool = pkt_pool_new(4 * BATCH);
	struct filter *f = NULL;
	struct run r[2];
	pthread_t t[2];
	uint8_t syn[64];
	unsigned i;

	if (!pool || filter_new(0, 1, &f) < 0)
		return 1;
	printf("no_policy %.1f\n", one(f, pool, 40000, 0));
	filter_rules_set(f, rules_1000());
	filter_rx(f, syn, tcp(syn, 1, 40000, 5201, 0x02), now_ns());
	printf("rules_1000_established %.1f\n", one(f, pool, 40000, 0));
	printf("rules_1000_new_flows %.1f\n", one(f, pool, 0, 1));
	for (i = 0; i < 2; i++) {
		r[i] = (struct run){.f = f, .pool = pool, .sport_base = 41000 + i};
		filter_rx(f, syn, tcp(syn, 1, 41000 + i, 5201, 0x02), now_ns());
	}
	for (i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, run_main, &r[i]);
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	printf("rules_1000_established_2_threads %.1f %.1f\n", r[0].ns, r[1].ns);
	filter_free(f);
	pkt_pool_free(pool);
	return 0;
}
