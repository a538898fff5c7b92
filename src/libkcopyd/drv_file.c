/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The local-file driver: regular files and block devices, opened for
 * direct I/O where they allow it.  At open it learns the size, the
 * alignment and the storage underneath (for the overlap check); on the
 * I/O path it reads and writes with libaio and runs the calls that have
 * no asynchronous form (fallocate, BLKZEROOUT, copy_file_range) on a
 * small pool of worker threads, so that one slow call never stalls the
 * I/O thread's other queues.  Holes are found with SEEK_DATA/SEEK_HOLE.
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
	if (!not_supported(err))
		return -err;
	dev_drop_caps(dev, KCOPYD_CAP_ZERO_UNMAP);
	return 1;
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
	if (!not_supported(err))
		return -err;
	dev_drop_caps(dev, KCOPYD_CAP_ZERO_ALLOC);
	return 1;
}

/*
 * file_zero() - make @length bytes at @offset read as zeros.  With
 * KCOPYD_ZERO_ALLOCATE the range stays allocated (zero_keep()).  Without
 * it the range may be freed (zero_unmap() first, zero_keep() where the
 * kernel cannot punch), except that KCOPYD_ZERO_DEVICE_KEEP asks a block
 * device for zero_keep() first, as blkdiscard -z does.  A method the
 * kernel refuses is dropped from the device's capabilities.
 * Return: @length, or -errno (-EOPNOTSUPP: the engine writes zeros).
 */
