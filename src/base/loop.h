/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_LOOP_H
#define TRELLIS_BASE_LOOP_H

/*
 * A small epoll event loop for one thread (the control thread of trellisd, the
 * server's thread of trellis-control): fd callbacks, one-shot timers,
 * SIGTERM/SIGINT through a signalfd, async wake sources and mailboxes that
 * other threads use to hand work to the loop. `now` is read once per
 * iteration and cached (loop_now_ns), so every callback of one iteration sees
 * the same time.
 *
 * Only loop_async_send and loop_mailbox_post may be called from another thread.
 */

#include <stdatomic.h>
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
/* Arms t at an engine's next deadline, or disarms it when that is TIME_NEVER. */
void loop_timer_set(struct loop *loop, struct loop_timer *t, uint64_t deadline_ns);

/*
 * Blocks SIGTERM and SIGINT for the calling thread (call before creating other
 * threads so they inherit the mask) and delivers them to cb through a signalfd.
 */
int loop_signals_catch(struct loop *loop, void (*cb)(struct loop *loop, int signo));
/*
 * An async wake source (libuv's uv_async_t): any thread, or a signal handler,
 * calls loop_async_send, and the loop thread calls cb soon after. Sends that
 * arrive before cb runs coalesce into one call; a send made while cb runs
 * brings another call, so a send is never lost. One eventfd serves all the
 * sources of a loop: a send costs an atomic exchange and at most one write(2),
 * and a wake-up costs one read(2) and a look at each source's flag.
 */
struct loop_async {
	void (*cb)(struct loop_async *a);
	/* The loop's. */
	struct loop *loop;
	struct loop_async *next, *prev;
	atomic_bool pending;
};

/* Loop thread (or before loop_run). cb set; a stays valid until loop_async_del. */
void loop_async_add(struct loop *loop, struct loop_async *a);
/* Any thread, async-signal safe. */
void loop_async_send(struct loop_async *a);
/*
 * Loop thread; safe inside any callback, a's own included. A pending send is
 * discarded. Accepts a source never added. The owner stops the threads that
 * send to a before freeing a (the loop cannot know about them).
 */
void loop_async_del(struct loop_async *a);

/*
 * A mailbox: many threads post messages, the loop thread runs them, in the
 * order they were posted (so each producer's messages run in its order).
 * Posting never blocks and never allocates (the message is the caller's,
 * usually embedded in a larger struct), and is async-signal safe.
 *
 * Ownership: a posted message belongs to the mailbox until exactly one of its
 * two functions is called: run (loop thread) or, once the mailbox is closed,
 * drop (instead of run; on the thread that closes the mailbox or posts to a
 * closed one). Both usually free the message. A message posted after the loop
 * stopped but before the owner closes the mailbox waits and is dropped at
 * close; one posted after close is dropped at once. So nothing leaks and
 * nothing runs on an owner that has closed its mailbox — the owner closes it
 * before it frees what run would touch, and joins its producers before it
 * frees the mailbox itself.
 */
struct loop_msg {
	struct loop_msg *next;
	void (*run)(struct loop_msg *m);
	void (*drop)(struct loop_msg *m); /* NULL: nothing to do */
};

struct loop_mailbox {
	/* The loop's. */
	struct loop_async async;
	_Atomic(struct loop_msg *) head; /* posted, newest first; a sentinel once closed */
	struct loop_msg *ready;          /* taken from head, oldest first, not yet run */
};

/* Loop thread (or before loop_run). */
void loop_mailbox_init(struct loop *loop, struct loop_mailbox *mb);
/* Any thread, async-signal safe. 0, or -EPIPE when the mailbox is closed (m was dropped). */
int loop_mailbox_post(struct loop_mailbox *mb, struct loop_msg *m);
/*
 * Loop thread: runs the messages posted so far now (the loop does this by
 * itself; owners call it to finish pending work before they tear down).
 * Returns how many ran. A message's run may call it again.
 */
int loop_mailbox_run(struct loop_mailbox *mb);
/* Loop thread: drops what is queued and refuses (drops) later posts. Idempotent. */
void loop_mailbox_close(struct loop_mailbox *mb);

/* Runs until loop_stop. 0 or -errno on a fatal epoll error. */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

#endif
