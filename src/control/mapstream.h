/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_MAPSTREAM_H
#define TRELLIS_CONTROL_MAPSTREAM_H

/*
 * Map streams: what the server sends on them and when. The mapper says what
 * changed; this decides when it goes out, within the memory a connection may
 * hold.
 *
 * A full netmap is O(nodes) bytes (~400 per peer), so a burst of map_requests
 * must not build them all at once: a session that needs one (stream start, a
 * resync) only asks (mapstream_full_request), and the map is built once its
 * output has drained, at most MAPSTREAM_FULL_INFLIGHT_MAX of them sitting in
 * our buffers at once, a few per loop turn. While a full map is wanted, the
 * deltas of that node are dropped: the map supersedes them (the mapper resets
 * the subscriber's pending state when it builds it).
 *
 * Deltas go out MAPSTREAM_FLUSH_DELAY_NS after a change (coalescing bursts,
 * well inside the 1 s budget); a flush that took long pushes the next one
 * back by twice its duration (a bounded share of the CPU). A reader whose
 * backlog of unwritten deltas grows past the backlog cap is resynchronised
 * with a full netmap, so a connection holds at most one full map plus that
 * backlog.
 *
 * A tailnet's access policy is compiled on a worker thread, not on the loop
 * (mapper.h, "Compiling off the loop"): every mapstream_schedule hands the
 * stale tailnets to it; a result comes back to the loop, is applied (or, when
 * the tailnet changed meanwhile, dropped and compiled again) and its deltas
 * go out like any others.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct mapper;
struct metrics_counters;
struct registry;
struct session;

#define MAPSTREAM_FULL_INFLIGHT_MAX 16
#define MAPSTREAM_DELTA_BACKLOG_MAX (1U << 20)

/* A session's part in the scheduling of full netmaps (embedded in struct session). */
struct mapstream_conn {
	bool want;     /* a full netmap of node id is wanted */
	bool queued;   /* waits in the queue for its turn */
	bool inflight; /* one sits in the session's buffers (len bytes) */
	bool close;    /* close the session once it is written (a one-shot map_request) */
	bool zstd;     /* the node offered compressed full netmaps (proto/mapz.h) */
	uint64_t id;
	size_t len;
	struct session *prev, *next;
};

struct mapstream;

/* Sessions of map streams are found through the registry (registry_node.stream). 0 or -ENOMEM. */
int mapstream_new(struct loop *loop, struct mapper *m, struct registry *reg,
		  struct metrics_counters *ctr, struct mapstream **ret);
void mapstream_free(struct mapstream *ms);

/* The node behind ss gets a full netmap once its output has drained (then_close: and no more). */
void mapstream_full_request(struct mapstream *ms, struct session *ss, uint64_t id,
			    bool then_close);
/* The session's output drained. */
void mapstream_drained(struct mapstream *ms, struct session *ss);
/* The session is closing: it leaves the queue. */
void mapstream_forget(struct mapstream *ms, struct session *ss);
/* Something changed in the mapper: deltas go out soon. */
void mapstream_schedule(struct mapstream *ms);

size_t mapstream_waiting(const struct mapstream *ms);
size_t mapstream_buffered(const struct mapstream *ms);
/* Tests: a smaller backlog cap. */
void mapstream_backlog_max_set(struct mapstream *ms, size_t bytes);

#endif
