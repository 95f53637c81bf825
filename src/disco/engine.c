/* SPDX-License-Identifier: MIT */
/*
 * The path discovery engine (engine.h). Peers live in two hash tables (by handle id,
 * by disco key) and, while active, on a list that disco_tick walks: an idle peer is on
 * no list and has no deadline. Each candidate remembers its one outstanding ping (tx
 * id, time) and its last pong; the best path is recomputed on every pong and tick.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/hmap.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "disco/engine.h"

#define LIMIT_SLOTS 1024 /* source -> token bucket, by hash; collisions share a bucket */

struct cand {
	struct endpoint ep;
	bool learned; /* from call-me-maybe or a ping's source, not the netmap */
	uint8_t txid[DISCO_TXID_LEN];
	uint64_t ping_ns; /* the outstanding ping, 0: none */
	bool user_ping;	  /* it was a user's (disco_ping): report its pong */
	bool repinged;	  /* ping_rx sent it before the gap was over (once per ping) */
	uint64_t pong_ns; /* 0: never answered */
	uint64_t rtt_ns;
};

struct peer {
	struct hmap_node by_id, by_key;
	struct endpoint handle;
	bool keyed; /* in by_key under disco_pub */
	uint8_t disco_pub[DISCO_KEY_LEN];
	uint8_t shared[DISCO_KEY_LEN];
	uint8_t node_key[DISCO_KEY_LEN];
	unsigned n_cands;
	struct cand cands[DISCO_PEER_CANDIDATES];
	int best; /* index into cands, -1: none */
	/* What path_set last said: a direct path (announced_ep) trusted until trust_until_ns. */
	bool announced;
	struct endpoint announced_ep;
	uint64_t trust_until_ns;
	bool active;
	struct peer *prev, *next; /* the active list */
	uint64_t active_ns;	  /* last sign of traffic */
	uint64_t active_since_ns; /* when it last became active */
	uint64_t to_direct_ns;	  /* from then to a trusted path (0: none yet) */
	uint64_t probe_ns;	  /* last full probe, 0: none yet (or one is due now) */
	uint64_t lost_ns;	  /* a direct path was lost while active (0: found since) */
	uint64_t heartbeat_ns;
	/* A user's ping through the relay (disco_ping), 0: none. */
	uint8_t relay_txid[DISCO_TXID_LEN];
	uint64_t relay_ping_ns;
	uint64_t pings_sent, pongs_rx, pings_rx;
	bool had_direct;
	/*
	 * Birthday probing (engine.h): the attempt's address (port: its block's first), tx id
	 * and order (probe i goes to port base + (i * bd_mul + bd_add) % PORTS, a permutation
	 * as bd_mul is odd), probes left, the last burst; the next attempt not before
	 * bd_next_ns, backed off by the failures in a row.
	 */
	bool hard;
	struct endpoint bd_target;
	uint8_t bd_txid[DISCO_TXID_LEN];
	uint32_t bd_mul, bd_add;
	unsigned bd_left;
	uint64_t bd_burst_ns, bd_next_ns;
	unsigned bd_fails, bd_attempts;
	uint64_t bd_probes, bd_hits;
};

struct bucket {
	uint64_t last_ns;
	uint32_t tokens;
};

struct disco {
	struct disco_ops ops;
	uint8_t priv[DISCO_KEY_LEN], pub[DISCO_KEY_LEN];
	uint8_t node_key[DISCO_KEY_LEN];
	unsigned n_self;
	struct endpoint self[DISCO_CANDIDATES_MAX];
	bool hard;   /* our NAT maps per destination */
	bool mapped; /* ... but we hold a port mapping: peers reach us at its fixed port */
	struct hmap by_id, by_key;
	struct peer *active;
	unsigned n_active;
	uint64_t seed;
	struct bucket limit[LIMIT_SLOTS];
	struct disco_stats st;
};

const char *disco_state_name(enum disco_state s)
{
	switch (s) {
	case DISCO_STATE_IDLE:
		return "idle";
	case DISCO_STATE_PROBING:
		return "probing";
	case DISCO_STATE_DIRECT:
		return "direct";
	}
	return "?";
}

/* --- lookups --- */

static uint64_t id_hash(const struct disco *d, const struct endpoint *h)
{
	return hmap_hash(&d->by_id, &h->handle.id, sizeof(h->handle.id));
}

static struct peer *peer_by_handle(const struct disco *d, const struct endpoint *h)
{
	struct hmap_node *n;

	if (!endpoint_is_handle(h))
		return NULL;
	for (n = hmap_first_with_hash(&d->by_id, id_hash(d, h)); n; n = hmap_next_with_hash(n)) {
		struct peer *p = container_of(n, struct peer, by_id);

		if (p->handle.handle.id == h->handle.id)
			return p;
	}
	return NULL;
}

