/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * via.c: kcopy --via MOUNT.  The job runs in a kcopydfs daemon; this file
 * speaks the control-file protocol of kcopydfs(5) with open, read, write,
 * pread and poll, and turns the final status back into a struct
 * kcopyd_result so that kcopy.c reports it as it reports its own jobs.
 *
 * One job is one descriptor of MOUNT/clone-autoremove:
 *
 *   open -> read the job's number -> write the description (one line,
 *   ending in its newline, in one write(2))
 *   -> poll until readable (the job has ended) -> pread at 0: the final
 *   status -> close (the daemon removes the job)
 *
 * meanwhile MOUNT/jobs/N/status is read now and then for the progress bar
 * (and on SIGUSR1), and "cancel" is written to the same descriptor on
 * SIGINT, SIGTERM or SIGHUP.  If
 * kcopy dies, the descriptor closes and the job goes away once it ends:
 * nothing is left on the mount either way.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "via.h"

#define STATUS_MAX		8192	/* a status is 13 short lines and an error line cut at 1023 bytes */
#define DESCRIPTION_MAX		4096	/* the daemon's limit, without the newline */
#define VIA_CHECK_INTERVAL_MS	1000	/* read the status at least this often, also without a bar */

/* One job in the daemon, while kcopy follows it. */
struct via_job {
	const char *mount;
	int clone_fd;			/* open on MOUNT/clone-autoremove: the job's ctl and wait */
	unsigned long long id;		/* its number: MOUNT/jobs/ID */
	int status_fd;			/* open on MOUNT/jobs/ID/status while it is followed; -1 if not */
	char *source_path;		/* the absolute paths given to the daemon, malloc'd */
	char *dest_paths[KCOPYD_MAX_REGIONS];
};

/*
 * read_file_at() - read @path, or @fd if @path is NULL, from offset 0 to
 * its end or @len - 1 bytes, NUL-terminated.
 * Return: the length read, or -errno.
 */
static ssize_t read_file_at(int fd, const char *path, char *buf, size_t len)
{
	size_t used = 0;
	int own_fd = -1, ret;

	if (path) {
		own_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (own_fd < 0)
			return -errno;
		fd = own_fd;
	}
	while (used < len - 1) {
		ssize_t got = pread(fd, buf + used, len - 1 - used, (off_t)used);

		if (got < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto err_close;
		}
		if (got == 0)
			break;
		used += (size_t)got;
	}
	buf[used] = '\0';
	if (own_fd >= 0)
		close(own_fd);
	return (ssize_t)used;

err_close:
	if (own_fd >= 0)
		close(own_fd);
	return ret;
}

/*
 * status_field() - the value of the "KEY: value" line of a status text.
 * @value: receives the value, NUL-terminated, cut to @len - 1 bytes.
 * Return: true if the line is there.
 */
static bool status_field(const char *status, const char *key, char *value, size_t len)
{
	size_t key_len = strlen(key);

	for (const char *line = status; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, key, key_len) == 0 && line[key_len] == ':' && line[key_len + 1] == ' ') {
			const char *start = line + key_len + 2;
			size_t value_len = strcspn(start, "\n");

			if (value_len >= len)
				value_len = len - 1;
			memcpy(value, start, value_len);
			value[value_len] = '\0';
			return true;
		}
	}
	return false;
}

/* errno_by_name() - the errno called @name ("EIO"), or 0 if none is. */
static int errno_by_name(const char *name, size_t name_len)
{
	for (int error = 1; error < 4096; error++) {
		const char *known = strerrorname_np(error);

		if (known && strlen(known) == name_len && strncmp(known, name, name_len) == 0)
			return error;
	}
	return 0;
}

/*
 * parse_failure() - read "SECTOR+COUNT: ENAME (message)" at @text.
 * @failure: receives the range and the negative errno.
 * Return: the text after the closing parenthesis, or NULL if @text has
 * another form.
 */
static const char *parse_failure(const char *text, struct kcopyd_failure *failure)
{
	unsigned long long sector, count;
	const char *name, *close_paren;
	int consumed = 0;
	size_t name_len;

	if (sscanf(text, "%llu+%llu: %n", &sector, &count, &consumed) != 2 || !consumed)
		return NULL;
	name = text + consumed;
	name_len = strcspn(name, " ");
	if (name[name_len] != ' ' || name[name_len + 1] != '(')
		return NULL;
	close_paren = strchr(name + name_len, ')');
	failure->error = -errno_by_name(name, name_len);
	if (!close_paren || !failure->error)
		return NULL;
	failure->sector = sector;
	failure->count = count;
	return close_paren + 1;
}

