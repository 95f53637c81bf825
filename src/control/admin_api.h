/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_ADMIN_API_H
#define TRELLIS_CONTROL_ADMIN_API_H

/*
 * The admin API (docs/admin-api.md): JSON requests on /admin/v1/..., answered
 * with admin_op.h's operations. One handler, three ways in: the server's
 * root-only unix socket (admin.sock in the state directory, what the
 * `trellis-control NOUN VERB` commands use), the server's HTTP(S) port with
 * an admin API key (remote automation), and the CLI itself with --offline
 * (in-process, on the database, while no server runs).
 *
 * No I/O here but the store's: the caller authenticates, names the actor and
 * moves the bytes.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "control/store.h"

#define ADMIN_API_PREFIX "/admin/v1/"
#define ADMIN_API_BODY_MAX 16384
/* A policy (PUT tailnets/NAME/policy) may be larger: the server reads bodies up to this. */
#define ADMIN_API_POLICY_BODY_MAX STORE_POLICY_MAX
#define ADMIN_SOCKET_NAME "admin.sock"
/* Waiting registrations one listing shows (pending.h caps them far lower per tailnet). */
#define ADMIN_API_PENDING_MAX 4096

/* An interactive registration waiting for approval (the running server's memory only). */
struct admin_api_pending {
	char code[24]; /* approve with nodes approve reg:CODE (pending.h's PENDING_CODE_LEN) */
	char tailnet[NETMAP_NAME_MAX];
	char hostname[NETMAP_NAME_MAX];
	char os[NETMAP_OS_MAX];
	uint8_t machine_key[32];
	int64_t expires; /* Unix seconds */
	uint64_t node_id; /* a known node logging in again, or 0 */
};

struct admin_api_env {
	struct store *store;
	const char *state_dir; /* admin_op_ctx.state_dir */
	const char *public_url; /* admin_op_ctx.public_url */
	/* After each durable write (admin_op_ctx.committed); NULL offline. */
	void (*committed)(void *arg, const char *actor, const struct store_op *op, uint64_t id);
	/* Live state the store does not hold: 1 online, 0 offline; NULL offline. */
	int (*node_online)(void *arg, uint64_t id);
	/* Waiting registrations: fills up to cap, returns how many there are; NULL offline. */
	size_t (*pending_list)(void *arg, struct admin_api_pending *ret, size_t cap);
	/* admin_op_ctx.relogin_code; NULL offline. */
	bool (*relogin_code)(void *arg, uint64_t node_id, char *ret, size_t size);
	void *arg;
};

struct admin_api_request {
	const char *method; /* "GET", "POST", "PUT", "DELETE" */
	const char *target; /* "/admin/v1/nodes?tailnet=corp" */
	const char *body;   /* JSON or NULL */
	size_t body_len;
	const char *actor;  /* "socket:root", "apikey:0123456789ab", "cli:root" */
	bool apikeys;       /* may manage API keys and prune the audit log: socket, offline CLI */
	int64_t now;        /* Unix seconds */
};

/*
 * Answers req: the HTTP status, and a malloc'd JSON body in *ret_body
 * ({"error": "..."} for 4xx/5xx). Never fails otherwise: out of memory is a
 * 500 with a static body copied.
 */
unsigned admin_api_handle(const struct admin_api_env *env, const struct admin_api_request *req,
			  char **ret_body, size_t *ret_len);

#endif
