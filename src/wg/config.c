/* SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "crypto/crypto.h"
#include "wg/config.h"

void wg_device_cfg_free(struct wg_device_cfg *cfg)
{
	if (!cfg)
		return;
	for (unsigned i = 0; i < cfg->n_peers; i++)
		free(cfg->peers[i].allowedips);
	if (cfg->peers) {
		/* Preshared keys live in the peer array. */
		crypto_wipe(cfg->peers, cfg->n_peers * sizeof(*cfg->peers));
		free(cfg->peers);
	}
	crypto_wipe(cfg, sizeof(*cfg));
	free(cfg);
}

void wg_device_info_free(struct wg_device_info *info)
{
	if (!info)
		return;
	for (unsigned i = 0; i < info->n_peers; i++)
		free(info->peers[i].allowedips);
	if (info->peers) {
		crypto_wipe(info->peers, info->n_peers * sizeof(*info->peers));
		free(info->peers);
	}
	crypto_wipe(info, sizeof(*info));
	free(info);
}
