// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>

#include "base/log.h"
#include "base/time.h"
#include "base/util.h"
#include "control/metrics.h"
#include "crypto/crypto.h"
#include "control/session.h"
#include "proto/ctrlstream.h"

#define HANDSHAKE_TIMEOUT_NS HTTPD_HANDSHAKE_TIMEOUT_NS
#define KEEPALIVE_NS (30 * NSEC_PER_SEC)
#define SILENCE_NS (90 * NSEC_PER_SEC)
#define STALL_NS (30 * NSEC_PER_SEC) /* output pending without progress */
#define ENGAGE_NS (10 * NSEC_PER_SEC) /* handshake to the first register or map_request */

static void reap(struct loop_timer *t);
static void stream_input(struct session *ss, const uint8_t *data, size_t len);

void session_env_init(struct session_env *env)
{
	env->live = env->dead = NULL;
	env->n_live = 0;
	memset(&env->reap_t, 0, sizeof(env->reap_t));
	env->reap_t.cb = reap;
}

size_t session_pending(const struct session *ss)
{
	return ss->out_len - ss->out_off + (ss->cs ? ctrlstream_output_pending(ss->cs) : 0);
}

static void events_set(struct session *ss, uint32_t ev)
{
	if (ev == ss->events || ss->dead)
		return;
	if (loop_fd_mod(ss->env->loop, &ss->h, ev) == 0)
		ss->events = ev;
}

void session_flush(struct session *ss)
{
	struct session_env *env = ss->env;
	size_t pending;
	bool progress = false;
	ssize_t w;

	if (ss->dead)
		return;
	ss->io.wants_write = false;
	while (ss->out_off < ss->out_len) {
		w = httpd_io_write(&ss->io, ss->out + ss->out_off, ss->out_len - ss->out_off);
		if (w == -EAGAIN)
			break;
		if (w < 0) {
			session_close(ss, METRICS_DROP_IO, "write failed");
			return;
		}
		ss->out_off += (size_t)w;
		progress = true;
	}
	if (ss->out_off == ss->out_len && ss->out) {
		free(ss->out);
		ss->out = NULL;
		ss->out_len = ss->out_off = 0;
	}
	while (!ss->out) {
		const uint8_t *d;
		size_t len;

		if (ctrlstream_output(ss->cs, &d, &len) < 0) {
			session_close(ss, METRICS_DROP_STREAM_BAD, "stream error");
			return;
		}
		if (!len)
			break;
		w = httpd_io_write(&ss->io, d, len);
		if (w == -EAGAIN)
			break;
		if (w < 0) {
			session_close(ss, METRICS_DROP_IO, "write failed");
			return;
		}
		ctrlstream_output_consume(ss->cs, (size_t)w);
		progress = true;
	}
	pending = session_pending(ss);
	if (pending > env->ctr->out_max)
		env->ctr->out_max = pending;
	/* A backstop: the map streams' resync keeps well below it. */
	if (pending > SESSION_OUTPUT_MAX) {
		session_close(ss, METRICS_DROP_SLOW_READER, "reader too slow");
		return;
	}
	if (!pending) {
		ss->stall_ns = 0;
		env->ops->on_drained(ss);
		if (ss->dead)
			return;
	} else if (progress || !ss->stall_ns) {
		ss->stall_ns = loop_now_ns(env->loop);
	}
	if (!pending && ss->close_after_write) {
		session_close(ss, -1, NULL);
		return;
	}
	events_set(ss, EPOLLIN | (pending || ss->io.wants_write ? EPOLLOUT : 0));
}

int session_queue_json(struct session *ss, const char *json, size_t len)
{
	int r;

	if (ss->dead || !ss->cs)
		return -EPIPE;
	r = ctrlstream_send(ss->cs, json, len);
	if (r < 0)
		return r;
	ss->last_tx_ns = loop_now_ns(ss->env->loop);
	return 0;
}

int session_send(struct session *ss, const struct ctrl_msg *m)
{
	char *json = NULL;
	size_t len;
	int r;

	if (ss->dead || !ss->cs)
		return -EPIPE;
	r = ctrl_msg_encode(m, &json, &len);
	if (r == 0)
		r = session_queue_json(ss, json, len);
	free(json);
	if (r < 0) {
		log_ratelimited(LOG_LEVEL_WARN, "control: %s: cannot send %s: %s", ss->peer,
				ctrl_msg_type_name(m->type), strerror(-r));
		return r;
	}
	session_flush(ss);
	return 0;
}

