/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/util.h"
#include "os/udp.h"

/* Socket buffers deep enough to absorb bursts of a fast peer between two loop iterations. */
#define UDP_SOCK_BUF_SIZE (7 << 20)
/* Port 0: attempts at finding a port free for both families. */
#define UDP_BIND_ATTEMPTS 8
/* recv: extra recvmmsg rounds to refill slots freed by truncated datagrams. */
#define UDP_RECV_ROUNDS 4
/* The payload of one UDP_SEGMENT message: under the IPv4 length field with its headers. */
#define UDP_GSO_BYTES 65000

/* Process-wide: whether sockets opened from now on use UDP GSO (udp_gso_allow). */
static bool gso_allowed = true;

void udp_gso_allow(bool on)
{
	__atomic_store_n(&gso_allowed, on, __ATOMIC_RELAXED);
}

static void set_buffer(int fd, int force_opt, int opt)
{
	int size = UDP_SOCK_BUF_SIZE;

	/* The FORCE variants ignore rmem_max/wmem_max but need CAP_NET_ADMIN. */
	if (setsockopt(fd, SOL_SOCKET, force_opt, &size, sizeof(size)) == 0)
		return;
	(void)setsockopt(fd, SOL_SOCKET, opt, &size, sizeof(size));
}

static int set_mark(int fd, uint32_t fwmark)
{
	if (fd < 0)
		return 0;
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &fwmark, sizeof(fwmark)) < 0)
		return -errno;
	return 0;
}

/* Returns the socket or -errno; *ret_nofamily tells "this family is not available here". */
static int sock_open(int family, uint16_t port, uint32_t fwmark, bool *ret_nofamily,
		     uint8_t *ret_gso, uint8_t *ret_gro)
{
	struct endpoint ep;
	int fd, one = 1, zero = 0, ret;

	*ret_nofamily = false;
	*ret_gso = 0;
	*ret_gro = 0;
	fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		*ret_nofamily = ret == -EAFNOSUPPORT || ret == -EPROTONOSUPPORT;
		return ret;
	}
	memset(&ep, 0, sizeof(ep));
	if (family == AF_INET6) {
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) {
			ret = -errno;
			goto out;
		}
		ep.in6.sin6_family = AF_INET6;
		ep.in6.sin6_port = htons(port);
		ep.in6.sin6_addr = in6addr_any;
	} else {
		ep.in4.sin_family = AF_INET;
		ep.in4.sin_port = htons(port);
		ep.in4.sin_addr.s_addr = htonl(INADDR_ANY);
	}
	/* Each datagram tells the local address it came to: replies leave from it. */
	if (family == AF_INET6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one))
			       : setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one))) {
		ret = -errno;
		goto out;
	}
	set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF);
	set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF);
	if (fwmark) {
		ret = set_mark(fd, fwmark);
		if (ret < 0)
			goto out;
	}
	/* A kernel that knows the option has UDP GSO (Linux 4.18); 0 sets no default size. */
	if (__atomic_load_n(&gso_allowed, __ATOMIC_RELAXED) &&
	    setsockopt(fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof(zero)) == 0)
		*ret_gso = 1;
	/*
	 * GRO (Linux 5.0): a peer's run of equal-size datagrams comes up as one message, the
	 * GSO sends of another trellisd even uncut, so the stack works once per run.
	 */
	if (__atomic_load_n(&gso_allowed, __ATOMIC_RELAXED) &&
	    setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one)) == 0)
		*ret_gro = 1;
	if (bind(fd, &ep.sa, endpoint_len(&ep)) < 0) {
		ret = -errno;
		/* IPv6 disabled (ipv6.disable=1 or no address support) shows up at bind time. */
		*ret_nofamily = family == AF_INET6 && ret == -EADDRNOTAVAIL;
		goto out;
	}
	return fd;
out:
	close(fd);
	return ret;
}

static int sock_port(int fd)
{
	struct endpoint ep;
	socklen_t len = sizeof(ep);

	if (getsockname(fd, &ep.sa, &len) < 0)
		return -errno;
	if (ep.sa.sa_family == AF_INET)
		return ntohs(ep.in4.sin_port);
	if (ep.sa.sa_family == AF_INET6)
		return ntohs(ep.in6.sin6_port);
	return -EAFNOSUPPORT;
}

