/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_ADMIN_OP_H
#define TRELLIS_CONTROL_ADMIN_OP_H

/*
 * Admin operations: what `trellis-control NOUN VERB` does, as functions that
 * the CLI (admin.c), a future admin API and web console share. Each takes a
 * context naming the actor (who does it: "cli:root" today, a user or an API
 * key later), checks its input, and makes its changes with durable store
 * writes, all through one function that appends each write's entry to the
 * configuration audit log in the write's own transaction (audit.h) and calls
 * ctx->committed after it. The running server sees the writes through the
 * store's change feed.
 *
 * A refusal is a negative errno and one line in ctx->err that says what is
 * wrong, in the words the CLI prints: `unknown tailnet "corp"`.
 */

#include <stdbool.h>
#include <stdint.h>

#include "control/apikey.h"
#include "control/audit.h"
#include "control/authkey.h"
#include "control/model.h"
#include "control/store.h"

#define ADMIN_OP_ERR_MAX 1024
#define ADMIN_DEFAULT_TAILNET "default"
/* Settings of a tailnet created without options (and of the default tailnet). */
#define ADMIN_KEY_EXPIRY_DEFAULT_SEC (180LL * 86400)
#define ADMIN_EPHEMERAL_TIMEOUT_DEFAULT_SEC (10LL * 60)
/*
 * Lifetime of an auth key or an admin API key created without one: Tailscale's
 * 90 days (its maximum; Headscale's default is one hour, which a person
 * pasting the key into a provisioning script tomorrow does not expect).
 */
#define ADMIN_AUTHKEY_EXPIRY_DEFAULT_SEC (90LL * 86400)
#define ADMIN_APIKEY_EXPIRY_DEFAULT_SEC (90LL * 86400)
/* expiry_sec of a key that never expires (0 means the default). */
#define ADMIN_EXPIRY_NEVER (-1LL)

struct admin_op_ctx {
	struct store *store;
	const char *actor; /* "cli:root", "server", ... */
	int64_t now;       /* Unix seconds: creation times, expiries */
	const char *state_dir; /* the server's: where the CAs' keys are (ca.h); NULL: none */
	/*
	 * The server as others reach it (serve --public-url), without a trailing '/': where
	 * certificates signed here say their CA's revocation list is (ca.h). NULL: none.
	 */
	const char *public_url;
	/*
	 * After each durable write: what was written (op as submitted; id: a new
	 * row's). May be NULL. An auth key's op holds the hash of its secret.
	 */
	void (*committed)(void *arg, const char *actor, const struct store_op *op, uint64_t id);
	/*
	 * The code of the waiting re-login of node_id (pending.h: the running server's memory),
	 * so that `nodes approve ID|NAME` approves it as `nodes approve reg:CODE` does: true
	 * with the code in ret. May be NULL (no server: nothing waits).
	 */
	bool (*relogin_code)(void *arg, uint64_t node_id, char *ret, size_t size);
	void *arg;
	char err[ADMIN_OP_ERR_MAX]; /* set with every refusal */
};

/*
 * The one write path of every operation (here and in users.c): durable when it returns,
 * together with its entry in the configuration audit log (audit.h: action, target; NULL:
 * named after the record), then ctx->committed. 0 or the store's -errno.
 */
int admin_op_commit(struct admin_op_ctx *c, const char *action, const char *target,
		    const struct store_op *op, uint64_t *ret_id);

/* Names of tailnets, users, nodes: DNS-label-like; users may hold '@'. */
bool admin_op_name_valid(const char *name, size_t max, bool allow_at);
/* "tag:name". */
bool admin_op_tag_valid(const char *tag);

/* Tailnet `name`; NULL means the default tailnet, created on first use. 0, -ENOENT. */
int admin_op_tailnet_resolve(struct admin_op_ctx *c, const char *name,
			     struct control_tailnet *ret);
/* ephemeral_timeout_sec > 0; key_expiry_sec 0 = keys do not expire. 0, -EINVAL, -EEXIST. */
int admin_op_tailnet_create(struct admin_op_ctx *c, const char *name, int64_t key_expiry_sec,
			    int64_t ephemeral_timeout_sec, struct control_tailnet *ret);

