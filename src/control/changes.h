/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_CHANGES_H
#define TRELLIS_CONTROL_CHANGES_H

/*
 * The change feed: what other processes (the admin CLI, later other
 * replicas) committed to the store reaches the running server. The server
 * polls it every 200 ms (store_changes_poll: one PRAGMA data_version when
 * nothing changed), and before refusing an auth key it does not know. Each
 * change names a record; it is re-read and applied: tailnets, users and auth
 * keys to the registry, nodes to the registry and the mapper, after which the
 * owner hears of them (a node changed: approvals reach waiting nodes; a node
 * is gone: its sessions end).
 */

#include <stdint.h>

#include "control/store.h"

struct registry;
struct registry_node;
struct store;

struct changes_hooks {
	/* A node's record changed or appeared; the registry and the mapper have it. */
	void (*node_changed)(void *ctx, uint64_t id);
	/* A node was deleted: the owner forgets it (registry_node_remove). */
	void (*node_deleted)(void *ctx, uint64_t id);
	/* A setting was written (the relay map, an approval of a pending registration); may be
	 * NULL. */
	void (*settings_changed)(void *ctx);
	/* A tailnet's record was written (its settings reach its nodes: flow logs); may be NULL. */
	void (*tailnet_changed)(void *ctx, uint64_t tailnet_id);
	/* A machine CA or certificate was written (ca.h); may be NULL. */
	void (*certs_changed)(void *ctx);
	/* Of those, a machine certificate (its row id), after certs_changed; may be NULL. */
	void (*mcert_changed)(void *ctx, uint64_t id);
	/* A tailnet's access policy was written or deleted; may be NULL. */
	void (*policy_changed)(void *ctx, uint64_t tailnet_id);
};

struct changes {
	struct store *store;
	struct registry *reg;
	uint64_t cursor; /* store_changes_poll's */
	const struct changes_hooks *hooks;
	void *ctx;
};

/*
 * Applies one change the server itself committed (the admin API's writes: the
 * feed skips our own origin), as if it came through the feed.
 */
void changes_apply(struct changes *c, enum store_change_kind kind, uint64_t id, int64_t now);
/* Applies what others committed since the last call. */
void changes_drain(struct changes *c, int64_t now);

/*
 * The server submitted a write of e's record (a registration, a logout: not its live state),
 * and it completed (whatever its result; id: the node's, 0 for a failed insert). A change of
 * the node that the feed brings in between waits for the last of them to complete, then is
 * read and applied (registry_feed_held counts those waiting).
 */
void changes_write_begin(struct changes *c, struct registry_node *e);
void changes_write_end(struct changes *c, uint64_t id, int64_t now);

#endif
