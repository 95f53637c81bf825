/* SPDX-License-Identifier: MIT */
/*
 * The relay protocol (docs/relay-protocol.md). States of one end:
 *
 *   client: WAIT_SERVER_KEY --server-key/queue client-info--> WAIT_SERVER_INFO
 *           --server-info--> ESTABLISHED
 *   server: WAIT_CLIENT_INFO (server-key queued at init) --client-info proven-->
 *           WAIT_ACCEPT --relay_conn_server_accept/queue server-info--> ESTABLISHED
 *   either: any error -> dead (c->err), for good.
 *
 * The proof: client-info carries the client's node key and a box sealed with a
 * key derived from X25519(node key, server key), whose associated data holds
 * the server key and the random challenge of this connection's server-key
 * frame. Opening it proves the client holds the node key's private half, and
 * the challenge makes it useless on any other connection. server-info is sealed
 * with the same key and bound to client-info's nonce, which proves to the
 * client, for this connection, that the server holds the private half of the
 * key it announced (the key the relay map pins).
 *
 * Until the client is proven, frames are capped at RELAY_HS_FRAME_MAX, so an
 * unauthenticated connection costs at most that much buffer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/pkt.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "proto/relay.h"

/* Buffers above this are released once their frame is handed out (idle clients stay small). */
#define READER_KEEP 4096

/* server-key payload: magic, version, server key, challenge (longer is allowed: future fields). */
#define SERVER_KEY_LEN (RELAY_MAGIC_LEN + 1 + RELAY_KEY_LEN + RELAY_CHALLENGE_LEN)
#define TAG_LEN CHACHA20POLY1305_TAG_LEN
/* client-info: node key, nonce, box; server-info: nonce, box. */
#define CLIENT_INFO_MIN (RELAY_KEY_LEN + RELAY_NONCE_LEN + TAG_LEN)
#define SERVER_INFO_MIN (RELAY_NONCE_LEN + TAG_LEN)
/*
 * Associated data of both boxes: frame type, server key, challenge, client key,
 * and for server-info the client-info's nonce too, so that the client, like the
 * server, gets a proof made for this connection only.
 */
#define AD_LEN (1 + RELAY_KEY_LEN + RELAY_CHALLENGE_LEN + RELAY_KEY_LEN + RELAY_NONCE_LEN)
#define BOX_LABEL "trellis relay v1 box"
#define MESH_LABEL "trellis relay v1 mesh"

/* Items of the sealed infos: type (1), length (1), value; unknown types are skipped. */
enum {
	INFO_VERSION = 1,
	INFO_MESH_PROOF = 2,   /* client-info */
	INFO_KEEPALIVE_MS = 2, /* server-info */
	INFO_RATE_BYTES = 3,
	INFO_BURST_BYTES = 4,
	INFO_RATE_PACKETS = 5,
	INFO_SERVER_MESH_PROOF = 6,
	INFO_TYPES = 7,
};
static const uint8_t client_info_sizes[INFO_TYPES] = {
    [INFO_VERSION] = 1,
    [INFO_MESH_PROOF] = RELAY_KEY_LEN,
};
static const uint8_t server_info_sizes[INFO_TYPES] = {
    [INFO_VERSION] = 1,	    [INFO_KEEPALIVE_MS] = 4, [INFO_RATE_BYTES] = 4,
    [INFO_BURST_BYTES] = 4, [INFO_RATE_PACKETS] = 4, [INFO_SERVER_MESH_PROOF] = RELAY_KEY_LEN,
};

/* ---- framing ---- */

void relay_reader_init(struct relay_reader *r, uint32_t max)
{
	memset(r, 0, sizeof(*r));
	r->max = MIN(max, (uint32_t)RELAY_FRAME_MAX);
}

void relay_reader_set_max(struct relay_reader *r, uint32_t max)
{
	r->max = MIN(max, (uint32_t)RELAY_FRAME_MAX);
}

static void reader_release(struct relay_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	r->cap = 0;
}

void relay_reader_clear(struct relay_reader *r)
{
	reader_release(r);
	memset(r, 0, sizeof(*r));
}

static int reader_fail(struct relay_reader *r, int err)
{
	r->err = err;
	reader_release(r);
	return err;
}

int relay_reader_next(struct relay_reader *r, const uint8_t **in, size_t *len,
		      struct relay_frame *ret)
{
	const uint8_t *p = *in;
	size_t n = *len, k;

