/* SPDX-License-Identifier: MIT */
/*
 * trellisd's local API as a local client drives it: the input is written to a
 * real connection of a real server (usock + localapi, fake backend) in chunks
 * whose sizes the first byte picks, and the server's event handlers run after
 * each chunk, so framing sees requests split and joined at every place. Then the
 * client shuts its side and reads everything. Every reply must be one JSON
 * object with a boolean "ok" per line; nothing may crash, leak or hang.
 * Without a running loop no timer fires: deadlines are the unit tests' part.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/loop.h"
/* Short lines: over-long ones stay within reach of the mutator's input sizes. */
#define LOCALAPI_REQUEST_MAX 1024
#include "node/localapi.c"
#include "node/usock.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct loop *lp;
static struct localapi_server *srv;
static struct localapi_req *pending;
static char path[108];

static int fake_status(void *ctx, json_t **ret)
{
	struct netmap_node peers[2];
	struct netmap nm = {.seq = 1, .n_peers = 2, .peers = peers};
	unsigned i;

	(void)ctx;
	memset(&nm.self, 0, sizeof(nm.self));
	memset(peers, 0, sizeof(peers));
	snprintf(nm.tailnet, sizeof(nm.tailnet), "example");
	nm.self.id = 1;
	snprintf(nm.self.name, sizeof(nm.self.name), "self");
	nm.self.n_addresses = 1;
	nm.self.addresses[0] = (struct netmap_prefix){AF_INET, 32, {100, 64, 0, 1}};
	for (i = 0; i < 2; i++) {
		peers[i].id = i + 2;
		snprintf(peers[i].name, sizeof(peers[i].name), "peer-%u", i);
		memset(peers[i].node_key, (int)i + 2, sizeof(peers[i].node_key));
		peers[i].n_addresses = 1;
		peers[i].addresses[0] = (struct netmap_prefix){
		    AF_INET6, 128, {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11, [15] = (uint8_t)(i + 2)}};
	}
	endpoint_parse(&peers[0].endpoints[0], "198.51.100.2:41641");
	peers[0].n_endpoints = 1;
	return localapi_status_build("running", &nm, NULL, ret);
}

static void fake_up(void *ctx, const struct localapi_up_opts *o, struct localapi_req *req)
{
	(void)ctx;
	if (o->auth_key) {
		localapi_req_finish(req, strcmp(o->auth_key, "bad")
					     ? localapi_reply_ok()
					     : localapi_reply_error("rejected"));
		return;
	}
	localapi_req_progress(req, json_pack("{s:b, s:s}", "ok", 1, "state", "needs_login"));
	if (pending) /* a held connection reads nothing: its up cannot be followed by another */
		abort();
	pending = req;
}

static void fake_up_cancel(void *ctx, struct localapi_req *req)
{
	(void)ctx;
	if (pending == req)
		pending = NULL;
}

static int fake_down(void *ctx, char *err, size_t len)
{
	(void)ctx, (void)err, (void)len;
	return 0;
}

static int fake_logout(void *ctx, char *err, size_t len)
{
	(void)ctx;
	snprintf(err, len, "unreachable");
	return -EHOSTUNREACH;
}

static int fake_set(void *ctx, const struct localapi_set_opts *o, char *err, size_t len)
{
	(void)ctx;
	if (!o->hostname || !*o->hostname)
		abort(); /* the server lets only a non-empty hostname through */
	snprintf(err, len, "no");
	return strlen(o->hostname) > 63 ? -EINVAL : 0;
}

static void setup(void)
{
	static const struct localapi_backend be = {.status = fake_status,
						   .up = fake_up,
						   .up_cancel = fake_up_cancel,
						   .down = fake_down,
						   .logout = fake_logout,
						   .set = fake_set};

	log_set_level(LOG_LEVEL_ERR);
	snprintf(path, sizeof(path), "/tmp/trellis-fuzz-localapi-%d/api.sock", (int)getpid());
	lp = loop_new();
	if (!lp || localapi_server_new(lp, path, &be, &srv) < 0)
		abort();
}

static struct usock_conn *conn(void)
{
	return srv->us->n_conns ? srv->us->conns[0] : NULL;
}

/* The loop's part: requests a finished up left buffered (usock_conn_kick). */
static void run_deferred(void)
{
	if (srv->us->defer.armed) {
		loop_timer_disarm(lp, &srv->us->defer);
		defer_fire(&srv->us->defer);
	}
}

static void finish_pending(void)
{
	struct localapi_req *req = pending;

	if (!req)
		return;
	pending = NULL;
	localapi_req_finish(req, localapi_reply_ok());
	run_deferred();
}

/* Runs the connection's handler as epoll would; false once it is gone. */
static bool step(uint32_t events)
{
	struct usock_conn *c = conn();

	if (!c)
		return false;
	c->lfd.cb(&c->lfd, events);
	run_deferred();
	return conn() != NULL;
}

/* Reads what the server sent; checks each complete line. */
static void drain(int fd, char *buf, size_t cap, size_t *len)
{
	for (;;) {
		ssize_t r = recv(fd, buf + *len, cap - *len, MSG_DONTWAIT);
		char *nl;

		if (r <= 0)
			return;
		*len += (size_t)r;
		while ((nl = memchr(buf, '\n', *len))) {
			json_t *j = json_loadb(buf, (size_t)(nl - buf), 0, NULL);

			if (!j || !json_is_object(j) || !json_is_boolean(json_object_get(j, "ok")))
				abort();
			json_decref(j);
			*len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, *len);
		}
		if (*len == cap)
			abort(); /* a line longer than any reply we make */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[1 << 16];
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t chunk, off = 0, out_len = 0;
	unsigned i;
	int fd;

	if (!srv)
		setup();
	if (size < 1)
		return 0;
	chunk = (size_t)(data[0] & 0x3f) * (data[0] & 0x40 ? 64 : 1) + 1;
	data++;
	size--;
	chunk = MAX(chunk, size / 32); /* at most ~32 rounds: the syscalls are the cost */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memcpy(sun.sun_path, path, sizeof(sun.sun_path));
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		abort();
	listen_event(&srv->us->listen, EPOLLIN);
	fcntl(fd, F_SETFL, O_NONBLOCK);
	for (i = 0; off < size && conn() && i < 4;) {
		ssize_t r = send(fd, data + off, MIN(chunk, size - off), MSG_NOSIGNAL);

		if (r > 0) {
			off += (size_t)r;
			i = 0;
		} else if (r < 0 && errno != EAGAIN) {
			break;
		} else if (pending) {
			/* A held connection reads nothing until its up finishes. */
			finish_pending();
		} else {
			i++; /* the server is not reading: stop after a few tries */
		}
		drain(fd, out, sizeof(out), &out_len);
		if (step(EPOLLOUT))
			step(EPOLLIN);
	}
	finish_pending();
	shutdown(fd, SHUT_WR);
	for (i = 0; i < 64 && conn(); i++) {
		finish_pending();
		drain(fd, out, sizeof(out), &out_len);
		if (step(EPOLLOUT))
			step(EPOLLIN | EPOLLRDHUP);
	}
	drain(fd, out, sizeof(out), &out_len);
	if (conn())
		usock_conn_close(conn()); /* still lingering: the client leaves */
	finish_pending(); /* an orphaned up: its answer is dropped */
	close(fd);
	return 0;
}
