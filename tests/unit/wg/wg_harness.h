/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_TESTS_WG_HARNESS_H
#define TRELLIS_TESTS_WG_HARNESS_H

/*
 * Two (or more) in-memory WireGuard devices wired back to back through their
 * ops callbacks, with a fake clock. The "network" is a queue per node that the
 * test pumps, optionally dropping datagrams through a filter.
 */

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/pkt.h"
#include "base/time.h"
#include "crypto/crypto.h"
#include "wg/device.h"
#include "wg/messages.h"

#pragma GCC diagnostic ignored "-Wunused-function"

#define H_QMAX 4096
#define H_WALL_BASE (1700000000ULL * NSEC_PER_SEC)

struct h_queue {
	struct pkt *p[H_QMAX];
	unsigned n;
};

struct h_node {
	struct wg_device *dev;
	struct pkt_pool *pool;
	struct endpoint ep;
	uint8_t priv[32], pub[32];
	uint8_t addr[4]; /* tunnel address */
	struct h_queue udp; /* datagrams sent, waiting in the network */
	struct h_queue tun; /* plaintext delivered */
	struct h_queue enc, dec; /* worker mode */
	unsigned wakes;
};

static uint64_t h_now = NSEC_PER_SEC;

static uint64_t h_wall(void *ctx)
{
	(void)ctx;
	return H_WALL_BASE + h_now;
}

static void h_push(struct h_queue *q, struct pkt **pkts, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++) {
		if (q->n < H_QMAX)
			q->p[q->n++] = pkts[i];
		else
			pkt_free(&pkts[i], 1);
	}
}

static void h_udp_send(void *ctx, struct pkt **pkts, unsigned n)
{
	h_push(&((struct h_node *)ctx)->udp, pkts, n);
}

static void h_tun_write(void *ctx, struct pkt **pkts, unsigned n)
{
	h_push(&((struct h_node *)ctx)->tun, pkts, n);
}

static void h_enc_submit(void *ctx, struct pkt **pkts, unsigned n)
{
	h_push(&((struct h_node *)ctx)->enc, pkts, n);
}

static void h_dec_submit(void *ctx, struct pkt **pkts, unsigned n)
{
	h_push(&((struct h_node *)ctx)->dec, pkts, n);
}

static void h_wake(void *ctx)
{
	((struct h_node *)ctx)->wakes++;
}

static void h_qfree(struct h_queue *q)
{
	pkt_free(q->p, q->n);
	q->n = 0;
}

static void h_node_init(struct h_node *n, int id, bool worker)
{
	struct wg_device_ops ops = {
		.ctx = n,
		.udp_send = h_udp_send,
		.tun_write = h_tun_write,
		.timers_wake = h_wake,
		.wall_ns = h_wall,
	};

	memset(n, 0, sizeof(*n));
	if (worker) {
		ops.encrypt_submit = h_enc_submit;
		ops.decrypt_submit = h_dec_submit;
	}
	n->pool = pkt_pool_new(2048);
	n->dev = wg_device_new(&ops, n->pool);
	x25519_private_generate(n->priv);
	x25519_public_from_private(n->pub, n->priv);
	n->ep.in4.sin_family = AF_INET;
	n->ep.in4.sin_port = htons((uint16_t)(51820 + id));
	n->ep.in4.sin_addr.s_addr = htonl(0xc0000201 + (uint32_t)id); /* 192.0.2.1+id */
	n->addr[0] = 100;
	n->addr[1] = 64;
	n->addr[2] = 0;
	n->addr[3] = (uint8_t)(1 + id);
}

/* Packets cross nodes (a datagram from a's pool waits in b's queues): drain every node first. */
static void h_node_drain(struct h_node *n)
{
	unsigned i;

	h_qfree(&n->udp);
	h_qfree(&n->tun);
	/* Worker queues hold engine references; drop them as a caller discarding work would. */
	for (i = 0; i < n->enc.n; i++)
		wg_pkt_release(n->enc.p[i]);
	for (i = 0; i < n->dec.n; i++)
		wg_pkt_release(n->dec.p[i]);
	h_qfree(&n->enc);
	h_qfree(&n->dec);
	wg_device_free(n->dev);
	n->dev = NULL;
}

static void h_node_free(struct h_node *n)
{
	if (n->dev)
		h_node_drain(n);
	pkt_pool_free(n->pool);
}

static void h_nodes_free(struct h_node *a, struct h_node *b)
{
	h_node_drain(a);
	h_node_drain(b);
	h_node_free(a);
	h_node_free(b);
}

