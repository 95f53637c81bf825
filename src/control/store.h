/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_STORE_H
#define TRELLIS_CONTROL_STORE_H

/*
 * The coordination server's durable record.
 *
 * The server keeps all state in memory (model.h) and the store is only its
 * durable record: store_load reads everything once at startup, then the server
 * writes each change through. A write is acknowledged (its callback runs, or
 * the synchronous call returns) only after the transaction holding it is
 * durable: SQLite in WAL mode with synchronous=FULL fsyncs the WAL on commit,
 * so kill -9 right after an acknowledgement loses nothing.
 *
 * Group commit. fsync costs milliseconds; one transaction per registration would
 * cap us far below 1,000 registrations/s and would block whoever called it. So
 * writes are asynchronous: store_submit queues an operation and returns; one
 * writer thread per store takes everything queued, applies it inside ONE
 * transaction (each operation in its own SAVEPOINT, so a failing operation -- a
 * name clash, say -- fails alone), commits with one fsync, and then completes
 * every operation of the batch. Completions of store_submit are delivered on
 * the caller's event loop: the writer thread posts them to a loop mailbox
 * (base/loop.h; store_loop_attach), whose messages run the callbacks on the
 * loop thread. The event loop thus never waits for a disk, and a reply that a
 * callback sends is sent only after the commit. store_write is the
 * synchronous wrapper (admin CLI,
 * tests, startup): it queues like everyone else and sleeps until its batch is
 * durable.
 *
 * Reads (store_load, store_*_get) use a second database connection, so a
 * reader never waits behind a commit (WAL readers do not block on the writer).
 *
 * Several processes on one database. The admin CLI writes to the same database
 * while `serve` runs (WAL and a busy timeout make that safe). Every write also
 * appends a row to a `changes` table naming the record and the store instance
 * (origin) that wrote it. The server calls store_changes_poll about every
 * 200 ms: it first compares PRAGMA data_version (free: no I/O when nothing
 * changed), and only when another connection committed does it read the new
 * rows of `changes`, skipping its own. For each change it re-reads the named
 * record (store_node_get and friends; -ENOENT means deleted) and updates its
 * in-memory state. Old rows of `changes` are pruned by the writer.
 *
 * Backends. struct store_backend is the seam for PostgreSQL: a backend provides
 * open/close, load, apply-a-batch-in-one-transaction, the point reads and the
 * change feed; store.c owns the queue, the writer thread and the completion
 * plumbing and is backend independent. store_sqlite.c is the embedded default.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/audit.h"
#include "control/flows.h"
#include "control/model.h"
#include "proto/flowbatch.h"

struct loop;
struct store;

#define STORE_DB_NAME "control.db"
#define STORE_SETTING_KEY_MAX 64
#define STORE_SETTING_VALUE_MAX 4096
/* Writes queued but not yet durable; beyond it store_submit fails with -EAGAIN. */
#define STORE_QUEUE_MAX 65536
/* Operations in one transaction. */
#define STORE_BATCH_MAX 4096

enum store_op_kind {
	STORE_OP_TAILNET_CREATE = 1, /* .tailnet; id assigned */
	STORE_OP_TAILNET_UPDATE,     /* .tailnet (name, key expiry, ephemeral timeout) */
	STORE_OP_USER_CREATE,	     /* .user; id assigned */
	STORE_OP_NODE_INSERT,	     /* .node; id assigned */
	STORE_OP_NODE_UPDATE,	     /* .node: the columns .node_fields names */
	STORE_OP_NODE_DELETE,	     /* .id */
	STORE_OP_AUTHKEY_CREATE,     /* .authkey; id assigned */
	STORE_OP_AUTHKEY_UPDATE,     /* .authkey: uses and revoked */
	STORE_OP_AUTHKEY_DELETE,     /* .id */
	STORE_OP_SETTING_SET,	     /* .setting */
	/* Audit entries before .audit_prune_before go, the last one the anchor; id: how many. */
	STORE_OP_AUDIT_PRUNE,
	STORE_OP_ACCOUNT_PUT,	 /* .account: id 0 inserts (id assigned), else replaces */
	STORE_OP_ACCOUNT_DELETE, /* .id */
	STORE_OP_POLICY_SET,	 /* .policy; len 0 deletes (no policy: allow all) */
	STORE_OP_FLOW_BATCH,	 /* .flow: an admitted flow-log batch and its records */
	/* As STORE_OP_NODE_UPDATE, written for its live state (endpoints, last_seen) */
	STORE_OP_NODE_LIVE,
	/* As STORE_OP_NODE_UPDATE, where nothing its peers see changed (a reconnect) */
	STORE_OP_NODE_TOUCH,
	STORE_OP_CA_PUT,    /* .ca: id 0 adds a CA to its tailnet (id assigned), else retired_at */
	STORE_OP_MCERT_PUT, /* .mcert: id 0 inserts (id assigned), else revoked/_at */
	/*
	 * .flow_prune: a tailnet's oldest batches go, each node's last one left as its
	 * anchor; id: how many batches went. With .audit (required), whose `after` the
	 * store fills in: the anchors' digest and what went. Nothing to remove: no entry.
	 */
	STORE_OP_FLOW_PRUNE,
};

