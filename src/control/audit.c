// SPDX-License-Identifier: MIT
/*
 * The configuration audit log's backend-independent half (audit.h): the entry
 * hash, the chain walk, and before/after renderings of the records an admin
 * write touches.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "control/apikey.h"
#include "control/audit.h"
#include "control/relays.h"
#include "control/store.h"
#include "crypto/crypto.h"
#include "crypto/mcert.h"

/* Domain separation: no other hash in the system covers the same bytes. */
static const char hash_domain[] = "trellis audit entry v1";

static void put_u64(struct blake2s_state *b, uint64_t v)
{
	uint8_t le[8];

	for (int i = 0; i < 8; i++)
		le[i] = (uint8_t)(v >> (8 * i));
	blake2s_update(b, le, sizeof(le));
}

/* Length-prefixed, so no two field splits hash alike. */
static void put_str(struct blake2s_state *b, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	put_u64(b, n);
	blake2s_update(b, s, n);
}

void audit_entry_hash(const struct audit_entry *e, uint8_t ret[AUDIT_HASH_LEN])
{
	struct blake2s_state b;

	blake2s_init(&b, AUDIT_HASH_LEN);
	blake2s_update(&b, hash_domain, sizeof(hash_domain));
	put_u64(&b, e->seq);
	put_u64(&b, (uint64_t)e->time);
	put_str(&b, e->actor);
	put_str(&b, e->action);
	put_str(&b, e->target);
	put_str(&b, e->before);
	put_str(&b, e->after);
	blake2s_update(&b, e->prev_hash, AUDIT_HASH_LEN);
	blake2s_final(&b, ret);
}

/* ---- the chain walk ---- */

void audit_walk_start(struct audit_walk *w, uint64_t anchor_seq,
		      const uint8_t anchor_hash[AUDIT_HASH_LEN])
{
	memset(w, 0, sizeof(*w));
	w->next_seq = anchor_seq + 1;
	memcpy(w->prev, anchor_hash, AUDIT_HASH_LEN);
}

