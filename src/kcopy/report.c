/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * report.c: what kcopy shows while a job runs and after it, whichever
 * runs the job (run_job() in kcopy.c, via_run_job() in via.c):
 *
 *   - the progress bar on stderr, fitted to the terminal's width and
 *     refitted on SIGWINCH, redrawn in place with \r and "clear to end of
 *     line"; one line at a time when stderr is no terminal (--progress);
 *   - the machine-readable lines of --progress=FD;
 *   - the signals of the job's poll loop, read from one signalfd: SIGINT,
 *     SIGTERM and SIGHUP cancel, SIGUSR1 prints a progress line, SIGWINCH
 *     refits the bar, SIGTSTP clears the bar's line and stops the process
 *     (and SIGCONT draws the bar again);
 *   - the verify phase of --verify: "verifying" and the read-back's share;
 *   - the command that would finish a cancelled or failed copy.
 *
 * The texts are made by pure functions (format_progress(),
 * format_resume_command()) that tests/test_report.c checks without a job.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "kcopy.h"

#define PROGRESS_BAR_MIN	10	/* columns inside the brackets, or no bar at all */
#define PROGRESS_BAR_MAX	60
#define PROGRESS_FIELD_GAP	"  "

/* ---------------------------------------------------------------------
 * Messages
 * --------------------------------------------------------------------- */

/* complain() - see kcopy.h. */
void complain(const char *format, ...)
{
	va_list args;

	fputs("kcopy: ", stderr);
	va_start(args, format);
	vfprintf(stderr, format, args);
	va_end(args);
	fputc('\n', stderr);
}

/* errno_text() - see kcopy.h. */
const char *errno_text(int error, char *buf, size_t len)
{
	const char *name;

	if (error < 0)
		error = -error;
	name = strerrorname_np(error);
	if (name)
		snprintf(buf, len, "%s (%s)", name, strerror(error));
	else
		snprintf(buf, len, "errno %d (%s)", error, strerror(error));
	return buf;
}

/* monotonic_seconds() - see kcopy.h. */
double monotonic_seconds(void)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------------
 * Texts (pure)
 * --------------------------------------------------------------------- */

/* format_bytes() - see kcopy.h. */
const char *format_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double scaled = (double)bytes;
	unsigned int unit = 0;

	while (scaled >= 1024.0 && unit + 1 < sizeof(units) / sizeof(units[0])) {
		scaled /= 1024.0;
		unit++;
	}
	if (unit == 0)
		snprintf(buf, len, "%" PRIu64 " B", bytes);
	else
		snprintf(buf, len, "%.1f %s", scaled, units[unit]);
	return buf;
}

/* format_rate() - see kcopy.h. */
const char *format_rate(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "KMGT";
	unsigned int unit = 0;

	if (bytes == 0 || bytes % 1024) {
		snprintf(buf, len, "%" PRIu64, bytes);
		return buf;
	}
	bytes /= 1024;
	while (unit + 1 < sizeof(units) - 1 && bytes % 1024 == 0) {
		bytes /= 1024;
		unit++;
	}
	snprintf(buf, len, "%" PRIu64 "%c", bytes, units[unit]);
	return buf;
}

/* format_eta() - the time left as H:MM:SS, "-:--:--" while unknown. */
static void format_eta(uint64_t done_bytes, uint64_t total_bytes, double rate, char *buf, size_t len)
{
	if (done_bytes >= total_bytes) {
		snprintf(buf, len, "0:00:00");
	} else if (rate > 0) {
		uint64_t seconds_left = (uint64_t)((double)(total_bytes - done_bytes) / rate + 0.5);

		snprintf(buf, len, "%" PRIu64 ":%02u:%02u", seconds_left / 3600,
			 (unsigned int)(seconds_left / 60 % 60), (unsigned int)(seconds_left % 60));
	} else {
		snprintf(buf, len, "-:--:--");
	}
}

