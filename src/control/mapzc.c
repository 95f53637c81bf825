// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "control/mapzc.h"
#include "proto/ctrlmsg.h"

/* The decoder refuses larger windows (proto/mapz.c): what we make must fit. */
#define MAPZC_WINDOW_LOG 21

struct zslot {
	char *text; /* what the frame was made from: a reuse compares it whole */
	size_t text_len;
	uint8_t *z;
	size_t z_len;
	uint64_t used; /* the least recently used slot is replaced */
};

struct ztailnet {
	uint64_t id;
	struct zslot (*blocks)[MAPZC_SLOTS];
	size_t n_blocks;
	struct ztailnet *next;
};

struct mapzc {
	ZSTD_CCtx *cc;
	struct ztailnet *tailnets;
	char *scratch; /* one block's text */
	size_t scratch_cap;
	uint64_t tick;
	struct mapzc_stats st;
};

struct obuf {
	uint8_t *p;
	size_t len, cap;
};

static int obuf_reserve(struct obuf *o, size_t n)
{
	size_t cap = o->cap ? o->cap : 4096;
	uint8_t *p;

	if (o->len + n <= o->cap)
		return 0;
	while (cap < o->len + n)
		cap *= 2;
	p = realloc(o->p, cap);
	if (!p)
		return -ENOMEM;
	o->p = p;
	o->cap = cap;
	return 0;
}

int mapzc_new(struct mapzc **ret)
{
	struct mapzc *z = calloc(1, sizeof(*z));

	if (!z || !(z->cc = ZSTD_createCCtx())) {
		free(z);
		return -ENOMEM;
	}
	ZSTD_CCtx_setParameter(z->cc, ZSTD_c_compressionLevel, MAPZC_LEVEL);
	ZSTD_CCtx_setParameter(z->cc, ZSTD_c_windowLog, MAPZC_WINDOW_LOG);
	/* The decoder sizes its output by the declared sizes: every frame must carry one. */
	ZSTD_CCtx_setParameter(z->cc, ZSTD_c_contentSizeFlag, 1);
	*ret = z;
	return 0;
}

static void slot_clear(struct mapzc *z, struct zslot *s)
{
	z->st.cached -= s->text_len + s->z_len;
	free(s->text);
	free(s->z);
	memset(s, 0, sizeof(*s));
}

static void tailnet_free(struct mapzc *z, struct ztailnet *t)
{
	for (size_t b = 0; b < t->n_blocks; b++)
		for (size_t k = 0; k < MAPZC_SLOTS; k++)
			slot_clear(z, &t->blocks[b][k]);
	free(t->blocks);
	free(t);
}

void mapzc_free(struct mapzc *z)
{
	if (!z)
		return;
	while (z->tailnets) {
		struct ztailnet *t = z->tailnets;

		z->tailnets = t->next;
		tailnet_free(z, t);
	}
	ZSTD_freeCCtx(z->cc);
	free(z->scratch);
	free(z);
}

void mapzc_stats(const struct mapzc *z, struct mapzc_stats *ret)
{
	*ret = z->st;
}

/* The tailnet's slots of block b, grown as needed; NULL when out of memory (no caching then). */
static struct zslot *slots_get(struct mapzc *z, uint64_t tailnet, uint32_t b)
{
	struct ztailnet *t;

	for (t = z->tailnets; t && t->id != tailnet; t = t->next)
		;
	if (!t) {
		t = calloc(1, sizeof(*t));
		if (!t)
			return NULL;
		t->id = tailnet;
		t->next = z->tailnets;
		z->tailnets = t;
	}
	if (b >= t->n_blocks) {
		size_t n = (size_t)b + 1 + t->n_blocks / 2;
		void *p = realloc(t->blocks, n * sizeof(*t->blocks));

		if (!p)
			return NULL;
		t->blocks = p;
		memset(&t->blocks[t->n_blocks], 0, (n - t->n_blocks) * sizeof(*t->blocks));
		t->n_blocks = n;
	}
	return t->blocks[b];
}

