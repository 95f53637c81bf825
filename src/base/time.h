/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_TIME_H
#define TRELLIS_BASE_TIME_H

#include <stdint.h>

/* The one time type of the project: uint64_t nanoseconds, named *_ns. */
#define NSEC_PER_USEC 1000ULL
#define NSEC_PER_MSEC 1000000ULL
#define NSEC_PER_SEC 1000000000ULL
#define TIME_NEVER UINT64_MAX

/* CLOCK_MONOTONIC: for every timer and age. */
uint64_t time_now_ns(void);
/* CLOCK_REALTIME: only for what leaves the process (TAI64N, "latest handshake"). */
uint64_t time_wall_ns(void);
/* CLOCK_REALTIME in whole seconds: the Unix times stored and sent by the control plane. */
int64_t time_wall_s(void);

#endif
