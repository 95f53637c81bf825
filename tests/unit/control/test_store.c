// SPDX-License-Identifier: MIT
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/loop.h"
#include "base/time.h"
#include "control/store.h"

struct ctx {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	strcpy(c->dir, "/tmp/trellis-store-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(c->path, sizeof(c->path), "%s/control.db", c->dir);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", c->dir);
	free(c);
	return 0;
}

static int sql_int(const char *path, const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	int v = -1;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void sql_exec(const char *path, const char *sql)
{
	sqlite3 *db;

	assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static uint64_t tailnet_make(struct store *s, const char *name)
{
	struct control_tailnet t = { .key_expiry_sec = 3600, .ephemeral_timeout_sec = 60 };

	snprintf(t.name, sizeof(t.name), "%s", name);
	t.created = 1000;
	assert_int_equal(store_tailnet_create(s, &t), 0);
	assert_true(t.id > 0);
	return t.id;
}

static void node_fill(struct control_node *n, uint64_t tailnet_id, unsigned i)
{
	memset(n, 0, sizeof(*n));
	n->tailnet_id = tailnet_id;
	snprintf(n->name, sizeof(n->name), "node-%u", i);
	snprintf(n->hostname, sizeof(n->hostname), "node-%u", i);
	snprintf(n->os, sizeof(n->os), "linux");
	memset(n->machine_key, 0, sizeof(n->machine_key));
	memcpy(n->machine_key, &i, sizeof(i));
	memset(n->node_key, 0xab, sizeof(n->node_key));
	memcpy(n->node_key, &i, sizeof(i));
	n->ipv4[0] = 100;
	n->ipv4[1] = 64 + (uint8_t)(i >> 16);
	n->ipv4[2] = (uint8_t)(i >> 8);
	n->ipv4[3] = (uint8_t)i;
	n->approved = true;
	n->created = 2000;
}

static void test_migrations_fresh_and_rerun(void **state)
{
	struct ctx *c = *state;
	struct store *s;
	struct stat stt;

	assert_int_equal(store_open(c->path, &s), 0);
	tailnet_make(s, "t1");
	store_free(s);
	assert_int_equal(sql_int(c->path, "SELECT version FROM schema_version"),
			 store_sqlite_schema_version());
	assert_int_equal(sql_int(c->path, "SELECT count(*) FROM schema_version"), 1);
	assert_int_equal(stat(c->path, &stt), 0);
	assert_int_equal(stt.st_mode & 0777, 0600);
	assert_int_equal(sql_int(c->path, "PRAGMA journal_mode = WAL") >= -1, 1);

	/* Re-running migrations is a no-op: same version, data kept. */
	assert_int_equal(store_open(c->path, &s), 0);
	store_free(s);
	assert_int_equal(sql_int(c->path, "SELECT version FROM schema_version"),
			 store_sqlite_schema_version());
	assert_int_equal(sql_int(c->path, "SELECT count(*) FROM tailnets"), 1);
}

static void test_migrations_from_v1(void **state)
{
	struct ctx *c = *state;
	struct store *s;
	void *be;

	assert_int_equal(store_sqlite_open_version(c->path, 1, &be), 0);
	store_backend_sqlite.close(be);
	assert_int_equal(sql_int(c->path, "SELECT version FROM schema_version"), 1);
	assert_int_equal(sql_int(c->path, "SELECT count(*) FROM sqlite_master WHERE name ="
					  " 'nodes_node_key'"), 0);
	sql_exec(c->path, "INSERT INTO tailnets (name, created) VALUES ('old', 1)");

	assert_int_equal(store_open(c->path, &s), 0);
	store_free(s);
	assert_int_equal(sql_int(c->path, "SELECT version FROM schema_version"),
			 store_sqlite_schema_version());
	assert_int_equal(sql_int(c->path, "SELECT count(*) FROM sqlite_master WHERE name ="
					  " 'nodes_node_key'"), 1);
	assert_int_equal(sql_int(c->path, "SELECT count(*) FROM tailnets WHERE name = 'old'"), 1);
}

/*
 * Migration 13 (CA rotation): a tailnet's one CA becomes a row with an id, the key file it
 * always had and no retirement; its certificates name it; their keys are unknown.
 */
static void test_migration_cas(void **state)
{
	struct ctx *c = *state;
	struct control_mcert m;
	struct control_ca ca, *all = NULL;
	struct store *s;
	size_t n = 0;
	void *be;

	assert_int_equal(store_sqlite_open_version(c->path, 12, &be), 0);
	store_backend_sqlite.close(be);
	sql_exec(c->path, "INSERT INTO tailnets (id, name, created) VALUES (4, 'old', 1);"
			  "INSERT INTO machine_cas (tailnet_id, cert, created) VALUES (4, 'PEM', 2);"
			  "INSERT INTO machine_certs (tailnet_id, serial, machine_key, subject,"
			  " not_before, not_after, created) VALUES (4, 'ab12', x'00', 'n', 1, 9, 2)");
	assert_int_equal(store_open(c->path, &s), 0);
	assert_int_equal(store_ca_get(s, 4, &ca), 0);
	assert_true(ca.id > 0);
	assert_int_equal(ca.tailnet_id, 4);
	assert_string_equal(ca.cert, "PEM");
	assert_string_equal(ca.key_file, "4.key");
	assert_int_equal(ca.retired_at, 0);
	assert_int_equal(store_ca_list(s, &all, &n), 0);
	assert_int_equal(n, 1);
	free(all);
	assert_int_equal(store_mcert_get(s, "ab12", &m), 0);
	assert_int_equal(m.ca_id, ca.id);
	assert_false(m.has_pub);
	/* Migration 14: a certificate from before is kept without its DER, so never sent. */
	{
		uint8_t der[64];

		assert_int_equal(store_mcert_der(s, "ab12", der, sizeof(der)), -ENOENT);
	}
	store_free(s);
}

static void test_newer_version_refused(void **state)
{
	struct ctx *c = *state;
	struct store *s;

	assert_int_equal(store_open(c->path, &s), 0);
	store_free(s);
	sql_exec(c->path, "UPDATE schema_version SET version = 999");
	assert_int_equal(store_open(c->path, &s), -EPROTO);
	/* Refusal changed nothing. */
	assert_int_equal(sql_int(c->path, "SELECT version FROM schema_version"), 999);
}

/* A damaged version (a negative one) is refused too: it would index before the migrations. */
static void test_negative_version_refused(void **state)
{
	struct ctx *c = *state;
	struct store *s;

	assert_int_equal(store_open(c->path, &s), 0);
	store_free(s);
	sql_exec(c->path, "UPDATE schema_version SET version = -1");
	assert_int_equal(store_open(c->path, &s), -EPROTO);
	assert_int_equal(sql_int(c->path, "SELECT version FROM schema_version"), -1);
}

static void test_roundtrip(void **state)
{
	struct ctx *c = *state;
	struct store_snapshot snap;
	struct control_authkey k = { 0 }, k2;
	struct control_user u = { 0 };
	struct control_node n, got, dup;
	struct control_tailnet t;
	struct store *s;
	uint8_t val[8];
	uint64_t tid;

	assert_int_equal(store_open(c->path, &s), 0);
	tid = tailnet_make(s, "t1");
	assert_int_equal(store_tailnet_get_by_name(s, "t1", &t), 0);
	assert_int_equal(t.id, tid);
	assert_int_equal(t.key_expiry_sec, 3600);
	assert_int_equal(store_tailnet_get_by_name(s, "nope", &t), -ENOENT);

	u.tailnet_id = tid;
	strcpy(u.name, "alice");
	assert_int_equal(store_user_create(s, &u), 0);
	assert_int_equal(store_user_create(s, &u), -EEXIST);

	node_fill(&n, tid, 1);
	n.user_id = u.id;
	n.n_tags = 2;
	strcpy(n.tags[0], "tag:a");
	strcpy(n.tags[1], "tag:b");
	n.n_endpoints = 2;
	assert_int_equal(endpoint_parse(&n.endpoints[0], "198.51.100.7:41641"), 0);
	assert_int_equal(endpoint_parse(&n.endpoints[1], "[2001:db8::7]:41641"), 0);
	n.key_expiry = 12345;
	assert_int_equal(store_node_insert(s, &n), 0);
	assert_int_equal(store_node_get(s, n.id, &got), 0);
	assert_string_equal(got.name, "node-1");
	assert_int_equal(got.user_id, u.id);
	assert_memory_equal(got.ipv4, n.ipv4, 4);
	assert_memory_equal(got.node_key, n.node_key, 32);
	assert_int_equal(got.n_tags, 2);
	assert_string_equal(got.tags[1], "tag:b");
	assert_int_equal(got.n_endpoints, 2);
	assert_true(endpoint_equal(&got.endpoints[1], &n.endpoints[1]));
	assert_int_equal(got.key_expiry, 12345);
	assert_true(got.approved);

	/* Unique name / address / machine key per tailnet. */
	node_fill(&dup, tid, 2);
	strcpy(dup.name, "node-1");
	assert_int_equal(store_node_insert(s, &dup), -EEXIST);
	node_fill(&dup, tid, 2);
	memcpy(dup.ipv4, n.ipv4, 4);
	assert_int_equal(store_node_insert(s, &dup), -EEXIST);
	/* Unknown tailnet: foreign key. */
	node_fill(&dup, 999, 3);
	assert_int_equal(store_node_insert(s, &dup), -ENOENT);

	strcpy(n.name, "renamed");
	n.last_seen = 777;
	assert_int_equal(store_node_update(s, &n), 0);
	assert_int_equal(store_node_get(s, n.id, &got), 0);
	assert_string_equal(got.name, "renamed");
	assert_int_equal(got.last_seen, 777);

	k.tailnet_id = tid;
	strcpy(k.prefix, "0123456789ab");
	memset(k.hash, 7, 32);
	k.reusable = true;
	k.n_tags = 1;
	strcpy(k.tags[0], "tag:srv");
	k.expires = 99;
	assert_int_equal(store_authkey_create(s, &k), 0);
	k.uses = 3;
	k.revoked = true;
	assert_int_equal(store_authkey_update(s, &k), 0);
	assert_int_equal(store_authkey_get_by_prefix(s, "0123456789ab", &k2), 0);
	assert_int_equal(k2.uses, 3);
	assert_true(k2.revoked);
	assert_true(k2.reusable);
	assert_memory_equal(k2.hash, k.hash, 32);
	assert_string_equal(k2.tags[0], "tag:srv");

	assert_int_equal(store_setting_set(s, "server_key", "abcdefgh", 8), 0);
	assert_int_equal(store_setting_set(s, "server_key", "ABCDEFGH", 8), 0);
	assert_int_equal(store_setting_get(s, "server_key", val, sizeof(val)), 8);
	assert_memory_equal(val, "ABCDEFGH", 8);
	assert_int_equal(store_setting_get(s, "none", val, sizeof(val)), -ENOENT);

	assert_int_equal(store_load(s, &snap), 0);
	assert_int_equal(snap.n_tailnets, 1);
	assert_int_equal(snap.n_users, 1);
	assert_int_equal(snap.n_nodes, 1);
	assert_int_equal(snap.n_authkeys, 1);
	assert_string_equal(snap.nodes[0].name, "renamed");
	store_snapshot_free(&snap);

	assert_int_equal(store_node_delete(s, n.id), 0);
	assert_int_equal(store_node_delete(s, n.id), -ENOENT);
	assert_int_equal(store_node_get(s, n.id, &got), -ENOENT);
	assert_int_equal(store_authkey_delete(s, k.id), 0);
	assert_int_equal(store_authkey_get(s, k.id, &k2), -ENOENT);
	store_free(s);
}

/* kill -9 right after the acknowledgement loses nothing. */
static void test_durability_sigkill(void **state)
{
	struct ctx *c = *state;
	struct store *s;
	struct control_node n, got;
	int status;
	pid_t pid;

	assert_int_equal(store_open(c->path, &s), 0);
	tailnet_make(s, "t1");
	store_free(s);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct store *cs;
		struct control_tailnet t;

		if (store_open(c->path, &cs) < 0 || store_tailnet_get_by_name(cs, "t1", &t) < 0)
			_exit(2);
		node_fill(&n, t.id, 42);
		if (store_node_insert(cs, &n) < 0 || n.id != 1)
			_exit(3);
		/* Acknowledged: die without any clean shutdown (no close, no checkpoint). */
		kill(getpid(), SIGKILL);
		_exit(4);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status));
	assert_int_equal(WTERMSIG(status), SIGKILL);

	assert_int_equal(store_open(c->path, &s), 0);
	assert_int_equal(store_node_get(s, 1, &got), 0);
	assert_string_equal(got.name, "node-42");
	store_free(s);
}

