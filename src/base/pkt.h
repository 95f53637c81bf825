/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_PKT_H
#define TRELLIS_BASE_PKT_H

#include <stdint.h>

#include "base/endpoint.h"

/*
 * Packet buffers: fixed capacity, preallocated in pools, with headroom so that
 * headers can be prepended and packets encrypted and decrypted in place. Nothing
 * on the packet path calls malloc.
 *
 * Headroom holds the 16-byte WireGuard data header and, later, relay framing.
 * Tailroom holds padding to 16 bytes and the 16-byte Poly1305 tag.
 */
#define PKT_HEADROOM 64
#define PKT_TAILROOM 64
#define PKT_BUF_SIZE 2048
/* The largest inner packet (TUN MTU) the buffers carry. */
#define PKT_MTU_MAX (PKT_BUF_SIZE - PKT_HEADROOM - PKT_TAILROOM)

struct pkt_pool;

struct pkt {
	struct pkt *next;   /* link for queues owned by whoever holds the packet */
	struct pkt_pool *pool;
	uint8_t *data;      /* first valid byte, within buf */
	uint32_t len;       /* valid bytes from data */
	int32_t err;        /* result of an asynchronous step (crypto); 0 = ok */
	struct endpoint ep; /* received: source; to send: destination */
	/* Owned by the module processing the packet (wg: peer and keypair references). */
	void *peer;
	void *keypair;
	uint64_t counter;
	uint32_t mtu; /* wg: the tunnel MTU when queued for encryption, caps the padding; 0 = none */
	uint8_t buf[PKT_BUF_SIZE] __attribute__((aligned(64)));
};

/* Allocates `count` packets up front. NULL on ENOMEM. Thread safe. */
struct pkt_pool *pkt_pool_new(unsigned count);
/* Accepts NULL. All packets must have been returned. */
void pkt_pool_free(struct pkt_pool *pool);
/* Takes up to n packets, each reset; returns how many (fewer when the pool runs dry). */
unsigned pkt_pool_get(struct pkt_pool *pool, struct pkt **ret, unsigned n);
unsigned pkt_pool_available(struct pkt_pool *pool);
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
	return (uint32_t)(PKT_BUF_SIZE - (uint32_t)(p->data - p->buf) - p->len);
}

#endif
