/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_STUN_H
#define TRELLIS_PROTO_STUN_H

/*
 * STUN Binding (RFC 8489, compatible with RFC 5389) without I/O: what a node
 * needs to learn its reflexive address and what a relay needs to tell it.
 * Parsing is strict and bounded: the datagram must be exactly one message,
 * every attribute must fit with its padding, FINGERPRINT (when present) must
 * be last and correct. No authentication: MESSAGE-INTEGRITY is not checked,
 * and what follows it but FINGERPRINT is ignored, as section 14.5 asks.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/endpoint.h"

#define STUN_HDR_LEN 20
#define STUN_TXID_LEN 12 /* 96 bits, random per request (section 5) */
#define STUN_MAGIC_COOKIE 0x2112A442u
#define STUN_PORT 3478
#define STUN_SOFTWARE_MAX 763 /* section 14.14: under 128 characters, at most 763 bytes */
#define STUN_UNKNOWN_MAX 4    /* unknown attributes reported in a 420 */

/* Message types: method Binding with the class bits of section 5. */
#define STUN_BINDING_REQUEST 0x0001
#define STUN_BINDING_SUCCESS 0x0101
#define STUN_BINDING_ERROR 0x0111

/* The size of what the builders write, for callers sizing buffers. */
#define STUN_REQUEST_MAX (STUN_HDR_LEN + 8)
#define STUN_RESPONSE_MAX (STUN_HDR_LEN + 24 + 4 + STUN_SOFTWARE_MAX + 1 + 8)

/*
 * Does this datagram look like STUN (section 6: two zero top bits, the magic
 * cookie, a length that is a multiple of 4 and matches the datagram)? This is
 * how the one UDP socket tells STUN from WireGuard and disco; it does not
 * validate attributes.
 */
bool stun_is(const uint8_t *p, size_t len);

/*
 * A Binding request with the caller's random transaction id, with a FINGERPRINT
 * if asked (it lets a server tell STUN from other protocols on its port).
 * Returns its length or -ENOBUFS.
 */
int stun_binding_request_build(uint8_t *buf, size_t cap, const uint8_t txid[STUN_TXID_LEN],
			       bool fingerprint);

/*
 * A Binding success response: its transaction id and reflexive address, from
 * XOR-MAPPED-ADDRESS or else MAPPED-ADDRESS (first of each kind). 0, or
 * -EBADMSG (malformed, a bad FINGERPRINT, an address family other than IPv4 and
 * IPv6), -EPROTO (not a Binding success: an error response, another method),
 * -ENOTSUP (an unknown comprehension-required attribute: discarded, section
 * 7.3.3), -ENOENT (no address). The caller matches ret_txid to its requests.
 */
int stun_binding_response_parse(const uint8_t *p, size_t len, uint8_t ret_txid[STUN_TXID_LEN],
				struct endpoint *ret_mapped);

struct stun_request {
	uint8_t txid[STUN_TXID_LEN];
	/* Comprehension-required attributes we do not know: answer 420 (section 6.3.1). */
	unsigned n_unknown;
	uint16_t unknown[STUN_UNKNOWN_MAX];
};

/*
 * Server side: a Binding request. 0 (check ret->n_unknown), or -EBADMSG
 * (malformed or bad FINGERPRINT: drop it), -EPROTO (another method or class).
 */
int stun_binding_request_parse(struct stun_request *ret, const uint8_t *p, size_t len);

/*
 * The success response telling the client its source address (XOR-MAPPED-ADDRESS),
 * with SOFTWARE if not NULL and FINGERPRINT if asked. Its length, -ENOBUFS or
 * -EINVAL (no IPv4/IPv6 address, SOFTWARE too long).
 */
int stun_binding_response_build(uint8_t *buf, size_t cap, const uint8_t txid[STUN_TXID_LEN],
				const struct endpoint *mapped, const char *software,
				bool fingerprint);

/*
 * The error response to a parsed request (code 300..699) with its standard
 * reason phrase and, for 420, the request's unknown attributes. Malformed
 * requests get no answer at all: answering garbage only helps reflection.
 * Its length, -ENOBUFS or -EINVAL.
 */
int stun_error_response_build(uint8_t *buf, size_t cap, const struct stun_request *req,
			      unsigned code, bool fingerprint);

#endif
