// SPDX-License-Identifier: MIT
/*
 * trellis-control serve: the coordination server, one event-loop thread for
 * every connection. Its parts, one concern per file:
 *
 *   net/httpd.c  the HTTP(S) front end: GET /key, /register/ID, and
 *                POST /control, whose upgraded connection becomes a session;
 *                GET /metrics on a listener of its own (--metrics-listen)
 *   session.c    a node's control stream: Noise, framing, deadlines, dispatch
 *   register.c   registration decisions: who may register, with which record
 *   registry.c   tailnets, users, auth keys and the indexes that find nodes
 *   mapper.c     node records and who sees whom: netmaps and deltas
 *   mapstream.c  when netmaps and deltas go out on each map stream
 *   changes.c    the store's change feed (what the admin CLI wrote)
 *   ephemeral.c  deleting ephemeral nodes that stay offline
 *   metrics.c    the Prometheus text
 *
 * This file ties them together: it answers the nodes' messages (register,
 * map_request, endpoints, logout), runs the store writes they need, and
 * starts and stops the whole.
 *
 * In-memory state is the truth while serving: the mapper holds every node
 * record, the registry finds them. The store is the durable record: writes go
 * through store_submit (group commit on its writer thread) and the answer to
 * the node waits for the completion. Changes made by the admin CLI arrive
 * through the store's change feed, polled every 200 ms. Store writes of live
 * state (endpoints, online) are coalesced per node: one in flight, the latest
 * record wins.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "control/admin.h"
#include "control/admin_api.h"
#include "control/admin_op.h"
#include "control/audit.h"
#include "control/ca.h"
#include "control/changes.h"
#include "control/crlhttp.h"
#include "control/ephemeral.h"
#include "control/feedscan.h"
#include "control/flows_collect.h"
#include "control/flows_prune.h"
#include "control/mapper.h"
#include "control/relays.h"
#include "control/mapstream.h"
#include "control/metrics.h"
#include "control/pending.h"
#include "control/register.h"
#include "control/web.h"
#include "control/weboidc.h"
#include "control/registry.h"
#include "control/relay.h"
#include "control/server.h"
#include "control/session.h"
#include "control/store.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "os/sd_notify.h"
#include "policy/policy.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/http.h"

#define TICK_NS (200 * NSEC_PER_MSEC) /* change feed and key expiry */
/* Nodes a delta would name from the feed beyond which a full map is the cheaper answer. */
#ifndef RESUME_MISSED_MAX
#define RESUME_MISSED_MAX 16384
#endif
/* Nodes online when the last run stopped are presumed online this long: they reconnect. */
#define PRESUME_NS (60 * NSEC_PER_SEC)
/* "BEGIN END": the change feed's rows of the last run's stop (its nodes going offline). */
#define STOP_SETTING "control.stop"
/* How often --machine-cert-auto-renew reads the certificates (a listing of all of them). */
#define MCERT_SCAN_SEC 5

struct control_server {
	struct loop *loop;
	struct store *store;
	struct mapper *m;
	struct registry *reg;
	struct httpd *httpd;
	struct httpd *metrics; /* --metrics-listen: /metrics, away from the public port */
	struct httpd *admin;   /* the admin API on STATE/admin.sock, for root */
	struct mapstream *ms;
	struct ephemeral *eph;
	struct pending *pend; /* interactive registrations, until approved */
	struct web *web;      /* the login pages of interactive registrations */
	char *state_dir;      /* the CAs' keys (ca.h) */
	char *public_url;     /* serve --public-url, no trailing '/'; NULL: none */
	struct crlhttp *crl;  /* GET /crl/NAME.crl: each CA's revocation list */
	struct weboidc *oidc; /* sign-in with an OpenID provider on them (--oidc-*) */
	struct session_env sessions;
	struct changes changes;
	struct feedscan *scan; /* the feed since the positions resuming nodes hold */
	uint8_t priv[CTRLSTREAM_KEY_LEN];
	uint8_t pub[CTRLSTREAM_KEY_LEN]; /* priv's, derived once at load: every handshake uses it */
	char pub_b64[KEY_BASE64_LEN + 1];
	uint64_t default_tid;
	size_t n_streams;
	struct loop_timer tick_t;
	struct loop_async stop_async; /* control_server_stop, from any thread */
	struct metrics_counters ctr;
	struct control_relay *relay; /* the embedded relay and STUN server, /relay/verify */
	struct flows_collector *flows; /* flow-log batches from the nodes (docs/audit.md) */
	struct flows_pruner *prune;    /* their retention */
	uint64_t stamped;	       /* the feed position the mapper's version names */
	uint64_t stop_begin, stop_end; /* the last run's stop in the feed (STOP_SETTING) */
	bool stop_marked;	       /* this run's stop_begin is marked: write STOP_SETTING */
	uint64_t *unfed;	       /* nodes whose registry entry has unfed != 0 */
	size_t n_unfed, cap_unfed;
	bool unfed_lost; /* one could not be listed: no resume until the list empties */
	uint64_t *presumed;	       /* nodes online at the last stop, until presume_t */
	size_t n_presumed;
	struct loop_timer presume_t;
	int64_t mcert_renew_sec; /* serve --machine-cert-auto-renew; 0: off */
	int64_t mcert_scan_at;	 /* Unix seconds: its next look at the certificates */
};

enum op_kind { OP_REGISTER, OP_LOGOUT };

/* A registration or logout of a session, waiting for its store write. */
struct reg_op {
	struct control_server *s;
	struct session *ss; /* NULL once the session is gone */
	enum op_kind kind;
	struct register_decision d; /* the record to write is d.rec */
	struct audit_entry audit;   /* a registration's, written with d.rec (op_submit) */
	bool writing;		    /* counted in the node's writes (changes_write_begin) */
	char *mcert;		    /* a newer certificate for the response (base64), or NULL */
};

static void node_forget(struct control_server *s, uint64_t id);
static void pending_settled(struct control_server *s, const struct control_node *n);

/* ---- store writes ---- */

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
	uint32_t unfed; /* the node's unfed count this write carries to the feed */
};

/*
 * A node changed what its peers' netmaps say of it (a new disco key at every daemon
 * start, its home region, its mapping): subscribers hear of it at once, but a node that
 * resumes its netmap later learns only what the feed holds, so until a write carrying the
 * change lands, resume() names the node itself (s->unfed).
 */
static void unfed_add(struct control_server *s, uint64_t id)
{
	struct registry_node *e = registry_node_get(s->reg, id);
	uint64_t *ids;

	if (!e)
		return;
	if (!e->unfed) {
		if (s->n_unfed == s->cap_unfed) {
			size_t cap = s->cap_unfed ? s->cap_unfed * 2 : 16;

			ids = realloc(s->unfed, cap * sizeof(*ids));
			if (!ids) {
				/* no resume (a full map) until the list empties */
				s->unfed_lost = true;
				return;
			}
			s->unfed = ids;
			s->cap_unfed = cap;
		}
		s->unfed[s->n_unfed++] = id;
	}
	e->unfed++;
}

static void unfed_remove(struct control_server *s, uint64_t id)
{
	for (size_t i = 0; i < s->n_unfed; i++) {
		if (s->unfed[i] == id) {
			s->unfed[i] = s->unfed[--s->n_unfed];
			break;
		}
	}
	if (!s->n_unfed)
		s->unfed_lost = false;
}

static void persist_done(void *ctx, int err, uint64_t unused);

static int persist_submit(struct control_server *s, uint64_t id)
{
	const struct control_node *n = mapper_node_get(s->m, id);
	struct registry_node *e = registry_node_get(s->reg, id);
	/*
	 * Only its live state and what it reports for its peers (disco key, home region,
	 * mapping): the admin CLI may have written the rest since our last read.
	 */
	struct store_op op = {.kind = STORE_OP_NODE_LIVE,
			      .node_fields =
				  STORE_NODE_ENDPOINTS | STORE_NODE_LAST_SEEN | STORE_NODE_DISCO};
	struct persist *p;

	if (!n)
		return -ENOENT;
	p = malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->s = s;
	p->id = id;
	p->unfed = e ? e->unfed : 0;
	/* A change its peers' netmaps carry: the feed must say "node", not "live". */
	if (p->unfed)
		op.kind = STORE_OP_NODE_UPDATE;
	op.node = *n;
	if (store_submit(s->store, &op, persist_done, p) < 0) {
		free(p);
		s->ctr.drops[METRICS_DROP_STORE_BUSY]++;
		return -EAGAIN;
	}
	return 0;
}

static void persist_done(void *ctx, int err, uint64_t unused)
{
	struct persist *p = ctx;
	struct control_server *s = p->s;
	struct registry_node *e = registry_node_get(s->reg, p->id);

	noop_done(NULL, err, unused);
	/* Unless it changed again meanwhile, the feed now holds what peers must learn. */
	if (e && err >= 0 && p->unfed && e->unfed == p->unfed) {
		e->unfed = 0;
		unfed_remove(s, p->id);
	}
	if (e && e->persist == 2 && persist_submit(s, p->id) == 0)
		e->persist = 1;
	else if (e)
		e->persist = 0;
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
	struct registry_node *e = registry_node_get(s->reg, id);

	if (!e)
		return;
	if (e->persist) {
		if (e->persist == 1)
			e->persist = 2;
		s->ctr.writes_coalesced++;
		return;
	}
	if (persist_submit(s, id) == 0)
		e->persist = 1;
}

/* ---- ephemeral nodes ---- */

struct eph_del {
	struct control_server *s;
	uint64_t id;
	struct audit_entry audit; /* the server's delete, in the same transaction */
};

static void eph_deleted(void *ctx, int err, uint64_t unused)
{
	struct eph_del *d = ctx;

	(void)unused;
	if (err == 0 || err == -ENOENT)
		node_forget(d->s, d->id);
	audit_entry_release(&d->audit);
	free(d);
}

static void eph_expired(void *ctx, uint64_t id)
{
	struct control_server *s = ctx;
	struct registry_node *e = registry_node_get(s->reg, id);
	const struct control_node *n = mapper_node_get(s->m, id);
	struct store_op op = { .kind = STORE_OP_NODE_DELETE };
	char target[AUDIT_TARGET_MAX];
	struct eph_del *d;

	if (!n || (e && e->stream))
		return; /* gone already, or back online */
	d = malloc(sizeof(*d));
	if (!d)
		return;
	d->s = s;
	d->id = id;
	op.id = id;
	/* Not an admin's action, but a node disappears: the audit log says who did it. */
	snprintf(target, sizeof(target), "node:%" PRIu64 " %s", id, n->name);
	if (audit_entry_prepare(&d->audit, s->store, "server", time_wall_s(),
				"node.expire-ephemeral", target, &op) < 0) {
		free(d);
		return;
	}
	op.audit = &d->audit;
	log_info("control: ephemeral node %" PRIu64 " offline too long: deleting", id);
	if (store_submit(s->store, &op, eph_deleted, d) < 0) {
		audit_entry_release(&d->audit);
		free(d);
	}
}

