/* SPDX-License-Identifier: MIT */
/*
 * Admin operations (control/admin_op.c) on a real store in a temporary
 * directory: what each writes, the refusals and their messages, and that
 * every write passes the audit hook with its actor.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/admin_op.h"
#include "control/authkey.h"
#include "control/store.h"

#define T0 1800000000LL

struct seen {
	char actor[32];
	enum store_op_kind kind;
	uint64_t id;
};

struct env {
	char dir[64];
	struct store *st;
	struct admin_op_ctx c;
	struct seen seen[64];
	size_t n_seen;
};

static struct env E;

static void committed(void *arg, const char *actor, const struct store_op *op, uint64_t id)
{
	struct env *e = arg;

	assert_true(e->n_seen < 64);
	snprintf(e->seen[e->n_seen].actor, sizeof(e->seen[0].actor), "%s", actor);
	e->seen[e->n_seen].kind = op->kind;
	e->seen[e->n_seen].id = id;
	e->n_seen++;
}

static int setup(void **state)
{
	char path[128];

	(void)state;
	memset(&E, 0, sizeof(E));
	strcpy(E.dir, "/tmp/trellis-adminop-XXXXXX");
	assert_non_null(mkdtemp(E.dir));
	snprintf(path, sizeof(path), "%s/%s", E.dir, STORE_DB_NAME);
	assert_int_equal(store_open(path, &E.st), 0);
	E.c.store = E.st;
	E.c.actor = "cli:test";
	E.c.now = T0;
	E.c.committed = committed;
	E.c.arg = &E;
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	store_free(E.st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", E.dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	return 0;
}

/* The last write the hook saw. */
static const struct seen *last(void)
{
	assert_true(E.n_seen > 0);
	return &E.seen[E.n_seen - 1];
}

