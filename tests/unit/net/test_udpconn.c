/* SPDX-License-Identifier: MIT */
/*
 * The magicsock on real sockets (udpconn), in a network namespace of its own: the
 * reader thread demultiplexes what a plain socket sends to it, the magicsock's sends
 * leave from the bound port, and a port change swaps the sockets under the reader.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cmocka.h>

#include "../os/netns.h"
#include "net/magicsock.h"
#include "net/udpconn.h"
#include "proto/stun.h"

#define WAIT_MS 5000

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct endpoint wg_src[16];
static uint8_t wg_first[16];
static unsigned n_wg;
static int ev_wg, ev_stun; /* eventfds the reader thread signals */

static void signal_fd(int fd)
{
	uint64_t one = 1;

	assert_int_equal(write(fd, &one, sizeof(one)), sizeof(one));
}

static void wait_fd(int fd)
{
	uint64_t v;

	assert_true(fd_wait_readable(fd, WAIT_MS));
	assert_int_equal(read(fd, &v, sizeof(v)), sizeof(v));
}

static void on_wg_rx(void *ctx, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	unsigned i;

	(void)ctx;
	(void)now_ns;
	pthread_mutex_lock(&lock);
	for (i = 0; i < n && n_wg < 16; i++, n_wg++) {
		wg_src[n_wg] = pkts[i]->ep;
		wg_first[n_wg] = pkts[i]->data[4];
	}
	pthread_mutex_unlock(&lock);
	pkt_free(pkts, n);
	signal_fd(ev_wg);
}

static void on_box(void *ctx, enum magicsock_box box)
{
	(void)ctx;
	if (box == MAGICSOCK_BOX_STUN)
		signal_fd(ev_stun);
}

static struct udpconn *uc;

static void on_wire(void *ctx, struct pkt **pkts, unsigned n)
{
	(void)ctx;
	udpconn_send(uc, pkts, n);
}

/* A datagram from `from` (a plain socket) to 127.0.0.1 or ::1 at port. */
static void send_plain(const struct udp_socks *from, int family, uint16_t port, const void *data,
		       size_t len)
{
	struct endpoint dst = {0};
	int fd = family == AF_INET ? from->fd4 : from->fd6;

	if (family == AF_INET) {
		dst.in4.sin_family = AF_INET;
		dst.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		dst.in4.sin_port = htons(port);
	} else {
		dst.in6.sin6_family = AF_INET6;
		dst.in6.sin6_addr = in6addr_loopback;
		dst.in6.sin6_port = htons(port);
	}
	assert_int_equal(sendto(fd, data, len, 0, &dst.sa, endpoint_len(&dst)), (ssize_t)len);
}

/* Receives one datagram on fd; returns its length and where it came from. */
static size_t recv_plain(int fd, uint8_t *buf, size_t cap, struct endpoint *ret_src)
{
	socklen_t len = sizeof(*ret_src);
	ssize_t r;

	assert_true(fd_wait_readable(fd, WAIT_MS));
	r = recvfrom(fd, buf, cap, 0, &ret_src->sa, &len);
	assert_true(r >= 0);
	return (size_t)r;
}

static uint16_t ep_port(const struct endpoint *ep)
{
	return ntohs(ep->sa.sa_family == AF_INET ? ep->in4.sin_port : ep->in6.sin6_port);
}

