/* SPDX-License-Identifier: MIT */
/*
 * The control message codec (docs/control-protocol.md).
 *
 * Encoding writes JSON straight into a growing buffer: a full netmap of 10,000
 * peers goes out on every connect, and building a jansson tree for it first
 * costs several times more than the text itself. Decoding uses jansson, after a
 * linear pre-scan that bounds nesting depth and the size of the tree jansson
 * would build (a 16 MiB message of "{}," would otherwise cost over a GiB).
 *
 * Both directions apply the same rules, so whatever we encode we also accept:
 * text fields fit their C arrays with the NUL and carry no control characters
 * (names end up in terminal tables), keys are wg(8) base64, integers are
 * non-negative and fit int64_t, endpoints carry no IPv6 scope (meaningless on
 * another machine), and arrays respect the NETMAP_MAX_* caps.
 *
 * Required fields: every field the doc lists without "?"; in a node record
 * id, name, node_key, addresses and allowed_ips (the rest default to zero /
 * empty). The encoder always writes every node field, and omits empty optional
 * message fields.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/base64.h"
#include "base/util.h"
#include "proto/ctrlmsg.h"
#include "proto/mapz.h"
#include "proto/relaymap.h"

/* Our deepest message is 4 levels (delta -> endpoints -> patch -> endpoints). */
#define JSON_DEPTH_MAX 16
/*
 * Estimated bytes jansson allocates per container and per scalar; the pre-scan
 * rejects messages whose tree would exceed DECODE_BUDGET (room for ~150,000
 * peers in one netmap).
 */
#define COST_CONTAINER 192
#define COST_VALUE 48
#define DECODE_BUDGET (256ULL << 20)

static const char *const type_names[] = {
    [CTRL_MSG_UNKNOWN] = "unknown",
    [CTRL_MSG_REGISTER] = "register",
    [CTRL_MSG_REGISTER_RESPONSE] = "register_response",
    [CTRL_MSG_MAP_REQUEST] = "map_request",
    [CTRL_MSG_NETMAP] = "netmap",
    [CTRL_MSG_DELTA] = "delta",
    [CTRL_MSG_ENDPOINTS] = "endpoints",
    [CTRL_MSG_LOGOUT] = "logout",
    [CTRL_MSG_LOGOUT_RESPONSE] = "logout_response",
    [CTRL_MSG_KEEPALIVE] = "keepalive",
    [CTRL_MSG_ERROR] = "error",
    [CTRL_MSG_FLOWS] = "flows",
    [CTRL_MSG_FLOWS_ACK] = "flows_ack",
};

static const char *const status_names[] = {
	[CTRL_REGISTER_OK] = "ok",
	[CTRL_REGISTER_NEEDS_AUTH] = "needs_auth",
	[CTRL_REGISTER_ERROR] = "error",
};

const char *ctrl_msg_type_name(enum ctrl_msg_type t)
{
	if ((unsigned)t >= ARRAY_SIZE(type_names))
		return "unknown";
	return type_names[t];
}

void ctrl_msg_clear(struct ctrl_msg *m)
{
	if (!m)
		return;
	if (m->type == CTRL_MSG_NETMAP)
		netmap_free(m->netmap);
	else if (m->type == CTRL_MSG_DELTA)
		netmap_delta_free(m->delta);
	else if (m->type == CTRL_MSG_FLOWS)
		free(m->flows.batch);
	memset(m, 0, sizeof(*m));
}

/* Shared rules */

/* Well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF), no controls. */
static bool text_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + n;

	while (p < end) {
		unsigned c = *p++, need, cp, min;

		if (c < 0x80) {
			if (c < 0x20 || c == 0x7f)
				return false;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1, cp = c & 0x1f, min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2, cp = c & 0x0f, min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return false;
		}
		if ((size_t)(end - p) < need)
			return false;
		while (need--) {
			if ((*p & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (*p++ & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		/* C1 controls are terminal escapes too. */
		if (cp >= 0x80 && cp < 0xa0)
			return false;
	}
	return true;
}

static int prefix_parse(struct netmap_prefix *ret, const char *s)
{
	struct netmap_prefix p;
	char host[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	unsigned len = 0, max;
	size_t n, i;

	if (!slash)
		return -EINVAL;
	n = (size_t)(slash - s);
	if (n >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, n);
	host[n] = '\0';
	memset(&p, 0, sizeof(p));
	if (inet_pton(AF_INET, host, p.addr) == 1) {
		p.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, p.addr) == 1) {
		p.family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	/* 1-3 digits, no sign, no leading zero: one text form per prefix. */
	for (i = 1; slash[i]; i++) {
		if (i > 3 || slash[i] < '0' || slash[i] > '9')
			return -EINVAL;
		len = len * 10 + (unsigned)(slash[i] - '0');
	}
	if (i == 1 || (slash[1] == '0' && i > 2) || len > max)
		return -EINVAL;
	p.len = (uint8_t)len;
	*ret = p;
	return 0;
}

static bool endpoint_wire_valid(const struct endpoint *ep)
{
	return ep->sa.sa_family == AF_INET ||
	       (ep->sa.sa_family == AF_INET6 && !ep->in6.sin6_scope_id);
}

/* Encoder */

struct wbuf {
	char *p;
	size_t len, cap;
	int err;
};

static bool wbuf_reserve(struct wbuf *b, size_t n)
{
	size_t cap;
	char *p;

	if (b->err)
		return false;
	if (n > CTRL_MSG_MAX || b->len + n > CTRL_MSG_MAX) {
		b->err = -EMSGSIZE;
		return false;
	}
	if (b->len + n + 1 <= b->cap)
		return true;
	cap = b->cap ? b->cap : 1024;
	while (cap < b->len + n + 1)
		cap *= 2;
	p = realloc(b->p, cap);
	if (!p) {
		b->err = -ENOMEM;
		return false;
	}
	b->p = p;
	b->cap = cap;
	return true;
}

static void put(struct wbuf *b, const char *s, size_t n)
{
	if (!wbuf_reserve(b, n))
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

#define put_lit(b, s) put(b, s, sizeof(s) - 1)

static void put_u64(struct wbuf *b, uint64_t v)
{
	char tmp[24];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	put(b, tmp + i, sizeof(tmp) - i);
}

/* Integers must survive the decoder (json_int_t) and be non-negative. */
static void put_uint(struct wbuf *b, uint64_t v)
{
	if (v > INT64_MAX) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_u64(b, v);
}

static void put_sint(struct wbuf *b, int64_t v)
{
	if (v < 0) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_u64(b, (uint64_t)v);
}

/* A text field: NUL within its array, valid text; escaped for JSON. */
static void put_text(struct wbuf *b, const char *s, size_t cap)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strnlen(s, cap), i, start;

	if (n == cap || !text_valid(s, n)) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "\"");
	for (i = 0, start = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

		/* text_valid excludes controls; escape them anyway, the encoder must never emit bad JSON. */
		if (c != '"' && c != '\\' && c >= 0x20)
			continue;
		put(b, s + start, i - start);
		if (c == '"' || c == '\\') {
			esc[1] = (char)c;
			put(b, esc, 2);
		} else {
			put(b, esc, 6);
		}
		start = i + 1;
	}
	put(b, s + start, n - start);
	put_lit(b, "\"");
}

static void put_key(struct wbuf *b, const uint8_t key[NETMAP_KEY_LEN])
{
	char s[KEY_BASE64_LEN + 1];

	key_to_base64(s, key);
	put_lit(b, "\"");
	put(b, s, KEY_BASE64_LEN);
	put_lit(b, "\"");
}

/* Bytes as a base64 string; none is refused (no message carries an empty one). */
static void put_blob(struct wbuf *b, const uint8_t *p, size_t len)
{
	size_t n = BASE64_ENCODED_LEN(len);
	char *s;

	if (!p || !len || len > CTRL_MSG_MAX / 2) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	s = malloc(n + 1);
	if (!s) {
		b->err = b->err ? b->err : -ENOMEM;
		return;
	}
	base64_encode(s, n + 1, p, len);
	put_lit(b, "\"");
	put(b, s, n);
	put_lit(b, "\"");
	free(s);
}

static void put_prefix(struct wbuf *b, const struct netmap_prefix *p)
{
	char s[INET6_ADDRSTRLEN + 8];
	int len;

	if (!netmap_prefix_valid(p) || !inet_ntop(p->family, p->addr, s, sizeof(s))) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	len = (int)strlen(s);
	len += snprintf(s + len, sizeof(s) - (size_t)len, "/%u", p->len);
	put_lit(b, "\"");
	put(b, s, (size_t)len);
	put_lit(b, "\"");
}

static void put_prefixes(struct wbuf *b, const struct netmap_prefix *p, unsigned n, unsigned max)
{
	if (n > max) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "[");
	for (unsigned i = 0; i < n && !b->err; i++) {
		if (i)
			put_lit(b, ",");
		put_prefix(b, &p[i]);
	}
	put_lit(b, "]");
}

static void put_endpoints(struct wbuf *b, const struct endpoint *ep, unsigned n)
{
	char s[ENDPOINT_STR_MAX];

	if (n > NETMAP_MAX_ENDPOINTS) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "[");
	for (unsigned i = 0; i < n; i++) {
		if (!endpoint_wire_valid(&ep[i])) {
			b->err = b->err ? b->err : -EINVAL;
			return;
		}
		endpoint_format(&ep[i], s, sizeof(s));
		if (i)
			put_lit(b, ",");
		put_lit(b, "\"");
		put(b, s, strlen(s));
		put_lit(b, "\"");
	}
	put_lit(b, "]");
}

static void put_tags(struct wbuf *b, const char (*tags)[NETMAP_TAG_MAX], unsigned n)
{
	if (n > NETMAP_MAX_TAGS) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "[");
	for (unsigned i = 0; i < n; i++) {
		if (i)
			put_lit(b, ",");
		put_text(b, tags[i], NETMAP_TAG_MAX);
	}
	put_lit(b, "]");
}

