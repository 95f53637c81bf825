/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PORTMAP_PORTMAP_H
#define TRELLIS_PORTMAP_PORTMAP_H

/*
 * The node's port mapping client: given the local UDP port of the WireGuard
 * socket, it asks the default gateway for a mapping by whichever protocol
 * works, keeps it renewed, offers the mapped external endpoint as a candidate
 * (portmap_endpoints, any thread) and deletes it when freed.
 *
 * Choice (RFC 6887 §9 prefers PCP, and a mapping is made only once): at start
 * a PCP MAP request, a NAT-PMP external address request and a UPnP SSDP
 * discovery go out together. A PCP mapping wins at once. NAT-PMP maps when PCP
 * has refused (a version 0 answer, an error) or not answered within
 * PORTMAP_PROBE_WAIT_NS; UPnP maps when neither has. The winner keeps its
 * mapping renewed (each engine's RFC schedule; UPnP at half its lease); the
 * others are dropped. Nothing found: the whole round again after
 * PORTMAP_RETRY_NS; the default gateway is looked up again every
 * PORTMAP_GATEWAY_CHECK_NS and a new one starts a new round.
 *
 * IPv6 (with PCP among the protocols): a stateful IPv6 firewall drops what nobody
 * inside asked for, so beside the IPv4 mapping a PCP MAP with our global IPv6
 * address as the internal one goes to the gateway of the IPv6 default route (a
 * router's link-local address, as router advertisements give it): RFC 6887 §11's
 * IPv6 firewall case, which opens a pinhole (external endpoint = our address and
 * port). It is renewed and deleted like the IPv4 mapping, independently of it, and
 * asked for anew when the gateway or our address changes (each gateway check:
 * portmap_net_changed, and every PORTMAP_GATEWAY_CHECK_NS).
 * NAT-PMP has no IPv6; UPnP's WANIPv6FirewallControl is not used.
 *
 * Threads: everything but portmap_endpoints runs on the loop's thread. NAT-PMP
 * and PCP are non-blocking sockets on the loop; UPnP (miniupnpc blocks) runs on
 * a worker (base/workq).
 */

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/endpoint.h"
#include "base/loop.h"

enum portmap_proto {
	PORTMAP_PCP = 1,
	PORTMAP_NATPMP = 2,
	PORTMAP_UPNP = 4,
};
#define PORTMAP_ALL (PORTMAP_PCP | PORTMAP_NATPMP | PORTMAP_UPNP)

#define PORTMAP_LIFETIME_DEFAULT_S 7200 /* RFC 6886 §3.3's recommendation */
#define PORTMAP_LIFETIME_MIN_S 2
#define PORTMAP_PROBE_WAIT_NS (2ULL * 1000000000ULL)
#define PORTMAP_RETRY_NS (60ULL * 1000000000ULL)
#define PORTMAP_GATEWAY_CHECK_NS (60ULL * 1000000000ULL)
/* At exit, how long deletions may wait for the gateway's answers. */
#define PORTMAP_EXIT_WAIT_NS (1000ULL * 1000000ULL)

/*
 * "auto" (all), "off" (none) or a comma-separated list of "pcp", "nat-pmp",
 * "upnp" into *ret (PORTMAP_* bits). 0, or -EINVAL.
 */
int portmap_protocols_parse(const char *s, unsigned *ret);
/* "pcp", "nat-pmp", "upnp" for one bit; NULL for none. */
const char *portmap_proto_name(unsigned proto);

struct portmap_cfg {
	uint16_t port;	     /* the WireGuard socket's local UDP port */
	unsigned protocols;  /* PORTMAP_* bits; 0: nothing is ever asked */
	uint32_t lifetime_s; /* 0: PORTMAP_LIFETIME_DEFAULT_S */
	/* Loop thread: what portmap_endpoints returns changed. */
	void (*changed)(void *ctx);
	void *ctx;
};

struct portmap;

/* Starts at once (on the loop's next turn). 0 or -errno. */
int portmap_new(struct loop *loop, const struct portmap_cfg *cfg, struct portmap **ret);
/*
 * Accepts NULL. Deletes the mapping held (waits up to PORTMAP_EXIT_WAIT_NS for
 * NAT-PMP/PCP answers; a UPnP deletion takes what miniupnpc's request takes)
 * and frees. Loop thread, the loop running or not.
 */
void portmap_free(struct portmap *pm);
/*
 * Our links, addresses or routes changed: the gateways are looked at again now rather
 * than at the next PORTMAP_GATEWAY_CHECK_NS (a new IPv6 address or default route asks for
 * a pinhole at once). Nothing changes when they are the same. Loop thread; accepts NULL.
 */
void portmap_net_changed(struct portmap *pm);
/*
 * The mapped external endpoints into ret: the IPv4 mapping, then the IPv6 pinhole
 * (0, 1 or 2). Any thread.
 */
unsigned portmap_endpoints(struct portmap *pm, struct endpoint *ret, unsigned cap);
/*
 * For `trellis status --json` and `trellis netcheck` (docs/localapi.md,
 * "portmap"): the gateway, which protocols answered, the one in use, the
 * external endpoint and lease, and the IPv6 pinhole ("ipv6"). Loop thread. NULL on
 * allocation failure.
 */
json_t *portmap_status_json(struct portmap *pm);

#endif
