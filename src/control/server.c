// SPDX-License-Identifier: MIT
/*
 * trellis-control serve: one event-loop thread for every connection.
 *
 * A connection moves HTTP -> (GET: one response, then close) or
 * HTTP -> 101 -> STREAM. A stream is unauthenticated until the Noise handshake
 * completes (10 s deadline, counted against the per-address limit), then
 * carries messages: register (answered once the store made it durable),
 * map_request (full netmap, then coalesced deltas from the mapper), endpoints,
 * logout, keepalive. TLS sits under the same state machine (OpenSSL
 * non-blocking: WANT_READ/WANT_WRITE only change which epoll events we wait for).
 *
 * In-memory state is the truth while serving: the mapper holds every node
 * record, the kv indexes find nodes by machine key and name. The store is the
 * durable record: writes go through store_submit (group commit on its writer
 * thread) and the answer to the node waits for the completion. Changes made by
 * the admin CLI arrive through the store's change feed, polled every 200 ms.
 *
 * Connections are never freed inside a call chain that may still use them:
 * conn_close marks them dead and a zero-delay timer frees them.
 *
 * Output and memory. A full netmap is O(nodes) bytes (~400 per peer), so a
 * burst of map_requests must not build them all at once: a connection that
 * needs one (stream start, a resync) only sets full_want, and the map is
 * built when its output has drained, at most FULL_INFLIGHT_MAX of them sitting
 * in our buffers at once, a few per loop turn (full_pump). While a full map is
 * wanted, the deltas of that node are dropped: the map supersedes them (the
 * mapper resets the subscriber's pending state when it builds it). A reader
 * whose backlog of deltas grows past delta_backlog_max is resynchronised the
 * same way, so a connection holds at most one full map plus that backlog; one
 * that makes no write progress for STALL_NS is closed. Node -> server messages
 * are capped at NODE_MSG_MAX by the stream itself, before they are buffered.
 * Store writes of live state (endpoints, online) are coalesced per node: one
 * in flight, the latest record wins.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "control/addr.h"
#include "control/admin_op.h"
#include "control/authkey.h"
#include "control/kv.h"
#include "control/mapper.h"
#include "control/server.h"
#include "control/store.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/http.h"

#define HANDSHAKE_TIMEOUT_NS HTTPD_HANDSHAKE_TIMEOUT_NS
#define KEEPALIVE_NS (30 * NSEC_PER_SEC)
#define SILENCE_NS (90 * NSEC_PER_SEC)
#define FLUSH_DELAY_NS (50 * NSEC_PER_MSEC) /* coalesces bursts; well inside the 1 s budget */
/* A flush that took long waits twice its duration before the next: bounded CPU share. */
#define FLUSH_DELAY_MAX_NS (400 * NSEC_PER_MSEC)
#define FULL_INFLIGHT_MAX 16               /* full netmaps in our buffers at once */
#define FULL_TURN_NS (10 * NSEC_PER_MSEC)  /* full-map building per loop turn */
#define DELTA_BACKLOG_MAX (1U << 20)       /* unwritten deltas before a resync */
#define STALL_NS (30 * NSEC_PER_SEC)       /* output pending without progress */
#define TICK_NS (200 * NSEC_PER_MSEC)       /* change feed and key expiry */
#define NODE_MSG_MAX 65536                   /* node -> server, checked before decoding */
#define OUTPUT_MAX (64U << 20)              /* a reader this far behind is closed */
#define READ_CHUNK 16384
#define DEFAULT_USER "default"

enum drop {
	DROP_HTTP_BAD,
	DROP_HTTP_TOO_BIG,
	DROP_HANDSHAKE_TIMEOUT,
	DROP_STREAM_BAD,
	DROP_MSG_TOO_BIG,
	DROP_MSG_BAD,
	DROP_PROTOCOL,
	DROP_UNKNOWN_NODE,
	DROP_SILENT,
	DROP_SLOW_READER,
	DROP_UNAUTH_LIMIT,
	DROP_CONN_LIMIT,
	DROP_IO,
	DROP_STORE_BUSY,
	DROP_MAX,
};

static const char *const drop_names[DROP_MAX] = {
	"http_bad",	  "http_too_big", "handshake_timeout", "stream_bad",  "msg_too_big",
	"msg_bad",	  "protocol",	  "unknown_node",      "silent",      "slow_reader",
	"unauth_limit", "conn_limit",	  "io",		       "store_busy",
};

struct conn {
	struct control_server *s;
	struct loop_fd h;
	struct loop_timer t;
	struct conn *prev, *next; /* live list, or the dead list */
	bool dead, authed, close_after_write;
	uint32_t events;
	struct httpd_io io;
	struct httpd_slot slot;
	char peer[HTTPD_PEER_MAX];
	char host[HTTPD_HOST_MAX];
	uint8_t *out;
	size_t out_len, out_off;
	struct ctrlstream *cs;
	uint8_t machine_key[NETMAP_KEY_LEN];
	uint64_t node_id; /* map stream of this node */
	uint64_t wait_id; /* waiting for this node's approval */
	struct op *op;    /* registration or logout in the store */
	uint64_t born_ns, last_rx_ns, last_tx_ns;
	uint64_t stall_ns; /* output pending and no write progress since; 0 = none */
	/* Full netmap of full_id wanted (queued when output drains), or in our buffers. */
	bool full_want, full_queued, full_inflight, full_close;
	uint64_t full_id;
	size_t full_len;
	struct conn *fq_prev, *fq_next;
};

struct stail {
	struct control_tailnet t;
	struct addr_pool *pool;
	uint64_t default_user;
};

enum op_kind { OP_REGISTER, OP_LOGOUT };

struct op {
	struct control_server *s;
	struct conn *c;
	enum op_kind kind;
	bool insert;
	struct control_node rec;
	/* A key rotation: the key and expiry to put back if the write fails. */
	bool rotate;
	uint8_t prev_node_key[NETMAP_KEY_LEN];
	int64_t prev_key_expiry;
	uint8_t name_key[KV_KEY_MAX];
	size_t name_key_len;
};

struct eph {
	struct loop_timer t;
	struct control_server *s;
	uint64_t id;
};

struct counters {
	uint64_t regs_ok, regs_needs_auth, regs_error, netmaps, deltas, keepalives;
	uint64_t resyncs, deltas_superseded, writes_coalesced;
	size_t out_max; /* most bytes one connection had buffered */
	uint64_t drops[DROP_MAX];
};

struct control_server {
	struct loop *loop;
	struct store *store;
	struct mapper *m;
	struct kv *kv;
	struct httpd *httpd;
	uint8_t priv[CTRLSTREAM_KEY_LEN];
	char pub_b64[KEY_BASE64_LEN + 1];
	uint64_t default_tid;
	struct stail **tails;
	size_t n_tails;
	struct conn *conns, *dead;
	size_t n_streams;
	struct loop_timer flush_t, tick_t, reap_t, full_t;
	uint64_t flush_earliest_ns; /* a long flush pushes the next one back (CPU share) */
	struct conn *fq_head, *fq_tail; /* connections waiting to be sent a full netmap */
	size_t n_fq, n_full_inflight;
	size_t delta_backlog_max;
	uint64_t change_cursor;
	struct loop_async stop_async; /* control_server_stop, from any thread */
	struct counters ctr;
};

/* ---- keys of the kv index ---- */

/*
 * 'T' tid -> stail*      'A' authkey id -> control_authkey*   'u' uid -> control_user*
 * 'M' machine -> node    'm' tid machine -> node (0: insert in flight)
 * 'N' tid name -> node (0: reserved)   'S' tid name -> next suffix
 * 'C' node -> conn* (map stream)   'W' node -> conn* (awaiting approval)
 * 'E' node -> eph*
 * 'P' node -> 1: a write of its live state in flight, 2: and another wanted
 */
struct key {
	uint8_t b[KV_KEY_MAX];
	size_t len;
};

static struct key key_make(char tag, uint64_t n, const void *p, size_t len)
{
	struct key k;

	k.b[0] = (uint8_t)tag;
	memcpy(k.b + 1, &n, sizeof(n));
	if (len > KV_KEY_MAX - 9)
		len = KV_KEY_MAX - 9;
	if (len)
		memcpy(k.b + 9, p, len);
	k.len = 9 + len;
	return k;
}

static bool kget(struct control_server *s, struct key k, uint64_t *ret)
{
	return kv_get(s->kv, k.b, k.len, ret);
}

static void kput(struct control_server *s, struct key k, uint64_t v)
{
	if (kv_put(s->kv, k.b, k.len, v) < 0)
		log_err("control: out of memory in an index");
}

static void kdel(struct control_server *s, struct key k)
{
	kv_del(s->kv, k.b, k.len);
}

static void *kptr(struct control_server *s, struct key k)
{
	uint64_t v;

	return kget(s, k, &v) ? (void *)(uintptr_t)v : NULL;
}

static struct stail *tail_get(struct control_server *s, uint64_t tid)
{
	return kptr(s, key_make('T', tid, NULL, 0));
}

/* ---- forward declarations ---- */

