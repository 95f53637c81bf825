/* SPDX-License-Identifier: MIT */
/*
 * NAT-PMP client (RFC 6886): the state machine is described in natpmp.h; every
 * timer of it is in tx(), every reply in rx().
 */
#include <errno.h>
#include <string.h>

#include "base/time.h"
#include "base/util.h"
#include "portmap/natpmp.h"

int natpmp_addr_request_build(uint8_t *buf, size_t cap)
{
	if (cap < NATPMP_ADDR_REQ_LEN)
		return -ENOBUFS;
	buf[0] = NATPMP_VERSION;
	buf[1] = NATPMP_OP_ADDR;
	return NATPMP_ADDR_REQ_LEN;
}

int natpmp_map_request_build(uint8_t *buf, size_t cap, uint16_t internal_port, uint16_t ext_port,
			     uint32_t lifetime_s)
{
	if (cap < NATPMP_MAP_REQ_LEN)
		return -ENOBUFS;
	/* §3.3: version, opcode, 16 bits reserved, internal port, suggested port, lifetime. */
	buf[0] = NATPMP_VERSION;
	buf[1] = NATPMP_OP_MAP_UDP;
	buf[2] = buf[3] = 0;
	put_be16(buf + 4, internal_port);
	put_be16(buf + 6, ext_port);
	put_be32(buf + 8, lifetime_s);
	return NATPMP_MAP_REQ_LEN;
}

int natpmp_response_parse(const uint8_t *buf, size_t len, struct natpmp_response *ret)
{
	uint8_t op;

	if (len < NATPMP_HEADER_LEN || len > PORTMAP_MSG_MAX)
		return -EBADMSG;
	if (buf[0] != NATPMP_VERSION)
		return -EPROTO;
	op = buf[1];
	if (!(op & NATPMP_OP_RESPONSE) ||
	    ((op & 0x7f) != NATPMP_OP_ADDR && (op & 0x7f) != NATPMP_OP_MAP_UDP))
		return -EOPNOTSUPP;
	memset(ret, 0, sizeof(*ret));
	ret->opcode = op & 0x7f;
	ret->result = get_be16(buf + 2);
	ret->epoch_s = get_be32(buf + 4);
	if (ret->result != NATPMP_SUCCESS)
		return 0;
	if (ret->opcode == NATPMP_OP_ADDR) {
		if (len < NATPMP_ADDR_RESP_LEN)
			return -EBADMSG;
		memcpy(ret->ext_addr, buf + 8, 4);
		return 0;
	}
	if (len < NATPMP_MAP_RESP_LEN)
		return -EBADMSG;
	ret->internal_port = get_be16(buf + 8);
	ret->ext_port = get_be16(buf + 10);
	ret->lifetime_s = get_be32(buf + 12);
	return 0;
}

void natpmp_client_init(struct natpmp_client *c, const struct natpmp_client_cfg *cfg)
{
	memset(c, 0, sizeof(*c));
	c->cfg = *cfg;
	c->state = PORTMAP_IDLE;
	c->deadline_ns = TIME_NEVER;
}

static void request_begin(struct natpmp_client *c, enum portmap_state s, uint8_t op,
			  uint64_t now_ns)
{
	c->state = s;
	c->op = op;
	c->tries = 0;
	c->rt_ns = 0;
	c->deadline_ns = now_ns;
}

void natpmp_client_start(struct natpmp_client *c, uint64_t now_ns, bool map)
{
	memset(&c->map, 0, sizeof(c->map));
	c->want_map = map;
	request_begin(c, PORTMAP_REQUESTING, NATPMP_OP_ADDR, now_ns);
}

void natpmp_client_map(struct natpmp_client *c, uint64_t now_ns)
{
	c->want_map = true;
	if (c->state == PORTMAP_READY)
		request_begin(c, PORTMAP_REQUESTING, NATPMP_OP_MAP_UDP, now_ns);
}

void natpmp_client_abandon(struct natpmp_client *c)
{
	c->state = PORTMAP_IDLE;
	c->deadline_ns = TIME_NEVER;
	memset(&c->map, 0, sizeof(c->map));
}

void natpmp_client_stop(struct natpmp_client *c, uint64_t now_ns)
{
	if (natpmp_client_mapped(c))
		request_begin(c, PORTMAP_DELETING, NATPMP_OP_MAP_UDP, now_ns);
	else
		natpmp_client_abandon(c);
}

uint64_t natpmp_client_deadline(const struct natpmp_client *c)
{
	return c->deadline_ns;
}

bool natpmp_client_mapped(const struct natpmp_client *c)
{
	return c->state == PORTMAP_MAPPED || c->state == PORTMAP_RENEWING;
}

static void fail(struct natpmp_client *c, uint64_t now_ns)
{
	c->state = PORTMAP_FAILED;
	memset(&c->map, 0, sizeof(c->map));
	c->deadline_ns = now_ns + NATPMP_RETRY_S * NSEC_PER_SEC;
}

