/* SPDX-License-Identifier: MIT */
/*
 * The control channel as the server sees it. The first input byte picks how the
 * rest reaches the server:
 *   0: raw bytes from the first byte on the wire (handshake frame parser);
 *   1: after a valid handshake, as the decrypted byte stream (message framing),
 *      sealed into frames with the client's real key, cut where byte 2 says;
 *   2: after a valid handshake, raw bytes (transport frame parser).
 * Keys and both ephemerals are fixed, so the handshake and hence the transport
 * keys are the same on every run and seeds stay valid.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/ctrlstream.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t cpriv[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t spriv[32] = {9, 8, 7, 6, 5, 4, 3, 2, 1};
static const uint8_t ceph[32] = {11, 12, 13};
static const uint8_t seph[32] = {21, 22, 23};

static void feed_all(struct ctrlstream *s, const uint8_t *p, size_t len)
{
	const char *m;
	size_t mlen;

	while (len > 0) {
		ssize_t n = ctrlstream_feed(s, p, len);

		if (n < 0)
			return;
		p += n;
		len -= (size_t)n;
		while (ctrlstream_recv(s, &m, &mlen) == 1)
			;
	}
	while (ctrlstream_recv(s, &m, &mlen) == 1)
		;
}

static void handshake(struct ctrlstream *c, struct ctrlstream *s)
{
	const uint8_t *out;
	size_t len;

	ctrlstream_output(c, &out, &len);
	feed_all(s, out, len);
	ctrlstream_output_consume(c, len);
	ctrlstream_output(s, &out, &len);
	feed_all(c, out, len);
	ctrlstream_output_consume(s, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t frame[4 + CTRLSTREAM_FRAME_MAX];
	struct ctrlstream *c = NULL, *s = NULL;
	uint8_t spub[32];
	size_t cut, n;

	if (size < 2 || crypto_init() < 0)
		return 0;
	if (x25519_public_from_private(spub, spriv) < 0)
		return 0;
	s = ctrlstream_server_new(spriv);
	if (!s)
		return 0;
	ctrlstream_set_ephemeral_for_test(s, seph);
	if (data[0] == 0) {
		feed_all(s, data + 1, size - 1);
		goto out;
	}
	c = ctrlstream_client_new(cpriv, spub);
	if (!c)
		goto out;
	ctrlstream_set_ephemeral_for_test(c, ceph);
	handshake(c, s);
	if (!ctrlstream_established(s) || !ctrlstream_established(c))
		__builtin_trap();
	if (data[0] == 2) {
		feed_all(s, data + 1, size - 1);
		goto out;
	}
	cut = (size_t)data[1] * 64 + 1;
	data += 2;
	size -= 2;
	while (size > 0) {
		n = MIN(size, MIN(cut, (size_t)FRAME_PLAIN_MAX));
		put_be32(frame, (uint32_t)(n + NOISE_TAG_LEN));
		if (noise_cipher_encrypt(&c->tx, frame + 4, data, n) < 0)
			break;
		feed_all(s, frame, n + 4 + NOISE_TAG_LEN);
		if (ctrlstream_error(s))
			break;
		data += n;
		size -= n;
	}
out:
	ctrlstream_free(c);
	ctrlstream_free(s);
	return 0;
}
