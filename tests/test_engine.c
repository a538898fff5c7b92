/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Engine unit tests against the fake backend (tests/fake_io.c): splitting,
 * the page budget, error accounting, ordering, callbacks, cancel, destroy.
 * Devices are memfds, so these tests need neither root nor real disks.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_io.h"

#define MiB (1024ull * 1024)
#define SECTORS(bytes) ((uint64_t)(bytes) >> KCOPYD_SECTOR_SHIFT)

static struct fake_io fake;
static struct kcopyd_client *kc;

/* ---- helpers -------------------------------------------------------- */

static uint64_t pattern_word(uint64_t seed, uint64_t index)
{
	uint64_t z = seed * 0x9e3779b97f4a7c15ull + index;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/*
 * A memfd of @bytes: pattern @seed, or zeros for seed 0.  Without offload:
 * two memfds could copy_file_range, and most tests here are of the read
 * and write path (memdev_offload() gives it back).
 */
static struct kcopyd_dev *memdev(uint64_t bytes, uint64_t seed)
{
	struct kcopyd_dev *dev;
	int fd = memfd_create("kcopyd-test", MFD_CLOEXEC);
	uint64_t index;

	cr_assert(fd >= 0, "memfd_create: %s", strerror(errno));
	cr_assert(ftruncate(fd, (off_t)bytes) == 0);
	if (seed) {
		uint64_t *words = malloc(bytes);

		for (index = 0; index < bytes / 8; index++)
			words[index] = pattern_word(seed, index);
		cr_assert(pwrite(fd, words, bytes, 0) == (ssize_t)bytes);
		free(words);
	}
	cr_assert(kcopyd_dev_from_fd(fd, &dev) == 0);
	cr_assert(kcopyd_dev_sectors(dev) == SECTORS(bytes));
	dev_drop_caps(dev, KCOPYD_CAP_COPY);
	return dev;
}

/* Bytes [sector, sector + count) of @dev, read with pread. */
static void *dev_read(struct kcopyd_dev *dev, uint64_t sector, uint64_t count)
{
	size_t bytes = count << KCOPYD_SECTOR_SHIFT;
	void *buf = NULL;

	cr_assert(posix_memalign(&buf, 4096, bytes ? bytes : 4096) == 0);

	cr_assert(pread(kcopyd_file_fd(dev), buf, bytes, (off_t)(sector << KCOPYD_SECTOR_SHIFT)) == (ssize_t)bytes);
	return buf;
}

static bool same_bytes(struct kcopyd_dev *a, uint64_t a_sector, struct kcopyd_dev *b, uint64_t b_sector,
		       uint64_t count)
{
	void *x = dev_read(a, a_sector, count), *y = dev_read(b, b_sector, count);
	bool same = memcmp(x, y, count << KCOPYD_SECTOR_SHIFT) == 0;

	free(x);
	free(y);
	return same;
}

static bool all_zero(struct kcopyd_dev *dev, uint64_t sector, uint64_t count)
{
	unsigned char *x = dev_read(dev, sector, count);
	uint64_t index;
	bool zero = true;

	for (index = 0; index < count << KCOPYD_SECTOR_SHIFT && zero; index++)
		zero = x[index] == 0;
	free(x);
	return zero;
}

static void new_client(unsigned int num_pages, unsigned int subjob_sectors, unsigned int depth)
{
	struct kcopyd_config config = { .num_pages = num_pages, .subjob_sectors = subjob_sectors, .depth = depth };
	int r = kcopyd_client_create_ops(&config, &fake_io_ops, &fake, &kc);

	cr_assert(r == 0, "kcopyd_client_create_ops(pages=%u, subjob=%u): %d", num_pages, subjob_sectors, r);
}

/* Submit and wait; returns the result. */
static struct kcopyd_result run_job(const struct io_region *from, unsigned int num_dests,
				    const struct io_region *dests, unsigned int flags)
{
	struct kcopyd_result result;
	struct kcopyd_job *job;
	int r = kcopyd_submit(kc, from, num_dests, dests, flags, NULL, NULL, &job);

	cr_assert(r == 0, "kcopyd_submit: %d", r);
	kcopyd_job_wait(job);
	cr_assert(kcopyd_job_result(job, &result) == 0);
	kcopyd_job_release(job);
	return result;
}

static void setup(void)
{
	fake_io_init(&fake);
	kc = NULL;
}

static void teardown(void)
{
	kcopyd_client_destroy(kc);
	pthread_mutex_destroy(&fake.lock);
}

TestSuite(engine, .init = setup, .fini = teardown, .timeout = 30);

/* ---- splitting --------------------------------------------------------- */

Test(engine, splits_into_subjobs_and_reads_each_chunk_once)
{
	struct kcopyd_dev *src = memdev(4 * MiB, 1), *d0 = memdev(4 * MiB, 0), *d1 = memdev(4 * MiB, 0),
			  *d2 = memdev(4 * MiB, 0);
	/* 1 MiB + 4 KiB from sector 8: four 256 KiB chunks and one of 4 KiB. */
	struct io_region from = { src, 8, SECTORS(MiB + 4096) };
	struct io_region dests[3] = { { d0, 0, from.count }, { d1, 2048, from.count }, { d2, 4096, from.count } };
	static struct fake_log_entry log[256];
	unsigned int count, index, reads = 0, writes = 0;
	struct kcopyd_result result;

	new_client(1024, 512, 4);
	result = run_job(&from, 3, dests, 0);
	cr_assert(result.read_err == 0 && result.write_err == 0 && result.error == 0,
		  "read_err %d write_err %#x error %d", result.read_err, result.write_err, result.error);
	cr_assert(result.sectors_done == from.count, "done %llu of %llu",
		  (unsigned long long)result.sectors_done, (unsigned long long)from.count);

	count = fake_io_log(&fake, log, 256);
	for (index = 0; index < count; index++) {
		cr_assert(log[index].count <= 512, "I/O %u is %llu sectors, above the sub-job size", index,
			  (unsigned long long)log[index].count);
		if (log[index].op == KCOPYD_IO_READ)
			reads++;
		else
			writes++;
	}
	cr_assert(reads == 5, "reads: %u, expected 5 (one per chunk)", reads);
	cr_assert(writes == 15, "writes: %u, expected 15 (5 chunks x 3 destinations)", writes);
	for (index = 0; index < 3; index++)
		cr_assert(same_bytes(src, from.sector, dests[index].bdev, dests[index].sector, from.count),
			  "destination %u differs from the source", index);
	cr_assert(all_zero(d1, 0, 2048) && all_zero(d1, 2048 + from.count, SECTORS(4 * MiB) - 2048 - from.count),
		  "bytes outside destination 1's region were written");
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
	kcopyd_dev_close(d2);
}

Test(engine, zero_config_fields_mean_the_documented_defaults)
{
	struct kcopyd_stats stats;

	new_client(16384, 0, 0);
	kcopyd_client_stats(kc, &stats);
	cr_assert(stats.subjob_sectors == KCOPYD_DEFAULT_SUBJOB_SECTORS && stats.subjob_sectors == 2048,
		  "sub-job of %u sectors, expected the documented 2048 (1 MiB)", stats.subjob_sectors);
	cr_assert(stats.depth == KCOPYD_DEFAULT_DEPTH && stats.depth == 8, "depth %u, expected the documented 8",
		  stats.depth);
}

Test(engine, budget_below_one_subjob_makes_subjobs_smaller)
{
	struct kcopyd_dev *src = memdev(2 * MiB, 2), *dst = memdev(2 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, to = { dst, 0, SECTORS(2 * MiB) };
	struct kcopyd_result result;
	struct kcopyd_stats stats;

	new_client(2, 0, 0);
	kcopyd_client_stats(kc, &stats);
	cr_assert(stats.subjob_sectors == 16, "sub-job of %u sectors with a 2-page budget, expected 16",
		  stats.subjob_sectors);
	result = run_job(&from, 1, &to, 0);
	cr_assert(result.error == 0, "error %d", result.error);
	cr_assert(same_bytes(src, 0, dst, 0, from.count));
	kcopyd_client_stats(kc, &stats);
	cr_assert(stats.pages_peak <= 2, "peak %u pages, budget 2", stats.pages_peak);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* ---- the page budget ------------------------------------------------- */

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static unsigned int done_count;
static unsigned int done_errors;

static void count_done(int read_err, unsigned int write_err, void *context)
{
	pthread_mutex_lock(&done_lock);
	done_count++;
	if (read_err || write_err)
		done_errors++;
	pthread_cond_broadcast(&done_cond);
	pthread_mutex_unlock(&done_lock);
}

static void wait_done(unsigned int expected)
{
	pthread_mutex_lock(&done_lock);
	while (done_count < expected)
		pthread_cond_wait(&done_cond, &done_lock);
	pthread_mutex_unlock(&done_lock);
}

Test(engine, many_jobs_wait_for_buffers_and_never_exceed_the_budget)
{
	enum { JOBS = 200, JOB_SECTORS = 2048 };
	struct kcopyd_dev *src = memdev(JOB_SECTORS * 512ull, 3), *dst = memdev(JOBS * JOB_SECTORS * 512ull, 0);
	struct kcopyd_stats stats;
	unsigned int index;

	done_count = done_errors = 0;
	/* 300 pages and 128-page sub-jobs: two buffers for 200 jobs of 1 MiB. */
	new_client(300, 1024, 8);
	for (index = 0; index < JOBS; index++) {
		struct io_region from = { src, 0, JOB_SECTORS }, to = { dst, (uint64_t)index * JOB_SECTORS, JOB_SECTORS };

		cr_assert(kcopyd_copy(kc, &from, 1, &to, 0, count_done, NULL) == 0, "job %u refused", index);
	}
	wait_done(JOBS);
	cr_assert(done_errors == 0, "%u jobs failed", done_errors);
	/* jobs_active drops just after the callback returns. */
	for (index = 0; index < 1000; index++) {
		kcopyd_client_stats(kc, &stats);
		if (stats.jobs_active == 0)
			break;
		usleep(1000);
	}
	cr_assert(stats.pages_peak <= 300 && stats.pages_peak > 0, "peak %u pages, budget 300", stats.pages_peak);
	cr_assert(stats.pages_in_use == 0, "%u pages still in use", stats.pages_in_use);
	cr_assert(stats.jobs_total == JOBS && stats.jobs_active == 0, "total %llu active %llu",
		  (unsigned long long)stats.jobs_total, (unsigned long long)stats.jobs_active);
	cr_assert(stats.sectors_read == (uint64_t)JOBS * JOB_SECTORS);
	for (index = 0; index < JOBS; index++)
		cr_assert(same_bytes(src, 0, dst, (uint64_t)index * JOB_SECTORS, JOB_SECTORS), "job %u", index);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* ---- errors -------------------------------------------------------- */

Test(engine, read_error_without_ignore_stops_and_writes_nothing_above_it)
{
	struct kcopyd_dev *src = memdev(4 * MiB, 4), *d0 = memdev(4 * MiB, 0), *d1 = memdev(4 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(4 * MiB) };
	struct io_region dests[2] = { { d0, 0, from.count }, { d1, 0, from.count } };
	static struct fake_log_entry log[1024];
	unsigned int count, index;
	struct kcopyd_result result;

	new_client(4096, 256, 8);
	fake.reverse = true;
	/* The chunk at sectors 2048..2303 fails to read. */
	fake_io_fail(&fake, src, KCOPYD_IO_READ, 2100, 1, -EIO);
	result = run_job(&from, 2, dests, 0);
	cr_assert(result.read_err == 1 && result.write_err == 0, "read_err %d write_err %#x", result.read_err,
		  result.write_err);
	cr_assert(result.error == -EIO && result.read.error == -EIO, "error %d read.error %d", result.error,
		  result.read.error);
	cr_assert(result.read.sector == 2048 && result.read.count == 256, "failing range %llu+%llu, expected 2048+256",
		  (unsigned long long)result.read.sector, (unsigned long long)result.read.count);
	cr_assert(result.sectors_done == 2048, "done %llu, expected the 2048 sectors below the failure",
		  (unsigned long long)result.sectors_done);
	count = fake_io_log(&fake, log, 1024);
	for (index = 0; index < count; index++)
		cr_assert(log[index].op == KCOPYD_IO_READ || log[index].sector < 2048,
			  "write at sector %llu, above the failed chunk", (unsigned long long)log[index].sector);
	cr_assert(same_bytes(src, 0, d0, 0, 2048) && same_bytes(src, 0, d1, 0, 2048), "chunks below the failure");
	cr_assert(all_zero(d0, 2048, from.count - 2048) && all_zero(d1, 2048, from.count - 2048));
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
}

/* Submit, wait, and return the job's checkpoint at the end (and its result). */
static uint64_t run_job_checkpoint(const struct io_region *from, unsigned int num_dests,
				   const struct io_region *dests, unsigned int flags, struct kcopyd_result *result)
{
	struct kcopyd_job *job;
	uint64_t checkpoint = UINT64_MAX;
	int r = kcopyd_submit(kc, from, num_dests, dests, flags, NULL, NULL, &job);

	cr_assert(r == 0, "kcopyd_submit: %d", r);
	kcopyd_job_wait(job);
	cr_assert(kcopyd_job_result(job, result) == 0);
	kcopyd_job_checkpoint(job, &checkpoint);
	kcopyd_job_release(job);
	return checkpoint;
}

/*
 * The checkpoint is the prefix written everywhere without a gap: all of a
 * clean job (completions in reverse order), up to the first failed sub-job
 * with ignore_error (while progress counts them all), and up to a failed
 * read without it.
 */
Test(engine, checkpoint_is_the_prefix_written_everywhere)
{
	struct kcopyd_dev *src = memdev(2 * MiB, 21), *d0 = memdev(2 * MiB, 0), *d1 = memdev(2 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(2 * MiB) };
	struct io_region dests[2] = { { d0, 0, from.count }, { d1, 0, from.count } };
	struct kcopyd_result result;
	uint64_t checkpoint;

	new_client(4096, 256, 8);
	fake.reverse = true;
	checkpoint = run_job_checkpoint(&from, 2, dests, 0, &result);
	cr_assert(checkpoint == from.count, "clean copy: checkpoint %llu, expected all %llu sectors",
		  (unsigned long long)checkpoint, (unsigned long long)from.count);

	fake_io_fail(&fake, d1, KCOPYD_IO_WRITE, 800, 8, -EIO);	/* sub-job 3 (768..1023) on dest 1 */
	checkpoint = run_job_checkpoint(&from, 2, dests, KCOPYD_IGNORE_ERROR, &result);
	cr_assert(result.write_err == 2 && result.sectors_done == from.count,
		  "ignore_error: write_err %#x, done %llu", result.write_err, (unsigned long long)result.sectors_done);
	cr_assert(checkpoint == 768, "ignore_error, dest 1 failing at sub-job 3: checkpoint %llu, expected 768",
		  (unsigned long long)checkpoint);

	pthread_mutex_lock(&fake.lock);
	fake.rule_count = 0;
	pthread_mutex_unlock(&fake.lock);
	fake_io_fail(&fake, src, KCOPYD_IO_READ, 1300, 1, -EIO);	/* sub-job 5 (1280..1535) */
	checkpoint = run_job_checkpoint(&from, 2, dests, 0, &result);
	cr_assert(result.read_err == 1 && result.sectors_done == 1280, "read error: read_err %d done %llu",
		  result.read_err, (unsigned long long)result.sectors_done);
	cr_assert(checkpoint == 1280, "read error at sub-job 5: checkpoint %llu, expected 1280",
		  (unsigned long long)checkpoint);
	cr_assert(kcopyd_dev_sync(d0) == 0, "kcopyd_dev_sync on a memfd");
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
}

Test(engine, read_error_with_ignore_writes_zeros_and_goes_on)
{
	struct kcopyd_dev *src = memdev(2 * MiB, 5), *dst = memdev(2 * MiB, 6);
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, to = { dst, 0, from.count };
	struct kcopyd_result result;

	new_client(4096, 256, 8);
	fake_io_fail(&fake, src, KCOPYD_IO_READ, 512, 256, -EIO);
	fake_io_fail(&fake, src, KCOPYD_IO_READ, 3840, 1, -ENXIO);
	result = run_job(&from, 1, &to, KCOPYD_IGNORE_ERROR);
	cr_assert(result.read_err == 1 && result.write_err == 0);
	cr_assert(result.error == -EIO || result.error == -ENXIO, "error %d", result.error);
	cr_assert(result.read.sector == 512 && result.read.count == 256 && result.read.error == -EIO,
		  "lowest failing range %llu+%llu (%d), expected 512+256 (-EIO)",
		  (unsigned long long)result.read.sector, (unsigned long long)result.read.count, result.read.error);
	cr_assert(result.sectors_done == from.count, "done %llu of %llu", (unsigned long long)result.sectors_done,
		  (unsigned long long)from.count);
	cr_assert(all_zero(dst, 512, 256) && all_zero(dst, 3840, 256), "failed chunks must be written as zeros");
	cr_assert(same_bytes(src, 0, dst, 0, 512) && same_bytes(src, 768, dst, 768, 3840 - 768) &&
		  same_bytes(src, 4096 - 0, dst, 4096, 0));
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

Test(engine, write_error_sets_only_that_bit_and_other_destinations_get_the_chunk)
{
	struct kcopyd_dev *src = memdev(2 * MiB, 7), *d[3];
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, dests[3];
	struct kcopyd_result result;
	unsigned int index;

	for (index = 0; index < 3; index++) {
		d[index] = memdev(2 * MiB, 0);
		dests[index] = (struct io_region){ d[index], 0, from.count };
	}
	new_client(4096, 256, 8);
	fake_io_fail(&fake, d[1], KCOPYD_IO_WRITE, 1024, 8, -EIO);
	result = run_job(&from, 3, dests, 0);
	cr_assert(result.read_err == 0 && result.write_err == 0x2, "read_err %d write_err %#x, expected 0 and 0x2",
		  result.read_err, result.write_err);
	cr_assert(result.write[1].error == -EIO && result.write[1].sector == 1024 && result.write[1].count == 256,
		  "write[1] %d at %llu+%llu", result.write[1].error, (unsigned long long)result.write[1].sector,
		  (unsigned long long)result.write[1].count);
	cr_assert(result.write[0].error == 0 && result.write[2].error == 0);
	/* The failing chunk still reached the other two destinations. */
	cr_assert(same_bytes(src, 0, d[0], 0, 1280) && same_bytes(src, 0, d[2], 0, 1280));

	kcopyd_client_destroy(kc);
	kc = NULL;
	new_client(4096, 256, 8);
	fake.rule_count = 0;
	fake_io_fail(&fake, d[1], KCOPYD_IO_WRITE, 1024, 8, -EIO);
	for (index = 0; index < 3; index++)
		cr_assert(ftruncate(kcopyd_file_fd(d[index]), 0) == 0 && ftruncate(kcopyd_file_fd(d[index]), 2 * MiB) == 0);
	result = run_job(&from, 3, dests, KCOPYD_IGNORE_ERROR);
	cr_assert(result.write_err == 0x2, "write_err %#x with ignore_error", result.write_err);
	cr_assert(same_bytes(src, 0, d[0], 0, from.count) && same_bytes(src, 0, d[2], 0, from.count),
		  "with ignore_error the healthy destinations are complete");
	for (index = 0; index < 3; index++)
		kcopyd_dev_close(d[index]);
	kcopyd_dev_close(src);
}

/* ---- ordering --------------------------------------------------------- */

static void check_writes_ascend(unsigned int flags)
{
	struct kcopyd_dev *src = memdev(4 * MiB, 8), *d0 = memdev(4 * MiB, 0), *d1 = memdev(4 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(4 * MiB) };
	struct io_region dests[2] = { { d0, 0, from.count }, { d1, 0, from.count } };
	static struct fake_log_entry log[1024];
	uint64_t next[2] = { 0, 0 };
	unsigned int count, index;
	struct kcopyd_result result;

	new_client(4096, 128, 16);
	fake.reverse = true;	/* completions come back newest first */
	result = run_job(&from, 2, dests, flags);
	cr_assert(result.error == 0);
	count = fake_io_log(&fake, log, 1024);
	for (index = 0; index < count; index++) {
		unsigned int dest_index = log[index].dev == d0 ? 0 : 1;

		if (log[index].op != KCOPYD_IO_WRITE)
			continue;
		cr_assert(log[index].sector == next[dest_index], "flags %#x: write %u to destination %u at %llu, expected %llu",
			  flags, index, dest_index, (unsigned long long)log[index].sector,
			  (unsigned long long)next[dest_index]);
		next[dest_index] += log[index].count;
	}
	cr_assert(next[0] == from.count && next[1] == from.count);
	cr_assert(same_bytes(src, 0, d0, 0, from.count) && same_bytes(src, 0, d1, 0, from.count));
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
}

Test(engine, writes_are_issued_in_ascending_order)
{
	check_writes_ascend(0);
}

Test(engine, write_seq_issues_in_order)
{
	check_writes_ascend(KCOPYD_WRITE_SEQ);
}

/* ---- zero ------------------------------------------------------------- */

Test(engine, zero_writes_zeros_to_every_destination)
{
	struct kcopyd_dev *d0 = memdev(2 * MiB, 9), *d1 = memdev(2 * MiB, 10);
	struct io_region dests[2] = { { d0, 8, 2048 }, { d1, 1024, 2048 } };
	struct kcopyd_result result;

	new_client(64, 0, 0);
	result = run_job(NULL, 2, dests, 0);
	cr_assert(result.read_err == 0 && result.write_err == 0 && result.sectors_done == 2048);
	cr_assert(all_zero(d0, 8, 2048) && all_zero(d1, 1024, 2048));
	cr_assert(!all_zero(d0, 0, 8) && !all_zero(d0, 2056, 8), "bytes around the region must stay");
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
}

/* ---- validation ------------------------------------------------------- */

Test(engine, validation_refuses_each_bad_request_with_its_errno)
{
	struct kcopyd_dev *src = memdev(MiB, 11), *dst = memdev(MiB, 0), *aligned4k = memdev(MiB, 0),
			  *readonly = memdev(MiB, 0);
	struct io_region from = { src, 0, 64 }, dests[KCOPYD_MAX_REGIONS + 1];
	char why[256];
	unsigned int index;
	const struct {
		const char *name;
		struct io_region from;
		unsigned int num_dests;
		struct io_region dests[2];
		unsigned int flags;
		int expected;
	} cases[] = {
		{ "no destination", { src, 0, 64 }, 0, { { dst, 0, 64 } }, 0, -EINVAL },
		{ "count differs", { src, 0, 64 }, 1, { { dst, 0, 72 } }, 0, -EINVAL },
		{ "source past the end", { src, 2040, 16 }, 1, { { dst, 0, 16 } }, 0, -ERANGE },
		{ "destination past the end", { src, 0, 16 }, 1, { { dst, 2047, 16 } }, 0, -ERANGE },
		{ "sector overflow", { src, UINT64_MAX - 2, 8 }, 1, { { dst, 0, 8 } }, 0, -ERANGE },
		{ "misaligned sector", { src, 0, 8 }, 1, { { aligned4k, 1, 8 } }, 0, -EINVAL },
		{ "misaligned count", { src, 0, 4 }, 1, { { aligned4k, 0, 4 } }, 0, -EINVAL },
		{ "overlaps the source", { src, 0, 64 }, 1, { { src, 32, 64 } }, 0, -EINVAL },
		{ "destinations overlap", { src, 0, 64 }, 2, { { dst, 0, 64 }, { dst, 63, 64 } }, 0, -EINVAL },
		{ "read-only destination", { src, 0, 64 }, 1, { { readonly, 0, 64 } }, 0, -EBADF },
		{ "unknown flag", { src, 0, 64 }, 1, { { dst, 0, 64 } }, 1u << 7, -EINVAL },
		{ "no device", { NULL, 0, 64 }, 1, { { dst, 0, 64 } }, 0, -EINVAL },
	};

	aligned4k->block_size = 4096;	/* as a 4Kn device would say */
	readonly->writable = false;
	new_client(64, 0, 0);
	for (index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		struct io_region case_from = cases[index].from;
		int r = kcopyd_validate(&case_from, cases[index].num_dests, cases[index].dests, cases[index].flags, why,
					sizeof(why));

		cr_assert(r == cases[index].expected, "%s: kcopyd_validate returned %d, expected %d (%s)",
			  cases[index].name, r, cases[index].expected, why);
		cr_assert(why[0] != '\0', "%s: no reason given", cases[index].name);
		r = kcopyd_copy(kc, &case_from, cases[index].num_dests, (struct io_region *)cases[index].dests,
				cases[index].flags, NULL, NULL);
		cr_assert(r == cases[index].expected, "%s: kcopyd_copy returned %d, expected %d", cases[index].name, r,
			  cases[index].expected);
	}
	for (index = 0; index <= KCOPYD_MAX_REGIONS; index++)
		dests[index] = (struct io_region){ dst, index * 64ull, 64 };
	cr_assert(kcopyd_copy(kc, &from, KCOPYD_MAX_REGIONS + 1, dests, 0, NULL, NULL) == -EINVAL,
		  "33 destinations must be refused");
	cr_assert(kcopyd_validate(&from, KCOPYD_MAX_REGIONS, dests, 0, why, sizeof(why)) == 0,
		  "32 destinations must be accepted: %s", why);
	/* Adjacent regions on the same file are fine. */
	dests[0] = (struct io_region){ src, 64, 64 };
	cr_assert(kcopyd_validate(&from, 1, dests, 0, why, sizeof(why)) == 0, "adjacent: %s", why);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
	kcopyd_dev_close(aligned4k);
	readonly->writable = true;
	kcopyd_dev_close(readonly);
}

/* ---- callbacks -------------------------------------------------------- */

static pthread_t callback_thread;
static atomic_int callbacks_inside;
static atomic_int callbacks_overlapped;
static atomic_int callbacks_on_other_threads;

static void record_thread(int read_err, unsigned int write_err, void *context)
{
	pthread_t *submitter = context;

	if (atomic_fetch_add(&callbacks_inside, 1) != 0)
		atomic_fetch_add(&callbacks_overlapped, 1);
	pthread_mutex_lock(&done_lock);
	if (!done_count)
		callback_thread = pthread_self();
	else if (!pthread_equal(callback_thread, pthread_self()))
		atomic_fetch_add(&callbacks_on_other_threads, 1);
	if (pthread_equal(*submitter, pthread_self()))
		atomic_fetch_add(&callbacks_on_other_threads, 1000);
	pthread_mutex_unlock(&done_lock);
	usleep(100);
	atomic_fetch_sub(&callbacks_inside, 1);
	count_done(read_err, write_err, NULL);
}

Test(engine, callbacks_run_one_at_a_time_on_one_thread_never_in_submit)
{
	struct kcopyd_dev *src = memdev(MiB, 12), *dst = memdev(64 * MiB, 0);
	pthread_t self = pthread_self();
	unsigned int index;

	done_count = done_errors = 0;
	new_client(256, 64, 4);
	for (index = 0; index < 100; index++) {
		struct io_region from = { src, 0, index % 3 ? 64 : 0 }, to = { dst, index * 64ull, from.count };

		cr_assert(kcopyd_copy(kc, &from, 1, &to, 0, record_thread, &self) == 0);
	}
	wait_done(100);
	cr_assert(atomic_load(&callbacks_overlapped) == 0, "%d callbacks ran at the same time",
		  atomic_load(&callbacks_overlapped));
	cr_assert(atomic_load(&callbacks_on_other_threads) == 0, "callbacks ran on other threads: %d",
		  atomic_load(&callbacks_on_other_threads));
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

struct chain {
	struct io_region from, to;
	unsigned int left;
};

static void resubmit(int read_err, unsigned int write_err, void *context)
{
	struct chain *chain = context;

	if (chain->left-- > 1) {
		chain->to.sector += chain->to.count;
		cr_assert(kcopyd_copy(kc, &chain->from, 1, &chain->to, 0, resubmit, chain) == 0);
		return;
	}
	count_done(read_err, write_err, NULL);
}

Test(engine, a_callback_may_submit_new_jobs)
{
	struct kcopyd_dev *src = memdev(MiB, 13), *dst = memdev(16 * MiB, 0);
	struct chain chain = { { src, 0, 2048 }, { dst, 0, 2048 }, 16 };
	unsigned int index;

	done_count = done_errors = 0;
	new_client(64, 0, 0);
	cr_assert(kcopyd_copy(kc, &chain.from, 1, &chain.to, 0, resubmit, &chain) == 0);
	wait_done(1);
	for (index = 0; index < 16; index++)
		cr_assert(same_bytes(src, 0, dst, index * 2048ull, 2048), "chained job %u", index);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

Test(engine, zero_count_completes_at_once_without_error)
{
	struct kcopyd_dev *src = memdev(MiB, 14), *dst = memdev(MiB, 0);
	struct io_region from = { src, 0, 0 }, to = { dst, 0, 0 };
	pthread_t self = pthread_self();
	struct kcopyd_stats stats;

	done_count = done_errors = 0;
	new_client(64, 0, 0);
	cr_assert(kcopyd_copy(kc, &from, 1, &to, 0, record_thread, &self) == 0);
	wait_done(1);
	cr_assert(done_errors == 0 && atomic_load(&callbacks_on_other_threads) == 0);
	kcopyd_client_stats(kc, &stats);
	cr_assert(stats.sectors_read == 0 && stats.sectors_written == 0);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* ---- cancel, progress, destroy --------------------------------------- */

Test(engine, cancel_stops_a_running_job_and_keeps_its_progress)
{
	struct kcopyd_dev *src = memdev(8 * MiB, 15), *dst = memdev(8 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(8 * MiB) }, to = { dst, 0, from.count };
	struct kcopyd_result result;
	struct kcopyd_job *job;
	uint64_t done, total;
	unsigned int spins = 0;

	new_client(1024, 256, 4);
	fake.hold = true;
	cr_assert(kcopyd_submit(kc, &from, 1, &to, 0, NULL, NULL, &job) == 0);
	while (fake_io_held(&fake) < 4 && spins++ < 10000)
		usleep(100);
	cr_assert(fake_io_held(&fake) == 4, "%u I/Os held, expected the job's depth of 4", fake_io_held(&fake));
	cr_assert(kcopyd_job_result(job, &result) == -EINPROGRESS);
	kcopyd_job_progress(job, &done, &total);
	cr_assert(done == 0 && total == from.count, "progress %llu/%llu", (unsigned long long)done,
		  (unsigned long long)total);
	kcopyd_job_checkpoint(job, &done);
	cr_assert(done == 0, "checkpoint %llu with every I/O held", (unsigned long long)done);
	cr_assert(kcopyd_job_cancel(job) == 0);
	cr_assert(kcopyd_job_cancel(job) == -EALREADY, "a second cancel");
	fake_io_release(&fake);
	kcopyd_job_wait(job);
	cr_assert(kcopyd_job_result(job, &result) == 0);
	cr_assert(result.cancelled == 1, "cancelled %d", result.cancelled);
	cr_assert(result.read_err == 0 && result.write_err == 0 && result.error == 0);
	/* The four sub-jobs in flight finished; nothing after them started. */
	cr_assert(result.sectors_done == 1024, "done %llu, expected the 1024 sectors in flight",
		  (unsigned long long)result.sectors_done);
	cr_assert(same_bytes(src, 0, dst, 0, 1024) && all_zero(dst, 1024, from.count - 1024));
	kcopyd_job_checkpoint(job, &done);
	cr_assert(done == 1024, "checkpoint %llu after the cancel, expected the 1024 sectors written",
		  (unsigned long long)done);
	cr_assert(kcopyd_job_cancel(job) == -EALREADY, "cancel after the end");
	kcopyd_job_release(job);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

static atomic_int destroyed_callbacks;

static void count_destroyed(int read_err, unsigned int write_err, void *context)
{
	usleep(1000);
	atomic_fetch_add(&destroyed_callbacks, 1);
}

Test(engine, destroy_waits_for_every_job_and_callback)
{
	struct kcopyd_dev *src = memdev(MiB, 16), *dst = memdev(32 * MiB, 0);
	unsigned int index;

	new_client(64, 0, 0);
	for (index = 0; index < 32; index++) {
		struct io_region from = { src, 0, 2048 }, to = { dst, index * 2048ull, 2048 };

		cr_assert(kcopyd_copy(kc, &from, 1, &to, 0, count_destroyed, NULL) == 0);
	}
	kcopyd_client_destroy(kc);
	kc = NULL;
	cr_assert(atomic_load(&destroyed_callbacks) == 32, "%d callbacks ran before destroy returned, expected 32",
		  atomic_load(&destroyed_callbacks));
	for (index = 0; index < 32; index++)
		cr_assert(same_bytes(src, 0, dst, index * 2048ull, 2048));
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

Test(engine, backend_that_takes_one_at_a_time_still_completes)
{
	struct kcopyd_dev *src = memdev(2 * MiB, 17), *d[4];
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, dests[4];
	struct kcopyd_result result;
	unsigned int index;

	for (index = 0; index < 4; index++) {
		d[index] = memdev(2 * MiB, 0);
		dests[index] = (struct io_region){ d[index], 0, from.count };
	}
	new_client(512, 128, 8);
	fake.max_submit = 1;
	result = run_job(&from, 4, dests, 0);
	cr_assert(result.error == 0);
	for (index = 0; index < 4; index++) {
		cr_assert(same_bytes(src, 0, d[index], 0, from.count), "destination %u", index);
		kcopyd_dev_close(d[index]);
	}
	kcopyd_dev_close(src);
}

Test(engine, client_create_refuses_bad_config)
{
	struct kcopyd_config zero_pages = { .num_pages = 0 }, tiny_subjob = { .num_pages = 8, .subjob_sectors = 4 };
	struct kcopyd_client *client;

	cr_assert(kcopyd_client_create_ops(&zero_pages, &fake_io_ops, &fake, &client) == -EINVAL);
	cr_assert(kcopyd_client_create_ops(&tiny_subjob, &fake_io_ops, &fake, &client) == -EINVAL);
	cr_assert(kcopyd_client_create(0, &client) == -EINVAL);
	cr_assert_str_eq(kcopyd_version(), PACKAGE_VERSION);
}

/* ---- start events ----------------------------------------------------- */

struct start_record {
	atomic_int started;
	atomic_int finished;
	atomic_int started_after_finish;
};

static void record_start(void *context)
{
	struct start_record *record = context;

	if (atomic_load(&record->finished))
		atomic_fetch_add(&record->started_after_finish, 1);
	atomic_fetch_add(&record->started, 1);
}

static void record_finish(int read_err, unsigned int write_err, void *context)
{
	struct start_record *record = context;

	atomic_fetch_add(&record->finished, 1);
	count_done(read_err, write_err, NULL);
}

Test(engine, start_fn_runs_once_per_started_job_before_its_completion)
{
	struct kcopyd_dev *src = memdev(MiB, 18), *dst = memdev(32 * MiB, 0);
	struct kcopyd_config config = { .num_pages = 64, .subjob_sectors = 128, .start_fn = record_start };
	static struct start_record records[32];
	unsigned int index;

	done_count = done_errors = 0;
	cr_assert(kcopyd_client_create_ops(&config, &fake_io_ops, &fake, &kc) == 0);
	for (index = 0; index < 32; index++) {
		/* Every fourth job has a count of 0: it never starts. */
		struct io_region from = { src, 0, index % 4 ? 2048 : 0 }, to = { dst, index * 2048ull, from.count };

		cr_assert(kcopyd_copy(kc, &from, 1, &to, 0, record_finish, &records[index]) == 0);
	}
	wait_done(32);
	for (index = 0; index < 32; index++) {
		int expected = index % 4 ? 1 : 0;

		cr_assert(atomic_load(&records[index].started) == expected, "job %u: start_fn ran %d times, expected %d",
			  index, atomic_load(&records[index].started), expected);
		cr_assert(atomic_load(&records[index].started_after_finish) == 0, "job %u started after it finished",
			  index);
	}
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* ---- sparse copies: zero ranges, extents, offload --------------------- */

/* A memfd device that may copy_file_range (memdev() takes that away). */
static struct kcopyd_dev *memdev_offload(uint64_t bytes, uint64_t seed)
{
	struct kcopyd_dev *dev = memdev(bytes, seed);

	atomic_fetch_or(&dev->caps, KCOPYD_CAP_COPY);
	return dev;
}

/* Make sectors [sector, sector + count) of a memfd device a hole. */
static void punch(struct kcopyd_dev *dev, uint64_t sector, uint64_t count)
{
	cr_assert(fallocate(kcopyd_file_fd(dev), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			    (off_t)(sector << KCOPYD_SECTOR_SHIFT), (off_t)(count << KCOPYD_SECTOR_SHIFT)) == 0,
		  "punch %llu+%llu: %s", (unsigned long long)sector, (unsigned long long)count, strerror(errno));
}

static void new_sparse_client(unsigned int subjob_sectors, unsigned int sparse_sectors)
{
	struct kcopyd_config config = { .num_pages = 1024, .subjob_sectors = subjob_sectors, .depth = 4,
					.sparse_sectors = sparse_sectors };
	int r = kcopyd_client_create_ops(&config, &fake_io_ops, &fake, &kc);

	cr_assert(r == 0, "kcopyd_client_create_ops: %d", r);
}

/* Sectors of @op on @dev in the fake's log, and how many such I/Os. */
static uint64_t logged(enum kcopyd_io_op op, const struct kcopyd_dev *dev, unsigned int *ios)
{
	static struct fake_log_entry log[4096];
	unsigned int count = fake_io_log(&fake, log, 4096), index, n = 0;
	uint64_t sectors = 0;

	for (index = 0; index < count; index++)
		if (log[index].op == op && log[index].dev == dev) {
			sectors += log[index].count;
			n++;
		}
	if (ios)
		*ios = n;
	return sectors;
}

/* No read of @dev touches sectors [sector, sector + count). */
static void expect_never_read(const struct kcopyd_dev *dev, uint64_t sector, uint64_t count, const char *what)
{
	static struct fake_log_entry log[4096];
	unsigned int n = fake_io_log(&fake, log, 4096), index;

	for (index = 0; index < n; index++)
		cr_assert(!(log[index].op == KCOPYD_IO_READ && log[index].dev == dev &&
			    log[index].sector < sector + count && sector < log[index].sector + log[index].count),
			  "%s: read %llu+%llu touches the hole %llu+%llu", what,
			  (unsigned long long)log[index].sector, (unsigned long long)log[index].count,
			  (unsigned long long)sector, (unsigned long long)count);
}

Test(engine, zero_job_zeroes_with_the_zero_operation)
{
	struct kcopyd_dev *d0 = memdev(2 * MiB, 9);
	struct io_region to = { d0, 8, 2048 };
	struct kcopyd_result result;
	unsigned int zero_ios;

	new_client(64, 0, 0);
	result = run_job(NULL, 1, &to, 0);
	cr_assert(result.write_err == 0 && result.sectors_done == 2048);
	cr_assert(logged(KCOPYD_IO_ZERO, d0, &zero_ios) == 2048 && logged(KCOPYD_IO_WRITE, d0, NULL) == 0,
		  "zero %llu sectors in %u ops, write %llu: expected all 2048 zeroed, none written",
		  (unsigned long long)logged(KCOPYD_IO_ZERO, d0, NULL), zero_ios,
		  (unsigned long long)logged(KCOPYD_IO_WRITE, d0, NULL));
	cr_assert(result.counts.sectors_zero == 2048 && result.counts.sectors_data == 0,
		  "counts: zero %llu data %llu", (unsigned long long)result.counts.sectors_zero,
		  (unsigned long long)result.counts.sectors_data);
	cr_assert(all_zero(d0, 8, 2048) && !all_zero(d0, 0, 8) && !all_zero(d0, 2056, 8));
	kcopyd_dev_close(d0);
}

/*
 * How the driver is asked to zero: a zero job asks a block device for the
 * zeroing that keeps its blocks (KCOPYD_ZERO_DEVICE_KEEP, as blkdiscard -z);
 * a copy's zero ranges may be unmapped (neither flag); KCOPYD_ALLOCATED
 * keeps allocation in both.
 */
Test(engine, zero_jobs_ask_devices_to_keep_blocks_and_copies_may_unmap)
{
	struct kcopyd_dev *src = memdev(1 * MiB, 40), *dst = memdev(1 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(1 * MiB) }, to = { dst, 0, from.count };
	static struct fake_log_entry log[1024];
	const struct {
		const struct io_region *from;
		unsigned int flags, want;
	} cases[] = {
		{ NULL, 0, KCOPYD_ZERO_DEVICE_KEEP },
		{ NULL, KCOPYD_ALLOCATED, KCOPYD_ZERO_ALLOCATE },
		{ &from, 0, 0 },
		{ &from, KCOPYD_ALLOCATED, KCOPYD_ZERO_ALLOCATE },
	};
	unsigned int first, count, index, zeros;

	punch(src, 0, from.count);
	new_sparse_client(512, 64);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		first = fake_io_log(&fake, log, 1024);	/* this job's entries follow */
		cr_assert(run_job(cases[c].from, 1, &to, cases[c].flags).write_err == 0);
		count = fake_io_log(&fake, log, 1024);
		for (index = first, zeros = 0; index < count; index++) {
			if (log[index].op != KCOPYD_IO_ZERO || log[index].dev != dst)
				continue;
			zeros++;
			cr_assert(log[index].zero_flags == cases[c].want, "case %zu: zero_flags 0x%x, expected 0x%x", c,
				  log[index].zero_flags, cases[c].want);
		}
		cr_assert(zeros > 0, "case %zu: no zero operation", c);
	}
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* A device that refuses to zero: the same range is written from the zero page, the job does not fail. */
Test(engine, zero_refused_is_written_from_the_zero_page)
{
	struct kcopyd_dev *d0 = memdev(2 * MiB, 9), *d1 = memdev(2 * MiB, 10);
	struct io_region dests[2] = { { d0, 0, 2048 }, { d1, 1024, 2048 } };
	struct kcopyd_result result;
	struct kcopyd_stats stats;

	new_client(64, 0, 0);
	fake_io_fail(&fake, d1, KCOPYD_IO_ZERO, 0, UINT64_MAX / 2, -EOPNOTSUPP);
	result = run_job(NULL, 2, dests, 0);
	cr_assert(result.write_err == 0 && result.error == 0 && result.sectors_done == 2048,
		  "write_err %#x error %d done %llu", result.write_err, result.error,
		  (unsigned long long)result.sectors_done);
	cr_assert(logged(KCOPYD_IO_WRITE, d1, NULL) == 2048 && logged(KCOPYD_IO_WRITE, d0, NULL) == 0,
		  "writes: %llu to the refusing dest (expected 2048), %llu to the other (expected 0)",
		  (unsigned long long)logged(KCOPYD_IO_WRITE, d1, NULL),
		  (unsigned long long)logged(KCOPYD_IO_WRITE, d0, NULL));
	kcopyd_client_stats(kc, &stats);
	cr_assert(stats.zero_fallbacks >= 1 && stats.sectors_zero == 4096 && stats.sectors_written == 4096,
		  "stats: zero_fallbacks %llu sectors_zero %llu written %llu",
		  (unsigned long long)stats.zero_fallbacks, (unsigned long long)stats.sectors_zero,
		  (unsigned long long)stats.sectors_written);
	cr_assert(all_zero(d0, 0, 2048) && all_zero(d1, 1024, 2048) && !all_zero(d1, 0, 8));
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
}

/* A zero operation that fails for real is a write error of that destination, with its range. */
Test(engine, zero_failing_with_enospc_is_a_write_error)
{
	struct kcopyd_dev *d0 = memdev(2 * MiB, 9), *d1 = memdev(2 * MiB, 10);
	struct io_region dests[2] = { { d0, 0, 2048 }, { d1, 0, 2048 } };
	struct kcopyd_result result;

	new_client(64, 256, 0);
	/* A zero job's sub-jobs are up to 64 MiB (they hold no buffer): this one is all 2048 sectors. */
	fake_io_fail(&fake, d1, KCOPYD_IO_ZERO, 600, 8, -ENOSPC);
	result = run_job(NULL, 2, dests, 0);
	cr_assert(result.write_err == 2 && result.error == -ENOSPC, "write_err %#x error %d", result.write_err,
		  result.error);
	cr_assert(result.write[1].error == -ENOSPC && result.write[1].sector == 0 && result.write[1].count == 2048,
		  "write[1]: %d %llu+%llu, expected -ENOSPC 0+2048", result.write[1].error,
		  (unsigned long long)result.write[1].sector, (unsigned long long)result.write[1].count);
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
}

/*
 * A source with holes at @holes (sector ranges, grain-aligned, 0 count
 * ends): the holes are never read, the destination gets the zero op there
 * and the same bytes as the source everywhere.
 */
static void copy_with_holes(const char *what, const struct fake_extent *holes, unsigned int nr_holes,
			    unsigned int sparse_sectors)
{
	struct kcopyd_dev *src = memdev(4 * MiB, 31), *dst = memdev(4 * MiB, 32);
	struct io_region from = { src, 0, SECTORS(4 * MiB) }, to = { dst, 0, from.count };
	struct fake_extent data[FAKE_MAX_EXTENTS];
	struct kcopyd_result result;
	uint64_t pos = 0, hole_sectors = 0;
	unsigned int index, nr_data = 0;

	new_sparse_client(512, sparse_sectors);
	for (index = 0; index < nr_holes; index++) {
		punch(src, holes[index].sector, holes[index].count);
		if (holes[index].sector > pos)
			data[nr_data++] = (struct fake_extent){ pos, holes[index].sector - pos };
		pos = holes[index].sector + holes[index].count;
		hole_sectors += holes[index].count;
	}
	if (pos < from.count)
		data[nr_data++] = (struct fake_extent){ pos, from.count - pos };
	fake_io_extents(&fake, src, data, nr_data);
	result = run_job(&from, 1, &to, 0);
	cr_assert(result.read_err == 0 && result.write_err == 0 && result.sectors_done == from.count,
		  "%s: read_err %d write_err %#x done %llu", what, result.read_err, result.write_err,
		  (unsigned long long)result.sectors_done);
	cr_assert(same_bytes(src, 0, dst, 0, from.count), "%s: the destination differs from the source", what);
	for (index = 0; index < nr_holes; index++)
		expect_never_read(src, holes[index].sector, holes[index].count, what);
	cr_assert(logged(KCOPYD_IO_READ, src, NULL) == from.count - hole_sectors,
		  "%s: %llu sectors read, expected the %llu of data", what,
		  (unsigned long long)logged(KCOPYD_IO_READ, src, NULL),
		  (unsigned long long)(from.count - hole_sectors));
	cr_assert(logged(KCOPYD_IO_ZERO, dst, NULL) == hole_sectors && result.counts.sectors_zero == hole_sectors &&
		  result.counts.sectors_data == from.count - hole_sectors,
		  "%s: zeroed %llu, counts zero %llu data %llu; expected %llu zero", what,
		  (unsigned long long)logged(KCOPYD_IO_ZERO, dst, NULL),
		  (unsigned long long)result.counts.sectors_zero, (unsigned long long)result.counts.sectors_data,
		  (unsigned long long)hole_sectors);
	cr_assert(fake_io_extent_queries(&fake, src) <= 2 * nr_holes + 2,
		  "%s: %u extent queries for %u holes", what, fake_io_extent_queries(&fake, src), nr_holes);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

Test(engine, extents_with_holes_at_the_start_middle_and_end_or_none)
{
	const struct fake_extent start[] = { { 0, 1536 } };
	const struct fake_extent middle[] = { { 2048, 2048 } };
	const struct fake_extent end[] = { { 6144, 2048 } };
	const struct fake_extent all_three[] = { { 0, 512 }, { 3008, 1088 }, { 7680, 512 } };

	copy_with_holes("hole at the start", start, 1, 64);
	fake_io_init(&fake);
	kcopyd_client_destroy(kc);
	copy_with_holes("hole in the middle", middle, 1, 64);
	fake_io_init(&fake);
	kcopyd_client_destroy(kc);
	copy_with_holes("hole at the end", end, 1, 64);
	fake_io_init(&fake);
	kcopyd_client_destroy(kc);
	copy_with_holes("holes at the start, middle and end", all_three, 3, 64);
	fake_io_init(&fake);
	kcopyd_client_destroy(kc);
	copy_with_holes("no hole", NULL, 0, 64);
}

/* A hole of two grains inside one 256 KiB chunk: the chunk's read is cut around it. */
Test(engine, a_hole_inside_a_chunk_is_not_read_and_is_zeroed)
{
	const struct fake_extent hole[] = { { 600, 16 } };

	copy_with_holes("a 16-sector hole inside a chunk, 4 KiB grains", hole, 1, 8);
}

/* Data that reads as zeros (no extents to say so) is read, then zeroed, not written. */
Test(engine, chunks_read_as_zeros_are_zeroed_not_written)
{
	struct kcopyd_dev *src = memdev(2 * MiB, 33), *dst = memdev(2 * MiB, 34);
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, to = { dst, 0, from.count };
	static char zeros[128 * 512];
	struct kcopyd_result result;

	cr_assert(pwrite(kcopyd_file_fd(src), zeros, sizeof(zeros), 1024 * 512) == (ssize_t)sizeof(zeros));
	new_sparse_client(512, 64);
	result = run_job(&from, 1, &to, 0);
	cr_assert(result.write_err == 0 && same_bytes(src, 0, dst, 0, from.count));
	cr_assert(logged(KCOPYD_IO_READ, src, NULL) == from.count, "every sector is read (no extents)");
	cr_assert(logged(KCOPYD_IO_ZERO, dst, NULL) == 128 && result.counts.sectors_zero == 128,
		  "zeroed %llu, counted %llu, expected 128", (unsigned long long)logged(KCOPYD_IO_ZERO, dst, NULL),
		  (unsigned long long)result.counts.sectors_zero);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* KCOPYD_DEST_ZERO skips zero ranges; KCOPYD_ALLOCATED zeroes them keeping allocation, also over DEST_ZERO. */
Test(engine, dest_zero_skips_and_allocated_keeps_allocation)
{
	struct kcopyd_dev *src = memdev(2 * MiB, 35), *dst = memdev(2 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, to = { dst, 0, from.count };
	const struct fake_extent data[] = { { 0, 1024 } };
	static struct fake_log_entry log[1024];
	struct kcopyd_result result;
	unsigned int count, index, allocating = 0;

	punch(src, 1024, 3072);
	new_sparse_client(512, 64);
	fake_io_extents(&fake, src, data, 1);
	result = run_job(&from, 1, &to, KCOPYD_DEST_ZERO);
	cr_assert(result.write_err == 0 && same_bytes(src, 0, dst, 0, from.count));
	cr_assert(logged(KCOPYD_IO_ZERO, dst, NULL) == 0 && logged(KCOPYD_IO_WRITE, dst, NULL) == 1024,
		  "dest_zero: zeroed %llu written %llu, expected 0 and 1024",
		  (unsigned long long)logged(KCOPYD_IO_ZERO, dst, NULL),
		  (unsigned long long)logged(KCOPYD_IO_WRITE, dst, NULL));
	cr_assert(result.counts.sectors_zero == 3072 && result.sectors_done == from.count,
		  "skipped sectors count as done and as zero: zero %llu done %llu",
		  (unsigned long long)result.counts.sectors_zero, (unsigned long long)result.sectors_done);

	result = run_job(&from, 1, &to, KCOPYD_DEST_ZERO | KCOPYD_ALLOCATED);
	cr_assert(result.write_err == 0 && same_bytes(src, 0, dst, 0, from.count));
	count = fake_io_log(&fake, log, 1024);
	for (index = 0; index < count; index++)
		if (log[index].op == KCOPYD_IO_ZERO && log[index].dev == dst) {
			cr_assert(log[index].zero_flags & KCOPYD_ZERO_ALLOCATE, "a zero without KCOPYD_ZERO_ALLOCATE");
			allocating += (unsigned int)log[index].count;
		}
	cr_assert(allocating == 3072, "allocated: %u sectors zeroed keeping allocation, expected 3072", allocating);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* A short zero-page write is continued; the rest's ENOSPC is the error (never EIO). */
Test(engine, short_transfers_of_zero_and_copy_report_the_true_errno)
{
	struct kcopyd_dev *src = memdev_offload(2 * MiB, 36), *d0 = memdev_offload(2 * MiB, 0);
	struct kcopyd_dev *d1 = memdev(2 * MiB, 37);
	struct io_region from = { src, 0, SECTORS(2 * MiB) };
	struct io_region dests[2] = { { d0, 0, from.count }, { d1, 0, from.count } };
	struct kcopyd_result result;

	new_client(64, 256, 0);
	/* d0: copy_file_range stops short at 1000, then no space. d1: zeros refused, then short. */
	fake_io_stop_short(&fake, d0, KCOPYD_IO_COPY, 1000, -ENOSPC, false);
	fake_io_fail(&fake, d1, KCOPYD_IO_ZERO, 0, UINT64_MAX / 2, -EOPNOTSUPP);
	fake_io_stop_short(&fake, d1, KCOPYD_IO_WRITE, 1500, -ENOSPC, false);
	result = run_job(NULL, 2, dests, KCOPYD_IGNORE_ERROR);
	/* The zero page is 256 sectors here: writes of 256, the one over 1500 short, then no space. */
	cr_assert(result.write_err == 2 && result.write[1].error == -ENOSPC && result.write[1].sector == 0 &&
		  logged(KCOPYD_IO_WRITE, d1, NULL) >= 1500 && all_zero(d1, 0, 1500),
		  "zero job: write_err %#x write[1] %d at %llu, expected 0x2 -ENOSPC at 0", result.write_err,
		  result.write[1].error, (unsigned long long)result.write[1].sector);
	result = run_job(&from, 2, dests, KCOPYD_IGNORE_ERROR);
	cr_assert(result.write_err == 3, "copy: write_err %#x, expected 0x3", result.write_err);
	cr_assert(result.write[0].error == -ENOSPC && result.write[0].sector == 768,
		  "copy: write[0] %d at %llu, expected -ENOSPC at 768 (short copy, then no space)",
		  result.write[0].error, (unsigned long long)result.write[0].sector);
	cr_assert(logged(KCOPYD_IO_COPY, d0, NULL) > 0 && same_bytes(src, 0, d0, 0, 768),
		  "the copy up to the short one reached d0");
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
}

/*
 * Offload: a destination that may copy_file_range gets COPY ops and
 * costs no read; beside one that may not, one read feeds the other.
 */
Test(engine, offloaded_and_ordinary_destinations_in_one_job)
{
	struct kcopyd_dev *src = memdev_offload(2 * MiB, 38), *d0 = memdev_offload(2 * MiB, 0);
	struct kcopyd_dev *d1 = memdev(2 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(2 * MiB) };
	struct io_region dests[2] = { { d0, 0, from.count }, { d1, 0, from.count } };
	struct kcopyd_result result;

	new_client(64, 256, 0);
	result = run_job(&from, 1, dests, 0);
	cr_assert(result.write_err == 0 && same_bytes(src, 0, d0, 0, from.count));
	cr_assert(logged(KCOPYD_IO_READ, src, NULL) == 0 && logged(KCOPYD_IO_COPY, d0, NULL) == from.count,
		  "alone: read %llu copied %llu, expected 0 and all", (unsigned long long)logged(KCOPYD_IO_READ, src, NULL),
		  (unsigned long long)logged(KCOPYD_IO_COPY, d0, NULL));
	cr_assert(result.counts.sectors_offloaded == from.count, "offloaded %llu",
		  (unsigned long long)result.counts.sectors_offloaded);
	kcopyd_client_destroy(kc);
	fake_io_init(&fake);
	new_client(64, 256, 0);
	result = run_job(&from, 2, dests, 0);
	cr_assert(result.write_err == 0 && same_bytes(src, 0, d0, 0, from.count) && same_bytes(src, 0, d1, 0, from.count));
	cr_assert(logged(KCOPYD_IO_READ, src, NULL) == from.count && logged(KCOPYD_IO_COPY, d0, NULL) == from.count &&
		  logged(KCOPYD_IO_WRITE, d1, NULL) == from.count, "together: one read for d1, copies for d0");
	kcopyd_client_destroy(kc);
	fake_io_init(&fake);
	new_client(64, 256, 0);
	result = run_job(&from, 1, dests, KCOPYD_NO_OFFLOAD);
	cr_assert(logged(KCOPYD_IO_COPY, d0, NULL) == 0 && logged(KCOPYD_IO_READ, src, NULL) == from.count,
		  "no_offload: nothing copied, all read");
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
	kcopyd_dev_close(d1);
}

/* copy_file_range refused (EXDEV): that destination falls back to a read and writes, the job goes on. */
Test(engine, offload_refused_falls_back_to_read_and_write)
{
	struct kcopyd_dev *src = memdev_offload(2 * MiB, 39), *d0 = memdev_offload(2 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, to = { d0, 0, from.count };
	struct kcopyd_result result;
	struct kcopyd_stats stats;

	new_client(64, 256, 2);
	fake_io_fail(&fake, d0, KCOPYD_IO_COPY, 0, UINT64_MAX / 2, -EXDEV);
	result = run_job(&from, 1, &to, 0);
	cr_assert(result.write_err == 0 && result.error == 0 && result.sectors_done == from.count,
		  "write_err %#x error %d", result.write_err, result.error);
	cr_assert(same_bytes(src, 0, d0, 0, from.count), "the fallback copy differs");
	cr_assert(logged(KCOPYD_IO_WRITE, d0, NULL) == from.count, "every sector written after the refusal");
	kcopyd_client_stats(kc, &stats);
	cr_assert(stats.offload_fallbacks >= 1 && stats.sectors_offloaded == 0,
		  "offload_fallbacks %llu offloaded %llu", (unsigned long long)stats.offload_fallbacks,
		  (unsigned long long)stats.sectors_offloaded);
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
}

/*
 * A refused offload's late read fills only the source's data pieces: the
 * holes between them inside a data grain must be written as zeros, not as
 * whatever an earlier chunk left in the buffer slot (found in review: the
 * stale bytes of another job reached the destination).
 */
Test(engine, offload_refused_late_read_writes_zeros_in_holes_of_data_grains)
{
	struct kcopyd_dev *dirty = memdev(2 * MiB, 45), *scratch = memdev(2 * MiB, 0);
	struct kcopyd_dev *src = memdev_offload(2 * MiB, 46), *d0 = memdev_offload(2 * MiB, 47);
	struct io_region fill = { dirty, 0, SECTORS(2 * MiB) }, fill_to = { scratch, 0, fill.count };
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, to = { d0, 0, from.count };
	/* Grains of 64 sectors: data at 0+8 and from 64 on, a hole at 8+56 inside grain 0. */
	const struct fake_extent data[] = { { 0, 8 }, { 64, SECTORS(2 * MiB) - 64 } };
	struct kcopyd_result result;

	new_sparse_client(512, 64);
	/* Every buffer slot now holds the pattern of @dirty. */
	cr_assert(run_job(&fill, 1, &fill_to, 0).write_err == 0);
	punch(src, 8, 56);
	fake_io_extents(&fake, src, data, 2);
	fake_io_fail(&fake, d0, KCOPYD_IO_COPY, 0, UINT64_MAX / 2, -EXDEV);
	result = run_job(&from, 1, &to, 0);
	cr_assert(result.write_err == 0 && result.sectors_done == from.count, "write_err %#x", result.write_err);
	cr_assert(all_zero(d0, 8, 56), "the hole inside a data grain holds an earlier chunk's bytes");
	cr_assert(same_bytes(src, 0, d0, 0, from.count), "the fallback copy differs from the source");
	kcopyd_dev_close(dirty);
	kcopyd_dev_close(scratch);
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
}

/*
 * copy_file_range failing with EIO (a bad source sector, or the
 * destination's: it cannot say) is redone through the buffers: the read
 * error is the source's, and with IGNORE_ERROR the range reads as zeros on
 * the destination, not as the bytes it held before (found in review).
 */
Test(engine, offload_eio_is_redone_through_the_buffers)
{
	struct kcopyd_dev *src = memdev_offload(2 * MiB, 48), *d0 = memdev_offload(2 * MiB, 49);
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, to = { d0, 0, from.count };
	struct kcopyd_result result;

	new_client(64, 256, 2);
	fake_io_fail(&fake, src, KCOPYD_IO_READ, 1024, 8, -EIO);
	fake_io_fail(&fake, d0, KCOPYD_IO_COPY, 1024, 8, -EIO);
	result = run_job(&from, 1, &to, KCOPYD_IGNORE_ERROR);
	cr_assert(result.read_err && result.write_err == 0, "read_err %d write_err %#x: the error is the source's",
		  result.read_err, result.write_err);
	/* The sub-job of 256 sectors that could not be read is written as zeros, as any other. */
	cr_assert(all_zero(d0, 1024, 256), "the unreadable chunk keeps the destination's old bytes");
	cr_assert(same_bytes(src, 0, d0, 0, 1024) && same_bytes(src, 1280, d0, 1280, from.count - 1280),
		  "the rest differs from the source");
	kcopyd_dev_close(src);
	kcopyd_dev_close(d0);
}

/* Cancel and checkpoint with zero ranges: the holes count as done, the checkpoint is the prefix. */
Test(engine, cancel_and_checkpoint_with_zero_ranges)
{
	struct kcopyd_dev *src = memdev(8 * MiB, 40), *dst = memdev(8 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(8 * MiB) }, to = { dst, 0, from.count };
	const struct fake_extent data[] = { { 256, 256 }, { 8192, 8192 } };
	struct kcopyd_counts counts;
	struct kcopyd_result result;
	struct kcopyd_job *job;
	uint64_t checkpoint;
	unsigned int spins = 0;

	punch(src, 0, 256);
	punch(src, 512, 8192 - 512);
	new_sparse_client(256, 64);
	fake_io_extents(&fake, src, data, 2);
	fake.hold = true;
	cr_assert(kcopyd_submit(kc, &from, 1, &to, 0, NULL, NULL, &job) == 0);
	/* Sub-job 0 zeroes, 1 reads, 2 and 3 wait for 1's read to be written: two operations held. */
	while (fake_io_held(&fake) < 2 && spins++ < 10000)
		usleep(100);
	usleep(10000);
	cr_assert(fake_io_held(&fake) == 2, "%u I/Os held, expected a zero and a read", fake_io_held(&fake));
	cr_assert(kcopyd_job_cancel(job) == 0);
	fake_io_release(&fake);
	kcopyd_job_wait(job);
	cr_assert(kcopyd_job_result(job, &result) == 0 && result.cancelled == 1 && result.error == 0);
	cr_assert(result.sectors_done == 1024 && result.counts.sectors_zero == 768 && result.counts.sectors_data == 256,
		  "done %llu zero %llu data %llu, expected 1024 768 256", (unsigned long long)result.sectors_done,
		  (unsigned long long)result.counts.sectors_zero, (unsigned long long)result.counts.sectors_data);
	cr_assert(kcopyd_job_counts(job, &counts, sizeof(counts)) == 0 && counts.sectors_zero == 768);
	kcopyd_job_checkpoint(job, &checkpoint);
	cr_assert(checkpoint == 1024, "checkpoint %llu, expected 1024", (unsigned long long)checkpoint);
	cr_assert(same_bytes(src, 0, dst, 0, 1024) && all_zero(dst, 1024, from.count - 1024));
	kcopyd_job_release(job);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* The largest request of a device caps the sub-job size. */
Test(engine, subjobs_are_capped_by_the_largest_request)
{
	struct kcopyd_dev *src = memdev(2 * MiB, 41), *dst = memdev(2 * MiB, 0);
	struct io_region from = { src, 0, SECTORS(2 * MiB) }, to = { dst, 0, from.count };
	unsigned int reads;

	dst->max_request = 64 * 1024;
	new_client(1024, 0, 0);
	(void)run_job(&from, 1, &to, 0);
	cr_assert(logged(KCOPYD_IO_READ, src, &reads) == from.count && reads == 32,
		  "%u reads, expected 32 of 64 KiB", reads);
	cr_assert(same_bytes(src, 0, dst, 0, from.count));
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
}

/* struct kcopyd_config grows: older sizes work, unknown non-zero tails are refused. */
Test(engine, config_size_is_checked)
{
	struct {
		struct kcopyd_config config;
		unsigned int future;
	} bigger = { .config = { .num_pages = 64 } };
	struct kcopyd_client *client = NULL;

	cr_assert(kcopyd_client_create_sized(&bigger.config, KCOPYD_CONFIG_SIZE_V1 - 1, &client) == -EINVAL);
	cr_assert(kcopyd_client_create_sized(&bigger.config, KCOPYD_CONFIG_SIZE_V1, &client) == 0);
	kcopyd_client_destroy(client);
	cr_assert(kcopyd_client_create_sized(&bigger.config, sizeof(bigger), &client) == 0, "a zero tail");
	kcopyd_client_destroy(client);
	bigger.future = 1;
	cr_assert(kcopyd_client_create_sized(&bigger.config, sizeof(bigger), &client) == -E2BIG);
	cr_assert((kcopyd_client_create_config)(&bigger.config, &client) == 0, "the function of the old header");
	kcopyd_client_destroy(client);
}

/* ---- the I/O engine's names, probe and choice ------------------------------------ */

/* Every name parses to its engine; anything else, NULL included, is -EINVAL and leaves *engine alone. */
Test(engine, io_engine_parse_takes_the_three_names_exactly)
{
	static const struct {
		const char *name;
		unsigned int engine;
	} good[] = {
		{ "auto", KCOPYD_IO_ENGINE_AUTO },
		{ "libaio", KCOPYD_IO_ENGINE_LIBAIO },
		{ "io_uring", KCOPYD_IO_ENGINE_IO_URING },
	};
	static const char *const bad[] = { "", "IO_URING", "uring", "default", "unknown", "libaio ", " auto", "aut" };
	unsigned int index, engine;
	int r;

	for (index = 0; index < sizeof(good) / sizeof(good[0]); index++) {
		engine = 99;
		r = kcopyd_io_engine_parse(good[index].name, &engine);
		cr_expect(r == 0 && engine == good[index].engine, "kcopyd_io_engine_parse(\"%s\"): %d, engine %u, expected 0, %u",
			  good[index].name, r, engine, good[index].engine);
	}
	for (index = 0; index < sizeof(bad) / sizeof(bad[0]); index++) {
		engine = 99;
		r = kcopyd_io_engine_parse(bad[index], &engine);
		cr_expect(r == -EINVAL && engine == 99, "kcopyd_io_engine_parse(\"%s\"): %d, engine %u, expected -EINVAL, untouched",
			  bad[index], r, engine);
	}
	engine = 99;
	r = kcopyd_io_engine_parse(NULL, &engine);
	cr_expect(r == -EINVAL && engine == 99, "kcopyd_io_engine_parse(NULL): %d, engine %u", r, engine);
	r = kcopyd_io_engine_parse("auto", NULL);
	cr_expect_eq(r, -EINVAL, "kcopyd_io_engine_parse(\"auto\", NULL): %d, expected -EINVAL", r);
}

Test(engine, io_engine_name_of_each_engine_and_of_none)
{
	static const struct {
		unsigned int engine;
		const char *name;
	} names[] = {
		{ KCOPYD_IO_ENGINE_DEFAULT, "default" },   { KCOPYD_IO_ENGINE_AUTO, "auto" },
		{ KCOPYD_IO_ENGINE_LIBAIO, "libaio" },	   { KCOPYD_IO_ENGINE_IO_URING, "io_uring" },
		{ KCOPYD_IO_ENGINE_IO_URING + 1, "unknown" }, { 99, "unknown" },
		{ UINT32_MAX, "unknown" },
	};
	unsigned int index;

	for (index = 0; index < sizeof(names) / sizeof(names[0]); index++)
		cr_expect_str_eq(kcopyd_io_engine_name(names[index].engine), names[index].name,
				 "kcopyd_io_engine_name(%u): \"%s\", expected \"%s\"", names[index].engine,
				 kcopyd_io_engine_name(names[index].engine), names[index].name);
}

/* libaio and auto always can (auto falls back); an engine not of the enum is -EINVAL with a reason. */
Test(engine, io_engine_probe_of_libaio_auto_and_no_engine)
{
	char why[192];
	int r;

	strcpy(why, "untouched");
	r = kcopyd_io_engine_probe(KCOPYD_IO_ENGINE_LIBAIO, why, sizeof(why));
	cr_expect(r == 0 && why[0] == '\0', "probe(libaio): %d, why '%s', expected 0 and ''", r, why);
	strcpy(why, "untouched");
	r = kcopyd_io_engine_probe(KCOPYD_IO_ENGINE_AUTO, why, sizeof(why));
	cr_expect(r == 0 && why[0] == '\0', "probe(auto): %d, why '%s', expected 0 and ''", r, why);
	r = kcopyd_io_engine_probe(99, why, sizeof(why));
	cr_expect_eq(r, -EINVAL, "probe(99): %d, expected -EINVAL", r);
	cr_expect_str_eq(why, "99 is not an I/O engine", "probe(99): why '%s'", why);
	r = kcopyd_io_engine_probe(99, NULL, 0);
	cr_expect_eq(r, -EINVAL, "probe(99) without a why: %d, expected -EINVAL", r);
	/* io_uring: 0 or -errno, never a positive value; with a reason exactly when refused. */
	why[0] = '\0';
	r = kcopyd_io_engine_probe(KCOPYD_IO_ENGINE_IO_URING, why, sizeof(why));
	cr_expect(r <= 0 && (r == 0) == (why[0] == '\0'), "probe(io_uring): %d with why '%s'", r, why);
}

/* An engine outside the enum, or a KCOPYD_IO_ENGINE that names none, and no client is made. */
Test(engine, client_with_no_engine_is_einval)
{
	struct kcopyd_config config = { .num_pages = 64, .io_engine = 99 };
	struct kcopyd_client *client = NULL;
	int r;

	r = kcopyd_client_create_config(&config, &client);
	cr_expect(r == -EINVAL && client == NULL, "io_engine 99: %d, client %p, expected -EINVAL and none", r,
		  (void *)client);
	config.io_engine = KCOPYD_IO_ENGINE_IO_URING + 1;
	r = kcopyd_client_create_config(&config, &client);
	cr_expect(r == -EINVAL && client == NULL, "io_engine %u: %d, expected -EINVAL", config.io_engine, r);

	/* The variable is read only when the config leaves the engine at 0, and then must name one. */
	config.io_engine = KCOPYD_IO_ENGINE_DEFAULT;
	cr_assert(setenv("KCOPYD_IO_ENGINE", "uring", 1) == 0);
	r = kcopyd_client_create_config(&config, &client);
	cr_expect(r == -EINVAL && client == NULL, "KCOPYD_IO_ENGINE=uring: %d, expected -EINVAL", r);
	config.io_engine = KCOPYD_IO_ENGINE_LIBAIO;
	r = kcopyd_client_create_config(&config, &client);
	cr_expect(r == 0, "KCOPYD_IO_ENGINE=uring with libaio in the config: %d, expected 0 (the config wins)", r);
	if (r == 0)
		cr_expect_eq(kcopyd_client_io_engine(client, NULL, 0), KCOPYD_IO_ENGINE_LIBAIO,
			     "the config's libaio, not the variable: %s",
			     kcopyd_io_engine_name(kcopyd_client_io_engine(client, NULL, 0)));
	kcopyd_client_destroy(client);
	unsetenv("KCOPYD_IO_ENGINE");
}

/* A client of the fake driver has no engine of its own: 0, and nothing to say. */
Test(engine, fake_driver_client_has_no_io_engine)
{
	struct kcopyd_stats stats;
	char why[64] = "untouched";

	new_client(64, 0, 0);
	cr_expect_eq(kcopyd_client_io_engine(kc, why, sizeof(why)), 0u, "fake driver: io engine %u, expected 0",
		     kcopyd_client_io_engine(kc, NULL, 0));
	cr_expect_str_empty(why, "fake driver: why '%s', expected ''", why);
	kcopyd_client_stats(kc, &stats);
	cr_expect_eq(stats.io_engine, 0u, "fake driver: stats.io_engine %u, expected 0", stats.io_engine);
}
