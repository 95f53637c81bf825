/* SPDX-License-Identifier: MIT */
/* HuJSON: comments, trailing commas, escapes, errors with line:column, the caps. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/hujson.h"

static struct hujson_doc *parse_ok(const char *s)
{
	struct hujson_doc *doc = NULL;
	char err[HUJSON_ERR_MAX];
	int r = hujson_parse(s, strlen(s), &doc, err);

	if (r)
		fail_msg("parse of %s failed: %s", s, err);
	return doc;
}

static void parse_err(const char *s, int want, const char *msg)
{
	struct hujson_doc *doc = NULL;
	char err[HUJSON_ERR_MAX];

	assert_int_equal(hujson_parse(s, strlen(s), &doc, err), want);
	assert_null(doc);
	if (strcmp(err, msg))
		fail_msg("for %s: got \"%s\", want \"%s\"", s, err, msg);
}

static void test_comments_trailing_commas(void **state)
{
	static const char text[] = "// a policy\n"
				   "{\n"
				   "  /* groups\n     of people */ \"groups\": {\"group:eng\": [\"a@x\", \"b@x\",],},\n"
				   "  \"n\": [1, -2.5e1, true, false, null, ], // done\n"
				   "}\n";
	struct hujson_doc *doc = parse_ok(text);
	const struct hujson_value *root = hujson_root(doc), *g, *e, *n;

	(void)state;
	assert_int_equal(root->type, HUJSON_OBJECT);
	assert_int_equal(root->n, 2);
	assert_int_equal(root->line, 2);
	g = hujson_get(hujson_get(root, "groups"), "group:eng");
	assert_non_null(g);
	assert_int_equal(g->type, HUJSON_ARRAY);
	assert_int_equal(g->n, 2);
	assert_int_equal(g->key_line, 4);
	assert_int_equal(g->key_col, 30);
	e = g->child->next;
	assert_string_equal(e->str, "b@x");
	assert_int_equal(e->line, 4);
	assert_int_equal(e->col, 51);
	assert_null(e->next);
	n = hujson_get(root, "n");
	assert_int_equal(n->n, 5);
	assert_true(n->child->num == 1);
	assert_true(n->child->next->num == -25);
	assert_true(n->child->next->next->b);
	assert_int_equal(n->child->next->next->next->next->type, HUJSON_NULL);
	assert_null(hujson_get(root, "missing"));
	hujson_free(doc);
}

static void test_strings(void **state)
{
	struct hujson_doc *doc = parse_ok("[\"a\\\"b\\\\c\\/\\n\\u00e9\\ud83d\\ude00\"]");
	const struct hujson_value *s = hujson_root(doc)->child;

	(void)state;
	assert_string_equal(s->str, "a\"b\\c/\n\xc3\xa9\xf0\x9f\x98\x80");
	assert_int_equal(s->str_len, strlen(s->str));
	hujson_free(doc);
}

static void test_errors(void **state)
{
	(void)state;
	parse_err("{\n  \"a\": [1, 2\n", -EINVAL, "3:1: unexpected end of input, expected ']'");
	parse_err("{\"a\" 1}", -EINVAL, "1:6: expected ':' after key");
	parse_err("{\n\n   \"a\": tru}", -EINVAL, "3:9: unexpected character 't'");
	parse_err("[1,,2]", -EINVAL, "1:4: unexpected character ','");
	parse_err("{a: 1}", -EINVAL, "1:2: expected a string key or '}'");
	parse_err("[\"abc]", -EINVAL, "1:2: unterminated string");
	parse_err("[\"a\nb\"]", -EINVAL, "1:2: unterminated string");
	parse_err("[1] x", -EINVAL, "1:5: unexpected text after the document");
	parse_err("/* open", -EINVAL, "1:1: unterminated comment");
	parse_err("[\"\\x\"]", -EINVAL, "1:3: bad escape \\x");
	parse_err("[\"\\ud800\"]", -EINVAL, "1:3: unpaired surrogate in \\u escape");
	parse_err("[\"\\u0000\"]", -EINVAL, "1:3: \\u0000 in a string");
	parse_err("[01]", -EINVAL, "1:3: expected ',' or ']'");
	parse_err("[1.]", -EINVAL, "1:2: bad number");
	parse_err("", -EINVAL, "1:1: unexpected end of input, expected a value");
	parse_err("[1,\n \x01]", -EINVAL, "2:2: unexpected byte 0x01");
	{
		struct hujson_doc *doc = NULL;
		char err[HUJSON_ERR_MAX];

		assert_int_equal(hujson_parse("[\n\0]", 3, &doc, err), -EINVAL);
		assert_string_equal(err, "2:1: NUL byte in input");
	}
}

static void test_caps(void **state)
{
	size_t n = HUJSON_MAX_DEPTH + 1, len = 2 * n;
	char *s = malloc(HUJSON_MAX_SIZE + 2);
	struct hujson_doc *doc = NULL;
	char err[HUJSON_ERR_MAX];

	(void)state;
	if (!s) {
		fail_msg("out of memory");
		return;
	}
	/* Nesting: refused at the level past the cap, with its place. */
	memset(s, '[', n);
	memset(s + n, ']', n);
	assert_int_equal(hujson_parse(s, len, &doc, err), -EINVAL);
	assert_string_equal(err, "1:65: nested deeper than 64 levels");
	memset(s, '[', n - 1);
	memset(s + n - 1, ']', n - 1);
	assert_int_equal(hujson_parse(s, 2 * (n - 1), &doc, err), 0);
	hujson_free(doc);
	/* Size. */
	memset(s, ' ', HUJSON_MAX_SIZE + 1);
	s[0] = '1';
	assert_int_equal(hujson_parse(s, HUJSON_MAX_SIZE + 1, &doc, err), -E2BIG);
	/* Values: [0,0,0,...] past the cap. */
	len = 0;
	s[len++] = '[';
	for (size_t i = 0; i < HUJSON_MAX_VALUES + 1; i++) {
		s[len++] = '0';
		s[len++] = ',';
	}
	s[len++] = ']';
	assert_true(len <= HUJSON_MAX_SIZE);
	assert_int_equal(hujson_parse(s, len, &doc, err), -E2BIG);
	assert_non_null(strstr(err, "more than"));
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_comments_trailing_commas),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_caps),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
