/* SPDX-License-Identifier: MIT */
/*
 * The policy language and compiler: validation errors with line:column, tests in the policy,
 * per-node views and filters over a table of policies, explain, and a property test over
 * random policies and tailnets (A sees B <=> a rule allows A->B or B->A; the filter admits
 * exactly what explain says; what A may open on B, policy_view_reach, is exactly what explain
 * says).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "../alloc_count.h"
#include "policy/policy.h"

static struct policy_node mk(const char *name, const char *user, const char *tags, unsigned host)
{
	struct policy_node n;

	memset(&n, 0, sizeof(n));
	n.id = host;
	snprintf(n.name, sizeof(n.name), "%s", name);
	snprintf(n.user, sizeof(n.user), "%s", user ? user : "");
	for (const char *t = tags; t && *t;) {
		const char *e = strchr(t, ',');
		size_t l = e ? (size_t)(e - t) : strlen(t);

		snprintf(n.tags[n.n_tags++], NETMAP_TAG_MAX, "%.*s", (int)l, t);
		t += l + (e != NULL);
	}
	n.n_addrs = 2;
	n.addrs[0].family = AF_INET;
	n.addrs[0].len = 32;
	n.addrs[0].addr[0] = 100;
	n.addrs[0].addr[1] = 64;
	n.addrs[0].addr[2] = (uint8_t)(host >> 8);
	n.addrs[0].addr[3] = (uint8_t)host;
	n.addrs[1].family = AF_INET6;
	n.addrs[1].len = 128;
	inet_pton(AF_INET6, "fd7e:11e5:7a11::6440:0", n.addrs[1].addr);
	n.addrs[1].addr[14] = (uint8_t)(host >> 8);
	n.addrs[1].addr[15] = (uint8_t)host;
	return n;
}

static struct policy *parse_ok(const char *s)
{
	struct policy *p = NULL;
	char err[POLICY_ERR_MAX];

	if (policy_parse(s, strlen(s), &p, err))
		fail_msg("policy refused: %s\n%s", err, s);
	return p;
}

static void parse_err(const char *s, const char *msg)
{
	struct policy *p = NULL;
	char err[POLICY_ERR_MAX];

	assert_int_equal(policy_parse(s, strlen(s), &p, err), -EINVAL);
	assert_null(p);
	if (!strstr(err, msg))
		fail_msg("for %s:\n got \"%s\"\nwant \"%s\"", s, err, msg);
}

static void test_errors(void **state)
{
	(void)state;
	parse_err("{\"acls\": [\n  {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"*:*\"]},\n]}",
		  "2:32: unknown group \"group:eng\"");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"],\n \"dst\": [\"tag:web:80\"]}]}",
		  "2:10: tag \"tag:web\" has no owner in tagOwners");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:80-20\"]}]}",
		  "1:54: bad port \"80-20\"");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:65536\"]}]}",
		  "1:54: bad port \"65536\"");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22,x\"]}]}",
		  "1:54: bad port \"22,x\"");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"100.64.0.1/10\"], \"dst\": [\"*:*\"]}]}",
		  "1:40: bad prefix \"100.64.0.1/10\"");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"100.64.0.0/33:*\"]}]}",
		  "1:54: bad prefix \"100.64.0.0/33\"");
	parse_err("{\"hosts\": {\"db\": \"300.1.1.1\"}}", "1:18: bad prefix \"300.1.1.1\"");
	parse_err("{\"acls\": [{\"action\": \"deny\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
		  "1:22: action must be \"accept\"");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*\"]}]}",
		  "1:54: dst \"*\" needs :PORTS");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"], \"proto\": \"icmp\"}]}",
		  "1:54: ports need tcp, udp or sctp");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"], \"proto\": \"bogus\"}]}",
		  "1:71: unknown protocol");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:self\"], \"dst\": [\"*:*\"]}]}",
		  "autogroup:self is only allowed in dst");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"autogroup:admins\"], \"dst\": [\"*:*\"]}]}",
		  "unknown autogroup \"autogroup:admins\"");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"nosuchhost\"], \"dst\": [\"*:*\"]}]}",
		  "1:40: unknown name \"nosuchhost\"");
	parse_err("{\"acl\": []}", "1:2: unknown section \"acl\"");
	parse_err("{\"grants\": []}", "\"grants\" are not supported");
	parse_err("{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"], \"x\": 1}]}",
		  "1:62: unknown field \"x\" in an acl");
	parse_err("{\"groups\": {\"eng\": []}}", "1:13: group name \"eng\" must start with group:");
	parse_err("{\"groups\": {\"group:eng\": [\"alice\"]}}", "1:27: group member \"alice\" is not a user");
	parse_err("{\"tagOwners\": {\"tag:a\": [\"group:x\"]}}", "1:26: unknown group \"group:x\"");
	parse_err("[]", "1:1: a policy is an object, not array");
	parse_err("{\"acls\": {}}", "1:10: acls must be an array, not object");
	parse_err("{\n  \"acls\": [,]\n}", "2:12: unexpected character ','");
}

static const char example[] =
	"// engineering reaches the servers on ssh, everyone their own devices\n"
	"{\n"
	"  \"groups\": {\"group:eng\": [\"alice@example.com\", \"bob@example.com\",],},\n"
	"  \"tagOwners\": {\"tag:server\": [\"group:eng\"], \"tag:web\": [\"tag:server\"]},\n"
	"  \"hosts\": {\"build\": \"100.64.0.9\"},\n"
	"  \"acls\": [\n"
	"    {\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:server:22\", \"build:*\"], \"proto\": \"tcp\"},\n"
	"    {\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self:*\"]},\n"
	"    {\"action\": \"accept\", \"src\": [\"tag:server\"], \"dst\": [\"tag:web:80,443,8000-8999\"]},\n"
	"  ],\n"
	"  \"tests\": [\n"
	"    {\"src\": \"alice@example.com\", \"accept\": [\"tag:server:22\", \"alice@example.com:5000\"],\n"
	"     \"deny\": [\"tag:server:80\", \"bob@example.com:22\", \"tag:web:443\"]},\n"
	"    {\"src\": \"tag:server\", \"accept\": [\"tag:web:8080\"], \"deny\": [\"alice@example.com:22\"]},\n"
	"  ],\n"
	"}\n";

/* Nodes: 1 alice laptop, 2 alice phone, 3 bob laptop, 4 carol (not eng), 5 server, 6 web, 9 build. */
static void tailnet(struct policy_node *n)
{
	n[0] = mk("alice-laptop", "alice@example.com", NULL, 1);
	n[1] = mk("alice-phone", "alice@example.com", NULL, 2);
	n[2] = mk("bob-laptop", "bob@example.com", NULL, 3);
	n[3] = mk("carol", "carol@example.com", NULL, 4);
	n[4] = mk("server", NULL, "tag:server", 5);
	n[5] = mk("web", NULL, "tag:web", 6);
	n[6] = mk("build", "default", NULL, 9);
}

