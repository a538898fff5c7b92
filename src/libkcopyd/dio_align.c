/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * statx(STATX_DIOALIGN) through the raw system call: glibc's struct statx
 * in Debian 12 predates the direct I/O fields, so this file uses the
 * kernel's definition and nothing from <sys/stat.h>.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "libkcopyd/internal.h"

int kcopyd_dio_offset_align(int fd, unsigned int *offset_align)
{
	struct statx stx = { 0 };

	if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) < 0)
		return -errno;
	if (!(stx.stx_mask & STATX_DIOALIGN))
		return -EOPNOTSUPP;
	*offset_align = stx.stx_dio_offset_align;
	return 0;
}
