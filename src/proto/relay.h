/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_RELAY_H
#define TRELLIS_PROTO_RELAY_H

/*
 * The relay protocol of docs/relay-protocol.md, without I/O: what runs on the
 * stream after the HTTP upgrade. Three layers, each usable alone:
 *
 *   relay_reader   frames (1-byte type, 4-byte big-endian length, payload) out of
 *                  bytes fed in any chunking; a length over the cap is refused on
 *                  the header, before anything is buffered for it.
 *   relay_msg      decode/encode of the frames that follow the handshake.
 *   relay_conn     one end of a connection: the handshake (server key, client
 *                  info proving the client holds its node key, server info), then
 *                  frames checked against the direction and privileges of that end.
 *
 * Timer policy (handshake deadline, keepalives, silence), rate limits, queues
 * and admission decisions belong to the caller; the engines only say what arrived.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "base/endpoint.h"

struct pkt;

/* The HTTP upgrade that starts a relay connection (docs/relay-protocol.md). */
#define RELAY_HTTP_PATH "/relay"
#define RELAY_UPGRADE_TOKEN "trellis-relay/1"

#define RELAY_KEY_LEN 32
#define RELAY_HDR_LEN 5	       /* type + big-endian length */
#define RELAY_PACKET_MAX 65536 /* largest datagram carried in one frame */
/* Largest payload of any frame after the handshake (forward-packet: two keys + data). */
#define RELAY_FRAME_MAX (2 * RELAY_KEY_LEN + RELAY_PACKET_MAX)
/* Largest payload of a handshake frame: all a client can make us buffer before it is proven. */
#define RELAY_HS_FRAME_MAX 256
/* What a send-packet or recv-packet frame puts before the datagram (fits PKT_HEADROOM). */
#define RELAY_PACKET_HDR_LEN (RELAY_HDR_LEN + RELAY_KEY_LEN)
#define RELAY_MAGIC "TRLRELAY"
#define RELAY_MAGIC_LEN 8
#define RELAY_VERSION 1 /* the version this code speaks, and the lowest it accepts */
#define RELAY_NONCE_LEN 24
#define RELAY_CHALLENGE_LEN 32
#define RELAY_PING_LEN 8
#define RELAY_HEALTH_MAX 256

enum relay_frame_type {
	RELAY_SERVER_KEY = 0x01,     /* S->C  magic, version, server key, challenge */
	RELAY_CLIENT_INFO = 0x02,    /* C->S  node key, nonce, sealed info */
	RELAY_SERVER_INFO = 0x03,    /* S->C  nonce, sealed info (limits) */
	RELAY_SEND_PACKET = 0x04,    /* C->S  dst key, data */
	RELAY_RECV_PACKET = 0x05,    /* S->C  src key, data */
	RELAY_KEEPALIVE = 0x06,	     /* both  empty */
	RELAY_NOTE_PREFERRED = 0x07, /* C->S  1 byte: 1 = this is my home relay */
	RELAY_PEER_GONE = 0x08,	     /* S->C  key, reason */
	RELAY_PEER_PRESENT = 0x09,   /* S->C  key [, endpoint 18 [, flags 1]] */
	RELAY_FORWARD_PACKET = 0x0a, /* C->S  mesh only: src key, dst key, data */
	RELAY_WATCH_CONNS = 0x10,    /* C->S  mesh only: empty */
	RELAY_CLOSE_PEER = 0x11,     /* C->S  mesh only: key */
	RELAY_PING = 0x12,	     /* both  8 bytes, echoed in a pong */
	RELAY_PONG = 0x13,	     /* both  8 bytes */
	RELAY_HEALTH = 0x14,	     /* S->C  text (empty = healthy again) */
};

enum relay_gone_reason {
	RELAY_GONE_DISCONNECTED = 0, /* the peer was here and left */
	RELAY_GONE_NOT_HERE = 1,     /* a packet for a key this relay does not hold */
};

/* ---- framing ---- */

struct relay_frame {
	uint8_t type;
	uint32_t len;
	const uint8_t *data; /* len bytes; valid until the next relay_reader_next */
};

/* Fields are private. A reader holds no buffer until a frame arrives split across feeds. */
struct relay_reader {
	uint32_t max;
	uint8_t hdr[RELAY_HDR_LEN];
	uint8_t hdr_len;
	uint8_t type;
	uint32_t len, got;
	uint8_t *buf;
	uint32_t cap;
	bool taken;
	int err;
};