static void put_region_id(struct wbuf *b, uint32_t id)
{
	if (id > NETMAP_RELAY_REGION_ID_MAX) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_u64(b, id);
}

static void put_addr(struct wbuf *b, int family, const void *addr)
{
	char s[INET6_ADDRSTRLEN];

	if (!inet_ntop(family, addr, s, sizeof(s))) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "\"");
	put(b, s, strlen(s));
	put_lit(b, "\"");
}

static void put_relay_node(struct wbuf *b, const struct netmap_relay_node *n)
{
	put_lit(b, "{\"name\":");
	put_text(b, n->name, sizeof(n->name));
	if (n->host[0]) {
		put_lit(b, ",\"host\":");
		put_text(b, n->host, sizeof(n->host));
	}
	if (n->has_ipv4) {
		put_lit(b, ",\"ipv4\":");
		put_addr(b, AF_INET, n->ipv4);
	}
	if (n->has_ipv6) {
		put_lit(b, ",\"ipv6\":");
		put_addr(b, AF_INET6, n->ipv6);
	}
	put_lit(b, ",\"relay_port\":");
	put_u64(b, n->relay_port);
	put_lit(b, ",\"stun_port\":");
	put_u64(b, n->stun_port);
	if (n->tls)
		put_lit(b, ",\"tls\":true");
	else
		put_lit(b, ",\"tls\":false");
	if (n->has_key) {
		put_lit(b, ",\"key\":");
		put_key(b, n->key);
	}
	put_lit(b, "}");
}

static void put_relay_map(struct wbuf *b, const struct netmap_relay_map *rm)
{
	if (!relaymap_valid(rm)) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "{\"regions\":[");
	for (unsigned i = 0; i < rm->n_regions; i++) {
		const struct netmap_relay_region *g = &rm->regions[i];

		if (i)
			put_lit(b, ",");
		put_lit(b, "{\"id\":");
		put_u64(b, g->id);
		put_lit(b, ",\"code\":");
		put_text(b, g->code, sizeof(g->code));
		put_lit(b, ",\"name\":");
		put_text(b, g->name, sizeof(g->name));
		put_lit(b, ",\"nodes\":[");
		for (unsigned j = 0; j < g->n_nodes; j++) {
			if (j)
				put_lit(b, ",");
			put_relay_node(b, &g->nodes[j]);
		}
		put_lit(b, "]}");
	}
	put_lit(b, "]}");
}

/* A piece's text out of b, or b's error (and its buffer freed). */
static int wbuf_take(struct wbuf *b, char **ret, size_t *ret_len)
{
	if (b->err) {
		free(b->p);
		return b->err;
	}
	*ret = b->p;
	*ret_len = b->len;
	return 0;
}

int relaymap_encode(const struct netmap_relay_map *rm, char **ret, size_t *ret_len)
{
	struct wbuf b = {0};

	put_relay_map(&b, rm);
	return wbuf_take(&b, ret, ret_len);
}

static void put_filter(struct wbuf *b, const struct netmap_filter *f)
{
	char s[ENDPOINT_STR_MAX];

	if (!netmap_filter_valid(f)) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "{\"rules\":[");
	for (unsigned i = 0; i < f->n_rules && !b->err; i++) {
		const struct netmap_filter_rule *r = &f->rules[i];

		if (i)
			put_lit(b, ",");
		put_lit(b, "{\"src\":");
		put_prefixes(b, f->srcs + r->src_off, r->n_src, r->n_src);
		put_lit(b, ",\"dst\":[");
		for (unsigned j = 0; j < r->n_dst; j++) {
			const struct netmap_filter_dst *d = &f->dsts[r->dst_off + j];

			if (j)
				put_lit(b, ",");
			put_lit(b, "{\"ip\":");
			put_prefix(b, &d->prefix);
			snprintf(s, sizeof(s), ",\"ports\":[%u,%u]}", d->port_first, d->port_last);
			put(b, s, strlen(s));
		}
		put_lit(b, "],\"proto\":[");
		for (unsigned j = 0; j < r->n_protos; j++) {
			if (j)
				put_lit(b, ",");
			put_u64(b, r->protos[j]);
		}
		put_lit(b, "]}");
	}
	put_lit(b, "]}");
}

/* "may_open": [{"peers": [ID, ...] or "*", "ports": [[PROTO, FIRST, LAST], ...]}, ...] */
static void put_reach(struct wbuf *b, const struct netmap_reach *r)
{
	if (!netmap_reach_valid(r)) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "[");
	for (unsigned i = 0; i < r->n_sets && !b->err; i++) {
		const struct netmap_reach_set *s = &r->sets[i];

		if (i)
			put_lit(b, ",");
		if (s->all) {
			put_lit(b, "{\"peers\":\"*\",\"ports\":[");
		} else {
			put_lit(b, "{\"peers\":[");
			for (uint32_t k = 0; k < s->n_peers; k++) {
				if (k)
					put_lit(b, ",");
				put_uint(b, r->peers[s->peer_off + k]);
			}
			put_lit(b, "],\"ports\":[");
		}
		for (uint32_t k = 0; k < s->n_ports; k++) {
			const struct netmap_reach_port *q = &r->ports[s->port_off + k];
			char t[32];

			snprintf(t, sizeof(t), "%s[%u,%u,%u]", k ? "," : "", q->proto, q->first,
				 q->last);
			put(b, t, strlen(t));
		}
		put_lit(b, "]}");
	}
	put_lit(b, "]");
}

int ctrl_filter_encode(const struct netmap_filter *f, char **ret, size_t *ret_len)
{
	struct wbuf b = {0};

	put_filter(&b, f);
	return wbuf_take(&b, ret, ret_len);
}

int ctrl_reach_encode(const struct netmap_reach *r, char **ret, size_t *ret_len)
{
	struct wbuf b = {0};

	put_reach(&b, r);
	return wbuf_take(&b, ret, ret_len);
}

static void put_node(struct wbuf *b, const struct netmap_node *n)
{
	put_lit(b, "{\"id\":");
	put_uint(b, n->id);
	put_lit(b, ",\"name\":");
	put_text(b, n->name, sizeof(n->name));
	put_lit(b, ",\"node_key\":");
	put_key(b, n->node_key);
	put_lit(b, ",\"machine_key\":");
	put_key(b, n->machine_key);
	put_lit(b, ",\"addresses\":");
	put_prefixes(b, n->addresses, n->n_addresses, NETMAP_MAX_ADDRESSES);
	put_lit(b, ",\"allowed_ips\":");
	put_prefixes(b, n->allowed_ips, n->n_allowed_ips, NETMAP_MAX_ALLOWED_IPS);
	put_lit(b, ",\"endpoints\":");
	put_endpoints(b, n->endpoints, n->n_endpoints);
	if (n->online)
		put_lit(b, ",\"online\":true,\"last_seen\":");
	else
		put_lit(b, ",\"online\":false,\"last_seen\":");
	put_sint(b, n->last_seen);
	put_lit(b, ",\"key_expiry\":");
	put_sint(b, n->key_expiry);
	put_lit(b, ",\"os\":");
	put_text(b, n->os, sizeof(n->os));
	put_lit(b, ",\"user\":");
	put_text(b, n->user, sizeof(n->user));
	put_lit(b, ",\"tags\":");
	put_tags(b, n->tags, n->n_tags);
	/* Optional, so records of nodes that never chose a home read as before. */
	if (n->home_region) {
		put_lit(b, ",\"home_region\":");
		put_region_id(b, n->home_region);
	}
	if (n->has_disco_key) {
		put_lit(b, ",\"disco_key\":");
		put_key(b, n->disco_key);
	}
	if (n->mapping_varies)
		put_lit(b, ",\"mapping_varies\":true");
	put_lit(b, "}");
}

