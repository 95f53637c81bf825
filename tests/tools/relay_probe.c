// SPDX-License-Identifier: MIT
/*
 * relay_probe: test and benchmark clients of a relay, over the real protocol
 * (proto/relay client engine, net/dial). Not installed.
 *
 *   relay_probe echo --url URL [--url URL...] --key FILE
 *       one client; sends every datagram back to its sender. Prints
 *       "connected URL" each time it is established; on a lost connection it
 *       tries the next URL (a client moving to another relay of the region).
 *   relay_probe ping --url URL [--url URL...] --key FILE --peer PUB [--count N]
 *       sends "ping I" to PUB every 100 ms, prints "reply I via URL" for each
 *       echo; exits 0 after N replies (default: never), 1 after --timeout S.
 *   relay_probe hold --url URL --clients N
 *       N clients, each with its own key, established one after another; prints
 *       "held N in S s" and keeps them until stdin closes.
 *   relay_probe pairs --url URL --pairs N [--seconds S] [--size B]
 *       2N clients; client i sends as fast as it can to client N+i. Prints the
 *       datagrams per second received and their total.
 *
 * hold and pairs take --sources N (plain http:// to an IPv4 address only): the clients
 * connect from N loopback addresses 127.0.X.Y in turn, as many hosts would, since the
 * relay's front end limits connections and upgrades per source address.
 *
 * Keys: FILE holds a base64 private key (created if missing); its public key is
 * printed as "key PUB" at start.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/time.h"
#include "crypto/crypto.h"
#include "net/dial.h"
#include "proto/relay.h"
#include "relay/keyfile.h"

#define IO_TIMEOUT_NS (5 * NSEC_PER_SEC)
#define BATCH 32 /* frames per send in pairs mode */

struct client {
	struct dial_conn dc;
	struct relay_conn rc;
	uint8_t priv[RELAY_KEY_LEN], pub[RELAY_KEY_LEN];
	uint8_t *in;
	size_t in_off, in_len, in_cap;
	uint64_t frames;
};

static SSL_CTX *ssl_ctx;
static unsigned n_sources, next_source; /* --sources: 0, the kernel picks */

static void die(const char *what)
{
	fprintf(stderr, "relay_probe: %s\n", what);
	exit(2);
}

static int write_all(struct client *c, const void *p, size_t n)
{
	char err[256];

	return dial_write(&c->dc, p, n, time_now_ns() + IO_TIMEOUT_NS, err, sizeof(err));
}

static int flush_hs(struct client *c)
{
	const uint8_t *d;
	size_t n;
	int r = 0;

	relay_conn_output(&c->rc, &d, &n);
	if (n)
		r = write_all(c, d, n);
	relay_conn_output_consume(&c->rc, n);
	return r;
}

/* Connects, upgrades and completes the handshake. 0 or -errno (err printed). */
/* A plain TCP connection from the next of the n_sources loopback addresses. */
static int source_connect(struct client *c, const struct dial_url *u, char *err, size_t err_len)
{
	unsigned k = next_source++ % n_sources;
	struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET};
	int one = 1, fd;

	if (u->tls || inet_pton(AF_INET, u->host, &dst.sin_addr) != 1)
		die("--sources needs an http:// URL with an IPv4 address");
	dst.sin_port = htons(u->port);
	src.sin_addr.s_addr = htonl(0x7f000000u | (1u + k / 250) << 8 | (1u + k % 250));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
	    connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
		snprintf(err, err_len, "connect from source %u: %s", k, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* Non-blocking, as dial_open leaves it: dial.c waits with poll and its deadlines. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
		snprintf(err, err_len, "fcntl: %s", strerror(errno));
		close(fd);
		return -EIO;
	}
	c->dc.fd = fd;
	c->dc.ssl = NULL;
	c->dc.cancel = (struct dial_cancel){.wake_fd = -1};
	snprintf(c->dc.name, sizeof(c->dc.name), "%s", u->authority);
	return 0;
}

