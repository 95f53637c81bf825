/* SPDX-License-Identifier: MIT */
/*
 * Flow accounting (node/flowtable.c): packets and bytes each way per flow, from
 * the node's side; an echo request and its reply are one flow; denied packets
 * counted apart; two threads' counts of one flow merged at the flush; a full
 * table counts the flows it cannot hold once each (exactly while few, estimated
 * beyond) and every packet it could not count; a flush starts the next interval
 * from zero, also in a slot reused two flushes later; what the node sends to
 * link-scope addresses (its own ND and MLD) is counted apart, not as flows. The .c
 * is included to fill a thread's table and to fix the hash seed.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "node/flowtable.c"

/* An IPv4 packet of len bytes from a to b (100.64.0.a -> 100.64.0.b). */
static size_t ip4(uint8_t *p, size_t len, uint8_t proto, unsigned a, unsigned b, uint16_t sport,
		  uint16_t dport)
{
	memset(p, 0, len);
	p[0] = 0x45;
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
	p[9] = proto;
	p[12] = 100, p[13] = 64, p[15] = (uint8_t)a;
	p[16] = 100, p[17] = 64, p[19] = (uint8_t)b;
	p[20] = (uint8_t)(sport >> 8), p[21] = (uint8_t)sport;
	p[22] = (uint8_t)(dport >> 8), p[23] = (uint8_t)dport;
	return len;
}

static const struct flowbatch_record *find(const struct flowbatch_record *r, int n, uint8_t proto,
					   uint16_t lport)
{
	for (int i = 0; i < n; i++)
		if (r[i].proto == proto && r[i].src_port == lport)
			return &r[i];
	fail_msg("no flow %u/%u", proto, lport);
	return NULL;
}

static void test_counts(void **state)
{
	struct flowtable *ft = NULL;
	struct flowbatch_record *r;
	const struct flowbatch_record *f;
	uint8_t p[1500];
	struct flowtable_overflow overflow;
	int n;

	(void)state;
	assert_int_equal(flowtable_new(&ft), 0);
	/* We (.1) open TCP to .2:22: 3 packets out, 2 back; 1 more refused by the filter. */
	for (int i = 0; i < 3; i++)
		flowtable_packet(ft, p, ip4(p, 100, 6, 1, 2, 40000, 22), FLOWTABLE_TX, 10);
	for (int i = 0; i < 2; i++)
		flowtable_packet(ft, p, ip4(p, 1000, 6, 2, 1, 22, 40000), FLOWTABLE_RX, 20);
	flowtable_packet(ft, p, ip4(p, 60, 6, 2, 1, 22, 40000), FLOWTABLE_DENIED, 30);
	/* .2 pings us: request in, reply out, one flow keyed by the request. */
	ip4(p, 84, 1, 2, 1, 0, 0);
	p[20] = 8, p[24] = 0x12, p[25] = 0x34;
	flowtable_packet(ft, p, 84, FLOWTABLE_RX, 40);
	ip4(p, 84, 1, 1, 2, 0, 0);
	p[20] = 0, p[24] = 0x12, p[25] = 0x34;
	flowtable_packet(ft, p, 84, FLOWTABLE_TX, 50);
	/* Not IP: not counted. */
	memset(p, 0, 40);
	flowtable_packet(ft, p, 40, FLOWTABLE_TX, 60);

	n = flowtable_flush(ft, 1000, &r, &overflow);
	assert_int_equal(n, 2);
	assert_int_equal(overflow.flows, 0);
	assert_int_equal(overflow.packets, 0);
	f = find(r, n, 6, 40000);
	assert_int_equal(f->dst_port, 22);
	assert_int_equal(f->src[15], 1);
	assert_int_equal(f->dst[15], 2);
	assert_int_equal(f->src[10], 0xff); /* IPv4 mapped */
	assert_int_equal(f->tx_packets, 3);
	assert_int_equal(f->tx_bytes, 300);
	assert_int_equal(f->rx_packets, 2);
	assert_int_equal(f->rx_bytes, 2000);
	assert_int_equal(f->denied, 1);
	assert_int_equal(f->flags, 0); /* we opened it */
	assert_int_equal(f->first_ns, 1010);
	assert_int_equal(f->last_ns, 1030);
	f = find(r, n, 1, 0x1234);
	assert_int_equal(f->icmp_type, 8);
	assert_int_equal(f->rx_packets, 1);
	assert_int_equal(f->tx_packets, 1);
	assert_int_equal(f->flags, FLOWBATCH_F_INBOUND);
	free(r);
	/* The next interval starts from nothing. */
	assert_int_equal(flowtable_flush(ft, 0, &r, &overflow), 0);
	free(r);
	flowtable_free(ft);
}

