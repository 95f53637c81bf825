/* SPDX-License-Identifier: MIT */
/*
 * Handshake log lines: the first handshake of a peer and one after a gap longer than the
 * reject time make a line, rekeys do not, and a storm is rate limited with the held-back
 * lines counted in the next one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/time.h"
#include "node/hslog.h"

#define S NSEC_PER_SEC
#define T0 (1795000000ULL * S) /* wall clock */

struct out {
	unsigned n;
	char last[HSLOG_LINE_MAX];
};

static const char *name_of(void *ctx, const uint8_t key[WG_KEY_LEN])
{
	static char buf[16];

	(void)ctx;
	if (key[0] == 0xff)
		return NULL; /* not in the netmap: the key stands in */
	snprintf(buf, sizeof(buf), "peer-%u", key[0]);
	return buf;
}

static void emit(void *ctx, const char *line)
{
	struct out *o = ctx;

	o->n++;
	snprintf(o->last, sizeof(o->last), "%s", line);
}

static void peer_set(struct wg_peer_info *p, uint8_t id, uint64_t hs_wall_ns)
{
	memset(p, 0, sizeof(*p));
	memset(p->public_key, id, WG_KEY_LEN);
	p->last_handshake_wall_ns = hs_wall_ns;
	assert_int_equal(endpoint_parse(&p->endpoint, "198.51.100.7:41641"), 0);
}

static void test_first_rekey_gap(void **state)
{
	struct wg_peer_info peers[2];
	struct wg_device_info info = {.n_peers = 2, .peers = peers};
	struct hslog *h = hslog_new();
	struct out o = {0};

	(void)state;
	assert_non_null(h);
	peer_set(&peers[0], 1, 0);
	peer_set(&peers[1], 2, 0);
	assert_int_equal(hslog_update(h, &info, 1 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, 0); /* no handshakes yet */

	peers[0].last_handshake_wall_ns = T0;
	assert_int_equal(hslog_update(h, &info, 2 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, 1);
	assert_string_equal(o.last,
			    "handshake with peer-1: first since start, via 198.51.100.7:41641");

	/* Unchanged, then a rekey two minutes later: nothing. */
	assert_int_equal(hslog_update(h, &info, 3 * S, name_of, emit, &o), 0);
	peers[0].last_handshake_wall_ns = T0 + 120 * S;
	assert_int_equal(hslog_update(h, &info, 122 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, 1);

	/* Back after its session expired: a line with the gap. */
	peers[0].last_handshake_wall_ns = T0 + 120 * S + 3725 * S;
	assert_int_equal(hslog_update(h, &info, 4000 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, 2);
	assert_string_equal(
	    o.last, "handshake with peer-1: again after 1h02m without one, via 198.51.100.7:41641");

	/* A peer gone from the engine and back is "first" again; an unknown one shows its key. */
	info.n_peers = 0;
	assert_int_equal(hslog_update(h, &info, 4001 * S, name_of, emit, &o), 0);
	info.n_peers = 2;
	peer_set(&peers[1], 0xff, T0 + 5000 * S);
	peers[1].endpoint.sa.sa_family = AF_UNSPEC;
	assert_int_equal(hslog_update(h, &info, 4002 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, 4);
	assert_string_equal(o.last, "handshake with //////////////////////////////////////////8=: "
				    "first since start, via an unknown endpoint");
	hslog_free(h);
}

static void test_rate_limit(void **state)
{
	enum { N = 40 };
	struct wg_peer_info peers[N];
	struct wg_device_info info = {.n_peers = N, .peers = peers};
	struct hslog *h = hslog_new();
	struct out o = {0};

	(void)state;
	for (unsigned i = 0; i < N; i++)
		peer_set(&peers[i], (uint8_t)(i + 1), T0);
	assert_int_equal(hslog_update(h, &info, 10 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, HSLOG_BURST);

	/* 12 s later two tokens are back; the first new line counts what was held. */
	peer_set(&peers[0], 100, T0 + 12 * S);
	peer_set(&peers[1], 101, T0 + 12 * S);
	peer_set(&peers[2], 102, T0 + 12 * S);
	assert_int_equal(hslog_update(h, &info, 22 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, HSLOG_BURST + 2);
	assert_string_equal(o.last, "handshake with peer-101: first since start, via "
				    "198.51.100.7:41641");
	hslog_free(h);
}

static void test_held_count(void **state)
{
	struct wg_peer_info peers[HSLOG_BURST + 3];
	struct wg_device_info info = {.n_peers = HSLOG_BURST + 3, .peers = peers};
	struct hslog *h = hslog_new();
	struct out o = {0};

	(void)state;
	for (unsigned i = 0; i < info.n_peers; i++)
		peer_set(&peers[i], (uint8_t)(i + 1), T0);
	assert_int_equal(hslog_update(h, &info, 1 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, HSLOG_BURST);
	info.n_peers = 1;
	peer_set(&peers[0], 200, T0 + 60 * S);
	assert_int_equal(hslog_update(h, &info, 61 * S, name_of, emit, &o), 0);
	assert_int_equal(o.n, HSLOG_BURST + 1);
	assert_string_equal(o.last, "handshake with peer-200: first since start, via "
				    "198.51.100.7:41641 (3 handshake lines held back)");
	hslog_free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_first_rekey_gap),
	    cmocka_unit_test(test_rate_limit),
	    cmocka_unit_test(test_held_count),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
