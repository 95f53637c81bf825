// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "control/addr.h"
#include "control/authkey.h"
#include "control/register.h"
#include "control/registry.h"
#include "crypto/crypto.h"

/*
 * The audit key the node sends at every registration: a node that lost its key file
 * made a new one, and its batches verify with that from now on (docs/audit.md).
 */
static void audit_key_take(struct control_node *rec, const struct ctrl_register *msg)
{
	if (!msg->has_audit_key)
		return;
	rec->has_audit_key = true;
	memcpy(rec->audit_key, msg->audit_key, NETMAP_KEY_LEN);
}

static int64_t expiry_from(const struct registry_tailnet *t, int64_t now)
{
	return t && t->rec.key_expiry_sec ? now + t->rec.key_expiry_sec : 0;
}

/* The tailnet's machine-certificate rule: NULL, or the refusal (ca.h). */
static const char *mcert_rule(const struct register_request *req, const struct registry_tailnet *t,
			      int64_t *ret_not_after)
{
	*ret_not_after = 0;
	if (!t || !t->rec.require_machine_cert)
		return NULL;
	if (!req->mcert_check)
		return "this tailnet requires a machine certificate";
	return req->mcert_check(req->mcert_arg, t->rec.id, ret_not_after);
}

/* A node admitted by its certificate keeps its key no longer than the certificate. */
static void mcert_clamp(struct register_decision *d, int64_t not_after)
{
	if (not_after && (!d->rec.key_expiry || d->rec.key_expiry > not_after))
		d->rec.key_expiry = not_after;
}

bool register_authkey_unknown(const struct registry *r, const struct ctrl_register *msg)
{
	char kid[AUTHKEY_ID_HEX + 1];
	uint8_t hash[32];
	bool unknown;

	if (!msg->auth_key[0] || msg->has_old_node_key ||
	    authkey_parse(msg->auth_key, kid, hash) < 0)
		return false;
	crypto_wipe(hash, sizeof(hash));
	unknown = !registry_authkey_get(r, kid);
	return unknown;
}

/*
 * Rotation: the machine key (authenticated by the Noise handshake) proves the
 * device, old_node_key proves it still holds the current, unexpired key. The
 * record stays (id, name, addresses); only the node key and its expiry change,
 * so peers get a "changed" delta. An expired node cannot rotate its way back
 * in: it must re-authenticate (auth key or approval) without old_node_key.
 */
static void decide_rotate(struct registry *r, const struct register_request *req,
			  struct register_decision *d)
{
	const struct ctrl_register *msg = req->msg;
	const struct registry_node *e = registry_node_by_machine(r, req->machine_key);
	const struct control_node *n = e ? registry_node_record(r, e->id) : NULL;
	int64_t not_after = 0;

	if (!n || !n->approved)
		d->error = "key rotation refused: unknown node (register first)";
	else if (!control_node_visible(n, req->now))
		d->error = "key rotation refused: node key expired (re-authenticate)";
	else if (!memcmp(n->node_key, msg->node_key, NETMAP_KEY_LEN))
		d->error = NULL; /* a retry whose first answer was lost: already done */
	else if (memcmp(n->node_key, msg->old_node_key, NETMAP_KEY_LEN) != 0)
		d->error = "key rotation refused: old node key does not match";
	else if (req->stream_node_id && req->stream_node_id != n->id)
		d->error = "key rotation refused: not this stream's node";
	else if (registry_node_key_taken(r, msg->node_key, req->machine_key))
		d->error = REGISTER_ERR_NODE_KEY_TAKEN;
	else
		d->error = mcert_rule(req, registry_tailnet_get(r, n->tailnet_id), &not_after);
	if (d->error)
		return;
	d->rec = *n;
	d->prev = *n;
	audit_key_take(&d->rec, msg);
	if (memcmp(n->node_key, msg->node_key, NETMAP_KEY_LEN) != 0) {
		d->rotate = true;
		memcpy(d->rec.node_key, msg->node_key, NETMAP_KEY_LEN);
		d->rec.key_expiry = expiry_from(registry_tailnet_get(r, n->tailnet_id), req->now);
		mcert_clamp(d, not_after);
	}
}

/*
 * What a credential says: the tailnet, and the node's standing in it. Today
 * the one credential is an auth key; 0 with *ret_key set, or a refusal.
 */
static const char *credential(struct registry *r, const struct register_request *req,
			      struct control_authkey **ret_key)
{
	char kid[AUTHKEY_ID_HEX + 1];
	uint8_t hash[32];
	struct control_authkey *k = NULL;
	int err;

