/* SPDX-License-Identifier: MIT */
/* netmap_apply: minimal peer diffs checked against a real device, interface steps via fakes. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <cmocka.h>

#include "base/loop.h"
#include "base/pkt.h"
#include "crypto/crypto.h"
#include "net/magicsock.h"
#include "node/netmap_apply.h"
#include "node/pathd.h"
#include "wg/device.h"

struct fake_os {
	unsigned addr_add, addr_del, route_add, route_del, link_up, mtu;
	unsigned last_addr_len; /* prefix length of the last address added */
	int fail_addr;
};

static int f_up(void *ctx, const char *ifname, bool up)
{
	(void)ifname;
	(void)up;
	((struct fake_os *)ctx)->link_up++;
	return 0;
}

static int f_mtu(void *ctx, const char *ifname, unsigned mtu)
{
	(void)ifname;
	(void)mtu;
	((struct fake_os *)ctx)->mtu++;
	return 0;
}

static int f_aadd(void *ctx, const char *i, int f, const void *a, unsigned l)
{
	struct fake_os *o = ctx;

	(void)i, (void)f, (void)a;
	if (o->fail_addr)
		return o->fail_addr;
	o->addr_add++;
	o->last_addr_len = l;
	return 0;
}

static int f_adel(void *ctx, const char *i, int f, const void *a, unsigned l)
{
	(void)i, (void)f, (void)a, (void)l;
	((struct fake_os *)ctx)->addr_del++;
	return 0;
}

static int f_radd(void *ctx, const char *i, int f, const void *a, unsigned l)
{
	(void)i, (void)f, (void)a, (void)l;
	((struct fake_os *)ctx)->route_add++;
	return 0;
}

static int f_rdel(void *ctx, const char *i, int f, const void *a, unsigned l)
{
	(void)i, (void)f, (void)a, (void)l;
	((struct fake_os *)ctx)->route_del++;
	return 0;
}

static void noop_send(void *ctx, struct pkt **p, unsigned n)
{
	unsigned i;

	(void)ctx;
	for (i = 0; i < n; i++)
		wg_pkt_release(p[i]);
	pkt_free(p, n);
}

struct fixture {
	struct pkt_pool *pool;
	struct wg_device *dev;
	struct fake_os fos;
	struct netmap_apply_os os;
	struct netmap_apply *na;
	struct magicsock *ms; /* NULL: plain endpoints */
};

static int fixture_new(void **state, bool with_ms)
{
	static const struct wg_device_ops ops = {.udp_send = noop_send, .tun_write = noop_send};
	static const struct magicsock_ops mops = {.wire_send = noop_send};
	struct fixture *f = calloc(1, sizeof(*f));
	uint8_t priv[32];

	assert_non_null(f);
	assert_int_equal(crypto_init(), 0);
	f->pool = pkt_pool_new(64);
	f->dev = wg_device_new(&ops, f->pool);
	assert_non_null(f->dev);
	if (with_ms) {
		f->ms = magicsock_new(&mops);
		assert_non_null(f->ms);
	}
	f->os = (struct netmap_apply_os){&f->fos, f_up, f_mtu, f_aadd, f_adel, f_radd, f_rdel};
	assert_int_equal(netmap_apply_new(f->dev, f->ms, "ts0", 1280, &f->os, &f->na), 0);
	assert_int_equal(x25519_private_generate(priv), 0);
	assert_int_equal(netmap_apply_set_private_key(f->na, priv, 1), 0);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return fixture_new(state, false);
}

static int setup_ms(void **state)
{
	return fixture_new(state, true);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	netmap_apply_free(f->na);
	wg_device_free(f->dev);
	magicsock_free(f->ms);
	pkt_pool_free(f->pool);
	free(f);
	return 0;
}

