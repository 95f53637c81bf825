// SPDX-License-Identifier: MIT
/*
 * The relay server engine (server.h). A connection (struct rconn) is one of
 *
 *   CLIENT    accepted; WAIT_CLIENT_INFO -> (proven) ADMITTING -> ESTABLISHED,
 *             in the registry by node key once admitted;
 *   MESH_IN   accepted, proved the mesh key: another relay of the region; it
 *             may watch our clients and forward packets to them;
 *   MESH_OUT  our link to another relay (mesh.c dials it): we watch its
 *             clients and forward packets for them to it.
 *
 * Output of a connection, in order: the 101 response (accepted ones), the
 * handshake bytes of its relay_conn, then a queue of pooled buffers. A buffer
 * holds one packet frame, or several small control frames packed together.
 * Packets over the queue's limits drop the oldest queued packet; control
 * frames (pongs, presence for watchers) are never dropped, so a client that
 * lets them pile up past its cap is closed.
 *
 * Writes are batched: frames queued while an event is handled mark their
 * connection, and the marked ones are flushed (one sendmsg for many frames)
 * when the event is done. A connection closed inside a callback is only
 * marked dead; its memory goes on the next loop iteration.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/hmap.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "relay/internal.h"
#include "relay/server.h"

#define SMALL_ALLOC 2048
#define BIG_CAP (RELAY_HDR_LEN + RELAY_FRAME_MAX)
#define SMALL_MAX 65536 /* pooled small buffers at most (128 MiB) */
#define BIG_MAX 256	/* pooled 64 KiB buffers at most (16 MiB) */
#define CTRL_BYTES_MAX (64u << 10)
#define MESH_CTRL_BYTES_MAX (64u << 20) /* presence of a whole relay's clients */
#define RECENT_SENDERS 4
#define NOT_HERE_INTERVAL_NS NSEC_PER_SEC
#define IOV_MAX_BATCH 64
#define REMOTE_PER_LINK_MAX 1000000

enum { KIND_CLIENT, KIND_MESH_IN, KIND_MESH_OUT };

struct rbuf {
	struct rbuf *next;
	uint32_t len, cap;
	bool packet;
	uint8_t data[];
};

#define SMALL_CAP (SMALL_ALLOC - (uint32_t)sizeof(struct rbuf))

struct pool {
	struct rbuf *free_small, *free_big;
	size_t n_small, n_big; /* allocated */
};

struct remote {
	struct hmap_node node;
	struct remote *next, *prev; /* the link's list */
	struct rconn *link;
	uint8_t key[RELAY_KEY_LEN];
};

struct rconn {
	struct relay_server *s;
	struct loop_fd h;
	struct loop_timer t;
	struct httpd_io io;
	struct httpd_slot slot;
	struct relay_conn rc;
	struct hmap_node by_key;   /* clients: s->clients; admitting: s->admitting (by id) */
	struct rconn *next, *prev; /* s->conns, or s->dead */
	struct rconn *flush_next;
	uint64_t id;
	uint64_t born_ns, last_tx_ns, last_rx_ns;
	uint8_t key[RELAY_KEY_LEN];
	uint8_t kind;
	bool registered, admitting, watcher, preferred, dead, flush_marked, established;
	bool doomed; /* too slow: closed at the next flush (never inside a walk of the lists) */
	uint32_t events;
	/* output */
	uint8_t *pre;
	size_t pre_len, pre_off;
	struct rbuf *q_head, *q_tail;
	uint32_t q_off; /* written bytes of q_head */
	uint32_t q_pkts;
	size_t q_pkt_bytes, q_ctrl_bytes;
	/* token buckets; tokens scaled by NSEC_PER_SEC to refill without division */
	uint64_t tb_bytes, tb_pkts, tb_ns;
	/* who sent to us lately: told peer-gone when we leave */
	uint8_t senders[RECENT_SENDERS][RELAY_KEY_LEN];
	uint8_t n_senders, senders_next;
	uint8_t not_here_key[RELAY_KEY_LEN];
	uint64_t not_here_ns;
	/* MESH_OUT */
	struct remote *remotes;
	size_t n_remotes;
	void (*link_down)(void *ctx);
	void *link_ctx;
	char peer[HTTPD_PEER_MAX];
};

struct relay_server {
	struct loop *loop;
	char name[32];
	uint8_t priv[RELAY_KEY_LEN], pub[RELAY_KEY_LEN]; /* pub: priv's, derived once */
	uint8_t mesh_key[RELAY_KEY_LEN];
	bool has_mesh;
	const struct relay_admit_ops *admit;
	void *admit_ctx;
	struct relay_limits limits;
	unsigned queue_max;
	size_t queue_bytes, clients_max;
	uint64_t hs_timeout_ns;
	struct hmap clients;   /* node key -> admitted CLIENT */
	struct hmap admitting; /* id -> CLIENT waiting for the admission hook */
	struct hmap remote;    /* node key -> struct remote (clients of mesh peers) */
	struct rconn *conns, *dead;
	struct rconn *flush_head;
	struct loop_timer reap_t;
	struct pool pool;
	uint64_t next_id;
	struct relay_stats st;
};

static void conn_close(struct rconn *c, int why);
static void conn_close_told(struct rconn *c, int why);
static bool conn_flush(struct rconn *c);
static const char *const close_names[RELAY_CLOSE_MAX];
static void flush_marked(struct relay_server *s);

/* ---- buffers ---- */

static struct rbuf *buf_get(struct relay_server *s, size_t need)
{
	struct pool *p = &s->pool;
	struct rbuf *b;

	if (need <= SMALL_CAP) {
		if ((b = p->free_small)) {
			p->free_small = b->next;
		} else if (p->n_small < SMALL_MAX && (b = malloc(SMALL_ALLOC))) {
			b->cap = SMALL_CAP;
			p->n_small++;
		} else {
			return NULL;
		}
	} else {
		if ((b = p->free_big)) {
			p->free_big = b->next;
		} else if (p->n_big < BIG_MAX && (b = malloc(sizeof(*b) + BIG_CAP))) {
			b->cap = BIG_CAP;
			p->n_big++;
		} else {
			return NULL;
		}
	}
	b->next = NULL;
	b->len = 0;
	b->packet = false;
	return b;
}

