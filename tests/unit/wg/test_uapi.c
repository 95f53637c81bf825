/* SPDX-License-Identifier: MIT */
/* The UAPI text protocol: set parsing (good and bad input) and get formatting. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "base/log.h"
#include "wg/uapi.h"

#define K1 "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a"
#define K2 "C4C8E984C5322C8184C72265B92B250FDB63688705F504BA003C88F03393CF28"
#define K3 "0000000000000000000000000000000000000000000000000000000000000000"
#define K4 "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52"

static int parse(const char *s, struct wg_device_cfg **ret, unsigned *line)
{
	return wg_uapi_set_parse(s, strlen(s), ret, line);
}

static void hex_to_key(uint8_t *out, const char *hex)
{
	for (int i = 0; i < 32; i++) {
		unsigned x;

		assert_int_equal(sscanf(hex + 2 * i, "%2x", &x), 1);
		out[i] = (uint8_t)x;
	}
}

static void assert_key(const uint8_t *key, const char *hex)
{
	uint8_t want[32];

	hex_to_key(want, hex);
	assert_memory_equal(key, want, 32);
}

static void assert_aip(const struct wg_allowedip *a, int family, const char *addr, unsigned cidr)
{
	uint8_t want[16] = {0};

	assert_int_equal(a->family, family);
	assert_int_equal(a->cidr, cidr);
	assert_int_equal(inet_pton(family, addr, want), 1);
	assert_memory_equal(a->addr, want, family == AF_INET ? 4 : 16);
}

static void test_good(void **state)
{
	static const char req[] = "private_key=" K1 "\n"
				  "listen_port=51820\n"
				  "fwmark=4294967295\n"
				  "replace_peers=true\n"
				  "public_key=" K2 "\n"
				  "preshared_key=" K4 "\n"
				  "endpoint=192.0.2.1:51821\n"
				  "persistent_keepalive_interval=25\n"
				  "replace_allowed_ips=true\n"
				  "allowed_ip=100.64.0.1/32\n"
				  "allowed_ip=198.18.0.0/15\n"
				  "allowed_ip=2001:db8::/32\n"
				  "allowed_ip=::/0\n"
				  "protocol_version=1\n"
				  "public_key=" K4 "\n"
				  "update_only=true\n"
				  "endpoint=[2001:db8::1]:65535\n"
				  "allowed_ip=0.0.0.0/0\n"
				  "persistent_keepalive_interval=0\n"
				  "public_key=" K1 "\n"
				  "remove=true\n";
	struct wg_device_cfg *cfg = NULL;
	const struct wg_peer_cfg *p;
	char buf[ENDPOINT_STR_MAX];
	unsigned line = 0;

	(void)state;
	assert_int_equal(parse(req, &cfg, &line), 0);
	assert_non_null(cfg);
	assert_true(cfg->has_private_key);
	assert_key(cfg->private_key, K1);
	assert_true(cfg->has_listen_port);
	assert_int_equal(cfg->listen_port, 51820);
	assert_true(cfg->has_fwmark);
	assert_int_equal(cfg->fwmark, 4294967295U);
	assert_true(cfg->replace_peers);
	assert_int_equal(cfg->n_peers, 3);

	p = &cfg->peers[0];
	assert_key(p->public_key, K2);
	assert_false(p->remove);
	assert_false(p->update_only);
	assert_true(p->has_preshared_key);
	assert_key(p->preshared_key, K4);
	assert_true(p->has_endpoint);
	assert_string_equal(endpoint_format(&p->endpoint, buf, sizeof(buf)), "192.0.2.1:51821");
	assert_true(p->has_persistent_keepalive);
	assert_int_equal(p->persistent_keepalive, 25);
	assert_true(p->replace_allowedips);
	assert_int_equal(p->n_allowedips, 4);
	assert_aip(&p->allowedips[0], AF_INET, "100.64.0.1", 32);
	assert_aip(&p->allowedips[1], AF_INET, "198.18.0.0", 15);
	assert_aip(&p->allowedips[2], AF_INET6, "2001:db8::", 32);
	assert_aip(&p->allowedips[3], AF_INET6, "::", 0);

	p = &cfg->peers[1];
	assert_key(p->public_key, K4);
	assert_true(p->update_only);
	assert_false(p->remove);
	assert_false(p->has_preshared_key);
	assert_false(p->replace_allowedips);
	assert_true(p->has_endpoint);
	assert_string_equal(endpoint_format(&p->endpoint, buf, sizeof(buf)), "[2001:db8::1]:65535");
	assert_true(p->has_persistent_keepalive);
	assert_int_equal(p->persistent_keepalive, 0);
	assert_int_equal(p->n_allowedips, 1);
	assert_aip(&p->allowedips[0], AF_INET, "0.0.0.0", 0);

	p = &cfg->peers[2];
	assert_key(p->public_key, K1);
	assert_true(p->remove);
	assert_false(p->has_endpoint);
	assert_false(p->has_persistent_keepalive);
	assert_int_equal(p->n_allowedips, 0);
	wg_device_cfg_free(cfg);
	wg_device_cfg_free(NULL);
}

static void test_edge_good(void **state)
{
	struct wg_device_cfg *cfg = NULL;

	(void)state;
	/* Empty request: nothing changes. */
	assert_int_equal(wg_uapi_set_parse("", 0, &cfg, NULL), 0);
	assert_int_equal(cfg->n_peers, 0);
	assert_false(cfg->has_private_key);
	wg_device_cfg_free(cfg);

	/* Zero keys remove; CRLF and a missing final newline are tolerated; an empty line ends. */
	assert_int_equal(parse("private_key=" K3 "\r\nlisten_port=0\nfwmark=0\npublic_key=" K2
			       "\npreshared_key=" K3 "\nallowed_ip=192.0.2.77/24\n"
			       "replace_allowed_ips=true\nallowed_ip=::ffff:192.0.2.1/128",
			       &cfg, NULL),
			 0);
	assert_true(cfg->has_private_key);
	assert_key(cfg->private_key, K3);
	assert_true(cfg->has_listen_port);
	assert_int_equal(cfg->listen_port, 0);
	assert_true(cfg->has_fwmark);
	assert_int_equal(cfg->n_peers, 1);
	assert_true(cfg->peers[0].has_preshared_key);
	/* replace_allowed_ips also drops the lines before it, as wireguard-go does. */
	assert_true(cfg->peers[0].replace_allowedips);
	assert_int_equal(cfg->peers[0].n_allowedips, 1);
	assert_aip(&cfg->peers[0].allowedips[0], AF_INET6, "::ffff:192.0.2.1", 128);
	wg_device_cfg_free(cfg);

	assert_int_equal(parse("listen_port=1\n\nbogus\n", &cfg, NULL), 0);
	assert_int_equal(cfg->listen_port, 1);
	wg_device_cfg_free(cfg);

	/* Leading zeros are fine in numbers (strconv), host bits are kept for the trie to mask. */
	assert_int_equal(parse("listen_port=00080\npublic_key=" K2
			       "\npersistent_keepalive_interval=65535\nallowed_ip=192.0.2.77/24\n"
			       "endpoint=[fe80::1%lo]:1\n",
			       &cfg, NULL),
			 0);
	assert_int_equal(cfg->listen_port, 80);
	assert_int_equal(cfg->peers[0].persistent_keepalive, 65535);
	assert_aip(&cfg->peers[0].allowedips[0], AF_INET, "192.0.2.77", 24);
	assert_int_not_equal(cfg->peers[0].endpoint.in6.sin6_scope_id, 0);
	wg_device_cfg_free(cfg);
}

