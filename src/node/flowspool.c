// SPDX-License-Identifier: MIT
/* The node's flow-log chain and spool (flowspool.h). */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/pages.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "node/flowspool.h"
#include "node/state.h"

#define CHAIN_FILE "chain"
#define CHAIN_LEN (8 + 8 + 4 + FLOWBATCH_HASH_LEN)
#define SEQ_DIGITS 20

struct flowspool {
	pthread_mutex_t mu;
	char dir[PATH_MAX / 2];
	uint8_t priv[32];
	/* The chain: the last batch made. */
	uint64_t node_id, seq;
	uint32_t dropped;
	uint8_t hash[FLOWBATCH_HASH_LEN];
	/* Spooled seqs, oldest first: a ring of max. */
	uint64_t *ring;
	unsigned max, head, n;
	struct flowspool_stats st;
};

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static void batch_path(const struct flowspool *sp, uint64_t seq, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%0*" PRIu64, sp->dir, SEQ_DIGITS, seq);
}

static int chain_save(struct flowspool *sp)
{
	char path[PATH_MAX];
	uint8_t b[CHAIN_LEN];

	put64(b, sp->node_id);
	put64(b + 8, sp->seq);
	b[16] = (uint8_t)(sp->dropped >> 24);
	b[17] = (uint8_t)(sp->dropped >> 16);
	b[18] = (uint8_t)(sp->dropped >> 8);
	b[19] = (uint8_t)sp->dropped;
	memcpy(b + 20, sp->hash, FLOWBATCH_HASH_LEN);
	snprintf(path, sizeof(path), "%s/" CHAIN_FILE, sp->dir);
	return state_file_write_atomic(path, b, sizeof(b), 0600);
}

static int chain_load(struct flowspool *sp)
{
	char path[PATH_MAX], *buf = NULL;
	size_t len = 0;
	int r;

	snprintf(path, sizeof(path), "%s/" CHAIN_FILE, sp->dir);
	r = state_file_read(path, CHAIN_LEN, &buf, &len);
	if (r == -ENOENT)
		return 0;
	if (r == 0 && len != CHAIN_LEN)
		r = -EBADMSG;
	if (r == 0) {
		const uint8_t *b = (const uint8_t *)buf;

		sp->node_id = get64(b);
		sp->seq = get64(b + 8);
		sp->dropped =
		    (uint32_t)b[16] << 24 | (uint32_t)b[17] << 16 | (uint32_t)b[18] << 8 | b[19];
		memcpy(sp->hash, b + 20, FLOWBATCH_HASH_LEN);
	}
	free(buf);
	return r;
}

static int seq_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* A spooled batch's bytes, malloc'd. */
static int batch_read(const struct flowspool *sp, uint64_t seq, uint8_t **ret, size_t *ret_len)
{
	char path[PATH_MAX];

	batch_path(sp, seq, path, sizeof(path));
	return state_file_read(path, FLOWBATCH_MAX_LEN, (char **)ret, ret_len);
}

static void batch_remove(struct flowspool *sp, uint64_t seq)
{
	char path[PATH_MAX];

	batch_path(sp, seq, path, sizeof(path));
	if (unlink(path) < 0 && errno != ENOENT)
		log_ratelimited(LOG_LEVEL_WARN, "flows: %s: %s", path, strerror(errno));
}

/* The batch files in the directory, oldest first; the newest moves the chain if ahead. */
static int spool_scan(struct flowspool *sp)
{
	DIR *d = opendir(sp->dir);
	struct dirent *e;
	uint64_t *all = NULL;
	size_t n = 0, cap = 0;
	int r = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d))) {
		char *end;
		uint64_t seq;

		if (strlen(e->d_name) != SEQ_DIGITS)
			continue;
		seq = strtoull(e->d_name, &end, 10);
		if (*end || !seq)
			continue;
		if (n == cap) {
			uint64_t *v = realloc(all, (cap ? cap * 2 : 64) * sizeof(*v));

			if (!v) {
				r = -ENOMEM;
				goto out;
			}
			all = v;
			cap = cap ? cap * 2 : 64;
		}
		all[n++] = seq;
	}
	if (n)
		qsort(all, n, sizeof(*all), seq_cmp);
	/* The newest batch file is ahead of the chain file: a crash between the two writes. */
	if (n && all[n - 1] > sp->seq) {
		uint8_t *b = NULL;
		size_t len = 0;
		struct flowbatch h;

		if (batch_read(sp, all[n - 1], &b, &len) == 0 && flowbatch_peek(b, len, &h) == 0) {
			sp->node_id = h.node_id;
			sp->seq = h.seq;
			sp->dropped = h.batches_dropped;
			flowbatch_hash(b, len, sp->hash);
		}
		free(b);
	}
	/* Over the bound (a smaller max than before): the oldest go, counted. */
	for (size_t i = 0; i < n; i++) {
		if (n - i > sp->max) {
			batch_remove(sp, all[i]);
			sp->dropped++;
			continue;
		}
		sp->ring[(sp->head + sp->n++) % sp->max] = all[i];
	}
out:
	free(all);
	closedir(d);
	return r;
}

