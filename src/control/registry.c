// SPDX-License-Identifier: MIT
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/util.h"
#include "control/addr.h"
#include "control/mapper.h"
#include "control/registry.h"

struct registry_user {
	struct hmap_node by_id;
	struct control_user rec;
};

struct registry_authkey {
	struct hmap_node by_prefix;
	struct control_authkey rec;
};

/* The next suffix to try for a base name in a tailnet. */
struct name_hint {
	struct hmap_node node;
	uint64_t tailnet_id;
	uint64_t next;
	char base[NETMAP_NAME_MAX];
};

struct registry {
	struct mapper *m;
	struct hmap tailnets;  /* id -> registry_tailnet */
	struct hmap users;     /* id -> registry_user */
	struct hmap authkeys;  /* prefix -> registry_authkey */
	struct hmap nodes;     /* id -> registry_node (committed entries) */
	struct hmap machines;  /* machine key -> the node it registered last */
	struct hmap tn_machines; /* tailnet id + machine key -> registry_node (every entry) */
	struct hmap names;     /* tailnet id + name -> registry_node */
	struct hmap node_keys; /* node key -> registry_node (every entry, reservations too) */
	struct hmap hints;     /* tailnet id + base name -> name_hint */
	size_t feed_held;      /* entries with feed_held */
};

static uint64_t id_hash(const struct hmap *h, uint64_t id)
{
	return hmap_hash(h, &id, sizeof(id));
}

int registry_new(struct mapper *m, struct registry **ret)
{
	struct registry *r = calloc(1, sizeof(*r));

	if (!r)
		return -ENOMEM;
	r->m = m;
	if (hmap_init(&r->tailnets) < 0 || hmap_init(&r->users) < 0 ||
	    hmap_init(&r->authkeys) < 0 || hmap_init(&r->nodes) < 0 ||
	    hmap_init(&r->machines) < 0 || hmap_init(&r->tn_machines) < 0 ||
	    hmap_init(&r->names) < 0 || hmap_init(&r->hints) < 0 ||
	    hmap_init(&r->node_keys) < 0) {
		registry_free(r);
		return -ENOMEM;
	}
	*ret = r;
	return 0;
}

void registry_free(struct registry *r)
{
	struct hmap_node *n, *next;

	if (!r)
		return;
	for (n = hmap_first(&r->tailnets); n; n = next) {
		struct registry_tailnet *t = container_of(n, struct registry_tailnet, by_id);

		next = hmap_next(&r->tailnets, n);
		addr_pool_free(t->pool);
		free(t);
	}
	for (n = hmap_first(&r->users); n; n = next) {
		next = hmap_next(&r->users, n);
		free(container_of(n, struct registry_user, by_id));
	}
	for (n = hmap_first(&r->authkeys); n; n = next) {
		struct registry_authkey *k = container_of(n, struct registry_authkey, by_prefix);

		next = hmap_next(&r->authkeys, n);
		explicit_bzero(k, sizeof(*k));
		free(k);
	}
	/* Every entry, reservations included, is in tn_machines once. */
	for (n = hmap_first(&r->tn_machines); n; n = next) {
		next = hmap_next(&r->tn_machines, n);
		free(container_of(n, struct registry_node, by_tailnet_machine));
	}
	for (n = hmap_first(&r->hints); n; n = next) {
		next = hmap_next(&r->hints, n);
		free(container_of(n, struct name_hint, node));
	}
	hmap_fini(&r->tailnets);
	hmap_fini(&r->users);
	hmap_fini(&r->authkeys);
	hmap_fini(&r->nodes);
	hmap_fini(&r->machines);
	hmap_fini(&r->tn_machines);
	hmap_fini(&r->names);
	hmap_fini(&r->hints);
	hmap_fini(&r->node_keys);
	free(r);
}

/* ---- tailnets, users, auth keys ---- */

struct registry_tailnet *registry_tailnet_get(const struct registry *r, uint64_t id)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->tailnets, id_hash(&r->tailnets, id)); n;
	     n = hmap_next_with_hash(n)) {
		struct registry_tailnet *t = container_of(n, struct registry_tailnet, by_id);

		if (t->rec.id == id)
			return t;
	}
	return NULL;
}

struct registry_tailnet *registry_tailnet_next(const struct registry *r,
					       const struct registry_tailnet *t)
{
	struct hmap_node *n = t ? hmap_next(&r->tailnets, &t->by_id) : hmap_first(&r->tailnets);

	return n ? container_of(n, struct registry_tailnet, by_id) : NULL;
}

int registry_tailnet_put(struct registry *r, const struct control_tailnet *rec)
{
	struct registry_tailnet *t = registry_tailnet_get(r, rec->id);

	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t)
			return -ENOMEM;
		t->pool = addr_pool_new();
		if (!t->pool) {
			free(t);
			return -ENOMEM;
		}
		hmap_insert(&r->tailnets, &t->by_id, id_hash(&r->tailnets, rec->id));
	}
	t->rec = *rec;
	return mapper_tailnet_upsert(r->m, rec);
}