static int client_open(struct client *c, const char *url)
{
	struct dial_url u;
	struct dial_opts o = {.ssl_ctx = ssl_ctx, .cancel = {.wake_fd = -1}};
	struct http_response resp;
	char req[1024], buf[HTTP_HEAD_MAX], err[512];
	struct relay_msg m;
	ssize_t n;
	int len, r;

	if (dial_url_parse(url, &u) < 0)
		die("bad URL");
	o.host = u.host;
	o.port = u.port;
	o.tls = u.tls;
	o.name = url;
	o.deadline_ns = time_now_ns() + IO_TIMEOUT_NS;
	c->dc.fd = -1;
	if (n_sources)
		r = source_connect(c, &u, err, sizeof(err));
	else
		r = dial_open(&c->dc, &o, err, sizeof(err));
	if (r < 0)
		goto fail;
	len = http_request_build(req, sizeof(req), "GET", RELAY_HTTP_PATH, u.authority,
				 "Connection: Upgrade\r\nUpgrade: " RELAY_UPGRADE_TOKEN "\r\n", 0);
	n = dial_http_upgrade(&c->dc, req, (size_t)len, buf, sizeof(buf), &resp, o.deadline_ns, err,
			      sizeof(err));
	if (n < 0) {
		r = (int)n;
		goto fail;
	}
	r = relay_conn_client_init_pair(&c->rc, c->priv, c->pub, NULL, NULL);
	if (r < 0)
		goto fail;
	if (!c->in) {
		c->in_cap = 1 << 20;
		c->in = malloc(c->in_cap);
		if (!c->in)
			die("out of memory");
	}
	c->in_off = 0;
	c->in_len = (size_t)n - resp.head_len;
	memcpy(c->in, buf + resp.head_len, c->in_len);
	for (;;) {
		const uint8_t *p = c->in + c->in_off;
		size_t left = c->in_len - c->in_off;

		r = relay_conn_feed(&c->rc, &p, &left, &m);
		c->in_off = c->in_len - left;
		if (flush_hs(c) < 0)
			r = -EIO;
		if (r < 0) {
			snprintf(err, sizeof(err), "%s: handshake failed: %s", url, strerror(-r));
			goto fail;
		}
		if (r == 1 && m.type == RELAY_SERVER_INFO)
			return 0;
		c->in_off = c->in_len = 0;
		n = dial_read(&c->dc, c->in, c->in_cap, time_now_ns() + IO_TIMEOUT_NS);
		if (n <= 0) {
			snprintf(err, sizeof(err), "%s: closed during the handshake", url);
			r = -ECONNRESET;
			goto fail;
		}
		c->in_len = (size_t)n;
	}
fail:
	fprintf(stderr, "relay_probe: %s\n", err);
	dial_close(&c->dc, 0);
	relay_conn_clear(&c->rc);
	return r < 0 ? r : -EIO;
}

static void client_close(struct client *c)
{
	dial_close(&c->dc, 0);
	relay_conn_clear(&c->rc);
}

/* The next message, waiting up to wait_ns: 1, 0 (nothing yet), -errno (closed). */
static int client_next(struct client *c, struct relay_msg *m, uint64_t wait_ns)
{
	for (;;) {
		const uint8_t *p = c->in + c->in_off;
		size_t left = c->in_len - c->in_off;
		ssize_t n;
		int r = relay_conn_feed(&c->rc, &p, &left, m);

		c->in_off = c->in_len - left;
		if (r != 0)
			return r;
		c->in_off = c->in_len = 0;
		n = dial_read(&c->dc, c->in, c->in_cap, time_now_ns() + wait_ns);
		if (n == -EAGAIN)
			return 0;
		if (n <= 0)
			return -ECONNRESET;
		c->in_len = (size_t)n;
	}
}

static int client_send(struct client *c, const uint8_t *dst, const void *data, size_t len)
{
	static uint8_t frame[RELAY_HDR_LEN + RELAY_FRAME_MAX];
	struct relay_msg m = {.type = RELAY_SEND_PACKET, .data = data, .len = len};
	ssize_t n;

	memcpy(m.key, dst, RELAY_KEY_LEN);
	n = relay_msg_encode(frame, sizeof(frame), &m);
	return n < 0 ? (int)n : write_all(c, frame, (size_t)n);
}

static void key_setup(struct client *c, const char *file)
{
	char b64[KEY_BASE64_LEN + 1];

	if (file) {
		if (relay_keyfile_load(file, c->priv, true) < 0)
			exit(2);
	} else if (x25519_private_generate(c->priv) < 0) {
		die("key generation failed");
	}
	x25519_public_from_private(c->pub, c->priv);
	key_to_base64(b64, c->pub);
	if (file)
		printf("key %s\n", b64);
	fflush(stdout);
}

/* Connects to urls[*i], then the next ones, until one works (200 ms between rounds). */
static void connect_any(struct client *c, const char **urls, size_t n, size_t *i)
{
	for (unsigned tries = 0;; tries++) {
		if (client_open(c, urls[*i]) == 0) {
			printf("connected %s\n", urls[*i]);
			fflush(stdout);
			return;
		}
		*i = (*i + 1) % n;
		if (tries % n == n - 1)
			usleep(200000);
	}
}

