/* SPDX-License-Identifier: MIT */
/*
 * A TUN device with IFF_VNET_HDR and offloads, against the kernel in a network namespace of
 * its own: a UDP super-packet (USO) read as its segments; a TCP connection to a peer we play
 * by hand, whose SYN arrives with its checksum completed, whose data segments, coalesced into
 * one write, reach the socket intact, and whose own data arrives from TSO cut into segments.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "netns.h"
#include "../offload/pktgen.h"
#include "base/pkt.h"
#include "os/netlink.h"
#include "os/tun.h"

#define TEST_MTU 1420
#define NPKT 64
#define PEER_PORT 5201

struct ctx {
	int fd;
	char name[IF_NAMESIZE];
	unsigned offloads;
	struct tun_rx rx;
	struct pkt_pool *pool;
};

static const uint8_t local4[4] = {198, 18, 0, 1};
static const uint8_t peer4[4] = {198, 18, 0, 2};

static int teardown(void **state)
{
	struct ctx *c = *state;

	if (!c)
		return 0;
	if (c->fd >= 0)
		close(c->fd);
	tun_rx_free(&c->rx);
	pkt_pool_free(c->pool);
	free(c);
	return 0;
}

static int setup(void **state)
{
	struct ctx *c;

	if (netns_enter(state) < 0)
		return -1;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -1;
	*state = c;
	c->fd = tun_open_vnet("troff%d", c->name);
	c->pool = pkt_pool_new(NPKT);
	if (c->fd < 0 || !c->pool || tun_rx_init_vnet(&c->rx) < 0)
		goto fail;
	c->offloads = tun_offload_set(c->fd, TUN_OFFLOAD_TSO | TUN_OFFLOAD_USO);
	if (nl_link_set_mtu(c->name, TEST_MTU) < 0 ||
	    nl_addr_add(c->name, AF_INET, local4, 24) < 0 || nl_link_set_up(c->name, true) < 0)
		goto fail;
	return 0;
fail:
	teardown(state);
	*state = NULL;
	return -1;
}

/*
 * Reads until `want` packets matching (proto, dport or sport) are copied into out (each
 * 2 KiB), or 2 s pass. Returns how many.
 */
static unsigned read_matching(struct ctx *c, uint8_t proto, uint16_t port, bool by_dport,
			      uint8_t (*out)[2048], uint32_t *out_len, unsigned want)
{
	struct pkt *pkts[NPKT];
	unsigned got = 0, i, n, dropped;
	int tries, r;

	for (tries = 0; tries < 20 && got < want; tries++) {
		if (!fd_wait_readable(c->fd, 100) && offload_seg_done(&c->rx.seg)) {
			if (got)
				break; /* what came is what there is for now */
			continue;
		}
		n = pkt_pool_get(c->pool, pkts, NPKT);
		assert_int_equal(n, NPKT);
		r = tun_read_batch(c->fd, &c->rx, pkts, n, &dropped);
		assert_true(r >= 0);
		assert_int_equal(dropped, 0);
		for (i = 0; i < (unsigned)r; i++) {
			const uint8_t *d = pkts[i]->data;
			size_t l4 = (size_t)(d[0] & 0xf) * 4;

			if (d[0] >> 4 != 4 || d[9] != proto || got >= want)
				continue;
			if (gen_get16(d + l4 + (by_dport ? 2 : 0)) != port)
				continue;
			memcpy(out[got], d, pkts[i]->len);
			out_len[got++] = pkts[i]->len;
		}
		pkt_free(pkts, n);
	}
	return got;
}

static void test_offloads_on(void **state)
{
	struct ctx *c = *state;

	/* Linux >= 4.x takes TSO on TUN; the lab kernel takes USO too (6.2). */
	assert_true(c->offloads & TUN_OFFLOAD_TSO);
	assert_true(c->offloads & TUN_OFFLOAD_CSUM);
}

static void test_uso_read(void **state)
{
	static uint8_t out[NPKT][2048], data[5500];
	static uint32_t out_len[NPKT];
	struct ctx *c = *state;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(9)};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), seg = 1000;
	unsigned i, got;

	assert_true(fd >= 0);
	memcpy(&sin.sin_addr, peer4, 4);
	for (i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 13);
	/* One send of 5500 bytes cut at 1000: with USO the TUN gets it whole, and we cut it. */
	assert_int_equal(setsockopt(fd, IPPROTO_UDP, UDP_SEGMENT, &seg, sizeof(seg)), 0);
	assert_int_equal(sendto(fd, data, sizeof(data), 0, (struct sockaddr *)&sin, sizeof(sin)),
			 (ssize_t)sizeof(data));
	close(fd);
	got = read_matching(c, IPPROTO_UDP, 9, true, out, out_len, 6);
	assert_int_equal(got, 6);
	for (i = 0; i < 6; i++) {
		uint32_t pay = i < 5 ? 1000 : 500;

		assert_int_equal(out_len[i], 28 + pay);
		assert_true(gen_csum_ok(out[i], out_len[i], 20, IPPROTO_UDP));
		assert_memory_equal(out[i] + 28, data + i * 1000, pay);
	}
	if (c->offloads & TUN_OFFLOAD_USO)
		assert_int_equal(c->rx.supers, 1);
	assert_int_equal(c->rx.bad, 0);
}

