/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The engine on real devices: direct-I/O loop devices (512- and 4096-byte
 * sectors) and plain files on a private tmpfs.  Needs root; skips (77)
 * without it.
 *
 * Every test starts from the same fixture: a 64 MiB source file of the
 * pattern SRC_SEED with a loop device on it, and six zeroed 64 MiB
 * destinations (four loop devices, two plain files), all opened, and a
 * client.  A copy is checked byte for byte against the pattern, and every
 * byte outside the destination regions must still be zero.
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
#include <linux/falloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_LIBSECCOMP
#include <seccomp.h>
#endif

#include "fake_io.h"
#include "kcopyd.h"
#include "testutil.h"

#define MiB		(1024ull * 1024)
#define DEV_BYTES	(64 * MiB)
#define DEV_SECTORS	(DEV_BYTES >> KCOPYD_SECTOR_SHIFT)
#define SRC_SEED	0x6b636f707964ull	/* the source's pattern */
#define FILL_SEED	0xf111ull		/* a pattern to pre-fill destinations with */
#define TMPFS_BYTES	(512 * MiB)
#define CLIENT_PAGES	256

enum target_id { T_LOOP_A, T_LOOP_B, T_LOOP_C, T_LOOP_4K, T_FILE_A, T_FILE_B, NR_TARGETS };

/* A destination: a zeroed file, with or without a loop device on it. */
struct target {
	const char *name;		/* for messages */
	unsigned int sector_size;	/* of the loop device; 0 for a plain file */
	char file[PATH_MAX];
	char loop[32];			/* "" for a plain file */
	struct kcopyd_dev *dev;		/* opened O_RDWR */
};

static struct fixture {
	char dir[256];			/* the tmpfs */
	char src_file[PATH_MAX];	/* SRC_SEED pattern, DEV_BYTES */
	char src_loop[32];		/* 512-byte sectors, direct I/O */
	struct kcopyd_dev *src;		/* src_loop, O_RDONLY */
	struct kcopyd_dev *src_plain;	/* src_file, O_RDONLY */
	struct target dst[NR_TARGETS];
	struct kcopyd_client *kc;	/* CLIENT_PAGES pages, defaults */
	char extra_loop[32];		/* a test's own loop device, detached by teardown() ("" if none) */
} fx;

static const struct {
	const char *name;
	unsigned int sector_size;
} target_kinds[NR_TARGETS] = {
	[T_LOOP_A] = { "loop A (512)", 512 },
	[T_LOOP_B] = { "loop B (512)", 512 },
	[T_LOOP_C] = { "loop C (512)", 512 },
	[T_LOOP_4K] = { "loop 4K (4096)", 4096 },
	[T_FILE_A] = { "file A", 0 },
	[T_FILE_B] = { "file B", 0 },
};

static const char *target_path(const struct target *t)
{
	return t->loop[0] ? t->loop : t->file;
}

/* ---- fixture -------------------------------------------------------- */

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
	if (fx.extra_loop[0])
		tu_loop_detach(fx.extra_loop);
	fx.extra_loop[0] = '\0';
	tu_tmpfs_unmount(fx.dir);
	fx.dir[0] = '\0';
}

