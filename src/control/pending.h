/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_PENDING_H
#define TRELLIS_CONTROL_PENDING_H

/*
 * Interactive registrations waiting for an admin: in memory only, until
 * approved (issue 7, finding 2). A machine that registers without a
 * credential costs no database row, no address and no mapper record (a known
 * node logging in again keeps its record, unchanged, until then); it gets
 * an entry here with a random code (the URL it is shown, and what the admin
 * approves: `trellis-control nodes approve reg:CODE`), which lives
 * PENDING_TTL_NS and goes with a restart. Only the approval makes a node.
 *
 * Bounds (docs/security.md): PENDING_PER_TAILNET entries per tailnet,
 * PENDING_PER_SOURCE per source network (an IPv4 /24, an IPv6 /64), and new
 * entries per tailnet through a token bucket (PENDING_RATE per second, burst
 * PENDING_BURST). A machine that registers again while pending refreshes its
 * entry (same code). Auth-key registrations never come here, so a flood of
 * these cannot stop them.
 *
 * No I/O, no clock (times are passed in), loop thread only.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/hmap.h"
#include "base/time.h"
#include "proto/netmap.h"

#define PENDING_TTL_NS (15 * 60 * NSEC_PER_SEC)
#define PENDING_PER_TAILNET 256
#define PENDING_PER_SOURCE 16
#define PENDING_RATE 5 /* new entries per second, per tailnet */
#define PENDING_BURST 32
#define PENDING_CODE_LEN 16 /* hex digits: 64 random bits */
#define PENDING_SOURCE_MAX 9
/* What the admin CLI writes to approve one (settings key; store.h). */
#define PENDING_APPROVE_PREFIX "approve-registration/"

struct session;

struct pending_reg {
	struct hmap_node by_code, by_machine;
	struct pending_reg *prev, *next; /* oldest first: expiry order */
	char code[PENDING_CODE_LEN + 1];
	uint64_t tailnet_id;
	/*
	 * The owner's: a known node logging in again (its key expired, or a new key without
	 * proof of the old one), and the user it belongs to (0: none, a tagged node). Only that
	 * user may sign in for it (web.h); 0 for a new machine.
	 */
	uint64_t node_id, owner_id;
	uint8_t machine_key[NETMAP_KEY_LEN];
	uint8_t node_key[NETMAP_KEY_LEN];
	bool has_audit_key; /* the owner's: the register's audit key, for the node record */
	uint8_t audit_key[NETMAP_KEY_LEN];
	char hostname[NETMAP_NAME_MAX];
	char os[NETMAP_OS_MAX];
	uint8_t src[PENDING_SOURCE_MAX];
	uint8_t src_len;
	uint64_t expires_ns;
	struct session *waiter; /* the owner's: the session waiting for the answer */
	void *mcert; /* the owner's, malloc'd: its machine certificate (control/ca.h); freed here */
};

struct pending;

int pending_new(struct pending **ret);
void pending_free(struct pending *p);

/*
 * A source network from httpd's per-source key (family byte + IPv4 address
 * or IPv6 /64): IPv4 is widened to its /24. Returns its length.
 */
size_t pending_source_from(const uint8_t *httpd_key, size_t len, uint8_t ret[PENDING_SOURCE_MAX]);

/*
 * Adds the machine's registration, or refreshes its entry (new node key, host
 * name, expiry). 0 with *ret set, -ENOSPC (a cap: the tailnet's or the
 * source's), -EBUSY (the tailnet's rate), -ENOMEM.
 */
int pending_add(struct pending *p, uint64_t tailnet_id, const uint8_t machine_key[NETMAP_KEY_LEN],
		const uint8_t node_key[NETMAP_KEY_LEN], const char *hostname, const char *os,
		const uint8_t *src, size_t src_len, uint64_t now_ns, struct pending_reg **ret);
struct pending_reg *pending_get(const struct pending *p, const char *code);
struct pending_reg *pending_by_machine(const struct pending *p, uint64_t tailnet_id,
				       const uint8_t machine_key[NETMAP_KEY_LEN]);
void pending_remove(struct pending *p, struct pending_reg *e);
/* The oldest entry if it expired at now_ns (remove it, then ask again), else NULL. */
struct pending_reg *pending_expired(const struct pending *p, uint64_t now_ns);
/* Every entry: pass NULL for the first. */
struct pending_reg *pending_next(const struct pending *p, const struct pending_reg *e);
size_t pending_count(const struct pending *p);

/* Is s a pending code ("reg:" and PENDING_CODE_LEN lowercase hex digits)? Then its code. */
bool pending_code_parse(const char *s, char ret[PENDING_CODE_LEN + 1]);

#endif
