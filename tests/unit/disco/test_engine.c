/* SPDX-License-Identifier: MIT */
/*
 * The disco engine between two simulated nodes on an in-memory wire: a relay that
 * always delivers (source: the sender's handle on the receiving side) and direct UDP
 * that delivers only what the test's network allows, with the source address the
 * receiver sees (a NAT's mapping). Checks the paths chosen, what goes on the wire when,
 * and that forged and flooding input changes nothing.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "disco/engine.c"

#define MS 1000000ULL
#define SENT_MAX 512

struct sent {
	int from;
	struct endpoint to;
	uint8_t d[DISCO_MSG_MAX];
	size_t len;
};

struct node {
	int idx;
	struct disco *d;
	uint8_t priv[32], pub[32], node_key[32];
	struct endpoint handle; /* its handle for the other node */
	struct endpoint lan;	/* its interface address */
	struct endpoint mapped; /* what the other side sees as its source */
	/* What path_set said last. */
	int path_calls;
	bool has_path;
	struct endpoint path;
	uint64_t trust_until;
	uint64_t last_tx;
	int pongs_relay, pongs_direct; /* ops.pong */
	unsigned n_verified;	       /* ops.addr_verified: how often, the last address */
	struct endpoint verified;
};

static struct node nodes[2];
static struct sent q[SENT_MAX];
static unsigned qn;
static bool udp_ok; /* direct datagrams between the nodes arrive */
static unsigned relayed, direct_sent;

static void op_send(void *ctx, const struct endpoint *to, const uint8_t *d, size_t len)
{
	struct node *n = ctx;

	assert_true(qn < SENT_MAX);
	assert_true(len <= DISCO_MSG_MAX);
	q[qn].from = n->idx;
	q[qn].to = *to;
	memcpy(q[qn].d, d, len);
	q[qn].len = len;
	qn++;
	if (endpoint_is_handle(to))
		relayed++;
	else
		direct_sent++;
}

static void op_path(void *ctx, const struct endpoint *peer, const struct endpoint *direct,
		    uint64_t until)
{
	struct node *n = ctx;

	assert_true(endpoint_equal(peer, &n->handle));
	n->path_calls++;
	n->has_path = direct != NULL;
	if (direct)
		n->path = *direct;
	n->trust_until = until;
}

static void op_pong(void *ctx, const struct endpoint *peer, const struct endpoint *via,
		    uint64_t rtt)
{
	struct node *n = ctx;

	(void)peer;
	(void)rtt;
	if (endpoint_is_handle(via))
		n->pongs_relay++;
	else
		n->pongs_direct++;
}

static uint64_t op_last_tx(void *ctx, const struct endpoint *peer)
{
	struct node *n = ctx;

	(void)peer;
	return n->last_tx;
}

static void op_verified(void *ctx, const struct endpoint *peer, const struct endpoint *addr)
{
	struct node *n = ctx;

	assert_true(endpoint_equal(peer, &n->handle));
	assert_true(endpoint_is_addr(addr));
	assert_int_equal(addr->src.family, AF_UNSPEC);
	n->n_verified++;
	n->verified = *addr;
}

/* Delivers everything queued (and what that sends) at `now`. */
static void pump(uint64_t now)
{
	for (unsigned i = 0; i < qn; i++) {
		struct sent *s = &q[i];
		struct node *from = &nodes[s->from], *to = &nodes[!s->from];

		if (endpoint_is_handle(&s->to)) {
			/* The relay: the receiver sees the sender's handle. */
			disco_rx(to->d, s->d, s->len, &to->handle, now);
		} else if (udp_ok && (endpoint_equal(&s->to, &to->mapped) ||
				      endpoint_equal(&s->to, &to->lan))) {
			disco_rx(to->d, s->d, s->len, &from->mapped, now);
		}
	}
	qn = 0;
}

static void ep(struct endpoint *e, const char *s)
{
	assert_int_equal(endpoint_parse(e, s), 0);
}

static int setup(void **state)
{
	struct disco_ops ops = {.send = op_send,
				.path_set = op_path,
				.pong = op_pong,
				.last_tx_ns = op_last_tx,
				.addr_verified = op_verified};

	(void)state;
	memset(nodes, 0, sizeof(nodes));
	qn = relayed = direct_sent = 0;
	udp_ok = true;
	for (int i = 0; i < 2; i++) {
		struct node *n = &nodes[i];

		n->idx = i;
		assert_int_equal(x25519_private_generate(n->priv), 0);
		assert_int_equal(x25519_public_from_private(n->pub, n->priv), 0);
		memset(n->node_key, 0x10 + i, 32);
		endpoint_handle_set(&n->handle, 100 + (uint32_t)i);
		ops.ctx = n;
		n->d = disco_new(&ops, n->priv);
		assert_non_null(n->d);
	}
	/* A behind an easy NAT (LAN address and a mapping), B public. */
	ep(&nodes[0].lan, "198.18.0.2:41641");
	ep(&nodes[0].mapped, "192.0.2.10:41641");
	ep(&nodes[1].lan, "203.0.113.5:41641");
	nodes[1].mapped = nodes[1].lan;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < 2; i++)
		disco_free(nodes[i].d);
	return 0;
}

/* Each node learns the other from the "netmap": its keys and its reported candidates. */
static void introduce(uint64_t now)
{
	for (int i = 0; i < 2; i++) {
		struct node *n = &nodes[i], *o = &nodes[!i];
		struct endpoint self[2] = {n->lan, n->mapped}, cands[2] = {o->lan, o->mapped};

		disco_self_set(n->d, n->node_key, self, 2);
		assert_int_equal(
		    disco_peer_set(n->d, &n->handle, o->pub, o->node_key, cands, 2, now), 0);
	}
}

