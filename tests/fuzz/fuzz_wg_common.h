/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_FUZZ_WG_COMMON_H
#define TRELLIS_FUZZ_WG_COMMON_H

/*
 * Shared setup of the WireGuard fuzzers: "us" (the device under test) and
 * "them" (its one peer) with fixed static keys, so real messages written as
 * seeds stay valid across runs, and an established session both ways.
 * With TRELLIS_FUZZ_SEEDS=DIR in the environment, the target writes its seed
 * corpus into DIR and exits.
 */

#include <stdio.h>
#include <stdlib.h>

#include "../unit/wg/wg_harness.h"
#include "wg/internal.h"

static struct h_node us, them;
static struct wg_peer *us_them, *them_us;

static void fixed_keys(struct h_node *n, uint8_t seed)
{
	memset(n->priv, seed, 32);
	n->priv[0] &= 248;
	n->priv[31] = (n->priv[31] & 127) | 64;
	x25519_public_from_private(n->pub, n->priv);
}

static void fuzz_wg_setup(void)
{
	h_node_init(&us, 0, false);
	h_node_init(&them, 1, false);
	fixed_keys(&us, 0x11);
	fixed_keys(&them, 0x22);
	if (h_add_peer(&us, &them, true, NULL, 0) < 0 || h_add_peer(&them, &us, true, NULL, 0) < 0)
		abort();
	us_them = wg_peer_lookup(us.dev, them.pub);
	them_us = wg_peer_lookup(them.dev, us.pub);
	/* them initiates, so us ends up with a confirmed responder session. */
	h_send(&them, &us, 20, 0);
	h_pump(&us, &them);
	h_qfree(&us.tun);
	h_qfree(&them.tun);
	if (!us_them->keypairs.current || !them_us->keypairs.current)
		abort();
}

/* Sets mac1 (and mac2 from the peer's cookie, if any) as `them` would for `us`. */
static void fuzz_wg_mac(uint8_t *msg, size_t len)
{
	wg_cookie_add_mac_to_packet(&them_us->cookie, msg, len, them.dev->now_ns);
}

static void fuzz_wg_rx(const uint8_t *msg, size_t len)
{
	struct pkt *p;

	if (len > PKT_BUF_MTU || pkt_pool_get(us.pool, &p, 1) != 1)
		return;
	memcpy(p->data, msg, len);
	p->len = (uint32_t)len;
	p->ep = them.ep;
	wg_device_rx(us.dev, &p, 1, h_now);
	h_qfree(&us.udp);
	h_qfree(&us.tun);
}

static void fuzz_wg_write_seed(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return;
	fwrite(buf, 1, len, f);
	fclose(f);
}

/* A fresh initiation from them to us, as bytes. */
static size_t fuzz_wg_initiation(uint8_t *out)
{
	struct message_handshake_initiation *m = (void *)out;

	them.dev->now_ns = h_now;
	if (wg_noise_handshake_create_initiation(them.dev, &them_us->handshake, m,
						 H_WALL_BASE + h_now) < 0)
		abort();
	fuzz_wg_mac(out, sizeof(*m));
	return sizeof(*m);
}

#endif
