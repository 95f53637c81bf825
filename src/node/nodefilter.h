/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_NODEFILTER_H
#define TRELLIS_NODE_NODEFILTER_H

/*
 * The daemon's packet filter (src/filter) fed from the netmap: every applied netmap's
 * packet_filter is compiled and installed when it changed. NULL (no policy) lets every peer
 * in. A filter that does not compile keeps the rules in force; with none in force (no
 * policy before) it installs rules that admit no new flow: fail closed, never open.
 * Loop thread, except nodefilter_filter's filter, which the data path uses.
 */

#include <jansson.h>

#include "filter/filter.h"
#include "proto/netmap.h"

struct nodefilter;

int nodefilter_new(struct nodefilter **ret);
/* Accepts NULL. The data path must no longer use the filter. */
void nodefilter_free(struct nodefilter *nf);
struct filter *nodefilter_filter(struct nodefilter *nf);
/* The netmap's packet filter (NULL: no policy). 0, or -errno: it was refused (logged). */
int nodefilter_apply(struct nodefilter *nf, const struct netmap_filter *want);
/*
 * What status shows (docs/localapi.md "filter"): {"policy", "rules", "error", "drops",
 * "fragments_passed", "conntrack"}. NULL on ENOMEM.
 */
json_t *nodefilter_status_json(struct nodefilter *nf);
/*
 * What the peer may open on this node under the filter in force (docs/localapi.md
 * "allowed_in"): null without a policy (anything), else the protocols each with its merged
 * port ranges, [] for nothing. NULL on ENOMEM.
 */
json_t *nodefilter_peer_access_json(struct nodefilter *nf, const struct netmap_node *peer);
/*
 * Sets "may_open" on each peer of a status's "peers": what this node may open on the peer,
 * from the netmap's may_open (docs/localapi.md "may_open"), in allowed_in's form; null
 * without a policy (anything); absent when the server did not say. Not enforced here: the
 * peer's filter is what enforces.
 */
void nodefilter_status_may_open(const struct netmap *nm, json_t *peers);
/* Sets "allowed_in" on each peer of a status's "peers" (those of nm, in its order). */
void nodefilter_status_peers(struct nodefilter *nf, const struct netmap *nm, json_t *peers);

#endif
