/* SPDX-License-Identifier: MIT */
/*
 * PCP MAP client (RFC 6887 §11): the state machine is described in pcp.h; every
 * timer of it is in tx(), every reply in rx().
 */
#include <errno.h>
#include <string.h>

#include "base/time.h"
#include "base/util.h"
#include "portmap/pcp.h"

#define IPPROTO_UDP_NUM 17

static uint32_t retry_s(uint32_t lifetime_s)
{
	return MIN(MAX(lifetime_s, PCP_RETRY_MIN_S), PCP_RETRY_MAX_S);
}

int pcp_map_request_build(uint8_t *buf, size_t cap, const uint8_t client_addr[16],
			  const uint8_t nonce[PCP_NONCE_LEN], uint8_t protocol,
			  uint16_t internal_port, uint16_t ext_port, const uint8_t ext_addr[16],
			  uint32_t lifetime_s)
{
	if (cap < PCP_MAP_MSG_LEN)
		return -ENOBUFS;
	memset(buf, 0, PCP_MAP_MSG_LEN);
	/* §7.1: version, R=0 and opcode, 16 bits reserved, lifetime, client address. */
	buf[0] = PCP_VERSION;
	buf[1] = PCP_OP_MAP;
	put_be32(buf + 4, lifetime_s);
	memcpy(buf + 8, client_addr, 16);
	/* §11.1: nonce, protocol, 24 bits reserved, internal port, suggested external port/address.
	 */
	memcpy(buf + 24, nonce, PCP_NONCE_LEN);
	buf[36] = protocol;
	put_be16(buf + 40, internal_port);
	put_be16(buf + 42, ext_port);
	memcpy(buf + 44, ext_addr, 16);
	return PCP_MAP_MSG_LEN;
}

int pcp_response_parse(const uint8_t *buf, size_t len, struct pcp_response *ret)
{
	/*
	 * A NAT-PMP gateway answers any version but 0 with its 8-byte "unsupported
	 * version" (RFC 6886 §3.5): version 0, result 1. §9 lets us fall back.
	 */
	if (len >= 4 && buf[0] == 0)
		return len >= 8 && get_be16(buf + 2) == 1 ? -EPROTONOSUPPORT : -EPROTO;
	/* §8.3: at least a header, at most 1100 bytes, whole 32-bit words. */
	if (len < PCP_HEADER_LEN || len > PORTMAP_MSG_MAX || len % 4)
		return -EBADMSG;
	if (buf[0] != PCP_VERSION)
		return -EPROTO;
	if (!(buf[1] & PCP_OP_RESPONSE) || (buf[1] & 0x7f) != PCP_OP_MAP)
		return -EOPNOTSUPP;
	if (len < PCP_MAP_MSG_LEN)
		return -EBADMSG;
	memset(ret, 0, sizeof(*ret));
	ret->opcode = buf[1] & 0x7f;
	ret->result = buf[3];
	ret->lifetime_s = get_be32(buf + 4);
	ret->epoch_s = get_be32(buf + 8);
	memcpy(ret->nonce, buf + 24, PCP_NONCE_LEN);
	ret->protocol = buf[36];
	ret->internal_port = get_be16(buf + 40);
	ret->ext_port = get_be16(buf + 42);
	memcpy(ret->ext_addr, buf + 44, 16);
	return 0;
}

void pcp_client_init(struct pcp_client *c, const struct pcp_client_cfg *cfg)
{
	memset(c, 0, sizeof(*c));
	c->cfg = *cfg;
	c->rng = cfg->seed;
	c->state = PORTMAP_IDLE;
	c->deadline_ns = TIME_NEVER;
}

/* RAND in [-0.1, +0.1] applied to t (§8.1.1). */
static uint64_t jitter(struct pcp_client *c, uint64_t t)
{
	return t / 1000 * (900 + portmap_rand(&c->rng) % 201);
}

static void request_begin(struct pcp_client *c, enum portmap_state s, uint64_t now_ns)
{
	c->state = s;
	c->tries = 0;
	c->rt_ns = 0;
	c->deadline_ns = now_ns;
}

void pcp_client_start(struct pcp_client *c, uint64_t now_ns)
{
	memset(&c->map, 0, sizeof(c->map));
	request_begin(c, PORTMAP_REQUESTING, now_ns);
}

void pcp_client_stop(struct pcp_client *c, uint64_t now_ns)
{
	if (pcp_client_mapped(c))
		request_begin(c, PORTMAP_DELETING, now_ns);
	else
		pcp_client_abandon(c);
}

void pcp_client_abandon(struct pcp_client *c)
{
	c->state = PORTMAP_IDLE;
	c->deadline_ns = TIME_NEVER;
	memset(&c->map, 0, sizeof(c->map));
}

uint64_t pcp_client_deadline(const struct pcp_client *c)
{
	return c->deadline_ns;
}

bool pcp_client_mapped(const struct pcp_client *c)
{
	return c->state == PORTMAP_MAPPED || c->state == PORTMAP_RENEWING;
}

static void fail(struct pcp_client *c, uint64_t now_ns, uint32_t lifetime_s)
{
	c->state = PORTMAP_FAILED;
	memset(&c->map, 0, sizeof(c->map));
	c->deadline_ns = now_ns + retry_s(lifetime_s) * NSEC_PER_SEC;
}

