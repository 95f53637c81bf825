/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_PEER_H
#define TRELLIS_WG_PEER_H

/*
 * Peers, the public-key table and the receiver-index table.
 *
 * A peer lives while it is configured or a packet in flight holds a reference
 * (pkt->peer). Removing it marks it dead, unlinks it from every table under the
 * device lock and drops the device's reference; the last reference, possibly on
 * a worker thread, wipes and frees it without touching the device.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/endpoint.h"
#include "base/pkt.h"
#include "wg/config.h"
#include "wg/cookie.h"
#include "wg/noise.h"

enum wg_timer {
	TIMER_RETRANSMIT_HANDSHAKE,
	TIMER_SEND_KEEPALIVE,
	TIMER_NEW_HANDSHAKE,
	TIMER_ZERO_KEY_MATERIAL,
	TIMER_PERSISTENT_KEEPALIVE,
	TIMER_MAX
};

struct wg_peer {
	int refcount; /* atomic */
	bool dead;
	struct wg_device *dev;
	uint64_t id;
	struct wg_peer *hash_next;
	struct wg_peer *list_prev, *list_next;

	struct noise_handshake handshake;
	struct noise_keypairs keypairs;
	struct cookie cookie;
	struct endpoint endpoint;

	struct pkt *staged_head, *staged_tail;
	unsigned staged_len;

	uint64_t rx_bytes, tx_bytes;
	uint64_t last_handshake_wall_ns;
	uint64_t last_sent_handshake_ns; /* TIME_NEVER = never */
	uint16_t persistent_keepalive_interval;

	uint64_t timers[TIMER_MAX]; /* deadlines; TIME_NEVER = not armed */
	unsigned handshake_attempts;
	bool need_another_keepalive;
	bool sent_lastminute_handshake;
};

#define PEER_HASH_BITS 12
#define INDEX_HASH_BITS 16

/* Allocation is split from wg_peer_add so wg_device_apply can fail before changing anything. */
struct wg_peer *wg_peer_alloc(void);
void wg_peer_add(struct wg_device *dev, struct wg_peer *peer,
		 const uint8_t public_key[WG_KEY_LEN]);
/* Unlinks and drops the device's reference; staged packets are dropped. Under the lock. */
void wg_peer_remove(struct wg_peer *peer);
struct wg_peer *wg_peer_get(struct wg_peer *peer);
void wg_peer_put(struct wg_peer *peer);
/* n references at once, one atomic operation (wg_ref_take); both accept NULL. */
void wg_peer_get_n(struct wg_peer *peer, unsigned n);
void wg_peer_put_n(struct wg_peer *peer, unsigned n);
struct wg_peer *wg_peer_lookup(struct wg_device *dev, const uint8_t public_key[WG_KEY_LEN]);

/* Gives e a fresh random index unique in the table (re-hashing it if already in). */
void wg_index_insert(struct wg_device *dev, struct index_entry *e);
/* new takes over old's index: the peer sees no change of receiver index. */
void wg_index_replace(struct wg_device *dev, struct index_entry *old, struct index_entry *new);
void wg_index_remove(struct wg_device *dev, struct index_entry *e);
struct index_entry *wg_index_lookup(struct wg_device *dev, uint32_t index, unsigned type_mask);

#endif