/* Traffic starts at A: a direct path within one round of datagrams, both ways. */
static void test_direct(void **state)
{
	struct disco_peer_status st;
	struct disco_stats ds;

	(void)state;
	introduce(1 * MS);
	/* Nothing happens while idle. */
	assert_int_equal(disco_tick(nodes[0].d, 2 * MS), 0);
	assert_int_equal(qn, 0);
	nodes[0].last_tx = 10 * MS;
	disco_peer_active(nodes[0].d, &nodes[0].handle, 10 * MS);
	/* A ping to B's candidate (reported twice: one), a call-me-maybe through the relay. */
	assert_int_equal(direct_sent, 1);
	assert_int_equal(relayed, 1);
	pump(12 * MS);
	pump(14 * MS);
	pump(16 * MS);
	assert_true(nodes[0].has_path);
	assert_true(endpoint_equal(&nodes[0].path, &nodes[1].lan));
	assert_true(nodes[0].trust_until > 10 * MS + DISCO_TRUST_NS - 10 * MS);
	/* B pinged A back at its mapping (the call-me-maybe and A's ping told it). */
	assert_true(nodes[1].has_path);
	assert_true(endpoint_equal(&nodes[1].path, &nodes[0].mapped));
	assert_int_equal(disco_peer_status_get(nodes[0].d, &nodes[0].handle, 16 * MS, &st), 0);
	assert_int_equal(st.state, DISCO_STATE_DIRECT);
	assert_true(st.had_direct);
	/* Active at 10 ms; the first delivery (12 ms) carried the ping and its pong. */
	assert_int_equal(st.to_direct_ns, 2 * MS);
	disco_stats_get(nodes[0].d, &ds);
	assert_int_equal(ds.rx_pong_spoofed, 0);
	assert_int_equal(ds.rx_bad, 0);
}

/* UDP blocked: pings go out, nothing comes back, the path stays the relay. */
static void test_udp_blocked(void **state)
{
	struct disco_peer_status st;
	uint64_t now = 10 * MS, next;

	(void)state;
	udp_ok = false;
	introduce(now);
	nodes[0].last_tx = now;
	disco_peer_active(nodes[0].d, &nodes[0].handle, now);
	pump(now);
	pump(now);
	assert_false(nodes[0].has_path);
	assert_false(nodes[1].has_path);
	/* It retries every DISCO_RETRY_NS while traffic flows. */
	next = disco_tick(nodes[0].d, now + MS);
	assert_int_equal(next, now + DISCO_RETRY_NS);
	direct_sent = 0;
	nodes[0].last_tx = next;
	disco_tick(nodes[0].d, next);
	assert_int_equal(direct_sent, 1);
	assert_int_equal(disco_peer_status_get(nodes[0].d, &nodes[0].handle, next, &st), 0);
	assert_int_equal(st.state, DISCO_STATE_PROBING);
	assert_false(st.had_direct);
	assert_true(st.pings_sent >= 2);
	assert_int_equal(st.pongs_rx, 0);
	pump(next);
}

/* Direct, then UDP dies: heartbeats while traffic flows, the relay after the trust. */
static void test_trust_and_fallback(void **state)
{
	uint64_t now = 10 * MS, t;
	int calls;

	(void)state;
	introduce(now);
	nodes[0].last_tx = now;
	disco_peer_active(nodes[0].d, &nodes[0].handle, now);
	pump(now);
	pump(now);
	pump(now);
	assert_true(nodes[0].has_path);
	assert_int_equal(nodes[0].trust_until, now + DISCO_TRUST_NS);
	/* A heartbeat at 3 s extends the trust. */
	t = now + DISCO_HEARTBEAT_NS;
	nodes[0].last_tx = t;
	direct_sent = 0;
	assert_int_equal(disco_tick(nodes[0].d, t), t + DISCO_HEARTBEAT_NS);
	assert_int_equal(direct_sent, 1);
	pump(t);
	assert_int_equal(nodes[0].trust_until, t + DISCO_TRUST_NS);
	/* UDP dies. The heartbeat goes unanswered; the path stays until the trust ends. */
	udp_ok = false;
	calls = nodes[0].path_calls;
	nodes[0].last_tx = t + DISCO_HEARTBEAT_NS;
	disco_tick(nodes[0].d, t + DISCO_HEARTBEAT_NS);
	pump(t + DISCO_HEARTBEAT_NS);
	assert_true(nodes[0].has_path);
	/* The silence report pings at once (no wait for the next heartbeat). */
	direct_sent = 0;
	disco_peer_silent(nodes[0].d, &nodes[0].handle, t + DISCO_HEARTBEAT_NS + 600 * MS);
	assert_int_equal(direct_sent, 1);
	pump(t + DISCO_HEARTBEAT_NS + 600 * MS);
	disco_tick(nodes[0].d, t + DISCO_TRUST_NS);
	assert_false(nodes[0].has_path);
	assert_int_equal(nodes[0].path_calls, calls + 1);
	/* UDP comes back: the next probe finds the direct path again. */
	udp_ok = true;
	nodes[0].last_tx = t + DISCO_TRUST_NS + DISCO_RETRY_NS;
	disco_tick(nodes[0].d, t + DISCO_TRUST_NS + DISCO_RETRY_NS);
	pump(t + DISCO_TRUST_NS + DISCO_RETRY_NS);
	pump(t + DISCO_TRUST_NS + DISCO_RETRY_NS);
	assert_true(nodes[0].has_path);
}