/*
 * An admin CLI opening and closing the database while the server runs must not
 * take the server's WAL away: writes acknowledged afterwards are on disk for a
 * third process. (The end-to-end case — control restarted after admin commands —
 * is in tests/lab/test_tailnet_outage.sh.)
 */
static void test_concurrent_admin_keeps_wal(void **state)
{
	struct ctx *c = *state;
	struct store *server, *admin;
	struct control_tailnet t;
	struct control_node n, got;
	int status;
	pid_t pid;

	assert_int_equal(store_open(c->path, &server), 0);
	tailnet_make(server, "t1");
	assert_int_equal(store_tailnet_get_by_name(server, "t1", &t), 0);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* The admin CLI: another process that opens and closes the database. */
		if (store_open(c->path, &admin) < 0)
			_exit(2);
		store_free(admin);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* The server acknowledges a write after the CLI has gone. */
	node_fill(&n, t.id, 7);
	assert_int_equal(store_node_insert(server, &n), 0);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* A third process must still find the acknowledged row. */
		if (store_open(c->path, &admin) < 0)
			_exit(2);
		_exit(store_node_get(admin, n.id, &got) == 0 ? 0 : 3);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	store_free(server);
}

struct gc_state {
	unsigned done, failed;
	struct loop *loop;
	unsigned want; /* stop the loop at this many */
	pthread_t loop_thread;
	unsigned wrong_thread;
};

