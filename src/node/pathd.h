/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_PATHD_H
#define TRELLIS_NODE_PATHD_H

/*
 * Path discovery in trellisd: the disco engine (src/disco/engine.h) on the daemon's
 * loop thread, fed by the magicsock's disco mailbox and its events, driving the
 * magicsock's handles (magicsock_handle_disco). Its datagrams leave through
 * magicsock_send_raw, so disco uses the same sockets and NAT mappings as WireGuard.
 *
 * The disco key comes from the state directory (state.h, path.json), so it outlives a
 * restart and peers keep their path state for us; peers whose netmap record
 * carries a disco key are handed to the engine, the others keep the magicsock's plain
 * rule (direct when a WireGuard handshake over UDP succeeds, else the relay).
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/loop.h"
#include "disco/engine.h"
#include "proto/netmap.h"

struct magicsock;
struct netmap_apply;
struct pathd;

/* Loop thread. disco_priv: our disco private key (NULL: a new one). 0, -ENOMEM, -EIO. */
int pathd_new(struct loop *loop, struct magicsock *ms, const uint8_t *disco_priv,
	      struct pathd **ret);
/* Accepts NULL. No more magicsock events (the disco mailbox: wgdev_disco_listen). */
void pathd_stop(struct pathd *pd);
/*
 * Accepts NULL. After pathd_stop and after the data plane and the relay client are gone
 * (datagrams from its pool may wait in their queues); the magicsock is not touched.
 */
void pathd_free(struct pathd *pd);
void pathd_public_key(const struct pathd *pd, uint8_t ret[NETMAP_KEY_LEN]);
/* The magicsock's disco mailbox has datagrams (wgdev_disco_listen). Any thread. */
void pathd_disco_notify(void *ctx);

/*
 * After every netmap applied: our node key (public) and endpoints, and every peer with
 * a disco key and a handle in `na`. Peers gone since the last call are forgotten.
 */
void pathd_netmap(struct pathd *pd, const struct netmap *nm, const struct netmap_apply *na,
		  const uint8_t node_pub[NETMAP_KEY_LEN]);
/* No netmap any more: forget every peer. */
void pathd_clear(struct pathd *pd);
/*
 * Whether we hold a port mapping (disco_self_port_mapped): at once, not when our next
 * report comes back in the netmap, so no birthday attempt starts or goes on meanwhile.
 */
void pathd_port_mapped(struct pathd *pd, bool mapped);

/* For status: -ENOENT when the peer is not under path discovery. */
int pathd_peer_status(const struct pathd *pd, const struct endpoint *handle,
		      struct disco_peer_status *ret);
void pathd_stats_get(const struct pathd *pd, struct disco_stats *ret);

#define PATHD_PINGS_MAX 16		      /* user pings waiting at once */
#define PATHD_PING_TIMEOUT_NS (2ULL * 1000000000ULL)

/*
 * A user's ping (trellis ping, disco_ping): fn gets the first pong (via an address, or
 * the peer's handle for the relay) or, after PATHD_PING_TIMEOUT_NS, via NULL. 0, -ENOENT
 * (not under path discovery), -EBUSY (PATHD_PINGS_MAX waiting).
 */
typedef void (*pathd_ping_fn)(void *ctx, const struct endpoint *via, uint64_t rtt_ns);
int pathd_ping(struct pathd *pd, const struct endpoint *handle, pathd_ping_fn fn, void *ctx);
/* Forgets the pings of ctx: fn is not called for them. */
void pathd_ping_cancel(struct pathd *pd, void *ctx);

#endif
