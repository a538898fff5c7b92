/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine against genuinely failing devices.  nbdkit serves a disk with
 * errors (nbdkit-ddrescue-filter for reads of chosen byte ranges,
 * nbdkit-error-filter for every read or write while a trigger file exists),
 * nbdfuse turns it into a file and a direct-I/O loop device turns that into
 * a block device, so the engine gets -EIO from io_getevents() like it would
 * from a dying disk.  Needs root, /dev/fuse, nbdkit and nbdfuse; skips (77)
 * without them.
 *
 * Errors that come and go use the error filter's rates (each request
 * fails at random); a slow disk is nbdkit-delay-filter; a disk that
 * vanishes is nbdkit killed under a running job.
 *
 * Jobs copy a 4 MiB source region in 64 KiB sub-jobs (64 of them).  The
 * destinations start out as the pattern FILL_SEED, so that every 4 KiB
 * block of a destination region can be told apart afterwards: copied from
 * the source ('S'), never written ('F'), written as zeros ('Z'), or
 * anything else ('?').  Failure messages show that map, run-length coded.
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
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kcopyd.h"
#include "testutil.h"

#define MiB		(1024ull * 1024)
#define DEV_BYTES	(16 * MiB)
#define DEV_SECTORS	(DEV_BYTES >> KCOPYD_SECTOR_SHIFT)
#define SRC_SEED	0xfa17ull
#define FILL_SEED	0xf111ull
#define SUBJOB		128u			/* sectors: 64 KiB sub-jobs */
#define REGION_SECTOR	2048ull			/* the source region ... */
#define REGION_COUNT	(64ull * SUBJOB)	/* ... 4 MiB, 64 sub-jobs */
#define BLOCK_SECTORS	8u			/* the 4 KiB blocks of the map */
#define NR_BLOCKS	(REGION_COUNT / BLOCK_SECTORS)

enum target_id { T_LOOP_A, T_LOOP_C, NR_TARGETS };

static struct fixture {
	char dir[256];
	char src_file[PATH_MAX];		/* SRC_SEED, DEV_BYTES */
	char src_loop[32];			/* a healthy loop device on it */
	struct kcopyd_dev *src;			/* src_loop */
	char dst_file[NR_TARGETS][PATH_MAX];	/* FILL_SEED, DEV_BYTES */
	char dst_loop[NR_TARGETS][32];
	struct kcopyd_dev *dst[NR_TARGETS];
	struct tu_nbd nbd_src;			/* a failing source, when a test starts one */
	struct kcopyd_dev *bad_src;
	struct tu_nbd nbd_dst;			/* a failing destination, when a test starts one */
	struct kcopyd_dev *bad_dst;
	struct kcopyd_client *kc;
} fx;

/* ---- fixture --------------------------------------------------------- */

static void teardown(void)
{
	int i;

	kcopyd_client_destroy(fx.kc);
	fx.kc = NULL;
	kcopyd_dev_close(fx.bad_src);
	kcopyd_dev_close(fx.bad_dst);
	fx.bad_src = fx.bad_dst = NULL;
	tu_nbd_stop(&fx.nbd_src);
	tu_nbd_stop(&fx.nbd_dst);
	kcopyd_dev_close(fx.src);
	fx.src = NULL;
	if (fx.src_loop[0])
		tu_loop_detach(fx.src_loop);
	fx.src_loop[0] = '\0';
	for (i = 0; i < NR_TARGETS; i++) {
		kcopyd_dev_close(fx.dst[i]);
		fx.dst[i] = NULL;
		if (fx.dst_loop[i][0])
			tu_loop_detach(fx.dst_loop[i]);
		fx.dst_loop[i][0] = '\0';
	}
	tu_tmpfs_unmount(fx.dir);
	fx.dir[0] = '\0';
}

