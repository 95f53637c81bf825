/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PORTMAP_NATPMP_H
#define TRELLIS_PORTMAP_NATPMP_H

/*
 * A NAT-PMP client (RFC 6886) for one UDP mapping, without I/O, driven like
 * pcp.h: tx at the deadline, rx for each datagram from the gateway's port 5351.
 *
 * States (mapping.h): start -> REQUESTING (external address, opcode 0) ->
 * READY when no mapping is wanted yet (natpmp_client_map asks for it), else on
 * to the UDP mapping (opcode 1) -> MAPPED -(half the lifetime, §3.3)->
 * RENEWING (address, then mapping again, the port we hold suggested) ->
 * MAPPED; a renewal unanswered when the lifetime ends -> REQUESTING. Nine
 * transmissions of one request without an answer (250 ms, doubling, §3.1) or
 * an error result -> FAILED, retried after NATPMP_RETRY_S. A result 1 answer
 * (unsupported version) -> UNSUPPORTED. stop: DELETING (lifetime 0, external
 * port 0, §3.4) -> IDLE on the answer or after NATPMP_DELETE_TRIES.
 */

#include <stddef.h>
#include <stdint.h>

#include "portmap/mapping.h"

#define NATPMP_VERSION 0
#define NATPMP_OP_ADDR 0
#define NATPMP_OP_MAP_UDP 1
#define NATPMP_OP_RESPONSE 0x80
#define NATPMP_ADDR_REQ_LEN 2
#define NATPMP_MAP_REQ_LEN 12
#define NATPMP_HEADER_LEN 8 /* version, opcode, result, epoch: every response */
#define NATPMP_ADDR_RESP_LEN 12
#define NATPMP_MAP_RESP_LEN 16

#define NATPMP_IRT_NS (250ULL * 1000000ULL)
#define NATPMP_TRIES 9
#define NATPMP_DELETE_TRIES 3
#define NATPMP_RETRY_S 60

/* Result codes, §3.5. */
enum natpmp_result {
	NATPMP_SUCCESS = 0,
	NATPMP_UNSUPP_VERSION = 1,
	NATPMP_NOT_AUTHORIZED = 2,
	NATPMP_NETWORK_FAILURE = 3,
	NATPMP_NO_RESOURCES = 4,
	NATPMP_UNSUPP_OPCODE = 5,
};

struct natpmp_response {
	uint8_t opcode; /* without the response bit: 0 address, 1 UDP mapping */
	uint16_t result;
	uint32_t epoch_s;
	uint8_t ext_addr[4];	/* opcode 0, success */
	uint16_t internal_port; /* opcode 1, success */
	uint16_t ext_port;
	uint32_t lifetime_s;
};

/* Requests: their length, or -ENOBUFS. */
int natpmp_addr_request_build(uint8_t *buf, size_t cap);
int natpmp_map_request_build(uint8_t *buf, size_t cap, uint16_t internal_port, uint16_t ext_port,
			     uint32_t lifetime_s);
/*
 * A response, lengths and fields checked: 0; -EBADMSG (shorter than its opcode
 * and result need), -EPROTO (version not 0), -EOPNOTSUPP (not a response, or to
 * an opcode we never send). A non-zero result needs only the 8-byte header.
 */
int natpmp_response_parse(const uint8_t *buf, size_t len, struct natpmp_response *ret);

struct natpmp_client_cfg {
	uint16_t internal_port;
	uint32_t lifetime_s;
};

struct natpmp_client {
	struct natpmp_client_cfg cfg;
	enum portmap_state state;
	uint8_t op; /* the request under way: NATPMP_OP_ADDR or NATPMP_OP_MAP_UDP */
	bool want_map;
	bool have_addr;
	uint8_t ext_addr[4];
	struct portmap_mapping map; /* while MAPPED, RENEWING or DELETING */
	struct portmap_epoch epoch;
	uint64_t deadline_ns;
	uint64_t rt_ns;
	unsigned tries;
	uint16_t last_result;
	uint64_t tx, rx, renewals, epoch_resets;
	struct portmap_drops drops;
};

void natpmp_client_init(struct natpmp_client *c, const struct natpmp_client_cfg *cfg);
/* Asks for the external address and, with map, then for the mapping. */
void natpmp_client_start(struct natpmp_client *c, uint64_t now_ns, bool map);
/* From READY: asks for the mapping. */
void natpmp_client_map(struct natpmp_client *c, uint64_t now_ns);
void natpmp_client_stop(struct natpmp_client *c, uint64_t now_ns);
void natpmp_client_abandon(struct natpmp_client *c);
uint64_t natpmp_client_deadline(const struct natpmp_client *c);
/* As pcp_client_tx (cap >= NATPMP_MAP_REQ_LEN). */
int natpmp_client_tx(struct natpmp_client *c, uint64_t now_ns, uint8_t *buf, size_t cap);
/* As pcp_client_rx. */
int natpmp_client_rx(struct natpmp_client *c, uint64_t now_ns, const uint8_t *buf, size_t len);
bool natpmp_client_mapped(const struct natpmp_client *c);

#endif
