/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_NETMAP_H
#define TRELLIS_PROTO_NETMAP_H

/*
 * The network map as it travels from trellis-control to a node (see
 * docs/control-protocol.md). Plain structs with fixed caps so that a decoder
 * never allocates without bound; arrays of nodes are malloc'd by whoever builds
 * a netmap and freed with netmap_free / netmap_delta_free.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/endpoint.h"

#define NETMAP_KEY_LEN 32
#define NETMAP_NAME_MAX 64      /* DNS label + NUL */
#define NETMAP_USER_MAX 128
#define NETMAP_OS_MAX 32
#define NETMAP_TAG_MAX 64
#define NETMAP_MAX_TAGS 8
#define NETMAP_MAX_ENDPOINTS 16
#define NETMAP_MAX_ADDRESSES 2  /* one IPv4, one IPv6 */
#define NETMAP_MAX_ALLOWED_IPS 16
#define NETMAP_MAX_PEERS (1U << 20)
/* The relay map (docs/control-protocol.md, "Relay map"). */
#define NETMAP_RELAY_REGIONS_MAX 32
#define NETMAP_RELAY_NODES_MAX 4 /* relays per region */
#define NETMAP_RELAY_CODE_MAX 16 /* region code + NUL: "fra", "us-east" */
#define NETMAP_RELAY_HOST_MAX 128
#define NETMAP_RELAY_REGION_ID_MAX 65535
#define NETMAP_STUN_PORT_DEFAULT 3478
/* A pushed machine certificate (base64 of at most MCERT_DER_MAX bytes) + NUL. */
#define NETMAP_MCERT_MAX 2736

struct netmap_prefix {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t len;    /* prefix length */
	uint8_t addr[16];
};

/*
 * One relay server. host "" with no addresses and relay_port 0 stands for the
 * control server the node logs in to (the embedded relay of the default map):
 * the node dials its login URL's host, port and scheme.
 */
struct netmap_relay_node {
	char name[NETMAP_NAME_MAX];
	char host[NETMAP_RELAY_HOST_MAX]; /* DNS name for dialing and TLS; "" = none */
	bool has_ipv4, has_ipv6;	  /* dial these instead of resolving host */
	uint8_t ipv4[4];
	uint8_t ipv6[16];
	uint16_t relay_port; /* 0: 443 with TLS, else 80 (the control server's own port) */
	uint16_t stun_port;  /* 0: no STUN */
	bool tls;
	bool has_key; /* pin the relay's static key */
	uint8_t key[NETMAP_KEY_LEN];
};

struct netmap_relay_region {
	uint32_t id; /* 1..NETMAP_RELAY_REGION_ID_MAX, unique */
	char code[NETMAP_RELAY_CODE_MAX];
	char name[NETMAP_NAME_MAX];
	unsigned n_nodes;
	struct netmap_relay_node nodes[NETMAP_RELAY_NODES_MAX];
};

struct netmap_relay_map {
	unsigned n_regions;
	struct netmap_relay_region regions[NETMAP_RELAY_REGIONS_MAX];
};

/*
 * The packet filter for traffic INTO the node that receives the netmap (design.md section 8),
 * compiled by the server from the tailnet's policy. A packet from a peer that starts a new
 * flow is admitted if some rule matches it: its source address is in one of the rule's srcs,
 * its destination address and port in one of its dsts, its IP protocol in protos. Replies to
 * flows the node started itself are the filter's business, not the rules'.
 *
 * Rules index into three flat arrays, so a filter is four allocations whatever its size and a
 * decoder bounds it with three counts.
 */
#define NETMAP_FILTER_RULES_MAX (1U << 16)
#define NETMAP_FILTER_PREFIXES_MAX (1U << 18) /* srcs, and dsts, over all rules */
#define NETMAP_FILTER_PROTOS_MAX 8

struct netmap_filter_dst {
	struct netmap_prefix prefix;
	uint16_t port_first, port_last; /* 0-65535: any; protocols without ports ignore them */
};

