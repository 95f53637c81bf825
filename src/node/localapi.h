/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_LOCALAPI_H
#define TRELLIS_NODE_LOCALAPI_H

/*
 * The local API of trellisd (docs/localapi.md): a unix socket, one JSON object
 * per line each way, served from the daemon's loop. This file owns the socket,
 * framing, permissions and the JSON shapes; what the commands do is the
 * daemon's, behind struct localapi_backend.
 *
 * Everyone may read (status, ip, whois) and ping; commands that change state (up, down,
 * logout, set) need the peer's uid to be 0 (SO_PEERCRED).
 */

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "base/loop.h"
#include "proto/netmap.h"
#include "wg/config.h"

#define LOCALAPI_DEFAULT_SOCKET "/var/run/trellis/trellisd.sock"
/*
 * The socket is 0666, so these keep any one local user from taking every slot
 * (docs/security.md): a uid other than 0 gets LOCALAPI_CONNS_PER_UID, all of them
 * together LOCALAPI_CONNS_MAX - LOCALAPI_CONNS_ROOT, and a request must be answered
 * LOCALAPI_REQUEST_TIMEOUT_NS after the connection starts waiting for it, however
 * slowly its bytes trickle in.
 */
#define LOCALAPI_CONNS_MAX 32
#define LOCALAPI_CONNS_PER_UID 4
#define LOCALAPI_CONNS_ROOT 8
#ifndef LOCALAPI_REQUEST_MAX /* the fuzzer shortens it */
#define LOCALAPI_REQUEST_MAX 16384 /* one request line */
#endif
#define LOCALAPI_REPLY_MAX (64U << 20)   /* queued output per connection */
#ifndef LOCALAPI_IDLE_TIMEOUT_NS /* tests shorten it */
#define LOCALAPI_IDLE_TIMEOUT_NS (30ULL * 1000000000ULL)
#endif
#ifndef LOCALAPI_REQUEST_TIMEOUT_NS /* tests shorten it */
#define LOCALAPI_REQUEST_TIMEOUT_NS (10ULL * 1000000000ULL)
#endif
#define LOCALAPI_ERROR_MAX 256

/* A pending `up`: answered later through localapi_req_progress/_finish. */
struct localapi_req;

struct localapi_up_opts {
	const char *login_server; /* NULL: the remembered one */
	const char *auth_key;     /* NULL: interactive login */
	const char *hostname;     /* NULL: keep the current one */
	bool force_reauth;        /* log in anew (also needed to change a login's server) */
};

/* `trellis set`: one remembered setting changed, no new login. NULL = unchanged. */
struct localapi_set_opts {
	const char *hostname;
};

struct localapi_backend {
	void *ctx;
	/*
	 * The status object of `trellis status --json` (build it with
	 * localapi_status_build). 0 and a new reference, or -errno.
	 */
	int (*status)(void *ctx, json_t **ret);
	/*
	 * Brings the node up. The backend answers through req, now or later: any
	 * number of localapi_req_progress lines (e.g. needs_login with the URL), then
	 * localapi_req_finish exactly once. Until then the connection reads nothing.
	 */
	void (*up)(void *ctx, const struct localapi_up_opts *opts, struct localapi_req *req);
	/* The server is going away with req unfinished: forget it (req is freed after). */
	void (*up_cancel)(void *ctx, struct localapi_req *req);
	/* 0, or -errno with a message for the user in err. */
	/*
	 * One disco ping to `peer` (hostname or tailnet address), answered through req as
	 * up is: localapi_req_finish once, with the pong or an error. Optional.
	 */
	void (*ping)(void *ctx, const char *peer, struct localapi_req *req);
	int (*down)(void *ctx, char *err, size_t err_len);
	int (*logout)(void *ctx, char *err, size_t err_len);
	int (*set)(void *ctx, const struct localapi_set_opts *opts, char *err, size_t err_len);
	/*
	 * `trellis cert request|install` (node/machinecert.h): a CSR (PEM, malloc'd into
	 * *ret), or install a signed certificate. 0, or -errno with a message in err.
	 */
	int (*cert_request)(void *ctx, char **ret, char *err, size_t err_len);
	int (*cert_install)(void *ctx, const char *pem, size_t len, char *err, size_t err_len);
};

struct localapi_server;

/*
 * Creates the socket's directory (0755) and the socket (0666: permission is
 * checked per request). -EADDRINUSE if a daemon answers there already; a stale
 * socket file is replaced.
 */
int localapi_server_new(struct loop *loop, const char *path, const struct localapi_backend *be,
			struct localapi_server **ret);
/* Accepts NULL. Cancels pending requests, closes connections, removes the socket file. */
void localapi_server_free(struct localapi_server *srv);

/* Steal a reference to msg (a JSON object; NULL = out of memory, the client is dropped). */
void localapi_req_progress(struct localapi_req *req, json_t *msg);
/* The final answer; req is freed. */
void localapi_req_finish(struct localapi_req *req, json_t *msg);
/* True once the client has gone away (the backend may keep going or stop). */
bool localapi_req_gone(const struct localapi_req *req);

/* {"ok":true} and {"ok":false,"error":text}. */
json_t *localapi_reply_ok(void);
json_t *localapi_reply_error(const char *text);

/*
 * The status object: {"backend_state":state, "tailnet", "self":{...},
 * "peers":[...]}, each node with hostname, ips, online, path "direct" and
 * endpoint (what WireGuard uses, else the netmap's first), and more
 * (docs/localapi.md). nm and info may be NULL (not logged in / no device).
 * 0 or -ENOMEM.
 */
int localapi_status_build(const char *backend_state, const struct netmap *nm,
			  const struct wg_device_info *info, json_t **ret);

#endif
