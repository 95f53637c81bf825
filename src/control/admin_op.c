// SPDX-License-Identifier: MIT
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/admin_op.h"
#include "control/flows_prune.h"
#include "control/relays.h"
#include "control/pending.h"
#include "crypto/crypto.h"
#include "proto/relaymap.h"

static int refuse(struct admin_op_ctx *c, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int refuse(struct admin_op_ctx *c, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return err;
}

/*
 * Every write of an operation: durable when it returns, together with its
 * entry in the configuration audit log (audit.h; target NULL: named after the
 * record), and seen by the committed hook.
 */
int admin_op_commit(struct admin_op_ctx *c, const char *action, const char *target,
		    const struct store_op *op, uint64_t *ret_id)
{
	struct audit_entry e;
	uint64_t id = 0;
	int r;

	r = audit_entry_prepare(&e, c->store, c->actor, c->now, action, target, op);
	if (r < 0)
		return r;
	/*
	 * A tailnet's record holds nothing the entry leaves out: one written as it was (a
	 * `tailnets set` whose settings were already so) is no change, and no entry.
	 */
	if (op->kind == STORE_OP_TAILNET_UPDATE && strcmp(e.before, e.after) == 0) {
		audit_entry_release(&e);
		return 0;
	}
	r = store_write_audited(c->store, op, &e, &id);
	audit_entry_release(&e);
	if (r < 0)
		return r;
	/* A flow prune that found nothing old enough wrote nothing, and no entry. */
	if (op->kind == STORE_OP_FLOW_PRUNE && !id)
		goto out;
	if (c->committed)
		c->committed(c->arg, c->actor, op, id);
out:
	if (ret_id)
		*ret_id = id;
	return 0;
}

int admin_op_refuse(struct admin_op_ctx *c, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
	return err;
}

bool admin_op_name_valid(const char *s, size_t max, bool allow_at)
{
	size_t i, n = strlen(s);

	if (n == 0 || n >= max || s[0] == '-' || s[n - 1] == '-')
		return false;
	for (i = 0; i < n; i++) {
		char ch = s[i];

		if (!(isalnum((unsigned char)ch) || ch == '-' || ch == '.' || ch == '_' ||
		      (allow_at && ch == '@')))
			return false;
	}
	return true;
}

bool admin_op_tag_valid(const char *t)
{
	size_t i, n = strlen(t);

	if (n <= 4 || n >= NETMAP_TAG_MAX || strncmp(t, "tag:", 4) != 0)
		return false;
	for (i = 4; i < n; i++)
		if (!(isalnum((unsigned char)t[i]) || t[i] == '-' || t[i] == '_'))
			return false;
	return true;
}

/* ---- tailnets and users ---- */

int admin_op_tailnet_resolve(struct admin_op_ctx *c, const char *name,
			     struct control_tailnet *ret)
{
	struct store_op op = { .kind = STORE_OP_TAILNET_CREATE };
	struct control_tailnet *t = &op.tailnet;
	int r;

	r = store_tailnet_get_by_name(c->store, name ? name : ADMIN_DEFAULT_TAILNET, ret);
	if (r == -ENOENT && name)
		return refuse(c, r, "unknown tailnet \"%s\"", name);
	if (r != -ENOENT) {
		if (r < 0)
			return refuse(c, r, "tailnet: %s", strerror(-r));
		return 0;
	}
	snprintf(t->name, sizeof(t->name), "%s", ADMIN_DEFAULT_TAILNET);
	t->key_expiry_sec = ADMIN_KEY_EXPIRY_DEFAULT_SEC;
	t->ephemeral_timeout_sec = ADMIN_EPHEMERAL_TIMEOUT_DEFAULT_SEC;
	t->created = c->now;
	r = admin_op_commit(c, "tailnet.create", NULL, &op, &t->id);
	if (r == -EEXIST) /* another admin or the server created it just now */
		r = store_tailnet_get_by_name(c->store, ADMIN_DEFAULT_TAILNET, t);
	if (r < 0)
		return refuse(c, r, "tailnet: %s", strerror(-r));
	*ret = *t;
	return 0;
}

int admin_op_tailnet_create(struct admin_op_ctx *c, const char *name, int64_t key_expiry_sec,
			    int64_t ephemeral_timeout_sec, struct control_tailnet *ret)
{
	struct store_op op = { .kind = STORE_OP_TAILNET_CREATE };
	struct control_tailnet *t = &op.tailnet;
	int r;

	if (!admin_op_name_valid(name, sizeof(t->name), false))
		return refuse(c, -EINVAL, "bad tailnet name \"%s\"", name);
	if (key_expiry_sec < 0 || ephemeral_timeout_sec <= 0)
		return refuse(c, -EINVAL, "bad tailnet settings (ephemeral timeout needed)");
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->key_expiry_sec = key_expiry_sec;
	t->ephemeral_timeout_sec = ephemeral_timeout_sec;
	t->created = c->now;
	r = admin_op_commit(c, "tailnet.create", NULL, &op, &t->id);
	if (r == -EEXIST)
		return refuse(c, r, "tailnet \"%s\" already exists", t->name);
	if (r < 0)
		return refuse(c, r, "%s", strerror(-r));
	if (ret)
		*ret = *t;
	return 0;
}

int admin_op_tailnet_set(struct admin_op_ctx *c, const char *name, int64_t key_expiry_sec,
			 int64_t ephemeral_timeout_sec, int device_approval,
			 struct control_tailnet *ret)
{
	struct store_op op = {.kind = STORE_OP_TAILNET_UPDATE};
	struct control_tailnet *t = &op.tailnet;
	int r;

	if (ephemeral_timeout_sec == 0)
		return refuse(c, -EINVAL, "the ephemeral timeout cannot be 0");
	/* The default tailnet may not exist yet (nobody joined): resolving creates it. */
	if (name && strcmp(name, ADMIN_DEFAULT_TAILNET) == 0)
		name = NULL;
	r = admin_op_tailnet_resolve(c, name, t);
	if (r < 0)
		return r;
	if (key_expiry_sec >= 0)
		t->key_expiry_sec = key_expiry_sec;
	if (ephemeral_timeout_sec > 0)
		t->ephemeral_timeout_sec = ephemeral_timeout_sec;
	if (device_approval >= 0)
		t->device_approval = device_approval != 0;
	r = admin_op_commit(c, "tailnet.set", NULL, &op, NULL);
	if (r < 0)
		return refuse(c, r, "%s", strerror(-r));
	if (ret)
		*ret = *t;
	return 0;
}

int admin_op_tailnet_require_2fa(struct admin_op_ctx *c, const char *name, bool on)
{
	struct store_op op = {.kind = STORE_OP_TAILNET_UPDATE};
	int r;

	if (name && strcmp(name, ADMIN_DEFAULT_TAILNET) == 0)
		name = NULL;
	r = admin_op_tailnet_resolve(c, name, &op.tailnet);
	if (r < 0)
		return r;
	op.tailnet.require_2fa = on;
	r = admin_op_commit(c, "tailnet.set", NULL, &op, NULL);
	return r < 0 ? refuse(c, r, "%s", strerror(-r)) : 0;
}

int admin_op_tailnet_flow_log(struct admin_op_ctx *c, const char *name, int on,
			      int64_t interval_sec, int64_t retention_sec)
{
	struct store_op op = {.kind = STORE_OP_TAILNET_UPDATE};
	int r;

	if (interval_sec >= 0 &&
	    (interval_sec < NETMAP_FLOW_LOG_INTERVAL_MIN_MS / 1000 ||
	     interval_sec > NETMAP_FLOW_LOG_INTERVAL_MAX_MS / 1000))
		return refuse(c, -EINVAL, "the flow-log interval must be from %us to %uh",
			      NETMAP_FLOW_LOG_INTERVAL_MIN_MS / 1000,
			      NETMAP_FLOW_LOG_INTERVAL_MAX_MS / 3600000);
	if (name && strcmp(name, ADMIN_DEFAULT_TAILNET) == 0)
		name = NULL;
	r = admin_op_tailnet_resolve(c, name, &op.tailnet);
	if (r < 0)
		return r;
	if (on >= 0)
		op.tailnet.flow_log_off = !on;
	if (interval_sec >= 0)
		op.tailnet.flow_log_interval_ms = interval_sec * 1000;
	if (retention_sec >= 0)
		op.tailnet.flow_retention_sec = retention_sec;
	r = admin_op_commit(c, "tailnet.set", NULL, &op, NULL);
	return r < 0 ? refuse(c, r, "%s", strerror(-r)) : 0;
}

int admin_op_user_create(struct admin_op_ctx *c, const char *tailnet, const char *name,
			 struct control_user *ret)
{
	struct store_op op = { .kind = STORE_OP_USER_CREATE };
	struct control_user *u = &op.user;
	struct control_tailnet t;
	int r;

	if (!admin_op_name_valid(name, sizeof(u->name), true))
		return refuse(c, -EINVAL, "bad user name \"%s\"", name);
	r = admin_op_tailnet_resolve(c, tailnet, &t);
	if (r < 0)
		return r;
	u->tailnet_id = t.id;
	snprintf(u->name, sizeof(u->name), "%s", name);
	u->created = c->now;
	r = admin_op_commit(c, "user.create", NULL, &op, &u->id);
	if (r == -EEXIST)
		return refuse(c, r, "user \"%s\" already exists in tailnet \"%s\"", u->name,
			      t.name);
	if (r < 0)
		return refuse(c, r, "%s", strerror(-r));
	if (ret)
		*ret = *u;
	return 0;
}

/* ---- auth keys ---- */

int admin_op_authkey_create(struct admin_op_ctx *c, const struct admin_op_authkey_spec *spec,
			    struct control_authkey *ret, char key[AUTHKEY_STR_MAX])
{
	struct store_op op = { .kind = STORE_OP_AUTHKEY_CREATE };
	struct control_authkey *k = &op.authkey;
	struct control_tailnet t;
	int r;

	if (spec->n_tags > NETMAP_MAX_TAGS)
		return refuse(c, -EINVAL, "at most %d tags", NETMAP_MAX_TAGS);
	for (unsigned i = 0; i < spec->n_tags; i++)
		if (!admin_op_tag_valid(spec->tags[i]))
			return refuse(c, -EINVAL, "bad tag \"%s\": tags look like tag:name",
				      spec->tags[i]);
	if (spec->expiry_sec < 0 && spec->expiry_sec != ADMIN_EXPIRY_NEVER)
		return refuse(c, -EINVAL, "bad expiry");
	r = admin_op_tailnet_resolve(c, spec->tailnet, &t);
	if (r < 0)
		return r;
	k->tailnet_id = t.id;
	if (spec->user) {
		struct control_user u;

		if (store_user_get_by_name(c->store, t.id, spec->user, &u) < 0)
			return refuse(c, -ENOENT, "unknown user \"%s\" in tailnet \"%s\"",
				      spec->user, t.name);
		k->user_id = u.id;
	}
	k->reusable = spec->reusable;
	k->ephemeral = spec->ephemeral;
	k->preauthorized = spec->preauthorized;
	k->n_tags = spec->n_tags;
	memcpy(k->tags, spec->tags, sizeof(k->tags));
	k->created = c->now;
	k->expires = spec->expiry_sec == ADMIN_EXPIRY_NEVER ? 0
		     : k->created + (spec->expiry_sec ? spec->expiry_sec
						       : ADMIN_AUTHKEY_EXPIRY_DEFAULT_SEC);
	r = authkey_generate(k, key);
	if (r == 0)
		r = admin_op_commit(c, "authkey.create", NULL, &op, &k->id);
	if (r < 0) {
		crypto_wipe(key, AUTHKEY_STR_MAX);
		crypto_wipe(&op, sizeof(op));
		return refuse(c, r, "cannot create auth key: %s", strerror(-r));
	}
	if (ret)
		*ret = *k;
	crypto_wipe(&op, sizeof(op));
	return 0;
}

int admin_op_authkey_revoke(struct admin_op_ctx *c, const char *text)
{
	struct store_op op = { .kind = STORE_OP_AUTHKEY_UPDATE };
	char id[AUTHKEY_ID_HEX + 1];
	int r;

	if (authkey_id_from_text(text, id) < 0)
		return refuse(c, -EINVAL, "bad auth key id \"%s\" (as shown by `authkey list`)",
			      text);
	r = store_authkey_get_by_prefix(c->store, id, &op.authkey);
	if (r < 0)
		return refuse(c, -ENOENT, "unknown auth key \"%s\"", text);
	op.authkey.revoked = true;
	r = admin_op_commit(c, "authkey.revoke", NULL, &op, NULL);
	crypto_wipe(&op, sizeof(op));
	if (r < 0)
		return refuse(c, r, "cannot revoke: %s", strerror(-r));
	return 0;
}

/* ---- admin API keys ---- */

int admin_op_apikey_list(struct admin_op_ctx *c, struct apikey_set *ret)
{
	char *text = malloc(STORE_SETTING_VALUE_MAX);
	int n;

	if (!text)
		return refuse(c, -ENOMEM, "out of memory");
	n = store_setting_get(c->store, APIKEY_SETTING, text, STORE_SETTING_VALUE_MAX);
	if (n == -ENOENT)
		n = 0;
	if (n < 0 || apikey_set_decode(text, (size_t)n, ret) < 0) {
		free(text);
		return refuse(c, n < 0 ? n : -EINVAL, "the stored API keys are unreadable");
	}
	free(text);
	return 0;
}

static int apikey_set_write(struct admin_op_ctx *c, const struct apikey_set *set,
			    const char *action, const char *id)
{
	char target[AUDIT_TARGET_MAX];
	struct store_op op = { .kind = STORE_OP_SETTING_SET };
	size_t len;
	char *text = apikey_set_encode(set, &len);
	int r;

	if (!text)
		return refuse(c, -ENOMEM, "out of memory");
	if (len > sizeof(op.setting.value)) {
		free(text);
		return refuse(c, -ENOSPC, "too many API keys");
	}
	snprintf(op.setting.key, sizeof(op.setting.key), "%s", APIKEY_SETTING);
	memcpy(op.setting.value, text, len);
	op.setting.len = len;
	free(text);
	snprintf(target, sizeof(target), "apikey:%s", id);
	r = admin_op_commit(c, action, target, &op, NULL);
	if (r < 0)
		return refuse(c, r, "cannot store the API keys: %s", strerror(-r));
	return 0;
}

int admin_op_apikey_create(struct admin_op_ctx *c, const char *name, int64_t expiry_sec,
			   struct apikey *ret, char key[APIKEY_STR_MAX])
{
	struct apikey_set set;
	struct apikey *k;
	unsigned i, j;
	int r;

	if (name && name[0] && !admin_op_name_valid(name, APIKEY_NAME_MAX, true))
		return refuse(c, -EINVAL, "bad API key name \"%s\"", name);
	if (expiry_sec < 0 && expiry_sec != ADMIN_EXPIRY_NEVER)
		return refuse(c, -EINVAL, "bad expiry");
	r = admin_op_apikey_list(c, &set);
	if (r < 0)
		return r;
	/* Revoked and expired keys make room: they authenticate nobody. */
	for (i = j = 0; i < set.n; i++)
		if (!set.keys[i].revoked && (!set.keys[i].expires || set.keys[i].expires > c->now))
			set.keys[j++] = set.keys[i];
	set.n = j;
	if (set.n >= APIKEY_MAX)
		return refuse(c, -ENOSPC, "at most %d API keys; revoke one first", APIKEY_MAX);
	k = &set.keys[set.n++];
	memset(k, 0, sizeof(*k));
	snprintf(k->name, sizeof(k->name), "%s", name ? name : "");
	k->created = c->now;
	k->expires = expiry_sec == ADMIN_EXPIRY_NEVER ? 0
		     : c->now + (expiry_sec ? expiry_sec : ADMIN_APIKEY_EXPIRY_DEFAULT_SEC);
	r = apikey_generate(k, key);
	if (r < 0)
		return refuse(c, r, "cannot create an API key: %s", strerror(-r));
	r = apikey_set_write(c, &set, "apikey.create", k->id);
	if (r < 0) {
		crypto_wipe(key, APIKEY_STR_MAX);
		return r;
	}
	if (ret)
		*ret = *k;
	return 0;
}

int admin_op_apikey_revoke(struct admin_op_ctx *c, const char *text)
{
	char id[APIKEY_ID_HEX + 1];
	struct apikey_set set;
	int r;

	if (apikey_id_from_text(text, id) < 0)
		return refuse(c, -EINVAL, "bad API key id \"%s\" (as shown by `apikey list`)",
			      text);
	r = admin_op_apikey_list(c, &set);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < set.n; i++) {
		if (strcmp(set.keys[i].id, id) != 0)
			continue;
		set.keys[i].revoked = true;
		return apikey_set_write(c, &set, "apikey.revoke", id);
	}
	return refuse(c, -ENOENT, "unknown API key \"%s\"", text);
}

