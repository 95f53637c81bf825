// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdlib.h>

#include "base/hmap.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "control/ephemeral.h"

struct countdown {
	struct hmap_node node;
	struct loop_timer t;
	struct ephemeral *e;
	uint64_t id;
};

struct ephemeral {
	struct loop *loop;
	void (*expired)(void *ctx, uint64_t id);
	void *ctx;
	struct hmap ids; /* node id -> countdown */
};

int ephemeral_new(struct loop *loop, void (*expired)(void *ctx, uint64_t id), void *ctx,
		  struct ephemeral **ret)
{
	struct ephemeral *e = calloc(1, sizeof(*e));

	if (!e)
		return -ENOMEM;
	e->loop = loop;
	e->expired = expired;
	e->ctx = ctx;
	if (hmap_init(&e->ids) < 0) {
		free(e);
		return -ENOMEM;
	}
	*ret = e;
	return 0;
}

void ephemeral_free(struct ephemeral *e)
{
	struct hmap_node *n, *next;

	if (!e)
		return;
	for (n = hmap_first(&e->ids); n; n = next) {
		struct countdown *c = container_of(n, struct countdown, node);

		next = hmap_next(&e->ids, n);
		loop_timer_disarm(e->loop, &c->t);
		free(c);
	}
	hmap_fini(&e->ids);
	free(e);
}

static struct countdown *find(const struct ephemeral *e, uint64_t id)
{
	struct hmap_node *n;

	for (n = hmap_first_with_hash(&e->ids, hmap_hash(&e->ids, &id, sizeof(id))); n;
	     n = hmap_next_with_hash(n)) {
		struct countdown *c = container_of(n, struct countdown, node);

		if (c->id == id)
			return c;
	}
	return NULL;
}

static void fire(struct loop_timer *t)
{
	struct countdown *c = container_of(t, struct countdown, t);
	struct ephemeral *e = c->e;
	uint64_t id = c->id;

	hmap_remove(&e->ids, &c->node);
	free(c);
	e->expired(e->ctx, id);
}

int ephemeral_arm(struct ephemeral *e, uint64_t id, int64_t timeout_sec)
{
	struct countdown *c = find(e, id);

	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return -ENOMEM;
		c->e = e;
		c->id = id;
		c->t.cb = fire;
		hmap_insert(&e->ids, &c->node, hmap_hash(&e->ids, &id, sizeof(id)));
	}
	loop_timer_arm(e->loop, &c->t,
		       loop_now_ns(e->loop) +
			       (uint64_t)(timeout_sec > 0 ? timeout_sec : 0) * NSEC_PER_SEC);
	return 0;
}

void ephemeral_cancel(struct ephemeral *e, uint64_t id)
{
	struct countdown *c = find(e, id);

	if (!c)
		return;
	loop_timer_disarm(e->loop, &c->t);
	hmap_remove(&e->ids, &c->node);
	free(c);
}

size_t ephemeral_count(const struct ephemeral *e)
{
	return hmap_count(&e->ids);
}
