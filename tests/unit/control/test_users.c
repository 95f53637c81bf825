/* SPDX-License-Identifier: MIT */
/*
 * Local accounts (control/users.c) on a real store: what each operation
 * writes and refuses, that only Argon2id hashes in range are taken, that
 * reset-2fa forgets the secret and the recovery codes, and the address rules.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <qrencode.h>

#include "auth/password.h"
#include "auth/totp.h"
#include "base/util.h"
#include "control/store.h"
#include "control/users.h"
#include "control/users_cli.h"
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

/*
 * `users add --totp`: the URI the person scans carries the very secret the server checks
 * codes against, the recovery codes given are the ones stored (hashed), and nothing is
 * enrolled for an account that already exists.
 */
static void test_add_totp(void **state)
{
	struct users_enrolment e, e2;
	struct control_account got;
	char h[PASSWORD_HASH_MAX], b32[TOTP_SECRET_B32_MAX], want[200], code[TOTP_DIGITS + 1];
	uint8_t from_uri[TOTP_SECRET_LEN + 8], rh[TOTP_RECOVERY_HASH_LEN];
	const char *p;
	uint64_t step = 0;
	int n;

	(void)state;
	hash("a password", h);
	assert_int_equal(users_account_add_totp(&c, "Bob@Example.com", h, false, &e), 0);
	assert_int_equal(store_account_get(st, "bob@example.com", &got), 0);
	assert_true(got.totp);
	assert_int_equal(got.totp_last_step, 0);
	assert_memory_equal(got.totp_secret, e.secret, TOTP_SECRET_LEN);
	/* The URI: the issuer, the (normalized) account, the secret in base32. */
	totp_base32_encode(e.secret, sizeof(e.secret), b32);
	assert_true(strncmp(e.uri, "otpauth://totp/Trellis:bob%40example.com?", 41) == 0);
	snprintf(want, sizeof(want), "secret=%s", b32);
	assert_non_null(strstr(e.uri, want));
	assert_non_null(strstr(e.uri, "issuer=Trellis"));
	/* A code made from the URI's secret (as the app does) is one the server accepts. */
	p = strstr(e.uri, "secret=") + 7;
	snprintf(b32, sizeof(b32), "%.*s", (int)strcspn(p, "&"), p);
	n = totp_base32_decode(b32, from_uri, sizeof(from_uri));
	assert_int_equal(n, TOTP_SECRET_LEN);
	totp_code(from_uri, (size_t)n, (uint64_t)T0, TOTP_DIGITS, code);
	assert_int_equal(totp_verify(got.totp_secret, sizeof(got.totp_secret), code, (uint64_t)T0,
				     got.totp_last_step, &step),
			 0);
	/* Every recovery code given is stored, and they differ. */
	assert_int_equal(got.n_recovery, CONTROL_RECOVERY_MAX);
	for (unsigned i = 0; i < CONTROL_RECOVERY_MAX; i++) {
		assert_int_equal(totp_recovery_hash(e.recovery[i], rh), 0);
		assert_memory_equal(rh, got.recovery[i], sizeof(rh));
		for (unsigned j = 0; j < i; j++)
			assert_string_not_equal(e.recovery[i], e.recovery[j]);
	}
	/* An existing account: refused, its second factor untouched. */
	assert_int_equal(users_account_add_totp(&c, "bob@example.com", h, false, &e2), -EEXIST);
	assert_int_equal(store_account_get(st, "bob@example.com", &got), 0);
	assert_memory_equal(got.totp_secret, e.secret, TOTP_SECRET_LEN);
	assert_int_equal(writes, 1);
}

/*
 * The second factor of `users add --totp` is pending until a code from the app confirms it:
 * it does not count before (control_account_totp_pending), a wrong code or one from another
 * secret is refused and changes nothing, the right one confirms it and becomes the replay
 * floor, and a confirmed (or absent) factor is not confirmed again.
 */
