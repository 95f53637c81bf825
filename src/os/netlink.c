/* SPDX-License-Identifier: MIT */
/*
 * rtnetlink configuration over libmnl. Configuration changes are rare, so every call opens its
 * own NETLINK_ROUTE socket, sends one request with NLM_F_ACK and waits for the kernel's answer:
 * there is no shared socket state to get out of sync after an error.
 */
#include <errno.h>
#include <linux/if_addr.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>

#include "os/netlink.h"

/* Link messages with all their attributes are a few KiB; this holds several per read. */
#define NL_RECV_SIZE 32768
/* Our requests carry a header and at most four small attributes. */
#define NL_REQ_SIZE 512

static int addr_len(int family)
{
	if (family == AF_INET)
		return 4;
	if (family == AF_INET6)
		return 16;
	return -EAFNOSUPPORT;
}

/*
 * Sends one request and reads the answers until the ACK (or a dump's NLMSG_DONE), handing each
 * message to cb. mnl_cb_run turns an NLMSG_ERROR with a non-zero code into MNL_CB_ERROR with
 * errno set, and a zero code (the ACK) or NLMSG_DONE into MNL_CB_STOP.
 */
static int nl_request(struct nlmsghdr *nlh, mnl_cb_t cb, void *data)
{
	char buf[NL_RECV_SIZE] __attribute__((aligned(8)));
	struct mnl_socket *nl;
	unsigned portid;
	ssize_t n;
	int ret;

	nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
	if (!nl)
		return -errno;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		goto out;
	}
	portid = mnl_socket_get_portid(nl);
	nlh->nlmsg_flags |= NLM_F_REQUEST;
	nlh->nlmsg_seq = (uint32_t)time(NULL);
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
		ret = -errno;
		goto out;
	}
	for (;;) {
		n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto out;
		}
		ret = mnl_cb_run(buf, (size_t)n, nlh->nlmsg_seq, portid, cb, data);
		if (ret == MNL_CB_ERROR) {
			ret = errno ? -errno : -EPROTO;
			goto out;
		}
		if (ret == MNL_CB_STOP) {
			ret = 0;
			goto out;
		}
	}
out:
	mnl_socket_close(nl);
	return ret;
}

static int nl_transact(struct nlmsghdr *nlh)
{
	nlh->nlmsg_flags |= NLM_F_ACK;
	return nl_request(nlh, NULL, NULL);
}

int nl_link_index(const char *ifname)
{
	unsigned idx;

	if (!ifname || strlen(ifname) >= IF_NAMESIZE)
		return -ENODEV;
	idx = if_nametoindex(ifname);
	if (idx == 0 || idx > INT32_MAX)
		return -ENODEV;
	return (int)idx;
}

static struct nlmsghdr *link_msg_start(char *buf, int ifindex)
{
	struct nlmsghdr *nlh;
	struct ifinfomsg *ifi;

	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_NEWLINK;
	ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;
	return nlh;
}

int nl_link_set_up(const char *ifname, bool up)
{
	char buf[NL_REQ_SIZE] __attribute__((aligned(8)));
	struct nlmsghdr *nlh;
	struct ifinfomsg *ifi;
	int idx;

	idx = nl_link_index(ifname);
	if (idx < 0)
		return idx;
	nlh = link_msg_start(buf, idx);
	ifi = mnl_nlmsg_get_payload(nlh);
	ifi->ifi_change = IFF_UP;
	ifi->ifi_flags = up ? IFF_UP : 0;
	return nl_transact(nlh);
}

int nl_link_set_mtu(const char *ifname, unsigned mtu)
{
	char buf[NL_REQ_SIZE] __attribute__((aligned(8)));
	struct nlmsghdr *nlh;
	int idx;

	idx = nl_link_index(ifname);
	if (idx < 0)
		return idx;
	nlh = link_msg_start(buf, idx);
	mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
	return nl_transact(nlh);
}

int nl_link_get_mtu(const char *ifname)
{
	struct ifreq ifr = {0};
	int fd, ret;

	if (!ifname || strlen(ifname) >= IF_NAMESIZE)
		return -ENODEV;
	/* SIOCGIFMTU is one syscall where an RTM_GETLINK dump would parse every attribute. */
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memcpy(ifr.ifr_name, ifname, strlen(ifname));
	ret = ioctl(fd, SIOCGIFMTU, &ifr) < 0 ? -errno : ifr.ifr_mtu > 0 ? ifr.ifr_mtu : -EINVAL;
	close(fd);
	return ret;
}

