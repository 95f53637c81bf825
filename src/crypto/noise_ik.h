/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CRYPTO_NOISE_IK_H
#define TRELLIS_CRYPTO_NOISE_IK_H

/*
 * Noise_IK_25519_ChaChaPoly_BLAKE2s (Noise specification, revision 34), without
 * I/O: bytes in, bytes out.
 *
 *   <- s
 *   ...
 *   -> e, es, s, ss, {payload}
 *   <- e, ee, se, {payload}
 *
 * then noise_ik_split gives one cipher per direction. The initiator knows the
 * responder's static key in advance; the responder learns (and, by the ss token,
 * authenticates) the initiator's static key from message 1.
 *
 * Errors: -EINVAL (wrong role or order, bad key), -EBADMSG (a message that does
 * not authenticate or has the wrong length), -EMSGSIZE (output buffer too small),
 * -EOVERFLOW (nonce exhausted). A failed read leaves the handshake unusable.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NOISE_KEY_LEN 32
#define NOISE_HASH_LEN 32
#define NOISE_TAG_LEN 16
#define NOISE_MAX_MSG_LEN 65535
/* Message sizes for a payload of p bytes. */
#define NOISE_IK_MSG1_LEN(p) (NOISE_KEY_LEN + NOISE_KEY_LEN + NOISE_TAG_LEN + (p) + NOISE_TAG_LEN)
#define NOISE_IK_MSG2_LEN(p) (NOISE_KEY_LEN + (p) + NOISE_TAG_LEN)

enum noise_ik_state {
	NOISE_IK_STATE_NONE = 0,
	NOISE_IK_STATE_INITIAL,	 /* initialised, message 1 not yet written/read */
	NOISE_IK_STATE_MSG1,	 /* message 1 done, message 2 pending */
	NOISE_IK_STATE_DONE,	 /* message 2 done: ready for noise_ik_split */
	NOISE_IK_STATE_FAILED,
};

struct noise_ik {
	enum noise_ik_state state;
	bool initiator;
	bool has_k;
	bool fixed_ephemeral;
	uint64_t n;
	uint8_t ck[NOISE_HASH_LEN];
	uint8_t h[NOISE_HASH_LEN];
	uint8_t k[NOISE_KEY_LEN];
	uint8_t s_priv[NOISE_KEY_LEN];
	uint8_t s_pub[NOISE_KEY_LEN];
	uint8_t e_priv[NOISE_KEY_LEN];
	uint8_t e_pub[NOISE_KEY_LEN];
	uint8_t rs[NOISE_KEY_LEN];
	uint8_t re[NOISE_KEY_LEN];
};

/* One direction of transport: key and the implicit 64-bit counter. */
struct noise_cipher {
	uint8_t key[NOISE_KEY_LEN];
	uint64_t n;
};

/* 0 or -EINVAL (unusable static key). hs need not be initialised. */
int noise_ik_init_initiator(struct noise_ik *hs, const uint8_t s_priv[NOISE_KEY_LEN],
			    const uint8_t rs_pub[NOISE_KEY_LEN], const void *prologue,
			    size_t prologue_len);
int noise_ik_init_responder(struct noise_ik *hs, const uint8_t s_priv[NOISE_KEY_LEN],
			    const void *prologue, size_t prologue_len);
/*
 * The same with the static key's public half, which the caller computed once (a server
 * answering every handshake with one key): saves a scalar multiplication per handshake.
 * s_pub must be s_priv's (NULL: derived, as noise_ik_init_responder does).
 */
int noise_ik_init_responder_pair(struct noise_ik *hs, const uint8_t s_priv[NOISE_KEY_LEN],
				 const uint8_t *s_pub, const void *prologue, size_t prologue_len);
/* Wipes all key material. Accepts NULL. */
void noise_ik_clear(struct noise_ik *hs);

/*
 * Uses this ephemeral private key instead of a random one (published test
 * vectors, deterministic fuzz seeds). Call before writing the first message.
 */
int noise_ik_set_ephemeral_for_test(struct noise_ik *hs, const uint8_t e_priv[NOISE_KEY_LEN]);

/* Write: returns the message length or -errno. Read: returns the payload length or -errno. */
int noise_ik_write_message1(struct noise_ik *hs, uint8_t *out, size_t out_cap,
			    const uint8_t *payload, size_t payload_len);
int noise_ik_read_message1(struct noise_ik *hs, const uint8_t *msg, size_t msg_len,
			   uint8_t *ret_payload, size_t payload_cap);
int noise_ik_write_message2(struct noise_ik *hs, uint8_t *out, size_t out_cap,
			    const uint8_t *payload, size_t payload_len);
int noise_ik_read_message2(struct noise_ik *hs, const uint8_t *msg, size_t msg_len,
			   uint8_t *ret_payload, size_t payload_cap);

/* The peer's static public key: the responder knows it after read_message1. */
int noise_ik_remote_static(const struct noise_ik *hs, uint8_t ret_pub[NOISE_KEY_LEN]);
/* The handshake hash h (channel binding), valid once the handshake is done. */
int noise_ik_handshake_hash(const struct noise_ik *hs, uint8_t ret_h[NOISE_HASH_LEN]);

/*
 * Split(): the transport ciphers for sending and receiving, in this party's
 * view. Wipes the handshake state (it is then no longer usable).
 */
int noise_ik_split(struct noise_ik *hs, struct noise_cipher *ret_tx, struct noise_cipher *ret_rx);

/*
 * Transport messages with empty associated data. encrypt writes len + 16 bytes
 * and returns that count; decrypt writes len - 16 and returns that count. dst may
 * equal src. The counter advances only on success, so a replayed, reordered,
 * dropped or forged message fails (-EBADMSG) and so does everything after it: a
 * stream transport (TCP) never reorders. -EOVERFLOW once the counter would reach
 * 2^64 - 1 (reserved by the spec).
 */
int noise_cipher_encrypt(struct noise_cipher *c, uint8_t *dst, const uint8_t *src, size_t len);
int noise_cipher_decrypt(struct noise_cipher *c, uint8_t *dst, const uint8_t *src, size_t len);
void noise_cipher_clear(struct noise_cipher *c);

#endif