static void buf_put(struct relay_server *s, struct rbuf *b)
{
	if (b->cap == SMALL_CAP) {
		b->next = s->pool.free_small;
		s->pool.free_small = b;
	} else {
		b->next = s->pool.free_big;
		s->pool.free_big = b;
	}
}

static void pool_free(struct pool *p)
{
	struct rbuf *b, *next;

	for (b = p->free_small; b; b = next) {
		next = b->next;
		free(b);
	}
	for (b = p->free_big; b; b = next) {
		next = b->next;
		free(b);
	}
}

/* ---- output ---- */

static void events_set(struct rconn *c, uint32_t ev)
{
	if (ev == c->events || c->dead)
		return;
	if (loop_fd_mod(c->s->loop, &c->h, ev) == 0)
		c->events = ev;
}

static void flush_mark(struct rconn *c)
{
	if (c->flush_marked || c->dead)
		return;
	c->flush_marked = true;
	c->flush_next = c->s->flush_head;
	c->s->flush_head = c;
}

static void q_unlink_free(struct rconn *c, struct rbuf *prev, struct rbuf *b)
{
	if (prev)
		prev->next = b->next;
	else
		c->q_head = b->next;
	if (c->q_tail == b)
		c->q_tail = prev;
	if (b->packet) {
		c->q_pkts--;
		c->q_pkt_bytes -= b->len;
	} else {
		c->q_ctrl_bytes -= b->len;
	}
	buf_put(c->s, b);
}

static void q_append(struct rconn *c, struct rbuf *b)
{
	if (c->q_tail)
		c->q_tail->next = b;
	else
		c->q_head = b;
	c->q_tail = b;
	flush_mark(c);
}

static bool q_full(const struct rconn *c, size_t len)
{
	return c->q_pkts &&
	       (c->q_pkts + 1 > c->s->queue_max || c->q_pkt_bytes + len > c->s->queue_bytes);
}

/* Makes room for one more packet: drops the oldest not being written. */
static void q_make_room(struct rconn *c, size_t len)
{
	struct relay_server *s = c->s;

	while (q_full(c, len)) {
		struct rbuf *prev = NULL, *b = c->q_head;

		if (b && c->q_off) {
			prev = b;
			b = b->next;
		}
		while (b && !b->packet) {
			prev = b;
			b = b->next;
		}
		if (!b)
			break; /* only the one being written: it stays */
		q_unlink_free(c, prev, b);
		s->st.drops[RELAY_DROP_QUEUE_FULL]++;
	}
}

/*
 * Queues a packet frame: hdr (type + length + keys) then data. Drops the
 * oldest queued packet when over the limits; never fails otherwise but for
 * an empty pool (counted).
 */
static bool q_packet(struct rconn *c, const uint8_t *hdr, size_t hdr_len, const uint8_t *data,
		     size_t len)
{
	struct relay_server *s = c->s;
	size_t total = hdr_len + len;
	struct rbuf *b;

	if (c->dead)
		return false;
	/*
	 * Full: hand the socket what it takes before dropping anything. One read
	 * event of the sender holds more datagrams than a queue (it is flushed
	 * when the event ends), so without this a fast sender to an idle
	 * receiver loses packets the receiver's socket had room for.
	 */
	if (q_full(c, total) && !conn_flush(c))
		return false;
	q_make_room(c, total);
	b = buf_get(s, total);
	if (!b) {
		s->st.drops[RELAY_DROP_NO_BUFFER]++;
		return false;
	}
	memcpy(b->data, hdr, hdr_len);
	memcpy(b->data + hdr_len, data, len);
	b->len = (uint32_t)total;
	b->packet = true;
	c->q_pkts++;
	c->q_pkt_bytes += total;
	q_append(c, b);
	return true;
}

/* Queues a control frame, packed with the previous ones when they fit. */
static void q_ctrl(struct rconn *c, const struct relay_msg *m)
{
	struct relay_server *s = c->s;
	uint8_t frame[RELAY_HDR_LEN + RELAY_KEY_LEN + 18 + 1 + RELAY_HEALTH_MAX];
	size_t cap = c->kind == KIND_MESH_IN ? MESH_CTRL_BYTES_MAX : CTRL_BYTES_MAX;
	struct rbuf *b = c->q_tail;
	ssize_t n;

	if (c->dead)
		return;
	n = relay_msg_encode(frame, sizeof(frame), m);
	if (n < 0)
		return;
	if (c->doomed)
		return;
	if (c->q_ctrl_bytes + (size_t)n > cap) {
		c->doomed = true;
		flush_mark(c);
		return;
	}
	if (!b || b->packet || b->cap - b->len < (size_t)n) {
		b = buf_get(s, SMALL_CAP);
		if (!b) {
			s->st.drops[RELAY_DROP_NO_BUFFER]++;
			c->doomed = true;
			flush_mark(c);
			return;
		}
		q_append(c, b);
	}
	memcpy(b->data + b->len, frame, (size_t)n);
	b->len += (uint32_t)n;
	c->q_ctrl_bytes += (size_t)n;
	flush_mark(c);
}

static void q_simple(struct rconn *c, uint8_t type)
{
	struct relay_msg m = {.type = type};

	q_ctrl(c, &m);
}

/* Writes n bytes' worth of queue progress. */
static void q_consume(struct rconn *c, size_t n)
{
	while (n && c->q_head) {
		struct rbuf *b = c->q_head;
		size_t left = b->len - c->q_off;

		if (n < left) {
			c->q_off += (uint32_t)n;
			return;
		}
		n -= left;
		c->q_off = 0;
		q_unlink_free(c, NULL, b);
	}
}