static struct peer *peer_by_key(const struct disco *d, const uint8_t *key)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&d->by_key, hmap_hash(&d->by_key, key, DISCO_KEY_LEN)); n;
	     n = hmap_next_with_hash(n)) {
		struct peer *p = container_of(n, struct peer, by_key);

		if (!memcmp(p->disco_pub, key, DISCO_KEY_LEN))
			return p;
	}
	return NULL;
}

/* --- the active list --- */

static void active_add(struct disco *d, struct peer *p, uint64_t now)
{
	p->active_ns = now;
	if (p->active)
		return;
	p->active = true;
	p->active_since_ns = now;
	p->prev = NULL;
	p->next = d->active;
	if (d->active)
		d->active->prev = p;
	d->active = p;
	d->n_active++;
}

static void active_del(struct disco *d, struct peer *p)
{
	if (!p->active)
		return;
	if (p->prev)
		p->prev->next = p->next;
	else
		d->active = p->next;
	if (p->next)
		p->next->prev = p->prev;
	p->active = false;
	p->prev = p->next = NULL;
	d->n_active--;
}

/* --- sending --- */

static void seal_send(struct disco *d, struct peer *p, const struct endpoint *to,
		      const struct disco_msg *m)
{
	uint8_t buf[DISCO_MSG_MAX];
	int len = disco_msg_seal(buf, sizeof(buf), m, d->pub, p->shared);

	if (len > 0)
		d->ops.send(d->ops.ctx, to, buf, (size_t)len);
}

static void ping_send(struct disco *d, struct peer *p, struct cand *c, uint64_t now, bool user)
{
	struct disco_msg m = {.type = DISCO_PING};

	if (crypto_random(c->txid, sizeof(c->txid)) < 0)
		return;
	memcpy(m.txid, c->txid, DISCO_TXID_LEN);
	memcpy(m.node_key, d->node_key, DISCO_KEY_LEN);
	c->ping_ns = now ? now : 1;
	c->user_ping = user;
	c->repinged = false;
	p->pings_sent++;
	d->st.tx_ping++;
	seal_send(d, p, &c->ep, &m);
}

static void cmm_send(struct disco *d, struct peer *p)
{
	struct disco_msg m = {.type = DISCO_CALL_ME_MAYBE};

	m.n_candidates = d->n_self;
	memcpy(m.candidates, d->self, d->n_self * sizeof(d->self[0]));
	d->st.tx_cmm++;
	seal_send(d, p, &p->handle, &m);
}

/* Pings every candidate not pinged lately. */
static void ping_all(struct disco *d, struct peer *p, uint64_t now)
{
	for (unsigned i = 0; i < p->n_cands; i++) {
		struct cand *c = &p->cands[i];

		if (!c->ping_ns || now - c->ping_ns >= DISCO_PING_MIN_GAP_NS)
			ping_send(d, p, c, now, false);
	}
	p->probe_ns = now ? now : 1;
}

/*
 * Pings the candidates never pinged: those the netmap just brought (the peer's address
 * changed, it roamed) or learned since, now rather than at the next round (up to
 * DISCO_RETRY_NS, or DISCO_UPGRADE_NS while a path is trusted). Once each: a ping marks it.
 */
static void ping_new(struct disco *d, struct peer *p, uint64_t now)
{
	for (unsigned i = 0; i < p->n_cands; i++)
		if (!p->cands[i].ping_ns && !p->cands[i].pong_ns)
			ping_send(d, p, &p->cands[i], now, false);
}

static bool addr_is_lan(const struct endpoint *ep);

/*
 * The block a birthday attempt probes: around the peer's first reported IPv4 address
 * that is not a LAN one (its NAT's, as STUN saw it), aligned as port blocks are.
 */
static bool birthday_target(const struct peer *p, struct endpoint *ret)
{
	for (unsigned i = 0; i < p->n_cands; i++) {
		const struct endpoint *e = &p->cands[i].ep;

		if (p->cands[i].learned || e->sa.sa_family != AF_INET || addr_is_lan(e))
			continue;
		*ret = *e;
		ret->in4.sin_port =
		    htons((uint16_t)(ntohs(e->in4.sin_port) & ~(DISCO_BIRTHDAY_PORTS - 1u)));
		return true;
	}
	return false;
}

/* The attempt's next burst: one sealed ping (one tx id) to each of the next ports. */
static void birthday_burst(struct disco *d, struct peer *p, uint64_t now)
{
	struct disco_msg m = {.type = DISCO_PING};
	uint16_t base = ntohs(p->bd_target.in4.sin_port);
	struct endpoint to = p->bd_target;
	uint8_t buf[DISCO_MSG_MAX];
	unsigned n = MIN(p->bd_left, (unsigned)DISCO_BIRTHDAY_BURST);
	int len;

	memcpy(m.txid, p->bd_txid, DISCO_TXID_LEN);
	memcpy(m.node_key, d->node_key, DISCO_KEY_LEN);
	len = disco_msg_seal(buf, sizeof(buf), &m, d->pub, p->shared);
	p->bd_burst_ns = now ? now : 1;
	for (; n && len > 0; n--) {
		unsigned i = DISCO_BIRTHDAY_PORTS - p->bd_left--;
		uint16_t port =
		    (uint16_t)(base + ((i * p->bd_mul + p->bd_add) & (DISCO_BIRTHDAY_PORTS - 1u)));

		if (!port)
			continue;
		to.in4.sin_port = htons(port);
		d->ops.send(d->ops.ctx, &to, buf, (size_t)len);
		p->bd_probes++;
		d->st.tx_birthday++;
	}
}