static bool broken(struct audit_walk *w, uint64_t seq, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool broken(struct audit_walk *w, uint64_t seq, const char *fmt, ...)
{
	va_list ap;

	w->bad = true;
	w->bad_seq = seq;
	va_start(ap, fmt);
	vsnprintf(w->why, sizeof(w->why), fmt, ap);
	va_end(ap);
	return false;
}

bool audit_walk_step(struct audit_walk *w, const struct audit_entry *e)
{
	uint8_t h[AUDIT_HASH_LEN];

	if (w->bad)
		return false;
	if (e->seq != w->next_seq) {
		if (e->seq > w->next_seq && w->next_seq + 1 == e->seq)
			return broken(w, w->next_seq, "entry %" PRIu64 " is missing (deleted)",
				      w->next_seq);
		if (e->seq > w->next_seq)
			return broken(w, w->next_seq,
				      "entries %" PRIu64 "-%" PRIu64 " are missing (deleted)",
				      w->next_seq, e->seq - 1);
		return broken(w, e->seq,
			      "entry %" PRIu64 " is out of sequence (expected %" PRIu64 ")", e->seq,
			      w->next_seq);
	}
	audit_entry_hash(e, h);
	if (!crypto_equal(h, e->hash, AUDIT_HASH_LEN))
		return broken(w, e->seq, "entry %" PRIu64 " does not match its hash (edited)",
			      e->seq);
	if (!crypto_equal(w->prev, e->prev_hash, AUDIT_HASH_LEN))
		return broken(w, e->seq,
			      "entry %" PRIu64
			      " does not link to the entry before it (entry %" PRIu64
			      " edited, or the chain rewritten from there)",
			      e->seq, e->seq - 1);
	memcpy(w->prev, e->hash, AUDIT_HASH_LEN);
	w->next_seq++;
	w->n++;
	return true;
}

/* ---- renderings ---- */

static json_t *tags_json(unsigned n, const char tags[][NETMAP_TAG_MAX])
{
	json_t *a = json_array();

	for (unsigned i = 0; i < n && i < NETMAP_MAX_TAGS; i++)
		json_array_append_new(a, json_string(tags[i]));
	return a;
}

static json_t *tailnet_json(const struct control_tailnet *t)
{
	return json_pack("{s:I, s:s, s:I, s:I, s:b, s:b, s:b, s:b, s:I, s:I}", "id",
			 (json_int_t)t->id, "name", t->name, "key_expiry_sec",
			 (json_int_t)t->key_expiry_sec, "ephemeral_timeout_sec",
			 (json_int_t)t->ephemeral_timeout_sec, "device_approval",
			 t->device_approval, "require_2fa", t->require_2fa, "require_machine_cert",
			 t->require_machine_cert, "flow_log", !t->flow_log_off,
			 "flow_log_interval_ms", (json_int_t)t->flow_log_interval_ms,
			 "flow_retention_sec", (json_int_t)t->flow_retention_sec);
}

/* What an admin changes; last_seen and endpoints move on their own and are left out. */
static json_t *node_json(const struct control_node *n)
{
	char v4[INET_ADDRSTRLEN], nk[BASE64_ENCODED_LEN(NETMAP_KEY_LEN) + 1];

	inet_ntop(AF_INET, n->ipv4, v4, sizeof(v4));
	base64_encode(nk, sizeof(nk), n->node_key, NETMAP_KEY_LEN);
	return json_pack("{s:I, s:s, s:s, s:I, s:I, s:s, s:s, s:o, s:b, s:b, s:b, s:I}", "id",
			 (json_int_t)n->id, "name", n->name, "hostname", n->hostname, "tailnet_id",
			 (json_int_t)n->tailnet_id, "user_id", (json_int_t)n->user_id, "ipv4", v4,
			 "node_key", nk, "tags", tags_json(n->n_tags, n->tags), "ephemeral",
			 n->ephemeral, "approved", n->approved, "expiry_disabled",
			 n->expiry_disabled, "key_expiry", (json_int_t)n->key_expiry);
}

/* Never the hash of the secret: the log is for reading, the key store is not. */
static json_t *authkey_json(const struct control_authkey *k)
{
	return json_pack("{s:I, s:s, s:I, s:I, s:b, s:b, s:b, s:o, s:I, s:b}", "id",
			 (json_int_t)k->id, "prefix", k->prefix, "tailnet_id",
			 (json_int_t)k->tailnet_id, "user_id", (json_int_t)k->user_id, "reusable",
			 k->reusable, "ephemeral", k->ephemeral, "preauthorized", k->preauthorized,
			 "tags", tags_json(k->n_tags, k->tags), "expires", (json_int_t)k->expires,
			 "revoked", k->revoked);
}

/* Never the password hash, the TOTP secret or the recovery codes: only what they amount to. */
static json_t *account_json(const struct control_account *a)
{
	return json_pack("{s:I, s:s, s:b, s:b, s:b, s:i}", "id", (json_int_t)a->id, "email",
			 a->email, "admin", a->admin, "totp", a->totp, "totp_pending",
			 control_account_totp_pending(a), "recovery_codes", (int)a->n_recovery);
}

/* The CA by its fingerprint (the certificate itself is public, but long). */
static json_t *ca_json(const struct control_ca *c)
{
	char fp[65] = "";

	mcert_fingerprint(c->cert, strnlen(c->cert, sizeof(c->cert)), fp);
	return json_pack("{s:I, s:I, s:s, s:I, s:I}", "id", (json_int_t)c->id, "tailnet_id",
			 (json_int_t)c->tailnet_id, "sha256", fp, "created", (json_int_t)c->created,
			 "retired_at", (json_int_t)c->retired_at);
}

static json_t *mcert_json(const struct control_mcert *m)
{
	char mk[BASE64_ENCODED_LEN(NETMAP_KEY_LEN) + 1];

	base64_encode(mk, sizeof(mk), m->machine_key, NETMAP_KEY_LEN);
	return json_pack("{s:I, s:I, s:s, s:s, s:s, s:I, s:I, s:b, s:I, s:I}", "id",
			 (json_int_t)m->id, "tailnet_id", (json_int_t)m->tailnet_id, "serial",
			 m->serial, "machine_key", mk, "subject", m->subject, "not_before",
			 (json_int_t)m->not_before, "not_after", (json_int_t)m->not_after,
			 "revoked", m->revoked, "revoked_at", (json_int_t)m->revoked_at, "ca_id",
			 (json_int_t)m->ca_id);
}

static json_t *setting_json(const char *key, const uint8_t *value, size_t len)
{
	json_t *v;

	if (strcmp(key, APIKEY_SETTING) == 0) {
		struct apikey_set *set = malloc(sizeof(*set));
		json_t *a = json_array();

		if (set && apikey_set_decode((const char *)value, len, set) == 0)
			for (unsigned i = 0; i < set->n; i++)
				json_array_append_new(
				    a, json_pack("{s:s, s:s, s:I, s:b}", "id", set->keys[i].id,
						 "name", set->keys[i].name, "expires",
						 (json_int_t)set->keys[i].expires, "revoked",
						 set->keys[i].revoked));
		free(set);
		return json_pack("{s:o}", "apikeys", a);
	}
	v = json_loadb((const char *)value, len, 0, NULL);
	if (!v)
		v = json_stringn((const char *)value, len);
	return json_pack("{s:s, s:o}", "setting", key, "value", v ? v : json_null());
}

static char *dump(json_t *j)
{
	char *s;

	/* A record being created has no id yet: its name or prefix is in the target. */
	if (json_integer_value(json_object_get(j, "id")) == 0)
		json_object_del(j, "id");
	s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

	json_decref(j);
	return s;
}

/* The record op writes, as it stands in the store now: NULL when there is none. */
static json_t *before_json(struct store *s, const struct store_op *op)
{
	union {
		struct control_tailnet t;
		struct control_node n;
		struct control_authkey k;
		struct control_account a;
		struct control_mcert m;
	} *u = malloc(sizeof(*u));
	uint8_t *val = NULL;
	json_t *j = NULL;
	int n;

	if (!u)
		return NULL;
	switch (op->kind) {
	case STORE_OP_TAILNET_UPDATE:
		if (store_tailnet_get(s, op->tailnet.id, &u->t) == 0)
			j = tailnet_json(&u->t);
		break;
	case STORE_OP_NODE_UPDATE:
	case STORE_OP_NODE_DELETE:
		if (store_node_get(s, op->kind == STORE_OP_NODE_DELETE ? op->id : op->node.id,
				   &u->n) == 0)
			j = node_json(&u->n);
		break;
	case STORE_OP_AUTHKEY_UPDATE:
	case STORE_OP_AUTHKEY_DELETE:
		if (store_authkey_get(s,
				      op->kind == STORE_OP_AUTHKEY_DELETE ? op->id : op->authkey.id,
				      &u->k) == 0)
			j = authkey_json(&u->k);
		crypto_wipe(&u->k, sizeof(u->k));
		break;
	case STORE_OP_ACCOUNT_PUT:
		if (op->account.id && store_account_get(s, op->account.email, &u->a) == 0)
			j = account_json(&u->a);
		crypto_wipe(&u->a, sizeof(u->a));
		break;
	case STORE_OP_MCERT_PUT:
		if (op->mcert.id && store_mcert_get(s, op->mcert.serial, &u->m) == 0)
			j = mcert_json(&u->m);
		break;
	case STORE_OP_SETTING_SET:
		val = malloc(STORE_SETTING_VALUE_MAX);
		n = val ? store_setting_get(s, op->setting.key, val, STORE_SETTING_VALUE_MAX) : -1;
		if (n >= 0)
			j = setting_json(op->setting.key, val, (size_t)n);
		break;
	default:
		break;
	}
	free(val);
	free(u);
	return j;
}

static json_t *after_json(const struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_TAILNET_CREATE:
	case STORE_OP_TAILNET_UPDATE:
		return tailnet_json(&op->tailnet);
	case STORE_OP_USER_CREATE:
		return json_pack("{s:I, s:s}", "tailnet_id", (json_int_t)op->user.tailnet_id,
				 "name", op->user.name);
	case STORE_OP_NODE_INSERT:
	case STORE_OP_NODE_UPDATE:
		return node_json(&op->node);
	case STORE_OP_AUTHKEY_CREATE:
	case STORE_OP_AUTHKEY_UPDATE:
		return authkey_json(&op->authkey);
	case STORE_OP_SETTING_SET:
		return setting_json(op->setting.key, op->setting.value, op->setting.len);
	case STORE_OP_AUDIT_PRUNE:
		return json_pack("{s:I}", "before", (json_int_t)op->audit_prune_before);
	case STORE_OP_ACCOUNT_PUT:
		return account_json(&op->account);
	case STORE_OP_CA_PUT:
		return ca_json(&op->ca);
	case STORE_OP_MCERT_PUT:
		return mcert_json(&op->mcert);
	default:
		return NULL; /* deletions: nothing after */
	}
}

