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
 *   stopped      wanted down (the login is kept), or the client gave up (error says why)
 *   starting     connecting / registering (tunnels from the cache may run)
 *   needs_login  no valid login: never logged in, logged out, the node key expired
 *                (a re-login registration is started at once, for its URL) or an admin
 *                deleted the node (it stays out until `trellis up`); or an interactive
 *                registration waits for the admin (auth_url)
 *   running      registered and the netmap from the server is applied
 *
 * `trellis up` that names another login server than the one remembered changes nothing
 * until that server has answered (a probe: control_client_cfg.probe), and moving a
 * logged-in node needs force_reauth: a typo must not cost the node its tailnet.
 *
 * Every change of state gets one log line (state_log, peers_log) and a STATUS= for
 * systemd (notify_status).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "base/workq.h"
#include "crypto/crypto.h"
#include "crypto/mcert.h"
#include "node/control_client.h"
#include "node/daemon.h"
#include "node/flowspool.h"
#include "node/flowtable.h"
#include "node/heaptrim.h"
#include "node/hslog.h"
#include "node/localapi.h"
#include "node/machinecert.h"
#include "node/netmap_apply.h"
#include "node/nodefilter.h"
#include "node/nodemetrics.h"
#include "node/pathd.h"
#include "os/netlink.h"
#include "os/sd_notify.h"
#include "node/state.h"
#include "node/wgdev.h"
#include "net/dial.h"
#include "net/httpd.h"
#include "net/magicsock.h"
#include "net/nat64.h"
#include "net/pref64.h"
#include "net/relayclient.h"
#include "portmap/portmap.h"
#include "wg/device.h"
#include "wg/messages.h"
#include "proto/ctrlmsg.h"

#define ERROR_MAX 320
/* systemd's STATUS= text. */
#define NOTIFY_MAX 512

/* A `trellis up` waiting for its probe of another login server (be_up). */
struct up_pending {
	char server[STATE_URL_MAX];
	char hostname[NETMAP_NAME_MAX];
	char auth_key[CTRL_AUTHKEY_MAX];
	bool has_auth_key, force_reauth;
};

/* What the loop does after the client stopped by itself (report_state). */
enum relogin { RELOGIN_NONE, RELOGIN_EXPIRED, RELOGIN_REMOVED };

/* A peer's last seen online flag, for the online/offline log lines (sorted by id). */
struct peer_seen {
	uint64_t id;
	bool online;
};

struct daemon {
	struct loop *loop;
	struct wgdev *wg;
	struct localapi_server *api;
	const char *ifname;

	/* The loop thread's (see the top for the node key in st). */
	struct control_client *cc;
	struct control_client_stats cc_past; /* the clients stopped before cc, summed */
	struct loop_mailbox from_client;
	uint64_t client_netmaps; /* full netmaps from the current client */
	bool map_broken;         /* a delta did not apply: ignore deltas until a full map */
	struct localapi_req *up_req;
	uint64_t up_errors; /* `errors` when the pending up started */
	bool up_url_sent;
	struct loop_timer save_timer;
	struct loop_timer regather_timer; /* net_changed's debounce */
	struct state *st;
	struct flowspool *spool; /* flow-log batches until the collector has them (docs/audit.md) */
	struct flowtable *flows; /* the data path counts flows here; flushed into the spool */
	struct loop_timer flows_timer;
	uint64_t flows_since; /* the start of the interval being counted */
	/* What the full tables could not count since the daemon started (status flow_log). */
	uint64_t flows_dropped, flow_packets_dropped;
	uint64_t flow_link_scope; /* packets the node sent to link-scope addresses: no flows */
	/* The tailnet's setting (netmap flow_log): until a netmap says, on every 5 s. */
	struct netmap_flow_log flows_cfg;
	/*
	 * A lying node for the lab (TRELLIS_TEST_FLOWS_UNDERREPORT): it reports half of what
	 * it counted. Nothing a node's owner could not do by patching the binary; the
	 * collector must catch it from the peer's report (docs/audit.md).
	 */
	bool flows_underreport;
	struct netmap_apply *na;
	struct nodefilter *filter; /* the packet filter from the netmap (issue 12) */
	struct netmap *nm; /* the full map applied (server's or the cache's) */
	struct relayclient *rc;
	struct pathd *pd;
	struct loop_async relay_changed; /* the relay client's home or a connection changed */
	struct portmap *pm;		 /* NULL: no port mapping */
	enum control_client_state cstate;
	bool client_on;
	char auth_url[CTRL_TEXT_MAX];
	char error[ERROR_MAX];
	uint64_t errors; /* reports with an error so far */

	/* `trellis up` to another server: its probe, and the up to commit once it answers. */
	struct control_client *probe;
	uint64_t probe_gen; /* reports of older probes are ignored */
	struct up_pending pend;
	/* The client stopped for good by itself: what to do about it, off its report. */
	enum relogin relogin;
	struct loop_timer relogin_timer;
	bool reauth; /* the re-login after an expiry runs: needs_login, not starting */

	/* Events: one log line per change. */
	bool was_running; /* this client reached running once */
	bool ctl_lost;    /* ... and then lost the server */
	struct peer_seen *seen;
	unsigned n_seen;
	bool seen_valid;
	struct hslog *hslog;
	struct loop_async handshake; /* the engine completed a handshake (any thread) */
	struct loop_timer hs_timer;  /* ... and the snapshot waits for the next second */
	uint64_t hs_last_ns;
	char notified[NOTIFY_MAX];
	struct loop_timer watchdog_timer;
	uint64_t watchdog_ns;
	struct heap_trim heap_trim; /* heap_trim_soon */
	struct httpd *metrics;
	struct ping_req *pings; /* `trellis ping` requests waiting for their pong */

	/* NAT64 detection (nat64_detect) on a worker: at start and at every re-gather. */
	struct workq *wq;
	struct nat64_job {
		struct workq_job job;
		struct daemon *d;
		struct nat64_prefix prefix; /* the worker's result */
		bool ipv4_routed;
		int err;
	} n64;
	bool n64_busy, n64_again;    /* in flight; the network changed again meanwhile */
	struct nat64_prefix n64_cur; /* as last detected */
	bool n64_ipv4, n64_done;     /* IPv4 had a route then; a detection finished */
	/* PREF64 from router advertisements (RFC 8781): they win over the DNS64's prefix. */
	struct loop_fd ra_mon;	    /* RTNLGRP_ND_USEROPT; fd -1: not listening */
	struct loop_timer ra_timer; /* the soonest expiry in ra */
	struct pref64_table ra;
	struct pref64_stats ra_stats;
	uint64_t ra_dropped; /* drops in ra_stats already logged */
	/* What the process state (nat64_state_set) holds: the RA's prefix or the DNS64's. */
	struct nat64_prefix n64_used;
	bool n64_used_ipv4, n64_published;
};

struct ping_req {
	struct daemon *d;
	struct localapi_req *req;
	struct endpoint handle;
	char peer[NETMAP_NAME_MAX];
	struct ping_req *next;
};

static const char *backend_state(const struct daemon *d)
{
	bool registered = state_prefs(d->st)->registered;

	if (!d->client_on)
		return registered ? "stopped" : "needs_login";
	switch (d->cstate) {
	case CONTROL_CLIENT_RUNNING:
		return "running";
	case CONTROL_CLIENT_NEEDS_LOGIN:
	case CONTROL_CLIENT_EXPIRED:
	case CONTROL_CLIENT_REMOVED:
		return "needs_login";
	case CONTROL_CLIENT_CONNECTING:
		return d->reauth ? "needs_login" : "starting";
	default:
		return registered ? "stopped" : "needs_login";
	}
}

/* --- events: log lines and systemd's STATUS= --- */

/* STATUS= for systemd when the text changed (`systemctl status trellisd` shows it). */
static void notify_status(struct daemon *d)
{
	const char *st = backend_state(d);
	char text[NOTIFY_MAX];
	int r;

	if (!strcmp(st, "running"))
		snprintf(text, sizeof(text), "STATUS=Running: tailnet %s, %u peers",
			 d->nm ? d->nm->tailnet : "?", d->nm ? d->nm->n_peers : 0);
	else if (!strcmp(st, "needs_login") && d->client_on && d->auth_url[0] &&
		 d->cstate == CONTROL_CLIENT_NEEDS_LOGIN)
		snprintf(text, sizeof(text), "STATUS=Needs login: %.400s", d->auth_url);
	else if (!strcmp(st, "needs_login"))
		snprintf(text, sizeof(text), "STATUS=Needs login%s%.400s",
			 d->error[0] ? ": " : "", d->error);
	else if (!strcmp(st, "starting"))
		snprintf(text, sizeof(text), "STATUS=Connecting to %.200s%s%.250s",
			 state_prefs(d->st)->login_server, d->error[0] ? ": " : "", d->error);
	else
		snprintf(text, sizeof(text), "STATUS=Stopped%s%.400s", d->error[0] ? ": " : "",
			 d->error);
	if (!strcmp(text, d->notified))
		return;
	snprintf(d->notified, sizeof(d->notified), "%s", text);
	r = sd_notify_send(text);
	if (r < 0)
		log_debug("sd_notify: %s", strerror(-r));
}

static void watchdog_fire(struct loop_timer *t)
{
	struct daemon *d = container_of(t, struct daemon, watchdog_timer);

	/* From the loop thread: a loop that stops turning stops the pings. */
	sd_notify_send("WATCHDOG=1");
	loop_timer_arm(d->loop, t, time_now_ns() + d->watchdog_ns / 2);
}

