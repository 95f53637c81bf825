/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_POLICY_POLICY_H
#define TRELLIS_POLICY_POLICY_H

/*
 * A tailnet's access policy (docs/policy.md): parsed from HuJSON, validated in full (every
 * error names its line and column), its tests run, then compiled over the tailnet's nodes
 * into (a) which peers each node may see and (b) each node's inbound packet filter, the
 * struct netmap_filter of the netmap. No I/O.
 *
 * The semantics in one sentence: traffic from node A to node B on port P with protocol X is
 * allowed if some rule has A in its src, B in one of its dst entries whose ports hold P, and
 * X in its protocols; A sees B (gets B's key) if traffic is allowed A->B or B->A on any port.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/netmap.h"

#define POLICY_ERR_MAX 1024
#define POLICY_RULES_MAX 65536

struct policy;

/* A node as the policy sees it. user "" = none (a tagged node). */
struct policy_node {
	uint64_t id;
	char name[NETMAP_NAME_MAX];
	char user[NETMAP_USER_MAX];
	unsigned n_tags;
	char tags[NETMAP_MAX_TAGS][NETMAP_TAG_MAX];
	unsigned n_addrs;
	struct netmap_prefix addrs[NETMAP_MAX_ADDRESSES];
};

/*
 * Parses, validates and runs the policy's tests. 0 with *ret; -EINVAL with the first error,
 * "LINE:COL: what", in err (POLICY_ERR_MAX bytes); -E2BIG; -ENOMEM.
 */
int policy_parse(const char *text, size_t len, struct policy **ret, char *err);
void policy_free(struct policy *p);
size_t policy_rule_count(const struct policy *p);

/*
 * Whether traffic from a to b on port/proto is allowed: the index of the first rule that
 * allows it, or -1 with why not in why (POLICY_ERR_MAX bytes; may be NULL). port -1: any
 * port; proto 0: any of the rule's protocols. On success why says which rule.
 */
int policy_explain(const struct policy *p, const struct policy_node *a, const struct policy_node *b,
		   int port, unsigned proto, char *why);
/* One line about rule i: "acls[3] (line 12): group:eng -> tag:server:22 tcp". */
void policy_rule_describe(const struct policy *p, size_t i, char *buf, size_t len);
/*
 * What a may reach on b, as "PORTS/PROTO" items of the rules that allow it, comma separated
 * ("22/tcp,443/tcp"), into buf; 0 when nothing is allowed, else the number of rules.
 */
int policy_reach(const struct policy *p, const struct policy_node *a, const struct policy_node *b,
		 char *buf, size_t len);

/*
 * A node that has just the identity s names, as the policy's tests see one: a user
 * ("alice@example.com", "default@"), a tag, a host or a single address. 0, -EINVAL (err).
 */
int policy_ident(const struct policy *p, const char *s, struct policy_node *ret, char *err);

/* IP protocol number of a name ("tcp", "ipv6-icmp") or a number 1-255; -EINVAL. */
int policy_proto_parse(const char *s);

/*
 * The policy compiled over one tailnet's nodes (indices into the array given, which the view
 * does not keep). Costs O(rules x nodes / 64) words per rule member, see policy.c.
 */
struct policy_view;

int policy_compile(const struct policy *p, const struct policy_node *nodes, size_t n,
		   struct policy_view **ret);
void policy_view_free(struct policy_view *v);
/* Whether node a may see node b (symmetric; false for a == b). */
bool policy_view_sees(const struct policy_view *v, size_t a, size_t b);
/*
 * Node a's row of the visibility matrix, policy_view_words(v) words: bit b (word b / 64, bit
 * b % 64) set when a may see b; a's own bit may be set and means nothing. Lets a caller compare
 * two views a word at a time instead of a pair at a time.
 */
const uint64_t *policy_view_row(const struct policy_view *v, size_t a);
size_t policy_view_words(const struct policy_view *v);
/*
 * Node a's class (SIZE_MAX: no node a): nodes of one class are in the same rules the same
 * way (and have the same user where autogroup:self is used), so their rows, and what they
 * may open (policy_view_reach), are the same.
 */
size_t policy_view_class(const struct policy_view *v, size_t a);
/* How many peers node a may see. */
size_t policy_view_count(const struct policy_view *v, size_t a);
/*
 * Node i's inbound filter (nodes must be the array compiled). 0 with *ret (free with
 * netmap_filter_free), -E2BIG (over the netmap's caps), -ENOMEM.
 */
int policy_view_filter(const struct policy_view *v, const struct policy_node *nodes, size_t i,
		       struct netmap_filter **ret);
/*
 * What node i may open on its peers, the other direction of its filter (docs/policy.md):
 * from the rules whose src takes in node i, each node in one of their dst entries with the
 * entry's ports and the rule's protocols, merged per node and protocol; nodes with the same
 * items share a set, sets in no promised order, nodes in a set by id. Node i itself is
 * listed where a rule lets it reach itself: that keeps the result a function of i's class
 * (policy_view_class), so that a server computes it once per class, not once per node.
 * Nodes i may open nothing on are in no set. When that list is one set naming every node i
 * sees, the set is an all set ("*") instead: a node that comes or goes leaves it unchanged.
 * 0 with *ret (netmap_reach_free), -E2BIG (over the netmap's caps), -ENOMEM, -EINVAL (no
 * node i).
 */
int policy_view_reach(const struct policy_view *v, const struct policy_node *nodes, size_t i,
		      struct netmap_reach **ret);

/*
 * After a policy change over the same nodes: matches every rule of view b with an equal rule
 * of view a (the same node sets, ports, protocols, prefixes), wherever either stands in its
 * policy, so that policy_view_filter_same can say which nodes' filters the change left alone
 * without building them. Both views compiled over the same nodes, in the same order, and a's
 * policy still alive. 0, -ENOMEM.
 */
int policy_view_match(const struct policy_view *a, struct policy_view *b);
/*
 * Whether node i's filter under b is exactly its filter under a: true only when every rule it
 * is built from under b matched (policy_view_match) the rule in the same place under a.
 */
bool policy_view_filter_same(const struct policy_view *a, const struct policy_view *b, size_t i);
/*
 * ORs into acc (policy_view_words(v) words) every node whose filter lists node c as a source,
 * a superset: c coming, going or changing (user, tags, addresses) changes no other node's
 * filter. nodes: the array v was compiled over, still alive.
 */
void policy_view_sourced(const struct policy_view *v, const struct policy_node *nodes, size_t c,
			 uint64_t *acc);

#endif
