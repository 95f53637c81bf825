/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <netinet/udp.h>
#include <poll.h>

#include "netns.h"
#include "base/pkt.h"
#include "base/util.h"
#include "os/netlink.h"
#include "os/udp.h"

#define NPKT 32

static uint16_t sock_port(int fd, int *ret_family)
{
	struct endpoint ep;
	socklen_t len = sizeof(ep);

	assert_int_equal(getsockname(fd, &ep.sa, &len), 0);
	*ret_family = ep.sa.sa_family;
	return ntohs(ep.sa.sa_family == AF_INET ? ep.in4.sin_port : ep.in6.sin6_port);
}

static int sockopt_int(int fd, int level, int opt)
{
	int v = -1;
	socklen_t len = sizeof(v);

	assert_int_equal(getsockopt(fd, level, opt, &v, &len), 0);
	return v;
}

static void test_open_port0(void **state)
{
	struct udp_socks s;
	int family;

	(void)state;
	assert_int_equal(udp_socks_open(&s, 0, 0), 0);
	assert_true(s.fd4 >= 0);
	assert_true(s.fd6 >= 0);
	assert_true(s.port != 0);
	assert_int_equal(sock_port(s.fd4, &family), s.port);
	assert_int_equal(family, AF_INET);
	assert_int_equal(sock_port(s.fd6, &family), s.port);
	assert_int_equal(family, AF_INET6);
	assert_int_equal(sockopt_int(s.fd6, IPPROTO_IPV6, IPV6_V6ONLY), 1);
	/* As root the FORCE options lift the buffers above rmem_max (the kernel doubles them). */
	assert_true(sockopt_int(s.fd4, SOL_SOCKET, SO_RCVBUF) >= 4 << 20);
	assert_true(sockopt_int(s.fd6, SOL_SOCKET, SO_SNDBUF) >= 4 << 20);
	assert_int_equal(sockopt_int(s.fd4, SOL_SOCKET, SO_MARK), 0);
	udp_socks_close(&s);
	assert_int_equal(s.fd4, -1);
	assert_int_equal(s.fd6, -1);
	udp_socks_close(&s);
	udp_socks_close(NULL);
}

static void test_open_fixed_port(void **state)
{
	struct udp_socks a, b;
	uint16_t port;

	(void)state;
	assert_int_equal(udp_socks_open(&a, 0, 0), 0);
	port = a.port;
	b.fd4 = 12345;
	assert_int_equal(udp_socks_open(&b, port, 0), -EADDRINUSE);
	assert_int_equal(b.fd4, 12345); /* untouched on failure */
	udp_socks_close(&a);
	assert_int_equal(udp_socks_open(&b, port, 0), 0);
	assert_int_equal(b.port, port);
	udp_socks_close(&b);
}

static void test_fwmark(void **state)
{
	struct udp_socks s;

	(void)state;
	assert_int_equal(udp_socks_open(&s, 0, 0x1234), 0);
	assert_int_equal(sockopt_int(s.fd4, SOL_SOCKET, SO_MARK), 0x1234);
	assert_int_equal(sockopt_int(s.fd6, SOL_SOCKET, SO_MARK), 0x1234);
	assert_int_equal(udp_socks_set_fwmark(&s, 0x51820), 0);
	assert_int_equal(sockopt_int(s.fd4, SOL_SOCKET, SO_MARK), 0x51820);
	assert_int_equal(udp_socks_set_fwmark(&s, 0), 0);
	assert_int_equal(sockopt_int(s.fd4, SOL_SOCKET, SO_MARK), 0);
	assert_int_equal(sockopt_int(s.fd6, SOL_SOCKET, SO_MARK), 0);
	udp_socks_close(&s);
}

static void set_dst(struct pkt *p, int family, uint16_t port)
{
	memset(&p->ep, 0, sizeof(p->ep));
	if (family == AF_INET) {
		p->ep.in4.sin_family = AF_INET;
		p->ep.in4.sin_port = htons(port);
		p->ep.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	} else {
		p->ep.in6.sin6_family = AF_INET6;
		p->ep.in6.sin6_port = htons(port);
		p->ep.in6.sin6_addr = in6addr_loopback;
	}
}