static void send_text(struct session *ss, const char *json)
{
	if (session_queue_json(ss, json, strlen(json)) == 0)
		session_flush(ss);
}

void session_close_after_write(struct session *ss)
{
	if (ss->dead)
		return;
	ss->close_after_write = true;
	session_flush(ss);
}

void session_fail(struct session *ss, int drop, const char *why)
{
	struct ctrl_msg m = { .type = CTRL_MSG_ERROR };

	if (ss->dead)
		return;
	if (ss->cs && ctrlstream_established(ss->cs)) {
		snprintf(m.error, sizeof(m.error), "%s", why);
		session_send(ss, &m);
	}
	session_close(ss, drop, why);
}

void session_close(struct session *ss, int drop, const char *why)
{
	struct session_env *env = ss->env;

	if (ss->dead)
		return;
	ss->dead = true;
	if (drop >= 0) {
		env->ctr->drops[drop]++;
		log_ratelimited(LOG_LEVEL_INFO, "control: %s: closed: %s", ss->peer, why);
	}
	loop_fd_del(env->loop, &ss->h);
	loop_timer_disarm(env->loop, &ss->t);
	loop_timer_disarm(env->loop, &ss->more_t);
	httpd_io_close(&ss->io);
	httpd_slot_release(&ss->slot);
	env->ops->on_close(ss);
	ctrlstream_free(ss->cs);
	ss->cs = NULL;
	free(ss->out);
	ss->out = NULL;
	/* Live list -> dead list; the reaper frees it. */
	if (ss->prev)
		ss->prev->next = ss->next;
	else
		env->live = ss->next;
	if (ss->next)
		ss->next->prev = ss->prev;
	env->n_live--;
	ss->prev = NULL;
	ss->next = env->dead;
	env->dead = ss;
	loop_timer_arm(env->loop, &env->reap_t, loop_now_ns(env->loop));
}

static void reap(struct loop_timer *t)
{
	struct session_env *env = container_of(t, struct session_env, reap_t);
	struct session *ss, *n;

	for (ss = env->dead; ss; ss = n) {
		n = ss->next;
		free(ss);
	}
	env->dead = NULL;
}

void session_env_close_all(struct session_env *env)
{
	while (env->live)
		session_close(env->live, -1, NULL);
	loop_timer_disarm(env->loop, &env->reap_t);
	reap(&env->reap_t);
}

/* ---- input ---- */

/*
 * The node holds the private half of the node key it registers, and made the
 * proof for this session (ctrlstream_node_key_check): without it, anyone who
 * saw a node key (every peer does) could claim it.
 */
static bool node_key_proven(struct session *ss, const struct ctrl_register *m)
{
	if (!m->has_node_key_proof) {
		session_fail(ss, METRICS_DROP_NODE_KEY_PROOF,
			     "register without node_key_proof (update trellisd)");
		return false;
	}
	if (ctrlstream_node_key_check(ss->cs, ss->env->server_priv, m->node_key,
				      m->node_key_proof) < 0) {
		session_fail(ss, METRICS_DROP_NODE_KEY_PROOF, "node key not proven");
		return false;
	}
	return true;
}

static void handle_msg(struct session *ss, const char *json, size_t len)
{
	const struct session_ops *ops = ss->env->ops;
	struct ctrl_msg m;
	int r;

	if (len > SESSION_MSG_MAX)
		return session_fail(ss, METRICS_DROP_MSG_TOO_BIG, "message too large");
	r = ctrl_msg_decode(json, len, &m);
	/* It may hold an auth key: the stream's buffer keeps no copy (it is ours until the next feed). */
	crypto_wipe((char *)json, len);
	if (r < 0)
		return session_fail(ss, METRICS_DROP_MSG_BAD, "malformed message");
	switch (m.type) {
	case CTRL_MSG_REGISTER:
		ss->engaged = true;
		if (node_key_proven(ss, &m.reg))
			ops->on_register(ss, &m.reg);
		crypto_wipe(m.reg.auth_key, sizeof(m.reg.auth_key));
		break;
	case CTRL_MSG_MAP_REQUEST:
		ss->engaged = true;
		ops->on_map_request(ss, &m.map_req);
		break;
	case CTRL_MSG_ENDPOINTS:
		ops->on_endpoints(ss, &m.endpoints);
		break;
	case CTRL_MSG_LOGOUT:
		ops->on_logout(ss);
		break;
	case CTRL_MSG_FLOWS:
		ops->on_flows(ss, &m.flows);
		break;
	case CTRL_MSG_KEEPALIVE:
		break;
	default:
		session_fail(ss, METRICS_DROP_PROTOCOL, "unexpected message type");
		break;
	}
	ctrl_msg_clear(&m);
}

