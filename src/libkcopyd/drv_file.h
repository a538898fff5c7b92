/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The local-file driver's parts shared by its two queues: drv_file.c (the
 * devices, the synchronous operations and the worker pool) with
 * drv_file_aio.c (the libaio queue) and drv_file_uring.c (the io_uring
 * queue).  Not exported (no kcopyd_ prefix).
 */
#ifndef KCOPYD_DRV_FILE_H
#define KCOPYD_DRV_FILE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libkcopyd/driver.h"

/* The ways of zeroing (file_zero_method()). */
#define FILE_ZERO_KEEP  1	/* stays allocated: FALLOC_FL_ZERO_RANGE, BLKZEROOUT */
#define FILE_ZERO_UNMAP 2	/* may be freed: FALLOC_FL_PUNCH_HOLE */

/*
 * file_zero_method() - the way to zero a range of @dev asked with @flags
 * (KCOPYD_ZERO_*) that the device has not refused yet: FILE_ZERO_KEEP,
 * FILE_ZERO_UNMAP, or 0 when none is left (the engine writes zeros).
 */
int file_zero_method(const struct kcopyd_dev *dev, unsigned int flags);

/*
 * file_zero_refused() - @method failed with errno @err: when that is the
 * kernel's "not here" (EOPNOTSUPP, ENOTTY, EINVAL, ENOSYS) drop the
 * method's capability from @dev, so that file_zero_method() offers the
 * next, and return true; false for a real failure.
 */
bool file_zero_refused(struct kcopyd_dev *dev, int method, int err);

/* file_sync_io() - run @io (ZERO, COPY; READ, WRITE too) with blocking calls.  Return: as io->result. */
long file_sync_io(struct kcopyd_io *io);

int file_extent(void *queue, struct kcopyd_dev *dev, uint64_t offset, uint64_t length,
		uint64_t *extent_length, bool *hole);
int file_flush(struct kcopyd_dev *dev);
void file_close(struct kcopyd_dev *dev);

/*
 * Workers per queue for the synchronous calls.  Two, so that a long
 * copy_file_range or BLKZEROOUT of one job does not hold up another's
 * zeroing; more would only add threads on small machines.
 */
#define FILE_WORKERS 2

/*
 * A pool of worker threads that run file_sync_io() for a queue: the I/O
 * thread hands I/Os in (file_workers_take()) and collects them done
 * (file_workers_reap()); a worker adds to the client's eventfd for each.
 * todo, done, count and exiting are under lock, which is taken by the I/O
 * thread and the workers, never with any other lock held.  The workers
 * run with the credentials of the thread that starts them.
 */
struct file_workers {
	int notify_fd;
	unsigned int depth;
	pthread_mutex_t lock;
	pthread_cond_t work_cond;
	struct kcopyd_io **todo;	/* a FIFO ring of depth entries */
	unsigned int todo_head, todo_count;
	struct kcopyd_io **done;	/* depth entries */
	unsigned int done_count;
	unsigned int count;		/* taken and not yet reaped: todo + running + done */
	bool exiting;
	pthread_t threads[FILE_WORKERS];
	unsigned int nr_threads;
};

/* file_workers_start() - for up to @depth I/Os taken at once.  Return: 0 or -errno. */
int file_workers_start(struct file_workers *w, unsigned int depth, int notify_fd);
/* file_workers_stop() - join the threads and free; nothing is taken. */
void file_workers_stop(struct file_workers *w);
/* file_workers_take() - take the leading I/Os of @ios that @want says are theirs, while there is room.  Return: how many. */
unsigned int file_workers_take(struct file_workers *w, struct kcopyd_io **ios, unsigned int count,
			       bool (*want)(const struct kcopyd_io *io));
/* file_workers_reap() - up to @max of the I/Os done, into @done.  Return: how many. */
unsigned int file_workers_reap(struct file_workers *w, struct kcopyd_io **done, unsigned int max);

/*
 * file_queue_create_uring() - the io_uring queue (@setup as for
 * queue_create(); its why says what failed).  file_uring_probe() - whether
 * a ring can be made and has the opcodes that queue uses: 0, or -errno and
 * a reason in @why.
 */
int file_queue_create_uring(struct kcopyd_queue_setup *setup, void **queue);
int file_uring_probe(char *why, size_t why_len);

#endif /* KCOPYD_DRV_FILE_H */