/*
 * Both sides are hard NATs: each maps per destination and neither holds a port mapping (a
 * mapped side is reached at its mapping's port whatever its NAT does with other flows, and
 * reports itself so: the peer's flag is what its node reported).
 */
static bool birthday_wanted(const struct disco *d, const struct peer *p)
{
	return d->hard && !d->mapped && p->hard;
}

/* Both NATs map per destination and nothing answers: an attempt, if its backoff allows. */
static void birthday_start(struct disco *d, struct peer *p, uint64_t now)
{
	uint32_t r[2];

	if (!birthday_wanted(d, p) || p->best >= 0 || p->bd_left ||
	    (p->bd_next_ns && now < p->bd_next_ns) || !birthday_target(p, &p->bd_target) ||
	    crypto_random(r, sizeof(r)) < 0 || crypto_random(p->bd_txid, DISCO_TXID_LEN) < 0)
		return;
	p->bd_mul = r[0] | 1;
	p->bd_add = r[1];
	p->bd_left = DISCO_BIRTHDAY_PORTS;
	p->bd_next_ns = now + MIN(DISCO_RETRY_NS << MIN(p->bd_fails, 6u), DISCO_BIRTHDAY_MAX_NS);
	p->bd_fails++;
	p->bd_attempts++;
	d->st.birthday_attempts++;
	birthday_burst(d, p, now);
}

/* ... and asks the peer (through the relay) to ping us back at the same time. */
static void probe(struct disco *d, struct peer *p, uint64_t now)
{
	ping_all(d, p, now);
	if (d->n_self)
		cmm_send(d, p);
	birthday_start(d, p, now);
}

/* --- path choice --- */

static bool addr_is_lan(const struct endpoint *ep)
{
	if (ep->sa.sa_family == AF_INET) {
		uint32_t a = ntohl(ep->in4.sin_addr.s_addr);

		return (a >> 24) == 10 || (a >> 20) == (172u << 4 | 1) ||
		       (a >> 16) == (192u << 8 | 168) || (a >> 16) == (169u << 8 | 254) ||
		       (a >> 17) == (198u << 7 | 9); /* 198.18/15 */
	}
	if (ep->sa.sa_family == AF_INET6) {
		const uint8_t *b = ep->in6.sin6_addr.s6_addr;

		return (b[0] & 0xfe) == 0xfc || (b[0] == 0xfe && (b[1] & 0xc0) == 0x80);
	}
	return false;
}

static unsigned bonus(const struct cand *c)
{
	unsigned b = 0;

	if (addr_is_lan(&c->ep))
		b += DISCO_BONUS_LAN;
	if (c->ep.sa.sa_family == AF_INET6)
		b += DISCO_BONUS_IPV6;
	return b;
}

static uint64_t score(const struct cand *c)
{
	return (c->rtt_ns + DISCO_RTT_SLACK_NS) * (100 - bonus(c));
}

static bool clearly_better(const struct cand *a, const struct cand *b)
{
	return score(a) * DISCO_BETTER_DEN < score(b) * DISCO_BETTER_NUM;
}

/* Whether c replaces the current path cur (engine.h: hysteresis, preferred kinds). */
static bool better(const struct cand *c, const struct cand *cur)
{
	return clearly_better(c, cur) || (bonus(c) > bonus(cur) && !clearly_better(cur, c));
}

static bool trusted(const struct cand *c, uint64_t now)
{
	return c->pong_ns && now - c->pong_ns < DISCO_TRUST_NS;
}

/* Recomputes the best path and tells the glue when it or its trust changed. */
static void best_update(struct disco *d, struct peer *p, uint64_t now)
{
	int best = p->best;
	uint64_t until;

	if (best >= 0 && !trusted(&p->cands[best], now))
		best = -1;
	/* None: the lowest score. Then whatever replaces it, or the current path (better()). */
	if (best < 0) {
		for (unsigned i = 0; i < p->n_cands; i++)
			if (trusted(&p->cands[i], now) &&
			    (best < 0 || score(&p->cands[i]) < score(&p->cands[best])))
				best = (int)i;
	}
	for (unsigned i = 0; best >= 0 && i < p->n_cands; i++)
		if ((int)i != best && trusted(&p->cands[i], now) &&
		    better(&p->cands[i], &p->cands[best]))
			best = (int)i;
	if (best >= 0 && p->best < 0 && p->active)
		p->to_direct_ns = now - p->active_since_ns;
	if (best < 0 && p->announced && p->active) {
		/* Traffic flows and its path died: probe now, then every DISCO_REPROBE_NS. */
		p->lost_ns = now ? now : 1;
		p->probe_ns = 0;
	}
	p->best = best;
	until = best >= 0 ? p->cands[best].pong_ns + DISCO_TRUST_NS : 0;
	if (best >= 0) {
		p->had_direct = true;
		p->lost_ns = 0;
		p->bd_left = 0;
		p->bd_fails = 0;
		p->bd_next_ns = 0;
	}
	if (until == p->trust_until_ns &&
	    (best < 0 ? !p->announced
		      : p->announced && endpoint_equal(&p->cands[best].ep, &p->announced_ep)))
		return;
	p->trust_until_ns = until;
	p->announced = best >= 0;
	if (best >= 0)
		p->announced_ep = p->cands[best].ep;
	d->ops.path_set(d->ops.ctx, &p->handle, best >= 0 ? &p->cands[best].ep : NULL, until);
}

