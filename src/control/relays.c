/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/relays.h"
#include "control/store.h"
#include "proto/relaymap.h"

void relays_default(const struct relays_self *self, struct netmap_relay_map *ret)
{
	struct netmap_relay_region *g = &ret->regions[0];

	memset(ret, 0, sizeof(*ret));
	if (self && !self->relay)
		return;
	ret->n_regions = 1;
	g->id = RELAYS_DEFAULT_REGION;
	snprintf(g->code, sizeof(g->code), "%s", RELAYS_DEFAULT_CODE);
	snprintf(g->name, sizeof(g->name), "Embedded relay");
	g->n_nodes = 1;
	snprintf(g->nodes[0].name, sizeof(g->nodes[0].name), "control");
	g->nodes[0].stun_port = self ? self->stun_port : NETMAP_STUN_PORT_DEFAULT;
	if (self && self->key) {
		g->nodes[0].has_key = true;
		memcpy(g->nodes[0].key, self->key, NETMAP_KEY_LEN);
	}
}

/* Nodes without an address stand for the control server: pin its relay's key. */
static void self_pin(const struct relays_self *self, struct netmap_relay_map *rm)
{
	if (!self || !self->key)
		return;
	for (unsigned i = 0; i < rm->n_regions; i++) {
		for (unsigned j = 0; j < rm->regions[i].n_nodes; j++) {
			struct netmap_relay_node *n = &rm->regions[i].nodes[j];

			if (n->host[0] || n->has_ipv4 || n->has_ipv6 || n->relay_port || n->has_key)
				continue;
			n->has_key = true;
			memcpy(n->key, self->key, NETMAP_KEY_LEN);
		}
	}
}

int relays_load(struct store *s, const struct relays_self *self, struct netmap_relay_map *ret,
		char *err, size_t err_len)
{
	char *text = malloc(STORE_SETTING_VALUE_MAX);
	int r, n;

	relays_default(self, ret);
	if (!text)
		return -ENOMEM;
	n = store_setting_get(s, RELAYS_SETTING, text, STORE_SETTING_VALUE_MAX);
	if (n == -ENOENT || n == 0) {
		r = 0;
		goto out;
	}
	if (n < 0) {
		r = n;
		snprintf(err, err_len, "cannot read the relay map: %s", strerror(-n));
		goto out;
	}
	r = relaymap_parse(text, (size_t)n, ret, err, err_len);
	if (r < 0)
		relays_default(self, ret);
	else
		self_pin(self, ret);
out:
	free(text);
	return r;
}