	if (r->err)
		return r->err;
	if (r->taken) {
		r->taken = false;
		r->hdr_len = 0;
		if (r->cap > READER_KEEP)
			reader_release(r);
	}
	while (n > 0) {
		if (r->hdr_len < RELAY_HDR_LEN) {
			/* A frame that is whole in the input is handed out where it lies. */
			if (r->hdr_len == 0 && n >= RELAY_HDR_LEN) {
				uint32_t flen = get_be32(p + 1);

				if (flen > r->max)
					return reader_fail(r, -EMSGSIZE);
				if (n - RELAY_HDR_LEN >= flen) {
					ret->type = p[0];
					ret->len = flen;
					ret->data = p + RELAY_HDR_LEN;
					*in = p + RELAY_HDR_LEN + flen;
					*len = n - RELAY_HDR_LEN - flen;
					return 1;
				}
			}
			k = MIN(n, (size_t)(RELAY_HDR_LEN - r->hdr_len));
			memcpy(r->hdr + r->hdr_len, p, k);
			r->hdr_len += (uint8_t)k;
			p += k;
			n -= k;
			if (r->hdr_len < RELAY_HDR_LEN)
				break;
			r->type = r->hdr[0];
			r->len = get_be32(r->hdr + 1);
			r->got = 0;
			/* Checked before a byte of the payload is buffered. */
			if (r->len > r->max)
				return reader_fail(r, -EMSGSIZE);
			if (r->len == 0)
				goto done;
			continue;
		}
		k = MIN(n, (size_t)(r->len - r->got));
		/* Grow with the bytes that arrived, doubling, never past the declared length. */
		if (r->got + k > r->cap) {
			uint32_t want =
			    MAX(r->got + (uint32_t)k, MIN(r->len, MAX(r->cap * 2, 256u)));
			uint8_t *b = realloc(r->buf, want);

			if (!b)
				return reader_fail(r, -ENOMEM);
			r->buf = b;
			r->cap = want;
		}
		memcpy(r->buf + r->got, p, k);
		r->got += (uint32_t)k;
		p += k;
		n -= k;
		if (r->got == r->len)
			goto done;
	}
	*in = p;
	*len = n;
	return 0;
done:
	*in = p;
	*len = n;
	r->taken = true;
	ret->type = r->type;
	ret->len = r->len;
	ret->data = r->len ? r->buf : p;
	return 1;
}

/* ---- frames after the handshake ---- */

/* IPv4 travels as an IPv4-mapped IPv6 address; all zeros means "no endpoint". */
static void endpoint_put18(uint8_t *p, const struct endpoint *ep)
{
	memset(p, 0, 18);
	if (ep->sa.sa_family == AF_INET) {
		p[10] = p[11] = 0xff;
		memcpy(p + 12, &ep->in4.sin_addr, 4);
		memcpy(p + 16, &ep->in4.sin_port, 2);
	} else if (ep->sa.sa_family == AF_INET6) {
		memcpy(p, &ep->in6.sin6_addr, 16);
		memcpy(p + 16, &ep->in6.sin6_port, 2);
	}
}

static void endpoint_get18(struct endpoint *ep, const uint8_t *p)
{
	static const uint8_t zero[18], v4mapped[12] = {[10] = 0xff, [11] = 0xff};

	memset(ep, 0, sizeof(*ep));
	if (!memcmp(p, zero, sizeof(zero))) {
		ep->sa.sa_family = AF_UNSPEC;
	} else if (!memcmp(p, v4mapped, sizeof(v4mapped))) {
		ep->in4.sin_family = AF_INET;
		memcpy(&ep->in4.sin_addr, p + 12, 4);
		memcpy(&ep->in4.sin_port, p + 16, 2);
	} else {
		ep->in6.sin6_family = AF_INET6;
		memcpy(&ep->in6.sin6_addr, p, 16);
		memcpy(&ep->in6.sin6_port, p + 16, 2);
	}
}

/* The health text goes into logs: one line of printable bytes (UTF-8 allowed). */
static bool text_ok(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] < 0x20 || p[i] == 0x7f)
			return false;
	return true;
}

int relay_msg_decode(struct relay_msg *ret, uint8_t type, const uint8_t *payload, size_t len)
{
	struct relay_msg m = {.type = type, .data = payload};

	switch (type) {
	case RELAY_SERVER_KEY:
	case RELAY_CLIENT_INFO:
	case RELAY_SERVER_INFO:
		return -EPROTO;
	case RELAY_SEND_PACKET:
	case RELAY_RECV_PACKET:
		if (len < RELAY_KEY_LEN || len - RELAY_KEY_LEN > RELAY_PACKET_MAX)
			return -EBADMSG;
		memcpy(m.key, payload, RELAY_KEY_LEN);
		m.data = payload + RELAY_KEY_LEN;
		m.len = len - RELAY_KEY_LEN;
		break;
	case RELAY_FORWARD_PACKET:
		if (len < 2 * RELAY_KEY_LEN || len - 2 * RELAY_KEY_LEN > RELAY_PACKET_MAX)
			return -EBADMSG;
		memcpy(m.key, payload, RELAY_KEY_LEN);
		memcpy(m.dst, payload + RELAY_KEY_LEN, RELAY_KEY_LEN);
		m.data = payload + 2 * RELAY_KEY_LEN;
		m.len = len - 2 * RELAY_KEY_LEN;
		break;
	case RELAY_KEEPALIVE:
	case RELAY_WATCH_CONNS:
		if (len != 0)
			return -EBADMSG;
		break;
	case RELAY_NOTE_PREFERRED:
		if (len != 1 || payload[0] > 1)
			return -EBADMSG;
		m.preferred = payload[0];
		break;
	case RELAY_PEER_GONE:
		if (len != RELAY_KEY_LEN && len != RELAY_KEY_LEN + 1)
			return -EBADMSG;
		memcpy(m.key, payload, RELAY_KEY_LEN);
		m.reason = len > RELAY_KEY_LEN ? payload[RELAY_KEY_LEN] : RELAY_GONE_DISCONNECTED;
		break;
	case RELAY_PEER_PRESENT:
		if (len != RELAY_KEY_LEN && len != RELAY_KEY_LEN + 18 && len != RELAY_KEY_LEN + 19)
			return -EBADMSG;
		memcpy(m.key, payload, RELAY_KEY_LEN);
		if (len > RELAY_KEY_LEN)
			endpoint_get18(&m.ep, payload + RELAY_KEY_LEN);
		if (len > RELAY_KEY_LEN + 18)
			m.flags = payload[RELAY_KEY_LEN + 18];
		break;
	case RELAY_CLOSE_PEER:
		if (len != RELAY_KEY_LEN)
			return -EBADMSG;
		memcpy(m.key, payload, RELAY_KEY_LEN);
		break;
	case RELAY_PING:
	case RELAY_PONG:
		if (len != RELAY_PING_LEN)
			return -EBADMSG;
		memcpy(m.ping, payload, RELAY_PING_LEN);
		break;
	case RELAY_HEALTH:
		if (len > RELAY_HEALTH_MAX || !text_ok(payload, len))
			return -EBADMSG;
		m.len = len;
		break;
	default:
		return -ENOTSUP;
	}
	*ret = m;
	return 0;
}

