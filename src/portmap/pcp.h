/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PORTMAP_PCP_H
#define TRELLIS_PORTMAP_PCP_H

/*
 * A PCP client (RFC 6887) for one UDP mapping, without I/O: the caller sends
 * what pcp_client_tx gives it to the gateway's port 5351 from a socket
 * connected there, feeds every datagram from it to pcp_client_rx, and calls
 * pcp_client_tx again at pcp_client_deadline. The engine never reads a clock
 * or a socket; its jitter comes from the caller's seed.
 *
 * States (mapping.h): start -> REQUESTING -(success)-> MAPPED -(1/2..5/8 of the
 * lifetime)-> RENEWING -(success)-> MAPPED; a renewal that gets no answer before
 * the lifetime ends falls back to REQUESTING (the mapping is gone). An error
 * result -> FAILED, retried after the lifetime the server named (clamped).
 * A version 0 answer (a NAT-PMP gateway, RFC 6887 §9) -> UNSUPPORTED. stop:
 * DELETING (lifetime 0, the same nonce) -> IDLE on the answer or after
 * PCP_DELETE_TRIES.
 *
 * Retransmission is §8.1.1: IRT 3 s, each next RT doubled up to MRT 1024 s,
 * all times RAND [-0.1, +0.1]; MRC is the caller's (0: for ever).
 */

#include <stddef.h>
#include <stdint.h>

#include "portmap/mapping.h"

#define PCP_VERSION 2
#define PCP_OP_ANNOUNCE 0
#define PCP_OP_MAP 1
#define PCP_OP_RESPONSE 0x80
#define PCP_HEADER_LEN 24
#define PCP_MAP_LEN 36
#define PCP_MAP_MSG_LEN (PCP_HEADER_LEN + PCP_MAP_LEN)
#define PCP_NONCE_LEN 12

#define PCP_IRT_NS (3ULL * 1000000000ULL)
#define PCP_MRT_NS (1024ULL * 1000000000ULL)
#define PCP_DELETE_TRIES 3
/* An error result's lifetime is when to ask again (§7.4); within these bounds. */
#define PCP_RETRY_MIN_S 30
#define PCP_RETRY_MAX_S 1800

/* Result codes, §7.4. */
enum pcp_result {
	PCP_SUCCESS = 0,
	PCP_UNSUPP_VERSION = 1,
	PCP_NOT_AUTHORIZED = 2,
	PCP_MALFORMED_REQUEST = 3,
	PCP_UNSUPP_OPCODE = 4,
	PCP_UNSUPP_OPTION = 5,
	PCP_MALFORMED_OPTION = 6,
	PCP_NETWORK_FAILURE = 7,
	PCP_NO_RESOURCES = 8,
	PCP_UNSUPP_PROTOCOL = 9,
	PCP_USER_EX_QUOTA = 10,
	PCP_CANNOT_PROVIDE_EXTERNAL = 11,
	PCP_ADDRESS_MISMATCH = 12,
	PCP_EXCESSIVE_REMOTE_PEERS = 13,
};

/* A MAP response as it is on the wire (options are not kept). */
struct pcp_response {
	uint8_t opcode; /* without the R bit */
	uint8_t result;
	uint32_t lifetime_s;
	uint32_t epoch_s;
	uint8_t nonce[PCP_NONCE_LEN];
	uint8_t protocol;
	uint16_t internal_port;
	uint16_t ext_port;
	uint8_t ext_addr[16];
};

/* A MAP request: 60 bytes into buf (cap >= PCP_MAP_MSG_LEN), or -ENOBUFS. */
int pcp_map_request_build(uint8_t *buf, size_t cap, const uint8_t client_addr[16],
			  const uint8_t nonce[PCP_NONCE_LEN], uint8_t protocol,
			  uint16_t internal_port, uint16_t ext_port, const uint8_t ext_addr[16],
			  uint32_t lifetime_s);
/*
 * A MAP response, every length and field checked: 0; -EBADMSG (shorter than a
 * MAP response, longer than 1100 bytes or not a multiple of 4), -EPROTONOSUPPORT
 * (version 0: a NAT-PMP gateway refusing version 2), -EPROTO (another version),
 * -EOPNOTSUPP (not a response to MAP).
 */
int pcp_response_parse(const uint8_t *buf, size_t len, struct pcp_response *ret);

struct pcp_client_cfg {
	uint8_t client_addr[16]; /* our address as the gateway sees it (IPv4-mapped for IPv4) */
	uint8_t nonce[PCP_NONCE_LEN];
	uint16_t internal_port;
	uint32_t lifetime_s; /* asked for */
	uint64_t seed;	     /* jitter */
	unsigned max_tries;  /* transmissions before FAILED; 0: for ever (MRC 0) */
};

struct pcp_client {
	struct pcp_client_cfg cfg;
	enum portmap_state state;
	struct portmap_mapping map; /* while MAPPED, RENEWING or DELETING */
	struct portmap_epoch epoch;
	uint64_t deadline_ns;
	uint64_t rt_ns;
	unsigned tries; /* transmissions of the request under way */
	uint64_t rng;
	uint8_t last_result;
	uint64_t tx, rx, renewals, epoch_resets;
	struct portmap_drops drops;
};

void pcp_client_init(struct pcp_client *c, const struct pcp_client_cfg *cfg);
/* Asks for the mapping: the first request is due at once. */
void pcp_client_start(struct pcp_client *c, uint64_t now_ns);
/* Deletes the mapping held (DELETING, due at once), or goes IDLE when none is. */
void pcp_client_stop(struct pcp_client *c, uint64_t now_ns);
/* IDLE at once, nothing sent (another protocol won; what the gateway holds expires). */
void pcp_client_abandon(struct pcp_client *c);
/* When pcp_client_tx wants to run again; TIME_NEVER when idle. */
uint64_t pcp_client_deadline(const struct pcp_client *c);
/*
 * The request due at now_ns into buf (cap >= PCP_MAP_MSG_LEN): its length, or 0
 * when nothing is due (state changes of timers — renewal, expiry, giving up —
 * happen here too).
 */
int pcp_client_tx(struct pcp_client *c, uint64_t now_ns, uint8_t *buf, size_t cap);
/* A datagram from the gateway's port 5351: 1 if taken (the state may have changed), 0 dropped. */
int pcp_client_rx(struct pcp_client *c, uint64_t now_ns, const uint8_t *buf, size_t len);
/* A mapping is held (MAPPED or RENEWING). */
bool pcp_client_mapped(const struct pcp_client *c);

#endif