/* --- candidates --- */

static int cands_find(const struct cand *cands, unsigned n, const struct endpoint *ep);

static int cand_find(const struct peer *p, const struct endpoint *ep)
{
	return cands_find(p->cands, p->n_cands, ep);
}

/*
 * A learned candidate: appended while there is room, else it replaces the learned one
 * heard from least recently (never the best path). -1 when there is no room.
 */
static int cand_learn(struct peer *p, const struct endpoint *ep)
{
	int i = cand_find(p, ep), victim = -1;

	if (i >= 0)
		return i;
	if (!endpoint_is_addr(ep))
		return -1;
	if (p->n_cands < DISCO_PEER_CANDIDATES) {
		i = (int)p->n_cands++;
	} else {
		for (unsigned k = 0; k < p->n_cands; k++)
			if (p->cands[k].learned && (int)k != p->best &&
			    (victim < 0 || p->cands[k].pong_ns < p->cands[victim].pong_ns))
				victim = (int)k;
		if (victim < 0)
			return -1;
		i = victim;
	}
	memset(&p->cands[i], 0, sizeof(p->cands[i]));
	p->cands[i].ep = *ep;
	endpoint_src_clear(&p->cands[i].ep);
	p->cands[i].learned = true;
	return i;
}

/* --- peers --- */

static int cands_find(const struct cand *cands, unsigned n, const struct endpoint *ep)
{
	for (unsigned i = 0; i < n; i++)
		if (endpoint_equal(&cands[i].ep, ep))
			return (int)i;
	return -1;
}

static void key_unset(struct disco *d, struct peer *p)
{
	if (!p->keyed)
		return;
	hmap_remove(&d->by_key, &p->by_key);
	p->keyed = false;
	memset(p->disco_pub, 0, DISCO_KEY_LEN);
}

/*
 * The netmap's candidates first, keeping what we measured of those we knew; then the
 * learned ones that still fit. The best path is found again by its address.
 */
static void cands_replace(struct peer *p, const struct endpoint *candidates, unsigned n)
{
	struct cand nc[DISCO_PEER_CANDIDATES];
	unsigned k = 0;
	int o;

	for (unsigned i = 0; i < n && k < DISCO_CANDIDATES_MAX; i++) {
		if (!endpoint_is_addr(&candidates[i]) || cands_find(nc, k, &candidates[i]) >= 0)
			continue;
		o = cands_find(p->cands, p->n_cands, &candidates[i]);
		if (o >= 0) {
			nc[k] = p->cands[o];
		} else {
			memset(&nc[k], 0, sizeof(nc[k]));
			nc[k].ep = candidates[i];
			endpoint_src_clear(&nc[k].ep);
		}
		nc[k++].learned = false;
	}
	for (unsigned j = 0; j < p->n_cands && k < DISCO_PEER_CANDIDATES; j++)
		if (p->cands[j].learned && cands_find(nc, k, &p->cands[j].ep) < 0)
			nc[k++] = p->cands[j];
	o = p->best >= 0 ? cands_find(nc, k, &p->cands[p->best].ep) : -1;
	memcpy(p->cands, nc, k * sizeof(nc[0]));
	p->n_cands = k;
	p->best = o;
}