/*
 * parse_error_line() - split the status's error line ("read error on PATH
 * sectors S+C: ENAME (message); write error on PATH (to #N) sectors ...")
 * into @result's read and write failures.  The paths are ours, so each
 * entry is matched exactly, whatever its path holds.  What does not parse
 * (a flush failure, a line the daemon cut) is printed as the daemon wrote
 * it.
 * Return: true if everything parsed.
 */
static bool parse_error_line(const struct via_job *job, unsigned int num_dests, const char *text,
			     struct kcopyd_result *result)
{
	const char *at = text;
	char prefix[PATH_MAX + 64];

	while (*at) {
		const char *rest = NULL;

		if (job->source_path) {
			snprintf(prefix, sizeof(prefix), "read error on %s sectors ", job->source_path);
			if (strncmp(at, prefix, strlen(prefix)) == 0)
				rest = parse_failure(at + strlen(prefix), &result->read);
		}
		for (unsigned int dest_index = 0; !rest && dest_index < num_dests; dest_index++) {
			snprintf(prefix, sizeof(prefix), "write error on %s (to #%u) sectors ",
				 job->dest_paths[dest_index], dest_index);
			if (strncmp(at, prefix, strlen(prefix)) == 0)
				rest = parse_failure(at + strlen(prefix), &result->write[dest_index]);
		}
		if (!rest || (*rest && strncmp(rest, "; ", 2) != 0)) {
			complain("%s", at);
			return false;
		}
		at = *rest ? rest + 2 : rest;
	}
	return true;
}

/*
 * read_status_counts() - the "sectors_data:", "sectors_zero:" and
 * "sectors_offloaded:" lines of a status text, into @counts.
 * Return: true if all three are there (a daemon before sparse copies has
 * none: then the summary says nothing of them).
 */
static bool read_status_counts(const char *status, struct kcopyd_counts *counts)
{
	char data[32], zero[32], offloaded[32];
	char *data_end, *zero_end, *offloaded_end;

	if (!status_field(status, "sectors_data", data, sizeof(data)) ||
	    !status_field(status, "sectors_zero", zero, sizeof(zero)) ||
	    !status_field(status, "sectors_offloaded", offloaded, sizeof(offloaded)))
		return false;
	counts->sectors_data = strtoull(data, &data_end, 10);
	counts->sectors_zero = strtoull(zero, &zero_end, 10);
	counts->sectors_offloaded = strtoull(offloaded, &offloaded_end, 10);
	return data_end != data && !*data_end && zero_end != zero && !*zero_end &&
	       offloaded_end != offloaded && !*offloaded_end;
}

/*
 * parse_final_status() - fill @outcome from the final status text.
 * Return: 0, or -EPROTO for a text that is no final status (reported).
 */
static int parse_final_status(const struct via_job *job, unsigned int num_dests, const char *status,
			      struct run_outcome *outcome)
{
	struct kcopyd_result *result = &outcome->result;
	char state[32], progress[64], read_err[16], write_err[16], error[1100];
	unsigned long long done, total;

	memset(result, 0, sizeof(*result));
	if (!status_field(status, "state", state, sizeof(state)) ||
	    !status_field(status, "progress", progress, sizeof(progress)) ||
	    !status_field(status, "read_err", read_err, sizeof(read_err)) ||
	    !status_field(status, "write_err", write_err, sizeof(write_err)) ||
	    !status_field(status, "error", error, sizeof(error)) ||
	    sscanf(progress, "%llu/%llu", &done, &total) != 2) {
		complain("%s: job %llu: a status without its state, progress or error lines: %s",
			 job->mount, job->id, status);
		return -EPROTO;
	}
	result->sectors_done = done;
	result->sectors_total = total;
	result->read_err = atoi(read_err);
	result->write_err = (unsigned int)strtoul(write_err, NULL, 16);
	outcome->counts_known = read_status_counts(status, &result->counts);
	result->counts.sectors_done = done;
	result->counts.sectors_total = total;

