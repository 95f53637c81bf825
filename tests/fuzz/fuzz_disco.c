/* SPDX-License-Identifier: MIT */
/*
 * The disco engine on arbitrary input, past the box: the fuzzer cannot forge a
 * Poly1305 tag, so each input is a series of records whose plaintext this target
 * seals under the key of the one known peer (or, for some, sends raw) and hands to
 * disco_rx from a source the record picks (a few addresses, the peer's handle, a
 * stranger's handle), with time moving forward and ticks between. Everything sent is
 * checked to open again and be no larger than DISCO_MSG_MAX.
 *
 *   record: flags (1: bit 0 raw, bits 1-2 source, bits 3-7 time step), length (1),
 *           that many bytes
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "disco/engine.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

_Static_assert(255 + DISCO_HEADER_LEN + DISCO_TAG_LEN <= DISCO_MSG_MAX + 64, "a record fits buf");

static uint8_t our_priv[32], peer_priv[32], peer_pub[32], shared[32], node_key[32];
static struct endpoint handle, stranger, srcs[3];

static void op_send(void *ctx, const struct endpoint *to, const uint8_t *d, size_t len)
{
	struct disco_msg m;

	(void)ctx;
	if (len > DISCO_MSG_MAX || (!endpoint_is_addr(to) && !endpoint_equal(to, &handle)))
		abort();
	/* The peer can open whatever we send it. */
	if (disco_msg_open(&m, d, len, shared) < 0)
		abort();
}

static void op_path(void *ctx, const struct endpoint *peer, const struct endpoint *direct,
		    uint64_t until)
{
	(void)ctx;
	(void)until;
	if (!endpoint_equal(peer, &handle) || (direct && !endpoint_is_addr(direct)))
		abort();
}

static void init(void)
{
	static int done;

	if (done)
		return;
	done = 1;
	crypto_init();
	memset(our_priv, 1, 32);
	our_priv[0] &= 248, our_priv[31] = (our_priv[31] & 127) | 64;
	memset(peer_priv, 2, 32);
	peer_priv[0] &= 248, peer_priv[31] = (peer_priv[31] & 127) | 64;
	x25519_public_from_private(peer_pub, peer_priv);
	memset(node_key, 3, 32);
	endpoint_handle_set(&handle, 7);
	endpoint_handle_set(&stranger, 8);
	endpoint_parse(&srcs[0], "203.0.113.5:41641");
	endpoint_parse(&srcs[1], "198.18.0.9:41641");
	endpoint_parse(&srcs[2], "[2001:db8::5]:41641");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct disco_ops ops = {.send = op_send, .path_set = op_path};
	uint8_t our_pub[32], buf[DISCO_MSG_MAX + 64];
	struct disco *d;
	uint64_t now = 1000000000ULL;
	size_t off = 0;

	init();
	d = disco_new(&ops, our_priv);
	if (!d)
		return 0;
	disco_public_get(d, our_pub);
	disco_msg_shared(shared, peer_priv, our_pub);
	disco_self_set(d, node_key, srcs, 3);
	disco_peer_set(d, &handle, peer_pub, node_key, srcs, 2, now);
	/* Half the inputs: hard NATs on both sides, so probing adds birthday attempts. */
	disco_self_mapping_varies(d, size && (data[0] & 0x80));
	disco_peer_mapping_varies(d, &handle, size && (data[0] & 0x80));
	disco_peer_active(d, &handle, now);
	while (off + 2 <= size) {
		uint8_t flags = data[off], len = data[off + 1];
		const struct endpoint *src;
		struct disco_header *h = (struct disco_header *)buf;
		unsigned pick = (flags >> 1) & 3;

		off += 2;
		if (len > size - off)
			len = (uint8_t)(size - off);
		src = pick < 2 ? &srcs[pick] : pick == 2 ? &handle : &stranger;
		now += (uint64_t)(flags >> 3) * 250000000ULL;
		if (flags & 1) {
			disco_rx(d, data + off, len, src, now);
		} else {
			memcpy(h->magic, DISCO_MAGIC, DISCO_MAGIC_LEN);
			memcpy(h->sender_key, peer_pub, 32);
			memset(h->nonce, (int)off, DISCO_NONCE_LEN);
			xchacha20poly1305_encrypt(buf + DISCO_HEADER_LEN, data + off, len, buf,
						  DISCO_HEADER_LEN, h->nonce, shared);
			disco_rx(d, buf, DISCO_HEADER_LEN + len + DISCO_TAG_LEN, src, now);
		}
		off += len;
		disco_tick(d, now);
	}
	disco_peer_remove(d, &handle);
	disco_free(d);
	return 0;
}