/* ---- nodes ---- */

int admin_op_snapshot(struct admin_op_ctx *c, const char *tailnet, struct store_snapshot *ret,
		      struct control_tailnet *ret_tailnet)
{
	int r;

	if (tailnet) {
		r = store_tailnet_get_by_name(c->store, tailnet, ret_tailnet);
		if (r < 0)
			return refuse(c, -ENOENT, "unknown tailnet \"%s\"", tailnet);
	}
	r = store_load(c->store, ret);
	if (r < 0)
		return refuse(c, r, "cannot read the store: %s", strerror(-r));
	return 0;
}

int admin_op_node_find(struct admin_op_ctx *c, const char *what, const char *tailnet,
		       struct control_node *ret)
{
	struct store_snapshot snap;
	struct control_tailnet t = { 0 };
	const struct control_node *found = NULL;
	unsigned long long id;
	char *end;
	int r;

	errno = 0;
	id = strtoull(what, &end, 10);
	if (isdigit((unsigned char)what[0]) && !*end && !errno) {
		r = store_node_get(c->store, id, ret);
		if (r == -ENOENT)
			return refuse(c, r, "unknown node %s", what);
		if (r < 0)
			return refuse(c, r, "cannot read node %s: %s", what, strerror(-r));
		return 0;
	}
	r = admin_op_snapshot(c, tailnet, &snap, &t);
	if (r < 0)
		return r;
	for (size_t i = 0; i < snap.n_nodes; i++) {
		const struct control_node *n = &snap.nodes[i];

		if (strcmp(n->name, what) != 0 || (tailnet && n->tailnet_id != t.id))
			continue;
		if (found) {
			store_snapshot_free(&snap);
			return refuse(
				c, -EEXIST,
				"node name \"%s\" is in several tailnets; use its id or --tailnet",
				what);
		}
		found = n;
	}
	if (found)
		*ret = *found;
	store_snapshot_free(&snap);
	if (!found)
		return refuse(c, -ENOENT, "unknown node \"%s\"", what);
	return 0;
}

