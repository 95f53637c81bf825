/* SPDX-License-Identifier: MIT */
#ifndef TRELLIS_OS_UNIXSOCK_H
#define TRELLIS_OS_UNIXSOCK_H

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

/*
 * Binds fd at sun->sun_path with exactly mode, without umask() (process-wide:
 * another thread's files would get our mask). The socket's own mode, set
 * before bind, is what bind gives the file less the umask, so the file is
 * never more open than mode; bits the umask took are added back on that file,
 * checked to be our socket and not followed if it is a link. 0, -EEXIST (the
 * path is not the socket we bound: someone else writes the directory), or
 * -errno.
 */
int unix_bind_mode(int fd, const struct sockaddr_un *sun, mode_t mode);

#endif
