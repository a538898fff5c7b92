/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * testutil: helpers shared by the device tests (test-devices, test-faults,
 * test-stress).  Every helper is prefixed tu_ and returns 0 on success or a
 * negative errno, unless its comment says otherwise; errno is never used to
 * report anything.  Byte offsets are bytes; sector numbers are 512 bytes.
 *
 * Resources a test creates (tmpfs mounts, FUSE mounts, loop devices) live
 * under /tmp/kcopyd-test.<run>.XXXXXX, where <run> names the test binary's
 * run.  A fixture's teardown removes them; if a test is killed before its
 * teardown runs (a crash, a Criterion timeout), the binary's main() sweeps
 * what is left after all tests ran, says so on stderr and fails the run, so
 * that no mount or loop device outlives `make check`.
 */
#ifndef KCOPYD_TESTUTIL_H
#define KCOPYD_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <unistd.h>

#include "kcopyd.h"

/* tu_now() - CLOCK_MONOTONIC in seconds. */
double tu_now(void);

/* tu_sleep_ms() - sleep @ms milliseconds (through signals). */
void tu_sleep_ms(unsigned int ms);

/* ---------------------------------------------------------------------
 * Deterministic content
 * --------------------------------------------------------------------- */

/*
 * tu_pattern_fill() - fill @buf with the pseudo-random pattern of @seed as
 * it is found at byte @pattern_off of a file made by tu_file_create().
 * The pattern is random access (a counter-based splitmix64: the 8-byte
 * little-endian word at byte 8*i is mix(seed, i)), so any window of it can
 * be regenerated without the others.  Seed 0 is all zeros.
 */
void tu_pattern_fill(void *buf, size_t len, uint64_t seed, uint64_t pattern_off);

/*
 * tu_file_create() - create (or truncate) the regular file @path of exactly
 * @bytes bytes: zeros (sparse) for @seed 0, else the pattern of @seed from
 * its first byte, so that byte x of the file is byte x of the pattern.
 */
int tu_file_create(const char *path, uint64_t bytes, uint64_t seed);

/*
 * tu_pattern_write() - write @bytes of the pattern of @seed, starting at
 * pattern byte @pattern_off, to @path (a file or a block device) at byte
 * @off.  Uses O_DIRECT when the file allows it.
 */
int tu_pattern_write(const char *path, uint64_t off, uint64_t bytes, uint64_t seed,
		     uint64_t pattern_off);

/* ---------------------------------------------------------------------
 * Checking content.  All reads use O_DIRECT with aligned buffers when the
 * file allows it, so neither a loop device's nor a file's page cache can
 * hide what is really on the device.
 * --------------------------------------------------------------------- */

/*
 * tu_compare() - compare @bytes of @path_a at byte @off_a with @path_b at
 * byte @off_b.
 * @first_diff: if not NULL, receives the offset (from @off_a / @off_b) of
 *              the first differing byte when they differ.
 * Return: 0 if equal, 1 if different, -errno on error (-ENODATA if a range
 * runs past the end of its file).
 */
int tu_compare(const char *path_a, uint64_t off_a, const char *path_b, uint64_t off_b,
	       uint64_t bytes, uint64_t *first_diff);

/*
 * tu_pattern_check() - compare @bytes of @path at byte @off with the pattern
 * of @seed from pattern byte @pattern_off (seed 0: with zeros).
 * Return: as tu_compare(); @first_diff relative to @off.
 */
int tu_pattern_check(const char *path, uint64_t off, uint64_t bytes, uint64_t seed,
		     uint64_t pattern_off, uint64_t *first_diff);

/*
 * tu_read() - read @len bytes of @path at byte @off into @buf.
 * Return: 0, -ENODATA if the file ends before, or -errno.
 */
int tu_read(const char *path, uint64_t off, void *buf, size_t len);

/*
 * tu_find_nonzero() - look for a non-zero byte in @bytes of @path at @off.
 * Return: 0 if every byte is zero, 1 if one is not (its offset from @off in
 * *@first_nonzero if not NULL), -errno on error.
 */
int tu_find_nonzero(const char *path, uint64_t off, uint64_t bytes, uint64_t *first_nonzero);

/*
 * tu_is_zero() - a predicate: 1 if every byte of @bytes of @path at @off is
 * zero, 0 if one is not, -errno on error.
 */
int tu_is_zero(const char *path, uint64_t off, uint64_t bytes);

/* ---------------------------------------------------------------------
 * tmpfs and loop devices
 * --------------------------------------------------------------------- */

/*
 * tu_tmpfs_mount() - make a directory under /tmp and mount a tmpfs of
 * @bytes bytes on it (the size is a limit: pages are used as written).
 * @dir, @dir_len: receive the directory's path.
 */
int tu_tmpfs_mount(size_t bytes, char *dir, size_t dir_len);

