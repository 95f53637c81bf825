/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "wg/internal.h"
#include "wg/noise.h"

/*
 * Noise_IKpsk2 for WireGuard, step by step as in whitepaper 5.4.2-5.4.5. The
 * hash and chaining key are only written back into the peer's handshake once a
 * message has fully authenticated, so a forged message changes nothing.
 */

static uint8_t initial_chaining_key[NOISE_HASH_LEN];
static uint8_t initial_hash[NOISE_HASH_LEN];
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void do_init(void)
{
	struct blake2s_state s;

	blake2s(initial_chaining_key, NOISE_HASH_LEN, NOISE_CONSTRUCTION,
		sizeof(NOISE_CONSTRUCTION) - 1, NULL, 0);
	blake2s_init(&s, NOISE_HASH_LEN);
	blake2s_update(&s, initial_chaining_key, NOISE_HASH_LEN);
	blake2s_update(&s, NOISE_IDENTIFIER, sizeof(NOISE_IDENTIFIER) - 1);
	blake2s_final(&s, initial_hash);
}

void wg_noise_init(void)
{
	pthread_once(&init_once, do_init);
}

static void mix_hash(uint8_t hash[NOISE_HASH_LEN], const uint8_t *src, size_t len)
{
	struct blake2s_state s;

	blake2s_init(&s, NOISE_HASH_LEN);
	blake2s_update(&s, hash, NOISE_HASH_LEN);
	blake2s_update(&s, src, len);
	blake2s_final(&s, hash);
}

/* ck = KDF1(ck, ephemeral); h = HASH(h || ephemeral) */
static void message_ephemeral(uint8_t ck[NOISE_HASH_LEN], uint8_t h[NOISE_HASH_LEN],
			      const uint8_t ephemeral[NOISE_PUBLIC_KEY_LEN])
{
	wg_kdf(ck, NULL, NULL, ck, ephemeral, NOISE_PUBLIC_KEY_LEN);
	mix_hash(h, ephemeral, NOISE_PUBLIC_KEY_LEN);
}

/* (ck, key) = KDF2(ck, DH(priv, pub)); fails on a low-order result. */
static int mix_dh(uint8_t ck[NOISE_HASH_LEN], uint8_t *ret_key, const uint8_t priv[32],
		  const uint8_t pub[32])
{
	uint8_t shared[X25519_KEY_LEN];
	int ret;

	ret = x25519_shared(shared, priv, pub);
	if (ret < 0)
		goto out;
	wg_kdf(ck, ret_key, NULL, ck, shared, sizeof(shared));
out:
	crypto_wipe(shared, sizeof(shared));
	return ret;
}

static int mix_precomputed(uint8_t ck[NOISE_HASH_LEN], uint8_t key[32], const uint8_t ss[32])
{
	static const uint8_t zero[NOISE_PUBLIC_KEY_LEN];

	if (crypto_equal(ss, zero, sizeof(zero)))
		return -EINVAL;
	wg_kdf(ck, key, NULL, ck, ss, NOISE_PUBLIC_KEY_LEN);
	return 0;
}

static void encrypt_and_hash(uint8_t *dst, const uint8_t *src, size_t len,
			     const uint8_t key[32], uint8_t h[NOISE_HASH_LEN])
{
	static const uint8_t empty[1];

	chacha20poly1305_encrypt(dst, len ? src : empty, len, h, NOISE_HASH_LEN, 0, key);
	mix_hash(h, dst, len + NOISE_AUTHTAG_LEN);
}

static int decrypt_and_hash(uint8_t *dst, const uint8_t *src, size_t len, const uint8_t key[32],
			    uint8_t h[NOISE_HASH_LEN])
{
	uint8_t scratch[1];
	int ret;

	ret = chacha20poly1305_decrypt(dst ? dst : scratch, src, len, h, NOISE_HASH_LEN, 0, key);
	if (ret < 0)
		return -EBADMSG;
	mix_hash(h, src, len);
	return 0;
}

