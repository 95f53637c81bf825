/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_MAGICSOCK_H
#define TRELLIS_NET_MAGICSOCK_H

/*
 * The one owner of the node's UDP traffic, after Tailscale's magicsock, as a state
 * machine without I/O: src/net/udpconn.h gives it sockets and a reader thread, unit
 * tests a fake wire. Every datagram in and out of the UDP socket passes here.
 *
 * Receive (magicsock_rx, the reader thread, one batch at a time):
 *
 *   datagrams --demux.h--> WireGuard  source mapped to a handle (below) -> ops.wg_rx,
 *                                     one call per batch, in arrival order
 *                          STUN       STUN mailbox  } bounded, one lock per batch;
 *                          disco      disco mailbox } full: dropped and counted
 *                          junk       freed and counted
 *
 * Send (any thread, batches):
 *
 *   magicsock_send      the engine's datagrams: a handle becomes its peer's current
 *                       path; a handle without a path is dropped and counted
 *   magicsock_send_raw  STUN and disco to an address, out of the same sockets, so the
 *                       NAT mapping STUN measures is the one WireGuard uses; disco to a
 *                       handle goes through its relay
 *
 * Handles. The control plane gives each peer a handle (an endpoint of family
 * ENDPOINT_AF_HANDLE, base/endpoint.h) and sets it as the peer's WireGuard endpoint;
 * the engine stores and compares it like an address and never sees it change. Here it
 * maps to the peer's current path: today the direct ip:port the netmap reports, later
 * a relay or another candidate chosen by path discovery. Inbound, a source address
 * that is a handle's current path is reported to the engine as that handle, so moving
 * a peer between paths does not make the engine's roaming flap. Any other source is
 * reported as its address, so WireGuard roaming works as before: the engine then sends
 * to that address until a packet comes from a known path again or the control plane
 * sets the handle back. Plain WireGuard mode (`trellisd --wg`) makes no handles: every
 * endpoint is its own address (identity), and nothing is mapped.
 *
 * Except under path discovery (below), which must govern every datagram to its peers:
 *
 *   - aliases: every address path discovery has verified as the peer's (an authenticated
 *     ping came from it, or it answered ours; magicsock_handle_alias_add) maps inbound
 *     to the handle too, as the relay does by key. The two ends may choose different
 *     paths for a while (one IPv6, the other IPv4): the datagrams that arrive on the
 *     other one are still the peer's handle's. An alias is not the path: what arrives
 *     from it says nothing about the path we send on. A path takes precedence over an
 *     alias of another handle; a handle keeps at most MAGICSOCK_ALIASES, the one
 *     verified least recently giving way.
 *   - kept: the engine never roams such a peer away from its handle
 *     (magicsock_handle_kept, the engine's endpoint_kept), whatever source an
 *     authenticated datagram comes from: a source not verified yet (a NAT that rebound)
 *     is found by path discovery, which the relay covers for meanwhile.
 *
 * Paths. A handle has up to two: direct (the address above) and relay (the peer's node
 * key and home region; region 0 means "ours", the best guess for a peer that reported
 * none). The rule until path discovery arrives (issue 10):
 *
 *   - a direct path is confirmed when a WireGuard datagram arrives from it, and stays
 *     so until we have sent on it for MAGICSOCK_DIRECT_UNANSWERED_NS without hearing
 *     anything back (a handshake that failed, a path that broke);
 *   - confirmed direct, or no relay (none attached, or our home relay not connected):
 *     direct. Otherwise the relay, and while a direct
 *     address is known a copy of every handshake initiation and of one datagram per
 *     MAGICSOCK_PROBE_INTERVAL_NS also goes direct (a probe): once the peer answers
 *     directly, the path is confirmed. Duplicates are harmless to WireGuard (the
 *     replay window drops the second one).
 *
 * So a pair that can talk UDP ends up direct within a round trip or two of its first
 * handshake, and one that cannot (UDP blocked, NATs on both sides) stays relayed. Relay
 * datagrams leave framed (send-packet header in the buffer's headroom, no copy) through
 * the relay_send function attached with magicsock_relay_attach, grouped by region, on
 * the sending thread: that function only queues. Relayed datagrams arrive through
 * magicsock_relay_rx with their sender's key, which maps to its handle (never an
 * address: a relay is not a direct path).
 *
 * One address maps inbound to at most one handle, the one that claimed it last (two
 * peers behind one address can only be told apart by their keys, which is the engine's
 * job). A handle id carries a slot and a generation, so a freed handle never aliases a
 * newer one.
 *
 * Threads: receive runs on one reader thread; send, the handle calls and the mailbox
 * takes on any thread. The handle table is under an rwlock taken once per batch and
 * only when there is something to map (no handles: never). Counters are atomics added
 * once per batch. Nothing here allocates per packet.
 *
 * Source addresses. A received datagram's endpoint carries the local address it arrived
 * at (ep.src, IP_PKTINFO); mapping its source to a handle keeps it, and so does resolving
 * a handle to its path on send: the engine learns the source with the peer's endpoint
 * (roaming) and its replies leave from the address the peer sent to.
 */

