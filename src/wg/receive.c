/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "crypto/crypto.h"
#include "wg/internal.h"
#include "wg/messages.h"
#include "wg/timers.h"

/*
 * Everything that arrives from the network. Handshake messages are handled
 * inline under the lock; data packets are matched to a keypair by receiver
 * index, decrypted without the lock, then checked for replay, roaming and
 * cryptokey routing in wg_receive_finish, in order.
 */

static void set_endpoint(struct wg_peer *peer, const struct endpoint *ep)
{
	struct wg_device *dev = peer->dev;

	/*
	 * A handle the path layer keeps (ops.endpoint_kept) is where the peer is, whatever
	 * source its packets come from: only the local address they arrived at is learned,
	 * and only from the handle itself. Asked only when the endpoint would move.
	 */
	if (endpoint_is_handle(&peer->endpoint) && dev->ops.endpoint_kept &&
	    (endpoint_equal(&peer->endpoint, ep) ||
	     dev->ops.endpoint_kept(dev->ops.ctx, &peer->endpoint))) {
		if (endpoint_equal(&peer->endpoint, ep))
			peer->endpoint.src = ep->src;
		return;
	}
	/* Roaming (whitepaper 2.1): the latest authenticated source is where the peer is. */
	peer->endpoint = *ep;
}

static void handshake_authenticated(struct wg_peer *peer, struct pkt *pkt)
{
	wg_timers_any_authenticated_packet_received(peer);
	wg_timers_any_authenticated_packet_traversal(peer);
	peer->rx_bytes += pkt->len;
}

static void receive_cookie(struct wg_device *dev, struct pkt *pkt)
{
	const struct message_handshake_cookie *msg = (const void *)pkt->data;
	struct index_entry *e;

	e = wg_index_lookup(dev, le32_read(&msg->receiver_index), INDEX_HANDSHAKE | INDEX_KEYPAIR);
	if (!e || wg_cookie_message_consume(&e->peer->cookie, msg, dev->now_ns) < 0) {
		wg_device_drop(dev, WG_DROP_RX_COOKIE, pkt);
		return;
	}
	pkt_free(&pkt, 1);
}

static void receive_handshake(struct wg_device *dev, struct pkt *pkt, uint32_t type)
{
	enum cookie_mac_state state;
	struct wg_peer *peer;
	bool under_load;
	int reason;

	under_load = wg_device_under_load(dev);
	state = wg_cookie_validate_packet(&dev->cookie_checker, pkt->data, pkt->len, &pkt->ep,
					  under_load, dev->now_ns);
	if (state == INVALID_MAC) {
		wg_device_drop(dev, WG_DROP_RX_MAC1, pkt);
		return;
	}
	if (under_load && state != VALID_MAC_WITH_COOKIE) {
		/* Both message types start with the sender index a reply goes to. */
		wg_send_handshake_cookie(dev, pkt, le32_read(pkt->data + 4));
		wg_device_drop(dev, WG_DROP_RX_COOKIE_SENT, pkt);
		return;
	}
	/* mac2 proved the source address, so the address is worth limiting per source. */
	if (under_load && !wg_ratelimiter_allow(dev->ratelimiter, &pkt->ep, dev->now_ns)) {
		wg_device_drop(dev, WG_DROP_RX_RATELIMIT, pkt);
		return;
	}

	if (type == MESSAGE_HANDSHAKE_INITIATION) {
		peer = wg_noise_handshake_consume_initiation(dev, (const void *)pkt->data,
							     dev->now_ns, &reason);
		if (!peer) {
			wg_device_drop(dev, (enum wg_drop_reason)reason, pkt);
			return;
		}
		set_endpoint(peer, &pkt->ep);
		wg_send_handshake_response(peer);
	} else {
		peer = wg_noise_handshake_consume_response(dev, (const void *)pkt->data);
		if (!peer) {
			wg_device_drop(dev, WG_DROP_RX_HANDSHAKE, pkt);
			return;
		}
		set_endpoint(peer, &pkt->ep);
		if (wg_noise_handshake_begin_session(dev, &peer->handshake, &peer->keypairs,
						     dev->now_ns) == 0) {
			dev->stats.handshakes_completed++;
			dev->out.handshake = true;
			wg_timers_session_derived(peer);
			wg_timers_handshake_complete(peer);
			/* The responder waits for our first packet before it may send: confirm now. */
			wg_send_keepalive(peer);
		}
	}
	handshake_authenticated(peer, pkt);
	pkt_free(&pkt, 1);
}