static void test_tests_in_policy(void **state)
{
	char *bad = strdup(example), *at;
	struct policy *p = NULL;
	char err[POLICY_ERR_MAX];

	(void)state;
	policy_free(parse_ok(example));
	/* A test that fails refuses the policy, naming the case and why. */
	at = strstr(bad, "\"tag:server:80\"");
	memcpy(at, "\"tag:server:22\"", 15);
	assert_int_equal(policy_parse(bad, strlen(bad), &p, err), -EINVAL);
	assert_non_null(strstr(err, "13:15: test 0 failed: alice@example.com -> tag:server:22 should "
				    "be denied, but is allowed by acls[0] (line 7)"));
	if (!strstr(err, "should"))
		fail_msg("%s", err);
	free(bad);
}

static const char *const names[] = { "alice-laptop", "alice-phone", "bob-laptop", "carol",
				     "server", "web", "build" };

static void test_views(void **state)
{
	/* Who sees whom, row by row (symmetric). */
	static const char *const want[7] = {
		"alice-phone server build",
		"alice-laptop server build",
		"server build",
		"",
		"alice-laptop alice-phone bob-laptop web",
		"server",
		"alice-laptop alice-phone bob-laptop",
	};
	struct policy_node n[7];
	struct policy *p = parse_ok(example);
	struct policy_view *v;

	(void)state;
	tailnet(n);
	assert_int_equal(policy_compile(p, n, 7, &v), 0);
	for (size_t a = 0; a < 7; a++) {
		char got[256] = "";
		size_t cnt = 0;

		for (size_t b = 0; b < 7; b++) {
			if (!policy_view_sees(v, a, b))
				continue;
			assert_true(policy_view_sees(v, b, a));
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", got[0] ? " " : "",
				 names[b]);
			cnt++;
		}
		if (strcmp(got, want[a]))
			fail_msg("%s sees \"%s\", want \"%s\"", names[a], got, want[a]);
		assert_int_equal(policy_view_count(v, a), cnt);
	}
	policy_view_free(v);
	policy_free(p);
}

static void prefix_str(const struct netmap_prefix *p, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];

	inet_ntop(p->family, p->addr, ip, sizeof(ip));
	snprintf(buf, len, "%s/%u", ip, p->len);
}

/* A filter as text: "src,src>dst:first-last,dst:first-last/proto,proto; ..." */
static void filter_str(const struct netmap_filter *f, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < f->n_rules; i++) {
		const struct netmap_filter_rule *r = &f->rules[i];
		char px[64];

		o += (size_t)snprintf(buf + o, len - o, "%s", i ? "; " : "");
		for (unsigned k = 0; k < r->n_src; k++) {
			prefix_str(&f->srcs[r->src_off + k], px, sizeof(px));
			o += (size_t)snprintf(buf + o, len - o, "%s%s", k ? "," : "", px);
		}
		o += (size_t)snprintf(buf + o, len - o, ">");
		for (unsigned k = 0; k < r->n_dst; k++) {
			const struct netmap_filter_dst *d = &f->dsts[r->dst_off + k];

			prefix_str(&d->prefix, px, sizeof(px));
			o += (size_t)snprintf(buf + o, len - o, "%s%s:%u-%u", k ? "," : "", px,
					      d->port_first, d->port_last);
		}
		o += (size_t)snprintf(buf + o, len - o, "/");
		for (unsigned k = 0; k < r->n_protos; k++)
			o += (size_t)snprintf(buf + o, len - o, "%s%u", k ? "," : "", r->protos[k]);
	}
}

