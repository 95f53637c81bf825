/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "crypto/crypto.h"
#include "wg/internal.h"
#include "wg/messages.h"
#include "wg/timers.h"

/*
 * Everything that leaves towards a peer. Data packets wait in the peer's staging
 * queue until a valid sending keypair exists; then each gets a counter and
 * references (under the lock, counted per run: wg_ref_take) and goes to encryption,
 * which needs neither.
 */

void wg_send_to_peer(struct wg_peer *peer, struct pkt *pkt)
{
	struct wg_device *dev = peer->dev;

	if (!endpoint_is_set(&peer->endpoint)) {
		wg_device_drop(dev, WG_DROP_TX_NO_ENDPOINT, pkt);
		return;
	}
	pkt->ep = peer->endpoint;
	peer->tx_bytes += pkt->len;
	pkt_list_add(&dev->out.udp, pkt);
}

static struct pkt *pkt_new(struct wg_device *dev)
{
	struct pkt *pkt;

	if (pkt_pool_get(dev->pool, &pkt, 1) != 1)
		return NULL;
	return pkt;
}

void wg_send_handshake_initiation(struct wg_peer *peer, bool is_retry)
{
	struct wg_device *dev = peer->dev;
	struct message_handshake_initiation *msg;
	struct pkt *pkt;

	if (!is_retry)
		peer->handshake_attempts = 0;
	/* At most one initiation per REKEY_TIMEOUT, whatever asks for it (whitepaper 6.1). */
	if (peer->dead || (peer->last_sent_handshake_ns != TIME_NEVER &&
			   dev->now_ns < peer->last_sent_handshake_ns + REKEY_TIMEOUT_NS))
		return;
	if (!dev->identity.has_identity)
		return;
	pkt = pkt_new(dev);
	if (!pkt)
		return;
	peer->last_sent_handshake_ns = dev->now_ns;
	msg = (void *)pkt->data;
	if (wg_noise_handshake_create_initiation(dev, &peer->handshake, msg,
						 wg_device_wall_ns(dev)) < 0) {
		pkt_free(&pkt, 1);
		return;
	}
	pkt->len = sizeof(*msg);
	wg_cookie_add_mac_to_packet(&peer->cookie, pkt->data, pkt->len, dev->now_ns);
	wg_timers_any_authenticated_packet_traversal(peer);
	wg_timers_any_authenticated_packet_sent(peer);
	wg_send_to_peer(peer, pkt);
	/* Armed even without an endpoint: the retry may find one set by then. */
	wg_timers_handshake_initiated(peer);
}

void wg_send_handshake_response(struct wg_peer *peer)
{
	struct wg_device *dev = peer->dev;
	struct message_handshake_response *msg;
	struct pkt *pkt;

	pkt = pkt_new(dev);
	if (!pkt)
		return;
	msg = (void *)pkt->data;
	if (wg_noise_handshake_create_response(dev, &peer->handshake, msg) < 0)
		goto drop;
	pkt->len = sizeof(*msg);
	wg_cookie_add_mac_to_packet(&peer->cookie, pkt->data, pkt->len, dev->now_ns);
	if (wg_noise_handshake_begin_session(dev, &peer->handshake, &peer->keypairs, dev->now_ns) <
	    0)
		goto drop;
	dev->stats.handshakes_completed++;
	dev->out.handshake = true;
	wg_timers_session_derived(peer);
	wg_timers_any_authenticated_packet_traversal(peer);
	wg_timers_any_authenticated_packet_sent(peer);
	peer->last_sent_handshake_ns = dev->now_ns;
	wg_send_to_peer(peer, pkt);
	return;
drop:
	pkt_free(&pkt, 1);
}

void wg_send_handshake_cookie(struct wg_device *dev, const struct pkt *in, uint32_t sender_index)
{
	struct pkt *pkt = pkt_new(dev);

	if (!pkt)
		return;
	if (wg_cookie_message_create(&dev->cookie_checker, (void *)pkt->data, in->data, in->len,
				     sender_index, &in->ep, dev->now_ns) < 0) {
		pkt_free(&pkt, 1);
		return;
	}
	pkt->len = sizeof(struct message_handshake_cookie);
	pkt->ep = in->ep;
	dev->stats.cookies_sent++;
	pkt_list_add(&dev->out.udp, pkt);
}

void wg_send_purge_staged(struct wg_peer *peer, enum wg_drop_reason reason)
{
	struct pkt *p, *next;

	for (p = peer->staged_head; p; p = next) {
		next = p->next;
		if (reason < WG_DROP_MAX)
			wg_device_drop(peer->dev, reason, p);
		else
			pkt_free(&p, 1);
	}
	peer->staged_head = peer->staged_tail = NULL;
	peer->staged_len = 0;
}

void wg_send_stage(struct wg_peer *peer, struct pkt *pkt)
{
	pkt->next = NULL;
	if (peer->staged_tail)
		peer->staged_tail->next = pkt;
	else
		peer->staged_head = pkt;
	peer->staged_tail = pkt;
	/* Like the kernel, keep the newest: the oldest are the likeliest to be stale. */
	if (++peer->staged_len > MAX_STAGED_PACKETS) {
		struct pkt *old = peer->staged_head;

		peer->staged_head = old->next;
		peer->staged_len--;
		wg_device_drop(peer->dev, WG_DROP_TX_STAGED_FULL, old);
	}
}

