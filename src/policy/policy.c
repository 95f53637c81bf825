/* SPDX-License-Identifier: MIT */
/*
 * The policy model and its compiler (see policy.h, docs/policy.md).
 *
 * Parsing turns the HuJSON document into rules of selectors; every name is resolved and
 * checked while parsing, so a policy that parses can be compiled over any set of nodes.
 * Strings point into the document, which the policy keeps.
 *
 * Compiling over n nodes: each rule's src and dst become bitsets of node indices (through
 * per-user and per-tag lists of nodes, so a selector costs the nodes it names). Nodes that are
 * in the same rules' srcs and dsts (and, where autogroup:self is used, have the same user) see
 * the same peers: they form a class, and a class's row of the visibility matrix is computed
 * once as the union of the dsts of the rules it is a source of and the srcs of the rules it is
 * a destination of. A filter is built on demand for one node from the rules it is a
 * destination of.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "policy/hujson.h"
#include "policy/policy.h"

enum sel_kind { SEL_ANY, SEL_USER, SEL_GROUP, SEL_TAG, SEL_MEMBER, SEL_TAGGED, SEL_SELF, SEL_PREFIX };

struct sel {
	enum sel_kind kind;
	const char *name; /* user (without a trailing '@'), tag */
	size_t group;	  /* SEL_GROUP: index into p->groups */
	struct netmap_prefix prefix;
	const char *text;
};

struct portrange {
	uint16_t first, last;
};

struct dst {
	struct sel sel;
	struct portrange *ranges;
	size_t n_ranges;
	const char *ports_text;
};

struct rule {
	uint32_t line;
	struct sel *srcs;
	size_t n_srcs;
	struct dst *dsts;
	size_t n_dsts;
	unsigned n_protos;
	uint8_t protos[4];
	const char *proto_text; /* NULL: the default */
	bool has_self;
};

struct group {
	const char *name;
	uint32_t line, col;
	const char **members; /* user names, sorted */
	size_t n;
};

struct host {
	const char *name;
	uint32_t line, col;
	struct netmap_prefix prefix;
};

struct tagowner {
	const char *name;
	uint32_t line, col;
};

struct policy {
	struct hujson_doc *doc;
	struct group *groups;
	size_t n_groups;
	struct host *hosts;
	size_t n_hosts;
	struct tagowner *tags;
	size_t n_tags;
	struct rule *rules;
	size_t n_rules;
};

static const uint8_t default_protos[] = { 6, 17, 1, 58 };

static const struct {
	const char *name;
	uint8_t num;
} proto_names[] = {
	{ "icmp", 1 },	 { "igmp", 2 },	 { "ipv4", 4 },	     { "ip-in-ip", 4 },	 { "tcp", 6 },
	{ "egp", 8 },	 { "igp", 9 },	 { "udp", 17 },	     { "gre", 47 },	 { "esp", 50 },
	{ "ah", 51 },	 { "ipv6-icmp", 58 }, { "icmpv6", 58 }, { "sctp", 132 },
};

/* ---- errors ---- */

