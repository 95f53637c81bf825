/* SPDX-License-Identifier: MIT */
/*
 * net/httpd on loopback, in one thread: the test's clients are plain sockets
 * and the loop runs until the event a test waits for (a client socket turns
 * readable, a handler runs), with a deadline that fails the test. Routes
 * (exact, prefix, 404, 405, a handler that forgets to answer), bad heads, the
 * upgrade hand-off with the bytes that came after the head, the limits
 * that travel with a taken connection, and the timeouts: the head deadline,
 * and a large reply's write progress once the request is in.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"
#include "net/httpd.h"
#include "../loop_until.h"

struct env {
	struct loop *loop;
	struct httpd *h;
	uint16_t port;
	/* set by handlers */
	unsigned calls;
	bool upgraded;
	struct httpd_upgrade up;
};

static struct env E;

static void h_exact(struct httpd_request *r, void *ctx)
{
	(void)ctx;
	E.calls++;
	httpd_reply(r, 200, "text/plain", "exact\n", 6);
}

static void h_prefix(struct httpd_request *r, void *ctx)
{
	char body[128];
	int n = snprintf(body, sizeof(body), "under %.*s host %s\n", (int)r->head->target_len,
			 r->head->target, r->host);

	(void)ctx;
	E.calls++;
	httpd_reply(r, 200, "text/plain", body, (size_t)n);
}

static void h_forgets(struct httpd_request *r, void *ctx)
{
	(void)r;
	(void)ctx;
	E.calls++;
}

static void h_upgrade(struct httpd_request *r, void *ctx)
{
	(void)ctx;
	E.calls++;
	assert_int_equal(httpd_upgrade(r, "Upgrade: test/1\r\nConnection: Upgrade\r\n", &E.up), 0);
	E.upgraded = true;
	loop_stop(E.loop);
}

/* A reply larger than the socket buffers hold: the reader sets its pace. */
#define BIG_LEN (256 * 1024)

static void h_big(struct httpd_request *r, void *ctx)
{
	char *body = malloc(BIG_LEN);

	(void)ctx;
	assert_non_null(body);
	for (size_t i = 0; i < BIG_LEN; i++)
		body[i] = (char)('a' + i % 26);
	E.calls++;
	httpd_reply(r, 200, "application/octet-stream", body, BIG_LEN);
	free(body);
}

/* Echoes the body it was given, with its length and the peer's uid. */
static void h_body(struct httpd_request *r, void *ctx)
{
	char out[256];
	int n = snprintf(out, sizeof(out), "%zu uid %lld: %.*s", r->body_len,
			 (long long)r->peer_uid, (int)r->body_len, r->body ? (const char *)r->body : "");

	(void)ctx;
	E.calls++;
	httpd_reply(r, 200, "text/plain", out, (size_t)n);
}

static int setup(void **state)
{
	struct httpd_opts o = { .name = "test" };

	(void)state;
	memset(&E, 0, sizeof(E));
	E.loop = loop_new();
	assert_non_null(E.loop);
	assert_int_equal(httpd_new(E.loop, &o, &E.h), 0);
	assert_int_equal(httpd_route_add(E.h, "GET", "/exact", h_exact, NULL), 0);
	assert_int_equal(httpd_route_add(E.h, "GET", "/pre/", h_prefix, NULL), 0);
	assert_int_equal(httpd_route_add(E.h, "GET", "/forgets", h_forgets, NULL), 0);
	assert_int_equal(httpd_route_add(E.h, "POST", "/up", h_upgrade, NULL), 0);
	assert_int_equal(httpd_route_add_body(E.h, "POST", "/body", 64, h_body, NULL), 0);
	assert_int_equal(httpd_route_add(E.h, "GET", "/big", h_big, NULL), 0);
	assert_int_equal(httpd_listen(E.h, "127.0.0.1:0"), 0);
	E.port = httpd_port(E.h);
	assert_true(E.port != 0);
	assert_string_not_equal(httpd_listen_name(E.h), "127.0.0.1:0");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	httpd_free(E.h);
	loop_free(E.loop);
	return 0;
}

