/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_INTERNAL_H
#define TRELLIS_WG_INTERNAL_H

/*
 * The device as the engine's files share it. Every field is protected by
 * dev->lock. Entry points lock once, process a whole batch and collect what must
 * leave (datagrams, TUN packets, crypto work) on the `out` lists; wg_device_unlock
 * hands those to the callbacks after dropping the lock.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/pkt.h"
#include "base/util.h"
#include "wg/allowedips.h"
#include "wg/cookie.h"
#include "wg/device.h"
#include "wg/noise.h"
#include "wg/peer.h"
#include "wg/ratelimiter.h"

struct pkt_list {
	struct pkt *head;
	struct pkt **tail;
	unsigned len;
};

static inline void pkt_list_init(struct pkt_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
	l->len = 0;
}

static inline void pkt_list_add(struct pkt_list *l, struct pkt *p)
{
	p->next = NULL;
	*l->tail = p;
	l->tail = &p->next;
	l->len++;
}

/*
 * Reference runs: the references a packet in flight holds on its peer and keypair are
 * counted per run of consecutive packets with the same peer and keypair, one atomic add
 * and one atomic subtract on each per run instead of per packet (a batch of one TCP
 * stream is one run). Each packet still owns its references, and any packet may release
 * them alone (wg_pkt_release, off the lock); only the arithmetic under the device lock is
 * deferred, and it is done (wg_ref_flush) when the run changes, before the lock is
 * released (wg_device_unlock: before the packets reach the workers), and before the
 * device drops its own reference to a peer or keypair (wg_peer_remove, keypair_drop).
 */
struct wg_ref_run {
	struct wg_peer *peer;
	struct noise_keypair *kp;
	unsigned n; /* packets in the run */
};

/* Under the lock: pkt takes a reference on peer and on kp. */
void wg_ref_take(struct wg_device *dev, struct pkt *pkt, struct wg_peer *peer,
		 struct noise_keypair *kp);
/* Under the lock: pkt gives its references back (wg_pkt_release, deferred). */
void wg_ref_release(struct wg_device *dev, struct pkt *pkt);
/* Under the lock: counts what the runs have pending. */
void wg_ref_flush(struct wg_device *dev);

struct wg_out {
	struct pkt_list udp, tun, enc, dec;
	bool wake;
	bool handshake; /* a session was derived: ops.handshake_done after unlock */
};

/*
 * "Under load" (whitepaper 5.3): wireguard-go calls a device loaded while its
 * handshake queue is at least 1/8 full and for one second after. We have no
 * queue (handshakes are handled inline per batch), so we count handshake
 * messages in one-second windows instead: more than UNDER_LOAD_THRESHOLD in the
 * current window, and one second after the last time that happened. 256/s is
 * far beyond what a few thousand well-behaved peers produce (one per peer per
 * two minutes) and a small share of one core's DH budget.
 */
#define UNDER_LOAD_THRESHOLD 256

struct wg_device {
	pthread_mutex_t lock;
	struct wg_device_ops ops;
	struct pkt_pool *pool;
	uint64_t now_ns;  /* of the batch being processed; never goes backwards */
	uint64_t wall_ns; /* read before taking the lock: ops.wall_ns is a callback too */

	struct noise_static_identity identity;
	struct cookie_checker cookie_checker;
	struct ratelimiter *ratelimiter;
	struct allowedips *allowedips;

	struct wg_peer *peer_hash[1U << PEER_HASH_BITS];
	struct wg_peer peer_list; /* list head; only list_prev/list_next used */
	unsigned n_peers;
	uint64_t next_peer_id;
	struct index_entry **index_hash;
	uint32_t index_seed;

	uint16_t listen_port;
	uint32_t mtu; /* of the tunnel interface: caps the padding of data messages */
	uint32_t fwmark;
	struct wg_device_stats stats;

	uint64_t load_window_start_ns;
	unsigned load_count;
	uint64_t last_under_load_ns;
	bool was_under_load;
	bool force_under_load;

	uint64_t next_deadline_reported;
	uint64_t rng;
	struct wg_out out;
	struct wg_ref_run ref_take, ref_put;
};

#define peer_for_each(dev, p)                                                                      \
	for ((p) = (dev)->peer_list.list_next; (p) != &(dev)->peer_list; (p) = (p)->list_next)

void wg_device_lock(struct wg_device *dev, uint64_t now_ns);
/* Releases the lock, then runs the callbacks for everything queued on dev->out. */
void wg_device_unlock(struct wg_device *dev);
void wg_device_drop(struct wg_device *dev, enum wg_drop_reason reason, struct pkt *pkt);
uint64_t wg_device_wall_ns(struct wg_device *dev);
/* Uniform in [0, bound). */
uint64_t wg_device_random(struct wg_device *dev, uint64_t bound);
bool wg_device_under_load(struct wg_device *dev);
void wg_device_arm_deadline(struct wg_device *dev, uint64_t deadline_ns);

/* send.c */
void wg_send_handshake_initiation(struct wg_peer *peer, bool is_retry);
void wg_send_handshake_response(struct wg_peer *peer);
void wg_send_handshake_cookie(struct wg_device *dev, const struct pkt *in, uint32_t sender_index);
void wg_send_keepalive(struct wg_peer *peer);
void wg_send_stage(struct wg_peer *peer, struct pkt *pkt);
void wg_send_staged(struct wg_peer *peer);
void wg_send_purge_staged(struct wg_peer *peer, enum wg_drop_reason reason);
void wg_send_to_peer(struct wg_peer *peer, struct pkt *pkt);

/* timers.c */
uint64_t wg_timers_run_peer(struct wg_peer *peer);

#endif