static __attribute__((format(printf, 3, 4))) int verr(char *err, const struct hujson_value *at,
						      const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, POLICY_ERR_MAX, "%u:%u: ", at ? at->line : 1, at ? at->col : 1);

	va_start(ap, fmt);
	if (n > 0 && n < POLICY_ERR_MAX)
		vsnprintf(err + n, POLICY_ERR_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* A member's key, for errors about the key itself. */
static __attribute__((format(printf, 3, 4))) int kerr(char *err, const struct hujson_value *m,
						      const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, POLICY_ERR_MAX, "%u:%u: ", m->key_line, m->key_col);

	va_start(ap, fmt);
	if (n > 0 && n < POLICY_ERR_MAX)
		vsnprintf(err + n, POLICY_ERR_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* ---- names ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* All three tables start with the name, so one comparison sorts and searches them. */
static int cmp_named(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void *find_named(const void *base, size_t n, size_t size, const char *name)
{
	if (!n)
		return NULL;
	return bsearch(&name, base, n, size, cmp_named);
}

static bool starts(const char *s, const char *prefix)
{
	return !strncmp(s, prefix, strlen(prefix));
}

int policy_proto_parse(const char *s)
{
	char *end;
	long v;

	for (size_t i = 0; i < sizeof(proto_names) / sizeof(proto_names[0]); i++)
		if (!strcmp(s, proto_names[i].name))
			return proto_names[i].num;
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 1 || v > 255)
		return -EINVAL;
	return (int)v;
}

static const char *proto_name(uint8_t n)
{
	for (size_t i = 0; i < sizeof(proto_names) / sizeof(proto_names[0]); i++)
		if (proto_names[i].num == n)
			return proto_names[i].name;
	return NULL;
}

static bool proto_has_ports(uint8_t n)
{
	return n == 6 || n == 17 || n == 132;
}

/* "100.64.0.1", "100.64.0.0/10", "fd7e::1", "2001:db8::/32": 0 or -EINVAL (host bits set too). */
static int prefix_parse(const char *s, struct netmap_prefix *ret)
{
	char buf[64], *slash, *end;
	struct netmap_prefix p = { 0 };
	long len;
	unsigned max, full;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, buf, p.addr) == 1) {
		p.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, p.addr) == 1) {
		p.family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	len = max;
	if (slash) {
		if (slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		errno = 0;
		len = strtol(slash + 1, &end, 10);
		if (errno || *end || len < 0 || len > (long)max)
			return -EINVAL;
	}
	p.len = (uint8_t)len;
	full = (unsigned)len / 8;
	for (unsigned i = full; i < max / 8; i++) {
		uint8_t mask = i == full ? (uint8_t)(0xff >> (len % 8)) : 0xff;

		if (p.addr[i] & mask)
			return -EINVAL;
	}
	*ret = p;
	return 0;
}

/* Whether a's address starts with p's first p->len bits (whatever a's own length). */
static bool prefix_bits_match(const struct netmap_prefix *p, const struct netmap_prefix *a)
{
	unsigned full = p->len / 8, rest = p->len % 8;

	if (p->family != a->family || memcmp(p->addr, a->addr, full))
		return false;
	return !rest || !((p->addr[full] ^ a->addr[full]) & (uint8_t)(0xff << (8 - rest)));
}

static bool prefix_contains(const struct netmap_prefix *p, const struct netmap_prefix *a)
{
	return a->len >= p->len && prefix_bits_match(p, a);
}

/* ---- parsing ---- */

static const struct group *group_find(const struct policy *p, const char *name)
{
	return find_named(p->groups, p->n_groups, sizeof(*p->groups), name);
}

static const struct host *host_find(const struct policy *p, const char *name)
{
	return find_named(p->hosts, p->n_hosts, sizeof(*p->hosts), name);
}

static bool tag_owned(const struct policy *p, const char *name)
{
	return find_named(p->tags, p->n_tags, sizeof(*p->tags), name) != NULL;
}

/* A selector: what src holds and what dst holds before ":PORTS". */
static int sel_parse(const struct policy *p, const char *s, bool dst, const struct hujson_value *at,
		     struct sel *ret, char *err)
{
	struct sel x = { .text = s };
	const struct host *h;

	if (!strcmp(s, "*")) {
		x.kind = SEL_ANY;
	} else if (starts(s, "group:")) {
		const struct group *g = group_find(p, s);

		if (!g)
			return verr(err, at, "unknown group \"%s\"", s);
		x.kind = SEL_GROUP;
		x.group = (size_t)(g - p->groups);
	} else if (starts(s, "tag:")) {
		if (!tag_owned(p, s))
			return verr(err, at, "tag \"%s\" has no owner in tagOwners", s);
		x.kind = SEL_TAG;
		x.name = s;
	} else if (starts(s, "autogroup:")) {
		if (!strcmp(s, "autogroup:member")) {
			x.kind = SEL_MEMBER;
		} else if (!strcmp(s, "autogroup:tagged")) {
			x.kind = SEL_TAGGED;
		} else if (!strcmp(s, "autogroup:self")) {
			if (!dst)
				return verr(err, at, "autogroup:self is only allowed in dst");
			x.kind = SEL_SELF;
		} else {
			return verr(err, at, "unknown autogroup \"%s\"", s);
		}
	} else if (strchr(s, '@')) {
		x.kind = SEL_USER;
		x.name = s;
	} else if ((h = host_find(p, s))) {
		x.kind = SEL_PREFIX;
		x.prefix = h->prefix;
	} else if (prefix_parse(s, &x.prefix) == 0) {
		x.kind = SEL_PREFIX;
	} else if (strchr(s, '/') || strspn(s, "0123456789.:abcdefABCDEF") == strlen(s)) {
		return verr(err, at, "bad prefix \"%s\"", s);
	} else {
		return verr(err, at, "unknown name \"%s\" (not a user, group, tag, host or address)",
			    s);
	}
	*ret = x;
	return 0;
}

static int ports_parse(const char *s, const struct hujson_value *at, struct portrange **ret,
		       size_t *ret_n, char *err)
{
	struct portrange *r = NULL;
	size_t n = 1, k = 0;
	const char *q = s;
	int e = -EINVAL;

	if (!strcmp(s, "*")) {
		r = malloc(sizeof(*r));
		if (!r)
			return -ENOMEM;
		r->first = 0;
		r->last = 65535;
		*ret = r;
		*ret_n = 1;
		return 0;
	}
	for (const char *c = s; *c; c++)
		n += *c == ',';
	r = calloc(n, sizeof(*r));
	if (!r)
		return -ENOMEM;
	for (;;) {
		unsigned long a, b;
		char *end;

		if (*q < '0' || *q > '9')
			goto bad;
		a = strtoul(q, &end, 10);
		b = a;
		if (*end == '-') {
			if (end[1] < '0' || end[1] > '9')
				goto bad;
			b = strtoul(end + 1, &end, 10);
		}
		if (a > 65535 || b > 65535 || a > b || (*end && *end != ','))
			goto bad;
		r[k].first = (uint16_t)a;
		r[k].last = (uint16_t)b;
		k++;
		if (!*end)
			break;
		q = end + 1;
	}
	*ret = r;
	*ret_n = k;
	return 0;
bad:
	free(r);
	verr(err, at, "bad port \"%s\" (a port, FIRST-LAST, a comma list of those, or *)", s);
	return e;
}

static int dst_parse(const struct policy *p, const struct hujson_value *v, struct dst *ret,
		     char *err)
{
	char *s = (char *)v->str; /* the document is ours: the target ends where the colon was */
	char *colon = strrchr(s, ':'), *t = s;
	size_t tlen;
	int r;

	if (!colon || !colon[1])
		return verr(err, v, "dst \"%s\" needs :PORTS (\"tag:web:443\", \"host:*\")", s);
	*colon = '\0';
	tlen = (size_t)(colon - s);
	/* [2001:db8::1]:22, the bracketed IPv6 form. */
	if (tlen > 2 && s[0] == '[' && s[tlen - 1] == ']') {
		s[tlen - 1] = '\0';
		t = s + 1;
	}
	r = sel_parse(p, t, true, v, &ret->sel, err);
	if (r < 0)
		return r;
	ret->ports_text = colon + 1;
	return ports_parse(colon + 1, v, &ret->ranges, &ret->n_ranges, err);
}

static int expect(const struct hujson_value *v, enum hujson_type t, const char *what, char *err)
{
	if (!v || v->type == t)
		return 0;
	return verr(err, v, "%s must be %s %s, not %s", what, t == HUJSON_ARRAY ? "an" : "a",
		    hujson_type_name(t), hujson_type_name(v->type));
}

static int parse_groups(struct policy *p, const struct hujson_value *o, char *err)
{
	const struct hujson_value *m, *u;
	int r;

	if (!o)
		return 0;
	if ((r = expect(o, HUJSON_OBJECT, "groups", err)))
		return r;
	p->groups = calloc(o->n ? o->n : 1, sizeof(*p->groups));
	if (!p->groups)
		return -ENOMEM;
	for (m = o->child; m; m = m->next) {
		struct group *g = &p->groups[p->n_groups++];

		if (!starts(m->key, "group:") || !m->key[6])
			return kerr(err, m, "group name \"%s\" must start with group:", m->key);
		if ((r = expect(m, HUJSON_ARRAY, "a group", err)))
			return r;
		g->name = m->key;
		g->line = m->key_line;
		g->col = m->key_col;
		g->members = calloc(m->n ? m->n : 1, sizeof(*g->members));
		if (!g->members)
			return -ENOMEM;
		for (u = m->child; u; u = u->next) {
			if ((r = expect(u, HUJSON_STRING, "a group member", err)))
				return r;
			if (!strchr(u->str, '@'))
				return verr(err, u,
					    "group member \"%s\" is not a user (user@domain, or name@)",
					    u->str);
			g->members[g->n++] = u->str;
		}
		qsort(g->members, g->n, sizeof(*g->members), cmp_str);
	}
	qsort(p->groups, p->n_groups, sizeof(*p->groups), cmp_named);
	for (size_t i = 1; i < p->n_groups; i++)
		if (!strcmp(p->groups[i].name, p->groups[i - 1].name))
			return verr(err, NULL, "duplicate group \"%s\"", p->groups[i].name);
	return 0;
}

static int parse_hosts(struct policy *p, const struct hujson_value *o, char *err)
{
	const struct hujson_value *m;
	int r;

	if (!o)
		return 0;
	if ((r = expect(o, HUJSON_OBJECT, "hosts", err)))
		return r;
	p->hosts = calloc(o->n ? o->n : 1, sizeof(*p->hosts));
	if (!p->hosts)
		return -ENOMEM;
	for (m = o->child; m; m = m->next) {
		struct host *h = &p->hosts[p->n_hosts++];

		if (!m->key[0] || strchr(m->key, ':') || strchr(m->key, '@') ||
		    strchr(m->key, '/') || !strcmp(m->key, "*"))
			return kerr(err, m, "bad host name \"%s\"", m->key);
		if ((r = expect(m, HUJSON_STRING, "a host", err)))
			return r;
		if (prefix_parse(m->str, &h->prefix) < 0)
			return verr(err, m, "bad prefix \"%s\"", m->str);
		h->name = m->key;
		h->line = m->key_line;
		h->col = m->key_col;
	}
	qsort(p->hosts, p->n_hosts, sizeof(*p->hosts), cmp_named);
	for (size_t i = 1; i < p->n_hosts; i++)
		if (!strcmp(p->hosts[i].name, p->hosts[i - 1].name))
			return verr(err, NULL, "duplicate host \"%s\"", p->hosts[i].name);
	return 0;
}

static int parse_tagowners(struct policy *p, const struct hujson_value *o, char *err)
{
	const struct hujson_value *m, *u;
	int r;

	if (!o)
		return 0;
	if ((r = expect(o, HUJSON_OBJECT, "tagOwners", err)))
		return r;
	p->tags = calloc(o->n ? o->n : 1, sizeof(*p->tags));
	if (!p->tags)
		return -ENOMEM;
	for (m = o->child; m; m = m->next) {
		if (!starts(m->key, "tag:") || !m->key[4] || strlen(m->key) >= NETMAP_TAG_MAX)
			return kerr(err, m, "tag \"%s\" must be tag:NAME", m->key);
		if ((r = expect(m, HUJSON_ARRAY, "tag owners", err)))
			return r;
		p->tags[p->n_tags].name = m->key;
		p->tags[p->n_tags].line = m->key_line;
		p->tags[p->n_tags].col = m->key_col;
		p->n_tags++;
	}
	qsort(p->tags, p->n_tags, sizeof(*p->tags), cmp_named);
	for (size_t i = 1; i < p->n_tags; i++)
		if (!strcmp(p->tags[i].name, p->tags[i - 1].name))
			return verr(err, NULL, "duplicate tag \"%s\"", p->tags[i].name);
	/* Owners are checked once every tag is known: a tag may be owned by another tag. */
	for (m = o->child; m; m = m->next) {
		for (u = m->child; u; u = u->next) {
			if ((r = expect(u, HUJSON_STRING, "a tag owner", err)))
				return r;
			if (starts(u->str, "group:") && !group_find(p, u->str))
				return verr(err, u, "unknown group \"%s\"", u->str);
			if (starts(u->str, "tag:") && !tag_owned(p, u->str))
				return verr(err, u, "tag \"%s\" has no owner in tagOwners", u->str);
			if (!starts(u->str, "group:") && !starts(u->str, "tag:") &&
			    strcmp(u->str, "autogroup:admin") && strcmp(u->str, "autogroup:member") &&
			    !strchr(u->str, '@'))
				return verr(err, u, "tag owner \"%s\" is not a user, group or tag",
					    u->str);
		}
	}
	return 0;
}

static int parse_rule(struct policy *p, const struct hujson_value *o, struct rule *rl, char *err)
{
	const struct hujson_value *m, *src = NULL, *dst = NULL, *proto = NULL, *action = NULL, *e;
	bool ported = false;
	int r;

	if ((r = expect(o, HUJSON_OBJECT, "an acl", err)))
		return r;
	rl->line = o->line;
	for (m = o->child; m; m = m->next) {
		if (!strcmp(m->key, "action"))
			action = m;
		else if (!strcmp(m->key, "src") || !strcmp(m->key, "users"))
			src = m;
		else if (!strcmp(m->key, "dst") || !strcmp(m->key, "ports"))
			dst = m;
		else if (!strcmp(m->key, "proto"))
			proto = m;
		else
			return kerr(err, m, "unknown field \"%s\" in an acl", m->key);
	}
	if (!action)
		return verr(err, o, "acl without \"action\"");
	if ((r = expect(action, HUJSON_STRING, "action", err)))
		return r;
	if (strcmp(action->str, "accept"))
		return verr(err, action, "action must be \"accept\"");
	if (!src || !dst)
		return verr(err, o, "acl without \"%s\"", src ? "dst" : "src");
	if ((r = expect(src, HUJSON_ARRAY, "src", err)) || (r = expect(dst, HUJSON_ARRAY, "dst", err)))
		return r;
	if (!src->n || !dst->n)
		return verr(err, src->n ? dst : src, "an empty %s", src->n ? "dst" : "src");

	if (proto) {
		int n;

		if (proto->type == HUJSON_NUMBER) {
			n = proto->num >= 1 && proto->num <= 255 && proto->num == (int)proto->num
				    ? (int)proto->num
				    : -EINVAL;
		} else if (proto->type == HUJSON_STRING) {
			n = policy_proto_parse(proto->str);
			rl->proto_text = proto->str;
		} else {
			return verr(err, proto, "proto must be a string");
		}
		if (n < 0)
			return verr(err, proto, "unknown protocol (a name like tcp, or 1-255)");
		rl->n_protos = 1;
		rl->protos[0] = (uint8_t)n;
		if (!rl->proto_text)
			rl->proto_text = proto_name((uint8_t)n);
		ported = proto_has_ports((uint8_t)n);
	} else {
		rl->n_protos = sizeof(default_protos);
		memcpy(rl->protos, default_protos, sizeof(default_protos));
		ported = true;
	}

	rl->srcs = calloc(src->n, sizeof(*rl->srcs));
	rl->dsts = calloc(dst->n, sizeof(*rl->dsts));
	if (!rl->srcs || !rl->dsts)
		return -ENOMEM;
	for (e = src->child; e; e = e->next) {
		if ((r = expect(e, HUJSON_STRING, "a src", err)))
			return r;
		r = sel_parse(p, e->str, false, e, &rl->srcs[rl->n_srcs], err);
		if (r < 0)
			return r;
		rl->n_srcs++;
	}
	for (e = dst->child; e; e = e->next) {
		struct dst *d = &rl->dsts[rl->n_dsts];

		if ((r = expect(e, HUJSON_STRING, "a dst", err)))
			return r;
		r = dst_parse(p, e, d, err);
		rl->n_dsts += d->ranges != NULL;
		if (r < 0)
			return r;
		if (!ported && (d->n_ranges != 1 || d->ranges[0].first || d->ranges[0].last != 65535))
			return verr(err, e, "ports need tcp, udp or sctp; use :* with proto %s",
				    rl->proto_text ? rl->proto_text : "?");
		rl->has_self |= d->sel.kind == SEL_SELF;
	}
	return 0;
}

static bool sel_match(const struct policy *p, const struct sel *s, const struct policy_node *n)
{
	switch (s->kind) {
	case SEL_ANY:
		return true;
	case SEL_USER: {
		size_t l = strlen(s->name);

		/* "name@" names the user "name" (users without a domain, like "default"). */
		if (!n->user[0] || n->n_tags)
			return false;
		if (s->name[l - 1] == '@')
			return strlen(n->user) == l - 1 && !strncmp(n->user, s->name, l - 1);
		return !strcmp(n->user, s->name);
	}
	case SEL_GROUP: {
		const struct group *g = &p->groups[s->group];
		const char *u = n->user;

		if (!n->user[0] || n->n_tags)
			return false;
		if (bsearch(&u, g->members, g->n, sizeof(*g->members), cmp_str))
			return true;
		/* Members written "name@" name users without a domain. */
		for (size_t i = 0; i < g->n; i++) {
			size_t l = strlen(g->members[i]);

			if (g->members[i][l - 1] == '@' && strlen(u) == l - 1 &&
			    !strncmp(u, g->members[i], l - 1))
				return true;
		}
		return false;
	}
	case SEL_TAG:
		for (unsigned i = 0; i < n->n_tags; i++)
			if (!strcmp(n->tags[i], s->name))
				return true;
		return false;
	case SEL_MEMBER:
		return n->user[0] && !n->n_tags;
	case SEL_TAGGED:
		return n->n_tags > 0;
	case SEL_SELF:
		return false;
	case SEL_PREFIX:
		for (unsigned i = 0; i < n->n_addrs; i++)
			if (prefix_contains(&s->prefix, &n->addrs[i]))
				return true;
		return false;
	}
	return false;
}

/* Whether b is in dst entry d for source a. */
static bool dst_match(const struct policy *p, const struct dst *d, const struct policy_node *a,
		      const struct policy_node *b)
{
	if (d->sel.kind == SEL_SELF)
		return a->user[0] && !a->n_tags && !b->n_tags && !strcmp(a->user, b->user);
	return sel_match(p, &d->sel, b);
}

/* Whether a is a source of rule r as autogroup:self requires: by identity, not address. */
static bool src_match(const struct policy *p, const struct rule *r, const struct policy_node *a,
		      bool identity_only)
{
	for (size_t i = 0; i < r->n_srcs; i++) {
		if (identity_only && (r->srcs[i].kind == SEL_PREFIX || r->srcs[i].kind == SEL_ANY))
			continue;
		if (sel_match(p, &r->srcs[i], a))
			return true;
	}
	return false;
}

static bool ports_hold(const struct dst *d, int port)
{
	if (port < 0)
		return true;
	for (size_t i = 0; i < d->n_ranges; i++)
		if (port >= d->ranges[i].first && port <= d->ranges[i].last)
			return true;
	return false;
}

static bool proto_in(const struct rule *r, unsigned proto)
{
	if (!proto)
		return true;
	for (unsigned i = 0; i < r->n_protos; i++)
		if (r->protos[i] == proto)
			return true;
	return false;
}

/* Ports only count for protocols that have them (any port matches an ICMP packet). */
static bool rule_dst_allows(const struct policy *p, const struct rule *r, const struct dst *d,
			    const struct policy_node *a, const struct policy_node *b, int port,
			    unsigned proto)
{
	bool src = d->sel.kind == SEL_SELF ? src_match(p, r, a, true) : src_match(p, r, a, false);

	if (!src || !dst_match(p, d, a, b) || !proto_in(r, proto))
		return false;
	if (proto && !proto_has_ports((uint8_t)proto))
		return true;
	return ports_hold(d, port);
}

static void node_label(const struct policy_node *n, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN] = "";

	if (n->name[0]) {
		snprintf(buf, len, "%s", n->name);
		return;
	}
	if (n->n_addrs)
		inet_ntop(n->addrs[0].family, n->addrs[0].addr, ip, sizeof(ip));
	snprintf(buf, len, "%s", n->user[0] ? n->user : n->n_tags ? n->tags[0] : ip);
}