static void eph_arm(struct control_server *s, uint64_t id)
{
	const struct control_node *n = mapper_node_get(s->m, id);
	const struct registry_tailnet *t = n ? registry_tailnet_get(s->reg, n->tailnet_id) : NULL;

	if (n)
		ephemeral_arm(s->eph, id, t ? t->rec.ephemeral_timeout_sec : 0);
}

/* A node is gone (deleted by the admin, or an ephemeral node expired). */
static void node_forget(struct control_server *s, uint64_t id)
{
	struct registry_node *e = registry_node_get(s->reg, id);
	struct session *stream = e ? e->stream : NULL, *waiter = e ? e->waiter : NULL;

	if (!mapper_node_get(s->m, id))
		return;
	if (e && e->unfed) {
		e->unfed = 0;
		unfed_remove(s, id);
	}
	/* Its sessions end without going offline first: the node goes as a whole. */
	if (e)
		e->stream = e->waiter = NULL;
	if (stream)
		session_fail(stream, METRICS_DROP_PROTOCOL, "node deleted");
	if (waiter)
		session_fail(waiter, METRICS_DROP_PROTOCOL, "node deleted");
	ephemeral_cancel(s->eph, id);
	registry_node_remove(s->reg, id);
	mapstream_schedule(s->ms);
}

/* ---- answering nodes ---- */

/* mcert: a newer certificate of the node's own (ca_cert_newer) to send along, or NULL. */
static void reply_register_cert(struct session *ss, enum ctrl_register_status st, const char *err,
				const struct control_node *rec, const char *mcert)
{
	struct control_server *s = ss->env->ctx;
	struct ctrl_msg m = { .type = CTRL_MSG_REGISTER_RESPONSE };

	m.reg_resp.status = st;
	if (mcert) {
		s->ctr.mcerts_sent++;
		snprintf(m.reg_resp.machine_cert, sizeof(m.reg_resp.machine_cert), "%s", mcert);
	}
	if (st == CTRL_REGISTER_ERROR) {
		s->ctr.regs_error++;
		snprintf(m.reg_resp.error, sizeof(m.reg_resp.error), "%s", err);
	} else if (st == CTRL_REGISTER_NEEDS_AUTH && ss->pend) {
		s->ctr.regs_needs_auth++;
		snprintf(m.reg_resp.auth_url, sizeof(m.reg_resp.auth_url), "%s://%s/register/%s",
			 httpd_tls(s->httpd) ? "https" : "http",
			 ss->host[0] ? ss->host : httpd_listen_name(s->httpd), ss->pend->code);
	} else if (st == CTRL_REGISTER_NEEDS_AUTH) {
		/*
		 * A node the store holds unapproved waits for an admin: the page says how. Its
		 * id is guessable, so no URL names it (the codes above are 64 random bits).
		 */
		s->ctr.regs_needs_auth++;
		snprintf(m.reg_resp.auth_url, sizeof(m.reg_resp.auth_url),
			 "%s://%s/register/" REGISTER_APPROVAL_PAGE,
			 httpd_tls(s->httpd) ? "https" : "http",
			 ss->host[0] ? ss->host : httpd_listen_name(s->httpd));
	} else {
		s->ctr.regs_ok++;
		m.reg_resp.has_node = true;
		registry_node_render(s->reg, rec, &m.reg_resp.node);
	}
	session_send(ss, &m);
}

static void reply_register(struct session *ss, enum ctrl_register_status st, const char *err,
			   const struct control_node *rec)
{
	reply_register_cert(ss, st, err, rec, NULL);
}

/* The op is over: a change of its node that the feed held for it is applied now. */
static void op_free(struct reg_op *op)
{
	struct control_server *s = op->s;
	uint64_t id = op->writing ? op->d.rec.id : 0;

	audit_entry_release(&op->audit);
	free(op->mcert);
	free(op);
	changes_write_end(&s->changes, id, time_wall_s());
}

static void op_done(void *ctx, int err, uint64_t id)
{
	struct reg_op *op = ctx;
	struct control_server *s = op->s;
	struct session *ss = op->ss;
	const struct control_node *n;
	struct registry_node *e;
	static const char logout_response[] = "{\"type\":\"logout_response\"}";

	if (ss)
		ss->op = NULL;
	if (err < 0) {
		log_ratelimited(LOG_LEVEL_WARN, "control: registration of %s failed: %s",
				op->d.rec.hostname, strerror(-err));
		/* Refused: the node keeps its old record, in memory as on disk (logout too). */
		register_end(s->reg, &op->d, err, 0, time_wall_s());
		mapstream_schedule(s->ms);
		if (ss)
			reply_register(ss, CTRL_REGISTER_ERROR, "registration failed", NULL);
		op_free(op);
		return;
	}
	if (op->kind == OP_LOGOUT) {
		if (ss && session_queue_json(ss, logout_response, sizeof(logout_response) - 1) == 0)
			session_close_after_write(ss);
		op_free(op);
		return;
	}
	register_end(s->reg, &op->d, 0, id, time_wall_s());
	mapstream_schedule(s->ms);
	n = mapper_node_get(s->m, op->d.rec.id);
	if (n) {
		log_info("control: node %" PRIu64 " (%s) %s%s", n->id, n->name,
			 op->d.insert ? "registered" : "logged in again",
			 n->approved ? "" : ", waiting for approval");
		pending_settled(s, n);
	}
	if (ss && n) {
		if (n->approved) {
			reply_register_cert(ss, CTRL_REGISTER_OK, NULL, n, op->mcert);
		} else {
			reply_register(ss, CTRL_REGISTER_NEEDS_AUTH, NULL, n);
			ss->wait_id = n->id;
			e = registry_node_get(s->reg, n->id);
			if (e)
				e->waiter = ss;
		}
	}
	op_free(op);
}

/*
 * A registration in the configuration audit log (docs/audit.md): who let the node in (its
 * auth key, the user who signed in, or for a key rotation the node itself, by its old key)
 * and what its record became. Not fatal: a registration is not refused for want of memory
 * to describe it (logged).
 */
static int reg_audit(struct control_server *s, const struct register_decision *d,
		     struct audit_entry *ret)
{
	const struct control_user *u = d->rec.user_id ? registry_user_get(s->reg, d->rec.user_id)
						       : NULL;
	char actor[AUDIT_ACTOR_MAX];
	int r;

	if (d->rotate)
		snprintf(actor, sizeof(actor), "node:%" PRIu64, d->rec.id);
	else if (d->authkey)
		snprintf(actor, sizeof(actor), "authkey:%s", d->authkey->prefix);
	else if (u)
		snprintf(actor, sizeof(actor), "user:%.*s", AUDIT_ACTOR_MAX - 6, u->name);
	else
		snprintf(actor, sizeof(actor), "server");
	r = audit_entry_node(ret, actor, time_wall_s(),
			     d->insert ? "node.register" : d->rotate ? "node.rotate_key" : "node.login",
			     d->insert ? NULL : &d->prev, &d->rec);
	if (r < 0)
		log_ratelimited(LOG_LEVEL_WARN, "control: registration of %s not in the audit log: %s",
				d->rec.hostname, strerror(-r));
	return r;
}

/* Submits op's writes; op_done runs when the node's is durable. 0 or -EAGAIN (store busy). */
static int op_submit(struct session *ss, struct reg_op *op)
{
	struct control_server *s = op->s;
	struct registry_node *e;
	struct store_op sops[2];
	size_t n = 1;
	int r;

	if (op->kind == OP_REGISTER) {
		n = register_store_ops(&op->d, sops);
		/* A reconnect writes the record as it was: nothing for the log. */
		if (sops[n - 1].kind != STORE_OP_NODE_TOUCH &&
		    reg_audit(s, &op->d, &op->audit) == 0)
			sops[n - 1].audit = &op->audit;
	} else {
		memset(&sops[0], 0, sizeof(sops[0]));
		sops[0].kind = STORE_OP_NODE_UPDATE;
		sops[0].node = op->d.rec;
		sops[0].node_fields = store_node_diff(&op->d.prev, &op->d.rec);
	}
	/* Companions of the node's write (a one-off key's use) go first: durable no later. */
	for (size_t i = 0; i + 1 < n; i++)
		store_submit(s->store, &sops[i], noop_done, NULL);
	r = store_submit(s->store, &sops[n - 1], op_done, op);
	if (r < 0)
		return r;
	if (ss)
		ss->op = op;
	e = op->d.insert ? op->d.entry : registry_node_get(s->reg, op->d.rec.id);
	if (e) {
		changes_write_begin(&s->changes, e);
		op->writing = true;
	}
	return 0;
}

/* ---- machine certificates (ca.h) ---- */

/* A register's certificate, for register_decide to hold against the node's tailnet. */
struct mcert_hook {
	struct control_server *s;
	const struct ca_evidence *ev;
	uint64_t refused_in; /* the tailnet whose rule refused the certificate, or 0 */
	char err[CTRL_TEXT_MAX];
};

static const char *mcert_check(void *arg, uint64_t tailnet_id, int64_t *ret_not_after)
{
	struct mcert_hook *h = arg;
	const char *err = ca_register_check(h->s->store, tailnet_id, h->ev, time_wall_s(),
					    ret_not_after, h->err, sizeof(h->err));

	h->refused_in = err ? tailnet_id : 0;
	return err;
}

/*
 * A newer certificate of the node's own to send with the answer (ca_cert_newer): when the
 * registration goes through (tailnet: the node's), or when the tailnet's rule refused the
 * one presented because it ended, so that the node retries with the newer one. NULL: none.
 */
static char *mcert_newer(struct control_server *s, const struct register_decision *d,
			 const struct mcert_hook *h, int64_t now)
{
	uint64_t tid = d->error ? h->refused_in : d->rec.tailnet_id;
	char *b64;

	if (!tid || !h->ev || !h->ev->present || (d->error && h->ev->info.not_after > now))
		return NULL;
	b64 = malloc(CTRL_MCERT_MAX);
	if (b64 && ca_cert_newer(s->store, tid, h->ev, now, b64, CTRL_MCERT_MAX) == 0)
		return b64;
	free(b64);
	return NULL;
}

/* ---- interactive registrations (pending.h) ---- */

/*
 * A machine without a credential that we do not know, or a known node logging in again
 * (d->relogin): it waits in memory, costing no row, no address and no record (a known
 * node's stays as it is), until someone signs in for it or an admin approves it.
 */