/* format_progress() - see kcopy.h. */
const char *format_progress(uint64_t done_bytes, uint64_t total_bytes, double elapsed, unsigned int columns,
			    char *buf, size_t len)
{
	/* The fields in the order they are shown; the bar comes first. */
	enum { FIELD_PERCENT, FIELD_BYTES, FIELD_RATE, FIELD_ETA, NUM_FIELDS };
	/* The order in which they are given room: the percentage always, then ETA, bytes, rate. */
	static const int priority[] = { FIELD_ETA, FIELD_BYTES, FIELD_RATE };
	char fields[NUM_FIELDS][64], done_text[32], total_text[32], eta[32];
	bool shown[NUM_FIELDS] = { [FIELD_PERCENT] = true };
	double fraction = total_bytes ? (double)done_bytes / (double)total_bytes : 1.0;
	double rate = elapsed > 0 ? (double)done_bytes / elapsed : 0;	/* bytes per second */
	size_t room = columns > PROGRESS_SPARE_COLUMNS ? columns - PROGRESS_SPARE_COLUMNS : 1;
	size_t bar_min = 2 + PROGRESS_BAR_MIN + strlen(PROGRESS_FIELD_GAP);
	size_t used, bar_width = 0, at = 0;

	if (fraction > 1.0)
		fraction = 1.0;
	format_eta(done_bytes, total_bytes, rate, eta, sizeof(eta));
	snprintf(fields[FIELD_PERCENT], sizeof(fields[0]), "%5.1f%%", fraction * 100.0);
	snprintf(fields[FIELD_BYTES], sizeof(fields[0]), "%10s / %-10s",
		 format_bytes(done_bytes, done_text, sizeof(done_text)),
		 format_bytes(total_bytes, total_text, sizeof(total_text)));
	snprintf(fields[FIELD_RATE], sizeof(fields[0]), "%7.1f MB/s", rate / 1e6);
	snprintf(fields[FIELD_ETA], sizeof(fields[0]), "ETA %s", eta);

	used = strlen(fields[FIELD_PERCENT]);
	for (size_t rank = 0; rank < sizeof(priority) / sizeof(priority[0]); rank++) {
		size_t width = strlen(PROGRESS_FIELD_GAP) + strlen(fields[priority[rank]]);

		if (used + width + bar_min > room)
			break;	/* and no field after it: the rate goes first, then the bytes */
		shown[priority[rank]] = true;
		used += width;
	}
	if (used + bar_min <= room) {
		bar_width = room - used - 2 - strlen(PROGRESS_FIELD_GAP);
		if (bar_width > PROGRESS_BAR_MAX)
			bar_width = PROGRESS_BAR_MAX;
	}

	if (len == 0)
		return buf;
	buf[0] = '\0';
	if (bar_width && bar_width + 3 < len) {
		size_t filled = (size_t)(fraction * (double)bar_width);

		buf[at++] = '[';
		for (size_t column = 0; column < bar_width; column++)
			buf[at++] = column < filled ? '#' : ' ';
		buf[at++] = ']';
		buf[at] = '\0';
	}
	for (int field = 0; field < NUM_FIELDS; field++) {
		if (!shown[field])
			continue;
		at += (size_t)snprintf(buf + at, at < len ? len - at : 0, "%s%s", at ? PROGRESS_FIELD_GAP : "",
				       fields[field]);
		if (at >= len)
			at = len - 1;
	}
	/* Narrower than the percentage alone: cut it rather than wrap. */
	if (strlen(buf) > room)
		buf[room] = '\0';
	return buf;
}

/* format_progress_report() - see kcopy.h. */
const char *format_progress_report(uint64_t done_bytes, uint64_t total_bytes, double elapsed, char *buf, size_t len)
{
	double fraction = total_bytes ? (double)done_bytes / (double)total_bytes : 1.0;
	double rate = elapsed > 0 ? (double)done_bytes / elapsed : 0;
	char eta[32];

	format_eta(done_bytes, total_bytes, rate, eta, sizeof(eta));
	snprintf(buf, len, "%" PRIu64 " of %" PRIu64 " bytes (%.1f%%) done in %.1f s, %.1f MB/s, ETA %s",
		 done_bytes, total_bytes, fraction * 100.0, elapsed, rate / 1e6, eta);
	return buf;
}

