/* SPDX-License-Identifier: MIT */
/*
 * The relay client (relayclient.h).
 *
 * A connection (struct rconn) exists for every region of the map, with its queue, from
 * the moment the map is set, so a packet thread never allocates or starts anything: it
 * queues and wakes. Its thread runs only while the manager wants it:
 *
 *   idle --(home, or packets queued)--> connecting --> connected
 *     ^                                    |  ^            |
 *     |                        fails:      v  | retry      | closed, error, silence,
 *     |                                  backoff <---------+ new node key (no wait)
 *     +--(not home, idle 60 s: the manager stops it)--------+
 *
 * Locks: `lock` (rwlock) guards the array of connections (read: senders; write: the
 * manager when the map changes); `mu` guards everything else shared (map, login URL,
 * key, home, texts); each connection's queue has its own mutex. Order: lock, then a
 * queue's mutex or mu; never the other way. The magicsock calls relay_send with its
 * own read lock held, so nothing here calls into the magicsock while holding ours but
 * magicsock_relay_rx and the STUN calls, which take only the magicsock's locks.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <poll.h>
#include <unistd.h>

#include "base/log.h"
#include "base/pkt.h"
#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "net/dial.h"
#include "net/magicsock.h"
#include "net/nat64.h"
#include "net/relayclient.h"
#include "proto/relay.h"
#include "proto/relaymap.h"
#include "proto/stun.h"

#define URL_MAX 512
#define WBUF_SIZE (64U << 10) /* frames written in one go */
#define RBUF_SIZE (64U << 10)
#define RX_BATCH 32
#define STUN_MAX (NETMAP_RELAY_REGIONS_MAX * NETMAP_RELAY_NODES_MAX)

struct rconn {
	struct relayclient *rc;
	uint32_t region; /* fixed for the life of the struct */
	bool in_map;	 /* manager: still in the map */

	pthread_t thread;
	bool running; /* manager: the thread was started and not joined */
	atomic_bool stop;
	atomic_bool rekey;	     /* a new node key: end the session and reconnect now */
	atomic_bool retry;	     /* relayclient_retry_now: a backoff ends now */
	atomic_bool preferred_dirty; /* home changed: tell the relay */
	struct dial_cancel cancel;   /* its eventfd wakes the thread: `stop`, or work to do */

	pthread_mutex_t qmu;
	struct pkt *q[RELAYCLIENT_QUEUE_MAX];
	unsigned qhead, qn;

	atomic_int state; /* enum relayclient_conn_state */
	atomic_uint_fast64_t tx, rx, drops, rx_drops, connects, last_use_ns;
	/* Under rc->mu. */
	char error[RELAYCLIENT_ERR_MAX];
	int64_t latency_us;
	unsigned misses;
	bool answered; /* in the current STUN round */
	struct endpoint remote; /* the connected session's peer address; AF_UNSPEC: none */
	unsigned n_stun;	/* the last round's probes to the region's relays */
	struct relayclient_stun_info stun[NETMAP_RELAY_NODES_MAX];
};

struct stun_probe {
	uint8_t txid[STUN_TXID_LEN];
	uint32_t region;
	uint64_t sent_ns;
	struct endpoint to, mapped; /* mapped: AF_UNSPEC until answered */
	char node[NETMAP_NAME_MAX]; /* the relay's name */
	enum relayclient_via via;
	int64_t rtt_us; /* -1: no answer yet */
};

struct relayclient {
	struct magicsock *ms;
	void (*changed)(void *ctx);
	void *ctx;
	uint64_t idle_ns;
	uint64_t backoff_min_ns, backoff_max_ns;
	struct pkt_pool *pool;
	struct pkt_trimmer trimmer; /* the manager's: gives a burst's buffers back */

	pthread_rwlock_t lock;
	struct rconn *conns[NETMAP_RELAY_REGIONS_MAX];
	unsigned n_conns;

	pthread_mutex_t mu;
	struct netmap_relay_map map;
	bool map_dirty;
	char login[URL_MAX];
	uint8_t key[NETMAP_KEY_LEN];
	uint8_t pub[NETMAP_KEY_LEN]; /* key's, derived once in relayclient_set_key */
	bool has_key, has_pub;
	atomic_uint home;
	SSL_CTX *ssl_ctx;

	pthread_t mgr;
	bool mgr_started;
	int mgr_wake;
	atomic_bool stop;
	/* The manager's own. */
	struct stun_probe probes[STUN_MAX];
	unsigned n_probes;
	uint64_t stun_deadline_ns; /* 0: no round running */
	uint64_t next_stun_ns;
	atomic_bool stun_soon; /* relayclient_stun_soon: the next round now */
	bool home_chosen; /* a round ended since the map arrived */
	/* What the last round learned of our NAT (relayclient_status), under mu. */
	struct relayclient_nat nat;
};

const char *relayclient_via_name(enum relayclient_via v)
{
	switch (v) {
	case RELAYCLIENT_VIA_IPV4:
		return "ipv4";
	case RELAYCLIENT_VIA_IPV6:
		return "ipv6";
	case RELAYCLIENT_VIA_NAT64:
		return "nat64";
	}
	return "?";
}

int relayclient_node_family(const struct netmap_relay_node *n, bool ipv4_routed)
{
	if (n->has_ipv6 && (!n->has_ipv4 || !ipv4_routed))
		return AF_INET6;
	if (n->has_ipv4)
		return AF_INET;
	return AF_UNSPEC;
}

/* Whether IPv4 has a route of its own (as the last NAT64 detection found). */
static bool ipv4_routed(void)
{
	struct nat64_prefix p;
	bool routed;

	nat64_prefix_get(&p, &routed);
	return routed;
}

const char *relayclient_state_name(enum relayclient_conn_state s)
{
	switch (s) {
	case RELAYCLIENT_IDLE:
		return "idle";
	case RELAYCLIENT_CONNECTING:
		return "connecting";
	case RELAYCLIENT_CONNECTED:
		return "connected";
	case RELAYCLIENT_BACKOFF:
		return "backoff";
	}
	return "?";
}

static void wake(int fd)
{
	uint64_t one = 1;

	/* A full counter (EAGAIN) still wakes the reader: nothing is lost. */
	if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_ratelimited(LOG_LEVEL_WARN, "relay client: wake: %s", strerror(errno));
}

static void notify(struct relayclient *rc)
{
	if (rc->changed)
		rc->changed(rc->ctx);
}

static void conn_error(struct rconn *c, const char *err)
{
	pthread_mutex_lock(&c->rc->mu);
	snprintf(c->error, sizeof(c->error), "%s", err);
	pthread_mutex_unlock(&c->rc->mu);
}

