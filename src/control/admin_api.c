// SPDX-License-Identifier: MIT
/*
 * The admin API's one handler (admin_api.h): a request's method and path
 * choose an operation of admin_op.h; its arguments come from the query
 * (tailnet=NAME) and a JSON body; the answer is JSON. Refusals keep admin_op's
 * words, so the CLI prints the same line whichever way it went.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "base/util.h"
#include "control/admin.h"
#include "control/admin_api.h"
#include "control/admin_op.h"
#include "control/ca.h"
#include "control/flows_prune.h"
#include "control/flows_query.h"
#include "control/users.h"
#include "crypto/crypto.h"
#include "policy/policy.h"
#include "proto/relaymap.h"

#define SEGS_MAX 4
#define ARG_MAX 128

struct call {
	const struct admin_api_env *env;
	const struct admin_api_request *req;
	struct admin_op_ctx c;
	const char *seg[SEGS_MAX];
	unsigned n_seg;
	char tailnet[ARG_MAX]; /* from the query; "" = none */
	int64_t since;         /* since=UNIX (audit, flows); INT64_MIN = none */
	uint64_t after;        /* after=SEQ: the next page of a listing */
	uint64_t node;	       /* node=ID (flows); 0 = any */
	bool flagged;	       /* flagged=1 (flows): only what is flagged (flows_verdict_flagged) */
	bool revoked;	       /* revoked=1 (certs): only revoked certificates */
	int64_t expiring;      /* expiring=SEC (certs): only valid ones ending within; 0 = any */
	json_t *body;          /* the request's JSON object, or NULL */
	unsigned status;
	json_t *out;
};

static unsigned status_of(int err)
{
	switch (err) {
	case -EINVAL:
		return 400;
	case -EPERM:
	case -EACCES:
		return 403;
	case -ENOENT:
		return 404;
	case -EEXIST:
	case -ENOSPC:
	case -EALREADY:
		return 409;
	case -EMSGSIZE:
		return 413;
	default:
		return 500;
	}
}

static int fail(struct call *k, unsigned status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(struct call *k, unsigned status, const char *fmt, ...)
{
	char msg[ADMIN_OP_ERR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_decref(k->out);
	k->out = json_pack("{s:s}", "error", msg);
	k->status = status;
	return -1;
}

/* An admin_op refusal: its message, and a status from its errno. */
static int op_fail(struct call *k, int r)
{
	return fail(k, status_of(r), "%s", k->c.err[0] ? k->c.err : strerror(-r));
}

static const char *tailnet_arg(struct call *k)
{
	return k->tailnet[0] ? k->tailnet : NULL;
}

/* ---- rendering ---- */

static const char *tailnet_name(const struct store_snapshot *snap, uint64_t id)
{
	for (size_t i = 0; i < snap->n_tailnets; i++)
		if (snap->tailnets[i].id == id)
			return snap->tailnets[i].name;
	return "?";
}

static const char *user_name(const struct store_snapshot *snap, uint64_t id)
{
	for (size_t i = 0; id && i < snap->n_users; i++)
		if (snap->users[i].id == id)
			return snap->users[i].name;
	return "";
}

static json_t *tags_json(unsigned n, const char tags[][NETMAP_TAG_MAX])
{
	json_t *a = json_array();

	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_string(tags[i]));
	return a;
}

static json_t *node_json(struct call *k, const struct store_snapshot *snap,
			 const struct control_node *n)
{
	char v4[INET_ADDRSTRLEN], v6[INET6_ADDRSTRLEN], ep[ENDPOINT_STR_MAX];
	char mk[BASE64_ENCODED_LEN(NETMAP_KEY_LEN) + 1], nk[sizeof(mk)];
	int64_t now = k->req->now;
	bool visible = control_node_visible(n, now);
	json_t *eps = json_array(), *j;
	uint8_t a6[16];

	inet_ntop(AF_INET, n->ipv4, v4, sizeof(v4));
	netmap_ipv6_from_ipv4(a6, n->ipv4);
	inet_ntop(AF_INET6, a6, v6, sizeof(v6));
	base64_encode(mk, sizeof(mk), n->machine_key, NETMAP_KEY_LEN);
	base64_encode(nk, sizeof(nk), n->node_key, NETMAP_KEY_LEN);
	for (unsigned i = 0; i < n->n_endpoints; i++)
		json_array_append_new(eps, json_string(endpoint_format(&n->endpoints[i], ep,
									 sizeof(ep))));
	j = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:b, s:b,"
		      " s:b, s:I, s:I, s:I, s:o, s:s}",
		      "id", (json_int_t)n->id, "name", n->name, "hostname", n->hostname, "tailnet",
		      tailnet_name(snap, n->tailnet_id), "user", user_name(snap, n->user_id), "os",
		      n->os, "ipv4", v4, "ipv6", v6, "node_key", nk, "machine_key", mk, "tags",
		      tags_json(n->n_tags, n->tags), "ephemeral", n->ephemeral, "approved",
		      n->approved, "expiry_disabled", n->expiry_disabled, "visible", visible,
		      "key_expiry", (json_int_t)n->key_expiry, "created", (json_int_t)n->created,
		      "last_seen", (json_int_t)n->last_seen, "endpoints", eps, "state",
		      !n->approved ? "pending"
		      : visible    ? "active"
				   : "expired");
	/* Its flow-log batches verify with this key (docs/audit.md); none before it sent one. */
	if (j && n->has_audit_key) {
		base64_encode(nk, sizeof(nk), n->audit_key, NETMAP_KEY_LEN);
		json_object_set_new(j, "audit_key", json_string(nk));
	}
	/* Only the running server knows who is connected. */
	if (j && k->env->node_online)
		json_object_set_new(j, "online", json_boolean(k->env->node_online(k->env->arg,
										  n->id) > 0));
	return j;
}

static const char *authkey_status(const struct control_authkey *a, int64_t now)
{
	if (a->revoked)
		return "revoked";
	if (a->expires && a->expires <= now)
		return "expired";
	if (!a->reusable && a->uses)
		return "used";
	return "valid";
}

static json_t *authkey_json(const struct store_snapshot *snap, const struct control_authkey *a,
			    int64_t now)
{
	char id[64];

	snprintf(id, sizeof(id), "%s%s", AUTHKEY_TEXT_PREFIX, a->prefix);
	return json_pack("{s:s, s:s, s:s, s:b, s:b, s:b, s:o, s:I, s:I, s:I, s:b, s:s}", "id", id,
			 "tailnet", tailnet_name(snap, a->tailnet_id), "user",
			 user_name(snap, a->user_id), "reusable", a->reusable, "ephemeral",
			 a->ephemeral, "preauthorized", a->preauthorized, "tags",
			 tags_json(a->n_tags, a->tags), "uses", (json_int_t)a->uses, "expires",
			 (json_int_t)a->expires, "created", (json_int_t)a->created, "revoked",
			 a->revoked, "status", authkey_status(a, now));
}

static json_t *apikey_json(const struct apikey *a, int64_t now)
{
	char id[64];

	snprintf(id, sizeof(id), "%s%s", APIKEY_TEXT_PREFIX, a->id);
	return json_pack("{s:s, s:s, s:I, s:I, s:b, s:s}", "id", id, "name", a->name, "created",
			 (json_int_t)a->created, "expires", (json_int_t)a->expires, "revoked",
			 a->revoked, "status",
			 a->revoked			    ? "revoked"
			 : a->expires && a->expires <= now ? "expired"
							     : "valid");
}