/* Writes what it can. false when the connection was closed. */
static bool conn_flush(struct rconn *c)
{
	const uint8_t *d;
	size_t len;
	ssize_t w;

	if (c->dead)
		return false;
	c->io.wants_write = false;
	while (c->pre && c->pre_off < c->pre_len) {
		w = httpd_io_write(&c->io, c->pre + c->pre_off, c->pre_len - c->pre_off);
		if (w == -EAGAIN)
			goto wait;
		if (w < 0)
			goto fail;
		c->pre_off += (size_t)w;
	}
	if (c->pre) {
		free(c->pre);
		c->pre = NULL;
	}
	for (;;) {
		relay_conn_output(&c->rc, &d, &len);
		if (!len)
			break;
		w = httpd_io_write(&c->io, d, len);
		if (w == -EAGAIN)
			goto wait;
		if (w < 0)
			goto fail;
		relay_conn_output_consume(&c->rc, (size_t)w);
		c->last_tx_ns = loop_now_ns(c->s->loop);
	}
	while (c->q_head) {
		if (!c->io.ssl) {
			struct iovec iov[IOV_MAX_BATCH];
			struct msghdr mh = {.msg_iov = iov};
			struct rbuf *b = c->q_head;

			iov[0].iov_base = b->data + c->q_off;
			iov[0].iov_len = b->len - c->q_off;
			for (mh.msg_iovlen = 1, b = b->next; b && mh.msg_iovlen < IOV_MAX_BATCH;
			     b = b->next, mh.msg_iovlen++) {
				iov[mh.msg_iovlen].iov_base = b->data;
				iov[mh.msg_iovlen].iov_len = b->len;
			}
			w = sendmsg(c->io.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (w < 0)
				w = (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN : -errno;
			if (w == -EINTR)
				continue;
		} else {
			w = httpd_io_write(&c->io, c->q_head->data + c->q_off,
					   c->q_head->len - c->q_off);
		}
		if (w == -EAGAIN)
			goto wait;
		if (w < 0)
			goto fail;
		q_consume(c, (size_t)w);
		c->last_tx_ns = loop_now_ns(c->s->loop);
	}
	events_set(c, EPOLLIN | (c->io.wants_write ? EPOLLOUT : 0));
	return true;
wait:
	events_set(c, EPOLLIN | EPOLLOUT);
	return true;
fail:
	conn_close(c, RELAY_CLOSE_IO);
	return false;
}

static void flush_marked(struct relay_server *s)
{
	while (s->flush_head) {
		struct rconn *c = s->flush_head;

		s->flush_head = c->flush_next;
		c->flush_marked = false;
		if (c->doomed)
			conn_close(c, RELAY_CLOSE_SLOW);
		else
			conn_flush(c);
	}
}

/* ---- registry ---- */

static uint64_t key_hash(const struct hmap *h, const uint8_t *key)
{
	return hmap_hash(h, key, RELAY_KEY_LEN);
}

static struct rconn *client_find(const struct relay_server *s, const uint8_t *key)
{
	uint64_t hash = key_hash(&s->clients, key);

	for (struct hmap_node *n = hmap_first_with_hash(&s->clients, hash); n;
	     n = hmap_next_with_hash(n)) {
		struct rconn *c = container_of(n, struct rconn, by_key);

		if (memcmp(c->key, key, RELAY_KEY_LEN) == 0)
			return c;
	}
	return NULL;
}

static struct remote *remote_find(const struct relay_server *s, const uint8_t *key)
{
	uint64_t hash = key_hash(&s->remote, key);

	for (struct hmap_node *n = hmap_first_with_hash(&s->remote, hash); n;
	     n = hmap_next_with_hash(n)) {
		struct remote *r = container_of(n, struct remote, node);

		if (memcmp(r->key, key, RELAY_KEY_LEN) == 0)
			return r;
	}
	return NULL;
}

static void remote_del(struct relay_server *s, struct remote *r)
{
	struct rconn *l = r->link;

	hmap_remove(&s->remote, &r->node);
	if (r->prev)
		r->prev->next = r->next;
	else
		l->remotes = r->next;
	if (r->next)
		r->next->prev = r->prev;
	l->n_remotes--;
	free(r);
}

static void remote_put(struct relay_server *s, struct rconn *link, const uint8_t *key)
{
	struct remote *r = remote_find(s, key);

	if (r && r->link == link)
		return;
	if (r)
		remote_del(s, r);
	if (link->n_remotes >= REMOTE_PER_LINK_MAX)
		return;
	r = calloc(1, sizeof(*r));
	if (!r)
		return;
	memcpy(r->key, key, RELAY_KEY_LEN);
	r->link = link;
	r->next = link->remotes;
	if (r->next)
		r->next->prev = r;
	link->remotes = r;
	link->n_remotes++;
	hmap_insert(&s->remote, &r->node, key_hash(&s->remote, key));
}

static void presence_msg(const struct rconn *c, bool present, struct relay_msg *m)
{
	memset(m, 0, sizeof(*m));
	memcpy(m->key, c->key, RELAY_KEY_LEN);
	if (present) {
		m->type = RELAY_PEER_PRESENT;
		/* Where the client connects from, for the mesh peer's own decisions. */
		endpoint_parse(&m->ep, c->peer);
	} else {
		m->type = RELAY_PEER_GONE;
		m->reason = RELAY_GONE_DISCONNECTED;
	}
}

static void watchers_tell(struct relay_server *s, const struct rconn *c, bool present)
{
	struct relay_msg m;

	presence_msg(c, present, &m);
	for (struct rconn *w = s->conns; w; w = w->next)
		if (w->watcher)
			q_ctrl(w, &m);
}

static void client_register(struct rconn *c)
{
	struct relay_server *s = c->s;
	struct rconn *old = client_find(s, c->key);

	if (old) {
		/* The newest connection of a key wins (a client that reconnected). */
		hmap_remove(&s->clients, &old->by_key);
		old->registered = false;
		s->st.clients--;
		if (old->preferred)
			s->st.home--;
		conn_close_told(old, RELAY_CLOSE_REPLACED);
	}
	hmap_insert(&s->clients, &c->by_key, key_hash(&s->clients, c->key));
	c->registered = true;
	s->st.clients++;
	watchers_tell(s, c, true);
}

static void client_unregister(struct rconn *c)
{
	struct relay_server *s = c->s;
	struct relay_msg m;

	if (!c->registered)
		return;
	hmap_remove(&s->clients, &c->by_key);
	c->registered = false;
	s->st.clients--;
	if (c->preferred)
		s->st.home--;
	watchers_tell(s, c, false);
	/* Those who were sending to it learn at once that it left. */
	presence_msg(c, false, &m);
	for (unsigned i = 0; i < c->n_senders; i++) {
		struct rconn *x = client_find(s, c->senders[i]);

		if (x)
			q_ctrl(x, &m);
	}
}

static void sender_note(struct rconn *dst, const uint8_t *src)
{
	for (unsigned i = 0; i < dst->n_senders; i++)
		if (memcmp(dst->senders[i], src, RELAY_KEY_LEN) == 0)
			return;
	memcpy(dst->senders[dst->senders_next], src, RELAY_KEY_LEN);
	dst->senders_next = (uint8_t)((dst->senders_next + 1) % RECENT_SENDERS);
	if (dst->n_senders < RECENT_SENDERS)
		dst->n_senders++;
}

/* ---- closing ---- */

static void reap(struct loop_timer *t)
{
	struct relay_server *s = container_of(t, struct relay_server, reap_t);

	flush_marked(s); /* nothing dead may stay on the flush list */
	while (s->dead) {
		struct rconn *c = s->dead;

		s->dead = c->next;
		free(c);
	}
}

static void conn_close(struct rconn *c, int why)
{
	struct relay_server *s = c->s;

	if (c->dead)
		return;
	c->dead = true;
	if (why >= 0 && why < RELAY_CLOSE_MAX)
		s->st.closes[why]++;
	if (why >= 0 && why < RELAY_CLOSE_MAX && why != RELAY_CLOSE_GONE &&
	    why != RELAY_CLOSE_REPLACED)
		log_ratelimited(LOG_LEVEL_INFO, "%s: %s: closed: %s", s->name, c->peer,
				close_names[why]);
	client_unregister(c);
	if (c->admitting) {
		hmap_remove(&s->admitting, &c->by_key);
		c->admitting = false;
		if (s->admit && s->admit->cancel)
			s->admit->cancel(s->admit_ctx, c->id);
	}
	if (!c->established)
		s->st.handshaking--;
	if (c->kind == KIND_MESH_IN && c->established)
		s->st.mesh_in--;
	if (c->kind == KIND_MESH_OUT) {
		while (c->remotes)
			remote_del(s, c->remotes);
		if (c->established)
			s->st.mesh_out--;
	}
	s->st.unknown_frames += c->rc.unknown_frames;
	loop_fd_del(s->loop, &c->h);
	loop_timer_disarm(s->loop, &c->t);
	httpd_io_close(&c->io);
	httpd_slot_release(&c->slot);
	relay_conn_clear(&c->rc);
	free(c->pre);
	c->pre = NULL;
	while (c->q_head)
		q_unlink_free(c, NULL, c->q_head);
	s->st.conns--;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = NULL;
	c->next = s->dead;
	s->dead = c;
	loop_timer_arm(s->loop, &s->reap_t, loop_now_ns(s->loop));
	if (c->link_down)
		c->link_down(c->link_ctx);
}

/*
 * Closes an established client after telling it why in a health frame (written
 * now, as far as its socket takes it): a node shows the text as its relay error
 * instead of a bare "closed the connection".
 */
static void conn_close_told(struct rconn *c, int why)
{
	static const char *const texts[RELAY_CLOSE_MAX] = {
	    [RELAY_CLOSE_REVOKED] = "node key no longer admitted (deleted, expired, logged "
				    "out or rotated)",
	    [RELAY_CLOSE_REPLACED] = "another connection with this node key replaced this one",
	};
	struct relay_msg m = {.type = RELAY_HEALTH};

	if (c->established && c->kind == KIND_CLIENT && !c->doomed && texts[why]) {
		m.data = (const uint8_t *)texts[why];
		m.len = strlen(texts[why]);
		q_ctrl(c, &m);
		conn_flush(c);
	}
	conn_close(c, why);
}

static int close_reason(int err)
{
	switch (err) {
	case -EMSGSIZE:
		return RELAY_CLOSE_TOO_BIG;
	case -EACCES:
		return RELAY_CLOSE_PROOF;
	case -EPROTONOSUPPORT:
		return RELAY_CLOSE_VERSION;
	case -ENOMEM:
		return RELAY_CLOSE_IO;
	default:
		return RELAY_CLOSE_PROTOCOL;
	}
}

/* ---- timers ---- */

static void timer_rearm(struct rconn *c)
{
	struct relay_server *s = c->s;
	uint64_t ka = (uint64_t)s->limits.keepalive_ms * NSEC_PER_MSEC;

	if (!c->established)
		loop_timer_arm(s->loop, &c->t, c->born_ns + s->hs_timeout_ns);
	else
		loop_timer_arm(s->loop, &c->t, c->last_tx_ns + ka);
}

static void conn_timer(struct loop_timer *t)
{
	struct rconn *c = container_of(t, struct rconn, t);
	struct relay_server *s = c->s;
	uint64_t now = loop_now_ns(s->loop), ka = (uint64_t)s->limits.keepalive_ms * NSEC_PER_MSEC;

	if (!c->established) {
		conn_close(c, RELAY_CLOSE_HANDSHAKE_TIMEOUT);
		return;
	}
	/* A mesh link that hears nothing is dead even if TCP does not know yet. */
	if (c->kind == KIND_MESH_OUT && now - c->last_rx_ns > ka * 5 / 2) {
		conn_close(c, RELAY_CLOSE_GONE);
		return;
	}
	if (now - c->last_tx_ns >= ka && !c->q_head) {
		q_simple(c, RELAY_KEEPALIVE);
		s->st.keepalives_sent++;
		c->last_tx_ns = now;
		flush_marked(s);
		if (c->dead)
			return;
	}
	timer_rearm(c);
}

/* ---- the stream ---- */

/* Token buckets: false when the packet is over a limit (counted). */
static bool rate_allow(struct rconn *c, size_t len)
{
	struct relay_server *s = c->s;
	const struct relay_limits *l = &s->limits;
	uint64_t now = loop_now_ns(s->loop), dt = now - c->tb_ns;
	uint64_t byte_cap = (uint64_t)l->burst_bytes * NSEC_PER_SEC;
	uint64_t pkt_cap = (uint64_t)MAX(l->rate_packets / 4, 64u) * NSEC_PER_SEC;

	if (dt > 10 * NSEC_PER_SEC)
		dt = 10 * NSEC_PER_SEC;
	c->tb_ns = now;
	if (l->rate_bytes)
		c->tb_bytes = MIN(byte_cap, c->tb_bytes + dt * l->rate_bytes);
	if (l->rate_packets)
		c->tb_pkts = MIN(pkt_cap, c->tb_pkts + dt * l->rate_packets);
	if (l->rate_packets && c->tb_pkts < NSEC_PER_SEC) {
		s->st.drops[RELAY_DROP_RATE_PACKETS]++;
		return false;
	}
	if (l->rate_bytes && c->tb_bytes < len * NSEC_PER_SEC) {
		s->st.drops[RELAY_DROP_RATE_BYTES]++;
		return false;
	}
	if (l->rate_packets)
		c->tb_pkts -= NSEC_PER_SEC;
	if (l->rate_bytes)
		c->tb_bytes -= len * NSEC_PER_SEC;
	return true;
}

/* Delivers a datagram from src to the local client dst as recv-packet. */
static void deliver(struct relay_server *s, struct rconn *dst, const uint8_t *src,
		    const uint8_t *data, size_t len)
{
	uint8_t hdr[RELAY_PACKET_HDR_LEN];

	if (relay_packet_header_put(hdr, RELAY_RECV_PACKET, src, len) < 0)
		return;
	if (q_packet(dst, hdr, sizeof(hdr), data, len)) {
		s->st.packets_fwd++;
		s->st.bytes_fwd += len;
		sender_note(dst, src);
	}
}

static void not_here(struct rconn *c, const uint8_t *dst)
{
	struct relay_server *s = c->s;
	uint64_t now = loop_now_ns(s->loop);
	struct relay_msg m = {.type = RELAY_PEER_GONE, .reason = RELAY_GONE_NOT_HERE};

	s->st.drops[RELAY_DROP_NOT_HERE]++;
	if (c->kind != KIND_CLIENT)
		return;
	/* At most once a second for the same destination. */
	if (memcmp(c->not_here_key, dst, RELAY_KEY_LEN) == 0 &&
	    now - c->not_here_ns < NOT_HERE_INTERVAL_NS)
		return;
	memcpy(c->not_here_key, dst, RELAY_KEY_LEN);
	c->not_here_ns = now;
	memcpy(m.key, dst, RELAY_KEY_LEN);
	q_ctrl(c, &m);
}

static void on_send(struct rconn *c, const struct relay_msg *m)
{
	struct relay_server *s = c->s;
	struct rconn *dst;
	struct remote *r;

	s->st.packets_in++;
	s->st.bytes_in += m->len;
	if (!rate_allow(c, m->len))
		return;
	if (memcmp(m->key, c->key, RELAY_KEY_LEN) == 0) {
		s->st.drops[RELAY_DROP_SELF]++;
		return;
	}
	dst = client_find(s, m->key);
	if (dst) {
		deliver(s, dst, c->key, m->data, m->len);
		return;
	}
	r = remote_find(s, m->key);
	if (r) {
		uint8_t hdr[RELAY_HDR_LEN + 2 * RELAY_KEY_LEN];

		hdr[0] = RELAY_FORWARD_PACKET;
		put_be32(hdr + 1, (uint32_t)(2 * RELAY_KEY_LEN + m->len));
		memcpy(hdr + RELAY_HDR_LEN, c->key, RELAY_KEY_LEN);
		memcpy(hdr + RELAY_HDR_LEN + RELAY_KEY_LEN, m->key, RELAY_KEY_LEN);
		if (q_packet(r->link, hdr, sizeof(hdr), m->data, m->len)) {
			s->st.packets_mesh++;
			s->st.bytes_mesh += m->len;
		}
		return;
	}
	not_here(c, m->key);
}

static void on_watch(struct rconn *c)
{
	struct relay_server *s = c->s;
	struct relay_msg m;

	if (c->watcher)
		return;
	c->watcher = true;
	for (struct hmap_node *n = hmap_first(&s->clients); n && !c->dead;
	     n = hmap_next(&s->clients, n)) {
		presence_msg(container_of(n, struct rconn, by_key), true, &m);
		q_ctrl(c, &m);
	}
}

static void on_frame(struct rconn *c, const struct relay_msg *m)
{
	struct relay_server *s = c->s;
	struct relay_msg out;
	struct rconn *dst;

	switch (m->type) {
	case RELAY_SEND_PACKET:
		if (c->kind == KIND_CLIENT)
			on_send(c, m);
		break;
	case RELAY_FORWARD_PACKET:
		/* One hop only: a forwarded packet is delivered here or nowhere. */
		s->st.packets_in++;
		s->st.bytes_in += m->len;
		dst = client_find(s, m->dst);
		if (dst)
			deliver(s, dst, m->key, m->data, m->len);
		else
			not_here(c, m->dst);
		break;
	case RELAY_WATCH_CONNS:
		on_watch(c);
		break;
	case RELAY_CLOSE_PEER:
		dst = client_find(s, m->key);
		if (dst)
			conn_close(dst, RELAY_CLOSE_REPLACED);
		break;
	case RELAY_NOTE_PREFERRED:
		if (c->registered && m->preferred != c->preferred)
			s->st.home += m->preferred ? 1 : (size_t)-1;
		c->preferred = m->preferred;
		break;
	case RELAY_PING:
		s->st.pings++;
		memset(&out, 0, sizeof(out));
		out.type = RELAY_PONG;
		memcpy(out.ping, m->ping, RELAY_PING_LEN);
		q_ctrl(c, &out);
		break;
	case RELAY_PEER_PRESENT:
		/* Kept even for a key held here too: local wins while it lasts. */
		if (c->kind == KIND_MESH_OUT)
			remote_put(s, c, m->key);
		break;
	case RELAY_PEER_GONE: {
		struct remote *r = c->kind == KIND_MESH_OUT ? remote_find(s, m->key) : NULL;

		if (r && r->link == c)
			remote_del(s, r);
		break;
	}
	default: /* keepalive, pong, health, recv-packet on a link: nothing to do */
		break;
	}
}

static void established(struct rconn *c)
{
	struct relay_server *s = c->s;

	c->established = true;
	s->st.handshaking--;
	c->tb_ns = loop_now_ns(s->loop);
	c->tb_bytes = (uint64_t)s->limits.burst_bytes * NSEC_PER_SEC;
	c->tb_pkts = (uint64_t)MAX(s->limits.rate_packets / 4, 64u) * NSEC_PER_SEC;
	httpd_slot_authenticated(&c->slot);
	if (c->kind == KIND_MESH_IN)
		s->st.mesh_in++;
	else if (c->kind == KIND_MESH_OUT)
		s->st.mesh_out++;
	else
		client_register(c);
	timer_rearm(c);
}

static void admit(struct rconn *c)
{
	struct relay_server *s = c->s;

	if (relay_conn_server_accept(&c->rc, &s->limits) < 0) {
		conn_close(c, RELAY_CLOSE_PROTOCOL);
		return;
	}
	established(c);
	flush_mark(c);
}

static void on_proven(struct rconn *c, const struct relay_msg *m)
{
	struct relay_server *s = c->s;
	int r;

	memcpy(c->key, m->key, RELAY_KEY_LEN);
	if (relay_conn_is_mesh(&c->rc)) {
		c->kind = KIND_MESH_IN;
		admit(c);
		return;
	}
	if (s->st.clients >= s->clients_max) {
		conn_close(c, RELAY_CLOSE_LIMIT);
		return;
	}
	r = s->admit ? s->admit->check(s->admit_ctx, c->key, c->id) : 1;
	if (r == -EINPROGRESS) {
		c->admitting = true;
		hmap_insert(&s->admitting, &c->by_key, hmap_hash(&s->admitting, &c->id, 8));
		return;
	}
	if (r == 1)
		admit(c);
	else
		conn_close(c, RELAY_CLOSE_REFUSED);
}

static bool conn_input(void *ctx, const uint8_t *data, size_t len)
{
	struct rconn *c = ctx;
	struct relay_msg m;
	int r;

	c->last_rx_ns = loop_now_ns(c->s->loop);
	while (!c->dead) {
		r = relay_conn_feed(&c->rc, &data, &len, &m);
		if (r < 0) {
			conn_close(c, close_reason(r));
			break;
		}
		if (r == 0)
			break;
		if (m.type == RELAY_CLIENT_INFO) {
			on_proven(c, &m);
		} else if (m.type == RELAY_SERVER_INFO) {
			/* Our link to a mesh peer is up: watch its clients. */
			established(c);
			q_simple(c, RELAY_WATCH_CONNS);
		} else {
			on_frame(c, &m);
		}
	}
	if (!c->dead && !c->established)
		flush_mark(c); /* handshake output */
	return !c->dead;
}

static void conn_event(struct loop_fd *h, uint32_t events)
{
	struct rconn *c = container_of(h, struct rconn, h);
	struct relay_server *s = c->s;

	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP) || c->io.ssl) {
		int r = httpd_io_read_event(&c->io, conn_input, c);

		if (!c->dead && r == -EPIPE)
			conn_close(c, RELAY_CLOSE_GONE);
		else if (!c->dead && r < 0)
			conn_close(c, RELAY_CLOSE_IO);
	}
	if (!c->dead && (events & EPOLLOUT || c->io.wants_write))
		conn_flush(c);
	flush_marked(s);
}

