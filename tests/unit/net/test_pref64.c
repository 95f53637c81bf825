/* SPDX-License-Identifier: MIT */
/*
 * PREF64 (RFC 8781 §4) as the kernel hands it over (RTM_NEWNDUSEROPT): every prefix length
 * code, the scaled lifetime in units of 8 s and 0 as a withdrawal, the bad lengths and codes
 * counted and ignored, every truncation of a message harmless; and the per-interface table:
 * refresh, withdrawal, expiry, the prefix in use kept while it lives, the cap.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/rtnetlink.h>
#include <netinet/icmp6.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "net/pref64.h"

#define S_NS 1000000000ull

static void v6(const char *text, uint8_t ret[16])
{
	assert_int_equal(inet_pton(AF_INET6, text, ret), 1);
}

/* RFC 8781 §4: type 38, length 2, scaled lifetime (13 bits) and PLC (3 bits), 96 bits. */
static void opt_build(uint8_t o[16], unsigned scaled, unsigned plc, const char *prefix)
{
	uint8_t a[16];

	v6(prefix, a);
	o[0] = PREF64_OPT_TYPE;
	o[1] = 2;
	o[2] = (uint8_t)(scaled >> 5);
	o[3] = (uint8_t)((scaled & 0x1f) << 3 | plc);
	memcpy(o + 4, a, 12);
}

static void test_plc_each(void **state)
{
	static const struct {
		unsigned plc, len;
		const char *want;
	} cases[] = {
	    {0, 96, "2001:db8:1234:5678:9abc:def0::"},
	    {1, 64, "2001:db8:1234:5678::"},
	    {2, 56, "2001:db8:1234:5600::"},
	    {3, 48, "2001:db8:1234::"},
	    {4, 40, "2001:db8:1200::"},
	    {5, 32, "2001:db8::"},
	};
	struct pref64_opt o;
	enum pref64_drop why;
	uint8_t buf[16], want[16];
	unsigned i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* Bits past the length set on purpose: they are cleared. */
		opt_build(buf, 225, cases[i].plc, "2001:db8:1234:5678:9abc:def0::");
		assert_int_equal(pref64_option_parse(buf, sizeof(buf), &o, &why), 0);
		assert_int_equal(o.prefix.len, cases[i].len);
		v6(cases[i].want, want);
		assert_memory_equal(o.prefix.addr, want, 16);
		assert_int_equal(o.lifetime_s, 1800);
	}
	for (i = 6; i < 8; i++) {
		opt_build(buf, 225, i, "64:ff9b::");
		assert_int_equal(pref64_option_parse(buf, sizeof(buf), &o, &why), -EBADMSG);
		assert_int_equal(why, PREF64_DROP_PLC);
	}
}

static void test_lifetime(void **state)
{
	static const unsigned scaled[] = {0, 1, 2, 225, 4096, 8191};
	struct pref64_opt o;
	enum pref64_drop why;
	uint8_t buf[16];
	unsigned i;

	(void)state;
	for (i = 0; i < sizeof(scaled) / sizeof(scaled[0]); i++) {
		opt_build(buf, scaled[i], 0, "64:ff9b::");
		assert_int_equal(pref64_option_parse(buf, sizeof(buf), &o, &why), 0);
		assert_int_equal(o.lifetime_s, scaled[i] * 8);
		assert_int_equal(o.prefix.len, 96);
	}
	assert_int_equal(o.lifetime_s, PREF64_LIFETIME_MAX_S);
}