static void conn_close(struct conn *c, int drop, const char *why);
static void conn_flush(struct conn *c);
static void schedule_flush(struct control_server *s);
static void node_forget(struct control_server *s, uint64_t id);

/* ---- store helpers ---- */

static void noop_done(void *ctx, int err, uint64_t id)
{
	(void)ctx;
	(void)id;
	if (err < 0)
		log_ratelimited(LOG_LEVEL_WARN, "control: store write failed: %s", strerror(-err));
}

struct persist {
	struct control_server *s;
	uint64_t id;
};

static void persist_done(void *ctx, int err, uint64_t unused);

static int persist_submit(struct control_server *s, uint64_t id)
{
	const struct control_node *n = mapper_node_get(s->m, id);
	struct store_op op = { .kind = STORE_OP_NODE_UPDATE };
	struct persist *p;

	if (!n)
		return -ENOENT;
	p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->s = s;
	p->id = id;
	op.node = *n;
	if (store_submit(s->store, &op, persist_done, p) < 0) {
		free(p);
		s->ctr.drops[DROP_STORE_BUSY]++;
		return -EAGAIN;
	}
	return 0;
}

static void persist_done(void *ctx, int err, uint64_t unused)
{
	struct persist *p = ctx;
	struct control_server *s = p->s;
	struct key k = key_make('P', p->id, NULL, 0);
	uint64_t v;

	noop_done(NULL, err, unused);
	if (kget(s, k, &v) && v == 2 && persist_submit(s, p->id) == 0)
		kput(s, k, 1);
	else
		kdel(s, k);
	free(p);
}

/*
 * Writes the mapper's current record of node id (lazy: last_seen, endpoints).
 * A node can send `endpoints` as fast as it likes; each would be a durable
 * write. So at most one write per node is in flight, and changes made
 * meanwhile go out as one write of the latest record when it completes.
 */
static void persist_node(struct control_server *s, uint64_t id)
{
	struct key k = key_make('P', id, NULL, 0);
	uint64_t v;

	if (kget(s, k, &v)) {
		if (v == 1)
			kput(s, k, 2);
		s->ctr.writes_coalesced++;
		return;
	}
	if (persist_submit(s, id) == 0)
		kput(s, k, 1);
}

/* ---- rendering a record as the node sees it ---- */

static void render(struct control_server *s, const struct control_node *r, struct netmap_node *ret)
{
	const struct control_user *u = r->user_id ? kptr(s, key_make('u', r->user_id, NULL, 0)) : NULL;

	control_node_render(r, u ? u->name : NULL, ret);
}

/* ---- sending ---- */

static int send_msg(struct conn *c, struct ctrl_msg *m)
{
	char *json = NULL;
	size_t len;
	int r;

	if (c->dead || !c->cs)
		return -EPIPE;
	r = ctrl_msg_encode(m, &json, &len);
	if (r == 0)
		r = ctrlstream_send(c->cs, json, len);
	free(json);
	if (r < 0) {
		log_ratelimited(LOG_LEVEL_WARN, "control: %s: cannot send %s: %s", c->peer,
				ctrl_msg_type_name(m->type), strerror(-r));
		return r;
	}
	c->last_tx_ns = loop_now_ns(c->s->loop);
	conn_flush(c);
	return 0;
}

static void send_raw(struct conn *c, const char *json)
{
	if (c->dead || !c->cs || ctrlstream_send(c->cs, json, strlen(json)) < 0)
		return;
	c->last_tx_ns = loop_now_ns(c->s->loop);
	conn_flush(c);
}

/* A protocol error after the handshake: tell the node why, then close. */
static void conn_fail(struct conn *c, int drop, const char *why)
{
	struct ctrl_msg m = { .type = CTRL_MSG_ERROR };

	if (c->dead)
		return;
	if (c->cs && ctrlstream_established(c->cs)) {
		snprintf(m.error, sizeof(m.error), "%s", why);
		send_msg(c, &m);
	}
	conn_close(c, drop, why);
}

static void reply_register(struct conn *c, enum ctrl_register_status st, const char *err,
			   const struct control_node *rec)
{
	struct control_server *s = c->s;
	struct ctrl_msg m = { .type = CTRL_MSG_REGISTER_RESPONSE };

	m.reg_resp.status = st;
	if (st == CTRL_REGISTER_ERROR) {
		s->ctr.regs_error++;
		snprintf(m.reg_resp.error, sizeof(m.reg_resp.error), "%s", err);
	} else if (st == CTRL_REGISTER_NEEDS_AUTH) {
		s->ctr.regs_needs_auth++;
		snprintf(m.reg_resp.auth_url, sizeof(m.reg_resp.auth_url), "%s://%s/register/%" PRIu64,
			 httpd_tls(s->httpd) ? "https" : "http",
			 c->host[0] ? c->host : httpd_listen_name(s->httpd), rec->id);
	} else {
		s->ctr.regs_ok++;
		m.reg_resp.has_node = true;
		render(s, rec, &m.reg_resp.node);
	}
	send_msg(c, &m);
}

/* ---- connection I/O ---- */

static void conn_events_set(struct conn *c, uint32_t ev)
{
	if (ev == c->events || c->dead)
		return;
	if (loop_fd_mod(c->s->loop, &c->h, ev) == 0)
		c->events = ev;
}

static size_t conn_pending(const struct conn *c)
{
	return c->out_len - c->out_off + (c->cs ? ctrlstream_output_pending(c->cs) : 0);
}

/* ---- full netmaps: built when the connection can take them ---- */

static void fq_push(struct conn *c)
{
	struct control_server *s = c->s;

	if (c->full_queued || c->dead)
		return;
	c->full_queued = true;
	c->fq_next = NULL;
	c->fq_prev = s->fq_tail;
	if (s->fq_tail)
		s->fq_tail->fq_next = c;
	else
		s->fq_head = c;
	s->fq_tail = c;
	s->n_fq++;
	if (!s->full_t.armed && s->n_full_inflight < FULL_INFLIGHT_MAX)
		loop_timer_arm(s->loop, &s->full_t, loop_now_ns(s->loop));
}

static void fq_remove(struct conn *c)
{
	struct control_server *s = c->s;

	if (!c->full_queued)
		return;
	c->full_queued = false;
	if (c->fq_prev)
		c->fq_prev->fq_next = c->fq_next;
	else
		s->fq_head = c->fq_next;
	if (c->fq_next)
		c->fq_next->fq_prev = c->fq_prev;
	else
		s->fq_tail = c->fq_prev;
	c->fq_prev = c->fq_next = NULL;
	s->n_fq--;
}

static void full_release(struct conn *c)
{
	struct control_server *s = c->s;

	if (!c->full_inflight)
		return;
	c->full_inflight = false;
	s->n_full_inflight--;
	if (s->fq_head && !s->full_t.armed)
		loop_timer_arm(s->loop, &s->full_t, loop_now_ns(s->loop));
}

/* The node behind c gets a full netmap as soon as its output has drained. */
static void full_request(struct conn *c, uint64_t id)
{
	c->full_want = true;
	c->full_id = id;
	if (!conn_pending(c))
		fq_push(c);
}

static void conn_flush(struct conn *c)
{
	size_t pending;
	bool progress = false;
	ssize_t w;

	if (c->dead)
		return;
	c->io.wants_write = false;
	while (c->out_off < c->out_len) {
		w = httpd_io_write(&c->io, c->out + c->out_off, c->out_len - c->out_off);
		if (w == -EAGAIN)
			break;
		if (w < 0) {
			conn_close(c, DROP_IO, "write failed");
			return;
		}
		c->out_off += (size_t)w;
		progress = true;
	}
	if (c->out_off == c->out_len && c->out) {
		free(c->out);
		c->out = NULL;
		c->out_len = c->out_off = 0;
	}
	while (!c->out) {
		const uint8_t *d;
		size_t len;

		if (ctrlstream_output(c->cs, &d, &len) < 0) {
			conn_close(c, DROP_STREAM_BAD, "stream error");
			return;
		}
		if (!len)
			break;
		w = httpd_io_write(&c->io, d, len);
		if (w == -EAGAIN)
			break;
		if (w < 0) {
			conn_close(c, DROP_IO, "write failed");
			return;
		}
		ctrlstream_output_consume(c->cs, (size_t)w);
		progress = true;
	}
	pending = conn_pending(c);
	if (pending > c->s->ctr.out_max)
		c->s->ctr.out_max = pending;
	/* A backstop: the resync in flush_cb keeps well below it. */
	if (pending > OUTPUT_MAX) {
		conn_close(c, DROP_SLOW_READER, "reader too slow");
		return;
	}
	if (!pending) {
		c->stall_ns = 0;
		full_release(c);
		if (c->full_want)
			fq_push(c);
	} else if (progress || !c->stall_ns) {
		c->stall_ns = loop_now_ns(c->s->loop);
	}
	if (!pending && c->close_after_write) {
		conn_close(c, -1, NULL);
		return;
	}
	conn_events_set(c, EPOLLIN | (pending || c->io.wants_write ? EPOLLOUT : 0));
}

