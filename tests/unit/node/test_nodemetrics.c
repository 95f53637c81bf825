/* SPDX-License-Identifier: MIT */
/*
 * The node's Prometheus text: every series once with its TYPE, the counters as given, a
 * reason label per drop reason of the engine, and the state as a one-hot gauge.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "node/nodemetrics.h"

static unsigned count_lines(const char *text, const char *prefix)
{
	unsigned n = 0;

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		n += !strncmp(p, prefix, strlen(prefix));
	return n;
}

static void test_render(void **state)
{
	struct nodemetrics_snapshot m = {.backend_state = "running",
					 .control_connected = true,
					 .peers = 3,
					 .peers_online = 2,
					 .peers_handshake = 1};
	char *text = NULL;
	size_t len = 0;

	(void)state;
	m.wg.handshakes_completed = 7;
	m.wg.rx_bytes = 1234;
	m.wg.tx_bytes = 5678;
	m.wg.drops[WG_DROP_RX_REPLAY] = 5;
	m.wg.drops[WG_DROP_QUEUE_FULL] = 9;
	m.ms.rx_junk = 11;
	m.filter.active = true;
	m.filter.drops[FILTER_DROP_NO_RULE] = 13;
	m.filter.ct_entries = 4;
	m.filter.reject_rate = 50;
	m.filter.rejects_sent = 17;
	m.filter.rejects_limited = 19;
	m.control.zstd_maps = 21;
	m.control.zstd_bytes_in = 82155;
	m.control.zstd_bytes_out = 385037;
	m.control.zstd_errors = 2;
	assert_int_equal(nodemetrics_render(&m, &text, &len), 0);
	assert_int_equal(strlen(text), len);
	assert_non_null(strstr(text, "\ntrellis_node_peers 3\n"));
	assert_non_null(strstr(text, "\ntrellis_node_peers_online 2\n"));
	assert_non_null(strstr(text, "\ntrellis_node_peers_with_handshake 1\n"));
	assert_non_null(strstr(text, "\ntrellis_node_handshakes_total 7\n"));
	assert_non_null(strstr(text, "\ntrellis_node_rx_bytes_total 1234\n"));
	assert_non_null(strstr(text, "\ntrellis_node_tx_bytes_total 5678\n"));
	assert_non_null(strstr(text, "\ntrellis_node_control_connected 1\n"));
	assert_non_null(strstr(text, "\ntrellis_node_netmaps_zstd_total 21\n"));
	assert_non_null(strstr(text, "\ntrellis_node_netmap_zstd_bytes_total 82155\n"));
	assert_non_null(strstr(text, "\ntrellis_node_netmap_zstd_decoded_bytes_total 385037\n"));
	assert_non_null(strstr(text, "\ntrellis_node_netmaps_zstd_refused_total 2\n"));
	assert_non_null(strstr(text, "\ntrellis_node_drops_total{reason=\"rx_replay\"} 5\n"));
	assert_non_null(strstr(text, "\ntrellis_node_drops_total{reason=\"queue_full\"} 9\n"));
	assert_non_null(strstr(text, "\ntrellis_node_drops_total{reason=\"udp_junk\"} 11\n"));
	assert_non_null(strstr(text, "\ntrellis_node_backend_state{state=\"running\"} 1\n"));
	assert_non_null(strstr(text, "\ntrellis_node_backend_state{state=\"stopped\"} 0\n"));
	/* One labelled series per engine drop reason, plus the path layer's six. */
	assert_int_equal(count_lines(text, "trellis_node_drops_total{"), WG_DROP_MAX + 6);
	assert_non_null(strstr(text, "\ntrellis_node_filter_drops_total{reason=\"no_rule\"} 13\n"));
	assert_non_null(strstr(text, "\ntrellis_node_filter_policy 1\n"));
	assert_non_null(strstr(text, "\ntrellis_node_filter_flows 4\n"));
	assert_int_equal(count_lines(text, "trellis_node_filter_drops_total{"), FILTER_DROP__MAX);
	assert_non_null(strstr(text, "\ntrellis_node_filter_reject_rate 50\n"));
	assert_non_null(strstr(text, "\ntrellis_node_filter_rejects_total 17\n"));
	assert_non_null(strstr(text, "\ntrellis_node_filter_rejects_rate_limited_total 19\n"));
	assert_int_equal(count_lines(text, "# TYPE trellis_node_drops_total counter"), 1);
	assert_int_equal(count_lines(text, "trellis_node_build_info{version=\""), 1);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_render),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
