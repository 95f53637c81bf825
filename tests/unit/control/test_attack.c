// SPDX-License-Identifier: MIT
/*
 * The attacks of issue 7 against trellis-control, over the real protocol on
 * loopback (server_harness.h: the server on a thread, clients from
 * proto/http + ctrlstream + ctrlmsg). Each test is one finding; its comment
 * says what the server did before the fix. The process keeps SIGPIPE's
 * default action on purpose: a write that raises it ends the test run.
 *
 * Attackers use sources of their own (127.0.1.0/24 and up) so that the
 * per-source limits they hit do not touch each other or the well-behaved
 * clients (127.0.0.1-250).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/base64.h"
#include "base/time.h"
#include "control/addr.h"
#include "control/admin.h"
#include "control/admin_op.h"
#include "control/authkey.h"
#include "control/server.c"
#include "control/store.h"
#include "crypto/crypto.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/http.h"
#include "proto/mapz.h"

#include "server_harness.h"

#define ATTACKER(net, host) (0x7f000000U | ((net) << 8) | (host)) /* 127.0.net.host */

static void server_key_learn(void)
{
	assert_int_equal(key_from_base64(E.server_pub, E.srv->pub_b64), 0);
}

/* Waits for the server to close fd (EOF or reset); false after timeout_ms. */
static bool closed_within(int fd, int timeout_ms)
{
	uint64_t end = time_now_ns() + (uint64_t)timeout_ms * NSEC_PER_MSEC;
	char buf[512];

	for (;;) {
		uint64_t now = time_now_ns();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (now >= end)
			return false;
		if (poll(&p, 1, (int)((end - now) / NSEC_PER_MSEC) + 1) <= 0)
			continue;
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			return true;
	}
}

/*
 * Finding 1: TLS, POST /control and a valid Noise message 1 in one record,
 * then a reset. The server wrote the 101 and message 2 with OpenSSL's socket
 * BIO (write(), no MSG_NOSIGNAL) into the reset connection: SIGPIPE killed
 * it (status 141, 3 of 3). Here the server is in this process: SIGPIPE would
 * end the test run.
 */
struct tls_env {
	char dir[64];
	struct control_server *srv;
	pthread_t thr;
	uint16_t port;
	uint8_t pub[32];
};

static void tls_server_start(struct tls_env *t)
{
	struct control_serve_opts o = { .listen = "127.0.0.1:0" };
	char cmd[512], cert[96], key[96];

	strcpy(t->dir, "/tmp/trellis-attack-tls-XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	snprintf(cert, sizeof(cert), "%s/cert.pem", t->dir);
	snprintf(key, sizeof(key), "%s/key.pem", t->dir);
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
		 "-days 1 -subj /CN=127.0.0.1 -keyout '%s' -out '%s' 2>/dev/null",
		 key, cert);
	assert_int_equal(system(cmd), 0);
	o.state_dir = t->dir;
	o.tls_cert = cert;
	o.tls_key = key;
	assert_int_equal(control_server_new(&o, &t->srv), 0);
	t->port = control_server_port(t->srv);
	assert_int_equal(key_from_base64(t->pub, t->srv->pub_b64), 0);
	assert_int_equal(pthread_create(&t->thr, NULL, run, t->srv), 0);
}

static void tls_server_stop(struct tls_env *t)
{
	char cmd[128];

	control_server_stop(t->srv);
	pthread_join(t->thr, NULL);
	control_server_free(t->srv);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
	assert_int_equal(system(cmd), 0);
}

static SSL *tls_connect(SSL_CTX *ctx, uint16_t port, int *ret_fd)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	SSL *ssl;

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ssl = SSL_new(ctx);
	assert_non_null(ssl);
	SSL_set_fd(ssl, fd);
	assert_int_equal(SSL_connect(ssl), 1);
	*ret_fd = fd;
	return ssl;
}

