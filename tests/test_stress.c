/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Stress: over a thousand jobs of random sizes (4 KiB .. 3 MiB), random
 * destination counts (1..8) and random flags, submitted with the kernel API
 * (kcopyd_copy / kcopyd_zero) from four threads at once, and a few more
 * from completion routines, through a client whose budget (64 pages) is far
 * below what the jobs move.  Each destination region has an area of its own
 * on one of four devices (loop devices with 512- and 4096-byte sectors on a
 * tmpfs, and a plain file); afterwards every area is checked byte for byte.
 *
 * The plan is random but reproducible: set KCOPYD_STRESS_SEED to replay
 * the seed a failing run printed.  Needs root; skips (77) without it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kcopyd.h"
#include "testutil.h"

#define MiB		(1024ull * 1024)
#define SRC_BYTES	(64 * MiB)
#define SRC_SECTORS	(SRC_BYTES >> KCOPYD_SECTOR_SHIFT)
#define SRC_SEED	0x57e55ull
#define FILL_SEED	0xf111ull	/* zero jobs' areas start as this pattern */
#define NR_THREADS	4
#define JOBS_PER_THREAD	256
#define NR_TOP_JOBS	(NR_THREADS * JOBS_PER_THREAD)
#define FOLLOW_EVERY	16		/* every 16th job submits one more when it completes */
#define NR_JOBS		(NR_TOP_JOBS + NR_TOP_JOBS / FOLLOW_EVERY)
#define MAX_DESTS	8
#define BUDGET_PAGES	64
#define DEADLINE_S	50

enum target_id { T_LOOP_A, T_LOOP_4K, T_LOOP_C, T_FILE_D, NR_TARGETS };

static const struct {
	const char *name;
	unsigned int sector_size;	/* 0: a plain file */
} target_kinds[NR_TARGETS] = {
	[T_LOOP_A] = { "loop A (512)", 512 },
	[T_LOOP_4K] = { "loop 4K (4096)", 4096 },
	[T_LOOP_C] = { "loop C (512)", 512 },
	[T_FILE_D] = { "file D", 0 },
};

struct target {
	char file[PATH_MAX];
	char loop[32];			/* "" for the plain file */
	uint64_t sectors;		/* its size */
	uint64_t next_sector;		/* the bump allocator of areas */
	struct kcopyd_dev *dev;
};

struct stress_job {
	unsigned int index;
	bool zero;			/* a kcopyd_zero job */
	unsigned int flags;
	bool src_plain;			/* read the source file, not its loop device */
	uint64_t src_sector;
	uint64_t count;
	unsigned int nr_dests;
	enum target_id dest_target[MAX_DESTS];
	uint64_t dest_sector[MAX_DESTS];
	struct stress_job *follow;	/* submitted by this job's completion routine */
	/* Outcome, under run.lock. */
	unsigned int calls;
	int read_err;
	unsigned int write_err;
	int submit_err;			/* kcopyd_copy/zero refused it */
};

static struct {
	uint64_t seed;
	char dir[256];
	char src_file[PATH_MAX];
	char src_loop[32];
	struct kcopyd_dev *src;		/* the loop device */
	struct kcopyd_dev *src_plain;	/* the file itself */
	struct target dst[NR_TARGETS];
	struct kcopyd_client *kc;
	struct stress_job jobs[NR_JOBS];
} fx;

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int finished;		/* completion routines run, plus refused submits */
} run = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0 };

/* ---- the plan ----------------------------------------------------------- */