ssize_t relay_msg_encode(uint8_t *buf, size_t cap, const struct relay_msg *m)
{
	size_t len;
	uint8_t *p = buf + RELAY_HDR_LEN;

	switch (m->type) {
	case RELAY_SEND_PACKET:
	case RELAY_RECV_PACKET:
		if (m->len > RELAY_PACKET_MAX)
			return -EMSGSIZE;
		len = RELAY_KEY_LEN + m->len;
		break;
	case RELAY_FORWARD_PACKET:
		if (m->len > RELAY_PACKET_MAX)
			return -EMSGSIZE;
		len = 2 * RELAY_KEY_LEN + m->len;
		break;
	case RELAY_KEEPALIVE:
	case RELAY_WATCH_CONNS:
		len = 0;
		break;
	case RELAY_NOTE_PREFERRED:
		len = 1;
		break;
	case RELAY_PEER_GONE:
		len = RELAY_KEY_LEN + 1;
		break;
	case RELAY_PEER_PRESENT:
		len = RELAY_KEY_LEN;
		if (endpoint_is_set(&m->ep) || m->flags)
			len += m->flags ? 19 : 18;
		break;
	case RELAY_CLOSE_PEER:
		len = RELAY_KEY_LEN;
		break;
	case RELAY_PING:
	case RELAY_PONG:
		len = RELAY_PING_LEN;
		break;
	case RELAY_HEALTH:
		if (m->len > RELAY_HEALTH_MAX || !text_ok(m->data, m->len))
			return -EMSGSIZE;
		len = m->len;
		break;
	default:
		return -EINVAL;
	}
	if (cap < RELAY_HDR_LEN || cap - RELAY_HDR_LEN < len)
		return -ENOBUFS;
	buf[0] = m->type;
	put_be32(buf + 1, (uint32_t)len);
	switch (m->type) {
	case RELAY_FORWARD_PACKET:
		memcpy(p, m->key, RELAY_KEY_LEN);
		memcpy(p + RELAY_KEY_LEN, m->dst, RELAY_KEY_LEN);
		if (m->len)
			memcpy(p + 2 * RELAY_KEY_LEN, m->data, m->len);
		break;
	case RELAY_SEND_PACKET:
	case RELAY_RECV_PACKET:
		if (m->len)
			memcpy(p + RELAY_KEY_LEN, m->data, m->len);
		/* fall through */
	case RELAY_CLOSE_PEER:
		memcpy(p, m->key, RELAY_KEY_LEN);
		break;
	case RELAY_NOTE_PREFERRED:
		p[0] = m->preferred;
		break;
	case RELAY_PEER_GONE:
		memcpy(p, m->key, RELAY_KEY_LEN);
		p[RELAY_KEY_LEN] = m->reason;
		break;
	case RELAY_PEER_PRESENT:
		memcpy(p, m->key, RELAY_KEY_LEN);
		if (len > RELAY_KEY_LEN)
			endpoint_put18(p + RELAY_KEY_LEN, &m->ep);
		if (len > RELAY_KEY_LEN + 18)
			p[RELAY_KEY_LEN + 18] = m->flags;
		break;
	case RELAY_PING:
	case RELAY_PONG:
		memcpy(p, m->ping, RELAY_PING_LEN);
		break;
	case RELAY_HEALTH:
		if (m->len)
			memcpy(p, m->data, m->len);
		break;
	}
	return (ssize_t)(RELAY_HDR_LEN + len);
}