void wg_noise_tai64n(uint8_t out[NOISE_TIMESTAMP_LEN], uint64_t wall_ns)
{
	/* TAI64 label 2^62 plus the 10 s TAI-UTC offset of 1970, as every implementation does. */
	uint64_t sec = 0x400000000000000aULL + wall_ns / NSEC_PER_SEC;
	/*
	 * Round nanoseconds down to a power of two below 1/INITIATIONS_PER_SECOND: enough for
	 * ordering, without leaking a precise clock to whoever decrypts it.
	 */
	uint32_t nsec = (uint32_t)(wall_ns % NSEC_PER_SEC) & ~((1U << 24) - 1);
	int i;

	for (i = 0; i < 8; i++)
		out[i] = (uint8_t)(sec >> (56 - 8 * i));
	for (i = 0; i < 4; i++)
		out[8 + i] = (uint8_t)(nsec >> (24 - 8 * i));
}

void wg_noise_precompute_static_static(struct noise_handshake *hs,
				       const struct noise_static_identity *id)
{
	hs->static_static_valid = false;
	memset(hs->precomputed_static_static, 0, sizeof(hs->precomputed_static_static));
	if (!id->has_identity)
		return;
	if (x25519_shared(hs->precomputed_static_static, id->static_private,
			  hs->remote_static) == 0)
		hs->static_static_valid = true;
	else
		memset(hs->precomputed_static_static, 0, sizeof(hs->precomputed_static_static));
}

void wg_noise_handshake_init(struct noise_handshake *hs, struct wg_peer *peer,
			     const struct noise_static_identity *id,
			     const uint8_t remote_static[NOISE_PUBLIC_KEY_LEN])
{
	wg_noise_init();
	memset(hs, 0, sizeof(*hs));
	hs->entry.type = INDEX_HANDSHAKE;
	hs->entry.peer = peer;
	memcpy(hs->remote_static, remote_static, NOISE_PUBLIC_KEY_LEN);
	wg_noise_precompute_static_static(hs, id);
}

void wg_noise_handshake_clear(struct wg_device *dev, struct noise_handshake *hs)
{
	wg_index_remove(dev, &hs->entry);
	hs->state = HANDSHAKE_ZEROED;
	hs->remote_index = 0;
	crypto_wipe(hs->ephemeral_private, sizeof(hs->ephemeral_private));
	crypto_wipe(hs->remote_ephemeral, sizeof(hs->remote_ephemeral));
	crypto_wipe(hs->hash, sizeof(hs->hash));
	crypto_wipe(hs->chaining_key, sizeof(hs->chaining_key));
}

int wg_noise_handshake_create_initiation(struct wg_device *dev, struct noise_handshake *hs,
					 struct message_handshake_initiation *dst, uint64_t wall_ns)
{
	const struct noise_static_identity *id = &dev->identity;
	uint8_t ephemeral_public[NOISE_PUBLIC_KEY_LEN];
	uint8_t timestamp[NOISE_TIMESTAMP_LEN];
	uint8_t key[NOISE_SYMMETRIC_KEY_LEN];
	int ret = -EINVAL;

	if (!id->has_identity || !hs->static_static_valid)
		goto out;
	memset(dst, 0, sizeof(*dst));
	le32_write(&dst->header.type, MESSAGE_HANDSHAKE_INITIATION);

	memcpy(hs->chaining_key, initial_chaining_key, NOISE_HASH_LEN);
	memcpy(hs->hash, initial_hash, NOISE_HASH_LEN);
	mix_hash(hs->hash, hs->remote_static, NOISE_PUBLIC_KEY_LEN);

	/* e */
	ret = x25519_private_generate(hs->ephemeral_private);
	if (ret < 0)
		goto out;
	ret = x25519_public_from_private(ephemeral_public, hs->ephemeral_private);
	if (ret < 0)
		goto out;
	memcpy(dst->unencrypted_ephemeral, ephemeral_public, NOISE_PUBLIC_KEY_LEN);
	message_ephemeral(hs->chaining_key, hs->hash, ephemeral_public);

	/* es */
	ret = mix_dh(hs->chaining_key, key, hs->ephemeral_private, hs->remote_static);
	if (ret < 0)
		goto out;
	/* s */
	encrypt_and_hash(dst->encrypted_static, id->static_public, NOISE_PUBLIC_KEY_LEN, key,
			 hs->hash);
	/* ss */
	ret = mix_precomputed(hs->chaining_key, key, hs->precomputed_static_static);
	if (ret < 0)
		goto out;
	/* {t} */
	wg_noise_tai64n(timestamp, wall_ns);
	encrypt_and_hash(dst->encrypted_timestamp, timestamp, NOISE_TIMESTAMP_LEN, key, hs->hash);

