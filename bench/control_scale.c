/* SPDX-License-Identifier: MIT */
/*
 * control_scale: one process simulating N nodes against a running trellis-control,
 * over the real protocol (HTTP upgrade, Noise_IK, framed JSON messages).
 *
 *   control_scale --server ADDR:PORT --auth-key KEY -n N [--server-pid PID]
 *                 [--concurrency C] [--map-concurrency M] [--changes K] [--sources S]
 *                 [--policy-cmd CMD] [--policy-changes P] [--joins J] [--join-src PREFIX]
 *                 [--restart-cmd CMD --pid-file FILE] [--reconnect-concurrency R]
 *                 [--no-zstd] [--no-retry] [--procs P] [--hold]
 *
 * Phases, each timed:
 *   1. register: N connections (at most C in flight), each upgrade + handshake +
 *      register with the reusable key. Reported: registrations per second.
 *   2. map: every node sends map_request on its connection (at most M waiting for
 *      their full netmap at once) and keeps the stream open.
 *   3. change: node 0 sends `endpoints` with a new, unique endpoint; the time until
 *      every other stream has received a message carrying it. Repeated K times.
 *   4. policy change (with --policy-cmd): `sh -c "CMD 0"` runs before the map streams open
 *      (the first policy); then `sh -c "CMD I"` for I = 1..P, run in the
 *      background, must put a policy in force whose filter for every node holds the port
 *      61000 + I (bench/control_scale.sh writes such policies). The time from starting the
 *      command until the first and until every stream has received `"ports":[61000+I,...`.
 *   5. join (--joins J): a new node registers and opens its map stream, J times, one
 *      after the other; the time from its connect until every other stream (or, with
 *      --join-src PREFIX, every stream of a node whose IPv4 address is in PREFIX: those the
 *      policy lets see it) has received a message naming it.
 *   6. restart (--restart-cmd CMD): CMD stops the server and starts it again (writing the
 *      new PID to --pid-file), every node reconnects as trellisd does (register without a
 *      key, map_request offering the netmap it holds), and the time until every node holds
 *      the current netmap again: the first netmap, or the delta that resumes its map. Then
 *      one more change must reach every stream. Reported: the time, the server's CPU from
 *      its start, the bytes the nodes received, how many resumed, connections lost.
 *      At most R connections (--reconnect-concurrency, default C) are in flight, over P
 *      processes (--procs, default 1: each reconnects every P-th node in its own loop, the
 *      time runs until the last of them has all its nodes; the change after it is then not
 *      measured).
 * And the server's RSS (VmRSS, VmHWM) and CPU time (utime + stime) from /proc/PID.
 *
 * Every map_request offers compressed full netmaps, as trellisd does (--no-zstd: JSON);
 * of a compressed one the simulator decompresses only the head frame (type, seq, version,
 * self: what it reads), the first one whole as a check. A connection that fails before
 * its map stream is retried after trellisd's backoff (1 s doubling to 30 s, with jitter;
 * --no-retry: counted lost), counted by the state it failed in ("retries_STATE").
 * With --hold (not with --restart-cmd) the nodes then stay connected, sending keepalives,
 * until the process is killed: peers for a real trellisd (bench/idle_wakeups.sh, control
 * mode). "holding" on stdout says they are all streaming.
 *
 * Connections are spread over S source addresses 127.x.y.1, each in its own /24, so the
 * server's limits per source address or network (connections, the upgrade rate and its
 * burst of 64) measure nothing here: bench/control_scale.sh gives one source per 32
 * nodes. Output: one "key value" line per result on stdout (bench/control_scale.sh turns
 * it into a table), progress on stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zstd.h>

#include "base/base64.h"
#include "crypto/crypto.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/http.h"
#include "proto/mapz.h"

enum state {
	ST_IDLE,      /* not started */
	ST_HTTP,      /* upgrade request sent, waiting for 101 */
	ST_HANDSHAKE, /* Noise message 1 sent: register follows message 2 (its proof needs h) */
	ST_REGISTER,  /* register sent, waiting for register_response */
	ST_REGISTERED,
	ST_MAPWAIT, /* map_request sent, waiting for the netmap */
	ST_STREAMING,
	ST_DEAD,
	ST_RETRY, /* failed before its map stream: reconnects at retry_at, as trellisd would */
};
#define GONE(s) ((s)->st >= ST_DEAD) /* no connection now */

struct sim {
	int fd;
	enum state st;
	struct ctrlstream *cs;
	uint8_t machine_priv[32];
	uint8_t node_priv[32]; /* for the register's node-key proof */
	uint8_t node_pub[32];
	bool has_have; /* the netmap held, as the server stamped it */
	struct ctrl_have have;
	char in[HTTP_HEAD_MAX];
	size_t in_len;
	uint64_t msgs, deltas;
	uint32_t v4; /* its tailnet IPv4 address (host order) from its netmap; 0: unknown */
	unsigned seen_change; /* index of the last change this stream saw */
	bool want_out;
	bool want_map;	    /* asks for its map stream once registered (again, on a retry) */
	bool has_key_spent; /* registered once: a retry registers without the key */
	unsigned fails;	    /* retries in a row: the backoff doubles */
	uint64_t retry_at;  /* ST_RETRY: when it reconnects */
};

static struct sim *sims;
static unsigned n_sims;
static int ep_fd;
static uint8_t server_pub[32];
static struct sockaddr_in server_sa;
static unsigned n_sources = 64;
static const char *auth_key;
static char change_marker[64];
static unsigned change_idx;
/* The stream that made the change (not counted; NULL: none), and how many must see it. */
static struct sim *change_from;
static unsigned change_target;
static uint64_t change_t0, change_first_ns; /* when it started; when the first stream had it */
static unsigned cnt_registered, cnt_streaming, cnt_dead, cnt_changed, in_flight;
static unsigned cnt_resumed, cnt_full; /* after the restart: delta or full netmap first */
static uint64_t bytes_in;
/* Retries (--retry): failures before the map stream, by the state they failed in. */
static bool retry_on = true;
static unsigned cnt_retrying, cnt_retries[ST_RETRY], n_retry_logged;
static const char *const state_names[] = {"idle",	"http",	   "handshake", "register",
					  "registered", "mapwait", "streaming", "dead"};
/* Offer compressed full netmaps (--no-zstd: JSON only); the compressed ones seen. */
static bool offer_zstd = true;
static unsigned cnt_zstd_maps;