int relay_packet_header_put(uint8_t hdr[RELAY_PACKET_HDR_LEN], uint8_t type,
			    const uint8_t key[RELAY_KEY_LEN], size_t data_len)
{
	if (type != RELAY_SEND_PACKET && type != RELAY_RECV_PACKET)
		return -EINVAL;
	if (data_len > RELAY_PACKET_MAX)
		return -EMSGSIZE;
	hdr[0] = type;
	put_be32(hdr + 1, (uint32_t)(RELAY_KEY_LEN + data_len));
	memcpy(hdr + RELAY_HDR_LEN, key, RELAY_KEY_LEN);
	return 0;
}

int relay_pkt_push_send(struct pkt *p, const uint8_t dst[RELAY_KEY_LEN])
{
	int ret;

	if (pkt_headroom(p) < RELAY_PACKET_HDR_LEN)
		return -ENOBUFS;
	ret =
	    relay_packet_header_put(p->data - RELAY_PACKET_HDR_LEN, RELAY_SEND_PACKET, dst, p->len);
	if (ret < 0)
		return ret;
	p->data -= RELAY_PACKET_HDR_LEN;
	p->len += RELAY_PACKET_HDR_LEN;
	return 0;
}

/* ---- the sealed infos ---- */

static void info_put(uint8_t *p, size_t *off, uint8_t type, const void *v, uint8_t len)
{
	p[(*off)++] = type;
	p[(*off)++] = len;
	memcpy(p + *off, v, len);
	*off += len;
}

static void info_put32(uint8_t *p, size_t *off, uint8_t type, uint32_t v)
{
	uint8_t b[4];

	put_be32(b, v);
	info_put(p, off, type, b, 4);
}

/*
 * Finds the known items (sizes[type] != 0) of an info: each at most once and
 * of exactly its size; items of other types are skipped so that a newer peer
 * can add some. vals[type] is NULL for an absent item. 0 or -EBADMSG.
 */
static int info_parse(const uint8_t *p, size_t len, const uint8_t sizes[INFO_TYPES],
		      const uint8_t *vals[INFO_TYPES])
{
	size_t off = 0;

	memset(vals, 0, INFO_TYPES * sizeof(vals[0]));
	while (off < len) {
		uint8_t type, ilen;

		if (len - off < 2)
			return -EBADMSG;
		type = p[off];
		ilen = p[off + 1];
		off += 2;
		if (len - off < ilen)
			return -EBADMSG;
		if (type < INFO_TYPES && sizes[type]) {
			if (vals[type] || ilen != sizes[type])
				return -EBADMSG;
			vals[type] = p + off;
		}
		off += ilen;
	}
	return 0;
}

/* Returns the length of the associated data. */
static size_t box_ad(const struct relay_conn *c, uint8_t type, uint8_t ad[AD_LEN])
{
	uint8_t *p = ad;

	*p++ = type;
	memcpy(p, c->server_pub, RELAY_KEY_LEN);
	p += RELAY_KEY_LEN;
	memcpy(p, c->challenge, RELAY_CHALLENGE_LEN);
	p += RELAY_CHALLENGE_LEN;
	memcpy(p, c->client_pub, RELAY_KEY_LEN);
	p += RELAY_KEY_LEN;
	if (type == RELAY_SERVER_INFO) {
		memcpy(p, c->client_nonce, RELAY_NONCE_LEN);
		p += RELAY_NONCE_LEN;
	}
	return (size_t)(p - ad);
}

/*
 * The box key: BLAKE2s keyed with the X25519 result over both public keys, so
 * the raw shared secret is never a cipher key and the key names both ends.
 * Our own public half is at hand (conn_init): x25519_shared_pair, one scalar
 * multiplication where x25519_shared costs two.
 */
static int box_key_derive(struct relay_conn *c, const uint8_t peer_pub[RELAY_KEY_LEN])
{
	uint8_t shared[X25519_KEY_LEN], in[sizeof(BOX_LABEL) - 1 + 2 * RELAY_KEY_LEN];
	int ret;

	ret = x25519_shared_pair(shared, c->priv, c->server ? c->server_pub : c->client_pub,
				 peer_pub);
	if (ret < 0)
		goto out;
	memcpy(in, BOX_LABEL, sizeof(BOX_LABEL) - 1);
	memcpy(in + sizeof(BOX_LABEL) - 1, c->client_pub, RELAY_KEY_LEN);
	memcpy(in + sizeof(BOX_LABEL) - 1 + RELAY_KEY_LEN, c->server_pub, RELAY_KEY_LEN);
	blake2s(c->box_key, sizeof(c->box_key), in, sizeof(in), shared, sizeof(shared));
out:
	crypto_wipe(shared, sizeof(shared));
	return ret;
}

/*
 * Proof of the mesh key for the box of type, without disclosing it: BLAKE2s keyed
 * with the mesh key over the box's associated data (so bound to this connection and
 * direction). Sending the key itself would hand it to whoever answers a mesh peer's
 * URL (the dialer pins no relay key).
 */
