/* SPDX-License-Identifier: MIT */
/*
 * Datagrams from the wire into a magicsock, one batch per input. The input is cut
 * into datagrams: a length byte, a source byte (one of eight addresses, two of them
 * paths of handles), then the bytes. Checked on every input: the engine gets only
 * WireGuard, reported as a handle exactly when the source is a handle's path; the
 * mailboxes hold only their kind, with real source addresses; every buffer comes
 * back to the pool.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "net/demux.h"
#include "net/magicsock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define POOL 64
#define SOURCES 8

static struct magicsock *ms;
static struct pkt_pool *pool;
static struct endpoint src[SOURCES], handle[2];
/* What the engine must see, in order: the WireGuard datagrams' reported sources. */
static struct endpoint expect[MAGICSOCK_BATCH];
static unsigned n_expect, n_seen;

static void check(bool ok)
{
	if (!ok)
		abort();
}

static void wg_rx(void *ctx, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	unsigned i;

	(void)ctx;
	(void)now_ns;
	for (i = 0; i < n; i++) {
		check(demux_classify(pkts[i]->data, pkts[i]->len) == DEMUX_WG);
		check(n_seen < n_expect && endpoint_equal(&pkts[i]->ep, &expect[n_seen]));
		n_seen++;
	}
	pkt_free(pkts, n);
}

static void wire_send(void *ctx, struct pkt **pkts, unsigned n)
{
	(void)ctx;
	pkt_free(pkts, n);
}

static void drain(enum magicsock_box box, enum demux_kind kind)
{
	struct pkt *p;

	while (magicsock_box_take(ms, box, &p, 1)) {
		check(demux_classify(p->data, p->len) == kind);
		check(endpoint_is_addr(&p->ep));
		pkt_free(&p, 1);
	}
}

static void write_seeds(const char *dir)
{
	static const uint8_t stun[] = {20, 1, 0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42};
	uint8_t seed[3 * (2 + 96)] = {0}, *s = seed;
	char path[4096];
	FILE *f;

	/* A data message from a known path, a STUN request, a disco datagram. */
	*s++ = 32, *s++ = 0, *s = 4, s += 32;
	memcpy(s, stun, sizeof(stun)), s += 2 + 20;
	*s++ = DISCO_MIN_LEN, *s++ = 5;
	memcpy(s, DISCO_MAGIC, DISCO_MAGIC_LEN), s += DISCO_MIN_LEN;
	snprintf(path, sizeof(path), "%s/mixed", dir);
	f = fopen(path, "wb");
	if (!f)
		return;
	fwrite(seed, 1, (size_t)(s - seed), f);
	fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const struct magicsock_ops ops = {
	    .wg_rx = wg_rx,
	    .wire_send = wire_send,
	    .box_cap = {4, 4},
	};
	const char *dir = getenv("TRELLIS_FUZZ_SEEDS");
	unsigned i;

	(void)argc;
	(void)argv;
	if (dir) {
		write_seeds(dir);
		exit(0);
	}
	ms = magicsock_new(&ops);
	pool = pkt_pool_new(POOL);
	check(ms && pool);
	for (i = 0; i < SOURCES; i++) {
		check(endpoint_parse(&src[i], i % 2 ? "[2001:db8::1]:41641" : "192.0.2.1:41641") ==
		      0);
		if (i % 2)
			src[i].in6.sin6_port = htons((uint16_t)(41641 + i));
		else
			src[i].in4.sin_port = htons((uint16_t)(41641 + i));
	}
	for (i = 0; i < 2; i++) {
		check(magicsock_handle_new(ms, &handle[i]) == 0);
		check(magicsock_handle_set_path(ms, &handle[i], &src[i]) == 0);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pkt *batch[MAGICSOCK_BATCH];
	unsigned n = 0, from;
	size_t len;

	n_expect = n_seen = 0;
	while (size >= 2 && n < MAGICSOCK_BATCH) {
		len = MIN((size_t)data[0], size - 2);
		from = data[1] % SOURCES;
		check(pkt_pool_get(pool, &batch[n], 1) == 1);
		memcpy(batch[n]->data, data + 2, len);
		batch[n]->len = (uint32_t)len;
		batch[n]->ep = src[from];
		if (demux_classify(batch[n]->data, batch[n]->len) == DEMUX_WG)
			expect[n_expect++] = from < 2 ? handle[from] : src[from];
		n++;
		data += 2 + len;
		size -= 2 + len;
	}
	magicsock_rx(ms, batch, n, 1);
	check(n_seen == n_expect);
	drain(MAGICSOCK_BOX_STUN, DEMUX_STUN);
	drain(MAGICSOCK_BOX_DISCO, DEMUX_DISCO);
	check(pkt_pool_available(pool) == POOL);
	return 0;
}
