/* SPDX-License-Identifier: MIT */
/*
 * A recursive-descent HuJSON parser (see hujson.h). Depth is capped, so the recursion is
 * bounded; values and string bytes come from one arena of 64 KiB blocks, freed at once.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/hujson.h"

#define BLOCK_SIZE (64U << 10)

struct block {
	struct block *next;
	size_t used, cap;
	_Alignas(16) unsigned char data[];
};

struct hujson_doc {
	struct block *blocks;
	struct hujson_value *root;
};

struct parser {
	const char *p, *end;
	uint32_t line;
	const char *line_start;
	struct hujson_doc *doc;
	size_t n_values;
	char *err;
	int ret;
};

static void *arena_alloc(struct hujson_doc *doc, size_t n)
{
	struct block *b = doc->blocks;

	n = (n + 15) & ~(size_t)15;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > BLOCK_SIZE ? n : BLOCK_SIZE;

		b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->cap = cap;
		b->used = 0;
		b->next = doc->blocks;
		doc->blocks = b;
	}
	b->used += n;
	return b->data + b->used - n;
}

static uint32_t col_of(const struct parser *ps, const char *at)
{
	return (uint32_t)(at - ps->line_start) + 1;
}

static __attribute__((format(printf, 3, 4))) int fail(struct parser *ps, const char *at,
						      const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ps->ret)
		return ps->ret;
	n = snprintf(ps->err, HUJSON_ERR_MAX, "%u:%u: ", ps->line, col_of(ps, at));
	va_start(ap, fmt);
	if (n > 0 && n < HUJSON_ERR_MAX)
		vsnprintf(ps->err + n, HUJSON_ERR_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	ps->ret = -EINVAL;
	return ps->ret;
}

static int nomem(struct parser *ps)
{
	if (!ps->ret) {
		snprintf(ps->err, HUJSON_ERR_MAX, "out of memory");
		ps->ret = -ENOMEM;
	}
	return ps->ret;
}

static void newline(struct parser *ps, const char *nl)
{
	ps->line++;
	ps->line_start = nl + 1;
}

/* Whitespace and comments. */
static int skip(struct parser *ps)
{
	while (ps->p < ps->end) {
		char c = *ps->p;

		if (c == '\n') {
			newline(ps, ps->p);
			ps->p++;
		} else if (c == ' ' || c == '\t' || c == '\r') {
			ps->p++;
		} else if (c == '/' && ps->p + 1 < ps->end && ps->p[1] == '/') {
			while (ps->p < ps->end && *ps->p != '\n')
				ps->p++;
		} else if (c == '/' && ps->p + 1 < ps->end && ps->p[1] == '*') {
			const char *start = ps->p;
			uint32_t line = ps->line;
			const char *ls = ps->line_start;

			ps->p += 2;
			for (;;) {
				if (ps->p + 1 >= ps->end) {
					ps->line = line;
					ps->line_start = ls;
					return fail(ps, start, "unterminated comment");
				}
				if (ps->p[0] == '*' && ps->p[1] == '/')
					break;
				if (*ps->p == '\n')
					newline(ps, ps->p);
				ps->p++;
			}
			ps->p += 2;
		} else {
			break;
		}
	}
	return 0;
}

static struct hujson_value *value_new(struct parser *ps, enum hujson_type t, const char *at)
{
	struct hujson_value *v;

	if (ps->n_values >= HUJSON_MAX_VALUES) {
		fail(ps, at, "more than %u values", HUJSON_MAX_VALUES);
		ps->ret = -E2BIG;
		return NULL;
	}
	v = arena_alloc(ps->doc, sizeof(*v));
	if (!v) {
		nomem(ps);
		return NULL;
	}
	memset(v, 0, sizeof(*v));
	v->type = t;
	v->line = ps->line;
	v->col = col_of(ps, at);
	ps->n_values++;
	return v;
}

