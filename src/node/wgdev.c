/* SPDX-License-Identifier: MIT */
/*
 * trellisd --wg IFACE: the wg engine (src/wg) wired to a TUN device, the UDP
 * sockets of a magicsock (src/net) and the UAPI socket.
 *
 * Threads, and what each owns:
 *   control (main): the loop — UAPI server, the engine's timer deadline,
 *                   SIGTERM/SIGINT. The only thread that changes sockets.
 *   tun reader:     reads TUN in batches -> wg_device_tx.
 *   udp reader:     src/net/udpconn.c: reads both UDP sockets in batches ->
 *                   magicsock_rx, which hands the WireGuard ones to wg_device_rx.
 *   crypto workers: cryptq (encrypt and decrypt lanes); whichever worker completes
 *                   the oldest batch flushes it (wg_*_finish -> udp_send/tun_write).
 * Any thread may send: udp_send (magicsock_send -> udpconn_send) and tun_write are
 * called from readers (handshakes, inline crypto), workers (flush) and the control
 * thread (timers).
 *
 * Packets come from three pools so one direction cannot starve another: TX (TUN
 * reader), RX (UDP reader) and a small one for what the engine originates
 * (handshakes, cookies, keepalives), so a flood of data never blocks a handshake.
 * A reader that finds its pool empty backs off for a millisecond (counted); the
 * pools and the cryptq ring are the only buffering, and nothing on the packet
 * path allocates.
 *
 * Any MTU up to WG_MTU_MAX works: the data pools' buffers are sized for the MTU.
 * When `ip link set mtu` (or --mtu) outgrows them, the control thread makes a new
 * generation of TX and RX pools with larger buffers (fewer of them: each pool holds
 * at most POOL_DATA_BYTES) and the readers switch to it at their next read (an atomic
 * pointer each); packets from older generations go back to their own pools, which
 * stay until the device is freed. Buffer sizes go up in powers of two, so there are
 * at most a handful of generations. An MTU above WG_MTU_MAX is set back to it, and
 * said so in the log: a packet that cannot be sent must not vanish silently.
 *
 * Socket changes (listen_port) are race free without a lock in the UDP reader:
 * the control thread opens the new sockets, then udpconn_swap stops and joins the
 * reader, swaps the sockets under the write side of a lock (senders hold the read
 * side for one batch), closes the old ones and restarts the reader.
 *
 * Endpoints the engine sees are addresses in plain WireGuard mode; the control-plane
 * mode gives peers magicsock handles (net/magicsock.h), which `wg show` and status
 * see resolved to addresses (wgdev_info_get).
 */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/iothread.h"
#include "base/log.h"
#include "base/pkt.h"
#include "base/time.h"
#include "base/util.h"
#include "filter/filter.h"
#include "node/cryptq.h"
#include "node/flowtable.h"
#include "base/loop.h"
#include "net/magicsock.h"
#include "net/udpconn.h"
#include "node/uapi_server.h"
#include "node/wgdev.h"
#include "os/netlink.h"
#include "os/tun.h"
#include "os/udp.h"
#include "wg/device.h"
#include "wg/uapi.h"

#define READ_BATCH 64
/*
 * 4096 packets of 2 KiB (8.5 MiB) per data direction cover a full cryptq lane in flight
 * (CRYPTQ_SLOTS partially filled slots) plus the engine's staging queues. Larger buffers
 * come in smaller numbers, up to POOL_DATA_BYTES per pool (255 of 64 KiB: still 16 MiB
 * in flight per direction, a dozen milliseconds at 10 Gb/s).
 */
#define POOL_DATA_MAX 4096
#define POOL_DATA_BYTES (16u << 20)
/* Buffer sizes double from PKT_BUF_SIZE up to PKT_BUF_SIZE_MAX: 7 sizes. */
#define POOL_GENS_MAX 7
#define POOL_CTL 512
#define CRYPTQ_SLOTS 512
#define POOL_DRY_BACKOFF_MS 1
/*
 * A pool that grew is trimmed after this long (pkt_trimmer), and again each period while
 * it stays busy: a burst's buffers go back to the kernel once the traffic stops. The timer
 * is armed only after growth, so an idle daemon still never wakes for it.
 */
#define POOL_TRIM_NS (10ULL * NSEC_PER_SEC)
_Static_assert(1 + 2 * POOL_GENS_MAX <= PKT_TRIMMER_POOLS_MAX, "the trimmer holds every pool");

enum { LANE_ENCRYPT, LANE_DECRYPT };

struct wgdev {
	char ifname[IF_NAMESIZE];
	struct loop *loop;
	struct uapi_server *uapi;
	struct wg_device *dev;
	struct pkt_pool *pool_ctl;
	/* Data pool generations, the last the current one (control thread). */
	struct {
		struct pkt_pool *tx, *rx;
	} gens[POOL_GENS_MAX];
	unsigned n_gens;
	_Atomic(struct pkt_pool *) pool_tx; /* what the TUN reader takes from: gens[n_gens-1].tx */
	struct cryptq *cq;
	int tun_fd;
	/*
	 * TUN offloads (IFF_VNET_HDR): the reader cuts super-packets (tun_rx, its own), writes
	 * coalesce TCP segments when the kernel took TSO, UDP datagrams when it took USO
	 * (tun_gro: OFFLOAD_GRO_*). Fixed once the device is open.
	 */
	bool tun_vnet;
	unsigned tun_gro;
	unsigned tun_offloads; /* TUN_OFFLOAD_* in force */
	struct tun_rx tun_rx;
	struct magicsock *ms;
	struct udpconn *uc;
	struct iothread tun_reader;
	struct loop_timer timer; /* the engine's next deadline */
	/* Armed at the trimmer's deadline: after the pools grew, until they are quiet again. */
	struct pkt_trimmer trimmer;
	struct loop_timer trim_timer;
	struct loop_fd link_mon; /* netlink link events: follows the interface MTU */
	void (*net_changed)(void *ctx);
	void *net_changed_ctx;
	unsigned mtu;
	struct loop_async wake;  /* the deadline moved (any thread), or the TUN is gone */
	atomic_bool tun_gone;