int udp_socks_open(struct udp_socks *ret, uint16_t port, uint32_t fwmark)
{
	int fd4 = -1, fd6 = -1, p, err = -EADDRINUSE;
	uint8_t gso4, gso6, gro4, gro6;
	unsigned attempt;
	bool nofamily;

	for (attempt = 0; attempt < UDP_BIND_ATTEMPTS; attempt++) {
		fd4 = sock_open(AF_INET, port, fwmark, &nofamily, &gso4, &gro4);
		if (fd4 < 0) {
			err = fd4;
			goto out;
		}
		p = sock_port(fd4);
		if (p < 0) {
			err = p;
			goto out;
		}
		fd6 = sock_open(AF_INET6, (uint16_t)p, fwmark, &nofamily, &gso6, &gro6);
		if (fd6 >= 0 || nofamily) {
			if (fd6 < 0)
				fd6 = -1;
			ret->fd4 = fd4;
			ret->fd6 = fd6;
			ret->port = (uint16_t)p;
			ret->gso4 = gso4;
			ret->gso6 = fd6 >= 0 ? gso6 : 0;
			ret->gro4 = gro4;
			ret->gro6 = fd6 >= 0 ? gro6 : 0;
			return 0;
		}
		err = fd6;
		fd6 = -1;
		/* Only a kernel-chosen port may be retried: a fixed port stays taken. */
		if (err != -EADDRINUSE || port != 0)
			goto out;
		close(fd4);
		fd4 = -1;
	}
out:
	if (fd4 >= 0)
		close(fd4);
	return err;
}

void udp_socks_close(struct udp_socks *s)
{
	if (!s)
		return;
	if (s->fd4 >= 0)
		close(s->fd4);
	if (s->fd6 >= 0)
		close(s->fd6);
	s->fd4 = -1;
	s->fd6 = -1;
}

int udp_socks_set_fwmark(struct udp_socks *s, uint32_t fwmark)
{
	int ret;

	ret = set_mark(s->fd4, fwmark);
	if (ret < 0)
		return ret;
	return set_mark(s->fd6, fwmark);
}

void udp_socks_gro_off(struct udp_socks *s)
{
	int zero = 0;

	if (s->fd4 >= 0 && setsockopt(s->fd4, SOL_UDP, UDP_GRO, &zero, sizeof(zero)) == 0)
		s->gro4 = 0;
	if (s->fd6 >= 0 && setsockopt(s->fd6, SOL_UDP, UDP_GRO, &zero, sizeof(zero)) == 0)
		s->gro6 = 0;
}

size_t udp_src_encode(const struct endpoint *ep, union udp_cmsg *ret)
{
	struct cmsghdr *c = &ret->align;
	struct in6_pktinfo pi6;
	struct in_pktinfo pi;

	if (!endpoint_src_is_set(ep))
		return 0;
	/* Padding included: send_run compares whole control buffers. */
	memset(ret, 0, sizeof(*ret));
	/*
	 * The source address only, no interface: the route to the peer may have moved to
	 * another interface since, and the address is what the peer and its firewall see.
	 */
	if (ep->sa.sa_family == AF_INET) {
		pi = (struct in_pktinfo){.ipi_spec_dst = ep->src.in4};
		c->cmsg_level = IPPROTO_IP;
		c->cmsg_type = IP_PKTINFO;
		c->cmsg_len = CMSG_LEN(sizeof(pi));
		memcpy(CMSG_DATA(c), &pi, sizeof(pi));
		return CMSG_SPACE(sizeof(pi));
	}
	pi6 = (struct in6_pktinfo){.ipi6_addr = ep->src.in6};
	c->cmsg_level = IPPROTO_IPV6;
	c->cmsg_type = IPV6_PKTINFO;
	c->cmsg_len = CMSG_LEN(sizeof(pi6));
	memcpy(CMSG_DATA(c), &pi6, sizeof(pi6));
	return CMSG_SPACE(sizeof(pi6));
}

void udp_src_decode(const struct msghdr *mh, struct endpoint *ep)
{
	struct cmsghdr *c;

	endpoint_src_clear(ep);
	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR((struct msghdr *)mh, c)) {
		if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO &&
		    c->cmsg_len >= CMSG_LEN(sizeof(struct in_pktinfo))) {
			struct in_pktinfo pi;

			memcpy(&pi, CMSG_DATA(c), sizeof(pi));
			/* spec_dst: the address to answer from (unicast: the destination). */
			ep->src.in4 = pi.ipi_spec_dst;
			ep->src.family = AF_INET;
		} else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO &&
			   c->cmsg_len >= CMSG_LEN(sizeof(struct in6_pktinfo))) {
			struct in6_pktinfo pi6;

			memcpy(&pi6, CMSG_DATA(c), sizeof(pi6));
			ep->src.in6 = pi6.ipi6_addr;
			ep->src.family = AF_INET6;
		}
	}
}

