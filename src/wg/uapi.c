/* SPDX-License-Identifier: MIT */
/*
 * The cross-platform userspace API (wireguard.com/xplatform), text side only.
 *
 * A set request is parsed completely into a struct wg_device_cfg before the
 * device sees any of it, so a bad line rejects the whole request and the device
 * applies a good one atomically. Lines before the first public_key configure
 * the device; each public_key starts a peer and every later line configures
 * that peer. Error codes follow wireguard-go, which wg(8) users know:
 * a line without '=' is -EPROTO, anything else malformed (bad value, unknown
 * key, key in the wrong section, protocol_version other than 1) is -EINVAL,
 * and requests beyond the UAPI_MAX_* caps are -ENOMEM.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"
#include "base/util.h"
#include "crypto/crypto.h"
#include "wg/uapi.h"

struct parser {
	struct wg_device_cfg *cfg;
	struct wg_peer_cfg *peer; /* the peer being configured, NULL in the device section */
	unsigned peers_cap;
	unsigned allowedips_cap; /* of the current peer */
	unsigned total_allowedips;
	const char *why; /* for the log message */
};

static int parse_key(uint8_t ret[WG_KEY_LEN], const char *v, size_t len)
{
	uint8_t key[WG_KEY_LEN];
	int r = 0;

	if (len != 2 * WG_KEY_LEN)
		return -EINVAL;
	for (size_t i = 0; i < WG_KEY_LEN; i++) {
		int hi = hex_digit(v[2 * i]), lo = hex_digit(v[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			r = -EINVAL;
			goto out;
		}
		key[i] = (uint8_t)(hi << 4 | lo);
	}
	memcpy(ret, key, WG_KEY_LEN);
out:
	crypto_wipe(key, sizeof(key));
	return r;
}

/* Decimal, digits only (no sign, no spaces, leading zeros allowed as strconv does). */
static int parse_uint(uint64_t *ret, const char *v, size_t len, uint64_t max)
{
	uint64_t x = 0;

	if (len == 0)
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		x = x * 10 + (uint64_t)(v[i] - '0');
		if (x > max)
			return -EINVAL;
	}
	*ret = x;
	return 0;
}

static bool value_is(const char *v, size_t len, const char *want)
{
	return len == strlen(want) && !memcmp(v, want, len);
}

/* Copies v into a NUL-terminated buffer, or fails if it does not fit. */
static int copy_str(char *buf, size_t size, const char *v, size_t len)
{
	if (len >= size)
		return -EINVAL;
	memcpy(buf, v, len);
	buf[len] = '\0';
	return 0;
}

/* "a.b.c.d/n" or "v6/n", as netip.ParsePrefix takes it: no zone, no bare address. */
static int parse_allowedip(struct wg_allowedip *ret, const char *v, size_t len)
{
	char host[INET6_ADDRSTRLEN];
	const char *slash = memchr(v, '/', len);
	struct wg_allowedip aip;
	uint64_t cidr;
	size_t bits_len;
	int r;

	if (!slash)
		return -EINVAL;
	memset(&aip, 0, sizeof(aip));
	r = copy_str(host, sizeof(host), v, (size_t)(slash - v));
	if (r < 0)
		return r;
	bits_len = len - (size_t)(slash - v) - 1;
	/* "/08" and "/+8" are not prefixes. */
	if (bits_len > 1 && slash[1] == '0')
		return -EINVAL;
	if (inet_pton(AF_INET, host, aip.addr) == 1)
		aip.family = AF_INET;
	else if (inet_pton(AF_INET6, host, aip.addr) == 1)
		aip.family = AF_INET6;
	else
		return -EINVAL;
	r = parse_uint(&cidr, slash + 1, bits_len, aip.family == AF_INET ? 32 : 128);
	if (r < 0)
		return r;
	aip.cidr = (uint8_t)cidr;
	*ret = aip;
	return 0;
}

/*
 * Grows an array of `size`-byte elements to hold one more. Copies by hand
 * instead of realloc so the old block, which may hold keys, is wiped.
 */
static int grow(void **array, unsigned n, unsigned *cap, size_t size, unsigned max)
{
	unsigned new_cap;
	void *p;

	if (n < *cap)
		return 0;
	if (n >= max)
		return -ENOMEM;
	new_cap = *cap ? MIN(2 * *cap, max) : 4;
	p = calloc(new_cap, size);
	if (!p)
		return -ENOMEM;
	if (*array) {
		memcpy(p, *array, (size_t)n * size);
		crypto_wipe(*array, (size_t)n * size);
		free(*array);
	}
	*array = p;
	*cap = new_cap;
	return 0;
}