static struct registry_user *user_find(const struct registry *r, uint64_t id)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->users, id_hash(&r->users, id)); n;
	     n = hmap_next_with_hash(n)) {
		struct registry_user *u = container_of(n, struct registry_user, by_id);

		if (u->rec.id == id)
			return u;
	}
	return NULL;
}

const struct control_user *registry_user_get(const struct registry *r, uint64_t id)
{
	struct registry_user *u = id ? user_find(r, id) : NULL;

	return u ? &u->rec : NULL;
}

int registry_user_put(struct registry *r, const struct control_user *rec)
{
	struct registry_user *u = user_find(r, rec->id);
	struct registry_tailnet *t = registry_tailnet_get(r, rec->tailnet_id);

	if (!u) {
		u = calloc(1, sizeof(*u));
		if (!u)
			return -ENOMEM;
		hmap_insert(&r->users, &u->by_id, id_hash(&r->users, rec->id));
	}
	u->rec = *rec;
	if (t && !t->default_user && strcmp(rec->name, REGISTRY_DEFAULT_USER) == 0)
		t->default_user = rec->id;
	return mapper_user_upsert(r->m, rec);
}

static struct registry_authkey *authkey_find(const struct registry *r, const char *prefix,
					     size_t len)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->authkeys, hmap_hash(&r->authkeys, prefix, len)); n;
	     n = hmap_next_with_hash(n)) {
		struct registry_authkey *k = container_of(n, struct registry_authkey, by_prefix);

		if (strlen(k->rec.prefix) == len && memcmp(k->rec.prefix, prefix, len) == 0)
			return k;
	}
	return NULL;
}

struct control_authkey *registry_authkey_get(const struct registry *r, const char *prefix)
{
	struct registry_authkey *k = authkey_find(r, prefix, strlen(prefix));

	return k ? &k->rec : NULL;
}

int registry_authkey_put(struct registry *r, const struct control_authkey *rec)
{
	size_t len = strnlen(rec->prefix, sizeof(rec->prefix));
	struct registry_authkey *k = authkey_find(r, rec->prefix, len);
	uint64_t uses = k ? k->rec.uses : 0;

	if (len == sizeof(rec->prefix))
		return -EINVAL;
	if (!k) {
		k = calloc(1, sizeof(*k));
		if (!k)
			return -ENOMEM;
		hmap_insert(&r->authkeys, &k->by_prefix, hmap_hash(&r->authkeys, rec->prefix, len));
	}
	k->rec = *rec;
	/* Our own uses in flight count too. */
	if (uses > k->rec.uses)
		k->rec.uses = uses;
	return 0;
}

/* ---- node indexes ---- */

static uint64_t name_hash(const struct registry *r, uint64_t tid, const char *name)
{
	return hmap_hash_id(&r->names, tid, name, strlen(name));
}

static uint64_t tn_machine_hash(const struct registry *r, uint64_t tid, const uint8_t *mk)
{
	return hmap_hash_id(&r->tn_machines, tid, mk, NETMAP_KEY_LEN);
}

struct registry_node *registry_node_get(const struct registry *r, uint64_t id)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->nodes, id_hash(&r->nodes, id)); n;
	     n = hmap_next_with_hash(n)) {
		struct registry_node *e = container_of(n, struct registry_node, by_id);

		if (e->id == id)
			return e;
	}
	return NULL;
}

struct registry_node *registry_node_by_machine(const struct registry *r,
					       const uint8_t machine_key[NETMAP_KEY_LEN])
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->machines,
				      hmap_hash(&r->machines, machine_key, NETMAP_KEY_LEN));
	     n; n = hmap_next_with_hash(n)) {
		struct registry_node *e = container_of(n, struct registry_node, by_machine);

		if (memcmp(e->machine_key, machine_key, NETMAP_KEY_LEN) == 0)
			return e;
	}
	return NULL;
}

struct registry_node *registry_node_in_tailnet(const struct registry *r, uint64_t tailnet_id,
					       const uint8_t machine_key[NETMAP_KEY_LEN])
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->tn_machines, tn_machine_hash(r, tailnet_id, machine_key));
	     n; n = hmap_next_with_hash(n)) {
		struct registry_node *e = container_of(n, struct registry_node, by_tailnet_machine);

		if (e->tailnet_id == tailnet_id &&
		    memcmp(e->machine_key, machine_key, NETMAP_KEY_LEN) == 0)
			return e;
	}
	return NULL;
}

