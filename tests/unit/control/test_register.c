/* SPDX-License-Identifier: MIT */
/*
 * Registration decisions (control/register.c) against a real registry and
 * mapper, without a server, a socket or a store: the decision table (auth
 * key valid / expired / revoked / used / unknown, interactive,
 * re-registration, rotation with old_node_key, ephemeral, tags), the store
 * operations each decision asks for, and what begin/end reserve, commit and
 * undo around the write.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "control/authkey.h"
#include "control/mapper.h"
#include "control/register.h"
#include "control/registry.h"

#define T0 1800000000LL
#define TN_MAIN 1
#define TN_OTHER 2
#define USER_DEFAULT 10
#define USER_ALICE 11
#define EXPIRY 3600

enum key { K_REUSABLE, K_ONEOFF, K_EXPIRED, K_REVOKED, K_USED, K_EPH_TAGS, K_ALICE, K_MAX };

struct env {
	struct mapper *m;
	struct registry *r;
	char keys[K_MAX][AUTHKEY_STR_MAX];
	uint64_t next_id;
};

static struct env E;

static void key_add(enum key which, uint64_t tid, bool reusable)
{
	struct control_authkey k = { .id = which + 1, .tailnet_id = tid, .reusable = reusable };

	k.created = T0 - 100;
	assert_int_equal(authkey_generate(&k, E.keys[which]), 0);
	switch (which) {
	case K_EXPIRED:
		k.expires = T0 - 1;
		break;
	case K_REVOKED:
		k.revoked = true;
		break;
	case K_USED:
		k.uses = 1;
		break;
	case K_EPH_TAGS:
		k.ephemeral = true;
		k.n_tags = 2;
		snprintf(k.tags[0], sizeof(k.tags[0]), "tag:web");
		snprintf(k.tags[1], sizeof(k.tags[1]), "tag:db");
		break;
	case K_ALICE:
		k.user_id = USER_ALICE;
		break;
	case K_ONEOFF:
		k.expires = T0 + 100; /* not yet */
		break;
	default:
		break;
	}
	assert_int_equal(registry_authkey_put(E.r, &k), 0);
}

static int setup(void **state)
{
	struct control_tailnet t = { .id = TN_MAIN, .name = "main", .key_expiry_sec = EXPIRY,
				     .ephemeral_timeout_sec = 60 };
	struct control_tailnet o = { .id = TN_OTHER, .name = "other", .key_expiry_sec = 0,
				     .ephemeral_timeout_sec = 60 };
	struct control_user d = { .id = USER_DEFAULT, .tailnet_id = TN_MAIN, .name = "default" };
	struct control_user a = { .id = USER_ALICE, .tailnet_id = TN_MAIN, .name = "alice" };

	(void)state;
	memset(&E, 0, sizeof(E));
	E.next_id = 100;
	E.m = mapper_new();
	assert_non_null(E.m);
	assert_int_equal(registry_new(E.m, &E.r), 0);
	assert_int_equal(registry_tailnet_put(E.r, &t), 0);
	assert_int_equal(registry_tailnet_put(E.r, &o), 0);
	assert_int_equal(registry_user_put(E.r, &d), 0);
	assert_int_equal(registry_user_put(E.r, &a), 0);
	assert_int_equal(registry_tailnet_get(E.r, TN_MAIN)->default_user, USER_DEFAULT);
	key_add(K_REUSABLE, TN_MAIN, true);
	key_add(K_ONEOFF, TN_MAIN, false);
	key_add(K_EXPIRED, TN_MAIN, true);
	key_add(K_REVOKED, TN_MAIN, true);
	key_add(K_USED, TN_MAIN, false);
	key_add(K_EPH_TAGS, TN_OTHER, true);
	key_add(K_ALICE, TN_MAIN, true);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	registry_free(E.r);
	mapper_free(E.m);
	return 0;
}

struct machine {
	uint8_t mk[32], nk[32], ak[32];
	bool has_ak;
	const char *host;
};

static struct machine machine(uint8_t seed, const char *host)
{
	struct machine x;

	memset(x.mk, seed, sizeof(x.mk));
	memset(x.nk, seed ^ 0x80, sizeof(x.nk));
	memset(x.ak, seed ^ 0x40, sizeof(x.ak));
	x.has_ak = true;
	x.host = host;
	return x;
}