bool nl_link_running(int ifindex)
{
	struct ifreq ifr = {0};
	bool running = false;
	int fd;

	if (ifindex <= 0 || !if_indextoname((unsigned)ifindex, ifr.ifr_name))
		return false;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return true; /* cannot tell: no reason to forget what the link told us */
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0)
		running = (ifr.ifr_flags & (IFF_UP | IFF_RUNNING)) == (IFF_UP | IFF_RUNNING);
	close(fd);
	return running;
}

static int addr_change(uint16_t type, uint16_t flags, const char *ifname, int family,
		       const void *addr, unsigned prefixlen)
{
	char buf[NL_REQ_SIZE] __attribute__((aligned(8)));
	struct nlmsghdr *nlh;
	struct ifaddrmsg *ifa;
	int alen, idx;

	alen = addr_len(family);
	if (alen < 0)
		return alen;
	if (!addr || prefixlen > (unsigned)alen * 8)
		return -EINVAL;
	idx = nl_link_index(ifname);
	if (idx < 0)
		return idx;

	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = flags;
	ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
	ifa->ifa_family = (uint8_t)family;
	ifa->ifa_prefixlen = (uint8_t)prefixlen;
	ifa->ifa_scope = RT_SCOPE_UNIVERSE;
	ifa->ifa_index = (uint32_t)idx;
	/* Without NODAD a fresh IPv6 address stays tentative (unusable) for about a second. */
	if (family == AF_INET6 && type == RTM_NEWADDR) {
		ifa->ifa_flags = IFA_F_NODAD;
		mnl_attr_put_u32(nlh, IFA_FLAGS, IFA_F_NODAD);
	}
	/* IFA_LOCAL == IFA_ADDRESS: an ordinary address, not the local end of a peer link. */
	mnl_attr_put(nlh, IFA_LOCAL, (size_t)alen, addr);
	mnl_attr_put(nlh, IFA_ADDRESS, (size_t)alen, addr);
	return nl_transact(nlh);
}

int nl_addr_add(const char *ifname, int family, const void *addr, unsigned prefixlen)
{
	int ret;

	ret = addr_change(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifname, family, addr, prefixlen);
	return ret == -EEXIST ? 0 : ret;
}

int nl_addr_del(const char *ifname, int family, const void *addr, unsigned prefixlen)
{
	return addr_change(RTM_DELADDR, 0, ifname, family, addr, prefixlen);
}

static int route_change(uint16_t type, uint16_t flags, const char *ifname, int family,
			const void *dst, unsigned prefixlen)
{
	char buf[NL_REQ_SIZE] __attribute__((aligned(8)));
	struct nlmsghdr *nlh;
	struct rtmsg *rtm;
	int alen, idx;

	alen = addr_len(family);
	if (alen < 0)
		return alen;
	if (!dst || prefixlen > (unsigned)alen * 8)
		return -EINVAL;
	idx = nl_link_index(ifname);
	if (idx < 0)
		return idx;

	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = flags;
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = (uint8_t)family;
	rtm->rtm_dst_len = (uint8_t)prefixlen;
	rtm->rtm_table = RT_TABLE_MAIN;
	rtm->rtm_protocol = RTPROT_STATIC;
	rtm->rtm_type = RTN_UNICAST;
	/* A delete with scope NOWHERE matches the route whatever scope it was added with. */
	rtm->rtm_scope = type == RTM_NEWROUTE ? RT_SCOPE_LINK : RT_SCOPE_NOWHERE;
	mnl_attr_put(nlh, RTA_DST, (size_t)alen, dst);
	mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t)idx);
	return nl_transact(nlh);
}

int nl_route_add(const char *ifname, int family, const void *dst, unsigned prefixlen)
{
	return route_change(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, ifname, family, dst,
			    prefixlen);
}

int nl_route_del(const char *ifname, int family, const void *dst, unsigned prefixlen)
{
	return route_change(RTM_DELROUTE, 0, ifname, family, dst, prefixlen);
}

struct gw_walk {
	int family;
	uint8_t gw[16];
	int ifindex;
	uint32_t metric;
	bool found;
};

