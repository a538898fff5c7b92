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
#include "proto/jobspec.h"

/* Exit statuses (see EXIT STATUS in kcopy(1)). */
#define EXIT_OK		0	/* everything copied and flushed */
#define EXIT_IO_ERROR	1	/* a read, write or fsync failed, or a file could not be opened */
#define EXIT_USAGE	2	/* bad command line, or refused regions (overlap, past the end, in use, too large) */
#define EXIT_VERIFY	3	/* --verify: everything was copied and flushed, but a destination did not
				 * read back as the source (or could not be read back) */

#define PROGRESS_TERMINAL_INTERVAL_MS	200	/* redraw the bar 5 times a second */
#define PROGRESS_LOG_INTERVAL_MS	1000	/* one line a second when stderr is no terminal, and to --progress=FD */
#define PROGRESS_DEFAULT_COLUMNS	80	/* the width of a bar when stderr is no terminal */

#define KCOPY_DEFAULT_PAGES		16384u	/* 64 MiB of I/O buffers */

/*
 * A region argument is split by the grammar kcopydfs's ctl uses too
 * (src/proto/jobspec.h): a struct jobspec_region, whose path is the
 * argument without its :SECTOR+COUNT, relative or absolute, or an NBD URI
 * (is_uri) taken as it is.
 */

/*
 * A destination and what we hold open for it.  Every check is made before
 * anything is created or extended (plan_destination()), and what was
 * created or extended is put back if kcopy still refuses before the job
 * starts (undo_destination_files()).
 */
struct destination {
	struct jobspec_region where;
	int sync_fd;			/* a separate O_RDONLY descriptor to fsync at the end; -1 if not open
					 * (an NBD export: flushed with kcopyd_dev_sync() instead) */
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
	bool made_by_kcopy;		/* created or extended by this run, by this destination or an earlier one
					 * of the same name: it reads as zeros from @zeros_from_bytes on */
	uint64_t zeros_from_bytes;	/* its size before kcopy made or extended it (0 if created) */
	dev_t made_dev;			/* the file made or extended, to know it when named again */
	ino_t made_ino;
};

/*
 * What kcopy shows of a running job (report.c): the bar on stderr and the
 * lines of --progress=FD.  Used by the thread that waits for the job only.
 */
struct progress {
	bool bar;			/* draw the bar on stderr */
	bool terminal;			/* stderr is a terminal: the bar is redrawn in place */
	unsigned int columns;		/* the terminal's width; PROGRESS_DEFAULT_COLUMNS on no terminal */
	unsigned int line_len;		/* the bar's length on the terminal's current line, 0 if none is open */
	int fd;				/* --progress=FD, -1 if none (or dropped after a failed write) */
	double start_seconds;		/* CLOCK_MONOTONIC at submission */
	uint64_t sectors_done;		/* the last progress read from the job */
	uint64_t sectors_total;
	unsigned int phase;		/* KCOPYD_PHASE_*: the job's phase at the last reading */
	uint64_t sectors_verified;	/* KCOPYD_PHASE_VERIFY: sectors read back, summed over destinations */
	uint64_t sectors_verify_total;	/* ... of this many; 0 without --verify */
	double verify_start_seconds;	/* CLOCK_MONOTONIC when the verify phase began, as far as seen; 0 before */
	double copy_seen_seconds;	/* CLOCK_MONOTONIC of the last reading still in the copy phase */
	bool quiet;			/* --quiet: SIGUSR1 prints nothing (dd's status=none) */
	bool paused_job;		/* SIGTSTP paused the job (--via), SIGCONT resumes it */
};

/*
 * What progress_update() is told of the job: its kcopyd_counts fields
 * that the bar and the lines show (the engine's, or a kcopydfs status's
 * progress: and verify: lines).
 */
struct progress_reading {
	uint64_t sectors_done;
	uint64_t sectors_total;
	unsigned int phase;		/* KCOPYD_PHASE_* */
	uint64_t sectors_verified;
	uint64_t sectors_verify_total;
};

/* Everything one run of kcopy works on. */
struct kcopy {
	/* from the command line */
	struct kcopyd_config config;
	bool engine_options;		/* --pages, --subjob-kb, --depth or --io-engine was given */
	unsigned int job_flags;		/* as asked: KCOPYD_IGNORE_ERROR, KCOPYD_WRITE_SEQ, KCOPYD_DEST_ZERO,
					 * KCOPYD_ALLOCATED, KCOPYD_NO_OFFLOAD (the resume command repeats them) */
	unsigned int hashes;		/* --hash: KCOPYD_HASH_* bits, digests of the source */
	bool verify;			/* --verify: KCOPYD_VERIFY (kept out of job_flags, which
					 * kcopyd_validate() and the description's flags= take) */
	uint64_t rate;			/* --rate: bytes read per second, 0: no limit */
	bool zero;			/* --zero: no source */
	bool quiet;			/* --quiet: no bar, no summary */
	bool verbose;			/* --verbose: say how the copy runs */
	bool progress_forced;		/* --progress: a bar even when stderr is no terminal */
	int progress_fd;		/* --progress=FD: machine-readable lines to FD; -1 if not given */
	const char *via;		/* --via MOUNT: run the job in that kcopydfs daemon; NULL if not */
	struct jobspec_region source;	/* unused with --zero */
	unsigned int num_dests;
	struct destination dests[KCOPYD_MAX_REGIONS];

