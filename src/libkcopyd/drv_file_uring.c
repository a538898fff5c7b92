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

/* The most unbounded kernel workers a ring may have (see file_queue_create_uring()). */
#define URING_MAX_UNBOUND_WORKERS 8

/* A slot's registration: not tried yet, registered, or refused (plain opcodes then). */
enum buf_state { BUF_NEW, BUF_FIXED, BUF_PLAIN };

struct uring_queue {
	struct io_uring ring;
	int notify_fd;
	unsigned int unsubmitted;	/* sqes filled that the kernel has not taken yet */
	/*
	 * I/Os with the kernel (filled, submitted, not reaped), at most depth:
	 * a ring's submission queue bounds only what waits to be taken, not
	 * what is in flight, and more than the completion queue holds would
	 * overflow it.
	 */
	unsigned int in_flight;
	unsigned int entries;		/* the ring's size: depth, or less (ring_make()) */
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
	/*
	 * I/Os taken and finished without the kernel, for reap(): a zero
	 * nobody can do (at most depth), those of sqes the kernel refused
	 * (ring_fail(): at most depth more).
	 */
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
 * Say in @why why @call (io_uring_setup, io_uring_register, io_uring_enter)
 * failed with -@r while a ring of @entries was being made.  ENOMEM without
 * CAP_IPC_LOCK under a memory lock limit is that limit: kernels before
 * 5.12, and recent ones again (6.18 does), count the ring itself against
 * RLIMIT_MEMLOCK.  A seccomp filter is named before ENOSYS, which
 * container runtimes' filters (crun, podman) return for io_uring.
 */
static void refused(const char *call, int r, unsigned int entries, char *why, size_t why_len)
{
	long disabled = read_sysctl("io_uring_disabled");
	bool setup = strcmp(call, "io_uring_setup") == 0;
	struct rlimit limit;

	if (setup && r == -ENOMEM && !has_ipc_lock() && getrlimit(RLIMIT_MEMLOCK, &limit) == 0 &&
	    limit.rlim_cur != RLIM_INFINITY)
		snprintf(why, why_len, "RLIMIT_MEMLOCK (%llu KiB) is too small for a ring of %u entries (%s: %s)",
			 (unsigned long long)limit.rlim_cur >> 10, entries, call, strerror(-r));
	else if (setup && r == -EPERM && disabled == 2)
		snprintf(why, why_len, "kernel.io_uring_disabled is 2 (%s: %s)", call, strerror(-r));
	else if (setup && r == -EPERM && disabled == 1)
		snprintf(why, why_len,
			 "kernel.io_uring_disabled is 1 and this process is not in kernel.io_uring_group (%s: %s)",
			 call, strerror(-r));
	else if (seccomp_filtered() && setup && r == -ENOSYS)
		/* A filter that has nothing to do with io_uring leaves a kernel without it possible. */
		snprintf(why, why_len, "a seccomp filter refuses it, or this kernel has no io_uring (%s: %s)", call,
			 strerror(-r));
	else if (seccomp_filtered())
		snprintf(why, why_len, "a seccomp filter refuses it (%s: %s)", call, strerror(-r));
	else if (setup && r == -ENOSYS)
		snprintf(why, why_len, "this kernel has no io_uring (%s: %s)", call, strerror(-r));
	else
		snprintf(why, why_len, "%s: %s", call, strerror(-r));
}

/*
 * ring_check() - what a ring just made must do before it is trusted with
 * I/O: list its opcodes (io_uring_register), which must include the
 * queue's, and run a no-op through io_uring_enter, which a filter may
 * refuse on its own (a ring whose submissions fail would hold every copy).
 * Return: 0, or -errno with the reason in @why.
 */
static int ring_check(struct io_uring *ring, unsigned int entries, char *why, size_t why_len)
{
	struct io_uring_probe *probe;
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	unsigned int index;
	int r;

	probe = calloc(1, sizeof(*probe) + 256 * sizeof(probe->ops[0]));
	if (!probe)
		return -ENOMEM;
	r = io_uring_register_probe(ring, probe, 256);
	if (r == -EINVAL && !seccomp_filtered()) {
		snprintf(why, why_len, "this kernel cannot list its io_uring opcodes (before 5.6)");
		r = -EOPNOTSUPP;
	} else if (r < 0) {
		refused("io_uring_register", r, entries, why, why_len);
	}
	for (index = 0; r == 0 && index < sizeof(needed_opcodes) / sizeof(needed_opcodes[0]); index++)
		if (!io_uring_opcode_supported(probe, needed_opcodes[index].opcode)) {
			snprintf(why, why_len, "this kernel's io_uring has no %s opcode", needed_opcodes[index].name);
			r = -EOPNOTSUPP;
		}
	free(probe);
	if (r < 0)
		return r;
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, 0);
	r = io_uring_submit_and_wait(ring, 1);
	if (r < 0) {
		refused("io_uring_enter", r, entries, why, why_len);
		return r;
	}
	r = io_uring_peek_cqe(ring, &cqe);
	if (r < 0) {
		refused("io_uring_enter", r, entries, why, why_len);
		return r;
	}
	io_uring_cqe_seen(ring, cqe);
	return 0;
}