void policy_rule_describe(const struct policy *p, size_t i, char *buf, size_t len)
{
	const struct rule *r = &p->rules[i];
	size_t o;

	o = (size_t)snprintf(buf, len, "acls[%zu] (line %u): ", i, r->line);
	for (size_t k = 0; k < r->n_srcs && o < len; k++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s", k ? "," : "", r->srcs[k].text);
	if (o < len)
		o += (size_t)snprintf(buf + o, len - o, " ->");
	for (size_t k = 0; k < r->n_dsts && o < len; k++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s:%s", k ? "," : " ",
				      r->dsts[k].sel.text, r->dsts[k].ports_text);
	if (o < len)
		snprintf(buf + o, len - o, " %s", r->proto_text ? r->proto_text : "tcp,udp,icmp");
}

int policy_explain(const struct policy *p, const struct policy_node *a, const struct policy_node *b,
		   int port, unsigned proto, char *why)
{
	char la[NETMAP_USER_MAX], lb[NETMAP_USER_MAX], rd[POLICY_ERR_MAX / 2];
	int near = -1;

	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *r = &p->rules[i];

		for (size_t k = 0; k < r->n_dsts; k++) {
			if (rule_dst_allows(p, r, &r->dsts[k], a, b, port, proto)) {
				if (why) {
					policy_rule_describe(p, i, rd, sizeof(rd));
					snprintf(why, POLICY_ERR_MAX, "allowed by %s", rd);
				}
				return (int)i;
			}
			if (near < 0 && rule_dst_allows(p, r, &r->dsts[k], a, b, -1, 0))
				near = (int)i;
		}
	}
	if (!why)
		return -1;
	node_label(a, la, sizeof(la));
	node_label(b, lb, sizeof(lb));
	if (near >= 0) {
		policy_rule_describe(p, (size_t)near, rd, sizeof(rd));
		snprintf(why, POLICY_ERR_MAX,
			 "denied: no rule allows %s -> %s on this port and protocol; %s allows "
			 "other ports or protocols",
			 la, lb, rd);
	} else {
		snprintf(why, POLICY_ERR_MAX,
			 "denied: no rule has %s as a source and %s as a destination", la, lb);
	}
	return -1;
}

int policy_reach(const struct policy *p, const struct policy_node *a, const struct policy_node *b,
		 char *buf, size_t len)
{
	size_t o = 0;
	int n = 0;

	if (len)
		buf[0] = '\0';
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *r = &p->rules[i];
		bool hit = false;

		for (size_t k = 0; k < r->n_dsts; k++) {
			if (!rule_dst_allows(p, r, &r->dsts[k], a, b, -1, 0))
				continue;
			hit = true;
			if (o < len)
				o += (size_t)snprintf(buf + o, len - o, "%s%s/%s", o ? "," : "",
						      r->dsts[k].ports_text,
						      r->proto_text ? r->proto_text : "tcp,udp,icmp");
		}
		n += hit;
	}
	return n;
}

/* ---- tests ---- */

/* A test's src or dst target as a node that has just that identity. */
static int ident(const struct policy *p, const char *s, const struct hujson_value *at,
		 struct policy_node *ret, char *err)
{
	struct sel x;
	int r;

	memset(ret, 0, sizeof(*ret));
	r = sel_parse(p, s, false, at, &x, err);
	if (r < 0)
		return r;
	switch (x.kind) {
	case SEL_USER: {
		size_t l = strlen(s);

		if (l >= NETMAP_USER_MAX)
			return verr(err, at, "user \"%s\" is too long", s);
		memcpy(ret->user, s, l - (s[l - 1] == '@'));
		break;
	}
	case SEL_TAG:
		ret->n_tags = 1;
		snprintf(ret->tags[0], NETMAP_TAG_MAX, "%s", s);
		break;
	case SEL_PREFIX:
		if (x.prefix.len != (x.prefix.family == AF_INET ? 32 : 128))
			return verr(err, at, "a test needs one address, not the prefix \"%s\"", s);
		ret->n_addrs = 1;
		ret->addrs[0] = x.prefix;
		break;
	default:
		return verr(err, at, "a test names a user, tag, host or address, not \"%s\"", s);
	}
	snprintf(ret->name, sizeof(ret->name), "%.*s", (int)sizeof(ret->name) - 1, s);
	return 0;
}

