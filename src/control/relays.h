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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/netmap.h"

struct store;

#define RELAYS_SETTING "relaymap"
#define RELAYS_DEFAULT_REGION 1
#define RELAYS_DEFAULT_CODE "default"

/*
 * What the server itself serves, which the default map describes: nothing at
 * all without the embedded relay (`serve --no-relay`: no region may point at a
 * relay that is not there), else the relay with its key (nodes pin it, so a
 * man in the middle cannot pose as it) and the STUN port actually served (0:
 * none). NULL stands for `serve` without options (the admin CLI's view: relay
 * on, STUN on 3478, key not known).
 */
struct relays_self {
	bool relay;
	uint16_t stun_port;
	const uint8_t *key; /* the embedded relay's public key; NULL: not pinned */
};

void relays_default(const struct relays_self *self, struct netmap_relay_map *ret);
/*
 * The map in force per the store. 0 with *ret set (the default when nothing
 * or an empty value is stored); -EINVAL when the stored text does not parse
 * (*ret is the default then, err says why), -errno from the store. Nodes of an
 * admin's map that stand for the control server and pin no key get the
 * embedded relay's (self->key).
 */
int relays_load(struct store *s, const struct relays_self *self, struct netmap_relay_map *ret,
		char *err, size_t err_len);

#endif
