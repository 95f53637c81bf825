/* SPDX-License-Identifier: MIT */
/*
 * The relay client against an in-process relay server (relay_test_server.h, built from
 * src/proto/relay's server end) on loopback: two nodes, each a magicsock with a relay
 * client, reach each other through the relay by their handles; the home connection
 * says it is preferred; a peer homed in another region gets a connection of its own,
 * closed again once idle; a new node key reconnects; an empty map closes everything; a
 * relay back after an outage is dialled at once when told (relayclient_retry_now); the
 * node key's public half is derived once, not per connection. And the home choice by STUN
 * round trip, with its hysteresis, as a table.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>

#include <cmocka.h>

#include "base/pkt.h"
#include "base/time.h"
#include "base/util.h"
#include "net/magicsock.h"
#include "net/relayclient.h"
#include "../x25519_count.h"
#include "relay_test_server.h"

struct tnode {
	struct magicsock *ms;
	struct relayclient *rc;
	struct pkt_pool *pool;
	uint8_t priv[32], pub[32];
	struct endpoint peer; /* the handle of the other node */
	struct pkt *rx[16];
	unsigned n_rx;
};

/* Short, so that the test sees a connection close when idle; long enough for its steps. */
#define IDLE_NS (2 * NSEC_PER_SEC)

static struct trs T;
static struct tnode A, B;

/* A's X25519 operations are counted (x25519_count.h). */
enum { WHO_A };

static int x25519_count_who(const uint8_t priv[X25519_KEY_LEN])
{
	return memcmp(priv, A.priv, X25519_KEY_LEN) ? -1 : WHO_A;
}
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

