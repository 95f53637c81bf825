/* SPDX-License-Identifier: MIT */
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "wg/internal.h"
#include "wg/peer.h"
#include "wg/timers.h"

struct wg_peer *wg_peer_alloc(void)
{
	struct wg_peer *peer = calloc(1, sizeof(*peer));

	if (peer)
		peer->refcount = 1;
	return peer;
}

static unsigned peer_bucket(const uint8_t public_key[WG_KEY_LEN])
{
	/* Public keys are uniformly random and configured by the operator, not the network. */
	return le32_read(public_key) & ((1U << PEER_HASH_BITS) - 1);
}

void wg_peer_add(struct wg_device *dev, struct wg_peer *peer,
		 const uint8_t public_key[WG_KEY_LEN])
{
	unsigned b = peer_bucket(public_key);

	peer->dev = dev;
	peer->id = ++dev->next_peer_id;
	wg_noise_handshake_init(&peer->handshake, peer, &dev->identity, public_key);
	wg_cookie_init(&peer->cookie, public_key);
	peer->last_sent_handshake_ns = TIME_NEVER;
	wg_timers_init(peer);

	peer->hash_next = dev->peer_hash[b];
	dev->peer_hash[b] = peer;
	peer->list_next = &dev->peer_list;
	peer->list_prev = dev->peer_list.list_prev;
	peer->list_prev->list_next = peer;
	dev->peer_list.list_prev = peer;
	dev->n_peers++;
}

struct wg_peer *wg_peer_lookup(struct wg_device *dev, const uint8_t public_key[WG_KEY_LEN])
{
	struct wg_peer *p;

	for (p = dev->peer_hash[peer_bucket(public_key)]; p; p = p->hash_next)
		if (!memcmp(p->handshake.remote_static, public_key, WG_KEY_LEN))
			return p;
	return NULL;
}

struct wg_peer *wg_peer_get(struct wg_peer *peer)
{
	wg_peer_get_n(peer, 1);
	return peer;
}

void wg_peer_get_n(struct wg_peer *peer, unsigned n)
{
	if (peer)
		__atomic_add_fetch(&peer->refcount, (int)n, __ATOMIC_RELAXED);
}

void wg_peer_put(struct wg_peer *peer)
{
	wg_peer_put_n(peer, 1);
}

void wg_peer_put_n(struct wg_peer *peer, unsigned n)
{
	if (!peer)
		return;
	if (__atomic_sub_fetch(&peer->refcount, (int)n, __ATOMIC_ACQ_REL) != 0)
		return;
	crypto_wipe(peer, sizeof(*peer));
	free(peer);
}

/*
 * Reference runs. Invariant: a take is pending (counted in dev->ref_take, not yet in the
 * objects) only while the device holds its own references to the run's peer and keypair,
 * which keep them alive: the device drops those only through wg_peer_remove and
 * keypair_drop, and both flush first. Packets with pending takes are still under the lock
 * (on the device's out lists until wg_device_unlock, which flushes before it unlocks).
 */
static void run_take(struct wg_ref_run *r)
{
	if (!r->n)
		return;
	wg_peer_get_n(r->peer, r->n);
	wg_noise_keypair_get_n(r->kp, r->n);
	*r = (struct wg_ref_run){0};
}

static void run_put(struct wg_ref_run *r)
{
	if (!r->n)
		return;
	/* Either may free its object: nothing of the run is used after this. */
	wg_noise_keypair_put_n(r->kp, r->n);
	wg_peer_put_n(r->peer, r->n);
	*r = (struct wg_ref_run){0};
}

void wg_ref_take(struct wg_device *dev, struct pkt *pkt, struct wg_peer *peer,
		 struct noise_keypair *kp)
{
	struct wg_ref_run *r = &dev->ref_take;

	if (r->n && (r->peer != peer || r->kp != kp))
		run_take(r);
	r->peer = peer;
	r->kp = kp;
	r->n++;
	pkt->peer = peer;
	pkt->keypair = kp;
}

