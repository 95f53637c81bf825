/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_ENDPOINT_H
#define TRELLIS_BASE_ENDPOINT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* A UDP endpoint, IPv4 or IPv6. sa.sa_family == AF_UNSPEC means "none". */
struct endpoint {
	union {
		struct sockaddr sa;
		struct sockaddr_in in4;
		struct sockaddr_in6 in6;
	};
};

/* Longest text form: "[" v6 "%" scope "]:" port. */
#define ENDPOINT_STR_MAX 72

bool endpoint_is_set(const struct endpoint *ep);
bool endpoint_equal(const struct endpoint *a, const struct endpoint *b);
socklen_t endpoint_len(const struct endpoint *ep);
/* "192.0.2.1:51820" or "[2001:db8::1]:51820"; 0 or -EINVAL. Host names are not resolved. */
int endpoint_parse(struct endpoint *ret, const char *s);
/* Writes the text form above into buf (at least ENDPOINT_STR_MAX bytes); returns buf. */
const char *endpoint_format(const struct endpoint *ep, char *buf, size_t len);

#endif
