/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_REGISTER_H
#define TRELLIS_CONTROL_REGISTER_H

/*
 * Registration (docs/control-protocol.md, "register") as a function of the
 * request, the identity the control session proved and the current records
 * (registry.h), to a decision and the store operations that make it durable.
 * No I/O, no clock: the server talks to the node and the store, and unit
 * tests run the decision table directly.
 *
 * Who may register, and how:
 * - with old_node_key: a key rotation of the machine's current node, which
 *   must be approved and unexpired and hold old_node_key (a retry whose answer
 *   was lost, already holding the new key, is accepted again);
 * - with a credential (today: an auth key; OIDC and local accounts plug in
 *   beside it in credential()): into the credential's tailnet, approved, with
 *   its tags, ephemerality and owner, and a fresh key expiry;
 * - in every case, the node key must not belong to another machine's node
 *   (registry_node_key_taken; the session has checked the node's proof of it);
 * - in a tailnet with require_machine_cert, in every case too (rotations, auth
 *   keys, logins, known machines), the node proves a valid certificate of the
 *   tailnet's CA for its machine key (req->mcert_check), and its key expiry
 *   becomes no later than the certificate's end;
 * - without one: a machine we know and whose node is visible re-registers
 *   as it is; a known, approved node with an expired key or a new node key
 *   logs in again (relogin: its owner signs in, or an admin approves); any
 *   other machine registers unapproved and waits for a login or an admin
 *   (interactive).
 *
 * A decision is carried out around its store write: register_begin reserves
 * what the write needs in memory (an address, a name, the machine's place in
 * its tailnet, a one-off key's use) and changes the in-memory record of a
 * known node at once, so that later writes of the node carry it;
 * register_end takes the write's result: the new node's id, or it undoes the
 * reservations and restores the known node's record.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/model.h"
#include "control/store.h"
#include "proto/ctrlmsg.h"

struct registry;
struct registry_node;

/* The refusal of a node key that belongs to another machine's node. */
#define REGISTER_ERR_NODE_KEY_TAKEN "node key belongs to another node"
/* /register/<this>: the page of a node the store holds unapproved (it names no node). */
#define REGISTER_APPROVAL_PAGE "approval"

struct register_request {
	const struct ctrl_register *msg;
	const uint8_t *machine_key;  /* proven by the control session's handshake */
	uint64_t stream_node_id;     /* the node whose map stream the session carries, or 0 */
	uint64_t default_tailnet_id; /* for a machine we do not know, without a credential */
	int64_t now;                 /* Unix seconds */
	/*
	 * Asked when the node's tailnet requires a machine certificate (ca.h, the
	 * register message's certificate checked against that tailnet's CA): NULL (valid,
	 * *ret_not_after its end) or the refusal. No hook: refused.
	 */
	const char *(*mcert_check)(void *arg, uint64_t tailnet_id, int64_t *ret_not_after);
	void *mcert_arg;
};

struct register_decision {
	const char *error; /* NULL: the write below; else the refusal the node is told */
	bool insert;       /* a new node: address, name and id still to come */
	bool rename;       /* the node takes a new name from rec.hostname */
	bool rotate;       /* a key rotation */
	/*
	 * A known, approved node logs in again without a credential (its key expired, or a
	 * new key without old_node_key): rec.approved is false, and like a new machine it
	 * waits (pending.h) with its record unchanged until its owner signs in or an admin
	 * approves; then the decision is made again and approved.
	 */
	bool relogin;
	struct control_node rec;  /* what to write */
	struct control_node prev; /* a known node's record before (restored if the write fails) */
	struct control_authkey *authkey; /* the auth key it uses (the registry's) */

	/* register_begin's */
	struct registry_node *entry; /* a new node's reservation */
};

/*
 * Does the request carry an auth key whose id the registry does not know?
 * (One the admin CLI created a moment ago: the server looks at the store's
 * change feed before deciding.)
 */
bool register_authkey_unknown(const struct registry *r, const struct ctrl_register *msg);

void register_decide(struct registry *r, const struct register_request *req,
		     struct register_decision *ret);

/*
 * Reserves and applies in memory (see above). 0, or -ENOSPC (the tailnet's
 * address pool is full), -ENOENT, -ENOMEM with d->error set and nothing
 * changed.
 */
int register_begin(struct registry *r, struct register_decision *d, int64_t now);

/*
 * The store operations of a begun decision, in the order to submit them: a
 * one-off key's use (durable no later than the node), then the node. Returns
 * how many (1 or 2); the last one is the node's.
 */
size_t register_store_ops(const struct register_decision *d, struct store_op ops[2]);

/*
 * The node's write completed: err 0 with the new node's id (inserts), or
 * -errno. Afterwards d->rec is the node's record as written (its id set).
 */
void register_end(struct registry *r, struct register_decision *d, int err, uint64_t id,
		  int64_t now);

#endif
