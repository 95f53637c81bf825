/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cmocka.h>

#include "netns.h"
#include "os/netlink.h"
#include "os/tun.h"

static int ifreq_get(const char *ifname, unsigned long req, struct ifreq *ifr)
{
	int fd, ret;

	memset(ifr, 0, sizeof(*ifr));
	snprintf(ifr->ifr_name, sizeof(ifr->ifr_name), "%s", ifname);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = ioctl(fd, req, ifr) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

static bool has_addr(const char *ifname, int family, const void *addr)
{
	struct ifaddrs *ifas, *ifa;
	bool found = false;
	const void *a;

	if (getifaddrs(&ifas) < 0)
		return false;
	for (ifa = ifas; ifa; ifa = ifa->ifa_next) {
		if (!ifa->ifa_addr || ifa->ifa_addr->sa_family != family ||
		    strcmp(ifa->ifa_name, ifname))
			continue;
		if (family == AF_INET)
			a = &((struct sockaddr_in *)ifa->ifa_addr)->sin_addr;
		else
			a = &((struct sockaddr_in6 *)ifa->ifa_addr)->sin6_addr;
		if (!memcmp(a, addr, family == AF_INET ? 4 : 16))
			found = true;
	}
	freeifaddrs(ifas);
	return found;
}

static void test_missing_device(void **state)
{
	uint8_t a4[4] = { 198, 18, 0, 1 };

	(void)state;
	assert_int_equal(nl_link_index("nosuchdev0"), -ENODEV);
	assert_int_equal(nl_link_set_mtu("nosuchdev0", 1400), -ENODEV);
	assert_int_equal(nl_link_get_mtu("nosuchdev0"), -ENODEV);
	assert_int_equal(nl_link_get_mtu("a-name-much-too-long-for-linux"), -ENODEV);
	assert_int_equal(nl_link_set_up("nosuchdev0", true), -ENODEV);
	assert_int_equal(nl_addr_add("nosuchdev0", AF_INET, a4, 24), -ENODEV);
	assert_int_equal(nl_route_add("nosuchdev0", AF_INET, a4, 24), -ENODEV);
	assert_int_equal(nl_link_index("a-name-much-too-long-for-linux"), -ENODEV);
	assert_int_equal(nl_link_index("lo"), 1);
	assert_false(nl_link_running(0));
	assert_false(nl_link_running(99999));
}

static void test_link_mtu_up(void **state)
{
	char name[IF_NAMESIZE];
	struct ifreq ifr;
	int fd;

	(void)state;
	fd = tun_open("nltest%d", name);
	assert_true(fd >= 0);
	assert_int_equal(nl_link_index(name), (int)if_nametoindex(name));

	assert_int_equal(nl_link_set_mtu(name, 1280), 0);
	assert_int_equal(ifreq_get(name, SIOCGIFMTU, &ifr), 0);
	assert_int_equal(ifr.ifr_mtu, 1280);
	assert_int_equal(nl_link_get_mtu(name), 1280);
	assert_int_equal(nl_link_set_mtu(name, 9000), 0);
	assert_int_equal(nl_link_get_mtu(name), 9000);
	/* The kernel's own refusal comes back as its errno. */
	assert_int_equal(nl_link_set_mtu(name, 10), -EINVAL);

	assert_int_equal(nl_link_set_up(name, true), 0);
	assert_int_equal(ifreq_get(name, SIOCGIFFLAGS, &ifr), 0);
	assert_true(ifr.ifr_flags & IFF_UP);
	/* Up with its fd attached: a TUN device has a carrier. */
	assert_true(nl_link_running(nl_link_index(name)));
	assert_int_equal(nl_link_set_up(name, false), 0);
	assert_int_equal(ifreq_get(name, SIOCGIFFLAGS, &ifr), 0);
	assert_false(ifr.ifr_flags & IFF_UP);
	assert_false(nl_link_running(nl_link_index(name)));
	close(fd);
}

static void test_addr(void **state)
{
	uint8_t a4[4] = { 198, 18, 0, 1 };
	struct in6_addr a6;
	char name[IF_NAMESIZE];
	int fd;

	(void)state;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &a6), 1);
	fd = tun_open("nltest%d", name);
	assert_true(fd >= 0);
	assert_int_equal(nl_link_set_up(name, true), 0);

	assert_int_equal(nl_addr_add(name, AF_INET, a4, 24), 0);
	assert_int_equal(nl_addr_add(name, AF_INET, a4, 24), 0); /* idempotent */
	assert_int_equal(nl_addr_add(name, AF_INET6, &a6, 64), 0);
	assert_int_equal(nl_addr_add(name, AF_INET6, &a6, 64), 0);
	assert_true(has_addr(name, AF_INET, a4));
	assert_true(has_addr(name, AF_INET6, &a6));

	assert_int_equal(nl_addr_del(name, AF_INET, a4, 24), 0);
	assert_int_equal(nl_addr_del(name, AF_INET6, &a6, 64), 0);
	assert_false(has_addr(name, AF_INET, a4));
	assert_false(has_addr(name, AF_INET6, &a6));
	assert_int_equal(nl_addr_del(name, AF_INET, a4, 24), -EADDRNOTAVAIL);

	assert_int_equal(nl_addr_add(name, AF_INET, a4, 33), -EINVAL);
	assert_int_equal(nl_addr_add(name, AF_UNIX, a4, 8), -EAFNOSUPPORT);
	close(fd);
}