	/* set up by the stages */
	struct kcopyd_dev *source_dev;	/* NULL with --zero or if not open */
	uint64_t count;			/* sectors per region, the same for all */
	struct io_region from;		/* the source region, for the engine */
	struct io_region regions[KCOPYD_MAX_REGIONS];	/* the destination regions */
	bool job_started;		/* the job was handed to the engine or the daemon: no undo after */
	/*
	 * Every destination range reads as zeros already: each lies in a file
	 * kcopy created, or past the old end of one it extended
	 * (dests_read_as_zeros()).  The engine's job then gets KCOPYD_DEST_ZERO
	 * as if asked, so zero ranges are skipped, not punched; not part of
	 * job_flags, for a resumed copy finds the files made and half written.
	 */
	bool dests_zero_known;
	struct progress progress;	/* its start_seconds is the job's, for the summary too */
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
	bool counts_known;		/* @result.counts holds data, zero and offloaded sectors (--via: a daemon
					 * whose status has no sectors_data line leaves them unknown) */
	/*
	 * Sectors from the start of the regions written everywhere without a
	 * gap (kcopyd_job_checkpoint()): a copy of the rest finishes the job.
	 */
	uint64_t checkpoint;
	bool checkpoint_known;		/* --via: the status had a checkpoint line (a daemon before sparse copies has none) */
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

/* ---- report.c: progress, signals, the resume command ---- */

/*
 * format_bytes() - a byte count for people: "512 B", "1.5 KiB", "64.0 MiB".
 * Return: @buf.
 */
const char *format_bytes(uint64_t bytes, char *buf, size_t len);

/*
 * format_rate() - a rate limit as --rate reads it back: "16M" for
 * 16777216, "6K" for 6144, a plain byte count when it is no whole KiB.
 * Return: @buf.
 */
const char *format_rate(uint64_t bytes, char *buf, size_t len);


/*
 * The columns the bar's line leaves free at the right of the terminal: a
 * line that fills the last column wraps on some terminals, and the terminal
 * echoes ^Z or ^C (two columns) after the bar before kcopy clears it; had
 * that wrapped, the clear would reach only the row below and leave the bar.
 */
#define PROGRESS_SPARE_COLUMNS 3

/*
 * format_progress() - the progress bar's line, a pure function:
 * "[#########      ]  45.2%    29.0 MiB / 64.0 MiB     312.4 MB/s  ETA 0:00:01"
 * fitted to @columns - PROGRESS_SPARE_COLUMNS characters: the bar takes the room the fields leave, and
 * the fields that do not fit are left out, the rate first, then the
 * bytes, then the ETA; the percentage stays (cut if even it does not fit).
 * @done_bytes, @total_bytes: the amount copied (per destination) and in all.
 * @elapsed:   seconds since the job started.
 * @columns:   the terminal's width.
 * Return: @buf.
 */
const char *format_progress(uint64_t done_bytes, uint64_t total_bytes, double elapsed, unsigned int columns,
			    char *buf, size_t len);

/*
 * format_progress_report() - the line SIGUSR1 prints, without "kcopy: "
 * and its newline: "30408704 of 67108864 bytes (45.3%) done in 3.1 s,
 * 9.8 MB/s, ETA 0:00:04".
 * Return: @buf.
 */
const char *format_progress_report(uint64_t done_bytes, uint64_t total_bytes, double elapsed, char *buf, size_t len);

/*
 * format_progress_fd_line() - one line of --progress=FD, with its newline:
 * "PERCENT/100 DONE_BYTES TOTAL_BYTES STATE" (see kcopy(1)).  PERCENT is
 * rounded down and is 100 only once everything is done.
 * @state: "running", or the final "done", "cancelled" or "failed".
 * Return: @buf.
 */
const char *format_progress_fd_line(uint64_t done_bytes, uint64_t total_bytes, const char *state,
				    char *buf, size_t len);

/*
 * format_resume_command() - the command line that copies (or zeroes) what
 * a job did not finish: the same arguments with every region moved on by
 * @checkpoint sectors, each written PATH:SECTOR+COUNT (the source and, with
 * --zero, every destination) or PATH:SECTOR, quoted for a POSIX shell.
 * --progress=FD is left out (the descriptor is this run's); --rate and
 * --verify are kept; --hash only when @checkpoint is 0 (the rest's digest
 * would not be the whole range's).
 * @checkpoint: sectors from the start of the regions known done.
 * Return: a malloc'd string without a newline; NULL if nothing is left
 * (@checkpoint reaches the count) or memory ran out.
 */
char *format_resume_command(const struct kcopy *state, uint64_t checkpoint);

/*
 * progress_init() - set up @progress: whether stderr is a terminal and
 * its width.  Nothing is drawn yet.
 * @bar: draw the bar on stderr.
 * @fd:  --progress=FD, or -1.
 */
void progress_init(struct progress *progress, bool bar, int fd);

/* progress_resize() - read the terminal's width again (SIGWINCH) and redraw an open bar to fit it. */
void progress_resize(struct progress *progress);

/*
 * format_progress_phase() - the bar's line for the job's phase: the copy's
 * bar (format_progress()); in the verify phase "verifying " and a bar of
 * the read-back (sectors_verified of sectors_verify_total, its rate and
 * ETA from @verify_elapsed); while the destinations are flushed before it,
 * a line that says so.  Fitted to @columns - PROGRESS_SPARE_COLUMNS as
 * format_progress().
 * @elapsed:        seconds since the job started.
 * @verify_elapsed: seconds since the verify phase started.
 * Return: @buf.
 */
const char *format_progress_phase(const struct progress_reading *reading, double elapsed, double verify_elapsed,
				  unsigned int columns, char *buf, size_t len);

/*
 * format_progress_report_phase() - the SIGUSR1 line for the job's phase:
 * format_progress_report() while copying; in the verify phase "67108864
 * bytes copied; verifying: 30408704 of 134217728 bytes read back (22.7%)
 * in 1.0 s, 30.4 MB/s, ETA 0:00:03" (summed over the destinations).
 * Return: @buf.
 */
const char *format_progress_report_phase(const struct progress_reading *reading, double elapsed,
					 double verify_elapsed, char *buf, size_t len);

/*
 * progress_record() - keep @reading as the job's last progress (and note
 * when its verify phase began), without drawing.
 */
void progress_record(struct progress *progress, const struct progress_reading *reading);

/* progress_interval_ms() - how often the job's loop calls progress_update(). */
int progress_interval_ms(const struct progress *progress);

/* progress_draw() - draw the bar, if there is one, for the last progress recorded. */
void progress_draw(struct progress *progress);

/*
 * progress_update() - record the job's progress, draw the bar and write
 * a "running" line to --progress=FD (whichever of them is on).
 */
void progress_update(struct progress *progress, const struct progress_reading *reading);

/* progress_break_line() - end the bar's line, if one is open, before a message. */
void progress_break_line(struct progress *progress);

/*
 * progress_print_report() - print the last progress recorded as one
 * full line on stderr (SIGUSR1), whether or not there is a bar; an open
 * bar is drawn again below it.
 */
void progress_print_report(struct progress *progress);

/* progress_end() - draw the bar a last time, for the job's end, and end its line. */
void progress_end(struct progress *progress, const struct progress_reading *reading);

/*
 * progress_final() - the last line of --progress=FD.
 * @sectors_done: where the job stopped.
 * @state:        "done", "cancelled" or "failed".
 */
void progress_final(struct progress *progress, uint64_t sectors_done, const char *state);

/*
 * job_signals_open() - block, in every thread, SIGINT, SIGTERM, SIGHUP and
 * SIGTSTP (those not ignored: a signal ignored by whoever started us stays
 * ignored), SIGUSR1, SIGWINCH and SIGCONT, and return a non-blocking signalfd for
 * them.
 * @old_mask: receives the mask to give back to job_signals_close().
 * Return: the descriptor, or -errno (reported; the mask is restored).
 */
int job_signals_open(sigset_t *old_mask);

/*
 * job_signals_close() - drain and close @signal_fd, restore @old_mask.
 * A signal that came after the job finished must not kill us when unblocked.
 */
void job_signals_close(int signal_fd, const sigset_t *old_mask);

/* What handle_job_signals() does to the job it is waiting for. */
struct job_control {
	int (*cancel)(void *context);		/* 0 or -errno (reported) */
	/* The job's progress now; on a failure to read it, *@reading is left as it was. */
	void (*read_progress)(struct progress_reading *reading, void *context);
	/*
	 * SIGTSTP and SIGCONT: pause and resume a job that does not stop with
	 * this process (--via); NULL for the engine's, which does.  0 or
	 * -errno (reported).
	 */
	int (*pause)(void *context);
	int (*resume)(void *context);
};

/*
 * handle_job_signals() - act on every signal waiting in @signal_fd.
 * SIGWINCH refits the bar; SIGUSR1 reads the job's progress and prints it
 * (progress_print_report(); nothing with --quiet); SIGTSTP clears the
 * bar's line, pauses a job that runs elsewhere (control->pause) and stops
 * the process; SIGCONT (after that stop, or after a SIGSTOP) resumes that
 * job and draws the bar again; the first SIGINT, SIGTERM or SIGHUP cancels
 * the job, and a second one ends the process at once, by that signal,
 * without waiting for the I/O in flight or flushing the destinations.
 * @signal_fd:   the descriptor of job_signals_open().
 * @stop_signal: the signal that cancelled the job, 0 before.
 * @control:     cancels the job and reads its progress; @context last.
 */
void handle_job_signals(int signal_fd, struct progress *progress, int *stop_signal,
			const struct job_control *control, void *context);

#endif /* KCOPY_KCOPY_H */
