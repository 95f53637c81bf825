/* SPDX-License-Identifier: MIT */
/*
 * The admin API (control/admin_api.c) on a real store in a temporary
 * directory, as the offline CLI runs it: each endpoint's answer and status,
 * bad requests named, auth keys owned by users with the default expiry, admin
 * API keys (created, checked, revoked, capped, the socket's only), and every
 * write seen by the commit hook with its actor.
 */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/admin_api.h"
#include "control/admin_op.h"
#include "control/apikey.h"
#include "control/store.h"

#define T0 1800000000LL

struct env {
	char dir[64];
	struct store *st;
	struct admin_api_env api;
	unsigned commits;
	char last_actor[64];
	bool apikeys;
	int64_t now;
	json_t *ans;
};

static struct env E;

static void committed(void *arg, const char *actor, const struct store_op *op, uint64_t id)
{
	(void)arg;
	(void)op;
	(void)id;
	E.commits++;
	snprintf(E.last_actor, sizeof(E.last_actor), "%s", actor);
}

static int setup(void **state)
{
	char path[128];

	(void)state;
	memset(&E, 0, sizeof(E));
	strcpy(E.dir, "/tmp/trellis-adminapi-XXXXXX");
	assert_non_null(mkdtemp(E.dir));
	snprintf(path, sizeof(path), "%s/%s", E.dir, STORE_DB_NAME);
	assert_int_equal(store_open(path, &E.st), 0);
	E.api.store = E.st;
	E.api.committed = committed;
	E.apikeys = true;
	E.now = T0;
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	json_decref(E.ans);
	store_free(E.st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", E.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	return 0;
}

/* One request; its answer parsed into E.ans. Returns the status. */
static unsigned req(const char *method, const char *target, const char *body)
{
	struct admin_api_request r = {
		.method = method,
		.target = target,
		.body = body,
		.body_len = body ? strlen(body) : 0,
		.actor = "test:admin",
		.apikeys = E.apikeys,
		.now = E.now,
	};
	char *out = NULL;
	size_t len = 0;
	unsigned st = admin_api_handle(&E.api, &r, &out, &len);

	assert_non_null(out);
	json_decref(E.ans);
	E.ans = json_loadb(out, len, 0, NULL);
	assert_non_null(E.ans); /* every answer is JSON */
	free(out);
	return st;
}

static const char *err(void)
{
	const char *e = json_string_value(json_object_get(E.ans, "error"));

	return e ? e : "(no error)";
}

static const char *str(json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	assert_non_null(v);
	return v;
}

static json_int_t num(json_t *o, const char *k)
{
	assert_true(json_is_integer(json_object_get(o, k)));
	return json_integer_value(json_object_get(o, k));
}

static void test_bad_requests(void **state)
{
	(void)state;
	assert_int_equal(req("GET", "/admin/v1/frob", NULL), 404);
	assert_int_equal(req("GET", "/admin/v1/", NULL), 404);
	assert_int_equal(req("PATCH", "/admin/v1/nodes", NULL), 404);
	assert_int_equal(req("GET", "/other", NULL), 404);
	/* Waiting registrations are the running server's: offline, a clear refusal. */
	assert_int_equal(req("GET", "/admin/v1/pending", NULL), 409);
	assert_non_null(strstr(err(), "running server's memory only"));
	assert_int_equal(req("GET", "/admin/v1/nodes?colour=red", NULL), 400);
	assert_string_equal(err(), "unknown query parameter \"colour=red\"");
	assert_int_equal(req("GET", "/admin/v1/nodes/%zz", NULL), 400);
	assert_int_equal(req("GET", "/admin/v1/nodes/a%00b", NULL), 400);
	assert_int_equal(req("POST", "/admin/v1/users", "{\"name\":"), 400);
	assert_non_null(strstr(err(), "request body: "));
	assert_int_equal(req("POST", "/admin/v1/users", "[1]"), 400);
	assert_string_equal(err(), "request body: not a JSON object");
	assert_int_equal(req("POST", "/admin/v1/users", "{\"name\":\"a\",\"colour\":1}"), 400);
	assert_string_equal(err(), "unknown field \"colour\"");
	assert_int_equal(req("POST", "/admin/v1/users", "{\"name\":7}"), 400);
	assert_string_equal(err(), "\"name\" must be a string");
	assert_int_equal(req("POST", "/admin/v1/users", "{}"), 400);
	assert_string_equal(err(), "\"name\" is required");
	assert_int_equal(req("GET", "/admin/v1/nodes?tailnet=nope", NULL), 404);
	assert_string_equal(err(), "unknown tailnet \"nope\"");
	assert_int_equal(E.commits, 0);
}

static void test_tailnets_users(void **state)
{
	(void)state;
	assert_int_equal(req("POST", "/admin/v1/tailnets",
			     "{\"name\":\"corp\",\"key_expiry\":\"30d\",\"ephemeral_timeout\":\"90s\"}"),
			 201);
	assert_string_equal(E.last_actor, "test:admin");
	assert_int_equal(req("POST", "/admin/v1/tailnets", "{\"name\":\"corp\"}"), 409);
	assert_string_equal(err(), "tailnet \"corp\" already exists");
	assert_int_equal(req("POST", "/admin/v1/tailnets", "{\"name\":\"x\",\"key_expiry\":\"5x\"}"),
			 400);
	assert_int_equal(req("GET", "/admin/v1/tailnets", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 1);
	assert_int_equal(num(json_array_get(E.ans, 0), "key_expiry_sec"), 30 * 86400);
	assert_false(json_is_true(json_object_get(json_array_get(E.ans, 0), "device_approval")));
	/* PATCH changes the members given, keeps the others, and names mistakes. */
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp", "{\"device_approval\":true}"),
			 200);
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp", "{\"device_approval\":\"on\"}"),
			 400);
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp", "{\"frob\":1}"), 400);
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/nope", "{\"device_approval\":true}"),
			 404);
	/* "default" is the default tailnet, made on first use like a join makes it. */
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/default", "{\"device_approval\":true}"),
			 200);
	assert_int_equal(req("GET", "/admin/v1/tailnets", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 2);
	assert_true(json_is_true(json_object_get(json_array_get(E.ans, 0), "device_approval")));
	assert_true(json_is_true(json_object_get(json_array_get(E.ans, 1), "device_approval")));
	assert_int_equal(num(json_array_get(E.ans, 0), "key_expiry_sec"), 30 * 86400);
	assert_int_equal(num(json_array_get(E.ans, 0), "ephemeral_timeout_sec"), 90);
	assert_int_equal(req("POST", "/admin/v1/users", "{\"name\":\"alice@example.com\","
							 "\"tailnet\":\"corp\"}"),
			 201);
	assert_int_equal(req("GET", "/admin/v1/users?tailnet=corp", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 1);
	assert_string_equal(str(json_array_get(E.ans, 0), "name"), "alice@example.com");
	/* The query is percent-decoded: an '@' a client escaped is still an '@'. */
	assert_int_equal(req("GET", "/admin/v1/users?tailnet=c%6Frp", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 1);
}

static void test_authkeys(void **state)
{
	json_t *k;
	unsigned st;

	(void)state;
	req("POST", "/admin/v1/tailnets", "{\"name\":\"corp\"}");
	req("POST", "/admin/v1/users", "{\"name\":\"bob\",\"tailnet\":\"corp\"}");
	/* Owned by a user, with the default expiry of 90 days. */
	assert_int_equal(req("POST", "/admin/v1/authkeys",
			     "{\"tailnet\":\"corp\",\"user\":\"bob\",\"reusable\":true,"
			     "\"tags\":[\"tag:ci\"]}"),
			 201);
	assert_int_equal(strncmp(str(E.ans, "key"), "trellis-auth-", 13), 0);
	assert_int_equal(num(E.ans, "expires"), T0 + ADMIN_AUTHKEY_EXPIRY_DEFAULT_SEC);
	assert_int_equal(ADMIN_AUTHKEY_EXPIRY_DEFAULT_SEC, 90 * 86400);
	assert_int_equal(req("POST", "/admin/v1/authkeys", "{\"expiration\":\"2h\"}"), 201);
	assert_int_equal(num(E.ans, "expires"), T0 + 7200);
	assert_int_equal(req("POST", "/admin/v1/authkeys", "{\"expiration\":\"never\"}"), 201);
	assert_int_equal(num(E.ans, "expires"), 0);
	/* An owner that does not exist, a bad tag, a flag that is not a bool. */
	assert_int_equal(req("POST", "/admin/v1/authkeys", "{\"tailnet\":\"corp\",\"user\":\"eve\"}"),
			 404);
	assert_string_equal(err(), "unknown user \"eve\" in tailnet \"corp\"");
	assert_int_equal(req("POST", "/admin/v1/authkeys", "{\"tags\":[\"web\"]}"), 400);
	assert_string_equal(err(), "bad tag \"web\": tags look like tag:name");
	assert_int_equal(req("POST", "/admin/v1/authkeys", "{\"reusable\":\"yes\"}"), 400);
	assert_string_equal(err(), "\"reusable\" must be true or false");
	/* The list shows owner, flags, expiry, uses and status, never the secret. */
	assert_int_equal(req("GET", "/admin/v1/authkeys?tailnet=corp", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 1);
	k = json_array_get(E.ans, 0);
	assert_string_equal(str(k, "user"), "bob");
	assert_true(json_is_true(json_object_get(k, "reusable")));
	assert_int_equal(num(k, "uses"), 0);
	assert_int_equal(num(k, "expires"), T0 + 90 * 86400);
	assert_string_equal(str(k, "status"), "valid");
	assert_string_equal(json_string_value(json_array_get(json_object_get(k, "tags"), 0)), "tag:ci");
	{
		char target[128];

		snprintf(target, sizeof(target), "/admin/v1/authkeys/%s/revoke", str(k, "id"));
		assert_int_equal(req("POST", target, NULL), 200);
	}
	assert_int_equal(req("GET", "/admin/v1/authkeys?tailnet=corp", NULL), 200);
	assert_string_equal(str(json_array_get(E.ans, 0), "status"), "revoked");
	st = req("DELETE", "/admin/v1/authkeys/0123456789ab", NULL);
	assert_int_equal(st, 404);
	assert_string_equal(err(), "unknown auth key \"0123456789ab\"");
	/* Expired, 90 days on. */
	E.now = T0 + 90 * 86400;
	assert_int_equal(req("GET", "/admin/v1/authkeys", NULL), 200);
	assert_string_equal(str(json_array_get(E.ans, 1), "status"), "expired");
}

static uint64_t node_add(const char *name, uint8_t seed)
{
	struct control_tailnet t;
	struct control_node n = { .created = T0 };

	assert_int_equal(store_tailnet_get_by_name(E.st, "default", &t), 0);
	n.tailnet_id = t.id;
	snprintf(n.name, sizeof(n.name), "%s", name);
	snprintf(n.hostname, sizeof(n.hostname), "%s", name);
	memset(n.machine_key, seed, 32);
	memset(n.node_key, seed + 1, 32);
	n.ipv4[0] = 100;
	n.ipv4[1] = 64;
	n.ipv4[3] = seed;
	assert_int_equal(store_node_insert(E.st, &n), 0);
	return n.id;
}

static int online(void *arg, uint64_t id)
{
	(void)arg;
	return id == 1;
}

static void test_nodes(void **state)
{
	(void)state;
	assert_int_equal(req("GET", "/admin/v1/nodes", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 0);
	/* A user in the default tailnet makes the tailnet. */
	assert_int_equal(req("POST", "/admin/v1/users", "{\"name\":\"u\"}"), 201);
	assert_int_equal(node_add("web", 1), 1);
	assert_int_equal(node_add("db", 2), 2);
	assert_int_equal(req("GET", "/admin/v1/nodes/web", NULL), 200);
	assert_string_equal(str(E.ans, "state"), "pending");
	assert_string_equal(str(E.ans, "ipv4"), "100.64.0.1");
	/* Offline, no one knows who is connected: no "online" at all. */
	assert_null(json_object_get(E.ans, "online"));
	E.api.node_online = online;
	assert_int_equal(req("GET", "/admin/v1/nodes", NULL), 200);
	assert_true(json_is_true(json_object_get(json_array_get(E.ans, 0), "online")));
	assert_true(json_is_false(json_object_get(json_array_get(E.ans, 1), "online")));
	E.api.node_online = NULL;

	assert_int_equal(req("POST", "/admin/v1/nodes/web/approve", NULL), 200);
	assert_int_equal(req("GET", "/admin/v1/nodes/1", NULL), 200);
	assert_string_equal(str(E.ans, "state"), "active");
	assert_int_equal(req("POST", "/admin/v1/nodes/1/rename", "{\"name\":\"www\"}"), 200);
	assert_int_equal(req("POST", "/admin/v1/nodes/2/rename", "{\"name\":\"www\"}"), 409);
	assert_string_equal(err(), "name \"www\" is already taken in this tailnet");
	assert_int_equal(req("POST", "/admin/v1/nodes/www/expiry", "{\"enabled\":false}"), 200);
	assert_int_equal(req("GET", "/admin/v1/nodes/www", NULL), 200);
	assert_true(json_is_true(json_object_get(E.ans, "expiry_disabled")));
	assert_int_equal(req("POST", "/admin/v1/nodes/www/expiry", NULL), 400);
	assert_int_equal(req("POST", "/admin/v1/nodes/www/expire", NULL), 200);
	assert_int_equal(req("GET", "/admin/v1/nodes/www", NULL), 200);
	assert_string_equal(str(E.ans, "state"), "expired");
	assert_int_equal(req("POST", "/admin/v1/nodes/www/frob", NULL), 404);
	assert_int_equal(req("DELETE", "/admin/v1/nodes/www", NULL), 200);
	assert_int_equal(req("GET", "/admin/v1/nodes/www", NULL), 404);
	assert_string_equal(err(), "unknown node \"www\"");
	assert_int_equal(req("POST", "/admin/v1/nodes/4242/approve", NULL), 404);
	assert_string_equal(err(), "unknown node 4242");
	assert_int_equal(req("GET", "/admin/v1/nodes", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 1);
}

static void test_relaymap(void **state)
{
	(void)state;
	assert_int_equal(req("GET", "/admin/v1/relaymap", NULL), 200);
	assert_true(json_is_true(json_object_get(E.ans, "default")));
	assert_int_equal(req("PUT", "/admin/v1/relaymap", "{\"regions\": []}"), 200);
	assert_int_equal(req("GET", "/admin/v1/relaymap", NULL), 200);
	assert_true(json_is_false(json_object_get(E.ans, "default")));
	assert_int_equal(json_array_size(json_object_get(json_object_get(E.ans, "map"), "regions")),
			 0);
	assert_int_equal(req("PUT", "/admin/v1/relaymap", "{\"regions\": 5}"), 400);
	assert_int_equal(req("DELETE", "/admin/v1/relaymap", NULL), 200);
	assert_int_equal(req("GET", "/admin/v1/relaymap", NULL), 200);
	assert_true(json_is_true(json_object_get(E.ans, "default")));
}

/* The entry's before or after member `key`. */
static json_t *entry_member(size_t i, const char *side, const char *key)
{
	return json_object_get(json_object_get(json_array_get(E.ans, i), side), key);
}

/*
 * Flow-log settings in the audit log: a PATCH of flags only has them in before and after;
 * one that changes nothing writes no entry; a bad retention is refused.
 */
static void test_audit_flow_settings(void **state)
{
	(void)state;
	assert_int_equal(req("POST", "/admin/v1/tailnets", "{\"name\":\"corp\"}"), 201);
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp",
			     "{\"flow_log\":false, \"flow_retention\":\"30d\"}"),
			 200);
	assert_int_equal(req("GET", "/admin/v1/audit", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 2);
	assert_string_equal(str(json_array_get(E.ans, 1), "action"), "tailnet.set");
	assert_true(json_is_true(entry_member(1, "before", "flow_log")));
	assert_true(json_is_false(entry_member(1, "after", "flow_log")));
	assert_int_equal(json_integer_value(entry_member(1, "before", "flow_retention_sec")), 0);
	assert_int_equal(json_integer_value(entry_member(1, "after", "flow_retention_sec")),
			 30 * 86400);
	/* The same again, and flags already so: no change, no entry. */
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp",
			     "{\"flow_log\":false, \"flow_retention\":\"30d\"}"),
			 200);
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp", "{\"device_approval\":false}"),
			 200);
	assert_int_equal(req("GET", "/admin/v1/audit", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 2);
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp", "{\"flow_retention\":\"5x\"}"),
			 400);
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp", "{\"flow_retention\":\"0\"}"),
			 200);
	assert_int_equal(req("GET", "/admin/v1/tailnets", NULL), 200);
	assert_int_equal(num(json_array_get(E.ans, 0), "flow_retention_sec"), 0);
	assert_int_equal(req("GET", "/admin/v1/audit", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 3);
	assert_int_equal(json_integer_value(entry_member(2, "after", "flow_retention_sec")), 0);
}

/* The audit log over the API: entries with the request's actor, pages, verify, prune. */
static void test_audit(void **state)
{
	(void)state;
	assert_int_equal(req("POST", "/admin/v1/tailnets", "{\"name\":\"corp\"}"), 201);
	E.now = T0 + 100;
	assert_int_equal(req("PATCH", "/admin/v1/tailnets/corp", "{\"device_approval\":true}"),
			 200);
	assert_int_equal(req("PUT", "/admin/v1/relaymap", "{\"regions\": []}"), 200);
	assert_int_equal(req("GET", "/admin/v1/audit", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 3);
	assert_string_equal(str(json_array_get(E.ans, 0), "actor"), "test:admin");
	assert_string_equal(str(json_array_get(E.ans, 1), "action"), "tailnet.set");
	assert_true(json_is_false(
		json_object_get(json_object_get(json_array_get(E.ans, 1), "before"),
				"device_approval")));
	assert_true(json_is_true(json_object_get(
		json_object_get(json_array_get(E.ans, 1), "after"), "device_approval")));
	assert_string_equal(str(json_array_get(E.ans, 2), "target"), "relaymap");
	assert_int_equal(req("GET", "/admin/v1/audit?since=1800000050", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 2);
	assert_int_equal(req("GET", "/admin/v1/audit?after=2", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 1);
	assert_int_equal(num(json_array_get(E.ans, 0), "seq"), 3);
	assert_int_equal(req("GET", "/admin/v1/audit?since=soon", NULL), 400);
	assert_int_equal(req("GET", "/admin/v1/audit?after=-1", NULL), 400);
	assert_int_equal(req("GET", "/admin/v1/audit/verify", NULL), 200);
	assert_true(json_is_true(json_object_get(E.ans, "ok")));
	assert_int_equal(num(E.ans, "entries"), 3);
	/* Pruning history is for root on the socket. */
	E.apikeys = false;
	assert_int_equal(req("POST", "/admin/v1/audit/prune", "{\"keep\":\"1d\"}"), 403);
	E.apikeys = true;
	assert_int_equal(req("POST", "/admin/v1/audit/prune", "{}"), 400);
	assert_int_equal(req("POST", "/admin/v1/audit/prune", "{\"keep\":\"1d\", \"x\":1}"),
			 400);
	E.now = T0 + 2 * 86400;
	assert_int_equal(req("POST", "/admin/v1/audit/prune", "{\"keep\":\"1d\"}"), 200);
	assert_int_equal(num(E.ans, "removed"), 3);
	assert_int_equal(req("GET", "/admin/v1/audit/verify", NULL), 200);
	assert_true(json_is_true(json_object_get(E.ans, "ok")));
	assert_int_equal(num(E.ans, "anchor_seq"), 3);
	assert_int_equal(num(E.ans, "last_seq"), 4);
}

/* ca list's filters: certs?revoked=1 and certs?expiring=SEC, the same for table and --json. */
static void mcert_put(uint64_t tid, const char *serial, int64_t not_after, bool revoked)
{
	struct store_op op = { .kind = STORE_OP_MCERT_PUT };

	op.mcert.tailnet_id = tid;
	snprintf(op.mcert.serial, sizeof(op.mcert.serial), "%s", serial);
	op.mcert.not_before = T0 - 86400;
	op.mcert.not_after = not_after;
	op.mcert.created = T0 - 86400;
	op.mcert.revoked = revoked;
	op.mcert.revoked_at = revoked ? T0 - 60 : 0;
	assert_int_equal(store_write(E.st, &op, NULL), 0);
}

/* The serials of the listing in E.ans, in order, space-separated. */
static const char *serials(void)
{
	static char buf[256];
	json_t *e;
	size_t i;

	buf[0] = '\0';
	assert_true(json_is_array(E.ans));
	json_array_foreach(E.ans, i, e)
	{
		strcat(buf, buf[0] ? " " : "");
		strcat(buf, str(e, "serial"));
	}
	return buf;
}

static void test_certs_filters(void **state)
{
	struct admin_op_ctx c = { .store = E.st, .actor = "test", .now = T0 };
	struct control_tailnet t;

	(void)state;
	assert_int_equal(admin_op_tailnet_resolve(&c, NULL, &t), 0);
	mcert_put(t.id, "a1", T0 + 10 * 86400, false);	/* valid, ends in 10 days */
	mcert_put(t.id, "b2", T0 + 100 * 86400, false); /* valid, ends in 100 days */
	mcert_put(t.id, "c3", T0 + 5 * 86400, true);	/* revoked, would end in 5 days */
	mcert_put(t.id, "d4", T0 - 86400, false);	/* expired */
	assert_int_equal(req("GET", "/admin/v1/certs", NULL), 200);
	assert_string_equal(serials(), "a1 b2 c3 d4");
	assert_int_equal(req("GET", "/admin/v1/certs?revoked=1", NULL), 200);
	assert_string_equal(serials(), "c3");
	assert_string_equal(str(json_array_get(E.ans, 0), "status"), "revoked");
	/* Valid ones ending within 30 days: neither the revoked nor the expired one. */
	assert_int_equal(req("GET", "/admin/v1/certs?expiring=2592000", NULL), 200);
	assert_string_equal(serials(), "a1");
	assert_int_equal(req("GET", "/admin/v1/certs?tailnet=default&expiring=8640000", NULL),
			 200);
	assert_string_equal(serials(), "a1 b2");
	/* The end itself is within. */
	assert_int_equal(req("GET", "/admin/v1/certs?expiring=864000", NULL), 200);
	assert_string_equal(serials(), "a1");
	assert_int_equal(req("GET", "/admin/v1/certs?revoked=1&expiring=8640000", NULL), 200);
	assert_string_equal(serials(), "");
	assert_int_equal(req("GET", "/admin/v1/certs?revoked=0", NULL), 200);
	assert_string_equal(serials(), "a1 b2 c3 d4");
	assert_int_equal(req("GET", "/admin/v1/certs?revoked=2", NULL), 400);
	assert_string_equal(err(), "revoked takes 0 or 1");
	assert_int_equal(req("GET", "/admin/v1/certs?expiring=0", NULL), 400);
	assert_string_equal(err(), "expiring takes seconds (1 or more)");
	assert_int_equal(req("GET", "/admin/v1/certs?expiring=30d", NULL), 400);
}

static void test_apikeys(void **state)
{
	char key[APIKEY_STR_MAX], target[128];
	struct apikey_set set;
	struct admin_op_ctx c = { 0 };
	char *text;
	size_t len;
	int i;

	(void)state;
	c.store = E.st;
	/* Not over the HTTP port, whatever the key. */
	E.apikeys = false;
	assert_int_equal(req("GET", "/admin/v1/apikeys", NULL), 403);
	assert_int_equal(req("POST", "/admin/v1/apikeys", "{}"), 403);
	E.apikeys = true;
	assert_int_equal(req("POST", "/admin/v1/apikeys", "{\"name\":\"ci\"}"), 201);
	snprintf(key, sizeof(key), "%s", str(E.ans, "key"));
	assert_int_equal(num(E.ans, "expires"), T0 + 90 * 86400);
	/* Stored hashed: the setting holds neither the key nor its secret. */
	text = calloc(1, STORE_SETTING_VALUE_MAX + 1);
	assert_non_null(text);
	assert_true(store_setting_get(E.st, APIKEY_SETTING, text, STORE_SETTING_VALUE_MAX) > 0);
	assert_null(strstr(text, strrchr(key, '-') + 1));
	free(text);
	assert_int_equal(admin_op_apikey_list(&c, &set), 0);
	assert_non_null(apikey_check(&set, key, T0));
	assert_null(apikey_check(&set, key, T0 + 90 * 86400)); /* expired */
	key[strlen(key) - 1] ^= 1;
	assert_null(apikey_check(&set, key, T0)); /* wrong secret */
	key[strlen(key) - 1] ^= 1;
	assert_null(apikey_check(&set, "trellis-api-nonsense", T0));
	assert_int_equal(req("GET", "/admin/v1/apikeys", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 1);
	assert_string_equal(str(json_array_get(E.ans, 0), "name"), "ci");
	assert_null(json_object_get(json_array_get(E.ans, 0), "hash"));
	snprintf(target, sizeof(target), "/admin/v1/apikeys/%.24s/revoke", key);
	assert_int_equal(req("POST", target, NULL), 200);
	assert_int_equal(admin_op_apikey_list(&c, &set), 0);
	assert_null(apikey_check(&set, key, T0));
	assert_int_equal(req("POST", "/admin/v1/apikeys/0123456789ab/revoke", NULL), 404);
	/* At most APIKEY_MAX live keys; a revoked one made room. */
	for (i = 0; i < APIKEY_MAX; i++)
		assert_int_equal(req("POST", "/admin/v1/apikeys", "{\"expiration\":\"1d\"}"), 201);
	assert_int_equal(req("POST", "/admin/v1/apikeys", "{}"), 409);
	assert_string_equal(err(), "at most 16 API keys; revoke one first");
	/* A day on, they have expired and make room. */
	E.now = T0 + 86400;
	assert_int_equal(req("POST", "/admin/v1/apikeys", "{\"expiration\":\"never\"}"), 201);
	assert_int_equal(num(E.ans, "expires"), 0);
	assert_int_equal(req("GET", "/admin/v1/apikeys", NULL), 200);
	assert_int_equal(json_array_size(E.ans), 1);
	/* The stored text round-trips; garbage is refused, not misread. */
	assert_int_equal(admin_op_apikey_list(&c, &set), 0);
	text = apikey_set_encode(&set, &len);
	assert_non_null(text);
	assert_int_equal(apikey_set_decode(text, len, &set), 0);
	assert_int_equal(set.n, 1);
	free(text);
	assert_int_equal(apikey_set_decode("[{\"id\":1}]", 10, &set), -EINVAL);
	assert_int_equal(apikey_set_decode("{", 1, &set), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tailnets_users, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_authkeys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_nodes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_relaymap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_apikeys, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_certs_filters, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_audit_flow_settings, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