/* tu_tmpfs_unmount() - lazily unmount @dir and remove it.  "" is a no-op. */
void tu_tmpfs_unmount(const char *dir);

/*
 * tu_loop_attach() - bind a free loop device to @file (LOOP_CTL_GET_FREE +
 * LOOP_CONFIGURE; a device taken by a parallel test in between is retried).
 * @sector_size: the logical block size, 512 or 4096.
 * @direct_io:   ask for LO_FLAGS_DIRECT_IO; -EOPNOTSUPP if the kernel did
 *               not switch it on (the device is detached again then).
 * @dev, @dev_len: receive "/dev/loopN".
 * A file that cannot be opened read-write is bound read-only.
 */
int tu_loop_attach(const char *file, unsigned int sector_size, bool direct_io, char *dev,
		   size_t dev_len);

/*
 * tu_loop_attach_at() - tu_loop_attach() with 512-byte sectors and direct
 * I/O, the device's sector 0 being byte @offset of @file (LO_OFFSET, as
 * losetup -o).  @file may itself be a block device (a loop over a loop).
 */
int tu_loop_attach_at(const char *file, uint64_t offset, char *dev, size_t dev_len);

/* tu_loop_detach() - unbind the loop device @dev (LOOP_CLR_FD). */
int tu_loop_detach(const char *dev);

/* tu_loop_rig_missing() - NULL if loop devices on a tmpfs can be made here
 * (root, /dev/loop-control), else why not. */
const char *tu_loop_rig_missing(void);

/* ---------------------------------------------------------------------
 * A faulty block device: nbdkit (with the error or ddrescue filter) served
 * through nbdfuse as a file, with a direct-I/O loop device on it.  Errors
 * reach the engine as genuine -EIO from io_getevents().
 * --------------------------------------------------------------------- */

struct tu_nbd {
	char dir[256];		/* work directory under /tmp ("" once stopped) */
	char mnt[280];		/* dir/mnt: the FUSE mount point */
	char disk[300];		/* dir/mnt/disk: the NBD export as a file */
	char trigger[280];	/* dir/trigger: error-filter errors only while it exists */
	char mapfile[280];	/* dir/ddrescue.map */
	char log[280];		/* dir/nbdfuse.log: stderr of nbdfuse and nbdkit */
	char loop[32];		/* the loop device on disk, "" if none */
	pid_t pid;		/* nbdfuse, 0 if not running */
};

/* A byte range. */
struct tu_range {
	uint64_t off;
	uint64_t len;
};

/*
 * tu_nbd_prepare() - make the work directory and fill in the paths of @nbd,
 * so they can be named in the arguments of tu_nbd_start().
 */
int tu_nbd_prepare(struct tu_nbd *nbd);

/*
 * tu_nbd_start() - run `nbdfuse [-r] MNT/disk --command nbdkit -s
 * --exit-with-parent [-r] ARGS...`, wait (up to 10 s) until MNT/disk is
 * there, and bind a 512-byte-sector direct-I/O loop device to it, with
 * request merging off (queue/nomerges = 2) so that a bad block fails only
 * the one I/O that touches it.
 * @nbdkit_args: the plugin, filters and parameters, NULL-terminated.
 * On failure everything is undone and the log is copied to stderr.
 */
int tu_nbd_start(struct tu_nbd *nbd, bool readonly, const char *const nbdkit_args[]);

/*
 * tu_nbd_start_write_errors() - a zeroed RAM disk of @bytes whose writes
 * (pwrite, zero, trim) fail with EIO while nbd->trigger exists.
 */
int tu_nbd_start_write_errors(struct tu_nbd *nbd, uint64_t bytes);

/*
 * tu_nbd_start_read_errors() - a zeroed RAM disk of @bytes whose reads fail
 * with EIO while nbd->trigger exists (fill it through nbd->loop first).
 */
int tu_nbd_start_read_errors(struct tu_nbd *nbd, uint64_t bytes);

/*
 * tu_nbd_start_bad_ranges() - serve the file @image read-only, with every
 * read that touches one of the @n byte ranges @bad failing with EIO (a GNU
 * ddrescue mapfile through nbdkit-ddrescue-filter).  The ranges must be
 * sorted, disjoint and inside the image.
 */
int tu_nbd_start_bad_ranges(struct tu_nbd *nbd, const char *image, const struct tu_range *bad,
			    unsigned int n);

/*
 * tu_nbd_start_flaky() - a zeroed RAM disk of @bytes whose reads fail with
 * EIO at @read_rate and writes at @write_rate (nbdkit's "20%" form, NULL
 * for none), each request drawn at random, while nbd->trigger exists:
 * errors that come and go.
 */
int tu_nbd_start_flaky(struct tu_nbd *nbd, uint64_t bytes, const char *read_rate, const char *write_rate);

