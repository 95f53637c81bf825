/* SPDX-License-Identifier: MIT */
/*
 * UAPI socket server with a fake handler: framing, several requests per
 * connection, garbage and oversize requests, connection cap, idle timeout,
 * stale-socket handling. The loop runs on the test thread; a client thread
 * talks to it and stops it when done.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define UAPI_IDLE_TIMEOUT_NS (300ULL * 1000000ULL)
#define SWEEP_INTERVAL_NS (50ULL * 1000000ULL)
#include "base/loop.c"
#include "node/uapi_server.c"
#include "node/usock.c"

struct fake {
	char path[108];
	struct loop *loop;
	struct loop_async done_async;
	struct uapi_server *srv;
	char last_set[256];
	size_t last_set_len;
	int set_ret;
	unsigned gets;
	unsigned get_delay_ms;
	void (*client)(struct fake *f);
	atomic_int done;
};

static int fake_get(void *ctx, char **ret_body, size_t *ret_len)
{
	struct fake *f = ctx;

	f->gets++;
	if (f->get_delay_ms)
		usleep(f->get_delay_ms * 1000);
	*ret_body = strdup("listen_port=1234\n");
	*ret_len = strlen(*ret_body);
	return 0;
}

static int fake_set(void *ctx, const char *body, size_t len)
{
	struct fake *f = ctx;

	f->last_set_len = len;
	memcpy(f->last_set, body, MIN(len, sizeof(f->last_set)));
	return f->set_ret;
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

/* Reads one reply (up to and including "\n\n") into buf; returns its length, 0 on EOF. */
static size_t read_reply(int fd, char *buf, size_t cap)
{
	size_t len = 0;

	while (len + 1 < cap) {
		ssize_t r = recv(fd, buf + len, 1, 0);

		if (r <= 0)
			break;
		len++;
		if (len >= 2 && buf[len - 1] == '\n' && buf[len - 2] == '\n')
			break;
	}
	buf[len] = 0;
	return len;
}

static bool is_closed(int fd)
{
	char c;

	return recv(fd, &c, 1, 0) == 0;
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
	struct uapi_handler h = {.ctx = f, .get = fake_get, .set = fake_set};
	pthread_t t;

	snprintf(f->path, sizeof(f->path), "/tmp/trellis-test-uapi-%d/x.sock", (int)getpid());
	f->loop = loop_new();
	assert_non_null(f->loop);
	f->done_async.cb = stop_when_done;
	loop_async_add(f->loop, &f->done_async);
	assert_int_equal(uapi_server_new(f->loop, f->path, &h, &f->srv), 0);
	f->client = client;
	assert_int_equal(pthread_create(&t, NULL, client_main, f), 0);
	assert_int_equal(loop_run(f->loop), 0);
	pthread_join(t, NULL);
	uapi_server_free(f->srv);
	loop_free(f->loop);
	assert_int_equal(access(f->path, F_OK), -1); /* socket removed */
}

static void client_get_set(struct fake *f)
{
	char buf[512];
	struct stat st;
	int fd;

	assert_int_equal(stat(f->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	fd = client_connect(f);
	send_all(fd, "get=1\n\n", 7);
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "listen_port=1234\nerrno=0\n\n");
	/* Same connection, a set split across writes. */
	send_all(fd, "set=1\nlisten_port=", 18);
	usleep(20000);
	send_all(fd, "5\nfwmark=0\n\n", 12);
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "errno=0\n\n");
	/* Two pipelined requests in one write, the second failing. */
	send_all(fd, "set=1\n\nget=1\n\n", 14);
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "errno=0\n\n");
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "listen_port=1234\nerrno=0\n\n");
	f->set_ret = -EINVAL;
	send_all(fd, "set=1\nbogus\n\n", 13);
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "errno=-22\n\n");
	close(fd);
}

static void test_get_set(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_get_set, &f);
	assert_int_equal(f.gets, 2);
	assert_int_equal(f.last_set_len, strlen("bogus\n"));
	assert_memory_equal(f.last_set, "bogus\n", f.last_set_len);
}

static void client_garbage(struct fake *f)
{
	char buf[64];
	int fd;

	fd = client_connect(f);
	send_all(fd, "hello=1\n\n", 9);
	assert_true(is_closed(fd));
	close(fd);

	fd = client_connect(f);
	send_all(fd, "get=1\nx\n\n", 9);
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "errno=-22\n\n");
	assert_true(is_closed(fd));
	close(fd);

	fd = client_connect(f);
	send_all(fd, "x\n", 2);
	assert_true(is_closed(fd));
	close(fd);

	/* The server still works. */
	fd = client_connect(f);
	send_all(fd, "get=1\n\n", 7);
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "listen_port=1234\nerrno=0\n\n");
	close(fd);
}

