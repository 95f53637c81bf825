// SPDX-License-Identifier: MIT
/*
 * trellis-control admin commands: argv in, text or JSON out. The operations
 * themselves are admin_op.c's (shared with the admin API to come); this file
 * parses, names the actor ("cli:USER") and prints. Every mistake is one line
 * on stderr and exit status 1; `authkey create` prints only the key on stdout
 * so scripts can capture it.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/time.h"
#include "base/util.h"
#include "control/admin.h"
#include "control/admin_op.h"
#include "control/authkey.h"
#include "control/store.h"
#include "crypto/crypto.h"
#include "proto/relaymap.h"

static const char *cmd_name = "";

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "trellis-control: %s%s", cmd_name, cmd_name[0] ? ": " : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return 1;
}

/* Options of one subcommand: flags and options with a value. */
struct opt {
	const char *name;
	bool has_arg;
	const char **val;
	bool *flag;
};

/* Splits argv into options and up to max_pos positional arguments. 0 or exit status. */
static int opts_parse(int argc, char **argv, const struct opt *opts, const char **pos,
		      int max_pos, int *ret_npos)
{
	int i, n = 0;

	for (i = 0; i < argc; i++) {
		const struct opt *o;
		const char *a = argv[i], *eq;
		size_t len;

		if (a[0] != '-' || a[1] != '-') {
			if (n >= max_pos)
				return fail("unexpected argument \"%s\"", a);
			pos[n++] = a;
			continue;
		}
		eq = strchr(a, '=');
		len = eq ? (size_t)(eq - a) : strlen(a);
		for (o = opts; o && o->name; o++)
			if (strlen(o->name) == len && strncmp(o->name, a, len) == 0)
				break;
		if (!o || !o->name)
			return fail("unknown option %s", a);
		if (!o->has_arg) {
			if (eq)
				return fail("option %s takes no value", o->name);
			*o->flag = true;
		} else if (eq) {
			*o->val = eq + 1;
		} else {
			if (i + 1 >= argc)
				return fail("option %s needs a value", o->name);
			*o->val = argv[++i];
		}
	}
	*ret_npos = n;
	return 0;
}

int admin_duration_parse(const char *s, int64_t *ret_sec)
{
	unsigned long long v;
	int64_t mult;
	char *end;

	if (strcmp(s, "0") == 0 || strcmp(s, "never") == 0) {
		*ret_sec = 0;
		return 0;
	}
	if (!isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || end[0] == '\0' || end[1] != '\0')
		return -EINVAL;
	switch (end[0]) {
	case 's':
		mult = 1;
		break;
	case 'm':
		mult = 60;
		break;
	case 'h':
		mult = 3600;
		break;
	case 'd':
		mult = 86400;
		break;
	default:
		return -EINVAL;
	}
	/* A hundred years is plenty and keeps now + duration far from overflow. */
	if (v == 0 || v > (unsigned long long)(100LL * 365 * 86400) / (unsigned long long)mult)
		return -EINVAL;
	*ret_sec = (int64_t)v * mult;
	return 0;
}

static int tags_parse(const char *s, unsigned *ret_n, char tags[][NETMAP_TAG_MAX])
{
	unsigned n = 0;

	while (*s) {
		const char *c = strchr(s, ',');
		size_t l = c ? (size_t)(c - s) : strlen(s);
		char t[NETMAP_TAG_MAX];

		if (l >= sizeof(t))
			return fail("tag \"%.*s\" is too long", (int)l, s);
		memcpy(t, s, l);
		t[l] = '\0';
		if (!admin_op_tag_valid(t))
			return fail("bad tag \"%s\": tags look like tag:name", t);
		if (n >= NETMAP_MAX_TAGS)
			return fail("at most %d tags", NETMAP_MAX_TAGS);
		strcpy(tags[n++], t);
		s = c ? c + 1 : s + l;
	}
	*ret_n = n;
	return 0;
}

int admin_store_open(const char *state_dir, struct store **ret)
{
	char path[4096];
	int r;

	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		fail("cannot create state directory %s: %s", state_dir, strerror(-r));
		return r;
	}
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", state_dir, STORE_DB_NAME) >=
	    sizeof(path)) {
		fail("state directory path too long");
		return -ENAMETOOLONG;
	}
	r = store_open(path, ret);
	if (r < 0)
		fail("cannot open %s: %s", path,
		     r == -EPROTO ? "written by a newer trellis-control" : strerror(-r));
	return r;
}

