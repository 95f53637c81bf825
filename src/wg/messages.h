/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_MESSAGES_H
#define TRELLIS_WG_MESSAGES_H

/*
 * WireGuard wire formats and protocol constants, named as in the whitepaper
 * (sections 5.4 and 6). All multi-byte fields are little endian on the wire;
 * indices are opaque 32-bit values echoed back by the peer.
 */

#include <stdint.h>

#include "base/time.h"
#include "crypto/crypto.h"

#define NOISE_PUBLIC_KEY_LEN 32
#define NOISE_SYMMETRIC_KEY_LEN 32
#define NOISE_TIMESTAMP_LEN 12
#define NOISE_AUTHTAG_LEN 16
#define NOISE_HASH_LEN 32
#define COOKIE_LEN 16
#define COOKIE_NONCE_LEN 24

#define NOISE_CONSTRUCTION "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
#define NOISE_IDENTIFIER "WireGuard v1 zx2c4 Jason@zx2c4.com"
#define LABEL_MAC1 "mac1----"
#define LABEL_COOKIE "cookie--"

/* Section 6.1 of the whitepaper. */
#define REKEY_AFTER_MESSAGES (1ULL << 60)
#define REJECT_AFTER_MESSAGES (UINT64_MAX - (1ULL << 13))
#define REKEY_AFTER_TIME_NS (120 * NSEC_PER_SEC)
#define REJECT_AFTER_TIME_NS (180 * NSEC_PER_SEC)
#define REKEY_ATTEMPT_TIME_NS (90 * NSEC_PER_SEC)
#define REKEY_TIMEOUT_NS (5 * NSEC_PER_SEC)
#define REKEY_TIMEOUT_JITTER_MAX_NS (NSEC_PER_SEC / 3)
#define KEEPALIVE_TIMEOUT_NS (10 * NSEC_PER_SEC)
#define MAX_TIMER_HANDSHAKES (REKEY_ATTEMPT_TIME_NS / REKEY_TIMEOUT_NS)
#define COOKIE_SECRET_MAX_AGE_NS (120 * NSEC_PER_SEC)
#define COOKIE_SECRET_LATENCY_NS (5 * NSEC_PER_SEC)
/* At most this many initiations per second are consumed from one peer. */
#define INITIATIONS_PER_SECOND 50
#define MAX_STAGED_PACKETS 128
#define MAX_PEERS_PER_DEVICE (1U << 20)
#define MAX_ALLOWEDIPS_PER_DEVICE (1U << 22)

enum message_type {
	MESSAGE_INVALID = 0,
	MESSAGE_HANDSHAKE_INITIATION = 1,
	MESSAGE_HANDSHAKE_RESPONSE = 2,
	MESSAGE_HANDSHAKE_COOKIE = 3,
	MESSAGE_DATA = 4,
};

/* The first 4 bytes: one type byte then three reserved zero bytes, as a little-endian u32. */
struct message_header {
	uint32_t type;
} __attribute__((packed));

struct message_macs {
	uint8_t mac1[COOKIE_LEN];
	uint8_t mac2[COOKIE_LEN];
} __attribute__((packed));

struct message_handshake_initiation {
	struct message_header header;
	uint32_t sender_index;
	uint8_t unencrypted_ephemeral[NOISE_PUBLIC_KEY_LEN];
	uint8_t encrypted_static[NOISE_PUBLIC_KEY_LEN + NOISE_AUTHTAG_LEN];
	uint8_t encrypted_timestamp[NOISE_TIMESTAMP_LEN + NOISE_AUTHTAG_LEN];
	struct message_macs macs;
} __attribute__((packed));

struct message_handshake_response {
	struct message_header header;
	uint32_t sender_index;
	uint32_t receiver_index;
	uint8_t unencrypted_ephemeral[NOISE_PUBLIC_KEY_LEN];
	uint8_t encrypted_nothing[NOISE_AUTHTAG_LEN];
	struct message_macs macs;
} __attribute__((packed));

struct message_handshake_cookie {
	struct message_header header;
	uint32_t receiver_index;
	uint8_t nonce[COOKIE_NONCE_LEN];
	uint8_t encrypted_cookie[COOKIE_LEN + NOISE_AUTHTAG_LEN];
} __attribute__((packed));

struct message_data {
	struct message_header header;
	uint32_t key_idx;
	uint64_t counter;
	uint8_t encrypted_data[];
} __attribute__((packed));

#define MESSAGE_PADDING_MULTIPLE 16
#define MESSAGE_MINIMUM_LENGTH (sizeof(struct message_data) + NOISE_AUTHTAG_LEN)

_Static_assert(sizeof(struct message_handshake_initiation) == 148, "initiation size");
_Static_assert(sizeof(struct message_handshake_response) == 92, "response size");
_Static_assert(sizeof(struct message_handshake_cookie) == 64, "cookie size");
_Static_assert(sizeof(struct message_data) == 16, "data header size");

static inline uint32_t le32_read(const void *p)
{
	const uint8_t *b = p;

	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline void le32_write(void *p, uint32_t v)
{
	uint8_t *b = p;

	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}

static inline uint64_t le64_read(const void *p)
{
	const uint8_t *b = p;

	return (uint64_t)le32_read(b) | (uint64_t)le32_read(b + 4) << 32;
}

static inline void le64_write(void *p, uint64_t v)
{
	le32_write(p, (uint32_t)v);
	le32_write((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

#endif