#include <stdint.h>

#include "base/endpoint.h"
#include "base/pkt.h"

#define MAGICSOCK_KEY_LEN 32
#define MAGICSOCK_DIRECT_UNANSWERED_NS (15ULL * 1000000000ULL) /* keepalive 10 s + 5 s */
#define MAGICSOCK_PROBE_INTERVAL_NS (1ULL * 1000000000ULL)
/* Path discovery: no send for this long makes the next one an "active" event (disco's idle). */
#define MAGICSOCK_IDLE_NS (45ULL * 1000000000ULL)
/* ... and a trusted direct path unanswered this long is "silent" (copies go to the relay). */
#define MAGICSOCK_SILENT_NS (500ULL * 1000000ULL)
/* ... and a direct path whose trust ran out still gets copies this long (stale). */
#define MAGICSOCK_STALE_NS (60ULL * 1000000000ULL)
/* The last-send time is kept to this grain (fewer stores on the data path). */
#define MAGICSOCK_TX_GRAIN_NS (50ULL * 1000000ULL)

/* Verified addresses a handle keeps besides its path ("Aliases"). */
#define MAGICSOCK_ALIASES 8

/* The most datagrams one mapping step handles at once (the reader's batch). */
#define MAGICSOCK_BATCH 64
/* Handles are capped (each peer of the netmap has one). */
#define MAGICSOCK_HANDLES_MAX (1u << 20)

enum magicsock_box { MAGICSOCK_BOX_STUN, MAGICSOCK_BOX_DISCO, MAGICSOCK_BOX_MAX };

struct magicsock_ops {
	void *ctx;
	/*
	 * WireGuard datagrams for the engine, pkt->ep the source (a handle or an address).
	 * Ownership passes. Called on the receiving thread, once per batch.
	 */
	void (*wg_rx)(void *ctx, struct pkt **pkts, unsigned n, uint64_t now_ns);
	/* Datagrams for the wire, pkt->ep an address. Ownership passes. Any thread. */
	void (*wire_send)(void *ctx, struct pkt **pkts, unsigned n);
	/*
	 * Optional: mailbox `box` went from empty to non-empty (any thread: wake the owner,
	 * who takes until it is empty; see pktbox.h).
	 */
	void (*box_notify)(void *ctx, enum magicsock_box box);
	/*
	 * Optional: the kernel refused `src` as a source address (it left the host); the
	 * datagrams went from its choice. Forget it wherever it is cached (the engine's
	 * peer endpoints). Any sending thread, no lock of ours held.
	 */
	void (*src_stale)(void *ctx, const struct endpoint_src *src);
	/* Capacity of each mailbox; 0 = nobody reads it: every datagram counted as dropped. */
	unsigned box_cap[MAGICSOCK_BOX_MAX];
	/* Optional: the monotonic clock of the path rule (tests); NULL: time_now_ns. */
	uint64_t (*now_ns)(void *ctx);
};

struct magicsock_stats {
	uint64_t rx_wg, rx_stun, rx_disco;     /* datagrams demultiplexed to each */
	uint64_t rx_junk;		       /* none of them: dropped */
	uint64_t box_drops[MAGICSOCK_BOX_MAX]; /* mailbox full or unread: dropped */
	uint64_t tx_no_path;		       /* to a handle without a path: dropped */
	uint64_t tx_raw;		       /* raw datagrams handed to the wire */
	uint64_t tx_raw_bad;		       /* raw datagrams to no address: dropped */
	uint64_t tx_relay;		       /* handed to the relay */
	uint64_t tx_probe;		       /* direct copies while relayed */
	uint64_t rx_relay;		       /* from the relay, sender known */
	uint64_t rx_relay_unknown;	       /* relayed from a key no handle has: dropped */
	uint64_t tx_silent_copy;	       /* relay copies while the direct path is silent */
	uint64_t tx_stale_copy;		       /* direct copies while the path is stale */
	unsigned handles;
	unsigned aliases; /* verified addresses besides the paths (magicsock_handle_alias_add) */
};

