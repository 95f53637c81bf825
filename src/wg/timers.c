/* SPDX-License-Identifier: MIT */
#include "wg/internal.h"
#include "wg/timers.h"

/*
 * Timer policy (whitepaper 6.2-6.5), five deadlines per peer:
 *
 *   retransmit_handshake  armed when we send an initiation, cleared when a handshake
 *                         completes; on expiry resend, and after MAX_TIMER_HANDSHAKES
 *                         attempts (REKEY_ATTEMPT_TIME) give up and drop staged packets.
 *   wg_send_keepalive        armed when data arrives and we have sent nothing since; an
 *                         empty packet after KEEPALIVE_TIMEOUT tells the sender we live.
 *   new_handshake         armed when we send data; if nothing authenticated comes back
 *                         within KEEPALIVE_TIMEOUT + REKEY_TIMEOUT, start a handshake.
 *   zero_key_material     REJECT_AFTER_TIME * 3 after the last session: wipe all keys.
 *   persistent_keepalive  re-armed by every authenticated packet either way.
 *
 * REKEY_TIMEOUT-based deadlines get 0..333 ms of jitter so that two peers that
 * lose packets at the same moment do not keep colliding.
 */

static uint64_t now(const struct wg_peer *peer)
{
	return peer->dev->now_ns;
}

static void timer_mod(struct wg_peer *peer, enum wg_timer t, uint64_t deadline_ns)
{
	if (peer->dead)
		return;
	peer->timers[t] = deadline_ns;
	wg_device_arm_deadline(peer->dev, deadline_ns);
}

static void timer_del(struct wg_peer *peer, enum wg_timer t)
{
	peer->timers[t] = TIME_NEVER;
}

static bool timer_pending(const struct wg_peer *peer, enum wg_timer t)
{
	return peer->timers[t] != TIME_NEVER;
}

static uint64_t jitter(struct wg_peer *peer)
{
	return wg_device_random(peer->dev, REKEY_TIMEOUT_JITTER_MAX_NS);
}

void wg_timers_init(struct wg_peer *peer)
{
	int t;

	for (t = 0; t < TIMER_MAX; t++)
		peer->timers[t] = TIME_NEVER;
	peer->handshake_attempts = 0;
	peer->need_another_keepalive = false;
	peer->sent_lastminute_handshake = false;
}

void wg_timers_stop(struct wg_peer *peer)
{
	int t;

	for (t = 0; t < TIMER_MAX; t++)
		peer->timers[t] = TIME_NEVER;
}

void wg_timers_data_sent(struct wg_peer *peer)
{
	if (!timer_pending(peer, TIMER_NEW_HANDSHAKE))
		timer_mod(peer, TIMER_NEW_HANDSHAKE,
			  now(peer) + KEEPALIVE_TIMEOUT_NS + REKEY_TIMEOUT_NS + jitter(peer));
}

void wg_timers_data_received(struct wg_peer *peer)
{
	if (!timer_pending(peer, TIMER_SEND_KEEPALIVE))
		timer_mod(peer, TIMER_SEND_KEEPALIVE, now(peer) + KEEPALIVE_TIMEOUT_NS);
	else
		peer->need_another_keepalive = true;
}

void wg_timers_any_authenticated_packet_sent(struct wg_peer *peer)
{
	timer_del(peer, TIMER_SEND_KEEPALIVE);
}

void wg_timers_any_authenticated_packet_received(struct wg_peer *peer)
{
	timer_del(peer, TIMER_NEW_HANDSHAKE);
}

void wg_timers_any_authenticated_packet_traversal(struct wg_peer *peer)
{
	if (peer->persistent_keepalive_interval)
		timer_mod(peer, TIMER_PERSISTENT_KEEPALIVE,
			  now(peer) + peer->persistent_keepalive_interval * NSEC_PER_SEC);
}

void wg_timers_handshake_initiated(struct wg_peer *peer)
{
	timer_mod(peer, TIMER_RETRANSMIT_HANDSHAKE, now(peer) + REKEY_TIMEOUT_NS + jitter(peer));
}

void wg_timers_handshake_complete(struct wg_peer *peer)
{
	timer_del(peer, TIMER_RETRANSMIT_HANDSHAKE);
	peer->handshake_attempts = 0;
	peer->sent_lastminute_handshake = false;
	peer->last_handshake_wall_ns = wg_device_wall_ns(peer->dev);
}

void wg_timers_session_derived(struct wg_peer *peer)
{
	timer_mod(peer, TIMER_ZERO_KEY_MATERIAL, now(peer) + REJECT_AFTER_TIME_NS * 3);
}

static void expired_retransmit_handshake(struct wg_peer *peer)
{
	if (peer->handshake_attempts > MAX_TIMER_HANDSHAKES) {
		timer_del(peer, TIMER_SEND_KEEPALIVE);
		wg_send_purge_staged(peer, WG_DROP_TX_NO_KEY);
		/* Nothing got through: the keys we still hold are of no use, wipe them soon. */
		if (!timer_pending(peer, TIMER_ZERO_KEY_MATERIAL))
			timer_mod(peer, TIMER_ZERO_KEY_MATERIAL,
				  now(peer) + REJECT_AFTER_TIME_NS * 3);
		return;
	}
	peer->handshake_attempts++;
	wg_send_handshake_initiation(peer, true);
}

static void expired_send_keepalive(struct wg_peer *peer)
{
	wg_send_keepalive(peer);
	if (peer->need_another_keepalive) {
		peer->need_another_keepalive = false;
		timer_mod(peer, TIMER_SEND_KEEPALIVE, now(peer) + KEEPALIVE_TIMEOUT_NS);
	}
}

static void expired_new_handshake(struct wg_peer *peer)
{
	wg_send_handshake_initiation(peer, false);
}

static void expired_zero_key_material(struct wg_peer *peer)
{
	wg_noise_keypairs_clear(peer->dev, &peer->keypairs);
	wg_noise_handshake_clear(peer->dev, &peer->handshake);
}

static void expired_persistent_keepalive(struct wg_peer *peer)
{
	if (peer->persistent_keepalive_interval)
		wg_send_keepalive(peer);
}

uint64_t wg_timers_run_peer(struct wg_peer *peer)
{
	static void (*const handlers[TIMER_MAX])(struct wg_peer *) = {
		[TIMER_RETRANSMIT_HANDSHAKE] = expired_retransmit_handshake,
		[TIMER_SEND_KEEPALIVE] = expired_send_keepalive,
		[TIMER_NEW_HANDSHAKE] = expired_new_handshake,
		[TIMER_ZERO_KEY_MATERIAL] = expired_zero_key_material,
		[TIMER_PERSISTENT_KEEPALIVE] = expired_persistent_keepalive,
	};
	uint64_t next = TIME_NEVER;
	int t;

	for (t = 0; t < TIMER_MAX; t++) {
		if (peer->timers[t] <= now(peer)) {
			peer->timers[t] = TIME_NEVER;
			handlers[t](peer);
		}
	}
	/* Handlers may re-arm any timer, so take the minimum afterwards. */
	for (t = 0; t < TIMER_MAX; t++)
		next = MIN(next, peer->timers[t]);
	return next;
}