static int node_write(struct admin_op_ctx *c, const char *action, const struct store_op *op,
		      const char *what, const char *name)
{
	int r = admin_op_commit(c, action, NULL, op, NULL);

	/* Only a rename (name set) can collide. */
	if (r == -EEXIST && name)
		return refuse(c, r, "name \"%s\" is already taken in this tailnet", name);
	if (r == -ENOENT)
		return refuse(c, r, "unknown node %s", what);
	if (r < 0)
		return refuse(c, r, "%s", strerror(-r));
	return 0;
}

/*
 * The node named by what, ready to be changed and written back: the caller names the columns
 * it changes (node_fields), so that the server's writes of the others since our read stay.
 */
static int node_update_begin(struct admin_op_ctx *c, const char *what, const char *tailnet,
			     struct store_op *op)
{
	memset(op, 0, sizeof(*op));
	op->kind = STORE_OP_NODE_UPDATE;
	return admin_op_node_find(c, what, tailnet, &op->node);
}

/*
 * An interactive registration waits in the server's memory only (pending.h):
 * the approval goes to the server through the store's change feed, as a
 * setting it looks for. Whether the registration is still pending only the
 * server knows; an unknown or expired code changes nothing.
 */
static int pending_approve(struct admin_op_ctx *c, const char *code)
{
	struct store_op op = { .kind = STORE_OP_SETTING_SET };
	char target[AUDIT_TARGET_MAX];
	int n;

	snprintf(op.setting.key, sizeof(op.setting.key), "%s%s", PENDING_APPROVE_PREFIX, code);
	n = snprintf((char *)op.setting.value, sizeof(op.setting.value), "%s",
		     c->actor ? c->actor : "");
	op.setting.len = (size_t)n;
	snprintf(target, sizeof(target), "reg:%s", code);
	n = admin_op_commit(c, "node.approve", target, &op, NULL);
	if (n < 0)
		return refuse(c, n, "%s", strerror(-n));
	return 0;
}

