/* SPDX-License-Identifier: MIT */
/*
 * The login pages' pieces without a server (control/web.c, included for its statics):
 * the failure delays grow and are kept per address and per source network, a success
 * clears an address's count; source networks are /24 and /64; consumer domains match
 * whole names only, and the list serve takes is checked; login methods are checked before
 * they reach the page; a password hash of older parameters is upgraded at a good login.
 */
#include "../../../src/control/web.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define S NSEC_PER_SEC

static void test_delays(void **state)
{
	static struct web w; /* big: not on the stack */
	struct limit_slot *a, *b;
	uint64_t now = 1000 * S;

	(void)state;
	memset(&w, 0, sizeof(w));
	a = limit_slot(&w, w.by_email, "email", "ann@example.com");
	for (unsigned i = 1; i < WEB_FREE_FAILURES; i++) {
		limit_fail(a, WEB_FREE_FAILURES, now);
		assert_int_equal(a->until_ns, 0); /* free tries: no wait */
	}
	/* Then 1 s, 2 s, 4 s, ... */
	limit_fail(a, WEB_FREE_FAILURES, now);
	assert_int_equal(a->until_ns, now + 1 * S);
	limit_fail(a, WEB_FREE_FAILURES, now);
	assert_int_equal(a->until_ns, now + 2 * S);
	limit_fail(a, WEB_FREE_FAILURES, now);
	assert_int_equal(a->until_ns, now + 4 * S);
	/* ... up to the cap. */
	for (int i = 0; i < 40; i++)
		limit_fail(a, WEB_FREE_FAILURES, now);
	assert_int_equal(a->until_ns, now + WEB_DELAY_MAX_NS);
	/* The same address again is the same slot; another address, and a source, are not. */
	assert_ptr_equal(limit_slot(&w, w.by_email, "email", "ann@example.com"), a);
	b = limit_slot(&w, w.by_email, "email", "bob@example.com");
	assert_int_equal(b->fails, 0);
	assert_int_equal(limit_slot(&w, w.by_source, "source", "c00002")->fails, 0);
	for (unsigned i = 1; i < WEB_FREE_FAILURES_SOURCE; i++)
		limit_fail(limit_slot(&w, w.by_source, "source", "c00002"),
			   WEB_FREE_FAILURES_SOURCE, now);
	assert_int_equal(limit_slot(&w, w.by_source, "source", "c00002")->until_ns, 0);
}

static void test_sources(void **state)
{
	char a[SOURCE_MAX], b[SOURCE_MAX];

	(void)state;
	source_of("192.0.2.11", a);
	source_of("192.0.2.200", b);
	assert_string_equal(a, b); /* one /24 */
	source_of("198.51.100.1", b);
	assert_string_not_equal(a, b);
	source_of("2001:db8:1:2::1", a);
	source_of("2001:db8:1:2:ffff::9", b);
	assert_string_equal(a, b); /* one /64 */
	source_of("2001:db8:1:3::1", b);
	assert_string_not_equal(a, b);
	source_of("unix:uid0", a);
	assert_string_equal(a, "other");
}

static void test_consumer(void **state)
{
	(void)state;
	assert_true(consumer("gmail.com,outlook.com", "gmail.com"));
	assert_true(consumer("gmail.com, outlook.com", "Outlook.COM"));
	assert_false(consumer("gmail.com", "mail.com"));
	assert_false(consumer("gmail.com", "gmail.co"));
	assert_false(consumer("", "gmail.com"));
}

/* serve --consumer-domains: what the server takes, and what it refuses before starting. */
static void test_consumer_domains_check(void **state)
{
	static const char *const good[] = {
	    "gmail.com",
	    "example.net, mail.example.org",
	    "A-1.Example.COM,b.example",
	    WEB_CONSUMER_DOMAINS_DEFAULT,
	};
	static const char *const bad[] = {
	    "",
	    ",",
	    "gmail.com,",
	    "gmail.com,,outlook.com",
	    "a b.com",
	    "ann@gmail.com",
	    ".example.com",
	    "-x.com",
	    "gmail.com;outlook.com",
	};
	char err[128];

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		assert_int_equal(web_consumer_domains_check(good[i], err, sizeof(err)), 0);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		err[0] = '\0';
		assert_int_equal(web_consumer_domains_check(bad[i], err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "is not a domain name"));
	}
}

