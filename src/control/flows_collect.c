// SPDX-License-Identifier: MIT
/*
 * The collector (flows_collect.h). A node's entry:
 *
 *   unknown --(first batch: chain read from the store)--> idle
 *   idle --(admitted: chain advanced, write submitted)--> writing
 *   writing --(durable)--> idle;  writing --(write failed: chain put back)--> idle
 *
 * A batch that arrives while its node is writing is answered "busy": the node
 * sends one batch at a time and waits for the answer, so only a confused or
 * hostile node meets that.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/hmap.h"
#include "base/log.h"
#include "base/util.h"
#include "control/flows_collect.h"
#include "control/store.h"

struct entry {
	struct hmap_node node;
	uint64_t node_id;
	struct flows_chain chain;
	uint8_t key[FLOWBATCH_KEY_LEN]; /* the key the chain's last batch verified under */
	/* The write in flight. */
	struct flows_collector *fc;
	bool writing;
	struct flows_chain before; /* put back if it fails */
	uint8_t key_before[FLOWBATCH_KEY_LEN];
	size_t len;
	uint64_t seq, n_records;
	flows_collect_done_fn done;
	void *ctx;
};

struct flows_collector {
	struct store *st;
	struct hmap nodes;
	struct flows_collect_stats stats;
};

int flows_collector_new(struct store *st, struct flows_collector **ret)
{
	struct flows_collector *fc = calloc(1, sizeof(*fc));

	if (!fc)
		return -ENOMEM;
	if (hmap_init(&fc->nodes) < 0) {
		free(fc);
		return -ENOMEM;
	}
	fc->st = st;
	*ret = fc;
	return 0;
}

void flows_collector_free(struct flows_collector *fc)
{
	struct hmap_node *h, *n;

	if (!fc)
		return;
	for (h = hmap_first(&fc->nodes); h; h = n) {
		struct entry *e = container_of(h, struct entry, node);

		n = hmap_next(&fc->nodes, h);
		/* A write in flight completes later: it finds its entry cut loose. */
		if (e->writing) {
			e->fc = NULL;
			e->done = NULL;
		} else {
			free(e);
		}
	}
	hmap_fini(&fc->nodes);
	free(fc);
}

static struct entry *entry_find(struct flows_collector *fc, uint64_t node_id)
{
	uint64_t h = hmap_hash(&fc->nodes, &node_id, sizeof(node_id));

	for (struct hmap_node *n = hmap_first_with_hash(&fc->nodes, h); n;
	     n = hmap_next_with_hash(n)) {
		struct entry *e = container_of(n, struct entry, node);

		if (e->node_id == node_id)
			return e;
	}
	return NULL;
}

/* The node's entry, its chain read from the store the first time. NULL: out of memory or I/O. */
static struct entry *entry_get(struct flows_collector *fc, uint64_t node_id)
{
	struct entry *e = entry_find(fc, node_id);
	int r;

	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->node_id = node_id;
	e->fc = fc;
	r = store_flow_chain(fc->st, node_id, &e->chain.last_seq, e->chain.last_hash, e->key);
	if (r < 0) {
		log_ratelimited(LOG_LEVEL_WARN, "flows: node %llu: cannot read its chain: %s",
				(unsigned long long)node_id, strerror(-r));
		free(e);
		return NULL;
	}
	hmap_insert(&fc->nodes, &e->node, hmap_hash(&fc->nodes, &node_id, sizeof(node_id)));
	return e;
}

static void written(void *arg, int err, uint64_t unused)
{
	struct entry *e = arg;
	struct flows_collector *fc = e->fc;
	const char *result = "stored";

	(void)unused;
	e->writing = false;
	if (!fc) {
		free(e); /* the collector went first */
		return;
	}
	fc->stats.inflight_bytes -= e->len;
	if (err < 0) {
		/* Not durable: as if it never came, so the node's resend is admitted. */
		e->chain = e->before;
		memcpy(e->key, e->key_before, sizeof(e->key));
		fc->stats.store_failed++;
		result = "busy";
		log_ratelimited(LOG_LEVEL_WARN, "flows: node %llu: batch %llu not stored: %s",
				(unsigned long long)e->node_id, (unsigned long long)e->seq,
				strerror(-err));
	} else {
		fc->stats.stored++;
		fc->stats.records += e->n_records;
	}
	if (e->done)
		e->done(e->ctx, e->seq, result);
	e->done = NULL;
	e->ctx = NULL;
}

static const char *refusal(int r)
{
	switch (r) {
	case -EMSGSIZE:
		return "oversized";
	case -EBADMSG:
		return "malformed";
	case -EPERM:
		return "wrong_sender";
	case -EKEYREJECTED:
		return "bad_signature";
	case -EALREADY:
		return "replayed";
	}
	return "error";
}