/* format_progress_phase() - see kcopy.h. */
const char *format_progress_phase(const struct progress_reading *reading, double elapsed, double verify_elapsed,
				  unsigned int columns, char *buf, size_t len)
{
	static const char verifying[] = "verifying ";
	size_t room = columns > PROGRESS_SPARE_COLUMNS ? columns - PROGRESS_SPARE_COLUMNS : 1;

	switch (reading->phase) {
	case KCOPYD_PHASE_FLUSH:
		snprintf(buf, len, "verify: flushing the destinations before reading them back");
		break;
	case KCOPYD_PHASE_VERIFY:
		/* The word first, then a bar of the read-back fitted to the columns it leaves. */
		if (room <= sizeof(verifying) - 1 + 6) {
			format_progress(reading->sectors_verified << KCOPYD_SECTOR_SHIFT,
					reading->sectors_verify_total << KCOPYD_SECTOR_SHIFT, verify_elapsed, columns,
					buf, len);
			return buf;
		}
		snprintf(buf, len, "%s", verifying);
		if (len > sizeof(verifying) - 1)
			format_progress(reading->sectors_verified << KCOPYD_SECTOR_SHIFT,
					reading->sectors_verify_total << KCOPYD_SECTOR_SHIFT, verify_elapsed,
					columns - (unsigned int)(sizeof(verifying) - 1), buf + sizeof(verifying) - 1,
					len - (sizeof(verifying) - 1));
		return buf;
	default:
		return format_progress(reading->sectors_done << KCOPYD_SECTOR_SHIFT,
				       reading->sectors_total << KCOPYD_SECTOR_SHIFT, elapsed, columns, buf, len);
	}
	if (strlen(buf) > room)
		buf[room] = '\0';
	return buf;
}

/* format_progress_report_phase() - see kcopy.h. */
const char *format_progress_report_phase(const struct progress_reading *reading, double elapsed,
					 double verify_elapsed, char *buf, size_t len)
{
	uint64_t done_bytes = reading->sectors_done << KCOPYD_SECTOR_SHIFT;
	uint64_t verified_bytes = reading->sectors_verified << KCOPYD_SECTOR_SHIFT;
	uint64_t verify_bytes = reading->sectors_verify_total << KCOPYD_SECTOR_SHIFT;
	double fraction = verify_bytes ? (double)verified_bytes / (double)verify_bytes : 1.0;
	double rate = verify_elapsed > 0 ? (double)verified_bytes / verify_elapsed : 0;
	char eta[32];

	switch (reading->phase) {
	case KCOPYD_PHASE_FLUSH:
		snprintf(buf, len, "%" PRIu64 " bytes copied in %.1f s; flushing the destinations before verifying",
			 done_bytes, elapsed);
		return buf;
	case KCOPYD_PHASE_VERIFY:
		format_eta(verified_bytes, verify_bytes, rate, eta, sizeof(eta));
		snprintf(buf, len, "%" PRIu64 " bytes copied; verifying: %" PRIu64 " of %" PRIu64
			 " bytes read back (%.1f%%) in %.1f s, %.1f MB/s, ETA %s",
			 done_bytes, verified_bytes, verify_bytes, fraction * 100.0, verify_elapsed, rate / 1e6, eta);
		return buf;
	default:
		return format_progress_report(done_bytes, reading->sectors_total << KCOPYD_SECTOR_SHIFT, elapsed,
					      buf, len);
	}
}

/* format_progress_fd_line() - see kcopy.h. */
const char *format_progress_fd_line(uint64_t done_bytes, uint64_t total_bytes, const char *state,
				    char *buf, size_t len)
{
	unsigned int percent = total_bytes ? (unsigned int)(done_bytes >= total_bytes ? 100
							    : done_bytes * 100.0 / (double)total_bytes)
					   : 100;

	/* Never 100 before the end: a script may take 100/100 for "finished". */
	if (percent == 100 && done_bytes < total_bytes)
		percent = 99;
	snprintf(buf, len, "%u/100 %" PRIu64 " %" PRIu64 " %s\n", percent, done_bytes, total_bytes, state);
	return buf;
}

/*
 * shell_word() - append @word to @out so that a POSIX shell reads it back
 * as one word: as it is if it holds only characters no shell treats
 * specially, else in single quotes (a quote in it as '\'').
 */
