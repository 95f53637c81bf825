/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_TIMERS_H
#define TRELLIS_WG_TIMERS_H

/*
 * All timer policy of a peer (whitepaper 6). The data path only reports events;
 * this file decides which deadlines to arm or disarm. Deadlines are stored per
 * peer and fired by wg_device_timers_run. Under the device lock; "now" is the
 * device's cached time of the current batch.
 */

struct wg_peer;

void wg_timers_init(struct wg_peer *peer);
void wg_timers_stop(struct wg_peer *peer);
void wg_timers_data_sent(struct wg_peer *peer);
void wg_timers_data_received(struct wg_peer *peer);
void wg_timers_any_authenticated_packet_sent(struct wg_peer *peer);
void wg_timers_any_authenticated_packet_received(struct wg_peer *peer);
void wg_timers_any_authenticated_packet_traversal(struct wg_peer *peer);
void wg_timers_handshake_initiated(struct wg_peer *peer);
void wg_timers_handshake_complete(struct wg_peer *peer);
void wg_timers_session_derived(struct wg_peer *peer);

#endif