static uint64_t rng_next(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* A size in sectors, a multiple of 8: mostly small (log-uniform 4 KiB ..
 * 512 KiB), one in sixteen large (512 KiB .. 3 MiB). */
static uint64_t random_count(uint64_t *rng)
{
	uint64_t pages;

	if (rng_next(rng) % 16 == 0) {
		pages = 128 + rng_next(rng) % (768 - 128 + 1);
	} else {
		unsigned int shift = (unsigned int)(rng_next(rng) % 7);	/* 1 .. 64 pages, then spread */

		pages = (1ull << shift) + rng_next(rng) % (1ull << shift);
		if (pages > 128)
			pages = 128;
	}
	return pages * 8;
}

static uint64_t allocate_area(enum target_id id, uint64_t count)
{
	uint64_t sector = fx.dst[id].next_sector;

	fx.dst[id].next_sector += count;
	return sector;
}

static void make_plan(void)
{
	uint64_t rng = fx.seed ? fx.seed : 1;
	unsigned int i, d;

	for (i = 0; i < NR_JOBS; i++) {
		struct stress_job *job = &fx.jobs[i];

		memset(job, 0, sizeof(*job));
		job->index = i;
		job->zero = rng_next(&rng) % 10 == 0;
		/* Not KCOPYD_DEST_ZERO: a follow-up writes where its top job wrote. */
		job->flags = (unsigned int)(rng_next(&rng) % 32) &
			     (KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ | KCOPYD_ALLOCATED | KCOPYD_NO_OFFLOAD);
		job->src_plain = rng_next(&rng) % 2;
		job->count = random_count(&rng);
		job->src_sector = (rng_next(&rng) % ((SRC_SECTORS - job->count) / 8 + 1)) * 8;
		job->nr_dests = 1 + (unsigned int)(rng_next(&rng) % MAX_DESTS);
		for (d = 0; d < job->nr_dests; d++) {
			job->dest_target[d] = (enum target_id)(rng_next(&rng) % NR_TARGETS);
			job->dest_sector[d] = allocate_area(job->dest_target[d], job->count);
		}
	}
	/* The jobs past NR_TOP_JOBS are follow-ups, each of a 16th top job. */
	for (i = 0; i < NR_TOP_JOBS / FOLLOW_EVERY; i++)
		fx.jobs[i * FOLLOW_EVERY].follow = &fx.jobs[NR_TOP_JOBS + i];
}

/* ---- fixture --------------------------------------------------------- */

static void teardown(void)
{
	int i;

	kcopyd_client_destroy(fx.kc);
	fx.kc = NULL;
	kcopyd_dev_close(fx.src);
	kcopyd_dev_close(fx.src_plain);
	fx.src = fx.src_plain = NULL;
	if (fx.src_loop[0])
		tu_loop_detach(fx.src_loop);
	fx.src_loop[0] = '\0';
	for (i = 0; i < NR_TARGETS; i++) {
		kcopyd_dev_close(fx.dst[i].dev);
		fx.dst[i].dev = NULL;
		if (fx.dst[i].loop[0])
			tu_loop_detach(fx.dst[i].loop);
		fx.dst[i].loop[0] = '\0';
	}
	tu_tmpfs_unmount(fx.dir);
	fx.dir[0] = '\0';
}

static const char *target_path(const struct target *t)
{
	return t->loop[0] ? t->loop : t->file;
}

static int build_fixture(const char **step)
{
	unsigned int i, d;
	uint64_t tmpfs_bytes = SRC_BYTES;
	int r;

	for (i = 0; i < NR_TARGETS; i++) {
		/* Room for every area, and 1 MiB past them that must stay zero. */
		fx.dst[i].sectors = (fx.dst[i].next_sector + 2 * (MiB >> KCOPYD_SECTOR_SHIFT)) &
				    ~((MiB >> KCOPYD_SECTOR_SHIFT) - 1);
		tmpfs_bytes += fx.dst[i].sectors << KCOPYD_SECTOR_SHIFT;
	}
	*step = "tu_tmpfs_mount";
	r = tu_tmpfs_mount(tmpfs_bytes + 16 * MiB, fx.dir, sizeof(fx.dir));
	if (r < 0)
		return r;
	snprintf(fx.src_file, sizeof(fx.src_file), "%s/source", fx.dir);
	*step = "tu_file_create(source)";
	r = tu_file_create(fx.src_file, SRC_BYTES, SRC_SEED);
	if (r < 0)
		return r;
	*step = "tu_loop_attach(source)";
	r = tu_loop_attach(fx.src_file, 512, true, fx.src_loop, sizeof(fx.src_loop));
	if (r < 0)
		return r;
	*step = "kcopyd_dev_open(source)";
	r = kcopyd_dev_open(fx.src_loop, O_RDONLY, &fx.src);
	if (r == 0)
		r = kcopyd_dev_open(fx.src_file, O_RDONLY, &fx.src_plain);
	if (r < 0)
		return r;
	for (i = 0; i < NR_TARGETS; i++) {
		struct target *t = &fx.dst[i];

		snprintf(t->file, sizeof(t->file), "%s/dest%u", fx.dir, i);
		*step = "tu_file_create(destination)";
		r = tu_file_create(t->file, t->sectors << KCOPYD_SECTOR_SHIFT, 0);
		if (r < 0)
			return r;
		if (target_kinds[i].sector_size) {
			*step = "tu_loop_attach(destination)";
			r = tu_loop_attach(t->file, target_kinds[i].sector_size, true, t->loop,
					   sizeof(t->loop));
			if (r < 0)
				return r;
		}
		*step = "kcopyd_dev_open(destination)";
		r = kcopyd_dev_open(target_path(t), O_RDWR, &t->dev);
		if (r < 0)
			return r;
	}
	/* Zero jobs must visibly change their areas. */
	*step = "pre-filling the areas of zero jobs";
	for (i = 0; i < NR_JOBS; i++) {
		const struct stress_job *job = &fx.jobs[i];

		for (d = 0; job->zero && d < job->nr_dests; d++) {
			r = tu_pattern_write(target_path(&fx.dst[job->dest_target[d]]),
					     job->dest_sector[d] << KCOPYD_SECTOR_SHIFT,
					     job->count << KCOPYD_SECTOR_SHIFT, FILL_SEED, 0);
			if (r < 0)
				return r;
		}
	}
	*step = "kcopyd_client_create";
	return kcopyd_client_create(BUDGET_PAGES, &fx.kc);
}

static void setup(void)
{
	const char *env = getenv("KCOPYD_STRESS_SEED");
	const char *step = "";
	int r;

	memset(&fx, 0, sizeof(fx));
	fx.seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	make_plan();
	r = build_fixture(&step);
	if (r < 0) {
		teardown();
		cr_assert_fail("fixture: %s failed: %d (%s)", step, r, strerror(-r));
	}
}

TestSuite(stress, .init = setup, .fini = teardown, .timeout = 60);

/* ---- running ----------------------------------------------------------- */

static void stress_notify(int read_err, unsigned int write_err, void *context);

/* Submit @job; a refused job counts as finished at once. */
static void submit_job(struct stress_job *job)
{
	struct io_region from = {
		.bdev = job->src_plain ? fx.src_plain : fx.src,
		.sector = job->src_sector,
		.count = job->count,
	};
	struct io_region dests[MAX_DESTS];
	unsigned int d;
	int r;

	for (d = 0; d < job->nr_dests; d++)
		dests[d] = (struct io_region){
			.bdev = fx.dst[job->dest_target[d]].dev,
			.sector = job->dest_sector[d],
			.count = job->count,
		};
	if (job->zero)
		r = kcopyd_zero(fx.kc, job->nr_dests, dests, job->flags, stress_notify, job);
	else
		r = kcopyd_copy(fx.kc, &from, job->nr_dests, dests, job->flags, stress_notify, job);
	if (r < 0) {
		pthread_mutex_lock(&run.lock);
		job->submit_err = r;
		run.finished++;
		pthread_cond_broadcast(&run.cond);
		pthread_mutex_unlock(&run.lock);
		/* Its follow-up will never be submitted: count it too. */
		if (job->follow) {
			pthread_mutex_lock(&run.lock);
			job->follow->submit_err = -ECANCELED;
			run.finished++;
			pthread_mutex_unlock(&run.lock);
		}
	}
}

static void stress_notify(int read_err, unsigned int write_err, void *context)
{
	struct stress_job *job = context;

	pthread_mutex_lock(&run.lock);
	job->calls++;
	job->read_err = read_err;
	job->write_err = write_err;
	pthread_mutex_unlock(&run.lock);

	/* The kernel's users chain jobs from their completion routines. */
	if (job->follow)
		submit_job(job->follow);

	pthread_mutex_lock(&run.lock);
	run.finished++;
	pthread_cond_broadcast(&run.cond);
	pthread_mutex_unlock(&run.lock);
}

static void *submitter(void *arg)
{
	unsigned int thread = (unsigned int)(uintptr_t)arg, i;

	/* Interleave the threads over the plan. */
	for (i = thread; i < NR_TOP_JOBS; i += NR_THREADS)
		submit_job(&fx.jobs[i]);
	return NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check_job(const struct stress_job *job)
{
	unsigned int d;

	cr_assert_eq(job->submit_err, 0, "seed 0x%" PRIx64 ": job %u (%s, %" PRIu64 " sectors, "
		     "%u dests, flags 0x%x) was refused: %d (%s)", fx.seed, job->index,
		     job->zero ? "zero" : "copy", job->count, job->nr_dests, job->flags,
		     job->submit_err, strerror(-job->submit_err));
	cr_assert_eq(job->calls, 1, "seed 0x%" PRIx64 ": job %u: completion routine called %u times",
		     fx.seed, job->index, job->calls);
	cr_assert(job->read_err == 0 && job->write_err == 0, "seed 0x%" PRIx64 ": job %u: read_err "
		  "%d write_err 0x%x", fx.seed, job->index, job->read_err, job->write_err);
	for (d = 0; d < job->nr_dests; d++) {
		const struct target *t = &fx.dst[job->dest_target[d]];
		uint64_t diff = 0;
		int r = tu_pattern_check(target_path(t), job->dest_sector[d] << KCOPYD_SECTOR_SHIFT,
					 job->count << KCOPYD_SECTOR_SHIFT,
					 job->zero ? 0 : SRC_SEED,
					 job->zero ? 0 : job->src_sector << KCOPYD_SECTOR_SHIFT,
					 &diff);

		cr_assert_eq(r, 0, "seed 0x%" PRIx64 ": job %u (%s, flags 0x%x, source sector %"
			     PRIu64 ", %" PRIu64 " sectors), dest %u of %u on %s at sector %" PRIu64
			     ": %s at byte %" PRIu64 " (tu_pattern_check=%d)", fx.seed, job->index,
			     job->zero ? "zero" : "copy", job->flags, job->src_sector, job->count, d,
			     job->nr_dests, target_kinds[job->dest_target[d]].name,
			     job->dest_sector[d], r == 1 ? "wrong data" : "unreadable", diff, r);
	}
}

Test(stress, many_jobs_from_four_threads_on_a_small_budget)
{
	pthread_t threads[NR_THREADS];
	struct kcopyd_stats stats;
	uint64_t want_read = 0, want_written = 0, want_offloaded = 0;
	unsigned int i, finished, in_use_max = 0;
	double start = now(), submitted_at, done_at;
	int r;

	cr_log_info("seed 0x%" PRIx64 " (replay with KCOPYD_STRESS_SEED=0x%" PRIx64 ")", fx.seed,
		    fx.seed);
	for (i = 0; i < NR_THREADS; i++) {
		r = pthread_create(&threads[i], NULL, submitter, (void *)(uintptr_t)i);
		cr_assert_eq(r, 0, "pthread_create: %d", r);
	}
	for (i = 0; i < NR_THREADS; i++)
		pthread_join(threads[i], NULL);
	submitted_at = now();

	/* Wait for every completion, sampling the budget every 2 ms meanwhile. */
	for (;;) {
		struct timespec tick;

		clock_gettime(CLOCK_REALTIME, &tick);
		tick.tv_nsec += 2 * 1000 * 1000;
		if (tick.tv_nsec >= 1000 * 1000 * 1000) {
			tick.tv_sec++;
			tick.tv_nsec -= 1000 * 1000 * 1000;
		}
		pthread_mutex_lock(&run.lock);
		if (run.finished < NR_JOBS)
			pthread_cond_timedwait(&run.cond, &run.lock, &tick);
		finished = run.finished;
		pthread_mutex_unlock(&run.lock);
		kcopyd_client_stats(fx.kc, &stats);
		if (stats.pages_in_use > in_use_max)
			in_use_max = stats.pages_in_use;
		cr_assert(stats.pages_in_use <= BUDGET_PAGES, "seed 0x%" PRIx64 ": pages_in_use %u "
			  "above the budget of %u", fx.seed, stats.pages_in_use, BUDGET_PAGES);
		if (finished == NR_JOBS)
			break;
		cr_assert(now() - start < DEADLINE_S, "seed 0x%" PRIx64 ": only %u of %u jobs "
			  "finished in %d s (jobs_active %" PRIu64 ")", fx.seed, finished, NR_JOBS,
			  DEADLINE_S, stats.jobs_active);
	}
	done_at = now();
	/*
	 * The last routine counted itself before it returned; the engine may
	 * count its job active until then.  Give it a moment.
	 */
	for (;;) {
		struct timespec pause = { 0, 1000 * 1000 };

		kcopyd_client_stats(fx.kc, &stats);
		if (stats.jobs_active == 0 || now() - done_at > 2.0)
			break;
		nanosleep(&pause, NULL);
	}

	for (i = 0; i < NR_JOBS; i++) {
		const struct stress_job *job = &fx.jobs[i];
		unsigned int d, offloaded = 0;

		/* From the plain file, every dest that is the plain file is offloaded (copy_file_range). */
		for (d = 0; d < job->nr_dests && job->src_plain && !(job->flags & KCOPYD_NO_OFFLOAD); d++)
			offloaded += job->dest_target[d] == T_FILE_D;
		/* The source is random data: no holes, no zeros; it is read unless no dest needs it. */
		if (!job->zero && offloaded < job->nr_dests)
			want_read += job->count;
		if (!job->zero)
			want_offloaded += job->count * offloaded;
		want_written += job->count * job->nr_dests;
	}
	cr_log_info("%u jobs, %" PRIu64 " MiB read, %" PRIu64 " MiB written: submitted in %.2f s, "
		    "done in %.2f s; peak %u of %u pages", NR_JOBS, want_read >> 11,
		    want_written >> 11, submitted_at - start, done_at - start, stats.pages_peak,
		    stats.pages_total);

	cr_assert_eq(stats.pages_total, BUDGET_PAGES, "pages_total %u, expected %u",
		     stats.pages_total, BUDGET_PAGES);
	cr_assert(stats.pages_peak <= stats.pages_total, "seed 0x%" PRIx64 ": pages_peak %u above "
		  "pages_total %u", fx.seed, stats.pages_peak, stats.pages_total);
	cr_assert(stats.pages_peak >= in_use_max && stats.pages_peak > 0, "pages_peak %u below "
		  "the %u pages seen in use", stats.pages_peak, in_use_max);
	cr_assert_eq(stats.jobs_total, NR_JOBS, "jobs_total %" PRIu64 ", expected %u",
		     stats.jobs_total, NR_JOBS);
	cr_assert_eq(stats.jobs_active, 0, "jobs_active %" PRIu64 " 2 s after every routine ran",
		     stats.jobs_active);
	cr_assert(stats.read_errors == 0 && stats.write_errors == 0, "read_errors %" PRIu64
		  " write_errors %" PRIu64, stats.read_errors, stats.write_errors);
	cr_assert_eq(stats.sectors_read, want_read, "seed 0x%" PRIx64 ": sectors_read %" PRIu64
		     ", expected %" PRIu64, fx.seed, stats.sectors_read, want_read);
	cr_assert_eq(stats.sectors_written, want_written, "seed 0x%" PRIx64 ": sectors_written %"
		     PRIu64 ", expected %" PRIu64, fx.seed, stats.sectors_written, want_written);
	cr_assert_eq(stats.sectors_offloaded, want_offloaded, "seed 0x%" PRIx64 ": sectors_offloaded %"
		     PRIu64 ", expected %" PRIu64, fx.seed, stats.sectors_offloaded, want_offloaded);

	for (i = 0; i < NR_JOBS; i++)
		check_job(&fx.jobs[i]);
	/* Nothing was written past the areas. */
	for (i = 0; i < NR_TARGETS; i++) {
		const struct target *t = &fx.dst[i];
		uint64_t diff = 0;

		r = tu_find_nonzero(target_path(t), t->next_sector << KCOPYD_SECTOR_SHIFT,
				    (t->sectors - t->next_sector) << KCOPYD_SECTOR_SHIFT, &diff);
		cr_assert_eq(r, 0, "seed 0x%" PRIx64 ": %s: non-zero byte %" PRIu64 " bytes past the "
			     "last area (%d)", fx.seed, target_kinds[i].name, diff, r);
	}
	cr_log_info("verified in %.2f s", now() - done_at);
}

TU_MAIN_REQUIRES(tu_loop_rig_missing() == NULL, tu_loop_rig_missing())
