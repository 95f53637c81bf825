/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>

#include "wg/internal.h"
#include "wg_harness.h"

static struct h_node A, B;

static int setup_pair(bool worker, const uint8_t *psk_a, const uint8_t *psk_b)
{
	h_now = NSEC_PER_SEC;
	h_node_init(&A, 0, worker);
	h_node_init(&B, 1, worker);
	if (h_add_peer(&A, &B, true, psk_a, 0) < 0 || h_add_peer(&B, &A, true, psk_b, 0) < 0)
		return -1;
	return 0;
}

static int setup(void **state)
{
	(void)state;
	return setup_pair(false, NULL, NULL);
}

static int setup_worker(void **state)
{
	(void)state;
	return setup_pair(true, NULL, NULL);
}

static int teardown(void **state)
{
	(void)state;
	h_nodes_free(&A, &B);
	return 0;
}

static struct wg_device_stats stats(struct h_node *n)
{
	struct wg_device_stats s;

	wg_device_stats_get(n->dev, &s);
	return s;
}

/* Checks that n's TUN got exactly one packet of len payload bytes of `fill`; frees it. */
static void expect_tun(struct h_node *n, unsigned len, uint8_t fill)
{
	struct pkt *p;
	unsigned i;

	assert_int_equal(n->tun.n, 1);
	p = n->tun.p[0];
	assert_int_equal(p->len, 20 + len);
	assert_int_equal(p->data[0], 0x45);
	for (i = 0; i < len; i++)
		assert_int_equal(p->data[20 + i], fill);
	h_qfree(&n->tun);
}

static void handshake(void)
{
	h_send(&A, &B, 100, 0xaa);
	h_pump(&A, &B);
	expect_tun(&B, 100, 0xaa);
}

static void test_handshake_and_data(void **state)
{
	(void)state;
	handshake();
	assert_int_equal(stats(&A).handshakes_completed, 1);
	assert_int_equal(stats(&B).handshakes_completed, 1);
	h_send(&B, &A, 1300, 0x55);
	h_pump(&A, &B);
	expect_tun(&A, 1300, 0x55);
	h_send(&A, &B, 1, 0x01);
	h_pump(&A, &B);
	expect_tun(&B, 1, 0x01);
	assert_int_equal(stats(&A).handshakes_completed, 1);
	assert_int_equal(stats(&B).rx_packets, 2);
}

static void test_info(void **state)
{
	struct wg_device_info *info = NULL;

	(void)state;
	handshake();
	assert_int_equal(wg_device_info_get(A.dev, &info), 0);
	assert_true(info->has_private_key);
	assert_memory_equal(info->private_key, A.priv, 32);
	assert_int_equal(info->listen_port, 51820);
	assert_int_equal(info->n_peers, 1);
	assert_memory_equal(info->peers[0].public_key, B.pub, 32);
	assert_int_equal(info->peers[0].n_allowedips, 1);
	assert_int_equal(info->peers[0].allowedips[0].cidr, 32);
	assert_memory_equal(info->peers[0].allowedips[0].addr, B.addr, 4);
	assert_true(info->peers[0].last_handshake_wall_ns >= H_WALL_BASE);
	assert_true(info->peers[0].tx_bytes >= 148 + 32 + 128);
	assert_true(info->peers[0].rx_bytes >= 92);
	assert_true(endpoint_equal(&info->peers[0].endpoint, &B.ep));
	wg_device_info_free(info);
}

static void test_psk_mismatch(void **state)
{
	uint8_t psk1[32], psk2[32];

	(void)state;
	teardown(NULL);
	memset(psk1, 1, 32);
	memset(psk2, 2, 32);
	assert_int_equal(setup_pair(false, psk1, psk2), 0);
	h_send(&A, &B, 100, 0xaa);
	h_pump(&A, &B);
	assert_int_equal(B.tun.n, 0);
	assert_int_equal(stats(&A).handshakes_completed, 0);
	assert_int_equal(stats(&A).drops[WG_DROP_RX_HANDSHAKE], 1);
}

static void test_psk_match(void **state)
{
	uint8_t psk[32];

	(void)state;
	teardown(NULL);
	memset(psk, 7, 32);
	assert_int_equal(setup_pair(false, psk, psk), 0);
	handshake();
}

static void test_staged_packets(void **state)
{
	unsigned i;

	(void)state;
	for (i = 0; i < 10; i++)
		h_send(&A, &B, 50 + i, (uint8_t)i);
	/* One initiation only, however many packets wait. */
	assert_int_equal(A.udp.n, 1);
	h_pump(&A, &B);
	assert_int_equal(B.tun.n, 10);
	for (i = 0; i < 10; i++) {
		assert_int_equal(B.tun.p[i]->len, 20 + 50 + i);
		assert_int_equal(B.tun.p[i]->data[20], i);
	}
	h_qfree(&B.tun);
}

static void test_staged_full(void **state)
{
	unsigned i;

	(void)state;
	for (i = 0; i < MAX_STAGED_PACKETS + 5; i++)
		h_send(&A, &B, 10, (uint8_t)i);
	assert_int_equal(stats(&A).drops[WG_DROP_TX_STAGED_FULL], 5);
	h_pump(&A, &B);
	assert_int_equal(B.tun.n, MAX_STAGED_PACKETS);
	/* The oldest were dropped. */
	assert_int_equal(B.tun.p[0]->data[20], 5);
	h_qfree(&B.tun);
}