	/* What the engine does not see, logged at exit (UDP: udpconn_stats, magicsock_stats). */
	atomic_uint_fast64_t tun_pool_dry, tun_too_big, tun_write_errors;
	atomic_uint_fast64_t tun_frags_joined; /* IP fragments written inside their datagram */

	/* Who reads the STUN mailbox (wgdev_stun_listen), under stun_mu: notify is rare. */
	pthread_mutex_t stun_mu;
	void (*stun_fn)(void *ctx);
	void *stun_ctx;
	void (*disco_fn)(void *ctx); /* and the disco mailbox (wgdev_disco_listen) */
	void *disco_ctx;
	void (*handshake_fn)(void *ctx); /* and completed handshakes (wgdev_handshake_listen) */
	void *handshake_ctx;
	_Atomic(struct filter *) filter; /* the packet filter (wgdev_filter_set); NULL: none */
	_Atomic(struct flowtable *) flows; /* flow accounting (wgdev_flowtable_set); NULL: off */
};

/*
 * --- the packet filter (src/filter), one call per direction ---
 * Decrypted packets from peers are judged before the TUN write; what the node sends is
 * noted on the TUN read path, so replies to its flows pass. Without a filter, or with a
 * filter without a policy, this is a pointer check and a flag.
 */

/* Flow accounting (node/flowtable.h) sees what the filter passed and denied. */
static void flows_hook(struct wgdev *w, struct pkt *const *pkts, unsigned passed, unsigned n,
		       bool rx, uint64_t now_ns)
{
	struct flowtable *ft = atomic_load_explicit(&w->flows, memory_order_acquire);

	if (!ft)
		return;
	if (rx)
		flowtable_rx(ft, pkts, passed, n, now_ns);
	else
		flowtable_tx(ft, pkts, n, now_ns);
}

void wgdev_flowtable_set(struct wgdev *w, struct flowtable *ft)
{
	atomic_store_explicit(&w->flows, ft, memory_order_release);
}

/*
 * With replies on (trellisd --filter-reject), a refused packet's own buffer becomes its reply
 * (a RST or an ICMP error to the sender, filter_reject) and goes back into the tunnel like a
 * packet read from TUN; the rest are freed. No allocation: the reply is built on the stack.
 */
static void reject(struct wgdev *w, struct filter *f, struct pkt **pkts, unsigned n,
		   uint64_t now_ns)
{
	uint8_t reply[FILTER_REJECT_MAX];
	unsigned i, m = 0;

	for (i = 0; i < n; i++) {
		struct pkt *p = pkts[i];
		size_t len = filter_reject(f, p->data, p->len, reply, sizeof(reply), now_ns);

		pkts[i] = NULL;
		if (!len || PKT_HEADROOM + len + PKT_TAILROOM > p->cap) {
			pkt_free(&p, 1);
			continue;
		}
		pkt_reset(p);
		memcpy(p->data, reply, len);
		p->len = (uint32_t)len;
		pkts[m++] = p;
	}
	if (m)
		wg_device_tx(w->dev, pkts, m, now_ns);
}

static unsigned filter_rx_hook(struct wgdev *w, struct pkt **pkts, unsigned n)
{
	struct filter *f = atomic_load_explicit(&w->filter, memory_order_acquire);
	uint64_t now_ns = time_now_ns(); /* one clock read a batch, for the filter and the flows */
	unsigned kept;

	if (!f) {
		flows_hook(w, pkts, n, n, true, now_ns);
		return n;
	}
	kept = filter_rx_batch(f, pkts, n, now_ns);
	/* Before the replies: they reuse the refused packets' buffers. */
	flows_hook(w, pkts, kept, n, true, now_ns);
	if (kept < n && filter_reject_on(f))
		reject(w, f, pkts + kept, n - kept, now_ns);
	else
		pkt_free(pkts + kept, n - kept);
	return kept;
}

static void filter_tx_hook(struct wgdev *w, struct pkt *const *pkts, unsigned n)
{
	struct filter *f = atomic_load_explicit(&w->filter, memory_order_acquire);
	uint64_t now_ns = time_now_ns();

	if (f)
		filter_tx_batch(f, pkts, n, now_ns);
	flows_hook(w, pkts, n, n, false, now_ns);
}

void wgdev_filter_set(struct wgdev *w, struct filter *f)
{
	atomic_store_explicit(&w->filter, f, memory_order_release);
}

/* --- engine callbacks (any thread) --- */

static void op_udp_send(void *ctx, struct pkt **pkts, unsigned n)
{
	struct wgdev *w = ctx;

	magicsock_send(w->ms, pkts, n);
}

/* --- magicsock callbacks --- */

static void op_src_stale(void *ctx, const struct endpoint_src *src)
{
	struct wgdev *w = ctx;

	wg_device_forget_src(w->dev, src);
}