/*
 * The direct path dies while traffic flows (issue 10's failover): once its trust runs
 * out, A probes at once and every DISCO_REPROBE_NS (not every DISCO_RETRY_NS), so it is
 * direct again within about a second of UDP coming back; after DISCO_REPROBE_FOR_NS,
 * every DISCO_RETRY_NS again; and an idle peer has no timer at all.
 */
static void test_reprobe(void **state)
{
	uint64_t now = 10 * MS, t, lost;
	unsigned k;

	(void)state;
	introduce(now);
	nodes[0].last_tx = now;
	disco_peer_active(nodes[0].d, &nodes[0].handle, now);
	pump(now);
	pump(now);
	pump(now);
	assert_true(nodes[0].has_path);
	/* UDP dies; the heartbeats go unanswered until the trust runs out. */
	udp_ok = false;
	for (t = now + DISCO_HEARTBEAT_NS; t < now + DISCO_TRUST_NS; t += DISCO_HEARTBEAT_NS) {
		nodes[0].last_tx = t;
		disco_tick(nodes[0].d, t);
		pump(t);
	}
	lost = now + DISCO_TRUST_NS;
	nodes[0].last_tx = lost;
	direct_sent = relayed = 0;
	/* Lost: the relay, a probe at once, the next one DISCO_REPROBE_NS later. */
	assert_int_equal(disco_tick(nodes[0].d, lost), lost + DISCO_REPROBE_NS);
	assert_false(nodes[0].has_path);
	assert_int_equal(direct_sent, 1); /* B's one address (reported twice) */
	assert_int_equal(relayed, 1);	  /* call-me-maybe */
	pump(lost);
	/* Still dead a second later: probed again. */
	t = lost + DISCO_REPROBE_NS;
	nodes[0].last_tx = t;
	direct_sent = 0;
	assert_int_equal(disco_tick(nodes[0].d, t), t + DISCO_REPROBE_NS);
	assert_int_equal(direct_sent, 1);
	pump(t);
	/* UDP is back 1.5 s after the loss: direct at the next probe, half a second on. */
	udp_ok = true;
	t = lost + 2 * DISCO_REPROBE_NS;
	nodes[0].last_tx = t;
	disco_tick(nodes[0].d, t);
	pump(t + MS);
	pump(t + 2 * MS);
	assert_true(nodes[0].has_path);
	/* It dies again and stays dead: a probe a second for DISCO_REPROBE_FOR_NS, then
	 * every DISCO_RETRY_NS. */
	udp_ok = false;
	lost = t + 2 * MS + DISCO_TRUST_NS;
	for (t += DISCO_HEARTBEAT_NS; t < lost; t += DISCO_HEARTBEAT_NS) {
		nodes[0].last_tx = t;
		disco_tick(nodes[0].d, t);
		pump(t);
	}
	for (k = 0, t = lost; t < lost + DISCO_REPROBE_FOR_NS; t += DISCO_REPROBE_NS, k++) {
		nodes[0].last_tx = t;
		assert_int_equal(disco_tick(nodes[0].d, t), t + DISCO_REPROBE_NS);
		pump(t);
	}
	assert_int_equal(k, DISCO_REPROBE_FOR_NS / DISCO_REPROBE_NS);
	nodes[0].last_tx = t;
	assert_int_equal(disco_tick(nodes[0].d, t), t - DISCO_REPROBE_NS + DISCO_RETRY_NS);
	/* Traffic stops: idle, no timer, nothing sent. */
	t += DISCO_IDLE_NS;
	qn = 0;
	assert_int_equal(disco_tick(nodes[0].d, t), 0);
	assert_int_equal(qn, 0);
	assert_int_equal(nodes[0].d->n_active, 0);
}

/*
 * B roams while A's traffic flows on a direct path: the netmap brings B's new address and
 * A pings it at the next tick, not at the next round (DISCO_RETRY_NS away, or
 * DISCO_UPGRADE_NS with a trusted path), and only once.
 */
static void test_new_candidate(void **state)
{
	uint64_t now = 10 * MS, t = now + 1000 * MS;
	struct endpoint moved;

	(void)state;
	introduce(now);
	nodes[0].last_tx = now;
	disco_peer_active(nodes[0].d, &nodes[0].handle, now);
	pump(now);
	pump(now);
	pump(now);
	assert_true(nodes[0].has_path);
	/* Nothing new: a tick sends nothing (the heartbeat is 3 s away). */
	direct_sent = 0;
	nodes[0].last_tx = t;
	disco_tick(nodes[0].d, t);
	assert_int_equal(direct_sent, 0);
	/* B moves: its old address is gone, the netmap has the new one. */
	ep(&moved, "203.0.113.77:41641");
	nodes[1].lan = nodes[1].mapped = moved;
	assert_int_equal(disco_peer_set(nodes[0].d, &nodes[0].handle, nodes[1].pub,
					nodes[1].node_key, &moved, 1, t),
			 0);
	qn = 0;
	disco_tick(nodes[0].d, t);
	assert_int_equal(direct_sent, 1);
	assert_true(endpoint_equal(&q[0].to, &moved));
	pump(t + 2 * MS);
	pump(t + 4 * MS);
	assert_true(nodes[0].has_path);
	assert_true(endpoint_equal(&nodes[0].path, &moved));
	/* Once: answered, it is pinged again only by the heartbeat. */
	direct_sent = 0;
	disco_tick(nodes[0].d, t + 100 * MS);
	assert_int_equal(direct_sent, 0);
}

