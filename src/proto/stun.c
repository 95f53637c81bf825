/* SPDX-License-Identifier: MIT */
/*
 * STUN Binding messages (RFC 8489). Section numbers below are RFC 8489's.
 *
 * Every parse first checks the header against the datagram (stun_is), then
 * walks all attributes once with explicit bounds: each must fit in the message
 * with its padding, and FINGERPRINT, if present, must be the last one and
 * match. Only then is anything handed out.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "base/util.h"
#include "proto/stun.h"

/* Attribute types (section 18.3). Below 0x8000: comprehension-required. */
#define ATTR_MAPPED_ADDRESS 0x0001
#define ATTR_USERNAME 0x0006
#define ATTR_MESSAGE_INTEGRITY 0x0008
#define ATTR_ERROR_CODE 0x0009
#define ATTR_UNKNOWN_ATTRIBUTES 0x000a
#define ATTR_REALM 0x0014
#define ATTR_NONCE 0x0015
#define ATTR_MESSAGE_INTEGRITY_SHA256 0x001c
#define ATTR_PASSWORD_ALGORITHM 0x001d
#define ATTR_USERHASH 0x001e
#define ATTR_XOR_MAPPED_ADDRESS 0x0020
#define ATTR_COMPREHENSION_OPTIONAL 0x8000
#define ATTR_SOFTWARE 0x8022
#define ATTR_FINGERPRINT 0x8028

#define FAMILY_IPV4 0x01
#define FAMILY_IPV6 0x02
/* Section 14.7: the CRC-32 is XORed with this so a FINGERPRINT never looks like another CRC. */
#define FINGERPRINT_XOR 0x5354554eu
#define FINGERPRINT_ATTR_LEN 8
#define ATTR_HDR_LEN 4

static size_t pad4(size_t n)
{
	return (n + 3) & ~(size_t)3;
}

/* CRC-32 of ISO 3309 / ITU-T V.42 (reflected, polynomial 0x04C11DB7), as section 14.7 asks. */
static uint32_t crc32(const uint8_t *p, size_t len)
{
	uint32_t crc = 0xffffffffu;

	while (len--) {
		crc ^= *p++;
		for (int i = 0; i < 8; i++)
			crc = (crc >> 1) ^ (0xedb88320u & -(crc & 1));
	}
	return ~crc;
}

bool stun_is(const uint8_t *p, size_t len)
{
	size_t mlen;

	if (len < STUN_HDR_LEN || (p[0] & 0xc0) || get_be32(p + 4) != STUN_MAGIC_COOKIE)
		return false;
	mlen = get_be16(p + 2);
	return mlen % 4 == 0 && mlen == len - STUN_HDR_LEN;
}

/* What one pass over the attributes found. */
struct walk {
	const uint8_t *xor_addr, *addr; /* values of the first of each */
	size_t xor_len, addr_len;
	unsigned n_unknown;
	uint16_t unknown[STUN_UNKNOWN_MAX];
};

static int walk(struct walk *w, const uint8_t *p, size_t len)
{
	bool after_integrity = false;
	size_t off = STUN_HDR_LEN;

	memset(w, 0, sizeof(*w));
	while (off < len) {
		uint16_t type, alen;
		const uint8_t *v;

		/* off and len are multiples of 4 (stun_is), so a header always fits. */
		type = get_be16(p + off);
		alen = get_be16(p + off + 2);
		v = p + off + ATTR_HDR_LEN;
		/* Padded, the value runs past the message: a lying length or missing padding. */
		if (pad4(alen) > len - off - ATTR_HDR_LEN)
			return -EBADMSG;
		if (type == ATTR_FINGERPRINT) {
			/* Section 14.7: last, a CRC of all before it (header length included). */
			if (alen != 4 || off + FINGERPRINT_ATTR_LEN != len)
				return -EBADMSG;
			if ((crc32(p, off) ^ FINGERPRINT_XOR) != get_be32(v))
				return -EBADMSG;
			return 0;
		}
		off += ATTR_HDR_LEN + pad4(alen);
		/* Sections 14.5 and 14.6: only FINGERPRINT counts after MESSAGE-INTEGRITY. */
		if (after_integrity)
			continue;
		switch (type) {
		case ATTR_XOR_MAPPED_ADDRESS:
			if (!w->xor_addr) {
				w->xor_addr = v;
				w->xor_len = alen;
			}
			break;
		case ATTR_MAPPED_ADDRESS:
			if (!w->addr) {
				w->addr = v;
				w->addr_len = alen;
			}
			break;
		case ATTR_MESSAGE_INTEGRITY:
		case ATTR_MESSAGE_INTEGRITY_SHA256:
			after_integrity = true;
			break;
		case ATTR_USERNAME:
		case ATTR_ERROR_CODE:
		case ATTR_UNKNOWN_ATTRIBUTES:
		case ATTR_REALM:
		case ATTR_NONCE:
		case ATTR_PASSWORD_ALGORITHM:
		case ATTR_USERHASH:
			break;
		default:
			if (type < ATTR_COMPREHENSION_OPTIONAL && w->n_unknown < STUN_UNKNOWN_MAX)
				w->unknown[w->n_unknown++] = type;
			break;
		}
	}
	return 0;
}