static void op_wire_send(void *ctx, struct pkt **pkts, unsigned n)
{
	struct wgdev *w = ctx;

	/* Nothing is configured to send before the sockets exist; be safe anyway. */
	if (unlikely(!w->uc)) {
		pkt_free(pkts, n);
		return;
	}
	udpconn_send(w->uc, pkts, n);
}

static void op_box_notify(void *ctx, enum magicsock_box box)
{
	struct wgdev *w = ctx;

	pthread_mutex_lock(&w->stun_mu);
	if (box == MAGICSOCK_BOX_STUN && w->stun_fn)
		w->stun_fn(w->stun_ctx);
	else if (box == MAGICSOCK_BOX_DISCO && w->disco_fn)
		w->disco_fn(w->disco_ctx);
	pthread_mutex_unlock(&w->stun_mu);
}

void wgdev_disco_listen(struct wgdev *w, void (*fn)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&w->stun_mu);
	w->disco_fn = fn;
	w->disco_ctx = ctx;
	pthread_mutex_unlock(&w->stun_mu);
}

void wgdev_stun_listen(struct wgdev *w, void (*fn)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&w->stun_mu);
	w->stun_fn = fn;
	w->stun_ctx = ctx;
	pthread_mutex_unlock(&w->stun_mu);
}

static void op_wg_rx(void *ctx, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	struct wgdev *w = ctx;

	wg_device_rx(w->dev, pkts, n, now_ns);
}

static void op_tun_write(void *ctx, struct pkt **pkts, unsigned n)
{
	struct wgdev *w = ctx;
	unsigned joined;
	int r;

	n = filter_rx_hook(w, pkts, n);
	if (!n)
		return;
	r = tun_write_batch(w->tun_fd, pkts, n, w->tun_vnet, w->tun_gro, &joined);
	if (joined)
		atomic_fetch_add(&w->tun_frags_joined, joined);
	if (unlikely(r < (int)n)) {
		atomic_fetch_add(&w->tun_write_errors, n - (unsigned)MAX(r, 0));
		if (r < 0)
			log_ratelimited(LOG_LEVEL_WARN, "tun write: %s", strerror(-r));
	}
	pkt_free(pkts, n);
}

static void op_encrypt_submit(void *ctx, struct pkt **pkts, unsigned n)
{
	struct wgdev *w = ctx;

	cryptq_submit(w->cq, LANE_ENCRYPT, pkts, n);
}

static void op_decrypt_submit(void *ctx, struct pkt **pkts, unsigned n)
{
	struct wgdev *w = ctx;

	cryptq_submit(w->cq, LANE_DECRYPT, pkts, n);
}

static void op_timers_wake(void *ctx)
{
	struct wgdev *w = ctx;

	loop_async_send(&w->wake);
}

static void op_handshake_done(void *ctx)
{
	struct wgdev *w = ctx;

	pthread_mutex_lock(&w->stun_mu);
	if (w->handshake_fn)
		w->handshake_fn(w->handshake_ctx);
	pthread_mutex_unlock(&w->stun_mu);
}

/* Path discovery's peers stay on their handles (magicsock.h, "kept"): no raw roaming. */
static bool op_endpoint_kept(void *ctx, const struct endpoint *cur)
{
	struct wgdev *w = ctx;

	return w->ms && magicsock_handle_kept(w->ms, cur);
}

void wgdev_handshake_listen(struct wgdev *w, void (*fn)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&w->stun_mu);
	w->handshake_fn = fn;
	w->handshake_ctx = ctx;
	pthread_mutex_unlock(&w->stun_mu);
}

static uint64_t op_wall_ns(void *ctx)
{
	(void)ctx;
	return time_wall_ns();
}

/* --- cryptq bindings --- */

static void enc_step(void *ctx, struct pkt *pkt)
{
	(void)ctx;
	wg_send_encrypt(pkt);
}

static void dec_step(void *ctx, struct pkt *pkt)
{
	(void)ctx;
	wg_receive_decrypt(pkt);
}

static void enc_flush(void *ctx, struct pkt **pkts, unsigned n)
{
	struct wgdev *w = ctx;

	wg_send_finish(w->dev, pkts, n, time_now_ns());
}

static void dec_flush(void *ctx, struct pkt **pkts, unsigned n)
{
	struct wgdev *w = ctx;

	wg_receive_finish(w->dev, pkts, n, time_now_ns());
}

static void q_drop(void *ctx, struct pkt **pkts, unsigned n)
{
	struct wgdev *w = ctx;

	wg_pkt_release_batch(pkts, n);
	pkt_free(pkts, n);
	wg_device_count_drop(w->dev, WG_DROP_QUEUE_FULL, n);
}

/* --- the TUN device --- */

/*
 * With offloads (unless --no-offload or TRELLIS_NO_OFFLOAD=1), the kernel hands the reader
 * whole TCP (and UDP) super-packets of up to 64 KiB, one read each, and takes a flow's
 * decrypted TCP segments (UDP datagrams) back in one write; each feature it refuses is left
 * out. The UDP sockets send a peer's run of equal-size datagrams as one UDP_SEGMENT message.
 * 0 or -errno.
 */
