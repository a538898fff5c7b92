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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
	int called = 0;

	cr_assert(kcopyd_submit_options(fx.kc, &from, 1, &to, &options, sizeof(options), count_cancelled, &called,
					NULL) == 0);
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