/* Compresses src as one frame at the end of o. */
static int frame_put(struct mapzc *z, struct obuf *o, const void *src, size_t len)
{
	size_t bound = ZSTD_compressBound(len), k;

	if (obuf_reserve(o, bound) < 0)
		return -ENOMEM;
	k = ZSTD_compress2(z->cc, o->p + o->len, bound, src, len);
	if (ZSTD_isError(k))
		return -EIO;
	o->len += k;
	z->st.blocks_made++;
	return 0;
}

/* One block's frame: the cached one when its text is equal, else made (kept when cacheable). */
static int block_put(struct mapzc *z, struct obuf *o, uint64_t tailnet, uint32_t b,
		     const char *text, size_t len, bool cacheable)
{
	struct zslot *slots = cacheable ? slots_get(z, tailnet, b) : NULL, *lru = NULL;
	size_t start = o->len;
	int r;

	for (size_t k = 0; slots && k < MAPZC_SLOTS; k++) {
		struct zslot *s = &slots[k];

		if (s->z && s->text_len == len && memcmp(s->text, text, len) == 0) {
			if (obuf_reserve(o, s->z_len) < 0)
				return -ENOMEM;
			memcpy(o->p + o->len, s->z, s->z_len);
			o->len += s->z_len;
			s->used = ++z->tick;
			z->st.blocks_reused++;
			return 0;
		}
		if (!lru || s->used < lru->used)
			lru = s;
	}
	r = frame_put(z, o, text, len);
	if (r < 0 || !lru)
		return r;
	/* Kept for the next node; without memory for the copy it is just not cached. */
	slot_clear(z, lru);
	lru->text = malloc(len);
	lru->z = malloc(o->len - start);
	if (!lru->text || !lru->z) {
		free(lru->text);
		free(lru->z);
		lru->text = NULL;
		lru->z = NULL;
		return 0;
	}
	memcpy(lru->text, text, len);
	lru->text_len = len;
	memcpy(lru->z, o->p + start, o->len - start);
	lru->z_len = o->len - start;
	lru->used = ++z->tick;
	z->st.cached += lru->text_len + lru->z_len;
	return 0;
}

static int scratch_reserve(struct mapzc *z, size_t n)
{
	char *p;

	if (n <= z->scratch_cap)
		return 0;
	p = realloc(z->scratch, n);
	if (!p)
		return -ENOMEM;
	z->scratch = p;
	z->scratch_cap = n;
	return 0;
}

int mapzc_netmap(struct mapzc *z, uint64_t tailnet, const char *head, size_t head_len,
		 const struct mapzc_peer *peers, size_t n_peers, uint32_t own_block,
		 const char *tail, size_t tail_len, uint8_t **ret, size_t *ret_len)
{
	struct obuf o = {0};
	size_t total = head_len + tail_len, i, j;
	int r;

	for (i = 0; i < n_peers; i++)
		total += peers[i].len + (i ? 1 : 0);
	r = -EMSGSIZE;
	if (total > CTRL_MSG_MAX)
		goto out;
	r = frame_put(z, &o, head, head_len);
	for (i = 0; r == 0 && i < n_peers; i = j) {
		uint32_t b = peers[i].block;
		size_t len = 0, need = 0;

		for (j = i; j < n_peers && peers[j].block == b; j++)
			need += peers[j].len + 1;
		r = scratch_reserve(z, need);
		if (r < 0)
			break;
		/* The comma before a record belongs to its block: the text is what the join has. */
		for (j = i; j < n_peers && peers[j].block == b; j++) {
			if (j)
				z->scratch[len++] = ',';
			memcpy(z->scratch + len, peers[j].p, peers[j].len);
			len += peers[j].len;
		}
		r = block_put(z, &o, tailnet, b, z->scratch, len, b != own_block);
	}
	if (r == 0)
		r = frame_put(z, &o, tail, tail_len);
	if (r < 0)
		goto out;
	z->st.maps++;
	z->st.bytes_in += total;
	z->st.bytes_out += o.len;
	*ret = o.p;
	*ret_len = o.len;
	o.p = NULL;
out:
	free(o.p);
	return r;
}
