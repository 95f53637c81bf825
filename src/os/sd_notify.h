/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OS_SD_NOTIFY_H
#define TRELLIS_OS_SD_NOTIFY_H

#include <stdint.h>

/*
 * systemd's readiness protocol (sd_notify(3)), without libsystemd: one
 * datagram of "KEY=VALUE" lines to the unix socket named by $NOTIFY_SOCKET
 * (a path, or "@name" for the abstract namespace). Type=notify units start
 * their dependents once "READY=1" arrives.
 */

/*
 * Sends state ("READY=1", "STOPPING=1", "STATUS=...", lines joined by '\n').
 * 1 when sent, 0 when $NOTIFY_SOCKET is unset (not run by systemd: nothing to
 * do), -EINVAL for a socket name that is no path, or -errno from sending.
 */
int sd_notify_send(const char *state);

/*
 * The watchdog interval systemd asks for (WatchdogSec= in the unit: $WATCHDOG_USEC, for
 * this process if $WATCHDOG_PID is set), in ns; 0 when there is none. Send "WATCHDOG=1"
 * at least twice per interval.
 */
uint64_t sd_notify_watchdog_ns(void);

#endif