/*
 * A flow-log batch the collector admitted (flows.h), stored as the node signed it
 * with the key it verified under, and its records decoded for queries. Ownership
 * of batch passes to the store with a successful store_submit (freed once written);
 * store_write leaves it the caller's.
 */
struct store_flow {
	uint64_t node_id, tailnet_id, seq;
	int64_t received; /* Unix seconds */
	unsigned flags;	  /* FLOWS_F_* */
	uint8_t audit_key[32];
	uint8_t *batch;
	size_t len;
};

/*
 * Retention: a tailnet's batches received before `before` go, at most max_batches (and
 * every batch of the tailnet stored before the last of them, so each node's chain loses
 * a prefix only).
 */
struct store_flow_prune {
	uint64_t tailnet_id;
	int64_t before; /* Unix seconds */
	unsigned max_batches;
};

/* A stored batch as read back (store_flow_batches): its row and its decoded records' rows. */
struct store_flow_row {
	uint64_t id; /* the row's, in the order batches arrived */
	uint64_t node_id, tailnet_id, seq;
	int64_t received;
	unsigned flags;
	const uint8_t *audit_key; /* 32 bytes, or NULL when the row's is not */
	const uint8_t *batch;
	size_t len;
	unsigned n_records; /* rows of flow_records for it, in idx order */
	const struct flowbatch_record *records;
	const unsigned *idx; /* each record row's idx */
};

/* One end's totals of one flow (store_flow_totals): its records summed. */
struct store_flow_total {
	uint64_t node_id, tailnet_id;
	struct flowbatch_record r; /* counters summed, first_ns the least, last_ns the most */
};

struct store_setting {
	char key[STORE_SETTING_KEY_MAX];
	size_t len;
	uint8_t value[STORE_SETTING_VALUE_MAX];
};

/*
 * A tailnet's access policy (docs/policy.md) as the admin wrote it. The text is not copied:
 * only store_write takes this op (store_submit refuses it), and the text lives until it returns.
 */
#define STORE_POLICY_MAX (2U << 20)
struct store_policy {
	uint64_t tailnet_id;
	const char *text;
	size_t len;
};

/*
 * The columns of a node's row, for store_op.node_fields. A node is written by more than one
 * process (the server, the admin CLI straight to the store): each writes only the columns it
 * changed, so that a write based on an older read keeps what another wrote meanwhile.
 */
enum store_node_field {
	STORE_NODE_TAILNET = 1U << 0,
	STORE_NODE_USER = 1U << 1,
	STORE_NODE_NAME = 1U << 2,
	STORE_NODE_HOSTNAME = 1U << 3,
	STORE_NODE_OS = 1U << 4,
	STORE_NODE_MACHINE_KEY = 1U << 5,
	STORE_NODE_NODE_KEY = 1U << 6,
	STORE_NODE_IPV4 = 1U << 7,
	STORE_NODE_ENDPOINTS = 1U << 8,
	STORE_NODE_TAGS = 1U << 9,
	STORE_NODE_EPHEMERAL = 1U << 10,
	STORE_NODE_APPROVED = 1U << 11,
	STORE_NODE_EXPIRY_DISABLED = 1U << 12,
	STORE_NODE_KEY_EXPIRY = 1U << 13,
	STORE_NODE_CREATED = 1U << 14,
	STORE_NODE_LAST_SEEN = 1U << 15,
	STORE_NODE_AUDIT_KEY = 1U << 16,
	STORE_NODE_DISCO = 1U << 17, /* disco key, home region, mapping_varies: what peers see */
	STORE_NODE_ALL = (1U << 18) - 1,
};

