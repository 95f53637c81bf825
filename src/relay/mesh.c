// SPDX-License-Identifier: MIT
/*
 * Mesh links (mesh.h). Each peer is IDLE (waiting for its redial timer),
 * DIALING (a job on the worker pool connects and upgrades; blocking calls
 * with a deadline that a stop interrupts at once), or UP (the server runs the
 * link; its down hook brings the peer back to IDLE).
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "base/workq.h"
#include "crypto/crypto.h"
#include "net/dial.h"
#include "net/httpd.h"
#include "relay/internal.h"
#include "relay/mesh.h"
#include "relay/server.h"

#define DIAL_TIMEOUT_NS (5 * NSEC_PER_SEC)
#define REDIAL_NS NSEC_PER_SEC
#define REST_MAX 4096

enum { PEER_IDLE, PEER_DIALING, PEER_UP };

struct peer {
	struct relay_mesh *m;
	char url[DIAL_NAME_MAX];
	struct dial_url u;
	bool has_pin;
	uint8_t pin[KEY_LEN]; /* URL#KEY: the peer's relay key */
	int state;
	struct loop_timer redial_t;
	struct workq_job job;
	/* the job's result */
	struct dial_conn conn;
	int err;
	char errmsg[256];
	uint8_t rest[REST_MAX];
	size_t rest_len;
	bool logged_down;
};

struct relay_mesh {
	struct loop *loop;
	struct relay_server *s;
	struct workq *wq;
	SSL_CTX *ssl_ctx;
	struct dial_cancel cancel; /* interrupts the workers' dials at stop */
	atomic_bool stop;
	bool stopping;
	struct peer *peers;
	size_t n;
};

static void redial_arm(struct peer *p)
{
	uint32_t jitter;

	crypto_random(&jitter, sizeof(jitter));
	p->state = PEER_IDLE;
	loop_timer_arm(p->m->loop, &p->redial_t,
		       loop_now_ns(p->m->loop) + REDIAL_NS + jitter % (REDIAL_NS / 2));
}

static void dial_work(struct workq_job *j)
{
	struct peer *p = container_of(j, struct peer, job);
	struct relay_mesh *m = p->m;
	struct dial_opts o = {
	    .host = p->u.host,
	    .port = p->u.port,
	    .tls = p->u.tls,
	    .name = p->url,
	    .ssl_ctx = m->ssl_ctx,
	    .deadline_ns = time_now_ns() + DIAL_TIMEOUT_NS,
	    .cancel = m->cancel,
	};
	struct http_response resp;
	char req[1024], buf[HTTP_HEAD_MAX + REST_MAX];
	ssize_t n;
	int len;

	p->rest_len = 0;
	p->errmsg[0] = '\0';
	p->err = dial_open(&p->conn, &o, p->errmsg, sizeof(p->errmsg));
	if (p->err < 0)
		return;
	len = http_request_build(req, sizeof(req), "GET", RELAY_HTTP_PATH, p->u.authority,
				 "Connection: Upgrade\r\nUpgrade: " RELAY_UPGRADE_TOKEN "\r\n", 0);
	if (len < 0) {
		p->err = len;
		goto fail;
	}
	n = dial_http_upgrade(&p->conn, req, (size_t)len, buf, sizeof(buf), &resp, o.deadline_ns,
			      p->errmsg, sizeof(p->errmsg));
	if (n < 0) {
		p->err = (int)n;
		goto fail;
	}
	p->rest_len = (size_t)n - resp.head_len;
	memcpy(p->rest, buf + resp.head_len, p->rest_len);
	return;
fail:
	dial_close(&p->conn, 0);
}

static void link_down(void *ctx)
{
	struct peer *p = ctx;

	if (p->m->stopping)
		return;
	log_info("relay: mesh peer %s: link down", p->url);
	redial_arm(p);
}

static void dial_done(struct workq_job *j, int err)
{
	struct peer *p = container_of(j, struct peer, job);
	struct relay_mesh *m = p->m;
	struct httpd_io io;

	if (err == 0)
		err = p->err;
	if (m->stopping) {
		if (err == 0)
			dial_close(&p->conn, 0);
		return;
	}
	if (err < 0) {
		if (!p->logged_down)
			log_warn("relay: mesh peer %s: %s", p->url,
				 p->errmsg[0] ? p->errmsg : strerror(-err));
		p->logged_down = true;
		redial_arm(p);
		return;
	}
	memset(&io, 0, sizeof(io));
	io.fd = p->conn.fd;
	io.ssl = p->conn.ssl;
	p->conn.fd = -1;
	p->conn.ssl = NULL;
	p->state = PEER_UP;
	if (relay_server_link_take(m->s, &io, p->rest, p->rest_len, p->url,
				   p->has_pin ? p->pin : NULL, link_down, p) < 0) {
		redial_arm(p);
		return;
	}
	log_info("relay: mesh peer %s: connected", p->url);
	p->logged_down = false;
}

static void redial(struct loop_timer *t)
{
	struct peer *p = container_of(t, struct peer, redial_t);

	p->state = PEER_DIALING;
	p->conn.fd = -1;
	if (workq_submit(p->m->wq, &p->job, dial_work, dial_done) < 0)
		redial_arm(p);
}

int relay_mesh_new(struct loop *loop, struct relay_server *s, const char *const *urls, size_t n,
		   struct relay_mesh **ret)
{
	struct relay_mesh *m = calloc(1, sizeof(*m));
	int r = -ENOMEM;

	if (!m)
		return -ENOMEM;
	m->loop = loop;
	m->s = s;
	m->cancel.wake_fd = -1;
	m->peers = calloc(n ? n : 1, sizeof(*m->peers));
	if (!m->peers)
		goto out;
	for (size_t i = 0; i < n; i++) {
		struct peer *p = &m->peers[i];
		char *hash;

		p->m = m;
		p->redial_t.cb = redial;
		snprintf(p->url, sizeof(p->url), "%s", urls[i]);
		hash = strchr(p->url, '#');
		if (hash) {
			*hash++ = '\0';
			if (key_from_base64(p->pin, hash) < 0) {
				log_err("relay: --mesh-peer %s: after # comes the peer's relay key "
					"(base64)",
					urls[i]);
				r = -EINVAL;
				goto out;
			}
			p->has_pin = true;
		}
		if (dial_url_parse(p->url, &p->u) < 0) {
			log_err("relay: --mesh-peer %s: not an http:// or https:// URL", urls[i]);
			r = -EINVAL;
			goto out;
		}
		m->n++;
	}
	m->ssl_ctx = dial_tls_ctx_new();
	if (dial_cancel_open(&m->cancel, &m->stop) < 0 || !m->ssl_ctx)
		goto out;
	r = workq_new(loop, (unsigned)MIN(MAX(n, (size_t)1), (size_t)4), n + 1, &m->wq);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < m->n; i++) {
		m->peers[i].state = PEER_IDLE;
		redial(&m->peers[i].redial_t);
	}
	*ret = m;
	return 0;
out:
	relay_mesh_free(m);
	return r;
}

void relay_mesh_free(struct relay_mesh *m)
{
	if (!m)
		return;
	m->stopping = true;
	atomic_store(&m->stop, true);
	if (m->cancel.wake_fd >= 0 && dial_cancel_wake(&m->cancel) < 0)
		log_debug("relay: mesh: wake failed");
	workq_free(m->wq);
	for (size_t i = 0; i < m->n; i++)
		loop_timer_disarm(m->loop, &m->peers[i].redial_t);
	dial_cancel_close(&m->cancel);
	SSL_CTX_free(m->ssl_ctx);
	free(m->peers);
	free(m);
}
