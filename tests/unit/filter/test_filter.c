/* SPDX-License-Identifier: MIT */
/*
 * The packet filter: the compiler against a naive reading of the rules on random filters
 * (small ones, and ones over the whole port range big enough for the port index),
 * a table of verdicts (TCP, UDP, ICMP, IPv4 and IPv6, port ranges, replies to our flows,
 * ICMP errors quoting flows, fragments, bad packets), timeouts on an injected clock,
 * eviction from a full table, a filter change keeping the node's flows and closing revoked
 * ones, batches against the same packets one by one on random traffic, and a batch on several
 * threads while the rules change.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../alloc_count.h"
#include "base/pkt.h"
#include "filter/filter.h"
#include "proto/netmap.h"

#define S (1000000000ULL)

/* --- building filters --- */

struct fb {
	struct netmap_filter nf;
	struct netmap_filter_rule rules[64];
	struct netmap_prefix srcs[256];
	struct netmap_filter_dst dsts[256];
};

static void pfx(struct netmap_prefix *p, const char *s)
{
	char buf[64];
	char *slash;

	strcpy(buf, s);
	slash = strchr(buf, '/');
	assert_non_null(slash);
	*slash = 0;
	memset(p, 0, sizeof(*p));
	p->len = (uint8_t)atoi(slash + 1);
	if (inet_pton(AF_INET, buf, p->addr) == 1) {
		p->family = AF_INET;
	} else {
		assert_int_equal(inet_pton(AF_INET6, buf, p->addr), 1);
		p->family = AF_INET6;
	}
}

static void fb_init(struct fb *b)
{
	memset(b, 0, sizeof(*b));
	b->nf.rules = b->rules;
	b->nf.srcs = b->srcs;
	b->nf.dsts = b->dsts;
}

/* srcs: "a/n,b/n"; dst "p/n" ports lo-hi; protos 0-terminated. */
static void fb_rule(struct fb *b, const char *srcs, const char *dst, unsigned lo, unsigned hi,
		    const uint8_t *protos)
{
	struct netmap_filter_rule *r = &b->rules[b->nf.n_rules++];
	char buf[512];
	char *tok, *save;

	r->src_off = b->nf.n_srcs;
	strcpy(buf, srcs);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		pfx(&b->srcs[b->nf.n_srcs++], tok);
	r->n_src = b->nf.n_srcs - r->src_off;
	r->dst_off = b->nf.n_dsts;
	strcpy(buf, dst);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		struct netmap_filter_dst *d = &b->dsts[b->nf.n_dsts++];

		pfx(&d->prefix, tok);
		d->port_first = (uint16_t)lo;
		d->port_last = (uint16_t)hi;
	}
	r->n_dst = b->nf.n_dsts - r->dst_off;
	while (protos && *protos)
		r->protos[r->n_protos++] = *protos++;
}

static struct filter_rules *fb_compile(struct fb *b)
{
	struct filter_rules *r = NULL;

	assert_int_equal(filter_rules_compile(&b->nf, &r), 0);
	return r;
}

/* --- building packets --- */

static void addr(int family, const char *s, uint8_t *out)
{
	assert_int_equal(inet_pton(family, s, out), 1);
}

/* An IP packet from src to dst with the l4 bytes; returns its length. */
static size_t ip_pkt(uint8_t *out, const char *src, const char *dst, uint8_t proto,
		     const uint8_t *l4, size_t l4len)
{
	if (strchr(src, ':')) {
		memset(out, 0, 40);
		out[0] = 0x60;
		out[4] = (uint8_t)(l4len >> 8);
		out[5] = (uint8_t)l4len;
		out[6] = proto;
		out[7] = 64;
		addr(AF_INET6, src, out + 8);
		addr(AF_INET6, dst, out + 24);
		memcpy(out + 40, l4, l4len);
		return 40 + l4len;
	}
	memset(out, 0, 20);
	out[0] = 0x45;
	out[2] = (uint8_t)((20 + l4len) >> 8);
	out[3] = (uint8_t)(20 + l4len);
	out[8] = 64;
	out[9] = proto;
	addr(AF_INET, src, out + 12);
	addr(AF_INET, dst, out + 16);
	memcpy(out + 20, l4, l4len);
	return 20 + l4len;
}

#define SYN 0x02
#define ACK 0x10
#define FIN 0x01
#define RST 0x04

static size_t tcp(uint8_t *out, const char *src, unsigned sport, const char *dst, unsigned dport,
		  uint8_t flags)
{
	uint8_t l4[20] = {0};

	l4[0] = (uint8_t)(sport >> 8), l4[1] = (uint8_t)sport;
	l4[2] = (uint8_t)(dport >> 8), l4[3] = (uint8_t)dport;
	l4[12] = 0x50;
	l4[13] = flags;
	return ip_pkt(out, src, dst, 6, l4, sizeof(l4));
}

static size_t udp(uint8_t *out, const char *src, unsigned sport, const char *dst, unsigned dport)
{
	uint8_t l4[12] = {0};

	l4[0] = (uint8_t)(sport >> 8), l4[1] = (uint8_t)sport;
	l4[2] = (uint8_t)(dport >> 8), l4[3] = (uint8_t)dport;
	l4[5] = 12;
	return ip_pkt(out, src, dst, 17, l4, sizeof(l4));
}

static size_t icmp(uint8_t *out, const char *src, const char *dst, uint8_t type, unsigned id,
		   const uint8_t *quote, size_t qlen)
{
	uint8_t l4[256] = {0};
	bool v6 = strchr(src, ':');

	l4[0] = type;
	l4[4] = (uint8_t)(id >> 8), l4[5] = (uint8_t)id;
	if (qlen)
		memcpy(l4 + 8, quote, qlen);
	return ip_pkt(out, src, dst, v6 ? 58 : 1, l4, 8 + qlen);
}

