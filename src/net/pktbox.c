/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>

#include "base/util.h"
#include "net/pktbox.h"

int pktbox_init(struct pktbox *b, unsigned cap, void (*notify)(void *ctx), void *ctx)
{
	b->ring = NULL;
	if (cap) {
		b->ring = calloc(cap, sizeof(*b->ring));
		if (!b->ring)
			return -ENOMEM;
	}
	pthread_mutex_init(&b->lock, NULL);
	b->cap = cap;
	b->head = 0;
	b->n = 0;
	b->notify = notify;
	b->ctx = ctx;
	atomic_init(&b->drops, 0);
	return 0;
}

void pktbox_destroy(struct pktbox *b)
{
	struct pkt *p;

	while (pktbox_take(b, &p, 1))
		pkt_free(&p, 1);
	free(b->ring);
	b->ring = NULL;
	pthread_mutex_destroy(&b->lock);
}

unsigned pktbox_put(struct pktbox *b, struct pkt **pkts, unsigned n)
{
	unsigned i, room, take;
	bool was_empty;

	if (!n)
		return 0;
	pthread_mutex_lock(&b->lock);
	was_empty = b->n == 0;
	room = b->cap - b->n;
	take = MIN(room, n);
	for (i = 0; i < take; i++)
		b->ring[(b->head + b->n + i) % b->cap] = pkts[i];
	b->n += take;
	pthread_mutex_unlock(&b->lock);
	if (take < n) {
		atomic_fetch_add(&b->drops, n - take);
		pkt_free(pkts + take, n - take);
	}
	if (was_empty && take && b->notify)
		b->notify(b->ctx);
	return take;
}

unsigned pktbox_take(struct pktbox *b, struct pkt **ret, unsigned n)
{
	unsigned i, take;

	pthread_mutex_lock(&b->lock);
	take = MIN(b->n, n);
	for (i = 0; i < take; i++)
		ret[i] = b->ring[(b->head + i) % b->cap];
	if (take) {
		b->head = (b->head + take) % b->cap;
		b->n -= take;
	}
	pthread_mutex_unlock(&b->lock);
	return take;
}

uint64_t pktbox_drops(struct pktbox *b)
{
	return atomic_load(&b->drops);
}