/*
 * Changes a tailnet's settings (NULL: the default tailnet); a negative key_expiry_sec or
 * ephemeral_timeout_sec, or device_approval < 0, keeps that one. 0, -EINVAL, -ENOENT.
 */
int admin_op_tailnet_set(struct admin_op_ctx *c, const char *name, int64_t key_expiry_sec,
			 int64_t ephemeral_timeout_sec, int device_approval,
			 struct control_tailnet *ret);

/* The tailnet's --require-2fa setting (NULL: the default tailnet). 0, -ENOENT. */
int admin_op_tailnet_require_2fa(struct admin_op_ctx *c, const char *name, bool on);

/*
 * The tailnet's flow logs (docs/audit.md; NULL: the default tailnet): on 1 or 0 (< 0 keeps it),
 * the interval in seconds (< 0 keeps it; 1 s to 1 h), pushed to its nodes in their netmaps;
 * the retention in seconds (< 0 keeps it; 0: forever), which the server prunes to
 * (flows_prune.h). 0, -EINVAL, -ENOENT.
 */
int admin_op_tailnet_flow_log(struct admin_op_ctx *c, const char *name, int on,
			      int64_t interval_sec, int64_t retention_sec);

/* tailnet NULL: the default. 0, -EINVAL, -ENOENT, -EEXIST. */
int admin_op_user_create(struct admin_op_ctx *c, const char *tailnet, const char *name,
			 struct control_user *ret);

struct admin_op_authkey_spec {
	const char *tailnet; /* NULL: the default */
	const char *user;    /* the owner (a user of the tailnet); NULL: none */
	bool reusable, ephemeral, preauthorized;
	unsigned n_tags;
	char tags[NETMAP_MAX_TAGS][NETMAP_TAG_MAX];
	int64_t expiry_sec; /* lifetime; 0 = ADMIN_AUTHKEY_EXPIRY_DEFAULT_SEC; ADMIN_EXPIRY_NEVER */
};

/* A new key: its record in *ret (may be NULL), its text (shown once) in key. */
int admin_op_authkey_create(struct admin_op_ctx *c, const struct admin_op_authkey_spec *spec,
			    struct control_authkey *ret, char key[AUTHKEY_STR_MAX]);
/* id: as `authkey list` shows it, or the whole key. 0, -EINVAL, -ENOENT. */
int admin_op_authkey_revoke(struct admin_op_ctx *c, const char *id);

/*
 * Admin API keys (apikey.h). create: expiry_sec as for auth keys; the record
 * in *ret (may be NULL), the key (shown once) in key. -ENOSPC at APIKEY_MAX
 * keys that are neither revoked nor expired. revoke: id as list shows it.
 */
int admin_op_apikey_create(struct admin_op_ctx *c, const char *name, int64_t expiry_sec,
			   struct apikey *ret, char key[APIKEY_STR_MAX]);
int admin_op_apikey_revoke(struct admin_op_ctx *c, const char *id);
int admin_op_apikey_list(struct admin_op_ctx *c, struct apikey_set *ret);

/*
 * A node by id, or by name: unique within tailnet (not NULL), or across all
 * tailnets. 0, -ENOENT, -EEXIST (the name is in several tailnets).
 */
int admin_op_node_find(struct admin_op_ctx *c, const char *what, const char *tailnet,
		       struct control_node *ret);
/*
 * what: a node (id or name), or "reg:CODE", an interactive registration the
 * running server holds in memory (pending.h): the approval reaches it
 * through the change feed.
 */
int admin_op_node_approve(struct admin_op_ctx *c, const char *what, const char *tailnet);
/* Its key expires now, even where expiry was disabled: it is an explicit act. */
int admin_op_node_expire(struct admin_op_ctx *c, const char *what, const char *tailnet);
int admin_op_node_delete(struct admin_op_ctx *c, const char *what, const char *tailnet);
/* 0, -EINVAL (bad name), -ENOENT, -EEXIST (taken in its tailnet). */
int admin_op_node_rename(struct admin_op_ctx *c, const char *what, const char *tailnet,
			 const char *name);
/* Key expiry on (a node without an expiry gets its tailnet's) or off. */
int admin_op_node_set_expiry(struct admin_op_ctx *c, const char *what, const char *tailnet,
			     bool on);

