// SPDX-License-Identifier: MIT
/*
 * The --verify-clients client (verify.h). State: a list of keys waiting for
 * an answer (new clients, with their admission token; or clients to check
 * again, token 0), at most one request in flight (a workq job that dials,
 * asks and reads the answer), and the last generation the server reported.
 */
#include <errno.h>
#include <inttypes.h>
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
#include "relay/server.h"
#include "relay/verify.h"

#define POLL_NS (500 * NSEC_PER_MSEC)
#define REQ_TIMEOUT_NS (5 * NSEC_PER_SEC)
#define WAIT_MAX 100000 /* keys waiting: beyond, new clients are refused at once */
#define BODY_MAX (32 + RELAY_VERIFY_KEYS_MAX * 4)

struct wait {
	struct wait *next;
	uint64_t token; /* 0: a recheck of an admitted client */
	uint8_t key[RELAY_KEY_LEN];
};

struct relay_verify {
	struct loop *loop;
	struct relay_server *s;
	struct workq *wq;
	SSL_CTX *ssl_ctx;
	struct dial_cancel cancel; /* interrupts the worker's request at stop */
	atomic_bool stop;
	bool stopping;
	char url[DIAL_NAME_MAX];
	struct dial_url u;
	char auth[KEY_BASE64_LEN + 32];
	struct wait *head, *tail;
	size_t n_wait;
	struct loop_timer poll_t;
	uint64_t gen;
	bool have_gen;
	/* the request in flight */
	bool busy;
	struct workq_job job;
	struct wait *batch[RELAY_VERIFY_KEYS_MAX];
	size_t n_batch;
	int err;
	uint64_t ans_gen;
	uint8_t ans[RELAY_VERIFY_KEYS_MAX];
	char errmsg[DIAL_NAME_MAX + 64];
	/* counters */
	uint64_t requests, failures, admitted, refused, revoked;
};

static void job_start(struct relay_verify *v);

static void verify_work(struct workq_job *j)
{
	struct relay_verify *v = container_of(j, struct relay_verify, job);
	struct dial_opts o = {
	    .host = v->u.host,
	    .port = v->u.port,
	    .tls = v->u.tls,
	    .name = v->url,
	    .ssl_ctx = v->ssl_ctx,
	    .deadline_ns = time_now_ns() + REQ_TIMEOUT_NS,
	    .cancel = v->cancel,
	};
	struct dial_conn c = {.fd = -1};
	char target[HTTP_HEAD_MAX], buf[HTTP_HEAD_MAX + BODY_MAX], req[HTTP_HEAD_MAX + 512];
	struct http_response resp;
	size_t off;
	ssize_t n;
	char *p, *end;
	int len;

	v->errmsg[0] = '\0';
	off =
	    (size_t)snprintf(target, sizeof(target), "%s?gen=%" PRIu64, RELAY_VERIFY_PATH, v->gen);
	for (size_t i = 0; i < v->n_batch; i++) {
		char b64[KEY_BASE64_LEN + 1];

		key_to_base64(b64, v->batch[i]->key);
		off += (size_t)snprintf(target + off, sizeof(target) - off, "&k=%s", b64);
	}
	len = http_request_build(req, sizeof(req), "GET", target, v->u.authority, v->auth, 0);
	if (len < 0) {
		v->err = len;
		return;
	}
	v->err = dial_open(&c, &o, v->errmsg, sizeof(v->errmsg));
	if (v->err < 0)
		return;
	n = dial_http_request(&c, req, (size_t)len, buf, sizeof(buf) - 1, &resp, o.deadline_ns,
			      v->errmsg, sizeof(v->errmsg));
	if (n >= 0)
		n = dial_http_body_read(&c, buf, sizeof(buf) - 1, (size_t)n, &resp, o.deadline_ns,
					v->errmsg, sizeof(v->errmsg));
	dial_close(&c, 0);
	if (n < 0) {
		v->err = (int)n;
		return;
	}
	if (resp.status != 200) {
		snprintf(v->errmsg, sizeof(v->errmsg), "%s answered %u", v->url, resp.status);
		v->err = resp.status == 401 || resp.status == 403 ? -EACCES : -EPROTO;
		return;
	}
	buf[n] = '\0';
	/* "gen N\n" then one "1" or "0" line per key, in order. */
	p = buf + resp.head_len;
	if (strncmp(p, "gen ", 4) != 0)
		goto bad;
	v->ans_gen = strtoull(p + 4, &end, 10);
	if (*end != '\n')
		goto bad;
	p = end + 1;
	for (size_t i = 0; i < v->n_batch; i++, p += 2) {
		if ((p[0] != '0' && p[0] != '1') || p[1] != '\n')
			goto bad;
		v->ans[i] = p[0] == '1';
	}
	v->err = 0;
	return;
bad:
	snprintf(v->errmsg, sizeof(v->errmsg), "%s: malformed answer", v->url);
	v->err = -EBADMSG;
}

