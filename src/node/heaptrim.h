/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_HEAPTRIM_H
#define TRELLIS_NODE_HEAPTRIM_H

/*
 * Giving the heap back after a burst. Control-plane work comes in bursts (a netmap parsed,
 * applied and saved; a status answered): what it freed stays in the heap, resident, below
 * blocks still in use, where free() cannot give it back (it trims only the top). On an
 * idle node with 100 peers that was a third of the heap, 0.57 MiB (issue 14). So a quiet
 * period after the last piece of work (heap_trim_kick), the trimmer calls malloc_trim:
 * once per burst, however long the burst, and never on an idle node (nothing armed once
 * it has trimmed). Nothing on the packet path allocates, so data traffic needs no trim.
 */

#include <stdint.h>

#include "base/loop.h"

struct heap_trim {
	struct loop *loop;
	struct loop_timer timer;
	uint64_t quiet_ns;
	void (*trim)(void); /* malloc_trim(0); a test counts instead */
	uint64_t trims;	    /* trims done */
};

/* A trimmer on `loop` that waits quiet_ns after the last kick. */
void heap_trim_init(struct heap_trim *h, struct loop *loop, uint64_t quiet_ns);
/* Loop thread: work happened at now_ns; the trim moves to now_ns + quiet_ns. */
void heap_trim_kick(struct heap_trim *h, uint64_t now_ns);
/* Loop thread: no trim from now on (teardown). */
void heap_trim_stop(struct heap_trim *h);

#endif
