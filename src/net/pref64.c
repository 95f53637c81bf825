/* SPDX-License-Identifier: MIT */
/*
 * PREF64 (RFC 8781) from the kernel's ND user option messages, and the per-interface
 * table of what routers advertised. See pref64.h for the state the table keeps.
 */
#include "net/pref64.h"

#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/icmp6.h>
#include <string.h>
#include <sys/socket.h>

/*
 * A bounds-checked view of the input: every read takes bytes off the front or fails, so
 * no offset into the datagram is ever computed from a length it carries.
 */
struct span {
	const uint8_t *p;
	size_t len;
};

static bool span_take(struct span *s, size_t n, struct span *ret)
{
	if (n > s->len)
		return false;
	*ret = (struct span){s->p, n};
	s->p += n;
	s->len -= n;
	return true;
}

/* Skips up to n bytes of alignment padding; the last message or attribute may omit it. */
static void span_skip(struct span *s, size_t n)
{
	if (n > s->len)
		n = s->len;
	s->p += n;
	s->len -= n;
}

/* Netlink's own fields are in host order (they never leave the machine). */
static uint16_t host16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

/* RFC 8781 §4: the prefix length code in the low 3 bits. */
static const unsigned plc_len[] = {96, 64, 56, 48, 40, 32};

int pref64_option_parse(const uint8_t *opt, size_t len, struct pref64_opt *ret,
			enum pref64_drop *ret_drop)
{
	struct pref64_opt o;
	unsigned plc, scaled, i;

	if (len < 2 || opt[0] != PREF64_OPT_TYPE)
		return -ENOMSG;
	/* §4: "the receiver MUST ignore the PREF64 option if the Length field value is not 2". */
	if (len != PREF64_OPT_LEN || opt[1] != PREF64_OPT_LEN / 8) {
		*ret_drop = PREF64_DROP_OPT_LEN;
		return -EBADMSG;
	}
	scaled = (unsigned)opt[2] << 5 | opt[3] >> 3;
	plc = opt[3] & 7;
	if (plc >= sizeof(plc_len) / sizeof(plc_len[0])) {
		*ret_drop = PREF64_DROP_PLC;
		return -EBADMSG;
	}
	memset(&o, 0, sizeof(o));
	o.prefix.len = plc_len[plc];
	memcpy(o.prefix.addr, opt + 4, 12);
	/* Bits past the length are the sender's business; RFC 6052 math wants them zero. */
	for (i = o.prefix.len / 8; i < 12; i++)
		o.prefix.addr[i] = 0;
	if (!pref64_prefix_usable(&o.prefix)) {
		*ret_drop = PREF64_DROP_PREFIX;
		return -EBADMSG;
	}
	o.lifetime_s = scaled * PREF64_LIFETIME_UNIT_S;
	*ret = o;
	return 0;
}

bool pref64_prefix_usable(const struct nat64_prefix *p)
{
	const uint8_t *a = p->addr;

	/* ::/16, not ::/8: the well-known 64:ff9b::/96 (RFC 6052) lies in ::/8. */
	return (a[0] | a[1]) != 0 && a[0] != 0xff && !(a[0] == 0xfe && (a[1] & 0xc0) == 0x80);
}

const char *pref64_drop_name(enum pref64_drop why)
{
	static const char *const names[PREF64_DROP_MAX] = {
	    [PREF64_DROP_TRUNCATED] = "truncated", [PREF64_DROP_MSG_TYPE] = "not_nduseropt",
	    [PREF64_DROP_NOT_RA] = "not_ra",	   [PREF64_DROP_OPT_LEN] = "bad_length",
	    [PREF64_DROP_PLC] = "bad_plc",	   [PREF64_DROP_PREFIX] = "bad_prefix",
	    [PREF64_DROP_TOO_MANY] = "too_many",   [PREF64_DROP_TABLE_FULL] = "table_full",
	};

	return (unsigned)why < PREF64_DROP_MAX ? names[why] : "?";
}

/* The options of one RTM_NEWNDUSEROPT message's payload (after its nlmsghdr). */
static unsigned nduseropt_parse(struct span body, struct pref64_opt *ret, unsigned cap,
				struct pref64_stats *st)
{
	struct nduseroptmsg m;
	struct span hdr, opts, o, attrs, a;
	uint8_t router[16] = {0};
	unsigned n = 0;

