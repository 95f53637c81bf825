/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_CONTROL_USERS_CLI_H
#define TRELLIS_CONTROL_USERS_CLI_H

/*
 * The terminal side of `users add|passwd`: the password is read here (twice,
 * without echo, from a terminal; one line from stdin otherwise, for scripts)
 * and hashed here, so only its Argon2id hash goes to the server (users.h).
 */

#include <stddef.h>

#include "auth/password.h"

/* 0, or -EINVAL with a message printed (empty, too long, the two differ), -EIO. */
int users_cli_password_hash(const char *email, char ret[PASSWORD_HASH_MAX]);

#endif