static void put_nodes(struct wbuf *b, const struct netmap_node *nodes, unsigned n)
{
	if (n > NETMAP_MAX_PEERS || (n && !nodes)) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	put_lit(b, "[");
	for (unsigned i = 0; i < n && !b->err; i++) {
		if (i)
			put_lit(b, ",");
		put_node(b, &nodes[i]);
	}
	put_lit(b, "]");
}

static void put_version(struct wbuf *b, const struct netmap_version *v)
{
	if (!v || !v->feed)
		return;
	put_lit(b, ",\"version\":");
	put_uint(b, v->feed);
	put_lit(b, ",\"digest\":");
	put_key(b, v->digest);
}

/* ,"flow_log":{...} when set; one the decoder would refuse is -EINVAL. */
static void put_flow_log(struct wbuf *b, const struct netmap_flow_log *fl)
{
	if (!fl || !fl->set)
		return;
	if (!netmap_flow_log_valid(fl)) {
		b->err = b->err ? b->err : -EINVAL;
		return;
	}
	if (fl->enabled)
		put_lit(b, ",\"flow_log\":{\"enabled\":true,\"interval_ms\":");
	else
		put_lit(b, ",\"flow_log\":{\"enabled\":false,\"interval_ms\":");
	put_uint(b, fl->interval_ms);
	put_lit(b, "}");
}

static void put_delta(struct wbuf *b, const struct netmap_delta *d)
{
	unsigned i;

	put_lit(b, ",\"seq\":");
	put_uint(b, d->seq);
	put_version(b, &d->version);
	if (d->n_added) {
		put_lit(b, ",\"peers_added\":");
		put_nodes(b, d->added, d->n_added);
	}
	if (d->n_changed) {
		put_lit(b, ",\"peers_changed\":");
		put_nodes(b, d->changed, d->n_changed);
	}
	if (d->n_removed) {
		if (d->n_removed > NETMAP_MAX_PEERS || !d->removed) {
			b->err = b->err ? b->err : -EINVAL;
			return;
		}
		put_lit(b, ",\"peers_removed\":[");
		for (i = 0; i < d->n_removed; i++) {
			if (i)
				put_lit(b, ",");
			put_uint(b, d->removed[i]);
		}
		put_lit(b, "]");
	}
	if (d->n_endpoints) {
		if (d->n_endpoints > NETMAP_MAX_PEERS || !d->endpoints) {
			b->err = b->err ? b->err : -EINVAL;
			return;
		}
		put_lit(b, ",\"endpoints\":[");
		for (i = 0; i < d->n_endpoints && !b->err; i++) {
			if (i)
				put_lit(b, ",");
			put_lit(b, "{\"id\":");
			put_uint(b, d->endpoints[i].id);
			put_lit(b, ",\"endpoints\":");
			put_endpoints(b, d->endpoints[i].endpoints, d->endpoints[i].n_endpoints);
			put_lit(b, "}");
		}
		put_lit(b, "]");
	}
	if (d->n_online) {
		if (d->n_online > NETMAP_MAX_PEERS || !d->online) {
			b->err = b->err ? b->err : -EINVAL;
			return;
		}
		put_lit(b, ",\"online\":[");
		for (i = 0; i < d->n_online && !b->err; i++) {
			if (i)
				put_lit(b, ",");
			put_lit(b, "{\"id\":");
			put_uint(b, d->online[i].id);
			if (d->online[i].online)
				put_lit(b, ",\"online\":true,\"last_seen\":");
			else
				put_lit(b, ",\"online\":false,\"last_seen\":");
			put_sint(b, d->online[i].last_seen);
			put_lit(b, "}");
		}
		put_lit(b, "]");
	}
	if (d->has_self) {
		put_lit(b, ",\"self\":");
		put_node(b, &d->self);
	}
	if (d->relay_map) {
		put_lit(b, ",\"relay_map\":");
		put_relay_map(b, d->relay_map);
	}
	if (d->filter) {
		put_lit(b, ",\"packet_filter\":");
		put_filter(b, d->filter);
	}
	put_flow_log(b, &d->flow_log);
	if (d->machine_cert) {
		put_lit(b, ",\"machine_cert\":");
		put_text(b, d->machine_cert, NETMAP_MCERT_MAX);
	}
	if (d->reach) {
		put_lit(b, ",\"may_open\":");
		put_reach(b, d->reach);
	}
	if (d->reach_patch) {
		/* One or the other: the decoder refuses both. */
		if (d->reach || !netmap_reach_patch_valid(d->reach_patch)) {
			b->err = b->err ? b->err : -EINVAL;
			return;
		}
		put_lit(b, ",\"may_open_patch\":{\"removed\":[");
		for (i = 0; i < d->reach_patch->n_removed; i++) {
			if (i)
				put_lit(b, ",");
			put_uint(b, d->reach_patch->removed[i]);
		}
		put_lit(b, "],\"sets\":");
		put_reach(b, d->reach_patch->add);
		put_lit(b, "}");
	}
}