	if (!span_take(&body, sizeof(m), &hdr)) {
		st->dropped[PREF64_DROP_TRUNCATED]++;
		return 0;
	}
	memcpy(&m, hdr.p, sizeof(m));
	if (m.nduseropt_family != AF_INET6 || m.nduseropt_icmp_type != ND_ROUTER_ADVERT ||
	    m.nduseropt_icmp_code != 0) {
		st->dropped[PREF64_DROP_NOT_RA]++;
		return 0;
	}
	if (!span_take(&body, m.nduseropt_opts_len, &opts)) {
		st->dropped[PREF64_DROP_TRUNCATED]++;
		return 0;
	}
	span_skip(&body, NLMSG_ALIGN(m.nduseropt_opts_len) - m.nduseropt_opts_len);

	/* The router's address comes after the options; the options need it, so read it first. */
	attrs = body;
	while (attrs.len >= sizeof(struct rtattr)) {
		uint16_t alen = host16(attrs.p), atype = host16(attrs.p + 2);

		if (alen < sizeof(struct rtattr) || !span_take(&attrs, alen, &a))
			break;
		span_skip(&attrs, RTA_ALIGN(alen) - alen);
		if ((atype & NLA_TYPE_MASK) == NDUSEROPT_SRCADDR &&
		    a.len == sizeof(struct rtattr) + sizeof(router))
			memcpy(router, a.p + sizeof(struct rtattr), sizeof(router));
	}

	while (opts.len) {
		enum pref64_drop why;
		struct pref64_opt p;
		size_t olen;

		/* RFC 4861 §4.6: length in units of 8 octets, and 0 is invalid. */
		if (opts.len < 2 || opts.p[1] == 0) {
			st->dropped[opts.len < 2 ? PREF64_DROP_TRUNCATED : PREF64_DROP_OPT_LEN]++;
			break;
		}
		olen = (size_t)opts.p[1] * 8;
		if (!span_take(&opts, olen, &o)) {
			st->dropped[PREF64_DROP_TRUNCATED]++;
			break;
		}
		switch (pref64_option_parse(o.p, o.len, &p, &why)) {
		case 0:
			if (n == cap) {
				st->dropped[PREF64_DROP_TOO_MANY]++;
				break;
			}
			p.ifindex = m.nduseropt_ifindex;
			memcpy(p.router, router, sizeof(router));
			ret[n++] = p;
			st->options++;
			break;
		case -EBADMSG:
			st->dropped[why]++;
			break;
		default:
			break; /* RDNSS, DNSSL, captive portal: someone else's */
		}
	}
	return n;
}

unsigned pref64_netlink_parse(const uint8_t *buf, size_t len, struct pref64_opt *ret, unsigned cap,
			      struct pref64_stats *st)
{
	struct span in = {buf, len}, msg;
	unsigned n = 0;

	while (in.len) {
		struct nlmsghdr h;

		if (in.len < sizeof(h)) {
			st->dropped[PREF64_DROP_TRUNCATED]++;
			break;
		}
		memcpy(&h, in.p, sizeof(h));
		if (h.nlmsg_len < sizeof(h) || !span_take(&in, h.nlmsg_len, &msg)) {
			st->dropped[PREF64_DROP_TRUNCATED]++;
			break;
		}
		span_skip(&in, NLMSG_ALIGN(h.nlmsg_len) - h.nlmsg_len);
		if (h.nlmsg_type != RTM_NEWNDUSEROPT) {
			st->dropped[PREF64_DROP_MSG_TYPE]++;
			continue;
		}
		st->messages++;
		span_skip(&msg, sizeof(h));
		n += nduseropt_parse(msg, ret + n, cap - n, st);
	}
	return n;
}

/* --- the table --- */

void pref64_table_init(struct pref64_table *t)
{
	memset(t, 0, sizeof(*t));
	t->cur = -1;
}

static bool same_source(const struct pref64_opt *a, const struct pref64_opt *b)
{
	return a->ifindex == b->ifindex && !memcmp(a->router, b->router, sizeof(a->router)) &&
	       nat64_prefix_equal(&a->prefix, &b->prefix);
}