/* The persisted columns in which after differs from before (STORE_NODE_*). */
uint32_t store_node_diff(const struct control_node *before, const struct control_node *after);

struct store_op {
	enum store_op_kind kind;
	union {
		struct store_policy policy;
		struct store_flow flow;
		struct store_flow_prune flow_prune;
		struct control_tailnet tailnet;
		struct control_user user;
		struct control_node node;
		struct control_authkey authkey;
		struct store_setting setting;
		struct control_account account;
		struct control_ca ca;
		struct control_mcert mcert;
		uint64_t id;
		int64_t audit_prune_before; /* Unix seconds */
	};
	/*
	 * The configuration audit log entry (audit.h) describing this write: appended
	 * in the same transaction, after the write succeeded (store_write_audited, or
	 * store_submit, which does not copy it).
	 */
	const struct audit_entry *audit;
	/* STORE_OP_MCERT_PUT inserting: the certificate itself (DER; NULL: not kept). */
	const uint8_t *mcert_der;
	size_t mcert_der_len;
	/*
	 * STORE_OP_NODE_UPDATE, _LIVE, _TOUCH: the columns written (STORE_NODE_*; others keep
	 * what the row has). 0 writes none, but the row must exist (-ENOENT).
	 */
	uint32_t node_fields;
};

/*
 * Completion of one asynchronous write, on the loop thread. err: 0, -EEXIST
 * (a unique name, address or prefix is taken), -ENOENT (update/delete of a
 * missing row), -EINVAL, -EIO. id: the new row's id for *_CREATE/NODE_INSERT.
 */
typedef void (*store_done_fn)(void *ctx, int err, uint64_t id);

enum store_change_kind {
	STORE_CHANGE_TAILNET = 1,
	STORE_CHANGE_USER,
	STORE_CHANGE_NODE,
	STORE_CHANGE_AUTHKEY,
	STORE_CHANGE_SETTING,
	STORE_CHANGE_ACCOUNT,
	STORE_CHANGE_POLICY, /* id: the tailnet's */
	/* A node's live state only (STORE_OP_NODE_LIVE): endpoints and last_seen. */
	STORE_CHANGE_NODE_LIVE,
	/* A node written as it was (STORE_OP_NODE_TOUCH). */
	STORE_CHANGE_NODE_TOUCH,
	STORE_CHANGE_CA, /* id: the CA's; read at each registration, nothing cached */
	STORE_CHANGE_MCERT,
};

struct store_change {
	uint64_t seq;
	enum store_change_kind kind;
	uint64_t id;	 /* row id; 0 for settings */
	uint64_t origin; /* the store instance that wrote it (store_changes_since only) */
};

/* Everything, as loaded at startup. Arrays are malloc'd; store_snapshot_free. */
struct store_snapshot {
	size_t n_tailnets, n_users, n_nodes, n_authkeys;
	struct control_tailnet *tailnets;
	struct control_user *users;
	struct control_node *nodes;
	struct control_authkey *authkeys;
	uint64_t change_seq; /* store_changes_poll cursor as of this snapshot */
};
void store_snapshot_free(struct store_snapshot *snap);

struct store_stats {
	uint64_t commits;  /* transactions committed = fsyncs of the WAL */
	uint64_t ops;      /* operations applied */
	uint64_t failed;   /* operations that failed alone (rolled back savepoint) */
};

