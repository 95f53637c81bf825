// SPDX-License-Identifier: MIT
/*
 * Backend-independent half of the store: the write queue, the writer thread
 * that group-commits, and completion delivery (see store.h).
 *
 * A request moves queue -> (writer) batch -> the loop's mailbox -> its done
 * callback on the loop thread. Sync requests skip the mailbox: the writer
 * signals their condition variable.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "control/store.h"
#include "crypto/crypto.h"

struct req {
	struct req *next;
	struct loop_msg msg; /* the completion, on the loop thread */
	struct store_op op;
	store_done_fn done;
	void *ctx;
	int err;
	uint64_t id;
	/* sync requests */
	bool sync, finished;
};

struct store {
	const struct store_backend *be;
	void *wr, *rd;   /* writer-thread connection, read connection */
	uint64_t origin; /* names this instance in the changes table */

	pthread_mutex_t lock;
	pthread_cond_t work;     /* queue not empty, or stopping */
	pthread_cond_t progress; /* a batch finished */
	struct req *head, **tail;
	size_t queued;
	uint64_t submitted, completed; /* request counters for store_flush */
	bool stopping;
	pthread_t thread;
	bool thread_started;

	struct loop_mailbox done; /* completions; usable once attached */
	bool attached;

	pthread_mutex_t rd_lock; /* the read connection is used from any thread */
	struct store_stats stats;
};

static void *writer_main(void *arg)
{
	struct store *s = arg;
	struct store_op *ops;
	struct req **reqs;
	int *errs;
	uint64_t *ids;

	ops = malloc(sizeof(*ops) * STORE_BATCH_MAX);
	reqs = malloc(sizeof(*reqs) * STORE_BATCH_MAX);
	errs = malloc(sizeof(*errs) * STORE_BATCH_MAX);
	ids = malloc(sizeof(*ids) * STORE_BATCH_MAX);
	if (!ops || !reqs || !errs || !ids) {
		log_err("store: writer out of memory");
		abort();
	}
	pthread_mutex_lock(&s->lock);
	for (;;) {
		size_t n = 0, i, failed = 0;
		int r;

		while (!s->head && !s->stopping)
			pthread_cond_wait(&s->work, &s->lock);
		if (!s->head)
			break;
		while (s->head && n < STORE_BATCH_MAX) {
			reqs[n] = s->head;
			s->head = s->head->next;
			n++;
		}
		if (!s->head)
			s->tail = &s->head;
		s->queued -= n;
		pthread_mutex_unlock(&s->lock);

		for (i = 0; i < n; i++) {
			ops[i] = reqs[i]->op;
			errs[i] = 0;
			ids[i] = 0;
		}
		r = s->be->apply(s->wr, ops, n, s->origin, errs, ids);
		for (i = 0; i < n; i++) {
			reqs[i]->err = r < 0 ? r : errs[i];
			reqs[i]->id = r < 0 ? 0 : ids[i];
			if (reqs[i]->err < 0)
				failed++;
		}

		pthread_mutex_lock(&s->lock);
		if (r == 0)
			s->stats.commits++;
		s->stats.ops += n;
		s->stats.failed += failed;
		/* Queued before `completed` moves: store_flush promises the completions are. */
		for (i = 0; i < n; i++) {
			struct req *q = reqs[i];

			if (q->sync)
				q->finished = true;
			else
				loop_mailbox_post(&s->done, &q->msg);
		}
		s->completed += n;
		pthread_cond_broadcast(&s->progress);
	}
	pthread_mutex_unlock(&s->lock);
	free(ops);
	free(reqs);
	free(errs);
	free(ids);
	return NULL;
}

int store_open_backend(const struct store_backend *be, const char *path, struct store **ret)
{
	struct store *s;
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->be = be;
	s->tail = &s->head;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->rd_lock, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->progress, NULL);
	r = crypto_random(&s->origin, sizeof(s->origin));
	if (r < 0)
		goto out;
	s->origin &= INT64_MAX; /* SQLite integers are signed */
	if (!s->origin)
		s->origin = 1;
	/* The first open creates and migrates; the second finds the schema current. */
	r = be->open(path, &s->wr);
	if (r < 0)
		goto out;
	r = be->open(path, &s->rd);
	if (r < 0)
		goto out;
	r = -pthread_create(&s->thread, NULL, writer_main, s);
	if (r < 0)
		goto out;
	s->thread_started = true;
	*ret = s;
	return 0;
out:
	store_free(s);
	return r;
}

int store_open(const char *path, struct store **ret)
{
	return store_open_backend(&store_backend_sqlite, path, ret);
}

