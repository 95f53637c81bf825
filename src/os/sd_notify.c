// SPDX-License-Identifier: MIT
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "os/sd_notify.h"

int sd_notify_send(const char *state)
{
	const char *name = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t len;
	socklen_t sl;
	ssize_t n;
	int fd, r;

	if (!name || !name[0])
		return 0;
	len = strlen(name);
	if ((name[0] != '/' && name[0] != '@') || len < 2 || len > sizeof(sun.sun_path))
		return -EINVAL;
	memcpy(sun.sun_path, name, len);
	/* "@name": the abstract namespace, whose names start with a NUL byte. */
	if (name[0] == '@')
		sun.sun_path[0] = '\0';
	else if (len == sizeof(sun.sun_path))
		return -EINVAL; /* no room for the path's NUL */
	sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '/'));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, sl);
	r = n < 0 ? -errno : 1;
	close(fd);
	return r;
}

uint64_t sd_notify_watchdog_ns(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	unsigned long long v;
	char *end;

	if (!usec || !*usec)
		return 0;
	if (pid && *pid && strtol(pid, NULL, 10) != (long)getpid())
		return 0;
	errno = 0;
	v = strtoull(usec, &end, 10);
	if (errno || *end || !v || v > UINT64_MAX / 1000)
		return 0;
	return (uint64_t)v * 1000;
}