static void test_option_refused(void **state)
{
	struct pref64_opt o;
	enum pref64_drop why;
	uint8_t buf[24] = {0};

	(void)state;
	opt_build(buf, 1, 0, "64:ff9b::");
	/* §4: a Length other than 2 is ignored, whatever the bytes say. */
	buf[1] = 3;
	assert_int_equal(pref64_option_parse(buf, 24, &o, &why), -EBADMSG);
	assert_int_equal(why, PREF64_DROP_OPT_LEN);
	buf[1] = 1;
	assert_int_equal(pref64_option_parse(buf, 8, &o, &why), -EBADMSG);
	assert_int_equal(why, PREF64_DROP_OPT_LEN);
	/* Not ours: RDNSS (25). */
	buf[0] = 25;
	buf[1] = 2;
	assert_int_equal(pref64_option_parse(buf, 16, &o, &why), -ENOMSG);
	assert_int_equal(pref64_option_parse(buf, 1, &o, &why), -ENOMSG);
}

/* A message as the kernel's ndisc_ra_useropt builds it: header, options, NDUSEROPT_SRCADDR. */
static size_t msg_build(uint8_t *buf, const uint8_t *opts, unsigned opts_len, int ifindex,
			const char *router)
{
	struct nlmsghdr h = {.nlmsg_type = RTM_NEWNDUSEROPT};
	struct nduseroptmsg m = {.nduseropt_family = AF_INET6,
				 .nduseropt_opts_len = (uint16_t)opts_len,
				 .nduseropt_ifindex = ifindex,
				 .nduseropt_icmp_type = ND_ROUTER_ADVERT};
	struct rtattr a = {.rta_len = RTA_LENGTH(16), .rta_type = NDUSEROPT_SRCADDR};
	size_t off = sizeof(h);
	uint8_t addr[16];

	memcpy(buf + off, &m, sizeof(m));
	off += sizeof(m);
	memcpy(buf + off, opts, opts_len);
	off += NLMSG_ALIGN(opts_len);
	memcpy(buf + off, &a, sizeof(a));
	v6(router, addr);
	memcpy(buf + off + sizeof(a), addr, 16);
	off += RTA_SPACE(16);
	h.nlmsg_len = (uint32_t)off;
	memcpy(buf, &h, sizeof(h));
	return off;
}

static void test_netlink(void **state)
{
	uint8_t opts[40] = {0}, buf[512] __attribute__((aligned(8))), router[16];
	struct pref64_opt out[PREF64_MSG_OPTS_MAX];
	struct pref64_stats st = {0};
	size_t len, len2;

	(void)state;
	/* An RDNSS option (type 25, 24 bytes) before the PREF64 one: skipped. */
	opts[0] = 25;
	opts[1] = 3;
	opt_build(opts + 24, 75, 1, "2001:db8:64:64::");
	len = msg_build(buf, opts, 40, 7, "fe80::1");
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 1);
	assert_int_equal(out[0].ifindex, 7);
	assert_int_equal(out[0].lifetime_s, 600);
	assert_int_equal(out[0].prefix.len, 64);
	v6("fe80::1", router);
	assert_memory_equal(out[0].router, router, 16);
	assert_int_equal(st.messages, 1);
	assert_int_equal(st.options, 1);

	/* Two messages in one datagram; the second withdraws (lifetime 0). */
	opt_build(opts, 0, 0, "64:ff9b::");
	len2 = msg_build(buf + len, opts, 16, 9, "fe80::2");
	assert_int_equal(pref64_netlink_parse(buf, len + len2, out, PREF64_MSG_OPTS_MAX, &st), 2);
	assert_int_equal(out[1].ifindex, 9);
	assert_int_equal(out[1].lifetime_s, 0);
	assert_int_equal(out[1].prefix.len, 96);
	/* ... but only as many as the caller has room for. */
	assert_int_equal(pref64_netlink_parse(buf, len + len2, out, 1, &st), 1);
	assert_int_equal(st.dropped[PREF64_DROP_TOO_MANY], 1);
}

