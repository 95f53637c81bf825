/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/version.h"
#include "node/nodemetrics.h"

/* Label values of enum wg_drop_reason, in its order. */
static const char *const wg_drop_names[] = {
    "rx_short",
    "rx_type",
    "rx_mac1",
    "rx_cookie_sent",
    "rx_ratelimit",
    "rx_handshake",
    "rx_replayed_handshake",
    "rx_unknown_index",
    "rx_key_expired",
    "rx_decrypt",
    "rx_replay",
    "rx_bad_ip",
    "rx_allowedips",
    "rx_cookie",
    "tx_bad_ip",
    "tx_no_peer",
    "tx_no_endpoint",
    "tx_staged_full",
    "tx_no_key",
    "tx_too_big",
    "queue_full",
};
_Static_assert(sizeof(wg_drop_names) / sizeof(wg_drop_names[0]) == WG_DROP_MAX,
	       "a name for every enum wg_drop_reason");

static const char *const states[] = {"stopped", "needs_login", "starting", "running"};

int nodemetrics_render(const struct nodemetrics_snapshot *m, char **ret, size_t *ret_len)
{
	char *buf = NULL;
	size_t len = 0, i;
	uint64_t box = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return -ENOMEM;
	fprintf(f,
		"# TYPE trellis_node_build_info gauge\n"
		"trellis_node_build_info{version=\"%s\"} 1\n",
		trellis_version);
	fprintf(f, "# TYPE trellis_node_backend_state gauge\n");
	for (i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		fprintf(f, "trellis_node_backend_state{state=\"%s\"} %d\n", states[i],
			m->backend_state && !strcmp(m->backend_state, states[i]));
	fprintf(f,
		"# TYPE trellis_node_control_connected gauge\n"
		"trellis_node_control_connected %d\n"
		"# TYPE trellis_node_peers gauge\n"
		"trellis_node_peers %u\n"
		"# TYPE trellis_node_peers_online gauge\n"
		"trellis_node_peers_online %u\n"
		"# TYPE trellis_node_peers_with_handshake gauge\n"
		"trellis_node_peers_with_handshake %u\n",
		m->control_connected, m->peers, m->peers_online, m->peers_handshake);
	/* Compressed full netmaps (docs/control-protocol.md): taken, their bytes, refused. */
	fprintf(f,
		"# TYPE trellis_node_netmaps_zstd_total counter\n"
		"trellis_node_netmaps_zstd_total %" PRIu64 "\n"
		"# TYPE trellis_node_netmap_zstd_bytes_total counter\n"
		"trellis_node_netmap_zstd_bytes_total %" PRIu64 "\n"
		"# TYPE trellis_node_netmap_zstd_decoded_bytes_total counter\n"
		"trellis_node_netmap_zstd_decoded_bytes_total %" PRIu64 "\n"
		"# TYPE trellis_node_netmaps_zstd_refused_total counter\n"
		"trellis_node_netmaps_zstd_refused_total %" PRIu64 "\n",
		m->control.zstd_maps, m->control.zstd_bytes_in, m->control.zstd_bytes_out,
		m->control.zstd_errors);
	fprintf(f,
		"# TYPE trellis_node_handshakes_total counter\n"
		"trellis_node_handshakes_total %" PRIu64 "\n"
		"# TYPE trellis_node_cookie_replies_sent_total counter\n"
		"trellis_node_cookie_replies_sent_total %" PRIu64 "\n"
		"# TYPE trellis_node_rx_packets_total counter\n"
		"trellis_node_rx_packets_total %" PRIu64 "\n"
		"# TYPE trellis_node_rx_bytes_total counter\n"
		"trellis_node_rx_bytes_total %" PRIu64 "\n"
		"# TYPE trellis_node_tx_packets_total counter\n"
		"trellis_node_tx_packets_total %" PRIu64 "\n"
		"# TYPE trellis_node_tx_bytes_total counter\n"
		"trellis_node_tx_bytes_total %" PRIu64 "\n"
		"# TYPE trellis_node_relayed_packets_total counter\n"
		"trellis_node_relayed_packets_total{dir=\"tx\"} %" PRIu64 "\n"
		"trellis_node_relayed_packets_total{dir=\"rx\"} %" PRIu64 "\n",
		m->wg.handshakes_completed, m->wg.cookies_sent, m->wg.rx_packets, m->wg.rx_bytes,
		m->wg.tx_packets, m->wg.tx_bytes, m->ms.tx_relay, m->ms.rx_relay);
	fprintf(f, "# TYPE trellis_node_drops_total counter\n");
	for (i = 0; i < WG_DROP_MAX; i++)
		fprintf(f, "trellis_node_drops_total{reason=\"%s\"} %" PRIu64 "\n",
			wg_drop_names[i], m->wg.drops[i]);
	for (i = 0; i < MAGICSOCK_BOX_MAX; i++)
		box += m->ms.box_drops[i];
	fprintf(f,
		"trellis_node_drops_total{reason=\"udp_junk\"} %" PRIu64 "\n"
		"trellis_node_drops_total{reason=\"mailbox_full\"} %" PRIu64 "\n"
		"trellis_node_drops_total{reason=\"tx_no_path\"} %" PRIu64 "\n"
		"trellis_node_drops_total{reason=\"relay_unknown_sender\"} %" PRIu64 "\n"
		"trellis_node_drops_total{reason=\"tun_too_big\"} %" PRIu64 "\n"
		"trellis_node_drops_total{reason=\"udp_too_big\"} %" PRIu64 "\n",
		m->ms.rx_junk, box, m->ms.tx_no_path, m->ms.rx_relay_unknown, m->dev.too_big_tun,
		m->dev.too_big_udp);
	/* The packet filter (docs/localapi.md "filter"). */
	fprintf(f,
		"# TYPE trellis_node_filter_policy gauge\n"
		"trellis_node_filter_policy %d\n"
		"# TYPE trellis_node_filter_flows gauge\n"
		"trellis_node_filter_flows %u\n"
		"# TYPE trellis_node_filter_flows_evicted_total counter\n"
		"trellis_node_filter_flows_evicted_total %" PRIu64 "\n"
		"# TYPE trellis_node_filter_fragments_passed_total counter\n"
		"trellis_node_filter_fragments_passed_total %" PRIu64 "\n"
		"# TYPE trellis_node_filter_drops_total counter\n",
		m->filter.active, m->filter.ct_entries, m->filter.ct_evicted, m->filter.fragments);
	for (i = 0; i < FILTER_DROP__MAX; i++)
		fprintf(f, "trellis_node_filter_drops_total{reason=\"%s\"} %" PRIu64 "\n",
			filter_drop_name(i), m->filter.drops[i]);
	/* Replies to refused packets (--filter-reject): built, and held back by the rate. */
	fprintf(f,
		"# TYPE trellis_node_filter_reject_rate gauge\n"
		"trellis_node_filter_reject_rate %u\n"
		"# TYPE trellis_node_filter_rejects_total counter\n"
		"trellis_node_filter_rejects_total %" PRIu64 "\n"
		"# TYPE trellis_node_filter_rejects_rate_limited_total counter\n"
		"trellis_node_filter_rejects_rate_limited_total %" PRIu64 "\n",
		m->filter.reject_rate, m->filter.rejects_sent, m->filter.rejects_limited);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}
