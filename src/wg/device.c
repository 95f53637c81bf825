/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/time.h"
#include "crypto/crypto.h"
#include "wg/internal.h"
#include "wg/timers.h"

#define DISPATCH_BATCH 64

struct wg_device *wg_device_new(const struct wg_device_ops *ops, struct pkt_pool *pool)
{
	struct wg_device *dev;

	if (crypto_init() < 0)
		return NULL;
	wg_noise_init();
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return NULL;
	if (ops)
		dev->ops = *ops;
	dev->pool = pool;
	dev->index_hash = calloc(1U << INDEX_HASH_BITS, sizeof(*dev->index_hash));
	dev->ratelimiter = wg_ratelimiter_new();
	dev->allowedips = wg_allowedips_new();
	if (!dev->index_hash || !dev->ratelimiter || !dev->allowedips)
		goto fail;
	pthread_mutex_init(&dev->lock, NULL);
	dev->peer_list.list_next = dev->peer_list.list_prev = &dev->peer_list;
	dev->next_deadline_reported = TIME_NEVER;
	crypto_random(&dev->rng, sizeof(dev->rng));
	dev->rng |= 1;
	pkt_list_init(&dev->out.udp);
	pkt_list_init(&dev->out.tun);
	pkt_list_init(&dev->out.enc);
	pkt_list_init(&dev->out.dec);
	return dev;
fail:
	free(dev->index_hash);
	wg_ratelimiter_free(dev->ratelimiter);
	wg_allowedips_free(dev->allowedips);
	free(dev);
	return NULL;
}

static void out_discard(struct pkt_list *l)
{
	struct pkt *p, *next;

	for (p = l->head; p; p = next) {
		next = p->next;
		wg_pkt_release(p);
		pkt_free(&p, 1);
	}
	pkt_list_init(l);
}

void wg_device_free(struct wg_device *dev)
{
	if (!dev)
		return;
	while (dev->peer_list.list_next != &dev->peer_list)
		wg_peer_remove(dev->peer_list.list_next);
	out_discard(&dev->out.udp);
	out_discard(&dev->out.tun);
	out_discard(&dev->out.enc);
	out_discard(&dev->out.dec);
	wg_allowedips_free(dev->allowedips);
	wg_ratelimiter_free(dev->ratelimiter);
	free(dev->index_hash);
	wg_cookie_checker_wipe(&dev->cookie_checker);
	crypto_wipe(&dev->identity, sizeof(dev->identity));
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}

uint64_t wg_device_wall_ns(struct wg_device *dev)
{
	return dev->wall_ns;
}

static uint64_t read_wall(const struct wg_device *dev)
{
	return dev->ops.wall_ns ? dev->ops.wall_ns(dev->ops.ctx) : time_wall_ns();
}

void wg_device_lock(struct wg_device *dev, uint64_t now_ns)
{
	uint64_t wall = read_wall(dev);

	pthread_mutex_lock(&dev->lock);
	/* Threads pass their own cached clocks; ages are computed as now - then. */
	if (now_ns > dev->now_ns)
		dev->now_ns = now_ns;
	dev->wall_ns = wall;
}

static unsigned list_take(struct pkt_list *l, struct pkt **arr)
{
	unsigned n = 0;

	while (l->head && n < DISPATCH_BATCH) {
		arr[n++] = l->head;
		l->head = l->head->next;
		arr[n - 1]->next = NULL;
	}
	return n;
}

void wg_device_unlock(struct wg_device *dev)
{
	struct pkt *arr[DISPATCH_BATCH];
	struct wg_out out = dev->out;
	uint64_t now_ns = dev->now_ns;
	unsigned n, i;

	pkt_list_init(&dev->out.udp);
	pkt_list_init(&dev->out.tun);
	pkt_list_init(&dev->out.enc);
	pkt_list_init(&dev->out.dec);
	dev->out.wake = false;
	dev->out.handshake = false;
	/* Before the packets on `out` leave the lock: their references must be counted. */
	wg_ref_flush(dev);
	pthread_mutex_unlock(&dev->lock);

	/* Handshake messages first: they may be what the data that follows depends on. */
	while ((n = list_take(&out.udp, arr))) {
		if (dev->ops.udp_send)
			dev->ops.udp_send(dev->ops.ctx, arr, n);
		else
			pkt_free(arr, n);
	}
	while ((n = list_take(&out.enc, arr))) {
		if (dev->ops.encrypt_submit) {
			dev->ops.encrypt_submit(dev->ops.ctx, arr, n);
			continue;
		}
		for (i = 0; i < n; i++)
			wg_send_encrypt(arr[i]);
		wg_send_finish(dev, arr, n, now_ns);
	}
	while ((n = list_take(&out.dec, arr))) {
		if (dev->ops.decrypt_submit) {
			dev->ops.decrypt_submit(dev->ops.ctx, arr, n);
			continue;
		}
		for (i = 0; i < n; i++)
			wg_receive_decrypt(arr[i]);
		wg_receive_finish(dev, arr, n, now_ns);
	}
	while ((n = list_take(&out.tun, arr))) {
		if (dev->ops.tun_write)
			dev->ops.tun_write(dev->ops.ctx, arr, n);
		else
			pkt_free(arr, n);
	}
	if (out.wake && dev->ops.timers_wake)
		dev->ops.timers_wake(dev->ops.ctx);
	if (out.handshake && dev->ops.handshake_done)
		dev->ops.handshake_done(dev->ops.ctx);
}

