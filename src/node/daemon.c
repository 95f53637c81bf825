/* SPDX-License-Identifier: MIT */
/*
 * trellisd in control-plane mode.
 *
 * Threads: the loop thread (local API, engine timers, signals, the deferred
 * netmap cache write, and everything the control client reports) and the
 * control client's thread (control_client.h), besides the data-plane threads
 * of wgdev.c. The client's callbacks do not touch the daemon: they post what
 * they got (state and error, auth URL, registration, netmaps and deltas, the
 * rotated node key) to the loop's mailbox `from_client`, and the loop thread
 * applies it. So the netmap, its applier, the state directory and what the
 * client last reported are the loop thread's, without a lock, and a posting
 * client never waits for the loop — which is what lets the loop wait for the
 * client (control_client_logout, control_client_free) without a deadlock.
 *
 * One exception: the node key in the state directory belongs to the client
 * thread while a client runs, since a rotation needs the next key at once
 * (cc_rotate_begin) and must commit it before it rotates again. The loop
 * thread touches the node key only while no client runs (client_start reads
 * it before the thread starts, logout makes a new one after it stopped).
 *
 * client_stop joins the client's thread and then runs what it posted before
 * it stopped, so a stopped client's last netmap or registration is applied
 * exactly as if it had been applied on its thread, and no message of an old
 * client can reach the next one's session.
 *
 * Backend state (docs/localapi.md):
 *   stopped      wanted down, or the client gave up (error says why)
 *   starting     connecting / registering (tunnels from the cache may run)
 *   needs_login  interactive registration waiting for the admin
 *   running      registered and the netmap from the server is applied
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "node/control_client.h"
#include "node/daemon.h"
#include "node/localapi.h"
#include "node/netmap_apply.h"
#include "node/state.h"
#include "node/wgdev.h"
#include "net/magicsock.h"
#include "net/relayclient.h"
#include "wg/device.h"
#include "proto/ctrlmsg.h"

#define ERROR_MAX 320

struct daemon {
	struct loop *loop;
	struct wgdev *wg;
	struct localapi_server *api;
	const char *ifname;

	/* The loop thread's (see the top for the node key in st). */
	struct control_client *cc;
	struct loop_mailbox from_client;
	uint64_t client_netmaps; /* full netmaps from the current client */
	bool map_broken;         /* a delta did not apply: ignore deltas until a full map */
	struct localapi_req *up_req;
	uint64_t up_errors; /* `errors` when the pending up started */
	bool up_url_sent;
	struct loop_timer save_timer;
	struct state *st;
	struct netmap_apply *na;
	struct netmap *nm; /* the full map applied (server's or the cache's) */
	struct relayclient *rc;
	struct loop_async relay_changed; /* the relay client's home or a connection changed */
	enum control_client_state cstate;
	bool client_on;
	char auth_url[CTRL_TEXT_MAX];
	char error[ERROR_MAX];
	uint64_t errors; /* reports with an error so far */
};

static const char *backend_state(const struct daemon *d)
{
	if (!d->client_on)
		return "stopped";
	switch (d->cstate) {
	case CONTROL_CLIENT_RUNNING:
		return "running";
	case CONTROL_CLIENT_NEEDS_LOGIN:
		return "needs_login";
	case CONTROL_CLIENT_CONNECTING:
		return "starting";
	default:
		return "stopped";
	}
}

static void events(struct daemon *d);

/* --- netmap --- */

static void cache_save(struct daemon *d)
{
	int64_t r = state_netmap_save(d->st, d->nm, time_now_ns());

	if (r < 0)
		log_warn("cannot cache the netmap: %s", strerror((int)-r));
	else if (r > 0 && !d->save_timer.armed)
		loop_timer_arm(d->loop, &d->save_timer, (uint64_t)r);
}

static int apply(struct daemon *d)
{
	int r = netmap_apply_netmap(d->na, d->nm, time_now_ns());

	if (r < 0)
		log_warn("netmap apply: %s (retried with the next change)", strerror(-r));
	relayclient_set_map(d->rc, &d->nm->relay_map, state_prefs(d->st)->login_server);
	wgdev_timers_kick(d->wg);
	return r;
}