static const char *tailnet_name(const struct store_snapshot *snap, uint64_t id)
{
	size_t i;

	for (i = 0; i < snap->n_tailnets; i++)
		if (snap->tailnets[i].id == id)
			return snap->tailnets[i].name;
	return "?";
}

static const char *user_name(const struct store_snapshot *snap, uint64_t id)
{
	size_t i;

	for (i = 0; id && i < snap->n_users; i++)
		if (snap->users[i].id == id)
			return snap->users[i].name;
	return "";
}

static void time_format(char *buf, size_t len, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (!t) {
		snprintf(buf, len, "-");
		return;
	}
	gmtime_r(&tt, &tm);
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void json_print(json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2));

	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(j);
}

static json_t *tags_json(unsigned n, const char tags[][NETMAP_TAG_MAX])
{
	json_t *a = json_array();
	unsigned i;

	for (i = 0; i < n; i++)
		json_array_append_new(a, json_string(tags[i]));
	return a;
}

static void tags_text(char *buf, size_t len, unsigned n, const char tags[][NETMAP_TAG_MAX])
{
	size_t off = 0;
	unsigned i;

	snprintf(buf, len, "-");
	for (i = 0; i < n; i++)
		off += snprintf(buf + off, len - off, "%s%s", i ? "," : "", tags[i]);
}

/* authkey create|list|revoke */

static int authkey_create(struct admin_op_ctx *c, int argc, char **argv)
{
	const char *tags = NULL, *expiry = NULL, *pos[1];
	struct admin_op_authkey_spec spec = { 0 };
	const struct opt opts[] = {
		{ "--tailnet", true, &spec.tailnet, NULL },
		{ "--reusable", false, NULL, &spec.reusable },
		{ "--ephemeral", false, NULL, &spec.ephemeral },
		{ "--preauthorized", false, NULL, &spec.preauthorized },
		{ "--tags", true, &tags, NULL },
		{ "--expiry", true, &expiry, NULL },
		{ NULL },
	};
	char key[AUTHKEY_STR_MAX];
	int npos, r;

	r = opts_parse(argc, argv, opts, pos, 0, &npos);
	if (r)
		return r;
	if (expiry && admin_duration_parse(expiry, &spec.expiry_sec) < 0)
		return fail("bad duration \"%s\" (examples: 90s, 30m, 12h, 7d)", expiry);
	if (tags && tags_parse(tags, &spec.n_tags, spec.tags))
		return 1;
	if (admin_op_authkey_create(c, &spec, NULL, key) < 0)
		return fail("%s", c->err);
	printf("%s\n", key);
	crypto_wipe(key, sizeof(key));
	return 0;
}

static const char *authkey_status(const struct control_authkey *k, int64_t now)
{
	if (k->revoked)
		return "revoked";
	if (k->expires && k->expires <= now)
		return "expired";
	if (!k->reusable && k->uses)
		return "used";
	return "valid";
}

static int authkey_list(struct admin_op_ctx *c, int argc, char **argv)
{
	const char *tailnet = NULL, *pos[1];
	bool as_json = false;
	const struct opt opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ "--json", false, NULL, &as_json },
		{ NULL },
	};
	struct store_snapshot snap;
	struct control_tailnet t = { 0 };
	int64_t now = time_wall_s();
	json_t *arr = NULL;
	size_t i;
	int npos, r;

	r = opts_parse(argc, argv, opts, pos, 0, &npos);
	if (r)
		return r;
	if (admin_op_snapshot(c, tailnet, &snap, &t) < 0)
		return fail("%s", c->err);
	if (as_json)
		arr = json_array();
	else
		printf("%-26s %-16s %-8s %-9s %-7s %-5s %-20s %-8s %s\n", "ID", "TAILNET",
		       "REUSABLE", "EPHEMERAL", "PREAUTH", "USES", "EXPIRES", "STATUS", "TAGS");
	for (i = 0; i < snap.n_authkeys; i++) {
		const struct control_authkey *k = &snap.authkeys[i];
		char id[64], exp[32], tags[NETMAP_MAX_TAGS * NETMAP_TAG_MAX];

		if (tailnet && k->tailnet_id != t.id)
			continue;
		snprintf(id, sizeof(id), "%s%s", AUTHKEY_TEXT_PREFIX, k->prefix);
		if (as_json) {
			json_array_append_new(
				arr, json_pack("{s:s, s:s, s:b, s:b, s:b, s:o, s:I, s:I, s:I, s:b, s:s}",
					       "id", id, "tailnet", tailnet_name(&snap, k->tailnet_id),
					       "reusable", k->reusable, "ephemeral", k->ephemeral,
					       "preauthorized", k->preauthorized, "tags",
					       tags_json(k->n_tags, k->tags), "uses",
					       (json_int_t)k->uses, "expires", (json_int_t)k->expires,
					       "created", (json_int_t)k->created, "revoked",
					       k->revoked, "status", authkey_status(k, now)));
			continue;
		}
		time_format(exp, sizeof(exp), k->expires);
		tags_text(tags, sizeof(tags), k->n_tags, k->tags);
		printf("%-26s %-16s %-8s %-9s %-7s %-5" PRIu64 " %-20s %-8s %s\n", id,
		       tailnet_name(&snap, k->tailnet_id), k->reusable ? "yes" : "no",
		       k->ephemeral ? "yes" : "no", k->preauthorized ? "yes" : "no", k->uses, exp,
		       authkey_status(k, now), tags);
	}
	if (as_json)
		json_print(arr);
	store_snapshot_free(&snap);
	return 0;
}