static void test_udpconn(void **state)
{
	const struct magicsock_ops ops = {
	    .wg_rx = on_wg_rx,
	    .wire_send = on_wire,
	    .box_notify = on_box,
	    .box_cap = {8, 8},
	};
	static const uint8_t stun[STUN_HDR_LEN] = {0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42};
	uint8_t wg[32] = {4, 0, 0, 0, 0x77}, buf[64];
	struct pkt_pool *pool = pkt_pool_new(256);
	struct magicsock *ms = magicsock_new(&ops);
	struct udp_socks peer, ns, old;
	struct endpoint src, h, dst;
	struct udpconn_stats us;
	struct pkt *p;
	uint16_t port;

	(void)state;
	ev_wg = eventfd(0, EFD_CLOEXEC);
	ev_stun = eventfd(0, EFD_CLOEXEC);
	assert_non_null(ms);
	assert_int_equal(udp_socks_open(&peer, 0, 0), 0);
	assert_int_equal(udpconn_new(ms, pool, 0, 0, &uc), 0);
	port = udpconn_port(uc);
	assert_true(port != 0);

	/* WireGuard over IPv4 reaches wg_rx with its source; STUN over IPv6 its mailbox. */
	send_plain(&peer, AF_INET, port, wg, sizeof(wg));
	wait_fd(ev_wg);
	send_plain(&peer, AF_INET6, port, stun, sizeof(stun));
	wait_fd(ev_stun);
	pthread_mutex_lock(&lock);
	assert_int_equal(n_wg, 1);
	assert_int_equal(wg_first[0], 0x77);
	assert_int_equal(wg_src[0].sa.sa_family, AF_INET);
	assert_int_equal(ep_port(&wg_src[0]), peer.port);
	pthread_mutex_unlock(&lock);
	assert_int_equal(magicsock_box_take(ms, MAGICSOCK_BOX_STUN, &p, 1), 1);
	assert_int_equal(p->len, sizeof(stun));
	assert_int_equal(p->ep.sa.sa_family, AF_INET6);
	assert_int_equal(ep_port(&p->ep), peer.port);

	/* A raw reply to that source leaves from our port. */
	magicsock_send_raw(ms, &p, 1);
	assert_int_equal(recv_plain(peer.fd6, buf, sizeof(buf), &src), sizeof(stun));
	assert_int_equal(ep_port(&src), port);

	/* The peer's IPv4 address as a handle's path: the source is reported as the handle,
	 * and a send to the handle reaches the peer. */
	assert_int_equal(magicsock_handle_new(ms, &h), 0);
	assert_int_equal(endpoint_parse(&dst, "127.0.0.1:1"), 0);
	dst.in4.sin_port = htons(peer.port);
	assert_int_equal(magicsock_handle_set_path(ms, &h, &dst), 0);
	send_plain(&peer, AF_INET, port, wg, sizeof(wg));
	wait_fd(ev_wg);
	pthread_mutex_lock(&lock);
	assert_int_equal(n_wg, 2);
	assert_true(endpoint_equal(&wg_src[1], &h));
	pthread_mutex_unlock(&lock);
	assert_int_equal(pkt_pool_get(pool, &p, 1), 1);
	memcpy(p->data, wg, sizeof(wg));
	p->len = sizeof(wg);
	p->ep = h;
	magicsock_send(ms, &p, 1);
	assert_int_equal(recv_plain(peer.fd4, buf, sizeof(buf), &src), sizeof(wg));
	assert_int_equal(buf[4], 0x77);
	assert_int_equal(ep_port(&src), port);

	/* A new port: the reader moves with the sockets, the old port is free again. */
	assert_int_equal(udp_socks_open(&ns, 0, 0), 0);
	udpconn_swap(uc, &ns);
	assert_true(udpconn_port(uc) != port);
	assert_int_equal(udp_socks_open(&old, port, 0), 0);
	udp_socks_close(&old);
	port = udpconn_port(uc);
	wg[4] = 0x78;
	send_plain(&peer, AF_INET6, port, wg, sizeof(wg));
	wait_fd(ev_wg);
	pthread_mutex_lock(&lock);
	assert_int_equal(n_wg, 3);
	assert_int_equal(wg_first[2], 0x78);
	pthread_mutex_unlock(&lock);

	udpconn_stats_get(uc, &us);
	assert_int_equal(us.send_errors, 0);
	assert_int_equal(us.rx_too_big, 0);

	/* No route (a LAN candidate of another network): counted apart, the reader goes on. */
	assert_int_equal(pkt_pool_get(pool, &p, 1), 1);
	memcpy(p->data, wg, sizeof(wg));
	p->len = sizeof(wg);
	assert_int_equal(endpoint_parse(&p->ep, "198.18.0.1:9"), 0);
	magicsock_send_raw(ms, &p, 1);
	udpconn_stats_get(uc, &us);
	assert_int_equal(us.send_errors, 1);
	assert_int_equal(us.send_unreach, 1);
	wg[4] = 0x79;
	send_plain(&peer, AF_INET, port, wg, sizeof(wg));
	wait_fd(ev_wg);
	pthread_mutex_lock(&lock);
	assert_int_equal(n_wg, 4);
	pthread_mutex_unlock(&lock);
	udpconn_free(uc);
	magicsock_free(ms);
	udp_socks_close(&peer);
	close(ev_wg);
	close(ev_stun);
	pkt_pool_free(pool);
}

/* --- UDP GRO: a coalesced datagram is cut whole, or waits for buffers --- */

#define PAIRS 40