/* ---- running the loop until something happens ---- */

static bool run_until_readable(int fd)
{
	return loop_until_readable(E.loop, fd, 5 * NSEC_PER_SEC);
}

/* Runs the server until a handler stops it. */
static void run_until_stopped(void)
{
	assert_true(loop_until_stopped(E.loop, 5 * NSEC_PER_SEC));
}

static size_t want_unauth, want_conns = SIZE_MAX;

static bool unauth_reached(void *arg)
{
	struct httpd_stats st;

	(void)arg;
	httpd_stats_get(E.h, &st);
	return st.unauth == want_unauth && (want_conns == SIZE_MAX || st.conns == want_conns);
}

/* Runs the server until it counts n unauthenticated connections; false on the deadline. */
static bool run_until_unauth(size_t n)
{
	bool ok;

	want_unauth = n;
	ok = loop_until(E.loop, unauth_reached, NULL, 5 * NSEC_PER_SEC);
	want_conns = SIZE_MAX;
	return ok;
}

/*
 * Runs the server until it counts n connections, none unauthenticated. (A
 * connection that was answered lingers until the client's close reaches it.)
 */
static bool run_until_conns(size_t n)
{
	want_conns = n;
	return run_until_unauth(0);
}

static int client_rcvbuf; /* SO_RCVBUF of the next client (0: the default) */

