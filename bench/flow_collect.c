/* SPDX-License-Identifier: MIT */
/*
 * flow_collect: what the flow-log collector costs per batch, in one process, paying what
 * trellis-control pays for each `flows` message from a node (docs/audit.md):
 *   - the frame opened (ChaCha20-Poly1305 over the message, as the control session does),
 *   - the message decoded (ctrl_msg_decode: JSON, base64 of the batch),
 *   - admission (flows_collector_submit: structure, sender, Ed25519 signature, chain),
 *   - the durable write (the store's writer thread: one group-commit transaction with
 *     fsync, the batch row and its record rows), and the answer's completion on the loop.
 * Not included: the TCP socket reads and the answer's encoding and sealing (a few
 * hundred bytes).
 *
 *   flow_collect DIR [-n NODES] [-r ROUNDS] [-k RECORDS]
 *
 * NODES simulated nodes (default 1000), each with its own Ed25519 audit key and chain; every
 * round each node submits its next batch of RECORDS flow records (default 8), then the loop
 * waits until all are durable. The batches are built and signed before the clock starts
 * (that is the nodes' work). Output, one "key value" a line: batches per second while
 * ingesting, CPU seconds per batch (user + system of the whole process: the loop and the
 * store's writer thread), and that CPU as a share of one core at NODES batches every 5 s.
 * The store lives in DIR (control.db), which should be on the disk the server would use.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "base/loop.h"
#include "control/flows_collect.h"
#include "control/store.h"
#include "crypto/crypto.h"
#include "proto/ctrlmsg.h"
#include "proto/flowbatch.h"

struct sim {
	uint8_t priv[ED25519_KEY_LEN], pub[ED25519_KEY_LEN];
	uint8_t last[FLOWBATCH_HASH_LEN];
	uint8_t **frames; /* per round: the sealed message as it arrives */
	size_t *frame_len;
};

static unsigned answered, stored;