/*
 * A flow that goes on counts each interval afresh: its slot in the table the writer comes
 * back to two flushes later starts from zero, not from the interval before last.
 */
static void test_slot_reused(void **state)
{
	struct flowtable *ft = NULL;
	struct flowbatch_record *r;
	const struct flowbatch_record *f;
	uint8_t p[1500];
	struct flowtable_overflow overflow;
	int n;

	(void)state;
	assert_int_equal(flowtable_new(&ft), 0);
	for (int i = 0; i < 3; i++)
		flowtable_packet(ft, p, ip4(p, 100, 6, 1, 2, 40000, 22), FLOWTABLE_TX, 10);
	flowtable_packet(ft, p, ip4(p, 60, 6, 2, 1, 22, 40000), FLOWTABLE_DENIED, 15);
	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_int_equal(n, 1);
	free(r);
	/* The other table: nothing. */
	assert_int_equal(flowtable_flush(ft, 0, &r, &overflow), 0);
	free(r);
	/* Back in the first table, the same flow (the same slot), one packet in. */
	flowtable_packet(ft, p, ip4(p, 500, 6, 2, 1, 22, 40000), FLOWTABLE_RX, 30);
	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_int_equal(n, 1);
	f = find(r, n, 6, 40000);
	assert_int_equal(f->tx_packets, 0);
	assert_int_equal(f->tx_bytes, 0);
	assert_int_equal(f->rx_packets, 1);
	assert_int_equal(f->rx_bytes, 500);
	assert_int_equal(f->denied, 0);
	assert_int_equal(f->first_ns, 30);
	assert_int_equal(f->flags, FLOWBATCH_F_INBOUND);
	free(r);
	flowtable_free(ft);
}

/* An ICMPv6 packet of len bytes, type t, echo id id, from src to dst (16 bytes each). */
static size_t icmp6(uint8_t *p, size_t len, const char *src, const char *dst, uint8_t t,
		    uint16_t id)
{
	memset(p, 0, len);
	p[0] = 0x60;
	p[4] = (uint8_t)((len - 40) >> 8), p[5] = (uint8_t)(len - 40);
	p[6] = 58;
	p[7] = 255;
	assert_int_equal(inet_pton(AF_INET6, src, p + 8), 1);
	assert_int_equal(inet_pton(AF_INET6, dst, p + 24), 1);
	p[40] = t;
	p[44] = (uint8_t)(id >> 8), p[45] = (uint8_t)id;
	return len;
}

/* An IPv4 UDP packet from 100.64.0.1 to dst (dotted). */
static size_t udp4_to(uint8_t *p, const char *dst)
{
	ip4(p, 60, 17, 1, 0, 5353, 5353);
	assert_int_equal(inet_pton(AF_INET, dst, p + 16), 1);
	return 60;
}

/*
 * The node's own neighbour discovery and MLD on the TUN go to addresses no peer is
 * reached at (the engine drops them): counted apart, never a flow its peer could not
 * confirm. ICMPv6 echo between tailnet addresses stays one flow, as both ends key it; and
 * what a peer delivers counts whatever its destination.
 */