/*
 * Receives until `want` datagrams came in on fd or two seconds passed, into buffers from
 * pool (coalesced messages cut up, in order); returns the count.
 */
static unsigned recv_all(int fd, struct pkt_pool *pool, struct pkt **out, unsigned want,
			 unsigned *ret_dropped)
{
	static uint8_t spill[UDP_GRO_MSGS][UDP_GRO_SPILL];
	struct pkt *msgs[UDP_GRO_MSGS];
	unsigned got = 0, dropped, total_dropped = 0, nm, e, used, lost, j;
	struct udp_gro_rx gro;
	int tries, r;

	for (j = 0; j < UDP_GRO_MSGS; j++)
		gro.spill[j] = spill[j];
	for (tries = 0; tries < 20 && got < want; tries++) {
		if (!fd_wait_readable(fd, 100))
			continue;
		nm = pkt_pool_get(pool, msgs, MIN(UDP_GRO_MSGS, want - got));
		assert_true(nm > 0);
		r = udp_recv_batch(fd, msgs, nm, &gro, &dropped);
		assert_true(r >= 0);
		for (j = 0; j < (unsigned)r; j++) {
			assert_true(got < want);
			out[got++] = msgs[j];
			e = pkt_pool_get(pool, out + got, want - got);
			used = udp_gro_split(msgs[j], &gro, j, out + got, e, &lost);
			assert_int_equal(lost, 0);
			pkt_free(out + got + used, e - used);
			got += used;
		}
		pkt_free(msgs + r, nm - (unsigned)r);
		total_dropped += dropped;
	}
	*ret_dropped = total_dropped;
	return got;
}

static void test_batch_loopback(void **state)
{
	struct pkt *tx[NPKT], *rx4[NPKT], *rx6[NPKT];
	struct pkt_pool *pool;
	struct udp_socks a, b;
	unsigned i, n4 = 0, n6 = 0, dropped;
	int family;
	char want[32];

	(void)state;
	pool = pkt_pool_new(3 * NPKT);
	assert_non_null(pool);
	assert_int_equal(udp_socks_open(&a, 0, 0), 0);
	assert_int_equal(udp_socks_open(&b, 0, 0), 0);

	/* Runs of 8 per family: each run should go out in one sendmmsg. */
	assert_int_equal(pkt_pool_get(pool, tx, NPKT), NPKT);
	for (i = 0; i < NPKT; i++) {
		family = (i / 8) % 2 ? AF_INET6 : AF_INET;
		set_dst(tx[i], family, b.port);
		tx[i]->len = (uint32_t)snprintf((char *)tx[i]->data, 32, "%s packet %u",
						family == AF_INET ? "v4" : "v6", i);
	}
	assert_int_equal(udp_send_batch(&a, tx, NPKT, NULL), NPKT);
	pkt_free(tx, NPKT);

	/* Each run of 8 equal sizes is one GSO message, coalesced up to us (GRO) and cut. */
	assert_true(b.gro4 && b.gro6);
	assert_int_equal(recv_all(b.fd4, pool, rx4, NPKT / 2, &dropped), NPKT / 2);
	assert_int_equal(dropped, 0);
	assert_int_equal(recv_all(b.fd6, pool, rx6, NPKT / 2, &dropped), NPKT / 2);
	assert_int_equal(dropped, 0);

	/* Loopback keeps the order within a socket. */
	for (i = 0; i < NPKT; i++) {
		struct pkt *p;

		if ((i / 8) % 2) {
			p = rx6[n6++];
			assert_int_equal(p->ep.sa.sa_family, AF_INET6);
			assert_memory_equal(&p->ep.in6.sin6_addr, &in6addr_loopback, 16);
			assert_int_equal(ntohs(p->ep.in6.sin6_port), a.port);
			snprintf(want, sizeof(want), "v6 packet %u", i);
		} else {
			p = rx4[n4++];
			assert_int_equal(p->ep.sa.sa_family, AF_INET);
			assert_int_equal(ntohl(p->ep.in4.sin_addr.s_addr), INADDR_LOOPBACK);
			assert_int_equal(ntohs(p->ep.in4.sin_port), a.port);
			snprintf(want, sizeof(want), "v4 packet %u", i);
		}
		assert_int_equal(p->len, strlen(want));
		assert_memory_equal(p->data, want, p->len);
	}
	/* Nothing more is waiting. */
	assert_int_equal(udp_recv_batch(b.fd4, rx4, NPKT / 2, NULL, &dropped), 0);
	assert_int_equal(udp_recv_batch(b.fd6, rx6, NPKT / 2, NULL, &dropped), 0);

	pkt_free(rx4, NPKT / 2);
	pkt_free(rx6, NPKT / 2);
	udp_socks_close(&a);
	udp_socks_close(&b);
	pkt_pool_free(pool);
}