/* ---- request pieces ---- */

/* A body member: a string (NULL when absent), a bool (false when absent). -1: wrong type. */
static int body_string(struct call *k, const char *name, const char **ret)
{
	json_t *v = k->body ? json_object_get(k->body, name) : NULL;

	*ret = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return fail(k, 400, "\"%s\" must be a string", name);
	*ret = json_string_value(v);
	return 0;
}

static int body_bool(struct call *k, const char *name, bool *ret)
{
	json_t *v = k->body ? json_object_get(k->body, name) : NULL;

	*ret = false;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return fail(k, 400, "\"%s\" must be true or false", name);
	*ret = json_is_true(v);
	return 0;
}

/* A duration member ("90d", "never"); absent: *ret = dflt. */
static int body_duration(struct call *k, const char *name, int64_t dflt, int64_t *ret)
{
	const char *s;

	if (body_string(k, name, &s) < 0)
		return -1;
	*ret = dflt;
	if (!s)
		return 0;
	if (admin_duration_parse(s, ret) < 0)
		return fail(k, 400, "bad duration \"%s\" (examples: 90s, 30m, 12h, 7d)", s);
	return 0;
}

/* Members other than these are mistakes, named. */
static int body_only(struct call *k, const char *const *names)
{
	const char *key;
	json_t *v;

	if (!k->body)
		return 0;
	json_object_foreach(k->body, key, v) {
		const char *const *n;

		for (n = names; *n && strcmp(*n, key); n++)
			;
		if (!*n)
			return fail(k, 400, "unknown field \"%s\"", key);
	}
	return 0;
}

/* Percent-decodes [s, s+len) into out (cap bytes). 0 or -1. */
static int pct_decode(const char *s, size_t len, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (ch == '%') {
			int hi, lo;

			if (i + 2 >= len)
				return -1;
			hi = hex_digit(s[i + 1]);
			lo = hex_digit(s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			ch = (char)(hi * 16 + lo);
			i += 2;
		} else if (ch == '+') {
			ch = ' ';
		}
		if (o + 1 >= cap)
			return -1;
		out[o++] = ch;
	}
	out[o] = '\0';
	return 0;
}