struct netmap_filter_rule {
	uint32_t src_off, n_src;		  /* srcs[src_off .. src_off + n_src), n_src >= 1 */
	uint32_t dst_off, n_dst;		  /* dsts[dst_off .. dst_off + n_dst), n_dst >= 1 */
	unsigned n_protos;			  /* 0: any protocol */
	uint8_t protos[NETMAP_FILTER_PROTOS_MAX]; /* IP protocol numbers, 1..255 */
};

struct netmap_filter {
	unsigned n_rules, n_srcs, n_dsts;
	struct netmap_filter_rule *rules;
	struct netmap_prefix *srcs;
	struct netmap_filter_dst *dsts;
};

/*
 * The other direction of the filter (docs/policy.md, "What this node may open"): what the
 * node that receives the netmap may start on each peer, compiled by the server from the rules
 * whose source is that node. Status output only: the peer's own filter is what enforces.
 * Peers allowed the same items share a set, so "everyone may reach everyone" is one set of
 * one item per protocol whatever the tailnet's size. A set lists its peers by id
 * (peers[peer_off ..]) and its items (ports[port_off ..]), each a protocol and a port range
 * (0-65535 for protocols without ports), sorted and not overlapping. A set may instead take
 * in every peer of the netmap ("peers": "*", all set, no ids): the server's form when the node
 * may open the same items on every peer it sees, so that under an allow-all policy a join or a
 * leave leaves the list byte for byte as it was and no delta carries it. Such a set is the
 * only one, and it never takes in the node itself.
 */
#define NETMAP_REACH_SETS_MAX (1U << 16)
#define NETMAP_REACH_PORTS_MAX (1U << 18)

struct netmap_reach_port {
	uint8_t proto; /* IP protocol number, 1..255 */
	uint16_t first, last;
};

struct netmap_reach_set {
	uint32_t peer_off, n_peers; /* n_peers >= 1; 0 for an all set */
	uint32_t port_off, n_ports; /* n_ports >= 1 */
	bool all;		    /* every peer of the netmap but the node itself */
};

struct netmap_reach {
	unsigned n_sets, n_peers, n_ports;
	struct netmap_reach_set *sets;
	uint64_t *peers;
	struct netmap_reach_port *ports;
};

/*
 * A change of what the node may open, for a delta (docs/control-protocol.md, "Patching
 * may_open"): instead of the whole list again, the peers that left it (removed, ids) and those
 * that came or whose items changed (add: sets as in a list, never an all set). Applied to a
 * list the node holds (never an all set), the peers of removed and of add leave the set they
 * were in, each of add's sets joins the set of equal items or becomes one, and the result is
 * put in the canonical order the server builds its lists in (sets by items, peers by id), so
 * that it equals the server's new list byte for byte. Under a rule that lists peers one by
 * one (group:eng -> tag:server:22 beside other rules), a server that joins costs every
 * subscriber of the class one id instead of the whole list.
 */
struct netmap_reach_patch {
	unsigned n_removed;
	uint64_t *removed;	  /* ascending */
	struct netmap_reach *add; /* never NULL; no all set */
};

/*
 * The tailnet's flow-log setting (docs/audit.md): whether its nodes count their flows and how
 * often they ship a batch. set false: the server did not say (a netmap from a server older than
 * the setting; in a delta, unchanged), and the node keeps what it had (at first: on, 5 s).
 */
#define NETMAP_FLOW_LOG_INTERVAL_MIN_MS 1000U
#define NETMAP_FLOW_LOG_INTERVAL_MAX_MS 3600000U
#define NETMAP_FLOW_LOG_INTERVAL_DEFAULT_MS 5000U
struct netmap_flow_log {
	bool set;
	bool enabled;
	uint32_t interval_ms; /* NETMAP_FLOW_LOG_INTERVAL_MIN_MS .. _MAX_MS, also when off */
};