int flows_collector_submit(struct flows_collector *fc, uint64_t node_id, uint64_t tailnet_id,
			   const uint8_t *pub, uint8_t *buf, size_t len, int64_t now_s,
			   flows_collect_done_fn done, void *ctx, uint64_t *ret_seq,
			   const char **ret_result)
{
	struct store_op op = {.kind = STORE_OP_FLOW_BATCH};
	struct flowbatch b = {0};
	struct entry *e;
	unsigned flags;
	int r;

	*ret_seq = 0;
	/* The seq for the answer, if it parses at all; admission checks everything again. */
	if (flowbatch_peek(buf, len, &b) == 0)
		*ret_seq = b.seq;
	e = entry_get(fc, node_id);
	if (!e || e->writing || fc->stats.inflight_bytes + len > FLOWS_COLLECT_INFLIGHT_MAX) {
		fc->stats.busy++;
		*ret_result = "busy";
		r = -EBUSY;
		goto out;
	}
	e->before = e->chain;
	memcpy(e->key_before, e->key, sizeof(e->key));
	/* A new audit key (the node lost its key file): its chain starts over at seq 1. */
	if (pub && memcmp(pub, e->key, FLOWBATCH_KEY_LEN) != 0)
		memset(&e->chain, 0, sizeof(e->chain));
	r = flows_admit(&fc->stats.admit, &e->chain, node_id, pub, buf, len, &b, &flags);
	if (r < 0) {
		e->chain = e->before;
		*ret_result = refusal(r);
		goto out;
	}
	memcpy(e->key, pub, FLOWBATCH_KEY_LEN);
	op.flow = (struct store_flow){.node_id = node_id,
				      .tailnet_id = tailnet_id,
				      .seq = b.seq,
				      .received = now_s,
				      .flags = flags,
				      .batch = buf,
				      .len = len};
	memcpy(op.flow.audit_key, pub, FLOWBATCH_KEY_LEN);
	r = store_submit(fc->st, &op, written, e);
	if (r < 0) {
		e->chain = e->before;
		memcpy(e->key, e->key_before, sizeof(e->key));
		fc->stats.busy++;
		*ret_result = "busy";
		goto out;
	}
	buf = NULL; /* the store's now */
	e->writing = true;
	e->len = len;
	e->seq = b.seq;
	e->n_records = b.n_records;
	e->done = done;
	e->ctx = ctx;
	fc->stats.inflight_bytes += len;
	r = 0;
out:
	free(buf);
	return r;
}

void flows_collector_forget(struct flows_collector *fc, uint64_t node_id, void *ctx)
{
	struct entry *e = entry_find(fc, node_id);

	if (e && e->writing && e->ctx == ctx) {
		e->done = NULL;
		e->ctx = NULL;
	}
}

void flows_collector_stats(const struct flows_collector *fc, struct flows_collect_stats *ret)
{
	*ret = fc->stats;
}

void flows_collector_metrics_write(const struct flows_collector *fc, FILE *f)
{
	const struct flows_collect_stats *s = &fc->stats;
	const struct {
		const char *result;
		uint64_t n;
	} res[] = {
	    {"stored", s->stored},
	    {"oversized", s->admit.oversized},
	    {"malformed", s->admit.malformed},
	    {"wrong_sender", s->admit.wrong_sender},
	    {"bad_signature", s->admit.bad_signature},
	    {"replayed", s->admit.replayed},
	    {"busy", s->busy},
	    {"store_failed", s->store_failed},
	};

	fprintf(f, "# HELP trellis_control_flow_batches_total Flow-log batches from nodes, by "
		   "what became of them.\n# TYPE trellis_control_flow_batches_total counter\n");
	for (size_t i = 0; i < ARRAY_SIZE(res); i++)
		fprintf(f, "trellis_control_flow_batches_total{result=\"%s\"} %llu\n",
			res[i].result, (unsigned long long)res[i].n);
	fprintf(f,
		"# HELP trellis_control_flow_batches_flagged_total Admitted batches after a "
		"sequence gap or with a broken chain.\n"
		"# TYPE trellis_control_flow_batches_flagged_total counter\n"
		"trellis_control_flow_batches_flagged_total{flag=\"gap\"} %llu\n"
		"trellis_control_flow_batches_flagged_total{flag=\"chain_broken\"} %llu\n"
		"# HELP trellis_control_flow_records_total Flow records stored.\n"
		"# TYPE trellis_control_flow_records_total counter\n"
		"trellis_control_flow_records_total %llu\n"
		"# HELP trellis_control_flow_inflight_bytes Batch bytes waiting for the disk.\n"
		"# TYPE trellis_control_flow_inflight_bytes gauge\n"
		"trellis_control_flow_inflight_bytes %llu\n",
		(unsigned long long)s->admit.gaps, (unsigned long long)s->admit.chain_breaks,
		(unsigned long long)s->records, (unsigned long long)s->inflight_bytes);
}