/* The backend seam. Every function runs on one connection handle `be`. */
struct store_backend {
	const char *name;
	/* Opens (creating and migrating when needed) the database at path. 0 or -errno. */
	int (*open)(const char *path, void **ret_be);
	void (*close)(void *be);
	int (*load)(void *be, struct store_snapshot *ret_snap);
	/*
	 * Applies ops in one durable transaction; each op's result goes to errs[i]
	 * and ids[i]. Returns 0 when the transaction committed, -errno when the
	 * whole batch failed (then every op counts as failed).
	 */
	int (*apply)(void *be, const struct store_op *ops, size_t n, uint64_t origin, int *errs,
		     uint64_t *ids);
	int (*tailnet_get)(void *be, uint64_t id, const char *name, struct control_tailnet *ret);
	int (*user_get)(void *be, uint64_t id, uint64_t tailnet_id, const char *name,
			struct control_user *ret);
	int (*node_get)(void *be, uint64_t id, struct control_node *ret);
	int (*authkey_get)(void *be, uint64_t id, const char *prefix, struct control_authkey *ret);
	int (*setting_get)(void *be, const char *key, struct store_setting *ret);
	/*
	 * The audit log: the anchor (seq 0 and zeros before any pruning), and the
	 * entries after seq with time >= since in order, each passed to fn (its
	 * strings valid during the call; fn returns < 0 to stop, which is returned).
	 */
	int (*audit_anchor)(void *be, uint64_t *ret_seq, uint8_t ret_hash[AUDIT_HASH_LEN]);
	int (*audit_read)(void *be, uint64_t after_seq, int64_t since, size_t max,
			  int (*fn)(void *arg, const struct audit_entry *e), void *arg);
	int (*account_get)(void *be, const char *email, struct control_account *ret);
	/* Every account, malloc'd array in *ret. */
	int (*account_list)(void *be, struct control_account **ret, size_t *ret_n);
	/* *ret malloc'd, NUL-terminated; -ENOENT: the tailnet has no policy. */
	int (*policy_get)(void *be, uint64_t tailnet_id, char **ret, size_t *ret_len);
	/*
	 * Flow logs. flow_chain: a node's last stored batch (seq 0 and zeros: none), and the
	 * audit key it verified under. flow_batches: every batch after (node_id, id) in that
	 * order with its record rows, to fn (< 0 stops and is returned). flow_totals: each
	 * reporting node's totals per flow whose last record is at or after since_ns (node_id
	 * 0: every node), in no particular order.
	 */
	int (*flow_chain)(void *be, uint64_t node_id, uint64_t *ret_seq,
			  uint8_t ret_hash[FLOWBATCH_HASH_LEN], uint8_t ret_key[32]);
	int (*flow_batches)(void *be, uint64_t after_node, uint64_t after_id,
			    int (*fn)(void *arg, const struct store_flow_row *b), void *arg);
	int (*flow_totals)(void *be, uint64_t node_id, uint64_t since_ns,
			   int (*fn)(void *arg, const struct store_flow_total *t), void *arg);
	/* Every retention anchor (flows.h) in ascending node_id order, to fn (< 0 stops). */
	int (*flow_anchors)(void *be, int (*fn)(void *arg, const struct flows_anchor *a),
			    void *arg);
	/*
	 * Machine certificates (ca.h): a tailnet's signing CA (its newest not retired), every
	 * CA of every tailnet (by id), one certificate by serial, all of them.
	 */
	int (*ca_get)(void *be, uint64_t tailnet_id, struct control_ca *ret);
	int (*ca_list)(void *be, struct control_ca **ret, size_t *ret_n);
	int (*mcert_get)(void *be, const char *serial, struct control_mcert *ret);
	int (*mcert_list)(void *be, struct control_mcert **ret, size_t *ret_n);
	int (*mcert_der)(void *be, const char *serial, uint8_t *ret, size_t cap);
	int (*mcert_newer)(void *be, uint64_t tailnet_id, const uint8_t machine_key[NETMAP_KEY_LEN],
			   const uint8_t pub[32], int64_t not_after, int64_t now,
			   struct control_mcert *ret);
	int (*mcert_get_id)(void *be, uint64_t id, struct control_mcert *ret);
	int (*mcert_due)(void *be, int64_t now, int64_t window_sec, struct control_mcert **ret,
			 size_t *ret_n);
	/* Changes by other origins after *cursor; advances *cursor past all it read. */
	int (*changes)(void *be, uint64_t origin, uint64_t *cursor, struct store_change *ret,
		       size_t cap);
	/* Changes of every origin from seq on (seq itself included), in order, at most cap. */
	int (*changes_since)(void *be, uint64_t seq, struct store_change *ret, size_t cap);
};