static void table_remove(struct pref64_table *t, unsigned i)
{
	t->e[i] = t->e[--t->n];
	if (t->cur == (int)i)
		t->cur = -1;
	else if (t->cur == (int)t->n)
		t->cur = (int)i;
}

/*
 * Several live prefixes (RFC 8781 §5: a renumbering, or several routers): one is used at a
 * time. The one in use stays while it lives; otherwise the one that will live longest,
 * which after a renumbering is the new one.
 */
static bool table_choose(struct pref64_table *t, const struct nat64_prefix *before)
{
	const struct nat64_prefix *after;
	unsigned i;

	if (t->cur < 0)
		for (i = 0; i < t->n; i++)
			if (t->cur < 0 || t->e[i].expires_ns > t->e[t->cur].expires_ns)
				t->cur = (int)i;
	after = t->cur < 0 ? NULL : &t->e[t->cur].opt.prefix;
	if (!before || !after)
		return before != after;
	return !nat64_prefix_equal(before, after);
}

static const struct nat64_prefix *cur_prefix(const struct pref64_table *t,
					     struct nat64_prefix *keep)
{
	if (t->cur < 0)
		return NULL;
	*keep = t->e[t->cur].opt.prefix;
	return keep;
}

bool pref64_table_update(struct pref64_table *t, const struct pref64_opt *o, uint64_t now_ns,
			 struct pref64_stats *st)
{
	struct nat64_prefix keep;
	const struct nat64_prefix *before = cur_prefix(t, &keep);
	unsigned i, soonest;

	for (i = 0; i < t->n; i++)
		if (same_source(&t->e[i].opt, o))
			break;
	if (o->lifetime_s == 0) {
		/* RFC 8781 §4: a lifetime of 0 says the prefix must not be used any more. */
		if (i < t->n)
			table_remove(t, i);
		return table_choose(t, before);
	}
	if (i == t->n) {
		if (t->n == PREF64_TABLE_MAX) {
			for (soonest = 0, i = 1; i < t->n; i++)
				if (t->e[i].expires_ns < t->e[soonest].expires_ns)
					soonest = i;
			table_remove(t, soonest);
			st->dropped[PREF64_DROP_TABLE_FULL]++;
		}
		i = t->n++;
	}
	t->e[i].opt = *o;
	t->e[i].expires_ns = now_ns + (uint64_t)o->lifetime_s * 1000000000ull;
	return table_choose(t, before);
}

static bool expired(const struct pref64_entry *e, uint64_t now_ns)
{
	return e->expires_ns <= now_ns;
}

static bool on_link(const struct pref64_entry *e, uint64_t ifindex)
{
	return e->opt.ifindex == (int)ifindex;
}

/* Removes the entries drop() picks; true when the prefix in use changed. */
static bool table_drop(struct pref64_table *t, bool (*drop)(const struct pref64_entry *, uint64_t),
		       uint64_t arg)
{
	struct nat64_prefix keep;
	const struct nat64_prefix *before = cur_prefix(t, &keep);
	unsigned i = 0;

	while (i < t->n)
		if (drop(&t->e[i], arg))
			table_remove(t, i); /* the last entry moved into i: look at it next */
		else
			i++;
	return table_choose(t, before);
}

bool pref64_table_expire(struct pref64_table *t, uint64_t now_ns)
{
	return table_drop(t, expired, now_ns);
}

bool pref64_table_forget(struct pref64_table *t, int ifindex)
{
	return table_drop(t, on_link, (uint64_t)ifindex);
}

const struct pref64_entry *pref64_table_current(const struct pref64_table *t)
{
	return t->cur < 0 ? NULL : &t->e[t->cur];
}

uint64_t pref64_table_next_expiry(const struct pref64_table *t)
{
	uint64_t soonest = 0;
	unsigned i;

	for (i = 0; i < t->n; i++)
		if (!soonest || t->e[i].expires_ns < soonest)
			soonest = t->e[i].expires_ns;
	return soonest;
}

uint64_t pref64_stats_dropped(const struct pref64_stats *st)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < PREF64_DROP_MAX; i++)
		n += st->dropped[i];
	return n;
}
