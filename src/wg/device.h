/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_WG_DEVICE_H
#define TRELLIS_WG_DEVICE_H

/*
 * A WireGuard device as a protocol engine: packets and time go in, packets and
 * a next deadline come out. It never touches a socket, a TUN device or the
 * clock; the caller (src/node) owns all I/O and threads.
 *
 * Threading: every entry point may be called from any thread; the device
 * serialises its state with one internal lock, taken once per batch, never per
 * packet. Callbacks in struct wg_device_ops are never invoked with that lock
 * held (endpoint_kept, a question, excepted), so they may call back into the device.
 *
 * Data path:
 *   TX: wg_device_tx(plaintext from TUN)  -> [wg_send_encrypt on a worker]   -> wg_send_finish   -> ops.udp_send
 *   RX: wg_device_rx(datagrams from UDP)  -> [wg_receive_decrypt on a worker] -> wg_receive_finish -> ops.tun_write
 * Without encrypt_submit/decrypt_submit the bracketed step runs inline.
 * Handshake, cookie and keepalive messages are produced by the engine and
 * leave through ops.udp_send as well.
 *
 * Endpoints are opaque to the engine: an address or a handle (base/endpoint.h)
 * that the path layer below (src/net/magicsock.h) maps to an address. The engine
 * stores the latest authenticated source as the peer's endpoint (roaming) and
 * sends there, whichever form it has, unless the path layer keeps the peer's
 * handle (ops.endpoint_kept).
 */

#include <stdint.h>

#include "base/pkt.h"
#include "wg/config.h"

struct wg_device;

struct wg_device_ops {
	void *ctx;
	/* Datagrams for the wire, destination in pkt->ep. Ownership passes to the callee. */
	void (*udp_send)(void *ctx, struct pkt **pkts, unsigned n);
	/* Decrypted, source-checked IP packets for the TUN device. Ownership passes. */
	void (*tun_write)(void *ctx, struct pkt **pkts, unsigned n);
	/*
	 * Optional parallel crypto. The callee runs wg_send_encrypt / wg_receive_decrypt
	 * on each packet on any thread, then calls wg_send_finish / wg_receive_finish
	 * with the packets in the order they were submitted (that keeps per-peer order).
	 * Must not block; drop (pkt_free after wg_pkt_release) when full.
	 */
	void (*encrypt_submit)(void *ctx, struct pkt **pkts, unsigned n);
	void (*decrypt_submit)(void *ctx, struct pkt **pkts, unsigned n);
	/* Optional: the earliest timer deadline moved earlier than last reported. */
	void (*timers_wake)(void *ctx);
	/* Optional: CLOCK_REALTIME source for TAI64N and "latest handshake"; tests fake it. */
	uint64_t (*wall_ns)(void *ctx);
	/*
	 * Optional: a handshake completed since the last call (one call per batch, however
	 * many); wg_device_info_get says with which peers. For logs and status, not per packet.
	 */
	void (*handshake_done)(void *ctx);
	/*
	 * Optional: whether the peer whose endpoint is the handle `cur` keeps it when an
	 * authenticated packet comes from another source (an address, or another handle):
	 * true turns roaming off for that peer (its path layer follows it instead). Asked
	 * only when the endpoint would move, under the device lock: must not call into the
	 * device. NULL: every endpoint roams.
	 */
	bool (*endpoint_kept)(void *ctx, const struct endpoint *cur);
};

/* Why packets were dropped; exported as counters, never logged per packet. */
enum wg_drop_reason {
	WG_DROP_RX_SHORT,          /* shorter than its message type needs, or wrong size */
	WG_DROP_RX_TYPE,           /* unknown message type or reserved bytes set */
	WG_DROP_RX_MAC1,           /* handshake with a bad mac1 */
	WG_DROP_RX_COOKIE_SENT,    /* under load without valid mac2: cookie reply sent instead */
	WG_DROP_RX_RATELIMIT,      /* handshake over the per-source rate limit */
	WG_DROP_RX_HANDSHAKE,      /* handshake that failed to authenticate or decode */
	WG_DROP_RX_REPLAYED_HANDSHAKE, /* initiation with a stale TAI64N timestamp */
	WG_DROP_RX_UNKNOWN_INDEX,  /* receiver index not ours */
	WG_DROP_RX_KEY_EXPIRED,    /* keypair past REJECT_AFTER_TIME / MESSAGES */
	WG_DROP_RX_DECRYPT,        /* AEAD authentication failed */
	WG_DROP_RX_REPLAY,         /* counter replayed or too old */
	WG_DROP_RX_BAD_IP,         /* decrypted payload is not a well-formed IPv4/IPv6 packet */
	WG_DROP_RX_ALLOWEDIPS,     /* inner source address not allowed for that peer */
	WG_DROP_RX_COOKIE,         /* cookie reply that does not decrypt or was not expected */
	WG_DROP_TX_BAD_IP,         /* from TUN: not IPv4/IPv6 or truncated */
	WG_DROP_TX_NO_PEER,        /* no peer's allowed IPs cover the destination */
	WG_DROP_TX_NO_ENDPOINT,    /* peer has no endpoint yet */
	WG_DROP_TX_STAGED_FULL,    /* waiting for a handshake and the staging queue is full */
	WG_DROP_TX_NO_KEY,         /* staged packets expired without a session */
	WG_DROP_TX_TOO_BIG,        /* from TUN: over WG_MTU_MAX or too large for its buffer */
	WG_DROP_QUEUE_FULL,        /* crypto queue full (counted by the caller via wg_device_count_drop) */
	WG_DROP_MAX
};

