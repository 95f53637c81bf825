/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_NOISE_H
#define TRELLIS_WG_NOISE_H

/*
 * Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as WireGuard uses it (whitepaper 5.4).
 *
 * Per peer handshake state machine:
 *   ZEROED --create_initiation--> CREATED_INITIATION --consume_response--> CONSUMED_RESPONSE
 *   ZEROED --consume_initiation--> CONSUMED_INITIATION --create_response--> CREATED_RESPONSE
 * begin_session turns CONSUMED_RESPONSE (initiator) or CREATED_RESPONSE (responder) into a
 * keypair and zeroes the handshake again. Everything here runs under the device lock except
 * keypair reference counting, which is atomic so worker threads can drop references.
 */

#include <stdbool.h>
#include <stdint.h>

#include "crypto/replay.h"
#include "wg/messages.h"

struct wg_device;
struct wg_peer;
struct noise_keypair;

enum index_type {
	INDEX_HANDSHAKE = 1,
	INDEX_KEYPAIR = 2,
};

/* Intrusive entry of the device's receiver-index hash table. */
struct index_entry {
	struct index_entry *next;
	uint32_t index;
	bool hashed;
	enum index_type type;
	struct wg_peer *peer;
	struct noise_keypair *keypair;
};

struct noise_keypair {
	int refcount; /* atomic: the peer's slot plus packets in flight */
	struct index_entry entry;
	uint32_t remote_index;
	bool initiator;
	bool send_valid; /* under the device lock */
	bool recv_valid;
	uint64_t birth_ns;
	uint64_t send_counter;      /* under the device lock */
	struct replay_window replay; /* under the device lock, in wg_receive_finish */
	uint8_t send_key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t recv_key[NOISE_SYMMETRIC_KEY_LEN];
};

struct noise_keypairs {
	struct noise_keypair *current;
	struct noise_keypair *previous;
	struct noise_keypair *next;
};

struct noise_static_identity {
	bool has_identity;
	uint8_t static_private[NOISE_PUBLIC_KEY_LEN];
	uint8_t static_public[NOISE_PUBLIC_KEY_LEN];
};

enum noise_handshake_state {
	HANDSHAKE_ZEROED,
	HANDSHAKE_CREATED_INITIATION,
	HANDSHAKE_CONSUMED_INITIATION,
	HANDSHAKE_CREATED_RESPONSE,
	HANDSHAKE_CONSUMED_RESPONSE,
};

struct noise_handshake {
	struct index_entry entry; /* our index while a handshake is in flight */
	enum noise_handshake_state state;
	bool static_static_valid;
	bool has_consumed_initiation;
	uint64_t last_initiation_consumption_ns;
	uint32_t remote_index;
	uint8_t remote_static[NOISE_PUBLIC_KEY_LEN];
	uint8_t precomputed_static_static[NOISE_PUBLIC_KEY_LEN];
	uint8_t preshared_key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t ephemeral_private[NOISE_PUBLIC_KEY_LEN];
	uint8_t remote_ephemeral[NOISE_PUBLIC_KEY_LEN];
	uint8_t hash[NOISE_HASH_LEN];
	uint8_t chaining_key[NOISE_HASH_LEN];
	uint8_t latest_timestamp[NOISE_TIMESTAMP_LEN];
};

/* Precomputes the protocol's initial chaining key and hash once per process. */
void wg_noise_init(void);

void wg_noise_handshake_init(struct noise_handshake *hs, struct wg_peer *peer,
			     const struct noise_static_identity *id,
			     const uint8_t remote_static[NOISE_PUBLIC_KEY_LEN]);
/* Recomputes DH(our static, their static); invalid (handshakes refused) on a low-order key. */
void wg_noise_precompute_static_static(struct noise_handshake *hs,
				       const struct noise_static_identity *id);
/* Forgets the ephemeral state (not the static keys, psk or the latest timestamp). */
void wg_noise_handshake_clear(struct wg_device *dev, struct noise_handshake *hs);

/* TAI64N of a CLOCK_REALTIME time, rounded down to hide the clock's fine bits. */
void wg_noise_tai64n(uint8_t out[NOISE_TIMESTAMP_LEN], uint64_t wall_ns);

int wg_noise_handshake_create_initiation(struct wg_device *dev, struct noise_handshake *hs,
					 struct message_handshake_initiation *dst,
					 uint64_t wall_ns);
/* The peer the initiation authenticates, or NULL with the drop reason in *ret_reason. */
struct wg_peer *
wg_noise_handshake_consume_initiation(struct wg_device *dev,
				      const struct message_handshake_initiation *src,
				      uint64_t now_ns, int *ret_reason);
int wg_noise_handshake_create_response(struct wg_device *dev, struct noise_handshake *hs,
				       struct message_handshake_response *dst);
struct wg_peer *wg_noise_handshake_consume_response(struct wg_device *dev,
						    const struct message_handshake_response *src);
/* Derives the transport keypair and rotates it in; 0 or -errno. */
int wg_noise_handshake_begin_session(struct wg_device *dev, struct noise_handshake *hs,
				     struct noise_keypairs *kps, uint64_t now_ns);

struct noise_keypair *wg_noise_keypair_get(struct noise_keypair *kp);
/* Wipes and frees on the last reference; safe on any thread without the device lock. */
void wg_noise_keypair_put(struct noise_keypair *kp);
/* n references at once, one atomic operation (wg_ref_take); both accept NULL. */
void wg_noise_keypair_get_n(struct noise_keypair *kp, unsigned n);
void wg_noise_keypair_put_n(struct noise_keypair *kp, unsigned n);
/* Responder side: the first data packet on "next" confirms it. True if it rotated. */
bool wg_noise_received_with_keypair(struct wg_device *dev, struct noise_keypairs *kps,
				    struct noise_keypair *kp);
void wg_noise_keypairs_clear(struct wg_device *dev, struct noise_keypairs *kps);
void wg_noise_expire_current_peer_keypairs(struct wg_device *dev, struct wg_peer *peer);

#endif
