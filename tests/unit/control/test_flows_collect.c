/* SPDX-License-Identifier: MIT */
/*
 * The flow-log collector end to end on a real SQLite store: batches admitted
 * and written, refusals answered and counted (bad signature, replay, another
 * node's name, a second batch while one is written), the chain read back after
 * a restart; both ends paired (confirmed, under-reported, one-sided, no-peer, someone
 * speaking for another); and `audit verify` over the stored chains: an edited
 * or deleted record, an edited or deleted batch, each named; a gap the node
 * signed as dropped passes. Retention: pruning in chunks leaves per node an
 * anchor the chain goes on from (at the collector too, after a restart), and
 * verify still names a batch deleted, edited or reordered after the anchor, and
 * an anchor edited or deleted (the digest in the flows.prune audit entry).
 * `flows prune` by hand (admin API and op): the same chunks, anchors and entries
 * under the admin's name, `audit verify` clean after it.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include <jansson.h>

#include "base/loop.h"
#include "control/admin_api.h"
#include "control/admin_op.h"
#include "control/flows_collect.h"
#include "control/flows_prune.h"
#include "control/flows_query.h"
#include "control/mapper.h"
#include "control/registry.h"
#include "control/store.h"
#include "crypto/crypto.h"

struct ctx {
	char dir[64];
	char path[128];
	struct loop *loop;
	struct store *s;
	struct flows_collector *fc;
	uint8_t priv[3][32], pub[3][32];
	uint8_t last[3][FLOWBATCH_HASH_LEN]; /* each node's last batch hash */
	/* The last answer delivered. */
	unsigned answers;
	uint64_t ack_seq;
	char ack[32];
	int64_t now; /* when batches arrive (Unix seconds) */
	bool no_peer; /* make's records name no peer (the node had none for the address) */
};

static int setup(void **state)
{
	struct ctx *c = calloc(1, sizeof(*c));

	strcpy(c->dir, "/tmp/trellis-flows-XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	snprintf(c->path, sizeof(c->path), "%s/control.db", c->dir);
	c->loop = loop_new();
	assert_non_null(c->loop);
	assert_int_equal(store_open(c->path, &c->s), 0);
	store_loop_attach(c->s, c->loop);
	assert_int_equal(flows_collector_new(c->s, &c->fc), 0);
	c->now = 1000;
	for (int i = 0; i < 3; i++) {
		memset(c->priv[i], 0x10 + i, 32);
		assert_int_equal(ed25519_public_from_private(c->pub[i], c->priv[i]), 0);
	}
	*state = c;
	return 0;
}

static void close_all(struct ctx *c)
{
	store_flush(c->s);
	store_completions_run(c->s);
	store_loop_detach(c->s);
	store_free(c->s);
	flows_collector_free(c->fc);
	c->s = NULL;
	c->fc = NULL;
}

static int teardown(void **state)
{
	struct ctx *c = *state;
	char cmd[128];

	if (c->s)
		close_all(c);
	loop_free(c->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", c->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", c->dir);
	free(c);
	return 0;
}

static void done(void *arg, uint64_t seq, const char *result)
{
	struct ctx *c = arg;

	c->answers++;
	c->ack_seq = seq;
	snprintf(c->ack, sizeof(c->ack), "%s", result);
}

/* 100.64.0.N as the collector stores it (IPv4 mapped). */
static void addr(uint8_t a[16], unsigned n)
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff;
	a[12] = 100;
	a[13] = 64;
	a[15] = (uint8_t)n;
}

/*
 * Node `node` (1 or 2, address 100.64.0.node) reports one TCP flow with the other
 * node: tx/rx packets and bytes as given. Signed with signer's key; linked to the
 * node's last batch unless prev is given.
 */