static int tun_open_offload(struct wgdev *w, const struct wgdev_opts *opts)
{
	const char *env = getenv("TRELLIS_NO_OFFLOAD");
	bool off = opts->no_offload || (env && *env && strcmp(env, "0"));
	int r;

	r = off ? tun_open(opts->ifname, w->ifname) : tun_open_vnet(opts->ifname, w->ifname);
	if (r < 0) {
		log_err("cannot create TUN interface: %s", strerror(-r));
		return r;
	}
	w->tun_fd = r;
	/* The UDP sockets, opened next, follow the same switch. */
	udp_gso_allow(!off);
	if (off) {
		log_info("TUN offloads off, UDP GSO off");
		return 0;
	}
	r = tun_rx_init_vnet(&w->tun_rx);
	if (r < 0)
		return r;
	w->tun_vnet = true;
	w->tun_offloads = tun_offload_set(w->tun_fd, TUN_OFFLOAD_TSO | TUN_OFFLOAD_USO);
	/* Super-packets on write only where the kernel cuts them itself. */
	w->tun_gro = (w->tun_offloads & TUN_OFFLOAD_TSO ? OFFLOAD_GRO_TCP : 0) |
		     (w->tun_offloads & TUN_OFFLOAD_USO ? OFFLOAD_GRO_UDP : 0);
	log_info("TUN offloads:%s%s%s", w->tun_offloads ? "" : " none (refused)",
		 w->tun_offloads & TUN_OFFLOAD_TSO ? " TSO" : "",
		 w->tun_offloads & TUN_OFFLOAD_USO ? " USO" : "");
	return 0;
}

/* --- the TUN reader thread --- */

static void *tun_reader_main(void *arg)
{
	struct wgdev *w = arg;
	struct iothread *rd = &w->tun_reader;
	struct pkt *stash[READ_BATCH];
	struct pkt_pool *pool = atomic_load(&w->pool_tx);
	struct pollfd pfd[2] = {
	    {.fd = w->tun_fd, .events = POLLIN},
	    {.fd = rd->stop_fd, .events = POLLIN},
	};
	unsigned have = 0;

	/*
	 * `stash` keeps buffers across reads: only the ones handed to the engine are
	 * replaced, so an idle wakeup costs no pool lock. A new pool generation takes
	 * over at the next read: the stash goes back to the old one.
	 */
	while (!iothread_stopping(rd)) {
		unsigned dropped = 0, asked;
		int n;

		if (unlikely(atomic_load_explicit(&w->pool_tx, memory_order_acquire) != pool)) {
			pkt_free(stash, have);
			have = 0;
			pool = atomic_load(&w->pool_tx);
		}
		if (have < READ_BATCH)
			have += pkt_pool_get(pool, stash + have, READ_BATCH - have);
		if (!have) {
			atomic_fetch_add(&w->tun_pool_dry, 1);
			if (iothread_sleep(rd, POOL_DRY_BACKOFF_MS))
				break;
			continue;
		}
		asked = have;
		n = tun_read_batch(w->tun_fd, &w->tun_rx, stash, have, &dropped);
		if (unlikely(dropped)) {
			atomic_fetch_add(&w->tun_too_big, dropped);
			log_ratelimited(LOG_LEVEL_WARN,
					"tun: %u packets larger than the %u-byte buffers dropped",
					dropped, pkt_pool_buf_size(pool));
		}
		if (n < 0 && n != -EAGAIN && n != -EINTR) {
			/* EBADFD/EIO: the interface was deleted (ip link del, wg-quick down). */
			log_info("tun read: %s, stopping", strerror(-n));
			atomic_store(&w->tun_gone, true);
			loop_async_send(&w->wake);
			break;
		}
		if (n > 0) {
			filter_tx_hook(w, stash, (unsigned)n);
			wg_device_tx(w->dev, stash, (unsigned)n, time_now_ns());
			have -= (unsigned)n;
			memmove(stash, stash + n, have * sizeof(*stash));
		}
		/* A short read means the queue is empty: sleep in poll rather than read EAGAIN. */
		if (n <= 0 || (unsigned)n < asked) {
			if (poll(pfd, 2, -1) < 0 && errno != EINTR)
				break;
		}
	}
	pkt_free(stash, have);
	return NULL;
}

/* --- control thread --- */

static void pools_trim(struct loop_timer *t)
{
	struct wgdev *w = container_of(t, struct wgdev, trim_timer);

	loop_timer_set(w->loop, t, pkt_trimmer_run(&w->trimmer, loop_now_ns(w->loop)));
}

static void timers_fire(struct loop_timer *t)
{
	struct wgdev *w = container_of(t, struct wgdev, timer);
	uint64_t now = loop_now_ns(w->loop), next = wg_device_timers_run(w->dev, now);

	loop_timer_arm(w->loop, &w->timer, next);
	/* Traffic runs the engine's timers (keepalives at the latest), so growth is seen. */
	loop_timer_set(w->loop, &w->trim_timer, pkt_trimmer_run(&w->trimmer, now));
}

static void woken(struct loop_async *a)
{
	struct wgdev *w = container_of(a, struct wgdev, wake);

	if (atomic_load(&w->tun_gone)) {
		log_info("interface %s is gone, shutting down", w->ifname);
		loop_stop(w->loop);
		return;
	}
	timers_fire(&w->timer);
}

static void signal_caught(struct loop *loop, int signo)
{
	log_info("%s, shutting down", strsignal(signo));
	loop_stop(loop);
}

static int uapi_get(void *ctx, char **ret_body, size_t *ret_len)
{
	struct wgdev *w = ctx;
	struct wg_device_info *info = NULL;
	char *body = NULL;
	int r;

	r = wgdev_info_get(w, &info);
	if (r < 0)
		goto out;
	r = wg_uapi_get_format(info, &body);
	if (r < 0)
		goto out;
	*ret_body = body;
	*ret_len = (size_t)r;
	r = 0;
out:
	wg_device_info_free(info);
	return r;
}

