/* SPDX-License-Identifier: MIT */
/*
 * The control channel's framing and encryption. States:
 *
 *   client: HANDSHAKE (frame 1 written on the first ctrlstream_output, waits
 *           for frame 2) -> ESTABLISHED
 *   server: HANDSHAKE (waits for frame 1, answers frame 2) -> ESTABLISHED
 *   either: any error -> dead (cs->err), for good.
 *
 * Receive path: 4-byte frame header, then the frame body into one frame buffer,
 * decrypted in place; its plaintext is then drained into the message being
 * assembled (4-byte header, then the body into the message buffer). Draining
 * stops when a message is complete, so at most one frame and one message are
 * buffered whatever the peer sends. Buffers grow with what actually arrives
 * (a declared 16 MiB message costs nothing until its bytes come) and large
 * ones are released when done, so 10,000 idle connections stay small.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "crypto/crypto.h"
#include "crypto/noise_ik.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"

#define FRAME_HDR 4
#define MSG_HDR 4
/* Largest plaintext in one transport frame. */
#define FRAME_PLAIN_MAX (CTRLSTREAM_FRAME_MAX - NOISE_TAG_LEN)
/* Buffers above these sizes are released once drained (idle connections stay small). */
#define FRAME_KEEP 4096
#define MSG_KEEP 65536
#define OUT_KEEP 65536

struct buf {
	uint8_t *p;
	size_t off, len, cap;
};

struct ctrlstream {
	bool server;
	bool established;
	int err;
	struct noise_ik hs;
	struct noise_cipher tx, rx;
	uint8_t remote[CTRLSTREAM_KEY_LEN];
	bool has_remote;
	uint8_t local[CTRLSTREAM_KEY_LEN]; /* our static public key (the server's proof check) */
	uint8_t hh[NOISE_HASH_LEN]; /* the handshake hash, once established */

	/* current received frame */
	uint8_t fhdr[FRAME_HDR];
	size_t fhdr_len;
	uint8_t *frame;
	size_t frame_cap, frame_len, frame_got;
	/* decrypted plaintext of the last frame not yet moved into messages */
	size_t pt_off, pt_len;

	/* message being assembled */
	uint8_t mhdr[MSG_HDR];
	size_t mhdr_len;
	uint8_t *msg;
	size_t msg_cap, msg_len, msg_got;
	bool msg_ready, msg_taken;
	size_t msg_max; /* largest message accepted from the peer */

	struct buf staged; /* length-prefixed plaintext messages not yet sealed */
	struct buf out;	   /* sealed bytes not yet written */
};

static void buf_release(struct buf *b)
{
	if (b->p) {
		crypto_wipe(b->p, b->cap);
		free(b->p);
	}
	memset(b, 0, sizeof(*b));
}