static int client(uint32_t src)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(E.port) };
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(src) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	if (client_rcvbuf)
		assert_int_equal(
		    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &client_rcvbuf, sizeof(client_rcvbuf)),
		    0);
	assert_int_equal(bind(fd, (struct sockaddr *)&s, sizeof(s)), 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
	assert_int_equal(send(fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* What the server sends on fd up to its close (NUL-terminated); closes fd. */
static size_t read_to_close(int fd, char *buf, size_t cap)
{
	size_t len = 0;

	for (;;) {
		ssize_t n;

		assert_true(run_until_readable(fd));
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fd);
	return len;
}

/* The whole response of a request, up to the server's close. */
static size_t exchange(const char *req, size_t req_len, char *buf, size_t cap)
{
	int fd = client(0x7f000002);

	send_all(fd, req, req_len);
	return read_to_close(fd, buf, cap);
}

static unsigned status_of(const char *req, char *body, size_t cap)
{
	char buf[4096];
	struct http_response resp;
	size_t len = exchange(req, strlen(req), buf, sizeof(buf));

	if (http_response_parse(&resp, buf, len) < 0)
		return 0;
	/* Every answer closes the connection and says so. */
	assert_true(http_header_has_token(resp.headers, resp.n_headers, "Connection", "close"));
	if (body)
		snprintf(body, cap, "%s", buf + resp.head_len);
	return resp.status;
}

/* ---- tests ---- */

static void test_routes(void **state)
{
	char body[256];
	struct httpd_stats st;

	(void)state;
	assert_int_equal(status_of("GET /exact HTTP/1.1\r\n\r\n", body, sizeof(body)), 200);
	assert_string_equal(body, "exact\n");
	assert_int_equal(status_of("GET /exactly HTTP/1.1\r\n\r\n", NULL, 0), 404);
	assert_int_equal(status_of("GET /exact/ HTTP/1.1\r\n\r\n", NULL, 0), 404);
	assert_int_equal(status_of("DELETE /exact HTTP/1.1\r\n\r\n", NULL, 0), 405);
	assert_int_equal(status_of("GET /pre/a/b?c HTTP/1.1\r\nHost: ctl.example:8443\r\n\r\n",
				   body, sizeof(body)),
			 200);
	assert_string_equal(body, "under /pre/a/b?c host ctl.example:8443\n");
	/* A Host that could not go into a URL is not passed on. */
	assert_int_equal(status_of("GET /pre/x HTTP/1.1\r\nHost: a\"b\r\n\r\n", body, sizeof(body)),
			 200);
	assert_string_equal(body, "under /pre/x host \n");
	assert_int_equal(status_of("GET /pre HTTP/1.1\r\n\r\n", NULL, 0), 404);
	assert_int_equal(status_of("GET /forgets HTTP/1.1\r\n\r\n", NULL, 0), 500);
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.drops[HTTPD_DROP_BAD], 0); /* 404, 405, 500 are not bad input */
	assert_true(run_until_conns(0));
}

static void test_bad_heads(void **state)
{
	static char big[HTTP_HEAD_MAX + 64];
	struct httpd_stats st0, st;
	char buf[512];
	struct http_response resp;
	size_t len;

	(void)state;
	httpd_stats_get(E.h, &st0);
	assert_int_equal(status_of("GARBAGE\r\n\r\n", NULL, 0), 400);
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET /exact HTTP/1.1\r\nX: ", 24);
	len = exchange(big, sizeof(big), buf, sizeof(buf));
	assert_int_equal(http_response_parse(&resp, buf, len), 0);
	assert_int_equal(resp.status, 431);
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.drops[HTTPD_DROP_BAD], st0.drops[HTTPD_DROP_BAD] + 1);
	assert_int_equal(st.drops[HTTPD_DROP_TOO_BIG], st0.drops[HTTPD_DROP_TOO_BIG] + 1);
}

static void test_upgrade_hand_off(void **state)
{
	static const char req[] =
		"POST /up HTTP/1.1\r\nHost: x\r\n\r\nfirst bytes of the new protocol";
	struct httpd_stats st;
	char buf[256];
	ssize_t n;
	int fd;

	(void)state;
	fd = client(0x7f000003);
	/* The head and what follows it in one segment: httpd reads both at once. */
	send_all(fd, req, sizeof(req) - 1);
	run_until_stopped();
	assert_true(E.upgraded);
	assert_int_equal(E.up.rest_len, strlen("first bytes of the new protocol"));
	assert_memory_equal(E.up.rest, "first bytes of the new protocol", E.up.rest_len);
	assert_string_equal(E.up.peer, "127.0.0.3");
	assert_string_equal(E.up.host, "x");
	assert_true(E.up.born_ns > 0 && E.up.born_ns <= loop_now_ns(E.loop));
	assert_true(E.up.out_len > 12 && memcmp(E.up.out, "HTTP/1.1 101", 12) == 0);
	/* Still counted, against its source too, until the taker says otherwise. */
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.conns, 1);
	assert_int_equal(st.unauth, 1);

	/* The taker owns the socket: the 101 it writes arrives, and what it writes next. */
	assert_int_equal(httpd_io_write(&E.up.io, E.up.out, E.up.out_len), (ssize_t)E.up.out_len);
	assert_int_equal(httpd_io_write(&E.up.io, "ok", 2), 2);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "Upgrade: test/1\r\n"));
	assert_non_null(strstr(buf, "\r\n\r\nok"));
	/* And it reads what the client sends now. */
	send_all(fd, "more", 4);
	{
		struct pollfd p = { .fd = E.up.io.fd, .events = POLLIN };

		assert_int_equal(poll(&p, 1, 5000), 1);
		assert_int_equal(httpd_io_read(&E.up.io, buf, sizeof(buf)), 4);
		assert_memory_equal(buf, "more", 4);
	}

	httpd_slot_authenticated(&E.up.slot);
	httpd_slot_authenticated(&E.up.slot); /* idempotent */
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.conns, 1);
	assert_int_equal(st.unauth, 0);
	httpd_upgrade_release(&E.up);
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.conns, 0);
	assert_true(recv(fd, buf, sizeof(buf), 0) == 0); /* closed */
	close(fd);
}