struct netmap_node {
	uint64_t id;
	char name[NETMAP_NAME_MAX];
	uint8_t node_key[NETMAP_KEY_LEN];
	uint8_t machine_key[NETMAP_KEY_LEN];
	unsigned n_addresses;
	struct netmap_prefix addresses[NETMAP_MAX_ADDRESSES];
	unsigned n_allowed_ips;
	struct netmap_prefix allowed_ips[NETMAP_MAX_ALLOWED_IPS];
	unsigned n_endpoints;
	struct endpoint endpoints[NETMAP_MAX_ENDPOINTS];
	bool online;
	int64_t last_seen;  /* Unix seconds, 0 = never */
	int64_t key_expiry; /* Unix seconds, 0 = does not expire */
	char os[NETMAP_OS_MAX];
	char user[NETMAP_USER_MAX];
	unsigned n_tags;
	char tags[NETMAP_MAX_TAGS][NETMAP_TAG_MAX];
	uint32_t home_region; /* the relay region the node reported as its home; 0 = none */
	/* Its disco key (new at every daemon start; design.md section 2); none: no disco. */
	bool has_disco_key;
	uint8_t disco_key[NETMAP_KEY_LEN];
	/* Its NAT maps per destination (STUN servers saw different ports): a hard NAT. */
	bool mapping_varies;
};

/*
 * Which netmap a node holds, as the server stamped it (docs/control-protocol.md, "Resuming a
 * map stream"): the position in the server's change feed the map includes, and a digest that
 * ties that position to the server and its history. feed 0: not stamped.
 */
#define NETMAP_DIGEST_LEN 32
struct netmap_version {
	uint64_t feed;
	uint8_t digest[NETMAP_DIGEST_LEN];
};

struct netmap {
	uint64_t seq;
	struct netmap_version version;
	char tailnet[NETMAP_NAME_MAX];
	struct netmap_node self;
	unsigned n_peers;
	struct netmap_node *peers; /* malloc'd array */
	struct netmap_relay_map relay_map; /* no regions: no relays */
	struct netmap_filter *filter;	   /* malloc'd; NULL: no policy, every peer may reach us */
	struct netmap_flow_log flow_log;
	struct netmap_reach *reach; /* malloc'd; NULL: the server did not say */
};

struct netmap_endpoint_patch {
	uint64_t id;
	unsigned n_endpoints;
	struct endpoint endpoints[NETMAP_MAX_ENDPOINTS];
};

struct netmap_online_patch {
	uint64_t id;
	bool online;
	int64_t last_seen;
};

struct netmap_delta {
	uint64_t seq;
	struct netmap_version version; /* feed 0: the map's stays as it was */
	bool has_self;
	struct netmap_node self;
	unsigned n_added, n_changed, n_removed, n_endpoints, n_online;
	struct netmap_node *added;   /* new peers */
	struct netmap_node *changed; /* full replacement records (key rotation, rename, ...) */
	uint64_t *removed;           /* peer ids */
	struct netmap_endpoint_patch *endpoints;
	struct netmap_online_patch *online;
	struct netmap_relay_map *relay_map; /* malloc'd; NULL: unchanged */
	struct netmap_filter *filter;	    /* malloc'd; NULL: unchanged */
	struct netmap_flow_log flow_log;    /* set false: unchanged */
	/*
	 * A renewed machine certificate of the receiving node's own, pushed (docs/identity.md,
	 * "Renewed certificates"): base64 DER, malloc'd, at most NETMAP_MCERT_MAX - 1
	 * characters; NULL: none. Outside input: the node checks it as `cert install` does.
	 */
	char *machine_cert;
	struct netmap_reach *reach;	    /* malloc'd; NULL: unchanged */
	/* malloc'd; NULL: none. Never with reach: one or the other says what changed. */
	struct netmap_reach_patch *reach_patch;
};

/* All accept NULL, free the arrays and the struct itself. */
void netmap_free(struct netmap *nm);
void netmap_delta_free(struct netmap_delta *d);
void netmap_filter_free(struct netmap_filter *f);
void netmap_reach_free(struct netmap_reach *r);
/* Family AF_INET or AF_INET6 and a length that fits it. */
bool netmap_prefix_valid(const struct netmap_prefix *p);
/* Set, with an interval in bounds. */
bool netmap_flow_log_valid(const struct netmap_flow_log *fl);
/* A deep copy; NULL when out of memory. */
struct netmap_filter *netmap_filter_dup(const struct netmap_filter *f);
/* Offsets and counts inside the arrays, n_src/n_dst >= 1, ports ordered, protocols 1..255. */
bool netmap_filter_valid(const struct netmap_filter *f);
/* A deep copy; NULL when out of memory. */
struct netmap_reach *netmap_reach_dup(const struct netmap_reach *r);
/*
 * Offsets and counts inside the arrays, counts >= 1, protocols 1..255, a set's items ordered
 * by protocol and port, ranges of one protocol not overlapping; an all set is the only set and
 * lists no ids. A peer listed in two sets is not refused: netmap_reach_find takes the first.
 */