	if (strcmp(state, "done") == 0)
		return 0;
	if (strcmp(state, "cancelled") == 0) {
		result->cancelled = 1;
		return 0;
	}
	if (strcmp(state, "failed") != 0) {
		complain("%s: job %llu ended in state '%s'", job->mount, job->id, state);
		outcome->failed_otherwise = true;
		return 0;
	}
	if (!parse_error_line(job, num_dests, error, result) || (!result->read_err && !result->write_err))
		outcome->failed_otherwise = true;
	return 0;
}

/*
 * append_region() - append " KEY=PATH:SECTOR+COUNT" to @buf, the path
 * quoted if it holds a blank, a quote, a backslash or a byte above 0x7f.
 * Return: 0; -EINVAL for a path with a control character, which no job
 * description can hold (reported); -E2BIG when @buf is full.
 */
static int append_region(char *buf, size_t len, size_t *used, const char *key, const char *path,
			 uint64_t sector, uint64_t count)
{
	bool quote = false;
	size_t at = *used;
	int written;

	for (const unsigned char *byte = (const unsigned char *)path; *byte; byte++) {
		if ((*byte < 0x20 && *byte != '\t') || *byte == 0x7f) {
			complain("%s: a control character in the name: a kcopydfs job description cannot hold it", path);
			return -EINVAL;
		}
		if (*byte == ' ' || *byte == '\t' || *byte == '"' || *byte == '\\' || *byte > 0x7f)
			quote = true;
	}
	written = snprintf(buf + at, len - at, " %s=%s", key, quote ? "\"" : "");
	if (written < 0 || (size_t)written >= len - at)
		return -E2BIG;
	at += (size_t)written;
	for (const char *byte = path; *byte; byte++) {
		if (at + 2 >= len)
			return -E2BIG;
		if (quote && (*byte == '"' || *byte == '\\'))
			buf[at++] = '\\';
		buf[at++] = *byte;
	}
	written = snprintf(buf + at, len - at, "%s:%" PRIu64 "+%" PRIu64, quote ? "\"" : "", sector, count);
	if (written < 0 || (size_t)written >= len - at)
		return -E2BIG;
	*used = at + (size_t)written;
	return 0;
}

/*
 * absolute_path() - @path made absolute against the working directory
 * (the daemon's grammar wants absolute paths; its working directory is
 * not ours).  Symbolic links are left for the daemon to follow.
 * Return: a malloc'd path, or NULL (reported).
 */
static char *absolute_path(const char *path)
{
	char cwd[PATH_MAX], errbuf[ERRNO_TEXT_LEN];
	char *absolute;

	if (path[0] == '/')
		absolute = strdup(path);
	else if (!getcwd(cwd, sizeof(cwd))) {
		complain("%s: cannot make it absolute: getcwd: %s", path, errno_text(errno, errbuf, sizeof(errbuf)));
		return NULL;
	} else if (asprintf(&absolute, "%s%s%s", cwd, strcmp(cwd, "/") ? "/" : "", path) < 0)
		absolute = NULL;
	if (!absolute)
		complain("out of memory");
	return absolute;
}

/*
 * The job flags as a description spells them (kcopydfs(5)), in this order.
 * Only the flags asked for on the command line: kcopy's own knowledge that
 * the destinations it made read as zeros is not passed on (a daemon that
 * predates dest_zero refuses the word, and zeroing a hole frees nothing).
 */
static const struct {
	unsigned int flag;
	const char *name;
} flag_names[] = {
	{ KCOPYD_IGNORE_ERROR, "ignore_error" },
	{ KCOPYD_WRITE_SEQ, "write_seq" },
	{ KCOPYD_DEST_ZERO, "dest_zero" },
	{ KCOPYD_ALLOCATED, "allocated" },
	{ KCOPYD_NO_OFFLOAD, "no_offload" },
};

/*
 * build_description() - the job description of @state, one line with its
 * newline, every region spelled PATH:SECTOR+COUNT so that the daemon
 * settles nothing differently from kcopy.
 * Return: 0; -EINVAL (a path it cannot hold), -E2BIG (longer than the
 * daemon takes), -ENOMEM; all reported.
 */
