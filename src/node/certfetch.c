/* SPDX-License-Identifier: MIT */
#include "node/certfetch.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/base64.h"
#include "crypto/mcert.h"
#include "node/machinecert.h"
#include "proto/ctrlmsg.h"

#define PEM_HEAD "-----BEGIN CERTIFICATE-----\n"
#define PEM_TAIL "-----END CERTIFICATE-----\n"
#define PEM_LINE 64 /* RFC 7468 section 2: lines of 64 characters */

/* The DER (its length) and fields of a certificate sent as base64 DER; -EBADMSG. */
static int parse(const char *b64, size_t len, uint8_t der[MCERT_DER_MAX], struct mcert_info *ret)
{
	int n = base64_decode(der, MCERT_DER_MAX, b64, len);

	if (n <= 0 || mcert_parse(der, (size_t)n, ret) != MCERT_OK)
		return -EBADMSG;
	return n;
}

int certfetch_serial(const char *b64, size_t len, char ret[MCERT_SERIAL_MAX])
{
	uint8_t der[MCERT_DER_MAX];
	struct mcert_info info;
	int n = parse(b64, len, der, &info);

	if (n < 0)
		return n;
	memcpy(ret, info.serial, MCERT_SERIAL_MAX);
	return 0;
}

int certfetch_pem(const char *b64, size_t len, int64_t installed_not_after, char *ret, size_t cap)
{
	char text[BASE64_ENCODED_LEN(MCERT_DER_MAX) + 1];
	uint8_t der[MCERT_DER_MAX];
	struct mcert_info info;
	size_t k = 0;
	int n;

	n = parse(b64, len, der, &info);
	if (n < 0)
		return n;
	if (info.not_after <= installed_not_after)
		return 0;
	/* Written again from the DER that parsed: nothing of the sender's text reaches the file. */
	n = base64_encode(text, sizeof(text), der, (size_t)n);
	if (n < 0)
		return -EMSGSIZE;
	if (cap < sizeof(PEM_HEAD) + (size_t)n + (size_t)n / PEM_LINE + 1 + sizeof(PEM_TAIL))
		return -EMSGSIZE;
	memcpy(ret, PEM_HEAD, sizeof(PEM_HEAD) - 1);
	k = sizeof(PEM_HEAD) - 1;
	for (int i = 0; i < n; i += PEM_LINE) {
		size_t line = (size_t)(n - i) < PEM_LINE ? (size_t)(n - i) : PEM_LINE;

		memcpy(ret + k, text + i, line);
		k += line;
		ret[k++] = '\n';
	}
	memcpy(ret + k, PEM_TAIL, sizeof(PEM_TAIL));
	return (int)(k + sizeof(PEM_TAIL) - 1);
}

int certfetch_install(const char *dir, const uint8_t machine_priv[32], const char *b64, int64_t now,
		      char *err, size_t err_len)
{
	char pem[MCERT_PEM_MAX], fp[65];
	struct mcert_info cur;
	int64_t cur_end = 0;
	int n;

	/* None installed, or unreadable: the node presented none, so any good one is newer. */
	if (machinecert_info(dir, &cur, fp) == 0)
		cur_end = cur.not_after;
	n = certfetch_pem(b64, strnlen(b64, CTRL_MCERT_MAX), cur_end, pem, sizeof(pem));
	if (n <= 0) {
		snprintf(err, err_len, "%s",
			 n == 0 ? "it ends no later than the one installed" : "not a certificate");
		return n;
	}
	n = machinecert_install(dir, machine_priv, pem, (size_t)n, now, err, err_len);
	return n < 0 ? n : 1;
}