static void test_netlink_bad(void **state)
{
	uint8_t opts[16], buf[256] __attribute__((aligned(8))), copy[256];
	struct pref64_opt out[PREF64_MSG_OPTS_MAX];
	struct pref64_stats st = {0};
	struct nduseroptmsg *m = (struct nduseroptmsg *)(buf + sizeof(struct nlmsghdr));
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	size_t len, cut;

	(void)state;
	opt_build(opts, 75, 0, "64:ff9b::");
	len = msg_build(buf, opts, 16, 2, "fe80::1");
	/* Every truncation: never more than the one option, never a read past the end. */
	for (cut = 0; cut < len; cut++) {
		memcpy(copy, buf, cut);
		assert_true(pref64_netlink_parse(copy, cut, out, PREF64_MSG_OPTS_MAX, &st) <= 1);
	}
	assert_true(st.dropped[PREF64_DROP_TRUNCATED] > 0);

	memset(&st, 0, sizeof(st));
	h->nlmsg_type = RTM_NEWLINK;
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
	assert_int_equal(st.dropped[PREF64_DROP_MSG_TYPE], 1);
	h->nlmsg_type = RTM_NEWNDUSEROPT;
	m->nduseropt_icmp_type = ND_ROUTER_SOLICIT;
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
	m->nduseropt_icmp_type = ND_ROUTER_ADVERT;
	m->nduseropt_family = AF_INET;
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
	assert_int_equal(st.dropped[PREF64_DROP_NOT_RA], 2);
	m->nduseropt_family = AF_INET6;
	/* An option length of 0 (RFC 4861 §4.6: invalid) ends the walk. */
	buf[sizeof(struct nlmsghdr) + sizeof(*m) + 1] = 0;
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
	assert_int_equal(st.dropped[PREF64_DROP_OPT_LEN], 1);
	/* Options longer than the message. */
	buf[sizeof(struct nlmsghdr) + sizeof(*m) + 1] = 2;
	m->nduseropt_opts_len = 200;
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
	/* A netlink length shorter than its header. */
	m->nduseropt_opts_len = 16;
	h->nlmsg_len = 4;
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
}

static struct pref64_opt opt_make(int ifindex, const char *router, const char *prefix, unsigned len,
				  uint32_t lifetime_s)
{
	struct pref64_opt o = {.ifindex = ifindex, .lifetime_s = lifetime_s};

	v6(router, o.router);
	v6(prefix, o.prefix.addr);
	o.prefix.len = len;
	return o;
}

static void test_table(void **state)
{
	struct pref64_opt a = opt_make(2, "fe80::1", "2001:db8:64:64::", 64, 600);
	struct pref64_opt b = opt_make(3, "fe80::2", "64:ff9b::", 96, 1800);
	struct pref64_stats st = {0};
	struct pref64_table t;
	uint64_t t0 = 1000 * S_NS;

	(void)state;
	pref64_table_init(&t);
	assert_null(pref64_table_current(&t));
	assert_int_equal(pref64_table_next_expiry(&t), 0);
	assert_true(pref64_table_update(&t, &a, t0, &st));
	assert_int_equal(pref64_table_current(&t)->opt.prefix.len, 64);
	assert_int_equal(pref64_table_next_expiry(&t), t0 + 600 * S_NS);
	/* A refresh changes nothing in use but the expiry. */
	assert_false(pref64_table_update(&t, &a, t0 + 300 * S_NS, &st));
	assert_int_equal(pref64_table_next_expiry(&t), t0 + 900 * S_NS);
	/* Another router's prefix, longer lived: the one in use stays while it lives. */
	assert_false(pref64_table_update(&t, &b, t0 + 300 * S_NS, &st));
	assert_int_equal(pref64_table_current(&t)->opt.prefix.len, 64);
	assert_false(pref64_table_expire(&t, t0 + 899 * S_NS));
	/* a runs out: b takes over. */
	assert_true(pref64_table_expire(&t, t0 + 900 * S_NS));
	assert_int_equal(pref64_table_current(&t)->opt.prefix.len, 96);
	assert_int_equal(pref64_table_current(&t)->opt.ifindex, 3);
	/* Withdrawn (lifetime 0) by its router: gone at once. */
	b.lifetime_s = 0;
	assert_true(pref64_table_update(&t, &b, t0 + 901 * S_NS, &st));
	assert_null(pref64_table_current(&t));
	assert_int_equal(t.n, 0);
	/* Withdrawing what we never had changes nothing. */
	assert_false(pref64_table_update(&t, &b, t0 + 902 * S_NS, &st));

	/* A link gone down: what came in on it goes, the other link's prefix takes over. */
	b.lifetime_s = 1800;
	assert_true(pref64_table_update(&t, &a, t0, &st));
	assert_false(pref64_table_update(&t, &b, t0, &st));
	assert_false(pref64_table_forget(&t, 3));
	assert_int_equal(t.n, 1);
	assert_false(pref64_table_update(&t, &b, t0, &st));
	assert_true(pref64_table_forget(&t, 2));
	assert_int_equal(pref64_table_current(&t)->opt.ifindex, 3);
	assert_true(pref64_table_forget(&t, 3));
	assert_null(pref64_table_current(&t));
}