/*
 * The data path stamps its sends with its own clock reads (other threads): a last send a
 * little later than the tick's now is traffic, not a wrapped "idle for ages". Before, the
 * peer left the active list while its traffic flowed: no heartbeats, and once the trust
 * ran out it stayed relayed (no "active" event comes while traffic flows).
 */
static void test_tx_after_now(void **state)
{
	struct disco_peer_status st;
	uint64_t now = 10 * MS, t = now + DISCO_HEARTBEAT_NS;

	(void)state;
	introduce(now);
	nodes[0].last_tx = now;
	disco_peer_active(nodes[0].d, &nodes[0].handle, now);
	pump(now);
	pump(now);
	pump(now);
	assert_true(nodes[0].has_path);
	/* The heartbeat's tick reads the clock; a send on another thread stamps 1 ms later. */
	nodes[0].last_tx = t + MS;
	direct_sent = 0;
	assert_int_equal(disco_tick(nodes[0].d, t), t + DISCO_HEARTBEAT_NS);
	assert_int_equal(direct_sent, 1);
	assert_int_equal(disco_peer_status_get(nodes[0].d, &nodes[0].handle, t, &st), 0);
	assert_int_equal(st.state, DISCO_STATE_DIRECT);
	pump(t);
	assert_int_equal(nodes[0].trust_until, t + DISCO_TRUST_NS);
	assert_int_equal(nodes[0].d->n_active, 1);
}

/* No traffic for DISCO_IDLE_NS: no deadline and no datagram. */
static void test_idle(void **state)
{
	uint64_t now = 10 * MS;

	(void)state;
	introduce(now);
	nodes[0].last_tx = now;
	disco_peer_active(nodes[0].d, &nodes[0].handle, now);
	pump(now);
	pump(now);
	pump(now);
	assert_true(disco_tick(nodes[0].d, now + MS) > 0);
	/* Heartbeats stop with the traffic; after the idle time the peer leaves the list. */
	qn = 0;
	assert_int_equal(disco_tick(nodes[0].d, now + DISCO_IDLE_NS), 0);
	assert_int_equal(disco_tick(nodes[1].d, now + DISCO_IDLE_NS), 0);
	assert_int_equal(qn, 0);
	assert_false(nodes[0].has_path); /* the trust ran out long ago */
	assert_int_equal(nodes[0].d->n_active, 0);
}

/*
 * Traffic for 10 s, then none: heartbeats flow both ways meanwhile, yet they do not keep
 * each other going; once idle, a minute of ticks sends nothing.
 */
static void test_idle_with_heartbeats(void **state)
{
	uint64_t t, start = 10 * MS, quiet = start + 10 * DISCO_NS;
	unsigned before;

	(void)state;
	introduce(start);
	nodes[0].last_tx = start;
	disco_peer_active(nodes[0].d, &nodes[0].handle, start);
	for (t = start; t < quiet + DISCO_IDLE_NS + 2 * DISCO_NS; t += DISCO_NS / 2) {
		if (t < quiet)
			nodes[0].last_tx = t;
		disco_tick(nodes[0].d, t);
		disco_tick(nodes[1].d, t);
		pump(t);
		if (t < quiet)
			assert_true(nodes[0].has_path);
	}
	assert_int_equal(nodes[0].d->n_active, 0);
	assert_int_equal(nodes[1].d->n_active, 0);
	before = direct_sent + relayed;
	for (; t < quiet + 3 * DISCO_IDLE_NS; t += DISCO_NS) {
		assert_int_equal(disco_tick(nodes[0].d, t), 0);
		assert_int_equal(disco_tick(nodes[1].d, t), 0);
	}
	assert_int_equal(direct_sent + relayed, before);
}

/* Pongs nobody asked for, from the wrong place or sealed by a stranger change nothing. */
static void test_spoofed_pong(void **state)
{
	struct disco_msg m = {.type = DISCO_PONG};
	uint8_t buf[DISCO_MSG_MAX], stranger_priv[32], stranger_pub[32], shared[32];
	struct disco_stats ds;
	struct endpoint other;
	unsigned pings = 0;
	int len;

	(void)state;
	introduce(10 * MS);
	nodes[0].last_tx = 10 * MS;
	disco_peer_active(nodes[0].d, &nodes[0].handle, 10 * MS);
	/* A pong for a txid never sent, sealed by B, from B's address. */
	ep(&m.observed, "192.0.2.10:41641");
	memset(m.txid, 0x77, sizeof(m.txid));
	len = disco_msg_seal(buf, sizeof(buf), &m, nodes[1].pub, nodes[0].d->active->shared);
	assert_true(len > 0);
	disco_rx(nodes[0].d, buf, (size_t)len, &nodes[1].lan, 11 * MS);
	/* The right txid (copied from the ping in flight) but from another address. */
	for (unsigned i = 0; i < qn; i++) {
		struct disco_msg ping;

		if (endpoint_is_handle(&q[i].to) ||
		    disco_msg_open(&ping, q[i].d, q[i].len, nodes[0].d->active->shared) < 0)
			continue;
		pings++;
		memcpy(m.txid, ping.txid, DISCO_TXID_LEN);
		len =
		    disco_msg_seal(buf, sizeof(buf), &m, nodes[1].pub, nodes[0].d->active->shared);
		ep(&other, "198.51.100.99:41641");
		disco_rx(nodes[0].d, buf, (size_t)len, &other, 11 * MS);
		/* And sealed by a stranger who claims B's key: it does not open. */
		assert_int_equal(x25519_private_generate(stranger_priv), 0);
		assert_int_equal(x25519_public_from_private(stranger_pub, stranger_priv), 0);
		assert_int_equal(disco_msg_shared(shared, stranger_priv, nodes[0].pub), 0);
		len = disco_msg_seal(buf, sizeof(buf), &m, nodes[1].pub, shared);
		disco_rx(nodes[0].d, buf, (size_t)len, &q[i].to, 11 * MS);
		/* Its own key: unknown. */
		len = disco_msg_seal(buf, sizeof(buf), &m, stranger_pub, shared);
		disco_rx(nodes[0].d, buf, (size_t)len, &q[i].to, 11 * MS);
	}
	assert_int_equal(pings, 1);
	disco_stats_get(nodes[0].d, &ds);
	assert_int_equal(ds.rx_pong_spoofed, 2); /* the unknown txid, the other address */
	assert_int_equal(ds.rx_bad, 1);
	assert_int_equal(ds.rx_unknown, 1);
	assert_false(nodes[0].has_path);
	assert_int_equal(nodes[0].path_calls, 0);
	assert_int_equal(nodes[0].n_verified, 0);
	qn = 0;
}