static int run_test(const struct policy *p, const struct hujson_value *t, size_t ti, char *err)
{
	const struct hujson_value *m, *src = NULL, *lists[2] = { NULL, NULL }, *proto = NULL;
	struct policy_node a, b;
	unsigned pr = 6;
	int r;

	if ((r = expect(t, HUJSON_OBJECT, "a test", err)))
		return r;
	for (m = t->child; m; m = m->next) {
		if (!strcmp(m->key, "src"))
			src = m;
		else if (!strcmp(m->key, "accept"))
			lists[0] = m;
		else if (!strcmp(m->key, "deny"))
			lists[1] = m;
		else if (!strcmp(m->key, "proto"))
			proto = m;
		else
			return kerr(err, m, "unknown field \"%s\" in a test", m->key);
	}
	if (!src)
		return verr(err, t, "test without \"src\"");
	if ((r = expect(src, HUJSON_STRING, "src", err)))
		return r;
	if (proto) {
		if ((r = expect(proto, HUJSON_STRING, "proto", err)))
			return r;
		r = policy_proto_parse(proto->str);
		if (r < 0)
			return verr(err, proto, "unknown protocol \"%s\"", proto->str);
		pr = (unsigned)r;
	}
	r = ident(p, src->str, src, &a, err);
	if (r < 0)
		return r;
	for (int want = 0; want < 2; want++) {
		if (!lists[want])
			continue;
		if ((r = expect(lists[want], HUJSON_ARRAY, want ? "deny" : "accept", err)))
			return r;
		for (m = lists[want]->child; m; m = m->next) {
			char tgt[NETMAP_USER_MAX + 8], why[POLICY_ERR_MAX];
			const char *colon;
			char *end;
			unsigned long port;
			int got;

			if ((r = expect(m, HUJSON_STRING, "a test destination", err)))
				return r;
			colon = strrchr(m->str, ':');
			if (!colon || (size_t)(colon - m->str) >= sizeof(tgt))
				return verr(err, m, "test destination \"%s\" needs :PORT", m->str);
			port = strtoul(colon + 1, &end, 10);
			if (colon[1] < '0' || colon[1] > '9' || *end || port > 65535)
				return verr(err, m, "bad port in \"%s\" (a test names one port)",
					    m->str);
			memcpy(tgt, m->str, (size_t)(colon - m->str));
			tgt[colon - m->str] = '\0';
			r = ident(p, tgt, m, &b, err);
			if (r < 0)
				return r;
			got = policy_explain(p, &a, &b, (int)port, pr, why);
			if ((got >= 0) == !want)
				continue;
			return verr(err, m, "test %zu failed: %.64s -> %.64s should be %s, but is %.700s", ti,
				    src->str, m->str, want ? "denied" : "accepted", why);
		}
	}
	return 0;
}

int policy_ident(const struct policy *p, const char *s, struct policy_node *ret, char *err)
{
	int r = ident(p, s, NULL, ret, err);

	/* No place in a document to name: drop the "1:1: ". */
	if (r < 0 && !strncmp(err, "1:1: ", 5)) {
		size_t l = strnlen(err, POLICY_ERR_MAX - 1);

		memmove(err, err + 5, l - 4);
	}
	return r;
}

/* ---- the policy ---- */

int policy_parse(const char *text, size_t len, struct policy **ret, char *err)
{
	static const char *const ignored[] = { "ssh", "sshTests", "nodeAttrs", "autoApprovers",
					       "derpMap", "disableIPv4", "randomizeClientPort",
					       "postures", "defaultSrcPosture", "ipsets" };
	struct policy *p;
	const struct hujson_value *root, *m, *acls = NULL, *tests = NULL;
	const struct hujson_value *groups = NULL, *hosts = NULL, *owners = NULL;
	char herr[HUJSON_ERR_MAX];
	int r;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	r = hujson_parse(text, len, &p->doc, herr);
	if (r < 0) {
		snprintf(err, POLICY_ERR_MAX, "%s", herr);
		goto out;
	}
	root = hujson_root(p->doc);
	r = -EINVAL;
	if (root->type != HUJSON_OBJECT) {
		verr(err, root, "a policy is an object, not %s", hujson_type_name(root->type));
		goto out;
	}
	for (m = root->child; m; m = m->next) {
		const struct hujson_value **slot = NULL;
		bool skip = false;

		if (!strcmp(m->key, "acls"))
			slot = &acls;
		else if (!strcmp(m->key, "groups"))
			slot = &groups;
		else if (!strcmp(m->key, "hosts"))
			slot = &hosts;
		else if (!strcmp(m->key, "tagOwners"))
			slot = &owners;
		else if (!strcmp(m->key, "tests"))
			slot = &tests;
		for (size_t i = 0; !slot && i < sizeof(ignored) / sizeof(ignored[0]); i++)
			skip |= !strcmp(m->key, ignored[i]);
		if (skip)
			continue;
		if (!slot) {
			if (!strcmp(m->key, "grants"))
				kerr(err, m, "\"%s\" are not supported (use acls)", m->key);
			else
				kerr(err, m, "unknown section \"%s\"", m->key);
			goto out;
		}
		if (*slot) {
			kerr(err, m, "duplicate section \"%s\"", m->key);
			goto out;
		}
		*slot = m;
	}
	if ((r = parse_groups(p, groups, err)) || (r = parse_hosts(p, hosts, err)) ||
	    (r = parse_tagowners(p, owners, err)))
		goto out;
	if (acls) {
		if ((r = expect(acls, HUJSON_ARRAY, "acls", err)))
			goto out;
		r = -E2BIG;
		if (acls->n > POLICY_RULES_MAX) {
			verr(err, acls, "more than %u acls", POLICY_RULES_MAX);
			goto out;
		}
		r = -ENOMEM;
		p->rules = calloc(acls->n ? acls->n : 1, sizeof(*p->rules));
		if (!p->rules)
			goto out;
		for (m = acls->child; m; m = m->next) {
			r = parse_rule(p, m, &p->rules[p->n_rules], err);
			p->n_rules++;
			if (r < 0)
				goto out;
		}
	}
	if (tests) {
		size_t i = 0;

		if ((r = expect(tests, HUJSON_ARRAY, "tests", err)))
			goto out;
		for (m = tests->child; m; m = m->next, i++)
			if ((r = run_test(p, m, i, err)) < 0)
				goto out;
	}
	r = 0;
out:
	if (r < 0) {
		if (r == -ENOMEM && !err[0])
			snprintf(err, POLICY_ERR_MAX, "out of memory");
		policy_free(p);
		return r;
	}
	*ret = p;
	return 0;
}

void policy_free(struct policy *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_rules; i++) {
		for (size_t k = 0; k < p->rules[i].n_dsts; k++)
			free(p->rules[i].dsts[k].ranges);
		free(p->rules[i].srcs);
		free(p->rules[i].dsts);
	}
	for (size_t i = 0; i < p->n_groups; i++)
		free(p->groups[i].members);
	free(p->rules);
	free(p->groups);
	free(p->hosts);
	free(p->tags);
	hujson_free(p->doc);
	free(p);
}

size_t policy_rule_count(const struct policy *p)
{
	return p->n_rules;
}

/* ---- compiling over a tailnet ---- */

/* Nodes by user (untagged only) and by tag: name -> node indices, sorted by name. */
struct nref {
	const char *name;
	size_t node;
};

struct crule {
	size_t n_dsts;
	uint64_t *src;	  /* nodes in src (identity or address) */
	uint64_t *src_id; /* nodes in src by identity: the sources autogroup:self counts */
	uint64_t *dst;	  /* nodes in some non-self dst entry */
	uint64_t **dsts;  /* per dst entry (NULL for autogroup:self) */
};

struct policy_view {
	const struct policy *p;
	size_t n_rules; /* p's, so that a view can be freed after its policy */
	size_t n, words;
	struct crule *rules;
	size_t *cls;	/* node -> class */
	uint64_t *rows; /* class -> visibility row (words each) */
	size_t n_cls;
	size_t *counts; /* class -> peers, self included where its own row has it */
	struct nref *users; /* untagged nodes by user, for autogroup:self */
	size_t n_users;
	/*
	 * The rules each node is in, by rule (memb[moff[a] .. moff[a + 1])): a node's class,
	 * row and filter cost its own rules, not a look into every rule's bitsets.
	 */
	struct memb *memb;
	size_t *moff;
	uint32_t *self_rules; /* rules with an autogroup:self destination */
	size_t n_self;
	/* policy_view_match: per rule, an equal rule of the earlier view, or SIZE_MAX. */
	size_t *same;
};

#define M_SRC 1
#define M_SRC_ID 2
#define M_DST 4

struct memb {
	uint32_t rule;
	uint8_t flags;
};

static inline void bit_set(uint64_t *b, size_t i)
{
	b[i / 64] |= 1ULL << (i % 64);
}

