/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The local-file driver's io_uring queue (liburing).  Reads and writes
 * use the fixed-buffer opcodes on the client's buffer slots, each slot
 * registered with the kernel the first time it carries I/O (a sparse
 * table made with the ring), so the kernel pins a slot's pages once, not
 * on every request, and memory is what the slots in use hold, as with
 * libaio.  Zeroing is IORING_OP_FALLOCATE, run by the kernel's own
 * workers; copy_file_range, which io_uring has no opcode for, goes to the
 * driver's worker pool.  Completions add to the client's eventfd
 * (io_uring_register_eventfd()).  At the end io_uring_queue_exit() closes
 * the ring and the kernel tears it down on its own time: no wait like
 * io_destroy(2)'s.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "libkcopyd/internal.h"
#include "libkcopyd/drv_file.h"

/*
 * An I/O's sqe carries the kcopyd_io pointer, and in its low bits the way
 * a zero was asked (FILE_ZERO_KEEP, FILE_ZERO_UNMAP; 0 for the rest).
 */
#define TAG_MASK 3u
_Static_assert(_Alignof(struct kcopyd_io) > TAG_MASK, "kcopyd_io pointers leave two low bits");

/* A slot's registration: not tried yet, registered, or refused (plain opcodes then). */
enum buf_state { BUF_NEW, BUF_FIXED, BUF_PLAIN };

struct uring_queue {
	struct io_uring ring;
	int notify_fd;
	unsigned int unsubmitted;	/* sqes filled that the kernel has not taken yet */
	struct file_workers workers;	/* copy_file_range */
	/* The client's buffers (struct kcopyd_queue_setup). */
	char *slots;
	size_t slot_bytes;
	unsigned int nr_slots;
	const char *zero_buf;
	/*
	 * fixed: the ring has a table of nr_slots + 1 buffers, the last
	 * being own_zero: zeros of our own, since the kernel registers only
	 * memory it may write and the client's zero buffer is read-only.
	 */
	bool fixed;
	unsigned char *buf_state;	/* nr_slots + 1 entries of enum buf_state */
	void *own_zero;
	/* I/Os taken and finished without the kernel (a zero nobody can do), for reap(). */
	struct kcopyd_io **now;
	unsigned int now_count, depth;
};

/* The opcodes this queue uses; a kernel without one of them gets libaio. */
static const struct {
	int opcode;
	const char *name;
} needed_opcodes[] = {
	{ IORING_OP_READ_FIXED, "READ_FIXED" },
	{ IORING_OP_WRITE_FIXED, "WRITE_FIXED" },
	{ IORING_OP_READ, "READ" },
	{ IORING_OP_WRITE, "WRITE" },
	{ IORING_OP_FALLOCATE, "FALLOCATE" },
};

/* The first line of /proc/sys/kernel/@name as a number, or -1. */
static long read_sysctl(const char *name)
{
	char path[96];
	long value = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/sys/kernel/%s", name);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &value) != 1)
		value = -1;
	fclose(f);
	return value;
}

/* Whether a seccomp filter is installed on this thread (/proc/thread-self/status "Seccomp: 2"). */
static bool seccomp_filtered(void)
{
	char line[128];
	bool filtered = false;
	FILE *f = fopen("/proc/thread-self/status", "re");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "Seccomp:", 8) == 0)
			filtered = atoi(line + 8) == 2;
	fclose(f);
	return filtered;
}

/* Say in @why why io_uring_setup(2) failed with -@r. */
static void setup_refused(int r, char *why, size_t why_len)
{
	long disabled = read_sysctl("io_uring_disabled");

	if (r == -ENOSYS)
		snprintf(why, why_len, "this kernel has no io_uring (io_uring_setup: %s)", strerror(-r));
	else if (r == -EPERM && disabled == 2)
		snprintf(why, why_len, "kernel.io_uring_disabled is 2 (io_uring_setup: %s)", strerror(-r));
	else if (r == -EPERM && disabled == 1)
		snprintf(why, why_len,
			 "kernel.io_uring_disabled is 1 and this process is not in kernel.io_uring_group "
			 "(io_uring_setup: %s)", strerror(-r));
	else if (seccomp_filtered())
		snprintf(why, why_len, "a seccomp filter refuses it (io_uring_setup: %s)", strerror(-r));
	else
		snprintf(why, why_len, "io_uring_setup: %s", strerror(-r));
}

