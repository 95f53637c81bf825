/* SPDX-License-Identifier: MIT */
#include <malloc.h>

#include "base/time.h"
#include "base/util.h"
#include "node/heaptrim.h"

static void trim_heap(void)
{
	malloc_trim(0);
}

static void fire(struct loop_timer *t)
{
	struct heap_trim *h = container_of(t, struct heap_trim, timer);

	h->trim();
	h->trims++;
}

void heap_trim_init(struct heap_trim *h, struct loop *loop, uint64_t quiet_ns)
{
	*h = (struct heap_trim){
	    .loop = loop,
	    .timer = {.cb = fire, .deadline_ns = TIME_NEVER},
	    .quiet_ns = quiet_ns,
	    .trim = trim_heap,
	};
}

void heap_trim_kick(struct heap_trim *h, uint64_t now_ns)
{
	loop_timer_arm(h->loop, &h->timer, now_ns + h->quiet_ns);
}

void heap_trim_stop(struct heap_trim *h)
{
	if (h->timer.armed)
		loop_timer_disarm(h->loop, &h->timer);
}