static void eph_cancel(struct control_server *s, uint64_t id)
{
	struct key k = key_make('E', id, NULL, 0);
	struct eph *e = kptr(s, k);

	if (!e)
		return;
	loop_timer_disarm(s->loop, &e->t);
	kdel(s, k);
	free(e);
}

static void eph_arm(struct control_server *s, uint64_t id);

static void conn_close(struct conn *c, int drop, const char *why)
{
	struct control_server *s = c->s;
	uint64_t v;

	if (c->dead)
		return;
	c->dead = true;
	if (drop >= 0) {
		s->ctr.drops[drop]++;
		log_ratelimited(LOG_LEVEL_INFO, "control: %s: closed: %s", c->peer, why);
	}
	loop_fd_del(s->loop, &c->h);
	loop_timer_disarm(s->loop, &c->t);
	httpd_io_close(&c->io);
	httpd_slot_release(&c->slot);
	fq_remove(c);
	full_release(c);
	c->full_want = false;
	if (c->node_id) {
		uint64_t id = c->node_id;
		const struct control_node *n;

		c->node_id = 0;
		s->n_streams--;
		if (kget(s, key_make('C', id, NULL, 0), &v) && v == (uintptr_t)c) {
			kdel(s, key_make('C', id, NULL, 0));
			mapper_unsubscribe(s->m, id);
			if (mapper_node_online(s->m, id, false, time_wall_s()) == 0) {
				persist_node(s, id);
				n = mapper_node_get(s->m, id);
				if (n && n->ephemeral)
					eph_arm(s, id);
			}
			schedule_flush(s);
		}
	}
	if (c->wait_id) {
		if (kget(s, key_make('W', c->wait_id, NULL, 0), &v) && v == (uintptr_t)c)
			kdel(s, key_make('W', c->wait_id, NULL, 0));
		c->wait_id = 0;
	}
	if (c->op) {
		c->op->c = NULL;
		c->op = NULL;
	}
	ctrlstream_free(c->cs);
	c->cs = NULL;
	free(c->out);
	c->out = NULL;
	/* Move from the live list to the dead list; the reaper frees it. */
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
}

static void reap(struct loop_timer *t)
{
	struct control_server *s = container_of(t, struct control_server, reap_t);
	struct conn *c, *n;

	for (c = s->dead; c; c = n) {
		n = c->next;
		free(c);
	}
	s->dead = NULL;
}

/* ---- HTTP ---- */

static int metrics_render(struct control_server *s, char **ret, size_t *ret_len)
{
	struct store_stats st;
	struct httpd_stats hs;
	uint64_t drops[DROP_MAX];
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return -ENOMEM;
	store_stats_get(s->store, &st);
	httpd_stats_get(s->httpd, &hs);
	memcpy(drops, s->ctr.drops, sizeof(drops));
	drops[DROP_HTTP_BAD] += hs.drops[HTTPD_DROP_BAD];
	drops[DROP_HTTP_TOO_BIG] += hs.drops[HTTPD_DROP_TOO_BIG];
	drops[DROP_HANDSHAKE_TIMEOUT] += hs.drops[HTTPD_DROP_TIMEOUT];
	drops[DROP_UNAUTH_LIMIT] += hs.drops[HTTPD_DROP_UNAUTH_LIMIT];
	drops[DROP_CONN_LIMIT] += hs.drops[HTTPD_DROP_CONN_LIMIT];
	drops[DROP_IO] += hs.drops[HTTPD_DROP_IO];
	fprintf(f, "# TYPE trellis_control_connections gauge\n"
		   "trellis_control_connections %zu\n"
		   "# TYPE trellis_control_connections_unauthenticated gauge\n"
		   "trellis_control_connections_unauthenticated %zu\n"
		   "# TYPE trellis_control_connections_total counter\n"
		   "trellis_control_connections_total %" PRIu64 "\n"
		   "# TYPE trellis_control_streams gauge\n"
		   "trellis_control_streams %zu\n"
		   "# TYPE trellis_control_nodes gauge\n"
		   "trellis_control_nodes %zu\n",
		hs.conns, hs.unauth, hs.conns_total, s->n_streams,
		mapper_node_count(s->m));
	fprintf(f, "# TYPE trellis_control_registrations_total counter\n"
		   "trellis_control_registrations_total{result=\"ok\"} %" PRIu64 "\n"
		   "trellis_control_registrations_total{result=\"needs_auth\"} %" PRIu64 "\n"
		   "trellis_control_registrations_total{result=\"error\"} %" PRIu64 "\n",
		s->ctr.regs_ok, s->ctr.regs_needs_auth, s->ctr.regs_error);
	fprintf(f, "# TYPE trellis_control_messages_sent_total counter\n"
		   "trellis_control_messages_sent_total{type=\"netmap\"} %" PRIu64 "\n"
		   "trellis_control_messages_sent_total{type=\"delta\"} %" PRIu64 "\n"
		   "trellis_control_messages_sent_total{type=\"keepalive\"} %" PRIu64 "\n",
		s->ctr.netmaps, s->ctr.deltas, s->ctr.keepalives);
	fprintf(f, "# TYPE trellis_control_resyncs_total counter\n"
		   "trellis_control_resyncs_total %" PRIu64 "\n"
		   "# TYPE trellis_control_deltas_superseded_total counter\n"
		   "trellis_control_deltas_superseded_total %" PRIu64 "\n"
		   "# TYPE trellis_control_node_writes_coalesced_total counter\n"
		   "trellis_control_node_writes_coalesced_total %" PRIu64 "\n"
		   "# TYPE trellis_control_netmaps_waiting gauge\n"
		   "trellis_control_netmaps_waiting %zu\n"
		   "# TYPE trellis_control_netmaps_buffered gauge\n"
		   "trellis_control_netmaps_buffered %zu\n"
		   "# TYPE trellis_control_connection_output_max_bytes gauge\n"
		   "trellis_control_connection_output_max_bytes %zu\n",
		s->ctr.resyncs, s->ctr.deltas_superseded, s->ctr.writes_coalesced, s->n_fq,
		s->n_full_inflight, s->ctr.out_max);
	fprintf(f, "# TYPE trellis_control_drops_total counter\n");
	for (int i = 0; i < DROP_MAX; i++)
		fprintf(f, "trellis_control_drops_total{reason=\"%s\"} %" PRIu64 "\n", drop_names[i],
			drops[i]);
	fprintf(f, "# TYPE trellis_control_store_commits_total counter\n"
		   "trellis_control_store_commits_total %" PRIu64 "\n"
		   "# TYPE trellis_control_store_ops_total counter\n"
		   "trellis_control_store_ops_total %" PRIu64 "\n",
		st.commits, st.ops);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

static void stream_input(struct conn *c, const uint8_t *data, size_t len);
static void conn_event(struct loop_fd *h, uint32_t events);
static void conn_timer(struct loop_timer *t);

static void get_key(struct httpd_request *r, void *ctx)
{
	struct control_server *s = ctx;
	char body[256];
	int n = snprintf(body, sizeof(body), "{\"key\":\"%s\",\"version\":1}\n", s->pub_b64);

	httpd_reply(r, 200, "application/json", body, (size_t)n);
}

static void get_metrics(struct httpd_request *r, void *ctx)
{
	struct control_server *s = ctx;
	char *text;
	size_t len;

	if (metrics_render(s, &text, &len) < 0)
		return httpd_error(r, 500, NULL);
	httpd_reply(r, 200, "text/plain; version=0.0.4", text, len);
	free(text);
}

static void get_register(struct httpd_request *r, void *ctx)
{
	const struct http_request *req = r->head;
	char body[256];
	int n;

	(void)ctx;
	if (req->target_len == 10)
		return httpd_error(r, 404, NULL);
	n = snprintf(body, sizeof(body),
		     "This device waits for approval.\nAn administrator approves it with:\n"
		     "  trellis-control nodes approve %.*s\n",
		     (int)(req->target_len - 10 > 20 ? 20 : req->target_len - 10), req->target + 10);
	httpd_reply(r, 200, "text/plain; charset=utf-8", body, (size_t)n);
}

/* Takes over an upgraded connection: from here on it carries the control stream. */
static void conn_take(struct control_server *s, struct httpd_upgrade *up)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (c)
		c->cs = ctrlstream_server_new(s->priv);
	if (!c || !c->cs) {
		if (c)
			free(c);
		s->ctr.drops[DROP_IO]++;
		log_ratelimited(LOG_LEVEL_INFO, "control: %s: closed: out of memory", up->peer);
		httpd_upgrade_release(up);
		return;
	}
	/* Nodes send small messages: refuse a large one at its length prefix. */
	ctrlstream_set_max_message(c->cs, NODE_MSG_MAX);
	c->s = s;
	c->io = up->io;
	c->slot = up->slot;
	memcpy(c->peer, up->peer, sizeof(c->peer));
	memcpy(c->host, up->host, sizeof(c->host));
	c->out = up->out;
	c->out_len = up->out_len;
	c->h.fd = c->io.fd;
	c->h.cb = conn_event;
	c->t.cb = conn_timer;
	c->born_ns = c->last_rx_ns = c->last_tx_ns = up->born_ns;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	c->events = EPOLLIN;
	if (loop_fd_add(s->loop, &c->h, EPOLLIN) < 0) {
		free(up->rest);
		conn_close(c, DROP_IO, "cannot watch the socket");
		return;
	}
	loop_timer_arm(s->loop, &c->t, c->born_ns + HANDSHAKE_TIMEOUT_NS);
	/* The 101 goes out first; bytes after the head already belong to the stream. */
	conn_flush(c);
	if (!c->dead && up->rest_len)
		stream_input(c, up->rest, up->rest_len);
	free(up->rest);
	/* TLS may hold decrypted bytes already: read before waiting for the socket. */
	if (!c->dead)
		conn_event(&c->h, EPOLLIN);
}