/* Build the fixture; on failure say which step failed. */
static int build_fixture(const char **step)
{
	int i, r;

	*step = "tu_tmpfs_mount";
	r = tu_tmpfs_mount(TMPFS_BYTES, fx.dir, sizeof(fx.dir));
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
	*step = "kcopyd_dev_open(source loop)";
	r = kcopyd_dev_open(fx.src_loop, O_RDONLY, &fx.src);
	if (r < 0)
		return r;
	*step = "kcopyd_dev_open(source file)";
	r = kcopyd_dev_open(fx.src_file, O_RDONLY, &fx.src_plain);
	if (r < 0)
		return r;
	for (i = 0; i < NR_TARGETS; i++) {
		struct target *t = &fx.dst[i];

		t->name = target_kinds[i].name;
		t->sector_size = target_kinds[i].sector_size;
		snprintf(t->file, sizeof(t->file), "%s/dest%d", fx.dir, i);
		*step = "tu_file_create(destination)";
		r = tu_file_create(t->file, DEV_BYTES, 0);
		if (r < 0)
			return r;
		if (t->sector_size) {
			*step = "tu_loop_attach(destination)";
			r = tu_loop_attach(t->file, t->sector_size, true, t->loop, sizeof(t->loop));
			if (r < 0)
				return r;
		}
		*step = "kcopyd_dev_open(destination)";
		r = kcopyd_dev_open(target_path(t), O_RDWR, &t->dev);
		if (r < 0)
			return r;
	}
	*step = "kcopyd_client_create";
	return kcopyd_client_create(CLIENT_PAGES, &fx.kc);
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

TestSuite(devices, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers -------------------------------------------------------- */

static struct target *target_of(const struct kcopyd_dev *dev)
{
	int i;

	for (i = 0; i < NR_TARGETS; i++)
		if (fx.dst[i].dev == dev)
			return &fx.dst[i];
	cr_assert_fail("a region names a device that is not a fixture destination");
	return NULL;
}

static struct io_region region(enum target_id id, uint64_t sector, uint64_t count)
{
	return (struct io_region){ .bdev = fx.dst[id].dev, .sector = sector, .count = count };
}

/* @dst holds the source's sectors from @src_sector on. */
static void expect_source_copy(const char *what, uint64_t src_sector, const struct io_region *dst)
{
	const struct target *t = target_of(dst->bdev);
	uint64_t diff = 0;
	int r = tu_pattern_check(target_path(t), dst->sector << KCOPYD_SECTOR_SHIFT,
				 dst->count << KCOPYD_SECTOR_SHIFT, SRC_SEED,
				 src_sector << KCOPYD_SECTOR_SHIFT, &diff);

	cr_assert_eq(r, 0, "%s: %s sectors %" PRIu64 "+%" PRIu64 " (from source sector %" PRIu64
		     "): %s at byte %" PRIu64 " of the region (tu_pattern_check=%d)",
		     what, t->name, dst->sector, dst->count, src_sector,
		     r == 1 ? "differs from the source" : "could not be read", diff, r);
}

/* Sectors [@sector, @sector + @count) of @t hold the pattern @seed (0: zeros),
 * as it is found at the same offset. */
static void expect_pattern(const char *what, const struct target *t, uint64_t sector, uint64_t count,
			   uint64_t seed)
{
	uint64_t diff = 0;
	int r;

	if (count == 0)
		return;
	r = tu_pattern_check(target_path(t), sector << KCOPYD_SECTOR_SHIFT,
			     count << KCOPYD_SECTOR_SHIFT, seed, sector << KCOPYD_SECTOR_SHIFT, &diff);
	cr_assert_eq(r, 0, "%s: %s sectors %" PRIu64 "+%" PRIu64 " should be %s: %s at byte %" PRIu64
		     " (tu_pattern_check=%d)", what, t->name, sector, count,
		     seed ? "the fill pattern" : "zero",
		     r == 1 ? "wrong byte" : "could not be read", diff, r);
}

static int cmp_region_sector(const void *a, const void *b)
{
	const struct io_region *x = a, *y = b;

	return x->sector < y->sector ? -1 : x->sector > y->sector;
}

/* Every sector of every destination outside @regions is still zero. */
static void expect_zero_elsewhere(const char *what, const struct io_region *regions, unsigned int n)
{
	struct io_region mine[KCOPYD_MAX_REGIONS];
	int id;

	for (id = 0; id < NR_TARGETS; id++) {
		const struct target *t = &fx.dst[id];
		unsigned int i, count = 0;
		uint64_t pos = 0;

		for (i = 0; i < n; i++)
			if (regions[i].bdev == t->dev)
				mine[count++] = regions[i];
		qsort(mine, count, sizeof(mine[0]), cmp_region_sector);
		for (i = 0; i < count; i++) {
			if (mine[i].sector > pos)
				expect_pattern(what, t, pos, mine[i].sector - pos, 0);
			if (mine[i].sector + mine[i].count > pos)
				pos = mine[i].sector + mine[i].count;
		}
		if (pos < DEV_SECTORS)
			expect_pattern(what, t, pos, DEV_SECTORS - pos, 0);
	}
}

/* The result of a job that went well. */
static void expect_clean_result(const char *what, const struct kcopyd_result *res, uint64_t count)
{
	cr_assert_eq(res->read_err, 0, "%s: read_err %d, expected 0", what, res->read_err);
	cr_assert_eq(res->write_err, 0, "%s: write_err 0x%x, expected 0", what, res->write_err);
	cr_assert_eq(res->error, 0, "%s: error %d (%s), expected 0", what, res->error,
		     strerror(-res->error));
	cr_assert_eq(res->cancelled, 0, "%s: cancelled %d", what, res->cancelled);
	cr_assert_eq(res->sectors_total, count, "%s: sectors_total %" PRIu64 ", expected %" PRIu64,
		     what, res->sectors_total, count);
	cr_assert_eq(res->sectors_done, count, "%s: sectors_done %" PRIu64 ", expected %" PRIu64,
		     what, res->sectors_done, count);
}

/* Copy with tu_copy_sync() and check everything: the result, the copies,
 * and zeros everywhere else. */
static void copy_and_check(const char *what, struct kcopyd_dev *src, uint64_t src_sector,
			   const struct io_region *dests, unsigned int n, unsigned int flags)
{
	struct io_region from = { .bdev = src, .sector = src_sector, .count = dests[0].count };
	struct kcopyd_result res;
	unsigned int i;
	int r;

	r = tu_copy_sync(fx.kc, &from, n, dests, flags, &res);
	cr_assert_eq(r, 0, "%s: tu_copy_sync returned %d (%s)", what, r, strerror(-r));
	expect_clean_result(what, &res, from.count);
	for (i = 0; i < n; i++)
		expect_source_copy(what, src_sector, &dests[i]);
	expect_zero_elsewhere(what, dests, n);
}

/* Counts completion-routine calls, for the kernel-style API. */
struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned int calls;
	int read_err;
	unsigned int write_err;
	pthread_t submitter;
	bool on_submitter;	/* a call ran on the submitting thread */
};

static void waiter_init(struct waiter *w)
{
	memset(w, 0, sizeof(*w));
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->submitter = pthread_self();
}

static void waiter_notify(int read_err, unsigned int write_err, void *context)
{
	struct waiter *w = context;

	pthread_mutex_lock(&w->lock);
	w->calls++;
	w->read_err = read_err;
	w->write_err = write_err;
	if (pthread_equal(pthread_self(), w->submitter))
		w->on_submitter = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* Wait up to @seconds for @calls calls; return how many there were. */
static unsigned int waiter_wait(struct waiter *w, unsigned int calls, int seconds)
{
	struct timespec deadline;
	unsigned int seen;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	pthread_mutex_lock(&w->lock);
	while (w->calls < calls &&
	       pthread_cond_timedwait(&w->cond, &w->lock, &deadline) == 0)
		;
	seen = w->calls;
	pthread_mutex_unlock(&w->lock);
	return seen;
}

/* ---- copies ----------------------------------------------------------- */

Test(devices, copy_to_one_loop_device_with_callback)
{
	const char *what = "1 dest, kcopyd_copy";
	struct io_region from = { .bdev = fx.src, .sector = 4096, .count = 8192 + 8 };
	struct io_region to = region(T_LOOP_A, 100000, from.count);
	struct waiter w;
	int r;

	waiter_init(&w);
	r = kcopyd_copy(fx.kc, &from, 1, &to, 0, waiter_notify, &w);
	cr_assert_eq(r, 0, "%s: kcopyd_copy returned %d (%s)", what, r, strerror(-r));
	cr_assert_eq(waiter_wait(&w, 1, 30), 1, "%s: completion routine called %u times in 30 s",
		     what, w.calls);
	cr_assert_eq(w.read_err, 0, "%s: read_err %d", what, w.read_err);
	cr_assert_eq(w.write_err, 0, "%s: write_err 0x%x", what, w.write_err);
	cr_assert(!w.on_submitter, "%s: the completion routine ran on the submitting thread", what);
	expect_source_copy(what, from.sector, &to);
	expect_zero_elsewhere(what, &to, 1);
}

Test(devices, copy_to_two_dests_loop_and_file)
{
	struct io_region to[2] = {
		region(T_LOOP_B, 0, 20000),
		region(T_FILE_A, 50000, 20000),
	};

	/* From the plain source file this time. */
	copy_and_check("2 dests", fx.src_plain, 1000, to, 2, 0);
}

Test(devices, copy_to_three_dests_mixed_sector_sizes)
{
	struct io_region to[3] = {
		region(T_LOOP_A, 7, 6000),
		region(T_LOOP_4K, 8 * 1000, 6000),
		region(T_FILE_B, 123456 - 6000, 6000),
	};

	copy_and_check("3 dests", fx.src, 16, to, 3, 0);
}

Test(devices, copy_to_eight_dests_two_per_device)
{
	struct io_region to[8] = {
		region(T_LOOP_A, 0, 4160),
		region(T_LOOP_A, 70000, 4160),
		region(T_LOOP_B, 1, 4160),
		region(T_LOOP_C, 12345, 4160),
		region(T_LOOP_4K, 64, 4160),
		region(T_LOOP_4K, 80000, 4160),
		region(T_FILE_A, 999, 4160),
		region(T_FILE_B, 65536, 4160),
	};

	copy_and_check("8 dests", fx.src, 33, to, 8, 0);
}

Test(devices, regions_start_and_end_mid_device)
{
	struct io_region to[2] = {
		region(T_LOOP_A, 1234, 33333),
		region(T_FILE_A, 90001, 33333),
	};

	copy_and_check("mid-device", fx.src, 77777, to, 2, 0);
}

Test(devices, region_ending_at_the_device_end)
{
	struct io_region to[2] = {
		region(T_LOOP_4K, DEV_SECTORS - 2048, 2048),
		region(T_FILE_B, DEV_SECTORS - 2048, 2048),
	};

	/* ... read from the last sectors of the source too. */
	copy_and_check("to the end", fx.src, DEV_SECTORS - 2048, to, 2, 0);
}

Test(devices, count_not_a_multiple_of_the_subjob_size)
{
	struct kcopyd_stats stats;
	uint64_t count;

	kcopyd_client_stats(fx.kc, &stats);
	cr_assert(stats.subjob_sectors >= 8, "subjob_sectors %u, expected at least one page",
		  stats.subjob_sectors);
	count = 5ull * stats.subjob_sectors + 17;
	{
		struct io_region to[2] = {
			region(T_LOOP_B, 3, count),
			region(T_FILE_B, 2ull * stats.subjob_sectors + 1, count),
		};

		copy_and_check("5 sub-jobs + 17 sectors", fx.src, 100, to, 2, 0);
	}
}

Test(devices, write_seq_copy)
{
	struct io_region to[3] = {
		region(T_LOOP_A, 4096, 16384),
		region(T_LOOP_4K, 40960, 16384),
		region(T_FILE_A, 3, 16384),
	};

	copy_and_check("KCOPYD_WRITE_SEQ", fx.src, 512, to, 3, KCOPYD_WRITE_SEQ);
}

Test(devices, ignore_error_flag_on_a_clean_copy)
{
	struct io_region to[2] = {
		region(T_LOOP_C, 100, 3000),
		region(T_FILE_B, 200, 3000),
	};

	copy_and_check("KCOPYD_IGNORE_ERROR|KCOPYD_WRITE_SEQ", fx.src, 300, to, 2,
		       KCOPYD_IGNORE_ERROR | KCOPYD_WRITE_SEQ);
}

/* ---- zeroing --------------------------------------------------------- */

Test(devices, zero_overwrites_only_its_regions)
{
	const uint64_t filled = (16 * MiB) >> KCOPYD_SECTOR_SHIFT;
	const enum target_id ids[3] = { T_LOOP_C, T_LOOP_4K, T_FILE_A };
	struct io_region zero[3] = {
		region(T_LOOP_C, 1000, 20000),
		region(T_LOOP_4K, 8000, 20000),
		region(T_FILE_A, 5001, 20000),
	};
	struct waiter w;
	int i, r;

	for (i = 0; i < 3; i++) {
		r = tu_pattern_write(target_path(&fx.dst[ids[i]]), 0, filled << KCOPYD_SECTOR_SHIFT,
				     FILL_SEED, 0);
		cr_assert_eq(r, 0, "pre-filling %s: %d (%s)", fx.dst[ids[i]].name, r, strerror(-r));
	}
	waiter_init(&w);
	r = kcopyd_zero(fx.kc, 3, zero, 0, waiter_notify, &w);
	cr_assert_eq(r, 0, "kcopyd_zero returned %d (%s)", r, strerror(-r));
	cr_assert_eq(waiter_wait(&w, 1, 30), 1, "kcopyd_zero: %u completion calls in 30 s", w.calls);
	cr_assert_eq(w.read_err, 0, "kcopyd_zero: read_err %d", w.read_err);
	cr_assert_eq(w.write_err, 0, "kcopyd_zero: write_err 0x%x", w.write_err);
	for (i = 0; i < 3; i++) {
		const struct target *t = &fx.dst[ids[i]];
		uint64_t end = zero[i].sector + zero[i].count;

		expect_pattern("zero: before", t, 0, zero[i].sector, FILL_SEED);
		expect_pattern("zero: the region", t, zero[i].sector, zero[i].count, 0);
		expect_pattern("zero: after", t, end, filled - end, FILL_SEED);
		expect_pattern("zero: never written", t, filled, DEV_SECTORS - filled, 0);
	}
}

Test(devices, zero_through_submit)
{
	const struct target *t = &fx.dst[T_LOOP_B];
	struct io_region zero = region(T_LOOP_B, 333, 4444);
	struct kcopyd_result res;
	int r;

	r = tu_pattern_write(target_path(t), 0, 8 * MiB, FILL_SEED, 0);
	cr_assert_eq(r, 0, "pre-filling: %d", r);
	r = tu_copy_sync(fx.kc, NULL, 1, &zero, 0, &res);
	cr_assert_eq(r, 0, "zero via kcopyd_submit(from NULL): %d (%s)", r, strerror(-r));
	expect_clean_result("zero via submit", &res, zero.count);
	expect_pattern("zero via submit: before", t, 0, zero.sector, FILL_SEED);
	expect_pattern("zero via submit: region", t, zero.sector, zero.count, 0);
	expect_pattern("zero via submit: after", t, zero.sector + zero.count,
		       ((8 * MiB) >> KCOPYD_SECTOR_SHIFT) - zero.sector - zero.count, FILL_SEED);
}

/* ---- a count of 0 ----------------------------------------------------- */

Test(devices, count_zero_completes_with_callback)
{
	struct io_region from = { .bdev = fx.src, .sector = 10, .count = 0 };
	struct io_region to[2] = { region(T_LOOP_A, 20, 0), region(T_FILE_A, 30, 0) };
	struct kcopyd_client *kc;
	struct kcopyd_result res;
	struct waiter copy_w, zero_w;
	int r;

	r = kcopyd_client_create(16, &kc);
	cr_assert_eq(r, 0, "kcopyd_client_create: %d", r);
	waiter_init(&copy_w);
	waiter_init(&zero_w);
	r = kcopyd_copy(kc, &from, 2, to, 0, waiter_notify, &copy_w);
	cr_assert_eq(r, 0, "kcopyd_copy of 0 sectors returned %d (%s)", r, strerror(-r));
	r = kcopyd_zero(kc, 2, to, 0, waiter_notify, &zero_w);
	cr_assert_eq(r, 0, "kcopyd_zero of 0 sectors returned %d (%s)", r, strerror(-r));
	cr_assert_eq(waiter_wait(&copy_w, 1, 10), 1, "copy of 0: %u calls in 10 s", copy_w.calls);
	cr_assert_eq(waiter_wait(&zero_w, 1, 10), 1, "zero of 0: %u calls in 10 s", zero_w.calls);

	r = tu_copy_sync(kc, &from, 2, to, 0, &res);
	cr_assert_eq(r, 0, "submit of 0 sectors: %d", r);
	expect_clean_result("submit of 0 sectors", &res, 0);

	kcopyd_client_destroy(kc);
	/* After destroy no routine can still be called: exactly once each. */
	cr_assert_eq(copy_w.calls, 1, "copy of 0: completion routine called %u times", copy_w.calls);
	cr_assert_eq(zero_w.calls, 1, "zero of 0: completion routine called %u times", zero_w.calls);
	cr_assert(copy_w.read_err == 0 && copy_w.write_err == 0,
		  "copy of 0: read_err %d write_err 0x%x", copy_w.read_err, copy_w.write_err);
	cr_assert(zero_w.read_err == 0 && zero_w.write_err == 0,
		  "zero of 0: read_err %d write_err 0x%x", zero_w.read_err, zero_w.write_err);
	cr_assert(!copy_w.on_submitter && !zero_w.on_submitter,
		  "a completion routine of a 0-sector job ran inside the submitting call");
	expect_zero_elsewhere("count 0", NULL, 0);
}

/* ---- validation -------------------------------------------------------- */

/*
 * kcopyd_validate() says @expect with a reason, and kcopyd_copy() /
 * kcopyd_zero() and kcopyd_submit() refuse the same regions with the same
 * error without ever calling the completion routine.
 */
static void expect_refused(const char *what, const struct io_region *from, unsigned int n,
			   const struct io_region *dests, unsigned int flags, int expect)
{
	struct io_region from_copy, dests_copy[KCOPYD_MAX_REGIONS + 1];
	struct kcopyd_client *kc;
	struct kcopyd_job *job = NULL;
	struct waiter w;
	char why[256] = "";
	int r;

	r = kcopyd_validate(from, n, dests, flags, why, sizeof(why));
	cr_assert_eq(r, expect, "%s: kcopyd_validate returned %d (%s), expected %d (%s); why: \"%s\"",
		     what, r, strerror(-r), expect, strerror(-expect), why);
	if (expect == 0)
		return;
	cr_assert(why[0] != '\0', "%s: kcopyd_validate returned %d but left why empty", what, r);

	r = kcopyd_client_create(16, &kc);
	cr_assert_eq(r, 0, "kcopyd_client_create: %d", r);
	waiter_init(&w);
	memcpy(dests_copy, dests, n * sizeof(dests[0]));
	if (from) {
		from_copy = *from;
		r = kcopyd_copy(kc, &from_copy, n, dests_copy, flags, waiter_notify, &w);
	} else {
		r = kcopyd_zero(kc, n, dests_copy, flags, waiter_notify, &w);
	}
	cr_assert_eq(r, expect, "%s: kcopyd_%s returned %d (%s), expected %d", what,
		     from ? "copy" : "zero", r, strerror(-r), expect);
	r = kcopyd_submit(kc, from, n, dests, flags, waiter_notify, &w, &job);
	cr_assert_eq(r, expect, "%s: kcopyd_submit returned %d (%s), expected %d", what, r,
		     strerror(-r), expect);
	kcopyd_client_destroy(kc);
	cr_assert_eq(w.calls, 0, "%s: the completion routine of a refused job was called %u times",
		     what, w.calls);
}

Test(devices, validate_misaligned_on_4k_device)
{
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = 8 };
	struct io_region to = region(T_LOOP_4K, 1, 8);

	expect_refused("dest sector 1 on a 4K device", &from, 1, &to, 0, -EINVAL);
	to = region(T_LOOP_4K, 8, 9);
	from.count = 9;
	expect_refused("dest count 9 on a 4K device", &from, 1, &to, 0, -EINVAL);
	to = region(T_LOOP_4K, 12, 8);
	from.count = 8;
	expect_refused("zero at sector 12 on a 4K device", NULL, 1, &to, 0, -EINVAL);
	/* A 4K-device source is held to its block size as well. */
	{
		struct io_region bad_from = region(T_LOOP_4K, 4, 8);
		struct io_region ok_to = region(T_LOOP_A, 0, 8);

		expect_refused("source sector 4 on a 4K device", &bad_from, 1, &ok_to, 0, -EINVAL);
	}
	to = region(T_LOOP_4K, 8, 8);
	expect_refused("aligned control case", &from, 1, &to, 0, 0);
}

Test(devices, validate_past_the_end)
{
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = 16 };
	struct io_region to = region(T_LOOP_A, DEV_SECTORS - 8, 16);

	expect_refused("dest runs 8 sectors past the end", &from, 1, &to, 0, -ERANGE);
	to = region(T_FILE_A, DEV_SECTORS, 16);
	expect_refused("dest starts at the end of a file", &from, 1, &to, 0, -ERANGE);
	to = region(T_LOOP_B, UINT64_MAX - 7, 16);
	expect_refused("dest sector + count wraps around", &from, 1, &to, 0, -ERANGE);
	from.sector = DEV_SECTORS - 15;
	to = region(T_LOOP_B, 0, 16);
	expect_refused("source runs 1 sector past the end", &from, 1, &to, 0, -ERANGE);
	to = region(T_LOOP_C, DEV_SECTORS, 16);
	expect_refused("zero past the end", NULL, 1, &to, 0, -ERANGE);
	from.sector = DEV_SECTORS - 16;
	to = region(T_LOOP_B, DEV_SECTORS - 16, 16);
	expect_refused("control: both end exactly at the end", &from, 1, &to, 0, 0);
}

