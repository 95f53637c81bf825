/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_METRICS_H
#define TRELLIS_CONTROL_METRICS_H

/*
 * trellis-control's counters and their Prometheus text (GET /metrics). The
 * modules count into one struct metrics_counters; metrics_render turns a
 * snapshot of it, the front end's and the store's statistics and a few
 * gauges into the exposition text. Names and labels are an interface
 * (dashboards): extend, don't rename.
 */

#include <stddef.h>
#include <stdint.h>

#include "control/crlhttp.h"
#include "control/store.h"
#include "net/httpd.h"

/* Why a connection or message was dropped (trellis_control_drops_total{reason}). */
enum metrics_drop {
	METRICS_DROP_HTTP_BAD,
	METRICS_DROP_HTTP_TOO_BIG,
	METRICS_DROP_HANDSHAKE_TIMEOUT,
	METRICS_DROP_STREAM_BAD,
	METRICS_DROP_MSG_TOO_BIG,
	METRICS_DROP_MSG_BAD,
	METRICS_DROP_PROTOCOL,
	METRICS_DROP_UNKNOWN_NODE,
	METRICS_DROP_SILENT,
	METRICS_DROP_SLOW_READER,
	METRICS_DROP_UNAUTH_LIMIT,
	METRICS_DROP_CONN_LIMIT,
	METRICS_DROP_IO,
	METRICS_DROP_STORE_BUSY,
	METRICS_DROP_SOURCE_LIMIT,   /* connections per source */
	METRICS_DROP_HANDSHAKE_RATE, /* upgrades per source over the bucket */
	METRICS_DROP_FD_LIMIT,       /* out of descriptors at accept */
	METRICS_DROP_NODE_KEY_PROOF, /* register without a valid node key proof */
	METRICS_DROP_NODE_KEY_TAKEN, /* register with another node's node key */
	METRICS_DROP_PENDING_LIMIT,  /* interactive registration over a pending cap or rate */
	METRICS_DROP_IDLE,           /* authenticated, but no register or map_request in time */
	METRICS_DROP_MAX,
};

struct metrics_counters {
	uint64_t regs_ok, regs_needs_auth, regs_error, netmaps, deltas, keepalives;
	uint64_t resyncs, deltas_superseded, writes_coalesced;
	/* full netmaps sent zstd-compressed (of netmaps), and the bytes of full netmaps by form */
	uint64_t netmaps_zstd, netmap_bytes_json, netmap_bytes_zstd;
	/* map_request with a held netmap: answered with a delta, or with a full map after all */
	uint64_t resumes, resumes_refused;
	uint64_t resume_feed_rows; /* change feed rows resumes read (control/feedscan.h) */
	/* deltas that told a node what it may open: the whole list, or a patch of it */
	uint64_t may_open_lists, may_open_patches;
	uint64_t late_reads; /* a deadline found the node's bytes waiting: we were behind */
	uint64_t mcerts_sent; /* renewed machine certificates sent in register responses */
	uint64_t mcerts_pushed; /* ... and queued for a node's map stream (mapper_node_mcert) */
	uint64_t mcerts_auto_renewed, mcerts_auto_failed; /* serve --machine-cert-auto-renew */
	size_t out_max; /* most bytes one connection had buffered */
	uint64_t drops[METRICS_DROP_MAX];
};

struct metrics_snapshot {
	const struct metrics_counters *ctr;
	struct httpd_stats http; /* connections and the front end's drops */
	struct store_stats store;
	struct crlhttp_stats crl; /* GET /crl/NAME.crl (crlhttp.h) */
	size_t streams;          /* map streams */
	size_t nodes;
	size_t netmaps_waiting;  /* full netmaps waiting for their connection to drain */
	size_t netmaps_buffered; /* full netmaps in our buffers */
};

/* The exposition text, malloc'd. 0 or -ENOMEM. */
int metrics_render(const struct metrics_snapshot *m, char **ret, size_t *ret_len);

#endif