static void test_link_scope(void **state)
{
	static const char me[] = "fd7e:11e5:7a11::6440:1", peer[] = "fd7e:11e5:7a11::6440:2",
			  ll[] = "fe80::3ffd:b8fb:7cbe:7603";
	struct flowtable *ft = NULL;
	struct flowbatch_record *r;
	const struct flowbatch_record *f;
	uint8_t p[1500], a[16];
	struct flowtable_overflow overflow;
	int n;

	(void)state;
	assert_int_equal(flowtable_new(&ft), 0);
	/* Router solicitation, MLDv2 report, DAD and a unicast neighbour solicitation. */
	flowtable_packet(ft, p, icmp6(p, 48, ll, "ff02::2", 133, 0), FLOWTABLE_TX, 10);
	flowtable_packet(ft, p, icmp6(p, 76, ll, "ff02::16", 143, 0), FLOWTABLE_TX, 10);
	flowtable_packet(ft, p, icmp6(p, 72, "::", "ff02::1:ffbe:7603", 135, 0), FLOWTABLE_TX, 10);
	flowtable_packet(ft, p, icmp6(p, 72, ll, "fe80::1", 135, 0), FLOWTABLE_TX, 10);
	/* IPv4 mDNS, broadcast, link-local. */
	flowtable_packet(ft, p, udp4_to(p, "224.0.0.251"), FLOWTABLE_TX, 10);
	flowtable_packet(ft, p, udp4_to(p, "255.255.255.255"), FLOWTABLE_TX, 10);
	flowtable_packet(ft, p, udp4_to(p, "169.254.1.1"), FLOWTABLE_TX, 10);
	/* We ping the peer over IPv6: request out, reply in. */
	flowtable_packet(ft, p, icmp6(p, 104, me, peer, 128, 0x4456), FLOWTABLE_TX, 20);
	flowtable_packet(ft, p, icmp6(p, 104, peer, me, 129, 0x4456), FLOWTABLE_RX, 30);
	/* A peer's packet to a multicast address reached our TUN: it is counted. */
	flowtable_packet(ft, p, icmp6(p, 104, peer, "ff02::1", 128, 7), FLOWTABLE_RX, 40);

	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_int_equal(overflow.link_scope, 7);
	assert_int_equal(overflow.flows, 0);
	assert_int_equal(overflow.packets, 0);
	assert_int_equal(n, 2);
	f = find(r, n, 58, 0x4456);
	assert_int_equal(f->icmp_type, 128);
	assert_int_equal(f->dst_port, 0x4456);
	assert_int_equal(inet_pton(AF_INET6, me, a), 1);
	assert_memory_equal(f->src, a, 16);
	assert_int_equal(inet_pton(AF_INET6, peer, a), 1);
	assert_memory_equal(f->dst, a, 16);
	assert_int_equal(f->tx_packets, 1);
	assert_int_equal(f->tx_bytes, 104);
	assert_int_equal(f->rx_packets, 1);
	assert_int_equal(f->rx_bytes, 104);
	f = find(r, n, 58, 7);
	assert_int_equal(inet_pton(AF_INET6, "ff02::1", a), 1);
	assert_memory_equal(f->src, a, 16);
	assert_int_equal(f->rx_packets, 1);
	assert_int_equal(f->tx_packets, 0);
	free(r);
	flowtable_free(ft);
}

/*
 * A flush reads only the slots flows were counted in (issue 14): reading every slot's flag
 * made both tables of every counting thread resident on an idle node. A flag set behind
 * the table's back, in a slot no flow claimed, is never looked at.
 */
static void test_flush_reads_used_slots(void **state)
{
	struct flowtable *ft = NULL;
	struct flowbatch_record *r;
	struct flowtable_overflow overflow;
	struct table *t;
	uint8_t p[100];
	unsigned claimed = 0;

	(void)state;
	assert_int_equal(flowtable_new(&ft), 0);
	flowtable_packet(ft, p, ip4(p, 100, 6, 1, 2, 40000, 22), FLOWTABLE_TX, 10);
	t = &my_shard->t[atomic_load(&my_shard->active)];
	for (unsigned w = 0; w < FLOWTABLE_SLOTS / 64; w++)
		claimed += (unsigned)__builtin_popcountll(t->used[w]);
	assert_int_equal(claimed, 1);
	/* The slot after the flow's probe run cannot be its own. */
	for (unsigned i = 0; i < FLOWTABLE_SLOTS; i++)
		if (t->e[i].used) {
			t->e[(i + PROBES) % FLOWTABLE_SLOTS].used = true;
			break;
		}
	assert_int_equal(flowtable_flush(ft, 0, &r, &overflow), 1);
	assert_int_equal(r[0].src_port, 40000);
	free(r);
	flowtable_free(ft);
}