static void test_table_cap(void **state)
{
	struct pref64_stats st = {0};
	struct pref64_table t;
	struct pref64_opt o;
	char router[32];
	unsigned i;

	(void)state;
	pref64_table_init(&t);
	for (i = 0; i < PREF64_TABLE_MAX + 4; i++) {
		snprintf(router, sizeof(router), "fe80::%x", i + 1);
		o = opt_make(2, router, "64:ff9b::", 96, 100 + i);
		pref64_table_update(&t, &o, 0, &st);
		assert_true(t.n <= PREF64_TABLE_MAX);
	}
	assert_int_equal(t.n, PREF64_TABLE_MAX);
	assert_int_equal(st.dropped[PREF64_DROP_TABLE_FULL], 4);
	/* The first ones, soonest to expire, gave way. */
	assert_int_equal(pref64_table_next_expiry(&t), 104 * S_NS);
	assert_non_null(pref64_table_current(&t));
	assert_true(pref64_table_expire(&t, 1000 * S_NS));
	assert_null(pref64_table_current(&t));
	assert_int_equal(t.n, 0);
}

/* st counted one drop, for why and for no other reason. */
static void dropped_once(const struct pref64_stats *st, enum pref64_drop why)
{
	for (unsigned i = 0; i < PREF64_DROP_MAX; i++)
		assert_int_equal(st->dropped[i], i == (unsigned)why ? 1 : 0);
	assert_int_equal(pref64_stats_dropped(st), 1);
}

/* The datagram of one message with one PREF64 option (scaled, plc, prefix), parsed into st. */
static unsigned one_opt(uint8_t *buf, size_t *ret_len, unsigned scaled, unsigned plc,
			const char *prefix, struct pref64_stats *st)
{
	struct pref64_opt out[PREF64_MSG_OPTS_MAX];
	uint8_t opt[16];

	opt_build(opt, scaled, plc, prefix);
	*ret_len = msg_build(buf, opt, sizeof(opt), 2, "fe80::1");
	memset(st, 0, sizeof(*st));
	return pref64_netlink_parse(buf, *ret_len, out, PREF64_MSG_OPTS_MAX, st);
}