static int seen_cmp(const void *a, const void *b)
{
	const struct peer_seen *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Peers that joined, left, came online or went offline since the last applied map: one
 * line each. The first map after a start is summed up by its own line instead.
 */
static void peers_log(struct daemon *d)
{
	unsigned n = d->nm ? d->nm->n_peers : 0, i;
	struct peer_seen *now = calloc(n ? n : 1, sizeof(*now));

	if (!now)
		return;
	for (i = 0; i < n; i++)
		now[i] = (struct peer_seen){.id = d->nm->peers[i].id,
					    .online = d->nm->peers[i].online};
	qsort(now, n, sizeof(*now), seen_cmp);
	for (i = 0; d->seen_valid && i < n; i++) {
		const struct netmap_node *p = &d->nm->peers[i];
		struct peer_seen key = {.id = p->id};
		const struct peer_seen *was =
		    d->n_seen ? bsearch(&key, d->seen, d->n_seen, sizeof(*d->seen), seen_cmp)
			      : NULL;

		if (!was)
			log_info("peer %s (id %" PRIu64 ") joined, %s", p->name, p->id,
				 p->online ? "online" : "offline");
		else if (was->online != p->online)
			log_info("peer %s (id %" PRIu64 ") %s", p->name, p->id,
				 p->online ? "online" : "offline");
	}
	for (i = 0; d->seen_valid && i < d->n_seen; i++)
		if (!n || !bsearch(&d->seen[i], now, n, sizeof(*now), seen_cmp))
			log_info("peer id %" PRIu64 " left the netmap", d->seen[i].id);
	free(d->seen);
	d->seen = now;
	d->n_seen = n;
	d->seen_valid = true;
}

static const char *hs_peer_name(void *ctx, const uint8_t key[WG_KEY_LEN])
{
	struct daemon *d = ctx;

	for (unsigned i = 0; d->nm && i < d->nm->n_peers; i++)
		if (!memcmp(d->nm->peers[i].node_key, key, WG_KEY_LEN))
			return d->nm->peers[i].name;
	return NULL;
}

static void hs_emit(void *ctx, const char *line)
{
	(void)ctx;
	log_info("%s", line);
}

static void hs_update(struct daemon *d)
{
	struct wg_device_info *info = NULL;

	d->hs_last_ns = time_now_ns();
	if (!d->wg || wgdev_info_get(d->wg, &info) < 0)
		return;
	hslog_update(d->hslog, info, d->hs_last_ns, hs_peer_name, hs_emit, d);
	wg_device_info_free(info);
}

static void hs_timer_fire(struct loop_timer *t)
{
	hs_update(container_of(t, struct daemon, hs_timer));
}

/*
 * Loop thread: a handshake completed; the log says so for first ones and after a gap. At
 * most one engine snapshot a second: with thousands of peers, rekeys complete many
 * handshakes a second and each snapshot copies every peer.
 */
static void handshake_done(struct loop_async *a)
{
	struct daemon *d = container_of(a, struct daemon, handshake);
	uint64_t now = time_now_ns();

	if (d->hs_timer.armed)
		return;
	if (!d->hs_last_ns || now - d->hs_last_ns >= NSEC_PER_SEC)
		hs_update(d);
	else
		loop_timer_arm(d->loop, &d->hs_timer, d->hs_last_ns + NSEC_PER_SEC);
}

static void handshake_notify(void *ctx)
{
	struct daemon *d = ctx;

	loop_async_send(&d->handshake);
}

/* One line per change of the control client's state (report_state). */
static void state_log(struct daemon *d, enum control_client_state s, const char *error)
{
	const char *url = state_prefs(d->st)->login_server;

	switch (s) {
	case CONTROL_CLIENT_RUNNING:
		if (d->ctl_lost)
			log_info("control server %s reachable again", url);
		else if (!d->was_running)
			log_info("logged in to %s: node %s in tailnet %s", url,
				 d->nm ? d->nm->self.name : "?", d->nm ? d->nm->tailnet : "?");
		d->was_running = true;
		d->ctl_lost = false;
		break;
	case CONTROL_CLIENT_CONNECTING:
		if (d->was_running && !d->ctl_lost && error) {
			log_warn("lost the control server %s (%s): tunnels go on with the last "
				 "netmap",
				 url, error);
			d->ctl_lost = true;
		}
		break;
	case CONTROL_CLIENT_NEEDS_LOGIN:
		log_info("needs login: an admin approves it at %s", d->auth_url);
		break;
	case CONTROL_CLIENT_EXPIRED:
	case CONTROL_CLIENT_REMOVED:
		log_warn("%s", error ? error : control_client_state_name(s));
		break;
	case CONTROL_CLIENT_FAILED:
		/* The client logged why. */
		break;
	case CONTROL_CLIENT_LOGGED_OUT:
		log_info("logged out of %s", url);
		break;
	}
}

static void events(struct daemon *d);
static void up_commit(struct daemon *d);
static void up_finish_error(struct daemon *d, const char *text);

/* --- netmap --- */

static void cache_save(struct daemon *d)
{
	int64_t r = state_netmap_save(d->st, d->nm, time_now_ns());

	if (r < 0)
		log_warn("cannot cache the netmap: %s", strerror((int)-r));
	else if (r > 0 && !d->save_timer.armed)
		loop_timer_arm(d->loop, &d->save_timer, (uint64_t)r);
}

static void flows_configure(struct daemon *d, const struct netmap_flow_log *fl);

static int apply(struct daemon *d)
{
	int r = netmap_apply_netmap(d->na, d->nm, time_now_ns());

	if (r < 0)
		log_warn("netmap apply: %s (retried with the next change)", strerror(-r));
	relayclient_set_map(d->rc, &d->nm->relay_map, state_prefs(d->st)->login_server);
	pathd_netmap(d->pd, d->nm, d->na, d->nm->self.node_key);
	nodefilter_apply(d->filter, d->nm->filter);
	flows_configure(d, &d->nm->flow_log);
	wgdev_timers_kick(d->wg);
	peers_log(d);
	return r;
}

/*
 * We hold an IPv4 port mapping: peers reach us at its port, a fixed one, whatever our
 * NAT does with other flows. (An IPv6 pinhole says nothing about the IPv4 NAT.) Any thread.
 */
static bool port_mapped(struct daemon *d)
{
	struct endpoint eps[2];
	unsigned n = portmap_endpoints(d->pm, eps, ARRAY_SIZE(eps));

	for (unsigned i = 0; i < n; i++)
		if (eps[i].sa.sa_family == AF_INET)
			return true;
	return false;
}

/*
 * A hard NAT here: STUN servers saw different mappings and we hold no port mapping. With
 * one, what our NAT does with other flows does not matter to peers: they reach us at the
 * mapped port, so telling them "hard" would only make them give up on direct paths or
 * start birthday probing (docs/architecture.md).
 */
static bool nat_hard(struct daemon *d, const struct relayclient_nat *nat)
{
	return nat->mapping_varies && !port_mapped(d);
}

/*
 * Loop thread: the control server hears our home region (peers relay to us there), and
 * path.json keeps it and the NAT flag for the next start. Until a STUN round has measured
 * the NAT, the flag of the last run stands: reporting false meanwhile would flip it at
 * every peer and back. Called again when a port mapping comes or goes (pm_changed).
 */
static void relay_report(struct daemon *d)
{
	struct state_path keep = *state_path(d->st);
	struct relayclient_status *rs;
	bool mapping_varies;

	if (!d->rc)
		return;
	rs = malloc(sizeof(*rs));
	if (!rs)
		return;
	relayclient_status_get(d->rc, rs);
	mapping_varies = rs->nat.measured ? nat_hard(d, &rs->nat) : keep.mapping_varies;
	/* No home (no relay map, e.g. after a logout) keeps the last one known. */
	if (rs->home)
		keep.home_region = rs->home;
	keep.mapping_varies = mapping_varies;
	state_path_save(d->st, &keep);
	if (d->cc) {
		control_client_home_region_set(d->cc, rs->home);
		/* Our STUN-reflexive addresses: candidates for peers, after the local ones. */
		control_client_extra_endpoints_set(d->cc, rs->nat.reflexive, rs->nat.n_reflexive,
						   mapping_varies);
	}
	free(rs);
}

static void relay_changed(struct loop_async *a)
{
	relay_report(container_of(a, struct daemon, relay_changed));
}

/* Any thread (the relay client's). */
static void rc_changed(void *ctx)
{
	struct daemon *d = ctx;

	loop_async_send(&d->relay_changed);
}

/*
 * Loop thread: the port-mapped endpoint changed; the control server hears it at once, and
 * with a mapping gained or lost, whether we count as a hard NAT (relay_report).
 */
static void pm_changed(void *ctx)
{
	struct daemon *d = ctx;

	if (d->pd)
		pathd_port_mapped(d->pd, port_mapped(d));
	relay_report(d);
	if (d->cc)
		control_client_endpoints_changed(d->cc);
}

/* Client thread: d->pm outlives every client (made before the first, freed after the last). */
static unsigned cc_endpoints_extra(void *ctx, struct endpoint *ret, unsigned cap)
{
	struct daemon *d = ctx;

	return portmap_endpoints(d->pm, ret, cap);
}

/*
 * Loop thread (wgdev's netlink monitor): a link, an address or a route changed. Changes
 * come in bursts (a link coming up brings its addresses and routes), so one re-gather
 * once they settle: the STUN round now rather than at its interval, and the endpoints
 * checked now rather than at the next periodic check.
 */
static void net_changed(void *ctx)
{
	struct daemon *d = ctx;

	if (!d->regather_timer.armed)
		loop_timer_arm(d->loop, &d->regather_timer,
			       time_now_ns() + DAEMON_REGATHER_DEBOUNCE_NS);
}

static void nat64_start(struct daemon *d);
static void nat64_publish(struct daemon *d);

/*
 * Our addresses or the way to IPv4 changed: a STUN round, a relay dial now (a relay we lost
 * may be reachable over the new link) and our endpoints to the control server.
 */
static void paths_renew(struct daemon *d)
{
	if (d->rc) {
		relayclient_stun_soon(d->rc);
		relayclient_retry_now(d->rc);
	}
	if (d->cc)
		control_client_endpoints_changed(d->cc);
}

static void ra_changed(struct daemon *d);
static void ra_timer_set(struct daemon *d);

/*
 * A router's prefix belongs to the network its link is on: when the link goes down or away
 * (a laptop moving to another network on the same interface), it is dropped at once
 * rather than at the end of its lifetime. A link that comes back gets it again from the
 * router's answer to the kernel's router solicitation.
 */
static void ra_links_check(struct daemon *d)
{
	bool changed = false, removed = false;
	unsigned i = 0;

	while (i < d->ra.n) {
		int ifindex = d->ra.e[i].opt.ifindex;

		if (nl_link_running(ifindex)) {
			i++;
			continue;
		}
		/* Removes every entry of ifindex; what moved into slot i is looked at next. */
		changed |= pref64_table_forget(&d->ra, ifindex);
		removed = true;
	}
	if (removed)
		ra_timer_set(d);
	if (changed) {
		log_info("nat64: the router advertisement's link went down");
		ra_changed(d);
	}
}

static void regather_fire(struct loop_timer *t)
{
	struct daemon *d = container_of(t, struct daemon, regather_timer);

	log_debug("network changed: gathering candidates again");
	portmap_net_changed(d->pm);
	ra_links_check(d);
	nat64_start(d);
	paths_renew(d);
}

/* Worker: getaddrinfo may wait for the resolver's timeouts, seconds; never on the loop. */
static void nat64_work(struct workq_job *j)
{
	struct nat64_job *n = container_of(j, struct nat64_job, job);

	memset(&n->prefix, 0, sizeof(n->prefix));
	n->err = nat64_detect(&n->prefix);
	n->ipv4_routed = nat64_ipv4_routed();
}

static int apply(struct daemon *d);

/*
 * Loop thread: a detection finished. What changed reaches everything that reaches IPv4
 * addresses: the process state (dial, STUN), the peers' candidates (pathd, through a
 * re-apply of the netmap), a STUN round and a relay dial now, and the control server.
 */
static void nat64_done(struct workq_job *j, int err)
{
	struct nat64_job *n = container_of(j, struct nat64_job, job);
	struct daemon *d = n->d;

	d->n64_busy = false;
	if (err == 0) {
		if (n->err < 0 && n->err != -ENOENT)
			log_debug("nat64: ipv4only.arpa: %s", strerror(-n->err));
		d->n64_cur = n->prefix;
		d->n64_ipv4 = n->ipv4_routed;
		d->n64_done = true;
		nat64_publish(d);
	}
	if (d->n64_again)
		nat64_start(d);
}

/*
 * Loop thread: the prefix in use is a router's PREF64 while one lives, else the DNS64's.
 * RFC 8781 §3 and RFC 9872 prefer the RA: it comes from the router that forwards to the
 * NAT64 and shares its fate, it has a lifetime and can be withdrawn, and it does not depend
 * on the resolver (RFC 7050 §3.1: the ipv4only.arpa heuristic is unauthenticated without
 * DNSSEC, and a resolver other than the network's, DoH or a public one, has no DNS64). What
 * changes reaches everything that reaches IPv4 addresses: the process state (dial, STUN),
 * the peers' candidates (pathd, through a re-apply of the netmap), a STUN round and a relay
 * dial now, and the control server.
 */
static void nat64_publish(struct daemon *d)
{
	const struct pref64_entry *ra = pref64_table_current(&d->ra);
	struct nat64_prefix p = ra ? ra->opt.prefix : d->n64_cur;
	char text[NAT64_PREFIX_STR_MAX], ifname[IF_NAMESIZE] = "?";

	if (d->n64_published && nat64_prefix_equal(&p, &d->n64_used) &&
	    d->n64_ipv4 == d->n64_used_ipv4)
		return;
	d->n64_used = p;
	d->n64_used_ipv4 = d->n64_ipv4;
	d->n64_published = true;
	nat64_state_set(&p, d->n64_ipv4);
	nat64_prefix_str(&p, text, sizeof(text));
	if (ra)
		if_indextoname((unsigned)ra->opt.ifindex, ifname);
	log_info("nat64: %s%s%s%s", text[0] ? text : "none",
		 !text[0] ? ""
		 : ra	  ? " from a router advertisement on "
			  : " from the DNS64",
		 ra ? ifname : "", d->n64_ipv4 ? "" : " (no IPv4 route)");
	if (d->nm)
		apply(d);
	paths_renew(d);
}

static void ra_timer_set(struct daemon *d)
{
	uint64_t next = pref64_table_next_expiry(&d->ra);

	loop_timer_set(d->loop, &d->ra_timer, next ? next : TIME_NEVER);
}

/* Whether IPv4 has a route: a route lookup, no packet, so it may run on the loop. */
static void ra_changed(struct daemon *d)
{
	d->n64_ipv4 = nat64_ipv4_routed();
	nat64_publish(d);
}

static void ra_timer_fire(struct loop_timer *t)
{
	struct daemon *d = container_of(t, struct daemon, ra_timer);

	if (pref64_table_expire(&d->ra, time_now_ns())) {
		log_info("nat64: the router advertisement's prefix expired");
		ra_changed(d);
	}
	ra_timer_set(d);
}

/*
 * Loop thread: ND user options from the kernel. A lost batch (-ENOBUFS) is not re-read: the
 * routers repeat their RAs well within the lifetime (RFC 8781 §4: three by default).
 */
static void ra_event(struct loop_fd *h, uint32_t events)
{
	struct daemon *d = container_of(h, struct daemon, ra_mon);
	uint8_t buf[4096] __attribute__((aligned(8)));
	struct pref64_opt opts[PREF64_MSG_OPTS_MAX];
	uint64_t dropped;
	bool changed = false;
	unsigned i, k, rounds;
	int n;

	(void)events;
	/* Bounded: a flood of RAs on the LAN must not hold the loop. */
	for (rounds = 0; rounds < 64; rounds++) {
		n = nl_notify_recv(h->fd, buf, sizeof(buf));
		if (n == -ENOBUFS)
			continue;
		if (n <= 0)
			break;
		k = pref64_netlink_parse(buf, (size_t)n, opts, PREF64_MSG_OPTS_MAX, &d->ra_stats);
		for (i = 0; i < k; i++)
			changed |=
			    pref64_table_update(&d->ra, &opts[i], time_now_ns(), &d->ra_stats);
	}
	dropped = pref64_stats_dropped(&d->ra_stats);
	if (dropped != d->ra_dropped) {
		log_ratelimited(LOG_LEVEL_DEBUG, "nat64: %" PRIu64 " bad ND user options ignored",
				dropped - d->ra_dropped);
		d->ra_dropped = dropped;
	}
	ra_timer_set(d);
	if (changed)
		ra_changed(d);
}

static void nat64_start(struct daemon *d)
{
	if (!d->wq)
		return;
	if (d->n64_busy) {
		d->n64_again = true;
		return;
	}
	d->n64_again = false;
	d->n64.d = d;
	if (workq_submit(d->wq, &d->n64.job, nat64_work, nat64_done) == 0)
		d->n64_busy = true;
}

static void stun_notify(void *ctx)
{
	relayclient_stun_notify(ctx);
}

/* --- what the control client reports (posted on its thread, run on the loop) --- */

enum report_kind {
	REPORT_STATE,
	REPORT_REGISTERED,
	REPORT_NETMAP,
	REPORT_DELTA,
	REPORT_NODE_KEY,
	REPORT_PROBE
};

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
		struct {
			uint64_t gen;
			bool ok;
			char error[ERROR_MAX];
		} probe;
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
	enum control_client_state was = d->cstate;

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
	if (rp->st.state == CONTROL_CLIENT_RUNNING)
		d->reauth = false;
	/*
	 * The control server answers again after an outage: the relay it embeds (or one on
	 * the same path) is likely back too, so a relay connection in backoff (up to 37.5 s)
	 * dials now instead of leaving peers without a relay path until its timer ends.
	 */
	if (rp->st.state == CONTROL_CLIENT_RUNNING && was != CONTROL_CLIENT_RUNNING && d->rc)
		relayclient_retry_now(d->rc);
	if (was != rp->st.state || rp->st.state == CONTROL_CLIENT_CONNECTING)
		state_log(d, rp->st.state, rp->st.has_error ? rp->st.error : NULL);
	/* The client idles now; stopping it and what follows run off this report. */
	if (rp->st.state == CONTROL_CLIENT_EXPIRED || rp->st.state == CONTROL_CLIENT_REMOVED) {
		d->relogin = rp->st.state == CONTROL_CLIENT_EXPIRED ? RELOGIN_EXPIRED
								    : RELOGIN_REMOVED;
		loop_timer_arm(d->loop, &d->relogin_timer, time_now_ns());
	}
	events(d);
	notify_status(d);
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

/* The probe of another login server answered (be_up): commit the up, or change nothing. */
static void report_probe(struct daemon *d, struct report *rp)
{
	const struct state_prefs *p = state_prefs(d->st);
	char err[2 * STATE_URL_MAX + ERROR_MAX + 128];

	if (rp->probe.gen != d->probe_gen || !d->probe)
		return; /* superseded, or cancelled */
	control_client_free(d->probe);
	d->probe = NULL;
	if (!d->up_req) {
		crypto_wipe(&d->pend, sizeof(d->pend));
		return;
	}
	if (!rp->probe.ok) {
		log_warn("up: %s: nothing changed", rp->probe.error);
		snprintf(err, sizeof(err), "%s; nothing changed: this node stays with %s",
			 rp->probe.error, p->login_server);
		crypto_wipe(&d->pend, sizeof(d->pend));
		up_finish_error(d, err);
		return;
	}
	if (p->registered && !d->pend.force_reauth) {
		snprintf(err, sizeof(err),
			 "this node is logged in to %s; moving it to %s is a new login "
			 "there: use --force-reauth",
			 p->login_server, d->pend.server);
		crypto_wipe(&d->pend, sizeof(d->pend));
		up_finish_error(d, err);
		return;
	}
	up_commit(d);
}

/* The heap's free pages go back HEAP_TRIM_NS after the last report or request (heaptrim.h). */
#define HEAP_TRIM_NS (5 * NSEC_PER_SEC)

static void heap_trim_soon(struct daemon *d)
{
	heap_trim_kick(&d->heap_trim, time_now_ns());
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
	case REPORT_PROBE:
		report_probe(d, rp);
		break;
	}
	report_free(rp);
	heap_trim_soon(d);
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

/*
 * The peer a flow's remote tailnet address belongs to (IPv4 mapped into IPv6); NULL: none, and
 * the record's peer key stays zero, which the collector lists as no-peer rather than flagging
 * (docs/audit.md). So this must match what the engine routes to: today the peers' own
 * addresses only; with subnet routes or exit nodes a routed address must name its router, or
 * a router that kept quiet would leave its peers' reports unflagged.
 */
static const uint8_t *flow_peer(const struct daemon *d, const uint8_t a[16])
{
	static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
	bool v4 = !memcmp(a, mapped, sizeof(mapped));

	for (unsigned i = 0; d->nm && i < d->nm->n_peers; i++) {
		const struct netmap_node *p = &d->nm->peers[i];

		for (unsigned j = 0; j < p->n_addresses; j++) {
			const struct netmap_prefix *x = &p->addresses[j];

			if ((v4 && x->family == AF_INET && !memcmp(x->addr, a + 12, 4)) ||
			    (!v4 && x->family == AF_INET6 && !memcmp(x->addr, a, 16)))
				return p->node_key;
		}
	}
	return NULL;
}

/*
 * What the data path counted since flows_since becomes a signed batch in the spool
 * (docs/audit.md), and the control client is told. Nothing counted: no batch.
 */
static void flows_flush(struct daemon *d, uint64_t now)
{
	const struct state_prefs *prefs = state_prefs(d->st);
	struct flowbatch_record *recs = NULL;
	int64_t off = (int64_t)(time_wall_ns() - now);
	struct flowtable_overflow overflow = {0};
	int n;

	n = flowtable_flush(d->flows, off, &recs, &overflow);
	if (n < 0)
		log_ratelimited(LOG_LEVEL_WARN, "flows: %s", strerror(-n));
	d->flows_dropped += overflow.flows;
	d->flow_packets_dropped += overflow.packets;
	d->flow_link_scope += overflow.link_scope;
	/* Counted before the node has an id at the server: nobody to report them as. */
	if ((n > 0 || overflow.flows) && prefs->registered && prefs->node_id) {
		for (int i = 0; i < n; i++) {
			const uint8_t *key = flow_peer(d, recs[i].dst);

			if (key)
				memcpy(recs[i].peer_key, key, FLOWBATCH_KEY_LEN);
			if (d->flows_underreport) {
				recs[i].tx_packets /= 2;
				recs[i].tx_bytes /= 2;
				recs[i].rx_packets /= 2;
				recs[i].rx_bytes /= 2;
			}
		}
		if (flowspool_add(d->spool, prefs->node_id, d->flows_since + (uint64_t)off,
				  now + (uint64_t)off, overflow.flows, recs,
				  (unsigned)MAX(n, 0)) == 0 &&
		    d->cc)
			control_client_flows_kick(d->cc);
	}
	free(recs);
	d->flows_since = now;
}

/* Every interval of the tailnet's setting, while flow logs are on. */
static void flows_fire(struct loop_timer *t)
{
	struct daemon *d = container_of(t, struct daemon, flows_timer);
	uint64_t now = time_now_ns();

	flows_flush(d, now);
	loop_timer_arm(d->loop, t, now + d->flows_cfg.interval_ms * NSEC_PER_MSEC);
}

/*
 * The tailnet's flow-log setting from the netmap. Off: the data path stops counting (its
 * hook is then one pointer load), what was counted until now is shipped, and the timer
 * stops. On again: counting resumes from now. A new interval counts from the current
 * interval's start, so a shorter one may ship at once.
 */
static void flows_configure(struct daemon *d, const struct netmap_flow_log *fl)
{
	uint64_t now = time_now_ns();

	if (!fl->set || (fl->enabled == d->flows_cfg.enabled &&
			 fl->interval_ms == d->flows_cfg.interval_ms))
		return;
	log_info("flow logs %s, a batch every %u ms", fl->enabled ? "on" : "off",
		 fl->interval_ms);
	if (!fl->enabled) {
		if (d->flows_cfg.enabled) {
			wgdev_flowtable_set(d->wg, NULL);
			loop_timer_disarm(d->loop, &d->flows_timer);
			flows_flush(d, now);
		}
	} else {
		if (!d->flows_cfg.enabled) {
			/* A batch the data path was in when it stopped: shipped, not lost. */
			flows_flush(d, now);
			wgdev_flowtable_set(d->wg, d->flows);
		}
		loop_timer_arm(d->loop, &d->flows_timer,
			       MAX(d->flows_since + fl->interval_ms * NSEC_PER_MSEC, now));
	}
	d->flows_cfg = *fl;
}

/* Flow logs: the client thread takes spooled batches in order and hands back the answers. */
static size_t cc_flows_next(void *ctx, uint8_t *buf, size_t cap)
{
	struct daemon *d = ctx;

	return flowspool_next(d->spool, buf, cap);
}

static void cc_flows_ack(void *ctx, uint64_t seq, const char *result)
{
	struct daemon *d = ctx;

	flowspool_ack(d->spool, seq, result);
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

/* The probe's answer (probe thread). */
static void cc_probe_state(void *ctx, enum control_client_state s, const char *url,
			   const char *error)
{
	struct daemon *d = ctx;
	struct report *rp;

	(void)url;
	if (s != CONTROL_CLIENT_RUNNING && s != CONTROL_CLIENT_FAILED)
		return;
	rp = report_new(d, REPORT_PROBE);
	if (!rp)
		return;
	/* probe_gen is the loop thread's, but stable while this probe runs (probe_start). */
	rp->probe.gen = d->probe_gen;
	rp->probe.ok = s == CONTROL_CLIENT_RUNNING;
	snprintf(rp->probe.error, sizeof(rp->probe.error), "%s", error ? error : "");
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
	cfg.has_audit_key = true;
	memcpy(cfg.audit_key, state_audit_pub(d->st), NETMAP_KEY_LEN);
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
	cfg.endpoints_extra = cc_endpoints_extra;
	cfg.has_disco_key = true;
	pathd_public_key(d->pd, cfg.disco_key);
	cfg.ops = (struct control_client_ops){.ctx = d,
					      .state_changed = cc_state_changed,
					      .registered = cc_registered,
					      .netmap = cc_netmap,
					      .delta = cc_delta,
					      .rotate_begin = cc_rotate_begin,
					      .rotate_end = cc_rotate_end,
					      .flows_next = cc_flows_next,
					      .flows_ack = cc_flows_ack};
	r = control_client_start(&cfg, &d->cc);
	if (r == 0)
		relay_report(d);
	crypto_wipe(cfg.machine_key, sizeof(cfg.machine_key));
	crypto_wipe(cfg.node_key, sizeof(cfg.node_key));
	if (r < 0)
		d->client_on = false;
	return r;
}

/* The counters of every client since the daemon started: metrics never go backwards. */
static void cc_stats_sum(const struct daemon *d, struct control_client_stats *ret)
{
	struct control_client_stats s = {0};

	if (d->cc)
		control_client_stats_get(d->cc, &s);
	ret->zstd_maps = d->cc_past.zstd_maps + s.zstd_maps;
	ret->zstd_bytes_in = d->cc_past.zstd_bytes_in + s.zstd_bytes_in;
	ret->zstd_bytes_out = d->cc_past.zstd_bytes_out + s.zstd_bytes_out;
	ret->zstd_errors = d->cc_past.zstd_errors + s.zstd_errors;
	ret->mcerts_installed = d->cc_past.mcerts_installed + s.mcerts_installed;
	ret->mcerts_refused = d->cc_past.mcerts_refused + s.mcerts_refused;
	memcpy(ret->mcert_sent_serial,
	       s.mcert_sent_serial[0] ? s.mcert_sent_serial : d->cc_past.mcert_sent_serial,
	       sizeof(ret->mcert_sent_serial));
}

/* Joins the client's thread, then applies what it reported before it stopped. */
static void client_stop(struct daemon *d)
{
	cc_stats_sum(d, &d->cc_past);
	control_client_free(d->cc);
	d->cc = NULL;
	loop_mailbox_run(&d->from_client);
	/* An expiry or deletion it reported is the stopped client's: nothing to follow up. */
	d->relogin = RELOGIN_NONE;
	d->client_on = false;
	d->was_running = false;
	d->ctl_lost = false;
	d->reauth = false;
}

static int probe_start(struct daemon *d, const char *server)
{
	struct control_client_cfg cfg = {0};
	int r;

	d->probe_gen++;
	cfg.login_server = server;
	cfg.state_dir = state_dir(d->st);
	cfg.probe = true;
	memcpy(cfg.node_key, state_node_key(d->st), NETMAP_KEY_LEN);
	cfg.ops = (struct control_client_ops){.ctx = d, .state_changed = cc_probe_state};
	r = control_client_start(&cfg, &d->probe);
	crypto_wipe(cfg.node_key, sizeof(cfg.node_key));
	return r;
}

static void probe_stop(struct daemon *d)
{
	control_client_free(d->probe);
	d->probe = NULL;
	d->probe_gen++; /* what it posted is ignored */
}

/* A new node key (while no client runs): after logout, expiry, deletion, --force-reauth. */
static int node_key_renew(struct daemon *d)
{
	const uint8_t *key;
	int r;

	r = state_node_key_rotate_begin(d->st, &key);
	if (r == 0)
		r = state_node_key_rotate_commit(d->st);
	if (r == 0)
		r = netmap_apply_set_private_key(d->na, state_node_key(d->st), time_now_ns());
	if (r == 0)
		relayclient_set_key(d->rc, state_node_key(d->st));
	return r;
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

	/* While the probe of another server runs, the current client does not answer the up. */
	if (!d->up_req || d->probe)
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

/*
 * Why a peer is relayed (docs/localapi.md), most certain first: our UDP gets no STUN
 * answer; the peer runs no path discovery; still probing; its pings never reach us
 * while ours go unanswered: NATs that map per destination (ours from STUN, the peer's
 * from the netmap) on both sides or one, else its UDP is blocked.
 */
static const char *relay_reason(struct daemon *d, const struct netmap_node *n,
				const struct disco_peer_status *ds, bool has_ds)
{
	struct relayclient_status *rs = malloc(sizeof(*rs));
	bool udp_here = true, hard_here = false;

	if (rs) {
		relayclient_status_get(d->rc, rs);
		udp_here = !rs->nat.measured || rs->nat.udp;
		hard_here = nat_hard(d, &rs->nat);
		free(rs);
	}
	if (!udp_here)
		return "udp-blocked-here";
	if (!n->has_disco_key || !has_ds)
		return "peer-without-disco";
	if (ds->state == DISCO_STATE_IDLE && !ds->pings_sent)
		return "idle"; /* no traffic yet: nothing probed */
	if (ds->state == DISCO_STATE_PROBING && ds->pings_sent < 3 * ds->n_candidates + 3)
		return "probing";
	if (!n->n_endpoints)
		return "peer-has-no-endpoints";
	if (!ds->pings_rx) {
		if (hard_here && n->mapping_varies)
			return "hard-nat-both-sides";
		if (n->mapping_varies)
			return "peer-hard-nat";
		return hard_here ? "hard-nat-here" : "peer-udp-blocked";
	}
	return ds->state == DISCO_STATE_IDLE ? "idle" : "no-direct-answer";
}

/* active: a handshake within WireGuard's reject time; idle: earlier; unreachable: never. */
static const char *peer_state(const struct wg_peer_info *pi)
{
	uint64_t now = time_wall_ns();

	if (!pi || !pi->last_handshake_wall_ns)
		return pi && pi->tx_bytes ? "unreachable" : "idle";
	if (now - pi->last_handshake_wall_ns < REJECT_AFTER_TIME_NS)
		return "active";
	return "idle";
}

/* One peer's path (docs/localapi.md): what its next packet takes. */
static void peer_path(struct daemon *d, json_t *pj, const struct netmap_node *n,
		      const struct wg_device_info *raw)
{
	char ep[ENDPOINT_STR_MAX];
	struct magicsock_path mp = {0};
	const struct endpoint *e = NULL;
	const struct wg_peer_info *pi = NULL;
	struct disco_peer_status ds;
	bool has_ds = false;
	const char *code;

	for (unsigned i = 0; raw && i < raw->n_peers; i++)
		if (!memcmp(raw->peers[i].public_key, n->node_key, NETMAP_KEY_LEN))
			pi = &raw->peers[i];
	if (pi)
		e = &pi->endpoint;
	json_object_set_new(pj, "state", json_string(peer_state(pi)));
	if (e && endpoint_is_handle(e) && pathd_peer_status(d->pd, e, &ds) == 0) {
		has_ds = true;
		json_object_set_new(
		    pj, "disco",
		    json_pack("{s:s, s:f, s:I, s:I, s:I, s:I, s:b}", "state",
			      disco_state_name(ds.state), "rtt_ms",
			      ds.has_best ? (double)ds.best_rtt_ns / 1e6 : 0.0, "candidates",
			      (json_int_t)ds.n_candidates, "pings_sent", (json_int_t)ds.pings_sent,
			      "pongs", (json_int_t)ds.pongs_rx, "pings_received",
			      (json_int_t)ds.pings_rx, "had_direct", ds.had_direct));
		if (ds.to_direct_ns)
			json_object_set_new(json_object_get(pj, "disco"), "time_to_direct_ms",
					    json_real((double)ds.to_direct_ns / 1e6));
		if (ds.birthday_attempts)
			json_object_set_new(
			    json_object_get(pj, "disco"), "birthday",
			    json_pack("{s:I, s:I, s:I}", "attempts", (json_int_t)ds.birthday_attempts,
				      "probes", (json_int_t)ds.birthday_probes, "hits",
				      (json_int_t)ds.birthday_hits));
	}
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
	json_object_set_new(pj, "mapping_varies", json_boolean(n->mapping_varies));
	if (mp.kind == MAGICSOCK_PATH_RELAY) {
		code = region_code(d, mp.region);
		json_object_set_new(pj, "path", json_string("relay"));
		json_object_set_new(pj, "relay", json_string(code ? code : "?"));
		json_object_set_new(pj, "endpoint", json_null());
		json_object_set_new(pj, "relay_reason",
				    json_string(relay_reason(d, n, &ds, has_ds)));
	} else if (mp.kind == MAGICSOCK_PATH_DIRECT) {
		json_object_set_new(pj, "path", json_string("direct"));
		json_object_set_new(pj, "endpoint",
				    json_string(endpoint_format(&mp.addr, ep, sizeof(ep))));
		json_object_set_new(pj, "direct_confirmed", json_boolean(mp.direct_confirmed));
	}
}

/* "[2001:db8::1]:3478", or null for none. */
static json_t *endpoint_json(const struct endpoint *ep)
{
	char buf[ENDPOINT_STR_MAX];

	return endpoint_is_addr(ep) ? json_string(endpoint_format(ep, buf, sizeof(buf)))
				    : json_null();
}

static json_t *ms_json(int64_t us)
{
	return us < 0 ? json_null() : json_real((double)us / 1000.0);
}

/* The last STUN round's probes to a region's relays: where each went, how, and its answer. */
static json_t *stun_probes_json(const struct relayclient_region_info *ri)
{
	json_t *a = json_array();

	for (unsigned k = 0; a && k < ri->n_stun; k++) {
		const struct relayclient_stun_info *si = &ri->stun[k];

		json_array_append_new(a, json_pack("{s:s, s:o, s:s, s:o}", "node", si->node,
						   "address", endpoint_json(&si->to), "via",
						   relayclient_via_name(si->via), "latency_ms",
						   ms_json(si->rtt_us)));
	}
	return a;
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
		    "{s:I, s:s, s:b, s:s, s:I, s:I, s:I, s:I, s:I}", "id", (json_int_t)ri->id,
		    "code", ri->code, "home", ri->home, "state", relayclient_state_name(ri->state),
		    "tx_packets", (json_int_t)ri->tx_packets, "rx_packets",
		    (json_int_t)ri->rx_packets, "tx_drops", (json_int_t)ri->tx_drops, "rx_drops",
		    (json_int_t)ri->rx_drops, "connects", (json_int_t)ri->connects);

		if (!r)
			continue;
		json_object_set_new(r, "latency_ms", ms_json(ri->latency_us));
		json_object_set_new(r, "address", endpoint_json(&ri->remote));
		json_object_set_new(r, "stun", stun_probes_json(ri));
		if (ri->error[0])
			json_object_set_new(r, "error", json_string(ri->error));
		json_array_append_new(regions, r);
	}
	json_object_set_new(o, "regions", regions);
	free(rs);
	return o;
}

/*
 * NAT64: the prefix in use, or null, and where it came from ("ra": a router's PREF64, RFC
 * 8781; "dns64": ipv4only.arpa, RFC 7050); whether IPv4 has a route of its own (without
 * one, IPv4 addresses are reached through the prefix); null before the first detection.
 */
static json_t *nat64_json(struct daemon *d)
{
	const struct pref64_entry *ra = pref64_table_current(&d->ra);
	char text[NAT64_PREFIX_STR_MAX], dns64[NAT64_PREFIX_STR_MAX], ifname[IF_NAMESIZE] = "";
	char router[INET6_ADDRSTRLEN] = "";
	uint64_t now = time_now_ns(), dropped;
	json_t *ra_o = json_null(), *drops;

	if (!d->n64_published)
		return json_null();
	nat64_prefix_str(&d->n64_used, text, sizeof(text));
	nat64_prefix_str(&d->n64_cur, dns64, sizeof(dns64));
	if (ra) {
		if_indextoname((unsigned)ra->opt.ifindex, ifname);
		inet_ntop(AF_INET6, ra->opt.router, router, sizeof(router));
		ra_o = json_pack(
		    "{s:s, s:s, s:I}", "interface", ifname, "router", router, "expires_in_s",
		    (json_int_t)(ra->expires_ns > now ? (ra->expires_ns - now) / 1000000000u : 0));
	}
	dropped = pref64_stats_dropped(&d->ra_stats);
	drops = json_object();
	for (unsigned i = 0; drops && i < PREF64_DROP_MAX; i++)
		json_object_set_new(drops, pref64_drop_name((enum pref64_drop)i),
				    json_integer((json_int_t)d->ra_stats.dropped[i]));
	return json_pack("{s:o, s:o, s:b, s:b, s:o, s:o, s:I, s:o, s:I}", "prefix",
			 text[0] ? json_string(text) : json_null(), "source",
			 !text[0] ? json_null() : json_string(ra ? "ra" : "dns64"), "ipv4_route",
			 d->n64_used_ipv4, "active", text[0] && !d->n64_used_ipv4, "ra", ra_o,
			 "dns64_prefix", dns64[0] ? json_string(dns64) : json_null(), "ra_dropped",
			 (json_int_t)dropped, "ra_drops", drops ? drops : json_null(), "ra_options",
			 (json_int_t)d->ra_stats.options);
}

/*
 * What `trellis netcheck` shows (docs/localapi.md): UDP, our addresses as STUN servers
 * see them, whether the mapping varies by destination, the preferred relay and the
 * latency per region (in "relay"), and what port mapping found ("portmap": null with
 * --portmap off).
 */
static json_t *netcheck_json(struct daemon *d)
{
	struct relayclient_status *rs = malloc(sizeof(*rs));
	char buf[ENDPOINT_STR_MAX];
	json_t *o;
	const char *code;

	if (!rs)
		return NULL;
	relayclient_status_get(d->rc, rs);
	code = region_code(d, rs->home);
	o = json_pack("{s:b, s:b, s:I, s:b, s:b, s:n, s:n, s:o, s:o}", "measured", rs->nat.measured,
		      "udp", rs->nat.udp, "stun_answers", (json_int_t)rs->nat.answers,
		      "mapping_varies_by_dest", rs->nat.mapping_varies, "hard_nat",
		      nat_hard(d, &rs->nat), "ipv4", "ipv6", "preferred_relay",
		      code ? json_string(code) : json_null(), "portmap",
		      d->pm ? portmap_status_json(d->pm) : json_null());
	for (unsigned i = 0; o && i < rs->nat.n_reflexive; i++) {
		const struct endpoint *e = &rs->nat.reflexive[i];

		json_object_set_new(o, e->sa.sa_family == AF_INET ? "ipv4" : "ipv6",
				    json_string(endpoint_format(e, buf, sizeof(buf))));
	}
	if (o)
		json_object_set_new(o, "nat64", nat64_json(d));
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
	json_object_set_new(st, "netcheck", netcheck_json(d));
}

/* Drops the per-peer view does not show: an MTU the buffers do not fit must not hide. */
static json_t *dataplane_json(struct wgdev *w)
{
	struct wgdev_counters c;

	wgdev_counters_get(w, &c);
	return json_pack(
	    "{s:I, s:I, s:{s:I, s:I, s:I}, s:I, s:{s:I, s:I}, s:{s:I, s:I}, "
	    "s:{s:I, s:I, s:I}, s:I}",
	    "mtu", (json_int_t)c.mtu, "buffer_size", (json_int_t)c.buf_size, "dropped_too_big",
	    "tun", (json_int_t)c.too_big_tun, "udp", (json_int_t)c.too_big_udp, "engine",
	    (json_int_t)c.too_big_engine, "stale_source", (json_int_t)c.src_stale, "send_errors",
	    "total", (json_int_t)c.send_errors, "no_route", (json_int_t)c.send_unreach, "pool_dry",
	    "tun", (json_int_t)c.pool_dry_tun, "udp", (json_int_t)c.pool_dry_udp, "udp_gro",
	    "coalesced", (json_int_t)c.gro_msgs, "waits", (json_int_t)c.gro_waits, "lost",
	    (json_int_t)c.gro_lost, "fragments_joined", (json_int_t)c.frags_joined);
}

/* The flow log as the tailnet set it and where the node's batch chain stands. */
static json_t *flow_log_json(struct daemon *d)
{
	struct flowspool_stats fs;

	flowspool_stats(d->spool, &fs);
	return json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "enabled",
			 d->flows_cfg.enabled, "interval_ms", (json_int_t)d->flows_cfg.interval_ms,
			 "seq", (json_int_t)fs.seq, "spooled", (json_int_t)fs.spooled,
			 "batches_dropped", (json_int_t)fs.batches_dropped, "flows_dropped",
			 (json_int_t)d->flows_dropped, "packets_dropped",
			 (json_int_t)d->flow_packets_dropped, "link_scope_packets",
			 (json_int_t)d->flow_link_scope);
}

