/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/ip.h>
#include <netinet/ip6.h>
#include <netinet/udp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "netns.h"
#include "base/pkt.h"
#include "os/netlink.h"
#include "os/tun.h"

#define TEST_MTU 1420
#define POOL_SIZE 16

struct ctx {
	int fd;
	char name[IF_NAMESIZE];
	struct pkt_pool *pool;
};

static const uint8_t local4[4] = { 198, 18, 0, 1 };
static const uint8_t peer4[4] = { 198, 18, 0, 2 };

static int teardown(void **state)
{
	struct ctx *c = *state;

	if (!c)
		return 0;
	if (c->fd >= 0)
		close(c->fd);
	pkt_pool_free(c->pool);
	free(c);
	return 0;
}

static int setup(void **state)
{
	struct in6_addr a6;
	struct ctx *c;

	if (netns_enter(state) < 0)
		return -1;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	*state = c;
	inet_pton(AF_INET6, "2001:db8::1", &a6);
	c->fd = tun_open("trtest%d", c->name);
	c->pool = pkt_pool_new(POOL_SIZE);
	if (c->fd < 0 || !c->pool)
		goto fail;
	if (nl_link_set_mtu(c->name, TEST_MTU) < 0 ||
	    nl_addr_add(c->name, AF_INET, local4, 24) < 0 ||
	    nl_addr_add(c->name, AF_INET6, &a6, 64) < 0 || nl_link_set_up(c->name, true) < 0)
		goto fail;
	return 0;
fail:
	teardown(state);
	*state = NULL;
	return -1;
}

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t i;

	for (i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)(p[i] << 8 | p[i + 1]);
	if (len & 1)
		sum += (uint32_t)(p[len - 1] << 8);
	return sum;
}

/* Builds an IPv4/UDP packet with valid IP and UDP checksums; returns its length. */
static size_t build_udp4(uint8_t *buf, const uint8_t src[4], uint16_t sport, const uint8_t dst[4],
			 uint16_t dport, const void *payload, size_t plen)
{
	struct iphdr *ip = (struct iphdr *)buf;
	struct udphdr *uh = (struct udphdr *)(buf + sizeof(*ip));
	size_t total = sizeof(*ip) + sizeof(*uh) + plen;
	uint32_t sum;

	memset(buf, 0, sizeof(*ip) + sizeof(*uh));
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = htons((uint16_t)total);
	ip->id = htons(1);
	ip->ttl = 64;
	ip->protocol = IPPROTO_UDP;
	memcpy(&ip->saddr, src, 4);
	memcpy(&ip->daddr, dst, 4);
	ip->check = htons(csum_fold(csum_add(0, ip, sizeof(*ip))));
	uh->source = htons(sport);
	uh->dest = htons(dport);
	uh->len = htons((uint16_t)(sizeof(*uh) + plen));
	memcpy(buf + sizeof(*ip) + sizeof(*uh), payload, plen);
	/* Pseudo-header: addresses, protocol, UDP length. */
	sum = csum_add(0, src, 4);
	sum = csum_add(sum, dst, 4);
	sum += IPPROTO_UDP + (uint32_t)(sizeof(*uh) + plen);
	sum = csum_add(sum, uh, sizeof(*uh) + plen);
	uh->check = htons(csum_fold(sum));
	if (!uh->check)
		uh->check = 0xffff;
	return total;
}

/*
 * Reads from the TUN until a packet to dst_port of the given IP version shows up (the kernel
 * also sends its own IPv6 traffic, e.g. router solicitations). Copies it to out.
 */
static size_t read_udp_to(struct ctx *c, int version, uint16_t dst_port, uint8_t *out,
			  unsigned *ret_dropped)
{
	struct pkt *pkts[POOL_SIZE];
	unsigned i, n, dropped, total_dropped = 0;
	size_t found = 0, hl;
	int tries, r;

	for (tries = 0; tries < 20 && !found; tries++) {
		if (!fd_wait_readable(c->fd, 100))
			continue;
		n = pkt_pool_get(c->pool, pkts, POOL_SIZE);
		assert_int_equal(n, POOL_SIZE);
		r = tun_read_batch(c->fd, NULL, pkts, n, &dropped);
		assert_true(r >= 0);
		total_dropped += dropped;
		for (i = 0; i < (unsigned)r && !found; i++) {
			const uint8_t *d = pkts[i]->data;

			if (d[0] >> 4 != version)
				continue;
			hl = version == 4 ? (size_t)(d[0] & 0xf) * 4 : sizeof(struct ip6_hdr);
			if ((version == 4 && d[9] != IPPROTO_UDP) ||
			    (version == 6 && d[6] != IPPROTO_UDP))
				continue;
			if (ntohs(((const struct udphdr *)(d + hl))->dest) != dst_port)
				continue;
			memcpy(out, d, pkts[i]->len);
			found = pkts[i]->len;
		}
		pkt_free(pkts, n);
	}
	if (ret_dropped)
		*ret_dropped = total_dropped;
	return found;
}

