/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Hashes, verification, pause and rate limits of the engine (issue 17),
 * on real files and loop devices on a private tmpfs.  Digests are checked
 * against the tools users compare them with (sha256sum, md5sum, sha1sum,
 * sha512sum, b2sum, xxhsum -H2) run on the same bytes.  Needs root for
 * the loop devices; skips (77) without it.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fake_io.h"
#include "libkcopyd/driver.h"
#include "kcopyd.h"
#include "testutil.h"

#define MiB		(1024ull * 1024)
#define SRC_BYTES	(24 * MiB + 64 * 1024)	/* not a whole number of 1 MiB chunks */
#define SRC_SECTORS	(SRC_BYTES >> KCOPYD_SECTOR_SHIFT)
#define SRC_SEED	0x7472757374ull
#define FILL_SEED	0xf111ull

static struct {
	char dir[256];
	char src[PATH_MAX];		/* the source file */
	char dst[3][PATH_MAX];		/* zeroed destination files */
	char loop[3][32];		/* loop devices on them */
	struct kcopyd_dev *src_dev;
	struct kcopyd_dev *dst_dev[3];	/* the loop devices, O_RDWR */
	struct kcopyd_client *kc;
} fx;

static void teardown(void)
{
	int i;

	kcopyd_client_destroy(fx.kc);
	fx.kc = NULL;
	kcopyd_dev_close(fx.src_dev);
	fx.src_dev = NULL;
	for (i = 0; i < 3; i++) {
		kcopyd_dev_close(fx.dst_dev[i]);
		fx.dst_dev[i] = NULL;
		if (fx.loop[i][0])
			tu_loop_detach(fx.loop[i]);
		fx.loop[i][0] = '\0';
	}
	tu_tmpfs_unmount(fx.dir);
	fx.dir[0] = '\0';
}

/* Punch the holes of a sparse source: every other 2 MiB from 1 MiB, and the last 64 KiB. */
static void make_sparse(const char *path)
{
	int fd = open(path, O_RDWR);
	uint64_t off;

	cr_assert(fd >= 0);
	for (off = MiB; off + 2 * MiB <= SRC_BYTES; off += 4 * MiB)
		cr_assert(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, 2 * MiB) == 0);
	cr_assert(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, SRC_BYTES - 65536, 65536) == 0);
	close(fd);
}

static void setup_with(bool sparse)
{
	const char *missing = tu_loop_rig_missing();
	int i;

	if (missing) {
		fprintf(stderr, "test-trust: skipped: %s\n", missing);
		exit(77);
	}
	cr_assert(tu_tmpfs_mount(512 * MiB, fx.dir, sizeof(fx.dir)) == 0);
	snprintf(fx.src, sizeof(fx.src), "%s/src", fx.dir);
	cr_assert(tu_file_create(fx.src, SRC_BYTES, SRC_SEED) == 0);
	if (sparse)
		make_sparse(fx.src);
	cr_assert(kcopyd_dev_open(fx.src, O_RDONLY, &fx.src_dev) == 0);
	for (i = 0; i < 3; i++) {
		snprintf(fx.dst[i], sizeof(fx.dst[i]), "%s/dst%d", fx.dir, i);
		cr_assert(tu_file_create(fx.dst[i], SRC_BYTES, 0) == 0);
		cr_assert(tu_loop_attach(fx.dst[i], 512, true, fx.loop[i], sizeof(fx.loop[i])) == 0);
		cr_assert(kcopyd_dev_open(fx.loop[i], O_RDWR, &fx.dst_dev[i]) == 0);
	}
	cr_assert(kcopyd_client_create(256, &fx.kc) == 0);
}

static void setup(void)
{
	setup_with(false);
}

static void setup_sparse(void)
{
	setup_with(true);
}

/* The first word `TOOL PATH` prints: its digest in hex. */
static void tool_digest(const char *tool, const char *path, char *hex, size_t len)
{
	char command[PATH_MAX + 64];
	FILE *out;

	snprintf(command, sizeof(command), "%s '%s'", tool, path);
	out = popen(command, "r");
	cr_assert(out, "%s", command);
	cr_assert(fscanf(out, "%255s", hex) == 1, "%s printed nothing", command);
	cr_assert(pclose(out) == 0, "%s failed", command);
	(void)len;
}

static void to_hex(const struct kcopyd_digest *digest, char *hex)
{
	unsigned int index;

	for (index = 0; index < digest->size; index++)
		sprintf(hex + 2 * index, "%02x", digest->bytes[index]);
	hex[2 * digest->size] = '\0';
}