/* A default route of the main table with a gateway; the lowest metric wins. */
static int gw_route(const struct nlmsghdr *nlh, void *data)
{
	struct gw_walk *w = data;
	const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *a;
	const void *gw = NULL;
	uint32_t table = rtm->rtm_table, metric = 0, oif = 0;
	int alen = addr_len(w->family);

	if (nlh->nlmsg_type != RTM_NEWROUTE || nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*rtm)))
		return MNL_CB_OK;
	if (rtm->rtm_family != w->family || rtm->rtm_dst_len || rtm->rtm_type != RTN_UNICAST)
		return MNL_CB_OK;
	mnl_attr_for_each(a, nlh, sizeof(*rtm)) {
		switch (mnl_attr_get_type(a)) {
		case RTA_TABLE:
			if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
				table = mnl_attr_get_u32(a);
			break;
		case RTA_PRIORITY:
			if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
				metric = mnl_attr_get_u32(a);
			break;
		case RTA_OIF:
			if (mnl_attr_validate(a, MNL_TYPE_U32) >= 0)
				oif = mnl_attr_get_u32(a);
			break;
		case RTA_GATEWAY:
			if (mnl_attr_get_payload_len(a) == (uint16_t)alen)
				gw = mnl_attr_get_payload(a);
			break;
		default:
			break;
		}
	}
	if (table != RT_TABLE_MAIN || !gw || !oif || oif > INT32_MAX)
		return MNL_CB_OK;
	if (w->found && metric >= w->metric)
		return MNL_CB_OK;
	memcpy(w->gw, gw, (size_t)alen);
	w->ifindex = (int)oif;
	w->metric = metric;
	w->found = true;
	return MNL_CB_OK;
}

int nl_route_default_gateway(int family, void *ret_gw, int *ret_ifindex)
{
	char buf[NL_REQ_SIZE] __attribute__((aligned(8)));
	struct gw_walk w = {.family = family};
	struct nlmsghdr *nlh;
	struct rtmsg *rtm;
	int ret, alen = addr_len(family);

	if (alen < 0)
		return alen;
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = RTM_GETROUTE;
	nlh->nlmsg_flags = NLM_F_DUMP;
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = (uint8_t)family;
	ret = nl_request(nlh, gw_route, &w);
	if (ret < 0)
		return ret;
	if (!w.found)
		return -ENETUNREACH;
	memcpy(ret_gw, w.gw, (size_t)alen);
	*ret_ifindex = w.ifindex;
	return 0;
}

int nl_monitor_open(void)
{
	struct sockaddr_nl sa = {
		.nl_family = AF_NETLINK,
		.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR |
			     RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE,
	};
	int fd, ret;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

int nl_nduseropt_open(void)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	int fd, ret, group = RTNLGRP_ND_USEROPT;

	fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &group, sizeof(group)) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

int nl_notify_recv(int fd, void *buf, unsigned cap)
{
	struct sockaddr_nl from;
	socklen_t fromlen;
	ssize_t n;

	for (;;) {
		fromlen = sizeof(from);
		n = recvfrom(fd, buf, cap, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		/* Only the kernel's notifications count; other processes may multicast too. */
		if (n > 0 && fromlen == sizeof(from) && from.nl_pid == 0)
			return (int)n;
		if (n == 0)
			return 0;
	}
}

static int count_event(const struct nlmsghdr *nlh, void *data)
{
	unsigned *count = data;

	switch (nlh->nlmsg_type) {
	case RTM_NEWLINK:
	case RTM_DELLINK:
	case RTM_NEWADDR:
	case RTM_DELADDR:
	case RTM_NEWROUTE:
	case RTM_DELROUTE:
		(*count)++;
		break;
	default:
		break;
	}
	return MNL_CB_OK;
}

/*
 * An overrun (ENOBUFS) means events were lost; it is reported as one more event so that the
 * caller re-reads the state it cares about instead of trusting a stale view.
 */
int nl_monitor_read(int fd)
{
	char buf[NL_RECV_SIZE] __attribute__((aligned(8)));
	struct sockaddr_nl from;
	socklen_t fromlen;
	unsigned count = 0;
	ssize_t n;

	for (;;) {
		fromlen = sizeof(from);
		n = recvfrom(fd, buf, sizeof(buf), MSG_DONTWAIT, (struct sockaddr *)&from,
			     &fromlen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOBUFS) {
				count++;
				continue;
			}
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return count ? (int)count : -errno;
		}
		if (n == 0)
			break;
		/* Only the kernel's notifications count; other processes may multicast too. */
		if (fromlen != sizeof(from) || from.nl_pid != 0)
			continue;
		/* seq 0 and portid 0: notifications are not answers to our requests. */
		if (mnl_cb_run(buf, (size_t)n, 0, 0, count_event, &count) == MNL_CB_ERROR)
			continue;
	}
	return (int)count;
}