static int authkey_revoke(struct admin_op_ctx *c, int argc, char **argv)
{
	const char *pos[1];
	int npos, r;

	r = opts_parse(argc, argv, NULL, pos, 1, &npos);
	if (r)
		return r;
	if (npos != 1)
		return fail("usage: authkey revoke ID");
	if (admin_op_authkey_revoke(c, pos[0]) < 0)
		return fail("%s", c->err);
	return 0;
}

/* tailnets list|create */

static int tailnets_cmd(struct admin_op_ctx *c, const char *sub, int argc, char **argv)
{
	const char *key_expiry = NULL, *eph = NULL, *pos[1];
	bool as_json = false;
	const struct opt opts[] = {
		{ "--key-expiry", true, &key_expiry, NULL },
		{ "--ephemeral-timeout", true, &eph, NULL },
		{ "--json", false, NULL, &as_json },
		{ NULL },
	};
	int64_t key_expiry_sec = ADMIN_KEY_EXPIRY_DEFAULT_SEC;
	int64_t eph_sec = ADMIN_EPHEMERAL_TIMEOUT_DEFAULT_SEC;
	struct store_snapshot snap;
	json_t *arr;
	size_t i;
	int npos, r;

	r = opts_parse(argc, argv, opts, pos, 1, &npos);
	if (r)
		return r;
	if (strcmp(sub, "create") == 0) {
		if (npos != 1)
			return fail("usage: tailnets create NAME [--key-expiry DUR] "
				    "[--ephemeral-timeout DUR]");
		if (key_expiry && admin_duration_parse(key_expiry, &key_expiry_sec) < 0)
			return fail("bad duration \"%s\" (examples: 90s, 30m, 12h, 7d)",
				    key_expiry);
		if (eph && (admin_duration_parse(eph, &eph_sec) < 0 || eph_sec == 0))
			return fail("bad duration \"%s\" (examples: 90s, 30m, 12h, 7d)", eph);
		if (admin_op_tailnet_create(c, pos[0], key_expiry_sec, eph_sec, NULL) < 0)
			return fail("%s", c->err);
		return 0;
	}
	if (strcmp(sub, "list") != 0)
		return fail("unknown command \"%s\" (list, create)", sub);
	if (npos || key_expiry || eph)
		return fail("usage: tailnets list [--json]");
	if (admin_op_snapshot(c, NULL, &snap, NULL) < 0)
		return fail("%s", c->err);
	arr = as_json ? json_array() : NULL;
	if (!as_json)
		printf("%-5s %-24s %-12s %-18s %s\n", "ID", "NAME", "KEY-EXPIRY", "EPHEMERAL-TIMEOUT",
		       "NODES");
	for (i = 0; i < snap.n_tailnets; i++) {
		const struct control_tailnet *tn = &snap.tailnets[i];
		size_t j, nodes = 0;

		for (j = 0; j < snap.n_nodes; j++)
			nodes += snap.nodes[j].tailnet_id == tn->id;
		if (as_json)
			json_array_append_new(arr, json_pack("{s:I, s:s, s:I, s:I, s:I, s:I}", "id",
							     (json_int_t)tn->id, "name", tn->name,
							     "key_expiry_sec",
							     (json_int_t)tn->key_expiry_sec,
							     "ephemeral_timeout_sec",
							     (json_int_t)tn->ephemeral_timeout_sec,
							     "created", (json_int_t)tn->created,
							     "nodes", (json_int_t)nodes));
		else
			printf("%-5" PRIu64 " %-24s %-12" PRId64 " %-18" PRId64 " %zu\n", tn->id,
			       tn->name, tn->key_expiry_sec, tn->ephemeral_timeout_sec, nodes);
	}
	if (as_json)
		json_print(arr);
	store_snapshot_free(&snap);
	return 0;
}

