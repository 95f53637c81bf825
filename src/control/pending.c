// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/util.h"
#include "control/pending.h"
#include "crypto/crypto.h"

#define COST_NS (NSEC_PER_SEC / PENDING_RATE)
#define BUCKET_NS (COST_NS * PENDING_BURST)

/* Per tailnet: its entries and its bucket; per source: its entries. */
struct counter {
	struct hmap_node node;
	uint8_t key[PENDING_SOURCE_MAX + 8];
	uint8_t len;
	uint32_t n;
	uint64_t credit_ns, credit_at_ns;
};

struct pending {
	struct hmap codes, machines, counters;
	struct pending_reg *oldest, *newest;
	size_t n;
};

int pending_new(struct pending **ret)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	if (hmap_init(&p->codes) < 0 || hmap_init(&p->machines) < 0 ||
	    hmap_init(&p->counters) < 0) {
		pending_free(p);
		return -ENOMEM;
	}
	*ret = p;
	return 0;
}

void pending_free(struct pending *p)
{
	struct hmap_node *n, *next;

	if (!p)
		return;
	while (p->oldest)
		pending_remove(p, p->oldest);
	for (n = hmap_first(&p->counters); n; n = next) {
		next = hmap_next(&p->counters, n);
		free(container_of(n, struct counter, node));
	}
	hmap_fini(&p->codes);
	hmap_fini(&p->machines);
	hmap_fini(&p->counters);
	free(p);
}

size_t pending_source_from(const uint8_t *key, size_t len, uint8_t ret[PENDING_SOURCE_MAX])
{
	size_t n = MIN(len, (size_t)PENDING_SOURCE_MAX);

	memcpy(ret, key, n);
	if (n == 5 && key[0] == AF_INET)
		ret[4] = 0; /* the /24 */
	return n;
}

static size_t tailnet_key(uint64_t tid, uint8_t *ret)
{
	ret[0] = 0; /* no address family */
	memcpy(ret + 1, &tid, sizeof(tid));
	return 1 + sizeof(tid);
}

static struct counter *counter_get(struct pending *p, const uint8_t *key, size_t len, bool make,
				   uint64_t now_ns)
{
	uint64_t hash = hmap_hash(&p->counters, key, len);
	struct hmap_node *n;
	struct counter *c;

	for (n = hmap_first_with_hash(&p->counters, hash); n; n = hmap_next_with_hash(n)) {
		c = container_of(n, struct counter, node);
		if (c->len == len && memcmp(c->key, key, len) == 0)
			return c;
	}
	if (!make || !(c = calloc(1, sizeof(*c))))
		return NULL;
	memcpy(c->key, key, len);
	c->len = (uint8_t)len;
	c->credit_ns = BUCKET_NS;
	c->credit_at_ns = now_ns;
	hmap_insert(&p->counters, &c->node, hash);
	return c;
}

/* A counter without entries goes; a tailnet's keeps its bucket until it is full again. */
static void counter_put(struct pending *p, struct counter *c, uint64_t now_ns)
{
	if (c->n)
		return;
	if (c->key[0] == 0 && c->credit_ns + (now_ns - c->credit_at_ns) < BUCKET_NS)
		return;
	hmap_remove(&p->counters, &c->node);
	free(c);
}

static uint64_t machine_hash(const struct pending *p, uint64_t tid, const uint8_t *mk)
{
	return hmap_hash_id(&p->machines, tid, mk, NETMAP_KEY_LEN);
}

struct pending_reg *pending_by_machine(const struct pending *p, uint64_t tailnet_id,
				       const uint8_t machine_key[NETMAP_KEY_LEN])
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&p->machines, machine_hash(p, tailnet_id, machine_key)); n;
	     n = hmap_next_with_hash(n)) {
		struct pending_reg *e = container_of(n, struct pending_reg, by_machine);

		if (e->tailnet_id == tailnet_id &&
		    memcmp(e->machine_key, machine_key, NETMAP_KEY_LEN) == 0)
			return e;
	}
	return NULL;
}

struct pending_reg *pending_get(const struct pending *p, const char *code)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&p->codes, hmap_hash(&p->codes, code, strlen(code))); n;
	     n = hmap_next_with_hash(n)) {
		struct pending_reg *e = container_of(n, struct pending_reg, by_code);

		if (strcmp(e->code, code) == 0)
			return e;
	}
	return NULL;
}

static void list_unlink(struct pending *p, struct pending_reg *e)
{
	if (e->prev)
		e->prev->next = e->next;
	else
		p->oldest = e->next;
	if (e->next)
		e->next->prev = e->prev;
	else
		p->newest = e->prev;
	e->prev = e->next = NULL;
}

static void list_append(struct pending *p, struct pending_reg *e)
{
	e->prev = p->newest;
	e->next = NULL;
	if (p->newest)
		p->newest->next = e;
	else
		p->oldest = e;
	p->newest = e;
}