static void test_no_route(void **state)
{
	uint8_t other[4] = { 100, 64, 9, 9 };
	struct pkt *p;

	(void)state;
	p = h_ip4(&A, A.addr, other, 10, 0);
	wg_device_tx(A.dev, &p, 1, h_now);
	assert_int_equal(stats(&A).drops[WG_DROP_TX_NO_PEER], 1);
	p = h_ip4(&A, A.addr, other, 10, 0);
	p->data[0] = 0x20;
	wg_device_tx(A.dev, &p, 1, h_now);
	assert_int_equal(stats(&A).drops[WG_DROP_TX_BAD_IP], 1);
	assert_int_equal(A.udp.n, 0);
}

static void test_source_not_allowed(void **state)
{
	uint8_t spoof[4] = { 100, 64, 7, 7 };
	struct pkt *p;

	(void)state;
	handshake();
	p = h_ip4(&A, spoof, B.addr, 10, 0);
	wg_device_tx(A.dev, &p, 1, h_now);
	h_pump(&A, &B);
	assert_int_equal(B.tun.n, 0);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_ALLOWEDIPS], 1);
}

/* Keeps a copy of every data packet A sends, to replay it later. */
static struct pkt *captured;
static bool capture_data(const struct h_node *from, const struct pkt *p, void *ctx)
{
	(void)ctx;
	if (from == &A && h_type(p) == MESSAGE_DATA && p->len > 32 && !captured) {
		pkt_pool_get(A.pool, &captured, 1);
		memcpy(captured->data, p->data, p->len);
		captured->len = p->len;
		captured->ep = A.ep;
	}
	return false;
}

static void test_replayed_data(void **state)
{
	struct h_node *nodes[2] = { &A, &B };

	(void)state;
	handshake();
	captured = NULL;
	h_send(&A, &B, 30, 3);
	h_pump_filtered(nodes, 2, capture_data, NULL);
	expect_tun(&B, 30, 3);
	assert_non_null(captured);
	wg_device_rx(B.dev, &captured, 1, h_now);
	assert_int_equal(B.tun.n, 0);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_REPLAY], 1);
}

static unsigned count_type(const struct h_node *from, const struct pkt *p, uint8_t type,
			   const struct h_node *want)
{
	return from == want && h_type(p) == type;
}

struct drop_ctx {
	unsigned drop_initiations; /* drop this many initiations from A */
	unsigned initiations, responses, data, keepalives, cookies;
	const struct h_node *blackhole; /* drop everything from this node */
};

static bool drop_filter(const struct h_node *from, const struct pkt *p, void *vctx)
{
	struct drop_ctx *c = vctx;

	c->initiations += count_type(from, p, MESSAGE_HANDSHAKE_INITIATION, &A);
	c->responses += count_type(from, p, MESSAGE_HANDSHAKE_RESPONSE, &B);
	c->cookies += count_type(from, p, MESSAGE_HANDSHAKE_COOKIE, &B);
	if (h_type(p) == MESSAGE_DATA && from == &A)
		c->data++;
	if (h_type(p) == MESSAGE_DATA && p->len == 32)
		c->keepalives++;
	if (c->blackhole == from)
		return true;
	if (from == &A && h_type(p) == MESSAGE_HANDSHAKE_INITIATION && c->drop_initiations) {
		c->drop_initiations--;
		return true;
	}
	return false;
}

static void test_lost_handshake_retry(void **state)
{
	struct h_node *nodes[2] = { &A, &B };
	struct drop_ctx c = { .drop_initiations = 1 };

	(void)state;
	h_send(&A, &B, 20, 9);
	h_pump_filtered(nodes, 2, drop_filter, &c);
	assert_int_equal(c.initiations, 1);
	assert_int_equal(B.tun.n, 0);
	/* Nothing before REKEY_TIMEOUT ... */
	h_advance(&A, &B, REKEY_TIMEOUT_NS - NSEC_PER_SEC / 10, NSEC_PER_SEC / 10, drop_filter, &c);
	assert_int_equal(c.initiations, 1);
	/* ... and a retry within its jitter. */
	h_advance(&A, &B, REKEY_TIMEOUT_JITTER_MAX_NS + NSEC_PER_SEC / 5, NSEC_PER_SEC / 100,
		  drop_filter, &c);
	assert_int_equal(c.initiations, 2);
	expect_tun(&B, 20, 9);
}

static void test_give_up(void **state)
{
	struct drop_ctx c = { .blackhole = &B };

	(void)state;
	h_send(&A, &B, 20, 9);
	h_advance(&A, &B, REKEY_ATTEMPT_TIME_NS + 20 * NSEC_PER_SEC, NSEC_PER_SEC / 4, drop_filter,
		  &c);
	/* The first initiation went out before the filter was installed. */
	assert_true(c.initiations >= 17 && c.initiations <= 20);
	assert_int_equal(stats(&A).drops[WG_DROP_TX_NO_KEY], 1);
	c.initiations = 0;
	h_advance(&A, &B, 60 * NSEC_PER_SEC, NSEC_PER_SEC, drop_filter, &c);
	assert_int_equal(c.initiations, 0);
}

static void test_keepalive(void **state)
{
	struct drop_ctx c = { 0 };

	(void)state;
	handshake();
	/* B received data and sent nothing: a keepalive after KEEPALIVE_TIMEOUT. */
	h_advance(&A, &B, KEEPALIVE_TIMEOUT_NS - NSEC_PER_SEC, NSEC_PER_SEC / 2, drop_filter, &c);
	assert_int_equal(c.keepalives, 0);
	h_advance(&A, &B, 2 * NSEC_PER_SEC, NSEC_PER_SEC / 2, drop_filter, &c);
	assert_int_equal(c.keepalives, 1);
	h_advance(&A, &B, 30 * NSEC_PER_SEC, NSEC_PER_SEC, drop_filter, &c);
	assert_int_equal(c.keepalives, 1);
	assert_int_equal(c.initiations, 0);
}

