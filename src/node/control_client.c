/* SPDX-License-Identifier: MIT */
/*
 * The control client (see control_client.h for why it has a thread).
 *
 * One session, in order:
 *   GET /key          the server's static key; pinned in CONTROL_SERVER_KEY_FILE
 *                     on first use, and a different key later is refused for
 *                     good (someone else answers at that URL, or the server lost
 *                     its state: either way a person must look).
 *   POST /control     101, then the framed Noise channel (ctrlstream).
 *   register          -> register_response: ok (on), needs_auth (tell the user,
 *                     wait for the second response), error (give up: FAILED).
 *   map_request       stream=true with our endpoints -> netmap, then deltas.
 *   steady state      keepalive after 30 s without sending, reconnect after 90 s
 *                     of silence; endpoints pushed when the addresses change
 *                     (checked every 5 s: cheaper to reason about than a netlink
 *                     monitor, and fast enough for addresses that rarely move).
 * Any failure ends the session; the thread retries after a backoff that doubles
 * from 1 s to 30 s, with up to 50 % jitter so that nodes cut off together do not
 * return together. A session that reached the netmap resets the backoff.
 * Three endings are not retried, since retrying cannot help and would only load the
 * server: a refusal (FAILED), our own record showing our node key expired (EXPIRED: a
 * person must re-authenticate), and the server saying an admin deleted us (REMOVED: a
 * new registration would bring back a node the admin just removed).
 *
 * Connections, TLS and HTTP are src/net/dial's, endpoint candidates
 * src/net/endpoints'; this file is the protocol: the session, registration,
 * the map stream, key pinning and rotation scheduling.
 *
 * Stopping: control_client_free sets `stop` and writes the eventfd that every
 * wait in dial watches (struct dial_cancel), so whatever the thread is doing
 * ends at once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <net/if.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "net/dial.h"
#include "net/endpoints.h"
#include "node/certfetch.h"
#include "node/control_client.h"
#include "node/machinecert.h"
#include "node/state.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/flowbatch.h"
#include "proto/http.h"
#include "proto/mapz.h"

#define KEY_BODY_MAX 4096
#define READ_CHUNK 65536
#define ERR_MAX 320

/* Addresses inside the tailnet route into the tunnel: never endpoints. */
static const struct endpoints_prefix tailnet_prefixes[] = {
    {.family = AF_INET, .addr = {100, 64}, .bits = 10},
    {.family = AF_INET6, .addr = {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11}, .bits = 48},
};

struct control_client {
	/* Immutable after start. */
	char url[STATE_URL_MAX];
	struct dial_url u;
	struct dial_cancel cancel; /* its eventfd wakes the thread: `stop` below, or a command */
	char hostname[NETMAP_NAME_MAX];
	char os[NETMAP_OS_MAX];
	char state_dir[512];
	char ifname[IF_NAMESIZE];
	bool probe;
	uint64_t backoff_min; /* the first retry's, and again after a netmap */
	uint8_t machine_key[NETMAP_KEY_LEN];
	bool has_audit_key;
	uint8_t audit_key[NETMAP_KEY_LEN]; /* public */
	uint16_t (*port_fn)(void *ctx);
	void *port_ctx;
	unsigned (*extra_fn)(void *ctx, struct endpoint *ret, unsigned cap);
	struct control_client_ops ops;

	/* The client thread's own. */
	char auth_key[CTRL_AUTHKEY_MAX]; /* forgotten once used: a one-off key works once */
	SSL_CTX *ssl_ctx;
	uint8_t *rbuf;
	char err[ERR_MAX];
	bool fatal;
	bool expired; /* our record says the node key expired: stop, re-authenticate */
	bool removed; /* the server deleted our node: stop */
	bool registered; /* in this session */
	/* The node key: replaced by a confirmed rotation. */
	uint8_t node_key[NETMAP_KEY_LEN];
	uint8_t node_pub[NETMAP_KEY_LEN];
	/* Rotation: the key offered to the server while `rotating`. */
	bool rotating;
	uint8_t next_key[NETMAP_KEY_LEN];
	uint8_t next_pub[NETMAP_KEY_LEN];
	int64_t seen_expiry; /* the self key_expiry the schedule was made from */
	int64_t rotate_at;   /* Unix seconds; 0 = never */
	unsigned rotate_fails; /* refusals in a row: the retry backs off */
	bool have_netmap;
	/*
	 * The netmap the daemon holds, as the server stamped it: offered on reconnect, so the
	 * server may answer with what changed instead of a full map. Forgotten when the daemon
	 * could not apply one (it asks for a full map).
	 */
	bool has_have;
	struct ctrl_have have;
	struct control_client_stats stats; /* under lock */
	unsigned n_endpoints;
	struct endpoint endpoints[NETMAP_MAX_ENDPOINTS];
	/* Flow logs: one batch in flight per session; a "busy" answer waits until flows_at. */
	uint8_t *flows_buf;
	bool flows_inflight;
	uint64_t flows_at;

	pthread_t thread;
	bool thread_started;
	atomic_bool stop;

	/* Shared with other threads, under lock. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool established; /* registered on a live session: logout possible */
	bool logout_req;
	bool logout_done;
	uint64_t netmaps; /* full netmaps delivered */
	bool resync_req;
	int resync_err;
	uint32_t home_region; /* the relay region to report (control_client_home_region_set) */
	bool home_req;	      /* it changed since it was last sent */
	bool endpoints_req;   /* control_client_endpoints_changed */
	bool flows_req;	      /* control_client_flows_kick */
	bool has_disco_key;
	uint8_t disco_key[NETMAP_KEY_LEN];
	/* control_client_extra_endpoints_set, under lock. */
	unsigned n_extra;
	struct endpoint extra[NETMAP_MAX_ENDPOINTS];
	bool mapping_varies;
};

const char *control_client_state_name(enum control_client_state s)
{
	switch (s) {
	case CONTROL_CLIENT_CONNECTING:
		return "connecting";
	case CONTROL_CLIENT_NEEDS_LOGIN:
		return "needs_login";
	case CONTROL_CLIENT_RUNNING:
		return "running";
	case CONTROL_CLIENT_FAILED:
		return "failed";
	case CONTROL_CLIENT_LOGGED_OUT:
		return "logged_out";
	case CONTROL_CLIENT_EXPIRED:
		return "expired";
	case CONTROL_CLIENT_REMOVED:
		return "removed";
	}
	return "?";
}

static void set_err(struct control_client *cc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_err(struct control_client *cc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cc->err, sizeof(cc->err), fmt, ap);
	va_end(ap);
}

static void report(struct control_client *cc, enum control_client_state s, const char *url,
		   const char *error)
{
	if (cc->ops.state_changed)
		cc->ops.state_changed(cc->ops.ctx, s, url, error);
}

