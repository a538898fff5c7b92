/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fake_io.h"

/*
 * Completed I/Os wait in done[] until reaped; while fake->hold is set they
 * are counted as held and not announced.  Both under fake->lock, since the
 * test thread releases them while the I/O thread submits and reaps.
 */
struct fake_backend {
	struct fake_io *fake;
	int notify_fd;
	struct kcopyd_io **done;
	unsigned int done_count, done_size;
};

void fake_io_init(struct fake_io *fake)
{
	memset(fake, 0, sizeof(*fake));
	pthread_mutex_init(&fake->lock, NULL);
}

void fake_io_fail(struct fake_io *fake, const struct kcopyd_dev *dev, enum kcopyd_io_op op,
		  uint64_t sector, uint64_t count, int error)
{
	pthread_mutex_lock(&fake->lock);
	fake->rules[fake->rule_count++] = (struct fake_rule){
		.dev = dev, .op = op, .sector = sector, .count = count, .error = error,
	};
	pthread_mutex_unlock(&fake->lock);
}

void fake_io_stop_short(struct fake_io *fake, const struct kcopyd_dev *dev, enum kcopyd_io_op op,
			uint64_t sector, int error, bool once)
{
	pthread_mutex_lock(&fake->lock);
	fake->rules[fake->rule_count++] = (struct fake_rule){
		.dev = dev, .op = op, .sector = sector, .count = UINT64_MAX - sector, .error = error,
		.short_transfer = true, .once = once,
	};
	pthread_mutex_unlock(&fake->lock);
}

static void announce(struct fake_backend *fb)
{
	uint64_t one = 1;

	(void)!write(fb->notify_fd, &one, sizeof(one));
}

unsigned int fake_io_release(struct fake_io *fake)
{
	unsigned int held;

	pthread_mutex_lock(&fake->lock);
	held = fake->held_count;
	fake->hold = false;
	fake->held_count = 0;
	if (fake->backend)
		announce(fake->backend);
	pthread_mutex_unlock(&fake->lock);
	return held;
}

unsigned int fake_io_held(struct fake_io *fake)
{
	unsigned int held;

	pthread_mutex_lock(&fake->lock);
	held = fake->held_count;
	pthread_mutex_unlock(&fake->lock);
	return held;
}

unsigned int fake_io_log(struct fake_io *fake, struct fake_log_entry *out, unsigned int max)
{
	unsigned int count;

	pthread_mutex_lock(&fake->lock);
	count = fake->log_count < max ? fake->log_count : max;
	memcpy(out, fake->log, count * sizeof(*out));
	pthread_mutex_unlock(&fake->lock);
	return count;
}

void fake_io_extents(struct fake_io *fake, const struct kcopyd_dev *dev, const struct fake_extent *extents,
		     unsigned int count)
{
	struct fake_extent_list *list;

	pthread_mutex_lock(&fake->lock);
	list = &fake->extent_lists[fake->extent_list_count++];
	list->dev = dev;
	memcpy(list->extents, extents, count * sizeof(*extents));
	list->count = count;
	pthread_mutex_unlock(&fake->lock);
}

unsigned int fake_io_extent_queries(struct fake_io *fake, const struct kcopyd_dev *dev)
{
	unsigned int index, queries = 0;

	pthread_mutex_lock(&fake->lock);
	for (index = 0; index < fake->extent_list_count; index++)
		if (fake->extent_lists[index].dev == dev)
			queries = fake->extent_lists[index].queries;
	pthread_mutex_unlock(&fake->lock);
	return queries;
}

static int fake_create(struct kcopyd_queue_setup *setup, void **backend)
{
	struct fake_backend *fb = calloc(1, sizeof(*fb));

	if (!fb)
		return -ENOMEM;
	fb->fake = setup->key;
	fb->notify_fd = setup->notify_fd;
	fb->done_size = setup->depth;
	fb->done = calloc(setup->depth, sizeof(*fb->done));
	if (!fb->done) {
		free(fb);
		return -ENOMEM;
	}
	pthread_mutex_lock(&fb->fake->lock);
	fb->fake->backend = fb;
	pthread_mutex_unlock(&fb->fake->lock);
	*backend = fb;
	return 0;
}

static void fake_destroy(void *backend)
{
	struct fake_backend *fb = backend;

	pthread_mutex_lock(&fb->fake->lock);
	fb->fake->backend = NULL;
	pthread_mutex_unlock(&fb->fake->lock);
	free(fb->done);
	free(fb);
}

