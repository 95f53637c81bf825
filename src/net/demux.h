/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_DEMUX_H
#define TRELLIS_NET_DEMUX_H

/*
 * What a datagram on the shared UDP socket is, from its first bytes alone:
 *
 *   WireGuard  a message type 1-4 as a little-endian 32-bit word (the type byte and
 *              three zero reserved bytes, whitepaper 5.4); lengths are the engine's
 *              business (it counts short ones)
 *   STUN       top two bits 0, the magic cookie at offset 4 and a length that matches
 *              the datagram (RFC 8489 section 6, stun_is in src/proto/stun.h)
 *   disco      the magic prefix of src/proto/disco.h and room for a header and tag
 *   junk       anything else
 *
 * WireGuard is tested first: it is the data path, and its test is exact (a STUN
 * message can only look like WireGuard with a reserved method and length 0, and
 * neither STUN nor WireGuard can start with the disco magic's 'T').
 */

#include <stdint.h>
#include <string.h>

#include "proto/disco.h"
#include "proto/stun.h"

enum demux_kind {
	DEMUX_WG,
	DEMUX_STUN,
	DEMUX_DISCO,
	DEMUX_JUNK,
};

static inline enum demux_kind demux_classify(const uint8_t *d, uint32_t len)
{
	if (len >= 4 && d[0] >= 1 && d[0] <= 4 && !d[1] && !d[2] && !d[3])
		return DEMUX_WG;
	if (stun_is(d, len))
		return DEMUX_STUN;
	if (len >= DISCO_MIN_LEN && !memcmp(d, DISCO_MAGIC, DISCO_MAGIC_LEN))
		return DEMUX_DISCO;
	return DEMUX_JUNK;
}

#endif