/*
 * tu_nbd_start_slow() - a zeroed RAM disk of @bytes whose every read and
 * write takes @delay_ms longer (nbdkit-delay-filter): a slow disk.
 */
int tu_nbd_start_slow(struct tu_nbd *nbd, uint64_t bytes, unsigned int delay_ms);

/*
 * tu_nbd_start_lossy() - serve the file @image read-write through
 * tests/lossy-nbdkit.sh (an nbdkit sh plugin): the first write that
 * touches the byte range @lie is acknowledged but lost (@flip false), or
 * stored with its byte at max(@lie.off, the write's offset) inverted (@flip
 * true); every other request is served faithfully.  A disk that silently
 * loses or corrupts a write: only a read-back can tell.  Each lie is logged
 * as "MODE OFFSET COUNT" (bytes) in nbd->mapfile, which tu_nbd_lies() reads.
 */
int tu_nbd_start_lossy(struct tu_nbd *nbd, const char *image, struct tu_range lie, bool flip);

/*
 * tu_nbd_lies() - how many writes the lossy plugin of @nbd has lied about
 * so far, and the byte range of the first in *@first (may be NULL).
 * Return: the count (0 or 1), or -errno.
 */
int tu_nbd_lies(const struct tu_nbd *nbd, struct tu_range *first);

/* tu_nbd_lossy_missing() - NULL if nbdkit's sh plugin can run the lossy script here, else why not. */
const char *tu_nbd_lossy_missing(void);

/*
 * tu_nbd_kill_server() - kill nbdkit (SIGKILL), as a disk that vanishes:
 * nbdfuse stays, and every request after it fails.  Return: 0, or -ESRCH
 * if no nbdkit child of nbdfuse was found.
 */
int tu_nbd_kill_server(struct tu_nbd *nbd);

/* tu_nbd_errors() - switch error-filter errors on (create nbd->trigger)
 * or off (remove it). */
int tu_nbd_errors(struct tu_nbd *nbd, bool on);

/*
 * tu_nbd_stop() - detach the loop device, unmount (fusermount3 -u, else a
 * lazy umount2), reap nbdfuse (killed after 5 s), remove the work directory.
 * Safe on a zeroed, prepared, started or already stopped @nbd.
 */
void tu_nbd_stop(struct tu_nbd *nbd);

/* tu_nbd_rig_missing() - NULL if the rig can run here, else why not. */
const char *tu_nbd_rig_missing(void);

/* ---------------------------------------------------------------------
 * The engine
 * --------------------------------------------------------------------- */

/*
 * tu_copy_sync() - run one job to its end: kcopyd_submit() a copy (@from
 * non-NULL) or zero (@from NULL) job, kcopyd_job_wait(), kcopyd_job_result()
 * into @res (may be NULL), kcopyd_job_release().
 * Return: 0 once the job finished (its I/O errors are in @res); the error of
 * kcopyd_submit() or kcopyd_job_result() otherwise.
 */
int tu_copy_sync(struct kcopyd_client *kc, const struct io_region *from, unsigned int n,
		 const struct io_region *dests, unsigned int flags, struct kcopyd_result *res);

/* ---------------------------------------------------------------------
 * Running a Criterion binary
 * --------------------------------------------------------------------- */

/* The tag of this run's resource names: "kcopyd-test.<tag>." */
const char *tu_run_tag(void);

/*
 * tu_sweep_leftovers() - detach loop devices and unmount mounts this run
 * left under /tmp/kcopyd-test.<tag>.*, and remove those directories.
 * Return: how many resources had to be cleaned (0: none were left).
 */
int tu_sweep_leftovers(void);

/*
 * tu_criterion_main() - run every test (criterion_initialize,
 * criterion_handle_args, criterion_run_all_tests, criterion_finalize), then
 * tu_sweep_leftovers().  Return: 0 if every test passed and nothing was
 * left over, else 1.
 */
int tu_criterion_main(int argc, char *argv[]);

/*
 * TU_MAIN_REQUIRES(cond_expr, reason) - define main(): when @cond_expr is
 * false print "SKIP: <reason>" and exit 77 (automake's "skipped"), else run
 * the tests.  @reason is a string expression, evaluated only when skipping.
 */
#define TU_MAIN_REQUIRES(cond_expr, reason)						\
	int main(int argc, char *argv[]);						\
	int main(int argc, char *argv[])						\
	{										\
		if (!(cond_expr)) {							\
			printf("SKIP: %s\n", (reason));					\
			return 77;							\
		}									\
		return tu_criterion_main(argc, argv);					\
	}

/* TU_MAIN_REQUIRES_ROOT(reason) - skip with "SKIP: <reason>: needs root"
 * unless running as root. */
#define TU_MAIN_REQUIRES_ROOT(reason)							\
	TU_MAIN_REQUIRES(geteuid() == 0, reason ": needs root")

#endif /* KCOPYD_TESTUTIL_H */