static void post_control(struct httpd_request *r, void *ctx)
{
	struct control_server *s = ctx;
	const struct http_request *req = r->head;
	struct httpd_upgrade up;

	if (!http_header_has_token(req->headers, req->n_headers, "Connection", "upgrade") ||
	    !http_header_has_token(req->headers, req->n_headers, "Upgrade", HTTP_UPGRADE_TOKEN))
		return httpd_error(r, 400, "POST /control without upgrade");
	if (req->has_content_length && req->content_length)
		return httpd_error(r, 400, "upgrade with a body");
	if (httpd_upgrade(r, "Upgrade: " HTTP_UPGRADE_TOKEN "\r\nConnection: Upgrade\r\n", &up) < 0)
		return;
	conn_take(s, &up);
}

/* ---- messages ---- */

static void handle_msg(struct conn *c, const char *json, size_t len);

static void stream_input(struct conn *c, const uint8_t *data, size_t len)
{
	size_t off = 0;
	unsigned stalls = 0;

	while (!c->dead && (off < len || stalls == 0)) {
		const char *msg;
		size_t mlen;
		ssize_t n = 0;
		int r = 0;

		if (off < len) {
			n = ctrlstream_feed(c->cs, data + off, len - off);
			if (n == -EMSGSIZE && c->authed) {
				conn_close(c, DROP_MSG_TOO_BIG, "frame or message too large");
				return;
			}
			if (n < 0) {
				conn_close(c, DROP_STREAM_BAD,
					   ctrlstream_established(c->cs) ? "bad frame"
									 : "bad handshake");
				return;
			}
			off += (size_t)n;
		}
		if (!c->authed && ctrlstream_established(c->cs)) {
			c->authed = true;
			httpd_slot_authenticated(&c->slot);
			ctrlstream_remote_key(c->cs, c->machine_key);
			loop_timer_arm(c->s->loop, &c->t, loop_now_ns(c->s->loop) + KEEPALIVE_NS);
		}
		while (!c->dead && (r = ctrlstream_recv(c->cs, &msg, &mlen)) == 1)
			handle_msg(c, msg, mlen);
		if (c->dead)
			return;
		if (r < 0) {
			conn_close(c, r == -EMSGSIZE ? DROP_MSG_TOO_BIG : DROP_STREAM_BAD,
				   r == -EMSGSIZE ? "message too large" : "stream error");
			return;
		}
		if (off >= len)
			break;
		/* feed consumed nothing and nothing came out: cannot progress. */
		if (n == 0 && ++stalls > 2) {
			conn_close(c, DROP_STREAM_BAD, "stream stalled");
			return;
		}
		if (n > 0)
			stalls = 0;
	}
	conn_flush(c);
}

static void unique_name(struct control_server *s, uint64_t tid, const char *hostname,
			char ret[NETMAP_NAME_MAX])
{
	char base[NETMAP_NAME_MAX - 8];
	size_t i, n = 0;
	uint64_t v, next = 2;
	struct key sk;

	/* A DNS label: lowercase letters, digits and '-', not starting or ending with '-'. */
	for (i = 0; hostname[i] && n < sizeof(base) - 1; i++) {
		char ch = hostname[i];

		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))
			base[n++] = ch;
		else if (ch == '.')
			break;
		else if (n && base[n - 1] != '-')
			base[n++] = '-';
	}
	while (n && base[n - 1] == '-')
		n--;
	base[n] = '\0';
	if (!n)
		snprintf(base, sizeof(base), "node");
	snprintf(ret, NETMAP_NAME_MAX, "%s", base);
	if (!kget(s, key_make('N', tid, ret, strlen(ret)), &v))
		return;
	/* Remember the next free suffix per base name: a thousand "laptop"s stay O(1) each. */
	sk = key_make('S', tid, base, strlen(base));
	if (kget(s, sk, &v))
		next = v;
	for (;; next++) {
		snprintf(ret, NETMAP_NAME_MAX, "%s-%" PRIu64, base, next);
		if (!kget(s, key_make('N', tid, ret, strlen(ret)), &v))
			break;
	}
	kput(s, sk, next + 1);
}

static void name_index(struct control_server *s, const struct control_node *n, uint64_t id)
{
	kput(s, key_make('N', n->tailnet_id, n->name, strlen(n->name)), id);
}

static void name_unindex(struct control_server *s, const struct control_node *n, uint64_t id)
{
	struct key k = key_make('N', n->tailnet_id, n->name, strlen(n->name));
	uint64_t v;

	if (kget(s, k, &v) && v == id)
		kdel(s, k);
}

static void reg_done(void *ctx, int err, uint64_t id)
{
	struct op *op = ctx;
	struct control_server *s = op->s;
	struct conn *c = op->c;
	struct stail *t = tail_get(s, op->rec.tailnet_id);
	const struct control_node *n;

	if (c)
		c->op = NULL;
	if (err < 0) {
		log_ratelimited(LOG_LEVEL_WARN, "control: registration of %s failed: %s",
				op->rec.hostname, strerror(-err));
		if (op->rotate && (n = mapper_node_get(s->m, op->rec.id))) {
			/* Refused: the node keeps its old key, in memory as on disk. */
			struct control_node back = *n;

			memcpy(back.node_key, op->prev_node_key, NETMAP_KEY_LEN);
			back.key_expiry = op->prev_key_expiry;
			mapper_node_upsert(s->m, &back, time_wall_s());
			schedule_flush(s);
		}
		if (op->insert) {
			if (t)
				addr_pool_release(t->pool, op->rec.ipv4);
			kv_del(s->kv, op->name_key, op->name_key_len);
			kdel(s, key_make('m', op->rec.tailnet_id, op->rec.machine_key,
					 NETMAP_KEY_LEN));
		}
		if (c)
			reply_register(c, CTRL_REGISTER_ERROR, "registration failed", NULL);
		free(op);
		return;
	}
	if (op->kind == OP_LOGOUT) {
		if (c) {
			send_raw(c, "{\"type\":\"logout_response\"}");
			if (!c->dead) {
				c->close_after_write = true;
				conn_flush(c);
			}
		}
		free(op);
		return;
	}
	if (op->insert) {
		op->rec.id = id;
		kv_put(s->kv, op->name_key, op->name_key_len, id);
		kput(s, key_make('m', op->rec.tailnet_id, op->rec.machine_key, NETMAP_KEY_LEN), id);
		if (mapper_node_upsert(s->m, &op->rec, time_wall_s()) < 0)
			log_err("control: node %" PRIu64 ": mapper refused the record", id);
	}
	kput(s, key_make('M', 0, op->rec.machine_key, NETMAP_KEY_LEN), op->rec.id);
	schedule_flush(s);
	n = mapper_node_get(s->m, op->rec.id);
	if (c && n) {
		if (n->approved) {
			reply_register(c, CTRL_REGISTER_OK, NULL, n);
		} else {
			reply_register(c, CTRL_REGISTER_NEEDS_AUTH, NULL, n);
			c->wait_id = n->id;
			kput(s, key_make('W', n->id, NULL, 0), (uintptr_t)c);
		}
	}
	free(op);
}

static int op_submit(struct conn *c, struct op *op)
{
	struct control_server *s = c->s;
	struct store_op sop = { .kind = op->insert ? STORE_OP_NODE_INSERT : STORE_OP_NODE_UPDATE };
	int r;

	sop.node = op->rec;
	r = store_submit(s->store, &sop, reg_done, op);
	if (r < 0) {
		s->ctr.drops[DROP_STORE_BUSY]++;
		return r;
	}
	c->op = op;
	return 0;
}

static void changes_drain(struct control_server *s);
static const struct control_node *machine_node(struct conn *c);

/*
 * Rotation: the machine key (authenticated by the Noise handshake) proves the
 * device, old_node_key proves it still holds the current, unexpired key. The
 * node record stays (id, name, addresses); only the node key and its expiry
 * change, so peers get a "changed" delta. An expired node cannot rotate its way
 * back in: it must re-authenticate (auth key or approval) without old_node_key.
 */