int admin_op_node_approve(struct admin_op_ctx *c, const char *what, const char *tailnet)
{
	char code[PENDING_CODE_LEN + 1];
	struct store_op op;
	int r;

	if (pending_code_parse(what, code))
		return pending_approve(c, code);
	r = node_update_begin(c, what, tailnet, &op);

	if (r < 0)
		return r;
	/* An approved node logging in again waits in the server's memory, under a code. */
	if (op.node.approved && c->relogin_code && c->relogin_code(c->arg, op.node.id, code,
								    sizeof(code)))
		return pending_approve(c, code);
	op.node.approved = true;
	op.node_fields = STORE_NODE_APPROVED;
	return node_write(c, "node.approve", &op, what, NULL);
}

int admin_op_node_expire(struct admin_op_ctx *c, const char *what, const char *tailnet)
{
	struct store_op op;
	int r = node_update_begin(c, what, tailnet, &op);

	if (r < 0)
		return r;
	op.node.expiry_disabled = false;
	op.node.key_expiry = c->now;
	op.node_fields = STORE_NODE_EXPIRY_DISABLED | STORE_NODE_KEY_EXPIRY;
	return node_write(c, "node.expire", &op, what, NULL);
}

int admin_op_node_delete(struct admin_op_ctx *c, const char *what, const char *tailnet)
{
	struct store_op op = { .kind = STORE_OP_NODE_DELETE };
	char target[AUDIT_TARGET_MAX];
	struct control_node n;
	int r = admin_op_node_find(c, what, tailnet, &n);

	if (r < 0)
		return r;
	op.id = n.id;
	snprintf(target, sizeof(target), "node:%" PRIu64 " %s", n.id, n.name);
	r = admin_op_commit(c, "node.delete", target, &op, NULL);
	if (r == -ENOENT)
		return refuse(c, r, "unknown node %s", what);
	if (r < 0)
		return refuse(c, r, "%s", strerror(-r));
	return 0;
}