static long fake_do_io(struct fake_io *fake, struct kcopyd_io *io)
{
	uint64_t sector = io->offset >> KCOPYD_SECTOR_SHIFT;
	uint64_t count = io->length >> KCOPYD_SECTOR_SHIFT;
	size_t length = io->length;
	unsigned int index;
	ssize_t r;

	for (index = 0; index < fake->rule_count; index++) {
		struct fake_rule *rule = &fake->rules[index];

		if (rule->spent || rule->dev != io->dev || rule->op != io->op ||
		    sector >= rule->sector + rule->count || rule->sector >= sector + count)
			continue;
		if (!rule->short_transfer)
			return rule->error;
		if (sector < rule->sector) {
			length = (rule->sector - sector) << KCOPYD_SECTOR_SHIFT;
			rule->spent = rule->once;
			break;
		}
		if (rule->error)
			return rule->error;
	}
	switch (io->op) {
	case KCOPYD_IO_READ:
		r = pread(kcopyd_file_fd(io->dev), io->buf, length, (off_t)io->offset);
		break;
	case KCOPYD_IO_WRITE:
		r = pwrite(kcopyd_file_fd(io->dev), io->buf, length, (off_t)io->offset);
		break;
	case KCOPYD_IO_ZERO: {
		/* A memfd or a file: punch, else write zeros; the engine sees neither. */
		static const char zeros[65536];
		size_t done = 0;

		if (fallocate(kcopyd_file_fd(io->dev), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)io->offset, (off_t)length) == 0)
			return (long)length;
		for (r = 0; done < length && r >= 0; done += (size_t)r) {
			size_t piece = length - done < sizeof(zeros) ? length - done : sizeof(zeros);

			r = pwrite(kcopyd_file_fd(io->dev), zeros, piece, (off_t)(io->offset + done));
		}
		return r < 0 ? -errno : (long)done;
	}
	case KCOPYD_IO_COPY: {
		void *buf = malloc(length ? length : 1);

		if (!buf)
			return -ENOMEM;
		r = pread(kcopyd_file_fd(io->src), buf, length, (off_t)io->src_offset);
		if (r == (ssize_t)length)
			r = pwrite(kcopyd_file_fd(io->dev), buf, length, (off_t)io->offset);
		else if (r >= 0)
			r = -(errno = EIO);
		free(buf);
		break;
	}
	default:
		return -EINVAL;
	}
	/* Short or not, as a real driver would hand it back. */
	return r < 0 ? -errno : r;
}

static int fake_submit(void *backend, struct kcopyd_io **ios, unsigned int count)
{
	struct fake_backend *fb = backend;
	struct fake_io *fake = fb->fake;
	unsigned int index;

	pthread_mutex_lock(&fake->lock);
	if (fake->max_submit && count > fake->max_submit)
		count = fake->max_submit;
	if (count > fb->done_size - fb->done_count)
		count = fb->done_size - fb->done_count;
	for (index = 0; index < count; index++) {
		struct kcopyd_io *io = ios[index];

		if (fake->log_count < FAKE_LOG_SIZE)
			fake->log[fake->log_count++] = (struct fake_log_entry){
				.dev = io->dev,
				.op = io->op,
				.sector = io->offset >> KCOPYD_SECTOR_SHIFT,
				.count = io->length >> KCOPYD_SECTOR_SHIFT,
				.zero_flags = io->op == KCOPYD_IO_ZERO ? io->zero_flags : 0,
				.src = io->op == KCOPYD_IO_COPY ? io->src : NULL,
			};
		io->result = fake_do_io(fake, io);
		fb->done[fb->done_count++] = io;
		if (fake->hold)
			fake->held_count++;
	}
	if (fb->done_count > fake->max_in_flight)
		fake->max_in_flight = fb->done_count;
	if (count && !fake->hold)
		announce(fb);
	pthread_mutex_unlock(&fake->lock);
	return (int)count;
}

static int fake_reap(void *backend, struct kcopyd_io **done, unsigned int max)
{
	struct fake_backend *fb = backend;
	unsigned int count, index;

	pthread_mutex_lock(&fb->fake->lock);
	count = fb->fake->hold ? 0 : (fb->done_count < max ? fb->done_count : max);
	if (fb->fake->reverse) {
		for (index = 0; index < count; index++)
			done[index] = fb->done[fb->done_count - 1 - index];
	} else {
		for (index = 0; index < count; index++)
			done[index] = fb->done[index];
		memmove(fb->done, fb->done + count, (fb->done_count - count) * sizeof(*fb->done));
	}
	fb->done_count -= count;
	pthread_mutex_unlock(&fb->fake->lock);
	return (int)count;
}

/* extent(): from the device's list, in sectors; all data without one. */
static int fake_extent(void *queue, struct kcopyd_dev *dev, uint64_t offset, uint64_t length,
		       uint64_t *extent_length, bool *hole)
{
	struct fake_io *fake = ((struct fake_backend *)queue)->fake;
	uint64_t sector = offset >> KCOPYD_SECTOR_SHIFT, end = (offset + length) >> KCOPYD_SECTOR_SHIFT;
	unsigned int list_index, index;

	*hole = false;
	*extent_length = length;
	pthread_mutex_lock(&fake->lock);
	for (list_index = 0; list_index < fake->extent_list_count; list_index++) {
		struct fake_extent_list *list = &fake->extent_lists[list_index];
		uint64_t next = end;

		if (list->dev != dev)
			continue;
		list->queries++;
		*hole = true;
		for (index = 0; index < list->count; index++) {
			const struct fake_extent *e = &list->extents[index];

			if (sector >= e->sector + e->count)
				continue;
			if (sector >= e->sector) {
				*hole = false;
				next = e->sector + e->count;
			} else {
				next = e->sector;
			}
			break;
		}
		if (next > end)
			next = end;
		*extent_length = (next - sector) << KCOPYD_SECTOR_SHIFT;
	}
	pthread_mutex_unlock(&fake->lock);
	return 0;
}

static int fake_flush(struct kcopyd_dev *dev)
{
	return kcopyd_file_driver.flush(dev);
}

static void fake_close(struct kcopyd_dev *dev)
{
	kcopyd_file_driver.close(dev);
}

const struct kcopyd_driver fake_io_ops = {
	.name = "fake",
	.queue_create = fake_create,
	.queue_destroy = fake_destroy,
	.submit = fake_submit,
	.reap = fake_reap,
	.extent = fake_extent,
	.flush = fake_flush,
	.close = fake_close,
};
