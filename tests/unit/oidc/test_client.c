/* SPDX-License-Identifier: MIT */
/*
 * The relying party's client (oidc/client.c) without a provider: its configuration
 * refusals, a provider that accepts connections and never answers (the wait is
 * bounded by timeout_ms and says so), one that refuses connections, and a login's
 * end on a worker pool: a forged state is refused before any request, and done runs
 * on the loop thread exactly once with the error. Talking to a real provider is
 * lab/test_oidc's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/time.h"
#include "../loop_until.h"
#include "oidc/client.h"

static char err[OIDC_ERR_MAX];

/* A listener on 127.0.0.1 that never accepts: connections complete, then silence. */
static int mute_listener(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

static void test_config_refusals(void **state)
{
	struct oidc_config cfg = {
	    .issuer = "http://idp.example", .client_id = "c", .client_secret = "s"};
	struct oidc_client *c = NULL;

	(void)state;
	assert_int_equal(oidc_client_new(&cfg, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "https"));
	cfg.issuer = "https://idp.example/";
	cfg.client_secret = "";
	assert_int_equal(oidc_client_new(&cfg, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "secret"));
	cfg.client_secret = "s";
	cfg.allowed_domains = "a@b";
	assert_int_equal(oidc_client_new(&cfg, &c, err, sizeof(err)), -EINVAL);
	cfg.allowed_domains = "example.com";
	cfg.token_auth = "private_key_jwt";
	assert_int_equal(oidc_client_new(&cfg, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "private_key_jwt"));
	cfg.token_auth = "client_secret_post";
	cfg.allowed_groups = " , ";
	assert_int_equal(oidc_client_new(&cfg, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "empty list of allowed groups"));
	cfg.allowed_groups = "eng, Domain Users";
	cfg.groups_claim = "";
	assert_int_equal(oidc_client_new(&cfg, &c, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "groups claim"));
	cfg.groups_claim = "roles";
	assert_int_equal(oidc_client_new(&cfg, &c, err, sizeof(err)), 0);
	oidc_client_free(c);
	oidc_client_free(NULL);
}

static struct oidc_client *client_at(uint16_t port, unsigned timeout_ms)
{
	char issuer[64];
	struct oidc_config cfg = {.issuer = issuer,
				  .client_id = "c",
				  .client_secret = "s",
				  .redirect_uri = "https://ctl.example/cb",
				  .timeout_ms = timeout_ms};
	struct oidc_client *c = NULL;

	snprintf(issuer, sizeof(issuer), "https://127.0.0.1:%u", port);
	assert_int_equal(oidc_client_new(&cfg, &c, err, sizeof(err)), 0);
	return c;
}

static void test_silent_provider(void **state)
{
	uint16_t port;
	int fd = mute_listener(&port);
	struct oidc_client *c = client_at(port, 300);
	uint64_t t0 = time_now_ns(), took;

	(void)state;
	assert_int_equal(oidc_client_discover(c, err, sizeof(err)), -ETIMEDOUT);
	took = time_now_ns() - t0;
	assert_non_null(strstr(err, "OIDC discovery: https://127.0.0.1:"));
	assert_non_null(strstr(err, "did not answer within 300 ms"));
	assert_true(took >= 250 * NSEC_PER_MSEC && took < 3 * NSEC_PER_SEC);
	oidc_client_free(c);
	close(fd);
}

static void test_refused_provider(void **state)
{
	uint16_t port;
	int fd = mute_listener(&port);
	struct oidc_client *c;

	(void)state;
	close(fd); /* nothing listens there now */
	c = client_at(port, 2000);
	assert_int_equal(oidc_client_discover(c, err, sizeof(err)), -EIO);
	assert_non_null(strstr(err, "OIDC discovery: https://127.0.0.1:"));
	oidc_client_free(c);
}

struct finish {
	struct oidc_finish_job j;
	pthread_t loop_thread;
	int dones, r;
	bool on_loop;
	char err[OIDC_ERR_MAX];
};

static void finish_done(struct oidc_finish_job *j, int r)
{
	struct finish *f = container_of(j, struct finish, j);

	f->dones++;
	f->r = r;
	f->on_loop = pthread_equal(pthread_self(), f->loop_thread);
	snprintf(f->err, sizeof(f->err), "%s", j->err);
}

static bool done_once(void *arg)
{
	return ((struct finish *)arg)->dones > 0;
}

struct begin {
	struct oidc_begin_job j;
	pthread_t loop_thread;
	int dones;
	bool on_loop;
};

static void begin_done(struct oidc_begin_job *j, int r)
{
	struct begin *b = container_of(j, struct begin, j);

	(void)r;
	b->dones++;
	b->on_loop = pthread_equal(pthread_self(), b->loop_thread);
}

static bool begun(void *arg)
{
	return ((struct begin *)arg)->dones > 0;
}

static void test_finish_on_pool(void **state)
{
	struct loop *loop = loop_new();
	struct workq *q = NULL;
	uint16_t port;
	int fd = mute_listener(&port);
	struct oidc_client *c = client_at(port, 300);
	struct oidc_request req = {0};
	struct finish *f = calloc(1, sizeof(*f));
	char query[256];

	(void)state;
	assert_int_equal(workq_new(loop, 2, 8, &q), 0);
	assert_int_equal(oidc_random_token(req.state), 0);
	assert_int_equal(oidc_random_token(req.nonce), 0);
	assert_int_equal(oidc_random_token(req.verifier), 0);
	f->loop_thread = pthread_self();

	/* A state this login did not send: refused before any request goes out. */
	assert_int_equal(
	    oidc_finish_submit(q, &f->j, c, &req, "code=abc&state=forged", finish_done), 0);
	assert_true(loop_until(loop, done_once, f, 5 * NSEC_PER_SEC));
	assert_int_equal(f->dones, 1);
	assert_true(f->on_loop);
	assert_int_equal(f->r, -EACCES);
	assert_string_equal(f->err, "OIDC callback state does not match this login");

	/* The right state: the exchange begins with discovery, which times out. */
	memset(f, 0, sizeof(*f));
	f->loop_thread = pthread_self();
	snprintf(query, sizeof(query), "code=abc&state=%s", req.state);
	assert_int_equal(oidc_finish_submit(q, &f->j, c, &req, query, finish_done), 0);
	assert_true(loop_until(loop, done_once, f, 5 * NSEC_PER_SEC));
	assert_int_equal(f->dones, 1);
	assert_int_equal(f->r, -ETIMEDOUT);
	assert_non_null(strstr(f->err, "did not answer within 300 ms"));

	/* The start of a login on the pool: discovery times out the same way. */
	{
		struct begin b = {.loop_thread = pthread_self()};

		assert_int_equal(oidc_begin_submit(q, &b.j, c, begin_done), 0);
		assert_true(loop_until(loop, begun, &b, 5 * NSEC_PER_SEC));
		assert_int_equal(b.dones, 1);
		assert_true(b.on_loop);
		assert_int_equal(b.j.r, -ETIMEDOUT);
		assert_non_null(strstr(b.j.err, "did not answer within 300 ms"));
	}

	workq_free(q);
	assert_int_equal(f->dones, 1);
	free(f);
	oidc_client_free(c);
	loop_free(loop);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_config_refusals),
	    cmocka_unit_test(test_silent_provider),
	    cmocka_unit_test(test_refused_provider),
	    cmocka_unit_test(test_finish_on_pool),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
