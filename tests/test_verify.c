/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Verification (KCOPYD_VERIFY) against a destination that lies.  nbdkit
 * serves a file through tests/lossy-nbdkit.sh, a sh plugin that
 * acknowledges the first write touching a chosen byte range but loses it
 * (or stores it with one byte inverted); nbdfuse turns the export into a
 * file and a direct-I/O loop device into a block device
 * (tu_nbd_start_lossy()).  The write succeeds as far as the engine can
 * tell: only reading it back shows the loss.
 *
 * Jobs copy a 4 MiB source region in 64 KiB sub-jobs (64 chunks) to three
 * destinations, two healthy loop devices on a tmpfs and the lossy one.
 * The destination region starts at another sector than the source's, so a
 * report in job offsets rather than device sectors shows.  The lie is in
 * chunk LIE_CHUNK: the report must name that chunk, in device sectors, and
 * the lossy destination's bit alone.  The lossy destination is not read
 * back past its first bad chunk; the healthy ones are, in full.
 *
 * Needs root, /dev/fuse, nbdkit (with its sh plugin) and nbdfuse; skips
 * (77) without them.
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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kcopyd.h"
#include "testutil.h"

#define MiB		(1024ull * 1024)
#define DEV_BYTES	(16 * MiB)
#define SRC_SEED	0x5e11f1edull
#define FILL_SEED	0xf111ull
#define SUBJOB		128u			/* sectors: 64 KiB sub-jobs, the chunks verified */
#define REGION_SECTOR	2048ull			/* the source region ... */
#define REGION_COUNT	(64ull * SUBJOB)	/* ... 4 MiB, 64 chunks */
#define DEST_SECTOR	4096ull			/* every destination region starts here */
#define LIE_CHUNK	37u			/* the chunk whose write the lossy disk loses */
#define NR_GOOD		2

static struct fixture {
	char dir[256];
	char src_file[PATH_MAX];		/* SRC_SEED */
	char src_loop[32];
	struct kcopyd_dev *src;
	char good_file[NR_GOOD][PATH_MAX];	/* FILL_SEED */
	char good_loop[NR_GOOD][32];
	struct kcopyd_dev *good[NR_GOOD];
	char lossy_file[PATH_MAX];		/* FILL_SEED, behind the lossy plugin */
	struct tu_nbd nbd;
	struct kcopyd_dev *lossy;
	struct kcopyd_client *kc;
} fx;

static void teardown(void)
{
	int i;

	kcopyd_client_destroy(fx.kc);
	fx.kc = NULL;
	kcopyd_dev_close(fx.lossy);
	fx.lossy = NULL;
	tu_nbd_stop(&fx.nbd);
	kcopyd_dev_close(fx.src);
	fx.src = NULL;
	if (fx.src_loop[0])
		tu_loop_detach(fx.src_loop);
	fx.src_loop[0] = '\0';
	for (i = 0; i < NR_GOOD; i++) {
		kcopyd_dev_close(fx.good[i]);
		fx.good[i] = NULL;
		if (fx.good_loop[i][0])
			tu_loop_detach(fx.good_loop[i]);
		fx.good_loop[i][0] = '\0';
	}
	tu_tmpfs_unmount(fx.dir);
	fx.dir[0] = '\0';
}

