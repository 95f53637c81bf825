/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_MAPPER_H
#define TRELLIS_CONTROL_MAPPER_H

/*
 * The mapper: trellis-control's in-memory view engine. No I/O, no clock: the
 * server feeds it node records and events (with `now`, Unix seconds) and asks
 * for full netmaps and for the deltas each map stream must receive.
 *
 * Who sees whom: a node sees every other node of its own tailnet that is
 * visible (control_node_visible: approved, key unexpired), provided it is visible
 * itself; an invisible node's map holds only itself. Tailnets never mix.
 * Visibility is evaluated when a record changes and when mapper_expire()
 * passes a key's expiry, so the view is a function of the mapper's state and
 * every transition is reported as a delta.
 *
 * Map streams: mapper_subscribe() marks a node as having a live map stream.
 * From then on every change that affects its view is accumulated for it and
 * coalesced (several endpoint changes of one peer become one patch, an add
 * then remove cancels out) until the server takes it with mapper_take_delta().
 * Subscribers with something pending are kept on a dirty list, so the server
 * finds them without scanning: per flush,
 *
 *	while ((id = mapper_dirty_first(m))) {
 *		if (mapper_take_delta(m, id, &d) < 0) ... resend a full netmap ...
 *		if (d) send d;
 *	}
 *
 * A change costs O(subscribers of the tailnet); a full netmap is built on
 * demand and is never stored per subscriber.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/endpoint.h"
#include "control/model.h"
#include "proto/netmap.h"

struct mapper;

struct mapper *mapper_new(void);
void mapper_free(struct mapper *m);

/*
 * Tailnet and user names appear in netmaps (netmap.tailnet, node.user). A
 * node may be upserted before its tailnet or user; names are then empty until
 * they are set. A user rename is sent as a change of that user's nodes; a
 * tailnet rename reaches nodes with their next full netmap (deltas carry no
 * tailnet name). 0, -EINVAL (id 0), -ENOMEM.
 */
int mapper_tailnet_upsert(struct mapper *m, const struct control_tailnet *t);
int mapper_user_upsert(struct mapper *m, const struct control_user *u);

/*
 * Adds or updates a node: registration, approval, rename, key rotation, tags,
 * expiry, logout (key_expiry set to now). Visibility is re-evaluated at `now`.
 * The mapper owns `online` and `last_seen` of a node it already knows (they
 * change through mapper_node_online only); for a new node they are taken from
 * the record. Everything else, endpoints included, comes from the record.
 * 0, -EINVAL (id 0, tailnet change, over a cap), -ENOMEM.
 */
int mapper_node_upsert(struct mapper *m, const struct control_node *n, int64_t now);
/* Deleted: disappears from its peers' maps; its own map stream ends. 0 or -ENOENT. */
int mapper_node_remove(struct mapper *m, uint64_t id);
/* The node's current UDP endpoints. 0 (also when unchanged), -ENOENT, -EINVAL (n over cap). */
int mapper_node_endpoints(struct mapper *m, uint64_t id, const struct endpoint *eps, unsigned n);
/*
 * The relay region the node reported as its home (0: none); peers get it as a
 * changed record. Not persisted: a node reports it on every connect.
 * 0 (changed), 1 (unchanged), -ENOENT, -EINVAL (over NETMAP_RELAY_REGION_ID_MAX).
 */
int mapper_node_home_region(struct mapper *m, uint64_t id, uint32_t region);
/*
 * The node's disco key (NULL: none reported, kept as it was). 0 (changed), 1 (unchanged)
 * or -ENOENT.
 */
int mapper_node_disco_key(struct mapper *m, uint64_t id, const uint8_t *key);
/* Whether the node's NAT maps per destination: 0 (changed), 1 (unchanged) or -ENOENT. */
int mapper_node_mapping_varies(struct mapper *m, uint64_t id, bool varies);
/*
 * The relay map every netmap carries (the same for all tailnets). A change
 * reaches every subscriber as a delta. 0, -EINVAL (a map relaymap_valid
 * refuses), -ENOMEM.
 */
int mapper_relaymap_set(struct mapper *m, const struct netmap_relay_map *rm);
const struct netmap_relay_map *mapper_relaymap(const struct mapper *m);
/* Map stream came or went: online flag and last_seen = now. 0 or -ENOENT. */
int mapper_node_online(struct mapper *m, uint64_t id, bool online, int64_t now);
/* The mapper's copy of a node's record, or NULL. Valid until the next call that changes m. */
const struct control_node *mapper_node_get(const struct mapper *m, uint64_t id);
size_t mapper_node_count(const struct mapper *m);
/* The node holding this node key, or NULL (the relays' admission). Valid as mapper_node_get. */
const struct control_node *mapper_node_by_key(const struct mapper *m,
					      const uint8_t key[NETMAP_KEY_LEN]);