static void decide_at(const struct machine *x, const char *key, const uint8_t *old_nk,
		      uint64_t stream_id, int64_t now, struct register_decision *d)
{
	struct ctrl_register msg;
	struct register_request req = { .msg = &msg, .machine_key = x->mk,
					.stream_node_id = stream_id,
					.default_tailnet_id = TN_MAIN, .now = now };

	memset(&msg, 0, sizeof(msg));
	memcpy(msg.node_key, x->nk, 32);
	msg.has_audit_key = x->has_ak;
	memcpy(msg.audit_key, x->ak, 32);
	snprintf(msg.hostname, sizeof(msg.hostname), "%s", x->host);
	snprintf(msg.os, sizeof(msg.os), "linux");
	if (key)
		snprintf(msg.auth_key, sizeof(msg.auth_key), "%s", key);
	if (old_nk) {
		msg.has_old_node_key = true;
		memcpy(msg.old_node_key, old_nk, 32);
	}
	register_decide(E.r, &req, d);
}

static void decide(const struct machine *x, const char *key, struct register_decision *d)
{
	decide_at(x, key, NULL, 0, T0, d);
}

/* The write succeeds: the node exists with the id a store would give it. */
static uint64_t complete(struct register_decision *d)
{
	uint64_t id = d->insert ? E.next_id++ : d->rec.id;

	assert_null(d->error);
	assert_int_equal(register_begin(E.r, d, T0), 0);
	register_end(E.r, d, 0, id, T0);
	assert_int_equal(d->rec.id, id);
	return id;
}

static uint64_t register_ok(const struct machine *x, const char *key)
{
	struct register_decision d;

	decide(x, key, &d);
	return complete(&d);
}

static const struct control_node *rec(uint64_t id)
{
	const struct control_node *n = registry_node_record(E.r, id);

	assert_non_null(n);
	return n;
}

static void test_authkey_refusals(void **state)
{
	struct machine x = machine(1, "refused");
	struct register_decision d;

	(void)state;
	decide(&x, E.keys[K_EXPIRED], &d);
	assert_string_equal(d.error, authkey_strerror(AUTHKEY_ERR_EXPIRED));
	decide(&x, E.keys[K_REVOKED], &d);
	assert_string_equal(d.error, authkey_strerror(AUTHKEY_ERR_REVOKED));
	decide(&x, E.keys[K_USED], &d);
	assert_string_equal(d.error, authkey_strerror(AUTHKEY_ERR_USED));
	decide(&x, "trellis-auth-000000000000-00000000000000000000000000000000", &d);
	assert_string_equal(d.error, authkey_strerror(AUTHKEY_ERR_UNKNOWN));
	decide(&x, "not a key", &d);
	assert_string_equal(d.error, authkey_strerror(AUTHKEY_ERR_UNKNOWN));
	/* A known id with a wrong secret. */
	{
		char wrong[AUTHKEY_STR_MAX];

		snprintf(wrong, sizeof(wrong), "%s", E.keys[K_REUSABLE]);
		wrong[strlen(wrong) - 1] = wrong[strlen(wrong) - 1] == '0' ? '1' : '0';
		decide(&x, wrong, &d);
		assert_string_equal(d.error, authkey_strerror(AUTHKEY_ERR_UNKNOWN));
	}
	/* Nothing was reserved by refusals. */
	assert_null(registry_node_in_tailnet(E.r, TN_MAIN, x.mk));
	assert_false(registry_name_taken(E.r, TN_MAIN, "refused"));
}

static void test_authkey_unknown_asks_for_the_feed(void **state)
{
	struct ctrl_register msg;

	(void)state;
	memset(&msg, 0, sizeof(msg));
	assert_false(register_authkey_unknown(E.r, &msg)); /* no key */
	snprintf(msg.auth_key, sizeof(msg.auth_key), "%s", E.keys[K_REUSABLE]);
	assert_false(register_authkey_unknown(E.r, &msg));
	snprintf(msg.auth_key, sizeof(msg.auth_key),
		 "trellis-auth-0123456789ab-00000000000000000000000000000000");
	assert_true(register_authkey_unknown(E.r, &msg));
	snprintf(msg.auth_key, sizeof(msg.auth_key), "garbage");
	assert_false(register_authkey_unknown(E.r, &msg)); /* malformed: nothing to look up */
}

