/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_CONTROL_CLIENT_H
#define TRELLIS_NODE_CONTROL_CLIENT_H

/*
 * The node's side of docs/control-protocol.md: connect to the login server
 * (http:// or https://), learn its key (GET /key, trusted on first use),
 * upgrade POST /control, Noise_IK with the machine key, register, then follow
 * the map stream and report endpoints; reconnect with backoff and jitter.
 *
 * It runs on a thread of its own with blocking I/O and poll() timeouts: the
 * conversation is strictly sequential (connect, TLS, HTTP, handshake,
 * register, stream), which reads straight down as blocking code, and a slow
 * DNS lookup, TLS handshake or server can never stall the daemon's loop (local
 * API, engine timers). The price is that its results reach the daemon through
 * the callbacks below, on the client's thread: the daemon posts them to its
 * loop (daemon.c), and asks for a full map with control_client_resync when a
 * delta does not apply there.
 */

#include <stdbool.h>
#include <stdint.h>

#include "crypto/mcert.h"
#include "proto/netmap.h"

#define CONTROL_KEEPALIVE_NS (30ULL * 1000000000ULL)  /* send after this much idle */
#define CONTROL_SILENCE_NS (90ULL * 1000000000ULL)    /* reconnect after this much silence */
#define CONTROL_BACKOFF_MIN_NS (1ULL * 1000000000ULL)
#define CONTROL_BACKOFF_MAX_NS (30ULL * 1000000000ULL)
#define CONTROL_IO_TIMEOUT_NS (10ULL * 1000000000ULL) /* connect, TLS, HTTP, handshake */
#define CONTROL_ENDPOINT_CHECK_NS (5ULL * 1000000000ULL)
/* The file in the state directory that pins the server key (trust on first use). */
#define CONTROL_SERVER_KEY_FILE "server-key.json"

enum control_client_state {
	CONTROL_CLIENT_CONNECTING, /* connecting or waiting to retry (error says why) */
	CONTROL_CLIENT_NEEDS_LOGIN, /* interactive registration: auth_url is set */
	CONTROL_CLIENT_RUNNING,     /* registered and the first netmap is applied */
	CONTROL_CLIENT_FAILED,      /* gave up for good (key rejected, server key changed) */
	CONTROL_CLIENT_LOGGED_OUT,  /* the server confirmed the logout */
	CONTROL_CLIENT_EXPIRED,     /* our node key expired: re-authenticate (error says so) */
	CONTROL_CLIENT_REMOVED,     /* an admin deleted this node: stays out until `trellis up` */
};

/* What EXPIRED and REMOVED tell the person (status, logs). */
#define CONTROL_EXPIRED_TEXT "node key expired — run `trellis up` to re-authenticate"
#define CONTROL_REMOVED_TEXT                                                                       \
	"this node was deleted by an admin of the tailnet; `trellis up` joins it again (as a new " \
	"node)"

const char *control_client_state_name(enum control_client_state s);

/* All called on the client's thread, never two at a time. */
struct control_client_ops {
	void *ctx;
	/* auth_url: NEEDS_LOGIN only; error: why we are CONNECTING again or FAILED, or NULL. */
	void (*state_changed)(void *ctx, enum control_client_state state, const char *auth_url,
			      const char *error);
	/* The server accepted the registration; self is our record (may be NULL). */
	void (*registered)(void *ctx, const struct netmap_node *self);
	/* A full netmap; ownership passes to the callee. 0, or -errno to reconnect. */
	int (*netmap)(void *ctx, struct netmap *nm);
	/*
	 * A delta on the last netmap; ownership passes to the callee. 0, or -errno
	 * to reconnect (and get a full map).
	 */
	int (*delta)(void *ctx, struct netmap_delta *d);
	/*
	 * Node key rotation (both or neither; NULL: the client never rotates).
	 * rotate_begin: the next private node key into ret_key (the daemon's
	 * state_node_key_rotate_begin); 0 or -errno (then retried later).
	 * rotate_end: ok = the server took the new key (commit it and give it to
	 * WireGuard; registered() follows with the new self record), !ok = it was
	 * refused or the answer was lost with the connection (abort: the old key
	 * stays, and the next register restores it at the server if need be).
	 */
	int (*rotate_begin)(void *ctx, uint8_t ret_key[NETMAP_KEY_LEN]);
	void (*rotate_end)(void *ctx, bool ok);
	/*
	 * Flow logs (docs/audit.md; both or neither). flows_next: the oldest batch not yet
	 * acknowledged into buf (cap FLOWBATCH_MAX_LEN), its length, or 0 when none. The
	 * client sends one at a time, once the map stream runs, and asks again after the
	 * answer: flows_ack with its seq and the collector's result ("stored", "replayed",
	 * a refusal, or "busy": the client asks for it again a second later).
	 */
	size_t (*flows_next)(void *ctx, uint8_t *buf, size_t cap);
	void (*flows_ack)(void *ctx, uint64_t seq, const char *result);
};