int admin_op_node_rename(struct admin_op_ctx *c, const char *what, const char *tailnet,
			 const char *name)
{
	struct store_op op;
	int r;

	if (!admin_op_name_valid(name, sizeof(op.node.name), false))
		return refuse(c, -EINVAL, "bad node name \"%s\"", name);
	r = node_update_begin(c, what, tailnet, &op);
	if (r < 0)
		return r;
	snprintf(op.node.name, sizeof(op.node.name), "%s", name);
	op.node_fields = STORE_NODE_NAME;
	return node_write(c, "node.rename", &op, what, name);
}

int admin_op_node_set_expiry(struct admin_op_ctx *c, const char *what, const char *tailnet,
			     bool on)
{
	struct control_tailnet t;
	struct store_op op;
	int r = node_update_begin(c, what, tailnet, &op);

	if (r < 0)
		return r;
	if (!on) {
		op.node.expiry_disabled = true;
	} else {
		op.node.expiry_disabled = false;
		if (!op.node.key_expiry &&
		    store_tailnet_get(c->store, op.node.tailnet_id, &t) == 0 && t.key_expiry_sec)
			op.node.key_expiry = c->now + t.key_expiry_sec;
	}
	op.node_fields = STORE_NODE_EXPIRY_DISABLED | STORE_NODE_KEY_EXPIRY;
	return node_write(c, on ? "node.expiry_on" : "node.expiry_off", &op, what, NULL);
}

