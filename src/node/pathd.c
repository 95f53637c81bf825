/* SPDX-License-Identifier: MIT */
/*
 * trellisd's path discovery glue (pathd.h). Everything runs on the loop thread: one
 * async wake (the disco mailbox filled, a magicsock event) drains both, then the engine
 * runs what is due and the one timer is re-armed at its next deadline (none while every
 * peer is idle: an idle node has no disco wakeups).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/pkt.h"
#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "net/magicsock.h"
#include "net/nat64.h"
#include "node/netmap_apply.h"
#include "node/pathd.h"

#define POOL_PKTS 256 /* disco datagrams in flight (each goes out at once) */
/* A pool that grew (a burst of pings to many peers) gives its pages back (pkt_trimmer). */
#define POOL_TRIM_NS (10ULL * NSEC_PER_SEC)
#define TAKE_BATCH 32

struct known {
	struct endpoint handle;
	uint64_t seen; /* the pathd_netmap round that last listed it */
};

struct pathd {
	struct loop *loop;
	struct magicsock *ms;
	struct disco *disco;
	struct pkt_pool *pool;
	struct pkt_trimmer trimmer;
	struct loop_timer trim_timer; /* at the trimmer's deadline, none while idle */
	struct loop_async wake;
	struct loop_timer timer;
	/* Handles handed to the engine, to forget those the netmap dropped. */
	struct known *known;
	unsigned n_known, cap_known;
	uint64_t round;
	uint64_t tx_drops; /* no buffer for a disco datagram */
	/* User pings waiting for their pong (pathd_ping). */
	struct user_ping {
		struct endpoint handle;
		pathd_ping_fn fn;
		void *ctx;
		uint64_t deadline_ns;
	} pings[PATHD_PINGS_MAX];
	unsigned n_pings;
	struct loop_timer ping_timer;
};

/* --- engine -> world --- */

static void op_send(void *ctx, const struct endpoint *to, const uint8_t *d, size_t len)
{
	struct pathd *pd = ctx;
	struct pkt *p;

	if (pkt_pool_get(pd->pool, &p, 1) != 1 || len > pkt_tailroom(p)) {
		if (p)
			pkt_free(&p, 1);
		pd->tx_drops++;
		return;
	}
	memcpy(p->data, d, len);
	p->len = (uint32_t)len;
	p->ep = *to;
	magicsock_send_raw(pd->ms, &p, 1);
}

static void op_path_set(void *ctx, const struct endpoint *peer, const struct endpoint *direct,
			uint64_t trust_until_ns)
{
	struct pathd *pd = ctx;
	char buf[ENDPOINT_STR_MAX];

	if (magicsock_handle_disco(pd->ms, peer, direct, trust_until_ns) < 0)
		return;
	if (direct)
		log_debug("disco: peer handle %u: direct %s", peer->handle.id,
			  endpoint_format(direct, buf, sizeof(buf)));
	else
		log_debug("disco: peer handle %u: relay", peer->handle.id);
}

/* Datagrams from it are the peer's handle's, whichever path each end chose (magicsock.h). */
static void op_addr_verified(void *ctx, const struct endpoint *peer, const struct endpoint *addr)
{
	struct pathd *pd = ctx;
	int r = magicsock_handle_alias_add(pd->ms, peer, addr);

	if (r < 0 && r != -ENOENT)
		log_ratelimited(LOG_LEVEL_WARN, "disco: peer handle %u: alias: %s", peer->handle.id,
				strerror(-r));
}

static void rearm(struct pathd *pd, uint64_t now);

/* Removes ping i and tells its owner (via NULL: timed out). */
static void ping_done(struct pathd *pd, unsigned i, const struct endpoint *via, uint64_t rtt)
{
	struct user_ping up = pd->pings[i];

	pd->pings[i] = pd->pings[--pd->n_pings];
	up.fn(up.ctx, via, rtt);
}

static void op_pong(void *ctx, const struct endpoint *peer, const struct endpoint *via,
		    uint64_t rtt_ns)
{
	struct pathd *pd = ctx;

	for (unsigned i = 0; i < pd->n_pings; i++) {
		if (endpoint_equal(&pd->pings[i].handle, peer)) {
			ping_done(pd, i, via, rtt_ns);
			return;
		}
	}
}