static void test_unauthenticated_per_source(void **state)
{
	int fds[HTTPD_UNAUTH_PER_SOURCE + 1], other;
	struct httpd_stats st0, st;
	char buf[16];

	(void)state;
	httpd_stats_get(E.h, &st0);
	for (int i = 0; i < HTTPD_UNAUTH_PER_SOURCE; i++)
		fds[i] = client(0x7f000009);
	/* One over the limit from the same source is closed at once... */
	fds[HTTPD_UNAUTH_PER_SOURCE] = client(0x7f000009);
	assert_true(run_until_readable(fds[HTTPD_UNAUTH_PER_SOURCE]));
	assert_true(recv(fds[HTTPD_UNAUTH_PER_SOURCE], buf, sizeof(buf), 0) <= 0);
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.drops[HTTPD_DROP_UNAUTH_LIMIT], st0.drops[HTTPD_DROP_UNAUTH_LIMIT] + 1);
	assert_int_equal(st.unauth, HTTPD_UNAUTH_PER_SOURCE);
	/* ...while another source is served. */
	other = client(0x7f00000a);
	send_all(other, "GET /exact HTTP/1.1\r\n\r\n", 23);
	assert_true(run_until_readable(other));
	assert_true(recv(other, buf, sizeof(buf) - 1, 0) > 0);
	assert_memory_equal(buf, "HTTP/1.1 200", 12);
	close(other);
	/* Each connection that ends makes room again. */
	for (int i = 0; i <= HTTPD_UNAUTH_PER_SOURCE; i++)
		close(fds[i]);
	assert_true(run_until_unauth(st0.unauth));
	fds[0] = client(0x7f000009);
	send_all(fds[0], "GET /exact HTTP/1.1\r\n\r\n", 23);
	assert_true(run_until_readable(fds[0]));
	assert_true(recv(fds[0], buf, sizeof(buf) - 1, 0) > 0);
	assert_memory_equal(buf, "HTTP/1.1 200", 12);
	close(fds[0]);
}

/*
 * A client that sends more than the server reads (a body after a request
 * that gets 404) finishes sending, reads the whole reply and then an orderly
 * end of stream. A close with the body unread sends a reset instead: the
 * client's writes fail and the reply can be lost (RFC 9112 9.6). The client
 * runs on a thread of its own: it blocks while the loop runs here.
 */
struct linger_client {
	int fd, done[2];
	size_t sent, len;
	ssize_t last;
	char buf[4096];
};

static void *linger_client_run(void *arg)
{
	static const char req[] = "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n";
	static char junk[256 * 1024];
	struct linger_client *lc = arg;
	ssize_t n;

	memset(junk, 'x', sizeof(junk));
	send(lc->fd, req, sizeof(req) - 1, MSG_NOSIGNAL);
	while (lc->sent < sizeof(junk)) {
		n = send(lc->fd, junk + lc->sent, sizeof(junk) - lc->sent, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		lc->sent += (size_t)n;
	}
	shutdown(lc->fd, SHUT_WR);
	for (;;) {
		n = read(lc->fd, lc->buf + lc->len, sizeof(lc->buf) - 1 - lc->len);
		if (n <= 0)
			break;
		lc->len += (size_t)n;
	}
	lc->last = n < 0 ? -errno : 0;
	lc->buf[lc->len] = '\0';
	assert_int_equal(write(lc->done[1], "x", 1), 1);
	return NULL;
}

static void test_error_linger(void **state)
{
	struct linger_client lc = { 0 };
	struct http_response resp;
	pthread_t thr;

	(void)state;
	assert_int_equal(pipe(lc.done), 0);
	lc.fd = client(0x7f00000b);
	assert_int_equal(pthread_create(&thr, NULL, linger_client_run, &lc), 0);
	assert_true(run_until_readable(lc.done[0]));
	pthread_join(thr, NULL);
	assert_int_equal(lc.sent, 256 * 1024);
	assert_int_equal(lc.last, 0); /* EOF, not ECONNRESET */
	assert_int_equal(http_response_parse(&resp, lc.buf, lc.len), 0);
	assert_int_equal(resp.status, 404);
	assert_string_equal(lc.buf + resp.head_len, "404 Not Found\n");
	close(lc.fd);
	close(lc.done[0]);
	close(lc.done[1]);
	assert_true(run_until_conns(0));
}

/*
 * Out of descriptors: the connection waiting in the backlog is shed (the
 * client sees it closed) and counted, once. Before, accept4 failed with
 * EMFILE on every round of the level-triggered loop, at 100 % CPU, and the
 * client waited forever.
 */
static void test_emfile(void **state)
{
	struct rlimit old, low;
	struct httpd_stats st0, st;
	int fills[512], n = 0, fd;
	char buf[16];

	(void)state;
	httpd_stats_get(E.h, &st0);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = 256;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	while (n < (int)(sizeof(fills) / sizeof(fills[0]))) {
		int x = open("/dev/null", O_RDONLY | O_CLOEXEC);

		if (x < 0)
			break;
		fills[n++] = x;
	}
	assert_true(n > 0 && n < (int)(sizeof(fills) / sizeof(fills[0])));
	close(fills[--n]); /* room for the client's socket, none for accept */
	fd = client(0x7f00000c);
	assert_true(run_until_readable(fd));
	assert_true(recv(fd, buf, sizeof(buf), 0) <= 0); /* closed */
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.drops[HTTPD_DROP_FD_LIMIT], st0.drops[HTTPD_DROP_FD_LIMIT] + 1);
	close(fd);
	while (n)
		close(fills[--n]);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	/* The spare is back: served as usual. */
	assert_int_equal(status_of("GET /exact HTTP/1.1\r\n\r\n", NULL, 0), 200);
}

