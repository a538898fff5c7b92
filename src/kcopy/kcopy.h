/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopy.h: what kcopy.c and via.c share.  kcopy.c parses the command line,
 * opens and sizes the regions and reports the outcome; the job itself runs
 * either in the process (run_job() in kcopy.c, the libkcopyd engine) or in
 * a kcopydfs daemon (via_run_job() in via.c, --via MOUNT).  Both fill the
 * same struct run_outcome, so the report is the same either way.
 */
#ifndef KCOPY_KCOPY_H
#define KCOPY_KCOPY_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "kcopyd.h"

/* Exit statuses (see EXIT STATUS in kcopy(1)). */
#define EXIT_OK		0	/* everything copied and flushed */
#define EXIT_IO_ERROR	1	/* a read, write or fsync failed, or a file could not be opened */
#define EXIT_USAGE	2	/* bad command line, or refused regions (overlap, past the end, in use, too large) */

#define PROGRESS_TERMINAL_INTERVAL_MS	200	/* redraw the bar 5 times a second */
#define PROGRESS_LOG_INTERVAL_MS	1000	/* one line a second when stderr is no terminal */

/* One region argument as split from the command line. */
struct region_arg {
	char *path;		/* malloc'd: the argument without its :SECTOR+COUNT */
	uint64_t sector;	/* first sector, 0 when not given */
	uint64_t count;		/* sectors, valid when has_count */
	bool has_count;
};

/*
 * A destination and what we hold open for it.  Every check is made before
 * anything is created or extended (plan_destination()), and what was
 * created or extended is put back if kcopy still refuses before the job
 * starts (undo_destination_files()).
 */
struct destination {
	struct region_arg where;
	int sync_fd;			/* a separate O_RDONLY descriptor to fsync at the end; -1 if not open */
	int claim_fd;			/* O_EXCL on a block device, held for the whole copy; -1 if none */
	struct kcopyd_dev *dev;		/* NULL if not open */
	int fsync_error;		/* -errno of the final fsync, 0 if it succeeded */

	/* set by plan_destination() */
	bool exists;			/* it was there before kcopy ran; @before is its stat */
	struct stat before;
	bool grow;			/* a regular file to create or extend to @end_bytes */
	uint64_t end_bytes;		/* where the destination range ends */
	dev_t new_dir_dev;		/* a file to create: its directory, to tell two names of it apart */
	ino_t new_dir_ino;
	const char *new_name;		/* its last component, in where.path */
	unsigned int new_block_size;	/* its alignment, from a probe; 0 if unknown */

	/* set by make_destination_files(), for the undo */
	bool created;			/* removed again if kcopy refuses */
	bool extended;			/* cut back to before.st_size, times restored, if kcopy refuses */
};

/* Everything one run of kcopy works on. */
struct kcopy {
	/* from the command line */
	struct kcopyd_config config;
	bool engine_options;		/* --pages, --subjob-kb or --depth was given */
	unsigned int job_flags;		/* KCOPYD_IGNORE_ERROR, KCOPYD_WRITE_SEQ */
	bool zero;			/* --zero: no source */
	bool quiet;			/* --quiet: no bar, no summary */
	bool progress_forced;		/* --progress: a bar even when stderr is no terminal */
	const char *via;		/* --via MOUNT: run the job in that kcopydfs daemon; NULL if not */
	struct region_arg source;	/* unused with --zero */
	unsigned int num_dests;
	struct destination dests[KCOPYD_MAX_REGIONS];

	/* set up by the stages */
	struct kcopyd_dev *source_dev;	/* NULL with --zero or if not open */
	uint64_t count;			/* sectors per region, the same for all */
	struct io_region from;		/* the source region, for the engine */
	struct io_region regions[KCOPYD_MAX_REGIONS];	/* the destination regions */
	bool job_started;		/* the job was handed to the engine or the daemon: no undo after */
	bool show_progress;
	bool stderr_is_terminal;
	double start_seconds;		/* CLOCK_MONOTONIC at submission */
	/*
	 * The engine, kept by run_job() once its job is over and destroyed
	 * by main() after the fsyncs and the report: destroying it waits for
	 * the kernel to tear the aio context down (two RCU grace periods,
	 * 25-75 ms here), which is no part of the copy.
	 */
	struct kcopyd_client *client;
};

/* The outcome of running the job. */
struct run_outcome {
	struct kcopyd_result result;
	int stop_signal;		/* the signal that cancelled the job, 0 if none */
	bool failed_otherwise;		/* --via: the job failed in a way @result cannot show (reported) */
};

/* Room for errno_text(). */
#define ERRNO_TEXT_LEN 128

/* complain() - print "kcopy: " and a formatted line on stderr. */
void complain(const char *format, ...) __attribute__((format(printf, 1, 2)));

/*
 * errno_text() - describe an errno as "EIO (Input/output error)".
 * @error:  a positive or negative errno.
 * @buf:    where to write the text.
 * @len:    the size of @buf.
 * Return: @buf.
 */
const char *errno_text(int error, char *buf, size_t len);

/* monotonic_seconds() - CLOCK_MONOTONIC in seconds. */
double monotonic_seconds(void);

/*
 * draw_progress() - show the job's progress on stderr: redrawn in place
 * on a terminal, one line at a time otherwise.
 * @line_len: the length of the line left open on the terminal (0 if none),
 *            to blank what the new line does not cover.
 */
void draw_progress(const struct kcopy *state, uint64_t sectors_done, uint64_t sectors_total, int *line_len);

/*
 * stop_signals_open() - block SIGINT and SIGTERM (those not ignored) in
 * every thread and return a non-blocking signalfd for them.
 * @old_mask: receives the mask to give back to stop_signals_close().
 * Return: the descriptor, or -errno (reported; the mask is restored).
 */
int stop_signals_open(sigset_t *old_mask);

/*
 * stop_signals_close() - drain and close @signal_fd, restore @old_mask.
 * A signal that came after the job finished must not kill us when unblocked.
 */
void stop_signals_close(int signal_fd, const sigset_t *old_mask);

/*
 * handle_stop_signal() - the first SIGINT or SIGTERM cancels the job; a
 * second one ends the process at once, without waiting for the I/O in
 * flight or flushing the destinations.
 * @signal_fd:   the descriptor of stop_signals_open().
 * @stop_signal: the signal that cancelled the job, 0 before.
 * @line_len:    the progress line left open on the terminal, 0 if none.
 * @cancel:      cancels the job; returns 0 or -errno.  Its context pointer last.
 */
void handle_stop_signal(int signal_fd, int *stop_signal, int *line_len,
			int (*cancel)(void *context), void *context);

#endif /* KCOPY_KCOPY_H */