	wg_index_insert(dev, &hs->entry);
	le32_write(&dst->sender_index, hs->entry.index);
	hs->state = HANDSHAKE_CREATED_INITIATION;
	ret = 0;
out:
	if (ret < 0)
		wg_noise_handshake_clear(dev, hs);
	crypto_wipe(key, sizeof(key));
	return ret;
}

struct wg_peer *
wg_noise_handshake_consume_initiation(struct wg_device *dev,
				      const struct message_handshake_initiation *src,
				      uint64_t now_ns, int *ret_reason)
{
	const struct noise_static_identity *id = &dev->identity;
	uint8_t chaining_key[NOISE_HASH_LEN], hash[NOISE_HASH_LEN];
	uint8_t key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t s[NOISE_PUBLIC_KEY_LEN];
	uint8_t t[NOISE_TIMESTAMP_LEN];
	struct noise_handshake *hs;
	struct wg_peer *peer = NULL;
	bool replay, flood;

	*ret_reason = WG_DROP_RX_HANDSHAKE;
	if (!id->has_identity)
		goto out;
	memcpy(chaining_key, initial_chaining_key, NOISE_HASH_LEN);
	memcpy(hash, initial_hash, NOISE_HASH_LEN);
	mix_hash(hash, id->static_public, NOISE_PUBLIC_KEY_LEN);

	/* e */
	message_ephemeral(chaining_key, hash, src->unencrypted_ephemeral);
	/* es */
	if (mix_dh(chaining_key, key, id->static_private, src->unencrypted_ephemeral) < 0)
		goto out;
	/* s */
	if (decrypt_and_hash(s, src->encrypted_static, sizeof(src->encrypted_static), key,
			     hash) < 0)
		goto out;
	peer = wg_peer_lookup(dev, s);
	if (!peer)
		goto out;
	hs = &peer->handshake;
	/* ss */
	if (!hs->static_static_valid ||
	    mix_precomputed(chaining_key, key, hs->precomputed_static_static) < 0)
		goto fail;
	/* {t} */
	if (decrypt_and_hash(t, src->encrypted_timestamp, sizeof(src->encrypted_timestamp), key,
			     hash) < 0)
		goto fail;

	/*
	 * Whitepaper 5.1: a replayed initiation must not make us reset a session, and no peer
	 * may make us do the DH work of a response more than INITIATIONS_PER_SECOND times.
	 */
	replay = memcmp(t, hs->latest_timestamp, NOISE_TIMESTAMP_LEN) <= 0;
	flood = hs->has_consumed_initiation &&
		now_ns < hs->last_initiation_consumption_ns + NSEC_PER_SEC / INITIATIONS_PER_SECOND;
	if (replay || flood) {
		*ret_reason = WG_DROP_RX_REPLAYED_HANDSHAKE;
		goto fail;
	}

	memcpy(hs->remote_ephemeral, src->unencrypted_ephemeral, NOISE_PUBLIC_KEY_LEN);
	memcpy(hs->latest_timestamp, t, NOISE_TIMESTAMP_LEN);
	memcpy(hs->hash, hash, NOISE_HASH_LEN);
	memcpy(hs->chaining_key, chaining_key, NOISE_HASH_LEN);
	hs->remote_index = le32_read(&src->sender_index);
	hs->last_initiation_consumption_ns = now_ns;
	hs->has_consumed_initiation = true;
	hs->state = HANDSHAKE_CONSUMED_INITIATION;
	goto out;
fail:
	peer = NULL;
out:
	crypto_wipe(key, sizeof(key));
	crypto_wipe(chaining_key, sizeof(chaining_key));
	crypto_wipe(hash, sizeof(hash));
	return peer;
}

int wg_noise_handshake_create_response(struct wg_device *dev, struct noise_handshake *hs,
				       struct message_handshake_response *dst)
{
	uint8_t ephemeral_public[NOISE_PUBLIC_KEY_LEN];
	uint8_t key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t tau[NOISE_HASH_LEN];
	int ret = -EINVAL;

	if (hs->state != HANDSHAKE_CONSUMED_INITIATION)
		goto out;
	memset(dst, 0, sizeof(*dst));
	le32_write(&dst->header.type, MESSAGE_HANDSHAKE_RESPONSE);
	le32_write(&dst->receiver_index, hs->remote_index);