static void test_totp_confirm(void **state)
{
	struct users_enrolment e;
	struct control_account got;
	char h[PASSWORD_HASH_MAX], code[TOTP_DIGITS + 1], other[TOTP_DIGITS + 1];
	uint8_t wrong_secret[TOTP_SECRET_LEN];
	uint64_t step;

	(void)state;
	hash("a password", h);
	assert_int_equal(users_account_add_totp(&c, "bob@example.com", h, false, &e), 0);
	assert_int_equal(store_account_get(st, "bob@example.com", &got), 0);
	assert_true(control_account_totp_pending(&got));
	assert_int_equal(writes, 1);

	/* A code of another secret (the person scanned something else), garbage, nothing. */
	memset(wrong_secret, 0x5a, sizeof(wrong_secret));
	totp_code(wrong_secret, sizeof(wrong_secret), (uint64_t)T0, TOTP_DIGITS, other);
	totp_code(e.secret, sizeof(e.secret), (uint64_t)T0, TOTP_DIGITS, code);
	if (strcmp(other, code) == 0) /* one in a million: another wrong code */
		other[0] = other[0] == '0' ? '1' : '0';
	assert_int_equal(users_account_totp_confirm(&c, "bob@example.com", other), -EACCES);
	assert_non_null(strstr(c.err, "wrong code"));
	assert_int_equal(users_account_totp_confirm(&c, "bob@example.com", "12345x"), -EACCES);
	assert_int_equal(users_account_totp_confirm(&c, "bob@example.com", ""), -EACCES);
	/* A code for a time far from now (the person's clock, or an old screenshot). */
	totp_code(e.secret, sizeof(e.secret), (uint64_t)T0 - 300, TOTP_DIGITS, other);
	if (strcmp(other, code) != 0)
		assert_int_equal(users_account_totp_confirm(&c, "bob@example.com", other),
				 -EACCES);
	assert_int_equal(store_account_get(st, "bob@example.com", &got), 0);
	assert_true(control_account_totp_pending(&got));
	assert_int_equal(writes, 1);

	/* The app's code now: confirmed, durable, and that step is used. */
	assert_int_equal(users_account_totp_confirm(&c, "BOB@example.com", code), 0);
	assert_int_equal(writes, 2);
	assert_int_equal(store_account_get(st, "bob@example.com", &got), 0);
	assert_false(control_account_totp_pending(&got));
	assert_true(got.totp);
	assert_int_equal(got.totp_last_step, (uint64_t)T0 / TOTP_STEP_S);
	assert_int_equal(got.n_recovery, CONTROL_RECOVERY_MAX);
	assert_int_equal(totp_verify(got.totp_secret, sizeof(got.totp_secret), code, (uint64_t)T0,
				     got.totp_last_step, &step),
			 -EALREADY);
	assert_int_equal(users_account_totp_confirm(&c, "bob@example.com", code), -EALREADY);

	/* Nothing to confirm: no account, no second factor (reset). */
	assert_int_equal(users_account_totp_confirm(&c, "nobody@example.com", code), -ENOENT);
	assert_int_equal(users_account_reset_2fa(&c, "bob@example.com"), 0);
	assert_int_equal(users_account_totp_confirm(&c, "bob@example.com", code), -ENOENT);
	assert_int_equal(users_account_totp_confirm(&c, "not an address", code), -EINVAL);
	assert_int_equal(writes, 3);
}

/* What the CLI reads as a code: one line, spaces dropped; an empty line, the end, too long. */
static void test_code_read(void **state)
{
	static const char in[] = "123 456\n\n 654321\r\n12345678901234567890\nlast";
	char code[USERS_CLI_CODE_MAX], *out = NULL;
	size_t len = 0;
	FILE *f = fmemopen((void *)in, sizeof(in) - 1, "r"), *p = open_memstream(&out, &len);

	(void)state;
	assert_non_null(f);
	assert_non_null(p);
	assert_int_equal(users_cli_code_read(f, p, "bob@example.com", code), 6);
	assert_string_equal(code, "123456");
	assert_int_equal(users_cli_code_read(f, NULL, "bob@example.com", code), 0);
	assert_int_equal(users_cli_code_read(f, NULL, "bob@example.com", code), 6);
	assert_string_equal(code, "654321");
	assert_int_equal(users_cli_code_read(f, NULL, "bob@example.com", code), -EINVAL);
	assert_string_equal(code, "");
	assert_int_equal(users_cli_code_read(f, NULL, "bob@example.com", code), 4);
	assert_string_equal(code, "last");
	assert_int_equal(users_cli_code_read(f, NULL, "bob@example.com", code), -EIO);
	fclose(f);
	fclose(p);
	assert_non_null(strstr(out, "code from the authenticator app for bob@example.com"));
	free(out);
}

