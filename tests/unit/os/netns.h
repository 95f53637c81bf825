/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_TESTS_UNIT_OS_NETNS_H
#define TRELLIS_TESTS_UNIT_OS_NETNS_H

/*
 * Every test runs in a network namespace of its own: nothing on the host is touched, tests run
 * in parallel, and the namespace (with its TUN devices) vanishes once its last fd is closed.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "os/netlink.h"

static int netns_enter(void **state)
{
	(void)state;
	if (unshare(CLONE_NEWNET) < 0) {
		fprintf(stderr, "unshare(CLONE_NEWNET): %s (these tests need root)\n",
			strerror(errno));
		return -1;
	}
	if (nl_link_set_up("lo", true) < 0)
		return -1;
	return 0;
}

/* Waits up to timeout_ms for fd to become readable; true if it did. */
static inline bool fd_wait_readable(int fd, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, timeout_ms) == 1;
}

#endif