/* relaymap */

static int relaymap_write(struct admin_op_ctx *c, const char *action, const char *text,
			  size_t len)
{
	struct store_op op = {.kind = STORE_OP_SETTING_SET};
	int r;

	if (len > sizeof(op.setting.value))
		return refuse(c, -EMSGSIZE,
			      "the relay map is %zu bytes of compact JSON; at most %zu "
			      "are kept",
			      len, sizeof(op.setting.value));
	snprintf(op.setting.key, sizeof(op.setting.key), "%s", RELAYS_SETTING);
	memcpy(op.setting.value, text, len);
	op.setting.len = len;
	r = admin_op_commit(c, action, NULL, &op, NULL);
	if (r < 0)
		return refuse(c, r, "cannot store the relay map: %s", strerror(-r));
	return 0;
}

int admin_op_relaymap_set(struct admin_op_ctx *c, const char *text, size_t len)
{
	struct netmap_relay_map *rm = malloc(sizeof(*rm));
	char *compact = NULL;
	size_t clen;
	int r;

	if (!rm)
		return refuse(c, -ENOMEM, "out of memory");
	r = relaymap_parse(text, len, rm, c->err, sizeof(c->err));
	if (r < 0)
		goto out;
	r = relaymap_encode(rm, &compact, &clen);
	if (r < 0) {
		refuse(c, r, "cannot encode the relay map: %s", strerror(-r));
		goto out;
	}
	/* An empty map is stored as its text: "no relays", unlike an empty value (the default). */
	r = relaymap_write(c, "relaymap.set", compact, clen);
out:
	free(compact);
	free(rm);
	return r;
}

