/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_NETMAP_APPLY_H
#define TRELLIS_NODE_NETMAP_APPLY_H

/*
 * Turns netmaps into WireGuard peers and TUN interface state. The daemon keeps
 * the full netmap (netmap + netmap_apply_delta from src/proto) and hands every
 * new version to netmap_apply_netmap, which changes only what differs from the
 * version applied before: peers that did not change are not touched, so their
 * sessions survive a netmap update.
 */

#include <stdbool.h>
#include <stdint.h>

#include "proto/netmap.h"
#include "wg/config.h"
#include "wg/device.h"

#define NETMAP_APPLY_ROUTE4 "100.64.0.0/10"
#define NETMAP_APPLY_ROUTE6 "fd7e:11e5:7a11::/48"

/*
 * Interface operations (src/os/netlink.h in the daemon; fakes in unit tests, so
 * they run without root). Each returns 0 or -errno; addr is 4 or 16 bytes.
 */
struct netmap_apply_os {
	void *ctx;
	int (*link_set_up)(void *ctx, const char *ifname, bool up);
	int (*link_set_mtu)(void *ctx, const char *ifname, unsigned mtu);
	int (*addr_add)(void *ctx, const char *ifname, int family, const void *addr,
			unsigned prefixlen);
	int (*addr_del)(void *ctx, const char *ifname, int family, const void *addr,
			unsigned prefixlen);
	int (*route_add)(void *ctx, const char *ifname, int family, const void *dst,
			 unsigned prefixlen);
	int (*route_del)(void *ctx, const char *ifname, int family, const void *dst,
			 unsigned prefixlen);
};

/* The real thing: src/os/netlink.h (ctx unused). */
extern const struct netmap_apply_os netmap_apply_os_netlink;

struct magicsock;
struct netmap_apply;

/*
 * dev: the device to configure (not owned). ms: the magicsock under it (not owned):
 * peers get handles whose paths are their netmap endpoints; NULL: the device gets the
 * endpoints themselves. ifname: the TUN interface; os may be NULL to leave the
 * interface alone (peers only). mtu 0 leaves the MTU alone.
 */
int netmap_apply_new(struct wg_device *dev, struct magicsock *ms, const char *ifname,
		     unsigned mtu, const struct netmap_apply_os *os, struct netmap_apply **ret);
/*
 * Accepts NULL. Leaves the device and interface as they are (see netmap_apply_clear),
 * and the peers' handles with the magicsock (which frees them with itself).
 */
void netmap_apply_free(struct netmap_apply *na);

/* Our WireGuard private key (the node key). 0 or -errno from wg_device_apply. */
int netmap_apply_set_private_key(struct netmap_apply *na, const uint8_t key[WG_KEY_LEN],
				 uint64_t now_ns);

/*
 * Makes the device and interface match nm: the minimal peer change against the
 * netmap applied last (none at first), self's addresses on the interface, the
 * tailnet routes and the link up. 0, or -errno: peers failed (nothing changed
 * on the device; the next call retries the whole diff) or an interface step
 * failed (peers are applied; the interface is retried on the next call).
 */
int netmap_apply_netmap(struct netmap_apply *na, const struct netmap *nm, uint64_t now_ns);

/* Removes every peer and our addresses and routes (`trellis down`, logout). */
int netmap_apply_clear(struct netmap_apply *na, uint64_t now_ns);

/*
 * The pure part: the configuration that turns the peers applied last into nm's,
 * malloc'd; free with wg_device_cfg_free. n_peers == 0 means no change. Does not
 * update what counts as applied (netmap_apply_netmap does), and makes no handles:
 * new peers' endpoints are the netmap's addresses. 0 or -ENOMEM.
 */
int netmap_apply_diff(struct netmap_apply *na, const struct netmap *nm,
		      struct wg_device_cfg **ret_cfg);

/* The magicsock handle of the applied peer with this key (for status). 0 or -ENOENT. */
int netmap_apply_peer_handle(const struct netmap_apply *na, const uint8_t key[WG_KEY_LEN],
			     struct endpoint *ret);

/* Peers currently applied (for status and tests). */
unsigned netmap_apply_peer_count(const struct netmap_apply *na);

#endif
