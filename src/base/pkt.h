/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_PKT_H
#define TRELLIS_BASE_PKT_H

#include <stdbool.h>
#include <stdint.h>

#include "base/endpoint.h"

/*
 * Packet buffers: fixed capacity, preallocated in pools, with headroom so that
 * headers can be prepended and packets encrypted and decrypted in place. Nothing
 * on the packet path calls malloc.
 *
 * Each pool has one buffer size, chosen when it is made: the default fits the usual
 * MTUs, and a data plane whose MTU outgrows it makes pools of larger buffers (jumbo
 * frames) rather than making every buffer large. A packet knows its capacity (cap).
 *
 * Headroom holds the 16-byte WireGuard data header and, later, relay framing.
 * Tailroom holds padding to 16 bytes and the 16-byte Poly1305 tag.
 */
#define PKT_HEADROOM 64
#define PKT_TAILROOM 64
/* The default buffer size (pkt_pool_new). */
#define PKT_BUF_SIZE 2048
/* The largest inner packet (TUN MTU) a default buffer carries. */
#define PKT_BUF_MTU (PKT_BUF_SIZE - PKT_HEADROOM - PKT_TAILROOM)
/* The largest buffer size: room for any UDP datagram (at most 65535 - 8 bytes) and more. */
#define PKT_BUF_SIZE_MAX (PKT_HEADROOM + 65536 + PKT_TAILROOM)

struct pkt_pool;

struct pkt {
	struct pkt *next;   /* link for queues owned by whoever holds the packet */
	struct pkt_pool *pool;
	uint8_t *data;      /* first valid byte, within buf */
	uint32_t len;       /* valid bytes from data */
	uint32_t cap;       /* bytes in buf: the pool's buffer size */
	int32_t err;        /* result of an asynchronous step (crypto); 0 = ok */
	struct endpoint ep; /* received: source; to send: destination */
	/* Owned by the module processing the packet (wg: peer and keypair references). */
	void *peer;
	void *keypair;
	uint64_t counter;
	uint32_t mtu; /* wg: the tunnel MTU when queued for encryption, caps the padding; 0 = none */
	uint8_t buf[] __attribute__((aligned(64)));
};

/* Allocates `count` packets of PKT_BUF_SIZE up front. NULL on ENOMEM. Thread safe. */
struct pkt_pool *pkt_pool_new(unsigned count);
/*
 * The same with buffers of buf_size bytes, more than PKT_HEADROOM + PKT_TAILROOM and at
 * most PKT_BUF_SIZE_MAX (else NULL, EINVAL).
 */
struct pkt_pool *pkt_pool_new_sized(unsigned count, uint32_t buf_size);
uint32_t pkt_pool_buf_size(const struct pkt_pool *pool);
/* Packets in the pool, taken or not. */
unsigned pkt_pool_count(const struct pkt_pool *pool);
/* Accepts NULL. All packets must have been returned. */
void pkt_pool_free(struct pkt_pool *pool);
/* Takes up to n packets, each reset; returns how many (fewer when the pool runs dry). */
unsigned pkt_pool_get(struct pkt_pool *pool, struct pkt **ret, unsigned n);
unsigned pkt_pool_available(struct pkt_pool *pool);
/*
 * Gives back the memory of free packets (whole pages only, never a page a packet in use
 * shares), except those that the most packets in use at once since the last trim needed:
 * call it from a timer, never per packet. Returns how many free packets it kept for that
 * reason (nonzero: the pool was busy, trim again after the next period). It holds the
 * pool's lock for a sort of the free stack and a few madvise calls.
 */
unsigned pkt_pool_trim(struct pkt_pool *pool);
/* In use went above what the last trim left resident: a trim has work. Lockless. */
bool pkt_pool_grew(const struct pkt_pool *pool);
/*
 * When to trim a set of pools (one shared policy for every owner of pools: the data
 * plane's, the relay client's, path discovery's). No clock and no timer of its own: the
 * owner calls pkt_trimmer_run from whatever wakes it (a loop timer, a poll timeout) with
 * its `now` and wakes again at the deadline it returns.
 *
 * Idle: nothing armed, no wakeups. A pool that grew arms a trim one period later; a
 * trim that found its pool busy (pkt_pool_trim kept packets for the last period's peak)
 * or a pool that grew again re-arms it. So a burst's buffers go back to the kernel at
 * most two periods after the traffic stopped (the first trim keeps what the burst
 * needed, in case it comes back), and a daemon that stays idle never wakes for this.
 */
#define PKT_TRIMMER_POOLS_MAX 16

struct pkt_trimmer {
	struct pkt_pool *pools[PKT_TRIMMER_POOLS_MAX];
	unsigned n_pools;
	uint64_t period_ns;
	uint64_t due_ns; /* the next trim; TIME_NEVER when none is armed */
};

void pkt_trimmer_init(struct pkt_trimmer *t, uint64_t period_ns);
/* Adds a pool it then watches until the owner frees it. 0, or -ENOSPC. */
int pkt_trimmer_add(struct pkt_trimmer *t, struct pkt_pool *pool);
/*
 * Trims when due, or arms a trim when a pool grew. Returns the next deadline (TIME_NEVER:
 * none). Cheap when nothing is due (a lockless flag per pool): call it freely. One thread
 * at a time per trimmer; the pools themselves may be in use by any thread.
 */
uint64_t pkt_trimmer_run(struct pkt_trimmer *t, uint64_t now_ns);

/* Returns packets to the pools they came from. NULL entries are skipped. */
void pkt_free(struct pkt **pkts, unsigned n);

static inline void pkt_reset(struct pkt *p)
{
	p->next = 0;
	p->data = p->buf + PKT_HEADROOM;
	p->len = 0;
	p->err = 0;
	p->ep.sa.sa_family = 0;
	p->peer = 0;
	p->keypair = 0;
	p->counter = 0;
	p->mtu = 0;
}

static inline uint32_t pkt_headroom(const struct pkt *p)
{
	return (uint32_t)(p->data - p->buf);
}

static inline uint32_t pkt_tailroom(const struct pkt *p)
{
	return (uint32_t)(p->cap - (uint32_t)(p->data - p->buf) - p->len);
}

/* The largest inner packet a buffer of this size carries, headroom and tailroom kept. */
static inline uint32_t pkt_buf_mtu(uint32_t buf_size)
{
	return buf_size - PKT_HEADROOM - PKT_TAILROOM;
}

#endif