/* Room for extra more bytes at the end; compacts consumed bytes first. */
static int buf_reserve(struct buf *b, size_t extra)
{
	size_t need, cap;
	uint8_t *p;

	if (b->off) {
		memmove(b->p, b->p + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	need = b->len + extra;
	if (need < b->len)
		return -ENOMEM;
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap = cap * 2 > cap ? cap * 2 : need;
	p = realloc(b->p, cap);
	if (!p)
		return -ENOMEM;
	b->p = p;
	b->cap = cap;
	return 0;
}

/* Grows a plain byte array to at least need bytes (exactly when growing past want). */
static int grow(uint8_t **p, size_t *cap, size_t need)
{
	uint8_t *n;

	if (need <= *cap)
		return 0;
	n = realloc(*p, need);
	if (!n)
		return -ENOMEM;
	*p = n;
	*cap = need;
	return 0;
}

static void release(uint8_t **p, size_t *cap)
{
	if (*p) {
		crypto_wipe(*p, *cap);
		free(*p);
	}
	*p = NULL;
	*cap = 0;
}

static struct ctrlstream *stream_alloc(void)
{
	struct ctrlstream *cs;

	if (crypto_init() < 0) {
		errno = EIO;
		return NULL;
	}
	cs = calloc(1, sizeof(*cs));
	if (cs)
		cs->msg_max = CTRL_MSG_MAX;
	return cs;
}

struct ctrlstream *ctrlstream_client_new(const uint8_t machine_priv[CTRLSTREAM_KEY_LEN],
					 const uint8_t server_pub[CTRLSTREAM_KEY_LEN])
{
	struct ctrlstream *cs = stream_alloc();

	if (!cs)
		return NULL;
	if (noise_ik_init_initiator(&cs->hs, machine_priv, server_pub, CTRLSTREAM_PROLOGUE,
				    sizeof(CTRLSTREAM_PROLOGUE) - 1) < 0) {
		ctrlstream_free(cs);
		errno = EINVAL;
		return NULL;
	}
	memcpy(cs->remote, server_pub, CTRLSTREAM_KEY_LEN);
	cs->has_remote = true;
	return cs;
}

struct ctrlstream *ctrlstream_server_new(const uint8_t server_priv[CTRLSTREAM_KEY_LEN])
{
	return ctrlstream_server_new_pair(server_priv, NULL);
}

struct ctrlstream *ctrlstream_server_new_pair(const uint8_t server_priv[CTRLSTREAM_KEY_LEN],
					      const uint8_t *server_pub)
{
	struct ctrlstream *cs = stream_alloc();

	if (!cs)
		return NULL;
	cs->server = true;
	if (noise_ik_init_responder_pair(&cs->hs, server_priv, server_pub, CTRLSTREAM_PROLOGUE,
					 sizeof(CTRLSTREAM_PROLOGUE) - 1) < 0) {
		ctrlstream_free(cs);
		errno = EINVAL;
		return NULL;
	}
	memcpy(cs->local, cs->hs.s_pub, CTRLSTREAM_KEY_LEN);
	return cs;
}

void ctrlstream_free(struct ctrlstream *cs)
{
	if (!cs)
		return;
	noise_ik_clear(&cs->hs);
	noise_cipher_clear(&cs->tx);
	noise_cipher_clear(&cs->rx);
	release(&cs->frame, &cs->frame_cap);
	release(&cs->msg, &cs->msg_cap);
	buf_release(&cs->staged);
	buf_release(&cs->out);
	crypto_wipe(cs, sizeof(*cs));
	free(cs);
}

int ctrlstream_set_ephemeral_for_test(struct ctrlstream *cs,
				      const uint8_t e_priv[CTRLSTREAM_KEY_LEN])
{
	return noise_ik_set_ephemeral_for_test(&cs->hs, e_priv);
}

static int die(struct ctrlstream *cs, int err)
{
	if (!cs->err)
		cs->err = err;
	noise_ik_clear(&cs->hs);
	noise_cipher_clear(&cs->tx);
	noise_cipher_clear(&cs->rx);
	return cs->err;
}

/* Appends one frame (header + body) of body_len bytes to out; returns where the body goes. */
static uint8_t *frame_append(struct ctrlstream *cs, size_t body_len)
{
	uint8_t *p;

	if (buf_reserve(&cs->out, FRAME_HDR + body_len) < 0)
		return NULL;
	p = cs->out.p + cs->out.len;
	put_be32(p, (uint32_t)body_len);
	cs->out.len += FRAME_HDR + body_len;
	return p + FRAME_HDR;
}

static int handshake_frame(struct ctrlstream *cs)
{
	uint8_t *body;
	int ret;

	if (cs->server) {
		/* Both payloads are empty (docs/control-protocol.md), so the size is exact. */
		if (cs->frame_len != NOISE_IK_MSG1_LEN(0))
			return -EBADMSG;
		ret = noise_ik_read_message1(&cs->hs, cs->frame, cs->frame_len, NULL, 0);
		if (ret < 0)
			return -EBADMSG;
		if (noise_ik_remote_static(&cs->hs, cs->remote) < 0)
			return -EBADMSG;
		cs->has_remote = true;
		body = frame_append(cs, NOISE_IK_MSG2_LEN(0));
		if (!body)
			return -ENOMEM;
		ret = noise_ik_write_message2(&cs->hs, body, NOISE_IK_MSG2_LEN(0), NULL, 0);
		if (ret < 0)
			return ret;
	} else {
		/* The server spoke before our frame 1 went out. */
		if (cs->hs.state != NOISE_IK_STATE_MSG1)
			return -EPROTO;
		if (cs->frame_len != NOISE_IK_MSG2_LEN(0))
			return -EBADMSG;
		ret = noise_ik_read_message2(&cs->hs, cs->frame, cs->frame_len, NULL, 0);
		if (ret < 0)
			return -EBADMSG;
	}
	/* Split wipes the handshake: keep its hash, the channel binding of node key proofs. */
	ret = noise_ik_handshake_hash(&cs->hs, cs->hh);
	if (ret < 0)
		return ret;
	ret = noise_ik_split(&cs->hs, &cs->tx, &cs->rx);
	if (ret < 0)
		return ret;
	cs->established = true;
	return 0;
}

/* Moves decrypted plaintext into the message being assembled until one is complete. */
static int drain(struct ctrlstream *cs)
{
	while (cs->pt_off < cs->pt_len && !cs->msg_ready) {
		const uint8_t *src = cs->frame + cs->pt_off;
		size_t avail = cs->pt_len - cs->pt_off, n;

		if (cs->mhdr_len < MSG_HDR) {
			n = MIN(avail, MSG_HDR - cs->mhdr_len);
			memcpy(cs->mhdr + cs->mhdr_len, src, n);
			cs->mhdr_len += n;
			cs->pt_off += n;
			if (cs->mhdr_len < MSG_HDR)
				continue;
			cs->msg_len = get_be32(cs->mhdr);
			cs->msg_got = 0;
			if (cs->msg_len == 0)
				return -EPROTO;
			if (cs->msg_len > cs->msg_max)
				return -EMSGSIZE;
			continue;
		}
		n = MIN(avail, cs->msg_len - cs->msg_got);
		/* Grow with the bytes that arrived, doubling, never past the declared size. */
		if (cs->msg_got + n > cs->msg_cap) {
			size_t want = MAX(cs->msg_got + n, MIN(cs->msg_len, cs->msg_cap * 2));

			if (grow(&cs->msg, &cs->msg_cap, want) < 0)
				return -ENOMEM;
		}
		memcpy(cs->msg + cs->msg_got, src, n);
		cs->msg_got += n;
		cs->pt_off += n;
		if (cs->msg_got == cs->msg_len)
			cs->msg_ready = true;
	}
	/* Only between frames: mid-frame the buffer holds the body being received. */
	if (cs->pt_off == cs->pt_len && cs->fhdr_len < FRAME_HDR && cs->frame_cap > FRAME_KEEP)
		release(&cs->frame, &cs->frame_cap);
	return 0;
}

static void msg_reset(struct ctrlstream *cs)
{
	cs->msg_taken = false;
	cs->mhdr_len = 0;
	cs->msg_len = 0;
	cs->msg_got = 0;
	if (cs->msg_cap > MSG_KEEP)
		release(&cs->msg, &cs->msg_cap);
}

ssize_t ctrlstream_feed(struct ctrlstream *cs, const void *data, size_t len)
{
	const uint8_t *in = data;
	size_t pos = 0, n;
	int ret = 0;

	if (cs->err)
		return cs->err;
	if (cs->msg_taken)
		msg_reset(cs);
	for (;;) {
		ret = drain(cs);
		if (ret < 0)
			goto out;
		if (cs->msg_ready || pos == len)
			break;
		if (cs->fhdr_len < FRAME_HDR) {
			n = MIN(len - pos, FRAME_HDR - cs->fhdr_len);
			memcpy(cs->fhdr + cs->fhdr_len, in + pos, n);
			cs->fhdr_len += n;
			pos += n;
			if (cs->fhdr_len < FRAME_HDR)
				continue;
			cs->frame_len = get_be32(cs->fhdr);
			cs->frame_got = 0;
			if (cs->frame_len == 0) {
				ret = -EPROTO;
				goto out;
			}
			if (cs->frame_len > CTRLSTREAM_FRAME_MAX) {
				ret = -EMSGSIZE;
				goto out;
			}
			/*
			 * Before the handshake the one valid frame has an exact size:
			 * refuse any other at its header, before buffering a byte of it.
			 */
			if (!cs->established &&
			    cs->frame_len != (cs->server ? NOISE_IK_MSG1_LEN(0) : NOISE_IK_MSG2_LEN(0))) {
				ret = -EBADMSG;
				goto out;
			}
			if (grow(&cs->frame, &cs->frame_cap, cs->frame_len) < 0) {
				ret = -ENOMEM;
				goto out;
			}
			continue;
		}
		n = MIN(len - pos, cs->frame_len - cs->frame_got);
		memcpy(cs->frame + cs->frame_got, in + pos, n);
		cs->frame_got += n;
		pos += n;
		if (cs->frame_got < cs->frame_len)
			continue;
		cs->fhdr_len = 0;
		if (!cs->established) {
			ret = handshake_frame(cs);
			if (ret < 0)
				goto out;
			/* Let the server look at the machine key before any message. */
			break;
		}
		ret = noise_cipher_decrypt(&cs->rx, cs->frame, cs->frame, cs->frame_len);
		if (ret < 0) {
			ret = -EBADMSG;
			goto out;
		}
		cs->pt_off = 0;
		cs->pt_len = (size_t)ret;
		ret = 0;
	}
out:
	if (ret < 0)
		return die(cs, ret);
	return (ssize_t)pos;
}

int ctrlstream_recv(struct ctrlstream *cs, const char **ret_json, size_t *ret_len)
{
	int ret;

	if (cs->err)
		return cs->err;
	if (cs->msg_taken)
		msg_reset(cs);
	/* A frame may hold several messages: the next may already be decrypted. */
	ret = drain(cs);
	if (ret < 0)
		return die(cs, ret);
	if (!cs->msg_ready)
		return 0;
	cs->msg_ready = false;
	cs->msg_taken = true;
	*ret_json = (const char *)cs->msg;
	*ret_len = cs->msg_len;
	return 1;
}

int ctrlstream_set_max_message(struct ctrlstream *cs, size_t bytes)
{
	if (bytes == 0 || bytes > CTRL_MSG_MAX)
		return -EINVAL;
	cs->msg_max = bytes;
	return 0;
}

int ctrlstream_send(struct ctrlstream *cs, const void *json, size_t len)
{
	int ret;

	if (cs->err)
		return cs->err;
	if (len == 0 || len > CTRL_MSG_MAX)
		return -EMSGSIZE;
	ret = buf_reserve(&cs->staged, MSG_HDR + len);
	if (ret < 0)
		return ret;
	put_be32(cs->staged.p + cs->staged.len, (uint32_t)len);
	memcpy(cs->staged.p + cs->staged.len + MSG_HDR, json, len);
	cs->staged.len += MSG_HDR + len;
	return 0;
}

/* Seals staged plaintext into as few frames as possible. */
static int seal(struct ctrlstream *cs)
{
	while (cs->staged.off < cs->staged.len) {
		size_t n = MIN(cs->staged.len - cs->staged.off, (size_t)FRAME_PLAIN_MAX);
		uint8_t *body = frame_append(cs, n + NOISE_TAG_LEN);
		int ret;

		if (!body)
			return -ENOMEM;
		ret = noise_cipher_encrypt(&cs->tx, body, cs->staged.p + cs->staged.off, n);
		if (ret < 0)
			return ret;
		cs->staged.off += n;
	}
	crypto_wipe(cs->staged.p, cs->staged.len);
	cs->staged.off = 0;
	cs->staged.len = 0;
	if (cs->staged.cap > OUT_KEEP)
		buf_release(&cs->staged);
	return 0;
}

int ctrlstream_output(struct ctrlstream *cs, const uint8_t **ret_data, size_t *ret_len)
{
	int ret;

	if (cs->err)
		return cs->err;
	if (!cs->server && cs->hs.state == NOISE_IK_STATE_INITIAL) {
		uint8_t *body = frame_append(cs, NOISE_IK_MSG1_LEN(0));

		if (!body)
			return -ENOMEM;
		ret = noise_ik_write_message1(&cs->hs, body, NOISE_IK_MSG1_LEN(0), NULL, 0);
		if (ret < 0)
			return die(cs, ret);
	}
	if (cs->established) {
		ret = seal(cs);
		if (ret < 0)
			return die(cs, ret);
	}
	*ret_data = cs->out.p ? cs->out.p + cs->out.off : (const uint8_t *)"";
	*ret_len = cs->out.len - cs->out.off;
	return 0;
}

void ctrlstream_output_consume(struct ctrlstream *cs, size_t n)
{
	cs->out.off += MIN(n, cs->out.len - cs->out.off);
	if (cs->out.off == cs->out.len) {
		cs->out.off = 0;
		cs->out.len = 0;
		if (cs->out.cap > OUT_KEEP)
			buf_release(&cs->out);
	}
}

size_t ctrlstream_output_pending(const struct ctrlstream *cs)
{
	return cs->out.len - cs->out.off + cs->staged.len - cs->staged.off;
}

bool ctrlstream_established(const struct ctrlstream *cs)
{
	return cs->established && !cs->err;
}

int ctrlstream_remote_key(const struct ctrlstream *cs, uint8_t ret_pub[CTRLSTREAM_KEY_LEN])
{
	if (!cs->has_remote)
		return -ENOENT;
	memcpy(ret_pub, cs->remote, CTRLSTREAM_KEY_LEN);
	return 0;
}

int ctrlstream_error(const struct ctrlstream *cs)
{
	return cs->err;
}

int ctrlstream_handshake_hash(const struct ctrlstream *cs, uint8_t ret_hash[CTRLSTREAM_HASH_LEN])
{
	if (!ctrlstream_established(cs))
		return -ENOTCONN;
	memcpy(ret_hash, cs->hh, CTRLSTREAM_HASH_LEN);
	return 0;
}

/* HMAC(X25519(node, server), label || handshake hash || node key): both ends' view. */
static int proof_compute(const struct ctrlstream *cs, const uint8_t priv[CTRLSTREAM_KEY_LEN],
			 const uint8_t priv_pub[CTRLSTREAM_KEY_LEN],
			 const uint8_t pub[CTRLSTREAM_KEY_LEN],
			 const uint8_t node_pub[CTRLSTREAM_KEY_LEN],
			 uint8_t ret_proof[CTRLSTREAM_PROOF_LEN])
{
	static const char label[] = CTRLSTREAM_PROOF_LABEL;
	uint8_t dh[X25519_KEY_LEN], in[sizeof(label) - 1 + NOISE_HASH_LEN + CTRLSTREAM_KEY_LEN];
	int r;

	if (!ctrlstream_established(cs))
		return -ENOTCONN;
	/* With priv's public half at hand: half the cost (x25519_shared_pair). */
	r = x25519_shared_pair(dh, priv, priv_pub, pub);
	if (r < 0)
		return r;
	memcpy(in, label, sizeof(label) - 1);
	memcpy(in + sizeof(label) - 1, cs->hh, NOISE_HASH_LEN);
	memcpy(in + sizeof(label) - 1 + NOISE_HASH_LEN, node_pub, CTRLSTREAM_KEY_LEN);
	hmac_blake2s(ret_proof, dh, sizeof(dh), in, sizeof(in));
	crypto_wipe(dh, sizeof(dh));
	return 0;
}

int ctrlstream_node_key_prove(const struct ctrlstream *cs,
			      const uint8_t node_priv[CTRLSTREAM_KEY_LEN],
			      uint8_t ret_proof[CTRLSTREAM_PROOF_LEN])
{
	uint8_t node_pub[CTRLSTREAM_KEY_LEN];
	int r;

	if (cs->server)
		return -EINVAL;
	r = x25519_public_from_private(node_pub, node_priv);
	if (r == 0)
		r = proof_compute(cs, node_priv, node_pub, cs->remote, node_pub, ret_proof);
	return r;
}

int ctrlstream_node_key_check(const struct ctrlstream *cs,
			      const uint8_t server_priv[CTRLSTREAM_KEY_LEN],
			      const uint8_t node_pub[CTRLSTREAM_KEY_LEN],
			      const uint8_t proof[CTRLSTREAM_PROOF_LEN])
{
	uint8_t want[CTRLSTREAM_PROOF_LEN];
	int r;

	if (!cs->server)
		return -EINVAL;
	/* A low-order node key has an all-zero DH anyone can compute: refused (-EINVAL). */
	r = proof_compute(cs, server_priv, cs->local, node_pub, node_pub, want);
	if (r == 0 && !crypto_equal(want, proof, CTRLSTREAM_PROOF_LEN))
		r = -EACCES;
	crypto_wipe(want, sizeof(want));
	return r;
}
