/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_DISCO_H
#define TRELLIS_PROTO_DISCO_H

/*
 * Disco (path discovery) datagrams: the framing only. They share the UDP socket
 * with WireGuard and STUN, so the first bytes must tell them apart (src/net/demux.h):
 * the magic's first byte, 'T' (0x54), is neither a WireGuard message type (1-4)
 * nor a STUN first byte (whose top two bits are 0).
 *
 *   offset  size  field
 *        0     6  magic "TRLS" 0xd1 0x5c
 *        6    32  sender's disco public key (X25519, new at every daemon start)
 *       38    24  nonce (XChaCha20-Poly1305)
 *       62   16+  box: the sealed message (ping, pong, call-me-maybe) and its tag
 *
 * The messages inside the box and their codec come with path discovery.
 */

#include <stdint.h>

#define DISCO_MAGIC "TRLS\xd1\x5c"
#define DISCO_MAGIC_LEN 6
#define DISCO_KEY_LEN 32
#define DISCO_NONCE_LEN 24
#define DISCO_TAG_LEN 16

struct disco_header {
	uint8_t magic[DISCO_MAGIC_LEN];
	uint8_t sender_key[DISCO_KEY_LEN];
	uint8_t nonce[DISCO_NONCE_LEN];
} __attribute__((packed));

#define DISCO_HEADER_LEN ((unsigned)sizeof(struct disco_header))
/* The shortest datagram that can be disco: a header and an empty box. */
#define DISCO_MIN_LEN (DISCO_HEADER_LEN + DISCO_TAG_LEN)

_Static_assert(sizeof(DISCO_MAGIC) - 1 == DISCO_MAGIC_LEN, "disco magic length");
_Static_assert(sizeof(struct disco_header) == 62, "disco header layout");

#endif