static const char *const device_keys[] = {"private_key", "listen_port", "fwmark", "replace_peers"};
static const char *const peer_keys[] = {"update_only",
					"remove",
					"preshared_key",
					"endpoint",
					"persistent_keepalive_interval",
					"replace_allowed_ips",
					"allowed_ip",
					"protocol_version"};

static bool key_in(const char *k, size_t klen, const char *const *keys, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (value_is(k, klen, keys[i]))
			return true;
	return false;
}

static int device_line(struct parser *ps, const char *k, size_t klen, const char *v, size_t vlen)
{
	struct wg_device_cfg *cfg = ps->cfg;
	uint64_t x;
	int r;

	if (value_is(k, klen, "private_key")) {
		r = parse_key(cfg->private_key, v, vlen);
		if (r < 0)
			goto bad;
		cfg->has_private_key = true;
	} else if (value_is(k, klen, "listen_port")) {
		r = parse_uint(&x, v, vlen, UINT16_MAX);
		if (r < 0)
			goto bad;
		cfg->has_listen_port = true;
		cfg->listen_port = (uint16_t)x;
	} else if (value_is(k, klen, "fwmark")) {
		r = parse_uint(&x, v, vlen, UINT32_MAX);
		if (r < 0)
			goto bad;
		cfg->has_fwmark = true;
		cfg->fwmark = (uint32_t)x;
	} else if (value_is(k, klen, "replace_peers")) {
		if (!value_is(v, vlen, "true"))
			goto bad;
		cfg->replace_peers = true;
	} else {
		ps->why = key_in(k, klen, peer_keys, ARRAY_SIZE(peer_keys))
			      ? "peer key before any public_key"
			      : "unknown key";
		return -EINVAL;
	}
	return 0;
bad:
	ps->why = "invalid value";
	return -EINVAL;
}

static int start_peer(struct parser *ps, const char *v, size_t vlen)
{
	struct wg_device_cfg *cfg = ps->cfg;
	uint8_t key[WG_KEY_LEN];
	int r;

	r = parse_key(key, v, vlen);
	if (r < 0) {
		ps->why = "invalid public_key";
		goto out;
	}
	r = grow((void **)&cfg->peers, cfg->n_peers, &ps->peers_cap, sizeof(*cfg->peers),
		 UAPI_MAX_PEERS);
	if (r < 0) {
		ps->why = "too many peers";
		goto out;
	}
	ps->peer = &cfg->peers[cfg->n_peers++];
	memset(ps->peer, 0, sizeof(*ps->peer));
	memcpy(ps->peer->public_key, key, WG_KEY_LEN);
	ps->allowedips_cap = 0;
out:
	crypto_wipe(key, sizeof(key));
	return r;
}

