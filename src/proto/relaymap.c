/* SPDX-License-Identifier: MIT */
/*
 * The relay map checker (relaymap.h). The encoder lives with the other JSON
 * writers in ctrlmsg.c; both sides apply the rules below, so every map the
 * encoder writes decodes again:
 *
 *   regions      array, at most NETMAP_RELAY_REGIONS_MAX
 *     id         integer 1..65535, unique
 *     code       1-15 of [a-z0-9-], unique
 *     name       text, optional
 *     nodes      array, 1..NETMAP_RELAY_NODES_MAX
 *       name     1-63 of [A-Za-z0-9.-]
 *       host     DNS name (letters, digits, '-', '.'), optional
 *       ipv4     address text, optional
 *       ipv6     address text (no scope), optional
 *       relay_port, stun_port  0..65535 (stun_port defaults to 3478)
 *       tls      boolean, optional
 *       key      relay key (base64), optional
 *
 * A node needs a host or an address, except the one form that names the
 * control server itself: no host, no address and relay_port 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/base64.h"
#include "base/util.h"
#include "proto/relaymap.h"

static int fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static bool name_char(char c, bool upper)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
	       (upper && ((c >= 'A' && c <= 'Z') || c == '.'));
}

static bool word_valid(const char *s, size_t n, size_t max, bool upper)
{
	if (!n || n >= max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char(s[i], upper))
			return false;
	return true;
}

/* A region's name: printable ASCII (it ends up in terminal tables). */
static bool text_valid(const char *s, size_t n, size_t max)
{
	if (n >= max)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

static bool known(const char *k, const char *const *keys)
{
	for (; *keys; keys++)
		if (!strcmp(k, *keys))
			return true;
	return false;
}

/* Unknown members of o: an error when strict. */
static int members_check(json_t *o, bool strict, const char *const *keys, const char *where,
			 char *err, size_t err_len)
{
	const char *k;
	json_t *v;

	if (!strict)
		return 0;
	json_object_foreach(o, k, v)
	{
		if (!known(k, keys))
			return fail(err, err_len, "%s: unknown field \"%s\"", where, k);
	}
	return 0;
}

static int port_get(json_t *o, const char *k, uint16_t dflt, uint16_t *ret, const char *where,
		    char *err, size_t err_len)
{
	json_t *v = json_object_get(o, k);

	if (!v) {
		*ret = dflt;
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 65535)
		return fail(err, err_len, "%s.%s: must be a port number (0-65535)", where, k);
	*ret = (uint16_t)json_integer_value(v);
	return 0;
}

/* A string member: 0 with *ret set, 1 when absent, -EINVAL when not a string. */
static int str_get(json_t *o, const char *k, const char **ret, size_t *ret_n, const char *where,
		   char *err, size_t err_len)
{
	json_t *v = json_object_get(o, k);

	*ret = NULL;
	*ret_n = 0;
	if (!v)
		return 1;
	if (!json_is_string(v))
		return fail(err, err_len, "%s.%s: must be a string", where, k);
	*ret = json_string_value(v);
	*ret_n = json_string_length(v);
	if (strlen(*ret) != *ret_n)
		return fail(err, err_len, "%s.%s: contains a NUL", where, k);
	return 0;
}

static int node_from(json_t *o, bool strict, struct netmap_relay_node *n, const char *where,
		     char *err, size_t err_len)
{
	static const char *const keys[] = {"name",	"host", "ipv4", "ipv6", "relay_port",
					   "stun_port", "tls",	"key",	NULL};
	const char *s;
	size_t len;
	json_t *v;
	int r;

	memset(n, 0, sizeof(*n));
	if (!json_is_object(o))
		return fail(err, err_len, "%s: must be an object", where);
	r = members_check(o, strict, keys, where, err, err_len);
	if (r)
		return r;
	r = str_get(o, "name", &s, &len, where, err, err_len);
	if (r < 0)
		return r;
	if (r > 0)
		return fail(err, err_len, "%s: missing \"name\"", where);
	if (!word_valid(s, len, sizeof(n->name), true))
		return fail(err, err_len,
			    "%s.name: \"%.64s\" is not a name (1-63 letters, digits, "
			    "'-', '.')",
			    where, s);
	memcpy(n->name, s, len + 1);

	r = str_get(o, "host", &s, &len, where, err, err_len);
	if (r < 0)
		return r;
	if (r == 0 && len) {
		if (!word_valid(s, len, sizeof(n->host), true) || s[0] == '.' || s[0] == '-')
			return fail(err, err_len, "%s.host: \"%.128s\" is not a host name", where,
				    s);
		memcpy(n->host, s, len + 1);
	}
	r = str_get(o, "ipv4", &s, &len, where, err, err_len);
	if (r < 0)
		return r;
	if (r == 0) {
		if (len >= INET_ADDRSTRLEN || inet_pton(AF_INET, s, n->ipv4) != 1)
			return fail(err, err_len, "%s.ipv4: \"%.64s\" is not an IPv4 address",
				    where, s);
		n->has_ipv4 = true;
	}
	r = str_get(o, "ipv6", &s, &len, where, err, err_len);
	if (r < 0)
		return r;
	if (r == 0) {
		if (len >= INET6_ADDRSTRLEN || inet_pton(AF_INET6, s, n->ipv6) != 1)
			return fail(err, err_len, "%s.ipv6: \"%.64s\" is not an IPv6 address",
				    where, s);
		n->has_ipv6 = true;
	}
	r = port_get(o, "relay_port", 0, &n->relay_port, where, err, err_len);
	if (!r)
		r = port_get(o, "stun_port", NETMAP_STUN_PORT_DEFAULT, &n->stun_port, where, err,
			     err_len);
	if (r)
		return r;
	v = json_object_get(o, "tls");
	if (v && !json_is_boolean(v))
		return fail(err, err_len, "%s.tls: must be true or false", where);
	n->tls = v && json_is_true(v);
	v = json_object_get(o, "key");
	if (v) {
		if (!json_is_string(v) || json_string_length(v) != KEY_BASE64_LEN ||
		    key_from_base64(n->key, json_string_value(v)))
			return fail(err, err_len, "%s.key: not a key (44 characters of base64)",
				    where);
		n->has_key = true;
	}
	if (!n->host[0] && !n->has_ipv4 && !n->has_ipv6 && n->relay_port)
		return fail(err, err_len,
			    "%s: needs \"host\", \"ipv4\" or \"ipv6\" (only the "
			    "control server itself goes without, with relay_port 0)",
			    where);
	return 0;
}

static int region_from(json_t *o, bool strict, struct netmap_relay_region *g, const char *where,
		       char *err, size_t err_len)
{
	static const char *const keys[] = {"id", "code", "name", "nodes", NULL};
	char at[96];
	const char *s;
	size_t len, i;
	json_t *v, *a;
	int r;

	memset(g, 0, sizeof(*g));
	if (!json_is_object(o))
		return fail(err, err_len, "%s: must be an object", where);
	r = members_check(o, strict, keys, where, err, err_len);
	if (r)
		return r;
	v = json_object_get(o, "id");
	if (!v)
		return fail(err, err_len, "%s: missing \"id\"", where);
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > NETMAP_RELAY_REGION_ID_MAX)
		return fail(err, err_len, "%s.id: must be an integer from 1 to %d", where,
			    NETMAP_RELAY_REGION_ID_MAX);
	g->id = (uint32_t)json_integer_value(v);
	r = str_get(o, "code", &s, &len, where, err, err_len);
	if (r < 0)
		return r;
	if (r > 0)
		return fail(err, err_len, "%s: missing \"code\"", where);
	if (!word_valid(s, len, sizeof(g->code), false))
		return fail(err, err_len,
			    "%s.code: \"%.32s\" is not a region code (1-15 of a-z, "
			    "0-9, '-')",
			    where, s);
	memcpy(g->code, s, len + 1);
	r = str_get(o, "name", &s, &len, where, err, err_len);
	if (r < 0)
		return r;
	if (r == 0) {
		if (!text_valid(s, len, sizeof(g->name)))
			return fail(err, err_len,
				    "%s.name: at most %zu characters, no control "
				    "characters",
				    where, sizeof(g->name) - 1);
		memcpy(g->name, s, len + 1);
	}
	a = json_object_get(o, "nodes");
	if (!a)
		return fail(err, err_len, "%s: missing \"nodes\"", where);
	if (!json_is_array(a) || !json_array_size(a) || json_array_size(a) > NETMAP_RELAY_NODES_MAX)
		return fail(err, err_len, "%s.nodes: must be an array of 1 to %d relays", where,
			    NETMAP_RELAY_NODES_MAX);
	json_array_foreach(a, i, v)
	{
		snprintf(at, sizeof(at), "%s.nodes[%zu]", where, i);
		r = node_from(v, strict, &g->nodes[i], at, err, err_len);
		if (r)
			return r;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(g->nodes[j].name, g->nodes[i].name))
				return fail(err, err_len, "%s.name: \"%s\" twice in the region", at,
					    g->nodes[i].name);
	}
	g->n_nodes = (unsigned)json_array_size(a);
	return 0;
}