static void test_persistent_keepalive(void **state)
{
	struct drop_ctx c = { 0 };

	(void)state;
	handshake();
	h_advance(&A, &B, 20 * NSEC_PER_SEC, NSEC_PER_SEC, drop_filter, &c);
	c.keepalives = 0;
	/* Turning it on sends one at once, then one every 25 s. */
	assert_int_equal(h_add_peer(&A, &B, true, NULL, 25), 0);
	h_pump_filtered((struct h_node *[]){ &A, &B }, 2, drop_filter, &c);
	assert_int_equal(c.keepalives, 1);
	h_advance(&A, &B, 100 * NSEC_PER_SEC, NSEC_PER_SEC, drop_filter, &c);
	assert_true(c.keepalives >= 4 && c.keepalives <= 6);
}

static void test_rekey_after_time(void **state)
{
	struct drop_ctx c = { 0 };
	uint64_t t;

	(void)state;
	handshake();
	/* Steady traffic both ways; after REKEY_AFTER_TIME the initiator rekeys. */
	for (t = 0; t < REKEY_AFTER_TIME_NS + 10 * NSEC_PER_SEC; t += NSEC_PER_SEC) {
		h_send(&A, &B, 10, 1);
		h_send(&B, &A, 10, 2);
		h_advance(&A, &B, NSEC_PER_SEC, NSEC_PER_SEC, drop_filter, &c);
		h_qfree(&A.tun);
		h_qfree(&B.tun);
		if (t < REKEY_AFTER_TIME_NS - NSEC_PER_SEC)
			assert_int_equal(c.initiations, 0);
	}
	assert_int_equal(c.initiations, 1);
	assert_int_equal(stats(&A).handshakes_completed, 2);
	h_send(&A, &B, 10, 1);
	h_pump(&A, &B);
	expect_tun(&B, 10, 1);
}

static bool blackhole_all(const struct h_node *from, const struct pkt *p, void *ctx)
{
	(void)from;
	(void)p;
	(void)ctx;
	return true;
}

static void test_reject_after_time(void **state)
{
	struct h_node *nodes[2] = { &A, &B };
	struct pkt *old = NULL;

	(void)state;
	handshake();
	h_advance(&A, &B, 20 * NSEC_PER_SEC, NSEC_PER_SEC, NULL, NULL);
	/* Keep one data packet made with the first keys. */
	captured = NULL;
	h_send(&A, &B, 30, 3);
	h_pump_filtered(nodes, 2, capture_data, NULL);
	h_qfree(&B.tun);
	old = captured;
	/* No network for REJECT_AFTER_TIME: keys expire, sending needs a new handshake. */
	h_advance(&A, &B, REJECT_AFTER_TIME_NS, 5 * NSEC_PER_SEC, blackhole_all, NULL);
	h_qfree(&A.udp);
	h_send(&A, &B, 10, 1);
	/* Nothing may leave on the expired keys: the packet waits for a new handshake. */
	for (unsigned i = 0; i < A.udp.n; i++)
		assert_int_equal(h_type(A.udp.p[i]), MESSAGE_HANDSHAKE_INITIATION);
	assert_int_equal(A.enc.n, 0);
	assert_true(stats(&A).tx_packets <= 2);
	h_qfree(&A.udp);
	/* B refuses data on the old keys (its replay window never saw this counter + 1). */
	old->data[8]++;
	wg_device_rx(B.dev, &old, 1, h_now);
	assert_true(stats(&B).drops[WG_DROP_RX_KEY_EXPIRED] >= 1);
}

static void test_cookie_under_load(void **state)
{
	struct h_node *nodes[2] = { &A, &B };
	struct drop_ctx c = { 0 };

	(void)state;
	wg_device_force_under_load(B.dev, 1);
	h_send(&A, &B, 20, 4);
	h_pump_filtered(nodes, 2, drop_filter, &c);
	assert_int_equal(c.cookies, 1);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_COOKIE_SENT], 1);
	assert_int_equal(B.tun.n, 0);
	/* The retry carries mac2 and gets through. */
	h_advance(&A, &B, REKEY_TIMEOUT_NS + REKEY_TIMEOUT_JITTER_MAX_NS + NSEC_PER_SEC / 10,
		  NSEC_PER_SEC / 10, drop_filter, &c);
	assert_int_equal(c.initiations, 2);
	assert_int_equal(c.cookies, 1);
	expect_tun(&B, 20, 4);
	assert_int_equal(stats(&B).cookies_sent, 1);
}

static void test_roaming(void **state)
{
	struct wg_device_info *info = NULL;

	(void)state;
	handshake();
	/* A moves to a new address; its next packet tells B. */
	A.ep.in4.sin_port = htons(40000);
	h_send(&A, &B, 10, 1);
	h_pump(&A, &B);
	expect_tun(&B, 10, 1);
	assert_int_equal(wg_device_info_get(B.dev, &info), 0);
	assert_int_equal(ntohs(info->peers[0].endpoint.in4.sin_port), 40000);
	wg_device_info_free(info);
	h_send(&B, &A, 10, 2);
	h_pump(&A, &B);
	expect_tun(&A, 10, 2);
}

static void test_worker_mode(void **state)
{
	unsigned i;

	(void)state;
	handshake();
	for (i = 0; i < 50; i++) {
		h_send(&A, &B, 100, (uint8_t)i);
		h_send(&B, &A, 200, (uint8_t)i);
	}
	assert_true(A.enc.n > 0);
	h_pump(&A, &B);
	assert_int_equal(A.tun.n, 50);
	assert_int_equal(B.tun.n, 50);
	for (i = 0; i < 50; i++) {
		assert_int_equal(B.tun.p[i]->data[20], i);
		assert_int_equal(A.tun.p[i]->data[20], i);
	}
	h_qfree(&A.tun);
	h_qfree(&B.tun);
}