/* Loop thread: the control server hears our home region (peers relay to us there). */
static void relay_changed(struct loop_async *a)
{
	struct daemon *d = container_of(a, struct daemon, relay_changed);

	if (d->cc)
		control_client_home_region_set(d->cc, relayclient_home(d->rc));
}

/* Any thread (the relay client's). */
static void rc_changed(void *ctx)
{
	struct daemon *d = ctx;

	loop_async_send(&d->relay_changed);
}

static void stun_notify(void *ctx)
{
	relayclient_stun_notify(ctx);
}

/* --- what the control client reports (posted on its thread, run on the loop) --- */

enum report_kind { REPORT_STATE, REPORT_REGISTERED, REPORT_NETMAP, REPORT_DELTA, REPORT_NODE_KEY };

struct report {
	struct loop_msg msg;
	struct daemon *d;
	enum report_kind kind;
	union {
		struct {
			enum control_client_state state;
			bool has_url, has_error;
			char url[CTRL_TEXT_MAX];
			char error[ERROR_MAX];
		} st;
		struct {
			bool has_self;
			uint64_t node_id;
		} reg;
		struct netmap *nm;
		struct netmap_delta *delta;
		uint8_t key[NETMAP_KEY_LEN];
	};
};

static void report_free(struct report *rp)
{
	if (rp->kind == REPORT_NETMAP)
		netmap_free(rp->nm);
	else if (rp->kind == REPORT_DELTA)
		netmap_delta_free(rp->delta);
	crypto_wipe(rp, sizeof(*rp));
	free(rp);
}

static void report_state(struct daemon *d, struct report *rp)
{
	d->cstate = rp->st.state;
	if (rp->st.has_url)
		snprintf(d->auth_url, sizeof(d->auth_url), "%s", rp->st.url);
	if (rp->st.has_error) {
		snprintf(d->error, sizeof(d->error), "%s", rp->st.error);
		d->errors++;
	} else if (rp->st.state == CONTROL_CLIENT_RUNNING) {
		d->error[0] = '\0';
	}
	if (rp->st.state == CONTROL_CLIENT_FAILED) {
		struct state_prefs p = *state_prefs(d->st);

		/* The error is the client's (ERROR_MAX); the prefs keep what fits. */
		snprintf(p.last_error, sizeof(p.last_error), "%.*s", (int)sizeof(p.last_error) - 1,
			 rp->st.has_error ? rp->st.error : "");
		state_prefs_save(d->st, &p);
	}
	events(d);
}

static void report_registered(struct daemon *d, struct report *rp)
{
	struct state_prefs p = *state_prefs(d->st);
	int r;

	p.registered = true;
	if (rp->reg.has_self)
		p.node_id = rp->reg.node_id;
	p.last_error[0] = '\0';
	r = state_prefs_save(d->st, &p);
	if (r < 0)
		log_warn("cannot save prefs: %s", strerror(-r));
}

static void report_netmap(struct daemon *d, struct report *rp)
{
	netmap_free(d->nm);
	d->nm = rp->nm;
	rp->nm = NULL;
	d->client_netmaps++;
	d->map_broken = false;
	log_info("netmap %" PRIu64 ": %u peers", d->nm->seq, d->nm->n_peers);
	apply(d);
	cache_save(d);
}

static void report_delta(struct daemon *d, struct report *rp)
{
	const struct netmap_delta *delta = rp->delta;
	int r;

	/* The client is already asking for a full map; the deltas until then build on a gap. */
	if (d->map_broken)
		return;
	r = d->nm ? netmap_apply_delta(d->nm, delta) : -EINVAL;
	if (r < 0) {
		/* -ESTALE from the client: a full map is already on its way here. */
		d->map_broken = true;
		if (d->cc)
			control_client_resync(d->cc, d->client_netmaps, r);
		return;
	}
	log_debug("delta %" PRIu64 ": +%u ~%u -%u", delta->seq, delta->n_added, delta->n_changed,
		  delta->n_removed);
	apply(d);
	cache_save(d);
}

