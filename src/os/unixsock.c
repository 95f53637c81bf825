// SPDX-License-Identifier: MIT
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "os/unixsock.h"

int unix_bind_mode(int fd, const struct sockaddr_un *sun, mode_t mode)
{
	struct stat st;
	int r;

	if (fchmod(fd, mode) < 0 || bind(fd, (const struct sockaddr *)sun, sizeof(*sun)) < 0)
		return -errno;
	if (lstat(sun->sun_path, &st) < 0)
		return -errno;
	if (!S_ISSOCK(st.st_mode) || st.st_uid != geteuid())
		return -EEXIST;
	if ((st.st_mode & 07777) != mode &&
	    fchmodat(AT_FDCWD, sun->sun_path, mode, AT_SYMLINK_NOFOLLOW) < 0) {
		r = -errno;
		unlink(sun->sun_path);
		return r;
	}
	return 0;
}
