/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_LOOP_H
#define TRELLIS_BASE_LOOP_H

/*
 * A small epoll event loop for one thread (the control thread of trellisd):
 * fd callbacks, one-shot timers, SIGTERM/SIGINT through a signalfd, and a
 * thread-safe wake. `now` is read once per iteration and cached (loop_now_ns),
 * so every callback of one iteration sees the same time.
 *
 * Only loop_wake may be called from another thread.
 */

#include <stdbool.h>
#include <stdint.h>

struct loop;

struct loop_fd {
	int fd;
	void (*cb)(struct loop_fd *h, uint32_t events);
};

/*
 * Timers sit in a binary min-heap on deadline: arm, re-arm and disarm are
 * O(log n), finding the next deadline O(1) (trellis-control holds a keepalive
 * timer per connection, 10,000+). A zeroed struct with cb set is a valid
 * disarmed timer.
 */
struct loop_timer {
	uint64_t deadline_ns; /* TIME_NEVER when disarmed */
	void (*cb)(struct loop_timer *t);
	size_t heap_index; /* position in the loop's heap while armed */
	bool armed;
};

/* NULL on failure (errno set). */
struct loop *loop_new(void);
/* Accepts NULL. Does not close registered fds (their owners do). */
void loop_free(struct loop *loop);

uint64_t loop_now_ns(struct loop *loop);

/* events: EPOLLIN/EPOLLOUT...; h must stay valid until loop_fd_del. 0 or -errno. */
int loop_fd_add(struct loop *loop, struct loop_fd *h, uint32_t events);
int loop_fd_mod(struct loop *loop, struct loop_fd *h, uint32_t events);
/* Safe from inside any callback, including h's own: pending events for h are discarded. */
void loop_fd_del(struct loop *loop, struct loop_fd *h);

void loop_timer_arm(struct loop *loop, struct loop_timer *t, uint64_t deadline_ns);
void loop_timer_disarm(struct loop *loop, struct loop_timer *t);

/*
 * Blocks SIGTERM and SIGINT for the calling thread (call before creating other
 * threads so they inherit the mask) and delivers them to cb through a signalfd.
 */
int loop_signals_catch(struct loop *loop, void (*cb)(struct loop *loop, int signo));
/* Thread safe, async-signal safe: makes the loop call wake_cb once soon. */
void loop_wake(struct loop *loop);
void loop_wake_cb_set(struct loop *loop, void (*cb)(struct loop *loop, void *ctx), void *ctx);

/* Runs until loop_stop. 0 or -errno on a fatal epoll error. */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

#endif