extern const struct store_backend store_backend_sqlite;
/* The schema version this binary writes. */
int store_sqlite_schema_version(void);
/* For tests: open a backend handle migrated only up to `target` (builds old databases). */
int store_sqlite_open_version(const char *path, int target, void **ret_be);

/*
 * Opens the SQLite store at path (the file is created mode 0600). 0, or -errno;
 * -EPROTO when the database was written by a newer trellis-control (message
 * logged).
 */
int store_open(const char *path, struct store **ret);
int store_open_backend(const struct store_backend *be, const char *path, struct store **ret);
/* Waits for every queued write to become durable, then closes. Accepts NULL. */
void store_free(struct store *s);

int store_load(struct store *s, struct store_snapshot *ret_snap);

/*
 * Completions of store_submit run on loop's thread from now on (call on that
 * thread, or before its loop runs).
 */
void store_loop_attach(struct store *s, struct loop *loop);
/* Loop thread: completions not yet run are dropped (their writes are durable). */
void store_loop_detach(struct store *s);
/*
 * Asynchronous write (after store_loop_attach): copies op; done runs on the
 * loop thread once the op's transaction is durable. 0, -EAGAIN, -ENOTCONN (not
 * attached). op->audit is not copied: the caller keeps the entry until done
 * runs (or, at shutdown, forever: a completion never run is dropped).
 */
int store_submit(struct store *s, const struct store_op *op, store_done_fn done, void *ctx);
/* Loop thread: runs the completions queued so far now (shutdown). Returns how many ran. */
int store_completions_run(struct store *s);

/* Synchronous write: returns once durable. 0 or the op's -errno; ret_id may be NULL. */
int store_write(struct store *s, const struct store_op *op, uint64_t *ret_id);
/*
 * store_write with the audit entry describing the write (audit.h), appended in
 * its transaction: both commit or neither. The store assigns seq, prev_hash
 * and hash. The entry is the caller's.
 */
int store_write_audited(struct store *s, const struct store_op *op,
			const struct audit_entry *audit, uint64_t *ret_id);
/* Blocks until everything submitted so far is durable (and its completion queued). */
void store_flush(struct store *s);

/* Convenience synchronous writes. */
int store_tailnet_create(struct store *s, struct control_tailnet *t);   /* sets t->id */
int store_tailnet_update(struct store *s, const struct control_tailnet *t);
int store_user_create(struct store *s, struct control_user *u);         /* sets u->id */
int store_node_insert(struct store *s, struct control_node *n);         /* sets n->id */
int store_node_update(struct store *s, const struct control_node *n); /* every column */
int store_node_delete(struct store *s, uint64_t id);
int store_authkey_create(struct store *s, struct control_authkey *k);   /* sets k->id */
int store_authkey_update(struct store *s, const struct control_authkey *k);
int store_authkey_delete(struct store *s, uint64_t id);
int store_setting_set(struct store *s, const char *key, const void *value, size_t len);

/* Point reads (read connection). 0 or -ENOENT. */
int store_tailnet_get(struct store *s, uint64_t id, struct control_tailnet *ret);
int store_tailnet_get_by_name(struct store *s, const char *name, struct control_tailnet *ret);
int store_user_get(struct store *s, uint64_t id, struct control_user *ret);
int store_user_get_by_name(struct store *s, uint64_t tailnet_id, const char *name,
			   struct control_user *ret);
int store_node_get(struct store *s, uint64_t id, struct control_node *ret);
int store_authkey_get(struct store *s, uint64_t id, struct control_authkey *ret);
int store_authkey_get_by_prefix(struct store *s, const char *prefix, struct control_authkey *ret);
/* Local accounts (email in lower case). 0 or -ENOENT; list: a malloc'd array to free(). */
int store_account_get(struct store *s, const char *email, struct control_account *ret);
int store_account_list(struct store *s, struct control_account **ret, size_t *ret_n);
/* A tailnet's policy text (malloc'd, NUL-terminated): 0, -ENOENT (none), -errno. */
int store_policy_get(struct store *s, uint64_t tailnet_id, char **ret, size_t *ret_len);
/* Writes (len 0: deletes) a tailnet's policy. 0 or -errno (-ENOENT: no such tailnet). */
int store_policy_set(struct store *s, uint64_t tailnet_id, const char *text, size_t len);
/*
 * A tailnet's signing CA (the newest not retired); every CA of every tailnet, by id
 * (malloc'd); a machine certificate by serial; all of them (malloc'd). 0, -ENOENT.
 */