static void node_init(struct netmap_node *n, uint64_t id)
{
	memset(n, 0, sizeof(*n));
	n->id = id;
	memset(n->node_key, (int)id, sizeof(n->node_key));
	n->n_allowed_ips = 2;
	n->allowed_ips[0] = (struct netmap_prefix){AF_INET, 32, {100, 64, 0, (uint8_t)id}};
	n->allowed_ips[1] = (struct netmap_prefix){
	    AF_INET6, 128, {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11, [12] = 100, 64, 0, (uint8_t)id}};
	n->n_addresses = 2;
	memcpy(n->addresses, n->allowed_ips, sizeof(n->addresses));
	n->n_endpoints = 1;
	endpoint_parse(&n->endpoints[0], "198.51.100.1:41641");
	n->endpoints[0].in4.sin_addr.s_addr = htonl(0xc6336400u + (uint32_t)id);
}

static struct netmap *nm_make(unsigned n, const uint64_t *ids)
{
	struct netmap *nm = calloc(1, sizeof(*nm));
	unsigned i;

	assert_non_null(nm);
	node_init(&nm->self, 1);
	nm->n_peers = n;
	nm->peers = calloc(n ? n : 1, sizeof(*nm->peers));
	for (i = 0; i < n; i++)
		node_init(&nm->peers[i], ids[i]);
	return nm;
}

static void nm_free(struct netmap *nm)
{
	free(nm->peers);
	free(nm);
}

static const struct wg_peer_info *dev_peer(struct wg_device_info *info, uint8_t keybyte)
{
	unsigned i;

	for (i = 0; i < info->n_peers; i++)
		if (info->peers[i].public_key[0] == keybyte)
			return &info->peers[i];
	return NULL;
}

static void test_add_remove_rotate(void **state)
{
	struct fixture *f = *state;
	uint64_t ids[] = {5, 3, 4};
	struct wg_device_info *info;
	struct wg_device_cfg *cfg;
	struct netmap *nm = nm_make(3, ids);

	/* First netmap: three adds. */
	assert_int_equal(netmap_apply_diff(f->na, nm, &cfg), 0);
	assert_int_equal(cfg->n_peers, 3);
	assert_false(cfg->replace_peers);
	assert_false(cfg->peers[0].remove);
	assert_int_equal(cfg->peers[0].n_allowedips, 2);
	assert_true(cfg->peers[0].has_endpoint);
	wg_device_cfg_free(cfg);
	assert_int_equal(netmap_apply_netmap(f->na, nm, 2), 0);
	assert_int_equal(netmap_apply_peer_count(f->na), 3);
	assert_int_equal(wg_device_info_get(f->dev, &info), 0);
	assert_int_equal(info->n_peers, 3);
	assert_non_null(dev_peer(info, 4));
	assert_int_equal(dev_peer(info, 4)->n_allowedips, 2);
	assert_int_equal(ntohl(dev_peer(info, 4)->endpoint.in4.sin_addr.s_addr), 0xc6336404u);
	wg_device_info_free(info);
	/* Interface: MTU, up, 2 addresses, 2 routes. */
	assert_int_equal(f->fos.mtu, 1);
	assert_int_equal(f->fos.link_up, 1);
	assert_int_equal(f->fos.addr_add, 2);
	assert_int_equal(f->fos.route_add, 2);

	/* Same netmap again: no change at all. */
	assert_int_equal(netmap_apply_diff(f->na, nm, &cfg), 0);
	assert_int_equal(cfg->n_peers, 0);
	wg_device_cfg_free(cfg);
	assert_int_equal(netmap_apply_netmap(f->na, nm, 3), 0);
	assert_int_equal(f->fos.route_add, 2);
	assert_int_equal(f->fos.addr_del, 0);

	/* Peer 3 vanishes, 4 rotates its key, 5 changes endpoint only, 6 is new. */
	nm->peers[1] = nm->peers[0]; /* 3 -> 5 again, then fix below */
	node_init(&nm->peers[0], 6);
	memset(nm->peers[2].node_key, 0x44, 32); /* id 4 rotated */
	endpoint_parse(&nm->peers[1].endpoints[0], "203.0.113.9:1234"); /* id 5 */
	assert_int_equal(netmap_apply_diff(f->na, nm, &cfg), 0);
	/* remove 3, remove old 4, add new 4, update 5 endpoint, add 6 */
	assert_int_equal(cfg->n_peers, 5);
	assert_true(cfg->peers[0].remove && cfg->peers[0].public_key[0] == 3);
	assert_true(cfg->peers[1].remove && cfg->peers[1].public_key[0] == 4);
	assert_false(cfg->peers[2].remove);
	assert_int_equal(cfg->peers[2].public_key[0], 0x44);
	assert_int_equal(cfg->peers[3].public_key[0], 5);
	assert_true(cfg->peers[3].has_endpoint);
	assert_false(cfg->peers[3].replace_allowedips);
	assert_int_equal(cfg->peers[4].public_key[0], 6);
	wg_device_cfg_free(cfg);
	assert_int_equal(netmap_apply_netmap(f->na, nm, 4), 0);
	assert_int_equal(wg_device_info_get(f->dev, &info), 0);
	assert_int_equal(info->n_peers, 3);
	assert_null(dev_peer(info, 3));
	assert_null(dev_peer(info, 4));
	assert_non_null(dev_peer(info, 0x44));
	assert_non_null(dev_peer(info, 6));
	assert_int_equal(ntohl(dev_peer(info, 5)->endpoint.in4.sin_addr.s_addr), 0xcb007109u);
	wg_device_info_free(info);

	/* Allowed IPs change: one update with replace_allowedips, no endpoint. */
	nm->peers[0].n_allowed_ips = 1;
	assert_int_equal(netmap_apply_diff(f->na, nm, &cfg), 0);
	assert_int_equal(cfg->n_peers, 1);
	assert_true(cfg->peers[0].replace_allowedips);
	assert_false(cfg->peers[0].has_endpoint);
	assert_int_equal(cfg->peers[0].n_allowedips, 1);
	wg_device_cfg_free(cfg);

	/* Self's address changes: old one removed, new one added. */
	nm->self.addresses[0].addr[3] = 99;
	assert_int_equal(netmap_apply_netmap(f->na, nm, 5), 0);
	assert_int_equal(f->fos.addr_del, 1);

	/* Clear removes every peer, the addresses and the routes. */
	assert_int_equal(netmap_apply_clear(f->na, 6), 0);
	assert_int_equal(netmap_apply_peer_count(f->na), 0);
	assert_int_equal(wg_device_info_get(f->dev, &info), 0);
	assert_int_equal(info->n_peers, 0);
	assert_true(info->has_private_key);
	wg_device_info_free(info);
	assert_int_equal(f->fos.route_del, 2);
	nm_free(nm);
}