static void shell_word(FILE *out, const char *word)
{
	static const char plain[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
				    "%+,-./:=@_";

	if (*word && strspn(word, plain) == strlen(word) && word[0] != '=') {
		fputs(word, out);
		return;
	}
	fputc('\'', out);
	for (const char *at = word; *at; at++) {
		if (*at == '\'')
			fputs("'\\''", out);
		else
			fputc(*at, out);
	}
	fputc('\'', out);
}

/*
 * shell_region() - append @where moved to @sector, with @count if given,
 * as one shell word that kcopy's region grammar reads back (a URI
 * without a path quoted: "nbd://host:10809":8).
 */
static void shell_region(FILE *out, const struct jobspec_region *where, uint64_t sector, const uint64_t *count)
{
	struct jobspec_region moved = *where;
	size_t len = strlen(where->path) * 2 + 64;
	char *word = malloc(len);

	moved.sector = sector;
	moved.has_count = count != NULL;
	moved.count = count ? *count : 0;
	if (!word || jobspec_render_region(&moved, JOBSPEC_REGION_WORD, word, len) < 0) {
		fputs("?", out);	/* the stream's own ENOMEM shows at fclose */
		free(word);
		return;
	}
	fputc(' ', out);
	shell_word(out, word);
	free(word);
}

/* format_resume_command() - see kcopy.h. */
char *format_resume_command(const struct kcopy *state, uint64_t checkpoint)
{
	uint64_t rest = state->count - checkpoint;
	char *text = NULL;
	size_t text_len;
	FILE *out;

	if (checkpoint >= state->count)
		return NULL;
	out = open_memstream(&text, &text_len);
	if (!out)
		return NULL;
	fputs("kcopy", out);
	if (state->via) {
		fputs(" --via ", out);
		shell_word(out, state->via);
	}
	if (state->config.num_pages != KCOPY_DEFAULT_PAGES)
		fprintf(out, " --pages %u", state->config.num_pages);
	if (state->config.subjob_sectors)
		fprintf(out, " --subjob-kb %u", state->config.subjob_sectors / (1024 / KCOPYD_SECTOR_SIZE));
	if (state->config.depth)
		fprintf(out, " --depth %u", state->config.depth);
	if (state->config.io_engine)
		fprintf(out, " --io-engine=%s", kcopyd_io_engine_name(state->config.io_engine));
	if (state->job_flags & KCOPYD_IGNORE_ERROR)
		fputs(" --ignore-errors", out);
	if (state->job_flags & KCOPYD_WRITE_SEQ)
		fputs(" --write-seq", out);
	/* As asked only: a destination kcopy made reads as zeros no more once half written. */
	if (state->job_flags & KCOPYD_DEST_ZERO)
		fputs(" --destination-is-zero", out);
	if (state->job_flags & KCOPYD_ALLOCATED)
		fputs(" --allocated", out);
	if (state->job_flags & KCOPYD_NO_OFFLOAD)
		fputs(" --no-offload", out);
	/*
	 * --verify and --rate hold for the rest as for the whole; --hash only
	 * for the whole copy again: the rest's digest is not the whole range's
	 * (print_resume_command() says so).
	 */
	if (state->verify)
		fputs(" --verify", out);
	if (state->hashes && checkpoint == 0) {
		const char *separator = " --hash=";

		for (unsigned int bit = 0; bit < KCOPYD_HASH_COUNT; bit++) {
			if (!(state->hashes & (1u << bit)))
				continue;
			fprintf(out, "%s%s", separator, kcopyd_hash_name(1u << bit));
			separator = ",";
		}
	}
	if (state->rate) {
		char rate[32];

		fprintf(out, " --rate=%s", format_rate(state->rate, rate, sizeof(rate)));
	}
	if (state->progress_forced)
		fputs(" --progress", out);
	if (state->quiet)
		fputs(" --quiet", out);
	if (state->zero)
		fputs(" --zero", out);
	/* A region that starts with '-' would be read as an option. */
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++)
		if (state->dests[dest_index].where.path[0] == '-' || (!state->zero && state->source.path[0] == '-')) {
			fputs(" --", out);
			break;
		}
	if (!state->zero)
		shell_region(out, &state->source, state->source.sector + checkpoint, &rest);
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		const struct jobspec_region *where = &state->dests[dest_index].where;

		/* With --zero every destination carries the count; a copy's take the source's. */
		shell_region(out, where, where->sector + checkpoint, state->zero ? &rest : NULL);
	}
	if (fclose(out)) {
		free(text);
		return NULL;
	}
	return text;
}

/* ---------------------------------------------------------------------
 * The bar and the descriptor
 * --------------------------------------------------------------------- */

/* terminal_columns() - the width of the terminal on stderr, 0 if it has none. */
static unsigned int terminal_columns(void)
{
	struct winsize size;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 0)
		return size.ws_col;
	return 0;
}