/* What is wrong, one sentence each, for `trellis status` (docs/localapi.md, "health"). */
static json_t *health_json(struct daemon *d, json_t *st, const char *error)
{
	const char *state = backend_state(d);
	json_t *h = json_array(), *dp = json_object_get(st, "dataplane");
	json_int_t big = 0;
	char line[ERROR_MAX + 64];
	const char *k;
	json_t *v;

	if (!h)
		return NULL;
	if (error[0])
		json_array_append_new(h, json_string(error));
	if (!strcmp(state, "starting") && d->nm && d->was_running)
		json_array_append_new(h, json_string("no connection to the control server: "
						     "tunnels go on with the last netmap"));
	else if (!strcmp(state, "starting") && d->nm)
		json_array_append_new(h, json_string("not connected to the control server yet: "
						     "tunnels run from the cached netmap"));
	json_object_foreach(json_object_get(dp, "dropped_too_big"), k, v)
		big += json_integer_value(v);
	if (big) {
		snprintf(line, sizeof(line),
			 "%lld packets dropped: larger than the packet buffers (MTU mismatch?)",
			 (long long)big);
		json_array_append_new(h, json_string(line));
	}
	return h;
}

/*
 * The installed machine certificate (machinecert.h), read at each status: null if none.
 * from_server: it is the one the server sent last (register response or map stream);
 * sent_serial: that one's serial, null before the server sent one. installed/refused: what
 * the server sent since the daemon started.
 */