	/* e */
	ret = x25519_private_generate(hs->ephemeral_private);
	if (ret < 0)
		goto fail;
	ret = x25519_public_from_private(ephemeral_public, hs->ephemeral_private);
	if (ret < 0)
		goto fail;
	memcpy(dst->unencrypted_ephemeral, ephemeral_public, NOISE_PUBLIC_KEY_LEN);
	message_ephemeral(hs->chaining_key, hs->hash, ephemeral_public);
	/* ee */
	ret = mix_dh(hs->chaining_key, NULL, hs->ephemeral_private, hs->remote_ephemeral);
	if (ret < 0)
		goto fail;
	/* se */
	ret = mix_dh(hs->chaining_key, NULL, hs->ephemeral_private, hs->remote_static);
	if (ret < 0)
		goto fail;
	/* psk */
	wg_kdf(hs->chaining_key, tau, key, hs->chaining_key, hs->preshared_key,
	       NOISE_SYMMETRIC_KEY_LEN);
	mix_hash(hs->hash, tau, sizeof(tau));
	/* {} */
	encrypt_and_hash(dst->encrypted_nothing, NULL, 0, key, hs->hash);

	wg_index_insert(dev, &hs->entry);
	le32_write(&dst->sender_index, hs->entry.index);
	hs->state = HANDSHAKE_CREATED_RESPONSE;
	ret = 0;
	goto out;
fail:
	wg_noise_handshake_clear(dev, hs);
out:
	crypto_wipe(key, sizeof(key));
	crypto_wipe(tau, sizeof(tau));
	return ret;
}

struct wg_peer *wg_noise_handshake_consume_response(struct wg_device *dev,
						    const struct message_handshake_response *src)
{
	const struct noise_static_identity *id = &dev->identity;
	uint8_t chaining_key[NOISE_HASH_LEN], hash[NOISE_HASH_LEN];
	uint8_t key[NOISE_SYMMETRIC_KEY_LEN];
	uint8_t tau[NOISE_HASH_LEN];
	struct noise_handshake *hs;
	struct index_entry *e;
	struct wg_peer *peer = NULL;

	if (!id->has_identity)
		goto out;
	e = wg_index_lookup(dev, le32_read(&src->receiver_index), INDEX_HANDSHAKE);
	if (!e)
		goto out;
	hs = &e->peer->handshake;
	if (hs->state != HANDSHAKE_CREATED_INITIATION)
		goto out;
	memcpy(chaining_key, hs->chaining_key, NOISE_HASH_LEN);
	memcpy(hash, hs->hash, NOISE_HASH_LEN);

	/* e */
	message_ephemeral(chaining_key, hash, src->unencrypted_ephemeral);
	/* ee */
	if (mix_dh(chaining_key, NULL, hs->ephemeral_private, src->unencrypted_ephemeral) < 0)
		goto out;
	/* se */
	if (mix_dh(chaining_key, NULL, id->static_private, src->unencrypted_ephemeral) < 0)
		goto out;
	/* psk */
	wg_kdf(chaining_key, tau, key, chaining_key, hs->preshared_key, NOISE_SYMMETRIC_KEY_LEN);
	mix_hash(hash, tau, sizeof(tau));
	/* {} */
	if (decrypt_and_hash(NULL, src->encrypted_nothing, sizeof(src->encrypted_nothing), key,
			     hash) < 0)
		goto out;

	memcpy(hs->remote_ephemeral, src->unencrypted_ephemeral, NOISE_PUBLIC_KEY_LEN);
	memcpy(hs->hash, hash, NOISE_HASH_LEN);
	memcpy(hs->chaining_key, chaining_key, NOISE_HASH_LEN);
	hs->remote_index = le32_read(&src->sender_index);
	hs->state = HANDSHAKE_CONSUMED_RESPONSE;
	peer = e->peer;
out:
	crypto_wipe(key, sizeof(key));
	crypto_wipe(tau, sizeof(tau));
	crypto_wipe(chaining_key, sizeof(chaining_key));
	crypto_wipe(hash, sizeof(hash));
	return peer;
}

struct noise_keypair *wg_noise_keypair_get(struct noise_keypair *kp)
{
	wg_noise_keypair_get_n(kp, 1);
	return kp;
}

void wg_noise_keypair_get_n(struct noise_keypair *kp, unsigned n)
{
	if (kp)
		__atomic_add_fetch(&kp->refcount, (int)n, __ATOMIC_RELAXED);
}

