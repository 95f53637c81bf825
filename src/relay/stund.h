/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_RELAY_STUND_H
#define TRELLIS_RELAY_STUND_H

/*
 * The relay's STUN Binding server (RFC 8489) on the loop: one UDP socket per
 * address family on the same port, each request answered with its source
 * address in XOR-MAPPED-ADDRESS. Malformed datagrams are counted, never
 * answered (an answer to garbage only helps reflection attacks).
 */

#include <stdint.h>
#include <stdio.h>

struct loop;
struct stund;

struct stund_stats {
	uint64_t requests, responses, errors_sent, malformed;
};

/*
 * Binds port on every IPv4 and IPv6 address (IPv6 only if the host has it).
 * 0, or -errno (logged) when no family could bind.
 */
int stund_new(struct loop *loop, uint16_t port, struct stund **ret);
void stund_free(struct stund *d);
/* The bound port (port 0 picks one: tests). */
uint16_t stund_port(const struct stund *d);
void stund_stats_get(const struct stund *d, struct stund_stats *ret);
/* Prometheus text (trellis_relay_stun_*) appended to f. Accepts NULL (nothing). */
void stund_metrics_write(const struct stund *d, FILE *f);

#endif
