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
 *
 * Aliases (magicsock_handle_alias_add) live in a table of their own, allocated only as
 * path discovery verifies addresses: a chained hash (address -> alias) and, per slot, a
 * list of its aliases, at most MAGICSOCK_ALIASES, the one verified least recently
 * giving way to a new one.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/hash.h"
#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "net/demux.h"
#include "net/magicsock.h"
#include "net/pktbox.h"
#include "proto/relay.h"

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
	/* The relay path: the peer's node key and home region (0: ours). */
	bool key_indexed; /* the key index maps key to this slot */
	int key_next;	  /* its chain in the key index */
	uint32_t region;
	uint8_t key[MAGICSOCK_KEY_LEN];
	/*
	 * The rule of magicsock.h, "Paths": the last WireGuard datagram from the direct
	 * path, the first direct send since then (0: none), the last probe copy. Any thread
	 * under the read lock, so atomics.
	 */
	atomic_uint_fast64_t direct_rx_ns, unanswered_ns, probe_ns;
	/*
	 * Path discovery (magicsock_handle_disco): the direct path is trusted until then; the
	 * path whose trust ran out still gets copies until then (stale); the handle's last
	 * send; events not yet taken (EV_*).
	 */
	bool disco;
	atomic_uint_fast64_t trust_until_ns, stale_until_ns, tx_ns;
	atomic_uint events;
	/* Its aliases: the first (a list through alias.sib), how many. */
	int alias_head;
	unsigned n_aliases;
};

/* An address path discovery verified for a handle other than its path (magicsock.h). */
struct alias {
	struct endpoint ep;
	int slot; /* -1: free */
	int next; /* the bucket chain, or the free list */
	int sib;  /* the slot's next alias */
	/* When it was last verified, in alias_tick's count (the least recent gives way). */
	atomic_uint_fast64_t seen;
};

#define EV_ACTIVE (1u << MAGICSOCK_EVENT_ACTIVE)
#define EV_SILENT (1u << MAGICSOCK_EVENT_SILENT)
#define EV_SILENT_SEEN (1u << 7) /* reported in this silence: not again until it answers */

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
	/* Paths and aliases indexed; 0 means receive has nothing to map and skips the lock. */
	atomic_uint indexed;
	int *key_buckets; /* node key -> slot, n_buckets of them */
	/* The aliases: n_alias_slots of them, twice as many buckets, a free list. */
	struct alias *aliases;
	unsigned n_alias_slots, n_aliases;
	int alias_free;
	int *alias_buckets;
	atomic_uint_fast64_t alias_tick;

	/* The relay (magicsock_relay_attach), under the write lock; called under the read lock. */
	magicsock_relay_send_fn relay_send;
	void *relay_ctx;
	atomic_uint home_region;
	atomic_bool relay_ready; /* the home relay is connected (magicsock_relay_ready) */

	/* magicsock_events_listen, under the write lock; called under the read lock. */
	void (*events_fn)(void *ctx);
	void *events_ctx;
	atomic_bool events_pending;
	/*
	 * One bit per slot with events not yet taken, so a take reads a word per 64 handles
	 * rather than every handle. Sized with the slots (write lock), set under the read lock.
	 */
	atomic_uint_fast64_t *ev_words;

	atomic_uint_fast64_t rx_wg, rx_stun, rx_disco, rx_junk;
	atomic_uint_fast64_t tx_no_path, tx_raw, tx_raw_bad;
	atomic_uint_fast64_t tx_relay, tx_probe, rx_relay, rx_relay_unknown;
	atomic_uint_fast64_t tx_silent_copy, tx_stale_copy;
};

/* --- the inbound index (write lock held, or read lock for lookups) --- */

static uint64_t addr_hash(const struct magicsock *ms, const struct endpoint *ep)
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
	return h;
}

