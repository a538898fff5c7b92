/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The I/O backend behind the engine: a small table of operations, so that
 * tests can put a fake or faulty backend in the place of libaio (and an NBD
 * backend can be added later).
 *
 * Only the client's I/O thread calls submit() and reap(); a backend needs no
 * locking of its own for them.  A backend signals that completions are ready
 * by adding to the eventfd it was given at create(): the I/O thread sleeps
 * on that eventfd and then calls reap().
 */
#ifndef KCOPYD_IO_H
#define KCOPYD_IO_H

#include <stddef.h>
#include <stdint.h>

struct kcopyd_dev;

enum kcopyd_io_op {
	KCOPYD_IO_READ,
	KCOPYD_IO_WRITE,
};

/* One read or write of one contiguous buffer. */
struct kcopyd_io {
	struct kcopyd_dev *dev;
	enum kcopyd_io_op op;
	uint64_t offset;	/* bytes */
	size_t length;		/* bytes */
	void *buf;
	long result;		/* set by the backend: the bytes transferred (@length, or fewer), or -errno */
	void *owner;		/* the engine's: the sub-job this I/O belongs to */
	unsigned int dest_index;/* the engine's: which destination (writes) */
};

struct kcopyd_io_ops {
	const char *name;
	/*
	 * create() - set up for up to @depth I/Os in flight; completions are
	 * announced by writing to @notify_fd (an eventfd).
	 * Return: 0 and *@backend set, or -errno.
	 */
	int (*create)(unsigned int depth, int notify_fd, void *arg, void **backend);
	/* destroy() - tear down; no I/O is in flight. */
	void (*destroy)(void *backend);
	/*
	 * submit() - start @count I/Os.
	 * Return: how many were taken (from the front; 0 means "try again
	 * once something completed"), or -errno if none could be.  An I/O
	 * that cannot even be started (a bad descriptor, say) may instead be
	 * taken and completed with its result set to -errno.
	 */
	int (*submit)(void *backend, struct kcopyd_io **ios, unsigned int count);
	/*
	 * reap() - collect up to @max completed I/Os without blocking; each
	 * has its result set.  A short transfer is passed on as it is: the
	 * engine continues a short write for the rest (whose error is the
	 * true one, -ENOSPC say) and fails a short read with -EIO.
	 * Return: the number collected, or -errno.
	 */
	int (*reap)(void *backend, struct kcopyd_io **done, unsigned int max);
};

extern const struct kcopyd_io_ops kcopyd_aio_ops;

#endif /* KCOPYD_IO_H */
