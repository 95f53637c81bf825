/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_RELAYS_H
#define TRELLIS_CONTROL_RELAYS_H

/*
 * The relay map in force (docs/control-protocol.md, "Relay map"): the admin's,
 * stored as the setting RELAYS_SETTING (compact JSON, `relaymap set`), or the
 * default, which is the control server's own embedded relay. The default names
 * no address: its one relay is "the control server", which every node reaches
 * at its login URL already (also behind a reverse proxy or a NAT, where the
 * listen address would be wrong), and STUN goes to that host.
 */

#include <stddef.h>

#include "proto/netmap.h"

struct store;

#define RELAYS_SETTING "relaymap"
#define RELAYS_DEFAULT_REGION 1
#define RELAYS_DEFAULT_CODE "default"

void relays_default(struct netmap_relay_map *ret);
/*
 * The map in force per the store. 0 with *ret set (the default when nothing
 * or an empty value is stored); -EINVAL when the stored text does not parse
 * (*ret is the default then, err says why), -errno from the store.
 */
int relays_load(struct store *s, struct netmap_relay_map *ret, char *err, size_t err_len);

#endif