static void test_sigpipe_tls(void **state)
{
	struct tls_env t;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	struct linger rst = { .l_onoff = 1, .l_linger = 0 };
	char buf[4096];
	int fd, n;

	(void)state;
	assert_non_null(ctx);
	tls_server_start(&t);
	for (int i = 0; i < 20; i++) {
		uint8_t mpriv[32], rec[2048];
		struct ctrlstream *cs;
		const uint8_t *d;
		size_t len;
		SSL *ssl = tls_connect(ctx, t.port, &fd);

		n = http_control_request_build((char *)rec, sizeof(rec), "127.0.0.1");
		assert_true(n > 0);
		assert_int_equal(x25519_private_generate(mpriv), 0);
		cs = ctrlstream_client_new(mpriv, t.pub);
		assert_non_null(cs);
		assert_int_equal(ctrlstream_output(cs, &d, &len), 0);
		assert_int_equal(len, 4 + 96);
		memcpy(rec + n, d, len);
		/* One record: head and message 1 arrive together. */
		assert_int_equal(SSL_write(ssl, rec, n + (int)len), n + (int)len);
		ctrlstream_free(cs);
		/* A reset, not a FIN: the server's next writes fail with EPIPE. */
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
		close(fd);
		SSL_free(ssl);
	}
	/* Still serving. */
	{
		SSL *ssl = tls_connect(ctx, t.port, &fd);
		static const char req[] = "GET /key HTTP/1.1\r\nHost: x\r\n\r\n";
		size_t len = 0;

		assert_int_equal(SSL_write(ssl, req, sizeof(req) - 1), (int)sizeof(req) - 1);
		while ((n = SSL_read(ssl, buf + len, (int)(sizeof(buf) - 1 - len))) > 0)
			len += (size_t)n;
		buf[len] = '\0';
		assert_true(strncmp(buf, "HTTP/1.1 200", 12) == 0);
		SSL_free(ssl);
		close(fd);
	}
	tls_server_stop(&t);
	SSL_CTX_free(ctx);
}

/* Handshakes from src and returns the client, established. */
static void attacker_open(struct client *c, uint32_t src)
{
	src_fixed = src;
	client_open(c);
	src_fixed = 0;
}

/*
 * Finding 2: registrations without a credential created durable, addressed,
 * unapproved nodes without limit (2,000 in 3.6 s from one client). Now they
 * wait in memory, PENDING_PER_SOURCE per /24, and keyed registrations from
 * the same source go on working.
 */