Test(devices, validate_source_and_dest_overlap_on_one_file)
{
	struct target *t = &fx.dst[T_FILE_A];
	struct kcopyd_dev *again;
	struct io_region from = region(T_FILE_A, 1000, 100);
	struct io_region to = region(T_FILE_A, 1050, 100);
	int r;

	expect_refused("same handle, overlapping", &from, 1, &to, 0, -EINVAL);
	r = kcopyd_dev_open(t->file, O_RDWR, &again);
	cr_assert_eq(r, 0, "second kcopyd_dev_open of %s: %d", t->file, r);
	to.bdev = again;
	expect_refused("two handles on one file, overlapping", &from, 1, &to, 0, -EINVAL);
	to.sector = 1099;
	expect_refused("two handles, one sector shared", &from, 1, &to, 0, -EINVAL);

	/* Adjacent is not overlapping: a copy within one file works. */
	r = tu_pattern_write(t->file, 1000 << KCOPYD_SECTOR_SHIFT, 100 << KCOPYD_SECTOR_SHIFT,
			     FILL_SEED, 0);
	cr_assert_eq(r, 0, "pre-filling: %d", r);
	to.sector = 1100;
	expect_refused("control: adjacent regions", &from, 1, &to, 0, 0);
	{
		struct kcopyd_result res;
		uint64_t diff = 0;

		r = tu_copy_sync(fx.kc, &from, 1, &to, 0, &res);
		cr_assert_eq(r, 0, "copy within one file: %d", r);
		expect_clean_result("copy within one file", &res, 100);
		r = tu_pattern_check(t->file, 1100 << KCOPYD_SECTOR_SHIFT,
				     100 << KCOPYD_SECTOR_SHIFT, FILL_SEED, 0, &diff);
		cr_assert_eq(r, 0, "copy within one file: wrong at byte %" PRIu64 " (%d)", diff, r);
	}
	kcopyd_dev_close(again);
}

Test(devices, validate_overlapping_dests)
{
	struct kcopyd_dev *again;
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = 50 };
	struct io_region to[3] = {
		region(T_LOOP_B, 500, 50),
		region(T_LOOP_A, 100, 50),
		region(T_LOOP_A, 149, 50),
	};
	int r;

	expect_refused("dests 1 and 2 share a sector", &from, 3, to, 0, -EINVAL);
	expect_refused("zero: dests 1 and 2 share a sector", NULL, 3, to, 0, -EINVAL);
	to[2] = to[1];
	expect_refused("the same dest twice", &from, 3, to, 0, -EINVAL);

	r = kcopyd_dev_open(fx.dst[T_LOOP_A].loop, O_RDWR, &again);
	cr_assert_eq(r, 0, "second kcopyd_dev_open of %s: %d", fx.dst[T_LOOP_A].loop, r);
	to[2].bdev = again;
	to[2].sector = 120;
	expect_refused("two handles on one block device", &from, 3, to, 0, -EINVAL);
	to[2].sector = 150;
	expect_refused("control: adjacent dests", &from, 3, to, 0, 0);
	kcopyd_dev_close(again);
}

Test(devices, validate_read_only_dest)
{
	struct kcopyd_dev *ro;
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = 64 };
	struct io_region to[2];
	int r;

	r = kcopyd_dev_open(fx.dst[T_FILE_A].file, O_RDONLY, &ro);
	cr_assert_eq(r, 0, "kcopyd_dev_open O_RDONLY: %d", r);
	to[0] = region(T_LOOP_A, 0, 64);
	to[1] = (struct io_region){ .bdev = ro, .sector = 0, .count = 64 };
	expect_refused("second dest read-only", &from, 2, to, 0, -EBADF);
	expect_refused("zero to a read-only dest", NULL, 2, to, 0, -EBADF);
	kcopyd_dev_close(ro);
	/* The refused jobs wrote nothing. */
	expect_zero_elsewhere("after refused jobs", NULL, 0);
}

Test(devices, validate_bad_arguments)
{
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = 64 };
	struct io_region to[KCOPYD_MAX_REGIONS + 1];
	unsigned int i;

	for (i = 0; i <= KCOPYD_MAX_REGIONS; i++)
		to[i] = region((enum target_id)(i % NR_TARGETS), 64 * (i / NR_TARGETS + 1), 64);
	expect_refused("control: 32 dests", &from, KCOPYD_MAX_REGIONS, to, 0, 0);
	expect_refused("33 dests", &from, KCOPYD_MAX_REGIONS + 1, to, 0, -EINVAL);
	expect_refused("0 dests", &from, 0, to, 0, -EINVAL);
	expect_refused("unknown flag", &from, 1, to, 1u << 7, -EINVAL);
	to[1].count = 63;
	expect_refused("dest count differs from the source's", &from, 2, to, 0, -EINVAL);
	expect_refused("zero: dest counts differ", NULL, 2, to, 0, -EINVAL);
	to[1].count = 64;
	to[1].bdev = NULL;
	expect_refused("NULL dest device", &from, 2, to, 0, -EINVAL);
}

/* ---- devices ----------------------------------------------------------- */