/* A decimal query value of at least min. 0 or -1. */
static int query_int(const char *s, size_t len, int64_t min, int64_t *ret)
{
	char buf[24], *end;
	long long v;

	if (len == 0 || len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (*end || errno || v < min)
		return -1;
	*ret = v;
	return 0;
}

/* Splits the target into path segments (in buf) and the query's parameters. */
static int target_parse(struct call *k, char *buf, size_t cap)
{
	const char *t = k->req->target, *q;
	size_t plen = strlen(ADMIN_API_PREFIX);
	char *p, *save = NULL;

	if (strncmp(t, ADMIN_API_PREFIX, plen) != 0)
		return fail(k, 404, "not an admin API path");
	t += plen;
	q = strchr(t, '?');
	if (pct_decode(t, q ? (size_t)(q - t) : strlen(t), buf, cap) < 0)
		return fail(k, 400, "bad path");
	for (p = strtok_r(buf, "/", &save); p; p = strtok_r(NULL, "/", &save)) {
		if (k->n_seg == SEGS_MAX)
			return fail(k, 404, "no such endpoint");
		k->seg[k->n_seg++] = p;
	}
	while (q && *q) {
		const char *kv = q + 1, *amp = strchr(kv, '&'), *eq;
		size_t len = amp ? (size_t)(amp - kv) : strlen(kv);

		eq = memchr(kv, '=', len);
		if (eq && (size_t)(eq - kv) == 7 && strncmp(kv, "tailnet", 7) == 0) {
			if (pct_decode(eq + 1, len - 8, k->tailnet, sizeof(k->tailnet)) < 0)
				return fail(k, 400, "bad tailnet parameter");
		} else if (eq && ((size_t)(eq - kv) == 5 && strncmp(kv, "since", 5) == 0)) {
			if (query_int(eq + 1, len - 6, INT64_MIN, &k->since) < 0)
				return fail(k, 400, "since takes Unix seconds");
		} else if (eq && ((size_t)(eq - kv) == 5 && strncmp(kv, "after", 5) == 0)) {
			int64_t v;

			if (query_int(eq + 1, len - 6, 0, &v) < 0)
				return fail(k, 400, "after takes a sequence number");
			k->after = (uint64_t)v;
		} else if (eq && ((size_t)(eq - kv) == 4 && strncmp(kv, "node", 4) == 0)) {
			int64_t v;

			if (query_int(eq + 1, len - 5, 1, &v) < 0)
				return fail(k, 400, "node takes a node id");
			k->node = (uint64_t)v;
		} else if (eq && ((size_t)(eq - kv) == 7 && strncmp(kv, "flagged", 7) == 0)) {
			int64_t v;

			if (query_int(eq + 1, len - 8, 0, &v) < 0 || v > 1)
				return fail(k, 400, "flagged takes 0 or 1");
			k->flagged = v;
		} else if (eq && ((size_t)(eq - kv) == 7 && strncmp(kv, "revoked", 7) == 0)) {
			int64_t v;

			if (query_int(eq + 1, len - 8, 0, &v) < 0 || v > 1)
				return fail(k, 400, "revoked takes 0 or 1");
			k->revoked = v;
		} else if (eq && ((size_t)(eq - kv) == 8 && strncmp(kv, "expiring", 8) == 0)) {
			if (query_int(eq + 1, len - 9, 1, &k->expiring) < 0)
				return fail(k, 400, "expiring takes seconds (1 or more)");
		} else {
			return fail(k, 400, "unknown query parameter \"%.*s\"", (int)len, kv);
		}
		q = amp;
	}
	return 0;
}

static bool is(struct call *k, const char *method, unsigned n_seg, const char *s0, const char *s2)
{
	return strcmp(k->req->method, method) == 0 && k->n_seg == n_seg &&
	       strcmp(k->seg[0], s0) == 0 && (!s2 || (n_seg > 2 && strcmp(k->seg[2], s2) == 0));
}

/* ---- endpoints ---- */

static int snapshot(struct call *k, struct store_snapshot *snap, struct control_tailnet *t)
{
	int r = admin_op_snapshot(&k->c, tailnet_arg(k), snap, t);

	return r < 0 ? op_fail(k, r) : 0;
}

static int tailnets_list(struct call *k)
{
	struct store_snapshot snap;

	if (snapshot(k, &snap, NULL) < 0)
		return -1;
	k->out = json_array();
	for (size_t i = 0; i < snap.n_tailnets; i++) {
		const struct control_tailnet *tn = &snap.tailnets[i];
		size_t nodes = 0;

		for (size_t j = 0; j < snap.n_nodes; j++)
			nodes += snap.nodes[j].tailnet_id == tn->id;
		struct netmap_flow_log fl;

		control_tailnet_flow_log(tn, &fl);
		json_array_append_new(
		    k->out,
		    json_pack("{s:I, s:s, s:I, s:I, s:b, s:b, s:b, s:b, s:I, s:I, s:I, s:I}", "id",
			      (json_int_t)tn->id, "name", tn->name, "key_expiry_sec",
			      (json_int_t)tn->key_expiry_sec, "ephemeral_timeout_sec",
			      (json_int_t)tn->ephemeral_timeout_sec, "device_approval",
			      tn->device_approval, "require_2fa", tn->require_2fa,
			      "require_machine_cert", tn->require_machine_cert, "flow_log",
			      fl.enabled, "flow_log_interval_ms", (json_int_t)fl.interval_ms,
			      "flow_retention_sec", (json_int_t)tn->flow_retention_sec, "created",
			      (json_int_t)tn->created, "nodes", (json_int_t)nodes));
	}
	store_snapshot_free(&snap);
	return 0;
}

static int tailnets_create(struct call *k)
{
	static const char *const names[] = {"name", "key_expiry", "ephemeral_timeout",
					    "device_approval", NULL};
	int64_t key_expiry, eph;
	const char *name;
	bool approval;
	int r;

	if (body_only(k, names) < 0 || body_string(k, "name", &name) < 0 ||
	    body_duration(k, "key_expiry", ADMIN_KEY_EXPIRY_DEFAULT_SEC, &key_expiry) < 0 ||
	    body_duration(k, "ephemeral_timeout", ADMIN_EPHEMERAL_TIMEOUT_DEFAULT_SEC, &eph) < 0 ||
	    body_bool(k, "device_approval", &approval) < 0)
		return -1;
	if (!name)
		return fail(k, 400, "\"name\" is required");
	if (eph == 0)
		return fail(k, 400, "the ephemeral timeout cannot be 0");
	r = admin_op_tailnet_create(&k->c, name, key_expiry, eph, NULL);
	if (r == 0 && approval)
		r = admin_op_tailnet_set(&k->c, name, -1, -1, 1, NULL);
	if (r < 0)
		return op_fail(k, r);
	k->status = 201;
	k->out = json_pack("{s:s}", "name", name);
	return 0;
}

/* PATCH tailnets/NAME: the members given change, the others stay. */
static int tailnets_set(struct call *k)
{
	static const char *const names[] = {
	    "key_expiry",	 "ephemeral_timeout",	 "device_approval",
	    "require_2fa",	 "require_machine_cert", "flow_log",
	    "flow_log_interval", "flow_retention",	 NULL};
	json_t *mc = k->body ? json_object_get(k->body, "require_machine_cert") : NULL;
	bool cert;
	json_t *a = k->body ? json_object_get(k->body, "device_approval") : NULL;
	json_t *m = k->body ? json_object_get(k->body, "require_2fa") : NULL;
	json_t *fl = k->body ? json_object_get(k->body, "flow_log") : NULL;
	int64_t key_expiry, eph, fl_interval, fl_retention;
	bool approval, mfa, fl_on;
	int r;

	if (body_only(k, names) < 0 || body_duration(k, "key_expiry", -1, &key_expiry) < 0 ||
	    body_duration(k, "ephemeral_timeout", -1, &eph) < 0 ||
	    body_bool(k, "device_approval", &approval) < 0 ||
	    body_bool(k, "require_2fa", &mfa) < 0 ||
	    body_bool(k, "require_machine_cert", &cert) < 0 ||
	    body_bool(k, "flow_log", &fl_on) < 0 ||
	    body_duration(k, "flow_log_interval", -1, &fl_interval) < 0 ||
	    body_duration(k, "flow_retention", -1, &fl_retention) < 0)
		return -1;
	if (eph == 0)
		return fail(k, 400, "the ephemeral timeout cannot be 0");
	r = admin_op_tailnet_set(&k->c, k->seg[1], key_expiry, eph,
				 a && !json_is_null(a) ? approval : -1, NULL);
	if (r == 0 && m && !json_is_null(m))
		r = admin_op_tailnet_require_2fa(&k->c, k->seg[1], mfa);
	if (r == 0 && mc && !json_is_null(mc))
		r = ca_op_require(&k->c, k->seg[1], cert);
	if (r == 0 && ((fl && !json_is_null(fl)) || fl_interval >= 0 || fl_retention >= 0))
		r = admin_op_tailnet_flow_log(&k->c, k->seg[1],
					      fl && !json_is_null(fl) ? fl_on : -1, fl_interval,
					      fl_retention);
	if (r < 0)
		return op_fail(k, r);
	k->out = json_object();
	return 0;
}

static int users_list(struct call *k)
{
	struct store_snapshot snap;
	struct control_tailnet t = { 0 };

	if (snapshot(k, &snap, &t) < 0)
		return -1;
	k->out = json_array();
	for (size_t i = 0; i < snap.n_users; i++) {
		const struct control_user *u = &snap.users[i];

		if (tailnet_arg(k) && u->tailnet_id != t.id)
			continue;
		json_array_append_new(k->out, json_pack("{s:I, s:s, s:s, s:I}", "id",
							(json_int_t)u->id, "name", u->name,
							"tailnet", tailnet_name(&snap, u->tailnet_id),
							"created", (json_int_t)u->created));
	}
	store_snapshot_free(&snap);
	return 0;
}

static int users_create(struct call *k)
{
	static const char *const names[] = { "name", "tailnet", NULL };
	const char *name, *tailnet;
	struct control_user u;
	int r;

	if (body_only(k, names) < 0 || body_string(k, "name", &name) < 0 ||
	    body_string(k, "tailnet", &tailnet) < 0)
		return -1;
	if (!name)
		return fail(k, 400, "\"name\" is required");
	r = admin_op_user_create(&k->c, tailnet, name, &u);
	if (r < 0)
		return op_fail(k, r);
	k->status = 201;
	k->out = json_pack("{s:I, s:s}", "id", (json_int_t)u.id, "name", u.name);
	return 0;
}

static int nodes_list(struct call *k, const char *one)
{
	struct store_snapshot snap;
	struct control_tailnet t = { 0 };
	struct control_node found;
	int r;

	if (one) {
		r = admin_op_node_find(&k->c, one, tailnet_arg(k), &found);
		if (r < 0)
			return op_fail(k, r);
	}
	if (snapshot(k, &snap, &t) < 0)
		return -1;
	k->out = one ? NULL : json_array();
	for (size_t i = 0; i < snap.n_nodes; i++) {
		const struct control_node *n = &snap.nodes[i];

		if (one && n->id == found.id)
			k->out = node_json(k, &snap, n);
		else if (!one && (!tailnet_arg(k) || n->tailnet_id == t.id))
			json_array_append_new(k->out, node_json(k, &snap, n));
	}
	store_snapshot_free(&snap);
	if (!k->out)
		return fail(k, 404, "unknown node \"%s\"", one);
	return 0;
}

static int nodes_act(struct call *k)
{
	static const char *const rename_names[] = { "name", NULL };
	static const char *const expiry_names[] = { "enabled", NULL };
	static const char *const none[] = { NULL };
	const char *what = k->seg[1], *verb = k->n_seg == 3 ? k->seg[2] : "delete";
	const char *tn = tailnet_arg(k), *name;
	bool on;
	int r;

	if (strcmp(verb, "rename") == 0) {
		if (body_only(k, rename_names) < 0 || body_string(k, "name", &name) < 0)
			return -1;
		if (!name)
			return fail(k, 400, "\"name\" is required");
		r = admin_op_node_rename(&k->c, what, tn, name);
	} else if (strcmp(verb, "expiry") == 0) {
		if (body_only(k, expiry_names) < 0 || body_bool(k, "enabled", &on) < 0)
			return -1;
		if (!k->body || !json_object_get(k->body, "enabled"))
			return fail(k, 400, "\"enabled\" is required");
		r = admin_op_node_set_expiry(&k->c, what, tn, on);
	} else {
		if (body_only(k, none) < 0)
			return -1;
		if (strcmp(verb, "approve") == 0)
			r = admin_op_node_approve(&k->c, what, tn);
		else if (strcmp(verb, "expire") == 0)
			r = admin_op_node_expire(&k->c, what, tn);
		else if (strcmp(verb, "delete") == 0)
			r = admin_op_node_delete(&k->c, what, tn);
		else
			return fail(k, 404, "no such endpoint");
	}
	if (r < 0)
		return op_fail(k, r);
	k->out = json_object();
	return 0;
}

static int authkeys_list(struct call *k)
{
	struct store_snapshot snap;
	struct control_tailnet t = { 0 };

	if (snapshot(k, &snap, &t) < 0)
		return -1;
	k->out = json_array();
	for (size_t i = 0; i < snap.n_authkeys; i++) {
		const struct control_authkey *a = &snap.authkeys[i];

		if (!tailnet_arg(k) || a->tailnet_id == t.id)
			json_array_append_new(k->out, authkey_json(&snap, a, k->req->now));
	}
	store_snapshot_free(&snap);
	return 0;
}

static int authkeys_create(struct call *k)
{
	static const char *const names[] = { "tailnet",	      "user", "reusable", "ephemeral",
					     "preauthorized", "tags", "expiration", NULL };
	struct admin_op_authkey_spec spec = { 0 };
	struct control_authkey a;
	char key[AUTHKEY_STR_MAX], id[64];
	json_t *tags;
	size_t i;
	int r;

	if (body_only(k, names) < 0 || body_string(k, "tailnet", &spec.tailnet) < 0 ||
	    body_string(k, "user", &spec.user) < 0 ||
	    body_bool(k, "reusable", &spec.reusable) < 0 ||
	    body_bool(k, "ephemeral", &spec.ephemeral) < 0 ||
	    body_bool(k, "preauthorized", &spec.preauthorized) < 0 ||
	    body_duration(k, "expiration", 0, &spec.expiry_sec) < 0)
		return -1;
	/* "never" parses as 0, which means the default to admin_op: say never. */
	if (k->body && json_is_string(json_object_get(k->body, "expiration")) &&
	    spec.expiry_sec == 0)
		spec.expiry_sec = ADMIN_EXPIRY_NEVER;
	tags = k->body ? json_object_get(k->body, "tags") : NULL;
	if (tags && !json_is_array(tags))
		return fail(k, 400, "\"tags\" must be an array of strings");
	if (tags && json_array_size(tags) > NETMAP_MAX_TAGS)
		return fail(k, 400, "at most %d tags", NETMAP_MAX_TAGS);
	for (i = 0; tags && i < json_array_size(tags); i++) {
		const char *t = json_string_value(json_array_get(tags, i));

		if (!t || strlen(t) >= NETMAP_TAG_MAX || !admin_op_tag_valid(t))
			return fail(k, 400, "bad tag \"%s\": tags look like tag:name",
				    t ? t : "(not a string)");
		snprintf(spec.tags[spec.n_tags++], NETMAP_TAG_MAX, "%s", t);
	}
	r = admin_op_authkey_create(&k->c, &spec, &a, key);
	if (r < 0)
		return op_fail(k, r);
	snprintf(id, sizeof(id), "%s%s", AUTHKEY_TEXT_PREFIX, a.prefix);
	k->status = 201;
	k->out = json_pack("{s:s, s:s, s:I}", "key", key, "id", id, "expires",
			   (json_int_t)a.expires);
	crypto_wipe(key, sizeof(key));
	return 0;
}

static int apikeys_list(struct call *k)
{
	struct apikey_set set;
	int r = admin_op_apikey_list(&k->c, &set);

	if (r < 0)
		return op_fail(k, r);
	k->out = json_array();
	for (unsigned i = 0; i < set.n; i++)
		json_array_append_new(k->out, apikey_json(&set.keys[i], k->req->now));
	return 0;
}

static int apikeys_create(struct call *k)
{
	static const char *const names[] = { "name", "expiration", NULL };
	char key[APIKEY_STR_MAX], id[64];
	const char *name;
	struct apikey a;
	int64_t exp;
	int r;

	if (body_only(k, names) < 0 || body_string(k, "name", &name) < 0 ||
	    body_duration(k, "expiration", 0, &exp) < 0)
		return -1;
	if (k->body && json_is_string(json_object_get(k->body, "expiration")) && exp == 0)
		exp = ADMIN_EXPIRY_NEVER;
	r = admin_op_apikey_create(&k->c, name, exp, &a, key);
	if (r < 0)
		return op_fail(k, r);
	snprintf(id, sizeof(id), "%s%s", APIKEY_TEXT_PREFIX, a.id);
	k->status = 201;
	k->out = json_pack("{s:s, s:s, s:I}", "key", key, "id", id, "expires",
			   (json_int_t)a.expires);
	crypto_wipe(key, sizeof(key));
	return 0;
}

/* Waiting registrations, apart from nodes: they are no node until approved. */
static int pending_list(struct call *k)
{
	struct admin_api_pending *p;
	size_t n;

	if (!k->env->pending_list)
		return fail(k, 409, "waiting registrations live in the running server's memory "
				    "only: start it");
	p = calloc(ADMIN_API_PENDING_MAX, sizeof(*p));
	if (!p)
		return fail(k, 500, "out of memory");
	n = k->env->pending_list(k->env->arg, p, ADMIN_API_PENDING_MAX);
	k->out = json_array();
	for (size_t i = 0; i < n && i < ADMIN_API_PENDING_MAX; i++) {
		char code[32], mk[BASE64_ENCODED_LEN(32) + 1];

		if (tailnet_arg(k) && strcmp(p[i].tailnet, k->tailnet) != 0)
			continue;
		snprintf(code, sizeof(code), "reg:%s", p[i].code);
		base64_encode(mk, sizeof(mk), p[i].machine_key, 32);
		json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "code", code, "tailnet",
				      p[i].tailnet, "hostname", p[i].hostname, "os", p[i].os,
				      "machine_key", mk, "expires", (json_int_t)p[i].expires);

		if (o && p[i].node_id)
			json_object_set_new(o, "node_id", json_integer((json_int_t)p[i].node_id));
		json_array_append_new(k->out, o);
	}
	free(p);
	return 0;
}

