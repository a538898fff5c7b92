/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * race-engine: the engine's concurrency paths in a plain C program, so that
 * ThreadSanitizer can watch them (Criterion cannot start under TSan).  It
 * runs in every build; under TSan it is the engine's test.
 *
 * Four submitter threads, a statistics reader, a canceller, a pauser (it
 * also changes rates, the job's and the client's) and waiters race against
 * the I/O, completion and digest threads, on the fake backend (memfd
 * devices) and on the local-file driver (files in a temporary directory).
 * Every third job is hashed (SHA-256), every fifth verified.  Every copy
 * that was not cancelled is checked, and jobs that copied the same source
 * range must have the same digest.  Prints "N passed, M failed".
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_io.h"

#define SUBMITTERS 4
#define JOBS_PER_SUBMITTER 150
#define JOB_SECTORS 256u		/* 128 KiB a job */
#define AREA_SECTORS (SUBMITTERS * JOBS_PER_SUBMITTER * JOB_SECTORS)

static unsigned int passed, failed;

#define CHECK(cond, ...)                                                  \
	do {                                                              \
		if (cond) {                                               \
			passed++;                                         \
		} else {                                                  \
			failed++;                                         \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                     \
			fputc('\n', stderr);                              \
		}                                                         \
	} while (0)

struct run {
	struct kcopyd_client *kc;
	struct kcopyd_dev *src, *dst;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int callbacks;
	unsigned int callback_errors;
	struct kcopyd_job *jobs[SUBMITTERS * JOBS_PER_SUBMITTER];	/* set with __atomic_store_n */
	atomic_bool stop_readers;
};

struct submitter {
	struct run *run;
	unsigned int index;
};

static void on_done(int read_err, unsigned int write_err, void *context)
{
	struct run *run = context;

	pthread_mutex_lock(&run->lock);
	run->callbacks++;
	if (read_err || write_err)
		run->callback_errors++;
	pthread_cond_broadcast(&run->cond);
	pthread_mutex_unlock(&run->lock);
}

static void *submit_jobs(void *arg)
{
	struct submitter *submitter = arg;
	struct run *run = submitter->run;
	unsigned int index;

	for (index = 0; index < JOBS_PER_SUBMITTER; index++) {
		unsigned int job_index = submitter->index * JOBS_PER_SUBMITTER + index;
		struct io_region from = { run->src, (job_index % 64) * (uint64_t)JOB_SECTORS, JOB_SECTORS };
		struct io_region to = { run->dst, job_index * (uint64_t)JOB_SECTORS, JOB_SECTORS };
		struct kcopyd_job *job;
		struct kcopyd_job_options options = {
			.flags = (index % 3 ? 0 : KCOPYD_WRITE_SEQ) | (job_index % 5 ? 0 : KCOPYD_VERIFY),
			.hashes = job_index % 3 ? 0 : KCOPYD_HASH_SHA256,
		};
		int r = kcopyd_submit_options(run->kc, &from, 1, &to, &options, sizeof(options), on_done, run, &job);

		if (r < 0) {
			fprintf(stderr, "submit %u: %d\n", job_index, r);
			abort();
		}
		/* Published for the canceller and the statistics reader. */
		__atomic_store_n(&run->jobs[job_index], job, __ATOMIC_RELEASE);
	}
	return NULL;
}

/* Reads statistics and progress while everything runs. */
static void *read_stats(void *arg)
{
	struct run *run = arg;
	struct kcopyd_stats stats;
	unsigned int rounds = 0;

	while (!atomic_load(&run->stop_readers)) {
		unsigned int index;
		uint64_t done, total;

		kcopyd_client_stats(run->kc, &stats);
		if (stats.pages_in_use > stats.pages_total)
			abort();
		for (index = 0; index < JOBS_PER_SUBMITTER; index += 16) {
			struct kcopyd_job *job = __atomic_load_n(&run->jobs[index], __ATOMIC_ACQUIRE);

			if (job)
				kcopyd_job_progress(job, &done, &total);
		}
		rounds++;
		usleep(50);
	}
	return (void *)(uintptr_t)rounds;
}