int natpmp_client_tx(struct natpmp_client *c, uint64_t now_ns, uint8_t *buf, size_t cap)
{
	uint16_t port = c->cfg.internal_port;
	uint32_t lifetime = c->cfg.lifetime_s;
	int n;

	if (now_ns < c->deadline_ns)
		return 0;
	if (natpmp_client_mapped(c) && now_ns >= c->map.expires_ns) {
		/* The lifetime ran out unrenewed: the gateway dropped it by now. */
		memset(&c->map, 0, sizeof(c->map));
		request_begin(c, PORTMAP_REQUESTING, NATPMP_OP_ADDR, now_ns);
	}
	switch (c->state) {
	case PORTMAP_MAPPED:
		c->renewals++;
		request_begin(c, PORTMAP_RENEWING, NATPMP_OP_ADDR, now_ns);
		break;
	case PORTMAP_FAILED:
		natpmp_client_start(c, now_ns, c->want_map);
		break;
	case PORTMAP_RENEWING:
		if (c->tries >= NATPMP_TRIES) {
			/* Gave up on this round: what we hold lasts until it expires. */
			c->deadline_ns = c->map.expires_ns;
			return 0;
		}
		break;
	case PORTMAP_REQUESTING:
		if (c->tries >= NATPMP_TRIES) {
			fail(c, now_ns);
			return 0;
		}
		break;
	case PORTMAP_DELETING:
		if (c->tries >= NATPMP_DELETE_TRIES) {
			natpmp_client_abandon(c);
			return 0;
		}
		break;
	default:
		c->deadline_ns = TIME_NEVER;
		return 0;
	}

	if (c->op == NATPMP_OP_ADDR) {
		n = natpmp_addr_request_build(buf, cap);
	} else {
		/* §3.3: a renewal suggests the port we hold; §3.4: deletion sends port 0. */
		if (c->state == PORTMAP_RENEWING)
			port = c->map.ext_port;
		if (c->state == PORTMAP_DELETING)
			port = 0, lifetime = 0;
		n = natpmp_map_request_build(buf, cap, c->cfg.internal_port, port, lifetime);
	}
	if (n < 0)
		return n;
	/* §3.1: 250 ms, doubled after each transmission. */
	c->rt_ns = c->tries ? 2 * c->rt_ns : NATPMP_IRT_NS;
	c->tries++;
	c->tx++;
	c->deadline_ns = now_ns + c->rt_ns;
	if (c->state == PORTMAP_RENEWING)
		c->deadline_ns = MIN(c->deadline_ns, c->map.expires_ns);
	return n;
}

static int rx_addr(struct natpmp_client *c, uint64_t now_ns, const struct natpmp_response *r)
{
	static const uint8_t zero[4];

	if (!memcmp(r->ext_addr, zero, 4)) {
		c->drops.bad_field++;
		return 0;
	}
	c->rx++;
	memcpy(c->ext_addr, r->ext_addr, 4);
	c->have_addr = true;
	if (c->state == PORTMAP_REQUESTING && !c->want_map) {
		c->state = PORTMAP_READY;
		c->deadline_ns = TIME_NEVER;
	} else {
		c->op = NATPMP_OP_MAP_UDP;
		c->tries = 0;
		c->rt_ns = 0;
		c->deadline_ns = now_ns;
	}
	return 1;
}

static int rx_map(struct natpmp_client *c, uint64_t now_ns, const struct natpmp_response *r)
{
	if (c->state == PORTMAP_DELETING) {
		c->rx++;
		natpmp_client_abandon(c);
		return 1;
	}
	if (!r->ext_port || !r->lifetime_s) {
		c->drops.bad_field++;
		return 0;
	}
	c->rx++;
	portmap_addr_from_v4(c->map.ext_addr, c->ext_addr);
	c->map.ext_port = r->ext_port;
	c->map.lifetime_s = r->lifetime_s;
	c->map.expires_ns = now_ns + r->lifetime_s * NSEC_PER_SEC;
	c->state = PORTMAP_MAPPED;
	/* §3.3: renew at half the lifetime. */
	c->deadline_ns = now_ns + r->lifetime_s * NSEC_PER_SEC / 2;
	return 1;
}

int natpmp_client_rx(struct natpmp_client *c, uint64_t now_ns, const uint8_t *buf, size_t len)
{
	struct natpmp_response r;
	int e = natpmp_response_parse(buf, len, &r);

	if (e == -EBADMSG) {
		c->drops.short_msg++;
		return 0;
	}
	if (e == -EPROTO) {
		c->drops.version++;
		return 0;
	}
	if (e < 0) {
		c->drops.opcode++;
		return 0;
	}
	if (c->state != PORTMAP_REQUESTING && c->state != PORTMAP_RENEWING &&
	    c->state != PORTMAP_DELETING) {
		c->drops.unexpected++;
		return 0;
	}
	if (r.opcode != c->op) {
		c->drops.unexpected++;
		return 0;
	}
	if (r.opcode == NATPMP_OP_MAP_UDP && r.result == NATPMP_SUCCESS &&
	    r.internal_port != c->cfg.internal_port) {
		c->drops.mismatch++;
		return 0;
	}
	if (!portmap_epoch_update(&c->epoch, r.epoch_s, now_ns))
		c->epoch_resets++;
	c->last_result = r.result;
	if (r.result != NATPMP_SUCCESS) {
		c->rx++;
		if (c->state == PORTMAP_DELETING) {
			natpmp_client_abandon(c);
		} else if (r.result == NATPMP_UNSUPP_VERSION) {
			c->state = PORTMAP_UNSUPPORTED;
			memset(&c->map, 0, sizeof(c->map));
			c->deadline_ns = TIME_NEVER;
		} else if (c->state == PORTMAP_RENEWING) {
			c->state = PORTMAP_MAPPED;
			c->deadline_ns =
			    MIN(c->map.expires_ns, now_ns + NATPMP_RETRY_S * NSEC_PER_SEC);
		} else {
			fail(c, now_ns);
		}
		return 1;
	}
	if (r.opcode == NATPMP_OP_ADDR)
		return rx_addr(c, now_ns, &r);
	return rx_map(c, now_ns, &r);
}
