/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_ADMIN_H
#define TRELLIS_CONTROL_ADMIN_H

/*
 * The admin CLI of trellis-control (design.md §12): tailnets, users, nodes,
 * auth keys, API keys and the relay map of the server on --state DIR. It
 * parses and prints; the requests go to the admin API (admin_api.h) of the
 * running server, through its admin socket.
 */

#include <stdbool.h>
#include <stdint.h>

#include "control/model.h"

struct store;

#define ADMIN_STATE_DIR_DEFAULT "/var/lib/trellis-control"

/*
 * Runs `trellis-control [--state DIR] [--offline] <argv...>` (argv[0] is the
 * command): through the running server's admin socket, or with offline on the
 * database while no server runs. Exit status.
 */
int admin_run(const char *state_dir, bool offline, int argc, char **argv);

/*
 * Takes the state directory's serve.lock: one server per directory, and no
 * offline admin while one serves (created with its directory when create).
 * The fd to keep open, -EBUSY when a process holds it, or -errno.
 */
int admin_state_lock(const char *dir, bool create);

/*
 * Creates state_dir (0700) and opens its control.db. Errors are printed as one
 * line. 0 or -errno.
 */
int admin_store_open(const char *state_dir, struct store **ret);

/* "90s", "30m", "12h", "7d" (also "0" and "never" = 0). 0 or -EINVAL. */
int admin_duration_parse(const char *s, int64_t *ret_sec);

#endif
