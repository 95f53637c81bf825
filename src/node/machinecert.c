/* SPDX-License-Identifier: MIT */
#include "node/machinecert.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/base64.h"
#include "base/log.h"
#include "crypto/crypto.h"
#include "crypto/mcert.h"
#include "node/state.h"

/* A small file whole; its length, -ENOENT, or -errno. */
static int file_read(const char *dir, const char *name, char *buf, size_t cap)
{
	char path[600];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -errno;
	if ((size_t)n >= cap - 1)
		return -EFBIG;
	buf[n] = '\0';
	return (int)n;
}

static int file_write(const char *dir, const char *name, const void *data, size_t len)
{
	char path[600];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return state_file_write_atomic(path, data, len, 0600);
}

/* The certificate key: 0, -ENOENT, -EBADMSG. */
static int key_load(const char *dir, uint8_t ret[MCERT_KEY_LEN])
{
	char text[128];
	int n = file_read(dir, MACHINECERT_KEY_FILE, text, sizeof(text));

	if (n < 0)
		return n;
	while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
		n--;
	n = base64_decode(ret, MCERT_KEY_LEN, text, (size_t)n) == MCERT_KEY_LEN ? 0 : -EBADMSG;
	crypto_wipe(text, sizeof(text));
	return n;
}

int machinecert_request(const char *dir, const uint8_t machine_priv[32], const char *cn, char *ret,
			size_t cap, char *err, size_t err_len)
{
	uint8_t key[MCERT_KEY_LEN], machine_pub[32];
	char text[BASE64_ENCODED_LEN(MCERT_KEY_LEN) + 2];
	int r = key_load(dir, key);

	if (r == -ENOENT) {
		r = ed25519_private_generate(key);
		if (r == 0) {
			base64_encode(text, sizeof(text), key, sizeof(key));
			strcat(text, "\n");
			r = file_write(dir, MACHINECERT_KEY_FILE, text, strlen(text));
			crypto_wipe(text, sizeof(text));
		}
	}
	if (r < 0) {
		snprintf(err, err_len, "%s/%s: %s", dir, MACHINECERT_KEY_FILE,
			 r == -EBADMSG ? "not a base64 key" : strerror(-r));
		goto out;
	}
	r = x25519_public_from_private(machine_pub, machine_priv);
	if (r == 0)
		r = mcert_csr_make(key, machine_pub, cn, ret, cap);
	if (r < 0)
		snprintf(err, err_len, "cannot make the CSR: %s", strerror(-r));
out:
	crypto_wipe(key, sizeof(key));
	return r;
}

int machinecert_install(const char *dir, const uint8_t machine_priv[32], const char *pem,
			size_t len, int64_t now, char *err, size_t err_len)
{
	uint8_t key[MCERT_KEY_LEN], pub[MCERT_KEY_LEN], machine_pub[32], der[MCERT_DER_MAX];
	struct mcert_info info;
	enum mcert_result res;
	int n, r = key_load(dir, key);

	if (r < 0) {
		snprintf(err, err_len,
			 "no certificate key here (%s): run `trellis cert request` "
			 "first",
			 r == -ENOENT ? "none" : strerror(-r));
		return r;
	}
	r = ed25519_public_from_private(pub, key);
	crypto_wipe(key, sizeof(key));
	if (r == 0)
		r = x25519_public_from_private(machine_pub, machine_priv);
	if (r < 0) {
		snprintf(err, err_len, "%s", strerror(-r));
		return r;
	}
	n = mcert_pem_to_der(pem, len, der, sizeof(der));
	if (n < 0) {
		snprintf(err, err_len, "not a PEM certificate%s",
			 n == -EMSGSIZE ? " (too large)" : "");
		return -EINVAL;
	}
	res = mcert_parse(der, (size_t)n, &info);
	if (res == MCERT_OK && memcmp(info.machine_key, machine_pub, 32) != 0)
		res = MCERT_WRONG_MACHINE;
	else if (res == MCERT_OK && memcmp(info.pub, pub, MCERT_KEY_LEN) != 0)
		res = MCERT_WRONG_KEY;
	else if (res == MCERT_OK && now >= info.not_after)
		res = MCERT_EXPIRED;
	if (res != MCERT_OK) {
		snprintf(err, err_len, "certificate refused: %s",
			 res == MCERT_WRONG_KEY ? "it is for another certificate key (an older "
						  "request?)"
						: mcert_result_str(res));
		return -EINVAL;
	}
	r = file_write(dir, MACHINECERT_CERT_FILE, pem, len);
	if (r < 0)
		snprintf(err, err_len, "%s/%s: %s", dir, MACHINECERT_CERT_FILE, strerror(-r));
	return r;
}

void machinecert_attach(const char *dir, const uint8_t hash[32], struct ctrl_register *reg)
{
	uint8_t key[MCERT_KEY_LEN], der[MCERT_DER_MAX], sig[MCERT_SIG_LEN];
	char pem[MCERT_PEM_MAX];
	int n = file_read(dir, MACHINECERT_CERT_FILE, pem, sizeof(pem));

	if (n == -ENOENT)
		return;
	if (n >= 0)
		n = mcert_pem_to_der(pem, (size_t)n, der, sizeof(der));
	if (n > 0 && key_load(dir, key) == 0) {
		if (mcert_proof_sign(key, hash, reg->node_key, sig) == 0 &&
		    base64_encode(reg->machine_cert, sizeof(reg->machine_cert), der, (size_t)n) >=
			0)
			base64_encode(reg->machine_cert_proof, sizeof(reg->machine_cert_proof), sig,
				      sizeof(sig));
		crypto_wipe(key, sizeof(key));
		return;
	}
	log_ratelimited(LOG_LEVEL_WARN, "%s/%s: unusable, registering without it", dir,
			MACHINECERT_CERT_FILE);
}

int machinecert_info(const char *dir, struct mcert_info *ret, char ret_sha256[65])
{
	uint8_t der[MCERT_DER_MAX];
	char pem[MCERT_PEM_MAX];
	int n = file_read(dir, MACHINECERT_CERT_FILE, pem, sizeof(pem));

	if (n < 0)
		return n == -ENOENT ? n : -EINVAL;
	if (mcert_fingerprint(pem, (size_t)n, ret_sha256) < 0)
		return -EINVAL;
	n = mcert_pem_to_der(pem, (size_t)n, der, sizeof(der));
	if (n <= 0 || mcert_parse(der, (size_t)n, ret) != MCERT_OK)
		return -EINVAL;
	return 0;
}
