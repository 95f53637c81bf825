/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_UAPI_SERVER_H
#define TRELLIS_NODE_UAPI_SERVER_H

/*
 * The UAPI unix socket (/var/run/wireguard/IFACE.sock) served from the control
 * loop. Framing and connection handling only; the handler turns requests into
 * device operations (wgdev.c).
 */

#include <stddef.h>

#include "base/loop.h"

#define UAPI_SOCKET_DIR "/var/run/wireguard"
/* Concurrent client connections; more are accepted and closed at once. */
#define UAPI_CONNS_MAX 16
/* A connection with no progress for this long is closed (slow or stuck client). */
#ifndef UAPI_IDLE_TIMEOUT_NS /* tests shorten it */
#define UAPI_IDLE_TIMEOUT_NS (10ULL * 1000000000ULL)
#endif

struct uapi_handler {
	void *ctx;
	/* "get=1": 0 and a malloc'd body (key=value lines, no errno line), or -errno. */
	int (*get)(void *ctx, char **ret_body, size_t *ret_len);
	/* "set=1": the lines after "set=1\n" up to, not including, the empty line. 0 or -errno. */
	int (*set)(void *ctx, const char *body, size_t len);
};

struct uapi_server;

/* "/var/run/wireguard/IFACE.sock" into buf; 0 or -ENAMETOOLONG. */
int uapi_socket_path(const char *ifname, char *buf, size_t len);
/*
 * Fails with -EADDRINUSE if something answers on the socket (another instance);
 * a stale socket file is removed. Creates the directory (0755) and the socket (0600).
 */
int uapi_socket_check(const char *path);
int uapi_server_new(struct loop *loop, const char *path, const struct uapi_handler *handler,
		    struct uapi_server **ret);
/* Accepts NULL. Closes every connection and removes the socket file. */
void uapi_server_free(struct uapi_server *srv);

#endif
