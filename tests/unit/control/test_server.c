// SPDX-License-Identifier: MIT
/*
 * trellis-control serve, in process: the server runs its loop on a thread of
 * its own on 127.0.0.1 with a temporary state directory; the test drives real
 * clients built from proto/http + ctrlstream + ctrlmsg over TCP, and plays the
 * admin CLI through a second store on the same database. It includes server.c
 * to lower the delta backlog cap for the slow-reader test and the socket
 * buffers of its connections.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/base64.h"
#include "base/time.h"
#include "control/admin.h"
#include "control/authkey.h"
/* Lowered so that a test can put more rows after a held netmap than a delta may name. */
#define RESUME_MISSED_MAX 8
#include "control/server.c"
#include "control/store.h"
#include "control/admin_op.h"
#include "crypto/crypto.h"
#include "proto/ctrlmsg.h"
#include "proto/ctrlstream.h"
#include "proto/http.h"
#include "proto/mapz.h"

#include "server_harness.h"

/* ---- tests ---- */

static void test_key(void **state)
{
	char body[512], *p, *q;

	(void)state;
	assert_int_equal(http_status_of("GET /key HTTP/1.1\r\nHost: x\r\n\r\n", body, sizeof(body)),
			 200);
	p = strstr(body, "\"key\":\"");
	assert_non_null(p);
	p += 7;
	q = strchr(p, '"');
	assert_non_null(q);
	*q = '\0';
	assert_int_equal(key_from_base64(E.server_pub, p), 0);
	assert_non_null(strstr(q + 1, "\"version\":1"));
}

static void test_http_errors(void **state)
{
	(void)state;
	assert_int_equal(http_status_of("GARBAGE\r\n\r\n", NULL, 0), 400);
	assert_int_equal(http_status_of("GET /nothing HTTP/1.1\r\n\r\n", NULL, 0), 404);
	assert_int_equal(http_status_of("DELETE /key HTTP/1.1\r\n\r\n", NULL, 0), 405);
	assert_int_equal(http_status_of("POST /control HTTP/1.1\r\n\r\n", NULL, 0), 400);
}

/*
 * A node that offers "compress":"zstd" gets its full netmap as zstd frames of the same
 * text; one that does not (an older node, a plain client) gets JSON as before.
 */
