/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OS_TUN_H
#define TRELLIS_OS_TUN_H

#include <net/if.h>

#include "base/pkt.h"

/*
 * Opens (creating if needed) a layer-3 TUN device without packet info headers,
 * non-blocking, close-on-exec. name may be a pattern ("trellis%d"); NULL or ""
 * means "trellis%d".
 * Returns the fd and writes the kernel's name, or -errno.
 */
int tun_open(const char *name, char ret_name[IF_NAMESIZE]);
/*
 * Reads up to n packets without blocking, each into pkts[i]->data (at most
 * pkt_buf_mtu(cap) bytes: a longer packet, larger than its buffer can carry, is
 * dropped and counted).
 * Returns the count (0 when none are waiting) or -errno. *ret_dropped counts
 * packets discarded (truncated/empty); at most 64 are discarded per call, so a
 * return of 0 with *ret_dropped > 0 means "call again".
 */
int tun_read_batch(int fd, struct pkt **pkts, unsigned n, unsigned *ret_dropped);
/* Writes each packet; returns how many were written or -errno when none were. */
int tun_write_batch(int fd, struct pkt **pkts, unsigned n);

#endif
