/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

#include "base/util.h"
#include "os/tun.h"

#define TUN_DEFAULT_NAME "trellis%d"
/*
 * Packets read but dropped (over-long, empty) do not use up a slot of the batch, so a stream of
 * them is bounded separately: the loop always ends.
 */
#define TUN_READ_DROP_MAX 64
/* Not in every linux/if_tun.h yet (Linux 6.2). */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif
/* A super-packet: the most an IP length field says, and a vnet header. */
#define TUN_SUPER_MAX (65535 + 40)

/*
 * One queue of the device. `extra_flags` is where IFF_MULTI_QUEUE goes when the data plane grows
 * several reader threads: every queue is opened with the same name and flags.
 */
static int tun_open_queue(const char *name, short extra_flags, char ret_name[IF_NAMESIZE])
{
	struct ifreq ifr;
	int fd, ret;

	memset(&ifr, 0, sizeof(ifr));
	if (strlen(name) >= sizeof(ifr.ifr_name))
		return -EINVAL;
	strncpy(ifr.ifr_name, name, sizeof(ifr.ifr_name) - 1);
	ifr.ifr_flags = (short)(IFF_TUN | IFF_NO_PI | extra_flags);

	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		ret = -errno;
		goto out;
	}
	ifr.ifr_name[sizeof(ifr.ifr_name) - 1] = '\0';
	memcpy(ret_name, ifr.ifr_name, IF_NAMESIZE);
	ret_name[IF_NAMESIZE - 1] = '\0';
	return fd;
out:
	close(fd);
	return ret;
}

int tun_open(const char *name, char ret_name[IF_NAMESIZE])
{
	if (!name || !*name)
		name = TUN_DEFAULT_NAME;
	return tun_open_queue(name, 0, ret_name);
}

int tun_open_vnet(const char *name, char ret_name[IF_NAMESIZE])
{
	if (!name || !*name)
		name = TUN_DEFAULT_NAME;
	return tun_open_queue(name, IFF_VNET_HDR, ret_name);
}

unsigned tun_offload_set(int fd, unsigned want)
{
	static const struct {
		unsigned bit;
		unsigned flags;
	} feats[] = {
	    {TUN_OFFLOAD_USO, TUN_F_USO4 | TUN_F_USO6},
	    {TUN_OFFLOAD_TSO, TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN},
	    {TUN_OFFLOAD_CSUM, 0},
	};
	unsigned flags, i, j;

	if (want & (TUN_OFFLOAD_TSO | TUN_OFFLOAD_USO))
		want |= TUN_OFFLOAD_CSUM;
	/* Drop the newest feature first: a kernel that refuses one refuses the whole call. */
	for (i = 0; i < ARRAY_SIZE(feats) && want; i++) {
		flags = TUN_F_CSUM;
		for (j = 0; j < ARRAY_SIZE(feats); j++)
			if (want & feats[j].bit)
				flags |= feats[j].flags;
		if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) == 0)
			return want;
		want &= ~feats[i].bit;
	}
	(void)ioctl(fd, TUNSETOFFLOAD, 0UL);
	return 0;
}

int tun_rx_init_vnet(struct tun_rx *rx)
{
	memset(rx, 0, sizeof(*rx));
	rx->big = malloc(TUN_SUPER_MAX + OFFLOAD_VNET_HDR_LEN);
	return rx->big ? 0 : -ENOMEM;
}

void tun_rx_free(struct tun_rx *rx)
{
	if (!rx)
		return;
	free(rx->big);
	memset(rx, 0, sizeof(*rx));
}

/* One byte past what the buffer carries, so that a longer packet shows as truncated. */
static uint32_t read_capacity(const struct pkt *p)
{
	uint32_t room = p->cap - pkt_headroom(p);

	return MIN(room, pkt_buf_mtu(p->cap) + 1);
}

/*
 * One read from a vnet TUN into p, or into rx->big for what does not fit: 1 for a packet
 * in p, 0 for one to cut (rx->seg started), -EAGAIN/-errno from the read, -E2BIG for a packet
 * too large for p that is not GSO, -EBADMSG for a malformed one (counted in rx->bad).
 */
static int read_vnet(int fd, struct tun_rx *rx, struct pkt *p)
{
	uint8_t hdr[OFFLOAD_VNET_HDR_LEN];
	uint32_t room = pkt_buf_mtu(p->cap);
	struct offload_vnet_hdr h;
	struct iovec iov[3];
	size_t len;
	ssize_t r;

	room = MIN(room, p->cap - pkt_headroom(p));
	iov[0] = (struct iovec){.iov_base = hdr, .iov_len = sizeof(hdr)};
	iov[1] = (struct iovec){.iov_base = p->data, .iov_len = room};
	iov[2] = (struct iovec){.iov_base = rx->big + room, .iov_len = TUN_SUPER_MAX - room};
	do {
		r = readv(fd, iov, 3);
	} while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if ((size_t)r <= sizeof(hdr) || offload_vnet_hdr_parse(hdr, sizeof(hdr), &h) < 0)
		goto bad;
	len = (size_t)r - sizeof(hdr);
	if ((h.gso_type & (uint8_t)~OFFLOAD_GSO_ECN) == OFFLOAD_GSO_NONE) {
		if (len > room)
			return -E2BIG;
		if (offload_csum_finish(&h, p->data, len) < 0)
			goto bad;
		p->len = (uint32_t)len;
		return 1;
	}
	/* The super-packet whole in rx->big: its head went to p. */
	memcpy(rx->big, p->data, MIN(len, (size_t)room));
	if (offload_seg_start(&rx->seg, &h, rx->big, len) < 0)
		goto bad;
	rx->supers++;
	return 0;
bad:
	rx->bad++;
	return -EBADMSG;
}