/*
 * A number that changes whenever a node may have stopped being usable (upsert,
 * remove, a key expiring): the relays re-check the keys they hold when it moves.
 */
uint64_t mapper_generation(const struct mapper *m);

/*
 * Hides the nodes whose key expired at or before `now` since the last call
 * (a min-heap by expiry: O(log n) per expiring key, nothing for the rest).
 * Returns how many nodes became invisible.
 */
int mapper_expire(struct mapper *m, int64_t now);
/* The next key expiry to wait for, or INT64_MAX: lets the server sleep until then. */
int64_t mapper_next_expiry(const struct mapper *m);

/*
 * Starts a map stream for the node; the server then sends it mapper_netmap()
 * (as text: mapper_netmap_json()).
 * Idempotent. 0, -ENOENT. Unsubscribe drops anything pending; unknown ids are ignored.
 */
int mapper_subscribe(struct mapper *m, uint64_t id);
void mapper_unsubscribe(struct mapper *m, uint64_t id);
bool mapper_subscribed(const struct mapper *m, uint64_t id);
/*
 * Whether the subscriber takes a change of what it may open as a patch (it offered
 * "may_open_patch" in its map_request; docs/control-protocol.md): a delta then carries the
 * peers that left or changed instead of the whole list, made from what it was last told. Off
 * at subscribe. 0, -ENOENT (not subscribed).
 */
int mapper_reach_patch_set(struct mapper *m, uint64_t id, bool on);
/*
 * A renewed machine certificate (base64 DER) for the subscriber's next delta
 * (netmap_delta.machine_cert); a later one replaces one not yet taken, and a full map in
 * between does not drop it. 0, -ENOENT (no map stream: it gets it when it registers),
 * -EINVAL (over NETMAP_MCERT_MAX), -ENOMEM.
 */
int mapper_node_mcert(struct mapper *m, uint64_t id, const char *b64);

/*
 * The full netmap of a node at `now` (expiries up to now are processed first,
 * which may queue deltas for other subscribers). For a subscriber it
 * supersedes whatever was pending for it, so the next delta continues from
 * this map. 0, -ENOENT, -ENOMEM. Free with netmap_free.
 */
int mapper_netmap(struct mapper *m, uint64_t id, int64_t now, struct netmap **ret);
/*
 * The same full netmap as the JSON text of its CTRL_MSG_NETMAP message: byte
 * for byte what ctrl_msg_encode writes for mapper_netmap()'s result, with the
 * same side effects. Built from per-node records cached as JSON (dropped when
 * the node changes), so it costs a copy of the text rather than rendering and
 * encoding every peer. Malloc'd, NUL-terminated, *ret_len without the NUL.
 * 0, -ENOENT, -EINVAL (a record the encoder rejects), -EMSGSIZE, -ENOMEM.
 */
int mapper_netmap_json(struct mapper *m, uint64_t id, int64_t now, char **ret, size_t *ret_len);
/*
 * The same netmap as zstd frames (proto/mapz.h) for a node that offered them; the
 * peers' records go in blocks compressed once for every node that gets the same
 * block (mapzc.h). Errors as mapper_netmap_json, and -EIO (the compressor failed).
 */
int mapper_netmap_zstd(struct mapper *m, uint64_t id, int64_t now, uint8_t **ret, size_t *ret_len);
struct mapzc_stats;
/* What the compressed netmaps cost and saved so far. 0, or -ENOENT when none was made. */
int mapper_zstd_stats(const struct mapper *m, struct mapzc_stats *ret);

/*
 * The coalesced delta pending for a subscriber, relative to the last netmap or
 * delta it was given; *ret = NULL when nothing is pending (or it all cancelled
 * out). Either way the subscriber leaves the dirty list. 0, -ENOENT (not
 * subscribed), -ENOMEM (the pending state is kept; the server may retry, or
 * send a full netmap instead). Free with netmap_delta_free.
 */
int mapper_take_delta(struct mapper *m, uint64_t id, struct netmap_delta **ret);
/*
 * Drops what is pending for subscriber id, which gets a full netmap instead, but for a
 * certificate to push (mapper_node_mcert): a full map does not carry one, so it waits, not
 * dirty, for the delta after that map. 1 (something was dropped), 0, -ENOENT.
 */
