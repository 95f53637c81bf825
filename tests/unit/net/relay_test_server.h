/* SPDX-License-Identifier: MIT */
/*
 * A minimal relay server for the node-side tests, built from src/proto/relay's server
 * end: TCP on 127.0.0.1 (one or two ports, one client table), the HTTP upgrade, the
 * handshake, and send-packet -> recv-packet between the clients it holds. No limits,
 * no admission, blocking writes: enough to test a client against the real protocol.
 * Header-only, for inclusion by one test file.
 */
#ifndef TRELLIS_TEST_RELAY_SERVER_H
#define TRELLIS_TEST_RELAY_SERVER_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto/crypto.h"
#include "proto/relay.h"

#define TRS_CLIENTS 16
#define TRS_PORTS 2

struct trs_client {
	int fd;
	bool upgraded, proven;
	char head[2048];
	size_t head_len;
	struct relay_conn rc;
	uint8_t key[RELAY_KEY_LEN];
	bool preferred;
	unsigned port_idx;
};

struct trs {
	int lfd[TRS_PORTS];
	uint16_t port[TRS_PORTS];
	int stop_fd;
	pthread_t thread;
	uint8_t priv[RELAY_KEY_LEN], pub[RELAY_KEY_LEN];
	pthread_mutex_t mu; /* what tests read: */
	struct trs_client cl[TRS_CLIENTS];
	unsigned accepted, proven, forwarded, gone;
};

static void trs_write_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t w = send(fd, b, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;
		b += w;
		n -= (size_t)w;
	}
}

static void trs_flush(struct trs_client *c)
{
	const uint8_t *out;
	size_t len;

	relay_conn_output(&c->rc, &out, &len);
	if (len) {
		trs_write_all(c->fd, out, len);
		relay_conn_output_consume(&c->rc, len);
	}
}

static void trs_drop(struct trs *t, struct trs_client *c)
{
	close(c->fd);
	relay_conn_clear(&c->rc);
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	t->gone++;
}

static void trs_forward(struct trs *t, struct trs_client *from, const struct relay_msg *m)
{
	for (unsigned i = 0; i < TRS_CLIENTS; i++) {
		struct trs_client *c = &t->cl[i];
		uint8_t hdr[RELAY_PACKET_HDR_LEN];

		if (c->fd < 0 || !c->proven || memcmp(c->key, m->key, RELAY_KEY_LEN))
			continue;
		relay_packet_header_put(hdr, RELAY_RECV_PACKET, from->key, m->len);
		trs_write_all(c->fd, hdr, sizeof(hdr));
		trs_write_all(c->fd, m->data, m->len);
		t->forwarded++;
		return;
	}
}

/* Returns false when the client must go. */
static bool trs_input(struct trs *t, struct trs_client *c, const uint8_t *in, size_t len)
{
	static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
				   "Upgrade: " RELAY_UPGRADE_TOKEN "\r\n\r\n";
	struct relay_msg m;
	int r;

	if (!c->upgraded) {
		char *end;

		if (c->head_len + len > sizeof(c->head) - 1)
			return false;
		memcpy(c->head + c->head_len, in, len);
		c->head_len += len;
		c->head[c->head_len] = '\0';
		end = strstr(c->head, "\r\n\r\n");
		if (!end)
			return true;
		if (strncmp(c->head, "GET " RELAY_HTTP_PATH " ", 11))
			return false;
		trs_write_all(c->fd, resp, sizeof(resp) - 1);
		c->upgraded = true;
		if (relay_conn_server_init_pair(&c->rc, t->priv, t->pub, NULL) < 0)
			return false;
		trs_flush(c);
		in = (const uint8_t *)end + 4;
		len = c->head_len - (size_t)((const char *)in - c->head);
	}
	while ((r = relay_conn_feed(&c->rc, &in, &len, &m)) == 1) {
		if (m.type == RELAY_CLIENT_INFO) {
			struct relay_limits lim = {0};

			memcpy(c->key, m.key, RELAY_KEY_LEN);
			relay_conn_server_accept(&c->rc, &lim);
			trs_flush(c);
			pthread_mutex_lock(&t->mu);
			c->proven = true;
			t->proven++;
			pthread_mutex_unlock(&t->mu);
		} else if (m.type == RELAY_SEND_PACKET) {
			pthread_mutex_lock(&t->mu);
			trs_forward(t, c, &m);
			pthread_mutex_unlock(&t->mu);
		} else if (m.type == RELAY_NOTE_PREFERRED) {
			pthread_mutex_lock(&t->mu);
			c->preferred = m.preferred;
			pthread_mutex_unlock(&t->mu);
		}
	}
	return r == 0;
}