static inline bool bit_test(const uint64_t *b, size_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

static void bits_or(uint64_t *d, const uint64_t *s, size_t words)
{
	for (size_t i = 0; i < words; i++)
		d[i] |= s[i];
}


static int cmp_nref(const void *a, const void *b)
{
	const struct nref *x = a, *y = b;
	int c = strcmp(x->name, y->name);

	return c ? c : (x->node > y->node) - (x->node < y->node);
}

/* The first entry named name, or n. */
static size_t nref_lower(const struct nref *r, size_t n, const char *name)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (strcmp(r[mid].name, name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static void nref_set(const struct nref *r, size_t n, const char *name, size_t len,
		     uint64_t *bits)
{
	for (size_t i = nref_lower(r, n, name); i < n; i++) {
		if (len == SIZE_MAX ? strcmp(r[i].name, name) : (strlen(r[i].name) != len ||
								 strncmp(r[i].name, name, len)))
			break;
		bit_set(bits, r[i].node);
	}
}

/* A node's address, in the index sorted by family and address bytes. */
struct aref {
	const struct netmap_prefix *addr;
	size_t node;
};

struct cctx {
	const struct policy *p;
	const struct policy_node *nodes;
	size_t n, words;
	struct nref *users, *tags;
	size_t n_users, n_tags;
	struct aref *addrs;
	size_t n_addrs;
};

static int cmp_addr(const struct netmap_prefix *a, const struct netmap_prefix *b)
{
	if (a->family != b->family)
		return a->family < b->family ? -1 : 1;
	return memcmp(a->addr, b->addr, sizeof(a->addr));
}

static int cmp_aref(const void *a, const void *b)
{
	const struct aref *x = a, *y = b;

	return cmp_addr(x->addr, y->addr);
}

/*
 * The nodes with an address in prefix px: the addresses that start with its bits are one run
 * of the sorted index, from the first at or after its network address. A selector then costs
 * the nodes it names, not a look at every node.
 */
static void prefix_bits(const struct cctx *c, const struct netmap_prefix *px, uint64_t *bits)
{
	struct netmap_prefix net = { .family = px->family };
	unsigned full = px->len / 8, rest = px->len % 8;
	size_t lo = 0, hi = c->n_addrs;

	memcpy(net.addr, px->addr, full);
	if (rest)
		net.addr[full] = px->addr[full] & (uint8_t)(0xff << (8 - rest));
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cmp_addr(c->addrs[mid].addr, &net) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < c->n_addrs && prefix_bits_match(px, c->addrs[lo].addr); lo++)
		if (c->addrs[lo].addr->len >= px->len)
			bit_set(bits, c->addrs[lo].node);
}

static void sel_bits(const struct cctx *c, const struct sel *s, uint64_t *bits)
{
	switch (s->kind) {
	case SEL_USER: {
		size_t l = strlen(s->name);

		if (s->name[l - 1] == '@')
			nref_set(c->users, c->n_users, s->name, l - 1, bits);
		else
			nref_set(c->users, c->n_users, s->name, SIZE_MAX, bits);
		break;
	}
	case SEL_GROUP: {
		const struct group *g = &c->p->groups[s->group];

		for (size_t i = 0; i < g->n; i++) {
			size_t l = strlen(g->members[i]);

			if (g->members[i][l - 1] == '@')
				nref_set(c->users, c->n_users, g->members[i], l - 1, bits);
			else
				nref_set(c->users, c->n_users, g->members[i], SIZE_MAX, bits);
		}
		break;
	}
	case SEL_TAG:
		nref_set(c->tags, c->n_tags, s->name, SIZE_MAX, bits);
		break;
	case SEL_SELF:
		break;
	case SEL_PREFIX:
		prefix_bits(c, &s->prefix, bits);
		break;
	default:
		/* * and autogroups look at every node: they are few in a policy. */
		for (size_t i = 0; i < c->n; i++)
			if (sel_match(c->p, s, &c->nodes[i]))
				bit_set(bits, i);
		break;
	}
}

void policy_view_free(struct policy_view *v)
{
	if (!v)
		return;
	for (size_t i = 0; v->rules && i < v->n_rules; i++) {
		struct crule *cr = &v->rules[i];

		for (size_t k = 0; cr->dsts && k < cr->n_dsts; k++)
			free(cr->dsts[k]);
		free(cr->dsts);
		free(cr->src);
		free(cr->src_id);
		free(cr->dst);
	}
	free(v->rules);
	free(v->users);
	free(v->memb);
	free(v->moff);
	free(v->self_rules);
	free(v->same);
	free(v->cls);
	free(v->rows);
	free(v->counts);
	free(v);
}

static int build_index(struct cctx *c)
{
	size_t nu = 0, nt = 0, na = 0;

	for (size_t i = 0; i < c->n; i++) {
		nu += c->nodes[i].user[0] && !c->nodes[i].n_tags;
		nt += c->nodes[i].n_tags;
		na += c->nodes[i].n_addrs;
	}
	c->users = calloc(nu ? nu : 1, sizeof(*c->users));
	c->tags = calloc(nt ? nt : 1, sizeof(*c->tags));
	c->addrs = calloc(na ? na : 1, sizeof(*c->addrs));
	if (!c->users || !c->tags || !c->addrs)
		return -ENOMEM;
	for (size_t i = 0; i < c->n; i++) {
		const struct policy_node *x = &c->nodes[i];

		if (x->user[0] && !x->n_tags)
			c->users[c->n_users++] = (struct nref){ x->user, i };
		for (unsigned k = 0; k < x->n_tags; k++)
			c->tags[c->n_tags++] = (struct nref){ x->tags[k], i };
		for (unsigned k = 0; k < x->n_addrs; k++)
			c->addrs[c->n_addrs++] = (struct aref){ &x->addrs[k], i };
	}
	qsort(c->users, c->n_users, sizeof(*c->users), cmp_nref);
	qsort(c->tags, c->n_tags, sizeof(*c->tags), cmp_nref);
	qsort(c->addrs, c->n_addrs, sizeof(*c->addrs), cmp_aref);
	return 0;
}

/* A node's class key: per rule, in src / in src by identity / in dst, plus its user's slot. */
struct ckey {
	size_t node;
	uint64_t hash;
};

static int cmp_ckey(const void *a, const void *b)
{
	const struct ckey *x = a, *y = b;

	return (x->hash > y->hash) - (x->hash < y->hash);
}

static bool same_class(const struct policy_view *v, const struct policy_node *nodes, size_t a,
		       size_t b, bool self_used)
{
	size_t na = v->moff[a + 1] - v->moff[a], nb = v->moff[b + 1] - v->moff[b];

	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++) {
		const struct memb *x = &v->memb[v->moff[a] + i], *y = &v->memb[v->moff[b] + i];

		if (x->rule != y->rule || x->flags != y->flags)
			return false;
	}
	if (self_used && (nodes[a].n_tags || nodes[b].n_tags || strcmp(nodes[a].user, nodes[b].user)))
		return nodes[a].n_tags && nodes[b].n_tags;
	return true;
}

static uint64_t class_hash(const struct policy_view *v, const struct policy_node *nodes, size_t a,
			   bool self_used)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = v->moff[a]; i < v->moff[a + 1]; i++)
		h = (h ^ ((uint64_t)v->memb[i].rule * 8 + v->memb[i].flags)) * 0x100000001b3ULL;
	if (self_used && !nodes[a].n_tags)
		for (const char *s = nodes[a].user; *s; s++)
			h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
	return h;
}

/* The row of the class whose representative is node a. */
static void class_row(const struct policy_view *v, const struct cctx *c, size_t a, uint64_t *row)
{
	const struct policy_node *x = &c->nodes[a];
	bool member = x->user[0] && !x->n_tags;

	for (size_t i = v->moff[a]; i < v->moff[a + 1]; i++) {
		const struct crule *cr = &v->rules[v->memb[i].rule];

		if (v->memb[i].flags & M_SRC)
			bits_or(row, cr->dst, v->words);
		if (v->memb[i].flags & M_DST)
			bits_or(row, cr->src, v->words);
	}
	for (size_t k = 0; member && k < v->n_self; k++) {
		const struct crule *cr = &v->rules[v->self_rules[k]];

		/*
		 * autogroup:self: a source by identity sees all of its user's devices; every
		 * device of the user sees those of them that are sources.
		 */
		for (size_t i = nref_lower(c->users, c->n_users, x->user);
		     i < c->n_users && !strcmp(c->users[i].name, x->user); i++) {
			size_t b = c->users[i].node;

			if (bit_test(cr->src_id, a) || bit_test(cr->src_id, b))
				bit_set(row, b);
		}
	}
}

/* The transposed index of memberships (see struct policy_view). */
static int build_memb(struct policy_view *v)
{
	size_t total = 0, *fill;

	v->moff = calloc(v->n + 1, sizeof(*v->moff));
	v->self_rules = calloc(v->n_rules ? v->n_rules : 1, sizeof(*v->self_rules));
	if (!v->moff || !v->self_rules)
		return -ENOMEM;
	for (size_t r = 0; r < v->n_rules; r++) {
		const struct crule *cr = &v->rules[r];

		if (v->p->rules[r].has_self)
			v->self_rules[v->n_self++] = (uint32_t)r;
		for (size_t w = 0; w < v->words; w++)
			for (uint64_t b = cr->src[w] | cr->dst[w]; b; b &= b - 1)
				v->moff[w * 64 + (size_t)__builtin_ctzll(b) + 1]++;
	}
	for (size_t a = 0; a < v->n; a++)
		v->moff[a + 1] += v->moff[a];
	total = v->moff[v->n];
	v->memb = calloc(total ? total : 1, sizeof(*v->memb));
	fill = calloc(v->n ? v->n : 1, sizeof(*fill));
	if (!v->memb || !fill) {
		free(fill);
		return -ENOMEM;
	}
	/* Rule by rule, so each node's list is sorted by rule. */
	for (size_t r = 0; r < v->n_rules; r++) {
		const struct crule *cr = &v->rules[r];

		for (size_t w = 0; w < v->words; w++) {
			for (uint64_t b = cr->src[w] | cr->dst[w]; b; b &= b - 1) {
				size_t a = w * 64 + (size_t)__builtin_ctzll(b);
				uint64_t bit = 1ULL << (a % 64);
				struct memb *m = &v->memb[v->moff[a] + fill[a]++];

				m->rule = (uint32_t)r;
				m->flags = (uint8_t)((cr->src[w] & bit ? M_SRC : 0) |
						     (cr->src_id[w] & bit ? M_SRC_ID : 0) |
						     (cr->dst[w] & bit ? M_DST : 0));
			}
		}
	}
	free(fill);
	return 0;
}