static uint64_t want_accepted;

static bool accepted(void *arg)
{
	struct httpd_stats st;

	(void)arg;
	httpd_stats_get(E.h, &st);
	return st.conns_total >= want_accepted;
}

/*
 * The handshake deadline of a connection whose request waits unread in its socket: the loop
 * was behind (more connections ready than it takes events per round: a reconnect storm), not
 * the client. It is read and answered, not closed with its request unread (a reset).
 */
static void test_deadline_reads_first(void **state)
{
	enum { N = 100 }; /* more than the loop's events per round */
	static const char req[] = "GET /exact HTTP/1.1\r\n\r\n";
	struct httpd_stats st0, st;
	struct timespec ts = {.tv_sec = HTTPD_HANDSHAKE_TIMEOUT_NS / NSEC_PER_SEC,
			      .tv_nsec = 200 * NSEC_PER_MSEC};
	char buf[512];
	int fds[N];

	(void)state;
	httpd_stats_get(E.h, &st0);
	for (int i = 0; i < N; i++)
		fds[i] = client(0x7f010001 + ((uint32_t)i << 8)); /* a source each */
	want_accepted = st0.conns_total + N;
	assert_true(loop_until(E.loop, accepted, NULL, 5 * NSEC_PER_SEC));
	for (int i = 0; i < N; i++)
		send_all(fds[i], req, sizeof(req) - 1);
	/* The loop does not run: every deadline passes with the request in the socket. */
	nanosleep(&ts, NULL);
	for (int i = 0; i < N; i++) {
		assert_true(read_to_close(fds[i], buf, sizeof(buf)) > 0);
		assert_memory_equal(buf, "HTTP/1.1 200", 12);
	}
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.drops[HTTPD_DROP_TIMEOUT], st0.drops[HTTPD_DROP_TIMEOUT]);
}

/* ---- a reply read slowly ---- */

#define TEST_HEAD_NS (300 * NSEC_PER_MSEC) /* the head deadline, shortened */
#define TEST_STALL_NS (2 * NSEC_PER_SEC)   /* the reply's stall timeout, shortened */
#define SLOW_CHUNK 4096
#define SLOW_EVERY_NS (20 * NSEC_PER_MSEC) /* 4 KiB per 20 ms: 256 KiB take over 1 s */

struct slow_reader {
	int fd;
	size_t got;
	uint64_t next_ns, stop_ns; /* stop_ns: read no more from then on (0: to the end) */
	bool closed;		   /* the server's FIN or reset arrived */
};

/* Called every ms from the loop: one chunk per SLOW_EVERY_NS, until the end or stop_ns. */
static bool slow_read(void *arg)
{
	struct slow_reader *r = arg;
	uint64_t now = time_now_ns();
	char buf[SLOW_CHUNK];
	ssize_t n;

	if (r->stop_ns && now >= r->stop_ns)
		return true;
	if (now < r->next_ns)
		return false;
	r->next_ns = now + SLOW_EVERY_NS;
	n = recv(r->fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n > 0)
		r->got += (size_t)n;
	else if (n == 0 || errno != EAGAIN)
		r->closed = true;
	return r->closed;
}