/*
 * A node key is rotated when this much of its lifetime is left: a quarter of
 * what was left when the client first saw that expiry, at most this cap.
 */
#define CONTROL_ROTATE_WINDOW_MAX_S (24 * 3600)
/* After a refused rotation, retry within this much (sooner for short lifetimes). */
#define CONTROL_ROTATE_RETRY_MAX_S 60

struct control_client_cfg {
	const char *login_server; /* http://host[:port] or https://host[:port] */
	const char *auth_key;     /* NULL or "": interactive (or an existing login) */
	const char *hostname;
	const char *os;
	const char *state_dir;    /* where CONTROL_SERVER_KEY_FILE lives */
	uint8_t machine_key[NETMAP_KEY_LEN]; /* private */
	uint8_t node_key[NETMAP_KEY_LEN];    /* private */
	/* The public half of the node's audit key, sent with every register (docs/audit.md). */
	bool has_audit_key;
	uint8_t audit_key[NETMAP_KEY_LEN];
	const char *ifname;       /* our TUN interface: never an endpoint */
	/* The UDP port to report with our addresses (any thread may be asked). */
	uint16_t (*port)(void *ctx);
	void *port_ctx;
	/*
	 * NULL, or candidates besides the interface addresses (port mappings), put first: a peer
	 * tries a netmap's first endpoint. Fills up to cap, returns how many. Client thread.
	 */
	unsigned (*endpoints_extra)(void *ctx, struct endpoint *ret, unsigned cap);
	/* Our disco public key, reported with the endpoints (none: peers see no disco). */
	bool has_disco_key;
	uint8_t disco_key[NETMAP_KEY_LEN];
	struct control_client_ops ops;
	/*
	 * Only find out whether login_server answers as one (GET /key, TLS verified): then
	 * state_changed RUNNING (it does) or FAILED (error says why), and idle. A `trellis up`
	 * that names another server asks this before it gives up the current one.
	 */
	bool probe;
	/* The first retry's backoff; 0: CONTROL_BACKOFF_MIN_NS (a test sets hours). */
	uint64_t backoff_min_ns;
};

struct control_client;

/* Compressed full netmaps (proto/mapz.h) this client took. */
struct control_client_stats {
	uint64_t zstd_maps;
	uint64_t zstd_bytes_in, zstd_bytes_out; /* on the wire, and as JSON text */
	uint64_t zstd_errors; /* refused: corrupt, or larger than a message may be */
	/* Machine certificates the server sent (certfetch.h): installed, and refused. */
	uint64_t mcerts_installed, mcerts_refused;
	/* The serial of the last one it sent that we took or held already; "": none yet. */
	char mcert_sent_serial[MCERT_SERIAL_MAX];
};

/* Copies cfg and starts the thread. 0, -EINVAL (bad URL, logged), -errno. */
int control_client_start(const struct control_client_cfg *cfg, struct control_client **ret);
/* Accepts NULL. Stops the thread (promptly, whatever it is doing) and waits for it. */
void control_client_free(struct control_client *cc);

/*
 * Asks the server to expire our node key and waits up to timeout_ns for its
 * logout_response. 0 once confirmed (the client then stays idle), -ENOTCONN
 * when there is no established session, -ETIMEDOUT.
 */
int control_client_logout(struct control_client *cc, uint64_t timeout_ns);

/*
 * The caller could not apply a delta the client delivered (err: why): the
 * client ends its session and reconnects for a full netmap, as if the delta
 * callback had returned err. netmaps: how many full netmaps the caller has
 * received from this client; a request made before the newest one reached the
 * caller is stale: -ESTALE, ignored (that map needs no resync). 0 otherwise.
 * Any thread.
 */
int control_client_resync(struct control_client *cc, uint64_t netmaps, int err);

/*
 * Our home relay region (0: none): reported with the endpoints at once, and in every
 * map_request after a reconnect. Any thread.
 */
void control_client_home_region_set(struct control_client *cc, uint32_t region);

/* A flow-log batch is waiting (flows_next has one): sent at once if none is in flight. Any thread.
 */
void control_client_flows_kick(struct control_client *cc);

/* What endpoints_extra returns changed: the endpoints are checked (and sent) at once. Any thread. */
void control_client_endpoints_changed(struct control_client *cc);

/*
 * Endpoints found beyond our interface addresses (STUN-reflexive, port mappings): reported
 * after the local ones (together at most NETMAP_MAX_ENDPOINTS) at once if they or
 * mapping_varies (our NAT maps per destination) changed. Any thread.
 */
void control_client_extra_endpoints_set(struct control_client *cc, const struct endpoint *eps,
					unsigned n, bool mapping_varies);

/* A copy of the counters. */
void control_client_stats_get(struct control_client *cc, struct control_client_stats *ret);

#endif
