/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Devices: open a block device or regular file for direct I/O and learn
 * the size and alignment that the engine must respect. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/major.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
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

/* Loop devices over loop devices, partitions of loop devices: a real stack is a few deep. */
#define MAX_STORAGE_DEPTH 16

/*
 * Read the sysfs attribute @attr of block device @rdev (a number, or with
 * @want_dev a "MAJ:MIN" pair) into *@value.  Return: 0 or -errno.
 */
static int sysfs_block_attr(dev_t rdev, const char *attr, bool want_dev, uint64_t *value)
{
	char path[96], text[64];
	unsigned int maj, min;
	unsigned long long number;
	FILE *f;
	int r = 0;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/%s", major(rdev), minor(rdev), attr);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (!fgets(text, sizeof(text), f))
		r = -EIO;
	else if (want_dev && sscanf(text, "%u:%u", &maj, &min) == 2)
		*value = makedev(maj, min);
	else if (!want_dev && sscanf(text, "%llu", &number) == 1)
		*value = number;
	else
		r = -EINVAL;
	fclose(f);
	return r;
}

/* The kernel's 32-bit "huge" dev_t encoding (LOOP_GET_STATUS64's lo_device, lo_rdevice). */
static dev_t decode_kernel_dev(uint64_t dev)
{
	return makedev((unsigned int)((dev & 0xfff00) >> 8), (unsigned int)((dev & 0xff) | ((dev >> 12) & 0xfff00)));
}

/*
 * LOOP_GET_STATUS64 of loop device @rdev, through @fd if it is open on
 * that device (>= 0), else through its node (/dev/block/MAJ:MIN, or the
 * /dev name its uevent gives).  Return: 0; -ENXIO for an unbound loop
 * device; -errno.
 */
static int loop_status(dev_t rdev, int fd, struct loop_info64 *info)
{
	char path[160], line[128];
	int r, node_fd = fd;
	FILE *uevent;

	if (node_fd < 0) {
		snprintf(path, sizeof(path), "/dev/block/%u:%u", major(rdev), minor(rdev));
		node_fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	}
	if (node_fd < 0) {
		snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/uevent", major(rdev), minor(rdev));
		uevent = fopen(path, "re");
		if (!uevent)
			return -errno;
		path[0] = '\0';
		while (fgets(line, sizeof(line), uevent))
			if (strncmp(line, "DEVNAME=", 8) == 0) {
				line[strcspn(line, "\n")] = '\0';
				snprintf(path, sizeof(path), "/dev/%s", line + 8);
			}
		fclose(uevent);
		if (!path[0])
			return -ENOENT;
		node_fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		if (node_fd < 0)
			return -errno;
	}
	r = ioctl(node_fd, LOOP_GET_STATUS64, info) < 0 ? -errno : 0;
	if (node_fd != fd)
		close(node_fd);
	return r;
}

/*
 * resolve_storage() - find where the bytes of block device @rdev (open as
 * @fd) really live, so that kcopyd_validate() sees a loop device and its
 * backing file, two loop devices over one file, and a partition and its
 * disk as the same storage.  Steps down, adding offsets as it goes:
 *  - a partition to its whole disk (sysfs "partition" and "start"),
 *  - a bound loop device to its backing file (LOOP_GET_STATUS64: lo_device
 *    and lo_inode, at lo_offset), or to its backing block device
 *    (lo_rdevice), which is resolved in turn.
 * Anything else (a disk, an unbound loop device, a step the kernel will
 * not tell) is its own storage.  Never fails: what cannot be learnt leaves
 * the device as it was seen so far.  Called once, at open; nothing of it
 * is on the I/O path.
 */
static void resolve_storage(struct kcopyd_dev *dev, dev_t rdev, int fd)
{
	uint64_t offset = 0, start, disk;
	unsigned int depth;

	for (depth = 0; depth < MAX_STORAGE_DEPTH; depth++) {
		struct loop_info64 info;

		if (sysfs_block_attr(rdev, "partition", false, &start) == 0) {
			if (sysfs_block_attr(rdev, "start", false, &start) < 0 ||
			    sysfs_block_attr(rdev, "../dev", true, &disk) < 0)
				break;
			offset += start << KCOPYD_SECTOR_SHIFT;
			rdev = (dev_t)disk;
			fd = -1;
			continue;
		}
		if (major(rdev) != LOOP_MAJOR || loop_status(rdev, fd, &info) < 0)
			break;
		offset += info.lo_offset;
		if (info.lo_rdevice) {
			rdev = decode_kernel_dev(info.lo_rdevice);
			fd = -1;
			continue;
		}
		dev->storage_is_file = true;
		dev->storage_dev = decode_kernel_dev(info.lo_device);
		dev->storage_ino = (ino_t)info.lo_inode;
		dev->storage_offset = offset;
		return;
	}
	dev->storage_is_file = false;
	dev->storage_dev = rdev;
	dev->storage_ino = 0;
	dev->storage_offset = offset;
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
		resolve_storage(dev, st.st_rdev, fd);
		r = setup_blockdev(dev, fl);
	} else {
		dev->identity_dev = st.st_dev;
		dev->identity_ino = st.st_ino;
		dev->storage_is_file = true;
		dev->storage_dev = st.st_dev;
		dev->storage_ino = st.st_ino;
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
