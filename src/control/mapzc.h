/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_MAPZC_H
#define TRELLIS_CONTROL_MAPZC_H

/*
 * Compressing full netmaps for the nodes that offer it (proto/mapz.h), once
 * per distinct content rather than once per stream.
 *
 * No two nodes get the same full netmap (self, seq and the peer list, which
 * leaves the node itself out, differ), but nearly all of each is the same peer
 * records in the same order. So a map goes out as several zstd frames: one for
 * the head (type, seq, tailnet, self), one per block of MAPZC_BLOCK consecutive
 * nodes of the tailnet (the records of those the node sees), one for the tail
 * (relay map, packet filter, flow log). A block's text is compared with the
 * text its cached frame was made from, and that frame is reused when equal:
 * after a restart every node of a 10,000-node tailnet gets the same ~156
 * block frames but for its own block, which is compressed for it alone and
 * never cached. Comparing the text (not a hash) makes a stale frame
 * impossible; it costs one memcmp of what the join copies anyway.
 *
 * The cache holds MAPZC_SLOTS variants per block (policies give nodes
 * different views): at most that many copies of the tailnet's peer records,
 * plus their frames, for as long as the mapper keeps the tailnet.
 * Not thread safe: the server's loop owns it.
 */

#include <stddef.h>
#include <stdint.h>

#define MAPZC_BLOCK 64 /* nodes per block: ~25 KiB of records, a good zstd ratio alone */
#define MAPZC_SLOTS 2
#define MAPZC_LEVEL 3

struct mapzc;

/* One peer record of the map, in order, with its block (tailnet index / MAPZC_BLOCK). */
struct mapzc_peer {
	const char *p;
	size_t len;
	uint32_t block;
};

struct mapzc_stats {
	uint64_t maps;		      /* compressed netmaps made */
	uint64_t blocks_reused;	      /* frames taken from the cache */
	uint64_t blocks_made;	      /* frames compressed */
	uint64_t bytes_in, bytes_out; /* JSON text in, frames out (all maps) */
	size_t cached;		      /* bytes the cache holds (texts and frames) */
};

/* 0 or -ENOMEM. */
int mapzc_new(struct mapzc **ret);
void mapzc_free(struct mapzc *z);

/*
 * The frames of the netmap head || peers joined with commas || tail, malloc'd.
 * own_block: the block of the node the map is for (never cached: nobody else gets
 * it), UINT32_MAX for none. 0, -EMSGSIZE (the text would exceed CTRL_MSG_MAX),
 * -EIO (the compressor failed), -ENOMEM.
 */
int mapzc_netmap(struct mapzc *z, uint64_t tailnet, const char *head, size_t head_len,
		 const struct mapzc_peer *peers, size_t n_peers, uint32_t own_block,
		 const char *tail, size_t tail_len, uint8_t **ret, size_t *ret_len);

void mapzc_stats(const struct mapzc *z, struct mapzc_stats *ret);

#endif
