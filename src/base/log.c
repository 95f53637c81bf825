/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "base/time.h"

int log_level_current = LOG_LEVEL_INFO;
static char log_prefix[64];

void log_set_level(int level)
{
	log_level_current = level;
}

void log_set_prefix(const char *prefix)
{
	snprintf(log_prefix, sizeof(log_prefix), "%s", prefix ? prefix : "");
}

void log_write(int level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	va_list ap;
	int n;

	n = snprintf(line, sizeof(line), "%s%s%s: ", log_prefix, log_prefix[0] ? ": " : "",
		     names[level < 0 ? 0 : level > 3 ? 3 : level]);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One write per line so lines from threads do not interleave. */
	fprintf(stderr, "%s\n", line);
}

int log_ratelimit_allow(struct log_ratelimit *rl, unsigned burst)
{
	uint64_t now = time_now_ns();

	if (now - rl->window_start_ns > NSEC_PER_SEC) {
		rl->window_start_ns = now;
		rl->count = 0;
	}
	return rl->count++ < burst;
}
