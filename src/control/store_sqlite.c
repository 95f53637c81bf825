// SPDX-License-Identifier: MIT
/*
 * The SQLite backend of the store (store.h): one sqlite3 connection per handle,
 * WAL + synchronous=FULL (a commit is durable when COMMIT returns), foreign
 * keys on, a busy timeout for the admin CLI writing next to a running server,
 * and every statement prepared once and cached for the life of the handle.
 *
 * Migrations are numbered from 1; schema_version holds the number applied last.
 * Each migration runs in its own transaction together with the version bump,
 * so a crash mid-migration leaves the previous version intact. A database whose
 * version is above what this binary knows is refused rather than misread.
 */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/util.h"
#include "control/store.h"

static const char *const migrations[] = {
    /* 1: the schema. */
    "CREATE TABLE tailnets ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " name TEXT NOT NULL UNIQUE,"
    " key_expiry_sec INTEGER NOT NULL DEFAULT 0,"
    " ephemeral_timeout_sec INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL);"
    "CREATE TABLE users ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " tailnet_id INTEGER NOT NULL REFERENCES tailnets(id) ON DELETE CASCADE,"
    " name TEXT NOT NULL,"
    " created INTEGER NOT NULL,"
    " UNIQUE (tailnet_id, name));"
    "CREATE TABLE nodes ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " tailnet_id INTEGER NOT NULL REFERENCES tailnets(id) ON DELETE CASCADE,"
    " user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,"
    " name TEXT NOT NULL,"
    " hostname TEXT NOT NULL,"
    " os TEXT NOT NULL,"
    " machine_key BLOB NOT NULL,"
    " node_key BLOB NOT NULL,"
    " ipv4 INTEGER NOT NULL,"
    " endpoints TEXT NOT NULL DEFAULT '',"
    " tags TEXT NOT NULL DEFAULT '',"
    " ephemeral INTEGER NOT NULL DEFAULT 0,"
    " approved INTEGER NOT NULL DEFAULT 0,"
    " expiry_disabled INTEGER NOT NULL DEFAULT 0,"
    " key_expiry INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL,"
    " last_seen INTEGER NOT NULL DEFAULT 0,"
    " UNIQUE (tailnet_id, name),"
    " UNIQUE (tailnet_id, ipv4),"
    " UNIQUE (tailnet_id, machine_key));"
    "CREATE TABLE authkeys ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " tailnet_id INTEGER NOT NULL REFERENCES tailnets(id) ON DELETE CASCADE,"
    " user_id INTEGER REFERENCES users(id) ON DELETE SET NULL,"
    " prefix TEXT NOT NULL UNIQUE,"
    " hash BLOB NOT NULL,"
    " reusable INTEGER NOT NULL,"
    " ephemeral INTEGER NOT NULL,"
    " preauthorized INTEGER NOT NULL,"
    " tags TEXT NOT NULL DEFAULT '',"
    " expires INTEGER NOT NULL DEFAULT 0,"
    " created INTEGER NOT NULL,"
    " uses INTEGER NOT NULL DEFAULT 0,"
    " revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
    "CREATE TABLE changes ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " kind INTEGER NOT NULL,"
    " row_id INTEGER NOT NULL,"
    " origin INTEGER NOT NULL);",
    /* 2: node-key lookups (registration with old_node_key, whois). */
    "CREATE INDEX nodes_node_key ON nodes (node_key);",
    /*
     * 3: a node key belongs to one node in a tailnet (issue 7, finding 4).
     * A database written before may hold duplicates (a takeover): the node
     * registered first keeps the key; the later ones get a random key nobody
     * holds and an expired one, so they must re-authenticate.
     */
    "UPDATE nodes SET node_key = randomblob(32), key_expiry = 1, expiry_disabled = 0"
    " WHERE EXISTS (SELECT 1 FROM nodes o WHERE o.tailnet_id = nodes.tailnet_id"
    " AND o.node_key = nodes.node_key AND o.id < nodes.id);"
    "CREATE UNIQUE INDEX nodes_tailnet_node_key ON nodes (tailnet_id, node_key);",
    /* 4: device approval per tailnet (off: auth keys approve, as before). */
    "ALTER TABLE tailnets ADD COLUMN device_approval INTEGER NOT NULL DEFAULT 0;",
    /*
     * 5: the configuration audit log (audit.h): a hash chain of admin writes, and
     * the anchor pruning leaves (the last removed entry's seq and hash).
     */
    "CREATE TABLE audit ("
    " seq INTEGER PRIMARY KEY,"
    " time INTEGER NOT NULL,"
    " actor TEXT NOT NULL,"
    " action TEXT NOT NULL,"
    " target TEXT NOT NULL,"
    " before TEXT NOT NULL,"
    " after TEXT NOT NULL,"
    " prev_hash BLOB NOT NULL,"
    " hash BLOB NOT NULL);"
    "CREATE INDEX audit_time ON audit (time);"
    "CREATE TABLE audit_anchor ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " seq INTEGER NOT NULL,"
    " hash BLOB NOT NULL);",
    /*
     * 6: local accounts (issue 11): an Argon2id hash with its parameters, the TOTP
     * secret once enrolled, the last TOTP step used (replay refusal), the unused
     * recovery codes' hashes concatenated. Tailnet and user come at first login.
     */
    "CREATE TABLE accounts ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " email TEXT NOT NULL UNIQUE,"
    " password TEXT NOT NULL,"
    " admin INTEGER NOT NULL DEFAULT 0,"
    " totp_secret BLOB,"
    " totp_last_step INTEGER NOT NULL DEFAULT 0,"
    " recovery BLOB NOT NULL DEFAULT x'',"
    " created INTEGER NOT NULL);"
    /* ... and the tailnet setting that makes a second factor mandatory at login. */
    "ALTER TABLE tailnets ADD COLUMN require_2fa INTEGER NOT NULL DEFAULT 0;",
    /* 7: a tailnet's access policy (issue 12), as the admin wrote it; none: allow all. */
    "CREATE TABLE policies ("
    " tailnet_id INTEGER PRIMARY KEY REFERENCES tailnets(id) ON DELETE CASCADE,"
    " text BLOB NOT NULL);",
    /*
     * 8: flow logs (issue 13, docs/audit.md): a node's audit key; the tailnet's flow-log
     * interval (0: the default, migration 10); every admitted batch as the node signed it,
     * with the key it verified under and the collector's flags (FLOWS_F_*), and its records
     * decoded for queries, each checked against its batch by `audit verify`. A node's chain
     * restarts at seq 1 with a new audit key. No foreign keys: the record outlives a deleted node.
     */
    "ALTER TABLE nodes ADD COLUMN audit_key BLOB;"
    "ALTER TABLE tailnets ADD COLUMN flow_log_interval_ms INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE flow_batches ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " node_id INTEGER NOT NULL,"
    " seq INTEGER NOT NULL,"
    " tailnet_id INTEGER NOT NULL,"
    " received INTEGER NOT NULL,"
    " flags INTEGER NOT NULL,"
    " audit_key BLOB NOT NULL,"
    " batch BLOB NOT NULL,"
    " UNIQUE (node_id, audit_key, seq));"
    "CREATE TABLE flow_records ("
    " batch_id INTEGER NOT NULL,"
    " idx INTEGER NOT NULL,"
    " node_id INTEGER NOT NULL,"
    " tailnet_id INTEGER NOT NULL,"
    " proto INTEGER NOT NULL,"
    " icmp_type INTEGER NOT NULL,"
    " flags INTEGER NOT NULL,"
    " src BLOB NOT NULL,"
    " src_port INTEGER NOT NULL,"
    " dst BLOB NOT NULL,"
    " dst_port INTEGER NOT NULL,"
    " peer_key BLOB NOT NULL,"
    " tx_packets INTEGER NOT NULL,"
    " tx_bytes INTEGER NOT NULL,"
    " rx_packets INTEGER NOT NULL,"
    " rx_bytes INTEGER NOT NULL,"
    " first_ns INTEGER NOT NULL,"
    " last_ns INTEGER NOT NULL,"
    " denied INTEGER NOT NULL,"
    " PRIMARY KEY (batch_id, idx));"
    "CREATE INDEX flow_records_last ON flow_records (last_ns);",
    /*
     * 9: machine certificates (issue 11, ca.h): a tailnet's CA certificate (its key is a
     * file in the state directory), every certificate it signed with its revocation, and
     * the tailnet setting that makes one mandatory at registration.
     */
    "CREATE TABLE machine_cas ("
    " tailnet_id INTEGER PRIMARY KEY REFERENCES tailnets(id) ON DELETE CASCADE,"
    " cert TEXT NOT NULL,"
    " created INTEGER NOT NULL);"
    "CREATE TABLE machine_certs ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " tailnet_id INTEGER NOT NULL REFERENCES tailnets(id) ON DELETE CASCADE,"
    " serial TEXT NOT NULL UNIQUE,"
    " machine_key BLOB NOT NULL,"
    " subject TEXT NOT NULL,"
    " not_before INTEGER NOT NULL,"
    " not_after INTEGER NOT NULL,"
    " created INTEGER NOT NULL,"
    " revoked INTEGER NOT NULL DEFAULT 0,"
    " revoked_at INTEGER NOT NULL DEFAULT 0);"
    "ALTER TABLE tailnets ADD COLUMN require_machine_cert INTEGER NOT NULL DEFAULT 0;",
    /*
     * 10: flow logs per tailnet (issue 13, docs/audit.md): on unless turned off, so a tailnet
     * keeps logging as it did; flow_log_interval_ms (migration 8) now means 0: the default.
     */
    "ALTER TABLE tailnets ADD COLUMN flow_log_off INTEGER NOT NULL DEFAULT 0;",
    /*
     * 11: flow-log retention (issue 13, docs/audit.md): a tailnet's retention (0: forever);
     * per node the anchor its pruned chain starts from (its last removed batch); the index
     * that finds a tailnet's oldest batches.
     */
    "ALTER TABLE tailnets ADD COLUMN flow_retention_sec INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE flow_anchors ("
    " node_id INTEGER PRIMARY KEY,"
    " tailnet_id INTEGER NOT NULL,"
    " batch_id INTEGER NOT NULL,"
    " seq INTEGER NOT NULL,"
    " batches_dropped INTEGER NOT NULL,"
    " audit_key BLOB NOT NULL,"
    " hash BLOB NOT NULL);"
    "CREATE INDEX flow_batches_received ON flow_batches (tailnet_id, received);",
    /*
     * 12: what a node reported that its peers' netmaps carry (disco key, home relay region,
     * NAT mapping by destination), so that after a restart the server tells a change from a
     * reconnect: a node that resumes its netmap must hear of a peer's new disco key.
     */
    "ALTER TABLE nodes ADD COLUMN disco_key BLOB;"
    "ALTER TABLE nodes ADD COLUMN home_region INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE nodes ADD COLUMN mapping_varies INTEGER NOT NULL DEFAULT 0;",
    /*
     * 13: CA rotation, revocation lists, renewal (issue 11, ca.h): a tailnet may have several
     * CAs (the newest one not retired signs, every one not retired is trusted), each with the
     * name of its key file and when it was retired; a certificate names the CA that signed it
     * and keeps its key, so that it can be signed again (renewal).
     */
    "CREATE TABLE machine_cas_new ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " tailnet_id INTEGER NOT NULL REFERENCES tailnets(id) ON DELETE CASCADE,"
    " cert TEXT NOT NULL,"
    " created INTEGER NOT NULL,"
    " key_file TEXT NOT NULL,"
    " retired_at INTEGER NOT NULL DEFAULT 0);"
    "INSERT INTO machine_cas_new (tailnet_id, cert, created, key_file)"
    " SELECT tailnet_id, cert, created, tailnet_id || '.key' FROM machine_cas"
    " ORDER BY tailnet_id;"
    "DROP TABLE machine_cas;"
    "ALTER TABLE machine_cas_new RENAME TO machine_cas;"
    "CREATE INDEX machine_cas_tailnet ON machine_cas (tailnet_id);"
    "ALTER TABLE machine_certs ADD COLUMN ca_id INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE machine_certs ADD COLUMN pub BLOB;"
    "UPDATE machine_certs SET ca_id = coalesce((SELECT id FROM machine_cas"
    " WHERE machine_cas.tailnet_id = machine_certs.tailnet_id), 0);",
    /*
     * 14: the certificate itself (DER), for nodes fetching their renewed one at registration
     * (issue 11, ca.h): read by serial only, never by listings; the index finds a machine's.
     * Certificates signed before stay without (NULL): only those signed from now on are sent.
     */
    "ALTER TABLE machine_certs ADD COLUMN der BLOB;"
    "CREATE INDEX machine_certs_machine ON machine_certs (machine_key);",
    /*
     * 15: the server's auto-renewal (serve --machine-cert-auto-renew, ca.h) asks every 5 s for
     * the certificates ending within its window: a range of this index, not the whole table.
     */
    "CREATE INDEX machine_certs_not_after ON machine_certs (not_after);",
};