/* users list|create */

static int users_cmd(struct admin_op_ctx *c, const char *sub, int argc, char **argv)
{
	const char *tailnet = NULL, *pos[1];
	bool as_json = false;
	const struct opt opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ "--json", false, NULL, &as_json },
		{ NULL },
	};
	struct store_snapshot snap;
	struct control_tailnet t = { 0 };
	json_t *arr;
	size_t i;
	int npos, r;

	r = opts_parse(argc, argv, opts, pos, 1, &npos);
	if (r)
		return r;
	if (strcmp(sub, "create") == 0) {
		if (npos != 1)
			return fail("usage: users create NAME [--tailnet NAME]");
		if (admin_op_user_create(c, tailnet, pos[0], NULL) < 0)
			return fail("%s", c->err);
		return 0;
	}
	if (strcmp(sub, "list") != 0)
		return fail("unknown command \"%s\" (list, create)", sub);
	if (npos)
		return fail("usage: users list [--tailnet NAME] [--json]");
	if (admin_op_snapshot(c, tailnet, &snap, &t) < 0)
		return fail("%s", c->err);
	arr = as_json ? json_array() : NULL;
	if (!as_json)
		printf("%-5s %-32s %s\n", "ID", "NAME", "TAILNET");
	for (i = 0; i < snap.n_users; i++) {
		const struct control_user *us = &snap.users[i];

		if (tailnet && us->tailnet_id != t.id)
			continue;
		if (as_json)
			json_array_append_new(arr, json_pack("{s:I, s:s, s:s, s:I}", "id",
							     (json_int_t)us->id, "name", us->name,
							     "tailnet",
							     tailnet_name(&snap, us->tailnet_id),
							     "created", (json_int_t)us->created));
		else
			printf("%-5" PRIu64 " %-32s %s\n", us->id, us->name,
			       tailnet_name(&snap, us->tailnet_id));
	}
	if (as_json)
		json_print(arr);
	store_snapshot_free(&snap);
	return 0;
}

/* nodes ... */

static void ip_strings(const struct control_node *n, char v4[INET_ADDRSTRLEN],
		       char v6[INET6_ADDRSTRLEN])
{
	uint8_t a6[16];

	inet_ntop(AF_INET, n->ipv4, v4, INET_ADDRSTRLEN);
	netmap_ipv6_from_ipv4(a6, n->ipv4);
	inet_ntop(AF_INET6, a6, v6, INET6_ADDRSTRLEN);
}

static json_t *node_json(const struct store_snapshot *snap, const struct control_node *n,
			 int64_t now)
{
	char v4[INET_ADDRSTRLEN], v6[INET6_ADDRSTRLEN], ep[ENDPOINT_STR_MAX];
	char mk[BASE64_ENCODED_LEN(NETMAP_KEY_LEN) + 1], nk[sizeof(mk)];
	json_t *eps = json_array();
	unsigned i;

	ip_strings(n, v4, v6);
	base64_encode(mk, sizeof(mk), n->machine_key, NETMAP_KEY_LEN);
	base64_encode(nk, sizeof(nk), n->node_key, NETMAP_KEY_LEN);
	for (i = 0; i < n->n_endpoints; i++)
		json_array_append_new(eps, json_string(endpoint_format(&n->endpoints[i], ep,
									 sizeof(ep))));
	return json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:b, s:b,"
			 " s:b, s:I, s:I, s:I, s:o}",
			 "id", (json_int_t)n->id, "name", n->name, "hostname", n->hostname,
			 "tailnet", tailnet_name(snap, n->tailnet_id), "user",
			 user_name(snap, n->user_id), "os", n->os, "ipv4", v4, "ipv6", v6,
			 "node_key", nk, "machine_key", mk, "tags",
			 tags_json(n->n_tags, n->tags), "ephemeral", n->ephemeral, "approved",
			 n->approved, "expiry_disabled", n->expiry_disabled, "visible",
			 control_node_visible(n, now), "key_expiry", (json_int_t)n->key_expiry,
			 "created", (json_int_t)n->created, "last_seen", (json_int_t)n->last_seen,
			 "endpoints", eps);
}