static uint8_t *make(struct ctx *c, unsigned node, unsigned signer, uint64_t seq, uint64_t tx_p,
		     uint64_t tx_b, uint64_t rx_p, uint64_t rx_b, uint32_t dropped, size_t *ret_len)
{
	struct flowbatch_record r = {.proto = 6};
	struct flowbatch b = {.node_id = node, .seq = seq, .n_records = 1, .records = &r};
	uint8_t *buf = malloc(FLOWBATCH_LEN(1));
	unsigned other = node == 1 ? 2 : 1;
	int n;

	assert_non_null(buf);
	addr(r.src, node);
	addr(r.dst, other);
	r.src_port = node == 1 ? 40000 : 5201;
	r.dst_port = node == 1 ? 5201 : 40000;
	r.flags = node == 2 ? FLOWBATCH_F_INBOUND : 0;
	memset(r.peer_key, c->no_peer ? 0 : (int)other, 32);
	r.tx_packets = tx_p;
	r.tx_bytes = tx_b;
	r.rx_packets = rx_p;
	r.rx_bytes = rx_b;
	r.first_ns = 1000000000ULL * seq;
	r.last_ns = r.first_ns + 500;
	b.batches_dropped = dropped;
	memcpy(b.prev_hash, c->last[node], FLOWBATCH_HASH_LEN);
	n = flowbatch_encode(&b, c->priv[signer], buf, FLOWBATCH_LEN(1));
	assert_true(n > 0);
	*ret_len = (size_t)n;
	return buf;
}

/* Submits and, when admitted, waits for the write: the answer the node gets. */
static const char *submit(struct ctx *c, unsigned sender, uint8_t *buf, size_t len)
{
	const char *result = NULL;
	uint64_t seq;
	unsigned before = c->answers;
	int r;

	r = flows_collector_submit(c->fc, sender, 1, c->pub[sender], buf, len, c->now, done, c,
				   &seq, &result);
	if (r < 0)
		return result;
	store_flush(c->s);
	store_completions_run(c->s);
	assert_int_equal(c->answers, before + 1);
	return c->ack;
}

/* Node's batch made, submitted, and remembered as its chain's last when stored. */
static const char *send_batch(struct ctx *c, unsigned node, uint64_t seq, uint64_t tx_p,
			      uint64_t tx_b, uint64_t rx_p, uint64_t rx_b)
{
	size_t len;
	uint8_t *buf = make(c, node, node, seq, tx_p, tx_b, rx_p, rx_b, 0, &len);
	uint8_t h[FLOWBATCH_HASH_LEN];
	const char *r;

	flowbatch_hash(buf, len, h);
	r = submit(c, node, buf, len);
	if (!strcmp(r, "stored"))
		memcpy(c->last[node], h, sizeof(h));
	return r;
}

static void test_admission(void **state)
{
	struct ctx *c = *state;
	struct flows_collect_stats st;
	const char *result;
	uint8_t *buf, *again;
	uint64_t seq;
	size_t len;

	assert_string_equal(send_batch(c, 1, 1, 10, 1000, 10, 1000), "stored");
	assert_string_equal(send_batch(c, 1, 2, 10, 1000, 10, 1000), "stored");
	/* The same batch again (its answer was lost): a replay, and the node drops it. */
	buf = make(c, 1, 1, 2, 10, 1000, 10, 1000, 0, &len);
	assert_string_equal(submit(c, 1, buf, len), "replayed");
	/* Signed by node 2 in node 1's name, sent on node 2's session: another's name. */
	buf = make(c, 1, 2, 3, 1, 1, 1, 1, 0, &len);
	assert_string_equal(submit(c, 2, buf, len), "wrong_sender");
	/* Node 1's id, node 2's key, on node 1's session: the signature fails. */
	buf = make(c, 1, 2, 3, 1, 1, 1, 1, 0, &len);
	assert_string_equal(submit(c, 1, buf, len), "bad_signature");
	buf = make(c, 1, 1, 3, 1, 1, 1, 1, 0, &len);
	assert_string_equal(submit(c, 1, buf, len - 1), "malformed");
	/* No audit key registered: nothing verifies. */
	buf = make(c, 1, 1, 3, 1, 1, 1, 1, 0, &len);
	assert_int_equal(
	    flows_collector_submit(c->fc, 1, 1, NULL, buf, len, 1000, done, c, &seq, &result),
	    -EKEYREJECTED);
	assert_string_equal(result, "bad_signature");
	/* A second batch while the first is written: busy, sent again later. */
	buf = make(c, 1, 1, 3, 1, 1, 1, 1, 0, &len);
	again = make(c, 1, 1, 3, 1, 1, 1, 1, 0, &len);
	assert_int_equal(
	    flows_collector_submit(c->fc, 1, 1, c->pub[1], buf, len, 1000, done, c, &seq, &result),
	    0);
	assert_int_equal(flows_collector_submit(c->fc, 1, 1, c->pub[1], again, len, 1000, done, c,
						&seq, &result),
			 -EBUSY);
	assert_string_equal(result, "busy");
	store_flush(c->s);
	store_completions_run(c->s);
	assert_string_equal(c->ack, "stored");
	assert_int_equal(c->ack_seq, 3);
	flows_collector_stats(c->fc, &st);
	assert_int_equal(st.stored, 3);
	assert_int_equal(st.records, 3);
	assert_int_equal(st.admit.replayed, 1);
	assert_int_equal(st.admit.wrong_sender, 1);
	assert_int_equal(st.admit.bad_signature, 2);
	assert_int_equal(st.admit.malformed, 1);
	assert_int_equal(st.busy, 1);
	assert_int_equal(st.inflight_bytes, 0);
	/* The refusals as /metrics shows them. */
	{
		char *text = NULL;
		size_t tlen = 0;
		FILE *f = open_memstream(&text, &tlen);

		assert_non_null(f);
		flows_collector_metrics_write(c->fc, f);
		assert_int_equal(fclose(f), 0);
		assert_non_null(strstr(
		    text, "trellis_control_flow_batches_total{result=\"bad_signature\"} 2\n"));
		assert_non_null(
		    strstr(text, "trellis_control_flow_batches_total{result=\"replayed\"} 1\n"));
		assert_non_null(strstr(text, "trellis_control_flow_records_total 3\n"));
		free(text);
	}

	/* A restarted server reads the chain back: seq 3 again is a replay, 4 goes on. */
	close_all(c);
	assert_int_equal(store_open(c->path, &c->s), 0);
	store_loop_attach(c->s, c->loop);
	assert_int_equal(flows_collector_new(c->s, &c->fc), 0);
	{
		uint64_t last;
		uint8_t key[32];

		assert_int_equal(store_flow_chain(c->s, 1, &last, c->last[1], key), 0);
		assert_int_equal(last, 3);
		assert_memory_equal(key, c->pub[1], 32);
	}
	assert_string_equal(send_batch(c, 1, 4, 1, 1, 1, 1), "stored");
}