int disco_peer_set(struct disco *d, const struct endpoint *handle,
		   const uint8_t disco_pub[DISCO_KEY_LEN], const uint8_t node_key[DISCO_KEY_LEN],
		   const struct endpoint *candidates, unsigned n, uint64_t now_ns)
{
	struct peer *p = peer_by_handle(d, handle), *other;
	uint8_t shared[DISCO_KEY_LEN];
	int r;

	if (!endpoint_is_handle(handle))
		return -EINVAL;
	if (!p || !p->keyed || memcmp(p->disco_pub, disco_pub, DISCO_KEY_LEN)) {
		r = disco_msg_shared(shared, d->priv, disco_pub);
		if (r < 0)
			return r;
		if (!p) {
			if (hmap_count(&d->by_id) >= DISCO_PEERS_MAX)
				return -ENOSPC;
			p = calloc(1, sizeof(*p));
			if (!p)
				return -ENOMEM;
			p->handle = *handle;
			p->best = -1;
			hmap_insert(&d->by_id, &p->by_id, id_hash(d, handle));
		}
		/* A new disco key (the peer restarted): what we knew of its paths is void. */
		key_unset(d, p);
		p->n_cands = 0;
		p->best = -1;
		p->bd_left = p->bd_fails = 0;
		p->bd_next_ns = p->bd_burst_ns = 0;
		/* One disco key, one peer: a key another handle held moves here. */
		other = peer_by_key(d, disco_pub);
		if (other)
			key_unset(d, other);
		memcpy(p->disco_pub, disco_pub, DISCO_KEY_LEN);
		memcpy(p->shared, shared, DISCO_KEY_LEN);
		crypto_wipe(shared, sizeof(shared));
		hmap_insert(&d->by_key, &p->by_key,
			    hmap_hash(&d->by_key, disco_pub, DISCO_KEY_LEN));
		p->keyed = true;
	}
	memcpy(p->node_key, node_key, DISCO_KEY_LEN);
	cands_replace(p, candidates, n);
	best_update(d, p, now_ns);
	return 0;
}

static void peer_destroy(struct disco *d, struct peer *p)
{
	hmap_remove(&d->by_id, &p->by_id);
	key_unset(d, p);
	active_del(d, p);
	crypto_wipe(p, sizeof(*p));
	free(p);
}

void disco_self_mapping_varies(struct disco *d, bool varies)
{
	d->hard = varies;
}

void disco_self_port_mapped(struct disco *d, bool mapped)
{
	d->mapped = mapped;
}

void disco_peer_mapping_varies(struct disco *d, const struct endpoint *handle, bool varies)
{
	struct peer *p = peer_by_handle(d, handle);

	if (p)
		p->hard = varies;
}

void disco_peer_remove(struct disco *d, const struct endpoint *handle)
{
	struct peer *p = peer_by_handle(d, handle);

	if (p)
		peer_destroy(d, p);
}

void disco_peer_active(struct disco *d, const struct endpoint *handle, uint64_t now_ns)
{
	struct peer *p = peer_by_handle(d, handle);
	bool was = p && p->active;

	if (!p)
		return;
	active_add(d, p, now_ns);
	/* Idle -> active: probe at once (the relay carries the traffic meanwhile). */
	if (!was && p->best < 0)
		probe(d, p, now_ns);
}

void disco_peer_silent(struct disco *d, const struct endpoint *handle, uint64_t now_ns)
{
	struct peer *p = peer_by_handle(d, handle);
	struct cand *c;

	if (!p || p->best < 0)
		return;
	active_add(d, p, now_ns);
	c = &p->cands[p->best];
	if (!c->ping_ns || now_ns - c->ping_ns >= DISCO_PING_MIN_GAP_NS) {
		ping_send(d, p, c, now_ns, false);
		p->heartbeat_ns = now_ns;
	}
}

int disco_peer_status_get(const struct disco *d, const struct endpoint *handle, uint64_t now_ns,
			  struct disco_peer_status *ret)
{
	const struct peer *p = peer_by_handle(d, handle);

	memset(ret, 0, sizeof(*ret));
	if (!p)
		return -ENOENT;
	if (p->best >= 0 && trusted(&p->cands[p->best], now_ns)) {
		ret->state = DISCO_STATE_DIRECT;
		ret->has_best = true;
		ret->best = p->cands[p->best].ep;
		ret->best_rtt_ns = p->cands[p->best].rtt_ns;
	} else {
		ret->state = p->active ? DISCO_STATE_PROBING : DISCO_STATE_IDLE;
	}
	for (unsigned i = 0; i < p->n_cands; i++)
		if (p->cands[i].pong_ns > ret->last_pong_ns)
			ret->last_pong_ns = p->cands[i].pong_ns;
	ret->n_candidates = p->n_cands;
	ret->pings_sent = p->pings_sent;
	ret->pongs_rx = p->pongs_rx;
	ret->pings_rx = p->pings_rx;
	ret->had_direct = p->had_direct;
	ret->to_direct_ns = p->to_direct_ns;
	ret->announced = p->announced;
	ret->announced_path = p->announced_ep;
	ret->trust_until_ns = p->trust_until_ns;
	ret->mapping_varies = p->hard;
	ret->birthday_attempts = p->bd_attempts;
	ret->birthday_probes = p->bd_probes;
	ret->birthday_hits = p->bd_hits;
	return 0;
}