void wg_ref_release(struct wg_device *dev, struct pkt *pkt)
{
	struct wg_ref_run *r;

	if (!pkt->peer && !pkt->keypair)
		return;
	/*
	 * A packet of the pending take (the only one: takes flush when the run changes) gives
	 * its take back uncounted. Any other release is deferred, which is always safe: it
	 * only keeps the objects a little longer.
	 */
	r = &dev->ref_take;
	if (r->n && r->peer == pkt->peer && r->kp == pkt->keypair) {
		r->n--;
	} else {
		r = &dev->ref_put;
		if (r->n && (r->peer != pkt->peer || r->kp != pkt->keypair))
			run_put(r);
		r->peer = pkt->peer;
		r->kp = pkt->keypair;
		r->n++;
	}
	pkt->peer = NULL;
	pkt->keypair = NULL;
}

void wg_ref_flush(struct wg_device *dev)
{
	run_take(&dev->ref_take);
	run_put(&dev->ref_put);
}

void wg_peer_remove(struct wg_peer *peer)
{
	struct wg_device *dev = peer->dev;
	struct wg_peer **link;

	/* Pending takes count first: the device's reference, dropped below, may be the last. */
	wg_ref_flush(dev);
	peer->dead = true;
	wg_timers_stop(peer);
	wg_send_purge_staged(peer, WG_DROP_MAX);
	wg_noise_keypairs_clear(dev, &peer->keypairs);
	wg_noise_handshake_clear(dev, &peer->handshake);
	wg_allowedips_remove_by_peer(dev->allowedips, peer);

	for (link = &dev->peer_hash[peer_bucket(peer->handshake.remote_static)]; *link;
	     link = &(*link)->hash_next) {
		if (*link == peer) {
			*link = peer->hash_next;
			break;
		}
	}
	peer->list_prev->list_next = peer->list_next;
	peer->list_next->list_prev = peer->list_prev;
	dev->n_peers--;
	/* Static keys go now; packets in flight only need the peer's memory, not its secrets. */
	crypto_wipe(&peer->handshake, sizeof(peer->handshake));
	crypto_wipe(&peer->cookie, sizeof(peer->cookie));
	wg_peer_put(peer);
}

static struct index_entry **index_bucket(struct wg_device *dev, uint32_t index)
{
	return &dev->index_hash[index & ((1U << INDEX_HASH_BITS) - 1)];
}

struct index_entry *wg_index_lookup(struct wg_device *dev, uint32_t index, unsigned type_mask)
{
	struct index_entry *e;

	for (e = *index_bucket(dev, index); e; e = e->next)
		if (e->index == index)
			return (e->type & type_mask) ? e : NULL;
	return NULL;
}

void wg_index_remove(struct wg_device *dev, struct index_entry *e)
{
	struct index_entry **link;

	if (!e->hashed)
		return;
	for (link = index_bucket(dev, e->index); *link; link = &(*link)->next) {
		if (*link == e) {
			*link = e->next;
			break;
		}
	}
	e->hashed = false;
	e->next = NULL;
}

void wg_index_insert(struct wg_device *dev, struct index_entry *e)
{
	struct index_entry **b;
	uint32_t index;

	wg_index_remove(dev, e);
	/* Random, so an index says nothing about how many sessions we have or had. */
	do {
		crypto_random(&index, sizeof(index));
	} while (wg_index_lookup(dev, index, INDEX_HANDSHAKE | INDEX_KEYPAIR));
	b = index_bucket(dev, index);
	e->index = index;
	e->next = *b;
	*b = e;
	e->hashed = true;
}

void wg_index_replace(struct wg_device *dev, struct index_entry *old, struct index_entry *new)
{
	struct index_entry **link;

	if (!old->hashed) {
		wg_index_insert(dev, new);
		return;
	}
	for (link = index_bucket(dev, old->index); *link; link = &(*link)->next) {
		if (*link == old) {
			new->index = old->index;
			new->next = old->next;
			new->hashed = true;
			*link = new;
			break;
		}
	}
	old->hashed = false;
	old->next = NULL;
}
