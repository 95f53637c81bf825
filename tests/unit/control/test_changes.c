// SPDX-License-Identifier: MIT
/*
 * The change feed against the server's own writes of the same node: the admin CLI writes a
 * node straight to the store (a second store on the database, as the CLI opens it) while one
 * of the server's writes of that node is in flight. Neither change may be lost, in memory or
 * in the store, whichever commits first.
 *
 * The test is the server's loop thread: it includes server.c, makes the server without
 * running its loop, and runs the pieces in the order it wants: the server's write, the
 * CLI's, the feed (changes_drain), the completions (store_completions_run). Only the store's
 * writer is a thread of its own; a gate in front of its backend holds the server's write
 * uncommitted while the CLI commits and the feed is read.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/server.c"

/* ---- a gate in front of the server's SQLite writer ---- */

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool armed, entered, open;
} G = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false, false};

static int gated_apply(void *be, const struct store_op *ops, size_t n, uint64_t origin, int *errs,
		       uint64_t *ids)
{
	pthread_mutex_lock(&G.lock);
	if (G.armed) {
		G.entered = true;
		pthread_cond_broadcast(&G.cond);
		while (!G.open)
			pthread_cond_wait(&G.cond, &G.lock);
		G.armed = false;
	}
	pthread_mutex_unlock(&G.lock);
	return store_backend_sqlite.apply(be, ops, n, origin, errs, ids);
}

static struct store_backend gated;

/* The next batch of the server's writer waits at the gate: returns once it is there. */
static void gate_hold(void (*submit)(void *), void *arg)
{
	pthread_mutex_lock(&G.lock);
	G.armed = true;
	G.entered = G.open = false;
	pthread_mutex_unlock(&G.lock);
	submit(arg);
	pthread_mutex_lock(&G.lock);
	while (!G.entered)
		pthread_cond_wait(&G.cond, &G.lock);
	pthread_mutex_unlock(&G.lock);
}

static void gate_open(void)
{
	pthread_mutex_lock(&G.lock);
	G.open = true;
	pthread_cond_broadcast(&G.cond);
	pthread_mutex_unlock(&G.lock);
}

/* ---- the server, the CLI's store, one node ---- */

static struct {
	char dir[64];
	struct control_server *s;
	struct store *cli;
	uint64_t id;
} E;