#define NETMAP_HEAD "{\"type\":\"netmap\""
#define DELTA_HEAD "{\"type\":\"delta\""
static bool head_is(const char *json, size_t len, const char *head)
{
	size_t n = strlen(head);

	return len >= n && !memcmp(json, head, n);
}
static bool reconnecting; /* phase 4: register without the key, offer the held map */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "control_scale: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Server CPU seconds (utime + stime) and memory in KiB from /proc. */
static double proc_cpu(int pid)
{
	char path[64], buf[1024], *p;
	unsigned long ut = 0, st = 0;
	FILE *f;
	size_t n;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')'); /* the command name may hold spaces */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

/* Our own CPU seconds: the simulator shares the machine with the server. */
static double self_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static long proc_kib(int pid, const char *field)
{
	char path[64], line[256];
	size_t len = strlen(field);
	long v = 0;
	FILE *f;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, field, len) && line[len] == ':')
			v = strtol(line + len + 1, NULL, 10);
	fclose(f);
	return v;
}

static void fetch_server_key(void)
{
	char req[512], buf[HTTP_HEAD_MAX + 1024];
	struct http_response resp;
	size_t len = 0;
	json_t *j, *k;
	ssize_t r;
	int fd, n;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&server_sa, sizeof(server_sa)) < 0)
		die("connect for GET /key");
	n = http_key_request_build(req, sizeof(req), "control");
	if (n < 0 || write(fd, req, n) != n)
		die("send GET /key");
	for (;;) {
		r = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (r <= 0)
			break;
		len += r;
		if (http_response_parse(&resp, buf, len) == 0 && resp.has_content_length &&
		    len >= resp.head_len + resp.content_length)
			break;
	}
	close(fd);
	if (http_response_parse(&resp, buf, len) || resp.status != 200) {
		fprintf(stderr, "control_scale: GET /key failed\n");
		exit(1);
	}
	j = json_loadb(buf + resp.head_len, len - resp.head_len, 0, NULL);
	k = json_object_get(j, "key");
	if (!json_is_string(k) || key_from_base64(server_pub, json_string_value(k)) < 0) {
		fprintf(stderr, "control_scale: GET /key: no key in the answer\n");
		exit(1);
	}
	json_decref(j);
}

/*
 * A connection failed. Before its map stream, with --retry (the default), the node
 * reconnects after a backoff as trellisd does (1 s doubling to 30 s, up to 50 % jitter:
 * src/node/control_client.c), counted by the state it failed in; a map stream that fails
 * is a connection lost.
 */
static void sim_kill(struct sim *s, const char *why)
{
	int err = errno;
	bool retry = retry_on && s->st != ST_STREAMING;
	uint64_t backoff;

	if (GONE(s))
		return;
	if (retry ? n_retry_logged++ < 10 : cnt_dead < 10)
		fprintf(stderr,
			"control_scale: node %ld: %s (state %s, errno %s, stream error %d)%s\n",
			(long)(s - sims), why, state_names[s->st], strerror(err),
			s->cs ? ctrlstream_error(s->cs) : 0, retry ? ": retrying" : "");
	if (s->st == ST_HTTP || s->st == ST_HANDSHAKE || s->st == ST_REGISTER ||
	    s->st == ST_MAPWAIT)
		in_flight--;
	if (s->st >= ST_REGISTERED)
		cnt_registered--;
	if (s->st == ST_STREAMING)
		cnt_streaming--;
	epoll_ctl(ep_fd, EPOLL_CTL_DEL, s->fd, NULL);
	close(s->fd);
	ctrlstream_free(s->cs);
	s->cs = NULL;
	s->in_len = 0;
	s->want_out = false;
	if (!retry) {
		s->st = ST_DEAD;
		cnt_dead++;
		return;
	}
	cnt_retries[s->st]++;
	backoff = 1000000000ULL << (s->fails < 5 ? s->fails : 5);
	if (backoff > 30000000000ULL)
		backoff = 30000000000ULL;
	s->fails++;
	s->retry_at = now_ns() + backoff + backoff / 2 * (uint64_t)(rand() % 1000) / 1000;
	s->st = ST_RETRY;
	cnt_retrying++;
}

static void sim_watch(struct sim *s, bool out)
{
	struct epoll_event ev = { .events = EPOLLIN | (out ? EPOLLOUT : 0), .data.ptr = s };

	if (out == s->want_out)
		return;
	s->want_out = out;
	epoll_ctl(ep_fd, EPOLL_CTL_MOD, s->fd, &ev);
}

/* Writes what the stream has for the socket; arms EPOLLOUT when the socket is full. */
static void sim_flush(struct sim *s)
{
	const uint8_t *p;
	size_t len;
	ssize_t w;

	while (!GONE(s)) {
		if (ctrlstream_output(s->cs, &p, &len) < 0) {
			sim_kill(s, "output");
			return;
		}
		if (!len) {
			sim_watch(s, false);
			return;
		}
		w = send(s->fd, p, len, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN) {
				sim_watch(s, true);
				return;
			}
			sim_kill(s, "send");
			return;
		}
		ctrlstream_output_consume(s->cs, w);
	}
}

static int sim_send(struct sim *s, const struct ctrl_msg *m)
{
	char *json;
	size_t len;
	int r;

	r = ctrl_msg_encode(m, &json, &len);
	if (r < 0)
		return r;
	r = ctrlstream_send(s->cs, json, len);
	free(json);
	return r;
}

static void sim_start(struct sim *s)
{
	struct sockaddr_in src = { .sin_family = AF_INET };
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.ptr = s };
	unsigned i = s - sims, k = i % n_sources;
	char req[512];
	int one = 1, n;

	/* Not inherited by the server the restart command starts (it would hold them open). */
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0)
		die("socket (raise the fd limit)");
	setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* 127.(1 + k / 250).(k % 250).1: each source in its own /24, the server's source unit. */
	src.sin_addr.s_addr = htonl(0x7f000001U | ((1 + k / 250) << 16) | ((k % 250) << 8));
	if (bind(s->fd, (struct sockaddr *)&src, sizeof(src)) < 0)
		die("bind source address");
	if (connect(s->fd, (struct sockaddr *)&server_sa, sizeof(server_sa)) < 0 &&
	    errno != EINPROGRESS)
		die("connect");
	s->want_out = true;
	epoll_ctl(ep_fd, EPOLL_CTL_ADD, s->fd, &ev);
	/* The kernel queues the request until the connection completes. */
	n = http_control_request_build(req, sizeof(req), "control");
	s->st = ST_HTTP;
	in_flight++;
	memcpy(s->in, req, n); /* sent on EPOLLOUT */
	s->in_len = n;
}

/* After the 101: Noise message 1; register waits for message 2. */
static void sim_handshake(struct sim *s)
{
	s->cs = ctrlstream_client_new(s->machine_priv, server_pub);
	if (!s->cs) {
		sim_kill(s, "ctrlstream_client_new");
		return;
	}
	s->st = ST_HANDSHAKE;
	sim_flush(s);
}