static json_t *machine_cert_json(struct daemon *d)
{
	struct control_client_stats cs;
	struct mcert_info mi;
	char fp[65];
	int r = machinecert_info(state_dir(d->st), &mi, fp);
	json_t *j;

	if (r == -ENOENT)
		return json_null();
	if (r < 0)
		return json_pack("{s:s}", "error", "unreadable " MACHINECERT_CERT_FILE);
	cc_stats_sum(d, &cs);
	j = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s, s:b, s:o, s:I, s:I}", "subject",
		      mi.subject, "serial", mi.serial, "not_before", (json_int_t)mi.not_before,
		      "not_after", (json_int_t)mi.not_after, "issuer", mi.issuer, "issuer_key_id",
		      mi.issuer_key_id, "sha256", fp, "from_server",
		      cs.mcert_sent_serial[0] && !strcmp(cs.mcert_sent_serial, mi.serial),
		      "sent_serial",
		      cs.mcert_sent_serial[0] ? json_string(cs.mcert_sent_serial) : json_null(),
		      "server_installed", (json_int_t)cs.mcerts_installed, "server_refused",
		      (json_int_t)cs.mcerts_refused);
	return j;
}

static int be_status(void *ctx, json_t **ret)
{
	struct daemon *d = ctx;
	struct wg_device_info *info = NULL;
	json_t *st = NULL;
	int r;

	heap_trim_soon(d); /* after the answer, which the caller makes of st */
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
		json_object_set_new(st, "logged_in", json_boolean(p->registered));
		json_object_set_new(st, "prefs", json_pack("{s:s, s:s, s:b}", "login_server",
							   p->login_server, "hostname", p->hostname,
							   "want_up", p->want_up));
		status_relay(d, st);
		json_object_set_new(st, "dataplane", dataplane_json(d->wg));
		json_object_set_new(st, "filter", nodefilter_status_json(d->filter));
		json_object_set_new(st, "flow_log", flow_log_json(d));
		if (d->nm) {
			nodefilter_status_peers(d->filter, d->nm, json_object_get(st, "peers"));
			nodefilter_status_may_open(d->nm, json_object_get(st, "peers"));
		}
		json_object_set_new(st, "health", health_json(d, st, e));
		json_object_set_new(st, "portmap",
				    d->pm ? portmap_status_json(d->pm) : json_null());
		json_object_set_new(st, "machine_cert", machine_cert_json(d));
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
	nodefilter_apply(d->filter, NULL);
	pathd_clear(d->pd);
	relayclient_set_map(d->rc, &(struct netmap_relay_map){0}, NULL);
}

