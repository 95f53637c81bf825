/* SPDX-License-Identifier: MIT */
/*
 * The port mapping client (portmap.h): the NAT-PMP and PCP engines on two
 * sockets connected to the gateway's port 5351 (two, since a NAT-PMP gateway
 * answers a PCP request with a NAT-PMP "unsupported version" that looks like
 * its answer to our own NAT-PMP request), UPnP on a worker, and the choice
 * between them (decide()).
 *
 * State of one round: probing (no protocol chosen: the engines ask, UPnP
 * discovers) -> active = one protocol, which holds and renews the mapping.
 * The published endpoint follows the active protocol's mapping.
 *
 * The IPv6 leg beside it (portmap.h): a third PCP engine on its own socket, bound to
 * our global address and connected to the IPv6 default route's gateway, asks for a
 * pinhole; it lives from one gateway check to the next on its own, whatever the IPv4
 * rounds do.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "base/time.h"
#include "base/util.h"
#include "base/workq.h"
#include "os/netlink.h"
#include "portmap/natpmp.h"
#include "portmap/pcp.h"
#include "portmap/portmap.h"
#include "portmap/upnp.h"

#define UPNP_ERR_MAX 160
#define UPNP_PORT_TRIES 4
/* A permanent UPnP lease (a gateway that takes no other) is re-added this often. */
#define UPNP_PERMANENT_RENEW_NS (1800ULL * NSEC_PER_SEC)

enum upnp_op { UPNP_OP_DISCOVER, UPNP_OP_MAP };

struct upnp_job {
	struct workq_job job;
	struct portmap *pm;
	enum upnp_op op;
	/* In: */
	struct upnp_igd *igd; /* the worker's while the job runs; back to pm in done */
	uint16_t port, ext_port;
	uint32_t lease_s;
	uint64_t seed;
	/* Out: */
	int r;
	uint8_t ext_addr[4];
	uint32_t granted_s;
	char err[UPNP_ERR_MAX];
};

struct portmap {
	struct loop *loop;
	struct workq *wq;
	struct portmap_cfg cfg;
	struct loop_timer timer;

	bool have_gw;
	uint8_t gw[4], local[4];
	uint64_t gw_check_ns;
	uint64_t retry_ns; /* nothing found: a new round then */
	uint64_t probe_end_ns;
	unsigned active; /* the protocol holding the mapping, or 0 while probing */

	int pcp_fd, natpmp_fd;
	struct loop_fd pcp_h, natpmp_h;
	struct pcp_client pcp;
	struct natpmp_client natpmp;
	uint64_t rx_errors; /* ICMP errors (nothing listens on 5351) and the like */

	/* UPnP: igd and the job's fields are the worker's while upnp_busy. */
	struct upnp_job uj;
	bool upnp_busy;
	struct upnp_igd *igd;
	enum portmap_state upnp_state;
	uint8_t upnp_addr[4];
	uint16_t upnp_port;
	uint32_t upnp_lease_s;
	uint64_t upnp_expires_ns, upnp_next_ns;
	uint64_t upnp_renewals;
	char upnp_err[UPNP_ERR_MAX];
	uint64_t seed;

	bool pcp_seen, natpmp_seen, upnp_seen;
	bool freeing;

	/* The IPv6 pinhole: PCP at the IPv6 default route's gateway, for local6. */
	bool have_gw6;
	uint8_t gw6[16], local6[16];
	int gw6_ifindex;
	int pcp6_fd;
	struct loop_fd pcp6_h;
	struct pcp_client pcp6;
	bool pcp6_seen;

	/* Published for portmap_endpoints (any thread). */
	pthread_mutex_t lock;
	struct endpoint pub, pub6;
	bool has_pub, has_pub6;
	bool usable; /* the active mapping's address is worth offering (loop thread) */
};

static const struct {
	const char *name;
	unsigned bit;
} protos[] = {{"pcp", PORTMAP_PCP}, {"nat-pmp", PORTMAP_NATPMP}, {"upnp", PORTMAP_UPNP}};

int portmap_protocols_parse(const char *s, unsigned *ret)
{
	unsigned bits = 0, i;
	const char *p = s, *end;
	size_t len;

	if (!s || !*s)
		return -EINVAL;
	if (!strcmp(s, "auto")) {
		*ret = PORTMAP_ALL;
		return 0;
	}
	if (!strcmp(s, "off")) {
		*ret = 0;
		return 0;
	}
	for (;;) {
		end = strchr(p, ',');
		len = end ? (size_t)(end - p) : strlen(p);
		for (i = 0; i < ARRAY_SIZE(protos); i++)
			if (strlen(protos[i].name) == len && !strncmp(p, protos[i].name, len))
				break;
		if (i == ARRAY_SIZE(protos))
			return -EINVAL;
		bits |= protos[i].bit;
		if (!end)
			break;
		p = end + 1;
	}
	*ret = bits;
	return 0;
}

const char *portmap_proto_name(unsigned proto)
{
	for (unsigned i = 0; i < ARRAY_SIZE(protos); i++)
		if (protos[i].bit == proto)
			return protos[i].name;
	return NULL;
}

/*
 * Addresses a peer elsewhere cannot reach: a gateway that is itself behind a
 * NAT (RFC 1918, shared 100.64/10 — also the tailnet's own) hands out mappings
 * on an inside address. The lab's documentation ranges count as public.
 */
static bool addr_usable(const uint8_t a[4])
{
	return !(a[0] == 0 || a[0] == 10 || a[0] == 127 || (a[0] == 169 && a[1] == 254) ||
		 (a[0] == 172 && (a[1] & 0xf0) == 16) || (a[0] == 192 && a[1] == 168) ||
		 (a[0] == 100 && (a[1] & 0xc0) == 64) || a[0] >= 224);
}

