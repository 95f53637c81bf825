/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_ENDPOINT_H
#define TRELLIS_BASE_ENDPOINT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Not a kernel address family: the endpoint is a handle, a name for "wherever this
 * peer is reachable now" that the path layer (src/net/magicsock.h) maps to an
 * address when a packet leaves. Above AF_MAX, and below 256 so that one byte holds it.
 */
#define ENDPOINT_AF_HANDLE 0xfe

/*
 * A UDP endpoint: IPv4, IPv6 or a handle. sa.sa_family == AF_UNSPEC means "none".
 * Code above the path layer stores, copies and compares endpoints without caring
 * which form they have; only the socket code needs an address (endpoint_is_addr).
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

bool endpoint_equal(const struct endpoint *a, const struct endpoint *b);
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