static void test_authkey_valid(void **state)
{
	struct machine x = machine(2, "Web.Example.com");
	struct register_decision d;
	struct store_op ops[2];
	uint64_t id;

	(void)state;
	decide(&x, E.keys[K_REUSABLE], &d);
	assert_null(d.error);
	assert_true(d.insert);
	assert_true(d.rename);
	assert_non_null(d.authkey); /* reusable keys count their uses too */
	assert_true(d.authkey->reusable);
	assert_true(d.rec.approved);
	assert_false(d.rec.ephemeral);
	assert_int_equal(d.rec.tailnet_id, TN_MAIN);
	assert_int_equal(d.rec.user_id, USER_DEFAULT);
	assert_int_equal(d.rec.key_expiry, T0 + EXPIRY);
	assert_memory_equal(d.rec.node_key, x.nk, 32);
	assert_memory_equal(d.rec.machine_key, x.mk, 32);
	assert_int_equal(register_begin(E.r, &d, T0), 0);
	/* The name is a DNS label of the host name's first part; an address is taken. */
	assert_string_equal(d.rec.name, "web");
	assert_int_equal(d.rec.ipv4[0], 100);
	assert_true(registry_name_taken(E.r, TN_MAIN, "web"));
	assert_int_equal(register_store_ops(&d, ops), 2);
	assert_int_equal(ops[0].kind, STORE_OP_AUTHKEY_UPDATE);
	assert_int_equal(ops[0].authkey.uses, 1);
	assert_int_equal(ops[1].kind, STORE_OP_NODE_INSERT);
	assert_string_equal(ops[1].node.name, "web");
	register_end(E.r, &d, 0, 500, T0);
	id = d.rec.id;
	assert_int_equal(id, 500);
	assert_int_equal(registry_node_by_machine(E.r, x.mk)->id, id);
	assert_int_equal(registry_node_in_tailnet(E.r, TN_MAIN, x.mk)->id, id);
	assert_true(rec(id)->approved);
	assert_true(control_node_visible(rec(id), T0));
}

static void test_oneoff_counted_before_the_write(void **state)
{
	struct machine x = machine(3, "once"), y = machine(4, "twice");
	struct register_decision d, e;
	struct store_op ops[2];

	(void)state;
	decide(&x, E.keys[K_ONEOFF], &d);
	assert_null(d.error);
	assert_non_null(d.authkey);
	assert_int_equal(register_begin(E.r, &d, T0), 0);
	/* The key's use goes to the store first, then the node. */
	assert_int_equal(register_store_ops(&d, ops), 2);
	assert_int_equal(ops[0].kind, STORE_OP_AUTHKEY_UPDATE);
	assert_int_equal(ops[0].authkey.uses, 1);
	assert_int_equal(ops[1].kind, STORE_OP_NODE_INSERT);
	/* While the first write is in flight, the key is used already. */
	decide(&y, E.keys[K_ONEOFF], &e);
	assert_string_equal(e.error, authkey_strerror(AUTHKEY_ERR_USED));
	register_end(E.r, &d, 0, E.next_id++, T0);
	decide(&y, E.keys[K_ONEOFF], &e);
	assert_string_equal(e.error, authkey_strerror(AUTHKEY_ERR_USED));
}

static void test_ephemeral_tags_and_owner(void **state)
{
	struct machine x = machine(5, "ci-runner"), y = machine(6, "alices-laptop");
	struct register_decision d;
	uint64_t id;

	(void)state;
	decide(&x, E.keys[K_EPH_TAGS], &d);
	assert_null(d.error);
	assert_int_equal(d.rec.tailnet_id, TN_OTHER);
	assert_true(d.rec.ephemeral);
	assert_int_equal(d.rec.n_tags, 2);
	assert_string_equal(d.rec.tags[0], "tag:web");
	assert_string_equal(d.rec.tags[1], "tag:db");
	assert_int_equal(d.rec.user_id, 0); /* tagged, no owner */
	assert_int_equal(d.rec.key_expiry, 0); /* that tailnet's keys do not expire */
	complete(&d);
	decide(&y, E.keys[K_ALICE], &d);
	assert_int_equal(d.rec.user_id, USER_ALICE);
	id = complete(&d);
	assert_int_equal(rec(id)->user_id, USER_ALICE);
	/* A new node key without a credential (--force-reauth): it waits, still alice's. */
	memset(y.nk, 0x66, 32);
	decide(&y, NULL, &d);
	assert_null(d.error);
	assert_false(d.insert);
	assert_false(d.rec.approved);
	assert_true(d.relogin); /* it waits like a new machine, for alice to sign in */
	assert_int_equal(d.rec.user_id, USER_ALICE);
	assert_int_equal(d.prev.user_id, USER_ALICE);
}