static void test_filters(void **state)
{
	static const char *const want[7] = {
		/* alice-laptop: her own devices (autogroup:self), any port, default protocols. */
		"100.64.0.1/32,fd7e:11e5:7a11::6440:1/128,100.64.0.2/32,fd7e:11e5:7a11::6440:2/128>"
		"100.64.0.1/32:0-65535,fd7e:11e5:7a11::6440:1/128:0-65535/6,17,1,58",
		"100.64.0.1/32,fd7e:11e5:7a11::6440:1/128,100.64.0.2/32,fd7e:11e5:7a11::6440:2/128>"
		"100.64.0.2/32:0-65535,fd7e:11e5:7a11::6440:2/128:0-65535/6,17,1,58",
		"100.64.0.3/32,fd7e:11e5:7a11::6440:3/128>"
		"100.64.0.3/32:0-65535,fd7e:11e5:7a11::6440:3/128:0-65535/6,17,1,58",
		"100.64.0.4/32,fd7e:11e5:7a11::6440:4/128>"
		"100.64.0.4/32:0-65535,fd7e:11e5:7a11::6440:4/128:0-65535/6,17,1,58",
		/* server: eng on 22/tcp. */
		"100.64.0.1/32,fd7e:11e5:7a11::6440:1/128,100.64.0.2/32,fd7e:11e5:7a11::6440:2/128,"
		"100.64.0.3/32,fd7e:11e5:7a11::6440:3/128>"
		"100.64.0.5/32:22-22,fd7e:11e5:7a11::6440:5/128:22-22/6",
		/* web: servers on 80, 443, 8000-8999. */
		"100.64.0.5/32,fd7e:11e5:7a11::6440:5/128>100.64.0.6/32:80-80,100.64.0.6/32:443-443,"
		"100.64.0.6/32:8000-8999,fd7e:11e5:7a11::6440:6/128:80-80,"
		"fd7e:11e5:7a11::6440:6/128:443-443,fd7e:11e5:7a11::6440:6/128:8000-8999/6,17,1,58",
		/* build: eng by the host's address (its IPv4 only), and its own user's devices. */
		"100.64.0.1/32,fd7e:11e5:7a11::6440:1/128,100.64.0.2/32,fd7e:11e5:7a11::6440:2/128,"
		"100.64.0.3/32,fd7e:11e5:7a11::6440:3/128>100.64.0.9/32:0-65535/6; "
		"100.64.0.9/32,fd7e:11e5:7a11::6440:9/128>"
		"100.64.0.9/32:0-65535,fd7e:11e5:7a11::6440:9/128:0-65535/6,17,1,58",
	};
	struct policy_node n[7];
	struct policy *p = parse_ok(example);
	struct policy_view *v;
	char got[2048];

	(void)state;
	tailnet(n);
	assert_int_equal(policy_compile(p, n, 7, &v), 0);
	for (size_t i = 0; i < 7; i++) {
		struct netmap_filter *f;

		assert_int_equal(policy_view_filter(v, n, i, &f), 0);
		assert_true(netmap_filter_valid(f));
		filter_str(f, got, sizeof(got));
		if (strcmp(got, want[i]))
			fail_msg("%s's filter:\n got %s\nwant %s", names[i], got, want[i]);
		netmap_filter_free(f);
	}
	policy_view_free(v);
	policy_free(p);
}

/* What a node may open, as text: "peer,peer>proto/first-last,proto/first-last; ..." */
static void reach_str(const struct netmap_reach *r, char *buf, size_t len)
{
	size_t o = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < r->n_sets; i++) {
		const struct netmap_reach_set *s = &r->sets[i];

		o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? "; " : "", s->all ? "*" : "");
		for (unsigned k = 0; k < s->n_peers; k++)
			o += (size_t)snprintf(buf + o, len - o, "%s%llu", k ? "," : "",
					      (unsigned long long)r->peers[s->peer_off + k]);
		for (unsigned k = 0; k < s->n_ports; k++) {
			const struct netmap_reach_port *q = &r->ports[s->port_off + k];

			o += (size_t)snprintf(buf + o, len - o, "%s%u/%u-%u", k ? "," : ">",
					      q->proto, q->first, q->last);
		}
	}
}

/*
 * "*" when a node may open the same items on every peer it sees, whether or not it may open
 * them on itself and whatever it does not see; a list as soon as one peer it sees differs.
 */