static void sim_register(struct sim *s)
{
	struct ctrl_msg m = {.type = CTRL_MSG_REGISTER};

	memcpy(m.reg.node_key, s->node_pub, 32);
	/* Proves the node key on this session (docs/control-protocol.md, "register"). */
	if (ctrlstream_node_key_prove(s->cs, s->node_priv, m.reg.node_key_proof) < 0) {
		sim_kill(s, "node key proof");
		return;
	}
	m.reg.has_node_key_proof = true;
	snprintf(m.reg.hostname, sizeof(m.reg.hostname), "sim-%ld", (long)(s - sims));
	snprintf(m.reg.os, sizeof(m.reg.os), "linux");
	/* A node spends its key once; later it registers as the machine it is. */
	if (!reconnecting && !s->has_key_spent)
		snprintf(m.reg.auth_key, sizeof(m.reg.auth_key), "%s", auth_key);
	if (sim_send(s, &m) < 0) {
		sim_kill(s, "encode register");
		return;
	}
	s->st = ST_REGISTER;
	sim_flush(s);
}

/*
 * The version a netmap or delta carries, read from the head of its text ("seq", "version",
 * "digest" come first): a full netmap is too large to parse for it.
 */
static void sim_have_update(struct sim *s, const char *json, size_t len)
{
	char head[256];
	const char *p;
	struct ctrl_have h = {0};

	len = len < sizeof(head) - 1 ? len : sizeof(head) - 1;
	memcpy(head, json, len);
	head[len] = '\0';
	p = strstr(head, "\"seq\":");
	if (!p)
		return;
	h.seq = strtoull(p + 6, NULL, 10);
	p = strstr(head, "\"version\":");
	if (p) {
		char b64[64];

		h.version.feed = strtoull(p + 10, NULL, 10);
		p = strstr(head, "\"digest\":\"");
		if (!p || sscanf(p + 10, "%63[^\"]", b64) != 1 ||
		    key_from_base64(h.version.digest, b64) < 0)
			h.version.feed = 0;
	}
	if (h.version.feed) {
		s->have = h;
		s->has_have = true;
	} else if (s->has_have) {
		s->have.seq = h.seq; /* an unstamped delta: the map still includes that version */
	}
}

static void sim_map(struct sim *s)
{
	struct ctrl_msg m = { .type = CTRL_MSG_MAP_REQUEST };
	char ep[64];
	unsigned i = s - sims;

	memcpy(m.map_req.node_key, s->node_pub, 32);
	m.map_req.stream = true;
	m.map_req.zstd = offer_zstd;
	s->want_map = true;
	m.map_req.has_have = reconnecting && s->has_have;
	m.map_req.have = s->have;
	m.map_req.n_endpoints = 1;
	/* A documentation address per node: unique, and never the change marker below. */
	snprintf(ep, sizeof(ep), "203.0.113.%u:%u", 1 + i % 250, 1024 + i / 250);
	endpoint_parse(&m.map_req.endpoints[0], ep);
	if (sim_send(s, &m) < 0) {
		sim_kill(s, "encode map_request");
		return;
	}
	s->st = ST_MAPWAIT;
	in_flight++;
	sim_flush(s);
}

/*
 * A compressed full netmap (proto/mapz.h): its head frame (type, seq, version, self) is all
 * the simulator reads of it; the first one is decompressed whole once, as a check. False:
 * not a netmap we can read.
 */
static bool zstd_head(const char **json, size_t *len)
{
	static char head[1 << 20];
	static bool checked;
	unsigned long long k;
	size_t fl, n;

	if (!mapz_is_compressed(*json, *len))
		return true;
	if (!checked) {
		char *all;
		size_t all_len;

		if (mapz_decompress(*json, *len, CTRL_MSG_MAX, &all, &all_len) < 0 ||
		    !head_is(all, all_len, NETMAP_HEAD))
			return false;
		free(all);
		checked = true;
	}
	fl = ZSTD_findFrameCompressedSize(*json, *len);
	k = ZSTD_getFrameContentSize(*json, *len);
	if (ZSTD_isError(fl) || k == ZSTD_CONTENTSIZE_ERROR || k == ZSTD_CONTENTSIZE_UNKNOWN ||
	    k >= sizeof(head))
		return false;
	n = ZSTD_decompress(head, sizeof(head), *json, fl);
	if (ZSTD_isError(n))
		return false;
	cnt_zstd_maps++;
	*json = head;
	*len = n;
	return true;
}

static void sim_message(struct sim *s, const char *json, size_t len)
{
	struct ctrl_msg m;

	s->msgs++;
	if (!zstd_head(&json, &len)) {
		sim_kill(s, "bad compressed netmap");
		return;
	}
	switch (s->st) {
	case ST_REGISTER:
		if (ctrl_msg_decode(json, len, &m) < 0 || m.type != CTRL_MSG_REGISTER_RESPONSE) {
			sim_kill(s, "bad answer to register");
			return;
		}
		if (m.reg_resp.status != CTRL_REGISTER_OK) {
			fprintf(stderr, "control_scale: register refused: %s\n", m.reg_resp.error);
			ctrl_msg_clear(&m);
			sim_kill(s, "register refused");
			return;
		}
		ctrl_msg_clear(&m);
		s->st = ST_REGISTERED;
		s->has_key_spent = true;
		in_flight--;
		cnt_registered++;
		/* A reconnecting trellisd asks for its map at once. */
		if (reconnecting || s->want_map)
			sim_map(s);
		return;
	case ST_MAPWAIT:
		/* A full netmap is large: classify it without parsing it. */
		if (head_is(json, len, NETMAP_HEAD) || head_is(json, len, DELTA_HEAD)) {
			bool full = head_is(json, len, NETMAP_HEAD);

			cnt_full += reconnecting && full;
			cnt_resumed += reconnecting && !full;
			sim_have_update(s, json, len);
			if (full) {
				const char *self = memmem(json, len, "\"self\":{", 8), *a = NULL;
				char ip[16] = "";
				struct in_addr in;

				if (self)
					a = memmem(self, len - (size_t)(self - json),
						   "\"addresses\":[\"", 14);
				if (a && sscanf(a + 14, "%15[0-9.]", ip) == 1 &&
				    inet_pton(AF_INET, ip, &in) == 1)
					s->v4 = ntohl(in.s_addr);
			}
			s->st = ST_STREAMING;
			s->fails = 0; /* trellisd's backoff starts again once it has a netmap */
			in_flight--;
			cnt_streaming++;
		}
		return;
	case ST_STREAMING:
		if (head_is(json, len, NETMAP_HEAD) || head_is(json, len, DELTA_HEAD))
			sim_have_update(s, json, len);
		if (memmem(json, len, "\"delta\"", 7))
			s->deltas++;
		/* The node that made the change does not count. */
		if (change_idx && s != change_from && s->seen_change != change_idx &&
		    memmem(json, len, change_marker, strlen(change_marker))) {
			s->seen_change = change_idx;
			if (!cnt_changed++)
				change_first_ns = now_ns() - change_t0;
		}
		return;
	default:
		return;
	}
}

