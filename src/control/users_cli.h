/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_USERS_CLI_H
#define TRELLIS_CONTROL_USERS_CLI_H

/*
 * The terminal side of `users add|passwd`: the password is read here (twice,
 * without echo, from a terminal; one line from stdin otherwise, for scripts)
 * and hashed here, so only its Argon2id hash goes to the server (users.h).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "auth/password.h"

/* A one-time code as typed (digits, maybe spaced as the app shows them) and its NUL. */
#define USERS_CLI_CODE_MAX 16

/* The quiet zone around a QR code, in modules (ISO/IEC 18004 asks for 4). */
#define USERS_CLI_QR_MARGIN 4

/* 0, or -EINVAL with a message printed (empty, too long, the two differ), -EIO. */
int users_cli_password_hash(const char *email, char ret[PASSWORD_HASH_MAX]);

/*
 * A code from the person's authenticator app for email's second factor: one line of in,
 * after a prompt on prompt (NULL: none), spaces and tabs dropped. Its length (0: an empty
 * line, the person skips), -EIO (end of input), -EINVAL (too long; the rest of the line is
 * read).
 */
int users_cli_code_read(FILE *in, FILE *prompt, const char *email,
			char ret[USERS_CLI_CODE_MAX]);

/*
 * The QR code of text (libqrencode: the byte mode, level M, as the login page's) for a
 * terminal: each character is two modules stacked, in UTF-8 half blocks (U+2580 upper,
 * U+2584 lower, U+2588 full, a space for none), dark modules drawn, a quiet zone of
 * USERS_CLI_QR_MARGIN light modules around. ansi: black on white escapes around each line,
 * so it scans on a dark terminal too. 0, -EINVAL (text does not encode), -EIO.
 */
int users_cli_qr_print(FILE *f, const char *text, bool ansi);

#endif
