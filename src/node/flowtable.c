// SPDX-License-Identifier: MIT
/* Flow accounting (flowtable.h). */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/pkt.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "node/flowtable.h"

#define PROBES 8

struct key {
	uint8_t proto, icmp_type;
	uint16_t lport, rport;
	uint8_t local[16], remote[16];
};

struct entry {
	struct key k;
	bool used, inbound;
	uint32_t denied;
	uint64_t tx_p, tx_b, rx_p, rx_b, first_ns, last_ns;
};

/*
 * Flows that found no slot, counted once each per interval (docs/audit.md, "Counting on
 * the node"): the first OVF_EXACT distinct ones by their hash, exactly; all of them as a
 * bit each in a bitmap, read by linear counting when the exact list ran out. Bounded
 * whatever arrives; only a packet that finds no slot touches them.
 */
#define OVF_EXACT 64
#define OVF_BITS 32768
#define OVF_SHIFT 49 /* 64 - log2(OVF_BITS): the hash's top bits; the table indexes the low */
_Static_assert(OVF_BITS == 1u << (64 - OVF_SHIFT), "OVF_SHIFT must match OVF_BITS");

struct table {
	struct entry e[FLOWTABLE_SLOTS];
	uint64_t link_scope; /* packets sent to link-scope destinations (parse): not flows */
	/*
	 * Which slots are used, so that a flush reads only those: a scan of every slot's flag
	 * made both tables resident (0.8 MB per counting thread, issue 14) although an idle
	 * node counts a handful of flows. Set once per new flow, not per packet.
	 */
	uint64_t used[FLOWTABLE_SLOTS / 64];
	uint64_t ovf_packets;
	uint32_t n_exact;	      /* hashes in exact; > OVF_EXACT: it ran out */
	uint64_t exact[OVF_EXACT];    /* the hashes of the first distinct flows with no slot */
	uint64_t bits[OVF_BITS / 64]; /* every flow with no slot, by its hash's top bits */
};

struct shard {
	atomic_uint active; /* which table the writer uses */
	atomic_uint busy;   /* the writer is in a batch */
	struct table t[2];
};
/* A counting thread's memory (issue 13: 0.8 MB); 796,728 bytes on x86-64. */
_Static_assert(sizeof(struct shard) <= 800000, "a counting thread's tables grew past 0.8 MB");

/*
 * The distinct flows the shards' full tables could not hold: exact while every table's list
 * held its flows (the lists merged, a flow two threads missed counted once), else the
 * linear-counting estimate over the union of the bitmaps (Whang et al., 1990: n = -m ln(z/m)
 * for z of m bits still zero; within 1 % up to about 2m flows). A bitmap with no zero left
 * (over ~300,000 flows) reads as m ln m.
 */
struct overflow_merge {
	bool exact;
	unsigned n;
	uint64_t hashes[FLOWTABLE_SHARDS * OVF_EXACT];
	uint64_t bits[OVF_BITS / 64];
};

struct flowtable {
	uint64_t id; /* tells tables apart for the thread-local pointers (never reused) */
	uint64_t seed;
	atomic_uint n_shards;
	atomic_uint_fast64_t unsharded; /* packets of threads beyond FLOWTABLE_SHARDS */
	struct shard *shards[FLOWTABLE_SHARDS];
	struct overflow_merge om; /* the flusher's, reset each flush: no allocation then */
};

/* The calling thread's shard of the table it last counted in. */
static _Thread_local uint64_t my_ft;
static _Thread_local struct shard *my_shard;
static atomic_uint_fast64_t ids;

int flowtable_new(struct flowtable **ret)
{
	struct flowtable *ft = calloc(1, sizeof(*ft));

	if (!ft)
		return -ENOMEM;
	if (crypto_random(&ft->seed, sizeof(ft->seed)) < 0) {
		free(ft);
		return -EIO;
	}
	ft->id = atomic_fetch_add(&ids, 1) + 1;
	*ret = ft;
	return 0;
}

void flowtable_free(struct flowtable *ft)
{
	if (!ft)
		return;
	for (unsigned i = 0; i < FLOWTABLE_SHARDS; i++)
		free(ft->shards[i]);
	free(ft);
}

/* Once per thread and table: a shard is allocated then, never per packet. */
static struct shard *shard_get(struct flowtable *ft)
{
	unsigned i;

	if (my_ft == ft->id)
		return my_shard;
	i = atomic_fetch_add(&ft->n_shards, 1);
	if (i >= FLOWTABLE_SHARDS) {
		atomic_fetch_sub(&ft->n_shards, 1);
		return NULL;
	}
	ft->shards[i] = calloc(1, sizeof(struct shard));
	my_ft = ft->id;
	my_shard = ft->shards[i];
	return my_shard;
}