	err = authkey_parse(req->msg->auth_key, kid, hash);
	if (err == 0) {
		k = registry_authkey_get(r, kid);
		err = authkey_check(k, hash, req->now);
	}
	crypto_wipe(hash, sizeof(hash));
	if (err < 0)
		return authkey_strerror(err);
	*ret_key = k;
	return NULL;
}

void register_decide(struct registry *r, const struct register_request *req,
		     struct register_decision *d)
{
	const struct ctrl_register *msg = req->msg;
	struct control_authkey *k = NULL;
	const struct control_node *old = NULL;
	const struct registry_tailnet *t;
	const struct registry_node *e;
	int64_t not_after;
	uint64_t tid;

	memset(d, 0, sizeof(*d));
	if (msg->has_old_node_key)
		return decide_rotate(r, req, d);
	if (registry_node_key_taken(r, msg->node_key, req->machine_key)) {
		d->error = REGISTER_ERR_NODE_KEY_TAKEN;
		return;
	}
	if (msg->auth_key[0]) {
		d->error = credential(r, req, &k);
		if (d->error)
			return;
		tid = k->tailnet_id;
	} else {
		/* No credential: the tailnet the machine is known in, or the default. */
		e = registry_node_by_machine(r, req->machine_key);
		tid = req->default_tailnet_id;
		if (e && registry_node_record(r, e->id))
			tid = registry_node_record(r, e->id)->tailnet_id;
	}
	t = registry_tailnet_get(r, tid);
	if (!t) {
		d->error = "unknown tailnet";
		return;
	}
	d->error = mcert_rule(req, t, &not_after);
	if (d->error)
		return;
	e = registry_node_in_tailnet(r, tid, req->machine_key);
	if (e && !e->id) {
		d->error = "registration in progress";
		return;
	}
	if (e)
		old = registry_node_record(r, e->id);
	if (old) {
		d->rec = *old;
		d->prev = *old;
	} else {
		d->insert = true;
		d->rec.tailnet_id = tid;
		memcpy(d->rec.machine_key, req->machine_key, NETMAP_KEY_LEN);
		d->rec.created = req->now;
	}
	memcpy(d->rec.node_key, msg->node_key, NETMAP_KEY_LEN);
	audit_key_take(&d->rec, msg);
	snprintf(d->rec.os, sizeof(d->rec.os), "%s", msg->os);
	if (!old || strcmp(old->hostname, msg->hostname) != 0) {
		d->rename = true;
		snprintf(d->rec.hostname, sizeof(d->rec.hostname), "%s", msg->hostname);
	}
	if (k) {
		/* Every use counts, reusable keys' too: `authkey list` shows true use counts. */
		d->authkey = k;
		d->rec.approved = !t->rec.device_approval || k->preauthorized;
		d->rec.ephemeral = k->ephemeral;
		d->rec.n_tags = k->n_tags;
		memcpy(d->rec.tags, k->tags, sizeof(d->rec.tags));
		d->rec.user_id = k->user_id ? k->user_id : k->n_tags ? 0 : t->default_user;
		d->rec.key_expiry = expiry_from(t, req->now);
	} else if (!old || !control_node_visible(old, req->now) ||
		   memcmp(old->node_key, msg->node_key, NETMAP_KEY_LEN)) {
		/*
		 * Interactive: waits for a login or `trellis-control nodes approve`. A known
		 * machine with a new node key and no proof of the old one (old_node_key: a
		 * rotation) is a new login too: `trellis up --force-reauth`, or a node that lost
		 * its key. A known node the store holds unapproved keeps waiting for the admin.
		 */
		d->rec.approved = false;
		d->relogin = old && old->approved;
		/* A known node keeps its owner while it waits (an admin's approval brings it back).
		 */
		d->rec.user_id = old ? old->user_id : t->default_user;
		d->rec.key_expiry = expiry_from(t, req->now);
	}
	/* else: a known, approved machine re-registers with the node key it has. */
	mcert_clamp(d, not_after);
}