/* --- the compiler against a naive reading of the rules --- */

static bool prefix_has(const struct netmap_prefix *p, int family, const uint8_t *a)
{
	unsigned i, bits = p->len;

	if (p->family != family)
		return false;
	for (i = 0; i < bits; i++) {
		unsigned byte = i / 8, bit = 7 - i % 8;

		if (((p->addr[byte] >> bit) & 1) != ((a[byte] >> bit) & 1))
			return false;
	}
	return true;
}

static bool naive(const struct netmap_filter *nf, int family, uint8_t proto, const uint8_t *src,
		  const uint8_t *dst, uint16_t port)
{
	bool ports = proto == 6 || proto == 17 || proto == 33 || proto == 132 || proto == 136;
	unsigned i, j;

	for (i = 0; i < nf->n_rules; i++) {
		const struct netmap_filter_rule *r = &nf->rules[i];
		bool pok = !r->n_protos, sok = false, dok = false;

		for (j = 0; j < r->n_protos; j++)
			pok |= r->protos[j] == proto;
		for (j = 0; j < r->n_src; j++)
			sok |= prefix_has(&nf->srcs[r->src_off + j], family, src);
		for (j = 0; j < r->n_dst; j++) {
			const struct netmap_filter_dst *d = &nf->dsts[r->dst_off + j];

			dok |= prefix_has(&d->prefix, family, dst) &&
			       (!ports || (port >= d->port_first && port <= d->port_last));
		}
		if (pok && sok && dok)
			return true;
	}
	return false;
}

/* Addresses from a small space so that random prefixes and probes meet. */
static void rand_addr(int family, uint8_t *a)
{
	unsigned n = family == AF_INET ? 4 : 16, i;

	memset(a, 0, 16);
	for (i = 0; i < n; i++)
		a[i] = (uint8_t)(i == n - 1 ? rand() % 8 : (i == n - 2 ? rand() % 2 : 0x64));
}

static void rand_prefix(struct netmap_prefix *p)
{
	p->family = rand() % 2 ? AF_INET : AF_INET6;
	rand_addr(p->family, p->addr);
	p->len = (uint8_t)((p->family == AF_INET ? 32 : 128) - rand() % 11);
	if (rand() % 10 == 0)
		p->len = 0;
}

/*
 * n random rules: 1 to max_src sources, 1 to 3 destinations, fewer than max_protos protocols
 * from protos (n_protos of them). Port ranges: wide, anywhere in 0-65535, mostly single
 * ports; else within 0-58, now and then all ports.
 */
static void rand_filter(struct fb *b, unsigned n, unsigned max_src, const uint8_t *protos,
			unsigned n_protos, unsigned max_protos, bool wide)
{
	unsigned i, j;

	fb_init(b);
	b->nf.n_rules = n;
	for (i = 0; i < n; i++) {
		struct netmap_filter_rule *ru = &b->rules[i];

		ru->src_off = b->nf.n_srcs;
		ru->n_src = 1 + (unsigned)rand() % max_src;
		for (j = 0; j < ru->n_src; j++)
			rand_prefix(&b->srcs[b->nf.n_srcs++]);
		ru->dst_off = b->nf.n_dsts;
		ru->n_dst = 1 + (unsigned)rand() % 3;
		for (j = 0; j < ru->n_dst; j++) {
			struct netmap_filter_dst *d = &b->dsts[b->nf.n_dsts++];
			unsigned lo = (unsigned)rand() % (wide ? 65536 : 40), hi;

			if (wide)
				hi = lo + (rand() % 3 ? 0 : (unsigned)rand() % 3000);
			else
				hi = lo + (unsigned)rand() % 20;
			if (!wide && rand() % 5 == 0)
				lo = 0, hi = 65535;
			rand_prefix(&d->prefix);
			d->port_first = (uint16_t)lo;
			d->port_last = (uint16_t)(hi > 65535 ? 65535 : hi);
		}
		ru->n_protos = (unsigned)rand() % max_protos;
		for (j = 0; j < ru->n_protos; j++)
			ru->protos[j] = protos[rand() % n_protos];
	}
}

static void test_compile_vs_naive(void **state)
{
	static const uint8_t protos[] = {1, 6, 17, 58, 132, 47};
	unsigned round;

	(void)state;
	srand(12);
	for (round = 0; round < 300; round++) {
		struct fb b;
		struct filter_rules *r;
		unsigned q;

		rand_filter(&b, 1 + (unsigned)rand() % 12, 4, protos, 6, 3, false);
		r = fb_compile(&b);
		for (q = 0; q < 400; q++) {
			int family = rand() % 2 ? AF_INET : AF_INET6;
			uint8_t src[16], dst[16], proto = protos[rand() % 6];
			uint16_t port = (uint16_t)(rand() % 70);

			if (rand() % 20 == 0)
				proto = (uint8_t)(rand() % 256);
			rand_addr(family, src);
			rand_addr(family, dst);
			assert_int_equal(filter_rules_match(r, family, proto, src, dst, port),
					 naive(&b.nf, family, proto, src, dst, port));
		}
		filter_rules_free(r);
	}
}

/*
 * The same over the whole port range, with enough rules that a bucket's segments get their
 * port index (more than 16): probes at every rule's port edges and either side of them.
 */
