/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "crypto/crypto.h"
#include "wg/cookie.h"
#include "wg/noise.h"

/*
 * mac1 = MAC(HASH(LABEL_MAC1 || S_pub_receiver), msg up to mac1) proves the sender
 * knows our public key; mac2 = MAC(cookie, msg up to mac2) proves it can receive at
 * its source address, because the cookie is MAC(secret, source ip || port) and only
 * reached it in a cookie reply to that address.
 */

static void precompute_key(uint8_t key[NOISE_SYMMETRIC_KEY_LEN], const uint8_t pub[32],
			   const char *label)
{
	struct blake2s_state s;

	blake2s_init(&s, NOISE_SYMMETRIC_KEY_LEN);
	blake2s_update(&s, label, 8);
	blake2s_update(&s, pub, NOISE_PUBLIC_KEY_LEN);
	blake2s_final(&s, key);
}

void wg_cookie_checker_precompute_device_keys(struct cookie_checker *c,
					      const struct noise_static_identity *id)
{
	if (id->has_identity) {
		precompute_key(c->mac1_key, id->static_public, LABEL_MAC1);
		precompute_key(c->cookie_encryption_key, id->static_public, LABEL_COOKIE);
	} else {
		memset(c->mac1_key, 0, sizeof(c->mac1_key));
		memset(c->cookie_encryption_key, 0, sizeof(c->cookie_encryption_key));
	}
}

void wg_cookie_checker_wipe(struct cookie_checker *c)
{
	crypto_wipe(c, sizeof(*c));
}

void wg_cookie_init(struct cookie *ck, const uint8_t peer_public[NOISE_PUBLIC_KEY_LEN])
{
	memset(ck, 0, sizeof(*ck));
	precompute_key(ck->mac1_key, peer_public, LABEL_MAC1);
	precompute_key(ck->cookie_decryption_key, peer_public, LABEL_COOKIE);
}

static void compute_mac1(uint8_t mac1[COOKIE_LEN], const uint8_t *msg, size_t len,
			 const uint8_t key[NOISE_SYMMETRIC_KEY_LEN])
{
	len -= sizeof(struct message_macs);
	blake2s(mac1, COOKIE_LEN, msg, len, key, NOISE_SYMMETRIC_KEY_LEN);
}

static void compute_mac2(uint8_t mac2[COOKIE_LEN], const uint8_t *msg, size_t len,
			 const uint8_t cookie[COOKIE_LEN])
{
	len -= sizeof(struct message_macs) / 2;
	blake2s(mac2, COOKIE_LEN, msg, len, cookie, COOKIE_LEN);
}

static void make_cookie(uint8_t cookie[COOKIE_LEN], struct cookie_checker *c,
			const struct endpoint *src, uint64_t now_ns)
{
	struct blake2s_state s;

	if (!c->has_secret || now_ns - c->secret_birth_ns >= COOKIE_SECRET_MAX_AGE_NS) {
		crypto_random(c->secret, sizeof(c->secret));
		c->secret_birth_ns = now_ns;
		c->has_secret = true;
	}
	blake2s_init_key(&s, COOKIE_LEN, c->secret, sizeof(c->secret));
	if (src->sa.sa_family == AF_INET) {
		blake2s_update(&s, &src->in4.sin_addr, 4);
		blake2s_update(&s, &src->in4.sin_port, 2);
	} else if (src->sa.sa_family == AF_INET6) {
		blake2s_update(&s, &src->in6.sin6_addr, 16);
		blake2s_update(&s, &src->in6.sin6_port, 2);
	} else if (endpoint_is_handle(src)) {
		/* The path layer reports a known path of a peer as its handle. */
		blake2s_update(&s, &src->handle.id, sizeof(src->handle.id));
	}
	blake2s_final(&s, cookie);
}

