// SPDX-License-Identifier: MIT
/*
 * control-attack: the attacks of issue 7 against a running trellis-control,
 * over the real protocol (HTTP(S) upgrade, Noise_IK, framed JSON). Used by
 * tests/lab/test_control_attack.sh, and by hand against any build:
 *
 *   control-attack SCENARIO HOST PORT [--tls]
 *
 * Connections come from 127.0.N.x, one N per scenario, so that per-source
 * limits one scenario hits do not touch another. Prints what happened and
 * exits 0 when the server held, 1 when the attack worked, 2 when the tool
 * itself failed. Scenarios:
 *
 *   sigpipe       TLS; POST /control and Noise message 1 in one record; reset (x20)
 *   flood         40 interactive registrations with fresh machine keys from one /24
 *   takeover      a second machine registers a first one's node key (auth key from $AUTHKEY)
 *   unregistered  65 handshaked, never registered connections from one address
 *   idle          one handshaked connection that says nothing: closed within 15 s?
 *   preauth       a 64 KiB frame header before the handshake: closed within 2 s?
 *   bucket        128 upgrades from one address as fast as it can
 *   metrics       GET /metrics on the public port
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/base64.h"
#include "crypto/crypto.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/http.h"

static const char *host;
static uint16_t port;
static bool tls;
static SSL_CTX *ctx;
static uint8_t server_pub[32];

struct conn {
	int fd;
	SSL *ssl;
	struct ctrlstream *cs;
	uint8_t node_priv[32], node_pub[32];
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void die(const char *what)
{
	fprintf(stderr, "control-attack: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int tcp_from(uint32_t src)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(src) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		die("socket");
	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		die("address");
	if (src && bind(fd, (struct sockaddr *)&s, sizeof(s)) < 0)
		die("bind");
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		return -1;
	return fd;
}

static bool conn_open(struct conn *c, uint32_t src)
{
	memset(c, 0, sizeof(*c));
	c->fd = tcp_from(src);
	if (c->fd < 0)
		return false;
	if (tls) {
		c->ssl = SSL_new(ctx);
		SSL_set_fd(c->ssl, c->fd);
		if (SSL_connect(c->ssl) != 1)
			return false;
	}
	return true;
}

static void conn_close(struct conn *c)
{
	if (c->ssl)
		SSL_free(c->ssl);
	if (c->fd >= 0)
		close(c->fd);
	ctrlstream_free(c->cs);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static bool conn_write(struct conn *c, const void *p, size_t n)
{
	if (c->ssl)
		return SSL_write(c->ssl, p, (int)n) == (int)n;
	return send(c->fd, p, n, MSG_NOSIGNAL) == (ssize_t)n;
}

/* Bytes read, 0 at the end, -1 on an error (a reset), -2 on timeout. */
static ssize_t conn_read(struct conn *c, void *p, size_t cap, int timeout_ms)
{
	struct pollfd pf = { .fd = c->fd, .events = POLLIN };

	if (!(c->ssl && SSL_pending(c->ssl)) && poll(&pf, 1, timeout_ms) <= 0)
		return -2;
	if (c->ssl) {
		int n = SSL_read(c->ssl, p, (int)cap);

		return n > 0 ? n : SSL_get_error(c->ssl, n) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
	}
	return read(c->fd, p, cap);
}

/* Does the server close c (EOF or reset) within timeout_ms? */
static bool closed_within(struct conn *c, int timeout_ms)
{
	uint64_t end = now_ms() + (uint64_t)timeout_ms;
	char buf[4096];

	while (now_ms() < end) {
		ssize_t n = conn_read(c, buf, sizeof(buf), (int)(end - now_ms()) + 1);

		if (n == 0 || n == -1)
			return true;
	}
	return false;
}

