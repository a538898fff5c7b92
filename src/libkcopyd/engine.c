/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The copy engine: job lifecycle, splitting into sub-jobs, the page budget,
 * the I/O thread and the completion thread.  doc/DESIGN.md tells the same
 * story at more length.
 *
 * Threads.  Each client runs two threads:
 *  - the I/O thread owns every job between submission and completion: it
 *    splits jobs into sub-jobs, hands out buffer slots, submits reads and
 *    writes to the devices' queues and reaps their completions.  It sleeps on one
 *    eventfd, which the queues signal on completions and submitters and
 *    cancellers signal on new work.
 *  - the completion thread calls the users' completion routines (and start
 *    routines), one at a time, in the order the jobs finished (started).
 * Submitters only append to a queue and kick the eventfd, so kcopyd_copy()
 * never blocks on I/O and never calls a completion routine.
 *
 * A sub-job's life: it takes a buffer slot, reads its chunk of the source
 * (or starts with the zero buffer), waits until every earlier sub-job of its
 * job has been read, then writes the buffer to every destination at once,
 * and gives the slot back when the last write completes.  Writes are thus
 * issued in ascending sector order, and a failed read is known before any
 * later chunk is written: without KCOPYD_IGNORE_ERROR no chunk above a
 * failed one reaches a destination.
 */
#include "config.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "libkcopyd/digest.h"
#include "libkcopyd/drv_file.h"
#include "libkcopyd/internal.h"
#include "libkcopyd/list.h"

#define MAX_SLOTS 4096u			/* more buffers than this add nothing but memory */
#define MAX_QUEUE_DEPTH 1024u		/* I/Os in flight per queue; more wait in the pending ring */
#define MAX_QUEUES 8u			/* driver queues per client */
#define IO_BATCH 64u			/* I/Os handed to a queue, or reaped, per call */
#define MAX_POLL_FDS 512u		/* descriptors the queues may add to the I/O thread's poll (NBD sockets) */
#define SECTORS_PER_PAGE (KCOPYD_PAGE_SIZE >> KCOPYD_SECTOR_SHIFT)
#define HUGE_PAGE_SIZE (2u << 20)	/* x86-64 and arm64 (4 KiB pages) PMD size */
#define MAX_GRAINS 64u			/* zero-detection grains per sub-job: one bit each in a uint64_t */
#define MAX_PIECES 16u			/* data extents read separately per sub-job; more are read as one */
#define DEFAULT_SPARSE_SECTORS 128u	/* 64 KiB: the zero-detection grain */
/*
 * Sub-jobs of a zero job hold no buffer, so they need not be the client's
 * size: one zero operation per 64 MiB instead of per MiB (a BLKZEROOUT or
 * fallocate costs about the same whatever its length, where the device
 * zeroes by itself).  Progress and the checkpoint move in these steps.
 */
#define ZERO_SUBJOB_SECTORS 131072u

/*
 * Where a job is.  Moves forward only, under kc->lock:
 * QUEUED (submitted, the I/O thread has not taken it) -> ACTIVE (the I/O
 * thread owns it) -> COMPLETING (on the completion queue) -> FINISHED (its
 * completion routine returned; the result may be read).
 */
enum job_state {
	JOB_QUEUED,
	JOB_ACTIVE,
	JOB_COMPLETING,
	JOB_FINISHED,
};

enum subjob_phase {
	SUBJOB_READING,		/* the source read is in flight */
	SUBJOB_READ_DONE,	/* read (or zero-filled); waits for its turn to write */
	SUBJOB_WRITING,		/* writes to the destinations in flight (and its digests, if any) */
	SUBJOB_VERIFYING,	/* KCOPYD_VERIFY: a destination's chunk read back, then digested */
	SUBJOB_DONE,		/* finished (back on kc->free_subjobs) */
};

/*
 * Work for the digest thread, handed over on kc->digest_todo and back on
 * kc->digest_done (under kc->digest_lock).  Between the two the digest
 * thread alone touches what the work names; the I/O thread keeps the
 * sub-job's buffer slot until it is back.
 */
enum digest_kind {
	DIGEST_HASH,		/* a copied chunk: the job's digests, then its chunk digest (verify) */
	DIGEST_VERIFY,		/* a chunk read back from a destination: its chunk digest */
	DIGEST_FLUSH,		/* a job's destinations: kcopyd_dev_sync() each, drop their cached pages
				 * (on a thread of its own, not the digest thread: see flush_start()) */
};

struct digest_work {
	struct list_head link;
	enum digest_kind kind;
	void *owner;		/* the struct subjob, or for DIGEST_FLUSH the struct kcopyd_job */
};

/* A data extent of the source inside a sub-job, in sectors from the sub-job's start. */
struct piece {
	uint32_t start;
	uint32_t count;
};

/*
 * A sub-job: a chunk of a job, cut into grains (job->grain_sectors each,
 * the last one shorter) that are each data or zero.  Each destination
 * walks the grains in runs of one kind, one operation in flight: a data
 * run is written from the buffer or copied (offload), a zero run is
 * zeroed, written from the zero page, or skipped.  The I/O thread's alone.
 */
struct subjob {
	struct kcopyd_job *job;
	struct list_head link;		/* job->subjobs (ascending sector), or kc->free_subjobs */
	uint64_t start;			/* first sector, relative to the job's regions */
	uint64_t count;
	void *buf;
	unsigned int slot;		/* index of its buffer slot; only for copies */
	enum subjob_phase phase;
	bool read_failed;
	bool read_cancelled;		/* its read was ended by the cancel: not written, not hashed, even
					 * with KCOPYD_IGNORE_ERROR (it is no bad read, to write as zeros) */
	bool failed;			/* a read or any write of it failed */
	bool buf_valid;			/* the buffer holds the chunk's data */
	bool reading;			/* a read of it is in flight (the first, or a late one) */
	bool offloaded;			/* a copy of it to some destination completed */
	unsigned int writes_pending;	/* destinations not yet through every run */
	unsigned int nr_grains;
	uint64_t zero_map;		/* bit g: grain g reads as zeros (a hole, read as zeros, a zero job) */
	unsigned int nr_pieces;		/* the source's data extents to read, ascending */
	unsigned int read_piece;	/* the one being read */
	struct piece pieces[MAX_PIECES];
	uint32_t waiting_for_buf;	/* bit i: dests[i] waits for a late read (offload refused) */
	uint8_t dest_grain[KCOPYD_MAX_REGIONS];	/* the first grain dests[i] has not done */
	uint8_t dest_run_end[KCOPYD_MAX_REGIONS];	/* the end of the run in flight to dests[i] */
	struct kcopyd_io ios[KCOPYD_MAX_REGIONS + 1];	/* [0]: the read; [1 + i]: the operation on dests[i] */
	/* KCOPYD_VERIFY's read-back (SUBJOB_VERIFYING): which destination, and its chunk digest. */
	unsigned int verify_dest;
	uint64_t verify_digest;
	struct digest_work work;	/* on the digest thread's lists while it hashes */
};

/* A destination of a job, and the lowest failing range of it. */
struct job_dest {
	struct io_region region;
	struct kcopyd_queue *queue;	/* set at submission */
	bool offload;			/* copy_file_range from the source; the I/O thread drops it on a refusal */
	struct kcopyd_failure failure;	/* written by the I/O thread before COMPLETING */
	struct kcopyd_failure verify_failure;	/* likewise: the lowest chunk that did not read back */
	int flush_error;		/* KCOPYD_VERIFY's flush: written by the digest thread */
};

/*
 * A job.  It is allocated with exactly num_dests entries in dests[], so a
 * queued job costs a few hundred bytes, not the room for 32 destinations:
 * a service may hold thousands of them.
 */
struct kcopyd_job {
	struct kcopyd_client *kc;

	/* Set at submission, read-only afterwards. */
	bool is_zero;
	struct io_region source;
	struct kcopyd_queue *source_queue;
	unsigned int num_dests;
	unsigned int flags;
	kcopyd_notify_fn fn;
	void *context;
	uint64_t total;
	uint64_t subjob_sectors;	/* the client's, capped by every device's largest request */
	uint64_t grain_sectors;		/* zero-detection grain: a multiple of every device's block */
	unsigned int zero_flags;	/* KCOPYD_IO_ZERO's, from the job's flags */
	unsigned int hashes;		/* KCOPYD_HASH_* digests of the source */
	bool verify;			/* KCOPYD_VERIFY */
	uint64_t nr_chunks;		/* sub-jobs of the copy: chunk i is sectors i * subjob_sectors on */
	/*
	 * The digests.  digests is the digest thread's between the job's
	 * first DIGEST_HASH and its last one's return, then the I/O
	 * thread's; chunk_digests[i] (verify) is written by the digest
	 * thread before chunk i's work comes back, read by the I/O thread
	 * after.  The hand-off on kc->digest_lock orders both.
	 */
	struct digest_set digests;
	uint64_t *chunk_digests;
	struct digest_work flush_work;
	pthread_t flush_thread;		/* verify's flush, joined by the I/O thread in flush_done() */

	/* Read from any thread. */
	_Atomic uint64_t sectors_done;
	_Atomic uint64_t sectors_zero;	/* of sectors_done, zero ranges */
	_Atomic uint64_t sectors_offloaded;	/* of sectors_done, data copied by copy_file_range */
	_Atomic uint64_t checkpoint;	/* every sub-job below it written everywhere, no gap */
	_Atomic uint64_t sectors_verified;	/* destination sectors read back and matched */
	_Atomic unsigned int phase;	/* KCOPYD_PHASE_*: written by the I/O thread */
	_Atomic uint64_t rate;		/* bytes per second read; 0: none (kcopyd_job_set_rate()) */
	_Atomic bool paused;		/* written under kc->lock (kcopyd_job_pause()), read by the I/O thread */

	/* Under kc->lock. */
	enum job_state state;
	unsigned int refs;		/* the engine's until notified, the handle's, a pending cancel's */
	bool cancel_requested;
	struct list_head queue_link;	/* kc->submitted, then kc->completed */
	struct list_head cancel_link;	/* kc->cancels */
	struct list_head start_link;	/* kc->started */
	struct list_head poke_link;	/* kc->pokes: paused, resumed or its rate changed */
	struct list_head owned_link;	/* kc->owned while ACTIVE (the I/O thread's) */
	bool poked;			/* on kc->pokes */

	/* The I/O thread's alone, between taking the job and completing it. */
	struct list_head ready_link;	/* kc->ready while it may start a sub-job, kc->throttled while
					 * it may but for its rate (throttled set) */
	bool throttled;
	uint64_t throttled_since;	/* ns, CLOCK_MONOTONIC */
	int64_t credit;			/* rate: bytes it may read before it waits (below 0: a debt) */
	uint64_t credit_stamp;		/* ns: the credit is counted up to here */
	uint64_t sectors_hashed;	/* chunks back from the digest thread */
	uint64_t verify_next, verify_units;	/* verify: the next read-back, of nr_chunks * num_dests */
	unsigned int verify_skip;	/* bit i: dests[i] is not read back (its flush failed, or it mismatched) */
	struct list_head subjobs;	/* in flight, ascending */
	unsigned int subjobs_in_flight;
	uint64_t next_start;		/* the next sub-job's first sector */
	bool stopping;			/* no more sub-jobs: an error without IGNORE_ERROR, or a cancel */
	uint64_t fail_start;		/* lowest failed sub-job; no chunk above it is written */
	uint64_t checkpoint_stop;	/* lowest sub-job that finished unwritten or failed */
	bool io_done;			/* handed to the completion thread */
	bool started;			/* its first sub-job started */
	uint64_t extent_end;		/* the source is known up to here (sectors of the job) ... */
	bool extent_hole;		/* ... to be a hole, or data, from extent_start */
	uint64_t extent_start;

	/*
	 * Written by the I/O thread before COMPLETING, read after it: the
	 * parts of struct kcopyd_result that are not per destination.
	 */
	int read_err;
	unsigned int write_err;
	int error;			/* first in time */
	int cancelled;
	uint64_t sectors_done_final;
	uint64_t sectors_zero_final;
	uint64_t sectors_offloaded_final;
	struct kcopyd_failure read_failure;
	unsigned int verify_err;
	int verified;
	unsigned int hashes_done;	/* hashes, once every chunk was hashed */
	struct kcopyd_digest digest_out[KCOPYD_HASH_COUNT];	/* the first of result.digests[]' slots */

	struct job_dest dests[];	/* num_dests of them; set at submission */
};

/*
 * A client's queue of one driver, for the devices with one queue_key.
 * Made by the first kcopyd_submit() that names such a device, under
 * kc->queues_lock; published by nr_queues (release), so the I/O thread
 * reads the table without a lock; destroyed with the client.
 */
struct kcopyd_queue {
	const struct kcopyd_driver *driver;	/* the devices' driver (what queue_find() matches) */
	const struct kcopyd_driver *ops;	/* what the queue runs with (the local-file driver's io_uring queue, say) */
	void *key;
	void *queue;			/* the driver's */
};

/*
 * The client.  Locking: kc->lock protects the fields marked so; it is the
 * only lock in the engine and no other lock is ever taken while holding it
 * (completion routines run without it).  Fields marked "I/O thread" are
 * touched by that thread alone and need no lock.
 */
struct kcopyd_client {
	int event_fd;			/* kicks the I/O thread */
	unsigned int queue_depth;	/* I/Os in flight per queue */
	/*
	 * The queues.  queues_lock serialises their creation (it is taken
	 * alone, never with kc->lock); the I/O thread reads nr_queues
	 * entries without it.  override: the tests' driver, which every
	 * device goes through (kcopyd_client_create_ops()).
	 */
	pthread_mutex_t queues_lock;
	struct kcopyd_queue queues[MAX_QUEUES];
	_Atomic unsigned int nr_queues;
	const struct kcopyd_driver *override;
	/*
	 * The I/O engine asked for (resolved from the environment) and the one
	 * the local-file queue runs: set when the client is made, read-only after.
	 */
	unsigned int io_engine;
	unsigned int io_engine_used;
	char io_engine_why[192];

	unsigned int num_pages;
	unsigned int subjob_sectors;
	unsigned int slot_pages;
	unsigned int depth;
	unsigned int sparse_sectors;	/* the zero-detection grain asked for */
	unsigned int nr_slots;
	kcopyd_start_fn start_fn;
	void *slot_memory;		/* nr_slots * slot_pages pages */
	void *zero_buf;			/* slot_pages pages, read-only, never written */

	pthread_t io_thread;
	pthread_t completion_thread;

