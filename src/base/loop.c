/* SPDX-License-Identifier: MIT */
/*
 * The control thread's event loop. Each iteration: compute the epoll timeout
 * from the earliest timer, wait, cache `now`, dispatch fd events, then run due
 * timers. Timers live in a binary min-heap of pointers, each timer knowing its
 * index, so disarming one in the middle is O(log n) without a search.
 *
 * Deleting a handler from inside a callback is safe: the pending event array
 * of the current iteration is scrubbed of it (Redis ae.c does the same).
 *
 * Async sources share one eventfd. A send sets the source's flag, then the
 * loop's flag, and writes the eventfd only when it turned the loop's flag on;
 * the loop reads the eventfd, clears its flag, then clears and serves each
 * source's flag. Both sides use sequentially consistent atomics, so a send
 * either finds the loop's flag set by a sender whose wake-up is still to come
 * (and whose scan will see this source's flag), or writes the eventfd itself:
 * no send is lost, and a burst costs one write(2).
 *
 * A mailbox is a Treiber stack: producers push with a compare-and-swap, the
 * loop takes the whole stack with one exchange and reverses it into post
 * order. Taking everything at once has no ABA problem, and a push onto the
 * empty stack is the one that sends the mailbox's async, so a burst of posts
 * costs one wake-up. Closing swaps in a sentinel that later pushes see.
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
	struct loop_timer **heap;
	size_t heap_len, heap_cap;
	/* Events of the current iteration, for loop_fd_del. */
	struct epoll_event events[LOOP_EVENTS_MAX];
	int n_events;
	int i_event;

	struct loop_fd async_fd;
	atomic_bool async_pending;
	struct loop_async *asyncs;
	struct loop_async *async_next; /* the scan's next source, for loop_async_del */

	struct loop_fd sig;
	void (*sig_cb)(struct loop *loop, int signo);
};

static void async_readable(struct loop_fd *h, uint32_t events)
{
	struct loop *loop = container_of(h, struct loop, async_fd);
	struct loop_async *a;
	uint64_t v;

	(void)events;
	/* Reading resets the counter: many sends before we run collapse into one wake-up. */
	if (read(h->fd, &v, sizeof(v)) != sizeof(v))
		return;
	atomic_store(&loop->async_pending, false);
	/* A callback may delete any source: loop_async_del moves async_next past it. */
	for (a = loop->asyncs; a; a = loop->async_next) {
		loop->async_next = a->next;
		if (atomic_load(&a->pending) && atomic_exchange(&a->pending, false))
			a->cb(a);
	}
	loop->async_next = NULL;
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
	loop->async_fd.fd = -1;
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		goto fail;
	loop->async_fd.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->async_fd.fd < 0)
		goto fail;
	loop->async_fd.cb = async_readable;
	err = loop_fd_add(loop, &loop->async_fd, EPOLLIN);
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
	if (loop->async_fd.fd >= 0)
		close(loop->async_fd.fd);
	if (loop->epfd >= 0)
		close(loop->epfd);
	free(loop->heap);
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

static void heap_set(struct loop *loop, size_t i, struct loop_timer *t)
{
	loop->heap[i] = t;
	t->heap_index = i;
}

static void heap_up(struct loop *loop, size_t i)
{
	struct loop_timer *t = loop->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (loop->heap[parent]->deadline_ns <= t->deadline_ns)
			break;
		heap_set(loop, i, loop->heap[parent]);
		i = parent;
	}
	heap_set(loop, i, t);
}

static void heap_down(struct loop *loop, size_t i)
{
	struct loop_timer *t = loop->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= loop->heap_len)
			break;
		if (c + 1 < loop->heap_len &&
		    loop->heap[c + 1]->deadline_ns < loop->heap[c]->deadline_ns)
			c++;
		if (t->deadline_ns <= loop->heap[c]->deadline_ns)
			break;
		heap_set(loop, i, loop->heap[c]);
		i = c;
	}
	heap_set(loop, i, t);
}

void loop_timer_arm(struct loop *loop, struct loop_timer *t, uint64_t deadline_ns)
{
	uint64_t old = t->deadline_ns;

	t->deadline_ns = deadline_ns;
	if (t->armed) {
		if (deadline_ns < old)
			heap_up(loop, t->heap_index);
		else
			heap_down(loop, t->heap_index);
		return;
	}
	if (loop->heap_len == loop->heap_cap) {
		size_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
		struct loop_timer **h = realloc(loop->heap, cap * sizeof(*h));

		/*
		 * The API cannot fail (every caller would need a path for it) and a
		 * pointer per timer is far below what the timers' owners allocate.
		 */
		if (!h)
			abort();
		loop->heap = h;
		loop->heap_cap = cap;
	}
	t->armed = true;
	heap_set(loop, loop->heap_len++, t);
	heap_up(loop, t->heap_index);
}