static void stream_input(struct session *ss, const uint8_t *data, size_t len)
{
	struct session_env *env = ss->env;
	size_t off = 0;
	unsigned stalls = 0;

	while (!ss->dead && (off < len || stalls == 0)) {
		const char *msg;
		size_t mlen;
		ssize_t n = 0;
		int r = 0;

		if (off < len) {
			n = ctrlstream_feed(ss->cs, data + off, len - off);
			if (n == -EMSGSIZE && ss->authed) {
				session_close(ss, METRICS_DROP_MSG_TOO_BIG,
					      "frame or message too large");
				return;
			}
			if (n < 0) {
				session_close(ss, METRICS_DROP_STREAM_BAD,
					      ctrlstream_established(ss->cs) ? "bad frame"
									      : "bad handshake");
				return;
			}
			off += (size_t)n;
		}
		/*
		 * The connection keeps counting against its source: a machine key is
		 * free to make. The owner releases it once the session is a
		 * registered node's map stream.
		 */
		if (!ss->authed && ctrlstream_established(ss->cs)) {
			ss->authed = true;
			ss->authed_ns = loop_now_ns(env->loop);
			ctrlstream_remote_key(ss->cs, ss->machine_key);
			loop_timer_arm(env->loop, &ss->t, ss->authed_ns + ENGAGE_NS);
		}
		while (!ss->dead && (r = ctrlstream_recv(ss->cs, &msg, &mlen)) == 1)
			handle_msg(ss, msg, mlen);
		if (ss->dead)
			return;
		if (r < 0) {
			session_close(ss, r == -EMSGSIZE ? METRICS_DROP_MSG_TOO_BIG
							  : METRICS_DROP_STREAM_BAD,
				      r == -EMSGSIZE ? "message too large" : "stream error");
			return;
		}
		if (off >= len)
			break;
		/* feed consumed nothing and nothing came out: cannot progress. */
		if (n == 0 && ++stalls > 2) {
			session_close(ss, METRICS_DROP_STREAM_BAD, "stream stalled");
			return;
		}
		if (n > 0)
			stalls = 0;
	}
	session_flush(ss);
}

static bool input(void *ctx, const uint8_t *data, size_t len)
{
	struct session *ss = ctx;

	ss->last_rx_ns = loop_now_ns(ss->env->loop);
	stream_input(ss, data, len);
	return !ss->dead;
}

static void readable(struct session *ss)
{
	int r = httpd_io_read_event(&ss->io, input, ss);

	if (ss->dead)
		return;
	if (r == -EINPROGRESS)
		/* TLS input left by the per-event cap: after the others had their turn. */
		loop_timer_arm(ss->env->loop, &ss->more_t, loop_now_ns(ss->env->loop));
	else if (r == -EPIPE)
		session_close(ss, -1, NULL);
	else if (r < 0)
		session_close(ss, METRICS_DROP_IO, "read failed");
}

static void on_event(struct loop_fd *h, uint32_t events)
{
	struct session *ss = container_of(h, struct session, h);

	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP) || ss->io.ssl)
		readable(ss);
	if (!ss->dead)
		session_flush(ss);
}

static void on_more(struct loop_timer *t)
{
	struct session *ss = container_of(t, struct session, more_t);

	on_event(&ss->h, 0);
}

/*
 * Whether the node's bytes wait for us: in the socket, or decrypted inside TLS. A deadline
 * that passes while they do is ours to miss, not the node's: a loop that fell behind (a
 * reconnect storm building thousands of netmaps) reads them late, and last_rx_ns lags.
 */
static bool input_waiting(struct session *ss)
{
	int n = 0;

	if (ss->io.ssl && httpd_io_pending(&ss->io))
		return true;
	return ioctl(ss->io.fd, FIONREAD, &n) == 0 && n > 0;
}

/* We owe the node its full netmap: it waits for us (a storm of them queues for minutes). */
static bool owed(const struct session *ss)
{
	return ss->map.want || ss->map.inflight;
}

