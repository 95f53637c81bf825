/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_MODEL_H
#define TRELLIS_CONTROL_MODEL_H

/*
 * The coordination server's records: what the store persists and the mapper
 * turns into network maps. Plain structs with fixed caps, shared by
 * store.c (durable), mapper.c and registry.c (in memory), and the admin
 * operations.
 */

#include <stdbool.h>
#include <stdint.h>

#include "crypto/mcert.h"
#include "policy/policy.h"
#include "proto/netmap.h"

struct control_tailnet {
	uint64_t id;
	char name[NETMAP_NAME_MAX];
	int64_t key_expiry_sec;        /* node key lifetime; 0 = keys do not expire */
	int64_t ephemeral_timeout_sec; /* an offline ephemeral node is deleted after this */
	int64_t created;               /* Unix seconds */
	/*
	 * Device approval: a node that joins with an auth key waits for `nodes approve`
	 * unless the key is preauthorized (Tailscale's "device approval" setting).
	 */
	bool device_approval;
	/* Logins into it must use a second factor (local accounts always do; OIDC: the IdP's). */
	bool require_2fa;
	/*
	 * Flow logs (docs/audit.md): on unless flow_log_off; nodes ship a batch every
	 * flow_log_interval_ms (0: NETMAP_FLOW_LOG_INTERVAL_DEFAULT_MS). The interval is kept
	 * while flow logs are off, so turning them on again restores it.
	 */
	bool flow_log_off;
	int64_t flow_log_interval_ms;
	/* Flow records older than this are pruned (flows_prune.h); 0: kept forever. */
	int64_t flow_retention_sec;
	/*
	 * Registration needs a valid machine certificate from the tailnet's CA, proven at
	 * every register (ca.h), whatever the credential.
	 */
	bool require_machine_cert;
};

struct control_user {
	uint64_t id;
	uint64_t tailnet_id;
	char name[NETMAP_USER_MAX];
	int64_t created;
};

/*
 * A local account (users add): who may sign in on the login pages with a password.
 * Its tailnet and user are chosen at the first login (tenancy, web.h); the account
 * itself is tailnet-independent, keyed by its email address.
 */
#define CONTROL_EMAIL_MAX 128
#define CONTROL_PASSWORD_HASH_MAX 160 /* auth/password.h PASSWORD_HASH_MAX */
#define CONTROL_TOTP_SECRET_LEN 20
#define CONTROL_RECOVERY_MAX 8
#define CONTROL_RECOVERY_HASH_LEN 32
struct control_account {
	uint64_t id;
	char email[CONTROL_EMAIL_MAX]; /* lower case */
	char password[CONTROL_PASSWORD_HASH_MAX]; /* Argon2id PHC string */
	bool admin;                    /* admin of the tailnet it signs in to */
	bool totp;                     /* a second factor: a secret (pending until step 1) */
	uint8_t totp_secret[CONTROL_TOTP_SECRET_LEN];
	/*
	 * The last TOTP step used: replays are refused. 0 with a secret: enrolled by an admin
	 * (`users add --totp`) and no code from the person's app seen yet (pending).
	 */
	uint64_t totp_last_step;
	unsigned n_recovery;           /* unused recovery codes, as hashes */
	uint8_t recovery[CONTROL_RECOVERY_MAX][CONTROL_RECOVERY_HASH_LEN];
	int64_t created;
};