static int run_echo(const char **urls, size_t n, const char *keyf)
{
	struct client c = {0};
	size_t i = 0;

	key_setup(&c, keyf);
	for (;;) {
		struct relay_msg m;
		int r;

		connect_any(&c, urls, n, &i);
		while ((r = client_next(&c, &m, 60 * NSEC_PER_SEC)) >= 0) {
			if (r == 1 && m.type == RELAY_RECV_PACKET) {
				uint8_t src[RELAY_KEY_LEN], data[2048];
				size_t len = m.len < sizeof(data) ? m.len : sizeof(data);

				memcpy(src, m.key, RELAY_KEY_LEN);
				memcpy(data, m.data, len);
				if (client_send(&c, src, data, len) < 0)
					break;
			}
		}
		client_close(&c);
		i = (i + 1) % n;
	}
	return 0;
}

static int run_ping(const char **urls, size_t n, const char *keyf, const char *peer_b64,
		    unsigned count, unsigned timeout_s)
{
	struct client c = {0};
	uint8_t peer[RELAY_KEY_LEN];
	uint64_t end = timeout_s ? time_now_ns() + timeout_s * NSEC_PER_SEC : UINT64_MAX;
	unsigned seq = 0, replies = 0;
	size_t i = 0;

	if (key_from_base64(peer, peer_b64) < 0)
		die("--peer: not a base64 key");
	key_setup(&c, keyf);
	for (;;) {
		struct relay_msg m;
		uint64_t next = 0;
		int r = 0;

		connect_any(&c, urls, n, &i);
		while (r >= 0) {
			uint64_t now = time_now_ns();

			if (now >= end) {
				printf("timeout after %u replies\n", replies);
				client_close(&c);
				free(c.in);
				return 1;
			}
			if (now >= next) {
				char msg[32];
				int len = snprintf(msg, sizeof(msg), "ping %u", ++seq);

				if (client_send(&c, peer, msg, (size_t)len) < 0)
					break;
				next = now + 100 * NSEC_PER_MSEC;
			}
			r = client_next(&c, &m, next - now);
			if (r == 1 && m.type == RELAY_RECV_PACKET && m.len > 5 &&
			    memcmp(m.key, peer, RELAY_KEY_LEN) == 0 &&
			    memcmp(m.data, "ping ", 5) == 0) {
				printf("reply %.*s via %s\n", (int)m.len - 5,
				       (const char *)m.data + 5, urls[i]);
				fflush(stdout);
				if (count && ++replies >= count) {
					client_close(&c);
					free(c.in);
					return 0;
				}
			}
		}
		client_close(&c);
		i = (i + 1) % n;
	}
}

static void nofile_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static int run_hold(const char *url, unsigned n)
{
	struct client *cs = calloc(n, sizeof(*cs));
	uint64_t t0 = time_now_ns();
	char line[16];

	if (!cs)
		die("out of memory");
	nofile_raise();
	for (unsigned i = 0; i < n; i++) {
		key_setup(&cs[i], NULL);
		if (client_open(&cs[i], url) < 0) {
			printf("held %u (failed at %u)\n", i, i);
			return 1;
		}
		/* The idle clients keep only the socket. */
		free(cs[i].in);
		cs[i].in = NULL;
	}
	printf("held %u in %.2f s\n", n, (double)(time_now_ns() - t0) / 1e9);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin))
		;
	for (unsigned i = 0; i < n; i++)
		client_close(&cs[i]);
	free(cs);
	return 0;
}

