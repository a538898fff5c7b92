/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The local-file driver: regular files and block devices, opened for
 * direct I/O where they allow it.  At open it learns the size, the
 * alignment and the storage underneath (for the overlap check).  Here
 * too: the synchronous operations (zeroing, copy_file_range, holes by
 * SEEK_DATA/SEEK_HOLE, fdatasync) and the pool of worker threads that runs
 * the calls with no asynchronous form, so that one slow call never
 * stalls the I/O thread's other queues.  The queues that read and write
 * are drv_file_aio.c (libaio) and drv_file_uring.c (io_uring).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <pthread.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/falloc.h>
#include <linux/major.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "libkcopyd/internal.h"
#include "libkcopyd/drv_file.h"

/*
 * Decide between O_DIRECT and buffered I/O for a regular file.  statx
 * says whether the filesystem supports direct I/O and at what alignment;
 * an older kernel that cannot say gets a try of F_SETFL O_DIRECT, which
 * fails with EINVAL where it is not supported.
 */
static int setup_file_direct(struct kcopyd_dev *dev, int fd, int fl)
{
	unsigned int offset_align = 0;
	int r = kcopyd_dio_offset_align(fd, &offset_align);

	if (r == 0 && offset_align == 0) {
		/* No direct I/O on this filesystem: buffered, any sector. */
		dev->direct = false;
		dev->block_size = KCOPYD_SECTOR_SIZE;
		return fcntl(fd, F_SETFL, fl & ~O_DIRECT) < 0 ? -errno : 0;
	}
	if (!(fl & O_DIRECT) && fcntl(fd, F_SETFL, fl | O_DIRECT) < 0) {
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

/* The driver's part of a device. */
struct file_dev {
	int fd;
};

int kcopyd_file_fd(const struct kcopyd_dev *dev)
{
	return ((const struct file_dev *)dev->priv)->fd;
}

static int setup_blockdev(struct kcopyd_dev *dev, int fd, int fl)
{
	uint64_t bytes;
	int logical_block_size;

	if (ioctl(fd, BLKGETSIZE64, &bytes) < 0)
		return -errno;
	if (ioctl(fd, BLKSSZGET, &logical_block_size) < 0)
		return -errno;
	if (!(fl & O_DIRECT) && fcntl(fd, F_SETFL, fl | O_DIRECT) < 0)
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
	struct file_dev *file;
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
	dev = calloc(1, sizeof(*dev) + sizeof(*file));
	if (!dev) {
		r = -ENOMEM;
		goto err_close_fd;
	}
	file = (struct file_dev *)(dev + 1);
	file->fd = fd;
	dev->driver = &kcopyd_file_driver;
	dev->priv = file;
	dev->readable = (fl & O_ACCMODE) != O_WRONLY;
	dev->writable = (fl & O_ACCMODE) != O_RDONLY;
	dev->is_blockdev = S_ISBLK(st.st_mode);
	dev->is_regular_file = S_ISREG(st.st_mode);
	/*
	 * What the kernel may do, until it says otherwise: a block device
	 * zeroes (fallocate, BLKZEROOUT) but has no holes to tell; a file
	 * also has holes and copy_file_range.  The largest request is not
	 * limited: the block layer splits what its queue cannot take.
	 */
	if (dev->is_blockdev) {
		dev->caps = KCOPYD_CAP_ZERO_UNMAP | KCOPYD_CAP_ZERO_ALLOC;
		dev->identity_dev = st.st_rdev;
		resolve_storage(dev, st.st_rdev, fd);
		r = setup_blockdev(dev, fd, fl);
	} else {
		dev->caps = KCOPYD_CAP_ZERO_UNMAP | KCOPYD_CAP_ZERO_ALLOC | KCOPYD_CAP_EXTENTS | KCOPYD_CAP_COPY;
		dev->identity_dev = st.st_dev;
		dev->identity_ino = st.st_ino;
		dev->storage_is_file = true;
		dev->storage_dev = st.st_dev;
		dev->storage_ino = st.st_ino;
		dev->sectors = (uint64_t)st.st_size >> KCOPYD_SECTOR_SHIFT;
		r = setup_file_direct(dev, fd, fl);
		/*
		 * A write clears a setuid bit (and a setgid bit with group
		 * execute) unless the writer has CAP_FSETID; fallocate and
		 * copy_file_range need not.  So a file with them is written
		 * as before: every range, zeros included, by write(2).
		 */
		if (dev->writable && ((st.st_mode & S_ISUID) || (st.st_mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP)))
			dev->caps &= ~(unsigned int)(KCOPYD_CAP_ZERO_UNMAP | KCOPYD_CAP_ZERO_ALLOC | KCOPYD_CAP_COPY);
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
	if (kcopyd_is_nbd_uri(path))
		return kcopyd_dev_open_nbd(path, flags, NULL, 0, result, NULL, 0);
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

/* ------------------------------------------------------------------ */
/* The synchronous operations                                          */
/* ------------------------------------------------------------------ */

/* The errnos by which the kernel says "not here", as opposed to a real failure. */
static bool not_supported(int err)
{
	return err == EOPNOTSUPP || err == ENOTTY || err == EINVAL || err == ENOSYS;
}

/*
 * zero_unmap() - fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as
 * zeros and may be freed; on a block device a write-zeroes that may unmap
 * (and never falls back to writing).
 * Return: 0, 1 if the device cannot (the capability is dropped), or -errno.
 */
static int zero_unmap(struct kcopyd_dev *dev, int fd, uint64_t offset, size_t length)
{
	int err;

	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length) == 0)
		return 0;
	err = errno;
	return file_zero_refused(dev, FILE_ZERO_UNMAP, err) ? 1 : -err;
}

/*
 * zero_keep() - the range reads as zeros and stays allocated:
 * FALLOC_FL_ZERO_RANGE on a file, BLKZEROOUT on a block device (the kernel
 * writes zero pages itself where the device has no write-zeroes).
 * Return: 0, 1 if the device cannot (the capability is dropped), or -errno.
 */
static int zero_keep(struct kcopyd_dev *dev, int fd, uint64_t offset, size_t length)
{
	int r, err;

	if (dev->is_blockdev) {
		uint64_t range[2] = { offset, length };

		r = ioctl(fd, BLKZEROOUT, range);
	} else {
		r = fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
	}
	if (r == 0)
		return 0;
	err = errno;
	return file_zero_refused(dev, FILE_ZERO_KEEP, err) ? 1 : -err;
}

int file_zero_method(const struct kcopyd_dev *dev, unsigned int flags)
{
	bool keep_first = (flags & KCOPYD_ZERO_ALLOCATE) || (dev->is_blockdev && (flags & KCOPYD_ZERO_DEVICE_KEEP));
	unsigned int caps = dev_caps(dev);

	if (keep_first && (caps & KCOPYD_CAP_ZERO_ALLOC))
		return FILE_ZERO_KEEP;
	if (!(flags & KCOPYD_ZERO_ALLOCATE) && (caps & KCOPYD_CAP_ZERO_UNMAP))
		return FILE_ZERO_UNMAP;
	if (!keep_first && (caps & KCOPYD_CAP_ZERO_ALLOC))
		return FILE_ZERO_KEEP;
	return 0;
}

bool file_zero_refused(struct kcopyd_dev *dev, int method, int err)
{
	if (!not_supported(err))
		return false;
	dev_drop_caps(dev, method == FILE_ZERO_KEEP ? KCOPYD_CAP_ZERO_ALLOC : KCOPYD_CAP_ZERO_UNMAP);
	return true;
}

/*
 * file_zero() - make @length bytes at @offset read as zeros, by the first
 * method file_zero_method() offers, then the next while the kernel
 * refuses them (each refused one is dropped from the device's
 * capabilities).
 * Return: @length, or -errno (-EOPNOTSUPP: the engine writes zeros).
 */
static long file_zero(struct kcopyd_dev *dev, int fd, uint64_t offset, size_t length, unsigned int flags)
{
	int method, r;

	while ((method = file_zero_method(dev, flags)) != 0) {
		r = method == FILE_ZERO_KEEP ? zero_keep(dev, fd, offset, length) : zero_unmap(dev, fd, offset, length);
		if (r <= 0)
			return r ? r : (long)length;
	}
	return -EOPNOTSUPP;
}

static long file_copy(struct kcopyd_io *io)
{
	loff_t in = (loff_t)io->src_offset, out = (loff_t)io->offset;
	ssize_t n = copy_file_range(kcopyd_file_fd(io->src), &in, kcopyd_file_fd(io->dev), &out, io->length, 0);

	return n < 0 ? -errno : (long)n;
}

long file_sync_io(struct kcopyd_io *io)
{
	int fd = kcopyd_file_fd(io->dev);
	ssize_t n;

	switch (io->op) {
	case KCOPYD_IO_ZERO:
		return file_zero(io->dev, fd, io->offset, io->length, io->zero_flags);
	case KCOPYD_IO_COPY:
		return file_copy(io);
	case KCOPYD_IO_READ:	/* never here: libaio does them; kept total */
		n = pread(fd, io->buf, io->length, (off_t)io->offset);
		return n < 0 ? -errno : (long)n;
	case KCOPYD_IO_WRITE:
		n = pwrite(fd, io->buf, io->length, (off_t)io->offset);
		return n < 0 ? -errno : (long)n;
	}
	return -EINVAL;
}

/*
 * SEEK_DATA from @offset: a hole up to the next data (or the end), else
 * data up to SEEK_HOLE.  Metadata only, cheap enough for the I/O thread.
 */
int file_extent(void *queue, struct kcopyd_dev *dev, uint64_t offset, uint64_t length,
		       uint64_t *extent_length, bool *hole)
{
	int fd = kcopyd_file_fd(dev);
	off_t data, hole_start;

	(void)queue;
	data = lseek(fd, (off_t)offset, SEEK_DATA);
	if (data < 0) {
		struct stat st;

		if (errno != ENXIO)
			return -errno;
		if (fstat(fd, &st) < 0)
			return -errno;
		/*
		 * No data from @offset to the end of the file: a hole up to that
		 * end.  Past it (the file shrank since it was opened) is no hole:
		 * "data", whose read comes back short and fails the job, as a
		 * read past the end always has.
		 */
		*hole = (uint64_t)st.st_size > offset;
		*extent_length = *hole && (uint64_t)st.st_size - offset < length ? (uint64_t)st.st_size - offset : length;
		return 0;
	}
	if ((uint64_t)data > offset) {
		*hole = true;
		*extent_length = (uint64_t)data - offset < length ? (uint64_t)data - offset : length;
		return 0;
	}
	hole_start = lseek(fd, (off_t)offset, SEEK_HOLE);
	if (hole_start < 0)
		return -errno;
	*hole = false;
	*extent_length = (uint64_t)hole_start > offset && (uint64_t)hole_start - offset < length
				 ? (uint64_t)hole_start - offset : length;
	return 0;
}

int file_flush(struct kcopyd_dev *dev)
{
	return fdatasync(kcopyd_file_fd(dev)) == 0 ? 0 : -errno;
}

void file_close(struct kcopyd_dev *dev)
{
	close(kcopyd_file_fd(dev));
}


/* ------------------------------------------------------------------ */
/* The worker pool                                                     */
/* ------------------------------------------------------------------ */

static void *file_worker_main(void *arg)
{
	struct file_workers *w = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		struct kcopyd_io *io;

		while (!w->exiting && w->todo_count == 0)
			pthread_cond_wait(&w->work_cond, &w->lock);
		if (w->todo_count == 0)
			break;
		io = w->todo[w->todo_head];
		w->todo_head = (w->todo_head + 1) % w->depth;
		w->todo_count--;
		pthread_mutex_unlock(&w->lock);

		io->result = file_sync_io(io);

		pthread_mutex_lock(&w->lock);
		w->done[w->done_count++] = io;
		/* Can only fail if the counter would overflow: then it is set anyway. */
		(void)!write(w->notify_fd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

void file_workers_stop(struct file_workers *w)
{
	unsigned int index;

	pthread_mutex_lock(&w->lock);
	w->exiting = true;
	pthread_cond_broadcast(&w->work_cond);
	pthread_mutex_unlock(&w->lock);
	for (index = 0; index < w->nr_threads; index++)
		pthread_join(w->threads[index], NULL);
	pthread_cond_destroy(&w->work_cond);
	pthread_mutex_destroy(&w->lock);
	free(w->done);
	free(w->todo);
}

int file_workers_start(struct file_workers *w, unsigned int depth, int notify_fd)
{
	int r;

	memset(w, 0, sizeof(*w));
	w->notify_fd = notify_fd;
	w->depth = depth;
	w->todo = calloc(depth, sizeof(*w->todo));
	w->done = calloc(depth, sizeof(*w->done));
	if (!w->todo || !w->done) {
		free(w->done);
		free(w->todo);
		return -ENOMEM;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->work_cond, NULL);
	for (w->nr_threads = 0; w->nr_threads < FILE_WORKERS; w->nr_threads++) {
		r = -pthread_create(&w->threads[w->nr_threads], NULL, file_worker_main, w);
		if (r < 0) {
			file_workers_stop(w);
			return r;
		}
	}
	return 0;
}

unsigned int file_workers_take(struct file_workers *w, struct kcopyd_io **ios, unsigned int count,
			       bool (*want)(const struct kcopyd_io *io))
{
	unsigned int taken = 0;

	pthread_mutex_lock(&w->lock);
	while (taken < count && want(ios[taken]) && w->count < w->depth) {
		w->todo[(w->todo_head + w->todo_count++) % w->depth] = ios[taken++];
		w->count++;
	}
	if (taken)
		pthread_cond_signal(&w->work_cond);
	pthread_mutex_unlock(&w->lock);
	return taken;
}

unsigned int file_workers_reap(struct file_workers *w, struct kcopyd_io **done, unsigned int max)
{
	unsigned int count = 0;

	pthread_mutex_lock(&w->lock);
	while (w->done_count > 0 && count < max) {
		done[count++] = w->done[--w->done_count];
		w->count--;
	}
	pthread_mutex_unlock(&w->lock);
	return count;
}