static void fill(struct pending_reg *e, const uint8_t *node_key, const char *hostname,
		 const char *os, uint64_t now_ns)
{
	memcpy(e->node_key, node_key, NETMAP_KEY_LEN);
	snprintf(e->hostname, sizeof(e->hostname), "%s", hostname);
	snprintf(e->os, sizeof(e->os), "%s", os);
	e->expires_ns = now_ns + PENDING_TTL_NS;
}

int pending_add(struct pending *p, uint64_t tailnet_id, const uint8_t machine_key[NETMAP_KEY_LEN],
		const uint8_t node_key[NETMAP_KEY_LEN], const char *hostname, const char *os,
		const uint8_t *src, size_t src_len, uint64_t now_ns, struct pending_reg **ret)
{
	struct pending_reg *e = pending_by_machine(p, tailnet_id, machine_key);
	uint8_t tkey[PENDING_SOURCE_MAX + 8], skey[PENDING_SOURCE_MAX];
	struct counter *tc, *sc;
	uint8_t rnd[PENDING_CODE_LEN / 2];
	size_t tlen, slen;
	int r;

	if (e) {
		/* The same machine again (a reconnect): same entry, same code, fresh TTL. */
		fill(e, node_key, hostname, os, now_ns);
		list_unlink(p, e);
		list_append(p, e);
		*ret = e;
		return 0;
	}
	tlen = tailnet_key(tailnet_id, tkey);
	slen = pending_source_from(src, src_len, skey);
	tc = counter_get(p, tkey, tlen, true, now_ns);
	sc = counter_get(p, skey, slen, true, now_ns);
	r = -ENOMEM;
	if (!tc || !sc)
		goto out;
	r = -ENOSPC;
	if (tc->n >= PENDING_PER_TAILNET || sc->n >= PENDING_PER_SOURCE)
		goto out;
	tc->credit_ns = MIN(tc->credit_ns + (now_ns - tc->credit_at_ns), (uint64_t)BUCKET_NS);
	tc->credit_at_ns = now_ns;
	r = -EBUSY;
	if (tc->credit_ns < COST_NS)
		goto out;
	r = -ENOMEM;
	e = calloc(1, sizeof(*e));
	if (!e)
		goto out;
	r = crypto_random(rnd, sizeof(rnd));
	if (r < 0) {
		free(e);
		goto out;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(e->code + 2 * i, 3, "%02x", rnd[i]);
	tc->credit_ns -= COST_NS;
	tc->n++;
	sc->n++;
	e->tailnet_id = tailnet_id;
	memcpy(e->machine_key, machine_key, NETMAP_KEY_LEN);
	memcpy(e->src, skey, slen);
	e->src_len = (uint8_t)slen;
	fill(e, node_key, hostname, os, now_ns);
	hmap_insert(&p->codes, &e->by_code, hmap_hash(&p->codes, e->code, PENDING_CODE_LEN));
	hmap_insert(&p->machines, &e->by_machine, machine_hash(p, tailnet_id, machine_key));
	list_append(p, e);
	p->n++;
	*ret = e;
	return 0;
out:
	if (sc)
		counter_put(p, sc, now_ns);
	if (tc)
		counter_put(p, tc, now_ns);
	return r;
}

void pending_remove(struct pending *p, struct pending_reg *e)
{
	uint8_t tkey[PENDING_SOURCE_MAX + 8];
	size_t tlen = tailnet_key(e->tailnet_id, tkey);
	struct counter *c;

	c = counter_get(p, tkey, tlen, false, 0);
	if (c && c->n) {
		c->n--;
		/* Keeps its bucket: forgotten with the next entry of this tailnet, or never. */
	}
	c = counter_get(p, e->src, e->src_len, false, 0);
	if (c && c->n && !--c->n) {
		hmap_remove(&p->counters, &c->node);
		free(c);
	}
	hmap_remove(&p->codes, &e->by_code);
	hmap_remove(&p->machines, &e->by_machine);
	list_unlink(p, e);
	p->n--;
	free(e->mcert);
	free(e);
}

struct pending_reg *pending_expired(const struct pending *p, uint64_t now_ns)
{
	return p->oldest && p->oldest->expires_ns <= now_ns ? p->oldest : NULL;
}

struct pending_reg *pending_next(const struct pending *p, const struct pending_reg *e)
{
	return e ? e->next : p->oldest;
}

size_t pending_count(const struct pending *p)
{
	return p->n;
}

bool pending_code_parse(const char *s, char ret[PENDING_CODE_LEN + 1])
{
	if (strncmp(s, "reg:", 4) != 0 || strlen(s + 4) != PENDING_CODE_LEN)
		return false;
	for (size_t i = 0; i < PENDING_CODE_LEN; i++)
		if (!strchr("0123456789abcdef", s[4 + i]) || !s[4 + i])
			return false;
	memcpy(ret, s + 4, PENDING_CODE_LEN + 1);
	return true;
}
