// SPDX-License-Identifier: MIT
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/version.h"
#include "control/metrics.h"

static const char *const drop_names[METRICS_DROP_MAX] = {
	"http_bad",	  "http_too_big", "handshake_timeout", "stream_bad",  "msg_too_big",
	"msg_bad",	  "protocol",	  "unknown_node",      "silent",      "slow_reader",
	"unauth_limit", "conn_limit",	  "io",		       "store_busy",  "source_limit",
	"handshake_rate", "fd_limit",	  "node_key_proof",    "node_key_taken", "pending_limit",
	"idle",
};

int metrics_render(const struct metrics_snapshot *m, char **ret, size_t *ret_len)
{
	const struct metrics_counters *c = m->ctr;
	uint64_t drops[METRICS_DROP_MAX];
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return -ENOMEM;
	/* The front end counts what happens before a connection is handed over. */
	memcpy(drops, c->drops, sizeof(drops));
	drops[METRICS_DROP_HTTP_BAD] += m->http.drops[HTTPD_DROP_BAD];
	drops[METRICS_DROP_HTTP_TOO_BIG] += m->http.drops[HTTPD_DROP_TOO_BIG];
	drops[METRICS_DROP_HANDSHAKE_TIMEOUT] += m->http.drops[HTTPD_DROP_TIMEOUT];
	drops[METRICS_DROP_UNAUTH_LIMIT] += m->http.drops[HTTPD_DROP_UNAUTH_LIMIT];
	drops[METRICS_DROP_CONN_LIMIT] += m->http.drops[HTTPD_DROP_CONN_LIMIT];
	drops[METRICS_DROP_IO] += m->http.drops[HTTPD_DROP_IO];
	drops[METRICS_DROP_SOURCE_LIMIT] += m->http.drops[HTTPD_DROP_SOURCE_LIMIT];
	drops[METRICS_DROP_HANDSHAKE_RATE] += m->http.drops[HTTPD_DROP_RATE];
	drops[METRICS_DROP_FD_LIMIT] += m->http.drops[HTTPD_DROP_FD_LIMIT];
	drops[METRICS_DROP_SLOW_READER] += m->http.drops[HTTPD_DROP_SLOW_READER];
	fprintf(f,
		"# TYPE trellis_control_build_info gauge\n"
		"trellis_control_build_info{version=\"%s\"} 1\n",
		trellis_version);
	fprintf(f, "# TYPE trellis_control_connections gauge\n"
		   "trellis_control_connections %zu\n"
		   "# TYPE trellis_control_connections_unauthenticated gauge\n"
		   "trellis_control_connections_unauthenticated %zu\n"
		   "# TYPE trellis_control_connections_total counter\n"
		   "trellis_control_connections_total %" PRIu64 "\n"
		   "# TYPE trellis_control_streams gauge\n"
		   "trellis_control_streams %zu\n"
		   "# TYPE trellis_control_nodes gauge\n"
		   "trellis_control_nodes %zu\n",
		m->http.conns, m->http.unauth, m->http.conns_total, m->streams, m->nodes);
	fprintf(f, "# TYPE trellis_control_registrations_total counter\n"
		   "trellis_control_registrations_total{result=\"ok\"} %" PRIu64 "\n"
		   "trellis_control_registrations_total{result=\"needs_auth\"} %" PRIu64 "\n"
		   "trellis_control_registrations_total{result=\"error\"} %" PRIu64 "\n",
		c->regs_ok, c->regs_needs_auth, c->regs_error);
	fprintf(f,
		"# TYPE trellis_control_machine_certs_sent_total counter\n"
		"trellis_control_machine_certs_sent_total %" PRIu64 "\n"
		"# TYPE trellis_control_machine_certs_pushed_total counter\n"
		"trellis_control_machine_certs_pushed_total %" PRIu64 "\n"
		"# TYPE trellis_control_machine_certs_auto_renewed_total counter\n"
		"trellis_control_machine_certs_auto_renewed_total{result=\"ok\"} %" PRIu64 "\n"
		"trellis_control_machine_certs_auto_renewed_total{result=\"failed\"} %" PRIu64 "\n",
		c->mcerts_sent, c->mcerts_pushed, c->mcerts_auto_renewed, c->mcerts_auto_failed);
	fprintf(f, "# TYPE trellis_control_messages_sent_total counter\n"
		   "trellis_control_messages_sent_total{type=\"netmap\"} %" PRIu64 "\n"
		   "trellis_control_messages_sent_total{type=\"delta\"} %" PRIu64 "\n"
		   "trellis_control_messages_sent_total{type=\"keepalive\"} %" PRIu64 "\n",
		c->netmaps, c->deltas, c->keepalives);
	fprintf(f,
		"# TYPE trellis_control_delta_may_open_total counter\n"
		"trellis_control_delta_may_open_total{form=\"list\"} %" PRIu64 "\n"
		"trellis_control_delta_may_open_total{form=\"patch\"} %" PRIu64 "\n",
		c->may_open_lists, c->may_open_patches);
	fprintf(f,
		"# TYPE trellis_control_netmaps_compressed_total counter\n"
		"trellis_control_netmaps_compressed_total %" PRIu64 "\n"
		"# TYPE trellis_control_netmap_bytes_total counter\n"
		"trellis_control_netmap_bytes_total{encoding=\"json\"} %" PRIu64 "\n"
		"trellis_control_netmap_bytes_total{encoding=\"zstd\"} %" PRIu64 "\n",
		c->netmaps_zstd, c->netmap_bytes_json, c->netmap_bytes_zstd);
	fprintf(f,
		"# TYPE trellis_control_resyncs_total counter\n"
		"trellis_control_resyncs_total %" PRIu64 "\n"
		"# TYPE trellis_control_deltas_superseded_total counter\n"
		"trellis_control_deltas_superseded_total %" PRIu64 "\n"
		"# TYPE trellis_control_node_writes_coalesced_total counter\n"
		"trellis_control_node_writes_coalesced_total %" PRIu64 "\n"
		"# TYPE trellis_control_resumes_total counter\n"
		"trellis_control_resumes_total{result=\"delta\"} %" PRIu64 "\n"
		"trellis_control_resumes_total{result=\"full\"} %" PRIu64 "\n"
		"# TYPE trellis_control_resume_feed_rows_total counter\n"
		"trellis_control_resume_feed_rows_total %" PRIu64 "\n"
		"# TYPE trellis_control_late_reads_total counter\n"
		"trellis_control_late_reads_total %" PRIu64 "\n"
		"# TYPE trellis_control_netmaps_waiting gauge\n"
		"trellis_control_netmaps_waiting %zu\n"
		"# TYPE trellis_control_netmaps_buffered gauge\n"
		"trellis_control_netmaps_buffered %zu\n"
		"# TYPE trellis_control_connection_output_max_bytes gauge\n"
		"trellis_control_connection_output_max_bytes %zu\n",
		c->resyncs, c->deltas_superseded, c->writes_coalesced, c->resumes,
		c->resumes_refused, c->resume_feed_rows, c->late_reads, m->netmaps_waiting,
		m->netmaps_buffered, c->out_max);
	fprintf(f, "# TYPE trellis_control_drops_total counter\n");
	for (int i = 0; i < METRICS_DROP_MAX; i++)
		fprintf(f, "trellis_control_drops_total{reason=\"%s\"} %" PRIu64 "\n",
			drop_names[i], drops[i]);
	fprintf(f, "# TYPE trellis_control_store_commits_total counter\n"
		   "trellis_control_store_commits_total %" PRIu64 "\n"
		   "# TYPE trellis_control_store_ops_total counter\n"
		   "trellis_control_store_ops_total %" PRIu64 "\n",
		m->store.commits, m->store.ops);
	/* Lists are made once and kept: makes stay few however many are served (crlhttp.h). */
	fprintf(f,
		"# TYPE trellis_control_crl_requests_total counter\n"
		"trellis_control_crl_requests_total{result=\"served\"} %" PRIu64 "\n"
		"trellis_control_crl_requests_total{result=\"unknown\"} %" PRIu64 "\n"
		"# TYPE trellis_control_crl_makes_total counter\n"
		"trellis_control_crl_makes_total{result=\"ok\"} %" PRIu64 "\n"
		"trellis_control_crl_makes_total{result=\"failed\"} %" PRIu64 "\n",
		m->crl.served, m->crl.unknown, m->crl.made, m->crl.failed);
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}