/*
 * Whether the node's kernel sent a packet to a destination no peer is reached at: multicast,
 * broadcast, link-local or unspecified. Its own neighbour discovery and MLD on the TUN (router
 * solicitations to ff02::2 from fe80::, reports to ff02::16) are such packets. The engine
 * routes only to the peers' tailnet host addresses (netmap_apply), so it drops them (no
 * peer) and no peer ever reports them: as flows they would stand one-sided in every
 * listing. What a peer delivers is counted whatever its destination.
 */
static bool link_scope(const uint8_t *dst, bool v4)
{
	static const uint8_t unspec[16];

	if (v4)
		return dst[0] >= 224 || dst[0] == 0 || (dst[0] == 169 && dst[1] == 254);
	return dst[0] == 0xff || (dst[0] == 0xfe && (dst[1] & 0xc0) == 0x80) ||
	       !memcmp(dst, unspec, 16);
}

/*
 * The flow a packet belongs to, from the node's side: 0; -1 when it is not IP; -2 when the
 * node sent it to a link-scope destination (link_scope), which the tunnel never carries.
 */
static int parse(const uint8_t *p, size_t len, bool rx, struct key *k)
{
	static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
	const uint8_t *src, *dst, *l4;
	size_t l4len;
	bool first = true;
	uint8_t proto;

	memset(k, 0, sizeof(*k));
	if (len >= 20 && p[0] >> 4 == 4) {
		size_t ihl = (size_t)(p[0] & 0xf) * 4;

		if (ihl < 20 || ihl > len)
			return -1;
		if (!rx && link_scope(p + 16, true))
			return -2;
		proto = p[9];
		first = ((p[6] & 0x1f) | p[7]) == 0; /* fragment offset 0 */
		memcpy(rx ? k->remote : k->local, mapped, 12);
		memcpy(rx ? k->local : k->remote, mapped, 12);
		src = p + 12;
		dst = p + 16;
		memcpy((rx ? k->remote : k->local) + 12, src, 4);
		memcpy((rx ? k->local : k->remote) + 12, dst, 4);
		l4 = p + ihl;
		l4len = len - ihl;
	} else if (len >= 40 && p[0] >> 4 == 6) {
		if (!rx && link_scope(p + 24, false))
			return -2;
		/* Extension headers are not walked: their flows count under their next header. */
		proto = p[6];
		memcpy(rx ? k->remote : k->local, p + 8, 16);
		memcpy(rx ? k->local : k->remote, p + 24, 16);
		l4 = p + 40;
		l4len = len - 40;
	} else {
		return -1;
	}
	k->proto = proto;
	if (!first)
		return 0;
	if ((proto == 6 || proto == 17) && l4len >= 4) {
		uint16_t sp = (uint16_t)(l4[0] << 8 | l4[1]), dp = (uint16_t)(l4[2] << 8 | l4[3]);

		k->lport = rx ? dp : sp;
		k->rport = rx ? sp : dp;
	} else if ((proto == 1 || proto == 58) && l4len >= 8) {
		uint8_t t = l4[0];

		/* Echo request and reply are one flow both ends key alike: by the request, the id.
		 */
		if (proto == 1 && t == 0)
			t = 8;
		if (proto == 58 && t == 129)
			t = 128;
		k->icmp_type = t;
		if (t == 8 || t == 128)
			k->lport = k->rport = (uint16_t)(l4[4] << 8 | l4[5]);
	}
	return 0;
}

static uint64_t key_hash(const struct flowtable *ft, const struct key *k)
{
	uint64_t h = ft->seed, w;

	for (size_t i = 0; i < sizeof(*k); i += 8) {
		w = 0;
		memcpy(&w, (const uint8_t *)k + i, MIN(8, sizeof(*k) - i));
		h = hash_mix64(h ^ w);
	}
	return h;
}

/* A packet of the flow with hash h found no slot. */
static void overflow_note(struct table *t, uint64_t h)
{
	t->ovf_packets++;
	t->bits[(h >> OVF_SHIFT) / 64] |= 1ull << ((h >> OVF_SHIFT) % 64);
	if (t->n_exact > OVF_EXACT)
		return;
	for (unsigned i = 0; i < t->n_exact; i++)
		if (t->exact[i] == h)
			return;
	/* One past the list marks it as run out: from then on only the bitmap counts. */
	if (t->n_exact < OVF_EXACT)
		t->exact[t->n_exact] = h;
	t->n_exact++;
}

