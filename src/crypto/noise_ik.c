/* SPDX-License-Identifier: MIT */
/*
 * Noise_IK_25519_ChaChaPoly_BLAKE2s. State machine per role:
 *
 *   initiator: INITIAL --write_message1--> MSG1 --read_message2--> DONE --split
 *   responder: INITIAL --read_message1--> MSG1 --write_message2--> DONE --split
 *
 * Any failed read moves to FAILED: the transcript hash has already absorbed the
 * bad bytes, so the handshake cannot continue (Noise section 5.3: abort).
 *
 * The symmetric state follows the spec's names (ck, h, k, n). HKDF over
 * HMAC-BLAKE2s is exactly the whitepaper KDF (wg_kdf), and Noise's ChaChaPoly
 * nonce (32 zero bits, then the 64-bit little-endian counter) is the nonce
 * chacha20poly1305_encrypt forms from its counter argument.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "crypto/crypto.h"
#include "crypto/noise_ik.h"

static const char protocol_name[] = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

static void mix_hash(struct noise_ik *hs, const void *data, size_t len)
{
	struct blake2s_state b;

	blake2s_init(&b, NOISE_HASH_LEN);
	blake2s_update(&b, hs->h, NOISE_HASH_LEN);
	blake2s_update(&b, data, len);
	blake2s_final(&b, hs->h);
}

static void mix_key(struct noise_ik *hs, const uint8_t ikm[NOISE_KEY_LEN])
{
	wg_kdf(hs->ck, hs->k, NULL, hs->ck, ikm, NOISE_KEY_LEN);
	hs->has_k = true;
	hs->n = 0;
}

/*
 * DH then MixKey; a low-order public key (all-zero result) is refused. priv is one of our
 * keys (hs->e_priv or hs->s_priv), whose public half we hold: x25519_shared_pair.
 */
static int mix_dh(struct noise_ik *hs, const uint8_t priv[NOISE_KEY_LEN],
		  const uint8_t pub[NOISE_KEY_LEN])
{
	const uint8_t *own = priv == hs->e_priv ? hs->e_pub : hs->s_pub;
	uint8_t shared[NOISE_KEY_LEN];
	int ret;

	ret = x25519_shared_pair(shared, priv, own, pub);
	if (ret < 0)
		goto out;
	mix_key(hs, shared);
out:
	crypto_wipe(shared, sizeof(shared));
	return ret;
}

/* EncryptAndHash: out gets len (+16 once a key is set) bytes. */
static int encrypt_and_hash(struct noise_ik *hs, uint8_t *out, const uint8_t *in, size_t len)
{
	static const uint8_t empty[1];
	int ret;

	if (!in)
		in = empty; /* NULL with len 0: OpenSSL and memmove want a pointer */

	if (!hs->has_k) {
		memmove(out, in, len);
		mix_hash(hs, out, len);
		return (int)len;
	}
	ret = chacha20poly1305_encrypt(out, in, len, hs->h, NOISE_HASH_LEN, hs->n, hs->k);
	if (ret < 0)
		return ret;
	hs->n++;
	mix_hash(hs, out, len + NOISE_TAG_LEN);
	return (int)(len + NOISE_TAG_LEN);
}

/* DecryptAndHash: in is len bytes including the tag; out gets len - 16. */
static int decrypt_and_hash(struct noise_ik *hs, uint8_t *out, const uint8_t *in, size_t len)
{
	uint8_t h[NOISE_HASH_LEN], scratch[1];
	int ret;

	if (!hs->has_k || len < NOISE_TAG_LEN)
		return -EBADMSG;
	if (!out)
		out = scratch; /* an empty payload read into a NULL buffer */
	/* h is mixed with the ciphertext, which out may overwrite in place: hash first. */
	memcpy(h, hs->h, sizeof(h));
	mix_hash(hs, in, len);
	ret = chacha20poly1305_decrypt(out, in, len, h, NOISE_HASH_LEN, hs->n, hs->k);
	if (ret < 0)
		return -EBADMSG;
	hs->n++;
	return (int)(len - NOISE_TAG_LEN);
}

