/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_NODEMETRICS_H
#define TRELLIS_NODE_NODEMETRICS_H

/*
 * trellisd's Prometheus text (GET /metrics on `trellisd --metrics-listen ADDR:PORT`, as
 * trellis-control's): a snapshot of counters the daemon gathers on its loop thread, turned
 * into text here without I/O. Names are trellis_node_*; drops carry a reason label.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "filter/filter.h"
#include "net/magicsock.h"
#include "node/control_client.h"
#include "node/wgdev.h"
#include "wg/device.h"

struct nodemetrics_snapshot {
	const char *backend_state; /* docs/localapi.md */
	bool control_connected;	   /* a live map stream */
	/* Compressed full netmaps taken since the daemon started, by every client. */
	struct control_client_stats control;
	unsigned peers, peers_online;
	unsigned peers_handshake; /* with a completed handshake in the last 3 minutes */
	struct wg_device_stats wg;
	struct magicsock_stats ms;
	struct wgdev_counters dev;
	struct filter_stats filter; /* the packet filter (all zero: none) */
};

/* The text into *ret (malloc'd, free it), its length into *ret_len. 0 or -ENOMEM. */
int nodemetrics_render(const struct nodemetrics_snapshot *m, char **ret, size_t *ret_len);

#endif