static void report_node_key(struct daemon *d, struct report *rp)
{
	int r = netmap_apply_set_private_key(d->na, rp->key, time_now_ns());

	relayclient_set_key(d->rc, rp->key);

	if (r < 0)
		log_warn("cannot give WireGuard the rotated node key: %s", strerror(-r));
	wgdev_timers_kick(d->wg);
}

static void report_run(struct loop_msg *m)
{
	struct report *rp = container_of(m, struct report, msg);
	struct daemon *d = rp->d;

	switch (rp->kind) {
	case REPORT_STATE:
		report_state(d, rp);
		break;
	case REPORT_REGISTERED:
		report_registered(d, rp);
		break;
	case REPORT_NETMAP:
		report_netmap(d, rp);
		break;
	case REPORT_DELTA:
		report_delta(d, rp);
		break;
	case REPORT_NODE_KEY:
		report_node_key(d, rp);
		break;
	}
	report_free(rp);
}

static void report_drop(struct loop_msg *m)
{
	report_free(container_of(m, struct report, msg));
}

static struct report *report_new(struct daemon *d, enum report_kind kind)
{
	struct report *rp = calloc(1, sizeof(*rp));

	if (!rp) {
		log_err("out of memory: a control client report is lost");
		return NULL;
	}
	rp->msg = (struct loop_msg){.run = report_run, .drop = report_drop};
	rp->d = d;
	rp->kind = kind;
	return rp;
}

static void report_post(struct daemon *d, struct report *rp)
{
	/* Closed only at exit, after the client stopped: never dropped in practice. */
	loop_mailbox_post(&d->from_client, &rp->msg);
}

/* --- control client callbacks (client thread) --- */

static void cc_state_changed(void *ctx, enum control_client_state s, const char *url,
			     const char *error)
{
	struct daemon *d = ctx;
	struct report *rp = report_new(d, REPORT_STATE);

	if (!rp)
		return;
	rp->st.state = s;
	if (url) {
		rp->st.has_url = true;
		snprintf(rp->st.url, sizeof(rp->st.url), "%s", url);
	}
	if (error) {
		rp->st.has_error = true;
		snprintf(rp->st.error, sizeof(rp->st.error), "%s", error);
	}
	report_post(d, rp);
}

static void cc_registered(void *ctx, const struct netmap_node *self)
{
	struct daemon *d = ctx;
	struct report *rp = report_new(d, REPORT_REGISTERED);

	if (!rp)
		return;
	rp->reg.has_self = self != NULL;
	rp->reg.node_id = self ? self->id : 0;
	report_post(d, rp);
}

static int cc_netmap(void *ctx, struct netmap *nm)
{
	struct daemon *d = ctx;
	struct report *rp = report_new(d, REPORT_NETMAP);

	if (!rp) {
		netmap_free(nm);
		return -ENOMEM;
	}
	rp->nm = nm;
	report_post(d, rp);
	return 0;
}

static int cc_delta(void *ctx, struct netmap_delta *delta)
{
	struct daemon *d = ctx;
	struct report *rp = report_new(d, REPORT_DELTA);

	if (!rp) {
		netmap_delta_free(delta);
		return -ENOMEM;
	}
	rp->delta = delta;
	report_post(d, rp);
	return 0;
}

/* Key rotation: the client thread owns the node key while it runs (see the top). */
static int cc_rotate_begin(void *ctx, uint8_t ret_key[NETMAP_KEY_LEN])
{
	struct daemon *d = ctx;
	const uint8_t *key;
	int r;

	r = state_node_key_rotate_begin(d->st, &key);
	if (r == 0)
		memcpy(ret_key, key, NETMAP_KEY_LEN);
	return r;
}

