/* SPDX-License-Identifier: MIT */
/*
 * The packet filter's cost per packet (bench/filter_cost.sh builds and runs it, against this
 * tree's filter and, in the same run, another revision's): batches of 64 decrypted TCP
 * packets judged by filter_rx_batch, the same 1,000 rules in every case but the first:
 *
 *   no_policy                 no filter set (one flow)
 *   rules_1000_established    one established flow, the whole batch of it (a single stream)
 *   rules_1000_8_flows        8 established flows taking turns packet by packet (no runs)
 *   rules_1000_many_flows     32,768 established flows, each packet the next one (table hits
 *                             spread over the whole table: its memory, not the cache)
 *   rules_1000_new_flows      every packet a flow the table does not hold (the rules, an
 *                             insert, the eviction of the oldest from a full table)
 *   rules_1000_established_2_threads_a, _b
 *                             the established case on two threads at once (shared rules
 *                             guard, separate shards)
 *
 * Each batch is timed on its own (CLOCK_MONOTONIC, around filter_rx_batch only); printed per
 * case: "name median mean", nanoseconds per packet. The median is what a batch costs; the
 * mean also counts the batches during which the thread was preempted, which on a loaded
 * machine is most of it (2026-12-02, load 30 on 2 CPUs: a mean of 373 ns where the median
 * was tens).
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
#define PORT 5201
#define MANY 32768

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
	/* The last rule admits source 1 to port 5201 (the benchmark's flows). */
	v4(s[1998].addr, 1);
	d[999].port_first = d[999].port_last = PORT;
	if (filter_rules_compile(&nf, &out) < 0)
		abort();
	return out;
}

/* A filter with the rules and, established, the flows from source ports [first, first + n). */
static struct filter *filter_with(unsigned ct_max, unsigned first, unsigned n)
{
	struct filter *f = NULL;
	uint8_t syn[64];
	unsigned i;

	if (filter_new(ct_max, 1, &f) < 0)
		abort();
	filter_rules_set(f, rules_1000());
	for (i = 0; i < n; i++)
		if (!filter_rx(f, syn, tcp(syn, 1, first + i, PORT, 0x02), now_ns()))
			abort();
	return f;
}

struct run {
	const char *name;
	struct filter *f;
	struct pkt_pool *pool;
	/* Packet k of the run comes from source port first + k % flows. */
	unsigned first, flows;
	uint32_t ns[ITERS]; /* per batch */
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static void *run_main(void *arg)
{
	struct run *r = arg;
	struct pkt *pk[BATCH];
	uint64_t t0, k = 0;
	unsigned it, i;

	if (pkt_pool_get(r->pool, pk, BATCH) != BATCH)
		abort();
	for (it = 0; it < ITERS; it++) {
		for (i = 0; i < BATCH; i++) {
			unsigned sport = r->first + (unsigned)(k++ % r->flows);

			pk[i]->data = pk[i]->buf + PKT_HEADROOM;
			pk[i]->len = (uint32_t)tcp(pk[i]->data, 1, sport, PORT, 0x10);
		}
		t0 = now_ns();
		if (filter_rx_batch(r->f, pk, BATCH, t0) != BATCH)
			abort();
		r->ns[it] = (uint32_t)(now_ns() - t0);
	}
	pkt_free(pk, BATCH);
	return NULL;
}

static void report(struct run *r)
{
	double sum = 0;
	unsigned i;

	for (i = 0; i < ITERS; i++)
		sum += r->ns[i];
	qsort(r->ns, ITERS, sizeof(r->ns[0]), cmp_u32);
	printf("%s %.1f %.1f\n", r->name, (double)r->ns[ITERS / 2] / BATCH,
	       sum / ((double)ITERS * BATCH));
	fflush(stdout);
}

static void one(const char *name, struct filter *f, struct pkt_pool *pool, unsigned first,
		unsigned flows)
{
	static struct run r;

	r = (struct run){.name = name, .f = f, .pool = pool, .first = first, .flows = flows};
	run_main(&r);
	report(&r);
	filter_free(f);
}

int main(void)
{
	static struct run r[2];
	struct pkt_pool *pool = pkt_pool_new(4 * BATCH);
	struct filter *f = NULL;
	pthread_t t[2];
	unsigned i;

	if (!pool || filter_new(0, 1, &f) < 0)
		return 1;
	one("no_policy", f, pool, 40000, 1);
	one("rules_1000_established", filter_with(0, 40000, 1), pool, 40000, 1);
	one("rules_1000_8_flows", filter_with(0, 40000, 8), pool, 40000, 8);
	one("rules_1000_many_flows", filter_with(0, 1, MANY), pool, 1, MANY);
	/* 65,535 source ports through a table of 4,096: each long gone when it comes back. */
	one("rules_1000_new_flows", filter_with(4096, 1, 0), pool, 1, 65535);
	f = filter_with(0, 41000, 2);
	for (i = 0; i < 2; i++) {
		r[i] = (struct run){.f = f, .pool = pool, .first = 41000 + i, .flows = 1};
		r[i].name =
		    i ? "rules_1000_established_2_threads_b" : "rules_1000_established_2_threads_a";
		pthread_create(&t[i], NULL, run_main, &r[i]);
	}
	for (i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < 2; i++)
		report(&r[i]);
	filter_free(f);
	pkt_pool_free(pool);
	return 0;
}