int disco_ping(struct disco *d, const struct endpoint *handle, uint64_t now_ns)
{
	struct peer *p = peer_by_handle(d, handle);
	struct disco_msg m = {.type = DISCO_PING};

	if (!p)
		return -ENOENT;
	active_add(d, p, now_ns);
	if (p->best >= 0 && trusted(&p->cands[p->best], now_ns)) {
		ping_send(d, p, &p->cands[p->best], now_ns, true);
		return 0;
	}
	for (unsigned i = 0; i < p->n_cands; i++)
		ping_send(d, p, &p->cands[i], now_ns, true);
	if (crypto_random(p->relay_txid, sizeof(p->relay_txid)) < 0)
		return 0;
	memcpy(m.txid, p->relay_txid, DISCO_TXID_LEN);
	memcpy(m.node_key, d->node_key, DISCO_KEY_LEN);
	p->relay_ping_ns = now_ns ? now_ns : 1;
	p->pings_sent++;
	d->st.tx_ping++;
	seal_send(d, p, &p->handle, &m);
	if (d->n_self && (!p->probe_ns || now_ns - p->probe_ns >= DISCO_PING_MIN_GAP_NS))
		cmm_send(d, p);
	return 0;
}

/* --- receive --- */

static bool rate_allow(struct disco *d, const struct endpoint *src, uint64_t now)
{
	uint64_t h = d->seed;
	struct bucket *b;
	uint64_t add;

	if (src->sa.sa_family == AF_INET)
		h = hash_mix64(h ^ ((uint64_t)src->in4.sin_addr.s_addr << 16 | src->in4.sin_port));
	else if (src->sa.sa_family == AF_INET6) {
		uint64_t w[2];

		memcpy(w, &src->in6.sin6_addr, sizeof(w));
		h = hash_mix64(hash_mix64(h ^ w[0]) ^ w[1] ^ src->in6.sin6_port);
	} else {
		h = hash_mix64(h ^ src->handle.id);
	}
	b = &d->limit[h & (LIMIT_SLOTS - 1)];
	if (!b->last_ns) {
		b->tokens = DISCO_PING_BURST;
	} else if (now > b->last_ns) {
		add = (now - b->last_ns) * DISCO_PING_RATE / DISCO_NS;
		if (add) {
			b->tokens = (uint32_t)MIN((uint64_t)DISCO_PING_BURST, b->tokens + add);
		} else {
			/* Less than one token's worth: keep the time, so fractions add up. */
			now = b->last_ns;
		}
	}
	b->last_ns = now ? now : 1;
	if (!b->tokens)
		return false;
	b->tokens--;
	return true;
}

/* An address proven the peer's (engine.h, ops.addr_verified), without our side. */
static void addr_verified(struct disco *d, struct peer *p, const struct endpoint *addr)
{
	struct endpoint ep = *addr;

	if (!d->ops.addr_verified)
		return;
	endpoint_src_clear(&ep);
	d->ops.addr_verified(d->ops.ctx, &p->handle, &ep);
}

static void ping_rx(struct disco *d, struct peer *p, const struct disco_msg *m,
		    const struct endpoint *src, uint64_t now)
{
	struct disco_msg pong = {.type = DISCO_PONG};
	struct cand *c;
	int i;

	d->st.rx_ping++;
	if (memcmp(m->node_key, p->node_key, DISCO_KEY_LEN)) {
		d->st.rx_ping_wrong_key++;
		return;
	}
	if (!rate_allow(d, src, now)) {
		d->st.rx_ping_limited++;
		return;
	}
	p->pings_rx++;
	memcpy(pong.txid, m->txid, DISCO_TXID_LEN);
	if (endpoint_is_addr(src)) {
		pong.observed = *src;
		endpoint_src_clear(&pong.observed);
	} else {
		pong.observed.in4.sin_family = AF_INET; /* through a relay: no address seen */
	}
	d->st.tx_pong++;
	seal_send(d, p, src, &pong);
	if (!endpoint_is_addr(src))
		return;
	/*
	 * The peer reached us from src: its NAT has a mapping towards us there. Ping it back
	 * (the other half of the simultaneous open) unless we just did or already trust it
	 * (then this is the peer's heartbeat; ours keeps our side fresh).
	 */
	i = cand_learn(p, src);
	addr_verified(d, p, src);
	/*
	 * Nothing trusted yet: let the glue know the address (not trusted: trust 0), so that
	 * WireGuard datagrams from it are the peer's before a pong makes it a path.
	 */
	if (i >= 0 && p->best < 0 && !p->announced)
		d->ops.path_set(d->ops.ctx, &p->handle, &p->cands[i].ep, 0);
	/*
	 * Only a ping back, no timers: what keeps probing is traffic of our own. (Pings that
	 * made us active would let two peers' heartbeats keep each other awake for ever.)
	 */
	if (i < 0 || trusted(&p->cands[i], now))
		return;
	c = &p->cands[i];
	if (!c->ping_ns || now - c->ping_ns >= DISCO_PING_MIN_GAP_NS) {
		ping_send(d, p, c, now, false);
	} else if (!c->repinged && !c->user_ping) {
		/*
		 * Our ping there is recent but unanswered: it most likely left before the peer's
		 * NAT had a mapping towards us (both sides start probing at once) and died there.
		 * Waiting out the gap left our side relayed until the peer's next ping (its
		 * check of a silent path, ~0.5 s later; docs/benchmarks.md). Once per ping of
		 * ours, so a flood of pings gets no more than that.
		 */
		ping_send(d, p, c, now, false);
		c->repinged = true;
	}
}