static int nodes_list(struct admin_op_ctx *c, int argc, char **argv)
{
	const char *tailnet = NULL, *pos[1];
	bool as_json = false;
	const struct opt opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ "--json", false, NULL, &as_json },
		{ NULL },
	};
	struct store_snapshot snap;
	struct control_tailnet t = { 0 };
	int64_t now = time_wall_s();
	json_t *arr;
	size_t i;
	int npos, r;

	r = opts_parse(argc, argv, opts, pos, 0, &npos);
	if (r)
		return r;
	if (admin_op_snapshot(c, tailnet, &snap, &t) < 0)
		return fail("%s", c->err);
	arr = as_json ? json_array() : NULL;
	if (!as_json)
		printf("%-5s %-20s %-12s %-15s %-26s %-8s %-8s %-20s %s\n", "ID", "NAME", "TAILNET",
		       "IPV4", "IPV6", "OS", "STATE", "KEY-EXPIRY", "LAST-SEEN");
	for (i = 0; i < snap.n_nodes; i++) {
		const struct control_node *n = &snap.nodes[i];
		char v4[INET_ADDRSTRLEN], v6[INET6_ADDRSTRLEN], exp[32], seen[32];
		const char *state;

		if (tailnet && n->tailnet_id != t.id)
			continue;
		if (as_json) {
			json_array_append_new(arr, node_json(&snap, n, now));
			continue;
		}
		ip_strings(n, v4, v6);
		state = !n->approved		     ? "pending"
			: control_node_visible(n, now) ? "active"
						       : "expired";
		if (n->expiry_disabled)
			snprintf(exp, sizeof(exp), "disabled");
		else
			time_format(exp, sizeof(exp), n->key_expiry);
		time_format(seen, sizeof(seen), n->last_seen);
		printf("%-5" PRIu64 " %-20s %-12s %-15s %-26s %-8s %-8s %-20s %s\n", n->id, n->name,
		       tailnet_name(&snap, n->tailnet_id), v4, v6, n->os, state, exp, seen);
	}
	if (as_json)
		json_print(arr);
	store_snapshot_free(&snap);
	return 0;
}

static int nodes_cmd(struct admin_op_ctx *c, const char *sub, int argc, char **argv)
{
	const char *tailnet = NULL, *pos[2];
	const struct opt opts[] = {
		{ "--tailnet", true, &tailnet, NULL },
		{ NULL },
	};
	int npos, want, r;

	if (strcmp(sub, "list") == 0)
		return nodes_list(c, argc, argv);
	if (strcmp(sub, "approve") && strcmp(sub, "rename") && strcmp(sub, "expire") &&
	    strcmp(sub, "delete") && strcmp(sub, "set-expiry"))
		return fail("unknown command \"%s\" (list, approve, rename, expire, delete, "
			    "set-expiry)", sub);
	r = opts_parse(argc, argv, opts, pos, 2, &npos);
	if (r)
		return r;
	want = strcmp(sub, "rename") == 0 || strcmp(sub, "set-expiry") == 0 ? 2 : 1;
	if (npos != want) {
		if (strcmp(sub, "rename") == 0)
			return fail("usage: nodes rename ID NAME");
		if (strcmp(sub, "set-expiry") == 0)
			return fail("usage: nodes set-expiry ID on|off");
		return fail("usage: nodes %s ID", sub);
	}
	if (strcmp(sub, "set-expiry") == 0 && strcmp(pos[1], "on") && strcmp(pos[1], "off"))
		return fail("expected on or off, not \"%s\"", pos[1]);
	if (strcmp(sub, "approve") == 0)
		r = admin_op_node_approve(c, pos[0], tailnet);
	else if (strcmp(sub, "rename") == 0)
		r = admin_op_node_rename(c, pos[0], tailnet, pos[1]);
	else if (strcmp(sub, "expire") == 0)
		r = admin_op_node_expire(c, pos[0], tailnet);
	else if (strcmp(sub, "delete") == 0)
		r = admin_op_node_delete(c, pos[0], tailnet);
	else
		r = admin_op_node_set_expiry(c, pos[0], tailnet, strcmp(pos[1], "on") == 0);
	if (r < 0)
		return fail("%s", c->err);
	return 0;
}