/* Copy the source to @num_dests loop devices with @options; wait; the result in @result. */
static void run_copy(unsigned int num_dests, struct kcopyd_job_options *options, struct kcopyd_result *result)
{
	struct io_region from = { fx.src_dev, 0, SRC_SECTORS }, to[3];
	struct kcopyd_job *job;
	unsigned int i;

	for (i = 0; i < num_dests; i++)
		to[i] = (struct io_region){ fx.dst_dev[i], 0, SRC_SECTORS };
	cr_assert(kcopyd_submit_options(fx.kc, &from, num_dests, to, options, sizeof(*options), NULL, NULL,
					&job) == 0);
	kcopyd_job_wait(job);
	cr_assert(kcopyd_job_result(job, result) == 0);
	kcopyd_job_release(job);
}

static const struct {
	unsigned int hash;
	const char *tool;
} tools[] = {
	{ KCOPYD_HASH_MD5, "md5sum" },
	{ KCOPYD_HASH_SHA1, "sha1sum" },
	{ KCOPYD_HASH_SHA256, "sha256sum" },
	{ KCOPYD_HASH_SHA512, "sha512sum" },
	{ KCOPYD_HASH_BLAKE2B512, "b2sum" },
	{ KCOPYD_HASH_XXH128, "xxhsum -H2" },
};

/* Every algorithm at once, checked against its tool on the source file. */
static void check_all_hashes(unsigned int num_dests)
{
	struct kcopyd_job_options options = { .hashes = KCOPYD_HASH_ALL };
	struct kcopyd_result result;
	unsigned int index, i;

	run_copy(num_dests, &options, &result);
	cr_assert_eq(result.error, 0);
	cr_assert_eq(result.hashes, KCOPYD_HASH_ALL);
	for (index = 0; index < sizeof(tools) / sizeof(tools[0]); index++) {
		char want[256], got[2 * KCOPYD_HASH_MAX_SIZE + 1];
		int bit = __builtin_ctz(tools[index].hash);

		tool_digest(tools[index].tool, fx.src, want, sizeof(want));
		cr_assert_eq(result.digests[bit].size, kcopyd_hash_size(tools[index].hash));
		to_hex(&result.digests[bit], got);
		cr_assert_str_eq(got, want, "%s: %s, the engine said %s", tools[index].tool, want, got);
	}
	for (i = 0; i < num_dests; i++)
		cr_assert_eq(tu_compare(fx.src, 0, fx.loop[i], 0, SRC_BYTES, NULL), 0, "destination %u differs", i);
}

Test(trust, hashes_of_a_dense_source_equal_the_sum_tools, .init = setup, .fini = teardown)
{
	check_all_hashes(1);
}

Test(trust, hashes_of_a_sparse_source_to_three_equal_the_sum_tools, .init = setup_sparse, .fini = teardown)
{
	check_all_hashes(3);
}

Test(trust, hash_names, .init = NULL)
{
	unsigned int hash;

	cr_assert_eq(kcopyd_hash_parse("SHA256", &hash), 0);
	cr_assert_eq(hash, KCOPYD_HASH_SHA256);
	cr_assert_eq(kcopyd_hash_parse("b2", &hash), 0);
	cr_assert_eq(hash, KCOPYD_HASH_BLAKE2B512);
	cr_assert_eq(kcopyd_hash_parse("xxh3-128", &hash), 0);
	cr_assert_eq(hash, KCOPYD_HASH_XXH128);
	cr_assert_eq(kcopyd_hash_parse("crc32", &hash), -EINVAL);
	cr_assert_eq(kcopyd_hash_parse(NULL, &hash), -EINVAL);
	cr_assert_str_eq(kcopyd_hash_name(KCOPYD_HASH_SHA512), "sha512");
	cr_assert_null(kcopyd_hash_name(KCOPYD_HASH_SHA1 | KCOPYD_HASH_MD5));
	cr_assert_eq(kcopyd_hash_size(KCOPYD_HASH_MD5), 16);
	cr_assert_eq(kcopyd_hash_size(1u << KCOPYD_HASH_COUNT), 0);
}

Test(trust, refused_options, .init = setup, .fini = teardown)
{
	struct io_region from = { fx.src_dev, 0, SRC_SECTORS }, to = { fx.dst_dev[0], 0, SRC_SECTORS };
	struct kcopyd_job_options options = { .hashes = 1u << KCOPYD_HASH_COUNT };
	struct {
		struct kcopyd_job_options options;
		uint32_t extra;
	} bigger = { .extra = 1 };
	struct kcopyd_dev *write_only;

	cr_assert_eq(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, NULL),
		     -EINVAL);
	options = (struct kcopyd_job_options){ .hashes = KCOPYD_HASH_SHA256 };
	cr_assert_eq(kcopyd_submit_options(fx.kc, NULL, 1, &to, &options, sizeof(options), NULL, NULL, NULL),
		     -EINVAL, "a zero job has nothing to hash");
	options = (struct kcopyd_job_options){ .flags = KCOPYD_VERIFY };
	cr_assert_eq(kcopyd_submit_options(fx.kc, NULL, 1, &to, &options, sizeof(options), NULL, NULL, NULL),
		     -EINVAL, "a zero job has nothing to verify against");
	options = (struct kcopyd_job_options){ .rate = KCOPYD_MIN_RATE - 1 };
	cr_assert_eq(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, NULL),
		     -EINVAL);
	cr_assert_eq(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, 4, NULL, NULL, NULL), -EINVAL);
	options = (struct kcopyd_job_options){ .reserved = 1 };
	cr_assert_eq(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, NULL),
		     -EINVAL, "reserved must be 0");
	options = (struct kcopyd_job_options){ .paused = 1 };
	cr_assert_eq(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, NULL),
		     -EINVAL, "a paused job without a handle could never be resumed");
	cr_assert_eq(kcopyd_submit_options(fx.kc, &from, 1, &to, &bigger.options, sizeof(bigger), NULL, NULL, NULL),
		     -E2BIG);
	/* Verify reads the destinations back: one opened write-only cannot be. */
	cr_assert(kcopyd_dev_from_fd(open(fx.loop[1], O_WRONLY | O_DIRECT | O_CLOEXEC), &write_only) == 0);
	to.bdev = write_only;
	options = (struct kcopyd_job_options){ .flags = KCOPYD_VERIFY };
	cr_assert_eq(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, NULL),
		     -EBADF);
	kcopyd_dev_close(write_only);
}