void wg_noise_keypair_put(struct noise_keypair *kp)
{
	wg_noise_keypair_put_n(kp, 1);
}

void wg_noise_keypair_put_n(struct noise_keypair *kp, unsigned n)
{
	if (!kp)
		return;
	if (__atomic_sub_fetch(&kp->refcount, (int)n, __ATOMIC_ACQ_REL) != 0)
		return;
	crypto_wipe(kp, sizeof(*kp));
	free(kp);
}

/* Takes a keypair out of a slot: no longer reachable by index, then the slot's ref dropped. */
static void keypair_drop(struct wg_device *dev, struct noise_keypair **slot)
{
	struct noise_keypair *kp = *slot;

	if (!kp)
		return;
	/* Takes of packets not yet counted count first: the slot's reference may be the last. */
	wg_ref_flush(dev);
	*slot = NULL;
	kp->send_valid = false;
	kp->recv_valid = false;
	wg_index_remove(dev, &kp->entry);
	wg_noise_keypair_put(kp);
}

int wg_noise_handshake_begin_session(struct wg_device *dev, struct noise_handshake *hs,
				     struct noise_keypairs *kps, uint64_t now_ns)
{
	struct noise_keypair *kp;
	int ret = -EINVAL;

	if (hs->state != HANDSHAKE_CONSUMED_RESPONSE && hs->state != HANDSHAKE_CREATED_RESPONSE)
		goto out;
	kp = calloc(1, sizeof(*kp));
	if (!kp) {
		ret = -ENOMEM;
		goto out;
	}
	kp->refcount = 1;
	kp->initiator = hs->state == HANDSHAKE_CONSUMED_RESPONSE;
	if (kp->initiator)
		wg_kdf(kp->send_key, kp->recv_key, NULL, hs->chaining_key, NULL, 0);
	else
		wg_kdf(kp->recv_key, kp->send_key, NULL, hs->chaining_key, NULL, 0);
	kp->remote_index = hs->remote_index;
	kp->birth_ns = now_ns;
	kp->send_valid = true;
	kp->recv_valid = true;
	replay_window_init(&kp->replay);
	kp->entry.type = INDEX_KEYPAIR;
	kp->entry.peer = hs->entry.peer;
	kp->entry.keypair = kp;
	/* The peer addresses its data to the index it learnt during this handshake. */
	wg_index_replace(dev, &hs->entry, &kp->entry);
	wg_noise_handshake_clear(dev, hs);

	if (kp->initiator) {
		/*
		 * A confirmed "next" we never received on becomes "previous" so late packets
		 * for it still decrypt; otherwise the old current does.
		 */
		if (kps->next) {
			keypair_drop(dev, &kps->previous);
			kps->previous = kps->next;
			kps->next = NULL;
			keypair_drop(dev, &kps->current);
		} else {
			keypair_drop(dev, &kps->previous);
			kps->previous = kps->current;
		}
		kps->current = kp;
	} else {
		/* The responder may not send until the initiator proves it has the keys. */
		keypair_drop(dev, &kps->next);
		kps->next = kp;
		keypair_drop(dev, &kps->previous);
	}
	ret = 0;
out:
	return ret;
}

bool wg_noise_received_with_keypair(struct wg_device *dev, struct noise_keypairs *kps,
				    struct noise_keypair *kp)
{
	if (kps->next != kp)
		return false;
	keypair_drop(dev, &kps->previous);
	kps->previous = kps->current;
	kps->current = kps->next;
	kps->next = NULL;
	return true;
}

void wg_noise_keypairs_clear(struct wg_device *dev, struct noise_keypairs *kps)
{
	keypair_drop(dev, &kps->previous);
	keypair_drop(dev, &kps->current);
	keypair_drop(dev, &kps->next);
}

void wg_noise_expire_current_peer_keypairs(struct wg_device *dev, struct wg_peer *peer)
{
	wg_noise_handshake_clear(dev, &peer->handshake);
	/*
	 * The sessions just invalidated must be replaced at once: the REKEY_TIMEOUT spacing of
	 * initiations counted from one made with the old identity would only delay that.
	 */
	peer->last_sent_handshake_ns = TIME_NEVER;
	if (peer->keypairs.next)
		peer->keypairs.next->send_valid = false;
	if (peer->keypairs.current)
		peer->keypairs.current->send_valid = false;
}