static void target_derive(char *buf, size_t len, const struct store_op *op)
{
	switch (op->kind) {
	case STORE_OP_TAILNET_CREATE:
	case STORE_OP_TAILNET_UPDATE:
		snprintf(buf, len, "tailnet:%s", op->tailnet.name);
		break;
	case STORE_OP_USER_CREATE:
		snprintf(buf, len, "user:%s", op->user.name);
		break;
	case STORE_OP_NODE_INSERT:
	case STORE_OP_NODE_UPDATE:
	case STORE_OP_NODE_LIVE:
	case STORE_OP_NODE_TOUCH:
		snprintf(buf, len, "node:%" PRIu64 " %s", op->node.id, op->node.name);
		break;
	case STORE_OP_NODE_DELETE:
		snprintf(buf, len, "node:%" PRIu64, op->id);
		break;
	case STORE_OP_AUTHKEY_CREATE:
	case STORE_OP_AUTHKEY_UPDATE:
		snprintf(buf, len, "authkey:%s", op->authkey.prefix);
		break;
	case STORE_OP_AUTHKEY_DELETE:
		snprintf(buf, len, "authkey:%" PRIu64, op->id);
		break;
	case STORE_OP_SETTING_SET:
		snprintf(buf, len, "%s", op->setting.key);
		break;
	case STORE_OP_AUDIT_PRUNE:
		snprintf(buf, len, "audit");
		break;
	case STORE_OP_ACCOUNT_PUT:
		snprintf(buf, len, "account:%s", op->account.email);
		break;
	case STORE_OP_ACCOUNT_DELETE:
		snprintf(buf, len, "account:%" PRIu64, op->id);
		break;
	case STORE_OP_POLICY_SET:
		snprintf(buf, len, "policy:%" PRIu64, op->policy.tailnet_id);
		break;
	case STORE_OP_FLOW_BATCH: /* the nodes' data, chained on its own (flows.h) */
		snprintf(buf, len, "flows:node:%" PRIu64, op->flow.node_id);
		break;
	case STORE_OP_FLOW_PRUNE:
		snprintf(buf, len, "flows:tailnet:%" PRIu64, op->flow_prune.tailnet_id);
		break;
	case STORE_OP_CA_PUT:
		snprintf(buf, len, "ca:%" PRIu64, op->ca.tailnet_id);
		break;
	case STORE_OP_MCERT_PUT:
		snprintf(buf, len, "cert:%s", op->mcert.serial);
		break;
	}
}