static struct rconn *conn_new(struct relay_server *s, int kind, struct httpd_io *io)
{
	struct rconn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->s = s;
	c->kind = (uint8_t)kind;
	c->io = *io;
	c->h.fd = io->fd;
	c->h.cb = conn_event;
	c->t.cb = conn_timer;
	c->id = ++s->next_id;
	c->born_ns = c->last_tx_ns = c->last_rx_ns = loop_now_ns(s->loop);
	return c;
}

/* Puts c on the loop and in the lists; feeds rest. 0, or -errno (c is closed and freed). */
static int conn_start(struct relay_server *s, struct rconn *c, const uint8_t *rest, size_t rest_len)
{
	int r;

	c->events = EPOLLIN | EPOLLOUT;
	r = loop_fd_add(s->loop, &c->h, c->events);
	if (r < 0) {
		httpd_io_close(&c->io);
		httpd_slot_release(&c->slot);
		relay_conn_clear(&c->rc);
		free(c->pre);
		free(c);
		return r;
	}
	c->next = s->conns;
	if (c->next)
		c->next->prev = c;
	s->conns = c;
	s->st.conns++;
	s->st.handshaking++;
	timer_rearm(c);
	if (rest_len)
		conn_input(c, rest, rest_len);
	/* TLS may hold decrypted bytes already: read once before waiting. */
	if (!c->dead)
		conn_event(&c->h, EPOLLIN | EPOLLOUT);
	flush_marked(s);
	return 0;
}

