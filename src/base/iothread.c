/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/iothread.h"
#include "base/log.h"

int iothread_init(struct iothread *t)
{
	t->running = false;
	atomic_init(&t->stop, false);
	t->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	return t->stop_fd < 0 ? -errno : 0;
}

void iothread_destroy(struct iothread *t)
{
	iothread_stop(t);
	if (t->stop_fd >= 0)
		close(t->stop_fd);
	t->stop_fd = -1;
}

int iothread_start(struct iothread *t, const char *name, void *(*fn)(void *), void *arg)
{
	uint64_t v;
	int err;

	/* Reset a previous stop request (the eventfd counter and the flag). */
	while (read(t->stop_fd, &v, sizeof(v)) == sizeof(v))
		;
	atomic_store(&t->stop, false);
	err = pthread_create(&t->thread, NULL, fn, arg);
	if (err)
		return -err;
	/* A name is only a label: a refusal (too long) leaves the process name. */
	pthread_setname_np(t->thread, name);
	t->running = true;
	return 0;
}

void iothread_stop(struct iothread *t)
{
	uint64_t one = 1;

	if (!t->running)
		return;
	atomic_store(&t->stop, true);
	if (write(t->stop_fd, &one, sizeof(one)) < 0)
		log_warn("reader stop: %s", strerror(errno));
	pthread_join(t->thread, NULL);
	t->running = false;
}

bool iothread_sleep(struct iothread *t, int ms)
{
	struct pollfd pfd = {.fd = t->stop_fd, .events = POLLIN};

	poll(&pfd, 1, ms);
	return atomic_load(&t->stop);
}