/* The address a connection reached (which family, through a NAT64 or not); -1: none. */
static void remote_note(struct rconn *c, int fd)
{
	struct endpoint ep;
	socklen_t len = sizeof(ep);

	memset(&ep, 0, sizeof(ep));
	if (fd >= 0 && getpeername(fd, &ep.sa, &len) < 0)
		memset(&ep, 0, sizeof(ep));
	pthread_mutex_lock(&c->rc->mu);
	c->remote = ep;
	pthread_mutex_unlock(&c->rc->mu);
}

static void conn_state(struct rconn *c, enum relayclient_conn_state s)
{
	if (atomic_exchange(&c->state, (int)s) == (int)s)
		return;
	/* The relay path exists while the home connection is up (magicsock_relay_ready). */
	if (c->region == atomic_load(&c->rc->home))
		magicsock_relay_ready(c->rc->ms, s == RELAYCLIENT_CONNECTED);
	notify(c->rc);
}

/* --- the packet threads' hand-off (magicsock relay_send) --- */

static struct rconn *conn_find(struct relayclient *rc, uint32_t region)
{
	for (unsigned i = 0; i < rc->n_conns; i++)
		if (rc->conns[i]->region == region)
			return rc->conns[i];
	return NULL;
}

static void relay_send(void *ctx, uint32_t region, struct pkt **pkts, unsigned n)
{
	struct relayclient *rc = ctx;
	unsigned took = 0, i;
	struct rconn *c;

	pthread_rwlock_rdlock(&rc->lock);
	c = conn_find(rc, region);
	if (c) {
		pthread_mutex_lock(&c->qmu);
		for (i = 0; i < n && c->qn < RELAYCLIENT_QUEUE_MAX; i++, took++)
			c->q[(c->qhead + c->qn++) % RELAYCLIENT_QUEUE_MAX] = pkts[i];
		pthread_mutex_unlock(&c->qmu);
		atomic_store_explicit(&c->last_use_ns, time_now_ns(), memory_order_relaxed);
		if (took < n)
			atomic_fetch_add(&c->drops, n - took);
		/* A running thread takes them; otherwise the manager starts one. */
		wake(atomic_load(&c->state) == RELAYCLIENT_IDLE ? rc->mgr_wake : c->cancel.wake_fd);
	}
	pthread_rwlock_unlock(&rc->lock);
	/* A region not in our map: nowhere to send. */
	pkt_free(pkts + took, n - took);
}

static unsigned queue_take(struct rconn *c, struct pkt **ret, unsigned max)
{
	unsigned n = 0;

	pthread_mutex_lock(&c->qmu);
	while (n < max && c->qn) {
		ret[n++] = c->q[c->qhead];
		c->qhead = (c->qhead + 1) % RELAYCLIENT_QUEUE_MAX;
		c->qn--;
	}
	pthread_mutex_unlock(&c->qmu);
	return n;
}

static void queue_drop_all(struct rconn *c)
{
	struct pkt *p[64];
	unsigned n;

	while ((n = queue_take(c, p, ARRAY_SIZE(p))))
		pkt_free(p, n);
}

/* --- one connection (its own thread) --- */

struct session {
	struct dial_conn dc;
	struct relay_conn rl;
	uint8_t *rbuf, *wbuf;
	size_t wlen;
	uint64_t last_send_ns, last_recv_ns, silence_ns;
	struct pkt *rx[RX_BATCH];
	uint8_t rx_keys[RX_BATCH][RELAY_KEY_LEN];
	unsigned n_rx;
	char err[RELAYCLIENT_ERR_MAX];
	char health[RELAY_HEALTH_MAX + 1]; /* the relay's last word: why it closes, say */
};

/* Where the region's relay number `idx` is: dial options, Host header, display name. */
struct target {
	char host[DIAL_HOST_MAX];
	char sni[DIAL_HOST_MAX];
	char alt_host[DIAL_HOST_MAX]; /* the relay's address of the other family; "": none */
	char authority[DIAL_HOST_MAX + 8];
	char name[URL_MAX];
	uint16_t port;
	bool tls;
	bool pin;
	uint8_t key[RELAY_KEY_LEN];
};

static bool node_is_control(const struct netmap_relay_node *n)
{
	return !n->host[0] && !n->has_ipv4 && !n->has_ipv6 && !n->relay_port;
}

static int target_of(const struct netmap_relay_node *n, const char *login, struct target *t,
		     char *err, size_t err_len)
{
	struct dial_url u;

	memset(t, 0, sizeof(*t));
	if (node_is_control(n)) {
		if (!login[0] || dial_url_parse(login, &u) < 0) {
			snprintf(err, err_len,
				 "relay %s stands for the control server, whose URL "
				 "is not known",
				 n->name);
			return -EINVAL;
		}
		snprintf(t->host, sizeof(t->host), "%s", u.host);
		snprintf(t->authority, sizeof(t->authority), "%s", u.authority);
		t->port = u.port;
		t->tls = u.tls;
	} else {
		int fam = relayclient_node_family(n, ipv4_routed());

		t->tls = n->tls;
		t->port = n->relay_port ? n->relay_port : (n->tls ? 443 : 80);
		/* Both families: the chosen one first, the other as dial's second chance. */
		if (fam == AF_INET6) {
			inet_ntop(AF_INET6, n->ipv6, t->host, sizeof(t->host));
			if (n->has_ipv4)
				inet_ntop(AF_INET, n->ipv4, t->alt_host, sizeof(t->alt_host));
		} else if (fam == AF_INET) {
			inet_ntop(AF_INET, n->ipv4, t->host, sizeof(t->host));
			if (n->has_ipv6)
				inet_ntop(AF_INET6, n->ipv6, t->alt_host, sizeof(t->alt_host));
		} else {
			snprintf(t->host, sizeof(t->host), "%s", n->host);
		}
		if (n->host[0]) {
			snprintf(t->sni, sizeof(t->sni), "%s", n->host);
			snprintf(t->authority, sizeof(t->authority), "%s:%u", n->host, t->port);
		} else {
			snprintf(t->authority, sizeof(t->authority),
				 strchr(t->host, ':') ? "[%s]:%u" : "%s:%u", t->host, t->port);
		}
	}
	snprintf(t->name, sizeof(t->name), "relay %s (%s://%s)", n->name, t->tls ? "https" : "http",
		 t->authority);
	t->pin = n->has_key;
	memcpy(t->key, n->key, sizeof(t->key));
	return 0;
}

static int sess_write(struct rconn *c, struct session *s, const void *data, size_t len)
{
	int r = dial_write(&s->dc, data, len, time_now_ns() + RELAYCLIENT_IO_TIMEOUT_NS, s->err,
			   sizeof(s->err));

	(void)c;
	if (r == 0)
		s->last_send_ns = time_now_ns();
	return r;
}

static int handshake_flush(struct rconn *c, struct session *s)
{
	const uint8_t *out;
	size_t len;
	int r;

	relay_conn_output(&s->rl, &out, &len);
	if (!len)
		return 0;
	r = sess_write(c, s, out, len);
	if (r == 0)
		relay_conn_output_consume(&s->rl, len);
	return r;
}