static void mesh_proof(const struct relay_conn *c, uint8_t type, uint8_t out[RELAY_KEY_LEN])
{
	uint8_t in[sizeof(MESH_LABEL) - 1 + AD_LEN];
	size_t n;

	memcpy(in, MESH_LABEL, sizeof(MESH_LABEL) - 1);
	n = box_ad(c, type, in + sizeof(MESH_LABEL) - 1);
	blake2s(out, RELAY_KEY_LEN, in, sizeof(MESH_LABEL) - 1 + n, c->mesh_key, RELAY_KEY_LEN);
}

/* Appends a frame of type with payload prefix (head) + nonce + sealed pt to the output. */
static int out_sealed(struct relay_conn *c, uint8_t type, const uint8_t *head, size_t head_len,
		      const uint8_t *pt, size_t pt_len)
{
	size_t len = head_len + RELAY_NONCE_LEN + pt_len + TAG_LEN;
	uint8_t ad[AD_LEN], *p;
	int ret;

	if (len > RELAY_HS_FRAME_MAX || sizeof(c->out) - c->out_len < RELAY_HDR_LEN + len)
		return -ENOBUFS;
	p = c->out + c->out_len;
	p[0] = type;
	put_be32(p + 1, (uint32_t)len);
	p += RELAY_HDR_LEN;
	if (head_len)
		memcpy(p, head, head_len);
	p += head_len;
	ret = crypto_random(p, RELAY_NONCE_LEN);
	if (ret < 0)
		return ret;
	if (type == RELAY_CLIENT_INFO)
		memcpy(c->client_nonce, p, RELAY_NONCE_LEN);
	ret = xchacha20poly1305_encrypt(p + RELAY_NONCE_LEN, pt, pt_len, ad, box_ad(c, type, ad), p,
					c->box_key);
	if (ret < 0)
		return ret;
	c->out_len += (uint16_t)(RELAY_HDR_LEN + len);
	return 0;
}

/* Opens the box of a client-info or server-info (nonce first) into pt; its length or -EACCES. */
static ssize_t open_sealed(struct relay_conn *c, uint8_t type, const uint8_t *p, size_t len,
			   uint8_t pt[RELAY_HS_FRAME_MAX])
{
	uint8_t ad[AD_LEN];

	if (len < SERVER_INFO_MIN || len > RELAY_HS_FRAME_MAX)
		return -EBADMSG;
	if (type == RELAY_CLIENT_INFO)
		memcpy(c->client_nonce, p, RELAY_NONCE_LEN);
	if (xchacha20poly1305_decrypt(pt, p + RELAY_NONCE_LEN, len - RELAY_NONCE_LEN, ad,
				      box_ad(c, type, ad), p, c->box_key) < 0)
		return -EACCES;
	return (ssize_t)(len - SERVER_INFO_MIN);
}

/* ---- connection engine ---- */

static int die(struct relay_conn *c, int err)
{
	if (!c->err)
		c->err = err;
	crypto_wipe(c->priv, sizeof(c->priv));
	crypto_wipe(c->box_key, sizeof(c->box_key));
	crypto_wipe(c->mesh_key, sizeof(c->mesh_key));
	relay_reader_clear(&c->rd);
	c->rd.err = c->err;
	return c->err;
}

static void established(struct relay_conn *c)
{
	c->state = RELAY_CONN_ESTABLISHED;
	relay_reader_set_max(&c->rd, RELAY_FRAME_MAX);
	crypto_wipe(c->priv, sizeof(c->priv));
	crypto_wipe(c->box_key, sizeof(c->box_key));
	crypto_wipe(c->mesh_key, sizeof(c->mesh_key));
}

static void out_server_key(struct relay_conn *c)
{
	uint8_t *p = c->out;

	p[0] = RELAY_SERVER_KEY;
	put_be32(p + 1, SERVER_KEY_LEN);
	p += RELAY_HDR_LEN;
	memcpy(p, RELAY_MAGIC, RELAY_MAGIC_LEN);
	p[RELAY_MAGIC_LEN] = RELAY_VERSION;
	memcpy(p + RELAY_MAGIC_LEN + 1, c->server_pub, RELAY_KEY_LEN);
	memcpy(p + RELAY_MAGIC_LEN + 1 + RELAY_KEY_LEN, c->challenge, RELAY_CHALLENGE_LEN);
	c->out_off = 0;
	c->out_len = RELAY_HDR_LEN + SERVER_KEY_LEN;
}

/* pub: priv's public half, kept by the caller (NULL: derived here, a scalar multiplication). */
static int conn_init(struct relay_conn *c, bool server, const uint8_t priv[RELAY_KEY_LEN],
		     const uint8_t *pub, const uint8_t *mesh_key)
{
	uint8_t *own_pub = server ? c->server_pub : c->client_pub;
	int ret;

	memset(c, 0, sizeof(*c));
	ret = crypto_init();
	if (ret < 0)
		return ret;
	c->server = server;
	relay_reader_init(&c->rd, RELAY_HS_FRAME_MAX);
	memcpy(c->priv, priv, RELAY_KEY_LEN);
	if (pub)
		memcpy(own_pub, pub, RELAY_KEY_LEN);
	else
		ret = x25519_public_from_private(own_pub, priv);
	if (ret < 0)
		return ret;
	if (mesh_key) {
		memcpy(c->mesh_key, mesh_key, RELAY_KEY_LEN);
		c->has_mesh_key = true;
	}
	return 0;
}

