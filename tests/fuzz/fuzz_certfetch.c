/* SPDX-License-Identifier: MIT */
/*
 * A renewed certificate in a register response (node/certfetch.c): base64 DER from the
 * server, outside input. Nothing crashes or leaks; what it accepts is a certificate whose
 * PEM, read back, is DER that parses; nothing is newer than the end of time.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "node/certfetch.c"
#include "node/machinecert.c"
#include "node/state.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char pem[MCERT_PEM_MAX];
	uint8_t der[MCERT_DER_MAX];
	struct mcert_info info;
	int n;

	n = certfetch_pem((const char *)data, size, 0, pem, sizeof(pem));
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
