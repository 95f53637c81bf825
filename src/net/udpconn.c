/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/iothread.h"
#include "base/log.h"
#include "base/time.h"
#include "base/util.h"
#include "net/udpconn.h"

#define READ_BATCH MAGICSOCK_BATCH
#define POOL_DRY_BACKOFF_MS 1
/* Batches read from one socket before looking at the other again. */
#define FAIRNESS_BATCHES 8

_Static_assert(READ_BATCH <= UDP_BATCH_MAX, "one recvmmsg per read");

struct udpconn {
	struct magicsock *ms;
	_Atomic(struct pkt_pool *) pool;
	pthread_rwlock_t socks_lock;
	struct udp_socks socks;
	struct iothread reader;
	/* The reader's: where coalesced datagrams (UDP GRO) land beyond the first buffer. */
	struct udp_gro_rx gro;
	uint8_t *spill;
	atomic_uint_fast64_t pool_dry, rx_too_big, send_errors, send_unreach, src_stale, rx_gro,
	    gro_lost, gro_wait;
};

void udpconn_send(struct udpconn *uc, struct pkt **pkts, unsigned n)
{
	struct udp_stale stale;
	int r;

	pthread_rwlock_rdlock(&uc->socks_lock);
	r = udp_send_batch(&uc->socks, pkts, n, &stale);
	pthread_rwlock_unlock(&uc->socks_lock);
	if (unlikely(stale.n)) {
		atomic_fetch_add(&uc->src_stale, stale.n);
		/* Whoever cached the source forgets it: no failed call per packet from now on. */
		magicsock_src_stale(uc->ms, &stale.src);
	}
	if (unlikely(r < (int)n)) {
		atomic_fetch_add(&uc->send_errors, n - (unsigned)MAX(r, 0));
		/*
		 * No route is what probing a peer's LAN candidate from another network gets,
		 * every few seconds while the peer is active: counted, not logged.
		 */
		if (r == -ENETUNREACH || r == -EHOSTUNREACH)
			atomic_fetch_add(&uc->send_unreach, n);
		else if (r < 0)
			log_ratelimited(LOG_LEVEL_WARN, "udp send: %s", strerror(-r));
	}
	pkt_free(pkts, n);
}

/*
 * Cuts the coalesced messages msgs[0..n) of a GRO read into datagrams, in order, into out:
 * buffers for all but the first of each come from the pool. A message is cut whole or not
 * yet: when the pool cannot give all its buffers, it and the ones after it stay for the next
 * try (*ret_done says how many were cut), once the crypto has given packets back. Keeping
 * the first datagram and dropping the rest would be worse than waiting: a message is one
 * peer's run of consecutive packets, often the fragments of one inner IP packet larger than
 * the tunnel MTU, and a fragment without its partner holds reassembly memory in the kernel
 * behind the TUN until it times out (30 s); under overload that memory reaches its limit
 * (ipfrag_high_thresh) and from then on every fragment is dropped. While the reader waits,
 * the socket's buffer fills and the kernel drops whole messages instead.
 * Only a pool too small to ever hold a message's buffers gets a partial cut (counted lost).
 * Returns how many are in out.
 */
static unsigned gro_cut(struct udpconn *uc, struct pkt_pool *pool, struct pkt **msgs, unsigned n,
			struct pkt **out, unsigned *ret_done)
{
	unsigned i, o = 0, need, got, used, lost, coalesced = 0, lost_all = 0;
	uint32_t seg;

	for (i = 0; i < n; i++) {
		seg = uc->gro.seg[i];
		if (!seg) {
			out[o++] = msgs[i];
			continue;
		}
		need = MIN((uc->gro.len[i] + seg - 1) / seg - 1, (unsigned)UDP_GRO_SEGS_MAX - 1);
		got = pkt_pool_get(pool, out + o + 1, need);
		if (got < need && need + READ_BATCH <= pkt_pool_count(pool)) {
			pkt_free(out + o + 1, got);
			break;
		}
		coalesced++;
		out[o++] = msgs[i];
		used = udp_gro_split(msgs[i], &uc->gro, i, out + o, got, &lost);
		/* Buffers the cut did not use (a datagram too large for them) go back. */
		pkt_free(out + o + used, got - used);
		o += used;
		lost_all += lost;
	}
	*ret_done = i;
	if (coalesced)
		atomic_fetch_add_explicit(&uc->rx_gro, coalesced, memory_order_relaxed);
	if (unlikely(lost_all))
		atomic_fetch_add(&uc->gro_lost, lost_all);
	return o;
}

