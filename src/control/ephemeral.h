/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_EPHEMERAL_H
#define TRELLIS_CONTROL_EPHEMERAL_H

/*
 * Ephemeral nodes (auth keys created with --ephemeral) are deleted once they
 * have been offline for their tailnet's ephemeral timeout. This keeps one
 * countdown per offline ephemeral node on the server's loop: armed when its
 * map stream ends (and for every ephemeral node at startup, so that nodes get
 * the full timeout to come back after a restart of the server), cancelled
 * when a stream starts or the node is deleted otherwise. When one runs out,
 * expired(ctx, id) decides (the server deletes the node unless it came back).
 */

#include <stddef.h>
#include <stdint.h>

struct loop;
struct ephemeral;

/* 0 or -ENOMEM. */
int ephemeral_new(struct loop *loop, void (*expired)(void *ctx, uint64_t id), void *ctx,
		  struct ephemeral **ret);
/* Cancels every countdown. Accepts NULL. */
void ephemeral_free(struct ephemeral *e);

/* (Re)starts node id's countdown of timeout_sec (<= 0: at once). 0 or -ENOMEM. */
int ephemeral_arm(struct ephemeral *e, uint64_t id, int64_t timeout_sec);
/* Unknown ids are ignored. */
void ephemeral_cancel(struct ephemeral *e, uint64_t id);
size_t ephemeral_count(const struct ephemeral *e);

#endif