void wg_device_drop(struct wg_device *dev, enum wg_drop_reason reason, struct pkt *pkt)
{
	dev->stats.drops[reason]++;
	wg_ref_release(dev, pkt);
	pkt_free(&pkt, 1);
}

uint64_t wg_device_random(struct wg_device *dev, uint64_t bound)
{
	/* xorshift64*: jitter needs spread, not secrecy. */
	uint64_t x = dev->rng;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	dev->rng = x;
	return bound ? (x * 0x2545F4914F6CDD1DULL) % bound : 0;
}

bool wg_device_under_load(struct wg_device *dev)
{
	uint64_t now_ns = dev->now_ns;

	if (dev->force_under_load)
		return true;
	if (now_ns - dev->load_window_start_ns >= NSEC_PER_SEC) {
		dev->load_window_start_ns = now_ns;
		dev->load_count = 0;
	}
	if (++dev->load_count > UNDER_LOAD_THRESHOLD) {
		dev->last_under_load_ns = now_ns;
		dev->was_under_load = true;
		return true;
	}
	if (dev->was_under_load && now_ns - dev->last_under_load_ns < NSEC_PER_SEC)
		return true;
	dev->was_under_load = false;
	return false;
}

void wg_device_arm_deadline(struct wg_device *dev, uint64_t deadline_ns)
{
	if (deadline_ns < dev->next_deadline_reported) {
		dev->next_deadline_reported = deadline_ns;
		dev->out.wake = true;
	}
}

void wg_device_force_under_load(struct wg_device *dev, int on)
{
	pthread_mutex_lock(&dev->lock);
	dev->force_under_load = on != 0;
	pthread_mutex_unlock(&dev->lock);
}

uint64_t wg_device_timers_run(struct wg_device *dev, uint64_t now_ns)
{
	struct wg_peer *peer;
	uint64_t next = TIME_NEVER;

	wg_device_lock(dev, now_ns);
	peer_for_each(dev, peer) next = MIN(next, wg_timers_run_peer(peer));
	dev->next_deadline_reported = next;
	/* The caller learns `next` from our return value; no need to wake it as well. */
	dev->out.wake = false;
	wg_device_unlock(dev);
	return next;
}

uint16_t wg_device_listen_port(struct wg_device *dev)
{
	uint16_t port;

	pthread_mutex_lock(&dev->lock);
	port = dev->listen_port;
	pthread_mutex_unlock(&dev->lock);
	return port;
}

uint32_t wg_device_fwmark(struct wg_device *dev)
{
	uint32_t mark;

	pthread_mutex_lock(&dev->lock);
	mark = dev->fwmark;
	pthread_mutex_unlock(&dev->lock);
	return mark;
}

void wg_device_set_listen_port(struct wg_device *dev, uint16_t port)
{
	pthread_mutex_lock(&dev->lock);
	dev->listen_port = port;
	pthread_mutex_unlock(&dev->lock);
}

void wg_device_set_mtu(struct wg_device *dev, uint32_t mtu)
{
	pthread_mutex_lock(&dev->lock);
	dev->mtu = mtu;
	pthread_mutex_unlock(&dev->lock);
}

void wg_device_forget_src(struct wg_device *dev, const struct endpoint_src *src)
{
	struct wg_peer *peer;

	if (src->family == AF_UNSPEC)
		return;
	pthread_mutex_lock(&dev->lock);
	for (peer = dev->peer_list.list_next; peer != &dev->peer_list; peer = peer->list_next)
		if (endpoint_src_equal(&peer->endpoint.src, src))
			endpoint_src_clear(&peer->endpoint);
	pthread_mutex_unlock(&dev->lock);
}

