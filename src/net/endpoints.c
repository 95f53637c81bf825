/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <string.h>

#include "net/endpoints.h"

static bool prefix_contains(const struct endpoints_prefix *p, int family, const uint8_t *a)
{
	unsigned full = p->bits / 8, rest = p->bits % 8;

	if (p->family != family || p->bits > (family == AF_INET ? 32u : 128u))
		return false;
	if (memcmp(p->addr, a, full))
		return false;
	return !rest || !((p->addr[full] ^ a[full]) & (uint8_t)(0xff << (8 - rest)));
}

bool endpoints_addr_skipped(int family, const void *addr, const struct endpoints_prefix *skip,
			    unsigned n_skip)
{
	static const uint8_t zero[15];
	const uint8_t *b = addr;
	unsigned i;

	for (i = 0; i < n_skip; i++)
		if (prefix_contains(&skip[i], family, b))
			return true;
	if (family == AF_INET)
		/* 127/8, 169.254/16, 0/8 */
		return b[0] == 127 || b[0] == 0 || (b[0] == 169 && b[1] == 254);
	/* fe80::/10, ::1, :: and ff00::/8 */
	return (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || (!memcmp(b, zero, 15) && b[15] <= 1) ||
	       b[0] == 0xff;
}

unsigned endpoints_collect(uint16_t port, const char *skip_ifname,
			   const struct endpoints_prefix *skip, unsigned n_skip,
			   struct endpoint *ret, unsigned cap)
{
	struct ifaddrs *ifa = NULL, *i;
	unsigned n = 0;

	if (!port || getifaddrs(&ifa) < 0)
		return 0;
	for (i = ifa; i && n < cap; i = i->ifa_next) {
		struct endpoint ep;

		if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK))
			continue;
		if (skip_ifname && !strcmp(i->ifa_name, skip_ifname))
			continue;
		memset(&ep, 0, sizeof(ep));
		if (i->ifa_addr->sa_family == AF_INET) {
			ep.in4 = *(struct sockaddr_in *)i->ifa_addr;
			if (endpoints_addr_skipped(AF_INET, &ep.in4.sin_addr, skip, n_skip))
				continue;
			ep.in4.sin_port = htons(port);
		} else if (i->ifa_addr->sa_family == AF_INET6) {
			ep.in6 = *(struct sockaddr_in6 *)i->ifa_addr;
			if (endpoints_addr_skipped(AF_INET6, &ep.in6.sin6_addr, skip, n_skip))
				continue;
			ep.in6.sin6_port = htons(port);
			ep.in6.sin6_scope_id = 0;
			ep.in6.sin6_flowinfo = 0;
		} else {
			continue;
		}
		ret[n++] = ep;
	}
	freeifaddrs(ifa);
	return n;
}