/* progress_init() - see kcopy.h. */
void progress_init(struct progress *progress, bool bar, int fd)
{
	memset(progress, 0, sizeof(*progress));
	progress->terminal = isatty(STDERR_FILENO);
	progress->bar = bar;
	progress->fd = fd;
	progress->columns = PROGRESS_DEFAULT_COLUMNS;
	if (progress->terminal)
		progress_resize(progress);
}

/* progress_resize() - see kcopy.h. */
void progress_resize(struct progress *progress)
{
	unsigned int columns = terminal_columns();

	if (!progress->terminal || !columns || columns == progress->columns)
		return;
	progress->columns = columns;
	if (!progress->line_len || !progress->bar)
		return;
	/*
	 * The line drawn for the old width, if it is wider than the new one:
	 * a terminal that reflows (tmux, VTE, kitty, iTerm2, Windows Terminal)
	 * has split it over the rows it now takes, the cursor on the last of
	 * them.  Go up to the first and clear to the end of the screen, so no
	 * piece of it stays above the new bar.  (A terminal that cuts the line
	 * instead, as xterm does, loses the row above the bar to this.)
	 */
	if (progress->line_len > columns)
		fprintf(stderr, "\r\033[%uA\033[J", (progress->line_len - 1) / columns);
	else
		fputs("\r\033[K", stderr);
	progress->line_len = 0;
	progress_draw(progress);
}

/* progress_interval_ms() - see kcopy.h. */
int progress_interval_ms(const struct progress *progress)
{
	return progress->bar && progress->terminal ? PROGRESS_TERMINAL_INTERVAL_MS : PROGRESS_LOG_INTERVAL_MS;
}

/* progress_elapsed() - seconds since the job was submitted. */
static double progress_elapsed(const struct progress *progress)
{
	return monotonic_seconds() - progress->start_seconds;
}

/* progress_verify_elapsed() - seconds since the verify phase was first seen, 0 before. */
static double progress_verify_elapsed(const struct progress *progress)
{
	return progress->verify_start_seconds ? monotonic_seconds() - progress->verify_start_seconds : 0;
}

/* progress_reading_of() - what @progress last recorded, as a reading for the pure texts. */
static struct progress_reading progress_reading_of(const struct progress *progress)
{
	return (struct progress_reading){ .sectors_done = progress->sectors_done,
					  .sectors_total = progress->sectors_total, .phase = progress->phase,
					  .sectors_verified = progress->sectors_verified,
					  .sectors_verify_total = progress->sectors_verify_total };
}

/* progress_draw() - see kcopy.h. */
void progress_draw(struct progress *progress)
{
	char line[512];

	if (!progress->bar)
		return;
	struct progress_reading reading = progress_reading_of(progress);

	format_progress_phase(&reading, progress_elapsed(progress), progress_verify_elapsed(progress), progress->columns,
			      line, sizeof(line));
	if (progress->terminal) {
		/* Clear to the end of the line: a shorter line leaves nothing of the last one. */
		fprintf(stderr, "\r%s\033[K", line);
		progress->line_len = (unsigned int)strlen(line);
		if (!progress->line_len)
			progress->line_len = 1;	/* still a line open: "\033[K" left the cursor on it */
	} else {
		fprintf(stderr, "%s\n", line);
	}
	fflush(stderr);
}

/*
 * progress_write_fd() - one line to --progress=FD.  A descriptor that
 * fails (its reader went away: EPIPE) is reported once and dropped; the
 * copy goes on.
 */
static void progress_write_fd(struct progress *progress, const char *state)
{
	char line[128], errbuf[ERRNO_TEXT_LEN];
	size_t len, done = 0;

	if (progress->fd < 0)
		return;
	if (strcmp(state, "running") == 0 &&
	    (progress->phase == KCOPYD_PHASE_FLUSH || progress->phase == KCOPYD_PHASE_VERIFY))
		format_progress_fd_line(progress->sectors_verified << KCOPYD_SECTOR_SHIFT,
					progress->sectors_verify_total << KCOPYD_SECTOR_SHIFT, "verifying",
					line, sizeof(line));
	else
		format_progress_fd_line(progress->sectors_done << KCOPYD_SECTOR_SHIFT,
					progress->sectors_total << KCOPYD_SECTOR_SHIFT, state, line, sizeof(line));
	len = strlen(line);
	while (done < len) {
		ssize_t written = write(progress->fd, line + done, len - done);

		if (written < 0 && errno == EINTR)
			continue;
		if (written <= 0) {
			progress_break_line(progress);
			complain("--progress=%d: %s; no more progress written to it", progress->fd,
				 errno_text(written < 0 ? errno : EIO, errbuf, sizeof(errbuf)));
			progress->fd = -1;
			return;
		}
		done += (size_t)written;
	}
}

