/* SPDX-License-Identifier: MIT */
/*
 * The control thread's event loop. Each iteration: compute the epoll timeout
 * from the earliest timer, wait, cache `now`, dispatch fd events, then run due
 * timers. The timer list is unsorted and scanned per iteration: the plain
 * WireGuard mode has a handful of timers (engine deadline, UAPI idle sweep);
 * the control-plane mode will want a heap or wheel (style.md, h2o).
 *
 * Deleting a handler from inside a callback is safe: the pending event array
 * of the current iteration is scrubbed of it (Redis ae.c does the same).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/log.h"
#include "base/time.h"
#include "base/util.h"
#include "base/loop.h"

#define LOOP_EVENTS_MAX 64

struct loop {
	int epfd;
	uint64_t now_ns;
	bool stop;
	struct loop_timer *timers;
	/* Events of the current iteration, for loop_fd_del. */
	struct epoll_event events[LOOP_EVENTS_MAX];
	int n_events;
	int i_event;

	struct loop_fd wake;
	void (*wake_cb)(struct loop *loop, void *ctx);
	void *wake_ctx;

	struct loop_fd sig;
	void (*sig_cb)(struct loop *loop, int signo);
};

static void wake_readable(struct loop_fd *h, uint32_t events)
{
	struct loop *loop = container_of(h, struct loop, wake);
	uint64_t v;

	(void)events;
	/* Reading resets the counter: many wakes before we run collapse into one call. */
	if (read(h->fd, &v, sizeof(v)) != sizeof(v))
		return;
	if (loop->wake_cb)
		loop->wake_cb(loop, loop->wake_ctx);
}

static void sig_readable(struct loop_fd *h, uint32_t events)
{
	struct loop *loop = container_of(h, struct loop, sig);
	struct signalfd_siginfo si;

	(void)events;
	while (read(h->fd, &si, sizeof(si)) == sizeof(si))
		if (loop->sig_cb)
			loop->sig_cb(loop, (int)si.ssi_signo);
}

struct loop *loop_new(void)
{
	struct loop *loop;
	int err;

	loop = calloc(1, sizeof(*loop));
	if (!loop)
		return NULL;
	loop->sig.fd = -1;
	loop->wake.fd = -1;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		goto fail;
	loop->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->wake.fd < 0)
		goto fail;
	loop->wake.cb = wake_readable;
	err = loop_fd_add(loop, &loop->wake, EPOLLIN);
	if (err < 0) {
		errno = -err;
		goto fail;
	}
	loop->now_ns = time_now_ns();
	return loop;
fail:
	err = errno;
	loop_free(loop);
	errno = err;
	return NULL;
}

void loop_free(struct loop *loop)
{
	if (!loop)
		return;
	if (loop->sig.fd >= 0)
		close(loop->sig.fd);
	if (loop->wake.fd >= 0)
		close(loop->wake.fd);
	if (loop->epfd >= 0)
		close(loop->epfd);
	free(loop);
}

uint64_t loop_now_ns(struct loop *loop)
{
	return loop->now_ns;
}

int loop_fd_add(struct loop *loop, struct loop_fd *h, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = h};

	if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0)
		return -errno;
	return 0;
}

int loop_fd_mod(struct loop *loop, struct loop_fd *h, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = h};

	if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0)
		return -errno;
	return 0;
}

void loop_fd_del(struct loop *loop, struct loop_fd *h)
{
	int i;

	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, h->fd, NULL);
	for (i = loop->i_event; i < loop->n_events; i++)
		if (loop->events[i].data.ptr == h)
			loop->events[i].data.ptr = NULL;
}

void loop_timer_arm(struct loop *loop, struct loop_timer *t, uint64_t deadline_ns)
{
	if (!t->armed) {
		t->next = loop->timers;
		loop->timers = t;
		t->armed = true;
	}
	t->deadline_ns = deadline_ns;
}

void loop_timer_disarm(struct loop *loop, struct loop_timer *t)
{
	struct loop_timer **pp;

	if (!t->armed)
		return;
	for (pp = &loop->timers; *pp; pp = &(*pp)->next) {
		if (*pp == t) {
			*pp = t->next;
			break;
		}
	}
	t->armed = false;
	t->next = NULL;
	t->deadline_ns = TIME_NEVER;
}

int loop_signals_catch(struct loop *loop, void (*cb)(struct loop *loop, int signo))
{
	sigset_t set;
	int ret;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	ret = -pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (ret < 0)
		return ret;
	loop->sig.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (loop->sig.fd < 0)
		return -errno;
	loop->sig.cb = sig_readable;
	loop->sig_cb = cb;
	return loop_fd_add(loop, &loop->sig, EPOLLIN);
}

void loop_wake(struct loop *loop)
{
	uint64_t one = 1;
	ssize_t r;

	/* EAGAIN means the counter is saturated: a wake is pending anyway. */
	r = write(loop->wake.fd, &one, sizeof(one));
	(void)r;
}

void loop_wake_cb_set(struct loop *loop, void (*cb)(struct loop *loop, void *ctx), void *ctx)
{
	loop->wake_cb = cb;
	loop->wake_ctx = ctx;
}

void loop_stop(struct loop *loop)
{
	loop->stop = true;
}

static int timeout_ms(struct loop *loop)
{
	uint64_t next = TIME_NEVER, now = time_now_ns(), d;
	struct loop_timer *t;

	for (t = loop->timers; t; t = t->next)
		if (t->deadline_ns < next)
			next = t->deadline_ns;
	if (next == TIME_NEVER)
		return -1;
	if (next <= now)
		return 0;
	/* Round up: waking a little late is harmless, waking early spins. */
	d = (next - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC;
	return d > 60000 ? 60000 : (int)d;
}

static void timers_run(struct loop *loop)
{
	struct loop_timer *t;

	/*
	 * A callback may arm or disarm any timer, so restart the scan after each one;
	 * a fired timer is disarmed first, so the scan terminates.
	 */
restart:
	for (t = loop->timers; t; t = t->next) {
		if (t->deadline_ns <= loop->now_ns) {
			loop_timer_disarm(loop, t);
			t->cb(t);
			goto restart;
		}
	}
}

int loop_run(struct loop *loop)
{
	loop->stop = false;
	while (!loop->stop) {
		int n = epoll_wait(loop->epfd, loop->events, LOOP_EVENTS_MAX, timeout_ms(loop));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		loop->now_ns = time_now_ns();
		loop->n_events = n;
		for (loop->i_event = 0; loop->i_event < n; loop->i_event++) {
			struct epoll_event *ev = &loop->events[loop->i_event];
			struct loop_fd *h = ev->data.ptr;

			if (h)
				h->cb(h, ev->events);
		}
		loop->n_events = 0;
		loop->i_event = 0;
		timers_run(loop);
	}
	return 0;
}