static void sim_readable(struct sim *s)
{
	uint8_t buf[65536];
	struct http_response resp;
	const char *json;
	size_t len, off;
	ssize_t r, c;
	int k;

	for (;;) {
		r = recv(s->fd, buf, sizeof(buf), 0);
		if (r == 0) {
			sim_kill(s, "closed by the server");
			return;
		}
		if (r < 0) {
			if (errno != EAGAIN)
				sim_kill(s, "recv");
			return;
		}
		off = 0;
		if (s->st == ST_HTTP) {
			size_t take = (size_t)r < sizeof(s->in) - s->in_len ? (size_t)r :
									 sizeof(s->in) - s->in_len;

			memcpy(s->in + s->in_len, buf, take);
			s->in_len += take;
			k = http_response_parse(&resp, s->in, s->in_len);
			if (k == -EAGAIN)
				continue;
			if (k < 0 || resp.status != 101) {
				sim_kill(s, "upgrade refused");
				return;
			}
			/* Bytes after the head already belong to the stream. */
			off = take - (s->in_len - resp.head_len);
			sim_handshake(s);
			if (GONE(s))
				return;
		}
		bytes_in += (uint64_t)r;
		while (off < (size_t)r) {
			c = ctrlstream_feed(s->cs, buf + off, r - off);
			if (c < 0) {
				sim_kill(s, "stream error");
				return;
			}
			off += c;
			if (s->st == ST_HANDSHAKE && ctrlstream_established(s->cs)) {
				sim_register(s);
				if (GONE(s))
					return;
			}
			while ((k = ctrlstream_recv(s->cs, &json, &len)) == 1) {
				sim_message(s, json, len);
				if (GONE(s))
					return;
			}
			if (k < 0) {
				sim_kill(s, "message error");
				return;
			}
		}
		sim_flush(s);
	}
}

static void sim_writable(struct sim *s)
{
	ssize_t w;

	if (s->st == ST_HTTP && s->in_len) {
		/* The upgrade request still sits in s->in (connect just completed). */
		w = send(s->fd, s->in, s->in_len, MSG_NOSIGNAL);
		if (w != (ssize_t)s->in_len) {
			sim_kill(s, "send upgrade request");
			return;
		}
		s->in_len = 0;
		sim_watch(s, false);
		return;
	}
	if (s->cs)
		sim_flush(s);
}

static void keepalive_all(void)
{
	struct ctrl_msg m = { .type = CTRL_MSG_KEEPALIVE };
	unsigned i;

	for (i = 0; i < n_sims; i++) {
		if (sims[i].st != ST_REGISTERED && sims[i].st != ST_STREAMING)
			continue;
		if (sim_send(&sims[i], &m) == 0)
			sim_flush(&sims[i]);
	}
}

static unsigned n_total; /* n_sims and the joiners behind them */

/* Nodes whose backoff is over reconnect (sim_kill). */
static void retry_due(void)
{
	static uint64_t next;
	uint64_t now = now_ns();

	if (!cnt_retrying || now < next)
		return;
	next = UINT64_MAX;
	for (unsigned i = 0; i < n_total; i++) {
		struct sim *s = &sims[i];

		if (s->st != ST_RETRY)
			continue;
		if (s->retry_at > now) {
			next = s->retry_at < next ? s->retry_at : next;
			continue;
		}
		cnt_retrying--;
		sim_start(s);
	}
}

/* Runs the event loop until done() or timeout_ns; returns false on timeout. */
static bool loop_until(bool (*done)(void), void (*feed)(void), uint64_t timeout_ns)
{
	static uint64_t last_keepalive;
	struct epoll_event evs[256];
	uint64_t end = now_ns() + timeout_ns;
	int n, i;

	if (!last_keepalive)
		last_keepalive = now_ns();
	while (!done()) {
		if (now_ns() > end)
			return false;
		if (feed)
			feed();
		retry_due();
		if (now_ns() - last_keepalive > 20000000000ULL) {
			keepalive_all();
			last_keepalive = now_ns();
		}
		n = epoll_wait(ep_fd, evs, 256, 50);
		for (i = 0; i < n; i++) {
			struct sim *s = evs[i].data.ptr;

			if (GONE(s))
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				sim_readable(s);
			if (!GONE(s) && (evs[i].events & EPOLLOUT))
				sim_writable(s);
		}
	}
	return true;
}

static bool never(void)
{
	return false;
}

static unsigned concurrency = 256, map_concurrency = 64, next_start, next_map;
static unsigned reconnect_concurrency; /* after the restart; 0: concurrency */

static void feed_register(void)
{
	while (next_start < n_sims && in_flight < concurrency) {
		struct sim *s = &sims[next_start++];

		if (s->st == ST_IDLE)
			sim_start(s);
	}
}

/* The server went away: every connection is gone, the held maps stay. Not counted as lost. */
static void sims_reset(void)
{
	for (unsigned i = 0; i < n_sims; i++) {
		struct sim *s = &sims[i];

		s->fails = 0;
		if (s->st == ST_RETRY)
			s->st = ST_IDLE;
		if (s->st == ST_DEAD || s->st == ST_IDLE)
			continue;
		epoll_ctl(ep_fd, EPOLL_CTL_DEL, s->fd, NULL);
		close(s->fd);
		ctrlstream_free(s->cs);
		s->cs = NULL;
		s->in_len = 0;
		s->want_out = false;
		s->st = ST_IDLE;
	}
	cnt_registered = cnt_streaming = in_flight = cnt_retrying = 0;
	next_start = 0;
}

static bool done_register(void)
{
	return next_start == n_sims && in_flight == 0 && !cnt_retrying;
}

static void feed_map(void)
{
	while (next_map < n_sims && in_flight < map_concurrency) {
		struct sim *s = &sims[next_map++];

		if (s->st == ST_REGISTERED)
			sim_map(s);
		else
			s->want_map = true; /* reconnecting: asks once registered */
	}
}

static bool done_map(void)
{
	return next_map == n_sims && in_flight == 0 && !cnt_retrying;
}

static bool done_change(void)
{
	return cnt_changed >= change_target;
}

/* The joining node: opens its stream once registered. */
static struct sim *joiner;