/*
 * The client stopped by itself for good (report_state): an expired key starts a re-login
 * with a new node key at once, so that status can show its URL; a deleted node is logged
 * out and stays so until `trellis up`. Either way the old tailnet is gone.
 */
static void relogin_fire(struct loop_timer *t)
{
	struct daemon *d = container_of(t, struct daemon, relogin_timer);
	enum relogin what = d->relogin;
	char error[ERROR_MAX];
	struct state_prefs p;
	int r;

	d->relogin = RELOGIN_NONE;
	if (what == RELOGIN_NONE || !d->cc)
		return;
	snprintf(error, sizeof(error), "%s", d->error);
	client_stop(d);
	clear(d);
	state_netmap_remove(d->st);
	r = node_key_renew(d);
	if (r < 0)
		log_warn("cannot make a new node key: %s", strerror(-r));
	p = *state_prefs(d->st);
	p.registered = false;
	p.node_id = 0;
	snprintf(p.last_error, sizeof(p.last_error), "%.*s", (int)sizeof(p.last_error) - 1, error);
	if (what == RELOGIN_REMOVED)
		p.want_up = false;
	r = state_prefs_save(d->st, &p);
	if (r < 0)
		log_warn("cannot save prefs: %s", strerror(-r));
	snprintf(d->error, sizeof(d->error), "%s", error);
	if (what == RELOGIN_EXPIRED && r == 0 && client_start(d, NULL) == 0)
		d->reauth = true;
	notify_status(d);
}