/* The GRO entries of messages [done, n) move to [0, n - done), as their packets do. */
static void gro_keep(struct udp_gro_rx *gro, unsigned done, unsigned n)
{
	unsigned k;
	uint8_t *spill;

	for (k = 0; done && k < n - done; k++) {
		/* A swap: the spill areas stay a permutation of the reader's. */
		spill = gro->spill[k];
		gro->spill[k] = gro->spill[done + k];
		gro->spill[done + k] = spill;
		gro->len[k] = gro->len[done + k];
		gro->seg[k] = gro->seg[done + k];
	}
}

/*
 * Hands the n packets read into stash[0..n) on (cut first if read from a GRO socket) and
 * takes them out of the stash (*have packets). Returns how many stay: GRO messages not
 * cut yet, now at the front of the stash, which go before anything is read again.
 */
static unsigned deliver(struct udpconn *uc, struct pkt_pool *pool, struct pkt **stash, unsigned n,
			bool gro, struct pkt **cut, unsigned *have)
{
	unsigned done = n, o;

	if (!gro) {
		magicsock_rx(uc->ms, stash, n, time_now_ns());
	} else {
		o = gro_cut(uc, pool, stash, n, cut, &done);
		if (o)
			magicsock_rx(uc->ms, cut, o, time_now_ns());
		gro_keep(&uc->gro, done, n);
	}
	*have -= done;
	memmove(stash, stash + done, *have * sizeof(*stash));
	return n - done;
}

static void *reader_main(void *arg)
{
	struct udpconn *uc = arg;
	struct iothread *rd = &uc->reader;
	struct pkt *stash[READ_BATCH];
	struct pkt *cut[UDP_GRO_MSGS * UDP_GRO_SEGS_MAX];
	struct pkt_pool *pool = atomic_load(&uc->pool);
	struct pollfd pfd[3];
	unsigned have = 0, pend = 0, i;
	int fds[2] = {uc->socks.fd4, uc->socks.fd6};
	bool gro[2] = {uc->socks.gro4 && uc->spill, uc->socks.gro6 && uc->spill};

	/*
	 * `stash` keeps buffers across reads: only the ones handed on are replaced, so an
	 * idle wakeup costs no pool lock. A family that is off has fd -1, which poll ignores.
	 * A new pool (udpconn_set_pool) takes over at the next read: the stash goes back.
	 * stash[0..pend) are GRO messages read but not cut yet (gro_cut): they wait for
	 * buffers, and nothing is read before they are handed on, so the kernel's socket
	 * buffer takes the backlog.
	 */
	pfd[0] = (struct pollfd){.fd = fds[0], .events = POLLIN};
	pfd[1] = (struct pollfd){.fd = fds[1], .events = POLLIN};
	pfd[2] = (struct pollfd){.fd = rd->stop_fd, .events = POLLIN};
	while (!iothread_stopping(rd)) {
		if (pend) {
			pend = deliver(uc, pool, stash, pend, true, cut, &have);
			if (pend) {
				atomic_fetch_add(&uc->gro_wait, 1);
				/* The spare buffers go back meanwhile: they are what is missing. */
				pkt_free(stash + pend, have - pend);
				have = pend;
				iothread_sleep(rd, POOL_DRY_BACKOFF_MS);
				continue;
			}
		}
		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (i = 0; i < 2 && !pend; i++) {
			unsigned round;

			if (fds[i] < 0 || !(pfd[i].revents & (POLLIN | POLLERR)))
				continue;
			for (round = 0; round < FAIRNESS_BATCHES; round++) {
				unsigned dropped = 0, asked;
				int n;

				if (unlikely(atomic_load_explicit(&uc->pool, memory_order_acquire) !=
					     pool)) {
					pkt_free(stash, have);
					have = 0;
					pool = atomic_load(&uc->pool);
				}
				if (have < READ_BATCH)
					have += pkt_pool_get(pool, stash + have, READ_BATCH - have);
				if (!have) {
					atomic_fetch_add(&uc->pool_dry, 1);
					iothread_sleep(rd, POOL_DRY_BACKOFF_MS);
					break;
				}
				asked = gro[i] ? MIN(have, (unsigned)UDP_GRO_MSGS) : have;
				n = udp_recv_batch(fds[i], stash, have, gro[i] ? &uc->gro : NULL,
						   &dropped);
				if (unlikely(dropped)) {
					atomic_fetch_add(&uc->rx_too_big, dropped);
					log_ratelimited(LOG_LEVEL_WARN,
							"udp: %u datagrams larger than the %u-byte "
							"buffers dropped (a peer's MTU above ours?)",
							dropped, pkt_pool_buf_size(pool));
				}
				if (n <= 0)
					break;
				pend = deliver(uc, pool, stash, (unsigned)n, gro[i], cut, &have);
				if (pend || (unsigned)n < asked)
					break; /* waiting for buffers, or a short batch: drained */
			}
		}
	}
	pkt_free(stash, have);
	return NULL;
}