static void test_compile_vs_naive_ports(void **state)
{
	static const uint8_t protos[] = {6, 17, 132, 1};
	unsigned round;

	(void)state;
	srand(13);
	for (round = 0; round < 60; round++) {
		struct fb b;
		struct filter_rules *r;
		unsigned q;

		rand_filter(&b, 20 + (unsigned)rand() % 40, 3, protos, 4, 2, true);
		r = fb_compile(&b);
		for (q = 0; q < 2000; q++) {
			const struct netmap_filter_dst *d = &b.dsts[rand() % b.nf.n_dsts];
			int family = rand() % 2 ? AF_INET : AF_INET6;
			uint8_t src[16], dst[16], proto = protos[rand() % 4];
			int port;

			switch (rand() % 6) {
			case 0:
				port = rand() % 65536;
				break;
			case 1:
				port = rand() % 2 ? 0 : 65535;
				break;
			default:
				port = (rand() % 2 ? d->port_first : d->port_last) + rand() % 3 - 1;
			}
			port = port < 0 ? 0 : port > 65535 ? 65535 : port;
			rand_addr(family, src);
			rand_addr(family, dst);
			assert_int_equal(
			    filter_rules_match(r, family, proto, src, dst, (uint16_t)port),
			    naive(&b.nf, family, proto, src, dst, (uint16_t)port));
		}
		filter_rules_free(r);
	}
}

static void test_compile_refuses(void **state)
{
	struct fb b;
	struct filter_rules *r = NULL;

	(void)state;
	fb_init(&b);
	fb_rule(&b, "100.64.0.1/32", "100.64.0.7/32", 22, 22, NULL);
	b.dsts[0].port_first = 30; /* first > last */
	b.dsts[0].port_last = 20;
	assert_int_equal(filter_rules_compile(&b.nf, &r), -EINVAL);
	assert_null(r);
}

/* --- verdicts --- */

#define ME4 "100.64.0.7"
#define PEER4 "100.64.0.1"
#define OTHER4 "100.64.0.2"
#define ME6 "fd7e:11e5:7a11::6440:7"
#define PEER6 "fd7e:11e5:7a11::6440:1"

static struct filter *policy_sized(unsigned ct_max)
{
	static const uint8_t tcp_only[] = {6, 0}, udp_only[] = {17, 0};
	struct filter *f = NULL;
	struct fb b;

	fb_init(&b);
	fb_rule(&b, PEER4 "/32," PEER6 "/128", ME4 "/32," ME6 "/128", 22, 22, tcp_only);
	fb_rule(&b, "100.64.0.0/24", ME4 "/32", 8000, 8999, udp_only);
	assert_int_equal(filter_new(ct_max, 1, &f), 0);
	assert_false(filter_active(f));
	filter_rules_set(f, fb_compile(&b));
	assert_true(filter_active(f));
	return f;
}

static struct filter *policy(void)
{
	return policy_sized(64);
}

static uint64_t drops(struct filter *f, enum filter_drop d)
{
	struct filter_stats st;

	filter_stats_get(f, &st);
	return st.drops[d];
}

static void test_rules_verdicts(void **state)
{
	struct filter *f = policy();
	uint8_t p[512];
	size_t n;

	(void)state;
	n = tcp(p, PEER4, 40000, ME4, 22, SYN);
	assert_true(filter_rx(f, p, n, S));
	n = tcp(p, PEER6, 40000, ME6, 22, SYN);
	assert_true(filter_rx(f, p, n, S));
	n = tcp(p, PEER4, 40001, ME4, 80, SYN);
	assert_false(filter_rx(f, p, n, S));
	n = udp(p, PEER4, 40000, ME4, 22); /* the port, not the protocol */
	assert_false(filter_rx(f, p, n, S));
	n = tcp(p, OTHER4, 40000, ME4, 22, SYN); /* another source */
	assert_false(filter_rx(f, p, n, S));
	n = udp(p, OTHER4, 5000, ME4, 8999); /* range edges */
	assert_true(filter_rx(f, p, n, S));
	n = udp(p, OTHER4, 5000, ME4, 9000);
	assert_false(filter_rx(f, p, n, S));
	n = udp(p, OTHER4, 5000, ME4, 7999);
	assert_false(filter_rx(f, p, n, S));
	n = icmp(p, PEER4, ME4, 8, 1, NULL, 0); /* no rule for ICMP */
	assert_false(filter_rx(f, p, n, S));
	assert_int_equal(drops(f, FILTER_DROP_NO_RULE), 6);
	/* An admitted flow's later packets pass without a SYN. */
	n = tcp(p, PEER4, 40000, ME4, 22, ACK);
	assert_true(filter_rx(f, p, n, S));
	filter_free(f);
}

