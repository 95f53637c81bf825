/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_ENDPOINTS_H
#define TRELLIS_NET_ENDPOINTS_H

/*
 * The node's direct endpoint candidates from its own interface addresses: what
 * it reports to the coordination server for peers to try. (STUN-reflexive and
 * port-mapped candidates come from their own modules.)
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/endpoint.h"

/* An address prefix: family AF_INET or AF_INET6, addr in network order. */
struct endpoints_prefix {
	int family;
	uint8_t addr[16];
	unsigned bits;
};

/*
 * Is this address (4 or 16 bytes, by family) never an endpoint: unspecified,
 * loopback, link-local, IPv6 multicast, or inside one of skip[] (the tailnet's
 * own prefixes: an address routed into the tunnel cannot carry the tunnel)?
 */
bool endpoints_addr_skipped(int family, const void *addr, const struct endpoints_prefix *skip,
			    unsigned n_skip);

/*
 * Every address of every interface that is up and not loopback, but
 * skip_ifname (our TUN) and the addresses endpoints_addr_skipped refuses, with
 * port, in interface order. Fills up to cap and returns how many; 0 when port
 * is 0 or the addresses cannot be read.
 */
unsigned endpoints_collect(uint16_t port, const char *skip_ifname,
			   const struct endpoints_prefix *skip, unsigned n_skip,
			   struct endpoint *ret, unsigned cap);

#endif
