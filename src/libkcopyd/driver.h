/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Device drivers.  Every device carries its driver: a table of operations
 * (read, write, zero, copy, flush, extents), its limits (logical block
 * size, largest request), its capabilities and its identity for the
 * overlap check.  The local-file driver (drv_file.c: regular files and
 * block devices, libaio plus a worker for the synchronous calls) is the
 * first; the NBD driver (drv_nbd.c: exports through libnbd) the second;
 * tests put a fake in their place (tests/fake_io.c).
 *
 * I/O goes through queues.  A client has one queue per (driver, queue_key)
 * pair its jobs use, made the first time a job names such a device
 * (kcopyd_submit()), kept until the client is destroyed.  Only the client's
 * I/O thread calls submit() and reap() on a queue, so a queue needs no
 * locking of its own for them.  A queue tells the I/O thread that
 * completions are ready by adding to the client's eventfd it was given at
 * queue_create(); one whose completions arrive elsewhere (sockets) gives
 * those descriptors, the direction to wait for and its nearest deadline
 * through poll_fds(), the I/O thread polls them with the eventfd, and
 * poll_done() lets the queue act on what poll(2) saw (the NBD driver,
 * drv_nbd.c, drives libnbd from there).
 */
#ifndef KCOPYD_DRIVER_H
#define KCOPYD_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>

struct kcopyd_dev;

enum kcopyd_io_op {
	KCOPYD_IO_READ,		/* @length bytes at @offset into @buf */
	KCOPYD_IO_WRITE,	/* @length bytes of @buf to @offset */
	KCOPYD_IO_ZERO,		/* make @length bytes at @offset read as zeros; @zero_flags says how */
	KCOPYD_IO_COPY,		/* copy @length bytes at @src_offset of @src to @offset (offload) */
};

/* KCOPYD_IO_ZERO: keep the range allocated (else the driver may unmap it). */
#define KCOPYD_ZERO_ALLOCATE (1u << 0)
/*
 * KCOPYD_IO_ZERO of a zero job: a block device is asked first for the
 * zeroing that keeps its blocks (BLKZEROOUT, as blkdiscard -z: a
 * write-zeroes, fast where unmapping is not), a file is still punched.
 */
#define KCOPYD_ZERO_DEVICE_KEEP (1u << 1)

/*
 * Capabilities of a device (struct kcopyd_dev's caps).  A driver sets them
 * at open; an operation that the device turns out not to support
 * (EOPNOTSUPP, ENOTTY, EINVAL, ENOSYS) clears its bit for good, and the
 * engine does the simpler thing from then on: writes zeros from its zero
 * page, reads every range, copies through its buffers.
 */
#define KCOPYD_CAP_ZERO_UNMAP (1u << 0)	/* zero and free: fallocate PUNCH_HOLE|KEEP_SIZE */
#define KCOPYD_CAP_ZERO_ALLOC (1u << 1)	/* zero, allocated: FALLOC_FL_ZERO_RANGE, BLKZEROOUT */
#define KCOPYD_CAP_EXTENTS    (1u << 2)	/* extent() tells holes (SEEK_DATA/SEEK_HOLE) */
#define KCOPYD_CAP_COPY       (1u << 3)	/* KCOPYD_IO_COPY between two such devices (copy_file_range) */

/* One operation on one device, of one contiguous range. */
struct kcopyd_io {
	struct kcopyd_dev *dev;
	enum kcopyd_io_op op;
	unsigned int zero_flags;	/* KCOPYD_IO_ZERO */
	uint64_t offset;		/* bytes */
	size_t length;			/* bytes */
	void *buf;			/* READ, WRITE */
	struct kcopyd_dev *src;		/* COPY: the source device (same driver) ... */
	uint64_t src_offset;		/* ... and byte offset there */
	long result;			/* set by the driver: bytes done (@length, or fewer), or -errno */
	/* The engine's, untouched by drivers. */
	void *owner;			/* the sub-job this I/O belongs to */
	unsigned int dest_index;	/* which destination (not READ) */
	struct kcopyd_queue *queue;	/* the client queue it goes through */
};

/*
 * What a queue is made with (queue_create()), and what it says back.  The
 * buffers are the client's: the queue may register them with the kernel
 * (the io_uring queue of the local-file driver does, slot by slot on first
 * use), never write the zero buffer, and must not keep them past
 * queue_destroy().
 */
struct kcopyd_queue_setup {
	unsigned int depth;		/* I/Os in flight */
	int notify_fd;			/* the client's eventfd: add to it on completions */
	void *key;			/* the devices' queue_key */
	unsigned int io_engine;		/* KCOPYD_IO_ENGINE_AUTO, _LIBAIO or _IO_URING (local files) */
	void *slot_memory;		/* nr_slots buffers of slot_bytes each, contiguous */
	size_t slot_bytes;
	unsigned int nr_slots;
	const void *zero_buf;		/* slot_bytes of zeros, read-only */
	/* Said back by queue_create(). */
	const struct kcopyd_driver *ops;/* the operations the queue runs with: on entry the driver's own */
	unsigned int io_engine_used;	/* KCOPYD_IO_ENGINE_LIBAIO or _IO_URING; 0 where there is no such choice */
	char why[192];			/* why the engine is the one it is, or is limited (may stay empty) */
};

