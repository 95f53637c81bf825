/* SPDX-License-Identifier: MIT */
/*
 * The magicsock core (see magicsock.h): demultiplexing, mailboxes, the handle table
 * and its inbound index.
 *
 * The table is an array of slots. A live slot holds a handle id and its path; a free
 * one sits on the free list. A handle id is (generation << SLOT_BITS | slot): finding
 * a handle is an index and a compare. The inbound index is a chained hash of the paths
 * (address -> slot) through the same `next` link, which a slot uses either for the
 * free list or for its bucket, never both. The table grows by doubling under the
 * write lock; lookups on the data path hold the read lock.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "net/demux.h"
#include "net/magicsock.h"
#include "net/pktbox.h"

#define SLOT_BITS 20
#define SLOT_MASK ((1u << SLOT_BITS) - 1)
#define GEN_MAX ((1u << (32 - SLOT_BITS)) - 1)
#define SLOTS_MIN 16u

_Static_assert(MAGICSOCK_HANDLES_MAX <= (1u << SLOT_BITS), "handle slots fit the id");

struct slot {
	uint32_t id;	      /* 0: free */
	uint32_t gen;	      /* of the last id issued from this slot */
	int next;	      /* free list, or the bucket chain while indexed */
	bool indexed;	      /* the inbound index maps path to this slot */
	struct endpoint path; /* AF_UNSPEC: none */
};

struct magicsock {
	struct magicsock_ops ops;
	struct pktbox boxes[MAGICSOCK_BOX_MAX];
	bool boxes_ready;

	pthread_rwlock_t lock; /* the table and the index */
	struct slot *slots;
	unsigned n_slots, n_handles;
	int free_head;
	int *buckets;
	unsigned n_buckets; /* a power of two, at least twice n_slots */
	uint64_t seed;
	/* Paths in the index; 0 means receive has nothing to map and skips the lock. */
	atomic_uint indexed;

	atomic_uint_fast64_t rx_wg, rx_stun, rx_disco, rx_junk;
	atomic_uint_fast64_t tx_no_path, tx_raw, tx_raw_bad;
};

/* --- the inbound index (write lock held, or read lock for lookups) --- */

static unsigned bucket_of(const struct magicsock *ms, const struct endpoint *ep)
{
	uint64_t h = ms->seed, w[2];

	if (ep->sa.sa_family == AF_INET) {
		h = hash_mix64(h ^ ((uint64_t)ep->in4.sin_addr.s_addr << 16 | ep->in4.sin_port));
	} else {
		memcpy(w, &ep->in6.sin6_addr, sizeof(w));
		h = hash_mix64(h ^ w[0]);
		h = hash_mix64(h ^ w[1]);
		h = hash_mix64(h ^ ((uint64_t)ep->in6.sin6_scope_id << 16 | ep->in6.sin6_port));
	}
	return (unsigned)(h & (ms->n_buckets - 1));
}

static int index_lookup(const struct magicsock *ms, const struct endpoint *ep)
{
	int i;

	for (i = ms->buckets[bucket_of(ms, ep)]; i >= 0; i = ms->slots[i].next)
		if (endpoint_equal(&ms->slots[i].path, ep))
			return i;
	return -1;
}

static void index_del(struct magicsock *ms, int slot)
{
	int *link = &ms->buckets[bucket_of(ms, &ms->slots[slot].path)];

	while (*link != slot)
		link = &ms->slots[*link].next;
	*link = ms->slots[slot].next;
	ms->slots[slot].next = -1;
	ms->slots[slot].indexed = false;
	atomic_fetch_sub(&ms->indexed, 1);
}

/* The path of `slot` claims its address: a handle that held it before lets go. */
static void index_add(struct magicsock *ms, int slot)
{
	struct slot *s = &ms->slots[slot];
	int old = index_lookup(ms, &s->path);
	unsigned b;

	if (old >= 0)
		index_del(ms, old);
	b = bucket_of(ms, &s->path);
	s->next = ms->buckets[b];
	ms->buckets[b] = slot;
	s->indexed = true;
	atomic_fetch_add(&ms->indexed, 1);
}