static void on_rotate(struct conn *c, const struct ctrl_register *reg)
{
	struct control_server *s = c->s;
	int64_t now = time_wall_s();
	const struct control_node *n = machine_node(c);
	struct stail *t;
	struct op *op;
	const char *why = NULL;

	if (!n || !n->approved)
		why = "key rotation refused: unknown node (register first)";
	else if (!control_node_visible(n, now))
		why = "key rotation refused: node key expired (re-authenticate)";
	else if (!memcmp(n->node_key, reg->node_key, NETMAP_KEY_LEN))
		why = NULL; /* a retry whose first answer was lost: already done */
	else if (memcmp(n->node_key, reg->old_node_key, NETMAP_KEY_LEN) != 0)
		why = "key rotation refused: old node key does not match";
	else if (c->node_id && c->node_id != n->id)
		why = "key rotation refused: not this stream's node";
	if (why) {
		log_ratelimited(LOG_LEVEL_INFO, "control: %s: %s", c->peer, why);
		return reply_register(c, CTRL_REGISTER_ERROR, why, NULL);
	}
	t = tail_get(s, n->tailnet_id);
	op = calloc(1, sizeof(*op));
	if (!op)
		return reply_register(c, CTRL_REGISTER_ERROR, "out of memory", NULL);
	op->s = s;
	op->c = c;
	op->kind = OP_REGISTER;
	op->rec = *n;
	if (memcmp(n->node_key, reg->node_key, NETMAP_KEY_LEN) != 0) {
		op->rotate = true;
		memcpy(op->prev_node_key, n->node_key, NETMAP_KEY_LEN);
		op->prev_key_expiry = n->key_expiry;
		memcpy(op->rec.node_key, reg->node_key, NETMAP_KEY_LEN);
		op->rec.key_expiry = t && t->t.key_expiry_sec ? now + t->t.key_expiry_sec : 0;
		log_info("control: node %" PRIu64 " (%s) rotated its node key", n->id, n->name);
	}
	/* The in-memory record changes now, so later writes of this node carry it. */
	mapper_node_upsert(s->m, &op->rec, now);
	schedule_flush(s);
	if (op_submit(c, op) < 0) {
		c->op = NULL;
		op->c = NULL;
		reg_done(op, -EAGAIN, 0);
		reply_register(c, CTRL_REGISTER_ERROR, "server busy", NULL);
	}
}

static void on_register(struct conn *c, const struct ctrl_register *reg)
{
	struct control_server *s = c->s;
	int64_t now = time_wall_s();
	struct control_authkey *k = NULL;
	const struct control_node *old = NULL;
	struct stail *t;
	struct op *op;
	uint64_t v, tid;
	int r;

	/* A key rotation may come on a live map stream: the stream goes on unbroken. */
	if (c->op || c->wait_id || (c->node_id && !reg->has_old_node_key))
		return conn_fail(c, DROP_PROTOCOL, "register while busy");
	if (reg->has_old_node_key)
		return on_rotate(c, reg);
	if (reg->auth_key[0]) {
		char kid[AUTHKEY_ID_HEX + 1];
		uint8_t hash[32];

		r = authkey_parse(reg->auth_key, kid, hash);
		if (r == 0) {
			k = kptr(s, key_make('A', 0, kid, strlen(kid)));
			/*
			 * A key the admin CLI created since the last tick is not in memory
			 * yet; `trellis up --auth-key "$(trellis-control authkey create)"` must
			 * work at once. Look at the change feed before refusing (cheap when
			 * nothing changed: one PRAGMA data_version).
			 */
			if (!k) {
				changes_drain(s);
				k = kptr(s, key_make('A', 0, kid, strlen(kid)));
			}
			r = authkey_check(k, hash, now);
		}
		crypto_wipe(hash, sizeof(hash));
		if (r < 0) {
			log_ratelimited(LOG_LEVEL_INFO, "control: %s: register refused: %s", c->peer,
					authkey_strerror(r));
			return reply_register(c, CTRL_REGISTER_ERROR, authkey_strerror(r), NULL);
		}
		tid = k->tailnet_id;
	} else {
		tid = s->default_tid;
		if (kget(s, key_make('M', 0, c->machine_key, NETMAP_KEY_LEN), &v))
			tid = mapper_node_get(s->m, v) ? mapper_node_get(s->m, v)->tailnet_id : tid;
	}
	t = tail_get(s, tid);
	if (!t)
		return reply_register(c, CTRL_REGISTER_ERROR, "unknown tailnet", NULL);
	if (kget(s, key_make('m', tid, c->machine_key, NETMAP_KEY_LEN), &v)) {
		if (!v)
			return reply_register(c, CTRL_REGISTER_ERROR, "registration in progress",
					      NULL);
		old = mapper_node_get(s->m, v);
	}
	op = calloc(1, sizeof(*op));
	if (!op)
		return reply_register(c, CTRL_REGISTER_ERROR, "out of memory", NULL);
	op->s = s;
	op->c = c;
	op->kind = OP_REGISTER;
	if (old) {
		op->rec = *old;
	} else {
		op->insert = true;
		op->rec.tailnet_id = tid;
		memcpy(op->rec.machine_key, c->machine_key, NETMAP_KEY_LEN);
		op->rec.created = now;
		if (addr_pool_alloc(t->pool, op->rec.ipv4) < 0) {
			free(op);
			return reply_register(c, CTRL_REGISTER_ERROR, "tailnet address pool full",
					      NULL);
		}
	}
	memcpy(op->rec.node_key, reg->node_key, NETMAP_KEY_LEN);
	snprintf(op->rec.os, sizeof(op->rec.os), "%s", reg->os);
	if (!old || strcmp(old->hostname, reg->hostname) != 0) {
		char name[NETMAP_NAME_MAX];
		struct key nk;

		snprintf(op->rec.hostname, sizeof(op->rec.hostname), "%s", reg->hostname);
		unique_name(s, tid, reg->hostname, name);
		if (old)
			name_unindex(s, old, old->id);
		snprintf(op->rec.name, sizeof(op->rec.name), "%s", name);
		nk = key_make('N', tid, name, strlen(name));
		memcpy(op->name_key, nk.b, nk.len);
		op->name_key_len = nk.len;
		kv_put(s->kv, nk.b, nk.len, old ? old->id : 0);
	}
	if (k) {
		/* Counted now, before the write: a second use of a one-off key is refused
		 * even while the first is in flight. */
		if (!k->reusable) {
			struct store_op kop = { .kind = STORE_OP_AUTHKEY_UPDATE };

			k->uses++;
			kop.authkey = *k;
			/* Queued before the node write: durable no later than it. */
			store_submit(s->store, &kop, noop_done, NULL);
		}
		op->rec.approved = true;
		op->rec.ephemeral = k->ephemeral;
		op->rec.n_tags = k->n_tags;
		memcpy(op->rec.tags, k->tags, sizeof(op->rec.tags));
		op->rec.user_id = k->user_id ? k->user_id : k->n_tags ? 0 : t->default_user;
		op->rec.key_expiry = t->t.key_expiry_sec ? now + t->t.key_expiry_sec : 0;
	} else if (!old || !control_node_visible(old, now)) {
		/* Interactive: waits for `trellis-control nodes approve`. */
		op->rec.approved = false;
		op->rec.user_id = t->default_user;
		op->rec.key_expiry = t->t.key_expiry_sec ? now + t->t.key_expiry_sec : 0;
	}
	/* else: a known, approved machine re-registers (new or rotated node key). */
	if (op->insert) {
		kput(s, key_make('m', tid, c->machine_key, NETMAP_KEY_LEN), 0);
	} else {
		/* The in-memory record changes now, so later writes of this node carry it. */
		mapper_node_upsert(s->m, &op->rec, now);
		schedule_flush(s);
	}
	if (op_submit(c, op) < 0) {
		c->op = NULL;
		op->c = NULL;
		reg_done(op, -EAGAIN, 0);
		reply_register(c, CTRL_REGISTER_ERROR, "server busy", NULL);
	}
}

/* Builds, encodes and queues the full netmap c waits for: once per node, into the stream. */
static void full_send(struct conn *c)
{
	struct control_server *s = c->s;
	char *json = NULL;
	size_t len = 0;
	int r;

	c->full_want = false;
	/* Joined from per-node records the mapper keeps encoded: no render+encode per peer. */
	r = mapper_netmap_json(s->m, c->full_id, time_wall_s(), &json, &len);
	if (r == 0)
		r = ctrlstream_send(c->cs, json, len);
	free(json);
	if (r < 0) {
		log_ratelimited(LOG_LEVEL_WARN, "control: %s: cannot send the netmap: %s", c->peer,
				strerror(-r));
		conn_fail(c, DROP_IO, "cannot build the netmap");
		return;
	}
	s->ctr.netmaps++;
	c->full_inflight = true;
	c->full_len = len;
	s->n_full_inflight++;
	c->last_tx_ns = loop_now_ns(s->loop);
	if (c->full_close)
		c->close_after_write = true;
	conn_flush(c);
}

