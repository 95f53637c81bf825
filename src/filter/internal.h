/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_FILTER_INTERNAL_H
#define TRELLIS_FILTER_INTERNAL_H

/* Between the files of src/filter. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef unsigned __int128 u128;

struct filter_rules;

enum filter_kind { K_PLAIN, K_ECHO_REQUEST, K_ECHO_REPLY, K_ICMP_ERROR, K_ICMP_OTHER };

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* What the parser found in a packet. Ports are in the packet's own direction. */
struct flow {
	int family;
	uint8_t proto;
	bool nonfirst;
	bool fragment; /* a fragment, the first included */
	enum filter_kind kind;
	uint8_t tcp_flags;
	uint16_t sport, dport; /* ICMP echo: the identifier in both */
	const uint8_t *src, *dst;
	const uint8_t *l4; /* ICMP errors: the quoted packet */
	size_t l4_len;
};

/*
 * Parses an IP packet (quoted: the one inside an ICMP error, which may be cut short).
 * 0, or the enum filter_drop reason it is bad.
 */
int filter_ip_parse(struct flow *f, const uint8_t *p, size_t len, bool quoted);

/* An address (4 or 16 bytes, network order) as a number. */
u128 filter_addr_u128(int family, const uint8_t *a);
bool filter_rules_match_u128(const struct filter_rules *r, int family, uint8_t proto, u128 src,
			     u128 dst, uint16_t dport);

#endif