static int udp_sock(int family)
{
	int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	return fd;
}

static void send4(const uint8_t dst[4], uint16_t port, const void *payload, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = udp_sock(AF_INET);

	memcpy(&sin.sin_addr, dst, 4);
	assert_int_equal(sendto(fd, payload, len, 0, (struct sockaddr *)&sin, sizeof(sin)),
			 (ssize_t)len);
	close(fd);
}

static void test_open_names(void **state)
{
	char name[IF_NAMESIZE];
	int fd, fd2;

	(void)state;
	fd = tun_open("trfixed0", name);
	assert_true(fd >= 0);
	assert_string_equal(name, "trfixed0");
	assert_true(nl_link_index("trfixed0") > 0);
	fd2 = tun_open(NULL, name);
	assert_true(fd2 >= 0);
	assert_string_equal(name, "trellis0");
	close(fd2);
	close(fd);
	/* A non-persistent device goes away with its last fd. */
	assert_int_equal(nl_link_index("trfixed0"), -ENODEV);
	assert_int_equal(tun_open("a-name-much-too-long-for-linux", name), -EINVAL);
}

static void test_read_udp4(void **state)
{
	static const char payload[] = "hello from the kernel";
	struct ctx *c = *state;
	uint8_t buf[PKT_BUF_SIZE];
	struct iphdr *ip = (struct iphdr *)buf;
	struct udphdr *uh = (struct udphdr *)(buf + sizeof(*ip));
	size_t len;

	send4(peer4, 9, payload, sizeof(payload));
	len = read_udp_to(c, 4, 9, buf, NULL);
	assert_int_equal(len, sizeof(*ip) + sizeof(*uh) + sizeof(payload));
	assert_int_equal(ip->version, 4);
	assert_int_equal(ip->ihl, 5);
	assert_int_equal(ntohs(ip->tot_len), len);
	assert_int_equal(ip->protocol, IPPROTO_UDP);
	assert_memory_equal(&ip->saddr, local4, 4);
	assert_memory_equal(&ip->daddr, peer4, 4);
	assert_int_equal(csum_fold(csum_add(0, ip, sizeof(*ip))), 0);
	assert_int_equal(ntohs(uh->dest), 9);
	assert_int_equal(ntohs(uh->len), sizeof(*uh) + sizeof(payload));
	assert_memory_equal(buf + sizeof(*ip) + sizeof(*uh), payload, sizeof(payload));
}

static void test_read_udp6(void **state)
{
	static const char payload[] = "hello over IPv6";
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = htons(9) };
	struct ctx *c = *state;
	uint8_t buf[PKT_BUF_SIZE];
	struct ip6_hdr *ip6 = (struct ip6_hdr *)buf;
	struct in6_addr local6;
	size_t len;
	int fd;

	inet_pton(AF_INET6, "2001:db8::2", &sin6.sin6_addr);
	inet_pton(AF_INET6, "2001:db8::1", &local6);
	fd = udp_sock(AF_INET6);
	/* NODAD made the address usable at once: sending from it works without waiting. */
	assert_int_equal(sendto(fd, payload, sizeof(payload), 0, (struct sockaddr *)&sin6,
				sizeof(sin6)),
			 sizeof(payload));
	close(fd);
	len = read_udp_to(c, 6, 9, buf, NULL);
	assert_int_equal(len, sizeof(*ip6) + sizeof(struct udphdr) + sizeof(payload));
	assert_memory_equal(&ip6->ip6_src, &local6, 16);
	assert_memory_equal(&ip6->ip6_dst, &sin6.sin6_addr, 16);
	assert_memory_equal(buf + len - sizeof(payload), payload, sizeof(payload));
}