static void test_interactive(void **state)
{
	struct machine x = machine(7, "laptop");
	struct register_decision d;
	uint64_t id;

	(void)state;
	decide(&x, NULL, &d);
	assert_null(d.error);
	assert_true(d.insert);
	assert_false(d.rec.approved);
	assert_int_equal(d.rec.tailnet_id, TN_MAIN); /* the default tailnet */
	assert_int_equal(d.rec.user_id, USER_DEFAULT);
	assert_int_equal(d.rec.key_expiry, T0 + EXPIRY);
	assert_false(d.relogin);
	id = complete(&d);
	assert_false(rec(id)->approved);
	assert_false(control_node_visible(rec(id), T0));
	/* Asking again while unapproved: still waiting for the admin, same node, no relogin. */
	decide(&x, NULL, &d);
	assert_false(d.insert);
	assert_false(d.rec.approved);
	assert_false(d.relogin);
	assert_int_equal(d.rec.id, id);
}

static void test_reregistration(void **state)
{
	struct machine x = machine(8, "server"), x2;
	struct register_decision d;
	struct store_op ops[2];
	uint64_t id;
	int64_t expiry;

	(void)state;
	id = register_ok(&x, E.keys[K_REUSABLE]);
	expiry = rec(id)->key_expiry;
	/* The audit key it sent is on its record (its flow logs verify with it). */
	assert_true(rec(id)->has_audit_key);
	assert_memory_equal(rec(id)->audit_key, x.ak, 32);
	/* A new one (the node lost its key file) replaces it; none sent keeps it. */
	x2 = x;
	memset(x2.ak, 0x66, 32);
	decide_at(&x2, NULL, NULL, 0, T0 + 5, &d);
	assert_memory_equal(d.rec.audit_key, x2.ak, 32);
	complete(&d);
	assert_memory_equal(rec(id)->audit_key, x2.ak, 32);
	x2.has_ak = false;
	decide_at(&x2, NULL, NULL, 0, T0 + 5, &d);
	assert_true(d.rec.has_audit_key);
	assert_memory_equal(d.rec.audit_key, rec(id)->audit_key, 32);
	complete(&d);
	/* A known, visible machine without a credential, with the node key it has: as it is. */
	decide_at(&x, NULL, NULL, 0, T0 + 10, &d);
	assert_null(d.error);
	assert_false(d.insert);
	assert_false(d.rename);
	assert_int_equal(d.rec.id, id);
	assert_true(d.rec.approved);
	assert_int_equal(d.rec.key_expiry, expiry);
	/*
	 * With a new node key and no proof of the old one (not a rotation): a new login, as
	 * `trellis up --force-reauth` asks. It waits for approval, same node.
	 */
	x2 = x;
	memset(x2.nk, 0x55, 32);
	decide_at(&x2, NULL, NULL, 0, T0 + 10, &d);
	assert_null(d.error);
	assert_false(d.insert);
	assert_int_equal(d.rec.id, id);
	assert_false(d.rec.approved);
	assert_true(d.relogin);
	/* ... or is approved at once with a credential: the new key replaces the old. */
	decide_at(&x2, E.keys[K_REUSABLE], NULL, 0, T0 + 10, &d);
	assert_null(d.error);
	assert_false(d.insert);
	assert_false(d.rename);
	assert_int_equal(d.rec.id, id);
	assert_true(d.rec.approved);
	assert_int_equal(d.rec.key_expiry, T0 + 10 + EXPIRY);
	expiry = d.rec.key_expiry;
	assert_memory_equal(d.rec.node_key, x2.nk, 32);
	assert_int_equal(register_begin(E.r, &d, T0 + 10), 0);
	/* The key's use count, then the node. */
	assert_int_equal(register_store_ops(&d, ops), 2);
	assert_int_equal(ops[0].kind, STORE_OP_AUTHKEY_UPDATE);
	assert_int_equal(ops[1].kind, STORE_OP_NODE_UPDATE);
	/* The in-memory record changes at once (later writes carry it). */
	assert_memory_equal(rec(id)->node_key, x2.nk, 32);
	register_end(E.r, &d, 0, 0, T0 + 10);
	assert_int_equal(registry_node_by_machine(E.r, x.mk)->id, id);

	/* With a new host name: a new name, the old one is free again. */
	x2.host = "server-renamed";
	decide_at(&x2, NULL, NULL, 0, T0 + 20, &d);
	assert_true(d.rename);
	complete(&d);
	assert_string_equal(rec(id)->name, "server-renamed");
	assert_true(registry_name_taken(E.r, TN_MAIN, "server-renamed"));
	assert_false(registry_name_taken(E.r, TN_MAIN, "server"));

	/* Expired: no way back without a credential; it waits for approval again. */
	decide_at(&x2, NULL, NULL, 0, expiry + 1, &d);
	assert_null(d.error);
	assert_false(d.rec.approved);
	assert_true(d.relogin);
	assert_int_equal(d.rec.id, id);
	assert_int_equal(d.rec.key_expiry, expiry + 1 + EXPIRY);
	/* Its record is untouched until the login completes (nothing was begun). */
	assert_true(rec(id)->approved);
	assert_int_equal(rec(id)->key_expiry, expiry);
	/* With a key it is approved again, same node. */
	decide_at(&x2, E.keys[K_REUSABLE], NULL, 0, expiry + 1, &d);
	assert_false(d.relogin);
	assert_true(d.rec.approved);
	assert_int_equal(d.rec.id, id);
}

