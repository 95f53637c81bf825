/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_POLICY_HUJSON_H
#define TRELLIS_POLICY_HUJSON_H

/*
 * HuJSON: JSON with comments (slash-slash to the end of the line, slash-star to star-slash)
 * and a trailing comma after the last element of an array or object. The parser keeps every
 * value's line and column (1-based, column in bytes), so that whoever reads the document can
 * say where a bad value is: "policy.hujson:12:7: unknown group".
 *
 * Duplicate keys are kept (in order); readers that care refuse them.
 *
 * Bounded: at most HUJSON_MAX_SIZE bytes of input and HUJSON_MAX_DEPTH levels of nesting; all
 * values and strings live in one arena, at most HUJSON_MAX_VALUES values, so a document costs
 * O(input) memory and time whatever its shape.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HUJSON_MAX_SIZE (2U << 20)
#define HUJSON_MAX_DEPTH 64
#define HUJSON_MAX_VALUES (256U << 10)
#define HUJSON_ERR_MAX 256

enum hujson_type {
	HUJSON_NULL,
	HUJSON_BOOL,
	HUJSON_NUMBER,
	HUJSON_STRING,
	HUJSON_ARRAY,
	HUJSON_OBJECT,
};

struct hujson_value {
	enum hujson_type type;
	uint32_t line, col;
	bool b;
	double num;
	const char *str; /* NUL-terminated (UTF-8; a \u0000 escape is refused) */
	size_t str_len;
	/* Arrays and objects: the first child, then each child's next. */
	uint32_t n;
	struct hujson_value *child, *next;
	/* A member of an object: its key and where the key starts. */
	const char *key;
	uint32_t key_line, key_col;
};

struct hujson_doc;

/*
 * Parses len bytes. 0 with *ret set, or -EINVAL with "LINE:COL: what" in err (HUJSON_ERR_MAX
 * bytes), -E2BIG (over a cap, also in err), -ENOMEM.
 */
int hujson_parse(const char *text, size_t len, struct hujson_doc **ret, char *err);
const struct hujson_value *hujson_root(const struct hujson_doc *doc);
void hujson_free(struct hujson_doc *doc);

/* The member named key of an object, or NULL (also when v is not an object). */
const struct hujson_value *hujson_get(const struct hujson_value *v, const char *key);
const char *hujson_type_name(enum hujson_type t);

#endif