int relay_server_take(struct relay_server *s, struct httpd_upgrade *up)
{
	struct rconn *c = conn_new(s, KIND_CLIENT, &up->io);
	int r;

	if (!c) {
		httpd_upgrade_release(up);
		return -ENOMEM;
	}
	r = relay_conn_server_init_pair(&c->rc, s->priv, s->pub, s->has_mesh ? s->mesh_key : NULL);
	if (r < 0) {
		free(c);
		httpd_upgrade_release(up);
		return r;
	}
	c->slot = up->slot;
	c->born_ns = up->born_ns;
	memcpy(c->peer, up->peer, sizeof(c->peer));
	c->pre = up->out;
	c->pre_len = up->out_len;
	up->out = NULL;
	s->st.accepted++;
	r = conn_start(s, c, up->rest, up->rest_len);
	free(up->rest);
	up->rest = NULL;
	return r;
}

void relay_server_http(struct httpd_request *r, void *ctx)
{
	struct relay_server *s = ctx;
	const struct http_request *req = r->head;
	struct httpd_upgrade up;

	if (!http_header_has_token(req->headers, req->n_headers, "Connection", "upgrade") ||
	    !http_header_has_token(req->headers, req->n_headers, "Upgrade", RELAY_UPGRADE_TOKEN))
		return httpd_error(r, 426, "GET /relay without upgrade");
	if (req->has_content_length && req->content_length)
		return httpd_error(r, 400, "upgrade with a body");
	if (httpd_upgrade(r, "Upgrade: " RELAY_UPGRADE_TOKEN "\r\nConnection: Upgrade\r\n", &up) ==
	    0)
		relay_server_take(s, &up);
}

