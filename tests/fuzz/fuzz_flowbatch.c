/* SPDX-License-Identifier: MIT */
/*
 * The flow-log batch decoder (proto/flowbatch.c), as the collector runs it on
 * whatever a node sends: peek, verify, read every record. What peeks must
 * survive a round trip: its records re-encoded and signed with a test key peek
 * and verify again and read back the same.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto.h"
#include "proto/flowbatch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct flowbatch_record recs[FLOWBATCH_RECORDS_MAX];
static uint8_t out[FLOWBATCH_MAX_LEN];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t priv[32] = {1, 2, 3};
	struct flowbatch b, d;
	struct flowbatch_record got;
	uint8_t pub[32], h[FLOWBATCH_HASH_LEN];
	int n;

	if (flowbatch_peek(data, size, &b) < 0)
		return 0;
	if (ed25519_public_from_private(pub, priv) < 0)
		abort();
	/* Fuzzed input is not signed with our key (but may be, from the seed corpus). */
	(void)flowbatch_verify(data, size, pub);
	flowbatch_hash(data, size, h);
	for (unsigned i = 0; i < b.n_records; i++)
		flowbatch_record_get(data, i, &recs[i]);
	b.records = recs;
	n = flowbatch_encode(&b, priv, out, sizeof(out));
	if (n != (int)size || flowbatch_peek(out, (size_t)n, &d) < 0 ||
	    flowbatch_verify(out, (size_t)n, pub) < 0)
		abort();
	/* Everything but the signature is as it came. */
	if (memcmp(out, data, size - FLOWBATCH_SIG_LEN) != 0)
		abort();
	for (unsigned i = 0; i < d.n_records; i++) {
		flowbatch_record_get(out, i, &got);
		if (memcmp(&got, &recs[i], sizeof(got)) != 0)
			abort();
	}
	return 0;
}
