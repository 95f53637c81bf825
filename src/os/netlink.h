/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OS_NETLINK_H
#define TRELLIS_OS_NETLINK_H

/*
 * Interface configuration over rtnetlink (libmnl). Every call is synchronous: it waits for the
 * ACK. Errors are the kernel's, as -errno: -ENODEV (no such device), -EEXIST (route exists),
 * -EADDRNOTAVAIL (deleting a missing address), -ESRCH (deleting a missing route).
 */

#include <stdbool.h>
#include <stdint.h>

int nl_link_index(const char *ifname); /* >0, or -ENODEV */
int nl_link_set_up(const char *ifname, bool up);
int nl_link_set_mtu(const char *ifname, unsigned mtu);
/* The link's current MTU (> 0), or -errno. */
int nl_link_get_mtu(const char *ifname);
/* Whether the link exists, is up and has a carrier (IFF_UP and IFF_RUNNING). */
bool nl_link_running(int ifindex);
/* addr: 4 or 16 bytes in network order. -EEXIST is returned as 0 (idempotent). */
int nl_addr_add(const char *ifname, int family, const void *addr, unsigned prefixlen);
int nl_addr_del(const char *ifname, int family, const void *addr, unsigned prefixlen);
int nl_route_add(const char *ifname, int family, const void *dst, unsigned prefixlen);
int nl_route_del(const char *ifname, int family, const void *dst, unsigned prefixlen);

/*
 * The gateway of the main table's default route of this family (the lowest metric when there
 * are several) into ret_gw (4 or 16 bytes) and its interface; -ENETUNREACH when there is none.
 */
int nl_route_default_gateway(int family, void *ret_gw, int *ret_ifindex);

/*
 * Link/address/route change monitor: a non-blocking netlink socket subscribed to link,
 * address and route groups. nl_monitor_read drains it and returns how many change events it saw
 * (an overrun, where the kernel dropped events, counts as one: re-read the state).
 * Close the fd with close().
 */
int nl_monitor_open(void);
int nl_monitor_read(int fd);

/*
 * ND user options (RTNLGRP_ND_USEROPT): RA options the kernel does not handle itself, one
 * RTM_NEWNDUSEROPT message each (RFC 8781's PREF64 among them). nl_nduseropt_open returns a
 * non-blocking socket subscribed to them; nl_notify_recv reads one datagram the kernel sent
 * into buf: its length, 0 when there is none left, or -errno (-ENOBUFS: some were lost, the
 * next RA says it again). Datagrams from other processes are skipped.
 */
int nl_nduseropt_open(void);
int nl_notify_recv(int fd, void *buf, unsigned cap);

#endif