/*
 * Sockets first, then the engine: a port that cannot be bound fails the request
 * with nothing changed, like an engine error does (wg_device_apply is atomic).
 * A port equal to the bound one is not rebound (the kernel module behaves the same;
 * `wg setconf` resends the port every time); 0 rebinds to a fresh kernel-chosen one.
 */
static int uapi_set(void *ctx, const char *body, size_t len)
{
	struct wgdev *w = ctx;
	struct wg_device_cfg *cfg = NULL;
	struct udp_socks ns = {.fd4 = -1, .fd6 = -1};
	uint32_t old_mark = wg_device_fwmark(w->dev), mark;
	bool rebind, remark;
	unsigned line = 0;
	int r;

	r = wg_uapi_set_parse(body, len, &cfg, &line);
	if (r < 0) {
		log_warn("uapi set: line %u: %s", line, strerror(-r));
		goto out;
	}
	mark = cfg->has_fwmark ? cfg->fwmark : old_mark;
	rebind = cfg->has_listen_port && cfg->listen_port != udpconn_port(w->uc);
	remark = !rebind && mark != old_mark;
	if (rebind) {
		r = udp_socks_open(&ns, cfg->listen_port, mark);
		if (r < 0) {
			log_warn("cannot listen on UDP port %u: %s", cfg->listen_port,
				 strerror(-r));
			goto out;
		}
	} else if (remark) {
		/* setsockopt on live sockets is safe against concurrent senders. */
		r = udpconn_set_fwmark(w->uc, mark);
		if (r < 0) {
			log_warn("cannot set fwmark 0x%x: %s", mark, strerror(-r));
			udpconn_set_fwmark(w->uc, old_mark);
			goto out;
		}
	}
	r = wg_device_apply(w->dev, cfg, loop_now_ns(w->loop));
	if (r < 0) {
		log_warn("uapi set: %s", strerror(-r));
		if (rebind)
			udp_socks_close(&ns);
		else if (remark)
			udpconn_set_fwmark(w->uc, old_mark);
		goto out;
	}
	if (rebind) {
		udpconn_swap(w->uc, &ns);
		log_info("listening on UDP port %u", udpconn_port(w->uc));
	}
	wg_device_set_listen_port(w->dev, udpconn_port(w->uc));
	/* New peers may want a handshake or keepalive now. */
	timers_fire(&w->timer);
out:
	wg_device_cfg_free(cfg);
	return r;
}

static unsigned online_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (unsigned)n : 1;
}

/*
 * Crypto workers when not told: one per CPU, but none on two CPUs or fewer. There the two
 * I/O threads (TUN reader, UDP reader) already fill the cores with the applications whose
 * packets they carry, and a hand-off to a worker adds a thread to share them and a wakeup
 * per batch while it gains no parallelism. Measured on two cores, both ends of a tunnel
 * on the machine, in one run (docs/benchmarks.md): crypto inline carried 4.3 Gb/s of TCP
 * against 3.4 with two workers, and 0.52 Gb/s of UDP against 0.45.
 */
static unsigned default_workers(void)
{
	unsigned n = online_cpus();

	return n > 2 ? n : 0;
}

static void stats_log(struct wgdev *w)
{
	struct wg_device_stats st;
	struct udpconn_stats us = {0};
	struct magicsock_stats ms;
	uint64_t drops = 0;
	unsigned i;

	wg_device_stats_get(w->dev, &st);
	magicsock_stats_get(w->ms, &ms);
	if (w->uc)
		udpconn_stats_get(w->uc, &us);
	for (i = 0; i < WG_DROP_MAX; i++)
		drops += st.drops[i];
	log_info("rx %" PRIu64 " packets %" PRIu64 " bytes, tx %" PRIu64 " packets %" PRIu64
		 " bytes, %" PRIu64 " engine drops (%" PRIu64 " queue full), handshakes %" PRIu64,
		 st.rx_packets, st.rx_bytes, st.tx_packets, st.tx_bytes, drops,
		 st.drops[WG_DROP_QUEUE_FULL], st.handshakes_completed);
	log_info("pool dry tun %" PRIu64 " udp %" PRIu64 ", write errors udp %" PRIu64 " (%" PRIu64
		 " no route) tun %" PRIu64 ", sent without their stale source address %" PRIu64,
		 (uint64_t)w->tun_pool_dry, us.pool_dry, us.send_errors, us.send_unreach,
		 (uint64_t)w->tun_write_errors, us.src_stale);
	log_info("udp gro: %" PRIu64 " coalesced datagrams cut, %" PRIu64
		 " waits for buffers to cut them into, %" PRIu64
		 " datagrams dropped (a pool too small); %" PRIu64
		 " IP fragments written to tun inside their datagram",
		 us.rx_gro, us.gro_wait, us.gro_lost, (uint64_t)w->tun_frags_joined);
	log_info("too big for the buffers of MTU %u (%u bytes): dropped from tun %" PRIu64
		 ", from udp %" PRIu64 ", by the engine %" PRIu64,
		 w->mtu, pkt_pool_buf_size(w->gens[w->n_gens - 1].tx), (uint64_t)w->tun_too_big,
		 us.rx_too_big, st.drops[WG_DROP_TX_TOO_BIG]);
	if (w->tun_vnet)
		log_info("tun offloads:%s%s%s, super-packets cut %" PRIu64 ", refused %" PRIu64,
			 w->tun_offloads & TUN_OFFLOAD_CSUM ? " csum" : "",
			 w->tun_offloads & TUN_OFFLOAD_TSO ? " tso" : "",
			 w->tun_offloads & TUN_OFFLOAD_USO ? " uso" : "", w->tun_rx.supers,
			 w->tun_rx.bad);
	log_info("udp demux: wireguard %" PRIu64 ", stun %" PRIu64 " (%" PRIu64
		 " dropped), disco %" PRIu64 " (%" PRIu64 " dropped), junk %" PRIu64
		 " dropped; sends without a path %" PRIu64 ", raw sends %" PRIu64,
		 ms.rx_wg, ms.rx_stun, ms.box_drops[MAGICSOCK_BOX_STUN], ms.rx_disco,
		 ms.box_drops[MAGICSOCK_BOX_DISCO], ms.rx_junk, ms.tx_no_path, ms.tx_raw);
}