static void ping_rearm(struct pathd *pd)
{
	uint64_t next = TIME_NEVER;

	for (unsigned i = 0; i < pd->n_pings; i++)
		next = MIN(next, pd->pings[i].deadline_ns);
	if (pd->ping_timer.armed)
		loop_timer_disarm(pd->loop, &pd->ping_timer);
	if (next != TIME_NEVER)
		loop_timer_arm(pd->loop, &pd->ping_timer, next);
}

static void ping_timer_cb(struct loop_timer *t)
{
	struct pathd *pd = container_of(t, struct pathd, ping_timer);
	uint64_t now = time_now_ns();

	for (unsigned i = 0; i < pd->n_pings;) {
		if (pd->pings[i].deadline_ns <= now)
			ping_done(pd, i, NULL, 0);
		else
			i++;
	}
	ping_rearm(pd);
}

int pathd_ping(struct pathd *pd, const struct endpoint *handle, pathd_ping_fn fn, void *ctx)
{
	uint64_t now = time_now_ns();
	struct disco_peer_status st;

	if (disco_peer_status_get(pd->disco, handle, now, &st) < 0)
		return -ENOENT;
	if (pd->n_pings == PATHD_PINGS_MAX)
		return -EBUSY;
	pd->pings[pd->n_pings++] = (struct user_ping){
	    .handle = *handle, .fn = fn, .ctx = ctx, .deadline_ns = now + PATHD_PING_TIMEOUT_NS};
	disco_ping(pd->disco, handle, now);
	ping_rearm(pd);
	rearm(pd, now);
	return 0;
}

void pathd_ping_cancel(struct pathd *pd, void *ctx)
{
	for (unsigned i = 0; i < pd->n_pings;) {
		if (pd->pings[i].ctx == ctx)
			pd->pings[i] = pd->pings[--pd->n_pings];
		else
			i++;
	}
	ping_rearm(pd);
}

static uint64_t op_last_tx(void *ctx, const struct endpoint *peer)
{
	struct pathd *pd = ctx;

	return magicsock_handle_last_tx(pd->ms, peer);
}

/* --- world -> engine --- */

static void rearm(struct pathd *pd, uint64_t now)
{
	uint64_t next = disco_tick(pd->disco, now);

	if (pd->timer.armed)
		loop_timer_disarm(pd->loop, &pd->timer);
	if (next)
		loop_timer_arm(pd->loop, &pd->timer, next);
	/* Every send runs here (the engine ticks after each event), so growth is seen. */
	loop_timer_set(pd->loop, &pd->trim_timer, pkt_trimmer_run(&pd->trimmer, now));
}

static void trim_timer_cb(struct loop_timer *t)
{
	struct pathd *pd = container_of(t, struct pathd, trim_timer);

	loop_timer_set(pd->loop, t, pkt_trimmer_run(&pd->trimmer, time_now_ns()));
}

static void drain(struct pathd *pd)
{
	struct magicsock_event ev[TAKE_BATCH];
	struct pkt *p[TAKE_BATCH];
	uint64_t now = time_now_ns();
	unsigned n;

	while ((n = magicsock_box_take(pd->ms, MAGICSOCK_BOX_DISCO, p, ARRAY_SIZE(p)))) {
		for (unsigned i = 0; i < n; i++)
			disco_rx(pd->disco, p[i]->data, p[i]->len, &p[i]->ep, now);
		pkt_free(p, n);
	}
	while ((n = magicsock_events_take(pd->ms, ev, ARRAY_SIZE(ev)))) {
		for (unsigned i = 0; i < n; i++) {
			if (ev[i].kind == MAGICSOCK_EVENT_ACTIVE)
				disco_peer_active(pd->disco, &ev[i].handle, now);
			else
				disco_peer_silent(pd->disco, &ev[i].handle, now);
		}
	}
	rearm(pd, now);
}

static void wake_cb(struct loop_async *a)
{
	drain(container_of(a, struct pathd, wake));
}

static void timer_cb(struct loop_timer *t)
{
	struct pathd *pd = container_of(t, struct pathd, timer);

	rearm(pd, time_now_ns());
}

/* Any thread: the magicsock's events listener and the disco mailbox's notify. */
static void notify(void *ctx)
{
	struct pathd *pd = ctx;

	loop_async_send(&pd->wake);
}