int relay_conn_server_init(struct relay_conn *c, const uint8_t server_priv[RELAY_KEY_LEN],
			   const uint8_t *mesh_key)
{
	return relay_conn_server_init_pair(c, server_priv, NULL, mesh_key);
}

int relay_conn_server_init_pair(struct relay_conn *c, const uint8_t server_priv[RELAY_KEY_LEN],
				const uint8_t *server_pub, const uint8_t *mesh_key)
{
	int ret = conn_init(c, true, server_priv, server_pub, mesh_key);

	if (ret < 0)
		return ret;
	ret = crypto_random(c->challenge, sizeof(c->challenge));
	if (ret < 0)
		return ret;
	c->state = RELAY_CONN_WAIT_CLIENT_INFO;
	out_server_key(c);
	return 0;
}

int relay_conn_client_init(struct relay_conn *c, const uint8_t node_priv[RELAY_KEY_LEN],
			   const uint8_t *server_pub, const uint8_t *mesh_key)
{
	return relay_conn_client_init_pair(c, node_priv, NULL, server_pub, mesh_key);
}

int relay_conn_client_init_pair(struct relay_conn *c, const uint8_t node_priv[RELAY_KEY_LEN],
				const uint8_t *node_pub, const uint8_t *server_pub,
				const uint8_t *mesh_key)
{
	int ret = conn_init(c, false, node_priv, node_pub, mesh_key);

	if (ret < 0)
		return ret;
	if (server_pub) {
		memcpy(c->server_pub, server_pub, RELAY_KEY_LEN);
		c->pin = true;
	}
	c->state = RELAY_CONN_WAIT_SERVER_KEY;
	return 0;
}

void relay_conn_clear(struct relay_conn *c)
{
	if (!c)
		return;
	relay_reader_clear(&c->rd);
	crypto_wipe(c, sizeof(*c));
}

int relay_conn_set_challenge_for_test(struct relay_conn *c,
				      const uint8_t challenge[RELAY_CHALLENGE_LEN])
{
	if (!c->server || c->state != RELAY_CONN_WAIT_CLIENT_INFO || c->out_off)
		return -EINVAL;
	memcpy(c->challenge, challenge, RELAY_CHALLENGE_LEN);
	out_server_key(c);
	return 0;
}

/* Client: the server's key and challenge; answers with client-info. */
static int on_server_key(struct relay_conn *c, const struct relay_frame *f)
{
	const uint8_t *p = f->data;
	uint8_t pt[2 + 1 + 2 + RELAY_KEY_LEN], proof[RELAY_KEY_LEN];
	size_t pt_len = 0;
	int ret;

	/* Whatever is not a server-key frame, as HTTP text after a failed upgrade, is garbage. */
	if (f->type != RELAY_SERVER_KEY || f->len < RELAY_MAGIC_LEN ||
	    memcmp(p, RELAY_MAGIC, RELAY_MAGIC_LEN))
		return -EPROTO;
	if (f->len < SERVER_KEY_LEN)
		return -EBADMSG;
	c->peer_version = p[RELAY_MAGIC_LEN];
	if (c->peer_version < RELAY_VERSION)
		return -EPROTONOSUPPORT;
	p += RELAY_MAGIC_LEN + 1;
	if (c->pin && !crypto_equal(p, c->server_pub, RELAY_KEY_LEN))
		return -EACCES;
	memcpy(c->server_pub, p, RELAY_KEY_LEN);
	memcpy(c->challenge, p + RELAY_KEY_LEN, RELAY_CHALLENGE_LEN);
	/* A low-order server key gives no secret: nothing to prove anything to. */
	if (box_key_derive(c, c->server_pub) < 0)
		return -EBADMSG;
	info_put(pt, &pt_len, INFO_VERSION, (const uint8_t[]){RELAY_VERSION}, 1);
	if (c->has_mesh_key) {
		mesh_proof(c, RELAY_CLIENT_INFO, proof);
		info_put(pt, &pt_len, INFO_MESH_PROOF, proof, RELAY_KEY_LEN);
	}
	ret = out_sealed(c, RELAY_CLIENT_INFO, c->client_pub, RELAY_KEY_LEN, pt, pt_len);
	crypto_wipe(pt, sizeof(pt));
	crypto_wipe(proof, sizeof(proof));
	if (ret < 0)
		return ret;
	c->state = RELAY_CONN_WAIT_SERVER_INFO;
	return 0;
}