/* relaymap set FILE | get [--json] | reset */

/* The whole file (or stdin for "-"), capped: a relay map is small. */
static int file_read(const char *path, char **ret, size_t *ret_len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	size_t cap = RELAYMAP_TEXT_MAX + 1, n;
	char *buf;

	if (!f)
		return fail("cannot open %s: %s", path, strerror(errno));
	buf = malloc(cap);
	if (!buf) {
		if (f != stdin)
			fclose(f);
		return fail("out of memory");
	}
	n = fread(buf, 1, cap, f);
	if (ferror(f)) {
		free(buf);
		if (f != stdin)
			fclose(f);
		return fail("cannot read %s", path);
	}
	if (f != stdin)
		fclose(f);
	if (n == cap) {
		free(buf);
		return fail("%s: larger than %u bytes", path, RELAYMAP_TEXT_MAX);
	}
	*ret = buf;
	*ret_len = n;
	return 0;
}

static int relaymap_cmd(struct admin_op_ctx *c, const char *sub, int argc, char **argv)
{
	struct netmap_relay_map *rm;
	bool as_json = false, dflt = false;
	const struct opt opts[] = {{"--json", false, NULL, &as_json}, {0}};
	const char *pos[1];
	char *text = NULL;
	size_t len;
	int npos, r;

	for (int i = -1; i < argc; i++) {
		const char *a = i < 0 ? sub : argv[i];

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			printf("usage: trellis-control [--state DIR] relaymap set FILE|-\n"
			       "       trellis-control [--state DIR] relaymap get [--json]\n"
			       "       trellis-control [--state DIR] relaymap reset\n"
			       "FILE is JSON: {\"regions\": [{\"id\": 1, \"code\": \"fra\", "
			       "\"nodes\": "
			       "[{\"name\": \"fra1\", \"host\": ...}]}]}\n"
			       "(docs/control-protocol.md, \"Relay map\").\n");
			return 0;
		}
	}
	if (strcmp(sub, "set") == 0) {
		if (opts_parse(argc, argv, NULL, pos, 1, &npos))
			return 1;
		if (npos != 1)
			return fail("usage: relaymap set FILE (JSON; - for stdin)");
		if (file_read(pos[0], &text, &len))
			return 1;
		r = admin_op_relaymap_set(c, text, len);
		free(text);
		if (r < 0)
			return fail("%s: %s", strcmp(pos[0], "-") ? pos[0] : "stdin", c->err);
		return 0;
	}
	if (strcmp(sub, "reset") == 0) {
		if (opts_parse(argc, argv, NULL, pos, 0, &npos))
			return 1;
		return admin_op_relaymap_reset(c) < 0 ? fail("%s", c->err) : 0;
	}
	if (strcmp(sub, "get"))
		return fail("unknown command (set, get, reset)");
	if (opts_parse(argc, argv, opts, pos, 0, &npos))
		return 1;
	rm = malloc(sizeof(*rm));
	if (!rm)
		return fail("out of memory");
	r = admin_op_relaymap_get(c, rm, &dflt);
	if (r == 0)
		r = relaymap_encode(rm, &text, &len);
	if (r < 0) {
		free(rm);
		return fail("%s", c->err[0] ? c->err : strerror(-r));
	}
	if (as_json) {
		json_t *j = json_loads(text, 0, NULL);

		json_print(j);
	} else {
		printf("%s relay map, %u region%s\n", dflt ? "default (embedded)" : "admin's",
		       rm->n_regions, rm->n_regions == 1 ? "" : "s");
		printf("%-6s %-16s %-24s %s\n", "ID", "CODE", "NAME", "RELAYS");
		for (unsigned i = 0; i < rm->n_regions; i++) {
			const struct netmap_relay_region *g = &rm->regions[i];

			printf("%-6u %-16s %-24s", g->id, g->code, g->name[0] ? g->name : "-");
			for (unsigned j = 0; j < g->n_nodes; j++) {
				const struct netmap_relay_node *n = &g->nodes[j];

				if (!n->host[0] && !n->has_ipv4 && !n->has_ipv6)
					printf(" %s(control server)", j ? "," : "");
				else
					printf(" %s%s%s:%u", j ? "," : "", n->tls ? "https://" : "",
					       n->host[0] ? n->host : n->name, n->relay_port);
			}
			printf("\n");
		}
	}
	free(text);
	free(rm);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: trellis-control [--state DIR] <command>\n"
		"  serve [--listen ADDR:PORT] [--tls-cert PEM --tls-key PEM] [--no-relay]\n"
		"        [--stun-port N] [--metrics-listen ADDR:PORT]  (GET /metrics there; none by\n"
		"        default)\n"
		"  version\n"
		"  authkey create [--tailnet NAME] [--reusable] [--ephemeral] [--preauthorized]\n"
		"                 [--tags tag:a,tag:b] [--expiry DURATION]\n"
		"  authkey list [--tailnet NAME] [--json]\n"
		"  authkey revoke ID\n"
		"  tailnets list [--json]\n"
		"  tailnets create NAME [--key-expiry DURATION] [--ephemeral-timeout DURATION]\n"
		"  users list [--tailnet NAME] [--json]\n"
		"  users create NAME [--tailnet NAME]\n"
		"  nodes list [--tailnet NAME] [--json]\n"
		"  nodes approve|expire|delete ID|NAME [--tailnet NAME]\n"
		"  nodes approve reg:CODE                (an interactive registration's code)\n"
		"  nodes rename ID NAME\n"
		"  nodes set-expiry ID on|off\n"
		"  relaymap set FILE       (JSON, see docs/control-protocol.md; - reads stdin)\n"
		"  relaymap get [--json]\n"
		"  relaymap reset          (back to the embedded relay)\n"
		"Durations: 90s, 30m, 12h, 7d. State directory default: %s\n",
		ADMIN_STATE_DIR_DEFAULT);
}

