/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "base/time.h"
#include "portmap/mapping.h"

const char *portmap_state_name(enum portmap_state s)
{
	switch (s) {
	case PORTMAP_IDLE:
		return "idle";
	case PORTMAP_REQUESTING:
		return "requesting";
	case PORTMAP_READY:
		return "ready";
	case PORTMAP_MAPPED:
		return "mapped";
	case PORTMAP_RENEWING:
		return "renewing";
	case PORTMAP_DELETING:
		return "deleting";
	case PORTMAP_FAILED:
		return "failed";
	case PORTMAP_UNSUPPORTED:
		return "unsupported";
	}
	return "?";
}

/* RFC 6887 §8.5 (RFC 6886 §3.6 states the same with 7/8): whole seconds on both sides. */
bool portmap_epoch_update(struct portmap_epoch *e, uint32_t server_s, uint64_t now_ns)
{
	uint64_t cdelta, sdelta;
	bool ok = true;

	if (e->seen) {
		if ((uint64_t)server_s + 1 < e->server_s) {
			ok = false;
		} else {
			sdelta = server_s >= e->server_s ? server_s - e->server_s : 0;
			cdelta = now_ns > e->client_ns ? (now_ns - e->client_ns) / NSEC_PER_SEC : 0;
			if (cdelta + 2 < sdelta - sdelta / 16 || sdelta + 2 < cdelta - cdelta / 16)
				ok = false;
		}
	}
	e->seen = true;
	e->server_s = server_s;
	e->client_ns = now_ns;
	return ok;
}

void portmap_addr_from_v4(uint8_t ret[16], const uint8_t v4[4])
{
	memset(ret, 0, 10);
	ret[10] = ret[11] = 0xff;
	memcpy(ret + 12, v4, 4);
}

bool portmap_addr_is_v4(const uint8_t a[16])
{
	static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	return !memcmp(a, prefix, sizeof(prefix));
}

/* splitmix64: jitter only, never a secret (PCP's nonce comes from the caller). */
uint32_t portmap_rand(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (uint32_t)((z ^ (z >> 31)) >> 32);
}
