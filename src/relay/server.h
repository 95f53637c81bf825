/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_RELAY_SERVER_H
#define TRELLIS_RELAY_SERVER_H

/*
 * The relay server engine (docs/relay-protocol.md): connections that httpd
 * handed over after `GET /relay` with `Upgrade: trellis-relay/1`, the
 * handshake (proof of the node key, then admission), a registry of proven
 * clients by node key, and forwarding send-packet -> recv-packet, locally or
 * one hop to the relay of the mesh that holds the destination (mesh.h).
 *
 * Everything runs on one loop thread. Everything a client can make the relay
 * hold is bounded:
 *   - before it is proven: 256 bytes of frame (proto/relay.h), the handshake
 *     deadline (from accept), and httpd's cap on unauthenticated connections
 *     per source address (its slot travels with the connection);
 *   - after: its send queue (packets beyond queue_max or queue_bytes: the
 *     oldest is dropped and counted; control frames beyond CTRL_BYTES_MAX: the
 *     client is too slow and is closed), and token buckets for the packets and
 *     bytes it sends (excess dropped, counted).
 * Frames are copied into pooled buffers (no malloc per packet once warm) and
 * their contents are never logged.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto/relay.h"

struct loop;
struct httpd;
struct httpd_request;
struct httpd_upgrade;
struct relay_server;

/* Why frames or connections were dropped (trellis_relay_drops_total{reason}). */
enum relay_drop {
	RELAY_DROP_QUEUE_FULL,	 /* oldest queued packet dropped for a newer one */
	RELAY_DROP_RATE_BYTES,	 /* over the client's byte rate */
	RELAY_DROP_RATE_PACKETS, /* over the client's packet rate */
	RELAY_DROP_NOT_HERE,	 /* destination neither here nor in the mesh */
	RELAY_DROP_NO_BUFFER,	 /* buffer pool exhausted */
	RELAY_DROP_SELF,	 /* a packet to the sender itself */
	RELAY_DROP_MAX,
};

/* Why connections were closed (trellis_relay_closes_total{reason}). */
enum relay_close {
	RELAY_CLOSE_GONE,     /* the other end closed or reset */
	RELAY_CLOSE_PROTOCOL, /* garbage, wrong order or direction, malformed (-EPROTO...) */
	RELAY_CLOSE_TOO_BIG,  /* a frame length over the cap (-EMSGSIZE) */
	RELAY_CLOSE_PROOF,    /* a key it could not prove, a wrong mesh key (-EACCES) */
	RELAY_CLOSE_VERSION,  /* -EPROTONOSUPPORT */
	RELAY_CLOSE_HANDSHAKE_TIMEOUT,
	RELAY_CLOSE_REFUSED,  /* admission said no */
	RELAY_CLOSE_REVOKED,  /* admitted, then deleted, expired or rotated away */
	RELAY_CLOSE_REPLACED, /* the same key connected again */
	RELAY_CLOSE_SLOW,     /* control frames piled up unread */
	RELAY_CLOSE_IO,
	RELAY_CLOSE_LIMIT, /* too many clients */
	RELAY_CLOSE_MAX,
};

/*
 * Admission: who may use the relay once it proved its node key. check returns
 * 1 (admit), 0 (refuse), or -EINPROGRESS: the answer comes later through
 * relay_server_admit_done with the same token. A refused or slow answer
 * never blocks the loop. Mesh peers (they proved the mesh key) skip it.
 */
struct relay_admit_ops {
	int (*check)(void *ctx, const uint8_t key[RELAY_KEY_LEN], uint64_t token);
	/* A pending check whose connection went away (may be NULL). */
	void (*cancel)(void *ctx, uint64_t token);
};

struct relay_server_opts {
	const char *name;		     /* log prefix: "relay" */
	const uint8_t *priv;		     /* the relay's static key (RELAY_KEY_LEN) */
	const uint8_t *mesh_key;	     /* NULL: no mesh */
	const struct relay_admit_ops *admit; /* NULL: every proven key */
	void *admit_ctx;
	struct relay_limits limits;    /* granted to clients; zeros: the defaults */
	unsigned queue_max;	       /* packets queued per client; 0: default */
	size_t queue_bytes;	       /* bytes of packets queued per client; 0: default */
	size_t clients_max;	       /* 0: default */
	uint64_t handshake_timeout_ns; /* 0: default (from accept) */
};