/*
 * The spill areas of GRO reads: address space only until a coalesced datagram lands
 * (the pages of an untouched malloc of this size are not resident).
 */
static int spill_alloc(struct udpconn *uc)
{
	unsigned i;

	if (uc->spill || !(uc->socks.gro4 || uc->socks.gro6))
		return 0;
	uc->spill = malloc((size_t)UDP_GRO_MSGS * UDP_GRO_SPILL);
	if (!uc->spill)
		return -ENOMEM;
	for (i = 0; i < UDP_GRO_MSGS; i++)
		uc->gro.spill[i] = uc->spill + (size_t)i * UDP_GRO_SPILL;
	return 0;
}

int udpconn_new(struct magicsock *ms, struct pkt_pool *pool, uint16_t port, uint32_t fwmark,
		struct udpconn **ret)
{
	struct udpconn *uc;
	int r;

	uc = calloc(1, sizeof(*uc));
	if (!uc)
		return -ENOMEM;
	uc->ms = ms;
	atomic_init(&uc->pool, pool);
	uc->socks = (struct udp_socks){.fd4 = -1, .fd6 = -1};
	uc->reader.stop_fd = -1;
	pthread_rwlock_init(&uc->socks_lock, NULL);
	r = iothread_init(&uc->reader);
	if (r < 0)
		goto out;
	r = udp_socks_open(&uc->socks, port, fwmark);
	if (r < 0)
		goto out;
	r = spill_alloc(uc);
	if (r < 0)
		goto out;
	r = iothread_start(&uc->reader, "udp-reader", reader_main, uc);
	if (r < 0)
		goto out;
	*ret = uc;
	uc = NULL;
out:
	udpconn_free(uc);
	return r;
}

void udpconn_stop(struct udpconn *uc)
{
	iothread_stop(&uc->reader);
}

void udpconn_free(struct udpconn *uc)
{
	if (!uc)
		return;
	iothread_destroy(&uc->reader);
	if (uc->socks.fd4 >= 0 || uc->socks.fd6 >= 0)
		udp_socks_close(&uc->socks);
	pthread_rwlock_destroy(&uc->socks_lock);
	free(uc->spill);
	free(uc);
}

void udpconn_set_pool(struct udpconn *uc, struct pkt_pool *pool)
{
	atomic_store_explicit(&uc->pool, pool, memory_order_release);
}

uint16_t udpconn_port(const struct udpconn *uc)
{
	return uc->socks.port;
}

void udpconn_swap(struct udpconn *uc, struct udp_socks *ns)
{
	struct udp_socks old;
	int r;

	iothread_stop(&uc->reader);
	pthread_rwlock_wrlock(&uc->socks_lock);
	old = uc->socks;
	uc->socks = *ns;
	pthread_rwlock_unlock(&uc->socks_lock);
	if (old.fd4 >= 0 || old.fd6 >= 0)
		udp_socks_close(&old);
	/* Without the spill (no memory) the kernel cuts coalesced messages itself. */
	if (spill_alloc(uc) < 0)
		udp_socks_gro_off(&uc->socks);
	r = iothread_start(&uc->reader, "udp-reader", reader_main, uc);
	if (r < 0)
		log_err("cannot restart the UDP reader: %s", strerror(-r));
}

int udpconn_set_fwmark(struct udpconn *uc, uint32_t fwmark)
{
	return udp_socks_set_fwmark(&uc->socks, fwmark);
}

void udpconn_stats_get(struct udpconn *uc, struct udpconn_stats *ret)
{
	ret->pool_dry = atomic_load(&uc->pool_dry);
	ret->rx_too_big = atomic_load(&uc->rx_too_big);
	ret->send_errors = atomic_load(&uc->send_errors);
	ret->send_unreach = atomic_load(&uc->send_unreach);
	ret->src_stale = atomic_load(&uc->src_stale);
	ret->rx_gro = atomic_load(&uc->rx_gro);
	ret->gro_lost = atomic_load(&uc->gro_lost);
	ret->gro_wait = atomic_load(&uc->gro_wait);
}