int ctrl_msg_encode(const struct ctrl_msg *m, char **ret, size_t *ret_len)
{
	struct wbuf b = { 0 };
	const char *type;

	if ((unsigned)m->type >= ARRAY_SIZE(type_names) || m->type == CTRL_MSG_UNKNOWN)
		return -EINVAL;
	type = type_names[m->type];
	put_lit(&b, "{\"type\":\"");
	put(&b, type, strlen(type));
	put_lit(&b, "\"");

	switch (m->type) {
	case CTRL_MSG_REGISTER:
		put_lit(&b, ",\"node_key\":");
		put_key(&b, m->reg.node_key);
		if (m->reg.has_old_node_key) {
			put_lit(&b, ",\"old_node_key\":");
			put_key(&b, m->reg.old_node_key);
		}
		if (m->reg.has_node_key_proof) {
			put_lit(&b, ",\"node_key_proof\":");
			put_key(&b, m->reg.node_key_proof);
		}
		put_lit(&b, ",\"hostname\":");
		put_text(&b, m->reg.hostname, sizeof(m->reg.hostname));
		put_lit(&b, ",\"os\":");
		put_text(&b, m->reg.os, sizeof(m->reg.os));
		if (m->reg.auth_key[0]) {
			put_lit(&b, ",\"auth_key\":");
			put_text(&b, m->reg.auth_key, sizeof(m->reg.auth_key));
		}
		if (m->reg.n_tags) {
			put_lit(&b, ",\"tags\":");
			put_tags(&b, m->reg.tags, m->reg.n_tags);
		}
		if (m->reg.has_audit_key) {
			put_lit(&b, ",\"audit_key\":");
			put_key(&b, m->reg.audit_key);
		}
		if (m->reg.machine_cert[0]) {
			put_lit(&b, ",\"machine_cert\":");
			put_text(&b, m->reg.machine_cert, sizeof(m->reg.machine_cert));
			put_lit(&b, ",\"machine_cert_proof\":");
			put_text(&b, m->reg.machine_cert_proof, sizeof(m->reg.machine_cert_proof));
		}
		break;
	case CTRL_MSG_FLOWS:
		put_lit(&b, ",\"batch\":");
		put_blob(&b, m->flows.batch, m->flows.len);
		break;
	case CTRL_MSG_FLOWS_ACK:
		put_lit(&b, ",\"seq\":");
		put_uint(&b, m->flows_ack.seq);
		put_lit(&b, ",\"result\":");
		put_text(&b, m->flows_ack.result, sizeof(m->flows_ack.result));
		break;
	case CTRL_MSG_REGISTER_RESPONSE:
		if ((unsigned)m->reg_resp.status >= ARRAY_SIZE(status_names)) {
			b.err = -EINVAL;
			break;
		}
		put_lit(&b, ",\"status\":\"");
		put(&b, status_names[m->reg_resp.status], strlen(status_names[m->reg_resp.status]));
		put_lit(&b, "\"");
		if (m->reg_resp.auth_url[0]) {
			put_lit(&b, ",\"auth_url\":");
			put_text(&b, m->reg_resp.auth_url, sizeof(m->reg_resp.auth_url));
		}
		if (m->reg_resp.error[0]) {
			put_lit(&b, ",\"error\":");
			put_text(&b, m->reg_resp.error, sizeof(m->reg_resp.error));
		}
		if (m->reg_resp.has_node) {
			put_lit(&b, ",\"node\":");
			put_node(&b, &m->reg_resp.node);
		}
		if (m->reg_resp.machine_cert[0]) {
			put_lit(&b, ",\"machine_cert\":");
			put_text(&b, m->reg_resp.machine_cert, sizeof(m->reg_resp.machine_cert));
		}
		break;
	case CTRL_MSG_MAP_REQUEST:
		put_lit(&b, ",\"node_key\":");
		put_key(&b, m->map_req.node_key);
		put_lit(&b, ",\"endpoints\":");
		put_endpoints(&b, m->map_req.endpoints, m->map_req.n_endpoints);
		if (m->map_req.hostname[0]) {
			put_lit(&b, ",\"hostname\":");
			put_text(&b, m->map_req.hostname, sizeof(m->map_req.hostname));
		}
		if (m->map_req.stream)
			put_lit(&b, ",\"stream\":true");
		else
			put_lit(&b, ",\"stream\":false");
		if (m->map_req.home_region) {
			put_lit(&b, ",\"home_region\":");
			put_region_id(&b, m->map_req.home_region);
		}
		if (m->map_req.has_disco_key) {
			put_lit(&b, ",\"disco_key\":");
			put_key(&b, m->map_req.disco_key);
		}
		if (m->map_req.mapping_varies)
			put_lit(&b, ",\"mapping_varies\":true");
		if (m->map_req.has_have) {
			if (!m->map_req.have.version.feed) {
				b.err = -EINVAL;
				break;
			}
			put_lit(&b, ",\"have\":{\"seq\":");
			put_uint(&b, m->map_req.have.seq);
			put_version(&b, &m->map_req.have.version);
			put_lit(&b, "}");
		}
		if (m->map_req.zstd)
			put_lit(&b, ",\"compress\":\"" MAPZ_NAME "\"");
		if (m->map_req.reach_patch)
			put_lit(&b, ",\"may_open_patch\":true");
		break;
	case CTRL_MSG_ENDPOINTS:
		put_lit(&b, ",\"endpoints\":");
		put_endpoints(&b, m->endpoints.endpoints, m->endpoints.n_endpoints);
		if (m->endpoints.home_region) {
			put_lit(&b, ",\"home_region\":");
			put_region_id(&b, m->endpoints.home_region);
		}
		if (m->endpoints.has_disco_key) {
			put_lit(&b, ",\"disco_key\":");
			put_key(&b, m->endpoints.disco_key);
		}
		if (m->endpoints.mapping_varies)
			put_lit(&b, ",\"mapping_varies\":true");
		break;
	case CTRL_MSG_NETMAP:
		if (!m->netmap) {
			b.err = -EINVAL;
			break;
		}
		put_lit(&b, ",\"seq\":");
		put_uint(&b, m->netmap->seq);
		put_version(&b, &m->netmap->version);
		put_lit(&b, ",\"tailnet\":");
		put_text(&b, m->netmap->tailnet, sizeof(m->netmap->tailnet));
		put_lit(&b, ",\"self\":");
		put_node(&b, &m->netmap->self);
		put_lit(&b, ",\"peers\":");
		put_nodes(&b, m->netmap->peers, m->netmap->n_peers);
		if (m->netmap->relay_map.n_regions) {
			put_lit(&b, ",\"relay_map\":");
			put_relay_map(&b, &m->netmap->relay_map);
		}
		if (m->netmap->filter) {
			put_lit(&b, ",\"packet_filter\":");
			put_filter(&b, m->netmap->filter);
		}
		put_flow_log(&b, &m->netmap->flow_log);
		if (m->netmap->reach) {
			put_lit(&b, ",\"may_open\":");
			put_reach(&b, m->netmap->reach);
		}
		break;
	case CTRL_MSG_DELTA:
		if (!m->delta) {
			b.err = -EINVAL;
			break;
		}
		put_delta(&b, m->delta);
		break;
	case CTRL_MSG_ERROR:
		put_lit(&b, ",\"message\":");
		put_text(&b, m->error, sizeof(m->error));
		break;
	case CTRL_MSG_LOGOUT:
	case CTRL_MSG_LOGOUT_RESPONSE:
	case CTRL_MSG_KEEPALIVE:
	case CTRL_MSG_UNKNOWN:
		break;
	}
	put_lit(&b, "}");
	if (b.err) {
		free(b.p);
		return b.err;
	}
	*ret = b.p;
	*ret_len = b.len;
	return 0;
}

/* Pre-encoded netmaps */

int ctrl_node_encode(const struct netmap_node *n, char **ret, size_t *ret_len)
{
	struct wbuf b = { 0 };
	char *p;

	put_node(&b, n);
	if (b.err) {
		free(b.p);
		return b.err;
	}
	/* Cached for as long as the node lives: give back the slack of the doubling buffer. */
	p = realloc(b.p, b.len + 1);
	*ret = p ? p : b.p;
	*ret_len = b.len;
	return 0;
}

int ctrl_netmap_join(uint64_t seq, const struct netmap_version *version, const char *tailnet,
		     const struct ctrl_json_piece *self, const struct ctrl_json_piece *peers,
		     unsigned n_peers, const struct ctrl_json_piece *relay_map,
		     const struct ctrl_json_piece *filter, const struct netmap_flow_log *flow_log,
		     const struct ctrl_json_piece *may_open, char **ret, size_t *ret_len)
{
	struct wbuf b = { 0 }, fl = { 0 };
	size_t total;
	char *p;

	if (n_peers > NETMAP_MAX_PEERS || (n_peers && !peers))
		return -EINVAL;
	put_lit(&b, "{\"type\":\"netmap\",\"seq\":");
	put_uint(&b, seq);
	put_version(&b, version);
	put_lit(&b, ",\"tailnet\":");
	put_text(&b, tailnet, NETMAP_NAME_MAX);
	put_lit(&b, ",\"self\":");
	if (b.err)
		goto out;
	/* One allocation at the final size: the header, the records, commas, brackets. */
	total = b.len + self->len + sizeof(",\"peers\":[]}") - 1;
	for (unsigned i = 0; i < n_peers; i++)
		total += peers[i].len + (i ? 1 : 0);
	if (relay_map && relay_map->len)
		total += sizeof(",\"relay_map\":") - 1 + relay_map->len;
	if (filter && filter->len)
		total += sizeof(",\"packet_filter\":") - 1 + filter->len;
	put_flow_log(&fl, flow_log);
	if (fl.err) {
		b.err = fl.err;
		goto out;
	}
	total += fl.len;
	if (may_open && may_open->len)
		total += sizeof(",\"may_open\":") - 1 + may_open->len;
	if (total > CTRL_MSG_MAX) {
		b.err = -EMSGSIZE;
		goto out;
	}
	p = realloc(b.p, total + 1);
	if (!p) {
		b.err = -ENOMEM;
		goto out;
	}
	b.p = p;
	b.cap = total + 1;
	put(&b, self->p, self->len);
	put_lit(&b, ",\"peers\":[");
	for (unsigned i = 0; i < n_peers; i++) {
		if (i)
			put_lit(&b, ",");
		put(&b, peers[i].p, peers[i].len);
	}
	put_lit(&b, "]");
	if (relay_map && relay_map->len) {
		put_lit(&b, ",\"relay_map\":");
		put(&b, relay_map->p, relay_map->len);
	}
	if (filter && filter->len) {
		put_lit(&b, ",\"packet_filter\":");
		put(&b, filter->p, filter->len);
	}
	if (fl.len)
		put(&b, fl.p, fl.len);
	if (may_open && may_open->len) {
		put_lit(&b, ",\"may_open\":");
		put(&b, may_open->p, may_open->len);
	}
	put_lit(&b, "}");
out:
	free(fl.p);
	if (b.err) {
		free(b.p);
		return b.err;
	}
	*ret = b.p;
	*ret_len = b.len;
	return 0;
}

/* Decoder */

/*
 * One pass over the text: nesting depth and an upper estimate of the tree
 * jansson would allocate. Strings are skipped so brackets inside them do not
 * count; the text need not be valid JSON here, jansson judges that.
 */
