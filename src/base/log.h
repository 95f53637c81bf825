/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_LOG_H
#define TRELLIS_BASE_LOG_H

#include <stdint.h>

enum log_level {
	LOG_LEVEL_ERR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* Read without a lock: a stale level for one message is harmless. */
extern int log_level_current;

/*
 * Lines go to stderr as "2026-12-01T12:00:00.000Z PREFIX: LEVEL: message", or, under the
 * systemd journal (which adds its own time), as "<PRIORITY>PREFIX: LEVEL: message".
 * log_init decides which from the current stderr; without it, the first line decides.
 */
void log_init(void);
void log_set_level(int level);
void log_set_prefix(const char *prefix);
void log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Arguments are not evaluated when the level is off. */
#define log_at(level, ...)                                                                         \
	do {                                                                                       \
		if ((level) <= log_level_current)                                                  \
			log_write((level), __VA_ARGS__);                                           \
	} while (0)
#define log_err(...) log_at(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warn(...) log_at(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...) log_at(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LEVEL_DEBUG, __VA_ARGS__)

/*
 * Rate-limited logging for anything a remote party can trigger: at most `burst`
 * messages per second per call site.
 */
struct log_ratelimit {
	uint64_t window_start_ns;
	unsigned count;
};
int log_ratelimit_allow(struct log_ratelimit *rl, unsigned burst);
#define log_ratelimited(level, ...)                                                                \
	do {                                                                                       \
		static struct log_ratelimit _rl;                                                   \
		if ((level) <= log_level_current && log_ratelimit_allow(&_rl, 5))                  \
			log_write((level), __VA_ARGS__);                                           \
	} while (0)

#endif