static void full_pump(struct loop_timer *t)
{
	struct control_server *s = container_of(t, struct control_server, full_t);
	uint64_t t0 = time_now_ns();

	while (s->fq_head && s->n_full_inflight < FULL_INFLIGHT_MAX) {
		struct conn *c = s->fq_head;

		fq_remove(c);
		/* Output that arrived since it was queued: conn_flush queues it again. */
		if (c->dead || !c->full_want || conn_pending(c))
			continue;
		full_send(c);
		/* Yield to I/O: a burst of streams must not stall everyone else's deltas. */
		if (time_now_ns() - t0 > FULL_TURN_NS)
			break;
	}
	if (s->fq_head && s->n_full_inflight < FULL_INFLIGHT_MAX)
		loop_timer_arm(s->loop, t, loop_now_ns(s->loop));
}

static const struct control_node *machine_node(struct conn *c)
{
	uint64_t id;

	if (!kget(c->s, key_make('M', 0, c->machine_key, NETMAP_KEY_LEN), &id))
		return NULL;
	return mapper_node_get(c->s->m, id);
}

static void on_map_request(struct conn *c, const struct ctrl_map_request *mr)
{
	struct control_server *s = c->s;
	const struct control_node *n = machine_node(c);
	int64_t now = time_wall_s();
	struct conn *old;
	uint64_t id;

	if (c->op || c->node_id || c->wait_id || c->full_want)
		return conn_fail(c, DROP_PROTOCOL, "map_request while busy");
	if (!n || memcmp(n->node_key, mr->node_key, NETMAP_KEY_LEN) != 0)
		return conn_fail(c, DROP_UNKNOWN_NODE, "unknown node key");
	if (!n->approved)
		return conn_fail(c, DROP_UNKNOWN_NODE, "node not approved");
	if (!control_node_visible(n, now))
		return conn_fail(c, DROP_UNKNOWN_NODE, "node key expired");
	id = n->id;
	if (mr->n_endpoints) {
		mapper_node_endpoints(s->m, id, mr->endpoints, mr->n_endpoints);
		schedule_flush(s);
	}
	if (!mr->stream) {
		c->full_close = true;
		full_request(c, id);
		return;
	}
	old = kptr(s, key_make('C', id, NULL, 0));
	if (old)
		conn_fail(old, DROP_PROTOCOL, "replaced by a newer map stream");
	c->node_id = id;
	s->n_streams++;
	kput(s, key_make('C', id, NULL, 0), (uintptr_t)c);
	eph_cancel(s, id);
	mapper_subscribe(s->m, id);
	mapper_node_online(s->m, id, true, now);
	persist_node(s, id);
	full_request(c, id);
	schedule_flush(s);
}

static void on_endpoints(struct conn *c, const struct ctrl_endpoints *e)
{
	if (!c->node_id)
		return conn_fail(c, DROP_PROTOCOL, "endpoints without a map stream");
	if (mapper_node_endpoints(c->s->m, c->node_id, e->endpoints, e->n_endpoints) < 0)
		return conn_fail(c, DROP_MSG_BAD, "bad endpoints");
	persist_node(c->s, c->node_id);
	schedule_flush(c->s);
}

static void on_logout(struct conn *c)
{
	struct control_server *s = c->s;
	const struct control_node *n = machine_node(c);
	struct op *op;

	if (c->op)
		return conn_fail(c, DROP_PROTOCOL, "logout while busy");
	if (!n)
		return conn_fail(c, DROP_UNKNOWN_NODE, "unknown node");
	op = calloc(1, sizeof(*op));
	if (!op)
		return conn_fail(c, DROP_IO, "out of memory");
	op->s = s;
	op->c = c;
	op->kind = OP_LOGOUT;
	op->rec = *n;
	op->rec.expiry_disabled = false;
	op->rec.key_expiry = time_wall_s();
	mapper_node_upsert(s->m, &op->rec, time_wall_s());
	schedule_flush(s);
	if (op_submit(c, op) < 0) {
		free(op);
		conn_fail(c, DROP_STORE_BUSY, "server busy");
	}
}

static void handle_msg(struct conn *c, const char *json, size_t len)
{
	struct ctrl_msg m;

	if (len > NODE_MSG_MAX)
		return conn_fail(c, DROP_MSG_TOO_BIG, "message too large");
	if (ctrl_msg_decode(json, len, &m) < 0)
		return conn_fail(c, DROP_MSG_BAD, "malformed message");
	switch (m.type) {
	case CTRL_MSG_REGISTER:
		on_register(c, &m.reg);
		break;
	case CTRL_MSG_MAP_REQUEST:
		on_map_request(c, &m.map_req);
		break;
	case CTRL_MSG_ENDPOINTS:
		on_endpoints(c, &m.endpoints);
		break;
	case CTRL_MSG_LOGOUT:
		on_logout(c);
		break;
	case CTRL_MSG_KEEPALIVE:
		break;
	default:
		conn_fail(c, DROP_PROTOCOL, "unexpected message type");
		break;
	}
	ctrl_msg_clear(&m);
}

/* ---- connection events ---- */

static void conn_readable(struct conn *c)
{
	uint8_t buf[READ_CHUNK];
	struct control_server *s = c->s;

	for (unsigned i = 0; !c->dead; i++) {
		ssize_t n;

		/* Level-triggered epoll calls again; TLS may hold decrypted bytes it won't signal. */
		if (i >= 16 && !c->io.ssl)
			break;
		n = httpd_io_read(&c->io, buf, sizeof(buf));
		if (n == -EAGAIN)
			break;
		if (n == 0 || n == -ECONNRESET) {
			conn_close(c, -1, NULL);
			return;
		}
		if (n < 0) {
			conn_close(c, DROP_IO, "read failed");
			return;
		}
		c->last_rx_ns = loop_now_ns(s->loop);
		stream_input(c, buf, (size_t)n);
	}
}

static void conn_event(struct loop_fd *h, uint32_t events)
{
	struct conn *c = container_of(h, struct conn, h);

	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP) || c->io.ssl)
		conn_readable(c);
	if (!c->dead)
		conn_flush(c);
}

static void conn_timer(struct loop_timer *t)
{
	struct conn *c = container_of(t, struct conn, t);
	struct control_server *s = c->s;
	uint64_t now = loop_now_ns(s->loop);

	if (!c->authed) {
		if (now >= c->born_ns + HANDSHAKE_TIMEOUT_NS) {
			conn_close(c, DROP_HANDSHAKE_TIMEOUT, "no handshake within 10 s");
			return;
		}
		loop_timer_arm(s->loop, t, c->born_ns + HANDSHAKE_TIMEOUT_NS);
		return;
	}
	if (now >= c->last_rx_ns + SILENCE_NS) {
		conn_fail(c, DROP_SILENT, "silent for 90 s");
		return;
	}
	if (c->stall_ns && now >= c->stall_ns + STALL_NS) {
		conn_close(c, DROP_SLOW_READER, "reader stalled");
		return;
	}
	if (now >= c->last_tx_ns + KEEPALIVE_NS) {
		s->ctr.keepalives++;
		send_raw(c, "{\"type\":\"keepalive\"}");
		if (c->dead)
			return;
	}
	loop_timer_arm(s->loop, t,
		       MIN(MIN(c->last_rx_ns + SILENCE_NS, c->last_tx_ns + KEEPALIVE_NS),
			   c->stall_ns ? c->stall_ns + STALL_NS : TIME_NEVER));
}

/* ---- map flush, ephemeral nodes, change feed ---- */

static void schedule_flush(struct control_server *s)
{
	if (s->flush_t.armed || !mapper_dirty_count(s->m))
		return;
	loop_timer_arm(s->loop, &s->flush_t,
		       MAX(loop_now_ns(s->loop) + FLUSH_DELAY_NS, s->flush_earliest_ns));
}

/* Drops what is pending for a subscriber that gets a full netmap instead. */
static void delta_discard(struct control_server *s, uint64_t id)
{
	struct netmap_delta *d = NULL;

	if (mapper_take_delta(s->m, id, &d) == 0 && d)
		s->ctr.deltas_superseded++;
	netmap_delta_free(d);
}

static void flush_cb(struct loop_timer *t)
{
	struct control_server *s = container_of(t, struct control_server, flush_t);
	uint64_t id, t0 = time_now_ns(), dt;

	while ((id = mapper_dirty_first(s->m))) {
		struct conn *c = kptr(s, key_make('C', id, NULL, 0));
		struct ctrl_msg m = { .type = CTRL_MSG_DELTA };
		size_t allowed;
		int r;

		if (!c || c->dead) {
			mapper_unsubscribe(s->m, id);
			continue;
		}
		if (c->full_want) {
			delta_discard(s, id);
			continue;
		}
		/* Behind by more than a full map and a backlog: resync instead of queueing. */
		allowed = (c->full_inflight ? c->full_len : 0) + s->delta_backlog_max;
		if (conn_pending(c) > allowed) {
			s->ctr.resyncs++;
			delta_discard(s, id);
			full_request(c, id);
			continue;
		}
		r = mapper_take_delta(s->m, id, &m.delta);
		if (r < 0) {
			full_request(c, id);
			continue;
		}
		if (!m.delta)
			continue;
		s->ctr.deltas++;
		send_msg(c, &m);
		ctrl_msg_clear(&m);
	}
	dt = time_now_ns() - t0;
	s->flush_earliest_ns = loop_now_ns(s->loop) + MIN(2 * dt, FLUSH_DELAY_MAX_NS);
}