struct bad_case {
	const char *text;
	size_t len; /* 0: strlen */
	int err;
	unsigned line;
};

static const struct bad_case bad_cases[] = {
    /* keys */
    {"private_key=" K1 "0\n", 0, -EINVAL, 1},
    {"private_key=e84b5a6d\n", 0, -EINVAL, 1},
    {"private_key=\n", 0, -EINVAL, 1},
    {"private_key=g84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\n", 0, -EINVAL,
     1},
    {"private_key= 84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\n", 0, -EINVAL,
     1},
    {"public_key=" K1 "\npreshared_key=" K2 "x\n", 0, -EINVAL, 2},
    {"public_key=6E65ce0be17517110c17d77288ad87e7fd5252dcc7d09b95a39d61db03df832a=\n", 0, -EINVAL,
     1},
    {"public_key=\n", 0, -EINVAL, 1},
    /* unknown keys, and keys in the wrong section */
    {"bogus=1\n", 0, -EINVAL, 1},
    {"Private_key=" K1 "\n", 0, -EINVAL, 1},
    {"allowed_ip=192.0.2.0/24\n", 0, -EINVAL, 1},
    {"endpoint=192.0.2.1:1\npublic_key=" K1 "\n", 0, -EINVAL, 1},
    {"public_key=" K1 "\nlisten_port=1\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nprivate_key=" K1 "\n", 0, -EINVAL, 2},
    {"protocol_version=1\n", 0, -EINVAL, 1},
    {"public_key=" K1 "\nfoo=bar\n", 0, -EINVAL, 2},
    /* malformed lines */
    {"listen_port\n", 0, -EPROTO, 1},
    {"listen_port=1\npublic_key=" K1 "\nremove\n", 0, -EPROTO, 3},
    {"listen_port=1\0\n", 15, -EINVAL, 1},
    {"private_key=" K1 "\0\n", 78, -EINVAL, 1},
    {"list\0en_port=1\n", 15, -EINVAL, 1},
    /* numbers */
    {"listen_port=65536\n", 0, -EINVAL, 1},
    {"listen_port=-1\n", 0, -EINVAL, 1},
    {"listen_port=+1\n", 0, -EINVAL, 1},
    {"listen_port= 1\n", 0, -EINVAL, 1},
    {"listen_port=1 \n", 0, -EINVAL, 1},
    {"listen_port=0x10\n", 0, -EINVAL, 1},
    {"listen_port=\n", 0, -EINVAL, 1},
    {"listen_port=99999999999999999999999999\n", 0, -EINVAL, 1},
    {"fwmark=4294967296\n", 0, -EINVAL, 1},
    {"fwmark=18446744073709551617\n", 0, -EINVAL, 1},
    {"public_key=" K1 "\npersistent_keepalive_interval=65536\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\npersistent_keepalive_interval=x\n", 0, -EINVAL, 2},
    /* booleans */
    {"replace_peers=false\n", 0, -EINVAL, 1},
    {"replace_peers=1\n", 0, -EINVAL, 1},
    {"public_key=" K1 "\nremove=yes\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nupdate_only=\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nreplace_allowed_ips=TRUE\n", 0, -EINVAL, 2},
    /* allowed IPs */
    {"public_key=" K1 "\nallowed_ip=192.0.2.0/33\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=2001:db8::/129\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=192.0.2.0\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=192.0.2.0/\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=192.0.2.0/08\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=192.0.2.0/-1\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=192.0.2/24\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=192.0.2.256/32\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=/0\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=fe80::1%lo/64\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=192.0.2.0/24/24\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nallowed_ip=host.example/32\n", 0, -EINVAL, 2},
    /* endpoints */
    {"public_key=" K1 "\nendpoint=192.0.2.1\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nendpoint=192.0.2.1:65536\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nendpoint=2001:db8::1:80\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nendpoint=[2001:db8::1]\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nendpoint=vpn.example.com:51820\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nendpoint=\n", 0, -EINVAL, 2},
    /* protocol version */
    {"public_key=" K1 "\nprotocol_version=2\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nprotocol_version=01\n", 0, -EINVAL, 2},
    {"public_key=" K1 "\nprotocol_version=\n", 0, -EINVAL, 2},
};