	pthread_mutex_t lock;
	pthread_cond_t completed_cond;	/* completion thread: work, or exit */
	pthread_cond_t finished_cond;	/* a job reached FINISHED */
	/* These lists and counters, all under ->lock. */
	struct list_head submitted;	/* new jobs for the I/O thread */
	struct list_head cancels;	/* cancel requests for the I/O thread */
	struct list_head started;	/* jobs whose start_fn is to be called */
	struct list_head completed;	/* jobs whose routine is to be called */
	struct list_head pokes;		/* jobs paused, resumed or re-rated, for the I/O thread */
	uint64_t jobs_active;		/* submitted, not yet FINISHED */
	uint64_t jobs_paused;
	uint64_t jobs_total;
	bool io_exit;			/* tell the I/O thread to return */
	bool destroying;		/* kcopyd_client_destroy() waits: cancel paused jobs */
	bool completion_exit;		/* tell the completion thread to return */

	/*
	 * The digest thread: hashes chunks in each job's order, digests
	 * read-backs, flushes before a verify.  Started by the first job that
	 * needs it (digest_started, under digest_lock); digest_lock is taken
	 * alone, never with kc->lock.
	 */
	pthread_mutex_t digest_lock;
	pthread_cond_t digest_cond;
	struct list_head digest_todo, digest_done;
	bool digest_started, digest_exit;
	pthread_t digest_thread;
	void *chunk_state;		/* the digest thread's XXH3 state */

	/* The client's rate limit (kcopyd_client_set_rate()); its credit is the I/O thread's. */
	_Atomic uint64_t rate;
	int64_t credit;
	uint64_t credit_stamp;

	/* I/O thread. */
	struct list_head ready;		/* jobs that may start a sub-job, round robin */
	struct list_head throttled;	/* jobs that may, but for a rate limit */
	struct list_head owned;		/* every ACTIVE job */
	struct list_head free_subjobs;
	unsigned int *free_slots;	/* a stack of slot indices */
	unsigned int free_slot_count;
	struct kcopyd_io **pending;	/* I/Os not yet taken by their queue, FIFO ring */
	unsigned int pending_head, pending_count, pending_size;
	unsigned int ios_in_flight;
	uint64_t jobs_owned;		/* ACTIVE jobs */
	struct pollfd poll_fds[1 + MAX_POLL_FDS];	/* the eventfd, then the queues' (poll_fds()) */

	/* Counters read by kcopyd_client_stats() from any thread. */
	_Atomic uint64_t sectors_read;
	_Atomic uint64_t sectors_written;
	_Atomic uint64_t read_errors;
	_Atomic uint64_t write_errors;
	_Atomic uint64_t sectors_zero;
	_Atomic uint64_t sectors_offloaded;
	_Atomic uint64_t zero_fallbacks;
	_Atomic uint64_t offload_fallbacks;
	_Atomic unsigned int pages_in_use;
	_Atomic unsigned int pages_peak;
	_Atomic uint64_t sectors_hashed;
	_Atomic uint64_t sectors_verified;
	_Atomic uint64_t verify_errors;
	/*
	 * Time jobs waited for rate credit, under ->lock, so that a snapshot
	 * counts the waits still going on: throttled_done_ns of those over,
	 * plus now times throttled_jobs less throttled_since_sum.
	 */
	uint64_t throttled_done_ns;
	uint64_t throttled_jobs;
	uint64_t throttled_since_sum;
};

static void kick(struct kcopyd_client *kc)
{
	uint64_t one = 1;

	/* Can only fail if the counter would overflow: then it is set anyway. */
	(void)!write(kc->event_fd, &one, sizeof(one));
}

/* Under kc->lock. */
static void job_put_locked(struct kcopyd_job *job)
{
	assert(job->refs > 0);
	if (--job->refs == 0)
		free(job);
}

/* ------------------------------------------------------------------ */
/* Buffer slots: the page budget                                       */
/* ------------------------------------------------------------------ */

static void slot_take(struct kcopyd_client *kc, struct subjob *sj)
{
	unsigned int in_use, peak;

	sj->slot = kc->free_slots[--kc->free_slot_count];
	sj->buf = (char *)kc->slot_memory + (size_t)sj->slot * kc->slot_pages * KCOPYD_PAGE_SIZE;
	in_use = atomic_fetch_add_explicit(&kc->pages_in_use, kc->slot_pages, memory_order_relaxed) +
		 kc->slot_pages;
	peak = atomic_load_explicit(&kc->pages_peak, memory_order_relaxed);
	while (in_use > peak &&
	       !atomic_compare_exchange_weak_explicit(&kc->pages_peak, &peak, in_use, memory_order_relaxed,
						      memory_order_relaxed))
		;
}

static void slot_give(struct kcopyd_client *kc, struct subjob *sj)
{
	kc->free_slots[kc->free_slot_count++] = sj->slot;
	atomic_fetch_sub_explicit(&kc->pages_in_use, kc->slot_pages, memory_order_relaxed);
}

/* ------------------------------------------------------------------ */
/* The I/O thread                                                      */
/* ------------------------------------------------------------------ */

static void pending_push(struct kcopyd_client *kc, struct kcopyd_io *io)
{
	assert(kc->pending_count < kc->pending_size);
	kc->pending[(kc->pending_head + kc->pending_count++) % kc->pending_size] = io;
}

/* Hand @work to the digest thread. */
static void digest_queue(struct kcopyd_client *kc, struct digest_work *work, enum digest_kind kind, void *owner)
{
	work->kind = kind;
	work->owner = owner;
	pthread_mutex_lock(&kc->digest_lock);
	list_add_tail(&work->link, &kc->digest_todo);
	pthread_cond_signal(&kc->digest_cond);
	pthread_mutex_unlock(&kc->digest_lock);
}

static uint64_t now_ns(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
}

/*
 * Rate limits: a token bucket counted in bytes.  A sub-job may start while
 * the credit is not below 0 and is charged the bytes it reads, so the
 * credit goes into debt and the next one waits until the rate has paid it
 * back: the average is the rate whatever the chunk size, and a job holds
 * only the buffers its rate keeps busy.  Credit saved up while idle is
 * capped at 100 ms worth, so a paused or throttled job does not burst.
 * The stamp moves by the time the added credit stands for, so no fraction
 * of a byte is lost between calls.  The I/O thread's alone.
 */
static void credit_refill(int64_t *credit, uint64_t *stamp, uint64_t rate, uint64_t now)
{
	int64_t cap = (int64_t)(rate / 10);
	uint64_t add;

	if (rate == 0 || *stamp == 0 || now < *stamp) {
		if (rate == 0)
			*credit = 0;
		*stamp = now;
		return;
	}
	add = (uint64_t)((unsigned __int128)(now - *stamp) * rate / 1000000000u);
	if (*credit + (int64_t)(add < (uint64_t)INT64_MAX / 2 ? add : (uint64_t)INT64_MAX / 2) >= cap) {
		/* Also cuts credit saved under a higher rate: a lower one holds at once. */
		*credit = cap;
		*stamp = now;
		return;
	}
	*credit += (int64_t)add;
	*stamp += (uint64_t)((unsigned __int128)add * 1000000000u / rate);
}

/* The ns until @credit is back to 0 at @rate (0 if it is). */
static uint64_t credit_wait(int64_t credit, uint64_t rate)
{
	if (credit >= 0 || rate == 0)
		return 0;
	return (uint64_t)((unsigned __int128)(uint64_t)-credit * 1000000000u / rate) + 1;
}

/* Whether @job's rate and its client's allow it to read now. */
static bool job_has_credit(struct kcopyd_job *job, uint64_t now)
{
	struct kcopyd_client *kc = job->kc;

	credit_refill(&job->credit, &job->credit_stamp, atomic_load_explicit(&job->rate, memory_order_relaxed),
		      now);
	credit_refill(&kc->credit, &kc->credit_stamp, atomic_load_explicit(&kc->rate, memory_order_relaxed), now);
	return job->credit >= 0 && kc->credit >= 0;
}

/* Charge @bytes read by @job to its rate and its client's. */
static void job_charge(struct kcopyd_job *job, uint64_t bytes)
{
	struct kcopyd_client *kc = job->kc;

	if (atomic_load_explicit(&job->rate, memory_order_relaxed))
		job->credit -= (int64_t)bytes;
	if (atomic_load_explicit(&kc->rate, memory_order_relaxed))
		kc->credit -= (int64_t)bytes;
}

/* Verify: move past the read-backs of destinations that are no longer read back. */
static void verify_skip_excluded(struct kcopyd_job *job)
{
	while (job->verify_next < job->verify_units &&
	       (job->verify_skip >> (job->verify_next % job->num_dests) & 1))
		job->verify_next++;
}

static bool job_may_start_subjob(struct kcopyd_job *job)
{
	unsigned int phase = atomic_load_explicit(&job->phase, memory_order_relaxed);

	if (job->stopping || job->subjobs_in_flight >= job->kc->depth ||
	    atomic_load_explicit(&job->paused, memory_order_relaxed))
		return false;
	if (phase == KCOPYD_PHASE_VERIFY) {
		verify_skip_excluded(job);
		return job->verify_next < job->verify_units;
	}
	return phase == KCOPYD_PHASE_COPY && job->next_start < job->total;
}

/* @job starts (@on) or ends waiting for rate credit at @now: kcopyd_stats.throttled_ns. */
static void throttle_account(struct kcopyd_job *job, bool on, uint64_t now)
{
	struct kcopyd_client *kc = job->kc;

	pthread_mutex_lock(&kc->lock);
	if (on) {
		job->throttled_since = now;
		kc->throttled_jobs++;
		kc->throttled_since_sum += now;
	} else {
		kc->throttled_jobs--;
		kc->throttled_since_sum -= job->throttled_since;
		kc->throttled_done_ns += now - job->throttled_since;
	}
	pthread_mutex_unlock(&kc->lock);
}

/* Whether @job's next sub-job reads what a rate counts: the copy's source, or a verify's destinations. */
static bool job_phase_reads(const struct kcopyd_job *job)
{
	unsigned int phase = atomic_load_explicit(&job->phase, memory_order_relaxed);

	return phase == KCOPYD_PHASE_COPY || phase == KCOPYD_PHASE_VERIFY;
}

/*
 * Put @job on kc->ready if it may start a sub-job now, on kc->throttled if
 * it may but for its rate, on neither if it may not.
 */
static void ready_update(struct kcopyd_job *job)
{
	struct kcopyd_client *kc = job->kc;
	bool queued = !list_empty(&job->ready_link), want = job_may_start_subjob(job), throttle = false;
	uint64_t now = 0;

	if (want && job_phase_reads(job) &&
	    (atomic_load_explicit(&job->rate, memory_order_relaxed) ||
	     atomic_load_explicit(&kc->rate, memory_order_relaxed))) {
		now = now_ns();
		throttle = !job_has_credit(job, now);
	}
	if (queued && (!want || throttle != job->throttled)) {
		list_del_init(&job->ready_link);
		if (job->throttled) {
			throttle_account(job, false, now ? now : now_ns());
			job->throttled = false;
		}
		queued = false;
	}
	if (want && !queued) {
		job->throttled = throttle;
		if (throttle) {
			throttle_account(job, true, now);
			list_add_tail(&job->ready_link, &kc->throttled);
		} else {
			list_add_tail(&job->ready_link, &kc->ready);
		}
	}
}

/*
 * Move the throttled jobs whose credit is back to kc->ready.
 * Return: -1 if none is left waiting, 0 if some moved (dispatch again),
 * else the ns until the first may go on.
 */
static int64_t throttle_check(struct kcopyd_client *kc)
{
	uint64_t kc_rate = atomic_load_explicit(&kc->rate, memory_order_relaxed), wait = UINT64_MAX;
	struct list_head *node, *next;
	bool moved = false;

	for (node = kc->throttled.next; node != &kc->throttled; node = next) {
		struct kcopyd_job *job = list_entry(node, struct kcopyd_job, ready_link);
		uint64_t job_wait, kc_wait;

		next = node->next;
		ready_update(job);
		if (!job->throttled) {
			moved = true;
			continue;
		}
		job_wait = credit_wait(job->credit, atomic_load_explicit(&job->rate, memory_order_relaxed));
		kc_wait = credit_wait(kc->credit, kc_rate);
		if ((job_wait > kc_wait ? job_wait : kc_wait) < wait)
			wait = job_wait > kc_wait ? job_wait : kc_wait;
	}
	if (moved)
		return 0;
	return wait == UINT64_MAX ? -1 : (int64_t)(wait ? wait : 1);
}

static void note_failure(struct kcopyd_failure *failure, int error, uint64_t sector, uint64_t count)
{
	if (failure->error == 0 || sector < failure->sector) {
		failure->error = error;
		failure->sector = sector;
		failure->count = count;
	}
}

/*
 * Whether @job's cancel was asked for: taken by the I/O thread (cancelled),
 * or still queued.  An I/O that abort() ended with -ECANCELED can be reaped
 * before the I/O thread has taken the cancel (it is queued first, then
 * abort() is called), so cancelled alone would call it a device's failure.
 */
static bool job_cancel_asked(struct kcopyd_job *job)
{
	bool asked;

	if (job->cancelled)
		return true;
	pthread_mutex_lock(&job->kc->lock);
	asked = job->cancel_requested;
	pthread_mutex_unlock(&job->kc->lock);
	return asked;
}

/* A read or a write of @sj failed with @error: account it, stop the job unless told to go on. */
static void subjob_failed(struct subjob *sj, int error, int dest_index)
{
	struct kcopyd_job *job = sj->job;
	struct kcopyd_client *kc = job->kc;

	sj->failed = true;
	if (error == -ECANCELED && job_cancel_asked(job)) {
		/* Ended by the cancel (abort()): the job stops, no device failed. */
		if (dest_index < 0) {
			sj->read_failed = true;
			sj->read_cancelled = true;
		}
		if (sj->start < job->fail_start)
			job->fail_start = sj->start;
		return;
	}
	if (job->error == 0)
		job->error = error;
	if (dest_index < 0) {
		sj->read_failed = true;
		job->read_err = 1;
		note_failure(&job->read_failure, error, job->source.sector + sj->start, sj->count);
		atomic_fetch_add_explicit(&kc->read_errors, 1, memory_order_relaxed);
	} else {
		job->write_err |= 1u << dest_index;
		note_failure(&job->dests[dest_index].failure, error,
			     job->dests[dest_index].region.sector + sj->start, sj->count);
		atomic_fetch_add_explicit(&kc->write_errors, 1, memory_order_relaxed);
	}
	if (!(job->flags & KCOPYD_IGNORE_ERROR)) {
		job->stopping = true;
		if (sj->start < job->fail_start)
			job->fail_start = sj->start;
		ready_update(job);
	}
}