static void test_machine_known_elsewhere(void **state)
{
	struct machine x = machine(9, "roamer");
	struct register_decision d;
	uint64_t id;

	(void)state;
	id = register_ok(&x, E.keys[K_EPH_TAGS]); /* in the other tailnet */
	/* Without a credential it stays in the tailnet it is known in. */
	decide(&x, NULL, &d);
	assert_null(d.error);
	assert_int_equal(d.rec.tailnet_id, TN_OTHER);
	assert_int_equal(d.rec.id, id);
	assert_true(d.rec.approved);
	/* A key of another tailnet registers a second node there. */
	decide(&x, E.keys[K_REUSABLE], &d);
	assert_true(d.insert);
	assert_int_equal(d.rec.tailnet_id, TN_MAIN);
	id = complete(&d);
	/* The machine key finds the node it registered last. */
	assert_int_equal(registry_node_by_machine(E.r, x.mk)->id, id);
}

static void test_unknown_tailnet(void **state)
{
	struct machine x = machine(10, "lost");
	struct ctrl_register msg = { 0 };
	struct register_request req = { .msg = &msg, .machine_key = x.mk,
					.default_tailnet_id = 99, .now = T0 };
	struct register_decision d;

	(void)state;
	snprintf(msg.hostname, sizeof(msg.hostname), "lost");
	register_decide(E.r, &req, &d);
	assert_string_equal(d.error, "unknown tailnet");
}

static void test_in_progress_and_names(void **state)
{
	struct machine x = machine(11, "laptop"), y = machine(12, "laptop"),
		       z = machine(13, "laptop");
	struct register_decision d, e, f;

	(void)state;
	decide(&x, E.keys[K_REUSABLE], &d);
	assert_int_equal(register_begin(E.r, &d, T0), 0);
	/* The same machine again while its first write is in flight. */
	decide(&x, E.keys[K_REUSABLE], &e);
	assert_string_equal(e.error, "registration in progress");
	/* Names reserved in flight count: "laptop" is taken (by test_interactive too). */
	decide(&y, E.keys[K_REUSABLE], &e);
	assert_int_equal(register_begin(E.r, &e, T0), 0);
	decide(&z, E.keys[K_REUSABLE], &f);
	assert_int_equal(register_begin(E.r, &f, T0), 0);
	assert_string_not_equal(d.rec.name, e.rec.name);
	assert_string_not_equal(e.rec.name, f.rec.name);
	assert_string_not_equal(d.rec.name, f.rec.name);
	assert_int_equal(strncmp(e.rec.name, "laptop-", 7), 0);
	assert_memory_not_equal(d.rec.ipv4, e.rec.ipv4, 4);
	register_end(E.r, &d, 0, E.next_id++, T0);
	register_end(E.r, &e, 0, E.next_id++, T0);
	register_end(E.r, &f, 0, E.next_id++, T0);
}

