/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_RELAYCLIENT_H
#define TRELLIS_NET_RELAYCLIENT_H

/*
 * The node's relay client (docs/relay-protocol.md): the relay path under the
 * magicsock (magicsock.h, "Paths").
 *
 * One connection per region in use: the home region's, always, and one for each
 * region a peer is homed in while packets go there; those close after
 * RELAYCLIENT_IDLE_NS without traffic. Each connection runs on a thread of its own with
 * blocking I/O (dial.h: URL, TLS, HTTP upgrade, then relay_conn's handshake and
 * frames), reconnecting with jittered backoff; a manager thread opens and closes them,
 * and measures the latency to every region by STUN through the magicsock's UDP socket
 * (so the NAT mapping is the one WireGuard uses); the answers also give our reflexive
 * addresses and whether the NAT maps per destination (relayclient_status, "nat"; a change
 * is reported through cfg.changed). The home is the region with the lowest
 * round trip, kept until another is clearly better (hysteresis) or it stops answering;
 * without any answer (UDP blocked) the home stays, or is the map's first region.
 *
 * Packet threads only hand over: the magicsock's relay_send puts framed packets on the
 * region's bounded queue (full: dropped and counted) and wakes its thread. Received
 * packets go from a preallocated pool straight to magicsock_relay_rx on the
 * connection's thread. Nothing per packet allocates.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/endpoint.h"
#include "proto/netmap.h"

struct magicsock;

#define RELAYCLIENT_IDLE_NS (60ULL * 1000000000ULL)
#define RELAYCLIENT_BACKOFF_MIN_NS (1ULL * 1000000000ULL)
#define RELAYCLIENT_BACKOFF_MAX_NS (30ULL * 1000000000ULL)
#define RELAYCLIENT_IO_TIMEOUT_NS (10ULL * 1000000000ULL)
#define RELAYCLIENT_KEEPALIVE_NS (30ULL * 1000000000ULL)
#define RELAYCLIENT_SILENCE_NS (150ULL * 1000000000ULL) /* 2.5 x the relay's 60 s */
#define RELAYCLIENT_QUEUE_MAX 1024 /* packets waiting per connection */
#define RELAYCLIENT_POOL 1024	   /* receive buffers, shared by the connections */
/* A pool that grew gives its pages back after this long without the burst (pkt_trimmer). */
#define RELAYCLIENT_POOL_TRIM_NS (10ULL * 1000000000ULL)
#define RELAYCLIENT_STUN_INTERVAL_NS (20ULL * 1000000000ULL)
#define RELAYCLIENT_STUN_WAIT_NS (2ULL * 1000000000ULL)
/* Hysteresis: another region becomes home when its round trip is below 2/3 of home's. */
#define RELAYCLIENT_HOME_BETTER_NUM 2
#define RELAYCLIENT_HOME_BETTER_DEN 3
#define RELAYCLIENT_HOME_MISSES 2 /* STUN rounds home may miss before it is given up */
#define RELAYCLIENT_ERR_MAX 160

struct relayclient_cfg {
	struct magicsock *ms; /* not owned; the client attaches itself as its relay */
	/* Any thread: the home region or a connection's state changed. May be NULL. */
	void (*changed)(void *ctx);
	void *ctx;
	uint64_t idle_ns; /* non-home connections close after this without traffic; 0: default */
	uint64_t backoff_min_ns; /* the first wait after a failure; 0: RELAYCLIENT_BACKOFF_MIN_NS */
};

enum relayclient_conn_state {
	RELAYCLIENT_IDLE,	/* no connection wanted */
	RELAYCLIENT_CONNECTING, /* dialing, upgrading, handshaking */
	RELAYCLIENT_CONNECTED,
	RELAYCLIENT_BACKOFF, /* waiting to retry; error says why */
};

const char *relayclient_state_name(enum relayclient_conn_state s);

/* How a STUN probe or a connection reaches a relay node (relayclient_node_family). */
enum relayclient_via {
	RELAYCLIENT_VIA_IPV4,  /* the relay's IPv4 address over our own IPv4 route */
	RELAYCLIENT_VIA_IPV6,  /* its IPv6 address, natively */
	RELAYCLIENT_VIA_NAT64, /* its IPv4 address through the NAT64 (the synthesized IPv6 one) */
};

const char *relayclient_via_name(enum relayclient_via v);

/* One STUN probe of the last round that ended: where it went and what came back. */
struct relayclient_stun_info {
	char node[NETMAP_NAME_MAX];
	struct endpoint to; /* as sent: the synthesized IPv6 address through a NAT64 */
	enum relayclient_via via;
	int64_t rtt_us; /* -1: no answer */
};

struct relayclient_region_info {
	uint32_t id;
	char code[NETMAP_RELAY_CODE_MAX];
	enum relayclient_conn_state state;
	bool home;
	int64_t latency_us; /* last STUN round trip; -1: none */
	struct endpoint remote; /* what the connection is connected to; AF_UNSPEC: none */
	unsigned n_stun;
	struct relayclient_stun_info stun[NETMAP_RELAY_NODES_MAX];
	uint64_t tx_packets, rx_packets, connects;
	uint64_t tx_drops; /* the region's send queue was full */
	uint64_t rx_drops; /* no receive buffer (the engine is behind) or larger than one */
	char error[RELAYCLIENT_ERR_MAX];
};

