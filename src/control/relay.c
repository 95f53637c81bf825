// SPDX-License-Identifier: MIT
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base64.h"
#include "base/log.h"
#include "base/time.h"
#include "control/mapper.h"
#include "control/relay.h"
#include "crypto/crypto.h"
#include "net/httpd.h"
#include "relay/keyfile.h"
#include "relay/server.h"
#include "relay/stund.h"
#include "relay/verify.h"

struct control_relay {
	struct mapper *m;
	struct relay_server *srv;
	struct stund *stun;
	uint64_t gen;
	uint8_t secret[32];
	char secret_b64[KEY_BASE64_LEN + 1];
	uint64_t verify_requests, verify_refused;
};

static bool key_admitted(const struct control_relay *cr, const uint8_t *key)
{
	const struct control_node *n = mapper_node_by_key(cr->m, key);

	return n && control_node_visible(n, time_wall_s());
}

static int admit_check(void *ctx, const uint8_t key[RELAY_KEY_LEN], uint64_t token)
{
	(void)token;
	return key_admitted(ctx, key) ? 1 : 0;
}

static const struct relay_admit_ops admit_ops = {.check = admit_check};

/*
 * GET /relay/verify/?gen=G&k=KEY... (keys in base64) with "Authorization: Bearer SECRET":
 * "gen N\n", then "1\n" (admitted) or "0\n" per key, in order.
 */
static void get_verify(struct httpd_request *r, void *ctx)
{
	struct control_relay *cr = ctx;
	const struct http_request *req = r->head;
	const struct http_header *auth =
	    http_header_find(req->headers, req->n_headers, "Authorization");
	const char *p = req->target + strlen(RELAY_VERIFY_PATH),
		   *end = req->target + req->target_len;
	char body[32 + RELAY_VERIFY_KEYS_MAX * 2];
	size_t off, n_keys = 0;
	char want[KEY_BASE64_LEN + 8];

	snprintf(want, sizeof(want), "Bearer %s", cr->secret_b64);
	cr->verify_requests++;
	if (!auth || auth->value_len != strlen(want) ||
	    !crypto_equal(auth->value, want, auth->value_len)) {
		cr->verify_refused++;
		return httpd_error(r, 401, "relay verify without the secret");
	}
	off = (size_t)snprintf(body, sizeof(body), "gen %" PRIu64 "\n", mapper_generation(cr->m));
	if (p < end && *p != '?')
		return httpd_error(r, 404, NULL);
	while (p < end) {
		uint8_t key[RELAY_KEY_LEN];
		const char *amp;

		p++; /* '?' or '&' */
		amp = memchr(p, '&', (size_t)(end - p));
		if (!amp)
			amp = end;
		if (amp - p == 2 + KEY_BASE64_LEN && p[0] == 'k' && p[1] == '=') {
			char b64[KEY_BASE64_LEN + 1];

			if (n_keys == RELAY_VERIFY_KEYS_MAX)
				return httpd_error(r, 400, "relay verify: too many keys");
			memcpy(b64, p + 2, KEY_BASE64_LEN);
			b64[KEY_BASE64_LEN] = '\0';
			if (key_from_base64(key, b64) < 0)
				return httpd_error(r, 400, "relay verify: bad key");
			body[off++] = key_admitted(cr, key) ? '1' : '0';
			body[off++] = '\n';
			n_keys++;
		} else if (amp - p < 4 || strncmp(p, "gen=", 4) != 0) {
			return httpd_error(r, 400, "relay verify: bad query");
		}
		p = amp;
	}
	httpd_reply(r, 200, "text/plain", body, off);
}

int control_relay_new(struct loop *loop, struct httpd *h, struct mapper *m,
		      const struct control_relay_opts *o, struct control_relay **ret)
{
	struct control_relay *cr = calloc(1, sizeof(*cr));
	struct relay_server_opts so = {.name = "relay", .admit = &admit_ops};
	uint8_t priv[RELAY_KEY_LEN];
	char path[4096];
	int r;

	if (!cr)
		return -ENOMEM;
	cr->m = m;
	so.admit_ctx = cr;
	so.priv = priv;
	snprintf(path, sizeof(path), "%s/%s", o->state_dir, RELAY_VERIFY_SECRET_FILE);
	r = relay_keyfile_load(path, cr->secret, true);
	if (r < 0)
		goto out;
	key_to_base64(cr->secret_b64, cr->secret);
	r = httpd_route_add(h, "GET", RELAY_VERIFY_PATH, get_verify, cr);
	if (r < 0)
		goto out;
	if (o->relay) {
		snprintf(path, sizeof(path), "%s/%s", o->state_dir, CONTROL_RELAY_KEY_FILE);
		r = relay_keyfile_load(path, priv, true);
		if (r < 0)
			goto out;
		r = relay_server_new(loop, &so, &cr->srv);
		crypto_wipe(priv, sizeof(priv));
		if (r < 0)
			goto out;
		r = relay_server_route(cr->srv, h);
		if (r < 0)
			goto out;
		cr->gen = mapper_generation(m);
	}
	if (o->stun_port) {
		r = stund_new(loop, o->stun_port, &cr->stun);
		if (r < 0 && o->stun_required)
			goto out;
		if (r < 0)
			log_warn("control: no STUN server on UDP port %u", o->stun_port);
	}
	if (cr->srv) {
		char b64[KEY_BASE64_LEN + 1];

		key_to_base64(b64, relay_server_pub(cr->srv));
		log_info("control: relay at GET %s, relay key %s, STUN on UDP %u", RELAY_HTTP_PATH,
			 b64, cr->stun ? stund_port(cr->stun) : 0);
	}
	*ret = cr;
	return 0;
out:
	control_relay_free(cr);
	return r;
}

const uint8_t *control_relay_pub(const struct control_relay *cr)
{
	return cr && cr->srv ? relay_server_pub(cr->srv) : NULL;
}

uint16_t control_relay_stun_port(const struct control_relay *cr)
{
	return cr && cr->stun ? stund_port(cr->stun) : 0;
}

void control_relay_tick(struct control_relay *cr)
{
	uint64_t gen;

	if (!cr || !cr->srv)
		return;
	gen = mapper_generation(cr->m);
	if (gen == cr->gen)
		return;
	cr->gen = gen;
	relay_server_recheck(cr->srv);
}

void control_relay_metrics_write(const struct control_relay *cr, FILE *f)
{
	if (!cr)
		return;
	if (cr->srv)
		relay_server_metrics_write(cr->srv, f);
	stund_metrics_write(cr->stun, f);
	fprintf(f,
		"# HELP trellis_control_relay_verify_total Requests of standalone relays to "
		"GET /relay/verify, and those refused for a wrong secret.\n"
		"# TYPE trellis_control_relay_verify_total counter\n"
		"trellis_control_relay_verify_total{what=\"request\"} %" PRIu64 "\n"
		"trellis_control_relay_verify_total{what=\"unauthorized\"} %" PRIu64 "\n",
		cr->verify_requests, cr->verify_refused);
}

void control_relay_free(struct control_relay *cr)
{
	if (!cr)
		return;
	relay_server_free(cr->srv);
	stund_free(cr->stun);
	crypto_wipe(cr->secret, sizeof(cr->secret));
	crypto_wipe(cr->secret_b64, sizeof(cr->secret_b64));
	free(cr);
}