/* GET /big on a connection with small socket buffers on both ends: the reader sets the pace. */
static int slow_client(void)
{
	static const char req[] = "GET /big HTTP/1.1\r\n\r\n";
	int fd;

	httpd_timeouts_set(E.h, TEST_HEAD_NS, TEST_STALL_NS);
	httpd_sndbuf_set(E.h, 4096);
	client_rcvbuf = 4096;
	fd = client(0x7f000005);
	client_rcvbuf = 0;
	send_all(fd, req, sizeof(req) - 1);
	return fd;
}

static void slow_done(void)
{
	httpd_timeouts_set(E.h, 0, 0);
	httpd_sndbuf_set(E.h, 0);
}

static uint64_t want_slow_drops;

static bool slow_dropped(void *arg)
{
	struct httpd_stats st;

	(void)arg;
	httpd_stats_get(E.h, &st);
	return st.drops[HTTPD_DROP_SLOW_READER] >= want_slow_drops;
}

/*
 * A reply read slowly, but steadily, long past the head deadline (which is for receiving the
 * request) arrives whole: the head deadline once closed it mid-reply.
 */
static void test_reply_slow_reader(void **state)
{
	struct slow_reader r = {0};
	struct httpd_stats st0, st;

	(void)state;
	httpd_stats_get(E.h, &st0);
	r.fd = slow_client();
	assert_true(loop_until(E.loop, slow_read, &r, 20 * NSEC_PER_SEC));
	slow_done();
	assert_true(r.closed);
	/* The head ("HTTP/1.1 200 ...") and all of the body, then the server's close. */
	assert_true(r.got > BIG_LEN);
	assert_true(r.got < BIG_LEN + 256);
	close(r.fd);
	httpd_stats_get(E.h, &st);
	assert_int_equal(st.drops[HTTPD_DROP_TIMEOUT], st0.drops[HTTPD_DROP_TIMEOUT]);
	assert_int_equal(st.drops[HTTPD_DROP_SLOW_READER], st0.drops[HTTPD_DROP_SLOW_READER]);
	assert_true(run_until_conns(0));
}

/*
 * A reader that takes part of the reply past the head deadline, then nothing: still dropped,
 * once the reply has not moved for the stall timeout.
 */
static void test_reply_stalled_reader(void **state)
{
	struct slow_reader r = {0};
	struct httpd_stats st0;
	char buf[SLOW_CHUNK];

	(void)state;
	httpd_stats_get(E.h, &st0);
	r.fd = slow_client();
	r.stop_ns = time_now_ns() + 3 * TEST_HEAD_NS;
	assert_true(loop_until(E.loop, slow_read, &r, 20 * NSEC_PER_SEC));
	assert_false(r.closed); /* still served while it reads */
	assert_true(r.got > 0 && r.got < BIG_LEN);
	want_slow_drops = st0.drops[HTTPD_DROP_SLOW_READER] + 1;
	assert_true(loop_until(E.loop, slow_dropped, NULL, 20 * NSEC_PER_SEC));
	slow_done();
	/* What was buffered, then the end: the connection is gone. */
	while (recv(r.fd, buf, sizeof(buf), 0) > 0)
		;
	close(r.fd);
	assert_true(run_until_conns(0));
}