#define RELAYCLIENT_REFLEXIVE_MAX 2 /* one per address family */

/* What the STUN round tells of our UDP and NAT (netcheck; candidates for path discovery). */
struct relayclient_nat {
	bool measured;	     /* a round with at least one STUN server ran */
	bool udp;	     /* some server answered */
	unsigned answers;    /* how many */
	bool mapping_varies; /* two servers saw different addresses of one family: hard NAT */
	unsigned n_reflexive;
	struct endpoint reflexive[RELAYCLIENT_REFLEXIVE_MAX]; /* as the first answer saw us */
};

struct relayclient_status {
	uint32_t home; /* 0: none */
	struct relayclient_nat nat;
	unsigned n_regions;
	struct relayclient_region_info regions[NETMAP_RELAY_REGIONS_MAX];
};

struct relayclient;

/*
 * The home after a round of STUN (the policy, without I/O): home (0: none yet) with
 * home_us (-1: no answer this round) and the rounds it missed in a row; the fastest
 * region that answered (best, 0: none) with best_us; first, the map's first region.
 * No home: the fastest, else the first. A home is kept until another answers in less
 * than RELAYCLIENT_HOME_BETTER_NUM/DEN of its time or it missed RELAYCLIENT_HOME_MISSES
 * rounds while another answered.
 */
uint32_t relayclient_home_pick(uint32_t home, int64_t home_us, unsigned home_misses,
			       uint32_t best, int64_t best_us, uint32_t first);

/*
 * Whether a region's connection is wanted at now (the policy, without I/O): with a key,
 * the home region's always, another's while packets are queued for it or for idle_ns
 * after its last use (used_ns, 0: never; queued packets count as a use at now_ns).
 * *ret_due_ns is when that changes by itself: the moment a connection wanted for its
 * traffic becomes idle; TIME_NEVER otherwise (a new key, a new home or packets queued
 * for a stopped connection wake the manager).
 */
bool relayclient_conn_wanted(bool has_key, bool home, bool queued, uint64_t used_ns,
			     uint64_t idle_ns, uint64_t now_ns, uint64_t *ret_due_ns);
/*
 * Which of a relay node's addresses STUN and the connection use (the policy, without I/O):
 * its IPv6 address when it has one and IPv4 has no route here (an IPv6-only link: native
 * IPv6 rather than a NAT64's translation, which would measure the NAT64's mapping and the
 * latency through it), else its IPv4 address (reached through the NAT64 when there is
 * one and no route), else its IPv6 address. AF_INET or AF_INET6; AF_UNSPEC when the
 * node names no address (a host name, or the control server's: resolved instead).
 */
int relayclient_node_family(const struct netmap_relay_node *n, bool ipv4_routed);

/*
 * When the manager must look again if nothing wakes it: the end of a running STUN round
 * (stun_deadline_ns, 0: none running), else the next round while the map has relays
 * (next_stun_ns), and the earliest of idle_due_ns (relayclient_conn_wanted) and
 * trim_due_ns (pkt_trimmer_run). TIME_NEVER: only a wakeup. The keepalive, silence and
 * reconnect timers are each connection thread's own, not the manager's.
 */
uint64_t relayclient_mgr_due(uint64_t stun_deadline_ns, uint64_t next_stun_ns, bool has_relays,
			     uint64_t idle_due_ns, uint64_t trim_due_ns);

/* Starts the manager thread; no connection until a map and a key are set. 0 or -errno. */
int relayclient_new(const struct relayclient_cfg *cfg, struct relayclient **ret);
/*
 * Detaches from the magicsock, stops and joins every thread: nothing more is sent or
 * received. Idempotent; accepts NULL.
 */
void relayclient_stop(struct relayclient *rc);
/*
 * Accepts NULL; stops first if need be. Received buffers live in the client's pool: the
 * engine must have returned every one (stop, then let the data plane drain, then free).
 */
void relayclient_free(struct relayclient *rc);

/*
 * The relay map (copied), the URL of the login server (for relays that stand for the
 * control server; NULL: none) and our node key (private; a new one reconnects every
 * connection). An empty map closes everything. Any thread.
 */
void relayclient_set_map(struct relayclient *rc, const struct netmap_relay_map *rm,
			 const char *login_server);
void relayclient_set_key(struct relayclient *rc, const uint8_t node_priv[NETMAP_KEY_LEN]);

/*
 * The relays may be reachable again (the control server, which may embed one, answered
 * after an outage; a link or an address changed): every connection waiting out its
 * backoff dials now, and one that is dialling dials again at once if that try fails.
 * Connected ones are left alone. Any thread.
 */
void relayclient_retry_now(struct relayclient *rc);

/* The magicsock's STUN mailbox has datagrams (its box_notify). Any thread. */
void relayclient_stun_notify(struct relayclient *rc);
/*
 * The network changed (a link, an address, a route): the next STUN round now (after one
 * running ends), not at the interval. Any thread.
 */
void relayclient_stun_soon(struct relayclient *rc);

/*
 * The home region of the last run (0: none), before the first relayclient_set_map: its
 * connection opens as soon as the map names it, and it stays home unless a STUN round
 * finds another clearly better (the usual hysteresis). A map without it drops it.
 */
void relayclient_home_hint(struct relayclient *rc, uint32_t region);
uint32_t relayclient_home(struct relayclient *rc);
void relayclient_status_get(struct relayclient *rc, struct relayclient_status *ret);

#endif