int relay_server_route(struct relay_server *s, struct httpd *h)
{
	return httpd_route_add(h, "GET", RELAY_HTTP_PATH, relay_server_http, s);
}

int relay_server_link_take(struct relay_server *s, struct httpd_io *io, const uint8_t *rest,
			   size_t rest_len, const char *name, const uint8_t *pin,
			   void (*down)(void *ctx), void *ctx)
{
	struct rconn *c = conn_new(s, KIND_MESH_OUT, io);
	int r;

	if (!c) {
		httpd_io_close(io);
		return -ENOMEM;
	}
	r = relay_conn_client_init_pair(&c->rc, s->priv, s->pub, pin, s->mesh_key);
	if (r < 0) {
		httpd_io_close(io);
		free(c);
		return r;
	}
	snprintf(c->peer, sizeof(c->peer), "%s", name);
	r = conn_start(s, c, rest, rest_len);
	if (r == 0 && !c->dead) {
		c->link_down = down;
		c->link_ctx = ctx;
		return 0;
	}
	return r < 0 ? r : -ECONNRESET;
}

/* ---- admission ---- */

void relay_server_admit_done(struct relay_server *s, uint64_t token, bool ok)
{
	uint64_t hash = hmap_hash(&s->admitting, &token, 8);

	for (struct hmap_node *n = hmap_first_with_hash(&s->admitting, hash); n;
	     n = hmap_next_with_hash(n)) {
		struct rconn *c = container_of(n, struct rconn, by_key);

		if (c->id != token)
			continue;
		hmap_remove(&s->admitting, &c->by_key);
		c->admitting = false;
		if (ok)
			admit(c);
		else
			conn_close(c, RELAY_CLOSE_REFUSED);
		flush_marked(s);
		return;
	}
}