static int prescan(const char *s, size_t len)
{
	uint64_t containers = 0, values = 0;
	unsigned depth = 0;
	bool in_str = false, esc = false;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (in_str) {
			if (esc)
				esc = false;
			else if (c == '\\')
				esc = true;
			else if (c == '"')
				in_str = false;
			continue;
		}
		switch (c) {
		case '"':
			in_str = true;
			break;
		case '{':
		case '[':
			if (++depth > JSON_DEPTH_MAX)
				return -EBADMSG;
			containers++;
			break;
		case '}':
		case ']':
			if (depth)
				depth--;
			break;
		case ',':
		case ':':
			values++;
			break;
		}
	}
	if (len + containers * COST_CONTAINER + values * COST_VALUE > DECODE_BUDGET)
		return -EBADMSG;
	return 0;
}

/* Field getters: 0 when present and valid, -ENOENT when absent, -EBADMSG otherwise. */

static int get_uint(json_t *o, const char *k, uint64_t *ret)
{
	json_t *v = json_object_get(o, k);

	if (!v)
		return -ENOENT;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EBADMSG;
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

/* Times are int64 on the wire but never negative: the same check as get_uint. */
static int get_sint(json_t *o, const char *k, int64_t *ret)
{
	uint64_t v;
	int r = get_uint(o, k, &v);

	if (r == 0)
		*ret = (int64_t)v;
	return r;
}

static int get_bool(json_t *o, const char *k, bool *ret)
{
	json_t *v = json_object_get(o, k);

	if (!v)
		return -ENOENT;
	if (!json_is_boolean(v))
		return -EBADMSG;
	*ret = json_is_true(v);
	return 0;
}

static int text_from(json_t *v, char *out, size_t cap)
{
	size_t n;

	if (!json_is_string(v))
		return -EBADMSG;
	n = json_string_length(v);
	if (n >= cap || !text_valid(json_string_value(v), n))
		return -EBADMSG;
	memcpy(out, json_string_value(v), n);
	out[n] = '\0';
	return 0;
}

static int get_text(json_t *o, const char *k, char *out, size_t cap)
{
	json_t *v = json_object_get(o, k);

	if (!v)
		return -ENOENT;
	return text_from(v, out, cap);
}

static int get_key(json_t *o, const char *k, uint8_t out[NETMAP_KEY_LEN])
{
	json_t *v = json_object_get(o, k);

	if (!v)
		return -ENOENT;
	if (!json_is_string(v) || json_string_length(v) != KEY_BASE64_LEN ||
	    key_from_base64(out, json_string_value(v)))
		return -EBADMSG;
	return 0;
}

/* An array member with at most max entries; its length in *ret_n. */
static int get_array(json_t *o, const char *k, size_t max, json_t **ret, size_t *ret_n)
{
	json_t *v = json_object_get(o, k);

	if (!v)
		return -ENOENT;
	if (!json_is_array(v) || json_array_size(v) > max)
		return -EBADMSG;
	*ret = v;
	*ret_n = json_array_size(v);
	return 0;
}

static int prefix_from(json_t *v, struct netmap_prefix *ret)
{
	if (!json_is_string(v) || json_string_length(v) > INET6_ADDRSTRLEN + 4 ||
	    prefix_parse(ret, json_string_value(v)))
		return -EBADMSG;
	return 0;
}

static int get_prefixes(json_t *o, const char *k, struct netmap_prefix *out, unsigned max,
			unsigned *ret_n)
{
	json_t *a;
	size_t n, i;
	int r = get_array(o, k, max, &a, &n);

	if (r)
		return r;
	for (i = 0; i < n; i++)
		if (prefix_from(json_array_get(a, i), &out[i]))
			return -EBADMSG;
	*ret_n = (unsigned)n;
	return 0;
}

static int get_endpoints(json_t *o, const char *k, struct endpoint *out, unsigned *ret_n)
{
	json_t *a;
	size_t n, i;
	int r = get_array(o, k, NETMAP_MAX_ENDPOINTS, &a, &n);

	if (r)
		return r;
	for (i = 0; i < n; i++) {
		json_t *v = json_array_get(a, i);
		const char *s;

		if (!json_is_string(v) || json_string_length(v) >= ENDPOINT_STR_MAX)
			return -EBADMSG;
		s = json_string_value(v);
		/* A scope would make endpoint_parse look up a local interface name. */
		if (strchr(s, '%') || endpoint_parse(&out[i], s) || !endpoint_wire_valid(&out[i]))
			return -EBADMSG;
	}
	*ret_n = (unsigned)n;
	return 0;
}

static int get_tags(json_t *o, const char *k, char (*out)[NETMAP_TAG_MAX], unsigned *ret_n)
{
	json_t *a;
	size_t n, i;
	int r = get_array(o, k, NETMAP_MAX_TAGS, &a, &n);

	if (r)
		return r;
	for (i = 0; i < n; i++)
		if (text_from(json_array_get(a, i), out[i], NETMAP_TAG_MAX))
			return -EBADMSG;
	*ret_n = (unsigned)n;
	return 0;
}

/* Required (-ENOENT is an error) and optional (-ENOENT is fine) wrappers. */
static int req(int r)
{
	return r ? -EBADMSG : 0;
}

static int opt(int r)
{
	return r == -ENOENT ? 0 : r;
}

/* An optional key and whether it was there: 0 or -EBADMSG. */
static int opt_key(json_t *o, const char *k, bool *ret_has, uint8_t out[NETMAP_KEY_LEN])
{
	int r = get_key(o, k, out);

	*ret_has = r == 0;
	return opt(r);
}

static int id_from(json_t *v, uint64_t *ret)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -EBADMSG;
	*ret = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_region_id(json_t *o, const char *k, uint32_t *ret)
{
	uint64_t v;
	int r = get_uint(o, k, &v);

	if (r)
		return r;
	if (v > NETMAP_RELAY_REGION_ID_MAX)
		return -EBADMSG;
	*ret = (uint32_t)v;
	return 0;
}

/* A relay map member: present and valid (*ret filled), -ENOENT, or -EBADMSG. */
static int get_relay_map(json_t *o, const char *k, struct netmap_relay_map *ret)
{
	json_t *v = json_object_get(o, k);

	if (!v)
		return -ENOENT;
	return relaymap_from_json(v, false, ret, NULL, 0) ? -EBADMSG : 0;
}

/* "flow_log": {"enabled": bool, "interval_ms": n}: present and valid, -ENOENT, or -EBADMSG. */
static int get_flow_log(json_t *o, const char *k, struct netmap_flow_log *ret)
{
	json_t *v = json_object_get(o, k);
	uint64_t ms;

	if (!v)
		return -ENOENT;
	if (!json_is_object(v) || req(get_bool(v, "enabled", &ret->enabled)) ||
	    req(get_uint(v, "interval_ms", &ms)) || ms < NETMAP_FLOW_LOG_INTERVAL_MIN_MS ||
	    ms > NETMAP_FLOW_LOG_INTERVAL_MAX_MS)
		return -EBADMSG;
	ret->interval_ms = (uint32_t)ms;
	ret->set = true;
	return 0;
}

/* "ports": [first, last] */
static int ports_from(json_t *v, struct netmap_filter_dst *d)
{
	json_t *f = json_array_get(v, 0), *l = json_array_get(v, 1);

	if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(f) ||
	    !json_is_integer(l) || json_integer_value(f) < 0 || json_integer_value(l) > 65535 ||
	    json_integer_value(f) > json_integer_value(l))
		return -EBADMSG;
	d->port_first = (uint16_t)json_integer_value(f);
	d->port_last = (uint16_t)json_integer_value(l);
	return 0;
}

/* Counts first, so the three arrays are allocated once at their final size. */
static int filter_count(json_t *rules, unsigned *ret_srcs, unsigned *ret_dsts)
{
	size_t i, srcs = 0, dsts = 0;

	for (i = 0; i < json_array_size(rules); i++) {
		json_t *r = json_array_get(rules, i);
		json_t *s = json_object_get(r, "src"), *d = json_object_get(r, "dst");

		if (!json_is_object(r) || !json_is_array(s) || !json_is_array(d) ||
		    !json_array_size(s) || !json_array_size(d))
			return -EBADMSG;
		srcs += json_array_size(s);
		dsts += json_array_size(d);
		if (srcs > NETMAP_FILTER_PREFIXES_MAX || dsts > NETMAP_FILTER_PREFIXES_MAX)
			return -EBADMSG;
	}
	*ret_srcs = (unsigned)srcs;
	*ret_dsts = (unsigned)dsts;
	return 0;
}

