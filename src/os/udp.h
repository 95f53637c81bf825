/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OS_UDP_H
#define TRELLIS_OS_UDP_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/endpoint.h"
#include "base/pkt.h"

/* The most datagrams one recvmmsg/sendmmsg call carries (stack arrays, no allocation). */
#define UDP_BATCH_MAX 64
/* Datagrams in one UDP_SEGMENT message (the kernel's UDP_MAX_SEGMENTS is 64 or more). */
#define UDP_GSO_MAX 64
/*
 * UDP GRO on receive: messages per recvmmsg, each with a spill area that takes what a
 * coalesced datagram holds beyond the packet's own buffer (a UDP payload is under 64 KiB),
 * and the most datagrams the kernel coalesces into one (UDP_GRO_CNT_MAX).
 */
#define UDP_GRO_MSGS 8
#define UDP_GRO_SPILL 65536
#define UDP_GRO_SEGS_MAX 64

/* One socket per address family on the same port (either fd may be -1 if that family is off). */
struct udp_socks {
	int fd4;
	int fd6;
	uint16_t port;
	/*
	 * UDP GSO (UDP_SEGMENT) per family: found at open, turned off (atomically, by any
	 * sender) if the kernel fails a segmented send with EIO (no checksum offload on the
	 * route's device).
	 */
	uint8_t gso4, gso6;
	/* UDP GRO per family (set at open when offloads are allowed): see udp_recv_batch. */
	uint8_t gro4, gro6;
};

/*
 * Binds an IPv4 and an IPv6 (IPV6_V6ONLY) UDP socket on `port` (0: the kernel picks one
 * for IPv4 and IPv6 gets the same, retrying a few times if it is taken), non-blocking,
 * close-on-exec, with SO_MARK = fwmark when fwmark != 0 and large buffers.
 * A host without IPv6 gets fd6 = -1. 0 or -errno (nothing left open on failure).
 */
int udp_socks_open(struct udp_socks *ret, uint16_t port, uint32_t fwmark);
void udp_socks_close(struct udp_socks *s);
/*
 * Whether sockets opened from now on use UDP GSO and GRO when the kernel has them
 * (default: yes). Process-wide: trellisd --no-offload turns them off.
 */
void udp_gso_allow(bool on);
int udp_socks_set_fwmark(struct udp_socks *s, uint32_t fwmark);
/* Turns UDP GRO off on both sockets (a reader that cannot cut coalesced messages). */
void udp_socks_gro_off(struct udp_socks *s);

/*
 * The ancillary data of one datagram: a source address (IP_PKTINFO, IPV6_PKTINFO) in or
 * out, and when sending several datagrams in one message, their size (UDP_SEGMENT).
 */
union udp_cmsg {
	/* The segment size is a uint16_t on send (UDP_SEGMENT), an int on receive (UDP_GRO). */
	uint8_t buf[CMSG_SPACE(sizeof(struct in6_pktinfo)) + CMSG_SPACE(sizeof(int))];
	struct cmsghdr align;
};

/* Into ret: ep->src, if set, as a message's control data; its length, 0 if none. */
size_t udp_src_encode(const struct endpoint *ep, union udp_cmsg *ret);
/* From a received message's control data into ep->src (none if it has no source). */
void udp_src_decode(const struct msghdr *mh, struct endpoint *ep);

/*
 * Where the messages of one udp_recv_batch on a GRO socket continue beyond their packets'
 * buffers, and what each turned out to hold: a coalesced message is several datagrams of
 * seg bytes (the last may be shorter), len in all, the first bytes in the packet's buffer.
 */
struct udp_gro_rx {
	uint8_t *spill[UDP_GRO_MSGS]; /* UDP_GRO_SPILL bytes each */
	uint32_t len[UDP_GRO_MSGS];   /* out: bytes of the message */
	uint16_t seg[UDP_GRO_MSGS];   /* out: its datagrams' size; 0 for a single datagram */
};

/*
 * recvmmsg into pkts[i]->data with capacity cap - headroom; sets len and ep (the source,
 * and in ep.src the local address it came to). Datagrams that were truncated or larger
 * than the buffer are dropped and counted in *ret_dropped.
 * Returns the count (0 if nothing is waiting) or -errno. At most UDP_BATCH_MAX per call.
 * The received packets are pkts[0..count); the array may be reordered (buffers of dropped
 * datagrams move behind them) but always holds the same pointers.
 * A socket with UDP GRO on needs gro: without it, coalesced messages are dropped (counted).
 * With gro, at most UDP_GRO_MSGS messages, each continuing
 * in gro->spill (reordered with pkts) and described in gro->len and gro->seg; pkts[i]->len
 * is then the part in the packet's buffer, and udp_gro_split cuts the message up.
 */
int udp_recv_batch(int fd, struct pkt **pkts, unsigned n, struct udp_gro_rx *gro,
		   unsigned *ret_dropped);
/*
 * Cuts coalesced message i of a udp_recv_batch into its datagrams: the first stays in
 * p (its len becomes seg), the next ones are copied into extra[0..n_extra) with p's
 * endpoint. Returns how many extra packets it used; datagrams beyond n_extra are
 * counted in *ret_lost.
 */
unsigned udp_gro_split(struct pkt *p, const struct udp_gro_rx *gro, unsigned i, struct pkt **extra,
		       unsigned n_extra, unsigned *ret_lost);
/* Sources udp_send_batch left out because the kernel refused them. */
struct udp_stale {
	unsigned n;		 /* packets sent from the kernel's choice instead */
	struct endpoint_src src; /* one of the refused sources (for the caller to forget) */
};

/*
 * sendmmsg each packet to pkt->ep on the socket of its family, in as few syscalls as
 * possible, from pkt->ep.src if set. With GSO, a run of consecutive packets to the same
 * endpoint from the same source, of one size (the last may be shorter), is one message
 * the kernel cuts (UDP_SEGMENT, at most UDP_GSO_MAX packets and 64 KiB). A source the kernel
 * refuses (the address was removed from the host) is left out and the packet sent from the kernel's
 * choice, told in *ret_stale (may be NULL). Returns how many were handed to the kernel (the rest
 * failed and are counted as sent-errors by the caller), or -errno if none were. Never blocks: when
 * a socket buffer is full (EAGAIN/ENOBUFS) the rest of that run of packets is dropped, as a full
 * router queue would; a packet the kernel refuses (no route, bad address, firewall) is skipped and
 * the others are still sent.
 */
int udp_send_batch(struct udp_socks *s, struct pkt **pkts, unsigned n, struct udp_stale *ret_stale);

#endif