static void test_write_udp4(void **state)
{
	static const char payload[] = "hello from the tunnel";
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(5555) };
	struct ctx *c = *state;
	struct pkt *pkts[3];
	char rbuf[128];
	struct sockaddr_in from;
	socklen_t fromlen = sizeof(from);
	int fd;

	memcpy(&sin.sin_addr, local4, 4);
	fd = udp_sock(AF_INET);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);

	assert_int_equal(pkt_pool_get(c->pool, pkts, 3), 3);
	pkts[0]->len = (uint32_t)build_udp4(pkts[0]->data, peer4, 4444, local4, 5555, payload,
					    sizeof(payload));
	/* Not an IP packet: the kernel refuses it alone; the batch goes on. */
	memset(pkts[1]->data, 0, 40);
	pkts[1]->len = 40;
	pkts[2]->len = (uint32_t)build_udp4(pkts[2]->data, peer4, 4445, local4, 5555, payload,
					    sizeof(payload));
	assert_int_equal(tun_write_batch(c->fd, pkts, 3, false, 0, NULL), 2);
	assert_int_equal(tun_write_batch(c->fd, pkts + 1, 1, false, 0, NULL), -EINVAL);
	pkt_free(pkts, 3);

	assert_true(fd_wait_readable(fd, 2000));
	assert_int_equal(recvfrom(fd, rbuf, sizeof(rbuf), MSG_DONTWAIT, (struct sockaddr *)&from,
				  &fromlen),
			 sizeof(payload));
	assert_memory_equal(rbuf, payload, sizeof(payload));
	assert_memory_equal(&from.sin_addr, peer4, 4);
	assert_int_equal(ntohs(from.sin_port), 4444);
	assert_true(fd_wait_readable(fd, 2000));
	assert_int_equal(recvfrom(fd, rbuf, sizeof(rbuf), MSG_DONTWAIT, (struct sockaddr *)&from,
				  &fromlen),
			 sizeof(payload));
	assert_int_equal(ntohs(from.sin_port), 4445);
	close(fd);
}

static void test_route_to_tun(void **state)
{
	static const uint8_t net[4] = { 198, 19, 0, 0 }, dst[4] = { 198, 19, 1, 1 };
	static const char payload[] = "routed";
	struct ctx *c = *state;
	uint8_t buf[PKT_BUF_SIZE];
	struct iphdr *ip = (struct iphdr *)buf;

	assert_int_equal(nl_route_add(c->name, AF_INET, net, 16), 0);
	send4(dst, 9, payload, sizeof(payload));
	assert_true(read_udp_to(c, 4, 9, buf, NULL) > 0);
	assert_memory_equal(&ip->daddr, dst, 4);
	assert_memory_equal(&ip->saddr, local4, 4);
	assert_int_equal(nl_route_del(c->name, AF_INET, net, 16), 0);
}

static void test_oversize_dropped(void **state)
{
	static char big[PKT_BUF_MTU];
	static const char small[] = "small";
	struct ctx *c = *state;
	uint8_t buf[PKT_BUF_SIZE];
	unsigned dropped;

	/* An MTU above what the buffers carry: the kernel hands us packets we must refuse. */
	assert_int_equal(nl_link_set_mtu(c->name, 9000), 0);
	memset(big, 0xab, sizeof(big));
	send4(peer4, 9, big, sizeof(big));
	send4(peer4, 10, small, sizeof(small));
	assert_true(read_udp_to(c, 4, 10, buf, &dropped) > 0);
	assert_int_equal(dropped, 1);
	assert_memory_equal(buf + 28, small, sizeof(small));
}

static void test_jumbo_read(void **state)
{
	static char big[9000 - 28];
	static uint8_t buf[9000];
	struct ctx *c = *state;
	unsigned dropped = 99;

	/* Buffers sized for the MTU (a larger pool) take what the default ones refuse. */
	pkt_pool_free(c->pool);
	c->pool = pkt_pool_new_sized(POOL_SIZE, PKT_HEADROOM + 9000 + PKT_TAILROOM);
	assert_non_null(c->pool);
	assert_int_equal(nl_link_set_mtu(c->name, 9000), 0);
	memset(big, 0xcd, sizeof(big));
	send4(peer4, 11, big, sizeof(big));
	assert_int_equal(read_udp_to(c, 4, 11, buf, &dropped), 9000);
	assert_int_equal(dropped, 0);
	assert_memory_equal(buf + 28, big, sizeof(big));
}

static void test_read_empty(void **state)
{
	struct ctx *c = *state;
	struct pkt *pkts[4];
	unsigned dropped = 99;
	int r;

	/* Drain whatever the kernel sent on its own, then the queue is empty. */
	assert_int_equal(pkt_pool_get(c->pool, pkts, 4), 4);
	do {
		r = tun_read_batch(c->fd, NULL, pkts, 4, &dropped);
		assert_true(r >= 0);
	} while (r > 0);
	assert_int_equal(dropped, 0);
	pkt_free(pkts, 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_open_names, netns_enter),
		cmocka_unit_test_setup_teardown(test_read_udp4, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_udp6, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_udp4, setup, teardown),
		cmocka_unit_test_setup_teardown(test_route_to_tun, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversize_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_jumbo_read, setup, teardown),
		cmocka_unit_test_setup_teardown(test_read_empty, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