Test(trust, verify_of_good_destinations_is_ok, .init = setup_sparse, .fini = teardown)
{
	struct kcopyd_job_options options = { .flags = KCOPYD_VERIFY, .hashes = KCOPYD_HASH_XXH128 };
	struct kcopyd_result result;

	run_copy(3, &options, &result);
	cr_assert_eq(result.error, 0, "error %d", result.error);
	cr_assert_eq(result.verified, 1);
	cr_assert_eq(result.verify_err, 0);
	cr_assert_eq(result.write_err, 0);
	cr_assert_eq(result.counts.sectors_verified, 3 * SRC_SECTORS);
	cr_assert_eq(result.counts.sectors_verify_total, 3 * SRC_SECTORS);
	cr_assert_eq(result.hashes, KCOPYD_HASH_XXH128);
}

/*
 * dest_zero promises zeros that destination 1 does not hold (3 MiB of a
 * pattern at 5 MiB, in a hole of the source): verify must catch it there,
 * in the first chunk that differs, and pass the other two.
 */
Test(trust, verify_catches_dest_zero_on_a_destination_that_is_not, .init = setup_sparse, .fini = teardown)
{
	struct kcopyd_job_options options = { .flags = KCOPYD_VERIFY | KCOPYD_DEST_ZERO };
	struct kcopyd_result result;
	struct kcopyd_stats stats;

	cr_assert(tu_pattern_write(fx.loop[1], 5 * MiB + 4096, 3 * MiB, FILL_SEED, 0) == 0);
	run_copy(3, &options, &result);
	cr_assert_eq(result.error, -EBADMSG, "error %d", result.error);
	cr_assert_eq(result.verified, -1);
	cr_assert_eq(result.verify_err, 2u);
	cr_assert_eq(result.write_err, 2u);
	cr_assert_eq(result.verify[1].error, -EBADMSG);
	cr_assert_eq(result.verify[1].sector, 5 * MiB / 512, "sector %llu",
		     (unsigned long long)result.verify[1].sector);
	cr_assert_eq(result.verify[1].count, MiB / 512);
	cr_assert_eq(result.verify[0].error, 0);
	cr_assert_eq(result.verify[2].error, 0);
	cr_assert_eq(result.write[1].error, 0, "the writes themselves did not fail");
	/* Four bad chunks, read back in parallel: one destination did not read back. */
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.verify_errors, 1, "verify_errors %llu", (unsigned long long)stats.verify_errors);
}

