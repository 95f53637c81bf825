/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_AUDIT_H
#define TRELLIS_CONTROL_AUDIT_H

/*
 * The configuration audit log (docs/audit.md): one entry per durable admin
 * write, appended by the store in the same transaction as the write it
 * describes, so a change and its entry commit or fail together.
 *
 * Entries form a hash chain: entry n stores the hash of entry n-1, and its own
 * hash covers its sequence number, time, actor, action, target, before and
 * after, and that previous hash. Editing an entry breaks its own hash; deleting
 * one leaves a gap in the sequence; rewriting the whole tail changes the head
 * hash, which `audit verify` prints so it can be recorded elsewhere. Pruning
 * keeps the last removed entry's sequence number and hash as the anchor the
 * remaining chain starts from.
 *
 * This file holds what is backend independent: the hash, the chain walk, and
 * the JSON renderings of records for before/after (secrets left out).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct store_op;
struct control_node;

#define AUDIT_HASH_LEN 32
#define AUDIT_ACTOR_MAX 64
#define AUDIT_ACTION_MAX 32
#define AUDIT_TARGET_MAX 160
#define AUDIT_WHY_MAX 256
/* Entries one admin API listing answers; the CLI pages with after=SEQ. */
#define AUDIT_PAGE_MAX 1000

struct audit_entry {
	uint64_t seq;		       /* from 1; assigned by the store */
	int64_t time;		       /* Unix seconds */
	char actor[AUDIT_ACTOR_MAX];   /* "socket:uid0", "apikey:0123456789ab", "server" */
	char action[AUDIT_ACTION_MAX]; /* "node.approve", "authkey.create", ... */
	char target[AUDIT_TARGET_MAX]; /* "node:12 web", "tailnet:corp", "relaymap" */
	const char *before, *after;    /* compact JSON objects, "" for none */
	uint8_t prev_hash[AUDIT_HASH_LEN];
	uint8_t hash[AUDIT_HASH_LEN];
};

/* The entry's hash over all its fields but `hash` (prev_hash included). */
void audit_entry_hash(const struct audit_entry *e, uint8_t ret[AUDIT_HASH_LEN]);

/*
 * What an admin write is about to change: before read from the store, after
 * rendered from op; action as given, target derived from the record when NULL.
 * before/after are malloc'd: release with audit_entry_release. 0 or -ENOMEM.
 */
int audit_entry_prepare(struct audit_entry *e, struct store *s, const char *actor, int64_t now,
			const char *action, const char *target, const struct store_op *op);
void audit_entry_release(struct audit_entry *e);

/*
 * A registration's entry (docs/audit.md): a node joined (node.register; before NULL, the
 * target its name until its insert gives it an id), logged in again (node.login) or rotated
 * its key (node.rotate_key); actor the credential: "authkey:PREFIX", "user:NAME",
 * "node:ID". Release with audit_entry_release. 0 or -ENOMEM.
 */
int audit_entry_node(struct audit_entry *e, const char *actor, int64_t now, const char *action,
		     const struct control_node *before, const struct control_node *after);

/*
 * The chain walk: start from the anchor (seq 0 and zeros without one), feed
 * every entry in stored order; the first bad link stops it with a sentence in
 * why naming the entry.
 */
struct audit_walk {
	uint64_t next_seq;
	uint8_t prev[AUDIT_HASH_LEN];
	uint64_t n;
	bool bad;
	uint64_t bad_seq;
	char why[AUDIT_WHY_MAX];
};
void audit_walk_start(struct audit_walk *w, uint64_t anchor_seq,
		      const uint8_t anchor_hash[AUDIT_HASH_LEN]);
/* false once the chain is broken (w->why says where). */
bool audit_walk_step(struct audit_walk *w, const struct audit_entry *e);

#endif