int flowspool_open(const char *dir, const uint8_t priv[32], unsigned max, struct flowspool **ret)
{
	struct flowspool *sp = calloc(1, sizeof(*sp));
	int r;

	if (!sp)
		return -ENOMEM;
	pthread_mutex_init(&sp->mu, NULL);
	memcpy(sp->priv, priv, 32);
	sp->max = max ? max : FLOWSPOOL_DEFAULT_MAX;
	/* Sized for max spooled batches, written as far as they go (base/pages.h). */
	sp->ring = pages_zalloc(sp->max, sizeof(*sp->ring));
	if (!sp->ring || snprintf(sp->dir, sizeof(sp->dir), "%s", dir) >= (int)sizeof(sp->dir)) {
		r = !sp->ring ? -ENOMEM : -ENAMETOOLONG;
		goto fail;
	}
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		goto fail;
	}
	r = chain_load(sp);
	if (r == 0)
		r = spool_scan(sp);
	if (r < 0)
		goto fail;
	*ret = sp;
	return 0;
fail:
	log_err("flows: %s: %s", dir, strerror(-r));
	flowspool_free(sp);
	return r;
}

void flowspool_free(struct flowspool *sp)
{
	if (!sp)
		return;
	pthread_mutex_destroy(&sp->mu);
	pages_free(sp->ring, sp->max, sizeof(*sp->ring));
	crypto_wipe(sp, sizeof(*sp));
	free(sp);
}

/* One batch: signed, chained, written, then the chain moves. Under the lock. */
static int add_one(struct flowspool *sp, uint64_t node_id, uint64_t start_ns, uint64_t end_ns,
		   uint32_t flows_dropped, const struct flowbatch_record *recs, unsigned n)
{
	struct flowbatch b = {.node_id = node_id,
			      .start_ns = start_ns,
			      .end_ns = end_ns,
			      .flows_dropped = flows_dropped,
			      .n_records = (uint16_t)n,
			      .records = recs};
	uint8_t *buf = malloc(FLOWBATCH_LEN(n));
	char path[PATH_MAX];
	int len, r;

	if (!buf)
		return -ENOMEM;
	/* A new node (registered anew): its chain starts over. */
	if (node_id != sp->node_id) {
		sp->node_id = node_id;
		sp->seq = 0;
		memset(sp->hash, 0, sizeof(sp->hash));
	}
	if (sp->n == sp->max) {
		batch_remove(sp, sp->ring[sp->head]);
		sp->head = (sp->head + 1) % sp->max;
		sp->n--;
		sp->dropped++;
	}
	b.seq = sp->seq + 1;
	b.batches_dropped = sp->dropped;
	memcpy(b.prev_hash, sp->hash, FLOWBATCH_HASH_LEN);
	len = flowbatch_encode(&b, sp->priv, buf, FLOWBATCH_LEN(n));
	if (len < 0) {
		r = len;
		goto out;
	}
	batch_path(sp, b.seq, path, sizeof(path));
	r = state_file_write_atomic(path, buf, (size_t)len, 0600);
	if (r < 0)
		goto out;
	sp->seq = b.seq;
	flowbatch_hash(buf, (size_t)len, sp->hash);
	sp->ring[(sp->head + sp->n++) % sp->max] = b.seq;
	r = chain_save(sp);
out:
	free(buf);
	return r;
}

int flowspool_add(struct flowspool *sp, uint64_t node_id, uint64_t start_ns, uint64_t end_ns,
		  uint32_t flows_dropped, const struct flowbatch_record *recs, unsigned n)
{
	unsigned off = 0;
	int r = 0;

	pthread_mutex_lock(&sp->mu);
	do {
		unsigned k = MIN(n - off, (unsigned)FLOWSPOOL_RECORDS_MAX);

		r = add_one(sp, node_id, start_ns, end_ns, off ? 0 : flows_dropped, recs + off, k);
		off += k;
	} while (r == 0 && off < n);
	pthread_mutex_unlock(&sp->mu);
	if (r < 0)
		log_ratelimited(LOG_LEVEL_WARN, "flows: cannot spool a batch in %s: %s", sp->dir,
				strerror(-r));
	return r;
}

size_t flowspool_next(struct flowspool *sp, uint8_t *buf, size_t cap)
{
	uint8_t *b = NULL;
	size_t len = 0, ret = 0;

	pthread_mutex_lock(&sp->mu);
	while (sp->n) {
		uint64_t seq = sp->ring[sp->head];

		if (batch_read(sp, seq, &b, &len) == 0 && len <= cap) {
			memcpy(buf, b, len);
			ret = len;
			break;
		}
		/* Unreadable (removed by hand, a disk error): dropped, and counted. */
		log_ratelimited(LOG_LEVEL_WARN, "flows: spooled batch %" PRIu64 " unreadable", seq);
		batch_remove(sp, seq);
		sp->head = (sp->head + 1) % sp->max;
		sp->n--;
		sp->dropped++;
		free(b);
		b = NULL;
	}
	pthread_mutex_unlock(&sp->mu);
	free(b);
	return ret;
}

void flowspool_ack(struct flowspool *sp, uint64_t seq, const char *result)
{
	if (!strcmp(result, "busy"))
		return;
	pthread_mutex_lock(&sp->mu);
	if (sp->n && sp->ring[sp->head] == seq) {
		batch_remove(sp, seq);
		sp->head = (sp->head + 1) % sp->max;
		sp->n--;
		if (!strcmp(result, "stored") || !strcmp(result, "replayed")) {
			sp->st.acked++;
		} else {
			sp->st.refused++;
			log_ratelimited(LOG_LEVEL_WARN,
					"flows: the collector refused batch %" PRIu64 ": %s", seq,
					result);
		}
	}
	pthread_mutex_unlock(&sp->mu);
}

void flowspool_stats(struct flowspool *sp, struct flowspool_stats *ret)
{
	pthread_mutex_lock(&sp->mu);
	*ret = sp->st;
	ret->seq = sp->seq;
	ret->batches_dropped = sp->dropped;
	ret->spooled = sp->n;
	pthread_mutex_unlock(&sp->mu);
}