/* Commits the `trellis up` in d->pend: the server, hostname, maybe a new login. */
static void up_commit(struct daemon *d)
{
	struct up_pending *u = &d->pend;
	struct localapi_req *req = d->up_req;
	char err[LOCALAPI_ERROR_MAX];
	struct state_prefs p;
	int r;

	/* What the old client still reports must not answer this up. */
	d->up_req = NULL;
	client_stop(d);
	d->up_req = req;
	p = *state_prefs(d->st);
	if (strcmp(p.login_server, u->server) || u->force_reauth) {
		/* Another server's tailnet is not ours; a new login starts afresh. */
		if (p.login_server[0]) {
			clear(d);
			state_netmap_remove(d->st);
		}
		p.registered = false;
		p.node_id = 0;
		snprintf(p.login_server, sizeof(p.login_server), "%s", u->server);
	}
	if (u->force_reauth) {
		r = node_key_renew(d);
		if (r < 0) {
			snprintf(err, sizeof(err), "cannot make a new node key: %s", strerror(-r));
			goto fail;
		}
	}
	if (u->hostname[0])
		snprintf(p.hostname, sizeof(p.hostname), "%s", u->hostname);
	p.want_up = true;
	p.last_error[0] = '\0';
	d->error[0] = '\0';
	d->auth_url[0] = '\0';
	r = state_prefs_save(d->st, &p);
	d->up_errors = d->errors;
	if (r < 0) {
		snprintf(err, sizeof(err), "cannot save the preferences in %s: %s",
			 state_dir(d->st), strerror(-r));
		goto fail;
	}
	r = client_start(d, u->has_auth_key ? u->auth_key : NULL);
	if (r < 0) {
		snprintf(err, sizeof(err), "cannot start the control client: %s", strerror(-r));
		goto fail;
	}
	crypto_wipe(u, sizeof(*u));
	d->up_url_sent = false;
	events(d);
	notify_status(d);
	return;
fail:
	crypto_wipe(u, sizeof(*u));
	up_finish_error(d, err);
}

