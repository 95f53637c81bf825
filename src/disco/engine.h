/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_DISCO_ENGINE_H
#define TRELLIS_DISCO_ENGINE_H

/*
 * Path discovery for every peer, without I/O (design.md section 4): datagrams and the
 * time come in, datagrams, path decisions and the next deadline go out. The node's
 * glue (src/node/pathd.c) feeds it the disco mailbox and relayed disco, and applies its
 * decisions to the magicsock.
 *
 * A peer is its magicsock handle (an endpoint of family ENDPOINT_AF_HANDLE): a
 * datagram sent "to the handle" goes through the peer's relay, one sent to an address
 * goes direct. Per peer:
 *
 *   idle      no traffic for DISCO_IDLE_NS: no timer, no datagram (an idle peer costs
 *             nothing beyond WireGuard's keepalives). The relay carries the first
 *             packets of a flow while probing starts (disco_peer_active).
 *   probing   no trusted direct path: every DISCO_RETRY_NS, a ping to every candidate
 *             and a call-me-maybe (our candidates) through the relay, so the peer pings
 *             us back at the same time and both NATs open for each other.
 *   direct    a candidate answered: trusted for DISCO_TRUST_NS after its last pong,
 *             kept fresh by a ping every DISCO_HEARTBEAT_NS while traffic flows; every
 *             DISCO_UPGRADE_NS all candidates are probed again to find a better one.
 *             When the trust runs out the path goes back to the relay (probing): with
 *             traffic flowing, at once and every DISCO_REPROBE_NS for
 *             DISCO_REPROBE_FOR_NS (an outage of a few seconds, a NAT that rebinds:
 *             back to direct within about a second of the path answering again), then
 *             every DISCO_RETRY_NS.
 *
 * In either state, a candidate never pinged (the netmap brought it: the peer's address
 * changed; or it was learned) is pinged at the next tick, not at the next round: a peer
 * that roams is found as soon as its new address arrives.
 *
 * Hard NAT on both sides (each NAT maps per destination, as each node reported, and
 * neither node holds a port mapping: disco_self_port_mapped): no reported address can
 * answer, so while probing, a bounded birthday attempt
 * (DISCO_BIRTHDAY_PORTS probes, each port of the aligned block around the peer's
 * reflexive port once, in random order, DISCO_BIRTHDAY_BURST every
 * DISCO_BIRTHDAY_GAP_NS) opens as many mappings on our NAT while the peer does the same
 * towards us; a probe of one side that meets a mapping of the other gets through (its
 * ping is answered as usual and the pong to our attempt's tx id makes the path).
 * Attempts back off (DISCO_RETRY_NS doubled per failure, at most DISCO_BIRTHDAY_MAX_NS).
 * With a NAT that picks any port at random this almost never meets; one that keeps a
 * subscriber's ports in a block (a CGNAT port block) often does (docs/architecture.md).
 *
 * The best path is the trusted candidate with the lowest round trip, less a bonus for
 * LAN and IPv6 paths; another replaces it only when clearly better (hysteresis), or when
 * it is of a preferred kind (LAN, then IPv6) and the current one is not clearly better
 * than it: the bonus decides between paths of about the same round trip whichever
 * answered first, and two paths cannot take turns. Round trips are compared with
 * DISCO_RTT_SLACK_NS added, so that scheduling jitter of a millisecond or two on a busy
 * host does not count as a faster path.
 * Pongs count only when their tx id is one we sent to that candidate and they come
 * from the address we pinged, sealed by the peer's disco key: anything else is counted
 * and changes nothing. Pings are answered at most DISCO_PING_RATE per second per
 * source (burst DISCO_PING_BURST).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/endpoint.h"
#include "disco/msg.h"

#define DISCO_NS 1000000000ULL
#define DISCO_HEARTBEAT_NS (3ULL * DISCO_NS)
#define DISCO_TRUST_NS (6500ULL * 1000000ULL)
#define DISCO_UPGRADE_NS (60ULL * DISCO_NS)
#define DISCO_IDLE_NS (45ULL * DISCO_NS)
#define DISCO_RETRY_NS (5ULL * DISCO_NS)
/* After losing a direct path while traffic flows: probes this often, for this long. */
#define DISCO_REPROBE_NS (1ULL * DISCO_NS)
#define DISCO_REPROBE_FOR_NS (10ULL * DISCO_NS)
/* A candidate is not pinged again sooner than this (a ping, or a reply to theirs). */
#define DISCO_PING_MIN_GAP_NS (500ULL * 1000000ULL)
#define DISCO_PING_RATE 10
#define DISCO_PING_BURST 20
/* Candidates per peer: the netmap's and those learned (call-me-maybe, a ping's source). */
#define DISCO_PEER_CANDIDATES (DISCO_CANDIDATES_MAX + 8)
/* Bonus in percent of the round trip: LAN paths first, then IPv6. */
#define DISCO_BONUS_LAN 30
#define DISCO_BONUS_IPV6 10
/* Added to each round trip before paths are compared (engine.h: jitter is not speed). */
#define DISCO_RTT_SLACK_NS (5ULL * 1000000ULL)
/* Hysteresis: a new best path must score below 2/3 of the current one. */
#define DISCO_BETTER_NUM 2
#define DISCO_BETTER_DEN 3
#define DISCO_PEERS_MAX (1u << 20)
/* Birthday probing: ports per attempt (a power of two, the aligned block probed). */
#define DISCO_BIRTHDAY_PORTS 256
#define DISCO_BIRTHDAY_BURST 32
#define DISCO_BIRTHDAY_GAP_NS (50ULL * 1000000ULL)
#define DISCO_BIRTHDAY_MAX_NS (160ULL * DISCO_NS)