static void receive_data(struct wg_device *dev, struct pkt *pkt)
{
	const struct message_data *msg = (const void *)pkt->data;
	struct noise_keypair *kp;
	struct index_entry *e;

	e = wg_index_lookup(dev, le32_read(&msg->key_idx), INDEX_KEYPAIR);
	if (!e) {
		wg_device_drop(dev, WG_DROP_RX_UNKNOWN_INDEX, pkt);
		return;
	}
	kp = e->keypair;
	if (!kp->recv_valid || dev->now_ns - kp->birth_ns >= REJECT_AFTER_TIME_NS ||
	    kp->replay.greatest >= REJECT_AFTER_MESSAGES) {
		kp->recv_valid = false;
		wg_device_drop(dev, WG_DROP_RX_KEY_EXPIRED, pkt);
		return;
	}
	pkt->counter = le64_read(&msg->counter);
	wg_ref_take(dev, pkt, e->peer, kp);
	pkt->err = 0;
	pkt_list_add(&dev->out.dec, pkt);
}

void wg_device_rx(struct wg_device *dev, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	unsigned i;

	wg_device_lock(dev, now_ns);
	for (i = 0; i < n; i++) {
		struct pkt *pkt = pkts[i];
		uint32_t type;

		pkt->keypair = NULL;
		pkt->peer = NULL;
		if (pkt->len < sizeof(struct message_header)) {
			wg_device_drop(dev, WG_DROP_RX_SHORT, pkt);
			continue;
		}
		/* The three reserved bytes must be zero: compare all four as one number. */
		type = le32_read(pkt->data);
		switch (type) {
		case MESSAGE_HANDSHAKE_INITIATION:
		case MESSAGE_HANDSHAKE_RESPONSE:
			if (pkt->len != (type == MESSAGE_HANDSHAKE_INITIATION ?
						 sizeof(struct message_handshake_initiation) :
						 sizeof(struct message_handshake_response))) {
				wg_device_drop(dev, WG_DROP_RX_SHORT, pkt);
				break;
			}
			receive_handshake(dev, pkt, type);
			break;
		case MESSAGE_HANDSHAKE_COOKIE:
			if (pkt->len != sizeof(struct message_handshake_cookie)) {
				wg_device_drop(dev, WG_DROP_RX_SHORT, pkt);
				break;
			}
			receive_cookie(dev, pkt);
			break;
		case MESSAGE_DATA:
			if (pkt->len < MESSAGE_MINIMUM_LENGTH) {
				wg_device_drop(dev, WG_DROP_RX_SHORT, pkt);
				break;
			}
			receive_data(dev, pkt);
			break;
		default:
			wg_device_drop(dev, WG_DROP_RX_TYPE, pkt);
			break;
		}
	}
	wg_device_unlock(dev);
}

void wg_receive_decrypt(struct pkt *pkt)
{
	struct noise_keypair *kp = pkt->keypair;

	if (!kp || pkt->len < MESSAGE_MINIMUM_LENGTH) {
		pkt->err = -EINVAL;
		return;
	}
	if (chacha20poly1305_decrypt(pkt->data + sizeof(struct message_data),
				     pkt->data + sizeof(struct message_data),
				     pkt->len - sizeof(struct message_data), NULL, 0, pkt->counter,
				     kp->recv_key) < 0) {
		pkt->err = -EBADMSG;
		return;
	}
	pkt->data += sizeof(struct message_data);
	pkt->len -= MESSAGE_MINIMUM_LENGTH;
	pkt->err = 0;
}