/*
 * One recvmsg on a UDP_GRO socket: the datagram (several, if the sender's GSO message
 * reached us whole) and the segment size the kernel reports (0: a single datagram).
 */
static ssize_t recv_gro(int fd, uint8_t *buf, size_t cap, int *ret_seg)
{
	union {
		uint8_t b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = {.iov_base = buf, .iov_len = cap};
	struct msghdr mh = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	struct cmsghdr *c;
	ssize_t r;

	*ret_seg = 0;
	if (poll(&pfd, 1, 2000) != 1)
		return -1;
	r = recvmsg(fd, &mh, MSG_DONTWAIT);
	for (c = CMSG_FIRSTHDR(&mh); r > 0 && c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO)
			memcpy(ret_seg, CMSG_DATA(c), sizeof(int));
	return r;
}

/*
 * Equal-size packets to one endpoint leave as one UDP_SEGMENT message: a receiver that takes
 * GRO gets them whole with their size, the last one shorter; a change of endpoint or size
 * starts a new message. Without GSO (udp_gso_allow(false)) each goes alone.
 */
static void test_gso(void **state)
{
	static uint8_t buf[65536];
	struct pkt *tx[13];
	struct pkt_pool *pool;
	struct udp_socks a, b, c;
	unsigned i, round;
	int one = 1, seg;

	(void)state;
	pool = pkt_pool_new(13);
	assert_non_null(pool);
	for (round = 0; round < 2; round++) {
		udp_gso_allow(round == 0);
		assert_int_equal(udp_socks_open(&a, 0, 0), 0);
		assert_int_equal(a.gso4, round == 0);
		assert_int_equal(udp_socks_open(&b, 0, 0), 0);
		assert_int_equal(udp_socks_open(&c, 0, 0), 0);
		assert_int_equal(setsockopt(b.fd4, SOL_UDP, UDP_GRO, &one, sizeof(one)), 0);
		assert_int_equal(setsockopt(c.fd4, SOL_UDP, UDP_GRO, &one, sizeof(one)), 0);
		/* b: 10 x 1000 and a 300-byte last; c: one; b: one again. */
		assert_int_equal(pkt_pool_get(pool, tx, 13), 13);
		for (i = 0; i < 13; i++) {
			set_dst(tx[i], AF_INET, i == 11 ? c.port : b.port);
			tx[i]->len = i == 10 ? 300 : 1000;
			memset(tx[i]->data, (int)i, tx[i]->len);
		}
		assert_int_equal(udp_send_batch(&a, tx, 13, NULL), 13);
		pkt_free(tx, 13);
		if (round == 0) {
			assert_int_equal(recv_gro(b.fd4, buf, sizeof(buf), &seg), 10300);
			assert_int_equal(seg, 1000);
			for (i = 0; i < 10300; i++)
				assert_int_equal(buf[i], i / 1000);
		} else {
			for (i = 0; i < 11; i++) {
				assert_int_equal(recv_gro(b.fd4, buf, sizeof(buf), &seg),
						 i == 10 ? 300 : 1000);
				assert_int_equal(seg, 0);
				assert_int_equal(buf[0], i);
			}
		}
		assert_int_equal(recv_gro(c.fd4, buf, sizeof(buf), &seg), 1000);
		assert_int_equal(buf[0], 11);
		assert_int_equal(recv_gro(b.fd4, buf, sizeof(buf), &seg), 1000);
		assert_int_equal(buf[0], 12);
		udp_socks_close(&a);
		udp_socks_close(&b);
		udp_socks_close(&c);
	}
	udp_gso_allow(true);
	pkt_pool_free(pool);
}

/* Sends 10 x 1000 bytes and a 300-byte last from a to b as one GSO message. */
static void send_run_of_11(struct pkt_pool *pool, struct udp_socks *a, uint16_t port)
{
	struct pkt *tx[11];
	unsigned i, j;

	assert_int_equal(pkt_pool_get(pool, tx, 11), 11);
	for (i = 0; i < 11; i++) {
		set_dst(tx[i], AF_INET, port);
		tx[i]->len = i == 10 ? 300 : 1000;
		for (j = 0; j < tx[i]->len; j++)
			tx[i]->data[j] = (uint8_t)(i * 7 + j);
	}
	assert_int_equal(udp_send_batch(a, tx, 11, NULL), 11);
	pkt_free(tx, 11);
}

static void check_run_of_11(struct pkt **rx, uint16_t from)
{
	unsigned i, j;

	for (i = 0; i < 11; i++) {
		assert_int_equal(rx[i]->len, i == 10 ? 300 : 1000);
		assert_int_equal(ntohs(rx[i]->ep.in4.sin_port), from);
		assert_int_equal(rx[i]->ep.src.family, AF_INET);
		for (j = 0; j < rx[i]->len; j++)
			assert_int_equal(rx[i]->data[j], (uint8_t)(i * 7 + j));
	}
}

/*
 * UDP GRO on receive: a coalesced message fills the packet's buffer (1984 bytes: the
 * second datagram straddles it and the spill) and is cut into its datagrams, each with
 * the sender's address and our local one; extras that run short are counted lost; a
 * reader that passes no spill loses the message, counted; datagrams too big for the
 * buffers are dropped, counted.
 */
static void test_gro_recv(void **state)
{
	static uint8_t spill[UDP_GRO_MSGS][UDP_GRO_SPILL];
	struct pkt *rx[UDP_GRO_MSGS + 11];
	struct pkt_pool *pool, *small;
	struct udp_gro_rx gro;
	struct udp_socks a, b;
	unsigned dropped, lost, used, i;

	(void)state;
	pool = pkt_pool_new(2 * UDP_GRO_MSGS + 11);
	small = pkt_pool_new_sized(UDP_GRO_MSGS, 512);
	assert_non_null(pool);
	assert_non_null(small);
	for (i = 0; i < UDP_GRO_MSGS; i++)
		gro.spill[i] = spill[i];
	assert_int_equal(udp_socks_open(&a, 0, 0), 0);
	assert_int_equal(udp_socks_open(&b, 0, 0), 0);
	assert_true(b.gro4);

	/* Whole: one message of 10,300 bytes in 1,000-byte datagrams, cut into 11. */
	send_run_of_11(pool, &a, b.port);
	assert_int_equal(pkt_pool_get(pool, rx, UDP_GRO_MSGS), UDP_GRO_MSGS);
	assert_true(fd_wait_readable(b.fd4, 2000));
	assert_int_equal(udp_recv_batch(b.fd4, rx, UDP_BATCH_MAX, &gro, &dropped), 1);
	assert_int_equal(dropped, 0);
	assert_int_equal(gro.len[0], 10300);
	assert_int_equal(gro.seg[0], 1000);
	assert_int_equal(rx[0]->len, PKT_BUF_SIZE - PKT_HEADROOM);
	pkt_free(rx + 1, UDP_GRO_MSGS - 1);
	assert_int_equal(pkt_pool_get(pool, rx + 1, 10), 10);
	assert_int_equal(udp_gro_split(rx[0], &gro, 0, rx + 1, 10, &lost), 10);
	assert_int_equal(lost, 0);
	check_run_of_11(rx, a.port);
	pkt_free(rx, 11);

	/* Three buffers for ten more datagrams: three cut, seven lost. */
	send_run_of_11(pool, &a, b.port);
	assert_int_equal(pkt_pool_get(pool, rx, 4), 4);
	assert_true(fd_wait_readable(b.fd4, 2000));
	assert_int_equal(udp_recv_batch(b.fd4, rx, 1, &gro, &dropped), 1);
	used = udp_gro_split(rx[0], &gro, 0, rx + 1, 3, &lost);
	assert_int_equal(used, 3);
	assert_int_equal(lost, 7);
	assert_int_equal(rx[0]->len, 1000);
	assert_int_equal(rx[3]->data[5], (uint8_t)(3 * 7 + 5));
	pkt_free(rx, 4);

	/* No spill given: the coalesced message is dropped, all 11 counted. */
	send_run_of_11(pool, &a, b.port);
	assert_int_equal(pkt_pool_get(pool, rx, 1), 1);
	assert_true(fd_wait_readable(b.fd4, 2000));
	assert_int_equal(udp_recv_batch(b.fd4, rx, 1, NULL, &dropped), 0);
	assert_int_equal(dropped, 11);
	pkt_free(rx, 1);

	/* 1,000-byte datagrams into 448-byte buffers: all 11 dropped, counted. */
	send_run_of_11(pool, &a, b.port);
	assert_int_equal(pkt_pool_get(small, rx, 1), 1);
	assert_true(fd_wait_readable(b.fd4, 2000));
	assert_int_equal(udp_recv_batch(b.fd4, rx, 1, &gro, &dropped), 0);
	assert_int_equal(dropped, 11);
	pkt_free(rx, 1);

	udp_socks_close(&a);
	udp_socks_close(&b);
	pkt_pool_free(small);
	pkt_pool_free(pool);
}

static void test_truncated_dropped(void **state)
{
	static uint8_t big[PKT_BUF_SIZE * 2];
	static const char small[] = "fits";
	struct sockaddr_in dst = {
		.sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK),
	};
	struct pkt *rx[4], *orig[4];
	struct pkt_pool *pool;
	struct udp_socks s;
	unsigned dropped = 99, i, j;
	int fd;

	(void)state;
	pool = pkt_pool_new(4);
	assert_non_null(pool);
	assert_int_equal(udp_socks_open(&s, 0, 0), 0);
	dst.sin_port = htons(s.port);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(sendto(fd, big, sizeof(big), 0, (struct sockaddr *)&dst, sizeof(dst)),
			 sizeof(big));
	assert_int_equal(sendto(fd, small, sizeof(small), 0, (struct sockaddr *)&dst, sizeof(dst)),
			 sizeof(small));
	assert_int_equal(sendto(fd, big, sizeof(big), 0, (struct sockaddr *)&dst, sizeof(dst)),
			 sizeof(big));
	close(fd);

	assert_int_equal(pkt_pool_get(pool, rx, 4), 4);
	memcpy(orig, rx, sizeof(rx));
	assert_true(fd_wait_readable(s.fd4, 2000));
	assert_int_equal(udp_recv_batch(s.fd4, rx, 4, NULL, &dropped), 1);
	assert_int_equal(dropped, 2);
	assert_int_equal(rx[0]->len, sizeof(small));
	assert_memory_equal(rx[0]->data, small, sizeof(small));
	/* The array was reordered but still holds every buffer exactly once. */
	for (i = 0; i < 4; i++) {
		unsigned seen = 0;

		for (j = 0; j < 4; j++)
			seen += rx[j] == orig[i];
		assert_int_equal(seen, 1);
	}
	pkt_free(rx, 4);
	udp_socks_close(&s);
	pkt_pool_free(pool);
}

