/* SPDX-License-Identifier: MIT */
/*
 * wg_uapi_set_parse on arbitrary bytes; whatever it accepts is turned into the
 * state snapshot the device would report and formatted back, so both
 * directions of the protocol run under the sanitizers.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "wg/uapi.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct wg_device_info *info_from_cfg(const struct wg_device_cfg *cfg)
{
	struct wg_device_info *info = calloc(1, sizeof(*info));

	if (!info)
		abort();
	info->has_private_key = cfg->has_private_key;
	memcpy(info->private_key, cfg->private_key, WG_KEY_LEN);
	info->listen_port = cfg->listen_port;
	info->fwmark = cfg->fwmark;
	info->peers = calloc(cfg->n_peers ? cfg->n_peers : 1, sizeof(*info->peers));
	if (!info->peers)
		abort();
	info->n_peers = cfg->n_peers;
	for (unsigned i = 0; i < cfg->n_peers; i++) {
		const struct wg_peer_cfg *c = &cfg->peers[i];
		struct wg_peer_info *p = &info->peers[i];

		memcpy(p->public_key, c->public_key, WG_KEY_LEN);
		p->has_preshared_key = c->has_preshared_key;
		memcpy(p->preshared_key, c->preshared_key, WG_KEY_LEN);
		if (c->has_endpoint)
			p->endpoint = c->endpoint;
		p->persistent_keepalive = c->persistent_keepalive;
		/* Derived from the input so the number formatting sees varied values. */
		p->last_handshake_wall_ns = (uint64_t)c->public_key[0] << 56 | c->public_key[1];
		p->rx_bytes = UINT64_MAX - c->public_key[2];
		p->tx_bytes = c->persistent_keepalive;
		p->allowedips =
		    calloc(c->n_allowedips ? c->n_allowedips : 1, sizeof(*p->allowedips));
		if (!p->allowedips)
			abort();
		p->n_allowedips = c->n_allowedips;
		if (c->n_allowedips)
			memcpy(p->allowedips, c->allowedips,
			       c->n_allowedips * sizeof(*p->allowedips));
	}
	return info;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wg_device_cfg *cfg = NULL;
	struct wg_device_info *info;
	unsigned line = 0;
	char *text = NULL;
	int r;

	log_set_level(-1);
	r = wg_uapi_set_parse((const char *)data, size, &cfg, &line);
	if (r < 0) {
		if (r != -EINVAL && r != -EPROTO && r != -ENOMEM)
			abort();
		if (cfg)
			abort(); /* ret_ is set only on success */
		return 0;
	}
	info = info_from_cfg(cfg);
	r = wg_uapi_get_format(info, &text);
	if (r < 0 || strlen(text) != (size_t)r)
		abort();
	free(text);
	wg_device_info_free(info);
	wg_device_cfg_free(cfg);
	return 0;
}