void wg_device_stats_get(struct wg_device *dev, struct wg_device_stats *ret)
{
	pthread_mutex_lock(&dev->lock);
	*ret = dev->stats;
	ret->peers = dev->n_peers;
	pthread_mutex_unlock(&dev->lock);
}

void wg_device_count_drop(struct wg_device *dev, enum wg_drop_reason reason, unsigned n)
{
	if ((unsigned)reason >= WG_DROP_MAX)
		return;
	pthread_mutex_lock(&dev->lock);
	dev->stats.drops[reason] += n;
	pthread_mutex_unlock(&dev->lock);
}

/* Returns the destination address of an IP packet from TUN, or NULL. */
static const uint8_t *tx_destination(const struct pkt *pkt, int *ret_family)
{
	if (pkt->len >= 20 && pkt->data[0] >> 4 == 4) {
		*ret_family = AF_INET;
		return pkt->data + 16;
	}
	if (pkt->len >= 40 && pkt->data[0] >> 4 == 6) {
		*ret_family = AF_INET6;
		return pkt->data + 24;
	}
	return NULL;
}

/*
 * Encrypted in place, the packet must fit its buffer (header before it, padding and tag
 * after it), and the datagram must fit UDP: a packet from an MTU larger than WG_MTU_MAX
 * (the caller clamps the interface, but packets already queued may follow) cannot be sent.
 */
static bool fits_datagram(const struct wg_device *dev, const struct pkt *pkt)
{
	uint32_t padded = wg_send_padded_len(pkt->len, dev->mtu);

	return pkt->len <= WG_MTU_MAX && pkt_headroom(pkt) >= sizeof(struct message_data) &&
	       pkt_tailroom(pkt) >= padded - pkt->len + NOISE_AUTHTAG_LEN;
}

void wg_device_tx(struct wg_device *dev, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	unsigned i;

	wg_device_lock(dev, now_ns);
	for (i = 0; i < n; i++) {
		struct pkt *pkt = pkts[i];
		struct wg_peer *peer;
		const uint8_t *dst;
		int family;

		pkt->peer = NULL;
		pkt->keypair = NULL;
		dst = tx_destination(pkt, &family);
		if (!dst) {
			wg_device_drop(dev, WG_DROP_TX_BAD_IP, pkt);
			continue;
		}
		if (!fits_datagram(dev, pkt)) {
			wg_device_drop(dev, WG_DROP_TX_TOO_BIG, pkt);
			continue;
		}
		peer = wg_allowedips_lookup(dev->allowedips, family, dst);
		if (!peer) {
			wg_device_drop(dev, WG_DROP_TX_NO_PEER, pkt);
			continue;
		}
		if (!endpoint_is_set(&peer->endpoint)) {
			wg_device_drop(dev, WG_DROP_TX_NO_ENDPOINT, pkt);
			continue;
		}
		wg_send_stage(peer, pkt);
		wg_send_staged(peer);
	}
	wg_device_unlock(dev);
}

/* ---- configuration ---- */

static bool key_is_zero(const uint8_t key[WG_KEY_LEN])
{
	static const uint8_t zero[WG_KEY_LEN];

	return crypto_equal(key, zero, WG_KEY_LEN);
}

static int validate_cfg(struct wg_device *dev, const struct wg_device_cfg *cfg,
			unsigned *ret_new_peers)
{
	unsigned long long peers, ips = 0;
	unsigned i, j, new_peers = 0, removes = 0, readds = 0;

	peers = cfg->replace_peers ? 0 : dev->n_peers;
	for (i = 0; i < cfg->n_peers; i++) {
		const struct wg_peer_cfg *pc = &cfg->peers[i];

		for (j = 0; j < pc->n_allowedips; j++) {
			const struct wg_allowedip *a = &pc->allowedips[j];

			if (!((a->family == AF_INET && a->cidr <= 32) ||
			      (a->family == AF_INET6 && a->cidr <= 128)))
				return -EINVAL;
		}
		if (pc->has_endpoint && !endpoint_is_set(&pc->endpoint))
			return -EINVAL;
		ips += pc->n_allowedips;
		if (pc->remove)
			removes++;
		if (pc->remove || pc->update_only)
			continue;
		if (cfg->replace_peers || !wg_peer_lookup(dev, pc->public_key)) {
			new_peers++;
			peers++;
		} else {
			readds++;
		}
	}
	if (peers > MAX_PEERS_PER_DEVICE)
		return -ENOSPC;
	if (ips + wg_allowedips_count(dev->allowedips) > MAX_ALLOWEDIPS_PER_DEVICE)
		return -ENOSPC;
	/*
	 * A peer the config removes and then sets again (a key moving between netmap
	 * ids, "peer K remove" then "peer K" over UAPI) is new by the time it is set:
	 * preallocate for those too, or apply_peer would run out half way through.
	 */
	*ret_new_peers = new_peers + MIN(removes, readds);
	return 0;
}