static int build_description(const struct kcopy *state, struct via_job *job, char *buf, size_t len)
{
	size_t used;
	int ret;

	used = (size_t)snprintf(buf, len, "%s", state->zero ? "zero" : "copy");
	if (!state->zero) {
		job->source_path = absolute_path(state->source.path);
		if (!job->source_path)
			return -ENOMEM;
		ret = append_region(buf, len, &used, "from", job->source_path, state->source.sector, state->count);
		if (ret)
			goto err_report;
	}
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		const struct region_arg *where = &state->dests[dest_index].where;

		job->dest_paths[dest_index] = absolute_path(where->path);
		if (!job->dest_paths[dest_index])
			return -ENOMEM;
		ret = append_region(buf, len, &used, "to", job->dest_paths[dest_index], where->sector, state->count);
		if (ret)
			goto err_report;
	}
	for (unsigned int flag_index = 0, named = 0; flag_index < sizeof(flag_names) / sizeof(flag_names[0]);
	     flag_index++) {
		if (!(state->job_flags & flag_names[flag_index].flag))
			continue;
		ret = snprintf(buf + used, len - used, "%s%s", named++ ? "," : " flags=", flag_names[flag_index].name);
		if (ret < 0 || (size_t)ret >= len - used) {
			ret = -E2BIG;
			goto err_report;
		}
		used += (size_t)ret;
	}
	if (used + 2 > len || used > DESCRIPTION_MAX) {
		ret = -E2BIG;
		goto err_report;
	}
	buf[used++] = '\n';
	buf[used] = '\0';
	return 0;

err_report:
	if (ret == -E2BIG)
		complain("the job description is longer than the %u bytes kcopydfs takes (long paths?)",
			 DESCRIPTION_MAX);
	return ret;
}

int via_check_mount(const char *mount)
{
	char path[PATH_MAX], version[64], errbuf[ERRNO_TEXT_LEN];
	ssize_t len;

	if ((size_t)snprintf(path, sizeof(path), "%s/version", mount) >= sizeof(path)) {
		complain("--via %s: the name is too long", mount);
		return -EINVAL;
	}
	len = read_file_at(-1, path, version, sizeof(version));
	if (len == -ENOENT || len == -ENOTDIR) {
		complain("--via %s: not a kcopydfs mount (%s: %s)", mount, path,
			 errno_text((int)len, errbuf, sizeof(errbuf)));
		return -EINVAL;
	}
	if (len >= 0 && strncmp(version, "kcopydfs ", 9) != 0) {
		complain("--via %s: not a kcopydfs mount (%s does not say kcopydfs)", mount, path);
		return -EINVAL;
	}
	if (len < 0) {
		complain("--via %s: %s: %s%s", mount, path, errno_text((int)len, errbuf, sizeof(errbuf)),
			 len == -ENOTCONN ? " (the daemon is gone; unmount it with fusermount3 -u)" : "");
		return (int)len;
	}
	return 0;
}

/* cancel_via_job() - the job_control's cancel: "cancel" to the job's ctl. */
static int cancel_via_job(void *context)
{
	const struct via_job *job = context;
	char errbuf[ERRNO_TEXT_LEN];
	int ret;

	if (write(job->clone_fd, "cancel\n", 7) == 7)
		return 0;
	ret = -errno;
	complain("%s: job %llu: cannot cancel: %s", job->mount, job->id, errno_text(ret, errbuf, sizeof(errbuf)));
	return ret;
}

/*
 * read_status_progress() - the "progress: DONE/TOTAL" of a status text.
 * Return: true if it is there.
 */
static bool read_status_progress(const char *status, uint64_t *sectors_done, uint64_t *sectors_total)
{
	unsigned long long done, total;
	char field[64];

	if (!status_field(status, "progress", field, sizeof(field)) || sscanf(field, "%llu/%llu", &done, &total) != 2)
		return false;
	*sectors_done = done;
	*sectors_total = total;
	return true;
}

/*
 * read_via_progress() - the job_control's progress: the job's status, read
 * now; on a failure to read it the last progress is left as it was.
 */
static void read_via_progress(uint64_t *sectors_done, uint64_t *sectors_total, void *context)
{
	const struct via_job *job = context;
	char status[STATUS_MAX];

	if (job->status_fd >= 0 && read_file_at(job->status_fd, NULL, status, sizeof(status)) >= 0)
		read_status_progress(status, sectors_done, sectors_total);
}

static const struct job_control via_job_control = {
	.cancel = cancel_via_job,
	.read_progress = read_via_progress,
};

/*
 * report_refusal() - print why the daemon refused the description: the
 * rejected line of the job's status, or the errno if that cannot be read.
 */