struct disco_ops {
	void *ctx;
	/* A datagram for `to`: an address (direct) or a peer's handle (its relay). */
	void (*send)(void *ctx, const struct endpoint *to, const uint8_t *d, size_t len);
	/*
	 * The peer's direct path changed or its trust was extended: `direct` is trusted until
	 * trust_until_ns; NULL: none (the relay). Trust 0: an address the peer was heard from,
	 * not a path yet (inbound datagrams from it are the peer's).
	 */
	void (*path_set)(void *ctx, const struct endpoint *peer, const struct endpoint *direct,
			 uint64_t trust_until_ns);
	/* Optional: a pong for a ping of disco_ping (trellis ping), via an address or the relay. */
	void (*pong)(void *ctx, const struct endpoint *peer, const struct endpoint *via,
		     uint64_t rtt_ns);
	/* Optional: the last time a datagram was sent to the peer (0: never). */
	uint64_t (*last_tx_ns)(void *ctx, const struct endpoint *peer);
	/*
	 * Optional: `addr` is the peer's, proven by an authenticated ping from it or a pong to
	 * our ping there (whichever path either end chose, datagrams from it are the peer's).
	 * Said at every such proof: the glue keeps what it needs.
	 */
	void (*addr_verified)(void *ctx, const struct endpoint *peer, const struct endpoint *addr);
};

enum disco_state {
	DISCO_STATE_IDLE,
	DISCO_STATE_PROBING,
	DISCO_STATE_DIRECT,
};

const char *disco_state_name(enum disco_state s);

struct disco_peer_status {
	enum disco_state state;
	bool has_best;
	struct endpoint best; /* the trusted direct path */
	uint64_t best_rtt_ns;
	uint64_t last_pong_ns; /* any candidate, 0: never */
	unsigned n_candidates;
	uint64_t pings_sent, pongs_rx, pings_rx; /* this peer's */
	bool had_direct;			 /* a direct path worked since the peer was added */
	/* From the last idle -> active to the first trusted path after it (0: none). */
	uint64_t to_direct_ns;
	/* What ops.path_set said last: the direct path (announced) and its trust. */
	bool announced;
	struct endpoint announced_path;
	uint64_t trust_until_ns;
	bool mapping_varies;			  /* the peer's NAT, as disco_peer_mapping_varies said */
	unsigned birthday_attempts;		  /* started, since the peer was added */
	uint64_t birthday_probes, birthday_hits; /* sent; pongs to them */
};