void pathd_disco_notify(void *ctx)
{
	notify(ctx);
}

/* --- netmap --- */

/* 0 (known already), 1 (new) or -ENOMEM. */
static int known_add(struct pathd *pd, const struct endpoint *h)
{
	struct known *k;

	for (unsigned i = 0; i < pd->n_known; i++) {
		if (endpoint_equal(&pd->known[i].handle, h)) {
			pd->known[i].seen = pd->round;
			return 0;
		}
	}
	if (pd->n_known == pd->cap_known) {
		unsigned cap = pd->cap_known ? pd->cap_known * 2 : 16;

		k = realloc(pd->known, cap * sizeof(*k));
		if (!k)
			return -ENOMEM;
		pd->known = k;
		pd->cap_known = cap;
	}
	pd->known[pd->n_known++] = (struct known){.handle = *h, .seen = pd->round};
	return 1;
}

/*
 * The peer of handle h left path discovery: the engine forgets it and its handle follows
 * the magicsock's plain rule again (else it stayed "kept", on the relay for good), from the
 * netmap's address as netmap_apply sets it (n NULL: the peer is gone, its handle freed).
 */
static void peer_release(struct pathd *pd, const struct endpoint *h, const struct netmap_node *n)
{
	disco_peer_remove(pd->disco, h);
	if (magicsock_handle_release(pd->ms, h) < 0 || !n)
		return;
	if (n->n_endpoints && endpoint_is_set(&n->endpoints[0]))
		magicsock_handle_set_path(pd->ms, h, &n->endpoints[0]);
}

/* Takes h off the known list; false when it was not on it. */
static bool known_del(struct pathd *pd, const struct endpoint *h)
{
	for (unsigned i = 0; i < pd->n_known; i++) {
		if (endpoint_equal(&pd->known[i].handle, h)) {
			pd->known[i] = pd->known[--pd->n_known];
			return true;
		}
	}
	return false;
}

/*
 * A peer's candidates as we can reach them: on an IPv6-only link with a NAT64, its IPv4
 * ones through the NAT64 (src/net/nat64.h). Disco then pings, and the magicsock sends to,
 * the synthesized IPv6 address, and the answers come from that same address: the path
 * layer never sees the IPv4 form, so nothing per packet translates.
 */
static const struct endpoint *candidates(const struct netmap_node *n, struct endpoint *buf)
{
	for (unsigned i = 0; i < n->n_endpoints && i < NETMAP_MAX_ENDPOINTS; i++)
		nat64_endpoint_route(&n->endpoints[i], &buf[i]);
	return buf;
}

void pathd_netmap(struct pathd *pd, const struct netmap *nm, const struct netmap_apply *na,
		  const uint8_t node_pub[NETMAP_KEY_LEN])
{
	struct endpoint cands[NETMAP_MAX_ENDPOINTS];
	uint64_t now = time_now_ns();
	unsigned i, k;

	pd->round++;
	disco_self_set(pd->disco, node_pub, nm->self.endpoints, nm->self.n_endpoints);
	/* The server echoes what we reported (the STUN rounds'): birthday probing needs both. */
	disco_self_mapping_varies(pd->disco, nm->self.mapping_varies);
	for (i = 0; i < nm->n_peers; i++) {
		const struct netmap_node *n = &nm->peers[i];
		struct disco_peer_status st;
		struct endpoint h;
		int r;

		if (netmap_apply_peer_handle(na, n->node_key, &h) < 0)
			continue;
		if (!n->has_disco_key) {
			if (known_del(pd, &h))
				peer_release(pd, &h, n);
			continue;
		}
		r = disco_peer_set(pd->disco, &h, n->disco_key, n->node_key, candidates(n, cands),
				   n->n_endpoints, now);
		if (r < 0) {
			log_ratelimited(LOG_LEVEL_WARN, "disco: peer %s: %s", n->name,
					strerror(-r));
			continue;
		}
		disco_peer_mapping_varies(pd->disco, &h, n->mapping_varies);
		r = known_add(pd, &h);
		if (r < 0) {
			disco_peer_remove(pd->disco, &h);
			continue;
		}
		/*
		 * New: the magicsock follows disco's rule for it from now. Known: the netmap may
		 * have moved the handle to the netmap's address (netmap_apply), which voids the
		 * trust; what disco chose holds until disco says otherwise.
		 */
		if (r > 0)
			magicsock_handle_disco(pd->ms, &h, NULL, 0);
		else if (disco_peer_status_get(pd->disco, &h, now, &st) == 0 && st.announced)
			magicsock_handle_disco(pd->ms, &h, &st.announced_path, st.trust_until_ns);
	}
	/* Gone from the netmap, or refused by the engine: forget it. */
	for (i = k = 0; i < pd->n_known; i++) {
		if (pd->known[i].seen == pd->round)
			pd->known[k++] = pd->known[i];
		else
			peer_release(pd, &pd->known[i].handle, NULL);
	}
	pd->n_known = k;
	rearm(pd, now);
}

