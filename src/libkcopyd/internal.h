/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* Internal interfaces of libkcopyd, shared by the engine and its tests. */
#ifndef KCOPYD_INTERNAL_H
#define KCOPYD_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>

#include "kcopyd.h"
#include "libkcopyd/driver.h"

/*
 * A device: its driver and the driver's private part, its limits, its
 * capabilities and its identity.  Everything but caps is set at open and
 * read-only afterwards, so any thread reads it without a lock; caps only
 * ever lose bits (an atomic, since devices may be shared by clients).
 */
struct kcopyd_dev {
	const struct kcopyd_driver *driver;
	void *priv;		/* the driver's: struct file_dev for the local-file driver */
	void *queue_key;	/* devices with one driver and key share a client queue */

	/* Limits. */
	uint64_t sectors;
	unsigned int block_size;/* alignment of offsets and lengths, bytes */
	uint64_t max_request;	/* the largest read or write, bytes; 0: no limit */

	_Atomic unsigned int caps;	/* KCOPYD_CAP_*: may only be cleared */
	bool direct;		/* does O_DIRECT I/O */
	bool writable;		/* opened O_RDWR or O_WRONLY */
	bool readable;
	bool is_regular_file;	/* a regular file (copy offload needs two) */

	/* Identity, for the overlap check. */
	/*
	 * A device of a driver without inodes (NBD: transport, address and
	 * export name) is named by this text, owned by the driver; NULL for
	 * the local-file driver, which has the fields below.  Two devices are
	 * the same storage when their names are equal.
	 */
	const char *identity_name;
	bool is_blockdev;
	dev_t identity_dev;	/* st_rdev of a block device, st_dev of a file */
	ino_t identity_ino;	/* 0 for a block device */
	/*
	 * Where the device's bytes really live, resolved once at open through
	 * partitions and loop devices (see resolve_storage() in drv_file.c):
	 * byte B of the device is byte storage_offset + B of the regular file
	 * (storage_dev, storage_ino) if storage_is_file, else of the block
	 * device storage_dev.  A plain file or disk is its own storage at 0.
	 */
	bool storage_is_file;
	dev_t storage_dev;
	ino_t storage_ino;	/* 0 for a block device */
	uint64_t storage_offset;	/* bytes */
};

static inline unsigned int dev_caps(const struct kcopyd_dev *dev)
{
	return atomic_load_explicit(&dev->caps, memory_order_relaxed);
}

static inline void dev_drop_caps(struct kcopyd_dev *dev, unsigned int caps)
{
	atomic_fetch_and_explicit(&dev->caps, ~caps, memory_order_relaxed);
}

/* kcopyd_file_fd() - the descriptor of a device of the local-file driver. */
int kcopyd_file_fd(const struct kcopyd_dev *dev);

/*
 * kcopyd_client_create_ops() - a test hook: create a client whose every
 * device goes through one queue of @driver (made with @queue_key), in
 * place of the device's own driver.  The tests pass their fake, which
 * does its I/O on the local-file driver's descriptor.
 */
int kcopyd_client_create_ops(const struct kcopyd_config *config, const struct kcopyd_driver *driver,
			     void *queue_key, struct kcopyd_client **result);

/*
 * io_engine_resolve() - (not exported: no kcopyd_ prefix) the engine a client asked for: @asked
 * itself, or for KCOPYD_IO_ENGINE_DEFAULT the environment's
 * KCOPYD_IO_ENGINE, else auto.  Return: 0, or -EINVAL for an engine not
 * of the enum or a variable that names none.
 */
int io_engine_resolve(unsigned int asked, unsigned int *engine);

/* dio_align() - statx STATX_DIOALIGN: 0 and the offset alignment (0 if the
 * file does not support direct I/O), or -errno if the kernel cannot say. */
int kcopyd_dio_offset_align(int fd, unsigned int *offset_align);

/*
 * internal_refuse() - (not exported: no kcopyd_ prefix) format a one-line reason into @why (when there is room
 * for one) and return @err: the refusals of validate.c and nbd_uri.c.
 */
__attribute__((format(printf, 4, 5)))
int internal_refuse(int err, char *why, size_t why_len, const char *fmt, ...);

#endif /* KCOPYD_INTERNAL_H */