static void set_private_key(struct wg_device *dev, const uint8_t key[WG_KEY_LEN],
			    const uint8_t pub[WG_KEY_LEN])
{
	struct noise_static_identity *id = &dev->identity;
	struct wg_peer *peer, *next;

	if (key) {
		if (id->has_identity && crypto_equal(id->static_private, key, WG_KEY_LEN))
			return;
		/* A peer with our own public key would be us: wg(8) and the kernel drop it. */
		peer = wg_peer_lookup(dev, pub);
		if (peer)
			wg_peer_remove(peer);
		memcpy(id->static_private, key, WG_KEY_LEN);
		memcpy(id->static_public, pub, WG_KEY_LEN);
		id->has_identity = true;
	} else {
		crypto_wipe(id, sizeof(*id));
	}
	wg_cookie_checker_precompute_device_keys(&dev->cookie_checker, id);
	for (peer = dev->peer_list.list_next; peer != &dev->peer_list; peer = next) {
		next = peer->list_next;
		wg_noise_precompute_static_static(&peer->handshake, id);
		/* Sessions made with the old key must not be used to send any more. */
		wg_noise_expire_current_peer_keypairs(dev, peer);
	}
}

static int apply_peer(struct wg_device *dev, const struct wg_peer_cfg *pc,
		      struct wg_peer **prealloc, unsigned *n_prealloc)
{
	struct wg_peer *peer;
	bool was_off;
	unsigned j;
	int ret = 0, r;

	peer = wg_peer_lookup(dev, pc->public_key);
	if (pc->remove) {
		if (peer)
			wg_peer_remove(peer);
		return 0;
	}
	if (!peer) {
		if (pc->update_only)
			return 0;
		if (dev->identity.has_identity &&
		    !memcmp(pc->public_key, dev->identity.static_public, WG_KEY_LEN))
			return 0;
		if (!*n_prealloc)
			return -ENOMEM; /* cannot happen: validate_cfg counted */
		peer = prealloc[--*n_prealloc];
		prealloc[*n_prealloc] = NULL;
		wg_peer_add(dev, peer, pc->public_key);
	}
	if (pc->has_preshared_key)
		memcpy(peer->handshake.preshared_key, pc->preshared_key, WG_KEY_LEN);
	if (pc->has_endpoint)
		peer->endpoint = pc->endpoint;
	if (pc->replace_allowedips)
		wg_allowedips_remove_by_peer(dev->allowedips, peer);
	for (j = 0; j < pc->n_allowedips; j++) {
		const struct wg_allowedip *a = &pc->allowedips[j];

		r = wg_allowedips_insert(dev->allowedips, a->family, a->addr, a->cidr, peer);
		if (r < 0 && !ret)
			ret = r;
	}
	if (pc->has_persistent_keepalive) {
		was_off = !peer->persistent_keepalive_interval;
		peer->persistent_keepalive_interval = pc->persistent_keepalive;
		/* As wg does: turning it on sends one at once, so NAT state exists from now. */
		if (was_off && pc->persistent_keepalive && dev->identity.has_identity)
			wg_send_keepalive(peer);
	}
	return ret;
}