static void test_filter(void **state)
{
	struct fixture *f = *state;
	uint64_t ids[] = {7, 7, 1, 8, 9};
	struct wg_device_cfg *cfg;
	struct netmap *nm = nm_make(5, ids);

	/* duplicate id 7, self's id 1, zero key (8), 9 with 7's key. */
	memset(nm->peers[3].node_key, 0, 32);
	memset(nm->peers[4].node_key, 7, 32);
	nm->peers[0].allowed_ips[0].len = 24; /* not a single tailnet address: ignored */
	assert_int_equal(netmap_apply_diff(f->na, nm, &cfg), 0);
	assert_int_equal(cfg->n_peers, 1);
	assert_int_equal(cfg->peers[0].public_key[0], 7);
	assert_int_equal(cfg->peers[0].n_allowedips, 1);
	assert_int_equal(cfg->peers[0].allowedips[0].family, AF_INET6);
	wg_device_cfg_free(cfg);
	nm_free(nm);
}

static void test_iface_retry(void **state)
{
	struct fixture *f = *state;
	uint64_t ids[] = {2};
	struct netmap *nm = nm_make(1, ids);

	f->fos.fail_addr = -ENODEV;
	assert_int_equal(netmap_apply_netmap(f->na, nm, 1), -ENODEV);
	/* Peers are applied even though the interface step failed. */
	assert_int_equal(netmap_apply_peer_count(f->na), 1);
	assert_int_equal(f->fos.route_add, 0);
	f->fos.fail_addr = 0;
	assert_int_equal(netmap_apply_netmap(f->na, nm, 2), 0);
	assert_int_equal(f->fos.addr_add, 2);
	assert_int_equal(f->fos.route_add, 2);
	nm_free(nm);
}