static void test_failed_write_undoes(void **state)
{
	struct machine x = machine(14, "flaky"), y = machine(15, "next");
	struct register_decision d, e;
	uint8_t addr[4];
	uint64_t id;
	uint8_t nk_before[32];

	(void)state;
	/* A new node whose insert fails: address, name and place are free again. */
	decide(&x, E.keys[K_REUSABLE], &d);
	assert_int_equal(register_begin(E.r, &d, T0), 0);
	memcpy(addr, d.rec.ipv4, 4);
	register_end(E.r, &d, -EIO, 0, T0);
	assert_null(registry_node_in_tailnet(E.r, TN_MAIN, x.mk));
	assert_false(registry_name_taken(E.r, TN_MAIN, "flaky"));
	decide(&y, E.keys[K_REUSABLE], &e);
	assert_int_equal(register_begin(E.r, &e, T0), 0);
	assert_memory_equal(e.rec.ipv4, addr, 4); /* the lowest free address, again */
	register_end(E.r, &e, 0, E.next_id++, T0);

	/* A known node whose update fails keeps its record, in memory as on disk. */
	id = register_ok(&x, E.keys[K_REUSABLE]);
	memcpy(nk_before, rec(id)->node_key, 32);
	memset(x.nk, 0x66, 32);
	x.host = "flaky-renamed";
	decide(&x, NULL, &d);
	assert_int_equal(register_begin(E.r, &d, T0), 0);
	assert_memory_equal(rec(id)->node_key, x.nk, 32);
	register_end(E.r, &d, -EEXIST, 0, T0);
	assert_memory_equal(rec(id)->node_key, nk_before, 32);
	assert_string_equal(rec(id)->name, "flaky");
	assert_true(registry_name_taken(E.r, TN_MAIN, "flaky"));
	assert_false(registry_name_taken(E.r, TN_MAIN, "flaky-renamed"));
	/* The node-key index follows: the old key is x's again, the new one free. */
	assert_true(registry_node_key_taken(E.r, nk_before, y.mk));
	assert_false(registry_node_key_taken(E.r, x.nk, y.mk));
}

/* A node key belongs to one machine: another is refused, in flight and once written. */
static void test_node_key_unique(void **state)
{
	struct machine a = machine(20, "owner"), b = machine(21, "thief");
	struct register_decision d, e;

	(void)state;
	memcpy(b.nk, a.nk, 32);
	decide(&a, E.keys[K_REUSABLE], &d);
	assert_int_equal(register_begin(E.r, &d, T0), 0);
	/* a's write is in flight: its key is reserved. */
	decide(&b, E.keys[K_REUSABLE], &e);
	assert_string_equal(e.error, REGISTER_ERR_NODE_KEY_TAKEN);
	register_end(E.r, &d, 0, E.next_id++, T0);
	decide(&b, E.keys[K_REUSABLE], &e);
	assert_string_equal(e.error, REGISTER_ERR_NODE_KEY_TAKEN);
	/* Nor by rotation: b rotates its own node to a's key. */
	memset(b.nk, 0x33, 32);
	register_ok(&b, E.keys[K_REUSABLE]);
	{
		uint8_t own[32];

		memcpy(own, b.nk, 32);
		memcpy(b.nk, a.nk, 32);
		decide_at(&b, NULL, own, 0, T0, &e);
		assert_string_equal(e.error, REGISTER_ERR_NODE_KEY_TAKEN);
	}
	/* The same machine in another tailnet may bring its key along. */
	decide(&a, E.keys[K_EPH_TAGS], &e);
	assert_null(e.error);
	assert_true(e.insert);
}