/* max: largest payload accepted (RELAY_FRAME_MAX at most). */
void relay_reader_init(struct relay_reader *r, uint32_t max);
/* Changes the cap for frames whose header has not arrived yet. */
void relay_reader_set_max(struct relay_reader *r, uint32_t max);
/* Frees the buffer. The reader may be initialised again. */
void relay_reader_clear(struct relay_reader *r);
/*
 * Takes bytes from *in (advancing *in and *len) until a frame is complete:
 * 1 with *ret set, 0 when the input is used up without completing one, or
 * -EMSGSIZE (a length over the cap, refused as soon as the header is in) or
 * -ENOMEM. Errors are final. A frame that arrives whole in one input points
 * into that input (no copy); a split one is assembled in a buffer that grows
 * with the bytes that actually arrive.
 */
int relay_reader_next(struct relay_reader *r, const uint8_t **in, size_t *len,
		      struct relay_frame *ret);

/* ---- frames after the handshake ---- */

struct relay_msg {
	uint8_t type;
	/* send: dst; recv and forward: src; gone, present, close: the peer;
	 * the handshake events: the other end's key (see relay_conn_feed) */
	uint8_t key[RELAY_KEY_LEN];
	uint8_t dst[RELAY_KEY_LEN]; /* forward: dst */
	const uint8_t *data;	    /* packets: the datagram; health: the text (no NUL) */
	size_t len;
	uint8_t ping[RELAY_PING_LEN]; /* ping, pong */
	uint8_t reason;		      /* peer-gone: enum relay_gone_reason (others pass through) */
	bool preferred;		      /* note-preferred */
	struct endpoint ep; /* peer-present: where the peer connects from; AF_UNSPEC if not sent */
	uint8_t flags;	    /* peer-present: reserved, passed through */
};

/*
 * Decodes the payload of a frame that follows the handshake; ret->data points
 * into payload. 0, -EBADMSG (wrong length or value for its type), -EPROTO (a
 * handshake frame) or -ENOTSUP (a type this version does not know).
 */
int relay_msg_decode(struct relay_msg *ret, uint8_t type, const uint8_t *payload, size_t len);
/* Writes one whole frame into buf: its length, or -ENOBUFS, -EMSGSIZE or -EINVAL (type). */
ssize_t relay_msg_encode(uint8_t *buf, size_t cap, const struct relay_msg *m);

/*
 * The header of a send-packet or recv-packet frame carrying data_len bytes: the
 * RELAY_PACKET_HDR_LEN bytes that go right before them. 0, -EINVAL or -EMSGSIZE.
 */
int relay_packet_header_put(uint8_t hdr[RELAY_PACKET_HDR_LEN], uint8_t type,
			    const uint8_t key[RELAY_KEY_LEN], size_t data_len);
/*
 * Wraps a packet buffer holding a datagram (a WireGuard or disco message) into
 * a send-packet frame to dst in place, in its headroom: no copy.
 * 0, -ENOBUFS (headroom) or -EMSGSIZE.
 */
int relay_pkt_push_send(struct pkt *p, const uint8_t dst[RELAY_KEY_LEN]);

/* ---- connection engine ---- */

/* What a server grants a client (server-info); 0 = not limited / not said. */
struct relay_limits {
	uint32_t keepalive_ms; /* the server sends something at least this often */
	uint32_t rate_bytes;   /* bytes per second the client may send */
	uint32_t burst_bytes;  /* bucket depth for rate_bytes */
	uint32_t rate_packets; /* packets per second the client may send */
};

enum relay_conn_state {
	RELAY_CONN_WAIT_SERVER_KEY,  /* client */
	RELAY_CONN_WAIT_SERVER_INFO, /* client: client-info is out */
	RELAY_CONN_WAIT_CLIENT_INFO, /* server: server-key is out */
	RELAY_CONN_WAIT_ACCEPT, /* server: client proven, waiting for relay_conn_server_accept */
	RELAY_CONN_ESTABLISHED,
};

/* Handshake output never exceeds this: one server-key or client-info or server-info frame. */
#define RELAY_HS_OUT_MAX (RELAY_HDR_LEN + RELAY_HS_FRAME_MAX)

/* Fields are private; embed it in a per-connection struct (no allocation but the reader's). */
struct relay_conn {
	bool server;
	bool mesh;	      /* the other end proved the mesh key */
	bool has_mesh_key;    /* server: mesh clients accepted; client: we prove it */
	bool pin;	      /* client: the server key must be server_pub */
	uint8_t state;	      /* enum relay_conn_state */
	uint8_t version;      /* agreed once established */
	uint8_t peer_version; /* server: the client's; client: the server's */
	int err;
	struct relay_reader rd;
	uint8_t priv[RELAY_KEY_LEN]; /* own static key, wiped once established */
	uint8_t server_pub[RELAY_KEY_LEN];
	uint8_t client_pub[RELAY_KEY_LEN];
	uint8_t challenge[RELAY_CHALLENGE_LEN];
	uint8_t client_nonce[RELAY_NONCE_LEN]; /* of client-info: server-info is bound to it */
	uint8_t box_key[32];		       /* wiped once established */
	uint8_t mesh_key[RELAY_KEY_LEN];
	struct relay_limits limits;
	uint64_t unknown_frames; /* frames of unknown types skipped */
	uint16_t out_off, out_len;
	uint8_t out[RELAY_HS_OUT_MAX];
};