/* s_pub: the static key's public half when the caller has it (NULL: derived here). */
static int init_common(struct noise_ik *hs, bool initiator, const uint8_t s_priv[NOISE_KEY_LEN],
		       const uint8_t *s_pub, const void *prologue, size_t prologue_len)
{
	int ret = 0;

	memset(hs, 0, sizeof(*hs));
	hs->initiator = initiator;
	memcpy(hs->s_priv, s_priv, NOISE_KEY_LEN);
	if (s_pub)
		memcpy(hs->s_pub, s_pub, NOISE_KEY_LEN);
	else
		ret = x25519_public_from_private(hs->s_pub, hs->s_priv);
	if (ret < 0) {
		noise_ik_clear(hs);
		return -EINVAL;
	}
	/* The name is longer than HASHLEN, so h = HASH(name) (section 5.2). */
	blake2s(hs->h, NOISE_HASH_LEN, protocol_name, sizeof(protocol_name) - 1, NULL, 0);
	memcpy(hs->ck, hs->h, NOISE_HASH_LEN);
	mix_hash(hs, prologue, prologue_len);
	hs->state = NOISE_IK_STATE_INITIAL;
	return 0;
}

int noise_ik_init_initiator(struct noise_ik *hs, const uint8_t s_priv[NOISE_KEY_LEN],
			    const uint8_t rs_pub[NOISE_KEY_LEN], const void *prologue,
			    size_t prologue_len)
{
	int ret;

	ret = init_common(hs, true, s_priv, NULL, prologue, prologue_len);
	if (ret < 0)
		return ret;
	/* Pre-message "<- s": both sides hash the responder's static key. */
	memcpy(hs->rs, rs_pub, NOISE_KEY_LEN);
	mix_hash(hs, hs->rs, NOISE_KEY_LEN);
	return 0;
}

int noise_ik_init_responder_pair(struct noise_ik *hs, const uint8_t s_priv[NOISE_KEY_LEN],
				 const uint8_t *s_pub, const void *prologue, size_t prologue_len)
{
	int ret;

	ret = init_common(hs, false, s_priv, s_pub, prologue, prologue_len);
	if (ret < 0)
		return ret;
	mix_hash(hs, hs->s_pub, NOISE_KEY_LEN);
	return 0;
}

int noise_ik_init_responder(struct noise_ik *hs, const uint8_t s_priv[NOISE_KEY_LEN],
			    const void *prologue, size_t prologue_len)
{
	return noise_ik_init_responder_pair(hs, s_priv, NULL, prologue, prologue_len);
}

void noise_ik_clear(struct noise_ik *hs)
{
	if (!hs)
		return;
	crypto_wipe(hs, sizeof(*hs));
	hs->state = NOISE_IK_STATE_NONE;
}

int noise_ik_set_ephemeral_for_test(struct noise_ik *hs, const uint8_t e_priv[NOISE_KEY_LEN])
{
	if (hs->state != NOISE_IK_STATE_INITIAL)
		return -EINVAL;
	memcpy(hs->e_priv, e_priv, NOISE_KEY_LEN);
	if (x25519_public_from_private(hs->e_pub, hs->e_priv) < 0)
		return -EINVAL;
	hs->fixed_ephemeral = true;
	return 0;
}

static int ephemeral_make(struct noise_ik *hs)
{
	if (hs->fixed_ephemeral)
		return 0;
	if (x25519_private_generate(hs->e_priv) < 0 ||
	    x25519_public_from_private(hs->e_pub, hs->e_priv) < 0)
		return -EIO;
	return 0;
}

static void fail(struct noise_ik *hs)
{
	noise_ik_clear(hs);
	hs->state = NOISE_IK_STATE_FAILED;
}

int noise_ik_write_message1(struct noise_ik *hs, uint8_t *out, size_t out_cap,
			    const uint8_t *payload, size_t payload_len)
{
	size_t len = NOISE_IK_MSG1_LEN(payload_len);
	uint8_t *p = out;
	int ret;

	if (!hs->initiator || hs->state != NOISE_IK_STATE_INITIAL)
		return -EINVAL;
	if (payload_len > NOISE_MAX_MSG_LEN || len > NOISE_MAX_MSG_LEN || out_cap < len)
		return -EMSGSIZE;
	ret = ephemeral_make(hs);
	if (ret < 0)
		goto out;
	/* e */
	memcpy(p, hs->e_pub, NOISE_KEY_LEN);
	mix_hash(hs, p, NOISE_KEY_LEN);
	p += NOISE_KEY_LEN;
	/* es */
	ret = mix_dh(hs, hs->e_priv, hs->rs);
	if (ret < 0)
		goto out;
	/* s */
	ret = encrypt_and_hash(hs, p, hs->s_pub, NOISE_KEY_LEN);
	if (ret < 0)
		goto out;
	p += ret;
	/* ss */
	ret = mix_dh(hs, hs->s_priv, hs->rs);
	if (ret < 0)
		goto out;
	ret = encrypt_and_hash(hs, p, payload, payload_len);
	if (ret < 0)
		goto out;
	hs->state = NOISE_IK_STATE_MSG1;
	ret = (int)len;
out:
	if (ret < 0)
		fail(hs);
	return ret;
}

