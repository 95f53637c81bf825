/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_PROTO_CTRLMSG_H
#define TRELLIS_PROTO_CTRLMSG_H

/*
 * Control channel messages (docs/control-protocol.md) and their JSON codec.
 * No I/O: JSON text in, structs out, and back.
 */

#include <stddef.h>

#include "proto/netmap.h"

#define CTRL_MSG_MAX (16U << 20) /* largest JSON message accepted */
#define CTRL_AUTHKEY_MAX 128
#define CTRL_TEXT_MAX 256
/* A machine certificate (crypto/mcert.h, 2048 bytes of DER at most) and its proof, base64. */
#define CTRL_MCERT_MAX NETMAP_MCERT_MAX
#define CTRL_MCERT_PROOF_MAX 96

enum ctrl_msg_type {
	CTRL_MSG_UNKNOWN = 0,
	CTRL_MSG_REGISTER,
	CTRL_MSG_REGISTER_RESPONSE,
	CTRL_MSG_MAP_REQUEST,
	CTRL_MSG_NETMAP,
	CTRL_MSG_DELTA,
	CTRL_MSG_ENDPOINTS,
	CTRL_MSG_LOGOUT,
	CTRL_MSG_LOGOUT_RESPONSE,
	CTRL_MSG_KEEPALIVE,
	CTRL_MSG_ERROR,
	CTRL_MSG_FLOWS,	    /* node -> server: one signed flow-log batch (docs/audit.md) */
	CTRL_MSG_FLOWS_ACK, /* server -> node: what became of it */
};

enum ctrl_register_status {
	CTRL_REGISTER_OK,
	CTRL_REGISTER_NEEDS_AUTH,
	CTRL_REGISTER_ERROR,
};

struct ctrl_register {
	uint8_t node_key[NETMAP_KEY_LEN];
	bool has_old_node_key;
	uint8_t old_node_key[NETMAP_KEY_LEN];
	/* Proof of the node key for this session (ctrlstream_node_key_prove). */
	bool has_node_key_proof;
	uint8_t node_key_proof[NETMAP_KEY_LEN];
	char hostname[NETMAP_NAME_MAX];
	char os[NETMAP_OS_MAX];
	char auth_key[CTRL_AUTHKEY_MAX]; /* "" = interactive */
	/* The public half of the node's Ed25519 audit key: it signs the node's flow logs. */
	bool has_audit_key;
	uint8_t audit_key[NETMAP_KEY_LEN];
	unsigned n_tags;
	char tags[NETMAP_MAX_TAGS][NETMAP_TAG_MAX];
	/*
	 * "": none. The node's machine certificate (DER) and its key's signature over this
	 * session's handshake hash and node_key (mcert_proof_sign), both base64; the server
	 * checks them where its tailnet requires one (control/ca.h).
	 */
	char machine_cert[CTRL_MCERT_MAX];
	char machine_cert_proof[CTRL_MCERT_PROOF_MAX];
};

struct ctrl_register_response {
	enum ctrl_register_status status;
	char auth_url[CTRL_TEXT_MAX];
	char error[CTRL_TEXT_MAX];
	bool has_node;
	struct netmap_node node;
	/*
	 * "": none. A newer certificate of the node's own machine key and certificate key (DER,
	 * base64), which the node checks and installs for its next registration.
	 */
	char machine_cert[CTRL_MCERT_MAX];
};

/*
 * The netmap a reconnecting node holds: the seq of the last netmap or delta it applied and
 * the version that message stamped (docs/control-protocol.md, "Resuming a map stream").
 */
struct ctrl_have {
	uint64_t seq;
	struct netmap_version version;
};

struct ctrl_map_request {
	uint8_t node_key[NETMAP_KEY_LEN];
	char hostname[NETMAP_NAME_MAX];
	bool stream;
	unsigned n_endpoints;
	struct endpoint endpoints[NETMAP_MAX_ENDPOINTS];
	uint32_t home_region; /* 0: none chosen yet */
	bool has_disco_key;
	uint8_t disco_key[NETMAP_KEY_LEN];
	bool mapping_varies; /* our NAT maps per destination (STUN) */
	bool has_have;	     /* a netmap is held: a delta from it will do */
	struct ctrl_have have;
	bool zstd; /* "compress":"zstd": a full netmap may come compressed (proto/mapz.h) */
	/* "may_open_patch":true: deltas may say a change of may_open as a patch (netmap.h). */
	bool reach_patch;
};

/*
 * The node's endpoints, its home relay region (0: none yet), its disco key and whether its
 * NAT maps per destination, sent when any changes.
 */