/*
 * A server end: queues the server-key frame with a fresh random challenge.
 * mesh_key (NULL: none) lets clients that present it use the mesh frames.
 * 0 or -errno.
 */
int relay_conn_server_init(struct relay_conn *c, const uint8_t server_priv[RELAY_KEY_LEN],
			   const uint8_t *mesh_key);
/*
 * The same with the key's public half, derived once when the relay loaded its key: a
 * relay answers every connection with the same key, and deriving it again is an X25519
 * scalar multiplication per connection (NULL: derived, as above). It must be
 * server_priv's: with another, no client's proof opens.
 */
int relay_conn_server_init_pair(struct relay_conn *c, const uint8_t server_priv[RELAY_KEY_LEN],
				const uint8_t *server_pub, const uint8_t *mesh_key);
/*
 * A client end with its node key. server_pub (NULL: any) pins the relay's key
 * (from the relay map); mesh_key (NULL: none) asks for the mesh privileges: the
 * client proves it holds the key (never sends it) and requires the same proof of the
 * server, so a relay that is not of the mesh can neither learn the key nor pose as
 * a mesh peer.
 */
int relay_conn_client_init(struct relay_conn *c, const uint8_t node_priv[RELAY_KEY_LEN],
			   const uint8_t *server_pub, const uint8_t *mesh_key);
/*
 * The same with node_priv's public half, derived once when the key was set (NULL: derived
 * per connection, as above). It must be node_priv's: with another, the relay refuses the
 * proof.
 */
int relay_conn_client_init_pair(struct relay_conn *c, const uint8_t node_priv[RELAY_KEY_LEN],
				const uint8_t *node_pub, const uint8_t *server_pub,
				const uint8_t *mesh_key);
/* Wipes keys and frees the reader's buffer. Accepts NULL. */
void relay_conn_clear(struct relay_conn *c);
/* For deterministic tests and fuzz seeds only: a server's challenge, before any output is taken. */
int relay_conn_set_challenge_for_test(struct relay_conn *c,
				      const uint8_t challenge[RELAY_CHALLENGE_LEN]);

/*
 * Consumes received bytes from *in (advancing *in and *len) up to the next event:
 *   1   *ret holds one of:
 *       RELAY_CLIENT_INFO (server): the client proved it holds ret->key, its node
 *         key. Admit it with relay_conn_server_accept or close the connection;
 *         a client sends nothing more before server-info, so bytes fed in the
 *         meantime are an error.
 *       RELAY_SERVER_INFO (client): established; ret->key is the server key,
 *         relay_conn_limits has what the server granted.
 *       a frame of the stream that this end may receive (for the server, mesh
 *         frames only from a mesh client). Frames of unknown types are skipped.
 *   0   the input is used up.
 *   -errno, final: -EPROTO (a frame that does not belong here: garbage, wrong
 *       order or direction), -EMSGSIZE (over the cap: RELAY_HS_FRAME_MAX during
 *       the handshake), -EBADMSG (malformed), -EACCES (a proof that does not
 *       open: a wrong key, another connection's client-info, a wrong mesh key,
 *       a server key other than the pinned one), -EPROTONOSUPPORT (version),
 *       -EPERM (a mesh frame from a plain client), -ENOMEM.
 */
int relay_conn_feed(struct relay_conn *c, const uint8_t **in, size_t *len, struct relay_msg *ret);
/* Server, after RELAY_CLIENT_INFO: queues server-info with limits and is established. */
int relay_conn_server_accept(struct relay_conn *c, const struct relay_limits *limits);
/*
 * Handshake bytes to write (server-key, client-info, server-info); may be
 * empty. Write them before any frame of the stream. Valid until the next call on c.
 */
void relay_conn_output(const struct relay_conn *c, const uint8_t **ret_data, size_t *ret_len);
void relay_conn_output_consume(struct relay_conn *c, size_t n);

bool relay_conn_established(const struct relay_conn *c);
bool relay_conn_is_mesh(const struct relay_conn *c);
const struct relay_limits *relay_conn_limits(const struct relay_conn *c);
/* Server: the client's node key once proven. Client: the server key once received. */
int relay_conn_peer_key(const struct relay_conn *c, uint8_t ret_key[RELAY_KEY_LEN]);

#endif