int policy_compile(const struct policy *p, const struct policy_node *nodes, size_t n,
		   struct policy_view **ret)
{
	struct cctx c = { .p = p, .nodes = nodes, .n = n, .words = (n + 63) / 64 };
	struct policy_view *v;
	struct ckey *keys = NULL;
	bool self_used = false;
	size_t w = c.words ? c.words : 1;
	int r = -ENOMEM;

	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->p = p;
	v->n_rules = p->n_rules;
	v->n = n;
	v->words = c.words;
	if (build_index(&c) < 0)
		goto out;
	v->rules = calloc(p->n_rules ? p->n_rules : 1, sizeof(*v->rules));
	v->cls = calloc(n ? n : 1, sizeof(*v->cls));
	keys = calloc(n ? n : 1, sizeof(*keys));
	if (!v->rules || !v->cls || !keys)
		goto out;
	for (size_t i = 0; i < p->n_rules; i++) {
		const struct rule *rl = &p->rules[i];
		struct crule *cr = &v->rules[i];

		cr->src = calloc(w, 8);
		cr->src_id = calloc(w, 8);
		cr->dst = calloc(w, 8);
		cr->dsts = calloc(rl->n_dsts, sizeof(*cr->dsts));
		cr->n_dsts = rl->n_dsts;
		if (!cr->src || !cr->src_id || !cr->dst || !cr->dsts)
			goto out;
		for (size_t k = 0; k < rl->n_srcs; k++) {
			const struct sel *s = &rl->srcs[k];

			sel_bits(&c, s, s->kind == SEL_PREFIX || s->kind == SEL_ANY ? cr->src
										    : cr->src_id);
		}
		bits_or(cr->src, cr->src_id, w);
		for (size_t k = 0; k < rl->n_dsts; k++) {
			if (rl->dsts[k].sel.kind == SEL_SELF)
				continue;
			cr->dsts[k] = calloc(w, 8);
			if (!cr->dsts[k])
				goto out;
			sel_bits(&c, &rl->dsts[k].sel, cr->dsts[k]);
			bits_or(cr->dst, cr->dsts[k], w);
		}
		self_used |= rl->has_self;
	}

	if (build_memb(v) < 0)
		goto out;
	/* Classes: sort by hash, then split runs of equal hashes into equal keys. */
	for (size_t i = 0; i < n; i++)
		keys[i] = (struct ckey){ i, class_hash(v, nodes, i, self_used) };
	qsort(keys, n, sizeof(*keys), cmp_ckey);
	v->rows = NULL;
	{
		size_t cap = 0, *rep = NULL;

		for (size_t i = 0; i < n;) {
			size_t j = i, first = v->n_cls;

			while (j < n && keys[j].hash == keys[i].hash)
				j++;
			/* Within a run, a node joins the first class it equals (collisions are rare). */
			for (size_t k = i; k < j; k++) {
				size_t a = keys[k].node, cl;

				/* Only this run's classes can be equal. */
				for (cl = v->n_cls; cl > first; cl--)
					if (same_class(v, nodes, keys[rep[cl - 1]].node, a, self_used))
						break;
				if (cl == first) {
					if (v->n_cls == cap) {
						size_t *t = realloc(rep, (cap ? cap * 2 : 64) * sizeof(*t));

						if (!t) {
							free(rep);
							goto out;
						}
						rep = t;
						cap = cap ? cap * 2 : 64;
					}
					rep[v->n_cls++] = k;
					cl = v->n_cls;
				}
				v->cls[a] = cl - 1;
			}
			i = j;
		}
		v->rows = calloc(v->n_cls ? v->n_cls * w : 1, 8);
		v->counts = calloc(v->n_cls ? v->n_cls : 1, sizeof(*v->counts));
		if (!v->rows || !v->counts) {
			free(rep);
			goto out;
		}
		for (size_t cl = 0; cl < v->n_cls; cl++) {
			uint64_t *row = v->rows + cl * w;

			class_row(v, &c, keys[rep[cl]].node, row);
			for (size_t i = 0; i < c.words; i++)
				v->counts[cl] += (size_t)__builtin_popcountll(row[i]);
		}
		free(rep);
	}
	v->users = c.users;
	v->n_users = c.n_users;
	c.users = NULL;
	*ret = v;
	v = NULL;
	r = 0;
out:
	free(keys);
	free(c.users);
	free(c.tags);
	free(c.addrs);
	policy_view_free(v);
	return r;
}

bool policy_view_sees(const struct policy_view *v, size_t a, size_t b)
{
	if (a == b || a >= v->n || b >= v->n)
		return false;
	return bit_test(v->rows + v->cls[a] * (v->words ? v->words : 1), b);
}

const uint64_t *policy_view_row(const struct policy_view *v, size_t a)
{
	return a < v->n ? v->rows + v->cls[a] * (v->words ? v->words : 1) : NULL;
}

size_t policy_view_class(const struct policy_view *v, size_t a)
{
	return a < v->n ? v->cls[a] : SIZE_MAX;
}

size_t policy_view_words(const struct policy_view *v)
{
	return v->words;
}

size_t policy_view_count(const struct policy_view *v, size_t a)
{
	size_t n;

	if (a >= v->n)
		return 0;
	n = v->counts[v->cls[a]];
	return n - bit_test(v->rows + v->cls[a] * (v->words ? v->words : 1), a);
}

/* Filter building: counts first, then one allocation per array. */
struct fbuild {
	struct netmap_filter *f;
	size_t cap_rules, cap_srcs, cap_dsts;
};

static int fgrow(void **arr, size_t *cap, size_t need, size_t size)
{
	void *t;
	size_t c = *cap ? *cap : 16;

	if (need <= *cap)
		return 0;
	while (c < need)
		c *= 2;
	t = realloc(*arr, c * size);
	if (!t)
		return -ENOMEM;
	*arr = t;
	*cap = c;
	return 0;
}

static int fsrc(struct fbuild *b, const struct netmap_prefix *px)
{
	struct netmap_filter *f = b->f;

	if (f->n_srcs >= NETMAP_FILTER_PREFIXES_MAX)
		return -E2BIG;
	if (fgrow((void **)&f->srcs, &b->cap_srcs, f->n_srcs + 1, sizeof(*f->srcs)) < 0)
		return -ENOMEM;
	f->srcs[f->n_srcs++] = *px;
	return 0;
}

static int fdst(struct fbuild *b, const struct netmap_prefix *px, const struct portrange *pr)
{
	struct netmap_filter *f = b->f;

	if (f->n_dsts >= NETMAP_FILTER_PREFIXES_MAX)
		return -E2BIG;
	if (fgrow((void **)&f->dsts, &b->cap_dsts, f->n_dsts + 1, sizeof(*f->dsts)) < 0)
		return -ENOMEM;
	f->dsts[f->n_dsts].prefix = *px;
	f->dsts[f->n_dsts].port_first = pr->first;
	f->dsts[f->n_dsts].port_last = pr->last;
	f->n_dsts++;
	return 0;
}

static const struct netmap_prefix any4 = { .family = AF_INET, .len = 0 };
static const struct netmap_prefix any6 = { .family = AF_INET6, .len = 0 };

/*
 * One filter rule: srcs are the rule's prefixes (self: none) and the addresses of the nodes in
 * bits; dsts are d's addresses inside the entries in use, with their ports. Dropped when it
 * has no source or no destination.
 */
static int frule(struct fbuild *b, const struct policy_view *v, const struct policy_node *nodes,
		 size_t d, size_t ri, bool self)
{
	const struct rule *rl = &v->p->rules[ri];
	const struct crule *cr = &v->rules[ri];
	const struct policy_node *x = &nodes[d];
	struct netmap_filter *f = b->f;
	struct netmap_filter_rule *fr;
	uint32_t s0 = f->n_srcs, d0 = f->n_dsts;
	int r;

	if (f->n_rules >= NETMAP_FILTER_RULES_MAX)
		return -E2BIG;
	for (size_t k = 0; k < rl->n_dsts; k++) {
		const struct dst *e = &rl->dsts[k];

		if (self != (e->sel.kind == SEL_SELF))
			continue;
		if (!self && !bit_test(cr->dsts[k], d))
			continue;
		for (unsigned ai = 0; ai < x->n_addrs; ai++) {
			if (e->sel.kind == SEL_PREFIX && !prefix_contains(&e->sel.prefix, &x->addrs[ai]))
				continue;
			for (size_t q = 0; q < e->n_ranges; q++)
				if ((r = fdst(b, &x->addrs[ai], &e->ranges[q])) < 0)
					return r;
		}
	}
	if (f->n_dsts == d0)
		return 0;
	if (!self) {
		for (size_t k = 0; k < rl->n_srcs; k++) {
			const struct sel *s = &rl->srcs[k];

			if (s->kind == SEL_ANY) {
				if ((r = fsrc(b, &any4)) < 0 || (r = fsrc(b, &any6)) < 0)
					return r;
			} else if (s->kind == SEL_PREFIX) {
				if ((r = fsrc(b, &s->prefix)) < 0)
					return r;
			}
		}
	}
	if (self) {
		/* The sources by identity among the user's own devices (x untagged, with a user). */
		for (size_t i = x->n_tags || !x->user[0] ? v->n_users
							  : nref_lower(v->users, v->n_users, x->user);
		     i < v->n_users && !strcmp(v->users[i].name, x->user); i++) {
			size_t a = v->users[i].node;

			if (!bit_test(cr->src_id, a))
				continue;
			for (unsigned ai = 0; ai < nodes[a].n_addrs; ai++)
				if ((r = fsrc(b, &nodes[a].addrs[ai])) < 0)
					return r;
		}
	} else {
		for (size_t w = 0; w < v->words; w++) {
			for (uint64_t bits = cr->src_id[w]; bits; bits &= bits - 1) {
				size_t a = w * 64 + (size_t)__builtin_ctzll(bits);

				for (unsigned ai = 0; ai < nodes[a].n_addrs; ai++)
					if ((r = fsrc(b, &nodes[a].addrs[ai])) < 0)
						return r;
			}
		}
	}
	if (f->n_srcs == s0) {
		f->n_dsts = d0;
		return 0;
	}
	if (fgrow((void **)&f->rules, &b->cap_rules, f->n_rules + 1, sizeof(*f->rules)) < 0)
		return -ENOMEM;
	fr = &f->rules[f->n_rules++];
	memset(fr, 0, sizeof(*fr));
	fr->src_off = s0;
	fr->n_src = f->n_srcs - s0;
	fr->dst_off = d0;
	fr->n_dst = f->n_dsts - d0;
	fr->n_protos = rl->n_protos;
	memcpy(fr->protos, rl->protos, rl->n_protos);
	return 0;
}