static void report_refusal(const struct kcopy *state, const struct via_job *job, int error)
{
	char path[PATH_MAX], status[STATUS_MAX], reason[1100], errbuf[ERRNO_TEXT_LEN];
	unsigned int dest_index;

	snprintf(path, sizeof(path), "%s/jobs/%llu/status", job->mount, job->id);
	if (read_file_at(-1, path, status, sizeof(status)) < 0 ||
	    !status_field(status, "rejected", reason, sizeof(reason)) || strcmp(reason, "none") == 0) {
		complain("refused by kcopydfs: %s", errno_text(error, errbuf, sizeof(errbuf)));
		return;
	}
	complain("refused by kcopydfs: %s", reason);
	/* The engine's checks name regions by number: say which argument that is. */
	if (sscanf(reason, "destination %u ", &dest_index) == 1 && dest_index < state->num_dests)
		complain("destination %u is %s", dest_index, state->dests[dest_index].where.path);
}

/*
 * follow_job() - wait until the job has ended: poll its descriptor (readable
 * once it has ended) and the signals, and read its status for the progress
 * bar and --progress=FD, and at least once a second anyway, so that a
 * daemon that went away is noticed even if no poll wakes us.
 * Return: 0 once the job has ended; the -errno of reading its status
 * (reported).
 */
static int follow_job(struct kcopy *state, struct via_job *job, int signal_fd, int *stop_signal)
{
	struct progress *progress = &state->progress;
	int interval_ms = progress->bar || progress->fd >= 0 ? progress_interval_ms(progress) : VIA_CHECK_INTERVAL_MS;
	struct pollfd waits[2] = {
		{ .fd = signal_fd, .events = POLLIN },
		{ .fd = job->clone_fd, .events = POLLIN },
	};
	char path[PATH_MAX], status[STATUS_MAX], field[64], errbuf[ERRNO_TEXT_LEN];
	double next_check = monotonic_seconds() + interval_ms / 1000.0;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/jobs/%llu/status", job->mount, job->id);
	job->status_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (job->status_fd < 0) {
		ret = -errno;
		complain("%s: %s", path, errno_text(ret, errbuf, sizeof(errbuf)));
		return ret;
	}
	for (;;) {
		double wait_seconds = next_check - monotonic_seconds();
		int ready = poll(waits, 2, wait_seconds > 0 ? (int)(wait_seconds * 1000.0) + 1 : 0);
		uint64_t done = 0, total = 0;
		bool ended;
		ssize_t len;

		if (ready < 0 && errno != EINTR) {
			ret = -errno;
			complain("poll: %s", errno_text(ret, errbuf, sizeof(errbuf)));
			break;
		}
		if (ready > 0 && waits[1].revents)
			break;	/* POLLIN: ended; POLLERR: removed (the final read says how) */
		if (ready > 0 && (waits[0].revents & POLLIN))
			handle_job_signals(signal_fd, progress, stop_signal, &via_job_control, job);
		if (monotonic_seconds() < next_check)
			continue;

		len = read_file_at(job->status_fd, NULL, status, sizeof(status));
		if (len < 0) {
			ret = (int)len;
			progress_break_line(progress);
			complain("%s: %s", path, errno_text(ret, errbuf, sizeof(errbuf)));
			break;
		}
		read_status_progress(status, &done, &total);
		ended = status_field(status, "state", field, sizeof(field)) &&
			(!strcmp(field, "done") || !strcmp(field, "failed") || !strcmp(field, "cancelled"));
		if (ended)
			break;
		progress_update(progress, done, total);
		next_check += interval_ms / 1000.0;
		if (next_check < monotonic_seconds())
			next_check = monotonic_seconds() + interval_ms / 1000.0;
	}
	close(job->status_fd);
	job->status_fd = -1;
	if (ret)
		progress_break_line(progress);
	return ret;
}

/*
 * status_checkpoint() - the "checkpoint:" line of a final status: the
 * engine's own, in sectors from the start of the copy.
 * Return: true if it is there (a daemon before sparse copies has none).
 */
static bool status_checkpoint(const char *status, uint64_t *checkpoint)
{
	char value[32], *end;

	if (!status_field(status, "checkpoint", value, sizeof(value)))
		return false;
	*checkpoint = strtoull(value, &end, 10);
	return end != value && !*end;
}

