/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_BASE_VERSION_H
#define TRELLIS_BASE_VERSION_H

/*
 * The version of this build: the nearest release tag and the commits since, or the
 * project version and the commit ("0.1.0-g1a2b3c4d5e6f"), "-dirty" when built from a
 * changed tree. Every program prints it for --version, logs it at start and reports it
 * (status --json, /metrics).
 */
extern const char trellis_version[];

#endif
