/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "base/time.h"
#include "node/hslog.h"

struct seen {
	uint8_t key[WG_KEY_LEN];
	uint64_t hs_wall_ns;
};

struct hslog {
	struct seen *seen; /* sorted by key */
	unsigned n_seen;
	unsigned tokens;
	uint64_t refill_ns; /* when the next token is due; 0: not started */
	uint64_t held;	    /* lines held back since the last one */
};

static int seen_cmp(const void *a, const void *b)
{
	return memcmp(a, b, WG_KEY_LEN);
}

struct hslog *hslog_new(void)
{
	struct hslog *h = calloc(1, sizeof(*h));

	if (h)
		h->tokens = HSLOG_BURST;
	return h;
}

void hslog_free(struct hslog *h)
{
	if (!h)
		return;
	free(h->seen);
	free(h);
}

static bool take_token(struct hslog *h, uint64_t now_ns)
{
	if (!h->refill_ns)
		h->refill_ns = now_ns + HSLOG_REFILL_NS;
	while (h->tokens < HSLOG_BURST && now_ns >= h->refill_ns) {
		h->tokens++;
		h->refill_ns += HSLOG_REFILL_NS;
	}
	if (h->tokens == HSLOG_BURST)
		h->refill_ns = now_ns + HSLOG_REFILL_NS;
	if (!h->tokens)
		return false;
	h->tokens--;
	return true;
}

static void duration_fmt(char *buf, size_t size, uint64_t ns)
{
	uint64_t s = ns / NSEC_PER_SEC;

	if (s >= 3600)
		snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s / 60 % 60);
	else
		snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
}

static void line_emit(struct hslog *h, const struct wg_peer_info *p, uint64_t was_ns,
		      uint64_t now_ns, hslog_name_fn *name, hslog_emit_fn *emit, void *ctx)
{
	char line[HSLOG_LINE_MAX], key[KEY_BASE64_LEN + 1], ep[ENDPOINT_STR_MAX];
	char gap[32], held[64] = "";
	const char *who;

	if (!take_token(h, now_ns)) {
		h->held++;
		return;
	}
	/* After the token: the caller's lookup runs at most as often as lines are written. */
	who = name ? name(ctx, p->public_key) : NULL;
	if (!who) {
		key_to_base64(key, p->public_key);
		who = key;
	}
	if (p->endpoint.sa.sa_family == AF_UNSPEC)
		snprintf(ep, sizeof(ep), "an unknown endpoint");
	else
		endpoint_format(&p->endpoint, ep, sizeof(ep));
	if (h->held)
		snprintf(held, sizeof(held), " (%" PRIu64 " handshake lines held back)", h->held);
	h->held = 0;
	if (!was_ns) {
		snprintf(line, sizeof(line), "handshake with %s: first since start, via %s%s", who,
			 ep, held);
	} else {
		duration_fmt(gap, sizeof(gap), p->last_handshake_wall_ns - was_ns);
		snprintf(line, sizeof(line),
			 "handshake with %s: again after %s without one, via %s%s", who, gap, ep,
			 held);
	}
	emit(ctx, line);
}

int hslog_update(struct hslog *h, const struct wg_device_info *info, uint64_t now_ns,
		 hslog_name_fn *name, hslog_emit_fn *emit, void *ctx)
{
	struct seen *now = malloc(((size_t)info->n_peers + 1) * sizeof(*now));
	unsigned i, n = 0;

	if (!now)
		return -ENOMEM;
	for (i = 0; i < info->n_peers; i++) {
		const struct wg_peer_info *p = &info->peers[i];
		const struct seen *was = h->n_seen ? bsearch(p->public_key, h->seen, h->n_seen,
							     sizeof(*h->seen), seen_cmp)
						   : NULL;
		uint64_t was_ns = was ? was->hs_wall_ns : 0;

		/* Peers that never shook hands are not kept: they have nothing to compare. */
		if (!p->last_handshake_wall_ns)
			continue;
		if (p->last_handshake_wall_ns != was_ns &&
		    (!was_ns || p->last_handshake_wall_ns - was_ns > HSLOG_GAP_NS))
			line_emit(h, p, was_ns, now_ns, name, emit, ctx);
		memcpy(now[n].key, p->public_key, WG_KEY_LEN);
		now[n++].hs_wall_ns = p->last_handshake_wall_ns;
	}
	qsort(now, n, sizeof(*now), seen_cmp);
	free(h->seen);
	h->seen = now;
	h->n_seen = n;
	return 0;
}
