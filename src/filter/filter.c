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

struct ct_entry {
	struct ct_key key;
	uint8_t origin, seen;
	uint32_t next;	       /* hash chain */
	uint32_t newer, older; /* use list */
	uint64_t gen;	       /* ADMITTED/DENIED: the rules generation that judged it */
	uint64_t last_ns;
};

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

static uint64_t key_hash(const struct filter *f, const struct ct_key *k)
{
	uint64_t w[5], h = f->seed;
	unsigned i;

	memcpy(w, k->local, 16);
	memcpy(w + 2, k->remote, 16);
	w[4] = (uint64_t)k->lport << 32 | (uint64_t)k->rport << 16 | (uint64_t)k->proto << 8 |
	       k->family;
	for (i = 0; i < 5; i++)
		h = hash_mix64(h ^ w[i]);
	return h;
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

static void entry_remove(struct filter *f, struct shard *s, uint32_t i)
{
	uint32_t *head = &s->heads[key_hash(f, &s->e[i].key) & s->mask], j = ~*head;

	if (j == i) {
		*head = ~s->e[i].next;
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
	uint32_t i = ~s->heads[h & s->mask];

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
	e->next = ~s->heads[h & s->mask];
	s->heads[h & s->mask] = ~i;
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

/* An ICMP error passes if it quotes a packet of a known flow (one the node sent). */
static int icmp_error_verdict(struct filter *f, const struct filter_rules *r, const struct flow *fl,
			      uint64_t now_ns)
{
	struct flow in;
	struct ct_key k;
	struct shard *s;
	uint64_t h;
	uint32_t i;
	bool known;

	if (filter_ip_parse(&in, fl->l4, fl->l4_len, true) || in.family != fl->family ||
	    in.nonfirst)
		return FILTER_DROP_ICMP_ERROR;
	/* Nested errors are not flows. */
	if (in.kind == K_ICMP_ERROR)
		return FILTER_DROP_ICMP_ERROR;
	key_make(&k, &in, true);
	h = key_hash(f, &k);
	s = &f->shards[h >> 60];
	pthread_mutex_lock(&s->mu);
	i = entry_find(f, s, &k, h, now_ns);
	known = i != NIL && s->e[i].origin != ORIGIN_DENIED;
	pthread_mutex_unlock(&s->mu);
	if (known || admits(r, fl))
		return -1;
	return FILTER_DROP_ICMP_ERROR;
}

/*
 * The last flow a batch let through (or noted): a packet of the same flow right behind it
 * gets the same answer without the table (a batch has one time and one rules generation,
 * and the first packet already refreshed the entry). Single streams come in runs.
 */
struct batch_memo {
	bool valid;
	struct ct_key key;
};

static bool memo_hit(struct batch_memo *m, const struct flow *fl, const struct ct_key *k)
{
	/* FIN and RST change the entry's timeout, echo requests have their own rule. */
	if (!m || fl->kind == K_ECHO_REQUEST ||
	    (fl->proto == 6 && (fl->tcp_flags & (TCP_FIN | TCP_RST))))
		return false;
	return m->valid && !memcmp(&m->key, k, sizeof(*k));
}

static void memo_set(struct batch_memo *m, const struct ct_key *k)
{
	if (m) {
		m->valid = true;
		m->key = *k;
	}
}

/* -1: pass, else the drop reason. Inside the guard. */
static int rx_verdict(struct filter *f, const struct filter_rules *r, uint64_t gen,
		      const uint8_t *p, size_t len, uint64_t now_ns, struct batch_memo *memo)
{
	struct flow fl;
	struct ct_key k;
	struct shard *s;
	struct ct_entry *e;
	uint64_t h;
	uint32_t i;
	int d;

	d = filter_ip_parse(&fl, p, len, false);
	if (d)
		return d;
	if (fl.nonfirst) {
		atomic_fetch_add_explicit(&f->fragments, 1, memory_order_relaxed);
		return -1;
	}
	if (fl.kind == K_ICMP_ERROR)
		return icmp_error_verdict(f, r, &fl, now_ns);
	key_make(&k, &fl, false);
	if (memo_hit(memo, &fl, &k))
		return -1;
	h = key_hash(f, &k);
	s = &f->shards[h >> 60];
	pthread_mutex_lock(&s->mu);
	i = entry_find(f, s, &k, h, now_ns);
	if (i == NIL) {
		d = FILTER_DROP_NO_RULE;
		if (admits(r, &fl)) {
			i = entry_add(f, s, &k, h, ORIGIN_ADMITTED, now_ns);
			s->e[i].gen = gen;
			seen_update(&s->e[i], &fl, SEEN_IN);
			d = -1;
		}
		goto out;
	}
	e = &s->e[i];
	switch (e->origin) {
	case ORIGIN_OURS:
		/* Our echo request does not let the peer ping us with its identifier. */
		if (fl.kind == K_ECHO_REQUEST) {
			d = admits(r, &fl) ? -1 : FILTER_DROP_NO_RULE;
			goto out;
		}
		break;
	case ORIGIN_ADMITTED:
	case ORIGIN_DENIED:
		if (e->gen != gen) {
			e->gen = gen;
			e->origin = admits(r, &fl) ? ORIGIN_ADMITTED : ORIGIN_DENIED;
		}
		if (e->origin == ORIGIN_DENIED) {
			entry_touch(s, i, now_ns);
			d = FILTER_DROP_REVOKED;
			goto out;
		}
		break;
	}
	seen_update(e, &fl, SEEN_IN);
	entry_touch(s, i, now_ns);
	d = -1;
out:
	pthread_mutex_unlock(&s->mu);
	if (d < 0)
		memo_set(memo, &k);
	return d;
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
	key_make(&k, &fl, true);
	/* A SYN may reopen a revoked flow: never skipped. */
	if (!(fl.proto == 6 && (fl.tcp_flags & TCP_SYN)) && memo_hit(memo, &fl, &k))
		return;
	h = key_hash(f, &k);
	s = &f->shards[h >> 60];
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

unsigned filter_rx_batch(struct filter *f, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	struct batch_memo memo = {.valid = false};
	struct filter_rules *r;
	unsigned i, kept = 0, idx;
	uint64_t gen;

	if (!filter_active(f))
		return n;
	idx = guard_enter(f);
	/* gen before rules (filter_rules_set bumps it after the swap): never new gen, old rules. */
	gen = atomic_load(&f->gen);
	r = atomic_load(&f->rules);
	if (r) {
		for (i = 0; i < n; i++) {
			struct pkt *p = pkts[i];
			int d = rx_verdict(f, r, gen, p->data, p->len, now_ns, &memo);

			if (d >= 0) {
				atomic_fetch_add_explicit(&f->drops[d], 1, memory_order_relaxed);
				continue;
			}
			/* Passing packets keep their order; dropped ones collect behind them. */
			pkts[i] = pkts[kept];
			pkts[kept++] = p;
		}
	} else {
		kept = n;
	}
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
	unsigned idx;
	uint64_t gen;
	int d = -1;

	if (!filter_active(f))
		return true;
	idx = guard_enter(f);
	gen = atomic_load(&f->gen);
	r = atomic_load(&f->rules);
	if (r)
		d = rx_verdict(f, r, gen, p, len, now_ns, NULL);
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