/*
 * What proves an address the peer's (ops.addr_verified): an authentic ping from it, a
 * pong to our ping there. Nothing relayed does (no address), and nothing before UDP works.
 */
static void test_verified(void **state)
{
	(void)state;
	udp_ok = false;
	introduce(10 * MS);
	nodes[0].last_tx = 10 * MS;
	disco_peer_active(nodes[0].d, &nodes[0].handle, 10 * MS);
	pump(11 * MS);
	pump(12 * MS);
	assert_int_equal(disco_ping(nodes[0].d, &nodes[0].handle, 600 * MS), 0);
	pump(601 * MS);
	pump(602 * MS);
	assert_int_equal(nodes[0].pongs_relay, 1);
	assert_int_equal(nodes[0].n_verified + nodes[1].n_verified, 0);
	/* UDP works: B's ping back from its address, A's pong there. */
	udp_ok = true;
	nodes[0].last_tx = 5 * DISCO_NS;
	disco_tick(nodes[0].d, 6 * DISCO_NS);
	pump(6 * DISCO_NS + 1 * MS);
	pump(6 * DISCO_NS + 2 * MS);
	pump(6 * DISCO_NS + 3 * MS);
	assert_true(nodes[0].has_path);
	assert_true(nodes[0].n_verified >= 1);
	assert_true(endpoint_equal(&nodes[0].verified, &nodes[1].mapped));
	assert_true(nodes[1].n_verified >= 1);
	assert_true(endpoint_equal(&nodes[1].verified, &nodes[0].mapped));
}

/* A flood of (authentic) pings from one source: at most the burst is answered. */
static void test_ping_flood(void **state)
{
	struct disco_msg m = {.type = DISCO_PING};
	uint8_t buf[DISCO_MSG_MAX];
	struct disco_stats ds;
	int len;

	(void)state;
	introduce(10 * MS);
	memcpy(m.node_key, nodes[1].node_key, 32);
	len = disco_msg_seal(buf, sizeof(buf), &m, nodes[1].pub,
			     peer_by_handle(nodes[0].d, &nodes[0].handle)->shared);
	assert_true(len > 0);
	for (int i = 0; i < 1000; i++)
		disco_rx(nodes[0].d, buf, (size_t)len, &nodes[1].mapped, 20 * MS);
	disco_stats_get(nodes[0].d, &ds);
	assert_int_equal(ds.rx_ping, 1000);
	assert_int_equal(ds.tx_pong, DISCO_PING_BURST);
	assert_int_equal(ds.rx_ping_limited, 1000 - DISCO_PING_BURST);
	/* A second later, DISCO_PING_RATE more. */
	for (int i = 0; i < 1000; i++)
		disco_rx(nodes[0].d, buf, (size_t)len, &nodes[1].mapped, 20 * MS + DISCO_NS);
	disco_stats_get(nodes[0].d, &ds);
	assert_int_equal(ds.tx_pong, DISCO_PING_BURST + DISCO_PING_RATE);
	/* A ping naming another node key is not answered. */
	memset(m.node_key, 0x99, 32);
	len = disco_msg_seal(buf, sizeof(buf), &m, nodes[1].pub,
			     peer_by_handle(nodes[0].d, &nodes[0].handle)->shared);
	disco_rx(nodes[0].d, buf, (size_t)len, &nodes[1].lan, 30 * DISCO_NS);
	disco_stats_get(nodes[0].d, &ds);
	assert_int_equal(ds.rx_ping_wrong_key, 1);
	assert_int_equal(ds.tx_pong, DISCO_PING_BURST + DISCO_PING_RATE);
	qn = 0;
}