struct ctrl_endpoints {
	unsigned n_endpoints;
	struct endpoint endpoints[NETMAP_MAX_ENDPOINTS];
	uint32_t home_region;
	bool has_disco_key;
	uint8_t disco_key[NETMAP_KEY_LEN];
	bool mapping_varies;
};

/*
 * A flow-log batch (proto/flowbatch.h) as it travels, base64 in "batch". The
 * session's message cap bounds it; the collector checks everything else.
 */
struct ctrl_flows {
	uint8_t *batch; /* owned; freed by ctrl_msg_clear */
	size_t len;
};

#define CTRL_FLOWS_RESULT_MAX 32
/*
 * The collector's answer to a batch: "stored" (durable), "replayed" (stored
 * before), a refusal ("bad_signature", "malformed", ...; the node drops the
 * batch) or "busy" (the node sends it again later).
 */
struct ctrl_flows_ack {
	uint64_t seq;
	char result[CTRL_FLOWS_RESULT_MAX];
};

struct ctrl_msg {
	enum ctrl_msg_type type;
	union {
		struct ctrl_register reg;
		struct ctrl_register_response reg_resp;
		struct ctrl_map_request map_req;
		struct ctrl_endpoints endpoints;
		struct ctrl_flows flows;
		struct ctrl_flows_ack flows_ack;
		struct netmap *netmap;      /* owned; freed by ctrl_msg_clear */
		struct netmap_delta *delta; /* owned; freed by ctrl_msg_clear */
		char error[CTRL_TEXT_MAX];
	};
};

/* Frees what m owns (netmap, delta) and zeroes it. */
void ctrl_msg_clear(struct ctrl_msg *m);
/*
 * JSON text of m, malloc'd, NUL-terminated; *ret_len without the NUL.
 * 0, -EINVAL (bad message: a field the decoder would reject), -EMSGSIZE (the
 * text would exceed CTRL_MSG_MAX), -ENOMEM.
 */
int ctrl_msg_encode(const struct ctrl_msg *m, char **ret, size_t *ret_len);
/*
 * Parses one message. 0, -EBADMSG (not JSON, wrong types, a value over its cap,
 * unknown "type"), -EMSGSIZE (len > CTRL_MSG_MAX), -ENOMEM. Unknown fields are
 * ignored (forward compatibility); missing required fields are -EBADMSG.
 */
int ctrl_msg_decode(const char *json, size_t len, struct ctrl_msg *ret);
const char *ctrl_msg_type_name(enum ctrl_msg_type t);

/*
 * Pre-encoded netmaps. A full netmap of a big tailnet is mostly peer records
 * that did not change since the last one, so trellis-control keeps each
 * node's record as text and only joins them. Both functions go through the
 * encoder of ctrl_msg_encode, so the result is byte for byte what it would
 * write for the same struct netmap.
 */

/* One pre-encoded piece of JSON text (not NUL-terminated). */
struct ctrl_json_piece {
	const char *p;
	size_t len;
};

/*
 * The JSON of one node record, exactly as ctrl_msg_encode writes it inside
 * "peers" or "self": malloc'd, NUL-terminated, sized to fit; *ret_len without
 * the NUL. 0, -EINVAL (a field the decoder would reject), -ENOMEM.
 */
int ctrl_node_encode(const struct netmap_node *n, char **ret, size_t *ret_len);
/*
 * The JSON of a CTRL_MSG_NETMAP message from its pre-encoded node records
 * (each from ctrl_node_encode), version (NULL or feed 0: none), relay map (relaymap_encode; NULL or
 * empty when the map has no regions), packet filter (ctrl_filter_encode; NULL or empty when the
 * tailnet has no policy), flow-log setting (NULL or not set: none) and what the node may open
 * (ctrl_reach_encode; NULL or empty: not said), malloc'd once at its final size. Same result
 * and errors as ctrl_msg_encode of the equivalent struct netmap.
 */
int ctrl_netmap_join(uint64_t seq, const struct netmap_version *version, const char *tailnet,
		     const struct ctrl_json_piece *self, const struct ctrl_json_piece *peers,
		     unsigned n_peers, const struct ctrl_json_piece *relay_map,
		     const struct ctrl_json_piece *filter, const struct netmap_flow_log *flow_log,
		     const struct ctrl_json_piece *may_open, char **ret, size_t *ret_len);
/* A packet filter as the value of "packet_filter" (a ctrl_netmap_join piece). */
int ctrl_filter_encode(const struct netmap_filter *f, char **ret, size_t *ret_len);
/* What the node may open as the value of "may_open" (a ctrl_netmap_join piece); -EINVAL. */
int ctrl_reach_encode(const struct netmap_reach *r, char **ret, size_t *ret_len);

#endif