static void cc_rotate_end(void *ctx, bool ok)
{
	struct daemon *d = ctx;
	struct report *rp;
	const uint8_t *key;
	int r;

	if (!ok) {
		r = state_node_key_rotate_abort(d->st);
		if (r < 0)
			log_warn("cannot forget the refused node key: %s", strerror(-r));
		return;
	}
	r = state_node_key_rotate_commit(d->st);
	if (r < 0)
		log_warn("cannot save the rotated node key: %s (used until restart)", strerror(-r));
	/* The server has the new key now: WireGuard must use it whether or not it is saved. */
	key = r == 0 ? state_node_key(d->st) : state_node_key_pending(d->st);
	if (!key) {
		log_warn("cannot give WireGuard the rotated node key: %s", strerror(ENOENT));
		return;
	}
	rp = report_new(d, REPORT_NODE_KEY);
	if (!rp)
		return;
	memcpy(rp->key, key, NETMAP_KEY_LEN);
	report_post(d, rp);
}

static uint16_t cc_port(void *ctx)
{
	struct daemon *d = ctx;

	return wgdev_port(d->wg);
}

static int client_start(struct daemon *d, const char *auth_key)
{
	struct control_client_cfg cfg = {0};
	char host[NETMAP_NAME_MAX] = "";
	char server[STATE_URL_MAX];
	int r;

	snprintf(server, sizeof(server), "%s", state_prefs(d->st)->login_server);
	snprintf(host, sizeof(host), "%s", state_prefs(d->st)->hostname);
	memcpy(cfg.machine_key, state_machine_key(d->st), NETMAP_KEY_LEN);
	memcpy(cfg.node_key, state_node_key(d->st), NETMAP_KEY_LEN);
	cfg.state_dir = state_dir(d->st);
	d->cstate = CONTROL_CLIENT_CONNECTING;
	d->client_on = true;
	d->client_netmaps = 0;
	d->map_broken = false;
	if (!host[0] && gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "node");
	cfg.login_server = server;
	cfg.auth_key = auth_key;
	cfg.hostname = host;
	cfg.os = "linux";
	cfg.ifname = d->ifname;
	cfg.port = cc_port;
	cfg.port_ctx = d;
	cfg.ops = (struct control_client_ops){.ctx = d,
					      .state_changed = cc_state_changed,
					      .registered = cc_registered,
					      .netmap = cc_netmap,
					      .delta = cc_delta,
					      .rotate_begin = cc_rotate_begin,
					      .rotate_end = cc_rotate_end};
	r = control_client_start(&cfg, &d->cc);
	if (r == 0)
		control_client_home_region_set(d->cc, relayclient_home(d->rc));
	crypto_wipe(cfg.machine_key, sizeof(cfg.machine_key));
	crypto_wipe(cfg.node_key, sizeof(cfg.node_key));
	if (r < 0)
		d->client_on = false;
	return r;
}

/* Joins the client's thread, then applies what it reported before it stopped. */
static void client_stop(struct daemon *d)
{
	control_client_free(d->cc);
	d->cc = NULL;
	loop_mailbox_run(&d->from_client);
	d->client_on = false;
}

static void up_finish(struct daemon *d, json_t *msg)
{
	struct localapi_req *req = d->up_req;

	d->up_req = NULL;
	localapi_req_finish(req, msg);
}

static void up_finish_error(struct daemon *d, const char *text)
{
	up_finish(d, localapi_reply_error(text));
}

/* --- loop thread --- */

static void save_fire(struct loop_timer *t)
{
	struct daemon *d = container_of(t, struct daemon, save_timer);
	int r = 0;

	if (d->nm)
		r = state_netmap_flush(d->st, d->nm, time_now_ns());
	if (r < 0)
		log_warn("cannot cache the netmap: %s", strerror(-r));
}