/* Server: the client's proof. */
static int on_client_info(struct relay_conn *c, const struct relay_frame *f, struct relay_msg *ret)
{
	const uint8_t *vals[INFO_TYPES];
	uint8_t pt[RELAY_HS_FRAME_MAX], proof[RELAY_KEY_LEN];
	ssize_t n;
	int r;

	if (f->type != RELAY_CLIENT_INFO)
		return -EPROTO;
	if (f->len < CLIENT_INFO_MIN)
		return -EBADMSG;
	memcpy(c->client_pub, f->data, RELAY_KEY_LEN);
	/* A low-order key is one nobody can prove: refused like a wrong proof. */
	if (box_key_derive(c, c->client_pub) < 0)
		return -EACCES;
	n = open_sealed(c, RELAY_CLIENT_INFO, f->data + RELAY_KEY_LEN, f->len - RELAY_KEY_LEN, pt);
	if (n < 0)
		return (int)n;
	r = info_parse(pt, (size_t)n, client_info_sizes, vals);
	if (r < 0 || !vals[INFO_VERSION]) {
		r = -EBADMSG;
		goto out;
	}
	c->peer_version = vals[INFO_VERSION][0];
	if (c->peer_version < RELAY_VERSION) {
		r = -EPROTONOSUPPORT;
		goto out;
	}
	if (vals[INFO_MESH_PROOF]) {
		if (c->has_mesh_key)
			mesh_proof(c, RELAY_CLIENT_INFO, proof);
		if (!c->has_mesh_key || !crypto_equal(vals[INFO_MESH_PROOF], proof, RELAY_KEY_LEN)) {
			r = -EACCES;
			goto out;
		}
		c->mesh = true;
	}
	/* Kept for server-info's own proof to a mesh peer. */
	if (!c->mesh)
		crypto_wipe(c->mesh_key, sizeof(c->mesh_key));
	c->state = RELAY_CONN_WAIT_ACCEPT;
	memset(ret, 0, sizeof(*ret));
	ret->type = RELAY_CLIENT_INFO;
	memcpy(ret->key, c->client_pub, RELAY_KEY_LEN);
	r = 1;
out:
	crypto_wipe(pt, sizeof(pt));
	crypto_wipe(proof, sizeof(proof));
	return r;
}

int relay_conn_server_accept(struct relay_conn *c, const struct relay_limits *limits)
{
	uint8_t pt[3 + 4 * 6 + 2 + RELAY_KEY_LEN], proof[RELAY_KEY_LEN];
	size_t pt_len = 0;
	int ret;

	if (c->err)
		return c->err;
	if (!c->server || c->state != RELAY_CONN_WAIT_ACCEPT)
		return -EINVAL;
	c->version = MIN(c->peer_version, RELAY_VERSION);
	c->limits = *limits;
	info_put(pt, &pt_len, INFO_VERSION, &c->version, 1);
	info_put32(pt, &pt_len, INFO_KEEPALIVE_MS, limits->keepalive_ms);
	info_put32(pt, &pt_len, INFO_RATE_BYTES, limits->rate_bytes);
	info_put32(pt, &pt_len, INFO_BURST_BYTES, limits->burst_bytes);
	info_put32(pt, &pt_len, INFO_RATE_PACKETS, limits->rate_packets);
	/* A mesh peer learns that we hold the mesh key too: not a stranger at its URL. */
	if (c->mesh) {
		mesh_proof(c, RELAY_SERVER_INFO, proof);
		info_put(pt, &pt_len, INFO_SERVER_MESH_PROOF, proof, RELAY_KEY_LEN);
		crypto_wipe(proof, sizeof(proof));
	}
	/* Anything still unwritten (server-key) stays in front. */
	if (c->out_off) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	ret = out_sealed(c, RELAY_SERVER_INFO, NULL, 0, pt, pt_len);
	crypto_wipe(pt, sizeof(pt));
	if (ret < 0)
		return die(c, ret);
	established(c);
	return 0;
}

/* Client: the server proved its key and said what it grants. */
static int on_server_info(struct relay_conn *c, const struct relay_frame *f, struct relay_msg *ret)
{
	const uint8_t *vals[INFO_TYPES];
	uint8_t pt[RELAY_HS_FRAME_MAX], proof[RELAY_KEY_LEN];
	struct relay_limits l = {0};
	ssize_t n;
	bool ok;

	if (f->type != RELAY_SERVER_INFO)
		return -EPROTO;
	n = open_sealed(c, RELAY_SERVER_INFO, f->data, f->len, pt);
	if (n < 0)
		return (int)n;
	if (info_parse(pt, (size_t)n, server_info_sizes, vals) < 0 || !vals[INFO_VERSION])
		return -EBADMSG;
	/* The server must pick the lower of both versions. */
	if (vals[INFO_VERSION][0] != MIN(c->peer_version, RELAY_VERSION))
		return -EPROTONOSUPPORT;
	/* We proved the mesh key: a relay that cannot prove it back is not of our mesh. */
	if (c->has_mesh_key) {
		mesh_proof(c, RELAY_SERVER_INFO, proof);
		ok = vals[INFO_SERVER_MESH_PROOF] &&
		     crypto_equal(vals[INFO_SERVER_MESH_PROOF], proof, RELAY_KEY_LEN);
		crypto_wipe(proof, sizeof(proof));
		if (!ok)
			return -EACCES;
		c->mesh = true;
	}
	c->version = vals[INFO_VERSION][0];
	if (vals[INFO_KEEPALIVE_MS])
		l.keepalive_ms = get_be32(vals[INFO_KEEPALIVE_MS]);
	if (vals[INFO_RATE_BYTES])
		l.rate_bytes = get_be32(vals[INFO_RATE_BYTES]);
	if (vals[INFO_BURST_BYTES])
		l.burst_bytes = get_be32(vals[INFO_BURST_BYTES]);
	if (vals[INFO_RATE_PACKETS])
		l.rate_packets = get_be32(vals[INFO_RATE_PACKETS]);
	c->limits = l;
	crypto_wipe(pt, sizeof(pt));
	crypto_wipe(c->mesh_key, sizeof(c->mesh_key));
	established(c);
	memset(ret, 0, sizeof(*ret));
	ret->type = RELAY_SERVER_INFO;
	memcpy(ret->key, c->server_pub, RELAY_KEY_LEN);
	return 1;
}

