/* SPDX-License-Identifier: MIT */
/*
 * Netmap -> WireGuard peers and interface state.
 *
 * State: `applied`, the peers last given to the device, sorted by node id, and
 * the interface steps done so far (self's addresses, routes, MTU, link up). A
 * new netmap is filtered (no zero keys, no self, the first of duplicate ids or
 * keys wins), sorted by id and merged against `applied`; the merge yields one
 * wg_device_cfg without replace_peers, so peers not in it keep their sessions.
 * Only after the device accepted it does the new list become `applied`: a
 * failed apply changes nothing and the next netmap is diffed against the same
 * base. A changed node key is a different WireGuard peer: remove old, add new,
 * removals first so a key that moved between ids is re-created cleanly.
 *
 * Endpoints: the netmap's first endpoint is set when it differs from the one
 * applied; a peer whose netmap has none keeps whatever the device learned by
 * roaming. Persistent keepalive stays off (path discovery will decide later).
 *
 * Handles: with a magicsock, each peer gets a handle (net/magicsock.h) for as long
 * as it is applied with the same key, and the device's endpoint is that handle; the
 * netmap's endpoint becomes the handle's path. Where the code above sets an endpoint,
 * it sets the handle on the device and the path on the magicsock: a new peer's handle
 * gets its path before the device knows the handle (so the first handshake finds
 * it), a kept handle after the device accepted the change (a failed apply leaves the
 * old path). Handles of removed peers are freed after the apply, those made for a
 * failed one at once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"
#include "crypto/crypto.h"
#include "net/magicsock.h"
#include "node/netmap_apply.h"
#include "os/netlink.h"

struct applied_peer {
	uint64_t id;
	uint8_t key[WG_KEY_LEN];
	unsigned n_allowed;
	struct wg_allowedip allowed[NETMAP_MAX_ALLOWED_IPS];
	struct endpoint ep; /* AF_UNSPEC: none given */
	struct endpoint handle; /* AF_UNSPEC: no magicsock */
	uint32_t region;	/* the peer's home relay region (0: none reported) */
	/* During one apply: the handle was made for it / its path (or region) must follow. */
	bool handle_new, path_changed, region_changed;
};

struct netmap_apply {
	struct wg_device *dev;
	struct magicsock *ms;
	char ifname[64];
	unsigned mtu;
	const struct netmap_apply_os *os;
	struct applied_peer *applied;
	unsigned n_applied;
	/* Interface state done so far. */
	unsigned n_addrs;
	struct netmap_prefix addrs[NETMAP_MAX_ADDRESSES];
	bool routes_done, mtu_done, link_done;
};

static const uint8_t route4[4] = {100, 64, 0, 0};
static const uint8_t route6[16] = {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11};

static int os_link_set_up(void *ctx, const char *ifname, bool up)
{
	(void)ctx;
	return nl_link_set_up(ifname, up);
}

static int os_link_set_mtu(void *ctx, const char *ifname, unsigned mtu)
{
	(void)ctx;
	return nl_link_set_mtu(ifname, mtu);
}

static int os_addr_add(void *ctx, const char *ifname, int family, const void *addr, unsigned len)
{
	(void)ctx;
	return nl_addr_add(ifname, family, addr, len);
}

static int os_addr_del(void *ctx, const char *ifname, int family, const void *addr, unsigned len)
{
	(void)ctx;
	return nl_addr_del(ifname, family, addr, len);
}

static int os_route_add(void *ctx, const char *ifname, int family, const void *dst, unsigned len)
{
	(void)ctx;
	return nl_route_add(ifname, family, dst, len);
}

static int os_route_del(void *ctx, const char *ifname, int family, const void *dst, unsigned len)
{
	(void)ctx;
	return nl_route_del(ifname, family, dst, len);
}

const struct netmap_apply_os netmap_apply_os_netlink = {
	.link_set_up = os_link_set_up,
	.link_set_mtu = os_link_set_mtu,
	.addr_add = os_addr_add,
	.addr_del = os_addr_del,
	.route_add = os_route_add,
	.route_del = os_route_del,
};

