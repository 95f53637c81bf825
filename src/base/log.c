/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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

/*
 * How lines start: a UTC timestamp, or, when stderr is the systemd journal (which stamps
 * lines itself), the syslog priority in angle brackets, which journald turns into the
 * entry's priority (sd-daemon(3)). -1: not decided yet. Deciding twice gives the same
 * answer, so threads may race to decide.
 */
enum { STYLE_UNKNOWN = -1, STYLE_TIMESTAMP, STYLE_JOURNAL };
static int log_style = STYLE_UNKNOWN;

/* systemd sets JOURNAL_STREAM to "DEV:INODE" of the stream it connected (systemd.exec(5)). */
static int style_detect(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
		return STYLE_JOURNAL;
	return STYLE_TIMESTAMP;
}

void log_init(void)
{
	__atomic_store_n(&log_style, style_detect(), __ATOMIC_RELAXED);
}

void log_write(int level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	static const int priorities[] = {3, 4, 6,
					 7}; /* LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG */
	char line[1024];
	int style = __atomic_load_n(&log_style, __ATOMIC_RELAXED);
	va_list ap;
	int n, lv = level < 0 ? 0 : level > 3 ? 3 : level;

	if (style == STYLE_UNKNOWN) {
		style = style_detect();
		__atomic_store_n(&log_style, style, __ATOMIC_RELAXED);
	}
	if (style == STYLE_JOURNAL) {
		n = snprintf(line, sizeof(line), "<%d>", priorities[lv]);
	} else {
		uint64_t ns = time_wall_ns();
		time_t sec = (time_t)(ns / NSEC_PER_SEC);
		struct tm tm;

		gmtime_r(&sec, &tm);
		n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03uZ ",
			      (unsigned)(ns % NSEC_PER_SEC / 1000000));
	}
	n += snprintf(line + n, sizeof(line) - (size_t)n, "%s%s%s: ", log_prefix,
		      log_prefix[0] ? ": " : "", names[lv]);
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