/* A packet from the peer, written as the data path writes: vnet header, coalesced. */
static void peer_send(struct ctx *c, const struct gen *gs, unsigned n)
{
	struct pkt *pkts[NPKT];
	unsigned i;

	assert_int_equal(pkt_pool_get(c->pool, pkts, n), n);
	for (i = 0; i < n; i++)
		pkts[i]->len = (uint32_t)gen_build(pkts[i]->data, &gs[i]);
	assert_int_equal(tun_write_batch(c->fd, pkts, n, true, c->offloads & TUN_OFFLOAD_TSO),
			 (int)n);
	pkt_free(pkts, n);
}

static void test_tcp(void **state)
{
	static uint8_t out[NPKT][2048], sent[20000], got_data[20000];
	static uint32_t out_len[NPKT];
	struct ctx *c = *state;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(PEER_PORT)};
	struct gen g = {.src_last = 2, .dst_last = 1, .sport = PEER_PORT, .win = 65535}, gs[4];
	uint32_t isn_l, isn_p = 7000, have = 0;
	uint16_t lport;
	unsigned i, n, rounds;
	size_t l4;
	ssize_t r;
	int fd;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	assert_true(fd >= 0);
	memcpy(&sin.sin_addr, peer4, 4);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), -1);
	assert_int_equal(errno, EINPROGRESS);

	/* The SYN: the kernel left its checksum to us. */
	assert_int_equal(read_matching(c, IPPROTO_TCP, PEER_PORT, true, out, out_len, 1), 1);
	assert_true(gen_csum_ok(out[0], out_len[0], 20, IPPROTO_TCP));
	assert_int_equal(out[0][20 + 13], GEN_SYN);
	lport = gen_get16(out[0] + 20);
	isn_l = gen_get32(out[0] + 24);

	g.dport = lport;
	g.seq = isn_p;
	g.ack = isn_l + 1;
	g.flags = GEN_SYN | GEN_ACK;
	g.tcp_opts = 4;
	g.mss_opt = TEST_MTU - 40;
	peer_send(c, &g, 1);
	g.tcp_opts = 0;
	g.mss_opt = 0;
	/* Its ACK. */
	assert_int_equal(read_matching(c, IPPROTO_TCP, lport, false, out, out_len, 1), 1);

	/* Four segments in one write, as GRO would have made them. */
	for (i = 0; i < 4; i++) {
		gs[i] = g;
		gs[i].seq = isn_p + 1 + i * 1000;
		gs[i].flags = GEN_ACK | (i == 3 ? GEN_PSH : 0);
		gs[i].pay = 1000;
		gs[i].pay_off = i * 1000;
		gs[i].id = (uint16_t)(100 + i);
	}
	peer_send(c, gs, 4);
	for (rounds = 0; rounds < 20 && have < 4000; rounds++) {
		if (!fd_wait_readable(fd, 100))
			continue;
		r = recv(fd, got_data + have, 4000 - have, 0);
		assert_true(r > 0);
		have += (uint32_t)r;
	}
	assert_int_equal(have, 4000);
	for (i = 0; i < 4000; i++)
		assert_int_equal(got_data[i], gen_pay_byte(i));

	/* 20000 bytes the other way: TSO hands them over in super-packets, we ACK as we go. */
	for (i = 0; i < sizeof(sent); i++)
		sent[i] = (uint8_t)(i * 31 + 1);
	assert_int_equal(send(fd, sent, sizeof(sent), 0), (ssize_t)sizeof(sent));
	g.seq = isn_p + 1 + 4000;
	g.flags = GEN_ACK;
	have = 0;
	for (rounds = 0; rounds < 50 && have < sizeof(sent); rounds++) {
		n = read_matching(c, IPPROTO_TCP, lport, false, out, out_len, NPKT);
		for (i = 0; i < n; i++) {
			uint32_t seq, pay;

			l4 = 20;
			assert_true(gen_csum_ok(out[i], out_len[i], l4, IPPROTO_TCP));
			pay = out_len[i] - (uint32_t)(l4 + (out[i][l4 + 12] >> 4) * 4);
			seq = gen_get32(out[i] + l4 + 4) - (isn_l + 1);
			assert_true(pay <= TEST_MTU - 40);
			/* In order (a retransmission may repeat what we have). */
			if (seq <= have && seq + pay > have) {
				memcpy(got_data + seq, out[i] + out_len[i] - pay, pay);
				have = seq + pay;
			}
		}
		g.ack = isn_l + 1 + have;
		peer_send(c, &g, 1);
	}
	assert_int_equal(have, sizeof(sent));
	assert_memory_equal(got_data, sent, sizeof(sent));
	assert_true(c->rx.supers > 0);
	assert_int_equal(c->rx.bad, 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_offloads_on, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uso_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