/* --- connections (src/net/dial) --- */

static int conn_open(struct control_client *cc, struct dial_conn *c)
{
	struct dial_opts o = {.host = cc->u.host,
			      .port = cc->u.port,
			      .tls = cc->u.tls,
			      .name = cc->url,
			      .deadline_ns = time_now_ns() + CONTROL_IO_TIMEOUT_NS,
			      .cancel = cc->cancel};

	/* Made on first use, so SSL_CERT_FILE is read as the daemon found it. */
	if (cc->u.tls && !cc->ssl_ctx) {
		cc->ssl_ctx = dial_tls_ctx_new_per_handshake();
		if (!cc->ssl_ctx)
			return -ENOMEM;
	}
	o.ssl_ctx = cc->ssl_ctx;
	return dial_open(c, &o, cc->err, sizeof(cc->err));
}

static int conn_write(struct control_client *cc, struct dial_conn *c, const void *data,
		      size_t len)
{
	return dial_write(c, data, len, time_now_ns() + CONTROL_IO_TIMEOUT_NS, cc->err,
			  sizeof(cc->err));
}

/* One request, and the response head; err says what a login server should have said. */
static ssize_t conn_request(struct control_client *cc, struct dial_conn *c, const char *req,
			    size_t req_len, bool upgrade, char *buf, size_t cap,
			    struct http_response *resp)
{
	uint64_t deadline = time_now_ns() + CONTROL_IO_TIMEOUT_NS;
	ssize_t n = upgrade ? dial_http_upgrade(c, req, req_len, buf, cap, resp, deadline, cc->err,
						 sizeof(cc->err))
			    : dial_http_request(c, req, req_len, buf, cap, resp, deadline, cc->err,
						 sizeof(cc->err));

	if (n == -EBADMSG)
		set_err(cc, "%s does not speak HTTP as expected (is it a trellis login server?)",
			cc->url);
	return n;
}

/* --- server key (trust on first use) --- */

static int server_key_fetch(struct control_client *cc, uint8_t ret_key[NETMAP_KEY_LEN])
{
	struct dial_conn c = {.fd = -1};
	struct http_response resp;
	char *buf = NULL, req[1024];
	json_t *root = NULL;
	const char *k;
	size_t cap = HTTP_HEAD_MAX + KEY_BODY_MAX;
	ssize_t n;
	int r;

	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	r = conn_open(cc, &c);
	if (r < 0)
		goto out;
	r = http_key_request_build(req, sizeof(req), cc->u.authority);
	if (r < 0)
		goto out;
	n = conn_request(cc, &c, req, (size_t)r, false, buf, cap, &resp);
	if (n < 0) {
		r = (int)n;
		goto out;
	}
	if (resp.status != 200) {
		set_err(cc, "%s/key answered %u: not a trellis login server?", cc->url,
			resp.status);
		r = -EPROTO;
		goto out;
	}
	if (!resp.has_content_length || resp.content_length > KEY_BODY_MAX) {
		set_err(cc, "%s/key: bad response body", cc->url);
		r = -EPROTO;
		goto out;
	}
	n = dial_http_body_read(&c, buf, cap, (size_t)n, &resp,
				time_now_ns() + CONTROL_IO_TIMEOUT_NS, cc->err, sizeof(cc->err));
	if (n < 0) {
		set_err(cc, "%s/key: response cut short", cc->url);
		r = n == -ECANCELED ? -ECANCELED : -EPROTO;
		goto out;
	}
	root = json_loadb(buf + resp.head_len, resp.content_length, 0, NULL);
	k = json_string_value(json_object_get(root, "key"));
	if (!k || key_from_base64(ret_key, k) < 0) {
		set_err(cc, "%s/key: no valid key in the response", cc->url);
		r = -EPROTO;
		goto out;
	}
	r = 0;
out:
	json_decref(root);
	dial_close(&c, 0);
	free(buf);
	return r;
}

/*
 * Trust on first use, per login server URL: the first key seen is written down;
 * later sessions must see the same key. A new URL (`trellis up --login-server`
 * elsewhere) pins anew. 0, or -EPERM (fatal, err set).
 */
static int server_key_check(struct control_client *cc, const uint8_t key[NETMAP_KEY_LEN])
{
	char path[600], b64[KEY_BASE64_LEN + 1];
	json_t *root;
	const char *url, *old;
	uint8_t pinned[NETMAP_KEY_LEN];
	char *text;
	int r;

	snprintf(path, sizeof(path), "%s/%s", cc->state_dir, CONTROL_SERVER_KEY_FILE);
	key_to_base64(b64, key);
	root = json_load_file(path, 0, NULL);
	url = json_string_value(json_object_get(root, "login_server"));
	old = json_string_value(json_object_get(root, "server_key"));
	if (url && old && !strcmp(url, cc->url) && key_from_base64(pinned, old) == 0) {
		char was[KEY_BASE64_LEN + 1];

		snprintf(was, sizeof(was), "%s", old);
		json_decref(root);
		if (!memcmp(pinned, key, NETMAP_KEY_LEN))
			return 0;
		set_err(cc,
			"the server key of %s changed (pinned %s, now %s): refusing to connect; "
			"if the server was reinstalled on purpose, remove %s",
			cc->url, was, b64, path);
		return -EPERM;
	}
	json_decref(root);
	root = json_pack("{s:s, s:s}", "login_server", cc->url, "server_key", b64);
	text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
	json_decref(root);
	if (!text)
		return -ENOMEM;
	r = state_file_write_atomic(path, text, strlen(text), 0600);
	free(text);
	if (r < 0)
		log_warn("cannot write %s: %s", path, strerror(-r));
	else
		log_info("%s: server key %s pinned (first use)", cc->url, b64);
	return 0;
}

/* --- endpoints --- */

/* Appends add[0..n_add) to eps[0..n) but those already there; the new count. */
static unsigned endpoints_add(struct endpoint *eps, unsigned n, const struct endpoint *add,
			      unsigned n_add)
{
	for (unsigned i = 0; i < n_add && n < NETMAP_MAX_ENDPOINTS; i++) {
		unsigned k;

		for (k = 0; k < n && !endpoint_equal(&eps[k], &add[i]); k++)
			;
		if (k == n)
			eps[n++] = add[i];
	}
	return n;
}

/*
 * Port-mapped first, then our interfaces' addresses, then the STUN-reflexive ones, each
 * once: an IPv6 pinhole is also an interface's address, and stays first.
 */
