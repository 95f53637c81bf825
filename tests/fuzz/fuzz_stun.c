/* SPDX-License-Identifier: MIT */
/*
 * Both STUN parsers on arbitrary datagrams. What parses must survive a round
 * trip through our builders: a request gets a success response (an address
 * made from its transaction id) and, with unknown attributes, a 420, and both
 * must parse as what they say; a response is rebuilt from what was parsed and
 * must parse to the same.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/stun.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(const uint8_t txid[STUN_TXID_LEN], const struct endpoint *ep, bool fp)
{
	uint8_t buf[STUN_RESPONSE_MAX], got_txid[STUN_TXID_LEN];
	struct endpoint got;
	int n;

	n = stun_binding_response_build(buf, sizeof(buf), txid, ep, fp ? "trellis" : NULL, fp);
	if (n < 0 || !stun_is(buf, (size_t)n))
		abort();
	if (stun_binding_response_parse(buf, (size_t)n, got_txid, &got) < 0)
		abort();
	if (memcmp(got_txid, txid, STUN_TXID_LEN) || !endpoint_equal(&got, ep))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t txid[STUN_TXID_LEN], buf[128];
	struct stun_request req;
	struct endpoint ep;
	struct walk w;
	int n;

	(void)stun_is(data, size);
	if (stun_binding_response_parse(data, size, txid, &ep) == 0) {
		if (!stun_is(data, size) || !endpoint_is_set(&ep))
			abort();
		roundtrip(txid, &ep, size & 1);
	}
	if (stun_binding_request_parse(&req, data, size) == 0) {
		if (req.n_unknown > STUN_UNKNOWN_MAX || memcmp(req.txid, data + 8, STUN_TXID_LEN))
			abort();
		memset(&ep, 0, sizeof(ep));
		if (req.txid[0] & 1) {
			ep.in6.sin6_family = AF_INET6;
			memcpy(&ep.in6.sin6_addr, req.txid, 12);
			memcpy(&ep.in6.sin6_port, req.txid + 10, 2);
		} else {
			ep.in4.sin_family = AF_INET;
			memcpy(&ep.in4.sin_addr, req.txid + 1, 4);
			memcpy(&ep.in4.sin_port, req.txid + 5, 2);
		}
		roundtrip(req.txid, &ep, req.txid[11] & 1);
		if (req.n_unknown) {
			n = stun_error_response_build(buf, sizeof(buf), &req, 420, true);
			if (n < 0 || message_walk(&w, buf, (size_t)n, STUN_BINDING_ERROR) < 0)
				abort();
		}
	}
	return 0;
}