/* Who runs the command, for the audit log: "cli:" and the effective user's name. */
static const char *actor_name(char *buf, size_t len)
{
	struct passwd pw, *res = NULL;
	char pbuf[1024];
	uid_t uid = geteuid();

	if (getpwuid_r(uid, &pw, pbuf, sizeof(pbuf), &res) == 0 && res)
		snprintf(buf, len, "cli:%s", res->pw_name);
	else
		snprintf(buf, len, "cli:uid%u", (unsigned)uid);
	return buf;
}

int admin_run(const char *state_dir, int argc, char **argv)
{
	static char name[64];
	struct admin_op_ctx c = { .now = time_wall_s() };
	char actor[96];
	const char *cmd, *sub;
	struct store *s = NULL;
	int r;

	if (argc < 1 || strcmp(argv[0], "help") == 0 || strcmp(argv[0], "--help") == 0) {
		usage(argc < 1 ? stderr : stdout);
		return argc < 1;
	}
	cmd = argv[0];
	if (strcmp(cmd, "authkey") && strcmp(cmd, "tailnets") && strcmp(cmd, "users") &&
	    strcmp(cmd, "nodes") && strcmp(cmd, "relaymap"))
		return fail("unknown command \"%s\" (try --help)", cmd);
	if (argc < 2 || !argv[1])
		return fail("%s: missing subcommand (try --help)", cmd);
	sub = argv[1];
	snprintf(name, sizeof(name), "%s %s", cmd, sub);
	cmd_name = name;
	if (strcmp(cmd, "authkey") == 0 && strcmp(sub, "create") && strcmp(sub, "list") &&
	    strcmp(sub, "revoke"))
		return fail("unknown command (create, list, revoke)");
	if (admin_store_open(state_dir, &s) < 0)
		return 1;
	c.store = s;
	c.actor = actor_name(actor, sizeof(actor));
	argc -= 2;
	argv += 2;
	if (strcmp(cmd, "authkey") == 0) {
		if (strcmp(sub, "create") == 0)
			r = authkey_create(&c, argc, argv);
		else if (strcmp(sub, "list") == 0)
			r = authkey_list(&c, argc, argv);
		else
			r = authkey_revoke(&c, argc, argv);
	} else if (strcmp(cmd, "tailnets") == 0) {
		r = tailnets_cmd(&c, sub, argc, argv);
	} else if (strcmp(cmd, "users") == 0) {
		r = users_cmd(&c, sub, argc, argv);
	} else if (strcmp(cmd, "relaymap") == 0) {
		r = relaymap_cmd(&c, sub, argc, argv);
	} else {
		r = nodes_cmd(&c, sub, argc, argv);
	}
	store_free(s);
	return r;
}