static uint64_t silent_since(const struct session *ss)
{
	return MAX(ss->last_rx_ns, ss->owed_ns);
}

static void on_timer(struct loop_timer *t)
{
	struct session *ss = container_of(t, struct session, t);
	struct session_env *env = ss->env;
	uint64_t now = loop_now_ns(env->loop);

	/* Read first: the deadlines below count only the node's silence. */
	if (input_waiting(ss)) {
		env->ctr->late_reads++;
		on_event(&ss->h, EPOLLIN);
		if (ss->dead)
			return;
		now = loop_now_ns(env->loop);
	}
	if (!ss->authed) {
		if (now >= ss->born_ns + HANDSHAKE_TIMEOUT_NS) {
			session_close(ss, METRICS_DROP_HANDSHAKE_TIMEOUT,
				      "no handshake within 10 s");
			return;
		}
		loop_timer_arm(env->loop, t, ss->born_ns + HANDSHAKE_TIMEOUT_NS);
		return;
	}
	if (!ss->engaged && now >= ss->authed_ns + ENGAGE_NS) {
		session_close(ss, METRICS_DROP_IDLE, "no register or map_request within 10 s");
		return;
	}
	if (!owed(ss) && now >= silent_since(ss) + SILENCE_NS) {
		session_fail(ss, METRICS_DROP_SILENT, "silent for 90 s");
		return;
	}
	if (ss->stall_ns && now >= ss->stall_ns + STALL_NS) {
		session_close(ss, METRICS_DROP_SLOW_READER, "reader stalled");
		return;
	}
	if (now >= ss->last_tx_ns + KEEPALIVE_NS) {
		env->ctr->keepalives++;
		send_text(ss, "{\"type\":\"keepalive\"}");
		if (ss->dead)
			return;
	}
	loop_timer_arm(env->loop, t,
		       MIN(MIN(MIN(owed(ss) ? TIME_NEVER : silent_since(ss) + SILENCE_NS,
				   ss->last_tx_ns + KEEPALIVE_NS),
			       ss->stall_ns ? ss->stall_ns + STALL_NS : TIME_NEVER),
			   ss->engaged ? TIME_NEVER : ss->authed_ns + ENGAGE_NS));
}

void session_take(struct session_env *env, struct httpd_upgrade *up)
{
	struct session *ss = calloc(1, sizeof(*ss));

	if (ss)
		ss->cs = ctrlstream_server_new_pair(env->server_priv, env->server_pub);
	if (!ss || !ss->cs) {
		free(ss);
		env->ctr->drops[METRICS_DROP_IO]++;
		log_ratelimited(LOG_LEVEL_INFO, "control: %s: closed: out of memory", up->peer);
		httpd_upgrade_release(up);
		return;
	}
	/* Nodes send small messages: refuse a large one at its length prefix. */
	ctrlstream_set_max_message(ss->cs, SESSION_MSG_MAX);
	ss->env = env;
	ss->io = up->io;
	ss->slot = up->slot;
	memcpy(ss->peer, up->peer, sizeof(ss->peer));
	memcpy(ss->host, up->host, sizeof(ss->host));
	ss->out = up->out;
	ss->out_len = up->out_len;
	ss->h.fd = ss->io.fd;
	ss->h.cb = on_event;
	ss->t.cb = on_timer;
	ss->more_t.cb = on_more;
	ss->born_ns = ss->last_rx_ns = ss->last_tx_ns = up->born_ns;
	ss->next = env->live;
	if (env->live)
		env->live->prev = ss;
	env->live = ss;
	env->n_live++;
	ss->events = EPOLLIN;
	if (loop_fd_add(env->loop, &ss->h, EPOLLIN) < 0) {
		free(up->rest);
		session_close(ss, METRICS_DROP_IO, "cannot watch the socket");
		return;
	}
	loop_timer_arm(env->loop, &ss->t, ss->born_ns + HANDSHAKE_TIMEOUT_NS);
	/* The 101 goes out first; bytes after the head already belong to the stream. */
	session_flush(ss);
	if (!ss->dead && up->rest_len)
		stream_input(ss, up->rest, up->rest_len);
	free(up->rest);
	/* TLS may hold decrypted bytes already: read before waiting for the socket. */
	if (!ss->dead)
		on_event(&ss->h, EPOLLIN);
}