/* The active protocol's mapping: address (4 bytes), port, lease, expiry. */
static bool active_mapping(const struct portmap *pm, uint8_t addr[4], uint16_t *port,
			   uint32_t *lease_s, uint64_t *expires_ns)
{
	const struct portmap_mapping *m = NULL;

	if (pm->active == PORTMAP_PCP && pcp_client_mapped(&pm->pcp))
		m = &pm->pcp.map;
	else if (pm->active == PORTMAP_NATPMP && natpmp_client_mapped(&pm->natpmp))
		m = &pm->natpmp.map;
	if (m) {
		if (!portmap_addr_is_v4(m->ext_addr))
			return false;
		memcpy(addr, m->ext_addr + 12, 4);
		*port = m->ext_port;
		*lease_s = m->lifetime_s;
		*expires_ns = m->expires_ns;
		return true;
	}
	if (pm->active == PORTMAP_UPNP && pm->upnp_state == PORTMAP_MAPPED) {
		memcpy(addr, pm->upnp_addr, 4);
		*port = pm->upnp_port;
		*lease_s = pm->upnp_lease_s;
		*expires_ns = pm->upnp_expires_ns;
		return true;
	}
	return false;
}

/*
 * A pinhole is worth offering when it is for a global unicast address (2000::/3): a
 * pinhole for a ULA or link-local address reaches no one beyond the site.
 */
static bool addr6_global(const uint8_t a[16])
{
	return (a[0] & 0xe0) == 0x20;
}

/* The IPv6 pinhole held, as an endpoint: false when none is (or it is of no use). */
static bool pinhole(const struct portmap *pm, struct endpoint *ret)
{
	const struct portmap_mapping *m = &pm->pcp6.map;

	if (pm->pcp6_fd < 0 || !pcp_client_mapped(&pm->pcp6) || portmap_addr_is_v4(m->ext_addr) ||
	    !addr6_global(m->ext_addr))
		return false;
	memset(ret, 0, sizeof(*ret));
	ret->in6.sin6_family = AF_INET6;
	memcpy(&ret->in6.sin6_addr, m->ext_addr, 16);
	ret->in6.sin6_port = htons(m->ext_port);
	return true;
}

/* Publishes the active mapping and the pinhole; tells the owner when either changed. */
static void publish(struct portmap *pm)
{
	struct endpoint ep = {0}, ep6 = {0};
	uint8_t addr[4];
	uint16_t port;
	uint32_t lease = 0;
	uint64_t exp;
	bool has = false, has6, changed, changed6;
	char buf[ENDPOINT_STR_MAX];

	pm->usable = false;
	if (active_mapping(pm, addr, &port, &lease, &exp) && addr_usable(addr)) {
		ep.in4.sin_family = AF_INET;
		memcpy(&ep.in4.sin_addr, addr, 4);
		ep.in4.sin_port = htons(port);
		has = pm->usable = true;
	}
	has6 = pinhole(pm, &ep6);
	pthread_mutex_lock(&pm->lock);
	changed = has != pm->has_pub || (has && !endpoint_equal(&ep, &pm->pub));
	changed6 = has6 != pm->has_pub6 || (has6 && !endpoint_equal(&ep6, &pm->pub6));
	pm->pub = ep;
	pm->has_pub = has;
	pm->pub6 = ep6;
	pm->has_pub6 = has6;
	pthread_mutex_unlock(&pm->lock);
	if (changed && has)
		log_info("portmap: %s mapped %s for %" PRIu32 " s", portmap_proto_name(pm->active),
			 endpoint_format(&ep, buf, sizeof(buf)), lease);
	else if (changed)
		log_info("portmap: no mapping");
	if (changed6 && has6)
		log_info("portmap: PCP opened an IPv6 pinhole for %s for %" PRIu32 " s",
			 endpoint_format(&ep6, buf, sizeof(buf)), pm->pcp6.map.lifetime_s);
	else if (changed6)
		log_info("portmap: no IPv6 pinhole");
	if ((changed || changed6) && pm->cfg.changed && !pm->freeing)
		pm->cfg.changed(pm->cfg.ctx);
}

unsigned portmap_endpoints(struct portmap *pm, struct endpoint *ret, unsigned cap)
{
	unsigned n = 0;

	if (!pm || !cap)
		return 0;
	pthread_mutex_lock(&pm->lock);
	if (pm->has_pub)
		ret[n++] = pm->pub;
	if (pm->has_pub6 && n < cap)
		ret[n++] = pm->pub6;
	pthread_mutex_unlock(&pm->lock);
	return n;
}

/* --- sockets --- */

static void sock_close(struct portmap *pm, int *fd, struct loop_fd *h)
{
	if (*fd < 0)
		return;
	if (!pm->freeing)
		loop_fd_del(pm->loop, h);
	close(*fd);
	*fd = -1;
}

/*
 * A UDP socket connected to gw:5351 (the kernel then drops datagrams from anyone else,
 * RFC 6886 §3.1) and our address towards it. The fd, or -errno.
 */
static int sock_connect(const uint8_t gw[4], uint8_t ret_local[4])
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PORTMAP_SERVER_PORT)};
	socklen_t len = sizeof(sa);
	int fd, r;

	fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memcpy(&sa.sin_addr, gw, 4);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	memcpy(ret_local, &sa.sin_addr, 4);
	return fd;
}