static void complete_job(struct kcopyd_job *job)
{
	struct kcopyd_client *kc = job->kc;
	unsigned int phase = atomic_load_explicit(&job->phase, memory_order_relaxed);

	assert(job->subjobs_in_flight == 0 && list_empty(&job->ready_link));
	/* Every chunk's digest is in only if every chunk was hashed: each was, in order, or none from a gap on. */
	if (job->hashes && job->sectors_hashed == job->total) {
		digest_set_final(&job->digests, job->digest_out);
		job->hashes_done = job->hashes;
	} else {
		digest_set_free(&job->digests);
	}
	if (job->verify_err)
		job->verified = -1;
	else if (job->verify && job->total == 0 && !job->cancelled)
		job->verified = 1;	/* nothing to compare: every destination reads back as the source */
	else if (job->verify && phase == KCOPYD_PHASE_VERIFY && !job->cancelled && !job->verify_skip &&
		 job->verify_next >= job->verify_units)
		job->verified = 1;
	free(job->chunk_digests);
	job->chunk_digests = NULL;
	list_del_init(&job->owned_link);
	atomic_store_explicit(&job->phase, KCOPYD_PHASE_DONE, memory_order_relaxed);
	job->io_done = true;
	job->sectors_done_final = atomic_load_explicit(&job->sectors_done, memory_order_relaxed);
	job->sectors_zero_final = atomic_load_explicit(&job->sectors_zero, memory_order_relaxed);
	job->sectors_offloaded_final = atomic_load_explicit(&job->sectors_offloaded, memory_order_relaxed);
	kc->jobs_owned--;

	pthread_mutex_lock(&kc->lock);
	job->state = JOB_COMPLETING;
	if (atomic_load_explicit(&job->paused, memory_order_relaxed)) {
		atomic_store_explicit(&job->paused, false, memory_order_relaxed);
		kc->jobs_paused--;
	}
	list_add_tail(&job->queue_link, &kc->completed);
	pthread_cond_signal(&kc->completed_cond);
	pthread_mutex_unlock(&kc->lock);
}

static void flush_start(struct kcopyd_job *job);

/*
 * Complete @job if nothing of it is in flight and nothing more is to
 * start; a verified copy goes on to its flush (on the digest thread,
 * which brings it back to flush_done()) and its read-backs instead.
 */
static void maybe_complete_job(struct kcopyd_job *job)
{
	if (job->subjobs_in_flight > 0)
		return;
	switch (atomic_load_explicit(&job->phase, memory_order_relaxed)) {
	case KCOPYD_PHASE_COPY:
		if (!job->stopping && job->next_start < job->total)
			return;
		if (job->verify && !job->stopping) {
			flush_start(job);
			return;
		}
		break;
	case KCOPYD_PHASE_VERIFY:
		verify_skip_excluded(job);
		if (!job->stopping && job->verify_next < job->verify_units)
			return;
		break;
	default:
		return;	/* flushing: flush_done() goes on */
	}
	complete_job(job);
}

/* Sectors of @sj in the grains set in @map. */
static uint64_t grains_sectors(const struct subjob *sj, uint64_t map)
{
	uint64_t grain = sj->job->grain_sectors, sectors = 0;
	unsigned int index;

	for (index = 0; index < sj->nr_grains; index++)
		if (map >> index & 1)
			sectors += (index + 1) * grain <= sj->count ? grain : sj->count - index * grain;
	return sectors;
}

static uint64_t all_grains(unsigned int nr_grains)
{
	return nr_grains == 64 ? UINT64_MAX : (UINT64_C(1) << nr_grains) - 1;
}

/*
 * The last operation of @sj completed, or it is dropped: give its slot
 * back.  Its sectors count as done if it was written (with IGNORE_ERROR,
 * also when some of it failed).
 */
static void subjob_finish(struct subjob *sj, bool written)
{
	struct kcopyd_job *job = sj->job;
	struct kcopyd_client *kc = job->kc;
	uint64_t first_unfinished;

	if (written && (!sj->failed || (job->flags & KCOPYD_IGNORE_ERROR))) {
		uint64_t zero = grains_sectors(sj, sj->zero_map);

		atomic_fetch_add_explicit(&job->sectors_zero, zero, memory_order_relaxed);
		if (sj->offloaded)
			atomic_fetch_add_explicit(&job->sectors_offloaded, sj->count - zero, memory_order_relaxed);
		atomic_fetch_add_explicit(&job->sectors_done, sj->count, memory_order_relaxed);
	}
	list_del_init(&sj->link);
	/*
	 * The checkpoint: every sub-job below the first one still in flight
	 * (they are in ascending order) has finished; it stops for good at one
	 * that was not written, or not everywhere.
	 */
	if ((!written || sj->failed) && sj->start < job->checkpoint_stop)
		job->checkpoint_stop = sj->start;
	first_unfinished = list_empty(&job->subjobs) ? job->next_start
						     : list_entry(job->subjobs.next, struct subjob, link)->start;
	/* Release: a reader that sees this checkpoint sees the counts added above. */
	atomic_store_explicit(&job->checkpoint,
			      first_unfinished < job->checkpoint_stop ? first_unfinished : job->checkpoint_stop,
			      memory_order_release);
	if (!job->is_zero)
		slot_give(kc, sj);
	sj->phase = SUBJOB_DONE;
	list_add_tail(&sj->link, &kc->free_subjobs);
	job->subjobs_in_flight--;
	ready_update(job);
}

/* Issue the read of the source piece sj->read_piece into the buffer. */
static void subjob_read_piece(struct subjob *sj)
{
	struct kcopyd_job *job = sj->job;
	const struct piece *piece = &sj->pieces[sj->read_piece];

	sj->ios[0] = (struct kcopyd_io){
		.dev = job->source.bdev,
		.op = KCOPYD_IO_READ,
		.offset = (job->source.sector + sj->start + piece->start) << KCOPYD_SECTOR_SHIFT,
		.length = (size_t)piece->count << KCOPYD_SECTOR_SHIFT,
		.buf = (char *)sj->buf + ((size_t)piece->start << KCOPYD_SECTOR_SHIFT),
		.owner = sj,
		.queue = job->source_queue,
	};
	pending_push(job->kc, &sj->ios[0]);
}

static void subjob_read(struct subjob *sj)
{
	sj->reading = true;
	sj->read_piece = 0;
	subjob_read_piece(sj);
}

/*
 * buffer_is_zero() - whether @len bytes at @buf are all zero, at the speed
 * of memcmp(3) (vectorised by libc): the first 16 bytes by hand, then the
 * buffer against itself 16 bytes on.  Dense data fails at its first bytes.
 */
static bool buffer_is_zero(const unsigned char *buf, size_t len)
{
	size_t index;

	for (index = 0; index < 16 && index < len; index++)
		if (buf[index])
			return false;
	return len <= 16 || memcmp(buf, buf + 16, len - 16) == 0;
}

/*
 * Every piece of the chunk is read: clear what lies between them (holes,
 * never read, where the slot still holds an earlier chunk's bytes), so
 * that a data grain with a hole in it is written with zeros there.
 */
static void subjob_clear_holes(struct subjob *sj)
{
	unsigned char *buf = sj->buf;
	uint64_t pos = 0;
	unsigned int index;

	for (index = 0; index <= sj->nr_pieces; index++) {
		uint64_t next = index < sj->nr_pieces ? sj->pieces[index].start : sj->count;

		if (next > pos)
			memset(buf + (pos << KCOPYD_SECTOR_SHIFT), 0, (size_t)(next - pos) << KCOPYD_SECTOR_SHIFT);
		if (index < sj->nr_pieces)
			pos = sj->pieces[index].start + sj->pieces[index].count;
	}
}

/* Every piece of the chunk is read: clear the holes, mark each grain that reads as zeros. */
static void subjob_scan(struct subjob *sj)
{
	uint64_t grain = sj->job->grain_sectors;
	unsigned char *buf = sj->buf;
	unsigned int index;

	subjob_clear_holes(sj);
	for (index = 0; index < sj->nr_grains; index++) {
		uint64_t first = index * grain, count = first + grain <= sj->count ? grain : sj->count - first;

		if (!(sj->zero_map >> index & 1) &&
		    buffer_is_zero(buf + (first << KCOPYD_SECTOR_SHIFT), (size_t)count << KCOPYD_SECTOR_SHIFT))
			sj->zero_map |= UINT64_C(1) << index;
	}
}

static void dest_next(struct subjob *sj, unsigned int dest_index);

/*
 * Turn @io into a write from the zero page, of at most the page's size (a
 * zero job's runs are longer; dest_io_done() goes on with the rest).
 */
static void zero_page_write(struct kcopyd_client *kc, struct kcopyd_io *io)
{
	size_t zero_bytes = (size_t)kc->slot_pages * KCOPYD_PAGE_SIZE;

	io->op = KCOPYD_IO_WRITE;
	io->buf = kc->zero_buf;
	if (io->length > zero_bytes)
		io->length = zero_bytes;
}

/* dests[@dest_index] has done every run of @sj, or failed. */
static void dest_done(struct subjob *sj)
{
	if (--sj->writes_pending == 0)
		subjob_finish(sj, true);
}

/* The read of @sj is over (@error 0, or how it failed). */
static void subjob_read_done(struct subjob *sj, int error)
{
	struct kcopyd_job *job = sj->job;
	bool ignore = job->flags & KCOPYD_IGNORE_ERROR;
	bool late = sj->phase == SUBJOB_WRITING;
	uint32_t waiting = sj->waiting_for_buf;
	unsigned int dest_index;

	sj->reading = false;
	if (error)
		subjob_failed(sj, error, -1);
	if (!late) {
		sj->phase = SUBJOB_READ_DONE;
		if (!error) {
			subjob_scan(sj);
			sj->buf_valid = true;
		} else if (ignore && !sj->read_cancelled) {
			/* A chunk that could not be read is written as zeros, as the kernel does. */
			sj->zero_map = all_grains(sj->nr_grains);
		}
		return;
	}
	/*
	 * A late read, for destinations whose offload was refused.  If it
	 * failed they get zeros (IGNORE_ERROR) or nothing more.
	 */
	sj->waiting_for_buf = 0;
	if (error && ignore && !sj->read_cancelled) {
		memset(sj->buf, 0, (size_t)sj->count << KCOPYD_SECTOR_SHIFT);
		error = 0;
	} else if (!error) {
		subjob_clear_holes(sj);
	}
	sj->buf_valid = !error;
	for (dest_index = 0; dest_index < job->num_dests; dest_index++) {
		if (!(waiting >> dest_index & 1))
			continue;
		if (error)
			dest_done(sj);
		else
			dest_next(sj, dest_index);
	}
}

/*
 * Issue the next operation of @sj on dests[@dest_index]: the run of grains
 * of one kind from dest_grain[] on.  A data run is copied (offload) or
 * written from the buffer (after a late read if there is none yet); a
 * zero run is skipped on a destination known to be zero, zeroed where the
 * device can, else written from the zero page.
 */
static void dest_next(struct subjob *sj, unsigned int dest_index)
{
	struct kcopyd_job *job = sj->job;
	struct kcopyd_client *kc = job->kc;
	struct job_dest *dest = &job->dests[dest_index];
	struct kcopyd_io *io = &sj->ios[1 + dest_index];
	uint64_t grain = job->grain_sectors;

	for (;;) {
		unsigned int first = sj->dest_grain[dest_index], end = first;
		bool zero;
		uint64_t start, count;

		if (first == sj->nr_grains) {
			dest_done(sj);
			return;
		}
		zero = sj->zero_map >> first & 1;
		while (end < sj->nr_grains && (bool)(sj->zero_map >> end & 1) == zero)
			end++;
		start = first * grain;
		count = (end * grain < sj->count ? end * grain : sj->count) - start;
		if (zero && (job->flags & (KCOPYD_DEST_ZERO | KCOPYD_ALLOCATED)) == KCOPYD_DEST_ZERO) {
			/* Zeros already: nothing to write. */
			atomic_fetch_add_explicit(&kc->sectors_written, count, memory_order_relaxed);
			atomic_fetch_add_explicit(&kc->sectors_zero, count, memory_order_relaxed);
			sj->dest_grain[dest_index] = (uint8_t)end;
			continue;
		}
		if (!zero && !dest->offload && !sj->buf_valid) {
			sj->waiting_for_buf |= 1u << dest_index;
			if (!sj->reading)
				subjob_read(sj);
			return;
		}
		*io = (struct kcopyd_io){
			.dev = dest->region.bdev,
			.offset = (dest->region.sector + sj->start + start) << KCOPYD_SECTOR_SHIFT,
			.length = (size_t)count << KCOPYD_SECTOR_SHIFT,
			.owner = sj,
			.dest_index = dest_index,
			.queue = dest->queue,
		};
		if (zero) {
			unsigned int want = (job->zero_flags & KCOPYD_ZERO_ALLOCATE)
						    ? KCOPYD_CAP_ZERO_ALLOC
						    : KCOPYD_CAP_ZERO_UNMAP | KCOPYD_CAP_ZERO_ALLOC;

			if (dev_caps(io->dev) & want) {
				io->op = KCOPYD_IO_ZERO;
				io->zero_flags = job->zero_flags;
			} else {
				zero_page_write(kc, io);
			}
		} else if (dest->offload) {
			io->op = KCOPYD_IO_COPY;
			io->src = job->source.bdev;
			io->src_offset = (job->source.sector + sj->start + start) << KCOPYD_SECTOR_SHIFT;
		} else {
			io->op = KCOPYD_IO_WRITE;
			io->buf = (char *)sj->buf + (start << KCOPYD_SECTOR_SHIFT);
		}
		sj->dest_run_end[dest_index] = (uint8_t)end;
		pending_push(kc, io);
		return;
	}
}

/* Queue the writes of a read-complete sub-job, or drop it when an earlier failure forbids writing it. */
static void subjob_write(struct subjob *sj)
{
	struct kcopyd_job *job = sj->job;
	bool ignore = job->flags & KCOPYD_IGNORE_ERROR;
	unsigned int dest_index;

	if (sj->read_cancelled || (!ignore && (sj->read_failed || sj->start > job->fail_start))) {
		subjob_finish(sj, false);
		return;
	}
	sj->phase = SUBJOB_WRITING;
	sj->writes_pending = job->num_dests;
	if (job->hashes || job->verify) {
		/*
		 * Hashed beside the writes, in the job's order (sub-jobs come
		 * here in ascending order, and the digest thread takes its work
		 * in turn); the slot stays until the digests are taken.
		 */
		sj->writes_pending++;
		digest_queue(job->kc, &sj->work, DIGEST_HASH, sj);
	}
	for (dest_index = 0; dest_index < job->num_dests; dest_index++) {
		sj->dest_grain[dest_index] = 0;
		dest_next(sj, dest_index);
	}
}