static void test_rotation(void **state)
{
	struct machine x = machine(16, "rot"), other = machine(17, "rot-other"), unknown;
	struct register_decision d;
	uint8_t old[32], new1[32], new2[32];
	uint64_t id, other_id;

	(void)state;
	id = register_ok(&x, E.keys[K_REUSABLE]);
	other_id = register_ok(&other, E.keys[K_REUSABLE]);
	memcpy(old, x.nk, 32);
	memset(new1, 0x71, 32);
	memset(new2, 0x72, 32);

	/* Holding the current key: rotated, same node, fresh expiry. */
	memcpy(x.nk, new1, 32);
	decide_at(&x, NULL, old, id, T0 + 50, &d);
	assert_null(d.error);
	assert_true(d.rotate);
	assert_false(d.insert);
	assert_int_equal(d.rec.id, id);
	assert_memory_equal(d.rec.node_key, new1, 32);
	assert_int_equal(d.rec.key_expiry, T0 + 50 + EXPIRY);
	assert_memory_equal(d.prev.node_key, old, 32);
	complete(&d);
	assert_memory_equal(rec(id)->node_key, new1, 32);

	/* A retry whose answer was lost: already holds the new key, accepted as is. */
	decide_at(&x, NULL, old, id, T0 + 60, &d);
	assert_null(d.error);
	assert_false(d.rotate);
	assert_memory_equal(d.rec.node_key, new1, 32);

	/* The old key proves nothing any more. */
	memcpy(x.nk, new2, 32);
	decide_at(&x, NULL, old, id, T0 + 70, &d);
	assert_non_null(d.error);
	assert_non_null(strstr(d.error, "old node key does not match"));

	/* Not on another node's stream. */
	decide_at(&x, NULL, new1, other_id, T0 + 70, &d);
	assert_non_null(strstr(d.error, "not this stream's node"));

	/* An unknown machine. */
	unknown = machine(18, "nobody");
	decide_at(&unknown, NULL, unknown.nk, 0, T0, &d);
	assert_non_null(strstr(d.error, "unknown node"));

	/* Expired: must re-authenticate. */
	decide_at(&x, NULL, new1, id, T0 + 50 + EXPIRY + 1, &d);
	assert_non_null(strstr(d.error, "expired"));

	/* Unapproved (interactive, waiting): cannot rotate. */
	{
		struct machine w = machine(19, "waiting");
		uint8_t wk[32];

		memcpy(wk, w.nk, 32);
		register_ok(&w, NULL);
		memset(w.nk, 0x73, 32);
		decide_at(&w, NULL, wk, 0, T0, &d);
		assert_non_null(strstr(d.error, "unknown node"));
	}
}

/*
 * Device approval on: an auth key registers the node but leaves it waiting for `nodes
 * approve`, unless the key is preauthorized; off, every valid key approves (as before).
 */
static void test_device_approval(void **state)
{
	struct control_tailnet t = registry_tailnet_get(E.r, TN_MAIN)->rec;
	struct control_authkey *k;
	struct machine x = machine(0x31, "laptop"), y = machine(0x32, "server");
	struct register_decision d;

	(void)state;
	t.device_approval = true;
	assert_int_equal(registry_tailnet_put(E.r, &t), 0);
	decide(&x, E.keys[K_REUSABLE], &d);
	assert_null(d.error);
	assert_false(d.rec.approved);

	k = d.authkey;
	assert_non_null(k);
	k->preauthorized = true;
	decide(&y, E.keys[K_REUSABLE], &d);
	assert_null(d.error);
	assert_true(d.rec.approved);

	k->preauthorized = false;
	t.device_approval = false;
	assert_int_equal(registry_tailnet_put(E.r, &t), 0);
	decide(&x, E.keys[K_REUSABLE], &d);
	assert_true(d.rec.approved);
}

/*
 * A tailnet with require_machine_cert asks the hook for every registration in it (auth key,
 * interactive, re-registration, rotation) and nowhere else; a refusal is the decision's
 * error; a valid certificate caps the node key's expiry at its end.
 */
static struct {
	unsigned calls;
	uint64_t tailnet;
	const char *answer;
	int64_t not_after;
} H;

static const char *hook(void *arg, uint64_t tailnet_id, int64_t *ret_not_after)
{
	(void)arg;
	H.calls++;
	H.tailnet = tailnet_id;
	*ret_not_after = H.answer ? 0 : H.not_after;
	return H.answer;
}

