/* SPDX-License-Identifier: MIT */
/*
 * The stateful part of the filter: packet parsing, the connection table and the verdicts
 * (filter.h has the rules of the game).
 *
 * Connection table: FILTER_CT_SHARDS shards, each a mutex, a preallocated array of entries,
 * hash chains by index and a list by last use (newest first). A flow lives in the shard its
 * key hashes to; a full shard reuses its least recently used entry. An entry's origin is
 *   OURS      the node sent the first packet (filter_tx): replies pass;
 *   ADMITTED  a rule admitted its first packet, under rules generation gen;
 *   DENIED    it was ADMITTED, then new rules did not admit it: a tombstone, so that the
 *             node's own replies (filter_tx) do not reopen it.
 * Entries time out lazily: a lookup that finds an expired one removes it.
 *
 * A batch of received packets is parsed and hashed first, then judged shard by shard (one
 * taking of each shard's lock a batch, the table's memory prefetched meanwhile): a packet's
 * verdict reads and writes its own shard only, so this gives the verdicts of one packet after
 * the other. A packet right behind one of its own flow takes that one's pass without the
 * table (follows_ok says when).
 *
 * Rules are read under an epoch guard (guard_enter/guard_leave, once per batch): a reader
 * announces itself in the counter of the current epoch's parity and checks the epoch did not
 * move meanwhile; filter_rules_set swaps the pointer, moves the epoch on and waits until the
 * old parity's counter drains, after which no reader can hold the old rules.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/hash.h"
#include "base/pages.h"
#include "base/pkt.h"
#include "filter/filter.h"
#include "filter/internal.h"
#include "proto/netmap.h"

#define NIL UINT32_MAX
/* The shard is the hash's top 4 bits (FILTER_CT_SHARDS), the chain its low bits. */
_Static_assert(FILTER_CT_SHARDS == 16, "shard = hash >> 60");

enum { ORIGIN_OURS, ORIGIN_ADMITTED, ORIGIN_DENIED };
enum { SEEN_OUT = 1, SEEN_IN = 2, SEEN_FIN = 4, SEEN_RST = 8 };

/* A flow in the node's orientation. */
struct ct_key {
	uint8_t local[16], remote[16];
	uint16_t lport, rport;
	uint8_t proto, family;
};

/*
 * One cache line: a lookup that finds its flow reads one line, not two (72 bytes straddled
 * lines for most entries). gen keeps the generation's low 32 bits: it is only compared for
 * equality, and an entry would need to sleep through exactly 2^32 filter changes to be
 * mistaken.
 */
struct ct_entry {
	struct ct_key key;
	uint8_t origin, seen;
	uint32_t next;	       /* hash chain */
	uint32_t newer, older; /* use list */
	uint32_t gen;	       /* ADMITTED/DENIED: the rules generation that judged it */
	uint64_t last_ns;
};
_Static_assert(sizeof(struct ct_entry) == 64, "a flow is one cache line");

struct shard {
	pthread_mutex_t mu;
	/*
	 * Chain heads stored complemented (~index; 0 is an empty chain), so the table comes
	 * zeroed from pages_zalloc and a page of it is resident only once a flow hashes there:
	 * filling 16 x 16 KiB with NIL at start kept 256 KiB on every idle node (issue 14),
	 * and so did calloc, which clears a block it takes from the heap.
	 */
	uint32_t *heads;
	uint32_t mask;
	struct ct_entry *e;
	uint32_t cap, used, free_head;
	uint32_t newest, oldest, count;
	uint64_t evicted;
} __attribute__((aligned(64)));

struct filter {
	atomic_bool active;
	_Atomic(struct filter_rules *) rules;
	_Atomic uint64_t gen;
	_Atomic uint64_t epoch;
	_Atomic uint64_t readers[2] __attribute__((aligned(64)));
	pthread_mutex_t set_mu;
	struct filter_rules *deny; /* empty rules */
	uint64_t seed;
	unsigned ct_max;
	_Atomic uint64_t drops[FILTER_DROP__MAX] __attribute__((aligned(64)));
	_Atomic uint64_t fragments;
	/* Replies to refused packets: at most reject_rate in each second of the clock. */
	_Atomic unsigned reject_rate;
	_Atomic uint64_t reject_sec;
	_Atomic uint64_t reject_count;
	_Atomic uint64_t rejects_sent, rejects_limited;
	struct shard shards[FILTER_CT_SHARDS];
};

static const char *const drop_names[FILTER_DROP__MAX] = {
    [FILTER_DROP_NO_RULE] = "no_rule",	     [FILTER_DROP_REVOKED] = "revoked",
    [FILTER_DROP_BAD_PACKET] = "bad_packet", [FILTER_DROP_FRAGMENT] = "fragment",
    [FILTER_DROP_ICMP_ERROR] = "icmp_error",
};

