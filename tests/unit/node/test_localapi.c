/* SPDX-License-Identifier: MIT */
/* Local API server against a fake backend; the loop runs on its own thread, clients block. */
#include "../../../src/node/localapi.c"
#include "../../../src/node/usock.c"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

static struct loop *lp;
static struct loop_async wake_async;
static struct localapi_server *srv;
static pthread_t thr;
static char sock_path[108];
static struct localapi_req *pending;
static int downs;

static void node_set(struct netmap_node *n, uint64_t id, const char *name)
{
	memset(n, 0, sizeof(*n));
	n->id = id;
	snprintf(n->name, sizeof(n->name), "%s", name);
	memset(n->node_key, (int)id, sizeof(n->node_key));
	n->n_addresses = 2;
	n->addresses[0] = (struct netmap_prefix){AF_INET, 32, {100, 64, 0, (uint8_t)id}};
	n->addresses[1] = (struct netmap_prefix){
	    AF_INET6, 128, {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11, [12] = 100, 64, 0, (uint8_t)id}};
	snprintf(n->os, sizeof(n->os), "linux");
	n->online = true;
}

static int fake_status(void *ctx, json_t **ret)
{
	struct netmap_node peers[1];
	struct netmap nm = {.seq = 1, .n_peers = 1, .peers = peers};

	(void)ctx;
	snprintf(nm.tailnet, sizeof(nm.tailnet), "default");
	node_set(&nm.self, 1, "self-host");
	node_set(&peers[0], 2, "peer-two");
	nm.peers[0].n_endpoints = 1;
	endpoint_parse(&nm.peers[0].endpoints[0], "198.51.100.2:41641");
	return localapi_status_build("running", &nm, NULL, ret);
}

static void fake_up(void *ctx, const struct localapi_up_opts *o, struct localapi_req *req)
{
	(void)ctx;
	if (o->auth_key) {
		if (!strcmp(o->auth_key, "bad"))
			localapi_req_finish(req, localapi_reply_error("auth key rejected"));
		else
			localapi_req_finish(req, localapi_reply_ok());
		return;
	}
	localapi_req_progress(req, json_pack("{s:b, s:s, s:s}", "ok", 1, "state", "needs_login",
					     "auth_url", "http://192.0.2.1/a/xyz"));
	pending = req;
}

static int fake_down(void *ctx, char *err, size_t len)
{
	(void)ctx, (void)err, (void)len;
	downs++;
	return 0;
}

static int fake_logout(void *ctx, char *err, size_t len)
{
	(void)ctx;
	snprintf(err, len, "control server unreachable");
	return -EHOSTUNREACH;
}

static void wake(struct loop_async *a)
{
	(void)a;
	if (pending) {
		localapi_req_finish(pending, json_pack("{s:b, s:s}", "ok", 1, "state", "running"));
		pending = NULL;
		return;
	}
	loop_stop(lp);
}

static void *run(void *arg)
{
	(void)arg;
	loop_run(lp);
	return NULL;
}

static int setup(void **state)
{
	static const struct localapi_backend be = {.status = fake_status,
						   .up = fake_up,
						   .down = fake_down,
						   .logout = fake_logout};
	(void)state;
	snprintf(sock_path, sizeof(sock_path), "/tmp/trellis-test-%d/sub/la.sock", getpid());
	lp = loop_new();
	assert_non_null(lp);
	wake_async.cb = wake;
	loop_async_add(lp, &wake_async);
	assert_int_equal(localapi_server_new(lp, sock_path, &be, &srv), 0);
	assert_int_equal(pthread_create(&thr, NULL, run, NULL), 0);
	return 0;
}

static int teardown(void **state)
{
	char dir[128];

	(void)state;
	pending = NULL;
	loop_async_send(&wake_async);
	pthread_join(thr, NULL);
	localapi_server_free(srv);
	loop_free(lp);
	assert_int_equal(access(sock_path, F_OK), -1);
	snprintf(dir, sizeof(dir), "/tmp/trellis-test-%d/sub", getpid());
	rmdir(dir);
	snprintf(dir, sizeof(dir), "/tmp/trellis-test-%d", getpid());
	rmdir(dir);
	return 0;
}

static int client(void)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sun.sun_path, sock_path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return fd;
}