int audit_entry_prepare(struct audit_entry *e, struct store *s, const char *actor, int64_t now,
			const char *action, const char *target, const struct store_op *op)
{
	json_t *b = before_json(s, op), *a = after_json(op);
	char *bs, *as;

	memset(e, 0, sizeof(*e));
	e->time = now;
	snprintf(e->actor, sizeof(e->actor), "%s", actor ? actor : "");
	snprintf(e->action, sizeof(e->action), "%s", action);
	if (target)
		snprintf(e->target, sizeof(e->target), "%s", target);
	else
		target_derive(e->target, sizeof(e->target), op);
	bs = b ? dump(b) : strdup("");
	as = a ? dump(a) : strdup("");
	if (!bs || !as) {
		free(bs);
		free(as);
		return -ENOMEM;
	}
	e->before = bs;
	e->after = as;
	return 0;
}

int audit_entry_node(struct audit_entry *e, const char *actor, int64_t now, const char *action,
		     const struct control_node *before, const struct control_node *after)
{
	char *bs = before ? dump(node_json(before)) : strdup(""), *as = dump(node_json(after));

	memset(e, 0, sizeof(*e));
	if (!bs || !as) {
		free(bs);
		free(as);
		return -ENOMEM;
	}
	e->time = now;
	snprintf(e->actor, sizeof(e->actor), "%s", actor);
	snprintf(e->action, sizeof(e->action), "%s", action);
	/* A new node has no id until its insert: its name, unique in its tailnet, names it. */
	if (after->id)
		snprintf(e->target, sizeof(e->target), "node:%" PRIu64 " %s", after->id, after->name);
	else
		snprintf(e->target, sizeof(e->target), "node:%s", after->name);
	e->before = bs;
	e->after = as;
	return 0;
}

void audit_entry_release(struct audit_entry *e)
{
	if (!e)
		return;
	free((char *)e->before);
	free((char *)e->after);
	e->before = e->after = NULL;
}