static void test_map_zstd(void **state)
{
	struct ctrl_msg req = {.type = CTRL_MSG_MAP_REQUEST}, m;
	struct client a, b;
	uint64_t nm0 = metric("trellis_control_netmaps_compressed_total");
	uint64_t zb0 = metric("trellis_control_netmap_bytes_total{encoding=\"zstd\"}");
	uint64_t jb0 = metric("trellis_control_netmap_bytes_total{encoding=\"json\"}");
	unsigned z0 = zstd_msgs;

	(void)state;
	client_open(&a);
	client_register(&a, E.reusable, "zeta", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	ctrl_msg_clear(&m);
	client_open(&b);
	client_register(&b, E.reusable, "eta", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	ctrl_msg_clear(&m);

	memcpy(req.map_req.node_key, a.node_pub, 32);
	req.map_req.stream = true;
	req.map_req.zstd = true;
	client_send(&a, &req);
	assert_int_equal(client_recv(&a, &m, 5000), 0);
	assert_int_equal(m.type, CTRL_MSG_NETMAP);
	assert_int_equal(zstd_msgs, z0 + 1);
	assert_string_equal(m.netmap->self.name, "zeta");
	assert_true(m.netmap->n_peers >= 1);
	ctrl_msg_clear(&m);

	client_map(&b, NULL, &m);
	assert_int_equal(zstd_msgs, z0 + 1);
	assert_string_equal(m.netmap->self.name, "eta");
	ctrl_msg_clear(&m);

	assert_int_equal(metric("trellis_control_netmaps_compressed_total"), nm0 + 1);
	assert_true(metric("trellis_control_netmap_bytes_total{encoding=\"zstd\"}") > zb0);
	assert_true(metric("trellis_control_netmap_bytes_total{encoding=\"json\"}") > jb0);
	client_close(&a);
	client_close(&b);
}

static void test_register_map_delta(void **state)
{
	struct client a, b;
	struct ctrl_msg m;
	uint64_t a_id, t0;
	struct ctrl_msg ep = { .type = CTRL_MSG_ENDPOINTS };

	(void)state;
	client_open(&a);
	client_register(&a, E.reusable, "alpha", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	assert_true(m.reg_resp.has_node);
	a_id = m.reg_resp.node.id;
	assert_string_equal(m.reg_resp.node.name, "alpha");
	assert_int_equal(m.reg_resp.node.addresses[0].addr[0], 100);
	ctrl_msg_clear(&m);

	client_open(&b);
	client_register(&b, E.reusable, "alpha", &m); /* name clash: alpha-2 */
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	assert_string_equal(m.reg_resp.node.name, "alpha-2");
	ctrl_msg_clear(&m);

	client_map(&b, "192.0.2.2:41641", &m);
	assert_int_equal(m.netmap->n_peers, 1);
	assert_int_equal(m.netmap->peers[0].id, a_id);
	/* The default relay map: the embedded relay, its key pinned, STUN as served (none). */
	assert_int_equal(m.netmap->relay_map.n_regions, 1);
	assert_true(m.netmap->relay_map.regions[0].nodes[0].has_key);
	assert_memory_equal(m.netmap->relay_map.regions[0].nodes[0].key,
			    control_relay_pub(E.srv->relay), 32);
	assert_int_equal(m.netmap->relay_map.regions[0].nodes[0].stun_port, 0);
	ctrl_msg_clear(&m);

	client_map(&a, "192.0.2.1:41641", &m);
	assert_int_equal(m.netmap->n_peers, 1);
	assert_int_equal(m.netmap->peers[0].n_endpoints, 1);
	ctrl_msg_clear(&m);

	/* b changes its endpoint: a hears of it (the time is printed; speed is a benchmark's job). */
	assert_int_equal(endpoint_parse(&ep.endpoints.endpoints[0], "198.51.100.9:41641"), 0);
	ep.endpoints.n_endpoints = 1;
	t0 = time_now_ns();
	client_send(&b, &ep);
	for (;;) {
		assert_int_equal(client_recv(&a, &m, 10000), 0);
		assert_int_equal(m.type, CTRL_MSG_DELTA);
		if (m.delta->n_endpoints) {
			char s[ENDPOINT_STR_MAX];

			endpoint_format(&m.delta->endpoints[0].endpoints[0], s, sizeof(s));
			assert_string_equal(s, "198.51.100.9:41641");
			ctrl_msg_clear(&m);
			break;
		}
		ctrl_msg_clear(&m);
	}
	print_message("endpoint change reached the peer in %.1f ms\n",
		      (double)(time_now_ns() - t0) / 1e6);

	/* b goes away: a sees it offline. */
	client_close(&b);
	for (;;) {
		assert_int_equal(client_recv(&a, &m, 10000), 0);
		assert_int_equal(m.type, CTRL_MSG_DELTA);
		if (m.delta->n_online && !m.delta->online[0].online) {
			ctrl_msg_clear(&m);
			break;
		}
		ctrl_msg_clear(&m);
	}
	client_close(&a);
}

/* A client on a new connection as machine key `machine` (the server's test hook). */
static void client_open_as(struct client *c, const uint8_t machine[32])
{
	memcpy(machine_next, machine, 32);
	machine_fixed = true;
	client_open(c);
	machine_fixed = false;
}

/* A client on a new connection as machine `machine`, registered as `host`; its node id. */
static uint64_t node_register(struct client *c, const uint8_t machine[32], const char *host)
{
	struct ctrl_msg m;
	uint64_t id;

	client_open_as(c, machine);
	client_register(c, E.reusable, host, &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	id = m.reg_resp.node.id;
	ctrl_msg_clear(&m);
	return id;
}

/* A client on a new connection as the same machine and node (a daemon that reconnects). */
static void client_reopen(struct client *c, const uint8_t mpriv[32])
{
	uint8_t priv[32], pub[32];

	memcpy(priv, c->node_priv, 32);
	memcpy(pub, c->node_pub, 32);
	client_open_as(c, mpriv);
	memcpy(c->node_priv, priv, 32);
	memcpy(c->node_pub, pub, 32);
}

/* Until the server's netmaps name the store's latest feed position. */
static void feed_wait_stamped(void)
{
	static struct store_change rows[1024];
	struct store *st;
	uint64_t last = 0;
	int k;

	assert_int_equal(admin_store_open(E.dir, &st), 0);
	do {
		k = store_changes_since(st, last, rows, ARRAY_SIZE(rows));
		assert_true(k >= 0);
		if (k > 0)
			last = rows[k - 1].seq;
	} while (k == (int)ARRAY_SIZE(rows));
	store_free(st);
	for (int i = 0; *(volatile uint64_t *)&E.srv->stamped < last; i++) {
		assert_true(i < 1000);
		usleep(10000);
	}
}

/* A map stream with a disco key, resuming from *have when given; the first answer. */
static void client_map_disco(struct client *c, const uint8_t disco[32],
			     const struct ctrl_have *have, struct ctrl_msg *ret)
{
	struct ctrl_msg m = { .type = CTRL_MSG_MAP_REQUEST };

	memcpy(m.map_req.node_key, c->node_pub, 32);
	m.map_req.stream = true;
	m.map_req.has_disco_key = true;
	memcpy(m.map_req.disco_key, disco, 32);
	if (have) {
		m.map_req.has_have = true;
		m.map_req.have = *have;
	}
	client_send(c, &m);
	assert_int_equal(client_recv(c, ret, 5000), 0);
}

/* Node of machine key `machine` registers with the reusable key and opens its map stream. */
static uint64_t node_up(struct client *c, const uint8_t machine[32], const char *host,
			const uint8_t disco[32])
{
	struct ctrl_msg m;
	uint64_t id;

	id = node_register(c, machine, host);
	client_map_disco(c, disco, NULL, &m);
	assert_int_equal(m.type, CTRL_MSG_NETMAP);
	ctrl_msg_clear(&m);
	return id;
}

/* Until the store holds node id's disco key `key`. */
static void disco_key_stored(uint64_t id, const uint8_t key[32])
{
	struct control_node rec;
	struct store *st;

	assert_int_equal(admin_store_open(E.dir, &st), 0);
	for (int i = 0;; i++) {
		assert_true(i < 1000);
		assert_int_equal(store_node_get(st, id, &rec), 0);
		if (rec.has_disco_key && !memcmp(rec.disco_key, key, 32))
			break;
		usleep(10000);
	}
	store_free(st);
}

/*
 * A peer's daemon restarts (a new disco key) while a node is away from control; the node
 * resumes its netmap and must get the peer's new disco key, or disco can never confirm a
 * direct path between them. The key once only changed the mapper's live record, and the
 * feed said "live" (endpoints and presence only), so the resume left it out.
 */
static void test_resume_disco_key(void **state)
{
	uint8_t ma[32], mb[32], k1[32], k2[32], kb[32];
	struct client a, b;
	struct ctrl_have have;
	struct ctrl_msg m;
	uint64_t a_id, resumes;
	bool found = false;

	(void)state;
	crypto_random(ma, 32);
	crypto_random(mb, 32);
	crypto_random(k1, 32);
	crypto_random(k2, 32);
	crypto_random(kb, 32);
	a_id = node_up(&a, ma, "dk-a", k1);
	/*
	 * b's netmap must name a feed position past a's own rows (the stamp lags by a tick),
	 * or its resume reads a's registration from the feed and sends a whole anyway.
	 */
	feed_wait_stamped();

	node_register(&b, mb, "dk-b");
	client_map_disco(&b, kb, NULL, &m);
	assert_int_equal(m.type, CTRL_MSG_NETMAP);
	for (unsigned i = 0; i < m.netmap->n_peers; i++) {
		if (m.netmap->peers[i].id == a_id) {
			assert_true(m.netmap->peers[i].has_disco_key);
			assert_memory_equal(m.netmap->peers[i].disco_key, k1, 32);
			found = true;
		}
	}
	assert_true(found);
	have.seq = m.netmap->seq;
	have.version = m.netmap->version;
	ctrl_msg_clear(&m);
	client_close(&b);

	/* a's daemon restarts: the same node, a new disco key. */
	client_close(&a);
	client_reopen(&a, ma);
	client_map_disco(&a, k2, NULL, &m);
	assert_int_equal(m.type, CTRL_MSG_NETMAP);
	ctrl_msg_clear(&m);
	/* Once the store holds the new key, the feed is all a resume reads. */
	disco_key_stored(a_id, k2);

	/* b comes back holding its netmap: one delta, and it carries a's new key. */
	resumes = E.srv->ctr.resumes;
	client_reopen(&b, mb);
	client_map_disco(&b, kb, &have, &m);
	assert_int_equal(m.type, CTRL_MSG_DELTA);
	assert_int_equal(E.srv->ctr.resumes, resumes + 1);
	found = false;
	for (unsigned i = 0; i < m.delta->n_added + m.delta->n_changed; i++) {
		const struct netmap_node *p = i < m.delta->n_added
						      ? &m.delta->added[i]
						      : &m.delta->changed[i - m.delta->n_added];

		if (p->id == a_id) {
			assert_true(p->has_disco_key);
			assert_memory_equal(p->disco_key, k2, 32);
			found = true;
		}
	}
	assert_true(found);
	ctrl_msg_clear(&m);
	client_close(&b);
	client_close(&a);
}

/*
 * After a restart every node reconnects, and each reconnect writes the node as it was: a
 * node that resumes later must still get a delta however many of those rows followed the
 * netmap it holds (at 10,000 nodes, more than RESUME_MISSED_MAX did, and every later node
 * got a full map), and the feed since a position is read once for all the nodes that hold
 * it, not again for each (10,000 nodes each reading every row since).
 */
static void test_resume_after_reconnects(void **state)
{
	uint8_t ma[32], mb[32], kb[32];
	struct client a, b;
	struct ctrl_have have;
	struct ctrl_msg m;
	uint64_t resumes, rows;

	(void)state;
	crypto_random(ma, 32);
	crypto_random(mb, 32);
	crypto_random(kb, 32);
	node_register(&a, ma, "rc-a");
	client_close(&a);
	feed_wait_stamped();

	node_register(&b, mb, "rc-b");
	client_map_disco(&b, kb, NULL, &m);
	assert_int_equal(m.type, CTRL_MSG_NETMAP);
	have.seq = m.netmap->seq;
	have.version = m.netmap->version;
	assert_true(have.version.feed > 0);
	ctrl_msg_clear(&m);
	client_close(&b);

	/* a reconnects twice the cap's times: each registration writes it as it was. */
	for (int i = 0; i < 2 * RESUME_MISSED_MAX; i++) {
		client_reopen(&a, ma);
		client_register(&a, NULL, "rc-a", &m);
		assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
		ctrl_msg_clear(&m);
		client_close(&a);
	}

	resumes = E.srv->ctr.resumes;
	client_reopen(&b, mb);
	client_map_disco(&b, kb, &have, &m);
	assert_int_equal(m.type, CTRL_MSG_DELTA);
	assert_int_equal(E.srv->ctr.resumes, resumes + 1);
	ctrl_msg_clear(&m);
	client_close(&b);

	/* From the same position again: only the rows written since are read. */
	rows = E.srv->ctr.resume_feed_rows;
	client_reopen(&b, mb);
	client_map_disco(&b, kb, &have, &m);
	assert_int_equal(m.type, CTRL_MSG_DELTA);
	assert_int_equal(E.srv->ctr.resumes, resumes + 2);
	assert_in_range(E.srv->ctr.resume_feed_rows - rows, 0, RESUME_MISSED_MAX / 2);
	ctrl_msg_clear(&m);
	client_close(&b);
}

/* The newest row of the change feed, as the admin CLI reads it. */
static uint64_t feed_last(void)
{
	static struct store_change rows[1024];
	struct store *st;
	uint64_t last = 0;
	int k;

	assert_int_equal(admin_store_open(E.dir, &st), 0);
	do {
		k = store_changes_since(st, last + 1, rows, ARRAY_SIZE(rows));
		assert_true(k >= 0);
		if (k > 0)
			last = rows[k - 1].seq;
	} while (k == (int)ARRAY_SIZE(rows));
	store_free(st);
	return last;
}

/* The kind of the first row after `after` that names node id, once the store has one. */
static enum store_change_kind feed_kind_of(uint64_t after, uint64_t id)
{
	static struct store_change rows[1024];
	struct store *st;

	assert_int_equal(admin_store_open(E.dir, &st), 0);
	for (int i = 0;; i++) {
		int k = store_changes_since(st, after + 1, rows, ARRAY_SIZE(rows));

		assert_true(k >= 0);
		for (int j = 0; j < k; j++) {
			if (rows[j].id == id) {
				store_free(st);
				return rows[j].kind;
			}
		}
		assert_true(i < 1000);
		usleep(10000);
	}
}

/*
 * A node that reconnects reporting what it reported before (the same disco key, no home
 * region, the same mapping) changed nothing its peers' netmaps say: its write is live state
 * only. The home region once counted as changed on every connect, so every reconnect was
 * written as a new record, and every node resuming after a restart got the whole record of
 * every node that had reconnected before it (206 MiB for 1,000 nodes).
 */
static void test_reconnect_unchanged(void **state)
{
	uint8_t ma[32], k1[32];
	struct client a;
	struct ctrl_msg m;
	uint64_t a_id, last;

	(void)state;
	crypto_random(ma, 32);
	crypto_random(k1, 32);
	a_id = node_up(&a, ma, "ru-a", k1);
	/* Its first stream's write (a new disco key: a record) lands, then its goodbye. */
	disco_key_stored(a_id, k1);
	last = feed_last();
	client_close(&a);
	assert_int_equal(feed_kind_of(last, a_id), STORE_CHANGE_NODE_LIVE);
	last = feed_last();

	client_reopen(&a, ma);
	client_map_disco(&a, k1, NULL, &m);
	assert_int_equal(m.type, CTRL_MSG_NETMAP);
	ctrl_msg_clear(&m);
	assert_int_equal(feed_kind_of(last, a_id), STORE_CHANGE_NODE_LIVE);
	client_close(&a);
}

/* serve --no-relay: no region may point at a relay that is not there. */
static void test_no_relay_map(void **state)
{
	struct control_serve_opts o = {.listen = "127.0.0.1:0", .no_relay = true};
	struct control_server *srv;
	char dir[64] = "/tmp/trellis-server-XXXXXX", cmd[128];

	(void)state;
	assert_non_null(mkdtemp(dir));
	o.state_dir = dir;
	assert_int_equal(control_server_new(&o, &srv), 0);
	assert_null(control_relay_pub(srv->relay));
	assert_int_equal(mapper_relaymap(srv->m)->n_regions, 0);
	control_server_free(srv);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

static void rotate_send(struct client *c, const uint8_t old_pub[32], const uint8_t new_priv[32])
{
	struct ctrl_msg m = { .type = CTRL_MSG_REGISTER };

	x25519_public_from_private(m.reg.node_key, new_priv);
	client_prove(c, new_priv, &m.reg);
	m.reg.has_old_node_key = true;
	memcpy(m.reg.old_node_key, old_pub, 32);
	snprintf(m.reg.hostname, sizeof(m.reg.hostname), "rot-a");
	snprintf(m.reg.os, sizeof(m.reg.os), "linux");
	client_send(c, &m);
}

/* The next register_response on a live stream (deltas may come first). */
static void recv_reg_resp(struct client *c, struct ctrl_msg *ret)
{
	for (;;) {
		assert_int_equal(client_recv(c, ret, 5000), 0);
		if (ret->type == CTRL_MSG_REGISTER_RESPONSE)
			return;
		assert_int_equal(ret->type, CTRL_MSG_DELTA);
		ctrl_msg_clear(ret);
	}
}

/* The configuration audit log's registrations of one node (reg_audit), and the chain. */
struct reg_log {
	const char *name;
	uint64_t id;
	char prefix[AUTHKEY_ID_HEX + 1];
	unsigned registered, rotated, wrong_actor;
	struct audit_walk w;
};

static bool ends_with(const char *s, const char *tail)
{
	size_t n = strlen(s), t = strlen(tail);

	return n >= t && !strcmp(s + n - t, tail);
}

static int reg_log_entry(void *arg, const struct audit_entry *e)
{
	struct reg_log *l = arg;
	char want[AUDIT_ACTOR_MAX];

	audit_walk_step(&l->w, e);
	if (!ends_with(e->target, l->name))
		return 0;
	if (!strcmp(e->action, "node.register")) {
		l->registered++;
		snprintf(want, sizeof(want), "authkey:%s", l->prefix);
		l->wrong_actor += strcmp(e->actor, want) != 0 || e->before[0];
	} else if (!strcmp(e->action, "node.rotate_key")) {
		l->rotated++;
		snprintf(want, sizeof(want), "node:%" PRIu64, l->id);
		l->wrong_actor += strcmp(e->actor, want) != 0 || !e->before[0];
	}
	return 0;
}

static void reg_log_read(struct reg_log *l)
{
	struct store *st;

	assert_int_equal(admin_store_open(E.dir, &st), 0);
	audit_walk_start(&l->w, 0, (const uint8_t[AUDIT_HASH_LEN]){0});
	assert_int_equal(store_audit_read(st, 0, 0, 0, reg_log_entry, l), 0);
	store_free(st);
}

static void test_rotate(void **state)
{
	struct client a, b, x;
	struct ctrl_msg m;
	struct netmap_node self;
	uint8_t priv2[32], pub2[32], priv3[32], pub3[32];
	bool seen = false;

	(void)state;
	client_open(&a);
	client_register(&a, E.reusable, "rot-a", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	self = m.reg_resp.node;
	ctrl_msg_clear(&m);
	client_open(&b);
	client_register(&b, E.reusable, "rot-b", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	ctrl_msg_clear(&m);
	client_map(&a, "192.0.2.11:41641", &m);
	ctrl_msg_clear(&m);
	client_map(&b, "192.0.2.12:41641", &m);
	ctrl_msg_clear(&m);

	/* Rotation on a's live stream: same record, new key; b hears of it. */
	assert_int_equal(x25519_private_generate(priv2), 0);
	x25519_public_from_private(pub2, priv2);
	rotate_send(&a, a.node_pub, priv2);
	recv_reg_resp(&a, &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	assert_true(m.reg_resp.has_node);
	assert_int_equal(m.reg_resp.node.id, self.id);
	assert_string_equal(m.reg_resp.node.name, self.name);
	assert_memory_equal(m.reg_resp.node.addresses, self.addresses, sizeof(self.addresses));
	assert_memory_equal(m.reg_resp.node.node_key, pub2, 32);
	assert_true(m.reg_resp.node.key_expiry == 0 ||
		    m.reg_resp.node.key_expiry >= self.key_expiry);
	ctrl_msg_clear(&m);
	while (!seen) {
		assert_int_equal(client_recv(&b, &m, 10000), 0);
		assert_int_equal(m.type, CTRL_MSG_DELTA);
		for (unsigned i = 0; i < m.delta->n_changed; i++)
			if (m.delta->changed[i].id == self.id) {
				assert_memory_equal(m.delta->changed[i].node_key, pub2, 32);
				seen = true;
			}
		ctrl_msg_clear(&m);
	}

	/* A retry whose answer was lost: already done, ok. */
	rotate_send(&a, a.node_pub, priv2);
	recv_reg_resp(&a, &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	assert_memory_equal(m.reg_resp.node.node_key, pub2, 32);
	ctrl_msg_clear(&m);

	/* The old key no longer proves anything: refused, the stream goes on. */
	assert_int_equal(x25519_private_generate(priv3), 0);
	x25519_public_from_private(pub3, priv3);
	rotate_send(&a, a.node_pub, priv3);
	recv_reg_resp(&a, &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_ERROR);
	assert_non_null(strstr(m.reg_resp.error, "old node key"));
	ctrl_msg_clear(&m);
	rotate_send(&a, pub2, priv3);
	recv_reg_resp(&a, &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	assert_int_equal(m.reg_resp.node.id, self.id);
	assert_memory_equal(m.reg_resp.node.node_key, pub3, 32);
	ctrl_msg_clear(&m);

	/* An unknown machine cannot rotate anything. */
	client_open(&x);
	rotate_send(&x, x.node_pub, priv2);
	recv_reg_resp(&x, &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_ERROR);
	ctrl_msg_clear(&m);

	/*
	 * In the configuration audit log: a joined with the reusable key, then rotated twice
	 * by its own old key (the retry wrote nothing); the chain holds.
	 */
	{
		struct reg_log l = {.name = " rot-a", .id = self.id};
		const char *p = strchr(E.reusable + strlen("trellis-auth-"), '-');

		assert_non_null(p);
		snprintf(l.prefix, sizeof(l.prefix), "%.*s",
			 (int)(p - E.reusable - strlen("trellis-auth-")),
			 E.reusable + strlen("trellis-auth-"));
		reg_log_read(&l);
		assert_false(l.w.bad);
		assert_int_equal(l.rotated, 2);
		assert_int_equal(l.wrong_actor, 0);
		/* a new node's target is its name: it has no id before its insert */
		l.name = "node:rot-a";
		l.registered = l.rotated = 0;
		reg_log_read(&l);
		assert_int_equal(l.registered, 1);
		assert_int_equal(l.wrong_actor, 0);
	}

	crypto_wipe(priv2, sizeof(priv2));
	crypto_wipe(priv3, sizeof(priv3));
	client_close(&x);
	client_close(&a);
	client_close(&b);
}

static void test_oneoff_reuse(void **state)
{
	struct client c, d;
	struct ctrl_msg m;

	(void)state;
	client_open(&c);
	client_register(&c, E.oneoff, "once", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	ctrl_msg_clear(&m);
	client_open(&d);
	client_register(&d, E.oneoff, "twice", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_ERROR);
	ctrl_msg_clear(&m);
	client_register(&d, "trellis-auth-000000000000-00000000000000000000000000000000", "x",
			&m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_ERROR);
	ctrl_msg_clear(&m);
	client_close(&c);
	client_close(&d);
}

/* A request on the server's admin socket (STATE/admin.sock), as root. */
static unsigned admin_status_of(const char *raw_request, char *body, size_t body_cap)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/admin.sock", E.dir);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return http_exchange_fd(fd, raw_request, body, body_cap);
}

static void test_interactive(void **state)
{
	struct admin_op_ctx ac = { .actor = "test" };
	struct client c;
	struct ctrl_msg m;
	struct store *st;
	char arg[64], body[8192]; /* the login page: HTML with its style */
	size_t nodes0 = store_node_count();
	const char *p;

	(void)state;
	client_open(&c);
	client_register(&c, NULL, "laptop", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_NEEDS_AUTH);
	p = strstr(m.reg_resp.auth_url, "/register/");
	assert_non_null(p);
	assert_true(strncmp(m.reg_resp.auth_url, "http://127.0.0.1", 16) == 0);
	assert_int_equal(strlen(p + 10), PENDING_CODE_LEN);
	snprintf(arg, sizeof(arg), "reg:%s", p + 10);
	ctrl_msg_clear(&m);
	/* The page names the command that approves it. */
	{
		char req[128];

		snprintf(req, sizeof(req), "GET /register/%s HTTP/1.1\r\n\r\n", arg + 4);
		assert_int_equal(http_status_of(req, body, sizeof(body)), 200);
		assert_non_null(strstr(body, arg));
		/* ... and the machine, to compare with the one at hand. */
		assert_non_null(strstr(body, "hostname:    laptop\n"));
		assert_non_null(strstr(body, "machine key: "));
	}
	/* Waiting costs nothing durable: no node in the store. */
	assert_int_equal(store_node_count(), nodes0);
	/* The admin sees it waiting, apart from the nodes, with its code and hostname. */
	assert_int_equal(admin_status_of("GET /admin/v1/pending HTTP/1.1\r\n\r\n", body,
					 sizeof(body)),
			 200);
	assert_non_null(strstr(body, arg));
	assert_non_null(strstr(body, "\"hostname\":\"laptop\""));

	/* The admin approves from another process (here: another store handle). */
	assert_int_equal(admin_store_open(E.dir, &st), 0);
	ac.store = st;
	ac.now = time(NULL);
	assert_int_equal(admin_op_node_approve(&ac, arg, NULL), 0);
	store_free(st);

	assert_int_equal(client_recv(&c, &m, 10000), 0);
	assert_int_equal(m.type, CTRL_MSG_REGISTER_RESPONSE);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	assert_true(m.reg_resp.node.id > 0);
	ctrl_msg_clear(&m);
	assert_int_equal(store_node_count(), nodes0 + 1);
	/* Approved: the page says the code no longer waits. */
	{
		char req[128];

		snprintf(req, sizeof(req), "GET /register/%s HTTP/1.1\r\n\r\n", arg + 4);
		assert_int_equal(http_status_of(req, body, sizeof(body)), 404);
		assert_non_null(strstr(body, "No registration waits under this code"));
	}
	client_map(&c, NULL, &m);
	assert_true(m.netmap->self.id > 0);
	ctrl_msg_clear(&m);
	client_close(&c);
}

/*
 * A known node whose key expired logs in again like a new machine: under a random code (no
 * URL names its guessable id), its record unchanged while it waits; `nodes approve ID`
 * approves that waiting re-login, and the node comes back as itself with the new key.
 */
/* A node's node.login entries: how many, and the last one's actor, before and after. */
struct login_log {
	const char *target;
	unsigned n;
	char actor[AUDIT_ACTOR_MAX];
	char before[1024], after[1024];
};

static int login_entry(void *arg, const struct audit_entry *e)
{
	struct login_log *l = arg;

	if (strcmp(e->action, "node.login") || strcmp(e->target, l->target))
		return 0;
	l->n++;
	snprintf(l->actor, sizeof(l->actor), "%s", e->actor);
	snprintf(l->before, sizeof(l->before), "%s", e->before);
	snprintf(l->after, sizeof(l->after), "%s", e->after);
	return 0;
}

/* The "node_key" member of an entry's record, as base64 of key. */
static bool has_node_key(const char *json, const uint8_t key[32])
{
	char b64[BASE64_ENCODED_LEN(32) + 1], want[80];

	base64_encode(b64, sizeof(b64), key, 32);
	snprintf(want, sizeof(want), "\"node_key\":\"%s\"", b64);
	return strstr(json, want) != NULL;
}

static void login_log_read(struct login_log *l)
{
	struct store *st;

	l->n = 0;
	assert_int_equal(admin_store_open(E.dir, &st), 0);
	assert_int_equal(store_audit_read(st, 0, 0, 0, login_entry, l), 0);
	store_free(st);
}

static void test_relogin(void **state)
{
	struct netmap_node self;
	struct control_node rec;
	struct client a, a2;
	struct ctrl_msg m;
	struct store *st;
	char body[8192], req[160];
	const char *p;
	time_t now;

	(void)state;
	machine_fixed = true;
	assert_int_equal(x25519_private_generate(machine_next), 0);
	client_open(&a);
	client_register(&a, E.reusable, "relog", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	self = m.reg_resp.node;
	ctrl_msg_clear(&m);
	client_close(&a);
	/* Expired through the running server, as `trellis-control nodes expire` does. */
	snprintf(req, sizeof(req),
		 "POST /admin/v1/nodes/%" PRIu64 "/expire HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		 self.id);
	assert_int_equal(admin_status_of(req, body, sizeof(body)), 200);
	assert_int_equal(admin_store_open(E.dir, &st), 0);
	now = time(NULL);

	/* The same machine, a new node key, no credential. */
	client_open(&a2);
	machine_fixed = false;
	client_register(&a2, NULL, "relog", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_NEEDS_AUTH);
	p = strstr(m.reg_resp.auth_url, "/register/");
	assert_non_null(p);
	assert_int_equal(strlen(p + 10), PENDING_CODE_LEN);
	ctrl_msg_clear(&m);
	/* Waiting changes nothing durable: the record keeps its old key. */
	assert_int_equal(store_node_get(st, self.id, &rec), 0);
	assert_memory_equal(rec.node_key, self.node_key, 32);
	assert_true(rec.approved);
	/* The admin sees the re-login waiting, naming the node. */
	assert_int_equal(admin_status_of("GET /admin/v1/pending HTTP/1.1\r\n\r\n", body,
					 sizeof(body)),
			 200);
	snprintf(req, sizeof(req), "\"node_id\":%" PRIu64, self.id);
	assert_non_null(strstr(body, req));
	/* No page answers under the node's id. */
	snprintf(req, sizeof(req), "GET /register/%" PRIu64 " HTTP/1.1\r\n\r\n", self.id);
	assert_int_equal(http_status_of(req, body, sizeof(body)), 404);
	/* `nodes approve ID` approves the waiting re-login (through the running server). */
	snprintf(req, sizeof(req),
		 "POST /admin/v1/nodes/%" PRIu64 "/approve HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
		 self.id);
	assert_int_equal(admin_status_of(req, body, sizeof(body)), 200);
	assert_int_equal(client_recv(&a2, &m, 10000), 0);
	assert_int_equal(m.type, CTRL_MSG_REGISTER_RESPONSE);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	assert_int_equal(m.reg_resp.node.id, self.id);
	assert_string_equal(m.reg_resp.node.name, self.name);
	assert_memory_equal(m.reg_resp.node.addresses, self.addresses, sizeof(self.addresses));
	assert_memory_equal(m.reg_resp.node.node_key, a2.node_pub, 32);
	assert_true(m.reg_resp.node.key_expiry == 0 || m.reg_resp.node.key_expiry > now);
	ctrl_msg_clear(&m);
	store_free(st);

	/*
	 * In the configuration audit log: node.login, the old key before and the new after. Then
	 * the same machine with another new key and the reusable auth key: a second node.login,
	 * by the auth key; the same key again without one (trellisd reconnecting) is no entry.
	 */
	{
		char target[AUDIT_TARGET_MAX];
		struct login_log l = {.target = target};
		struct client a3, a4;
		const char *q = E.reusable + strlen("trellis-auth-");
		char want[AUDIT_ACTOR_MAX];

		snprintf(target, sizeof(target), "node:%" PRIu64 " %s", self.id, self.name);
		login_log_read(&l);
		assert_int_equal(l.n, 1);
		assert_true(has_node_key(l.before, self.node_key));
		assert_true(has_node_key(l.after, a2.node_pub));
		client_close(&a2);

		machine_fixed = true;
		client_open(&a3);
		client_register(&a3, E.reusable, "relog", &m);
		assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
		assert_int_equal(m.reg_resp.node.id, self.id);
		ctrl_msg_clear(&m);
		login_log_read(&l);
		assert_int_equal(l.n, 2);
		snprintf(want, sizeof(want), "authkey:%.*s", (int)(strchr(q, '-') - q), q);
		assert_string_equal(l.actor, want);
		assert_true(has_node_key(l.before, a2.node_pub));
		assert_true(has_node_key(l.after, a3.node_pub));
		client_close(&a3);

		client_open(&a4);
		memcpy(a4.node_priv, a3.node_priv, 32);
		memcpy(a4.node_pub, a3.node_pub, 32);
		machine_fixed = false;
		client_register(&a4, NULL, "relog", &m);
		assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
		assert_int_equal(m.reg_resp.node.id, self.id);
		ctrl_msg_clear(&m);
		login_log_read(&l);
		assert_int_equal(l.n, 2);
		client_close(&a4);
	}
}

static void test_garbage_after_upgrade(void **state)
{
	char buf[256];
	struct client good;
	struct ctrl_msg m;
	int fd;
	size_t len;

	(void)state;
	fd = tcp_connect();
	len = (size_t)http_control_request_build(buf, sizeof(buf), "127.0.0.1");
	write_all(fd, buf, len);
	/* A frame length over the limit, then junk. */
	write_all(fd, "\xff\xff\xff\xff junk junk junk", 19);
	len = read_until_close(fd, buf, sizeof(buf), 10000);
	assert_true(len > 0 && strncmp(buf, "HTTP/1.1 101", 12) == 0);
	close(fd);

	/* Others are unaffected. */
	client_open(&good);
	client_register(&good, E.reusable, "after-garbage", &m);
	assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
	ctrl_msg_clear(&m);
	client_close(&good);
	assert_int_equal(http_status_at(E.mport, "GET /metrics HTTP/1.1\r\n\r\n", buf, sizeof(buf)),
			 200);
}

/*
 * Scale: N clients register (pipelined), hold map streams, and one endpoint
 * change must reach all of them. N = TRELLIS_SERVER_SCALE (default 200).
 */
static void test_scale(void **state)
{
	const char *env = getenv("TRELLIS_SERVER_SCALE");
	unsigned n = env ? (unsigned)atoi(env) : 200, i;
	struct client *cl = calloc(n, sizeof(*cl));
	struct ctrl_msg m, ep = { .type = CTRL_MSG_ENDPOINTS };
	uint64_t t0, t1, t2, t3;

	(void)state;
	assert_non_null(cl);
	t0 = time_now_ns();
	for (i = 0; i < n; i++) {
		struct ctrl_msg r = { .type = CTRL_MSG_REGISTER };

		client_open(&cl[i]);
		memcpy(r.reg.node_key, cl[i].node_pub, 32);
		client_prove(&cl[i], cl[i].node_priv, &r.reg);
		snprintf(r.reg.hostname, sizeof(r.reg.hostname), "scale-%u", i);
		snprintf(r.reg.auth_key, sizeof(r.reg.auth_key), "%s", E.reusable);
		client_send(&cl[i], &r);
	}
	for (i = 0; i < n; i++) {
		assert_int_equal(client_recv(&cl[i], &m, 30000), 0);
		assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
		ctrl_msg_clear(&m);
	}
	t1 = time_now_ns();
	for (i = 0; i < n; i++) {
		struct ctrl_msg r = { .type = CTRL_MSG_MAP_REQUEST };

		memcpy(r.map_req.node_key, cl[i].node_pub, 32);
		r.map_req.stream = true;
		client_send(&cl[i], &r);
	}
	for (i = 0; i < n; i++) {
		assert_int_equal(client_recv(&cl[i], &m, 60000), 0);
		assert_int_equal(m.type, CTRL_MSG_NETMAP);
		ctrl_msg_clear(&m);
	}
	/* Drain the online deltas of the stream start-up. */
	for (i = 0; i < n; i++)
		while (client_recv(&cl[i], &m, i == 0 ? 300 : 1) == 0)
			ctrl_msg_clear(&m);
	t2 = time_now_ns();
	assert_int_equal(endpoint_parse(&ep.endpoints.endpoints[0], "203.0.113.5:41641"), 0);
	ep.endpoints.n_endpoints = 1;
	client_send(&cl[0], &ep);
	for (i = 1; i < n; i++) {
		/* Online patches of the start-up may still be on their way on a loaded machine. */
		for (;;) {
			assert_int_equal(client_recv(&cl[i], &m, 5000), 0);
			assert_int_equal(m.type, CTRL_MSG_DELTA);
			if (m.delta->n_endpoints || !m.delta->n_online)
				break;
			ctrl_msg_clear(&m);
		}
		assert_int_equal(m.delta->n_endpoints, 1);
		ctrl_msg_clear(&m);
	}
	t3 = time_now_ns();
	print_message("scale N=%u: %.0f registrations/s, streams up in %.2f s, "
		      "endpoint change at all streams in %.1f ms\n",
		      n, n / ((double)(t1 - t0) / 1e9), (double)(t2 - t1) / 1e9,
		      (double)(t3 - t2) / 1e6);
	assert_true(t3 - t2 < NSEC_PER_SEC);
	for (i = 0; i < n; i++)
		client_close(&cl[i]);
	free(cl);
}

/*
 * A node that stops reading its map stream: the server keeps at most one full
 * map plus the delta backlog for it (here lowered to 4 KiB), then drops its
 * deltas and sends it a fresh full netmap once it reads again.
 */
static void test_slow_reader(void **state)
{
	unsigned n = 300, i;
	struct client r, *cl = calloc(n, sizeof(*cl));
	struct ctrl_msg m;
	uint64_t resyncs0, out_max;
	size_t peers0;
	bool got_full = false;

	(void)state;
	assert_non_null(cl);
	resyncs0 = metric("trellis_control_resyncs_total");
	rcvbuf_next = 2048;
	client_open(&r);
	rcvbuf_next = 0;
	client_register(&r, E.reusable, "sloth", &m);
	ctrl_msg_clear(&m);
	client_map(&r, NULL, &m);
	peers0 = m.netmap->n_peers;
	ctrl_msg_clear(&m);
	/* r stops reading; n nodes join and leave: ~n x 500 bytes of deltas for r. */
	for (i = 0; i < n; i++) {
		struct ctrl_msg q = { .type = CTRL_MSG_REGISTER };

		client_open(&cl[i]);
		memcpy(q.reg.node_key, cl[i].node_pub, 32);
		client_prove(&cl[i], cl[i].node_priv, &q.reg);
		snprintf(q.reg.hostname, sizeof(q.reg.hostname), "busy-%u", i);
		snprintf(q.reg.auth_key, sizeof(q.reg.auth_key), "%s", E.reusable);
		client_send(&cl[i], &q);
		/* Spread over several flushes, so that r's backlog builds up delta by delta. */
		if (i % 50 == 49)
			usleep(150000);
	}
	for (i = 0; i < n; i++) {
		assert_int_equal(client_recv(&cl[i], &m, 30000), 0);
		assert_int_equal(m.reg_resp.status, CTRL_REGISTER_OK);
		ctrl_msg_clear(&m);
		client_close(&cl[i]);
	}
	usleep(300000);
	out_max = metric("trellis_control_connection_output_max_bytes");
	print_message("slow reader: most output buffered for one connection %" PRIu64
		      " bytes, %" PRIu64 " resyncs\n",
		      out_max, metric("trellis_control_resyncs_total") - resyncs0);
	assert_true(metric("trellis_control_resyncs_total") > resyncs0);
	/*
	 * Without the cap r's backlog would be ~n x 450 bytes less what the sockets
	 * hold (~40 KiB); with it, the 4 KiB backlog plus the delta that crossed it.
	 */
	assert_true(out_max < 32768);
	/* Reading again, r gets a full netmap holding everyone (after what was buffered). */
	for (;;) {
		assert_int_equal(client_recv(&r, &m, 5000), 0);
		if (m.type == CTRL_MSG_NETMAP) {
			assert_true(m.netmap->n_peers >= peers0 + n);
			got_full = true;
		}
		ctrl_msg_clear(&m);
		if (got_full)
			break;
	}
	client_close(&r);
	free(cl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key),
	    cmocka_unit_test(test_http_errors),
	    cmocka_unit_test(test_register_map_delta),
	    cmocka_unit_test(test_map_zstd),
	    cmocka_unit_test(test_no_relay_map),
	    cmocka_unit_test(test_oneoff_reuse),
	    cmocka_unit_test(test_rotate),
	    cmocka_unit_test(test_interactive),
	    cmocka_unit_test(test_relogin),
	    cmocka_unit_test(test_garbage_after_upgrade),
	    cmocka_unit_test(test_resume_disco_key),
	    cmocka_unit_test(test_resume_after_reconnects),
	    cmocka_unit_test(test_reconnect_unchanged),
	    cmocka_unit_test(test_slow_reader),
	    cmocka_unit_test(test_scale),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
