/* SPDX-License-Identifier: MIT */
/*
 * Local accounts (control/users.c) on a real store: what each operation
 * writes and refuses, that only Argon2id hashes in range are taken, that
 * reset-2fa forgets the secret and the recovery codes, and the address rules.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth/password.h"
#include "control/store.h"
#include "control/users.h"
#include "control/web.h"

#define T0 1800000000LL

static char dir[64];
static struct store *st;
static struct admin_op_ctx c;
static unsigned writes;

static void committed(void *arg, const char *actor, const struct store_op *op, uint64_t id)
{
	(void)arg;
	(void)id;
	(void)op;
	assert_string_equal(actor, "cli:test");
	writes++;
}

static int setup(void **state)
{
	char path[128];

	(void)state;
	strcpy(dir, "/tmp/trellis-users-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
	assert_int_equal(store_open(path, &st), 0);
	memset(&c, 0, sizeof(c));
	c.store = st;
	c.actor = "cli:test";
	c.now = T0;
	c.committed = committed;
	writes = 0;
	return 0;
}

static int teardown(void **state)
{
	char cmd[160];

	(void)state;
	store_free(st);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

static void hash(const char *pw, char ret[PASSWORD_HASH_MAX])
{
	static const struct password_params cheap = {.m_kib = 64, .t = 1, .p = 1};

	assert_int_equal(password_hash(pw, &cheap, ret), 0);
}

static void test_lifecycle(void **state)
{
	char h1[PASSWORD_HASH_MAX], h2[PASSWORD_HASH_MAX];
	struct control_account a, got, *all = NULL;
	struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT};
	size_t n = 0;
	bool stale;

	(void)state;
	hash("first password", h1);
	hash("second password", h2);
	assert_int_equal(users_account_add(&c, "Ann@Example.COM", h1, true, &a), 0);
	assert_string_equal(a.email, "ann@example.com");
	assert_int_equal(users_account_add(&c, "ann@example.com", h2, false, NULL), -EEXIST);
	assert_string_equal(c.err, "a local account exists for \"ann@example.com\"");
	assert_int_equal(store_account_get(st, "ann@example.com", &got), 0);
	assert_true(got.admin);
	assert_false(got.totp);
	assert_int_equal(got.created, T0);
	assert_int_equal(password_verify(got.password, "first password",
					 &(struct password_params){64, 1, 1}, &stale),
			 0);

	assert_int_equal(users_account_passwd(&c, "ANN@example.com", h2), 0);
	assert_int_equal(store_account_get(st, "ann@example.com", &got), 0);
	assert_string_equal(got.password, h2);

	/* Enrolled (as the login pages write it), then reset. */
	op.account = got;
	op.account.totp = true;
	memset(op.account.totp_secret, 7, sizeof(op.account.totp_secret));
	op.account.totp_last_step = 99;
	op.account.n_recovery = 2;
	memset(op.account.recovery, 9, sizeof(op.account.recovery));
	assert_int_equal(store_write(st, &op, NULL), 0);
	assert_int_equal(store_account_get(st, "ann@example.com", &got), 0);
	assert_true(got.totp);
	assert_int_equal(got.totp_secret[19], 7);
	assert_int_equal(got.totp_last_step, 99);
	assert_int_equal(got.n_recovery, 2);
	assert_int_equal(got.recovery[1][31], 9);
	assert_int_equal(users_account_reset_2fa(&c, "ann@example.com"), 0);
	assert_int_equal(store_account_get(st, "ann@example.com", &got), 0);
	assert_false(got.totp);
	assert_int_equal(got.n_recovery, 0);

	assert_int_equal(users_account_list(&c, &all, &n), 0);
	assert_int_equal(n, 1);
	free(all);
	assert_int_equal(users_account_delete(&c, "ann@example.com"), 0);
	assert_int_equal(users_account_delete(&c, "ann@example.com"), -ENOENT);
	assert_string_equal(c.err, "no local account \"ann@example.com\"");
	assert_int_equal(store_account_get(st, "ann@example.com", &got), -ENOENT);
	assert_int_equal(writes, 4); /* add, passwd, reset, delete: each through admin_op_commit */
}