#define RELAY_KEEPALIVE_MS_DEFAULT 60000
/*
 * Per client: about 1 Gb/s and 200,000 datagrams/s, above what one node's single
 * WireGuard stream reaches on this hardware, so the limit holds back a flood and
 * not a transfer (16 MiB/s made relayed TCP a quarter of direct).
 */
#define RELAY_RATE_BYTES_DEFAULT (128u << 20) /* per client, bytes/s */
#define RELAY_BURST_BYTES_DEFAULT (16u << 20)
#define RELAY_RATE_PACKETS_DEFAULT 200000
#define RELAY_QUEUE_MAX_DEFAULT 64
#define RELAY_QUEUE_BYTES_DEFAULT (256u << 10)
#define RELAY_CLIENTS_MAX_DEFAULT 100000
#define RELAY_HANDSHAKE_TIMEOUT_NS_DEFAULT (10ULL * 1000000000ULL)

struct relay_stats {
	size_t conns;	    /* open: clients, mesh peers and connections in the handshake */
	size_t clients;	    /* proven and admitted, in the registry */
	size_t handshaking; /* not yet admitted */
	size_t home;	    /* clients that said this relay is their home */
	size_t mesh_in;	    /* mesh peers connected to us */
	size_t mesh_out;    /* our established links to mesh peers */
	size_t remote;	    /* clients the mesh says are on other relays */
	uint64_t accepted;
	uint64_t packets_fwd, bytes_fwd;   /* delivered to local clients (queued) */
	uint64_t packets_mesh, bytes_mesh; /* forwarded one hop into the mesh */
	uint64_t packets_in, bytes_in;	   /* send-packet and forward-packet received */
	uint64_t pings, keepalives_sent, unknown_frames;
	uint64_t drops[RELAY_DROP_MAX];
	uint64_t closes[RELAY_CLOSE_MAX];
	size_t bufs_small, bufs_big; /* pooled buffers allocated (in use + free) */
};

/* 0 or -errno. */
int relay_server_new(struct loop *loop, const struct relay_server_opts *opts,
		     struct relay_server **ret);
/* Closes every connection. Accepts NULL. */
void relay_server_free(struct relay_server *s);

/* The handler of GET RELAY_HTTP_PATH: httpd_route_add(h, "GET", RELAY_HTTP_PATH, ...). */
void relay_server_http(struct httpd_request *r, void *ctx);
/* Registers GET RELAY_HTTP_PATH on h. 0 or -ENOMEM. */
int relay_server_route(struct relay_server *s, struct httpd *h);
/* Takes over an upgraded connection (all of up is ours, even on failure). 0 or -errno. */
int relay_server_take(struct relay_server *s, struct httpd_upgrade *up);

/* The answer to a check that returned -EINPROGRESS. Unknown tokens are ignored. */
void relay_server_admit_done(struct relay_server *s, uint64_t token, bool ok);
/* Closes the client holding key, if any (deleted node). Returns whether one was closed. */
bool relay_server_revoke(struct relay_server *s, const uint8_t key[RELAY_KEY_LEN]);
/*
 * Asks the admission hook again about every client and closes those refused
 * (a synchronous hook: the embedded relay after the control server changed
 * nodes). Returns how many were closed.
 */
size_t relay_server_recheck(struct relay_server *s);

/* Calls fn for every admitted client's key (the verifier re-asks about them). */
void relay_server_clients_each(struct relay_server *s,
			       void (*fn)(void *ctx, const uint8_t key[RELAY_KEY_LEN]), void *ctx);

void relay_server_stats_get(const struct relay_server *s, struct relay_stats *ret);
/* The relay's public key, derived once in relay_server_new: every connection presents it. */
const uint8_t *relay_server_pub(const struct relay_server *s);
/* Prometheus text of the relay's metrics (trellis_relay_*) appended to f. */
void relay_server_metrics_write(const struct relay_server *s, FILE *f);

#endif
