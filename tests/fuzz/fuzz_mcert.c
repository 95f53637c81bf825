/* SPDX-License-Identifier: MIT */
/*
 * Machine certificates from outside (crypto/mcert.h): a node's certificate as DER (the
 * register message), the same bytes as PEM (trellis cert install, ca sign's CSR). Nothing
 * crashes or leaks; what parses is well-formed (a serial of hex digits that fits), and no
 * input ever verifies against a CA made here at start: its key signed none of them.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/mcert.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char ca_cert[MCERT_PEM_MAX];

static void ca_once(void)
{
	static char key[MCERT_PEM_MAX];

	if (ca_cert[0])
		return;
	if (mcert_ca_make("fuzz CA", 1800000000LL, 86400, key, sizeof(key), ca_cert,
			  sizeof(ca_cert)) < 0)
		abort();
}

static void info_check(const struct mcert_info *i)
{
	size_t n = strnlen(i->serial, sizeof(i->serial));

	if (n == 0 || n >= sizeof(i->serial) || strspn(i->serial, "0123456789abcdef") != n ||
	    strnlen(i->subject, sizeof(i->subject)) >= sizeof(i->subject))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mcert_info info;
	uint8_t der[MCERT_DER_MAX];
	int n;

	ca_once();
	if (mcert_parse(data, size, &info) == MCERT_OK)
		info_check(&info);
	if (mcert_verify(ca_cert, strlen(ca_cert), data, size, 1800000000LL, &info) == MCERT_OK)
		abort();
	mcert_csr_parse((const char *)data, size, &info);
	n = mcert_pem_to_der((const char *)data, size, der, sizeof(der));
	if (n > 0 && mcert_parse(der, (size_t)n, &info) == MCERT_OK)
		info_check(&info);
	return 0;
}