static void gc_done(void *ctx, int err, uint64_t id)
{
	struct gc_state *g = ctx;

	g->done++;
	if (err < 0 || !id)
		g->failed++;
	if (!pthread_equal(pthread_self(), g->loop_thread))
		g->wrong_thread++;
	if (g->loop && g->done == g->want)
		loop_stop(g->loop);
}

static void gc_timeout(struct loop_timer *t)
{
	(void)t;
	fail_msg("completions did not arrive within 10 s");
}

static void test_group_commit(void **state)
{
	struct ctx *c = *state;
	struct store_op op = { .kind = STORE_OP_NODE_INSERT };
	struct store_stats st;
	struct gc_state g = { 0 };
	struct loop_timer guard = { .cb = gc_timeout };
	struct store *s;
	uint64_t tid, t0, dt;
	const unsigned n = 1000;
	unsigned i;

	assert_int_equal(store_open(c->path, &s), 0);
	g.loop = loop_new();
	assert_non_null(g.loop);
	g.want = n;
	g.loop_thread = pthread_self();
	store_loop_attach(s, g.loop);
	tid = tailnet_make(s, "t1");
	store_stats_get(s, &st);
	assert_int_equal(st.commits, 1);

	t0 = time_now_ns();
	for (i = 0; i < n; i++) {
		node_fill(&op.node, tid, i + 1);
		assert_int_equal(store_submit(s, &op, gc_done, &g), 0);
	}
	/* The completions wake the loop through its mailbox and run on this thread. */
	loop_timer_arm(g.loop, &guard, time_now_ns() + 10 * NSEC_PER_SEC);
	assert_int_equal(loop_run(g.loop), 0);
	loop_timer_disarm(g.loop, &guard);
	assert_int_equal(g.done, n);
	dt = time_now_ns() - t0;
	assert_int_equal(g.failed, 0);
	assert_int_equal(g.wrong_thread, 0);
	store_stats_get(s, &st);
	printf("group commit: %u durable inserts in %.1f ms (%.0f/s), %" PRIu64 " commits\n", n,
	       dt / 1e6, n * 1e9 / (double)dt, st.commits - 1);
	/* The first submit starts a commit at once; the rest pile up behind it. */
	assert_true(st.commits - 1 <= 20);
	assert_int_equal(sql_int(c->path, "SELECT count(*) FROM nodes"), (int)n);
	store_free(s);
	loop_free(g.loop);
}

