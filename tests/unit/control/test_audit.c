/* SPDX-License-Identifier: MIT */
/*
 * The configuration audit log (control/audit.c, the store's audit table):
 * every admin operation leaves one entry with its actor, action, target and
 * before/after, in the same transaction as its write; the chain walk finds an
 * entry edited, deleted or re-hashed in the database file behind the store's
 * back; pruning leaves a chain that still verifies from its anchor.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "control/admin_op.h"
#include "control/audit.h"
#include "control/store.h"

#define T0 1800000000LL
#define DAY 86400LL
#define MAX_ROWS 32

struct row {
	uint64_t seq;
	int64_t time;
	char actor[AUDIT_ACTOR_MAX], action[AUDIT_ACTION_MAX], target[AUDIT_TARGET_MAX];
	char before[1024], after[1024];
};

static struct {
	char dir[64], db[128];
	struct store *st;
	struct admin_op_ctx c;
	struct row rows[MAX_ROWS];
	size_t n;
} E;

static int setup(void **state)
{
	(void)state;
	memset(&E, 0, sizeof(E));
	strcpy(E.dir, "/tmp/trellis-audit-XXXXXX");
	assert_non_null(mkdtemp(E.dir));
	snprintf(E.db, sizeof(E.db), "%s/%s", E.dir, STORE_DB_NAME);
	assert_int_equal(store_open(E.db, &E.st), 0);
	E.c.store = E.st;
	E.c.actor = "socket:uid0";
	E.c.now = T0;
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

static int row_read(void *arg, const struct audit_entry *e)
{
	struct row *r;

	(void)arg;
	assert_true(E.n < MAX_ROWS);
	r = &E.rows[E.n++];
	r->seq = e->seq;
	r->time = e->time;
	snprintf(r->actor, sizeof(r->actor), "%s", e->actor);
	snprintf(r->action, sizeof(r->action), "%s", e->action);
	snprintf(r->target, sizeof(r->target), "%s", e->target);
	snprintf(r->before, sizeof(r->before), "%s", e->before);
	snprintf(r->after, sizeof(r->after), "%s", e->after);
	return 0;
}

static void rows_load(void)
{
	E.n = 0;
	assert_int_equal(store_audit_read(E.st, 0, INT64_MIN, 0, row_read, NULL), 0);
}

/* Tampering as someone with the database file: another connection, behind the store. */
static void db_exec(const char *sql)
{
	sqlite3 *db;

	assert_int_equal(sqlite3_open(E.db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static struct audit_walk verify(void)
{
	struct audit_walk w;
	uint64_t anchor;

	assert_int_equal(admin_op_audit_verify(&E.c, &w, &anchor), 0);
	return w;
}

/* A node to act on: registrations are the server's, not admin operations. */
static uint64_t node_add(const char *name)
{
	struct control_tailnet t;
	struct control_node n = {0};

	assert_int_equal(admin_op_tailnet_resolve(&E.c, NULL, &t), 0);
	n.tailnet_id = t.id;
	snprintf(n.name, sizeof(n.name), "%s", name);
	snprintf(n.hostname, sizeof(n.hostname), "%s", name);
	n.ipv4[0] = 100;
	n.ipv4[1] = 64;
	n.ipv4[3] = (uint8_t)(name[0]);
	n.node_key[0] = (uint8_t)name[0];
	n.machine_key[0] = (uint8_t)name[0];
	n.created = E.c.now;
	assert_int_equal(store_node_insert(E.st, &n), 0);
	return n.id;
}

/* Six operations, from two actors. */
static void history_make(void)
{
	struct admin_op_authkey_spec spec = {.reusable = true};
	struct control_authkey k;
	char key[AUTHKEY_STR_MAX], id[16];

	E.c.now = T0 - 60 * DAY;
	assert_int_equal(admin_op_tailnet_create(&E.c, "corp", 0, 600, NULL), 0);
	spec.tailnet = "corp";
	assert_int_equal(admin_op_authkey_create(&E.c, &spec, &k, key), 0);
	E.c.now = T0 - 40 * DAY;
	assert_int_equal(admin_op_authkey_revoke(&E.c, k.prefix), 0);
	snprintf(id, sizeof(id), "%" PRIu64, node_add("web"));
	E.c.actor = "apikey:0123456789ab";
	E.c.now = T0 - 10 * DAY;
	assert_int_equal(admin_op_node_rename(&E.c, id, NULL, "www"), 0);
	assert_int_equal(admin_op_node_approve(&E.c, id, NULL), 0);
	E.c.now = T0;
	assert_int_equal(admin_op_node_delete(&E.c, id, NULL), 0);
	E.c.actor = "socket:uid0";
}

static void test_entries(void **state)
{
	struct audit_walk w;

	(void)state;
	history_make();
	rows_load();
	/* node_add resolved the default tailnet: that creation is an entry too. */
	assert_int_equal(E.n, 7);
	assert_string_equal(E.rows[0].action, "tailnet.create");
	assert_string_equal(E.rows[0].target, "tailnet:corp");
	assert_string_equal(E.rows[0].before, "");
	assert_non_null(strstr(E.rows[0].after, "\"name\":\"corp\""));
	assert_string_equal(E.rows[1].action, "authkey.create");
	/* The hash of the key's secret is no business of the log. */
	assert_null(strstr(E.rows[1].after, "hash"));
	assert_string_equal(E.rows[2].action, "authkey.revoke");
	assert_non_null(strstr(E.rows[2].before, "\"revoked\":false"));
	assert_non_null(strstr(E.rows[2].after, "\"revoked\":true"));
	assert_string_equal(E.rows[3].action, "tailnet.create");
	assert_string_equal(E.rows[3].target, "tailnet:default");
	assert_string_equal(E.rows[4].action, "node.rename");
	assert_string_equal(E.rows[4].actor, "apikey:0123456789ab");
	assert_non_null(strstr(E.rows[4].before, "\"name\":\"web\""));
	assert_non_null(strstr(E.rows[4].after, "\"name\":\"www\""));
	assert_string_equal(E.rows[5].action, "node.approve");
	assert_non_null(strstr(E.rows[5].after, "\"approved\":true"));
	assert_string_equal(E.rows[6].action, "node.delete");
	assert_non_null(strstr(E.rows[6].target, " www"));
	assert_string_equal(E.rows[6].after, "");
	assert_int_equal(E.rows[6].time, T0);
	for (size_t i = 0; i < E.n; i++)
		assert_int_equal(E.rows[i].seq, i + 1);
	w = verify();
	assert_false(w.bad);
	assert_int_equal(w.n, 7);

	/* since and after select. */
	E.n = 0;
	assert_int_equal(store_audit_read(E.st, 0, T0 - 10 * DAY, 0, row_read, NULL), 0);
	assert_int_equal(E.n, 3);
	E.n = 0;
	assert_int_equal(store_audit_read(E.st, 5, INT64_MIN, 1, row_read, NULL), 0);
	assert_int_equal(E.n, 1);
	assert_int_equal(E.rows[0].seq, 6);
}

/* A refused write leaves no entry: they commit together or not at all. */
static void test_refused_write_no_entry(void **state)
{
	(void)state;
	assert_int_equal(admin_op_tailnet_create(&E.c, "corp", 0, 600, NULL), 0);
	assert_int_equal(admin_op_tailnet_create(&E.c, "corp", 0, 600, NULL), -EEXIST);
	assert_int_equal(admin_op_authkey_revoke(&E.c, "000000000000"), -ENOENT);
	rows_load();
	assert_int_equal(E.n, 1);
	assert_false(verify().bad);
}

static void test_edit_detected(void **state)
{
	struct audit_walk w;

	(void)state;
	history_make();
	db_exec("UPDATE audit SET actor = 'cli:mallory' WHERE seq = 5");
	w = verify();
	assert_true(w.bad);
	assert_int_equal(w.bad_seq, 5);
	assert_non_null(strstr(w.why, "entry 5 "));
	assert_non_null(strstr(w.why, "edited"));
}

static void test_delete_detected(void **state)
{
	struct audit_walk w;

	(void)state;
	history_make();
	db_exec("DELETE FROM audit WHERE seq = 3");
	w = verify();
	assert_true(w.bad);
	assert_int_equal(w.bad_seq, 3);
	assert_string_equal(w.why, "entry 3 is missing (deleted)");
}

/* Re-hashing an edited entry moves the break to the next link. */
static void test_rehash_detected(void **state)
{
	struct audit_entry e;
	struct audit_walk w;
	char sql[512], hex[2 * AUDIT_HASH_LEN + 1];

	(void)state;
	history_make();
	rows_load();
	memset(&e, 0, sizeof(e));
	e.seq = 5;
	e.time = E.rows[4].time;
	strcpy(e.actor, "server");
	strcpy(e.action, E.rows[4].action);
	strcpy(e.target, E.rows[4].target);
	e.before = E.rows[4].before;
	e.after = E.rows[4].after;
	/* The link to entry 4 stays as it was: read it back through the walk. */
	w = verify();
	assert_false(w.bad);
	{
		sqlite3 *db;
		sqlite3_stmt *st;

		assert_int_equal(sqlite3_open(E.db, &db), SQLITE_OK);
		assert_int_equal(sqlite3_prepare_v2(db, "SELECT prev_hash FROM audit WHERE seq = 5",
						    -1, &st, NULL),
				 SQLITE_OK);
		assert_int_equal(sqlite3_step(st), SQLITE_ROW);
		memcpy(e.prev_hash, sqlite3_column_blob(st, 0), AUDIT_HASH_LEN);
		sqlite3_finalize(st);
		sqlite3_close(db);
	}
	audit_entry_hash(&e, e.hash);
	for (int i = 0; i < AUDIT_HASH_LEN; i++)
		snprintf(hex + 2 * i, 3, "%02x", e.hash[i]);
	snprintf(sql, sizeof(sql), "UPDATE audit SET actor = 'server', hash = x'%s' WHERE seq = 5",
		 hex);
	db_exec(sql);
	w = verify();
	assert_true(w.bad);
	assert_int_equal(w.bad_seq, 6);
	assert_non_null(strstr(w.why, "entry 6 does not link"));
}

static void test_prune(void **state)
{
	struct audit_walk w;
	uint64_t removed;

	(void)state;
	history_make();
	/* Entries 1-4 are older than 30 days (the default tailnet came at T0-40d). */
	assert_int_equal(admin_op_audit_prune(&E.c, 0, &removed), -EINVAL);
	assert_int_equal(admin_op_audit_prune(&E.c, 30 * DAY, &removed), 0);
	assert_int_equal(removed, 4);
	rows_load();
	assert_int_equal(E.n, 4);
	assert_int_equal(E.rows[0].seq, 5);
	assert_string_equal(E.rows[3].action, "audit.prune");
	assert_string_equal(E.rows[3].actor, "socket:uid0");
	w = verify();
	assert_false(w.bad);
	assert_int_equal(w.n, 4);

	/* Pruning again removes nothing older, and the chain goes on. */
	assert_int_equal(admin_op_audit_prune(&E.c, 30 * DAY, &removed), 0);
	assert_int_equal(removed, 0);
	assert_false(verify().bad);

	/* The anchor is part of the chain: moving it breaks the first link. */
	db_exec("UPDATE audit_anchor SET hash = zeroblob(32)");
	w = verify();
	assert_true(w.bad);
	assert_int_equal(w.bad_seq, 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_entries, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused_write_no_entry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_edit_detected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_detected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rehash_detected, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_prune, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