const char *filter_drop_name(enum filter_drop d)
{
	return (unsigned)d < FILTER_DROP__MAX ? drop_names[d] : "?";
}

/* --- parsing --- */

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static bool icmp_is_error(int family, uint8_t type)
{
	if (family == AF_INET)
		return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
	return type >= 1 && type <= 4;
}

/*
 * The transport header at l4 (len bytes). A quoted packet (in an ICMP error) needs only its
 * first 8 bytes (RFC 792). -1: too short.
 */
static int l4_parse(struct flow *f, const uint8_t *l4, size_t len, bool quoted)
{
	uint8_t echo_req = f->family == AF_INET ? 8 : 128,
		echo_rep = f->family == AF_INET ? 0 : 129;

	f->l4 = l4;
	f->l4_len = len;
	f->kind = K_PLAIN;
	if (f->proto == 6) {
		if (len < (quoted ? 8u : 20u))
			return -1;
		f->sport = rd16(l4);
		f->dport = rd16(l4 + 2);
		f->tcp_flags = quoted ? 0 : l4[13];
	} else if (filter_proto_has_ports(f->proto)) {
		if (len < 8)
			return -1;
		f->sport = rd16(l4);
		f->dport = rd16(l4 + 2);
	} else if ((f->family == AF_INET && f->proto == 1) ||
		   (f->family == AF_INET6 && f->proto == 58)) {
		if (len < 8)
			return -1;
		if (l4[0] == echo_req || l4[0] == echo_rep) {
			f->kind = l4[0] == echo_req ? K_ECHO_REQUEST : K_ECHO_REPLY;
			f->sport = f->dport = rd16(l4 + 4);
		} else if (icmp_is_error(f->family, l4[0])) {
			f->kind = K_ICMP_ERROR;
			f->l4 = l4 + 8;
			f->l4_len = len - 8;
		} else {
			f->kind = K_ICMP_OTHER;
		}
	}
	return 0;
}

int filter_ip_parse(struct flow *f, const uint8_t *p, size_t len, bool quoted)
{
	memset(f, 0, sizeof(*f));
	if (len < 1)
		return FILTER_DROP_BAD_PACKET;
	if (p[0] >> 4 == 4) {
		size_t hl = (size_t)(p[0] & 15) * 4, tot;
		uint16_t frag;

		if (len < 20 || hl < 20 || hl > len)
			return FILTER_DROP_BAD_PACKET;
		tot = rd16(p + 2);
		if (!quoted) {
			if (tot < hl || tot > len)
				return FILTER_DROP_BAD_PACKET;
			len = tot;
		}
		f->family = AF_INET;
		f->proto = p[9];
		f->src = p + 12;
		f->dst = p + 16;
		frag = rd16(p + 6);
		if (frag & 0x1fff) {
			/* RFC 1858: a TCP fragment at offset 8 can rewrite the flags of the first.
			 */
			if ((frag & 0x1fff) == 1 && f->proto == 6)
				return FILTER_DROP_FRAGMENT;
			f->nonfirst = true;
			return 0;
		}
		f->fragment = frag & 0x2000;
		if (l4_parse(f, p + hl, len - hl, quoted) < 0)
			return (frag & 0x2000) ? FILTER_DROP_FRAGMENT : FILTER_DROP_BAD_PACKET;
		return 0;
	}
	if (p[0] >> 4 == 6) {
		size_t off = 40;
		uint8_t nh;
		bool fragmented = false;
		unsigned i;

		if (len < 40)
			return FILTER_DROP_BAD_PACKET;
		if (!quoted) {
			if ((size_t)rd16(p + 4) + 40 > len)
				return FILTER_DROP_BAD_PACKET;
			len = (size_t)rd16(p + 4) + 40;
		}
		f->family = AF_INET6;
		f->src = p + 8;
		f->dst = p + 24;
		nh = p[6];
		/* Extension headers, a bounded number of them. */
		for (i = 0; i < 8; i++) {
			size_t hl;

			if (nh != 0 && nh != 43 && nh != 44 && nh != 51 && nh != 60)
				break;
			if (off + 8 > len)
				return FILTER_DROP_BAD_PACKET;
			if (nh == 44) {
				uint16_t fo = rd16(p + off + 2);

				if (fo & 0xfff8) {
					f->proto = p[off];
					f->nonfirst = true;
					return 0;
				}
				fragmented = true;
				hl = 8;
			} else if (nh == 51) {
				hl = ((size_t)p[off + 1] + 2) * 4;
			} else {
				hl = ((size_t)p[off + 1] + 1) * 8;
			}
			nh = p[off];
			off += hl;
			if (off > len)
				return FILTER_DROP_BAD_PACKET;
		}
		if (nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60)
			return FILTER_DROP_BAD_PACKET; /* more than 8 extension headers */
		f->proto = nh;
		f->fragment = fragmented;
		if (l4_parse(f, p + off, len - off, quoted) < 0)
			return fragmented ? FILTER_DROP_FRAGMENT : FILTER_DROP_BAD_PACKET;
		return 0;
	}
	return FILTER_DROP_BAD_PACKET;
}