int relaymap_from_json(json_t *o, bool strict, struct netmap_relay_map *ret, char *err,
		       size_t err_len)
{
	static const char *const keys[] = {"regions", NULL};
	struct netmap_relay_map *rm = ret;
	char at[32];
	json_t *a, *v;
	size_t i;
	int r;

	memset(rm, 0, sizeof(*rm));
	if (!json_is_object(o))
		return fail(err, err_len, "the relay map must be an object with \"regions\"");
	r = members_check(o, strict, keys, "relay map", err, err_len);
	if (r)
		goto out;
	a = json_object_get(o, "regions");
	if (!a || !json_is_array(a) || json_array_size(a) > NETMAP_RELAY_REGIONS_MAX) {
		r = fail(err, err_len, "regions: must be an array of at most %d regions",
			 NETMAP_RELAY_REGIONS_MAX);
		goto out;
	}
	json_array_foreach(a, i, v)
	{
		snprintf(at, sizeof(at), "regions[%zu]", i);
		r = region_from(v, strict, &rm->regions[i], at, err, err_len);
		if (r)
			goto out;
		for (size_t j = 0; j < i; j++) {
			if (rm->regions[j].id == rm->regions[i].id) {
				r = fail(err, err_len, "%s.id: %u is also the id of regions[%zu]",
					 at, rm->regions[i].id, j);
				goto out;
			}
			if (!strcmp(rm->regions[j].code, rm->regions[i].code)) {
				r = fail(err, err_len,
					 "%s.code: \"%s\" is also the code of "
					 "regions[%zu]",
					 at, rm->regions[i].code, j);
				goto out;
			}
		}
	}
	rm->n_regions = (unsigned)json_array_size(a);
out:
	if (r)
		memset(rm, 0, sizeof(*rm));
	return r;
}