static void test_garbage(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_garbage, &f);
}

static void client_oversize(struct fake *f)
{
	size_t chunk = 1 << 16, sent = 0;
	char *line = malloc(chunk);
	char buf[64];
	int fd;

	memset(line, 'a', chunk);
	fd = client_connect(f);
	send_all(fd, "set=1\n", 6);
	/* Stop at the first error: the server closes once the cap is passed. */
	while (sent <= UAPI_MAX_REQUEST + chunk) {
		ssize_t r = send(fd, line, chunk, MSG_NOSIGNAL);

		if (r <= 0)
			break;
		sent += (size_t)r;
	}
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "errno=-90\n\n"); /* EMSGSIZE */
	close(fd);
	free(line);
}

static void test_oversize(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_oversize, &f);
}

/*
 * A handler slower than the idle timeout, then a client that answers at once:
 * the connection made progress all along and must not be taken for idle. The
 * loop's cached "now" dates from before the handler ran, so stamping activity
 * with it made the sweep see the whole callback as silence (what made
 * test_oversize flaky under load: reading 16 MiB in one callback took longer
 * than the test's 300 ms idle timeout).
 */
static void client_slow_handler(struct fake *f)
{
	char buf[64];
	int fd = client_connect(f);

	/* The get and the start of a set in one write: both are read before the get runs. */
	send_all(fd, "get=1\n\nset=1\nlisten_port=", 25);
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "listen_port=1234\nerrno=0\n\n");
	/* Well inside the idle timeout, counted from the reply, not from the read. */
	usleep(UAPI_IDLE_TIMEOUT_NS / 3000);
	send_all(fd, "5\n\n", 3);
	read_reply(fd, buf, sizeof(buf));
	assert_string_equal(buf, "errno=0\n\n");
	close(fd);
}

static void test_slow_handler(void **state)
{
	struct fake f = {.get_delay_ms = UAPI_IDLE_TIMEOUT_NS * 4 / 3 / 1000000};

	(void)state;
	run(client_slow_handler, &f);
	assert_int_equal(f.last_set_len, strlen("listen_port=5\n"));
}

static void client_conn_cap(struct fake *f)
{
	int fds[UAPI_CONNS_MAX + 1];
	char buf[64];
	unsigned i;

	for (i = 0; i < UAPI_CONNS_MAX; i++) {
		fds[i] = client_connect(f);
		/* A full round trip proves the server has accepted this one. */
		send_all(fds[i], "get=1\n\n", 7);
		read_reply(fds[i], buf, sizeof(buf));
		assert_string_equal(buf, "listen_port=1234\nerrno=0\n\n");
	}
	fds[UAPI_CONNS_MAX] = client_connect(f);
	assert_true(is_closed(fds[UAPI_CONNS_MAX]));
	for (i = 0; i <= UAPI_CONNS_MAX; i++)
		close(fds[i]);
}

static void test_conn_cap(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_conn_cap, &f);
}

static void client_idle(struct fake *f)
{
	int fd = client_connect(f);

	/* A partial request, then silence: the sweep closes us after the idle timeout. */
	send_all(fd, "set=1\nlisten", 12);
	assert_true(is_closed(fd));
	close(fd);
}

static void test_idle_timeout(void **state)
{
	struct fake f = {0};

	(void)state;
	run(client_idle, &f);
	assert_int_equal(f.last_set_len, 0);
}

static void test_socket_check(void **state)
{
	struct uapi_handler h = {.get = fake_get, .set = fake_set};
	struct uapi_server *srv, *srv2;
	char path[108];
	struct loop *loop = loop_new();
	int fd;
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	(void)state;
	snprintf(path, sizeof(path), "/tmp/trellis-test-uapi-%d/y.sock", (int)getpid());
	assert_int_equal(uapi_server_new(loop, path, &h, &srv), 0);
	/* Something answers: refuse. */
	assert_int_equal(uapi_socket_check(path), -EADDRINUSE);
	assert_int_equal(uapi_server_new(loop, path, &h, &srv2), -EADDRINUSE);
	uapi_server_free(srv);
	/* A stale socket file (bound, never listening) is removed. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	strcpy(sun.sun_path, path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	assert_int_equal(access(path, F_OK), 0);
	assert_int_equal(uapi_socket_check(path), 0);
	assert_int_equal(access(path, F_OK), -1);
	loop_free(loop);
	snprintf(path, sizeof(path), "/tmp/trellis-test-uapi-%d", (int)getpid());
	rmdir(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_get_set),	 cmocka_unit_test(test_garbage),
	    cmocka_unit_test(test_oversize),	 cmocka_unit_test(test_slow_handler),
	    cmocka_unit_test(test_conn_cap),	 cmocka_unit_test(test_idle_timeout),
	    cmocka_unit_test(test_socket_check),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