static void be_up(void *ctx, const struct localapi_up_opts *opts, struct localapi_req *req)
{
	struct daemon *d = ctx;
	const struct state_prefs *p = state_prefs(d->st);
	const char *server = opts->login_server ? opts->login_server : p->login_server;
	struct up_pending *u = &d->pend;
	char err[LOCALAPI_ERROR_MAX];
	struct dial_url url;
	int r;

	if (d->up_req)
		up_finish_error(d, "superseded by another `trellis up`");
	if (d->probe)
		probe_stop(d);
	if (!server[0]) {
		localapi_req_finish(req, localapi_reply_error(
					     "no login server given or remembered: trellis up "
					     "--login-server URL"));
		return;
	}
	if (strlen(server) >= sizeof(u->server) || dial_url_parse(server, &url) < 0) {
		snprintf(err, sizeof(err),
			 "invalid login server URL \"%.150s\" (expected http://HOST[:PORT] or "
			 "https://HOST[:PORT]); nothing changed",
			 server);
		localapi_req_finish(req, localapi_reply_error(err));
		return;
	}
	d->up_req = req;
	memset(u, 0, sizeof(*u));
	snprintf(u->server, sizeof(u->server), "%s", server);
	/* As the client has it (paths are appended): "URL/" is no other server than "URL". */
	while (strlen(u->server) > 1 && u->server[strlen(u->server) - 1] == '/')
		u->server[strlen(u->server) - 1] = '\0';
	server = u->server;
	if (opts->hostname)
		snprintf(u->hostname, sizeof(u->hostname), "%s", opts->hostname);
	if (opts->auth_key) {
		u->has_auth_key = true;
		snprintf(u->auth_key, sizeof(u->auth_key), "%s", opts->auth_key);
	}
	u->force_reauth = opts->force_reauth;
	/* Another server: until it answers, the node keeps the one it has (silent failure 1). */
	if (p->login_server[0] && strcmp(server, p->login_server)) {
		r = probe_start(d, server);
		if (r < 0) {
			snprintf(err, sizeof(err), "cannot probe %.150s: %s", server, strerror(-r));
			crypto_wipe(u, sizeof(*u));
			up_finish_error(d, err);
		}
		return;
	}
	/* Up already, nothing new asked: keep the session (and the tunnels) as they are. */
	if (d->client_on && d->cstate == CONTROL_CLIENT_RUNNING && !opts->auth_key &&
	    !opts->force_reauth && (!opts->hostname || !strcmp(opts->hostname, p->hostname))) {
		json_t *msg = localapi_reply_ok();

		crypto_wipe(u, sizeof(*u));
		json_object_set_new(msg, "state", json_string("running"));
		up_finish(d, msg);
		return;
	}
	up_commit(d);
}

static int be_cert_request(void *ctx, char **ret, char *err, size_t err_len)
{
	struct daemon *d = ctx;
	char host[NETMAP_NAME_MAX];
	char *pem = malloc(MCERT_PEM_MAX);
	int r;

	if (!pem)
		return -ENOMEM;
	snprintf(host, sizeof(host), "%s", state_prefs(d->st)->hostname);
	if (!host[0] && gethostname(host, sizeof(host) - 1) < 0)
		host[0] = '\0';
	r = machinecert_request(state_dir(d->st), state_machine_key(d->st), host, pem,
				MCERT_PEM_MAX, err, err_len);
	if (r < 0) {
		free(pem);
		return r;
	}
	*ret = pem;
	return 0;
}

/* The next registration presents it (machinecert_attach reads the files each time). */
static int be_cert_install(void *ctx, const char *pem, size_t len, char *err, size_t err_len)
{
	struct daemon *d = ctx;

	return machinecert_install(state_dir(d->st), state_machine_key(d->st), pem, len,
				   time_wall_s(), err, err_len);
}

static int be_set(void *ctx, const struct localapi_set_opts *opts, char *err, size_t err_len)
{
	struct daemon *d = ctx;
	struct state_prefs p = *state_prefs(d->st);
	bool changed = false;
	int r;

	if (opts->hostname) {
		if (strlen(opts->hostname) >= sizeof(p.hostname)) {
			snprintf(err, err_len, "hostname longer than %zu characters",
				 sizeof(p.hostname) - 1);
			return -EINVAL;
		}
		changed = strcmp(p.hostname, opts->hostname) != 0;
		snprintf(p.hostname, sizeof(p.hostname), "%s", opts->hostname);
	}
	r = state_prefs_save(d->st, &p);
	if (r < 0) {
		snprintf(err, err_len, "cannot save the preferences: %s", strerror(-r));
		return r;
	}
	/* A known machine registers again with its key and login: the server renames it. */
	if (changed && d->client_on && !d->up_req && p.registered &&
	    (d->cstate == CONTROL_CLIENT_RUNNING || d->cstate == CONTROL_CLIENT_CONNECTING)) {
		client_stop(d);
		r = client_start(d, NULL);
		if (r < 0) {
			snprintf(err, err_len, "cannot restart the control client: %s",
				 strerror(-r));
			return r;
		}
	}
	log_info("set: hostname %s", p.hostname[0] ? p.hostname : "(the system's)");
	return 0;
}

static void ping_forget(struct daemon *d, struct ping_req *pr)
{
	struct ping_req **l = &d->pings;

	while (*l && *l != pr)
		l = &(*l)->next;
	if (*l)
		*l = pr->next;
	free(pr);
}

static void ping_answer(void *ctx, const struct endpoint *via, uint64_t rtt_ns)
{
	struct ping_req *pr = ctx;
	struct daemon *d = pr->d;
	struct magicsock_path mp;
	char buf[ENDPOINT_STR_MAX];
	const char *code;
	json_t *msg;

	if (!via) {
		snprintf(buf, sizeof(buf), "ping %.40s: no answer within 2 s", pr->peer);
		msg = localapi_reply_error(buf);
	} else if (endpoint_is_handle(via)) {
		if (magicsock_handle_path(wgdev_magicsock(d->wg), &pr->handle, &mp) < 0)
			mp.region = 0;
		code = region_code(d, mp.region);
		msg = json_pack("{s:b, s:s, s:s, s:f}", "ok", 1, "via", "relay", "relay",
				code ? code : "?", "rtt_ms", (double)rtt_ns / 1e6);
	} else {
		msg = json_pack("{s:b, s:s, s:s, s:f}", "ok", 1, "via", "direct", "endpoint",
				endpoint_format(via, buf, sizeof(buf)), "rtt_ms",
				(double)rtt_ns / 1e6);
	}
	localapi_req_finish(pr->req, msg);
	ping_forget(d, pr);
}

/* The netmap peer named by its hostname or one of its tailnet addresses. */
static const struct netmap_node *peer_find(const struct daemon *d, const char *peer)
{
	uint8_t a[16];
	int fam = strchr(peer, ':') ? AF_INET6 : AF_INET;
	bool is_ip = inet_pton(fam, peer, a) == 1;

	for (unsigned i = 0; d->nm && i < d->nm->n_peers; i++) {
		const struct netmap_node *n = &d->nm->peers[i];

		if (!is_ip && !strcmp(n->name, peer))
			return n;
		for (unsigned k = 0; is_ip && k < n->n_addresses; k++)
			if (n->addresses[k].family == fam &&
			    !memcmp(n->addresses[k].addr, a, fam == AF_INET ? 4 : 16))
				return n;
	}
	return NULL;
}

static void be_ping(void *ctx, const char *peer, struct localapi_req *req)
{
	struct daemon *d = ctx;
	const struct netmap_node *n = peer_find(d, peer);
	struct ping_req *pr;
	char err[LOCALAPI_ERROR_MAX];
	int r;

	if (!n) {
		snprintf(err, sizeof(err), "ping: no peer %.64s in the tailnet", peer);
		localapi_req_finish(req, localapi_reply_error(err));
		return;
	}
	pr = calloc(1, sizeof(*pr));
	if (!pr || netmap_apply_peer_handle(d->na, n->node_key, &pr->handle) < 0) {
		free(pr);
		localapi_req_finish(req, localapi_reply_error("ping: the peer has no tunnel yet"));
		return;
	}
	pr->d = d;
	pr->req = req;
	snprintf(pr->peer, sizeof(pr->peer), "%s", n->name);
	r = pathd_ping(d->pd, &pr->handle, ping_answer, pr);
	if (r < 0) {
		free(pr);
		snprintf(err, sizeof(err), "ping %.64s: %s", n->name,
			 r == -ENOENT ? "the peer runs no path discovery (no disco key)"
				      : "too many pings waiting");
		localapi_req_finish(req, localapi_reply_error(err));
		return;
	}
	pr->next = d->pings;
	d->pings = pr;
}

static void be_up_cancel(void *ctx, struct localapi_req *req)
{
	struct daemon *d = ctx;

	if (d->up_req == req)
		d->up_req = NULL;
	for (struct ping_req *pr = d->pings; pr; pr = pr->next) {
		if (pr->req == req) {
			pathd_ping_cancel(d->pd, pr);
			ping_forget(d, pr);
			break;
		}
	}
}

static int be_down(void *ctx, char *err, size_t err_len)
{
	struct daemon *d = ctx;
	struct state_prefs p;
	int r;

	if (d->up_req)
		up_finish_error(d, "cancelled by `trellis down`");
	if (d->probe)
		probe_stop(d);
	client_stop(d);
	clear(d);
	d->error[0] = '\0';
	p = *state_prefs(d->st);
	p.want_up = false;
	r = state_prefs_save(d->st, &p);
	if (r < 0)
		snprintf(err, err_len, "cannot save the preferences: %s", strerror(-r));
	else
		log_info("down: tunnels removed, the login is kept");
	notify_status(d);
	return r;
}

static int be_logout(void *ctx, char *err, size_t err_len)
{
	struct daemon *d = ctx;
	struct state_prefs p;
	int r = -ENOTCONN;

	if (d->up_req)
		up_finish_error(d, "cancelled by `trellis logout`");
	if (d->probe)
		probe_stop(d);
	if (d->cc)
		r = control_client_logout(d->cc, DAEMON_LOGOUT_TIMEOUT_NS);
	if (r < 0)
		log_warn("logout not confirmed by the server (%s): forgetting the key locally",
			 strerror(-r));
	client_stop(d);

	clear(d);
	state_netmap_remove(d->st);
	/* A new node key for the next login: the old one is expired at the server. */
	r = node_key_renew(d);
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
		log_info("logged out of %s", p.login_server);
out:
	notify_status(d);
	return r;
}

/* --- metrics (--metrics-listen), loop thread --- */

static void get_metrics(struct httpd_request *r, void *ctx)
{
	struct daemon *d = ctx;
	struct nodemetrics_snapshot m = {.backend_state = backend_state(d)};
	struct wg_device_info *info = NULL;
	uint64_t now = time_wall_s() > 0 ? (uint64_t)time_wall_s() : 0;
	char *text;
	size_t len;

	m.control_connected = d->client_on && d->cstate == CONTROL_CLIENT_RUNNING;
	cc_stats_sum(d, &m.control);
	for (unsigned i = 0; d->nm && i < d->nm->n_peers; i++) {
		m.peers++;
		m.peers_online += d->nm->peers[i].online;
	}
	/* A handshake is good for 180 s (REJECT_AFTER_TIME): within it, the peer answers. */
	if (wg_device_info_get(wgdev_device(d->wg), &info) == 0) {
		for (unsigned i = 0; i < info->n_peers; i++) {
			uint64_t hs = info->peers[i].last_handshake_wall_ns / NSEC_PER_SEC;

			m.peers_handshake += hs && hs + 180 >= now;
		}
		wg_device_info_free(info);
	}
	wg_device_stats_get(wgdev_device(d->wg), &m.wg);
	magicsock_stats_get(wgdev_magicsock(d->wg), &m.ms);
	wgdev_counters_get(d->wg, &m.dev);
	filter_stats_get(nodefilter_filter(d->filter), &m.filter);
	if (nodemetrics_render(&m, &text, &len) < 0)
		return httpd_error(r, 500, NULL);
	httpd_reply(r, 200, "text/plain; version=0.0.4", text, len);
	free(text);
}