/*
 * Takes n datagrams framed as send-packet (data starts at the frame header) for the
 * relay of `region`; ownership passes. Called on the sending thread with the magicsock's
 * read lock held: queue and return, never call back into the magicsock.
 */
typedef void (*magicsock_relay_send_fn)(void *ctx, uint32_t region, struct pkt **pkts, unsigned n);

enum magicsock_path_kind { MAGICSOCK_PATH_NONE, MAGICSOCK_PATH_DIRECT, MAGICSOCK_PATH_RELAY };

struct magicsock_path {
	enum magicsock_path_kind kind; /* what the next datagram takes */
	struct endpoint addr;	       /* the direct address, if any (AF_UNSPEC: none) */
	bool direct_confirmed;
	uint32_t region; /* the relay region, if any (0: none) */
};

struct magicsock;

/* NULL on ENOMEM. */
struct magicsock *magicsock_new(const struct magicsock_ops *ops);
/* Accepts NULL. Frees what the mailboxes hold; nothing may call in any more. */
void magicsock_free(struct magicsock *ms);

/* Datagrams from the wire, pkt->ep = source address. Takes ownership of all n. */
void magicsock_rx(struct magicsock *ms, struct pkt **pkts, unsigned n, uint64_t now_ns);
/* The engine's datagrams (its udp_send). Takes ownership of all n; may reorder pkts. */
void magicsock_send(struct magicsock *ms, struct pkt **pkts, unsigned n);
/*
 * STUN or disco datagrams to pkt->ep: an address, or a handle (through its relay; none:
 * dropped and counted). Takes ownership.
 */
void magicsock_send_raw(struct magicsock *ms, struct pkt **pkts, unsigned n);
/* The wire's sender: `src` stopped working as a source address (ops.src_stale). */
void magicsock_src_stale(struct magicsock *ms, const struct endpoint_src *src);
/* Up to n datagrams from a mailbox, oldest first (pkt->ep = source address). */
unsigned magicsock_box_take(struct magicsock *ms, enum magicsock_box box, struct pkt **ret,
			    unsigned n);

/* A new handle without a path. 0, -ENOMEM or -ENOSPC (MAGICSOCK_HANDLES_MAX). */
int magicsock_handle_new(struct magicsock *ms, struct endpoint *ret);
/* Accepts a handle already freed or none. Packets still sent to it are dropped. */
void magicsock_handle_free(struct magicsock *ms, const struct endpoint *handle);
/*
 * The handle's current path: an address, or NULL / AF_UNSPEC for none. 0, -ENOENT
 * (not a live handle) or -EINVAL (path is not an address).
 */
int magicsock_handle_set_path(struct magicsock *ms, const struct endpoint *handle,
			      const struct endpoint *path);
/*
 * The handle's relay path: the peer's node key (NULL: none) and its home region (0: the
 * region set with magicsock_relay_home_set). 0 or -ENOENT.
 */
int magicsock_handle_set_relay(struct magicsock *ms, const struct endpoint *handle,
			       const uint8_t *key, uint32_t region);
/* The path the handle's next datagram takes, for status. 0 or -ENOENT. */
int magicsock_handle_path(struct magicsock *ms, const struct endpoint *handle,
			  struct magicsock_path *ret);
/*
 * Attaches the relay (fn NULL: detaches). Once it returns, no call of the previous fn
 * is running or will run.
 */
void magicsock_relay_attach(struct magicsock *ms, magicsock_relay_send_fn fn, void *ctx);
/* Our home region: where peers without a home of their own are sought. Any thread. */
void magicsock_relay_home_set(struct magicsock *ms, uint32_t region);
/*
 * Whether our home relay is connected. While it is not, no path is a relay path: every
 * handle with a direct address uses it, confirmed or not (a node whose relay is down
 * or that has none behaves as before relays). Any thread.
 */
void magicsock_relay_ready(struct magicsock *ms, bool ready);
/*
 * Datagrams that came through a relay; keys[i] is the sender of pkts[i]. Takes
 * ownership. Datagrams from keys no handle has are dropped and counted. Any one thread
 * at a time per relay connection; the engine sees them as from the sender's handle.
 */