static void pending_wait(struct session *ss, const struct ctrl_register *msg,
			 const struct register_decision *d, const struct ca_evidence *ev)
{
	struct control_server *s = ss->env->ctx;
	struct pending_reg *pr;
	int r;

	r = pending_add(s->pend, d->rec.tailnet_id, ss->machine_key, msg->node_key, msg->hostname,
			msg->os,
			ss->slot.src, ss->slot.src_len, loop_now_ns(s->loop), &pr);
	if (r < 0) {
		s->ctr.drops[METRICS_DROP_PENDING_LIMIT]++;
		log_ratelimited(LOG_LEVEL_INFO, "control: %s: interactive registration refused: %s",
				ss->peer, r == -EBUSY ? "rate" : r == -ENOSPC ? "cap" : strerror(-r));
		return reply_register(ss, CTRL_REGISTER_ERROR,
				      r == -ENOMEM ? "out of memory"
						   : "too many registrations waiting for approval;"
						     " try later or use an auth key",
				      NULL);
	}
	/* The same machine again: the newer session waits, the older one is told. */
	if (pr->waiter && pr->waiter != ss) {
		struct session *old = pr->waiter;

		pr->waiter = NULL;
		old->pend = NULL;
		session_fail(old, METRICS_DROP_PROTOCOL, "replaced by a newer registration");
	}
	pr->waiter = ss;
	ss->pend = pr;
	pr->node_id = d->relogin ? d->prev.id : 0;
	pr->owner_id = d->relogin ? d->prev.user_id : 0;
	pr->has_audit_key = msg->has_audit_key;
	memcpy(pr->audit_key, msg->audit_key, NETMAP_KEY_LEN);
	/* Checked again when the login or approval names the tailnet (pending_finish). */
	free(pr->mcert);
	pr->mcert = NULL;
	if (ev->present) {
		pr->mcert = malloc(sizeof(*ev));
		if (pr->mcert)
			memcpy(pr->mcert, ev, sizeof(*ev));
	}
	reply_register(ss, CTRL_REGISTER_NEEDS_AUTH, NULL, NULL);
}

/*
 * A live node that logs in again with a new key and no proof of the old one gave that key
 * up (`trellis up --force-reauth`, a lost key file): it expires now, as a logout does, so
 * that peers drop it while the new login waits. The machine key proved the machine.
 */
static void key_given_up(void *ctx, int err, uint64_t unused)
{
	struct persist *p = ctx;

	noop_done(NULL, err, unused);
	changes_write_end(&p->s->changes, p->id, time_wall_s());
	free(p);
}

static void key_give_up(struct control_server *s, const struct control_node *n, int64_t now)
{
	struct store_op op = {.kind = STORE_OP_NODE_UPDATE, .node = *n};
	struct registry_node *e = registry_node_get(s->reg, n->id);
	struct persist *p = malloc(sizeof(*p));

	op.node.expiry_disabled = false;
	op.node.key_expiry = now;
	op.node_fields = store_node_diff(n, &op.node);
	registry_node_update(s->reg, &op.node, now);
	mapstream_schedule(s->ms);
	if (!p || store_submit(s->store, &op, key_given_up, p) < 0) {
		free(p);
		s->ctr.drops[METRICS_DROP_STORE_BUSY]++;
		return;
	}
	/* Runs on this thread, after we return. */
	p->s = s;
	p->id = e ? n->id : 0;
	if (e)
		changes_write_begin(&s->changes, e);
}

static void pending_drop(struct control_server *s, struct pending_reg *pr)
{
	if (pr->waiter)
		pr->waiter->pend = NULL;
	pending_remove(s->pend, pr);
}

/* The machine has a node in this tailnet now (an auth key, say): its waiting registration goes. */
static void pending_settled(struct control_server *s, const struct control_node *n)
{
	struct pending_reg *pr = pending_by_machine(s->pend, n->tailnet_id, n->machine_key);
	struct session *w = pr ? pr->waiter : NULL;

	if (!pr)
		return;
	pending_drop(s, pr);
	if (w)
		session_fail(w, METRICS_DROP_PROTOCOL, "registered on another connection");
}

/*
 * It becomes a node of tailnet tid (owned by uid, or the tailnet's default user when 0),
 * approved or waiting for an admin, through the usual write.
 */
static void pending_finish(struct control_server *s, struct pending_reg *pr, uint64_t tid,
			   uint64_t uid, bool approved)
{
	struct session *ss = pr->waiter;
	struct ctrl_register msg = { 0 };
	uint8_t machine_key[NETMAP_KEY_LEN];
	struct register_request req = {
		.msg = &msg,
		.machine_key = machine_key, /* pr goes before the decision */
		.default_tailnet_id = tid,
		.now = time_wall_s(),
	};
	struct reg_op *op = calloc(1, sizeof(*op));
	struct mcert_hook hook = {.s = s, .ev = pr->mcert};

	pr->mcert = NULL; /* ours now: pr goes before the decision */
	req.mcert_check = mcert_check;
	req.mcert_arg = &hook;
	memcpy(machine_key, pr->machine_key, NETMAP_KEY_LEN);
	memcpy(msg.node_key, pr->node_key, NETMAP_KEY_LEN);
	msg.has_audit_key = pr->has_audit_key;
	memcpy(msg.audit_key, pr->audit_key, NETMAP_KEY_LEN);
	snprintf(msg.hostname, sizeof(msg.hostname), "%s", pr->hostname);
	snprintf(msg.os, sizeof(msg.os), "%s", pr->os);
	log_info("control: registration %s (%s) %s", pr->code, pr->hostname,
		 approved ? "approved" : "signed in, waits for device approval");
	pending_drop(s, pr);
	if (!op) {
		if (ss)
			reply_register(ss, CTRL_REGISTER_ERROR, "out of memory", NULL);
		free((void *)hook.ev);
		return;
	}
	op->s = s;
	op->ss = ss;
	op->kind = OP_REGISTER;
	register_decide(s->reg, &req, &op->d);
	free((void *)hook.ev);
	if (!op->d.error) {
		op->d.rec.approved = approved;
		if (uid && op->d.insert)
			op->d.rec.user_id = uid;
		register_begin(s->reg, &op->d, req.now);
	}
	if (op->d.error) {
		log_ratelimited(LOG_LEVEL_WARN, "control: approved registration refused: %s",
				op->d.error);
		if (ss)
			reply_register(ss, CTRL_REGISTER_ERROR, op->d.error, NULL);
		free(op);
		return;
	}
	mapstream_schedule(s->ms);
	if (op_submit(ss, op) < 0) {
		s->ctr.drops[METRICS_DROP_STORE_BUSY]++;
		op->ss = NULL;
		op_done(op, -EAGAIN, 0);
		if (ss)
			reply_register(ss, CTRL_REGISTER_ERROR, "server busy", NULL);
	}
}

/* The admin approved it: a node of the tailnet it registered in. */
static void pending_approve(struct control_server *s, struct pending_reg *pr)
{
	pending_finish(s, pr, pr->tailnet_id, 0, true);
}

/* ---- the login pages (web.h) ---- */

static const struct pending_reg *web_pending_get(void *arg, const char *code)
{
	struct control_server *s = arg;

	return pending_get(s->pend, code);
}

static int web_pending_complete(void *arg, const char *code, uint64_t tid, uint64_t uid,
				bool approved)
{
	struct control_server *s = arg;
	struct pending_reg *pr = pending_get(s->pend, code);

	if (!pr)
		return -ENOENT;
	/* A known node's re-login is its owner's (web.c checked it, on the page). */
	if (pr->node_id && (tid != pr->tailnet_id || uid != pr->owner_id))
		return -EPERM;
	pending_finish(s, pr, tid, uid, approved);
	return 0;
}

/* A setting changed: approvals of pending registrations are settings. */
static void pending_approvals_check(void *ctx)
{
	struct control_server *s = ctx;
	struct pending_reg *pr, *next;
	char key[STORE_SETTING_KEY_MAX], val[8];

	for (pr = pending_next(s->pend, NULL); pr; pr = next) {
		next = pending_next(s->pend, pr);
		snprintf(key, sizeof(key), "%s%s", PENDING_APPROVE_PREFIX, pr->code);
		if (store_setting_get(s->store, key, val, sizeof(val)) >= 0)
			pending_approve(s, pr);
	}
}

static void pending_expire(struct control_server *s)
{
	struct pending_reg *pr;

	while ((pr = pending_expired(s->pend, loop_now_ns(s->loop)))) {
		struct session *ss = pr->waiter;

		pending_drop(s, pr);
		if (ss)
			session_fail(ss, METRICS_DROP_PROTOCOL,
				     "registration not approved in time; register again");
	}
}

static void on_register(struct session *ss, const struct ctrl_register *msg)
{
	struct control_server *s = ss->env->ctx;
	int64_t now = time_wall_s();
	struct register_request req = {
		.msg = msg,
		.machine_key = ss->machine_key,
		.stream_node_id = ss->node_id,
		.default_tailnet_id = s->default_tid,
		.now = now,
	};
	struct ca_evidence *ev = NULL;
	struct mcert_hook hook = {.s = s};
	uint8_t hash[CTRLSTREAM_HASH_LEN];
	struct reg_op *op;

	/* A key rotation may come on a live map stream: the stream goes on unbroken. */
	if (ss->op || ss->wait_id || ss->pend || (ss->node_id && !msg->has_old_node_key))
		return session_fail(ss, METRICS_DROP_PROTOCOL, "register while busy");
	/*
	 * A key the admin CLI created since the last tick is not in memory yet;
	 * `trellis up --auth-key "$(trellis-control authkey create)"` must work at
	 * once. Look at the change feed before refusing (cheap when nothing
	 * changed: one PRAGMA data_version).
	 */
	if (register_authkey_unknown(s->reg, msg))
		changes_drain(&s->changes, now);
	op = calloc(1, sizeof(*op));
	ev = malloc(sizeof(*ev));
	if (!op || !ev || ctrlstream_handshake_hash(ss->cs, hash) < 0) {
		free(op);
		free(ev);
		return reply_register(ss, CTRL_REGISTER_ERROR, "out of memory", NULL);
	}
	ca_evidence_make(ev, msg, ss->machine_key, hash);
	hook.ev = ev;
	req.mcert_check = mcert_check;
	req.mcert_arg = &hook;
	op->s = s;
	op->ss = ss;
	op->kind = OP_REGISTER;
	register_decide(s->reg, &req, &op->d);
	if (!op->d.error && (op->d.insert || op->d.relogin) && !op->d.rec.approved) {
		if (op->d.relogin && control_node_visible(&op->d.prev, now))
			key_give_up(s, &op->d.prev, now);
		pending_wait(ss, msg, &op->d, ev);
		free(op);
		free(ev);
		return;
	}
	op->mcert = mcert_newer(s, &op->d, &hook, now);
	free(ev);
	if (!op->d.error)
		register_begin(s->reg, &op->d, now);
	if (op->d.error) {
		if (strcmp(op->d.error, REGISTER_ERR_NODE_KEY_TAKEN) == 0)
			s->ctr.drops[METRICS_DROP_NODE_KEY_TAKEN]++;
		log_ratelimited(LOG_LEVEL_INFO, "control: %s: register refused: %s%s", ss->peer,
				op->d.error, op->mcert ? " (a newer certificate sent)" : "");
		reply_register_cert(ss, CTRL_REGISTER_ERROR, op->d.error, NULL, op->mcert);
		free(op->mcert);
		free(op);
		return;
	}
	if (op->d.rotate)
		log_info("control: node %" PRIu64 " (%s) rotated its node key", op->d.rec.id,
			 op->d.rec.name);
	mapstream_schedule(s->ms);
	if (op_submit(ss, op) < 0) {
		s->ctr.drops[METRICS_DROP_STORE_BUSY]++;
		op->ss = NULL;
		op_done(op, -EAGAIN, 0);
		reply_register(ss, CTRL_REGISTER_ERROR, "server busy", NULL);
	}
}