/*
 * ring_setup() - make @ring of @entries and check its opcodes.
 * Return: 0, or -errno with the reason in @why (the ring is not left made).
 */
static int ring_setup(struct io_uring *ring, unsigned int entries, char *why, size_t why_len)
{
	struct io_uring_params params;
	struct io_uring_probe *probe;
	unsigned int index;
	int r;

	/* SUBMIT_ALL (5.18): an sqe that fails at submission does not hold back the ones after it. */
	memset(&params, 0, sizeof(params));
	params.flags = IORING_SETUP_SUBMIT_ALL;
	r = io_uring_queue_init_params(entries, ring, &params);
	if (r == -EINVAL) {
		memset(&params, 0, sizeof(params));
		r = io_uring_queue_init_params(entries, ring, &params);
	}
	if (r < 0) {
		setup_refused(r, why, why_len);
		return r;
	}
	probe = io_uring_get_probe_ring(ring);
	if (!probe) {
		snprintf(why, why_len, "this kernel cannot list its io_uring opcodes (before 5.6)");
		io_uring_queue_exit(ring);
		return -EOPNOTSUPP;
	}
	for (index = 0; index < sizeof(needed_opcodes) / sizeof(needed_opcodes[0]); index++)
		if (!io_uring_opcode_supported(probe, needed_opcodes[index].opcode)) {
			snprintf(why, why_len, "this kernel's io_uring has no %s opcode", needed_opcodes[index].name);
			io_uring_free_probe(probe);
			io_uring_queue_exit(ring);
			return -EOPNOTSUPP;
		}
	io_uring_free_probe(probe);
	return 0;
}

int file_uring_probe(char *why, size_t why_len)
{
	struct io_uring ring;
	int r = ring_setup(&ring, 8, why, why_len);

	if (r == 0)
		io_uring_queue_exit(&ring);
	return r;
}

/* Whether this thread has CAP_IPC_LOCK in its effective set (then registered memory is not counted). */
static bool has_ipc_lock(void)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &header, data) < 0)
		return false;
	return data[CAP_TO_INDEX(CAP_IPC_LOCK)].effective & CAP_TO_MASK(CAP_IPC_LOCK);
}

/*
 * setup_fixed() - make the ring's table of buffers, empty: a slot is put
 * in it on first use (buf_register()).  Not when the memory lock limit
 * could not hold every buffer (the kernel counts registered memory against
 * RLIMIT_MEMLOCK without CAP_IPC_LOCK), or the kernel has no sparse
 * tables (before 5.19): then the plain opcodes pin pages per request, as
 * libaio does, and @why says so.
 */
static void setup_fixed(struct uring_queue *q, char *why, size_t why_len)
{
	uint64_t bytes = (uint64_t)(q->nr_slots + 1) * q->slot_bytes;
	struct rlimit limit;
	int r;

	q->fixed = false;
	if (!has_ipc_lock() && getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
	    limit.rlim_cur < bytes) {
		snprintf(why, why_len,
			 "buffers not registered: RLIMIT_MEMLOCK (%llu KiB) is below the %llu KiB of buffers",
			 (unsigned long long)limit.rlim_cur >> 10, (unsigned long long)bytes >> 10);
		return;
	}
	r = io_uring_register_buffers_sparse(&q->ring, q->nr_slots + 1);
	if (r < 0) {
		snprintf(why, why_len, "buffers not registered: %s", strerror(-r));
		return;
	}
	q->fixed = true;
}

