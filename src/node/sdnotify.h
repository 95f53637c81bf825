/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_SDNOTIFY_H
#define TRELLIS_NODE_SDNOTIFY_H

/*
 * systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram of
 * "KEY=VALUE" lines to the unix socket in $NOTIFY_SOCKET (a path, or "@name" in the
 * abstract namespace). Without $NOTIFY_SOCKET every call is a no-op, so the daemon calls
 * these unconditionally.
 */

#include <stdint.h>

/* Sends text (e.g. "READY=1\nSTATUS=Running"). 0 (also when not under systemd), -errno. */
int sdnotify_send(const char *text);

/*
 * The watchdog interval systemd asks for (WatchdogSec= in the unit: $WATCHDOG_USEC, for
 * this process if $WATCHDOG_PID is set), in ns; 0 when there is none. Send "WATCHDOG=1"
 * at least twice per interval.
 */
uint64_t sdnotify_watchdog_ns(void);

#endif