/* The password step as post_login hands it to the worker, run here: check_work, check_done. */
static void password_step(struct web *w, struct web_session *ss, const char *email, const char *pw)
{
	struct check_job *c = calloc(1, sizeof(*c));
	struct control_account a;

	assert_non_null(c);
	c->w = w;
	memcpy(c->session_id, ss->id, sizeof(c->session_id));
	snprintf(c->email, sizeof(c->email), "%s", email);
	snprintf(c->password, sizeof(c->password), "%s", pw);
	snprintf(c->src, sizeof(c->src), "c00002");
	c->known = store_account_get(w->env.store, email, &a) == 0;
	if (c->known)
		snprintf(c->encoded, sizeof(c->encoded), "%s", a.password);
	ss->step = STEP_CHECKING;
	ss->msg[0] = '\0';
	check_work(&c->job);
	check_done(&c->job, 0);
}

static struct password_params stored_params(struct store *st, char ret[PASSWORD_HASH_MAX])
{
	struct control_account a;
	struct password_params p;

	assert_int_equal(store_account_get(st, "ann@example.com", &a), 0);
	assert_int_equal(password_params_parse(a.password, &p), 0);
	snprintf(ret, PASSWORD_HASH_MAX, "%s", a.password);
	return p;
}

/*
 * Upgrade on login (issue 11): a hash made with older parameters is checked with them and,
 * once the password is right, stored again with the server's; a wrong password, and a hash
 * already of the server's parameters, leave the stored one as it is.
 */
static void test_rehash_on_login(void **state)
{
	static struct web w; /* big: not on the stack */
	const struct password_params old = {.m_kib = 64, .t = 1, .p = 1},
				     cur = {.m_kib = 128, .t = 2, .p = 1};
	struct store_op op = {.kind = STORE_OP_ACCOUNT_PUT};
	struct web_session *ss = &w.sessions[0];
	char dir[] = "/tmp/trellis-web-XXXXXX", path[64], cmd[64];
	char h0[PASSWORD_HASH_MAX], h1[PASSWORD_HASH_MAX], h2[PASSWORD_HASH_MAX];
	struct password_params p;
	struct store *st;
	bool stale;

	(void)state;
	memset(&w, 0, sizeof(w));
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/%s", dir, STORE_DB_NAME);
	assert_int_equal(store_open(path, &st), 0);
	w.env.store = st;
	w.env.loop = loop_new();
	assert_non_null(w.env.loop);
	w.params = cur;
	ss->used = true;
	memset(ss->id, 'a', ID_HEX);
	snprintf(op.account.email, sizeof(op.account.email), "ann@example.com");
	assert_int_equal(password_hash("correct horse", &old, op.account.password), 0);
	assert_int_equal(store_write(st, &op, NULL), 0);

	password_step(&w, ss, "ann@example.com", "wrong horse");
	assert_int_equal(ss->step, STEP_SIGN_IN);
	assert_string_equal(ss->msg, "Wrong email address or password.");
	p = stored_params(st, h0);
	assert_int_equal(p.m_kib, old.m_kib);
	assert_string_equal(h0, op.account.password);

	password_step(&w, ss, "ann@example.com", "correct horse");
	assert_int_equal(ss->step, STEP_ENROL); /* no second factor yet */
	p = stored_params(st, h1);
	assert_int_equal(p.m_kib, cur.m_kib);
	assert_int_equal(p.t, cur.t);
	assert_int_equal(password_verify(h1, "correct horse", &cur, &stale), 0);
	assert_false(stale);

	password_step(&w, ss, "ann@example.com", "correct horse");
	stored_params(st, h2);
	assert_string_equal(h2, h1); /* up to date: not written again */

	store_free(st);
	loop_free(w.env.loop);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

static void method_fn(struct httpd_request *r, const char *code, void *ctx)
{
	(void)r;
	(void)code;
	(void)ctx;
}

static void test_methods(void **state)
{
	static struct web w;

	(void)state;
	memset(&w, 0, sizeof(w));
	assert_int_equal(web_method_add(&w, "Sign in with Example SSO", "oidc", method_fn, NULL),
			 0);
	assert_int_equal(web_method_add(&w, "x", "../admin", method_fn, NULL), -EINVAL);
	assert_int_equal(web_method_add(&w, "x", "a\"b", method_fn, NULL), -EINVAL);
	assert_int_equal(web_method_add(&w, "x", "", method_fn, NULL), -EINVAL);
	assert_int_equal(web_method_add(&w, "x", "y", NULL, NULL), -EINVAL);
	for (int i = 1; i < WEB_METHODS_MAX; i++)
		assert_int_equal(web_method_add(&w, "x", "m", method_fn, NULL), 0);
	assert_int_equal(web_method_add(&w, "x", "m", method_fn, NULL), -ENOSPC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_delays),
	    cmocka_unit_test(test_sources),
	    cmocka_unit_test(test_consumer),
	    cmocka_unit_test(test_consumer_domains_check),
	    cmocka_unit_test(test_rehash_on_login),
	    cmocka_unit_test(test_methods),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