static int hex4(const char *p, unsigned *ret)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*ret = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | (cp >> 6));
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | (cp >> 12));
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | (cp >> 18));
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* At the opening quote. The decoded string is never longer than its source. */
static int parse_string(struct parser *ps, const char **ret, size_t *ret_len)
{
	const char *start = ps->p, *q;
	char *out, *o;

	for (q = ps->p + 1; q < ps->end && *q != '"'; q++) {
		if (*q == '\\')
			q++;
		else if (*q == '\n' || (unsigned char)*q < 0x20)
			break;
	}
	if (q >= ps->end || *q != '"')
		return fail(ps, start, "unterminated string");
	out = arena_alloc(ps->doc, (size_t)(q - start));
	if (!out)
		return nomem(ps);
	o = out;
	for (q = start + 1; *q != '"'; q++) {
		unsigned cp, lo;

		if (*q != '\\') {
			*o++ = *q;
			continue;
		}
		switch (*++q) {
		case '"': case '\\': case '/':
			*o++ = *q;
			break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			if (ps->end - q < 5 || hex4(q + 1, &cp) < 0)
				return fail(ps, q - 1, "bad \\u escape");
			q += 4;
			if (cp >= 0xd800 && cp < 0xdc00) {
				if (ps->end - q < 7 || q[1] != '\\' || q[2] != 'u' ||
				    hex4(q + 3, &lo) < 0 || lo < 0xdc00 || lo >= 0xe000)
					return fail(ps, q - 5, "unpaired surrogate in \\u escape");
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				q += 6;
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				return fail(ps, q - 5, "unpaired surrogate in \\u escape");
			}
			if (!cp)
				return fail(ps, q - 5, "\\u0000 in a string");
			o += put_utf8(o, cp);
			break;
		default:
			return fail(ps, q - 1, "bad escape \\%c", *q);
		}
	}
	*o = '\0';
	*ret = out;
	*ret_len = (size_t)(o - out);
	ps->p = q + 1;
	return 0;
}

static int parse_number(struct parser *ps, double *ret)
{
	const char *s = ps->p, *q = s;
	char buf[64];

	if (q < ps->end && *q == '-')
		q++;
	if (q < ps->end && *q == '0') {
		q++;
	} else if (q < ps->end && *q >= '1' && *q <= '9') {
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	} else {
		return fail(ps, s, "bad number");
	}
	if (q < ps->end && *q == '.') {
		q++;
		if (q >= ps->end || *q < '0' || *q > '9')
			return fail(ps, s, "bad number");
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < ps->end && (*q == 'e' || *q == 'E')) {
		q++;
		if (q < ps->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= ps->end || *q < '0' || *q > '9')
			return fail(ps, s, "bad number");
		while (q < ps->end && *q >= '0' && *q <= '9')
			q++;
	}
	if ((size_t)(q - s) >= sizeof(buf))
		return fail(ps, s, "number too long");
	memcpy(buf, s, (size_t)(q - s));
	buf[q - s] = '\0';
	*ret = strtod(buf, NULL);
	ps->p = q;
	return 0;
}

static bool word(struct parser *ps, const char *w)
{
	size_t n = strlen(w);

	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, w, n))
		return false;
	ps->p += n;
	return true;
}

static struct hujson_value *parse_value(struct parser *ps, unsigned depth);

/* At '[' or '{'. */
static struct hujson_value *parse_container(struct parser *ps, unsigned depth)
{
	bool obj = *ps->p == '{';
	char close = obj ? '}' : ']';
	struct hujson_value *v = value_new(ps, obj ? HUJSON_OBJECT : HUJSON_ARRAY, ps->p);
	struct hujson_value **tail;

	if (!v)
		return NULL;
	if (depth >= HUJSON_MAX_DEPTH) {
		fail(ps, ps->p, "nested deeper than %u levels", HUJSON_MAX_DEPTH);
		return NULL;
	}
	tail = &v->child;
	ps->p++;
	for (;;) {
		const char *key = NULL;
		size_t key_len;
		uint32_t kl = 0, kc = 0;
		struct hujson_value *c;

		if (skip(ps))
			return NULL;
		if (ps->p >= ps->end) {
			fail(ps, ps->p, "unexpected end of input, expected '%c'", close);
			return NULL;
		}
		/* Also after a comma: the trailing comma HuJSON allows. */
		if (*ps->p == close) {
			ps->p++;
			return v;
		}
		if (obj) {
			if (*ps->p != '"') {
				fail(ps, ps->p, "expected a string key or '}'");
				return NULL;
			}
			kl = ps->line;
			kc = col_of(ps, ps->p);
			if (parse_string(ps, &key, &key_len) || skip(ps))
				return NULL;
			if (ps->p >= ps->end || *ps->p != ':') {
				fail(ps, ps->p, "expected ':' after key");
				return NULL;
			}
			ps->p++;
			if (skip(ps))
				return NULL;
		}
		c = parse_value(ps, depth + 1);
		if (!c)
			return NULL;
		c->key = key;
		c->key_line = kl;
		c->key_col = kc;
		*tail = c;
		tail = &c->next;
		v->n++;
		if (skip(ps))
			return NULL;
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			return v;
		}
		if (ps->p >= ps->end)
			fail(ps, ps->p, "unexpected end of input, expected '%c'", close);
		else
			fail(ps, ps->p, "expected ',' or '%c'", close);
		return NULL;
	}
}