static int build_fixture(const char **step)
{
	const struct kcopyd_config config = { .num_pages = 256, .subjob_sectors = SUBJOB };
	int i, r;

	*step = "tu_tmpfs_mount";
	r = tu_tmpfs_mount(96 * MiB, fx.dir, sizeof(fx.dir));
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
	for (i = 0; i < NR_GOOD; i++) {
		snprintf(fx.good_file[i], sizeof(fx.good_file[i]), "%s/good%d", fx.dir, i);
		*step = "tu_file_create(good destination)";
		r = tu_file_create(fx.good_file[i], DEV_BYTES, FILL_SEED);
		if (r < 0)
			return r;
		*step = "tu_loop_attach(good destination)";
		r = tu_loop_attach(fx.good_file[i], 512, true, fx.good_loop[i], sizeof(fx.good_loop[i]));
		if (r < 0)
			return r;
		*step = "kcopyd_dev_open(good destination)";
		r = kcopyd_dev_open(fx.good_loop[i], O_RDWR, &fx.good[i]);
		if (r < 0)
			return r;
	}
	snprintf(fx.lossy_file, sizeof(fx.lossy_file), "%s/lossy", fx.dir);
	*step = "tu_file_create(lossy image)";
	r = tu_file_create(fx.lossy_file, DEV_BYTES, FILL_SEED);
	if (r < 0)
		return r;
	*step = "kcopyd_client_create_config";
	return kcopyd_client_create_config(&config, &fx.kc);
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

TestSuite(verify, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers ----------------------------------------------------------- */

/* Byte @block (4 KiB blocks) of chunk @chunk of the destination region, as a device offset. */
static uint64_t dest_byte(unsigned int chunk, unsigned int block)
{
	return (DEST_SECTOR + (uint64_t)chunk * SUBJOB + block * 8u) << KCOPYD_SECTOR_SHIFT;
}

/* Start the lossy destination: its first write touching @lie lies (@flip: a byte inverted, else lost). */
static void start_lossy(struct tu_range lie, bool flip)
{
	int r = tu_nbd_start_lossy(&fx.nbd, fx.lossy_file, lie, flip);

	cr_assert_eq(r, 0, "tu_nbd_start_lossy: %d (%s)", r, strerror(-r));
	r = kcopyd_dev_open(fx.nbd.loop, O_RDWR, &fx.lossy);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d (%s)", fx.nbd.loop, r, strerror(-r));
	cr_assert_eq(kcopyd_dev_is_direct(fx.lossy), 1, "the lossy loop device is not direct: its cache would hide the lie");
}

/*
 * Copy the source region to the good destinations and the lossy one (at
 * @lossy_index of three), with @flags, and wait for the end.
 */
static void run_copy(const char *what, unsigned int lossy_index, unsigned int flags, struct kcopyd_result *res)
{
	const struct io_region from = { fx.src, REGION_SECTOR, REGION_COUNT };
	struct kcopyd_job_options options = { .flags = flags };
	struct io_region dests[NR_GOOD + 1];
	struct kcopyd_job *job;
	unsigned int i, good = 0;
	int r;

	for (i = 0; i < NR_GOOD + 1; i++) {
		struct kcopyd_dev *dev = i == lossy_index ? fx.lossy : fx.good[good++];

		dests[i] = (struct io_region){ dev, DEST_SECTOR, REGION_COUNT };
	}
	r = kcopyd_submit_options(fx.kc, &from, NR_GOOD + 1, dests, &options, sizeof(options), NULL, NULL, &job);
	cr_assert_eq(r, 0, "%s: kcopyd_submit_options: %d (%s)", what, r, strerror(-r));
	kcopyd_job_wait(job);
	memset(res, 0, sizeof(*res));
	r = kcopyd_job_result(job, res);
	kcopyd_job_release(job);
	cr_assert_eq(r, 0, "%s: kcopyd_job_result: %d (%s)", what, r, strerror(-r));
	cr_assert_eq(res->read_err, 0, "%s: read_err %d", what, res->read_err);
	cr_assert_eq(res->sectors_done, REGION_COUNT, "%s: sectors_done %" PRIu64 " of %llu", what,
		     res->sectors_done, REGION_COUNT);
}

/* Destination @path's region holds the source region: 0, else the byte where it does not. */
static int region_differs(const char *path, uint64_t *diff)
{
	return tu_compare(fx.src_file, REGION_SECTOR << KCOPYD_SECTOR_SHIFT, path, DEST_SECTOR << KCOPYD_SECTOR_SHIFT,
			  REGION_COUNT << KCOPYD_SECTOR_SHIFT, diff);
}

/* The good destinations verified and hold the source; @lossy_index is the lossy one's place. */
static void check_good(const char *what, const struct kcopyd_result *res, unsigned int lossy_index)
{
	unsigned int i, good = 0;
	uint64_t diff = 0;
	int r;

	for (i = 0; i < NR_GOOD + 1; i++) {
		if (i == lossy_index)
			continue;
		cr_assert_eq(res->verify[i].error, 0, "%s: dests[%u] (good) verify error %d at %" PRIu64 "+%" PRIu64,
			     what, i, res->verify[i].error, res->verify[i].sector, res->verify[i].count);
		cr_assert_eq(res->write[i].error, 0, "%s: dests[%u] (good) write error %d", what, i,
			     res->write[i].error);
		r = region_differs(fx.good_loop[good++], &diff);
		cr_assert_eq(r, 0, "%s: dests[%u] (good) differs from the source at byte %" PRIu64 " (%d)", what, i,
			     diff, r);
	}
}

/*
 * The job failed on the lossy destination alone, with -EBADMSG in the
 * lie's chunk; the others were read back in full.
 */
static void check_caught(const char *what, const struct kcopyd_result *res, unsigned int lossy_index)
{
	const unsigned int bit = 1u << lossy_index;
	const uint64_t chunk_sector = DEST_SECTOR + (uint64_t)LIE_CHUNK * SUBJOB;
	struct kcopyd_stats stats;

	cr_assert_eq(res->error, -EBADMSG, "%s: error %d (%s), expected -EBADMSG", what, res->error,
		     strerror(-res->error));
	cr_assert_eq(res->verified, -1, "%s: verified %d, expected -1", what, res->verified);
	cr_assert_eq(res->verify_err, bit, "%s: verify_err 0x%x, expected 0x%x", what, res->verify_err, bit);
	cr_assert_eq(res->write_err, bit, "%s: write_err 0x%x, expected 0x%x (the verify error's bit)", what,
		     res->write_err, bit);
	cr_assert_eq(res->verify[lossy_index].error, -EBADMSG, "%s: verify[%u].error %d, expected -EBADMSG", what,
		     lossy_index, res->verify[lossy_index].error);
	cr_assert(res->verify[lossy_index].sector == chunk_sector && res->verify[lossy_index].count == SUBJOB,
		  "%s: verify[%u] names sectors %" PRIu64 "+%" PRIu64 ", expected chunk %u: %" PRIu64 "+%u", what,
		  lossy_index, res->verify[lossy_index].sector, res->verify[lossy_index].count, LIE_CHUNK,
		  chunk_sector, SUBJOB);
	cr_assert_eq(res->cancelled, 0, "%s: cancelled %d", what, res->cancelled);
	cr_assert_eq(res->counts.phase, KCOPYD_PHASE_DONE, "%s: phase %u", what, res->counts.phase);
	cr_assert_eq(res->counts.sectors_verify_total, (NR_GOOD + 1) * REGION_COUNT,
		     "%s: sectors_verify_total %" PRIu64 ", expected %llu", what, res->counts.sectors_verify_total,
		     (NR_GOOD + 1) * REGION_COUNT);
	/*
	 * A destination that did not read back is not read further (the engine
	 * reports its lowest bad chunk), the others are read to their end:
	 * the good ones in full, the lossy one up to its lie (its chunks are
	 * read back in order; those in flight past the lie may count too).
	 */
	cr_assert(res->counts.sectors_verified >= NR_GOOD * REGION_COUNT + (uint64_t)LIE_CHUNK * SUBJOB &&
			  res->counts.sectors_verified < res->counts.sectors_verify_total,
		  "%s: sectors_verified %" PRIu64 " of %" PRIu64 ", expected the good destinations in full and the "
		  "lossy one's %u chunks below the lie, at least %llu, and not all",
		  what, res->counts.sectors_verified, res->counts.sectors_verify_total, LIE_CHUNK,
		  NR_GOOD * REGION_COUNT + (uint64_t)LIE_CHUNK * SUBJOB);
	check_good(what, res, lossy_index);
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.verify_errors, 1, "%s: stats.verify_errors %" PRIu64 ", expected 1 (one chunk)", what,
		     stats.verify_errors);
	cr_assert_eq(stats.sectors_verified, res->counts.sectors_verified,
		     "%s: stats.sectors_verified %" PRIu64 ", the job's %" PRIu64, what, stats.sectors_verified,
		     res->counts.sectors_verified);
}

/* The plugin told exactly one lie, inside chunk LIE_CHUNK of the destination region. */
static void check_one_lie(const char *what)
{
	struct tu_range first = { 0, 0 };
	int lies = tu_nbd_lies(&fx.nbd, &first);

	cr_assert_eq(lies, 1, "%s: the lossy disk lied %d times, expected once", what, lies);
	cr_assert(first.off >= dest_byte(LIE_CHUNK, 0) && first.off + first.len <= dest_byte(LIE_CHUNK + 1, 0),
		  "%s: the lie (bytes %" PRIu64 "+%" PRIu64 ") is not inside chunk %u (bytes %" PRIu64 "+%u): "
		  "a write spans chunks",
		  what, first.off, first.len, LIE_CHUNK, dest_byte(LIE_CHUNK, 0), SUBJOB << KCOPYD_SECTOR_SHIFT);
}

/* ---- tests ------------------------------------------------------------- */

/* Without verify the lie goes unseen: the rig is faithful to what a lying disk does. */
Test(verify, rig_lies_silently_without_verify)
{
	const struct tu_range lie = { dest_byte(LIE_CHUNK, 5), 4096 };
	struct kcopyd_result res;
	uint64_t diff = 0;
	int r;

	struct tu_range lost = { 0, 0 };

	start_lossy(lie, false);
	run_copy("no verify", NR_GOOD, 0, &res);
	cr_assert(res.error == 0 && res.write_err == 0 && res.verified == 0 && res.verify_err == 0,
		  "no verify: error %d write_err 0x%x verified %d verify_err 0x%x: the loss was not silent", res.error,
		  res.write_err, res.verified, res.verify_err);
	check_one_lie("no verify");
	/* The whole request that touched the lie's range was lost (the loop device's, up to a sub-job). */
	cr_assert_eq(tu_nbd_lies(&fx.nbd, &lost), 1, "no verify: the log of lies");
	r = region_differs(fx.nbd.loop, &diff);
	cr_assert_eq(r, 1, "no verify: the lossy destination reads back as the source (%d): nothing was lost", r);
	cr_assert_eq((DEST_SECTOR << KCOPYD_SECTOR_SHIFT) + diff, lost.off,
		     "no verify: the first lost byte is %" PRIu64 ", expected the lost write's first, %" PRIu64,
		     (DEST_SECTOR << KCOPYD_SECTOR_SHIFT) + diff, lost.off);
}

/* A lost write: the lossy destination's chunk is named, the others verify ok. */
Test(verify, lost_write_is_caught)
{
	const struct tu_range lie = { dest_byte(LIE_CHUNK, 5), 4096 };
	struct kcopyd_result res;
	uint64_t diff = 0;
	int r;

	start_lossy(lie, false);
	run_copy("lost write", NR_GOOD, KCOPYD_VERIFY, &res);
	check_one_lie("lost write");
	check_caught("lost write", &res, NR_GOOD);
	/* What the destination holds where the write was lost: its old bytes. */
	r = tu_pattern_check(fx.nbd.loop, lie.off, lie.len, FILL_SEED, lie.off, &diff);
	cr_assert_eq(r, 0, "lost write: the lost block is not the old fill (%d, at +%" PRIu64 ")", r, diff);
}

/* A flipped byte, the lossy destination first: its bit, bit 0, alone. */
Test(verify, flipped_byte_is_caught)
{
	const struct tu_range lie = { dest_byte(LIE_CHUNK, 9) + 123, 1 };
	unsigned char got, want;
	struct kcopyd_result res;
	uint64_t diff = 0;
	int r;

	start_lossy(lie, true);
	run_copy("flipped byte", 0, KCOPYD_VERIFY, &res);
	check_one_lie("flipped byte");
	check_caught("flipped byte", &res, 0);
	/* One byte differs, inverted. */
	r = region_differs(fx.nbd.loop, &diff);
	cr_assert_eq(r, 1, "flipped byte: the lossy destination reads back as the source (%d)", r);
	cr_assert_eq((DEST_SECTOR << KCOPYD_SECTOR_SHIFT) + diff, lie.off,
		     "flipped byte: the first difference is at %" PRIu64 ", expected %" PRIu64,
		     (DEST_SECTOR << KCOPYD_SECTOR_SHIFT) + diff, lie.off);
	cr_assert_eq(tu_read(fx.nbd.loop, lie.off, &got, 1), 0, "flipped byte: reading the byte back");
	cr_assert_eq(tu_read(fx.src_file, lie.off - ((DEST_SECTOR - REGION_SECTOR) << KCOPYD_SECTOR_SHIFT), &want, 1),
		     0, "flipped byte: reading the source's byte");
	cr_assert_eq(got, (unsigned char)~want, "flipped byte: 0x%02x on the destination, 0x%02x in the source", got,
		     want);
}

/* The same rig with its lie outside the copied region: every destination verifies. */
Test(verify, honest_copy_verifies)
{
	const struct tu_range lie = { 0, 4096 };	/* below DEST_SECTOR: never written */
	struct kcopyd_result res;
	struct kcopyd_stats stats;
	uint64_t diff = 0;
	unsigned int i;
	int r;

	start_lossy(lie, false);
	run_copy("honest", 1, KCOPYD_VERIFY, &res);
	cr_assert(res.error == 0 && res.write_err == 0 && res.verify_err == 0 && res.verified == 1,
		  "honest: error %d write_err 0x%x verify_err 0x%x verified %d, expected a clean verify", res.error,
		  res.write_err, res.verify_err, res.verified);
	for (i = 0; i < NR_GOOD + 1; i++)
		cr_assert_eq(res.verify[i].error, 0, "honest: verify[%u].error %d at %" PRIu64, i, res.verify[i].error,
			     res.verify[i].sector);
	cr_assert_eq(tu_nbd_lies(&fx.nbd, NULL), 0, "honest: the lossy disk lied");
	check_good("honest", &res, 1);
	r = region_differs(fx.nbd.loop, &diff);
	cr_assert_eq(r, 0, "honest: the rig's destination differs at %" PRIu64 " (%d)", diff, r);
	cr_assert_eq(res.counts.sectors_verified, (NR_GOOD + 1) * REGION_COUNT,
		     "honest: sectors_verified %" PRIu64 ", expected %llu", res.counts.sectors_verified,
		     (NR_GOOD + 1) * REGION_COUNT);
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert(stats.verify_errors == 0 && stats.sectors_verified == (NR_GOOD + 1) * REGION_COUNT,
		  "honest: stats verify_errors %" PRIu64 " sectors_verified %" PRIu64, stats.verify_errors,
		  stats.sectors_verified);
}

/* Verify needs to read the destinations back: one opened write-only is refused, nothing runs. */
Test(verify, write_only_destination_is_refused)
{
	const struct io_region from = { fx.src, REGION_SECTOR, REGION_COUNT };
	const struct kcopyd_job_options options = { .flags = KCOPYD_VERIFY };
	struct kcopyd_dev *write_only = NULL;
	struct io_region dest;
	struct kcopyd_job *job = NULL;
	struct kcopyd_stats stats;
	int fd, r;

	fd = open(fx.good_loop[0], O_WRONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open(%s, O_WRONLY): %s", fx.good_loop[0], strerror(errno));
	r = kcopyd_dev_from_fd(fd, &write_only);
	cr_assert_eq(r, 0, "kcopyd_dev_from_fd: %d (%s)", r, strerror(-r));
	dest = (struct io_region){ write_only, DEST_SECTOR, REGION_COUNT };
	r = kcopyd_submit_options(fx.kc, &from, 1, &dest, &options, sizeof(options), NULL, NULL, &job);
	if (r == 0) {
		kcopyd_job_wait(job);
		kcopyd_job_release(job);
	}
	kcopyd_dev_close(write_only);
	cr_assert_eq(r, -EBADF, "verify to a write-only destination: %d (%s), expected -EBADF", r, strerror(-r));
	kcopyd_client_stats(fx.kc, &stats);
	cr_assert_eq(stats.jobs_total, 0, "a refused job was counted: jobs_total %" PRIu64, stats.jobs_total);
	r = tu_pattern_check(fx.good_loop[0], DEST_SECTOR << KCOPYD_SECTOR_SHIFT, REGION_COUNT << KCOPYD_SECTOR_SHIFT,
			     FILL_SEED, DEST_SECTOR << KCOPYD_SECTOR_SHIFT, NULL);
	cr_assert_eq(r, 0, "a refused job wrote to its destination (%d)", r);
}

TU_MAIN_REQUIRES(tu_nbd_lossy_missing() == NULL, tu_nbd_lossy_missing())