void wgdev_counters_get(struct wgdev *w, struct wgdev_counters *ret)
{
	struct wg_device_stats st;
	struct udpconn_stats us;

	wg_device_stats_get(w->dev, &st);
	udpconn_stats_get(w->uc, &us);
	*ret = (struct wgdev_counters){
	    .mtu = w->mtu,
	    .buf_size = pkt_pool_buf_size(w->gens[w->n_gens - 1].tx),
	    .too_big_tun = atomic_load(&w->tun_too_big),
	    .too_big_udp = us.rx_too_big,
	    .too_big_engine = st.drops[WG_DROP_TX_TOO_BIG],
	    .src_stale = us.src_stale,
	    .send_errors = us.send_errors,
	    .send_unreach = us.send_unreach,
	    .pool_dry_tun = atomic_load(&w->tun_pool_dry),
	    .pool_dry_udp = us.pool_dry,
	    .gro_msgs = us.rx_gro,
	    .gro_waits = us.gro_wait,
	    .gro_lost = us.gro_lost,
	    .frags_joined = atomic_load(&w->tun_frags_joined),
	};
}

/* Powers of two from PKT_BUF_SIZE, so that few generations reach the largest. */
static uint32_t data_buf_size(unsigned mtu)
{
	uint32_t need = PKT_HEADROOM + mtu + PKT_TAILROOM, size = PKT_BUF_SIZE;

	while (size < need && size < PKT_BUF_SIZE_MAX)
		size *= 2;
	return MIN(size, (uint32_t)PKT_BUF_SIZE_MAX);
}

_Static_assert(PKT_BUF_SIZE << (POOL_GENS_MAX - 2) < PKT_BUF_SIZE_MAX &&
		   PKT_BUF_SIZE << (POOL_GENS_MAX - 1) >= PKT_BUF_SIZE_MAX,
	       "one generation per buffer size");
_Static_assert(PKT_HEADROOM + WG_MTU_MAX + PKT_TAILROOM <= PKT_BUF_SIZE_MAX,
	       "the largest buffers carry the largest MTU");

/*
 * Control thread: data pools whose buffers carry `mtu`, made and handed to the readers
 * if the current ones are too small. 0, or -ENOMEM with nothing changed.
 */
static int pools_fit(struct wgdev *w, unsigned mtu)
{
	uint32_t size = data_buf_size(mtu);
	struct pkt_pool *tx, *rx;
	unsigned count;

	if (w->n_gens && size <= pkt_pool_buf_size(w->gens[w->n_gens - 1].tx))
		return 0;
	/* Sizes only grow, one generation per size: the array cannot run out. */
	assert(w->n_gens < POOL_GENS_MAX);
	count = MIN((unsigned)POOL_DATA_MAX, POOL_DATA_BYTES / size);
	tx = pkt_pool_new_sized(count, size);
	rx = pkt_pool_new_sized(count, size);
	if (!tx || !rx) {
		pkt_pool_free(tx);
		pkt_pool_free(rx);
		return -ENOMEM;
	}
	w->gens[w->n_gens].tx = tx;
	w->gens[w->n_gens].rx = rx;
	w->n_gens++;
	/* Cannot fail: sized for every generation (the static assertion above). */
	pkt_trimmer_add(&w->trimmer, tx);
	pkt_trimmer_add(&w->trimmer, rx);
	atomic_store_explicit(&w->pool_tx, tx, memory_order_release);
	if (w->uc)
		udpconn_set_pool(w->uc, rx);
	if (w->n_gens > 1)
		log_info("MTU %u: packet buffers of %u bytes from now on, %u per direction", mtu,
			 size, count);
	return 0;
}

/*
 * The engine caps padding at the interface MTU, so it must see every `ip link set mtu`:
 * on any link event the MTU is read again (one ioctl; link events are rare). A larger
 * MTU gets larger buffers first; one that cannot work is set back, and logged.
 */
static void mtu_follow(struct wgdev *w)
{
	int mtu = nl_link_get_mtu(w->ifname), r;
	unsigned m;

	if (mtu <= 0 || (unsigned)mtu == w->mtu)
		return;
	m = (unsigned)mtu;
	if (m > WG_MTU_MAX) {
		log_warn("MTU %u is too large: a full-size packet and WireGuard's 32 bytes must fit "
			 "one UDP datagram; setting the MTU of %s to %u",
			 m, w->ifname, WG_MTU_MAX);
		m = WG_MTU_MAX;
	}
	r = pools_fit(w, m);
	if (r < 0) {
		unsigned fit = pkt_buf_mtu(pkt_pool_buf_size(w->gens[w->n_gens - 1].tx));

		log_err("MTU %u: no memory for packet buffers of %u bytes; setting the MTU of %s to "
			"%u",
			m, data_buf_size(m), w->ifname, fit);
		m = fit;
	}
	if (m != (unsigned)mtu) {
		r = nl_link_set_mtu(w->ifname, m);
		if (r < 0)
			log_err("cannot set the MTU of %s to %u: %s; larger packets are dropped "
				"and counted",
				w->ifname, m, strerror(-r));
	}
	if (m == w->mtu)
		return;
	log_info("MTU %u -> %u", w->mtu, m);
	w->mtu = m;
	wg_device_set_mtu(w->dev, w->mtu);
}