/* The key of a packet the node sends (outbound) or receives. */
static void key_make(struct ct_key *k, const struct flow *f, bool outbound)
{
	unsigned n = f->family == AF_INET ? 4 : 16;

	memset(k, 0, sizeof(*k));
	k->family = (uint8_t)f->family;
	k->proto = f->proto;
	memcpy(k->local, outbound ? f->src : f->dst, n);
	memcpy(k->remote, outbound ? f->dst : f->src, n);
	k->lport = outbound ? f->sport : f->dport;
	k->rport = outbound ? f->dport : f->sport;
}

/*
 * Is k the key of the packet fl (sent by the node: outbound)? Read from the packet's own
 * bytes: comparing with a key just built would load words that several narrow stores wrote,
 * which the CPU cannot forward (the stall was half the cost of a packet of a run).
 */
static bool key_is(const struct ct_key *k, const struct flow *f, bool outbound)
{
	const uint8_t *l = outbound ? f->src : f->dst, *r = outbound ? f->dst : f->src;

	if (k->family != f->family || k->proto != f->proto ||
	    k->lport != (outbound ? f->sport : f->dport) ||
	    k->rport != (outbound ? f->dport : f->sport))
		return false;
	/* Constant sizes: compared inline, not by a call. */
	if (f->family == AF_INET)
		return !memcmp(k->local, l, 4) && !memcmp(k->remote, r, 4);
	return !memcmp(k->local, l, 16) && !memcmp(k->remote, r, 16);
}

/*
 * Keyed by the secret seed (remote parties choose the tuples). An IPv4 flow's addresses
 * fill one word: two rounds of the mix instead of five (the zero words of the unused
 * address bytes added a serial 5 ns to every lookup).
 */
static uint64_t key_hash(const struct filter *f, const struct ct_key *k)
{
	uint64_t w[4], tail, h = f->seed;
	uint32_t l, r;
	unsigned i;

	tail = (uint64_t)k->lport << 32 | (uint64_t)k->rport << 16 | (uint64_t)k->proto << 8 |
	       k->family;
	if (k->family == AF_INET) {
		memcpy(&l, k->local, 4);
		memcpy(&r, k->remote, 4);
		return hash_mix64(hash_mix64(h ^ ((uint64_t)l << 32 | r)) ^ tail);
	}
	memcpy(w, k->local, 16);
	memcpy(w + 2, k->remote, 16);
	for (i = 0; i < 4; i++)
		h = hash_mix64(h ^ w[i]);
	return hash_mix64(h ^ tail);
}

/* --- the connection table (shard locked by the caller) --- */

static uint64_t entry_timeout(const struct ct_entry *e)
{
	switch (e->key.proto) {
	case 6:
		if (e->seen & SEEN_RST)
			return FILTER_TCP_RST_NS;
		if (e->seen & SEEN_FIN)
			return FILTER_TCP_FIN_NS;
		if ((e->seen & (SEEN_IN | SEEN_OUT)) == (SEEN_IN | SEEN_OUT))
			return FILTER_TCP_ESTABLISHED_NS;
		return FILTER_TCP_ONEWAY_NS;
	case 17:
		if ((e->seen & (SEEN_IN | SEEN_OUT)) == (SEEN_IN | SEEN_OUT))
			return FILTER_UDP_BOTH_NS;
		return FILTER_UDP_ONEWAY_NS;
	case 1:
	case 58:
		return FILTER_ICMP_NS;
	default:
		return FILTER_OTHER_NS;
	}
}

static bool entry_expired(const struct ct_entry *e, uint64_t now_ns)
{
	/* Threads' clocks race: a last use "after" now is fresh. */
	return now_ns > e->last_ns && now_ns - e->last_ns > entry_timeout(e);
}

static void list_unlink(struct shard *s, uint32_t i)
{
	struct ct_entry *e = &s->e[i];

	if (e->newer != NIL)
		s->e[e->newer].older = e->older;
	else
		s->newest = e->older;
	if (e->older != NIL)
		s->e[e->older].newer = e->newer;
	else
		s->oldest = e->newer;
}

