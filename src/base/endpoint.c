/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/endpoint.h"

bool endpoint_is_addr(const struct endpoint *ep)
{
	return ep->sa.sa_family == AF_INET || ep->sa.sa_family == AF_INET6;
}

bool endpoint_is_set(const struct endpoint *ep)
{
	return endpoint_is_addr(ep) || endpoint_is_handle(ep);
}

void endpoint_handle_set(struct endpoint *ep, uint32_t id)
{
	memset(ep, 0, sizeof(*ep));
	ep->handle.family = ENDPOINT_AF_HANDLE;
	ep->handle.id = id;
}

bool endpoint_equal(const struct endpoint *a, const struct endpoint *b)
{
	if (a->sa.sa_family != b->sa.sa_family)
		return false;
	if (a->sa.sa_family == AF_INET)
		return a->in4.sin_port == b->in4.sin_port &&
		       a->in4.sin_addr.s_addr == b->in4.sin_addr.s_addr;
	if (a->sa.sa_family == AF_INET6)
		return a->in6.sin6_port == b->in6.sin6_port &&
		       a->in6.sin6_scope_id == b->in6.sin6_scope_id &&
		       !memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof(a->in6.sin6_addr));
	if (endpoint_is_handle(a))
		return a->handle.id == b->handle.id;
	return true;
}

bool endpoint_src_is_set(const struct endpoint *ep)
{
	return endpoint_is_addr(ep) && ep->src.family == ep->sa.sa_family;
}

bool endpoint_src_equal(const struct endpoint_src *a, const struct endpoint_src *b)
{
	if (a->family != b->family)
		return false;
	if (a->family == AF_INET)
		return a->in4.s_addr == b->in4.s_addr;
	if (a->family == AF_INET6)
		return !memcmp(&a->in6, &b->in6, sizeof(a->in6));
	return true;
}

socklen_t endpoint_len(const struct endpoint *ep)
{
	if (ep->sa.sa_family == AF_INET)
		return sizeof(ep->in4);
	if (ep->sa.sa_family == AF_INET6)
		return sizeof(ep->in6);
	return 0;
}

static int parse_port(const char *s, uint16_t *ret)
{
	char *end;
	unsigned long v;

	if (!*s || *s == '-' || *s == '+')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > 65535)
		return -EINVAL;
	*ret = (uint16_t)v;
	return 0;
}

int endpoint_parse(struct endpoint *ret, const char *s)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	struct endpoint ep;
	const char *port, *close;
	uint16_t p;
	size_t n;

	memset(&ep, 0, sizeof(ep));
	if (s[0] == '[') {
		char *scope;

		close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		n = (size_t)(close - s - 1);
		if (n >= sizeof(host))
			return -EINVAL;
		memcpy(host, s + 1, n);
		host[n] = '\0';
		port = close + 2;
		scope = strchr(host, '%');
		if (scope) {
			*scope++ = '\0';
			ep.in6.sin6_scope_id = if_nametoindex(scope);
			if (!ep.in6.sin6_scope_id) {
				char *end;
				unsigned long v = strtoul(scope, &end, 10);

				if (!*scope || *end || v > UINT32_MAX)
					return -EINVAL;
				ep.in6.sin6_scope_id = (uint32_t)v;
			}
		}
		if (inet_pton(AF_INET6, host, &ep.in6.sin6_addr) != 1 || parse_port(port, &p))
			return -EINVAL;
		ep.in6.sin6_family = AF_INET6;
		ep.in6.sin6_port = htons(p);
	} else {
		port = strrchr(s, ':');
		if (!port)
			return -EINVAL;
		n = (size_t)(port - s);
		if (n >= sizeof(host))
			return -EINVAL;
		memcpy(host, s, n);
		host[n] = '\0';
		if (inet_pton(AF_INET, host, &ep.in4.sin_addr) != 1 || parse_port(port + 1, &p))
			return -EINVAL;
		ep.in4.sin_family = AF_INET;
		ep.in4.sin_port = htons(p);
	}
	*ret = ep;
	return 0;
}

const char *endpoint_format(const struct endpoint *ep, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ep->sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &ep->in4.sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(ep->in4.sin_port));
	} else if (ep->sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &ep->in6.sin6_addr, host, sizeof(host));
		if (ep->in6.sin6_scope_id)
			snprintf(buf, len, "[%s%%%u]:%u", host, ep->in6.sin6_scope_id,
				 ntohs(ep->in6.sin6_port));
		else
			snprintf(buf, len, "[%s]:%u", host, ntohs(ep->in6.sin6_port));
	} else if (endpoint_is_handle(ep)) {
		snprintf(buf, len, "handle:%" PRIu32, ep->handle.id);
	} else {
		snprintf(buf, len, "(none)");
	}
	return buf;
}