int wg_device_apply(struct wg_device *dev, const struct wg_device_cfg *cfg, uint64_t now_ns)
{
	uint8_t key[WG_KEY_LEN], pub[WG_KEY_LEN];
	struct wg_peer **prealloc = NULL;
	unsigned n_prealloc = 0, new_peers = 0, i;
	bool set_key = false;
	int ret;

	wg_device_lock(dev, now_ns);
	ret = validate_cfg(dev, cfg, &new_peers);
	if (ret < 0)
		goto out;
	if (cfg->has_private_key && !key_is_zero(cfg->private_key)) {
		memcpy(key, cfg->private_key, WG_KEY_LEN);
		key[0] &= 248;
		key[31] = (key[31] & 127) | 64;
		ret = x25519_public_from_private(pub, key);
		if (ret < 0) {
			ret = -EINVAL;
			goto out;
		}
		set_key = true;
	}
	if (new_peers) {
		prealloc = calloc(new_peers, sizeof(*prealloc));
		if (!prealloc) {
			ret = -ENOMEM;
			goto out;
		}
		for (n_prealloc = 0; n_prealloc < new_peers; n_prealloc++) {
			prealloc[n_prealloc] = wg_peer_alloc();
			if (!prealloc[n_prealloc]) {
				ret = -ENOMEM;
				goto out;
			}
		}
	}

	/* Nothing has changed so far; from here on the request is applied. */
	if (cfg->has_private_key)
		set_private_key(dev, set_key ? key : NULL, pub);
	if (cfg->has_listen_port)
		dev->listen_port = cfg->listen_port;
	if (cfg->has_fwmark)
		dev->fwmark = cfg->fwmark;
	if (cfg->replace_peers) {
		while (dev->peer_list.list_next != &dev->peer_list)
			wg_peer_remove(dev->peer_list.list_next);
	}
	for (i = 0; i < cfg->n_peers; i++) {
		int r = apply_peer(dev, &cfg->peers[i], prealloc, &n_prealloc);

		/* Only wg_allowedips_insert can fail here (ENOMEM); report it, keep the rest. */
		if (r < 0 && !ret)
			ret = r;
	}
out:
	if (prealloc) {
		for (i = 0; i < n_prealloc; i++)
			wg_peer_put(prealloc[i]);
		free(prealloc);
	}
	crypto_wipe(key, sizeof(key));
	wg_device_unlock(dev);
	return ret;
}

struct ips_ctx {
	struct wg_allowedip *ips;
	unsigned n, cap;
};

static int count_ip(void *ctx, int family, const uint8_t *addr, uint8_t cidr)
{
	struct ips_ctx *c = ctx;

	(void)family;
	(void)addr;
	(void)cidr;
	c->n++;
	return 0;
}

static int copy_ip(void *ctx, int family, const uint8_t *addr, uint8_t cidr)
{
	struct ips_ctx *c = ctx;
	struct wg_allowedip *a;

	if (c->n >= c->cap)
		return 1;
	a = &c->ips[c->n++];
	a->family = (uint8_t)family;
	a->cidr = cidr;
	memcpy(a->addr, addr, family == AF_INET ? 4 : 16);
	return 0;
}

int wg_device_info_get(struct wg_device *dev, struct wg_device_info **ret)
{
	struct wg_device_info *info;
	struct wg_peer *peer;
	unsigned i = 0;
	int r = -ENOMEM;

	pthread_mutex_lock(&dev->lock);
	info = calloc(1, sizeof(*info));
	if (!info)
		goto out;
	info->has_private_key = dev->identity.has_identity;
	if (info->has_private_key)
		memcpy(info->private_key, dev->identity.static_private, WG_KEY_LEN);
	info->listen_port = dev->listen_port;
	info->fwmark = dev->fwmark;
	if (dev->n_peers) {
		info->peers = calloc(dev->n_peers, sizeof(*info->peers));
		if (!info->peers)
			goto out;
	}
	peer_for_each(dev, peer) {
		struct wg_peer_info *pi = &info->peers[i++];
		struct ips_ctx c = { 0 };

		info->n_peers = i;
		memcpy(pi->public_key, peer->handshake.remote_static, WG_KEY_LEN);
		pi->has_preshared_key = !key_is_zero(peer->handshake.preshared_key);
		if (pi->has_preshared_key)
			memcpy(pi->preshared_key, peer->handshake.preshared_key, WG_KEY_LEN);
		pi->endpoint = peer->endpoint;
		pi->last_handshake_wall_ns = peer->last_handshake_wall_ns;
		pi->rx_bytes = peer->rx_bytes;
		pi->tx_bytes = peer->tx_bytes;
		pi->persistent_keepalive = peer->persistent_keepalive_interval;
		wg_allowedips_walk_by_peer(dev->allowedips, peer, count_ip, &c);
		if (c.n) {
			c.cap = c.n;
			c.n = 0;
			c.ips = calloc(c.cap, sizeof(*c.ips));
			if (!c.ips)
				goto out;
			wg_allowedips_walk_by_peer(dev->allowedips, peer, copy_ip, &c);
			pi->allowedips = c.ips;
			pi->n_allowedips = c.n;
		}
	}
	*ret = info;
	info = NULL;
	r = 0;
out:
	pthread_mutex_unlock(&dev->lock);
	wg_device_info_free(info);
	return r;
}