int mapper_drop_delta(struct mapper *m, uint64_t id);
/*
 * The subscriber that has waited longest with a pending delta, or 0. Both first recompile
 * the access policy of tailnets whose nodes changed (see mapper_policy_set).
 */
uint64_t mapper_dirty_first(struct mapper *m);
size_t mapper_dirty_count(struct mapper *m);

/*
 * The version stamped on every netmap and delta from now on (docs/control-protocol.md,
 * "Resuming a map stream"): the server's change-feed position and its digest.
 */
void mapper_version_set(struct mapper *m, const struct netmap_version *v);
/* Messages from now on have a seq above this (a node resuming with a map of an earlier run). */
void mapper_seq_floor(struct mapper *m, uint64_t seq);

/* A node a resuming subscriber may have missed a change of (the change feed since its map). */
struct mapper_missed {
	uint64_t id;
	bool live_only; /* only its live state was written (endpoints, last_seen) */
};

/*
 * Instead of a full netmap, a subscriber that holds an earlier map gets a delta: the peers
 * that changed since (as added when it may see them now, which replaces a record it holds,
 * else as removed), endpoint and online patches for those whose live state alone changed,
 * peers whose key expired meanwhile as removed, online patches for the peers that are offline
 * (the map may say otherwise), its own record, its filter and (relay) the relay map.
 * The caller knows the list is complete, and that the subscriber's view did not change in
 * ways the list cannot say (a policy, a tailnet or user rename: a full map then).
 * 0, -ENOENT (not subscribed), -ENOMEM (send a full map instead).
 */
int mapper_resume(struct mapper *m, uint64_t id, const struct mapper_missed *missed, size_t n,
		  bool relay, int64_t now);
/*
 * Nodes the resumes looked at so far beyond their missed lists: the tailnet's nodes whose
 * key expired (and at most one more with a later expiry for each) and those offline. What
 * a resume costs follows what it sends, not the size of the tailnet (tests, benchmarks).
 */
uint64_t mapper_resume_walked(const struct mapper *m);

/*
 * A tailnet's access policy (the mapper takes it; NULL: none, every node sees every other).
 * From then on a node's netmap lists only the peers it may reach or be reached by, and
 * carries its inbound packet filter; every subscriber whose peers or filter change gets a
 * delta (peers removed, added; packet_filter), or a full map when the policy is removed.
 * Node changes the policy looks at (added, removed, user, tags, address) recompile the
 * tailnet once at the next read, however many came in between.
 * 0, -EINVAL (tailnet id 0), -ENOMEM; the policy is freed on failure.
 */
struct policy;
int mapper_policy_set(struct mapper *m, uint64_t tailnet_id, struct policy *pol);
bool mapper_policy_has(const struct mapper *m, uint64_t tailnet_id);
/*
 * How many node filters the tailnet's policy has been built into so far: a change of the
 * policy alone rebuilds only the filters of nodes whose rules changed (tests, benchmarks).
 */
uint64_t mapper_policy_filters_built(const struct mapper *m, uint64_t tailnet_id);

/*
 * Compiling off the loop. By default a stale tailnet (a policy set, a node the policy looks
 * at changed) is recompiled on the caller's thread at the next read. After
 * mapper_compile_async(m, true) reads never compile; they keep the view in force, and the
 * server moves the work to a worker: mapper_compile_next prepares a stale tailnet's job
 * (at most one per tailnet at a time), mapper_compile_run runs it on any thread (it reads
 * only the job and what the tailnet keeps unchanged while a job is out), and
 * mapper_compile_done, back on the loop, applies it and pushes what changed — unless the
 * tailnet changed meanwhile: then the result is dropped and the tailnet, still stale, is
 * prepared again by the next mapper_compile_next. Every job must come back through
 * mapper_compile_done (ran = false: it never ran) before mapper_free.
 */
struct mapper_compile;
void mapper_compile_async(struct mapper *m, bool on);
/* 1 with *ret (a job), 0 nothing to compile, -ENOMEM. */
int mapper_compile_next(struct mapper *m, struct mapper_compile **ret);
void mapper_compile_run(struct mapper_compile *c);
/* 0 applied, -ESTALE dropped (the tailnet changed), -ECANCELED (!ran), -ENOMEM. Frees c. */
int mapper_compile_done(struct mapper *m, struct mapper_compile *c, bool ran);

#endif
