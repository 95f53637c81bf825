/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PORTMAP_UPNP_H
#define TRELLIS_PORTMAP_UPNP_H

/*
 * UPnP-IGD through Debian's miniupnpc: SSDP discovery, the gateway's
 * description (XML, parsed by miniupnpc), AddPortMapping / DeletePortMapping
 * and GetExternalIPAddress. Every call blocks (for up to a few seconds), so
 * they run on a worker (portmap.c), never on the loop or a packet thread.
 * A gateway (struct upnp_igd) is used by one thread at a time.
 */

#include <stddef.h>
#include <stdint.h>

#define UPNP_DISCOVER_MS 1000
#define UPNP_DESC "trellis"

struct upnp_igd;

/*
 * Finds an Internet gateway device by SSDP within timeout_ms. 0 and *ret, or
 * -ENOENT (nothing answered or no IGD among those that did; err says which).
 * An IGD that reports itself not connected (it does when its external address
 * is in a reserved range, as in the lab) is taken: whether the address is
 * usable is the caller's choice.
 */
int upnp_igd_discover(int timeout_ms, struct upnp_igd **ret, char *err, size_t err_len);
/* Accepts NULL. */
void upnp_igd_free(struct upnp_igd *igd);
/* Our address on the gateway's LAN, as miniupnpc found it ("" if unknown). */
const char *upnp_igd_lan_addr(const struct upnp_igd *igd);
/* 0, or -EPROTO (the UPnP error code in err). */
int upnp_igd_external_ip(struct upnp_igd *igd, uint8_t ret[4], char *err, size_t err_len);
/*
 * AddPortMapping UDP ext_port -> our LAN address:internal_port for lease_s
 * (the granted lease in *ret_lease_s: a gateway that only takes permanent
 * leases gets 0 and the caller deletes the mapping itself). 0; -EADDRINUSE
 * (718: the external port belongs to another client); -EPROTO (err).
 */
int upnp_igd_map(struct upnp_igd *igd, uint16_t internal_port, uint16_t ext_port, uint32_t lease_s,
		 uint32_t *ret_lease_s, char *err, size_t err_len);
/* DeletePortMapping UDP ext_port: 0 or -EPROTO. */
int upnp_igd_unmap(struct upnp_igd *igd, uint16_t ext_port, char *err, size_t err_len);

#endif