/* Queues a key to ask about. false when the queue is full or memory is short. */
static bool wait_push(struct relay_verify *v, const uint8_t *key, uint64_t token)
{
	struct wait *w;

	if (v->n_wait >= WAIT_MAX || !(w = calloc(1, sizeof(*w))))
		return false;
	w->token = token;
	memcpy(w->key, key, RELAY_KEY_LEN);
	if (v->tail)
		v->tail->next = w;
	else
		v->head = w;
	v->tail = w;
	v->n_wait++;
	return true;
}

static void recheck_one(void *ctx, const uint8_t key[RELAY_KEY_LEN])
{
	wait_push(ctx, key, 0);
}

static void verify_done(struct workq_job *j, int err)
{
	struct relay_verify *v = container_of(j, struct relay_verify, job);
	size_t n = v->n_batch;

	v->busy = false;
	v->n_batch = 0;
	if (err == 0)
		err = v->err;
	if (err < 0 && !v->stopping) {
		v->failures++;
		log_ratelimited(LOG_LEVEL_WARN, "relay: verify: %s",
				v->errmsg[0] ? v->errmsg : strerror(-err));
	}
	v->requests++;
	for (size_t i = 0; i < n; i++) {
		struct wait *w = v->batch[i];
		bool ok = err == 0 && v->ans[i];

		if (v->stopping) {
			free(w);
			continue;
		}
		if (w->token) {
			if (ok)
				v->admitted++;
			else
				v->refused++;
			relay_server_admit_done(v->s, w->token, ok);
		} else if (err == 0 && !ok && relay_server_revoke(v->s, w->key)) {
			v->revoked++;
		}
		free(w);
	}
	if (v->stopping)
		return;
	if (err == 0) {
		/* The server's nodes changed: what we hold must be asked about again. */
		if (v->have_gen && v->ans_gen != v->gen)
			relay_server_clients_each(v->s, recheck_one, v);
		v->gen = v->ans_gen;
		v->have_gen = true;
	}
	if (v->head)
		job_start(v);
}

static void job_start(struct relay_verify *v)
{
	if (v->busy || v->stopping)
		return;
	while (v->head && v->n_batch < RELAY_VERIFY_KEYS_MAX) {
		struct wait *w = v->head;

		v->head = w->next;
		if (!v->head)
			v->tail = NULL;
		v->n_wait--;
		w->next = NULL;
		v->batch[v->n_batch++] = w;
	}
	v->busy = true;
	if (workq_submit(v->wq, &v->job, verify_work, verify_done) < 0) {
		v->err = -EAGAIN;
		verify_done(&v->job, -EAGAIN);
	}
}

static void poll_cb(struct loop_timer *t)
{
	struct relay_verify *v = container_of(t, struct relay_verify, poll_t);

	job_start(v);
	loop_timer_arm(v->loop, t, loop_now_ns(v->loop) + POLL_NS);
}