static int filter_rule_from(json_t *o, struct netmap_filter *f, struct netmap_filter_rule *r)
{
	json_t *a, *v;
	size_t n, i;
	int ret;

	r->src_off = f->n_srcs;
	ret = get_prefixes(o, "src", f->srcs + f->n_srcs, NETMAP_FILTER_PREFIXES_MAX - f->n_srcs,
			   &r->n_src);
	if (ret)
		return -EBADMSG;
	f->n_srcs += r->n_src;

	r->dst_off = f->n_dsts;
	if (get_array(o, "dst", NETMAP_FILTER_PREFIXES_MAX - f->n_dsts, &a, &n))
		return -EBADMSG;
	for (i = 0; i < n; i++) {
		struct netmap_filter_dst *d = &f->dsts[f->n_dsts + i];

		v = json_array_get(a, i);
		if (!json_is_object(v) || prefix_from(json_object_get(v, "ip"), &d->prefix) ||
		    ports_from(json_object_get(v, "ports"), d))
			return -EBADMSG;
	}
	r->n_dst = (uint32_t)n;
	f->n_dsts += r->n_dst;

	ret = get_array(o, "proto", NETMAP_FILTER_PROTOS_MAX, &a, &n);
	if (ret == -ENOENT)
		n = 0;
	else if (ret)
		return -EBADMSG;
	for (i = 0; i < n; i++) {
		v = json_array_get(a, i);
		if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 255)
			return -EBADMSG;
		r->protos[i] = (uint8_t)json_integer_value(v);
	}
	r->n_protos = (unsigned)n;
	return 0;
}

/* A packet filter member: present and valid (*ret malloc'd), -ENOENT, -EBADMSG or -ENOMEM. */
static int get_filter(json_t *o, const char *k, struct netmap_filter **ret)
{
	struct netmap_filter *f = NULL;
	json_t *v = json_object_get(o, k), *rules;
	unsigned n_srcs, n_dsts;
	size_t n, i;
	int r;

	if (!v)
		return -ENOENT;
	r = -EBADMSG;
	if (!json_is_object(v) || get_array(v, "rules", NETMAP_FILTER_RULES_MAX, &rules, &n) ||
	    filter_count(rules, &n_srcs, &n_dsts))
		goto out;
	r = -ENOMEM;
	f = calloc(1, sizeof(*f));
	if (!f)
		goto out;
	f->rules = calloc(n + 1, sizeof(*f->rules));
	f->srcs = calloc((size_t)n_srcs + 1, sizeof(*f->srcs));
	f->dsts = calloc((size_t)n_dsts + 1, sizeof(*f->dsts));
	if (!f->rules || !f->srcs || !f->dsts)
		goto out;
	r = -EBADMSG;
	for (i = 0; i < n; i++) {
		if (filter_rule_from(json_array_get(rules, i), f, &f->rules[i]))
			goto out;
		f->n_rules++;
	}
	if (!netmap_filter_valid(f))
		goto out;
	*ret = f;
	f = NULL;
	r = 0;
out:
	netmap_filter_free(f);
	return r;
}

/* One [PROTO, FIRST, LAST] of "may_open". */
static int reach_port_from(json_t *v, struct netmap_reach_port *q)
{
	json_t *p = json_array_get(v, 0), *f = json_array_get(v, 1), *l = json_array_get(v, 2);

	if (!json_is_array(v) || json_array_size(v) != 3 || !json_is_integer(p) ||
	    !json_is_integer(f) || !json_is_integer(l) || json_integer_value(p) < 1 ||
	    json_integer_value(p) > 255 || json_integer_value(f) < 0 ||
	    json_integer_value(l) > 65535 || json_integer_value(f) > json_integer_value(l))
		return -EBADMSG;
	*q = (struct netmap_reach_port){.proto = (uint8_t)json_integer_value(p),
					.first = (uint16_t)json_integer_value(f),
					.last = (uint16_t)json_integer_value(l)};
	return 0;
}

/* A set's "peers": "*", every peer of the netmap; any other string is refused with the set. */
static bool reach_all(json_t *s)
{
	json_t *p = json_object_get(s, "peers");

	return json_is_string(p) && json_string_length(p) == 1 && json_string_value(p)[0] == '*';
}

/*
 * What the node may open on its peers (netmap.h struct netmap_reach): present and valid (*ret
 * malloc'd), -ENOENT, -EBADMSG or -ENOMEM. Counted first, so the arrays are allocated once at
 * their final size and never beyond the caps.
 */
static int get_reach(json_t *o, const char *k, struct netmap_reach **ret)
{
	struct netmap_reach *r = NULL;
	json_t *sets, *peers, *ports;
	size_t n, np, nq, n_peers = 0, n_ports = 0;
	int e = get_array(o, k, NETMAP_REACH_SETS_MAX, &sets, &n);

	if (e)
		return e;
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(sets, i);

		np = 0;
		if (!json_is_object(s) ||
		    (!reach_all(s) &&
		     (get_array(s, "peers", NETMAP_MAX_PEERS, &peers, &np) || !np)) ||
		    get_array(s, "ports", NETMAP_REACH_PORTS_MAX, &ports, &nq) || !nq)
			return -EBADMSG;
		n_peers += np;
		n_ports += nq;
		if (n_peers > NETMAP_MAX_PEERS || n_ports > NETMAP_REACH_PORTS_MAX)
			return -EBADMSG;
	}
	e = -ENOMEM;
	r = calloc(1, sizeof(*r));
	if (!r)
		goto out;
	r->sets = calloc(n + 1, sizeof(*r->sets));
	r->peers = calloc(n_peers + 1, sizeof(*r->peers));
	r->ports = calloc(n_ports + 1, sizeof(*r->ports));
	if (!r->sets || !r->peers || !r->ports)
		goto out;
	e = -EBADMSG;
	for (size_t i = 0; i < n; i++) {
		json_t *s = json_array_get(sets, i);
		struct netmap_reach_set *t = &r->sets[r->n_sets++];

		peers = json_object_get(s, "peers");
		ports = json_object_get(s, "ports");
		t->all = reach_all(s);
		t->peer_off = r->n_peers;
		t->n_peers = (uint32_t)json_array_size(peers); /* 0 for a string */
		t->port_off = r->n_ports;
		t->n_ports = (uint32_t)json_array_size(ports);
		for (size_t q = 0; q < t->n_peers; q++)
			if (id_from(json_array_get(peers, q), &r->peers[r->n_peers++]))
				goto out;
		for (size_t q = 0; q < t->n_ports; q++)
			if (reach_port_from(json_array_get(ports, q), &r->ports[r->n_ports++]))
				goto out;
	}
	if (!netmap_reach_valid(r))
		goto out;
	*ret = r;
	r = NULL;
	e = 0;
out:
	netmap_reach_free(r);
	return e;
}

/*
 * A change of what the node may open (netmap.h struct netmap_reach_patch): {"removed": [ID,
 * ...], "sets": [as may_open, no "*"]}, both required. Present and valid (*ret malloc'd),
 * -ENOENT, -EBADMSG or -ENOMEM; within the caps of a list, counted before anything is
 * allocated.
 */
static int get_reach_patch(json_t *o, const char *k, struct netmap_reach_patch **ret)
{
	json_t *v = json_object_get(o, k), *a;
	struct netmap_reach_patch *p = NULL;
	size_t n;
	int e;

	if (!v)
		return -ENOENT;
	if (!json_is_object(v) || get_array(v, "removed", NETMAP_MAX_PEERS, &a, &n) ||
	    !json_object_get(v, "sets"))
		return -EBADMSG;
	e = -ENOMEM;
	p = calloc(1, sizeof(*p));
	if (!p || !(p->removed = malloc((n + 1) * sizeof(*p->removed))))
		goto out;
	e = -EBADMSG;
	for (size_t i = 0; i < n; i++)
		if (id_from(json_array_get(a, i), &p->removed[p->n_removed++]))
			goto out;
	e = get_reach(v, "sets", &p->add);
	if (e)
		goto out;
	e = -EBADMSG;
	if (!netmap_reach_patch_valid(p))
		goto out;
	*ret = p;
	p = NULL;
	e = 0;
out:
	netmap_reach_patch_free(p);
	return e;
}