static void test_garbage(void **state)
{
	struct pkt *p;
	unsigned i;

	(void)state;
	handshake();
	for (i = 0; i < 6; i++) {
		pkt_pool_get(A.pool, &p, 1);
		memset(p->data, 0, 200);
		p->ep = A.ep;
		p->data[0] = (uint8_t)i;
		p->len = i == 4 || i == 5 ? 64 : (i == 1 ? 148 : (i == 2 ? 92 : (i == 3 ? 64 : 3)));
		wg_device_rx(B.dev, &p, 1, h_now);
	}
	assert_int_equal(stats(&B).drops[WG_DROP_RX_SHORT], 1);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_MAC1], 2);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_COOKIE], 1);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_UNKNOWN_INDEX], 1);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_TYPE], 1);
}

static void test_remove_peer_and_key_change(void **state)
{
	struct wg_peer_cfg pc = { 0 };
	struct wg_device_cfg cfg = { 0 };
	struct wg_allowedip bad = { .family = AF_INET, .cidr = 33 };

	(void)state;
	handshake();
	/* Invalid requests change nothing. */
	memcpy(pc.public_key, B.pub, 32);
	pc.remove = true;
	cfg.n_peers = 1;
	cfg.peers = &pc;
	cfg.has_listen_port = true;
	cfg.listen_port = 1;
	{
		struct wg_peer_cfg bad_pc = { .n_allowedips = 1, .allowedips = &bad };
		struct wg_device_cfg bad_cfg = cfg;
		struct wg_peer_cfg both[2] = { pc, bad_pc };

		bad_cfg.peers = both;
		bad_cfg.n_peers = 2;
		assert_int_equal(wg_device_apply(A.dev, &bad_cfg, h_now), -EINVAL);
		assert_int_equal(stats(&A).peers, 1);
		assert_int_equal(wg_device_listen_port(A.dev), 51820);
	}
	assert_int_equal(wg_device_apply(A.dev, &cfg, h_now), 0);
	assert_int_equal(stats(&A).peers, 0);
	assert_int_equal(wg_device_listen_port(A.dev), 1);
	/* Setting our private key to the key of a configured peer removes that peer. */
	memcpy(pc.public_key, B.pub, 32);
	pc.remove = false;
	assert_int_equal(wg_device_apply(A.dev, &cfg, h_now), 0);
	assert_int_equal(stats(&A).peers, 1);
	cfg.n_peers = 0;
	cfg.has_private_key = true;
	memcpy(cfg.private_key, B.priv, 32);
	assert_int_equal(wg_device_apply(A.dev, &cfg, h_now), 0);
	assert_int_equal(stats(&A).peers, 0);
}

/* ---- review regressions and checklist cases; these reach into the engine's internals ---- */

static struct wg_peer *peer_of(struct h_node *n, const struct h_node *other)
{
	return wg_peer_lookup(n->dev, other->pub);
}

static unsigned index_count(struct h_node *n)
{
	struct index_entry *e;
	unsigned i, count = 0;

	for (i = 0; i < 1U << INDEX_HASH_BITS; i++)
		for (e = n->dev->index_hash[i]; e; e = e->next)
			count++;
	return count;
}

static int remove_peer(struct h_node *n, const struct h_node *other)
{
	struct wg_peer_cfg pc = { .remove = true };
	struct wg_device_cfg cfg = { .n_peers = 1, .peers = &pc };

	memcpy(pc.public_key, other->pub, 32);
	return wg_device_apply(n->dev, &cfg, h_now);
}

/* Moves what `from` has sent into `to`'s receive path, as if it came from from->ep. */
static void deliver(struct h_node *from, struct h_node *to)
{
	unsigned i, n = from->udp.n;

	from->udp.n = 0;
	for (i = 0; i < n; i++) {
		struct pkt *p = from->udp.p[i];

		p->ep = from->ep;
		wg_device_rx(to->dev, &p, 1, h_now);
	}
}

static void *encrypt_thread(void *arg)
{
	struct h_queue *q = arg;
	unsigned i;

	for (i = 0; i < q->n; i++)
		wg_send_encrypt(q->p[i]);
	return NULL;
}

/*
 * A peer removed (by UAPI) while its packets sit in the crypto queues: the workers still use
 * the keypairs, the finish step sees a dead peer and drops them; the last reference frees
 * peer and keys. Under ASan any use after free fails the test.
 */
static void test_remove_peer_with_work_pending(void **state)
{
	struct h_queue pending;
	pthread_t th;
	unsigned i;

	(void)state;
	handshake();
	for (i = 0; i < 5; i++)
		h_send(&B, &A, 100, (uint8_t)i);
	h_work(&B);
	assert_int_equal(B.udp.n, 5);
	deliver(&B, &A);
	assert_int_equal(A.dec.n, 5);
	for (i = 0; i < 5; i++)
		h_send(&A, &B, 100, (uint8_t)i);
	assert_int_equal(A.enc.n, 5);

	/* Encrypt on another thread while the peer goes away. */
	pending = A.enc;
	A.enc.n = 0;
	assert_int_equal(pthread_create(&th, NULL, encrypt_thread, &pending), 0);
	assert_int_equal(remove_peer(&A, &B), 0);
	assert_int_equal(stats(&A).peers, 0);
	assert_int_equal(index_count(&A), 0);
	/* The same key again is a new peer: the old packets must not reach it. */
	assert_int_equal(h_add_peer(&A, &B, true, NULL, 0), 0);
	pthread_join(th, NULL);
	wg_send_finish(A.dev, pending.p, pending.n, h_now);
	h_work(&A);
	assert_int_equal(A.tun.n, 0);
	assert_int_equal(A.udp.n, 0);
	assert_int_equal(stats(&A).rx_packets, 0);
	assert_int_equal(pkt_pool_available(A.pool), 2048);
	assert_int_equal(pkt_pool_available(B.pool), 2048);
	/* And the new peer works (a second later: the same TAI64N would be a replay). */
	h_now += NSEC_PER_SEC;
	h_send(&A, &B, 10, 7);
	h_pump(&A, &B);
	expect_tun(&B, 10, 7);
}