/* Who may send a frame type after the handshake: 1 client, 2 server, 3 both; 4: mesh only. */
#define FROM_CLIENT 1
#define FROM_SERVER 2
#define MESH_ONLY 4
static const uint8_t senders[256] = {
    [RELAY_SEND_PACKET] = FROM_CLIENT,
    [RELAY_RECV_PACKET] = FROM_SERVER,
    [RELAY_KEEPALIVE] = FROM_CLIENT | FROM_SERVER,
    [RELAY_NOTE_PREFERRED] = FROM_CLIENT,
    [RELAY_PEER_GONE] = FROM_SERVER,
    [RELAY_PEER_PRESENT] = FROM_SERVER,
    [RELAY_FORWARD_PACKET] = FROM_CLIENT | MESH_ONLY,
    [RELAY_WATCH_CONNS] = FROM_CLIENT | MESH_ONLY,
    [RELAY_CLOSE_PEER] = FROM_CLIENT | MESH_ONLY,
    [RELAY_PING] = FROM_CLIENT | FROM_SERVER,
    [RELAY_PONG] = FROM_CLIENT | FROM_SERVER,
    [RELAY_HEALTH] = FROM_SERVER,
};

/* 1 with *ret, 0 for a skipped frame of an unknown type, or -errno. */
static int on_stream(struct relay_conn *c, const struct relay_frame *f, struct relay_msg *ret)
{
	uint8_t who = senders[f->type];
	int r;

	if (f->type <= RELAY_SERVER_INFO)
		return -EPROTO;
	if (!who) {
		c->unknown_frames++;
		return 0;
	}
	if (!(who & (c->server ? FROM_CLIENT : FROM_SERVER)))
		return -EPROTO;
	if ((who & MESH_ONLY) && !c->mesh)
		return -EPERM;
	r = relay_msg_decode(ret, f->type, f->data, f->len);
	return r < 0 ? r : 1;
}

int relay_conn_feed(struct relay_conn *c, const uint8_t **in, size_t *len, struct relay_msg *ret)
{
	struct relay_frame f;
	int r;

	if (c->err)
		return c->err;
	for (;;) {
		/* The client waits for server-info before it says anything more. */
		if (c->state == RELAY_CONN_WAIT_ACCEPT && *len > 0) {
			r = -EPROTO;
			break;
		}
		r = relay_reader_next(&c->rd, in, len, &f);
		if (r <= 0)
			break;
		switch (c->state) {
		case RELAY_CONN_WAIT_SERVER_KEY:
			r = on_server_key(c, &f);
			break;
		case RELAY_CONN_WAIT_SERVER_INFO:
			r = on_server_info(c, &f, ret);
			break;
		case RELAY_CONN_WAIT_CLIENT_INFO:
			r = on_client_info(c, &f, ret);
			break;
		default:
			r = on_stream(c, &f, ret);
			break;
		}
		if (r != 0)
			break;
	}
	if (r < 0)
		return die(c, r);
	return r;
}

void relay_conn_output(const struct relay_conn *c, const uint8_t **ret_data, size_t *ret_len)
{
	*ret_data = c->out + c->out_off;
	*ret_len = c->out_len - c->out_off;
}

void relay_conn_output_consume(struct relay_conn *c, size_t n)
{
	c->out_off += (uint16_t)MIN(n, (size_t)(c->out_len - c->out_off));
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
}

bool relay_conn_established(const struct relay_conn *c)
{
	return c->state == RELAY_CONN_ESTABLISHED && !c->err;
}

bool relay_conn_is_mesh(const struct relay_conn *c)
{
	return c->mesh && !c->err;
}

const struct relay_limits *relay_conn_limits(const struct relay_conn *c)
{
	return &c->limits;
}

int relay_conn_peer_key(const struct relay_conn *c, uint8_t ret_key[RELAY_KEY_LEN])
{
	if (c->server ? c->state < RELAY_CONN_WAIT_ACCEPT : c->state < RELAY_CONN_WAIT_SERVER_INFO)
		return -ENOENT;
	memcpy(ret_key, c->server ? c->client_pub : c->server_pub, RELAY_KEY_LEN);
	return 0;
}