static void feed_join(void)
{
	if (joiner && joiner->st == ST_REGISTERED)
		sim_map(joiner);
}

static uint64_t quiet_until;
static uint64_t last_msgs;

static uint64_t total_msgs(void)
{
	uint64_t t = 0;
	unsigned i;

	for (i = 0; i < n_sims; i++)
		t += sims[i].msgs;
	return t;
}

/* Quiet: no message arrived on any stream for 2 s (the join storm's deltas are done). */
static bool done_quiet(void)
{
	uint64_t t = total_msgs();

	if (t != last_msgs) {
		last_msgs = t;
		quiet_until = now_ns() + 2000000000ULL;
	}
	return now_ns() >= quiet_until;
}

/* The 1-minute load average: the machine is shared, the wall times depend on it. */
static double load1(void)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double l = -1;

	if (f) {
		if (fscanf(f, "%lf", &l) != 1)
			l = -1;
		fclose(f);
	}
	return l;
}

/*
 * A TcpExt counter of /proc/net/netstat (this network namespace: the server's listener and
 * the simulator are on its loopback): ListenOverflows counts connections the full accept
 * queue turned away (the client's SYN is then retransmitted), ListenDrops those and more.
 */
static unsigned long long tcpext(const char *name)
{
	static char names[8192], values[8192];
	unsigned long long v = 0;
	char *sn, *sv, *n, *x;
	FILE *f = fopen("/proc/net/netstat", "r");

	if (!f)
		return 0;
	while (fgets(names, sizeof(names), f) && fgets(values, sizeof(values), f)) {
		if (strncmp(names, "TcpExt:", 7))
			continue;
		n = strtok_r(names, " \n", &sn);
		x = strtok_r(values, " \n", &sv);
		while ((n = strtok_r(NULL, " \n", &sn)) && (x = strtok_r(NULL, " \n", &sv)))
			if (!strcmp(n, name))
				v = strtoull(x, NULL, 10);
	}
	fclose(f);
	return v;
}

static int pid_read(const char *path)
{
	FILE *f = fopen(path, "r");
	int pid = 0;

	if (f) {
		if (fscanf(f, "%d", &pid) != 1)
			pid = 0;
		fclose(f);
	}
	return pid;
}

/* "PREFIXretries N" and "PREFIXretries_STATE N", by the state they failed in. */
static void print_retries(const char *prefix, const unsigned counts[ST_RETRY])
{
	unsigned total = 0;

	for (int k = 0; k < ST_RETRY; k++) {
		if (!counts[k])
			continue;
		total += counts[k];
		printf("%sretries_%s %u\n", prefix, state_names[k], counts[k]);
	}
	printf("%sretries %u\n", prefix, total);
}

/* What the reconnect after the restart came to, in one process (--procs: each sends one). */
struct reconnect_report {
	unsigned synced, resumed, full, zstd, dead;
	unsigned retries[ST_RETRY];
	uint64_t bytes, t_done_ns; /* t_done_ns: CLOCK_MONOTONIC, the same in every process */
	double cpu;		   /* this process's */
	bool ok;
};

static unsigned n_procs = 1;

/* Every node of this process reconnects as trellisd does, until all hold a current netmap. */
static void reconnect_run(struct reconnect_report *r)
{
	unsigned retries0[ST_RETRY], dead0 = cnt_dead;
	double sim0 = self_cpu();

	memcpy(retries0, cnt_retries, sizeof(retries0));
	reconnecting = true;
	bytes_in = 0;
	cnt_zstd_maps = cnt_resumed = cnt_full = 0;
	memset(r, 0, sizeof(*r));
	r->ok = loop_until(done_register, feed_register, 600ULL * 1000000000);
	r->t_done_ns = now_ns();
	r->synced = cnt_streaming;
	r->resumed = cnt_resumed;
	r->full = cnt_full;
	r->zstd = cnt_zstd_maps;
	r->bytes = bytes_in;
	r->cpu = self_cpu() - sim0;
	r->dead = cnt_dead - dead0;
	for (int k = 0; k < ST_RETRY; k++)
		r->retries[k] = cnt_retries[k] - retries0[k];
}

static void write_all(int fd, const void *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w <= 0)
			_exit(1);
		p = (const char *)p + w;
		n -= (size_t)w;
	}
}

static bool read_all(int fd, void *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);

		if (r <= 0)
			return false;
		p = (char *)p + r;
		n -= (size_t)r;
	}
	return true;
}

/*
 * --procs P: process k reconnects the nodes i with i % P == k, in an event loop of its own,
 * so that the simulator's handshakes use every core the server leaves; it reports when its
 * nodes all hold a netmap, then the connections it lost in the quiet after.
 */
static void reconnect_child(unsigned k, int wfd)
{
	struct reconnect_report r;
	unsigned dead0;

	close(ep_fd);
	ep_fd = epoll_create1(EPOLL_CLOEXEC);
	if (ep_fd < 0)
		_exit(1);
	for (unsigned i = 0; i < n_sims; i++)
		if (i % n_procs != k && sims[i].st == ST_IDLE)
			sims[i].st = ST_DEAD; /* another process's */
	concurrency = concurrency / n_procs ? concurrency / n_procs : 1;
	reconnect_run(&r);
	write_all(wfd, &r, sizeof(r));
	dead0 = cnt_dead;
	quiet_until = now_ns() + 2000000000ULL;
	loop_until(done_quiet, NULL, 300ULL * 1000000000);
	r.dead = cnt_dead - dead0;
	write_all(wfd, &r.dead, sizeof(r.dead));
	_exit(0);
}

