/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_COOKIE_H
#define TRELLIS_WG_COOKIE_H

/*
 * MAC1/MAC2 and cookie replies (whitepaper 5.4.4 and 5.4.7). The checker is
 * the device side (verifies macs, makes cookies from a secret rotated every two
 * minutes); struct cookie is the peer side (adds macs, remembers the cookie the
 * peer last gave us). All under the device lock.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/endpoint.h"
#include "wg/messages.h"

struct noise_static_identity;

struct cookie_checker {
	uint8_t secret[NOISE_HASH_LEN];
	uint64_t secret_birth_ns;
	bool has_secret;
	uint8_t mac1_key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t cookie_encryption_key[NOISE_SYMMETRIC_KEY_LEN];
};

struct cookie {
	bool is_valid;
	bool have_sent_mac1;
	uint64_t last_mac1_sent_ns; /* when last_mac1_sent left */
	uint64_t birth_ns;
	uint8_t cookie[COOKIE_LEN];
	uint8_t last_mac1_sent[COOKIE_LEN];
	uint8_t mac1_key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t cookie_decryption_key[NOISE_SYMMETRIC_KEY_LEN];
};

/*
 * A reply answers the handshake message we sent last, and only for as long as that message can
 * be in flight: by then we have retransmitted (a new mac1) or given up. The key that encrypts
 * replies is derived from a public key and mac1 travels in the clear, so anyone who saw one of
 * our messages can forge a reply to it; this bounds how long that stays possible.
 */
#define COOKIE_REPLY_MAX_AGE_NS (REKEY_TIMEOUT_NS + REKEY_TIMEOUT_JITTER_MAX_NS)

enum cookie_mac_state {
	INVALID_MAC,
	VALID_MAC_BUT_NO_COOKIE,
	VALID_MAC_WITH_COOKIE,
};

void wg_cookie_checker_precompute_device_keys(struct cookie_checker *c,
					      const struct noise_static_identity *id);
void wg_cookie_checker_wipe(struct cookie_checker *c);
void wg_cookie_init(struct cookie *ck, const uint8_t peer_public[NOISE_PUBLIC_KEY_LEN]);

/* msg/len: a whole handshake message ending with struct message_macs. */
enum cookie_mac_state wg_cookie_validate_packet(struct cookie_checker *c, const uint8_t *msg,
						size_t len, const struct endpoint *src,
						bool check_cookie, uint64_t now_ns);
void wg_cookie_add_mac_to_packet(struct cookie *ck, uint8_t *msg, size_t len, uint64_t now_ns);
/* A reply to the handshake message msg/len received from src. */
int wg_cookie_message_create(struct cookie_checker *c, struct message_handshake_cookie *dst,
			     const uint8_t *msg, size_t len, uint32_t index,
			     const struct endpoint *src, uint64_t now_ns);
/*
 * 0, or -EINVAL when we sent nothing to answer (no handshake message since the last reply, or
 * the last one is older than COOKIE_REPLY_MAX_AGE_NS), -EBADMSG when it does not decrypt.
 */
int wg_cookie_message_consume(struct cookie *ck, const struct message_handshake_cookie *src,
			      uint64_t now_ns);

#endif