static int peer_line(struct parser *ps, const char *k, size_t klen, const char *v, size_t vlen)
{
	struct wg_peer_cfg *peer = ps->peer;
	char buf[ENDPOINT_STR_MAX];
	struct wg_allowedip aip;
	uint64_t x;
	int r;

	if (value_is(k, klen, "update_only")) {
		if (!value_is(v, vlen, "true"))
			goto bad;
		peer->update_only = true;
	} else if (value_is(k, klen, "remove")) {
		if (!value_is(v, vlen, "true"))
			goto bad;
		peer->remove = true;
	} else if (value_is(k, klen, "preshared_key")) {
		r = parse_key(peer->preshared_key, v, vlen);
		if (r < 0)
			goto bad;
		peer->has_preshared_key = true;
	} else if (value_is(k, klen, "endpoint")) {
		r = copy_str(buf, sizeof(buf), v, vlen);
		if (r < 0)
			goto bad;
		r = endpoint_parse(&peer->endpoint, buf);
		if (r < 0)
			goto bad;
		peer->has_endpoint = true;
	} else if (value_is(k, klen, "persistent_keepalive_interval")) {
		r = parse_uint(&x, v, vlen, UINT16_MAX);
		if (r < 0)
			goto bad;
		peer->has_persistent_keepalive = true;
		peer->persistent_keepalive = (uint16_t)x;
	} else if (value_is(k, klen, "replace_allowed_ips")) {
		if (!value_is(v, vlen, "true"))
			goto bad;
		/* Earlier allowed_ip lines of this peer are replaced too, as in wireguard-go. */
		peer->replace_allowedips = true;
		ps->total_allowedips -= peer->n_allowedips;
		peer->n_allowedips = 0;
	} else if (value_is(k, klen, "allowed_ip")) {
		r = parse_allowedip(&aip, v, vlen);
		if (r < 0)
			goto bad;
		if (ps->total_allowedips >= UAPI_MAX_ALLOWEDIPS) {
			ps->why = "too many allowed IPs";
			return -ENOMEM;
		}
		r = grow((void **)&peer->allowedips, peer->n_allowedips, &ps->allowedips_cap,
			 sizeof(*peer->allowedips), UAPI_MAX_ALLOWEDIPS);
		if (r < 0) {
			ps->why = "out of memory";
			return r;
		}
		peer->allowedips[peer->n_allowedips++] = aip;
		ps->total_allowedips++;
	} else if (value_is(k, klen, "protocol_version")) {
		if (!value_is(v, vlen, "1")) {
			ps->why = "unsupported protocol_version";
			return -EINVAL;
		}
	} else {
		ps->why = key_in(k, klen, device_keys, ARRAY_SIZE(device_keys))
			      ? "device key after a public_key"
			      : "unknown key";
		return -EINVAL;
	}
	return 0;
bad:
	ps->why = "invalid value";
	return -EINVAL;
}

/* Names the key in the log if it is printable; values are never logged (they may be keys). */
static void log_failure(unsigned line, const char *k, size_t klen, const char *why)
{
	bool printable = k && klen && klen <= 40;

	for (size_t i = 0; printable && i < klen; i++)
		printable = isprint((unsigned char)k[i]);
	if (printable)
		log_warn("uapi: set: line %u: \"%.*s\": %s", line, (int)klen, k, why);
	else
		log_warn("uapi: set: line %u: %s", line, why);
}

int wg_uapi_set_parse(const char *text, size_t len, struct wg_device_cfg **ret, unsigned *err_line)
{
	struct parser ps = {0};
	const char *p = text, *end = len ? text + len : text; /* NULL + 0 is undefined */
	const char *k = NULL;
	size_t klen = 0;
	unsigned line = 0;
	int r;

	if (len > UAPI_MAX_REQUEST) {
		ps.why = "request too large";
		r = -ENOMEM;
		goto out;
	}
	ps.cfg = calloc(1, sizeof(*ps.cfg));
	if (!ps.cfg) {
		ps.why = "out of memory";
		r = -ENOMEM;
		goto out;
	}

	r = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
		const char *eq, *v;
		size_t vlen;

		line++;
		/* bufio.ScanLines in wireguard-go drops a trailing CR as well. */
		if (n && p[n - 1] == '\r')
			n--;
		if (!n)
			break; /* an empty line ends the request */
		if (memchr(p, '\0', n)) {
			k = NULL;
			klen = 0;
			ps.why = "NUL byte in line";
			r = -EINVAL;
			goto out;
		}
		eq = memchr(p, '=', n);
		if (!eq) {
			k = NULL;
			klen = 0;
			ps.why = "line without '='";
			r = -EPROTO;
			goto out;
		}
		k = p;
		klen = (size_t)(eq - p);
		v = eq + 1;
		vlen = n - klen - 1;

		if (value_is(k, klen, "public_key"))
			r = start_peer(&ps, v, vlen);
		else if (!ps.peer)
			r = device_line(&ps, k, klen, v, vlen);
		else
			r = peer_line(&ps, k, klen, v, vlen);
		if (r < 0)
			goto out;
		p = nl ? nl + 1 : end;
	}
	*ret = ps.cfg;
	ps.cfg = NULL;
out:
	if (r < 0) {
		log_failure(line, k, klen, ps.why ? ps.why : "error");
		if (err_line)
			*err_line = line;
	}
	wg_device_cfg_free(ps.cfg);
	return r;
}