Test(devices, dev_open_errors)
{
	struct kcopyd_dev *dev = NULL;
	char missing[PATH_MAX];
	struct stat st;
	int r;

	r = kcopyd_dev_open(fx.dir, O_RDONLY, &dev);
	cr_assert_eq(r, -EINVAL, "kcopyd_dev_open(directory) returned %d (%s), expected -EINVAL",
		     r, strerror(-r));
	snprintf(missing, sizeof(missing), "%s/no-such-file", fx.dir);
	r = kcopyd_dev_open(missing, O_RDONLY, &dev);
	cr_assert_eq(r, -ENOENT, "kcopyd_dev_open(missing) returned %d (%s), expected -ENOENT",
		     r, strerror(-r));
	r = kcopyd_dev_open("/dev/null", O_RDWR, &dev);
	cr_assert_eq(r, -EINVAL, "kcopyd_dev_open(/dev/null, a character device) returned %d (%s)",
		     r, strerror(-r));
	r = kcopyd_dev_open(fx.src_file, O_RDWR | O_TRUNC, &dev);
	cr_assert_eq(r, -EINVAL, "kcopyd_dev_open(O_RDWR|O_TRUNC) returned %d (%s), expected -EINVAL",
		     r, strerror(-r));
	cr_assert(stat(fx.src_file, &st) == 0 && (uint64_t)st.st_size == DEV_BYTES,
		  "O_TRUNC was refused but the source now has %lld bytes", (long long)st.st_size);
}

static void expect_geometry(const char *what, const char *path, uint64_t sectors,
			    unsigned int block_size, int direct)
{
	struct kcopyd_dev *dev;
	int r = kcopyd_dev_open(path, O_RDONLY, &dev);

	cr_assert_eq(r, 0, "%s: kcopyd_dev_open(%s): %d (%s)", what, path, r, strerror(-r));
	cr_expect_eq(kcopyd_dev_sectors(dev), sectors, "%s: kcopyd_dev_sectors %" PRIu64
		     ", expected %" PRIu64, what, kcopyd_dev_sectors(dev), sectors);
	cr_expect_eq(kcopyd_dev_block_size(dev), block_size, "%s: kcopyd_dev_block_size %u, "
		     "expected %u", what, kcopyd_dev_block_size(dev), block_size);
	cr_expect_eq(kcopyd_dev_is_direct(dev), direct, "%s: kcopyd_dev_is_direct %d, expected %d",
		     what, kcopyd_dev_is_direct(dev), direct);
	kcopyd_dev_close(dev);
}

Test(devices, dev_geometry_of_loop_devices)
{
	expect_geometry("512-byte-sector loop", fx.dst[T_LOOP_A].loop, DEV_SECTORS, 512, 1);
	expect_geometry("4096-byte-sector loop", fx.dst[T_LOOP_4K].loop, DEV_SECTORS, 4096, 1);
	expect_geometry("source loop", fx.src_loop, DEV_SECTORS, 512, 1);
}

Test(devices, dev_geometry_of_a_file)
{
	char odd[PATH_MAX];
	struct kcopyd_dev *dev;
	unsigned int block_size;
	int fd, r, direct;

	/* A size that is not whole sectors is rounded down. */
	snprintf(odd, sizeof(odd), "%s/odd-size", fx.dir);
	r = tu_file_create(odd, MiB + 1000, 5);
	cr_assert_eq(r, 0, "tu_file_create: %d", r);
	fd = open(odd, O_RDONLY | O_DIRECT);
	direct = fd >= 0;
	if (fd >= 0)
		close(fd);

	r = kcopyd_dev_open(odd, O_RDONLY, &dev);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d", odd, r);
	cr_expect_eq(kcopyd_dev_sectors(dev), (MiB + 1000) / 512, "file of 1 MiB + 1000 bytes: "
		     "%" PRIu64 " sectors, expected %llu", kcopyd_dev_sectors(dev),
		     (MiB + 1000) / 512);
	cr_expect_eq(kcopyd_dev_is_direct(dev), direct, "file on tmpfs: is_direct %d, but "
		     "open(O_DIRECT) %s", kcopyd_dev_is_direct(dev), direct ? "works" : "fails");
	block_size = kcopyd_dev_block_size(dev);
	cr_expect(block_size >= 512 && block_size <= 4096 && !(block_size & (block_size - 1)),
		  "file on tmpfs: block size %u is not a power of two in 512..4096", block_size);
	if (!direct)
		cr_expect_eq(block_size, 512, "buffered file: block size %u, expected 512",
			     block_size);
	kcopyd_dev_close(dev);
	expect_geometry("64 MiB file", fx.dst[T_FILE_B].file, DEV_SECTORS,
			kcopyd_dev_block_size(fx.dst[T_FILE_B].dev), direct);
}

Test(devices, dev_from_fd_takes_ownership)
{
	struct kcopyd_dev *dev;
	struct io_region from = { .bdev = fx.src, .sector = 2048, .count = 4096 };
	struct io_region to;
	struct kcopyd_result res;
	uint64_t diff = 0;
	int fd, r;

	fd = open(fx.dst[T_LOOP_C].loop, O_RDWR);
	cr_assert(fd >= 0, "open %s: %s", fx.dst[T_LOOP_C].loop, strerror(errno));
	r = kcopyd_dev_from_fd(fd, &dev);
	cr_assert_eq(r, 0, "kcopyd_dev_from_fd: %d (%s)", r, strerror(-r));
	cr_expect_eq(kcopyd_dev_sectors(dev), DEV_SECTORS, "from_fd: %" PRIu64 " sectors",
		     kcopyd_dev_sectors(dev));
	cr_expect_eq(kcopyd_dev_is_direct(dev), 1, "from_fd on a loop device: is_direct %d",
		     kcopyd_dev_is_direct(dev));
	to = (struct io_region){ .bdev = dev, .sector = 8, .count = 4096 };
	r = tu_copy_sync(fx.kc, &from, 1, &to, 0, &res);
	cr_assert_eq(r, 0, "copy to a from_fd device: %d", r);
	expect_clean_result("copy to a from_fd device", &res, 4096);
	kcopyd_dev_close(dev);
	errno = 0;
	cr_assert(fcntl(fd, F_GETFD) < 0 && errno == EBADF,
		  "fd %d still open after kcopyd_dev_close (errno %d)", fd, errno);
	r = tu_pattern_check(fx.dst[T_LOOP_C].loop, 8 << KCOPYD_SECTOR_SHIFT,
			     4096 << KCOPYD_SECTOR_SHIFT, SRC_SEED, 2048 << KCOPYD_SECTOR_SHIFT,
			     &diff);
	cr_assert_eq(r, 0, "copy to a from_fd device: wrong at byte %" PRIu64 " (%d)", diff, r);

	r = kcopyd_dev_from_fd(-1, &dev);
	cr_assert_eq(r, -EBADF, "kcopyd_dev_from_fd(-1) returned %d, expected -EBADF", r);
	fd = open(fx.dir, O_RDONLY | O_DIRECTORY);
	cr_assert(fd >= 0, "open %s: %s", fx.dir, strerror(errno));
	r = kcopyd_dev_from_fd(fd, &dev);
	cr_assert_eq(r, -EINVAL, "kcopyd_dev_from_fd(directory) returned %d, expected -EINVAL", r);
	errno = 0;
	cr_assert(fcntl(fd, F_GETFD) < 0 && errno == EBADF,
		  "kcopyd_dev_from_fd failed but left fd %d open", fd);
}

/* ---- budget and statistics -------------------------------------------- */

Test(devices, one_page_budget_copies_16_mib)
{
	const uint64_t count = (16 * MiB) >> KCOPYD_SECTOR_SHIFT;
	struct io_region to[2] = { region(T_LOOP_A, 24, count), region(T_FILE_A, 0, count) };
	struct io_region from = { .bdev = fx.src, .sector = 4000, .count = count };
	struct kcopyd_client *tiny;
	struct kcopyd_result res;
	struct kcopyd_stats stats;
	int r;

	r = kcopyd_client_create(1, &tiny);
	cr_assert_eq(r, 0, "kcopyd_client_create(1 page): %d (%s)", r, strerror(-r));
	r = tu_copy_sync(tiny, &from, 2, to, 0, &res);
	cr_assert_eq(r, 0, "copy with a 1-page budget: %d", r);
	kcopyd_client_stats(tiny, &stats);
	kcopyd_client_destroy(tiny);
	expect_clean_result("1-page budget", &res, count);
	cr_assert_eq(stats.pages_total, 1, "pages_total %u, expected 1", stats.pages_total);
	cr_assert_eq(stats.pages_peak, 1, "pages_peak %u with a 1-page budget, expected 1",
		     stats.pages_peak);
	cr_assert(stats.subjob_sectors >= 1 && stats.subjob_sectors <= 8,
		  "subjob_sectors %u does not fit a 1-page budget", stats.subjob_sectors);
	cr_assert_eq(stats.sectors_read, count, "sectors_read %" PRIu64 ", expected %" PRIu64,
		     stats.sectors_read, count);
	expect_source_copy("1-page budget", from.sector, &to[0]);
	expect_source_copy("1-page budget", from.sector, &to[1]);
	expect_zero_elsewhere("1-page budget", to, 2);
}

