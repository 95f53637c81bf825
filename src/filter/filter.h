/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_FILTER_FILTER_H
#define TRELLIS_FILTER_FILTER_H

/*
 * The node's stateful packet filter for traffic INTO the node (design.md section 8, issue 12),
 * without I/O: it never reads the clock or touches a socket (times come in as now_ns).
 *
 * Two parts:
 *   rules      a struct netmap_filter compiled into a lookup (filter_rules_compile): per
 *              address family and IP protocol, the destination ports cut into disjoint
 *              segments, and per segment and destination prefix the union of the sources
 *              of every rule covering it as sorted, merged address ranges. A new flow costs
 *              two binary searches, whatever the number of rules.
 *   conntrack  flows keyed by 5-tuple (in the node's orientation: local, remote), sharded
 *              by hash with one lock per shard (a batch takes a shard's lock once per 64
 *              packets), one cache line a flow, preallocated, the oldest evicted when a
 *              shard is full. Packets the node sends (filter_tx) open and refresh flows;
 *              packets a rule admits open one too, so later packets skip the rules.
 *
 * Verdict for a packet from a peer (filter_rx_batch), after decryption, before the TUN write:
 *   - no policy (filter_rules_set with NULL): everything passes, nothing is tracked;
 *   - a packet of a known flow passes (and refreshes it): replies to flows the node
 *     started, later packets of flows a rule admitted;
 *   - an ICMP/ICMPv6 error passes if the packet it quotes belongs to a known flow; an
 *     echo reply passes if it answers our echo request (same identifier);
 *   - otherwise a rule must admit it (and then a flow is opened).
 * Non-first fragments carry no ports: they pass. The kernel reassembles a datagram only
 * with its first fragment, which is judged with its ports like any packet, and Linux
 * discards overlapping fragments (RFC 5722; IPv4 since 4.19), so a later fragment cannot
 * rewrite the ports of an admitted one. First fragments too short to hold the transport
 * header (RFC 1858's tiny fragments) and IPv4 fragments at offset 8 bytes are dropped.
 *
 * A filter change (filter_rules_set): flows the node started stay open; flows a rule
 * admitted are judged again by the new rules at their next packet and, if no rule admits
 * them any more, closed for good (the entry stays as a tombstone, so the node's own
 * replies do not reopen it).
 *
 * Timeouts (Linux conntrack's defaults, simplified): TCP seen one way 120 s, both ways
 * 5 days, after a FIN 120 s, after a RST 10 s; UDP one way 30 s, both ways 120 s; ICMP
 * 30 s; other protocols 600 s.
 *
 * Threads: filter_rx_batch and filter_tx_batch run on any number of data-path threads at
 * once; filter_rules_set on one thread (the daemon's loop). Rules are read under an
 * epoch guard (two atomic operations per batch, no lock): filter_rules_set swaps the
 * pointer and waits for the batches that may still read the old rules before freeing
 * them. Nothing here allocates per packet.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct netmap_filter;
struct pkt;

enum filter_drop {
	FILTER_DROP_NO_RULE,	/* a new flow no rule admits */
	FILTER_DROP_REVOKED,	/* a flow a rule admitted that the current rules do not */
	FILTER_DROP_BAD_PACKET, /* truncated or malformed IP, extension or transport header */
	FILTER_DROP_FRAGMENT,	/* a first fragment without its transport header (RFC 1858) */
	FILTER_DROP_ICMP_ERROR, /* an ICMP error quoting no known flow */
	FILTER_DROP__MAX
};

/* "no_rule", ... (status and metrics). */
const char *filter_drop_name(enum filter_drop d);

#define FILTER_CT_MAX_DEFAULT 65536
#define FILTER_CT_SHARDS 16

/* Timeouts, nanoseconds. */
#define FILTER_TCP_ONEWAY_NS (120ULL * 1000000000ULL)
#define FILTER_TCP_ESTABLISHED_NS (5ULL * 86400ULL * 1000000000ULL)
#define FILTER_TCP_FIN_NS (120ULL * 1000000000ULL)
#define FILTER_TCP_RST_NS (10ULL * 1000000000ULL)
#define FILTER_UDP_ONEWAY_NS (30ULL * 1000000000ULL)
#define FILTER_UDP_BOTH_NS (120ULL * 1000000000ULL)
#define FILTER_ICMP_NS (30ULL * 1000000000ULL)
#define FILTER_OTHER_NS (600ULL * 1000000000ULL)

/* Compiled rules. */
struct filter_rules;

/*
 * Compiles a netmap's filter. -EINVAL (netmap_filter_valid fails), -E2BIG (the compiled form
 * would exceed FILTER_COMPILED_MAX ranges), -ENOMEM.
 */