static void list_push(struct shard *s, uint32_t i)
{
	struct ct_entry *e = &s->e[i];

	e->newer = NIL;
	e->older = s->newest;
	if (s->newest != NIL)
		s->e[s->newest].newer = i;
	s->newest = i;
	if (s->oldest == NIL)
		s->oldest = i;
}

static void entry_touch(struct shard *s, uint32_t i, uint64_t now_ns)
{
	if (now_ns > s->e[i].last_ns)
		s->e[i].last_ns = now_ns;
	if (s->newest != i) {
		list_unlink(s, i);
		list_push(s, i);
	}
}

/*
 * Chain heads are written under the shard's lock but also read without it, only to prefetch
 * (filter_rx_batch): relaxed atomics, so that the stale value such a read may see is not a
 * data race.
 */
static uint32_t head_get(const struct shard *s, uint64_t h)
{
	return ~__atomic_load_n(&s->heads[h & s->mask], __ATOMIC_RELAXED);
}

static void head_set(struct shard *s, uint64_t h, uint32_t i)
{
	__atomic_store_n(&s->heads[h & s->mask], ~i, __ATOMIC_RELAXED);
}

static void entry_remove(struct filter *f, struct shard *s, uint32_t i)
{
	uint64_t h = key_hash(f, &s->e[i].key);
	uint32_t j = head_get(s, h);

	if (j == i) {
		head_set(s, h, s->e[i].next);
	} else {
		while (s->e[j].next != i)
			j = s->e[j].next;
		s->e[j].next = s->e[i].next;
	}
	list_unlink(s, i);
	s->e[i].next = s->free_head;
	s->free_head = i;
	s->count--;
}

static uint32_t entry_find(struct filter *f, struct shard *s, const struct ct_key *k, uint64_t h,
			   uint64_t now_ns)
{
	uint32_t i = head_get(s, h);

	for (; i != NIL; i = s->e[i].next) {
		if (memcmp(&s->e[i].key, k, sizeof(*k)))
			continue;
		if (entry_expired(&s->e[i], now_ns)) {
			entry_remove(f, s, i);
			return NIL;
		}
		return i;
	}
	return NIL;
}

static uint32_t entry_add(struct filter *f, struct shard *s, const struct ct_key *k, uint64_t h,
			  uint8_t origin, uint64_t now_ns)
{
	struct ct_entry *e;
	uint32_t i;

	if (s->free_head != NIL) {
		i = s->free_head;
		s->free_head = s->e[i].next;
	} else if (s->used < s->cap) {
		i = s->used++;
	} else {
		/* Full: the least recently used flow goes. */
		i = s->oldest;
		entry_remove(f, s, i);
		s->free_head = s->e[i].next;
		s->evicted++;
	}
	e = &s->e[i];
	e->key = *k;
	e->origin = origin;
	e->seen = 0;
	e->gen = 0;
	e->last_ns = now_ns;
	e->next = head_get(s, h);
	head_set(s, h, i);
	list_push(s, i);
	s->count++;
	return i;
}

static void seen_update(struct ct_entry *e, const struct flow *fl, uint8_t dir)
{
	e->seen |= dir;
	if (fl->proto == 6) {
		if (fl->tcp_flags & TCP_RST)
			e->seen |= SEEN_RST;
		if (fl->tcp_flags & TCP_FIN)
			e->seen |= SEEN_FIN;
	}
}

/* --- rules under the epoch guard --- */

static unsigned guard_enter(struct filter *f)
{
	for (;;) {
		uint64_t e = atomic_load(&f->epoch);

		atomic_fetch_add(&f->readers[e & 1], 1);
		if (atomic_load(&f->epoch) == e)
			return (unsigned)(e & 1);
		atomic_fetch_sub(&f->readers[e & 1], 1);
	}
}

static void guard_leave(struct filter *f, unsigned idx)
{
	atomic_fetch_sub_explicit(&f->readers[idx], 1, memory_order_release);
}