void loop_timer_disarm(struct loop *loop, struct loop_timer *t)
{
	size_t i = t->heap_index;
	struct loop_timer *last;

	if (!t->armed)
		return;
	last = loop->heap[--loop->heap_len];
	if (last != t) {
		heap_set(loop, i, last);
		/* The moved timer may belong above or below its new position. */
		heap_up(loop, i);
		heap_down(loop, last->heap_index);
	}
	t->armed = false;
	t->heap_index = 0;
	t->deadline_ns = TIME_NEVER;
}

void loop_timer_set(struct loop *loop, struct loop_timer *t, uint64_t deadline_ns)
{
	if (deadline_ns == TIME_NEVER)
		loop_timer_disarm(loop, t);
	else
		loop_timer_arm(loop, t, deadline_ns);
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

void loop_async_add(struct loop *loop, struct loop_async *a)
{
	a->loop = loop;
	atomic_store(&a->pending, false);
	a->prev = NULL;
	a->next = loop->asyncs;
	if (a->next)
		a->next->prev = a;
	loop->asyncs = a;
}

void loop_async_send(struct loop_async *a)
{
	struct loop *loop = a->loop;
	uint64_t one = 1;
	ssize_t r;

	/* The plain load first keeps a hot sender off the cache line's write path. */
	if (atomic_load(&a->pending) || atomic_exchange(&a->pending, true))
		return;
	if (atomic_exchange(&loop->async_pending, true))
		return;
	/* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
	r = write(loop->async_fd.fd, &one, sizeof(one));
	(void)r;
}

void loop_async_del(struct loop_async *a)
{
	struct loop *loop = a->loop;

	/* Never added, or deleted already. a->loop stays: a late send only wakes the loop. */
	if (!loop || (!a->prev && loop->asyncs != a))
		return;
	if (loop->async_next == a)
		loop->async_next = a->next;
	if (a->prev)
		a->prev->next = a->next;
	else
		loop->asyncs = a->next;
	if (a->next)
		a->next->prev = a->prev;
	a->next = a->prev = NULL;
	atomic_store(&a->pending, false);
}

/* --- mailbox --- */

/* The head of a closed mailbox: an address no message can have. */
static struct loop_msg mailbox_closed;
#define LOOP_MAILBOX_CLOSED (&mailbox_closed)

static void mailbox_woken(struct loop_async *a)
{
	loop_mailbox_run(container_of(a, struct loop_mailbox, async));
}

void loop_mailbox_init(struct loop *loop, struct loop_mailbox *mb)
{
	atomic_store(&mb->head, NULL);
	mb->ready = NULL;
	mb->async.cb = mailbox_woken;
	loop_async_add(loop, &mb->async);
}

int loop_mailbox_post(struct loop_mailbox *mb, struct loop_msg *m)
{
	struct loop_msg *old = atomic_load(&mb->head);

	do {
		if (old == LOOP_MAILBOX_CLOSED) {
			if (m->drop)
				m->drop(m);
			return -EPIPE;
		}
		m->next = old;
	} while (!atomic_compare_exchange_weak(&mb->head, &old, m));
	/* Onto an empty stack: nobody has woken the loop for what is there now. */
	if (!old)
		loop_async_send(&mb->async);
	return 0;
}

/* Moves everything posted so far behind `ready`, oldest first; close: for good. */
static void mailbox_take(struct loop_mailbox *mb, bool close)
{
	struct loop_msg *list = atomic_load(&mb->head), *rev = NULL, **tail;

	do {
		if (list == LOOP_MAILBOX_CLOSED || (!list && !close))
			return;
	} while (!atomic_compare_exchange_weak(&mb->head, &list,
					       close ? LOOP_MAILBOX_CLOSED : NULL));
	while (list) {
		struct loop_msg *next = list->next;

		list->next = rev;
		rev = list;
		list = next;
	}
	for (tail = &mb->ready; *tail; tail = &(*tail)->next)
		;
	*tail = rev;
}

int loop_mailbox_run(struct loop_mailbox *mb)
{
	struct loop_msg *m;
	int n = 0;

	/* One take per call: producers posting without pause cannot keep the loop here. */
	mailbox_take(mb, false);
	while ((m = mb->ready)) {
		mb->ready = m->next;
		m->run(m);
		n++;
	}
	return n;
}

void loop_mailbox_close(struct loop_mailbox *mb)
{
	struct loop_msg *m;

	mailbox_take(mb, true);
	while ((m = mb->ready)) {
		mb->ready = m->next;
		if (m->drop)
			m->drop(m);
	}
	loop_async_del(&mb->async);
}

void loop_stop(struct loop *loop)
{
	loop->stop = true;
}

static int timeout_ms(struct loop *loop)
{
	uint64_t next, now = time_now_ns(), d;

	if (loop->heap_len == 0)
		return -1;
	next = loop->heap[0]->deadline_ns;
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
	/*
	 * A callback may arm or disarm any timer (itself included), so look at the
	 * heap's top afresh each time; a fired timer is disarmed before its callback.
	 */
	while (loop->heap_len > 0 && loop->heap[0]->deadline_ns <= loop->now_ns) {
		struct loop_timer *t = loop->heap[0];

		loop_timer_disarm(loop, t);
		t->cb(t);
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