struct kcopyd_driver {
	const char *name;
	/*
	 * queue_create() - a queue for one client, for up to @setup->depth
	 * I/Os in flight, for the devices of this driver whose queue_key is
	 * @setup->key; completions are announced by adding to
	 * @setup->notify_fd (an eventfd).  A driver with more than one way of
	 * doing I/O (the local-file driver: libaio or io_uring) points
	 * @setup->ops at the table of the way it chose.
	 * Return: 0 and *@queue set, or -errno (@setup->why may say why).
	 */
	int (*queue_create)(struct kcopyd_queue_setup *setup, void **queue);
	/* queue_destroy() - tear down; no I/O is in flight. */
	void (*queue_destroy)(void *queue);
	/*
	 * poll_fds() - optional, for a queue whose completions come on
	 * descriptors of its own (sockets) rather than the eventfd: fill up to
	 * @max entries of @fds with the descriptors and events (POLLIN and/or
	 * POLLOUT) to wait for, and set *@timeout_ms to the time until the
	 * queue's nearest deadline (-1: none; it is -1 on entry).  Called by
	 * the I/O thread before every sleep.  Return: the entries filled.
	 */
	int (*poll_fds)(void *queue, struct pollfd *fds, unsigned int max, int *timeout_ms);
	/*
	 * poll_done() - after the sleep (poll(2) returned, or timed out), with
	 * the entries poll_fds() filled and their revents: drive the
	 * descriptors that are ready and act on deadlines that passed.
	 * Completions it causes are announced on the eventfd as usual.
	 */
	void (*poll_done)(void *queue, const struct pollfd *fds, unsigned int count);
	/*
	 * submit() - start @count I/Os.
	 * Return: how many were taken (from the front; 0 means "try again once
	 * something completed"), or -errno if none could be.  An I/O that
	 * cannot even be started may instead be taken and completed with its
	 * result set to -errno.
	 */
	int (*submit)(void *queue, struct kcopyd_io **ios, unsigned int count);
	/*
	 * reap() - collect up to @max completed I/Os without blocking; each
	 * has its result set.  A short transfer is passed on as it is: the
	 * engine continues a short write or copy for the rest (whose error
	 * is the true one, -ENOSPC say) and fails a short read with -EIO.
	 * Return: the number collected, or -errno.
	 */
	int (*reap)(void *queue, struct kcopyd_io **done, unsigned int max);
	/*
	 * extent() - synchronous: what @dev holds from byte @offset,
	 * looked at up to @length bytes, asked through the client's @queue
	 * for @dev.  Called on the I/O thread, so it must be cheap
	 * (lseek(SEEK_DATA) is: metadata only; the NBD driver asks its server
	 * for 1 GiB at once, within its deadline, and answers later calls from
	 * what it learnt).  NULL: all data.
	 * Return: 0 and *@extent_length (1..@length bytes) and *@hole (the
	 * range reads as zeros and holds no data), or -errno (then the
	 * engine drops KCOPYD_CAP_EXTENTS and reads everything).
	 */
	int (*extent)(void *queue, struct kcopyd_dev *dev, uint64_t offset, uint64_t length,
		      uint64_t *extent_length, bool *hole);
	/*
	 * abort() - optional: a job with I/O on @dev through @queue was
	 * cancelled.  A driver whose requests can wait long (a hung server)
	 * makes those that stay unanswered complete soon with -ECANCELED;
	 * requests that complete on their own are not disturbed.  Called by
	 * the thread that cancels (kcopyd_job_cancel()), not the I/O thread,
	 * which may be waiting on the device itself (extent()): it must be
	 * thread-safe and must not block.
	 */
	void (*abort)(void *queue, struct kcopyd_dev *dev);
	/* error() - optional: the device's last error text, for kcopyd_dev_error(). */
	const char *(*error)(const struct kcopyd_dev *dev);
	/* flush() - synchronous: make completed writes durable.  Return: 0 or -errno. */
	int (*flush)(struct kcopyd_dev *dev);
	/* close() - release the driver's part of @dev (not @dev itself). */
	void (*close)(struct kcopyd_dev *dev);
};

extern const struct kcopyd_driver kcopyd_file_driver;
extern const struct kcopyd_driver kcopyd_file_uring_ops;	/* the local-file driver's io_uring queue */
extern const struct kcopyd_driver kcopyd_nbd_driver;

#endif /* KCOPYD_DRIVER_H */
