/* SPDX-License-Identifier: MIT */
/* Disco message codec (msg.h). */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "crypto/crypto.h"
#include "disco/msg.h"

#define PLAIN_MAX (2 + DISCO_CANDIDATES_MAX * DISCO_ADDR_LEN)
#define VERSION 0

_Static_assert(PLAIN_MAX >= DISCO_PING_LEN && PLAIN_MAX >= DISCO_PONG_LEN, "plaintext room");

int disco_msg_shared(uint8_t ret[DISCO_KEY_LEN], const uint8_t priv[DISCO_KEY_LEN],
		     const uint8_t peer_pub[DISCO_KEY_LEN])
{
	uint8_t dh[X25519_KEY_LEN];
	int r;

	r = x25519_shared(dh, priv, peer_pub);
	if (r < 0)
		goto out;
	/* A domain label keeps this key apart from any other use of the same X25519 result. */
	blake2s(ret, DISCO_KEY_LEN, dh, sizeof(dh), "trellis disco box", 17);
out:
	crypto_wipe(dh, sizeof(dh));
	return r;
}

/* An address as 16 bytes (IPv4 mapped) and a port, big-endian. -EINVAL: no address. */
static int addr_put(uint8_t *p, const struct endpoint *ep)
{
	if (ep->sa.sa_family == AF_INET) {
		memset(p, 0, 10);
		p[10] = p[11] = 0xff;
		memcpy(p + 12, &ep->in4.sin_addr, 4);
		memcpy(p + 16, &ep->in4.sin_port, 2);
		return 0;
	}
	if (ep->sa.sa_family == AF_INET6) {
		memcpy(p, &ep->in6.sin6_addr, 16);
		memcpy(p + 16, &ep->in6.sin6_port, 2);
		return 0;
	}
	return -EINVAL;
}

static void addr_get(struct endpoint *ret, const uint8_t *p)
{
	static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(ret, 0, sizeof(*ret));
	if (!memcmp(p, mapped, sizeof(mapped))) {
		ret->in4.sin_family = AF_INET;
		memcpy(&ret->in4.sin_addr, p + 12, 4);
		memcpy(&ret->in4.sin_port, p + 16, 2);
	} else {
		ret->in6.sin6_family = AF_INET6;
		memcpy(&ret->in6.sin6_addr, p, 16);
		memcpy(&ret->in6.sin6_port, p + 16, 2);
	}
}

/* The plaintext of m: its length or -EINVAL. */
static int plain_put(uint8_t *p, const struct disco_msg *m)
{
	int len = 2;

	p[0] = (uint8_t)m->type;
	p[1] = VERSION;
	switch (m->type) {
	case DISCO_PING:
		memcpy(p + len, m->txid, DISCO_TXID_LEN);
		memcpy(p + len + DISCO_TXID_LEN, m->node_key, DISCO_KEY_LEN);
		return DISCO_PING_LEN;
	case DISCO_PONG:
		memcpy(p + len, m->txid, DISCO_TXID_LEN);
		if (addr_put(p + len + DISCO_TXID_LEN, &m->observed) < 0)
			return -EINVAL;
		return DISCO_PONG_LEN;
	case DISCO_CALL_ME_MAYBE:
		if (m->n_candidates > DISCO_CANDIDATES_MAX)
			return -EINVAL;
		for (unsigned i = 0; i < m->n_candidates; i++, len += DISCO_ADDR_LEN)
			if (addr_put(p + len, &m->candidates[i]) < 0)
				return -EINVAL;
		return len;
	}
	return -EINVAL;
}

int disco_msg_seal(uint8_t *buf, size_t cap, const struct disco_msg *m,
		   const uint8_t sender_pub[DISCO_KEY_LEN], const uint8_t shared[DISCO_KEY_LEN])
{
	uint8_t plain[PLAIN_MAX];
	struct disco_header *h = (struct disco_header *)buf;
	int len, r;

	len = plain_put(plain, m);
	if (len < 0)
		return len;
	if (cap < DISCO_HEADER_LEN + (size_t)len + DISCO_TAG_LEN)
		return -ENOBUFS;
	memcpy(h->magic, DISCO_MAGIC, DISCO_MAGIC_LEN);
	memcpy(h->sender_key, sender_pub, DISCO_KEY_LEN);
	r = crypto_random(h->nonce, DISCO_NONCE_LEN);
	if (r < 0)
		return r;
	r = xchacha20poly1305_encrypt(buf + DISCO_HEADER_LEN, plain, (size_t)len, buf,
				      DISCO_HEADER_LEN, h->nonce, shared);
	if (r < 0)
		return r;
	return (int)DISCO_HEADER_LEN + len + DISCO_TAG_LEN;
}

const uint8_t *disco_msg_sender(const uint8_t *d, size_t len)
{
	if (len < DISCO_MIN_LEN || memcmp(d, DISCO_MAGIC, DISCO_MAGIC_LEN))
		return NULL;
	return d + DISCO_MAGIC_LEN;
}

int disco_msg_open(struct disco_msg *ret, const uint8_t *d, size_t len,
		   const uint8_t shared[DISCO_KEY_LEN])
{
	uint8_t plain[PLAIN_MAX];
	const struct disco_header *h = (const struct disco_header *)d;
	struct disco_msg m;
	size_t n;
	int r = -EBADMSG;

	if (!disco_msg_sender(d, len) || len - DISCO_HEADER_LEN - DISCO_TAG_LEN > PLAIN_MAX)
		return -EBADMSG;
	n = len - DISCO_HEADER_LEN - DISCO_TAG_LEN;
	if (xchacha20poly1305_decrypt(plain, d + DISCO_HEADER_LEN, len - DISCO_HEADER_LEN, d,
				      DISCO_HEADER_LEN, h->nonce, shared) < 0)
		goto out;
	r = -EPROTO;
	if (n < 2 || plain[1] != VERSION)
		goto out;
	memset(&m, 0, sizeof(m));
	m.type = plain[0];
	switch (m.type) {
	case DISCO_PING:
		if (n != DISCO_PING_LEN)
			goto out;
		memcpy(m.txid, plain + 2, DISCO_TXID_LEN);
		memcpy(m.node_key, plain + 2 + DISCO_TXID_LEN, DISCO_KEY_LEN);
		break;
	case DISCO_PONG:
		if (n != DISCO_PONG_LEN)
			goto out;
		memcpy(m.txid, plain + 2, DISCO_TXID_LEN);
		addr_get(&m.observed, plain + 2 + DISCO_TXID_LEN);
		break;
	case DISCO_CALL_ME_MAYBE:
		if ((n - 2) % DISCO_ADDR_LEN)
			goto out;
		m.n_candidates = (unsigned)((n - 2) / DISCO_ADDR_LEN);
		for (unsigned i = 0; i < m.n_candidates; i++)
			addr_get(&m.candidates[i], plain + 2 + i * DISCO_ADDR_LEN);
		break;
	default:
		goto out;
	}
	*ret = m;
	r = 0;
out:
	crypto_wipe(plain, sizeof(plain));
	return r;
}