/* The choice: lowest round trip less the LAN / IPv6 bonus, with hysteresis. */
static void test_choice(void **state)
{
	struct peer *p;
	struct endpoint c[3];
	uint64_t now = 100 * MS;

	(void)state;
	ep(&c[0], "203.0.113.5:1");
	ep(&c[1], "198.18.1.5:1");
	ep(&c[2], "[2001:db8::5]:1");
	introduce(now);
	assert_int_equal(disco_peer_set(nodes[0].d, &nodes[0].handle, nodes[1].pub,
					nodes[1].node_key, c, 3, now),
			 0);
	p = peer_by_handle(nodes[0].d, &nodes[0].handle);
	assert_non_null(p);
	/* Public 8 ms (+5 slack: 13), LAN 10 ms (15 x0.7 = 10.5): the LAN wins. */
	p->cands[0].pong_ns = now, p->cands[0].rtt_ns = 8 * MS;
	p->cands[1].pong_ns = now, p->cands[1].rtt_ns = 10 * MS;
	best_update(nodes[0].d, p, now);
	assert_int_equal(p->best, 1);
	/* IPv6 at 6 ms (11 x0.9 = 9.9) is better, but not by a third: LAN stays. */
	p->cands[2].pong_ns = now, p->cands[2].rtt_ns = 6 * MS;
	best_update(nodes[0].d, p, now);
	assert_int_equal(p->best, 1);
	/* At 1 ms (5.4) it is: it takes over, and the glue hears of it. */
	p->cands[2].rtt_ns = 1 * MS;
	best_update(nodes[0].d, p, now);
	assert_int_equal(p->best, 2);
	assert_true(endpoint_equal(&nodes[0].path, &c[2]));
	/* New netmap candidates keep what was measured (the best stays the best). */
	assert_int_equal(disco_peer_set(nodes[0].d, &nodes[0].handle, nodes[1].pub,
					nodes[1].node_key, &c[1], 2, now),
			 0);
	assert_int_equal(p->n_cands, 2);
	assert_true(endpoint_equal(&p->cands[p->best].ep, &c[2]));
	/* A new disco key (the peer restarted): nothing is trusted any more. */
	assert_int_equal(disco_peer_set(nodes[0].d, &nodes[0].handle, nodes[0].pub,
					nodes[1].node_key, c, 3, now),
			 0);
	assert_false(nodes[0].has_path);
	assert_int_equal(p->best, -1);
	/* A low-order key is refused. */
	{
		uint8_t zero[32] = {0};

		assert_int_equal(disco_peer_set(nodes[0].d, &nodes[0].handle, zero,
						nodes[1].node_key, c, 3, now),
				 -EINVAL);
	}
	disco_peer_remove(nodes[0].d, &nodes[0].handle);
	disco_peer_remove(nodes[0].d, &nodes[0].handle);
	assert_int_equal(hmap_count(&nodes[0].d->by_id), 0);
	assert_int_equal(hmap_count(&nodes[0].d->by_key), 0);
}

/*
 * Two paths of about the same round trip, IPv4 and IPv6 (a public host on both): IPv6
 * (the bonus) whichever answered first, and IPv4 takes over only when clearly faster.
 */
static void test_prefer_ipv6(void **state)
{
	struct endpoint c[2];
	struct peer *p;
	uint64_t now = 100 * MS;

	(void)state;
	ep(&c[0], "203.0.113.5:1");
	ep(&c[1], "[2001:db8::5]:1");
	introduce(now);
	assert_int_equal(disco_peer_set(nodes[0].d, &nodes[0].handle, nodes[1].pub,
					nodes[1].node_key, c, 2, now),
			 0);
	p = peer_by_handle(nodes[0].d, &nodes[0].handle);
	assert_non_null(p);
	/* IPv4's pong first (0.2 ms): the only path. */
	p->cands[0].pong_ns = now, p->cands[0].rtt_ns = 200000;
	best_update(nodes[0].d, p, now);
	assert_int_equal(p->best, 0);
	/* IPv6's a little later, its round trip 2 ms (jitter): IPv6 takes over. */
	p->cands[1].pong_ns = now + MS, p->cands[1].rtt_ns = 2 * MS;
	best_update(nodes[0].d, p, now + MS);
	assert_int_equal(p->best, 1);
	assert_true(endpoint_equal(&nodes[0].path, &c[1]));
	/* Measured again: IPv4 a little faster still does not take it back (no flapping). */
	p->cands[0].rtt_ns = 100000;
	best_update(nodes[0].d, p, now + 2 * MS);
	assert_int_equal(p->best, 1);
	/* The other order: IPv6 first, IPv4 a little faster later: IPv6 stays. */
	p->best = -1;
	p->cands[0].pong_ns = 0;
	best_update(nodes[0].d, p, now + 3 * MS);
	assert_int_equal(p->best, 1);
	p->cands[0].pong_ns = now + 3 * MS;
	best_update(nodes[0].d, p, now + 3 * MS);
	assert_int_equal(p->best, 1);
	/* IPv6 clearly slower (40 ms, IPv4 0.1 ms): IPv4 takes over. */
	p->cands[1].rtt_ns = 40 * MS;
	best_update(nodes[0].d, p, now + 4 * MS);
	assert_int_equal(p->best, 0);
	assert_true(endpoint_equal(&nodes[0].path, &c[0]));
}

/* A user's ping: through the relay while not direct, then on the direct path. */
static void test_user_ping(void **state)
{
	uint64_t now = 10 * MS;

	(void)state;
	udp_ok = false;
	introduce(now);
	assert_int_equal(disco_ping(nodes[0].d, &nodes[0].handle, now), 0);
	pump(now + 5 * MS);
	pump(now + 10 * MS);
	assert_int_equal(nodes[0].pongs_relay, 1);
	assert_int_equal(nodes[0].pongs_direct, 0);
	udp_ok = true;
	assert_int_equal(disco_ping(nodes[0].d, &nodes[0].handle, now + 20 * MS), 0);
	pump(now + 21 * MS);
	pump(now + 22 * MS);
	pump(now + 23 * MS);
	assert_true(nodes[0].has_path);
	assert_int_equal(nodes[0].pongs_direct, 1);
	/* Direct now: the next one goes only there. */
	relayed = 0;
	assert_int_equal(disco_ping(nodes[0].d, &nodes[0].handle, now + 30 * MS), 0);
	assert_int_equal(relayed, 0);
	pump(now + 31 * MS);
	assert_int_equal(nodes[0].pongs_direct, 2);
	assert_int_equal(disco_ping(nodes[0].d, &nodes[1].handle, now), -ENOENT);
}