Test(devices, stats_add_up)
{
	const struct kcopyd_config config = { .num_pages = 256, .subjob_sectors = 256, .depth = 4 };
	struct io_region from = { .bdev = fx.src, .sector = 50, .count = 10000 };
	struct io_region to[3] = {
		region(T_LOOP_A, 0, 10000),
		region(T_LOOP_4K, 800, 10000),
		region(T_FILE_B, 1, 10000),
	};
	struct io_region zero[2] = { region(T_LOOP_B, 0, 3000), region(T_FILE_A, 7, 3000) };
	struct kcopyd_client *kc;
	struct kcopyd_stats stats;
	struct kcopyd_result res;
	int r;

	r = kcopyd_client_create_config(&config, &kc);
	cr_assert_eq(r, 0, "kcopyd_client_create_config: %d (%s)", r, strerror(-r));
	kcopyd_client_stats(kc, &stats);
	cr_assert(stats.pages_total == 256 && stats.subjob_sectors == 256 && stats.depth == 4,
		  "a fresh client reports pages_total %u subjob_sectors %u depth %u, "
		  "configured 256/256/4", stats.pages_total, stats.subjob_sectors, stats.depth);
	cr_assert(stats.jobs_total == 0 && stats.sectors_read == 0 && stats.pages_peak == 0,
		  "a fresh client: jobs_total %" PRIu64 " sectors_read %" PRIu64 " pages_peak %u",
		  stats.jobs_total, stats.sectors_read, stats.pages_peak);

	r = tu_copy_sync(kc, &from, 3, to, 0, &res);
	cr_assert_eq(r, 0, "copy: %d", r);
	expect_clean_result("stats: copy", &res, 10000);
	r = tu_copy_sync(kc, NULL, 2, zero, 0, &res);
	cr_assert_eq(r, 0, "zero: %d", r);
	expect_clean_result("stats: zero", &res, 3000);
	kcopyd_client_stats(kc, &stats);
	kcopyd_client_destroy(kc);

	cr_expect_eq(stats.jobs_total, 2, "jobs_total %" PRIu64 ", expected 2", stats.jobs_total);
	cr_expect_eq(stats.jobs_active, 0, "jobs_active %" PRIu64 " after both finished",
		     stats.jobs_active);
	cr_expect_eq(stats.sectors_read, 10000, "sectors_read %" PRIu64 ", expected 10000 (zero "
		     "jobs read nothing)", stats.sectors_read);
	cr_expect_eq(stats.sectors_written, 3 * 10000 + 2 * 3000, "sectors_written %" PRIu64
		     ", expected %d", stats.sectors_written, 3 * 10000 + 2 * 3000);
	cr_expect_eq(stats.read_errors, 0, "read_errors %" PRIu64, stats.read_errors);
	cr_expect_eq(stats.write_errors, 0, "write_errors %" PRIu64, stats.write_errors);
	cr_expect_eq(stats.pages_in_use, 0, "pages_in_use %u when idle", stats.pages_in_use);
	cr_expect(stats.pages_peak >= 1 && stats.pages_peak <= stats.pages_total,
		  "pages_peak %u, budget %u", stats.pages_peak, stats.pages_total);
}

/* The number after @key in @path (a "key value" or "key: value kB" file), or -1. */
static long long read_counter(const char *path, const char *key)
{
	char line[256];
	long long value = -1;
	size_t key_len = strlen(key);
	FILE *f = fopen(path, "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, key_len) == 0 && (line[key_len] == ' ' || line[key_len] == ':')) {
			value = strtoll(line + key_len + 1, NULL, 10);
			break;
		}
	fclose(f);
	return value;
}

/*
 * The buffer slots are asked to be transparent huge pages (O_DIRECT pins
 * every buffer page per I/O; a 2 MiB page makes a sub-job one piece).
 * Where THP is on, a copy through a 16 MiB budget must leave the process
 * with more anonymous huge pages than before.  The kernel may fall back to
 * small pages when it has no free 2 MiB block: that is a skip, not a pass.
 */
Test(devices, buffers_are_huge_pages_where_thp_allows)
{
	const uint64_t count = (8 * MiB) >> KCOPYD_SECTOR_SHIFT;
	const struct kcopyd_config config = { .num_pages = 4096, .depth = 8 };
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = count };
	struct io_region to = region(T_LOOP_A, 0, count);
	long long huge_before, huge_during, fallback_before, fallback_after;
	char thp[128] = "";
	struct kcopyd_client *kc;
	struct kcopyd_result res;
	FILE *f;
	int r;

	f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
	if (f) {
		if (!fgets(thp, sizeof(thp), f))
			thp[0] = '\0';
		fclose(f);
	}
	if (!f || strstr(thp, "[never]"))
		cr_skip_test("transparent huge pages are off on this machine (%s)", f ? "never" : "no sysfs file");
	huge_before = read_counter("/proc/self/smaps_rollup", "AnonHugePages");
	fallback_before = read_counter("/proc/vmstat", "thp_fault_fallback");
	r = kcopyd_client_create_config(&config, &kc);
	cr_assert_eq(r, 0, "kcopyd_client_create_config: %d (%s)", r, strerror(-r));
	r = tu_copy_sync(kc, &from, 1, &to, KCOPYD_NO_OFFLOAD, &res);
	cr_assert_eq(r, 0, "copy: %d", r);
	huge_during = read_counter("/proc/self/smaps_rollup", "AnonHugePages");
	fallback_after = read_counter("/proc/vmstat", "thp_fault_fallback");
	kcopyd_client_destroy(kc);
	expect_clean_result("huge pages", &res, count);
	expect_source_copy("huge pages", 0, &to);
	if (huge_during <= huge_before && fallback_after > fallback_before)
		cr_skip_test("the kernel fell back to small pages (thp_fault_fallback %lld -> %lld)",
			     fallback_before, fallback_after);
	cr_assert(huge_during >= huge_before + 2048,
		  "AnonHugePages %lld kB before the client, %lld kB after a copy through it (THP: %s): "
		  "the buffers are not huge pages", huge_before, huge_during, thp);
}

TU_MAIN_REQUIRES(tu_loop_rig_missing() == NULL, tu_loop_rig_missing())

/*
 * A filesystem without direct I/O (ramfs refuses O_DIRECT): the file is
 * used buffered, regions need only whole sectors, and copies are correct.
 */
Test(devices, buffered_fallback_on_a_filesystem_without_direct_io)
{
	const uint64_t count = MiB >> KCOPYD_SECTOR_SHIFT;
	char dir[] = "/tmp/kcopyd-ramfs.XXXXXX", path[64];
	unsigned char *expected = malloc(MiB), *got = malloc(MiB);
	struct kcopyd_dev *dev = NULL;
	struct kcopyd_result res;
	struct io_region from = { .bdev = fx.src, .sector = 8, .count = count }, to;
	int fd, r;

	cr_assert(expected && got);
	cr_assert(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	r = mount("ramfs", dir, "ramfs", 0, NULL);
	cr_assert_eq(r, 0, "mount ramfs on %s: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/file", dir);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	cr_assert(fd >= 0 && ftruncate(fd, (off_t)(2 * MiB)) == 0, "create %s: %s", path, strerror(errno));
	close(fd);

	r = kcopyd_dev_open(path, O_RDWR, &dev);
	cr_assert_eq(r, 0, "kcopyd_dev_open(file on ramfs): %d (%s)", r, strerror(-r));
	cr_expect_eq(kcopyd_dev_is_direct(dev), 0, "file on ramfs: is_direct %d, expected 0 (buffered)",
		     kcopyd_dev_is_direct(dev));
	cr_expect_eq(kcopyd_dev_block_size(dev), 512, "file on ramfs: block size %u, expected 512",
		     kcopyd_dev_block_size(dev));
	/* Sector 1: an offset O_DIRECT on a 4 KiB device could not take, fine buffered. */
	to = (struct io_region){ .bdev = dev, .sector = 1, .count = count };
	r = tu_copy_sync(fx.kc, &from, 1, &to, 0, &res);
	cr_assert_eq(r, 0, "copy to a buffered file: %d", r);
	expect_clean_result("buffered destination", &res, count);
	kcopyd_dev_close(dev);

	r = tu_read(fx.src_loop, from.sector << KCOPYD_SECTOR_SHIFT, expected, MiB);
	cr_assert_eq(r, 0, "read the source: %d", r);
	fd = open(path, O_RDONLY);
	cr_assert(fd >= 0 && pread(fd, got, MiB, 512) == (ssize_t)MiB, "read back %s: %s", path, strerror(errno));
	close(fd);
	cr_expect(memcmp(expected, got, MiB) == 0, "the buffered copy differs from the source");
	umount2(dir, MNT_DETACH);
	rmdir(dir);
	free(expected);
	free(got);
}

/* ---- aliases: loop devices and their backing files (issue 12, item 10) ---- */

/* kcopyd_validate() refuses @what with -EINVAL and a reason that names the alias. */
static void expect_alias_refused(const char *what, const struct io_region *from, unsigned int n,
				 const struct io_region *dests)
{
	char why[256] = "";
	int r;

	expect_refused(what, from, n, dests, 0, -EINVAL);
	r = kcopyd_validate(from, n, dests, 0, why, sizeof(why));
	cr_expect(r == -EINVAL && strstr(why, "overlaps") && strstr(why, "same storage"),
		  "%s: kcopyd_validate returned %d, why \"%s\" (expected -EINVAL, an overlap through an alias)",
		  what, r, why);
}

/* A loop device and the file under it are one storage: the source's loop against its own file. */
Test(devices, validate_loop_device_and_its_backing_file)
{
	struct kcopyd_dev *src_file_rw, *backing_a;
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = 2048 };
	struct io_region to;
	struct kcopyd_result res;
	int r;

	r = kcopyd_dev_open(fx.src_file, O_RDWR, &src_file_rw);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s, O_RDWR): %d", fx.src_file, r);
	to = (struct io_region){ .bdev = src_file_rw, .sector = 1024, .count = 2048 };
	expect_alias_refused("the source's loop device to its backing file, overlapping", &from, 1, &to);
	to.sector = 2047;
	expect_alias_refused("loop to backing file, one sector shared", &from, 1, &to);
	to.sector = 2048;
	expect_refused("control: loop to backing file, adjacent", &from, 1, &to, 0, 0);

	/* The other way round, as in the issue: FILE:0+16M to a loop over FILE at 1M. */
	r = kcopyd_dev_open(fx.dst[T_LOOP_A].file, O_RDONLY, &backing_a);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d", fx.dst[T_LOOP_A].file, r);
	from = (struct io_region){ .bdev = backing_a, .sector = 0, .count = 32768 };
	to = region(T_LOOP_A, 2048, 32768);
	expect_alias_refused("FILE:0+16M to a loop over FILE at 1M", &from, 1, &to);
	to.sector = 32768;
	expect_refused("control: FILE:0+16M to a loop over FILE at 16M", &from, 1, &to, 0, 0);
	r = tu_copy_sync(fx.kc, &from, 1, &to, 0, &res);
	cr_assert_eq(r, 0, "copy of a file to its own loop device, apart: %d", r);
	expect_clean_result("copy of a file to its own loop device, apart", &res, 32768);

	/* Two destinations: a loop device and its file. */
	from = (struct io_region){ .bdev = fx.src, .sector = 0, .count = 64 };
	{
		struct io_region dests[2] = {
			region(T_LOOP_B, 100, 64),
			{ .bdev = NULL, .sector = 130, .count = 64 },
		};
		struct kcopyd_dev *file_b;

		r = kcopyd_dev_open(fx.dst[T_LOOP_B].file, O_RDWR, &file_b);
		cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d", fx.dst[T_LOOP_B].file, r);
		dests[1].bdev = file_b;
		expect_alias_refused("destinations: a loop device and its file, overlapping", &from, 2, dests);
		dests[1].sector = 164;
		expect_refused("control: destinations a loop device and its file, apart", &from, 2, dests, 0, 0);
		kcopyd_dev_close(file_b);
	}
	kcopyd_dev_close(backing_a);
	kcopyd_dev_close(src_file_rw);
}