static void count(struct flowtable *ft, struct table *t, const uint8_t *p, size_t len, int dir,
		  uint64_t now_ns)
{
	struct entry *e;
	struct key k;
	uint64_t h;
	int r = parse(p, len, dir != FLOWTABLE_TX, &k);

	if (r == -2)
		t->link_scope++;
	if (r < 0)
		return;
	h = key_hash(ft, &k);
	for (unsigned i = 0; i < PROBES; i++) {
		unsigned slot = (h + i) & (FLOWTABLE_SLOTS - 1);

		e = &t->e[slot];
		if (e->used && memcmp(&e->k, &k, sizeof(k)) != 0)
			continue;
		if (!e->used) {
			t->used[slot / 64] |= 1ull << (slot % 64);
			/*
			 * Whole: a flush frees a slot by its flag only, so the counts of the flow
			 * that held it two intervals ago are still there (they were added to the
			 * next flow of the slot, a long flow's every other interval included).
			 */
			*e = (struct entry){.k = k,
					    .used = true,
					    .inbound = dir != FLOWTABLE_TX,
					    .first_ns = now_ns};
		}
		e->last_ns = now_ns;
		if (dir == FLOWTABLE_TX) {
			e->tx_p++;
			e->tx_b += len;
		} else if (dir == FLOWTABLE_RX) {
			e->rx_p++;
			e->rx_b += len;
		} else {
			e->denied++;
		}
		return;
	}
	overflow_note(t, h);
}

/* One batch of a thread: the table it writes is fixed for the batch (see flush). */
static struct table *batch_begin(struct flowtable *ft, unsigned n, struct shard **ret)
{
	struct shard *sh = shard_get(ft);

	if (!sh) {
		atomic_fetch_add_explicit(&ft->unsharded, n, memory_order_relaxed);
		return NULL;
	}
	atomic_store(&sh->busy, 1);
	*ret = sh;
	return &sh->t[atomic_load(&sh->active)];
}

static void batch_end(struct shard *sh)
{
	atomic_store(&sh->busy, 0);
}

void flowtable_tx(struct flowtable *ft, struct pkt *const *pkts, unsigned n, uint64_t now_ns)
{
	struct shard *sh;
	struct table *t = batch_begin(ft, n, &sh);

	if (!t)
		return;
	for (unsigned i = 0; i < n; i++)
		count(ft, t, pkts[i]->data, pkts[i]->len, FLOWTABLE_TX, now_ns);
	batch_end(sh);
}

void flowtable_rx(struct flowtable *ft, struct pkt *const *pkts, unsigned passed, unsigned n,
		  uint64_t now_ns)
{
	struct shard *sh;
	struct table *t = batch_begin(ft, n, &sh);

	if (!t)
		return;
	for (unsigned i = 0; i < n; i++)
		count(ft, t, pkts[i]->data, pkts[i]->len,
		      i < passed ? FLOWTABLE_RX : FLOWTABLE_DENIED, now_ns);
	batch_end(sh);
}

void flowtable_packet(struct flowtable *ft, const uint8_t *p, size_t len, int dir, uint64_t now_ns)
{
	struct shard *sh;
	struct table *t = batch_begin(ft, 1, &sh);

	if (!t)
		return;
	count(ft, t, p, len, dir, now_ns);
	batch_end(sh);
}

