// SPDX-License-Identifier: MIT
/*
 * The relay server engine (src/relay/server.c) on the stream a client sends:
 * the server's side of framing, handshake and every frame after it, with the
 * forwarding, presence and queues behind them. Each input is one connection
 * (a socketpair handed over as if httpd had upgraded it):
 *
 *   byte 0 = 0   the rest is sent right after the upgrade (before any handshake)
 *   byte 0 = 1   a plain client completes the handshake, then sends the rest
 *   byte 0 = 2   a mesh client (it holds the mesh key) does, then sends the rest
 *
 * Another established client, P, is there to receive what is forwarded.
 * Its key is 32 bytes of 0x11 as a private key (seeds address it); the fuzzed
 * client's is 0x22..., the mesh key 0x33....
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/loop.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "proto/relay.h"
#include "relay/server.h"

static struct loop *loop;
static struct relay_server *srv;
static uint8_t mesh_key[RELAY_KEY_LEN];

static void stop_cb(struct loop_timer *t)
{
	(void)t;
	loop_stop(loop);
}

/* One loop iteration: what is readable now is handled, then the timers. */
static void run_once(void)
{
	struct loop_timer t = {.cb = stop_cb};

	loop_timer_arm(loop, &t, 0);
	loop_run(loop);
	loop_timer_disarm(loop, &t);
}

static void drain(int fd)
{
	uint8_t buf[65536];

	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

/* A connection taken over by the server; returns our end, or -1. */
static int conn_new(void)
{
	struct httpd_upgrade up;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -1;
	memset(&up, 0, sizeof(up));
	up.io.fd = sv[0];
	strcpy(up.peer, "192.0.2.1:1");
	up.born_ns = loop_now_ns(loop); /* the handshake deadline counts from here */
	if (relay_server_take(srv, &up) < 0) {
		close(sv[1]);
		return -1;
	}
	return sv[1];
}

/* Runs the client side of the handshake on fd. 0 when established. */
static int handshake(int fd, uint8_t seed, bool mesh)
{
	struct relay_conn c;
	uint8_t priv[RELAY_KEY_LEN], buf[4096];
	struct relay_msg m;
	int r = -EPROTO;

	memset(priv, seed, sizeof(priv));
	if (relay_conn_client_init(&c, priv, NULL, mesh ? mesh_key : NULL) < 0)
		return -1;
	for (int round = 0; round < 8 && !relay_conn_established(&c); round++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		const uint8_t *p = buf, *d;
		size_t left = n > 0 ? (size_t)n : 0, dl;

		while (left && (r = relay_conn_feed(&c, &p, &left, &m)) == 1)
			;
		if (r < 0)
			break;
		relay_conn_output(&c, &d, &dl);
		if (dl && send(fd, d, dl, MSG_NOSIGNAL) != (ssize_t)dl)
			break;
		relay_conn_output_consume(&c, dl);
		run_once();
	}
	r = relay_conn_established(&c) ? 0 : -1;
	relay_conn_clear(&c);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int p, x;

	if (!loop) {
		uint8_t priv[RELAY_KEY_LEN];
		struct relay_server_opts o = {.name = "fuzz", .priv = priv, .mesh_key = mesh_key};

		memset(priv, 0x44, sizeof(priv));
		memset(mesh_key, 0x33, sizeof(mesh_key));
		loop = loop_new();
		if (!loop || relay_server_new(loop, &o, &srv) < 0)
			abort();
	}
	if (size < 1 || data[0] > 2)
		return 0;
	p = conn_new();
	if (p < 0)
		return 0;
	run_once();
	if (handshake(p, 0x11, false) < 0)
		abort(); /* a well-behaved client must always get in */
	x = conn_new();
	if (x >= 0) {
		run_once();
		if (data[0] == 0 || handshake(x, 0x22, data[0] == 2) == 0) {
			size_t off = 1;

			while (off < size) {
				ssize_t w = send(x, data + off, size - off, MSG_NOSIGNAL);

				if (w <= 0)
					break;
				off += (size_t)w;
				run_once();
				drain(x);
				drain(p);
			}
			run_once();
		}
		drain(p);
		drain(x);
		close(x);
	}
	close(p);
	run_once(); /* the server sees both ends close */
	run_once(); /* and frees them */
	return 0;
}