static void test_bad(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++) {
		const struct bad_case *c = &bad_cases[i];
		struct wg_device_cfg *cfg = (struct wg_device_cfg *)0x1;
		unsigned line = 0;
		size_t len = c->len ? c->len : strlen(c->text);
		int r = wg_uapi_set_parse(c->text, len, &cfg, &line);

		if (r != c->err || line != c->line)
			fail_msg("case %zu (%s): got %d at line %u, want %d at line %u", i, c->text,
				 r, line, c->err, c->line);
		/* ret is left alone on failure. */
		assert_ptr_equal(cfg, (struct wg_device_cfg *)0x1);
	}
}

static void test_long_line(void **state)
{
	size_t n = 1 << 20;
	char *s = malloc(n + 32);
	struct wg_device_cfg *cfg = NULL;
	unsigned line = 0;

	(void)state;
	assert_non_null(s);
	memset(s, 'a', n + 12);
	memcpy(s, "private_key=", 12);
	s[n + 12] = '\n';
	s[n + 13] = '\0';
	assert_int_equal(wg_uapi_set_parse(s, strlen(s), &cfg, &line), -EINVAL);
	assert_int_equal(line, 1);
	memset(s, 'x', n + 31);
	s[n + 31] = '\0';
	assert_int_equal(wg_uapi_set_parse(s, strlen(s), &cfg, &line), -EPROTO);
	free(s);
}

