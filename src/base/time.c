/* SPDX-License-Identifier: MIT */
#include <time.h>

#include "base/time.h"

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

uint64_t time_now_ns(void)
{
	return clock_ns(CLOCK_MONOTONIC);
}

uint64_t time_wall_ns(void)
{
	return clock_ns(CLOCK_REALTIME);
}

int64_t time_wall_s(void)
{
	return (int64_t)(time_wall_ns() / NSEC_PER_SEC);
}