void pathd_clear(struct pathd *pd)
{
	for (unsigned i = 0; i < pd->n_known; i++)
		peer_release(pd, &pd->known[i].handle, NULL);
	pd->n_known = 0;
	rearm(pd, time_now_ns());
}

void pathd_port_mapped(struct pathd *pd, bool mapped)
{
	disco_self_port_mapped(pd->disco, mapped);
	rearm(pd, time_now_ns());
}

int pathd_peer_status(const struct pathd *pd, const struct endpoint *handle,
		      struct disco_peer_status *ret)
{
	return disco_peer_status_get(pd->disco, handle, time_now_ns(), ret);
}

void pathd_stats_get(const struct pathd *pd, struct disco_stats *ret)
{
	disco_stats_get(pd->disco, ret);
}

void pathd_public_key(const struct pathd *pd, uint8_t ret[NETMAP_KEY_LEN])
{
	disco_public_get(pd->disco, ret);
}

/* --- lifetime --- */

int pathd_new(struct loop *loop, struct magicsock *ms, const uint8_t *disco_priv,
	      struct pathd **ret)
{
	struct disco_ops ops = {.send = op_send,
				.path_set = op_path_set,
				.pong = op_pong,
				.last_tx_ns = op_last_tx,
				.addr_verified = op_addr_verified};
	uint8_t priv[NETMAP_KEY_LEN];
	struct pathd *pd;
	int r = -ENOMEM;

	pd = calloc(1, sizeof(*pd));
	if (!pd)
		return -ENOMEM;
	pd->loop = loop;
	pd->ms = ms;
	pd->timer.cb = timer_cb;
	pd->timer.deadline_ns = TIME_NEVER;
	pd->ping_timer.cb = ping_timer_cb;
	pd->ping_timer.deadline_ns = TIME_NEVER;
	pd->wake.cb = wake_cb;
	pd->trim_timer.cb = trim_timer_cb;
	pd->trim_timer.deadline_ns = TIME_NEVER;
	pd->pool = pkt_pool_new(POOL_PKTS);
	if (!pd->pool)
		goto fail;
	pkt_trimmer_init(&pd->trimmer, POOL_TRIM_NS);
	pkt_trimmer_add(&pd->trimmer, pd->pool);
	if (disco_priv)
		memcpy(priv, disco_priv, sizeof(priv));
	else if ((r = x25519_private_generate(priv)) < 0)
		goto fail;
	ops.ctx = pd;
	pd->disco = disco_new(&ops, priv);
	crypto_wipe(priv, sizeof(priv));
	if (!pd->disco) {
		r = -ENOMEM;
		goto fail;
	}
	loop_async_add(loop, &pd->wake);
	magicsock_events_listen(ms, notify, pd);
	*ret = pd;
	return 0;
fail:
	pkt_pool_free(pd->pool);
	free(pd);
	return r;
}

void pathd_stop(struct pathd *pd)
{
	if (pd)
		magicsock_events_listen(pd->ms, NULL, NULL);
}

void pathd_free(struct pathd *pd)
{
	if (!pd)
		return;
	loop_async_del(&pd->wake);
	if (pd->timer.armed)
		loop_timer_disarm(pd->loop, &pd->timer);
	if (pd->ping_timer.armed)
		loop_timer_disarm(pd->loop, &pd->ping_timer);
	loop_timer_disarm(pd->loop, &pd->trim_timer);
	disco_free(pd->disco);
	free(pd->known);
	/* After the data plane and the relay client: they have returned our datagrams. */
	pkt_pool_free(pd->pool);
	free(pd);
}
