/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_FUZZ_PORTMAP_SCRIPT_H
#define TRELLIS_FUZZ_PORTMAP_SCRIPT_H

/*
 * The input of fuzz_pcp and fuzz_natpmp: a script of records [kind][len:16][bytes].
 * Kinds 0..3 are a datagram from the gateway (the bytes; kinds 1..3 let the target
 * patch in fields that match, to reach past the first checks), 4 a step of the clock
 * (up to 4 bytes of milliseconds), 5 start, 6 stop.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "portmap/mapping.h"

enum { SCRIPT_RX_RAW, SCRIPT_CLOCK = 4, SCRIPT_START, SCRIPT_STOP, SCRIPT_KINDS };

struct script_event {
	unsigned kind;
	uint8_t raw; /* the kind byte as written (spare bits for the target) */
	uint8_t msg[PORTMAP_MSG_MAX + 4];
	size_t len;
	uint64_t step_ns;
};

/* The next record from data at *off; false at the end. */
static inline bool script_next(const uint8_t *data, size_t size, size_t *off,
			       struct script_event *e)
{
	size_t len;

	if (*off + 3 > size)
		return false;
	e->raw = data[*off];
	e->kind = e->raw % SCRIPT_KINDS;
	len = (size_t)data[*off + 1] << 8 | data[*off + 2];
	*off += 3;
	len = len > size - *off ? size - *off : len;
	if (len > sizeof(e->msg))
		len = sizeof(e->msg);
	memcpy(e->msg, data + *off, len);
	e->len = len;
	*off += len;
	e->step_ns = 0;
	for (size_t i = 0; i < len && i < 4; i++)
		e->step_ns = e->step_ns << 8 | e->msg[i];
	e->step_ns *= 1000000ULL;
	return true;
}

#endif
