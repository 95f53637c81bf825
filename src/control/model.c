/* SPDX-License-Identifier: MIT */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "base/util.h"
#include "control/model.h"
#include "control/store.h"

bool control_account_totp_pending(const struct control_account *a)
{
	/* A code accepted sets the step it matched, which is never 0 after 1970. */
	return a->totp && a->totp_last_step == 0;
}

bool control_node_visible(const struct control_node *n, int64_t now)
{
	if (!n->approved)
		return false;
	/* Logout and `nodes expire` set key_expiry to now: covered here too. */
	if (n->expiry_disabled || n->key_expiry == 0)
		return true;
	return n->key_expiry > now;
}

void control_tailnet_flow_log(const struct control_tailnet *t, struct netmap_flow_log *ret)
{
	int64_t ms = t->flow_log_interval_ms;

	ret->set = true;
	ret->enabled = !t->flow_log_off;
	/* The admin operation checks the bounds; a row written otherwise must not break maps. */
	if (ms <= 0)
		ms = NETMAP_FLOW_LOG_INTERVAL_DEFAULT_MS;
	ret->interval_ms = (uint32_t)MIN(MAX(ms, (int64_t)NETMAP_FLOW_LOG_INTERVAL_MIN_MS),
					 (int64_t)NETMAP_FLOW_LOG_INTERVAL_MAX_MS);
}

static void prefix_host(struct netmap_prefix *p, int family, const uint8_t *addr)
{
	memset(p, 0, sizeof(*p));
	p->family = (uint8_t)family;
	p->len = family == AF_INET ? 32 : 128;
	memcpy(p->addr, addr, family == AF_INET ? 4 : 16);
}

void control_node_render(const struct control_node *r, const char *user, struct netmap_node *ret)
{
	uint8_t v6[16];

	memset(ret, 0, sizeof(*ret));
	ret->id = r->id;
	snprintf(ret->name, sizeof(ret->name), "%s", r->name);
	memcpy(ret->node_key, r->node_key, NETMAP_KEY_LEN);
	memcpy(ret->machine_key, r->machine_key, NETMAP_KEY_LEN);
	netmap_ipv6_from_ipv4(v6, r->ipv4);
	prefix_host(&ret->addresses[0], AF_INET, r->ipv4);
	prefix_host(&ret->addresses[1], AF_INET6, v6);
	ret->n_addresses = 2;
	/* Subnet routes will add to allowed_ips; today a node routes only itself. */
	ret->allowed_ips[0] = ret->addresses[0];
	ret->allowed_ips[1] = ret->addresses[1];
	ret->n_allowed_ips = 2;
	ret->n_endpoints = r->n_endpoints < NETMAP_MAX_ENDPOINTS ? r->n_endpoints
								   : NETMAP_MAX_ENDPOINTS;
	memcpy(ret->endpoints, r->endpoints, ret->n_endpoints * sizeof(r->endpoints[0]));
	ret->online = r->online;
	ret->home_region = r->home_region;
	ret->has_disco_key = r->has_disco_key;
	memcpy(ret->disco_key, r->disco_key, NETMAP_KEY_LEN);
	ret->mapping_varies = r->mapping_varies;
	ret->last_seen = r->last_seen;
	/* An opted-out node's key does not expire: peers see 0, as the protocol defines. */
	ret->key_expiry = r->expiry_disabled ? 0 : r->key_expiry;
	snprintf(ret->os, sizeof(ret->os), "%s", r->os);
	if (user)
		snprintf(ret->user, sizeof(ret->user), "%s", user);
	ret->n_tags = r->n_tags < NETMAP_MAX_TAGS ? r->n_tags : NETMAP_MAX_TAGS;
	for (unsigned i = 0; i < ret->n_tags; i++)
		snprintf(ret->tags[i], sizeof(ret->tags[i]), "%s", r->tags[i]);
}

void control_node_policy(const struct control_node *r, const char *user, struct policy_node *ret)
{
	uint8_t v6[16];

	memset(ret, 0, sizeof(*ret));
	ret->id = r->id;
	snprintf(ret->name, sizeof(ret->name), "%s", r->name);
	if (user)
		snprintf(ret->user, sizeof(ret->user), "%s", user);
	ret->n_tags = r->n_tags < NETMAP_MAX_TAGS ? r->n_tags : NETMAP_MAX_TAGS;
	memcpy(ret->tags, r->tags, ret->n_tags * sizeof(ret->tags[0]));
	netmap_ipv6_from_ipv4(v6, r->ipv4);
	prefix_host(&ret->addrs[0], AF_INET, r->ipv4);
	prefix_host(&ret->addrs[1], AF_INET6, v6);
	ret->n_addrs = 2;
}

/*
 * Here, not in store.c: the I/O-free registration (register.c) uses it, and the fuzzers
 * build that without the store.
 */
uint32_t store_node_diff(const struct control_node *a, const struct control_node *b)
{
	uint32_t f = 0;

	if (a->tailnet_id != b->tailnet_id)
		f |= STORE_NODE_TAILNET;
	if (a->user_id != b->user_id)
		f |= STORE_NODE_USER;
	if (strcmp(a->name, b->name) != 0)
		f |= STORE_NODE_NAME;
	if (strcmp(a->hostname, b->hostname) != 0)
		f |= STORE_NODE_HOSTNAME;
	if (strcmp(a->os, b->os) != 0)
		f |= STORE_NODE_OS;
	if (memcmp(a->machine_key, b->machine_key, sizeof(a->machine_key)) != 0)
		f |= STORE_NODE_MACHINE_KEY;
	if (memcmp(a->node_key, b->node_key, sizeof(a->node_key)) != 0)
		f |= STORE_NODE_NODE_KEY;
	if (memcmp(a->ipv4, b->ipv4, sizeof(a->ipv4)) != 0)
		f |= STORE_NODE_IPV4;
	/* Bytewise: a difference in padding only costs a write of the same text. */
	if (a->n_endpoints != b->n_endpoints ||
	    memcmp(a->endpoints, b->endpoints, a->n_endpoints * sizeof(a->endpoints[0])) != 0)
		f |= STORE_NODE_ENDPOINTS;
	if (a->n_tags != b->n_tags || memcmp(a->tags, b->tags, a->n_tags * sizeof(a->tags[0])) != 0)
		f |= STORE_NODE_TAGS;
	if (a->ephemeral != b->ephemeral)
		f |= STORE_NODE_EPHEMERAL;
	if (a->approved != b->approved)
		f |= STORE_NODE_APPROVED;
	if (a->expiry_disabled != b->expiry_disabled)
		f |= STORE_NODE_EXPIRY_DISABLED;
	if (a->key_expiry != b->key_expiry)
		f |= STORE_NODE_KEY_EXPIRY;
	if (a->created != b->created)
		f |= STORE_NODE_CREATED;
	if (a->last_seen != b->last_seen)
		f |= STORE_NODE_LAST_SEEN;
	if (a->has_audit_key != b->has_audit_key ||
	    (a->has_audit_key && memcmp(a->audit_key, b->audit_key, sizeof(a->audit_key)) != 0))
		f |= STORE_NODE_AUDIT_KEY;
	if (a->has_disco_key != b->has_disco_key ||
	    (a->has_disco_key && memcmp(a->disco_key, b->disco_key, sizeof(a->disco_key)) != 0) ||
	    a->home_region != b->home_region || a->mapping_varies != b->mapping_varies)
		f |= STORE_NODE_DISCO;
	return f;
}