static int relaymap_get(struct call *k)
{
	struct netmap_relay_map *rm = malloc(sizeof(*rm));
	char *text = NULL;
	size_t len;
	bool dflt;
	int r;

	if (!rm)
		return fail(k, 500, "out of memory");
	r = admin_op_relaymap_get(&k->c, rm, &dflt);
	if (r == 0)
		r = relaymap_encode(rm, &text, &len);
	free(rm);
	if (r < 0) {
		free(text);
		return op_fail(k, r);
	}
	k->out = json_pack("{s:b, s:o}", "default", dflt, "map", json_loadb(text, len, 0, NULL));
	free(text);
	return k->out ? 0 : fail(k, 500, "cannot encode the relay map");
}

/* ---- the audit log ---- */

static json_t *hash_json(const uint8_t h[AUDIT_HASH_LEN])
{
	char hex[2 * AUDIT_HASH_LEN + 1];

	for (int i = 0; i < AUDIT_HASH_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	return json_string(hex);
}

/* A stored before/after: its JSON, or the text itself if it is not (an edited row). */
static json_t *state_json(const char *s)
{
	json_t *j;

	if (!s[0])
		return json_null();
	j = json_loads(s, 0, NULL);
	return j ? j : json_string(s);
}

static int audit_row(void *arg, const struct audit_entry *e)
{
	json_t *a = arg;

	return json_array_append_new(
		a, json_pack("{s:I, s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:o}", "seq",
			     (json_int_t)e->seq, "time", (json_int_t)e->time, "actor", e->actor,
			     "action", e->action, "target", e->target, "before",
			     state_json(e->before), "after", state_json(e->after), "prev_hash",
			     hash_json(e->prev_hash), "hash", hash_json(e->hash)));
}

static int audit_list(struct call *k)
{
	int r;

	k->out = json_array();
	r = store_audit_read(k->c.store, k->after, k->since, AUDIT_PAGE_MAX, audit_row, k->out);
	if (r < 0)
		return fail(k, 500, "cannot read the audit log: %s", strerror(-r));
	return 0;
}

static int audit_verify(struct call *k)
{
	struct audit_walk w;
	struct flows_verify fv;
	uint64_t anchor;
	int r = admin_op_audit_verify(&k->c, &w, &anchor);

	if (r < 0)
		return op_fail(k, r);
	r = flows_verify(k->c.store, &fv);
	if (r < 0)
		return fail(k, 500, "cannot read the flow logs: %s", strerror(-r));
	k->out = json_pack("{s:b, s:I, s:I, s:I, s:o, s:{s:b, s:I, s:I, s:I, s:I}}", "ok",
			   !w.bad && !fv.bad, "entries", (json_int_t)w.n, "anchor_seq",
			   (json_int_t)anchor, "last_seq", (json_int_t)(w.next_seq - 1), "head",
			   hash_json(w.prev), "flows", "ok", !fv.bad, "batches",
			   (json_int_t)fv.batches, "records", (json_int_t)fv.records, "nodes",
			   (json_int_t)fv.nodes, "anchors", (json_int_t)fv.anchors);
	/* The configuration log's problem first: the flow logs' is in "flows" either way. */
	if (fv.bad)
		json_object_set_new(json_object_get(k->out, "flows"), "problem",
				    json_string(fv.why));
	if (w.bad || fv.bad)
		json_object_set_new(k->out, "problem", json_string(w.bad ? w.why : fv.why));
	return 0;
}

/* ---- flow logs ---- */

static json_t *addr_json(const uint8_t a[16])
{
	static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
	char s[INET6_ADDRSTRLEN];

	if (!memcmp(a, mapped, sizeof(mapped)))
		inet_ntop(AF_INET, a + 12, s, sizeof(s));
	else
		inet_ntop(AF_INET6, a, s, sizeof(s));
	return json_string(s);
}

static json_t *flow_end_json(struct call *k, const struct store_flow_total *t)
{
	char pk[BASE64_ENCODED_LEN(FLOWBATCH_KEY_LEN) + 1];
	struct control_node n;

	base64_encode(pk, sizeof(pk), t->r.peer_key, FLOWBATCH_KEY_LEN);
	return json_pack("{s:I, s:s, s:o, s:i, s:o, s:i, s:b, s:s, s:I, s:I, s:I, s:I, s:I, s:I,"
			 " s:I}",
			 "node", (json_int_t)t->node_id, "name",
			 store_node_get(k->c.store, t->node_id, &n) == 0 ? n.name : "", "src",
			 addr_json(t->r.src), "src_port", t->r.src_port, "dst", addr_json(t->r.dst),
			 "dst_port", t->r.dst_port, "inbound",
			 (t->r.flags & FLOWBATCH_F_INBOUND) != 0, "peer_key", pk, "tx_packets",
			 (json_int_t)t->r.tx_packets, "tx_bytes", (json_int_t)t->r.tx_bytes,
			 "rx_packets", (json_int_t)t->r.rx_packets, "rx_bytes",
			 (json_int_t)t->r.rx_bytes, "first_ns", (json_int_t)t->r.first_ns,
			 "last_ns", (json_int_t)t->r.last_ns, "denied", (json_int_t)t->r.denied);
}

static int flow_row(void *arg, const struct flows_pairing *p)
{
	struct call *k = arg;
	json_t *j;

	if (k->flagged && !flows_verdict_flagged(p->verdict))
		return 0;
	j = json_pack("{s:s, s:b, s:i, s:i, s:o, s:o}", "verdict", flows_verdict_name(p->verdict),
		      "ambiguous", p->ambiguous, "proto", p->a->r.proto, "icmp_type",
		      p->a->r.icmp_type, "a", flow_end_json(k, p->a), "b",
		      p->b ? flow_end_json(k, p->b) : json_null());
	return j ? json_array_append_new(k->out, j) : -ENOMEM;
}

static int flows_list(struct call *k)
{
	uint64_t since_ns = 0;
	int r;

	if (k->since != INT64_MIN && k->since > 0)
		since_ns = (uint64_t)MIN(k->since, INT64_MAX / 1000000000) * 1000000000ULL;
	k->out = json_array();
	r = flows_query(k->c.store, k->node, since_ns, flow_row, k);
	if (r == -E2BIG)
		return fail(k, 413, "more than %d flows: narrow the query with since",
			    FLOWS_QUERY_MAX);
	if (r < 0)
		return fail(k, 500, "cannot read the flow logs: %s", strerror(-r));
	return 0;
}

static int audit_prune(struct call *k)
{
	static const char *const names[] = { "keep", NULL };
	uint64_t n;
	int64_t keep;
	int r;

	if (body_only(k, names) < 0 || body_duration(k, "keep", 0, &keep) < 0)
		return -1;
	if (keep <= 0)
		return fail(k, 400, "\"keep\" is needed: a duration above zero (30d)");
	r = admin_op_audit_prune(&k->c, keep, &n);
	if (r < 0)
		return op_fail(k, r);
	k->out = json_pack("{s:I}", "removed", (json_int_t)n);
	return 0;
}

/*
 * POST flows/prune {"tailnet": NAME?, "before": UNIX_SECONDS | "older_than": DURATION}: up to
 * ADMIN_FLOWS_PRUNE_CHUNKS chunks of the retention's size; "more": call again.
 */
static int flows_prune(struct call *k)
{
	static const char *const names[] = {"tailnet", "before", "older_than", NULL};
	json_t *b = k->body ? json_object_get(k->body, "before") : NULL;
	const char *tailnet;
	int64_t older = 0, before;
	uint64_t n = 0;
	bool more = false;
	int r;

	if (body_only(k, names) < 0 || body_string(k, "tailnet", &tailnet) < 0 ||
	    body_duration(k, "older_than", 0, &older) < 0)
		return -1;
	if (b && !json_is_integer(b))
		return fail(k, 400, "\"before\" must be Unix seconds");
	if (!b == !older || older < 0)
		return fail(k, 400,
			    "one of \"before\" (Unix seconds) or \"older_than\" (a "
			    "duration above zero, 30d) is needed");
	before = b ? (int64_t)json_integer_value(b) : k->c.now - older;
	r = admin_op_flows_prune(&k->c, tailnet, before, FLOWS_PRUNE_CHUNK,
				 ADMIN_FLOWS_PRUNE_CHUNKS, &n, &more);
	if (r < 0)
		return op_fail(k, r);
	k->out = json_pack("{s:I, s:I, s:b}", "removed", (json_int_t)n, "before",
			   (json_int_t)before, "more", more);
	return 0;
}

/*
 * An account with its second factor enrolled at creation: the one answer that carries a
 * secret, for the admin to hand to the person (the CLI shows it as a QR code).
 */
static int account_add_totp(struct call *k, const char *email, const char *hash, bool admin)
{
	struct users_enrolment *e = calloc(1, sizeof(*e));
	char secret[TOTP_SECRET_B32_MAX];
	json_t *codes;
	int r;

	if (!e)
		return fail(k, 500, "out of memory");
	r = users_account_add_totp(&k->c, email, hash, admin, e);
	if (r < 0) {
		crypto_wipe(e, sizeof(*e));
		free(e);
		return op_fail(k, r);
	}
	totp_base32_encode(e->secret, sizeof(e->secret), secret);
	codes = json_array();
	for (unsigned i = 0; i < CONTROL_RECOVERY_MAX; i++)
		json_array_append_new(codes, json_string(e->recovery[i]));
	k->status = 201;
	k->out = json_pack("{s:s, s:s, s:o}", "totp_secret", secret, "otpauth_uri", e->uri,
			   "recovery_codes", codes);
	crypto_wipe(secret, sizeof(secret));
	crypto_wipe(e, sizeof(*e));
	free(e);
	return 0;
}

/* Local accounts (users.h): never their hashes or secrets (but for account_add_totp's). */
static int accounts(struct call *k)
{
	static const char *const add_names[] = { "email", "password_hash", "admin", "totp", NULL };
	static const char *const pw_names[] = { "password_hash", NULL };
	static const char *const code_names[] = { "code", NULL };
	const char *code = NULL;
	const char *email = NULL, *hash = NULL;
	struct control_account *all = NULL;
	size_t n = 0;
	bool admin = false, totp = false;
	int r;

	if (is(k, "GET", 1, "accounts", NULL)) {
		r = users_account_list(&k->c, &all, &n);
		if (r < 0)
			return op_fail(k, r);
		k->out = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(
				k->out,
				/* totp: a second factor that counts (a pending one does not). */
				json_pack("{s:I, s:s, s:b, s:b, s:b, s:i, s:I}", "id",
					  (json_int_t)all[i].id, "email", all[i].email, "admin",
					  all[i].admin, "totp",
					  all[i].totp && !control_account_totp_pending(&all[i]),
					  "totp_pending", control_account_totp_pending(&all[i]),
					  "recovery_codes", (int)all[i].n_recovery, "created",
					  (json_int_t)all[i].created));
		crypto_wipe(all, n * sizeof(*all));
		free(all);
		return 0;
	}
	if (is(k, "POST", 1, "accounts", NULL)) {
		if (body_only(k, add_names) < 0 || body_string(k, "email", &email) < 0 ||
		    body_string(k, "password_hash", &hash) < 0 || body_bool(k, "admin", &admin) < 0 ||
		    body_bool(k, "totp", &totp) < 0)
			return -1;
		if (!email || !hash)
			return fail(k, 400, "\"email\" and \"password_hash\" are required");
		if (totp)
			return account_add_totp(k, email, hash, admin);
		r = users_account_add(&k->c, email, hash, admin, NULL);
		k->status = 201;
	} else if (is(k, "POST", 3, "accounts", "passwd")) {
		if (body_only(k, pw_names) < 0 || body_string(k, "password_hash", &hash) < 0)
			return -1;
		if (!hash)
			return fail(k, 400, "\"password_hash\" is required");
		r = users_account_passwd(&k->c, k->seg[1], hash);
	} else if (is(k, "POST", 3, "accounts", "confirm-2fa")) {
		if (body_only(k, code_names) < 0 || body_string(k, "code", &code) < 0)
			return -1;
		if (!code)
			return fail(k, 400, "\"code\" is required");
		r = users_account_totp_confirm(&k->c, k->seg[1], code);
	} else if (is(k, "POST", 3, "accounts", "reset-2fa")) {
		r = users_account_reset_2fa(&k->c, k->seg[1]);
	} else if (is(k, "DELETE", 2, "accounts", NULL) || is(k, "POST", 3, "accounts", "delete")) {
		r = users_account_delete(&k->c, k->seg[1]);
	} else {
		return fail(k, 404, "no such endpoint: %s %s", k->req->method, k->req->target);
	}
	if (r < 0)
		return op_fail(k, r);
	k->out = json_object();
	return 0;
}

/*
 * Machine certificates (ca.h): ca, ca/init, ca/rotate, ca/retire, ca/sign, ca/renew,
 * ca/revoke, ca[/WHICH]/crl, cas, certs.
 */
static json_t *ca_json(const struct control_ca *ca)
{
	char fp[65] = "", kid[MCERT_KEY_ID_MAX] = "";

	mcert_fingerprint(ca->cert, strlen(ca->cert), fp);
	mcert_key_id(ca->cert, strlen(ca->cert), kid);
	return json_pack("{s:I, s:s, s:s, s:s, s:I, s:I}", "id", (json_int_t)ca->id, "cert",
			 ca->cert, "sha256", fp, "key_id", kid, "created", (json_int_t)ca->created,
			 "retired_at", (json_int_t)ca->retired_at);
}

static json_t *mcert_json(const struct control_mcert *m, int64_t now)
{
	char mk[BASE64_ENCODED_LEN(NETMAP_KEY_LEN) + 1];

	base64_encode(mk, sizeof(mk), m->machine_key, NETMAP_KEY_LEN);
	return json_pack("{s:s, s:I, s:s, s:s, s:I, s:I, s:b, s:I, s:s, s:I, s:b}", "serial",
			 m->serial, "tailnet_id", (json_int_t)m->tailnet_id, "machine_key", mk,
			 "subject", m->subject, "not_before", (json_int_t)m->not_before,
			 "not_after", (json_int_t)m->not_after, "revoked", m->revoked, "revoked_at",
			 (json_int_t)m->revoked_at, "status",
			 m->revoked	       ? "revoked"
			 : m->not_after <= now ? "expired"
					       : "valid",
			 "ca_id", (json_int_t)m->ca_id, "renewable", m->has_pub && !m->revoked);
}

/*
 * The filters of `ca list` (revoked=1, expiring=SEC), here so that the table and --json show
 * the same certificates: revoked ones, or valid ones ending within SEC.
 */
static bool mcert_listed(const struct call *k, const struct control_mcert *m)
{
	int64_t now = k->req->now;

	if (k->revoked && !m->revoked)
		return false;
	return !k->expiring ||
	       (!m->revoked && m->not_after > now && m->not_after <= now + k->expiring);
}

static int ca_route(struct call *k)
{
	static const char *const init_names[] = {"validity", "cert", "key", NULL};
	static const char *const sign_names[] = {"csr", "validity", NULL};
	static const char *const revoke_names[] = {"serial", NULL};
	static const char *const renew_names[] = {"serial", "validity", NULL};
	static const char *const retire_names[] = {"ca", "force", NULL};
	struct control_ca *cas = NULL;
	unsigned stranded = 0;
	bool force = false;
	struct control_ca *ca = calloc(1, sizeof(*ca));
	struct control_mcert m, *all = NULL;
	const char *a = NULL, *b = NULL;
	char *pem = NULL;
	int64_t validity;
	unsigned expired = 0;
	size_t n = 0;
	int r = -1;

	if (!ca)
		return fail(k, 500, "out of memory");
	if (body_duration(k, "validity", 0, &validity) < 0)
		goto out;
	if (validity < 0) {
		fail(k, 400, "\"validity\" must be a duration (365d), not never");
		goto out;
	}
	if (is(k, "GET", 1, "ca", NULL)) {
		r = ca_op_get(&k->c, tailnet_arg(k), ca);
		if (r < 0)
			goto refused;
		k->out = ca_json(ca);
	} else if (is(k, "GET", 1, "cas", NULL)) {
		r = ca_op_cas(&k->c, tailnet_arg(k), &cas, &n);
		if (r < 0)
			goto refused;
		k->out = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(k->out, ca_json(&cas[i]));
	} else if ((is(k, "GET", 2, "ca", NULL) && !strcmp(k->seg[1], "crl")) ||
		   is(k, "GET", 3, "ca", "crl")) {
		r = ca_op_crl(&k->c, tailnet_arg(k), k->n_seg == 3 ? k->seg[1] : NULL, &pem);
		if (r < 0)
			goto refused;
		k->out = json_pack("{s:s}", "crl", pem);
	} else if (is(k, "POST", 2, "ca", NULL) && !strcmp(k->seg[1], "retire")) {
		if (body_only(k, retire_names) < 0 || body_string(k, "ca", &a) < 0 ||
		    body_bool(k, "force", &force) < 0)
			goto out;
		if (!a) {
			fail(k, 400, "\"ca\" is required");
			goto out;
		}
		r = ca_op_retire(&k->c, tailnet_arg(k), a, force, &stranded, &expired);
		if (r < 0)
			goto refused;
		k->out = json_pack("{s:i, s:i}", "stranded", (int)stranded, "nodes_expired",
				   (int)expired);
	} else if (is(k, "POST", 2, "ca", NULL) &&
		   (!strcmp(k->seg[1], "init") || !strcmp(k->seg[1], "rotate"))) {
		if (body_only(k, init_names) < 0 || body_string(k, "cert", &a) < 0 ||
		    body_string(k, "key", &b) < 0)
			goto out;
		/* A CA's private key crosses only the admin socket or stays in-process. */
		if (b && !k->req->apikeys) {
			fail(k, 403, "a CA is imported on the server's admin socket only");
			goto out;
		}
		r = (!strcmp(k->seg[1], "init") ? ca_op_init : ca_op_rotate)(
		    &k->c, tailnet_arg(k), validity, a, a ? strlen(a) : 0, b, b ? strlen(b) : 0, ca);
		if (r < 0)
			goto refused;
		k->status = 201;
		k->out = ca_json(ca);
	} else if (is(k, "POST", 2, "ca", NULL) &&
		   (!strcmp(k->seg[1], "sign") || !strcmp(k->seg[1], "renew"))) {
		/* renew: the same certificate again (its serial), as sign answers. */
		bool renew = !strcmp(k->seg[1], "renew");

		if (body_only(k, renew ? renew_names : sign_names) < 0 ||
		    body_string(k, renew ? "serial" : "csr", &a) < 0)
			goto out;
		if (!a) {
			fail(k, 400, "\"%s\" is required", renew ? "serial" : "csr");
			goto out;
		}
		pem = malloc(MCERT_PEM_MAX);
		r = !pem    ? -ENOMEM
		    : renew ? ca_op_renew(&k->c, tailnet_arg(k), a, validity, pem, MCERT_PEM_MAX, &m)
			    : ca_op_sign(&k->c, tailnet_arg(k), a, strlen(a), validity, pem,
					 MCERT_PEM_MAX, &m);
		if (r < 0)
			goto refused;
		k->status = 201;
		k->out = mcert_json(&m, k->req->now);
		json_object_set_new(k->out, "cert", json_string(pem));
	} else if (is(k, "POST", 2, "ca", NULL) && !strcmp(k->seg[1], "revoke")) {
		if (body_only(k, revoke_names) < 0 || body_string(k, "serial", &a) < 0)
			goto out;
		if (!a) {
			fail(k, 400, "\"serial\" is required");
			goto out;
		}
		r = ca_op_revoke(&k->c, tailnet_arg(k), a, &expired);
		if (r < 0)
			goto refused;
		k->out = json_pack("{s:i}", "nodes_expired", (int)expired);
	} else if (is(k, "GET", 1, "certs", NULL)) {
		r = ca_op_list(&k->c, tailnet_arg(k), &all, &n);
		if (r < 0)
			goto refused;
		k->out = json_array();
		for (size_t i = 0; i < n; i++)
			if (mcert_listed(k, &all[i]))
				json_array_append_new(k->out, mcert_json(&all[i], k->req->now));
	} else {
		fail(k, 404, "no such endpoint: %s %s", k->req->method, k->req->target);
		goto out;
	}
	r = 0;
	goto out;
refused:
	r = op_fail(k, r);
out:
	free(cas);
	free(all);
	free(pem);
	free(ca);
	return r;
}

/* tailnets/NAME/policy[/explain|/matrix] */
static int policy_route(struct call *k)
{
	const char *m = k->req->method, *t = k->seg[1];
	char *text = NULL;
	size_t len;
	int r;

	if (k->n_seg == 3 && !strcmp(m, "GET")) {
		r = admin_op_policy_get(&k->c, t, &text, &len);
		if (r < 0)
			return op_fail(k, r);
		k->out = json_pack("{s:s%}", "policy", text, len);
		free(text);
		return k->out ? 0 : fail(k, 500, "the stored policy is not UTF-8");
	}
	if (k->n_seg == 3 && (!strcmp(m, "PUT") || !strcmp(m, "DELETE"))) {
		const char *body = k->req->body ? k->req->body : "";

		if (!strcmp(m, "PUT") && !k->req->body_len)
			return fail(k, 400, "an empty policy (DELETE removes the policy)");
		r = admin_op_policy_set(&k->c, t, body, !strcmp(m, "PUT") ? k->req->body_len : 0);
		if (r < 0)
			return op_fail(k, r);
		k->out = json_object();
		return 0;
	}
	if (k->n_seg == 4 && !strcmp(m, "POST") && !strcmp(k->seg[3], "explain")) {
		static const char *const names[] = { "src", "dst", "port", "proto", NULL };
		const char *src, *dst, *proto;
		json_t *port = k->body ? json_object_get(k->body, "port") : NULL;
		char why[ADMIN_OP_ERR_MAX];
		int pr = 0;
		bool ok;

		if (body_only(k, names) < 0 || body_string(k, "src", &src) < 0 ||
		    body_string(k, "dst", &dst) < 0 || body_string(k, "proto", &proto) < 0)
			return -1;
		if (!src || !dst)
			return fail(k, 400, "explain needs \"src\" and \"dst\"");
		if (port && (!json_is_integer(port) || json_integer_value(port) < 0 ||
			     json_integer_value(port) > 65535))
			return fail(k, 400, "\"port\" must be 0-65535");
		if (proto && (pr = policy_proto_parse(proto)) < 0)
			return fail(k, 400, "unknown protocol \"%s\"", proto);
		r = admin_op_policy_explain(&k->c, t, src, dst,
					    port ? (int)json_integer_value(port) : -1, (unsigned)pr,
					    &ok, why, sizeof(why));
		if (r < 0)
			return op_fail(k, r);
		k->out = json_pack("{s:b, s:s}", "allowed", ok, "why", why);
		return 0;
	}
	if (k->n_seg == 4 && !strcmp(m, "GET") && !strcmp(k->seg[3], "matrix")) {
		struct admin_op_reach *e = NULL;
		size_t n = 0;

		r = admin_op_policy_matrix(&k->c, t, &e, &n);
		if (r < 0)
			return op_fail(k, r);
		k->out = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(k->out, json_pack("{s:s, s:s, s:s}", "src", e[i].src,
								"dst", e[i].dst, "allow",
								e[i].allow));
		free(e);
		return 0;
	}
	return fail(k, 404, "no such endpoint: %s %s", m, k->req->target);
}

static int route(struct call *k)
{
	const char *m = k->req->method;
	const char *s0 = k->n_seg ? k->seg[0] : "";

	if (!k->n_seg)
		return fail(k, 404, "no such endpoint");
	if (is(k, "GET", 1, "tailnets", NULL))
		return tailnets_list(k);
	if (is(k, "POST", 1, "tailnets", NULL))
		return tailnets_create(k);
	if (is(k, "PATCH", 2, "tailnets", NULL))
		return tailnets_set(k);
	if (k->n_seg >= 3 && !strcmp(s0, "tailnets") && !strcmp(k->seg[2], "policy"))
		return policy_route(k);
	if (is(k, "GET", 1, "users", NULL))
		return users_list(k);
	if (is(k, "POST", 1, "users", NULL))
		return users_create(k);
	if (strcmp(s0, "accounts") == 0)
		return accounts(k);
	if (strcmp(s0, "ca") == 0 || strcmp(s0, "cas") == 0 || strcmp(s0, "certs") == 0)
		return ca_route(k);
	if (is(k, "GET", 1, "nodes", NULL))
		return nodes_list(k, NULL);
	if (is(k, "GET", 2, "nodes", NULL))
		return nodes_list(k, k->seg[1]);
	if (is(k, "DELETE", 2, "nodes", NULL) || is(k, "POST", 3, "nodes", NULL))
		return nodes_act(k);
	if (is(k, "GET", 1, "authkeys", NULL))
		return authkeys_list(k);
	if (is(k, "POST", 1, "authkeys", NULL))
		return authkeys_create(k);
	if (is(k, "DELETE", 2, "authkeys", NULL) || is(k, "POST", 3, "authkeys", "revoke")) {
		int r = admin_op_authkey_revoke(&k->c, k->seg[1]);

		if (r < 0)
			return op_fail(k, r);
		k->out = json_object();
		return 0;
	}
	if (is(k, "GET", 1, "pending", NULL))
		return pending_list(k);
	if (is(k, "GET", 1, "relaymap", NULL))
		return relaymap_get(k);
	if (is(k, "PUT", 1, "relaymap", NULL) || is(k, "DELETE", 1, "relaymap", NULL)) {
		int r = strcmp(m, "PUT") == 0
				? admin_op_relaymap_set(&k->c, k->req->body ? k->req->body : "",
							k->req->body_len)
				: admin_op_relaymap_reset(&k->c);

		if (r < 0)
			return op_fail(k, r);
		k->out = json_object();
		return 0;
	}
	if (is(k, "GET", 1, "audit", NULL))
		return audit_list(k);
	if (is(k, "GET", 1, "flows", NULL))
		return flows_list(k);
	if (is(k, "GET", 2, "audit", NULL) && strcmp(k->seg[1], "verify") == 0)
		return audit_verify(k);
	/* Pruning removes history: root on the socket only, like API keys. */
	if (is(k, "POST", 2, "audit", NULL) && strcmp(k->seg[1], "prune") == 0) {
		if (!k->req->apikeys)
			return fail(k, 403, "the audit log is pruned on the server's admin "
					    "socket only");
		return audit_prune(k);
	}
	if (is(k, "POST", 2, "flows", NULL) && strcmp(k->seg[1], "prune") == 0) {
		if (!k->req->apikeys)
			return fail(k, 403,
				    "flow logs are pruned on the server's admin socket only");
		return flows_prune(k);
	}
	if (strcmp(s0, "apikeys") == 0 && !k->req->apikeys)
		return fail(k, 403, "API keys are managed on the server's admin socket only");
	if (is(k, "GET", 1, "apikeys", NULL))
		return apikeys_list(k);
	if (is(k, "POST", 1, "apikeys", NULL))
		return apikeys_create(k);
	if (is(k, "DELETE", 2, "apikeys", NULL) || is(k, "POST", 3, "apikeys", "revoke")) {
		int r = admin_op_apikey_revoke(&k->c, k->seg[1]);

		if (r < 0)
			return op_fail(k, r);
		k->out = json_object();
		return 0;
	}
	return fail(k, 404, "no such endpoint: %s %s", m, k->req->target);
}

unsigned admin_api_handle(const struct admin_api_env *env, const struct admin_api_request *req,
			  char **ret_body, size_t *ret_len)
{
	static const char oom[] = "{\"error\":\"out of memory\"}";
	struct call k = {
	    .env = env,
	    .req = req,
	    .status = 200,
	    .since = INT64_MIN,
	    .c =
		{
		    .store = env->store,
		    .state_dir = env->state_dir,
		    .public_url = env->public_url,
		    .actor = req->actor,
		    .now = req->now,
		    .committed = env->committed,
		    .relogin_code = env->relogin_code,
		    .arg = env->arg,
		},
	};
	char path[512];
	char *text;

	if (target_parse(&k, path, sizeof(path)) < 0)
		goto out;
	/* Only a policy may be larger than ADMIN_API_BODY_MAX (the route admits up to its cap). */
	if (req->body_len > ADMIN_API_BODY_MAX &&
	    !(strcmp(req->method, "PUT") == 0 && k.n_seg == 3 && !strcmp(k.seg[0], "tailnets") &&
	      !strcmp(k.seg[2], "policy"))) {
		fail(&k, 413, "request body over %u bytes", ADMIN_API_BODY_MAX);
		goto out;
	}
	/* The relay map's body is its own text, checked by admin_op with line and column. */
	if (req->body_len && strcmp(req->method, "PUT") != 0) {
		json_error_t e;

		k.body = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &e);
		if (!json_is_object(k.body)) {
			fail(&k, 400, "request body: %s", k.body ? "not a JSON object" : e.text);
			goto out;
		}
	}
	route(&k);
out:
	text = k.out ? json_dumps(k.out, JSON_COMPACT) : NULL;
	json_decref(k.out);
	json_decref(k.body);
	if (!text) {
		text = strdup(oom);
		k.status = 500;
	}
	*ret_body = text;
	*ret_len = text ? strlen(text) : 0;
	return text ? k.status : 500;
}