Test(trust, pause_holds_progress_and_resume_finishes, .init = setup, .fini = teardown)
{
	struct io_region from = { fx.src_dev, 0, SRC_SECTORS }, to = { fx.dst_dev[0], 0, SRC_SECTORS };
	struct kcopyd_job_options options = { .paused = 1, .hashes = KCOPYD_HASH_SHA256 };
	struct kcopyd_counts counts;
	struct kcopyd_result result;
	struct kcopyd_stats stats;
	struct kcopyd_job *job;
	uint64_t done;
	char want[256], got[65];

	cr_assert(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, &job) == 0);
	tu_sleep_ms(300);
	kcopyd_job_counts(job, &counts, sizeof(counts));
	cr_assert_eq(counts.sectors_done, 0, "a job queued paused does not start");
	cr_assert_eq(counts.paused, 1);
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.jobs_paused, 1);
	cr_assert_eq(kcopyd_job_pause(job), -EALREADY);
	cr_assert_eq(kcopyd_job_resume(job), 0);
	cr_assert_eq(kcopyd_job_resume(job), -EALREADY);
	/* Slow it down so that a pause lands mid-copy. */
	cr_assert_eq(kcopyd_job_set_rate(job, 8 * MiB), 0);
	tu_sleep_ms(500);
	cr_assert_eq(kcopyd_job_pause(job), 0);
	tu_sleep_ms(200);	/* those in flight finish */
	kcopyd_job_progress(job, &done, NULL);
	cr_assert(done > 0 && done < SRC_SECTORS, "done %llu", (unsigned long long)done);
	tu_sleep_ms(1000);
	kcopyd_job_counts(job, &counts, sizeof(counts));
	cr_assert_eq(counts.sectors_done, done, "progress moved while paused");
	cr_assert_eq(kcopyd_job_set_rate(job, 0), 0);
	cr_assert_eq(kcopyd_job_resume(job), 0);
	kcopyd_job_wait(job);
	cr_assert_eq(kcopyd_job_result(job, &result), 0);
	cr_assert_eq(result.error, 0);
	cr_assert_eq(result.sectors_done, SRC_SECTORS);
	cr_assert_eq(kcopyd_job_pause(job), -EINVAL, "a finished job cannot be paused");
	cr_assert_eq(kcopyd_job_set_rate(job, 8 * MiB), -EINVAL);
	kcopyd_job_release(job);
	tool_digest("sha256sum", fx.src, want, sizeof(want));
	to_hex(&result.digests[2], got);
	cr_assert_str_eq(got, want, "a pause does not change the digest");
	cr_assert_eq(tu_compare(fx.src, 0, fx.loop[0], 0, SRC_BYTES, NULL), 0);
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.jobs_paused, 0);
}

Test(trust, cancel_while_paused, .init = setup, .fini = teardown)
{
	struct io_region from = { fx.src_dev, 0, SRC_SECTORS }, to = { fx.dst_dev[0], 0, SRC_SECTORS };
	struct kcopyd_job_options options = { .paused = 1, .hashes = KCOPYD_HASH_MD5 };
	struct kcopyd_result result;
	struct kcopyd_stats stats;
	struct kcopyd_job *job;

	cr_assert(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, &job) == 0);
	cr_assert_eq(kcopyd_job_cancel(job), 0);
	kcopyd_job_wait(job);
	cr_assert_eq(kcopyd_job_result(job, &result), 0);
	cr_assert_eq(result.cancelled, 1);
	cr_assert_eq(result.hashes, 0, "no digest of a range not all read");
	kcopyd_job_release(job);
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.jobs_paused, 0);
}

/*
 * The rate holds a job back: 8 MiB at 4 MiB/s cannot take under 1.5 s
 * (2 s less the first chunk that goes at once).  A lower bound only: the
 * engine cannot be faster than its rate, however slow the machine.
 */
Test(trust, a_rate_holds_a_job_back, .init = setup, .fini = teardown)
{
	struct io_region from = { fx.src_dev, 0, 8 * MiB / 512 }, to = { fx.dst_dev[0], 0, 8 * MiB / 512 };
	struct kcopyd_job_options options = { .rate = 4 * MiB };
	struct kcopyd_counts counts;
	struct kcopyd_stats stats;
	struct kcopyd_job *job;
	double start = tu_now(), took;

	cr_assert(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, &job) == 0);
	tu_sleep_ms(100);
	kcopyd_job_counts(job, &counts, sizeof(counts));
	cr_assert_eq(counts.rate, 4 * MiB);
	kcopyd_job_wait(job);
	took = tu_now() - start;
	kcopyd_job_release(job);
	cr_assert(took >= 1.5, "8 MiB at 4 MiB/s took %.2f s", took);
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert(stats.throttled_ns > 1000000000ull, "throttled %llu ns", (unsigned long long)stats.throttled_ns);
}

/* The client's rate is shared by its jobs: two of 4 MiB under 4 MiB/s take about 2 s together. */
Test(trust, a_client_rate_is_shared, .init = setup, .fini = teardown)
{
	struct io_region from = { fx.src_dev, 0, 4 * MiB / 512 }, to[2];
	struct kcopyd_job *jobs[2];
	uint64_t done[2];
	double start;
	int i;

	cr_assert_eq(kcopyd_client_set_rate(fx.kc, 100), -EINVAL);
	cr_assert_eq(kcopyd_client_set_rate(fx.kc, 4 * MiB), 0);
	start = tu_now();
	for (i = 0; i < 2; i++) {
		to[i] = (struct io_region){ fx.dst_dev[i], 0, 4 * MiB / 512 };
		cr_assert(kcopyd_submit(fx.kc, &from, 1, &to[i], 0, NULL, NULL, &jobs[i]) == 0);
	}
	tu_sleep_ms(1000);
	for (i = 0; i < 2; i++)
		kcopyd_job_progress(jobs[i], &done[i], NULL);
	/* Each has had about half: neither took it all. */
	cr_assert(done[0] < 4 * MiB / 512 && done[1] < 4 * MiB / 512, "done %llu and %llu",
		  (unsigned long long)done[0], (unsigned long long)done[1]);
	for (i = 0; i < 2; i++) {
		kcopyd_job_wait(jobs[i]);
		kcopyd_job_release(jobs[i]);
	}
	cr_assert(tu_now() - start >= 1.5, "8 MiB at 4 MiB/s took %.2f s", tu_now() - start);
}