struct control_node {
	uint64_t id;
	uint64_t tailnet_id;
	uint64_t user_id;            /* 0 for tagged nodes without a user */
	char name[NETMAP_NAME_MAX];  /* unique within the tailnet: hostname, "-2"... on clash */
	char hostname[NETMAP_NAME_MAX]; /* as the node asked */
	char os[NETMAP_OS_MAX];
	uint8_t machine_key[NETMAP_KEY_LEN];
	uint8_t node_key[NETMAP_KEY_LEN];
	/* The public half of its Ed25519 audit key: its flow-log batches verify with it. */
	bool has_audit_key;
	uint8_t audit_key[NETMAP_KEY_LEN];
	uint8_t ipv4[4];             /* from 100.64.0.0/10; IPv6 derives from it */
	unsigned n_endpoints;
	struct endpoint endpoints[NETMAP_MAX_ENDPOINTS];
	unsigned n_tags;
	char tags[NETMAP_MAX_TAGS][NETMAP_TAG_MAX];
	bool ephemeral;
	bool approved;               /* false while an interactive registration waits */
	bool expiry_disabled;        /* per-node opt-out of key expiry */
	int64_t key_expiry;          /* Unix seconds; 0 = none */
	int64_t created;
	int64_t last_seen;           /* Unix seconds of the last map stream activity */
	bool online;                 /* has a live map stream (not persisted) */
	uint32_t home_region;	     /* relay region the node reported */
	bool has_disco_key;	     /* the disco key it reported */
	uint8_t disco_key[NETMAP_KEY_LEN];
	bool mapping_varies;	     /* its NAT maps per destination, as reported */
};

/*
 * A second factor an admin enrolled whose secret no code has proven to be in the person's app
 * yet: it does not count (no recovery codes, not enrolled) until a code confirms it, at the
 * CLI (users_account_totp_confirm) or at the first sign-in.
 */
bool control_account_totp_pending(const struct control_account *a);
/* A node is visible to peers when approved, its key unexpired at `now`, not logged out. */
bool control_node_visible(const struct control_node *n, int64_t now);
/* The tailnet's flow-log setting as its nodes get it in the netmap (set, defaults resolved). */
void control_tailnet_flow_log(const struct control_tailnet *t, struct netmap_flow_log *ret);
/* The record as nodes see it (self and peers); user is the owner's name or NULL. */
void control_node_render(const struct control_node *r, const char *user,
			 struct netmap_node *ret);

/* The node as the access policy sees it (user: the owner's name or NULL). */
void control_node_policy(const struct control_node *r, const char *user, struct policy_node *ret);

/*
 * A tailnet's machine-certificate CA (ca.h): its certificate. The private key is a
 * file in the server's state directory, never in the store.
 */
#define CONTROL_CA_CERT_MAX MCERT_PEM_MAX
/*
 * A tailnet's machine CA. A tailnet may have several (rotation, ca.h): the newest one not
 * retired signs, every one not retired is trusted.
 */
struct control_ca {
	uint64_t id;
	uint64_t tailnet_id;
	char cert[CONTROL_CA_CERT_MAX]; /* PEM */
	int64_t created;
	char key_file[64];  /* its private key: STATE/ca/<this> */
	int64_t retired_at; /* Unix seconds; 0: trusted */
};

/* A machine certificate the CA signed (ca sign); the revoked ones are the revocation list. */
struct control_mcert {
	uint64_t id;
	uint64_t tailnet_id;
	char serial[MCERT_SERIAL_MAX]; /* lower-case hex */
	uint8_t machine_key[NETMAP_KEY_LEN];
	char subject[MCERT_SUBJECT_MAX];
	int64_t not_before, not_after, created; /* Unix seconds */
	bool revoked;
	int64_t revoked_at;
	uint64_t ca_id; /* the CA that signed it (0: unknown, a revoked serial of an import) */
	bool has_pub;	/* its key is known (signed here since CA rotation came): renewable */
	uint8_t pub[32];
};

struct control_authkey {
	uint64_t id;
	uint64_t tailnet_id;
	uint64_t user_id;
	char prefix[24];        /* public part shown in listings: "tskey-" style id */
	uint8_t hash[32];       /* BLAKE2s of the secret; the secret itself is never stored */
	bool reusable;
	bool ephemeral;
	bool preauthorized;     /* nodes need no approval */
	unsigned n_tags;
	char tags[NETMAP_MAX_TAGS][NETMAP_TAG_MAX];
	int64_t expires;        /* Unix seconds; 0 = never */
	int64_t created;
	uint64_t uses;
	bool revoked;
};

#endif