static void test_send_errors(void **state)
{
	struct pkt_pool *pool;
	struct udp_socks s, nov6;
	struct pkt *tx[3];

	(void)state;
	pool = pkt_pool_new(3);
	assert_non_null(pool);
	assert_int_equal(udp_socks_open(&s, 0, 0), 0);
	assert_int_equal(pkt_pool_get(pool, tx, 3), 3);
	set_dst(tx[0], AF_INET, 9);
	tx[0]->len = 1;
	/* No destination: refused alone. */
	tx[1]->len = 1;
	set_dst(tx[2], AF_INET6, 9);
	tx[2]->len = 1;
	assert_int_equal(udp_send_batch(&s, tx, 3, NULL), 2);

	/* A socket set without IPv6 cannot send IPv6. */
	nov6 = s;
	nov6.fd6 = -1;
	assert_int_equal(udp_send_batch(&nov6, tx + 2, 1, NULL), -ENETUNREACH);
	/* Unreachable destination: the kernel's errno comes back when nothing was sent. */
	tx[0]->ep.in4.sin_addr.s_addr = inet_addr("192.0.2.1");
	assert_int_equal(udp_send_batch(&s, tx, 1, NULL), -ENETUNREACH);

	pkt_free(tx, 3);
	udp_socks_close(&s);
	pkt_pool_free(pool);
}