static void kick(void)
{
	pthread_mutex_lock(&mu);
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void n_wg_rx(void *ctx, struct pkt **pkts, unsigned n, uint64_t now_ns)
{
	struct tnode *nd = ctx;

	(void)now_ns;
	pthread_mutex_lock(&mu);
	for (unsigned i = 0; i < n; i++) {
		if (nd->n_rx < ARRAY_SIZE(nd->rx))
			nd->rx[nd->n_rx++] = pkts[i];
		else
			pkt_free(&pkts[i], 1);
	}
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void n_wire_send(void *ctx, struct pkt **pkts, unsigned n)
{
	(void)ctx;
	pkt_free(pkts, n); /* no UDP here: the relay is the only path */
}

static void n_changed(void *ctx)
{
	(void)ctx;
	kick();
}

/* Waits (bounded) until pred holds; every state change and arrival re-checks it. */
static bool wait_for_ms(bool (*pred)(void), unsigned ms)
{
	uint64_t end = time_now_ns() + ms * NSEC_PER_MSEC;
	bool ok;

	pthread_mutex_lock(&mu);
	while (!(ok = pred()) && time_now_ns() < end) {
		struct timespec ts;

		/* Server-side changes do not signal: look again every 20 ms as well. */
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&cv, &mu, &ts);
	}
	pthread_mutex_unlock(&mu);
	return ok;
}

static bool wait_for(bool (*pred)(void))
{
	return wait_for_ms(pred, 10000);
}

static struct netmap_relay_map map_two(void)
{
	struct netmap_relay_map rm = {.n_regions = 2};

	for (unsigned i = 0; i < 2; i++) {
		struct netmap_relay_region *g = &rm.regions[i];

		g->id = i + 1;
		snprintf(g->code, sizeof(g->code), i ? "two" : "one");
		g->n_nodes = 1;
		snprintf(g->nodes[0].name, sizeof(g->nodes[0].name), "r%u", i + 1);
		g->nodes[0].has_ipv4 = true;
		g->nodes[0].ipv4[0] = 127;
		g->nodes[0].ipv4[3] = 1;
		g->nodes[0].relay_port = T.port[i];
		g->nodes[0].stun_port = 0; /* no STUN: the home is the first region */
	}
	return rm;
}

static void node_up_backoff(struct tnode *n, uint64_t backoff_min_ns)
{
	struct magicsock_ops mops = {.ctx = n, .wg_rx = n_wg_rx, .wire_send = n_wire_send};
	struct relayclient_cfg cfg = {
	    .changed = n_changed, .ctx = n, .idle_ns = IDLE_NS, .backoff_min_ns = backoff_min_ns};

	memset(n, 0, sizeof(*n));
	assert_int_equal(x25519_private_generate(n->priv), 0);
	assert_int_equal(x25519_public_from_private(n->pub, n->priv), 0);
	n->ms = magicsock_new(&mops);
	assert_non_null(n->ms);
	n->pool = pkt_pool_new(16);
	assert_non_null(n->pool);
	cfg.ms = n->ms;
	assert_int_equal(relayclient_new(&cfg, &n->rc), 0);
}

static void node_up(struct tnode *n)
{
	node_up_backoff(n, 0);
}

static void node_down(struct tnode *n)
{
	/* Stopped first, so nothing more arrives; its buffers come home before it goes. */
	relayclient_stop(n->rc);
	pthread_mutex_lock(&mu);
	pkt_free(n->rx, n->n_rx);
	n->n_rx = 0;
	pthread_mutex_unlock(&mu);
	relayclient_free(n->rc);
	magicsock_free(n->ms);
	pkt_pool_free(n->pool);
}

static enum relayclient_conn_state state_of(struct tnode *n, uint32_t region, bool *ret_home)
{
	struct relayclient_status st;

	relayclient_status_get(n->rc, &st);
	for (unsigned i = 0; i < st.n_regions; i++) {
		if (st.regions[i].id == region) {
			if (ret_home)
				*ret_home = st.regions[i].home;
			return st.regions[i].state;
		}
	}
	return RELAYCLIENT_IDLE;
}

static bool both_home(void)
{
	bool pa = false, pb = false;
	unsigned na, nb;

	pthread_mutex_lock(&T.mu);
	na = trs_clients_with_key(&T, A.pub, &pa);
	nb = trs_clients_with_key(&T, B.pub, &pb);
	pthread_mutex_unlock(&T.mu);
	return relayclient_home(A.rc) == 1 && relayclient_home(B.rc) == 1 &&
	       state_of(&A, 1, NULL) == RELAYCLIENT_CONNECTED &&
	       state_of(&B, 1, NULL) == RELAYCLIENT_CONNECTED && na == 1 && nb == 1 && pa && pb;
}

static bool b_got_one(void)
{
	return B.n_rx >= 1;
}

static bool a_got_one(void)
{
	return A.n_rx >= 1;
}

static void send_dgram(struct tnode *from, uint8_t fill)
{
	struct pkt *p;

	assert_int_equal(pkt_pool_get(from->pool, &p, 1), 1);
	memset(p->data, fill, 100);
	p->data[0] = 4; /* a WireGuard data message, as far as the demux can tell */
	p->data[1] = p->data[2] = p->data[3] = 0;
	p->len = 100;
	p->ep = from->peer;
	magicsock_send(from->ms, &p, 1);
}

/* A's connection to region 2 (not its home) closed once idle; home still up. */
static bool a_region2_idle(void)
{
	return state_of(&A, 2, NULL) == RELAYCLIENT_IDLE &&
	       state_of(&A, 1, NULL) == RELAYCLIENT_CONNECTED;
}

static uint8_t rotated_pub[32];

static bool rotated(void)
{
	unsigned n_old, n_new;

	pthread_mutex_lock(&T.mu);
	n_old = trs_clients_with_key(&T, A.pub, NULL);
	n_new = trs_clients_with_key(&T, rotated_pub, NULL);
	pthread_mutex_unlock(&T.mu);
	return n_old == 0 && n_new >= 1;
}

static bool all_closed(void)
{
	unsigned n;

	pthread_mutex_lock(&T.mu);
	n = trs_clients_with_key(&T, B.pub, NULL);
	pthread_mutex_unlock(&T.mu);
	return n == 0 && relayclient_home(B.rc) == 0;
}

static void test_relay_client(void **state)
{
	struct netmap_relay_map rm;
	struct magicsock_stats ms;
	struct x25519_count a0, an;
	uint8_t new_priv[32];
	struct pkt *p;
	bool home = true;
	uint64_t t0;

	(void)state;
	assert_int_equal(trs_start(&T), 0);
	node_up(&A);
	node_up(&B);
	rm = map_two();
	/* A knows B as homed in region 2; B knows A without a home (its own stands in). */
	assert_int_equal(magicsock_handle_new(A.ms, &A.peer), 0);
	assert_int_equal(magicsock_handle_set_relay(A.ms, &A.peer, B.pub, 2), 0);
	assert_int_equal(magicsock_handle_new(B.ms, &B.peer), 0);
	assert_int_equal(magicsock_handle_set_relay(B.ms, &B.peer, A.pub, 0), 0);
	a0 = x25519_count_get(WHO_A);
	relayclient_set_key(A.rc, A.priv);
	relayclient_set_key(B.rc, B.priv);
	relayclient_set_map(A.rc, &rm, NULL);
	relayclient_set_map(B.rc, &rm, NULL);

	/* Both home in the first region (no STUN answers), connected, and they said so. */
	assert_true(wait_for(both_home));
	assert_int_equal(state_of(&A, 2, NULL), RELAYCLIENT_IDLE);

	/*
	 * A -> B: through a new connection to region 2; B sees it from A's handle. t0 is taken
	 * before the send: the connection's last use is after it, so it cannot close as idle
	 * before t0 + IDLE_NS however long the checks between take on a loaded machine.
	 */
	t0 = time_now_ns();
	send_dgram(&A, 0x5a);
	assert_true(wait_for(b_got_one));
	p = B.rx[0];
	assert_int_equal(p->len, 100);
	assert_int_equal(p->data[0], 4);
	assert_int_equal(p->data[99], 0x5a);
	assert_true(endpoint_equal(&p->ep, &B.peer));
	assert_int_equal(state_of(&A, 2, &home), RELAYCLIENT_CONNECTED);
	assert_false(home);
	state_of(&A, 1, &home);
	assert_true(home);
	/* Two connections of A (its home, region 2): its key's public half derived once. */
	an = x25519_count_since(WHO_A, a0);
	print_message("node key, two connections: %" PRIu64 " public keys derived, %" PRIu64
		      " X25519 scalar multiplications\n",
		      an.derived, an.scalarmult);
	assert_int_equal(an.derived, 1);
	assert_true(an.scalarmult >= 3);

	/* B -> A: to B's home region, which A is connected to as well. */
	send_dgram(&B, 0xa5);
	assert_true(wait_for(a_got_one));
	assert_int_equal(A.rx[0]->data[99], 0xa5);
	assert_true(endpoint_equal(&A.rx[0]->ep, &A.peer));
	magicsock_stats_get(A.ms, &ms);
	assert_int_equal(ms.tx_relay, 1);
	assert_int_equal(ms.rx_relay, 1);

	/* Nothing more for region 2: A closes that connection after the idle time. */
	assert_true(wait_for(a_region2_idle));
	assert_true(time_now_ns() - t0 >= IDLE_NS);

	/* A new node key: every connection of A comes back with it. */
	assert_int_equal(x25519_private_generate(new_priv), 0);
	assert_int_equal(x25519_public_from_private(rotated_pub, new_priv), 0);
	relayclient_set_key(A.rc, new_priv);
	assert_true(wait_for(rotated));

	/* No regions: B closes everything. */
	memset(&rm, 0, sizeof(rm));
	relayclient_set_map(B.rc, &rm, NULL);
	assert_true(wait_for(all_closed));
	assert_int_equal(relayclient_home(B.rc), 0);

	node_down(&A);
	node_down(&B);
	trs_stop(&T);
}

static bool a_home_connected(void)
{
	unsigned n;

	pthread_mutex_lock(&T.mu);
	n = trs_clients_with_key(&T, A.pub, NULL);
	pthread_mutex_unlock(&T.mu);
	return n == 1 && state_of(&A, 1, NULL) == RELAYCLIENT_CONNECTED;
}

static bool a_home_backoff(void)
{
	return state_of(&A, 1, NULL) == RELAYCLIENT_BACKOFF;
}

/*
 * The relay goes away (the control server that embeds it restarts) and comes back while
 * the client waits out a backoff far longer than this test: relayclient_retry_now dials
 * at once. A packet queued meanwhile does not: a relay that is down is not dialled per
 * packet.
 */
static void test_retry_now(void **state)
{
	uint16_t ports[TRS_PORTS];
	struct netmap_relay_map rm;
	unsigned accepted;

	(void)state;
	assert_int_equal(trs_start(&T), 0);
	memcpy(ports, T.port, sizeof(ports));
	node_up_backoff(&A, 3600 * NSEC_PER_SEC);
	assert_int_equal(magicsock_handle_new(A.ms, &A.peer), 0);
	assert_int_equal(magicsock_handle_set_relay(A.ms, &A.peer, A.pub, 1), 0);
	rm = map_two();
	relayclient_set_key(A.rc, A.priv);
	relayclient_set_map(A.rc, &rm, NULL);
	assert_true(wait_for(a_home_connected));

	trs_stop(&T);
	assert_true(wait_for(a_home_backoff));
	assert_int_equal(trs_start_on(&T, ports), 0);
	send_dgram(&A, 0x11);
	/* What a wake by the packet would have dialled has had time to arrive. */
	assert_false(wait_for_ms(a_home_connected, 300));
	pthread_mutex_lock(&T.mu);
	accepted = T.accepted;
	pthread_mutex_unlock(&T.mu);
	assert_int_equal(accepted, 0);

	relayclient_retry_now(A.rc);
	assert_true(wait_for(a_home_connected));

	node_down(&A);
	trs_stop(&T);
}

/* The home by STUN round trip, with hysteresis (relayclient_home_pick). */
static void test_home_pick(void **state)
{
	static const struct {
		uint32_t home;
		int64_t home_us;
		unsigned misses;
		uint32_t best;
		int64_t best_us;
		uint32_t want;
	} cases[] = {
	    {0, -1, 0, 0, -1, 9},	 /* no home, no answer: the map's first */
	    {0, -1, 0, 3, 5000, 3},	 /* no home: the fastest */
	    {2, 3000, 0, 2, 3000, 2},	 /* home is the fastest */
	    {2, 3000, 0, 3, 2100, 2},	 /* 2.1 ms < 3 ms but not below 2/3 of it: stays */
	    {2, 3000, 0, 3, 1999, 3},	 /* clearly better: moves */
	    {2, -1, 1, 3, 5000, 2},	 /* home missed one round: stays */
	    {2, -1, RELAYCLIENT_HOME_MISSES, 3, 50000, 3}, /* home gone quiet: moves */
	    {2, -1, RELAYCLIENT_HOME_MISSES, 0, -1, 2},	   /* nobody answers (UDP blocked): stays */
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		assert_int_equal(relayclient_home_pick(cases[i].home, cases[i].home_us,
						       cases[i].misses, cases[i].best,
						       cases[i].best_us, 9),
				 cases[i].want);
}

/*
 * Which address of a relay STUN and the connection use (relayclient_node_family): on an
 * IPv6-only link (no IPv4 route) a dual-stack relay's own IPv6 address, not its IPv4 one
 * through the NAT64; with IPv4, the IPv4 one as before; one family is used as it is.
 */
static void test_node_family(void **state)
{
	static const struct {
		bool v4, v6, routed;
		int want;
	} cases[] = {
	    {true, true, false, AF_INET6}, /* IPv6-only link: native IPv6, no translation */
	    {true, true, true, AF_INET},
	    {true, false, false, AF_INET}, /* IPv4-only relay: through the NAT64 if any */
	    {true, false, true, AF_INET},
	    {false, true, false, AF_INET6},
	    {false, true, true, AF_INET6},
	    {false, false, false, AF_UNSPEC}, /* a host name, or the control server's */
	    {false, false, true, AF_UNSPEC},
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct netmap_relay_node n = {.has_ipv4 = cases[i].v4, .has_ipv6 = cases[i].v6};

		assert_int_equal(relayclient_node_family(&n, cases[i].routed), cases[i].want);
	}
	assert_string_equal(relayclient_via_name(RELAYCLIENT_VIA_NAT64), "nat64");
	assert_string_equal(relayclient_via_name(RELAYCLIENT_VIA_IPV6), "ipv6");
}

/*
 * The manager's timers with a hand clock: an idle node with only its home connection
 * sleeps until the next STUN round (it used to wake every second); a connection kept for
 * its traffic is looked at again exactly when it becomes idle.
 */
static void test_mgr_due(void **state)
{
	const uint64_t s = NSEC_PER_SEC, idle = RELAYCLIENT_IDLE_NS;
	uint64_t now = 1000 * s, due;

	(void)state;
	/* No key: nothing wanted, nothing due. */
	assert_false(relayclient_conn_wanted(false, true, true, now, idle, now, &due));
	assert_int_equal(due, TIME_NEVER);
	/* Home: wanted with no deadline of its own. */
	assert_true(relayclient_conn_wanted(true, true, false, 0, idle, now, &due));
	assert_int_equal(due, TIME_NEVER);
	/*
	 * Packets queued: a use now, though not yet stamped. The queue drains without waking
	 * the manager, so the idle close must be due from now.
	 */
	assert_true(relayclient_conn_wanted(true, false, true, 0, idle, now, &due));
	assert_int_equal(due, now + idle);
	assert_true(relayclient_conn_wanted(true, false, true, now - 90 * s, idle, now, &due));
	assert_int_equal(due, now + idle);
	/* Never used, not home: not wanted. */
	assert_false(relayclient_conn_wanted(true, false, false, 0, idle, now, &due));
	assert_int_equal(due, TIME_NEVER);
	/* Used 10 s ago: wanted until 50 s from now, and due then. */
	assert_true(relayclient_conn_wanted(true, false, false, now - 10 * s, idle, now, &due));
	assert_int_equal(due, now - 10 * s + idle);
	/* At that moment it is idle. */
	assert_false(relayclient_conn_wanted(true, false, false, now - 10 * s, idle,
					     now - 10 * s + idle, &due));
	/* A packet thread's use stamped after the manager read its clock: recent, not idle. */
	assert_true(relayclient_conn_wanted(true, false, false, now + 1, idle, now, &due));
	assert_int_equal(due, now + 1 + idle);

	/* Idle, home connected, no round running: asleep until the next round, not 1 s. */
	assert_int_equal(relayclient_mgr_due(0, now + 20 * s, true, TIME_NEVER, TIME_NEVER),
			 now + 20 * s);
	/* No relays in the map: only a wakeup. */
	assert_int_equal(relayclient_mgr_due(0, now + 20 * s, false, TIME_NEVER, TIME_NEVER),
			 TIME_NEVER);
	/* A round running: its end, not the next round's start. */
	assert_int_equal(
	    relayclient_mgr_due(now + 2 * s, now + 20 * s, true, TIME_NEVER, TIME_NEVER),
	    now + 2 * s);
	/* An idle close or the trimmer earlier than the round. */
	assert_int_equal(relayclient_mgr_due(0, now + 20 * s, true, now + 5 * s, now + 9 * s),
			 now + 5 * s);
	assert_int_equal(relayclient_mgr_due(0, now + 20 * s, false, TIME_NEVER, now + 9 * s),
			 now + 9 * s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_mgr_due),	cmocka_unit_test(test_home_pick),
	    cmocka_unit_test(test_node_family), cmocka_unit_test(test_relay_client),
	    cmocka_unit_test(test_retry_now),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