/*
 * (XOR-)MAPPED-ADDRESS, sections 14.1 and 14.2: reserved byte (ignored),
 * family, port, address; the XOR form masks the port with the cookie's top
 * half and the address with the cookie (IPv4) or cookie || transaction id (IPv6).
 */
static int address_decode(struct endpoint *ret, const uint8_t *hdr, const uint8_t *v, size_t len,
			  bool xor)
{
	uint8_t addr[16];
	uint16_t port;
	size_t alen;

	if (len < 4)
		return -EBADMSG;
	if (v[1] == FAMILY_IPV4)
		alen = 4;
	else if (v[1] == FAMILY_IPV6)
		alen = 16;
	else
		return -EBADMSG;
	if (len != 4 + alen)
		return -EBADMSG;
	port = get_be16(v + 2);
	memcpy(addr, v + 4, alen);
	if (xor) {
		port ^= (uint16_t)(STUN_MAGIC_COOKIE >> 16);
		for (size_t i = 0; i < alen; i++)
			addr[i] ^= hdr[4 + i];
	}
	memset(ret, 0, sizeof(*ret));
	if (alen == 4) {
		ret->in4.sin_family = AF_INET;
		ret->in4.sin_port = htons(port);
		memcpy(&ret->in4.sin_addr, addr, 4);
	} else {
		ret->in6.sin6_family = AF_INET6;
		ret->in6.sin6_port = htons(port);
		memcpy(&ret->in6.sin6_addr, addr, 16);
	}
	return 0;
}

/* A whole message of the given type: header, then every attribute. */
static int message_walk(struct walk *w, const uint8_t *p, size_t len, uint16_t type)
{
	if (!stun_is(p, len))
		return -EBADMSG;
	if (get_be16(p) != type)
		return -EPROTO;
	return walk(w, p, len);
}

int stun_binding_response_parse(const uint8_t *p, size_t len, uint8_t ret_txid[STUN_TXID_LEN],
				struct endpoint *ret_mapped)
{
	struct endpoint ep;
	struct walk w;
	int ret;

	ret = message_walk(&w, p, len, STUN_BINDING_SUCCESS);
	if (ret < 0)
		return ret;
	if (w.n_unknown)
		return -ENOTSUP;
	if (w.xor_addr)
		ret = address_decode(&ep, p, w.xor_addr, w.xor_len, true);
	else if (w.addr)
		ret = address_decode(&ep, p, w.addr, w.addr_len, false);
	else
		return -ENOENT;
	if (ret < 0)
		return ret;
	memcpy(ret_txid, p + 8, STUN_TXID_LEN);
	*ret_mapped = ep;
	return 0;
}

int stun_binding_request_parse(struct stun_request *ret, const uint8_t *p, size_t len)
{
	struct walk w;
	int r;

	r = message_walk(&w, p, len, STUN_BINDING_REQUEST);
	if (r < 0)
		return r;
	memcpy(ret->txid, p + 8, STUN_TXID_LEN);
	ret->n_unknown = w.n_unknown;
	memcpy(ret->unknown, w.unknown, sizeof(ret->unknown));
	return 0;
}

/* ---- builders ---- */

static size_t header_put(uint8_t *buf, uint16_t type, const uint8_t txid[STUN_TXID_LEN])
{
	put_be16(buf, type);
	put_be16(buf + 2, 0);
	put_be32(buf + 4, STUN_MAGIC_COOKIE);
	memcpy(buf + 8, txid, STUN_TXID_LEN);
	return STUN_HDR_LEN;
}

/* Returns where the value goes; the padding is zeroed. */
static uint8_t *attr_put(uint8_t *buf, size_t *off, uint16_t type, size_t len)
{
	uint8_t *v = buf + *off + ATTR_HDR_LEN;

	put_be16(buf + *off, type);
	put_be16(buf + *off + 2, (uint16_t)len);
	memset(v + len, 0, pad4(len) - len);
	*off += ATTR_HDR_LEN + pad4(len);
	return v;
}

