/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <miniupnpc/miniupnpc.h>
#include <miniupnpc/upnpcommands.h>
#include <miniupnpc/upnperrors.h>

#include "portmap/upnp.h"

/* UPnP errors (IGD WANIPConnection). */
#define UPNP_ERR_CONFLICT 718
#define UPNP_ERR_ONLY_PERMANENT 725

struct upnp_igd {
	struct UPNPUrls urls;
	struct IGDdatas data;
	char lan_addr[INET6_ADDRSTRLEN];
};

static void set_err(char *err, size_t len, const char *what, int code)
{
	const char *s = strupnperror(code);

	snprintf(err, len, "%s: UPnP error %d%s%s", what, code, s ? " " : "", s ? s : "");
}

int upnp_igd_discover(int timeout_ms, struct upnp_igd **ret, char *err, size_t err_len)
{
	struct UPNPDev *devs;
	struct upnp_igd *igd;
	int e = 0, r;

	/* No minissdpd here: NULL would make miniupnpc try its default socket first. */
	devs = upnpDiscover(timeout_ms, NULL, "/nonexistent", UPNP_LOCAL_PORT_ANY, 0, 2, &e);
	if (!devs) {
		snprintf(err, err_len, "no UPnP device answered SSDP within %d ms", timeout_ms);
		return -ENOENT;
	}
	igd = calloc(1, sizeof(*igd));
	if (!igd) {
		freeUPNPDevlist(devs);
		return -ENOMEM;
	}
	r = UPNP_GetValidIGD(devs, &igd->urls, &igd->data, igd->lan_addr, sizeof(igd->lan_addr));
	freeUPNPDevlist(devs);
	if (r != 1 && r != 2) {
		if (r)
			FreeUPNPUrls(&igd->urls);
		free(igd);
		snprintf(err, err_len, "UPnP devices answered, none is an Internet gateway");
		return -ENOENT;
	}
	*ret = igd;
	return 0;
}

void upnp_igd_free(struct upnp_igd *igd)
{
	if (!igd)
		return;
	FreeUPNPUrls(&igd->urls);
	free(igd);
}

const char *upnp_igd_lan_addr(const struct upnp_igd *igd)
{
	return igd->lan_addr;
}

int upnp_igd_external_ip(struct upnp_igd *igd, uint8_t ret[4], char *err, size_t err_len)
{
	char ip[40] = "";
	struct in_addr a;
	int r;

	r = UPNP_GetExternalIPAddress(igd->urls.controlURL, igd->data.first.servicetype, ip);
	if (r) {
		set_err(err, err_len, "GetExternalIPAddress", r);
		return -EPROTO;
	}
	if (inet_pton(AF_INET, ip, &a) != 1) {
		snprintf(err, err_len, "GetExternalIPAddress: not an IPv4 address");
		return -EPROTO;
	}
	memcpy(ret, &a, 4);
	return 0;
}

int upnp_igd_map(struct upnp_igd *igd, uint16_t internal_port, uint16_t ext_port, uint32_t lease_s,
		 uint32_t *ret_lease_s, char *err, size_t err_len)
{
	char ext[8], in[8], lease[16];
	int r;

	snprintf(ext, sizeof(ext), "%u", ext_port);
	snprintf(in, sizeof(in), "%u", internal_port);
	snprintf(lease, sizeof(lease), "%u", lease_s);
	r = UPNP_AddPortMapping(igd->urls.controlURL, igd->data.first.servicetype, ext, in,
				igd->lan_addr, UPNP_DESC, "UDP", NULL, lease);
	if (r == UPNP_ERR_ONLY_PERMANENT) {
		lease_s = 0;
		r = UPNP_AddPortMapping(igd->urls.controlURL, igd->data.first.servicetype, ext, in,
					igd->lan_addr, UPNP_DESC, "UDP", NULL, "0");
	}
	if (r == UPNP_ERR_CONFLICT) {
		set_err(err, err_len, "AddPortMapping", r);
		return -EADDRINUSE;
	}
	if (r) {
		set_err(err, err_len, "AddPortMapping", r);
		return -EPROTO;
	}
	*ret_lease_s = lease_s;
	return 0;
}

int upnp_igd_unmap(struct upnp_igd *igd, uint16_t ext_port, char *err, size_t err_len)
{
	char ext[8];
	int r;

	snprintf(ext, sizeof(ext), "%u", ext_port);
	r = UPNP_DeletePortMapping(igd->urls.controlURL, igd->data.first.servicetype, ext, "UDP",
				   NULL);
	if (r) {
		set_err(err, err_len, "DeletePortMapping", r);
		return -EPROTO;
	}
	return 0;
}
