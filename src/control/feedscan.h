/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_FEEDSCAN_H
#define TRELLIS_CONTROL_FEEDSCAN_H

/*
 * What the change feed says happened since a position, for nodes that resume their map
 * stream from it (docs/control-protocol.md, "Resuming a map stream"). After a restart every
 * node offers the netmap it held, and nearly all hold the same version: the rows since it
 * (the last run's stop, every reconnect's own write) are read and sorted once per position
 * and then extended by the rows written since the last look, instead of read again for each
 * node (10,000 nodes each reading 10,000 to 20,000 rows was minutes of SQLite, and past
 * 16,384 rows every later node got a full map).
 *
 * What it keeps per position is what every node of the tailnet would read alike: the nodes
 * a delta must name (records, or live state only), and whether a setting, a user, or a
 * tailnet's record or policy was written. The caller decides per node (its own record under
 * a policy, its tailnet). Left out, and not counted against the cap: nodes written as they
 * were, and live state written in (skip_begin, skip_end] (the last run's stop: those nodes
 * are presumed online).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/mapper.h"
#include "control/store.h"

struct feedscan;

struct feedscan_since {
	const struct mapper_missed *missed; /* in feed order; valid until the next call */
	size_t n_missed;
	const uint64_t *tailnets; /* tailnets whose record or policy was written */
	size_t n_tailnets;
	bool relay;    /* a setting was written */
	bool user;     /* a user was written: a rename changes records the feed does not name */
	bool overflow; /* more than the cap of nodes to name */
};

/* Accepts the row at the position a node offers (its digest), before anything is read. */
typedef bool (*feedscan_row_ok_fn)(void *ctx, const struct store_change *row);

/* cap: the most nodes a delta may name from the feed. NULL on failure. */
struct feedscan *feedscan_new(struct store *st, size_t cap, uint64_t skip_begin, uint64_t skip_end);
void feedscan_free(struct feedscan *fs);

/*
 * The rows after `from`, up to the newest in the store, once row_ok accepted the row at
 * `from`. 0; -ENOENT: the store no longer holds (or never held) a row at `from`; -EACCES:
 * row_ok refused it; -EIO, -ENOMEM.
 */
int feedscan_get(struct feedscan *fs, uint64_t from, feedscan_row_ok_fn row_ok, void *ctx,
		 struct feedscan_since *ret);

/* Rows read from the store since feedscan_new: what resuming has cost. */
uint64_t feedscan_rows_read(const struct feedscan *fs);

#endif