static unsigned endpoints_get(struct control_client *cc, struct endpoint *eps)
{
	struct endpoint local[NETMAP_MAX_ENDPOINTS];
	uint16_t port = cc->port_fn ? cc->port_fn(cc->port_ctx) : 0;
	unsigned n = cc->extra_fn ? cc->extra_fn(cc->port_ctx, eps, NETMAP_MAX_ENDPOINTS) : 0;
	unsigned n_local =
	    endpoints_collect(port, cc->ifname, tailnet_prefixes, ARRAY_SIZE(tailnet_prefixes),
			      local, ARRAY_SIZE(local));

	n = endpoints_add(eps, n, local, n_local);
	pthread_mutex_lock(&cc->lock);
	n = endpoints_add(eps, n, cc->extra, cc->n_extra);
	pthread_mutex_unlock(&cc->lock);
	return n;
}

/* --- the session --- */

struct session {
	struct dial_conn c;
	struct ctrlstream *cs;
	uint64_t last_send_ns, last_recv_ns;
	bool register_sent; /* after the handshake: the node key proof binds to it */
	bool resuming;	    /* map_request offered the held netmap: a delta may come first */
	bool cert_retried;  /* registered again with a certificate the refusal carried */
};

static int flush_out(struct control_client *cc, struct session *s)
{
	const uint8_t *data;
	size_t len;
	int r;

	r = ctrlstream_output(s->cs, &data, &len);
	if (r < 0) {
		set_err(cc, "control channel: %s", strerror(-r));
		return r;
	}
	if (!len)
		return 0;
	r = conn_write(cc, &s->c, data, len);
	if (r < 0)
		return r;
	ctrlstream_output_consume(s->cs, len);
	s->last_send_ns = time_now_ns();
	return 0;
}

static int send_msg(struct control_client *cc, struct session *s, const struct ctrl_msg *m)
{
	char *json = NULL;
	size_t len;
	int r;

	r = ctrl_msg_encode(m, &json, &len);
	if (r < 0) {
		set_err(cc, "cannot encode %s: %s", ctrl_msg_type_name(m->type), strerror(-r));
		return r;
	}
	r = ctrlstream_send(s->cs, json, len);
	free(json);
	if (r < 0) {
		set_err(cc, "control channel: %s", strerror(-r));
		return r;
	}
	return flush_out(cc, s);
}

/* The node key's proof for this session (docs/control-protocol.md, "register"). */
static int node_key_prove(struct control_client *cc, struct session *s, const uint8_t *priv,
			  struct ctrl_register *reg)
{
	uint8_t hash[CTRLSTREAM_HASH_LEN];
	int r = ctrlstream_node_key_prove(s->cs, priv, reg->node_key_proof);

	if (r < 0) {
		set_err(cc, "cannot prove the node key: %s", strerror(-r));
		return r;
	}
	reg->has_node_key_proof = true;
	/* A machine certificate, when installed, proven for this session and node key too. */
	if (ctrlstream_handshake_hash(s->cs, hash) == 0)
		machinecert_attach(cc->state_dir, hash, reg);
	return 0;
}

/* Once the handshake is done: the proof is bound to its hash. */
static int send_register(struct control_client *cc, struct session *s)
{
	struct ctrl_msg m = {.type = CTRL_MSG_REGISTER};
	int r;

	memcpy(m.reg.node_key, cc->node_pub, NETMAP_KEY_LEN);
	snprintf(m.reg.hostname, sizeof(m.reg.hostname), "%s", cc->hostname);
	snprintf(m.reg.os, sizeof(m.reg.os), "%s", cc->os);
	snprintf(m.reg.auth_key, sizeof(m.reg.auth_key), "%s", cc->auth_key);
	m.reg.has_audit_key = cc->has_audit_key;
	memcpy(m.reg.audit_key, cc->audit_key, NETMAP_KEY_LEN);
	r = node_key_prove(cc, s, cc->node_key, &m.reg);
	if (r == 0)
		r = send_msg(cc, s, &m);
	if (r == 0)
		s->register_sent = true;
	crypto_wipe(m.reg.auth_key, sizeof(m.reg.auth_key));
	return r;
}

/* Plans the next rotation from our own record (register response, netmap, delta). */
static void rotate_schedule(struct control_client *cc, const struct netmap_node *self)
{
	int64_t exp, left;

	if (!self || !cc->ops.rotate_begin || !cc->ops.rotate_end)
		return;
	exp = self->key_expiry;
	/* The same expiry again (every netmap carries it) keeps the plan. */
	if (exp == cc->seen_expiry)
		return;
	cc->seen_expiry = exp;
	if (!exp) {
		cc->rotate_at = 0;
		return;
	}
	left = MAX(exp - time_wall_s(), 0);
	cc->rotate_at = exp - MIN(left / 4, (int64_t)CONTROL_ROTATE_WINDOW_MAX_S);
	log_debug("node key expires in %" PRId64 " s: rotating in %" PRId64 " s", left,
		  MAX(cc->rotate_at - time_wall_s(), 0));
}

/* Doubling from 1 s with each refusal in a row, so a server that keeps refusing is not hammered. */
static void rotate_retry_later(struct control_client *cc)
{
	int64_t now = time_wall_s(), left = cc->seen_expiry - now;
	int64_t backoff = (int64_t)1 << MIN(cc->rotate_fails, 6U);

	cc->rotate_fails++;
	cc->rotate_at = now + MIN(MAX(MIN(left / 4, (int64_t)CONTROL_ROTATE_RETRY_MAX_S), backoff),
				  (int64_t)CONTROL_ROTATE_RETRY_MAX_S);
}

/*
 * Our own record (register response, netmap, delta) with a key expiry in the past: the
 * server has expired the key (`nodes expire`, or its lifetime ran out unrotated). Rotating
 * is refused for an expired key, so the session ends and the client stops. -EKEYEXPIRED
 * or 0.
 */
static int self_expired_check(struct control_client *cc, const struct netmap_node *self)
{
	if (!self || !self->key_expiry || self->key_expiry > time_wall_s())
		return 0;
	set_err(cc, "%s", CONTROL_EXPIRED_TEXT);
	cc->expired = true;
	return -EKEYEXPIRED;
}

/* Ends a rotation in flight: on the server's confirmation, or not. */
static void rotate_end(struct control_client *cc, bool ok)
{
	if (!cc->rotating)
		return;
	cc->rotating = false;
	if (ok) {
		memcpy(cc->node_key, cc->next_key, NETMAP_KEY_LEN);
		memcpy(cc->node_pub, cc->next_pub, NETMAP_KEY_LEN);
	}
	crypto_wipe(cc->next_key, sizeof(cc->next_key));
	cc->ops.rotate_end(cc->ops.ctx, ok);
}

/*
 * Re-registers on the live stream with old = our key, new = the next one: the
 * server keeps our record (id, name, addresses) and the map stream goes on.
 */