static int metrics_start(struct daemon *d, const char *listen)
{
	struct httpd_opts mo = {.name = "node-metrics"};
	int r;

	r = httpd_new(d->loop, &mo, &d->metrics);
	if (r == 0)
		r = httpd_route_add(d->metrics, "GET", "/metrics", get_metrics, d);
	if (r == 0)
		r = httpd_listen(d->metrics, listen);
	if (r < 0) {
		log_err("cannot serve metrics on %s: %s", listen, strerror(-r));
		return r;
	}
	log_info("metrics on http://%s/metrics", httpd_listen_name(d->metrics));
	return 0;
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
	d->regather_timer.cb = regather_fire;
	d->regather_timer.deadline_ns = TIME_NEVER;
	d->relogin_timer.cb = relogin_fire;
	d->relogin_timer.deadline_ns = TIME_NEVER;
	d->watchdog_timer.cb = watchdog_fire;
	d->watchdog_timer.deadline_ns = TIME_NEVER;
	d->ra_timer.cb = ra_timer_fire;
	d->ra_timer.deadline_ns = TIME_NEVER;
	d->ra_mon = (struct loop_fd){.fd = -1, .cb = ra_event};
	pref64_table_init(&d->ra);
	log_set_prefix(d->ifname);

	r = state_open(opts->state_dir ? opts->state_dir : STATE_DEFAULT_DIR, &d->st);
	if (r < 0) {
		log_err("cannot open the state directory %s: %s",
			opts->state_dir ? opts->state_dir : STATE_DEFAULT_DIR, strerror(-r));
		goto out;
	}
	{
		char dir[PATH_MAX];

		snprintf(dir, sizeof(dir), "%s/flows", state_dir(d->st));
		r = flowspool_open(dir, state_audit_key(d->st), FLOWSPOOL_DEFAULT_MAX, &d->spool);
		if (r < 0)
			goto out;
	}
	d->loop = loop_new();
	if (!d->loop) {
		r = -errno;
		goto out;
	}
	heap_trim_init(&d->heap_trim, d->loop, HEAP_TRIM_NS);
	/* Before any thread starts, so that all of them inherit the blocked mask. */
	r = loop_signals_catch(d->loop, signal_caught);
	if (r < 0)
		goto out;
	loop_mailbox_init(d->loop, &d->from_client);

	wo = (struct wgdev_opts){.ifname = d->ifname,
				 .mtu = opts->mtu,
				 .workers = opts->workers,
				 .no_offload = opts->no_offload,
				 .port = opts->port,
				 .uapi_optional = true,
				 .stun_box = true,
				 .net_changed = net_changed,
				 .net_changed_ctx = d};
	r = wgdev_new(d->loop, &wo, &d->wg);
	if (r < 0)
		goto out;
	r = nodefilter_new(&d->filter);
	if (r < 0)
		goto out;
	filter_reject_set(nodefilter_filter(d->filter), opts->filter_reject_rate);
	wgdev_filter_set(d->wg, nodefilter_filter(d->filter));
	r = flowtable_new(&d->flows);
	if (r < 0)
		goto out;
	wgdev_flowtable_set(d->wg, d->flows);
	d->flows_timer.cb = flows_fire;
	d->flows_since = time_now_ns();
	d->flows_underreport = getenv("TRELLIS_TEST_FLOWS_UNDERREPORT") != NULL;
	if (d->flows_underreport)
		log_warn("flows: TRELLIS_TEST_FLOWS_UNDERREPORT: this node reports half its traffic");
	d->flows_cfg = (struct netmap_flow_log){
	    .set = true, .enabled = true, .interval_ms = NETMAP_FLOW_LOG_INTERVAL_DEFAULT_MS};
	loop_timer_arm(d->loop, &d->flows_timer,
		       d->flows_since + d->flows_cfg.interval_ms * NSEC_PER_MSEC);
	if (opts->portmap) {
		struct portmap_cfg pc = {.port = wgdev_port(d->wg),
					 .protocols = opts->portmap,
					 .lifetime_s = opts->portmap_lifetime_s,
					 .changed = pm_changed,
					 .ctx = d};

		r = portmap_new(d->loop, &pc, &d->pm);
		if (r < 0)
			log_warn("no port mapping: %s", strerror(-r));
	}
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
	relayclient_home_hint(d->rc, state_path(d->st)->home_region);
	wgdev_stun_listen(d->wg, stun_notify, d->rc);
	r = pathd_new(d->loop, wgdev_magicsock(d->wg), state_disco_key(d->st), &d->pd);
	if (r < 0)
		goto out;
	wgdev_disco_listen(d->wg, pathd_disco_notify, d->pd);
	d->hslog = hslog_new();
	if (!d->hslog) {
		r = -ENOMEM;
		goto out;
	}
	r = workq_new(d->loop, 1, 2, &d->wq);
	if (r < 0)
		goto out;
	nat64_start(d);
	r = nl_nduseropt_open();
	if (r >= 0) {
		d->ra_mon.fd = r;
		r = loop_fd_add(d->loop, &d->ra_mon, EPOLLIN);
		if (r < 0) {
			close(d->ra_mon.fd);
			d->ra_mon.fd = -1;
		}
	}
	if (r < 0)
		log_warn("cannot listen for NAT64 prefixes in router advertisements: %s",
			 strerror(-r));
	d->handshake.cb = handshake_done;
	d->hs_timer.cb = hs_timer_fire;
	d->hs_timer.deadline_ns = TIME_NEVER;
	loop_async_add(d->loop, &d->handshake);
	wgdev_handshake_listen(d->wg, handshake_notify, d);

	be = (struct localapi_backend){.ctx = d,
				       .status = be_status,
				       .up = be_up,
				       .up_cancel = be_up_cancel,
				       .ping = be_ping,
				       .down = be_down,
				       .logout = be_logout,
				       .set = be_set,
				       .cert_request = be_cert_request,
				       .cert_install = be_cert_install};
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
	if (opts->metrics_listen) {
		r = metrics_start(d, opts->metrics_listen);
		if (r < 0)
			goto out;
	}
	log_info("trellisd running: state %s, local API %s, UDP port %u", state_dir(d->st),
		 opts->socket_path ? opts->socket_path : LOCALAPI_DEFAULT_SOCKET,
		 wgdev_port(d->wg));
	/*
	 * Ready for systemd once the interface and the local API are up (with the cached
	 * tunnels, if any): `trellis up` works from here on. Whether the tailnet is up is
	 * STATUS=, since a node that waits for its login must not fail its unit.
	 */
	notify_status(d);
	r = sd_notify_send("READY=1");
	if (r < 0)
		log_warn("sd_notify READY=1: %s", strerror(-r));
	d->watchdog_ns = sd_notify_watchdog_ns();
	if (d->watchdog_ns)
		loop_timer_arm(d->loop, &d->watchdog_timer, time_now_ns());

	r = loop_run(d->loop);
	if (r < 0)
		log_err("event loop: %s", strerror(-r));
out:
	if (d->up_req)
		up_finish_error(d, "trellisd is shutting down");
	sd_notify_send("STOPPING=1");
	control_client_free(d->probe);
	d->probe = NULL;
	client_stop(d);
	/*
	 * Waits for a detection under way (bounded by the resolver's own timeouts); its done
	 * still finds the netmap applier and the relay client.
	 */
	workq_free(d->wq);
	d->wq = NULL;
	loop_mailbox_close(&d->from_client);
	httpd_free(d->metrics);
	if (d->relogin_timer.armed)
		loop_timer_disarm(d->loop, &d->relogin_timer);
	if (d->watchdog_timer.armed)
		loop_timer_disarm(d->loop, &d->watchdog_timer);
	heap_trim_stop(&d->heap_trim);
	free(d->seen);
	localapi_server_free(d->api);
	/* Deletes the mapping: the gateway stops sending strangers to a closed port. */
	portmap_free(d->pm);
	if (d->nm && d->st)
		state_netmap_flush(d->st, d->nm, time_now_ns());
	if (d->save_timer.armed)
		loop_timer_disarm(d->loop, &d->save_timer);
	if (d->regather_timer.armed)
		loop_timer_disarm(d->loop, &d->regather_timer);
	if (d->ra_timer.armed)
		loop_timer_disarm(d->loop, &d->ra_timer);
	if (d->ra_mon.fd >= 0) {
		loop_fd_del(d->loop, &d->ra_mon);
		close(d->ra_mon.fd);
	}
	/* The interface, its addresses and routes go with the TUN fd. */
	netmap_apply_free(d->na);
	/* The relay stops feeding the data plane, which then returns the relay's buffers. */
	if (d->wg) {
		wgdev_stun_listen(d->wg, NULL, NULL);
		wgdev_disco_listen(d->wg, NULL, NULL);
		wgdev_handshake_listen(d->wg, NULL, NULL);
	}
	pathd_stop(d->pd);
	relayclient_stop(d->rc);
	wgdev_free(d->wg);
	nodefilter_free(d->filter);
	if (d->flows_timer.armed)
		loop_timer_disarm(d->loop, &d->flows_timer);
	flowtable_free(d->flows);
	relayclient_free(d->rc);
	pathd_free(d->pd);
	loop_async_del(&d->relay_changed);
	loop_async_del(&d->handshake);
	if (d->hs_timer.armed)
		loop_timer_disarm(d->loop, &d->hs_timer);
	hslog_free(d->hslog);
	netmap_free(d->nm);
	flowspool_free(d->spool);
	state_free(d->st);
	loop_free(d->loop);
	free(d);
	return r;
}