int filter_new(unsigned ct_max, uint64_t seed, struct filter **ret)
{
	static const struct netmap_filter none;
	struct filter *f;
	unsigned i, per;
	int e = -ENOMEM;

	if (!ct_max)
		ct_max = FILTER_CT_MAX_DEFAULT;
	per = (ct_max + FILTER_CT_SHARDS - 1) / FILTER_CT_SHARDS;
	f = aligned_alloc(64, (sizeof(*f) + 63) & ~(size_t)63);
	if (!f)
		return -ENOMEM;
	memset(f, 0, sizeof(*f));
	f->seed = seed;
	f->ct_max = per * FILTER_CT_SHARDS;
	pthread_mutex_init(&f->set_mu, NULL);
	for (i = 0; i < FILTER_CT_SHARDS; i++) {
		struct shard *s = &f->shards[i];
		uint32_t nb = 1;

		while (nb < per)
			nb *= 2;
		pthread_mutex_init(&s->mu, NULL);
		s->mask = nb - 1;
		s->cap = per;
		/* Both written only where flows land (pages.h). */
		s->heads = pages_zalloc(nb, sizeof(*s->heads));
		s->e = pages_zalloc(per, sizeof(*s->e));
		s->free_head = s->newest = s->oldest = NIL;
		if (!s->heads || !s->e)
			goto out;
	}
	e = filter_rules_compile(&none, &f->deny);
	if (e < 0)
		goto out;
	*ret = f;
	f = NULL;
out:
	filter_free(f);
	return e;
}

void filter_free(struct filter *f)
{
	struct filter_rules *r;
	unsigned i;

	if (!f)
		return;
	r = atomic_load(&f->rules);
	if (r != f->deny)
		filter_rules_free(r);
	filter_rules_free(f->deny);
	for (i = 0; i < FILTER_CT_SHARDS; i++) {
		pages_free(f->shards[i].heads, (size_t)f->shards[i].mask + 1,
			   sizeof(*f->shards[i].heads));
		pages_free(f->shards[i].e, f->shards[i].cap, sizeof(*f->shards[i].e));
		pthread_mutex_destroy(&f->shards[i].mu);
	}
	pthread_mutex_destroy(&f->set_mu);
	free(f);
}

void filter_rules_set(struct filter *f, struct filter_rules *r)
{
	struct filter_rules *old;
	uint64_t e;

	pthread_mutex_lock(&f->set_mu);
	old = atomic_exchange(&f->rules, r);
	atomic_fetch_add(&f->gen, 1);
	atomic_store(&f->active, r != NULL);
	e = atomic_fetch_add(&f->epoch, 1);
	while (atomic_load(&f->readers[e & 1]))
		sched_yield();
	pthread_mutex_unlock(&f->set_mu);
	if (old != f->deny)
		filter_rules_free(old);
}

void filter_deny_all(struct filter *f)
{
	filter_rules_set(f, f->deny);
}

bool filter_active(const struct filter *f)
{
	return atomic_load_explicit(&f->active, memory_order_relaxed);
}

/* --- verdicts --- */

static bool admits(const struct filter_rules *r, const struct flow *fl)
{
	return filter_rules_match_u128(r, fl->family, fl->proto,
				       filter_addr_u128(fl->family, fl->src),
				       filter_addr_u128(fl->family, fl->dst), fl->dport);
}

static struct shard *shard_of(struct filter *f, uint64_t h)
{
	return &f->shards[h >> 60];
}

/*
 * May a packet right behind one of its own flow take that packet's answer without the table?
 * A batch has one time and one rules generation, and the first packet already refreshed the
 * entry; but FIN and RST change the entry's timeout, and an echo request has its own rule
 * (and when it passes on the tuple of our own echo, it refreshes nothing). So a run is of
 * packets that are none of these, the first included. Single streams come in runs.
 */
static bool follows_ok(const struct flow *fl)
{
	return fl->kind != K_ECHO_REQUEST &&
	       !(fl->proto == 6 && (fl->tcp_flags & (TCP_FIN | TCP_RST)));
}

/*
 * A received packet between its parse and its verdict. The verdict needs the rules, the clock
 * and at most one shard of the table, the one its key hashes to (an ICMP error's key is the
 * flow it quotes): filter_rx_batch judges a batch shard by shard, each shard's packets in
 * their order under one taking of its lock, which gives the verdicts that judging the packets
 * one by one would.
 */
enum { RX_PASS = -1, RX_TABLE = -2, RX_ICMP_ERROR = -3 };

struct rx_item {
	struct flow fl;
	/*
	 * RX_ICMP_ERROR: the flow it quotes, in the node's orientation. Not made for a packet
	 * that follows (rx_chunk makes it if the packet has to be judged after all).
	 */
	struct ct_key k;
	uint64_t h;
	int d;	      /* RX_PASS, a drop reason, or still to judge: RX_TABLE, RX_ICMP_ERROR */
	bool follows; /* the same flow as the packet before it, which may answer for it */
};

/*
 * Parses a packet: its verdict, or RX_TABLE/RX_ICMP_ERROR with h (and k, unless it follows).
 * lead: the first packet of the run of RX_TABLE packets of one flow right before it, if any.
 */