/* a gets b as a peer: b's tunnel address /32, b's endpoint if with_endpoint. */
static int h_add_peer(struct h_node *a, const struct h_node *b, bool with_endpoint,
		      const uint8_t *psk, uint16_t keepalive)
{
	struct wg_allowedip ip = { .family = AF_INET, .cidr = 32 };
	struct wg_peer_cfg pc = { 0 };
	struct wg_device_cfg cfg = { 0 };

	memcpy(ip.addr, b->addr, 4);
	cfg.has_private_key = true;
	memcpy(cfg.private_key, a->priv, 32);
	cfg.has_listen_port = true;
	cfg.listen_port = ntohs(a->ep.in4.sin_port);
	memcpy(pc.public_key, b->pub, 32);
	pc.has_endpoint = with_endpoint;
	pc.endpoint = b->ep;
	pc.n_allowedips = 1;
	pc.allowedips = &ip;
	if (psk) {
		pc.has_preshared_key = true;
		memcpy(pc.preshared_key, psk, 32);
	}
	if (keepalive) {
		pc.has_persistent_keepalive = true;
		pc.persistent_keepalive = keepalive;
	}
	cfg.n_peers = 1;
	cfg.peers = &pc;
	return wg_device_apply(a->dev, &cfg, h_now);
}

/* An IPv4/UDP-ish packet from src to dst addresses with `len` payload bytes of `fill`. */
static struct pkt *h_ip4(struct h_node *from, const uint8_t src[4], const uint8_t dst[4],
			 unsigned len, uint8_t fill)
{
	struct pkt *p;
	uint8_t *d;
	unsigned total = 20 + len;

	if (pkt_pool_get(from->pool, &p, 1) != 1)
		return NULL;
	d = p->data;
	memset(d, 0, 20);
	d[0] = 0x45;
	d[2] = (uint8_t)(total >> 8);
	d[3] = (uint8_t)total;
	d[8] = 64;
	d[9] = 17;
	memcpy(d + 12, src, 4);
	memcpy(d + 16, dst, 4);
	memset(d + 20, fill, len);
	p->len = total;
	return p;
}

static void h_send(struct h_node *from, const struct h_node *to, unsigned len, uint8_t fill)
{
	struct pkt *p = h_ip4(from, from->addr, to->addr, len, fill);

	wg_device_tx(from->dev, &p, 1, h_now);
}

/* Worker mode: run the crypto step and finish, in order. */
static bool h_work(struct h_node *n)
{
	struct pkt *batch[H_QMAX];
	unsigned i, k;
	bool did = false;

	while (n->enc.n || n->dec.n) {
		did = true;
		k = n->enc.n;
		memcpy(batch, n->enc.p, k * sizeof(batch[0]));
		n->enc.n = 0;
		for (i = 0; i < k; i++)
			wg_send_encrypt(batch[i]);
		if (k)
			wg_send_finish(n->dev, batch, k, h_now);
		k = n->dec.n;
		memcpy(batch, n->dec.p, k * sizeof(batch[0]));
		n->dec.n = 0;
		for (i = 0; i < k; i++)
			wg_receive_decrypt(batch[i]);
		if (k)
			wg_receive_finish(n->dev, batch, k, h_now);
	}
	return did;
}

/* Return true to drop the datagram in the network. */
typedef bool (*h_filter)(const struct h_node *from, const struct pkt *p, void *ctx);

/* Moves datagrams until the network is quiet. Returns how many were delivered. */
static unsigned h_pump_filtered(struct h_node **nodes, unsigned count, h_filter filter, void *fctx)
{
	unsigned delivered = 0, i, j, k;
	bool busy = true;

	while (busy) {
		busy = false;
		for (i = 0; i < count; i++) {
			struct pkt *batch[H_QMAX];

			busy |= h_work(nodes[i]);
			k = nodes[i]->udp.n;
			if (!k)
				continue;
			busy = true;
			memcpy(batch, nodes[i]->udp.p, k * sizeof(batch[0]));
			nodes[i]->udp.n = 0;
			for (j = 0; j < k; j++) {
				struct pkt *p = batch[j];
				struct h_node *to = NULL;
				unsigned m;

				for (m = 0; m < count; m++)
					if (endpoint_equal(&p->ep, &nodes[m]->ep))
						to = nodes[m];
				if (!to || (filter && filter(nodes[i], p, fctx))) {
					pkt_free(&p, 1);
					continue;
				}
				p->ep = nodes[i]->ep;
				delivered++;
				wg_device_rx(to->dev, &p, 1, h_now);
			}
		}
	}
	return delivered;
}

static unsigned h_pump(struct h_node *a, struct h_node *b)
{
	struct h_node *nodes[2] = { a, b };

	return h_pump_filtered(nodes, 2, NULL, NULL);
}

static uint8_t h_type(const struct pkt *p)
{
	return p->len ? p->data[0] : 0;
}

/* Advances the fake clock in steps, running timers and the network at each. */
static void h_advance(struct h_node *a, struct h_node *b, uint64_t ns, uint64_t step_ns,
		      h_filter filter, void *fctx)
{
	struct h_node *nodes[2] = { a, b };
	uint64_t end = h_now + ns;

	while (h_now < end) {
		h_now = (h_now + step_ns < end ? h_now + step_ns : end);
		wg_device_timers_run(a->dev, h_now);
		wg_device_timers_run(b->dev, h_now);
		h_pump_filtered(nodes, 2, filter, fctx);
	}
}

#endif