/*
 * A pong to a birthday probe: our probe met a mapping the peer's probes opened. It comes
 * from the port we sent to (any of the attempt's block), so that address is the path.
 */
static bool birthday_pong(struct disco *d, struct peer *p, const struct disco_msg *m,
			  const struct endpoint *src, uint64_t now)
{
	uint16_t base = ntohs(p->bd_target.in4.sin_port);
	struct cand *c;
	int i;

	if (!p->bd_burst_ns || src->sa.sa_family != AF_INET ||
	    src->in4.sin_addr.s_addr != p->bd_target.in4.sin_addr.s_addr ||
	    (ntohs(src->in4.sin_port) & ~(DISCO_BIRTHDAY_PORTS - 1u)) != base ||
	    !crypto_equal(p->bd_txid, m->txid, DISCO_TXID_LEN))
		return false;
	addr_verified(d, p, src);
	i = cand_learn(p, src);
	if (i < 0)
		return true;
	c = &p->cands[i];
	/* The probe left in the last burst or one before: an upper bound, heartbeats refine. */
	c->rtt_ns = now - p->bd_burst_ns;
	c->pong_ns = now ? now : 1;
	p->pongs_rx++;
	p->bd_hits++;
	d->st.birthday_hits++;
	best_update(d, p, now);
	return true;
}

static void pong_rx(struct disco *d, struct peer *p, const struct disco_msg *m,
		    const struct endpoint *src, uint64_t now)
{
	struct cand *c;
	int i;

	d->st.rx_pong++;
	if (!endpoint_is_addr(src)) {
		/* Through the relay: only a user's ping is answered this way. */
		if (!p->relay_ping_ns || memcmp(m->txid, p->relay_txid, DISCO_TXID_LEN)) {
			d->st.rx_pong_spoofed++;
			return;
		}
		p->pongs_rx++;
		if (d->ops.pong)
			d->ops.pong(d->ops.ctx, &p->handle, src, now - p->relay_ping_ns);
		p->relay_ping_ns = 0;
		return;
	}
	i = cand_find(p, src);
	if (i < 0 || !p->cands[i].ping_ns ||
	    !crypto_equal(p->cands[i].txid, m->txid, DISCO_TXID_LEN)) {
		if (birthday_pong(d, p, m, src, now))
			return;
		d->st.rx_pong_spoofed++;
		return;
	}
	c = &p->cands[i];
	addr_verified(d, p, &c->ep);
	c->rtt_ns = now - c->ping_ns;
	c->pong_ns = now ? now : 1;
	c->ping_ns = 0;
	memset(c->txid, 0, sizeof(c->txid));
	p->pongs_rx++;
	if (c->user_ping && d->ops.pong)
		d->ops.pong(d->ops.ctx, &p->handle, &c->ep, c->rtt_ns);
	c->user_ping = false;
	best_update(d, p, now);
}

static void cmm_rx(struct disco *d, struct peer *p, const struct disco_msg *m, uint64_t now)
{
	d->st.rx_cmm++;
	for (unsigned i = 0; i < m->n_candidates; i++)
		cand_learn(p, &m->candidates[i]);
	/*
	 * The peer is probing us now: ping back at once, so both NATs open together (once:
	 * the peer repeats its call while it probes, and our own traffic makes us active).
	 */
	ping_all(d, p, now);
}

void disco_rx(struct disco *d, const uint8_t *data, size_t len, const struct endpoint *src,
	      uint64_t now_ns)
{
	const uint8_t *sender = disco_msg_sender(data, len);
	struct disco_msg m;
	struct peer *p;
	int r;

	if (!sender || (!endpoint_is_addr(src) && !endpoint_is_handle(src))) {
		d->st.rx_bad++;
		return;
	}
	p = peer_by_key(d, sender);
	if (!p) {
		d->st.rx_unknown++;
		return;
	}
	/* Relayed: the relay vouches for the sender's node key, which must be this peer's. */
	if (endpoint_is_handle(src) && src->handle.id != p->handle.handle.id) {
		d->st.rx_bad++;
		return;
	}
	r = disco_msg_open(&m, data, len, p->shared);
	if (r == -EPROTO) {
		d->st.rx_malformed++;
		return;
	}
	if (r < 0) {
		d->st.rx_bad++;
		return;
	}
	switch (m.type) {
	case DISCO_PING:
		ping_rx(d, p, &m, src, now_ns);
		break;
	case DISCO_PONG:
		pong_rx(d, p, &m, src, now_ns);
		break;
	case DISCO_CALL_ME_MAYBE:
		cmm_rx(d, p, &m, now_ns);
		break;
	}
}

/* --- timers --- */

/*
 * Never later than now: the data path's sending threads read the clock on their own, and
 * a send stamped after our now would otherwise make now - last wrap around and read as
 * idle for ages (the peer dropped off the active list while its traffic flowed, no
 * heartbeats, its trust ran out: relayed until the peer happened to probe).
 */