static void test_refusals(void **state)
{
	char h[PASSWORD_HASH_MAX];

	(void)state;
	hash("a password", h);
	assert_int_equal(users_account_add(&c, "ann", h, false, NULL), -EINVAL);
	assert_int_equal(users_account_add(&c, "ann@localhost", h, false, NULL), -EINVAL);
	assert_int_equal(users_account_add(&c, "a b@example.com", h, false, NULL), -EINVAL);
	assert_int_equal(users_account_add(&c, "a@b@example.com", h, false, NULL), -EINVAL);
	assert_int_equal(users_account_add(&c, "ann@example.com", "plaintext", false, NULL),
			 -EINVAL);
	assert_string_equal(c.err, "not an Argon2id password hash");
	assert_int_equal(users_account_add(&c, "ann@example.com",
					   "$argon2id$v=19$m=4294967295,t=1,p=1$AAAA$AAAA", false,
					   NULL),
			 -EINVAL);
	assert_int_equal(users_account_passwd(&c, "nobody@example.com", h), -ENOENT);
	assert_int_equal(writes, 0);
}

static void test_email(void **state)
{
	char out[CONTROL_EMAIL_MAX];

	(void)state;
	assert_int_equal(users_email_normalize("Bob.Smith+x@Sub.Example.ORG", out), 0);
	assert_string_equal(out, "bob.smith+x@sub.example.org");
	assert_string_equal(users_email_domain(out), "sub.example.org");
	assert_int_equal(users_email_normalize("@example.org", out), -EINVAL);
	assert_int_equal(users_email_normalize("bob@.org", out), -EINVAL);
	assert_int_equal(users_email_normalize("bob@example.", out), -EINVAL);
	assert_int_equal(users_email_normalize("bob@exa\x01mple.org", out), -EINVAL);
	assert_int_equal(users_email_normalize("bob@example.org/x", out), -EINVAL);
}

/* The first login's tenancy (web.c): the email's domain chooses the tailnet. */
static void test_tenancy(void **state)
{
	struct control_tailnet t, t2;
	struct control_user u, u2;
	bool created = false;

	(void)state;
	assert_int_equal(web_tenancy(&c, NULL, "Ann@Example.com", &t, &u, &created), 0);
	assert_true(created);
	assert_string_equal(t.name, "example.com");
	assert_string_equal(u.name, "ann@example.com");
	assert_int_equal(u.tailnet_id, t.id);
	/* The next user of the domain joins it; the same user again is the same user. */
	assert_int_equal(web_tenancy(&c, NULL, "bob@example.com", &t2, &u2, &created), 0);
	assert_false(created);
	assert_int_equal(t2.id, t.id);
	assert_true(u2.id != u.id);
	assert_int_equal(web_tenancy(&c, NULL, "ANN@example.com", &t2, &u2, &created), 0);
	assert_false(created);
	assert_int_equal(u2.id, u.id);
	/* Consumer domains: a personal tailnet each. */
	assert_int_equal(web_tenancy(&c, NULL, "carol@gmail.com", &t2, &u2, &created), 0);
	assert_true(created);
	assert_string_equal(t2.name, "carol-at-gmail.com");
	assert_int_equal(web_tenancy(&c, NULL, "dave@gmail.com", &t, &u, &created), 0);
	assert_true(created);
	assert_true(t.id != t2.id);
	assert_int_equal(
	    web_tenancy(&c, NULL,
			"a.very.long.local.part.that.does.not.fit.into.a.tailnet.name@gmail.com",
			&t, &u, &created),
	    0);
	assert_true(strncmp(t.name, "personal-", 9) == 0 && strlen(t.name) == 25);
	/* The list is configurable: then gmail.com is a company like any other. */
	assert_int_equal(web_tenancy(&c, "example.org", "erin@gmail.com", &t, &u, &created), 0);
	assert_true(created);
	assert_string_equal(t.name, "gmail.com");
	assert_int_equal(web_tenancy(&c, "example.org", "frank@example.org", &t, &u, &created), 0);
	assert_string_equal(t.name, "frank-at-example.org");
	assert_int_equal(web_tenancy(&c, NULL, "not an address", &t, &u, &created), -EINVAL);

	/* The tailnet setting that requires a second factor. */
	assert_int_equal(admin_op_tailnet_require_2fa(&c, "example.com", true), 0);
	assert_int_equal(store_tailnet_get_by_name(st, "example.com", &t), 0);
	assert_true(t.require_2fa);
	assert_false(t.device_approval);
	assert_int_equal(admin_op_tailnet_require_2fa(&c, "example.com", false), 0);
	assert_int_equal(store_tailnet_get_by_name(st, "example.com", &t), 0);
	assert_false(t.require_2fa);
	assert_int_equal(admin_op_tailnet_require_2fa(&c, "nope.example", true), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_lifecycle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
	    cmocka_unit_test(test_email),
	    cmocka_unit_test_setup_teardown(test_tenancy, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