/* Same, with packets that finish after the device dropped the peer's keypairs only. */
static void test_remove_peer_then_free_device(void **state)
{
	unsigned i;

	(void)state;
	handshake();
	for (i = 0; i < 3; i++)
		h_send(&A, &B, 100, (uint8_t)i);
	assert_int_equal(remove_peer(&A, &B), 0);
	for (i = 0; i < A.enc.n; i++)
		wg_send_encrypt(A.enc.p[i]);
	/* The caller discards them (queue full, shutdown): releasing frees the dead peer. */
	for (i = 0; i < A.enc.n; i++)
		wg_pkt_release(A.enc.p[i]);
	h_qfree(&A.enc);
	assert_int_equal(pkt_pool_available(A.pool), 2048);
}

/*
 * Changing the private key invalidates every session; the next packet must start a handshake
 * at once, not REKEY_TIMEOUT after the last initiation or response made with the old key.
 */
static void test_key_change_rehandshakes_at_once(void **state)
{
	struct wg_device_cfg cfg = { .has_private_key = true };
	struct drop_ctx c = { 0 };

	(void)state;
	handshake();
	h_now += NSEC_PER_SEC;
	x25519_private_generate(A.priv);
	x25519_public_from_private(A.pub, A.priv);
	memcpy(cfg.private_key, A.priv, 32);
	assert_int_equal(wg_device_apply(A.dev, &cfg, h_now), 0);
	assert_int_equal(h_add_peer(&B, &A, true, NULL, 0), 0);
	h_send(&A, &B, 10, 5);
	assert_int_equal(A.udp.n, 1);
	assert_int_equal(h_type(A.udp.p[0]), MESSAGE_HANDSHAKE_INITIATION);
	h_pump_filtered((struct h_node *[]){ &A, &B }, 2, drop_filter, &c);
	expect_tun(&B, 10, 5);
	assert_int_equal(stats(&A).handshakes_completed, 2);
}

/*
 * The initiator's last-minute rekey (a packet received when its session is REJECT_AFTER_TIME -
 * KEEPALIVE_TIMEOUT - REKEY_TIMEOUT old) must go to the address that packet came from when the
 * peer has just roamed.
 */
static void test_roam_lastminute_handshake(void **state)
{
	struct pkt *p;

	(void)state;
	handshake();
	/* B confirms its session and keeps it; A stays quiet (no REKEY_AFTER_TIME on send). */
	h_send(&B, &A, 10, 1);
	h_pump(&A, &B);
	expect_tun(&A, 10, 1);
	h_now += REJECT_AFTER_TIME_NS - KEEPALIVE_TIMEOUT_NS - REKEY_TIMEOUT_NS + NSEC_PER_SEC;
	B.ep.in4.sin_port = htons(40001);
	h_send(&B, &A, 10, 2);
	assert_int_equal(B.udp.n, 1);
	deliver(&B, &A);
	expect_tun(&A, 10, 2);
	assert_int_equal(A.udp.n, 1);
	p = A.udp.p[0];
	assert_int_equal(h_type(p), MESSAGE_HANDSHAKE_INITIATION);
	assert_int_equal(ntohs(p->ep.in4.sin_port), 40001);
	assert_true(peer_of(&A, &B)->sent_lastminute_handshake);
	h_pump(&A, &B);
	assert_int_equal(stats(&A).handshakes_completed, 2);
	/* Only once per session. */
	h_send(&B, &A, 10, 3);
	h_pump(&A, &B);
	expect_tun(&A, 10, 3);
	assert_int_equal(stats(&A).handshakes_completed, 2);
}

static struct pkt *held_cookie;
static bool hold_cookie(const struct h_node *from, const struct pkt *p, void *ctx)
{
	(void)ctx;
	if (from == &B && h_type(p) == MESSAGE_HANDSHAKE_COOKIE && !held_cookie) {
		pkt_pool_get(B.pool, &held_cookie, 1);
		memcpy(held_cookie->data, p->data, p->len);
		held_cookie->len = p->len;
		held_cookie->ep = B.ep;
		return true;
	}
	return false;
}

static struct pkt *copy_pkt(struct h_node *n, const struct pkt *p)
{
	struct pkt *c;

	if (pkt_pool_get(n->pool, &c, 1) != 1)
		return NULL;
	memcpy(c->data, p->data, p->len);
	c->len = p->len;
	c->ep = p->ep;
	return c;
}