/* A whole HTTP response head; its status, or 0. */
static unsigned http_exchange(struct conn *c, const char *req, char *buf, size_t cap)
{
	struct http_response resp;
	size_t len = 0;

	if (!conn_write(c, req, strlen(req)))
		return 0;
	while (len < cap - 1) {
		ssize_t n = conn_read(c, buf + len, 1, 3000); /* byte by byte: nothing past the head */

		if (n <= 0)
			return 0;
		len += (size_t)n;
		if (http_response_parse(&resp, buf, len) == 0) {
			buf[len] = '\0';
			return resp.status;
		}
	}
	return 0;
}

static void server_key_fetch(void)
{
	struct conn c;
	char buf[4096], *p;
	size_t len = 0;
	ssize_t n;

	if (!conn_open(&c, 0))
		die("connect");
	conn_write(&c, "GET /key HTTP/1.1\r\nHost: x\r\n\r\n", 30);
	while ((n = conn_read(&c, buf + len, sizeof(buf) - 1 - len, 3000)) > 0)
		len += (size_t)n;
	buf[len] = '\0';
	p = strstr(buf, "\"key\":\"");
	if (!p || key_from_base64(server_pub, (p[7 + KEY_BASE64_LEN] = '\0', p + 7)) < 0) {
		fprintf(stderr, "control-attack: no server key at GET /key\n");
		exit(2);
	}
	conn_close(&c);
}

static void out_pump(struct conn *c)
{
	const uint8_t *d;
	size_t n;

	if (ctrlstream_output(c->cs, &d, &n) == 0 && n && conn_write(c, d, n))
		ctrlstream_output_consume(c->cs, n);
}

/* Upgrade and complete the Noise handshake from src. */
static bool session_open(struct conn *c, uint32_t src)
{
	char req[512], buf[4096];
	uint8_t mpriv[32];
	int n;

	if (!conn_open(c, src))
		return false;
	n = http_control_request_build(req, sizeof(req), host);
	if (n < 0 || http_exchange(c, req, buf, sizeof(buf)) != 101)
		return false;
	x25519_private_generate(mpriv);
	x25519_private_generate(c->node_priv);
	x25519_public_from_private(c->node_pub, c->node_priv);
	c->cs = ctrlstream_client_new(mpriv, server_pub);
	crypto_wipe(mpriv, sizeof(mpriv));
	out_pump(c);
	while (!ctrlstream_established(c->cs)) {
		ssize_t r = conn_read(c, buf, sizeof(buf), 3000);

		if (r <= 0 || ctrlstream_feed(c->cs, buf, (size_t)r) < 0)
			return false;
	}
	return true;
}

static bool msg_send(struct conn *c, const struct ctrl_msg *m)
{
	char *json;
	size_t len;

	if (ctrl_msg_encode(m, &json, &len) < 0)
		return false;
	ctrlstream_send(c->cs, json, len);
	free(json);
	out_pump(c);
	return true;
}

/* The next message but keepalives: 0, or -1 (closed or timed out). */
static int msg_recv(struct conn *c, struct ctrl_msg *ret)
{
	char buf[16384];

	for (;;) {
		const char *json;
		size_t len;
		ssize_t r;

		while (ctrlstream_recv(c->cs, &json, &len) == 1) {
			if (ctrl_msg_decode(json, len, ret) < 0)
				return -1;
			if (ret->type != CTRL_MSG_KEEPALIVE)
				return 0;
		}
		r = conn_read(c, buf, sizeof(buf), 5000);
		if (r <= 0)
			return -1;
		for (size_t off = 0; off < (size_t)r;) {
			ssize_t k = ctrlstream_feed(c->cs, buf + off, (size_t)r - off);

			if (k < 0)
				return -1;
			off += (size_t)k;
			if (!k)
				break;
		}
	}
}