/* Answers a pending `trellis up` from what the client reported last. */
static void events(struct daemon *d)
{
	enum control_client_state s = d->cstate;

	if (!d->up_req)
		return;
	if (s == CONTROL_CLIENT_RUNNING) {
		json_t *msg = localapi_reply_ok();

		json_object_set_new(msg, "state", json_string("running"));
		up_finish(d, msg);
	} else if (s == CONTROL_CLIENT_FAILED || d->errors != d->up_errors) {
		/* The client keeps retrying unreachable servers; the user hears at once. */
		up_finish_error(d, d->error[0] ? d->error : "the control client stopped");
	} else if (s == CONTROL_CLIENT_NEEDS_LOGIN && !d->up_url_sent) {
		json_t *msg = localapi_reply_ok();

		json_object_set_new(msg, "state", json_string("needs_login"));
		json_object_set_new(msg, "auth_url", json_string(d->auth_url));
		localapi_req_progress(d->up_req, msg);
		d->up_url_sent = true;
	}
}

static void signal_caught(struct loop *loop, int signo)
{
	log_info("%s, shutting down", strsignal(signo));
	loop_stop(loop);
}

/* --- local API backend (loop thread) --- */

static const char *region_code(const struct daemon *d, uint32_t id)
{
	const struct netmap_relay_region *g =
	    d->nm && id ? netmap_relay_region_find(&d->nm->relay_map, id) : NULL;

	return g ? g->code : NULL;
}

/* One peer's path (docs/localapi.md): what its next packet takes. */
static void peer_path(struct daemon *d, json_t *pj, const struct netmap_node *n,
		      const struct wg_device_info *raw)
{
	char ep[ENDPOINT_STR_MAX];
	struct magicsock_path mp = {0};
	const struct endpoint *e = NULL;
	const char *code;

	for (unsigned i = 0; raw && i < raw->n_peers; i++)
		if (!memcmp(raw->peers[i].public_key, n->node_key, NETMAP_KEY_LEN))
			e = &raw->peers[i].endpoint;
	if (e && endpoint_is_handle(e)) {
		if (magicsock_handle_path(wgdev_magicsock(d->wg), e, &mp) < 0)
			mp.kind = MAGICSOCK_PATH_NONE;
	} else if (e && endpoint_is_addr(e)) {
		/* The engine roamed to an address the peer's packets came from: direct. */
		mp.kind = MAGICSOCK_PATH_DIRECT;
		mp.addr = *e;
		mp.direct_confirmed = true;
	}
	code = region_code(d, n->home_region);
	json_object_set_new(pj, "home_relay", code ? json_string(code) : json_null());
	if (mp.kind == MAGICSOCK_PATH_RELAY) {
		code = region_code(d, mp.region);
		json_object_set_new(pj, "path", json_string("relay"));
		json_object_set_new(pj, "relay", json_string(code ? code : "?"));
		json_object_set_new(pj, "endpoint", json_null());
	} else if (mp.kind == MAGICSOCK_PATH_DIRECT) {
		json_object_set_new(pj, "path", json_string("direct"));
		json_object_set_new(pj, "endpoint",
				    json_string(endpoint_format(&mp.addr, ep, sizeof(ep))));
		json_object_set_new(pj, "direct_confirmed", json_boolean(mp.direct_confirmed));
	}
}

/* The relay part of status: home region and each region's connection. */
static json_t *relay_json(struct daemon *d)
{
	struct relayclient_status *rs = malloc(sizeof(*rs));
	json_t *o = json_object(), *regions = json_array();
	const char *code;

	if (!rs || !o || !regions) {
		free(rs);
		json_decref(o);
		json_decref(regions);
		return NULL;
	}
	relayclient_status_get(d->rc, rs);
	code = region_code(d, rs->home);
	json_object_set_new(o, "home", code ? json_string(code) : json_null());
	json_object_set_new(o, "home_region", json_integer(rs->home));
	for (unsigned i = 0; i < rs->n_regions; i++) {
		const struct relayclient_region_info *ri = &rs->regions[i];
		json_t *r = json_pack(
		    "{s:I, s:s, s:b, s:s, s:I, s:I, s:I, s:I}", "id", (json_int_t)ri->id, "code",
		    ri->code, "home", ri->home, "state", relayclient_state_name(ri->state),
		    "tx_packets", (json_int_t)ri->tx_packets, "rx_packets",
		    (json_int_t)ri->rx_packets, "tx_drops", (json_int_t)ri->tx_drops, "connects",
		    (json_int_t)ri->connects);

		if (!r)
			continue;
		json_object_set_new(
		    r, "latency_ms",
		    ri->latency_us < 0 ? json_null() : json_real((double)ri->latency_us / 1000.0));
		if (ri->error[0])
			json_object_set_new(r, "error", json_string(ri->error));
		json_array_append_new(regions, r);
	}
	json_object_set_new(o, "regions", regions);
	free(rs);
	return o;
}