/* A node as the server would insert it. */
static uint64_t node_add(uint64_t tid, const char *name, uint8_t seed)
{
	struct control_node n = { .tailnet_id = tid, .created = T0 };

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

static void test_tailnets(void **state)
{
	struct control_tailnet t, u;
	size_t n;

	(void)state;
	/* The default tailnet is made on first use, with the default settings. */
	assert_int_equal(admin_op_tailnet_resolve(&E.c, NULL, &t), 0);
	assert_string_equal(t.name, ADMIN_DEFAULT_TAILNET);
	assert_int_equal(t.key_expiry_sec, ADMIN_KEY_EXPIRY_DEFAULT_SEC);
	assert_int_equal(t.ephemeral_timeout_sec, ADMIN_EPHEMERAL_TIMEOUT_DEFAULT_SEC);
	assert_int_equal(t.created, T0);
	assert_string_equal(last()->actor, "cli:test");
	assert_int_equal(last()->kind, STORE_OP_TAILNET_CREATE);
	assert_int_equal(last()->id, t.id);
	n = E.n_seen;
	assert_int_equal(admin_op_tailnet_resolve(&E.c, NULL, &u), 0);
	assert_int_equal(u.id, t.id);
	assert_int_equal(E.n_seen, n); /* found, nothing written */

	assert_int_equal(admin_op_tailnet_resolve(&E.c, "nope", &u), -ENOENT);
	assert_string_equal(E.c.err, "unknown tailnet \"nope\"");

	assert_int_equal(admin_op_tailnet_create(&E.c, "corp", 30 * 86400, 90, &u), 0);
	assert_int_equal(store_tailnet_get_by_name(E.st, "corp", &t), 0);
	assert_int_equal(t.key_expiry_sec, 30 * 86400);
	assert_int_equal(t.ephemeral_timeout_sec, 90);
	assert_int_equal(t.id, u.id);
	assert_int_equal(admin_op_tailnet_create(&E.c, "corp", 0, 90, NULL), -EEXIST);
	assert_string_equal(E.c.err, "tailnet \"corp\" already exists");
	assert_int_equal(admin_op_tailnet_create(&E.c, "-bad", 0, 90, NULL), -EINVAL);
	assert_string_equal(E.c.err, "bad tailnet name \"-bad\"");
	assert_int_equal(admin_op_tailnet_create(&E.c, "noeph", 0, 0, NULL), -EINVAL);
	assert_int_equal(store_tailnet_get_by_name(E.st, "noeph", &t), -ENOENT);
}

static void test_users(void **state)
{
	struct control_user u, v;

	(void)state;
	assert_int_equal(admin_op_user_create(&E.c, "corp", "alice@example.com", &u), 0);
	assert_int_equal(last()->kind, STORE_OP_USER_CREATE);
	assert_int_equal(store_user_get(E.st, u.id, &v), 0);
	assert_string_equal(v.name, "alice@example.com");
	assert_int_equal(admin_op_user_create(&E.c, "corp", "alice@example.com", NULL), -EEXIST);
	assert_string_equal(E.c.err,
			    "user \"alice@example.com\" already exists in tailnet \"corp\"");
	assert_int_equal(admin_op_user_create(&E.c, "nope", "bob", NULL), -ENOENT);
	assert_string_equal(E.c.err, "unknown tailnet \"nope\"");
	assert_int_equal(admin_op_user_create(&E.c, NULL, "bad name", NULL), -EINVAL);
	assert_string_equal(E.c.err, "bad user name \"bad name\"");
}

static void test_authkeys(void **state)
{
	struct admin_op_authkey_spec spec = { .tailnet = "corp", .reusable = true,
					      .ephemeral = true, .n_tags = 1,
					      .expiry_sec = 3600 };
	struct control_authkey k, stored;
	char key[AUTHKEY_STR_MAX], id[AUTHKEY_ID_HEX + 1];
	uint8_t hash[32];

	(void)state;
	snprintf(spec.tags[0], sizeof(spec.tags[0]), "tag:ci");
	assert_int_equal(admin_op_authkey_create(&E.c, &spec, &k, key), 0);
	assert_int_equal(last()->kind, STORE_OP_AUTHKEY_CREATE);
	assert_string_equal(last()->actor, "cli:test");
	/* The printed key opens the stored record; the secret itself is not stored. */
	assert_int_equal(authkey_parse(key, id, hash), 0);
	assert_int_equal(store_authkey_get_by_prefix(E.st, id, &stored), 0);
	assert_int_equal(authkey_check(&stored, hash, T0), 0);
	assert_null(strstr(stored.prefix, strrchr(key, '-') + 1));
	assert_true(stored.reusable && stored.ephemeral && !stored.preauthorized);
	assert_int_equal(stored.n_tags, 1);
	assert_string_equal(stored.tags[0], "tag:ci");
	assert_int_equal(stored.expires, T0 + 3600);
	assert_int_equal(authkey_check(&stored, hash, T0 + 3600), AUTHKEY_ERR_EXPIRED);

	snprintf(spec.tags[0], sizeof(spec.tags[0]), "web");
	assert_int_equal(admin_op_authkey_create(&E.c, &spec, NULL, key), -EINVAL);
	assert_string_equal(E.c.err, "bad tag \"web\": tags look like tag:name");
	spec.n_tags = 0;
	spec.tailnet = "nope";
	assert_int_equal(admin_op_authkey_create(&E.c, &spec, NULL, key), -ENOENT);
	assert_string_equal(E.c.err, "unknown tailnet \"nope\"");

	/* Revoke by the id as listed, and by the whole key. */
	assert_int_equal(admin_op_authkey_revoke(&E.c, stored.prefix), 0);
	assert_int_equal(last()->kind, STORE_OP_AUTHKEY_UPDATE);
	assert_int_equal(store_authkey_get_by_prefix(E.st, id, &stored), 0);
	assert_true(stored.revoked);
	assert_int_equal(authkey_check(&stored, hash, T0), AUTHKEY_ERR_REVOKED);
	assert_int_equal(admin_op_authkey_revoke(&E.c, "0123456789ab"), -ENOENT);
	assert_string_equal(E.c.err, "unknown auth key \"0123456789ab\"");
	assert_int_equal(admin_op_authkey_revoke(&E.c, "xyz"), -EINVAL);
	assert_non_null(strstr(E.c.err, "bad auth key id \"xyz\""));
}

static void test_nodes(void **state)
{
	struct control_tailnet corp, def;
	struct control_node n;
	uint64_t web, db, web2;
	char idtext[32];

	(void)state;
	assert_int_equal(store_tailnet_get_by_name(E.st, "corp", &corp), 0);
	assert_int_equal(store_tailnet_get_by_name(E.st, ADMIN_DEFAULT_TAILNET, &def), 0);
	web = node_add(corp.id, "web", 1);
	db = node_add(corp.id, "db", 2);
	web2 = node_add(def.id, "web", 3);

	/* By name: ambiguous across tailnets until --tailnet says which. */
	assert_int_equal(admin_op_node_approve(&E.c, "web", NULL), -EEXIST);
	assert_string_equal(E.c.err,
			    "node name \"web\" is in several tailnets; use its id or --tailnet");
	assert_int_equal(admin_op_node_approve(&E.c, "web", "corp"), 0);
	assert_int_equal(last()->kind, STORE_OP_NODE_UPDATE);
	assert_int_equal(store_node_get(E.st, web, &n), 0);
	assert_true(n.approved);
	assert_int_equal(store_node_get(E.st, web2, &n), 0);
	assert_false(n.approved);

	/* By id. */
	snprintf(idtext, sizeof(idtext), "%llu", (unsigned long long)db);
	assert_int_equal(admin_op_node_find(&E.c, idtext, NULL, &n), 0);
	assert_int_equal(n.id, db);
	assert_int_equal(admin_op_node_approve(&E.c, "4242", NULL), -ENOENT);
	assert_string_equal(E.c.err, "unknown node 4242");
	assert_int_equal(admin_op_node_delete(&E.c, "no-such-node", NULL), -ENOENT);
	assert_string_equal(E.c.err, "unknown node \"no-such-node\"");

	/* Rename: valid names only, unique in the tailnet. */
	assert_int_equal(admin_op_node_rename(&E.c, idtext, NULL, "web"), -EEXIST);
	assert_string_equal(E.c.err, "name \"web\" is already taken in this tailnet");
	assert_int_equal(admin_op_node_rename(&E.c, idtext, NULL, "bad name"), -EINVAL);
	assert_string_equal(E.c.err, "bad node name \"bad name\"");
	assert_int_equal(admin_op_node_rename(&E.c, idtext, NULL, "db-1"), 0);
	assert_int_equal(store_node_get(E.st, db, &n), 0);
	assert_string_equal(n.name, "db-1");

	/* Expiry off, on (a node without one gets its tailnet's), expire now. */
	assert_int_equal(admin_op_node_set_expiry(&E.c, idtext, NULL, false), 0);
	assert_int_equal(store_node_get(E.st, db, &n), 0);
	assert_true(n.expiry_disabled);
	assert_int_equal(admin_op_node_set_expiry(&E.c, idtext, NULL, true), 0);
	assert_int_equal(store_node_get(E.st, db, &n), 0);
	assert_false(n.expiry_disabled);
	assert_int_equal(n.key_expiry, T0 + corp.key_expiry_sec);
	assert_int_equal(admin_op_node_set_expiry(&E.c, idtext, NULL, false), 0);
	assert_int_equal(admin_op_node_expire(&E.c, idtext, NULL), 0);
	assert_int_equal(store_node_get(E.st, db, &n), 0);
	assert_false(n.expiry_disabled); /* an explicit expire overrides the opt-out */
	assert_int_equal(n.key_expiry, T0);
	assert_false(control_node_visible(&n, T0));

	assert_int_equal(admin_op_node_delete(&E.c, idtext, NULL), 0);
	assert_int_equal(last()->kind, STORE_OP_NODE_DELETE);
	assert_int_equal(store_node_get(E.st, db, &n), -ENOENT);

	/* Every write went through the hook as the actor. */
	for (size_t i = 0; i < E.n_seen; i++)
		assert_string_equal(E.seen[i].actor, "cli:test");
}

/* relaymap set/get/reset: strict checking, stored compact, the default until set. */
static void test_relaymap(void **state)
{
	static const char file[] =
	    "{\n  \"regions\": [\n    {\"id\": 3, \"code\": \"par\", \"nodes\": [\n"
	    "      {\"name\": \"par1\", \"host\": \"relay.example\", \"tls\": true}]}]}\n";
	struct netmap_relay_map rm;
	char text[STORE_SETTING_VALUE_MAX];
	bool dflt = false;
	size_t seen;
	int n;

	(void)state;
	assert_int_equal(admin_op_relaymap_get(&E.c, &rm, &dflt), 0);
	assert_true(dflt);
	assert_int_equal(rm.n_regions, 1);
	assert_string_equal(rm.regions[0].code, "default");

	seen = E.n_seen;
	assert_int_equal(admin_op_relaymap_set(&E.c, "{\"regions\":[{\"id\":1}]}", 22), -EINVAL);
	assert_string_equal(E.c.err, "regions[0]: missing \"code\"");
	assert_int_equal(E.n_seen, seen);

	assert_int_equal(admin_op_relaymap_set(&E.c, file, sizeof(file) - 1), 0);
	assert_int_equal(E.n_seen, seen + 1);
	assert_int_equal(last()->kind, STORE_OP_SETTING_SET);
	n = store_setting_get(E.st, "relaymap", text, sizeof(text));
	assert_true(n > 0);
	assert_memory_equal(
	    text,
	    "{\"regions\":[{\"id\":3,\"code\":\"par\",\"name\":\"\","
	    "\"nodes\":[{\"name\":\"par1\",\"host\":\"relay.example\",\"relay_port\":0,"
	    "\"stun_port\":3478,\"tls\":true}]}]}",
	    (size_t)n);
	assert_int_equal(admin_op_relaymap_get(&E.c, &rm, &dflt), 0);
	assert_false(dflt);
	assert_int_equal(rm.regions[0].id, 3);

	/* No regions is a map of its own (relays off), not the default. */
	assert_int_equal(admin_op_relaymap_set(&E.c, "{\"regions\":[]}", 14), 0);
	assert_int_equal(admin_op_relaymap_get(&E.c, &rm, &dflt), 0);
	assert_false(dflt);
	assert_int_equal(rm.n_regions, 0);

	assert_int_equal(admin_op_relaymap_reset(&E.c), 0);
	assert_int_equal(admin_op_relaymap_get(&E.c, &rm, &dflt), 0);
	assert_true(dflt);
}

static void test_snapshot(void **state)
{
	struct store_snapshot snap;
	struct control_tailnet t;

	(void)state;
	assert_int_equal(admin_op_snapshot(&E.c, "nope", &snap, &t), -ENOENT);
	assert_string_equal(E.c.err, "unknown tailnet \"nope\"");
	assert_int_equal(admin_op_snapshot(&E.c, "corp", &snap, &t), 0);
	assert_string_equal(t.name, "corp");
	assert_true(snap.n_tailnets >= 2);
	store_snapshot_free(&snap);
}

static uint64_t node_add_as(uint64_t tid, const char *name, uint8_t seed, uint64_t user,
			    const char *tag)
{
	struct control_node n = { .tailnet_id = tid, .user_id = user, .created = T0,
				  .approved = true };

	snprintf(n.name, sizeof(n.name), "%s", name);
	snprintf(n.hostname, sizeof(n.hostname), "%s", name);
	if (tag)
		snprintf(n.tags[n.n_tags++], NETMAP_TAG_MAX, "%s", tag);
	memset(n.machine_key, seed, 32);
	memset(n.node_key, seed + 1, 32);
	n.ipv4[0] = 100;
	n.ipv4[1] = 64;
	n.ipv4[3] = seed;
	assert_int_equal(store_node_insert(E.st, &n), 0);
	return n.id;
}

/* A policy is checked before it is stored; explain and matrix read the tailnet's nodes. */
static void test_policy(void **state)
{
	static const char good[] =
		"// eng reaches the server's ssh\n"
		"{\"groups\": {\"group:eng\": [\"eng@example.com\"]},\n"
		" \"tagOwners\": {\"tag:server\": [\"group:eng\"]},\n"
		" \"acls\": [{\"action\": \"accept\", \"src\": [\"group:eng\"],"
		" \"dst\": [\"tag:server:22\"], \"proto\": \"tcp\"},],}\n";
	static const char bad[] = "{\"acls\": [\n  {\"action\": \"accept\", \"src\": [\"group:x\"],"
				  " \"dst\": [\"*:*\"]}]}";
	struct admin_op_reach *m = NULL;
	struct control_tailnet t;
	struct control_user u;
	char why[ADMIN_OP_ERR_MAX], *text;
	size_t len, n, seen;
	bool ok;

	(void)state;
	assert_int_equal(admin_op_tailnet_create(&E.c, "pol", 0, 600, &t), 0);
	assert_int_equal(admin_op_user_create(&E.c, "pol", "eng@example.com", &u), 0);
	node_add_as(t.id, "laptop", 41, u.id, NULL);
	node_add_as(t.id, "srv", 42, 0, "tag:server");

	assert_int_equal(admin_op_policy_get(&E.c, "pol", &text, &len), -ENOENT);
	assert_string_equal(E.c.err, "tailnet \"pol\" has no policy: every node may reach every "
				     "other");
	assert_int_equal(admin_op_policy_explain(&E.c, "pol", "srv", "laptop", 22, 6, &ok, why,
						 sizeof(why)), 0);
	assert_true(ok);

	seen = E.n_seen;
	assert_int_equal(admin_op_policy_set(&E.c, "pol", bad, strlen(bad)), -EINVAL);
	assert_string_equal(E.c.err, "2:32: unknown group \"group:x\"");
	assert_int_equal(E.n_seen, seen);
	assert_int_equal(admin_op_policy_get(&E.c, "pol", &text, &len), -ENOENT);

	assert_int_equal(admin_op_policy_set(&E.c, "pol", good, strlen(good)), 0);
	assert_int_equal(last()->kind, STORE_OP_POLICY_SET);
	assert_int_equal(admin_op_policy_get(&E.c, "pol", &text, &len), 0);
	assert_int_equal(len, strlen(good));
	assert_string_equal(text, good);
	free(text);
	/* A malformed policy never replaces a good one: nothing stored, the good one in force. */
	seen = E.n_seen;
	assert_int_equal(admin_op_policy_set(&E.c, "pol", bad, strlen(bad)), -EINVAL);
	assert_int_equal(E.n_seen, seen);
	assert_int_equal(admin_op_policy_get(&E.c, "pol", &text, &len), 0);
	assert_string_equal(text, good);
	free(text);
	/* Another tailnet's policy is its own. */
	assert_int_equal(admin_op_policy_get(&E.c, "corp", &text, &len), -ENOENT);

	assert_int_equal(admin_op_policy_explain(&E.c, "pol", "laptop", "srv", 22, 6, &ok, why,
						 sizeof(why)), 0);
	assert_true(ok);
	assert_non_null(strstr(why, "allowed by acls[0] (line 4)"));
	assert_int_equal(admin_op_policy_explain(&E.c, "pol", "srv", "100.64.0.41", 22, 6, &ok, why,
						 sizeof(why)), 0);
	assert_false(ok);
	assert_int_equal(admin_op_policy_explain(&E.c, "pol", "eng@example.com", "tag:server", 80,
						 6, &ok, why, sizeof(why)), 0);
	assert_false(ok);
	assert_int_equal(admin_op_policy_explain(&E.c, "pol", "nobody", "srv", 22, 6, &ok, why,
						 sizeof(why)), -EINVAL);

	assert_int_equal(admin_op_policy_matrix(&E.c, "pol", &m, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(m[0].src, "laptop");
	assert_string_equal(m[0].dst, "srv");
	assert_string_equal(m[0].allow, "22/tcp");
	free(m);

	assert_int_equal(admin_op_policy_set(&E.c, "pol", "", 0), 0);
	assert_int_equal(admin_op_policy_get(&E.c, "pol", &text, &len), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_tailnets), cmocka_unit_test(test_users),
	    cmocka_unit_test(test_authkeys), cmocka_unit_test(test_nodes),
	    cmocka_unit_test(test_snapshot), cmocka_unit_test(test_relaymap),
	    cmocka_unit_test(test_policy),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
