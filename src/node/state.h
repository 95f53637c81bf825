/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_STATE_H
#define TRELLIS_NODE_STATE_H

/*
 * The daemon's state directory (default /var/lib/trellis, mode 0700):
 *
 *   machine.key     X25519 private key, base64 (0600): the device's identity
 *                   towards trellis-control; created once, never rotated.
 *   node.key        X25519 private key, base64 (0600): the WireGuard key.
 *   audit.key       Ed25519 private key, base64 (0600): signs the node's flow-log
 *                   batches (docs/audit.md); its public half goes to control at
 *                   every registration. Never leaves the node.
 *   node.key.next   during a key rotation: the new node key, until the server
 *                   confirms the re-registration (then it replaces node.key).
 *   prefs.json      login server, hostname, wanted state, last register result.
 *   netmap.json     the last full netmap (a CTRL_MSG_NETMAP message), so tunnels
 *                   come back while control is down.
 *   path.json       what path discovery keeps across a restart (0600): the disco
 *                   private key, the home relay region and whether our NAT maps per
 *                   destination. Peers then keep their path state for us, and the
 *                   server sends them no delta for a key or flag that did not change.
 *
 * Every write is atomic (temp file, fsync, rename, fsync of the directory): a
 * crash leaves the old or the new file, never a torn one. A corrupt file is a
 * clear error (logged with its path), never a crash. Nothing depends on path.json,
 * so a corrupt one is replaced by fresh values instead of stopping the start.
 */

#include <stdbool.h>
#include <stdint.h>

#include "proto/netmap.h"

#define STATE_DEFAULT_DIR "/var/lib/trellis"
#define STATE_URL_MAX 512
#define STATE_TEXT_MAX 256
/* Netmap cache writes are at most this frequent; changes in between are coalesced. */
#define STATE_NETMAP_SAVE_INTERVAL_NS (1000ULL * 1000 * 1000)

struct state_prefs {
	char login_server[STATE_URL_MAX]; /* "" = never logged in */
	char hostname[NETMAP_NAME_MAX];   /* "" = the system host name */
	bool want_up;                     /* `trellis up` (true) or `down`/`logout` (false) */
	/* The last register result. */
	bool registered;
	uint64_t node_id;
	char last_error[STATE_TEXT_MAX];
};

/* What path.json keeps besides the disco key. */
struct state_path {
	uint32_t home_region; /* 0: none yet */
	bool mapping_varies;
};

struct state;

/*
 * Opens (creating) dir, loads or creates the keys and loads prefs.json.
 * 0; -EBADMSG when a key file or prefs.json is corrupt (logged with the path);
 * -errno from the file system.
 */
int state_open(const char *dir, struct state **ret);
/* Accepts NULL; wipes the keys. */
void state_free(struct state *st);

const char *state_dir(const struct state *st);
const uint8_t *state_machine_key(const struct state *st); /* private, 32 bytes */
const uint8_t *state_node_key(const struct state *st);    /* private, 32 bytes */
const uint8_t *state_audit_key(const struct state *st);	  /* Ed25519 private, 32 bytes */
const uint8_t *state_audit_pub(const struct state *st);	  /* its public half */
const uint8_t *state_disco_key(const struct state *st);	  /* private, 32 bytes */

const struct state_path *state_path(const struct state *st);
/* Replaces the home region and NAT flag; writes path.json only when they changed. 0 or -errno. */
int state_path_save(struct state *st, const struct state_path *p);

/*
 * Key rotation: _begin makes the pending key (or keeps the one already pending,
 * e.g. from before a crash) and returns it; register with old = node key, new =
 * the pending one; on the server's confirmation _commit makes it the node key,
 * on rejection _abort forgets it. 0 or -errno.
 */
int state_node_key_rotate_begin(struct state *st, const uint8_t **ret_key);
const uint8_t *state_node_key_pending(const struct state *st); /* NULL if none */
int state_node_key_rotate_commit(struct state *st);
int state_node_key_rotate_abort(struct state *st);

const struct state_prefs *state_prefs(const struct state *st);
/* Replaces prefs and writes prefs.json. 0 or -errno (the in-memory copy is updated anyway). */
int state_prefs_save(struct state *st, const struct state_prefs *prefs);

/* The cached netmap: 0 and a netmap to free with netmap_free; -ENOENT; -EBADMSG. */
int state_netmap_load(struct state *st, struct netmap **ret);
/*
 * Call after every applied change. Writes at once when the last write is
 * STATE_NETMAP_SAVE_INTERVAL_NS old, otherwise remembers that the cache is stale
 * and returns the time (>0) at which the caller should call state_netmap_flush
 * with the netmap of then. 0 when written, the deadline, or -errno.
 */
int64_t state_netmap_save(struct state *st, const struct netmap *nm, uint64_t now_ns);
/* Writes nm if a save was deferred (and at shutdown). 0 or -errno. */
int state_netmap_flush(struct state *st, const struct netmap *nm, uint64_t now_ns);
/* Removes the cache (logout). */
int state_netmap_remove(struct state *st);

/* A whole file of at most max bytes, malloc'd and NUL-terminated. 0, -EFBIG, -errno. */
int state_file_read(const char *path, size_t max, char **ret, size_t *ret_len);
/* Atomic replacement of path by data (mode for the new file). 0 or -errno. */
int state_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode);

#endif