static struct pkt *held[2 * PAIRS];
static uint8_t got_id[2 * PAIRS][2]; /* pair and part of each datagram, in arrival order */
static unsigned n_held, n_got;

static void on_hold_rx(void *ctx, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	unsigned i;

	(void)ctx;
	(void)now_ns;
	pthread_mutex_lock(&lock);
	for (i = 0; i < n; i++) {
		if (n_got < 2 * PAIRS) {
			got_id[n_got][0] = pkts[i]->data[4];
			got_id[n_got][1] = pkts[i]->data[5];
			n_got++;
		}
		/* Held as the crypto queue would hold them: the reader's pool runs dry. */
		if (n_held < 2 * PAIRS)
			held[n_held++] = pkts[i];
		else
			pkt_free(&pkts[i], 1);
	}
	pthread_mutex_unlock(&lock);
	signal_fd(ev_wg);
}

/*
 * Overload with UDP GRO: a peer's GSO messages of two datagrams each, a large one and a
 * short one (the two fragments of an inner packet larger than the tunnel MTU), reach a
 * reader whose pool runs dry because what it handed on is still held. A message is cut
 * whole once buffers come back, never its first datagram alone (the orphaned fragments
 * would fill the kernel's reassembly memory): all of them arrive, in order.
 */
static void test_gro_whole(void **state)
{
	const struct magicsock_ops ops = {.wg_rx = on_hold_rx};
	struct pkt_pool *pool = pkt_pool_new(MAGICSOCK_BATCH + 8);
	struct pkt_pool *spool = pkt_pool_new(2 * PAIRS);
	struct magicsock *ms = magicsock_new(&ops);
	struct pkt *out[2 * PAIRS];
	struct udpconn_stats us;
	struct udp_socks peer;
	uint64_t waits = 0, dry = 0;
	unsigned i, t;
	bool all = false;

	(void)state;
	ev_wg = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	assert_non_null(ms);
	assert_int_equal(udp_socks_open(&peer, 0, 0), 0);
	assert_true(peer.gso4);
	assert_int_equal(udpconn_new(ms, pool, 0, 0, &uc), 0);
	assert_int_equal(pkt_pool_get(spool, out, 2 * PAIRS), 2 * PAIRS);
	for (i = 0; i < 2 * PAIRS; i++) {
		struct pkt *p = out[i];

		p->len = i % 2 ? 100 : 1000;
		memset(p->data, 0, p->len);
		p->data[0] = 4;
		p->data[4] = (uint8_t)(i / 2);
		p->data[5] = (uint8_t)(i % 2);
		assert_int_equal(endpoint_parse(&p->ep, "127.0.0.1:1"), 0);
		p->ep.in4.sin_port = htons(udpconn_port(uc));
	}
	assert_int_equal(udp_send_batch(&peer, out, 2 * PAIRS, NULL), 2 * PAIRS);
	pkt_free(out, 2 * PAIRS);

	/* Each time the reader is stuck for want of buffers, the held packets go back. */
	for (t = 0; t < WAIT_MS && !all; t++) {
		uint64_t v;

		udpconn_stats_get(uc, &us);
		pthread_mutex_lock(&lock);
		all = n_got + us.gro_lost >= 2 * PAIRS;
		if (us.gro_wait != waits || us.pool_dry != dry) {
			pkt_free(held, n_held);
			n_held = 0;
			waits = us.gro_wait;
			dry = us.pool_dry;
		}
		pthread_mutex_unlock(&lock);
		if (!all && fd_wait_readable(ev_wg, 1))
			(void)!read(ev_wg, &v, sizeof(v));
	}
	udpconn_stats_get(uc, &us);
	assert_int_equal(us.gro_lost, 0);
	pthread_mutex_lock(&lock);
	assert_int_equal(n_got, 2 * PAIRS);
	for (i = 0; i < 2 * PAIRS; i++) {
		assert_int_equal(got_id[i][0], i / 2);
		assert_int_equal(got_id[i][1], i % 2);
	}
	/* Coalesced, and the reader did run out of buffers. */
	assert_true(us.rx_gro > 0);
	assert_true(us.gro_wait + us.pool_dry > 0);
	pkt_free(held, n_held);
	n_held = 0;
	pthread_mutex_unlock(&lock);
	udpconn_free(uc);
	magicsock_free(ms);
	udp_socks_close(&peer);
	close(ev_wg);
	pkt_pool_free(spool);
	pkt_pool_free(pool);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(test_udpconn, netns_enter),
	    cmocka_unit_test_setup(test_gro_whole, netns_enter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
