/* SPDX-License-Identifier: MIT */
/*
 * A TUN device with IFF_VNET_HDR and offloads, against the kernel in a network namespace of
 * its own: a UDP super-packet (USO) read as its segments; a TCP connection to a peer we play
 * by hand, whose SYN arrives with its checksum completed, whose data segments, coalesced into
 * one write, reach the socket intact, and whose own data arrives from TSO cut into segments;
 * UDP datagrams coalesced into one write (UDP_L4) that reach a socket without UDP_GRO one by
 * one, and that the kernel, forwarding them to a TUN without offloads, cuts with checksums
 * that are right; a datagram's IP fragments written as the datagram.
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "netns.h"
#include "../offload/pktgen.h"
#include "base/pkt.h"
#include "base/util.h"
#include "os/netlink.h"
#include "os/tun.h"

#define TEST_MTU 1420
#define NPKT 64
#define PEER_PORT 5201

struct ctx {
	int fd;
	char name[IF_NAMESIZE];
	unsigned offloads;
	unsigned gro; /* OFFLOAD_GRO_*, as trellisd derives it from offloads */
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
	c->gro = (c->offloads & TUN_OFFLOAD_TSO ? OFFLOAD_GRO_TCP : 0) |
		 (c->offloads & TUN_OFFLOAD_USO ? OFFLOAD_GRO_UDP : 0);
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
 * Reads from fd (with rx: a vnet TUN) until `want` packets matching (proto, dport or sport)
 * are copied into out (each 2 KiB), or 2 s pass. Returns how many.
 */