static int entry_cmp(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	return memcmp(&x->k, &y->k, sizeof(x->k));
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void overflow_take(struct overflow_merge *om, struct table *t)
{
	if (!t->ovf_packets)
		return;
	if (t->n_exact > OVF_EXACT)
		om->exact = false;
	else if (om->exact) {
		memcpy(om->hashes + om->n, t->exact, t->n_exact * sizeof(t->exact[0]));
		om->n += t->n_exact;
	}
	for (unsigned i = 0; i < OVF_BITS / 64; i++)
		om->bits[i] |= t->bits[i];
	memset(t->bits, 0, sizeof(t->bits));
	t->n_exact = 0;
	t->ovf_packets = 0;
}

/*
 * ln x for 1 <= x <= OVF_BITS, to about 1e-15: the estimate below was all trellisd took
 * from libm, and mapping the library costs more resident memory than these lines (issue
 * 14). With x = 2^e f, 1 <= f < 2: ln x = e ln 2 + 2 atanh((f - 1) / (f + 1)), whose series
 * in s = (f - 1) / (f + 1) < 1/3 has its 20th term below 3^-39.
 */
static double ln_1_to_ovf(double x)
{
	double s, s2, term, sum = 0;
	int e = 0;

	while (x >= 2) {
		x /= 2;
		e++;
	}
	s = (x - 1) / (x + 1);
	s2 = s * s;
	term = s;
	for (unsigned k = 1; k < 40; k += 2) {
		sum += term / k;
		term *= s2;
	}
	return e * 0.693147180559945309417 + 2 * sum;
}

static uint32_t overflow_flows(struct overflow_merge *om)
{
	unsigned zero = 0, distinct = 0;

	if (om->exact) {
		qsort(om->hashes, om->n, sizeof(om->hashes[0]), u64_cmp);
		for (unsigned i = 0; i < om->n; i++)
			distinct += !i || om->hashes[i] != om->hashes[i - 1];
		return distinct;
	}
	for (unsigned i = 0; i < OVF_BITS / 64; i++)
		zero += 64 - (unsigned)__builtin_popcountll(om->bits[i]);
	return (uint32_t)(OVF_BITS * ln_1_to_ovf((double)OVF_BITS / (zero ? zero : 1)) + 0.5);
}

int flowtable_flush(struct flowtable *ft, int64_t wall_offset_ns, struct flowbatch_record **ret,
		    struct flowtable_overflow *ret_overflow)
{
	unsigned n_shards = MIN(atomic_load(&ft->n_shards), (unsigned)FLOWTABLE_SHARDS);
	struct entry *all = NULL;
	struct flowbatch_record *recs = NULL;
	struct overflow_merge *om = &ft->om;
	size_t n = 0, cap = 0, m = 0;
	uint64_t packets = 0, link = 0;
	uint32_t lost = 0; /* entries the merge could not keep (no memory): flows not counted */

	memset(om, 0, sizeof(*om));
	om->exact = true;

	for (unsigned s = 0; s < n_shards; s++) {
		struct shard *sh = ft->shards[s];
		struct table *t;
		unsigned old;

		if (!sh)
			continue; /* allocation failed: its thread counts nothing */
		old = atomic_load(&sh->active);
		atomic_store(&sh->active, !old);
		/* A batch that read the old index before the switch may still be writing. */
		while (atomic_load(&sh->busy))
			sched_yield();
		t = &sh->t[old];
		link += t->link_scope;
		t->link_scope = 0;
		packets += t->ovf_packets;
		overflow_take(om, t);
		for (unsigned w = 0; w < FLOWTABLE_SLOTS / 64; w++) {
			uint64_t bits = t->used[w];

			t->used[w] = 0;
			for (; bits; bits &= bits - 1) {
				unsigned i = w * 64 + (unsigned)__builtin_ctzll(bits);

				if (n == cap) {
					struct entry *v =
					    realloc(all, (cap ? cap * 2 : 256) * sizeof(*v));

					if (!v) {
						lost++;
						packets +=
						    t->e[i].tx_p + t->e[i].rx_p + t->e[i].denied;
						t->e[i].used = false;
						continue;
					}
					all = v;
					cap = cap ? cap * 2 : 256;
				}
				all[n++] = t->e[i];
				t->e[i].used = false;
			}
		}
	}
	if (n) {
		qsort(all, n, sizeof(*all), entry_cmp);
		recs = calloc(n, sizeof(*recs));
		if (!recs) {
			free(all);
			return -ENOMEM;
		}
	}
	/* One record a flow: the shards' entries of it (TUN reader, crypto workers) merged. */
	for (size_t i = 0; i < n; i++) {
		struct entry *e = &all[i];
		struct flowbatch_record *r;

		if (m && !entry_cmp(e, &all[i - 1])) {
			r = &recs[m - 1];
			r->tx_packets += e->tx_p;
			r->tx_bytes += e->tx_b;
			r->rx_packets += e->rx_p;
			r->rx_bytes += e->rx_b;
			r->denied += e->denied;
			if (e->first_ns + (uint64_t)wall_offset_ns < r->first_ns) {
				r->first_ns = e->first_ns + (uint64_t)wall_offset_ns;
				r->flags = e->inbound ? FLOWBATCH_F_INBOUND : 0;
			}
			r->last_ns = MAX(r->last_ns, e->last_ns + (uint64_t)wall_offset_ns);
			continue;
		}
		r = &recs[m++];
		r->proto = e->k.proto;
		r->icmp_type = e->k.icmp_type;
		r->flags = e->inbound ? FLOWBATCH_F_INBOUND : 0;
		memcpy(r->src, e->k.local, 16);
		memcpy(r->dst, e->k.remote, 16);
		r->src_port = e->k.lport;
		r->dst_port = e->k.rport;
		r->tx_packets = e->tx_p;
		r->tx_bytes = e->tx_b;
		r->rx_packets = e->rx_p;
		r->rx_bytes = e->rx_b;
		r->first_ns = e->first_ns + (uint64_t)wall_offset_ns;
		r->last_ns = e->last_ns + (uint64_t)wall_offset_ns;
		r->denied = e->denied;
	}
	free(all);
	*ret_overflow = (struct flowtable_overflow){
	    .flows = overflow_flows(om) + lost,
	    .packets = packets + atomic_exchange(&ft->unsharded, 0),
	    .link_scope = link,
	};
	*ret = recs;
	return (int)m;
}
