/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/relays.h"
#include "control/store.h"
#include "proto/relaymap.h"

void relays_default(struct netmap_relay_map *ret)
{
	struct netmap_relay_region *g = &ret->regions[0];

	memset(ret, 0, sizeof(*ret));
	ret->n_regions = 1;
	g->id = RELAYS_DEFAULT_REGION;
	snprintf(g->code, sizeof(g->code), "%s", RELAYS_DEFAULT_CODE);
	snprintf(g->name, sizeof(g->name), "Embedded relay");
	g->n_nodes = 1;
	snprintf(g->nodes[0].name, sizeof(g->nodes[0].name), "control");
	g->nodes[0].stun_port = NETMAP_STUN_PORT_DEFAULT;
}

int relays_load(struct store *s, struct netmap_relay_map *ret, char *err, size_t err_len)
{
	char *text = malloc(STORE_SETTING_VALUE_MAX);
	int r, n;

	relays_default(ret);
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
		relays_default(ret);
out:
	free(text);
	return r;
}
