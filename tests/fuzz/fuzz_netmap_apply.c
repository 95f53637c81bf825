/* SPDX-License-Identifier: MIT */
/*
 * A hostile control server's netmaps through the node's whole apply path:
 * control messages (netmap or delta, NUL-separated) are decoded, folded into
 * the node's full netmap as the daemon does, and applied to a real WireGuard
 * device (with or without a magicsock) and a fake interface. The first byte
 * picks the magicsock and which interface calls fail. The device is made once
 * (its rate limiter table is costly) and left with no peers by every run. After
 * every apply:
 * nothing but tailnet host addresses is installed, routes are only the tailnet's,
 * the device holds exactly the peers netmap_apply counts, each with tailnet host
 * allowed IPs only, what the node may open ("may_open") is well formed, and clearing
 * leaves no peers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/pkt.h"
#include "crypto/crypto.h"
#include "net/magicsock.h"
#include "node/netmap_apply.c"
#include "proto/ctrlmsg.h"
#include "wg/device.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fake_os {
	unsigned calls;
	unsigned fail_every; /* 0: never */
};

static int fake_step(struct fake_os *o)
{
	o->calls++;
	return o->fail_every && o->calls % o->fail_every == 0 ? -EIO : 0;
}

static int f_up(void *ctx, const char *ifname, bool up)
{
	(void)ifname, (void)up;
	return fake_step(ctx);
}

static int f_mtu(void *ctx, const char *ifname, unsigned mtu)
{
	(void)ifname, (void)mtu;
	return fake_step(ctx);
}

static void check_host(int family, const void *addr, unsigned len)
{
	struct netmap_prefix p = {.family = (uint8_t)family, .len = (uint8_t)len};

	if (len > 128 || (family != AF_INET && family != AF_INET6))
		abort();
	memcpy(p.addr, addr, family == AF_INET ? 4 : 16);
	if (!netmap_prefix_is_tailnet_host(&p))
		abort(); /* finding 9: a server must not make us capture other traffic */
}

static int f_aadd(void *ctx, const char *i, int f, const void *a, unsigned l)
{
	(void)i;
	check_host(f, a, l);
	return fake_step(ctx);
}

static int f_adel(void *ctx, const char *i, int f, const void *a, unsigned l)
{
	(void)i;
	check_host(f, a, l);
	return fake_step(ctx);
}

static void check_route(int family, const void *dst, unsigned len)
{
	static const uint8_t r4[4] = {100, 64, 0, 0};
	static const uint8_t r6[16] = {0xfd, 0x7e, 0x11, 0xe5, 0x7a, 0x11};

	if (!(family == AF_INET && len == 10 && !memcmp(dst, r4, 4)) &&
	    !(family == AF_INET6 && len == 48 && !memcmp(dst, r6, 16)))
		abort();
}

static int f_radd(void *ctx, const char *i, int f, const void *a, unsigned l)
{
	(void)i;
	check_route(f, a, l);
	return fake_step(ctx);
}

static int f_rdel(void *ctx, const char *i, int f, const void *a, unsigned l)
{
	(void)i;
	check_route(f, a, l);
	return fake_step(ctx);
}

static void drop(void *ctx, struct pkt **p, unsigned n)
{
	unsigned i;

	(void)ctx;
	for (i = 0; i < n; i++)
		wg_pkt_release(p[i]);
	pkt_free(p, n);
}

static void check_device(struct wg_device *dev, struct netmap_apply *na)
{
	struct wg_device_info *info = NULL;
	unsigned i, j;

	if (wg_device_info_get(dev, &info) < 0)
		return; /* out of memory */
	if (info->n_peers != netmap_apply_peer_count(na))
		abort();
	for (i = 0; i < info->n_peers; i++) {
		for (j = 0; j < info->peers[i].n_allowedips; j++) {
			const struct wg_allowedip *a = &info->peers[i].allowedips[j];

			check_host(a->family, a->addr, a->cidr);
		}
	}
	wg_device_info_free(info);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct wg_device_ops ops = {.udp_send = drop, .tun_write = drop};
	static const struct magicsock_ops mops = {.wire_send = drop};
	static const uint8_t priv[WG_KEY_LEN] = {0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9};
	static struct pkt_pool *pool;
	static struct wg_device *dev;
	static uint64_t now = 1000000000ULL;
	struct fake_os fos = {0};
	const struct netmap_apply_os os = {&fos, f_up, f_mtu, f_aadd, f_adel, f_radd, f_rdel};
	struct netmap_apply *na = NULL;
	struct magicsock *ms = NULL;
	struct netmap *nm = NULL;
	const char *p, *end;

	if (!pool) {
		if (crypto_init() < 0)
			abort();
		log_set_level(LOG_LEVEL_ERR); /* a line per apply would be most of the time */
		pool = pkt_pool_new(64);
		dev = pool ? wg_device_new(&ops, pool) : NULL;
		if (!dev)
			abort();
	}
	if (size < 1)
		return 0;
	fos.fail_every = data[0] >> 1 & 7;
	if (data[0] & 1)
		ms = magicsock_new(&mops);
	if (netmap_apply_new(dev, ms, "ts0", 1280, &os, &na) < 0 ||
	    netmap_apply_set_private_key(na, priv, now) < 0)
		goto out;
	for (p = (const char *)data + 1, end = (const char *)data + size; p < end;) {
		const char *nul = memchr(p, '\0', (size_t)(end - p));
		size_t len = nul ? (size_t)(nul - p) : (size_t)(end - p);
		struct ctrl_msg m;

		if (ctrl_msg_decode(p, len, &m) == 0) {
			if (m.type == CTRL_MSG_NETMAP) {
				netmap_free(nm);
				nm = m.netmap;
				m.netmap = NULL;
			} else if (m.type == CTRL_MSG_DELTA && nm) {
				netmap_apply_delta(nm, m.delta); /* a bad delta leaves nm usable */
			}
			ctrl_msg_clear(&m);
			/* may_open, from a map or folded in by deltas: never malformed. */
			if (nm && nm->reach && !netmap_reach_valid(nm->reach))
				abort();
			if (nm) {
				now += 1000000ULL;
				netmap_apply_netmap(na, nm, now);
				check_device(dev, na);
			}
		}
		p += len + 1;
	}
	fos.fail_every = 0;
	if (netmap_apply_clear(na, now) < 0 || netmap_apply_peer_count(na))
		abort(); /* the next run must start from an empty device */
	check_device(dev, na);
out:
	netmap_free(nm);
	netmap_apply_free(na);
	magicsock_free(ms);
	return 0;
}
