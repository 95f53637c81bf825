// SPDX-License-Identifier: MIT
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/endpoint.h"
#include "base/log.h"
#include "base/loop.h"
#include "base/util.h"
#include "proto/stun.h"
#include "relay/stund.h"

#define BATCH 64 /* datagrams per readiness event: the loop's other work comes next */

struct sock {
	struct loop_fd h;
	struct stund *d;
};

struct stund {
	struct loop *loop;
	struct sock socks[2];
	uint16_t port;
	struct stund_stats st;
};

/* A v4 client seen on a dual-stack socket (::ffff:a.b.c.d) is told its IPv4 address. */
static void mapped_unmap(struct endpoint *ep)
{
	struct sockaddr_in in4 = {.sin_family = AF_INET};

	if (ep->sa.sa_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&ep->in6.sin6_addr))
		return;
	in4.sin_port = ep->in6.sin6_port;
	memcpy(&in4.sin_addr, &ep->in6.sin6_addr.s6_addr[12], 4);
	memset(ep, 0, sizeof(*ep));
	ep->in4 = in4;
}

static void on_readable(struct loop_fd *h, uint32_t events)
{
	struct stund *d = container_of(h, struct sock, h)->d;
	uint8_t in[1500], out[STUN_RESPONSE_MAX];

	(void)events;
	for (int i = 0; i < BATCH; i++) {
		struct endpoint from;
		socklen_t fl = sizeof(from);
		struct stun_request req;
		ssize_t n;
		int len;

		memset(&from, 0, sizeof(from));
		n = recvfrom(h->fd, in, sizeof(in), MSG_DONTWAIT, &from.sa, &fl);
		if (n < 0)
			return;
		if (stun_binding_request_parse(&req, in, (size_t)n) < 0) {
			d->st.malformed++;
			continue;
		}
		d->st.requests++;
		if (req.n_unknown) {
			len = stun_error_response_build(out, sizeof(out), &req, 420, true);
			d->st.errors_sent++;
		} else {
			struct endpoint mapped = from;

			mapped_unmap(&mapped);
			len = stun_binding_response_build(out, sizeof(out), req.txid, &mapped, NULL,
							  true);
			d->st.responses++;
		}
		if (len > 0)
			sendto(h->fd, out, (size_t)len, MSG_DONTWAIT, &from.sa, fl);
	}
}

static int sock_open(struct stund *d, struct sock *k, int family, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, r;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		sl = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		sl = sizeof(*a);
	}
	fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	k->d = d;
	k->h.fd = fd;
	k->h.cb = on_readable;
	r = loop_fd_add(d->loop, &k->h, EPOLLIN);
	if (r < 0) {
		close(fd);
		k->h.fd = -1;
		return r;
	}
	if (!d->port) {
		sl = sizeof(ss);
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
			d->port =
			    ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
						    : ((struct sockaddr_in6 *)&ss)->sin6_port);
	}
	return 0;
}

int stund_new(struct loop *loop, uint16_t port, struct stund **ret)
{
	struct stund *d = calloc(1, sizeof(*d));
	int r4, r6;

	if (!d)
		return -ENOMEM;
	d->loop = loop;
	d->socks[0].h.fd = d->socks[1].h.fd = -1;
	r4 = sock_open(d, &d->socks[0], AF_INET, port);
	/* The same port for IPv6 (a picked one too). */
	r6 = sock_open(d, &d->socks[1], AF_INET6, d->port ? d->port : port);
	if (r4 < 0 && r6 < 0) {
		log_err("stun: cannot bind UDP port %u: %s", port, strerror(-r4));
		stund_free(d);
		return r4;
	}
	if (r4 < 0)
		log_warn("stun: no IPv4 on UDP port %u: %s", port, strerror(-r4));
	else if (r6 < 0)
		log_info("stun: no IPv6 on UDP port %u: %s", d->port, strerror(-r6));
	*ret = d;
	return 0;
}

void stund_free(struct stund *d)
{
	if (!d)
		return;
	for (int i = 0; i < 2; i++) {
		if (d->socks[i].h.fd < 0)
			continue;
		loop_fd_del(d->loop, &d->socks[i].h);
		close(d->socks[i].h.fd);
	}
	free(d);
}

uint16_t stund_port(const struct stund *d)
{
	return d->port;
}

void stund_stats_get(const struct stund *d, struct stund_stats *ret)
{
	*ret = d->st;
}

void stund_metrics_write(const struct stund *d, FILE *f)
{
	if (!d)
		return;
	fprintf(f,
		"# HELP trellis_relay_stun_total STUN Binding requests, answers, and "
		"malformed datagrams (not answered).\n"
		"# TYPE trellis_relay_stun_total counter\n"
		"trellis_relay_stun_total{what=\"request\"} %" PRIu64 "\n"
		"trellis_relay_stun_total{what=\"response\"} %" PRIu64 "\n"
		"trellis_relay_stun_total{what=\"error_response\"} %" PRIu64 "\n"
		"trellis_relay_stun_total{what=\"malformed\"} %" PRIu64 "\n",
		d->st.requests, d->st.responses, d->st.errors_sent, d->st.malformed);
}