static int frame_send(struct rconn *c, struct session *s, const struct relay_msg *m)
{
	uint8_t buf[RELAY_HDR_LEN + 16];
	ssize_t n = relay_msg_encode(buf, sizeof(buf), m);

	if (n < 0)
		return (int)n;
	return sess_write(c, s, buf, (size_t)n);
}

static void rx_flush(struct rconn *c, struct session *s)
{
	if (!s->n_rx)
		return;
	atomic_fetch_add(&c->rx, s->n_rx);
	atomic_store_explicit(&c->last_use_ns, time_now_ns(), memory_order_relaxed);
	magicsock_relay_rx(c->rc->ms, s->rx, (const uint8_t(*)[RELAY_KEY_LEN])s->rx_keys, s->n_rx,
			   time_now_ns());
	s->n_rx = 0;
}

static void rx_packet(struct rconn *c, struct session *s, const struct relay_msg *m)
{
	struct pkt *p;

	/* Bigger than a buffer, or the pool is dry (the engine is behind): dropped. */
	if (m->len > PKT_BUF_SIZE - PKT_HEADROOM - PKT_TAILROOM ||
	    pkt_pool_get(c->rc->pool, &p, 1) != 1) {
		atomic_fetch_add(&c->rx_drops, 1);
		return;
	}
	memcpy(p->data, m->data, m->len);
	p->len = (uint32_t)m->len;
	memcpy(s->rx_keys[s->n_rx], m->key, RELAY_KEY_LEN);
	s->rx[s->n_rx++] = p;
	if (s->n_rx == RX_BATCH)
		rx_flush(c, s);
}

/* Frames after the handshake: 0 to go on, -errno to end the session. */
static int handle_msg(struct rconn *c, struct session *s, const struct relay_msg *m)
{
	struct relay_msg pong = {.type = RELAY_PONG};

	switch (m->type) {
	case RELAY_RECV_PACKET:
		rx_packet(c, s, m);
		return 0;
	case RELAY_PING:
		memcpy(pong.ping, m->ping, sizeof(pong.ping));
		return frame_send(c, s, &pong);
	case RELAY_HEALTH:
		snprintf(s->health, sizeof(s->health), "%.*s", (int)m->len, (const char *)m->data);
		pthread_mutex_lock(&c->rc->mu);
		snprintf(c->error, sizeof(c->error), "%.*s", (int)(sizeof(c->error) - 1), s->health);
		pthread_mutex_unlock(&c->rc->mu);
		return 0;
	default:
		/* keepalive, pong, peer gone/present: the relay is alive, nothing else to do. */
		return 0;
	}
}

/* Feeds received bytes; 0, or -errno (protocol error) with s->err set. */
static int feed(struct rconn *c, struct session *s, const uint8_t *in, size_t len)
{
	struct relay_msg m;
	int r;

	while ((r = relay_conn_feed(&s->rl, &in, &len, &m)) == 1) {
		if (m.type == RELAY_SERVER_INFO) {
			const struct relay_limits *lim = relay_conn_limits(&s->rl);

			if (lim->keepalive_ms)
				s->silence_ns = (uint64_t)lim->keepalive_ms * 5 / 2 * 1000000ULL;
			continue;
		}
		r = handle_msg(c, s, &m);
		if (r < 0)
			break;
	}
	rx_flush(c, s);
	if (r < 0 && !s->err[0])
		snprintf(s->err, sizeof(s->err), "relay protocol: %s", strerror(-r));
	return r < 0 ? r : 0;
}

/* Writes queued packets (framed by the magicsock), many frames per write. */
static int flush_queue(struct rconn *c, struct session *s)
{
	struct pkt *p[64];
	unsigned n, i, sent;
	int r = 0;

	while ((n = queue_take(c, p, ARRAY_SIZE(p)))) {
		s->wlen = 0;
		for (i = 0, sent = 0; i < n; i++) {
			if (s->wlen + p[i]->len > WBUF_SIZE) {
				r = sess_write(c, s, s->wbuf, s->wlen);
				if (r < 0)
					break;
				s->wlen = 0;
			}
			memcpy(s->wbuf + s->wlen, p[i]->data, p[i]->len);
			s->wlen += p[i]->len;
			sent++;
		}
		if (r == 0 && s->wlen)
			r = sess_write(c, s, s->wbuf, s->wlen);
		pkt_free(p, n);
		if (r < 0)
			return r;
		atomic_fetch_add(&c->tx, sent);
	}
	return 0;
}

static int send_preferred(struct rconn *c, struct session *s)
{
	struct relay_msg m = {.type = RELAY_NOTE_PREFERRED};

	atomic_store(&c->preferred_dirty, false);
	m.preferred = atomic_load(&c->rc->home) == c->region;
	return frame_send(c, s, &m);
}

/* Dial, upgrade and handshake with the region's relay `idx`; pub: key's (NULL: derived). */
static int session_open(struct rconn *c, struct session *s, const struct target *t,
			const uint8_t key[RELAY_KEY_LEN], const uint8_t *pub, SSL_CTX *ssl_ctx)
{
	struct dial_opts o = {.host = t->host,
			      .alt_host = t->alt_host[0] ? t->alt_host : NULL,
			      .port = t->port,
			      .tls = t->tls,
			      .name = t->name,
			      .ssl_ctx = ssl_ctx,
			      .sni = t->sni[0] ? t->sni : NULL,
			      .deadline_ns = time_now_ns() + RELAYCLIENT_IO_TIMEOUT_NS,
			      .cancel = c->cancel};
	struct http_response resp;
	char req[HTTP_HEAD_MAX];
	uint64_t deadline;
	ssize_t n;
	int r;

	r = dial_open(&s->dc, &o, s->err, sizeof(s->err));
	if (r < 0)
		return r;
	remote_note(c, s->dc.fd);
	n = snprintf(req, sizeof(req),
		     "GET " RELAY_HTTP_PATH " HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\n"
		     "Upgrade: " RELAY_UPGRADE_TOKEN "\r\n\r\n",
		     t->authority);
	if (n < 0 || (size_t)n >= sizeof(req))
		return -ENOBUFS;
	n = dial_http_upgrade(&s->dc, req, (size_t)n, (char *)s->rbuf, RBUF_SIZE, &resp,
			      time_now_ns() + RELAYCLIENT_IO_TIMEOUT_NS, s->err, sizeof(s->err));
	if (n < 0)
		return (int)n;
	r = relay_conn_client_init_pair(&s->rl, key, pub, t->pin ? t->key : NULL, NULL);
	if (r < 0)
		return r;
	s->last_recv_ns = s->last_send_ns = time_now_ns();
	r = feed(c, s, s->rbuf + resp.head_len, (size_t)n - resp.head_len);
	deadline = time_now_ns() + RELAYCLIENT_IO_TIMEOUT_NS;
	while (r == 0 && !relay_conn_established(&s->rl)) {
		r = handshake_flush(c, s);
		if (r < 0 || relay_conn_established(&s->rl))
			break;
		n = dial_read(&s->dc, s->rbuf, RBUF_SIZE, deadline);
		if (n == -EINTR)
			continue;
		if (n == 0) {
			snprintf(s->err, sizeof(s->err),
				 "%.96s closed the connection in the handshake", t->name);
			return -ECONNRESET;
		}
		if (n == -EAGAIN) {
			snprintf(s->err, sizeof(s->err), "%.96s: no handshake in %llu s", t->name,
				 (unsigned long long)(RELAYCLIENT_IO_TIMEOUT_NS / NSEC_PER_SEC));
			return -ETIMEDOUT;
		}
		if (n < 0)
			return (int)n;
		s->last_recv_ns = time_now_ns();
		r = feed(c, s, s->rbuf, (size_t)n);
	}
	if (r == 0)
		r = handshake_flush(c, s);
	if (r == -EACCES)
		snprintf(s->err, sizeof(s->err), "%.96s: the relay's key is not the one in the map",
			 t->name);
	return r;
}

