/* SPDX-License-Identifier: MIT */
/* trellis genkey: a new X25519 private key, clamped, base64 on stdout (like wg genkey). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "crypto/crypto.h"

int cli_genkey(int argc, char **argv, const struct cli_global *g)
{
	uint8_t key[X25519_KEY_LEN];
	int ret = 1;

	(void)g;
	if (argc != 1)
		return cli_usage_error(argc, argv, 1);
	cli_key_warn_if_world_accessible(argv[0]);
	if (x25519_private_generate(key) < 0) {
		fprintf(stderr, "trellis: %s: cannot get random bytes\n", argv[0]);
		goto out;
	}
	ret = cli_key_print(argv[0], key);
out:
	crypto_wipe(key, sizeof(key));
	return ret;
}
