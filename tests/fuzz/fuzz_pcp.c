/* SPDX-License-Identifier: MIT */
/*
 * The PCP engine on a script of events: the input is a series of records
 * [kind][len][bytes]: a datagram from the gateway (kind 0..3; a record of kind
 * 1..3 gets a nonce, protocol and port that match, so it reaches past the
 * mismatch checks), a step of the clock (4) with the timers run, start (5) or
 * stop (6). The input's size picks the client: bit 1 an IPv6 one (a pinhole), bit 0
 * a bounded number of tries. After every event the engine's invariants must hold: a mapping
 * held has a port and a lifetime, deadlines never lie in the past unless due,
 * and every request is a 60-byte MAP with our nonce.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_portmap_script.h"
#include "portmap/mapping.c"
#include "portmap/pcp.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t nonce[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

static void check(const struct pcp_client *c, uint64_t now)
{
	if (pcp_client_mapped(c) && (!c->map.ext_port || !c->map.lifetime_s))
		abort();
	if (c->state == PORTMAP_IDLE && c->deadline_ns != TIME_NEVER)
		abort();
	(void)now;
}

static void run_tx(struct pcp_client *c, uint64_t now)
{
	uint8_t buf[PCP_MAP_MSG_LEN];
	int n, guard = 0;

	while ((n = pcp_client_tx(c, now, buf, sizeof(buf))) > 0) {
		if (n != PCP_MAP_MSG_LEN || buf[0] != PCP_VERSION || buf[1] != PCP_OP_MAP ||
		    memcmp(buf + 24, nonce, 12))
			abort();
		if (pcp_client_deadline(c) <= now || ++guard > 4)
			abort(); /* one transmission per due time */
	}
	if (n < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pcp_client_cfg cfg = {.internal_port = 41641, .lifetime_s = 7200, .seed = 1};
	struct pcp_client c;
	struct pcp_response resp;
	static struct script_event e;
	uint64_t now = 1000000000ULL;
	size_t off = 0;

	memcpy(cfg.nonce, nonce, 12);
	if (size & 2) {
		/* An IPv6 client, the pinhole case (RFC 6887 §11): 2001:db8:2::2. */
		static const uint8_t a6[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 2, [15] = 2};

		memcpy(cfg.client_addr, a6, 16);
	} else {
		cfg.client_addr[10] = cfg.client_addr[11] = 0xff;
		cfg.client_addr[12] = 198;
		cfg.client_addr[13] = 18;
	}
	cfg.max_tries = size & 1 ? 3 : 0;
	pcp_client_init(&c, &cfg);
	pcp_client_start(&c, now);
	run_tx(&c, now);

	while (script_next(data, size, &off, &e)) {
		switch (e.kind) {
		case SCRIPT_CLOCK:
			now += e.step_ns;
			run_tx(&c, now);
			break;
		case SCRIPT_START:
			pcp_client_start(&c, now);
			run_tx(&c, now);
			break;
		case SCRIPT_STOP:
			pcp_client_stop(&c, now);
			run_tx(&c, now);
			break;
		default:
			if (e.kind != SCRIPT_RX_RAW && e.len >= PCP_MAP_MSG_LEN) {
				e.msg[0] = PCP_VERSION;
				e.msg[1] = 0x80 | PCP_OP_MAP;
				memcpy(e.msg + 24, nonce, 12);
				e.msg[36] = 17;
				e.msg[40] = 41641 >> 8;
				e.msg[41] = 41641 & 0xff;
			}
			if (pcp_response_parse(e.msg, e.len, &resp) == 0 &&
			    (e.len < PCP_MAP_MSG_LEN || e.len > PORTMAP_MSG_MAX || e.len % 4))
				abort();
			pcp_client_rx(&c, now, e.msg, e.len);
			break;
		}
		check(&c, now);
	}
	return 0;
}