/* register; returns the response status, or -1 for an error message or a close. */
static int do_register(struct conn *c, const uint8_t *node_pub, const uint8_t *proof_priv,
		       const char *authkey, const char *hostname, char *err, size_t errcap)
{
	struct ctrl_msg m = { .type = CTRL_MSG_REGISTER }, r;

	memcpy(m.reg.node_key, node_pub, 32);
	if (ctrlstream_node_key_prove(c->cs, proof_priv, m.reg.node_key_proof) == 0)
		m.reg.has_node_key_proof = true;
	snprintf(m.reg.hostname, sizeof(m.reg.hostname), "%s", hostname);
	snprintf(m.reg.os, sizeof(m.reg.os), "linux");
	if (authkey)
		snprintf(m.reg.auth_key, sizeof(m.reg.auth_key), "%s", authkey);
	if (!msg_send(c, &m) || msg_recv(c, &r) < 0) {
		snprintf(err, errcap, "closed");
		return -1;
	}
	if (r.type == CTRL_MSG_ERROR) {
		snprintf(err, errcap, "%s", r.error);
		return -1;
	}
	if (r.type != CTRL_MSG_REGISTER_RESPONSE)
		return -1;
	snprintf(err, errcap, "%s", r.reg_resp.error);
	ctrl_msg_clear(&r);
	return (int)r.reg_resp.status;
}

#define SRC(n, h) (0x7f000000U | ((uint32_t)(n) << 8) | (h))

static int sc_sigpipe(void)
{
	struct linger rst = { .l_onoff = 1, .l_linger = 0 };

	for (int i = 0; i < 20; i++) {
		struct conn c;
		uint8_t rec[1024], mpriv[32];
		const uint8_t *d;
		size_t len;
		int n;

		if (!conn_open(&c, SRC(11, 1 + i))) {
			printf("sigpipe: connection %d refused: the server is gone\n", i);
			return 1;
		}
		n = http_control_request_build((char *)rec, sizeof(rec), host);
		x25519_private_generate(mpriv);
		c.cs = ctrlstream_client_new(mpriv, server_pub);
		ctrlstream_output(c.cs, &d, &len);
		memcpy(rec + n, d, len);
		conn_write(&c, rec, (size_t)n + len);
		setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
		conn_close(&c);
	}
	printf("sigpipe: 20 resets after POST /control + message 1 sent\n");
	return 0; /* the script checks that the server still runs */
}

static int sc_flood(void)
{
	unsigned waiting = 0, refused = 0;

	for (unsigned i = 0; i < 40; i++) {
		struct conn c;
		char err[256], name[32];
		int st;

		if (!session_open(&c, SRC(12, 1 + i))) {
			refused++;
			conn_close(&c);
			continue;
		}
		snprintf(name, sizeof(name), "flood-%u", i);
		st = do_register(&c, c.node_pub, c.node_priv, NULL, name, err, sizeof(err));
		if (st == CTRL_REGISTER_NEEDS_AUTH)
			waiting++;
		else
			refused++;
		conn_close(&c);
	}
	printf("flood: %u interactive registrations accepted, %u refused (one /24)\n", waiting,
	       refused);
	return refused ? 0 : 1; /* the script counts the rows in the store */
}

static int sc_takeover(void)
{
	const char *key = getenv("AUTHKEY");
	struct conn victim, thief;
	char err[256];
	int st;

	if (!key || !session_open(&victim, SRC(13, 1)))
		return 2;
	st = do_register(&victim, victim.node_pub, victim.node_priv, key, "victim", err,
			 sizeof(err));
	if (st != CTRL_REGISTER_OK) {
		printf("takeover: the victim could not register: %s\n", err);
		return 2;
	}
	if (!session_open(&thief, SRC(13, 2)))
		return 2;
	/* The victim's public node key; the thief cannot prove it. */
	st = do_register(&thief, victim.node_pub, thief.node_priv, key, "thief", err, sizeof(err));
	printf("takeover: a second machine registering the victim's node key: %s%s%s\n",
	       st == CTRL_REGISTER_OK ? "ok" : "refused", err[0] ? ": " : "", err);
	conn_close(&thief);
	conn_close(&victim);
	return st == CTRL_REGISTER_OK ? 1 : 0;
}