static void test_replies_to_our_flows(void **state)
{
	struct filter *f = policy();
	uint8_t p[512], q[512];
	size_t n, m;

	(void)state;
	/* TCP: our SYN to the peer's port 80, its SYN-ACK back. */
	n = tcp(p, ME4, 50000, PEER4, 80, SYN);
	filter_tx(f, p, n, S);
	n = tcp(p, PEER4, 80, ME4, 50000, SYN | ACK);
	assert_true(filter_rx(f, p, n, S));
	/* A different port of ours is no reply. */
	n = tcp(p, PEER4, 80, ME4, 50001, SYN | ACK);
	assert_false(filter_rx(f, p, n, S));
	/* An ACK we send without a SYN before opens nothing (strict). */
	n = tcp(p, ME4, 50002, PEER4, 80, ACK);
	filter_tx(f, p, n, S);
	n = tcp(p, PEER4, 80, ME4, 50002, ACK);
	assert_false(filter_rx(f, p, n, S));
	/* UDP over IPv6. */
	n = udp(p, ME6, 53000, PEER6, 53);
	filter_tx(f, p, n, S);
	n = udp(p, PEER6, 53, ME6, 53000);
	assert_true(filter_rx(f, p, n, S));
	/* ICMP echo: the reply to our request passes, with its identifier only. */
	n = icmp(p, ME4, PEER4, 8, 77, NULL, 0);
	filter_tx(f, p, n, S);
	n = icmp(p, PEER4, ME4, 0, 77, NULL, 0);
	assert_true(filter_rx(f, p, n, S));
	n = icmp(p, PEER4, ME4, 0, 78, NULL, 0);
	assert_false(filter_rx(f, p, n, S));
	/* ... and does not let the peer ping us. */
	n = icmp(p, PEER4, ME4, 8, 77, NULL, 0);
	assert_false(filter_rx(f, p, n, S));
	n = icmp(p, ME6, PEER6, 128, 5, NULL, 0);
	filter_tx(f, p, n, S);
	n = icmp(p, PEER6, ME6, 129, 5, NULL, 0);
	assert_true(filter_rx(f, p, n, S));
	/* ICMP errors: quoting our UDP flow, port unreachable passes; quoting another, not. */
	m = udp(q, ME4, 54000, PEER4, 9999);
	filter_tx(f, q, m, S);
	n = icmp(p, PEER4, ME4, 3, 0, q, 28);
	assert_true(filter_rx(f, p, n, S));
	m = udp(q, ME4, 54001, PEER4, 9999);
	n = icmp(p, PEER4, ME4, 3, 0, q, 28);
	assert_false(filter_rx(f, p, n, S));
	assert_int_equal(drops(f, FILTER_DROP_ICMP_ERROR), 1);
	/* ICMPv6 packet too big quoting our TCP flow; the quote may be cut after 8 bytes. */
	m = tcp(q, ME6, 50000, PEER6, 443, SYN);
	filter_tx(f, q, m, S);
	n = icmp(p, PEER6, ME6, 2, 0, q, 48);
	assert_true(filter_rx(f, p, n, S));
	/* An error quoting a flow a rule admitted (we answered it) passes too. */
	n = tcp(p, PEER4, 41000, ME4, 22, SYN);
	assert_true(filter_rx(f, p, n, S));
	m = tcp(q, ME4, 22, PEER4, 41000, SYN | ACK);
	filter_tx(f, q, m, S);
	n = icmp(p, PEER4, ME4, 11, 0, q, 28);
	assert_true(filter_rx(f, p, n, S));
	filter_free(f);
}

static void test_fragments_and_bad(void **state)
{
	struct filter *f = policy();
	uint8_t p[512];
	size_t n;

	(void)state;
	/* A later fragment of anything passes: no ports to judge, no reassembly without the first.
	 */
	n = udp(p, OTHER4, 1, ME4, 1);
	p[6] = 0x00, p[7] = 0x10; /* offset 128 bytes */
	assert_true(filter_rx(f, p, n, S));
	/* RFC 1858: TCP at offset 8 bytes. */
	n = tcp(p, PEER4, 40000, ME4, 22, SYN);
	p[6] = 0x00, p[7] = 0x01;
	assert_false(filter_rx(f, p, n, S));
	assert_int_equal(drops(f, FILTER_DROP_FRAGMENT), 1);
	/* A first fragment without its whole TCP header. */
	n = ip_pkt(p, PEER4, ME4, 6, (const uint8_t *)"\x9c\x40\x00\x16\0\0\0\0", 8);
	p[6] = 0x20; /* more fragments */
	assert_false(filter_rx(f, p, n, S));
	assert_int_equal(drops(f, FILTER_DROP_FRAGMENT), 2);
	/* Truncated headers, bad versions and lengths. */
	n = tcp(p, PEER4, 40000, ME4, 22, SYN);
	assert_false(filter_rx(f, p, 19, S));
	assert_false(filter_rx(f, p, n - 1, S)); /* total length beyond the buffer */
	p[0] = 0x55;
	assert_false(filter_rx(f, p, n, S));
	n = ip_pkt(p, PEER6, ME6, 0, (const uint8_t *)"\x06\x00\0\0\0\0\0\0",
		   8); /* hop-by-hop, TCP cut */
	assert_false(filter_rx(f, p, n, S));
	assert_false(filter_rx(f, p, 0, S));
	assert_int_equal(drops(f, FILTER_DROP_BAD_PACKET), 5);
	/* IPv6: a hop-by-hop header before an admitted TCP SYN. */
	{
		uint8_t l4[28] = {6, 0};

		l4[8] = 0x9c, l4[9] = 0x40, l4[11] = 22, l4[20] = 0x50, l4[21] = SYN;
		n = ip_pkt(p, PEER6, ME6, 0, l4, sizeof(l4));
		assert_true(filter_rx(f, p, n, S));
	}
	filter_free(f);
}

static void test_timeouts(void **state)
{
	struct filter *f = policy();
	uint8_t p[512];
	size_t n;

	(void)state;
	/* UDP heard one way expires after 30 s. */
	n = udp(p, ME4, 1000, PEER4, 2000);
	filter_tx(f, p, n, 10 * S);
	n = udp(p, PEER4, 2000, ME4, 1000);
	assert_false(filter_rx(f, p, n, 41 * S));
	/* Refreshed within 30 s it lives; both ways, 120 s. */
	n = udp(p, ME4, 1001, PEER4, 2000);
	filter_tx(f, p, n, 100 * S);
	n = udp(p, PEER4, 2000, ME4, 1001);
	assert_true(filter_rx(f, p, n, 129 * S));
	assert_true(filter_rx(f, p, n, 248 * S));
	assert_false(filter_rx(f, p, n, 369 * S));
	/* TCP: an answered SYN is established for days; a RST closes it in 10 s. */
	n = tcp(p, ME4, 3000, PEER4, 80, SYN);
	filter_tx(f, p, n, 1000 * S);
	n = tcp(p, PEER4, 80, ME4, 3000, SYN | ACK);
	assert_true(filter_rx(f, p, n, 1001 * S));
	assert_true(filter_rx(f, p, n, 1001 * S + FILTER_TCP_ESTABLISHED_NS - S));
	n = tcp(p, PEER4, 80, ME4, 3000, RST);
	assert_true(filter_rx(f, p, n, 1001 * S + FILTER_TCP_ESTABLISHED_NS));
	n = tcp(p, PEER4, 80, ME4, 3000, ACK);
	assert_false(filter_rx(f, p, n, 1012 * S + FILTER_TCP_ESTABLISHED_NS));
	/* ICMP echo: 30 s. */
	n = icmp(p, ME4, PEER4, 8, 9, NULL, 0);
	filter_tx(f, p, n, 2000 * S);
	n = icmp(p, PEER4, ME4, 0, 9, NULL, 0);
	assert_true(filter_rx(f, p, n, 2029 * S));
	assert_false(filter_rx(f, p, n, 2060 * S));
	filter_free(f);
}