/* Into pkts[got...]: segments of the super-packet being cut, a packet, or nothing (1 below). */
static int read_one_vnet(int fd, struct tun_rx *rx, struct pkt **pkts, unsigned room, unsigned *got,
			 unsigned *dropped, unsigned *bad)
{
	int r;

	if (!offload_seg_done(&rx->seg)) {
		r = offload_seg_next(&rx->seg, pkts, room);
		if (r < 0) {
			/* Segments larger than the buffers: the rest of it goes. */
			rx->bad++;
			(*bad)++;
			memset(&rx->seg, 0, sizeof(rx->seg));
			return 0;
		}
		*got += (unsigned)r;
		return 0;
	}
	r = read_vnet(fd, rx, pkts[0]);
	if (r == 1)
		(*got)++;
	else if (r == -EBADMSG)
		(*bad)++;
	else if (r == -E2BIG)
		(*dropped)++;
	else if (r < 0)
		return r;
	return 0;
}

int tun_read_batch(int fd, struct tun_rx *rx, struct pkt **pkts, unsigned n, unsigned *ret_dropped)
{
	unsigned got = 0, dropped = 0, bad = 0;
	struct pkt *p;
	ssize_t r;
	int err;

	while (got < n && dropped + bad < TUN_READ_DROP_MAX) {
		p = pkts[got];
		if (rx && rx->big) {
			err = read_one_vnet(fd, rx, pkts + got, n - got, &got, &dropped, &bad);
			if (!err)
				continue;
		} else {
			r = read(fd, p->data, read_capacity(p));
			if (r >= 0) {
				if (r == 0 || (uint32_t)r > pkt_buf_mtu(p->cap)) {
					dropped++;
					continue;
				}
				p->len = (uint32_t)r;
				got++;
				continue;
			}
			err = -errno;
		}
		if (err == -EINTR)
			continue;
		if (err == -EAGAIN || err == -EWOULDBLOCK)
			break;
		/* Report the error only when there is nothing else to report. */
		if (got == 0 && dropped == 0 && bad == 0)
			return err;
		break;
	}
	if (ret_dropped)
		*ret_dropped = dropped;
	return (int)got;
}

/* One write of iov; the packets it carries counted into *written, the first error kept. */
static bool write_one(int fd, struct iovec *iov, unsigned cnt, unsigned pkts, unsigned *written,
		      int *err)
{
	ssize_t r;

	do {
		r = writev(fd, iov, (int)cnt);
	} while (r < 0 && errno == EINTR);
	if (r >= 0) {
		*written += pkts;
		return true;
	}
	/* A malformed packet (EINVAL) fails alone; keep going with the others. */
	if (!*err)
		*err = -errno;
	return !(errno == EBADF || errno == EAGAIN);
}

/* Groups of one flow's segments, each one write behind its vnet header. */
static bool write_groups(int fd, struct pkt **pkts, unsigned n, unsigned gro, unsigned *written,
			 int *err)
{
	struct offload_gro_group groups[OFFLOAD_GRO_BATCH];
	struct iovec iov[OFFLOAD_GRO_BATCH + 1];
	unsigned ng, g, i;

	ng = offload_gro(pkts, n, gro, groups);
	for (g = 0; g < ng; g++) {
		const struct offload_gro_group *gr = &groups[g];

		iov[0] = (struct iovec){.iov_base = (void *)gr->vnet, .iov_len = sizeof(gr->vnet)};
		for (i = 0; i < gr->n; i++) {
			struct pkt *p = pkts[gr->start + i];
			size_t skip = i ? gr->skip : 0;

			iov[i + 1] =
			    (struct iovec){.iov_base = p->data + skip, .iov_len = p->len - skip};
		}
		if (!write_one(fd, iov, gr->n + 1, gr->n, written, err))
			return false;
	}
	return true;
}

int tun_write_batch(int fd, struct pkt **pkts, unsigned n, bool vnet, unsigned gro,
		    unsigned *ret_joined)
{
	static const uint8_t plain[OFFLOAD_VNET_HDR_LEN];
	unsigned i, k, m, before, written = 0;
	struct iovec iov[2];
	int err = 0;

	if (ret_joined)
		*ret_joined = 0;

	for (i = 0; i < n;) {
		if (vnet && gro) {
			k = MIN(n - i, (unsigned)OFFLOAD_GRO_BATCH);
			m = offload_defrag(pkts + i, k);
			before = written;
			if (!write_groups(fd, pkts + i, m, gro, &written, &err))
				break;
			/*
			 * The fragments taken into a datagram went with it, if it was written.
			 * Which write failed is not known here: a failure counts them with the
			 * errors.
			 */
			if (written - before == m) {
				written += k - m;
				if (ret_joined)
					*ret_joined += k - m;
			}
			i += k;
			continue;
		}
		iov[0] =
		    (struct iovec){.iov_base = (void *)plain, .iov_len = vnet ? sizeof(plain) : 0};
		iov[1] = (struct iovec){.iov_base = pkts[i]->data, .iov_len = pkts[i]->len};
		if (!write_one(fd, vnet ? iov : iov + 1, vnet ? 2 : 1, 1, &written, &err))
			break;
		i++;
	}
	if (written == 0 && err)
		return err;
	return (int)written;
}
