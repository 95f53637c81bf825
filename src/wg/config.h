/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_CONFIG_H
#define TRELLIS_WG_CONFIG_H

/*
 * Configuration changes and state snapshots of a WireGuard device, in the terms
 * of the cross-platform userspace API (wireguard.com/xplatform). uapi.c turns
 * text into struct wg_device_cfg and struct wg_device_info into text;
 * device.c applies and produces them. Neither side does I/O.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/endpoint.h"

#define WG_KEY_LEN 32

struct wg_allowedip {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t cidr;   /* 0..32 or 0..128 */
	uint8_t addr[16]; /* network byte order; IPv4 uses the first 4 bytes */
};

struct wg_peer_cfg {
	uint8_t public_key[WG_KEY_LEN];
	bool remove;
	bool update_only;
	bool replace_allowedips;
	bool has_preshared_key;
	uint8_t preshared_key[WG_KEY_LEN]; /* all zeros removes it */
	bool has_endpoint;
	struct endpoint endpoint;
	bool has_persistent_keepalive;
	uint16_t persistent_keepalive; /* seconds, 0 = off */
	unsigned n_allowedips;
	struct wg_allowedip *allowedips;
};

struct wg_device_cfg {
	bool has_private_key;
	uint8_t private_key[WG_KEY_LEN]; /* all zeros removes it */
	bool has_listen_port;
	uint16_t listen_port;
	bool has_fwmark;
	uint32_t fwmark;
	bool replace_peers;
	unsigned n_peers;
	struct wg_peer_cfg *peers;
};

void wg_device_cfg_free(struct wg_device_cfg *cfg); /* accepts NULL; wipes keys */

struct wg_peer_info {
	uint8_t public_key[WG_KEY_LEN];
	bool has_preshared_key;
	uint8_t preshared_key[WG_KEY_LEN];
	struct endpoint endpoint; /* family AF_UNSPEC when unknown */
	uint64_t last_handshake_wall_ns; /* CLOCK_REALTIME; 0 = never */
	uint64_t rx_bytes;
	uint64_t tx_bytes;
	uint16_t persistent_keepalive;
	unsigned n_allowedips;
	struct wg_allowedip *allowedips;
};

struct wg_device_info {
	bool has_private_key;
	uint8_t private_key[WG_KEY_LEN];
	uint16_t listen_port;
	uint32_t fwmark;
	unsigned n_peers;
	struct wg_peer_info *peers;
};

void wg_device_info_free(struct wg_device_info *info); /* accepts NULL; wipes keys */

#endif