/* ---- map versions and resuming (docs/control-protocol.md, "Resuming a map stream") ---- */

static void le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Names a position of the feed and the row there: another server or history differs. */
static void version_digest(const struct control_server *s, const struct store_change *row,
			   uint8_t ret[NETMAP_DIGEST_LEN])
{
	static const char label[] = "trellis map version v1";
	struct blake2s_state b;
	uint8_t v[32];

	le64(v, row->seq);
	le64(v + 8, (uint64_t)row->kind);
	le64(v + 16, row->id);
	le64(v + 24, row->origin);
	blake2s_init(&b, NETMAP_DIGEST_LEN);
	blake2s_update(&b, label, sizeof(label) - 1);
	blake2s_update(&b, s->pub_b64, strlen(s->pub_b64));
	blake2s_update(&b, v, sizeof(v));
	blake2s_final(&b, ret);
}

/*
 * Netmaps and deltas from now on name the feed position the mapper's state includes. It may
 * lag the state (by a tick), never lead it: a resume from it sends a superset.
 */
static void version_refresh(struct control_server *s)
{
	struct netmap_version v = {0};
	struct store_change row;

	/* A change held for our writes (changes.h) is past the cursor but not in the state. */
	if (s->changes.cursor == s->stamped || registry_feed_held(s->reg))
		return;
	if (store_changes_since(s->store, s->changes.cursor, &row, 1) == 1 &&
	    row.seq == s->changes.cursor) {
		v.feed = row.seq;
		version_digest(s, &row, v.digest);
	}
	s->stamped = s->changes.cursor;
	mapper_version_set(s->m, &v);
}

struct have_check {
	const struct control_server *s;
	const struct ctrl_have *h;
};

/* The row a node's `have` names is one of ours: the digest matches (feedscan_row_ok_fn). */
static bool have_row_ok(void *ctx, const struct store_change *row)
{
	const struct have_check *c = ctx;
	uint8_t digest[NETMAP_DIGEST_LEN];

	version_digest(c->s, row, digest);
	return crypto_equal(digest, c->h->version.digest, sizeof(digest));
}

/*
 * A node that holds the netmap of version h gets what changed since as one delta, when our
 * feed still has that position, the row there is the one the digest names, and what changed
 * can be said as a delta. False: it needs a full map. The feed since h is read once for all
 * the nodes that hold it (feedscan.h).
 */
static bool resume(struct control_server *s, const struct control_node *n,
		   const struct ctrl_have *h, int64_t now)
{
	struct have_check ctx = {.s = s, .h = h};
	struct mapper_missed *missed = NULL;
	struct feedscan_since fr;
	bool ok = false, pol = mapper_policy_has(s->m, n->tailnet_id);
	size_t n_missed;
	int r;

	if (h->version.feed > s->changes.cursor)
		return false;
	r = feedscan_get(s->scan, h->version.feed, have_row_ok, &ctx, &fr);
	s->ctr.resume_feed_rows = feedscan_rows_read(s->scan);
	if (r < 0 || fr.user || fr.overflow)
		return false;
	for (size_t i = 0; i < fr.n_tailnets; i++)
		if (fr.tailnets[i] == n->tailnet_id)
			return false;
	/* Its own record under a policy: who it sees may have moved. */
	for (size_t i = 0; pol && i < fr.n_missed; i++)
		if (!fr.missed[i].live_only && fr.missed[i].id == n->id)
			return false;
	/* What the feed does not hold yet (unfed_add): named whole, like a node row. */
	if (s->unfed_lost || fr.n_missed + s->n_unfed > RESUME_MISSED_MAX)
		return false;
	missed = malloc((fr.n_missed + s->n_unfed + 1) * sizeof(*missed));
	if (!missed)
		return false;
	n_missed = fr.n_missed;
	if (n_missed)
		memcpy(missed, fr.missed, n_missed * sizeof(*missed));
	for (size_t i = 0; i < s->n_unfed; i++) {
		if (pol && s->unfed[i] == n->id)
			goto out;
		missed[n_missed++] = (struct mapper_missed){.id = s->unfed[i]};
	}
	mapper_seq_floor(s->m, h->seq);
	ok = mapper_resume(s->m, n->id, missed, n_missed, fr.relay, now) == 0;
out:
	free(missed);
	return ok;
}

