/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/base64.h"
#include "cli/cli.h"
#include "crypto/crypto.h"

void cli_key_warn_if_world_accessible(const char *cmd)
{
	struct stat st;

	/* Only regular files: a pipe or terminal is not somewhere the key stays. */
	if (fstat(STDOUT_FILENO, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & S_IRWXO))
		fprintf(stderr,
			"trellis: %s: warning: writing a key to a world-accessible file; "
			"set the umask to 077 and try again\n",
			cmd);
}

int cli_key_print(const char *cmd, const uint8_t key[32])
{
	char line[KEY_BASE64_LEN + 2];
	size_t off = 0;
	ssize_t n;
	int ret = 0;

	key_to_base64(line, key);
	line[KEY_BASE64_LEN] = '\n';
	line[KEY_BASE64_LEN + 1] = '\0';

	/* write(2) directly, so no copy of the key lingers in a stdio buffer. */
	while (off < KEY_BASE64_LEN + 1) {
		n = write(STDOUT_FILENO, line + off, KEY_BASE64_LEN + 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "trellis: %s: writing standard output: %s\n", cmd,
				n < 0 ? strerror(errno) : "short write");
			ret = 1;
			break;
		}
		off += (size_t)n;
	}
	crypto_wipe(line, sizeof(line));
	return ret;
}