/*
 * A hostile or broken server: only single tailnet addresses become our addresses or a peer's
 * allowed IPs, so nothing can capture traffic for the rest of the Internet.
 */
static void test_hostile_prefixes(void **state)
{
	static const struct netmap_prefix bad[] = {
	    {AF_INET, 1, {1, 2, 3, 4}},        {AF_INET, 0, {0}},
	    {AF_INET, 32, {192, 0, 2, 1}},     {AF_INET, 32, {100, 128, 0, 1}},
	    {AF_INET, 10, {100, 64, 0, 0}},    {AF_INET6, 0, {0}},
	    {AF_INET6, 64, {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11}},
	    {AF_INET6, 128, {0x20, 0x01, 0x0d, 0xb8, [15] = 1}},
	    {AF_INET, 33, {100, 64, 0, 1}},    {AF_UNIX, 32, {100, 64, 0, 1}},
	};
	struct fixture *f = *state;
	uint64_t ids[] = {2};
	struct wg_device_cfg *cfg;
	struct netmap_apply *na;
	struct netmap *nm;
	uint8_t priv[32];
	unsigned i;

	assert_int_equal(x25519_private_generate(priv), 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		/* A fresh applier each time, so every case starts from nothing applied. */
		assert_int_equal(netmap_apply_new(f->dev, NULL, "ts0", 1280, &f->os, &na), 0);
		assert_int_equal(netmap_apply_set_private_key(na, priv, 1), 0);
		nm = nm_make(1, ids);
		nm->self.addresses[1] = bad[i]; /* the IPv4 one stays */
		nm->peers[0].n_allowed_ips = 2;
		nm->peers[0].allowed_ips[1] = bad[i];
		assert_int_equal(netmap_apply_diff(na, nm, &cfg), 0);
		assert_int_equal(cfg->n_peers, 1);
		assert_int_equal(cfg->peers[0].n_allowedips, 1);
		assert_int_equal(cfg->peers[0].allowedips[0].cidr, 32);
		assert_int_equal(cfg->peers[0].allowedips[0].addr[0], 100);
		wg_device_cfg_free(cfg);

		f->fos.addr_add = 0;
		assert_int_equal(netmap_apply_netmap(na, nm, 1), 0);
		assert_int_equal(f->fos.addr_add, 1); /* the IPv4 /32 only */
		assert_int_equal(f->fos.last_addr_len, 32);
		netmap_apply_free(na);
		nm_free(nm);
	}
}

static unsigned handle_count(struct magicsock *ms)
{
	struct magicsock_stats s;

	magicsock_stats_get(ms, &s);
	return s.handles;
}

/* The address the device's endpoint for a peer stands for (its handle's path). */
static uint32_t dev_path4(struct fixture *f, uint8_t keybyte, struct endpoint *ret_handle)
{
	struct wg_device_info *info;
	struct endpoint ep;

	assert_int_equal(wg_device_info_get(f->dev, &info), 0);
	assert_non_null(dev_peer(info, keybyte));
	*ret_handle = dev_peer(info, keybyte)->endpoint;
	wg_device_info_free(info);
	assert_true(endpoint_is_handle(ret_handle));
	assert_int_equal(magicsock_resolve(f->ms, ret_handle, &ep), 0);
	return ntohl(ep.in4.sin_addr.s_addr);
}

/*
 * With a magicsock: the device's endpoints are handles whose paths are the netmap's
 * endpoints; an endpoint change moves the path under the same handle; a new key is a
 * new peer with a new handle; removed peers' handles are freed.
 */
/*
 * A key moves from one id to another while the first id gets a new key (found by
 * fuzz_netmap_apply): the diff removes the key and adds it again in one device
 * config. The device must end up with exactly the netmap's peers, not fail half
 * way with the old key removed and netmap_apply believing nothing changed.
 */