static uint64_t last_traffic(const struct disco *d, const struct peer *p, uint64_t now)
{
	uint64_t t = p->active_ns;

	if (d->ops.last_tx_ns) {
		uint64_t tx = d->ops.last_tx_ns(d->ops.ctx, &p->handle);

		if (tx > t)
			t = tx;
	}
	return MIN(t, now);
}

static uint64_t earliest(uint64_t a, uint64_t b)
{
	return !a ? b : !b ? a : MIN(a, b);
}

/* The gap between probes while relayed: short for a while after losing a direct path. */
static uint64_t retry_gap(const struct peer *p, uint64_t now)
{
	return p->lost_ns && now - p->lost_ns < DISCO_REPROBE_FOR_NS ? DISCO_REPROBE_NS
								     : DISCO_RETRY_NS;
}

/* One active peer's due work; its next deadline (0: it went idle). */
static uint64_t peer_tick(struct disco *d, struct peer *p, uint64_t now)
{
	uint64_t next, last = last_traffic(d, p, now);

	if (now - last >= DISCO_IDLE_NS) {
		active_del(d, p);
		p->bd_left = 0;
		p->lost_ns = 0;
		best_update(d, p, now);
		return 0;
	}
	best_update(d, p, now);
	ping_new(d, p, now);
	/* A side stopped being a hard NAT (a port mapping came): the attempt under way ends. */
	if (p->bd_left && !birthday_wanted(d, p))
		p->bd_left = 0;
	next = last + DISCO_IDLE_NS;
	if (p->best < 0) {
		if (!p->probe_ns || now - p->probe_ns >= retry_gap(p, now))
			probe(d, p, now);
		else if (p->bd_left && now - p->bd_burst_ns >= DISCO_BIRTHDAY_GAP_NS)
			birthday_burst(d, p, now);
		next = earliest(next, p->probe_ns + retry_gap(p, now));
		if (p->bd_left)
			next = earliest(next, p->bd_burst_ns + DISCO_BIRTHDAY_GAP_NS);
	} else {
		if (now - p->probe_ns >= DISCO_UPGRADE_NS) {
			probe(d, p, now);
			p->heartbeat_ns = now;
		} else if (now - p->heartbeat_ns >= DISCO_HEARTBEAT_NS) {
			ping_send(d, p, &p->cands[p->best], now, false);
			p->heartbeat_ns = now;
		}
		next = earliest(next, p->heartbeat_ns + DISCO_HEARTBEAT_NS);
		next = earliest(next, p->probe_ns + DISCO_UPGRADE_NS);
		if (p->best >= 0)
			next = earliest(next, p->trust_until_ns);
	}
	return next;
}

uint64_t disco_tick(struct disco *d, uint64_t now_ns)
{
	struct peer *p = d->active, *next_p;
	uint64_t next = 0;

	for (; p; p = next_p) {
		next_p = p->next;
		next = earliest(next, peer_tick(d, p, now_ns));
	}
	return next;
}

/* --- lifetime --- */

void disco_self_set(struct disco *d, const uint8_t node_key[DISCO_KEY_LEN],
		    const struct endpoint *candidates, unsigned n)
{
	memcpy(d->node_key, node_key, DISCO_KEY_LEN);
	d->n_self = 0;
	for (unsigned i = 0; i < n && d->n_self < DISCO_CANDIDATES_MAX; i++) {
		if (!endpoint_is_addr(&candidates[i]))
			continue;
		d->self[d->n_self] = candidates[i];
		endpoint_src_clear(&d->self[d->n_self++]);
	}
}

struct disco *disco_new(const struct disco_ops *ops, const uint8_t priv[DISCO_KEY_LEN])
{
	struct disco *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->ops = *ops;
	memcpy(d->priv, priv, DISCO_KEY_LEN);
	if (x25519_public_from_private(d->pub, priv) < 0 || hmap_init(&d->by_id) < 0 ||
	    hmap_init(&d->by_key) < 0 || crypto_random(&d->seed, sizeof(d->seed)) < 0) {
		disco_free(d);
		return NULL;
	}
	return d;
}

void disco_free(struct disco *d)
{
	struct hmap_node *n;

	if (!d)
		return;
	while ((n = hmap_first(&d->by_id)))
		peer_destroy(d, container_of(n, struct peer, by_id));
	hmap_fini(&d->by_id);
	hmap_fini(&d->by_key);
	crypto_wipe(d, sizeof(*d));
	free(d);
}

void disco_public_get(const struct disco *d, uint8_t ret[DISCO_KEY_LEN])
{
	memcpy(ret, d->pub, DISCO_KEY_LEN);
}

void disco_stats_get(const struct disco *d, struct disco_stats *ret)
{
	*ret = d->st;
	ret->peers = (unsigned)hmap_count(&d->by_id);
	ret->active = d->n_active;
}