static int check(void *ctx, const uint8_t key[RELAY_KEY_LEN], uint64_t token)
{
	struct relay_verify *v = ctx;

	if (!wait_push(v, key, token)) {
		v->refused++;
		return 0;
	}
	job_start(v);
	return -EINPROGRESS;
}

static void cancel(void *ctx, uint64_t token)
{
	struct relay_verify *v = ctx;
	struct wait **pp, *prev = NULL;

	/* Waiting: forget it. In flight: its answer finds no connection (ignored). */
	for (pp = &v->head; *pp; prev = *pp, pp = &(*pp)->next) {
		struct wait *w = *pp;

		if (w->token != token)
			continue;
		*pp = w->next;
		if (v->tail == w)
			v->tail = prev;
		v->n_wait--;
		free(w);
		return;
	}
}

static const struct relay_admit_ops ops = {.check = check, .cancel = cancel};

const struct relay_admit_ops *relay_verify_admit_ops(void)
{
	return &ops;
}

int relay_verify_new(struct loop *loop, const char *url, const uint8_t secret[32],
		     struct relay_verify **ret)
{
	struct relay_verify *v = calloc(1, sizeof(*v));
	char b64[KEY_BASE64_LEN + 1];
	int r = -ENOMEM;

	if (!v)
		return -ENOMEM;
	v->loop = loop;
	v->cancel.wake_fd = -1;
	v->poll_t.cb = poll_cb;
	snprintf(v->url, sizeof(v->url), "%s", url);
	if (dial_url_parse(url, &v->u) < 0) {
		log_err("relay: --verify-clients %s: not an http:// or https:// URL", url);
		r = -EINVAL;
		goto out;
	}
	key_to_base64(b64, secret);
	snprintf(v->auth, sizeof(v->auth), "Authorization: Bearer %s\r\n", b64);
	crypto_wipe(b64, sizeof(b64));
	v->ssl_ctx = dial_tls_ctx_new();
	if (dial_cancel_open(&v->cancel, &v->stop) < 0 || !v->ssl_ctx ||
	    workq_new(loop, 1, 2, &v->wq) < 0)
		goto out;
	*ret = v;
	return 0;
out:
	relay_verify_free(v);
	return r;
}

void relay_verify_attach(struct relay_verify *v, struct relay_server *s)
{
	v->s = s;
	poll_cb(&v->poll_t);
}

void relay_verify_free(struct relay_verify *v)
{
	if (!v)
		return;
	v->stopping = true;
	atomic_store(&v->stop, true);
	if (v->cancel.wake_fd >= 0 && dial_cancel_wake(&v->cancel) < 0)
		log_debug("relay: verify: wake failed");
	workq_free(v->wq);
	loop_timer_disarm(v->loop, &v->poll_t);
	while (v->head) {
		struct wait *w = v->head;

		v->head = w->next;
		free(w);
	}
	dial_cancel_close(&v->cancel);
	SSL_CTX_free(v->ssl_ctx);
	crypto_wipe(v->auth, sizeof(v->auth));
	free(v);
}

void relay_verify_metrics_write(const struct relay_verify *v, FILE *f)
{
	if (!v)
		return;
	fprintf(f,
		"# HELP trellis_relay_verify_total Admission checks against the control server.\n"
		"# TYPE trellis_relay_verify_total counter\n"
		"trellis_relay_verify_total{what=\"request\"} %" PRIu64 "\n"
		"trellis_relay_verify_total{what=\"failed_request\"} %" PRIu64 "\n"
		"trellis_relay_verify_total{what=\"admitted\"} %" PRIu64 "\n"
		"trellis_relay_verify_total{what=\"refused\"} %" PRIu64 "\n"
		"trellis_relay_verify_total{what=\"revoked\"} %" PRIu64 "\n",
		v->requests, v->failures, v->admitted, v->refused, v->revoked);
}
