/* SPDX-License-Identifier: MIT */
/*
 * The NAT-PMP engine on a script of events, as fuzz_pcp: records
 * [kind][len][bytes] are a datagram from the gateway (0..3; kinds 1..3 get a
 * version 0 response header for the request under way, so they reach past the
 * opcode checks), a clock step with the timers run (4), start (5), stop (6).
 * Invariants after each event: a mapping held has a port and a lifetime, an
 * idle engine has no deadline, requests are 2 or 12 bytes of version 0.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_portmap_script.h"
#include "portmap/mapping.c"
#include "portmap/natpmp.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const struct natpmp_client *c)
{
	if (natpmp_client_mapped(c) && (!c->map.ext_port || !c->map.lifetime_s))
		abort();
	if (c->state == PORTMAP_IDLE && c->deadline_ns != TIME_NEVER)
		abort();
}

static void run_tx(struct natpmp_client *c, uint64_t now)
{
	uint8_t buf[NATPMP_MAP_REQ_LEN];
	int n, guard = 0;

	while ((n = natpmp_client_tx(c, now, buf, sizeof(buf))) > 0) {
		if ((n != NATPMP_ADDR_REQ_LEN && n != NATPMP_MAP_REQ_LEN) || buf[0] != 0)
			abort();
		if (++guard > 4)
			abort();
	}
	if (n < 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct natpmp_client c;
	struct natpmp_response resp;
	static struct script_event e;
	uint64_t now = 1000000000ULL;
	size_t off = 0;

	natpmp_client_init(&c,
			   &(struct natpmp_client_cfg){.internal_port = 41641, .lifetime_s = 7200});
	natpmp_client_start(&c, now, size & 1);
	run_tx(&c, now);

	while (script_next(data, size, &off, &e)) {
		switch (e.kind) {
		case SCRIPT_CLOCK:
			now += e.step_ns;
			run_tx(&c, now);
			break;
		case SCRIPT_START:
			natpmp_client_start(&c, now, e.raw & 0x80);
			run_tx(&c, now);
			break;
		case SCRIPT_STOP:
			natpmp_client_stop(&c, now);
			run_tx(&c, now);
			break;
		default:
			if (e.kind != SCRIPT_RX_RAW && e.len >= 2) {
				e.msg[0] = 0;
				e.msg[1] = 0x80 | c.op;
			}
			if (e.kind == 2 && e.len >= 10) {
				e.msg[8] = 41641 >> 8;
				e.msg[9] = 41641 & 0xff;
			}
			if (natpmp_response_parse(e.msg, e.len, &resp) == 0 &&
			    (e.len < NATPMP_HEADER_LEN ||
			     (!resp.result && resp.opcode == NATPMP_OP_MAP_UDP &&
			      e.len < NATPMP_MAP_RESP_LEN)))
				abort();
			natpmp_client_rx(&c, now, e.msg, e.len);
			if (e.kind == 3)
				natpmp_client_map(&c, now);
			break;
		}
		check(&c);
	}
	return 0;
}