static void decide_hooked(const struct machine *x, const char *key, const uint8_t *old_nk,
			  uint64_t stream_id, struct register_decision *d)
{
	struct ctrl_register msg;
	struct register_request req = {.msg = &msg,
				       .machine_key = x->mk,
				       .stream_node_id = stream_id,
				       .default_tailnet_id = TN_MAIN,
				       .now = T0,
				       .mcert_check = hook};

	memset(&msg, 0, sizeof(msg));
	memcpy(msg.node_key, x->nk, 32);
	snprintf(msg.hostname, sizeof(msg.hostname), "%s", x->host);
	if (key)
		snprintf(msg.auth_key, sizeof(msg.auth_key), "%s", key);
	if (old_nk) {
		msg.has_old_node_key = true;
		memcpy(msg.old_node_key, old_nk, 32);
	}
	register_decide(E.r, &req, d);
}

static void test_machine_cert_rule(void **state)
{
	struct control_tailnet t = registry_tailnet_get(E.r, TN_MAIN)->rec;
	struct machine x = machine(0x51, "certified"), y = machine(0x52, "other");
	struct register_decision d;
	uint8_t old[32];
	uint64_t id;

	(void)state;
	memset(&H, 0, sizeof(H));
	/* Not required: never asked, even without a hook. */
	decide(&x, E.keys[K_REUSABLE], &d);
	assert_null(d.error);
	assert_int_equal(H.calls, 0);

	t.require_machine_cert = true;
	assert_int_equal(registry_tailnet_put(E.r, &t), 0);
	/* Required and no hook: refused. */
	decide(&x, E.keys[K_REUSABLE], &d);
	assert_non_null(d.error);
	/* Refused by the hook, with an auth key and interactively. */
	H.answer = "machine certificate refused: revoked";
	decide_hooked(&x, E.keys[K_REUSABLE], NULL, 0, &d);
	assert_string_equal(d.error, "machine certificate refused: revoked");
	assert_int_equal(H.tailnet, TN_MAIN);
	decide_hooked(&y, NULL, NULL, 0, &d);
	assert_string_equal(d.error, "machine certificate refused: revoked");
	assert_int_equal(H.calls, 2);
	/* Valid until T0 + 600: the node key expires then, not at T0 + EXPIRY. */
	H.answer = NULL;
	H.not_after = T0 + 600;
	decide_hooked(&x, E.keys[K_REUSABLE], NULL, 0, &d);
	assert_null(d.error);
	assert_int_equal(d.rec.key_expiry, T0 + 600);
	id = complete(&d);
	/* A certificate beyond the tailnet's expiry changes nothing. */
	H.not_after = T0 + EXPIRY + 1;
	decide_hooked(&y, E.keys[K_REUSABLE], NULL, 0, &d);
	assert_null(d.error);
	assert_int_equal(d.rec.key_expiry, T0 + EXPIRY);
	/* A rotation is asked too, and refused once the certificate is. */
	memcpy(old, x.nk, 32);
	x.nk[0] ^= 0xff;
	H.answer = "machine certificate refused: expired";
	decide_hooked(&x, NULL, old, id, &d);
	assert_string_equal(d.error, "machine certificate refused: expired");
	H.answer = NULL;
	H.not_after = T0 + 300;
	decide_hooked(&x, NULL, old, id, &d);
	assert_null(d.error);
	assert_true(d.rotate);
	assert_int_equal(d.rec.key_expiry, T0 + 300);
	/* Another tailnet's registrations are not asked. */
	H.calls = 0;
	decide_hooked(&y, E.keys[K_EPH_TAGS], NULL, 0, &d);
	assert_null(d.error);
	assert_int_equal(H.calls, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_authkey_refusals),
	    cmocka_unit_test(test_authkey_unknown_asks_for_the_feed),
	    cmocka_unit_test(test_authkey_valid),
	    cmocka_unit_test(test_oneoff_counted_before_the_write),
	    cmocka_unit_test(test_ephemeral_tags_and_owner),
	    cmocka_unit_test(test_interactive),
	    cmocka_unit_test(test_reregistration),
	    cmocka_unit_test(test_machine_known_elsewhere),
	    cmocka_unit_test(test_unknown_tailnet),
	    cmocka_unit_test(test_in_progress_and_names),
	    cmocka_unit_test(test_failed_write_undoes),
	    cmocka_unit_test(test_node_key_unique),
	    cmocka_unit_test(test_rotation),
	    cmocka_unit_test(test_device_approval),
	    cmocka_unit_test(test_machine_cert_rule),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