/*
 * Hard NATs on both sides for the birthday tests: node i's NAT maps each destination to
 * its own port in [lo, lo + span), a fixed function of the destination (so the outcome
 * does not depend on the engine's random probe order), and lets in only a datagram that
 * answers a mapping it holds: from the destination that mapping was made for, to its port.
 */
static struct hard_nat {
	uint32_t lo, span;
	uint64_t seed;
	uint8_t opened[65536 / 8]; /* destination ports (at the other NAT) mapped */
} hn[2];

static uint16_t hn_port(int i, uint16_t dport)
{
	return (uint16_t)(hn[i].lo + hash_mix64(hn[i].seed ^ dport) % hn[i].span);
}

static bool hn_opened(int i, uint16_t dport)
{
	return hn[i].opened[dport / 8] & (1u << (dport % 8));
}

/* pump() through the two hard NATs; node i's NAT address is nodes[i].mapped's. */
static void pump_hard(uint64_t now)
{
	for (unsigned i = 0; i < qn; i++) {
		struct sent *s = &q[i];
		struct node *from = &nodes[s->from], *to = &nodes[!s->from];
		uint16_t dport = ntohs(s->to.in4.sin_port), sport;
		struct endpoint src;

		if (endpoint_is_handle(&s->to)) {
			disco_rx(to->d, s->d, s->len, &to->handle, now);
			continue;
		}
		if (s->to.in4.sin_addr.s_addr != to->mapped.in4.sin_addr.s_addr)
			continue; /* a LAN address of the other site: not routed */
		sport = hn_port(s->from, dport);
		hn[s->from].opened[dport / 8] |= (uint8_t)(1u << (dport % 8));
		if (!hn_opened(!s->from, sport) || hn_port(!s->from, sport) != dport)
			continue;
		src = from->mapped;
		src.in4.sin_port = htons(sport);
		disco_rx(to->d, s->d, s->len, &src, now);
	}
	qn = 0;
}

/* Both nodes behind hard NATs, each reporting its NAT's address at a port of its range. */
static void hard_setup(uint32_t lo, uint32_t span, uint64_t seed)
{
	memset(hn, 0, sizeof(hn));
	for (int i = 0; i < 2; i++) {
		char s[64];

		hn[i].lo = lo;
		hn[i].span = span;
		hn[i].seed = seed + (uint64_t)i;
		snprintf(s, sizeof(s), "198.18.%d.2:41641", i + 1);
		ep(&nodes[i].lan, s);
		snprintf(s, sizeof(s), "192.0.2.%d:%u", 21 + i, hn_port(i, 3478));
		ep(&nodes[i].mapped, s);
	}
	introduce(MS);
}

/* Both flows active from `start` for `len`, ticking every 10 ms. */
static void hard_run(uint64_t start, uint64_t len)
{
	for (uint64_t t = start; t < start + len; t += 10 * MS) {
		for (int i = 0; i < 2; i++) {
			nodes[i].last_tx = t;
			if (t == start)
				disco_peer_active(nodes[i].d, &nodes[i].handle, t);
			disco_tick(nodes[i].d, t);
		}
		pump_hard(t);
	}
}

/*
 * NATs that keep each node's ports in one aligned block of 256 (a CGNAT port block):
 * each side probes the other's whole block once, the two sets of mappings meet, and
 * both sides trust the path the crossing found. Only when both report varying mappings.
 */
static void test_birthday_block(void **state)
{
	struct disco_peer_status st[2];
	struct disco_stats ds;

	(void)state;
	/* A seed whose two mappings meet (about 63% do: a random map with a fixed point). */
	hard_setup(40192, 256, 3);
	/* Only one side reports a hard NAT: no birthday probing. */
	disco_self_mapping_varies(nodes[0].d, true);
	disco_peer_mapping_varies(nodes[1].d, &nodes[1].handle, true);
	hard_run(10 * MS, 2 * DISCO_NS);
	for (int i = 0; i < 2; i++) {
		disco_stats_get(nodes[i].d, &ds);
		assert_int_equal(ds.tx_birthday, 0);
		assert_false(nodes[i].has_path);
	}
	/* Both do. */
	disco_self_mapping_varies(nodes[1].d, true);
	disco_peer_mapping_varies(nodes[0].d, &nodes[0].handle, true);
	hard_run(10 * DISCO_NS, 2 * DISCO_NS);
	for (int i = 0; i < 2; i++) {
		assert_true(nodes[i].has_path);
		assert_true(nodes[i].path.in4.sin_addr.s_addr ==
			    nodes[!i].mapped.in4.sin_addr.s_addr);
		assert_int_equal(
		    disco_peer_status_get(nodes[i].d, &nodes[i].handle, 12 * DISCO_NS, &st[i]), 0);
		assert_int_equal(st[i].state, DISCO_STATE_DIRECT);
		assert_int_equal(st[i].birthday_attempts, 1);
		/* The budget: one probe per port of the block, at most. */
		assert_true(st[i].birthday_probes <= DISCO_BIRTHDAY_PORTS);
	}
	/* One side's probe met the other's mapping and got the pong. */
	assert_true(st[0].birthday_hits + st[1].birthday_hits >= 1);
	disco_stats_get(nodes[0].d, &ds);
	assert_int_equal(ds.rx_pong_spoofed, 0);
}

/*
 * NATs that take any port at random: the mappings do not meet, the peers stay on the
 * relay, and the attempts back off (DISCO_RETRY_NS doubled up to DISCO_BIRTHDAY_MAX_NS).
 */