int policy_view_filter(const struct policy_view *v, const struct policy_node *nodes, size_t i,
		       struct netmap_filter **ret)
{
	struct fbuild b = { 0 };
	int r = -ENOMEM;

	if (i >= v->n)
		return -EINVAL;
	b.f = calloc(1, sizeof(*b.f));
	if (!b.f)
		return -ENOMEM;
	/* The node's rules and the autogroup:self rules, merged in rule order. */
	for (size_t m = v->moff[i], k = 0; m < v->moff[i + 1] || k < v->n_self;) {
		size_t rm = m < v->moff[i + 1] ? v->memb[m].rule : SIZE_MAX;
		size_t rk = k < v->n_self ? v->self_rules[k] : SIZE_MAX;

		if (rm <= rk) {
			if ((v->memb[m].flags & M_DST) && (r = frule(&b, v, nodes, i, rm, false)) < 0)
				goto out;
			m++;
			continue;
		}
		if ((r = frule(&b, v, nodes, i, rk, true)) < 0)
			goto out;
		k++;
	}
	*ret = b.f;
	b.f = NULL;
	r = 0;
out:
	netmap_filter_free(b.f);
	return r;
}

/* ---- what a change left alone ---- */

void policy_view_sourced(const struct policy_view *v, const struct policy_node *nodes, size_t c,
			 uint64_t *acc)
{
	bool self = false;

	if (c >= v->n)
		return;
	/* A filter's node sources are its rules' src_id members (frule). */
	for (size_t m = v->moff[c]; m < v->moff[c + 1]; m++) {
		const struct crule *cr = &v->rules[v->memb[m].rule];
		const struct rule *rl = &v->p->rules[v->memb[m].rule];

		if (!(v->memb[m].flags & M_SRC_ID))
			continue;
		for (size_t w = 0; w < v->words; w++)
			acc[w] |= cr->dst[w];
		self |= rl->has_self;
	}
	/* autogroup:self: the untagged devices of c's user list it. */
	if (!self || !nodes[c].user[0])
		return;
	for (size_t i = nref_lower(v->users, v->n_users, nodes[c].user);
	     i < v->n_users && !strcmp(v->users[i].name, nodes[c].user); i++)
		acc[v->users[i].node / 64] |= 1ULL << (v->users[i].node % 64);
}


static uint64_t fnv(uint64_t h, const void *p, size_t len)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 0x100000001b3ULL;
	return h;
}

/*
 * Everything frule reads of rule r besides the nodes' own records: protocols, per destination
 * entry whether it is autogroup:self, its prefix and ports and its nodes, the sources written
 * as * or prefixes, and the nodes in src by identity. Equal keys, equal filter rules.
 */
static uint64_t rule_hash(const struct policy_view *v, size_t r)
{
	const struct rule *rl = &v->p->rules[r];
	const struct crule *cr = &v->rules[r];
	uint64_t h = 0xcbf29ce484222325ULL;

	h = fnv(h, rl->protos, rl->n_protos);
	for (size_t k = 0; k < rl->n_dsts; k++) {
		const struct dst *d = &rl->dsts[k];

		h = fnv(h, &d->sel.kind, sizeof(d->sel.kind));
		if (d->sel.kind == SEL_PREFIX)
			h = fnv(h, &d->sel.prefix, sizeof(d->sel.prefix));
		h = fnv(h, d->ranges, d->n_ranges * sizeof(*d->ranges));
		if (cr->dsts[k])
			h = fnv(h, cr->dsts[k], v->words * 8);
	}
	for (size_t k = 0; k < rl->n_srcs; k++)
		if (rl->srcs[k].kind == SEL_PREFIX)
			h = fnv(h, &rl->srcs[k].prefix, sizeof(rl->srcs[k].prefix));
		else if (rl->srcs[k].kind == SEL_ANY)
			h = fnv(h, "*", 1);
	return fnv(h, cr->src_id, v->words * 8);
}

static bool rule_same(const struct policy_view *a, size_t ra, const struct policy_view *b,
		      size_t rb)
{
	const struct rule *x = &a->p->rules[ra], *y = &b->p->rules[rb];
	const struct crule *cx = &a->rules[ra], *cy = &b->rules[rb];
	size_t bytes = a->words * 8, i = 0, k = 0;

	if (x->n_protos != y->n_protos || memcmp(x->protos, y->protos, x->n_protos) ||
	    x->n_dsts != y->n_dsts || memcmp(cx->src_id, cy->src_id, bytes))
		return false;
	for (size_t d = 0; d < x->n_dsts; d++) {
		const struct dst *p = &x->dsts[d], *q = &y->dsts[d];

		if (p->sel.kind != q->sel.kind || p->n_ranges != q->n_ranges ||
		    memcmp(p->ranges, q->ranges, p->n_ranges * sizeof(*p->ranges)) ||
		    (p->sel.kind == SEL_PREFIX &&
		     memcmp(&p->sel.prefix, &q->sel.prefix, sizeof(p->sel.prefix))) ||
		    !cx->dsts[d] != !cy->dsts[d] ||
		    (cx->dsts[d] && memcmp(cx->dsts[d], cy->dsts[d], bytes)))
			return false;
	}
	/* The sources written as * or prefixes, in order (the others are in src_id). */
	for (;;) {
		while (i < x->n_srcs && x->srcs[i].kind != SEL_ANY && x->srcs[i].kind != SEL_PREFIX)
			i++;
		while (k < y->n_srcs && y->srcs[k].kind != SEL_ANY && y->srcs[k].kind != SEL_PREFIX)
			k++;
		if (i == x->n_srcs || k == y->n_srcs)
			return i == x->n_srcs && k == y->n_srcs;
		if (x->srcs[i].kind != y->srcs[k].kind ||
		    (x->srcs[i].kind == SEL_PREFIX &&
		     memcmp(&x->srcs[i].prefix, &y->srcs[k].prefix, sizeof(x->srcs[i].prefix))))
			return false;
		i++;
		k++;
	}
}

struct rkey {
	uint64_t hash;
	size_t rule;
};

static int cmp_rkey(const void *a, const void *b)
{
	const struct rkey *x = a, *y = b;

	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	return (x->rule > y->rule) - (x->rule < y->rule);
}

int policy_view_match(const struct policy_view *a, struct policy_view *b)
{
	struct rkey *keys;

	free(b->same);
	b->same = calloc(b->n_rules ? b->n_rules : 1, sizeof(*b->same));
	keys = calloc(a->n_rules ? a->n_rules : 1, sizeof(*keys));
	if (!b->same || !keys) {
		free(b->same);
		b->same = NULL;
		free(keys);
		return -ENOMEM;
	}
	for (size_t r = 0; r < b->n_rules; r++)
		b->same[r] = SIZE_MAX;
	if (a->n == b->n) {
		for (size_t r = 0; r < a->n_rules; r++)
			keys[r] = (struct rkey){ rule_hash(a, r), r };
		qsort(keys, a->n_rules, sizeof(*keys), cmp_rkey);
		for (size_t r = 0; r < b->n_rules; r++) {
			uint64_t h = rule_hash(b, r);
			size_t lo = 0, hi = a->n_rules;

			while (lo < hi) {
				size_t mid = lo + (hi - lo) / 2;

				if (keys[mid].hash < h)
					lo = mid + 1;
				else
					hi = mid;
			}
			for (; lo < a->n_rules && keys[lo].hash == h; lo++) {
				if (rule_same(a, keys[lo].rule, b, r)) {
					b->same[r] = keys[lo].rule;
					break;
				}
			}
		}
	}
	free(keys);
	return 0;
}

/* The next rule node i's filter is built from (policy_view_filter's order), or false. */
struct fwalk {
	size_t m, k;
};

static bool fwalk_next(const struct policy_view *v, size_t i, struct fwalk *w, size_t *rule,
		       bool *self)
{
	for (;;) {
		size_t rm = w->m < v->moff[i + 1] ? v->memb[w->m].rule : SIZE_MAX;
		size_t rk = w->k < v->n_self ? v->self_rules[w->k] : SIZE_MAX;

		if (rm == SIZE_MAX && rk == SIZE_MAX)
			return false;
		if (rm <= rk) {
			w->m++;
			if (!(v->memb[w->m - 1].flags & M_DST))
				continue;
			*rule = rm;
			*self = false;
			return true;
		}
		w->k++;
		*rule = rk;
		*self = true;
		return true;
	}
}