bool relay_server_revoke(struct relay_server *s, const uint8_t key[RELAY_KEY_LEN])
{
	struct rconn *c = client_find(s, key);

	if (!c)
		return false;
	conn_close_told(c, RELAY_CLOSE_REVOKED);
	flush_marked(s);
	return true;
}

size_t relay_server_recheck(struct relay_server *s)
{
	struct rconn *c, *next;
	size_t n = 0;

	if (!s->admit)
		return 0;
	for (c = s->conns; c; c = next) {
		next = c->next;
		if (!c->registered)
			continue;
		if (s->admit->check(s->admit_ctx, c->key, c->id) == 0) {
			/* next may be closed by this (a watcher told, never closed here). */
			conn_close_told(c, RELAY_CLOSE_REVOKED);
			n++;
		}
	}
	flush_marked(s);
	return n;
}

void relay_server_clients_each(struct relay_server *s,
			       void (*fn)(void *ctx, const uint8_t key[RELAY_KEY_LEN]), void *ctx)
{
	for (struct hmap_node *n = hmap_first(&s->clients); n; n = hmap_next(&s->clients, n))
		fn(ctx, container_of(n, struct rconn, by_key)->key);
}

/* ---- setup ---- */

int relay_server_new(struct loop *loop, const struct relay_server_opts *o,
		     struct relay_server **ret)
{
	struct relay_server *s = calloc(1, sizeof(*s));
	int r = -ENOMEM;

	if (!s)
		return -ENOMEM;
	s->loop = loop;
	snprintf(s->name, sizeof(s->name), "%s", o->name ? o->name : "relay");
	memcpy(s->priv, o->priv, RELAY_KEY_LEN);
	/* Once, here: every connection, accepted or dialled, presents this key. */
	r = x25519_public_from_private(s->pub, s->priv);
	if (r < 0)
		goto out;
	r = -ENOMEM;
	if (o->mesh_key) {
		memcpy(s->mesh_key, o->mesh_key, RELAY_KEY_LEN);
		s->has_mesh = true;
	}
	s->admit = o->admit;
	s->admit_ctx = o->admit_ctx;
	s->limits = o->limits;
	if (!s->limits.keepalive_ms)
		s->limits.keepalive_ms = RELAY_KEEPALIVE_MS_DEFAULT;
	if (!s->limits.rate_bytes) {
		s->limits.rate_bytes = RELAY_RATE_BYTES_DEFAULT;
		s->limits.burst_bytes = RELAY_BURST_BYTES_DEFAULT;
	}
	if (!s->limits.burst_bytes)
		s->limits.burst_bytes = MAX(s->limits.rate_bytes / 4, (uint32_t)BIG_CAP);
	if (!s->limits.rate_packets)
		s->limits.rate_packets = RELAY_RATE_PACKETS_DEFAULT;
	s->queue_max = o->queue_max ? o->queue_max : RELAY_QUEUE_MAX_DEFAULT;
	s->queue_bytes = o->queue_bytes ? o->queue_bytes : RELAY_QUEUE_BYTES_DEFAULT;
	s->clients_max = o->clients_max ? o->clients_max : RELAY_CLIENTS_MAX_DEFAULT;
	s->hs_timeout_ns =
	    o->handshake_timeout_ns ? o->handshake_timeout_ns : RELAY_HANDSHAKE_TIMEOUT_NS_DEFAULT;
	s->reap_t.cb = reap;
	if (hmap_init(&s->clients) < 0 || hmap_init(&s->admitting) < 0 || hmap_init(&s->remote) < 0)
		goto out;
	*ret = s;
	return 0;
out:
	relay_server_free(s);
	return r;
}