int pcp_client_tx(struct pcp_client *c, uint64_t now_ns, uint8_t *buf, size_t cap)
{
	static const uint8_t any6[16];
	uint8_t any4[16], zero4[4] = {0};
	const uint8_t *addr;
	uint16_t port;
	uint32_t lifetime;
	int n;

	if (now_ns < c->deadline_ns)
		return 0;
	if (pcp_client_mapped(c) && now_ns >= c->map.expires_ns) {
		/* The lifetime ran out unrenewed: the gateway dropped it by now. */
		memset(&c->map, 0, sizeof(c->map));
		request_begin(c, PORTMAP_REQUESTING, now_ns);
	}
	switch (c->state) {
	case PORTMAP_MAPPED:
		c->renewals++;
		request_begin(c, PORTMAP_RENEWING, now_ns);
		break;
	case PORTMAP_FAILED:
		request_begin(c, PORTMAP_REQUESTING, now_ns);
		break;
	case PORTMAP_RENEWING:
		break;
	case PORTMAP_REQUESTING:
		if (c->cfg.max_tries && c->tries >= c->cfg.max_tries) {
			fail(c, now_ns, 0);
			return 0;
		}
		break;
	case PORTMAP_DELETING:
		if (c->tries >= PCP_DELETE_TRIES) {
			pcp_client_abandon(c);
			return 0;
		}
		break;
	default:
		c->deadline_ns = TIME_NEVER;
		return 0;
	}

	portmap_addr_from_v4(any4, zero4);
	addr = portmap_addr_is_v4(c->cfg.client_addr) ? any4 : any6;
	port = c->cfg.internal_port;
	lifetime = c->cfg.lifetime_s;
	if (c->state == PORTMAP_RENEWING || c->state == PORTMAP_DELETING) {
		/* §11.2.1 and §15: the same mapping, named by what we were given. */
		addr = c->map.ext_addr;
		port = c->map.ext_port;
	}
	if (c->state == PORTMAP_DELETING)
		lifetime = 0;
	n = pcp_map_request_build(buf, cap, c->cfg.client_addr, c->cfg.nonce, IPPROTO_UDP_NUM,
				  c->cfg.internal_port, port, addr, lifetime);
	if (n < 0)
		return n;
	c->rt_ns = c->tries ? MIN(2 * c->rt_ns, PCP_MRT_NS) : PCP_IRT_NS;
	c->tries++;
	c->tx++;
	c->deadline_ns = now_ns + jitter(c, c->rt_ns);
	if (c->state == PORTMAP_RENEWING)
		c->deadline_ns = MIN(c->deadline_ns, c->map.expires_ns);
	return n;
}

/* When to renew: a random point in 1/2..5/8 of the lifetime (§11.2.1). */
static uint64_t renew_at(struct pcp_client *c, uint64_t now_ns, uint32_t lifetime_s)
{
	uint64_t life = lifetime_s * NSEC_PER_SEC;

	return now_ns + life / 2 + life / 8 / 1000 * (portmap_rand(&c->rng) % 1001);
}

int pcp_client_rx(struct pcp_client *c, uint64_t now_ns, const uint8_t *buf, size_t len)
{
	struct pcp_response r;
	int e = pcp_response_parse(buf, len, &r);

	if (e == -EPROTONOSUPPORT && c->state == PORTMAP_REQUESTING) {
		c->rx++;
		c->state = PORTMAP_UNSUPPORTED;
		c->deadline_ns = TIME_NEVER;
		return 1;
	}
	if (e == -EBADMSG) {
		c->drops.short_msg++;
		return 0;
	}
	if (e == -EPROTO || e == -EPROTONOSUPPORT) {
		c->drops.version++;
		return 0;
	}
	if (e < 0) {
		c->drops.opcode++;
		return 0;
	}
	if (memcmp(r.nonce, c->cfg.nonce, PCP_NONCE_LEN) || r.protocol != IPPROTO_UDP_NUM ||
	    r.internal_port != c->cfg.internal_port) {
		c->drops.mismatch++;
		return 0;
	}
	if (c->state != PORTMAP_REQUESTING && c->state != PORTMAP_RENEWING &&
	    c->state != PORTMAP_DELETING) {
		c->drops.unexpected++;
		return 0;
	}
	if (r.result == PCP_SUCCESS && c->state != PORTMAP_DELETING &&
	    (!r.ext_port || !r.lifetime_s)) {
		c->drops.bad_field++;
		return 0;
	}
	c->rx++;
	if (!portmap_epoch_update(&c->epoch, r.epoch_s, now_ns))
		c->epoch_resets++;
	c->last_result = r.result;
	if (c->state == PORTMAP_DELETING) {
		pcp_client_abandon(c);
		return 1;
	}
	if (r.result != PCP_SUCCESS) {
		if (c->state == PORTMAP_RENEWING) {
			/* Keep what we hold until it expires; ask again before (§7.4's lifetime).
			 */
			c->deadline_ns =
			    MIN(c->map.expires_ns, now_ns + retry_s(r.lifetime_s) * NSEC_PER_SEC);
			c->state = PORTMAP_MAPPED;
			return 1;
		}
		fail(c, now_ns, r.lifetime_s);
		return 1;
	}
	memcpy(c->map.ext_addr, r.ext_addr, 16);
	c->map.ext_port = r.ext_port;
	c->map.lifetime_s = r.lifetime_s;
	c->map.expires_ns = now_ns + r.lifetime_s * NSEC_PER_SEC;
	c->state = PORTMAP_MAPPED;
	c->deadline_ns = renew_at(c, now_ns, r.lifetime_s);
	return 1;
}