struct seen {
	unsigned n, confirmed, mismatch, one_sided, no_peer, ambiguous;
	enum flows_verdict last;
};

static int count(void *arg, const struct flows_pairing *p)
{
	struct seen *s = arg;

	s->n++;
	s->confirmed += p->verdict == FLOWS_CONFIRMED;
	s->mismatch += p->verdict == FLOWS_MISMATCH;
	s->one_sided += p->verdict == FLOWS_ONE_SIDED;
	s->no_peer += p->verdict == FLOWS_NO_PEER;
	s->last = p->verdict;
	s->ambiguous += p->ambiguous;
	return 0;
}

static struct seen query(struct ctx *c, uint64_t node)
{
	struct seen s = {0};

	assert_int_equal(flows_query(c->s, node, 0, count, &s), 0);
	return s;
}

static void test_pairing(void **state)
{
	struct ctx *c = *state;
	struct seen s;

	/* One end only so far: one-sided. */
	assert_string_equal(send_batch(c, 1, 1, 1000, 1400000, 500, 26000), "stored");
	s = query(c, 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.one_sided, 1);
	/* The mirror image, with 5 packets lost on the way from 1 to 2: confirmed. */
	assert_string_equal(send_batch(c, 2, 1, 500, 26000, 995, 1393000), "stored");
	s = query(c, 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.confirmed, 1);
	/* Asked for node 2's flows: the same one flow. Node 3 has none. */
	assert_int_equal(query(c, 2).confirmed, 1);
	assert_int_equal(query(c, 3).n, 0);
	/* Node 2 then under-reports what it got by far: the totals disagree. */
	assert_string_equal(send_batch(c, 1, 2, 1000, 1400000, 0, 0), "stored");
	assert_string_equal(send_batch(c, 2, 2, 0, 0, 100, 140000), "stored");
	s = query(c, 0);
	assert_int_equal(s.n, 1);
	assert_int_equal(s.mismatch, 1);
	assert_int_equal(s.ambiguous, 0);
}

/* The verdict of the one flow the collector holds. */
static enum flows_verdict sole_verdict(struct ctx *c)
{
	struct seen s = query(c, 0);

	assert_int_equal(s.n, 1);
	return s.last;
}

/*
 * A sole report whose records name no peer is no-peer; one record of it that names a peer
 * makes it one-sided; the other end's report pairs with it as with any other.
 */