/* Cancels every seventh job of submitter 1 as soon as it exists. */
static void *cancel_some(void *arg)
{
	struct run *run = arg;
	unsigned int index;

	for (index = 0; index < JOBS_PER_SUBMITTER; index += 7) {
		struct kcopyd_job **slot = &run->jobs[JOBS_PER_SUBMITTER + index];

		while (!__atomic_load_n(slot, __ATOMIC_ACQUIRE))
			usleep(10);
		(void)kcopyd_job_cancel(*slot);
	}
	return NULL;
}

/*
 * Pauses and resumes every eleventh job of submitter 2, slows every
 * thirteenth of submitter 3 down and lets it go again, and turns the
 * client's rate on and off meanwhile.  Every pause is undone: a job left
 * paused would never finish.
 */
static void *pause_some(void *arg)
{
	struct run *run = arg;
	unsigned int index;

	for (index = 0; index < JOBS_PER_SUBMITTER; index += 11) {
		struct kcopyd_job **slot = &run->jobs[2 * JOBS_PER_SUBMITTER + index];
		struct kcopyd_job **rated = &run->jobs[3 * JOBS_PER_SUBMITTER + index];

		while (!__atomic_load_n(slot, __ATOMIC_ACQUIRE) || !__atomic_load_n(rated, __ATOMIC_ACQUIRE))
			usleep(10);
		if (kcopyd_job_pause(*slot) == 0) {
			usleep(300);
			if (kcopyd_job_resume(*slot) != 0)
				abort();
		}
		(void)kcopyd_job_set_rate(*rated, 1u << 20);
		(void)kcopyd_client_set_rate(run->kc, index % 2 ? 64u << 20 : 0);
		usleep(200);
		(void)kcopyd_job_set_rate(*rated, 0);
	}
	(void)kcopyd_client_set_rate(run->kc, 0);
	return NULL;
}

static void *memdup_fd_pattern(int fd, size_t bytes, unsigned int seed)
{
	unsigned char *buf = NULL;
	size_t index;

	if (posix_memalign((void **)&buf, 4096, bytes))
		abort();
	for (index = 0; index < bytes; index++)
		buf[index] = (unsigned char)(index * 131 + seed + (index >> 12));
	if (pwrite(fd, buf, bytes, 0) != (ssize_t)bytes)
		abort();
	return buf;
}

