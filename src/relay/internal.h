/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_RELAY_INTERNAL_H
#define TRELLIS_RELAY_INTERNAL_H

/* Between the parts of the relay library: mesh.c hands its dialed links to server.c. */

#include <stddef.h>
#include <stdint.h>

struct httpd_io;
struct relay_server;

/*
 * Takes over an upgraded connection to a mesh peer (name: its URL, for logs):
 * the relay handshake with our key and the mesh key (both ends prove it), then
 * watch-conns; the peer's clients become reachable through it. pin (NULL: any)
 * is the key the peer must have. down(ctx) runs once when the link closes. 0,
 * or -errno (io is closed, down is not called).
 */
int relay_server_link_take(struct relay_server *s, struct httpd_io *io, const uint8_t *rest,
			   size_t rest_len, const char *name, const uint8_t *pin,
			   void (*down)(void *ctx), void *ctx);

#endif
