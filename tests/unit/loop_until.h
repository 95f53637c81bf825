/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_TESTS_LOOP_UNTIL_H
#define TRELLIS_TESTS_LOOP_UNTIL_H

/*
 * Unit tests that drive a server on their own thread's loop: run the loop until an event
 * (an fd readable, a condition on counters, a handler's loop_stop) or a deadline. Each
 * returns false on the deadline, so the test asserts on what it waited for. Include after
 * <cmocka.h>.
 */

#include <poll.h>
#include <stdbool.h>
#include <sys/epoll.h>

#include "base/loop.h"
#include "base/time.h"
#include "base/util.h"

struct loop_until {
	struct loop *loop;
	struct loop_fd fd;
	struct loop_timer deadline, check;
	bool (*cond)(void *arg);
	void *arg;
	bool timed_out;
};

static void loop_until_deadline_cb(struct loop_timer *t)
{
	struct loop_until *u = container_of(t, struct loop_until, deadline);

	u->timed_out = true;
	loop_stop(u->loop);
}

static void loop_until_fd_cb(struct loop_fd *h, uint32_t events)
{
	(void)events;
	loop_stop(container_of(h, struct loop_until, fd)->loop);
}

/* A condition on counters: nothing else wakes the loop for it, so it is polled each ms. */
static void loop_until_check_cb(struct loop_timer *t)
{
	struct loop_until *u = container_of(t, struct loop_until, check);

	if (u->cond(u->arg))
		loop_stop(u->loop);
	else
		loop_timer_arm(u->loop, t, loop_now_ns(u->loop) + NSEC_PER_MSEC);
}

/* Runs the loop until a callback stops it; false on the deadline. */
static inline bool loop_until_stopped(struct loop *loop, uint64_t timeout_ns)
{
	struct loop_until u = {.loop = loop, .deadline = {.cb = loop_until_deadline_cb}};

	loop_timer_arm(loop, &u.deadline, time_now_ns() + timeout_ns);
	assert_int_equal(loop_run(loop), 0);
	loop_timer_disarm(loop, &u.deadline);
	return !u.timed_out;
}

/* Runs the loop until fd is readable (data or EOF); false on the deadline. */
static inline bool loop_until_readable(struct loop *loop, int fd, uint64_t timeout_ns)
{
	struct loop_until u = {.loop = loop, .fd = {.fd = fd, .cb = loop_until_fd_cb}};
	struct pollfd p = {.fd = fd, .events = POLLIN};
	bool ok;

	if (poll(&p, 1, 0) == 1)
		return true;
	assert_int_equal(loop_fd_add(loop, &u.fd, EPOLLIN), 0);
	ok = loop_until_stopped(loop, timeout_ns);
	loop_fd_del(loop, &u.fd);
	return ok;
}

/*
 * Runs the loop until cond(arg) holds; false on the deadline. The loop runs at least one
 * iteration (cond is first checked from it), so events already waiting are handled.
 */
static inline bool loop_until(struct loop *loop, bool (*cond)(void *arg), void *arg,
			      uint64_t timeout_ns)
{
	struct loop_until u = {
	    .loop = loop, .check = {.cb = loop_until_check_cb}, .cond = cond, .arg = arg};
	bool ok;

	loop_timer_arm(loop, &u.check, loop_now_ns(loop));
	ok = loop_until_stopped(loop, timeout_ns);
	loop_timer_disarm(loop, &u.check);
	return ok;
}

#endif