/*
 * Write every sub-job whose turn has come: walk the job's sub-jobs in
 * ascending order and stop at the first still reading, so no chunk is
 * written before all chunks below it were read.  With KCOPYD_WRITE_SEQ
 * also stop at one still writing: one write per destination in flight.
 */
static void job_advance_writes(struct kcopyd_job *job)
{
	struct list_head *node, *next;

	for (node = job->subjobs.next; node != &job->subjobs; node = next) {
		struct subjob *sj = list_entry(node, struct subjob, link);

		next = node->next;
		if (sj->phase == SUBJOB_READING)
			break;
		if (sj->phase == SUBJOB_WRITING) {
			if (job->flags & KCOPYD_WRITE_SEQ)
				break;
			continue;
		}
		subjob_write(sj);
		if ((job->flags & KCOPYD_WRITE_SEQ) && sj->phase == SUBJOB_WRITING)
			break;
	}
}

/*
 * @io transferred less than it was asked to.  A write or copy that stopped
 * short (a filesystem that fills up writes what fits, then says so) goes
 * on from where it stopped, so that its error is the one the device gives
 * for the rest (-ENOSPC, -EDQUOT, -EFBIG), not an -EIO made up here.  With
 * direct I/O it goes on from the last whole block it wrote (the partial
 * one is written again, from the same buffer).  A short read is the end
 * of the file (it shrank since it was opened) and fails with -EIO, as does
 * a write that made no progress.
 * Return: true if the rest was queued (@io is not done yet).
 */
static bool io_short(struct kcopyd_client *kc, struct kcopyd_io *io)
{
	size_t transferred = (size_t)io->result;

	if (io->dev->direct)
		transferred -= transferred % io->dev->block_size;
	if ((io->op == KCOPYD_IO_WRITE || io->op == KCOPYD_IO_COPY) && transferred > 0) {
		io->offset += transferred;
		io->length -= transferred;
		if (io->op == KCOPYD_IO_COPY)
			io->src_offset += transferred;
		else
			io->buf = (char *)io->buf + transferred;
		pending_push(kc, io);
		return true;
	}
	io->result = -EIO;
	return false;
}

/* The errnos by which copy_file_range(2) says "not between these two files". */
static bool offload_refused(long result)
{
	return result == -EXDEV || result == -EOPNOTSUPP || result == -EINVAL || result == -ENOSYS;
}

/* The errnos of a copy_file_range that only the destination can cause (it is full). */
static bool copy_error_is_the_destinations(long result)
{
	return result == -ENOSPC || result == -EDQUOT || result == -EFBIG;
}

/* An operation on a destination completed: go on with the next run, or fall back. */
static void dest_io_done(struct kcopyd_client *kc, struct subjob *sj, struct kcopyd_io *io)
{
	struct kcopyd_job *job = sj->job;
	unsigned int dest_index = io->dest_index;
	uint64_t sectors;

	if (io->op == KCOPYD_IO_ZERO && io->result == -EOPNOTSUPP) {
		/* The device cannot zero (it dropped the capability): the zero page, same range. */
		atomic_fetch_add_explicit(&kc->zero_fallbacks, 1, memory_order_relaxed);
		zero_page_write(kc, io);
		pending_push(kc, io);
		return;
	}
	if (io->op == KCOPYD_IO_COPY && io->result < 0 &&
	    (offload_refused(io->result) || !copy_error_is_the_destinations(io->result))) {
		/*
		 * Not between these files, or an error copy_file_range cannot
		 * say is the source's or the destination's (EIO): this
		 * destination is written from the buffer from now on, starting
		 * with this run, so that a read error is the source's (and
		 * read as zeros with IGNORE_ERROR) and a write error its own.
		 */
		atomic_fetch_add_explicit(&kc->offload_fallbacks, 1, memory_order_relaxed);
		job->dests[dest_index].offload = false;
		if (io->result == -ENOSYS || io->result == -EOPNOTSUPP)
			dev_drop_caps(io->dev, KCOPYD_CAP_COPY);
		dest_next(sj, dest_index);
		return;
	}
	if (io->result < 0) {
		subjob_failed(sj, (int)io->result, (int)dest_index);
		dest_done(sj);
		return;
	}
	sectors = ((sj->dest_run_end[dest_index] * job->grain_sectors < sj->count
			    ? sj->dest_run_end[dest_index] * job->grain_sectors : sj->count) -
		   sj->dest_grain[dest_index] * job->grain_sectors);
	if (io->op == KCOPYD_IO_WRITE && (char *)io->buf >= (char *)kc->zero_buf &&
	    (char *)io->buf < (char *)kc->zero_buf + (size_t)kc->slot_pages * KCOPYD_PAGE_SIZE) {
		/* A run longer than the zero page: write the rest of it. */
		uint64_t run_end = (job->dests[dest_index].region.sector + sj->start +
				    sj->dest_grain[dest_index] * job->grain_sectors + sectors)
				   << KCOPYD_SECTOR_SHIFT;

		if (io->offset + io->length < run_end) {
			io->offset += io->length;
			io->length = (size_t)(run_end - io->offset);
			zero_page_write(kc, io);
			pending_push(kc, io);
			return;
		}
	}
	atomic_fetch_add_explicit(&kc->sectors_written, sectors, memory_order_relaxed);
	if (sj->zero_map >> sj->dest_grain[dest_index] & 1)
		atomic_fetch_add_explicit(&kc->sectors_zero, sectors, memory_order_relaxed);
	else if (io->op == KCOPYD_IO_COPY) {
		atomic_fetch_add_explicit(&kc->sectors_offloaded, sectors, memory_order_relaxed);
		sj->offloaded = true;
	}
	sj->dest_grain[dest_index] = sj->dest_run_end[dest_index];
	dest_next(sj, dest_index);
}

static void verify_read_done(struct kcopyd_client *kc, struct subjob *sj, struct kcopyd_io *io);

static void io_done(struct kcopyd_client *kc, struct kcopyd_io *io)
{
	struct subjob *sj = io->owner;
	struct kcopyd_job *job = sj->job;

	if (io->result >= 0 && (size_t)io->result != io->length && io_short(kc, io))
		return;
	if (sj->phase == SUBJOB_VERIFYING) {
		verify_read_done(kc, sj, io);
		return;
	}
	if (io->op == KCOPYD_IO_READ) {
		if (io->result < 0) {
			subjob_read_done(sj, (int)io->result);
		} else {
			atomic_fetch_add_explicit(&kc->sectors_read, sj->pieces[sj->read_piece].count,
						  memory_order_relaxed);
			if (++sj->read_piece < sj->nr_pieces) {
				subjob_read_piece(sj);
				return;
			}
			subjob_read_done(sj, 0);
		}
	} else {
		dest_io_done(kc, sj, io);
	}
	job_advance_writes(job);
	maybe_complete_job(job);
}

/*
 * The source's data extents in [@sj->start, + @sj->count), into sj->pieces.
 * The job keeps the last extent learnt, so a long hole or a long data
 * extent costs one extent() call for every sub-job it spans, not one each.
 * More than MAX_PIECES extents are read as one from the last on (the holes
 * between them read as the zeros they are).  A source whose driver cannot
 * tell is all data.
 */
static void subjob_map_source(struct subjob *sj)
{
	struct kcopyd_job *job = sj->job;
	struct kcopyd_dev *src = job->source.bdev;
	struct kcopyd_queue *q = job->source_queue;
	uint64_t pos = sj->start, end = sj->start + sj->count;

	sj->nr_pieces = 0;
	while (pos < end) {
		uint64_t upto;
		bool hole;

		if (!(pos >= job->extent_start && pos < job->extent_end)) {
			uint64_t extent_bytes = 0;
			bool extent_hole = false;
			int r = -EOPNOTSUPP;

			if ((dev_caps(src) & KCOPYD_CAP_EXTENTS) && q->ops->extent)
				r = q->ops->extent(q->queue, src, (job->source.sector + pos) << KCOPYD_SECTOR_SHIFT,
						      (job->total - pos) << KCOPYD_SECTOR_SHIFT, &extent_bytes,
						      &extent_hole);
			if (r < 0) {
				if (r != -EOPNOTSUPP)
					dev_drop_caps(src, KCOPYD_CAP_EXTENTS);
				extent_bytes = (job->total - pos) << KCOPYD_SECTOR_SHIFT;
				extent_hole = false;
			}
			/*
			 * Extents end on the filesystem's blocks; a region's sectors on
			 * its device's.  A hole is trusted in whole sectors only, and
			 * data rounded out: reading a little of a hole is harmless.
			 */
			job->extent_start = pos;
			job->extent_hole = extent_hole;
			job->extent_end = pos + (extent_hole ? extent_bytes >> KCOPYD_SECTOR_SHIFT
							     : (extent_bytes + KCOPYD_SECTOR_SIZE - 1) >>
								       KCOPYD_SECTOR_SHIFT);
			if (job->extent_end == pos) {
				job->extent_end = pos + 1;
				job->extent_hole = false;
			}
		}
		upto = job->extent_end < end ? job->extent_end : end;
		hole = job->extent_hole;
		if (!hole) {
			struct piece *last = sj->nr_pieces ? &sj->pieces[sj->nr_pieces - 1] : NULL;
			uint32_t start = (uint32_t)(pos - sj->start), count = (uint32_t)(upto - pos);

			if (last && (last->start + last->count == start || sj->nr_pieces == MAX_PIECES))
				last->count = start + count - last->start;
			else
				sj->pieces[sj->nr_pieces++] = (struct piece){ start, count };
		}
		pos = upto;
	}
}

/* Reads are of whole blocks of the source: round each piece out to them. */
static void subjob_align_pieces(struct subjob *sj)
{
	uint64_t block = sj->job->source.bdev->block_size >> KCOPYD_SECTOR_SHIFT;
	unsigned int index, out = 0;

	for (index = 0; index < sj->nr_pieces; index++) {
		uint64_t first = sj->pieces[index].start / block * block;
		uint64_t end = (sj->pieces[index].start + sj->pieces[index].count + block - 1) / block * block;

		if (end > sj->count)
			end = sj->count;
		if (out && sj->pieces[out - 1].start + sj->pieces[out - 1].count >= first) {
			sj->pieces[out - 1].count = (uint32_t)(end - sj->pieces[out - 1].start);
			continue;
		}
		sj->pieces[out++] = (struct piece){ (uint32_t)first, (uint32_t)(end - first) };
	}
	sj->nr_pieces = out;
}

/* The grains of @sj that no piece touches are holes. */
static uint64_t subjob_hole_map(const struct subjob *sj)
{
	uint64_t grain = sj->job->grain_sectors, map = all_grains(sj->nr_grains);
	unsigned int index;

	for (index = 0; index < sj->nr_pieces; index++) {
		uint64_t first = sj->pieces[index].start / grain;
		uint64_t last = (sj->pieces[index].start + sj->pieces[index].count - 1) / grain;

		for (; first <= last; first++)
			map &= ~(UINT64_C(1) << first);
	}
	return map;
}

/*
 * Start the next read-back of a verified job: chunk verify_next /
 * num_dests of destination verify_next % num_dests (chunk by chunk, every
 * destination in turn), into a buffer slot; verify_read_done() goes on.
 */
static void verify_start(struct kcopyd_client *kc, struct kcopyd_job *job)
{
	struct subjob *sj = list_entry(list_pop(&kc->free_subjobs), struct subjob, link);
	uint64_t unit = job->verify_next++;
	struct job_dest *dest = &job->dests[unit % job->num_dests];
	uint64_t start = unit / job->num_dests * job->subjob_sectors;

	sj->job = job;
	sj->start = start;
	sj->count = job->total - start < job->subjob_sectors ? job->total - start : job->subjob_sectors;
	sj->verify_dest = (unsigned int)(unit % job->num_dests);
	sj->phase = SUBJOB_VERIFYING;
	job_charge(job, sj->count << KCOPYD_SECTOR_SHIFT);	/* a rate counts what the read-back reads too */
	job->subjobs_in_flight++;
	slot_take(kc, sj);
	sj->ios[0] = (struct kcopyd_io){
		.dev = dest->region.bdev,
		.op = KCOPYD_IO_READ,
		.offset = (dest->region.sector + start) << KCOPYD_SECTOR_SHIFT,
		.length = (size_t)sj->count << KCOPYD_SECTOR_SHIFT,
		.buf = sj->buf,
		.owner = sj,
		.queue = dest->queue,
	};
	pending_push(kc, &sj->ios[0]);
}

/* A read-back of @sj is over: give its slot back. */
static void verify_finish(struct subjob *sj)
{
	struct kcopyd_job *job = sj->job;
	struct kcopyd_client *kc = job->kc;

	slot_give(kc, sj);
	sj->phase = SUBJOB_DONE;
	list_add_tail(&sj->link, &kc->free_subjobs);
	job->subjobs_in_flight--;
	ready_update(job);
	maybe_complete_job(job);
}

/*
 * dests[@dest_index] did not read back as the source in @sj's chunk
 * (-EBADMSG), or its read-back failed (@error): the job fails there, the
 * destination is not read back further.
 */
static void verify_failed(struct subjob *sj, unsigned int dest_index, int error)
{
	struct kcopyd_job *job = sj->job;
	struct job_dest *dest = &job->dests[dest_index];

	if (job->error == 0)
		job->error = error;
	/* Once per destination: read-backs in flight at its first bad chunk may be bad too. */
	if (!(job->verify_err & (1u << dest_index)))
		atomic_fetch_add_explicit(&job->kc->verify_errors, 1, memory_order_relaxed);
	job->write_err |= 1u << dest_index;
	job->verify_err |= 1u << dest_index;
	job->verify_skip |= 1u << dest_index;
	note_failure(&dest->verify_failure, error, dest->region.sector + sj->start, sj->count);
}

static void verify_read_done(struct kcopyd_client *kc, struct subjob *sj, struct kcopyd_io *io)
{
	if (io->result == -ECANCELED && job_cancel_asked(sj->job)) {
		/* Ended by the cancel (abort()), as subjob_failed() says: not the destination's failure. */
		verify_finish(sj);
		return;
	}
	if (io->result < 0) {
		verify_failed(sj, sj->verify_dest, (int)io->result);
		verify_finish(sj);
		return;
	}
	digest_queue(kc, &sj->work, DIGEST_VERIFY, sj);
}

/* The digest thread took @sj's read-back: compare it with the source's chunk. */
static void verify_digest_done(struct subjob *sj)
{
	struct kcopyd_job *job = sj->job;

	if (sj->verify_digest != job->chunk_digests[sj->start / job->subjob_sectors]) {
		verify_failed(sj, sj->verify_dest, -EBADMSG);
	} else {
		atomic_fetch_add_explicit(&job->sectors_verified, sj->count, memory_order_relaxed);
		atomic_fetch_add_explicit(&job->kc->sectors_verified, sj->count, memory_order_relaxed);
	}
	verify_finish(sj);
}