static void test_route(void **state)
{
	uint8_t a4[4] = { 198, 18, 0, 1 }, r4[4] = { 198, 19, 0, 0 };
	struct in6_addr r6;
	char name[IF_NAMESIZE];
	int fd;

	(void)state;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8:1::", &r6), 1);
	fd = tun_open("nltest%d", name);
	assert_true(fd >= 0);
	assert_int_equal(nl_addr_add(name, AF_INET, a4, 24), 0);
	/* A route through a down device is refused: the kernel's error comes back. */
	assert_int_equal(nl_route_add(name, AF_INET, r4, 16), -ENETDOWN);
	assert_int_equal(nl_link_set_up(name, true), 0);

	assert_int_equal(nl_route_add(name, AF_INET, r4, 16), 0);
	assert_int_equal(nl_route_add(name, AF_INET, r4, 16), -EEXIST);
	assert_int_equal(nl_route_del(name, AF_INET, r4, 16), 0);
	assert_int_equal(nl_route_del(name, AF_INET, r4, 16), -ESRCH);

	assert_int_equal(nl_route_add(name, AF_INET6, &r6, 48), 0);
	assert_int_equal(nl_route_add(name, AF_INET6, &r6, 48), -EEXIST);
	assert_int_equal(nl_route_del(name, AF_INET6, &r6, 48), 0);
	assert_int_equal(nl_route_del(name, AF_INET6, &r6, 48), -ESRCH);
	assert_int_equal(nl_route_add(name, AF_INET6, &r6, 129), -EINVAL);
	close(fd);
}

static void test_default_gateway(void **state)
{
	uint8_t a4[4] = { 198, 18, 0, 2 }, gw[4], gw6[16];
	char name[IF_NAMESIZE], cmd[160];
	int fd, ifindex = -1;

	(void)state;
	assert_int_equal(nl_route_default_gateway(AF_INET, gw, &ifindex), -ENETUNREACH);
	assert_int_equal(nl_route_default_gateway(AF_INET6, gw6, &ifindex), -ENETUNREACH);
	assert_int_equal(nl_route_default_gateway(AF_UNIX, gw, &ifindex), -EAFNOSUPPORT);
	fd = tun_open("nltest%d", name);
	assert_true(fd >= 0);
	assert_int_equal(nl_addr_add(name, AF_INET, a4, 24), 0);
	assert_int_equal(nl_link_set_up(name, true), 0);
	/* Two default routes: the lower metric is the one the kernel uses. */
	snprintf(cmd, sizeof(cmd),
		 "ip route add default via 198.18.0.1 dev %s metric 20 && "
		 "ip route add default via 198.18.0.3 dev %s metric 10",
		 name, name);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(nl_route_default_gateway(AF_INET, gw, &ifindex), 0);
	assert_int_equal(ifindex, nl_link_index(name));
	assert_memory_equal(gw, ((uint8_t[]){ 198, 18, 0, 3 }), 4);
	snprintf(cmd, sizeof(cmd), "ip route del default via 198.18.0.3 dev %s", name);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(nl_route_default_gateway(AF_INET, gw, &ifindex), 0);
	assert_memory_equal(gw, ((uint8_t[]){ 198, 18, 0, 1 }), 4);
	close(fd);
}

static void test_monitor(void **state)
{
	uint8_t a4[4] = { 198, 18, 0, 1 };
	char name[IF_NAMESIZE];
	int mon, fd;

	(void)state;
	mon = nl_monitor_open();
	assert_true(mon >= 0);
	fd = tun_open("nltest%d", name);
	assert_true(fd >= 0);
	/* Creating the device is a link event. */
	assert_true(fd_wait_readable(mon, 2000));
	assert_true(nl_monitor_read(mon) > 0);
	assert_int_equal(nl_monitor_read(mon), 0);

	assert_int_equal(nl_addr_add(name, AF_INET, a4, 24), 0);
	assert_true(fd_wait_readable(mon, 2000));
	assert_true(nl_monitor_read(mon) >= 1);
	assert_int_equal(nl_monitor_read(mon), 0);

	assert_int_equal(nl_addr_del(name, AF_INET, a4, 24), 0);
	assert_true(fd_wait_readable(mon, 2000));
	assert_true(nl_monitor_read(mon) >= 1);
	close(fd);
	close(mon);
}

/* The ND user option group: joined, and nothing to read without an RA (the lab sends one). */
static void test_nduseropt(void **state)
{
	char buf[512];
	int fd;

	(void)state;
	fd = nl_nduseropt_open();
	assert_true(fd >= 0);
	assert_int_equal(nl_notify_recv(fd, buf, sizeof(buf)), 0);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_missing_device, netns_enter),
		cmocka_unit_test_setup(test_link_mtu_up, netns_enter),
		cmocka_unit_test_setup(test_addr, netns_enter),
		cmocka_unit_test_setup(test_route, netns_enter),
		cmocka_unit_test_setup(test_monitor, netns_enter),
		cmocka_unit_test_setup(test_default_gateway, netns_enter),
		cmocka_unit_test_setup(test_nduseropt, netns_enter),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