/* Cookie replies: only for the last message we sent, only while it is recent, only once. */
static void test_cookie_reply_acceptance(void **state)
{
	struct h_node *nodes[2] = { &A, &B };
	struct wg_peer *pb;
	struct pkt *dup, *old;

	(void)state;
	pb = peer_of(&A, &B);
	wg_device_force_under_load(B.dev, 1);
	held_cookie = NULL;
	h_send(&A, &B, 20, 4);
	h_pump_filtered(nodes, 2, hold_cookie, NULL);
	assert_non_null(held_cookie);
	old = held_cookie;
	/* Too late: the initiation it answers left more than REKEY_TIMEOUT + jitter ago. */
	h_now += COOKIE_REPLY_MAX_AGE_NS + NSEC_PER_MSEC;
	dup = copy_pkt(&B, old);
	wg_device_rx(A.dev, &dup, 1, h_now);
	assert_int_equal(stats(&A).drops[WG_DROP_RX_COOKIE], 1);
	assert_false(pb->cookie.is_valid);
	/* A new initiation; its reply is taken at once, and only once. */
	held_cookie = NULL;
	h_send(&A, &B, 20, 5);
	h_pump_filtered(nodes, 2, hold_cookie, NULL);
	assert_non_null(held_cookie);
	/* The old reply answers a message that is no longer the last one: it does not open. */
	wg_device_rx(A.dev, &old, 1, h_now);
	assert_int_equal(stats(&A).drops[WG_DROP_RX_COOKIE], 2);
	dup = copy_pkt(&B, held_cookie);
	wg_device_rx(A.dev, &dup, 1, h_now);
	assert_true(pb->cookie.is_valid);
	assert_int_equal(stats(&A).drops[WG_DROP_RX_COOKIE], 2);
	wg_device_rx(A.dev, &held_cookie, 1, h_now);
	assert_int_equal(stats(&A).drops[WG_DROP_RX_COOKIE], 3);
	/* With the cookie, the retry gets through. */
	h_advance(&A, &B, REKEY_TIMEOUT_NS + REKEY_TIMEOUT_JITTER_MAX_NS, NSEC_PER_SEC / 10, NULL,
		  NULL);
	assert_int_equal(B.tun.n, 2);
	h_qfree(&B.tun);
}

/* The initiator's new session is current at once, the old one previous; indices follow. */
static void test_keypair_rotation(void **state)
{
	struct noise_keypair *k1, *k2;
	struct wg_peer *pa, *pb;

	(void)state;
	handshake();
	pa = peer_of(&A, &B);
	pb = peer_of(&B, &A);
	k1 = pa->keypairs.current;
	assert_non_null(k1);
	assert_null(pa->keypairs.next);
	assert_ptr_equal(pb->keypairs.current->entry.index, k1->remote_index);
	assert_int_equal(k1->send_counter, 1);
	assert_int_equal(index_count(&A), 1);
	assert_int_equal(index_count(&B), 1);
	/* REKEY_AFTER_TIME on send: the initiator starts the next handshake. */
	h_now += REKEY_AFTER_TIME_NS + NSEC_PER_SEC;
	h_send(&A, &B, 10, 1);
	assert_int_equal(A.udp.n, 2); /* the data on k1, then the initiation */
	h_pump(&A, &B);
	expect_tun(&B, 10, 1);
	k2 = pa->keypairs.current;
	assert_ptr_not_equal(k1, k2);
	assert_ptr_equal(pa->keypairs.previous, k1);
	assert_int_equal(k2->send_counter, 1); /* the confirming keepalive, counter 0 */
	assert_int_equal(index_count(&A), 2);
	assert_ptr_equal(pb->keypairs.current->entry.index, k2->remote_index);
	assert_null(pb->keypairs.next);
	assert_int_equal(index_count(&B), 2);
	/* The responder does not rekey on time. */
	h_now += REKEY_AFTER_TIME_NS + NSEC_PER_SEC;
	h_send(&B, &A, 10, 2);
	assert_int_equal(B.udp.n, 1);
	h_pump(&A, &B);
	expect_tun(&A, 10, 2);
}

/* REJECT_AFTER_MESSAGES on send and receive, REKEY_AFTER_MESSAGES on send. */
static void test_message_limits(void **state)
{
	struct noise_keypair *ka, *kb;
	struct pkt *last;

	(void)state;
	handshake();
	ka = peer_of(&A, &B)->keypairs.current;
	kb = peer_of(&B, &A)->keypairs.current;
	h_now += REKEY_TIMEOUT_NS + NSEC_PER_SEC;
	ka->send_counter = REKEY_AFTER_MESSAGES + 1;
	h_send(&A, &B, 10, 1);
	assert_int_equal(A.udp.n, 2); /* the initiation leaves first, then the data */
	assert_int_equal(h_type(A.udp.p[0]), MESSAGE_HANDSHAKE_INITIATION);
	assert_int_equal(h_type(A.udp.p[1]), MESSAGE_DATA);
	h_qfree(&A.udp);

	/* The last counter a key may use goes out; the packet after it waits for new keys. */
	ka->send_counter = REJECT_AFTER_MESSAGES - 1;
	h_send(&A, &B, 10, 2);
	assert_int_equal(A.udp.n, 1); /* no initiation: one left less than REKEY_TIMEOUT ago */
	assert_int_equal(le64_read(A.udp.p[0]->data + 8), REJECT_AFTER_MESSAGES - 1);
	last = copy_pkt(&A, A.udp.p[0]);
	deliver(&A, &B);
	expect_tun(&B, 10, 2);
	h_send(&A, &B, 10, 3);
	assert_int_equal(A.udp.n, 0);
	assert_int_equal(peer_of(&A, &B)->staged_len, 1);
	/* The receiver took the last counter: the key is refused for receiving from now on. */
	assert_true(kb->replay.greatest >= REJECT_AFTER_MESSAGES);
	last->data[8]--;
	last->ep = A.ep;
	wg_device_rx(B.dev, &last, 1, h_now);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_KEY_EXPIRED], 1);
	assert_false(kb->recv_valid);
	/* After REKEY_TIMEOUT the staged packet brings a new session. */
	h_advance(&A, &B, REKEY_TIMEOUT_NS + REKEY_TIMEOUT_JITTER_MAX_NS, NSEC_PER_SEC / 10, NULL,
		  NULL);
	expect_tun(&B, 10, 3);
}