bool netmap_reach_valid(const struct netmap_reach *r);
/* The same sets, peers and items in the same order (both NULL: true). */
bool netmap_reach_equal(const struct netmap_reach *a, const struct netmap_reach *b);
/*
 * The order of one item against another in a reach set: protocol, then first port, then
 * last. The server sorts sets by it (policy_view_reach) and the node rebuilds a patched
 * list in the same order, so both must use this one definition.
 */
static inline int netmap_reach_port_cmp(const struct netmap_reach_port *a,
					const struct netmap_reach_port *b)
{
	if (a->proto != b->proto)
		return a->proto < b->proto ? -1 : 1;
	if (a->first != b->first)
		return a->first < b->first ? -1 : 1;
	return (a->last > b->last) - (a->last < b->last);
}
/*
 * The set that lists peer id, or NULL: the node may open nothing on it. An all set takes in
 * any id: ask only about the netmap's peers, and not about the node itself.
 */
const struct netmap_reach_set *netmap_reach_find(const struct netmap_reach *r, uint64_t id);
void netmap_reach_patch_free(struct netmap_reach_patch *p);
/* A deep copy; NULL when out of memory. */
struct netmap_reach_patch *netmap_reach_patch_dup(const struct netmap_reach_patch *p);
/* Within the caps of a list (ids and add), add valid and without an all set. */
bool netmap_reach_patch_valid(const struct netmap_reach_patch *p);
/*
 * The patch that turns list old into list now (the server's side; both valid, neither with an
 * all set): removed, the ids of old that now does not list; add, the ids of now that old did
 * not list or listed with other items, by their items in now. Costs O(n log n) in the ids and
 * sets of both. 0 with *ret, -EINVAL (an all set, or a list not valid), -ENOMEM.
 */
int netmap_reach_diff(const struct netmap_reach *old, const struct netmap_reach *now,
		      struct netmap_reach_patch **ret);
/*
 * cur with patch p applied (the node's side), a new list in canonical order: sets ordered as
 * the server orders them (by their number of items, then items), peers of a set ascending, a
 * peer listed twice taken with its first set. 0 with *ret, -EINVAL (no cur, cur or p not
 * valid, an all set in either, the result over the caps), -ENOMEM. O(n log n).
 */
int netmap_reach_patch_apply(const struct netmap_reach *cur, const struct netmap_reach_patch *p,
			     struct netmap_reach **ret);
/*
 * Applies a delta to a full netmap (the node keeps a full map and its cache
 * from netmap + deltas). Peers are matched by id; a stamped delta stamps the map.
 * 0, -EINVAL (seq not increasing, or a patch names an unknown id), -ENOMEM.
 */
int netmap_apply_delta(struct netmap *nm, const struct netmap_delta *d);
const struct netmap_node *netmap_peer_find(const struct netmap *nm, uint64_t id);
const struct netmap_relay_region *netmap_relay_region_find(const struct netmap_relay_map *rm,
							   uint32_t id);

/* The tailnet IPv6 prefix and the v4 -> v6 mapping of docs/control-protocol.md. */
#define NETMAP_ULA_PREFIX "fd7e:11e5:7a11::"
void netmap_ipv6_from_ipv4(uint8_t ret_v6[16], const uint8_t v4[4]);
/*
 * True for a single tailnet address: a /32 inside 100.64.0.0/10 or a /128 inside the ULA /48.
 * A node installs nothing else the server sends as an address or allowed IP, so a hostile or
 * broken server cannot make it capture traffic for the rest of the Internet (1.2.3.4/1).
 */
bool netmap_prefix_is_tailnet_host(const struct netmap_prefix *p);

#endif