static int sock_open(struct portmap *pm, struct loop_fd *h, uint8_t ret_local[4])
{
	int fd, r;

	fd = sock_connect(pm->gw, ret_local);
	if (fd < 0)
		return fd;
	h->fd = fd;
	r = loop_fd_add(pm->loop, h, EPOLLIN);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/*
 * Where the IPv6 internet is: any address of 2000::/3 takes the default route, so the
 * source the kernel picks towards it is the address our traffic leaves from (RFC 6724).
 * Connecting a UDP socket sends nothing.
 */
static const uint8_t internet6[16] = {0x20, [15] = 1};

/*
 * A UDP socket bound to our global address and connected to gw:5351 (on ifindex when the
 * gateway is link-local, as a router advertisement's is) and that address. Bound, since
 * towards a link-local gateway the kernel would pick our link-local address, and PCP's
 * pinhole is for the request's source (RFC 6887 §8.1: the client address must be it).
 * The fd, or -errno (-EADDRNOTAVAIL: no global address).
 */
static int sock6_connect(const uint8_t gw[16], int ifindex, uint8_t ret_local[16])
{
	struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons(PORTMAP_SERVER_PORT)};
	socklen_t len = sizeof(sa);
	int fd, r;

	fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memcpy(&sa.sin6_addr, internet6, 16);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
		    getsockname(fd, (struct sockaddr *)&sa, &len) < 0
		? -errno
		: 0;
	close(fd);
	if (r < 0)
		return r;
	if (!addr6_global(sa.sin6_addr.s6_addr))
		return -EADDRNOTAVAIL;
	memcpy(ret_local, &sa.sin6_addr, 16);

	fd = socket(AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	sa = (struct sockaddr_in6){.sin6_family = AF_INET6};
	memcpy(&sa.sin6_addr, ret_local, 16);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	sa.sin6_port = htons(PORTMAP_SERVER_PORT);
	memcpy(&sa.sin6_addr, gw, 16);
	if (IN6_IS_ADDR_LINKLOCAL(&sa.sin6_addr))
		sa.sin6_scope_id = (uint32_t)ifindex;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	return fd;
fail:
	r = -errno;
	close(fd);
	return r;
}

static void tx_all(struct portmap *pm, uint64_t now)
{
	uint8_t buf[PCP_MAP_MSG_LEN];
	int n;

	while (pm->pcp_fd >= 0 && (n = pcp_client_tx(&pm->pcp, now, buf, sizeof(buf))) > 0)
		if (send(pm->pcp_fd, buf, (size_t)n, 0) < 0)
			log_debug("portmap: PCP send: %s", strerror(errno));
	while (pm->pcp6_fd >= 0 && (n = pcp_client_tx(&pm->pcp6, now, buf, sizeof(buf))) > 0)
		if (send(pm->pcp6_fd, buf, (size_t)n, 0) < 0)
			log_debug("portmap: PCP (IPv6) send: %s", strerror(errno));
	while (pm->natpmp_fd >= 0 && (n = natpmp_client_tx(&pm->natpmp, now, buf, sizeof(buf))) > 0)
		if (send(pm->natpmp_fd, buf, (size_t)n, 0) < 0)
			log_debug("portmap: NAT-PMP send: %s", strerror(errno));
}

/* Drains one socket into its engine: pcp (ours or the pinhole's), or NAT-PMP when NULL. */
static void rx_all(struct portmap *pm, int fd, struct pcp_client *pcp, uint64_t now)
{
	uint8_t buf[PORTMAP_MSG_MAX + 4];
	ssize_t n;

	for (;;) {
		n = recv(fd, buf, sizeof(buf), MSG_TRUNC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			/* ECONNREFUSED: nothing listens on the gateway's 5351. */
			pm->rx_errors++;
			continue;
		}
		/* MSG_TRUNC gives the real length: an oversized datagram fails the length check. */
		if ((size_t)n > sizeof(buf))
			n = sizeof(buf);
		if (pcp == &pm->pcp6) {
			if (pcp_client_rx(pcp, now, buf, (size_t)n) > 0)
				pm->pcp6_seen = true;
		} else if (pcp) {
			if (pcp_client_rx(pcp, now, buf, (size_t)n) > 0) {
				if (pm->pcp.state == PORTMAP_UNSUPPORTED)
					pm->natpmp_seen = true;
				else
					pm->pcp_seen = true;
			}
		} else if (natpmp_client_rx(&pm->natpmp, now, buf, (size_t)n) > 0) {
			pm->natpmp_seen = true;
		}
	}
}

/* --- UPnP on the worker --- */

static void upnp_work(struct workq_job *j)
{
	struct upnp_job *u = container_of(j, struct upnp_job, job);
	uint32_t lease = 0;
	uint16_t ext = u->ext_port;
	int i;

	u->err[0] = '\0';
	if (u->op == UPNP_OP_DISCOVER) {
		upnp_igd_free(u->igd);
		u->igd = NULL;
		u->r = upnp_igd_discover(UPNP_DISCOVER_MS, &u->igd, u->err, sizeof(u->err));
		if (u->r == 0)
			u->r = upnp_igd_external_ip(u->igd, u->ext_addr, u->err, sizeof(u->err));
		return;
	}
	u->r = upnp_igd_external_ip(u->igd, u->ext_addr, u->err, sizeof(u->err));
	if (u->r < 0)
		return;
	/* Our own port first (port-preserving looks best to peers), then random ones. */
	for (i = 0; i < UPNP_PORT_TRIES; i++) {
		u->r =
		    upnp_igd_map(u->igd, u->port, ext, u->lease_s, &lease, u->err, sizeof(u->err));
		if (u->r != -EADDRINUSE)
			break;
		ext = (uint16_t)(1024 + portmap_rand(&u->seed) % (65536 - 1024));
	}
	if (u->r == 0) {
		u->ext_port = ext;
		u->granted_s = lease;
	}
}

static void service(struct portmap *pm, uint64_t now);

static void upnp_done(struct workq_job *j, int err)
{
	struct upnp_job *u = container_of(j, struct upnp_job, job);
	struct portmap *pm = u->pm;
	uint64_t now = time_now_ns();

	pm->upnp_busy = false;
	pm->igd = u->igd;
	u->igd = NULL;
	if (err < 0)
		return;
	if (u->r < 0) {
		snprintf(pm->upnp_err, sizeof(pm->upnp_err), "%s", u->err);
		log_debug("portmap: UPnP: %s", u->err);
		if (u->op == UPNP_OP_MAP && pm->upnp_state == PORTMAP_MAPPED &&
		    now < pm->upnp_expires_ns) {
			/* A failed renewal: what we hold lasts until it expires. */
			pm->upnp_next_ns = MIN(pm->upnp_expires_ns, now + PORTMAP_RETRY_NS);
		} else {
			pm->upnp_state = PORTMAP_FAILED;
			pm->upnp_next_ns = now + PORTMAP_RETRY_NS;
		}
	} else if (u->op == UPNP_OP_DISCOVER) {
		pm->upnp_err[0] = '\0';
		pm->upnp_seen = true;
		memcpy(pm->upnp_addr, u->ext_addr, 4);
		pm->upnp_state = PORTMAP_READY;
		pm->upnp_next_ns = TIME_NEVER;
	} else {
		pm->upnp_err[0] = '\0';
		if (pm->upnp_state == PORTMAP_MAPPED)
			pm->upnp_renewals++;
		memcpy(pm->upnp_addr, u->ext_addr, 4);
		pm->upnp_port = u->ext_port;
		pm->upnp_lease_s = u->granted_s;
		pm->upnp_state = PORTMAP_MAPPED;
		pm->upnp_expires_ns = u->granted_s ? now + u->granted_s * NSEC_PER_SEC : TIME_NEVER;
		pm->upnp_next_ns = u->granted_s ? now + u->granted_s * NSEC_PER_SEC / 2
						: now + UPNP_PERMANENT_RENEW_NS;
	}
	if (!pm->freeing)
		service(pm, now);
}

static void upnp_submit(struct portmap *pm, enum upnp_op op)
{
	struct upnp_job *u = &pm->uj;
	int r;

	if (pm->upnp_busy)
		return;
	memset(&u->job, 0, sizeof(u->job));
	u->pm = pm;
	u->op = op;
	u->igd = pm->igd;
	pm->igd = NULL;
	u->port = pm->cfg.port;
	u->ext_port = pm->upnp_state == PORTMAP_MAPPED ? pm->upnp_port : pm->cfg.port;
	u->lease_s = pm->cfg.lifetime_s;
	u->seed = pm->seed++;
	r = workq_submit(pm->wq, &u->job, upnp_work, upnp_done);
	if (r < 0) {
		pm->igd = u->igd;
		u->igd = NULL;
		pm->upnp_next_ns = time_now_ns() + PORTMAP_RETRY_NS;
		return;
	}
	pm->upnp_busy = true;
	if (op == UPNP_OP_DISCOVER && pm->upnp_state != PORTMAP_MAPPED)
		pm->upnp_state = PORTMAP_REQUESTING;
	pm->upnp_next_ns = TIME_NEVER;
}

/* --- rounds --- */

static void round_stop(struct portmap *pm)
{
	pcp_client_abandon(&pm->pcp);
	natpmp_client_abandon(&pm->natpmp);
	sock_close(pm, &pm->pcp_fd, &pm->pcp_h);
	sock_close(pm, &pm->natpmp_fd, &pm->natpmp_h);
	pm->active = 0;
	/* A job in flight sets the state when it is done. */
	if (!pm->upnp_busy)
		pm->upnp_state = PORTMAP_IDLE;
	pm->upnp_next_ns = TIME_NEVER;
}

static void round_start(struct portmap *pm, uint64_t now)
{
	unsigned p = pm->cfg.protocols;
	uint8_t nonce[PCP_NONCE_LEN];
	int fd;

	round_stop(pm);
	/* Whatever the protocols: gateway_check compares it. */
	fd = sock_connect(pm->gw, pm->local);
	if (fd >= 0)
		close(fd);
	pm->probe_end_ns = now + PORTMAP_PROBE_WAIT_NS;
	pm->retry_ns = TIME_NEVER;
	if (p & PORTMAP_PCP) {
		fd = sock_open(pm, &pm->pcp_h, pm->local);
		if (fd >= 0) {
			struct pcp_client_cfg c = {.internal_port = pm->cfg.port,
						   .lifetime_s = pm->cfg.lifetime_s,
						   .seed = pm->seed++};

			pm->pcp_fd = fd;
			if (getrandom(nonce, sizeof(nonce), 0) != sizeof(nonce))
				memcpy(nonce, &c.seed, sizeof(c.seed));
			memcpy(c.nonce, nonce, sizeof(nonce));
			portmap_addr_from_v4(c.client_addr, pm->local);
			pcp_client_init(&pm->pcp, &c);
			pcp_client_start(&pm->pcp, now);
		} else {
			log_debug("portmap: PCP socket: %s", strerror(-fd));
		}
	}
	if (p & PORTMAP_NATPMP) {
		fd = sock_open(pm, &pm->natpmp_h, pm->local);
		if (fd >= 0) {
			pm->natpmp_fd = fd;
			natpmp_client_init(&pm->natpmp, &(struct natpmp_client_cfg){
							    .internal_port = pm->cfg.port,
							    .lifetime_s = pm->cfg.lifetime_s});
			/* Alone, it maps at once; beside PCP it first only asks the address. */
			natpmp_client_start(&pm->natpmp, now, p == PORTMAP_NATPMP);
		} else {
			log_debug("portmap: NAT-PMP socket: %s", strerror(-fd));
		}
	}
	if (p & PORTMAP_UPNP)
		upnp_submit(pm, UPNP_OP_DISCOVER);
}

static bool gone(enum portmap_state s)
{
	return s == PORTMAP_IDLE || s == PORTMAP_FAILED || s == PORTMAP_UNSUPPORTED;
}

/* Which protocol maps (see portmap.h). */
static void decide(struct portmap *pm, uint64_t now)
{
	unsigned p = pm->cfg.protocols;
	bool pcp_out, natpmp_out;

	if (pm->active == PORTMAP_PCP && pm->pcp.state == PORTMAP_UNSUPPORTED)
		pm->active = 0;
	if (pm->active) {
		/* A probe that lost need not go on for ever. */
		if (pm->active != PORTMAP_NATPMP && gone(pm->natpmp.state))
			natpmp_client_abandon(&pm->natpmp);
		return;
	}
	if ((p & PORTMAP_PCP) && pcp_client_mapped(&pm->pcp)) {
		pm->active = PORTMAP_PCP;
		/* An address request may finish: it maps nothing, and shows NAT-PMP is there. */
		if (pm->natpmp.want_map)
			natpmp_client_abandon(&pm->natpmp);
		return;
	}
	pcp_out =
	    !(p & PORTMAP_PCP) || pm->pcp_fd < 0 || gone(pm->pcp.state) || now >= pm->probe_end_ns;
	if (pcp_out && (p & PORTMAP_NATPMP) && pm->natpmp_fd >= 0 &&
	    (pm->natpmp.state == PORTMAP_READY || natpmp_client_mapped(&pm->natpmp) ||
	     (pm->natpmp.want_map && !gone(pm->natpmp.state)))) {
		pm->active = PORTMAP_NATPMP;
		pcp_client_abandon(&pm->pcp);
		natpmp_client_map(&pm->natpmp, now);
		return;
	}
	natpmp_out = !(p & PORTMAP_NATPMP) || pm->natpmp_fd < 0 || gone(pm->natpmp.state) ||
		     now >= pm->probe_end_ns;
	if (pcp_out && natpmp_out && (p & PORTMAP_UPNP) && pm->upnp_state == PORTMAP_READY) {
		pm->active = PORTMAP_UPNP;
		pcp_client_abandon(&pm->pcp);
		natpmp_client_abandon(&pm->natpmp);
		upnp_submit(pm, UPNP_OP_MAP);
		return;
	}
	/*
	 * Every protocol refused or gave up: a new round later. (PCP retransmits for ever by
	 * itself, §8.1.1; NAT-PMP and UPnP retry by themselves after they fail.)
	 */
	if ((!(p & PORTMAP_PCP) || pm->pcp_fd < 0 || gone(pm->pcp.state)) &&
	    (!(p & PORTMAP_NATPMP) || pm->natpmp_fd < 0 || gone(pm->natpmp.state)) &&
	    (!(p & PORTMAP_UPNP) || gone(pm->upnp_state)) && pm->retry_ns == TIME_NEVER)
		pm->retry_ns = now + PORTMAP_RETRY_NS;
}

static void gateway_check4(struct portmap *pm, uint64_t now)
{
	uint8_t gw[4];
	int ifindex, r;

	r = nl_route_default_gateway(AF_INET, gw, &ifindex);
	if (r < 0) {
		if (pm->have_gw)
			log_info("portmap: no IPv4 default gateway any more");
		pm->have_gw = false;
		round_stop(pm);
		return;
	}
	if (pm->have_gw && !memcmp(gw, pm->gw, 4)) {
		uint8_t local[4];
		int fd = sock_connect(gw, local);

		/* Same gateway, another address of ours (a new lease): mappings name the old. */
		if (fd >= 0)
			close(fd);
		if (fd < 0 || !memcmp(local, pm->local, 4))
			return;
		log_debug("portmap: our address towards the gateway changed");
		round_start(pm, now);
		return;
	}
	memcpy(pm->gw, gw, 4);
	pm->have_gw = true;
	pm->pcp_seen = pm->natpmp_seen = pm->upnp_seen = false;
	log_debug("portmap: gateway %u.%u.%u.%u", gw[0], gw[1], gw[2], gw[3]);
	round_start(pm, now);
}

/* What the gateway holds for us expires by itself (a new gateway knows nothing of it). */
static void pinhole_stop(struct portmap *pm)
{
	pcp_client_abandon(&pm->pcp6);
	sock_close(pm, &pm->pcp6_fd, &pm->pcp6_h);
}

/*
 * The IPv6 leg: PCP at the IPv6 default route's gateway, for the address we leave from.
 * A new gateway or a new address of ours (a new prefix) asks anew; otherwise the engine
 * goes on by itself (it retransmits for ever, §8.1.1, and retries after an error).
 */
static void gateway_check6(struct portmap *pm, uint64_t now)
{
	char gw_s[INET6_ADDRSTRLEN] = "?", local_s[INET6_ADDRSTRLEN] = "?";
	struct pcp_client_cfg c = {0};
	uint8_t gw[16] = {0}, local[16] = {0};
	int ifindex = 0, fd, r;

	if (!(pm->cfg.protocols & PORTMAP_PCP))
		return;
	r = nl_route_default_gateway(AF_INET6, gw, &ifindex);
	fd = r < 0 ? r : sock6_connect(gw, ifindex, local);
	if (fd < 0) {
		if (pm->have_gw6)
			log_info("portmap: no IPv6 pinhole to ask for (%s)",
				 fd == -EADDRNOTAVAIL ? "no global IPv6 address"
				 : r < 0	      ? "no IPv6 default gateway"
						      : strerror(-fd));
		pm->have_gw6 = false;
		pinhole_stop(pm);
		return;
	}
	if (pm->have_gw6 && pm->pcp6_fd >= 0 && !memcmp(gw, pm->gw6, 16) &&
	    ifindex == pm->gw6_ifindex && !memcmp(local, pm->local6, 16)) {
		close(fd);
		return;
	}
	pinhole_stop(pm);
	pm->have_gw6 = true;
	pm->pcp6_seen = false;
	memcpy(pm->gw6, gw, 16);
	memcpy(pm->local6, local, 16);
	pm->gw6_ifindex = ifindex;
	pm->pcp6_h.fd = fd;
	r = loop_fd_add(pm->loop, &pm->pcp6_h, EPOLLIN);
	if (r < 0) {
		close(fd);
		log_debug("portmap: PCP (IPv6) socket: %s", strerror(-r));
		return;
	}
	pm->pcp6_fd = fd;
	inet_ntop(AF_INET6, gw, gw_s, sizeof(gw_s));
	inet_ntop(AF_INET6, local, local_s, sizeof(local_s));
	log_debug("portmap: IPv6 gateway %s: asking for a pinhole to [%s]:%u", gw_s, local_s,
		  (unsigned)pm->cfg.port);
	c.internal_port = pm->cfg.port;
	c.lifetime_s = pm->cfg.lifetime_s;
	c.seed = pm->seed++;
	memcpy(c.client_addr, local, 16);
	if (getrandom(c.nonce, sizeof(c.nonce), 0) != sizeof(c.nonce))
		memcpy(c.nonce, &c.seed, sizeof(c.seed));
	pcp_client_init(&pm->pcp6, &c);
	pcp_client_start(&pm->pcp6, now);
}

static void gateway_check(struct portmap *pm, uint64_t now)
{
	pm->gw_check_ns = now + PORTMAP_GATEWAY_CHECK_NS;
	gateway_check4(pm, now);
	gateway_check6(pm, now);
}

static void service(struct portmap *pm, uint64_t now)
{
	uint64_t next;

	if (now >= pm->gw_check_ns)
		gateway_check(pm, now);
	if (pm->have_gw && now >= pm->retry_ns)
		round_start(pm, now);
	tx_all(pm, now);
	decide(pm, now);
	tx_all(pm, now);
	if (pm->active == PORTMAP_UPNP && !pm->upnp_busy) {
		if (pm->upnp_state == PORTMAP_READY) {
			upnp_submit(pm, UPNP_OP_MAP);
		} else if (now >= pm->upnp_next_ns) {
			if (pm->upnp_state == PORTMAP_MAPPED && now >= pm->upnp_expires_ns)
				pm->upnp_state = PORTMAP_REQUESTING;
			upnp_submit(pm, pm->igd ? UPNP_OP_MAP : UPNP_OP_DISCOVER);
		}
	} else if (!pm->active && pm->have_gw && (pm->cfg.protocols & PORTMAP_UPNP) &&
		   !pm->upnp_busy && pm->upnp_state == PORTMAP_FAILED && now >= pm->upnp_next_ns) {
		upnp_submit(pm, UPNP_OP_DISCOVER);
	}
	publish(pm);

	next = pm->gw_check_ns;
	if (pm->have_gw) {
		next = MIN(next, pm->retry_ns);
		next = MIN(next, pm->upnp_next_ns);
		if (pm->pcp_fd >= 0)
			next = MIN(next, pcp_client_deadline(&pm->pcp));
		if (pm->natpmp_fd >= 0)
			next = MIN(next, natpmp_client_deadline(&pm->natpmp));
		if (!pm->active && now < pm->probe_end_ns)
			next = MIN(next, pm->probe_end_ns);
	}
	if (pm->pcp6_fd >= 0)
		next = MIN(next, pcp_client_deadline(&pm->pcp6));
	loop_timer_arm(pm->loop, &pm->timer, MAX(next, now));
}

static void timer_fire(struct loop_timer *t)
{
	struct portmap *pm = container_of(t, struct portmap, timer);

	service(pm, loop_now_ns(pm->loop));
}

/* A socket of ours is readable: its datagrams to their engine (NULL: NAT-PMP), then the rest. */
static void readable(struct portmap *pm, int fd, struct pcp_client *pcp)
{
	uint64_t now = loop_now_ns(pm->loop);

	rx_all(pm, fd, pcp, now);
	service(pm, now);
}

static void pcp_readable(struct loop_fd *h, uint32_t events)
{
	struct portmap *pm = container_of(h, struct portmap, pcp_h);

	(void)events;
	readable(pm, h->fd, &pm->pcp);
}

static void pcp6_readable(struct loop_fd *h, uint32_t events)
{
	struct portmap *pm = container_of(h, struct portmap, pcp6_h);

	(void)events;
	readable(pm, h->fd, &pm->pcp6);
}

static void natpmp_readable(struct loop_fd *h, uint32_t events)
{
	(void)events;
	readable(container_of(h, struct portmap, natpmp_h), h->fd, NULL);
}

void portmap_net_changed(struct portmap *pm)
{
	if (!pm || !pm->cfg.protocols)
		return;
	pm->gw_check_ns = 0;
	loop_timer_arm(pm->loop, &pm->timer, 0);
}

int portmap_new(struct loop *loop, const struct portmap_cfg *cfg, struct portmap **ret)
{
	struct portmap *pm;
	int r;

	if (!cfg->port)
		return -EINVAL;
	pm = calloc(1, sizeof(*pm));
	if (!pm)
		return -ENOMEM;
	pm->loop = loop;
	pm->cfg = *cfg;
	if (!pm->cfg.lifetime_s)
		pm->cfg.lifetime_s = PORTMAP_LIFETIME_DEFAULT_S;
	pm->cfg.lifetime_s = MAX(pm->cfg.lifetime_s, PORTMAP_LIFETIME_MIN_S);
	pm->pcp_fd = pm->natpmp_fd = pm->pcp6_fd = -1;
	pm->pcp_h.cb = pcp_readable;
	pm->pcp6_h.cb = pcp6_readable;
	pm->natpmp_h.cb = natpmp_readable;
	pm->timer.cb = timer_fire;
	pm->timer.deadline_ns = TIME_NEVER;
	pm->retry_ns = pm->upnp_next_ns = TIME_NEVER;
	pcp_client_init(&pm->pcp, &(struct pcp_client_cfg){0});
	pcp_client_init(&pm->pcp6, &(struct pcp_client_cfg){0});
	natpmp_client_init(&pm->natpmp, &(struct natpmp_client_cfg){0});
	pthread_mutex_init(&pm->lock, NULL);
	if (getrandom(&pm->seed, sizeof(pm->seed), GRND_NONBLOCK) != sizeof(pm->seed))
		pm->seed = time_now_ns();
	if (pm->cfg.protocols & PORTMAP_UPNP) {
		r = workq_new(loop, 1, 1, &pm->wq);
		if (r < 0) {
			pthread_mutex_destroy(&pm->lock);
			free(pm);
			return r;
		}
	}
	/* The first look at the gateway is the timer's first turn. */
	if (pm->cfg.protocols)
		loop_timer_arm(loop, &pm->timer, 0);
	*ret = pm;
	return 0;
}

/* Exit: the deletions go out and their answers are awaited, with the loop stopped. */
static void delete_wait(struct portmap *pm)
{
	uint64_t start = time_now_ns(), now = start;
	bool had6 = pcp_client_mapped(&pm->pcp6);
	struct pollfd fds[3];
	nfds_t n;
	int ms;

	pcp_client_stop(&pm->pcp, now);
	natpmp_client_stop(&pm->natpmp, now);
	pcp_client_stop(&pm->pcp6, now);
	while (now < start + PORTMAP_EXIT_WAIT_NS) {
		tx_all(pm, now);
		n = 0;
		if (pm->pcp_fd >= 0 && pm->pcp.state == PORTMAP_DELETING)
			fds[n++] = (struct pollfd){.fd = pm->pcp_fd, .events = POLLIN};
		if (pm->natpmp_fd >= 0 && pm->natpmp.state == PORTMAP_DELETING)
			fds[n++] = (struct pollfd){.fd = pm->natpmp_fd, .events = POLLIN};
		if (pm->pcp6_fd >= 0 && pm->pcp6.state == PORTMAP_DELETING)
			fds[n++] = (struct pollfd){.fd = pm->pcp6_fd, .events = POLLIN};
		if (!n)
			break;
		ms = (int)((MIN(start + PORTMAP_EXIT_WAIT_NS,
				MIN(MIN(pcp_client_deadline(&pm->pcp),
					natpmp_client_deadline(&pm->natpmp)),
				    pcp_client_deadline(&pm->pcp6))) -
			    now + NSEC_PER_MSEC - 1) /
			   NSEC_PER_MSEC);
		if (poll(fds, n, MAX(ms, 0)) < 0 && errno != EINTR)
			break;
		now = time_now_ns();
		if (pm->pcp_fd >= 0)
			rx_all(pm, pm->pcp_fd, &pm->pcp, now);
		if (pm->natpmp_fd >= 0)
			rx_all(pm, pm->natpmp_fd, NULL, now);
		if (pm->pcp6_fd >= 0)
			rx_all(pm, pm->pcp6_fd, &pm->pcp6, now);
	}
	if (pm->pcp.state == PORTMAP_IDLE && pm->active == PORTMAP_PCP)
		log_info("portmap: PCP mapping deleted");
	if (pm->natpmp.state == PORTMAP_IDLE && pm->active == PORTMAP_NATPMP)
		log_info("portmap: NAT-PMP mapping deleted");
	/*
	 * Debian's miniupnpd 2.3.1 loses a pinhole's nonce when it renews it, and then refuses
	 * to delete it (NOT_AUTHORIZED): it stays until its lifetime ends (docs/architecture.md).
	 */
	if (had6 && pm->pcp6.state == PORTMAP_IDLE && pm->pcp6.last_result == PCP_SUCCESS)
		log_info("portmap: IPv6 pinhole deleted");
	else if (had6 && pm->pcp6.state == PORTMAP_IDLE)
		log_warn("portmap: the gateway did not delete the IPv6 pinhole (PCP result %u): it "
			 "expires by itself",
			 (unsigned)pm->pcp6.last_result);
}

void portmap_free(struct portmap *pm)
{
	char err[UPNP_ERR_MAX];

	if (!pm)
		return;
	pm->freeing = true;
	if (pm->timer.armed)
		loop_timer_disarm(pm->loop, &pm->timer);
	if (pm->pcp_fd >= 0)
		loop_fd_del(pm->loop, &pm->pcp_h);
	if (pm->natpmp_fd >= 0)
		loop_fd_del(pm->loop, &pm->natpmp_h);
	if (pm->pcp6_fd >= 0)
		loop_fd_del(pm->loop, &pm->pcp6_h);
	delete_wait(pm);
	/* A job still running finishes (its done runs here); a queued one is cancelled. */
	workq_free(pm->wq);
	if (pm->igd && pm->upnp_state == PORTMAP_MAPPED) {
		if (upnp_igd_unmap(pm->igd, pm->upnp_port, err, sizeof(err)) < 0)
			log_warn("portmap: UPnP: %s", err);
		else
			log_info("portmap: UPnP mapping deleted");
	}
	upnp_igd_free(pm->igd);
	upnp_igd_free(pm->uj.igd);
	sock_close(pm, &pm->pcp_fd, &pm->pcp_h);
	sock_close(pm, &pm->natpmp_fd, &pm->natpmp_h);
	sock_close(pm, &pm->pcp6_fd, &pm->pcp6_h);
	pthread_mutex_destroy(&pm->lock);
	free(pm);
}

/* --- status --- */

static json_t *drops_json(const struct portmap_drops *d)
{
	return json_integer((json_int_t)(d->short_msg + d->version + d->opcode + d->mismatch +
					 d->bad_field + d->unexpected));
}

/* Seconds until expires_ns (0 when past; null for TIME_NEVER). */
static json_t *expires_json(uint64_t expires_ns)
{
	uint64_t now = time_now_ns();

	if (expires_ns == TIME_NEVER)
		return json_null();
	return json_integer(expires_ns > now ? (json_int_t)((expires_ns - now) / NSEC_PER_SEC) : 0);
}

/* The IPv6 leg (docs/localapi.md, "portmap"): null while it has no gateway to ask. */
static json_t *pinhole_json(struct portmap *pm)
{
	char gw[INET6_ADDRSTRLEN], buf[ENDPOINT_STR_MAX];
	struct endpoint ep = {0};
	json_t *o;

	if (!pm->have_gw6 || !inet_ntop(AF_INET6, pm->gw6, gw, sizeof(gw)))
		return json_null();
	ep.in6.sin6_family = AF_INET6;
	memcpy(&ep.in6.sin6_addr, pm->local6, 16);
	ep.in6.sin6_port = htons(pm->cfg.port);
	o = json_pack("{s:s, s:s, s:b, s:s, s:I, s:o}", "gateway", gw, "internal",
		      endpoint_format(&ep, buf, sizeof(buf)), "pcp", pm->pcp6_seen, "state",
		      portmap_state_name(pm->pcp6.state), "renewals", (json_int_t)pm->pcp6.renewals,
		      "drops", drops_json(&pm->pcp6.drops));
	if (!o)
		return json_null();
	if (pinhole(pm, &ep)) {
		json_object_set_new(o, "external",
				    json_string(endpoint_format(&ep, buf, sizeof(buf))));
		json_object_set_new(o, "lease_s", json_integer(pm->pcp6.map.lifetime_s));
		json_object_set_new(o, "expires_in_s", expires_json(pm->pcp6.map.expires_ns));
	} else {
		json_object_set_new(o, "external", json_null());
	}
	return o;
}

json_t *portmap_status_json(struct portmap *pm)
{
	char gw[INET_ADDRSTRLEN], ext[ENDPOINT_STR_MAX];
	uint8_t addr[4];
	uint16_t port;
	uint32_t lease;
	uint64_t exp;
	json_t *o, *protocols = json_array();
	struct endpoint ep = {0};

	for (unsigned i = 0; i < ARRAY_SIZE(protos); i++)
		if (pm->cfg.protocols & protos[i].bit)
			json_array_append_new(protocols, json_string(protos[i].name));
	o = json_pack("{s:o, s:b, s:b, s:b}", "enabled", protocols, "pcp", pm->pcp_seen, "nat_pmp",
		      pm->natpmp_seen, "upnp", pm->upnp_seen);
	if (!o)
		return NULL;
	if (pm->have_gw && inet_ntop(AF_INET, pm->gw, gw, sizeof(gw)))
		json_object_set_new(o, "gateway", json_string(gw));
	else
		json_object_set_new(o, "gateway", json_null());
	json_object_set_new(o, "active",
			    pm->active ? json_string(portmap_proto_name(pm->active)) : json_null());
	if (active_mapping(pm, addr, &port, &lease, &exp)) {
		ep.in4.sin_family = AF_INET;
		memcpy(&ep.in4.sin_addr, addr, 4);
		ep.in4.sin_port = htons(port);
		json_object_set_new(o, "external",
				    json_string(endpoint_format(&ep, ext, sizeof(ext))));
		json_object_set_new(o, "usable", json_boolean(pm->usable));
		json_object_set_new(o, "lease_s", json_integer(lease));
		json_object_set_new(o, "expires_in_s", expires_json(exp));
	} else {
		json_object_set_new(o, "external", json_null());
	}
	json_object_set_new(
	    o, "renewals",
	    json_integer((json_int_t)(pm->pcp.renewals + pm->natpmp.renewals + pm->upnp_renewals)));
	json_object_set_new(o, "states",
			    json_pack("{s:s, s:s, s:s}", "pcp", portmap_state_name(pm->pcp.state),
				      "nat_pmp", portmap_state_name(pm->natpmp.state), "upnp",
				      portmap_state_name(pm->upnp_state)));
	json_object_set_new(o, "drops",
			    json_pack("{s:o, s:o, s:I}", "pcp", drops_json(&pm->pcp.drops),
				      "nat_pmp", drops_json(&pm->natpmp.drops), "errors",
				      (json_int_t)pm->rx_errors));
	if (pm->upnp_err[0])
		json_object_set_new(o, "upnp_error", json_string(pm->upnp_err));
	json_object_set_new(o, "ipv6", pinhole_json(pm));
	return o;
}