/*
 * Two loop devices over one file at different offsets (losetup -o), and a
 * loop device over one of them: their sectors are compared where they land
 * in the file.
 */
Test(devices, validate_loops_over_one_file_with_offsets)
{
	const char *file = fx.dst[T_FILE_A].file;
	char loop_1m[32] = "", loop_4m[32] = "", loop_stacked[32] = "";
	struct kcopyd_dev *at_1m = NULL, *at_4m = NULL, *stacked = NULL;
	struct io_region from, to;
	struct kcopyd_result res;
	uint64_t diff = 0;
	int r;

	r = tu_loop_attach_at(file, 1 * MiB, loop_1m, sizeof(loop_1m));
	cr_assert_eq(r, 0, "loop over %s at 1 MiB: %d (%s)", file, r, strerror(-r));
	r = tu_loop_attach_at(file, 4 * MiB, loop_4m, sizeof(loop_4m));
	cr_assert_eq(r, 0, "loop over %s at 4 MiB: %d (%s)", file, r, strerror(-r));
	r = tu_loop_attach_at(loop_1m, 512 * 1024, loop_stacked, sizeof(loop_stacked));
	cr_assert_eq(r, 0, "loop over %s at 512 KiB: %d (%s)", loop_1m, r, strerror(-r));
	cr_assert_eq(kcopyd_dev_open(loop_1m, O_RDWR, &at_1m), 0, "open %s", loop_1m);
	cr_assert_eq(kcopyd_dev_open(loop_4m, O_RDWR, &at_4m), 0, "open %s", loop_4m);
	cr_assert_eq(kcopyd_dev_open(loop_stacked, O_RDWR, &stacked), 0, "open %s", loop_stacked);

	/* at_1m sector s is file sector 2048 + s; at_4m's is 8192 + s. */
	from = (struct io_region){ .bdev = at_1m, .sector = 6144, .count = 4096 };
	to = (struct io_region){ .bdev = at_4m, .sector = 0, .count = 4096 };
	expect_alias_refused("loop at 1M sectors 6144+4096 to loop at 4M sector 0 (file 8192 both)", &from, 1,
			     &to);
	from.sector = 6143;
	expect_alias_refused("loop at 1M to loop at 4M, one sector shared", &from, 1, &to);
	from.sector = 0;
	expect_refused("control: loop at 1M 0+4096 to loop at 4M 0 (file 2048 and 8192)", &from, 1, &to, 0, 0);
	r = tu_pattern_write(file, 1 * MiB, 2 * MiB, FILL_SEED, 0);
	cr_assert_eq(r, 0, "pre-filling %s: %d", file, r);
	r = tu_copy_sync(fx.kc, &from, 1, &to, 0, &res);
	cr_assert_eq(r, 0, "copy between two loops over one file: %d", r);
	expect_clean_result("copy between two loops over one file", &res, 4096);
	r = tu_pattern_check(file, 4 * MiB, 2 * MiB, FILL_SEED, 0, &diff);
	cr_expect_eq(r, 0, "copy between two loops over one file: file bytes 4M+2M wrong at %" PRIu64 " (%d)",
		     diff, r);

	/* stacked sector s is at_1m sector 1024 + s, file sector 3072 + s. */
	from = (struct io_region){ .bdev = stacked, .sector = 0, .count = 2048 };
	to = region(T_FILE_A, 4096, 2048);
	expect_alias_refused("a loop over a loop over the file, to the file", &from, 1, &to);
	to.sector = 5120;
	expect_refused("control: a loop over a loop, to the file just after", &from, 1, &to, 0, 0);
	to = (struct io_region){ .bdev = at_4m, .sector = 0, .count = 2048 };
	expect_refused("control: a loop over a loop, to the loop at 4M (file 3072 and 8192)", &from, 1, &to,
		       0, 0);
	from.sector = 5120;
	expect_alias_refused("a loop over a loop at 5120 (file 8192), to the loop at 4M", &from, 1, &to);

	kcopyd_dev_close(stacked);
	kcopyd_dev_close(at_4m);
	kcopyd_dev_close(at_1m);
	tu_loop_detach(loop_stacked);
	tu_loop_detach(loop_4m);
	tu_loop_detach(loop_1m);
}

/* ---- short writes: a full disk is ENOSPC, not EIO (issue 12, item 12) ---- */

/* A client on the fake backend, which does each I/O with pread/pwrite at once. */
static struct kcopyd_client *fake_client(struct fake_io *fake)
{
	struct kcopyd_config config = { .num_pages = CLIENT_PAGES };
	struct kcopyd_client *kc;
	int r;

	fake_io_init(fake);
	r = kcopyd_client_create_ops(&config, &fake_io_ops, fake, &kc);
	cr_assert_eq(r, 0, "kcopyd_client_create_ops(fake): %d", r);
	return kc;
}

/* How many writes the fake was given, and whether one started at @sector. */
static unsigned int fake_writes(struct fake_io *fake, uint64_t sector, bool *seen)
{
	static struct fake_log_entry log[64];
	unsigned int count = fake_io_log(fake, log, 64), index, writes = 0;

	*seen = false;
	for (index = 0; index < count; index++)
		if (log[index].op == KCOPYD_IO_WRITE) {
			writes++;
			*seen = *seen || log[index].sector == sector;
		}
	return writes;
}

/* A write that stops short is continued for the rest; the rest's -ENOSPC is the job's error. */
Test(devices, short_write_then_enospc_reports_enospc)
{
	struct fake_io *fake = calloc(1, sizeof(*fake));
	struct kcopyd_client *kc = fake_client(fake);
	struct io_region from = { .bdev = fx.src_plain, .sector = 0, .count = 2048 };
	struct io_region to = region(T_FILE_A, 0, 2048);
	struct kcopyd_result res;
	uint64_t diff = 0;
	bool retried;
	int r;

	/* The destination fills up at sector 1024: the 1 MiB write gets 512 KiB in, then ENOSPC. */
	fake_io_stop_short(fake, fx.dst[T_FILE_A].dev, KCOPYD_IO_WRITE, 1024, -ENOSPC, false);
	r = tu_copy_sync(kc, &from, 1, &to, KCOPYD_NO_OFFLOAD, &res);
	cr_assert_eq(r, 0, "submit: %d", r);
	cr_expect_eq(res.error, -ENOSPC, "a short write, then no space: error %d (%s), expected -ENOSPC",
		     res.error, strerror(-res.error));
	cr_expect_eq(res.write_err, 1u, "write_err 0x%x, expected 0x1", res.write_err);
	cr_expect(res.write[0].error == -ENOSPC && res.write[0].sector == 0 && res.write[0].count == 2048,
		  "write[0]: error %d sector %" PRIu64 " count %" PRIu64 ", expected -ENOSPC 0 2048",
		  res.write[0].error, res.write[0].sector, res.write[0].count);
	cr_expect_eq(fake_writes(fake, 1024, &retried), 2u, "writes given to the fake: %u, expected 2",
		     fake_writes(fake, 1024, &retried));
	cr_expect(retried, "no write continued at sector 1024 after the short one");
	r = tu_pattern_check(fx.dst[T_FILE_A].file, 0, 1024 << KCOPYD_SECTOR_SHIFT, SRC_SEED, 0, &diff);
	cr_expect_eq(r, 0, "the part that fitted is not the source's at byte %" PRIu64 " (%d)", diff, r);
	kcopyd_client_destroy(kc);
	free(fake);
}

/* A write that stops short once and then goes on is a success, written in full. */
Test(devices, short_write_once_is_continued_to_the_end)
{
	struct fake_io *fake = calloc(1, sizeof(*fake));
	struct kcopyd_client *kc = fake_client(fake);
	struct io_region from = { .bdev = fx.src_plain, .sector = 4096, .count = 4096 };
	struct io_region to = region(T_FILE_A, 8192, 4096);
	struct kcopyd_result res;
	bool retried;
	int r;

	fake_io_stop_short(fake, fx.dst[T_FILE_A].dev, KCOPYD_IO_WRITE, 8192 + 3000, 0, true);
	r = tu_copy_sync(kc, &from, 1, &to, KCOPYD_NO_OFFLOAD, &res);
	cr_assert_eq(r, 0, "submit: %d", r);
	expect_clean_result("a write short once", &res, 4096);
	expect_source_copy("a write short once", 4096, &to);
	fake_writes(fake, 8192 + 3000, &retried);
	cr_expect(retried, "no write continued at sector %d after the short one", 8192 + 3000);
	kcopyd_client_destroy(kc);
	free(fake);
}

/* A short read is the end of the file: still -EIO (doc/DESIGN.md), and not retried. */
Test(devices, short_read_is_eio)
{
	struct fake_io *fake = calloc(1, sizeof(*fake));
	struct kcopyd_client *kc = fake_client(fake);
	struct io_region from = { .bdev = fx.src_plain, .sector = 0, .count = 2048 };
	struct io_region to = region(T_FILE_A, 0, 2048);
	struct kcopyd_result res;
	bool retried;
	int r;

	fake_io_stop_short(fake, fx.src_plain, KCOPYD_IO_READ, 1024, 0, false);
	r = tu_copy_sync(kc, &from, 1, &to, KCOPYD_NO_OFFLOAD, &res);
	cr_assert_eq(r, 0, "submit: %d", r);
	cr_expect(res.read_err == 1 && res.read.error == -EIO && res.error == -EIO,
		  "a short read: read_err %d read.error %d error %d, expected 1, -EIO, -EIO", res.read_err,
		  res.read.error, res.error);
	cr_expect_eq(fake_writes(fake, 0, &retried), 0u, "a short read led to %u writes, expected none",
		     fake_writes(fake, 0, &retried));
	kcopyd_client_destroy(kc);
	free(fake);
}