static long file_zero(struct kcopyd_dev *dev, int fd, uint64_t offset, size_t length, unsigned int flags)
{
	bool keep_first = (flags & KCOPYD_ZERO_ALLOCATE) || (dev->is_blockdev && (flags & KCOPYD_ZERO_DEVICE_KEEP));
	int r;

	if (keep_first && (dev_caps(dev) & KCOPYD_CAP_ZERO_ALLOC)) {
		r = zero_keep(dev, fd, offset, length);
		if (r <= 0)
			return r ? r : (long)length;
	}
	if (!(flags & KCOPYD_ZERO_ALLOCATE) && (dev_caps(dev) & KCOPYD_CAP_ZERO_UNMAP)) {
		r = zero_unmap(dev, fd, offset, length);
		if (r <= 0)
			return r ? r : (long)length;
	}
	if (!keep_first && (dev_caps(dev) & KCOPYD_CAP_ZERO_ALLOC)) {
		r = zero_keep(dev, fd, offset, length);
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

static long file_sync_io(struct kcopyd_io *io)
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
static int file_extent(void *queue, struct kcopyd_dev *dev, uint64_t offset, uint64_t length,
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

static int file_flush(struct kcopyd_dev *dev)
{
	return fdatasync(kcopyd_file_fd(dev)) == 0 ? 0 : -errno;
}

static void file_close(struct kcopyd_dev *dev)
{
	close(kcopyd_file_fd(dev));
}

/* ------------------------------------------------------------------ */
/* The queue: libaio for reads and writes, workers for the rest        */
/* ------------------------------------------------------------------ */

/* The most iocbs handed to one io_submit(2) and reaped by one io_getevents(2). */
#define AIO_BATCH 64
/*
 * Workers per queue for the synchronous calls.  Two, so that a long
 * copy_file_range or BLKZEROOUT of one job does not hold up another's
 * zeroing; more would only add threads on small machines.
 */
#define FILE_WORKERS 2

/*
 * A client's queue of the local-file driver.  Reads and writes go to
 * libaio, whose iocbs carry the client's eventfd.  Zeroes and copies wait
 * on todo for a worker, which runs the call, puts the I/O on done and adds
 * to the eventfd.  todo, done, sync_count and exiting are under lock,
 * which is taken by the I/O thread (submit, reap) and the workers, never
 * with any other lock held.
 *
 * The libaio context is made by the first read or write (the I/O thread's
 * alone: ctx and has_ctx need no lock).  A zero job, or a copy every
 * destination of which is offloaded, never makes one, and so never waits
 * for io_destroy(2) at the end: the kernel frees a context after two RCU
 * grace periods, 25-75 ms here, longer than such a job itself may take.
 */
struct file_queue {
	io_context_t ctx;
	bool has_ctx;
	int notify_fd;
	unsigned int depth;
	pthread_mutex_t lock;
	pthread_cond_t work_cond;
	struct kcopyd_io **todo;	/* a FIFO ring of depth entries */
	unsigned int todo_head, todo_count;
	struct kcopyd_io **done;	/* depth entries */
	unsigned int done_count;
	unsigned int sync_count;	/* taken and not yet reaped: todo + running + done */
	bool exiting;
	pthread_t workers[FILE_WORKERS];
	unsigned int nr_workers;
};

static void *file_worker_main(void *arg)
{
	struct file_queue *q = arg;
	uint64_t one = 1;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		struct kcopyd_io *io;

		while (!q->exiting && q->todo_count == 0)
			pthread_cond_wait(&q->work_cond, &q->lock);
		if (q->todo_count == 0)
			break;
		io = q->todo[q->todo_head];
		q->todo_head = (q->todo_head + 1) % q->depth;
		q->todo_count--;
		pthread_mutex_unlock(&q->lock);

		io->result = file_sync_io(io);

		pthread_mutex_lock(&q->lock);
		q->done[q->done_count++] = io;
		/* Can only fail if the counter would overflow: then it is set anyway. */
		(void)!write(q->notify_fd, &one, sizeof(one));
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static void file_queue_stop_workers(struct file_queue *q)
{
	unsigned int index;

	pthread_mutex_lock(&q->lock);
	q->exiting = true;
	pthread_cond_broadcast(&q->work_cond);
	pthread_mutex_unlock(&q->lock);
	for (index = 0; index < q->nr_workers; index++)
		pthread_join(q->workers[index], NULL);
}

static int file_queue_create(unsigned int depth, int notify_fd, void *key, void **queue)
{
	struct file_queue *q;
	int r;

	(void)key;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->notify_fd = notify_fd;
	q->depth = depth;
	q->todo = calloc(depth, sizeof(*q->todo));
	q->done = calloc(depth, sizeof(*q->done));
	if (!q->todo || !q->done) {
		r = -ENOMEM;
		goto err_free;
	}
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->work_cond, NULL);
	for (q->nr_workers = 0; q->nr_workers < FILE_WORKERS; q->nr_workers++) {
		r = -pthread_create(&q->workers[q->nr_workers], NULL, file_worker_main, q);
		if (r < 0)
			goto err_stop_workers;
	}
	*queue = q;
	return 0;

err_stop_workers:
	file_queue_stop_workers(q);
	pthread_cond_destroy(&q->work_cond);
	pthread_mutex_destroy(&q->lock);
err_free:
	free(q->done);
	free(q->todo);
	free(q);
	return r;
}

static void file_queue_destroy(void *queue)
{
	struct file_queue *q = queue;

	file_queue_stop_workers(q);
	pthread_cond_destroy(&q->work_cond);
	pthread_mutex_destroy(&q->lock);
	if (q->has_ctx)
		io_destroy(q->ctx);
	free(q->done);
	free(q->todo);
	free(q);
}

/*
 * file_queue_ctx() - make the queue's libaio context if it has none yet:
 * room for depth I/Os, or less past the system's aio-max-nr (io_setup
 * fails with EAGAIN there).
 * Return: 0, or the -errno of io_setup(2) (the read or write fails with it).
 */
static int file_queue_ctx(struct file_queue *q)
{
	unsigned int aio_depth = q->depth;
	int r;

	if (q->has_ctx)
		return 0;
	do {
		r = io_setup(aio_depth, &q->ctx);
		aio_depth /= 2;
	} while (r == -EAGAIN && aio_depth >= 16);
	if (r < 0)
		return r;
	q->has_ctx = true;
	return 0;
}

static bool is_sync_op(const struct kcopyd_io *io)
{
	return io->op == KCOPYD_IO_ZERO || io->op == KCOPYD_IO_COPY;
}

/* Hand @count reads and writes to libaio.  Return: how many it took, or -errno if none. */
static int file_submit_aio(struct file_queue *q, struct kcopyd_io **ios, unsigned int count)
{
	struct iocb iocbs[AIO_BATCH];
	struct iocb *iocb_ptrs[AIO_BATCH];
	unsigned int index;
	int r;

	r = file_queue_ctx(q);
	if (r < 0)
		return r;
	if (count > AIO_BATCH)
		count = AIO_BATCH;
	for (index = 0; index < count; index++) {
		struct kcopyd_io *io = ios[index];
		int fd = kcopyd_file_fd(io->dev);

		/* iocbs on the stack: io_submit(2) copies them, a completion hands back data. */
		if (io->op == KCOPYD_IO_READ)
			io_prep_pread(&iocbs[index], fd, io->buf, io->length, (long long)io->offset);
		else
			io_prep_pwrite(&iocbs[index], fd, io->buf, io->length, (long long)io->offset);
		iocbs[index].data = io;
		io_set_eventfd(&iocbs[index], q->notify_fd);
		iocb_ptrs[index] = &iocbs[index];
	}
	r = io_submit(q->ctx, (long)count, iocb_ptrs);
	return r == -EAGAIN ? 0 : r;
}

static int file_submit(void *queue, struct kcopyd_io **ios, unsigned int count)
{
	struct file_queue *q = queue;
	unsigned int taken = 0;

	while (taken < count) {
		unsigned int run = 0;
		int r;

		if (is_sync_op(ios[taken])) {
			pthread_mutex_lock(&q->lock);
			while (taken < count && is_sync_op(ios[taken]) && q->sync_count < q->depth) {
				q->todo[(q->todo_head + q->todo_count++) % q->depth] = ios[taken++];
				q->sync_count++;
				run++;
			}
			if (run)
				pthread_cond_signal(&q->work_cond);
			pthread_mutex_unlock(&q->lock);
			if (run == 0)
				break;	/* the workers are full */
			continue;
		}
		while (taken + run < count && !is_sync_op(ios[taken + run]))
			run++;
		r = file_submit_aio(q, ios + taken, run);
		if (r < 0)
			return taken > 0 ? (int)taken : r;
		taken += (unsigned int)r;
		if ((unsigned int)r < run)
			break;
	}
	return (int)taken;
}

static int file_reap(void *queue, struct kcopyd_io **done, unsigned int max)
{
	struct file_queue *q = queue;
	struct io_event events[AIO_BATCH];
	struct timespec no_wait = { 0, 0 };
	int count = 0, index;

	if (q->has_ctx) {
		count = io_getevents(q->ctx, 0, (long)(max < AIO_BATCH ? max : AIO_BATCH), events, &no_wait);
		if (count < 0)
			return count;
	}
	for (index = 0; index < count; index++) {
		struct kcopyd_io *io = events[index].data;

		/* Bytes or -errno; a short transfer is the engine's to judge. */
		io->result = (long)events[index].res;
		done[index] = io;
	}
	pthread_mutex_lock(&q->lock);
	while (q->done_count > 0 && (unsigned int)count < max) {
		done[count++] = q->done[--q->done_count];
		q->sync_count--;
	}
	pthread_mutex_unlock(&q->lock);
	return count;
}

const struct kcopyd_driver kcopyd_file_driver = {
	.name = "file",
	.queue_create = file_queue_create,
	.queue_destroy = file_queue_destroy,
	.submit = file_submit,
	.reap = file_reap,
	.extent = file_extent,
	.flush = file_flush,
	.close = file_close,
};