/* Each reason to drop an input, counted under its own name and in the total. */
static void test_drop_each_reason(void **state)
{
	static const char *const unusable[] = {"ff02::", "fe80::", "::ffff:0:0", "::"};
	uint8_t buf[256] __attribute__((aligned(8))), opts[40] = {0};
	struct nduseroptmsg *m = (struct nduseroptmsg *)(buf + sizeof(struct nlmsghdr));
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	struct pref64_opt out[PREF64_MSG_OPTS_MAX], o;
	struct pref64_stats st;
	struct pref64_table t;
	size_t len;
	char router[32];

	(void)state;
	/* The well-known prefix and the lab's are fine: nothing dropped. */
	assert_int_equal(one_opt(buf, &len, 75, 0, "64:ff9b::", &st), 1);
	assert_int_equal(pref64_stats_dropped(&st), 0);
	assert_int_equal(one_opt(buf, &len, 75, 1, "2001:db8:64:64::", &st), 1);

	/* truncated: the datagram ends inside the message. */
	one_opt(buf, &len, 75, 0, "64:ff9b::", &st);
	memset(&st, 0, sizeof(st));
	assert_int_equal(pref64_netlink_parse(buf, len - 1, out, PREF64_MSG_OPTS_MAX, &st), 0);
	dropped_once(&st, PREF64_DROP_TRUNCATED);

	/* not_nduseropt: another netlink message. */
	h->nlmsg_type = RTM_NEWLINK;
	memset(&st, 0, sizeof(st));
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
	dropped_once(&st, PREF64_DROP_MSG_TYPE);
	h->nlmsg_type = RTM_NEWNDUSEROPT;

	/* not_ra: from a router solicitation. */
	m->nduseropt_icmp_type = ND_ROUTER_SOLICIT;
	memset(&st, 0, sizeof(st));
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
	dropped_once(&st, PREF64_DROP_NOT_RA);

	/* bad_length: a PREF64 option of Length 3 (24 bytes). */
	opt_build(opts, 75, 0, "64:ff9b::");
	opts[1] = 3;
	len = msg_build(buf, opts, 24, 2, "fe80::1");
	memset(&st, 0, sizeof(st));
	assert_int_equal(pref64_netlink_parse(buf, len, out, PREF64_MSG_OPTS_MAX, &st), 0);
	dropped_once(&st, PREF64_DROP_OPT_LEN);

	/* bad_plc: codes 6 and 7 are not defined. */
	assert_int_equal(one_opt(buf, &len, 75, 6, "64:ff9b::", &st), 0);
	dropped_once(&st, PREF64_DROP_PLC);

	/* bad_prefix: multicast, link-local, IPv4-mapped, unspecified. */
	for (size_t i = 0; i < sizeof(unusable) / sizeof(unusable[0]); i++) {
		assert_int_equal(one_opt(buf, &len, 75, 0, unusable[i], &st), 0);
		dropped_once(&st, PREF64_DROP_PREFIX);
	}

	/* too_many: two options, room for one. */
	opt_build(opts, 75, 0, "64:ff9b::");
	opt_build(opts + 16, 75, 1, "2001:db8:64:64::");
	len = msg_build(buf, opts, 32, 2, "fe80::1");
	memset(&st, 0, sizeof(st));
	assert_int_equal(pref64_netlink_parse(buf, len, out, 1, &st), 1);
	dropped_once(&st, PREF64_DROP_TOO_MANY);

	/* table_full: one router more than the table holds. */
	memset(&st, 0, sizeof(st));
	pref64_table_init(&t);
	for (unsigned i = 0; i <= PREF64_TABLE_MAX; i++) {
		snprintf(router, sizeof(router), "fe80::%x", i + 1);
		o = opt_make(2, router, "64:ff9b::", 96, 600);
		pref64_table_update(&t, &o, 0, &st);
	}
	dropped_once(&st, PREF64_DROP_TABLE_FULL);

	/* Every reason has a name of its own. */
	for (unsigned i = 0; i < PREF64_DROP_MAX; i++) {
		assert_string_not_equal(pref64_drop_name((enum pref64_drop)i), "?");
		for (unsigned k = 0; k < i; k++)
			assert_string_not_equal(pref64_drop_name((enum pref64_drop)i),
						pref64_drop_name((enum pref64_drop)k));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plc_each),	   cmocka_unit_test(test_lifetime),
	    cmocka_unit_test(test_option_refused), cmocka_unit_test(test_netlink),
	    cmocka_unit_test(test_netlink_bad),	   cmocka_unit_test(test_table),
	    cmocka_unit_test(test_table_cap),	   cmocka_unit_test(test_drop_each_reason),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
