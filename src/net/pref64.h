/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NET_PREF64_H
#define TRELLIS_NET_PREF64_H

/*
 * NAT64 prefixes from router advertisements: the PREF64 option (RFC 8781), which the
 * kernel does not act on itself and hands to userspace as RTM_NEWNDUSEROPT messages on
 * the RTNLGRP_ND_USEROPT group (one netlink message per option, with the router's
 * address as the NDUSEROPT_SRCADDR attribute).
 *
 * No I/O and no clock: the parser takes the bytes of one netlink datagram, the table
 * takes the time with every call. The table keeps what each router said on each
 * interface until the option's lifetime runs out or the router withdraws it (lifetime 0);
 * the prefix in use stays the one chosen while it lives, so two routers that advertise
 * different prefixes do not make the node switch back and forth.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/nat64.h"

#define PREF64_OPT_TYPE 38 /* RFC 8781 §4, IANA's IPv6 ND option type */
#define PREF64_OPT_LEN 16  /* the only length allowed: Length 2 (units of 8 octets) */
/* RFC 8781 §4: the scaled lifetime is in units of 8 s, 13 bits: at most 65528 s. */
#define PREF64_LIFETIME_UNIT_S 8
#define PREF64_LIFETIME_MAX_S (8191 * PREF64_LIFETIME_UNIT_S)
/* PREF64 options taken from one netlink datagram (the kernel sends one per message). */
#define PREF64_MSG_OPTS_MAX 8
/*
 * (interface, router, prefix) triples kept: anyone on the LAN can send RAs, so the
 * table has a hard cap; when full, the entry closest to expiry gives way.
 */
#define PREF64_TABLE_MAX 16

/*
 * Why an input was ignored (counted, never an error path). RFC 8781's scaled lifetime has
 * no value to refuse: 13 bits of 8 s units are all valid, and 0 withdraws.
 */
enum pref64_drop {
	PREF64_DROP_TRUNCATED,	/* a netlink header, message or ND option runs past the data */
	PREF64_DROP_MSG_TYPE,	/* a netlink message other than RTM_NEWNDUSEROPT */
	PREF64_DROP_NOT_RA,	/* not IPv6, or not from a router advertisement */
	PREF64_DROP_OPT_LEN,	/* an ND option of length 0, or a PREF64 option not 16 bytes */
	PREF64_DROP_PLC,	/* a prefix length code RFC 8781 does not define (6, 7) */
	PREF64_DROP_PREFIX,	/* a prefix no NAT64 can have (pref64_prefix_usable) */
	PREF64_DROP_TOO_MANY,	/* more PREF64 options in one datagram than we take */
	PREF64_DROP_TABLE_FULL, /* an entry the table gave up to make room (PREF64_TABLE_MAX) */
	PREF64_DROP_MAX
};

/* The reason's name in status ("truncated", "bad_plc", ...). */
const char *pref64_drop_name(enum pref64_drop why);

struct pref64_stats {
	uint64_t messages; /* RTM_NEWNDUSEROPT messages seen */
	uint64_t options;  /* PREF64 options taken */
	uint64_t dropped[PREF64_DROP_MAX];
};

/*
 * Whether a NAT64 could translate under p: not in multicast (ff00::/8), link-local
 * (fe80::/10) or ::/16 (the unspecified and loopback addresses, the IPv4-mapped and
 * -compatible ones; the well-known 64:ff9b::/96 is outside it). A router that advertises one is
 * broken or lying, and using it would send every IPv4-bound datagram to a group, the link, or
 * ourselves.
 */
bool pref64_prefix_usable(const struct nat64_prefix *p);

/* One PREF64 option as a router sent it. */
struct pref64_opt {
	struct nat64_prefix prefix;
	uint32_t lifetime_s; /* 0: the router withdraws the prefix */
	int ifindex;	     /* the interface the RA came in on */
	uint8_t router[16];  /* the RA's source address; zero when the kernel did not say */
};

/*
 * RFC 8781 §4: one ND option of len bytes (type, length, scaled lifetime and PLC, the
 * highest 96 bits of the prefix). The prefix's bits past its length are cleared: RFC 6052
 * math relies on them being zero. 0, -ENOMSG (another option type), or -EBADMSG with
 * *ret_drop set (bad length, PLC or prefix).
 */
int pref64_option_parse(const uint8_t *opt, size_t len, struct pref64_opt *ret,
			enum pref64_drop *ret_drop);

/* Everything dropped, whatever the reason. */
uint64_t pref64_stats_dropped(const struct pref64_stats *st);

/*
 * One datagram from an RTNLGRP_ND_USEROPT socket: the PREF64 options of every
 * RTM_NEWNDUSEROPT message in it, into ret (at most cap). Other ND options (RDNSS, DNSSL,
 * ...) are skipped; bad messages and options are counted in st and skipped. Returns the
 * number of options put in ret.
 */
unsigned pref64_netlink_parse(const uint8_t *buf, size_t len, struct pref64_opt *ret, unsigned cap,
			      struct pref64_stats *st);

struct pref64_entry {
	struct pref64_opt opt;
	uint64_t expires_ns;
};

struct pref64_table {
	struct pref64_entry e[PREF64_TABLE_MAX];
	unsigned n;
	int cur; /* index of the prefix in use, -1: none */
};

void pref64_table_init(struct pref64_table *t);

/*
 * What a router said at now_ns: a lifetime refreshes (or adds) its entry, 0 removes it. A
 * new entry in a full table pushes out the one closest to expiry, counted in st as
 * PREF64_DROP_TABLE_FULL. Returns true when the prefix in use changed.
 */
bool pref64_table_update(struct pref64_table *t, const struct pref64_opt *o, uint64_t now_ns,
			 struct pref64_stats *st);

/* Drops the entries whose lifetime ran out by now_ns; true when the prefix in use changed. */
bool pref64_table_expire(struct pref64_table *t, uint64_t now_ns);

/*
 * Drops what came in on ifindex (its link went down or away: the next network may have
 * another NAT64, or none); true when the prefix in use changed.
 */
bool pref64_table_forget(struct pref64_table *t, int ifindex);

/* The entry in use, or NULL. Valid until the next update or expire. */
const struct pref64_entry *pref64_table_current(const struct pref64_table *t);

/* When the next entry expires (for a timer), or 0 when the table is empty. */
uint64_t pref64_table_next_expiry(const struct pref64_table *t);

#endif