static int rotate_start(struct control_client *cc, struct session *s)
{
	struct ctrl_msg m = {.type = CTRL_MSG_REGISTER};
	int r;

	r = cc->ops.rotate_begin(cc->ops.ctx, cc->next_key);
	if (r == 0)
		r = x25519_public_from_private(cc->next_pub, cc->next_key);
	if (r < 0) {
		log_warn("cannot make the next node key: %s", strerror(-r));
		crypto_wipe(cc->next_key, sizeof(cc->next_key));
		rotate_retry_later(cc);
		return 0;
	}
	log_info("rotating the node key (expires in %" PRId64 " s)",
		 cc->seen_expiry - time_wall_s());
	cc->rotating = true;
	cc->rotate_at = 0;
	memcpy(m.reg.node_key, cc->next_pub, NETMAP_KEY_LEN);
	m.reg.has_old_node_key = true;
	memcpy(m.reg.old_node_key, cc->node_pub, NETMAP_KEY_LEN);
	snprintf(m.reg.hostname, sizeof(m.reg.hostname), "%s", cc->hostname);
	snprintf(m.reg.os, sizeof(m.reg.os), "%s", cc->os);
	m.reg.has_audit_key = cc->has_audit_key;
	memcpy(m.reg.audit_key, cc->audit_key, NETMAP_KEY_LEN);
	r = node_key_prove(cc, s, cc->next_key, &m.reg);
	if (r < 0)
		return r;
	return send_msg(cc, s, &m);
}

/*
 * A newer certificate of our own in a register response or a delta (certfetch.h): installed,
 * the next registration presents it. True when installed. A refused one is counted and
 * logged, rate-limited: it is the server's input, not ours.
 */
static bool cert_take(struct control_client *cc, const char *b64)
{
	char err[ERR_MAX], serial[MCERT_SERIAL_MAX] = "";
	int r;

	if (!b64 || !b64[0])
		return false;
	r = certfetch_install(cc->state_dir, cc->machine_key, b64, time_wall_s(), err, sizeof(err));
	if (r >= 0 && certfetch_serial(b64, strnlen(b64, CTRL_MCERT_MAX), serial) < 0)
		serial[0] = '\0';
	pthread_mutex_lock(&cc->lock);
	if (r < 0) {
		cc->stats.mcerts_refused++;
	} else {
		cc->stats.mcerts_installed += r > 0;
		memcpy(cc->stats.mcert_sent_serial, serial, sizeof(serial));
	}
	pthread_mutex_unlock(&cc->lock);
	if (r < 0)
		log_ratelimited(LOG_LEVEL_WARN, "%s sent a machine certificate, not installed: %s",
				cc->url, err);
	else if (r > 0)
		log_info("installed the renewed machine certificate %s %s sent", serial, cc->url);
	return r > 0;
}

/* The answer to a rotation: never fatal, the old key goes on until it expires. */
static int rotate_response(struct control_client *cc, const struct ctrl_register_response *rr)
{
	cert_take(cc, rr->machine_cert);
	if (rr->status != CTRL_REGISTER_OK) {
		log_warn("%s refused the node key rotation: %s", cc->url,
			 rr->status == CTRL_REGISTER_ERROR && rr->error[0] ? rr->error
									   : "no reason given");
		rotate_end(cc, false);
		/* Expired at the server before our record said so: no rotation can help. */
		if (rr->status == CTRL_REGISTER_ERROR && strstr(rr->error, "expired")) {
			set_err(cc, "%s", CONTROL_EXPIRED_TEXT);
			cc->expired = true;
			return -EKEYEXPIRED;
		}
		rotate_retry_later(cc);
		return 0;
	}
	log_info("node key rotated");
	cc->rotate_fails = 0;
	rotate_end(cc, true);
	if (cc->ops.registered)
		cc->ops.registered(cc->ops.ctx, rr->has_node ? &rr->node : NULL);
	if (rr->has_node)
		rotate_schedule(cc, &rr->node);
	return 0;
}

/* The oldest flow-log batch not yet acknowledged, if any. */
static int flows_send(struct control_client *cc, struct session *s)
{
	struct ctrl_msg m = {.type = CTRL_MSG_FLOWS};
	size_t len = cc->ops.flows_next(cc->ops.ctx, cc->flows_buf, FLOWBATCH_MAX_LEN);
	int r;

	if (!len)
		return 0;
	m.flows.batch = cc->flows_buf;
	m.flows.len = len;
	r = send_msg(cc, s, &m);
	if (r == 0)
		cc->flows_inflight = true;
	return r;
}

static int send_map_request(struct control_client *cc, struct session *s)
{
	struct ctrl_msg m = {.type = CTRL_MSG_MAP_REQUEST};

	memcpy(m.map_req.node_key, cc->node_pub, NETMAP_KEY_LEN);
	snprintf(m.map_req.hostname, sizeof(m.map_req.hostname), "%s", cc->hostname);
	m.map_req.stream = true;
	m.map_req.has_disco_key = cc->has_disco_key;
	memcpy(m.map_req.disco_key, cc->disco_key, NETMAP_KEY_LEN);
	cc->n_endpoints = endpoints_get(cc, cc->endpoints);
	m.map_req.n_endpoints = cc->n_endpoints;
	memcpy(m.map_req.endpoints, cc->endpoints, cc->n_endpoints * sizeof(struct endpoint));
	pthread_mutex_lock(&cc->lock);
	m.map_req.home_region = cc->home_region;
	m.map_req.mapping_varies = cc->mapping_varies;
	cc->home_req = false;
	pthread_mutex_unlock(&cc->lock);
	m.map_req.has_have = cc->has_have;
	m.map_req.have = cc->have;
	m.map_req.zstd = true;
	m.map_req.reach_patch = true; /* netmap_apply_delta applies it */
	s->resuming = cc->has_have;
	return send_msg(cc, s, &m);
}

static int endpoints_check(struct control_client *cc, struct session *s)
{
	struct endpoint eps[NETMAP_MAX_ENDPOINTS];
	struct ctrl_msg m = {.type = CTRL_MSG_ENDPOINTS};
	unsigned n = endpoints_get(cc, eps), i;
	bool home;

	pthread_mutex_lock(&cc->lock);
	home = cc->home_req;
	cc->home_req = false;
	m.endpoints.home_region = cc->home_region;
	m.endpoints.mapping_varies = cc->mapping_varies;
	pthread_mutex_unlock(&cc->lock);
	if (n == cc->n_endpoints && !home) {
		for (i = 0; i < n; i++)
			if (!endpoint_equal(&eps[i], &cc->endpoints[i]))
				break;
		if (i == n)
			return 0;
	}
	cc->n_endpoints = n;
	memcpy(cc->endpoints, eps, n * sizeof(*eps));
	if (home)
		log_info("reporting home relay region %u and %u endpoints", m.endpoints.home_region,
			 n);
	else
		log_info("local addresses changed: reporting %u endpoints", n);
	m.endpoints.n_endpoints = n;
	memcpy(m.endpoints.endpoints, eps, n * sizeof(*eps));
	m.endpoints.has_disco_key = cc->has_disco_key;
	memcpy(m.endpoints.disco_key, cc->disco_key, NETMAP_KEY_LEN);
	return send_msg(cc, s, &m);
}