static void test_src_encode_decode(void **state)
{
	union udp_cmsg ctl;
	struct msghdr mh = {.msg_control = &ctl};
	struct endpoint ep, got;

	(void)state;
	/* No source, or one of the other family: nothing to encode, the kernel chooses. */
	assert_int_equal(endpoint_parse(&ep, "192.0.2.1:51820"), 0);
	assert_false(endpoint_src_is_set(&ep));
	assert_int_equal(udp_src_encode(&ep, &ctl), 0);
	ep.src.family = AF_INET6;
	ep.src.in6.s6_addr[15] = 1;
	assert_false(endpoint_src_is_set(&ep));
	assert_int_equal(udp_src_encode(&ep, &ctl), 0);

	endpoint_src_clear(&ep);
	inet_pton(AF_INET, "198.51.100.3", &ep.src.in4);
	ep.src.family = AF_INET;
	assert_true(endpoint_src_is_set(&ep));
	mh.msg_controllen = udp_src_encode(&ep, &ctl);
	assert_int_equal(mh.msg_controllen, CMSG_SPACE(sizeof(struct in_pktinfo)));
	assert_int_equal(ctl.align.cmsg_level, IPPROTO_IP);
	assert_int_equal(ctl.align.cmsg_type, IP_PKTINFO);
	got = ep;
	endpoint_src_clear(&got);
	udp_src_decode(&mh, &got);
	assert_int_equal(got.src.family, AF_INET);
	assert_memory_equal(&got.src.in4, &ep.src.in4, sizeof(ep.src.in4));

	assert_int_equal(endpoint_parse(&ep, "[2001:db8::1]:51820"), 0);
	inet_pton(AF_INET6, "2001:db8:16::3", &ep.src.in6);
	ep.src.family = AF_INET6;
	mh.msg_controllen = udp_src_encode(&ep, &ctl);
	assert_int_equal(mh.msg_controllen, CMSG_SPACE(sizeof(struct in6_pktinfo)));
	assert_int_equal(ctl.align.cmsg_level, IPPROTO_IPV6);
	assert_int_equal(ctl.align.cmsg_type, IPV6_PKTINFO);
	got = ep;
	endpoint_src_clear(&got);
	udp_src_decode(&mh, &got);
	assert_int_equal(got.src.family, AF_INET6);
	assert_memory_equal(&got.src.in6, &ep.src.in6, sizeof(ep.src.in6));

	/* Control data without a source (or none at all) clears it. */
	ctl.align.cmsg_type = IP_TTL;
	udp_src_decode(&mh, &got);
	assert_int_equal(got.src.family, AF_UNSPEC);
	got.src.family = AF_INET6;
	mh.msg_controllen = 0;
	udp_src_decode(&mh, &got);
	assert_false(endpoint_src_is_set(&got));

	/* The source is not part of the endpoint's identity; set_remote keeps it. */
	got = ep;
	endpoint_src_clear(&got);
	assert_true(endpoint_equal(&got, &ep));
	assert_int_equal(endpoint_parse(&got, "[2001:db8::2]:1"), 0);
	endpoint_set_remote(&ep, &got);
	assert_true(endpoint_equal(&got, &ep));
	assert_int_equal(ep.src.family, AF_INET6);
}