/* The real thing: 4 MiB to a file on a tmpfs of 3584 KiB.  The write that fills it is short. */
Test(devices, full_tmpfs_is_enospc)
{
	char dir[] = "/tmp/kcopyd-full.XXXXXX", path[64];
	const uint64_t count = 4 * MiB >> KCOPYD_SECTOR_SHIFT;
	struct kcopyd_dev *dev = NULL;
	struct kcopyd_result res;
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = count }, to;
	int fd, r;

	cr_assert(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
	r = mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=3584k");
	cr_assert_eq(r, 0, "mount a 3584 KiB tmpfs on %s: %s", dir, strerror(errno));
	snprintf(path, sizeof(path), "%s/full.img", dir);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	cr_assert(fd >= 0 && ftruncate(fd, (off_t)(4 * MiB)) == 0, "create %s: %s", path, strerror(errno));
	close(fd);
	r = kcopyd_dev_open(path, O_RDWR, &dev);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d", path, r);
	to = (struct io_region){ .bdev = dev, .sector = 0, .count = count };
	r = tu_copy_sync(fx.kc, &from, 1, &to, 0, &res);
	cr_assert_eq(r, 0, "submit: %d", r);
	cr_expect_eq(res.write_err, 1u, "4 MiB to a 3584 KiB tmpfs: write_err 0x%x, expected 0x1", res.write_err);
	cr_expect_eq(res.write[0].error, -ENOSPC,
		     "4 MiB to a 3584 KiB tmpfs: write[0] error %d (%s) at sector %" PRIu64 ", expected -ENOSPC",
		     res.write[0].error, strerror(-res.write[0].error), res.write[0].sector);
	cr_expect_eq(res.error, -ENOSPC, "4 MiB to a 3584 KiB tmpfs: error %d (%s), expected -ENOSPC", res.error,
		     strerror(-res.error));
	kcopyd_dev_close(dev);
	umount2(dir, MNT_DETACH);
	rmdir(dir);
}

/*
 * A source file that shrank after it was opened: the range past its new
 * end is no hole (SEEK_DATA's ENXIO there meant "no data up to the end"),
 * so the job fails with a read error instead of writing zeros (found in
 * review of the sparse copies).
 */
Test(devices, a_source_that_shrank_is_a_read_error_not_zeros)
{
	char path[] = "/tmp/kcopyd-shrunk.XXXXXX";
	const uint64_t count = 1 * MiB >> KCOPYD_SECTOR_SHIFT;
	struct kcopyd_dev *src = NULL;
	struct kcopyd_result res;
	struct io_region from, to = region(T_FILE_A, 0, count);
	int fd = mkstemp(path), r;

	cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
	close(fd);
	cr_assert(tu_file_create(path, 1 * MiB, 51) == 0, "create %s", path);
	r = kcopyd_dev_open(path, O_RDONLY, &src);
	cr_assert_eq(r, 0, "kcopyd_dev_open(%s): %d", path, r);
	cr_assert(truncate(path, 0) == 0, "truncate %s: %s", path, strerror(errno));
	from = (struct io_region){ .bdev = src, .sector = 0, .count = count };
	r = tu_copy_sync(fx.kc, &from, 1, &to, 0, &res);
	cr_assert_eq(r, 0, "submit: %d", r);
	cr_expect(res.read_err, "a source that shrank to 0 bytes: read_err 0, write_err 0x%x: its range was taken for a hole",
		  res.write_err);
	kcopyd_dev_close(src);
	unlink(path);
}

/* How many lines of /proc/self/maps map an io_uring (its SQ and CQ rings, its SQEs). */
static int io_uring_mappings(void)
{
	char line[512];
	int count = 0;
	FILE *maps = fopen("/proc/self/maps", "re");

	if (!maps)
		return -1;
	while (fgets(line, sizeof(line), maps))
		if (strstr(line, "[io_uring]"))
			count++;
	fclose(maps);
	return count;
}

/*
 * A process with an io_uring client that forks (kcopydfs forks a helper per
 * region open, which becomes the job's owner) must not hand the child the
 * ring: its SQ ring and SQE array are shared memory, so whatever a child
 * wrote there the parent's next io_uring_enter would submit with the
 * engine's credentials, and the child's mapping keeps the ring and its
 * pinned buffers alive as long as it lives.  The buffer slots and our own
 * zeros are MADV_DONTFORK already; the rings must be too
 * (io_uring_ring_dontfork()).  libaio's context cannot be used from a
 * child at all (the child's mm has no ioctx table).
 */
Test(devices, a_forked_child_gets_no_mapping_of_the_io_uring_rings)
{
	struct kcopyd_config config = { .num_pages = CLIENT_PAGES, .io_engine = KCOPYD_IO_ENGINE_IO_URING };
	const uint64_t count = 1 * MiB >> KCOPYD_SECTOR_SHIFT;
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = count };
	struct io_region to = region(T_LOOP_A, 0, count);
	struct kcopyd_result res;
	struct kcopyd_client *kc;
	char why[256];
	int r, status, parent_count;
	pid_t child;

	if (kcopyd_io_engine_probe(KCOPYD_IO_ENGINE_IO_URING, why, sizeof(why)) < 0)
		cr_skip_test("no io_uring here: %s", why);
	r = kcopyd_client_create_config(&config, &kc);
	cr_assert_eq(r, 0, "kcopyd_client_create_config(io_uring): %d (%s)", r, strerror(-r));
	/* A copy first, so that the ring has carried I/O. */
	r = tu_copy_sync(kc, &from, 1, &to, 0, &res);
	cr_assert(r == 0 && !res.read_err && !res.write_err, "copy: %d, read_err %d, write_err 0x%x", r,
		  res.read_err, res.write_err);
	parent_count = io_uring_mappings();
	cr_assert(parent_count > 0, "the parent maps its ring (%d lines of [io_uring] in its maps)", parent_count);
	child = fork();
	cr_assert(child >= 0, "fork: %s", strerror(errno));
	if (child == 0)
		_exit(io_uring_mappings() & 0x7f);
	cr_assert_eq(waitpid(child, &status, 0), child, "waitpid: %s", strerror(errno));
	kcopyd_client_destroy(kc);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "a forked child maps the client's io_uring: %d lines of [io_uring] in its maps (the parent %d); "
		  "libaio's context is of no use in a child", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
		  parent_count);
}

/* ---- the I/O engines ------------------------------------------------------ */

static const unsigned int named_engines[] = { KCOPYD_IO_ENGINE_LIBAIO, KCOPYD_IO_ENGINE_IO_URING };

/* A client of CLIENT_PAGES pages with @engine, which must be made. */
static struct kcopyd_client *engine_client(unsigned int engine)
{
	const struct kcopyd_config config = { .num_pages = CLIENT_PAGES, .io_engine = engine };
	struct kcopyd_client *kc = NULL;
	char why[192] = "";
	int r = kcopyd_client_create_config(&config, &kc);

	if (r < 0)
		(void)kcopyd_io_engine_probe(engine, why, sizeof(why));
	cr_assert_eq(r, 0, "kcopyd_client_create_config(io_engine %s): %d (%s); probe: %s",
		     kcopyd_io_engine_name(engine), r, strerror(-r), why);
	return kc;
}

/*
 * Each engine named runs, and says so through kcopyd_client_io_engine()
 * and kcopyd_client_stats(), with nothing to add for root (CAP_IPC_LOCK:
 * io_uring's buffers are registered); auto is io_uring exactly when the
 * probe says it can run (not under a seccomp filter or the sysctl), and
 * copies through either.
 */
Test(devices, each_engine_says_it_runs_in_io_engine_and_stats)
{
	const uint64_t count = (4 * MiB) >> KCOPYD_SECTOR_SHIFT;
	unsigned int index;

	for (index = 0; index < 3; index++) {
		unsigned int asked = index < 2 ? named_engines[index] : KCOPYD_IO_ENGINE_AUTO;
		unsigned int want = asked;
		struct kcopyd_client *kc;
		struct kcopyd_stats stats;
		struct kcopyd_result res;
		struct io_region to = region(T_LOOP_A, index * count, count);
		struct io_region from = { .bdev = fx.src, .sector = 100 + index, .count = count };
		char why[192] = "unset", probe_why[192] = "";
		int r;

		if (asked == KCOPYD_IO_ENGINE_AUTO)
			want = kcopyd_io_engine_probe(KCOPYD_IO_ENGINE_IO_URING, probe_why, sizeof(probe_why)) == 0
				       ? KCOPYD_IO_ENGINE_IO_URING
				       : KCOPYD_IO_ENGINE_LIBAIO;
		kc = engine_client(asked);
		cr_expect_eq(kcopyd_client_io_engine(kc, why, sizeof(why)), want,
			     "asked %s: kcopyd_client_io_engine() says %s, expected %s (probe: '%s')",
			     kcopyd_io_engine_name(asked), kcopyd_io_engine_name(kcopyd_client_io_engine(kc, NULL, 0)),
			     kcopyd_io_engine_name(want), probe_why);
		if (want == asked || want == KCOPYD_IO_ENGINE_IO_URING)
			cr_expect_str_empty(why, "asked %s, running it as root: why '%s', expected nothing to say",
					    kcopyd_io_engine_name(asked), why);
		else
			cr_expect(strncmp(why, "io_uring: ", 10) == 0,
				  "auto fell back to libaio: why '%s', expected 'io_uring: <the reason>'", why);
		kcopyd_client_stats(kc, &stats);
		cr_expect_eq(stats.io_engine, want, "asked %s: stats.io_engine %u (%s), expected %s",
			     kcopyd_io_engine_name(asked), stats.io_engine, kcopyd_io_engine_name(stats.io_engine),
			     kcopyd_io_engine_name(want));
		r = tu_copy_sync(kc, &from, 1, &to, 0, &res);
		kcopyd_client_destroy(kc);
		cr_assert_eq(r, 0, "asked %s: tu_copy_sync: %d", kcopyd_io_engine_name(asked), r);
		expect_clean_result(kcopyd_io_engine_name(asked), &res, count);
		expect_source_copy(kcopyd_io_engine_name(asked), from.sector, &to);
	}
}