static void status_relay(struct daemon *d, json_t *st)
{
	struct wg_device_info *raw = NULL;
	json_t *peers = json_object_get(st, "peers");

	if (d->nm && wg_device_info_get(wgdev_device(d->wg), &raw) == 0) {
		/* localapi_status_build lists the peers in netmap order. */
		for (unsigned i = 0; i < d->nm->n_peers && i < json_array_size(peers); i++)
			peer_path(d, json_array_get(peers, i), &d->nm->peers[i], raw);
		wg_device_info_free(raw);
	}
	json_object_set_new(st, "relay", relay_json(d));
}

/* Drops the per-peer view does not show: an MTU the buffers do not fit must not hide. */
static json_t *dataplane_json(struct wgdev *w)
{
	struct wgdev_counters c;

	wgdev_counters_get(w, &c);
	return json_pack("{s:I, s:I, s:{s:I, s:I, s:I}, s:I}", "mtu", (json_int_t)c.mtu,
			 "buffer_size", (json_int_t)c.buf_size, "dropped_too_big", "tun",
			 (json_int_t)c.too_big_tun, "udp", (json_int_t)c.too_big_udp, "engine",
			 (json_int_t)c.too_big_engine, "stale_source", (json_int_t)c.src_stale);
}

static int be_status(void *ctx, json_t **ret)
{
	struct daemon *d = ctx;
	struct wg_device_info *info = NULL;
	json_t *st = NULL;
	int r;

	r = wgdev_info_get(d->wg, &info);
	if (r < 0)
		return r;
	r = localapi_status_build(backend_state(d), d->nm, info, &st);
	if (r == 0) {
		const struct state_prefs *p = state_prefs(d->st);
		const char *e = d->error[0] ? d->error : p->last_error;

		if (e[0])
			json_object_set_new(st, "error", json_string(e));
		if (p->login_server[0])
			json_object_set_new(st, "login_server", json_string(p->login_server));
		if (d->cstate == CONTROL_CLIENT_NEEDS_LOGIN && d->client_on)
			json_object_set_new(st, "auth_url", json_string(d->auth_url));
		status_relay(d, st);
		json_object_set_new(st, "dataplane", dataplane_json(d->wg));
	}
	wg_device_info_free(info);
	if (r == 0)
		*ret = st;
	return r;
}

/* Peers, addresses and routes off; the map forgotten. */
static void clear(struct daemon *d)
{
	int r = netmap_apply_clear(d->na, time_now_ns());

	if (r < 0)
		log_warn("clearing the interface: %s", strerror(-r));
	netmap_free(d->nm);
	d->nm = NULL;
	relayclient_set_map(d->rc, &(struct netmap_relay_map){0}, NULL);
}