/* Exact sizes, reserved bytes, little-endian counters, padding to 16. */
static void test_wire_format(void **state)
{
	struct pkt *p, *c;
	uint8_t init[148];

	(void)state;
	h_send(&A, &B, 10, 1);
	assert_int_equal(A.udp.n, 1);
	p = A.udp.p[0];
	assert_int_equal(p->len, 148);
	memcpy(init, p->data, 148);
	/* One byte too many, or a reserved byte set: dropped before any crypto. */
	c = copy_pkt(&A, p);
	c->len = 149;
	c->ep = A.ep;
	wg_device_rx(B.dev, &c, 1, h_now);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_SHORT], 1);
	c = copy_pkt(&A, p);
	c->data[2] = 1;
	c->ep = A.ep;
	wg_device_rx(B.dev, &c, 1, h_now);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_TYPE], 1);
	assert_int_equal(B.udp.n, 0);
	/* The genuine one gets a 92-byte response. */
	deliver(&A, &B);
	assert_int_equal(B.udp.n, 1);
	assert_int_equal(B.udp.p[0]->len, 92);
	assert_memory_equal(B.udp.p[0]->data + 8, init + 4, 4); /* receiver = our sender */
	deliver(&B, &A);
	/* The staged 30-byte packet: 32 padded + 16 header + 16 tag; counters 0 then 1. */
	assert_int_equal(A.udp.n, 1);
	p = A.udp.p[0];
	assert_int_equal(p->len, 16 + 32 + 16);
	assert_int_equal(le32_read(p->data), MESSAGE_DATA);
	assert_int_equal(le64_read(p->data + 8), 0);
	deliver(&A, &B);
	expect_tun(&B, 10, 1);
	h_send(&A, &B, 1, 2);
	p = A.udp.p[0];
	assert_int_equal(p->len, 16 + 32 + 16);
	assert_int_equal(p->data[8], 1);
	assert_int_equal(le64_read(p->data + 8), 1);
	/* A data message of 31 bytes is short. */
	c = copy_pkt(&A, p);
	c->len = 31;
	c->ep = A.ep;
	wg_device_rx(B.dev, &c, 1, h_now);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_SHORT], 2);
	deliver(&A, &B);
	expect_tun(&B, 1, 2);
}

/* Padding: the next multiple of 16, never past the tunnel MTU (whitepaper 5.4.6). */
static void test_padding_rule(void **state)
{
	static const struct {
		uint32_t len, mtu, want;
	} cases[] = {
		{0, 0, 0},          {1, 0, 16},         {16, 0, 16},        {17, 0, 32},
		{1420, 0, 1424},    {1420, 1420, 1420}, {1419, 1420, 1420}, {1409, 1420, 1420},
		{1408, 1420, 1408}, {1407, 1420, 1408}, {1340, 1340, 1340}, {1329, 1340, 1340},
		{1328, 1340, 1328}, {1280, 1280, 1280}, {1279, 1280, 1280}, {1265, 1280, 1280},
		{1264, 1280, 1264}, {1500, 1500, 1500}, {1489, 1500, 1500}, {1488, 1500, 1488},
		{1487, 1500, 1488}, {0, 1420, 0},       {1, 1420, 16},      {9000, 9000, 9000},
		{8993, 9000, 9000}, {8992, 9000, 8992}, {1, 1, 1},          {15, 17, 16},
		{17, 17, 17},       {65000, 65000, 65000}, {64999, 65000, 65000},
		/* Longer than the MTU: the last MTU-sized unit is padded, nothing is cut. */
		{1421, 1420, 1436}, {2840, 1420, 2840}, {2841, 1420, 2856},
	};
	unsigned i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint32_t got = wg_send_padded_len(cases[i].len, cases[i].mtu);

		if (got != cases[i].want)
			fail_msg("len %u mtu %u: padded to %u, want %u", cases[i].len, cases[i].mtu,
				 got, cases[i].want);
		assert_true(got >= cases[i].len);
	}
}

/* On the wire: a full-size packet at an MTU that is not a multiple of 16 is not padded past it. */
static void test_padding_capped_at_mtu(void **state)
{
	static const uint32_t mtus[] = {1420, 1340, 1339, 1280, 1500};
	unsigned i;

	(void)state;
	handshake();
	for (i = 0; i < sizeof(mtus) / sizeof(mtus[0]); i++) {
		uint32_t mtu = mtus[i];

		wg_device_set_mtu(A.dev, mtu);
		h_send(&A, &B, mtu - 20, (uint8_t)i);
		assert_int_equal(A.udp.n, 1);
		assert_int_equal(A.udp.p[0]->len, 16 + mtu + 16);
		deliver(&A, &B);
		expect_tun(&B, mtu - 20, (uint8_t)i);
		/* One byte less is padded up to the MTU, not past it. */
		h_send(&A, &B, mtu - 21, (uint8_t)i);
		assert_int_equal(A.udp.p[0]->len, 16 + mtu + 16);
		deliver(&A, &B);
		expect_tun(&B, mtu - 21, (uint8_t)i);
	}
	/* MTU 0 (unknown): plain padding to 16. */
	wg_device_set_mtu(A.dev, 0);
	h_send(&A, &B, 1400, 7);
	assert_int_equal(A.udp.p[0]->len, 16 + 1424 + 16);
	deliver(&A, &B);
	expect_tun(&B, 1400, 7);
}