static void test_table_full(void **state)
{
	struct filter *f = NULL;
	struct filter_stats st;
	struct fb b;
	uint8_t p[512];
	size_t n;
	unsigned i;

	(void)state;
	fb_init(&b);
	fb_rule(&b, "192.0.2.1/32", ME4 "/32", 1, 1, NULL);
	assert_int_equal(filter_new(FILTER_CT_SHARDS * 2, 7, &f), 0); /* 2 flows a shard */
	filter_rules_set(f, fb_compile(&b));
	for (i = 0; i < 500; i++) {
		n = udp(p, ME4, 10000 + i, PEER4, 53);
		filter_tx(f, p, n, (1 + i) * S / 1000);
	}
	filter_stats_get(f, &st);
	assert_int_equal(st.ct_entries, st.ct_max);
	assert_int_equal(st.ct_max, FILTER_CT_SHARDS * 2);
	assert_int_equal(st.ct_evicted, 500 - st.ct_max);
	/* The newest flow is there, the oldest went. */
	n = udp(p, PEER4, 53, ME4, 10499);
	assert_true(filter_rx(f, p, n, S));
	n = udp(p, PEER4, 53, ME4, 10000);
	assert_false(filter_rx(f, p, n, S));
	filter_free(f);
}

static void test_filter_change(void **state)
{
	static const uint8_t tcp_only[] = {6, 0};
	struct filter *f = policy();
	struct fb b;
	uint8_t p[512];
	size_t n;

	(void)state;
	/* An admitted flow and one of ours. */
	n = tcp(p, PEER4, 40000, ME4, 22, SYN);
	assert_true(filter_rx(f, p, n, S));
	n = tcp(p, ME4, 50000, PEER4, 80, SYN);
	filter_tx(f, p, n, S);
	/* New rules: port 23 only. */
	fb_init(&b);
	fb_rule(&b, PEER4 "/32", ME4 "/32", 23, 23, tcp_only);
	filter_rules_set(f, fb_compile(&b));
	n = tcp(p, PEER4, 80, ME4, 50000, SYN | ACK);
	assert_true(filter_rx(f, p, n, 2 * S)); /* ours stays */
	n = tcp(p, PEER4, 40000, ME4, 22, ACK);
	assert_false(filter_rx(f, p, n, 2 * S)); /* revoked */
	assert_int_equal(drops(f, FILTER_DROP_REVOKED), 1);
	/* Our stack still answers it: that does not reopen it. */
	n = tcp(p, ME4, 22, PEER4, 40000, ACK);
	filter_tx(f, p, n, 3 * S);
	n = tcp(p, PEER4, 40000, ME4, 22, ACK);
	assert_false(filter_rx(f, p, n, 3 * S));
	assert_int_equal(drops(f, FILTER_DROP_REVOKED), 2);
	/* Rules that admit it again reopen it. */
	fb_init(&b);
	fb_rule(&b, PEER4 "/32", ME4 "/32", 22, 23, tcp_only);
	filter_rules_set(f, fb_compile(&b));
	assert_true(filter_rx(f, p, n, 4 * S));
	/* No policy: everything passes, nothing is judged. */
	filter_rules_set(f, NULL);
	assert_false(filter_active(f));
	n = udp(p, OTHER4, 1, ME4, 1);
	assert_true(filter_rx(f, p, n, 5 * S));
	/* Deny all (a filter that failed to compile with none before): ours stay. */
	filter_deny_all(f);
	assert_false(filter_rx(f, p, n, 6 * S));
	n = tcp(p, PEER4, 80, ME4, 50000, ACK);
	assert_true(filter_rx(f, p, n, 6 * S));
	filter_free(f);
}

/* A run of one flow in a batch skips the table after its first packet, but not a FIN or a RST. */
static void test_batch_runs(void **state)
{
	struct filter *f = policy();
	struct pkt_pool *pool = pkt_pool_new(8);
	struct pkt *pk[4];
	uint8_t p[512];
	size_t n;
	unsigned i;

	(void)state;
	assert_non_null(pool);
	n = tcp(p, ME4, 50000, PEER4, 80, SYN);
	filter_tx(f, p, n, S);
	assert_int_equal(pkt_pool_get(pool, pk, 4), 4);
	for (i = 0; i < 4; i++)
		pk[i]->len = (uint32_t)tcp(pk[i]->data, PEER4, 80, ME4, 50000,
					   i == 0 ? SYN | ACK : (i == 3 ? FIN | ACK : ACK));
	/* A packet of another, unknown flow in the middle: dropped, the run goes on. */
	pk[2]->len = (uint32_t)tcp(pk[2]->data, PEER4, 81, ME4, 50000, ACK);
	assert_int_equal(filter_rx_batch(f, pk, 4, 2 * S), 3);
	assert_int_equal(pk[0]->data[33], SYN | ACK);
	assert_int_equal(pk[2]->data[33], FIN | ACK);
	pkt_free(pk, 4);
	/* The FIN counted: 120 s, not the 5 days of an established flow. */
	n = tcp(p, PEER4, 80, ME4, 50000, ACK);
	assert_false(filter_rx(f, p, n, 2 * S + FILTER_TCP_FIN_NS + S));
	/* A FIN and a RST right behind a packet of their flow: counted too. */
	for (i = 0; i < 2; i++) {
		n = tcp(p, ME4, 50001 + i, PEER4, 80, SYN);
		filter_tx(f, p, n, S);
		assert_int_equal(pkt_pool_get(pool, pk, 2), 2);
		pk[0]->len = (uint32_t)tcp(pk[0]->data, PEER4, 80, ME4, 50001 + i, SYN | ACK);
		pk[1]->len = (uint32_t)tcp(pk[1]->data, PEER4, 80, ME4, 50001 + i,
					   i ? RST : FIN | ACK);
		assert_int_equal(filter_rx_batch(f, pk, 2, 2 * S), 2);
		pkt_free(pk, 2);
		n = tcp(p, PEER4, 80, ME4, 50001 + i, ACK);
		assert_false(filter_rx(f, p, n,
				       2 * S + (i ? FILTER_TCP_RST_NS : FILTER_TCP_FIN_NS) + S));
	}
	pkt_pool_free(pool);
	filter_free(f);
}

