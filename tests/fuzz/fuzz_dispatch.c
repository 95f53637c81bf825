/* SPDX-License-Identifier: MIT */
/*
 * The control server's dispatch of node messages, without sockets or a
 * store: a sequence of messages from four machines is decoded and handled as
 * server.c does -- register (credential, interactive into pending.c,
 * rotation, re-registration; the store write succeeding or failing as the
 * input says), map_request (a netmap for a proven node), endpoints, logout --
 * against a real registry and mapper. After every step: no node key belongs
 * to two machines, a machine's node has the key it registered, and
 * reservations are gone once their write completed.
 *
 * Input: records of [op][len hi][len lo][len bytes of JSON]. op bits 0-1: the
 * machine; bit 2: the store write fails; bit 3: an admin approves the
 * machine's pending registration first.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/mapper.h"
#include "control/pending.h"
#include "control/register.h"
#include "control/registry.h"
#include "proto/ctrlmsg.h"

#define NOW 1800000000LL
#define MACHINES 4

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct world {
	struct mapper *m;
	struct registry *r;
	struct pending *p;
	uint64_t next_id;
	uint64_t stream[MACHINES]; /* the node id a machine's map stream carries, 0 = none */
};

static void machine_key(unsigned i, uint8_t ret[NETMAP_KEY_LEN])
{
	memset(ret, 0x40 + (int)i, NETMAP_KEY_LEN);
}

static void check(struct world *w)
{
	for (unsigned i = 0; i < MACHINES; i++) {
		uint8_t mk[NETMAP_KEY_LEN];
		const struct registry_node *e;
		const struct control_node *n;

		machine_key(i, mk);
		e = registry_node_by_machine(w->r, mk);
		n = e ? registry_node_record(w->r, e->id) : NULL;
		if (e && !e->id)
			abort(); /* a reservation the machine index points at */
		if (n && registry_node_key_taken(w->r, n->node_key, mk))
			abort(); /* another machine holds our key */
		if (n && memcmp(n->machine_key, mk, NETMAP_KEY_LEN) != 0)
			abort();
	}
}

/* Runs a decision through its write, as server.c's on_register and op_done. */
static void carry_out(struct world *w, struct register_decision *d, bool fail, bool approve)
{
	if (d->error)
		return;
	if (approve)
		d->rec.approved = true;
	if (register_begin(w->r, d, NOW) < 0)
		return;
	if (fail) {
		register_end(w->r, d, -EIO, 0, NOW);
		return;
	}
	register_end(w->r, d, 0, d->insert ? w->next_id++ : d->rec.id, NOW);
}

static void on_register(struct world *w, unsigned i, const struct ctrl_register *msg, bool fail,
			bool approve)
{
	uint8_t mk[NETMAP_KEY_LEN];
	struct register_request req = {
		.msg = msg,
		.machine_key = mk,
		.stream_node_id = w->stream[i],
		.default_tailnet_id = 1,
		.now = NOW,
	};
	struct register_decision d;
	struct pending_reg *pr;
	static const uint8_t src[5] = { 2, 198, 51, 100, 1 };

	machine_key(i, mk);
	register_decide(w->r, &req, &d);
	if (!d.error && d.insert && !d.rec.approved) {
		/* Interactive: it waits in memory; an approval later makes the node. */
		if (pending_add(w->p, d.rec.tailnet_id, mk, msg->node_key, msg->hostname, msg->os,
				src, sizeof(src), (uint64_t)NOW * 1000000000ULL, &pr) < 0)
			return;
		if (!approve)
			return;
		pending_remove(w->p, pr);
		register_decide(w->r, &req, &d);
	}
	carry_out(w, &d, fail, approve);
}

static void on_map_request(struct world *w, unsigned i, const struct ctrl_map_request *mr)
{
	uint8_t mk[NETMAP_KEY_LEN];
	const struct registry_node *e;
	const struct control_node *n;
	char *json;
	size_t len;

	machine_key(i, mk);
	e = registry_node_by_machine(w->r, mk);
	n = e ? registry_node_record(w->r, e->id) : NULL;
	if (!n || memcmp(n->node_key, mr->node_key, NETMAP_KEY_LEN) != 0 || !n->approved ||
	    !control_node_visible(n, NOW))
		return;
	if (mr->n_endpoints)
		mapper_node_endpoints(w->m, n->id, mr->endpoints, mr->n_endpoints);
	if (mr->stream && !w->stream[i]) {
		w->stream[i] = n->id;
		mapper_subscribe(w->m, n->id);
	}
	if (mapper_netmap_json(w->m, n->id, NOW, &json, &len) == 0)
		free(json);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_tailnet t = { .id = 1, .name = "default", .key_expiry_sec = 3600 };
	struct control_user u = { .id = 1, .tailnet_id = 1, .name = "default" };
	struct world w = { .next_id = 1 };
	size_t off = 0;

	w.m = mapper_new();
	if (!w.m || registry_new(w.m, &w.r) < 0 || pending_new(&w.p) < 0)
		abort();
	registry_tailnet_put(w.r, &t);
	registry_user_put(w.r, &u);
	while (off + 3 <= size) {
		uint8_t op = data[off];
		size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
		unsigned i = op & 3;
		struct ctrl_msg m;

		off += 3;
		if (len > size - off)
			len = size - off;
		if (ctrl_msg_decode((const char *)data + off, len, &m) == 0) {
			switch (m.type) {
			case CTRL_MSG_REGISTER:
				on_register(&w, i, &m.reg, op & 4, op & 8);
				break;
			case CTRL_MSG_MAP_REQUEST:
				on_map_request(&w, i, &m.map_req);
				break;
			case CTRL_MSG_ENDPOINTS:
				if (w.stream[i])
					mapper_node_endpoints(w.m, w.stream[i], m.endpoints.endpoints,
							      m.endpoints.n_endpoints);
				break;
			default:
				break;
			}
			ctrl_msg_clear(&m);
		}
		off += len;
		check(&w);
	}
	pending_free(w.p);
	registry_free(w.r);
	mapper_free(w.m);
	return 0;
}