/* Trims padding using the IP length; returns the source address or NULL if malformed. */
static const uint8_t *ip_validate(struct pkt *pkt, int *ret_family)
{
	const uint8_t *ip = pkt->data;
	uint32_t total;

	if (pkt->len >= 20 && ip[0] >> 4 == 4) {
		total = (uint32_t)ip[2] << 8 | ip[3];
		if (total < (uint32_t)(ip[0] & 0xf) * 4 || (ip[0] & 0xf) < 5 || total > pkt->len)
			return NULL;
		pkt->len = total;
		*ret_family = AF_INET;
		return ip + 12;
	}
	if (pkt->len >= 40 && ip[0] >> 4 == 6) {
		total = 40 + ((uint32_t)ip[4] << 8 | ip[5]);
		if (total > pkt->len)
			return NULL;
		pkt->len = total;
		*ret_family = AF_INET6;
		return ip + 8;
	}
	return NULL;
}

static void keep_key_fresh(struct wg_peer *peer)
{
	struct noise_keypair *kp = peer->keypairs.current;

	/*
	 * Only the initiator rekeys on time, so if it has been quiet, the first packet it
	 * receives near the end of the session triggers the handshake, early enough that the
	 * answer to it still finds valid keys (whitepaper 6.2).
	 */
	if (kp && kp->send_valid && kp->initiator && !peer->sent_lastminute_handshake &&
	    peer->dev->now_ns - kp->birth_ns >
		    REJECT_AFTER_TIME_NS - KEEPALIVE_TIMEOUT_NS - REKEY_TIMEOUT_NS) {
		peer->sent_lastminute_handshake = true;
		wg_send_handshake_initiation(peer, false);
	}
}

void wg_receive_finish(struct wg_device *dev, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	unsigned i;

	wg_device_lock(dev, now_ns);
	for (i = 0; i < n; i++) {
		struct pkt *pkt = pkts[i];
		struct wg_peer *peer = pkt->peer;
		struct noise_keypair *kp = pkt->keypair;
		const uint8_t *src;
		int family;

		if (!peer || !kp || peer->dead) {
			wg_ref_release(dev, pkt);
			pkt_free(&pkt, 1);
			continue;
		}
		if (pkt->err) {
			wg_device_drop(dev, WG_DROP_RX_DECRYPT, pkt);
			continue;
		}
		if (!replay_window_check(&kp->replay, pkt->counter)) {
			wg_device_drop(dev, WG_DROP_RX_REPLAY, pkt);
			continue;
		}
		/*
		 * Authenticated from here on. Roam first: the staged packets a key confirmation
		 * releases and the last-minute initiation below must go where this packet came
		 * from, not to the address the peer has just left.
		 */
		set_endpoint(peer, &pkt->ep);
		if (wg_noise_received_with_keypair(dev, &peer->keypairs, kp)) {
			wg_timers_handshake_complete(peer);
			wg_send_staged(peer);
		}
		/* The device's reference keeps a live peer; kp is not used past here. */
		wg_ref_release(dev, pkt);
		keep_key_fresh(peer);
		wg_timers_any_authenticated_packet_received(peer);
		wg_timers_any_authenticated_packet_traversal(peer);
		peer->rx_bytes += pkt->len + MESSAGE_MINIMUM_LENGTH;
		if (pkt->len == 0) {
			pkt_free(&pkt, 1); /* keepalive */
			continue;
		}
		wg_timers_data_received(peer);
		src = ip_validate(pkt, &family);
		if (!src) {
			wg_device_drop(dev, WG_DROP_RX_BAD_IP, pkt);
			continue;
		}
		if (wg_allowedips_lookup(dev->allowedips, family, src) != peer) {
			wg_device_drop(dev, WG_DROP_RX_ALLOWEDIPS, pkt);
			continue;
		}
		dev->stats.rx_packets++;
		dev->stats.rx_bytes += pkt->len;
		pkt_list_add(&dev->out.tun, pkt);
	}
	wg_device_unlock(dev);
}