/*
 * via_checkpoint() - where the job is known done without a gap, for a
 * daemon whose status has no checkpoint line, from its final status.  The engine
 * runs sub-jobs in ascending order and a cancel lets those in flight
 * finish: a job cancelled without errors is done up to its progress.  A
 * failed one is done below its lowest failing range (every sub-job below
 * it was written: the engine drops only those above a failure).  Anything
 * else: 0, the whole copy again.
 */
static uint64_t via_checkpoint(const struct kcopy *state, const struct run_outcome *outcome)
{
	const struct kcopyd_result *result = &outcome->result;
	uint64_t checkpoint = result->sectors_total;

	if (outcome->failed_otherwise)
		return 0;
	if (!result->read_err && !result->write_err)
		return result->cancelled ? result->sectors_done : 0;
	if (result->read_err) {
		if (!result->read.error || result->read.sector < state->source.sector)
			return 0;
		if (result->read.sector - state->source.sector < checkpoint)
			checkpoint = result->read.sector - state->source.sector;
	}
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		const struct kcopyd_failure *failure = &result->write[dest_index];
		uint64_t dest_sector = state->dests[dest_index].where.sector;

		if (!(result->write_err & (1u << dest_index)))
			continue;
		if (!failure->error || failure->sector < dest_sector)
			return 0;
		if (failure->sector - dest_sector < checkpoint)
			checkpoint = failure->sector - dest_sector;
	}
	return checkpoint;
}

int via_run_job(struct kcopy *state, struct run_outcome *outcome)
{
	char path[PATH_MAX], description[DESCRIPTION_MAX + 64], status[STATUS_MAX], errbuf[ERRNO_TEXT_LEN];
	struct via_job job = { .mount = state->via, .clone_fd = -1, .status_fd = -1 };
	uint64_t done = 0, total = 0;
	sigset_t old_mask;
	int signal_fd, ret;
	ssize_t len;

	ret = build_description(state, &job, description, sizeof(description));
	if (ret)
		goto out_free_paths;

	snprintf(path, sizeof(path), "%s/clone-autoremove", state->via);
	job.clone_fd = open(path, O_RDWR | O_CLOEXEC);
	if (job.clone_fd < 0) {
		ret = -errno;
		complain("%s: %s", path, errno_text(ret, errbuf, sizeof(errbuf)));
		goto out_free_paths;
	}
	len = read(job.clone_fd, status, 32);
	if (len > 0)
		status[len] = '\0';
	if (len <= 0 || sscanf(status, "%llu", &job.id) != 1) {
		ret = len < 0 ? -errno : -EPROTO;
		complain("%s: no job number: %s", path, errno_text(ret, errbuf, sizeof(errbuf)));
		goto out_close_clone;
	}

	/* Before the job starts, so that a signal right after cancels it. */
	signal_fd = job_signals_open(&old_mask);
	if (signal_fd < 0) {
		ret = signal_fd;
		goto out_close_clone;
	}
	state->progress.start_seconds = monotonic_seconds();
	len = write(job.clone_fd, description, strlen(description));
	if (len != (ssize_t)strlen(description)) {
		ret = len < 0 ? -errno : -EIO;
		report_refusal(state, &job, ret);
		goto out_close_signals;
	}
	state->job_started = true;

	ret = follow_job(state, &job, signal_fd, &outcome->stop_signal);
	if (ret)
		goto out_close_signals;
	/* Once the description is accepted, a read of the descriptor at 0 waits for the final status. */
	len = read_file_at(job.clone_fd, NULL, status, sizeof(status));
	if (len < 0) {
		ret = (int)len;
		complain("%s/jobs/%llu: cannot read the final status: %s", state->via, job.id,
			 errno_text(ret, errbuf, sizeof(errbuf)));
		goto out_close_signals;
	}
	read_status_progress(status, &done, &total);
	progress_end(&state->progress, done, total);
	ret = parse_final_status(&job, state->num_dests, status, outcome);
	if (!ret) {
		if (outcome->failed_otherwise || !status_checkpoint(status, &outcome->checkpoint) ||
		    outcome->checkpoint > outcome->result.sectors_total)
			outcome->checkpoint = via_checkpoint(state, outcome);
	}

out_close_signals:
	job_signals_close(signal_fd, &old_mask);
out_close_clone:
	close(job.clone_fd);	/* removes the job: at once if it has ended or never started */
out_free_paths:
	free(job.source_path);
	for (unsigned int dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		free(job.dest_paths[dest_index]);
	return ret;
}
