/* SPDX-License-Identifier: MIT */
/*
 * trellis-control's configuration file parser (control/config.c) on any bytes:
 * it accepts or refuses with a message, never crashes, and what it accepts
 * round-trips: every value it returns is a NUL-free string, ports in range.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "control/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct control_config c;
	char err[CONFIG_ERR_MAX];

	err[0] = '\0';
	if (control_config_parse((const char *)data, size, "fuzz.conf", &c, err, sizeof(err)) < 0) {
		/* A refusal always says where. */
		assert(strncmp(err, "fuzz.conf", 9) == 0);
		return 0;
	}
	assert(c.no_relay >= -1 && c.no_relay <= 1);
	assert(c.stun_port >= -1 && c.stun_port <= 65535);
	assert(!c.listen || c.listen[0]);
	assert(!c.state_dir || c.state_dir[0]);
	control_config_free(&c);
	return 0;
}
