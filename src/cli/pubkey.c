/* SPDX-License-Identifier: MIT */
/* trellis pubkey: private key (base64) on stdin, public key (base64) on stdout, like wg pubkey. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/base64.h"
#include "cli/cli.h"
#include "crypto/crypto.h"

/* Far more than a key and its whitespace; anything longer is not a key. */
#define INPUT_MAX 256

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' ||
	       c == '\0';
}

/* Reads all of stdin into buf (NUL-terminated). Length, or -EMSGSIZE / -errno. */
static ssize_t read_all(char *buf, size_t cap)
{
	size_t len = 0;
	ssize_t n;

	for (;;) {
		n = read(STDIN_FILENO, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == cap - 1) {
			char c;

			/* Full: fine only if nothing follows. */
			do
				n = read(STDIN_FILENO, &c, 1);
			while (n < 0 && errno == EINTR);
			if (n != 0)
				return n < 0 ? -errno : -EMSGSIZE;
			break;
		}
	}
	buf[len] = '\0';
	return (ssize_t)len;
}

/* Parses the key from the input, allowing surrounding whitespace. 0 or -EINVAL. */
static int parse_private(uint8_t ret_priv[X25519_KEY_LEN], char *buf, size_t len)
{
	char *s = buf, *e = buf + len;

	while (s < e && is_space(*s))
		s++;
	while (e > s && is_space(e[-1]))
		e--;
	*e = '\0';
	return key_from_base64(ret_priv, s);
}

int cli_pubkey(int argc, char **argv, const struct cli_global *g)
{
	uint8_t priv[X25519_KEY_LEN], pub[X25519_KEY_LEN];
	char buf[INPUT_MAX];
	ssize_t len;
	int ret = 1;

	(void)g;
	if (argc != 1)
		return cli_usage_error(argc, argv, 1);
	len = read_all(buf, sizeof(buf));
	if (len < 0 && len != -EMSGSIZE) {
		fprintf(stderr, "trellis: %s: reading standard input: %s\n", argv[0],
			strerror((int)-len));
		goto out;
	}
	if (len < 0 || parse_private(priv, buf, (size_t)len) < 0) {
		fprintf(stderr, "trellis: %s: key is not valid base64 of 32 bytes\n", argv[0]);
		goto out;
	}
	if (x25519_public_from_private(pub, priv) < 0) {
		fprintf(stderr, "trellis: %s: cannot compute the public key\n", argv[0]);
		goto out;
	}
	ret = cli_key_print(argv[0], pub);
out:
	crypto_wipe(buf, sizeof(buf));
	crypto_wipe(priv, sizeof(priv));
	return ret;
}