static void die(const char *what, int err)
{
	fprintf(stderr, "flow_collect: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

static double now_s(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void done(void *ctx, uint64_t seq, const char *result)
{
	(void)ctx;
	(void)seq;
	answered++;
	stored += strcmp(result, "stored") == 0;
}

/* 100.64.x.y as stored (IPv4 mapped). */
static void addr(uint8_t a[16], unsigned n)
{
	memset(a, 0, 16);
	a[10] = a[11] = 0xff;
	a[12] = 100;
	a[13] = (uint8_t)(64 + (n >> 16 & 63));
	a[14] = (uint8_t)(n >> 8);
	a[15] = (uint8_t)n;
}

/* Node i's batch of round r, sealed in a control frame as the node would send it. */
static void build(struct sim *s, unsigned i, unsigned r, unsigned k, const uint8_t key[32])
{
	struct flowbatch_record *recs = calloc(k, sizeof(*recs));
	struct flowbatch b = {.node_id = i + 1, .seq = r + 1, .n_records = (uint16_t)k};
	size_t len = FLOWBATCH_LEN(k);
	uint8_t *buf = malloc(len);
	struct ctrl_msg m = {.type = CTRL_MSG_FLOWS};
	char *json;
	size_t jlen;
	int n;

	if (!recs || !buf)
		die("build", -ENOMEM);
	for (unsigned j = 0; j < k; j++) {
		struct flowbatch_record *x = &recs[j];

		x->proto = 6;
		addr(x->src, i + 1);
		addr(x->dst, (i + 1 + j + 1) % 60000 + 1);
		x->src_port = (uint16_t)(40000 + j);
		x->dst_port = 443;
		memset(x->peer_key, (int)j, sizeof(x->peer_key));
		x->tx_packets = 100 + j;
		x->tx_bytes = 140000 + j;
		x->rx_packets = 90 + j;
		x->rx_bytes = 120000 + j;
		x->first_ns = 1000000000ULL * (5 * r + 1);
		x->last_ns = x->first_ns + 4000000000ULL;
	}
	b.records = recs;
	b.start_ns = 5000000000ULL * r;
	b.end_ns = b.start_ns + 5000000000ULL;
	memcpy(b.prev_hash, s->last, sizeof(s->last));
	n = flowbatch_encode(&b, s->priv, buf, len);
	if (n < 0)
		die("flowbatch_encode", n);
	flowbatch_hash(buf, (size_t)n, s->last);
	m.flows.batch = buf;
	m.flows.len = (size_t)n;
	n = ctrl_msg_encode(&m, &json, &jlen);
	if (n < 0)
		die("ctrl_msg_encode", n);
	s->frames[r] = malloc(jlen + CHACHA20POLY1305_TAG_LEN);
	if (!s->frames[r])
		die("build", -ENOMEM);
	chacha20poly1305_encrypt(s->frames[r], (const uint8_t *)json, jlen, NULL, 0, r, key);
	s->frame_len[r] = jlen + CHACHA20POLY1305_TAG_LEN;
	free(json);
	free(buf);
	free(recs);
}

int main(int argc, char **argv)
{
	unsigned n_nodes = 1000, rounds = 5, k = 8;
	char path[512], *plain;
	uint8_t key[32];
	struct loop *loop;
	struct store *st;
	struct flows_collector *fc;
	struct sim *sims;
	double t0, c0, wall = 0, cpu = 0;
	int opt, r;

	while ((opt = getopt(argc, argv, "n:r:k:")) != -1) {
		if (opt == 'n')
			n_nodes = (unsigned)atoi(optarg);
		else if (opt == 'r')
			rounds = (unsigned)atoi(optarg);
		else if (opt == 'k')
			k = (unsigned)atoi(optarg);
		else
			return 2;
	}
	if (optind != argc - 1 || !n_nodes || !rounds || !k || k > 256) {
		fprintf(stderr,
			"usage: flow_collect DIR [-n NODES] [-r ROUNDS] [-k RECORDS<=256]\n");
		return 2;
	}
	snprintf(path, sizeof(path), "%s/control.db", argv[optind]);
	memset(key, 7, sizeof(key));
	sims = calloc(n_nodes, sizeof(*sims));
	plain = malloc(CTRL_MSG_MAX + 1);
	if (!sims || !plain)
		die("setup", -ENOMEM);
	fprintf(stderr, "signing %u x %u batches of %u records\n", n_nodes, rounds, k);
	for (unsigned i = 0; i < n_nodes; i++) {
		struct sim *s = &sims[i];

		if (ed25519_private_generate(s->priv) < 0 ||
		    ed25519_public_from_private(s->pub, s->priv) < 0)
			die("ed25519", -EIO);
		s->frames = calloc(rounds, sizeof(*s->frames));
		s->frame_len = calloc(rounds, sizeof(*s->frame_len));
		if (!s->frames || !s->frame_len)
			die("setup", -ENOMEM);
		for (unsigned j = 0; j < rounds; j++)
			build(s, i, j, k, key);
	}
	loop = loop_new();
	if (!loop)
		die("loop_new", -ENOMEM);
	r = store_open(path, &st);
	if (r < 0)
		die(path, r);
	store_loop_attach(st, loop);
	r = flows_collector_new(st, &fc);
	if (r < 0)
		die("flows_collector_new", r);

	for (unsigned j = 0; j < rounds; j++) {
		unsigned want = answered + n_nodes;

		t0 = now_s(CLOCK_MONOTONIC);
		c0 = cpu_s();
		for (unsigned i = 0; i < n_nodes; i++) {
			struct sim *s = &sims[i];
			struct ctrl_msg m;
			const char *result;
			uint64_t seq;
			size_t plen = s->frame_len[j] - CHACHA20POLY1305_TAG_LEN;

			if (chacha20poly1305_decrypt((uint8_t *)plain, s->frames[j],
						     s->frame_len[j], NULL, 0, j, key) < 0)
				die("frame", -EBADMSG);
			r = ctrl_msg_decode(plain, plen, &m);
			if (r < 0 || m.type != CTRL_MSG_FLOWS)
				die("ctrl_msg_decode", r < 0 ? r : -EBADMSG);
			r = flows_collector_submit(fc, i + 1, 1, s->pub, m.flows.batch, m.flows.len,
						   1000 + (int64_t)j * 5, done, NULL, &seq,
						   &result);
			m.flows.batch = NULL; /* the collector's now */
			ctrl_msg_clear(&m);
			if (r < 0) {
				fprintf(stderr, "node %u round %u: %s\n", i + 1, j, result);
				answered++;
			}
		}
		while (answered < want) {
			store_flush(st);
			store_completions_run(st);
		}
		wall += now_s(CLOCK_MONOTONIC) - t0;
		cpu += cpu_s() - c0;
		fprintf(stderr, "round %u: %u stored so far\n", j + 1, stored);
	}
	printf("nodes %u\nrounds %u\nrecords_per_batch %u\nstored %u\n", n_nodes, rounds, k,
	       stored);
	printf("batches_per_s %.0f\n", (double)(n_nodes * rounds) / wall);
	printf("cpu_us_per_batch %.1f\n", cpu / (n_nodes * rounds) * 1e6);
	/* n_nodes batches every 5 s: n_nodes / 5 batches a second. */
	printf("core_pct_at_5s %.2f\n", cpu / (n_nodes * rounds) * (n_nodes / 5.0) * 100);
	flows_collector_free(fc);
	store_loop_detach(st);
	store_free(st);
	loop_free(loop);
	for (unsigned i = 0; i < n_nodes; i++) {
		for (unsigned j = 0; j < rounds; j++)
			free(sims[i].frames[j]);
		free(sims[i].frames);
		free(sims[i].frame_len);
	}
	free(sims);
	free(plain);
	return stored == n_nodes * rounds ? 0 : 1;
}
