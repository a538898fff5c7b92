/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libaio backend.  Every iocb carries the engine's struct kcopyd_io in
 * its data field and the client's eventfd, so the I/O thread sleeps on that
 * one eventfd for completions and new work alike.  iocbs are built on the
 * stack: io_submit(2) copies them, and a completion hands back data, not
 * the iocb.
 */
#include "config.h"

#include <errno.h>
#include <libaio.h>
#include <stdlib.h>
#include <time.h>

#include "libkcopyd/internal.h"

/* The most iocbs handed to one io_submit(2) and reaped by one io_getevents(2). */
#define AIO_BATCH 64

struct aio_backend {
	io_context_t ctx;
	int notify_fd;
};

static int aio_create(unsigned int depth, int notify_fd, void *arg, void **backend)
{
	struct aio_backend *aio;
	int r;

	aio = calloc(1, sizeof(*aio));
	if (!aio)
		return -ENOMEM;
	aio->notify_fd = notify_fd;
	/* io_setup fails with EAGAIN past the system's aio-max-nr: ask for less. */
	do {
		r = io_setup(depth, &aio->ctx);
		depth /= 2;
	} while (r == -EAGAIN && depth >= 16);
	if (r < 0) {
		free(aio);
		return r;
	}
	*backend = aio;
	return 0;
}

static void aio_destroy(void *backend)
{
	struct aio_backend *aio = backend;

	io_destroy(aio->ctx);
	free(aio);
}

static int aio_submit(void *backend, struct kcopyd_io **ios, unsigned int count)
{
	struct aio_backend *aio = backend;
	struct iocb iocbs[AIO_BATCH];
	struct iocb *iocb_ptrs[AIO_BATCH];
	unsigned int taken = 0, batch, index;
	int r;

	while (taken < count) {
		batch = count - taken < AIO_BATCH ? count - taken : AIO_BATCH;
		for (index = 0; index < batch; index++) {
			struct kcopyd_io *io = ios[taken + index];

			if (io->op == KCOPYD_IO_READ)
				io_prep_pread(&iocbs[index], io->dev->fd, io->buf, io->length, (long long)io->offset);
			else
				io_prep_pwrite(&iocbs[index], io->dev->fd, io->buf, io->length, (long long)io->offset);
			iocbs[index].data = io;
			io_set_eventfd(&iocbs[index], aio->notify_fd);
			iocb_ptrs[index] = &iocbs[index];
		}
		r = io_submit(aio->ctx, (long)batch, iocb_ptrs);
		if (r < 0) {
			if (taken > 0 || r == -EAGAIN)
				return (int)taken;
			return r;
		}
		taken += (unsigned int)r;
		if ((unsigned int)r < batch)
			break;
	}
	return (int)taken;
}

static int aio_reap(void *backend, struct kcopyd_io **done, unsigned int max)
{
	struct aio_backend *aio = backend;
	struct io_event events[AIO_BATCH];
	struct timespec no_wait = { 0, 0 };
	int count, index;

	if (max > AIO_BATCH)
		max = AIO_BATCH;
	count = io_getevents(aio->ctx, 0, (long)max, events, &no_wait);
	if (count < 0)
		return count;
	for (index = 0; index < count; index++) {
		struct kcopyd_io *io = events[index].data;

		/* Bytes or -errno; a short transfer is the engine's to judge (io_short()). */
		io->result = (long)events[index].res;
		done[index] = io;
	}
	return count;
}

const struct kcopyd_io_ops kcopyd_aio_ops = {
	.name = "libaio",
	.create = aio_create,
	.destroy = aio_destroy,
	.submit = aio_submit,
	.reap = aio_reap,
};