/* Doubles the slots (and the buckets with them): 0 or -ENOMEM / -ENOSPC. */
static int table_grow(struct magicsock *ms)
{
	unsigned n = ms->n_slots ? ms->n_slots * 2 : SLOTS_MIN, nb = 2 * n, i, b;
	struct slot *slots;
	int *buckets;

	if (ms->n_slots >= MAGICSOCK_HANDLES_MAX)
		return -ENOSPC;
	n = MIN(n, MAGICSOCK_HANDLES_MAX);
	buckets = malloc(nb * sizeof(*buckets));
	if (!buckets)
		return -ENOMEM;
	slots = realloc(ms->slots, n * sizeof(*slots));
	if (!slots) {
		free(buckets);
		return -ENOMEM;
	}
	memset(slots + ms->n_slots, 0, (n - ms->n_slots) * sizeof(*slots));
	for (i = n; i-- > ms->n_slots;) {
		slots[i].next = ms->free_head;
		ms->free_head = (int)i;
	}
	ms->slots = slots;
	ms->n_slots = n;
	/* Rehash what is indexed into the larger bucket array. */
	free(ms->buckets);
	ms->buckets = buckets;
	ms->n_buckets = nb;
	for (b = 0; b < nb; b++)
		buckets[b] = -1;
	for (i = 0; i < ms->n_slots; i++) {
		if (!slots[i].indexed)
			continue;
		b = bucket_of(ms, &slots[i].path);
		slots[i].next = buckets[b];
		buckets[b] = (int)i;
	}
	return 0;
}

/* The slot of a live handle, or -1. */
static int slot_of(const struct magicsock *ms, const struct endpoint *h)
{
	uint32_t slot;

	if (!endpoint_is_handle(h))
		return -1;
	slot = h->handle.id & SLOT_MASK;
	if (slot >= ms->n_slots || !h->handle.id || ms->slots[slot].id != h->handle.id)
		return -1;
	return (int)slot;
}

/* --- handles (control plane) --- */

int magicsock_handle_new(struct magicsock *ms, struct endpoint *ret)
{
	struct slot *s;
	int r = 0, i;

	pthread_rwlock_wrlock(&ms->lock);
	if (ms->free_head < 0) {
		r = table_grow(ms);
		if (r < 0)
			goto out;
	}
	i = ms->free_head;
	s = &ms->slots[i];
	ms->free_head = s->next;
	s->gen = s->gen >= GEN_MAX ? 1 : s->gen + 1;
	s->id = s->gen << SLOT_BITS | (uint32_t)i;
	s->next = -1;
	s->indexed = false;
	memset(&s->path, 0, sizeof(s->path));
	ms->n_handles++;
	endpoint_handle_set(ret, s->id);
out:
	pthread_rwlock_unlock(&ms->lock);
	return r;
}

void magicsock_handle_free(struct magicsock *ms, const struct endpoint *handle)
{
	struct slot *s;
	int i;

	pthread_rwlock_wrlock(&ms->lock);
	i = slot_of(ms, handle);
	if (i >= 0) {
		s = &ms->slots[i];
		if (s->indexed)
			index_del(ms, i);
		s->id = 0;
		memset(&s->path, 0, sizeof(s->path));
		s->next = ms->free_head;
		ms->free_head = i;
		ms->n_handles--;
	}
	pthread_rwlock_unlock(&ms->lock);
}

int magicsock_handle_set_path(struct magicsock *ms, const struct endpoint *handle,
			      const struct endpoint *path)
{
	struct slot *s;
	int r = 0, i;

	if (path && path->sa.sa_family != AF_UNSPEC && !endpoint_is_addr(path))
		return -EINVAL;
	pthread_rwlock_wrlock(&ms->lock);
	i = slot_of(ms, handle);
	if (i < 0) {
		r = -ENOENT;
		goto out;
	}
	s = &ms->slots[i];
	if (s->indexed)
		index_del(ms, i);
	if (path && endpoint_is_addr(path)) {
		s->path = *path;
		index_add(ms, i);
	} else {
		memset(&s->path, 0, sizeof(s->path));
	}
out:
	pthread_rwlock_unlock(&ms->lock);
	return r;
}