static unsigned read_matching_fd(struct ctx *c, int fd, struct tun_rx *rx, uint8_t proto,
				 uint16_t port, bool by_dport, uint8_t (*out)[2048],
				 uint32_t *out_len, unsigned want)
{
	struct pkt *pkts[NPKT];
	unsigned got = 0, i, n, dropped;
	int tries, r;

	for (tries = 0; tries < 20 && got < want; tries++) {
		if (!fd_wait_readable(fd, 100) && (!rx || offload_seg_done(&rx->seg))) {
			if (got)
				break; /* what came is what there is for now */
			continue;
		}
		n = pkt_pool_get(c->pool, pkts, NPKT);
		assert_int_equal(n, NPKT);
		r = tun_read_batch(fd, rx, pkts, n, &dropped);
		assert_true(r >= 0);
		assert_int_equal(dropped, 0);
		for (i = 0; i < (unsigned)r; i++) {
			const uint8_t *d = pkts[i]->data;
			bool v6 = d[0] >> 4 == 6;
			size_t l4 = v6 ? 40 : (size_t)(d[0] & 0xf) * 4;

			if ((v6 ? d[6] : d[9]) != proto || got >= want || pkts[i]->len < l4 + 4)
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

static unsigned read_matching(struct ctx *c, uint8_t proto, uint16_t port, bool by_dport,
			      uint8_t (*out)[2048], uint32_t *out_len, unsigned want)
{
	return read_matching_fd(c, c->fd, &c->rx, proto, port, by_dport, out, out_len, want);
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

/* Packets from the peer, written as the data path writes: vnet header, coalesced. */
static void peer_send(struct ctx *c, const struct gen *gs, unsigned n)
{
	struct pkt *pkts[NPKT];
	unsigned i;

	assert_int_equal(pkt_pool_get(c->pool, pkts, n), n);
	for (i = 0; i < n; i++)
		pkts[i]->len = (uint32_t)gen_build(pkts[i]->data, &gs[i]);
	assert_int_equal(tun_write_batch(c->fd, pkts, n, true, c->gro, NULL), (int)n);
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

/* --- UDP datagrams coalesced into one write --- */

#define UDP_PORT 7000
#define UDP_MAX 24

static const uint8_t local6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1};

/* Packets the kernel counted in from a device (one per TUN write), from /proc/net/dev. */
static uint64_t rx_packets(const char *name)
{
	char line[512], *colon, *p;
	unsigned long long bytes, pkts = 0;
	size_t nlen = strlen(name);
	FILE *f = fopen("/proc/net/dev", "r");

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		for (p = line; *p == ' '; p++)
			;
		colon = strchr(p, ':');
		if (!colon || (size_t)(colon - p) != nlen || strncmp(p, name, nlen))
			continue;
		assert_int_equal(sscanf(colon + 1, "%llu %llu", &bytes, &pkts), 2);
	}
	fclose(f);
	return pkts;
}

/* The datagrams of one case: payload sizes, the peer's addresses to dst_last. */
static unsigned udp_build(struct gen *gs, const uint32_t *sizes, unsigned n, bool v6,
			  uint8_t dst_last)
{
	uint32_t off = 0;
	unsigned i;

	for (i = 0; i < n; i++) {
		gs[i] = (struct gen){.v6 = v6,
				     .proto = IPPROTO_UDP,
				     .src_last = 2,
				     .dst_last = dst_last,
				     .sport = 5555,
				     .dport = UDP_PORT,
				     .id = (uint16_t)(300 + i),
				     .pay = sizes[i],
				     .pay_off = off};
		off += sizes[i];
	}
	return n;
}

/* Sizes of the cases: one run cut by 1000 (a short last), and a mix that groups in five. */
static const uint32_t udp_fixed[UDP_MAX] = {1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000,
					    1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000,
					    1000, 1000, 1000, 1000, 1000, 1000, 1000, 333};
/* [1200 1200 1200 700] [1200 300] [300] [1000 64] [1] */
static const uint32_t udp_mixed[] = {1200, 1200, 1200, 700, 1200, 300, 300, 1000, 64, 1};

/* s gets the n datagrams of gs, each alone, of its size and content, in order; then nothing. */
static void udp_recv_all(int s, const struct gen *gs, const uint32_t *sizes, unsigned n)
{
	static uint8_t buf[4096];
	unsigned i, k;
	ssize_t r;

	for (i = 0; i < n; i++) {
		assert_true(fd_wait_readable(s, 2000));
		r = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
		assert_int_equal(r, (ssize_t)sizes[i]);
		for (k = 0; k < sizes[i]; k++)
			assert_int_equal(buf[k], gen_pay_byte(gs[i].pay_off + k));
	}
	assert_int_equal(recv(s, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);
}

static void udp_socket_case(struct ctx *c, int s, bool v6, const uint32_t *sizes, unsigned n,
			    unsigned writes)
{
	struct gen gs[UDP_MAX];
	uint64_t before = rx_packets(c->name);

	udp_build(gs, sizes, n, v6, 1);
	peer_send(c, gs, n);
	/* Coalesced: the kernel counted as many packets in as there were writes. */
	assert_int_equal(rx_packets(c->name) - before, writes);
	udp_recv_all(s, gs, sizes, n);
}

/*
 * Waits until s, bound to local6, receives what is sent to it: the kernel installs the local
 * route of a new IPv6 address (NODAD too) from a work queue, after the address exists.
 */
static void wait_local6(int s)
{
	struct sockaddr_in6 to = {.sin6_family = AF_INET6, .sin6_port = htons(UDP_PORT)};
	uint8_t b;
	int p = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), tries;

	assert_true(p >= 0);
	memcpy(&to.sin6_addr, local6, 16);
	for (tries = 0; tries < 50; tries++) {
		assert_int_equal(sendto(p, "", 1, 0, (struct sockaddr *)&to, sizeof(to)), 1);
		if (fd_wait_readable(s, 100))
			break;
	}
	assert_true(tries < 50);
	while (recv(s, &b, 1, MSG_DONTWAIT) == 1)
		;
	close(p);
}

/* A plain UDP socket on the device's address (local4 or local6), with a 4 MiB buffer. */
static int udp_socket_local(bool v6)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(UDP_PORT)};
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(UDP_PORT)};
	int s, big = 4 << 20;

	memcpy(&sin.sin_addr, local4, 4);
	memcpy(&sin6.sin6_addr, local6, 16);
	s = socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_int_equal(setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)), 0);
	assert_int_equal(v6 ? bind(s, (struct sockaddr *)&sin6, sizeof(sin6))
			    : bind(s, (struct sockaddr *)&sin, sizeof(sin)),
			 0);
	if (v6)
		wait_local6(s);
	return s;
}