#define SCHEMA_VERSION ((int)ARRAY_SIZE(migrations))
/* Rows of `changes` kept for pollers that fall behind. */
#define CHANGES_KEEP 100000
#define PRUNE_EVERY_COMMITS 256

enum stmt_id {
	ST_TAILNET_INSERT,
	ST_TAILNET_UPDATE,
	ST_USER_INSERT,
	ST_NODE_INSERT,
	ST_NODE_UPDATE,
	ST_NODE_DELETE,
	ST_AUTHKEY_INSERT,
	ST_AUTHKEY_UPDATE,
	ST_AUTHKEY_DELETE,
	ST_SETTING_SET,
	ST_POLICY_SET,
	ST_POLICY_DELETE,
	ST_POLICY_GET,
	ST_CHANGE_INSERT,
	ST_TAILNET_BY_ID,
	ST_TAILNET_BY_NAME,
	ST_USER_BY_ID,
	ST_USER_BY_NAME,
	ST_NODE_BY_ID,
	ST_AUTHKEY_BY_ID,
	ST_AUTHKEY_BY_PREFIX,
	ST_SETTING_GET,
	ST_CHANGES_MAX,
	ST_CHANGES_READ,
	ST_CHANGES_SINCE,
	ST_TAILNET_ALL,
	ST_USER_ALL,
	ST_NODE_ALL,
	ST_AUTHKEY_ALL,
	ST_AUDIT_LAST,
	ST_AUDIT_ANCHOR,
	ST_AUDIT_INSERT,
	ST_AUDIT_READ,
	ST_AUDIT_PRUNE_LAST,
	ST_AUDIT_PRUNE,
	ST_AUDIT_ANCHOR_SET,
	ST_ACCOUNT_INSERT,
	ST_ACCOUNT_UPDATE,
	ST_ACCOUNT_DELETE,
	ST_ACCOUNT_BY_EMAIL,
	ST_ACCOUNT_ALL,
	ST_FLOW_BATCH_INSERT,
	ST_FLOW_RECORD_INSERT,
	ST_FLOW_CHAIN,
	ST_FLOW_BATCHES,
	ST_FLOW_RECORDS_OF,
	ST_FLOW_TOTALS,
	ST_FLOW_PRUNE_CUT,
	ST_FLOW_PRUNE_LASTS,
	ST_FLOW_ANCHOR_SET,
	ST_FLOW_PRUNE_RECORDS,
	ST_FLOW_PRUNE_BATCHES,
	ST_FLOW_ANCHORS,
	ST_FLOW_ANCHOR_OF,
	ST_CA_INSERT,
	ST_CA_RETIRE,
	ST_CA_GET,
	ST_CA_ALL,
	ST_MCERT_INSERT,
	ST_MCERT_UPDATE,
	ST_MCERT_BY_SERIAL,
	ST_MCERT_ALL,
	ST_MCERT_DER,
	ST_MCERT_NEWER,
	ST_MCERT_BY_ID,
	ST_MCERT_DUE,
	ST_COUNT,
};

#define TAILNET_COLS                                                                               \
	"id, name, key_expiry_sec, ephemeral_timeout_sec, created, device_approval, require_2fa, " \
	"flow_log_interval_ms, require_machine_cert, flow_log_off, flow_retention_sec"
#define USER_COLS "id, tailnet_id, name, created"
#define MCERT_COLS                                                                                 \
	"id, tailnet_id, serial, machine_key, subject, not_before, not_after, created, revoked, "  \
	"revoked_at, ca_id, pub"
#define CA_COLS "id, tailnet_id, cert, created, key_file, retired_at"
#define ACCOUNT_COLS "id, email, password, admin, totp_secret, totp_last_step, recovery, created"
#define NODE_COLS                                                                                  \
	"id, tailnet_id, user_id, name, hostname, os, machine_key, node_key, ipv4, endpoints, "    \
	"tags, ephemeral, approved, expiry_disabled, key_expiry, created, last_seen, audit_key, " \
	"disco_key, home_region, mapping_varies"
#define AUTHKEY_COLS                                                                               \
	"id, tailnet_id, user_id, prefix, hash, reusable, ephemeral, preauthorized, tags, "       \
	"expires, created, uses, revoked"