/* The nodes that went offline in the last run's stop are presumed online for PRESUME_NS. */
static void presumed_load(struct control_server *s)
{
	struct store_change *rows = NULL;
	uint64_t b, e;
	char v[64];
	int len, k;

	len = store_setting_get(s->store, STOP_SETTING, v, sizeof(v) - 1);
	if (len <= 0)
		return;
	v[len] = '\0';
	if (sscanf(v, "%" SCNu64 " %" SCNu64, &b, &e) != 2 || b >= e || e - b > (1U << 20))
		return;
	rows = malloc((e - b) * sizeof(*rows));
	s->presumed = malloc((e - b) * sizeof(*s->presumed));
	if (!rows || !s->presumed)
		goto out;
	k = store_changes_since(s->store, b + 1, rows, e - b);
	for (int i = 0; i < k; i++)
		if (rows[i].seq <= e && rows[i].kind == STORE_CHANGE_NODE_LIVE)
			s->presumed[s->n_presumed++] = rows[i].id;
	s->stop_begin = b;
	s->stop_end = e;
out:
	free(rows);
	/* Once: a later crash leaves no stop to read. */
	store_setting_set(s->store, STOP_SETTING, "0 0", 3);
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The grace is over: presumed nodes that did not come back are offline, and peers hear it. */
static void presume_end(struct loop_timer *t)
{
	struct control_server *s = container_of(t, struct control_server, presume_t);
	int64_t now = time_wall_s();

	for (size_t i = 0; i < s->n_presumed; i++) {
		struct registry_node *e = registry_node_get(s->reg, s->presumed[i]);

		if (!e || !e->presumed)
			continue;
		e->presumed = false;
		if (!e->stream)
			mapper_node_online(s->m, e->id, false, now);
	}
	free(s->presumed);
	s->presumed = NULL;
	s->n_presumed = 0;
	mapstream_schedule(s->ms);
}

/* Before the sessions close: where their goodbyes (offline writes) begin in the feed. */
static void stop_mark_begin(struct control_server *s)
{
	store_flush(s->store);
	while (store_completions_run(s->store) > 0)
		store_flush(s->store);
	changes_drain(&s->changes, time_wall_s());
	s->stop_begin = s->changes.cursor;
	s->stop_marked = true;
}

/* ... and where they end: the next run presumes those nodes online (presumed_load). */
static void stop_mark_end(struct control_server *s)
{
	char v[64];
	int n;

	changes_drain(&s->changes, time_wall_s());
	if (s->changes.cursor <= s->stop_begin)
		return;
	n = snprintf(v, sizeof(v), "%" PRIu64 " %" PRIu64, s->stop_begin, s->changes.cursor);
	store_setting_set(s->store, STOP_SETTING, v, (size_t)n);
}

static const struct control_node *machine_node(struct control_server *s, struct session *ss)
{
	const struct registry_node *e = registry_node_by_machine(s->reg, ss->machine_key);

	return e ? mapper_node_get(s->m, e->id) : NULL;
}

/*
 * What a node reports of itself that its peers' netmaps carry besides endpoints. 1: nothing
 * changed; 0: something did (subscribers are told, and resume() until the feed has it);
 * -ENOENT.
 */
static int peer_fields_set(struct control_server *s, uint64_t id, uint32_t home_region,
			   const uint8_t *disco_key, bool mapping_varies)
{
	int r, changed = 0;

	r = mapper_node_home_region(s->m, id, home_region);
	if (r < 0)
		return r;
	changed |= r == 0;
	r = mapper_node_disco_key(s->m, id, disco_key);
	if (r < 0)
		return r;
	changed |= r == 0;
	r = mapper_node_mapping_varies(s->m, id, mapping_varies);
	if (r < 0)
		return r;
	changed |= r == 0;
	if (!changed)
		return 1;
	unfed_add(s, id);
	mapstream_schedule(s->ms);
	return 0;
}

static void on_map_request(struct session *ss, const struct ctrl_map_request *mr)
{
	struct control_server *s = ss->env->ctx;
	const struct control_node *n = machine_node(s, ss);
	int64_t now = time_wall_s();
	struct registry_node *e;
	bool eps_changed, fed;
	uint64_t id;

	if (ss->op || ss->node_id || ss->wait_id || ss->map.want)
		return session_fail(ss, METRICS_DROP_PROTOCOL, "map_request while busy");
	if (!n || memcmp(n->node_key, mr->node_key, NETMAP_KEY_LEN) != 0)
		return session_fail(ss, METRICS_DROP_UNKNOWN_NODE, "unknown node key");
	if (!n->approved)
		return session_fail(ss, METRICS_DROP_UNKNOWN_NODE, "node not approved");
	if (!control_node_visible(n, now))
		return session_fail(ss, METRICS_DROP_UNKNOWN_NODE, "node key expired");
	id = n->id;
	eps_changed = mr->n_endpoints != n->n_endpoints;
	for (unsigned i = 0; !eps_changed && i < mr->n_endpoints; i++)
		eps_changed = !endpoint_equal(&mr->endpoints[i], &n->endpoints[i]);
	if (mr->n_endpoints) {
		mapper_node_endpoints(s->m, id, mr->endpoints, mr->n_endpoints);
		mapstream_schedule(s->ms);
	}
	fed = peer_fields_set(s, id, mr->home_region, mr->has_disco_key ? mr->disco_key : NULL,
			      mr->mapping_varies) != 0;
	ss->map.zstd = mr->zstd;
	if (!mr->stream) {
		mapstream_full_request(s->ms, ss, id, true);
		return;
	}
	e = registry_node_get(s->reg, id);
	if (!e)
		return session_fail(ss, METRICS_DROP_UNKNOWN_NODE, "unknown node");
	if (e->stream)
		session_fail(e->stream, METRICS_DROP_PROTOCOL, "replaced by a newer map stream");
	ss->node_id = id;
	s->n_streams++;
	e->stream = ss;
	/* A registered node's map stream: it no longer counts against its source. */
	httpd_slot_authenticated(&ss->slot);
	ephemeral_cancel(s->eph, id);
	mapper_subscribe(s->m, id);
	/* Per stream, like compress: a replaced stream's node may be another build. */
	mapper_reach_patch_set(s->m, id, mr->reach_patch);
	if (e->presumed) {
		/* Back within its grace: its peers never heard it was gone. */
		e->presumed = false;
		if (eps_changed || !fed)
			persist_node(s, id);
	} else {
		if (mapper_node_online(s->m, id, true, now) == 0 && mapper_node_get(s->m, id))
			log_info("control: node %" PRIu64 " (%s) online", id,
				 mapper_node_get(s->m, id)->name);
		persist_node(s, id);
	}
	n = mapper_node_get(s->m, id);
	if (mr->has_have && n && resume(s, n, &mr->have, now)) {
		s->ctr.resumes++;
		log_debug("control: node %" PRIu64 " resumed from version %" PRIu64, id,
			  mr->have.version.feed);
	} else {
		s->ctr.resumes_refused += mr->has_have;
		mapstream_full_request(s->ms, ss, id, false);
	}
	mapstream_schedule(s->ms);
}

static void on_endpoints(struct session *ss, const struct ctrl_endpoints *ep)
{
	struct control_server *s = ss->env->ctx;

	if (!ss->node_id)
		return session_fail(ss, METRICS_DROP_PROTOCOL, "endpoints without a map stream");
	if (mapper_node_endpoints(s->m, ss->node_id, ep->endpoints, ep->n_endpoints) < 0 ||
	    peer_fields_set(s, ss->node_id, ep->home_region,
			    ep->has_disco_key ? ep->disco_key : NULL, ep->mapping_varies) < 0)
		return session_fail(ss, METRICS_DROP_MSG_BAD, "bad endpoints");
	persist_node(s, ss->node_id);
	mapstream_schedule(s->ms);
}

static void on_logout(struct session *ss)
{
	struct control_server *s = ss->env->ctx;
	const struct control_node *n = machine_node(s, ss);
	struct reg_op *op;

	if (ss->op)
		return session_fail(ss, METRICS_DROP_PROTOCOL, "logout while busy");
	if (!n)
		return session_fail(ss, METRICS_DROP_UNKNOWN_NODE, "unknown node");
	op = calloc(1, sizeof(*op));
	if (!op)
		return session_fail(ss, METRICS_DROP_IO, "out of memory");
	op->s = s;
	op->ss = ss;
	op->kind = OP_LOGOUT;
	op->d.rec = *n;
	op->d.prev = *n; /* restored if the write fails (register_end) */
	op->d.rec.expiry_disabled = false;
	op->d.rec.key_expiry = time_wall_s();
	mapper_node_upsert(s->m, &op->d.rec, time_wall_s());
	mapstream_schedule(s->ms);
	if (op_submit(ss, op) < 0) {
		register_end(s->reg, &op->d, -EAGAIN, 0, time_wall_s());
		mapstream_schedule(s->ms);
		audit_entry_release(&op->audit);
		free(op);
		session_fail(ss, METRICS_DROP_STORE_BUSY, "server busy");
	}
}

static void flows_ack(struct session *ss, uint64_t seq, const char *result)
{
	struct ctrl_msg m = {.type = CTRL_MSG_FLOWS_ACK};

	m.flows_ack.seq = seq;
	snprintf(m.flows_ack.result, sizeof(m.flows_ack.result), "%s", result);
	session_send(ss, &m);
}

static void flows_done(void *ctx, uint64_t seq, const char *result)
{
	flows_ack(ctx, seq, result);
}

/*
 * A batch in the name of this session's node: the map stream proves which
 * node that is, so no node submits in another's name (flows_admit checks the
 * batch's node_id against it).
 */
static void on_flows(struct session *ss, struct ctrl_flows *m)
{
	struct control_server *s = ss->env->ctx;
	const struct control_node *n = ss->node_id ? mapper_node_get(s->m, ss->node_id) : NULL;
	const char *result;
	uint64_t seq;
	uint8_t *batch = m->batch;

	m->batch = NULL;
	if (!n) {
		free(batch);
		return session_fail(ss, METRICS_DROP_PROTOCOL, "flows without a map stream");
	}
	if (flows_collector_submit(s->flows, n->id, n->tailnet_id,
				   n->has_audit_key ? n->audit_key : NULL, batch, m->len,
				   time_wall_s(), flows_done, ss, &seq, &result) < 0) {
		log_ratelimited(LOG_LEVEL_INFO,
				"control: node %" PRIu64 ": flow batch %" PRIu64 " refused: %s",
				n->id, seq, result);
		flows_ack(ss, seq, result);
	}
}

static void on_drained(struct session *ss)
{
	struct control_server *s = ss->env->ctx;

	mapstream_drained(s->ms, ss);
}

static void on_close(struct session *ss)
{
	struct control_server *s = ss->env->ctx;
	struct registry_node *e;

	mapstream_forget(s->ms, ss);
	if (ss->node_id)
		flows_collector_forget(s->flows, ss->node_id, ss);
	if (ss->node_id) {
		uint64_t id = ss->node_id;
		const struct control_node *n;

		ss->node_id = 0;
		s->n_streams--;
		e = registry_node_get(s->reg, id);
		if (e && e->stream == ss) {
			e->stream = NULL;
			mapper_unsubscribe(s->m, id);
			if (mapper_node_online(s->m, id, false, time_wall_s()) == 0) {
				persist_node(s, id);
				n = mapper_node_get(s->m, id);
				if (n)
					log_info("control: node %" PRIu64 " (%s) offline", id,
						 n->name);
				if (n && n->ephemeral)
					eph_arm(s, id);
			}
			mapstream_schedule(s->ms);
		}
	}
	if (ss->wait_id) {
		e = registry_node_get(s->reg, ss->wait_id);
		if (e && e->waiter == ss)
			e->waiter = NULL;
		ss->wait_id = 0;
	}
	if (ss->op) {
		ss->op->ss = NULL;
		ss->op = NULL;
	}
	/* Its registration stays pending (until approved or expired) without a waiter. */
	if (ss->pend) {
		if (ss->pend->waiter == ss)
			ss->pend->waiter = NULL;
		ss->pend = NULL;
	}
}

static const struct session_ops session_ops = {
    .on_register = on_register,
    .on_map_request = on_map_request,
    .on_endpoints = on_endpoints,
    .on_logout = on_logout,
    .on_flows = on_flows,
    .on_drained = on_drained,
    .on_close = on_close,
};

/* ---- HTTP ---- */

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
	struct metrics_snapshot m = {
		.ctr = &s->ctr,
		.streams = s->n_streams,
		.nodes = mapper_node_count(s->m),
		.netmaps_waiting = mapstream_waiting(s->ms),
		.netmaps_buffered = mapstream_buffered(s->ms),
	};
	char *text, *all = NULL;
	size_t len, all_len = 0;
	FILE *f;

	httpd_stats_get(s->httpd, &m.http);
	store_stats_get(s->store, &m.store);
	if (s->crl)
		crlhttp_stats_get(s->crl, &m.crl);
	if (metrics_render(&m, &text, &len) < 0)
		return httpd_error(r, 500, NULL);
	/* The embedded relay's metrics follow the server's. */
	f = open_memstream(&all, &all_len);
	if (f) {
		fwrite(text, 1, len, f);
		flows_collector_metrics_write(s->flows, f);
		control_relay_metrics_write(s->relay, f);
	}
	if (!f || fclose(f) != 0) {
		free(all);
		all = NULL;
	}
	if (all)
		httpd_reply(r, 200, "text/plain; version=0.0.4", all, all_len);
	else
		httpd_reply(r, 200, "text/plain; version=0.0.4", text, len);
	free(all);
	free(text);
}

static void get_healthz(struct httpd_request *r, void *ctx)
{
	(void)ctx;
	httpd_reply(r, 200, "text/plain", "ok\n", 3);
}

/* The page an interactive registration's URL leads to. */
static void get_register(struct httpd_request *r, void *ctx)
{
	static const char gone[] = "No registration waits under this code: it was approved, "
				   "it expired (15 minutes), or it never was. Run `trellis up` "
				   "again.\n";
	struct control_server *s = ctx;
	const struct http_request *req = r->head;
	size_t idlen = req->target_len - 10;
	char body[768], arg[8 + PENDING_CODE_LEN], code[PENDING_CODE_LEN + 1];
	int n;

	/* /register/CODE/METHOD: a login method's own page (web.h). */
	if (idlen > PENDING_CODE_LEN + 1 && req->target[10 + PENDING_CODE_LEN] == '/' && s->web) {
		char rest[64];

		snprintf(arg, sizeof(arg), "reg:%.*s", PENDING_CODE_LEN, req->target + 10);
		if (!pending_code_parse(arg, code) || idlen - PENDING_CODE_LEN - 1 >= sizeof(rest))
			return httpd_error(r, 404, NULL);
		snprintf(rest, sizeof(rest), "%.*s", (int)(idlen - PENDING_CODE_LEN - 1),
			 req->target + 11 + PENDING_CODE_LEN);
		return web_method_page(s->web, r, code, rest);
	}
	if (!idlen || idlen > 20)
		return httpd_error(r, 404, NULL);
	/* A pending registration's code, or (a node the store holds unapproved) its id. */
	snprintf(arg, sizeof(arg), "reg:%.*s", (int)idlen, req->target + 10);
	if (pending_code_parse(arg, code) && s->web)
		return web_page(s->web, r, code);
	if (pending_code_parse(arg, code)) {
		const struct pending_reg *pr = pending_get(s->pend, code);
		char mk[KEY_BASE64_LEN + 1], nk[KEY_BASE64_LEN + 1];

		if (!pr)
			return httpd_reply(r, 404, "text/plain; charset=utf-8", gone, sizeof(gone) - 1);
		/* What the admin compares with the machine before approving it (`trellis status`). */
		key_to_base64(mk, pr->machine_key);
		key_to_base64(nk, pr->node_key);
		n = snprintf(body, sizeof(body),
			     "This device waits for approval:\n"
			     "  hostname:    %s\n  os:          %s\n"
			     "  machine key: %s\n  node key:    %s\n"
			     "An administrator approves it on the server with:\n"
			     "  trellis-control nodes approve %s\n",
			     pr->hostname, pr->os[0] ? pr->os : "-", mk, nk, arg);
		return httpd_reply(r, 200, "text/plain; charset=utf-8", body, (size_t)n);
	}
	if (idlen != sizeof(REGISTER_APPROVAL_PAGE) - 1 ||
	    memcmp(req->target + 10, REGISTER_APPROVAL_PAGE, idlen) != 0)
		return httpd_error(r, 404, NULL);
	n = snprintf(body, sizeof(body),
		     "This device waits for an administrator's approval: `trellis-control nodes "
		     "list` shows it as pending,\n"
		     "and `trellis-control nodes approve ID|NAME` approves it.\n");
	httpd_reply(r, 200, "text/plain; charset=utf-8", body, (size_t)n);
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
	if (httpd_upgrade(r, "Upgrade: " HTTP_UPGRADE_TOKEN "\r\nConnection: Upgrade\r\n",
			  &up) == 0)
		session_take(&s->sessions, &up);
}