int noise_ik_read_message1(struct noise_ik *hs, const uint8_t *msg, size_t msg_len,
			   uint8_t *ret_payload, size_t payload_cap)
{
	uint8_t rs[NOISE_KEY_LEN];
	const uint8_t *p = msg;
	size_t payload_len;
	int ret;

	if (hs->initiator || hs->state != NOISE_IK_STATE_INITIAL)
		return -EINVAL;
	if (msg_len < NOISE_IK_MSG1_LEN(0) || msg_len > NOISE_MAX_MSG_LEN)
		return -EBADMSG;
	payload_len = msg_len - NOISE_IK_MSG1_LEN(0);
	if (payload_len > payload_cap)
		return -EMSGSIZE;
	/* e */
	memcpy(hs->re, p, NOISE_KEY_LEN);
	mix_hash(hs, p, NOISE_KEY_LEN);
	p += NOISE_KEY_LEN;
	/* es */
	ret = mix_dh(hs, hs->s_priv, hs->re);
	if (ret < 0)
		goto out;
	/* s */
	ret = decrypt_and_hash(hs, rs, p, NOISE_KEY_LEN + NOISE_TAG_LEN);
	if (ret < 0)
		goto out;
	p += NOISE_KEY_LEN + NOISE_TAG_LEN;
	memcpy(hs->rs, rs, NOISE_KEY_LEN);
	/* ss */
	ret = mix_dh(hs, hs->s_priv, hs->rs);
	if (ret < 0)
		goto out;
	ret = decrypt_and_hash(hs, ret_payload, p, payload_len + NOISE_TAG_LEN);
	if (ret < 0)
		goto out;
	hs->state = NOISE_IK_STATE_MSG1;
out:
	crypto_wipe(rs, sizeof(rs));
	if (ret < 0) {
		fail(hs);
		ret = -EBADMSG;
	}
	return ret;
}

int noise_ik_write_message2(struct noise_ik *hs, uint8_t *out, size_t out_cap,
			    const uint8_t *payload, size_t payload_len)
{
	size_t len = NOISE_IK_MSG2_LEN(payload_len);
	uint8_t *p = out;
	int ret;

	if (hs->initiator || hs->state != NOISE_IK_STATE_MSG1)
		return -EINVAL;
	if (payload_len > NOISE_MAX_MSG_LEN || len > NOISE_MAX_MSG_LEN || out_cap < len)
		return -EMSGSIZE;
	ret = ephemeral_make(hs);
	if (ret < 0)
		goto out;
	/* e */
	memcpy(p, hs->e_pub, NOISE_KEY_LEN);
	mix_hash(hs, p, NOISE_KEY_LEN);
	p += NOISE_KEY_LEN;
	/* ee */
	ret = mix_dh(hs, hs->e_priv, hs->re);
	if (ret < 0)
		goto out;
	/* se: the initiator's static with the responder's ephemeral */
	ret = mix_dh(hs, hs->e_priv, hs->rs);
	if (ret < 0)
		goto out;
	ret = encrypt_and_hash(hs, p, payload, payload_len);
	if (ret < 0)
		goto out;
	hs->state = NOISE_IK_STATE_DONE;
	ret = (int)len;
out:
	if (ret < 0)
		fail(hs);
	return ret;
}