static void link_event(struct loop_fd *h, uint32_t events)
{
	struct wgdev *w = container_of(h, struct wgdev, link_mon);

	(void)events;
	if (nl_monitor_read(h->fd) != 0) {
		mtu_follow(w);
		if (w->net_changed)
			w->net_changed(w->net_changed_ctx);
	}
}

void wgdev_free(struct wgdev *w)
{
	unsigned i;

	if (!w)
		return;
	if (w->link_mon.fd >= 0) {
		loop_fd_del(w->loop, &w->link_mon);
		close(w->link_mon.fd);
	}
	/*
	 * Teardown in dependency order: no new requests, then no new packets, then
	 * drain the crypto (its flushes still send through the open sockets), then the
	 * engine (which returns its staged packets), then the fds and pools.
	 */
	uapi_server_free(w->uapi);
	iothread_stop(&w->tun_reader);
	if (w->uc)
		udpconn_stop(w->uc);
	cryptq_free(w->cq);
	if (w->dev && w->ms)
		stats_log(w);
	wg_device_free(w->dev);
	udpconn_free(w->uc);
	/* After the engine and the reader: it holds received STUN and disco buffers. */
	magicsock_free(w->ms);
	if (w->tun_fd >= 0)
		close(w->tun_fd);
	iothread_destroy(&w->tun_reader);
	tun_rx_free(&w->tun_rx);
	pthread_mutex_destroy(&w->stun_mu);
	for (i = 0; i < w->n_gens; i++) {
		pkt_pool_free(w->gens[i].tx);
		pkt_pool_free(w->gens[i].rx);
	}
	pkt_pool_free(w->pool_ctl);
	if (w->timer.armed)
		loop_timer_disarm(w->loop, &w->timer);
	if (w->trim_timer.armed)
		loop_timer_disarm(w->loop, &w->trim_timer);
	loop_async_del(&w->wake);
	free(w);
}