struct eph_del {
	struct control_server *s;
	uint64_t id;
};

static void eph_deleted(void *ctx, int err, uint64_t unused)
{
	struct eph_del *d = ctx;

	(void)unused;
	if (err == 0 || err == -ENOENT)
		node_forget(d->s, d->id);
	free(d);
}

static void eph_fire(struct loop_timer *t)
{
	struct eph *e = container_of(t, struct eph, t);
	struct control_server *s = e->s;
	struct store_op op = { .kind = STORE_OP_NODE_DELETE };
	struct eph_del *d;
	uint64_t id = e->id;

	kdel(s, key_make('E', id, NULL, 0));
	free(e);
	if (kptr(s, key_make('C', id, NULL, 0)))
		return; /* back online */
	d = malloc(sizeof(*d));
	if (!d)
		return;
	d->s = s;
	d->id = id;
	op.id = id;
	log_info("control: ephemeral node %" PRIu64 " offline too long: deleting", id);
	if (store_submit(s->store, &op, eph_deleted, d) < 0)
		free(d);
}

static void eph_arm(struct control_server *s, uint64_t id)
{
	const struct control_node *n = mapper_node_get(s->m, id);
	struct stail *t = n ? tail_get(s, n->tailnet_id) : NULL;
	struct eph *e;
	int64_t timeout = t ? t->t.ephemeral_timeout_sec : 0;

	if (!n)
		return;
	eph_cancel(s, id);
	e = calloc(1, sizeof(*e));
	if (!e)
		return;
	e->s = s;
	e->id = id;
	e->t.cb = eph_fire;
	kput(s, key_make('E', id, NULL, 0), (uintptr_t)e);
	loop_timer_arm(s->loop, &e->t,
		       loop_now_ns(s->loop) + (uint64_t)(timeout > 0 ? timeout : 0) * NSEC_PER_SEC);
}

/* A node is gone (deleted by the admin, or an ephemeral node expired). */
static void node_forget(struct control_server *s, uint64_t id)
{
	const struct control_node *n = mapper_node_get(s->m, id);
	struct conn *c;
	struct stail *t;
	struct key k;
	uint64_t v;

	if (!n)
		return;
	t = tail_get(s, n->tailnet_id);
	if (t)
		addr_pool_release(t->pool, n->ipv4);
	name_unindex(s, n, id);
	k = key_make('m', n->tailnet_id, n->machine_key, NETMAP_KEY_LEN);
	if (kget(s, k, &v) && v == id)
		kdel(s, k);
	k = key_make('M', 0, n->machine_key, NETMAP_KEY_LEN);
	if (kget(s, k, &v) && v == id)
		kdel(s, k);
	eph_cancel(s, id);
	c = kptr(s, key_make('C', id, NULL, 0));
	if (c)
		conn_fail(c, DROP_PROTOCOL, "node deleted");
	c = kptr(s, key_make('W', id, NULL, 0));
	if (c)
		conn_fail(c, DROP_PROTOCOL, "node deleted");
	mapper_node_remove(s->m, id);
	schedule_flush(s);
}

static int tail_add(struct control_server *s, const struct control_tailnet *t);

static void user_add(struct control_server *s, const struct control_user *u)
{
	struct key k = key_make('u', u->id, NULL, 0);
	struct control_user *x = kptr(s, k);
	struct stail *t = tail_get(s, u->tailnet_id);

	if (!x) {
		x = malloc(sizeof(*x));
		if (!x)
			return;
		kput(s, k, (uintptr_t)x);
	}
	*x = *u;
	mapper_user_upsert(s->m, u);
	if (t && !t->default_user && strcmp(u->name, DEFAULT_USER) == 0)
		t->default_user = u->id;
}

static void authkey_add(struct control_server *s, const struct control_authkey *a)
{
	struct key k = key_make('A', 0, a->prefix, strlen(a->prefix));
	struct control_authkey *x = kptr(s, k);
	uint64_t uses = x ? x->uses : 0;

	if (!x) {
		x = malloc(sizeof(*x));
		if (!x)
			return;
		kput(s, k, (uintptr_t)x);
	}
	*x = *a;
	/* Our own in-flight uses count too. */
	if (uses > x->uses)
		x->uses = uses;
}

static void node_changed(struct control_server *s, uint64_t id)
{
	const struct control_node *old = mapper_node_get(s->m, id);
	struct control_node rec;
	struct conn *c;
	int r;

	r = store_node_get(s->store, id, &rec);
	if (r == -ENOENT) {
		node_forget(s, id);
		return;
	}
	if (r < 0)
		return;
	if (old) {
		if (strcmp(old->name, rec.name) != 0) {
			name_unindex(s, old, id);
			name_index(s, &rec, id);
		}
		/* Endpoints are live state: ours are newer than any row. */
		rec.n_endpoints = old->n_endpoints;
		memcpy(rec.endpoints, old->endpoints, sizeof(rec.endpoints));
	} else {
		struct stail *t = tail_get(s, rec.tailnet_id);

		if (t)
			addr_pool_mark(t->pool, rec.ipv4);
		name_index(s, &rec, id);
		kput(s, key_make('m', rec.tailnet_id, rec.machine_key, NETMAP_KEY_LEN), id);
		kput(s, key_make('M', 0, rec.machine_key, NETMAP_KEY_LEN), id);
	}
	mapper_node_upsert(s->m, &rec, time_wall_s());
	schedule_flush(s);
	c = kptr(s, key_make('W', id, NULL, 0));
	if (c && rec.approved) {
		const struct control_node *n = mapper_node_get(s->m, id);

		kdel(s, key_make('W', id, NULL, 0));
		c->wait_id = 0;
		if (n)
			reply_register(c, CTRL_REGISTER_OK, NULL, n);
	}
}

static void change_apply(struct control_server *s, const struct store_change *ch)
{
	switch (ch->kind) {
	case STORE_CHANGE_TAILNET: {
		struct control_tailnet t;
		struct stail *x;

		if (store_tailnet_get(s->store, ch->id, &t) < 0)
			return;
		x = tail_get(s, t.id);
		if (x) {
			x->t = t;
			mapper_tailnet_upsert(s->m, &t);
		} else {
			tail_add(s, &t);
		}
		break;
	}
	case STORE_CHANGE_USER: {
		struct control_user u;

		if (store_user_get(s->store, ch->id, &u) == 0)
			user_add(s, &u);
		break;
	}
	case STORE_CHANGE_NODE:
		node_changed(s, ch->id);
		break;
	case STORE_CHANGE_AUTHKEY: {
		struct control_authkey a;

		if (store_authkey_get(s->store, ch->id, &a) == 0)
			authkey_add(s, &a);
		break;
	}
	default:
		break;
	}
}

/* Applies what other processes (the admin CLI) committed since the last look. */
static void changes_drain(struct control_server *s)
{
	struct store_change ch[256];
	int n;

	do {
		n = store_changes_poll(s->store, &s->change_cursor, ch, ARRAY_SIZE(ch));
		for (int i = 0; i < n; i++)
			change_apply(s, &ch[i]);
	} while (n == (int)ARRAY_SIZE(ch));
}

static void tick_cb(struct loop_timer *t)
{
	struct control_server *s = container_of(t, struct control_server, tick_t);

	changes_drain(s);
	if (mapper_expire(s->m, time_wall_s()) > 0)
		schedule_flush(s);
	loop_timer_arm(s->loop, t, loop_now_ns(s->loop) + TICK_NS);
}

/* ---- setup ---- */

static void default_user_done(void *ctx, int err, uint64_t id)
{
	struct control_server *s = ctx;
	(void)s;
	(void)err;
	(void)id;
	/* The user arrives through user_add: below, or by the change feed if another made it. */
}

static int tail_add(struct control_server *s, const struct control_tailnet *t)
{
	struct stail *x = calloc(1, sizeof(*x));
	struct stail **arr;

	if (!x)
		return -ENOMEM;
	x->t = *t;
	x->pool = addr_pool_new();
	arr = realloc(s->tails, (s->n_tails + 1) * sizeof(*arr));
	if (!x->pool || !arr) {
		addr_pool_free(x->pool);
		free(x);
		if (arr)
			s->tails = arr;
		return -ENOMEM;
	}
	s->tails = arr;
	s->tails[s->n_tails++] = x;
	kput(s, key_make('T', t->id, NULL, 0), (uintptr_t)x);
	mapper_tailnet_upsert(s->m, t);
	return 0;
}

/* Each tailnet has a user "default" for nodes registered without one. */
static void default_users_ensure(struct control_server *s, bool sync)
{
	for (size_t i = 0; i < s->n_tails; i++) {
		struct stail *t = s->tails[i];
		struct control_user u = { .tailnet_id = t->t.id };

		if (t->default_user)
			continue;
		snprintf(u.name, sizeof(u.name), DEFAULT_USER);
		u.created = time_wall_s();
		if (sync) {
			if (store_user_create(s->store, &u) == 0 ||
			    store_user_get_by_name(s->store, t->t.id, DEFAULT_USER, &u) == 0)
				user_add(s, &u);
		} else {
			struct store_op op = { .kind = STORE_OP_USER_CREATE, .user = u };

			store_submit(s->store, &op, default_user_done, s);
		}
	}
}