static int decode_node(json_t *o, struct netmap_node *ret)
{
	struct netmap_node *n = ret;

	if (!json_is_object(o))
		return -EBADMSG;
	memset(n, 0, sizeof(*n));
	if (req(get_uint(o, "id", &n->id)) || req(get_text(o, "name", n->name, sizeof(n->name))) ||
	    req(get_key(o, "node_key", n->node_key)) ||
	    opt(get_key(o, "machine_key", n->machine_key)) ||
	    req(get_prefixes(o, "addresses", n->addresses, NETMAP_MAX_ADDRESSES,
			     &n->n_addresses)) ||
	    req(get_prefixes(o, "allowed_ips", n->allowed_ips, NETMAP_MAX_ALLOWED_IPS,
			     &n->n_allowed_ips)) ||
	    opt(get_endpoints(o, "endpoints", n->endpoints, &n->n_endpoints)) ||
	    opt(get_bool(o, "online", &n->online)) ||
	    opt(get_sint(o, "last_seen", &n->last_seen)) ||
	    opt(get_sint(o, "key_expiry", &n->key_expiry)) ||
	    opt(get_text(o, "os", n->os, sizeof(n->os))) ||
	    opt(get_text(o, "user", n->user, sizeof(n->user))) ||
	    opt(get_tags(o, "tags", n->tags, &n->n_tags)) ||
	    opt(get_region_id(o, "home_region", &n->home_region)) ||
	    opt_key(o, "disco_key", &n->has_disco_key, n->disco_key) ||
	    opt(get_bool(o, "mapping_varies", &n->mapping_varies)))
		return -EBADMSG;
	return 0;
}

static int slot_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Duplicate ids in one list would make "the peer with id N" ambiguous. */
static int ids_unique(const uint64_t *ids, size_t n)
{
	uint64_t *s;
	int ret = 0;

	if (n < 2)
		return 0;
	s = malloc(n * sizeof(*s));
	if (!s)
		return -ENOMEM;
	memcpy(s, ids, n * sizeof(*s));
	qsort(s, n, sizeof(*s), slot_cmp);
	for (size_t i = 1; i < n; i++)
		if (s[i] == s[i - 1])
			ret = -EBADMSG;
	free(s);
	return ret;
}

/*
 * An array of node records; on success *ret is malloc'd (NULL when empty).
 * The count is bounded by NETMAP_MAX_PEERS and, through the pre-scan, by the
 * input size.
 */
static int get_nodes(json_t *o, const char *k, struct netmap_node **ret, unsigned *ret_n)
{
	struct netmap_node *nodes = NULL;
	uint64_t *ids = NULL;
	json_t *a;
	size_t n, i;
	int r = get_array(o, k, NETMAP_MAX_PEERS, &a, &n);

	if (r)
		return r;
	if (!n) {
		*ret = NULL;
		*ret_n = 0;
		return 0;
	}
	r = -ENOMEM;
	nodes = malloc(n * sizeof(*nodes));
	ids = malloc(n * sizeof(*ids));
	if (!nodes || !ids)
		goto out;
	for (i = 0; i < n; i++) {
		r = decode_node(json_array_get(a, i), &nodes[i]);
		if (r)
			goto out;
		ids[i] = nodes[i].id;
	}
	r = ids_unique(ids, n);
	if (r)
		goto out;
	*ret = nodes;
	*ret_n = (unsigned)n;
	nodes = NULL;
out:
	free(nodes);
	free(ids);
	return r;
}

static int decode_register(json_t *o, struct ctrl_register *r)
{
	int e;

	if (req(get_key(o, "node_key", r->node_key)) ||
	    req(get_text(o, "hostname", r->hostname, sizeof(r->hostname))) ||
	    req(get_text(o, "os", r->os, sizeof(r->os))) ||
	    opt(get_text(o, "auth_key", r->auth_key, sizeof(r->auth_key))) ||
	    opt(get_tags(o, "tags", r->tags, &r->n_tags)) ||
	    opt(get_text(o, "machine_cert", r->machine_cert, sizeof(r->machine_cert))) ||
	    opt(get_text(o, "machine_cert_proof", r->machine_cert_proof,
			 sizeof(r->machine_cert_proof))))
		return -EBADMSG;
	e = get_key(o, "old_node_key", r->old_node_key);
	if (opt(e))
		return -EBADMSG;
	r->has_old_node_key = !e;
	e = get_key(o, "node_key_proof", r->node_key_proof);
	if (opt(e))
		return -EBADMSG;
	r->has_node_key_proof = !e;
	return opt_key(o, "audit_key", &r->has_audit_key, r->audit_key) ? -EBADMSG : 0;
}

/* A base64 member of at most max bytes, malloc'd into *ret; an empty one is refused. */
static int get_blob(json_t *o, const char *k, size_t max, uint8_t **ret, size_t *ret_len)
{
	json_t *v = json_object_get(o, k);
	size_t n;
	uint8_t *p;
	int r;

	if (!json_is_string(v))
		return -EBADMSG;
	n = json_string_length(v);
	if (!n || n > BASE64_ENCODED_LEN(max))
		return -EBADMSG;
	p = malloc(BASE64_DECODED_MAX(n));
	if (!p)
		return -ENOMEM;
	r = base64_decode(p, BASE64_DECODED_MAX(n), json_string_value(v), n);
	if (r <= 0 || (size_t)r > max) {
		free(p);
		return -EBADMSG;
	}
	*ret = p;
	*ret_len = (size_t)r;
	return 0;
}

static int decode_register_response(json_t *o, struct ctrl_register_response *r)
{
	json_t *v = json_object_get(o, "status"), *node;
	unsigned i;

	if (!json_is_string(v))
		return -EBADMSG;
	for (i = 0; i < ARRAY_SIZE(status_names); i++)
		if (!strcmp(json_string_value(v), status_names[i]))
			break;
	if (i == ARRAY_SIZE(status_names) || strlen(json_string_value(v)) != json_string_length(v))
		return -EBADMSG;
	r->status = (enum ctrl_register_status)i;
	if (opt(get_text(o, "auth_url", r->auth_url, sizeof(r->auth_url))) ||
	    opt(get_text(o, "error", r->error, sizeof(r->error))) ||
	    opt(get_text(o, "machine_cert", r->machine_cert, sizeof(r->machine_cert))))
		return -EBADMSG;
	node = json_object_get(o, "node");
	if (node) {
		if (decode_node(node, &r->node))
			return -EBADMSG;
		r->has_node = true;
	}
	return 0;
}

/* "version" and "digest": both or neither; version 0 is not a stamp. */
static int get_version(json_t *o, struct netmap_version *ret)
{
	bool has_digest = false;
	int r = get_uint(o, "version", &ret->feed);

	if (r == -EBADMSG || opt_key(o, "digest", &has_digest, ret->digest))
		return -EBADMSG;
	if (r == -ENOENT)
		return has_digest ? -EBADMSG : 0;
	return has_digest && ret->feed ? 0 : -EBADMSG;
}

static int get_have(json_t *o, struct ctrl_map_request *r)
{
	json_t *h = json_object_get(o, "have");

	if (!h)
		return 0;
	if (!json_is_object(h) || req(get_uint(h, "seq", &r->have.seq)) ||
	    get_version(h, &r->have.version) || !r->have.version.feed)
		return -EBADMSG;
	r->has_have = true;
	return 0;
}

/* Codecs this decoder does not know (or a later form of the field) are ignored: plain JSON then. */
static void get_compress(json_t *o, struct ctrl_map_request *r)
{
	json_t *v = json_object_get(o, "compress");

	r->zstd = json_is_string(v) && strcmp(json_string_value(v), MAPZ_NAME) == 0;
}

static int decode_map_request(json_t *o, struct ctrl_map_request *r)
{
	get_compress(o, r);
	/* Like "compress": a value other than true (a later form, say) offers nothing. */
	r->reach_patch = json_is_true(json_object_get(o, "may_open_patch"));
	if (req(get_key(o, "node_key", r->node_key)) ||
	    req(get_endpoints(o, "endpoints", r->endpoints, &r->n_endpoints)) ||
	    opt(get_text(o, "hostname", r->hostname, sizeof(r->hostname))) ||
	    req(get_bool(o, "stream", &r->stream)) ||
	    opt(get_region_id(o, "home_region", &r->home_region)) ||
	    opt_key(o, "disco_key", &r->has_disco_key, r->disco_key) ||
	    opt(get_bool(o, "mapping_varies", &r->mapping_varies)) || get_have(o, r))
		return -EBADMSG;
	return 0;
}

