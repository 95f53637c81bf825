/* SPDX-License-Identifier: MIT */
/* trellis genpsk: 32 random bytes for a preshared key, base64 on stdout (like wg genpsk). */
#include <stdio.h>

#include "cli/cli.h"
#include "crypto/crypto.h"

int cli_genpsk(int argc, char **argv, const struct cli_global *g)
{
	uint8_t psk[32];
	int ret = 1;

	(void)g;
	if (argc != 1)
		return cli_usage_error(argc, argv, 1);
	cli_key_warn_if_world_accessible(argv[0]);
	if (crypto_random(psk, sizeof(psk)) < 0) {
		fprintf(stderr, "trellis: %s: cannot get random bytes\n", argv[0]);
		goto out;
	}
	ret = cli_key_print(argv[0], psk);
out:
	crypto_wipe(psk, sizeof(psk));
	return ret;
}