struct disco_stats {
	uint64_t rx_bad;       /* not disco, or does not open under the sender's key */
	uint64_t rx_unknown;   /* a sender key no peer has */
	uint64_t rx_malformed; /* authentic but not understood */
	uint64_t rx_ping, rx_pong, rx_cmm;
	uint64_t rx_pong_spoofed;   /* unknown tx id, or from another address than pinged */
	uint64_t rx_ping_wrong_key; /* a ping naming another node key than the peer's */
	uint64_t rx_ping_limited;   /* over the per-source rate */
	uint64_t tx_ping, tx_pong, tx_cmm;
	uint64_t tx_birthday, birthday_attempts, birthday_hits;
	unsigned peers, active;
};

struct disco;

/* Our disco key (private; the public one is derived). NULL on ENOMEM or a bad key. */
struct disco *disco_new(const struct disco_ops *ops, const uint8_t priv[DISCO_KEY_LEN]);
/* Accepts NULL; wipes the keys. */
void disco_free(struct disco *d);
void disco_public_get(const struct disco *d, uint8_t ret[DISCO_KEY_LEN]);

/* Our node key (named in our pings) and candidates (sent in call-me-maybe). */
void disco_self_set(struct disco *d, const uint8_t node_key[DISCO_KEY_LEN],
		    const struct endpoint *candidates, unsigned n);

/*
 * Adds or updates the peer of `handle`: its disco and node keys and its candidates (from
 * the netmap; non-addresses skipped, at most DISCO_CANDIDATES_MAX). A new disco key (the
 * peer restarted) starts it afresh. 0, -EINVAL (a bad disco key), -ENOMEM, -ENOSPC.
 */
int disco_peer_set(struct disco *d, const struct endpoint *handle,
		   const uint8_t disco_pub[DISCO_KEY_LEN], const uint8_t node_key[DISCO_KEY_LEN],
		   const struct endpoint *candidates, unsigned n, uint64_t now_ns);
/*
 * Whether our NAT, or the peer's (from the netmap), maps per destination (STUN saw
 * different ports): only when both do does probing add birthday attempts. Unknown
 * handles: ignored.
 */
void disco_self_mapping_varies(struct disco *d, bool varies);
void disco_peer_mapping_varies(struct disco *d, const struct endpoint *handle, bool varies);
/*
 * Whether we hold a port mapping (NAT-PMP, PCP, UPnP-IGD): peers reach us at its port
 * whatever our NAT does with other flows, so even with varying mappings we are no hard NAT
 * and start no birthday attempt; one under way stops at the next tick.
 */
void disco_self_port_mapped(struct disco *d, bool mapped);
/* Accepts an unknown handle. */
void disco_peer_remove(struct disco *d, const struct endpoint *handle);
/* Traffic for the peer after a quiet time: start probing now. Unknown handles: ignored. */
void disco_peer_active(struct disco *d, const struct endpoint *handle, uint64_t now_ns);
/* The direct path stopped answering WireGuard: ping it now to know sooner. */
void disco_peer_silent(struct disco *d, const struct endpoint *handle, uint64_t now_ns);
/* 0 or -ENOENT. */
int disco_peer_status_get(const struct disco *d, const struct endpoint *handle, uint64_t now_ns,
			  struct disco_peer_status *ret);

/*
 * A user's ping (trellis ping): one ping on the peer's current path (the best direct
 * one, else through the relay) and, while not direct, to every candidate; answers come
 * through ops.pong. 0 or -ENOENT.
 */
int disco_ping(struct disco *d, const struct endpoint *handle, uint64_t now_ns);

/* A disco datagram from `src`: an address, or a peer's handle (it came through a relay). */
void disco_rx(struct disco *d, const uint8_t *data, size_t len, const struct endpoint *src,
	      uint64_t now_ns);
/* Runs what is due; the next deadline (0: none, every peer is idle). */
uint64_t disco_tick(struct disco *d, uint64_t now_ns);

void disco_stats_get(const struct disco *d, struct disco_stats *ret);

#endif
