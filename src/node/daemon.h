/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_DAEMON_H
#define TRELLIS_NODE_DAEMON_H

/*
 * trellisd's control-plane mode (design.md §12): the data plane of wgdev.h,
 * configured from the netmap that the control client follows, the state
 * directory, and the local API for `trellis`.
 */

#include <stdbool.h>
#include <stdint.h>

#define DAEMON_DEFAULT_TUN "trellis0"
#define DAEMON_DEFAULT_PORT 41641
#define DAEMON_LOGOUT_TIMEOUT_NS (5ULL * 1000000000ULL)
/* A link, address or route change to the candidates gathered again, once changes settle. */
#define DAEMON_REGATHER_DEBOUNCE_NS (300ULL * 1000000ULL)

struct daemon_opts {
	const char *state_dir;   /* NULL: STATE_DEFAULT_DIR */
	const char *socket_path; /* NULL: LOCALAPI_DEFAULT_SOCKET */
	const char *ifname;      /* NULL: DAEMON_DEFAULT_TUN */
	uint16_t port;           /* WireGuard UDP port */
	unsigned mtu;
	int workers; /* as wgdev_opts */
	bool no_offload;	    /* as wgdev_opts */
	const char *metrics_listen; /* "ADDR:PORT" for GET /metrics; NULL: none */
	unsigned portmap;	     /* port mapping protocols (PORTMAP_* bits); 0: none */
	uint32_t portmap_lifetime_s; /* 0: the default */
	unsigned filter_reject_rate; /* replies to refused packets a second; 0: none (filter.h) */
};

/*
 * Runs in the foreground until SIGTERM/SIGINT (or the interface is deleted),
 * then stops the control client and removes the interface and the sockets.
 * 0, or -errno if it could not start (logged).
 */
int daemon_run(const struct daemon_opts *opts);

#endif