/*
 * ring_setup() - make @ring of @entries and check it (ring_check()).
 * Return: 0, or -errno with the reason in @why (the ring is not left made).
 */
static int ring_setup(struct io_uring *ring, unsigned int entries, char *why, size_t why_len)
{
	struct io_uring_params params;
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
		refused("io_uring_setup", r, entries, why, why_len);
		return r;
	}
	r = ring_check(ring, entries, why, why_len);
	if (r < 0)
		io_uring_queue_exit(ring);
	return r;
}

/* The smallest ring a queue is made with when RLIMIT_MEMLOCK holds no larger one. */
#define MIN_RING_ENTRIES 32u

/*
 * ring_make() - ring_setup() of *@entries, or of half as many while the
 * kernel says ENOMEM, down to MIN_RING_ENTRIES: where the ring itself is
 * counted against RLIMIT_MEMLOCK (kernels before 5.12, and 6.18), a user
 * under the 64 KiB limit many systems set gets a ring of 256 entries
 * rather than none (a job at the default depth has 16 I/Os in flight at
 * 1-to-1, 40 at 1-to-4).  *@entries is set to the size made; a ring
 * smaller than asked is said in @why.  Return: as ring_setup().
 */
static int ring_make(struct io_uring *ring, unsigned int *entries, char *why, size_t why_len)
{
	unsigned int asked = *entries;
	int r;

	while ((r = ring_setup(ring, *entries, why, why_len)) == -ENOMEM && *entries / 2 >= MIN_RING_ENTRIES)
		*entries /= 2;
	if (r == 0 && *entries < asked)
		snprintf(why, why_len, "a ring of %u entries, not %u: the kernel had no room for a larger one "
			 "(RLIMIT_MEMLOCK)", *entries, asked);
	return r;
}

/*
 * The probe's ring is as large as a client's with the default budget
 * (engine.c's MAX_QUEUE_DEPTH), made as a client's is (ring_make()), so
 * that a memory lock limit too small for the smallest ring (see
 * refused()) refuses the probe too, with the reason, rather than the
 * client's creation after it with a bare ENOMEM.
 */
#define PROBE_ENTRIES 1024u

int file_uring_probe(char *why, size_t why_len)
{
	struct io_uring ring;
	unsigned int entries = PROBE_ENTRIES;
	int r = ring_make(&ring, &entries, why, why_len);

	if (r == 0)
		io_uring_queue_exit(&ring);
	return r;
}