static void test_caps(void **state)
{
	static const char peer_line[] = "public_key=" K1 "\n";
	size_t plen = sizeof(peer_line) - 1;
	size_t n = UAPI_MAX_PEERS + 1;
	char *s = malloc(n * plen + 1);
	struct wg_device_cfg *cfg = NULL;
	unsigned line = 0;

	(void)state;
	assert_non_null(s);
	for (size_t i = 0; i < n; i++)
		memcpy(s + i * plen, peer_line, plen);
	/* Exactly at the cap is fine... */
	assert_int_equal(wg_uapi_set_parse(s, (n - 1) * plen, &cfg, &line), 0);
	assert_int_equal(cfg->n_peers, UAPI_MAX_PEERS);
	wg_device_cfg_free(cfg);
	/* ... one more is not. */
	assert_int_equal(wg_uapi_set_parse(s, n * plen, &cfg, &line), -ENOMEM);
	assert_int_equal(line, n);
	free(s);

	/* The request size cap is checked before anything is read. */
	assert_int_equal(wg_uapi_set_parse("", (size_t)UAPI_MAX_REQUEST + 1, &cfg, &line), -ENOMEM);
}

/* Allowed IPs up to the cap in one request (the size cap allows just under 2^20 of them). */
static void test_allowedips_many(void **state)
{
	static const char aip[] = "allowed_ip=::/0\n";
	size_t alen = sizeof(aip) - 1, hdr = strlen("public_key=" K1 "\n");
	size_t n = (UAPI_MAX_REQUEST - hdr) / alen;
	char *s = malloc(hdr + n * alen + 1);
	struct wg_device_cfg *cfg = NULL;

	(void)state;
	assert_non_null(s);
	memcpy(s, "public_key=" K1 "\n", hdr);
	for (size_t i = 0; i < n; i++)
		memcpy(s + hdr + i * alen, aip, alen);
	assert_int_equal(wg_uapi_set_parse(s, hdr + n * alen, &cfg, NULL), 0);
	assert_int_equal(cfg->peers[0].n_allowedips, n);
	wg_device_cfg_free(cfg);
	free(s);
}

static struct wg_device_info *sample_info(void)
{
	struct wg_device_info *info = calloc(1, sizeof(*info));
	struct wg_peer_info *p;

	assert_non_null(info);
	info->has_private_key = true;
	hex_to_key(info->private_key, K1);
	info->listen_port = 51820;
	info->fwmark = 7;
	info->n_peers = 2;
	info->peers = calloc(2, sizeof(*info->peers));
	assert_non_null(info->peers);

	p = &info->peers[0];
	hex_to_key(p->public_key, K2);
	p->has_preshared_key = true;
	hex_to_key(p->preshared_key, K4);
	assert_int_equal(endpoint_parse(&p->endpoint, "192.0.2.1:51821"), 0);
	p->last_handshake_wall_ns = 1700000000123456789ULL;
	p->rx_bytes = 1234;
	p->tx_bytes = 18446744073709551615ULL;
	p->persistent_keepalive = 25;
	p->n_allowedips = 3;
	p->allowedips = calloc(3, sizeof(*p->allowedips));
	assert_non_null(p->allowedips);
	p->allowedips[0] = (struct wg_allowedip){.family = AF_INET, .cidr = 32};
	inet_pton(AF_INET, "100.64.0.1", p->allowedips[0].addr);
	p->allowedips[1] = (struct wg_allowedip){.family = AF_INET, .cidr = 15};
	inet_pton(AF_INET, "198.18.0.0", p->allowedips[1].addr);
	p->allowedips[2] = (struct wg_allowedip){.family = AF_INET6, .cidr = 32};
	inet_pton(AF_INET6, "2001:db8::", p->allowedips[2].addr);

	p = &info->peers[1];
	hex_to_key(p->public_key, K4);
	assert_int_equal(endpoint_parse(&p->endpoint, "[2001:db8::1]:1"), 0);
	return info;
}