/* Per-source keys: an IPv6 /64 is one source, an IPv4-mapped address its IPv4 one. */
static void test_source_key(void **state)
{
	struct sockaddr_storage a = { 0 }, b = { 0 };
	struct sockaddr_in6 *a6 = (void *)&a, *b6 = (void *)&b;
	struct sockaddr_in *b4 = (void *)&b;
	uint8_t ka[HTTPD_SOURCE_KEY_MAX], kb[HTTPD_SOURCE_KEY_MAX];
	size_t la, lb;

	(void)state;
	a6->sin6_family = b6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8:1:2::1", &a6->sin6_addr);
	inet_pton(AF_INET6, "2001:db8:1:2:ffff:ee:dd:cc", &b6->sin6_addr);
	la = httpd_source_key(&a, ka);
	lb = httpd_source_key(&b, kb);
	assert_int_equal(la, 9);
	assert_true(la == lb && memcmp(ka, kb, la) == 0);
	inet_pton(AF_INET6, "2001:db8:1:3::1", &b6->sin6_addr);
	lb = httpd_source_key(&b, kb);
	assert_false(la == lb && memcmp(ka, kb, la) == 0);
	/* ::ffff:192.0.2.7 is 192.0.2.7; 192.0.2.8 is another source. */
	inet_pton(AF_INET6, "::ffff:192.0.2.7", &a6->sin6_addr);
	la = httpd_source_key(&a, ka);
	memset(&b, 0, sizeof(b));
	b4->sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.7", &b4->sin_addr);
	lb = httpd_source_key(&b, kb);
	assert_int_equal(la, 5);
	assert_true(la == lb && memcmp(ka, kb, la) == 0);
	inet_pton(AF_INET, "192.0.2.8", &b4->sin_addr);
	lb = httpd_source_key(&b, kb);
	assert_false(memcmp(ka, kb, la) == 0);
}

/* A body arrives with the head, after it in pieces, or is too large; TCP has no peer uid. */
static void test_body(void **state)
{
	char buf[1024];
	int fd;
	size_t len;

	(void)state;
	static const char req[] = "POST /body HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
	static const char part[] = "POST /body HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";

	len = exchange(req, strlen(req), buf, sizeof(buf));
	assert_true(len > 0);
	assert_non_null(strstr(buf, "\r\n\r\n5 uid -1: hello"));
	/* No body: the handler runs at once with none. */
	assert_int_equal(status_of("POST /body HTTP/1.1\r\n\r\n", buf, sizeof(buf)), 200);
	assert_string_equal(buf, "0 uid -1: ");
	assert_int_equal(status_of("POST /body HTTP/1.1\r\nContent-Length: 65\r\n\r\n", NULL, 0),
			 413);
	/* The head, then the body in two writes: the handler waits for all of it. */
	fd = client(0x7f000003);
	send_all(fd, part, strlen(part));
	E.calls = 0;
	assert_false(loop_until_readable(E.loop, fd, 200 * NSEC_PER_MSEC));
	assert_int_equal(E.calls, 0);
	send_all(fd, "defghij", 7);
	len = read_to_close(fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "10 uid -1: abcdefghij"));
	assert_true(run_until_conns(0));
}

/* A unix socket listener: the file's exact mode, the peer's uid, removed at the end. */
static void test_unix(void **state)
{
	struct httpd_opts o = { .name = "test-unix" };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	static const char ureq[] = "POST /body HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
	char dir[] = "/tmp/trellis-httpd-XXXXXX", buf[1024];
	struct httpd *h;
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/s.sock", dir);
	assert_int_equal(httpd_new(E.loop, &o, &h), 0);
	assert_int_equal(httpd_route_add_body(h, "POST", "/body", 64, h_body, NULL), 0);
	assert_int_equal(httpd_listen_unix(h, sun.sun_path, 0600), 0);
	assert_int_equal(stat(sun.sun_path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	send_all(fd, ureq, strlen(ureq));
	read_to_close(fd, buf, sizeof(buf));
	{
		char want[64];

		snprintf(want, sizeof(want), "2 uid %u: hi", (unsigned)geteuid());
		assert_non_null(strstr(buf, want));
	}
	httpd_free(h);
	assert_int_equal(stat(sun.sun_path, &st), -1);
	assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_routes),
	    cmocka_unit_test(test_body),
	    cmocka_unit_test(test_unix),
	    cmocka_unit_test(test_bad_heads),
	    cmocka_unit_test(test_upgrade_hand_off),
	    cmocka_unit_test(test_unauthenticated_per_source),
	    cmocka_unit_test(test_error_linger),
	    cmocka_unit_test(test_emfile),
	    cmocka_unit_test(test_deadline_reads_first),
	    cmocka_unit_test(test_reply_slow_reader),
	    cmocka_unit_test(test_reply_stalled_reader),
	    cmocka_unit_test(test_source_key),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