static void *flush_thread_main(void *arg);
static void digest_flush(struct kcopyd_job *job);

/*
 * Every chunk is written: flush the destinations.  kcopyd_dev_sync() blocks
 * (an NBD server may take its timeout to answer), so it runs on a thread
 * of its own, not on the I/O thread and not on the digest thread, where it
 * would hold up every other job's hashing; the work comes back on the
 * digest thread's done list all the same.  Without a thread, here.
 */
static void flush_start(struct kcopyd_job *job)
{
	struct kcopyd_client *kc = job->kc;

	atomic_store_explicit(&job->phase, KCOPYD_PHASE_FLUSH, memory_order_relaxed);
	job->flush_work.kind = DIGEST_FLUSH;
	job->flush_work.owner = job;
	if (pthread_create(&job->flush_thread, NULL, flush_thread_main, job) == 0)
		return;
	digest_flush(job);
	pthread_mutex_lock(&kc->digest_lock);
	list_add_tail(&job->flush_work.link, &kc->digest_done);
	pthread_mutex_unlock(&kc->digest_lock);
	job->flush_work.owner = NULL;	/* no thread to join */
	kick(kc);
}

/*
 * The flush is over.  A destination whose flush failed has a write error
 * (its whole region: what reached the device is unknown) and is not read
 * back; the others are, unless the job was cancelled meanwhile.
 */
static void flush_done(struct kcopyd_job *job)
{
	struct kcopyd_client *kc = job->kc;
	unsigned int dest_index;
	bool cancel;

	if (job->flush_work.owner)
		pthread_join(job->flush_thread, NULL);	/* it has handed the work back: it is ending */

	/*
	 * A cancel asked for, even if not taken yet: no verify starts, and a
	 * flush it ended (abort(): -ECANCELED) is the cancel's, not the device's.
	 */
	cancel = job_cancel_asked(job);
	if (cancel) {
		job->cancelled = 1;	/* take_new_work() finds its I/O over and only drops the reference */
		job->stopping = true;
	}
	for (dest_index = 0; dest_index < job->num_dests; dest_index++) {
		struct job_dest *dest = &job->dests[dest_index];

		if (!dest->flush_error || (dest->flush_error == -ECANCELED && cancel))
			continue;
		if (job->error == 0)
			job->error = dest->flush_error;
		job->write_err |= 1u << dest_index;
		job->verify_skip |= 1u << dest_index;
		note_failure(&dest->failure, dest->flush_error, dest->region.sector, job->total);
		atomic_fetch_add_explicit(&kc->write_errors, 1, memory_order_relaxed);
	}
	if (job->cancelled || job->stopping) {
		complete_job(job);
		return;
	}
	job->verify_units = job->nr_chunks * job->num_dests;
	job->verify_next = 0;
	atomic_store_explicit(&job->phase, KCOPYD_PHASE_VERIFY, memory_order_relaxed);
	ready_update(job);
	maybe_complete_job(job);
}

static void subjob_start(struct kcopyd_client *kc, struct kcopyd_job *job)
{
	struct list_head *node;
	struct subjob *sj;
	uint64_t left = job->total - job->next_start;
	unsigned int dest_index, index;
	bool need_buf = false;
	uint64_t read_sectors = 0;

	if (atomic_load_explicit(&job->phase, memory_order_relaxed) == KCOPYD_PHASE_VERIFY) {
		verify_start(kc, job);
		return;
	}
	node = list_pop(&kc->free_subjobs);
	sj = list_entry(node, struct subjob, link);

	if (!job->started) {
		job->started = true;
		if (kc->start_fn) {
			pthread_mutex_lock(&kc->lock);
			list_add_tail(&job->start_link, &kc->started);
			pthread_cond_signal(&kc->completed_cond);
			pthread_mutex_unlock(&kc->lock);
		}
	}
	sj->job = job;
	sj->start = job->next_start;
	sj->count = left < job->subjob_sectors ? left : job->subjob_sectors;
	sj->nr_grains = (unsigned int)((sj->count + job->grain_sectors - 1) / job->grain_sectors);
	sj->read_failed = false;
	sj->read_cancelled = false;
	sj->failed = false;
	sj->buf_valid = false;
	sj->reading = false;
	sj->offloaded = false;
	sj->waiting_for_buf = 0;
	sj->writes_pending = 0;
	sj->nr_pieces = 0;
	job->next_start += sj->count;
	job->subjobs_in_flight++;
	list_add_tail(&sj->link, &job->subjobs);

	if (job->is_zero) {
		sj->buf = NULL;
		sj->zero_map = all_grains(sj->nr_grains);
		sj->phase = SUBJOB_READ_DONE;
		job_advance_writes(job);
		return;
	}
	slot_take(kc, sj);
	subjob_map_source(sj);
	subjob_align_pieces(sj);
	sj->zero_map = subjob_hole_map(sj);
	/* What it reads is what a rate limit counts (copy_file_range reads it too). */
	for (index = 0; index < sj->nr_pieces; index++)
		read_sectors += sj->pieces[index].count;
	job_charge(job, read_sectors << KCOPYD_SECTOR_SHIFT);
	/* Holes are never read; nor is data that every destination copies by itself. */
	for (dest_index = 0; dest_index < job->num_dests; dest_index++)
		need_buf |= !job->dests[dest_index].offload;
	if (sj->nr_pieces == 0 || !need_buf) {
		sj->phase = SUBJOB_READ_DONE;
		job_advance_writes(job);
		return;
	}
	sj->phase = SUBJOB_READING;
	subjob_read(sj);
}

/*
 * Start sub-jobs, one per ready job in turn, while sub-jobs last.  There are
 * as many sub-jobs as buffer slots and zero sub-jobs take no slot, so a free
 * sub-job always finds a free slot.
 */
static void dispatch(struct kcopyd_client *kc)
{
	struct list_head denied;

	list_init(&denied);
	while (!list_empty(&kc->ready) && !list_empty(&kc->free_subjobs)) {
		struct kcopyd_job *job = list_entry(list_pop(&kc->ready), struct kcopyd_job, ready_link);
		uint64_t now;

		/*
		 * The client's credit is shared: another job may have spent it
		 * since this one was put on ready.  Look again, or every ready
		 * job would start a chunk in debt (a burst of one per job).
		 */
		if (atomic_load_explicit(&kc->rate, memory_order_relaxed) && job_phase_reads(job) &&
		    !job_has_credit(job, now = now_ns())) {
			job->throttled = true;
			throttle_account(job, true, now);
			list_add_tail(&job->ready_link, &denied);
			continue;
		}
		subjob_start(kc, job);
		ready_update(job);
		/* Every operation of a sub-job may have been skipped (zeros on a zero destination). */
		maybe_complete_job(job);
	}
	/* Those turned away go first when the credit is back, in their turn: the client's rate stays fair. */
	list_splice_tail_init(&kc->throttled, &denied);
	list_splice_tail_init(&denied, &kc->throttled);
}

static void reap(struct kcopyd_client *kc)
{
	unsigned int nr_queues = atomic_load_explicit(&kc->nr_queues, memory_order_acquire);
	struct kcopyd_io *done[IO_BATCH];
	unsigned int queue_index;
	int count, index;

	for (queue_index = 0; queue_index < nr_queues; queue_index++) {
		struct kcopyd_queue *q = &kc->queues[queue_index];

		do {
			count = q->ops->reap(q->queue, done, IO_BATCH);
			if (count < 0)
				break;	/* -EINTR: the eventfd brings us back */
			kc->ios_in_flight -= (unsigned int)count;
			for (index = 0; index < count; index++)
				io_done(kc, done[index]);
		} while (count == (int)IO_BATCH);
	}
}

/*
 * Hand pending I/Os to their queues, in order: each call takes the run of
 * I/Os at the head that go to one queue.  A queue that takes none is full
 * (a completion will bring us back), or, with nothing in flight anywhere,
 * out of resources the kernel will give back (io_submit's EAGAIN past
 * aio-max-nr): then the thread sleeps 1 ms and tries again, since no
 * completion will wake it.  An I/O a queue refuses outright fails.
 */
static void submit_pending(struct kcopyd_client *kc)
{
	struct kcopyd_io *batch[IO_BATCH];
	const struct timespec retry_delay = { 0, 1000000 };

	while (kc->pending_count > 0) {
		unsigned int count = kc->pending_count < IO_BATCH ? kc->pending_count : IO_BATCH;
		struct kcopyd_queue *q;
		unsigned int index;
		int taken;

		batch[0] = kc->pending[kc->pending_head];
		q = batch[0]->queue;
		for (index = 1; index < count; index++) {
			batch[index] = kc->pending[(kc->pending_head + index) % kc->pending_size];
			if (batch[index]->queue != q)
				break;
		}
		count = index;
		taken = q->ops->submit(q->queue, batch, count);
		if (taken == 0 && kc->ios_in_flight > 0)
			return;	/* the queue is full: a completion will bring us back */
		if (taken == 0) {
			nanosleep(&retry_delay, NULL);	/* out of resources with nothing in flight */
			continue;
		}
		if (taken < 0) {
			struct kcopyd_io *io = batch[0];

			kc->pending_head = (kc->pending_head + 1) % kc->pending_size;
			kc->pending_count--;
			io->result = taken;
			io_done(kc, io);
			continue;
		}
		kc->pending_head = (kc->pending_head + (unsigned int)taken) % kc->pending_size;
		kc->pending_count -= (unsigned int)taken;
		kc->ios_in_flight += (unsigned int)taken;
	}
}

/*
 * A cancelled job may have I/O waiting on a device that does not answer
 * (an NBD server that hangs): ask the drivers that can to end it soon
 * (abort()), so the cancel does not wait for the device's own timeout.
 * Called by the cancelling thread; source_queue, the dests' queues and
 * regions are set at submission and never change.
 */
static void job_abort_io(struct kcopyd_job *job)
{
	unsigned int dest_index;

	if (!job->is_zero && job->source_queue->ops->abort)
		job->source_queue->ops->abort(job->source_queue->queue, job->source.bdev);
	for (dest_index = 0; dest_index < job->num_dests; dest_index++) {
		struct kcopyd_queue *q = job->dests[dest_index].queue;

		if (q->ops->abort)
			q->ops->abort(q->queue, job->dests[dest_index].region.bdev);
	}
}

/*
 * DIGEST_HASH: add @sj's chunk to its job's digests and, for a verify,
 * take its chunk digest.  Grains that read as zeros are hashed from the
 * zero buffer: a hole was never read into the slot.
 */
static void digest_hash(struct kcopyd_client *kc, struct subjob *sj)
{
	struct kcopyd_job *job = sj->job;
	uint64_t grain = job->grain_sectors;
	unsigned int first = 0;

	if (job->verify)
		digest_chunk_reset(kc->chunk_state);
	while (first < sj->nr_grains) {
		bool zero = sj->zero_map >> first & 1;
		unsigned int end = first;
		uint64_t start, count;
		const void *bytes;

		while (end < sj->nr_grains && (bool)(sj->zero_map >> end & 1) == zero)
			end++;
		start = first * grain;
		count = (end * grain < sj->count ? end * grain : sj->count) - start;
		bytes = zero ? kc->zero_buf : (const char *)sj->buf + (start << KCOPYD_SECTOR_SHIFT);
		if (job->hashes)
			digest_set_update(&job->digests, bytes, (size_t)count << KCOPYD_SECTOR_SHIFT);
		if (job->verify)
			digest_chunk_add(kc->chunk_state, bytes, (size_t)count << KCOPYD_SECTOR_SHIFT);
		first = end;
	}
	if (job->verify)
		job->chunk_digests[sj->start / job->subjob_sectors] = digest_chunk_end(kc->chunk_state);
}

/*
 * DIGEST_FLUSH: flush every destination of @job (a verify reads back what
 * the device holds, not what its cache does), and drop the cached pages of
 * those not read with O_DIRECT (a tmpfs file), so the read-back comes from
 * the device where there is one.
 */
static void digest_flush(struct kcopyd_job *job)
{
	unsigned int dest_index;

	for (dest_index = 0; dest_index < job->num_dests; dest_index++) {
		struct job_dest *dest = &job->dests[dest_index];
		struct kcopyd_dev *dev = dest->region.bdev;

		dest->flush_error = kcopyd_dev_sync(dev);
		if (!dest->flush_error && !dev->direct && dev->driver == &kcopyd_file_driver)
			(void)posix_fadvise(kcopyd_file_fd(dev), (off_t)(dest->region.sector << KCOPYD_SECTOR_SHIFT),
					    (off_t)(dest->region.count << KCOPYD_SECTOR_SHIFT), POSIX_FADV_DONTNEED);
	}
}

/* A verify's flush (flush_start()): flush, hand back as the digest thread does. */
static void *flush_thread_main(void *arg)
{
	struct kcopyd_job *job = arg;
	struct kcopyd_client *kc = job->kc;

	digest_flush(job);
	pthread_mutex_lock(&kc->digest_lock);
	list_add_tail(&job->flush_work.link, &kc->digest_done);
	kick(kc);
	pthread_mutex_unlock(&kc->digest_lock);
	return NULL;
}

/*
 * The digest thread: runs the work on kc->digest_todo in order (so each
 * job's chunks are hashed in the source's order) and hands it back on
 * kc->digest_done, kicking the I/O thread.
 */
static void *digest_thread_main(void *arg)
{
	struct kcopyd_client *kc = arg;

	pthread_mutex_lock(&kc->digest_lock);
	for (;;) {
		struct list_head *node = list_pop(&kc->digest_todo);
		struct digest_work *work;

		if (!node) {
			if (kc->digest_exit)
				break;
			pthread_cond_wait(&kc->digest_cond, &kc->digest_lock);
			continue;
		}
		pthread_mutex_unlock(&kc->digest_lock);
		work = list_entry(node, struct digest_work, link);
		if (work->kind == DIGEST_HASH) {
			digest_hash(kc, work->owner);
		} else {
			struct subjob *sj = work->owner;

			sj->verify_digest = digest_chunk(sj->buf, (size_t)sj->count << KCOPYD_SECTOR_SHIFT);
		}
		pthread_mutex_lock(&kc->digest_lock);
		list_add_tail(&work->link, &kc->digest_done);
		kick(kc);
	}
	pthread_mutex_unlock(&kc->digest_lock);
	return NULL;
}

