/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_NAT64_H
#define TRELLIS_NET_NAT64_H

/*
 * NAT64 on IPv6-only links: the prefix (Pref64::/n) a NAT64 translates, learned
 * from the DNS64 the way RFC 7050 says (the AAAA records of ipv4only.arpa embed
 * its two well-known IPv4 addresses, 192.0.0.170 and 192.0.0.171), and the
 * RFC 6052 address math that turns an IPv4 address into the IPv6 address that
 * reaches it through the NAT64, and back.
 *
 * The math is pure. nat64_detect blocks (getaddrinfo, the system resolver): it
 * belongs on a worker. The process keeps the prefix last detected
 * (nat64_prefix_set) so that every thread that opens a connection or sends to an
 * IPv4 address can use it (nat64_prefix_get).
 */

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "base/endpoint.h"

/* The longest text form: an IPv6 address and "/nn". */
#define NAT64_PREFIX_STR_MAX 48
/* AAAA records of ipv4only.arpa looked at: a DNS64 gives one per A record (two). */
#define NAT64_ANSWERS_MAX 8

struct nat64_prefix {
	uint8_t addr[16]; /* the prefix; the bits from len on are zero */
	unsigned len;	  /* 32, 40, 48, 56, 64 or 96; 0: no NAT64 */
};

static inline bool nat64_prefix_equal(const struct nat64_prefix *a, const struct nat64_prefix *b)
{
	return a->len == b->len && !memcmp(a->addr, b->addr, sizeof(a->addr));
}

/* RFC 6052 §2.2: len is one of 32, 40, 48, 56, 64, 96. */
bool nat64_len_valid(unsigned len);

/*
 * RFC 6052 §2.2: the IPv6 address that embeds v4 under p: the 32 bits follow the
 * prefix, skipping bits 64-71 (the "u" octet, zero), and the suffix is zero.
 * 0, or -EINVAL when p has no valid length.
 */
int nat64_addr_synthesize(const struct nat64_prefix *p, const uint8_t v4[4], uint8_t ret[16]);

/*
 * The reverse: the IPv4 address embedded in v6, when v6 lies under p with a zero u
 * octet. 0, -ENOENT (not under p) or -EINVAL (p has no valid length).
 */
int nat64_addr_extract(const struct nat64_prefix *p, const uint8_t v6[16], uint8_t ret[4]);

/*
 * RFC 7050 §3: the prefix from the AAAA answers for ipv4only.arpa. A length fits when
 * every answer embeds one of the well-known addresses at it, with a zero u octet, under
 * the same prefix; the lengths are tried from /96 down and the first that fits wins (a
 * shorter one could only fit by accident of the prefix's own bits). 0 with *ret set, or
 * -ENOENT (no answers, or none fits: a resolver without DNS64 answers with nothing).
 */
int nat64_prefix_from_answers(const uint8_t (*v6)[16], unsigned n, struct nat64_prefix *ret);

/*
 * Blocking: resolves ipv4only.arpa (AAAA only) with the system resolver and derives the
 * prefix. 0 with *ret set, -ENOENT (no NAT64: no AAAA, or none embeds the well-known
 * addresses), or -EHOSTUNREACH (the resolver did not answer).
 */
int nat64_detect(struct nat64_prefix *ret);

/* "2001:db8:64:64::/64", or "" for none. */
void nat64_prefix_str(const struct nat64_prefix *p, char *buf, unsigned cap);

/*
 * Blocking but brief (a route lookup, no packet): does IPv4 have a route here at all? A
 * connected UDP socket to 192.0.0.170 fails with ENETUNREACH without one.
 */
bool nat64_ipv4_routed(void);

/*
 * The process's state, any thread: set after each detection (p->len 0: none), read by
 * what reaches IPv4 addresses. nat64_prefix_get returns whether there is a prefix, and
 * with ret_ipv4_routed whether IPv4 had a route when it was detected.
 */
void nat64_state_set(const struct nat64_prefix *p, bool ipv4_routed);
bool nat64_prefix_get(struct nat64_prefix *ret, bool *ret_ipv4_routed);

/*
 * An IPv4 endpoint as the IPv6 one that reaches it through the process's NAT64 (same
 * port; src dropped: it is of the other family). 0 with *ret set, -ENOENT with no
 * prefix, -EINVAL when ep is not IPv4.
 */
int nat64_endpoint_synthesize(const struct endpoint *ep, struct endpoint *ret);

/*
 * Where a datagram for ep goes: through the NAT64 (as nat64_endpoint_synthesize) when
 * ep is IPv4, there is a prefix and IPv4 has no route of its own; else ep itself.
 * Returns 1 when it synthesized, 0 when *ret = *ep.
 */
int nat64_endpoint_route(const struct endpoint *ep, struct endpoint *ret);

#endif