int store_ca_get(struct store *s, uint64_t tailnet_id, struct control_ca *ret);
int store_ca_list(struct store *s, struct control_ca **ret, size_t *ret_n);
int store_mcert_get(struct store *s, const char *serial, struct control_mcert *ret);
int store_mcert_list(struct store *s, struct control_mcert **ret, size_t *ret_n);
/*
 * A certificate itself (DER, kept since schema 14), by serial only: listings stay small.
 * Its length, -ENOENT (none, or signed before), -EMSGSIZE (over cap).
 */
int store_mcert_der(struct store *s, const char *serial, uint8_t *ret, size_t cap);
/*
 * Of the tailnet's certificates for this machine key and certificate key, not revoked, of a
 * CA not retired, kept whole, valid at now: the one that ends last, if it ends after
 * not_after. 0, -ENOENT.
 */
int store_mcert_newer(struct store *s, uint64_t tailnet_id,
		      const uint8_t machine_key[NETMAP_KEY_LEN], const uint8_t pub[32],
		      int64_t not_after, int64_t now, struct control_mcert *ret);
/* A certificate by its row id (a change of the feed names it so). 0, -ENOENT. */
int store_mcert_get_id(struct store *s, uint64_t id, struct control_mcert *ret);
/*
 * What auto-renewal renews at now (ca_renew_due's rules, as one indexed query: the
 * certificates ending within window_sec, not the whole table): malloc'd, in id order.
 * 0 or -errno.
 */
int store_mcert_due(struct store *s, int64_t now, int64_t window_sec, struct control_mcert **ret,
		    size_t *ret_n);
/* Copies at most cap bytes; returns the value length, or -ENOENT. */
int store_setting_get(struct store *s, const char *key, void *value, size_t cap);

/*
 * Changes committed by other processes (admin CLI, other replicas) after
 * *cursor (start from snapshot.change_seq). Fills up to cap entries and returns
 * how many; call again while it returns cap. Cheap when nothing changed.
 */
int store_changes_poll(struct store *s, uint64_t *cursor, struct store_change *ret, size_t cap);

/*
 * The change feed's history (read connection), whoever wrote it: the rows from seq on, seq
 * itself first if it is still kept (the writer prunes old rows). Fills up to cap and returns
 * how many, or -errno. What a reconnecting node missed (docs/control-protocol.md).
 */
int store_changes_since(struct store *s, uint64_t seq, struct store_change *ret, size_t cap);

/* The audit log (read connection): as the backend's audit_anchor and audit_read; max 0: all. */
int store_audit_anchor(struct store *s, uint64_t *ret_seq, uint8_t ret_hash[AUDIT_HASH_LEN]);
int store_audit_read(struct store *s, uint64_t after_seq, int64_t since, size_t max,
		     int (*fn)(void *arg, const struct audit_entry *e), void *arg);

/*
 * Flow logs (read connection): as the backend's flow_chain (a node whose batches were all
 * pruned: its anchor), flow_batches, flow_totals and flow_anchors.
 */
int store_flow_chain(struct store *s, uint64_t node_id, uint64_t *ret_seq,
		     uint8_t ret_hash[FLOWBATCH_HASH_LEN], uint8_t ret_key[32]);
int store_flow_batches(struct store *s, uint64_t after_node, uint64_t after_id,
		       int (*fn)(void *arg, const struct store_flow_row *b), void *arg);
int store_flow_totals(struct store *s, uint64_t node_id, uint64_t since_ns,
		      int (*fn)(void *arg, const struct store_flow_total *t), void *arg);
int store_flow_anchors(struct store *s, int (*fn)(void *arg, const struct flows_anchor *a),
		       void *arg);

void store_stats_get(struct store *s, struct store_stats *ret);

#endif