/* Start the digest thread if it is not running.  Return: 0 or -errno. */
static int digest_thread_start(struct kcopyd_client *kc)
{
	int r = 0;

	pthread_mutex_lock(&kc->digest_lock);
	if (!kc->digest_started) {
		kc->chunk_state = digest_chunk_state_new();
		if (!kc->chunk_state)
			r = -ENOMEM;
		else
			r = -pthread_create(&kc->digest_thread, NULL, digest_thread_main, kc);
		if (r < 0) {
			digest_chunk_state_free(kc->chunk_state);
			kc->chunk_state = NULL;
		} else {
			kc->digest_started = true;
		}
	}
	pthread_mutex_unlock(&kc->digest_lock);
	return r;
}

/* Take back what the digest thread has done. */
static void digest_reap(struct kcopyd_client *kc)
{
	struct list_head done;
	struct list_head *node;

	list_init(&done);
	pthread_mutex_lock(&kc->digest_lock);
	list_splice_tail_init(&kc->digest_done, &done);
	pthread_mutex_unlock(&kc->digest_lock);
	while ((node = list_pop(&done))) {
		struct digest_work *work = list_entry(node, struct digest_work, link);
		struct kcopyd_job *job;

		if (work->kind == DIGEST_FLUSH) {
			flush_done(list_entry(work, struct kcopyd_job, flush_work));
			continue;
		}
		if (work->kind == DIGEST_VERIFY) {
			verify_digest_done(work->owner);
			continue;
		}
		job = ((struct subjob *)work->owner)->job;
		job->sectors_hashed += ((struct subjob *)work->owner)->count;
		if (job->hashes)
			atomic_fetch_add_explicit(&kc->sectors_hashed, ((struct subjob *)work->owner)->count,
						  memory_order_relaxed);
		dest_done(work->owner);
		job_advance_writes(job);
		maybe_complete_job(job);
	}
}

/* Take new jobs and cancel requests from the submitters. */
static bool take_new_work(struct kcopyd_client *kc)
{
	struct list_head new_jobs, cancels, pokes;
	struct list_head *node, *next;
	bool exiting, destroying;

	list_init(&new_jobs);
	list_init(&cancels);
	list_init(&pokes);
	pthread_mutex_lock(&kc->lock);
	list_splice_tail_init(&kc->submitted, &new_jobs);
	list_splice_tail_init(&kc->cancels, &cancels);
	list_splice_tail_init(&kc->pokes, &pokes);
	for (node = new_jobs.next; node != &new_jobs; node = node->next)
		list_entry(node, struct kcopyd_job, queue_link)->state = JOB_ACTIVE;
	exiting = kc->io_exit;
	destroying = kc->destroying;
	pthread_mutex_unlock(&kc->lock);

	while ((node = list_pop(&new_jobs))) {
		struct kcopyd_job *job = list_entry(node, struct kcopyd_job, queue_link);

		kc->jobs_owned++;
		list_add_tail(&job->owned_link, &kc->owned);
		if (job->total == 0)
			complete_job(job);
		else
			ready_update(job);
	}
	while ((node = list_pop(&cancels))) {
		struct kcopyd_job *job = list_entry(node, struct kcopyd_job, cancel_link);

		if (!job->io_done) {
			job->cancelled = 1;
			job->stopping = true;
			ready_update(job);
			maybe_complete_job(job);
		}
		pthread_mutex_lock(&kc->lock);
		job_put_locked(job);
		pthread_mutex_unlock(&kc->lock);
	}
	/*
	 * The client is being destroyed, which waits for every job: one that is
	 * paused would never end, so it is cancelled (its completion routine
	 * says so).
	 */
	for (node = destroying ? kc->owned.next : &kc->owned; node != &kc->owned; node = next) {
		struct kcopyd_job *job = list_entry(node, struct kcopyd_job, owned_link);

		next = node->next;
		if (!job->io_done && atomic_load_explicit(&job->paused, memory_order_relaxed) && !job->cancelled) {
			job->cancelled = 1;
			job->stopping = true;
			ready_update(job);
			maybe_complete_job(job);
		}
	}
	/* Paused, resumed, or a new rate: whether it may start a sub-job changed. */
	while ((node = list_pop(&pokes))) {
		struct kcopyd_job *job = list_entry(node, struct kcopyd_job, poke_link);

		/* Off the list before its state is read: a later change pokes it again. */
		pthread_mutex_lock(&kc->lock);
		job->poked = false;
		pthread_mutex_unlock(&kc->lock);
		if (!job->io_done) {
			ready_update(job);
			maybe_complete_job(job);
		}
		pthread_mutex_lock(&kc->lock);
		job_put_locked(job);
		pthread_mutex_unlock(&kc->lock);
	}
	return exiting;
}

/*
 * Sleep until there is work.  Every source of work adds to the eventfd
 * (the queues' completions, submitters, cancellers, destroy), so no
 * wake-up is lost; a queue whose completions come on descriptors of its
 * own (poll_fds(): NBD sockets) has them polled beside it, for as long as
 * its nearest deadline allows, and is told what poll(2) saw
 * (poll_done()), also when the sleep ended by its deadline.
 */
static void io_thread_sleep(struct kcopyd_client *kc, int64_t wait_ns)
{
	unsigned int nr_queues = atomic_load_explicit(&kc->nr_queues, memory_order_acquire);
	unsigned int first[MAX_QUEUES], count[MAX_QUEUES];
	struct pollfd *fds = kc->poll_fds;
	unsigned int queue_index, nfds = 1;
	bool polling = wait_ns >= 0;	/* a rate limit's deadline: poll the eventfd until it */
	int64_t timeout = wait_ns;
	uint64_t events;

	fds[0] = (struct pollfd){ .fd = kc->event_fd, .events = POLLIN };
	for (queue_index = 0; queue_index < nr_queues; queue_index++) {
		struct kcopyd_queue *q = &kc->queues[queue_index];
		int queue_timeout = -1, n;

		first[queue_index] = nfds;
		count[queue_index] = 0;
		if (!q->ops->poll_fds)
			continue;
		polling = true;
		n = q->ops->poll_fds(q->queue, fds + nfds, 1 + MAX_POLL_FDS - nfds, &queue_timeout);
		if (n > 0) {
			count[queue_index] = (unsigned int)n;
			nfds += (unsigned int)n;
		}
		if (queue_timeout >= 0 && (timeout < 0 || (int64_t)queue_timeout * 1000000 < timeout))
			timeout = (int64_t)queue_timeout * 1000000;
	}
	if (polling) {
		struct timespec until = { timeout / 1000000000, timeout % 1000000000 };

		while (ppoll(fds, nfds, timeout < 0 ? NULL : &until, NULL) < 0 && errno == EINTR)
			;
		for (queue_index = 0; queue_index < nr_queues; queue_index++) {
			struct kcopyd_queue *q = &kc->queues[queue_index];

			if (q->ops->poll_done)
				q->ops->poll_done(q->queue, fds + first[queue_index], count[queue_index]);
		}
		if (!(fds[0].revents & POLLIN))
			return;
	}
	while (read(kc->event_fd, &events, sizeof(events)) < 0 && errno == EINTR)
		;
}

