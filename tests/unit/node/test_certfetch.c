/* SPDX-License-Identifier: MIT */
/*
 * Renewed certificates from a register response (node/certfetch.c): one of this machine
 * and certificate key that ends later is installed (and what `machinecert_info` reads is
 * it); older or equal ones, another machine's, another key's, an ended one, and bytes that
 * are not a certificate are refused and leave the installed one alone.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "base/base64.h"
#include "crypto/crypto.h"
#include "crypto/mcert.h"
#include "node/certfetch.h"
#include "node/machinecert.h"
#include "proto/ctrlmsg.h"

#define T0 1800000000LL
#define DAY 86400LL

static char dir[64];
static uint8_t machine_priv[32];
static char ca_key[MCERT_PEM_MAX], ca_cert[MCERT_PEM_MAX];
static struct mcert_info req;

static int setup(void **state)
{
	char csr[MCERT_PEM_MAX], err[256];

	(void)state;
	strcpy(dir, "/tmp/trellis-certfetch-XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(crypto_random(machine_priv, sizeof(machine_priv)), 0);
	assert_true(
	    machinecert_request(dir, machine_priv, "n1", csr, sizeof(csr), err, sizeof(err)) > 0);
	assert_int_equal(mcert_csr_parse(csr, strlen(csr), &req), MCERT_OK);
	assert_int_equal(mcert_ca_make("test CA", T0, 400 * DAY, ca_key, sizeof(ca_key), ca_cert,
				       sizeof(ca_cert)),
			 0);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	return 0;
}

/* A certificate for r ending at end: PEM into pem, base64 DER into b64; its serial. */
static const char *sign(const struct mcert_info *r, int64_t end, char pem[MCERT_PEM_MAX],
			char b64[CTRL_MCERT_MAX])
{
	static struct mcert_info info;
	uint8_t der[MCERT_DER_MAX];
	int n;

	assert_true(mcert_sign(ca_key, strlen(ca_key), ca_cert, strlen(ca_cert), r, NULL, T0 - 300,
			       end, &info, pem, MCERT_PEM_MAX) > 0);
	n = mcert_pem_to_der(pem, strlen(pem), der, sizeof(der));
	assert_true(n > 0);
	assert_true(base64_encode(b64, CTRL_MCERT_MAX, der, (size_t)n) > 0);
	return info.serial;
}

static void installed(const char *serial)
{
	struct mcert_info info;
	char fp[65];

	assert_int_equal(machinecert_info(dir, &info, fp), 0);
	assert_string_equal(info.serial, serial);
}

static void test_install(void **state)
{
	char pem[MCERT_PEM_MAX], b64[CTRL_MCERT_MAX], err[256], s1[MCERT_SERIAL_MAX];
	char s2[MCERT_SERIAL_MAX];
	struct mcert_info other = req;

	(void)state;
	snprintf(s1, sizeof(s1), "%s", sign(&req, T0 + 30 * DAY, pem, b64));
	assert_int_equal(
	    machinecert_install(dir, machine_priv, pem, strlen(pem), T0, err, sizeof(err)), 0);
	installed(s1);

	/* Later: installed, as PEM that the install reads back. */
	snprintf(s2, sizeof(s2), "%s", sign(&req, T0 + 60 * DAY, pem, b64));
	assert_int_equal(certfetch_install(dir, machine_priv, b64, T0, err, sizeof(err)), 1);
	installed(s2);
	/* The same again, or an older one: not taken. */
	assert_int_equal(certfetch_install(dir, machine_priv, b64, T0, err, sizeof(err)), 0);
	sign(&req, T0 + 45 * DAY, pem, b64);
	assert_int_equal(certfetch_install(dir, machine_priv, b64, T0, err, sizeof(err)), 0);
	installed(s2);

	/* Another machine's, another certificate key's: refused, though they end later. */
	other.machine_key[0] ^= 1;
	sign(&other, T0 + 90 * DAY, pem, b64);
	assert_int_equal(certfetch_install(dir, machine_priv, b64, T0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "refused"));
	other = req;
	{
		uint8_t priv[MCERT_KEY_LEN];

		assert_int_equal(ed25519_private_generate(priv), 0);
		assert_int_equal(ed25519_public_from_private(other.pub, priv), 0);
	}
	sign(&other, T0 + 90 * DAY, pem, b64);
	assert_int_equal(certfetch_install(dir, machine_priv, b64, T0, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "another certificate key"));
	/* Later than the installed one, but ended by now. */
	sign(&req, T0 + 90 * DAY, pem, b64);
	assert_int_equal(certfetch_install(dir, machine_priv, b64, T0 + 91 * DAY, err, sizeof(err)),
			 -EINVAL);
	installed(s2);
}

static void test_bad_input(void **state)
{
	char pem[MCERT_PEM_MAX], b64[CTRL_MCERT_MAX], err[256];
	uint8_t der[MCERT_DER_MAX];
	size_t len;
	int n;

	(void)state;
	assert_int_equal(certfetch_install(dir, machine_priv, "", T0, err, sizeof(err)), -EBADMSG);
	assert_int_equal(certfetch_install(dir, machine_priv, "!!!!", T0, err, sizeof(err)),
			 -EBADMSG);
	assert_int_equal(certfetch_install(dir, machine_priv, "AAAA", T0, err, sizeof(err)),
			 -EBADMSG);
	/* A good one cut short. */
	sign(&req, T0 + 60 * DAY, pem, b64);
	n = base64_decode(der, sizeof(der), b64, strlen(b64));
	assert_true(n > 100);
	len = (size_t)n;
	base64_encode(b64, sizeof(b64), der, len - 30);
	assert_int_equal(certfetch_pem(b64, strlen(b64), 0, pem, sizeof(pem)), -EBADMSG);
	/* The PEM made from a whole one is the same DER again; a buffer too small is refused. */
	base64_encode(b64, sizeof(b64), der, len);
	n = certfetch_pem(b64, strlen(b64), 0, pem, sizeof(pem));
	assert_int_equal(n, (int)strlen(pem));
	{
		uint8_t back[MCERT_DER_MAX];

		assert_int_equal(mcert_pem_to_der(pem, (size_t)n, back, sizeof(back)), (int)len);
		assert_memory_equal(back, der, len);
	}
	assert_int_equal(certfetch_pem(b64, strlen(b64), 0, pem, (size_t)n), -EMSGSIZE);
	/* None of it was installed. */
	{
		struct mcert_info info;

		assert_int_equal(machinecert_info(dir, &info, err), -ENOENT);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_install, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