static void uring_queue_destroy(void *queue)
{
	struct uring_queue *q = queue;

	file_workers_stop(&q->workers);
	/* Closes the ring; the kernel unpins the buffers and frees it after, on its own. */
	io_uring_queue_exit(&q->ring);
	if (q->own_zero)
		munmap(q->own_zero, q->slot_bytes);
	free(q->buf_state);
	free(q->now);
	free(q);
}

int file_queue_create_uring(struct kcopyd_queue_setup *setup, void **queue)
{
	struct uring_queue *q;
	int r;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->notify_fd = setup->notify_fd;
	q->depth = setup->depth;
	q->slots = setup->slot_memory;
	q->slot_bytes = setup->slot_bytes;
	q->nr_slots = setup->nr_slots;
	q->zero_buf = setup->zero_buf;
	q->buf_state = calloc((size_t)q->nr_slots + 1, 1);
	q->now = calloc(q->depth, sizeof(*q->now));
	if (!q->buf_state || !q->now) {
		free(q->buf_state);
		free(q->now);
		free(q);
		return -ENOMEM;
	}
	r = ring_setup(&q->ring, setup->depth, setup->why, sizeof(setup->why));
	if (r < 0)
		goto err_free;
	r = io_uring_register_eventfd(&q->ring, setup->notify_fd);
	if (r < 0) {
		snprintf(setup->why, sizeof(setup->why), "io_uring_register_eventfd: %s", strerror(-r));
		goto err_exit_ring;
	}
	setup_fixed(q, setup->why, sizeof(setup->why));
	r = file_workers_start(&q->workers, setup->depth, setup->notify_fd);
	if (r < 0) {
		snprintf(setup->why, sizeof(setup->why), "starting the workers: %s", strerror(-r));
		goto err_exit_ring;
	}
	setup->ops = &kcopyd_file_uring_ops;
	setup->io_engine_used = KCOPYD_IO_ENGINE_IO_URING;
	*queue = q;
	return 0;

err_exit_ring:
	io_uring_queue_exit(&q->ring);
err_free:
	free(q->buf_state);
	free(q->now);
	free(q);
	return r;
}

/*
 * buf_register() - put buffer @index in the ring's table, the first time
 * it is used: a slot of the client's, or (index nr_slots) zeros of our
 * own, mapped now.  A refusal (the memory lock limit, counted per user
 * over all its rings) leaves the buffer to the plain opcodes for good.
 */