struct worker {
	struct flowtable *ft;
	int dir;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint8_t p[200];

	for (int i = 0; i < 1000; i++)
		flowtable_packet(w->ft, p,
				 w->dir == FLOWTABLE_TX ? ip4(p, 200, 17, 1, 2, 5000, 6000)
							: ip4(p, 200, 17, 2, 1, 6000, 5000),
				 w->dir, 5);
	return NULL;
}

static void test_threads_and_overflow(void **state)
{
	struct flowtable *ft = NULL;
	struct flowbatch_record *r;
	struct worker tx, rx;
	pthread_t a, b;
	uint8_t p[64];
	struct flowtable_overflow overflow;
	int n;

	(void)state;
	assert_int_equal(flowtable_new(&ft), 0);
	tx = (struct worker){ft, FLOWTABLE_TX};
	rx = (struct worker){ft, FLOWTABLE_RX};
	assert_int_equal(pthread_create(&a, NULL, worker_main, &tx), 0);
	assert_int_equal(pthread_create(&b, NULL, worker_main, &rx), 0);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	/* Two shards, one flow: merged. */
	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_int_equal(n, 1);
	assert_int_equal(r[0].tx_packets, 1000);
	assert_int_equal(r[0].rx_packets, 1000);
	assert_int_equal(r[0].rx_bytes, 200000);
	free(r);
	/* 3x the table in distinct flows, one packet each, then each again: every flow that
	 * found no slot is counted once (estimated: past the exact list), every packet. */
	ft->seed = 12; /* the estimate's error depends on the hash: one fixed seed */
	for (int round = 0; round < 2; round++)
		for (unsigned i = 0; i < 3 * FLOWTABLE_SLOTS; i++)
			flowtable_packet(ft, p, ip4(p, 64, 17, 1, 2, (uint16_t)i, 53), FLOWTABLE_TX,
					 1);
	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_true(n <= FLOWTABLE_SLOTS);
	assert_int_equal(overflow.packets, 2 * (3 * FLOWTABLE_SLOTS - (unsigned)n));
	/* Standard error ~0.4 % at these counts: 2 % is five of them. */
	assert_in_range(overflow.flows, (3 * FLOWTABLE_SLOTS - (unsigned)n) * 98 / 100,
			(3 * FLOWTABLE_SLOTS - (unsigned)n) * 102 / 100);
	free(r);
	flowtable_free(ft);
}

/* Every slot of the calling thread's current table taken by a flow no packet here has. */
static void fill(struct flowtable *ft)
{
	uint8_t p[64];
	struct table *t;

	flowtable_packet(ft, p, ip4(p, 64, 17, 9, 9, 1, 1), FLOWTABLE_TX, 1); /* the shard */
	t = &my_shard->t[atomic_load(&my_shard->active)];
	for (unsigned i = 0; i < FLOWTABLE_SLOTS; i++) {
		t->e[i].used = true;
		t->e[i].k.proto = 250;
		t->e[i].k.lport = (uint16_t)i;
	}
	memset(t->used, 0xff, sizeof(t->used));
}

struct misser {
	struct flowtable *ft;
	unsigned flows, packets;
};

/* Fills its own table, then sends `packets` packets on each of `flows` flows. */
static void *misser_main(void *arg)
{
	struct misser *m = arg;
	uint8_t p[100];

	fill(m->ft);
	for (unsigned k = 0; k < m->packets; k++)
		for (unsigned i = 0; i < m->flows; i++)
			flowtable_packet(m->ft, p, ip4(p, 100, 6, 1, 2, (uint16_t)(40000 + i), 443),
					 FLOWTABLE_TX, 2);
	return NULL;
}