static int setup(void **state)
{
	struct control_serve_opts o = {
		.listen = "127.0.0.1:0", .no_relay = true, .store_backend = &gated
	};
	struct control_node n = {0};
	int64_t now = time_wall_s();

	(void)state;
	gated = store_backend_sqlite;
	gated.apply = gated_apply;
	strcpy(E.dir, "/tmp/trellis-changes-XXXXXX");
	assert_non_null(mkdtemp(E.dir));
	o.state_dir = E.dir;
	assert_int_equal(control_server_new(&o, &E.s), 0);
	assert_int_equal(admin_store_open(E.dir, &E.cli), 0);

	/* A node the CLI wrote, as the server learns it through the feed. */
	n.tailnet_id = E.s->default_tid;
	snprintf(n.name, sizeof(n.name), "alpha");
	snprintf(n.hostname, sizeof(n.hostname), "alpha");
	snprintf(n.os, sizeof(n.os), "linux");
	memset(n.machine_key, 0xa1, sizeof(n.machine_key));
	memset(n.node_key, 0xb2, sizeof(n.node_key));
	memcpy(n.ipv4, (uint8_t[]){100, 64, 0, 7}, 4);
	n.approved = true;
	n.created = now;
	n.key_expiry = now + 86400;
	assert_int_equal(store_node_insert(E.cli, &n), 0);
	E.id = n.id;
	changes_drain(&E.s->changes, now);
	assert_non_null(mapper_node_get(E.s->m, E.id));
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	/* A test that failed with the gate shut: the server's writer must finish to stop. */
	gate_open();
	store_free(E.cli);
	control_server_free(E.s);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", E.dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* `trellis-control nodes rename ID NAME --offline`: the CLI's write, durable on return. */
static void cli_rename(const char *name)
{
	struct admin_op_ctx c = {.store = E.cli, .actor = "cli:test", .now = time_wall_s()};
	char id[32];

	snprintf(id, sizeof(id), "%" PRIu64, E.id);
	assert_int_equal(admin_op_node_rename(&c, id, NULL, name), 0);
}

static void cli_delete(void)
{
	struct admin_op_ctx c = {.store = E.cli, .actor = "cli:test", .now = time_wall_s()};
	char id[32];

	snprintf(id, sizeof(id), "%" PRIu64, E.id);
	assert_int_equal(admin_op_node_delete(&c, id, NULL), 0);
}

static struct control_node stored(void)
{
	struct control_node n;

	assert_int_equal(store_node_get(E.cli, E.id, &n), 0);
	return n;
}

/* The server's writes in flight: made durable, then their completions run. */
static void server_writes_complete(void)
{
	store_flush(E.s->store);
	store_completions_run(E.s->store);
}

/* ---- tests ---- */

/*
 * The CLI commits first; the server's write of the node's live state, made from its older
 * record, commits after, and the feed is read before its completion: the rename stays.
 */
static void test_live_write_after_cli(void **state)
{
	const struct control_node *m;
	struct control_node n;
	char ep[ENDPOINT_STR_MAX];

	(void)state;
	cli_rename("renamed");
	/* The node reports an endpoint: a write of its live state, from the record before. */
	n = *mapper_node_get(E.s->m, E.id);
	n.n_endpoints = 1;
	assert_int_equal(endpoint_parse(&n.endpoints[0], "198.51.100.7:41641"), 0);
	registry_node_update(E.s->reg, &n, time_wall_s());
	persist_node(E.s, E.id);
	store_flush(E.s->store);
	changes_drain(&E.s->changes, time_wall_s());
	store_completions_run(E.s->store);

	n = stored();
	assert_string_equal(n.name, "renamed");
	assert_int_equal(n.n_endpoints, 1);
	endpoint_format(&n.endpoints[0], ep, sizeof(ep));
	assert_string_equal(ep, "198.51.100.7:41641");
	m = mapper_node_get(E.s->m, E.id);
	assert_string_equal(m->name, "renamed");
	assert_int_equal(m->n_endpoints, 1);
}

static void give_up(void *arg)
{
	struct control_node n = *mapper_node_get(E.s->m, E.id);

	key_give_up(E.s, &n, *(int64_t *)arg);
}

/*
 * The server's write (the node's key given up: it expires now) is in flight and not yet
 * committed when the CLI's rename commits and the feed brings it: the feed's record must not
 * take the expiry out of memory, and the server's write must not take the name out of the
 * store. Both end up in both.
 */
static void test_feed_during_write(void **state)
{
	int64_t now = time_wall_s() - 5; /* not the key expiry setup made */
	const struct control_node *m;
	struct control_node n;

	(void)state;
	gate_hold(give_up, &now);
	assert_int_equal(mapper_node_get(E.s->m, E.id)->key_expiry, now);
	cli_rename("renamed");
	changes_drain(&E.s->changes, time_wall_s());
	/* Held for the write: the expiry stays in memory, the version does not move past it. */
	assert_int_equal(mapper_node_get(E.s->m, E.id)->key_expiry, now);
	assert_int_equal(registry_feed_held(E.s->reg), 1);
	gate_open();
	server_writes_complete();

	assert_int_equal(registry_feed_held(E.s->reg), 0);
	n = stored();
	assert_string_equal(n.name, "renamed");
	assert_int_equal(n.key_expiry, now);
	m = mapper_node_get(E.s->m, E.id);
	assert_string_equal(m->name, "renamed");
	assert_int_equal(m->key_expiry, now);
	/* The name index follows the rename. */
	assert_non_null(registry_node_get(E.s->reg, E.id));
	assert_string_equal(registry_node_get(E.s->reg, E.id)->name, "renamed");
}

/* The CLI deletes the node while the server's write of it waits: it goes, in memory too. */
static void test_delete_during_write(void **state)
{
	int64_t now = time_wall_s() - 5;

	(void)state;
	gate_hold(give_up, &now);
	cli_delete();
	changes_drain(&E.s->changes, time_wall_s());
	assert_non_null(mapper_node_get(E.s->m, E.id));
	gate_open();
	server_writes_complete();
	assert_null(mapper_node_get(E.s->m, E.id));
	assert_null(registry_node_get(E.s->reg, E.id));
	assert_int_equal(registry_feed_held(E.s->reg), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_live_write_after_cli, setup, teardown),
		cmocka_unit_test_setup_teardown(test_feed_during_write, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_during_write, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
