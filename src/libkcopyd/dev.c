/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Devices: open a block device or regular file for direct I/O and learn
 * the size and alignment that the engine must respect. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libkcopyd/internal.h"

/*
 * Decide between O_DIRECT and buffered I/O for a regular file.  statx
 * says whether the filesystem supports direct I/O and at what alignment;
 * an older kernel that cannot say gets a try of F_SETFL O_DIRECT, which
 * fails with EINVAL where it is not supported.
 */
static int setup_file_direct(struct kcopyd_dev *dev, int fl)
{
	unsigned int offset_align = 0;
	int r = kcopyd_dio_offset_align(dev->fd, &offset_align);

	if (r == 0 && offset_align == 0) {
		/* No direct I/O on this filesystem: buffered, any sector. */
		dev->direct = false;
		dev->block_size = KCOPYD_SECTOR_SIZE;
		return fcntl(dev->fd, F_SETFL, fl & ~O_DIRECT) < 0 ? -errno : 0;
	}
	if (!(fl & O_DIRECT) && fcntl(dev->fd, F_SETFL, fl | O_DIRECT) < 0) {
		if (errno != EINVAL)
			return -errno;
		dev->direct = false;
		dev->block_size = KCOPYD_SECTOR_SIZE;
		return 0;
	}
	dev->direct = true;
	dev->block_size = (r == 0 && offset_align > KCOPYD_SECTOR_SIZE) ? offset_align : KCOPYD_SECTOR_SIZE;
	return 0;
}

static int setup_blockdev(struct kcopyd_dev *dev, int fl)
{
	uint64_t bytes;
	int logical_block_size;

	if (ioctl(dev->fd, BLKGETSIZE64, &bytes) < 0)
		return -errno;
	if (ioctl(dev->fd, BLKSSZGET, &logical_block_size) < 0)
		return -errno;
	if (!(fl & O_DIRECT) && fcntl(dev->fd, F_SETFL, fl | O_DIRECT) < 0)
		return -errno;
	dev->direct = true;
	dev->sectors = bytes >> KCOPYD_SECTOR_SHIFT;
	dev->block_size = logical_block_size > (int)KCOPYD_SECTOR_SIZE ? (unsigned int)logical_block_size
								       : KCOPYD_SECTOR_SIZE;
	return 0;
}

int kcopyd_dev_from_fd(int fd, struct kcopyd_dev **result)
{
	struct kcopyd_dev *dev;
	struct stat st;
	int fl, r;

	if (fd < 0 || !result)
		return -EBADF;
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fstat(fd, &st) < 0) {
		r = -errno;
		goto err_close_fd;
	}
	if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) {
		r = -EINVAL;
		goto err_close_fd;
	}
	dev = calloc(1, sizeof(*dev));
	if (!dev) {
		r = -ENOMEM;
		goto err_close_fd;
	}
	dev->fd = fd;
	dev->readable = (fl & O_ACCMODE) != O_WRONLY;
	dev->writable = (fl & O_ACCMODE) != O_RDONLY;
	dev->is_blockdev = S_ISBLK(st.st_mode);
	if (dev->is_blockdev) {
		dev->identity_dev = st.st_rdev;
		r = setup_blockdev(dev, fl);
	} else {
		dev->identity_dev = st.st_dev;
		dev->identity_ino = st.st_ino;
		dev->sectors = (uint64_t)st.st_size >> KCOPYD_SECTOR_SHIFT;
		r = setup_file_direct(dev, fl);
	}
	if (r < 0)
		goto err_free_dev;
	*result = dev;
	return 0;

err_free_dev:
	free(dev);
err_close_fd:
	close(fd);
	return r;
}

int kcopyd_dev_open(const char *path, int flags, struct kcopyd_dev **result)
{
	int fd;

	if (!path || !result || (flags != O_RDONLY && flags != O_RDWR))
		return -EINVAL;
	/* O_NONBLOCK so that a FIFO cannot hang the open; it is refused below. */
	fd = open(path, flags | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return kcopyd_dev_from_fd(fd, result);
}

void kcopyd_dev_close(struct kcopyd_dev *dev)
{
	if (!dev)
		return;
	close(dev->fd);
	free(dev);
}

uint64_t kcopyd_dev_sectors(const struct kcopyd_dev *dev)
{
	return dev->sectors;
}

unsigned int kcopyd_dev_block_size(const struct kcopyd_dev *dev)
{
	return dev->block_size;
}

int kcopyd_dev_is_direct(const struct kcopyd_dev *dev)
{
	return dev->direct;
}

int kcopyd_dev_sync(struct kcopyd_dev *dev)
{
	return fdatasync(dev->fd) == 0 ? 0 : -errno;
}