#define FLOW_RECORD_COLS                                                                           \
	"proto, icmp_type, flags, src, src_port, dst, dst_port, peer_key, tx_packets, tx_bytes, "  \
	"rx_packets, rx_bytes, first_ns, last_ns, denied"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_FLOW_BATCH_INSERT] = "INSERT INTO flow_batches (node_id, seq, tailnet_id, received, flags,"
			     " audit_key, batch) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_FLOW_RECORD_INSERT] =
	"INSERT INTO flow_records (batch_id, idx, node_id, tailnet_id, " FLOW_RECORD_COLS
	") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9,"
	" ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    [ST_FLOW_CHAIN] = "SELECT seq, batch, audit_key FROM flow_batches WHERE node_id = ?1"
		      " ORDER BY id DESC LIMIT 1",
    [ST_FLOW_BATCHES] = "SELECT node_id, seq, tailnet_id, received, flags, audit_key, batch, id"
			" FROM flow_batches WHERE (node_id, id) > (?1, ?2) ORDER BY node_id, id",
    [ST_FLOW_RECORDS_OF] = "SELECT idx, " FLOW_RECORD_COLS " FROM flow_records"
			   " WHERE batch_id = ?1 ORDER BY idx",
    /*
     * Each end's totals of a flow, keyed as that end saw it. max(peer_key): zeros (no peer)
     * only when none of the end's records named one, which makes the verdict no-peer.
     */
    [ST_FLOW_TOTALS] = "SELECT node_id, tailnet_id, proto, icmp_type, max(flags), src, src_port,"
		       " dst, dst_port, max(peer_key), sum(tx_packets), sum(tx_bytes),"
		       " sum(rx_packets), sum(rx_bytes), min(first_ns), max(last_ns), sum(denied)"
		       " FROM flow_records WHERE ?1 = 0 OR node_id = ?1"
		       " GROUP BY node_id, proto, icmp_type, src, src_port, dst, dst_port"
		       " HAVING max(last_ns) >= ?2",
    /*
     * Retention: where a prune stops (the tailnet's oldest batches by arrival), each node's
     * last batch at or below it (its anchor), then the rows.
     */
    [ST_FLOW_PRUNE_CUT] = "SELECT count(*), coalesce(max(id), 0) FROM (SELECT id FROM flow_batches"
			  " WHERE tailnet_id = ?1 AND received < ?2 ORDER BY received, id"
			  " LIMIT ?3)",
    [ST_FLOW_PRUNE_LASTS] =
	"SELECT node_id, id, seq, audit_key, batch FROM flow_batches WHERE id IN"
	" (SELECT max(id) FROM flow_batches WHERE tailnet_id = ?1 AND id <= ?2"
	" GROUP BY node_id)",
    [ST_FLOW_ANCHOR_SET] = "INSERT INTO flow_anchors (node_id, tailnet_id, batch_id, seq,"
			   " batches_dropped, audit_key, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
			   " ON CONFLICT (node_id) DO UPDATE SET tailnet_id = excluded.tailnet_id,"
			   " batch_id = excluded.batch_id, seq = excluded.seq,"
			   " batches_dropped = excluded.batches_dropped,"
			   " audit_key = excluded.audit_key, hash = excluded.hash",
    [ST_FLOW_PRUNE_RECORDS] = "DELETE FROM flow_records WHERE batch_id IN (SELECT id FROM"
			      " flow_batches WHERE tailnet_id = ?1 AND id <= ?2)",
    [ST_FLOW_PRUNE_BATCHES] = "DELETE FROM flow_batches WHERE tailnet_id = ?1 AND id <= ?2",
    [ST_FLOW_ANCHORS] = "SELECT node_id, batch_id, seq, batches_dropped, audit_key, hash"
			" FROM flow_anchors ORDER BY node_id",
    [ST_FLOW_ANCHOR_OF] = "SELECT seq, hash, audit_key FROM flow_anchors WHERE node_id = ?1",
    [ST_TAILNET_INSERT] = "INSERT INTO tailnets (name, key_expiry_sec, ephemeral_timeout_sec,"
			  " created, device_approval, require_2fa, flow_log_interval_ms,"
			  " require_machine_cert, flow_log_off, flow_retention_sec)"
			  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [ST_TAILNET_UPDATE] =
	"UPDATE tailnets SET name = ?2, key_expiry_sec = ?3,"
	" ephemeral_timeout_sec = ?4, device_approval = ?5, require_2fa = ?6,"
	" flow_log_interval_ms = ?7, require_machine_cert = ?8, flow_log_off = ?9,"
	" flow_retention_sec = ?10 WHERE id = ?1",
    [ST_USER_INSERT] = "INSERT INTO users (tailnet_id, name, created) VALUES (?1, ?2, ?3)",
    [ST_NODE_INSERT] = "INSERT INTO nodes (tailnet_id, user_id, name, hostname, os, machine_key,"
		       " node_key, ipv4, endpoints, tags, ephemeral, approved, expiry_disabled,"
		       " key_expiry, created, last_seen, audit_key, disco_key, home_region,"
		       " mapping_varies) VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
		       " ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    /* Only the columns in the mask ?22 (store.h, STORE_NODE_*, in this order). */
    [ST_NODE_UPDATE] = "UPDATE nodes SET"
		       " tailnet_id = CASE WHEN ?22 & 1 THEN ?2 ELSE tailnet_id END,"
		       " user_id = CASE WHEN ?22 & 2 THEN ?3 ELSE user_id END,"
		       " name = CASE WHEN ?22 & 4 THEN ?4 ELSE name END,"
		       " hostname = CASE WHEN ?22 & 8 THEN ?5 ELSE hostname END,"
		       " os = CASE WHEN ?22 & 16 THEN ?6 ELSE os END,"
		       " machine_key = CASE WHEN ?22 & 32 THEN ?7 ELSE machine_key END,"
		       " node_key = CASE WHEN ?22 & 64 THEN ?8 ELSE node_key END,"
		       " ipv4 = CASE WHEN ?22 & 128 THEN ?9 ELSE ipv4 END,"
		       " endpoints = CASE WHEN ?22 & 256 THEN ?10 ELSE endpoints END,"
		       " tags = CASE WHEN ?22 & 512 THEN ?11 ELSE tags END,"
		       " ephemeral = CASE WHEN ?22 & 1024 THEN ?12 ELSE ephemeral END,"
		       " approved = CASE WHEN ?22 & 2048 THEN ?13 ELSE approved END,"
		       " expiry_disabled = CASE WHEN ?22 & 4096 THEN ?14 ELSE expiry_disabled END,"
		       " key_expiry = CASE WHEN ?22 & 8192 THEN ?15 ELSE key_expiry END,"
		       " created = CASE WHEN ?22 & 16384 THEN ?16 ELSE created END,"
		       " last_seen = CASE WHEN ?22 & 32768 THEN ?17 ELSE last_seen END,"
		       " audit_key = CASE WHEN ?22 & 65536 THEN ?18 ELSE audit_key END,"
		       " disco_key = CASE WHEN ?22 & 131072 THEN ?19 ELSE disco_key END,"
		       " home_region = CASE WHEN ?22 & 131072 THEN ?20 ELSE home_region END,"
		       " mapping_varies = CASE WHEN ?22 & 131072 THEN ?21 ELSE mapping_varies END"
		       " WHERE id = ?1",
    [ST_NODE_DELETE] = "DELETE FROM nodes WHERE id = ?1",
    [ST_AUTHKEY_INSERT] = "INSERT INTO authkeys (tailnet_id, user_id, prefix, hash, reusable,"
			  " ephemeral, preauthorized, tags, expires, created, uses, revoked)"
			  " VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [ST_AUTHKEY_UPDATE] = "UPDATE authkeys SET uses = ?2, revoked = ?3 WHERE id = ?1",
    [ST_AUTHKEY_DELETE] = "DELETE FROM authkeys WHERE id = ?1",
    [ST_SETTING_SET] = "INSERT INTO settings (key, value) VALUES (?1, ?2)"
		       " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    [ST_POLICY_SET] = "INSERT INTO policies (tailnet_id, text) VALUES (?1, ?2)"
		      " ON CONFLICT (tailnet_id) DO UPDATE SET text = excluded.text",
    [ST_POLICY_DELETE] = "DELETE FROM policies WHERE tailnet_id = ?1",
    [ST_POLICY_GET] = "SELECT text FROM policies WHERE tailnet_id = ?1",
    [ST_CHANGE_INSERT] = "INSERT INTO changes (kind, row_id, origin) VALUES (?1, ?2, ?3)",
    [ST_TAILNET_BY_ID] = "SELECT " TAILNET_COLS " FROM tailnets WHERE id = ?1",
    [ST_TAILNET_BY_NAME] = "SELECT " TAILNET_COLS " FROM tailnets WHERE name = ?1",
    [ST_USER_BY_ID] = "SELECT " USER_COLS " FROM users WHERE id = ?1",
    [ST_USER_BY_NAME] = "SELECT " USER_COLS " FROM users WHERE tailnet_id = ?1 AND name = ?2",
    [ST_NODE_BY_ID] = "SELECT " NODE_COLS " FROM nodes WHERE id = ?1",
    [ST_AUTHKEY_BY_ID] = "SELECT " AUTHKEY_COLS " FROM authkeys WHERE id = ?1",
    [ST_AUTHKEY_BY_PREFIX] = "SELECT " AUTHKEY_COLS " FROM authkeys WHERE prefix = ?1",
    [ST_SETTING_GET] = "SELECT value FROM settings WHERE key = ?1",
    [ST_CHANGES_MAX] = "SELECT coalesce(max(seq), 0) FROM changes",
    [ST_CHANGES_SINCE] = "SELECT seq, kind, row_id, origin FROM changes WHERE seq >= ?1"
			 " ORDER BY seq LIMIT ?2",
    [ST_CHANGES_READ] = "SELECT seq, kind, row_id FROM changes WHERE seq > ?1 AND seq <= ?2"
			" AND origin != ?3 ORDER BY seq LIMIT ?4",
    [ST_TAILNET_ALL] = "SELECT " TAILNET_COLS " FROM tailnets ORDER BY id",
    [ST_USER_ALL] = "SELECT " USER_COLS " FROM users ORDER BY id",
    [ST_NODE_ALL] = "SELECT " NODE_COLS " FROM nodes ORDER BY id",
    [ST_AUTHKEY_ALL] = "SELECT " AUTHKEY_COLS " FROM authkeys ORDER BY id",
    [ST_AUDIT_LAST] = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
    [ST_AUDIT_ANCHOR] = "SELECT seq, hash FROM audit_anchor WHERE id = 1",
    [ST_AUDIT_INSERT] = "INSERT INTO audit (seq, time, actor, action, target, before, after,"
			" prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_AUDIT_READ] = "SELECT seq, time, actor, action, target, before, after, prev_hash, hash"
		      " FROM audit WHERE seq > ?1 AND time >= ?2 ORDER BY seq LIMIT ?3",
    /* The newest flows.prune entry stays: it holds the flow anchors' digest (docs/audit.md). */
    [ST_AUDIT_PRUNE_LAST] = "SELECT seq, hash FROM audit WHERE time < ?1 AND seq < (SELECT"
			    " coalesce(max(seq), 9223372036854775807) FROM audit"
			    " WHERE action = 'flows.prune') ORDER BY seq DESC LIMIT 1",
    [ST_AUDIT_PRUNE] = "DELETE FROM audit WHERE seq <= ?1",
    [ST_AUDIT_ANCHOR_SET] = "INSERT INTO audit_anchor (id, seq, hash) VALUES (1, ?1, ?2)"
			    " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq,"
			    " hash = excluded.hash",
    [ST_ACCOUNT_INSERT] = "INSERT INTO accounts (email, password, admin, totp_secret,"
			  " totp_last_step, recovery, created) VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_ACCOUNT_UPDATE] = "UPDATE accounts SET email = ?2, password = ?3, admin = ?4,"
			  " totp_secret = ?5, totp_last_step = ?6, recovery = ?7, created = ?8"
			  " WHERE id = ?1",
    [ST_ACCOUNT_DELETE] = "DELETE FROM accounts WHERE id = ?1",
    [ST_ACCOUNT_BY_EMAIL] = "SELECT " ACCOUNT_COLS " FROM accounts WHERE email = ?1",
    [ST_ACCOUNT_ALL] = "SELECT " ACCOUNT_COLS " FROM accounts ORDER BY id",
    [ST_CA_INSERT] = "INSERT INTO machine_cas (tailnet_id, cert, created, key_file)"
		     " VALUES (?2, ?3, ?4, ?5)",
    [ST_CA_RETIRE] = "UPDATE machine_cas SET retired_at = ?6 WHERE id = ?1",
    /* The one that signs: the newest not retired. */
    [ST_CA_GET] = "SELECT " CA_COLS " FROM machine_cas WHERE tailnet_id = ?1 AND retired_at = 0"
		  " ORDER BY id DESC LIMIT 1",
    [ST_CA_ALL] = "SELECT " CA_COLS " FROM machine_cas ORDER BY id",
    [ST_MCERT_INSERT] = "INSERT INTO machine_certs (tailnet_id, serial, machine_key, subject,"
			" not_before, not_after, created, revoked, revoked_at, ca_id, pub, der)"
			" VALUES (?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    [ST_MCERT_UPDATE] = "UPDATE machine_certs SET revoked = ?9, revoked_at = ?10 WHERE id = ?1",
    [ST_MCERT_BY_SERIAL] = "SELECT " MCERT_COLS " FROM machine_certs WHERE serial = ?1",
    [ST_MCERT_ALL] = "SELECT " MCERT_COLS " FROM machine_certs ORDER BY id",
    [ST_MCERT_DER] = "SELECT der FROM machine_certs WHERE serial = ?1 AND der IS NOT NULL",
    /* The one that ends last among those a node may be sent (ca_cert_newer). */
    [ST_MCERT_NEWER] = "SELECT " MCERT_COLS " FROM machine_certs WHERE tailnet_id = ?1"
		       " AND machine_key = ?2 AND pub = ?3 AND revoked = 0 AND not_after > ?4"
		       " AND not_before <= ?5 AND der IS NOT NULL AND ca_id IN (SELECT id FROM"
		       " machine_cas WHERE tailnet_id = ?1 AND retired_at = 0)"
		       " ORDER BY not_after DESC, id DESC LIMIT 1",
    [ST_MCERT_BY_ID] = "SELECT " MCERT_COLS " FROM machine_certs WHERE id = ?1",
    /*
     * Auto-renewal (store_mcert_due, ca_renew_due's rules): a range of machine_certs_not_after
     * (?1 now, ?2 the window, ?3 MCERT_BACKDATE_SEC), each candidate checked to be the newest
     * (not_after, then id) of its tailnet, machine key and certificate key among those of a CA
     * not retired, through machine_certs_machine. A newer revoked one stops renewal.
     */
    [ST_MCERT_DUE] = "SELECT " MCERT_COLS " FROM machine_certs c WHERE c.not_after > ?1"
		     " AND c.not_after < ?1 + ?2 AND c.not_before <= ?1 AND c.revoked = 0"
		     " AND c.pub IS NOT NULL AND c.not_after - c.not_before - ?3 > ?2"
		     " AND c.ca_id IN (SELECT id FROM machine_cas WHERE tailnet_id = c.tailnet_id"
		     " AND retired_at = 0) AND NOT EXISTS (SELECT 1 FROM machine_certs n"
		     " WHERE n.machine_key = c.machine_key AND n.tailnet_id = c.tailnet_id"
		     " AND n.pub = c.pub AND (n.not_after > c.not_after OR (n.not_after ="
		     " c.not_after AND n.id > c.id)) AND n.ca_id IN (SELECT id FROM machine_cas"
		     " WHERE tailnet_id = n.tailnet_id AND retired_at = 0)) ORDER BY c.id",
};

struct sq {
	sqlite3 *db;
	char *path;
	sqlite3_stmt *stmt[ST_COUNT];
	int64_t data_version;
	bool data_version_known;
	bool changes_more; /* the last poll filled its buffer */
	uint64_t commits;
};

static int sq_errno(struct sq *q, int rc)
{
	int ext = sqlite3_extended_errcode(q->db);

	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
		if (ext == SQLITE_CONSTRAINT_FOREIGNKEY)
			return -ENOENT;
		if (ext == SQLITE_CONSTRAINT_NOTNULL || ext == SQLITE_CONSTRAINT_CHECK)
			return -EINVAL;
		return -EEXIST;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	default:
		return -EIO;
	}
}

static int exec(struct sq *q, const char *sql)
{
	char *msg = NULL;
	int rc;

	rc = sqlite3_exec(q->db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		log_err("store: %s: %s", q->path, msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		return sq_errno(q, rc);
	}
	return 0;
}

static sqlite3_stmt *stmt_get(struct sq *q, enum stmt_id id)
{
	sqlite3_stmt *st = q->stmt[id];
	int rc;

	if (st) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
		return st;
	}
	rc = sqlite3_prepare_v3(q->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q->stmt[id],
				NULL);
	if (rc != SQLITE_OK) {
		log_err("store: prepare %d: %s", id, sqlite3_errmsg(q->db));
		return NULL;
	}
	return q->stmt[id];
}

static int schema_version_read(struct sq *q, int *ret)
{
	sqlite3_stmt *st = NULL;
	int rc, r = 0;

	*ret = 0;
	rc = sqlite3_prepare_v2(q->db, "SELECT version FROM schema_version", -1, &st, NULL);
	if (rc != SQLITE_OK) {
		r = sq_errno(q, rc);
		goto out;
	}
	rc = sqlite3_step(st);
	*ret = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		r = sq_errno(q, rc);
out:
	sqlite3_finalize(st);
	return r;
}

/* Brings the schema to `target` (tests use a lower one to build old databases). */
static int migrate(struct sq *q, int target)
{
	char sql[64];
	int v, r;

	r = exec(q, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);"
		    "INSERT INTO schema_version (version) SELECT 0"
		    " WHERE NOT EXISTS (SELECT 1 FROM schema_version)");
	if (r < 0)
		return r;
	for (;;) {
		/*
		 * Read the version inside the write transaction: two processes
		 * opening a fresh database at once must not both migrate.
		 */
		r = exec(q, "BEGIN IMMEDIATE");
		if (r < 0)
			return r;
		r = schema_version_read(q, &v);
		if (r < 0)
			goto fail;
		if (v < 0) {
			/* Not one we wrote: migrations[v] would read before the table. */
			log_err("store: %s has schema version %d; the database is damaged", q->path,
				v);
			r = -EPROTO;
			goto fail;
		}
		if (v > SCHEMA_VERSION) {
			log_err("store: %s has schema version %d, newer than the %d this "
				"trellis-control knows; upgrade trellis-control",
				q->path, v, SCHEMA_VERSION);
			r = -EPROTO;
			goto fail;
		}
		if (v >= target)
			return exec(q, "COMMIT");
		r = exec(q, migrations[v]);
		if (r < 0)
			goto fail;
		snprintf(sql, sizeof(sql), "UPDATE schema_version SET version = %d", v + 1);
		r = exec(q, sql);
		if (r < 0)
			goto fail;
		r = exec(q, "COMMIT");
		if (r < 0)
			goto fail;
		log_debug("store: %s migrated to schema version %d", q->path, v + 1);
	}
fail:
	exec(q, "ROLLBACK");
	return r;
}

static void sq_close(void *be)
{
	struct sq *q = be;
	int i;

	if (!q)
		return;
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(q->stmt[i]);
	sqlite3_close(q->db);
	free(q->path);
	free(q);
}

int store_sqlite_schema_version(void)
{
	return SCHEMA_VERSION;
}