static void test_pending_flood(void **state)
{
	size_t nodes0 = store_node_count();
	unsigned ok = 0, refused = 0;
	struct client c, good;
	struct ctrl_msg m;

	(void)state;
	server_key_learn();
	for (unsigned i = 0; i < PENDING_PER_SOURCE + 8; i++) {
		char host[32];

		/* 127.0.1.1-24: one /24. */
		attacker_open(&c, ATTACKER(1, 1 + i));
		snprintf(host, sizeof(host), "flood-%u", i);
		client_register(&c, NULL, host, &m);
		if (m.reg_resp.status == CTRL_REGISTER_NEEDS_AUTH)
			ok++;
		else if (m.reg_resp.status == CTRL_REGISTER_ERROR &&
			 strstr(m.reg_resp.error, "waiting for approval"))
			refused++;
		ctrl_msg_clear(&m);
		client_close(&c);
	}
	print_message("flood from one /24: %u pending, %u refused\n", ok, refused);
	assert_int_equal(ok, PENDING_PER_SOURCE);
	assert_int_equal(refused, 8);
	/* Nothing durable, no address taken. */
	assert_int_equal(store_node_count(), nodes0);
	assert_int_equal(addr_pool_used(registry_tailnet_get(E.srv->reg, E.srv->default_tid)->pool),
			 nodes0);
	/* A valid auth key from the same /24 still registers. */
	attacker_open(&good, ATTACKER(1, 200));
	client_register(&good, E.reusable, "keyed-after-flood", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	ctrl_msg_clear(&m);
	client_close(&good);
	assert_int_equal(store_node_count(), nodes0 + 1);
}

/*
 * A machine waiting interactively that registers with an auth key on another
 * connection: its waiting registration goes (it would otherwise hold a
 * pending slot until the TTL), and the waiting connection is told.
 */
static void test_pending_settled_by_key(void **state)
{
	struct client waiting, keyed;
	struct ctrl_msg m;
	size_t n0;

	(void)state;
	server_key_learn();
	assert_int_equal(x25519_private_generate(machine_next), 0);
	machine_fixed = true;
	attacker_open(&waiting, ATTACKER(7, 1));
	attacker_open(&keyed, ATTACKER(7, 2));
	machine_fixed = false;
	n0 = pending_count(E.srv->pend);
	client_register(&waiting, NULL, "both", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_NEEDS_AUTH);
	ctrl_msg_clear(&m);
	client_register(&keyed, E.reusable, "both", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	ctrl_msg_clear(&m);
	assert_int_equal(client_recv(&waiting, &m, 3000), 0);
	assert_int_equal(m.type, CTRL_MSG_ERROR);
	assert_non_null(strstr(m.error, "another connection"));
	client_close(&waiting);
	client_close(&keyed);
	/* The loop thread owns the table; it is at rest once the replies are out. */
	assert_int_equal(pending_count(E.srv->pend), n0);
}

/*
 * Finding 3: the per-source cap ended at the Noise handshake (300 of 300
 * authenticated-but-unregistered connections from one address). Now a
 * connection counts until it is a registered node's map stream.
 */
static void test_unregistered_count(void **state)
{
	struct client c[HTTPD_UNAUTH_PER_SOURCE];
	char buf[256];
	int fd, n;

	(void)state;
	server_key_learn();
	for (int i = 0; i < HTTPD_UNAUTH_PER_SOURCE; i++)
		attacker_open(&c[i], ATTACKER(2, 1));
	/* One more from that address: closed at accept, no 101. */
	src_fixed = ATTACKER(2, 1);
	fd = tcp_connect();
	src_fixed = 0;
	n = http_control_request_build(buf, sizeof(buf), "127.0.0.1");
	send(fd, buf, (size_t)n, MSG_NOSIGNAL);
	assert_int_equal(read_until_close(fd, buf, sizeof(buf), 3000), 0);
	close(fd);
	for (int i = 0; i < HTTPD_UNAUTH_PER_SOURCE; i++)
		client_close(&c[i]);
}

/*
 * Finding 3: a connection that completed the handshake and then said
 * nothing stayed until the 90 s silence timeout. Now: 10 s to register or
 * ask for a map.
 */
static void test_idle_after_handshake(void **state)
{
	uint64_t t0;
	struct client c;

	(void)state;
	server_key_learn();
	attacker_open(&c, ATTACKER(3, 1));
	t0 = time_now_ns();
	assert_true(closed_within(c.fd, 15000));
	print_message("idle authenticated connection closed after %.1f s\n",
		      (double)(time_now_ns() - t0) / 1e9);
	client_close(&c);
}

/*
 * Finding 3: handshakes per source through a token bucket. Before, one
 * address could upgrade (and make the server do the Noise DH) as fast as it
 * could connect.
 */
static void test_handshake_bucket(void **state)
{
	char req[256], buf[512];
	unsigned upgraded = 0, limited = 0;
	int n = http_control_request_build(req, sizeof(req), "127.0.0.1");

	(void)state;
	for (int i = 0; i < HTTPD_UPGRADE_BURST * 2; i++) {
		int fd;

		src_fixed = ATTACKER(4, 1);
		fd = tcp_connect();
		src_fixed = 0;
		write_all(fd, req, (size_t)n);
		read_until_close(fd, buf, 13, 200);
		if (strncmp(buf, "HTTP/1.1 101", 12) == 0)
			upgraded++;
		else if (strncmp(buf, "HTTP/1.1 429", 12) == 0)
			limited++;
		close(fd);
	}
	print_message("%u upgrades, %u refused with 429\n", upgraded, limited);
	/* The burst, and what refilled meanwhile at HTTPD_UPGRADE_RATE/s. */
	assert_true(upgraded >= HTTPD_UPGRADE_BURST);
	assert_true(limited > 0);
	assert_int_equal(upgraded + limited, HTTPD_UPGRADE_BURST * 2);
}

/*
 * Finding 4: a second machine registered with a victim's node key got ok and
 * took its traffic. Now a register must prove the node key for its session,
 * and a key held by another machine's node is refused even with the proof (a
 * stolen key).
 */
static void test_node_key_takeover(void **state)
{
	struct client victim, thief;
	struct ctrl_msg m, r = { .type = CTRL_MSG_REGISTER };
	uint64_t proof0 = metric("trellis_control_drops_total{reason=\"node_key_proof\"}");

	(void)state;
	server_key_learn();
	client_open(&victim);
	client_register(&victim, E.reusable, "victim", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	ctrl_msg_clear(&m);
	client_map(&victim, NULL, &m);
	ctrl_msg_clear(&m);

	/* The victim's public key, a proof made with the thief's own key: refused, closed. */
	attacker_open(&thief, ATTACKER(5, 1));
	memcpy(r.reg.node_key, victim.node_pub, 32);
	client_prove(&thief, thief.node_priv, &r.reg);
	snprintf(r.reg.hostname, sizeof(r.reg.hostname), "thief");
	snprintf(r.reg.os, sizeof(r.reg.os), "linux");
	snprintf(r.reg.auth_key, sizeof(r.reg.auth_key), "%s", E.reusable);
	client_send(&thief, &r);
	assert_int_equal(client_recv(&thief, &m, 3000), 0);
	assert_int_equal(m.type, CTRL_MSG_ERROR);
	assert_non_null(strstr(m.error, "not proven"));
	client_close(&thief);

	/* No proof at all (a node from before the proof): refused, closed. */
	attacker_open(&thief, ATTACKER(5, 2));
	r.reg.has_node_key_proof = false;
	client_send(&thief, &r);
	assert_int_equal(client_recv(&thief, &m, 3000), 0);
	assert_int_equal(m.type, CTRL_MSG_ERROR);
	assert_non_null(strstr(m.error, "node_key_proof"));
	client_close(&thief);
	assert_int_equal(metric("trellis_control_drops_total{reason=\"node_key_proof\"}"),
			 proof0 + 2);

	/* The stolen private key proves it, but the key belongs to the victim's node. */
	attacker_open(&thief, ATTACKER(5, 3));
	memcpy(thief.node_priv, victim.node_priv, 32);
	memcpy(thief.node_pub, victim.node_pub, 32);
	client_register(&thief, E.reusable, "thief", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_ERROR);
	assert_string_equal(m.reg_resp.error, REGISTER_ERR_NODE_KEY_TAKEN);
	ctrl_msg_clear(&m);
	/* Nor can it ask for the victim's map. */
	{
		struct ctrl_msg mr = { .type = CTRL_MSG_MAP_REQUEST };

		memcpy(mr.map_req.node_key, victim.node_pub, 32);
		mr.map_req.stream = true;
		client_send(&thief, &mr);
		assert_int_equal(client_recv(&thief, &m, 3000), 0);
		assert_int_equal(m.type, CTRL_MSG_ERROR);
	}
	client_close(&thief);
	client_close(&victim);
}

/* Finding 7: before the handshake only the 96-byte frame: a 64 KiB header is refused at once. */
static void test_preauth_frame_length(void **state)
{
	char buf[512];
	uint64_t t0;
	int fd, n;

	(void)state;
	src_fixed = ATTACKER(6, 1);
	fd = tcp_connect();
	src_fixed = 0;
	n = http_control_request_build(buf, sizeof(buf), "127.0.0.1");
	memcpy(buf + n, "\x00\x00\xff\xff", 4);
	write_all(fd, buf, (size_t)n + 4);
	t0 = time_now_ns();
	/* Before: the server reserved the 64 KiB and waited for them until the 10 s deadline. */
	assert_true(closed_within(fd, 2000));
	assert_true(time_now_ns() - t0 < 2 * NSEC_PER_SEC);
	close(fd);
}

/* Finding 12: /metrics is not on the public port. */
static void test_metrics_not_public(void **state)
{
	(void)state;
	assert_int_equal(http_status_of("GET /metrics HTTP/1.1\r\n\r\n", NULL, 0), 404);
	assert_int_equal(http_status_at(E.mport, "GET /metrics HTTP/1.1\r\n\r\n", NULL, 0), 200);
}

/* Finding 14: a state directory made with loose modes is tightened to 0700. */
static void test_state_dir_tightened(void **state)
{
	struct control_serve_opts o = { .listen = "127.0.0.1:0" };
	struct control_server *srv;
	char dir[] = "/tmp/trellis-attack-dir-XXXXXX", cmd[80];
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0755), 0);
	o.state_dir = dir;
	assert_int_equal(control_server_new(&o, &srv), 0);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	control_server_free(srv);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sigpipe_tls),
		cmocka_unit_test(test_pending_flood),
		cmocka_unit_test(test_pending_settled_by_key),
		cmocka_unit_test(test_unregistered_count),
		cmocka_unit_test(test_handshake_bucket),
		cmocka_unit_test(test_node_key_takeover),
		cmocka_unit_test(test_preauth_frame_length),
		cmocka_unit_test(test_metrics_not_public),
		cmocka_unit_test(test_state_dir_tightened),
		cmocka_unit_test(test_idle_after_handshake),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