/* ---- admin API (admin_api.h) ---- */

/*
 * Our own writes do not come back through the change feed: apply each as it
 * commits, and say what the admin did.
 */
/*
 * A certificate was signed or renewed (docs/identity.md, "Renewed certificates"): its machine's
 * node, if it has a map stream, gets the newest one of its machine key and certificate key in
 * its next delta. The node takes it only when it names its own keys and ends later. Our own
 * writes come here from admin_committed, another process's through the change feed
 * (changed_mcert).
 */
static void mcert_push(struct control_server *s, const struct control_mcert *m)
{
	struct registry_node *e = registry_node_in_tailnet(s->reg, m->tailnet_id, m->machine_key);
	char *b64;

	if (!e || !e->id || !e->stream)
		return;
	b64 = malloc(CTRL_MCERT_MAX);
	if (b64 &&
	    ca_cert_newer_of(s->store, m->tailnet_id, m->machine_key, m->pub, 0, time_wall_s(), b64,
			     CTRL_MCERT_MAX) == 0 &&
	    mapper_node_mcert(s->m, e->id, b64) == 0) {
		s->ctr.mcerts_pushed++;
		log_info("control: node %" PRIu64 ": machine certificate pushed", e->id);
		mapstream_schedule(s->ms);
	}
	free(b64);
}

static void admin_committed(void *arg, const char *actor, const struct store_op *op, uint64_t id)
{
	struct control_server *s = arg;
	enum store_change_kind kind;

	switch (op->kind) {
	case STORE_OP_TAILNET_CREATE:
	case STORE_OP_TAILNET_UPDATE:
		kind = STORE_CHANGE_TAILNET;
		log_info("control: admin %s: tailnet %s written", actor, op->tailnet.name);
		id = id ? id : op->tailnet.id;
		break;
	case STORE_OP_USER_CREATE:
		kind = STORE_CHANGE_USER;
		log_info("control: admin %s: user %s created", actor, op->user.name);
		break;
	case STORE_OP_NODE_INSERT:
	case STORE_OP_NODE_UPDATE:
		kind = STORE_CHANGE_NODE;
		id = id ? id : op->node.id;
		log_info("control: admin %s: node %" PRIu64 " (%s) updated: %s, key %s", actor, id,
			 op->node.name, op->node.approved ? "approved" : "not approved",
			 op->node.expiry_disabled ? "expiry disabled"
			 : op->node.key_expiry && op->node.key_expiry <= time_wall_s() ? "expired"
										: "valid");
		break;
	case STORE_OP_NODE_DELETE:
		kind = STORE_CHANGE_NODE;
		id = op->id;
		log_info("control: admin %s: node %" PRIu64 " deleted", actor, id);
		break;
	case STORE_OP_AUTHKEY_CREATE:
	case STORE_OP_AUTHKEY_UPDATE:
		kind = STORE_CHANGE_AUTHKEY;
		id = id ? id : op->authkey.id;
		log_info("control: admin %s: auth key %s%s %s", actor, AUTHKEY_TEXT_PREFIX,
			 op->authkey.prefix,
			 op->kind == STORE_OP_AUTHKEY_CREATE ? "created"
			 : op->authkey.revoked		   ? "revoked"
							   : "updated");
		break;
	case STORE_OP_AUTHKEY_DELETE:
		kind = STORE_CHANGE_AUTHKEY;
		id = op->id;
		break;
	case STORE_OP_AUDIT_PRUNE:
		log_info("control: admin %s: audit log pruned (%" PRIu64 " entries)", actor, id);
		return;
	case STORE_OP_FLOW_PRUNE:
		/* The collector goes on from the anchors (flows_collect.c): nothing to apply. */
		log_info("control: admin %s: flow logs of tailnet %" PRIu64 " pruned (%" PRIu64
			 " batches)",
			 actor, op->flow_prune.tailnet_id, id);
		return;
	case STORE_OP_ACCOUNT_PUT:
	case STORE_OP_ACCOUNT_DELETE:
		/* Read from the store at each sign-in: nothing to apply. */
		log_info("control: admin %s: local account %s", actor,
			 op->kind == STORE_OP_ACCOUNT_DELETE ? "deleted" : op->account.email);
		return;
	case STORE_OP_POLICY_SET:
		kind = STORE_CHANGE_POLICY;
		id = op->policy.tailnet_id;
		log_info("control: admin %s: policy of tailnet %" PRIu64 " %s", actor, id,
			 op->policy.len ? "set" : "removed");
		break;
	case STORE_OP_CA_PUT:
	case STORE_OP_MCERT_PUT:
		/* Read from the store at each registration (ca.h); the lists served are remade. */
		crlhttp_changed(s->crl);
		if (op->kind == STORE_OP_MCERT_PUT && !op->mcert.revoked && op->mcert.has_pub)
			mcert_push(s, &op->mcert);
		if (op->kind == STORE_OP_CA_PUT)
			log_info("control: admin %s: machine CA of tailnet %" PRIu64 " created",
				 actor, op->ca.tailnet_id);
		else
			log_info("control: admin %s: machine certificate %s %s", actor,
				 op->mcert.serial, op->mcert.revoked ? "revoked" : "signed");
		return;
	default:
		log_info("control: admin %s: setting %s written", actor, op->setting.key);
		/* API keys are read from the store at each request: nothing to apply. */
		if (strcmp(op->setting.key, APIKEY_SETTING) == 0)
			return;
		kind = STORE_CHANGE_SETTING;
		id = 0;
		break;
	}
	changes_apply(&s->changes, kind, id, time_wall_s());
}

static int admin_node_online(void *arg, uint64_t id)
{
	struct control_server *s = arg;
	const struct registry_node *e = registry_node_get(s->reg, id);

	return e && e->stream;
}

static bool admin_relogin_code(void *arg, uint64_t node_id, char *ret, size_t size)
{
	struct control_server *s = arg;
	const struct pending_reg *pr = NULL;

	while ((pr = pending_next(s->pend, pr)))
		if (pr->node_id == node_id)
			return (size_t)snprintf(ret, size, "%s", pr->code) < size;
	return false;
}

static size_t admin_pending_list(void *arg, struct admin_api_pending *ret, size_t cap)
{
	struct control_server *s = arg;
	const struct pending_reg *pr = NULL;
	int64_t now = time_wall_s();
	uint64_t now_ns = loop_now_ns(s->loop);
	size_t n = 0;

	while ((pr = pending_next(s->pend, pr))) {
		const struct registry_tailnet *t = registry_tailnet_get(s->reg, pr->tailnet_id);
		struct admin_api_pending *p = &ret[n];

		if (n == cap)
			break;
		_Static_assert(sizeof(p->code) > PENDING_CODE_LEN, "room for a code");
		memset(p, 0, sizeof(*p));
		snprintf(p->code, sizeof(p->code), "%s", pr->code);
		snprintf(p->tailnet, sizeof(p->tailnet), "%s", t ? t->rec.name : "?");
		snprintf(p->hostname, sizeof(p->hostname), "%s", pr->hostname);
		snprintf(p->os, sizeof(p->os), "%s", pr->os);
		memcpy(p->machine_key, pr->machine_key, sizeof(p->machine_key));
		p->node_id = pr->node_id;
		p->expires = now + (int64_t)((pr->expires_ns > now_ns ? pr->expires_ns - now_ns : 0) /
					     NSEC_PER_SEC);
		n++;
	}
	return n;
}

/*
 * Runs on the loop thread: an operation's store writes block it for their
 * commit (an fsync, milliseconds). Admin requests are rare and this keeps one
 * writer of the in-memory state.
 */
static void admin_answer(struct control_server *s, struct httpd_request *r, const char *actor,
			 bool apikeys)
{
	const struct http_request *h = r->head;
	struct admin_api_env env = {
	    .store = s->store,
	    .state_dir = s->state_dir,
	    .public_url = s->public_url,
	    .committed = admin_committed,
	    .node_online = admin_node_online,
	    .pending_list = admin_pending_list,
	    .relogin_code = admin_relogin_code,
	    .arg = s,
	};
	char method[8], target[1024];
	struct admin_api_request req = {
		.method = method,
		.target = target,
		.body = (const char *)r->body,
		.body_len = r->body_len,
		.actor = actor,
		.apikeys = apikeys,
		.now = time_wall_s(),
	};
	char *body;
	size_t len;
	unsigned st;

	if (h->method_len >= sizeof(method) || h->target_len >= sizeof(target))
		return httpd_error(r, 414, "admin request target too long");
	memcpy(method, h->method, h->method_len);
	method[h->method_len] = '\0';
	memcpy(target, h->target, h->target_len);
	target[h->target_len] = '\0';
	st = admin_api_handle(&env, &req, &body, &len);
	httpd_reply(r, st, "application/json", body, len);
	free(body);
}

/* The unix socket: its mode (0600 in a 0700 directory) and the peer's uid both say root. */
static void admin_socket_request(struct httpd_request *r, void *ctx)
{
	char actor[64];

	if (r->peer_uid != 0 && r->peer_uid != (int64_t)geteuid())
		return httpd_error(r, 403, "admin socket: peer is not root");
	snprintf(actor, sizeof(actor), "socket:uid%lld", (long long)r->peer_uid);
	admin_answer(ctx, r, actor, true);
}

/* The public port: "Authorization: Bearer trellis-api-..." (apikey.h). */
static void admin_http_request(struct httpd_request *r, void *ctx)
{
	struct control_server *s = ctx;
	const struct http_header *auth =
		http_header_find(r->head->headers, r->head->n_headers, "Authorization");
	struct admin_op_ctx c = { .store = s->store };
	char key[APIKEY_STR_MAX + 8], actor[64];
	const struct apikey *k;
	struct apikey_set set;

	if (!auth || auth->value_len < 7 || auth->value_len >= sizeof(key) + 7 ||
	    strncasecmp(auth->value, "Bearer ", 7) != 0)
		return httpd_error(r, 401, "admin API without an API key");
	memcpy(key, auth->value + 7, auth->value_len - 7);
	key[auth->value_len - 7] = '\0';
	k = admin_op_apikey_list(&c, &set) == 0 ? apikey_check(&set, key, time_wall_s()) : NULL;
	crypto_wipe(key, sizeof(key));
	if (!k)
		return httpd_error(r, 401, "admin API: bad API key");
	snprintf(actor, sizeof(actor), "apikey:%s", k->id);
	admin_answer(s, r, actor, false);
}