int store_sqlite_open_version(const char *path, int target, void **ret_be)
{
	struct sq *q;
	int fd, rc, r;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->path = strdup(path);
	if (!q->path) {
		r = -ENOMEM;
		goto out;
	}
	/*
	 * Create the file ourselves so that it (and the -wal/-shm SQLite derives) is
	 * 0600 — but only when it does not exist: closing any descriptor of a file
	 * drops every POSIX lock this process holds on it, including the locks of a
	 * connection we already have open (the server opens a writer and a reader).
	 * Another process would then believe it is the last user, checkpoint and
	 * delete the live WAL, and acknowledged writes would vanish from disk.
	 */
	if (access(path, F_OK) != 0) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno != EEXIST) {
			r = -errno;
			log_err("store: %s: %m", path);
			goto out;
		}
		if (fd >= 0)
			close(fd);
	}
	rc = sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		log_err("store: %s: %s", path, q->db ? sqlite3_errmsg(q->db) : sqlite3_errstr(rc));
		r = -EIO;
		goto out;
	}
	sqlite3_extended_result_codes(q->db, 1);
	sqlite3_busy_timeout(q->db, 5000);
	r = exec(q, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
		    " PRAGMA foreign_keys = ON");
	if (r < 0)
		goto out;
	r = migrate(q, target);
	if (r < 0)
		goto out;
	*ret_be = q;
	return 0;
out:
	sq_close(q);
	return r;
}

static int sq_open(const char *path, void **ret_be)
{
	return store_sqlite_open_version(path, SCHEMA_VERSION, ret_be);
}

/* Lists ("a,b,c") for tags and endpoints; tags never hold commas (validated upstream). */
static void tags_join(char *buf, size_t len, unsigned n, const char tags[][NETMAP_TAG_MAX])
{
	size_t off = 0;
	unsigned i;

	buf[0] = '\0';
	for (i = 0; i < n && i < NETMAP_MAX_TAGS; i++)
		off += snprintf(buf + off, len - off, "%s%s", i ? "," : "", tags[i]);
}

static unsigned tags_split(const char *s, char tags[][NETMAP_TAG_MAX])
{
	unsigned n = 0;

	while (s && *s && n < NETMAP_MAX_TAGS) {
		const char *c = strchr(s, ',');
		size_t l = c ? (size_t)(c - s) : strlen(s);

		if (l && l < NETMAP_TAG_MAX) {
			memcpy(tags[n], s, l);
			tags[n][l] = '\0';
			n++;
		}
		s = c ? c + 1 : NULL;
	}
	return n;
}

static void endpoints_join(char *buf, size_t len, const struct control_node *n)
{
	char ep[ENDPOINT_STR_MAX];
	size_t off = 0;
	unsigned i;

	buf[0] = '\0';
	for (i = 0; i < n->n_endpoints && i < NETMAP_MAX_ENDPOINTS; i++)
		off += snprintf(buf + off, len - off, "%s%s", i ? "," : "",
				endpoint_format(&n->endpoints[i], ep, sizeof(ep)));
}

static void endpoints_split(const char *s, struct control_node *n)
{
	char ep[ENDPOINT_STR_MAX];

	n->n_endpoints = 0;
	while (s && *s && n->n_endpoints < NETMAP_MAX_ENDPOINTS) {
		const char *c = strchr(s, ',');
		size_t l = c ? (size_t)(c - s) : strlen(s);

		if (l < sizeof(ep)) {
			memcpy(ep, s, l);
			ep[l] = '\0';
			if (endpoint_parse(&n->endpoints[n->n_endpoints], ep) == 0)
				n->n_endpoints++;
		}
		s = c ? c + 1 : NULL;
	}
}

static void text_copy(char *dst, size_t len, sqlite3_stmt *st, int col)
{
	const char *t = (const char *)sqlite3_column_text(st, col);

	snprintf(dst, len, "%s", t ? t : "");
}

static void blob_copy(void *dst, size_t len, sqlite3_stmt *st, int col)
{
	const void *b = sqlite3_column_blob(st, col);
	size_t n = (size_t)sqlite3_column_bytes(st, col);

	memset(dst, 0, len);
	if (b)
		memcpy(dst, b, MIN(n, len));
}

static void row_tailnet(sqlite3_stmt *st, struct control_tailnet *t)
{
	memset(t, 0, sizeof(*t));
	t->id = (uint64_t)sqlite3_column_int64(st, 0);
	text_copy(t->name, sizeof(t->name), st, 1);
	t->key_expiry_sec = sqlite3_column_int64(st, 2);
	t->ephemeral_timeout_sec = sqlite3_column_int64(st, 3);
	t->created = sqlite3_column_int64(st, 4);
	t->device_approval = sqlite3_column_int(st, 5) != 0;
	t->require_2fa = sqlite3_column_int(st, 6) != 0;
	t->flow_log_interval_ms = sqlite3_column_int64(st, 7);
	t->require_machine_cert = sqlite3_column_int(st, 8) != 0;
	t->flow_log_off = sqlite3_column_int(st, 9) != 0;
	t->flow_retention_sec = sqlite3_column_int64(st, 10);
}

static void row_ca(sqlite3_stmt *st, struct control_ca *c)
{
	memset(c, 0, sizeof(*c));
	c->id = (uint64_t)sqlite3_column_int64(st, 0);
	c->tailnet_id = (uint64_t)sqlite3_column_int64(st, 1);
	text_copy(c->cert, sizeof(c->cert), st, 2);
	c->created = sqlite3_column_int64(st, 3);
	text_copy(c->key_file, sizeof(c->key_file), st, 4);
	c->retired_at = sqlite3_column_int64(st, 5);
}

static void row_mcert(sqlite3_stmt *st, struct control_mcert *m)
{
	memset(m, 0, sizeof(*m));
	m->id = (uint64_t)sqlite3_column_int64(st, 0);
	m->tailnet_id = (uint64_t)sqlite3_column_int64(st, 1);
	text_copy(m->serial, sizeof(m->serial), st, 2);
	blob_copy(m->machine_key, sizeof(m->machine_key), st, 3);
	text_copy(m->subject, sizeof(m->subject), st, 4);
	m->not_before = sqlite3_column_int64(st, 5);
	m->not_after = sqlite3_column_int64(st, 6);
	m->created = sqlite3_column_int64(st, 7);
	m->revoked = sqlite3_column_int(st, 8) != 0;
	m->revoked_at = sqlite3_column_int64(st, 9);
	m->ca_id = (uint64_t)sqlite3_column_int64(st, 10);
	m->has_pub = sqlite3_column_type(st, 11) == SQLITE_BLOB &&
		     sqlite3_column_bytes(st, 11) == (int)sizeof(m->pub);
	if (m->has_pub)
		blob_copy(m->pub, sizeof(m->pub), st, 11);
}

static void row_user(sqlite3_stmt *st, struct control_user *u)
{
	memset(u, 0, sizeof(*u));
	u->id = (uint64_t)sqlite3_column_int64(st, 0);
	u->tailnet_id = (uint64_t)sqlite3_column_int64(st, 1);
	text_copy(u->name, sizeof(u->name), st, 2);
	u->created = sqlite3_column_int64(st, 3);
}

static void row_account(sqlite3_stmt *st, struct control_account *a)
{
	size_t rec = (size_t)sqlite3_column_bytes(st, 6);

	memset(a, 0, sizeof(*a));
	a->id = (uint64_t)sqlite3_column_int64(st, 0);
	text_copy(a->email, sizeof(a->email), st, 1);
	text_copy(a->password, sizeof(a->password), st, 2);
	a->admin = sqlite3_column_int(st, 3) != 0;
	a->totp = sqlite3_column_type(st, 4) == SQLITE_BLOB &&
		  sqlite3_column_bytes(st, 4) == CONTROL_TOTP_SECRET_LEN;
	if (a->totp)
		blob_copy(a->totp_secret, sizeof(a->totp_secret), st, 4);
	a->totp_last_step = (uint64_t)sqlite3_column_int64(st, 5);
	a->n_recovery = (unsigned)MIN(rec / CONTROL_RECOVERY_HASH_LEN, CONTROL_RECOVERY_MAX);
	blob_copy(a->recovery, a->n_recovery * CONTROL_RECOVERY_HASH_LEN, st, 6);
	a->created = sqlite3_column_int64(st, 7);
}

static void bind_account(sqlite3_stmt *st, const struct control_account *a)
{
	sqlite3_bind_int64(st, 1, (int64_t)a->id);
	sqlite3_bind_text(st, 2, a->email, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, a->password, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 4, a->admin);
	if (a->totp)
		sqlite3_bind_blob(st, 5, a->totp_secret, sizeof(a->totp_secret), SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 5);
	sqlite3_bind_int64(st, 6, (int64_t)a->totp_last_step);
	sqlite3_bind_blob(st, 7, a->recovery,
			  (int)(MIN(a->n_recovery, CONTROL_RECOVERY_MAX) * CONTROL_RECOVERY_HASH_LEN),
			  SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 8, a->created);
}

static void row_node(sqlite3_stmt *st, struct control_node *n)
{
	uint32_t v4;

	memset(n, 0, sizeof(*n));
	n->id = (uint64_t)sqlite3_column_int64(st, 0);
	n->tailnet_id = (uint64_t)sqlite3_column_int64(st, 1);
	n->user_id = (uint64_t)sqlite3_column_int64(st, 2); /* NULL reads as 0 */
	text_copy(n->name, sizeof(n->name), st, 3);
	text_copy(n->hostname, sizeof(n->hostname), st, 4);
	text_copy(n->os, sizeof(n->os), st, 5);
	blob_copy(n->machine_key, sizeof(n->machine_key), st, 6);
	blob_copy(n->node_key, sizeof(n->node_key), st, 7);
	v4 = (uint32_t)sqlite3_column_int64(st, 8);
	n->ipv4[0] = v4 >> 24;
	n->ipv4[1] = v4 >> 16;
	n->ipv4[2] = v4 >> 8;
	n->ipv4[3] = v4;
	endpoints_split((const char *)sqlite3_column_text(st, 9), n);
	n->n_tags = tags_split((const char *)sqlite3_column_text(st, 10), n->tags);
	n->ephemeral = sqlite3_column_int(st, 11);
	n->approved = sqlite3_column_int(st, 12);
	n->expiry_disabled = sqlite3_column_int(st, 13);
	n->key_expiry = sqlite3_column_int64(st, 14);
	n->created = sqlite3_column_int64(st, 15);
	n->last_seen = sqlite3_column_int64(st, 16);
	if (sqlite3_column_bytes(st, 17) == NETMAP_KEY_LEN) {
		n->has_audit_key = true;
		blob_copy(n->audit_key, sizeof(n->audit_key), st, 17);
	}
	if (sqlite3_column_bytes(st, 18) == NETMAP_KEY_LEN) {
		n->has_disco_key = true;
		blob_copy(n->disco_key, sizeof(n->disco_key), st, 18);
	}
	n->home_region = (uint32_t)sqlite3_column_int64(st, 19);
	n->mapping_varies = sqlite3_column_int(st, 20);
}

static void row_authkey(sqlite3_stmt *st, struct control_authkey *k)
{
	memset(k, 0, sizeof(*k));
	k->id = (uint64_t)sqlite3_column_int64(st, 0);
	k->tailnet_id = (uint64_t)sqlite3_column_int64(st, 1);
	k->user_id = (uint64_t)sqlite3_column_int64(st, 2);
	text_copy(k->prefix, sizeof(k->prefix), st, 3);
	blob_copy(k->hash, sizeof(k->hash), st, 4);
	k->reusable = sqlite3_column_int(st, 5);
	k->ephemeral = sqlite3_column_int(st, 6);
	k->preauthorized = sqlite3_column_int(st, 7);
	k->n_tags = tags_split((const char *)sqlite3_column_text(st, 8), k->tags);
	k->expires = sqlite3_column_int64(st, 9);
	k->created = sqlite3_column_int64(st, 10);
	k->uses = (uint64_t)sqlite3_column_int64(st, 11);
	k->revoked = sqlite3_column_int(st, 12);
}

static void bind_id_or_null(sqlite3_stmt *st, int i, uint64_t id)
{
	if (id)
		sqlite3_bind_int64(st, i, (int64_t)id);
	else
		sqlite3_bind_null(st, i);
}

