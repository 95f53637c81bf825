/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_MAPZ_H
#define TRELLIS_PROTO_MAPZ_H

/*
 * Compressed full netmaps (docs/control-protocol.md, "Compressed netmaps").
 * A node that offers "compress":"zstd" in its map_request may get its full
 * netmap as one control message of zstd frames instead of JSON text: the
 * frames, decompressed one after the other, are the netmap's JSON. The first
 * byte tells the two apart ('{' against the zstd magic), so a node that did not
 * offer it never sees one and decodes as before.
 *
 * The server sends several frames (the peers in blocks it compresses once and
 * reuses for every node that gets the same block); every frame carries its
 * content size. The decoder trusts none of it: it adds up the declared sizes
 * first, refuses a total over the caller's bound (or a frame without a size)
 * before it allocates, and decompresses into exactly that much, so a hostile
 * server can make a node allocate no more than a plain JSON message of the
 * same bound would.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAPZ_NAME "zstd" /* the value of map_request's "compress" */

/* True when msg starts with a zstd frame (not JSON). */
bool mapz_is_compressed(const void *msg, size_t len);

/*
 * Decompresses msg (zstd frames) into a malloc'd, NUL-terminated text of at most
 * max bytes. 0, -EMSGSIZE (the declared size is over max, or unknown),
 * -EBADMSG (not zstd, a corrupt frame, a size that does not match), -ENOMEM.
 */
int mapz_decompress(const void *msg, size_t len, size_t max, char **ret, size_t *ret_len);

#endif
