// SPDX-License-Identifier: MIT
#include <errno.h>

#include "base/util.h"
#include "control/changes.h"
#include "control/registry.h"
#include "control/store.h"

/*
 * While the server's own writes of a node are in flight, a change of it from the feed waits
 * for them: the row read now lacks what they write, and would take their change out of memory
 * (a new node key, an expiry) while they still write it to the store. Read once they are
 * durable, the row has both, since each writer writes only the columns it changed (store.h).
 */
static void node_apply(struct changes *c, uint64_t id, int64_t now)
{
	struct registry_node *e = registry_node_get(c->reg, id), *rsv;
	struct control_node rec;
	int r;

	if (e && e->writes) {
		registry_node_feed_hold(c->reg, e);
		return;
	}
	r = store_node_get(c->store, id, &rec);
	if (r == -ENOENT) {
		c->hooks->node_deleted(c->ctx, id);
		return;
	}
	if (r < 0)
		return;
	/* A node our insert wrote, whose completion has not run: its reservation waits. */
	rsv = e ? NULL : registry_node_in_tailnet(c->reg, rec.tailnet_id, rec.machine_key);
	if (rsv && !rsv->id && rsv->writes) {
		registry_node_feed_hold(c->reg, rsv);
		return;
	}
	registry_node_sync(c->reg, &rec, now);
	c->hooks->node_changed(c->ctx, id);
}

static void apply(struct changes *c, const struct store_change *ch, int64_t now)
{
	switch (ch->kind) {
	case STORE_CHANGE_TAILNET: {
		struct control_tailnet t;

		if (store_tailnet_get(c->store, ch->id, &t) == 0 &&
		    registry_tailnet_put(c->reg, &t) == 0 && c->hooks->tailnet_changed)
			c->hooks->tailnet_changed(c->ctx, ch->id);
		break;
	}
	case STORE_CHANGE_USER: {
		struct control_user u;

		if (store_user_get(c->store, ch->id, &u) == 0)
			registry_user_put(c->reg, &u);
		break;
	}
	case STORE_CHANGE_NODE:
	case STORE_CHANGE_NODE_LIVE:
	case STORE_CHANGE_NODE_TOUCH:
		node_apply(c, ch->id, now);
		break;
	case STORE_CHANGE_AUTHKEY: {
		struct control_authkey a;

		if (store_authkey_get(c->store, ch->id, &a) == 0)
			registry_authkey_put(c->reg, &a);
		break;
	}
	case STORE_CHANGE_SETTING:
		if (c->hooks->settings_changed)
			c->hooks->settings_changed(c->ctx);
		break;
	case STORE_CHANGE_POLICY:
		if (c->hooks->policy_changed)
			c->hooks->policy_changed(c->ctx, ch->id);
		break;
	case STORE_CHANGE_CA:
	case STORE_CHANGE_MCERT:
		if (c->hooks->certs_changed)
			c->hooks->certs_changed(c->ctx);
		if (ch->kind == STORE_CHANGE_MCERT && c->hooks->mcert_changed)
			c->hooks->mcert_changed(c->ctx, ch->id);
		break;
	default:
		break;
	}
}

void changes_write_begin(struct changes *c, struct registry_node *e)
{
	(void)c;
	e->writes++;
}

void changes_write_end(struct changes *c, uint64_t id, int64_t now)
{
	struct registry_node *e = id ? registry_node_get(c->reg, id) : NULL;

	if (!e || !e->writes || --e->writes)
		return;
	if (registry_node_feed_release(c->reg, e))
		node_apply(c, id, now);
}

void changes_apply(struct changes *c, enum store_change_kind kind, uint64_t id, int64_t now)
{
	struct store_change ch = { .kind = kind, .id = id };

	apply(c, &ch, now);
}

void changes_drain(struct changes *c, int64_t now)
{
	struct store_change ch[256];
	int n;

	do {
		n = store_changes_poll(c->store, &c->cursor, ch, ARRAY_SIZE(ch));
		for (int i = 0; i < n; i++)
			apply(c, &ch[i], now);
	} while (n == (int)ARRAY_SIZE(ch));
}