/* Padding and any trailing bytes after the IP packet are trimmed by the IP length. */
static void test_ip_length_trim(void **state)
{
	struct pkt *p;

	(void)state;
	handshake();
	p = h_ip4(&A, A.addr, B.addr, 10, 9);
	memset(p->data + p->len, 0xee, 7);
	p->len += 7; /* 7 stray bytes past the IP total length */
	wg_device_tx(A.dev, &p, 1, h_now);
	h_pump(&A, &B);
	expect_tun(&B, 10, 9);
	/* A total length beyond what arrived is dishonest: dropped. */
	p = h_ip4(&A, A.addr, B.addr, 10, 9);
	p->data[3] += 40;
	wg_device_tx(A.dev, &p, 1, h_now);
	h_pump(&A, &B);
	assert_int_equal(B.tun.n, 0);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_BAD_IP], 1);
}

/* REJECT_AFTER_TIME * 3 after the last session all keys go, and with them their indices. */
static void test_zero_key_material(void **state)
{
	(void)state;
	handshake();
	assert_int_equal(index_count(&A), 1);
	h_advance(&A, &B, REJECT_AFTER_TIME_NS * 3 + 2 * NSEC_PER_SEC, 2 * NSEC_PER_SEC,
		  blackhole_all, NULL);
	assert_null(peer_of(&A, &B)->keypairs.current);
	assert_null(peer_of(&B, &A)->keypairs.current);
	assert_null(peer_of(&B, &A)->keypairs.previous);
	assert_int_equal(peer_of(&A, &B)->handshake.state, HANDSHAKE_ZEROED);
	assert_int_equal(index_count(&A), 0);
	assert_int_equal(index_count(&B), 0);
	/* And a fresh handshake works afterwards. */
	h_qfree(&A.udp);
	h_qfree(&B.udp);
	h_now += REKEY_TIMEOUT_NS;
	handshake();
}

/*
 * "Under load" is ours (no handshake queue): more than UNDER_LOAD_THRESHOLD handshake messages
 * in a second, and for a second after. Then mac1-valid messages without mac2 get cookie replies.
 */
static void test_under_load_detection(void **state)
{
	struct pkt *init, *c;
	unsigned i;

	(void)state;
	h_send(&A, &B, 10, 1);
	assert_int_equal(A.udp.n, 1);
	init = copy_pkt(&A, A.udp.p[0]);
	init->ep = A.ep;
	h_qfree(&A.udp);
	for (i = 0; i < UNDER_LOAD_THRESHOLD + 44; i++) {
		c = copy_pkt(&A, init);
		wg_device_rx(B.dev, &c, 1, h_now);
	}
	assert_int_equal(stats(&B).drops[WG_DROP_RX_REPLAYED_HANDSHAKE], UNDER_LOAD_THRESHOLD - 1);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_COOKIE_SENT], 44);
	assert_int_equal(stats(&B).cookies_sent, 44);
	/* Still under load just under a second later; not any more after it. */
	h_now += NSEC_PER_SEC - NSEC_PER_MSEC;
	c = copy_pkt(&A, init);
	wg_device_rx(B.dev, &c, 1, h_now);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_COOKIE_SENT], 45);
	h_now += NSEC_PER_SEC + NSEC_PER_MSEC;
	wg_device_rx(B.dev, &init, 1, h_now);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_COOKIE_SENT], 45);
	assert_int_equal(stats(&B).drops[WG_DROP_RX_REPLAYED_HANDSHAKE], UNDER_LOAD_THRESHOLD);
	h_qfree(&B.udp);
}

/* Data sent and nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ jitter): a new handshake. */
static void test_new_handshake_after_silence(void **state)
{
	struct drop_ctx c = { .blackhole = &B };

	(void)state;
	handshake();
	/* B's passive keepalive (after KEEPALIVE_TIMEOUT) answers the handshake's data. */
	h_advance(&A, &B, KEEPALIVE_TIMEOUT_NS + NSEC_PER_SEC, NSEC_PER_SEC, NULL, NULL);
	assert_int_equal(peer_of(&A, &B)->timers[TIMER_NEW_HANDSHAKE], TIME_NEVER);
	h_send(&A, &B, 10, 1);
	h_advance(&A, &B, KEEPALIVE_TIMEOUT_NS + REKEY_TIMEOUT_NS - NSEC_PER_SEC / 10,
		  NSEC_PER_SEC / 10, drop_filter, &c);
	assert_int_equal(c.initiations, 0);
	h_advance(&A, &B, REKEY_TIMEOUT_JITTER_MAX_NS + NSEC_PER_SEC / 5, NSEC_PER_SEC / 100,
		  drop_filter, &c);
	assert_int_equal(c.initiations, 1);
	h_qfree(&B.tun);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_handshake_and_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_info, setup, teardown),
		cmocka_unit_test_setup_teardown(test_psk_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_psk_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staged_packets, setup, teardown),
		cmocka_unit_test_setup_teardown(test_staged_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_route, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_not_allowed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_replayed_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lost_handshake_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_give_up, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keepalive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_persistent_keepalive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rekey_after_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_after_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_under_load, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roaming, setup, teardown),
		cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_peer_and_key_change, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_change_rehandshakes_at_once, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_roam_lastminute_handshake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cookie_reply_acceptance, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keypair_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_message_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wire_format, setup, teardown),
		cmocka_unit_test_setup_teardown(test_padding_rule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_padding_capped_at_mtu, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ip_length_trim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zero_key_material, setup, teardown),
		cmocka_unit_test_setup_teardown(test_new_handshake_after_silence, setup, teardown),
		cmocka_unit_test_setup_teardown(test_under_load_detection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_remove_peer_then_free_device, setup_worker,
						teardown),
		cmocka_unit_test_setup_teardown(test_remove_peer_with_work_pending, setup_worker,
						teardown),
		cmocka_unit_test_setup_teardown(test_worker_mode, setup_worker, teardown),
		cmocka_unit_test_setup_teardown(test_handshake_and_data, setup_worker, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
