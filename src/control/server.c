// SPDX-License-Identifier: MIT
/*
 * Placeholder so that trellis-control links while the server is being written:
 * the server engineer replaces this whole file.
 */
#include <errno.h>

#include "control/server.h"

int control_serve(const struct control_serve_opts *opts)
{
	(void)opts;
	return -ENOSYS;
}