int netmap_apply_new(struct wg_device *dev, struct magicsock *ms, const char *ifname, unsigned mtu,
		     const struct netmap_apply_os *os, struct netmap_apply **ret)
{
	struct netmap_apply *na;

	if (!dev || (os && (!ifname || strlen(ifname) >= sizeof(na->ifname))))
		return -EINVAL;
	na = calloc(1, sizeof(*na));
	if (!na)
		return -ENOMEM;
	na->dev = dev;
	na->ms = ms;
	if (ifname)
		strcpy(na->ifname, ifname);
	na->mtu = mtu;
	na->os = os;
	*ret = na;
	return 0;
}

void netmap_apply_free(struct netmap_apply *na)
{
	if (!na)
		return;
	free(na->applied);
	free(na);
}

int netmap_apply_peer_handle(const struct netmap_apply *na, const uint8_t key[WG_KEY_LEN],
			     struct endpoint *ret)
{
	for (unsigned i = 0; i < na->n_applied; i++) {
		if (!memcmp(na->applied[i].key, key, WG_KEY_LEN) &&
		    endpoint_is_set(&na->applied[i].handle)) {
			*ret = na->applied[i].handle;
			return 0;
		}
	}
	return -ENOENT;
}

unsigned netmap_apply_peer_count(const struct netmap_apply *na)
{
	return na->n_applied;
}

int netmap_apply_set_private_key(struct netmap_apply *na, const uint8_t key[WG_KEY_LEN],
				 uint64_t now_ns)
{
	struct wg_device_cfg cfg = {.has_private_key = true};
	int ret;

	memcpy(cfg.private_key, key, WG_KEY_LEN);
	ret = wg_device_apply(na->dev, &cfg, now_ns);
	crypto_wipe(cfg.private_key, sizeof(cfg.private_key));
	return ret;
}

static bool key_is_zero(const uint8_t *k)
{
	uint8_t acc = 0;
	unsigned i;

	for (i = 0; i < WG_KEY_LEN; i++)
		acc |= k[i];
	return !acc;
}

/* The prefix with its host bits cleared; false if it is not a valid prefix. */
static bool prefix_to_allowedip(struct wg_allowedip *ret, const struct netmap_prefix *p)
{
	unsigned max = p->family == AF_INET ? 32 : p->family == AF_INET6 ? 128 : 0;
	unsigned i;

	if (!max || p->len > max)
		return false;
	memset(ret, 0, sizeof(*ret));
	ret->family = p->family;
	ret->cidr = p->len;
	for (i = 0; i < max / 8; i++) {
		unsigned bits = p->len > i * 8 ? p->len - i * 8 : 0;

		ret->addr[i] = bits >= 8 ? p->addr[i] : (uint8_t)(p->addr[i] & (0xff00 >> bits));
	}
	return true;
}

static void applied_from_node(struct applied_peer *ap, const struct netmap_node *n)
{
	unsigned i;

	memset(ap, 0, sizeof(*ap));
	ap->id = n->id;
	memcpy(ap->key, n->node_key, WG_KEY_LEN);
	for (i = 0; i < n->n_allowed_ips && i < NETMAP_MAX_ALLOWED_IPS; i++) {
		/* Only the peer's own tailnet addresses: no subnet routes or exit nodes yet. */
		if (!netmap_prefix_is_tailnet_host(&n->allowed_ips[i])) {
			log_ratelimited(LOG_LEVEL_WARN, "netmap: peer %" PRIu64
				       ": ignoring allowed IP outside the tailnet", n->id);
			continue;
		}
		if (prefix_to_allowedip(&ap->allowed[ap->n_allowed], &n->allowed_ips[i]))
			ap->n_allowed++;
	}
	if (n->n_endpoints && endpoint_is_set(&n->endpoints[0]))
		ap->ep = n->endpoints[0];
	ap->region = n->home_region;
}