static void send_str(int fd, const char *s)
{
	assert_int_equal(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* One reply line as JSON; NULL on EOF. */
static json_t *recv_line(int fd)
{
	char buf[65536];
	size_t len = 0;

	while (len < sizeof(buf)) {
		ssize_t n = recv(fd, buf + len, 1, 0);

		if (n <= 0)
			return NULL;
		if (buf[len] == '\n')
			return json_loadb(buf, len, 0, NULL);
		len++;
	}
	return NULL;
}

static json_t *call(const char *req)
{
	int fd = client();
	json_t *r;

	send_str(fd, req);
	r = recv_line(fd);
	close(fd);
	assert_non_null(r);
	return r;
}

static void test_reads(void **state)
{
	json_t *r, *peer;
	struct stat st;

	(void)state;
	assert_int_equal(stat(sock_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
	r = call("{\"cmd\":\"status\"}\n");
	assert_true(json_is_true(json_object_get(r, "ok")));
	peer = json_array_get(json_object_get(json_object_get(r, "status"), "peers"), 0);
	assert_string_equal(json_string_value(json_object_get(peer, "hostname")), "peer-two");
	assert_string_equal(json_string_value(json_object_get(peer, "path")), "direct");
	assert_string_equal(json_string_value(json_object_get(peer, "endpoint")),
			    "198.51.100.2:41641");
	assert_string_equal(json_string_value(json_array_get(json_object_get(peer, "ips"), 1)),
			    "fd7e:11e5:7a11::6440:2");
	json_decref(r);

	r = call("{\"cmd\":\"ip\"}\n");
	assert_string_equal(json_string_value(json_array_get(json_object_get(r, "ips"), 0)),
			    "100.64.0.1");
	json_decref(r);

	r = call("{\"cmd\":\"whois\",\"addr\":\"fd7e:11e5:7a11:0::6440:2\"}\n");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(r, "node"), "hostname")), "peer-two");
	json_decref(r);
	r = call("{\"cmd\":\"whois\",\"addr\":\"100.64.0.77\"}\n");
	assert_false(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
}

static void test_bad_input(void **state)
{
	char big[LOCALAPI_REQUEST_MAX + 10];
	json_t *r;
	int fd;

	(void)state;
	r = call("not json\n");
	assert_false(json_is_true(json_object_get(r, "ok")));
	assert_non_null(json_string_value(json_object_get(r, "error")));
	json_decref(r);
	r = call("{\"cmd\":\"reboot\"}\n");
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "unknown"));
	json_decref(r);
	/* Several requests on one connection are answered in order. */
	fd = client();
	send_str(fd, "{\"cmd\":\"ip\"}\n\n{\"cmd\":\"down\"}\n");
	r = recv_line(fd);
	assert_non_null(json_object_get(r, "ips"));
	json_decref(r);
	r = recv_line(fd);
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	close(fd);
	assert_int_equal(downs, 1);
	/* An over-long line: an error, then the connection closes. */
	fd = client();
	memset(big, 'x', sizeof(big));
	send(fd, big, sizeof(big), MSG_NOSIGNAL);
	r = recv_line(fd);
	assert_non_null(r);
	assert_false(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	assert_null(recv_line(fd));
	close(fd);
}

static void test_writes(void **state)
{
	json_t *r;
	int fd;

	(void)state;
	r = call("{\"cmd\":\"up\",\"login_server\":\"http://192.0.2.1\",\"auth_key\":\"k\"}\n");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	r = call("{\"cmd\":\"up\",\"login_server\":\"http://192.0.2.1\",\"auth_key\":\"bad\"}\n");
	assert_string_equal(json_string_value(json_object_get(r, "error")), "auth key rejected");
	json_decref(r);
	r = call("{\"cmd\":\"up\"}\n");
	assert_false(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	r = call("{\"cmd\":\"logout\"}\n");
	assert_string_equal(json_string_value(json_object_get(r, "error")),
			    "control server unreachable");
	json_decref(r);

	/* Interactive: needs_login with the URL first, the final line later. */
	fd = client();
	send_str(fd, "{\"cmd\":\"up\",\"login_server\":\"http://192.0.2.1\"}\n");
	r = recv_line(fd);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "needs_login");
	assert_string_equal(json_string_value(json_object_get(r, "auth_url")),
			    "http://192.0.2.1/a/xyz");
	json_decref(r);
	loop_async_send(&wake_async); /* the fake backend finishes on wake */
	r = recv_line(fd);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	close(fd);

	/* Not root: reads work, writes are refused. */
	srv->write_uid = 12345;
	r = call("{\"cmd\":\"down\"}\n");
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "permission"));
	json_decref(r);
	r = call("{\"cmd\":\"status\"}\n");
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	srv->write_uid = 0;
}

static void test_in_use(void **state)
{
	static const struct localapi_backend be = {0};
	struct localapi_server *s2;

	(void)state;
	assert_int_equal(localapi_server_new(lp, sock_path, &be, &s2), -EADDRINUSE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_reads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_in_use, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
