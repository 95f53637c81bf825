/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_DISCO_MSG_H
#define TRELLIS_DISCO_MSG_H

/*
 * Disco messages inside the box of src/proto/disco.h (docs/disco-protocol.md), without
 * I/O. The box is XChaCha20-Poly1305 under a key both sides derive from their disco keys
 * (disco_msg_shared); the header (magic, sender key, nonce) is its associated data, so
 * a relay or an on-path party can neither read nor alter a message, nor move it to
 * another sender. The plaintext:
 *
 *   offset  size  field
 *        0     1  type: 1 ping, 2 pong, 3 call-me-maybe
 *        1     1  version, 0
 *        2        ping           tx id (12), sender's node key (32)
 *                 pong           tx id (12), observed source address (16, IPv4 mapped), port (2)
 *                 call-me-maybe  0..16 candidates, each address (16) and port (2)
 *
 * Unknown types, versions and trailing bytes are refused: the first version is strict,
 * a later one gets a new version byte.
 */

#include <stddef.h>
#include <stdint.h>

#include "base/endpoint.h"
#include "proto/disco.h"

#define DISCO_TXID_LEN 12
#define DISCO_CANDIDATES_MAX 16
#define DISCO_ADDR_LEN 18 /* address (16) and port (2) */
#define DISCO_PING_LEN (2 + DISCO_TXID_LEN + DISCO_KEY_LEN)
#define DISCO_PONG_LEN (2 + DISCO_TXID_LEN + DISCO_ADDR_LEN)
/* The largest datagram disco_msg_seal writes: a full call-me-maybe. */
#define DISCO_MSG_MAX (DISCO_HEADER_LEN + 2 + DISCO_CANDIDATES_MAX * DISCO_ADDR_LEN + DISCO_TAG_LEN)

enum disco_type {
	DISCO_PING = 1,
	DISCO_PONG = 2,
	DISCO_CALL_ME_MAYBE = 3,
};

struct disco_msg {
	enum disco_type type;
	uint8_t txid[DISCO_TXID_LEN];	 /* ping, pong */
	uint8_t node_key[DISCO_KEY_LEN]; /* ping: the sender's WireGuard key */
	struct endpoint observed;	 /* pong: the ping's source as the answerer saw it */
	unsigned n_candidates;		 /* call-me-maybe */
	struct endpoint candidates[DISCO_CANDIDATES_MAX];
};

/*
 * The box key for a pair of disco keys: BLAKE2s of their X25519 result, the same on
 * both sides. 0 or -EINVAL (a low-order public key).
 */
int disco_msg_shared(uint8_t ret[DISCO_KEY_LEN], const uint8_t priv[DISCO_KEY_LEN],
		     const uint8_t peer_pub[DISCO_KEY_LEN]);

/*
 * Writes m as a datagram (header, box) from sender_pub under `shared` with a random
 * nonce. Its length, or -ENOBUFS, -EINVAL (a candidate or pong address that is not
 * IPv4/IPv6, too many candidates), -EIO (no randomness).
 */
int disco_msg_seal(uint8_t *buf, size_t cap, const struct disco_msg *m,
		   const uint8_t sender_pub[DISCO_KEY_LEN], const uint8_t shared[DISCO_KEY_LEN]);

/*
 * The sender key of a datagram that passed demux (at least DISCO_MIN_LEN bytes and the
 * magic), or NULL when it is not one: who to look the shared key up for.
 */
const uint8_t *disco_msg_sender(const uint8_t *d, size_t len);

/*
 * Opens a datagram sealed for `shared`. 0, or -EBADMSG (not disco, a wrong key or a
 * tampered box), -EPROTO (authentic but malformed: unknown type or version, bad length).
 * Nothing is written to *ret unless 0.
 */
int disco_msg_open(struct disco_msg *ret, const uint8_t *d, size_t len,
		   const uint8_t shared[DISCO_KEY_LEN]);

#endif
