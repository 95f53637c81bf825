/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_UAPI_H
#define TRELLIS_WG_UAPI_H

/*
 * The cross-platform userspace configuration protocol (wireguard.com/xplatform),
 * as spoken by wg(8) over /var/run/wireguard/IFACE.sock. Text in, structs out
 * and back; no I/O.
 */

#include <stddef.h>

#include "wg/config.h"

/* Hard caps: everything a client can make us allocate is bounded. */
#define UAPI_MAX_REQUEST (1U << 24) /* bytes of one set request */
#define UAPI_MAX_PEERS (1U << 16)
#define UAPI_MAX_ALLOWEDIPS (1U << 20) /* over all peers of one request */

/*
 * Parses the body of a "set=1" request: the lines after "set=1\n", up to but not
 * including the empty line that ends it. Returns 0 and a config, or a negative
 * errno as wireguard-go answers it (-EPROTO for a line without '=', -EINVAL for
 * everything else malformed: bad values, unknown keys, keys in the wrong section,
 * a protocol_version other than 1; -ENOMEM at the caps above). On error, if
 * err_line is not NULL, it receives the 1-based line number at fault (0 when the
 * request as a whole is too large). *ret is set only on success.
 */
int wg_uapi_set_parse(const char *text, size_t len, struct wg_device_cfg **ret, unsigned *err_line);

/*
 * Formats the body of a "get=1" reply (every key=value line, without the final
 * "errno=0\n\n"). Returns the length, or -ENOMEM; *ret is malloc'd, NUL terminated.
 */
int wg_uapi_get_format(const struct wg_device_info *info, char **ret);

#endif
