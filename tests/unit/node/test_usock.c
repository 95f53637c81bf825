/* SPDX-License-Identifier: MIT */
/*
 * The shared unix-socket server with a toy line protocol: "echo X" answers X,
 * "big N" answers N bytes (larger than the socket buffer: partial writes and
 * EPOLLOUT), "hold" holds the connection. Covers the connection cap, the idle
 * timeout, the input cap (overflow), the lingering close and the socket mode.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcntl.h>
#include <stdbool.h>

/* Process-wide: binding must not touch it (counted, then called as itself). */
static unsigned umask_calls;
#define umask(m) (umask_calls++, (umask)(m))

/* Bits the umask took are added back: the file must never have been more open. */
static unsigned widen_calls;
static bool too_open;

static int widen(int dirfd, const char *path, mode_t mode, int flags)
{
	struct stat st;

	widen_calls++;
	if (lstat(path, &st) == 0 && (st.st_mode & 0777 & ~mode))
		too_open = true;
	return (fchmodat)(dirfd, path, mode, flags);
}
#define fchmodat(d, p, m, f) widen(d, p, m, f)

#include "base/loop.c"
#include "node/usock.c"
#include "os/unixsock.c"

#define CONNS_MAX 3
#define IN_MAX 64
#define BIG_MAX (4U << 20)

struct fake {
	char path[108];
	struct loop *loop;
	struct loop_async done_async;
	struct usock_server *srv;
	unsigned opens, overflows;
	atomic_uint closes; /* the client thread waits for it */
	void (*client)(struct fake *f);
	atomic_int done;
};

static int fake_open(void *ctx, struct usock_conn *c)
{
	struct fake *f = ctx;

	*(unsigned *)usock_conn_priv(c) = ++f->opens;
	return 0;
}

static void fake_close(void *ctx, struct usock_conn *c)
{
	struct fake *f = ctx;

	(void)c;
	f->closes++;
}

static int fake_data(void *ctx, struct usock_conn *c, char *buf, size_t len)
{
	char *nl = memchr(buf, '\n', len);
	size_t line = nl ? (size_t)(nl - buf) + 1 : 0;

	(void)ctx;
	if (!nl)
		return 0;
	if (line > 5 && !memcmp(buf, "echo ", 5)) {
		if (usock_conn_send(c, buf + 5, line - 5) < 0)
			return -1;
	} else if (line > 4 && !memcmp(buf, "big ", 4)) {
		size_t n = strtoul(buf + 4, NULL, 10);
		char *big = malloc(n);
		int r;

		assert_non_null(big);
		memset(big, 'x', n);
		r = usock_conn_send(c, big, n);
		free(big);
		if (r < 0)
			return -1;
	} else if (!memcmp(buf, "hold\n", 5)) {
		usock_conn_hold(c, true);
	} else {
		return -1;
	}
	return (int)line;
}

static void fake_overflow(void *ctx, struct usock_conn *c)
{
	struct fake *f = ctx;

	f->overflows++;
	usock_conn_send(c, "too long\n", 9);
}

static int client_connect(struct fake *f)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 5};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	strcpy(sun.sun_path, f->path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void send_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t r = send(fd, s, len, MSG_NOSIGNAL);

		assert_true(r > 0);
		s += r;
		len -= (size_t)r;
	}
}

static void read_exact(int fd, char *buf, size_t len)
{
	while (len) {
		ssize_t r = recv(fd, buf, len, 0);

		assert_true(r > 0);
		buf += r;
		len -= (size_t)r;
	}
}

/* EOF, or a reset when the server closed with our bytes unread. */
static bool is_closed(int fd)
{
	char c;
	ssize_t r = recv(fd, &c, 1, 0);

	return r == 0 || (r < 0 && errno == ECONNRESET);
}

static void *client_main(void *arg)
{
	struct fake *f = arg;

	f->client(f);
	atomic_store(&f->done, 1);
	loop_async_send(&f->done_async);
	return NULL;
}

static void stop_when_done(struct loop_async *a)
{
	struct fake *f = container_of(a, struct fake, done_async);

	if (atomic_load(&f->done))
		loop_stop(f->loop);
}