int magicsock_resolve(struct magicsock *ms, const struct endpoint *ep, struct endpoint *ret)
{
	int r = -ENOENT, i;

	if (endpoint_is_addr(ep)) {
		*ret = *ep;
		return 0;
	}
	pthread_rwlock_rdlock(&ms->lock);
	i = slot_of(ms, ep);
	if (i >= 0 && endpoint_is_addr(&ms->slots[i].path)) {
		*ret = ms->slots[i].path;
		r = 0;
	}
	pthread_rwlock_unlock(&ms->lock);
	return r;
}

/* --- receive (the reader thread) --- */

/* Known paths become their handles; consecutive datagrams from one source hash once. */
static void sources_map(struct magicsock *ms, struct pkt **pkts, unsigned n)
{
	struct endpoint last_src, last_mapped;
	bool have_last = false;
	unsigned i;
	int slot;

	pthread_rwlock_rdlock(&ms->lock);
	for (i = 0; i < n; i++) {
		struct endpoint *ep = &pkts[i]->ep;

		if (have_last && endpoint_equal(ep, &last_src)) {
			*ep = last_mapped;
			continue;
		}
		last_src = *ep;
		if (endpoint_is_addr(ep) && (slot = index_lookup(ms, ep)) >= 0)
			endpoint_handle_set(ep, ms->slots[slot].id);
		last_mapped = *ep;
		have_last = true;
	}
	pthread_rwlock_unlock(&ms->lock);
}

static void box_put(struct magicsock *ms, enum magicsock_box box, struct pkt **pkts, unsigned n)
{
	if (n)
		pktbox_put(&ms->boxes[box], pkts, n);
}

static void rx_batch(struct magicsock *ms, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	struct pkt *stun[MAGICSOCK_BATCH], *disco[MAGICSOCK_BATCH], *junk[MAGICSOCK_BATCH];
	unsigned n_wg = 0, n_stun = 0, n_disco = 0, n_junk = 0, i;

	/* WireGuard datagrams stay in pkts, moved to the front in arrival order. */
	for (i = 0; i < n; i++) {
		struct pkt *p = pkts[i];

		switch (demux_classify(p->data, p->len)) {
		case DEMUX_WG:
			pkts[n_wg++] = p;
			break;
		case DEMUX_STUN:
			stun[n_stun++] = p;
			break;
		case DEMUX_DISCO:
			disco[n_disco++] = p;
			break;
		default:
			junk[n_junk++] = p;
			break;
		}
	}
	if (n_wg) {
		if (atomic_load_explicit(&ms->indexed, memory_order_relaxed))
			sources_map(ms, pkts, n_wg);
		atomic_fetch_add_explicit(&ms->rx_wg, n_wg, memory_order_relaxed);
		ms->ops.wg_rx(ms->ops.ctx, pkts, n_wg, now_ns);
	}
	if (likely(n_wg == n))
		return;
	if (n_stun) {
		atomic_fetch_add(&ms->rx_stun, n_stun);
		box_put(ms, MAGICSOCK_BOX_STUN, stun, n_stun);
	}
	if (n_disco) {
		atomic_fetch_add(&ms->rx_disco, n_disco);
		box_put(ms, MAGICSOCK_BOX_DISCO, disco, n_disco);
	}
	if (n_junk) {
		atomic_fetch_add(&ms->rx_junk, n_junk);
		pkt_free(junk, n_junk);
	}
}

void magicsock_rx(struct magicsock *ms, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	unsigned k;

	while (n) {
		k = MIN(n, (unsigned)MAGICSOCK_BATCH);
		rx_batch(ms, pkts, k, now_ns);
		pkts += k;
		n -= k;
	}
}

unsigned magicsock_box_take(struct magicsock *ms, enum magicsock_box box, struct pkt **ret,
			    unsigned n)
{
	if ((unsigned)box >= MAGICSOCK_BOX_MAX)
		return 0;
	return pktbox_take(&ms->boxes[box], ret, n);
}

/* --- send (any thread) --- */