/*
 * The relay map (docs/control-protocol.md): set from JSON text, checked strictly
 * (c->err says where and what is wrong: -EINVAL, -EMSGSIZE when its compact form
 * exceeds what the store keeps); reset to the default (the embedded relay);
 * get the map in force, *ret_default telling whether it is the default.
 */
int admin_op_relaymap_set(struct admin_op_ctx *c, const char *text, size_t len);
int admin_op_relaymap_reset(struct admin_op_ctx *c);
int admin_op_relaymap_get(struct admin_op_ctx *c, struct netmap_relay_map *ret, bool *ret_default);

/*
 * A tailnet's access policy (docs/policy.md; NULL tailnet: the default). get: the text as set
 * (malloc'd), -ENOENT when the tailnet has none (every node may reach every other). check:
 * parses, validates and runs the policy's tests, no store needed; c->err is "LINE:COL: what".
 * set: checks, then stores (len 0: deletes the policy); a policy that fails never replaces the
 * one in force. explain: whether src may reach dst (a node's name, id or address, or an
 * identity: user, tag, host, address) on port (-1: any) and proto (0: any); why says which
 * rule allows it, or why none does. 0, -EINVAL, -ENOENT, -errno.
 */
int admin_op_policy_get(struct admin_op_ctx *c, const char *tailnet, char **ret, size_t *ret_len);
int admin_op_policy_check(struct admin_op_ctx *c, const char *text, size_t len);
int admin_op_policy_set(struct admin_op_ctx *c, const char *tailnet, const char *text, size_t len);
int admin_op_policy_explain(struct admin_op_ctx *c, const char *tailnet, const char *src,
			    const char *dst, int port, unsigned proto, bool *ret_allowed, char *why,
			    size_t why_len);
/* Who may reach whom: one entry per ordered pair with something allowed. */
struct admin_op_reach {
	char src[NETMAP_NAME_MAX], dst[NETMAP_NAME_MAX];
	char allow[256]; /* "22/tcp,443/tcp,udp,icmp": PORTS/PROTO of the rules that allow it */
};
/* *ret malloc'd; nodes of the tailnet (at most ADMIN_OP_MATRIX_NODES). 0, -E2BIG, -errno. */
#define ADMIN_OP_MATRIX_NODES 1024
int admin_op_policy_matrix(struct admin_op_ctx *c, const char *tailnet,
			   struct admin_op_reach **ret, size_t *ret_n);

/* For the operations of other files (policy_op.c, users.c): a refusal with its message. */
int admin_op_refuse(struct admin_op_ctx *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * What listings show: the whole store, with ret_tailnet set when a tailnet is
 * named (filtering is the caller's). 0, -ENOENT (unknown tailnet), -errno.
 * Free with store_snapshot_free.
 */
int admin_op_snapshot(struct admin_op_ctx *c, const char *tailnet, struct store_snapshot *ret,
		      struct control_tailnet *ret_tailnet);

/*
 * The configuration audit log (audit.h). prune: entries older than keep_sec
 * go, the last of them stays as the anchor; the prune is itself an entry.
 * verify: walks the chain from the anchor (*ret_anchor: its seq); ret->bad
 * and ret->why tell the first bad link. 0 or -errno (the store unreadable).
 */
int admin_op_audit_prune(struct admin_op_ctx *c, int64_t keep_sec, uint64_t *ret_removed);
int admin_op_audit_verify(struct admin_op_ctx *c, struct audit_walk *ret, uint64_t *ret_anchor);

/*
 * `flows prune` (docs/audit.md): the tailnet's (NULL: the default) flow-log batches received
 * before `before` (Unix seconds, not after ctx->now) go, by the retention's path
 * (flows_prune.h): chunks of at most `chunk` batches, each one transaction with its
 * `flows.prune` entry and the nodes' anchors, so `audit verify` stays clean. At most
 * max_chunks chunks a call, so a long prune does not hold the server's loop: *ret_more says
 * the last one was full (call again). 0, -EINVAL, -ENOENT or the store's -errno.
 */
#define ADMIN_FLOWS_PRUNE_CHUNKS 8
int admin_op_flows_prune(struct admin_op_ctx *c, const char *tailnet, int64_t before,
			 unsigned chunk, unsigned max_chunks, uint64_t *ret_batches,
			 bool *ret_more);

#endif
