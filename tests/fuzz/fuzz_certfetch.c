/* SPDX-License-Identifier: MIT */
/*
 * A renewed certificate in a register response or pushed in a delta (node/certfetch.c): base64 DER
 * from the server, outside input. Nothing crashes or leaks; what it accepts is a certificate whose
 * PEM, read back, is DER that parses; nothing is newer than the end of time.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/certfetch.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * certfetch_install's file side is machinecert.c's (its PEM and DER parsers are fuzz_mcert's);
 * the fuzzer drives certfetch_pem, so these only satisfy the linker.
 */
int machinecert_info(const char *dir, struct mcert_info *ret, char ret_sha256[65])
{
	(void)dir;
	(void)ret;
	(void)ret_sha256;
	return -ENOENT;
}

int machinecert_install(const char *dir, const uint8_t machine_priv[32], const char *pem,
			size_t len, int64_t now, char *err, size_t err_len)
{
	(void)dir;
	(void)machine_priv;
	(void)pem;
	(void)len;
	(void)now;
	(void)err;
	(void)err_len;
	return -EINVAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char pem[MCERT_PEM_MAX];
	char serial[MCERT_SERIAL_MAX];
	uint8_t der[MCERT_DER_MAX];
	struct mcert_info info;
	int n, has_serial;

	/* The serial status shows: of exactly the inputs that make a certificate. */
	has_serial = certfetch_serial((const char *)data, size, serial) == 0;
	if (has_serial && strnlen(serial, sizeof(serial)) == sizeof(serial))
		abort();
	n = certfetch_pem((const char *)data, size, 0, pem, sizeof(pem));
	if ((n > 0) != has_serial)
		abort();
	if (n > 0) {
		if ((size_t)n != strlen(pem))
			abort();
		n = mcert_pem_to_der(pem, (size_t)n, der, sizeof(der));
		if (n <= 0 || mcert_parse(der, (size_t)n, &info) != MCERT_OK)
			abort();
	}
	if (certfetch_pem((const char *)data, size, INT64_MAX, pem, sizeof(pem)) > 0)
		abort();
	return 0;
}