static void test_batch_failure_isolated(void **state)
{
	struct ctx *c = *state;
	struct store_op op = { .kind = STORE_OP_NODE_INSERT };
	struct gc_state g = { 0 };
	struct store *s;
	uint64_t tid;
	unsigned i;

	assert_int_equal(store_open(c->path, &s), 0);
	g.loop = loop_new();
	assert_non_null(g.loop);
	g.loop_thread = pthread_self();
	/* An unattached store has nowhere to complete to. */
	assert_int_equal(store_submit(s, &op, gc_done, &g), -ENOTCONN);
	store_loop_attach(s, g.loop);
	tid = tailnet_make(s, "t1");
	/* Every other insert clashes on its name with the one before. */
	for (i = 0; i < 100; i++) {
		node_fill(&op.node, tid, i + 1);
		snprintf(op.node.name, sizeof(op.node.name), "n%u", i / 2);
		assert_int_equal(store_submit(s, &op, gc_done, &g), 0);
	}
	store_flush(s);
	/* Durable and queued, but not run before the loop thread asks. */
	assert_int_equal(g.done, 0);
	assert_int_equal(store_completions_run(s), 100);
	assert_int_equal(g.done, 100);
	assert_int_equal(g.failed, 50);
	assert_int_equal(g.wrong_thread, 0);
	assert_int_equal(sql_int(c->path, "SELECT count(*) FROM nodes"), 50);
	store_free(s);
	loop_free(g.loop);
}