/*
 * One datagram from `from` to `to_addr`:b.port; what b received (its ep.src the address it
 * came to) goes back as b's reply. Returns the reply's source as `a` saw it.
 */
static void sticky_roundtrip(struct udp_socks *a, struct udp_socks *b, struct pkt_pool *pool,
			     int family, const char *to_addr, struct endpoint *ret_src_seen_by_a)
{
	struct pkt *p;
	unsigned dropped;
	int fd_a = family == AF_INET ? a->fd4 : a->fd6, fd_b = family == AF_INET ? b->fd4 : b->fd6;
	char dst[80];

	snprintf(dst, sizeof(dst), family == AF_INET ? "%s:%u" : "[%s]:%u", to_addr, b->port);
	assert_int_equal(pkt_pool_get(pool, &p, 1), 1);
	assert_int_equal(endpoint_parse(&p->ep, dst), 0);
	p->len = 4;
	memcpy(p->data, "ping", 4);
	assert_int_equal(udp_send_batch(a, &p, 1, NULL), 1);
	pkt_free(&p, 1);
	assert_int_equal(recv_all(fd_b, pool, &p, 1, &dropped), 1);
	/* b learned where it was reached; its reply to p->ep leaves from there. */
	assert_true(endpoint_src_is_set(&p->ep));
	assert_int_equal(udp_send_batch(b, &p, 1, NULL), 1);
	pkt_free(&p, 1);
	assert_int_equal(recv_all(fd_a, pool, &p, 1, &dropped), 1);
	*ret_src_seen_by_a = p->ep;
	pkt_free(&p, 1);
}

