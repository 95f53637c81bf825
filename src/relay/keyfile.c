// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/base64.h"
#include "crypto/crypto.h"
#include "relay/keyfile.h"

static int create_file(const char *path, uint8_t key[32])
{
	char text[KEY_BASE64_LEN + 1];
	int fd, r = 0;

	if (x25519_private_generate(key) < 0)
		return -EIO;
	key_to_base64(text, key);
	text[KEY_BASE64_LEN] = '\n';
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, text, KEY_BASE64_LEN + 1) != KEY_BASE64_LEN + 1 || fsync(fd) < 0) {
		r = -errno;
		fprintf(stderr, "%s: cannot write: %s\n", path, strerror(errno));
	}
	if (fd >= 0)
		close(fd);
	crypto_wipe(text, sizeof(text));
	if (r < 0)
		crypto_wipe(key, 32);
	return r;
}

int relay_keyfile_load(const char *path, uint8_t ret_key[32], bool create)
{
	char text[KEY_BASE64_LEN + 2];
	uint8_t key[32];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;

	if (fd < 0 && errno == ENOENT && create) {
		r = create_file(path, key);
		if (r == 0)
			memcpy(ret_key, key, 32);
		crypto_wipe(key, sizeof(key));
		return r;
	}
	if (fd < 0) {
		r = -errno;
		fprintf(stderr, "%s: cannot open: %s\n", path, strerror(errno));
		return r;
	}
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	r = -EINVAL;
	if (n >= KEY_BASE64_LEN && (n == KEY_BASE64_LEN || text[KEY_BASE64_LEN] == '\n')) {
		text[KEY_BASE64_LEN] = '\0';
		if (key_from_base64(key, text) == 0) {
			memcpy(ret_key, key, 32);
			r = 0;
		}
	}
	crypto_wipe(text, sizeof(text));
	crypto_wipe(key, sizeof(key));
	if (r < 0)
		fprintf(stderr, "%s: not a base64 32-byte key (as `trellis genkey` writes)\n",
			path);
	return r;
}