void magicsock_relay_rx(struct magicsock *ms, struct pkt **pkts,
			const uint8_t (*keys)[MAGICSOCK_KEY_LEN], unsigned n, uint64_t now_ns);

/*
 * The address ep stands for now: itself if it is an address, its path if it is a
 * handle. 0, or -ENOENT (a handle without a path, a freed handle, none). For status
 * and `wg show`, which show addresses.
 */
int magicsock_resolve(struct magicsock *ms, const struct endpoint *ep, struct endpoint *ret);

void magicsock_stats_get(struct magicsock *ms, struct magicsock_stats *ret);

/*
 * Path discovery (src/disco/engine.h, driven by the node). A handle it has taken over
 * (magicsock_handle_disco) follows its rule instead of the one of "Paths" above:
 *
 *   - direct while path discovery trusts the path (until trust_until_ns), or when no
 *     relay is available; otherwise the relay, and no probe copies (disco probes);
 *   - a trusted direct path unanswered (no WireGuard datagram from it, no pong) for
 *     MAGICSOCK_SILENT_NS is "silent": every datagram also goes through the relay (the
 *     receiver's replay window drops the second copy), so traffic goes on at once while
 *     path discovery checks the path, and an event tells it to;
 *   - the first send after MAGICSOCK_IDLE_NS without any is an "active" event: path
 *     discovery starts probing while the relay carries the first packets.
 *   - a direct path whose trust ran out (no pong in time: the peer went quiet, or the
 *     path died) is "stale" for MAGICSOCK_STALE_NS: while the relay carries the traffic,
 *     every datagram also goes to it (the replay window drops the second copy), so
 *     traffic that resumes after a pause goes on directly at once if the path still
 *     works, while path discovery confirms it; once a copy goes MAGICSOCK_SILENT_NS
 *     unanswered the path is taken for dead and the copies stop.
 *
 * Events are flags per handle; the listener is called (on the sending thread, under the
 * read lock: only wake someone) when one is raised that was not pending, and takes them
 * with magicsock_events_take.
 */
enum magicsock_event_kind { MAGICSOCK_EVENT_ACTIVE, MAGICSOCK_EVENT_SILENT, MAGICSOCK_EVENT_MAX };

struct magicsock_event {
	struct endpoint handle;
	enum magicsock_event_kind kind;
};

/*
 * The handle's direct path as path discovery chose it (NULL: none; the relay, and the
 * last address stays for inbound mapping), trusted until trust_until_ns (a pong: the path
 * answers). 0, -ENOENT or -EINVAL (direct is not an address).
 */
int magicsock_handle_disco(struct magicsock *ms, const struct endpoint *handle,
			   const struct endpoint *direct, uint64_t trust_until_ns);
/*
 * Path discovery gives the handle up (the peer left it: its disco key is gone from the
 * netmap): the rule of "Paths" above applies again, from its current address, unconfirmed;
 * its aliases, trust and pending events go, and it is no longer kept (the engine roams it
 * again). 0 or -ENOENT.
 */
int magicsock_handle_release(struct magicsock *ms, const struct endpoint *handle);
/*
 * Path discovery verified `addr` as the handle's peer's (an authenticated ping from it, a
 * pong): datagrams from it are the handle's from now (see "Aliases" above). Cheap when it
 * is known already (the read lock). 0, -ENOENT, -EINVAL (not an address) or -ENOMEM.
 */
int magicsock_handle_alias_add(struct magicsock *ms, const struct endpoint *handle,
			       const struct endpoint *addr);
/*
 * Whether the engine keeps the handle as its peer's endpoint whatever source the peer's
 * datagrams come from: path discovery has taken it over. Any thread (the engine asks under
 * its own lock; this takes only the read lock).
 */
bool magicsock_handle_kept(struct magicsock *ms, const struct endpoint *handle);
/* The handle's last send (to MAGICSOCK_TX_GRAIN_NS) under path discovery; 0: none. */
uint64_t magicsock_handle_last_tx(struct magicsock *ms, const struct endpoint *handle);
/* fn NULL: none. Once it returns, the previous fn is not running and will not run. */
void magicsock_events_listen(struct magicsock *ms, void (*fn)(void *ctx), void *ctx);
/* Up to n events (n >= 2), each handle's at most once per take. */
unsigned magicsock_events_take(struct magicsock *ms, struct magicsock_event *ret, unsigned n);

#endif