/*
 * A socket without UDP_GRO gets each datagram alone, with its length and payload, in order
 * (the kernel cuts the super-packet in udp_queue_rcv_skb); IPv4 and IPv6.
 */
static void test_udp_gro_socket(void **state)
{
	struct ctx *c = *state;
	int v6, s;

	if (!(c->offloads & TUN_OFFLOAD_USO))
		skip();
	assert_int_equal(nl_addr_add(c->name, AF_INET6, local6, 64), 0);
	for (v6 = 0; v6 < 2; v6++) {
		s = udp_socket_local(v6);
		udp_socket_case(c, s, v6, udp_fixed, UDP_MAX, 1);
		udp_socket_case(c, s, v6, udp_mixed, ARRAY_SIZE(udp_mixed), 5);
		close(s);
	}
}

/*
 * Datagrams above the MTU arrive as IP fragments. Those of a datagram that follow each other
 * go up as the datagram (offload_defrag), and a flow's joined datagrams as one super-packet:
 * 16 datagrams of 1400 bytes, 32 fragments, in one write where the device took USO (else 16),
 * and a datagram whose whole would not fit a buffer as its 3 fragments, which the kernel
 * reassembles. The socket gets every datagram whole, in order; IPv4 and IPv6.
 */
static void test_udp_fragments(void **state)
{
	static uint8_t d[4096];
	struct ctx *c = *state;
	struct pkt *pkts[NPKT];
	struct gen gs[17];
	uint32_t sizes[17];
	unsigned i, k, n, count, joined;
	uint64_t before;
	int v6, s;

	/* Fragments are joined where the write path coalesces (the device took TSO or USO). */
	if (!c->gro)
		skip();
	assert_int_equal(nl_addr_add(c->name, AF_INET6, local6, 64), 0);
	for (i = 0; i < 17; i++)
		sizes[i] = i < 16 ? 1400 : 3000;
	for (v6 = 0; v6 < 2; v6++) {
		s = udp_socket_local(v6);
		udp_build(gs, sizes, 17, v6, 1);
		for (i = 0, n = 0; i < 17; i++) {
			size_t len, flen = 0;

			gs[i].no_df = true;
			len = gen_build(d, &gs[i]);
			count = 1;
			for (k = 0; k < count; k++, n++) {
				assert_int_equal(pkt_pool_get(c->pool, &pkts[n], 1), 1);
				/* As a decrypted packet sits: after the WireGuard data header. */
				pkts[n]->data += 16;
				count =
				    gen_frag(d, len, TEST_MTU, 0x600 + i, k, pkts[n]->data, &flen);
				pkts[n]->len = (uint32_t)flen;
			}
		}
		assert_int_equal(n, 16 * 2 + 3);
		before = rx_packets(c->name);
		assert_int_equal(tun_write_batch(c->fd, pkts, n, true, c->gro, &joined), (int)n);
		pkt_free(pkts, n);
		/* Each 1,400-byte datagram's second fragment went inside its first. */
		assert_int_equal(joined, 16);
		assert_int_equal(rx_packets(c->name) - before,
				 (c->offloads & TUN_OFFLOAD_USO ? 1 : 16) + 3);
		udp_recv_all(s, gs, sizes, 17);
		close(s);
	}
}