/* A module of the half-block rendering: the cell's upper or lower half. */
static bool half_dark(const char *cell, bool lower)
{
	if (!strcmp(cell, "\u2588"))
		return true;
	if (!strcmp(cell, "\u2580"))
		return !lower;
	if (!strcmp(cell, "\u2584"))
		return lower;
	assert_string_equal(cell, " ");
	return false;
}

/*
 * The terminal QR code, read back module by module: exactly libqrencode's matrix for the
 * text, upright (finder patterns at three corners, none at the fourth), inside a light quiet
 * zone. (No QR decoder here: lab/test_login decodes it with zbarimg.)
 */
static void test_qr(void **state)
{
	static const char uri[] = "otpauth://totp/Trellis:ann%40example.com?secret="
				  "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Trellis";
	QRcode *q = QRcode_encodeString(uri, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
	int m = USERS_CLI_QR_MARGIN, w, size, rows = 0;
	char *text = NULL, *line, *save = NULL, big[4000];
	size_t len = 0;
	bool *mod;
	FILE *f;

	(void)state;
	assert_non_null(q);
	w = q->width;
	size = w + 2 * m;
	mod = calloc((size_t)(size + 1) * (size_t)size, sizeof(*mod));
	assert_non_null(mod);
	f = open_memstream(&text, &len);
	assert_non_null(f);
	assert_int_equal(users_cli_qr_print(f, uri, false), 0);
	fclose(f);
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int x = 0;

		for (const char *c = line; *c; x++) {
			size_t n = (unsigned char)*c < 0x80 ? 1 : 3;
			char cell[4] = {0};

			assert_true(x < size);
			memcpy(cell, c, n);
			mod[(2 * rows) * size + x] = half_dark(cell, false);
			mod[(2 * rows + 1) * size + x] = half_dark(cell, true);
			c += n;
		}
		assert_int_equal(x, size);
		rows++;
	}
	assert_int_equal(rows, (size + 1) / 2);
	for (int y = 0; y < size; y++)
		for (int x = 0; x < size; x++) {
			bool in = x >= m && y >= m && x < m + w && y < m + w;
			bool want = in && (q->data[(y - m) * w + (x - m)] & 1);

			assert_int_equal(mod[y * size + x], want);
		}
	/* Finder patterns: a dark 7x7 ring, a light ring inside, a dark 3x3 core. */
	for (int corner = 0; corner < 4; corner++) {
		int ox = m + (corner & 1 ? w - 7 : 0), oy = m + (corner & 2 ? w - 7 : 0);
		bool finder = true;

		for (int y = 0; y < 7; y++)
			for (int x = 0; x < 7; x++) {
				int d = MIN(MIN(x, y), MIN(6 - x, 6 - y));

				finder &= mod[(oy + y) * size + ox + x] == (d != 1);
			}
		assert_int_equal(finder, corner != 3);
	}
	free(text);
	text = NULL;
	/* For a terminal: each line black on white, reset at its end. */
	f = open_memstream(&text, &len);
	assert_int_equal(users_cli_qr_print(f, uri, true), 0);
	fclose(f);
	assert_true(strncmp(text, "\033[30;47m", 8) == 0);
	assert_non_null(strstr(text, "\033[0m\n"));
	free(text);
	/* Too long for any QR code: refused, nothing printed. */
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	text = NULL;
	f = open_memstream(&text, &len);
	assert_int_equal(users_cli_qr_print(f, big, false), -EINVAL);
	fclose(f);
	assert_int_equal(len, 0);
	free(text);
	free(mod);
	QRcode_free(q);
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
	    cmocka_unit_test_setup_teardown(test_add_totp, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_totp_confirm, setup, teardown),
	    cmocka_unit_test(test_code_read),
	    cmocka_unit_test(test_qr),
	    cmocka_unit_test(test_email),
	    cmocka_unit_test_setup_teardown(test_tenancy, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