/* progress_record() - see kcopy.h. */
void progress_record(struct progress *progress, const struct progress_reading *reading)
{
	progress->sectors_done = reading->sectors_done;
	progress->sectors_total = reading->sectors_total;
	progress->phase = reading->phase;
	progress->sectors_verified = reading->sectors_verified;
	progress->sectors_verify_total = reading->sectors_verify_total;
	if (reading->phase != KCOPYD_PHASE_FLUSH && reading->phase != KCOPYD_PHASE_VERIFY) {
		progress->copy_seen_seconds = monotonic_seconds();
	} else if (!progress->verify_start_seconds) {
		/*
		 * First seen with bytes read back already: the read-back began
		 * after the last reading of the copy, not now (taking now made
		 * its first rate absurd: 4 MiB in 0.2 ms, "23301699.8 MB/s").
		 */
		progress->verify_start_seconds = reading->sectors_verified && progress->copy_seen_seconds
						 ? progress->copy_seen_seconds : monotonic_seconds();
	}
}

/* progress_update() - see kcopy.h. */
void progress_update(struct progress *progress, const struct progress_reading *reading)
{
	progress_record(progress, reading);
	progress_draw(progress);
	progress_write_fd(progress, "running");
}

/* progress_break_line() - see kcopy.h. */
void progress_break_line(struct progress *progress)
{
	if (progress->line_len) {
		fputc('\n', stderr);
		progress->line_len = 0;
	}
}

/* progress_print_report() - see kcopy.h. */
void progress_print_report(struct progress *progress)
{
	char line[320];
	struct progress_reading reading = progress_reading_of(progress);

	format_progress_report_phase(&reading, progress_elapsed(progress), progress_verify_elapsed(progress),
				     line, sizeof(line));
	if (progress->line_len) {
		/* The report takes the bar's row; the bar is drawn again below it. */
		fputs("\r\033[K", stderr);
		progress->line_len = 0;
		complain("%s", line);
		progress_draw(progress);
	} else {
		complain("%s", line);
	}
}

/* progress_end() - see kcopy.h. */
void progress_end(struct progress *progress, const struct progress_reading *reading)
{
	progress_record(progress, reading);
	progress_draw(progress);
	progress_break_line(progress);
}

/* progress_final() - see kcopy.h. */
void progress_final(struct progress *progress, uint64_t sectors_done, const char *state)
{
	progress->sectors_done = sectors_done;
	progress->phase = KCOPYD_PHASE_DONE;
	progress_write_fd(progress, state);
}

/* ---------------------------------------------------------------------
 * Signals
 * --------------------------------------------------------------------- */

/* signal_is_ignored() - true if @signal_number is set to SIG_IGN. */
static bool signal_is_ignored(int signal_number)
{
	struct sigaction action;

	return sigaction(signal_number, NULL, &action) == 0 && action.sa_handler == SIG_IGN;
}