/* Generous per-line upper bounds, so the reply is written into one allocation. */
#define KEY_LINE_MAX (sizeof("preshared_key=") + 2 * WG_KEY_LEN + 1)
#define NUM_LINE_MAX (sizeof("persistent_keepalive_interval=") + 20 + 1)
#define DEVICE_MAX (KEY_LINE_MAX + 2 * NUM_LINE_MAX)
#define PEER_MAX (2 * KEY_LINE_MAX + sizeof("endpoint=") + ENDPOINT_STR_MAX + 6 * NUM_LINE_MAX + 32)
#define AIP_LINE_MAX (sizeof("allowed_ip=") + INET6_ADDRSTRLEN + 5)

struct out {
	char *buf;
	size_t len, cap;
};

static void __attribute__((format(printf, 2, 3))) emit(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	/* The size bound makes truncation impossible; assert it rather than corrupt. */
	if (n < 0 || (size_t)n >= o->cap - o->len)
		abort();
	o->len += (size_t)n;
}

static void emit_key(struct out *o, const char *name, const uint8_t key[WG_KEY_LEN])
{
	static const char hex[] = "0123456789abcdef";
	char s[2 * WG_KEY_LEN + 1];

	for (size_t i = 0; i < WG_KEY_LEN; i++) {
		s[2 * i] = hex[key[i] >> 4];
		s[2 * i + 1] = hex[key[i] & 0xf];
	}
	s[2 * WG_KEY_LEN] = '\0';
	emit(o, "%s=%s\n", name, s);
	crypto_wipe(s, sizeof(s));
}

int wg_uapi_get_format(const struct wg_device_info *info, char **ret)
{
	struct out o = {0};
	size_t cap = DEVICE_MAX + 1;
	int r;

	for (unsigned i = 0; i < info->n_peers; i++) {
		const struct wg_peer_info *pi = &info->peers[i];
		size_t aips = (size_t)pi->n_allowedips;

		if (aips > (SIZE_MAX / 2 - cap - PEER_MAX) / AIP_LINE_MAX) {
			r = -ENOMEM;
			goto out;
		}
		cap += PEER_MAX + aips * AIP_LINE_MAX;
	}
	if (cap > INT_MAX) {
		r = -ENOMEM;
		goto out;
	}
	o.buf = malloc(cap);
	if (!o.buf) {
		r = -ENOMEM;
		goto out;
	}
	o.cap = cap;
	o.buf[0] = '\0';

	/* Order and conditions as wireguard-go's IpcGetOperation, which wg(8) parses. */
	if (info->has_private_key)
		emit_key(&o, "private_key", info->private_key);
	if (info->listen_port)
		emit(&o, "listen_port=%u\n", info->listen_port);
	if (info->fwmark)
		emit(&o, "fwmark=%" PRIu32 "\n", info->fwmark);
	for (unsigned i = 0; i < info->n_peers; i++) {
		const struct wg_peer_info *pi = &info->peers[i];
		char ep[ENDPOINT_STR_MAX];

		emit_key(&o, "public_key", pi->public_key);
		if (pi->has_preshared_key)
			emit_key(&o, "preshared_key", pi->preshared_key);
		emit(&o, "protocol_version=1\n");
		if (endpoint_is_set(&pi->endpoint))
			emit(&o, "endpoint=%s\n", endpoint_format(&pi->endpoint, ep, sizeof(ep)));
		emit(&o, "last_handshake_time_sec=%" PRIu64 "\n",
		     (uint64_t)(pi->last_handshake_wall_ns / 1000000000U));
		emit(&o, "last_handshake_time_nsec=%" PRIu64 "\n",
		     (uint64_t)(pi->last_handshake_wall_ns % 1000000000U));
		emit(&o, "tx_bytes=%" PRIu64 "\n", pi->tx_bytes);
		emit(&o, "rx_bytes=%" PRIu64 "\n", pi->rx_bytes);
		emit(&o, "persistent_keepalive_interval=%u\n", pi->persistent_keepalive);
		for (unsigned j = 0; j < pi->n_allowedips; j++) {
			const struct wg_allowedip *a = &pi->allowedips[j];
			char s[INET6_ADDRSTRLEN];
			int family = a->family == AF_INET ? AF_INET : AF_INET6;

			if (!inet_ntop(family, a->addr, s, sizeof(s))) {
				r = -EINVAL;
				goto out;
			}
			emit(&o, "allowed_ip=%s/%u\n", s, a->cidr);
		}
	}
	*ret = o.buf;
	o.buf = NULL;
	r = (int)o.len;
out:
	if (o.buf) {
		crypto_wipe(o.buf, o.cap);
		free(o.buf);
	}
	return r;
}
