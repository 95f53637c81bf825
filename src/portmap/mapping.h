/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PORTMAP_MAPPING_H
#define TRELLIS_PORTMAP_MAPPING_H

/*
 * What the NAT-PMP and PCP engines share: the state of one UDP mapping, the
 * counters of replies dropped per reason, and the server epoch check that both
 * RFCs use to notice a gateway that lost its mappings (RFC 6886 §3.6, RFC 6887
 * §8.5).
 */

#include <stdbool.h>
#include <stdint.h>

/* RFC 6886 §1 and RFC 6887 §19.1: the server's port. */
#define PORTMAP_SERVER_PORT 5351
/* RFC 6887 §7: no PCP message is longer. */
#define PORTMAP_MSG_MAX 1100

enum portmap_state {
	PORTMAP_IDLE,	     /* not started, abandoned, or deleted */
	PORTMAP_REQUESTING,  /* asking for a mapping, none held */
	PORTMAP_READY,	     /* NAT-PMP: external address known, no mapping asked for yet */
	PORTMAP_MAPPED,	     /* a mapping is held; renewal is a timer away */
	PORTMAP_RENEWING,    /* a mapping is held and being renewed */
	PORTMAP_DELETING,    /* lifetime 0 sent, waiting for the answer */
	PORTMAP_FAILED,	     /* gave up or refused; start again later */
	PORTMAP_UNSUPPORTED, /* the gateway speaks another protocol (version mismatch) */
};

const char *portmap_state_name(enum portmap_state s);

/* A mapping held: external address (IPv4-mapped IPv6 for IPv4, as PCP writes it). */
struct portmap_mapping {
	uint8_t ext_addr[16];
	uint16_t ext_port;
	uint32_t lifetime_s; /* granted */
	uint64_t expires_ns;
};

/* Replies dropped, per reason; bad replies are counted, never logged. */
struct portmap_drops {
	uint64_t short_msg;  /* shorter than its opcode needs, or longer than allowed */
	uint64_t version;    /* a version we did not ask for */
	uint64_t opcode;     /* not a response, or to an opcode we have not sent */
	uint64_t mismatch;   /* nonce, protocol or internal port not ours */
	uint64_t bad_field;  /* success with a zero port or lifetime, an impossible address */
	uint64_t unexpected; /* nothing outstanding in this state */
};

/* The server's epoch against the one seen before: both RFCs' rule of slack. */
struct portmap_epoch {
	bool seen;
	uint32_t server_s;
	uint64_t client_ns;
};

/*
 * False when the server's clock shows it restarted (or lost state) since the
 * last reply: its epoch went back by more than a second, or the two clocks
 * drifted apart by more than 1/16 plus 2 s. Records the new pair either way.
 */
bool portmap_epoch_update(struct portmap_epoch *e, uint32_t server_s, uint64_t now_ns);

/* 16-byte address from IPv4 (IPv4-mapped, ::ffff:a.b.c.d), and back. */
void portmap_addr_from_v4(uint8_t ret[16], const uint8_t v4[4]);
bool portmap_addr_is_v4(const uint8_t a[16]);

/* A small deterministic generator for the RFCs' random jitter (seeded by the caller). */
uint32_t portmap_rand(uint64_t *state);

#endif