int admin_op_relaymap_reset(struct admin_op_ctx *c)
{
	return relaymap_write(c, "relaymap.reset", "", 0);
}

int admin_op_relaymap_get(struct admin_op_ctx *c, struct netmap_relay_map *ret, bool *ret_default)
{
	struct netmap_relay_map dflt;
	int r = relays_load(c->store, NULL, ret, c->err, sizeof(c->err));

	if (r < 0)
		return r;
	relays_default(NULL, &dflt);
	*ret_default = relaymap_equal(ret, &dflt);
	return 0;
}

/* ---- the audit log ---- */

int admin_op_audit_prune(struct admin_op_ctx *c, int64_t keep_sec, uint64_t *ret_removed)
{
	struct store_op op = { .kind = STORE_OP_AUDIT_PRUNE };
	uint64_t n = 0;
	int r;

	if (keep_sec <= 0)
		return refuse(c, -EINVAL, "--keep takes a duration above zero (30d, 12h)");
	op.audit_prune_before = c->now - keep_sec;
	r = admin_op_commit(c, "audit.prune", NULL, &op, &n);
	if (r < 0)
		return refuse(c, r, "cannot prune the audit log: %s", strerror(-r));
	if (ret_removed)
		*ret_removed = n;
	return 0;
}

/* ---- flow logs ---- */

int admin_op_flows_prune(struct admin_op_ctx *c, const char *tailnet, int64_t before,
			 unsigned chunk, unsigned max_chunks, uint64_t *ret_batches, bool *ret_more)
{
	struct store_op op = {.kind = STORE_OP_FLOW_PRUNE};
	struct control_tailnet t;
	char target[AUDIT_TARGET_MAX];
	uint64_t n = 0, total = 0;
	unsigned i;
	int r;

	if (!chunk || !max_chunks)
		return refuse(c, -EINVAL, "nothing to prune in (chunk %u, chunks %u)", chunk,
			      max_chunks);
	if (before > c->now)
		return refuse(c, -EINVAL,
			      "the cut-off is in the future: flow logs not yet "
			      "received cannot be pruned");
	/* The default tailnet is not created for this: nothing of it is there to prune. */
	tailnet = tailnet ? tailnet : ADMIN_DEFAULT_TAILNET;
	r = store_tailnet_get_by_name(c->store, tailnet, &t);
	if (r < 0)
		return refuse(c, r, r == -ENOENT ? "unknown tailnet \"%s\"" : "%s: cannot read it",
			      tailnet);
	/* The entry and the chunks are the retention's (flows_prune.c), the actor the admin. */
	snprintf(target, sizeof(target), "tailnet:%s", t.name);
	op.flow_prune =
	    (struct store_flow_prune){.tailnet_id = t.id, .before = before, .max_batches = chunk};
	for (i = 0; i < max_chunks; i++) {
		r = admin_op_commit(c, "flows.prune", target, &op, &n);
		if (r < 0)
			return refuse(c, r, "cannot prune the flow logs: %s", strerror(-r));
		total += n;
		if (n < chunk)
			break;
	}
	if (ret_batches)
		*ret_batches = total;
	if (ret_more)
		*ret_more = i == max_chunks; /* the last chunk was full: there may be more */
	return 0;
}

static int walk_one(void *arg, const struct audit_entry *e)
{
	return audit_walk_step(arg, e) ? 0 : -ECANCELED;
}

int admin_op_audit_verify(struct admin_op_ctx *c, struct audit_walk *ret, uint64_t *ret_anchor)
{
	uint8_t anchor[AUDIT_HASH_LEN];
	uint64_t seq;
	int r;

	r = store_audit_anchor(c->store, &seq, anchor);
	if (r < 0)
		return refuse(c, r, "cannot read the audit anchor: %s", strerror(-r));
	audit_walk_start(ret, seq, anchor);
	r = store_audit_read(c->store, 0, INT64_MIN, 0, walk_one, ret);
	if (r < 0 && r != -ECANCELED)
		return refuse(c, r, "cannot read the audit log: %s", strerror(-r));
	*ret_anchor = seq;
	return 0;
}