static int build_fixture(const char **step)
{
	int i, r;

	*step = "tu_tmpfs_mount";
	r = tu_tmpfs_mount(128 * MiB, fx.dir, sizeof(fx.dir));
	if (r < 0)
		return r;
	snprintf(fx.src_file, sizeof(fx.src_file), "%s/source", fx.dir);
	*step = "tu_file_create(source)";
	r = tu_file_create(fx.src_file, DEV_BYTES, SRC_SEED);
	if (r < 0)
		return r;
	*step = "tu_loop_attach(source)";
	r = tu_loop_attach(fx.src_file, 512, true, fx.src_loop, sizeof(fx.src_loop));
	if (r < 0)
		return r;
	*step = "kcopyd_dev_open(source)";
	r = kcopyd_dev_open(fx.src_loop, O_RDONLY, &fx.src);
	if (r < 0)
		return r;
	for (i = 0; i < NR_TARGETS; i++) {
		snprintf(fx.dst_file[i], sizeof(fx.dst_file[i]), "%s/dest%d", fx.dir, i);
		*step = "tu_file_create(destination)";
		r = tu_file_create(fx.dst_file[i], DEV_BYTES, FILL_SEED);
		if (r < 0)
			return r;
		*step = "tu_loop_attach(destination)";
		r = tu_loop_attach(fx.dst_file[i], 512, true, fx.dst_loop[i], sizeof(fx.dst_loop[i]));
		if (r < 0)
			return r;
		*step = "kcopyd_dev_open(destination)";
		r = kcopyd_dev_open(fx.dst_loop[i], O_RDWR, &fx.dst[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static void setup(void)
{
	const char *step = "";
	int r;

	memset(&fx, 0, sizeof(fx));
	r = build_fixture(&step);
	if (r < 0) {
		teardown();
		cr_assert_fail("fixture: %s failed: %d (%s)", step, r, strerror(-r));
	}
}

TestSuite(faults, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers ----------------------------------------------------------- */

/* A client with 64 KiB sub-jobs and @depth of them in flight (0: default). */
static void make_client(unsigned int depth)
{
	const struct kcopyd_config config = { .num_pages = 256, .subjob_sectors = SUBJOB,
					      .depth = depth };
	struct kcopyd_stats stats;
	int r = kcopyd_client_create_config(&config, &fx.kc);

	cr_assert_eq(r, 0, "kcopyd_client_create_config: %d (%s)", r, strerror(-r));
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.subjob_sectors, SUBJOB, "subjob_sectors %u, configured %u",
		     stats.subjob_sectors, SUBJOB);
}

/* Serve the source file through nbd with reads of @n byte ranges failing. */
static void start_bad_source(const struct tu_range *bad, unsigned int n)
{
	int r = tu_nbd_start_bad_ranges(&fx.nbd_src, fx.src_file, bad, n);

	cr_assert_eq(r, 0, "tu_nbd_start_bad_ranges: %d (%s)", r, strerror(-r));
	r = kcopyd_dev_open(fx.nbd_src.loop, O_RDONLY, &fx.bad_src);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d (%s)", fx.nbd_src.loop, r, strerror(-r));
	cr_assert_eq(kcopyd_dev_is_direct(fx.bad_src), 1, "the nbd loop device is not direct");
}

/* A zeroed nbd destination whose writes fail while its trigger exists. */
static void start_bad_dest(void)
{
	int r = tu_nbd_start_write_errors(&fx.nbd_dst, DEV_BYTES);

	cr_assert_eq(r, 0, "tu_nbd_start_write_errors: %d (%s)", r, strerror(-r));
	r = kcopyd_dev_open(fx.nbd_dst.loop, O_RDWR, &fx.bad_dst);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d (%s)", fx.nbd_dst.loop, r, strerror(-r));
}

/* The bytes of the 4 KiB block @block_in_chunk of sub-job @chunk of the region. */
static struct tu_range bad_block(unsigned int chunk, unsigned int block_in_chunk)
{
	uint64_t sector = REGION_SECTOR + (uint64_t)chunk * SUBJOB + block_in_chunk * BLOCK_SECTORS;

	return (struct tu_range){ .off = sector << KCOPYD_SECTOR_SHIFT, .len = 4096 };
}

struct notified {
	pthread_mutex_t lock;
	unsigned int calls;
	int read_err;
	unsigned int write_err;
};

static void record_notify(int read_err, unsigned int write_err, void *context)
{
	struct notified *n = context;

	pthread_mutex_lock(&n->lock);
	n->calls++;
	n->read_err = read_err;
	n->write_err = write_err;
	pthread_mutex_unlock(&n->lock);
}

/* Run a job to its end; check the completion routine got what the result says. */
static void run_job(const char *what, const struct io_region *from, unsigned int n,
		    const struct io_region *dests, unsigned int flags, struct kcopyd_result *res)
{
	struct notified seen = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct kcopyd_job *job;
	int r;

	r = kcopyd_submit(fx.kc, from, n, dests, flags, record_notify, &seen, &job);
	cr_assert_eq(r, 0, "%s: kcopyd_submit: %d (%s)", what, r, strerror(-r));
	kcopyd_job_wait(job);
	r = kcopyd_job_result(job, res);
	kcopyd_job_release(job);
	cr_assert_eq(r, 0, "%s: kcopyd_job_result after wait: %d", what, r);
	cr_assert_eq(seen.calls, 1, "%s: completion routine called %u times", what, seen.calls);
	cr_assert(seen.read_err == res->read_err && seen.write_err == res->write_err,
		  "%s: the routine got read_err %d write_err 0x%x, the result says %d 0x%x", what,
		  seen.read_err, seen.write_err, res->read_err, res->write_err);
}

/*
 * The map of a destination region of REGION_COUNT sectors that should
 * hold the source from @src_sector: one letter per 4 KiB block, 'S'
 * source, 'F' fill pattern (never written), 'Z' zeros, '?' else.
 */
static void block_map(const char *path, uint64_t dst_sector, uint64_t src_sector,
		      char map[NR_BLOCKS + 1])
{
	const size_t bytes = REGION_COUNT << KCOPYD_SECTOR_SHIFT;
	unsigned char *got = malloc(bytes), *want = malloc(4096);
	unsigned int block;
	int r;

	cr_assert(got && want, "out of memory");
	r = tu_read(path, dst_sector << KCOPYD_SECTOR_SHIFT, got, bytes);
	cr_assert_eq(r, 0, "reading back %s: %d (%s)", path, r, strerror(-r));
	for (block = 0; block < NR_BLOCKS; block++) {
		const unsigned char *b = got + (size_t)block * 4096;
		uint64_t off = (uint64_t)block * 4096;
		char c = '?';

		tu_pattern_fill(want, 4096, SRC_SEED, (src_sector << KCOPYD_SECTOR_SHIFT) + off);
		if (!memcmp(b, want, 4096))
			c = 'S';
		if (c == '?') {
			tu_pattern_fill(want, 4096, FILL_SEED, (dst_sector << KCOPYD_SECTOR_SHIFT) + off);
			if (!memcmp(b, want, 4096))
				c = 'F';
		}
		if (c == '?') {
			memset(want, 0, 4096);
			if (!memcmp(b, want, 4096))
				c = 'Z';
		}
		map[block] = c;
	}
	map[NR_BLOCKS] = '\0';
	free(got);
	free(want);
}

/* "S*496 Z*16 S*512": a map, run-length coded for messages. */
static const char *rle(const char *map, char *out, size_t out_len)
{
	size_t used = 0, i = 0;

	out[0] = '\0';
	while (map[i] && used + 16 < out_len) {
		size_t run = 1;

		while (map[i + run] == map[i])
			run++;
		used += (size_t)snprintf(out + used, out_len - used, "%s%c*%zu", used ? " " : "",
					 map[i], run);
		i += run;
	}
	return out;
}

/* The failing read range is one sub-job of the source region holding @bad. */
static void expect_read_failure(const char *what, const struct kcopyd_result *res,
				const struct tu_range *bad)
{
	uint64_t bad_sector = bad->off >> KCOPYD_SECTOR_SHIFT;
	uint64_t bad_end = (bad->off + bad->len) >> KCOPYD_SECTOR_SHIFT;

	cr_assert_eq(res->read_err, 1, "%s: read_err %d, expected 1", what, res->read_err);
	cr_assert_eq(res->read.error, -EIO, "%s: result.read.error %d (%s), expected -EIO", what,
		     res->read.error, strerror(-res->read.error));
	cr_assert_eq(res->error, -EIO, "%s: result.error %d, expected -EIO (the first failure)",
		     what, res->error);
	cr_assert(res->read.count > 0 && res->read.count <= SUBJOB, "%s: result.read.count %" PRIu64
		  ", expected one sub-job (1..%u)", what, res->read.count, SUBJOB);
	cr_assert(res->read.sector >= REGION_SECTOR &&
		  res->read.sector + res->read.count <= REGION_SECTOR + REGION_COUNT,
		  "%s: result.read %" PRIu64 "+%" PRIu64 " is not inside the source region %llu+%llu",
		  what, res->read.sector, res->read.count, REGION_SECTOR, REGION_COUNT);
	cr_assert(res->read.sector <= bad_sector && bad_end <= res->read.sector + res->read.count,
		  "%s: result.read %" PRIu64 "+%" PRIu64 " does not hold the bad sectors %" PRIu64
		  "..%" PRIu64, what, res->read.sector, res->read.count, bad_sector, bad_end);
	cr_assert_eq(res->write_err, 0, "%s: write_err 0x%x after a read error", what,
		     res->write_err);
}

/* The blocks of the failed sub-job, as indexes into a map. */
static void failed_blocks(const struct kcopyd_result *res, unsigned int *first, unsigned int *end)
{
	*first = (unsigned int)((res->read.sector - REGION_SECTOR) / BLOCK_SECTORS);
	*end = (unsigned int)((res->read.sector + res->read.count - REGION_SECTOR +
			       BLOCK_SECTORS - 1) / BLOCK_SECTORS);
}

static const uint64_t dst_sector[NR_TARGETS] = { 4096, 100 };

static void region_dests(struct io_region dests[NR_TARGETS])
{
	int i;

	for (i = 0; i < NR_TARGETS; i++)
		dests[i] = (struct io_region){ .bdev = fx.dst[i], .sector = dst_sector[i],
					       .count = REGION_COUNT };
}

/* ---- the rig itself ----------------------------------------------------- */

Test(faults, rig_without_errors_copies_correctly)
{
	const struct tu_range none[1] = { { 0, 0 } };
	struct io_region from, dests[2];
	struct kcopyd_result res;
	uint64_t diff = 0;
	int r;

	start_bad_source(none, 0);
	start_bad_dest();
	make_client(0);
	from = (struct io_region){ .bdev = fx.bad_src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	dests[0] = (struct io_region){ .bdev = fx.bad_dst, .sector = 512, .count = REGION_COUNT };
	dests[1] = (struct io_region){ .bdev = fx.dst[T_LOOP_A], .sector = 0, .count = REGION_COUNT };
	run_job("nbd to nbd and tmpfs, no errors", &from, 2, dests, 0, &res);
	cr_assert(res.read_err == 0 && res.write_err == 0 && res.error == 0,
		  "no errors injected, yet read_err %d write_err 0x%x error %d", res.read_err,
		  res.write_err, res.error);
	cr_assert_eq(res.sectors_done, REGION_COUNT, "sectors_done %" PRIu64, res.sectors_done);
	r = tu_compare(fx.src_file, REGION_SECTOR << KCOPYD_SECTOR_SHIFT, fx.nbd_dst.loop,
		       512 << KCOPYD_SECTOR_SHIFT, REGION_COUNT << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "the nbd destination differs from the source at byte %" PRIu64 " (%d)",
		     diff, r);
	r = tu_compare(fx.src_file, REGION_SECTOR << KCOPYD_SECTOR_SHIFT, fx.dst_loop[T_LOOP_A], 0,
		       REGION_COUNT << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "the tmpfs destination differs from the source at byte %" PRIu64 " (%d)",
		     diff, r);
}

/* ---- read errors, no KCOPYD_IGNORE_ERROR, one sub-job at a time ------------ */

/*
 * With depth 1 the sub-jobs run strictly one after another, so the job must
 * stop exactly at the failing one: every earlier sub-job written, it and
 * every later one never written.
 */
static void read_error_stops_the_job(const char *what, unsigned int chunk)
{
	const struct tu_range bad = bad_block(chunk, 5);
	struct io_region from, dests[NR_TARGETS];
	struct kcopyd_result res;
	struct kcopyd_stats stats;
	char map[NR_BLOCKS + 1], text[256];
	unsigned int i, block, first, end;

	start_bad_source(&bad, 1);
	make_client(1);
	from = (struct io_region){ .bdev = fx.bad_src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	region_dests(dests);
	run_job(what, &from, NR_TARGETS, dests, 0, &res);
	expect_read_failure(what, &res, &bad);
	cr_assert_eq(res.read.sector, REGION_SECTOR + (uint64_t)chunk * SUBJOB,
		     "%s: result.read.sector %" PRIu64 ", expected sub-job %u at %" PRIu64, what,
		     res.read.sector, chunk, REGION_SECTOR + (uint64_t)chunk * SUBJOB);
	cr_assert_eq(res.sectors_done, res.read.sector - REGION_SECTOR, "%s: sectors_done %" PRIu64
		     ", expected the %" PRIu64 " sectors before the failing sub-job", what,
		     res.sectors_done, res.read.sector - REGION_SECTOR);
	cr_assert_eq(res.sectors_total, REGION_COUNT, "%s: sectors_total %" PRIu64, what,
		     res.sectors_total);
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.read_errors, 1, "%s: stats.read_errors %" PRIu64 ", expected 1", what,
		     stats.read_errors);
	cr_assert_eq(stats.write_errors, 0, "%s: stats.write_errors %" PRIu64, what,
		     stats.write_errors);

	failed_blocks(&res, &first, &end);
	for (i = 0; i < NR_TARGETS; i++) {
		block_map(fx.dst_loop[i], dst_sector[i], REGION_SECTOR, map);
		for (block = 0; block < NR_BLOCKS; block++) {
			char want = block < first ? 'S' : 'F';

			cr_assert_eq(map[block], want, "%s: dest %u block %u is '%c', expected '%c' "
				     "(nothing at or after the failing sub-job, blocks %u..%u, may be "
				     "written); map: %s", what, i, block, map[block], want, first,
				     end - 1, rle(map, text, sizeof(text)));
		}
	}
}

Test(faults, read_error_in_first_chunk_stops_the_job)
{
	read_error_stops_the_job("read error, first sub-job, depth 1", 0);
}

Test(faults, read_error_in_middle_chunk_stops_the_job)
{
	read_error_stops_the_job("read error, middle sub-job, depth 1", 31);
}

Test(faults, read_error_in_last_chunk_stops_the_job)
{
	read_error_stops_the_job("read error, last sub-job, depth 1", 63);
}

Test(faults, read_error_with_default_depth_never_writes_the_failed_chunk)
{
	const char *what = "read error, middle sub-job, default depth";
	const struct tu_range bad = bad_block(40, 0);
	struct io_region from, dests[NR_TARGETS];
	struct kcopyd_result res;
	char map[NR_BLOCKS + 1], text[256];
	unsigned int i, block, first, end;

	start_bad_source(&bad, 1);
	make_client(0);
	from = (struct io_region){ .bdev = fx.bad_src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	region_dests(dests);
	run_job(what, &from, NR_TARGETS, dests, 0, &res);
	expect_read_failure(what, &res, &bad);
	cr_assert(res.sectors_done < REGION_COUNT, "%s: sectors_done %" PRIu64 " of %llu: the "
		  "failed sub-job cannot count", what, res.sectors_done, REGION_COUNT);
	failed_blocks(&res, &first, &end);
	for (i = 0; i < NR_TARGETS; i++) {
		block_map(fx.dst_loop[i], dst_sector[i], REGION_SECTOR, map);
		for (block = 0; block < NR_BLOCKS; block++) {
			bool failed = block >= first && block < end;

			cr_assert(failed ? map[block] == 'F' : map[block] == 'S' || map[block] == 'F',
				  "%s: dest %u block %u is '%c' (%s); map: %s", what, i, block,
				  map[block], failed ? "in the failed sub-job, must stay unwritten"
						     : "must be the source or unwritten",
				  rle(map, text, sizeof(text)));
		}
	}
}

/* ---- read errors with KCOPYD_IGNORE_ERROR ---------------------------------- */

/*
 * The job runs to its end; the failed sub-jobs are written as zeros and
 * hold every bad block; every other block is the source.
 */
static void read_errors_are_ignored(const char *what, const struct tu_range *bad, unsigned int n)
{
	struct io_region from, dests[NR_TARGETS];
	struct kcopyd_result res;
	char map[NR_BLOCKS + 1], text[256];
	unsigned int i, k, block, first, end;

	start_bad_source(bad, n);
	make_client(0);
	from = (struct io_region){ .bdev = fx.bad_src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	region_dests(dests);
	run_job(what, &from, NR_TARGETS, dests, KCOPYD_IGNORE_ERROR, &res);
	/* bad[0] is the lowest: result.read names its sub-job. */
	expect_read_failure(what, &res, &bad[0]);
	cr_assert_eq(res.sectors_done, REGION_COUNT, "%s: sectors_done %" PRIu64 " of %llu: with "
		     "KCOPYD_IGNORE_ERROR the job runs to its end", what, res.sectors_done,
		     REGION_COUNT);
	cr_assert_eq(res.cancelled, 0, "%s: cancelled", what);
	failed_blocks(&res, &first, &end);
	for (i = 0; i < NR_TARGETS; i++) {
		block_map(fx.dst_loop[i], dst_sector[i], REGION_SECTOR, map);
		rle(map, text, sizeof(text));
		for (block = first; block < end; block++)
			cr_assert_eq(map[block], 'Z', "%s: dest %u block %u of the failed sub-job "
				     "is '%c', expected zeros; map: %s", what, i, block, map[block],
				     text);
		for (k = 0; k < n; k++) {
			block = (unsigned int)(((bad[k].off >> KCOPYD_SECTOR_SHIFT) - REGION_SECTOR) /
					       BLOCK_SECTORS);
			cr_assert_eq(map[block], 'Z', "%s: dest %u: bad block %u is '%c', expected "
				     "zeros; map: %s", what, i, block, map[block], text);
		}
		/* A zero run is a failed sub-job: at most SUBJOB sectors per bad range. */
		for (block = 0; block < NR_BLOCKS; block++)
			cr_assert(map[block] == 'S' || map[block] == 'Z', "%s: dest %u block %u is "
				  "'%c', expected the source or zeros; map: %s", what, i, block,
				  map[block], text);
		cr_assert(strspn(map, "S") == first, "%s: dest %u: the first zero block is %zu, "
			  "but result.read starts at block %u; map: %s", what, i, strspn(map, "S"),
			  first, text);
		{
			unsigned int zeros = 0;

			for (block = 0; block < NR_BLOCKS; block++)
				zeros += map[block] == 'Z';
			cr_assert(zeros <= n * SUBJOB / BLOCK_SECTORS, "%s: dest %u: %u zero blocks "
				  "for %u bad ranges of at most %u blocks' sub-jobs; map: %s", what, i,
				  zeros, n, SUBJOB / BLOCK_SECTORS, text);
		}
	}
}

Test(faults, ignore_error_zeroes_a_failed_first_chunk)
{
	const struct tu_range bad[1] = { bad_block(0, 0) };

	read_errors_are_ignored("ignore error, first sub-job", bad, 1);
}

Test(faults, ignore_error_zeroes_a_failed_middle_chunk)
{
	const struct tu_range bad[1] = { bad_block(31, 9) };

	read_errors_are_ignored("ignore error, middle sub-job", bad, 1);
}

Test(faults, ignore_error_zeroes_a_failed_last_chunk)
{
	const struct tu_range bad[1] = { bad_block(63, 15) };

	read_errors_are_ignored("ignore error, last sub-job", bad, 1);
}

Test(faults, ignore_error_reports_the_lowest_of_two_failed_chunks)
{
	const struct tu_range bad[2] = { bad_block(2, 3), bad_block(60, 1) };

	read_errors_are_ignored("ignore error, sub-jobs 2 and 60", bad, 2);
}

/* ---- read errors switched on by the trigger file ------------------------ */

Test(faults, read_errors_switched_on_and_off)
{
	const char *what = "error filter on reads";
	struct io_region from, to;
	struct kcopyd_result res;
	uint64_t diff = 0;
	int r;

	r = tu_nbd_start_read_errors(&fx.nbd_src, DEV_BYTES);
	cr_assert_eq(r, 0, "tu_nbd_start_read_errors: %d (%s)", r, strerror(-r));
	/* The RAM disk starts zeroed: fill it through the loop device. */
	r = tu_pattern_write(fx.nbd_src.loop, 0, DEV_BYTES, SRC_SEED, 0);
	cr_assert_eq(r, 0, "filling %s: %d (%s)", fx.nbd_src.loop, r, strerror(-r));
	r = kcopyd_dev_open(fx.nbd_src.loop, O_RDONLY, &fx.bad_src);
	cr_assert_eq(r, 0, "kcopyd_dev_open: %d", r);
	make_client(1);
	from = (struct io_region){ .bdev = fx.bad_src, .sector = REGION_SECTOR, .count = REGION_COUNT };

	/* Off: a clean copy. */
	to = (struct io_region){ .bdev = fx.dst[T_LOOP_A], .sector = 0, .count = REGION_COUNT };
	run_job("errors off", &from, 1, &to, 0, &res);
	cr_assert(res.read_err == 0 && res.error == 0, "errors off: read_err %d error %d",
		  res.read_err, res.error);
	r = tu_pattern_check(fx.dst_loop[T_LOOP_A], 0, REGION_COUNT << KCOPYD_SECTOR_SHIFT, SRC_SEED,
			     REGION_SECTOR << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "errors off: wrong at byte %" PRIu64 " (%d)", diff, r);

	/* On: the first sub-job fails and nothing is written. */
	cr_assert_eq(tu_nbd_errors(&fx.nbd_src, true), 0, "creating the trigger file");
	to.bdev = fx.dst[T_LOOP_C];
	to.sector = 8192;
	run_job(what, &from, 1, &to, 0, &res);
	cr_assert_eq(res.read_err, 1, "%s: read_err %d", what, res.read_err);
	cr_assert_eq(res.read.error, -EIO, "%s: read.error %d", what, res.read.error);
	cr_assert(res.read.sector == REGION_SECTOR && res.read.count > 0 &&
		  res.read.count <= SUBJOB, "%s: read failure at %" PRIu64 "+%" PRIu64 ", expected "
		  "the first sub-job at %llu", what, res.read.sector, res.read.count, REGION_SECTOR);
	cr_assert_eq(res.sectors_done, 0, "%s: sectors_done %" PRIu64, what, res.sectors_done);
	r = tu_pattern_check(fx.dst_loop[T_LOOP_C], 8192ull << KCOPYD_SECTOR_SHIFT,
			     REGION_COUNT << KCOPYD_SECTOR_SHIFT, FILL_SEED,
			     8192ull << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "%s: the destination was written at byte %" PRIu64 " (%d)", what, diff, r);

	/* Off again: the client is not wedged. */
	cr_assert_eq(tu_nbd_errors(&fx.nbd_src, false), 0, "removing the trigger file");
	run_job("errors off again", &from, 1, &to, 0, &res);
	cr_assert(res.read_err == 0 && res.error == 0, "errors off again: read_err %d error %d",
		  res.read_err, res.error);
	r = tu_pattern_check(fx.dst_loop[T_LOOP_C], 8192ull << KCOPYD_SECTOR_SHIFT,
			     REGION_COUNT << KCOPYD_SECTOR_SHIFT, SRC_SEED,
			     REGION_SECTOR << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "errors off again: wrong at byte %" PRIu64 " (%d)", diff, r);
}

/* ---- write errors on one destination of three ---------------------------- */

#define BAD_DEST 1u

static void three_dests(struct io_region dests[3])
{
	dests[0] = (struct io_region){ .bdev = fx.dst[T_LOOP_A], .sector = 4096, .count = REGION_COUNT };
	dests[BAD_DEST] = (struct io_region){ .bdev = fx.bad_dst, .sector = 1024,
					      .count = REGION_COUNT };
	dests[2] = (struct io_region){ .bdev = fx.dst[T_LOOP_C], .sector = 100, .count = REGION_COUNT };
}

static void expect_write_failure(const char *what, const struct kcopyd_result *res,
				 const struct io_region *dests)
{
	unsigned int i;

	cr_assert_eq(res->write_err, 1u << BAD_DEST, "%s: write_err 0x%x, expected exactly bit %u",
		     what, res->write_err, BAD_DEST);
	cr_assert_eq(res->read_err, 0, "%s: read_err %d", what, res->read_err);
	cr_assert_eq(res->error, -EIO, "%s: result.error %d, expected -EIO", what, res->error);
	cr_assert_eq(res->write[BAD_DEST].error, -EIO, "%s: write[%u].error %d (%s), expected -EIO",
		     what, BAD_DEST, res->write[BAD_DEST].error,
		     strerror(-res->write[BAD_DEST].error));
	/* Every write to it fails, so the lowest failure is its first sub-job. */
	cr_assert(res->write[BAD_DEST].sector == dests[BAD_DEST].sector &&
		  res->write[BAD_DEST].count > 0 && res->write[BAD_DEST].count <= SUBJOB,
		  "%s: write[%u] failed at %" PRIu64 "+%" PRIu64 ", expected the first sub-job of "
		  "%" PRIu64 "+%" PRIu64, what, BAD_DEST, res->write[BAD_DEST].sector,
		  res->write[BAD_DEST].count, dests[BAD_DEST].sector, dests[BAD_DEST].count);
	for (i = 0; i < 3; i++)
		if (i != BAD_DEST)
			cr_assert_eq(res->write[i].error, 0, "%s: write[%u].error %d on a healthy "
				     "destination", what, i, res->write[i].error);
	cr_assert_eq(res->read.error, 0, "%s: read.error %d", what, res->read.error);
}

Test(faults, one_failing_dest_of_three_with_ignore_error)
{
	const char *what = "write errors on dest 1 of 3, ignore error";
	struct io_region from, dests[3];
	struct kcopyd_result res;
	struct kcopyd_stats stats;
	unsigned int i;
	uint64_t diff = 0;
	int r;

	start_bad_dest();
	cr_assert_eq(tu_nbd_errors(&fx.nbd_dst, true), 0, "creating the trigger file");
	make_client(0);
	from = (struct io_region){ .bdev = fx.src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	three_dests(dests);
	run_job(what, &from, 3, dests, KCOPYD_IGNORE_ERROR, &res);
	expect_write_failure(what, &res, dests);
	cr_assert_eq(res.sectors_done, REGION_COUNT, "%s: sectors_done %" PRIu64 ", expected all "
		     "%llu (failed writes count with KCOPYD_IGNORE_ERROR)", what, res.sectors_done,
		     REGION_COUNT);
	for (i = 0; i < 3; i++) {
		if (i == BAD_DEST)
			continue;
		r = tu_compare(fx.src_file, REGION_SECTOR << KCOPYD_SECTOR_SHIFT,
			       fx.dst_loop[i == 0 ? T_LOOP_A : T_LOOP_C],
			       dests[i].sector << KCOPYD_SECTOR_SHIFT,
			       REGION_COUNT << KCOPYD_SECTOR_SHIFT, &diff);
		cr_assert_eq(r, 0, "%s: healthy dest %u differs from the source at byte %" PRIu64
			     " (%d)", what, i, diff, r);
	}
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.read_errors, 0, "%s: stats.read_errors %" PRIu64, what,
		     stats.read_errors);
	cr_assert_eq(stats.write_errors, REGION_COUNT / SUBJOB, "%s: stats.write_errors %" PRIu64
		     ", expected one per sub-job (%llu)", what, stats.write_errors,
		     REGION_COUNT / SUBJOB);
	cr_assert_eq(stats.sectors_written, 2 * REGION_COUNT, "%s: stats.sectors_written %" PRIu64
		     ", expected the two healthy copies (%llu)", what, stats.sectors_written,
		     2 * REGION_COUNT);
}

Test(faults, one_failing_dest_of_three_stops_the_job)
{
	const char *what = "write errors on dest 1 of 3, no ignore error";
	struct io_region from, dests[3];
	struct kcopyd_result res;
	char map[NR_BLOCKS + 1], text[256];
	unsigned int i, block;

	start_bad_dest();
	cr_assert_eq(tu_nbd_errors(&fx.nbd_dst, true), 0, "creating the trigger file");
	make_client(0);
	from = (struct io_region){ .bdev = fx.src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	three_dests(dests);
	run_job(what, &from, 3, dests, 0, &res);
	expect_write_failure(what, &res, dests);
	cr_assert_eq(res.sectors_done, 0, "%s: sectors_done %" PRIu64 ", expected 0: every sub-job "
		     "has a failed write", what, res.sectors_done);
	cr_assert_eq(res.sectors_total, REGION_COUNT, "%s: sectors_total %" PRIu64, what,
		     res.sectors_total);
	/* The healthy destinations hold the source or were never written. */
	for (i = 0; i < 3; i++) {
		if (i == BAD_DEST)
			continue;
		block_map(fx.dst_loop[i == 0 ? T_LOOP_A : T_LOOP_C], dests[i].sector, REGION_SECTOR,
			  map);
		for (block = 0; block < NR_BLOCKS; block++)
			cr_assert(map[block] == 'S' || map[block] == 'F', "%s: dest %u block %u is "
				  "'%c'; map: %s", what, i, block, map[block],
				  rle(map, text, sizeof(text)));
	}
}

Test(faults, zero_job_with_a_failing_dest)
{
	const char *what = "zero job, write errors on dest 1 of 2, ignore error";
	struct io_region dests[2];
	struct kcopyd_result res;
	uint64_t diff = 0;
	int r;

	start_bad_dest();
	cr_assert_eq(tu_nbd_errors(&fx.nbd_dst, true), 0, "creating the trigger file");
	make_client(0);
	dests[0] = (struct io_region){ .bdev = fx.dst[T_LOOP_A], .sector = 333, .count = REGION_COUNT };
	dests[1] = (struct io_region){ .bdev = fx.bad_dst, .sector = 0, .count = REGION_COUNT };
	run_job(what, NULL, 2, dests, KCOPYD_IGNORE_ERROR, &res);
	cr_assert_eq(res.write_err, 2u, "%s: write_err 0x%x, expected 0x2", what, res.write_err);
	cr_assert_eq(res.read_err, 0, "%s: read_err %d on a zero job", what, res.read_err);
	cr_assert_eq(res.write[1].error, -EIO, "%s: write[1].error %d", what, res.write[1].error);
	cr_assert_eq(res.write[0].error, 0, "%s: write[0].error %d", what, res.write[0].error);
	r = tu_find_nonzero(fx.dst_loop[T_LOOP_A], 333 << KCOPYD_SECTOR_SHIFT,
			    REGION_COUNT << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "%s: the healthy dest is not zero at byte %" PRIu64 " (%d)", what, diff, r);
	r = tu_pattern_check(fx.dst_loop[T_LOOP_A], 0, 333 << KCOPYD_SECTOR_SHIFT, FILL_SEED, 0,
			     &diff);
	cr_assert_eq(r, 0, "%s: the healthy dest was written before its region (byte %" PRIu64 ")",
		     what, diff);
}

/* ---- errors that come and go --------------------------------------------- */

#define CHUNKS (REGION_COUNT / SUBJOB)
#define BLOCKS_PER_CHUNK (SUBJOB / BLOCK_SECTORS)

/* A RAM disk with the source's contents whose reads fail at @rate once errors are on. */
static void start_flaky_source(const char *rate)
{
	int r = tu_nbd_start_flaky(&fx.nbd_src, DEV_BYTES, rate, NULL);

	cr_assert_eq(r, 0, "tu_nbd_start_flaky: %d (%s)", r, strerror(-r));
	r = tu_pattern_write(fx.nbd_src.loop, 0, DEV_BYTES, SRC_SEED, 0);
	cr_assert_eq(r, 0, "filling %s: %d (%s)", fx.nbd_src.loop, r, strerror(-r));
	r = kcopyd_dev_open(fx.nbd_src.loop, O_RDONLY, &fx.bad_src);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d (%s)", fx.nbd_src.loop, r, strerror(-r));
	cr_assert_eq(tu_nbd_errors(&fx.nbd_src, true), 0, "creating the trigger file");
}

/* The letter every block of sub-job @chunk has in @map, or '?' if they differ. */
static char chunk_letter(const char *map, unsigned int chunk)
{
	unsigned int block;

	for (block = 1; block < BLOCKS_PER_CHUNK; block++)
		if (map[chunk * BLOCKS_PER_CHUNK + block] != map[chunk * BLOCKS_PER_CHUNK])
			return '?';
	return map[chunk * BLOCKS_PER_CHUNK];
}

/*
 * Reads fail at random (20% of requests): with KCOPYD_IGNORE_ERROR every
 * sub-job is either copied or, if its read failed, zeros; the lowest zeroed
 * one is the reported failure, and the failed reads are what stats count.
 */
Test(faults, flaky_reads_with_ignore_error_zero_exactly_the_failed_chunks)
{
	const char *what = "reads failing at 20%, ignore error";
	struct io_region from, to;
	struct kcopyd_result res;
	struct kcopyd_stats stats;
	char map[NR_BLOCKS + 1], text[256];
	unsigned int chunk, zeroed = 0, copied = 0, first_zeroed = CHUNKS;

	start_flaky_source("20%");
	make_client(0);
	from = (struct io_region){ .bdev = fx.bad_src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	to = (struct io_region){ .bdev = fx.dst[T_LOOP_A], .sector = 4096, .count = REGION_COUNT };
	run_job(what, &from, 1, &to, KCOPYD_IGNORE_ERROR, &res);
	block_map(fx.dst_loop[T_LOOP_A], to.sector, REGION_SECTOR, map);
	for (chunk = 0; chunk < CHUNKS; chunk++) {
		char letter = chunk_letter(map, chunk);

		cr_assert(letter == 'S' || letter == 'Z', "%s: sub-job %u is neither the source nor zeros; map: %s",
			  what, chunk, rle(map, text, sizeof(text)));
		if (letter == 'Z' && first_zeroed == CHUNKS)
			first_zeroed = chunk;
		zeroed += letter == 'Z';
		copied += letter == 'S';
	}
	/* 64 draws at 20%: all clean or all failing has a chance below one in a million. */
	cr_assert(zeroed > 0 && copied > 0, "%s: %u sub-jobs zeroed, %u copied; map: %s", what, zeroed, copied,
		  rle(map, text, sizeof(text)));
	cr_assert_eq(res.read_err, 1, "%s: read_err %d with %u failed sub-jobs", what, res.read_err, zeroed);
	cr_assert_eq(res.read.error, -EIO, "%s: read.error %d", what, res.read.error);
	cr_assert_eq(res.read.sector, REGION_SECTOR + (uint64_t)first_zeroed * SUBJOB,
		     "%s: reported failure at sector %" PRIu64 ", the lowest zeroed sub-job is %u (sector %llu)",
		     what, res.read.sector, first_zeroed, REGION_SECTOR + (unsigned long long)first_zeroed * SUBJOB);
	cr_assert_eq(res.sectors_done, REGION_COUNT, "%s: sectors_done %" PRIu64, what, res.sectors_done);
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.read_errors, zeroed, "%s: stats.read_errors %" PRIu64 ", %u sub-jobs zeroed", what,
		     stats.read_errors, zeroed);
}

/* Without KCOPYD_IGNORE_ERROR the first failure stops the job: below it everything, above it nothing. */
Test(faults, flaky_reads_stop_the_job_with_nothing_written_above_the_failure)
{
	const char *what = "reads failing at 20%, no ignore error";
	struct io_region from, to;
	struct kcopyd_result res;
	char map[NR_BLOCKS + 1], text[256];
	unsigned int chunk, failed_chunk;

	start_flaky_source("20%");
	make_client(0);
	from = (struct io_region){ .bdev = fx.bad_src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	to = (struct io_region){ .bdev = fx.dst[T_LOOP_C], .sector = 0, .count = REGION_COUNT };
	run_job(what, &from, 1, &to, 0, &res);
	cr_assert_eq(res.read_err, 1, "%s: read_err %d (64 draws at 20%% all passed?)", what, res.read_err);
	cr_assert_eq(res.read.error, -EIO, "%s: read.error %d", what, res.read.error);
	cr_assert(res.read.sector >= REGION_SECTOR && (res.read.sector - REGION_SECTOR) % SUBJOB == 0,
		  "%s: failure at sector %" PRIu64 " is not a sub-job start", what, res.read.sector);
	failed_chunk = (unsigned int)((res.read.sector - REGION_SECTOR) / SUBJOB);
	block_map(fx.dst_loop[T_LOOP_C], to.sector, REGION_SECTOR, map);
	for (chunk = 0; chunk < CHUNKS; chunk++)
		cr_assert_eq(chunk_letter(map, chunk), chunk < failed_chunk ? 'S' : 'F',
			     "%s: sub-job %u is '%c', the failure is sub-job %u; map: %s", what, chunk,
			     chunk_letter(map, chunk), failed_chunk, rle(map, text, sizeof(text)));
	cr_assert_eq(res.sectors_done, (uint64_t)failed_chunk * SUBJOB, "%s: sectors_done %" PRIu64
		     ", %u sub-jobs below the failure", what, res.sectors_done, failed_chunk);
}

/* Writes to one destination of three fail at random: only its bit, the other two intact. */
Test(faults, flaky_writes_on_one_dest_of_three)
{
	const char *what = "writes to dest 1 of 3 failing at 30%, ignore error";
	struct io_region from, dests[3];
	struct kcopyd_result res;
	uint64_t diff = 0;
	unsigned int i;
	int r;

	r = tu_nbd_start_flaky(&fx.nbd_dst, DEV_BYTES, NULL, "30%");
	cr_assert_eq(r, 0, "tu_nbd_start_flaky: %d (%s)", r, strerror(-r));
	r = kcopyd_dev_open(fx.nbd_dst.loop, O_RDWR, &fx.bad_dst);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d (%s)", fx.nbd_dst.loop, r, strerror(-r));
	cr_assert_eq(tu_nbd_errors(&fx.nbd_dst, true), 0, "creating the trigger file");
	make_client(0);
	from = (struct io_region){ .bdev = fx.src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	three_dests(dests);
	run_job(what, &from, 3, dests, KCOPYD_IGNORE_ERROR, &res);
	cr_assert_eq(res.write_err, 1u << BAD_DEST, "%s: write_err 0x%x, expected exactly bit %u", what,
		     res.write_err, BAD_DEST);
	cr_assert_eq(res.write[BAD_DEST].error, -EIO, "%s: write[%u].error %d", what, BAD_DEST,
		     res.write[BAD_DEST].error);
	cr_assert(res.read_err == 0 && res.write[0].error == 0 && res.write[2].error == 0,
		  "%s: read_err %d, write[0] %d, write[2] %d", what, res.read_err, res.write[0].error,
		  res.write[2].error);
	cr_assert_eq(res.sectors_done, REGION_COUNT, "%s: sectors_done %" PRIu64, what, res.sectors_done);
	for (i = 0; i < 3; i += 2) {
		r = tu_compare(fx.src_file, REGION_SECTOR << KCOPYD_SECTOR_SHIFT, fx.dst_loop[i == 0 ? T_LOOP_A : T_LOOP_C],
			       dests[i].sector << KCOPYD_SECTOR_SHIFT, REGION_COUNT << KCOPYD_SECTOR_SHIFT, &diff);
		cr_assert_eq(r, 0, "%s: healthy dest %u differs from the source at byte %" PRIu64 " (%d)", what, i,
			     diff, r);
	}
}

/* ---- a slow destination, and one that vanishes ------------------------------ */

/* A zeroed RAM disk destination that takes @delay_ms longer for every request. */
static void start_slow_dest(unsigned int delay_ms)
{
	int r = tu_nbd_start_slow(&fx.nbd_dst, DEV_BYTES, delay_ms);

	cr_assert_eq(r, 0, "tu_nbd_start_slow: %d (%s)", r, strerror(-r));
	r = kcopyd_dev_open(fx.nbd_dst.loop, O_RDWR, &fx.bad_dst);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d (%s)", fx.nbd_dst.loop, r, strerror(-r));
}

/*
 * One destination of three takes 20 ms more per request, the others are
 * tmpfs loop devices (the test prints the measured ratio: hundreds).  The job is correct on all
 * three, a job between fast devices submitted meanwhile completes correctly
 * too, and the buffers never pass the budget (4 slots).
 */
Test(faults, slow_destination_among_fast_ones)
{
	const char *what = "dest 1 of 3 20 ms slower per request";
	const struct kcopyd_config config = { .num_pages = 64, .subjob_sectors = SUBJOB };
	struct io_region from, dests[3], fast_from, fast_to;
	struct kcopyd_result res, fast_res;
	struct kcopyd_stats stats;
	struct kcopyd_job *slow_job;
	double start, slow_seconds, fast_seconds;
	uint64_t diff = 0;
	unsigned int i;
	int r;

	start_slow_dest(20);
	r = kcopyd_client_create_config(&config, &fx.kc);
	cr_assert_eq(r, 0, "kcopyd_client_create_config: %d (%s)", r, strerror(-r));
	from = (struct io_region){ .bdev = fx.src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	three_dests(dests);

	start = tu_now();
	r = kcopyd_submit(fx.kc, &from, 3, dests, 0, NULL, NULL, &slow_job);
	cr_assert_eq(r, 0, "%s: kcopyd_submit: %d (%s)", what, r, strerror(-r));
	/* Meanwhile, a copy between fast devices only (another part of dest 0's device). */
	fast_from = (struct io_region){ .bdev = fx.src, .sector = 0, .count = 2048 };
	fast_to = (struct io_region){ .bdev = fx.dst[T_LOOP_A], .sector = 20000, .count = 2048 };
	r = tu_copy_sync(fx.kc, &fast_from, 1, &fast_to, 0, &fast_res);
	cr_assert_eq(r, 0, "%s: the concurrent fast copy: %d", what, r);
	kcopyd_job_wait(slow_job);
	slow_seconds = tu_now() - start;
	r = kcopyd_job_result(slow_job, &res);
	kcopyd_job_release(slow_job);
	cr_assert_eq(r, 0, "%s: kcopyd_job_result: %d", what, r);
	cr_assert(res.read_err == 0 && res.write_err == 0 && res.error == 0 && res.sectors_done == REGION_COUNT,
		  "%s: read_err %d write_err 0x%x error %d sectors_done %" PRIu64, what, res.read_err, res.write_err,
		  res.error, res.sectors_done);
	cr_assert(fast_res.read_err == 0 && fast_res.write_err == 0, "%s: the fast copy failed: %d 0x%x", what,
		  fast_res.read_err, fast_res.write_err);
	r = tu_compare(fx.src_file, 0, fx.dst_loop[T_LOOP_A], 20000ull << KCOPYD_SECTOR_SHIFT,
		       2048ull << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "%s: the fast copy differs at byte %" PRIu64 " (%d)", what, diff, r);
	for (i = 0; i < 3; i++) {
		const char *path = i == 0 ? fx.dst_loop[T_LOOP_A] : i == 1 ? fx.nbd_dst.loop : fx.dst_loop[T_LOOP_C];

		r = tu_compare(fx.src_file, REGION_SECTOR << KCOPYD_SECTOR_SHIFT, path,
			       dests[i].sector << KCOPYD_SECTOR_SHIFT, REGION_COUNT << KCOPYD_SECTOR_SHIFT, &diff);
		cr_assert_eq(r, 0, "%s: dest %u (%s) differs from the source at byte %" PRIu64 " (%d)", what, i, path,
			     diff, r);
	}
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert(stats.pages_peak <= stats.pages_total, "%s: pages_peak %u over the budget %u", what,
		  stats.pages_peak, stats.pages_total);

	/* The same copy to the fast destinations alone, for the ratio. */
	start = tu_now();
	run_job("fast only", &from, 1, &dests[0], 0, &res);
	fast_seconds = tu_now() - start;
	fprintf(stderr, "%s: %.3f s with the slow destination, %.4f s to a fast one alone (%.0fx)\n", what, slow_seconds,
		    fast_seconds, fast_seconds > 0 ? slow_seconds / fast_seconds : 0.0);
}

/*
 * The destination's server dies in the middle of a job (nbdkit killed): the
 * job ends, its bit set with the errno of the failed writes; the healthy
 * destination holds the source or its old contents, nothing else; and the
 * same client then runs a new job correctly.
 */
Test(faults, destination_vanishes_mid_job)
{
	const char *what = "dest 1 of 2 killed mid-job";
	struct io_region from, dests[2];
	struct kcopyd_result res;
	struct kcopyd_job *job;
	char map[NR_BLOCKS + 1], text[256];
	uint64_t done = 0, total = 0, diff = 0;
	unsigned int block;
	double deadline;
	int r;

	start_slow_dest(30);	/* 64 writes of 30 ms or more: the copy takes a second or so */
	make_client(0);
	from = (struct io_region){ .bdev = fx.src, .sector = REGION_SECTOR, .count = REGION_COUNT };
	dests[0] = (struct io_region){ .bdev = fx.dst[T_LOOP_A], .sector = 4096, .count = REGION_COUNT };
	dests[1] = (struct io_region){ .bdev = fx.bad_dst, .sector = 0, .count = REGION_COUNT };
	r = kcopyd_submit(fx.kc, &from, 2, dests, 0, NULL, NULL, &job);
	cr_assert_eq(r, 0, "%s: kcopyd_submit: %d (%s)", what, r, strerror(-r));
	for (deadline = tu_now() + 10; tu_now() < deadline && done < 4 * SUBJOB; tu_sleep_ms(5))
		kcopyd_job_progress(job, &done, &total);
	cr_assert(done >= 4 * SUBJOB && done < total, "%s: progress %" PRIu64 "/%" PRIu64 " before the kill", what,
		  done, total);
	r = tu_nbd_kill_server(&fx.nbd_dst);
	cr_assert_eq(r, 0, "%s: killing nbdkit: %d (%s)", what, r, strerror(-r));

	/*
	 * It must end by itself, not hang on the dead disk.  (The suite's 60 s
	 * timeout bounds the whole test: a per-test .timeout leaks in
	 * Criterion 2.4, which LeakSanitizer reports.)
	 */
	for (deadline = tu_now() + 30; tu_now() < deadline; tu_sleep_ms(20))
		if (kcopyd_job_result(job, &res) == 0)
			break;
	r = kcopyd_job_result(job, &res);
	cr_assert_eq(r, 0, "%s: the job has not ended 30 s after the kill (progress %" PRIu64 "/%" PRIu64 ")", what,
		     done, total);
	kcopyd_job_wait(job);
	kcopyd_job_release(job);
	cr_assert_eq(res.write_err, 2u, "%s: write_err 0x%x, expected 0x2", what, res.write_err);
	cr_assert(res.write[1].error < 0 && res.error < 0, "%s: write[1].error %d, error %d", what,
		  res.write[1].error, res.error);
	cr_assert(res.read_err == 0 && res.write[0].error == 0, "%s: read_err %d write[0].error %d", what,
		  res.read_err, res.write[0].error);
	cr_assert(res.sectors_done < REGION_COUNT, "%s: sectors_done %" PRIu64 " of %llu", what, res.sectors_done,
		  REGION_COUNT);
	fprintf(stderr, "%s: ended with %s at sector %" PRIu64 " after %" PRIu64 " sectors\n", what,
		    strerror(-res.write[1].error), res.write[1].sector, res.sectors_done);
	block_map(fx.dst_loop[T_LOOP_A], dests[0].sector, REGION_SECTOR, map);
	for (block = 0; block < NR_BLOCKS; block++)
		cr_assert(map[block] == 'S' || map[block] == 'F', "%s: healthy dest block %u is '%c'; map: %s", what,
			  block, map[block], rle(map, text, sizeof(text)));

	/* The client carries on. */
	dests[0].sector = 16384;
	run_job("after the kill", &from, 1, &dests[0], 0, &res);
	cr_assert(res.read_err == 0 && res.write_err == 0 && res.sectors_done == REGION_COUNT,
		  "after the kill: read_err %d write_err 0x%x sectors_done %" PRIu64, res.read_err, res.write_err,
		  res.sectors_done);
	r = tu_compare(fx.src_file, REGION_SECTOR << KCOPYD_SECTOR_SHIFT, fx.dst_loop[T_LOOP_A],
		       16384ull << KCOPYD_SECTOR_SHIFT, REGION_COUNT << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "after the kill: the copy differs at byte %" PRIu64 " (%d)", diff, r);
}

TU_MAIN_REQUIRES(tu_nbd_rig_missing() == NULL, tu_nbd_rig_missing())
