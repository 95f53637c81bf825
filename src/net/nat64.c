/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/util.h"
#include "net/nat64.h"

/* RFC 7050 §2.2: ipv4only.arpa's A records. */
static const uint8_t wka[2][4] = {{192, 0, 0, 170}, {192, 0, 0, 171}};
/* From /96 down: RFC 7050 §3 reads the longest first. */
static const unsigned lens[] = {96, 64, 56, 48, 40, 32};

static pthread_mutex_t cur_mu = PTHREAD_MUTEX_INITIALIZER;
static struct nat64_prefix cur;
static bool cur_ipv4 = true;

bool nat64_len_valid(unsigned len)
{
	for (unsigned i = 0; i < ARRAY_SIZE(lens); i++)
		if (lens[i] == len)
			return true;
	return false;
}

/* The byte offsets the four IPv4 octets take after a prefix of len bits: byte 8 skipped. */
static void octets_at(unsigned len, unsigned ret[4])
{
	unsigned pos = len / 8;

	for (unsigned i = 0; i < 4; i++, pos++) {
		if (pos == 8)
			pos++;
		ret[i] = pos;
	}
}

int nat64_addr_synthesize(const struct nat64_prefix *p, const uint8_t v4[4], uint8_t ret[16])
{
	unsigned at[4];

	if (!nat64_len_valid(p->len))
		return -EINVAL;
	octets_at(p->len, at);
	memset(ret, 0, 16);
	memcpy(ret, p->addr, p->len / 8);
	for (unsigned i = 0; i < 4; i++)
		ret[at[i]] = v4[i];
	return 0;
}

int nat64_addr_extract(const struct nat64_prefix *p, const uint8_t v6[16], uint8_t ret[4])
{
	unsigned at[4];

	if (!nat64_len_valid(p->len))
		return -EINVAL;
	if (memcmp(v6, p->addr, p->len / 8) || (p->len < 96 && v6[8]))
		return -ENOENT;
	octets_at(p->len, at);
	for (unsigned i = 0; i < 4; i++)
		ret[i] = v6[at[i]];
	return 0;
}

/* Does every answer embed a well-known address at len under one prefix? Sets *ret if so. */
static bool fits(const uint8_t (*v6)[16], unsigned n, unsigned len, struct nat64_prefix *ret)
{
	struct nat64_prefix p = {.len = len};
	uint8_t v4[4];

	memcpy(p.addr, v6[0], len / 8);
	for (unsigned i = 0; i < n; i++)
		if (nat64_addr_extract(&p, v6[i], v4) < 0 ||
		    (memcmp(v4, wka[0], 4) && memcmp(v4, wka[1], 4)))
			return false;
	*ret = p;
	return true;
}

int nat64_prefix_from_answers(const uint8_t (*v6)[16], unsigned n, struct nat64_prefix *ret)
{
	if (!n)
		return -ENOENT;
	for (unsigned i = 0; i < ARRAY_SIZE(lens); i++)
		if (fits(v6, n, lens[i], ret))
			return 0;
	return -ENOENT;
}

int nat64_detect(struct nat64_prefix *ret)
{
	struct addrinfo hints = {.ai_family = AF_INET6, .ai_socktype = SOCK_DGRAM};
	struct addrinfo *res = NULL, *ai;
	uint8_t v6[NAT64_ANSWERS_MAX][16];
	unsigned n = 0;
	int r;

	r = getaddrinfo("ipv4only.arpa", NULL, &hints, &res);
	if (r == EAI_NONAME || r == EAI_NODATA || r == EAI_ADDRFAMILY)
		return -ENOENT;
	if (r)
		return -EHOSTUNREACH;
	for (ai = res; ai && n < NAT64_ANSWERS_MAX; ai = ai->ai_next)
		if (ai->ai_family == AF_INET6)
			memcpy(v6[n++], &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 16);
	freeaddrinfo(res);
	return nat64_prefix_from_answers((const uint8_t(*)[16])v6, n, ret);
}

void nat64_prefix_str(const struct nat64_prefix *p, char *buf, unsigned cap)
{
	char a[INET6_ADDRSTRLEN];

	if (!cap)
		return;
	buf[0] = '\0';
	if (!nat64_len_valid(p->len) || !inet_ntop(AF_INET6, p->addr, a, sizeof(a)))
		return;
	snprintf(buf, cap, "%s/%u", a, p->len);
}

bool nat64_ipv4_routed(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(9)};
	bool routed;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return true; /* no IPv4 at all is no reason to guess that it is routed */
	memcpy(&sa.sin_addr, wka[0], 4);
	routed = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno != ENETUNREACH;
	close(fd);
	return routed;
}

void nat64_state_set(const struct nat64_prefix *p, bool ipv4_routed)
{
	pthread_mutex_lock(&cur_mu);
	cur = *p;
	cur_ipv4 = ipv4_routed;
	pthread_mutex_unlock(&cur_mu);
}

bool nat64_prefix_get(struct nat64_prefix *ret, bool *ret_ipv4_routed)
{
	pthread_mutex_lock(&cur_mu);
	*ret = cur;
	if (ret_ipv4_routed)
		*ret_ipv4_routed = cur_ipv4;
	pthread_mutex_unlock(&cur_mu);
	return nat64_len_valid(ret->len);
}

int nat64_endpoint_synthesize(const struct endpoint *ep, struct endpoint *ret)
{
	struct nat64_prefix p;
	struct endpoint out;

	if (ep->sa.sa_family != AF_INET)
		return -EINVAL;
	if (!nat64_prefix_get(&p, NULL))
		return -ENOENT;
	memset(&out, 0, sizeof(out));
	out.in6.sin6_family = AF_INET6;
	out.in6.sin6_port = ep->in4.sin_port;
	nat64_addr_synthesize(&p, (const uint8_t *)&ep->in4.sin_addr, out.in6.sin6_addr.s6_addr);
	*ret = out;
	return 0;
}

int nat64_endpoint_route(const struct endpoint *ep, struct endpoint *ret)
{
	struct nat64_prefix p;
	bool routed;

	if (ep->sa.sa_family == AF_INET && nat64_prefix_get(&p, &routed) && !routed &&
	    nat64_endpoint_synthesize(ep, ret) == 0)
		return 1;
	*ret = *ep;
	return 0;
}