/*
 * setup_fixed() - make the ring's table of buffers, empty: a slot is put
 * in it on first use (buf_register()).  Not when the memory lock limit
 * could not hold every buffer (the kernel counts registered memory against
 * RLIMIT_MEMLOCK without CAP_IPC_LOCK), or the kernel has no sparse
 * tables (before 5.19): then the plain opcodes pin pages per request, as
 * libaio does, and @why says so (after what it says already).
 */
static void setup_fixed(struct uring_queue *q, char *why, size_t why_len)
{
	uint64_t bytes = (uint64_t)(q->nr_slots + 1) * q->slot_bytes;
	size_t used = strlen(why);
	const char *sep = used ? "; " : "";
	struct rlimit limit;
	int r;

	q->fixed = false;
	if (!has_ipc_lock() && getrlimit(RLIMIT_MEMLOCK, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY &&
	    limit.rlim_cur < bytes) {
		snprintf(why + used, why_len - used,
			 "%sbuffers not registered: RLIMIT_MEMLOCK (%llu KiB) is below the %llu KiB of buffers", sep,
			 (unsigned long long)limit.rlim_cur >> 10, (unsigned long long)bytes >> 10);
		return;
	}
	r = io_uring_register_buffers_sparse(&q->ring, q->nr_slots + 1);
	if (r < 0) {
		snprintf(why + used, why_len - used, "%sbuffers not registered: %s", sep, strerror(-r));
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
	q->now = calloc(2 * (size_t)q->depth, sizeof(*q->now));
	if (!q->buf_state || !q->now) {
		free(q->buf_state);
		free(q->now);
		free(q);
		return -ENOMEM;
	}
	q->entries = setup->depth;
	r = ring_make(&q->ring, &q->entries, setup->why, sizeof(setup->why));
	if (r < 0)
		goto err_free;
	/*
	 * Not in a child: kcopydfs forks a helper per job start, which would
	 * otherwise share the submission queue, and could put requests there
	 * that the I/O thread's next io_uring_enter runs as the daemon.
	 */
	r = io_uring_ring_dontfork(&q->ring);
	if (r < 0) {
		snprintf(setup->why, sizeof(setup->why), "madvise(MADV_DONTFORK) of the ring: %s", strerror(-r));
		goto err_exit_ring;
	}
	r = io_uring_register_eventfd(&q->ring, setup->notify_fd);
	if (r < 0) {
		snprintf(setup->why, sizeof(setup->why), "io_uring_register_eventfd: %s", strerror(-r));
		goto err_exit_ring;
	}
	/*
	 * The kernel runs what cannot complete at once (every fallocate, a
	 * read or write the device would block on) on workers it makes as
	 * needed: "bounded" ones for regular files and block devices, at most
	 * four per CPU, which is left as it is, since reads and writes share
	 * them with the fallocates; "unbounded" ones for the rest, up to
	 * RLIMIT_NPROC, which for a daemon as root is no bound at all.
	 */
	(void)io_uring_register_iowq_max_workers(&q->ring, (unsigned int[2]){ 0, URING_MAX_UNBOUND_WORKERS });
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

static void complete_now(struct uring_queue *q, struct kcopyd_io *io, long result)
{
	uint64_t one = 1;

	io->result = result;
	q->now[q->now_count++] = io;
	(void)!write(q->notify_fd, &one, sizeof(one));
}

/*
 * ring_fail() - io_uring_enter(2) refused the filled sqes with -@error,
 * for good: each I/O they carry completes with it now, and the sqes are
 * withdrawn (the tail set back to the kernel's head).  Left published,
 * they would be refused again with every later submission and never
 * leave, until the full queue took no I/O at all and, nothing being in
 * flight, nothing woke the I/O thread again.  Withdrawing is safe: without
 * SQPOLL the kernel reads the queue only inside io_uring_enter(2), which
 * only this thread calls, and a refused call took none of them.
 */
static void ring_fail(struct uring_queue *q, int error)
{
	struct io_uring_sq *sq = &q->ring.sq;
	unsigned int head = io_uring_smp_load_acquire(sq->khead);
	unsigned int index;

	for (index = head; index != *sq->ktail; index++) {
		struct io_uring_sqe *sqe = &sq->sqes[index & sq->ring_mask];
		struct kcopyd_io *io = (struct kcopyd_io *)(uintptr_t)(sqe->user_data & ~(uint64_t)TAG_MASK);

		if (!io)
			continue;	/* none of ours carries 0 (ring_check() reaped its no-op) */
		q->in_flight--;
		complete_now(q, io, error);
	}
	sq->sqe_head = sq->sqe_tail = head;
	io_uring_smp_store_release(sq->ktail, head);
	q->unsubmitted = 0;
}

/*
 * ring_submit() - hand the filled sqes to the kernel.  A refusal that may
 * pass (EAGAIN, EBUSY: the kernel short of memory, or its completion
 * queue full; EINTR) leaves them for the next call, which comes with the
 * next completion, or, when there is none to come, after 1 ms and a kick
 * of the eventfd; any other fails their I/Os (ring_fail()).
 */
static void ring_submit(struct uring_queue *q)
{
	int r;

	if (q->unsubmitted == 0)
		return;
	r = io_uring_submit(&q->ring);
	if (r >= 0) {
		q->unsubmitted = (unsigned int)r < q->unsubmitted ? q->unsubmitted - (unsigned int)r : 0;
		return;
	}
	if (r != -EAGAIN && r != -EBUSY && r != -EINTR) {
		ring_fail(q, r);
		return;
	}
	if (q->in_flight == q->unsubmitted) {
		uint64_t one = 1;

		(void)nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
		(void)!write(q->notify_fd, &one, sizeof(one));
	}
}

static int uring_submit(void *queue, struct kcopyd_io **ios, unsigned int count)
{
	struct uring_queue *q = queue;
	unsigned int taken = 0;

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
			if (q->now_count >= q->depth)
				break;
			complete_now(q, io, -EOPNOTSUPP);
			taken++;
			continue;
		}
		if (q->in_flight == q->entries)
			break;	/* after the next completions */
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
				ring_submit(q);
				buf_register(q, index);
			}
		}
		sqe = io_uring_get_sqe(&q->ring);
		if (!sqe)
			break;
		if (io->op == KCOPYD_IO_ZERO)
			prep_zero(sqe, io, method);
		else
			prep_rw(q, sqe, io);
		q->unsubmitted++;
		q->in_flight++;
		taken++;
	}
	ring_submit(q);
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
	q->in_flight++;
	return false;
}

static int uring_reap(void *queue, struct kcopyd_io **done, unsigned int max)
{
	struct uring_queue *q = queue;
	struct io_uring_cqe *cqe;
	unsigned int count = 0;

	while (count < max && io_uring_peek_cqe(&q->ring, &cqe) == 0) {
		uint64_t data = io_uring_cqe_get_data64(cqe);
		struct kcopyd_io *io = (struct kcopyd_io *)(uintptr_t)(data & ~(uint64_t)TAG_MASK);
		int res = cqe->res;

		io_uring_cqe_seen(&q->ring, cqe);
		if (!io)
			continue;	/* none of ours carries 0 (ring_check() reaped its no-op) */
		q->in_flight--;
		if (io->op == KCOPYD_IO_ZERO) {
			if (!zero_done(q, io, (int)(data & TAG_MASK), res))
				continue;
		} else {
			/* Bytes or -errno; a short transfer is the engine's to judge. */
			io->result = res;
		}
		done[count++] = io;
	}
	ring_submit(q);	/* zeroes asked again, and what the kernel refused before */
	while (count < max && q->now_count > 0)
		done[count++] = q->now[--q->now_count];
	count += file_workers_reap(&q->workers, done + count, max - count);
	return (int)count;
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