/* Phase 4: the server restarts under N connected nodes (see the top of the file). */
static void restart_phase(const char *cmd, const char *pid_file)
{
	struct ctrl_msg m = {.type = CTRL_MSG_ENDPOINTS};
	struct reconnect_report r, sum = {.ok = true};
	unsigned held = 0, dead0 = cnt_dead, i, dead_after = 0;
	uint64_t t0, t_sync;
	double cpu, load0 = load1();
	unsigned long long overflows0 = tcpext("ListenOverflows");
	int pid, fds[64];
	pid_t kids[64];
	bool ok;

	for (i = 0; i < n_sims; i++)
		held += sims[i].st == ST_STREAMING && sims[i].has_have;
	fprintf(stderr,
		"control_scale: restarting the server (%u streams, %u hold a stamped map)\n",
		cnt_streaming, held);
	printf("restart_streams %u\n", cnt_streaming);
	printf("restart_held %u\n", held);
	fflush(stdout);
	if (system(cmd) != 0) {
		fprintf(stderr, "control_scale: the restart command failed\n");
		return;
	}
	pid = pid_read(pid_file);
	sims_reset();
	if (reconnect_concurrency)
		concurrency = reconnect_concurrency;
	fprintf(stderr, "control_scale: reconnecting %u nodes, %u at once, in %u process%s\n",
		n_sims, concurrency, n_procs, n_procs > 1 ? "es" : "");
	t0 = now_ns();
	if (n_procs == 1) {
		reconnect_run(&sum);
	} else {
		for (unsigned k = 0; k < n_procs; k++) {
			int p[2];

			if (pipe(p) < 0)
				die("pipe");
			kids[k] = fork();
			if (kids[k] < 0)
				die("fork");
			if (kids[k] == 0) {
				close(p[0]);
				reconnect_child(k, p[1]);
			}
			close(p[1]);
			fds[k] = p[0];
		}
		for (unsigned k = 0; k < n_procs; k++) {
			if (!read_all(fds[k], &r, sizeof(r))) {
				fprintf(stderr, "control_scale: reconnect process %u failed\n", k);
				r = (struct reconnect_report){0};
			}
			sum.synced += r.synced;
			sum.resumed += r.resumed;
			sum.full += r.full;
			sum.zstd += r.zstd;
			sum.dead += r.dead;
			sum.bytes += r.bytes;
			sum.cpu += r.cpu;
			sum.ok = sum.ok && r.ok;
			sum.t_done_ns = r.t_done_ns > sum.t_done_ns ? r.t_done_ns : sum.t_done_ns;
			for (int s = 0; s < ST_RETRY; s++)
				sum.retries[s] += r.retries[s];
		}
	}
	t_sync = sum.t_done_ns - t0;
	cpu = proc_cpu(pid);
	ok = sum.ok;
	fprintf(stderr,
		"control_scale: %u of %u nodes hold a current netmap %.2f s after the restart "
		"(%u resumed, %u full maps, %.1f MiB received, server CPU %.2f s, simulator CPU "
		"%.2f s)%s\n",
		sum.synced, n_sims, t_sync / 1e9, sum.resumed, sum.full, sum.bytes / 1048576.0, cpu,
		sum.cpu, ok ? "" : " (TIMEOUT)");
	printf("restart_synced %u\n", sum.synced);
	printf("restart_sync_s %.3f\n", t_sync / 1e9);
	printf("restart_resumed %u\n", sum.resumed);
	printf("restart_full %u\n", sum.full);
	printf("restart_mib_received %.1f\n", sum.bytes / 1048576.0);
	printf("restart_server_cpu_s %.2f\n", cpu);
	printf("restart_zstd_maps %u\n", sum.zstd);
	printf("restart_sim_cpu_s %.2f\n", sum.cpu);
	printf("restart_sim_procs %u\n", n_procs);
	printf("restart_listen_overflows %llu\n", tcpext("ListenOverflows") - overflows0);
	printf("restart_load %.2f, %.2f\n", load0, load1());
	printf("restart_reconnect_concurrency %u\n", concurrency);
	print_retries("restart_", sum.retries);
	fflush(stdout);

	if (n_procs > 1) {
		/* Each process waits for quiet, then says what it lost since. */
		for (unsigned k = 0; k < n_procs; k++) {
			unsigned d = 0;

			if (read_all(fds[k], &d, sizeof(d)))
				dead_after += d;
			close(fds[k]);
			waitpid(kids[k], NULL, 0);
		}
		printf("restart_server_cpu_quiet_s %.2f\n", proc_cpu(pid));
		printf("restart_dead_connections %u\n", sum.dead + dead_after);
		fflush(stdout);
		return;
	}
	/* The maps are current: one more change reaches every stream. */
	quiet_until = now_ns() + 2000000000ULL;
	loop_until(done_quiet, NULL, 300ULL * 1000000000);
	printf("restart_server_cpu_quiet_s %.2f\n", proc_cpu(pid));
	if (sims[0].st == ST_STREAMING) {
		uint64_t ts;

		snprintf(change_marker, sizeof(change_marker), "198.51.100.78:%u", 4000);
		m.endpoints.n_endpoints = 1;
		endpoint_parse(&m.endpoints.endpoints[0], change_marker);
		cnt_changed = 0;
		change_idx++;
		change_from = &sims[0];
		change_target = cnt_streaming - 1;
		ts = now_ns();
		if (sim_send(&sims[0], &m) == 0) {
			sim_flush(&sims[0]);
			ok = loop_until(done_change, NULL, 60ULL * 1000000000);
			fprintf(stderr,
				"control_scale: change after the restart reached %u/%u streams "
				"in %.1f ms%s\n",
				cnt_changed, cnt_streaming - 1, (now_ns() - ts) / 1e6,
				ok ? "" : " (TIMEOUT)");
			printf("restart_change_reached %u\n", cnt_changed);
		}
	}
	printf("restart_dead_connections %u\n", cnt_dead - dead0);
	fflush(stdout);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* "NAME_samples", "NAME_median_ms" and "NAME_max_ms" (-1: a sample timed out). */
static void print_samples(const char *name, uint64_t *lat, unsigned n)
{
	if (!n)
		return;
	qsort(lat, n, sizeof(lat[0]), cmp_u64);
	printf("%s_samples %u\n", name, n);
	printf("%s_median_ms %.1f\n", name, lat[n / 2] == UINT64_MAX ? -1 : lat[n / 2] / 1e6);
	printf("%s_max_ms %.1f\n", name, lat[n - 1] == UINT64_MAX ? -1 : lat[n - 1] / 1e6);
}

/* Settles online/keepalive noise between samples. */
static void settle(void)
{
	quiet_until = now_ns() + 1000000000ULL;
	loop_until(done_quiet, NULL, 30ULL * 1000000000);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"server", required_argument, NULL, 's'},
	    {"auth-key", required_argument, NULL, 'k'},
	    {"nodes", required_argument, NULL, 'n'},
	    {"server-pid", required_argument, NULL, 'p'},
	    {"concurrency", required_argument, NULL, 'c'},
	    {"map-concurrency", required_argument, NULL, 'm'},
	    {"changes", required_argument, NULL, 'x'},
	    {"sources", required_argument, NULL, 'S'},
	    {"policy-cmd", required_argument, NULL, 'P'},
	    {"policy-changes", required_argument, NULL, 'Q'},
	    {"joins", required_argument, NULL, 'J'},
	    {"join-src", required_argument, NULL, 'T'},
	    {"restart-cmd", required_argument, NULL, 'R'},
	    {"pid-file", required_argument, NULL, 'F'},
	    {"hold", no_argument, NULL, 'H'},
	    {"reconnect-concurrency", required_argument, NULL, 'C'},
	    {"no-zstd", no_argument, NULL, 'Z'},
	    {"no-retry", no_argument, NULL, 'N'},
	    {"procs", required_argument, NULL, 'O'},
	    {0},
	};
	const char *server = "127.0.0.1:8080", *policy_cmd = NULL, *restart_cmd = NULL;
	const char *pid_file = NULL;
	bool hold = false;
	unsigned changes = 5, policy_changes = 5, joins = 0, join_len = 0, i, c;
	uint32_t join_net = 0, join_mask = 0;
	double cpu_c;
	int pid = 0, opt;
	struct rlimit rl;
	struct endpoint sep;
	uint64_t t0, t_reg, t_map, t, lat[64], first[64], cpus[64];
	double cpu0, cpu_reg, cpu_map, cpu_idle0, cpu_idle1;
	long rss_idle0;

	while ((opt = getopt_long(argc, argv, "n:", longopts, NULL)) != -1) {
		switch (opt) {
		case 's': server = optarg; break;
		case 'k': auth_key = optarg; break;
		case 'n': n_sims = strtoul(optarg, NULL, 10); break;
		case 'p': pid = atoi(optarg); break;
		case 'c': concurrency = strtoul(optarg, NULL, 10); break;
		case 'm': map_concurrency = strtoul(optarg, NULL, 10); break;
		case 'x': changes = strtoul(optarg, NULL, 10); break;
		case 'S': n_sources = strtoul(optarg, NULL, 10); break;
		case 'P':
			policy_cmd = optarg;
			break;
		case 'Q':
			policy_changes = strtoul(optarg, NULL, 10);
			break;
		case 'J':
			joins = strtoul(optarg, NULL, 10);
			break;
		case 'T': {
			char ip[16] = "";
			struct in_addr in;

			if (sscanf(optarg, "%15[0-9.]/%u", ip, &join_len) != 2 || join_len > 32 ||
			    inet_pton(AF_INET, ip, &in) != 1) {
				fprintf(stderr, "control_scale: --join-src wants A.B.C.D/LEN\n");
				return 2;
			}
			join_mask = join_len ? ~0U << (32 - join_len) : 0;
			join_net = ntohl(in.s_addr) & join_mask;
			break;
		}
		case 'R':
			restart_cmd = optarg;
			break;
		case 'F':
			pid_file = optarg;
			break;
		case 'H':
			hold = true;
			break;
		case 'C':
			reconnect_concurrency = strtoul(optarg, NULL, 10);
			break;
		case 'Z':
			offer_zstd = false;
			break;
		case 'N':
			retry_on = false;
			break;
		case 'O':
			n_procs = strtoul(optarg, NULL, 10);
			break;
		default:
			fprintf(stderr,
				"usage: control_scale --server ADDR:PORT --auth-key KEY -n N "
				"[--server-pid PID] [--concurrency C] [--map-concurrency M] "
				"[--changes K] [--sources S] [--policy-cmd CMD] "
				"[--policy-changes P] [--joins J] [--join-src PREFIX] "
				"[--restart-cmd CMD --pid-file F] [--reconnect-concurrency R] "
				"[--no-zstd] [--no-retry] [--procs P] [--hold]\n");
			return 2;
		}
	}
	if (!auth_key || !n_sims || !n_sources || n_sources > 250 * 250 || !concurrency ||
	    !map_concurrency || changes > 64 || policy_changes > 64 || joins > 64 ||
	    !restart_cmd != !pid_file || (hold && restart_cmd) || !n_procs || n_procs > 64) {
		fprintf(stderr, "control_scale: --auth-key and -n N are required\n");
		return 2;
	}
	if (endpoint_parse(&sep, server) < 0 || sep.sa.sa_family != AF_INET) {
		fprintf(stderr, "control_scale: --server must be IPv4 ADDR:PORT\n");
		return 2;
	}
	server_sa = sep.in4;
	/* Not lowering the hard limit: a server the restart command starts inherits it. */
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("getrlimit RLIMIT_NOFILE");
	rl.rlim_cur = n_sims + joins + 256;
	if (rl.rlim_max < rl.rlim_cur)
		rl.rlim_max = rl.rlim_cur;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
		die("setrlimit RLIMIT_NOFILE");
	/* The joining nodes sit behind the first n_sims, outside the first phases' loops. */
	n_total = n_sims + joins;
	sims = calloc(n_total, sizeof(*sims));
	ep_fd = epoll_create1(EPOLL_CLOEXEC);
	if (!sims || ep_fd < 0)
		die("setup");
	fetch_server_key();
	for (i = 0; i < n_sims + joins; i++) {
		if (x25519_private_generate(sims[i].machine_priv) < 0 ||
		    x25519_private_generate(sims[i].node_priv) < 0 ||
		    x25519_public_from_private(sims[i].node_pub, sims[i].node_priv) < 0) {
			fprintf(stderr, "control_scale: key generation failed\n");
			return 1;
		}
	}

	fprintf(stderr, "control_scale: registering %u nodes (%u in flight)\n", n_sims, concurrency);
	cpu0 = proc_cpu(pid);
	t0 = now_ns();
	if (!loop_until(done_register, feed_register, 600ULL * 1000000000)) {
		fprintf(stderr, "control_scale: registration timed out\n");
		return 1;
	}
	t_reg = now_ns() - t0;
	cpu_reg = proc_cpu(pid) - cpu0;
	printf("nodes %u\n", n_sims);
	printf("registered %u\n", cnt_registered);
	printf("register_s %.3f\n", t_reg / 1e9);
	printf("register_per_s %.0f\n", cnt_registered / (t_reg / 1e9));
	printf("server_cpu_register_s %.2f\n", cpu_reg);
	fflush(stdout);

	/*
	 * The first policy goes in before any stream opens: registering under it would
	 * recompile it per node, and the maps are small once it is in force.
	 */
	if (policy_cmd) {
		char cmd[1024];

		snprintf(cmd, sizeof(cmd), "%s 0", policy_cmd);
		if (system(cmd) != 0) {
			fprintf(stderr, "control_scale: %s failed\n", cmd);
			return 1;
		}
	}
	fprintf(stderr, "control_scale: %u registered in %.2f s; opening map streams (%u at once)\n",
		cnt_registered, t_reg / 1e9, map_concurrency);
	cpu0 = proc_cpu(pid);
	t0 = now_ns();
	if (!loop_until(done_map, feed_map, 1200ULL * 1000000000))
		fprintf(stderr, "control_scale: map streams timed out\n");
	t_map = now_ns() - t0;
	cpu_map = proc_cpu(pid) - cpu0;
	printf("streams %u\n", cnt_streaming);
	printf("zstd_maps %u\n", cnt_zstd_maps);
	print_retries("", cnt_retries);
	printf("map_all_s %.3f\n", t_map / 1e9);
	printf("server_cpu_map_s %.2f\n", cpu_map);
	fflush(stdout);
	fprintf(stderr, "control_scale: %u streams in %.2f s; waiting for quiet\n", cnt_streaming,
		t_map / 1e9);
	quiet_until = now_ns() + 2000000000ULL;
	loop_until(done_quiet, NULL, 300ULL * 1000000000);

	/* Idle cost: 5 s with every stream open and nothing changing. */
	rss_idle0 = proc_kib(pid, "VmRSS");
	cpu_idle0 = proc_cpu(pid);
	quiet_until = now_ns() + 5000000000ULL;
	last_msgs = total_msgs();
	{
		uint64_t until = now_ns() + 5000000000ULL;
		struct epoll_event evs[256];

		while (now_ns() < until) {
			int n = epoll_wait(ep_fd, evs, 256, 100), k;

			for (k = 0; k < n; k++) {
				struct sim *s = evs[k].data.ptr;

				if (GONE(s))
					continue;
				if (evs[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					sim_readable(s);
				if (!GONE(s) && (evs[k].events & EPOLLOUT))
					sim_writable(s);
			}
		}
	}
	cpu_idle1 = proc_cpu(pid);
	printf("server_rss_kib %ld\n", rss_idle0);
	printf("server_cpu_idle_pct %.1f\n", (cpu_idle1 - cpu_idle0) / 5.0 * 100);

	if (sims[0].st != ST_STREAMING) {
		fprintf(stderr, "control_scale: node 0 has no stream; no change measured\n");
		changes = 0;
	}
	for (c = 0; c < changes; c++) {
		struct ctrl_msg m = { .type = CTRL_MSG_ENDPOINTS };
		uint64_t ts;
		bool ok;

		/* An address no simulated node uses: its text marks the delta. */
		snprintf(change_marker, sizeof(change_marker), "198.51.100.77:%u", 4000 + c);
		m.endpoints.n_endpoints = 1;
		endpoint_parse(&m.endpoints.endpoints[0], change_marker);
		cnt_changed = 0;
		change_idx = c + 1;
		change_from = &sims[0];
		change_target = cnt_streaming - 1;
		ts = now_ns();
		if (sim_send(&sims[0], &m) < 0)
			break;
		sim_flush(&sims[0]);
		ok = loop_until(done_change, NULL, 60ULL * 1000000000);
		lat[c] = now_ns() - ts;
		fprintf(stderr, "control_scale: change %u reached %u/%u streams in %.1f ms%s\n", c + 1,
			cnt_changed, cnt_streaming - 1, lat[c] / 1e6, ok ? "" : " (TIMEOUT)");
		if (!ok)
			lat[c] = UINT64_MAX;
		settle();
	}
	print_samples("change", lat, changes);
	fflush(stdout);

	/* Policy changes: every stream gets a filter with the new port. */
	for (c = 1; policy_cmd && c <= policy_changes; c++) {
		char cmd[1024];
		uint64_t ts;
		pid_t child;
		bool ok;

		snprintf(change_marker, sizeof(change_marker), "\"ports\":[%u,", 61000 + c);
		snprintf(cmd, sizeof(cmd), "%s %u", policy_cmd, c);
		cnt_changed = 0;
		change_idx = 1000 + c + 1;
		change_from = NULL;
		change_target = cnt_streaming;
		cpu0 = proc_cpu(pid);
		ts = change_t0 = now_ns();
		/* In the background: the streams are read while the command runs. */
		child = fork();
		if (child == 0) {
			execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
			_exit(127);
		}
		if (child < 0)
			die("fork");
		ok = loop_until(done_change, NULL, 300ULL * 1000000000);
		t = now_ns() - ts;
		cpu_c = proc_cpu(pid) - cpu0;
		waitpid(child, NULL, 0);
		fprintf(
		    stderr,
		    "control_scale: policy change %u reached the first stream in %.1f ms, %u/%u in "
		    "%.1f ms%s (server CPU %.2f s)\n",
		    c, change_first_ns / 1e6, cnt_changed, change_target, t / 1e6,
		    ok ? "" : " (TIMEOUT)", cpu_c);
		if (!ok)
			t = UINT64_MAX;
		lat[c - 1] = t;
		first[c - 1] = change_first_ns;
		cpus[c - 1] = (uint64_t)(cpu_c * 1e9);
		settle();
	}
	if (policy_cmd) {
		print_samples("policy_change", lat, policy_changes);
		print_samples("policy_change_first", first, policy_changes);
		print_samples("policy_change_cpu", cpus, policy_changes);
	}
	fflush(stdout);

	/* Joins: a new node, and the time until every stream has it. */
	for (c = 0; c < joins; c++) {
		uint64_t ts;
		bool ok;

		joiner = &sims[n_sims + c];
		snprintf(change_marker, sizeof(change_marker), "\"sim-%u\"", n_sims + c);
		cnt_changed = 0;
		change_idx = 2000 + c + 1;
		change_from = joiner;
		change_target = 0;
		for (i = 0; i < n_sims + c; i++)
			if (sims[i].st == ST_STREAMING &&
			    (!join_len || (sims[i].v4 & join_mask) == join_net))
				change_target++;
		cpu0 = proc_cpu(pid);
		ts = change_t0 = now_ns();
		sim_start(joiner);
		ok = loop_until(done_change, feed_join, 120ULL * 1000000000);
		lat[c] = now_ns() - ts;
		first[c] = change_first_ns;
		cpu_c = proc_cpu(pid) - cpu0;
		cpus[c] = (uint64_t)(cpu_c * 1e9);
		fprintf(stderr,
			"control_scale: join %u reached the first stream in %.1f ms, %u/%u in %.1f "
			"ms%s (server CPU %.2f s)\n",
			c + 1, change_first_ns / 1e6, cnt_changed, change_target, lat[c] / 1e6,
			ok ? "" : " (TIMEOUT)", cpu_c);
		if (!ok)
			lat[c] = UINT64_MAX;
		joiner = NULL;
		settle();
	}
	print_samples("join", lat, joins);
	print_samples("join_first", first, joins);
	print_samples("join_cpu", cpus, joins);
	printf("server_rss_hwm_kib %ld\n", proc_kib(pid, "VmHWM"));
	printf("dead_connections %u\n", cnt_dead);
	fflush(stdout);
	if (restart_cmd)
		restart_phase(restart_cmd, pid_file);
	if (hold) {
		printf("holding\n");
		fflush(stdout);
		loop_until(never, NULL, UINT64_MAX / 2);
	}
	return 0;
}