/*
 * A new IPv6 address on lo is not at once an address datagrams reach: the kernel installs its
 * local route from the DAD work item, after bind() already accepts the address (an address
 * added "nodad" is never tentative). A send in between fails with no route (Ip6OutNoRoutes)
 * and the datagram is gone. So wait for the event the test needs: a datagram from the
 * address to itself arrives. Liveness bound: ten seconds.
 */
static bool addr6_wait_usable(const struct in6_addr *addr)
{
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_addr = *addr};
	socklen_t salen = sizeof(sa);
	bool ok = false;
	char byte;
	int fd, i;

	fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	for (i = 0; i < 1000 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0; i++)
		usleep(10000);
	if (getsockname(fd, (struct sockaddr *)&sa, &salen) < 0 || !sa.sin6_port)
		goto out;
	for (i = 0; i < 1000 && !ok; i++) {
		if (sendto(fd, "x", 1, 0, (struct sockaddr *)&sa, sizeof(sa)) == 1 &&
		    fd_wait_readable(fd, 10))
			ok = recv(fd, &byte, 1, 0) == 1;
		else
			usleep(10000);
	}
out:
	close(fd);
	return ok;
}

static void test_sticky_source(void **state)
{
	struct in6_addr second6;
	struct endpoint seen, want;
	struct pkt_pool *pool;
	struct udp_socks a, b;

	(void)state;
	pool = pkt_pool_new(4);
	assert_non_null(pool);
	/* A second IPv6 address on lo (all of 127/8 is there already). */
	inet_pton(AF_INET6, "2001:db8:15::2", &second6);
	assert_int_equal(nl_addr_add("lo", AF_INET6, &second6, 128), 0);
	assert_true(addr6_wait_usable(&second6));
	assert_int_equal(udp_socks_open(&a, 0, 0), 0);
	assert_int_equal(udp_socks_open(&b, 0, 0), 0);

	/* The kernel would answer from 127.0.0.1 and ::1, the addresses it prefers. */
	sticky_roundtrip(&a, &b, pool, AF_INET, "127.0.0.2", &seen);
	assert_int_equal(endpoint_parse(&want, "127.0.0.2:1"), 0);
	assert_int_equal(seen.in4.sin_addr.s_addr, want.in4.sin_addr.s_addr);
	assert_int_equal(ntohs(seen.in4.sin_port), b.port);
	/* a's reply-to-reply learned a's own address too. */
	assert_int_equal(seen.src.in4.s_addr, htonl(INADDR_LOOPBACK));

	sticky_roundtrip(&a, &b, pool, AF_INET6, "2001:db8:15::2", &seen);
	assert_memory_equal(&seen.in6.sin6_addr, &second6, sizeof(second6));
	assert_int_equal(ntohs(seen.in6.sin6_port), b.port);

	udp_socks_close(&a);
	udp_socks_close(&b);
	pkt_pool_free(pool);
}