/*
 * Pause a verified copy as soon as it leaves the copy phase, then cancel
 * it: the verify stops, the job ends cancelled and unverified.  The
 * read-backs are fast here, so a pause may come too late; then again.
 */
Test(trust, cancel_during_verify, .init = setup, .fini = teardown)
{
	struct io_region from = { fx.src_dev, 0, SRC_SECTORS }, to[3];
	struct kcopyd_job_options options = { .flags = KCOPYD_VERIFY };
	struct kcopyd_counts counts;
	struct kcopyd_result result;
	struct kcopyd_job *job;
	int i, tries, r = -EINVAL;

	for (i = 0; i < 3; i++)
		to[i] = (struct io_region){ fx.dst_dev[i], 0, SRC_SECTORS };
	for (tries = 0; tries < 5 && r != 0; tries++) {
		cr_assert(kcopyd_submit_options(fx.kc, &from, 3, to, &options, sizeof(options), NULL, NULL,
						&job) == 0);
		do
			kcopyd_job_counts(job, &counts, sizeof(counts));
		while (counts.phase == KCOPYD_PHASE_COPY);
		r = kcopyd_job_pause(job);
		if (r != 0) {
			kcopyd_job_wait(job);
			kcopyd_job_release(job);
		}
	}
	cr_assert_eq(r, 0, "five verifies ended before they could be paused");
	tu_sleep_ms(100);
	kcopyd_job_counts(job, &counts, sizeof(counts));
	cr_assert(counts.phase == KCOPYD_PHASE_FLUSH || counts.phase == KCOPYD_PHASE_VERIFY, "phase %u",
		  counts.phase);
	cr_assert(counts.sectors_verified < counts.sectors_verify_total);
	cr_assert_eq(kcopyd_job_cancel(job), 0);
	kcopyd_job_wait(job);
	cr_assert_eq(kcopyd_job_result(job, &result), 0);
	cr_assert_eq(result.cancelled, 1);
	cr_assert_eq(result.verified, 0);
	cr_assert_eq(result.error, 0);
	kcopyd_job_release(job);
}

/*
 * With ignore_error, a chunk that cannot be read is written as zeros, and
 * hashed as them: the digest is the destination's, byte for byte (the
 * source's bytes that could not be read are not in it).  Bad: 4 KiB at
 * 5 MiB + 8 KiB of a source served through nbdkit's ddrescue filter.
 */
Test(trust, with_ignore_error_the_digest_is_of_what_was_written, .init = setup, .fini = teardown)
{
	const struct tu_range bad[] = { { 5 * MiB + 8192, 4096 } };
	struct kcopyd_job_options options = { .flags = KCOPYD_IGNORE_ERROR, .hashes = KCOPYD_HASH_SHA256 };
	const char *missing = tu_nbd_rig_missing();
	struct io_region from, to = { fx.dst_dev[0], 0, SRC_SECTORS };
	struct kcopyd_result result;
	struct kcopyd_dev *src;
	struct kcopyd_job *job;
	struct tu_nbd nbd;
	char want[256], got[65], source[256];
	int r;

	if (missing)
		cr_skip_test("%s", missing);
	memset(&nbd, 0, sizeof(nbd));
	cr_assert(tu_nbd_prepare(&nbd) == 0);
	r = tu_nbd_start_bad_ranges(&nbd, fx.src, bad, 1);
	cr_assert_eq(r, 0, "tu_nbd_start_bad_ranges: %d", r);
	cr_assert(kcopyd_dev_open(nbd.loop, O_RDONLY, &src) == 0);
	from = (struct io_region){ src, 0, SRC_SECTORS };
	cr_assert(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, &job) == 0);
	kcopyd_job_wait(job);
	cr_assert_eq(kcopyd_job_result(job, &result), 0);
	kcopyd_job_release(job);
	kcopyd_dev_close(src);
	tu_nbd_stop(&nbd);
	cr_assert_eq(result.read_err, 1);
	cr_assert_eq(result.read.sector, 5 * MiB / 512, "the failing chunk starts at 5 MiB");
	cr_assert_eq(result.hashes, KCOPYD_HASH_SHA256, "every chunk was hashed, the bad one as zeros");
	cr_assert_eq(tu_is_zero(fx.loop[0], 5 * MiB, MiB), 1, "the chunk was written as zeros");
	tool_digest("sha256sum", fx.loop[0], want, sizeof(want));
	to_hex(&result.digests[2], got);
	cr_assert_str_eq(got, want, "the digest is not the destination's");
	tool_digest("sha256sum", fx.src, source, sizeof(source));
	cr_assert_str_neq(got, source, "the source's own digest cannot be: its bytes were not all read");
}