static void bind_node(sqlite3_stmt *st, const struct control_node *n)
{
	char tags[NETMAP_MAX_TAGS * NETMAP_TAG_MAX];
	char eps[NETMAP_MAX_ENDPOINTS * ENDPOINT_STR_MAX];
	uint32_t v4 = (uint32_t)n->ipv4[0] << 24 | (uint32_t)n->ipv4[1] << 16 |
		      (uint32_t)n->ipv4[2] << 8 | n->ipv4[3];

	tags_join(tags, sizeof(tags), n->n_tags, n->tags);
	endpoints_join(eps, sizeof(eps), n);
	sqlite3_bind_int64(st, 1, (int64_t)n->id);
	sqlite3_bind_int64(st, 2, (int64_t)n->tailnet_id);
	bind_id_or_null(st, 3, n->user_id);
	sqlite3_bind_text(st, 4, n->name, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 5, n->hostname, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 6, n->os, -1, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 7, n->machine_key, NETMAP_KEY_LEN, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 8, n->node_key, NETMAP_KEY_LEN, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 9, v4);
	sqlite3_bind_text(st, 10, eps, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 11, tags, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 12, n->ephemeral);
	sqlite3_bind_int(st, 13, n->approved);
	sqlite3_bind_int(st, 14, n->expiry_disabled);
	sqlite3_bind_int64(st, 15, n->key_expiry);
	sqlite3_bind_int64(st, 16, n->created);
	sqlite3_bind_int64(st, 17, n->last_seen);
	if (n->has_audit_key)
		sqlite3_bind_blob(st, 18, n->audit_key, NETMAP_KEY_LEN, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 18);
	if (n->has_disco_key)
		sqlite3_bind_blob(st, 19, n->disco_key, NETMAP_KEY_LEN, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, 19);
	sqlite3_bind_int64(st, 20, n->home_region);
	sqlite3_bind_int(st, 21, n->mapping_varies);
}

/* Runs a write statement; -ENOENT when an UPDATE/DELETE touched nothing. */
static int step_write(struct sq *q, sqlite3_stmt *st, bool must_touch)
{
	int rc = sqlite3_step(st);
	int r = 0;

	if (rc != SQLITE_DONE)
		r = sq_errno(q, rc);
	else if (must_touch && sqlite3_changes(q->db) == 0)
		r = -ENOENT;
	sqlite3_reset(st);
	return r;
}

/* One (seq, hash) row of st, or -ENOENT. */
static int seq_hash_get(struct sq *q, sqlite3_stmt *st, uint64_t *ret_seq,
			uint8_t ret_hash[AUDIT_HASH_LEN])
{
	int rc = sqlite3_step(st), r = 0;

	if (rc == SQLITE_ROW) {
		*ret_seq = (uint64_t)sqlite3_column_int64(st, 0);
		blob_copy(ret_hash, AUDIT_HASH_LEN, st, 1);
	} else {
		r = rc == SQLITE_DONE ? -ENOENT : sq_errno(q, rc);
	}
	sqlite3_reset(st);
	return r;
}

static int anchor_get(struct sq *q, uint64_t *ret_seq, uint8_t ret_hash[AUDIT_HASH_LEN])
{
	sqlite3_stmt *st = stmt_get(q, ST_AUDIT_ANCHOR);
	int r;

	if (!st)
		return -EIO;
	r = seq_hash_get(q, st, ret_seq, ret_hash);
	if (r == -ENOENT) {
		*ret_seq = 0;
		memset(ret_hash, 0, AUDIT_HASH_LEN);
		r = 0;
	}
	return r;
}

/*
 * Appends e after the last entry (or the anchor). Inside the writer's
 * transaction (BEGIN IMMEDIATE holds the write lock), so no other process can
 * append between reading the head and writing after it.
 */
static int audit_append(struct sq *q, const struct audit_entry *in)
{
	struct audit_entry e = *in;
	sqlite3_stmt *st = stmt_get(q, ST_AUDIT_LAST);
	int r;

	if (!st)
		return -EIO;
	r = seq_hash_get(q, st, &e.seq, e.prev_hash);
	if (r == -ENOENT)
		r = anchor_get(q, &e.seq, e.prev_hash);
	if (r < 0)
		return r;
	e.seq++;
	audit_entry_hash(&e, e.hash);
	st = stmt_get(q, ST_AUDIT_INSERT);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)e.seq);
	sqlite3_bind_int64(st, 2, e.time);
	sqlite3_bind_text(st, 3, e.actor, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 4, e.action, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 5, e.target, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 6, e.before ? e.before : "", -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 7, e.after ? e.after : "", -1, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 8, e.prev_hash, AUDIT_HASH_LEN, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 9, e.hash, AUDIT_HASH_LEN, SQLITE_TRANSIENT);
	return step_write(q, st, false);
}

/* Entries before `before` go; the last of them becomes the anchor. ret: how many went. */
static int audit_prune(struct sq *q, int64_t before, uint64_t *ret_n)
{
	uint8_t hash[AUDIT_HASH_LEN];
	uint64_t seq;
	sqlite3_stmt *st = stmt_get(q, ST_AUDIT_PRUNE_LAST);
	int r;

	*ret_n = 0;
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, before);
	r = seq_hash_get(q, st, &seq, hash);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	st = stmt_get(q, ST_AUDIT_PRUNE);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)seq);
	r = step_write(q, st, false);
	if (r < 0)
		return r;
	*ret_n = (uint64_t)sqlite3_changes(q->db);
	st = stmt_get(q, ST_AUDIT_ANCHOR_SET);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)seq);
	sqlite3_bind_blob(st, 2, hash, AUDIT_HASH_LEN, SQLITE_TRANSIENT);
	return step_write(q, st, false);
}