static void *io_thread_main(void *arg)
{
	struct kcopyd_client *kc = arg;

	for (;;) {
		bool exiting = take_new_work(kc);
		int64_t wait_ns;

		reap(kc);
		digest_reap(kc);
		throttle_check(kc);
		dispatch(kc);
		submit_pending(kc);
		if (exiting && kc->jobs_owned == 0 && kc->ios_in_flight == 0)
			break;
		/* After dispatch: it may have left jobs throttled, and their deadline is the sleep's. */
		wait_ns = throttle_check(kc);
		if (wait_ns == 0)
			continue;
		io_thread_sleep(kc, wait_ns);
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* The completion thread                                               */
/* ------------------------------------------------------------------ */

static void *completion_thread_main(void *arg)
{
	struct kcopyd_client *kc = arg;

	pthread_mutex_lock(&kc->lock);
	for (;;) {
		struct kcopyd_job *job;
		struct list_head *node;

		/*
		 * Start events first: a job's start event is queued before its
		 * completion, so draining them first keeps the two in order.
		 */
		node = list_pop(&kc->started);
		if (node) {
			job = list_entry(node, struct kcopyd_job, start_link);
			pthread_mutex_unlock(&kc->lock);
			kc->start_fn(job->context);
			pthread_mutex_lock(&kc->lock);
			continue;
		}
		node = list_pop(&kc->completed);
		if (!node) {
			if (kc->completion_exit)
				break;
			pthread_cond_wait(&kc->completed_cond, &kc->lock);
			continue;
		}
		job = list_entry(node, struct kcopyd_job, queue_link);
		pthread_mutex_unlock(&kc->lock);

		if (job->fn)
			job->fn(job->read_err, job->write_err, job->context);

		pthread_mutex_lock(&kc->lock);
		job->state = JOB_FINISHED;
		kc->jobs_active--;
		pthread_cond_broadcast(&kc->finished_cond);
		job_put_locked(job);
	}
	pthread_mutex_unlock(&kc->lock);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Clients                                                             */
/* ------------------------------------------------------------------ */

/*
 * map_slot_memory() - @bytes of anonymous memory for the buffer slots,
 * starting on a huge page boundary and asked to be backed by transparent
 * huge pages.  O_DIRECT pins every buffer page for each I/O and the loop
 * and block layers walk them one by one: with 2 MiB pages a 1 MiB
 * sub-job is one contiguous piece instead of 256 (see doc/PERFORMANCE.md).
 * The mapping is exactly @bytes long, so it never holds more than the
 * budget; without THP it is ordinary pages.  Return: the memory or MAP_FAILED.
 */
static void *map_slot_memory(size_t bytes)
{
	size_t padded = bytes + HUGE_PAGE_SIZE;
	uintptr_t start, aligned;
	char *memory;

	memory = mmap(NULL, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (memory == MAP_FAILED)
		return MAP_FAILED;
	start = (uintptr_t)memory;
	aligned = (start + HUGE_PAGE_SIZE - 1) & ~(uintptr_t)(HUGE_PAGE_SIZE - 1);
	/* Give back the padding on either side of the aligned part. */
	if (aligned > start)
		munmap(memory, aligned - start);
	if (start + padded > aligned + bytes)
		munmap((char *)aligned + bytes, start + padded - (aligned + bytes));
	/* Advice only: without THP (or with it switched off) pages stay small. */
	(void)madvise((void *)aligned, bytes, MADV_HUGEPAGE);
	/*
	 * A program that forks (kcopydfs forks a helper to open each job's
	 * regions as its owner) would otherwise copy these page tables, and
	 * the pages pinned by direct I/O in flight, at every fork: a child
	 * has no use for the buffers.
	 */
	(void)madvise((void *)aligned, bytes, MADV_DONTFORK);
	return (void *)aligned;
}

static int setup_buffers(struct kcopyd_client *kc)
{
	size_t slot_bytes = (size_t)kc->slot_pages * KCOPYD_PAGE_SIZE;
	unsigned int index;

	/* Anonymous memory: pages come on first use, and are never more than the budget. */
	kc->slot_memory = map_slot_memory(slot_bytes * kc->nr_slots);
	if (kc->slot_memory == MAP_FAILED)
		goto err;
	/* Never written, so every page of it is the kernel's shared zero page. */
	kc->zero_buf = mmap(NULL, slot_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (kc->zero_buf == MAP_FAILED)
		goto err_unmap_slots;
	kc->free_slots = calloc(kc->nr_slots, sizeof(*kc->free_slots));
	if (!kc->free_slots)
		goto err_unmap_zero;
	for (index = 0; index < kc->nr_slots; index++)
		kc->free_slots[index] = kc->nr_slots - 1 - index;
	kc->free_slot_count = kc->nr_slots;
	kc->pending_size = kc->nr_slots * (KCOPYD_MAX_REGIONS + 1);
	kc->pending = calloc(kc->pending_size, sizeof(*kc->pending));
	if (!kc->pending)
		goto err_free_slots;
	list_init(&kc->free_subjobs);
	for (index = 0; index < kc->nr_slots; index++) {
		struct subjob *sj = calloc(1, sizeof(*sj));

		if (!sj)
			goto err_free_subjobs;
		list_add_tail(&sj->link, &kc->free_subjobs);
	}
	return 0;

err_free_subjobs:
	while (!list_empty(&kc->free_subjobs))
		free(list_entry(list_pop(&kc->free_subjobs), struct subjob, link));
	free(kc->pending);
err_free_slots:
	free(kc->free_slots);
err_unmap_zero:
	munmap(kc->zero_buf, slot_bytes);
err_unmap_slots:
	munmap(kc->slot_memory, slot_bytes * kc->nr_slots);
err:
	return -ENOMEM;
}

static void free_buffers(struct kcopyd_client *kc)
{
	size_t slot_bytes = (size_t)kc->slot_pages * KCOPYD_PAGE_SIZE;
	unsigned int freed = 0;

	while (!list_empty(&kc->free_subjobs)) {
		free(list_entry(list_pop(&kc->free_subjobs), struct subjob, link));
		freed++;
	}
	assert(freed == kc->nr_slots && kc->free_slot_count == kc->nr_slots);
	(void)freed;
	free(kc->pending);
	free(kc->free_slots);
	munmap(kc->zero_buf, slot_bytes);
	munmap(kc->slot_memory, slot_bytes * kc->nr_slots);
}

/*
 * queue_add() - make the client's next queue, of @driver for @key.  With
 * kc->queues_lock held, or before the I/O thread runs.  A queue's threads
 * (the local-file driver's workers) take the credentials of the thread
 * that makes it.  Return: 0, or the driver's queue_create() -errno.
 */
static int queue_add(struct kcopyd_client *kc, const struct kcopyd_driver *driver, void *key)
{
	unsigned int nr_queues = atomic_load_explicit(&kc->nr_queues, memory_order_relaxed);
	struct kcopyd_queue *q = &kc->queues[nr_queues];
	struct kcopyd_queue_setup setup = {
		.depth = kc->queue_depth,
		.notify_fd = kc->event_fd,
		.key = key,
		.io_engine = kc->io_engine,
		.slot_memory = kc->slot_memory,
		.slot_bytes = (size_t)kc->slot_pages * KCOPYD_PAGE_SIZE,
		.nr_slots = kc->nr_slots,
		.zero_buf = kc->zero_buf,
		.ops = driver,
	};
	int r = driver->queue_create(&setup, &q->queue);

	/*
	 * Only the local-file queue's, made with the client: a queue of
	 * another driver (NBD) made later, even one that fails, says nothing
	 * of the local engine, and these fields are read without a lock.
	 */
	if (driver == &kcopyd_file_driver) {
		kc->io_engine_used = setup.io_engine_used;
		snprintf(kc->io_engine_why, sizeof(kc->io_engine_why), "%s", setup.why);
	}
	if (r < 0)
		return r;
	q->driver = driver;
	q->ops = setup.ops;
	q->key = key;
	atomic_store_explicit(&kc->nr_queues, nr_queues + 1, memory_order_release);
	return 0;
}

/*
 * queue_find() - the client's queue for @dev's driver and key, made now if
 * this is the first job to name one.  Called by submitters, never by the
 * I/O thread.  Return: 0 and *@result, or -errno (-ENOSPC: too many
 * kinds of queue; or the driver's queue_create()).
 */
static int queue_find(struct kcopyd_client *kc, const struct kcopyd_dev *dev, struct kcopyd_queue **result)
{
	const struct kcopyd_driver *driver = kc->override ? kc->override : dev->driver;
	void *key = kc->override ? NULL : dev->queue_key;
	unsigned int nr_queues, index;
	int r = 0;

	if (kc->override) {
		*result = &kc->queues[0];
		return 0;
	}
	nr_queues = atomic_load_explicit(&kc->nr_queues, memory_order_acquire);
	for (index = 0; index < nr_queues; index++)
		if (kc->queues[index].driver == driver && kc->queues[index].key == key) {
			*result = &kc->queues[index];
			return 0;
		}
	pthread_mutex_lock(&kc->queues_lock);
	nr_queues = atomic_load_explicit(&kc->nr_queues, memory_order_relaxed);
	for (index = 0; index < nr_queues; index++)
		if (kc->queues[index].driver == driver && kc->queues[index].key == key)
			goto out;
	if (nr_queues == MAX_QUEUES) {
		r = -ENOSPC;
		goto out;
	}
	r = queue_add(kc, driver, key);
out:
	pthread_mutex_unlock(&kc->queues_lock);
	if (r == 0)
		*result = &kc->queues[index];
	return r;
}

static void queues_destroy(struct kcopyd_client *kc)
{
	unsigned int index, nr_queues = atomic_load_explicit(&kc->nr_queues, memory_order_acquire);

	for (index = 0; index < nr_queues; index++)
		kc->queues[index].ops->queue_destroy(kc->queues[index].queue);
}

/*
 * A config of @config_size bytes as the caller was built, made whole: the
 * fields past its size are 0.  Return: 0, -EINVAL or -E2BIG.
 */
static int config_copy(struct kcopyd_config *out, const struct kcopyd_config *config, size_t config_size)
{
	const unsigned char *extra = (const unsigned char *)config + sizeof(*out);
	size_t index;

	if (!config || config_size < KCOPYD_CONFIG_SIZE_V1)
		return -EINVAL;
	for (index = sizeof(*out); index < config_size; index++, extra++)
		if (*extra)
			return -E2BIG;
	memset(out, 0, sizeof(*out));
	memcpy(out, config, config_size < sizeof(*out) ? config_size : sizeof(*out));
	return 0;
}

static int client_create(const struct kcopyd_config *config, const struct kcopyd_driver *driver,
			 void *queue_key, struct kcopyd_client **result)
{
	struct kcopyd_client *kc;
	unsigned int subjob_pages;
	int r;

	if (!config || !result || config->num_pages == 0)
		return -EINVAL;
	if (config->subjob_sectors && config->subjob_sectors < SECTORS_PER_PAGE)
		return -EINVAL;
	if (config->rate && config->rate < KCOPYD_MIN_RATE)
		return -EINVAL;
	kc = calloc(1, sizeof(*kc));
	if (!kc)
		return -ENOMEM;
	kc->override = driver;
	kc->num_pages = config->num_pages;
	subjob_pages = (config->subjob_sectors ? config->subjob_sectors : KCOPYD_DEFAULT_SUBJOB_SECTORS) /
		       SECTORS_PER_PAGE;
	/* A budget below one sub-job makes the sub-jobs smaller, not the budget larger. */
	kc->slot_pages = subjob_pages < kc->num_pages ? subjob_pages : kc->num_pages;
	kc->subjob_sectors = kc->slot_pages * SECTORS_PER_PAGE;
	kc->nr_slots = kc->num_pages / kc->slot_pages;
	if (kc->nr_slots > MAX_SLOTS)
		kc->nr_slots = MAX_SLOTS;
	kc->depth = config->depth ? config->depth : KCOPYD_DEFAULT_DEPTH;
	kc->sparse_sectors = config->sparse_sectors ? config->sparse_sectors : KCOPYD_DEFAULT_SPARSE_SECTORS;
	list_init(&kc->submitted);
	list_init(&kc->cancels);
	list_init(&kc->started);
	list_init(&kc->completed);
	list_init(&kc->pokes);
	list_init(&kc->ready);
	list_init(&kc->throttled);
	list_init(&kc->owned);
	list_init(&kc->digest_todo);
	list_init(&kc->digest_done);
	atomic_store_explicit(&kc->rate, config->rate, memory_order_relaxed);
	kc->start_fn = config->start_fn;
	r = io_engine_resolve(config->io_engine, &kc->io_engine);
	if (r < 0)
		goto err_free_kc;

	r = setup_buffers(kc);
	if (r < 0)
		goto err_free_kc;
	kc->event_fd = eventfd(0, EFD_CLOEXEC);
	if (kc->event_fd < 0) {
		r = -errno;
		goto err_free_buffers;
	}
	kc->queue_depth = kc->pending_size < MAX_QUEUE_DEPTH ? kc->pending_size : MAX_QUEUE_DEPTH;
	pthread_mutex_init(&kc->queues_lock, NULL);
	/*
	 * The local-file queue is made now, not at the first job: its workers
	 * (fallocate, BLKZEROOUT, copy_file_range) must run with the
	 * credentials of the thread that makes the client, as the I/O thread
	 * does, and not with those of whichever thread submits first
	 * (kcopydfs lowers them for kcopyd_client_create() alone).
	 */
	r = queue_add(kc, driver ? driver : &kcopyd_file_driver, driver ? queue_key : NULL);
	if (r < 0)
		goto err_close_eventfd;
	pthread_mutex_init(&kc->lock, NULL);
	pthread_cond_init(&kc->completed_cond, NULL);
	pthread_cond_init(&kc->finished_cond, NULL);
	pthread_mutex_init(&kc->digest_lock, NULL);
	pthread_cond_init(&kc->digest_cond, NULL);
	r = -pthread_create(&kc->io_thread, NULL, io_thread_main, kc);
	if (r < 0)
		goto err_destroy_sync;
	r = -pthread_create(&kc->completion_thread, NULL, completion_thread_main, kc);
	if (r < 0)
		goto err_stop_io_thread;
	*result = kc;
	return 0;

err_stop_io_thread:
	pthread_mutex_lock(&kc->lock);
	kc->io_exit = true;
	pthread_mutex_unlock(&kc->lock);
	kick(kc);
	pthread_join(kc->io_thread, NULL);
err_destroy_sync:
	pthread_cond_destroy(&kc->digest_cond);
	pthread_mutex_destroy(&kc->digest_lock);
	pthread_cond_destroy(&kc->finished_cond);
	pthread_cond_destroy(&kc->completed_cond);
	pthread_mutex_destroy(&kc->lock);
	queues_destroy(kc);
err_close_eventfd:
	pthread_mutex_destroy(&kc->queues_lock);
	close(kc->event_fd);
err_free_buffers:
	free_buffers(kc);
err_free_kc:
	free(kc);
	return r;
}

int kcopyd_client_create_ops(const struct kcopyd_config *config, const struct kcopyd_driver *driver,
			     void *queue_key, struct kcopyd_client **result)
{
	struct kcopyd_config whole;
	int r = config_copy(&whole, config, sizeof(*config));

	return r < 0 ? r : client_create(&whole, driver, queue_key, result);
}

int kcopyd_client_create_sized(const struct kcopyd_config *config, size_t config_size,
			       struct kcopyd_client **result)
{
	struct kcopyd_config whole;
	int r = config_copy(&whole, config, config_size);

	return r < 0 ? r : client_create(&whole, NULL, NULL, result);
}

/* For programs built before the macro: their struct ends at start_fn. */
int(kcopyd_client_create_config)(const struct kcopyd_config *config, struct kcopyd_client **result)
{
	return kcopyd_client_create_sized(config, KCOPYD_CONFIG_SIZE_V1, result);
}

unsigned int kcopyd_client_io_engine(struct kcopyd_client *kc, char *why, size_t why_len)
{
	if (why && why_len)
		snprintf(why, why_len, "%s", kc->io_engine_why);
	return kc->io_engine_used;
}

int kcopyd_client_create(unsigned int num_pages, struct kcopyd_client **result)
{
	struct kcopyd_config config = { .num_pages = num_pages };

	return kcopyd_client_create_sized(&config, sizeof(config), result);
}

void kcopyd_client_destroy(struct kcopyd_client *kc)
{
	if (!kc)
		return;
	pthread_mutex_lock(&kc->lock);
	kc->destroying = true;
	pthread_mutex_unlock(&kc->lock);
	kick(kc);
	pthread_mutex_lock(&kc->lock);
	while (kc->jobs_active > 0)
		pthread_cond_wait(&kc->finished_cond, &kc->lock);
	kc->io_exit = true;
	kc->completion_exit = true;
	pthread_cond_signal(&kc->completed_cond);
	pthread_mutex_unlock(&kc->lock);
	kick(kc);
	pthread_join(kc->io_thread, NULL);
	pthread_join(kc->completion_thread, NULL);
	if (kc->digest_started) {
		pthread_mutex_lock(&kc->digest_lock);
		kc->digest_exit = true;
		pthread_cond_signal(&kc->digest_cond);
		pthread_mutex_unlock(&kc->digest_lock);
		pthread_join(kc->digest_thread, NULL);
		digest_chunk_state_free(kc->chunk_state);
	}
	assert(list_empty(&kc->digest_todo) && list_empty(&kc->digest_done) && list_empty(&kc->pokes));

	/* Every job finished: the queues must be empty and every slot home. */
	assert(list_empty(&kc->submitted) && list_empty(&kc->cancels) && list_empty(&kc->started) &&
	       list_empty(&kc->completed));
	assert(list_empty(&kc->ready) && kc->pending_count == 0 && kc->ios_in_flight == 0);
	queues_destroy(kc);
	pthread_mutex_destroy(&kc->queues_lock);
	close(kc->event_fd);
	free_buffers(kc);
	pthread_cond_destroy(&kc->digest_cond);
	pthread_mutex_destroy(&kc->digest_lock);
	pthread_cond_destroy(&kc->finished_cond);
	pthread_cond_destroy(&kc->completed_cond);
	pthread_mutex_destroy(&kc->lock);
	free(kc);
}

/* The size of struct kcopyd_stats, and of struct kcopyd_result, before the fields added with their _sized calls. */
#define STATS_SIZE_V1 offsetof(struct kcopyd_stats, sectors_zero)
#define RESULT_SIZE_V1 offsetof(struct kcopyd_result, counts)

void kcopyd_client_stats_sized(struct kcopyd_client *kc, struct kcopyd_stats *out, size_t size)
{
	struct kcopyd_stats whole, *stats = &whole;

	memset(stats, 0, sizeof(*stats));
	pthread_mutex_lock(&kc->lock);
	stats->jobs_active = kc->jobs_active;
	stats->jobs_total = kc->jobs_total;
	stats->jobs_paused = kc->jobs_paused;
	pthread_mutex_unlock(&kc->lock);
	stats->sectors_read = atomic_load_explicit(&kc->sectors_read, memory_order_relaxed);
	stats->sectors_written = atomic_load_explicit(&kc->sectors_written, memory_order_relaxed);
	stats->read_errors = atomic_load_explicit(&kc->read_errors, memory_order_relaxed);
	stats->write_errors = atomic_load_explicit(&kc->write_errors, memory_order_relaxed);
	stats->pages_total = kc->num_pages;
	stats->pages_in_use = atomic_load_explicit(&kc->pages_in_use, memory_order_relaxed);
	stats->pages_peak = atomic_load_explicit(&kc->pages_peak, memory_order_relaxed);
	stats->subjob_sectors = kc->subjob_sectors;
	stats->depth = kc->depth;
	stats->sectors_zero = atomic_load_explicit(&kc->sectors_zero, memory_order_relaxed);
	stats->sectors_offloaded = atomic_load_explicit(&kc->sectors_offloaded, memory_order_relaxed);
	stats->zero_fallbacks = atomic_load_explicit(&kc->zero_fallbacks, memory_order_relaxed);
	stats->offload_fallbacks = atomic_load_explicit(&kc->offload_fallbacks, memory_order_relaxed);
	stats->io_engine = kc->io_engine_used;
	stats->sectors_hashed = atomic_load_explicit(&kc->sectors_hashed, memory_order_relaxed);
	stats->sectors_verified = atomic_load_explicit(&kc->sectors_verified, memory_order_relaxed);
	stats->verify_errors = atomic_load_explicit(&kc->verify_errors, memory_order_relaxed);
	stats->rate = atomic_load_explicit(&kc->rate, memory_order_relaxed);
	pthread_mutex_lock(&kc->lock);
	stats->throttled_ns = kc->throttled_done_ns + kc->throttled_jobs * now_ns() - kc->throttled_since_sum;
	pthread_mutex_unlock(&kc->lock);
	memcpy(out, stats, size < sizeof(*stats) ? size : sizeof(*stats));
}

void(kcopyd_client_stats)(struct kcopyd_client *kc, struct kcopyd_stats *stats)
{
	kcopyd_client_stats_sized(kc, stats, STATS_SIZE_V1);
}

/* ------------------------------------------------------------------ */
/* Jobs                                                                */
/* ------------------------------------------------------------------ */

/*
 * The sub-job size of @job: the client's, capped by every device's largest
 * request, in whole blocks of every device; and its zero-detection grain:
 * the client's, in whole blocks, at most MAX_GRAINS to a sub-job.
 */
static void job_geometry(struct kcopyd_client *kc, struct kcopyd_job *job)
{
	uint64_t block = 1, limit = job->is_zero ? ZERO_SUBJOB_SECTORS : kc->subjob_sectors, grain;
	unsigned int index;

	for (index = 0; index <= job->num_dests; index++) {
		const struct kcopyd_dev *dev = index < job->num_dests ? job->dests[index].region.bdev
								    : job->source.bdev;
		uint64_t dev_block, dev_limit;

		if (!dev)
			continue;
		dev_block = dev->block_size >> KCOPYD_SECTOR_SHIFT;
		dev_limit = dev->max_request >> KCOPYD_SECTOR_SHIFT;
		if (dev_block > block)
			block = dev_block;
		if (dev_limit && dev_limit < limit)
			limit = dev_limit;
	}
	limit = limit / block * block;
	if (limit == 0)
		limit = block;
	grain = (kc->sparse_sectors + block - 1) / block * block;
	while (limit > grain * MAX_GRAINS)
		grain *= 2;
	job->subjob_sectors = limit;
	job->grain_sectors = grain < limit ? grain : limit;
}

/*
 * Whether dests[@dest_index] may be copied by copy_file_range(2) from the
 * source: two regular files of one driver that can, and not refused by
 * KCOPYD_NO_OFFLOAD.  A refusal at run time drops it for the job.
 */
static bool job_may_offload(const struct kcopyd_job *job, unsigned int dest_index)
{
	const struct kcopyd_dev *src = job->source.bdev, *dst = job->dests[dest_index].region.bdev;

	return !job->is_zero && !(job->flags & KCOPYD_NO_OFFLOAD) && !job->hashes && !job->verify &&
	       src->is_regular_file &&
	       dst->is_regular_file && src->driver == dst->driver && (dev_caps(src) & KCOPYD_CAP_COPY) &&
	       (dev_caps(dst) & KCOPYD_CAP_COPY);
}

_Static_assert(KCOPYD_HASH_COUNT <= KCOPYD_HASH_SLOTS, "a result has no room for every digest");

/* The size of struct kcopyd_job_options up to rate: flags and hashes, the least kcopyd_submit_options() takes. */
#define JOB_OPTIONS_SIZE_MIN offsetof(struct kcopyd_job_options, rate)

/* Queue a job with @options (whole: any size was made whole by the caller). */
static int job_submit(struct kcopyd_client *kc, const struct io_region *from, unsigned int num_dests,
		      const struct io_region *dests, const struct kcopyd_job_options *options,
		      kcopyd_notify_fn fn, void *context, struct kcopyd_job **result)
{
	unsigned int flags = options->flags;
	struct kcopyd_job *job;
	unsigned int dest_index;
	int r;

	if (!kc)
		return -EINVAL;
	r = kcopyd_validate(from, num_dests, dests, flags, NULL, 0);
	if (r < 0)
		return r;
	if ((options->hashes & ~KCOPYD_HASH_ALL) || (options->hashes && !from) ||
	    (options->rate && options->rate < KCOPYD_MIN_RATE) || options->reserved || (options->paused && !result))
		return -EINVAL;
	job = calloc(1, sizeof(*job) + num_dests * sizeof(job->dests[0]));
	if (!job)
		return -ENOMEM;
	job->kc = kc;
	job->is_zero = from == NULL;
	if (from) {
		job->source = *from;
		r = queue_find(kc, from->bdev, &job->source_queue);
		if (r < 0)
			goto err_free_job;
	}
	job->num_dests = num_dests;
	for (dest_index = 0; dest_index < num_dests; dest_index++) {
		job->dests[dest_index].region = dests[dest_index];
		r = queue_find(kc, dests[dest_index].bdev, &job->dests[dest_index].queue);
		if (r < 0)
			goto err_free_job;
	}
	job->flags = flags;
	job->hashes = options->hashes;
	job->verify = flags & KCOPYD_VERIFY;
	job->zero_flags = (flags & KCOPYD_ALLOCATED) ? KCOPYD_ZERO_ALLOCATE : from ? 0 : KCOPYD_ZERO_DEVICE_KEEP;
	for (dest_index = 0; dest_index < num_dests; dest_index++)
		job->dests[dest_index].offload = job_may_offload(job, dest_index);
	job_geometry(kc, job);
	job->fn = fn;
	job->context = context;
	job->total = dests[0].count;
	job->nr_chunks = (job->total + job->subjob_sectors - 1) / job->subjob_sectors;
	job->fail_start = UINT64_MAX;
	job->checkpoint_stop = UINT64_MAX;
	job->refs = result ? 2 : 1;
	atomic_store_explicit(&job->rate, options->rate, memory_order_relaxed);
	atomic_store_explicit(&job->paused, options->paused != 0, memory_order_relaxed);
	list_init(&job->ready_link);
	list_init(&job->subjobs);
	list_init(&job->cancel_link);
	list_init(&job->start_link);
	list_init(&job->poke_link);
	list_init(&job->owned_link);
	if (job->hashes || job->verify) {
		r = digest_thread_start(kc);
		if (r < 0)
			goto err_free_job;
		r = digest_set_init(&job->digests, job->hashes);
		if (r < 0)
			goto err_free_job;
		if (job->verify && job->total) {
			job->chunk_digests = calloc(job->nr_chunks, sizeof(job->chunk_digests[0]));
			if (!job->chunk_digests) {
				r = -ENOMEM;
				goto err_free_digests;
			}
		}
	}

	pthread_mutex_lock(&kc->lock);
	job->state = JOB_QUEUED;
	list_add_tail(&job->queue_link, &kc->submitted);
	kc->jobs_active++;
	kc->jobs_total++;
	if (options->paused)
		kc->jobs_paused++;
	pthread_mutex_unlock(&kc->lock);
	if (result)
		*result = job;
	kick(kc);
	return 0;

err_free_digests:
	digest_set_free(&job->digests);
err_free_job:
	free(job);
	return r;
}

int kcopyd_submit(struct kcopyd_client *kc, const struct io_region *from, unsigned int num_dests,
		  const struct io_region *dests, unsigned int flags, kcopyd_notify_fn fn, void *context,
		  struct kcopyd_job **result)
{
	struct kcopyd_job_options options = { .flags = flags };

	return job_submit(kc, from, num_dests, dests, &options, fn, context, result);
}

int kcopyd_submit_options(struct kcopyd_client *kc, const struct io_region *from, unsigned int num_dests,
			  const struct io_region *dests, const struct kcopyd_job_options *options,
			  size_t options_size, kcopyd_notify_fn fn, void *context, struct kcopyd_job **result)
{
	struct kcopyd_job_options whole;
	size_t index;

	if (!options || options_size < JOB_OPTIONS_SIZE_MIN)
		return -EINVAL;
	for (index = sizeof(whole); index < options_size; index++)
		if (((const unsigned char *)options)[index])
			return -E2BIG;
	memset(&whole, 0, sizeof(whole));
	memcpy(&whole, options, options_size < sizeof(whole) ? options_size : sizeof(whole));
	return job_submit(kc, from, num_dests, dests, &whole, fn, context, result);
}

int kcopyd_copy(struct kcopyd_client *kc, struct io_region *from, unsigned int num_dests,
		struct io_region *dests, unsigned int flags, kcopyd_notify_fn fn, void *context)
{
	if (!from)
		return -EINVAL;
	return kcopyd_submit(kc, from, num_dests, dests, flags, fn, context, NULL);
}

int kcopyd_zero(struct kcopyd_client *kc, unsigned int num_dests, struct io_region *dests,
		unsigned int flags, kcopyd_notify_fn fn, void *context)
{
	return kcopyd_submit(kc, NULL, num_dests, dests, flags, fn, context, NULL);
}

void kcopyd_job_progress(const struct kcopyd_job *job, uint64_t *sectors_done, uint64_t *sectors_total)
{
	if (sectors_done)
		*sectors_done = atomic_load_explicit(&job->sectors_done, memory_order_relaxed);
	if (sectors_total)
		*sectors_total = job->total;
}

int kcopyd_job_counts(const struct kcopyd_job *job, struct kcopyd_counts *out, size_t size)
{
	struct kcopyd_counts counts;

	memset(&counts, 0, sizeof(counts));
	if (size < offsetof(struct kcopyd_counts, sectors_data))
		return -EINVAL;
	/* Zero and offloaded first: each only grows, and always with or before done. */
	counts.sectors_zero = atomic_load_explicit(&job->sectors_zero, memory_order_relaxed);
	counts.sectors_offloaded = atomic_load_explicit(&job->sectors_offloaded, memory_order_relaxed);
	counts.sectors_done = atomic_load_explicit(&job->sectors_done, memory_order_relaxed);
	if (counts.sectors_zero > counts.sectors_done)
		counts.sectors_zero = counts.sectors_done;
	counts.sectors_data = counts.sectors_done - counts.sectors_zero;
	if (counts.sectors_offloaded > counts.sectors_data)
		counts.sectors_offloaded = counts.sectors_data;
	counts.sectors_total = job->total;
	counts.phase = atomic_load_explicit(&job->phase, memory_order_relaxed);
	counts.paused = atomic_load_explicit(&job->paused, memory_order_relaxed);
	counts.sectors_verified = atomic_load_explicit(&job->sectors_verified, memory_order_relaxed);
	counts.sectors_verify_total = job->verify ? job->total * job->num_dests : 0;
	counts.rate = atomic_load_explicit(&job->rate, memory_order_relaxed);
	memcpy(out, &counts, size < sizeof(counts) ? size : sizeof(counts));
	return 0;
}

void kcopyd_job_checkpoint(const struct kcopyd_job *job, uint64_t *sectors)
{
	*sectors = atomic_load_explicit(&job->checkpoint, memory_order_acquire);
}

int kcopyd_job_cancel(struct kcopyd_job *job)
{
	struct kcopyd_client *kc = job->kc;

	pthread_mutex_lock(&kc->lock);
	if (job->cancel_requested || job->state >= JOB_COMPLETING) {
		pthread_mutex_unlock(&kc->lock);
		return -EALREADY;
	}
	job->cancel_requested = true;
	job->refs++;
	list_add_tail(&job->cancel_link, &kc->cancels);
	/*
	 * From here, not the I/O thread: that thread may itself be waiting on
	 * the device (an NBD extent query).  Under kc->lock, while the job
	 * cannot reach JOB_COMPLETING: once it may, its completion routine may
	 * run and its caller close the devices (kcopyd_submit() lets it), and
	 * abort() would touch a freed device.  abort() does not block.
	 */
	job_abort_io(job);
	pthread_mutex_unlock(&kc->lock);
	kick(kc);
	return 0;
}

/* Queue @job for the I/O thread to look at again (under kc->lock). */
static void job_poke_locked(struct kcopyd_job *job)
{
	if (job->poked)
		return;
	job->poked = true;
	job->refs++;
	list_add_tail(&job->poke_link, &job->kc->pokes);
}

/* Pause (@pause) or resume @job. */
static int job_set_paused(struct kcopyd_job *job, bool pause)
{
	struct kcopyd_client *kc = job->kc;
	int r = 0;

	pthread_mutex_lock(&kc->lock);
	if (job->state >= JOB_COMPLETING) {
		r = -EINVAL;
	} else if (atomic_load_explicit(&job->paused, memory_order_relaxed) == pause) {
		r = -EALREADY;
	} else {
		atomic_store_explicit(&job->paused, pause, memory_order_relaxed);
		if (pause)
			kc->jobs_paused++;
		else
			kc->jobs_paused--;
		job_poke_locked(job);
	}
	pthread_mutex_unlock(&kc->lock);
	if (r == 0)
		kick(kc);
	return r;
}

int kcopyd_job_pause(struct kcopyd_job *job)
{
	return job_set_paused(job, true);
}

int kcopyd_job_resume(struct kcopyd_job *job)
{
	return job_set_paused(job, false);
}

int kcopyd_job_set_rate(struct kcopyd_job *job, uint64_t rate)
{
	struct kcopyd_client *kc = job->kc;
	int r = 0;

	if (rate && rate < KCOPYD_MIN_RATE)
		return -EINVAL;
	pthread_mutex_lock(&kc->lock);
	if (job->state >= JOB_COMPLETING) {
		r = -EINVAL;
	} else {
		atomic_store_explicit(&job->rate, rate, memory_order_relaxed);
		job_poke_locked(job);
	}
	pthread_mutex_unlock(&kc->lock);
	if (r == 0)
		kick(kc);
	return r;
}

int kcopyd_client_set_rate(struct kcopyd_client *kc, uint64_t rate)
{
	if (!kc || (rate && rate < KCOPYD_MIN_RATE))
		return -EINVAL;
	/* The I/O thread looks at every throttled job again when it wakes. */
	atomic_store_explicit(&kc->rate, rate, memory_order_relaxed);
	kick(kc);
	return 0;
}

int kcopyd_job_result_sized(const struct kcopyd_job *job, struct kcopyd_result *out, size_t size)
{
	struct kcopyd_client *kc = job->kc;
	struct kcopyd_result whole, *result = &whole;
	int r = -EINPROGRESS;

	if (size < RESULT_SIZE_V1)
		return -EINVAL;
	pthread_mutex_lock(&kc->lock);
	if (job->state >= JOB_COMPLETING) {
		unsigned int dest_index;

		memset(result, 0, sizeof(*result));
		result->read_err = job->read_err;
		result->write_err = job->write_err;
		result->error = job->error;
		result->cancelled = job->cancelled;
		result->sectors_done = job->sectors_done_final;
		result->sectors_total = job->total;
		result->read = job->read_failure;
		for (dest_index = 0; dest_index < job->num_dests; dest_index++)
			result->write[dest_index] = job->dests[dest_index].failure;
		result->counts = (struct kcopyd_counts){
			.sectors_done = job->sectors_done_final,
			.sectors_total = job->total,
			.sectors_data = job->sectors_done_final - job->sectors_zero_final,
			.sectors_zero = job->sectors_zero_final,
			.sectors_offloaded = job->sectors_offloaded_final,
			.phase = KCOPYD_PHASE_DONE,
			.sectors_verified = atomic_load_explicit(&job->sectors_verified, memory_order_relaxed),
			.sectors_verify_total = job->verify ? job->total * job->num_dests : 0,
			.rate = atomic_load_explicit(&job->rate, memory_order_relaxed),
		};
		result->hashes = job->hashes_done;
		memcpy(result->digests, job->digest_out, sizeof(job->digest_out));
		result->verified = job->verified;
		result->verify_err = job->verify_err;
		for (dest_index = 0; dest_index < job->num_dests; dest_index++)
			result->verify[dest_index] = job->dests[dest_index].verify_failure;
		r = 0;
	}
	pthread_mutex_unlock(&kc->lock);
	if (r == 0)
		memcpy(out, result, size < sizeof(*result) ? size : sizeof(*result));
	return r;
}

int(kcopyd_job_result)(const struct kcopyd_job *job, struct kcopyd_result *result)
{
	return kcopyd_job_result_sized(job, result, RESULT_SIZE_V1);
}

int kcopyd_job_wait(struct kcopyd_job *job)
{
	struct kcopyd_client *kc = job->kc;

	pthread_mutex_lock(&kc->lock);
	while (job->state != JOB_FINISHED)
		pthread_cond_wait(&kc->finished_cond, &kc->lock);
	pthread_mutex_unlock(&kc->lock);
	return 0;
}

void kcopyd_job_release(struct kcopyd_job *job)
{
	struct kcopyd_client *kc;

	if (!job)
		return;
	kc = job->kc;
	pthread_mutex_lock(&kc->lock);
	job_put_locked(job);
	pthread_mutex_unlock(&kc->lock);
}

const char *kcopyd_version(void)
{
	return PACKAGE_VERSION;
}