#define FILTER_COMPILED_MAX (1U << 22)
int filter_rules_compile(const struct netmap_filter *nf, struct filter_rules **ret);
/* Accepts NULL. */
void filter_rules_free(struct filter_rules *r);
/* Would a rule admit a new flow: family AF_INET/AF_INET6, addresses of 4 or 16 bytes. */
bool filter_rules_match(const struct filter_rules *r, int family, uint8_t proto, const uint8_t *src,
			const uint8_t *dst, uint16_t dport);
unsigned filter_rules_count(const struct filter_rules *r);
/* TCP, UDP, DCCP, SCTP, UDP-Lite: the protocols whose rules' port ranges apply. */
bool filter_proto_has_ports(uint8_t proto);

struct filter;

struct filter_stats {
	bool active; /* a policy is set */
	uint64_t drops[FILTER_DROP__MAX];
	uint64_t fragments;  /* non-first fragments passed */
	unsigned ct_entries; /* flows in the table (some may have timed out) */
	unsigned ct_max;
	uint64_t ct_evicted;	  /* flows evicted, the oldest of a full shard */
	uint64_t rules_gen;	  /* filter_rules_set calls */
	unsigned reject_rate;	  /* replies to refused packets a second at most; 0: none */
	uint64_t rejects_sent;	  /* replies built (filter_reject) */
	uint64_t rejects_limited; /* replies the rate did not allow */
};

/*
 * ct_max flows at most (0: FILTER_CT_MAX_DEFAULT; rounded up to a multiple of the shards),
 * preallocated. seed keys the flow hash (remote parties choose the tuples). No policy at
 * first. 0, -ENOMEM.
 */
int filter_new(unsigned ct_max, uint64_t seed, struct filter **ret);
/* Accepts NULL. No batch may be running. */
void filter_free(struct filter *f);
/*
 * Installs rules (ownership passes; NULL: no policy, everything passes) and frees the
 * previous rules once no batch reads them.
 */
void filter_rules_set(struct filter *f, struct filter_rules *r);
/* Installs rules that admit no new flow (fail closed; allocates nothing). */
void filter_deny_all(struct filter *f);
/* Is a policy set (any thread; a relaxed read: the cost of no policy on the data path). */
bool filter_active(const struct filter *f);
/*
 * Judges a batch of decrypted packets from peers: those that pass stay at the front in
 * their order, the dropped ones (counted) move behind them; returns how many pass.
 */
unsigned filter_rx_batch(struct filter *f, struct pkt **pkts, unsigned n, uint64_t now_ns);
/* Notes a batch of packets the node sends (TUN read path): opens and refreshes flows. */
void filter_tx_batch(struct filter *f, struct pkt *const *pkts, unsigned n, uint64_t now_ns);
/* The same for one packet in a plain buffer (tests, fuzzing). true: it passes. */
bool filter_rx(struct filter *f, const uint8_t *pkt, size_t len, uint64_t now_ns);
void filter_tx(struct filter *f, const uint8_t *pkt, size_t len, uint64_t now_ns);
void filter_stats_get(struct filter *f, struct filter_stats *ret);

/*
 * Replies to refused packets (off by default; trellisd --filter-reject): a TCP segment gets
 * a RST, anything else an ICMP destination unreachable, "communication administratively
 * prohibited" (type 3 code 13; ICMPv6 type 1 code 1) that quotes it. Nothing answers an
 * ICMP error, a RST, a fragment, or a packet to or from a multicast, broadcast or
 * unspecified address (reject.c has the RFCs).
 *
 * filter_reject_build writes the reply for the refused packet pkt into out (cap bytes, not
 * overlapping pkt; FILTER_REJECT_MAX is always enough): addressed back to its sender, ready
 * for the tunnel. Returns its length, or 0 when nothing is to be sent. No I/O, no state.
 */
#define FILTER_REJECT_MAX 1280
size_t filter_reject_build(const uint8_t *pkt, size_t len, uint8_t *out, size_t cap);
/* Replies at most per_sec a second (0: none, the default). Any thread. */
#define FILTER_REJECT_RATE_DEFAULT 100
void filter_reject_set(struct filter *f, unsigned per_sec);
bool filter_reject_on(const struct filter *f);
/*
 * The reply to a packet filter_rx_batch dropped (any thread), within the rate:
 * filter_reject_build's length, or 0 (none, or the rate is spent: counted).
 */
size_t filter_reject(struct filter *f, const uint8_t *pkt, size_t len, uint8_t *out, size_t cap,
		     uint64_t now_ns);

#endif