/* 0 to go on, 1 when the session is over for good (logged out), -errno to reconnect. */
static int handle_msg(struct control_client *cc, struct session *s, const char *json, size_t len)
{
	struct ctrl_have have;
	struct ctrl_msg m;
	int r;

	r = ctrl_msg_decode(json, len, &m);
	if (r < 0) {
		set_err(cc, "bad message from %s: %s", cc->url, strerror(-r));
		return r;
	}
	switch (m.type) {
	case CTRL_MSG_REGISTER_RESPONSE:
		if (cc->rotating) {
			r = rotate_response(cc, &m.reg_resp);
			break;
		}
		/*
		 * Refused with a newer certificate (ours had ended): once more with it, on this
		 * session (the proof binds to its hash), rather than stop for good.
		 */
		if (cert_take(cc, m.reg_resp.machine_cert) &&
		    m.reg_resp.status == CTRL_REGISTER_ERROR && !s->cert_retried) {
			log_info("%s refused the registration (%s): registering again with the "
				 "renewed certificate",
				 cc->url, m.reg_resp.error);
			s->cert_retried = true;
			r = send_register(cc, s);
			break;
		}
		if (m.reg_resp.status == CTRL_REGISTER_NEEDS_AUTH) {
			log_info("interactive login: %s", m.reg_resp.auth_url);
			report(cc, CONTROL_CLIENT_NEEDS_LOGIN, m.reg_resp.auth_url, NULL);
			break;
		}
		if (m.reg_resp.status == CTRL_REGISTER_ERROR) {
			set_err(cc, "%s refused the registration: %s", cc->url,
				m.reg_resp.error[0] ? m.reg_resp.error : "no reason given");
			cc->fatal = true;
			r = -EACCES;
			break;
		}
		log_info("registered with %s%s", cc->url, cc->auth_key[0] ? " (auth key)" : "");
		/* Our login now exists: the key must not be spent again on reconnect. */
		crypto_wipe(cc->auth_key, sizeof(cc->auth_key));
		cc->registered = true;
		pthread_mutex_lock(&cc->lock);
		cc->established = true;
		pthread_mutex_unlock(&cc->lock);
		if (cc->ops.registered)
			cc->ops.registered(cc->ops.ctx, m.reg_resp.has_node ? &m.reg_resp.node : NULL);
		r = self_expired_check(cc, m.reg_resp.has_node ? &m.reg_resp.node : NULL);
		if (r < 0)
			break;
		if (m.reg_resp.has_node)
			rotate_schedule(cc, &m.reg_resp.node);
		r = send_map_request(cc, s);
		break;
	case CTRL_MSG_NETMAP:
		if (!cc->registered) {
			set_err(cc, "%s sent a netmap before registration", cc->url);
			r = -EPROTO;
			break;
		}
		r = self_expired_check(cc, &m.netmap->self);
		if (r < 0)
			break;
		rotate_schedule(cc, &m.netmap->self);
		/* Counted before the caller sees it: a resync it asks for later is not stale. */
		pthread_mutex_lock(&cc->lock);
		cc->netmaps++;
		pthread_mutex_unlock(&cc->lock);
		if (s->resuming)
			log_info("the server sent a full netmap: the one held (version %" PRIu64
				 ") was not resumed",
				 cc->have.version.feed);
		s->resuming = false;
		have = (struct ctrl_have){.seq = m.netmap->seq, .version = m.netmap->version};
		r = cc->ops.netmap ? cc->ops.netmap(cc->ops.ctx, m.netmap) : 0;
		if (!cc->ops.netmap)
			netmap_free(m.netmap);
		m.netmap = NULL; /* passed on */
		cc->has_have = r == 0 && have.version.feed;
		cc->have = have;
		if (r < 0) {
			set_err(cc, "cannot apply the netmap: %s", strerror(-r));
			break;
		}
		if (!cc->have_netmap) {
			cc->have_netmap = true;
			report(cc, CONTROL_CLIENT_RUNNING, NULL, NULL);
		}
		break;
	case CTRL_MSG_DELTA:
		if (!cc->have_netmap && !s->resuming) {
			set_err(cc, "%s sent a delta before the netmap", cc->url);
			r = -EPROTO;
			break;
		}
		r = self_expired_check(cc, m.delta->has_self ? &m.delta->self : NULL);
		if (r < 0)
			break;
		if (m.delta->has_self)
			rotate_schedule(cc, &m.delta->self);
		/* Pushed at a renewal: taken now, presented at the next registration. */
		cert_take(cc, m.delta->machine_cert);
		if (s->resuming)
			log_info("resumed the held netmap (version %" PRIu64
				 "): a delta of %u added, "
				 "%u changed, %u removed peers",
				 cc->have.version.feed, m.delta->n_added, m.delta->n_changed,
				 m.delta->n_removed);
		have = (struct ctrl_have){.seq = m.delta->seq,
					  .version = m.delta->version.feed ? m.delta->version
									   : cc->have.version};
		r = cc->ops.delta ? cc->ops.delta(cc->ops.ctx, m.delta) : 0;
		if (cc->ops.delta)
			m.delta = NULL; /* passed on */
		cc->has_have = cc->has_have && r == 0;
		cc->have = have;
		if (r < 0) {
			set_err(cc, "cannot apply a netmap delta (%s): asking for a full map",
				strerror(-r));
			break;
		}
		if (s->resuming) {
			s->resuming = false;
			if (!cc->have_netmap) {
				cc->have_netmap = true;
				report(cc, CONTROL_CLIENT_RUNNING, NULL, NULL);
			}
		}
		break;
	case CTRL_MSG_LOGOUT_RESPONSE:
		r = 1;
		break;
	case CTRL_MSG_FLOWS_ACK:
		if (!cc->flows_inflight)
			break;
		cc->flows_inflight = false;
		if (!strcmp(m.flows_ack.result, "busy"))
			cc->flows_at = time_now_ns() + NSEC_PER_SEC;
		if (cc->ops.flows_ack)
			cc->ops.flows_ack(cc->ops.ctx, m.flows_ack.seq, m.flows_ack.result);
		break;
	case CTRL_MSG_KEEPALIVE:
		break;
	case CTRL_MSG_ERROR:
		/* trellis-control's words for a node an admin deleted (server.c, node_forget). */
		if (cc->registered && !strcmp(m.error, "node deleted")) {
			set_err(cc, "%s", CONTROL_REMOVED_TEXT);
			cc->removed = true;
		} else {
			set_err(cc, "%s: %s", cc->url, m.error);
		}
		r = -ECONNABORTED;
		break;
	default:
		/* A message meant for servers: ignore (newer servers may add types). */
		log_debug("ignoring %s from the server", ctrl_msg_type_name(m.type));
		break;
	}
	ctrl_msg_clear(&m);
	return r;
}