static void buf_register(struct uring_queue *q, unsigned int index)
{
	struct iovec iov = { .iov_len = q->slot_bytes };

	q->buf_state[index] = BUF_PLAIN;
	if (index == q->nr_slots) {
		q->own_zero = mmap(NULL, q->slot_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (q->own_zero == MAP_FAILED) {
			q->own_zero = NULL;
			return;
		}
		(void)madvise(q->own_zero, q->slot_bytes, MADV_DONTFORK);
		iov.iov_base = q->own_zero;
	} else {
		iov.iov_base = q->slots + (size_t)index * q->slot_bytes;
	}
	if (io_uring_register_buffers_update_tag(&q->ring, index, &iov, NULL, 1) == 1)
		q->buf_state[index] = BUF_FIXED;
	/* Registered (its pages pinned, as zeros) or not, it is never written again. */
	if (index == q->nr_slots)
		(void)mprotect(q->own_zero, q->slot_bytes, PROT_READ);
}

/*
 * buf_index() - the table's buffer that @io's buffer lies in (a slot, or
 * index nr_slots for the zero buffer, for which own_zero stands in), with
 * @io's @offset in it; nr_slots + 1 when none (or no table).
 */
static unsigned int buf_index(const struct uring_queue *q, const struct kcopyd_io *io, size_t *offset)
{
	const char *buf = io->buf;
	unsigned int index = q->nr_slots + 1;

	*offset = 0;
	if (!q->fixed)
		return index;
	if (buf >= q->slots && buf < q->slots + (size_t)q->nr_slots * q->slot_bytes) {
		index = (unsigned int)((size_t)(buf - q->slots) / q->slot_bytes);
		*offset = (size_t)(buf - q->slots) % q->slot_bytes;
	} else if (io->op != KCOPYD_IO_READ && buf >= q->zero_buf && buf < q->zero_buf + q->slot_bytes) {
		index = q->nr_slots;
		*offset = (size_t)(buf - q->zero_buf);
	}
	if (index <= q->nr_slots && *offset + io->length > q->slot_bytes)
		index = q->nr_slots + 1;
	return index;
}

/*
 * prep_rw() - fill @sqe for a read or write of @io: with the fixed opcode
 * when its buffer lies in one of the table's buffers, registered (by
 * uring_submit(), before it took @sqe), else the plain one.
 */
static void prep_rw(struct uring_queue *q, struct io_uring_sqe *sqe, struct kcopyd_io *io)
{
	int fd = kcopyd_file_fd(io->dev);
	bool is_read = io->op == KCOPYD_IO_READ;
	char *buf = io->buf;
	size_t offset;
	unsigned int index = buf_index(q, io, &offset);

	if (index <= q->nr_slots && q->buf_state[index] == BUF_FIXED) {
		char *base = index == q->nr_slots ? q->own_zero : q->slots + (size_t)index * q->slot_bytes;

		if (is_read)
			io_uring_prep_read_fixed(sqe, fd, base + offset, (unsigned int)io->length, io->offset, (int)index);
		else
			io_uring_prep_write_fixed(sqe, fd, base + offset, (unsigned int)io->length, io->offset, (int)index);
	} else if (is_read) {
		io_uring_prep_read(sqe, fd, buf, (unsigned int)io->length, io->offset);
	} else {
		io_uring_prep_write(sqe, fd, buf, (unsigned int)io->length, io->offset);
	}
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)io);
}

/*
 * prep_zero() - fill @sqe with the fallocate(2) of @method (a way of
 * zeroing @io's device that file_zero_method() offered): ZERO_RANGE to
 * keep blocks (on a block device the kernel does what BLKZEROOUT does),
 * PUNCH_HOLE to free them.
 */
static void prep_zero(struct io_uring_sqe *sqe, struct kcopyd_io *io, int method)
{
	int mode = method == FILE_ZERO_KEEP ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE
					    : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;

	io_uring_prep_fallocate(sqe, kcopyd_file_fd(io->dev), mode, io->offset, io->length);
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)io | (unsigned int)method);
}

static bool is_copy(const struct kcopyd_io *io)
{
	return io->op == KCOPYD_IO_COPY;
}

/* Hand the filled sqes to the kernel.  Return: 0, or -errno (they stay, for the next call). */
static int ring_submit(struct uring_queue *q)
{
	int r;

	if (q->unsubmitted == 0)
		return 0;
	r = io_uring_submit(&q->ring);
	if (r < 0)
		return r == -EAGAIN || r == -EBUSY || r == -EINTR ? 0 : r;
	q->unsubmitted = (unsigned int)r < q->unsubmitted ? q->unsubmitted - (unsigned int)r : 0;
	return 0;
}

static void complete_now(struct uring_queue *q, struct kcopyd_io *io, long result)
{
	uint64_t one = 1;

	io->result = result;
	q->now[q->now_count++] = io;
	(void)!write(q->notify_fd, &one, sizeof(one));
}

