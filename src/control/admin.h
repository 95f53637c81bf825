/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_ADMIN_H
#define TRELLIS_CONTROL_ADMIN_H

/*
 * The admin CLI of trellis-control (design.md §12): tailnets, users, nodes and
 * auth keys on the same --state DIR as a running `serve`. It parses and
 * prints; the operations are admin_op.h's, and their durable writes reach
 * the server through the store's change feed (store.h).
 */

#include <stdint.h>

#include "control/model.h"

struct store;

#define ADMIN_STATE_DIR_DEFAULT "/var/lib/trellis-control"

/* Runs `trellis-control [--state DIR] <argv...>` (argv[0] is the command). Exit status. */
int admin_run(const char *state_dir, int argc, char **argv);

/*
 * Creates state_dir (0700) and opens its control.db. Errors are printed as one
 * line. 0 or -errno.
 */
int admin_store_open(const char *state_dir, struct store **ret);

/* "90s", "30m", "12h", "7d" (also "0" and "never" = 0). 0 or -EINVAL. */
int admin_duration_parse(const char *s, int64_t *ret_sec);

#endif