static void test_key_moves(void **state)
{
	struct fixture *f = *state;
	uint64_t ids[] = {2, 3};
	struct wg_device_info *info;
	struct netmap *nm = nm_make(2, ids);

	/* Ids 2 and 3 share key 7: the lower id gets it, 3 is left out. */
	memset(nm->peers[0].node_key, 7, WG_KEY_LEN);
	memset(nm->peers[1].node_key, 7, WG_KEY_LEN);
	assert_int_equal(netmap_apply_netmap(f->na, nm, 2), 0);
	assert_int_equal(netmap_apply_peer_count(f->na), 1);
	/* Id 2 rotates to key 8: key 7 now belongs to id 3 and is re-created for it. */
	memset(nm->peers[0].node_key, 8, WG_KEY_LEN);
	assert_int_equal(netmap_apply_netmap(f->na, nm, 3), 0);
	assert_int_equal(netmap_apply_peer_count(f->na), 2);
	assert_int_equal(wg_device_info_get(f->dev, &info), 0);
	assert_int_equal(info->n_peers, 2);
	assert_non_null(dev_peer(info, 7));
	assert_non_null(dev_peer(info, 8));
	/* Key 7 carries id 3's address now, key 8 id 2's. */
	assert_int_equal(dev_peer(info, 7)->allowedips[0].addr[3], 3);
	assert_int_equal(dev_peer(info, 8)->allowedips[0].addr[3], 2);
	wg_device_info_free(info);
	assert_int_equal(netmap_apply_clear(f->na, 4), 0);
	assert_int_equal(wg_device_info_get(f->dev, &info), 0);
	assert_int_equal(info->n_peers, 0);
	wg_device_info_free(info);
	nm_free(nm);
}

static void test_handles(void **state)
{
	struct fixture *f = *state;
	uint64_t ids[] = {3, 4, 5};
	struct netmap *nm = nm_make(3, ids);
	struct endpoint h3, h4, h5, h;

	assert_int_equal(netmap_apply_netmap(f->na, nm, 2), 0);
	assert_int_equal(handle_count(f->ms), 3);
	assert_int_equal(dev_path4(f, 3, &h3), 0xc6336403u);
	assert_int_equal(dev_path4(f, 4, &h4), 0xc6336404u);
	assert_int_equal(dev_path4(f, 5, &h5), 0xc6336405u);
	assert_false(endpoint_equal(&h3, &h4));

	/* 5 moves, 4 rotates its key, 3 disappears. */
	endpoint_parse(&nm->peers[2].endpoints[0], "203.0.113.9:1234");
	memset(nm->peers[1].node_key, 0x44, 32);
	nm->peers[0] = nm->peers[2];
	nm->peers[2] = nm->peers[1];
	nm->n_peers = 2;
	assert_int_equal(netmap_apply_netmap(f->na, nm, 3), 0);
	assert_int_equal(dev_path4(f, 5, &h), 0xcb007109u);
	assert_true(endpoint_equal(&h, &h5));
	assert_int_equal(dev_path4(f, 0x44, &h), 0xc6336404u);
	assert_false(endpoint_equal(&h, &h4));
	assert_int_equal(magicsock_resolve(f->ms, &h3, &h), -ENOENT);
	assert_int_equal(magicsock_resolve(f->ms, &h4, &h), -ENOENT);
	assert_int_equal(handle_count(f->ms), 2);

	/* A netmap without 5's endpoint leaves its path alone (as the device's endpoint was). */
	nm->peers[0].n_endpoints = 0;
	assert_int_equal(netmap_apply_netmap(f->na, nm, 4), 0);
	assert_int_equal(dev_path4(f, 5, &h), 0xcb007109u);

	assert_int_equal(netmap_apply_clear(f->na, 5), 0);
	assert_int_equal(handle_count(f->ms), 0);
	nm_free(nm);
}