static void *trs_main(void *arg)
{
	struct trs *t = arg;
	uint8_t buf[16384];

	for (;;) {
		struct pollfd pfd[1 + TRS_PORTS + TRS_CLIENTS];
		unsigned n = 0, i, map[TRS_CLIENTS];

		pfd[n++] = (struct pollfd){.fd = t->stop_fd, .events = POLLIN};
		for (i = 0; i < TRS_PORTS; i++)
			pfd[n++] = (struct pollfd){.fd = t->lfd[i], .events = POLLIN};
		for (i = 0; i < TRS_CLIENTS; i++) {
			if (t->cl[i].fd < 0)
				continue;
			map[n - 1 - TRS_PORTS] = i;
			pfd[n++] = (struct pollfd){.fd = t->cl[i].fd, .events = POLLIN};
		}
		if (poll(pfd, n, -1) < 0)
			continue;
		if (pfd[0].revents)
			break;
		for (i = 0; i < TRS_PORTS; i++) {
			int fd;

			if (!(pfd[1 + i].revents & POLLIN))
				continue;
			fd = accept(t->lfd[i], NULL, NULL);
			for (unsigned k = 0; fd >= 0 && k < TRS_CLIENTS; k++) {
				if (t->cl[k].fd >= 0)
					continue;
				memset(&t->cl[k], 0, sizeof(t->cl[k]));
				t->cl[k].fd = fd;
				t->cl[k].port_idx = i;
				fd = -1;
				pthread_mutex_lock(&t->mu);
				t->accepted++;
				pthread_mutex_unlock(&t->mu);
			}
			if (fd >= 0)
				close(fd);
		}
		for (i = 1 + TRS_PORTS; i < n; i++) {
			struct trs_client *c = &t->cl[map[i - 1 - TRS_PORTS]];
			ssize_t r;

			if (!pfd[i].revents)
				continue;
			r = recv(c->fd, buf, sizeof(buf), 0);
			if (r <= 0 || !trs_input(t, c, buf, (size_t)r)) {
				pthread_mutex_lock(&t->mu);
				trs_drop(t, c);
				pthread_mutex_unlock(&t->mu);
			}
		}
	}
	return NULL;
}

/* On the given ports (0: any), so that a test can bring a relay back where it was. */
static int trs_start_on(struct trs *t, const uint16_t ports[TRS_PORTS])
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_init(&t->mu, NULL);
	for (unsigned i = 0; i < TRS_CLIENTS; i++)
		t->cl[i].fd = -1;
	if (x25519_private_generate(t->priv) < 0 || x25519_public_from_private(t->pub, t->priv) < 0)
		return -1;
	for (unsigned i = 0; i < TRS_PORTS; i++) {
		struct sockaddr_in sa = {.sin_family = AF_INET};
		socklen_t sl = sizeof(sa);
		int one = 1;

		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sa.sin_port = htons(ports ? ports[i] : 0);
		t->lfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (t->lfd[i] < 0 ||
		    setsockopt(t->lfd[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    bind(t->lfd[i], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    listen(t->lfd[i], 16) < 0 ||
		    getsockname(t->lfd[i], (struct sockaddr *)&sa, &sl) < 0)
			return -1;
		t->port[i] = ntohs(sa.sin_port);
	}
	t->stop_fd = eventfd(0, EFD_CLOEXEC);
	return pthread_create(&t->thread, NULL, trs_main, t) ? -1 : 0;
}

static int trs_start(struct trs *t)
{
	return trs_start_on(t, NULL);
}

static void trs_stop(struct trs *t)
{
	uint64_t one = 1;

	if (write(t->stop_fd, &one, sizeof(one)) < 0)
		abort();
	pthread_join(t->thread, NULL);
	for (unsigned i = 0; i < TRS_CLIENTS; i++)
		if (t->cl[i].fd >= 0)
			trs_drop(t, &t->cl[i]);
	for (unsigned i = 0; i < TRS_PORTS; i++)
		close(t->lfd[i]);
	close(t->stop_fd);
	pthread_mutex_destroy(&t->mu);
}

/* Clients proven with key `key` now (holding t->mu). */
static unsigned trs_clients_with_key(struct trs *t, const uint8_t key[RELAY_KEY_LEN],
				     bool *ret_preferred)
{
	unsigned n = 0;

	for (unsigned i = 0; i < TRS_CLIENTS; i++) {
		if (t->cl[i].fd >= 0 && t->cl[i].proven && !memcmp(t->cl[i].key, key, 32)) {
			n++;
			if (ret_preferred)
				*ret_preferred = t->cl[i].preferred;
		}
	}
	return n;
}

#endif