int register_begin(struct registry *r, struct register_decision *d, int64_t now)
{
	struct registry_tailnet *t = registry_tailnet_get(r, d->rec.tailnet_id);
	struct registry_node *e = NULL;
	char name[NETMAP_NAME_MAX];
	int err;

	if (d->insert) {
		if (!t) {
			d->error = "unknown tailnet";
			return -ENOENT;
		}
		err = addr_pool_alloc(t->pool, d->rec.ipv4);
		if (err < 0) {
			d->error = err == -ENOSPC ? "tailnet address pool full" : "out of memory";
			return err;
		}
	}
	if (d->rename) {
		registry_name_unique(r, d->rec.tailnet_id, d->rec.hostname, name);
		snprintf(d->rec.name, sizeof(d->rec.name), "%s", name);
	}
	if (d->insert) {
		e = registry_node_reserve(r, d->rec.tailnet_id, d->rec.machine_key, d->rec.name);
		if (!e) {
			addr_pool_release(t->pool, d->rec.ipv4);
			d->error = "out of memory";
			return -ENOMEM;
		}
		registry_node_key_reserve(r, e, d->rec.node_key);
		d->entry = e;
	}
	/* Counted now, before the write: a second use is refused while the first is in flight. */
	if (d->authkey)
		d->authkey->uses++;
	/* The in-memory record changes now, so later writes of this node carry it. */
	if (!d->insert)
		registry_node_update(r, &d->rec, now);
	return 0;
}

/* A known node registering again as it was (a reconnect): nothing its peers see changes. */
static bool record_same(const struct control_node *a, const struct control_node *b)
{
	return !memcmp(a->node_key, b->node_key, NETMAP_KEY_LEN) &&
	       a->key_expiry == b->key_expiry && a->expiry_disabled == b->expiry_disabled &&
	       a->approved == b->approved && a->user_id == b->user_id &&
	       !strcmp(a->name, b->name) && !strcmp(a->hostname, b->hostname) &&
	       !strcmp(a->os, b->os) && a->n_tags == b->n_tags &&
	       !memcmp(a->tags, b->tags, sizeof(a->tags[0]) * a->n_tags);
}

size_t register_store_ops(const struct register_decision *d, struct store_op ops[2])
{
	size_t n = 0;

	if (d->authkey) {
		memset(&ops[n], 0, sizeof(ops[n]));
		ops[n].kind = STORE_OP_AUTHKEY_UPDATE;
		ops[n].authkey = *d->authkey;
		n++;
	}
	memset(&ops[n], 0, sizeof(ops[n]));
	ops[n].kind = d->insert ? STORE_OP_NODE_INSERT : STORE_OP_NODE_UPDATE;
	/* Written all the same, but the change feed says nothing changed: nodes resuming a
	 * map skip it (docs/control-protocol.md, "Resuming a map stream"). */
	if (!d->insert && !d->authkey && record_same(&d->rec, &d->prev))
		ops[n].kind = STORE_OP_NODE_TOUCH;
	ops[n].node = d->rec;
	/* What this registration changed, and nothing an admin may have written meanwhile. */
	if (!d->insert)
		ops[n].node_fields = store_node_diff(&d->prev, &d->rec);
	return n + 1;
}

/* What a registration changes in a known node's record, back to how it was. */
static void restore(struct registry *r, const struct register_decision *d, int64_t now)
{
	const struct control_node *cur = registry_node_record(r, d->prev.id);
	struct control_node back;

	if (!cur)
		return; /* deleted meanwhile */
	back = *cur;
	memcpy(back.node_key, d->prev.node_key, NETMAP_KEY_LEN);
	back.has_audit_key = d->prev.has_audit_key;
	memcpy(back.audit_key, d->prev.audit_key, NETMAP_KEY_LEN);
	back.key_expiry = d->prev.key_expiry;
	back.expiry_disabled = d->prev.expiry_disabled;
	memcpy(back.os, d->prev.os, sizeof(back.os));
	memcpy(back.hostname, d->prev.hostname, sizeof(back.hostname));
	memcpy(back.name, d->prev.name, sizeof(back.name));
	back.approved = d->prev.approved;
	back.ephemeral = d->prev.ephemeral;
	back.user_id = d->prev.user_id;
	back.n_tags = d->prev.n_tags;
	memcpy(back.tags, d->prev.tags, sizeof(back.tags));
	if (memcmp(&back, cur, sizeof(back)) != 0)
		registry_node_update(r, &back, now);
}

void register_end(struct registry *r, struct register_decision *d, int err, uint64_t id,
		  int64_t now)
{
	struct registry_node *e;

	if (err < 0) {
		if (d->insert) {
			struct registry_tailnet *t = registry_tailnet_get(r, d->rec.tailnet_id);

			if (t)
				addr_pool_release(t->pool, d->rec.ipv4);
			if (d->entry)
				registry_node_unreserve(r, d->entry);
		} else {
			restore(r, d, now);
		}
		d->entry = NULL;
		return;
	}
	if (d->insert) {
		e = d->entry;
		d->rec.id = id;
		registry_node_commit(r, e, id);
		registry_node_update(r, &d->rec, now);
	} else {
		e = registry_node_get(r, d->rec.id);
	}
	d->entry = NULL;
	if (e)
		registry_machine_claim(r, e);
}