static void test_birthday_random(void **state)
{
	struct disco_peer_status st;
	struct disco_stats ds;

	(void)state;
	hard_setup(1024, 64512, 7);
	for (int i = 0; i < 2; i++) {
		disco_self_mapping_varies(nodes[i].d, true);
		disco_peer_mapping_varies(nodes[i].d, &nodes[i].handle, true);
	}
	hard_run(10 * MS, 600 * DISCO_NS);
	for (int i = 0; i < 2; i++) {
		assert_false(nodes[i].has_path);
		assert_int_equal(
		    disco_peer_status_get(nodes[i].d, &nodes[i].handle, 600 * DISCO_NS, &st), 0);
		assert_int_equal(st.birthday_hits, 0);
		/* Starts at 0, 5, 15, 35, 75, 155, 315, 475 s. */
		assert_int_equal(st.birthday_attempts, 8);
		assert_true(st.birthday_probes <= 8 * DISCO_BIRTHDAY_PORTS);
		assert_true(st.birthday_probes >= 8 * (DISCO_BIRTHDAY_PORTS - 1));
	}
	disco_stats_get(nodes[0].d, &ds);
	assert_int_equal(ds.birthday_attempts, 8);
}

/*
 * Both behind NATs that let in only answers (easy ones: hard_setup's NATs with a range of
 * one port, the same mapping towards every destination): A's first ping dies at B's NAT
 * (B has sent nothing yet); B, called through the relay (delivered at 30 ms), pings back
 * and gets in through the mapping A's ping opened. A pings back at once, though its own
 * ping left moments ago: both sides are direct a round trip after B's ping, not when B
 * next pings (its check of a silent path, ~0.5 s later, or a heartbeat).
 */
static void test_direct_both_filtered(void **state)
{
	struct disco_peer_status st[2];

	(void)state;
	hard_setup(41641, 1, 0);
	nodes[0].last_tx = 10 * MS;
	disco_peer_active(nodes[0].d, &nodes[0].handle, 10 * MS);
	pump_hard(30 * MS);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(
		    disco_peer_status_get(nodes[i].d, &nodes[i].handle, 30 * MS, &st[i]), 0);
		assert_int_equal(st[i].state, DISCO_STATE_DIRECT);
		assert_true(endpoint_equal(&st[i].best, &nodes[!i].mapped));
	}
	assert_int_equal(st[0].to_direct_ns, 20 * MS);
}

/*
 * A side that holds a port mapping is no hard NAT, whatever STUN says of its other flows
 * (peers reach it at the mapping's port): it starts no birthday attempt, and one under way
 * stops when the mapping comes (the peer's end stops once the node's report reaches it).
 */
static void test_birthday_port_mapped(void **state)
{
	struct disco_stats ds[2];
	uint64_t sent[2];

	(void)state;
	hard_setup(1024, 64512, 7);
	for (int i = 0; i < 2; i++) {
		disco_self_mapping_varies(nodes[i].d, true);
		disco_peer_mapping_varies(nodes[i].d, &nodes[i].handle, true);
	}
	/* Node 0 holds a mapping but its peer still takes it for hard: only the peer probes. */
	disco_self_port_mapped(nodes[0].d, true);
	hard_run(10 * MS, 2 * DISCO_NS);
	disco_stats_get(nodes[0].d, &ds[0]);
	assert_int_equal(ds[0].tx_birthday, 0);
	assert_int_equal(ds[0].birthday_attempts, 0);
	/* Node 0's report reaches its peer (not hard any more): neither probes. */
	disco_peer_mapping_varies(nodes[1].d, &nodes[1].handle, false);
	for (int i = 0; i < 2; i++) {
		disco_stats_get(nodes[i].d, &ds[i]);
		sent[i] = ds[i].tx_birthday;
	}
	hard_run(10 * DISCO_NS, 20 * DISCO_NS);
	for (int i = 0; i < 2; i++) {
		disco_stats_get(nodes[i].d, &ds[i]);
		assert_int_equal(ds[i].tx_birthday, sent[i]);
	}

	/* The mapping is lost: both are hard again and both probe. */
	disco_self_port_mapped(nodes[0].d, false);
	disco_peer_mapping_varies(nodes[1].d, &nodes[1].handle, true);
	hard_run(40 * DISCO_NS, 60 * MS);
	for (int i = 0; i < 2; i++) {
		disco_stats_get(nodes[i].d, &ds[i]);
		assert_true(ds[i].birthday_attempts >= 1);
		/* One burst or two of an attempt: it is under way. */
		assert_true(ds[i].tx_birthday > sent[i]);
		assert_true(ds[i].tx_birthday - sent[i] < DISCO_BIRTHDAY_PORTS);
		sent[i] = ds[i].tx_birthday;
	}
	/* It comes back mid-attempt: the rest of the attempt is not sent, at either end. */
	disco_self_port_mapped(nodes[0].d, true);
	disco_peer_mapping_varies(nodes[1].d, &nodes[1].handle, false);
	hard_run(40 * DISCO_NS + 60 * MS, 20 * DISCO_NS);
	for (int i = 0; i < 2; i++) {
		disco_stats_get(nodes[i].d, &ds[i]);
		assert_int_equal(ds[i].tx_birthday, sent[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_direct, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_direct_both_filtered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_udp_blocked, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_trust_and_fallback, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reprobe, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_new_candidate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tx_after_now, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_idle_with_heartbeats, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_spoofed_pong, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verified, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ping_flood, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_choice, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prefer_ipv6, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_user_ping, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_birthday_block, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_birthday_random, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_birthday_port_mapped, setup, teardown),
	};

	assert_int_equal(crypto_init(), 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
