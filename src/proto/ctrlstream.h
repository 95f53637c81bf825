/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_CTRLSTREAM_H
#define TRELLIS_PROTO_CTRLSTREAM_H

/*
 * The framed, encrypted control channel of docs/control-protocol.md, without
 * I/O: received bytes go in (any chunking) with ctrlstream_feed, complete JSON
 * messages come out with ctrlstream_recv; messages go in with ctrlstream_send,
 * bytes to write come out with ctrlstream_output / ctrlstream_output_consume.
 *
 * The node is the client (Noise initiator): its first output is the handshake
 * frame. The server (responder) learns the node's machine key from frame 1
 * (ctrlstream_remote_key) and answers with frame 2 by itself. Messages sent
 * before the handshake completes are queued and sealed once it has.
 *
 * Before the handshake completes, the only valid frame is the handshake's, of
 * an exact size (96 bytes to the server, 48 to the client): any other length
 * is refused at its header (-EBADMSG), before anything is buffered for it.
 * Memory a peer can make us hold is bounded by one frame (65535 + 4 bytes) plus
 * one message (4 + the limit of ctrlstream_set_max_message, CTRL_MSG_MAX by default). Any error is final: the stream is dead and
 * every later call returns the same error; the caller closes the connection.
 * Errors: -EBADMSG (a frame that does not authenticate, a bad handshake),
 * -EMSGSIZE (a frame or message length over its limit), -EPROTO (a zero
 * length), -ENOMEM.
 *
 * Timers (handshake deadline, keepalive, silence) are the caller's policy.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CTRLSTREAM_PROLOGUE "trellis-control v1"
#define CTRLSTREAM_FRAME_MAX 65535
#define CTRLSTREAM_KEY_LEN 32
#define CTRLSTREAM_HASH_LEN 32
#define CTRLSTREAM_PROOF_LEN 32
#define CTRLSTREAM_PROOF_LABEL "trellis-control node key proof v1"

struct ctrlstream;

/* NULL on failure (errno set). */
struct ctrlstream *ctrlstream_client_new(const uint8_t machine_priv[CTRLSTREAM_KEY_LEN],
					 const uint8_t server_pub[CTRLSTREAM_KEY_LEN]);
struct ctrlstream *ctrlstream_server_new(const uint8_t server_priv[CTRLSTREAM_KEY_LEN]);
/*
 * The same with the key's public half, computed once when the server loaded its key: a
 * server answers every handshake with the same key (NULL: derived per stream, as above).
 */
struct ctrlstream *ctrlstream_server_new_pair(const uint8_t server_priv[CTRLSTREAM_KEY_LEN],
					      const uint8_t *server_pub);
/* Wipes keys and buffers. Accepts NULL. */
void ctrlstream_free(struct ctrlstream *cs);

/* For deterministic tests and fuzz seeds only: fix the Noise ephemeral key. */
int ctrlstream_set_ephemeral_for_test(struct ctrlstream *cs,
				      const uint8_t e_priv[CTRLSTREAM_KEY_LEN]);

/*
 * Consumes received bytes: returns how many (0..len) or -errno. It stops early
 * when a message is ready (take it with ctrlstream_recv, then feed the rest)
 * and right after the handshake completes (so the server can look at the
 * remote key before any message); call again with the remaining bytes.
 */
ssize_t ctrlstream_feed(struct ctrlstream *cs, const void *data, size_t len);

/*
 * The next complete message: 1 with ret_json and ret_len set (not NUL-terminated;
 * valid until the next feed or recv), 0 when none is ready, or -errno.
 */
int ctrlstream_recv(struct ctrlstream *cs, const char **ret_json, size_t *ret_len);

/*
 * Largest message this end accepts from the peer (1..CTRL_MSG_MAX, the
 * default). Checked when a message's length prefix arrives, before anything is
 * buffered for it: a larger declared length kills the stream with -EMSGSIZE.
 * The server uses a small limit (nodes only send small messages); clients keep
 * the default since netmaps are large. 0 or -EINVAL.
 */
int ctrlstream_set_max_message(struct ctrlstream *cs, size_t bytes);

/* Queues one message (1..CTRL_MSG_MAX bytes). 0 or -errno (-EMSGSIZE, -ENOMEM). */
int ctrlstream_send(struct ctrlstream *cs, const void *json, size_t len);

/*
 * Bytes to write: seals queued messages into frames and returns the pending
 * output (possibly empty). Valid until the next call on cs. 0 or -errno.
 */
int ctrlstream_output(struct ctrlstream *cs, const uint8_t **ret_data, size_t *ret_len);
/* Marks n bytes of that output as written. */
void ctrlstream_output_consume(struct ctrlstream *cs, size_t n);
/* Bytes of output not yet written, sealed or not (for back-pressure). */
size_t ctrlstream_output_pending(const struct ctrlstream *cs);

bool ctrlstream_established(const struct ctrlstream *cs);
/* The peer's static key: the server knows the node's machine key after frame 1. */
int ctrlstream_remote_key(const struct ctrlstream *cs, uint8_t ret_pub[CTRLSTREAM_KEY_LEN]);
/* The Noise handshake hash h of an established stream (channel binding). 0 or -ENOTCONN. */
int ctrlstream_handshake_hash(const struct ctrlstream *cs, uint8_t ret_hash[CTRLSTREAM_HASH_LEN]);

/*
 * Proof that the node holds the private half of its node key, made for this
 * session only (docs/control-protocol.md, "register"):
 *   HMAC-BLAKE2s(X25519(node key, server key),
 *                CTRLSTREAM_PROOF_LABEL || handshake hash || node public key).
 * Only the node key's holder and the server can compute it, and the handshake
 * hash makes it worthless on any other connection. prove: the client, once
 * established; check: the server, with its static private key. 0, -ENOTCONN
 * (not established), -EINVAL (wrong end, a low-order key), -EACCES (check: the
 * proof does not match).
 */
int ctrlstream_node_key_prove(const struct ctrlstream *cs,
			      const uint8_t node_priv[CTRLSTREAM_KEY_LEN],
			      uint8_t ret_proof[CTRLSTREAM_PROOF_LEN]);
int ctrlstream_node_key_check(const struct ctrlstream *cs,
			      const uint8_t server_priv[CTRLSTREAM_KEY_LEN],
			      const uint8_t node_pub[CTRLSTREAM_KEY_LEN],
			      const uint8_t proof[CTRLSTREAM_PROOF_LEN]);

/* The error that killed the stream, or 0. */
int ctrlstream_error(const struct ctrlstream *cs);

#endif