static void be_up(void *ctx, const struct localapi_up_opts *opts, struct localapi_req *req)
{
	struct daemon *d = ctx;
	struct state_prefs p;
	char err[LOCALAPI_ERROR_MAX];
	int r;

	if (d->up_req)
		up_finish_error(d, "superseded by another `trellis up`");
	client_stop(d);

	p = *state_prefs(d->st);
	if (strcmp(p.login_server, opts->login_server)) {
		/* Another server: its tailnet is not ours. */
		if (p.login_server[0]) {
			clear(d);
			state_netmap_remove(d->st);
		}
		p.registered = false;
		p.node_id = 0;
		snprintf(p.login_server, sizeof(p.login_server), "%s", opts->login_server);
	}
	if (opts->hostname)
		snprintf(p.hostname, sizeof(p.hostname), "%s", opts->hostname);
	p.want_up = true;
	p.last_error[0] = '\0';
	d->error[0] = '\0';
	d->auth_url[0] = '\0';
	r = state_prefs_save(d->st, &p);
	d->up_errors = d->errors;
	if (r < 0) {
		snprintf(err, sizeof(err), "cannot save the preferences in %s: %s",
			 state_dir(d->st), strerror(-r));
		localapi_req_finish(req, localapi_reply_error(err));
		return;
	}
	r = client_start(d, opts->auth_key);
	if (r < 0) {
		if (r == -EINVAL)
			snprintf(err, sizeof(err),
				 "invalid login server URL \"%s\" (expected http://HOST[:PORT] or "
				 "https://HOST[:PORT])",
				 opts->login_server);
		else
			snprintf(err, sizeof(err), "cannot start the control client: %s",
				 strerror(-r));
		localapi_req_finish(req, localapi_reply_error(err));
		return;
	}
	d->up_req = req;
	d->up_url_sent = false;
	events(d);
}

static void be_up_cancel(void *ctx, struct localapi_req *req)
{
	struct daemon *d = ctx;

	if (d->up_req == req)
		d->up_req = NULL;
}

static int be_down(void *ctx, char *err, size_t err_len)
{
	struct daemon *d = ctx;
	struct state_prefs p;
	int r;

	if (d->up_req)
		up_finish_error(d, "cancelled by `trellis down`");
	client_stop(d);
	clear(d);
	p = *state_prefs(d->st);
	p.want_up = false;
	r = state_prefs_save(d->st, &p);
	if (r < 0)
		snprintf(err, err_len, "cannot save the preferences: %s", strerror(-r));
	else
		log_info("down");
	return r;
}

static int be_logout(void *ctx, char *err, size_t err_len)
{
	struct daemon *d = ctx;
	struct state_prefs p;
	const uint8_t *key;
	int r = -ENOTCONN;

	if (d->up_req)
		up_finish_error(d, "cancelled by `trellis logout`");
	if (d->cc)
		r = control_client_logout(d->cc, DAEMON_LOGOUT_TIMEOUT_NS);
	if (r < 0)
		log_warn("logout not confirmed by the server (%s): forgetting the key locally",
			 strerror(-r));
	client_stop(d);

	clear(d);
	state_netmap_remove(d->st);
	/* A new node key for the next login: the old one is expired at the server. */
	r = state_node_key_rotate_begin(d->st, &key);
	if (r == 0)
		r = state_node_key_rotate_commit(d->st);
	if (r == 0)
		r = netmap_apply_set_private_key(d->na, state_node_key(d->st), time_now_ns());
	if (r == 0)
		relayclient_set_key(d->rc, state_node_key(d->st));
	if (r < 0) {
		snprintf(err, err_len, "cannot make a new node key: %s", strerror(-r));
		goto out;
	}
	p = *state_prefs(d->st);
	p.want_up = false;
	p.registered = false;
	p.node_id = 0;
	p.last_error[0] = '\0';
	d->error[0] = '\0';
	r = state_prefs_save(d->st, &p);
	if (r < 0)
		snprintf(err, err_len, "cannot save the preferences: %s", strerror(-r));
	else
		log_info("logged out");
out:
	return r;
}

/* --- run --- */