static void run(void (*client)(struct fake *f), struct fake *f)
{
	const struct usock_limits lim = {
	    .conns_max = CONNS_MAX,
	    .in_max = IN_MAX,
	    .out_max = BIG_MAX,
	    .idle_timeout_ns = 200ULL * 1000000ULL,
	    .sweep_interval_ns = 50ULL * 1000000ULL,
	    .mode = 0600,
	    .backlog = 4,
	};
	const struct usock_ops ops = {
	    .ctx = f,
	    .conn_priv_size = sizeof(unsigned),
	    .on_open = fake_open,
	    .on_data = fake_data,
	    .on_overflow = fake_overflow,
	    .on_close = fake_close,
	};
	struct stat st;
	pthread_t th;

	snprintf(f->path, sizeof(f->path), "/tmp/trellis-test-usock-%d/sub/x.sock", (int)getpid());
	f->loop = loop_new();
	assert_non_null(f->loop);
	assert_int_equal(usock_server_new(f->loop, f->path, "test", &lim, &ops, &f->srv), 0);
	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	f->done_async.cb = stop_when_done;
	loop_async_add(f->loop, &f->done_async);
	f->client = client;
	assert_int_equal(pthread_create(&th, NULL, client_main, f), 0);
	assert_int_equal(loop_run(f->loop), 0);
	pthread_join(th, NULL);
	usock_server_free(f->srv);
	assert_int_equal(access(f->path, F_OK), -1);
	assert_int_equal(f->opens, f->closes);
	loop_free(f->loop);
	snprintf(f->path, sizeof(f->path), "/tmp/trellis-test-usock-%d/sub", (int)getpid());
	rmdir(f->path);
	snprintf(f->path, sizeof(f->path), "/tmp/trellis-test-usock-%d", (int)getpid());
	rmdir(f->path);
}

static void client_echo(struct fake *f)
{
	int fd = client_connect(f);
	char buf[32];

	/* Two requests in one write, then one split across writes. */
	send_all(fd, "echo a\necho bc\nec", 17);
	send_all(fd, "ho d\n", 5);
	read_exact(fd, buf, 7);
	assert_memory_equal(buf, "a\nbc\nd\n", 7);
	/* EOF: the connection closes. */
	shutdown(fd, SHUT_WR);
	assert_true(is_closed(fd));
	close(fd);
}

static void test_echo(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_echo, &f);
	assert_int_equal(f.opens, 1);
}

static void client_partial_write(struct fake *f)
{
	size_t n = 3U << 20, got = 0;
	char *buf = malloc(n);
	int fd = client_connect(f);

	assert_non_null(buf);
	/*
	 * Far more than a socket buffer holds: the server has to stop at EAGAIN and
	 * resume on EPOLLOUT. The echo after it runs only once the big reply is out.
	 */
	send_all(fd, "big 3145728\necho z\n", 19);
	usleep(50000);
	while (got < n) {
		ssize_t r = recv(fd, buf + got, n - got, 0);

		assert_true(r > 0);
		got += (size_t)r;
	}
	assert_true(buf[0] == 'x' && buf[n - 1] == 'x');
	read_exact(fd, buf, 2);
	assert_memory_equal(buf, "z\n", 2);
	/* Past out_max: the protocol closes. */
	send_all(fd, "big 8388608\n", 12);
	assert_true(is_closed(fd));
	close(fd);
	free(buf);
}

static void test_partial_write(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_partial_write, &f);
}

static void client_conn_cap(struct fake *f)
{
	int fds[CONNS_MAX + 1];
	char buf[8];
	unsigned i;

	for (i = 0; i < CONNS_MAX; i++) {
		fds[i] = client_connect(f);
		/* A round trip proves the server has accepted this one. */
		send_all(fds[i], "echo k\n", 7);
		read_exact(fds[i], buf, 2);
	}
	fds[CONNS_MAX] = client_connect(f);
	assert_true(is_closed(fds[CONNS_MAX]));
	/* Once one goes, a new one fits again: wait until the server has seen it go. */
	close(fds[0]);
	for (i = 0; atomic_load(&f->closes) < 1; i++) {
		assert_true(i < 5000);
		usleep(1000);
	}
	fds[0] = client_connect(f);
	send_all(fds[0], "echo k\n", 7);
	read_exact(fds[0], buf, 2);
	for (i = 0; i <= CONNS_MAX; i++)
		close(fds[i]);
}

static void test_conn_cap(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_conn_cap, &f);
	assert_int_equal(f.opens, CONNS_MAX + 1);
}

static void client_idle(struct fake *f)
{
	int held = client_connect(f);
	int fd = client_connect(f);
	char c;

	send_all(held, "hold\n", 5);
	/* A partial request, then silence: closed after the idle timeout. */
	send_all(fd, "echo", 4);
	assert_true(is_closed(fd));
	close(fd);
	/* A held connection is not idle-closed (well past the timeout), only its hang-up closes it.
	 */
	usleep(300000);
	assert_int_equal(recv(held, &c, 1, MSG_DONTWAIT), -1);
	close(held);
}

static void test_idle_timeout(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_idle, &f);
}

static void client_overflow(struct fake *f)
{
	char line[IN_MAX + 8], buf[16];
	int fd = client_connect(f);

	memset(line, 'a', sizeof(line));
	send_all(fd, line, sizeof(line));
	read_exact(fd, buf, 9);
	assert_memory_equal(buf, "too long\n", 9);
	assert_true(is_closed(fd));
	close(fd);
}