static int rx_prepare(struct filter *f, struct rx_item *it, const struct rx_item *lead,
		      const uint8_t *p, size_t len)
{
	struct flow in;
	int d;

	it->follows = false;
	d = filter_ip_parse(&it->fl, p, len, false);
	if (d)
		return d;
	if (it->fl.nonfirst) {
		atomic_fetch_add_explicit(&f->fragments, 1, memory_order_relaxed);
		return RX_PASS;
	}
	if (it->fl.kind == K_ICMP_ERROR) {
		/* Nested errors are not flows. */
		if (filter_ip_parse(&in, it->fl.l4, it->fl.l4_len, true) ||
		    in.family != it->fl.family || in.nonfirst || in.kind == K_ICMP_ERROR)
			return FILTER_DROP_ICMP_ERROR;
		key_make(&it->k, &in, true);
		it->h = key_hash(f, &it->k);
		return RX_ICMP_ERROR;
	}
	if (lead && follows_ok(&it->fl) && key_is(&lead->k, &it->fl, false)) {
		it->follows = true;
		it->h = lead->h;
		return RX_TABLE;
	}
	key_make(&it->k, &it->fl, false);
	it->h = key_hash(f, &it->k);
	return RX_TABLE;
}

/* The verdict of a prepared packet (it->d RX_TABLE or RX_ICMP_ERROR); s is its shard, locked. */
static int rx_judge(struct filter *f, struct shard *s, const struct filter_rules *r, uint32_t gen,
		    const struct rx_item *it, uint64_t now_ns)
{
	const struct flow *fl = &it->fl;
	struct ct_entry *e;
	uint32_t i = entry_find(f, s, &it->k, it->h, now_ns);

	if (it->d == RX_ICMP_ERROR) {
		/* It passes if it quotes a packet of a known flow (one the node sent). */
		if ((i != NIL && s->e[i].origin != ORIGIN_DENIED) || admits(r, fl))
			return RX_PASS;
		return FILTER_DROP_ICMP_ERROR;
	}
	if (i == NIL) {
		if (!admits(r, fl))
			return FILTER_DROP_NO_RULE;
		i = entry_add(f, s, &it->k, it->h, ORIGIN_ADMITTED, now_ns);
		s->e[i].gen = gen;
		seen_update(&s->e[i], fl, SEEN_IN);
		return RX_PASS;
	}
	e = &s->e[i];
	switch (e->origin) {
	case ORIGIN_OURS:
		/* Our echo request does not let the peer ping us with its identifier. */
		if (fl->kind == K_ECHO_REQUEST)
			return admits(r, fl) ? RX_PASS : FILTER_DROP_NO_RULE;
		break;
	case ORIGIN_ADMITTED:
	case ORIGIN_DENIED:
		if (e->gen != gen) {
			e->gen = gen;
			e->origin = admits(r, fl) ? ORIGIN_ADMITTED : ORIGIN_DENIED;
		}
		if (e->origin == ORIGIN_DENIED) {
			entry_touch(s, i, now_ns);
			return FILTER_DROP_REVOKED;
		}
		break;
	}
	seen_update(e, fl, SEEN_IN);
	entry_touch(s, i, now_ns);
	return RX_PASS;
}

/*
 * The last flow a batch of sent packets noted: a packet of the same flow right behind it
 * needs no table (follows_ok).
 */
struct batch_memo {
	bool valid;
	struct ct_key key;
};

static bool memo_hit(struct batch_memo *m, const struct flow *fl)
{
	return m && m->valid && follows_ok(fl) && key_is(&m->key, fl, true);
}

static void memo_set(struct batch_memo *m, const struct ct_key *k)
{
	if (m) {
		m->valid = true;
		m->key = *k;
	}
}

static void tx_note(struct filter *f, const uint8_t *p, size_t len, uint64_t now_ns,
		    struct batch_memo *memo)
{
	struct flow fl;
	struct ct_key k;
	struct shard *s;
	uint64_t h;
	uint32_t i;
	bool starts;