/*
 * A message as it came: JSON, or a full netmap as zstd frames (proto/mapz.h),
 * which we offer in every map_request. Decompressed within the bound of a plain
 * message; one that breaks it (or does not decode) is counted and ends the
 * session like any bad message.
 */
static int handle_wire(struct control_client *cc, struct session *s, const char *msg, size_t len)
{
	char *text = NULL;
	size_t n = 0;
	int r;

	if (!mapz_is_compressed(msg, len))
		return handle_msg(cc, s, msg, len);
	r = mapz_decompress(msg, len, CTRL_MSG_MAX, &text, &n);
	pthread_mutex_lock(&cc->lock);
	if (r < 0) {
		cc->stats.zstd_errors++;
	} else {
		cc->stats.zstd_maps++;
		cc->stats.zstd_bytes_in += len;
		cc->stats.zstd_bytes_out += n;
	}
	pthread_mutex_unlock(&cc->lock);
	if (r < 0) {
		set_err(cc, "bad compressed message from %s: %s", cc->url, strerror(-r));
		return r;
	}
	r = handle_msg(cc, s, text, n);
	free(text);
	return r;
}

static int session_open(struct control_client *cc, struct session *s,
			const uint8_t server_key[NETMAP_KEY_LEN])
{
	struct http_response resp;
	char *buf, req[1024];
	ssize_t n;
	int r;

	buf = malloc(HTTP_HEAD_MAX);
	if (!buf)
		return -ENOMEM;
	r = conn_open(cc, &s->c);
	if (r < 0)
		goto out;
	r = http_control_request_build(req, sizeof(req), cc->u.authority);
	if (r < 0)
		goto out;
	n = conn_request(cc, &s->c, req, (size_t)r, true, buf, HTTP_HEAD_MAX, &resp);
	if (n < 0) {
		r = (int)n;
		goto out;
	}
	s->cs = ctrlstream_client_new(cc->machine_key, server_key);
	if (!s->cs) {
		r = -errno;
		goto out;
	}
	/* What followed the head already belongs to the stream (the server's frame 2). */
	if ((size_t)n > resp.head_len) {
		size_t off = resp.head_len;

		while (off < (size_t)n) {
			ssize_t k = ctrlstream_feed(s->cs, buf + off, (size_t)n - off);

			if (k <= 0) {
				set_err(cc, "bad handshake from %s", cc->url);
				r = k < 0 ? (int)k : -EPROTO;
				goto out;
			}
			off += (size_t)k;
		}
	}
	s->last_send_ns = s->last_recv_ns = time_now_ns();
	/* Frame 1 now; register once frame 2 is in (session_run). */
	r = flush_out(cc, s);
	if (r == 0 && ctrlstream_established(s->cs))
		r = send_register(cc, s);
out:
	free(buf);
	return r;
}

static int session_run(struct control_client *cc, struct session *s)
{
	uint64_t next_ep = time_now_ns() + CONTROL_ENDPOINT_CHECK_NS;
	uint64_t hs_deadline = time_now_ns() + CONTROL_IO_TIMEOUT_NS;

	for (;;) {
		uint64_t now = time_now_ns(), deadline;
		bool logout = false;
		ssize_t n;
		size_t off;
		int r;

		if (!ctrlstream_established(s->cs) && now >= hs_deadline) {
			set_err(cc, "%s: no handshake answer (wrong server key?)", cc->url);
			return -ETIMEDOUT;
		}
		if (now >= s->last_recv_ns + CONTROL_SILENCE_NS) {
			set_err(cc, "%s silent for %llu s: reconnecting", cc->url,
				(unsigned long long)(CONTROL_SILENCE_NS / NSEC_PER_SEC));
			return -ETIMEDOUT;
		}
		if (ctrlstream_established(s->cs) &&
		    now >= s->last_send_ns + CONTROL_KEEPALIVE_NS) {
			struct ctrl_msg m = {.type = CTRL_MSG_KEEPALIVE};

			r = send_msg(cc, s, &m);
			if (r < 0)
				return r;
		}
		if (cc->have_netmap && cc->rotate_at && !cc->rotating &&
		    time_wall_s() >= cc->rotate_at) {
			r = rotate_start(cc, s);
			if (r < 0)
				return r;
		}
		pthread_mutex_lock(&cc->lock);
		if (cc->home_req || cc->endpoints_req)
			next_ep = now;
		cc->endpoints_req = false;
		pthread_mutex_unlock(&cc->lock);
		if (cc->have_netmap && now >= next_ep) {
			r = endpoints_check(cc, s);
			if (r < 0)
				return r;
			next_ep = now + CONTROL_ENDPOINT_CHECK_NS;
		}
		pthread_mutex_lock(&cc->lock);
		if (cc->logout_req) {
			cc->logout_req = false;
			logout = true;
		}
		r = cc->resync_req ? cc->resync_err : 0;
		cc->resync_req = false;
		pthread_mutex_unlock(&cc->lock);
		if (r < 0) {
			set_err(cc, "cannot apply a netmap delta (%s): asking for a full map",
				strerror(-r));
			cc->has_have = false;
			return r;
		}
		pthread_mutex_lock(&cc->lock);
		cc->flows_req = false;
		pthread_mutex_unlock(&cc->lock);
		if (cc->have_netmap && cc->flows_buf && !cc->flows_inflight &&
		    now >= cc->flows_at) {
			r = flows_send(cc, s);
			if (r < 0)
				return r;
		}
		if (logout) {
			struct ctrl_msg m = {.type = CTRL_MSG_LOGOUT};

			log_info("logging out");
			r = send_msg(cc, s, &m);
			if (r < 0)
				return r;
		}

		deadline = MIN(s->last_recv_ns + CONTROL_SILENCE_NS,
			       s->last_send_ns + CONTROL_KEEPALIVE_NS);
		if (cc->have_netmap)
			deadline = MIN(deadline, next_ep);
		if (cc->have_netmap && cc->flows_buf && !cc->flows_inflight && cc->flows_at > now)
			deadline = MIN(deadline, cc->flows_at);
		if (cc->have_netmap && cc->rotate_at && !cc->rotating) {
			int64_t wait_s = MAX(cc->rotate_at - time_wall_s(), 0);

			deadline = MIN(deadline, now + (uint64_t)wait_s * NSEC_PER_SEC);
		}
		if (!ctrlstream_established(s->cs))
			deadline = MIN(deadline, hs_deadline);
		n = dial_read(&s->c, cc->rbuf, READ_CHUNK, deadline);
		if (n == -EAGAIN)
			continue;
		if (n == -EINTR)
			continue; /* a command (the flags above) or half a TLS record */
		if (n == -ECANCELED)
			return (int)n;
		if (n <= 0) {
			set_err(cc, "%s closed the control connection%s%s", cc->url,
				n ? ": " : "", n ? strerror((int)-n) : "");
			return n ? (int)n : -ECONNRESET;
		}
		s->last_recv_ns = time_now_ns();
		off = 0;
		while (off < (size_t)n) {
			const char *json;
			size_t len;
			ssize_t k;
			bool any = false;

			k = ctrlstream_feed(s->cs, cc->rbuf + off, (size_t)n - off);
			if (k < 0) {
				set_err(cc, "control channel with %s broken: %s", cc->url,
					k == -EBADMSG ? "bad frame (wrong server key?)"
						      : strerror((int)-k));
				return (int)k;
			}
			off += (size_t)k;
			while ((r = ctrlstream_recv(s->cs, &json, &len)) == 1) {
				any = true;
				r = handle_wire(cc, s, json, len);
				if (r)
					return r;
			}
			if (r < 0) {
				set_err(cc, "control channel: %s", strerror(-r));
				return r;
			}
			if (!k && !any) {
				set_err(cc, "control channel stuck");
				return -EPROTO;
			}
		}
		if (!s->register_sent && ctrlstream_established(s->cs)) {
			r = send_register(cc, s);
			if (r < 0)
				return r;
		}
		r = flush_out(cc, s);
		if (r < 0)
			return r;
	}
}

