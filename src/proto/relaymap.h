/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_RELAYMAP_H
#define TRELLIS_PROTO_RELAYMAP_H

/*
 * The relay map as JSON (docs/control-protocol.md, "Relay map"): the same
 * object travels in netmaps and deltas ("relay_map") and is what an admin
 * gives `trellis-control relaymap set FILE`. One checker for both, so a map an
 * admin could set is exactly a map a node accepts; the admin's file is read
 * strictly (unknown fields are errors: a typo must not silently drop a
 * setting), the wire leniently (unknown fields are skipped, for newer servers).
 */

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "proto/netmap.h"

#define RELAYMAP_ERR_MAX 256
/* Largest relay map file or setting text accepted. */
#define RELAYMAP_TEXT_MAX (256U << 10)

/*
 * Checks and converts a relay map object. strict: unknown fields are errors.
 * 0, or -EINVAL with err saying where and what: `regions[0].nodes[1].ipv4: "1.2.3"
 * is not an IPv4 address`.
 */
int relaymap_from_json(json_t *o, bool strict, struct netmap_relay_map *ret, char *err,
		       size_t err_len);
/* Parses JSON text (strictly): parse errors come with line and column. 0, -EINVAL, -EMSGSIZE. */
int relaymap_parse(const char *text, size_t len, struct netmap_relay_map *ret, char *err,
		   size_t err_len);
/*
 * The text of a relay map, compact (what netmaps carry, and what the control
 * server stores), malloc'd and NUL-terminated. 0, -EINVAL (a map the checker
 * would refuse), -ENOMEM.
 */
int relaymap_encode(const struct netmap_relay_map *rm, char **ret, size_t *ret_len);
/* Would the checker accept rm (what the encoder refuses otherwise)? */
bool relaymap_valid(const struct netmap_relay_map *rm);
bool relaymap_equal(const struct netmap_relay_map *a, const struct netmap_relay_map *b);

#endif