static int admin_routes_add(struct httpd *h, httpd_handler_fn fn, void *ctx)
{
	static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};

	for (size_t i = 0; i < ARRAY_SIZE(methods); i++)
		if (httpd_route_add_body(h, methods[i], ADMIN_API_PREFIX, ADMIN_API_POLICY_BODY_MAX, fn,
					 ctx) < 0)
			return -ENOMEM;
	return 0;
}

static int admin_socket_open(struct control_server *s, const char *dir)
{
	struct httpd_opts o = { .name = "control-admin" };
	char path[4096];
	int r;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, ADMIN_SOCKET_NAME) >= sizeof(path))
		return -ENAMETOOLONG;
	r = httpd_new(s->loop, &o, &s->admin);
	if (r == 0)
		r = admin_routes_add(s->admin, admin_socket_request, s);
	if (r == 0)
		r = httpd_listen_unix(s->admin, path, 0600);
	if (r == 0)
		log_info("control: admin API on %s", path);
	return r;
}

/* ---- change feed ---- */

static void changed_node(void *ctx, uint64_t id)
{
	struct control_server *s = ctx;
	struct registry_node *e = registry_node_get(s->reg, id);
	const struct control_node *n = mapper_node_get(s->m, id);
	struct session *waiter = e ? e->waiter : NULL;

	mapstream_schedule(s->ms);
	/* Approved by the admin: the waiting registration is answered. */
	if (waiter && n && n->approved) {
		e->waiter = NULL;
		waiter->wait_id = 0;
		reply_register(waiter, CTRL_REGISTER_OK, NULL, n);
	}
}

static void deleted_node(void *ctx, uint64_t id)
{
	node_forget(ctx, id);
}

/* The relay map in force, from the store (the admin's) or the default; pushed as a delta. */
static void relays_apply(struct control_server *s)
{
	struct netmap_relay_map *rm = malloc(sizeof(*rm));
	struct relays_self self = {
		.relay = control_relay_pub(s->relay) != NULL,
		.stun_port = control_relay_stun_port(s->relay),
		.key = control_relay_pub(s->relay),
	};
	char err[256] = "";
	int r;

	if (!rm)
		return;
	r = relays_load(s->store, &self, rm, err, sizeof(err));
	if (r < 0)
		log_warn("control: the stored relay map: %s (using the default)", err);
	if (r == 0 || r == -EINVAL) {
		r = mapper_relaymap_set(s->m, rm);
		if (r < 0)
			log_warn("control: relay map not applied: %s", strerror(-r));
		else
			log_info("control: relay map of %u region%s", rm->n_regions,
				 rm->n_regions == 1 ? "" : "s");
		mapstream_schedule(s->ms);
	}
	free(rm);
}

/*
 * A tailnet's policy from the store into the mapper, which pushes what it changes. A stored
 * policy that no longer parses (a newer server wrote it) keeps the one in force.
 */
static void policy_apply(struct control_server *s, uint64_t tailnet_id)
{
	char *text = NULL, err[POLICY_ERR_MAX];
	struct policy *p = NULL;
	size_t len, n;
	int r = store_policy_get(s->store, tailnet_id, &text, &len);

	if (r == -ENOENT) {
		if (mapper_policy_has(s->m, tailnet_id)) {
			mapper_policy_set(s->m, tailnet_id, NULL);
			log_info("control: tailnet %" PRIu64 ": no policy, every node may reach every "
				 "other", tailnet_id);
			mapstream_schedule(s->ms);
		}
		return;
	}
	if (r < 0) {
		log_warn("control: tailnet %" PRIu64 ": cannot read its policy: %s", tailnet_id,
			 strerror(-r));
		return;
	}
	r = policy_parse(text, len, &p, err);
	free(text);
	if (r < 0) {
		log_warn("control: tailnet %" PRIu64 ": the stored policy: %s (the one in force stays)",
			 tailnet_id, err);
		return;
	}
	n = policy_rule_count(p);
	r = mapper_policy_set(s->m, tailnet_id, p);
	if (r < 0) {
		log_warn("control: tailnet %" PRIu64 ": policy not applied: %s", tailnet_id,
			 strerror(-r));
		return;
	}
	log_info("control: tailnet %" PRIu64 ": policy of %zu rule%s in force", tailnet_id, n,
		 n == 1 ? "" : "s");
	mapstream_schedule(s->ms);
}

static void changed_policy(void *ctx, uint64_t tailnet_id)
{
	policy_apply(ctx, tailnet_id);
}

/* A setting was written: the relay map, or an admin's approval of a waiting registration. */
static void changed_settings(void *ctx)
{
	relays_apply(ctx);
	pending_approvals_check(ctx);
}

/* A tailnet's settings: what the mapper marked for its nodes (a flow-log change) goes out. */
static void changed_tailnet(void *ctx, uint64_t tailnet_id)
{
	struct control_server *s = ctx;

	(void)tailnet_id;
	mapstream_schedule(s->ms);
}

/* Another process revoked, signed, added or retired: the revocation lists served are remade. */
static void changed_certs(void *ctx)
{
	struct control_server *s = ctx;

	crlhttp_changed(s->crl);
}

/*
 * Another process signed or renewed a certificate (a replica, a second trellis-control on the
 * database): pushed as our own are. A revocation pushes nothing (its node.expire does the rest).
 */
static void changed_mcert(void *ctx, uint64_t id)
{
	struct control_server *s = ctx;
	struct control_mcert m;

	if (store_mcert_get_id(s->store, id, &m) == 0 && !m.revoked && m.has_pub)
		mcert_push(s, &m);
}

static const struct changes_hooks changes_hooks = {
	.certs_changed = changed_certs,
	.mcert_changed = changed_mcert,
	.tailnet_changed = changed_tailnet,
	.node_changed = changed_node,
	.node_deleted = deleted_node,
	.settings_changed = changed_settings,
	.policy_changed = changed_policy,
};

/*
 * serve --machine-cert-auto-renew: renews, as `ca renew` does (audit entry cert.renew, actor
 * "server"), each certificate store_mcert_due picks (ca_renew_due's rules) whose machine has a
 * node, for as long as it was valid; admin_committed then pushes it.
 */
static void mcert_auto_renew(struct control_server *s, int64_t now)
{
	struct admin_op_ctx c = {.store = s->store,
				 .actor = "server",
				 .now = now,
				 .state_dir = s->state_dir,
				 .public_url = s->public_url,
				 .committed = admin_committed,
				 .arg = s};
	struct control_mcert *due = NULL;
	size_t n = 0;
	char *pem = NULL;

	if (!s->mcert_renew_sec || now < s->mcert_scan_at)
		return;
	s->mcert_scan_at = now + MCERT_SCAN_SEC;
	/* Only those ending within the window (an index range), not every certificate. */
	if (store_mcert_due(s->store, now, s->mcert_renew_sec, &due, &n) < 0 || !n)
		goto out;
	pem = malloc(MCERT_PEM_MAX);
	for (size_t i = 0; pem && i < n; i++) {
		const struct control_mcert *m = &due[i];
		const struct registry_node *e =
		    registry_node_in_tailnet(s->reg, m->tailnet_id, m->machine_key);
		struct control_mcert out;

		if (!e || !e->id)
			continue;
		if (ca_op_renew(&c, NULL, m->serial,
				m->not_after - m->not_before - MCERT_BACKDATE_SEC, pem,
				MCERT_PEM_MAX, &out) < 0) {
			s->ctr.mcerts_auto_failed++;
			log_ratelimited(LOG_LEVEL_WARN, "control: cannot renew certificate %s: %s",
					m->serial, c.err);
			continue;
		}
		s->ctr.mcerts_auto_renewed++;
		log_info("control: node %" PRIu64 ": certificate %s renewed as %s", e->id,
			 m->serial, out.serial);
	}
out:
	free(due);
	free(pem);
}

static void tick_cb(struct loop_timer *t)
{
	struct control_server *s = container_of(t, struct control_server, tick_t);

	changes_drain(&s->changes, time_wall_s());
	version_refresh(s);
	pending_expire(s);
	if (mapper_expire(s->m, time_wall_s()) > 0)
		mapstream_schedule(s->ms);
	/* Deleted, expired, logged out, rotated away: off the relay too. */
	control_relay_tick(s->relay);
	flows_pruner_tick(s->prune, time_wall_s());
	mcert_auto_renew(s, time_wall_s());
	loop_timer_arm(s->loop, t, loop_now_ns(s->loop) + TICK_NS);
}

/* ---- setup ---- */

/* Each tailnet has a user "default" for nodes registered without one. */
static void default_users_ensure(struct control_server *s)
{
	struct registry_tailnet *t = NULL;

	while ((t = registry_tailnet_next(s->reg, t))) {
		struct control_user u = { .tailnet_id = t->rec.id };

		if (t->default_user)
			continue;
		snprintf(u.name, sizeof(u.name), REGISTRY_DEFAULT_USER);
		u.created = time_wall_s();
		if (store_user_create(s->store, &u) == 0 ||
		    store_user_get_by_name(s->store, t->rec.id, REGISTRY_DEFAULT_USER, &u) == 0)
			registry_user_put(s->reg, &u);
	}
}

/*
 * The state directory holds the server's private key and every node record:
 * one made before us (by hand, by an older version) with looser modes is
 * tightened to 0700, as a fresh one is.
 */
static int state_dir_tighten(const char *dir)
{
	struct stat st;
	int r;

	if (stat(dir, &st) < 0) {
		r = -errno;
		log_err("control: %s: %s", dir, strerror(errno));
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_err("control: %s is not a directory", dir);
		return -ENOTDIR;
	}
	if ((st.st_mode & 077) && chmod(dir, st.st_mode & 0700) < 0) {
		r = -errno;
		log_err("control: cannot make %s private (0700): %s", dir, strerror(errno));
		return r;
	}
	return 0;
}

static int key_load(struct control_server *s, const char *dir)
{
	char path[4096], text[KEY_BASE64_LEN + 2];
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
			goto fail;
		}
		n = write(fd, text, KEY_BASE64_LEN + 1);
		r = fsync(fd);
		close(fd);
		if (n != KEY_BASE64_LEN + 1 || r < 0) {
			log_err("control: cannot write %s", path);
			/* No half-written key left behind for the next start to trust. */
			unlink(path);
			r = -EIO;
			goto fail;
		}
		log_info("control: created server key %s", path);
	} else {
		r = -errno;
		log_err("control: cannot open %s: %s", path, strerror(errno));
		return r;
	}
	crypto_wipe(text, sizeof(text));
	if (x25519_public_from_private(s->pub, s->priv) < 0)
		goto bad;
	key_to_base64(s->pub_b64, s->pub);
	return 0;
bad:
	log_err("control: %s is not a base64 X25519 key", path);
	r = -EINVAL;