static void bind_flow_record(sqlite3_stmt *st, int i, const struct flowbatch_record *r)
{
	sqlite3_bind_int(st, i, r->proto);
	sqlite3_bind_int(st, i + 1, r->icmp_type);
	sqlite3_bind_int(st, i + 2, r->flags);
	sqlite3_bind_blob(st, i + 3, r->src, 16, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, i + 4, r->src_port);
	sqlite3_bind_blob(st, i + 5, r->dst, 16, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, i + 6, r->dst_port);
	sqlite3_bind_blob(st, i + 7, r->peer_key, FLOWBATCH_KEY_LEN, SQLITE_TRANSIENT);
	/* SQLite integers are signed: counters past 2^63 would be a lie anyway. */
	sqlite3_bind_int64(st, i + 8, (int64_t)MIN(r->tx_packets, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(st, i + 9, (int64_t)MIN(r->tx_bytes, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(st, i + 10, (int64_t)MIN(r->rx_packets, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(st, i + 11, (int64_t)MIN(r->rx_bytes, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(st, i + 12, (int64_t)MIN(r->first_ns, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(st, i + 13, (int64_t)MIN(r->last_ns, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(st, i + 14, r->denied);
}

static void row_flow_record(sqlite3_stmt *st, int i, struct flowbatch_record *r)
{
	memset(r, 0, sizeof(*r));
	r->proto = (uint8_t)sqlite3_column_int(st, i);
	r->icmp_type = (uint8_t)sqlite3_column_int(st, i + 1);
	r->flags = (uint8_t)sqlite3_column_int(st, i + 2);
	blob_copy(r->src, 16, st, i + 3);
	r->src_port = (uint16_t)sqlite3_column_int(st, i + 4);
	blob_copy(r->dst, 16, st, i + 5);
	r->dst_port = (uint16_t)sqlite3_column_int(st, i + 6);
	blob_copy(r->peer_key, FLOWBATCH_KEY_LEN, st, i + 7);
	r->tx_packets = (uint64_t)sqlite3_column_int64(st, i + 8);
	r->tx_bytes = (uint64_t)sqlite3_column_int64(st, i + 9);
	r->rx_packets = (uint64_t)sqlite3_column_int64(st, i + 10);
	r->rx_bytes = (uint64_t)sqlite3_column_int64(st, i + 11);
	r->first_ns = (uint64_t)sqlite3_column_int64(st, i + 12);
	r->last_ns = (uint64_t)sqlite3_column_int64(st, i + 13);
	r->denied = (uint32_t)sqlite3_column_int64(st, i + 14);
}

/* A batch the collector admitted: it is well formed (flowbatch_peek) and signed. */
static int flow_insert(struct sq *q, const struct store_flow *f)
{
	struct flowbatch b;
	struct flowbatch_record rec;
	sqlite3_stmt *st;
	uint64_t id;
	int r;

	if (!f->batch || flowbatch_peek(f->batch, f->len, &b) < 0 || b.seq != f->seq ||
	    b.node_id != f->node_id || f->seq > INT64_MAX)
		return -EINVAL;
	st = stmt_get(q, ST_FLOW_BATCH_INSERT);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)f->node_id);
	sqlite3_bind_int64(st, 2, (int64_t)f->seq);
	sqlite3_bind_int64(st, 3, (int64_t)f->tailnet_id);
	sqlite3_bind_int64(st, 4, f->received);
	sqlite3_bind_int(st, 5, (int)f->flags);
	sqlite3_bind_blob(st, 6, f->audit_key, 32, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 7, f->batch, (int)f->len, SQLITE_STATIC);
	r = step_write(q, st, false);
	sqlite3_clear_bindings(st);
	id = (uint64_t)sqlite3_last_insert_rowid(q->db);
	for (unsigned i = 0; r == 0 && i < b.n_records; i++) {
		flowbatch_record_get(f->batch, i, &rec);
		st = stmt_get(q, ST_FLOW_RECORD_INSERT);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)id);
		sqlite3_bind_int(st, 2, (int)i);
		sqlite3_bind_int64(st, 3, (int64_t)f->node_id);
		sqlite3_bind_int64(st, 4, (int64_t)f->tailnet_id);
		bind_flow_record(st, 5, &rec);
		r = step_write(q, st, false);
	}
	return r;
}

static void row_flow_anchor(sqlite3_stmt *st, struct flows_anchor *a)
{
	memset(a, 0, sizeof(*a));
	a->node_id = (uint64_t)sqlite3_column_int64(st, 0);
	a->batch_id = (uint64_t)sqlite3_column_int64(st, 1);
	a->seq = (uint64_t)sqlite3_column_int64(st, 2);
	a->batches_dropped = (uint32_t)sqlite3_column_int64(st, 3);
	blob_copy(a->audit_key, sizeof(a->audit_key), st, 4);
	blob_copy(a->hash, sizeof(a->hash), st, 5);
}

/* The digest over every anchor as it stands in this transaction. */
static int anchors_digest(struct sq *q, char ret[FLOWS_ANCHOR_DIGEST_HEX])
{
	struct flows_anchor_digest d;
	struct flows_anchor a;
	sqlite3_stmt *st = stmt_get(q, ST_FLOW_ANCHORS);
	int rc;

	if (!st)
		return -EIO;
	flows_anchor_digest_init(&d);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row_flow_anchor(st, &a);
		flows_anchor_digest_add(&d, &a);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return sq_errno(q, rc);
	flows_anchor_digest_final(&d, ret);
	return 0;
}

/* One of the prune's deletes: a tailnet's rows at or below the cut; *ret_n how many went. */
static int prune_rows(struct sq *q, enum stmt_id id, uint64_t tailnet_id, uint64_t cut,
		      uint64_t *ret_n)
{
	sqlite3_stmt *st = stmt_get(q, id);
	int r;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)tailnet_id);
	sqlite3_bind_int64(st, 2, (int64_t)cut);
	r = step_write(q, st, false);
	if (r == 0)
		*ret_n = (uint64_t)sqlite3_changes(q->db);
	return r;
}

/*
 * Retention (store.h STORE_OP_FLOW_PRUNE). The cut is a row id: every batch of the
 * tailnet at or below it goes, so each node loses a prefix of its chain (ids grow in
 * arrival order) and its last removed batch becomes its anchor. The entry `in`
 * describes the prune; its `after` is filled in here, where the anchors are known.
 */
static int flow_prune(struct sq *q, const struct store_flow_prune *p, const struct audit_entry *in,
		      uint64_t *ret_n)
{
	char digest[FLOWS_ANCHOR_DIGEST_HEX], after[256];
	struct audit_entry e;
	struct flowbatch b;
	uint64_t n, cut, records = 0, nodes = 0;
	sqlite3_stmt *st, *set;
	int rc, r;

	*ret_n = 0;
	if (!in || !p->tailnet_id || !p->max_batches)
		return -EINVAL;
	st = stmt_get(q, ST_FLOW_PRUNE_CUT);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)p->tailnet_id);
	sqlite3_bind_int64(st, 2, p->before);
	sqlite3_bind_int64(st, 3, p->max_batches);
	rc = sqlite3_step(st);
	n = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
	cut = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 1) : 0;
	sqlite3_reset(st);
	if (rc != SQLITE_ROW)
		return sq_errno(q, rc);
	if (!n)
		return 0; /* nothing old enough: no entry either */
	st = stmt_get(q, ST_FLOW_PRUNE_LASTS);
	set = stmt_get(q, ST_FLOW_ANCHOR_SET);
	if (!st || !set)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)p->tailnet_id);
	sqlite3_bind_int64(st, 2, (int64_t)cut);
	r = 0;
	while (r == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const uint8_t *batch = sqlite3_column_blob(st, 4);
		size_t len = (size_t)sqlite3_column_bytes(st, 4);
		uint8_t hash[FLOWBATCH_HASH_LEN];

		/* Admitted batches parse (flow_insert); one that does not is left to verify. */
		if (flowbatch_peek(batch, len, &b) < 0)
			memset(&b, 0, sizeof(b));
		flowbatch_hash(batch, len, hash);
		sqlite3_bind_int64(set, 1, sqlite3_column_int64(st, 0));
		sqlite3_bind_int64(set, 2, (int64_t)p->tailnet_id);
		sqlite3_bind_int64(set, 3, sqlite3_column_int64(st, 1));
		sqlite3_bind_int64(set, 4, sqlite3_column_int64(st, 2));
		sqlite3_bind_int64(set, 5, b.batches_dropped);
		sqlite3_bind_blob(set, 6, sqlite3_column_blob(st, 3), sqlite3_column_bytes(st, 3),
				  SQLITE_TRANSIENT);
		sqlite3_bind_blob(set, 7, hash, sizeof(hash), SQLITE_TRANSIENT);
		r = step_write(q, set, false);
		nodes++;
	}
	sqlite3_reset(st);
	if (r < 0)
		return r;
	if (rc != SQLITE_DONE)
		return sq_errno(q, rc);
	r = prune_rows(q, ST_FLOW_PRUNE_RECORDS, p->tailnet_id, cut, &records);
	if (r == 0)
		r = prune_rows(q, ST_FLOW_PRUNE_BATCHES, p->tailnet_id, cut, &n);
	if (r == 0)
		r = anchors_digest(q, digest);
	if (r < 0)
		return r;
	/* Compact JSON with sorted keys, as every other entry's. */
	snprintf(after, sizeof(after),
		 "{\"anchors\":\"%s\",\"batches\":%llu,\"before\":%lld,\"nodes\":%llu,"
		 "\"records\":%llu}",
		 digest, (unsigned long long)n, (long long)p->before, (unsigned long long)nodes,
		 (unsigned long long)records);
	e = *in;
	e.after = after;
	r = audit_append(q, &e);
	if (r == 0)
		*ret_n = n;
	return r;
}

static int apply_one(struct sq *q, const struct store_op *op, uint64_t origin, uint64_t *ret_id)
{
	enum store_change_kind ck;
	sqlite3_stmt *st;
	uint64_t id = 0;
	bool insert = false, touch = true;
	char tags[NETMAP_MAX_TAGS * NETMAP_TAG_MAX];
	int r;

	switch (op->kind) {
	case STORE_OP_TAILNET_CREATE:
	case STORE_OP_TAILNET_UPDATE:
		insert = op->kind == STORE_OP_TAILNET_CREATE;
		if (!op->tailnet.name[0])
			return -EINVAL;
		st = stmt_get(q, insert ? ST_TAILNET_INSERT : ST_TAILNET_UPDATE);
		if (!st)
			return -EIO;
		if (insert) {
			sqlite3_bind_text(st, 1, op->tailnet.name, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 2, op->tailnet.key_expiry_sec);
			sqlite3_bind_int64(st, 3, op->tailnet.ephemeral_timeout_sec);
			sqlite3_bind_int64(st, 4, op->tailnet.created);
		} else {
			sqlite3_bind_int64(st, 1, (int64_t)op->tailnet.id);
			sqlite3_bind_text(st, 2, op->tailnet.name, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 3, op->tailnet.key_expiry_sec);
			sqlite3_bind_int64(st, 4, op->tailnet.ephemeral_timeout_sec);
			id = op->tailnet.id;
		}
		sqlite3_bind_int(st, 5, op->tailnet.device_approval);
		sqlite3_bind_int(st, 6, op->tailnet.require_2fa);
		sqlite3_bind_int64(st, 7, op->tailnet.flow_log_interval_ms);
		sqlite3_bind_int(st, 8, op->tailnet.require_machine_cert);
		sqlite3_bind_int(st, 9, op->tailnet.flow_log_off);
		sqlite3_bind_int64(st, 10, op->tailnet.flow_retention_sec);
		ck = STORE_CHANGE_TAILNET;
		break;
	case STORE_OP_USER_CREATE:
		if (!op->user.name[0])
			return -EINVAL;
		st = stmt_get(q, ST_USER_INSERT);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)op->user.tailnet_id);
		sqlite3_bind_text(st, 2, op->user.name, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 3, op->user.created);
		insert = true;
		ck = STORE_CHANGE_USER;
		break;
	case STORE_OP_NODE_INSERT:
	case STORE_OP_NODE_UPDATE:
	case STORE_OP_NODE_LIVE:
	case STORE_OP_NODE_TOUCH:
		insert = op->kind == STORE_OP_NODE_INSERT;
		if (!op->node.name[0])
			return -EINVAL;
		st = stmt_get(q, insert ? ST_NODE_INSERT : ST_NODE_UPDATE);
		if (!st)
			return -EIO;
		bind_node(st, &op->node);
		if (!insert)
			sqlite3_bind_int64(st, 22, op->node_fields & STORE_NODE_ALL);
		id = op->node.id;
		ck = op->kind == STORE_OP_NODE_LIVE    ? STORE_CHANGE_NODE_LIVE
		     : op->kind == STORE_OP_NODE_TOUCH ? STORE_CHANGE_NODE_TOUCH
						       : STORE_CHANGE_NODE;
		break;
	case STORE_OP_NODE_DELETE:
	case STORE_OP_AUTHKEY_DELETE:
		st = stmt_get(q, op->kind == STORE_OP_NODE_DELETE ? ST_NODE_DELETE
								    : ST_AUTHKEY_DELETE);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)op->id);
		id = op->id;
		ck = op->kind == STORE_OP_NODE_DELETE ? STORE_CHANGE_NODE : STORE_CHANGE_AUTHKEY;
		break;
	case STORE_OP_AUTHKEY_CREATE:
		if (!op->authkey.prefix[0])
			return -EINVAL;
		st = stmt_get(q, ST_AUTHKEY_INSERT);
		if (!st)
			return -EIO;
		tags_join(tags, sizeof(tags), op->authkey.n_tags, op->authkey.tags);
		sqlite3_bind_int64(st, 2, (int64_t)op->authkey.tailnet_id);
		bind_id_or_null(st, 3, op->authkey.user_id);
		sqlite3_bind_text(st, 4, op->authkey.prefix, -1, SQLITE_TRANSIENT);
		sqlite3_bind_blob(st, 5, op->authkey.hash, sizeof(op->authkey.hash),
				  SQLITE_TRANSIENT);
		sqlite3_bind_int(st, 6, op->authkey.reusable);
		sqlite3_bind_int(st, 7, op->authkey.ephemeral);
		sqlite3_bind_int(st, 8, op->authkey.preauthorized);
		sqlite3_bind_text(st, 9, tags, -1, SQLITE_TRANSIENT);
		sqlite3_bind_int64(st, 10, op->authkey.expires);
		sqlite3_bind_int64(st, 11, op->authkey.created);
		sqlite3_bind_int64(st, 12, (int64_t)op->authkey.uses);
		sqlite3_bind_int(st, 13, op->authkey.revoked);
		insert = true;
		ck = STORE_CHANGE_AUTHKEY;
		break;
	case STORE_OP_AUTHKEY_UPDATE:
		st = stmt_get(q, ST_AUTHKEY_UPDATE);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)op->authkey.id);
		sqlite3_bind_int64(st, 2, (int64_t)op->authkey.uses);
		sqlite3_bind_int(st, 3, op->authkey.revoked);
		id = op->authkey.id;
		ck = STORE_CHANGE_AUTHKEY;
		break;
	case STORE_OP_SETTING_SET:
		if (!op->setting.key[0] || op->setting.len > sizeof(op->setting.value))
			return -EINVAL;
		st = stmt_get(q, ST_SETTING_SET);
		if (!st)
			return -EIO;
		sqlite3_bind_text(st, 1, op->setting.key, -1, SQLITE_TRANSIENT);
		sqlite3_bind_blob(st, 2, op->setting.value, (int)op->setting.len,
				  SQLITE_TRANSIENT);
		touch = false;
		ck = STORE_CHANGE_SETTING;
		break;
	case STORE_OP_AUDIT_PRUNE:
		return audit_prune(q, op->audit_prune_before, ret_id);
	case STORE_OP_FLOW_BATCH:
		/* The collector's data, not configuration: no `changes` row. */
		return flow_insert(q, &op->flow);
	case STORE_OP_FLOW_PRUNE:
		return flow_prune(q, &op->flow_prune, op->audit, ret_id);
	case STORE_OP_ACCOUNT_PUT:
		insert = op->account.id == 0;
		if (!op->account.email[0] || !op->account.password[0])
			return -EINVAL;
		st = stmt_get(q, insert ? ST_ACCOUNT_INSERT : ST_ACCOUNT_UPDATE);
		if (!st)
			return -EIO;
		bind_account(st, &op->account);
		id = op->account.id;
		ck = STORE_CHANGE_ACCOUNT;
		break;
	case STORE_OP_ACCOUNT_DELETE:
		st = stmt_get(q, ST_ACCOUNT_DELETE);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)op->id);
		id = op->id;
		ck = STORE_CHANGE_ACCOUNT;
		break;
	case STORE_OP_POLICY_SET:
		if (!op->policy.tailnet_id || op->policy.len > STORE_POLICY_MAX ||
		    (op->policy.len && !op->policy.text))
			return -EINVAL;
		st = stmt_get(q, op->policy.len ? ST_POLICY_SET : ST_POLICY_DELETE);
		if (!st)
			return -EIO;
		sqlite3_bind_int64(st, 1, (int64_t)op->policy.tailnet_id);
		if (op->policy.len)
			sqlite3_bind_blob(st, 2, op->policy.text, (int)op->policy.len,
					  SQLITE_TRANSIENT);
		id = op->policy.tailnet_id;
		touch = false;
		ck = STORE_CHANGE_POLICY;
		break;
	case STORE_OP_CA_PUT:
		insert = op->ca.id == 0;
		if (insert && (!op->ca.tailnet_id || !op->ca.cert[0] || !op->ca.key_file[0]))
			return -EINVAL;
		st = stmt_get(q, insert ? ST_CA_INSERT : ST_CA_RETIRE);
		if (!st)
			return -EIO;
		if (insert) {
			sqlite3_bind_int64(st, 2, (int64_t)op->ca.tailnet_id);
			sqlite3_bind_text(st, 3, op->ca.cert, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 4, op->ca.created);
			sqlite3_bind_text(st, 5, op->ca.key_file, -1, SQLITE_TRANSIENT);
		} else {
			sqlite3_bind_int64(st, 1, (int64_t)op->ca.id);
			sqlite3_bind_int64(st, 6, op->ca.retired_at);
		}
		id = op->ca.id;
		ck = STORE_CHANGE_CA;
		break;
	case STORE_OP_MCERT_PUT:
		insert = op->mcert.id == 0;
		if (!op->mcert.serial[0] || !op->mcert.tailnet_id)
			return -EINVAL;
		st = stmt_get(q, insert ? ST_MCERT_INSERT : ST_MCERT_UPDATE);
		if (!st)
			return -EIO;
		if (insert) {
			sqlite3_bind_int64(st, 2, (int64_t)op->mcert.tailnet_id);
			sqlite3_bind_text(st, 3, op->mcert.serial, -1, SQLITE_TRANSIENT);
			sqlite3_bind_blob(st, 4, op->mcert.machine_key, NETMAP_KEY_LEN,
					  SQLITE_TRANSIENT);
			sqlite3_bind_text(st, 5, op->mcert.subject, -1, SQLITE_TRANSIENT);
			sqlite3_bind_int64(st, 6, op->mcert.not_before);
			sqlite3_bind_int64(st, 7, op->mcert.not_after);
			sqlite3_bind_int64(st, 8, op->mcert.created);
			sqlite3_bind_int64(st, 11, (int64_t)op->mcert.ca_id);
			if (op->mcert.has_pub)
				sqlite3_bind_blob(st, 12, op->mcert.pub, sizeof(op->mcert.pub),
						  SQLITE_TRANSIENT);
			else
				sqlite3_bind_null(st, 12);
			if (op->mcert_der && op->mcert_der_len)
				sqlite3_bind_blob(st, 13, op->mcert_der, (int)op->mcert_der_len,
						  SQLITE_TRANSIENT);
			else
				sqlite3_bind_null(st, 13);
		} else {
			sqlite3_bind_int64(st, 1, (int64_t)op->mcert.id);
		}
		sqlite3_bind_int(st, 9, op->mcert.revoked);
		sqlite3_bind_int64(st, 10, op->mcert.revoked_at);
		id = op->mcert.id;
		ck = STORE_CHANGE_MCERT;
		break;
	default:
		return -EINVAL;
	}
	r = step_write(q, st, touch && !insert);
	if (r < 0)
		return r;
	if (insert)
		id = (uint64_t)sqlite3_last_insert_rowid(q->db);

	st = stmt_get(q, ST_CHANGE_INSERT);
	if (!st)
		return -EIO;
	sqlite3_bind_int(st, 1, ck);
	sqlite3_bind_int64(st, 2, (int64_t)id);
	sqlite3_bind_int64(st, 3, (int64_t)origin);
	r = step_write(q, st, false);
	if (r < 0)
		return r;
	*ret_id = insert ? id : 0;
	return 0;
}