enum cookie_mac_state wg_cookie_validate_packet(struct cookie_checker *c, const uint8_t *msg,
						size_t len, const struct endpoint *src,
						bool check_cookie, uint64_t now_ns)
{
	const struct message_macs *macs = (const void *)(msg + len - sizeof(*macs));
	uint8_t computed[COOKIE_LEN], cookie[COOKIE_LEN];
	enum cookie_mac_state ret = INVALID_MAC;

	compute_mac1(computed, msg, len, c->mac1_key);
	if (!crypto_equal(computed, macs->mac1, COOKIE_LEN))
		goto out;
	ret = VALID_MAC_BUT_NO_COOKIE;
	if (!check_cookie)
		goto out;
	make_cookie(cookie, c, src, now_ns);
	compute_mac2(computed, msg, len, cookie);
	if (!crypto_equal(computed, macs->mac2, COOKIE_LEN))
		goto out;
	ret = VALID_MAC_WITH_COOKIE;
out:
	crypto_wipe(cookie, sizeof(cookie));
	return ret;
}

void wg_cookie_add_mac_to_packet(struct cookie *ck, uint8_t *msg, size_t len, uint64_t now_ns)
{
	struct message_macs *macs = (void *)(msg + len - sizeof(*macs));

	compute_mac1(macs->mac1, msg, len, ck->mac1_key);
	memcpy(ck->last_mac1_sent, macs->mac1, COOKIE_LEN);
	ck->have_sent_mac1 = true;
	ck->last_mac1_sent_ns = now_ns;
	/* The peer's secret may rotate while our copy travels: stop using it a little early. */
	if (ck->is_valid &&
	    now_ns - ck->birth_ns < COOKIE_SECRET_MAX_AGE_NS - COOKIE_SECRET_LATENCY_NS)
		compute_mac2(macs->mac2, msg, len, ck->cookie);
	else
		memset(macs->mac2, 0, COOKIE_LEN);
}

int wg_cookie_message_create(struct cookie_checker *c, struct message_handshake_cookie *dst,
			     const uint8_t *msg, size_t len, uint32_t index,
			     const struct endpoint *src, uint64_t now_ns)
{
	const struct message_macs *macs = (const void *)(msg + len - sizeof(*macs));
	uint8_t cookie[COOKIE_LEN];
	int ret;

	memset(dst, 0, sizeof(*dst));
	le32_write(&dst->header.type, MESSAGE_HANDSHAKE_COOKIE);
	le32_write(&dst->receiver_index, index);
	ret = crypto_random(dst->nonce, sizeof(dst->nonce));
	if (ret < 0)
		goto out;
	make_cookie(cookie, c, src, now_ns);
	ret = xchacha20poly1305_encrypt(dst->encrypted_cookie, cookie, COOKIE_LEN, macs->mac1,
					COOKIE_LEN, dst->nonce, c->cookie_encryption_key);
out:
	crypto_wipe(cookie, sizeof(cookie));
	return ret < 0 ? ret : 0;
}

int wg_cookie_message_consume(struct cookie *ck, const struct message_handshake_cookie *src,
			      uint64_t now_ns)
{
	uint8_t cookie[COOKIE_LEN];
	int ret = -EINVAL;

	if (!ck->have_sent_mac1 || now_ns - ck->last_mac1_sent_ns > COOKIE_REPLY_MAX_AGE_NS)
		goto out;
	ret = xchacha20poly1305_decrypt(cookie, src->encrypted_cookie,
					sizeof(src->encrypted_cookie), ck->last_mac1_sent,
					COOKIE_LEN, src->nonce, ck->cookie_decryption_key);
	if (ret < 0) {
		ret = -EBADMSG;
		goto out;
	}
	memcpy(ck->cookie, cookie, COOKIE_LEN);
	ck->birth_ns = now_ns;
	ck->is_valid = true;
	/* One reply per message we sent: a replayed reply finds nothing to answer. */
	ck->have_sent_mac1 = false;
	ret = 0;
out:
	crypto_wipe(cookie, sizeof(cookie));
	return ret;
}
