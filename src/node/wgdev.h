/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_WGDEV_H
#define TRELLIS_NODE_WGDEV_H

/*
 * The data plane of trellisd: one TUN interface driven by the wg engine, the UDP
 * sockets of a magicsock (src/net), reader and crypto threads, and the UAPI socket
 * for wg(8).
 * Plain WireGuard mode (wgdev_run) is just this; the control-plane mode
 * (daemon.c) embeds the same thing in its own loop and configures the engine
 * from the netmap.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/loop.h"

struct filter;
struct magicsock;
struct wg_device;
struct wg_device_info;

struct wgdev_opts {
	const char *ifname;
	unsigned mtu;
	int workers; /* crypto threads; 0 = inline on the I/O threads; <0 = one per CPU above 2 */
	const char *socket_path; /* NULL: /var/run/wireguard/IFACE.sock */
	uint16_t port;           /* UDP listen port; 0 = the kernel picks one */
	/* TUN without IFF_VNET_HDR (no TSO/GRO); also TRELLIS_NO_OFFLOAD=1 in the environment. */
	bool no_offload;
	/* A UAPI socket in use by another process is a warning, not a failure. */
	bool uapi_optional;
	/*
	 * wgdev_run only: called once the interface and the UAPI socket are up, before
	 * the loop runs (a daemonizing parent waits for this to exit). NULL: none.
	 */
	void (*ready)(void *arg);
	void *ready_arg;
	/*
	 * Keep STUN answers and disco for readers (wgdev_stun_listen, wgdev_disco_listen);
	 * off: dropped and counted.
	 */
	bool stun_box;
	/*
	 * Loop thread: the netlink monitor saw a link, address or route change (after the
	 * MTU followed it). NULL: none.
	 */
	void (*net_changed)(void *ctx);
	void *net_changed_ctx;
};

struct wgdev;

/*
 * Plain WireGuard mode. Runs in the foreground until SIGTERM/SIGINT or until the
 * interface is deleted, then tears everything down (the TUN interface disappears
 * with its fd). 0, or -errno if it could not start.
 */
int wgdev_run(const struct wgdev_opts *opts);

/*
 * The data plane on the caller's loop (the loop thread is the "control thread"
 * of wgdev.c; the engine's timers wake it through an async source of their
 * own). The caller must have called loop_signals_catch before, so the threads
 * started here inherit the blocked signals. When the TUN interface is deleted
 * under us, it stops the loop. 0 or -errno (logged).
 */
int wgdev_new(struct loop *loop, const struct wgdev_opts *opts, struct wgdev **ret);
/* Accepts NULL. Removes the UAPI socket; the interface disappears with its fd. */
void wgdev_free(struct wgdev *w);
/*
 * Who to tell (any thread) that the magicsock's STUN mailbox has answers; NULL: nobody.
 * Once it returns, the previous fn is not running and will not run.
 */
void wgdev_stun_listen(struct wgdev *w, void (*fn)(void *ctx), void *ctx);
/* The same for the disco mailbox (open with stun_box). */
void wgdev_disco_listen(struct wgdev *w, void (*fn)(void *ctx), void *ctx);
/* The same for completed handshakes (the engine's handshake_done; any thread, rare). */
void wgdev_handshake_listen(struct wgdev *w, void (*fn)(void *ctx), void *ctx);
/* Any thread: run the engine timers soon (after a configuration change). */
void wgdev_timers_kick(struct wgdev *w);

struct wg_device *wgdev_device(struct wgdev *w);
const char *wgdev_ifname(const struct wgdev *w);
/* The bound UDP port (any thread). */
uint16_t wgdev_port(struct wgdev *w);
/* The path layer under the engine: peer handles and their paths (net/magicsock.h). */
struct magicsock *wgdev_magicsock(struct wgdev *w);
/*
 * wg_device_info_get with every handle resolved to the address it stands for now
 * (none if it has no path): what `wg show` and status show. 0 or -ENOMEM.
 */
int wgdev_info_get(struct wgdev *w, struct wg_device_info **ret);

/*
 * The packet filter the data path consults (src/filter; not owned: it must outlive the
 * device); NULL: none, everything passes. Any thread.
 */
void wgdev_filter_set(struct wgdev *w, struct filter *f);
/* Flow accounting of what passes TUN (node/flowtable.h); NULL: none. Any thread. */
struct flowtable;
void wgdev_flowtable_set(struct wgdev *w, struct flowtable *ft);

/* Data-plane counters the engine's per-peer view does not have, for status. */
struct wgdev_counters {
	unsigned mtu;		 /* the interface's, followed */
	uint32_t buf_size;	 /* of the packet buffers the data path uses for it */
	uint64_t too_big_tun;	 /* from TUN, larger than the buffers: dropped */
	uint64_t too_big_udp;	 /* from the wire, larger than the buffers: dropped */
	uint64_t too_big_engine; /* larger than one datagram or its buffer (WG_DROP_TX_TOO_BIG) */
	uint64_t src_stale;	 /* sent from the kernel's choice: their source address was gone */
	uint64_t send_errors;	 /* datagrams the kernel did not take */
	uint64_t send_unreach;	 /* of those, refused for want of a route */
	uint64_t pool_dry_tun;	 /* the TUN reader found its pool empty (1 ms back-off each) */
	uint64_t pool_dry_udp;	 /* the UDP reader did */
	uint64_t gro_msgs;	 /* coalesced datagrams received (UDP GRO), cut into several */
	uint64_t gro_waits;	 /* one waited for the buffers to be cut into (1 ms each) */
	uint64_t gro_lost;	 /* datagrams of them dropped: a pool too small to cut them into */
	uint64_t frags_joined;	 /* IP fragments written to TUN inside their datagram (defrag) */
};

/* Control thread. */
void wgdev_counters_get(struct wgdev *w, struct wgdev_counters *ret);

#endif