static int sq_apply(void *be, const struct store_op *ops, size_t n, uint64_t origin, int *errs,
		    uint64_t *ids)
{
	struct sq *q = be;
	size_t i;
	int r;

	r = exec(q, "BEGIN IMMEDIATE");
	if (r < 0)
		return r;
	for (i = 0; i < n; i++) {
		/* A savepoint per op: one failing op must not take its batch down. */
		r = exec(q, "SAVEPOINT op");
		if (r < 0)
			goto fail;
		errs[i] = apply_one(q, &ops[i], origin, &ids[i]);
		/* The entry commits with its write or not at all. */
		if (errs[i] == 0 && ops[i].audit && ops[i].kind != STORE_OP_FLOW_PRUNE)
			errs[i] = audit_append(q, ops[i].audit);
		if (errs[i] < 0) {
			r = exec(q, "ROLLBACK TO op");
			if (r < 0)
				goto fail;
		}
		r = exec(q, "RELEASE op");
		if (r < 0)
			goto fail;
	}
	if (++q->commits % PRUNE_EVERY_COMMITS == 0) {
		char sql[128];

		snprintf(sql, sizeof(sql),
			 "DELETE FROM changes WHERE seq < (SELECT max(seq) FROM changes) - %d",
			 CHANGES_KEEP);
		exec(q, sql);
	}
	/* synchronous=FULL: COMMIT returns after the WAL is fsynced. */
	r = exec(q, "COMMIT");
	if (r < 0)
		goto fail;
	return 0;
fail:
	exec(q, "ROLLBACK");
	return r;
}

/* Runs a SELECT expected to yield at most one row; 0 (row read by fn), -ENOENT. */
#define GET_ONE(q, st, rowfn, ret)                                                                 \
	({                                                                                         \
		int _rc = sqlite3_step(st), _r;                                                   \
		if (_rc == SQLITE_ROW) {                                                           \
			rowfn(st, ret);                                                            \
			_r = 0;                                                                    \
		} else {                                                                           \
			_r = _rc == SQLITE_DONE ? -ENOENT : sq_errno(q, _rc);                     \
		}                                                                                  \
		sqlite3_reset(st);                                                                 \
		_r;                                                                                \
	})

static int sq_tailnet_get(void *be, uint64_t id, const char *name, struct control_tailnet *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, name ? ST_TAILNET_BY_NAME : ST_TAILNET_BY_ID);

	if (!st)
		return -EIO;
	if (name)
		sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_int64(st, 1, (int64_t)id);
	return GET_ONE(q, st, row_tailnet, ret);
}

static int sq_user_get(void *be, uint64_t id, uint64_t tailnet_id, const char *name,
		       struct control_user *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, name ? ST_USER_BY_NAME : ST_USER_BY_ID);

	if (!st)
		return -EIO;
	if (name) {
		sqlite3_bind_int64(st, 1, (int64_t)tailnet_id);
		sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
	} else {
		sqlite3_bind_int64(st, 1, (int64_t)id);
	}
	return GET_ONE(q, st, row_user, ret);
}

static int sq_node_get(void *be, uint64_t id, struct control_node *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_NODE_BY_ID);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)id);
	return GET_ONE(q, st, row_node, ret);
}

static int sq_authkey_get(void *be, uint64_t id, const char *prefix, struct control_authkey *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, prefix ? ST_AUTHKEY_BY_PREFIX : ST_AUTHKEY_BY_ID);

	if (!st)
		return -EIO;
	if (prefix)
		sqlite3_bind_text(st, 1, prefix, -1, SQLITE_TRANSIENT);
	else
		sqlite3_bind_int64(st, 1, (int64_t)id);
	return GET_ONE(q, st, row_authkey, ret);
}

static void row_setting(sqlite3_stmt *st, struct store_setting *s)
{
	s->len = MIN((size_t)sqlite3_column_bytes(st, 0), sizeof(s->value));
	blob_copy(s->value, s->len, st, 0);
}

static int sq_setting_get(void *be, const char *key, struct store_setting *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_SETTING_GET);

	if (!st)
		return -EIO;
	sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
	snprintf(ret->key, sizeof(ret->key), "%s", key);
	return GET_ONE(q, st, row_setting, ret);
}

static int sq_account_get(void *be, const char *email, struct control_account *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_ACCOUNT_BY_EMAIL);

	if (!st)
		return -EIO;
	sqlite3_bind_text(st, 1, email, -1, SQLITE_TRANSIENT);
	return GET_ONE(q, st, row_account, ret);
}

static int load_table(struct sq *q, enum stmt_id id, size_t elem,
		      void (*row)(sqlite3_stmt *, void *), void **ret, size_t *ret_n);
static int load_rows(struct sq *q, sqlite3_stmt *st, size_t elem,
		     void (*row)(sqlite3_stmt *, void *), void **ret, size_t *ret_n);

static int sq_account_list(void *be, struct control_account **ret, size_t *ret_n)
{
	*ret = NULL;
	*ret_n = 0;
	return load_table(be, ST_ACCOUNT_ALL, sizeof(**ret), (void *)row_account, (void **)ret,
			  ret_n);
}

static int sq_ca_get(void *be, uint64_t tailnet_id, struct control_ca *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_CA_GET);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)tailnet_id);
	return GET_ONE(q, st, row_ca, ret);
}

static int sq_ca_list(void *be, struct control_ca **ret, size_t *ret_n)
{
	*ret = NULL;
	*ret_n = 0;
	return load_table(be, ST_CA_ALL, sizeof(**ret), (void *)row_ca, (void **)ret, ret_n);
}

static int sq_mcert_get(void *be, const char *serial, struct control_mcert *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_MCERT_BY_SERIAL);

	if (!st)
		return -EIO;
	sqlite3_bind_text(st, 1, serial, -1, SQLITE_TRANSIENT);
	return GET_ONE(q, st, row_mcert, ret);
}

static int sq_mcert_get_id(void *be, uint64_t id, struct control_mcert *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_MCERT_BY_ID);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)id);
	return GET_ONE(q, st, row_mcert, ret);
}

static int sq_mcert_due(void *be, int64_t now, int64_t window_sec, struct control_mcert **ret,
			size_t *ret_n)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_MCERT_DUE);

	*ret = NULL;
	*ret_n = 0;
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, now);
	sqlite3_bind_int64(st, 2, window_sec);
	sqlite3_bind_int64(st, 3, MCERT_BACKDATE_SEC);
	return load_rows(q, st, sizeof(**ret), (void *)row_mcert, (void **)ret, ret_n);
}

static int sq_mcert_list(void *be, struct control_mcert **ret, size_t *ret_n)
{
	*ret = NULL;
	*ret_n = 0;
	return load_table(be, ST_MCERT_ALL, sizeof(**ret), (void *)row_mcert, (void **)ret, ret_n);
}

static int sq_mcert_der(void *be, const char *serial, uint8_t *ret, size_t cap)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_MCERT_DER);
	int rc, r;

	if (!st)
		return -EIO;
	sqlite3_bind_text(st, 1, serial, -1, SQLITE_TRANSIENT);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		r = sqlite3_column_bytes(st, 0);
		if (r <= 0 || (size_t)r > cap)
			r = -EMSGSIZE;
		else
			memcpy(ret, sqlite3_column_blob(st, 0), (size_t)r);
	} else {
		r = rc == SQLITE_DONE ? -ENOENT : sq_errno(q, rc);
	}
	sqlite3_reset(st);
	return r;
}

static int sq_mcert_newer(void *be, uint64_t tailnet_id, const uint8_t machine_key[NETMAP_KEY_LEN],
			  const uint8_t pub[32], int64_t not_after, int64_t now,
			  struct control_mcert *ret)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_MCERT_NEWER);

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)tailnet_id);
	sqlite3_bind_blob(st, 2, machine_key, NETMAP_KEY_LEN, SQLITE_TRANSIENT);
	sqlite3_bind_blob(st, 3, pub, 32, SQLITE_TRANSIENT);
	sqlite3_bind_int64(st, 4, not_after);
	sqlite3_bind_int64(st, 5, now);
	return GET_ONE(q, st, row_mcert, ret);
}

static int sq_policy_get(void *be, uint64_t tailnet_id, char **ret, size_t *ret_len)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_POLICY_GET);
	size_t len;
	char *text;
	int rc, r = -ENOENT;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)tailnet_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		len = (size_t)sqlite3_column_bytes(st, 0);
		text = malloc(len + 1);
		r = -ENOMEM;
		if (text) {
			if (len)
				memcpy(text, sqlite3_column_blob(st, 0), len);
			text[len] = '\0';
			*ret = text;
			*ret_len = len;
			r = 0;
		}
	} else if (rc != SQLITE_DONE) {
		r = sq_errno(q, rc);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

static int changes_max(struct sq *q, uint64_t *ret)
{
	sqlite3_stmt *st = stmt_get(q, ST_CHANGES_MAX);
	int rc;

	if (!st)
		return -EIO;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(st);
		return sq_errno(q, rc);
	}
	*ret = (uint64_t)sqlite3_column_int64(st, 0);
	sqlite3_reset(st);
	return 0;
}

/* Reads all rows of one table into a malloc'd array. */
static int load_table(struct sq *q, enum stmt_id id, size_t elem,
		      void (*row)(sqlite3_stmt *, void *),
		      void **ret, size_t *ret_n)
{
	return load_rows(q, stmt_get(q, id), elem, row, ret, ret_n);
}

/* Every row of st (bound, or without parameters) into a malloc'd array; st is reset. */
static int load_rows(struct sq *q, sqlite3_stmt *st, size_t elem,
		     void (*row)(sqlite3_stmt *, void *), void **ret, size_t *ret_n)
{
	size_t n = 0, cap = 0;
	char *arr = NULL;
	int rc, r = 0;

	if (!st)
		return -EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			char *na = realloc(arr, ncap * elem);

			if (!na) {
				r = -ENOMEM;
				goto out;
			}
			arr = na;
			cap = ncap;
		}
		row(st, arr + n * elem);
		n++;
	}
	if (rc != SQLITE_DONE) {
		r = sq_errno(q, rc);
		goto out;
	}
	*ret = arr;
	*ret_n = n;
	arr = NULL;
out:
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	free(arr);
	return r;
}

static int sq_load(void *be, struct store_snapshot *ret_snap)
{
	struct sq *q = be;
	struct store_snapshot s = { 0 };
	int r;

	/* One read transaction: the snapshot and its change cursor agree. */
	r = exec(q, "BEGIN");
	if (r < 0)
		return r;
	r = load_table(q, ST_TAILNET_ALL, sizeof(*s.tailnets), (void *)row_tailnet,
		       (void **)&s.tailnets, &s.n_tailnets);
	if (r == 0)
		r = load_table(q, ST_USER_ALL, sizeof(*s.users), (void *)row_user,
			       (void **)&s.users, &s.n_users);
	if (r == 0)
		r = load_table(q, ST_NODE_ALL, sizeof(*s.nodes), (void *)row_node,
			       (void **)&s.nodes, &s.n_nodes);
	if (r == 0)
		r = load_table(q, ST_AUTHKEY_ALL, sizeof(*s.authkeys), (void *)row_authkey,
			       (void **)&s.authkeys, &s.n_authkeys);
	if (r == 0)
		r = changes_max(q, &s.change_seq);
	exec(q, "COMMIT");
	if (r < 0) {
		store_snapshot_free(&s);
		return r;
	}
	*ret_snap = s;
	return 0;
}