/* flows_dropped (docs/audit.md) counts flows, not packets: once per interval each. */
static void test_overflow_counts_flows(void **state)
{
	struct flowtable *ft = NULL;
	struct flowbatch_record *r;
	struct flowtable_overflow overflow;
	struct misser a, b;
	pthread_t ta, tb;
	int n;

	(void)state;
	assert_int_equal(flowtable_new(&ft), 0);
	/* One thread: 5 flows of 10 packets each, none with a slot. */
	a = (struct misser){ft, 5, 10};
	assert_int_equal(pthread_create(&ta, NULL, misser_main, &a), 0);
	pthread_join(ta, NULL);
	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_int_equal(n, FLOWTABLE_SLOTS); /* the filler */
	assert_int_equal(overflow.flows, 5);
	assert_int_equal(overflow.packets, 50);
	free(r);
	/* Two threads miss the same 3 flows (and one misses 2 more): 5 flows, not 8. */
	a = (struct misser){ft, 3, 4};
	b = (struct misser){ft, 5, 2};
	assert_int_equal(pthread_create(&ta, NULL, misser_main, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, misser_main, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_int_equal(overflow.flows, 5);
	assert_int_equal(overflow.packets, 3 * 4 + 5 * 2);
	free(r);
	/* The next interval starts from nothing, the missed flows forgotten. */
	assert_int_equal(flowtable_flush(ft, 0, &r, &overflow), 0);
	assert_int_equal(overflow.flows, 0);
	assert_int_equal(overflow.packets, 0);
	free(r);
	/* Past the exact list (64 a thread): 1,000 flows of 3 packets, estimated. */
	ft->seed = 7;
	a = (struct misser){ft, 1000, 3};
	assert_int_equal(pthread_create(&ta, NULL, misser_main, &a), 0);
	pthread_join(ta, NULL);
	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_in_range(overflow.flows, 980, 1020);
	assert_int_equal(overflow.packets, 3000);
	free(r);
	/* A table that ran out is exact again the next interval. */
	a = (struct misser){ft, 2, 7};
	assert_int_equal(pthread_create(&ta, NULL, misser_main, &a), 0);
	pthread_join(ta, NULL);
	n = flowtable_flush(ft, 0, &r, &overflow);
	assert_int_equal(overflow.flows, 2);
	assert_int_equal(overflow.packets, 14);
	free(r);
	flowtable_free(ft);
}

/*
 * The linear-counting estimate without libm: ln against reference values (Python's
 * math.log), and the estimate for some zero counts as llround(m * log(m / zero)) gave it.
 */
static void test_overflow_estimate_ln(void **state)
{
	static const struct {
		double x, ln;
	} ref[] = {{1.0, 0.0},
		   {1.5, 0.4054651081081644},
		   {2.0, 0.6931471805599453},
		   {3.0, 1.0986122886681098},
		   {10.0, 2.302585092994046},
		   {1000.5, 6.908255154023788},
		   {32768.0, 10.39720770839918}};
	static const struct {
		unsigned zero;
		uint32_t flows;
	} est[] = {{0, 340696},	   {1, 340696},	   {2, 317983}, {3, 304696}, {100, 189793},
		   {1000, 114342}, {12345, 31988}, {32767, 1},	{32768, 0}};
	struct overflow_merge om = {0};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(ref); i++) {
		double d = ln_1_to_ovf(ref[i].x) - ref[i].ln;

		assert_true(d < 1e-14 && d > -1e-14);
	}
	for (size_t i = 0; i < ARRAY_SIZE(est); i++) {
		/* The first OVF_BITS - zero bits set. */
		memset(om.bits, 0, sizeof(om.bits));
		for (unsigned b = 0; b < OVF_BITS - est[i].zero; b++)
			om.bits[b / 64] |= 1ULL << (b % 64);
		assert_int_equal(overflow_flows(&om), est[i].flows);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_counts),
	    cmocka_unit_test(test_slot_reused),
	    cmocka_unit_test(test_flush_reads_used_slots),
	    cmocka_unit_test(test_threads_and_overflow),
	    cmocka_unit_test(test_overflow_counts_flows),
	    cmocka_unit_test(test_overflow_estimate_ln),
	    cmocka_unit_test(test_link_scope),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