static int key_load(struct control_server *s, const char *dir)
{
	char path[4096], text[KEY_BASE64_LEN + 2];
	uint8_t pub[CTRLSTREAM_KEY_LEN];
	ssize_t n;
	int fd, r;

	snprintf(path, sizeof(path), "%s/%s", dir, CONTROL_SERVER_KEY_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, text, sizeof(text) - 1);
		close(fd);
		if (n < KEY_BASE64_LEN)
			goto bad;
		text[KEY_BASE64_LEN] = '\0';
		if (key_from_base64(s->priv, text) < 0)
			goto bad;
	} else if (errno == ENOENT) {
		r = x25519_private_generate(s->priv);
		if (r < 0)
			return r;
		key_to_base64(text, s->priv);
		text[KEY_BASE64_LEN] = '\n';
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0) {
			r = -errno;
			log_err("control: cannot create %s: %s", path, strerror(errno));
			return r;
		}
		n = write(fd, text, KEY_BASE64_LEN + 1);
		r = fsync(fd);
		close(fd);
		if (n != KEY_BASE64_LEN + 1 || r < 0) {
			log_err("control: cannot write %s", path);
			return -EIO;
		}
		log_info("control: created server key %s", path);
	} else {
		r = -errno;
		log_err("control: cannot open %s: %s", path, strerror(errno));
		return r;
	}
	crypto_wipe(text, sizeof(text));
	x25519_public_from_private(pub, s->priv);
	key_to_base64(s->pub_b64, pub);
	return 0;
bad:
	crypto_wipe(text, sizeof(text));
	log_err("control: %s is not a base64 X25519 key", path);
	return -EINVAL;
}

static void stop_cb(struct loop_async *a)
{
	struct control_server *s = container_of(a, struct control_server, stop_async);

	loop_stop(s->loop);
}

static void nofile_raise(void)
{
	struct rlimit rl;

	/* 10,000+ streams need more than the usual 1024 descriptors. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int state_load(struct control_server *s)
{
	struct admin_op_ctx actx = { .store = s->store, .actor = "server", .now = time_wall_s() };
	struct store_snapshot snap;
	struct control_tailnet def;
	int64_t now = time_wall_s();
	size_t i;
	int r;

	r = admin_op_tailnet_resolve(&actx, NULL, &def);
	if (r < 0)
		return r;
	s->default_tid = def.id;
	r = store_load(s->store, &snap);
	if (r < 0)
		return r;
	s->change_cursor = snap.change_seq;
	for (i = 0; i < snap.n_tailnets; i++)
		tail_add(s, &snap.tailnets[i]);
	for (i = 0; i < snap.n_users; i++)
		user_add(s, &snap.users[i]);
	default_users_ensure(s, true);
	for (i = 0; i < snap.n_authkeys; i++)
		authkey_add(s, &snap.authkeys[i]);
	for (i = 0; i < snap.n_nodes; i++) {
		struct control_node *n = &snap.nodes[i];
		struct stail *t = tail_get(s, n->tailnet_id);

		n->online = false;
		if (t)
			addr_pool_mark(t->pool, n->ipv4);
		name_index(s, n, n->id);
		kput(s, key_make('m', n->tailnet_id, n->machine_key, NETMAP_KEY_LEN), n->id);
		kput(s, key_make('M', 0, n->machine_key, NETMAP_KEY_LEN), n->id);
		if (mapper_node_upsert(s->m, n, now) < 0)
			log_warn("control: node %" PRIu64 " not loaded", n->id);
		/* Nodes get the full timeout to come back after a restart of control. */
		if (n->ephemeral)
			eph_arm(s, n->id);
	}
	log_info("control: loaded %zu tailnets, %zu users, %zu nodes, %zu auth keys",
		 snap.n_tailnets, snap.n_users, snap.n_nodes, snap.n_authkeys);
	store_snapshot_free(&snap);
	return 0;
}

int control_server_new(const struct control_serve_opts *opts, struct control_server **ret)
{
	struct httpd_opts hopts = {
		.name = "control", .tls_cert = opts->tls_cert, .tls_key = opts->tls_key
	};
	struct control_server *s;
	char path[4096];
	int r;

	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->flush_t.cb = flush_cb;
	s->tick_t.cb = tick_cb;
	s->reap_t.cb = reap;
	s->full_t.cb = full_pump;
	s->delta_backlog_max = DELTA_BACKLOG_MAX;
	r = -ENOMEM;
	s->loop = loop_new();
	s->m = mapper_new();
	s->kv = kv_new();
	if (!s->loop || !s->m || !s->kv)
		goto out;
	if (mkdir(opts->state_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_err("control: cannot create %s: %s", opts->state_dir, strerror(errno));
		goto out;
	}
	r = key_load(s, opts->state_dir);
	if (r < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/%s", opts->state_dir, STORE_DB_NAME);
	r = store_open(path, &s->store);
	if (r < 0) {
		log_err("control: cannot open %s: %s", path, strerror(-r));
		goto out;
	}
	/* Before anything may submit a write: completions come back through the loop. */
	store_loop_attach(s->store, s->loop);
	r = state_load(s);
	if (r < 0) {
		log_err("control: cannot load the store: %s", strerror(-r));
		goto out;
	}
	r = httpd_new(s->loop, &hopts, &s->httpd);
	if (r < 0)
		goto out;
	if (httpd_route_add(s->httpd, "GET", "/key", get_key, s) < 0 ||
	    httpd_route_add(s->httpd, "GET", "/metrics", get_metrics, s) < 0 ||
	    httpd_route_add(s->httpd, "GET", "/register/", get_register, s) < 0 ||
	    httpd_route_add(s->httpd, "POST", "/control", post_control, s) < 0) {
		r = -ENOMEM;
		goto out;
	}
	nofile_raise();
	r = httpd_listen(s->httpd, opts->listen ? opts->listen : CONTROL_LISTEN_DEFAULT);
	if (r < 0)
		goto out;
	s->stop_async.cb = stop_cb;
	loop_async_add(s->loop, &s->stop_async);
	loop_timer_arm(s->loop, &s->tick_t, loop_now_ns(s->loop) + TICK_NS);
	log_info("control: listening on %s%s, server key %s", httpd_listen_name(s->httpd),
		 httpd_tls(s->httpd) ? " (TLS)" : "", s->pub_b64);
	*ret = s;
	s = NULL;
	r = 0;
out:
	control_server_free(s);
	return r;
}

uint16_t control_server_port(const struct control_server *s)
{
	return httpd_port(s->httpd);
}

int control_server_run(struct control_server *s)
{
	return loop_run(s->loop);
}

void control_server_stop(struct control_server *s)
{
	loop_async_send(&s->stop_async);
}

static void free_ptr(void *ctx, const uint8_t *key, size_t len, uint64_t val)
{
	struct control_server *s = ctx;
	(void)len;

	if (key[0] == 'A' || key[0] == 'u')
		free((void *)(uintptr_t)val);
	if (key[0] == 'E') {
		struct eph *e = (void *)(uintptr_t)val;

		loop_timer_disarm(s->loop, &e->t);
		free(e);
	}
}

void control_server_free(struct control_server *s)
{
	if (!s)
		return;
	while (s->conns)
		conn_close(s->conns, -1, NULL);
	reap(&s->reap_t);
	if (s->store) {
		/* Completions of writes still in flight must not run into freed state;
		 * a completion may submit the coalesced next write of its node. */
		do
			store_flush(s->store);
		while (store_completions_run(s->store) > 0);
		store_loop_detach(s->store);
	}
	if (s->loop) {
		loop_timer_disarm(s->loop, &s->full_t);
		loop_async_del(&s->stop_async);
	}
	store_free(s->store);
	/* After the streams: they hold slots of its limits. */
	httpd_free(s->httpd);
	if (s->kv) {
		kv_foreach(s->kv, free_ptr, s);
		kv_free(s->kv);
	}
	for (size_t i = 0; i < s->n_tails; i++) {
		addr_pool_free(s->tails[i]->pool);
		free(s->tails[i]);
	}
	free(s->tails);
	mapper_free(s->m);
	loop_free(s->loop);
	crypto_wipe(s->priv, sizeof(s->priv));
	free(s);
}

static void on_signal(struct loop *loop, int signo)
{
	log_info("control: signal %d: stopping", signo);
	loop_stop(loop);
}

int control_serve(const struct control_serve_opts *opts)
{
	struct control_server *s;
	sigset_t set;
	int r;

	/* Before the store's writer thread exists, so that it inherits the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	r = control_server_new(opts, &s);
	if (r < 0)
		return r;
	r = loop_signals_catch(s->loop, on_signal);
	if (r == 0)
		r = control_server_run(s);
	control_server_free(s);
	return r;
}