void relay_server_free(struct relay_server *s)
{
	if (!s)
		return;
	/* Links first: their down hooks belong to a mesh that may be gone already. */
	for (struct rconn *c = s->conns; c; c = c->next)
		c->link_down = NULL;
	while (s->conns)
		conn_close(s->conns, -1);
	s->flush_head = NULL;
	loop_timer_disarm(s->loop, &s->reap_t);
	reap(&s->reap_t);
	pool_free(&s->pool);
	hmap_fini(&s->clients);
	hmap_fini(&s->admitting);
	hmap_fini(&s->remote);
	crypto_wipe(s->priv, sizeof(s->priv));
	crypto_wipe(s->mesh_key, sizeof(s->mesh_key));
	free(s);
}

void relay_server_stats_get(const struct relay_server *s, struct relay_stats *ret)
{
	*ret = s->st;
	ret->remote = hmap_count(&s->remote);
	ret->bufs_small = s->pool.n_small;
	ret->bufs_big = s->pool.n_big;
}

const uint8_t *relay_server_pub(const struct relay_server *s)
{
	return s->pub;
}

static const char *const drop_names[RELAY_DROP_MAX] = {
    [RELAY_DROP_QUEUE_FULL] = "queue_full",	[RELAY_DROP_RATE_BYTES] = "rate_bytes",
    [RELAY_DROP_RATE_PACKETS] = "rate_packets", [RELAY_DROP_NOT_HERE] = "not_here",
    [RELAY_DROP_NO_BUFFER] = "no_buffer",	[RELAY_DROP_SELF] = "to_self",
};

static const char *const close_names[RELAY_CLOSE_MAX] = {
    [RELAY_CLOSE_GONE] = "gone",
    [RELAY_CLOSE_PROTOCOL] = "protocol",
    [RELAY_CLOSE_TOO_BIG] = "frame_too_big",
    [RELAY_CLOSE_PROOF] = "bad_proof",
    [RELAY_CLOSE_VERSION] = "version",
    [RELAY_CLOSE_HANDSHAKE_TIMEOUT] = "handshake_timeout",
    [RELAY_CLOSE_REFUSED] = "refused",
    [RELAY_CLOSE_REVOKED] = "revoked",
    [RELAY_CLOSE_REPLACED] = "replaced",
    [RELAY_CLOSE_SLOW] = "slow_reader",
    [RELAY_CLOSE_IO] = "io",
    [RELAY_CLOSE_LIMIT] = "client_limit",
};

void relay_server_metrics_write(const struct relay_server *s, FILE *f)
{
	struct relay_stats st;

	relay_server_stats_get(s, &st);
	fprintf(
	    f,
	    "# HELP trellis_relay_clients Clients connected and admitted.\n"
	    "# TYPE trellis_relay_clients gauge\ntrellis_relay_clients %zu\n"
	    "# HELP trellis_relay_clients_home Clients that call this relay their home.\n"
	    "# TYPE trellis_relay_clients_home gauge\ntrellis_relay_clients_home %zu\n"
	    "# HELP trellis_relay_handshaking Connections not yet admitted.\n"
	    "# TYPE trellis_relay_handshaking gauge\ntrellis_relay_handshaking %zu\n"
	    "# HELP trellis_relay_mesh_peers Mesh peers: links we hold (out), relays "
	    "connected to us (in).\n"
	    "# TYPE trellis_relay_mesh_peers gauge\n"
	    "trellis_relay_mesh_peers{dir=\"out\"} %zu\ntrellis_relay_mesh_peers{dir=\"in\"} %zu\n"
	    "# HELP trellis_relay_mesh_clients Clients of other relays of the mesh.\n"
	    "# TYPE trellis_relay_mesh_clients gauge\ntrellis_relay_mesh_clients %zu\n"
	    "# HELP trellis_relay_accepted_total Connections taken over from HTTP.\n"
	    "# TYPE trellis_relay_accepted_total counter\ntrellis_relay_accepted_total %" PRIu64
	    "\n"
	    "# HELP trellis_relay_packets_total Packets received, delivered to local "
	    "clients, forwarded into the mesh.\n"
	    "# TYPE trellis_relay_packets_total counter\n"
	    "trellis_relay_packets_total{dir=\"in\"} %" PRIu64 "\n"
	    "trellis_relay_packets_total{dir=\"local\"} %" PRIu64 "\n"
	    "trellis_relay_packets_total{dir=\"mesh\"} %" PRIu64 "\n"
	    "# HELP trellis_relay_bytes_total Datagram bytes, as packets_total.\n"
	    "# TYPE trellis_relay_bytes_total counter\n"
	    "trellis_relay_bytes_total{dir=\"in\"} %" PRIu64 "\n"
	    "trellis_relay_bytes_total{dir=\"local\"} %" PRIu64 "\n"
	    "trellis_relay_bytes_total{dir=\"mesh\"} %" PRIu64 "\n"
	    "# HELP trellis_relay_buffers Pooled frame buffers allocated.\n"
	    "# TYPE trellis_relay_buffers gauge\n"
	    "trellis_relay_buffers{size=\"small\"} %zu\ntrellis_relay_buffers{size=\"big\"} %zu\n",
	    st.clients, st.home, st.handshaking, st.mesh_out, st.mesh_in, st.remote, st.accepted,
	    st.packets_in, st.packets_fwd, st.packets_mesh, st.bytes_in, st.bytes_fwd,
	    st.bytes_mesh, st.bufs_small, st.bufs_big);
	fprintf(f, "# HELP trellis_relay_drops_total Packets dropped, by reason.\n"
		   "# TYPE trellis_relay_drops_total counter\n");
	for (int i = 0; i < RELAY_DROP_MAX; i++)
		fprintf(f, "trellis_relay_drops_total{reason=\"%s\"} %" PRIu64 "\n", drop_names[i],
			st.drops[i]);
	fprintf(f, "# HELP trellis_relay_closes_total Connections closed, by reason.\n"
		   "# TYPE trellis_relay_closes_total counter\n");
	for (int i = 0; i < RELAY_CLOSE_MAX; i++)
		fprintf(f, "trellis_relay_closes_total{reason=\"%s\"} %" PRIu64 "\n",
			close_names[i], st.closes[i]);
}