static int uring_submit(void *queue, struct kcopyd_io **ios, unsigned int count)
{
	struct uring_queue *q = queue;
	unsigned int taken = 0;
	int r;

	while (taken < count) {
		struct kcopyd_io *io = ios[taken];
		struct io_uring_sqe *sqe;
		int method = 0;

		if (is_copy(io)) {
			unsigned int run = file_workers_take(&q->workers, ios + taken, count - taken, is_copy);

			if (run == 0)
				break;	/* the workers are full */
			taken += run;
			continue;
		}
		if (io->op == KCOPYD_IO_ZERO && (method = file_zero_method(io->dev, io->zero_flags)) == 0) {
			/* No way left: the engine writes zeros. */
			if (q->now_count == q->depth)
				break;
			complete_now(q, io, -EOPNOTSUPP);
			taken++;
			continue;
		}
		if (io->op != KCOPYD_IO_ZERO) {
			size_t offset;
			unsigned int index = buf_index(q, io, &offset);

			if (index <= q->nr_slots && q->buf_state[index] == BUF_NEW) {
				/*
				 * Registering pins (and first faults in) the
				 * slot's pages: 0.2 to 15 ms for a 1 MiB slot
				 * of fresh huge pages on a busy host.  Hand the
				 * kernel the sqes filled so far first (before
				 * taking another, which io_uring_submit() would
				 * hand over unfilled), so that a client's first
				 * I/Os run while its next slots are registered,
				 * not after all of them.
				 */
				(void)ring_submit(q);
				buf_register(q, index);
			}
		}
		sqe = io_uring_get_sqe(&q->ring);
		if (!sqe)
			break;	/* the ring is full: after the next completions */
		if (io->op == KCOPYD_IO_ZERO)
			prep_zero(sqe, io, method);
		else
			prep_rw(q, sqe, io);
		q->unsubmitted++;
		taken++;
	}
	r = ring_submit(q);
	if (r < 0 && taken == 0)
		return r;
	return (int)taken;
}

/*
 * A zero's completion: done, a real failure, or the way asked refused by
 * the kernel, in which case the next way is asked for (the I/O goes on
 * and is not returned).  Return: true when @io is finished.
 */
static bool zero_done(struct uring_queue *q, struct kcopyd_io *io, int asked, int res)
{
	struct io_uring_sqe *sqe;
	int method;

	if (res >= 0) {
		io->result = (long)io->length;
		return true;
	}
	if (!file_zero_refused(io->dev, asked, -res)) {
		io->result = res;
		return true;
	}
	method = file_zero_method(io->dev, io->zero_flags);
	sqe = method ? io_uring_get_sqe(&q->ring) : NULL;
	if (!sqe) {
		/* No way left (or, which cannot be, no sqe): the engine writes zeros. */
		io->result = -EOPNOTSUPP;
		return true;
	}
	prep_zero(sqe, io, method);
	q->unsubmitted++;
	return false;
}

static int uring_reap(void *queue, struct kcopyd_io **done, unsigned int max)
{
	struct uring_queue *q = queue;
	struct io_uring_cqe *cqe;
	unsigned int count = 0;
	int r;

	while (count < max && io_uring_peek_cqe(&q->ring, &cqe) == 0) {
		uint64_t data = io_uring_cqe_get_data64(cqe);
		struct kcopyd_io *io = (struct kcopyd_io *)(uintptr_t)(data & ~(uint64_t)TAG_MASK);
		int res = cqe->res;

		io_uring_cqe_seen(&q->ring, cqe);
		if (io->op == KCOPYD_IO_ZERO) {
			if (!zero_done(q, io, (int)(data & TAG_MASK), res))
				continue;
		} else {
			/* Bytes or -errno; a short transfer is the engine's to judge. */
			io->result = res;
		}
		done[count++] = io;
	}
	while (count < max && q->now_count > 0)
		done[count++] = q->now[--q->now_count];
	count += file_workers_reap(&q->workers, done + count, max - count);
	r = ring_submit(q);
	return r < 0 && count == 0 ? r : (int)count;
}

const struct kcopyd_driver kcopyd_file_uring_ops = {
	.name = "file",
	.queue_create = file_queue_create_uring,
	.queue_destroy = uring_queue_destroy,
	.submit = uring_submit,
	.reap = uring_reap,
	.extent = file_extent,
	.flush = file_flush,
	.close = file_close,
};