int wgdev_new(struct loop *loop, const struct wgdev_opts *opts, struct wgdev **ret)
{
	struct wgdev *w;
	struct wg_device_ops ops;
	struct magicsock_ops mops;
	struct cryptq_lane lanes[2];
	struct uapi_handler handler;
	char path[108];
	unsigned workers;
	int r;

	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	pthread_mutex_init(&w->stun_mu, NULL);
	w->loop = loop;
	w->tun_fd = -1;
	w->tun_reader.stop_fd = -1;
	w->timer.cb = timers_fire;
	w->trim_timer.cb = pools_trim;
	pkt_trimmer_init(&w->trimmer, POOL_TRIM_NS);
	w->trim_timer.deadline_ns = TIME_NEVER;
	w->link_mon = (struct loop_fd){.fd = -1, .cb = link_event};
	w->net_changed = opts->net_changed;
	w->net_changed_ctx = opts->net_changed_ctx;
	w->timer.deadline_ns = TIME_NEVER;
	w->wake.cb = woken;
	loop_async_add(loop, &w->wake);

	if (opts->socket_path)
		r = snprintf(path, sizeof(path), "%s", opts->socket_path) < (int)sizeof(path)
			? 0
			: -ENAMETOOLONG;
	else
		r = uapi_socket_path(opts->ifname, path, sizeof(path));
	if (r < 0) {
		log_err("socket path too long");
		goto out;
	}
	/* Before touching the interface: another instance may be running it. */
	r = uapi_socket_check(path);
	if (r == -EADDRINUSE) {
		if (!opts->uapi_optional) {
			log_err("%s is in use: another instance is running", path);
			goto out;
		}
		/* Namespaced lab nodes share /var/run: `wg show` is a debugging aid only. */
		log_warn("%s is in use (an interface of the same name in another network "
			 "namespace?): no UAPI socket for wg(8)",
			 path);
		path[0] = '\0';
	}

	r = tun_open_offload(w, opts);
	if (r < 0)
		goto out;
	r = nl_link_set_mtu(w->ifname, opts->mtu);
	if (r < 0) {
		log_err("cannot set MTU %u: %s", opts->mtu, strerror(-r));
		goto out;
	}

	w->pool_ctl = pkt_pool_new(POOL_CTL);
	if (!w->pool_ctl) {
		r = -ENOMEM;
		goto out;
	}
	pkt_trimmer_add(&w->trimmer, w->pool_ctl);
	/* Sized for the MTU asked for; mtu_follow below grows them if the link has more. */
	r = pools_fit(w, opts->mtu);
	if (r < 0) {
		log_err("cannot allocate packet buffers for MTU %u", opts->mtu);
		goto out;
	}

	workers = opts->workers < 0 ? default_workers() : (unsigned)opts->workers;
	ops = (struct wg_device_ops){
	    .ctx = w,
	    .udp_send = op_udp_send,
	    .tun_write = op_tun_write,
	    /* No workers: the engine runs the crypto inline on the calling I/O thread. */
	    .encrypt_submit = workers ? op_encrypt_submit : NULL,
	    .decrypt_submit = workers ? op_decrypt_submit : NULL,
	    .timers_wake = op_timers_wake,
	    .wall_ns = op_wall_ns,
	    .handshake_done = op_handshake_done,
	    .endpoint_kept = op_endpoint_kept,
	};
	w->dev = wg_device_new(&ops, w->pool_ctl);
	if (!w->dev) {
		r = -ENOMEM;
		goto out;
	}
	/* Subscribed before the first read, so no change falls between the two. */
	r = nl_monitor_open();
	if (r < 0) {
		log_err("cannot open the netlink link monitor: %s", strerror(-r));
		goto out;
	}
	w->link_mon.fd = r;
	r = loop_fd_add(w->loop, &w->link_mon, EPOLLIN);
	if (r < 0) {
		close(w->link_mon.fd);
		w->link_mon.fd = -1;
		goto out;
	}
	mtu_follow(w);

	/*
	 * STUN answers and disco go to mailboxes when someone reads them (the relay client's
	 * latency probes, path discovery: control mode); otherwise off, counted.
	 */
	mops = (struct magicsock_ops){
	    .ctx = w, .wg_rx = op_wg_rx, .wire_send = op_wire_send, .src_stale = op_src_stale};
	if (opts->stun_box) {
		mops.box_notify = op_box_notify;
		mops.box_cap[MAGICSOCK_BOX_STUN] = 64;
		mops.box_cap[MAGICSOCK_BOX_DISCO] = 256;
	}
	w->ms = magicsock_new(&mops);
	if (!w->ms) {
		r = -ENOMEM;
		goto out;
	}

	if (workers) {
		lanes[LANE_ENCRYPT] = (struct cryptq_lane){
		    .ctx = w, .step = enc_step, .flush = enc_flush, .drop = q_drop};
		lanes[LANE_DECRYPT] = (struct cryptq_lane){
		    .ctx = w, .step = dec_step, .flush = dec_flush, .drop = q_drop};
		w->cq = cryptq_new(lanes, 2, CRYPTQ_SLOTS, workers);
		if (!w->cq) {
			r = -errno;
			goto out;
		}
	}

	r = iothread_init(&w->tun_reader);
	if (r < 0)
		goto out;
	r = iothread_start(&w->tun_reader, "tun-reader", tun_reader_main, w);
	if (r < 0)
		goto out;
	/* Port 0 unless given: the kernel picks one, which `wg show` reports. */
	r = udpconn_new(w->ms, w->gens[w->n_gens - 1].rx, opts->port, 0, &w->uc);
	if (r < 0) {
		log_err("cannot open UDP sockets on port %u: %s", opts->port, strerror(-r));
		goto out;
	}
	wg_device_set_listen_port(w->dev, udpconn_port(w->uc));

	/* Last: once the socket exists wg(8) may configure us, and everything is ready. */
	if (path[0]) {
		handler = (struct uapi_handler){.ctx = w, .get = uapi_get, .set = uapi_set};
		r = uapi_server_new(w->loop, path, &handler, &w->uapi);
		if (r < 0 && opts->uapi_optional) {
			log_warn("cannot create %s: %s: no UAPI socket for wg(8)", path,
				 strerror(-r));
			path[0] = '\0';
		} else if (r < 0) {
			log_err("cannot create %s: %s", path, strerror(-r));
			goto out;
		}
	}
	log_info("UAPI listener %s%s; UDP port %u, MTU %u, %u crypto workers",
		 path[0] ? "started on " : "off", path, udpconn_port(w->uc), w->mtu, workers);

	timers_fire(&w->timer);
	*ret = w;
	w = NULL;
	r = 0;
out:
	wgdev_free(w);
	return r;
}

struct wg_device *wgdev_device(struct wgdev *w)
{
	return w->dev;
}

const char *wgdev_ifname(const struct wgdev *w)
{
	return w->ifname;
}

uint16_t wgdev_port(struct wgdev *w)
{
	return wg_device_listen_port(w->dev);
}

struct magicsock *wgdev_magicsock(struct wgdev *w)
{
	return w->ms;
}

int wgdev_info_get(struct wgdev *w, struct wg_device_info **ret)
{
	struct wg_device_info *info;
	struct endpoint addr;
	unsigned i;
	int r;

	r = wg_device_info_get(w->dev, &info);
	if (r < 0)
		return r;
	/* People see where a peer is, not the handle the engine knows it by. */
	for (i = 0; i < info->n_peers; i++) {
		struct endpoint *ep = &info->peers[i].endpoint;

		if (!endpoint_is_handle(ep))
			continue;
		if (magicsock_resolve(w->ms, ep, &addr) == 0)
			*ep = addr;
		else
			memset(ep, 0, sizeof(*ep));
	}
	*ret = info;
	return 0;
}

void wgdev_timers_kick(struct wgdev *w)
{
	op_timers_wake(w);
}

int wgdev_run(const struct wgdev_opts *opts)
{
	struct loop *loop;
	struct wgdev *w = NULL;
	int r;

	log_set_prefix(opts->ifname);
	loop = loop_new();
	if (!loop)
		return -errno;
	/* Before any thread starts, so that all of them inherit the blocked mask. */
	r = loop_signals_catch(loop, signal_caught);
	if (r < 0)
		goto out;
	r = wgdev_new(loop, opts, &w);
	if (r < 0)
		goto out;
	if (opts->ready)
		opts->ready(opts->ready_arg);
	r = loop_run(loop);
	if (r < 0)
		log_err("event loop: %s", strerror(-r));
out:
	wgdev_free(w);
	loop_free(loop);
	return r;
}