struct wg_device_stats {
	uint64_t drops[WG_DROP_MAX];
	uint64_t rx_packets, rx_bytes;   /* authenticated data received (inner bytes) */
	uint64_t tx_packets, tx_bytes;   /* data sent (wire bytes) */
	uint64_t handshakes_completed;
	uint64_t cookies_sent;
	unsigned peers;
};

/* pool: where the engine takes packets it originates (handshakes, cookie replies, keepalives). */
struct wg_device *wg_device_new(const struct wg_device_ops *ops, struct pkt_pool *pool);
/* Accepts NULL. Waits for nothing: the caller has stopped all threads that use the device. */
void wg_device_free(struct wg_device *dev);

/* Applies a UAPI "set" atomically: 0, or -errno and nothing changed. */
int wg_device_apply(struct wg_device *dev, const struct wg_device_cfg *cfg, uint64_t now_ns);
/* A snapshot for UAPI "get"; free with wg_device_info_free. 0 or -ENOMEM. */
int wg_device_info_get(struct wg_device *dev, struct wg_device_info **ret);
/* The port and fwmark last applied (what the caller's sockets must use). */
uint16_t wg_device_listen_port(struct wg_device *dev);
uint32_t wg_device_fwmark(struct wg_device *dev);
/* The caller bound port 0 and the kernel chose this one. */
void wg_device_set_listen_port(struct wg_device *dev, uint16_t port);
/*
 * The largest tunnel MTU: a full-size packet and the 32 bytes of a data message (header and
 * tag) fill one UDP datagram over IPv4 (65535 - 20 - 8). IPv6 would carry 20 bytes more; one
 * limit for both keeps every peer reachable whatever its address family.
 */
#define WG_MTU_MAX (65535 - 20 - 8 - 32)

/*
 * The tunnel interface's MTU, followed by the caller as it changes. Data messages are padded
 * to a multiple of 16 but never past it (whitepaper 5.4.6), so a full-size packet does not
 * grow beyond what the underlay was sized for. 0 (the default) pads to 16 without a cap.
 */
void wg_device_set_mtu(struct wg_device *dev, uint32_t mtu);
/*
 * `src` is no longer an address of this host: every peer endpoint that would send from it
 * lets the kernel choose instead, until the peer's next packet teaches a source again.
 */
void wg_device_forget_src(struct wg_device *dev, const struct endpoint_src *src);
void wg_device_stats_get(struct wg_device *dev, struct wg_device_stats *ret);
void wg_device_count_drop(struct wg_device *dev, enum wg_drop_reason reason, unsigned n);

/* Plaintext IP packets from TUN; the device takes ownership of all n. */
void wg_device_tx(struct wg_device *dev, struct pkt **pkts, unsigned n, uint64_t now_ns);
/* Datagrams from UDP (pkt->ep = source address or handle); the device takes ownership of all n. */
void wg_device_rx(struct wg_device *dev, struct pkt **pkts, unsigned n, uint64_t now_ns);

/*
 * The plaintext length a data message of len bytes is padded to: the next multiple of 16,
 * capped at mtu (0 = no cap). A packet longer than the MTU (the caller let it through) is
 * padded as if its last MTU-sized unit were the packet, so the cap never truncates.
 */
uint32_t wg_send_padded_len(uint32_t len, uint32_t mtu);
/* Worker steps: pure crypto on one packet, no lock, no allocation. Result in pkt->err. */
void wg_send_encrypt(struct pkt *pkt);
void wg_receive_decrypt(struct pkt *pkt);
/* In submission order, after the worker step. Take ownership of the packets. */
void wg_send_finish(struct wg_device *dev, struct pkt **pkts, unsigned n, uint64_t now_ns);
void wg_receive_finish(struct wg_device *dev, struct pkt **pkts, unsigned n, uint64_t now_ns);
/* Drops the engine's references held by a packet (for callers that discard one). */
void wg_pkt_release(struct pkt *pkt);
/* The same for n packets, one atomic operation per run of one peer and keypair. */
void wg_pkt_release_batch(struct pkt **pkts, unsigned n);

/* Runs due timers (handshake retry, keepalives, rekey, key zeroing); returns the next deadline
 * in ns (TIME_NEVER if none). */
uint64_t wg_device_timers_run(struct wg_device *dev, uint64_t now_ns);

/* Test hook: treat every handshake as arriving under load (cookie reply path). */
void wg_device_force_under_load(struct wg_device *dev, int on);

#endif