void magicsock_send(struct magicsock *ms, struct pkt **pkts, unsigned n)
{
	unsigned i, k = 0, dropped = 0;
	bool locked = false;
	int slot;

	for (i = 0; i < n; i++) {
		struct pkt *p = pkts[i];

		if (endpoint_is_handle(&p->ep)) {
			if (!locked) {
				pthread_rwlock_rdlock(&ms->lock);
				locked = true;
			}
			slot = slot_of(ms, &p->ep);
			if (slot < 0 || !endpoint_is_addr(&ms->slots[slot].path)) {
				pkt_free(&p, 1);
				dropped++;
				continue;
			}
			p->ep = ms->slots[slot].path;
		}
		pkts[k++] = p;
	}
	if (locked)
		pthread_rwlock_unlock(&ms->lock);
	if (unlikely(dropped))
		atomic_fetch_add(&ms->tx_no_path, dropped);
	if (k)
		ms->ops.wire_send(ms->ops.ctx, pkts, k);
}

void magicsock_send_raw(struct magicsock *ms, struct pkt **pkts, unsigned n)
{
	unsigned i, k = 0;

	for (i = 0; i < n; i++) {
		if (endpoint_is_addr(&pkts[i]->ep))
			pkts[k++] = pkts[i];
		else
			pkt_free(&pkts[i], 1);
	}
	if (k < n)
		atomic_fetch_add(&ms->tx_raw_bad, n - k);
	if (k) {
		atomic_fetch_add(&ms->tx_raw, k);
		ms->ops.wire_send(ms->ops.ctx, pkts, k);
	}
}

/* --- lifetime --- */

static void box_notify_stun(void *ctx)
{
	struct magicsock *ms = ctx;

	ms->ops.box_notify(ms->ops.ctx, MAGICSOCK_BOX_STUN);
}

static void box_notify_disco(void *ctx)
{
	struct magicsock *ms = ctx;

	ms->ops.box_notify(ms->ops.ctx, MAGICSOCK_BOX_DISCO);
}

struct magicsock *magicsock_new(const struct magicsock_ops *ops)
{
	void (*const notify[MAGICSOCK_BOX_MAX])(void *) = {box_notify_stun, box_notify_disco};
	pthread_rwlockattr_t attr;
	struct magicsock *ms;
	unsigned b;

	ms = calloc(1, sizeof(*ms));
	if (!ms)
		return NULL;
	ms->ops = *ops;
	ms->free_head = -1;
	/* Readers come back every batch from several threads: never starve the control plane. */
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&ms->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (crypto_random(&ms->seed, sizeof(ms->seed)) < 0)
		goto fail;
	for (b = 0; b < MAGICSOCK_BOX_MAX; b++) {
		if (pktbox_init(&ms->boxes[b], ops->box_cap[b], ops->box_notify ? notify[b] : NULL,
				ms) < 0) {
			while (b--)
				pktbox_destroy(&ms->boxes[b]);
			goto fail;
		}
	}
	ms->boxes_ready = true;
	/* The first slots and buckets, so that lookups never see an empty table. */
	if (table_grow(ms) < 0)
		goto fail;
	return ms;
fail:
	magicsock_free(ms);
	return NULL;
}

void magicsock_free(struct magicsock *ms)
{
	unsigned b;

	if (!ms)
		return;
	if (ms->boxes_ready)
		for (b = 0; b < MAGICSOCK_BOX_MAX; b++)
			pktbox_destroy(&ms->boxes[b]);
	pthread_rwlock_destroy(&ms->lock);
	free(ms->buckets);
	free(ms->slots);
	free(ms);
}

void magicsock_stats_get(struct magicsock *ms, struct magicsock_stats *ret)
{
	unsigned b;

	memset(ret, 0, sizeof(*ret));
	ret->rx_wg = atomic_load(&ms->rx_wg);
	ret->rx_stun = atomic_load(&ms->rx_stun);
	ret->rx_disco = atomic_load(&ms->rx_disco);
	ret->rx_junk = atomic_load(&ms->rx_junk);
	for (b = 0; b < MAGICSOCK_BOX_MAX; b++)
		ret->box_drops[b] = pktbox_drops(&ms->boxes[b]);
	ret->tx_no_path = atomic_load(&ms->tx_no_path);
	ret->tx_raw = atomic_load(&ms->tx_raw);
	ret->tx_raw_bad = atomic_load(&ms->tx_raw_bad);
	pthread_rwlock_rdlock(&ms->lock);
	ret->handles = ms->n_handles;
	pthread_rwlock_unlock(&ms->lock);
}