int noise_ik_read_message2(struct noise_ik *hs, const uint8_t *msg, size_t msg_len,
			   uint8_t *ret_payload, size_t payload_cap)
{
	const uint8_t *p = msg;
	size_t payload_len;
	int ret;

	if (!hs->initiator || hs->state != NOISE_IK_STATE_MSG1)
		return -EINVAL;
	if (msg_len < NOISE_IK_MSG2_LEN(0) || msg_len > NOISE_MAX_MSG_LEN)
		return -EBADMSG;
	payload_len = msg_len - NOISE_IK_MSG2_LEN(0);
	if (payload_len > payload_cap)
		return -EMSGSIZE;
	/* e */
	memcpy(hs->re, p, NOISE_KEY_LEN);
	mix_hash(hs, p, NOISE_KEY_LEN);
	p += NOISE_KEY_LEN;
	/* ee */
	ret = mix_dh(hs, hs->e_priv, hs->re);
	if (ret < 0)
		goto out;
	/* se */
	ret = mix_dh(hs, hs->s_priv, hs->re);
	if (ret < 0)
		goto out;
	ret = decrypt_and_hash(hs, ret_payload, p, payload_len + NOISE_TAG_LEN);
	if (ret < 0)
		goto out;
	hs->state = NOISE_IK_STATE_DONE;
out:
	if (ret < 0) {
		fail(hs);
		ret = -EBADMSG;
	}
	return ret;
}

int noise_ik_remote_static(const struct noise_ik *hs, uint8_t ret_pub[NOISE_KEY_LEN])
{
	bool known;

	/* The initiator knows it from the start, the responder once message 1 is read. */
	if (hs->initiator)
		known = hs->state != NOISE_IK_STATE_NONE && hs->state != NOISE_IK_STATE_FAILED;
	else
		known = hs->state == NOISE_IK_STATE_MSG1 || hs->state == NOISE_IK_STATE_DONE;
	if (!known)
		return -EINVAL;
	memcpy(ret_pub, hs->rs, NOISE_KEY_LEN);
	return 0;
}

int noise_ik_handshake_hash(const struct noise_ik *hs, uint8_t ret_h[NOISE_HASH_LEN])
{
	if (hs->state != NOISE_IK_STATE_DONE)
		return -EINVAL;
	memcpy(ret_h, hs->h, NOISE_HASH_LEN);
	return 0;
}

int noise_ik_split(struct noise_ik *hs, struct noise_cipher *ret_tx, struct noise_cipher *ret_rx)
{
	uint8_t k1[NOISE_KEY_LEN], k2[NOISE_KEY_LEN];

	if (hs->state != NOISE_IK_STATE_DONE)
		return -EINVAL;
	wg_kdf(k1, k2, NULL, hs->ck, NULL, 0);
	/* The first key is for initiator-to-responder traffic. */
	memcpy(ret_tx->key, hs->initiator ? k1 : k2, NOISE_KEY_LEN);
	memcpy(ret_rx->key, hs->initiator ? k2 : k1, NOISE_KEY_LEN);
	ret_tx->n = 0;
	ret_rx->n = 0;
	crypto_wipe(k1, sizeof(k1));
	crypto_wipe(k2, sizeof(k2));
	noise_ik_clear(hs);
	return 0;
}

int noise_cipher_encrypt(struct noise_cipher *c, uint8_t *dst, const uint8_t *src, size_t len)
{
	int ret;

	if (c->n == UINT64_MAX)
		return -EOVERFLOW;
	if (len > INT_MAX - NOISE_TAG_LEN)
		return -EMSGSIZE;
	ret = chacha20poly1305_encrypt(dst, src, len, NULL, 0, c->n, c->key);
	if (ret < 0)
		return ret;
	c->n++;
	return (int)(len + NOISE_TAG_LEN);
}

int noise_cipher_decrypt(struct noise_cipher *c, uint8_t *dst, const uint8_t *src, size_t len)
{
	int ret;

	if (c->n == UINT64_MAX)
		return -EOVERFLOW;
	if (len < NOISE_TAG_LEN)
		return -EBADMSG;
	if (len > INT_MAX)
		return -EMSGSIZE;
	ret = chacha20poly1305_decrypt(dst, src, len, NULL, 0, c->n, c->key);
	if (ret < 0)
		return ret == -EBADMSG ? -EBADMSG : ret;
	c->n++;
	return (int)(len - NOISE_TAG_LEN);
}

void noise_cipher_clear(struct noise_cipher *c)
{
	if (c)
		crypto_wipe(c, sizeof(*c));
}