static uint32_t recv_capacity(const struct pkt *p)
{
	return p->cap - pkt_headroom(p);
}

/* The size of the datagrams a message coalesces (UDP GRO), 0 if it is one datagram. */
static uint16_t gro_seg(const struct msghdr *mh)
{
	struct cmsghdr *c;
	int seg;

	for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR((struct msghdr *)mh, c)) {
		if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO &&
		    c->cmsg_len >= CMSG_LEN(sizeof(seg))) {
			memcpy(&seg, CMSG_DATA(c), sizeof(seg));
			return seg > 0 && seg <= UINT16_MAX ? (uint16_t)seg : 0;
		}
	}
	return 0;
}

/*
 * How many datagrams of the message to drop: all if it was truncated, or if they do not
 * fit a packet's buffer each (a peer's MTU above ours).
 */
static unsigned recv_bad(const struct mmsghdr *m, uint32_t cap, uint16_t seg)
{
	uint32_t len = m->msg_len;

	if (!seg || seg >= len)
		return (m->msg_hdr.msg_flags & MSG_TRUNC) || len > cap;
	if (seg > cap || (m->msg_hdr.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		return (len + seg - 1) / seg;
	return 0;
}

int udp_recv_batch(int fd, struct pkt **pkts, unsigned n, struct udp_gro_rx *gro,
		   unsigned *ret_dropped)
{
	struct mmsghdr msgs[UDP_BATCH_MAX];
	struct iovec iovs[UDP_BATCH_MAX][2];
	union udp_cmsg ctl[UDP_BATCH_MAX];
	unsigned good = 0, dropped = 0, want, round, i, k, bad;
	uint8_t *spill;
	uint16_t seg;
	struct pkt *p;
	int r;

	n = MIN(n, gro ? (unsigned)UDP_GRO_MSGS : (unsigned)UDP_BATCH_MAX);
	for (round = 0; round < UDP_RECV_ROUNDS && good < n; round++) {
		want = n - good;
		for (i = 0; i < want; i++) {
			p = pkts[good + i];
			iovs[i][0].iov_base = p->data;
			iovs[i][0].iov_len = recv_capacity(p);
			memset(&msgs[i], 0, sizeof(msgs[i]));
			msgs[i].msg_hdr.msg_name = &p->ep;
			msgs[i].msg_hdr.msg_namelen = sizeof(p->ep);
			msgs[i].msg_hdr.msg_iov = iovs[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_control = &ctl[i];
			msgs[i].msg_hdr.msg_controllen = sizeof(ctl[i]);
			if (gro) {
				iovs[i][1].iov_base = gro->spill[good + i];
				iovs[i][1].iov_len = UDP_GRO_SPILL;
				msgs[i].msg_hdr.msg_iovlen = 2;
			}
		}
		/* MSG_TRUNC: a message's length is its real one, so drops count datagrams. */
		r = recvmmsg(fd, msgs, want, MSG_DONTWAIT | MSG_TRUNC, NULL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			if (good == 0 && dropped == 0)
				return -errno;
			break;
		}
		/* Keep the good ones in front by swapping buffers of dropped ones behind them. */
		for (i = 0, k = 0; i < (unsigned)r; i++) {
			p = pkts[good + i];
			seg = gro_seg(&msgs[i].msg_hdr);
			bad = recv_bad(&msgs[i], recv_capacity(p), seg);
			/* Coalesced, but the caller cannot cut it: lost, and counted. */
			if (!gro && !bad && seg && seg < msgs[i].msg_len)
				bad = (msgs[i].msg_len + seg - 1) / seg;
			if (bad) {
				dropped += bad;
				continue;
			}
			p->len = MIN(msgs[i].msg_len, recv_capacity(p));
			udp_src_decode(&msgs[i].msg_hdr, &p->ep);
			pkts[good + i] = pkts[good + k];
			pkts[good + k] = p;
			if (gro) {
				spill = gro->spill[good + i];
				gro->spill[good + i] = gro->spill[good + k];
				gro->spill[good + k] = spill;
				gro->len[good + k] = msgs[i].msg_len;
				gro->seg[good + k] = seg < msgs[i].msg_len ? seg : 0;
			}
			k++;
		}
		good += k;
		/* Fewer than asked, or nothing lost: the queue is drained or the batch is full. */
		if ((unsigned)r < want || k == (unsigned)r)
			break;
	}
	if (ret_dropped)
		*ret_dropped = dropped;
	return (int)good;
}

unsigned udp_gro_split(struct pkt *p, const struct udp_gro_rx *gro, unsigned i, struct pkt **extra,
		       unsigned n_extra, unsigned *ret_lost)
{
	uint32_t len = gro->len[i], seg = gro->seg[i], in_buf = p->len, off, take, at;
	const uint8_t *spill = gro->spill[i];
	unsigned used = 0;
	struct pkt *q;

	*ret_lost = 0;
	if (!seg)
		return 0;
	/* The message runs on from the packet's buffer (in_buf bytes) into the spill. */
	for (off = seg; off < len; off += seg) {
		if (used == n_extra) {
			*ret_lost = (len - off + seg - 1) / seg;
			break;
		}
		q = extra[used];
		if (seg > recv_capacity(q)) {
			*ret_lost = (len - off + seg - 1) / seg;
			break;
		}
		used++;
		q->ep = p->ep;
		q->len = MIN(seg, len - off);
		for (at = 0; at < q->len; at += take) {
			if (off + at < in_buf) {
				take = MIN(q->len - at, in_buf - (off + at));
				memcpy(q->data + at, p->data + off + at, take);
			} else {
				take = q->len - at;
				memcpy(q->data + at, spill + (off + at - in_buf), take);
			}
		}
	}
	p->len = seg;
	return used;
}

static int family_fd(const struct udp_socks *s, int family)
{
	if (family == AF_INET)
		return s->fd4;
	if (family == AF_INET6)
		return s->fd6;
	return -1;
}

/*
 * The errors of a source address that is no longer ours: IPv4 routing says ENETUNREACH
 * (no route from there), IPv6 EINVAL. A route that is really missing fails again without
 * the source, and only costs the retry.
 */
static bool src_stale(int err)
{
	return err == -EINVAL || err == -EADDRNOTAVAIL || err == -ENETUNREACH;
}

/* A run of messages for sendmmsg, with what each carries. */
struct run {
	struct mmsghdr msgs[UDP_BATCH_MAX];
	struct iovec iovs[UDP_BATCH_MAX];
	union udp_cmsg ctl[UDP_BATCH_MAX];
	unsigned first[UDP_BATCH_MAX];	/* index of the message's first packet */
	uint8_t npk[UDP_BATCH_MAX];	/* packets in the message */
	uint8_t src_len[UDP_BATCH_MAX]; /* bytes of its control data that are the source */
	unsigned cnt;
};

/* The segment size of a message of several datagrams, after the source in its control data. */
static size_t seg_encode(uint8_t *at, uint16_t size)
{
	struct cmsghdr c = {
	    .cmsg_level = SOL_UDP, .cmsg_type = UDP_SEGMENT, .cmsg_len = CMSG_LEN(sizeof(size))};

	memset(at, 0, CMSG_SPACE(sizeof(size)));
	memcpy(at, &c, sizeof(c));
	memcpy(at + CMSG_ALIGN(sizeof(c)), &size, sizeof(size));
	return CMSG_SPACE(sizeof(size));
}

/* The message's source goes (the kernel chooses); a segment size stays. */
static void src_strip(struct run *rn, unsigned m)
{
	struct msghdr *mh = &rn->msgs[m].msg_hdr;
	size_t rest = mh->msg_controllen - rn->src_len[m];

	if (rest)
		memmove(rn->ctl[m].buf, rn->ctl[m].buf + rn->src_len[m], rest);
	mh->msg_controllen = rest;
	if (!rest)
		mh->msg_control = NULL;
	rn->src_len[m] = 0;
}

static bool src_same(const struct run *rn, unsigned a, unsigned b)
{
	return rn->src_len[a] == rn->src_len[b] &&
	       !memcmp(rn->ctl[a].buf, rn->ctl[b].buf, rn->src_len[a]);
}

/*
 * Sends the run's messages; returns how many packets the kernel took, or -errno if none.
 * A message refused for its source address goes again without it (the kernel chooses),
 * and so do the others of the run with the same source, without trying it: one
 * failed call per run, however long. *ret_stale counts their packets. A segmented message
 * the kernel cannot send (EIO: no checksum offload where it goes) turns GSO off in *gso.
 */
static int send_run(int fd, struct run *rn, unsigned *ret_stale, uint8_t *gso)
{
	unsigned off = 0, sent = 0, i;
	int r, k, err = 0;

	while (off < rn->cnt) {
		r = sendmmsg(fd, rn->msgs + off, rn->cnt - off, MSG_DONTWAIT);
		if (r > 0) {
			for (k = 0; k < r; k++)
				sent += rn->npk[off + (unsigned)k];
			off += (unsigned)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		err = r < 0 ? -errno : -EIO;
		/* Full buffers: drop the rest of the run rather than block or spin. */
		if (err == -EAGAIN || err == -EWOULDBLOCK || err == -ENOBUFS)
			break;
		if (rn->src_len[off] && src_stale(err)) {
			for (i = rn->cnt - 1; i > off; i--) {
				if (rn->src_len[i] && src_same(rn, i, off)) {
					*ret_stale += rn->npk[i];
					src_strip(rn, i);
				}
			}
			*ret_stale += rn->npk[off];
			src_strip(rn, off);
			continue;
		}
		if (err == -EIO && rn->npk[off] > 1)
			__atomic_store_n(gso, 0, __ATOMIC_RELAXED);
		/* sendmmsg fails only for the first message: skip it, send the others. */
		off++;
	}
	if (sent == 0 && err)
		return err;
	return (int)sent;
}

/* May q go in the same message as p, after `k` packets of `bytes` in all? */
static bool gso_joins(const struct pkt *p, const struct pkt *q, unsigned k, size_t bytes)
{
	return k < UDP_GSO_MAX && q->len <= p->len && q->len && bytes + q->len <= UDP_GSO_BYTES &&
	       endpoint_equal(&q->ep, &p->ep) && endpoint_src_equal(&q->ep.src, &p->ep.src);
}

int udp_send_batch(struct udp_socks *s, struct pkt **pkts, unsigned n, struct udp_stale *ret_stale)
{
	struct run rn;
	struct udp_stale stale = {0};
	unsigned i = 0, sent = 0, used, k, j;
	int family, fd, r, err = 0;
	uint8_t *gso;
	size_t bytes, len;
	struct pkt *p;

	while (i < n) {
		family = pkts[i]->ep.sa.sa_family;
		fd = family_fd(s, family);
		if (fd < 0) {
			if (!err)
				err = family == AF_INET6 ? -ENETUNREACH : -EAFNOSUPPORT;
			i++;
			continue;
		}
		gso = family == AF_INET ? &s->gso4 : &s->gso6;
		/* A run of consecutive packets of one family goes out in one sendmmsg. */
		for (rn.cnt = 0, used = 0; i < n && used < UDP_BATCH_MAX; rn.cnt++) {
			struct msghdr *mh = &rn.msgs[rn.cnt].msg_hdr;

			p = pkts[i];
			if (p->ep.sa.sa_family != family)
				break;
			rn.first[rn.cnt] = i;
			rn.iovs[used] = (struct iovec){.iov_base = p->data, .iov_len = p->len};
			for (k = 1, bytes = p->len, i++; i < n && used + k < UDP_BATCH_MAX &&
							 __atomic_load_n(gso, __ATOMIC_RELAXED) &&
							 gso_joins(p, pkts[i], k, bytes);
			     k++, i++) {
				rn.iovs[used + k] = (struct iovec){.iov_base = pkts[i]->data,
								   .iov_len = pkts[i]->len};
				bytes += pkts[i]->len;
				/* A shorter one is the last of its message. */
				if (pkts[i]->len < p->len) {
					k++, i++;
					break;
				}
			}
			memset(&rn.msgs[rn.cnt], 0, sizeof(rn.msgs[rn.cnt]));
			mh->msg_name = &p->ep;
			mh->msg_namelen = endpoint_len(&p->ep);
			mh->msg_iov = &rn.iovs[used];
			mh->msg_iovlen = k;
			len = udp_src_encode(&p->ep, &rn.ctl[rn.cnt]);
			rn.src_len[rn.cnt] = (uint8_t)len;
			if (k > 1)
				len += seg_encode(rn.ctl[rn.cnt].buf + len, (uint16_t)p->len);
			mh->msg_controllen = len;
			mh->msg_control = len ? &rn.ctl[rn.cnt] : NULL;
			rn.npk[rn.cnt] = (uint8_t)k;
			used += k;
		}
		r = send_run(fd, &rn, &stale.n, gso);
		/* Which source was refused: its packets went without their control data. */
		for (j = 0; stale.n && stale.src.family == AF_UNSPEC && j < rn.cnt; j++) {
			p = pkts[rn.first[j]];
			if (!rn.src_len[j] && endpoint_src_is_set(&p->ep))
				stale.src = p->ep.src;
		}
		if (r < 0) {
			if (!err)
				err = r;
			continue;
		}
		sent += (unsigned)r;
	}
	if (ret_stale)
		*ret_stale = stale;
	if (sent == 0 && err)
		return err;
	return (int)sent;
}