/* A socket with UDP_GRO takes the run whole, as from a NIC's GRO, told the datagrams' size. */
static void test_udp_gro_socket_whole(void **state)
{
	static uint8_t buf[65536];
	struct ctx *c = *state;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(UDP_PORT)};
	union {
		struct cmsghdr align;
		uint8_t b[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
	struct msghdr mh = {.msg_iov = &iov,
			    .msg_iovlen = 1,
			    .msg_control = cbuf.b,
			    .msg_controllen = sizeof(cbuf)};
	struct gen gs[UDP_MAX];
	struct cmsghdr *cm;
	int s, on = 1, size = 0;
	uint32_t total = 0;
	unsigned i, k;

	if (!(c->offloads & TUN_OFFLOAD_USO))
		skip();
	memcpy(&sin.sin_addr, local4, 4);
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(s >= 0);
	assert_int_equal(setsockopt(s, IPPROTO_UDP, UDP_GRO, &on, sizeof(on)), 0);
	assert_int_equal(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	udp_build(gs, udp_fixed, UDP_MAX, false, 1);
	peer_send(c, gs, UDP_MAX);
	assert_true(fd_wait_readable(s, 2000));
	for (i = 0; i < UDP_MAX; i++)
		total += udp_fixed[i];
	assert_int_equal(recvmsg(s, &mh, MSG_DONTWAIT), (ssize_t)total);
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == IPPROTO_UDP && cm->cmsg_type == UDP_GRO)
			memcpy(&size, CMSG_DATA(cm), sizeof(size));
	assert_int_equal(size, 1000);
	for (k = 0; k < total; k++)
		assert_int_equal(buf[k], gen_pay_byte(k));
	close(s);
}

static void write_sysctl(const char *path)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_true(fputs("1\n", f) >= 0);
	assert_int_equal(fclose(f), 0);
}

/*
 * The kernel forwards one coalesced write to a TUN without offloads: it must cut it in
 * software, each datagram with its length, ids running on, TTL less one and checksums
 * (IPv4 header, UDP) that are right, which is what the partial checksum we wrote leads to.
 */
static void test_udp_gro_forward(void **state)
{
	static uint8_t out[NPKT][2048];
	static uint32_t out_len[NPKT];
	static const uint8_t fwd4[4] = {198, 18, 0, 129};
	static const uint8_t fwd6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 0x81};
	struct ctx *c = *state;
	char name2[IF_NAMESIZE];
	struct gen gs[UDP_MAX];
	int fd2, v6;
	unsigned i, n;
	uint64_t before;

	if (!(c->offloads & TUN_OFFLOAD_USO))
		skip();
	write_sysctl("/proc/sys/net/ipv4/ip_forward");
	write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding");
	assert_int_equal(nl_addr_add(c->name, AF_INET6, local6, 64), 0);
	fd2 = tun_open("trfwd%d", name2);
	assert_true(fd2 >= 0);
	/* More specific than the first device's /24 and /64: 198.18.0.130 and ::82 go there. */
	assert_int_equal(nl_link_set_mtu(name2, TEST_MTU), 0);
	assert_int_equal(nl_addr_add(name2, AF_INET, fwd4, 25), 0);
	assert_int_equal(nl_addr_add(name2, AF_INET6, fwd6, 121), 0);
	assert_int_equal(nl_link_set_up(name2, true), 0);
	for (v6 = 0; v6 < 2; v6++) {
		size_t l4 = v6 ? 40 : 20;

		n = udp_build(gs, udp_fixed, UDP_MAX, v6, 130);
		before = rx_packets(c->name);
		peer_send(c, gs, n);
		assert_int_equal(rx_packets(c->name) - before, 1);
		assert_int_equal(
		    read_matching_fd(c, fd2, NULL, IPPROTO_UDP, UDP_PORT, true, out, out_len, n),
		    n);
		for (i = 0; i < n; i++) {
			uint8_t want[2048];
			size_t len = gen_build(want, &gs[i]);

			assert_int_equal(out_len[i], len);
			assert_true(gen_csum_ok(out[i], out_len[i], l4, IPPROTO_UDP));
			assert_int_equal(out[i][v6 ? 7 : 8], 63);
			if (!v6)
				assert_int_equal(gen_get16(out[i] + 4), 300 + i);
			/* The UDP header and the payload as they were sent. */
			assert_memory_equal(out[i] + l4, want + l4, len - l4);
		}
	}
	close(fd2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_offloads_on, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_uso_read, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_gro_socket, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_gro_socket_whole, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_fragments, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_gro_forward, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
