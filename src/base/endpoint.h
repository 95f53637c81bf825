/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_ENDPOINT_H
#define TRELLIS_BASE_ENDPOINT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

/*
 * Not a kernel address family: the endpoint is a handle, a name for "wherever this
 * peer is reachable now" that the path layer (src/net/magicsock.h) maps to an
 * address when a packet leaves. Above AF_MAX, and below 256 so that one byte holds it.
 */
#define ENDPOINT_AF_HANDLE 0xfe

/* A local address; family AF_UNSPEC: none. */
struct endpoint_src {
	union {
		struct in_addr in4;
		struct in6_addr in6;
	};
	sa_family_t family;
};

/*
 * A UDP endpoint: IPv4, IPv6 or a handle. sa.sa_family == AF_UNSPEC means "none".
 * Code above the path layer stores, copies and compares endpoints without caring
 * which form they have; only the socket code needs an address (endpoint_is_addr).
 *
 * `src` is our side: the local address a datagram from this endpoint arrived at
 * (IP_PKTINFO), and so the source to answer from (the "sticky" source of the kernel's
 * WireGuard): a peer or a stateful firewall in front of a multihomed host expects the
 * reply from the address it sent to. Being part of the endpoint, it travels with it:
 * the engine's roaming stores it with the peer's address and copies it onto every
 * packet it sends. None (AF_UNSPEC), or one of another family than the remote side's
 * (a handle's path may change family), lets the kernel choose, as does a source that
 * stopped working (src/os/udp.h). It is not part of the endpoint's identity:
 * endpoint_equal compares the remote side only.
 */
struct endpoint {
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
		struct {
			sa_family_t family; /* ENDPOINT_AF_HANDLE */
			uint16_t zero;
			uint32_t id;
		} handle;
	};
	struct endpoint_src src;
};

/* Longest text form: "[" v6 "%" scope "]:" port. */
#define ENDPOINT_STR_MAX 72

/* An address or a handle. */
bool endpoint_is_set(const struct endpoint *ep);
/* An IPv4 or IPv6 address (what a socket can send to). */
bool endpoint_is_addr(const struct endpoint *ep);

static inline bool endpoint_is_handle(const struct endpoint *ep)
{
	return ep->sa.sa_family == ENDPOINT_AF_HANDLE;
}

/* The handle with this id (never 0). */
void endpoint_handle_set(struct endpoint *ep, uint32_t id);

/* The remote side (address and port, or handle); src is not compared. */
bool endpoint_equal(const struct endpoint *a, const struct endpoint *b);

/* A source address of the remote side's family is set: the one to send from. */
bool endpoint_src_is_set(const struct endpoint *ep);
/* The same local address (and family); two "none" are equal. */
bool endpoint_src_equal(const struct endpoint_src *a, const struct endpoint_src *b);

static inline void endpoint_src_clear(struct endpoint *ep)
{
	memset(&ep->src, 0, sizeof(ep->src));
}

/* Makes ep's remote side that of `remote`, keeping ep's source. */
static inline void endpoint_set_remote(struct endpoint *ep, const struct endpoint *remote)
{
	struct endpoint_src src = ep->src;

	*ep = *remote;
	ep->src = src;
}

/* The sockaddr length of an address; 0 for a handle or none. */
socklen_t endpoint_len(const struct endpoint *ep);
/* "192.0.2.1:51820" or "[2001:db8::1]:51820"; 0 or -EINVAL. Host names are not resolved. */
int endpoint_parse(struct endpoint *ret, const char *s);
/*
 * Writes the text form above into buf (at least ENDPOINT_STR_MAX bytes); returns buf.
 * A handle is "handle:ID" (logs only: it never reaches a user).
 */
const char *endpoint_format(const struct endpoint *ep, char *buf, size_t len);

#endif
