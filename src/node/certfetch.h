/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_NODE_CERTFETCH_H
#define TRELLIS_NODE_CERTFETCH_H

/*
 * Renewed machine certificates from the server (docs/identity.md, "Renewed certificates").
 * A register response, or a delta on the map stream (pushed at `ca renew` or by the server's
 * auto-renewal), may carry a newer certificate of this machine's own (base64 DER,
 * control/ca.h ca_cert_newer): after `ca renew` the node needs no `trellis cert install`.
 * It is outside input, so it goes through what `trellis cert install` does
 * (machinecert_install: it must name this machine key and this certificate key and not have
 * ended; written whole: temporary file, fsync, rename) and is taken only when it ends later
 * than the one installed, so no answer moves the node back to an older certificate.
 */

#include <stddef.h>
#include <stdint.h>

#include "crypto/mcert.h"

/*
 * The PEM (into ret, cap bytes, NUL-terminated) of a certificate sent as base64 DER (len
 * characters), when it parses and ends after installed_not_after. Its length; 0 when it
 * ends no later; -EBADMSG (not base64, not a certificate), -EMSGSIZE (over cap). No I/O.
 */
int certfetch_pem(const char *b64, size_t len, int64_t installed_not_after, char *ret, size_t cap);
/* Its serial (lower-case hex, NUL-terminated), for `trellis status`. 0, -EBADMSG. No I/O. */
int certfetch_serial(const char *b64, size_t len, char ret[MCERT_SERIAL_MAX]);
/*
 * Checks and installs one into the state directory dir (machine_priv: the machine key).
 * 1 installed, 0 not newer than the installed one, -errno refused (err says why).
 */
int certfetch_install(const char *dir, const uint8_t machine_priv[32], const char *b64, int64_t now,
		      char *err, size_t err_len);

#endif