int daemon_run(const struct daemon_opts *opts)
{
	struct daemon *d;
	struct wgdev_opts wo;
	struct localapi_backend be;
	const struct state_prefs *p;
	struct netmap *cached = NULL;
	int r;

	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->ifname = opts->ifname ? opts->ifname : DAEMON_DEFAULT_TUN;
	d->save_timer.cb = save_fire;
	d->save_timer.deadline_ns = TIME_NEVER;
	log_set_prefix(d->ifname);

	r = state_open(opts->state_dir ? opts->state_dir : STATE_DEFAULT_DIR, &d->st);
	if (r < 0) {
		log_err("cannot open the state directory %s: %s",
			opts->state_dir ? opts->state_dir : STATE_DEFAULT_DIR, strerror(-r));
		goto out;
	}
	d->loop = loop_new();
	if (!d->loop) {
		r = -errno;
		goto out;
	}
	/* Before any thread starts, so that all of them inherit the blocked mask. */
	r = loop_signals_catch(d->loop, signal_caught);
	if (r < 0)
		goto out;
	loop_mailbox_init(d->loop, &d->from_client);

	wo = (struct wgdev_opts){.ifname = d->ifname,
				 .mtu = opts->mtu,
				 .workers = opts->workers,
				 .port = opts->port,
				 .uapi_optional = true,
				 .stun_box = true};
	r = wgdev_new(d->loop, &wo, &d->wg);
	if (r < 0)
		goto out;
	r = netmap_apply_new(wgdev_device(d->wg), wgdev_magicsock(d->wg), d->ifname, 0,
			     &netmap_apply_os_netlink, &d->na);
	if (r < 0)
		goto out;
	r = netmap_apply_set_private_key(d->na, state_node_key(d->st), time_now_ns());
	if (r < 0)
		goto out;
	d->relay_changed.cb = relay_changed;
	loop_async_add(d->loop, &d->relay_changed);
	r = relayclient_new(&(struct relayclient_cfg){.ms = wgdev_magicsock(d->wg),
						      .changed = rc_changed,
						      .ctx = d},
			    &d->rc);
	if (r < 0)
		goto out;
	relayclient_set_key(d->rc, state_node_key(d->st));
	wgdev_stun_listen(d->wg, stun_notify, d->rc);

	be = (struct localapi_backend){.ctx = d,
				       .status = be_status,
				       .up = be_up,
				       .up_cancel = be_up_cancel,
				       .down = be_down,
				       .logout = be_logout};
	r = localapi_server_new(d->loop, opts->socket_path ? opts->socket_path
							   : LOCALAPI_DEFAULT_SOCKET,
				&be, &d->api);
	if (r < 0) {
		log_err("cannot serve the local API on %s: %s",
			opts->socket_path ? opts->socket_path : LOCALAPI_DEFAULT_SOCKET,
			strerror(-r));
		goto out;
	}

	/* Back to where we were: tunnels from the cache at once, control behind them. */
	p = state_prefs(d->st);
	if (p->want_up && p->login_server[0]) {
		r = state_netmap_load(d->st, &cached);
		if (r == 0) {
			d->nm = cached;
			apply(d);
			log_info("tunnels up from the cached netmap (%u peers)", cached->n_peers);
		} else if (r != -ENOENT) {
			log_warn("netmap cache unusable: %s", strerror(-r));
		}
		r = client_start(d, NULL);
		if (r < 0)
			log_err("cannot start the control client: %s", strerror(-r));
	}
	log_info("trellisd running: state %s, local API %s, UDP port %u", state_dir(d->st),
		 opts->socket_path ? opts->socket_path : LOCALAPI_DEFAULT_SOCKET,
		 wgdev_port(d->wg));

	r = loop_run(d->loop);
	if (r < 0)
		log_err("event loop: %s", strerror(-r));
out:
	if (d->up_req)
		up_finish_error(d, "trellisd is shutting down");
	client_stop(d);
	loop_mailbox_close(&d->from_client);
	localapi_server_free(d->api);
	if (d->nm && d->st)
		state_netmap_flush(d->st, d->nm, time_now_ns());
	if (d->save_timer.armed)
		loop_timer_disarm(d->loop, &d->save_timer);
	/* The interface, its addresses and routes go with the TUN fd. */
	netmap_apply_free(d->na);
	/* The relay stops feeding the data plane, which then returns the relay's buffers. */
	if (d->wg)
		wgdev_stun_listen(d->wg, NULL, NULL);
	relayclient_stop(d->rc);
	wgdev_free(d->wg);
	relayclient_free(d->rc);
	loop_async_del(&d->relay_changed);
	netmap_free(d->nm);
	state_free(d->st);
	loop_free(d->loop);
	free(d);
	return r;
}