static void count_cancelled(int read_err, unsigned int write_err, void *context)
{
	(void)read_err;
	(void)write_err;
	__atomic_add_fetch((int *)context, 1, __ATOMIC_SEQ_CST);
}

/* A paused job would never finish: destroying the client cancels it, and does not hang. */
Test(trust, destroy_cancels_a_paused_job, .init = setup, .fini = teardown)
{
	struct io_region from = { fx.src_dev, 0, SRC_SECTORS }, to = { fx.dst_dev[0], 0, SRC_SECTORS };
	struct kcopyd_job_options options = { .paused = 1 };
	struct kcopyd_job *job;
	int called = 0;

	cr_assert(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), count_cancelled, &called,
					&job) == 0);
	kcopyd_job_release(job);	/* handles go before the client; the job stays paused */
	options.paused = 0;
	options.flags = KCOPYD_VERIFY;
	to.bdev = fx.dst_dev[1];
	cr_assert(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), count_cancelled, &called,
					NULL) == 0);
	kcopyd_client_destroy(fx.kc);
	fx.kc = NULL;
	cr_assert_eq(called, 2);
	cr_assert_eq(tu_is_zero(fx.loop[0], 0, SRC_BYTES), 1, "the paused job wrote nothing");
	cr_assert_eq(tu_compare(fx.src, 0, fx.loop[1], 0, SRC_BYTES, NULL), 0, "the other one ran to its end");
}

/*
 * A lower rate takes effect at once: credit saved under a high rate is cut
 * to what the new rate allows (100 ms of it), not kept.  A first job runs
 * under a client rate of 10 GiB/s, faster than any loop device here, so
 * the client's credit fills up (to 1 GiB at most); then the rate drops to
 * the lowest, 4 KiB/s, under which 8 MiB of 1 MiB chunks cannot be copied
 * in a second: one chunk goes, the next waits 256 s.
 */
Test(trust, a_lower_client_rate_does_not_spend_credit_saved_under_the_higher, .init = setup, .fini = teardown)
{
	struct io_region from = { fx.src_dev, 0, SRC_SECTORS }, to[3];
	struct kcopyd_counts counts;
	struct kcopyd_job *job;
	int i;

	for (i = 0; i < 3; i++)
		to[i] = (struct io_region){ fx.dst_dev[i], 0, SRC_SECTORS };
	cr_assert_eq(kcopyd_client_set_rate(fx.kc, 10ull << 30), 0);
	cr_assert(kcopyd_submit(fx.kc, &from, 3, to, 0, NULL, NULL, &job) == 0);
	kcopyd_job_wait(job);
	kcopyd_job_release(job);
	cr_assert_eq(kcopyd_client_set_rate(fx.kc, KCOPYD_MIN_RATE), 0);
	from.count = to[0].count = 8 * MiB / 512;
	cr_assert(kcopyd_submit(fx.kc, &from, 1, to, 0, NULL, NULL, &job) == 0);
	tu_sleep_ms(1000);
	kcopyd_job_counts(job, &counts, sizeof(counts));
	cr_assert(counts.sectors_done < counts.sectors_total,
		  "8 MiB copied in a second at %u B/s: the credit of 10 GiB/s was spent (done %llu of %llu)",
		  KCOPYD_MIN_RATE, (unsigned long long)counts.sectors_done, (unsigned long long)counts.sectors_total);
	cr_assert_eq(kcopyd_job_cancel(job), 0);
	kcopyd_job_wait(job);
	kcopyd_job_release(job);
}

/* A memfd of @bytes with a pattern (@seed), or zeros (0), behind the fake driver. */
static struct kcopyd_dev *memdev(uint64_t bytes, uint64_t seed)
{
	struct kcopyd_dev *dev;
	int fd = memfd_create("kcopyd-trust", MFD_CLOEXEC);
	uint64_t *words = calloc(1, bytes), index;

	cr_assert(fd >= 0 && words);
	for (index = 0; seed && index < bytes / 8; index++)
		words[index] = (seed + index) * 0x9e3779b97f4a7c15ull;
	cr_assert(pwrite(fd, words, bytes, 0) == (ssize_t)bytes);
	free(words);
	cr_assert(kcopyd_dev_from_fd(fd, &dev) == 0);
	return dev;
}

/*
 * A cancel ends a hung read-back with -ECANCELED (the NBD driver's
 * abort()): that is the cancel, not a destination that failed to verify.
 * The fake driver holds the read-backs (a server that does not answer),
 * fails them with -ECANCELED when let go, and the job is cancelled in
 * between: it must end cancelled, unverified, with no error on the
 * destination.  Four chunks, all started at once (depth 4), so the job
 * is paused once the copy's I/O is in flight and its verify starts only
 * when the test says.
 */