/* A second process (the admin CLI) writes; the server sees it through the change feed. */
static void test_changes_feed(void **state)
{
	struct ctx *c = *state;
	struct store *server, *admin;
	struct store_snapshot snap;
	struct store_change ch[4];
	struct control_node n;
	uint64_t tid, cursor;

	assert_int_equal(store_open(c->path, &server), 0);
	tid = tailnet_make(server, "t1");
	node_fill(&n, tid, 1);
	assert_int_equal(store_node_insert(server, &n), 0);
	assert_int_equal(store_load(server, &snap), 0);
	cursor = snap.change_seq;
	store_snapshot_free(&snap);
	assert_int_equal(store_changes_poll(server, &cursor, ch, 4), 0);

	/* Our own writes are not reported. */
	n.last_seen = 5;
	assert_int_equal(store_node_update(server, &n), 0);
	assert_int_equal(store_changes_poll(server, &cursor, ch, 4), 0);

	assert_int_equal(store_open(c->path, &admin), 0);
	n.approved = false;
	assert_int_equal(store_node_update(admin, &n), 0);
	assert_int_equal(store_node_delete(admin, n.id), 0);
	assert_int_equal(store_changes_poll(server, &cursor, ch, 1), 1);
	assert_int_equal(ch[0].kind, STORE_CHANGE_NODE);
	assert_int_equal(ch[0].id, n.id);
	assert_int_equal(store_changes_poll(server, &cursor, ch, 4), 1);
	assert_int_equal(ch[0].id, n.id);
	assert_int_equal(store_node_get(server, n.id, &n), -ENOENT);
	assert_int_equal(store_changes_poll(server, &cursor, ch, 4), 0);
	store_free(admin);
	store_free(server);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_migrations_fresh_and_rerun, setup, teardown),
		cmocka_unit_test_setup_teardown(test_concurrent_admin_keeps_wal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migrations_from_v1, setup, teardown),
		cmocka_unit_test_setup_teardown(test_migration_cas, setup, teardown),
		cmocka_unit_test_setup_teardown(test_newer_version_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_negative_version_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_durability_sigkill, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_failure_isolated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_changes_feed, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