/* The established session until it ends: 0 (asked to), or -errno with s->err set. */
static int session_loop(struct rconn *c, struct session *s, const char *name)
{
	int r = send_preferred(c, s);

	while (r == 0) {
		uint64_t now = time_now_ns(), deadline;
		ssize_t n;

		if (atomic_load(&c->stop) || atomic_load(&c->rekey))
			return 0;
		r = flush_queue(c, s);
		if (r == 0 && atomic_load(&c->preferred_dirty))
			r = send_preferred(c, s);
		if (r == 0 && now >= s->last_send_ns + RELAYCLIENT_KEEPALIVE_NS) {
			struct relay_msg ka = {.type = RELAY_KEEPALIVE};

			r = frame_send(c, s, &ka);
		}
		if (r < 0)
			break;
		if (now >= s->last_recv_ns + s->silence_ns) {
			snprintf(s->err, sizeof(s->err), "%.96s silent for %llu s", name,
				 (unsigned long long)(s->silence_ns / NSEC_PER_SEC));
			return -ETIMEDOUT;
		}
		deadline = MIN(s->last_send_ns + RELAYCLIENT_KEEPALIVE_NS,
			       s->last_recv_ns + s->silence_ns);
		n = dial_read(&s->dc, s->rbuf, RBUF_SIZE, deadline);
		if (n == -EINTR || n == -EAGAIN)
			continue;
		if (n == 0) {
			if (s->health[0])
				snprintf(s->err, sizeof(s->err), "%.60s closed the connection: %.70s",
					 name, s->health);
			else
				snprintf(s->err, sizeof(s->err), "%.96s closed the connection", name);
			return -ECONNRESET;
		}
		if (n < 0) {
			if (n != -ECANCELED)
				snprintf(s->err, sizeof(s->err), "%.96s: %s", name,
					 strerror((int)-n));
			return n == -ECANCELED ? 0 : (int)n;
		}
		s->last_recv_ns = time_now_ns();
		r = feed(c, s, s->rbuf, (size_t)n);
	}
	if (!s->err[0])
		snprintf(s->err, sizeof(s->err), "%.96s: %s", name, strerror(-r));
	return r;
}

/* The region's relays in turn; returns the ns to wait before the next try. */
static uint64_t backoff_next(const struct relayclient *rc, uint64_t cur)
{
	uint64_t b = cur ? MIN(cur * 2, rc->backoff_max_ns) : rc->backoff_min_ns;
	uint32_t rnd = 0;

	/* +-25 % so that nodes that lost a relay together do not come back together. */
	crypto_random(&rnd, sizeof(rnd));
	return b * 3 / 4 + (b / 2) * (rnd % 1024) / 1024;
}

/*
 * The backoff's wait: 0 at its end, 1 cut short because the relay may be reachable again
 * (relayclient_retry_now, a new key, a new map), -ECANCELED to stop. Packets queued
 * meanwhile wake the thread too, but wait: a relay that refuses is not dialled per packet.
 */
static int backoff_wait(struct rconn *c, uint64_t until_ns)
{
	int r;

	while ((r = dial_wait(&c->cancel, until_ns)) == 1)
		if (atomic_exchange(&c->retry, false) || atomic_load(&c->rekey))
			return 1;
	return r;
}

static void *conn_main(void *arg)
{
	struct rconn *c = arg;
	struct relayclient *rc = c->rc;
	struct session *s = calloc(1, sizeof(*s));
	uint8_t *bufs = malloc(RBUF_SIZE + WBUF_SIZE);
	uint64_t backoff = 0, up_ns;
	unsigned idx = 0;

	if (!s || !bufs) {
		conn_error(c, "out of memory");
		conn_state(c, RELAYCLIENT_BACKOFF);
		free(s);
		free(bufs);
		return NULL;
	}
	while (!atomic_load(&c->stop)) {
		struct netmap_relay_region g;
		uint8_t key[RELAY_KEY_LEN], pub[RELAY_KEY_LEN];
		struct target t;
		SSL_CTX *ssl_ctx;
		bool found = false, has_pub;
		int r;

		if (backoff) {
			int w;

			conn_state(c, RELAYCLIENT_BACKOFF);
			w = backoff_wait(c, time_now_ns() + backoff);
			if (w < 0)
				break;
			/* Told the relay may be back: a failure now waits the shortest time. */
			if (w == 1)
				backoff = 0;
		}
		atomic_store(&c->rekey, false);
		pthread_mutex_lock(&rc->mu);
		for (unsigned i = 0; i < rc->map.n_regions; i++) {
			if (rc->map.regions[i].id == c->region) {
				g = rc->map.regions[i];
				found = true;
			}
		}
		memcpy(key, rc->key, sizeof(key));
		memcpy(pub, rc->pub, sizeof(pub));
		has_pub = rc->has_pub;
		r = found && rc->has_key ? 0 : -ENOENT;
		if (r == 0)
			r = target_of(&g.nodes[idx % g.n_nodes], rc->login, &t, s->err,
				      sizeof(s->err));
		if (r == 0 && t.tls && !rc->ssl_ctx) {
			rc->ssl_ctx = dial_tls_ctx_new_per_handshake();
			if (!rc->ssl_ctx)
				r = -ENOMEM;
		}
		ssl_ctx = rc->ssl_ctx;
		pthread_mutex_unlock(&rc->mu);
		if (r < 0) {
			if (r == -ENOENT)
				snprintf(s->err, sizeof(s->err), "no key or region yet");
			conn_error(c, s->err);
			backoff = backoff_next(rc, backoff);
			continue;
		}

		conn_state(c, RELAYCLIENT_CONNECTING);
		memset(&s->dc, 0, sizeof(s->dc));
		s->dc.fd = -1;
		memset(&s->rl, 0, sizeof(s->rl));
		s->rbuf = bufs;
		s->wbuf = bufs + RBUF_SIZE;
		s->err[0] = '\0';
		s->health[0] = '\0';
		s->silence_ns = RELAYCLIENT_SILENCE_NS;
		s->n_rx = 0;
		r = session_open(c, s, &t, key, has_pub ? pub : NULL, ssl_ctx);
		crypto_wipe(key, sizeof(key));
		up_ns = time_now_ns();
		if (r == 0) {
			/* A retry asked for while this one dialled has been served. */
			atomic_store(&c->retry, false);
			atomic_fetch_add(&c->connects, 1);
			conn_error(c, "");
			conn_state(c, RELAYCLIENT_CONNECTED);
			log_info("relay: connected to region %u, %s", c->region, t.name);
			r = session_loop(c, s, t.name);
		}
		rx_flush(c, s);
		relay_conn_clear(&s->rl);
		dial_close(&s->dc, 0);
		remote_note(c, -1);
		if (atomic_load(&c->stop))
			break;
		if (atomic_load(&c->rekey)) {
			backoff = 0;
			continue;
		}
		if (s->err[0]) {
			conn_error(c, s->err);
			log_ratelimited(LOG_LEVEL_WARN, "relay: region %u: %s", c->region, s->err);
		}
		/* A session that lasted resets the backoff; a failing relay hands over. */
		if (r == 0 || time_now_ns() - up_ns > 10 * RELAYCLIENT_BACKOFF_MIN_NS)
			backoff = 0;
		else
			idx++;
		backoff = backoff_next(rc, backoff);
	}
	conn_state(c, RELAYCLIENT_IDLE);
	queue_drop_all(c);
	crypto_wipe(s, sizeof(*s));
	free(s);
	free(bufs);
	return NULL;
}