static void test_stale_source(void **state)
{
	struct pkt *p[3], *rx[3];
	struct pkt_pool *pool;
	struct udp_socks a, b;
	struct udp_stale stale = {.n = 99};
	unsigned dropped, i;

	(void)state;
	pool = pkt_pool_new(6);
	assert_non_null(pool);
	assert_int_equal(udp_socks_open(&a, 0, 0), 0);
	assert_int_equal(udp_socks_open(&b, 0, 0), 0);
	assert_int_equal(pkt_pool_get(pool, p, 3), 3);
	for (i = 0; i < 3; i++) {
		/* Not an address of this host (any more): the kernel refuses it as a source. */
		if (i < 2) {
			set_dst(p[i], AF_INET, b.port);
			inet_pton(AF_INET, "192.0.2.55", &p[i]->ep.src.in4);
			p[i]->ep.src.family = AF_INET;
		} else {
			set_dst(p[i], AF_INET6, b.port);
			inet_pton(AF_INET6, "2001:db8:99::55", &p[i]->ep.src.in6);
			p[i]->ep.src.family = AF_INET6;
		}
		p[i]->len = 1;
	}
	/* All three go, from the kernel's choice, after one refusal per family. */
	assert_int_equal(udp_send_batch(&a, p, 3, &stale), 3);
	assert_int_equal(stale.n, 3);
	/* The first refused source is named, for the caller to forget. */
	assert_true(endpoint_src_equal(&stale.src, &p[0]->ep.src));
	pkt_free(p, 3);
	assert_int_equal(recv_all(b.fd4, pool, rx, 2, &dropped), 2);
	assert_int_equal(recv_all(b.fd6, pool, rx + 2, 1, &dropped), 1);
	for (i = 0; i < 2; i++)
		assert_int_equal(rx[i]->ep.in4.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
	assert_memory_equal(&rx[2]->ep.in6.sin6_addr, &in6addr_loopback, 16);
	/* A working source is no stale one. */
	assert_int_equal(udp_send_batch(&b, rx, 1, &stale), 1);
	assert_int_equal(stale.n, 0);
	assert_int_equal(stale.src.family, AF_UNSPEC);
	pkt_free(rx, 3);
	udp_socks_close(&a);
	udp_socks_close(&b);
	pkt_pool_free(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_open_port0, netns_enter),
	    cmocka_unit_test_setup(test_open_fixed_port, netns_enter),
	    cmocka_unit_test_setup(test_fwmark, netns_enter),
	    cmocka_unit_test_setup(test_batch_loopback, netns_enter),
	    cmocka_unit_test_setup(test_gso, netns_enter),
	    cmocka_unit_test_setup(test_gro_recv, netns_enter),
	    cmocka_unit_test_setup(test_truncated_dropped, netns_enter),
	    cmocka_unit_test_setup(test_send_errors, netns_enter),
	    cmocka_unit_test(test_src_encode_decode),
	    cmocka_unit_test_setup(test_sticky_source, netns_enter),
	    cmocka_unit_test_setup(test_stale_source, netns_enter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