bool registry_name_taken(const struct registry *r, uint64_t tailnet_id, const char *name)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->names, name_hash(r, tailnet_id, name)); n;
	     n = hmap_next_with_hash(n)) {
		struct registry_node *e = container_of(n, struct registry_node, by_name);

		if (e->tailnet_id == tailnet_id && strcmp(e->name, name) == 0)
			return true;
	}
	return false;
}

const struct control_node *registry_node_record(const struct registry *r, uint64_t id)
{
	return mapper_node_get(r->m, id);
}

void registry_node_render(const struct registry *r, const struct control_node *rec,
			  struct netmap_node *ret)
{
	const struct control_user *u = registry_user_get(r, rec->user_id);

	control_node_render(rec, u ? u->name : NULL, ret);
}

static struct registry_node *entry_new(struct registry *r, uint64_t tid, const uint8_t *mk,
				       const char *name)
{
	struct registry_node *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->tailnet_id = tid;
	memcpy(e->machine_key, mk, NETMAP_KEY_LEN);
	snprintf(e->name, sizeof(e->name), "%s", name);
	hmap_insert(&r->tn_machines, &e->by_tailnet_machine, tn_machine_hash(r, tid, mk));
	hmap_insert(&r->names, &e->by_name, name_hash(r, tid, e->name));
	return e;
}

/* The entry's node key is now key (all zero: none). */
static void node_key_set(struct registry *r, struct registry_node *e, const uint8_t *key)
{
	static const uint8_t zero[NETMAP_KEY_LEN];

	if (e->node_key_indexed && memcmp(e->node_key, key, NETMAP_KEY_LEN) == 0)
		return;
	if (e->node_key_indexed)
		hmap_remove(&r->node_keys, &e->by_node_key);
	memcpy(e->node_key, key, NETMAP_KEY_LEN);
	e->node_key_indexed = memcmp(key, zero, NETMAP_KEY_LEN) != 0;
	if (e->node_key_indexed)
		hmap_insert(&r->node_keys, &e->by_node_key,
			    hmap_hash(&r->node_keys, key, NETMAP_KEY_LEN));
}

bool registry_node_key_taken(const struct registry *r, const uint8_t node_key[NETMAP_KEY_LEN],
			     const uint8_t machine_key[NETMAP_KEY_LEN])
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->node_keys,
				      hmap_hash(&r->node_keys, node_key, NETMAP_KEY_LEN));
	     n; n = hmap_next_with_hash(n)) {
		struct registry_node *e = container_of(n, struct registry_node, by_node_key);

		if (memcmp(e->node_key, node_key, NETMAP_KEY_LEN) == 0 &&
		    memcmp(e->machine_key, machine_key, NETMAP_KEY_LEN) != 0)
			return true;
	}
	return false;
}

void registry_node_key_reserve(struct registry *r, struct registry_node *e,
			       const uint8_t node_key[NETMAP_KEY_LEN])
{
	node_key_set(r, e, node_key);
}

static void entry_free(struct registry *r, struct registry_node *e)
{
	registry_node_feed_release(r, e);
	if (e->node_key_indexed)
		hmap_remove(&r->node_keys, &e->by_node_key);
	if (e->id)
		hmap_remove(&r->nodes, &e->by_id);
	if (e->machine_indexed)
		hmap_remove(&r->machines, &e->by_machine);
	hmap_remove(&r->tn_machines, &e->by_tailnet_machine);
	hmap_remove(&r->names, &e->by_name);
	free(e);
}

struct registry_node *registry_node_reserve(struct registry *r, uint64_t tailnet_id,
					    const uint8_t machine_key[NETMAP_KEY_LEN],
					    const char *name)
{
	return entry_new(r, tailnet_id, machine_key, name);
}

void registry_node_commit(struct registry *r, struct registry_node *e, uint64_t id)
{
	e->id = id;
	hmap_insert(&r->nodes, &e->by_id, id_hash(&r->nodes, id));
}

void registry_node_unreserve(struct registry *r, struct registry_node *e)
{
	entry_free(r, e);
}

void registry_node_rename(struct registry *r, struct registry_node *e, const char *name)
{
	hmap_remove(&r->names, &e->by_name);
	snprintf(e->name, sizeof(e->name), "%s", name);
	hmap_insert(&r->names, &e->by_name, name_hash(r, e->tailnet_id, e->name));
}

void registry_machine_claim(struct registry *r, struct registry_node *e)
{
	struct registry_node *cur = registry_node_by_machine(r, e->machine_key);

	if (cur == e)
		return;
	if (cur) {
		hmap_remove(&r->machines, &cur->by_machine);
		cur->machine_indexed = false;
	}
	hmap_insert(&r->machines, &e->by_machine,
		    hmap_hash(&r->machines, e->machine_key, NETMAP_KEY_LEN));
	e->machine_indexed = true;
}