/*
 * A peer's echo request that a rule admits on the tuple of our own echo passes without
 * refreshing our flow; the echo reply right behind it in the batch must still refresh it
 * (it may not take the request's pass), or our flow times out early.
 */
static void test_batch_echo_run(void **state)
{
	static const uint8_t icmp_only[] = {1, 0};
	struct filter *f = NULL;
	struct pkt_pool *pool = pkt_pool_new(2);
	struct pkt *pk[2];
	struct fb b;
	uint8_t p[512];
	size_t n;

	(void)state;
	assert_non_null(pool);
	fb_init(&b);
	fb_rule(&b, PEER4 "/32", ME4 "/32", 0, 65535, icmp_only);
	assert_int_equal(filter_new(64, 1, &f), 0);
	filter_rules_set(f, fb_compile(&b));
	n = icmp(p, ME4, PEER4, 8, 7, NULL, 0);
	filter_tx(f, p, n, S);
	assert_int_equal(pkt_pool_get(pool, pk, 2), 2);
	pk[0]->len = (uint32_t)icmp(pk[0]->data, PEER4, ME4, 8, 7, NULL, 0);
	pk[1]->len = (uint32_t)icmp(pk[1]->data, PEER4, ME4, 0, 7, NULL, 0);
	assert_int_equal(filter_rx_batch(f, pk, 2, 20 * S), 2);
	pkt_free(pk, 2);
	/* ICMP refused from now on: only our flow, refreshed at 20 s, lets the reply in. */
	filter_deny_all(f);
	n = icmp(p, PEER4, ME4, 0, 7, NULL, 0);
	assert_true(filter_rx(f, p, n, 40 * S));
	pkt_pool_free(pool);
	filter_free(f);
}

/* Flows sent by the node into a table of one flow a shard; the number it holds. */
static unsigned one_a_shard(struct filter *f, bool v6, unsigned part)
{
	struct filter_stats st;
	unsigned i;

	for (i = 0; i < 64; i++) {
		char me[64], peer[64];
		uint8_t p[512], l4[8] = {0};
		unsigned x = 1 + i, lp = 1000, rp = 2000;
		size_t n;

		snprintf(me, sizeof(me), "%s", v6 ? ME6 : ME4);
		snprintf(peer, sizeof(peer), "%s", v6 ? PEER6 : PEER4);
		if (part == 0)
			snprintf(me, sizeof(me), v6 ? "fd7e:11e5:7a11::%x" : "100.64.0.%u", x);
		if (part == 1)
			snprintf(me, sizeof(me), v6 ? "fd7e:%x::7" : "100.64.%u.7", x);
		if (part == 2)
			snprintf(peer, sizeof(peer), v6 ? "fd7e:11e5:7a11::%x" : "100.64.0.%u", x);
		if (part == 3)
			snprintf(peer, sizeof(peer), v6 ? "fd7e:%x::1" : "100.64.%u.1", x);
		lp += part == 4 ? x : 0;
		rp += part == 5 ? x : 0;
		if (part == 6)
			n = ip_pkt(p, me, peer, (uint8_t)(64 + x), l4, sizeof(l4));
		else
			n = udp(p, me, lp, peer, rp);
		filter_tx(f, p, n, S);
	}
	filter_stats_get(f, &st);
	return st.ct_entries;
}

/*
 * The flow hash is keyed by the seed and takes every part of the key: with one flow a shard,
 * flows that differ in one part only spread over the shards, and which of them keep their
 * shard depends on the seed.
 */
static void test_hash_spread(void **state)
{
	unsigned v6, part, seed;

	(void)state;
	for (v6 = 0; v6 < 2; v6++) {
		uint32_t first = 0;
		bool differ = false;

		/* Addresses (low and high half), ports, protocol. */
		for (part = 0; part < 7; part++) {
			struct filter *f = NULL;

			assert_int_equal(filter_new(FILTER_CT_SHARDS, 5, &f), 0);
			filter_deny_all(f);
			/* 64 flows: about 16 shards hold one; one, if the part is not hashed. */
			assert_true(one_a_shard(f, v6, part) >= 8);
			filter_free(f);
		}
		for (seed = 1; seed <= 8; seed++) {
			const char *me = v6 ? ME6 : ME4, *peer = v6 ? PEER6 : PEER4;
			struct filter *f = NULL;
			uint32_t kept = 0;
			uint8_t p[512];
			unsigned i;

			assert_int_equal(filter_new(FILTER_CT_SHARDS, seed, &f), 0);
			filter_deny_all(f);
			for (i = 0; i < 16; i++)
				filter_tx(f, p, udp(p, me, 1000 + i, peer, 53), S);
			for (i = 0; i < 16; i++)
				if (filter_rx(f, p, udp(p, peer, 53, me, 1000 + i), S))
					kept |= 1U << i;
			if (seed == 1)
				first = kept;
			differ |= kept != first;
			filter_free(f);
		}
		assert_true(differ);
	}
}