Test(trust, a_read_back_ended_by_a_cancel_is_no_verify_error, .init = NULL, .timeout = 30)
{
	static struct fake_io fake;
	struct kcopyd_config config = { .num_pages = 1024, .subjob_sectors = 256, .depth = 4 };
	struct kcopyd_dev *src = memdev(512 * 1024, 7), *dst = memdev(512 * 1024, 0);
	struct io_region from = { src, 0, 1024 }, to = { dst, 0, 1024 };
	struct kcopyd_job_options options = { .flags = KCOPYD_VERIFY };
	struct kcopyd_client *kc;
	struct kcopyd_counts counts;
	struct kcopyd_result result;
	struct kcopyd_job *job;
	unsigned int spins = 0;

	fake_io_init(&fake);
	cr_assert(kcopyd_client_create_ops(&config, &fake_io_ops, &fake, &kc) == 0);
	fake_io_fail(&fake, dst, KCOPYD_IO_READ, 0, 1024, -ECANCELED);
	fake.hold = true;
	cr_assert(kcopyd_submit_options(kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, &job) == 0);
	while (fake_io_held(&fake) < 4 && spins++ < 10000)
		usleep(100);
	cr_assert_eq(fake_io_held(&fake), 4, "the four reads of the copy");
	cr_assert_eq(kcopyd_job_pause(job), 0);
	fake_io_release(&fake);
	for (spins = 0; spins < 10000; spins++) {
		kcopyd_job_counts(job, &counts, sizeof(counts));
		if (counts.phase == KCOPYD_PHASE_VERIFY)
			break;
		usleep(100);
	}
	cr_assert_eq(counts.phase, KCOPYD_PHASE_VERIFY, "phase %u", counts.phase);
	fake.hold = true;
	cr_assert_eq(kcopyd_job_resume(job), 0);
	for (spins = 0; fake_io_held(&fake) < 4 && spins < 10000; spins++)
		usleep(100);
	cr_assert_eq(fake_io_held(&fake), 4, "the four read-backs");
	cr_assert_eq(kcopyd_job_cancel(job), 0);
	tu_sleep_ms(50);	/* the I/O thread takes the cancel before it reaps */
	fake_io_release(&fake);
	kcopyd_job_wait(job);
	cr_assert_eq(kcopyd_job_result(job, &result), 0);
	kcopyd_job_release(job);
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
	pthread_mutex_destroy(&fake.lock);
	cr_assert_eq(result.cancelled, 1);
	cr_assert_eq(result.verified, 0, "verified %d", result.verified);
	cr_assert_eq(result.verify_err, 0, "verify_err %#x: the cancel is not the destination's", result.verify_err);
	cr_assert_eq(result.write_err, 0, "write_err %#x", result.write_err);
	cr_assert_eq(result.error, 0, "error %d", result.error);
}

/*
 * A client rate holds however many jobs share it: the jobs already on the
 * ready list when the client's credit runs out wait as the rest do, not
 * one chunk each first (a burst of as many chunks as jobs: with 100 jobs
 * at 10 MB/s, 100 MB in the first instant, 10 s of the rate).  Eight jobs
 * of one 1 MiB chunk under 4 KiB/s: the first goes, the next waits 256 s.
 */
Test(trust, a_client_rate_holds_many_jobs_from_the_first_chunk_on, .init = setup, .fini = teardown)
{
	struct kcopyd_config config = { .num_pages = 4096, .rate = KCOPYD_MIN_RATE };
	struct io_region from = { fx.src_dev, 0, MiB / 512 }, to;
	struct kcopyd_job *jobs[8];
	uint64_t done, done_all = 0;
	int i;

	kcopyd_client_destroy(fx.kc);
	cr_assert(kcopyd_client_create_config(&config, &fx.kc) == 0);
	for (i = 0; i < 8; i++) {
		to = (struct io_region){ fx.dst_dev[i % 3], (uint64_t)(i / 3) * (MiB / 512), MiB / 512 };
		cr_assert(kcopyd_submit(fx.kc, &from, 1, &to, 0, NULL, NULL, &jobs[i]) == 0);
	}
	tu_sleep_ms(1000);
	for (i = 0; i < 8; i++) {
		kcopyd_job_progress(jobs[i], &done, NULL);
		done_all += done;
	}
	cr_assert(done_all <= MiB / 512, "%llu sectors copied in a second at %u B/s: more than the one chunk",
		  (unsigned long long)done_all, KCOPYD_MIN_RATE);
	for (i = 0; i < 8; i++) {
		(void)kcopyd_job_cancel(jobs[i]);	/* -EALREADY for the one that went */
		kcopyd_job_wait(jobs[i]);
		kcopyd_job_release(jobs[i]);
	}
}

/*
 * A verify's flush that a cancel ends (-ECANCELED: the NBD driver's
 * abort() ends a flush the server does not answer) is the cancel, not a
 * write error on the destination.  The destination's driver here is the
 * local-file one with a flush that waits to be let go, then says
 * -ECANCELED; the job is cancelled while it waits.
 */
static atomic_int flush_state;	/* 1: in the flush; 2: let it return */

static int hanging_flush(struct kcopyd_dev *dev)
{
	(void)dev;
	atomic_store(&flush_state, 1);
	while (atomic_load(&flush_state) != 2)
		usleep(1000);
	return -ECANCELED;
}

