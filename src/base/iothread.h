/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_IOTHREAD_H
#define TRELLIS_BASE_IOTHREAD_H

/*
 * A data-plane reader thread that can be stopped and restarted: it sleeps in poll()
 * on its fds plus stop_fd (an eventfd), and iothread_stop sets the flag, writes the
 * eventfd and joins. Used by the TUN reader (src/node/wgdev.c) and the UDP reader
 * (src/net/udpconn.c).
 */

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct iothread {
	pthread_t thread;
	int stop_fd; /* eventfd: poll it with the thread's fds */
	atomic_bool stop;
	bool running;
};

/* Creates stop_fd. 0 or -errno. */
int iothread_init(struct iothread *t);
/* Stops the thread if running and closes stop_fd. Accepts a zeroed struct with stop_fd -1. */
void iothread_destroy(struct iothread *t);
/*
 * Clears an earlier stop request and runs fn(arg) in a thread named name (at most
 * 15 characters: what top -H, ps -L and perf show). 0 or -errno.
 */
int iothread_start(struct iothread *t, const char *name, void *(*fn)(void *), void *arg);
/* Asks the thread to stop and joins it; nothing if it is not running. */
void iothread_stop(struct iothread *t);

static inline bool iothread_stopping(struct iothread *t)
{
	return atomic_load(&t->stop);
}

/* From the thread: sleeps up to ms unless asked to stop; true when asked to stop. */
bool iothread_sleep(struct iothread *t, int ms);

#endif