static int data_version(struct sq *q, int64_t *ret)
{
	sqlite3_stmt *st = NULL;
	int rc;

	/* Not cached: PRAGMA statements are cheap and this one must see the latest value. */
	rc = sqlite3_prepare_v2(q->db, "PRAGMA data_version", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -EIO;
}

static int sq_changes_since(void *be, uint64_t seq, struct store_change *ret, size_t cap)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_CHANGES_SINCE);
	size_t n = 0;
	int rc = SQLITE_DONE;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)seq);
	sqlite3_bind_int64(st, 2, (int64_t)cap);
	while (n < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		ret[n].seq = (uint64_t)sqlite3_column_int64(st, 0);
		ret[n].kind = sqlite3_column_int(st, 1);
		ret[n].id = (uint64_t)sqlite3_column_int64(st, 2);
		ret[n].origin = (uint64_t)sqlite3_column_int64(st, 3);
		n++;
	}
	if (n < cap && rc != SQLITE_DONE) {
		sqlite3_reset(st);
		return sq_errno(q, rc);
	}
	sqlite3_reset(st);
	return (int)n;
}

static int sq_changes(void *be, uint64_t origin, uint64_t *cursor, struct store_change *ret,
		      size_t cap)
{
	struct sq *q = be;
	sqlite3_stmt *st;
	uint64_t max;
	int64_t dv;
	size_t n = 0;
	int rc, r;

	r = data_version(q, &dv);
	if (r < 0)
		return r;
	if (q->data_version_known && dv == q->data_version && !q->changes_more)
		return 0;
	q->data_version = dv;
	q->data_version_known = true;
	if (!cap)
		return 0;
	r = exec(q, "BEGIN");
	if (r < 0)
		return r;
	r = changes_max(q, &max);
	if (r < 0)
		goto out;
	st = stmt_get(q, ST_CHANGES_READ);
	if (!st) {
		r = -EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, (int64_t)*cursor);
	sqlite3_bind_int64(st, 2, (int64_t)max);
	sqlite3_bind_int64(st, 3, (int64_t)origin);
	sqlite3_bind_int64(st, 4, (int64_t)cap);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		ret[n].seq = (uint64_t)sqlite3_column_int64(st, 0);
		ret[n].kind = sqlite3_column_int(st, 1);
		ret[n].id = (uint64_t)sqlite3_column_int64(st, 2);
		n++;
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		r = sq_errno(q, rc);
		goto out;
	}
	/* Our own rows are skipped by the query; jump past them once the range is read. */
	q->changes_more = n == cap;
	*cursor = q->changes_more ? ret[n - 1].seq : MAX(*cursor, max);
	r = (int)n;
out:
	exec(q, "COMMIT");
	return r;
}

static int sq_audit_anchor(void *be, uint64_t *ret_seq, uint8_t ret_hash[AUDIT_HASH_LEN])
{
	return anchor_get(be, ret_seq, ret_hash);
}

static int sq_audit_read(void *be, uint64_t after_seq, int64_t since, size_t max,
			 int (*fn)(void *arg, const struct audit_entry *e), void *arg)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_AUDIT_READ);
	struct audit_entry e;
	int rc, r = 0;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)after_seq);
	sqlite3_bind_int64(st, 2, since);
	sqlite3_bind_int64(st, 3, max ? (int64_t)max : -1);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&e, 0, sizeof(e));
		e.seq = (uint64_t)sqlite3_column_int64(st, 0);
		e.time = sqlite3_column_int64(st, 1);
		text_copy(e.actor, sizeof(e.actor), st, 2);
		text_copy(e.action, sizeof(e.action), st, 3);
		text_copy(e.target, sizeof(e.target), st, 4);
		e.before = (const char *)sqlite3_column_text(st, 5);
		e.after = (const char *)sqlite3_column_text(st, 6);
		blob_copy(e.prev_hash, AUDIT_HASH_LEN, st, 7);
		blob_copy(e.hash, AUDIT_HASH_LEN, st, 8);
		if (!e.before)
			e.before = "";
		if (!e.after)
			e.after = "";
		r = fn(arg, &e);
		if (r < 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sq_errno(q, rc);
	sqlite3_reset(st);
	return r;
}

static int sq_flow_chain(void *be, uint64_t node_id, uint64_t *ret_seq,
			 uint8_t ret_hash[FLOWBATCH_HASH_LEN], uint8_t ret_key[32])
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_FLOW_CHAIN);
	int rc, r = 0;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)node_id);
	rc = sqlite3_step(st);
	*ret_seq = 0;
	memset(ret_hash, 0, FLOWBATCH_HASH_LEN);
	memset(ret_key, 0, 32);
	if (rc == SQLITE_ROW) {
		*ret_seq = (uint64_t)sqlite3_column_int64(st, 0);
		flowbatch_hash(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1),
			       ret_hash);
		blob_copy(ret_key, 32, st, 2);
	} else if (rc != SQLITE_DONE) {
		r = sq_errno(q, rc);
	}
	sqlite3_reset(st);
	if (rc != SQLITE_DONE)
		return r;
	/* Every batch of the node pruned: its chain goes on from its anchor. */
	st = stmt_get(q, ST_FLOW_ANCHOR_OF);
	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)node_id);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret_seq = (uint64_t)sqlite3_column_int64(st, 0);
		blob_copy(ret_hash, FLOWBATCH_HASH_LEN, st, 1);
		blob_copy(ret_key, 32, st, 2);
	} else if (rc != SQLITE_DONE) {
		r = sq_errno(q, rc);
	}
	sqlite3_reset(st);
	return r;
}

static int sq_flow_anchors(void *be, int (*fn)(void *arg, const struct flows_anchor *a), void *arg)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_FLOW_ANCHORS);
	struct flows_anchor a;
	int rc, r = 0;

	if (!st)
		return -EIO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		row_flow_anchor(st, &a);
		r = fn(arg, &a);
		if (r < 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sq_errno(q, rc);
	sqlite3_reset(st);
	return r;
}

/* The record rows stored for one batch, into b (at most FLOWBATCH_RECORDS_MAX + 1). */
static int flow_rows_of(struct sq *q, struct store_flow_row *b, struct flowbatch_record *recs,
			unsigned *idx)
{
	sqlite3_stmt *st = stmt_get(q, ST_FLOW_RECORDS_OF);
	int rc, r = 0;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)b->id);
	b->n_records = 0;
	/* One past the most a batch holds: verify sees that rows were added. */
	while ((rc = sqlite3_step(st)) == SQLITE_ROW && b->n_records <= FLOWBATCH_RECORDS_MAX) {
		idx[b->n_records] = (unsigned)sqlite3_column_int64(st, 0);
		row_flow_record(st, 1, &recs[b->n_records]);
		b->n_records++;
	}
	if (rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = sq_errno(q, rc);
	sqlite3_reset(st);
	return r;
}

static int sq_flow_batches(void *be, uint64_t after_node, uint64_t after_id,
			   int (*fn)(void *arg, const struct store_flow_row *b), void *arg)
{
	struct sq *q = be;
	struct flowbatch_record *recs = malloc((FLOWBATCH_RECORDS_MAX + 1) * sizeof(*recs));
	unsigned *idx = malloc((FLOWBATCH_RECORDS_MAX + 1) * sizeof(*idx));
	sqlite3_stmt *st = NULL;
	struct store_flow_row b;
	int rc = SQLITE_DONE, r = 0;

	if (!recs || !idx) {
		r = -ENOMEM;
		goto out;
	}
	st = stmt_get(q, ST_FLOW_BATCHES);
	if (!st) {
		r = -EIO;
		goto out;
	}
	sqlite3_bind_int64(st, 1, (int64_t)MIN(after_node, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(st, 2, (int64_t)MIN(after_id, (uint64_t)INT64_MAX));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&b, 0, sizeof(b));
		b.node_id = (uint64_t)sqlite3_column_int64(st, 0);
		b.seq = (uint64_t)sqlite3_column_int64(st, 1);
		b.tailnet_id = (uint64_t)sqlite3_column_int64(st, 2);
		b.received = sqlite3_column_int64(st, 3);
		b.flags = (unsigned)sqlite3_column_int(st, 4);
		b.audit_key = sqlite3_column_bytes(st, 5) == 32 ? sqlite3_column_blob(st, 5) : NULL;
		b.batch = sqlite3_column_blob(st, 6);
		b.len = (size_t)sqlite3_column_bytes(st, 6);
		b.id = (uint64_t)sqlite3_column_int64(st, 7);
		b.records = recs;
		b.idx = idx;
		r = flow_rows_of(q, &b, recs, idx);
		if (r == 0)
			r = fn(arg, &b);
		if (r < 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sq_errno(q, rc);
out:
	if (st)
		sqlite3_reset(st);
	free(recs);
	free(idx);
	return r;
}

static int sq_flow_totals(void *be, uint64_t node_id, uint64_t since_ns,
			  int (*fn)(void *arg, const struct store_flow_total *t), void *arg)
{
	struct sq *q = be;
	sqlite3_stmt *st = stmt_get(q, ST_FLOW_TOTALS);
	struct store_flow_total t;
	int rc, r = 0;

	if (!st)
		return -EIO;
	sqlite3_bind_int64(st, 1, (int64_t)MIN(node_id, (uint64_t)INT64_MAX));
	sqlite3_bind_int64(st, 2, (int64_t)MIN(since_ns, (uint64_t)INT64_MAX));
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		memset(&t, 0, sizeof(t));
		t.node_id = (uint64_t)sqlite3_column_int64(st, 0);
		t.tailnet_id = (uint64_t)sqlite3_column_int64(st, 1);
		t.r.proto = (uint8_t)sqlite3_column_int(st, 2);
		t.r.icmp_type = (uint8_t)sqlite3_column_int(st, 3);
		t.r.flags = (uint8_t)sqlite3_column_int(st, 4);
		blob_copy(t.r.src, 16, st, 5);
		t.r.src_port = (uint16_t)sqlite3_column_int(st, 6);
		blob_copy(t.r.dst, 16, st, 7);
		t.r.dst_port = (uint16_t)sqlite3_column_int(st, 8);
		blob_copy(t.r.peer_key, FLOWBATCH_KEY_LEN, st, 9);
		t.r.tx_packets = (uint64_t)sqlite3_column_int64(st, 10);
		t.r.tx_bytes = (uint64_t)sqlite3_column_int64(st, 11);
		t.r.rx_packets = (uint64_t)sqlite3_column_int64(st, 12);
		t.r.rx_bytes = (uint64_t)sqlite3_column_int64(st, 13);
		t.r.first_ns = (uint64_t)sqlite3_column_int64(st, 14);
		t.r.last_ns = (uint64_t)sqlite3_column_int64(st, 15);
		t.r.denied = (uint32_t)MIN(sqlite3_column_int64(st, 16), (int64_t)UINT32_MAX);
		r = fn(arg, &t);
		if (r < 0)
			break;
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sq_errno(q, rc);
	sqlite3_reset(st);
	return r;
}

const struct store_backend store_backend_sqlite = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .load = sq_load,
    .apply = sq_apply,
    .tailnet_get = sq_tailnet_get,
    .user_get = sq_user_get,
    .node_get = sq_node_get,
    .authkey_get = sq_authkey_get,
    .setting_get = sq_setting_get,
    .account_get = sq_account_get,
    .account_list = sq_account_list,
    .policy_get = sq_policy_get,
    .ca_get = sq_ca_get,
    .ca_list = sq_ca_list,
    .mcert_get = sq_mcert_get,
    .mcert_list = sq_mcert_list,
    .mcert_der = sq_mcert_der,
    .mcert_newer = sq_mcert_newer,
    .mcert_get_id = sq_mcert_get_id,
    .mcert_due = sq_mcert_due,
    .changes = sq_changes,
    .changes_since = sq_changes_since,
    .audit_anchor = sq_audit_anchor,
    .audit_read = sq_audit_read,
    .flow_chain = sq_flow_chain,
    .flow_batches = sq_flow_batches,
    .flow_totals = sq_flow_totals,
    .flow_anchors = sq_flow_anchors,
};