int relaymap_parse(const char *text, size_t len, struct netmap_relay_map *ret, char *err,
		   size_t err_len)
{
	json_error_t jerr;
	json_t *root;
	int r;

	if (len > RELAYMAP_TEXT_MAX) {
		fail(err, err_len, "larger than %u bytes", RELAYMAP_TEXT_MAX);
		return -EMSGSIZE;
	}
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return fail(err, err_len, "%d:%d: %s", jerr.line, jerr.column, jerr.text);
	r = relaymap_from_json(root, true, ret, err, err_len);
	json_decref(root);
	return r;
}

static bool cstr_valid(const char *s, size_t cap, bool upper, bool may_be_empty)
{
	size_t n = strnlen(s, cap);

	if (n == cap)
		return false;
	return (may_be_empty && !n) || word_valid(s, n, cap, upper);
}

bool relaymap_valid(const struct netmap_relay_map *rm)
{
	if (rm->n_regions > NETMAP_RELAY_REGIONS_MAX)
		return false;
	for (unsigned i = 0; i < rm->n_regions; i++) {
		const struct netmap_relay_region *g = &rm->regions[i];

		if (!g->id || g->id > NETMAP_RELAY_REGION_ID_MAX ||
		    !cstr_valid(g->code, sizeof(g->code), false, false) ||
		    strnlen(g->name, sizeof(g->name)) == sizeof(g->name) ||
		    !text_valid(g->name, strlen(g->name), sizeof(g->name)) || !g->n_nodes ||
		    g->n_nodes > NETMAP_RELAY_NODES_MAX)
			return false;
		for (unsigned j = 0; j < i; j++)
			if (rm->regions[j].id == g->id || !strcmp(rm->regions[j].code, g->code))
				return false;
		for (unsigned j = 0; j < g->n_nodes; j++) {
			const struct netmap_relay_node *n = &g->nodes[j];

			if (!cstr_valid(n->name, sizeof(n->name), true, false) ||
			    !cstr_valid(n->host, sizeof(n->host), true, true) ||
			    n->host[0] == '.' || n->host[0] == '-' ||
			    (!n->host[0] && !n->has_ipv4 && !n->has_ipv6 && n->relay_port))
				return false;
			for (unsigned k = 0; k < j; k++)
				if (!strcmp(g->nodes[k].name, n->name))
					return false;
		}
	}
	return true;
}

static bool node_equal(const struct netmap_relay_node *a, const struct netmap_relay_node *b)
{
	return !strcmp(a->name, b->name) && !strcmp(a->host, b->host) &&
	       a->has_ipv4 == b->has_ipv4 && a->has_ipv6 == b->has_ipv6 &&
	       (!a->has_ipv4 || !memcmp(a->ipv4, b->ipv4, 4)) &&
	       (!a->has_ipv6 || !memcmp(a->ipv6, b->ipv6, 16)) && a->relay_port == b->relay_port &&
	       a->stun_port == b->stun_port && a->tls == b->tls && a->has_key == b->has_key &&
	       (!a->has_key || !memcmp(a->key, b->key, sizeof(a->key)));
}

bool relaymap_equal(const struct netmap_relay_map *a, const struct netmap_relay_map *b)
{
	if (a->n_regions != b->n_regions)
		return false;
	for (unsigned i = 0; i < a->n_regions && i < NETMAP_RELAY_REGIONS_MAX; i++) {
		const struct netmap_relay_region *x = &a->regions[i], *y = &b->regions[i];

		if (x->id != y->id || strcmp(x->code, y->code) || strcmp(x->name, y->name) ||
		    x->n_nodes != y->n_nodes)
			return false;
		for (unsigned j = 0; j < x->n_nodes && j < NETMAP_RELAY_NODES_MAX; j++)
			if (!node_equal(&x->nodes[j], &y->nodes[j]))
				return false;
	}
	return true;
}
