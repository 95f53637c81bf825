/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_MACHINECERT_H
#define TRELLIS_NODE_MACHINECERT_H

/*
 * The node's machine certificate (docs/identity.md, "Machine certificates"), in the
 * state directory beside machine.key:
 *
 *   machine-cert.key  Ed25519 private key, base64 (0600): made by `trellis cert
 *                     request`, never leaves the node; a new request keeps it.
 *   machine-cert.crt  the certificate a tailnet CA signed for it (PEM, 0600), put
 *                     there by `trellis cert install` after checking it names this
 *                     machine key and this certificate key.
 *
 * With both present, every register message carries the certificate and a proof of
 * its key bound to the session (crypto/mcert.h); servers that do not require one
 * ignore them.
 */

#include <stddef.h>
#include <stdint.h>

#include "crypto/mcert.h"
#include "proto/ctrlmsg.h"

#define MACHINECERT_KEY_FILE "machine-cert.key"
#define MACHINECERT_CERT_FILE "machine-cert.crt"

/*
 * A CSR (PEM into ret, cap bytes) for this machine (machine_priv: the X25519 machine
 * key) named cn, making the certificate key if there is none. Its length, or -errno
 * with a message in err.
 */
int machinecert_request(const char *dir, const uint8_t machine_priv[32], const char *cn, char *ret,
			size_t cap, char *err, size_t err_len);
/*
 * Checks and installs a signed certificate (PEM): it must be for this machine and
 * the certificate key, and not expired at now (Unix seconds). 0 or -errno, err set.
 */
int machinecert_install(const char *dir, const uint8_t machine_priv[32], const char *pem,
			size_t len, int64_t now, char *err, size_t err_len);
/* Adds the certificate and its proof for session `hash` to reg, when installed. */
void machinecert_attach(const char *dir, const uint8_t hash[32], struct ctrl_register *reg);
/*
 * The installed certificate, for status: its fields and its own SHA-256 fingerprint.
 * 0, -ENOENT (none installed), -EINVAL (unreadable).
 */
int machinecert_info(const char *dir, struct mcert_info *ret, char ret_sha256[65]);

#endif