static int decode_netmap(json_t *o, struct netmap **ret)
{
	struct netmap *nm = calloc(1, sizeof(*nm));
	json_t *self;
	int r = -ENOMEM;

	if (!nm)
		goto out;
	r = -EBADMSG;
	self = json_object_get(o, "self");
	if (req(get_uint(o, "seq", &nm->seq)) || get_version(o, &nm->version) ||
	    req(get_text(o, "tailnet", nm->tailnet, sizeof(nm->tailnet))) || !self ||
	    decode_node(self, &nm->self))
		goto out;
	r = get_nodes(o, "peers", &nm->peers, &nm->n_peers);
	if (r == -ENOENT)
		r = -EBADMSG;
	if (r)
		goto out;
	r = opt(get_relay_map(o, "relay_map", &nm->relay_map));
	if (r)
		goto out;
	r = opt(get_filter(o, "packet_filter", &nm->filter));
	if (r)
		goto out;
	r = opt(get_flow_log(o, "flow_log", &nm->flow_log));
	if (r)
		goto out;
	r = opt(get_reach(o, "may_open", &nm->reach));
	if (r)
		goto out;
	*ret = nm;
	nm = NULL;
out:
	netmap_free(nm);
	return r;
}

static int decode_delta(json_t *o, struct netmap_delta **ret)
{
	struct netmap_delta *d = calloc(1, sizeof(*d));
	json_t *a, *self;
	size_t n, i;
	int r = -ENOMEM;

	if (!d)
		goto out;
	r = -EBADMSG;
	if (req(get_uint(o, "seq", &d->seq)) || get_version(o, &d->version))
		goto out;
	r = opt(get_nodes(o, "peers_added", &d->added, &d->n_added));
	if (r)
		goto out;
	r = opt(get_nodes(o, "peers_changed", &d->changed, &d->n_changed));
	if (r)
		goto out;

	r = get_array(o, "peers_removed", NETMAP_MAX_PEERS, &a, &n);
	if (!r && n) {
		r = -ENOMEM;
		d->removed = malloc(n * sizeof(*d->removed));
		if (!d->removed)
			goto out;
		r = -EBADMSG;
		for (i = 0; i < n; i++)
			if (id_from(json_array_get(a, i), &d->removed[i]))
				goto out;
		d->n_removed = (unsigned)n;
	} else if (opt(r)) {
		goto out;
	}

	r = get_array(o, "endpoints", NETMAP_MAX_PEERS, &a, &n);
	if (!r && n) {
		r = -ENOMEM;
		d->endpoints = calloc(n, sizeof(*d->endpoints));
		if (!d->endpoints)
			goto out;
		r = -EBADMSG;
		for (i = 0; i < n; i++) {
			json_t *p = json_array_get(a, i);

			if (!json_is_object(p) || req(get_uint(p, "id", &d->endpoints[i].id)) ||
			    req(get_endpoints(p, "endpoints", d->endpoints[i].endpoints,
					      &d->endpoints[i].n_endpoints)))
				goto out;
		}
		d->n_endpoints = (unsigned)n;
	} else if (opt(r)) {
		goto out;
	}

	r = get_array(o, "online", NETMAP_MAX_PEERS, &a, &n);
	if (!r && n) {
		r = -ENOMEM;
		d->online = calloc(n, sizeof(*d->online));
		if (!d->online)
			goto out;
		r = -EBADMSG;
		for (i = 0; i < n; i++) {
			json_t *p = json_array_get(a, i);

			if (!json_is_object(p) || req(get_uint(p, "id", &d->online[i].id)) ||
			    req(get_bool(p, "online", &d->online[i].online)) ||
			    opt(get_sint(p, "last_seen", &d->online[i].last_seen)))
				goto out;
		}
		d->n_online = (unsigned)n;
	} else if (opt(r)) {
		goto out;
	}

	r = -EBADMSG;
	self = json_object_get(o, "self");
	if (self) {
		if (decode_node(self, &d->self))
			goto out;
		d->has_self = true;
	}
	if (json_object_get(o, "relay_map")) {
		r = -ENOMEM;
		d->relay_map = malloc(sizeof(*d->relay_map));
		if (!d->relay_map)
			goto out;
		r = -EBADMSG;
		if (get_relay_map(o, "relay_map", d->relay_map))
			goto out;
	}
	r = opt(get_filter(o, "packet_filter", &d->filter));
	if (r)
		goto out;
	r = opt(get_flow_log(o, "flow_log", &d->flow_log));
	if (r)
		goto out;
	if (json_object_get(o, "machine_cert")) {
		/* Capped before it is copied: text_from refuses one of NETMAP_MCERT_MAX or more. */
		r = -ENOMEM;
		d->machine_cert = malloc(NETMAP_MCERT_MAX);
		if (!d->machine_cert)
			goto out;
		r = -EBADMSG;
		if (get_text(o, "machine_cert", d->machine_cert, NETMAP_MCERT_MAX))
			goto out;
	}
	r = opt(get_reach(o, "may_open", &d->reach));
	if (r)
		goto out;
	r = opt(get_reach_patch(o, "may_open_patch", &d->reach_patch));
	if (r)
		goto out;
	r = -EBADMSG;
	if (d->reach && d->reach_patch)
		goto out;
	*ret = d;
	d = NULL;
	r = 0;
out:
	netmap_delta_free(d);
	return r;
}

int ctrl_msg_decode(const char *json, size_t len, struct ctrl_msg *ret)
{
	struct ctrl_msg m;
	json_error_t jerr;
	json_t *root = NULL, *t;
	const char *type;
	unsigned i;
	int r;

	if (len > CTRL_MSG_MAX)
		return -EMSGSIZE;
	r = prescan(json, len);
	if (r)
		return r;
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	r = -EBADMSG;
	if (!root || !json_is_object(root))
		goto out;
	t = json_object_get(root, "type");
	if (!json_is_string(t))
		goto out;
	type = json_string_value(t);
	for (i = 1; i < ARRAY_SIZE(type_names); i++)
		if (!strcmp(type, type_names[i]))
			break;
	if (i == ARRAY_SIZE(type_names) || strlen(type) != json_string_length(t))
		goto out;

	memset(&m, 0, sizeof(m));
	m.type = (enum ctrl_msg_type)i;
	switch (m.type) {
	case CTRL_MSG_REGISTER:
		r = decode_register(root, &m.reg);
		break;
	case CTRL_MSG_REGISTER_RESPONSE:
		r = decode_register_response(root, &m.reg_resp);
		break;
	case CTRL_MSG_MAP_REQUEST:
		r = decode_map_request(root, &m.map_req);
		break;
	case CTRL_MSG_ENDPOINTS:
		r = req(get_endpoints(root, "endpoints", m.endpoints.endpoints,
				      &m.endpoints.n_endpoints));
		if (!r)
			r = opt(get_region_id(root, "home_region", &m.endpoints.home_region)) ||
					    opt_key(root, "disco_key", &m.endpoints.has_disco_key,
						    m.endpoints.disco_key) ||
					    opt(get_bool(root, "mapping_varies",
							 &m.endpoints.mapping_varies))
				? -EBADMSG
				: 0;
		break;
	case CTRL_MSG_NETMAP:
		r = decode_netmap(root, &m.netmap);
		break;
	case CTRL_MSG_DELTA:
		r = decode_delta(root, &m.delta);
		break;
	case CTRL_MSG_ERROR:
		r = req(get_text(root, "message", m.error, sizeof(m.error)));
		break;
	case CTRL_MSG_FLOWS:
		r = get_blob(root, "batch", CTRL_MSG_MAX / 2, &m.flows.batch, &m.flows.len);
		break;
	case CTRL_MSG_FLOWS_ACK:
		r = req(get_uint(root, "seq", &m.flows_ack.seq)) ||
			    req(get_text(root, "result", m.flows_ack.result,
					 sizeof(m.flows_ack.result)))
			? -EBADMSG
			: 0;
		break;
	case CTRL_MSG_LOGOUT:
	case CTRL_MSG_LOGOUT_RESPONSE:
	case CTRL_MSG_KEEPALIVE:
	case CTRL_MSG_UNKNOWN:
		r = 0;
		break;
	}
	if (r)
		goto out;
	*ret = m;
out:
	/* An auth key is a secret: no copy of it stays behind in freed memory. */
	if (root) {
		json_t *ak = json_object_get(root, "auth_key");

		if (json_is_string(ak))
			explicit_bzero((char *)json_string_value(ak), json_string_length(ak));
	}
	explicit_bzero(&m, sizeof(m));
	json_decref(root);
	return r;
}