static void test_overflow(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_overflow, &f);
	assert_int_equal(f.overflows, 1);
}

static void client_linger(struct fake *f)
{
	size_t n = 512U << 10, sent = 0;
	char *line = malloc(n), buf[16];
	struct timeval tv = {.tv_sec = 5};
	int fd = client_connect(f);
	ssize_t r;

	assert_non_null(line);
	memset(line, 'a', n);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	/*
	 * Far past in_max and more than the socket buffers hold: the server answers
	 * after IN_MAX bytes while we are still blocked writing. The write must
	 * complete (the server drains), then the reply and an orderly EOF arrive,
	 * not a reset.
	 */
	while (sent < n) {
		r = send(fd, line + sent, n - sent, MSG_NOSIGNAL);
		assert_true(r > 0);
		sent += (size_t)r;
	}
	read_exact(fd, buf, 9);
	assert_memory_equal(buf, "too long\n", 9);
	assert_int_equal(recv(fd, buf, 1, 0), 0);
	close(fd);
	free(line);
}

static void test_linger(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_linger, &f);
	assert_int_equal(f.overflows, 1);
}

/* The socket gets exactly its mode whatever the umask, and is never more open. */
static void test_socket_mode(void **state)
{
	static const mode_t masks[] = {0, 022, 077, 0777};
	const struct usock_limits lim = {.conns_max = 1,
					 .in_max = 16,
					 .out_max = 16,
					 .idle_timeout_ns = 1000000000ULL,
					 .sweep_interval_ns = 1000000000ULL,
					 .backlog = 1};
	const struct usock_ops ops = {.on_data = fake_data};
	char dir[64], path[80];
	struct loop *loop = loop_new();
	mode_t old = (umask)(0);
	unsigned i;

	(void)state;
	(umask)(old);
	snprintf(dir, sizeof(dir), "/tmp/trellis-test-usock-m%d", (int)getpid());
	snprintf(path, sizeof(path), "%s/api.sock", dir);
	assert_int_equal(mkdir(dir, 0755), 0);
	for (i = 0; i < 2 * ARRAY_SIZE(masks); i++) {
		struct usock_limits l = lim;
		struct usock_server *srv;
		struct stat st;

		l.mode = i % 2 ? 0600 : 0666;
		(umask)(masks[i / 2]);
		umask_calls = widen_calls = 0;
		too_open = false;
		assert_int_equal(usock_server_new(loop, path, "t", &l, &ops, &srv), 0);
		assert_int_equal(umask_calls, 0);
		assert_int_equal((umask)(old), masks[i / 2]);
		assert_int_equal(lstat(path, &st), 0);
		assert_true(S_ISSOCK(st.st_mode));
		assert_int_equal(st.st_mode & 0777, l.mode);
		assert_false(too_open);
		/* Widened exactly when the umask took some of the mode's bits. */
		assert_int_equal(widen_calls, (l.mode & masks[i / 2]) ? 1 : 0);
		usock_server_free(srv);
	}
	assert_int_equal(rmdir(dir), 0);
	loop_free(loop);
}

static void test_socket_check(void **state)
{
	const struct usock_limits lim = {.conns_max = 1,
					 .in_max = 16,
					 .out_max = 16,
					 .idle_timeout_ns = 1000000000ULL,
					 .sweep_interval_ns = 1000000000ULL,
					 .mode = 0666,
					 .backlog = 1};
	const struct usock_ops ops = {.on_data = fake_data};
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct usock_server *srv, *srv2;
	struct loop *loop = loop_new();
	char path[108];
	struct stat st;
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/trellis-test-usock-c%d.sock", (int)getpid());
	assert_int_equal(usock_server_new(loop, path, "t", &lim, &ops, &srv), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
	assert_int_equal(usock_socket_check(path), -EADDRINUSE);
	assert_int_equal(usock_server_new(loop, path, "t", &lim, &ops, &srv2), -EADDRINUSE);
	usock_server_free(srv);
	/* A stale socket file (bound, never listening) is removed. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(sun.sun_path, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	assert_int_equal(usock_server_new(loop, path, "t", &lim, &ops, &srv), 0);
	usock_server_free(srv);
	assert_int_equal(access(path, F_OK), -1);
	loop_free(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_echo),     cmocka_unit_test(test_partial_write),
	    cmocka_unit_test(test_conn_cap), cmocka_unit_test(test_idle_timeout),
	    cmocka_unit_test(test_overflow), cmocka_unit_test(test_linger),
	    cmocka_unit_test(test_socket_mode), cmocka_unit_test(test_socket_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