void store_free(struct store *s)
{
	if (!s)
		return;
	if (s->thread_started) {
		pthread_mutex_lock(&s->lock);
		s->stopping = true;
		pthread_cond_signal(&s->work);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thread, NULL);
	}
	/* Completions never run are dropped (req_drop): their writes are durable. */
	store_loop_detach(s);
	if (s->wr)
		s->be->close(s->wr);
	if (s->rd)
		s->be->close(s->rd);
	pthread_cond_destroy(&s->work);
	pthread_cond_destroy(&s->progress);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->rd_lock);
	free(s);
}

static int enqueue(struct store *s, struct req *q)
{
	pthread_mutex_lock(&s->lock);
	if (s->queued >= STORE_QUEUE_MAX || s->stopping) {
		pthread_mutex_unlock(&s->lock);
		return -EAGAIN;
	}
	q->next = NULL;
	*s->tail = q;
	s->tail = &q->next;
	s->queued++;
	s->submitted++;
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* An asynchronous request and what its op owns (a flow batch's bytes). */
static void req_free(struct req *q)
{
	if (q->op.kind == STORE_OP_FLOW_BATCH)
		free(q->op.flow.batch);
	free(q);
}

static void req_done(struct loop_msg *m)
{
	struct req *q = container_of(m, struct req, msg);

	if (q->done)
		q->done(q->ctx, q->err, q->id);
	req_free(q);
}

static void req_drop(struct loop_msg *m)
{
	req_free(container_of(m, struct req, msg));
}

int store_submit(struct store *s, const struct store_op *op, store_done_fn done, void *ctx)
{
	struct req *q;
	int r;

	if (!s->attached)
		return -ENOTCONN;
	if (op->kind == STORE_OP_POLICY_SET || op->mcert_der)
		return -EINVAL; /* its text, a certificate's DER: not copied; store_write only */
	q = malloc(sizeof(*q));
	if (!q)
		return -ENOMEM;
	memset(q, 0, offsetof(struct req, op));
	q->msg = (struct loop_msg){.run = req_done, .drop = req_drop};
	q->op = *op;
	q->done = done;
	q->ctx = ctx;
	q->sync = false;
	q->finished = false;
	r = enqueue(s, q);
	if (r < 0)
		free(q);
	return r;
}

int store_write_audited(struct store *s, const struct store_op *op,
			const struct audit_entry *audit, uint64_t *ret_id)
{
	struct req q = { .op = *op, .sync = true };
	int r;

	q.op.audit = audit;
	r = enqueue(s, &q);
	if (r < 0)
		return r;
	pthread_mutex_lock(&s->lock);
	while (!q.finished)
		pthread_cond_wait(&s->progress, &s->lock);
	pthread_mutex_unlock(&s->lock);
	if (q.err < 0)
		return q.err;
	if (ret_id)
		*ret_id = q.id;
	return 0;
}

int store_write(struct store *s, const struct store_op *op, uint64_t *ret_id)
{
	return store_write_audited(s, op, NULL, ret_id);
}

void store_flush(struct store *s)
{
	uint64_t target;

	pthread_mutex_lock(&s->lock);
	target = s->submitted;
	while (s->completed < target)
		pthread_cond_wait(&s->progress, &s->lock);
	pthread_mutex_unlock(&s->lock);
}

int store_completions_run(struct store *s)
{
	return s->attached ? loop_mailbox_run(&s->done) : 0;
}

void store_loop_attach(struct store *s, struct loop *loop)
{
	loop_mailbox_init(loop, &s->done);
	s->attached = true;
}

void store_loop_detach(struct store *s)
{
	if (!s->attached)
		return;
	/* The writer may still post: from here on its posts are dropped, which frees them. */
	loop_mailbox_close(&s->done);
	s->attached = false;
}

void store_stats_get(struct store *s, struct store_stats *ret)
{
	pthread_mutex_lock(&s->lock);
	*ret = s->stats;
	pthread_mutex_unlock(&s->lock);
}

int store_load(struct store *s, struct store_snapshot *ret_snap)
{
	int r;

	pthread_mutex_lock(&s->rd_lock);
	r = s->be->load(s->rd, ret_snap);
	pthread_mutex_unlock(&s->rd_lock);
	return r;
}

void store_snapshot_free(struct store_snapshot *snap)
{
	if (!snap)
		return;
	free(snap->tailnets);
	free(snap->users);
	free(snap->nodes);
	if (snap->authkeys)
		crypto_wipe(snap->authkeys, snap->n_authkeys * sizeof(*snap->authkeys));
	free(snap->authkeys);
	memset(snap, 0, sizeof(*snap));
}

/* Synchronous convenience writes. */

int store_tailnet_create(struct store *s, struct control_tailnet *t)
{
	struct store_op op = { .kind = STORE_OP_TAILNET_CREATE, .tailnet = *t };

	return store_write(s, &op, &t->id);
}

int store_tailnet_update(struct store *s, const struct control_tailnet *t)
{
	struct store_op op = { .kind = STORE_OP_TAILNET_UPDATE, .tailnet = *t };

	return store_write(s, &op, NULL);
}

int store_user_create(struct store *s, struct control_user *u)
{
	struct store_op op = { .kind = STORE_OP_USER_CREATE, .user = *u };

	return store_write(s, &op, &u->id);
}

int store_node_insert(struct store *s, struct control_node *n)
{
	struct store_op op = { .kind = STORE_OP_NODE_INSERT, .node = *n };

	return store_write(s, &op, &n->id);
}

int store_node_update(struct store *s, const struct control_node *n)
{
	struct store_op op = {
		.kind = STORE_OP_NODE_UPDATE, .node = *n, .node_fields = STORE_NODE_ALL
	};

	return store_write(s, &op, NULL);
}

int store_node_delete(struct store *s, uint64_t id)
{
	struct store_op op = { .kind = STORE_OP_NODE_DELETE, .id = id };

	return store_write(s, &op, NULL);
}

int store_authkey_create(struct store *s, struct control_authkey *k)
{
	struct store_op op = { .kind = STORE_OP_AUTHKEY_CREATE, .authkey = *k };

	return store_write(s, &op, &k->id);
}

int store_authkey_update(struct store *s, const struct control_authkey *k)
{
	struct store_op op = { .kind = STORE_OP_AUTHKEY_UPDATE, .authkey = *k };

	return store_write(s, &op, NULL);
}

int store_authkey_delete(struct store *s, uint64_t id)
{
	struct store_op op = { .kind = STORE_OP_AUTHKEY_DELETE, .id = id };

	return store_write(s, &op, NULL);
}

int store_setting_set(struct store *s, const char *key, const void *value, size_t len)
{
	struct store_op op = { .kind = STORE_OP_SETTING_SET };

	if (strlen(key) >= sizeof(op.setting.key) || len > sizeof(op.setting.value))
		return -EINVAL;
	strcpy(op.setting.key, key);
	memcpy(op.setting.value, value, len);
	op.setting.len = len;
	return store_write(s, &op, NULL);
}

/* Point reads. */

#define RD(s, call)                                                                                \
	({                                                                                         \
		int _r;                                                                            \
		pthread_mutex_lock(&(s)->rd_lock);                                                 \
		_r = (call);                                                                       \
		pthread_mutex_unlock(&(s)->rd_lock);                                               \
		_r;                                                                                \
	})

int store_tailnet_get(struct store *s, uint64_t id, struct control_tailnet *ret)
{
	return RD(s, s->be->tailnet_get(s->rd, id, NULL, ret));
}

int store_tailnet_get_by_name(struct store *s, const char *name, struct control_tailnet *ret)
{
	return RD(s, s->be->tailnet_get(s->rd, 0, name, ret));
}

int store_user_get(struct store *s, uint64_t id, struct control_user *ret)
{
	return RD(s, s->be->user_get(s->rd, id, 0, NULL, ret));
}

int store_user_get_by_name(struct store *s, uint64_t tailnet_id, const char *name,
			   struct control_user *ret)
{
	return RD(s, s->be->user_get(s->rd, 0, tailnet_id, name, ret));
}

int store_node_get(struct store *s, uint64_t id, struct control_node *ret)
{
	return RD(s, s->be->node_get(s->rd, id, ret));
}

int store_authkey_get(struct store *s, uint64_t id, struct control_authkey *ret)
{
	return RD(s, s->be->authkey_get(s->rd, id, NULL, ret));
}

int store_authkey_get_by_prefix(struct store *s, const char *prefix, struct control_authkey *ret)
{
	return RD(s, s->be->authkey_get(s->rd, 0, prefix, ret));
}

int store_setting_get(struct store *s, const char *key, void *value, size_t cap)
{
	struct store_setting *st;
	int r;

	st = malloc(sizeof(*st));
	if (!st)
		return -ENOMEM;
	r = RD(s, s->be->setting_get(s->rd, key, st));
	if (r == 0) {
		memcpy(value, st->value, MIN(cap, st->len));
		r = (int)st->len;
	}
	crypto_wipe(st, sizeof(*st));
	free(st);
	return r;
}

int store_account_get(struct store *s, const char *email, struct control_account *ret)
{
	return RD(s, s->be->account_get(s->rd, email, ret));
}

int store_account_list(struct store *s, struct control_account **ret, size_t *ret_n)
{
	return RD(s, s->be->account_list(s->rd, ret, ret_n));
}

int store_ca_get(struct store *s, uint64_t tailnet_id, struct control_ca *ret)
{
	return RD(s, s->be->ca_get(s->rd, tailnet_id, ret));
}

int store_mcert_get(struct store *s, const char *serial, struct control_mcert *ret)
{
	return RD(s, s->be->mcert_get(s->rd, serial, ret));
}

int store_ca_list(struct store *s, struct control_ca **ret, size_t *ret_n)
{
	return RD(s, s->be->ca_list(s->rd, ret, ret_n));
}

int store_mcert_list(struct store *s, struct control_mcert **ret, size_t *ret_n)
{
	return RD(s, s->be->mcert_list(s->rd, ret, ret_n));
}

int store_mcert_der(struct store *s, const char *serial, uint8_t *ret, size_t cap)
{
	return RD(s, s->be->mcert_der(s->rd, serial, ret, cap));
}

int store_mcert_newer(struct store *s, uint64_t tailnet_id,
		      const uint8_t machine_key[NETMAP_KEY_LEN], const uint8_t pub[32],
		      int64_t not_after, int64_t now, struct control_mcert *ret)
{
	return RD(s, s->be->mcert_newer(s->rd, tailnet_id, machine_key, pub, not_after, now, ret));
}

int store_mcert_get_id(struct store *s, uint64_t id, struct control_mcert *ret)
{
	return RD(s, s->be->mcert_get_id(s->rd, id, ret));
}

int store_mcert_due(struct store *s, int64_t now, int64_t window_sec, struct control_mcert **ret,
		    size_t *ret_n)
{
	return RD(s, s->be->mcert_due(s->rd, now, window_sec, ret, ret_n));
}

int store_policy_get(struct store *s, uint64_t tailnet_id, char **ret, size_t *ret_len)
{
	return RD(s, s->be->policy_get(s->rd, tailnet_id, ret, ret_len));
}

int store_policy_set(struct store *s, uint64_t tailnet_id, const char *text, size_t len)
{
	struct store_op op = { .kind = STORE_OP_POLICY_SET };

	if (len > STORE_POLICY_MAX)
		return -EMSGSIZE;
	op.policy.tailnet_id = tailnet_id;
	op.policy.text = text;
	op.policy.len = len;
	return store_write(s, &op, NULL);
}

int store_changes_poll(struct store *s, uint64_t *cursor, struct store_change *ret, size_t cap)
{
	return RD(s, s->be->changes(s->rd, s->origin, cursor, ret, cap));
}

int store_changes_since(struct store *s, uint64_t seq, struct store_change *ret, size_t cap)
{
	return RD(s, s->be->changes_since(s->rd, seq, ret, cap));
}

int store_audit_anchor(struct store *s, uint64_t *ret_seq, uint8_t ret_hash[AUDIT_HASH_LEN])
{
	return RD(s, s->be->audit_anchor(s->rd, ret_seq, ret_hash));
}

int store_audit_read(struct store *s, uint64_t after_seq, int64_t since, size_t max,
		     int (*fn)(void *arg, const struct audit_entry *e), void *arg)
{
	return RD(s, s->be->audit_read(s->rd, after_seq, since, max, fn, arg));
}

int store_flow_chain(struct store *s, uint64_t node_id, uint64_t *ret_seq,
		     uint8_t ret_hash[FLOWBATCH_HASH_LEN], uint8_t ret_key[32])
{
	return RD(s, s->be->flow_chain(s->rd, node_id, ret_seq, ret_hash, ret_key));
}

int store_flow_batches(struct store *s, uint64_t after_node, uint64_t after_id,
		       int (*fn)(void *arg, const struct store_flow_row *b), void *arg)
{
	return RD(s, s->be->flow_batches(s->rd, after_node, after_id, fn, arg));
}

int store_flow_totals(struct store *s, uint64_t node_id, uint64_t since_ns,
		      int (*fn)(void *arg, const struct store_flow_total *t), void *arg)
{
	return RD(s, s->be->flow_totals(s->rd, node_id, since_ns, fn, arg));
}

int store_flow_anchors(struct store *s, int (*fn)(void *arg, const struct flows_anchor *a),
		       void *arg)
{
	return RD(s, s->be->flow_anchors(s->rd, fn, arg));
}