static void test_reach_all(void)
{
	static const struct {
		const char *policy;
		size_t nodes; /* m[0 .. nodes) */
		const char *want[4];
	} cases[] = {
	    /* Everyone everywhere: the same bytes for 2 nodes and for 4 (a join: no change). */
	    {"{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
	     2,
	     {"*>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	      "*>1/0-65535,6/0-65535,17/0-65535,58/0-65535"}},
	    {"{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}",
	     4,
	     {"*>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	      "*>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	      "*>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	      "*>1/0-65535,6/0-65535,17/0-65535,58/0-65535"}},
	    /* u@x's devices among themselves: 4 (v@x) is hidden from them, and from it they are. */
	    {"{\"acls\": [{\"action\": \"accept\", \"src\": [\"u@x\"], \"dst\": [\"u@x:22\"],"
	     " \"proto\": \"tcp\"}]}",
	     4,
	     {"*>6/22-22", "*>6/22-22", "*>6/22-22", ""}},
	    /* 4 may reach 1: 1 sees 4 but may open nothing on it, so 1's is a list. */
	    {"{\"acls\": [{\"action\": \"accept\", \"src\": [\"u@x\"], \"dst\": [\"u@x:22\"],"
	     " \"proto\": \"tcp\"}, {\"action\": \"accept\", \"src\": [\"v@x\"],"
	     " \"dst\": [\"100.64.0.1:80\"], \"proto\": \"tcp\"}]}",
	     4,
	     {"1,2,3>6/22-22", "*>6/22-22", "*>6/22-22", "*>6/80-80"}},
	    /*
	     * Different items on two peers: a list, 2's too (its class is 1's and 3's: the server
	     * sends them one list, and on 2 the items differ).
	     */
	    {"{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\","
	     " \"100.64.0.2:80\"], \"proto\": \"tcp\"}]}",
	     3,
	     {"1,3>6/22-22; 2>6/22-22,6/80-80", "1,3>6/22-22; 2>6/22-22,6/80-80",
	      "1,3>6/22-22; 2>6/22-22,6/80-80"}},
	};
	struct policy_node m[4];
	char got[512];

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct policy *p = parse_ok(cases[c].policy);
		struct policy_view *v;

		for (unsigned i = 0; i < 4; i++)
			m[i] = mk("", i == 3 ? "v@x" : "u@x", NULL, i + 1);
		assert_int_equal(policy_compile(p, m, cases[c].nodes, &v), 0);
		for (size_t i = 0; i < cases[c].nodes; i++) {
			struct netmap_reach *r;

			assert_int_equal(policy_view_reach(v, m, i, &r), 0);
			assert_true(netmap_reach_valid(r));
			reach_str(r, got, sizeof(got));
			if (strcmp(got, cases[c].want[i]))
				fail_msg("case %zu, node %zu:\n got %s\nwant %s", c, i + 1, got,
					 cases[c].want[i]);
			/* One class, one answer (the server sends the class's to all its nodes). */
			for (size_t k = 0; k < i; k++)
				if (policy_view_class(v, i) == policy_view_class(v, k) &&
				    strcmp(cases[c].want[i], cases[c].want[k]))
					fail_msg("case %zu: nodes %zu and %zu, one class", c, k + 1,
						 i + 1);
			netmap_reach_free(r);
		}
		policy_view_free(v);
		policy_free(p);
	}
}

static void test_reach(void **state)
{
	static const char *const want[7] = {
	    /*
	     * alice-laptop: build (a host, tcp), server on 22, her phone (self, any) and itself
	     * (autogroup:self takes in the node, so that one class has one answer).
	     */
	    "9>6/0-65535; 5>6/22-22; 1,2>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	    "9>6/0-65535; 5>6/22-22; 1,2>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	    "9>6/0-65535; 5>6/22-22; 3>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	    /* carol: only her own devices, and she has one: herself; she sees no peer: "*". */
	    "*>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	    /* server: web on 80, 443, 8000-8999, ICMP whatever the ports. */
	    "6>1/0-65535,6/80-80,6/443-443,6/8000-8999,17/80-80,17/443-443,17/8000-8999,"
	    "58/0-65535",
	    "",
	    /* build: a member too (user "default"), so itself. */
	    "9>1/0-65535,6/0-65535,17/0-65535,58/0-65535",
	};
	/* Ranges merged when they overlap or touch; peers with the same items share a set. */
	static const char merged[] =
	    "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:20-30,25-40\","
	    " \"100.64.0.3:41,100-200\", \"100.64.0.0/30:50\"], \"proto\": \"tcp\"}]}";
	static const char *const want_merged =
	    "2,5>6/20-40; 1,4>6/20-40,6/50-50; 3>6/20-41,6/50-50,6/100-200";
	struct policy_node n[7], m[5];
	struct policy *p = parse_ok(example);
	struct policy_view *v;
	struct netmap_reach *r;
	char got[2048];

	(void)state;
	tailnet(n);
	assert_int_equal(policy_compile(p, n, 7, &v), 0);
	for (size_t i = 0; i < 7; i++) {
		assert_int_equal(policy_view_reach(v, n, i, &r), 0);
		assert_true(netmap_reach_valid(r));
		reach_str(r, got, sizeof(got));
		if (strcmp(got, want[i]))
			fail_msg("what %s may open:\n got %s\nwant %s", names[i], got, want[i]);
		netmap_reach_free(r);
	}
	assert_int_equal(policy_view_reach(v, n, 7, &r), -EINVAL);
	policy_view_free(v);
	policy_free(p);

	p = parse_ok(merged);
	/* 100.64.0.1, .5, .3, .2 (IPv4 only) and .6: 1, 3 and 4 in 100.64.0.0/30, 2 and 5 not. */
	for (unsigned i = 0; i < 5; i++)
		m[i] = mk("", "u@x", NULL, i + 1);
	m[1].addrs[0].addr[3] = 5;
	m[3].addrs[0].addr[3] = 2;
	m[3].n_addrs = 1;
	m[4].addrs[0].addr[3] = 6;
	assert_int_equal(policy_compile(p, m, 5, &v), 0);
	assert_int_equal(policy_view_reach(v, m, 0, &r), 0);
	reach_str(r, got, sizeof(got));
	if (strcmp(got, want_merged))
		fail_msg("merged:\n got %s\nwant %s", got, want_merged);
	netmap_reach_free(r);
	policy_view_free(v);
	policy_free(p);
	test_reach_all();
}

static void test_explain(void **state)
{
	struct policy_node n[7];
	struct policy *p = parse_ok(example);
	char why[POLICY_ERR_MAX];

	(void)state;
	tailnet(n);
	assert_int_equal(policy_explain(p, &n[0], &n[4], 22, 6, why), 0);
	assert_string_equal(why, "allowed by acls[0] (line 7): group:eng -> tag:server:22,build:* tcp");
	assert_int_equal(policy_explain(p, &n[0], &n[4], 80, 6, why), -1);
	assert_non_null(strstr(why, "no rule allows alice-laptop -> server on this port and protocol; "
				    "acls[0] (line 7)"));
	assert_int_equal(policy_explain(p, &n[0], &n[4], 22, 17, why), -1);
	assert_int_equal(policy_explain(p, &n[4], &n[0], 22, 6, why), -1);
	assert_string_equal(why, "denied: no rule has server as a source and alice-laptop as a "
				 "destination");
	assert_int_equal(policy_explain(p, &n[4], &n[5], 8080, 17, why), 2);
	/* ICMP has no ports: any port number matches a rule that allows ICMP. */
	assert_int_equal(policy_explain(p, &n[4], &n[5], 0, 1, why), 2);
	assert_int_equal(policy_explain(p, &n[1], &n[0], 5000, 17, why), 1);
	assert_int_equal(policy_reach(p, &n[0], &n[6], why, sizeof(why)), 1);
	assert_string_equal(why, "*/tcp");
	assert_int_equal(policy_reach(p, &n[0], &n[1], why, sizeof(why)), 1);
	assert_string_equal(why, "*/tcp,udp,icmp");
	assert_int_equal(policy_reach(p, &n[3], &n[4], why, sizeof(why)), 0);
	policy_free(p);
}

static void test_protocols_and_users(void **state)
{
	struct policy *p = parse_ok(
		"{\"hosts\": {\"net\": \"100.64.0.0/24\"},"
		" \"acls\": [{\"action\": \"accept\", \"users\": [\"default@\", \"100.64.0.0/24\"],"
		" \"ports\": [\"net:*\", \"[fd7e:11e5:7a11::6440:7]:53\"], \"proto\": \"17\"},"
		" {\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"autogroup:tagged:*\"], \"proto\": 132}]}");
	struct policy_node a = mk("a", "default", NULL, 1), b = mk("b", NULL, "tag:x", 7);
	struct policy_node far = mk("far", NULL, NULL, 0x105);

	(void)state;
	assert_int_equal(policy_explain(p, &a, &b, 53, 17, NULL), 0);
	assert_int_equal(policy_explain(p, &a, &b, 53, 6, NULL), -1);
	assert_int_equal(policy_explain(p, &a, &b, 9, 132, NULL), 1);
	assert_int_equal(policy_explain(p, &far, &b, 9, 132, NULL), 1);
	assert_int_equal(policy_explain(p, &far, &b, 53, 17, NULL), -1);
	assert_int_equal(policy_proto_parse("ipv6-icmp"), 58);
	assert_int_equal(policy_proto_parse("255"), 255);
	assert_int_equal(policy_proto_parse("256"), -EINVAL);
	assert_int_equal(policy_proto_parse("0"), -EINVAL);
	policy_free(p);
}

/* ---- property test ---- */

static uint64_t rng = 0x2545f4914f6cdd1dULL;

static unsigned rnd(unsigned n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (unsigned)(rng % n);
}

static const char *const pusers[] = { "u0@x", "u1@x", "u2@x", "u3@x" };
static const char *const ptags[] = { "tag:a", "tag:b", "tag:c" };

static void rnd_sel(char *buf, size_t len, bool dst)
{
	switch (rnd(dst ? 9 : 8)) {
	case 0: snprintf(buf, len, "*"); break;
	case 1: snprintf(buf, len, "%s", pusers[rnd(4)]); break;
	case 2: snprintf(buf, len, "group:g%u", rnd(2)); break;
	case 3: snprintf(buf, len, "%s", ptags[rnd(3)]); break;
	case 4: snprintf(buf, len, "autogroup:member"); break;
	case 5: snprintf(buf, len, "autogroup:tagged"); break;
	case 6: snprintf(buf, len, "100.64.0.%u/%u", rnd(4) * 4, 30); break;
	case 7: snprintf(buf, len, "h%u", rnd(2)); break;
	default: snprintf(buf, len, "autogroup:self"); break;
	}
}

static void rnd_policy(char *buf, size_t len)
{
	static const char *const protos[] = { "", "\"tcp\"", "\"udp\"", "\"icmp\"" };
	unsigned n = 1 + rnd(5);
	size_t o;

	o = (size_t)snprintf(buf, len,
			     "{\"groups\": {\"group:g0\": [\"u0@x\", \"u1@x\"], \"group:g1\": [\"u2@x\"]},"
			     " \"tagOwners\": {\"tag:a\": [], \"tag:b\": [], \"tag:c\": []},"
			     " \"hosts\": {\"h0\": \"100.64.0.3\", \"h1\": \"100.64.0.8/29\"}, \"acls\": [");
	for (unsigned i = 0; i < n; i++) {
		char s[64], d[64];
		unsigned pr = rnd(4), ns = 1 + rnd(2), nd = 1 + rnd(2);

		o += (size_t)snprintf(buf + o, len - o, "%s{\"action\": \"accept\", \"src\": [",
				      i ? "," : "");
		for (unsigned k = 0; k < ns; k++) {
			rnd_sel(s, sizeof(s), false);
			o += (size_t)snprintf(buf + o, len - o, "%s\"%s\"", k ? "," : "", s);
		}
		o += (size_t)snprintf(buf + o, len - o, "], \"dst\": [");
		for (unsigned k = 0; k < nd; k++) {
			const char *ports = pr == 3 ? "*" : rnd(2) ? "*" : rnd(2) ? "22" : "80,100-200";

			rnd_sel(d, sizeof(d), true);
			o += (size_t)snprintf(buf + o, len - o, "%s\"%s:%s\"", k ? "," : "", d, ports);
		}
		o += (size_t)snprintf(buf + o, len - o, "]%s%s}", pr ? ", \"proto\": " : "",
				      protos[pr]);
	}
	snprintf(buf + o, len - o, "]}");
}

static bool filter_admits(const struct netmap_filter *f, const struct netmap_prefix *src,
			  const struct netmap_prefix *dst, unsigned port, unsigned proto)
{
	for (unsigned i = 0; i < f->n_rules; i++) {
		const struct netmap_filter_rule *r = &f->rules[i];
		bool ok = false;

		for (unsigned k = 0; k < r->n_protos; k++)
			ok |= r->protos[k] == proto;
		if (r->n_protos && !ok)
			continue;
		ok = false;
		for (unsigned k = 0; k < r->n_src && !ok; k++) {
			const struct netmap_prefix *s = &f->srcs[r->src_off + k];
			unsigned full = s->len / 8, rest = s->len % 8;

			ok = s->family == src->family && !memcmp(s->addr, src->addr, full) &&
			     (!rest || !((s->addr[full] ^ src->addr[full]) & (0xff << (8 - rest))));
		}
		if (!ok)
			continue;
		for (unsigned k = 0; k < r->n_dst; k++) {
			const struct netmap_filter_dst *d = &f->dsts[r->dst_off + k];
			bool ported = proto == 6 || proto == 17 || proto == 132;

			if (d->prefix.family == dst->family && d->prefix.len == 32 &&
			    !memcmp(d->prefix.addr, dst->addr, 4) &&
			    (!ported || (port >= d->port_first && port <= d->port_last)))
				return true;
		}
	}
	return false;
}

/* Whether the reach lists (proto, port) on peer b of a ("*" takes in only the peers a sees). */
static bool reach_admits(const struct netmap_reach *r, const struct policy_view *v, size_t a,
			 size_t b, uint64_t id, unsigned port, unsigned proto)
{
	const struct netmap_reach_set *s = netmap_reach_find(r, id);

	if (s && s->all && !policy_view_sees(v, a, b))
		s = NULL;

	for (unsigned k = 0; s && k < s->n_ports; k++) {
		const struct netmap_reach_port *q = &r->ports[s->port_off + k];

		if (q->proto == proto && port >= q->first && port <= q->last)
			return true;
	}
	return false;
}

static void test_property(void **state)
{
	static const unsigned ports[] = { 0, 22, 80, 150, 443 };
	static const unsigned protos[] = { 6, 17, 1, 58, 132 };
	char text[4096], err[POLICY_ERR_MAX];
	unsigned checked = 0;

	(void)state;
	for (int round = 0; round < 300; round++) {
		struct policy_node n[12];
		size_t nn = 2 + rnd(11);
		struct policy *p = NULL;
		struct policy_view *v;
		struct netmap_filter *f[12];
		struct netmap_reach *re[12];

		rnd_policy(text, sizeof(text));
		if (policy_parse(text, strlen(text), &p, err))
			fail_msg("%s: %s", text, err);
		for (size_t i = 0; i < nn; i++) {
			unsigned kind = rnd(3);
			char tags[32];

			snprintf(tags, sizeof(tags), "%s%s%s", ptags[rnd(3)], rnd(2) ? "," : "",
				 "");
			if (tags[strlen(tags) - 1] == ',')
				snprintf(tags + strlen(tags), sizeof(tags) - strlen(tags), "%s",
					 ptags[rnd(3)]);
			n[i] = mk("", kind == 0 ? NULL : pusers[rnd(4)], kind == 0 ? tags : NULL,
				  (unsigned)i + 1);
			snprintf(n[i].name, sizeof(n[i].name), "n%zu", i);
		}
		assert_int_equal(policy_compile(p, n, nn, &v), 0);
		for (size_t i = 0; i < nn; i++) {
			assert_int_equal(policy_view_filter(v, n, i, &f[i]), 0);
			assert_int_equal(policy_view_reach(v, n, i, &re[i]), 0);
			assert_true(netmap_reach_valid(re[i]));
			/* One class, one answer: what lets the server compute it once per class. */
			for (size_t k = 0; k < i; k++)
				assert_true(policy_view_class(v, i) != policy_view_class(v, k) ||
					    netmap_reach_equal(re[i], re[k]));
		}
		for (size_t a = 0; a < nn; a++) {
			for (size_t b = 0; b < nn; b++) {
				bool any = a != b && (policy_explain(p, &n[a], &n[b], -1, 0, NULL) >= 0 ||
						      policy_explain(p, &n[b], &n[a], -1, 0, NULL) >= 0);

				if (policy_view_sees(v, a, b) != any)
					fail_msg("%s\n%s sees %s: %d, rules say %d", text, n[a].name,
						 n[b].name, policy_view_sees(v, a, b), any);
				for (size_t pi = 0; pi < 5; pi++) {
					for (size_t qi = 0; qi < 5; qi++) {
						bool ex = policy_explain(p, &n[a], &n[b], (int)ports[pi],
									 protos[qi], NULL) >= 0;
						bool fa = filter_admits(f[b], &n[a].addrs[0],
									&n[b].addrs[0], ports[pi],
									protos[qi]);

						bool ra =
						    a != b && reach_admits(re[a], v, a, b, n[b].id,
									   ports[pi], protos[qi]);

						if (ex != fa || (a != b && ex != ra))
							fail_msg("%s\n%s -> %s port %u proto %u: "
								 "explain "
								 "%d, filter %d, reach %d",
								 text, n[a].name, n[b].name,
								 ports[pi], protos[qi], ex, fa, ra);
						checked++;
					}
				}
			}
		}
		for (size_t i = 0; i < nn; i++) {
			netmap_filter_free(f[i]);
			netmap_reach_free(re[i]);
		}
		policy_view_free(v);
		policy_free(p);
	}
	assert_true(checked > 10000);
}

static bool filter_equal(const struct netmap_filter *a, const struct netmap_filter *b)
{
	return a->n_rules == b->n_rules && a->n_srcs == b->n_srcs && a->n_dsts == b->n_dsts &&
	       (!a->n_rules || !memcmp(a->rules, b->rules, a->n_rules * sizeof(*a->rules))) &&
	       (!a->n_srcs || !memcmp(a->srcs, b->srcs, a->n_srcs * sizeof(*a->srcs))) &&
	       (!a->n_dsts || !memcmp(a->dsts, b->dsts, a->n_dsts * sizeof(*a->dsts)));
}

/*
 * policy_view_filter_same never claims a filter stayed when it changed: random policies,
 * each against itself (every filter stays), against itself with one port moved, and against
 * another random policy, over the same random nodes.
 */
static void test_filter_same(void **state)
{
	char text[4096], text2[4096], err[POLICY_ERR_MAX];
	unsigned same = 0, differ = 0;

	(void)state;
	for (int round = 0; round < 300; round++) {
		struct policy_node n[12];
		size_t nn = 2 + rnd(11);
		struct policy *p = NULL, *q = NULL;
		struct policy_view *v, *w;
		unsigned how = rnd(3);
		char *at;

		rnd_policy(text, sizeof(text));
		if (how == 2) {
			rnd_policy(text2, sizeof(text2));
		} else {
			snprintf(text2, sizeof(text2), "%s", text);
			if (how == 1 && (at = strstr(text2, ":22\"")))
				at[2] = '3';
		}
		if (policy_parse(text, strlen(text), &p, err) ||
		    policy_parse(text2, strlen(text2), &q, err))
			fail_msg("%s: %s", text, err);
		for (size_t i = 0; i < nn; i++) {
			unsigned kind = rnd(3);

			n[i] = mk("", kind == 0 ? NULL : pusers[rnd(4)],
				  kind == 0 ? ptags[rnd(3)] : NULL, (unsigned)i + 1);
		}
		assert_int_equal(policy_compile(p, n, nn, &v), 0);
		assert_int_equal(policy_compile(q, n, nn, &w), 0);
		assert_int_equal(policy_view_match(v, w), 0);
		for (size_t i = 0; i < nn; i++) {
			struct netmap_filter *a, *b;

			assert_int_equal(policy_view_filter(v, n, i, &a), 0);
			assert_int_equal(policy_view_filter(w, n, i, &b), 0);
			if (policy_view_filter_same(v, w, i)) {
				if (!filter_equal(a, b))
					fail_msg("%s\n%s\nnode %zu: said to keep its filter", text,
						 text2, i);
				same++;
			} else {
				/* The same text compiles to the same rules: nothing may be rebuilt.
				 */
				assert_int_not_equal(how, 0);
				differ++;
			}
			netmap_filter_free(a);
			netmap_filter_free(b);
		}
		policy_view_free(v);
		policy_view_free(w);
		policy_free(p);
		policy_free(q);
	}
	assert_true(same > 500 && differ > 100);
}

/*
 * Issue 12's bad-input bound: a policy of about 1 MiB with 10,000 rules (groups, tags,
 * prefixes, port lists) parses, compiles over 2,000 nodes and gives every node its filter and
 * what it may open, in bounded memory (under ASan, which CI builds: the peak of what parse and
 * compile hold, counted through the allocator hooks) and time (the test's timeout). The
 * fuzzer's inputs are a few KiB; this is the size the issue names.
 */
#define BIG_RULES 10000
#define BIG_NODES 2000

static void test_big_policy(void **state)
{
	size_t cap = 2u << 20, o = 0;
	char *text = malloc(cap), err[POLICY_ERR_MAX];
	struct policy_node *n = calloc(BIG_NODES, sizeof(*n));
	struct policy *p = NULL;
	struct policy_view *v = NULL;
	unsigned seed = 12;

	(void)state;
	assert_true(text && n);
	o += (size_t)snprintf(text + o, cap - o, "{\"groups\": {");
	for (unsigned g = 0; g < 100; g++)
		o += (size_t)snprintf(text + o, cap - o, "%s\"group:g%u\": [\"u%u@example.com\"]",
				      g ? ", " : "", g, g);
	o += (size_t)snprintf(text + o, cap - o, "},\n\"tagOwners\": {");
	for (unsigned t = 0; t < 100; t++)
		o += (size_t)snprintf(text + o, cap - o, "%s\"tag:t%u\": [\"group:g%u\"]",
				      t ? ", " : "", t, t);
	o += (size_t)snprintf(text + o, cap - o, "},\n\"acls\": [\n");
	for (unsigned i = 0; i < BIG_RULES; i++) {
		unsigned a = (unsigned)rand_r(&seed), b = (unsigned)rand_r(&seed);

		o += (size_t)snprintf(
		    text + o, cap - o,
		    "  {\"action\": \"accept\", \"src\": [\"group:g%u\", \"100.64.%u.%u/28\"], "
		    "\"dst\": [\"tag:t%u:%u,%u-%u\", \"100.64.%u.0/26:443\"], \"proto\": \"%s\"},"
		    " // rule %u\n",
		    a % 100, b % 8, a % 16 * 16, b % 100, 1 + a % 60000, 2 + b % 60000,
		    2 + b % 60000 + a % 50, a % 8, a % 3 ? "tcp" : "udp", i);
	}
	o += (size_t)snprintf(text + o, cap - o, "]}\n");
	assert_true(o > 1000000 && o < cap - 1);
	for (unsigned i = 0; i < BIG_NODES; i++) {
		char user[32], tag[16];

		snprintf(user, sizeof(user), "u%u@example.com", i % 100);
		snprintf(tag, sizeof(tag), "tag:t%u", i % 100);
		n[i] = mk("", i % 2 ? user : NULL, i % 2 ? NULL : tag, i + 1);
		snprintf(n[i].name, sizeof(n[i].name), "n%u", i);
	}
#ifdef HAVE_ASAN
	alloc_count_install();
	live_bytes = peak_bytes = 0;
	counting = 1;
#endif
	if (policy_parse(text, o, &p, err))
		fail_msg("%s", err);
	assert_int_equal(policy_rule_count(p), BIG_RULES);
#ifdef HAVE_ASAN
	counting = 0;
	print_message("1 MiB policy, %zu bytes: parse held at most %zu KiB\n", o,
		      (size_t)peak_bytes / 1024);
	/* The parsed form is a small multiple of the text, never a blow-up of it. */
	assert_true(peak_bytes < 32 * o);
	live_bytes = peak_bytes = 0;
	counting = 1;
#endif
	assert_int_equal(policy_compile(p, n, BIG_NODES, &v), 0);
	for (size_t i = 0; i < BIG_NODES; i += 97) {
		struct netmap_filter *f = NULL;
		struct netmap_reach *r = NULL;

		assert_int_equal(policy_view_filter(v, n, i, &f), 0);
		assert_true(netmap_filter_valid(f));
		assert_int_equal(policy_view_reach(v, n, i, &r), 0);
		assert_true(netmap_reach_valid(r));
		netmap_filter_free(f);
		netmap_reach_free(r);
	}
#ifdef HAVE_ASAN
	counting = 0;
	print_message("compile over %u nodes held at most %zu KiB\n", BIG_NODES,
		      (size_t)peak_bytes / 1024);
	/* O(rules x nodes / 64) words per rule member (policy.h): a few bitsets per rule. */
	assert_true(peak_bytes < (size_t)BIG_RULES * BIG_NODES / 8 * 16);
#endif
	policy_view_free(v);
	policy_free(p);
	free(n);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_errors),   cmocka_unit_test(test_tests_in_policy),
	    cmocka_unit_test(test_views),    cmocka_unit_test(test_filters),
	    cmocka_unit_test(test_explain),  cmocka_unit_test(test_protocols_and_users),
	    cmocka_unit_test(test_property), cmocka_unit_test(test_filter_same),
	    cmocka_unit_test(test_reach),    cmocka_unit_test(test_big_policy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