/* --- a batch against the same packets one by one --- */

static const char *const remotes4[] = {PEER4, OTHER4, "100.64.0.3"};
static const char *const remotes6[] = {PEER6, "fd7e:11e5:7a11::6440:2"};

/*
 * A random packet between the node and a peer (out: the node sends it), from a small space of
 * addresses and ports so that flows meet: TCP with any flags, UDP, ICMP echoes, ICMP errors
 * quoting a packet of the other direction, later fragments, truncated packets.
 */
static size_t rand_pkt(uint8_t *p, bool out)
{
	static const uint8_t flags[] = {SYN, ACK, SYN | ACK, FIN | ACK, RST, ACK};
	bool v6 = rand() % 4 == 0;
	const char *me = v6 ? ME6 : ME4;
	const char *peer = v6 ? remotes6[rand() % 2] : remotes4[rand() % 3];
	const char *src = out ? me : peer, *dst = out ? peer : me;
	unsigned sport = 20 + (unsigned)rand() % 4, dport = 20 + (unsigned)rand() % 4;
	unsigned kind = (unsigned)rand() % 100;
	uint8_t q[128];
	size_t n;

	if (kind < 40)
		return tcp(p, src, sport, dst, dport, flags[rand() % 6]);
	if (kind < 70)
		return udp(p, src, sport, dst, dport);
	if (kind < 85) {
		uint8_t type = (uint8_t)(rand() % 2 ? (v6 ? 128 : 8) : (v6 ? 129 : 0));

		return icmp(p, src, dst, type, (unsigned)rand() % 3, NULL, 0);
	}
	if (kind < 95) {
		if (rand() % 2)
			tcp(q, dst, dport, src, sport, SYN);
		else
			udp(q, dst, dport, src, sport);
		return icmp(p, src, dst, v6 ? 1 : 3, 0, q, v6 ? 48 : 28);
	}
	n = udp(p, src, sport, dst, dport);
	if (v6 || kind < 98)
		return 10;	  /* cut short */
	p[6] = 0x00, p[7] = 0x10; /* a later fragment */
	return n;
}

static void rand_rules(struct fb *b)
{
	static const char *const srcs[] = {PEER4 "/32", "100.64.0.0/30", PEER6 "/128",
					   "100.64.0.2/32," PEER6 "/128"};
	static const uint8_t tcp_only[] = {6, 0}, udp_only[] = {17, 0}, icmp_only[] = {1, 0};
	static const uint8_t *const protos[] = {NULL, tcp_only, udp_only, icmp_only};
	unsigned i, n = (unsigned)rand() % 4;

	fb_init(b);
	for (i = 0; i < n; i++) {
		unsigned lo = 20 + (unsigned)rand() % 4;

		fb_rule(b, srcs[rand() % 4], ME4 "/32," ME6 "/128", lo, lo + (unsigned)rand() % 3,
			protos[rand() % 4]);
	}
}

static void stats_equal(struct filter *a, struct filter *b)
{
	struct filter_stats x, y;
	unsigned i;

	filter_stats_get(a, &x);
	filter_stats_get(b, &y);
	for (i = 0; i < FILTER_DROP__MAX; i++)
		assert_int_equal(x.drops[i], y.drops[i]);
	assert_int_equal(x.fragments, y.fragments);
	assert_int_equal(x.ct_entries, y.ct_entries);
	assert_int_equal(x.ct_evicted, y.ct_evicted);
}

/*
 * filter_rx_batch judges a batch shard by shard (and a run of one flow by its first packet):
 * on random traffic in and out, timeouts, tables small enough to evict and filter changes, it
 * must give the verdicts, counters and table of filter_rx on the same packets in turn.
 */
static void test_batch_vs_single(void **state)
{
	struct pkt_pool *pool = pkt_pool_new(160);
	unsigned round;

	(void)state;
	assert_non_null(pool);
	srand(21);
	for (round = 0; round < 6; round++) {
		struct filter *a = NULL, *b = NULL;
		uint64_t now = S;
		unsigned step, ct_max = round % 2 ? 1024 : 32;
		struct fb r;

		assert_int_equal(filter_new(ct_max, round, &a), 0);
		assert_int_equal(filter_new(ct_max, round, &b), 0);
		rand_rules(&r);
		filter_rules_set(a, fb_compile(&r));
		filter_rules_set(b, fb_compile(&r));
		for (step = 0; step < 300; step++) {
			struct pkt *pk[150];
			bool pass[150];
			uint8_t p[512];
			unsigned i, n, k, want = 0;

			now += rand() % 10 == 0 ? (uint64_t)(rand() % 60) * S : (uint64_t)rand();
			if (rand() % 20 == 0) {
				rand_rules(&r);
				filter_rules_set(a, fb_compile(&r));
				filter_rules_set(b, fb_compile(&r));
			}
			for (i = (unsigned)rand() % 8; i > 0; i--) {
				size_t len = rand_pkt(p, true);

				filter_tx(a, p, len, now);
				filter_tx(b, p, len, now);
			}
			n = 1 + (unsigned)rand() % 150;
			assert_int_equal(pkt_pool_get(pool, pk, n), n);
			for (i = 0; i < n; i++) {
				/* Runs of one flow, as a stream brings them. */
				if (i && rand() % 2) {
					memcpy(pk[i]->data, pk[i - 1]->data, pk[i - 1]->len);
					pk[i]->len = pk[i - 1]->len;
				} else {
					pk[i]->len = (uint32_t)rand_pkt(pk[i]->data, false);
				}
				pk[i]->counter = i;
				pass[i] = filter_rx(b, pk[i]->data, pk[i]->len, now);
				want += pass[i];
			}
			k = filter_rx_batch(a, pk, n, now);
			assert_int_equal(k, want);
			/* The ones that pass, in their order, then the others. */
			for (i = 0; i < n; i++) {
				assert_int_equal(pass[pk[i]->counter], i < k);
				if (i && i < k)
					assert_true(pk[i]->counter > pk[i - 1]->counter);
			}
			pkt_free(pk, n);
			stats_equal(a, b);
		}
		filter_free(a);
		filter_free(b);
	}
	pkt_pool_free(pool);
}

