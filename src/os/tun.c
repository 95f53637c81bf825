/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "base/util.h"
#include "os/tun.h"

#define TUN_DEFAULT_NAME "trellis%d"
/*
 * Packets read but dropped (over-long, empty) do not use up a slot of the batch, so a stream of
 * them is bounded separately: the loop always ends.
 */
#define TUN_READ_DROP_MAX 64

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

/* One byte past what the buffer carries, so that a longer packet shows as truncated. */
static uint32_t read_capacity(const struct pkt *p)
{
	uint32_t room = p->cap - pkt_headroom(p);

	return MIN(room, pkt_buf_mtu(p->cap) + 1);
}

int tun_read_batch(int fd, struct pkt **pkts, unsigned n, unsigned *ret_dropped)
{
	unsigned got = 0, dropped = 0;
	struct pkt *p;
	ssize_t r;

	while (got < n && dropped < TUN_READ_DROP_MAX) {
		p = pkts[got];
		r = read(fd, p->data, read_capacity(p));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			/* Report the error only when there is nothing else to report. */
			if (got == 0 && dropped == 0)
				return -errno;
			break;
		}
		if (r == 0 || (uint32_t)r > pkt_buf_mtu(p->cap)) {
			dropped++;
			continue;
		}
		p->len = (uint32_t)r;
		got++;
	}
	if (ret_dropped)
		*ret_dropped = dropped;
	return (int)got;
}

int tun_write_batch(int fd, struct pkt **pkts, unsigned n)
{
	unsigned i, written = 0;
	int err = 0;
	ssize_t r;

	for (i = 0; i < n; i++) {
		do {
			r = write(fd, pkts[i]->data, pkts[i]->len);
		} while (r < 0 && errno == EINTR);
		if (r < 0) {
			/* A malformed packet (EINVAL) fails alone; keep going with the others. */
			if (!err)
				err = -errno;
			if (errno == EBADF || errno == EAGAIN)
				break;
			continue;
		}
		written++;
	}
	if (written == 0 && err)
		return err;
	return (int)written;
}