Test(trust, a_flush_ended_by_a_cancel_is_no_write_error, .init = NULL, .timeout = 30)
{
	static struct fake_io fake;
	static struct kcopyd_driver hanging;
	struct kcopyd_config config = { .num_pages = 1024, .subjob_sectors = 256, .depth = 4 };
	struct kcopyd_dev *src = memdev(512 * 1024, 7), *dst = memdev(512 * 1024, 0);
	struct io_region from = { src, 0, 1024 }, to = { dst, 0, 1024 };
	struct kcopyd_job_options options = { .flags = KCOPYD_VERIFY };
	struct kcopyd_client *kc;
	struct kcopyd_result result;
	struct kcopyd_job *job;
	unsigned int spins;

	hanging = kcopyd_file_driver;
	hanging.flush = hanging_flush;
	dst->driver = &hanging;
	atomic_store(&flush_state, 0);
	fake_io_init(&fake);
	cr_assert(kcopyd_client_create_ops(&config, &fake_io_ops, &fake, &kc) == 0);
	cr_assert(kcopyd_submit_options(kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, &job) == 0);
	for (spins = 0; atomic_load(&flush_state) != 1 && spins < 10000; spins++)
		usleep(100);
	cr_assert_eq(atomic_load(&flush_state), 1, "the flush was not reached");
	cr_assert_eq(kcopyd_job_cancel(job), 0);
	atomic_store(&flush_state, 2);
	kcopyd_job_wait(job);
	cr_assert_eq(kcopyd_job_result(job, &result), 0);
	kcopyd_job_release(job);
	kcopyd_client_destroy(kc);
	dst->driver = &kcopyd_file_driver;
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
	pthread_mutex_destroy(&fake.lock);
	cr_assert_eq(result.cancelled, 1);
	cr_assert_eq(result.write_err, 0, "write_err %#x: the cancel is not the destination's", result.write_err);
	cr_assert_eq(result.write[0].error, 0, "write[0].error %d", result.write[0].error);
	cr_assert_eq(result.error, 0, "error %d", result.error);
	cr_assert_eq(result.verified, 0);
}

/*
 * With ignore_error, a read that a cancel ended (-ECANCELED) is not a bad
 * read: its chunk is not written as zeros over the destination, nor hashed
 * as zeros into a digest that would then be reported as the source's.
 * Four chunks, all read at once (depth 4) and held; the last one's read
 * ends -ECANCELED, after the cancel.
 */
Test(trust, with_ignore_error_a_read_ended_by_a_cancel_is_not_zeros, .init = NULL, .timeout = 30)
{
	static struct fake_io fake;
	struct kcopyd_config config = { .num_pages = 1024, .subjob_sectors = 256, .depth = 4 };
	struct kcopyd_dev *src = memdev(512 * 1024, 7), *dst = memdev(512 * 1024, 9);
	struct io_region from = { src, 0, 1024 }, to = { dst, 0, 1024 };
	struct kcopyd_job_options options = { .flags = KCOPYD_IGNORE_ERROR, .hashes = KCOPYD_HASH_SHA256 };
	struct kcopyd_client *kc;
	struct kcopyd_result result;
	struct kcopyd_job *job;
	unsigned char *last = malloc(128 * 1024);
	unsigned int spins;
	size_t index;
	bool zeros = true;

	fake_io_init(&fake);
	cr_assert(kcopyd_client_create_ops(&config, &fake_io_ops, &fake, &kc) == 0);
	fake_io_fail(&fake, src, KCOPYD_IO_READ, 768, 256, -ECANCELED);
	fake.hold = true;
	cr_assert(kcopyd_submit_options(kc, &from, 1, &to, &options, sizeof(options), NULL, NULL, &job) == 0);
	for (spins = 0; fake_io_held(&fake) < 4 && spins < 10000; spins++)
		usleep(100);
	cr_assert_eq(fake_io_held(&fake), 4, "the four reads");
	cr_assert_eq(kcopyd_job_cancel(job), 0);
	fake_io_release(&fake);
	kcopyd_job_wait(job);
	cr_assert_eq(kcopyd_job_result(job, &result), 0);
	kcopyd_job_release(job);
	kcopyd_client_destroy(kc);
	cr_assert(pread(kcopyd_file_fd(dst), last, 128 * 1024, 768 * 512) == 128 * 1024);
	for (index = 0; index < 128 * 1024 && zeros; index++)
		zeros = last[index] == 0;
	free(last);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
	pthread_mutex_destroy(&fake.lock);
	cr_assert_eq(result.cancelled, 1);
	cr_assert_eq(result.read_err, 0, "read_err %d: the cancel is not the source's", result.read_err);
	cr_assert(!zeros, "the chunk whose read the cancel ended was written as zeros");
	cr_assert_eq(result.hashes, 0, "a digest with zeros for a chunk never read");
}