/*
 * A copy whose source has zero ranges (a hole and zeros written as data)
 * through @engine to two destinations where fallocate(2) is refused: a
 * file on a ramfs (no fallocate at all: both ways of zeroing refused, the
 * engine writes from its zero page) and a loop device over one (the loop
 * device has no write-zeroes, so the punch, which must not fall back, is
 * refused; FALLOC_FL_ZERO_RANGE then has the kernel write zero pages).
 * Each destination was full of other bytes: the zeros must be written.
 */
static void zero_ranges_where_fallocate_is_refused(unsigned int engine)
{
	const char *name = kcopyd_io_engine_name(engine);
	const uint64_t bytes = 8 * MiB, count = bytes >> KCOPYD_SECTOR_SHIFT;
	/* The source's zero ranges: [2 MiB, 4 MiB) a hole, [5 MiB, 6 MiB) zeros as data. */
	const uint64_t hole = 2 * MiB, hole_len = 2 * MiB, zeros = 5 * MiB, zeros_len = 1 * MiB;
	char ramfs[sizeof(fx.dir) + 8], src_path[PATH_MAX], file_path[sizeof(ramfs) + 8], backing[sizeof(ramfs) + 8];
	struct kcopyd_dev *src = NULL, *file = NULL, *loop = NULL;
	struct kcopyd_client *kc = engine_client(engine);
	struct kcopyd_stats stats;
	struct kcopyd_result res;
	struct io_region from, to[2];
	const char *const paths[2] = { file_path, fx.extra_loop };
	void *zero_buf = calloc(1, zeros_len);
	unsigned int index;
	int fd, r;

	cr_assert(zero_buf);
	snprintf(src_path, sizeof(src_path), "%s/zero-ranges", fx.dir);
	cr_assert_eq(tu_file_create(src_path, bytes, SRC_SEED), 0, "create %s", src_path);
	fd = open(src_path, O_RDWR);
	cr_assert(fd >= 0 && fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)hole, (off_t)hole_len) == 0 &&
			  pwrite(fd, zero_buf, zeros_len, (off_t)zeros) == (ssize_t)zeros_len,
		  "make the source's zero ranges: %s", strerror(errno));
	close(fd);
	free(zero_buf);

	/* In the fixture's tmpfs, so that teardown's lazy unmount takes it too. */
	snprintf(ramfs, sizeof(ramfs), "%s/ramfs", fx.dir);
	cr_assert(mkdir(ramfs, 0700) == 0 && mount("ramfs", ramfs, "ramfs", 0, NULL) == 0, "mount a ramfs on %s: %s",
		  ramfs, strerror(errno));
	snprintf(file_path, sizeof(file_path), "%s/file", ramfs);
	snprintf(backing, sizeof(backing), "%s/backing", ramfs);
	cr_assert_eq(tu_file_create(file_path, bytes, FILL_SEED), 0, "create %s", file_path);
	cr_assert_eq(tu_file_create(backing, bytes, FILL_SEED), 0, "create %s", backing);
	/* Without direct I/O: ramfs has none. */
	r = tu_loop_attach(backing, 512, false, fx.extra_loop, sizeof(fx.extra_loop));
	cr_assert_eq(r, 0, "a loop device on %s: %d (%s)", backing, r, strerror(-r));

	cr_assert_eq(kcopyd_dev_open(src_path, O_RDONLY, &src), 0, "open %s", src_path);
	cr_assert_eq(kcopyd_dev_open(file_path, O_RDWR, &file), 0, "open %s", file_path);
	cr_assert_eq(kcopyd_dev_open(fx.extra_loop, O_RDWR, &loop), 0, "open %s", fx.extra_loop);
	from = (struct io_region){ .bdev = src, .sector = 0, .count = count };
	to[0] = (struct io_region){ .bdev = file, .sector = 0, .count = count };
	to[1] = (struct io_region){ .bdev = loop, .sector = 0, .count = count };
	/* No offload: the data goes through the engine's buffers, not copy_file_range. */
	r = tu_copy_sync(kc, &from, 2, to, KCOPYD_NO_OFFLOAD, &res);
	kcopyd_client_stats(kc, &stats);
	kcopyd_dev_close(src);
	kcopyd_dev_close(file);
	kcopyd_dev_close(loop);
	kcopyd_client_destroy(kc);
	cr_assert_eq(r, 0, "%s: tu_copy_sync: %d", name, r);
	expect_clean_result(name, &res, count);
	cr_expect_eq(stats.io_engine, engine, "%s: stats.io_engine %s", name, kcopyd_io_engine_name(stats.io_engine));
	cr_expect_eq(stats.sectors_zero, 2 * ((hole_len + zeros_len) >> KCOPYD_SECTOR_SHIFT),
		     "%s: sectors_zero %" PRIu64 ", expected %" PRIu64 " (3 MiB on each destination)", name,
		     stats.sectors_zero, 2 * ((hole_len + zeros_len) >> KCOPYD_SECTOR_SHIFT));
	cr_expect(stats.zero_fallbacks > 0,
		  "%s: zero_fallbacks 0: the file on the ramfs, which has no fallocate, was never written from the zero page",
		  name);

	for (index = 0; index < 2; index++) {
		const struct {
			uint64_t off, len;
			bool zero;
		} spans[] = {
			{ 0, hole, false },
			{ hole, hole_len, true },
			{ hole + hole_len, zeros - hole - hole_len, false },
			{ zeros, zeros_len, true },
			{ zeros + zeros_len, bytes - zeros - zeros_len, false },
		};
		unsigned int span;

		for (span = 0; span < sizeof(spans) / sizeof(spans[0]); span++) {
			uint64_t diff = 0;

			r = tu_pattern_check(paths[index], spans[span].off, spans[span].len,
					     spans[span].zero ? 0 : SRC_SEED, spans[span].off, &diff);
			cr_expect_eq(r, 0, "%s: %s bytes %" PRIu64 "+%" PRIu64 " should be %s: %s at byte %" PRIu64
				     " (tu_pattern_check=%d)", name, paths[index], spans[span].off, spans[span].len,
				     spans[span].zero ? "zeros" : "the source's", r == 1 ? "wrong byte" : "unreadable",
				     diff, r);
		}
	}
}

Test(devices, zero_ranges_where_fallocate_is_refused_libaio)
{
	zero_ranges_where_fallocate_is_refused(KCOPYD_IO_ENGINE_LIBAIO);
}

Test(devices, zero_ranges_where_fallocate_is_refused_io_uring)
{
	zero_ranges_where_fallocate_is_refused(KCOPYD_IO_ENGINE_IO_URING);
}

/*
 * Make io_uring_enter(2) fail with EPERM in every thread of this process
 * from now on (SECCOMP_FILTER_FLAG_TSYNC: the client's I/O thread too), as
 * a sandbox that a program enters after it made its client would.
 * Return: 0, or -errno.
 */
static int refuse_io_uring_enter_from_now(void)
{
#ifdef HAVE_LIBSECCOMP
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	int r;

	if (!ctx)
		return -ENOMEM;
	r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (r == 0)
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(io_uring_enter), 0);
	if (r == 0)
		r = seccomp_load(ctx);
	seccomp_release(ctx);
	return r;
#else
	return -ENOSYS;
#endif
}

/*
 * A ring whose io_uring_enter is refused for good after the client was made
 * (a sandbox entered later) fails each I/O with the refusal, job after job,
 * for as many I/Os as the ring's submission queue holds many times over:
 * the refused sqes must not stay in that queue, or once it is full no I/O
 * can be handed over, none is in flight to wake the I/O thread, and every
 * later job waits for ever (the suite's timeout then fails it; not one of
 * its own: Criterion 2.4's runner leaks an allocation for a test whose
 * timeout differs from its suite's, which LeakSanitizer reports).  (This
 * binary runs each test in its own process: the filter ends with it.)
 */
Test(devices, io_uring_enter_refused_after_creation_fails_every_job_not_hangs)
{
	/* A small budget, so a small ring: depth = slots * (KCOPYD_MAX_REGIONS + 1). */
	struct kcopyd_config config = { .num_pages = 16, .io_engine = KCOPYD_IO_ENGINE_IO_URING };
	const uint64_t count = (64 * 1024) >> KCOPYD_SECTOR_SHIFT;
	struct io_region from = { .bdev = fx.src, .sector = 0, .count = count };
	struct io_region to = region(T_LOOP_A, 0, count);
	struct kcopyd_result res;
	struct kcopyd_client *kc;
	unsigned int job, failed = 0;
	char why[256];
	int r;

#ifndef HAVE_LIBSECCOMP
	cr_skip_test("configure found no libseccomp (contrib/deps.sh installs libseccomp-dev)");
#endif
	if (kcopyd_io_engine_probe(KCOPYD_IO_ENGINE_IO_URING, why, sizeof(why)) < 0)
		cr_skip_test("no io_uring here: %s", why);
	r = kcopyd_client_create_config(&config, &kc);
	cr_assert_eq(r, 0, "kcopyd_client_create_config(io_uring): %d (%s)", r, strerror(-r));
	r = tu_copy_sync(kc, &from, 1, &to, KCOPYD_NO_OFFLOAD, &res);
	cr_assert(r == 0 && !res.read_err && !res.write_err, "copy before the filter: %d, read_err %d, write_err 0x%x",
		  r, res.read_err, res.write_err);
	r = refuse_io_uring_enter_from_now();
	cr_assert_eq(r, 0, "seccomp(TSYNC) refusing io_uring_enter: %d (%s)", r, strerror(-r));
	/* The ring's submission queue holds at most 1024 sqes; far more jobs than that. */
	for (job = 0; job < 4096; job++) {
		r = tu_copy_sync(kc, &from, 1, &to, KCOPYD_NO_OFFLOAD, &res);
		cr_assert_eq(r, 0, "job %u under the filter: %d (%s)", job, r, strerror(-r));
		if (res.read_err)
			failed++;
	}
	kcopyd_client_destroy(kc);
	cr_expect_eq(failed, 4096, "%u of 4096 jobs failed with io_uring_enter refused; all should", failed);
}