/* Sets the message length and, if asked, appends FINGERPRINT; returns the total length. */
static int finish(uint8_t *buf, size_t off, bool fingerprint)
{
	if (fingerprint) {
		uint32_t crc;

		/* The length in the header the CRC covers already counts FINGERPRINT. */
		put_be16(buf + 2, (uint16_t)(off - STUN_HDR_LEN + FINGERPRINT_ATTR_LEN));
		crc = crc32(buf, off) ^ FINGERPRINT_XOR;
		put_be32(attr_put(buf, &off, ATTR_FINGERPRINT, 4), crc);
	}
	put_be16(buf + 2, (uint16_t)(off - STUN_HDR_LEN));
	return (int)off;
}

int stun_binding_request_build(uint8_t *buf, size_t cap, const uint8_t txid[STUN_TXID_LEN],
			       bool fingerprint)
{
	size_t off;

	if (cap < STUN_HDR_LEN + (fingerprint ? FINGERPRINT_ATTR_LEN : 0))
		return -ENOBUFS;
	off = header_put(buf, STUN_BINDING_REQUEST, txid);
	return finish(buf, off, fingerprint);
}

int stun_binding_response_build(uint8_t *buf, size_t cap, const uint8_t txid[STUN_TXID_LEN],
				const struct endpoint *mapped, const char *software,
				bool fingerprint)
{
	size_t off, alen, slen = software ? strlen(software) : 0, need;
	const uint8_t *addr;
	uint16_t port;
	uint8_t *v;

	if (mapped->sa.sa_family == AF_INET) {
		alen = 4;
		addr = (const uint8_t *)&mapped->in4.sin_addr;
		port = ntohs(mapped->in4.sin_port);
	} else if (mapped->sa.sa_family == AF_INET6) {
		alen = 16;
		addr = (const uint8_t *)&mapped->in6.sin6_addr;
		port = ntohs(mapped->in6.sin6_port);
	} else {
		return -EINVAL;
	}
	if (slen > STUN_SOFTWARE_MAX)
		return -EINVAL;
	need = STUN_HDR_LEN + ATTR_HDR_LEN + 4 + alen + (software ? ATTR_HDR_LEN + pad4(slen) : 0) +
	       (fingerprint ? FINGERPRINT_ATTR_LEN : 0);
	if (cap < need)
		return -ENOBUFS;
	off = header_put(buf, STUN_BINDING_SUCCESS, txid);
	v = attr_put(buf, &off, ATTR_XOR_MAPPED_ADDRESS, 4 + alen);
	v[0] = 0;
	v[1] = alen == 4 ? FAMILY_IPV4 : FAMILY_IPV6;
	put_be16(v + 2, port ^ (uint16_t)(STUN_MAGIC_COOKIE >> 16));
	for (size_t i = 0; i < alen; i++)
		v[4 + i] = addr[i] ^ buf[4 + i];
	if (software)
		memcpy(attr_put(buf, &off, ATTR_SOFTWARE, slen), software, slen);
	return finish(buf, off, fingerprint);
}

/* Section 14.8's reason phrases for the codes a Binding server sends. */
static const char *reason_phrase(unsigned code)
{
	switch (code) {
	case 400:
		return "Bad Request";
	case 420:
		return "Unknown Attribute";
	case 500:
		return "Server Error";
	default:
		return "Error";
	}
}

int stun_error_response_build(uint8_t *buf, size_t cap, const struct stun_request *req,
			      unsigned code, bool fingerprint)
{
	const char *reason = reason_phrase(code);
	size_t off, rlen = strlen(reason), ulen = 0, need;
	uint8_t *v;

	if (code < 300 || code > 699 || req->n_unknown > STUN_UNKNOWN_MAX)
		return -EINVAL;
	if (code == 420)
		ulen = 2 * req->n_unknown;
	need = STUN_HDR_LEN + ATTR_HDR_LEN + pad4(4 + rlen) +
	       (ulen ? ATTR_HDR_LEN + pad4(ulen) : 0) + (fingerprint ? FINGERPRINT_ATTR_LEN : 0);
	if (cap < need)
		return -ENOBUFS;
	off = header_put(buf, STUN_BINDING_ERROR, req->txid);
	/* Section 14.8: 21 zero bits, class (hundreds) in 3 bits, number (0..99) in 8. */
	v = attr_put(buf, &off, ATTR_ERROR_CODE, 4 + rlen);
	v[0] = v[1] = 0;
	v[2] = (uint8_t)(code / 100);
	v[3] = (uint8_t)(code % 100);
	memcpy(v + 4, reason, rlen);
	if (ulen) {
		v = attr_put(buf, &off, ATTR_UNKNOWN_ATTRIBUTES, ulen);
		for (unsigned i = 0; i < req->n_unknown; i++)
			put_be16(v + 2 * i, req->unknown[i]);
	}
	return finish(buf, off, fingerprint);
}