/*
 * pathd over netmap_apply: a peer with a disco key is handed to path discovery (its handle
 * kept, its path disco's choice); once its netmap record has no disco key any more, its
 * handle is given back to the magicsock's plain rule at the netmap's address (not kept on
 * the relay for good), and a peer that is removed is forgotten by the engine.
 */
static void test_pathd_release(void **state)
{
	struct fixture *f = *state;
	uint64_t ids[] = {3};
	struct netmap *nm = nm_make(1, ids);
	struct disco_peer_status ds;
	struct magicsock_path mp;
	struct endpoint h, h2, moved;
	uint8_t priv[32], self_pub[32];
	struct loop *loop = loop_new();
	struct pathd *pd;

	assert_non_null(loop);
	assert_int_equal(pathd_new(loop, f->ms, NULL, &pd), 0);
	assert_int_equal(x25519_private_generate(priv), 0);
	assert_int_equal(x25519_public_from_private(nm->peers[0].disco_key, priv), 0);
	nm->peers[0].has_disco_key = true;
	memset(self_pub, 1, sizeof(self_pub));
	assert_int_equal(netmap_apply_netmap(f->na, nm, 2), 0);
	pathd_netmap(pd, nm, f->na, self_pub);
	assert_int_equal(netmap_apply_peer_handle(f->na, nm->peers[0].node_key, &h), 0);
	assert_true(magicsock_handle_kept(f->ms, &h));
	assert_int_equal(pathd_peer_status(pd, &h, &ds), 0);
	/* Path discovery found another address of the peer and trusts it. */
	endpoint_parse(&moved, "203.0.113.7:4000");
	assert_int_equal(magicsock_handle_disco(f->ms, &h, &moved, UINT64_MAX), 0);
	assert_int_equal(magicsock_handle_alias_add(f->ms, &h, &nm->peers[0].endpoints[0]), 0);
	assert_int_equal(magicsock_handle_path(f->ms, &h, &mp), 0);
	assert_true(endpoint_equal(&mp.addr, &moved));

	/* The peer leaves path discovery (its disco key is gone): the plain rule again. */
	nm->peers[0].has_disco_key = false;
	assert_int_equal(netmap_apply_netmap(f->na, nm, 3), 0);
	pathd_netmap(pd, nm, f->na, self_pub);
	assert_int_equal(netmap_apply_peer_handle(f->na, nm->peers[0].node_key, &h2), 0);
	assert_true(endpoint_equal(&h, &h2));
	assert_false(magicsock_handle_kept(f->ms, &h));
	assert_int_equal(pathd_peer_status(pd, &h, &ds), -ENOENT);
	assert_int_equal(magicsock_handle_path(f->ms, &h, &mp), 0);
	assert_true(endpoint_equal(&mp.addr, &nm->peers[0].endpoints[0]));
	/* Not trusted any more: confirmed only once the peer answers there. */
	assert_false(mp.direct_confirmed);

	/* Back with a disco key: path discovery takes it over again. */
	nm->peers[0].has_disco_key = true;
	assert_int_equal(netmap_apply_netmap(f->na, nm, 4), 0);
	pathd_netmap(pd, nm, f->na, self_pub);
	assert_true(magicsock_handle_kept(f->ms, &h));
	assert_int_equal(pathd_peer_status(pd, &h, &ds), 0);

	/* Removed: its handle is freed, the engine forgets it. */
	nm->n_peers = 0;
	assert_int_equal(netmap_apply_netmap(f->na, nm, 5), 0);
	pathd_netmap(pd, nm, f->na, self_pub);
	assert_false(magicsock_handle_kept(f->ms, &h));
	assert_int_equal(pathd_peer_status(pd, &h, &ds), -ENOENT);
	assert_int_equal(handle_count(f->ms), 0);

	pathd_stop(pd);
	pathd_free(pd);
	loop_free(loop);
	nm_free(nm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_add_remove_rotate, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_filter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_iface_retry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_prefixes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handles, setup_ms, teardown),
	    cmocka_unit_test_setup_teardown(test_pathd_release, setup_ms, teardown),
	    cmocka_unit_test_setup_teardown(test_key_moves, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_key_moves, setup_ms, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