void wg_send_keepalive(struct wg_peer *peer)
{
	struct pkt *pkt;

	if (!peer->staged_head) {
		pkt = pkt_new(peer->dev);
		if (!pkt)
			return;
		pkt->len = 0;
		wg_send_stage(peer, pkt);
	}
	wg_send_staged(peer);
}

static bool keypair_send_usable(const struct wg_device *dev, const struct noise_keypair *kp)
{
	return kp && kp->send_valid && dev->now_ns - kp->birth_ns < REJECT_AFTER_TIME_NS &&
	       kp->send_counter < REJECT_AFTER_MESSAGES;
}

static void keep_key_fresh(struct wg_peer *peer)
{
	struct noise_keypair *kp = peer->keypairs.current;

	if (kp && kp->send_valid &&
	    (kp->send_counter > REKEY_AFTER_MESSAGES ||
	     (kp->initiator && peer->dev->now_ns - kp->birth_ns > REKEY_AFTER_TIME_NS)))
		wg_send_handshake_initiation(peer, false);
}

void wg_send_staged(struct wg_peer *peer)
{
	struct wg_device *dev = peer->dev;
	struct noise_keypair *kp = peer->keypairs.current;
	struct pkt *p;

	if (!peer->staged_head || peer->dead)
		return;
	if (!keypair_send_usable(dev, kp))
		goto handshake;
	while ((p = peer->staged_head)) {
		if (kp->send_counter >= REJECT_AFTER_MESSAGES) {
			kp->send_valid = false;
			goto handshake;
		}
		peer->staged_head = p->next;
		if (!peer->staged_head)
			peer->staged_tail = NULL;
		peer->staged_len--;
		p->counter = kp->send_counter++;
		p->mtu = dev->mtu;
		wg_ref_take(dev, p, peer, kp);
		pkt_list_add(&dev->out.enc, p);
	}
	keep_key_fresh(peer);
	return;
handshake:
	/* The packets stay staged until the handshake completes or gives up. */
	wg_send_handshake_initiation(peer, false);
}

uint32_t wg_send_padded_len(uint32_t len, uint32_t mtu)
{
	uint32_t last = len, padded;

	if (mtu && last > mtu)
		last %= mtu;
	padded = (last + MESSAGE_PADDING_MULTIPLE - 1) & ~(MESSAGE_PADDING_MULTIPLE - 1U);
	if (mtu && padded > mtu)
		padded = mtu;
	/* The tail unit grows by padded - last; the packet's earlier units stay as they are. */
	return len + (padded > last ? padded - last : 0);
}

void wg_send_encrypt(struct pkt *pkt)
{
	struct noise_keypair *kp = pkt->keypair;
	uint32_t padded = wg_send_padded_len(pkt->len, pkt->mtu);
	struct message_data *hdr;

	if (!kp || pkt_headroom(pkt) < sizeof(*hdr) ||
	    pkt_tailroom(pkt) < padded - pkt->len + NOISE_AUTHTAG_LEN) {
		pkt->err = -EMSGSIZE;
		return;
	}
	memset(pkt->data + pkt->len, 0, padded - pkt->len);
	if (chacha20poly1305_encrypt(pkt->data, pkt->data, padded, NULL, 0, pkt->counter,
				     kp->send_key) < 0) {
		pkt->err = -EIO;
		return;
	}
	pkt->data -= sizeof(*hdr);
	hdr = (void *)pkt->data;
	le32_write(&hdr->header.type, MESSAGE_DATA);
	le32_write(&hdr->key_idx, kp->remote_index);
	le64_write(&hdr->counter, pkt->counter);
	pkt->len = sizeof(*hdr) + padded + NOISE_AUTHTAG_LEN;
	pkt->err = 0;
}

void wg_send_finish(struct wg_device *dev, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	unsigned i;

	wg_device_lock(dev, now_ns);
	for (i = 0; i < n; i++) {
		struct pkt *pkt = pkts[i];
		struct wg_peer *peer = pkt->peer;
		bool keepalive;

		if (!peer || pkt->err || peer->dead) {
			wg_ref_release(dev, pkt);
			pkt_free(&pkt, 1);
			continue;
		}
		keepalive = pkt->len == MESSAGE_MINIMUM_LENGTH;
		/* A live peer is held by the device too, so it outlasts the packet's reference. */
		wg_ref_release(dev, pkt);
		if (!endpoint_is_set(&peer->endpoint)) {
			wg_device_drop(dev, WG_DROP_TX_NO_ENDPOINT, pkt);
			continue;
		}
		dev->stats.tx_packets++;
		dev->stats.tx_bytes += pkt->len;
		wg_timers_any_authenticated_packet_traversal(peer);
		wg_timers_any_authenticated_packet_sent(peer);
		if (!keepalive)
			wg_timers_data_sent(peer);
		wg_send_to_peer(peer, pkt);
		keep_key_fresh(peer);
	}
	wg_device_unlock(dev);
}

void wg_pkt_release(struct pkt *pkt)
{
	wg_pkt_release_batch(&pkt, 1);
}

void wg_pkt_release_batch(struct pkt **pkts, unsigned n)
{
	unsigned i, j;

	/* Each packet owns its references: a run's go back in one subtraction on each. */
	for (i = 0; i < n; i = j) {
		struct noise_keypair *kp = pkts[i]->keypair;
		struct wg_peer *peer = pkts[i]->peer;

		for (j = i; j < n && pkts[j]->peer == peer && pkts[j]->keypair == kp; j++)
			pkts[j]->peer = pkts[j]->keypair = NULL;
		wg_noise_keypair_put_n(kp, j - i);
		wg_peer_put_n(peer, j - i);
	}
}
