/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_RELAY_MESH_H
#define TRELLIS_RELAY_MESH_H

/*
 * The links of a relay to the other relays of its region (--mesh-peer URL):
 * each is dialed on a worker thread (TCP or TLS, GET /relay upgrade), then
 * runs on the loop as a relay client with the mesh key (server.c), and is
 * dialed again after a jittered second when it fails or closes.
 */

#include <stddef.h>

struct loop;
struct relay_server;
struct relay_mesh;

/*
 * urls: "http://host:port" or "https://..." (the path is /relay), optionally
 * followed by "#KEY": the base64 relay key the peer must have (pinned; without it
 * the mesh key's mutual proof is what authenticates the peer). 0 or -errno
 * (-EINVAL: a bad URL or key, logged).
 */
int relay_mesh_new(struct loop *loop, struct relay_server *s, const char *const *urls, size_t n,
		   struct relay_mesh **ret);
/* Stops dialing (at once); call after relay_server_free (which closes the links). Accepts NULL. */
void relay_mesh_free(struct relay_mesh *m);

#endif
