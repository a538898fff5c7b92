/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The local-file driver's libaio queue, and the driver's table, whose
 * queue_create() chooses between it and the io_uring queue
 * (drv_file_uring.c) as the client asked: io_uring, libaio, or auto
 * (io_uring where a ring can be made and has the opcodes, else libaio).
 */
#include "config.h"

#include <errno.h>
#include <libaio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libkcopyd/internal.h"
#include "libkcopyd/drv_file.h"

/* The most iocbs handed to one io_submit(2) and reaped by one io_getevents(2). */
#define AIO_BATCH 64

/*
 * A client's libaio queue.  Reads and writes go to libaio, whose iocbs
 * carry the client's eventfd; zeroes and copies go to the worker pool.
 *
 * The libaio context is made by the first read or write (the I/O thread's
 * alone: ctx and has_ctx need no lock).  A zero job, or a copy every
 * destination of which is offloaded, never makes one, and so never waits
 * for io_destroy(2) at the end: the kernel frees a context after two RCU
 * grace periods, 25-75 ms here, longer than such a job itself may take.
 */
struct aio_queue {
	io_context_t ctx;
	bool has_ctx;
	int notify_fd;
	unsigned int depth;
	struct file_workers workers;
};

static int aio_queue_create(struct kcopyd_queue_setup *setup, void **queue)
{
	struct aio_queue *q;
	int r;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->notify_fd = setup->notify_fd;
	q->depth = setup->depth;
	r = file_workers_start(&q->workers, setup->depth, setup->notify_fd);
	if (r < 0) {
		free(q);
		return r;
	}
	*queue = q;
	return 0;
}

static void aio_queue_destroy(void *queue)
{
	struct aio_queue *q = queue;

	file_workers_stop(&q->workers);
	if (q->has_ctx)
		io_destroy(q->ctx);
	free(q);
}

/*
 * aio_queue_ctx() - make the queue's libaio context if it has none yet:
 * room for depth I/Os, or less past the system's aio-max-nr (io_setup
 * fails with EAGAIN there).
 * Return: 0, or the -errno of io_setup(2) (the read or write fails with it).
 */
static int aio_queue_ctx(struct aio_queue *q)
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
static int aio_submit_rw(struct aio_queue *q, struct kcopyd_io **ios, unsigned int count)
{
	struct iocb iocbs[AIO_BATCH];
	struct iocb *iocb_ptrs[AIO_BATCH];
	unsigned int index;
	int r;

	r = aio_queue_ctx(q);
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

static int aio_submit(void *queue, struct kcopyd_io **ios, unsigned int count)
{
	struct aio_queue *q = queue;
	unsigned int taken = 0;

	while (taken < count) {
		unsigned int run = 0;
		int r;

		if (is_sync_op(ios[taken])) {
			run = file_workers_take(&q->workers, ios + taken, count - taken, is_sync_op);
			if (run == 0)
				break;	/* the workers are full */
			taken += run;
			continue;
		}
		while (taken + run < count && !is_sync_op(ios[taken + run]))
			run++;
		r = aio_submit_rw(q, ios + taken, run);
		if (r < 0)
			return taken > 0 ? (int)taken : r;
		taken += (unsigned int)r;
		if ((unsigned int)r < run)
			break;
	}
	return (int)taken;
}

static int aio_reap(void *queue, struct kcopyd_io **done, unsigned int max)
{
	struct aio_queue *q = queue;
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
	return count + (int)file_workers_reap(&q->workers, done + count, max - (unsigned int)count);
}

static const char *const engine_names[] = {
	[KCOPYD_IO_ENGINE_DEFAULT] = "default",
	[KCOPYD_IO_ENGINE_AUTO] = "auto",
	[KCOPYD_IO_ENGINE_LIBAIO] = "libaio",
	[KCOPYD_IO_ENGINE_IO_URING] = "io_uring",
};

const char *kcopyd_io_engine_name(unsigned int engine)
{
	return engine < sizeof(engine_names) / sizeof(engine_names[0]) ? engine_names[engine] : "unknown";
}

int kcopyd_io_engine_parse(const char *name, unsigned int *engine)
{
	unsigned int index;

	if (!name || !engine)
		return -EINVAL;
	for (index = KCOPYD_IO_ENGINE_AUTO; index < sizeof(engine_names) / sizeof(engine_names[0]); index++)
		if (strcmp(name, engine_names[index]) == 0) {
			*engine = index;
			return 0;
		}
	return -EINVAL;
}

int io_engine_resolve(unsigned int asked, unsigned int *engine)
{
	/* Not for a setuid program's caller to choose. */
	const char *name = secure_getenv("KCOPYD_IO_ENGINE");

	if (asked > KCOPYD_IO_ENGINE_IO_URING)
		return -EINVAL;
	if (asked != KCOPYD_IO_ENGINE_DEFAULT) {
		*engine = asked;
		return 0;
	}
	if (!name || !*name) {
		*engine = KCOPYD_IO_ENGINE_AUTO;
		return 0;
	}
	return kcopyd_io_engine_parse(name, engine);
}

int kcopyd_io_engine_probe(unsigned int engine, char *why, size_t why_len)
{
	char text[192] = "";
	int r = 0;

	if (engine == KCOPYD_IO_ENGINE_DEFAULT && io_engine_resolve(engine, &engine) < 0) {
		r = -EINVAL;
		snprintf(text, sizeof(text), "KCOPYD_IO_ENGINE='%.100s' is not auto, io_uring or libaio",
			 secure_getenv("KCOPYD_IO_ENGINE"));
		engine = KCOPYD_IO_ENGINE_DEFAULT;
	}
	switch (engine) {
	case KCOPYD_IO_ENGINE_AUTO:
	case KCOPYD_IO_ENGINE_LIBAIO:
		break;
	case KCOPYD_IO_ENGINE_IO_URING:
		r = file_uring_probe(text, sizeof(text));
		break;
	case KCOPYD_IO_ENGINE_DEFAULT:
		break;	/* said above */
	default:
		r = -EINVAL;
		snprintf(text, sizeof(text), "%u is not an I/O engine", engine);
	}
	if (why && why_len)
		snprintf(why, why_len, "%s", text);
	return r;
}

/*
 * file_queue_create() - the queue of the engine the client asked for
 * (setup->io_engine): io_uring or libaio by name, a failure of the one
 * named being the client's; under auto io_uring where it can be made,
 * else libaio with the reason in setup->why.
 */
static int file_queue_create(struct kcopyd_queue_setup *setup, void **queue)
{
	char why[sizeof(setup->why) - sizeof("io_uring: ")];
	int r;

	if (setup->io_engine != KCOPYD_IO_ENGINE_LIBAIO) {
		r = file_queue_create_uring(setup, queue);
		if (r == 0 || setup->io_engine == KCOPYD_IO_ENGINE_IO_URING)
			return r;
		snprintf(why, sizeof(why), "%.*s", (int)sizeof(why) - 1, setup->why);
		snprintf(setup->why, sizeof(setup->why), "io_uring: %.*s", (int)sizeof(why) - 1, why);
	}
	setup->ops = &kcopyd_file_driver;
	setup->io_engine_used = KCOPYD_IO_ENGINE_LIBAIO;
	return aio_queue_create(setup, queue);
}

const struct kcopyd_driver kcopyd_file_driver = {
	.name = "file",
	.queue_create = file_queue_create,
	.queue_destroy = aio_queue_destroy,
	.submit = aio_submit,
	.reap = aio_reap,
	.extent = file_extent,
	.flush = file_flush,
	.close = file_close,
};