static void conn_start(struct rconn *c)
{
	uint64_t drain;

	if (c->running)
		return;
	atomic_store(&c->stop, false);
	/* A stale wake from before would end the first wait at once: harmless, but drop it. */
	if (read(c->cancel.wake_fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
		log_warn("relay client: %s", strerror(errno));
	atomic_store(&c->state, RELAYCLIENT_CONNECTING);
	if (pthread_create(&c->thread, NULL, conn_main, c) != 0) {
		atomic_store(&c->state, RELAYCLIENT_IDLE);
		conn_error(c, "cannot start a thread");
		return;
	}
	c->running = true;
}

static void conn_stop(struct rconn *c)
{
	if (!c->running)
		return;
	atomic_store(&c->stop, true);
	wake(c->cancel.wake_fd);
	pthread_join(c->thread, NULL);
	c->running = false;
	atomic_store(&c->state, RELAYCLIENT_IDLE);
	notify(c->rc);
}

static void conn_free(struct rconn *c)
{
	if (!c)
		return;
	conn_stop(c);
	queue_drop_all(c);
	dial_cancel_close(&c->cancel);
	pthread_mutex_destroy(&c->qmu);
	free(c);
}

static struct rconn *conn_new(struct relayclient *rc, uint32_t region)
{
	struct rconn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->rc = rc;
	c->region = region;
	c->latency_us = -1;
	if (dial_cancel_open(&c->cancel, &c->stop) < 0) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->qmu, NULL);
	return c;
}

/* --- the manager --- */

/* Connections follow the map: new regions get one, gone regions lose theirs. */
static void map_reconcile(struct relayclient *rc)
{
	struct rconn *keep[NETMAP_RELAY_REGIONS_MAX], *gone[NETMAP_RELAY_REGIONS_MAX];
	unsigned n_keep = 0, n_gone = 0, i;
	struct netmap_relay_map *map = malloc(sizeof(*map));
	uint32_t home;

	if (!map)
		return;
	pthread_mutex_lock(&rc->mu);
	*map = rc->map;
	rc->map_dirty = false;
	pthread_mutex_unlock(&rc->mu);

	for (i = 0; i < rc->n_conns; i++)
		rc->conns[i]->in_map = false;
	for (i = 0; i < map->n_regions; i++) {
		struct rconn *c = conn_find(rc, map->regions[i].id);

		if (!c)
			c = conn_new(rc, map->regions[i].id);
		if (!c)
			continue;
		c->in_map = true;
		keep[n_keep++] = c;
	}
	for (i = 0; i < rc->n_conns; i++)
		if (!rc->conns[i]->in_map)
			gone[n_gone++] = rc->conns[i];
	pthread_rwlock_wrlock(&rc->lock);
	memcpy(rc->conns, keep, n_keep * sizeof(keep[0]));
	rc->n_conns = n_keep;
	pthread_rwlock_unlock(&rc->lock);
	for (i = 0; i < n_gone; i++)
		conn_free(gone[i]);
	/* Relays of a region may have changed under a running connection: reconnect it. */
	for (i = 0; i < n_keep; i++)
		if (keep[i]->running)
			atomic_store(&keep[i]->rekey, true), wake(keep[i]->cancel.wake_fd);
	home = atomic_load(&rc->home);
	if (home && !netmap_relay_region_find(map, home)) {
		atomic_store(&rc->home, 0);
		magicsock_relay_home_set(rc->ms, 0);
		magicsock_relay_ready(rc->ms, false);
		notify(rc);
	}
	rc->home_chosen = false;
	rc->next_stun_ns = 0; /* measure the new map now */
	free(map);
}

bool relayclient_conn_wanted(bool has_key, bool home, bool queued, uint64_t used_ns,
			     uint64_t idle_ns, uint64_t now_ns, uint64_t *ret_due_ns)
{
	/*
	 * Queued packets are a use now (the sender stamps used_ns just after queueing, and the
	 * queue drains without telling us). A stamp later than now_ns, from a packet thread
	 * after our clock was read, is recent too.
	 */
	uint64_t last = queued ? MAX(used_ns, now_ns) : used_ns;

	*ret_due_ns = TIME_NEVER;
	if (!has_key)
		return false;
	if (home)
		return true;
	if (!last || last + idle_ns <= now_ns)
		return false;
	*ret_due_ns = last + idle_ns;
	return true;
}

uint64_t relayclient_mgr_due(uint64_t stun_deadline_ns, uint64_t next_stun_ns, bool has_relays,
			     uint64_t idle_due_ns, uint64_t trim_due_ns)
{
	uint64_t due = MIN(idle_due_ns, trim_due_ns);

	if (stun_deadline_ns)
		return MIN(due, stun_deadline_ns);
	return has_relays ? MIN(due, next_stun_ns) : due;
}

/*
 * Home, anything queued, or traffic within RELAYCLIENT_IDLE_NS: a connection is wanted.
 * Returns when the first connection wanted only for its traffic becomes idle.
 */
static uint64_t conns_follow(struct relayclient *rc, uint64_t now)
{
	uint32_t home = atomic_load(&rc->home);
	uint64_t due = TIME_NEVER;
	bool has_key;

	pthread_mutex_lock(&rc->mu);
	has_key = rc->has_key;
	pthread_mutex_unlock(&rc->mu);
	for (unsigned i = 0; i < rc->n_conns; i++) {
		struct rconn *c = rc->conns[i];
		uint64_t used = atomic_load(&c->last_use_ns), c_due;
		bool queued, want;

		pthread_mutex_lock(&c->qmu);
		queued = c->qn > 0;
		pthread_mutex_unlock(&c->qmu);
		want = relayclient_conn_wanted(has_key, c->region == home, queued, used,
					       rc->idle_ns, now, &c_due);
		if (want && !c->running)
			conn_start(c);
		else if (!want && c->running) {
			log_info("relay: closing idle connection to region %u", c->region);
			conn_stop(c);
		}
		due = MIN(due, c_due);
	}
	return due;
}

/*
 * Where STUN for a relay goes (relayclient_node_family: on an IPv6-only link a relay's own
 * IPv6 address, natively, before its IPv4 one through the NAT64), or its host's (or the
 * login server's) address, resolved: there too an IPv6 one first when IPv4 has no route.
 * *ret_via says how it travels. 0 or -errno.
 */
static int stun_addr(const struct netmap_relay_node *n, const char *login, struct endpoint *ret,
		     enum relayclient_via *ret_via)
{
	struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *res = NULL, *ai;
	char host[DIAL_HOST_MAX], port[8];
	bool routed = ipv4_routed();
	struct endpoint to;
	struct dial_url u;
	int r;

	if (!n->stun_port)
		return -ENOENT;
	memset(&to, 0, sizeof(to));
	switch (relayclient_node_family(n, routed)) {
	case AF_INET:
		to.in4.sin_family = AF_INET;
		memcpy(&to.in4.sin_addr, n->ipv4, 4);
		to.in4.sin_port = htons(n->stun_port);
		break;
	case AF_INET6:
		to.in6.sin6_family = AF_INET6;
		memcpy(&to.in6.sin6_addr, n->ipv6, 16);
		to.in6.sin6_port = htons(n->stun_port);
		break;
	default:
		if (n->host[0])
			snprintf(host, sizeof(host), "%s", n->host);
		else if (login[0] && dial_url_parse(login, &u) == 0)
			snprintf(host, sizeof(host), "%s", u.host);
		else
			return -ENOENT;
		snprintf(port, sizeof(port), "%u", n->stun_port);
		r = getaddrinfo(host, port, &hints, &res);
		if (r != 0 || !res)
			return -EHOSTUNREACH;
		ai = res;
		for (struct addrinfo *a = res; !routed && a; a = a->ai_next)
			if (a->ai_family == AF_INET6) {
				ai = a;
				break;
			}
		if (ai->ai_addrlen <= sizeof(to))
			memcpy(&to, ai->ai_addr, ai->ai_addrlen);
		freeaddrinfo(res);
		if (!endpoint_is_addr(&to))
			return -EAFNOSUPPORT;
		break;
	}
	/* IPv4 with no route here: through the NAT64, whose IPv4 mapping STUN then measures. */
	if (nat64_endpoint_route(&to, ret))
		*ret_via = RELAYCLIENT_VIA_NAT64;
	else
		*ret_via = to.sa.sa_family == AF_INET ? RELAYCLIENT_VIA_IPV4 : RELAYCLIENT_VIA_IPV6;
	return 0;
}

static void stun_round_start(struct relayclient *rc, uint64_t now)
{
	struct netmap_relay_map *map = malloc(sizeof(*map));
	char login[URL_MAX];

	rc->n_probes = 0;
	if (!map)
		return;
	pthread_mutex_lock(&rc->mu);
	*map = rc->map;
	snprintf(login, sizeof(login), "%s", rc->login);
	for (unsigned i = 0; i < rc->n_conns; i++)
		rc->conns[i]->answered = false;
	pthread_mutex_unlock(&rc->mu);
	for (unsigned i = 0; i < map->n_regions; i++) {
		const struct netmap_relay_region *g = &map->regions[i];

		for (unsigned j = 0; j < g->n_nodes && rc->n_probes < STUN_MAX; j++) {
			struct stun_probe *pr = &rc->probes[rc->n_probes];
			enum relayclient_via via;
			struct endpoint to;
			struct pkt *p;
			int len;

			if (stun_addr(&g->nodes[j], login, &to, &via) < 0 ||
			    pkt_pool_get(rc->pool, &p, 1) != 1)
				continue;
			crypto_random(pr->txid, sizeof(pr->txid));
			len = stun_binding_request_build(p->data, PKT_BUF_SIZE - PKT_HEADROOM,
							 pr->txid, true);
			if (len < 0) {
				pkt_free(&p, 1);
				continue;
			}
			p->len = (uint32_t)len;
			p->ep = to;
			pr->to = to;
			memset(&pr->mapped, 0, sizeof(pr->mapped));
			pr->region = g->id;
			snprintf(pr->node, sizeof(pr->node), "%s", g->nodes[j].name);
			pr->via = via;
			pr->rtt_us = -1;
			pr->sent_ns = time_now_ns();
			rc->n_probes++;
			magicsock_send_raw(rc->ms, &p, 1);
		}
	}
	free(map);
	rc->stun_deadline_ns = now + RELAYCLIENT_STUN_WAIT_NS;
}

/* Answers waiting in the magicsock's STUN mailbox. */
static void stun_take(struct relayclient *rc)
{
	struct pkt *p[32];
	unsigned n;

	while ((n = magicsock_box_take(rc->ms, MAGICSOCK_BOX_STUN, p, ARRAY_SIZE(p)))) {
		uint64_t now = time_now_ns();

		for (unsigned i = 0; i < n; i++) {
			uint8_t txid[STUN_TXID_LEN];
			struct endpoint mapped;

			if (stun_binding_response_parse(p[i]->data, p[i]->len, txid, &mapped) < 0)
				continue;
			for (unsigned k = 0; k < rc->n_probes; k++) {
				struct stun_probe *pr = &rc->probes[k];
				struct rconn *c;

				if (memcmp(pr->txid, txid, STUN_TXID_LEN))
					continue;
				pthread_mutex_lock(&rc->mu);
				c = conn_find(rc, pr->region);
				if (c) {
					int64_t us = (int64_t)((now - pr->sent_ns) / 1000);

					/* Several relays in a region: the best answer counts. */
					if (!c->answered || us < c->latency_us)
						c->latency_us = us;
					c->answered = true;
					c->misses = 0;
				}
				pthread_mutex_unlock(&rc->mu);
				memset(pr->txid, 0, sizeof(pr->txid)); /* answered once */
				pr->rtt_us = (int64_t)((now - pr->sent_ns) / 1000);
				pr->mapped = mapped;
				endpoint_src_clear(&pr->mapped);
			}
		}
		pkt_free(p, n);
	}
}

static bool stun_all_answered(const struct relayclient *rc)
{
	static const uint8_t zero[STUN_TXID_LEN];

	for (unsigned k = 0; k < rc->n_probes; k++)
		if (memcmp(rc->probes[k].txid, zero, STUN_TXID_LEN))
			return false;
	return true;
}

uint32_t relayclient_home_pick(uint32_t home, int64_t home_us, unsigned home_misses,
			       uint32_t best, int64_t best_us, uint32_t first)
{
	if (!home)
		return best ? best : first;
	if (best && best != home &&
	    (home_misses >= RELAYCLIENT_HOME_MISSES ||
	     (home_us >= 0 &&
	      best_us * RELAYCLIENT_HOME_BETTER_DEN < home_us * RELAYCLIENT_HOME_BETTER_NUM)))
		return best;
	return home;
}

/*
 * Our reflexive addresses from the round's answers: one per family, and whether two
 * servers saw different ones (the NAT maps per destination: a hard NAT). True if changed.
 */
static bool nat_learn(struct relayclient *rc)
{
	struct relayclient_nat nat = {0};
	bool changed;

	for (unsigned k = 0; k < rc->n_probes; k++) {
		const struct endpoint *m = &rc->probes[k].mapped;
		unsigned i;

		if (!endpoint_is_addr(m))
			continue;
		nat.udp = true;
		nat.answers++;
		for (i = 0; i < nat.n_reflexive; i++) {
			if (nat.reflexive[i].sa.sa_family != m->sa.sa_family)
				continue;
			if (!endpoint_equal(&nat.reflexive[i], m))
				nat.mapping_varies = true;
			break;
		}
		if (i == nat.n_reflexive && nat.n_reflexive < RELAYCLIENT_REFLEXIVE_MAX)
			nat.reflexive[nat.n_reflexive++] = *m;
	}
	nat.measured = rc->n_probes > 0;
	pthread_mutex_lock(&rc->mu);
	changed = memcmp(&nat, &rc->nat, sizeof(nat)) != 0;
	rc->nat = nat;
	pthread_mutex_unlock(&rc->mu);
	return changed;
}

/* What the round's probes to c's region did, for status. Under rc->mu. */
static void stun_note(const struct relayclient *rc, struct rconn *c)
{
	c->n_stun = 0;
	for (unsigned k = 0; k < rc->n_probes && c->n_stun < ARRAY_SIZE(c->stun); k++) {
		const struct stun_probe *pr = &rc->probes[k];
		struct relayclient_stun_info *si = &c->stun[c->n_stun];

		if (pr->region != c->region)
			continue;
		snprintf(si->node, sizeof(si->node), "%s", pr->node);
		si->to = pr->to;
		si->via = pr->via;
		si->rtt_us = pr->rtt_us;
		c->n_stun++;
	}
}

/* The round is over: latencies are in, the home follows them (with hysteresis). */
static void stun_round_end(struct relayclient *rc)
{
	uint32_t home = atomic_load(&rc->home), best = 0, first = 0, pick;
	int64_t best_us = -1, home_us = -1;
	unsigned home_misses = 0;

	pthread_mutex_lock(&rc->mu);
	for (unsigned i = 0; i < rc->n_conns; i++) {
		struct rconn *c = rc->conns[i];

		stun_note(rc, c);
		if (!c->answered) {
			c->misses++;
			if (c->misses >= RELAYCLIENT_HOME_MISSES)
				c->latency_us = -1;
		}
		if (c->region == home) {
			home_us = c->answered ? c->latency_us : -1;
			home_misses = c->misses;
		}
		if (c->answered && (best_us < 0 || c->latency_us < best_us)) {
			best = c->region;
			best_us = c->latency_us;
		}
	}
	if (rc->map.n_regions)
		first = rc->map.regions[0].id;
	pthread_mutex_unlock(&rc->mu);
	rc->stun_deadline_ns = 0;
	rc->home_chosen = true;
	if (nat_learn(rc))
		notify(rc);

	pick = relayclient_home_pick(home, home_us, home_misses, best, best_us, first);
	if (pick == home)
		return;
	log_info("relay: home region %u (was %u)", pick, home);
	atomic_store(&rc->home, pick);
	magicsock_relay_home_set(rc->ms, pick);
	pthread_rwlock_rdlock(&rc->lock);
	for (unsigned i = 0; i < rc->n_conns; i++) {
		if (rc->conns[i]->region == pick)
			magicsock_relay_ready(rc->ms, atomic_load(&rc->conns[i]->state) ==
							  RELAYCLIENT_CONNECTED);
		if (rc->conns[i]->region == pick || rc->conns[i]->region == home) {
			atomic_store(&rc->conns[i]->preferred_dirty, true);
			wake(rc->conns[i]->cancel.wake_fd);
		}
	}
	pthread_rwlock_unlock(&rc->lock);
	notify(rc);
}

static void *mgr_main(void *arg)
{
	struct relayclient *rc = arg;

	while (!atomic_load(&rc->stop)) {
		uint64_t now = time_now_ns(), next, idle_due, drain;
		struct pollfd pfd = {.fd = rc->mgr_wake, .events = POLLIN};
		bool dirty;
		int timeout_ms;

		pthread_mutex_lock(&rc->mu);
		dirty = rc->map_dirty;
		pthread_mutex_unlock(&rc->mu);
		if (dirty)
			map_reconcile(rc);
		stun_take(rc);
		if (atomic_exchange(&rc->stun_soon, false))
			rc->next_stun_ns = 0;
		if (rc->stun_deadline_ns && (now >= rc->stun_deadline_ns || stun_all_answered(rc)))
			stun_round_end(rc);
		if (!rc->stun_deadline_ns && rc->n_conns && now >= rc->next_stun_ns) {
			stun_round_start(rc, now);
			rc->next_stun_ns = now + RELAYCLIENT_STUN_INTERVAL_NS;
		}
		idle_due = conns_follow(rc, now);

		/* Sleep until a deadline of our own (issue 14: an idle node used to wake every
		 * second); everything else that needs us writes mgr_wake. */
		next = relayclient_mgr_due(rc->stun_deadline_ns, rc->next_stun_ns, rc->n_conns > 0,
					   idle_due, pkt_trimmer_run(&rc->trimmer, now));
		if (next == TIME_NEVER)
			timeout_ms = -1;
		else if (next <= now)
			timeout_ms = 0;
		else
			timeout_ms = (int)MIN((next - now + 999999) / 1000000, (uint64_t)INT_MAX);
		if (poll(&pfd, 1, timeout_ms) > 0 &&
		    read(rc->mgr_wake, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
			log_warn("relay client: %s", strerror(errno));
	}
	return NULL;
}

/* --- public --- */

int relayclient_new(const struct relayclient_cfg *cfg, struct relayclient **ret)
{
	struct relayclient *rc = calloc(1, sizeof(*rc));
	int r = -ENOMEM;

	if (!rc)
		return -ENOMEM;
	rc->ms = cfg->ms;
	rc->changed = cfg->changed;
	rc->ctx = cfg->ctx;
	rc->idle_ns = cfg->idle_ns ? cfg->idle_ns : RELAYCLIENT_IDLE_NS;
	rc->backoff_min_ns = cfg->backoff_min_ns ? cfg->backoff_min_ns : RELAYCLIENT_BACKOFF_MIN_NS;
	rc->backoff_max_ns = MAX(rc->backoff_min_ns, RELAYCLIENT_BACKOFF_MAX_NS);
	rc->mgr_wake = -1;
	pthread_rwlock_init(&rc->lock, NULL);
	pthread_mutex_init(&rc->mu, NULL);
	rc->pool = pkt_pool_new(RELAYCLIENT_POOL);
	if (!rc->pool)
		goto fail;
	pkt_trimmer_init(&rc->trimmer, RELAYCLIENT_POOL_TRIM_NS);
	pkt_trimmer_add(&rc->trimmer, rc->pool);
	rc->mgr_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (rc->mgr_wake < 0) {
		r = -errno;
		goto fail;
	}
	if (pthread_create(&rc->mgr, NULL, mgr_main, rc) != 0) {
		r = -EAGAIN;
		goto fail;
	}
	rc->mgr_started = true;
	magicsock_relay_attach(rc->ms, relay_send, rc);
	*ret = rc;
	return 0;
fail:
	relayclient_free(rc);
	return r;
}

void relayclient_stop(struct relayclient *rc)
{
	if (!rc || !rc->mgr_started)
		return;
	/* First nothing new comes in; then every thread stops. */
	magicsock_relay_ready(rc->ms, false);
	magicsock_relay_attach(rc->ms, NULL, NULL);
	atomic_store(&rc->stop, true);
	wake(rc->mgr_wake);
	pthread_join(rc->mgr, NULL);
	rc->mgr_started = false;
	for (unsigned i = 0; i < rc->n_conns; i++)
		conn_stop(rc->conns[i]);
}

void relayclient_free(struct relayclient *rc)
{
	if (!rc)
		return;
	relayclient_stop(rc);
	for (unsigned i = 0; i < rc->n_conns; i++)
		conn_free(rc->conns[i]);
	if (rc->mgr_wake >= 0)
		close(rc->mgr_wake);
	/* Receive buffers the engine still holds return to the pool before it goes. */
	pkt_pool_free(rc->pool);
	if (rc->ssl_ctx)
		SSL_CTX_free(rc->ssl_ctx);
	pthread_mutex_destroy(&rc->mu);
	pthread_rwlock_destroy(&rc->lock);
	crypto_wipe(rc->key, sizeof(rc->key));
	free(rc);
}

void relayclient_set_map(struct relayclient *rc, const struct netmap_relay_map *rm,
			 const char *login_server)
{
	pthread_mutex_lock(&rc->mu);
	if (!relaymap_equal(&rc->map, rm) || strcmp(rc->login, login_server ? login_server : "")) {
		rc->map = *rm;
		snprintf(rc->login, sizeof(rc->login), "%s", login_server ? login_server : "");
		rc->map_dirty = true;
		wake(rc->mgr_wake);
	}
	pthread_mutex_unlock(&rc->mu);
}

void relayclient_set_key(struct relayclient *rc, const uint8_t node_priv[NETMAP_KEY_LEN])
{
	bool changed;

	pthread_mutex_lock(&rc->mu);
	changed = !rc->has_key || memcmp(rc->key, node_priv, sizeof(rc->key));
	if (changed) {
		memcpy(rc->key, node_priv, sizeof(rc->key));
		/* Once per key, not per connection: every region's relay is shown this one. */
		rc->has_pub = x25519_public_from_private(rc->pub, rc->key) == 0;
	}
	rc->has_key = true;
	pthread_mutex_unlock(&rc->mu);
	if (!changed)
		return;
	pthread_rwlock_rdlock(&rc->lock);
	for (unsigned i = 0; i < rc->n_conns; i++) {
		atomic_store(&rc->conns[i]->rekey, true);
		wake(rc->conns[i]->cancel.wake_fd);
	}
	pthread_rwlock_unlock(&rc->lock);
	wake(rc->mgr_wake);
}

void relayclient_retry_now(struct relayclient *rc)
{
	pthread_rwlock_rdlock(&rc->lock);
	for (unsigned i = 0; i < rc->n_conns; i++) {
		struct rconn *c = rc->conns[i];

		/* Connected ones carry on; one dialling now retries at once if this try fails. */
		if (atomic_load(&c->state) == RELAYCLIENT_CONNECTED)
			continue;
		atomic_store(&c->retry, true);
		wake(c->cancel.wake_fd);
	}
	pthread_rwlock_unlock(&rc->lock);
}

void relayclient_stun_notify(struct relayclient *rc)
{
	wake(rc->mgr_wake);
}

void relayclient_stun_soon(struct relayclient *rc)
{
	atomic_store(&rc->stun_soon, true);
	wake(rc->mgr_wake);
}

void relayclient_home_hint(struct relayclient *rc, uint32_t region)
{
	uint32_t none = 0;

	if (region && atomic_compare_exchange_strong(&rc->home, &none, region)) {
		magicsock_relay_home_set(rc->ms, region);
		wake(rc->mgr_wake);
	}
}

uint32_t relayclient_home(struct relayclient *rc)
{
	return atomic_load(&rc->home);
}

void relayclient_status_get(struct relayclient *rc, struct relayclient_status *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->home = atomic_load(&rc->home);
	pthread_rwlock_rdlock(&rc->lock);
	pthread_mutex_lock(&rc->mu);
	ret->nat = rc->nat;
	for (unsigned i = 0; i < rc->map.n_regions; i++) {
		const struct netmap_relay_region *g = &rc->map.regions[i];
		struct relayclient_region_info *ri = &ret->regions[ret->n_regions++];
		struct rconn *c = conn_find(rc, g->id);

		ri->id = g->id;
		snprintf(ri->code, sizeof(ri->code), "%s", g->code);
		ri->home = g->id == ret->home;
		ri->latency_us = -1;
		if (!c)
			continue;
		ri->state = (enum relayclient_conn_state)atomic_load(&c->state);
		ri->latency_us = c->latency_us;
		ri->tx_packets = atomic_load(&c->tx);
		ri->rx_packets = atomic_load(&c->rx);
		ri->tx_drops = atomic_load(&c->drops);
		ri->rx_drops = atomic_load(&c->rx_drops);
		ri->connects = atomic_load(&c->connects);
		snprintf(ri->error, sizeof(ri->error), "%s", c->error);
		ri->remote = c->remote;
		ri->n_stun = c->n_stun;
		memcpy(ri->stun, c->stun, sizeof(ri->stun));
	}
	pthread_mutex_unlock(&rc->mu);
	pthread_rwlock_unlock(&rc->lock);
}