static int run_pairs(const char *url, unsigned pairs, unsigned seconds, unsigned size)
{
	unsigned n = 2 * pairs;
	struct client *cs = calloc(n, sizeof(*cs));
	uint8_t *frames;
	size_t flen = RELAY_HDR_LEN + RELAY_KEY_LEN + size;
	size_t *woff = calloc(n, sizeof(size_t)), *rpart = calloc(n, sizeof(size_t));
	uint64_t received = 0, bytes = 0, t0, t_end;
	static uint8_t buf[1 << 18];
	int ep = epoll_create1(EPOLL_CLOEXEC);

	if (!cs || !woff || !rpart || ep < 0 || size > 65536)
		die("setup failed");
	nofile_raise();
	for (unsigned i = 0; i < n; i++) {
		key_setup(&cs[i], NULL);
		if (client_open(&cs[i], url) < 0)
			return 1;
		free(cs[i].in);
		cs[i].in = NULL;
	}
	/*
	 * Per sender, BATCH copies of its frame, written again and again (the bytes never
	 * change): one send carries many frames, so the probe costs the relay's CPU little.
	 */
	frames = calloc(pairs, flen * BATCH);
	if (!frames)
		die("out of memory");
	for (unsigned i = 0; i < pairs; i++) {
		for (unsigned k = 0; k < BATCH; k++) {
			uint8_t *f = frames + ((size_t)i * BATCH + k) * flen;

			relay_packet_header_put(f, RELAY_SEND_PACKET, cs[pairs + i].pub, size);
			memset(f + RELAY_PACKET_HDR_LEN, 0x5a, size);
		}
	}
	for (unsigned i = 0; i < n; i++) {
		struct epoll_event ev = {.events = i < pairs ? EPOLLOUT : EPOLLIN, .data.u32 = i};

		epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].dc.fd, &ev);
	}
	t0 = time_now_ns();
	t_end = t0 + (uint64_t)seconds * NSEC_PER_SEC;
	while (time_now_ns() < t_end) {
		struct epoll_event evs[256];
		int k = epoll_wait(ep, evs, 256, 100);

		for (int e = 0; e < k; e++) {
			unsigned i = evs[e].data.u32;
			int fd = cs[i].dc.fd;

			if (i < pairs) {
				/* The batch over and over; a partial write resumes where it was. */
				for (int burst = 0; burst < 1; burst++) {
					const uint8_t *f = frames + (size_t)i * BATCH * flen;
					ssize_t w = send(fd, f + woff[i], BATCH * flen - woff[i],
							 MSG_DONTWAIT | MSG_NOSIGNAL);

					if (w <= 0)
						break;
					woff[i] = (woff[i] + (size_t)w) % (BATCH * flen);
				}
			} else {
				ssize_t r;

				/* Drain it: a receiver that lags makes the relay drop for it. */
				while ((r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) {
					/* Frames are all the same length: count whole ones. */
					rpart[i] += (size_t)r;
					received += rpart[i] / flen;
					bytes += (size_t)r;
					rpart[i] %= flen;
				}
			}
		}
	}
	printf("pairs %u size %u seconds %.2f received %llu datagrams/s %.0f MB/s %.1f\n", pairs,
	       size, (double)(time_now_ns() - t0) / 1e9, (unsigned long long)received,
	       (double)received * 1e9 / (double)(time_now_ns() - t0),
	       (double)bytes / 1e6 / ((double)(time_now_ns() - t0) / 1e9));
	for (unsigned i = 0; i < n; i++)
		client_close(&cs[i]);
	return 0;
}

int main(int argc, char **argv)
{
	const char *urls[16], *keyf = NULL, *peer = NULL;
	size_t n_urls = 0;
	unsigned count = 0, timeout_s = 0, clients = 1, pairs = 1, seconds = 5, size = 1200;
	const char *mode;

	if (argc < 2)
		die("usage: see the comment at the top of tests/tools/relay_probe.c");
	signal(SIGPIPE, SIG_IGN);
	mode = argv[1];
	for (int i = 2; i + 1 < argc; i += 2) {
		const char *a = argv[i], *v = argv[i + 1];

		if (!strcmp(a, "--url") && n_urls < 16)
			urls[n_urls++] = v;
		else if (!strcmp(a, "--key"))
			keyf = v;
		else if (!strcmp(a, "--peer"))
			peer = v;
		else if (!strcmp(a, "--count"))
			count = (unsigned)atoi(v);
		else if (!strcmp(a, "--timeout"))
			timeout_s = (unsigned)atoi(v);
		else if (!strcmp(a, "--clients"))
			clients = (unsigned)atoi(v);
		else if (!strcmp(a, "--pairs"))
			pairs = (unsigned)atoi(v);
		else if (!strcmp(a, "--seconds"))
			seconds = (unsigned)atoi(v);
		else if (!strcmp(a, "--size"))
			size = (unsigned)atoi(v);
		else if (!strcmp(a, "--sources"))
			n_sources = (unsigned)atoi(v);
		else
			die("unknown argument");
	}
	if (!n_urls)
		die("--url is required");
	ssl_ctx = dial_tls_ctx_new();
	if (!ssl_ctx)
		die("TLS setup failed");
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!strcmp(mode, "echo"))
		return run_echo(urls, n_urls, keyf);
	if (!strcmp(mode, "ping") && peer)
		return run_ping(urls, n_urls, keyf, peer, count, timeout_s);
	if (!strcmp(mode, "hold"))
		return run_hold(urls[0], clients);
	if (!strcmp(mode, "pairs"))
		return run_pairs(urls[0], pairs, seconds, size);
	die("unknown mode");
}