int registry_node_sync(struct registry *r, const struct control_node *rec, int64_t now)
{
	struct registry_node *e = registry_node_get(r, rec->id);
	const struct control_node *old = mapper_node_get(r->m, rec->id);
	struct control_node copy = *rec;
	int ret;

	if (e) {
		if (strcmp(e->name, rec->name) != 0)
			registry_node_rename(r, e, rec->name);
	} else {
		struct registry_tailnet *t = registry_tailnet_get(r, rec->tailnet_id);

		e = entry_new(r, rec->tailnet_id, rec->machine_key, rec->name);
		if (!e)
			return -ENOMEM;
		registry_node_commit(r, e, rec->id);
		registry_machine_claim(r, e);
		if (t)
			addr_pool_mark(t->pool, rec->ipv4);
	}
	node_key_set(r, e, rec->node_key);
	/* Endpoints, disco key, region and mapping are live state: ours are newer than any row. */
	if (old) {
		copy.n_endpoints = old->n_endpoints;
		memcpy(copy.endpoints, old->endpoints, sizeof(copy.endpoints));
		copy.has_disco_key = old->has_disco_key;
		memcpy(copy.disco_key, old->disco_key, sizeof(copy.disco_key));
		copy.home_region = old->home_region;
		copy.mapping_varies = old->mapping_varies;
	}
	ret = mapper_node_upsert(r->m, &copy, now);
	if (ret < 0)
		log_warn("control: node %" PRIu64 " not loaded", rec->id);
	return ret;
}

int registry_node_update(struct registry *r, const struct control_node *rec, int64_t now)
{
	struct registry_node *e = registry_node_get(r, rec->id);
	int ret;

	if (e && strcmp(e->name, rec->name) != 0)
		registry_node_rename(r, e, rec->name);
	if (e)
		node_key_set(r, e, rec->node_key);
	ret = mapper_node_upsert(r->m, rec, now);
	if (ret < 0)
		log_err("control: node %" PRIu64 ": mapper refused the record", rec->id);
	return ret;
}

void registry_node_feed_hold(struct registry *r, struct registry_node *e)
{
	if (!e->feed_held)
		r->feed_held++;
	e->feed_held = true;
}

bool registry_node_feed_release(struct registry *r, struct registry_node *e)
{
	if (!e->feed_held)
		return false;
	e->feed_held = false;
	r->feed_held--;
	return true;
}

size_t registry_feed_held(const struct registry *r)
{
	return r->feed_held;
}

void registry_node_remove(struct registry *r, uint64_t id)
{
	struct registry_node *e = registry_node_get(r, id);
	const struct control_node *n = mapper_node_get(r->m, id);
	struct registry_tailnet *t;

	if (n && (t = registry_tailnet_get(r, n->tailnet_id)))
		addr_pool_release(t->pool, n->ipv4);
	if (e)
		entry_free(r, e);
	mapper_node_remove(r->m, id);
}

/* ---- names ---- */

static struct name_hint *hint_find(struct registry *r, uint64_t tid, const char *base,
				   uint64_t hash)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&r->hints, hash); n; n = hmap_next_with_hash(n)) {
		struct name_hint *x = container_of(n, struct name_hint, node);

		if (x->tailnet_id == tid && strcmp(x->base, base) == 0)
			return x;
	}
	return NULL;
}

void registry_name_unique(struct registry *r, uint64_t tailnet_id, const char *hostname,
			  char ret[NETMAP_NAME_MAX])
{
	char base[NETMAP_NAME_MAX - 8];
	size_t i, n = 0;
	uint64_t hash, next = 2;
	struct name_hint *x;

	/* A DNS label: lowercase letters, digits and '-', not starting or ending with '-'. */
	for (i = 0; hostname[i] && n < sizeof(base) - 1; i++) {
		char ch = hostname[i];

		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
			base[n++] = ch;
		else if (ch == '.')
			break;
		else if (n && base[n - 1] != '-')
			base[n++] = '-';
	}
	while (n && base[n - 1] == '-')
		n--;
	base[n] = '\0';
	if (!n)
		snprintf(base, sizeof(base), "node");
	snprintf(ret, NETMAP_NAME_MAX, "%s", base);
	if (!registry_name_taken(r, tailnet_id, ret))
		return;
	hash = hmap_hash_id(&r->hints, tailnet_id, base, strlen(base));
	x = hint_find(r, tailnet_id, base, hash);
	if (x)
		next = x->next;
	for (;; next++) {
		snprintf(ret, NETMAP_NAME_MAX, "%s-%" PRIu64, base, next);
		if (!registry_name_taken(r, tailnet_id, ret))
			break;
	}
	if (!x && (x = calloc(1, sizeof(*x)))) {
		x->tailnet_id = tailnet_id;
		snprintf(x->base, sizeof(x->base), "%s", base);
		hmap_insert(&r->hints, &x->node, hash);
	}
	if (x)
		x->next = next + 1;
}