static int cmp_id(const void *a, const void *b)
{
	const struct applied_peer *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_key(const void *a, const void *b)
{
	const struct applied_peer *const *x = a, *const *y = b;
	int c = memcmp((*x)->key, (*y)->key, WG_KEY_LEN);

	if (c)
		return c;
	return (*x)->id < (*y)->id ? -1 : (*x)->id > (*y)->id;
}

/* nm's usable peers, sorted by id, unique ids and keys. */
static int next_build(const struct netmap *nm, struct applied_peer **ret, unsigned *ret_n)
{
	struct applied_peer *next = NULL, **by_key = NULL;
	unsigned i, n = 0, out;
	int ret_code = -ENOMEM;

	if (nm->n_peers) {
		next = calloc(nm->n_peers, sizeof(*next));
		if (!next)
			goto out;
	}
	for (i = 0; i < nm->n_peers; i++) {
		const struct netmap_node *p = &nm->peers[i];

		if (key_is_zero(p->node_key) || p->id == nm->self.id ||
		    !memcmp(p->node_key, nm->self.node_key, WG_KEY_LEN))
			continue;
		applied_from_node(&next[n++], p);
	}
	if (n > 1)
		qsort(next, n, sizeof(*next), cmp_id);
	/* Duplicate ids: the first wins; marked by id 0 then compacted. */
	for (i = 1; i < n; i++)
		if (next[i].id == next[i - 1].id)
			memset(next[i].key, 0, WG_KEY_LEN);
	if (n > 1) {
		by_key = malloc(n * sizeof(*by_key));
		if (!by_key)
			goto out;
		for (i = 0; i < n; i++)
			by_key[i] = &next[i];
		qsort(by_key, n, sizeof(*by_key), cmp_key);
		/* Two ids with one key would be one WireGuard peer: the lowest id keeps it. */
		for (i = n - 1; i > 0; i--)
			if (!key_is_zero(by_key[i]->key) &&
			    !memcmp(by_key[i]->key, by_key[i - 1]->key, WG_KEY_LEN))
				memset(by_key[i]->key, 0, WG_KEY_LEN);
	}
	for (i = 0, out = 0; i < n; i++)
		if (!key_is_zero(next[i].key))
			next[out++] = next[i];
	*ret = next;
	*ret_n = out;
	next = NULL;
	ret_code = 0;
out:
	free(by_key);
	free(next);
	return ret_code;
}

static bool allowed_equal(const struct applied_peer *a, const struct applied_peer *b)
{
	return a->n_allowed == b->n_allowed &&
	       !memcmp(a->allowed, b->allowed, a->n_allowed * sizeof(a->allowed[0]));
}

static struct wg_peer_cfg *cfg_push(struct wg_device_cfg *cfg, const uint8_t key[WG_KEY_LEN])
{
	struct wg_peer_cfg *pc = &cfg->peers[cfg->n_peers++];

	memset(pc, 0, sizeof(*pc));
	memcpy(pc->public_key, key, WG_KEY_LEN);
	return pc;
}

static int cfg_set_allowed(struct wg_peer_cfg *pc, const struct applied_peer *ap)
{
	pc->replace_allowedips = true;
	pc->n_allowedips = ap->n_allowed;
	if (!ap->n_allowed)
		return 0;
	pc->allowedips = malloc(ap->n_allowed * sizeof(*pc->allowedips));
	if (!pc->allowedips)
		return -ENOMEM;
	memcpy(pc->allowedips, ap->allowed, ap->n_allowed * sizeof(*pc->allowedips));
	return 0;
}

/* What the device gets as the peer's endpoint: its handle, else the address. */
static const struct endpoint *peer_endpoint(const struct applied_peer *ap)
{
	return endpoint_is_set(&ap->handle) ? &ap->handle : &ap->ep;
}

static int cfg_add(struct wg_device_cfg *cfg, const struct applied_peer *ap)
{
	struct wg_peer_cfg *pc = cfg_push(cfg, ap->key);

	if (endpoint_is_set(&ap->ep)) {
		pc->has_endpoint = true;
		pc->endpoint = *peer_endpoint(ap);
	}
	return cfg_set_allowed(pc, ap);
}

/*
 * The merge of applied (old) and next (new), both sorted by id: removals in a
 * first pass, additions and updates in a second (see the top of the file).
 */
static int diff_build(struct netmap_apply *na, const struct applied_peer *next, unsigned n_next,
		      struct wg_device_cfg *cfg)
{
	const struct applied_peer *old = na->applied;
	unsigned n_old = na->n_applied, i, j, pass;
	int ret;

	memset(cfg, 0, sizeof(*cfg));
	if (n_old + n_next == 0)
		return 0;
	/* At most one remove per old peer and one add/update per new one. */
	cfg->peers = calloc(n_old + n_next, sizeof(*cfg->peers));
	if (!cfg->peers)
		return -ENOMEM;
	for (pass = 0; pass < 2; pass++) {
		i = j = 0;
		while (i < n_old || j < n_next) {
			const struct applied_peer *o = i < n_old ? &old[i] : NULL;
			const struct applied_peer *n = j < n_next ? &next[j] : NULL;

			if (o && (!n || o->id < n->id)) {
				if (pass == 0)
					cfg_push(cfg, o->key)->remove = true;
				i++;
				continue;
			}
			if (n && (!o || n->id < o->id)) {
				if (pass == 1 && (ret = cfg_add(cfg, n)) < 0)
					goto fail;
				j++;
				continue;
			}
			/* Same id in both. */
			i++;
			j++;
			if (memcmp(o->key, n->key, WG_KEY_LEN)) {
				if (pass == 0)
					cfg_push(cfg, o->key)->remove = true;
				else if ((ret = cfg_add(cfg, n)) < 0)
					goto fail;
				continue;
			}
			if (pass == 0)
				continue;
			{
				bool ips = !allowed_equal(o, n);
				bool ep = endpoint_is_set(&n->ep) && !endpoint_equal(&o->ep, &n->ep);
				struct wg_peer_cfg *pc;

				if (!ips && !ep)
					continue;
				pc = cfg_push(cfg, n->key);
				pc->update_only = true;
				if (ep) {
					pc->has_endpoint = true;
					pc->endpoint = *peer_endpoint(n);
				}
				if (ips && (ret = cfg_set_allowed(pc, n)) < 0)
					goto fail;
			}
		}
	}
	if (!cfg->n_peers) {
		free(cfg->peers);
		cfg->peers = NULL;
	}
	return 0;
fail:
	for (i = 0; i < cfg->n_peers; i++)
		free(cfg->peers[i].allowedips);
	free(cfg->peers);
	memset(cfg, 0, sizeof(*cfg));
	return ret;
}

int netmap_apply_diff(struct netmap_apply *na, const struct netmap *nm,
		      struct wg_device_cfg **ret_cfg)
{
	struct applied_peer *next = NULL;
	struct wg_device_cfg *cfg;
	unsigned n_next = 0;
	int ret;

	cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	ret = next_build(nm, &next, &n_next);
	if (ret == 0)
		ret = diff_build(na, next, n_next, cfg);
	free(next);
	if (ret < 0) {
		free(cfg);
		return ret;
	}
	*ret_cfg = cfg;
	return 0;
}

/* The applied peer with n's id and key (both lists sorted by id), or NULL. */
static const struct applied_peer *same_peer(const struct applied_peer *list, unsigned n_list,
					    const struct applied_peer *n)
{
	unsigned lo = 0, hi = n_list, mid;

	while (lo < hi) {
		mid = lo + (hi - lo) / 2;
		if (list[mid].id < n->id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < n_list && list[lo].id == n->id && !memcmp(list[lo].key, n->key, WG_KEY_LEN))
		return &list[lo];
	return NULL;
}

static void path_set(struct netmap_apply *na, const struct applied_peer *ap)
{
	int r = magicsock_handle_set_path(na->ms, &ap->handle, &ap->ep);

	if (r < 0)
		log_warn("netmap: peer %llu: cannot set its path: %s", (unsigned long long)ap->id,
			 strerror(-r));
}

/* The relay path: the peer's key and home region (relayed packets find the handle by key). */
static void relay_set(struct netmap_apply *na, const struct applied_peer *ap)
{
	int r = magicsock_handle_set_relay(na->ms, &ap->handle, ap->key, ap->region);

	if (r < 0)
		log_warn("netmap: peer %llu: cannot set its relay: %s", (unsigned long long)ap->id,
			 strerror(-r));
}

/* Handles made for a failed apply go again (see the top). */
static void handles_rollback(struct netmap_apply *na, struct applied_peer *next, unsigned n_next)
{
	unsigned i;

	for (i = 0; i < n_next; i++)
		if (next[i].handle_new)
			magicsock_handle_free(na->ms, &next[i].handle);
}

/* Before the device apply: kept handles carry over, new peers get one with its path. */
static int handles_assign(struct netmap_apply *na, struct applied_peer *next, unsigned n_next)
{
	const struct applied_peer *o;
	unsigned i;
	int r;

	if (!na->ms)
		return 0;
	for (i = 0; i < n_next; i++) {
		struct applied_peer *n = &next[i];

		o = same_peer(na->applied, na->n_applied, n);
		if (o && endpoint_is_set(&o->handle)) {
			n->handle = o->handle;
			n->path_changed =
			    endpoint_is_set(&n->ep) && !endpoint_equal(&o->ep, &n->ep);
			n->region_changed = o->region != n->region;
			continue;
		}
		r = magicsock_handle_new(na->ms, &n->handle);
		if (r < 0) {
			handles_rollback(na, next, i);
			return r;
		}
		n->handle_new = true;
		if (endpoint_is_set(&n->ep))
			path_set(na, n);
		relay_set(na, n);
	}
	return 0;
}

/* After the device apply: kept handles follow the netmap, removed peers' handles go. */
static void handles_commit(struct netmap_apply *na, struct applied_peer *next, unsigned n_next)
{
	unsigned i;

	if (!na->ms)
		return;
	for (i = 0; i < n_next; i++) {
		if (next[i].path_changed)
			path_set(na, &next[i]);
		if (next[i].region_changed)
			relay_set(na, &next[i]);
		next[i].handle_new = next[i].path_changed = next[i].region_changed = false;
	}
	for (i = 0; i < na->n_applied; i++)
		if (!same_peer(next, n_next, &na->applied[i]))
			magicsock_handle_free(na->ms, &na->applied[i].handle);
}

/*
 * Peers whose applied endpoint was "none" keep that record even when the device
 * learned one: the netmap's value is what we compare against next time.
 */
static int peers_apply(struct netmap_apply *na, const struct netmap *nm, uint64_t now_ns)
{
	struct applied_peer *next = NULL;
	struct wg_device_cfg *cfg;
	unsigned n_next = 0;
	int ret;

	cfg = calloc(1, sizeof(*cfg));
	if (!cfg)
		return -ENOMEM;
	ret = next_build(nm, &next, &n_next);
	if (ret < 0)
		goto out;
	ret = handles_assign(na, next, n_next);
	if (ret < 0)
		goto out;
	ret = diff_build(na, next, n_next, cfg);
	if (ret < 0) {
		handles_rollback(na, next, n_next);
		goto out;
	}
	if (cfg->n_peers) {
		ret = wg_device_apply(na->dev, cfg, now_ns);
		if (ret < 0) {
			log_warn("netmap: applying %u peer changes failed: %s", cfg->n_peers,
				 strerror(-ret));
			handles_rollback(na, next, n_next);
			goto out;
		}
		log_info("netmap: seq %llu: %u peer changes, %u peers", (unsigned long long)nm->seq,
			 cfg->n_peers, n_next);
	}
	handles_commit(na, next, n_next);
	free(na->applied);
	na->applied = next;
	na->n_applied = n_next;
	next = NULL;
out:
	wg_device_cfg_free(cfg);
	free(next);
	return ret;
}

static bool prefix_equal(const struct netmap_prefix *a, const struct netmap_prefix *b)
{
	unsigned len = a->family == AF_INET ? 4 : 16;

	return a->family == b->family && a->len == b->len && !memcmp(a->addr, b->addr, len);
}

static bool prefix_in(const struct netmap_prefix *p, const struct netmap_prefix *set, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (prefix_equal(p, &set[i]))
			return true;
	return false;
}

static int iface_apply(struct netmap_apply *na, const struct netmap_node *self)
{
	const struct netmap_apply_os *os = na->os;
	struct netmap_prefix want[NETMAP_MAX_ADDRESSES];
	unsigned n_want = 0, i;
	int ret = 0, r;

	if (!os)
		return 0;
	for (i = 0; i < self->n_addresses && i < NETMAP_MAX_ADDRESSES; i++) {
		const struct netmap_prefix *p = &self->addresses[i];

		if (netmap_prefix_is_tailnet_host(p))
			want[n_want++] = *p;
		else
			log_ratelimited(LOG_LEVEL_WARN,
					"netmap: ignoring own address outside the tailnet");
	}
	if (!na->mtu_done && na->mtu) {
		r = os->link_set_mtu(os->ctx, na->ifname, na->mtu);
		if (r < 0 && !ret)
			ret = r;
		na->mtu_done = r >= 0;
	}
	if (!na->link_done) {
		r = os->link_set_up(os->ctx, na->ifname, true);
		if (r < 0 && !ret)
			ret = r;
		na->link_done = r >= 0;
	}
	/* Old addresses first: a changed address must not coexist with its successor. */
	for (i = 0; i < na->n_addrs; i++) {
		const struct netmap_prefix *p = &na->addrs[i];

		if (prefix_in(p, want, n_want))
			continue;
		r = os->addr_del(os->ctx, na->ifname, p->family, p->addr, p->len);
		if (r < 0 && r != -EADDRNOTAVAIL)
			log_warn("netmap: %s: removing an old address: %s", na->ifname,
				 strerror(-r));
	}
	na->n_addrs = 0;
	for (i = 0; i < n_want; i++) {
		r = os->addr_add(os->ctx, na->ifname, want[i].family, want[i].addr, want[i].len);
		if (r < 0) {
			log_warn("netmap: %s: adding an address: %s", na->ifname, strerror(-r));
			if (!ret)
				ret = r;
			continue;
		}
		na->addrs[na->n_addrs++] = want[i];
	}
	/* Routes need the link up; without an address there is nothing to route from. */
	if (!na->routes_done && na->link_done && na->n_addrs) {
		r = os->route_add(os->ctx, na->ifname, AF_INET, route4, 10);
		if (r == -EEXIST)
			r = 0;
		if (r >= 0) {
			r = os->route_add(os->ctx, na->ifname, AF_INET6, route6, 48);
			if (r == -EEXIST)
				r = 0;
		}
		if (r < 0) {
			log_warn("netmap: %s: adding the tailnet routes: %s", na->ifname,
				 strerror(-r));
			if (!ret)
				ret = r;
		}
		na->routes_done = r >= 0;
	}
	return ret;
}

int netmap_apply_netmap(struct netmap_apply *na, const struct netmap *nm, uint64_t now_ns)
{
	int ret;

	ret = peers_apply(na, nm, now_ns);
	if (ret < 0)
		return ret;
	return iface_apply(na, &nm->self);
}

int netmap_apply_clear(struct netmap_apply *na, uint64_t now_ns)
{
	struct netmap empty = {0};
	const struct netmap_apply_os *os = na->os;
	unsigned i;
	int ret;

	ret = peers_apply(na, &empty, now_ns);
	if (!os)
		return ret;
	if (na->routes_done) {
		os->route_del(os->ctx, na->ifname, AF_INET, route4, 10);
		os->route_del(os->ctx, na->ifname, AF_INET6, route6, 48);
		na->routes_done = false;
	}
	for (i = 0; i < na->n_addrs; i++)
		os->addr_del(os->ctx, na->ifname, na->addrs[i].family, na->addrs[i].addr,
			     na->addrs[i].len);
	na->n_addrs = 0;
	return ret;
}