/* --- batches on threads while the rules change --- */

struct worker {
	struct filter *f;
	struct pkt_pool *pool;
	atomic_bool *stop;
	unsigned id;
	unsigned long bad;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct pkt *pk[32];
	unsigned i, k, round = 0;

	while (!atomic_load(w->stop)) {
		if (pkt_pool_get(w->pool, pk, 32) != 32) {
			w->bad++;
			break;
		}
		for (i = 0; i < 32; i++) {
			/* Even: our flows' replies (always pass); odd: a new flow to port 22. */
			if (i % 2 == 0) {
				size_t n = udp(pk[i]->data, ME4, 20000 + w->id * 64 + i, PEER4, 53);

				pk[i]->len = (uint32_t)n;
				filter_tx_batch(w->f, &pk[i], 1, S);
				pk[i]->len = (uint32_t)udp(pk[i]->data, PEER4, 53, ME4,
							   20000 + w->id * 64 + i);
			} else {
				pk[i]->len = (uint32_t)tcp(pk[i]->data, PEER4, 30000 + round % 1000,
							   ME4, 22, SYN);
			}
			pk[i]->counter = i;
		}
		k = filter_rx_batch(w->f, pk, 32, S);
		/* Kept ones in order, every reply among them. */
		for (i = 1; i < k; i++)
			if (pk[i]->counter <= pk[i - 1]->counter)
				w->bad++;
		if (k < 16)
			w->bad++;
		pkt_free(pk, 32);
		round++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	struct filter *f = policy_sized(1 << 14);
	struct worker w[3];
	pthread_t t[3];
	atomic_bool stop = false;
	unsigned i;

	(void)state;
	for (i = 0; i < 3; i++) {
		w[i] = (struct worker){.f = f, .stop = &stop, .id = i, .pool = pkt_pool_new(64)};
		assert_non_null(w[i].pool);
		assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
	}
	for (i = 0; i < 300; i++) {
		struct fb b;

		fb_init(&b);
		fb_rule(&b, PEER4 "/32", ME4 "/32", i % 2 ? 22 : 23, 23, NULL);
		filter_rules_set(f, fb_compile(&b));
	}
	atomic_store(&stop, true);
	for (i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].bad, 0);
		pkt_pool_free(w[i].pool);
	}
	filter_free(f);
}

/*
 * No allocation per packet (issue 12): batches of our new flows (conntrack entries, a full
 * table evicting its oldest), their replies, new flows a rule admits and packets refused, in
 * and out, all without one malloc. Counted under ASan (alloc_count.h), as CI builds.
 */
static void test_no_alloc(void **state)
{
#ifdef HAVE_ASAN
	struct filter *f = policy_sized(16);
	struct pkt_pool *pool = pkt_pool_new(64);
	struct pkt *pk[32];
	unsigned kept = 0;

	(void)state;
	assert_non_null(pool);
	assert_int_equal(pkt_pool_get(pool, pk, 32), 32);
	alloc_count_install();
	allocations = 0;
	counting = 1;
	for (unsigned round = 0; round < 50; round++) {
		for (unsigned i = 0; i < 32; i++) {
			unsigned port = 20000 + round * 32 + i;

			/* Out: a new flow of ours (the 16-entry table evicts as it goes). */
			pk[i]->len = (uint32_t)udp(pk[i]->data, ME4, (uint16_t)port, PEER4, 53);
			filter_tx_batch(f, &pk[i], 1, (round + 1) * S);
			/* In: its reply, a new flow a rule admits, one refused, a reply to nothing.
			 */
			if (i % 4 == 0)
				pk[i]->len =
				    (uint32_t)udp(pk[i]->data, PEER4, 53, ME4, (uint16_t)port);
			else if (i % 4 == 1)
				pk[i]->len =
				    (uint32_t)tcp(pk[i]->data, PEER4, (uint16_t)port, ME4, 22, SYN);
			else if (i % 4 == 2)
				pk[i]->len =
				    (uint32_t)tcp(pk[i]->data, PEER4, (uint16_t)port, ME4, 80, SYN);
			else
				pk[i]->len = (uint32_t)tcp(pk[i]->data, PEER4, 443, ME4, 1, ACK);
		}
		/* Refused packets go to the end of the batch: rebuilt every round above. */
		kept += filter_rx_batch(f, pk, 32, (round + 1) * S);
	}
	counting = 0;
	assert_int_equal(allocations, 0);
	assert_true(kept >= 50 * 8); /* at least the SYNs the rule admits */
	pkt_free(pk, 32);
	pkt_pool_free(pool);
	filter_free(f);
#else
	(void)state;
	skip();
#endif
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_compile_vs_naive),
	    cmocka_unit_test(test_compile_vs_naive_ports),
	    cmocka_unit_test(test_compile_refuses),
	    cmocka_unit_test(test_rules_verdicts),
	    cmocka_unit_test(test_replies_to_our_flows),
	    cmocka_unit_test(test_fragments_and_bad),
	    cmocka_unit_test(test_timeouts),
	    cmocka_unit_test(test_table_full),
	    cmocka_unit_test(test_filter_change),
	    cmocka_unit_test(test_batch_runs),
	    cmocka_unit_test(test_batch_echo_run),
	    cmocka_unit_test(test_batch_vs_single),
	    cmocka_unit_test(test_hash_spread),
	    cmocka_unit_test(test_threads),
	    cmocka_unit_test(test_no_alloc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
