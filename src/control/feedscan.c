// SPDX-License-Identifier: MIT
/*
 * The change feed since a position, sorted once and kept (see feedscan.h). A few positions
 * are kept, the least recently used replaced: after a restart nearly every node offers the
 * same one, and the odd node that missed a delta before the stop offers another.
 *
 * The writer prunes the feed's oldest rows (a prefix), never one in the middle, so once the
 * row at `from` is still there after a read, no row after it was pruned before that read:
 * what the entry holds is every row since `from`.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "control/feedscan.h"

#define SLOTS 4
#define CHUNK 4096 /* rows per read */

struct entry {
	uint64_t from; /* 0: free */
	uint64_t upto; /* the last row read */
	uint64_t used; /* for the least recently used */
	struct mapper_missed *missed;
	size_t n_missed, cap_missed;
	uint64_t *tailnets;
	size_t n_tailnets, cap_tailnets;
	bool relay, user, overflow;
};

struct feedscan {
	struct store *st;
	size_t cap;
	uint64_t skip_begin, skip_end;
	uint64_t clock, rows_read;
	struct store_change *buf; /* CHUNK rows */
	struct entry e[SLOTS];
};

struct feedscan *feedscan_new(struct store *st, size_t cap, uint64_t skip_begin, uint64_t skip_end)
{
	struct feedscan *fs = calloc(1, sizeof(*fs));

	if (!fs)
		return NULL;
	fs->buf = malloc(CHUNK * sizeof(*fs->buf));
	if (!fs->buf) {
		free(fs);
		return NULL;
	}
	fs->st = st;
	fs->cap = cap;
	fs->skip_begin = skip_begin;
	fs->skip_end = skip_end;
	return fs;
}

static void entry_clear(struct entry *e)
{
	free(e->missed);
	free(e->tailnets);
	memset(e, 0, sizeof(*e));
}

void feedscan_free(struct feedscan *fs)
{
	if (!fs)
		return;
	for (size_t i = 0; i < SLOTS; i++)
		entry_clear(&fs->e[i]);
	free(fs->buf);
	free(fs);
}

uint64_t feedscan_rows_read(const struct feedscan *fs)
{
	return fs->rows_read;
}

static int missed_add(struct feedscan *fs, struct entry *e, uint64_t id, bool live_only)
{
	if (e->n_missed >= fs->cap) {
		e->overflow = true;
		return 0;
	}
	if (e->n_missed == e->cap_missed) {
		size_t n = e->cap_missed ? 2 * e->cap_missed : 64;
		struct mapper_missed *p;

		if (n > fs->cap)
			n = fs->cap;
		p = realloc(e->missed, n * sizeof(*p));
		if (!p)
			return -ENOMEM;
		e->missed = p;
		e->cap_missed = n;
	}
	e->missed[e->n_missed++] = (struct mapper_missed){.id = id, .live_only = live_only};
	return 0;
}

static int tailnet_add(struct entry *e, uint64_t id)
{
	for (size_t i = 0; i < e->n_tailnets; i++)
		if (e->tailnets[i] == id)
			return 0;
	if (e->n_tailnets == e->cap_tailnets) {
		size_t n = e->cap_tailnets ? 2 * e->cap_tailnets : 8;
		uint64_t *p = realloc(e->tailnets, n * sizeof(*p));

		if (!p)
			return -ENOMEM;
		e->tailnets = p;
		e->cap_tailnets = n;
	}
	e->tailnets[e->n_tailnets++] = id;
	return 0;
}

static int take(struct feedscan *fs, struct entry *e, const struct store_change *c)
{
	switch (c->kind) {
	case STORE_CHANGE_NODE:
		return missed_add(fs, e, c->id, false);
	case STORE_CHANGE_NODE_LIVE:
		if (c->seq > fs->skip_begin && c->seq <= fs->skip_end)
			return 0;
		return missed_add(fs, e, c->id, true);
	case STORE_CHANGE_NODE_TOUCH: /* written as it was */
		return 0;
	case STORE_CHANGE_SETTING:
		e->relay = true;
		return 0;
	case STORE_CHANGE_POLICY:
	case STORE_CHANGE_TAILNET:
		return tailnet_add(e, c->id);
	case STORE_CHANGE_USER:
		e->user = true;
		return 0;
	default:
		return 0;
	}
}

/* The rows after e->upto, up to the newest (or the cap). */
static int extend(struct feedscan *fs, struct entry *e)
{
	int k, r;

	while (!e->overflow) {
		k = store_changes_since(fs->st, e->upto + 1, fs->buf, CHUNK);
		if (k < 0)
			return k;
		fs->rows_read += (uint64_t)k;
		for (int i = 0; i < k; i++) {
			r = take(fs, e, &fs->buf[i]);
			if (r < 0)
				return r;
		}
		if (k > 0)
			e->upto = fs->buf[k - 1].seq;
		if (k < CHUNK)
			break;
	}
	return 0;
}

/* The row at `from`, if the store still holds it. */
static int row_at(struct feedscan *fs, uint64_t from, struct store_change *ret)
{
	int k = store_changes_since(fs->st, from, ret, 1);

	if (k < 0)
		return k;
	return k == 1 && ret->seq == from ? 0 : -ENOENT;
}

int feedscan_get(struct feedscan *fs, uint64_t from, feedscan_row_ok_fn row_ok, void *ctx,
		 struct feedscan_since *ret)
{
	struct store_change row;
	struct entry *e = NULL, *old = &fs->e[0];
	int r;

	if (!from)
		return -ENOENT;
	/* A forged or foreign position costs one row, not a scan. */
	r = row_at(fs, from, &row);
	if (r < 0)
		return r;
	if (!row_ok(ctx, &row))
		return -EACCES;
	for (size_t i = 0; i < SLOTS; i++) {
		if (fs->e[i].from == from)
			e = &fs->e[i];
		if (fs->e[i].used < old->used)
			old = &fs->e[i];
	}
	if (!e) {
		e = old;
		entry_clear(e);
		e->from = e->upto = from;
	}
	r = extend(fs, e);
	/* Still there after the read: nothing after it was pruned before it was read. */
	if (r == 0)
		r = row_at(fs, from, &row);
	if (r < 0) {
		entry_clear(e);
		return r;
	}
	e->used = ++fs->clock;
	*ret = (struct feedscan_since){
	    .missed = e->missed,
	    .n_missed = e->n_missed,
	    .tailnets = e->tailnets,
	    .n_tailnets = e->n_tailnets,
	    .relay = e->relay,
	    .user = e->user,
	    .overflow = e->overflow,
	};
	return 0;
}