/* 1 when logged out, 0 when stopped, -errno (err set; fatal maybe) to retry. */
static int session(struct control_client *cc)
{
	struct session s = {.c = {.fd = -1}};
	uint8_t server_key[NETMAP_KEY_LEN];
	int r;

	cc->registered = false;
	cc->have_netmap = false;
	cc->flows_inflight = false; /* unanswered: sent again on this session */
	cc->flows_at = 0;
	cc->err[0] = '\0';
	/* The next session starts with a full map: the daemon could not apply what it holds. */
	pthread_mutex_lock(&cc->lock);
	if (cc->resync_req)
		cc->has_have = false;
	cc->resync_req = false;
	pthread_mutex_unlock(&cc->lock);
	r = server_key_fetch(cc, server_key);
	if (r < 0)
		goto out;
	r = server_key_check(cc, server_key);
	if (r < 0) {
		cc->fatal = true;
		goto out;
	}
	r = session_open(cc, &s, server_key);
	if (r < 0)
		goto out;
	r = session_run(cc, &s);
out:
	/* A rotation's answer lost with the connection: keep the old key (see rotate_end). */
	rotate_end(cc, false);
	pthread_mutex_lock(&cc->lock);
	cc->established = false;
	cc->logout_req = false;
	if (r == 1)
		cc->logout_done = true;
	pthread_cond_broadcast(&cc->cond);
	pthread_mutex_unlock(&cc->lock);
	ctrlstream_free(s.cs);
	dial_close(&s.c, 0);
	if (r == -ECANCELED)
		return 0;
	return r;
}

/* A probe: can the login server be reached, and does it answer as one (GET /key)? */
static void probe(struct control_client *cc)
{
	uint8_t key[NETMAP_KEY_LEN];
	int r;

	cc->err[0] = '\0';
	r = server_key_fetch(cc, key);
	if (r == -ECANCELED || atomic_load(&cc->stop))
		return;
	if (r < 0 && !cc->err[0])
		set_err(cc, "%s: %s", cc->url, strerror(-r));
	report(cc, r < 0 ? CONTROL_CLIENT_FAILED : CONTROL_CLIENT_RUNNING, NULL,
	       r < 0 ? cc->err : NULL);
}

static void *client_main(void *arg)
{
	struct control_client *cc = arg;
	uint64_t backoff = cc->backoff_min;

	if (cc->probe) {
		probe(cc);
		atomic_store(&cc->stop, true); /* straight to the idle wait below */
	}

	while (!atomic_load(&cc->stop)) {
		uint64_t delay;
		uint32_t rnd = 0;
		int r;

		report(cc, CONTROL_CLIENT_CONNECTING, NULL, NULL);
		r = session(cc);
		if (atomic_load(&cc->stop))
			break;
		if (r == 1) {
			report(cc, CONTROL_CLIENT_LOGGED_OUT, NULL, NULL);
			break;
		}
		if (cc->fatal) {
			log_err("%s", cc->err);
			report(cc, CONTROL_CLIENT_FAILED, NULL, cc->err);
			break;
		}
		if (cc->expired || cc->removed) {
			report(cc, cc->expired ? CONTROL_CLIENT_EXPIRED : CONTROL_CLIENT_REMOVED,
			       NULL, cc->err);
			break;
		}
		if (cc->have_netmap)
			backoff = cc->backoff_min;
		crypto_random(&rnd, sizeof(rnd));
		delay = backoff + backoff / 2 * rnd / UINT32_MAX;
		log_warn("%s; retrying in %.1f s", cc->err[0] ? cc->err : "disconnected",
			 (double)delay / NSEC_PER_SEC);
		report(cc, CONTROL_CLIENT_CONNECTING, NULL, cc->err[0] ? cc->err : NULL);
		backoff = MIN(backoff * 2, CONTROL_BACKOFF_MAX_NS);
		/* Sleep, but wake for stop (a logout now has no session to use). */
		if (dial_sleep(&cc->cancel, time_now_ns() + delay) < 0)
			break;
	}
	/* Idle until stopped: the daemon decides what comes next. */
	while (!atomic_load(&cc->stop))
		if (dial_sleep(&cc->cancel, TIME_NEVER) < 0)
			break;
	return NULL;
}