static unsigned bucket_of(const struct magicsock *ms, const struct endpoint *ep)
{
	return (unsigned)(addr_hash(ms, ep) & (ms->n_buckets - 1));
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

/* --- the key index (node key -> slot), for datagrams that arrive through a relay --- */

static unsigned key_bucket_of(const struct magicsock *ms, const uint8_t key[MAGICSOCK_KEY_LEN])
{
	uint64_t w[2];

	memcpy(w, key, sizeof(w));
	return (unsigned)(hash_mix64(hash_mix64(ms->seed ^ w[0]) ^ w[1]) & (ms->n_buckets - 1));
}

static int key_lookup(const struct magicsock *ms, const uint8_t key[MAGICSOCK_KEY_LEN])
{
	int i;

	for (i = ms->key_buckets[key_bucket_of(ms, key)]; i >= 0; i = ms->slots[i].key_next)
		if (!memcmp(ms->slots[i].key, key, MAGICSOCK_KEY_LEN))
			return i;
	return -1;
}

static void key_del(struct magicsock *ms, int slot)
{
	int *link = &ms->key_buckets[key_bucket_of(ms, ms->slots[slot].key)];

	while (*link != slot)
		link = &ms->slots[*link].key_next;
	*link = ms->slots[slot].key_next;
	ms->slots[slot].key_next = -1;
	ms->slots[slot].key_indexed = false;
}

/* Like index_add: one key maps to the handle that claimed it last. */
static void key_add(struct magicsock *ms, int slot)
{
	struct slot *s = &ms->slots[slot];
	int old = key_lookup(ms, s->key);
	unsigned b;

	if (old >= 0)
		key_del(ms, old);
	b = key_bucket_of(ms, s->key);
	s->key_next = ms->key_buckets[b];
	ms->key_buckets[b] = slot;
	s->key_indexed = true;
}

/* --- the alias index (address -> alias -> slot) --- */

static unsigned alias_bucket_of(const struct magicsock *ms, const struct endpoint *ep)
{
	return (unsigned)(addr_hash(ms, ep) & (2 * ms->n_alias_slots - 1));
}

static int alias_lookup(const struct magicsock *ms, const struct endpoint *ep)
{
	int i;

	if (!ms->n_aliases)
		return -1;
	for (i = ms->alias_buckets[alias_bucket_of(ms, ep)]; i >= 0; i = ms->aliases[i].next)
		if (endpoint_equal(&ms->aliases[i].ep, ep))
			return i;
	return -1;
}

static void alias_del(struct magicsock *ms, int a)
{
	struct alias *al = &ms->aliases[a];
	struct slot *s = &ms->slots[al->slot];
	int *link = &ms->alias_buckets[alias_bucket_of(ms, &al->ep)];

	while (*link != a)
		link = &ms->aliases[*link].next;
	*link = al->next;
	link = &s->alias_head;
	while (*link != a)
		link = &ms->aliases[*link].sib;
	*link = al->sib;
	s->n_aliases--;
	al->slot = -1;
	al->next = ms->alias_free;
	ms->alias_free = a;
	ms->n_aliases--;
	atomic_fetch_sub(&ms->indexed, 1);
}

/* Doubles the alias table: 0 or -ENOMEM. */
static int alias_grow(struct magicsock *ms)
{
	unsigned n = ms->n_alias_slots ? ms->n_alias_slots * 2 : SLOTS_MIN, i, b;
	struct alias *al;
	int *buckets;

	if (n > 2 * MAGICSOCK_HANDLES_MAX)
		return -ENOMEM;
	buckets = malloc(2 * n * sizeof(*buckets));
	if (!buckets)
		return -ENOMEM;
	/* Aliases hold atomics: moving them needs the write lock, which every caller holds. */
	al = realloc(ms->aliases, n * sizeof(*al));
	if (!al) {
		free(buckets);
		return -ENOMEM;
	}
	memset(al + ms->n_alias_slots, 0, (n - ms->n_alias_slots) * sizeof(*al));
	for (i = n; i-- > ms->n_alias_slots;) {
		al[i].slot = -1;
		al[i].next = ms->alias_free;
		ms->alias_free = (int)i;
	}
	ms->aliases = al;
	ms->n_alias_slots = n;
	free(ms->alias_buckets);
	ms->alias_buckets = buckets;
	for (b = 0; b < 2 * n; b++)
		buckets[b] = -1;
	for (i = 0; i < n; i++) {
		if (al[i].slot < 0)
			continue;
		b = alias_bucket_of(ms, &al[i].ep);
		al[i].next = buckets[b];
		buckets[b] = (int)i;
	}
	return 0;
}

/* `ep` becomes an alias of `slot` (taken from any other): 0 or -ENOMEM. */
static int alias_add(struct magicsock *ms, int slot, const struct endpoint *ep)
{
	struct slot *s = &ms->slots[slot];
	uint64_t tick = atomic_fetch_add(&ms->alias_tick, 1) + 1;
	int a = alias_lookup(ms, ep), i, oldest;
	unsigned b;
	int r;

	if (a >= 0 && ms->aliases[a].slot == slot) {
		atomic_store(&ms->aliases[a].seen, tick);
		return 0;
	}
	if (a >= 0)
		alias_del(ms, a);
	if (s->n_aliases >= MAGICSOCK_ALIASES) {
		oldest = s->alias_head;
		for (i = s->alias_head; i >= 0; i = ms->aliases[i].sib)
			if (atomic_load(&ms->aliases[i].seen) <
			    atomic_load(&ms->aliases[oldest].seen))
				oldest = i;
		alias_del(ms, oldest);
	}
	if (ms->alias_free < 0) {
		r = alias_grow(ms);
		if (r < 0)
			return r;
	}
	a = ms->alias_free;
	ms->alias_free = ms->aliases[a].next;
	ms->aliases[a].ep = *ep;
	endpoint_src_clear(&ms->aliases[a].ep);
	ms->aliases[a].slot = slot;
	atomic_store(&ms->aliases[a].seen, tick);
	b = alias_bucket_of(ms, ep);
	ms->aliases[a].next = ms->alias_buckets[b];
	ms->alias_buckets[b] = a;
	ms->aliases[a].sib = s->alias_head;
	s->alias_head = a;
	s->n_aliases++;
	ms->n_aliases++;
	atomic_fetch_add(&ms->indexed, 1);
	return 0;
}

/* Doubles the slots (and the buckets with them): 0 or -ENOMEM / -ENOSPC. */
static int table_grow(struct magicsock *ms)
{
	unsigned n = ms->n_slots ? ms->n_slots * 2 : SLOTS_MIN, nb = 2 * n, i, b;
	struct slot *slots;
	int *buckets, *key_buckets;
	atomic_uint_fast64_t *words;

	if (ms->n_slots >= MAGICSOCK_HANDLES_MAX)
		return -ENOSPC;
	n = MIN(n, MAGICSOCK_HANDLES_MAX);
	buckets = malloc(nb * sizeof(*buckets));
	key_buckets = malloc(nb * sizeof(*key_buckets));
	words = calloc((n + 63) / 64, sizeof(*words));
	if (!buckets || !key_buckets || !words) {
		free(buckets);
		free(key_buckets);
		free(words);
		return -ENOMEM;
	}
	/* Slots hold atomics: moving them needs the write lock, which every caller holds. */
	slots = realloc(ms->slots, n * sizeof(*slots));
	if (!slots) {
		free(buckets);
		free(key_buckets);
		free(words);
		return -ENOMEM;
	}
	for (i = 0; i < (ms->n_slots + 63) / 64; i++)
		atomic_init(&words[i], atomic_load(&ms->ev_words[i]));
	free(ms->ev_words);
	ms->ev_words = words;
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
	free(ms->key_buckets);
	ms->key_buckets = key_buckets;
	for (b = 0; b < nb; b++)
		buckets[b] = key_buckets[b] = -1;
	for (i = 0; i < ms->n_slots; i++) {
		if (slots[i].indexed) {
			b = bucket_of(ms, &slots[i].path);
			slots[i].next = buckets[b];
			buckets[b] = (int)i;
		}
		if (slots[i].key_indexed) {
			b = key_bucket_of(ms, slots[i].key);
			slots[i].key_next = key_buckets[b];
			key_buckets[b] = (int)i;
		}
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

/* The plain rule ("Paths"), nothing confirmed or trusted, no event pending. */
static void rule_reset(struct slot *s)
{
	s->disco = false;
	atomic_store(&s->direct_rx_ns, 0);
	atomic_store(&s->unanswered_ns, 0);
	atomic_store(&s->probe_ns, 0);
	atomic_store(&s->trust_until_ns, 0);
	atomic_store(&s->stale_until_ns, 0);
	atomic_store(&s->tx_ns, 0);
	atomic_store(&s->events, 0);
}

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
	s->key_next = -1;
	s->key_indexed = false;
	s->region = 0;
	memset(s->key, 0, sizeof(s->key));
	s->alias_head = -1;
	s->n_aliases = 0;
	rule_reset(s);
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
		if (s->key_indexed)
			key_del(ms, i);
		while (s->alias_head >= 0)
			alias_del(ms, s->alias_head);
		s->id = 0;
		memset(&s->path, 0, sizeof(s->path));
		s->next = ms->free_head;
		ms->free_head = i;
		ms->n_handles--;
	}
	pthread_rwlock_unlock(&ms->lock);
}

/* The slot's path becomes `path` (an address or none); false when it already was. */
static bool path_move(struct magicsock *ms, int i, const struct endpoint *path)
{
	struct slot *s = &ms->slots[i];

	if (path && endpoint_is_addr(path) && s->indexed && endpoint_equal(&s->path, path))
		return false;
	if (s->indexed)
		index_del(ms, i);
	if (path && endpoint_is_addr(path)) {
		s->path = *path;
		index_add(ms, i);
	} else {
		memset(&s->path, 0, sizeof(s->path));
	}
	return true;
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
	if (!path_move(ms, i, path))
		goto out;
	/* Another address: not confirmed until it answers (path discovery's trust included). */
	atomic_store(&s->direct_rx_ns, 0);
	atomic_store(&s->unanswered_ns, 0);
	atomic_store(&s->trust_until_ns, 0);
	atomic_store(&s->stale_until_ns, 0);
out:
	pthread_rwlock_unlock(&ms->lock);
	return r;
}

int magicsock_handle_set_relay(struct magicsock *ms, const struct endpoint *handle,
			       const uint8_t *key, uint32_t region)
{
	struct slot *s;
	int r = 0, i;

	pthread_rwlock_wrlock(&ms->lock);
	i = slot_of(ms, handle);
	if (i < 0) {
		r = -ENOENT;
		goto out;
	}
	s = &ms->slots[i];
	if (s->key_indexed)
		key_del(ms, i);
	s->region = region;
	if (key) {
		memcpy(s->key, key, MAGICSOCK_KEY_LEN);
		key_add(ms, i);
	} else {
		memset(s->key, 0, sizeof(s->key));
	}
out:
	pthread_rwlock_unlock(&ms->lock);
	return r;
}

void magicsock_relay_attach(struct magicsock *ms, magicsock_relay_send_fn fn, void *ctx)
{
	pthread_rwlock_wrlock(&ms->lock);
	ms->relay_send = fn;
	ms->relay_ctx = ctx;
	pthread_rwlock_unlock(&ms->lock);
}

void magicsock_relay_home_set(struct magicsock *ms, uint32_t region)
{
	atomic_store(&ms->home_region, region);
}

void magicsock_relay_ready(struct magicsock *ms, bool ready)
{
	atomic_store(&ms->relay_ready, ready);
}

static uint64_t clock_now(const struct magicsock *ms)
{
	return ms->ops.now_ns ? ms->ops.now_ns(ms->ops.ctx) : time_now_ns();
}

/*
 * now - t, or 0 when t is later: the stamps come from every sending and receiving thread,
 * each with its own clock read, so another thread's may be later than this one's now (a
 * wrapped difference would read as silent, idle or unanswered for ages).
 */
static uint64_t age(uint64_t now, uint64_t t)
{
	return now > t ? now - t : 0;
}

/* Whether the direct path counts (magicsock.h, "Paths"). */
static bool direct_trusted(struct slot *s, uint64_t now)
{
	uint64_t un = atomic_load_explicit(&s->unanswered_ns, memory_order_relaxed);

	if (s->disco)
		return now < atomic_load_explicit(&s->trust_until_ns, memory_order_relaxed);
	return atomic_load_explicit(&s->direct_rx_ns, memory_order_relaxed) &&
	       (!un || age(now, un) < MAGICSOCK_DIRECT_UNANSWERED_NS);
}

/* Raises an event of the handle; the listener hears of the first one not yet taken. */
static void event_raise(struct magicsock *ms, struct slot *s, unsigned ev, unsigned gate)
{
	unsigned old = atomic_fetch_or_explicit(&s->events, ev | gate, memory_order_relaxed);

	size_t i = (size_t)(s - ms->slots);

	if (old & (ev | gate))
		return;
	atomic_fetch_or(&ms->ev_words[i / 64], (uint_fast64_t)1 << (i % 64));
	atomic_store(&ms->events_pending, true);
	if (ms->events_fn)
		ms->events_fn(ms->events_ctx);
}

static uint32_t relay_region_of(const struct magicsock *ms, const struct slot *s)
{
	if (!s->key_indexed || !ms->relay_send ||
	    !atomic_load_explicit(&ms->relay_ready, memory_order_relaxed))
		return 0;
	return s->region ? s->region : atomic_load_explicit(&ms->home_region, memory_order_relaxed);
}

int magicsock_handle_path(struct magicsock *ms, const struct endpoint *handle,
			  struct magicsock_path *ret)
{
	uint64_t now = clock_now(ms);
	struct slot *s;
	int r = 0, i;

	memset(ret, 0, sizeof(*ret));
	pthread_rwlock_rdlock(&ms->lock);
	i = slot_of(ms, handle);
	if (i < 0) {
		r = -ENOENT;
		goto out;
	}
	s = &ms->slots[i];
	ret->region = relay_region_of(ms, s);
	if (endpoint_is_addr(&s->path))
		ret->addr = s->path;
	ret->direct_confirmed = endpoint_is_addr(&s->path) && direct_trusted(s, now);
	if (endpoint_is_addr(&s->path) && (ret->direct_confirmed || !ret->region))
		ret->kind = MAGICSOCK_PATH_DIRECT;
	else if (ret->region)
		ret->kind = MAGICSOCK_PATH_RELAY;
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
static void sources_map(struct magicsock *ms, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	struct endpoint last_src, last_mapped;
	bool have_last = false;
	unsigned i;
	int slot;

	pthread_rwlock_rdlock(&ms->lock);
	for (i = 0; i < n; i++) {
		struct endpoint *ep = &pkts[i]->ep;

		/* The local address it arrived at (ep->src) stays: the reply leaves from it. */
		if (have_last && endpoint_equal(ep, &last_src)) {
			endpoint_set_remote(ep, &last_mapped);
			continue;
		}
		last_src = *ep;
		if (endpoint_is_addr(ep) && (slot = index_lookup(ms, ep)) >= 0) {
			struct slot *s = &ms->slots[slot];

			/* The handle replaces the peer's address; our side (the source) stays. */
			endpoint_handle_set(&last_mapped, s->id);
			endpoint_set_remote(ep, &last_mapped);
			/* The direct path answers: it is the peer's path from now (magicsock.h). */
			atomic_store_explicit(&s->direct_rx_ns, now_ns ? now_ns : 1,
					      memory_order_relaxed);
			atomic_store_explicit(&s->unanswered_ns, 0, memory_order_relaxed);
			if (atomic_load_explicit(&s->events, memory_order_relaxed) & EV_SILENT_SEEN)
				atomic_fetch_and(&s->events, ~EV_SILENT_SEEN);
		} else if (endpoint_is_addr(ep) && (slot = alias_lookup(ms, ep)) >= 0) {
			/*
			 * Another address of the peer's (magicsock.h, "Aliases"): the peer's, but
			 * no answer on the path we send on, so nothing about that path changes.
			 */
			endpoint_handle_set(&last_mapped, ms->slots[ms->aliases[slot].slot].id);
			endpoint_set_remote(ep, &last_mapped);
		}
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

static void rx_batch(struct magicsock *ms, struct pkt **pkts, unsigned n, uint64_t now_ns,
		     bool map_sources)
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
		if (map_sources && atomic_load_explicit(&ms->indexed, memory_order_relaxed))
			sources_map(ms, pkts, n_wg, now_ns);
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
		rx_batch(ms, pkts, k, now_ns, true);
		pkts += k;
		n -= k;
	}
}

void magicsock_relay_rx(struct magicsock *ms, struct pkt **pkts,
			const uint8_t (*keys)[MAGICSOCK_KEY_LEN], unsigned n, uint64_t now_ns)
{
	struct pkt *known[MAGICSOCK_BATCH], *unknown[MAGICSOCK_BATCH];
	unsigned i, k, n_known, n_unknown;
	int slot;

	while (n) {
		k = MIN(n, (unsigned)MAGICSOCK_BATCH);
		n_known = n_unknown = 0;
		/* The source of a relayed datagram is its sender's handle, never an address. */
		pthread_rwlock_rdlock(&ms->lock);
		for (i = 0; i < k; i++) {
			slot = key_lookup(ms, keys[i]);
			if (slot < 0) {
				unknown[n_unknown++] = pkts[i];
				continue;
			}
			endpoint_handle_set(&pkts[i]->ep, ms->slots[slot].id);
			known[n_known++] = pkts[i];
		}
		pthread_rwlock_unlock(&ms->lock);
		if (n_unknown) {
			atomic_fetch_add(&ms->rx_relay_unknown, n_unknown);
			pkt_free(unknown, n_unknown);
		}
		if (n_known) {
			atomic_fetch_add(&ms->rx_relay, n_known);
			rx_batch(ms, known, n_known, now_ns, false);
		}
		pkts += k;
		keys += k;
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

/* Packets for one relay region, handed over together (under the read lock, see attach). */
struct relay_batch {
	uint32_t region;
	unsigned n;
	struct pkt *pkts[MAGICSOCK_BATCH];
};

static void relay_flush(struct magicsock *ms, struct relay_batch *rb)
{
	if (!rb->n)
		return;
	atomic_fetch_add_explicit(&ms->tx_relay, rb->n, memory_order_relaxed);
	ms->relay_send(ms->relay_ctx, rb->region, rb->pkts, rb->n);
	rb->n = 0;
}

static bool is_initiation(const struct pkt *p)
{
	return p->len == 148 && p->data[0] == 1 && !p->data[1] && !p->data[2] && !p->data[3];
}

/* A copy of p from p's own pool (no malloc; none left: NULL). */
static struct pkt *pkt_copy(const struct pkt *p)
{
	struct pkt *c;

	if (!p->pool || pkt_pool_get(p->pool, &c, 1) != 1)
		return NULL;
	memcpy(c->data, p->data, p->len);
	c->len = p->len;
	c->ep = p->ep;
	return c;
}

/*
 * The probe of magicsock.h, "Paths": a copy of p for the direct path, from p's own pool
 * (no malloc; none left: no probe this time). NULL when none is due.
 */
static struct pkt *probe_copy(struct magicsock *ms, struct slot *s, const struct pkt *p,
			      uint64_t now)
{
	uint64_t last = atomic_load_explicit(&s->probe_ns, memory_order_relaxed);
	struct pkt *c;

	if (!is_initiation(p) && last && age(now, last) < MAGICSOCK_PROBE_INTERVAL_NS)
		return NULL;
	c = pkt_copy(p);
	if (!c)
		return NULL;
	endpoint_set_remote(&c->ep, &s->path);
	atomic_store_explicit(&s->probe_ns, now, memory_order_relaxed);
	atomic_fetch_add_explicit(&ms->tx_probe, 1, memory_order_relaxed);
	return c;
}

/*
 * A copy of p for the path whose trust ran out (magicsock.h, "Path discovery"), while it
 * is stale and has not gone unanswered: NULL when none is due.
 */
static struct pkt *stale_copy(struct magicsock *ms, struct slot *s, const struct pkt *p,
			      uint64_t now)
{
	uint64_t un = atomic_load_explicit(&s->unanswered_ns, memory_order_relaxed);
	uint64_t until = atomic_load_explicit(&s->stale_until_ns, memory_order_relaxed);
	uint64_t trust = atomic_load_explicit(&s->trust_until_ns, memory_order_relaxed);
	struct pkt *c;

	/* Trust that ran out before path discovery dropped the path counts the same. */
	if (trust)
		until = MAX(until, trust + MAGICSOCK_STALE_NS);
	if (now >= until || (un && age(now, un) >= MAGICSOCK_SILENT_NS))
		return NULL;
	c = pkt_copy(p);
	if (!c)
		return NULL;
	if (!un)
		atomic_store_explicit(&s->unanswered_ns, now ? now : 1, memory_order_relaxed);
	endpoint_set_remote(&c->ep, &s->path);
	atomic_fetch_add_explicit(&ms->tx_stale_copy, 1, memory_order_relaxed);
	return c;
}

/*
 * A handle under path discovery (magicsock.h, "Path discovery"): 1 direct, 2 relay, 0
 * dropped; *copy may get a relay copy (framed) while the trusted direct path is silent,
 * *probe a direct copy while the path whose trust ran out is stale.
 */
static int route_disco(struct magicsock *ms, struct slot *s, struct pkt *p, uint64_t now,
		       struct pkt **probe, struct pkt **copy)
{
	bool direct = endpoint_is_addr(&s->path), trusted = direct && direct_trusted(s, now);
	uint32_t region = relay_region_of(ms, s);
	uint64_t tx = atomic_load_explicit(&s->tx_ns, memory_order_relaxed), un;

	if (!tx || age(now, tx) >= MAGICSOCK_IDLE_NS)
		event_raise(ms, s, EV_ACTIVE, 0);
	if (!tx || age(now, tx) >= MAGICSOCK_TX_GRAIN_NS)
		atomic_store_explicit(&s->tx_ns, now ? now : 1, memory_order_relaxed);
	if (trusted || (direct && !region)) {
		un = atomic_load_explicit(&s->unanswered_ns, memory_order_relaxed);
		if (!un)
			atomic_store_explicit(&s->unanswered_ns, now, memory_order_relaxed);
		endpoint_set_remote(&p->ep, &s->path);
		if (trusted && region && un && age(now, un) >= MAGICSOCK_SILENT_NS) {
			/* Keep the traffic going through the relay while disco checks the path. */
			event_raise(ms, s, EV_SILENT, EV_SILENT_SEEN);
			*copy = pkt_copy(p);
			if (*copy && relay_pkt_push_send(*copy, s->key) < 0) {
				pkt_free(copy, 1);
				*copy = NULL;
			}
			if (*copy)
				atomic_fetch_add_explicit(&ms->tx_silent_copy, 1,
							  memory_order_relaxed);
		}
		return 1;
	}
	if (direct && region)
		*probe = stale_copy(ms, s, p, now);
	if (!region || relay_pkt_push_send(p, s->key) < 0)
		return 0;
	return 2;
}

/*
 * Where one handle's datagram goes: 1 direct (p->ep set), 2 relay (framed, into rb),
 * 0 dropped. *probe may get a direct copy, *copy a relay copy.
 */
static int route(struct magicsock *ms, struct slot *s, struct pkt *p, uint64_t now,
		 struct pkt **probe, struct pkt **copy)
{
	bool direct = endpoint_is_addr(&s->path);
	uint32_t region;
	uint64_t un;

	if (s->disco)
		return route_disco(ms, s, p, now, probe, copy);
	region = relay_region_of(ms, s);

	if (direct && (!region || direct_trusted(s, now))) {
		un = atomic_load_explicit(&s->unanswered_ns, memory_order_relaxed);
		if (!un)
			atomic_store_explicit(&s->unanswered_ns, now, memory_order_relaxed);
		/* The source the engine learned with the handle (our side) stays. */
		endpoint_set_remote(&p->ep, &s->path);
		return 1;
	}
	if (!region)
		return 0;
	if (direct)
		*probe = probe_copy(ms, s, p, now);
	if (relay_pkt_push_send(p, s->key) < 0)
		return 0;
	return 2;
}

void magicsock_send(struct magicsock *ms, struct pkt **pkts, unsigned n)
{
	struct relay_batch rb = {0};
	struct pkt *probes[MAGICSOCK_BATCH];
	unsigned i, k = 0, dropped = 0, n_probes = 0;
	bool locked = false;
	uint64_t now = 0;
	int slot;

	for (i = 0; i < n; i++) {
		struct pkt *p = pkts[i], *probe = NULL, *copy = NULL;
		uint32_t region;
		int how;

		if (!endpoint_is_handle(&p->ep)) {
			pkts[k++] = p;
			continue;
		}
		if (!locked) {
			pthread_rwlock_rdlock(&ms->lock);
			locked = true;
			now = clock_now(ms);
		}
		slot = slot_of(ms, &p->ep);
		how = slot < 0 ? 0 : route(ms, &ms->slots[slot], p, now, &probe, &copy);
		if (probe) {
			if (n_probes == ARRAY_SIZE(probes)) {
				ms->ops.wire_send(ms->ops.ctx, probes, n_probes);
				n_probes = 0;
			}
			probes[n_probes++] = probe;
		}
		if (copy) {
			region = relay_region_of(ms, &ms->slots[slot]);
			if (rb.n && (rb.region != region || rb.n == ARRAY_SIZE(rb.pkts)))
				relay_flush(ms, &rb);
			rb.region = region;
			rb.pkts[rb.n++] = copy;
		}
		if (how == 1) {
			pkts[k++] = p;
		} else if (how == 2) {
			region = relay_region_of(ms, &ms->slots[slot]);
			if (rb.n && (rb.region != region || rb.n == ARRAY_SIZE(rb.pkts)))
				relay_flush(ms, &rb);
			rb.region = region;
			rb.pkts[rb.n++] = p;
		} else {
			pkt_free(&p, 1);
			dropped++;
		}
	}
	relay_flush(ms, &rb);
	if (locked)
		pthread_rwlock_unlock(&ms->lock);
	if (unlikely(dropped))
		atomic_fetch_add(&ms->tx_no_path, dropped);
	if (n_probes)
		ms->ops.wire_send(ms->ops.ctx, probes, n_probes);
	if (k)
		ms->ops.wire_send(ms->ops.ctx, pkts, k);
}

void magicsock_src_stale(struct magicsock *ms, const struct endpoint_src *src)
{
	if (ms->ops.src_stale)
		ms->ops.src_stale(ms->ops.ctx, src);
}

/* A raw datagram to a handle: through its relay (framed, handed over) or false. */
static bool raw_relay(struct magicsock *ms, struct pkt *p)
{
	uint32_t region = 0;
	bool sent = false;
	int slot;

	pthread_rwlock_rdlock(&ms->lock);
	slot = slot_of(ms, &p->ep);
	if (slot >= 0)
		region = relay_region_of(ms, &ms->slots[slot]);
	if (region && relay_pkt_push_send(p, ms->slots[slot].key) == 0) {
		atomic_fetch_add(&ms->tx_relay, 1);
		ms->relay_send(ms->relay_ctx, region, &p, 1);
		sent = true;
	}
	pthread_rwlock_unlock(&ms->lock);
	return sent;
}

void magicsock_send_raw(struct magicsock *ms, struct pkt **pkts, unsigned n)
{
	unsigned i, k = 0, bad = 0;

	for (i = 0; i < n; i++) {
		if (endpoint_is_addr(&pkts[i]->ep)) {
			pkts[k++] = pkts[i];
		} else if (!endpoint_is_handle(&pkts[i]->ep) || !raw_relay(ms, pkts[i])) {
			pkt_free(&pkts[i], 1);
			bad++;
		}
	}
	if (bad)
		atomic_fetch_add(&ms->tx_raw_bad, bad);
	if (k) {
		atomic_fetch_add(&ms->tx_raw, k);
		ms->ops.wire_send(ms->ops.ctx, pkts, k);
	}
}

/* --- path discovery --- */

int magicsock_handle_disco(struct magicsock *ms, const struct endpoint *handle,
			   const struct endpoint *direct, uint64_t trust_until_ns)
{
	struct slot *s;
	int r = 0, i;

	if (direct && !endpoint_is_addr(direct))
		return -EINVAL;
	pthread_rwlock_wrlock(&ms->lock);
	i = slot_of(ms, handle);
	if (i < 0) {
		r = -ENOENT;
		goto out;
	}
	s = &ms->slots[i];
	s->disco = true;
	if (direct)
		path_move(ms, i, direct);
	/* A trusted path that is dropped stays the best guess for a while (stale). */
	if (!direct && atomic_load(&s->trust_until_ns))
		atomic_store(&s->stale_until_ns,
			     atomic_load(&s->trust_until_ns) + MAGICSOCK_STALE_NS);
	atomic_store(&s->trust_until_ns, direct ? trust_until_ns : 0);
	if (direct) {
		/* A pong: the path answers. */
		atomic_store(&s->unanswered_ns, 0);
		atomic_fetch_and(&s->events, ~EV_SILENT_SEEN);
	}
out:
	pthread_rwlock_unlock(&ms->lock);
	return r;
}

int magicsock_handle_release(struct magicsock *ms, const struct endpoint *handle)
{
	int i;

	pthread_rwlock_wrlock(&ms->lock);
	i = slot_of(ms, handle);
	if (i >= 0) {
		/* Path discovery's proofs go with it: the plain rule confirms the path afresh. */
		while (ms->slots[i].alias_head >= 0)
			alias_del(ms, ms->slots[i].alias_head);
		rule_reset(&ms->slots[i]);
	}
	pthread_rwlock_unlock(&ms->lock);
	return i < 0 ? -ENOENT : 0;
}

int magicsock_handle_alias_add(struct magicsock *ms, const struct endpoint *handle,
			       const struct endpoint *addr)
{
	bool known = false;
	int r = 0, i, a;

	if (!endpoint_is_addr(addr))
		return -EINVAL;
	/* Mostly known already (every heartbeat verifies the path again): the read lock. */
	pthread_rwlock_rdlock(&ms->lock);
	i = slot_of(ms, handle);
	if (i < 0) {
		r = -ENOENT;
	} else if ((a = alias_lookup(ms, addr)) >= 0 && ms->aliases[a].slot == i) {
		atomic_store(&ms->aliases[a].seen, atomic_fetch_add(&ms->alias_tick, 1) + 1);
		known = true;
	}
	pthread_rwlock_unlock(&ms->lock);
	if (r < 0 || known)
		return r;
	pthread_rwlock_wrlock(&ms->lock);
	i = slot_of(ms, handle);
	r = i < 0 ? -ENOENT : alias_add(ms, i, addr);
	pthread_rwlock_unlock(&ms->lock);
	return r;
}

bool magicsock_handle_kept(struct magicsock *ms, const struct endpoint *handle)
{
	bool kept;
	int i;

	pthread_rwlock_rdlock(&ms->lock);
	i = slot_of(ms, handle);
	kept = i >= 0 && ms->slots[i].disco;
	pthread_rwlock_unlock(&ms->lock);
	return kept;
}

uint64_t magicsock_handle_last_tx(struct magicsock *ms, const struct endpoint *handle)
{
	uint64_t t = 0;
	int i;

	pthread_rwlock_rdlock(&ms->lock);
	i = slot_of(ms, handle);
	if (i >= 0)
		t = atomic_load(&ms->slots[i].tx_ns);
	pthread_rwlock_unlock(&ms->lock);
	return t;
}

void magicsock_events_listen(struct magicsock *ms, void (*fn)(void *ctx), void *ctx)
{
	pthread_rwlock_wrlock(&ms->lock);
	ms->events_fn = fn;
	ms->events_ctx = ctx;
	pthread_rwlock_unlock(&ms->lock);
}

unsigned magicsock_events_take(struct magicsock *ms, struct magicsock_event *ret, unsigned n)
{
	unsigned k = 0, w, ev;
	uint_fast64_t bits;

	if (!atomic_exchange(&ms->events_pending, false))
		return 0;
	pthread_rwlock_rdlock(&ms->lock);
	for (w = 0; w < (ms->n_slots + 63) / 64; w++) {
		if (!atomic_load_explicit(&ms->ev_words[w], memory_order_relaxed))
			continue;
		bits = atomic_exchange(&ms->ev_words[w], 0);
		while (bits) {
			unsigned b = (unsigned)__builtin_ctzll(bits);
			struct slot *s = &ms->slots[w * 64 + b];

			if (k + 2 > n) {
				/* No room: the rest waits for the next take. */
				atomic_fetch_or(&ms->ev_words[w], bits);
				atomic_store(&ms->events_pending, true);
				goto out;
			}
			bits &= bits - 1;
			ev = atomic_fetch_and(&s->events, ~(EV_ACTIVE | EV_SILENT));
			if (!s->id)
				continue;
			for (unsigned e = 0; e < MAGICSOCK_EVENT_MAX; e++) {
				if (!(ev & (1u << e)))
					continue;
				endpoint_handle_set(&ret[k].handle, s->id);
				ret[k++].kind = (enum magicsock_event_kind)e;
			}
		}
	}
out:
	pthread_rwlock_unlock(&ms->lock);
	return k;
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
	ms->alias_free = -1;
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
	free(ms->key_buckets);
	free(ms->ev_words);
	free(ms->slots);
	free(ms->aliases);
	free(ms->alias_buckets);
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
	ret->tx_relay = atomic_load(&ms->tx_relay);
	ret->tx_probe = atomic_load(&ms->tx_probe);
	ret->rx_relay = atomic_load(&ms->rx_relay);
	ret->rx_relay_unknown = atomic_load(&ms->rx_relay_unknown);
	ret->tx_silent_copy = atomic_load(&ms->tx_silent_copy);
	ret->tx_stale_copy = atomic_load(&ms->tx_stale_copy);
	pthread_rwlock_rdlock(&ms->lock);
	ret->handles = ms->n_handles;
	ret->aliases = ms->n_aliases;
	pthread_rwlock_unlock(&ms->lock);
}