static void test_pairing_no_peer(void **state)
{
	struct ctx *c = *state;

	c->no_peer = true;
	assert_string_equal(send_batch(c, 1, 1, 3, 252, 0, 0), "stored");
	assert_int_equal(sole_verdict(c), FLOWS_NO_PEER);
	assert_int_equal(query(c, 1).no_peer, 1);
	/* An interval in which node 1 had the peer: the flow had an end that did not report. */
	c->no_peer = false;
	assert_string_equal(send_batch(c, 1, 2, 3, 252, 0, 0), "stored");
	assert_int_equal(sole_verdict(c), FLOWS_ONE_SIDED);
	/* ... and stays so whatever its later records name. */
	c->no_peer = true;
	assert_string_equal(send_batch(c, 1, 3, 3, 252, 0, 0), "stored");
	assert_int_equal(sole_verdict(c), FLOWS_ONE_SIDED);
	/* The other end reports it: the two pair, whatever node 1 named. */
	assert_string_equal(send_batch(c, 2, 1, 0, 0, 9, 756), "stored");
	assert_int_equal(sole_verdict(c), FLOWS_CONFIRMED);
}

static void sql(struct ctx *c, const char *q)
{
	sqlite3 *db;

	assert_int_equal(sqlite3_open(c->path, &db), SQLITE_OK);
	assert_int_equal(sqlite3_exec(db, q, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void verify_ok(struct ctx *c, uint64_t batches)
{
	struct flows_verify v;

	assert_int_equal(flows_verify(c->s, &v), 0);
	if (v.bad)
		fail_msg("verify: %s", v.why);
	assert_int_equal(v.batches, batches);
}

static void verify_bad(struct ctx *c, const char *why)
{
	struct flows_verify v;

	assert_int_equal(flows_verify(c->s, &v), 0);
	if (!v.bad)
		fail_msg("verify passed, expected \"%s\"", why);
	if (!strstr(v.why, why))
		fail_msg("verify said \"%s\", expected \"%s\"", v.why, why);
}

static void test_verify(void **state)
{
	struct ctx *c = *state;
	size_t len;
	uint8_t *buf;

	for (uint64_t seq = 1; seq <= 3; seq++) {
		assert_string_equal(send_batch(c, 1, seq, 10, 1000, 10, 1000), "stored");
		assert_string_equal(send_batch(c, 2, seq, 10, 1000, 10, 1000), "stored");
	}
	verify_ok(c, 6);
	/* Batch 4 of node 1 is lost in its spool; batch 5 says so (signed): no problem. */
	buf = make(c, 1, 1, 5, 1, 1, 1, 1, 1, &len);
	assert_string_equal(submit(c, 1, buf, len), "stored");
	verify_ok(c, 7);

	/* A stored record edited: named. Back, and fine again. */
	sql(c, "UPDATE flow_records SET tx_bytes = 999 WHERE node_id = 2 AND batch_id ="
	       " (SELECT id FROM flow_batches WHERE node_id = 2 AND seq = 2)");
	verify_bad(c, "node 2 flow batch 2: record 0 does not match the signed batch (edited)");
	sql(c, "UPDATE flow_records SET tx_bytes = 1000 WHERE node_id = 2");
	verify_ok(c, 7);
	/* A record deleted. */
	sql(c, "CREATE TABLE saved AS SELECT * FROM flow_records WHERE node_id = 1 AND batch_id ="
	       " (SELECT id FROM flow_batches WHERE node_id = 1 AND seq = 3);"
	       "DELETE FROM flow_records WHERE node_id = 1 AND batch_id ="
	       " (SELECT id FROM flow_batches WHERE node_id = 1 AND seq = 3)");
	verify_bad(c, "node 1 flow batch 3: record 0 is missing (deleted)");
	sql(c, "INSERT INTO flow_records SELECT * FROM saved; DROP TABLE saved");
	verify_ok(c, 7);
	/* A batch edited (its bytes): the signature says so. */
	sql(c, "CREATE TABLE saved AS SELECT id, batch FROM flow_batches WHERE node_id = 2 AND"
	       " seq = 1; UPDATE flow_batches SET batch = zeroblob(length(batch)) WHERE node_id = 2"
	       " AND seq = 1");
	verify_bad(c, "node 2 flow batch 1 does not match its signature (edited)");
	sql(c, "UPDATE flow_batches SET batch = (SELECT batch FROM saved WHERE saved.id ="
	       " flow_batches.id) WHERE id IN (SELECT id FROM saved); DROP TABLE saved");
	verify_ok(c, 7);
	/* A batch deleted, records and all: the gap is not one the node signed. */
	sql(c, "DELETE FROM flow_records WHERE batch_id = (SELECT id FROM flow_batches WHERE"
	       " node_id = 2 AND seq = 2); DELETE FROM flow_batches WHERE node_id = 2 AND seq = 2");
	verify_bad(c, "node 2 flow batch 2 missing (deleted)");
}

/* A retention prune of tailnet 1 as the server's pruner writes it: how many batches went. */
static uint64_t prune(struct ctx *c, int64_t before, unsigned max)
{
	struct store_op op = {.kind = STORE_OP_FLOW_PRUNE};
	struct audit_entry e = {.time = 2000,
				.actor = "server",
				.action = "flows.prune",
				.target = "tailnet:default",
				.before = "",
				.after = ""};
	uint64_t n = 99;

	op.flow_prune =
	    (struct store_flow_prune){.tailnet_id = 1, .before = before, .max_batches = max};
	assert_int_equal(store_write_audited(c->s, &op, &e, &n), 0);
	return n;
}

struct prunes {
	unsigned n;
	char after[256];
};

static int prune_entries(void *arg, const struct audit_entry *e)
{
	struct prunes *p = arg;

	if (!strcmp(e->action, "flows.prune")) {
		p->n++;
		snprintf(p->after, sizeof(p->after), "%s", e->after);
	}
	return 0;
}

static void test_retention(void **state)
{
	struct ctx *c = *state;
	struct flows_collect_stats st;
	struct flows_verify v;
	struct prunes p = {0};
	struct store_op op = {.kind = STORE_OP_AUDIT_PRUNE};
	struct audit_entry e = {.time = 2000,
				.actor = "test",
				.action = "audit.prune",
				.target = "audit",
				.before = "",
				.after = ""};
	/* Node 1's batches 4 and 5 (rows 7 and 9) trade places, their records with them. */
	static const char swap[] =
	    "UPDATE flow_batches SET id = -id WHERE id IN (7, 9);"
	    "UPDATE flow_batches SET id = CASE id WHEN -7 THEN 9 ELSE 7 END WHERE id < 0;"
	    "UPDATE flow_records SET batch_id = -batch_id WHERE batch_id IN (7, 9);"
	    "UPDATE flow_records SET batch_id = CASE batch_id WHEN -7 THEN 9 ELSE 7 END"
	    " WHERE batch_id < 0";

	/* Seqs 1-3 of both nodes arrive at 100, 4-5 at 1000: row ids 1-6, then 7-10. */
	for (uint64_t seq = 1; seq <= 5; seq++) {
		c->now = seq <= 3 ? 100 : 1000;
		assert_string_equal(send_batch(c, 1, seq, 10, 1000, 10, 1000), "stored");
		assert_string_equal(send_batch(c, 2, seq, 10, 1000, 10, 1000), "stored");
	}
	/* Nothing old enough: nothing goes, and no entry. */
	assert_int_equal(prune(c, 100, 1024), 0);
	assert_int_equal(store_audit_read(c->s, 0, INT64_MIN, 0, prune_entries, &p), 0);
	assert_int_equal(p.n, 0);
	/* A chunk of two: the oldest batch of each node; then the rest that is old enough. */
	assert_int_equal(prune(c, 500, 2), 2);
	verify_ok(c, 8);
	assert_int_equal(prune(c, 500, 1024), 4);
	assert_int_equal(flows_verify(c->s, &v), 0);
	assert_false(v.bad);
	assert_int_equal(v.batches, 4);
	assert_int_equal(v.anchors, 2);
	assert_int_equal(store_audit_read(c->s, 0, INT64_MIN, 0, prune_entries, &p), 0);
	assert_int_equal(p.n, 2);
	assert_non_null(strstr(p.after, "\"batches\":4,\"before\":500,\"nodes\":2,\"records\":4}"));
	assert_non_null(strstr(p.after, "{\"anchors\":\""));

	/* After the anchor: a batch deleted, edited, reordered, each named; then put back. */
	sql(c, "CREATE TABLE saved AS SELECT * FROM flow_batches WHERE node_id = 2 AND seq = 4;"
	       "DELETE FROM flow_batches WHERE node_id = 2 AND seq = 4");
	verify_bad(c, "node 2 flow batch 4 missing (deleted)");
	sql(c, "INSERT INTO flow_batches SELECT * FROM saved; DROP TABLE saved");
	verify_ok(c, 4);
	sql(c, "CREATE TABLE saved AS SELECT id, batch FROM flow_batches WHERE node_id = 1 AND"
	       " seq = 4; UPDATE flow_batches SET batch = zeroblob(length(batch)) WHERE node_id = 1"
	       " AND seq = 4");
	verify_bad(c, "node 1 flow batch 4 does not match its signature (edited)");
	sql(c, "UPDATE flow_batches SET batch = (SELECT batch FROM saved WHERE saved.id ="
	       " flow_batches.id) WHERE id IN (SELECT id FROM saved); DROP TABLE saved");
	verify_ok(c, 4);
	sql(c, swap);
	verify_bad(c, "node 1 flow batch 4 comes after batch 5 (reordered or inserted)");
	sql(c, swap);
	verify_ok(c, 4);
	/* An anchor edited, deleted; the batches before it back (a prune undone). */
	sql(c, "UPDATE flow_anchors SET seq = 4 WHERE node_id = 1");
	verify_bad(c,
		   "the flow-log anchors do not match the digest in audit entry 2 (flows.prune)");
	sql(c, "UPDATE flow_anchors SET seq = 3 WHERE node_id = 1");
	verify_ok(c, 4);
	sql(c, "CREATE TABLE saved AS SELECT * FROM flow_anchors WHERE node_id = 2;"
	       "DELETE FROM flow_anchors WHERE node_id = 2");
	verify_bad(c, "the flow-log anchors do not match the digest");
	sql(c, "INSERT INTO flow_anchors SELECT * FROM saved; DROP TABLE saved");
	verify_ok(c, 4);
	/* A batch put back below node 2's anchor (row 6), as a prune undone would. */
	sql(c, "INSERT INTO flow_batches (id, node_id, seq, tailnet_id, received, flags, audit_key,"
	       " batch) SELECT 5, node_id, 3, tailnet_id, received, flags, audit_key, batch"
	       " FROM flow_batches WHERE id = 8");
	verify_bad(c, "node 2 flow batch 3 is older than the node's pruning anchor");
	sql(c, "DELETE FROM flow_batches WHERE id = 5");
	verify_ok(c, 4);

	/* The audit log pruned to now keeps the newest flows.prune entry: still verifiable. */
	op.audit_prune_before = 1 << 30;
	assert_int_equal(store_write_audited(c->s, &op, &e, NULL), 0);
	memset(&p, 0, sizeof(p));
	assert_int_equal(store_audit_read(c->s, 0, INT64_MIN, 0, prune_entries, &p), 0);
	assert_int_equal(p.n, 1);
	verify_ok(c, 4);
	/* ... whose deletion leaves anchors nothing vouches for. */
	sql(c, "DELETE FROM audit WHERE action = 'flows.prune'");
	verify_bad(c, "2 flow-log anchors but no flows.prune entry in the audit log");
	sql(c, "DELETE FROM flow_anchors");

	/* Everything pruned: after a restart the collector goes on from the anchors, no gap. */
	c->now = 3000;
	assert_int_equal(prune(c, 2000, 1024), 4);
	verify_ok(c, 0);
	close_all(c);
	assert_int_equal(store_open(c->path, &c->s), 0);
	store_loop_attach(c->s, c->loop);
	assert_int_equal(flows_collector_new(c->s, &c->fc), 0);
	assert_string_equal(send_batch(c, 1, 6, 10, 1000, 10, 1000), "stored");
	assert_string_equal(send_batch(c, 2, 6, 10, 1000, 10, 1000), "stored");
	flows_collector_stats(c->fc, &st);
	assert_int_equal(st.admit.gaps, 0);
	assert_int_equal(st.admit.chain_breaks, 0);
	verify_ok(c, 2);
}

/* The server's pruner: rounds every half retention, chunks through the store, one entry each. */
static void test_pruner(void **state)
{
	struct ctx *c = *state;
	struct control_tailnet t = {.id = 1, .name = "default", .ephemeral_timeout_sec = 600};
	struct mapper *m = mapper_new();
	struct registry *reg;
	struct flows_pruner *p;
	struct flows_prune_stats ps;
	struct prunes pe = {0};
	struct flows_verify v;

	assert_non_null(m);
	assert_int_equal(registry_new(m, &reg), 0);
	assert_int_equal(registry_tailnet_put(reg, &t), 0);
	for (uint64_t seq = 1; seq <= 4; seq++) {
		c->now = seq <= 3 ? 100 : 1000;
		assert_string_equal(send_batch(c, 1, seq, 10, 1000, 10, 1000), "stored");
		assert_string_equal(send_batch(c, 2, seq, 10, 1000, 10, 1000), "stored");
	}
	assert_int_equal(flows_pruner_new(c->s, reg, &p), 0);
	/* No retention: a round finds nothing to do, and nothing is written. */
	flows_pruner_tick(p, 1050);
	store_flush(c->s);
	store_completions_run(c->s);
	verify_ok(c, 8);
	/* A retention of 500 s: the next round is due 250 s after the last began. */
	t.flow_retention_sec = 500;
	assert_int_equal(registry_tailnet_put(reg, &t), 0);
	flows_pruner_tick(p, 1299);
	store_flush(c->s);
	store_completions_run(c->s);
	verify_ok(c, 8);
	for (int i = 0; i < 4; i++) {
		flows_pruner_tick(p, 1300);
		store_flush(c->s);
		store_completions_run(c->s);
	}
	flows_pruner_stats(p, &ps);
	assert_int_equal(ps.rounds, 2);
	assert_int_equal(ps.chunks, 1);
	assert_int_equal(ps.batches, 6);
	assert_int_equal(ps.failed, 0);
	assert_int_equal(flows_verify(c->s, &v), 0);
	assert_false(v.bad);
	assert_int_equal(v.batches, 2);
	assert_int_equal(v.anchors, 2);
	assert_int_equal(store_audit_read(c->s, 0, INT64_MIN, 0, prune_entries, &pe), 0);
	assert_int_equal(pe.n, 1);
	assert_non_null(strstr(pe.after, "\"batches\":6,\"before\":800,"));
	flows_pruner_tick(p, 1549);
	flows_pruner_stats(p, &ps);
	assert_int_equal(ps.rounds, 2);
	flows_pruner_tick(p, 1550);
	flows_pruner_stats(p, &ps);
	assert_int_equal(ps.rounds, 3);
	store_flush(c->s);
	store_completions_run(c->s);
	flows_pruner_free(p);
	registry_free(reg);
	mapper_free(m);
}

static unsigned prune_commits;

static void prune_committed(void *arg, const char *actor, const struct store_op *op, uint64_t id)
{
	(void)arg;
	(void)id;
	assert_int_equal(op->kind, STORE_OP_FLOW_PRUNE);
	assert_string_equal(actor, "socket:root");
	prune_commits++;
}

/* One admin API request as the socket's root (apikeys) or an API key; its answer in *ret. */
static unsigned api(struct ctx *c, bool socket, const char *method, const char *target,
		    const char *body, json_t **ret)
{
	const struct admin_api_env env = {.store = c->s, .committed = prune_committed};
	struct admin_api_request r = {
	    .method = method,
	    .target = target,
	    .body = body,
	    .body_len = body ? strlen(body) : 0,
	    .actor = "socket:root",
	    .apikeys = socket,
	    .now = c->now,
	};
	char *out = NULL;
	size_t len = 0;
	unsigned st = admin_api_handle(&env, &r, &out, &len);

	json_decref(*ret);
	*ret = json_loadb(out, len, 0, NULL);
	assert_non_null(*ret);
	free(out);
	return st;
}

struct prune_log {
	unsigned n;
	char actor[AUDIT_ACTOR_MAX], target[AUDIT_TARGET_MAX];
};

static int prune_log(void *arg, const struct audit_entry *e)
{
	struct prune_log *p = arg;

	if (!strcmp(e->action, "flows.prune")) {
		p->n++;
		snprintf(p->actor, sizeof(p->actor), "%s", e->actor);
		snprintf(p->target, sizeof(p->target), "%s", e->target);
	}
	return 0;
}

/* `flows prune` by hand: the retention's path, chunk by chunk, under the admin's name. */
static void test_manual_prune(void **state)
{
	struct ctx *c = *state;
	struct control_tailnet dflt = {.name = "default", .ephemeral_timeout_sec = 600},
			       other = {.name = "other", .ephemeral_timeout_sec = 600};
	struct admin_op_ctx op = {.store = c->s, .actor = "cli:test"};
	struct prune_log pl = {0};
	struct flows_verify v;
	json_t *ans = NULL;
	uint64_t n = 0;
	bool more = false;

	assert_int_equal(store_tailnet_create(c->s, &dflt), 0);
	assert_int_equal(dflt.id, 1); /* the tailnet the collector files the batches under */
	assert_int_equal(store_tailnet_create(c->s, &other), 0);
	/* Seqs 1-3 of both nodes arrive at 100, 4-5 at 1000. */
	for (uint64_t seq = 1; seq <= 5; seq++) {
		c->now = seq <= 3 ? 100 : 1000;
		assert_string_equal(send_batch(c, 1, seq, 10, 1000, 10, 1000), "stored");
		assert_string_equal(send_batch(c, 2, seq, 10, 1000, 10, 1000), "stored");
	}
	c->now = 2000;
	/* Removing history is for root on the admin socket; the request named exactly. */
	assert_int_equal(api(c, false, "POST", "/admin/v1/flows/prune", "{\"before\":500}", &ans),
			 403);
	assert_int_equal(api(c, true, "POST", "/admin/v1/flows/prune", "{}", &ans), 400);
	assert_int_equal(api(c, true, "POST", "/admin/v1/flows/prune",
			     "{\"before\":500, \"older_than\":\"1d\"}", &ans),
			 400);
	assert_int_equal(
	    api(c, true, "POST", "/admin/v1/flows/prune", "{\"before\":\"500\"}", &ans), 400);
	assert_int_equal(
	    api(c, true, "POST", "/admin/v1/flows/prune", "{\"before\":500, \"x\":1}", &ans), 400);
	assert_int_equal(api(c, true, "POST", "/admin/v1/flows/prune",
			     "{\"tailnet\":\"nope\", \"before\":500}", &ans),
			 404);
	assert_int_equal(api(c, true, "POST", "/admin/v1/flows/prune", "{\"before\":2001}", &ans),
			 400);
	assert_non_null(strstr(json_string_value(json_object_get(ans, "error")), "future"));
	verify_ok(c, 10);
	assert_int_equal(prune_commits, 0);

	/* Chunks of 2, at most 2 a call: 4 of the 6 old batches, more to come; then the rest. */
	op.now = c->now;
	assert_int_equal(admin_op_flows_prune(&op, NULL, 500, 2, 2, &n, &more), 0);
	assert_int_equal(n, 4);
	assert_true(more);
	verify_ok(c, 6);
	assert_int_equal(admin_op_flows_prune(&op, "default", 500, 2, 2, &n, &more), 0);
	assert_int_equal(n, 2);
	assert_false(more);
	assert_int_equal(flows_verify(c->s, &v), 0);
	assert_false(v.bad);
	assert_int_equal(v.batches, 4);
	assert_int_equal(v.anchors, 2);
	/* One entry a chunk, as the retention writes them, the admin named. */
	assert_int_equal(store_audit_read(c->s, 0, INT64_MIN, 0, prune_log, &pl), 0);
	assert_int_equal(pl.n, 3);
	assert_string_equal(pl.actor, "cli:test");
	assert_string_equal(pl.target, "tailnet:default");
	/* Nothing old enough in another tailnet: nothing goes, no entry. */
	assert_int_equal(api(c, true, "POST", "/admin/v1/flows/prune",
			     "{\"tailnet\":\"other\", \"older_than\":\"1s\"}", &ans),
			 200);
	assert_int_equal(json_integer_value(json_object_get(ans, "removed")), 0);
	assert_int_equal(prune_commits, 0);

	/* Over the API, --older-than: the server's clock sets the cut-off; the rest goes. */
	c->now = 3000;
	assert_int_equal(
	    api(c, true, "POST", "/admin/v1/flows/prune", "{\"older_than\":\"1000s\"}", &ans), 200);
	assert_int_equal(json_integer_value(json_object_get(ans, "removed")), 4);
	assert_int_equal(json_integer_value(json_object_get(ans, "before")), 2000);
	assert_true(json_is_false(json_object_get(ans, "more")));
	assert_int_equal(prune_commits, 1);
	verify_ok(c, 0);
	/* The configuration chain and every batch chain check out, from the anchors. */
	assert_int_equal(api(c, true, "GET", "/admin/v1/audit/verify", NULL, &ans), 200);
	assert_true(json_is_true(json_object_get(ans, "ok")));
	assert_true(json_is_true(json_object_get(json_object_get(ans, "flows"), "ok")));
	assert_int_equal(json_integer_value(json_object_get(ans, "entries")), 4); /* the prunes */
	/* The nodes' chains go on from their anchors. */
	assert_string_equal(send_batch(c, 1, 6, 10, 1000, 10, 1000), "stored");
	verify_ok(c, 1);
	json_decref(ans);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_admission, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pairing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pairing_no_peer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_verify, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pruner, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_manual_prune, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