bool policy_view_filter_same(const struct policy_view *a, const struct policy_view *b, size_t i)
{
	struct fwalk wa = { a->moff[i], 0 }, wb = { b->moff[i], 0 };

	if (!b->same || a->n != b->n || i >= b->n)
		return false;
	for (;;) {
		size_t ra, rb;
		bool sa, sb, more_a = fwalk_next(a, i, &wa, &ra, &sa),
			     more_b = fwalk_next(b, i, &wb, &rb, &sb);

		if (!more_a || !more_b)
			return more_a == more_b;
		if (sa != sb || b->same[rb] != ra)
			return false;
	}
}

/* ---- what a node may open: the other direction of its filter ---- */

/* One protocol and port range node i may open on a peer (an index into the nodes). */
struct ritem {
	uint32_t peer;
	uint8_t proto;
	uint16_t first, last;
};

struct rbuild {
	struct ritem *v;
	size_t n, cap;
};

/* Before merging: a bound on what one node's rules can make us hold. */
#define REACH_ITEMS_MAX (1U << 22)

static int radd(struct rbuild *b, const struct rule *rl, const struct dst *e, size_t peer)
{
	for (unsigned k = 0; k < rl->n_protos; k++) {
		bool ported = proto_has_ports(rl->protos[k]);

		/* Ports mean nothing to ICMP and the like: one item, every port. */
		for (size_t q = 0; q < (ported ? e->n_ranges : 1); q++) {
			if (b->n >= REACH_ITEMS_MAX)
				return -E2BIG;
			if (fgrow((void **)&b->v, &b->cap, b->n + 1, sizeof(*b->v)) < 0)
				return -ENOMEM;
			b->v[b->n++] = (struct ritem){.peer = (uint32_t)peer,
						      .proto = rl->protos[k],
						      .first = ported ? e->ranges[q].first : 0,
						      .last = ported ? e->ranges[q].last : 65535};
		}
	}
	return 0;
}

static int cmp_ritem(const void *a, const void *b)
{
	const struct ritem *x = a, *y = b;

	if (x->peer != y->peer)
		return x->peer < y->peer ? -1 : 1;
	if (x->proto != y->proto)
		return x->proto < y->proto ? -1 : 1;
	if (x->first != y->first)
		return x->first < y->first ? -1 : 1;
	return (x->last > y->last) - (x->last < y->last);
}

/* A peer's merged items; peers with equal items end up next to each other, by id. */
struct rspan {
	const struct ritem *it;
	size_t n;
	uint64_t id;
};

static int items_cmp(const struct rspan *x, const struct rspan *y)
{
	if (x->n != y->n)
		return x->n < y->n ? -1 : 1;
	for (size_t k = 0; k < x->n; k++) {
		const struct ritem *a = &x->it[k], *b = &y->it[k];
		struct netmap_reach_port pa = {a->proto, a->first, a->last};
		struct netmap_reach_port pb = {b->proto, b->first, b->last};
		int c = netmap_reach_port_cmp(&pa, &pb);

		if (c)
			return c;
	}
	return 0;
}

static int cmp_rspan(const void *a, const void *b)
{
	const struct rspan *x = a, *y = b;
	int c = items_cmp(x, y);

	if (c)
		return c;
	return (x->id > y->id) - (x->id < y->id);
}

/*
 * The items of the rules whose source is node i, by peer: each dst entry's nodes, i itself
 * included, so that the result depends on i's class alone (policy_view_class).
 */
static int reach_items(const struct policy_view *v, const struct policy_node *nodes, size_t i,
		       struct rbuild *b)
{
	const struct policy_node *x = &nodes[i];
	int r;

	for (size_t m = v->moff[i]; m < v->moff[i + 1]; m++) {
		const struct rule *rl = &v->p->rules[v->memb[m].rule];
		const struct crule *cr = &v->rules[v->memb[m].rule];

		if (!(v->memb[m].flags & M_SRC))
			continue;
		for (size_t k = 0; k < rl->n_dsts; k++) {
			const struct dst *e = &rl->dsts[k];

			if (e->sel.kind == SEL_SELF) {
				/* As frule sees it from the other end: i's user's untagged devices.
				 */
				if (!(v->memb[m].flags & M_SRC_ID) || x->n_tags || !x->user[0])
					continue;
				for (size_t u = nref_lower(v->users, v->n_users, x->user);
				     u < v->n_users && !strcmp(v->users[u].name, x->user); u++)
					if ((r = radd(b, rl, e, v->users[u].node)) < 0)
						return r;
				continue;
			}
			if (!cr->dsts[k])
				continue;
			for (size_t w = 0; w < v->words; w++) {
				for (uint64_t bits = cr->dsts[k][w]; bits; bits &= bits - 1) {
					size_t j = w * 64 + (size_t)__builtin_ctzll(bits);

					if ((r = radd(b, rl, e, j)) < 0)
						return r;
				}
			}
		}
	}
	return 0;
}

int policy_view_reach(const struct policy_view *v, const struct policy_node *nodes, size_t i,
		      struct netmap_reach **ret)
{
	struct rbuild b = {0};
	struct rspan *spans = NULL;
	struct netmap_reach *out = NULL;
	size_t n = 0, n_spans = 0, n_ports = 0, n_sets = 0, n_all = 0;
	const struct rspan *all = NULL;
	int r;

	if (i >= v->n)
		return -EINVAL;
	if ((r = reach_items(v, nodes, i, &b)) < 0)
		goto out;
	/* Sorted, then overlapping or touching ranges of a peer and protocol merged. */
	if (b.n)
		qsort(b.v, b.n, sizeof(*b.v), cmp_ritem);
	for (size_t k = 0; k < b.n; k++) {
		struct ritem *t = n ? &b.v[n - 1] : NULL;

		if (t && t->peer == b.v[k].peer && t->proto == b.v[k].proto &&
		    (uint32_t)b.v[k].first <= (uint32_t)t->last + 1) {
			if (b.v[k].last > t->last)
				t->last = b.v[k].last;
			continue;
		}
		b.v[n++] = b.v[k];
	}
	r = -ENOMEM;
	spans = calloc(n ? n : 1, sizeof(*spans));
	out = calloc(1, sizeof(*out));
	if (!spans || !out)
		goto out;
	for (size_t k = 0; k < n; k++) {
		if (!k || b.v[k].peer != b.v[k - 1].peer)
			spans[n_spans++] = (struct rspan){&b.v[k], 0, nodes[b.v[k].peer].id};
		spans[n_spans - 1].n++;
	}
	qsort(spans, n_spans, sizeof(*spans), cmp_rspan);
	/*
	 * One set and every node i sees in it: "*", so that a node coming or going leaves the
	 * list as it was. Decided on the class's list and row alone, not on which node is i:
	 * the server sends one class's list to all its nodes, and a node in the set that i does
	 * not see can only be i itself, which is no peer of its netmap. Nodes i does not see are
	 * no peers either (and it may open nothing on them).
	 */
	if (n_spans && !items_cmp(&spans[0], &spans[n_spans - 1])) {
		const uint64_t *row = policy_view_row(v, i);

		for (size_t k = 0; k < n_spans; k++)
			n_all += bit_test(row, spans[k].it->peer);
		if (n_all == v->counts[v->cls[i]])
			all = &spans[0];
	}
	if (all) {
		n_sets = 1;
		n_ports = all->n;
	}
	for (size_t k = 0; k < n_spans && !all; k++) {
		if (!k || items_cmp(&spans[k], &spans[k - 1])) {
			n_sets++;
			n_ports += spans[k].n;
		}
	}
	r = -E2BIG;
	if (n_sets > NETMAP_REACH_SETS_MAX || n_ports > NETMAP_REACH_PORTS_MAX)
		goto out;
	r = -ENOMEM;
	out->sets = calloc(n_sets + 1, sizeof(*out->sets));
	out->peers = calloc(all ? 1 : n_spans + 1, sizeof(*out->peers));
	out->ports = calloc(n_ports + 1, sizeof(*out->ports));
	if (!out->sets || !out->peers || !out->ports)
		goto out;
	if (all) {
		out->n_sets = 1;
		out->sets[0] = (struct netmap_reach_set){.n_ports = (uint32_t)all->n, .all = true};
		for (size_t q = 0; q < all->n; q++)
			out->ports[out->n_ports++] = (struct netmap_reach_port){
			    all->it[q].proto, all->it[q].first, all->it[q].last};
		n_spans = 0;
	}
	for (size_t k = 0; k < n_spans; k++) {
		struct netmap_reach_set *s;

		if (!k || items_cmp(&spans[k], &spans[k - 1])) {
			s = &out->sets[out->n_sets++];
			s->peer_off = out->n_peers;
			s->port_off = out->n_ports;
			s->n_ports = (uint32_t)spans[k].n;
			for (size_t q = 0; q < spans[k].n; q++)
				out->ports[out->n_ports++] = (struct netmap_reach_port){
				    spans[k].it[q].proto, spans[k].it[q].first,
				    spans[k].it[q].last};
		}
		out->sets[out->n_sets - 1].n_peers++;
		out->peers[out->n_peers++] = spans[k].id;
	}
	*ret = out;
	out = NULL;
	r = 0;
out:
	netmap_reach_free(out);
	free(spans);
	free(b.v);
	return r;
}
