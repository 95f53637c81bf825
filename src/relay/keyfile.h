/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_RELAY_KEYFILE_H
#define TRELLIS_RELAY_KEYFILE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * A 32-byte key kept in a file as base64 (the relay's key, a mesh key, the
 * verify secret). create: a missing file gets a new random key (mode 0600).
 * 0, or -errno with a message on stderr naming the file.
 */
int relay_keyfile_load(const char *path, uint8_t ret_key[32], bool create);

#endif