	/* What the node's own stack sends is not judged; unparsable packets open nothing. */
	if (filter_ip_parse(&fl, p, len, false) || fl.nonfirst || fl.kind == K_ICMP_ERROR)
		return;
	/* Strict TCP: only a SYN opens a flow (a reply to a revoked flow must not). */
	starts = fl.kind != K_ECHO_REPLY &&
		 (fl.proto != 6 || (fl.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST)) == TCP_SYN);
	/* A SYN may reopen a revoked flow: never skipped. */
	if (!(fl.proto == 6 && (fl.tcp_flags & TCP_SYN)) && memo_hit(memo, &fl))
		return;
	key_make(&k, &fl, true);
	h = key_hash(f, &k);
	s = shard_of(f, h);
	pthread_mutex_lock(&s->mu);
	i = entry_find(f, s, &k, h, now_ns);
	if (i == NIL) {
		if (!starts)
			goto out;
		i = entry_add(f, s, &k, h, ORIGIN_OURS, now_ns);
	} else if (s->e[i].origin == ORIGIN_DENIED && starts && fl.proto == 6) {
		/* The node opens a new connection on the tuple of a revoked one. */
		s->e[i].origin = ORIGIN_OURS;
		s->e[i].seen = 0;
	}
	seen_update(&s->e[i], &fl, SEEN_OUT);
	entry_touch(s, i, now_ns);
	memo_set(memo, &k);
out:
	pthread_mutex_unlock(&s->mu);
}

/*
 * Packets of a batch judged at once: as many as a uint64_t has bits, their parsed state
 * (about 7 KiB) on the stack.
 */
#define RX_CHUNK 64

/*
 * Judges pkts[off, off + m) (m <= RX_CHUNK), moving those that pass to pkts[kept...] in their
 * order; returns the new kept. Inside the guard.
 *
 * In three passes, so that a batch of many flows waits for memory once, not once per packet:
 * parse and hash everything (prefetching each flow's chain head), then prefetch the entries
 * those heads name, then judge shard by shard under one taking of each shard's lock.
 */
static unsigned rx_chunk(struct filter *f, const struct filter_rules *r, uint32_t gen,
			 struct pkt **pkts, unsigned kept, unsigned off, unsigned m,
			 uint64_t now_ns)
{
	struct rx_item it[RX_CHUNK];
	uint64_t in_shard[FILTER_CT_SHARDS] = {0}, drops[FILTER_DROP__MAX] = {0};
	const struct rx_item *lead = NULL;
	unsigned j, k;

	for (j = 0; j < m; j++) {
		const struct pkt *p = pkts[off + j];

		it[j].d = rx_prepare(f, &it[j], lead, p->data, p->len);
		if (it[j].d != RX_TABLE || !follows_ok(&it[j].fl))
			lead = NULL;
		else if (!it[j].follows)
			lead = &it[j];
		if (it[j].d != RX_TABLE && it[j].d != RX_ICMP_ERROR)
			continue;
		in_shard[it[j].h >> 60] |= 1ULL << j;
		if (!it[j].follows) {
			const struct shard *s = shard_of(f, it[j].h);

			__builtin_prefetch(&s->heads[it[j].h & s->mask]);
		}
	}
	for (j = 0; j < m; j++) {
		/* Unlocked: only a hint, which a concurrent change may make stale. */
		if ((it[j].d == RX_TABLE || it[j].d == RX_ICMP_ERROR) && !it[j].follows) {
			const struct shard *s = shard_of(f, it[j].h);
			uint32_t i = head_get(s, it[j].h);

			if (i != NIL)
				__builtin_prefetch(&s->e[i]);
		}
	}
	for (k = 0; k < FILTER_CT_SHARDS; k++) {
		struct shard *s = &f->shards[k];
		uint64_t b = in_shard[k];

		if (!b)
			continue;
		pthread_mutex_lock(&s->mu);
		for (; b; b &= b - 1) {
			j = (unsigned)__builtin_ctzll(b);
			/* The packet before it is of its flow, in this shard: judged already. */
			if (it[j].follows && it[j - 1].d == RX_PASS) {
				it[j].d = RX_PASS;
				continue;
			}
			if (it[j].follows)
				key_make(&it[j].k, &it[j].fl, false);
			it[j].d = rx_judge(f, s, r, gen, &it[j], now_ns);
		}
		pthread_mutex_unlock(&s->mu);
	}
	for (j = 0; j < m; j++) {
		struct pkt *p = pkts[off + j];

		if (it[j].d >= 0) {
			drops[it[j].d]++;
			continue;
		}
		/* Passing packets keep their order; dropped ones collect behind them. */
		pkts[off + j] = pkts[kept];
		pkts[kept++] = p;
	}
	for (k = 0; k < FILTER_DROP__MAX; k++)
		if (drops[k])
			atomic_fetch_add_explicit(&f->drops[k], drops[k], memory_order_relaxed);
	return kept;
}

