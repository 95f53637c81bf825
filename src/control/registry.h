/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_REGISTRY_H
#define TRELLIS_CONTROL_REGISTRY_H

/*
 * The server's in-memory state besides the mapper: tailnets (with their
 * address pools), users, auth keys, and one entry per node with the typed
 * indexes that find it -- by id, by machine key, by machine key within a
 * tailnet, by name within a tailnet. Node records themselves live in the
 * mapper (registry_node_record); the registry keeps the indexes, the address
 * pools and the mapper consistent whenever a node appears, is renamed or goes
 * (registry_node_sync, registry_node_remove), and holds the reservations of
 * registrations in flight (register.h).
 *
 * No I/O, no clock, loop thread only.
 */

#include <stdbool.h>
#include <stdint.h>

#include "base/hmap.h"
#include "control/model.h"

struct addr_pool;
struct mapper;
struct session;

/* Each tailnet has a user of this name for nodes registered without one. */
#define REGISTRY_DEFAULT_USER "default"

struct registry_tailnet {
	struct hmap_node by_id;
	struct control_tailnet rec;
	struct addr_pool *pool;
	uint64_t default_user; /* id of its REGISTRY_DEFAULT_USER, 0 until known */
};

struct registry_node {
	struct hmap_node by_id, by_machine, by_tailnet_machine, by_name, by_node_key;
	/*
	 * 0 while the node's first write is in flight: the entry then only
	 * reserves its machine key in the tailnet and its name.
	 */
	uint64_t id;
	uint64_t tailnet_id;
	uint8_t machine_key[NETMAP_KEY_LEN];
	char name[NETMAP_NAME_MAX];
	bool machine_indexed; /* the node its machine key finds: the one registered last */
	uint8_t node_key[NETMAP_KEY_LEN]; /* as the record has it (or the reservation's) */
	bool node_key_indexed;

	/* The server's: sessions of this node, and its coalesced writes. */
	struct session *stream; /* its map stream */
	struct session *waiter; /* a registration waiting for approval */
	uint8_t persist;        /* 1: a write of its live state in flight; 2: and another wanted */
	/*
	 * Changes to what its peers' netmaps carry of it (disco key, home region, mapping)
	 * that the store's feed does not hold yet, counted: nonzero while a node that
	 * resumes its netmap could not learn them from the feed (server.c unfed_*).
	 */
	uint32_t unfed;
	unsigned writes;	/* the server's writes of its record in flight (changes.h) */
	bool feed_held;		/* a change from the feed waits for them */
	bool presumed;		/* online when our last run stopped: presumed so until it returns */
};

struct registry;

/* The mapper holds the node records; the registry feeds it. 0 or -ENOMEM. */
int registry_new(struct mapper *m, struct registry **ret);
void registry_free(struct registry *r);

/* Adds a tailnet (with an empty address pool) or updates its settings. 0 or -ENOMEM. */
int registry_tailnet_put(struct registry *r, const struct control_tailnet *t);
struct registry_tailnet *registry_tailnet_get(const struct registry *r, uint64_t id);
/* Every tailnet: pass NULL for the first. */
struct registry_tailnet *registry_tailnet_next(const struct registry *r,
					       const struct registry_tailnet *t);

/* Adds or updates a user (a tailnet's "default" user is remembered). 0 or -ENOMEM. */
int registry_user_put(struct registry *r, const struct control_user *u);
const struct control_user *registry_user_get(const struct registry *r, uint64_t id);

/*
 * Adds or updates an auth key. Uses counted here and not yet durable are kept:
 * the count never goes down. 0 or -ENOMEM.
 */
int registry_authkey_put(struct registry *r, const struct control_authkey *k);
/* By the key's id (control_authkey.prefix), or NULL. */
struct control_authkey *registry_authkey_get(const struct registry *r, const char *prefix);

struct registry_node *registry_node_get(const struct registry *r, uint64_t id);
/* The node this machine registered last (in any tailnet), or NULL. */
struct registry_node *registry_node_by_machine(const struct registry *r,
					       const uint8_t machine_key[NETMAP_KEY_LEN]);
/* The machine's node in a tailnet, reservations (id 0) included, or NULL. */
struct registry_node *registry_node_in_tailnet(const struct registry *r, uint64_t tailnet_id,
					       const uint8_t machine_key[NETMAP_KEY_LEN]);
/* The node's record (the mapper's), or NULL. Valid until the next change of the mapper. */
const struct control_node *registry_node_record(const struct registry *r, uint64_t id);
/* The record as nodes see it, with its owner's name. */
void registry_node_render(const struct registry *r, const struct control_node *rec,
			  struct netmap_node *ret);

/*
 * A record as the store has it (loading, the change feed): a new node takes
 * its address and indexes, a known one keeps its live endpoints and is
 * re-indexed if renamed; then the mapper gets it. 0, -ENOMEM, or the
 * mapper's -EINVAL.
 */
int registry_node_sync(struct registry *r, const struct control_node *rec, int64_t now);
/*
 * A node's record changed in memory (registration, endpoints...): the mapper
 * gets it, the name index follows a rename. 0 or the mapper's -errno (logged).
 */
int registry_node_update(struct registry *r, const struct control_node *rec, int64_t now);
/*
 * A change of the node from the store's change feed waits for the server's writes of it
 * (changes.h): hold marks it, release clears the mark and says whether there was one, held
 * counts the nodes marked (an entry freed with its mark is no longer counted).
 */
void registry_node_feed_hold(struct registry *r, struct registry_node *e);
bool registry_node_feed_release(struct registry *r, struct registry_node *e);
size_t registry_feed_held(const struct registry *r);
/* The node is gone: its address, its indexes and its record go. Its sessions must be gone. */
void registry_node_remove(struct registry *r, uint64_t id);

/*
 * Reservations of registrations in flight (register.c). reserve: a new node's
 * machine key in its tailnet and its name, with id 0 (NULL: out of memory);
 * commit: the write made it node id; unreserve: the write failed.
 */
struct registry_node *registry_node_reserve(struct registry *r, uint64_t tailnet_id,
					    const uint8_t machine_key[NETMAP_KEY_LEN],
					    const char *name);
void registry_node_commit(struct registry *r, struct registry_node *e, uint64_t id);
void registry_node_unreserve(struct registry *r, struct registry_node *e);
/*
 * Node keys are unique but for one machine's nodes in several tailnets (the
 * same device, proven by its machine key, may bring its key along). Is
 * node_key held by a node, or reserved by a registration in flight, of
 * another machine?
 */
bool registry_node_key_taken(const struct registry *r, const uint8_t node_key[NETMAP_KEY_LEN],
			     const uint8_t machine_key[NETMAP_KEY_LEN]);
/* A new node's reservation holds its node key too (the record indexes it from then on). */
void registry_node_key_reserve(struct registry *r, struct registry_node *e,
			       const uint8_t node_key[NETMAP_KEY_LEN]);
/* The entry's name in its tailnet is now name. */
void registry_node_rename(struct registry *r, struct registry_node *e, const char *name);
/* From now on the machine key finds this node. */
void registry_machine_claim(struct registry *r, struct registry_node *e);

/*
 * A free node name in the tailnet from a host name: a DNS label (lowercase
 * letters, digits, '-'; "node" when nothing is left), "-2", "-3"... on a
 * clash. A per-name hint of the next suffix keeps a thousand "laptop"s O(1) each.
 */
void registry_name_unique(struct registry *r, uint64_t tailnet_id, const char *hostname,
			  char ret[NETMAP_NAME_MAX]);
bool registry_name_taken(const struct registry *r, uint64_t tailnet_id, const char *name);

#endif