fail:
	crypto_wipe(text, sizeof(text));
	crypto_wipe(s->priv, sizeof(s->priv));
	return r;
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
	struct admin_op_ctx actx = { .actor = "server" };
	struct store_snapshot snap;
	struct control_tailnet def;
	int64_t now = time_wall_s();
	size_t i;
	int r;

	actx.store = s->store;
	actx.now = now;
	r = admin_op_tailnet_resolve(&actx, NULL, &def);
	if (r < 0)
		return r;
	s->default_tid = def.id;
	r = store_load(s->store, &snap);
	if (r < 0)
		return r;
	s->changes.cursor = snap.change_seq;
	for (i = 0; i < snap.n_tailnets; i++)
		registry_tailnet_put(s->reg, &snap.tailnets[i]);
	for (i = 0; i < snap.n_users; i++)
		registry_user_put(s->reg, &snap.users[i]);
	default_users_ensure(s);
	for (i = 0; i < snap.n_authkeys; i++)
		registry_authkey_put(s->reg, &snap.authkeys[i]);
	presumed_load(s);
	if (s->n_presumed)
		qsort(s->presumed, s->n_presumed, sizeof(*s->presumed), u64_cmp);
	for (i = 0; i < snap.n_nodes; i++) {
		struct control_node *n = &snap.nodes[i];
		struct registry_node *e;

		n->online = s->n_presumed && bsearch(&n->id, s->presumed, s->n_presumed,
						     sizeof(*s->presumed), u64_cmp);
		registry_node_sync(s->reg, n, now);
		e = n->online ? registry_node_get(s->reg, n->id) : NULL;
		if (e)
			e->presumed = true;
		/* Nodes get the full timeout to come back after a restart of control. */
		if (n->ephemeral)
			eph_arm(s, n->id);
	}
	log_info("control: loaded %zu tailnets, %zu users, %zu nodes, %zu auth keys",
		 snap.n_tailnets, snap.n_users, snap.n_nodes, snap.n_authkeys);
	if (s->n_presumed)
		log_info("control: %zu nodes online at the last stop: presumed online for %llu s",
			 s->n_presumed, (unsigned long long)(PRESUME_NS / NSEC_PER_SEC));
	store_snapshot_free(&snap);
	version_refresh(s);
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
	s->tick_t.cb = tick_cb;
	s->presume_t.cb = presume_end;
	r = -ENOMEM;
	s->loop = loop_new();
	s->m = mapper_new();
	if (!s->loop || !s->m || registry_new(s->m, &s->reg) < 0 ||
	    mapstream_new(s->loop, s->m, s->reg, &s->ctr, &s->ms) < 0 ||
	    ephemeral_new(s->loop, eph_expired, s, &s->eph) < 0 || pending_new(&s->pend) < 0)
		goto out;
	session_env_init(&s->sessions);
	s->sessions.loop = s->loop;
	s->sessions.server_priv = s->priv;
	s->sessions.server_pub = s->pub;
	s->sessions.ops = &session_ops;
	s->sessions.ctx = s;
	s->sessions.ctr = &s->ctr;
	if (mkdir(opts->state_dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		log_err("control: cannot create %s: %s", opts->state_dir, strerror(errno));
		goto out;
	}
	s->state_dir = strdup(opts->state_dir);
	s->mcert_renew_sec = opts->mcert_auto_renew_sec;
	if (opts->public_url) {
		s->public_url = strdup(opts->public_url);
		if (s->public_url) {
			size_t n = strlen(s->public_url);

			while (n > 0 && s->public_url[n - 1] == '/')
				s->public_url[--n] = '\0';
		}
	}
	if (!s->state_dir || (opts->public_url && !s->public_url)) {
		r = -ENOMEM;
		goto out;
	}
	r = state_dir_tighten(opts->state_dir);
	if (r < 0)
		goto out;
	r = key_load(s, opts->state_dir);
	if (r < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/%s", opts->state_dir, STORE_DB_NAME);
	r = opts->store_backend ? store_open_backend(opts->store_backend, path, &s->store)
				: store_open(path, &s->store);
	if (r < 0) {
		log_err("control: cannot open %s: %s", path, strerror(-r));
		goto out;
	}
	/* Before anything may submit a write: completions come back through the loop. */
	store_loop_attach(s->store, s->loop);
	s->changes.store = s->store;
	s->changes.reg = s->reg;
	s->changes.hooks = &changes_hooks;
	s->changes.ctx = s;
	r = flows_collector_new(s->store, &s->flows);
	if (r < 0)
		goto out;
	r = flows_pruner_new(s->store, s->reg, &s->prune);
	if (r < 0)
		goto out;
	r = state_load(s);
	if (r < 0) {
		log_err("control: cannot load the store: %s", strerror(-r));
		goto out;
	}
	/* After state_load: the last run's stop is known. */
	s->scan = feedscan_new(s->store, RESUME_MISSED_MAX, s->stop_begin, s->stop_end);
	if (!s->scan) {
		r = -ENOMEM;
		goto out;
	}
	r = httpd_new(s->loop, &hopts, &s->httpd);
	if (r < 0)
		goto out;
	{
		struct web_env we = {
			.loop = s->loop,
			.store = s->store,
			.tls = httpd_tls(s->httpd),
			.consumer_domains = opts->consumer_domains,
			.pending_get = web_pending_get,
			.pending_complete = web_pending_complete,
			.committed = admin_committed,
			.arg = s,
		};
		char err[OIDC_ERR_MAX];

		r = web_new(&we, &s->web);
		if (r == 0)
			r = web_routes_add(s->web, s->httpd);
		if (r < 0)
			goto out;
		if (opts->oidc) {
			r = weboidc_new(s->loop, s->web, opts->oidc, &s->oidc, err, sizeof(err));
			if (r < 0) {
				log_err("control: OIDC: %s", err);
				goto out;
			}
			/* Before GET /register/: the first route that matches wins. */
			r = weboidc_routes_add(s->oidc, s->httpd);
			if (r < 0)
				goto out;
		}
	}
	r = crlhttp_new(s->store, opts->state_dir, &s->crl);
	if (r == 0)
		r = crlhttp_routes_add(s->crl, s->httpd);
	if (r < 0)
		goto out;
	if (httpd_route_add(s->httpd, "GET", "/key", get_key, s) < 0 ||
	    httpd_route_add(s->httpd, "GET", "/register/", get_register, s) < 0 ||
	    httpd_route_add(s->httpd, "GET", "/healthz", get_healthz, s) < 0 ||
	    httpd_route_add(s->httpd, "POST", "/control", post_control, s) < 0 ||
	    admin_routes_add(s->httpd, admin_http_request, s) < 0) {
		r = -ENOMEM;
		goto out;
	}
	{
		struct control_relay_opts ro = {
			.state_dir = opts->state_dir,
			.relay = !opts->no_relay,
			.stun_port = opts->stun_port,
			.stun_required = opts->stun_port_set,
		};

		r = control_relay_new(s->loop, s->httpd, s->m, &ro, &s->relay);
		if (r < 0)
			goto out;
	}
	/* The default map describes the relay and STUN server just made. */
	relays_apply(s);
	for (const struct registry_tailnet *t = registry_tailnet_next(s->reg, NULL); t;
	     t = registry_tailnet_next(s->reg, t))
		policy_apply(s, t->rec.id);
	/* Before the public port: whoever sees the server listen can reach its admin socket. */
	r = admin_socket_open(s, opts->state_dir);
	if (r < 0)
		goto out;
	nofile_raise();
	r = httpd_listen(s->httpd, opts->listen ? opts->listen : CONTROL_LISTEN_DEFAULT);
	if (r < 0)
		goto out;
	/* Counters tell an outsider how busy we are and what fails: not on the public port. */
	if (opts->metrics_listen) {
		struct httpd_opts mopts = { .name = "control-metrics" };

		r = httpd_new(s->loop, &mopts, &s->metrics);
		if (r == 0)
			r = httpd_route_add(s->metrics, "GET", "/metrics", get_metrics, s);
		if (r == 0)
			r = httpd_listen(s->metrics, opts->metrics_listen);
		if (r < 0)
			goto out;
		log_info("control: metrics on http://%s/metrics", httpd_listen_name(s->metrics));
	}
	s->stop_async.cb = stop_cb;
	loop_async_add(s->loop, &s->stop_async);
	loop_timer_arm(s->loop, &s->tick_t, loop_now_ns(s->loop) + TICK_NS);
	if (s->n_presumed)
		loop_timer_arm(s->loop, &s->presume_t, loop_now_ns(s->loop) + PRESUME_NS);
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

uint16_t control_server_metrics_port(const struct control_server *s)
{
	return s->metrics ? httpd_port(s->metrics) : 0;
}

int control_server_run(struct control_server *s)
{
	return loop_run(s->loop);
}

void control_server_stop(struct control_server *s)
{
	loop_async_send(&s->stop_async);
}

void control_server_free(struct control_server *s)
{
	if (!s)
		return;
	if (s->loop && s->store && s->sessions.n_live)
		stop_mark_begin(s);
	if (s->loop)
		session_env_close_all(&s->sessions);
	/* Their workers' last answers may read and write the store: before it goes. */
	weboidc_free(s->oidc);
	web_free(s->web);
	if (s->store) {
		/* Completions of writes still in flight must not run into freed state;
		 * a completion may submit the coalesced next write of its node. */
		do
			store_flush(s->store);
		while (store_completions_run(s->store) > 0);
		if (s->stop_marked)
			stop_mark_end(s);
		store_loop_detach(s->store);
	}
	if (s->loop)
		loop_async_del(&s->stop_async);
	mapstream_free(s->ms);
	feedscan_free(s->scan);
	store_free(s->store);
	/* After the store: every write's completion has run. */
	flows_collector_free(s->flows);
	flows_pruner_free(s->prune);
	control_relay_free(s->relay);
	/* After the sessions and the relay: they held slots of its limits. */
	httpd_free(s->httpd);
	httpd_free(s->metrics);
	httpd_free(s->admin);
	ephemeral_free(s->eph);
	pending_free(s->pend);
	free(s->presumed);
	free(s->unfed);
	registry_free(s->reg);
	mapper_free(s->m);
	loop_free(s->loop);
	crypto_wipe(s->priv, sizeof(s->priv));
	crlhttp_free(s->crl);
	free(s->public_url);
	free(s->state_dir);
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
	if (r == 0) {
		char st[256];

		/* Every listener is bound and the store loaded: under systemd, dependents may start. */
		snprintf(st, sizeof(st), "READY=1\nSTATUS=listening on %s",
			 httpd_listen_name(s->httpd));
		if (sd_notify_send(st) < 0)
			log_warn("control: cannot tell systemd we are ready ($NOTIFY_SOCKET)");
		r = control_server_run(s);
		sd_notify_send("STOPPING=1");
	}
	control_server_free(s);
	return r;
}