unsigned filter_rx_batch(struct filter *f, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	struct filter_rules *r;
	unsigned off, kept = 0, idx;
	uint32_t gen;

	if (!filter_active(f))
		return n;
	idx = guard_enter(f);
	/* gen before rules (filter_rules_set bumps it after the swap): never new gen, old rules. */
	gen = (uint32_t)atomic_load(&f->gen);
	r = atomic_load(&f->rules);
	if (!r)
		kept = n;
	for (off = 0; r && off < n; off += RX_CHUNK)
		kept = rx_chunk(f, r, gen, pkts, kept, off, n - off < RX_CHUNK ? n - off : RX_CHUNK,
				now_ns);
	guard_leave(f, idx);
	return kept;
}

void filter_tx_batch(struct filter *f, struct pkt *const *pkts, unsigned n, uint64_t now_ns)
{
	struct batch_memo memo = {.valid = false};
	unsigned i;

	if (!filter_active(f))
		return;
	for (i = 0; i < n; i++)
		tx_note(f, pkts[i]->data, pkts[i]->len, now_ns, &memo);
}

bool filter_rx(struct filter *f, const uint8_t *p, size_t len, uint64_t now_ns)
{
	struct filter_rules *r;
	struct rx_item it;
	unsigned idx;
	uint32_t gen;
	int d = RX_PASS;

	if (!filter_active(f))
		return true;
	idx = guard_enter(f);
	gen = (uint32_t)atomic_load(&f->gen);
	r = atomic_load(&f->rules);
	if (r)
		d = it.d = rx_prepare(f, &it, NULL, p, len);
	if (r && (d == RX_TABLE || d == RX_ICMP_ERROR)) {
		struct shard *s = shard_of(f, it.h);

		pthread_mutex_lock(&s->mu);
		d = rx_judge(f, s, r, gen, &it, now_ns);
		pthread_mutex_unlock(&s->mu);
	}
	guard_leave(f, idx);
	if (d >= 0)
		atomic_fetch_add_explicit(&f->drops[d], 1, memory_order_relaxed);
	return d < 0;
}

void filter_tx(struct filter *f, const uint8_t *p, size_t len, uint64_t now_ns)
{
	if (filter_active(f))
		tx_note(f, p, len, now_ns, NULL);
}

void filter_stats_get(struct filter *f, struct filter_stats *ret)
{
	unsigned i;

	memset(ret, 0, sizeof(*ret));
	ret->active = filter_active(f);
	for (i = 0; i < FILTER_DROP__MAX; i++)
		ret->drops[i] = atomic_load_explicit(&f->drops[i], memory_order_relaxed);
	ret->fragments = atomic_load_explicit(&f->fragments, memory_order_relaxed);
	ret->ct_max = f->ct_max;
	ret->rules_gen = atomic_load(&f->gen);
	ret->reject_rate = atomic_load_explicit(&f->reject_rate, memory_order_relaxed);
	ret->rejects_sent = atomic_load_explicit(&f->rejects_sent, memory_order_relaxed);
	ret->rejects_limited = atomic_load_explicit(&f->rejects_limited, memory_order_relaxed);
	for (i = 0; i < FILTER_CT_SHARDS; i++) {
		pthread_mutex_lock(&f->shards[i].mu);
		ret->ct_entries += f->shards[i].count;
		ret->ct_evicted += f->shards[i].evicted;
		pthread_mutex_unlock(&f->shards[i].mu);
	}
}

void filter_reject_set(struct filter *f, unsigned per_sec)
{
	atomic_store_explicit(&f->reject_rate, per_sec, memory_order_relaxed);
}

bool filter_reject_on(const struct filter *f)
{
	return atomic_load_explicit(&f->reject_rate, memory_order_relaxed) != 0;
}

size_t filter_reject(struct filter *f, const uint8_t *pkt, size_t len, uint8_t *out, size_t cap,
		     uint64_t now_ns)
{
	unsigned rate = atomic_load_explicit(&f->reject_rate, memory_order_relaxed);
	uint64_t sec = now_ns / 1000000000ULL, was;
	size_t n;

	if (!rate)
		return 0;
	n = filter_reject_build(pkt, len, out, cap);
	if (!n)
		return 0;
	/*
	 * A fixed window per second of the clock, without a lock: the thread that moves the
	 * window resets the count; one racing with it may spend a token of either window.
	 */
	was = atomic_load_explicit(&f->reject_sec, memory_order_relaxed);
	if (was != sec && atomic_compare_exchange_strong(&f->reject_sec, &was, sec))
		atomic_store_explicit(&f->reject_count, 0, memory_order_relaxed);
	if (atomic_fetch_add_explicit(&f->reject_count, 1, memory_order_relaxed) >= rate) {
		atomic_fetch_add_explicit(&f->rejects_limited, 1, memory_order_relaxed);
		return 0;
	}
	atomic_fetch_add_explicit(&f->rejects_sent, 1, memory_order_relaxed);
	return n;
}