static void run_races(const char *name, const struct kcopyd_driver *ops, void *ops_arg, int src_fd, int dst_fd)
{
	size_t src_bytes = 64 * JOB_SECTORS * 512u, dst_bytes = (size_t)AREA_SECTORS * 512u;
	struct kcopyd_config config = { .num_pages = 48, .subjob_sectors = 64, .depth = 3 };
	struct submitter submitters[SUBMITTERS];
	pthread_t submit_threads[SUBMITTERS], stats_thread, cancel_thread, pause_thread;
	struct kcopyd_digest first_digest[64];
	struct run *run = calloc(1, sizeof(*run));
	unsigned char *expected, *got = NULL;
	unsigned int index, cancelled = 0, verified = 0;
	int r;

	pthread_mutex_init(&run->lock, NULL);
	pthread_cond_init(&run->cond, NULL);
	if (ftruncate(dst_fd, (off_t)dst_bytes) || ftruncate(src_fd, (off_t)src_bytes))
		abort();
	expected = memdup_fd_pattern(src_fd, src_bytes, 7);
	r = kcopyd_dev_from_fd(src_fd, &run->src);
	CHECK(r == 0, "%s: source device: %d", name, r);
	r = kcopyd_dev_from_fd(dst_fd, &run->dst);
	CHECK(r == 0, "%s: destination device: %d", name, r);
	r = kcopyd_client_create_ops(&config, ops, ops_arg, &run->kc);
	CHECK(r == 0, "%s: client: %d", name, r);
	if (r < 0)
		exit(1);

	pthread_create(&stats_thread, NULL, read_stats, run);
	pthread_create(&cancel_thread, NULL, cancel_some, run);
	pthread_create(&pause_thread, NULL, pause_some, run);
	for (index = 0; index < SUBMITTERS; index++) {
		submitters[index] = (struct submitter){ run, index };
		pthread_create(&submit_threads[index], NULL, submit_jobs, &submitters[index]);
	}
	for (index = 0; index < SUBMITTERS; index++)
		pthread_join(submit_threads[index], NULL);
	pthread_join(cancel_thread, NULL);
	pthread_join(pause_thread, NULL);

	/* Wait on half the jobs by handle, on the rest through the callbacks. */
	for (index = 0; index < SUBMITTERS * JOBS_PER_SUBMITTER; index += 2)
		kcopyd_job_wait(run->jobs[index]);
	pthread_mutex_lock(&run->lock);
	while (run->callbacks < SUBMITTERS * JOBS_PER_SUBMITTER)
		pthread_cond_wait(&run->cond, &run->lock);
	pthread_mutex_unlock(&run->lock);
	atomic_store(&run->stop_readers, true);
	pthread_join(stats_thread, NULL);
	CHECK(run->callback_errors == 0, "%s: %u jobs reported errors", name, run->callback_errors);

	if (posix_memalign((void **)&got, 4096, JOB_SECTORS * 512u))
		abort();
	memset(first_digest, 0, sizeof(first_digest));
	for (index = 0; index < SUBMITTERS * JOBS_PER_SUBMITTER; index++) {
		struct kcopyd_result result;

		r = kcopyd_job_result(run->jobs[index], &result);
		CHECK(r == 0, "%s: job %u result: %d", name, index, r);
		if (result.cancelled) {
			cancelled++;
		} else {
			if (pread(dst_fd, got, JOB_SECTORS * 512u, (off_t)index * JOB_SECTORS * 512u) !=
			    (ssize_t)(JOB_SECTORS * 512u))
				abort();
			CHECK(memcmp(got, expected + (index % 64) * JOB_SECTORS * 512u, JOB_SECTORS * 512u) == 0,
			      "%s: job %u copied wrong data", name, index);
			CHECK(result.sectors_done == JOB_SECTORS, "%s: job %u done %llu", name, index,
			      (unsigned long long)result.sectors_done);
			CHECK(result.verified == (index % 5 ? 0 : 1), "%s: job %u verified %d", name, index,
			      result.verified);
			CHECK(result.hashes == (index % 3 ? 0u : KCOPYD_HASH_SHA256), "%s: job %u hashes %#x", name,
			      index, result.hashes);
			if (result.hashes) {
				struct kcopyd_digest *first = &first_digest[index % 64];

				if (!first->size)
					*first = result.digests[2];
				CHECK(memcmp(first, &result.digests[2], sizeof(*first)) == 0,
				      "%s: job %u: another digest of the same bytes", name, index);
			}
			verified++;
		}
		kcopyd_job_release(run->jobs[index]);
	}
	kcopyd_client_destroy(run->kc);
	printf("%s: %u jobs verified, %u cancelled\n", name, verified, cancelled);
	CHECK(verified + cancelled == SUBMITTERS * JOBS_PER_SUBMITTER, "%s: jobs lost", name);
	kcopyd_dev_close(run->src);
	kcopyd_dev_close(run->dst);
	pthread_cond_destroy(&run->cond);
	pthread_mutex_destroy(&run->lock);
	free(expected);
	free(got);
	free(run);
}

int main(void)
{
	static struct fake_io fake;
	char dir[] = "/var/tmp/kcopyd-race.XXXXXX";
	char src_path[64], dst_path[64];
	int src_fd, dst_fd;

	fake_io_init(&fake);
	fake.reverse = true;
	run_races("fake driver", &fake_io_ops, &fake,
		  memfd_create("race-src", MFD_CLOEXEC), memfd_create("race-dst", MFD_CLOEXEC));

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(src_path, sizeof(src_path), "%s/src", dir);
	snprintf(dst_path, sizeof(dst_path), "%s/dst", dir);
	src_fd = open(src_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	dst_fd = open(dst_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (src_fd < 0 || dst_fd < 0) {
		perror("open");
		return 1;
	}
	unlink(src_path);
	unlink(dst_path);
	rmdir(dir);
	run_races("local-file driver", NULL, NULL, src_fd, dst_fd);

	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