static const char sample_text[] =
    "private_key=" K1 "\n"
    "listen_port=51820\n"
    "fwmark=7\n"
    "public_key=c4c8e984c5322c8184c72265b92b250fdb63688705f504ba003c88f03393cf28\n"
    "preshared_key=" K4 "\n"
    "protocol_version=1\n"
    "endpoint=192.0.2.1:51821\n"
    "last_handshake_time_sec=1700000000\n"
    "last_handshake_time_nsec=123456789\n"
    "tx_bytes=18446744073709551615\n"
    "rx_bytes=1234\n"
    "persistent_keepalive_interval=25\n"
    "allowed_ip=100.64.0.1/32\n"
    "allowed_ip=198.18.0.0/15\n"
    "allowed_ip=2001:db8::/32\n"
    "public_key=" K4 "\n"
    "protocol_version=1\n"
    "endpoint=[2001:db8::1]:1\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=0\n"
    "persistent_keepalive_interval=0\n";

static void test_get_format(void **state)
{
	struct wg_device_info *info = sample_info();
	struct wg_device_info empty = {0};
	char *text = NULL;
	int n;

	(void)state;
	n = wg_uapi_get_format(info, &text);
	assert_int_equal(n, (int)strlen(sample_text));
	assert_string_equal(text, sample_text);
	free(text);
	wg_device_info_free(info);
	wg_device_info_free(NULL);

	/* A blank device says nothing at all. */
	n = wg_uapi_get_format(&empty, &text);
	assert_int_equal(n, 0);
	assert_string_equal(text, "");
	free(text);
}

/* get output, minus the read-only keys, is a valid set request describing the same state. */
static void test_round_trip(void **state)
{
	struct wg_device_info *info = sample_info();
	struct wg_device_cfg *cfg = NULL;
	char *text = NULL, *set, *w;
	const char *line;
	int n;

	(void)state;
	n = wg_uapi_get_format(info, &text);
	assert_true(n > 0);
	set = calloc(1, (size_t)n + 1);
	assert_non_null(set);
	w = set;
	for (line = text; *line;) {
		const char *nl = strchr(line, '\n');
		size_t len = (size_t)(nl - line) + 1;

		if (strncmp(line, "last_handshake", 14) && strncmp(line, "tx_bytes", 8) &&
		    strncmp(line, "rx_bytes", 8)) {
			memcpy(w, line, len);
			w += len;
		}
		line = nl + 1;
	}
	assert_int_equal(wg_uapi_set_parse(set, strlen(set), &cfg, NULL), 0);
	assert_true(cfg->has_private_key);
	assert_memory_equal(cfg->private_key, info->private_key, 32);
	assert_int_equal(cfg->listen_port, info->listen_port);
	assert_int_equal(cfg->fwmark, info->fwmark);
	assert_int_equal(cfg->n_peers, info->n_peers);
	for (unsigned i = 0; i < cfg->n_peers; i++) {
		const struct wg_peer_cfg *c = &cfg->peers[i];
		const struct wg_peer_info *p = &info->peers[i];

		assert_memory_equal(c->public_key, p->public_key, 32);
		assert_int_equal(c->has_preshared_key, p->has_preshared_key);
		if (p->has_preshared_key)
			assert_memory_equal(c->preshared_key, p->preshared_key, 32);
		assert_true(endpoint_equal(&c->endpoint, &p->endpoint));
		assert_int_equal(c->persistent_keepalive, p->persistent_keepalive);
		assert_int_equal(c->n_allowedips, p->n_allowedips);
		for (unsigned j = 0; j < c->n_allowedips; j++)
			assert_memory_equal(&c->allowedips[j], &p->allowedips[j],
					    sizeof(struct wg_allowedip));
	}
	wg_device_cfg_free(cfg);
	free(set);
	free(text);
	wg_device_info_free(info);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_good),       cmocka_unit_test(test_edge_good),
	    cmocka_unit_test(test_bad),	       cmocka_unit_test(test_long_line),
	    cmocka_unit_test(test_caps),       cmocka_unit_test(test_allowedips_many),
	    cmocka_unit_test(test_get_format), cmocka_unit_test(test_round_trip),
	};

	/* The parser explains every rejection at WARN; the bad-input table would flood. */
	log_set_level(-1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