static int sc_unregistered(void)
{
	static struct conn c[65];
	int held = 0;

	for (int i = 0; i < 65; i++) {
		if (!session_open(&c[i], SRC(14, 1)))
			break;
		held++;
	}
	printf("unregistered: %d handshaked, never registered connections from one address\n",
	       held);
	for (int i = 0; i < 65; i++)
		conn_close(&c[i]);
	return held > 64 ? 1 : 0;
}

static int sc_idle(void)
{
	struct conn c;
	uint64_t t0;
	bool closed;

	if (!session_open(&c, SRC(15, 1)))
		return 2;
	t0 = now_ms();
	closed = closed_within(&c, 15000);
	printf("idle: handshaked connection that says nothing %s after %.1f s\n",
	       closed ? "closed" : "still open", (double)(now_ms() - t0) / 1000);
	conn_close(&c);
	return closed ? 0 : 1;
}

static int sc_preauth(void)
{
	struct conn c;
	char req[512], buf[4096];
	uint64_t t0;
	bool closed;
	int n;

	if (!conn_open(&c, SRC(16, 1)))
		return 2;
	n = http_control_request_build(req, sizeof(req), host);
	if (n < 0 || http_exchange(&c, req, buf, sizeof(buf)) != 101)
		return 2;
	conn_write(&c, "\x00\x00\xff\xff", 4);
	t0 = now_ms();
	closed = closed_within(&c, 2000);
	printf("preauth: a 65535-byte frame header before the handshake: %s after %.1f s\n",
	       closed ? "closed" : "still open", (double)(now_ms() - t0) / 1000);
	conn_close(&c);
	return closed ? 0 : 1;
}

static int sc_bucket(void)
{
	unsigned up = 0, limited = 0;

	for (int i = 0; i < 128; i++) {
		struct conn c;
		char req[512], buf[4096];
		unsigned st;

		if (!conn_open(&c, SRC(17, 1)))
			continue;
		http_control_request_build(req, sizeof(req), host);
		st = http_exchange(&c, req, buf, sizeof(buf));
		up += st == 101;
		limited += st == 429;
		conn_close(&c);
	}
	printf("bucket: 128 upgrades from one address: %u upgraded, %u refused (429)\n", up,
	       limited);
	return limited ? 0 : 1;
}

static int sc_metrics(void)
{
	struct conn c;
	char buf[4096];
	unsigned st;

	if (!conn_open(&c, SRC(18, 1)))
		return 2;
	st = http_exchange(&c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", buf, sizeof(buf));
	printf("metrics: GET /metrics on the public port: %u\n", st);
	conn_close(&c);
	return st == 200 ? 1 : 0;
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} scenarios[] = {
		{ "sigpipe", sc_sigpipe },   { "flood", sc_flood },
		{ "takeover", sc_takeover }, { "unregistered", sc_unregistered },
		{ "idle", sc_idle },	     { "preauth", sc_preauth },
		{ "bucket", sc_bucket },     { "metrics", sc_metrics },
	};

	if (argc < 4) {
		fprintf(stderr, "usage: control-attack SCENARIO HOST PORT [--tls]\n");
		return 2;
	}
	host = argv[2];
	port = (uint16_t)atoi(argv[3]);
	tls = argc > 4 && strcmp(argv[4], "--tls") == 0;
	if (crypto_init() < 0)
		return 2;
	if (tls) {
		ctx = SSL_CTX_new(TLS_client_method());
		if (!ctx)
			return 2;
	}
	server_key_fetch();
	for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
		if (strcmp(argv[1], scenarios[i].name) == 0)
			return scenarios[i].fn();
	fprintf(stderr, "control-attack: unknown scenario \"%s\"\n", argv[1]);
	return 2;
}