/* job_signals_open() - see kcopy.h. */
int job_signals_open(sigset_t *old_mask)
{
	static const int stop_signals[] = { SIGINT, SIGTERM, SIGHUP };
	char errbuf[ERRNO_TEXT_LEN];
	sigset_t job_signals;
	int signal_fd, ret;

	sigemptyset(&job_signals);
	/* A stop signal ignored by whoever started us (nohup, "cmd &" in a script) stays ignored. */
	for (size_t index = 0; index < sizeof(stop_signals) / sizeof(stop_signals[0]); index++)
		if (!signal_is_ignored(stop_signals[index]))
			sigaddset(&job_signals, stop_signals[index]);
	/*
	 * These only ask for a report or a redraw: taken always, as dd takes
	 * SIGUSR1 (with --quiet, as dd's status=none, it prints nothing).
	 */
	sigaddset(&job_signals, SIGUSR1);
	sigaddset(&job_signals, SIGWINCH);
	/*
	 * ^Z: the bar's line is cleared before the process stops, and drawn
	 * again when it goes on (SIGCONT, which continues the process whether
	 * blocked or not).  A SIGTSTP ignored by whoever started us (a shell
	 * without job control) stays ignored.
	 */
	if (!signal_is_ignored(SIGTSTP))
		sigaddset(&job_signals, SIGTSTP);
	sigaddset(&job_signals, SIGCONT);
	ret = -pthread_sigmask(SIG_BLOCK, &job_signals, old_mask);
	if (ret) {
		complain("pthread_sigmask: %s", errno_text(ret, errbuf, sizeof(errbuf)));
		return ret;
	}
	signal_fd = signalfd(-1, &job_signals, SFD_CLOEXEC | SFD_NONBLOCK);
	if (signal_fd < 0) {
		ret = -errno;
		complain("signalfd: %s", errno_text(ret, errbuf, sizeof(errbuf)));
		pthread_sigmask(SIG_SETMASK, old_mask, NULL);
		return ret;
	}
	return signal_fd;
}

/* job_signals_close() - see kcopy.h. */
void job_signals_close(int signal_fd, const sigset_t *old_mask)
{
	struct signalfd_siginfo late_signal;

	while (read(signal_fd, &late_signal, sizeof(late_signal)) == sizeof(late_signal))
		;
	close(signal_fd);
	pthread_sigmask(SIG_SETMASK, old_mask, NULL);
}

/*
 * stop_self() - SIGTSTP taken from the signalfd: clear the bar's line (the
 * shell writes "Stopped" next, and the terminal is the shell's until the
 * job is in the foreground again), then stop the process as the default
 * action does: SIGTSTP raised to this thread and unblocked here only (the
 * engine's threads keep it blocked; a stop stops them all the same).
 * Returns once continued, with SIGTSTP blocked again.
 */
static void stop_self(struct progress *progress)
{
	sigset_t tstp;

	if (progress->line_len) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		progress->line_len = 0;
	}
	sigemptyset(&tstp);
	sigaddset(&tstp, SIGTSTP);
	raise(SIGTSTP);		/* pending on this thread while blocked ... */
	pthread_sigmask(SIG_UNBLOCK, &tstp, NULL);	/* ... delivered here: the process stops */
	pthread_sigmask(SIG_BLOCK, &tstp, NULL);
}

/* handle_job_signals() - see kcopy.h. */
void handle_job_signals(int signal_fd, struct progress *progress, int *stop_signal,
			const struct job_control *control, void *context)
{
	struct progress_reading reading = progress_reading_of(progress);
	struct signalfd_siginfo info;
	int signal_number;
	sigset_t unblock;

	while (read(signal_fd, &info, sizeof(info)) == sizeof(info)) {
		signal_number = (int)info.ssi_signo;
		switch (signal_number) {
		case SIGWINCH:
			progress_resize(progress);
			continue;
		case SIGUSR1:
			if (progress->quiet)
				continue;	/* as dd's status=none */
			control->read_progress(&reading, context);
			progress_record(progress, &reading);
			progress_print_report(progress);
			continue;
		case SIGTSTP:
			/* A daemon's job does not stop with us: paused, and resumed on SIGCONT. */
			if (control->pause && !*stop_signal)
				progress->paused_job = control->pause(context) == 0;
			stop_self(progress);
			__attribute__((fallthrough));	/* continued: as after SIGCONT */
		case SIGCONT:
			if (progress->paused_job && control->resume && control->resume(context) == 0)
				progress->paused_job = false;
			/* The terminal may have been the shell's meanwhile: the bar on a line of its own. */
			if (progress->bar && progress->terminal && !progress->line_len)
				progress_draw(progress);
			continue;
		}
		progress_break_line(progress);
		if (!*stop_signal) {
			*stop_signal = signal_number;
			if (control->cancel(context) == 0)
				complain("SIG%s: cancelling after the I/O in flight (send it again to abort)",
					 sigabbrev_np(signal_number) ? sigabbrev_np(signal_number) : "?");
			continue;
		}
		complain("second signal: aborting without flushing the destinations");
		signal(signal_number, SIG_DFL);
		sigemptyset(&unblock);
		sigaddset(&unblock, signal_number);
		pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
		raise(signal_number);
		_exit(128 + signal_number);	/* not reached */
	}
}