static struct hujson_value *parse_value(struct parser *ps, unsigned depth)
{
	const char *at = ps->p;
	struct hujson_value *v;

	if (ps->p >= ps->end) {
		fail(ps, at, "unexpected end of input, expected a value");
		return NULL;
	}
	switch (*ps->p) {
	case '{':
	case '[':
		return parse_container(ps, depth);
	case '"':
		v = value_new(ps, HUJSON_STRING, at);
		if (!v || parse_string(ps, &v->str, &v->str_len))
			return NULL;
		return v;
	case 't':
	case 'f':
	case 'n':
		v = value_new(ps, HUJSON_NULL, at);
		if (!v)
			return NULL;
		if (word(ps, "true")) {
			v->type = HUJSON_BOOL;
			v->b = true;
		} else if (word(ps, "false")) {
			v->type = HUJSON_BOOL;
		} else if (!word(ps, "null")) {
			fail(ps, at, "unexpected character '%c'", *at);
			return NULL;
		}
		return v;
	default:
		if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) {
			v = value_new(ps, HUJSON_NUMBER, at);
			if (!v || parse_number(ps, &v->num))
				return NULL;
			return v;
		}
		if ((unsigned char)*ps->p >= 0x20 && (unsigned char)*ps->p < 0x7f)
			fail(ps, at, "unexpected character '%c'", *at);
		else
			fail(ps, at, "unexpected byte 0x%02x", (unsigned char)*at);
		return NULL;
	}
}

int hujson_parse(const char *text, size_t len, struct hujson_doc **ret, char *err)
{
	struct parser ps = { .p = text, .end = text + len, .line = 1, .line_start = text,
			     .err = err };
	struct hujson_doc *doc;

	err[0] = '\0';
	if (len > HUJSON_MAX_SIZE) {
		snprintf(err, HUJSON_ERR_MAX, "larger than %u bytes", HUJSON_MAX_SIZE);
		return -E2BIG;
	}
	if (memchr(text, '\0', len)) {
		const char *z = memchr(text, '\0', len);

		/* Count lines up to it, for the position. */
		for (const char *q = text; q < z; q++)
			if (*q == '\n')
				newline(&ps, q);
		return fail(&ps, z, "NUL byte in input");
	}
	doc = calloc(1, sizeof(*doc));
	if (!doc)
		return -ENOMEM;
	ps.doc = doc;
	if (skip(&ps))
		goto out;
	doc->root = parse_value(&ps, 0);
	if (!doc->root)
		goto out;
	if (skip(&ps))
		goto out;
	if (ps.p != ps.end)
		fail(&ps, ps.p, "unexpected text after the document");
out:
	if (ps.ret) {
		hujson_free(doc);
		return ps.ret;
	}
	*ret = doc;
	return 0;
}

const struct hujson_value *hujson_root(const struct hujson_doc *doc)
{
	return doc->root;
}

void hujson_free(struct hujson_doc *doc)
{
	struct block *b, *n;

	if (!doc)
		return;
	for (b = doc->blocks; b; b = n) {
		n = b->next;
		free(b);
	}
	free(doc);
}

const struct hujson_value *hujson_get(const struct hujson_value *v, const char *key)
{
	if (!v || v->type != HUJSON_OBJECT)
		return NULL;
	for (const struct hujson_value *c = v->child; c; c = c->next)
		if (!strcmp(c->key, key))
			return c;
	return NULL;
}

const char *hujson_type_name(enum hujson_type t)
{
	static const char *const names[] = { "null", "boolean", "number", "string", "array",
					     "object" };

	return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}