int control_client_start(const struct control_client_cfg *cfg, struct control_client **ret)
{
	struct control_client *cc;
	int r;

	cc = calloc(1, sizeof(*cc));
	if (!cc)
		return -ENOMEM;
	cc->cancel.wake_fd = -1;
	pthread_mutex_init(&cc->lock, NULL);
	pthread_cond_init(&cc->cond, NULL);
	if (snprintf(cc->url, sizeof(cc->url), "%s", cfg->login_server) >= (int)sizeof(cc->url) ||
	    dial_url_parse(cfg->login_server, &cc->u) < 0) {
		log_err("invalid login server URL \"%s\": expected http://HOST[:PORT] or "
			"https://HOST[:PORT]",
			cfg->login_server);
		r = -EINVAL;
		goto out;
	}
	/* No trailing slash: paths are appended. */
	while (strlen(cc->url) > 0 && cc->url[strlen(cc->url) - 1] == '/')
		cc->url[strlen(cc->url) - 1] = '\0';
	snprintf(cc->hostname, sizeof(cc->hostname), "%s", cfg->hostname ? cfg->hostname : "");
	snprintf(cc->os, sizeof(cc->os), "%s", cfg->os ? cfg->os : "linux");
	snprintf(cc->state_dir, sizeof(cc->state_dir), "%s", cfg->state_dir);
	snprintf(cc->ifname, sizeof(cc->ifname), "%s", cfg->ifname ? cfg->ifname : "");
	snprintf(cc->auth_key, sizeof(cc->auth_key), "%s", cfg->auth_key ? cfg->auth_key : "");
	memcpy(cc->machine_key, cfg->machine_key, NETMAP_KEY_LEN);
	cc->has_audit_key = cfg->has_audit_key;
	memcpy(cc->audit_key, cfg->audit_key, NETMAP_KEY_LEN);
	memcpy(cc->node_key, cfg->node_key, NETMAP_KEY_LEN);
	cc->has_disco_key = cfg->has_disco_key;
	memcpy(cc->disco_key, cfg->disco_key, NETMAP_KEY_LEN);
	r = x25519_public_from_private(cc->node_pub, cc->node_key);
	if (r < 0)
		goto out;
	cc->port_fn = cfg->port;
	cc->port_ctx = cfg->port_ctx;
	cc->probe = cfg->probe;
	cc->backoff_min = cfg->backoff_min_ns ? cfg->backoff_min_ns : CONTROL_BACKOFF_MIN_NS;
	cc->extra_fn = cfg->endpoints_extra;
	cc->ops = cfg->ops;
	cc->rbuf = malloc(READ_CHUNK);
	if (cc->ops.flows_next && cc->ops.flows_ack)
		cc->flows_buf = malloc(FLOWBATCH_MAX_LEN);
	if (!cc->rbuf || (cc->ops.flows_next && cc->ops.flows_ack && !cc->flows_buf)) {
		r = -ENOMEM;
		goto out;
	}
	r = dial_cancel_open(&cc->cancel, &cc->stop);
	if (r < 0)
		goto out;
	r = -pthread_create(&cc->thread, NULL, client_main, cc);
	if (r < 0)
		goto out;
	cc->thread_started = true;
	*ret = cc;
	cc = NULL;
out:
	control_client_free(cc);
	return r;
}

void control_client_free(struct control_client *cc)
{
	int r;

	if (!cc)
		return;
	if (cc->thread_started) {
		atomic_store(&cc->stop, true);
		r = dial_cancel_wake(&cc->cancel);
		if (r < 0)
			log_warn("control client stop: %s", strerror(-r));
		pthread_join(cc->thread, NULL);
	}
	dial_cancel_close(&cc->cancel);
	SSL_CTX_free(cc->ssl_ctx);
	free(cc->rbuf);
	free(cc->flows_buf);
	pthread_cond_destroy(&cc->cond);
	pthread_mutex_destroy(&cc->lock);
	crypto_wipe(cc, sizeof(*cc));
	free(cc);
}

int control_client_resync(struct control_client *cc, uint64_t netmaps, int err)
{
	int r = -ESTALE;

	pthread_mutex_lock(&cc->lock);
	if (netmaps == cc->netmaps) {
		cc->resync_req = true;
		cc->resync_err = err < 0 ? err : -EINVAL;
		r = dial_cancel_wake(&cc->cancel);
		if (r < 0)
			log_warn("control client resync: %s", strerror(-r));
		r = 0;
	}
	pthread_mutex_unlock(&cc->lock);
	return r;
}

void control_client_extra_endpoints_set(struct control_client *cc, const struct endpoint *eps,
					unsigned n, bool mapping_varies)
{
	int r;

	n = MIN(n, (unsigned)NETMAP_MAX_ENDPOINTS);
	pthread_mutex_lock(&cc->lock);
	if (n != cc->n_extra || memcmp(cc->extra, eps, n * sizeof(*eps)) ||
	    mapping_varies != cc->mapping_varies) {
		memcpy(cc->extra, eps, n * sizeof(*eps));
		cc->n_extra = n;
		cc->mapping_varies = mapping_varies;
		/* Report now (the flag the home region uses), not at the next periodic check. */
		cc->home_req = true;
		r = dial_cancel_wake(&cc->cancel);
		if (r < 0)
			log_warn("control client: %s", strerror(-r));
	}
	pthread_mutex_unlock(&cc->lock);
}

void control_client_home_region_set(struct control_client *cc, uint32_t region)
{
	pthread_mutex_lock(&cc->lock);
	if (cc->home_region != region) {
		cc->home_region = region;
		cc->home_req = true;
		int r = dial_cancel_wake(&cc->cancel);

		if (r < 0)
			log_warn("control client: %s", strerror(-r));
	}
	pthread_mutex_unlock(&cc->lock);
}

void control_client_flows_kick(struct control_client *cc)
{
	int r = 0;

	pthread_mutex_lock(&cc->lock);
	if (!cc->flows_req) {
		cc->flows_req = true;
		r = dial_cancel_wake(&cc->cancel);
	}
	pthread_mutex_unlock(&cc->lock);
	if (r < 0)
		log_warn("control client: %s", strerror(-r));
}

void control_client_endpoints_changed(struct control_client *cc)
{
	int r;

	pthread_mutex_lock(&cc->lock);
	cc->endpoints_req = true;
	r = dial_cancel_wake(&cc->cancel);
	pthread_mutex_unlock(&cc->lock);
	if (r < 0)
		log_warn("control client: %s", strerror(-r));
}

int control_client_logout(struct control_client *cc, uint64_t timeout_ns)
{
	struct timespec ts;
	uint64_t wall;
	int r = 0;

	pthread_mutex_lock(&cc->lock);
	if (!cc->established) {
		r = -ENOTCONN;
		goto out;
	}
	cc->logout_done = false;
	cc->logout_req = true;
	r = dial_cancel_wake(&cc->cancel);
	if (r < 0)
		goto out;
	clock_gettime(CLOCK_REALTIME, &ts);
	wall = (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec + timeout_ns;
	ts.tv_sec = (time_t)(wall / NSEC_PER_SEC);
	ts.tv_nsec = (long)(wall % NSEC_PER_SEC);
	while (!cc->logout_done && r == 0) {
		if (!cc->established && !cc->logout_req) {
			r = -ENOTCONN; /* the session died before the answer */
			break;
		}
		r = -pthread_cond_timedwait(&cc->cond, &cc->lock, &ts);
	}
	if (cc->logout_done)
		r = 0;
out:
	pthread_mutex_unlock(&cc->lock);
	return r;
}

void control_client_stats_get(struct control_client *cc, struct control_client_stats *ret)
{
	pthread_mutex_lock(&cc->lock);
	*ret = cc->stats;
	pthread_mutex_unlock(&cc->lock);
}
