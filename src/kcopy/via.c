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

#include "proto/jobspec.h"
#include "proto/status.h"
#include "via.h"

#define STATUS_MAX		8192	/* a status is 13 short lines and an error line cut at 1023 bytes */
#define VIA_CHECK_INTERVAL_MS	1000	/* read the status at least this often, also without a bar */

/* One job in the daemon, while kcopy follows it. */
struct via_job {
	const char *mount;
	int clone_fd;			/* open on MOUNT/clone-autoremove: the job's ctl and wait */
	unsigned long long id;		/* its number: MOUNT/jobs/ID */
	int status_fd;			/* open on MOUNT/jobs/ID/status while it is followed; -1 if not */
	char *source_path;		/* the absolute paths (or URIs) given to the daemon, malloc'd */
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
 * parse_final_status() - fill @outcome from the final status text, read
 * with the parser of src/proto/status.c (the daemon renders it with the
 * same library).  @status is changed (proto_status_parse()).
 * Return: 0, or -EPROTO for a text that is no final status (reported).
 */
static int parse_final_status(const struct via_job *job, unsigned int num_dests, char *status,
			      struct run_outcome *outcome)
{
	struct kcopyd_result *result = &outcome->result;
	struct proto_status parsed;
	const char *unparsed = NULL;
	char *copy = strdup(status);	/* for the message: the parser cuts @status into lines */

	memset(result, 0, sizeof(*result));
	if (proto_status_parse(status, &parsed)) {
		complain("%s: job %llu: a status without its state, progress or error lines: %s", job->mount, job->id,
			 copy ? copy : "");
		free(copy);
		return -EPROTO;
	}
	free(copy);
	result->sectors_done = parsed.sectors_done;
	result->sectors_total = parsed.sectors_total;
	result->read_err = parsed.read_err;
	result->write_err = parsed.write_err;
	outcome->counts_known = parsed.has_counts;
	if (parsed.has_counts) {
		result->counts.sectors_data = parsed.sectors_data;
		result->counts.sectors_zero = parsed.sectors_zero;
		result->counts.sectors_offloaded = parsed.sectors_offloaded;
	}
	result->counts.sectors_done = parsed.sectors_done;
	result->counts.sectors_total = parsed.sectors_total;
	outcome->checkpoint_known = parsed.has_checkpoint;
	outcome->checkpoint = parsed.checkpoint;
	if (parsed.hash_state == PROTO_HASH_DONE) {
		result->hashes = parsed.hashes;
		memcpy(result->digests, parsed.digests, sizeof(parsed.digests));
	}
	result->verified = parsed.verify == PROTO_VERIFY_OK ? 1 : parsed.verify == PROTO_VERIFY_MISMATCH ? -1 : 0;

	if (strcmp(parsed.state, "done") == 0)
		return 0;
	if (strcmp(parsed.state, "cancelled") == 0) {
		result->cancelled = 1;
		return 0;
	}
	if (strcmp(parsed.state, "failed") != 0) {
		complain("%s: job %llu ended in state '%s'", job->mount, job->id, parsed.state);
		outcome->failed_otherwise = true;
		return 0;
	}
	/* The names are ours, as the description gave them: each entry is matched exactly. */
	if (!proto_failure_parse(parsed.error, job->source_path, (const char *const *)job->dest_paths, num_dests,
				 result, &unparsed)) {
		complain("%s", unparsed);
		outcome->failed_otherwise = true;
	} else if (!result->read_err && !result->write_err) {
		outcome->failed_otherwise = true;
	} else if (unparsed) {
		complain("%s", unparsed);	/* what the NBD servers said of the failures */
	}
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
 * description_region() - fill @region for the description: a URI as it
 * was given (the daemon connects to it), a path made absolute, every
 * region with its count so that the daemon settles nothing differently.
 * Return: 0; -EINVAL for a name with a control character, which no job
 * description can hold; -ENOMEM.  Reported.
 */
static int description_region(const struct jobspec_region *where, uint64_t count, struct jobspec_region *region,
			      char **kept)
{
	for (const unsigned char *byte = (const unsigned char *)where->path; *byte; byte++) {
		if ((*byte < 0x20 && *byte != '\t') || *byte == 0x7f) {
			complain("%s: a control character in the name: a kcopydfs job description cannot hold it",
				 where->path);
			return -EINVAL;
		}
	}
	*kept = where->is_uri ? strdup(where->path) : absolute_path(where->path);
	if (!*kept) {
		if (where->is_uri)
			complain("out of memory");
		return -ENOMEM;
	}
	region->path = *kept;
	region->is_uri = where->is_uri;
	region->sector = where->sector;
	region->count = count;
	region->has_count = true;
	return 0;
}

/*
 * build_description() - the job description of @state, one line with its
 * newline, rendered by the description renderer kcopydfs uses itself
 * (jobspec_render()): every region REGION:SECTOR+COUNT.  The flags are
 * those asked for on the command line: kcopy's own knowledge that the
 * destinations it made read as zeros is not passed on (zeroing a hole
 * frees nothing).
 * Return: 0; -EINVAL (a name it cannot hold), -E2BIG (longer than the
 * daemon takes), -ENOMEM; all reported.
 */
static int build_description(const struct kcopy *state, struct via_job *job, char *buf, size_t len)
{
	struct jobspec spec = { .op = state->zero ? JOBSPEC_ZERO : JOBSPEC_COPY, .num_dests = state->num_dests,
				.flags = (state->job_flags & JOBSPEC_FLAGS) | (state->verify ? KCOPYD_VERIFY : 0),
				.hashes = state->hashes, .rate = state->rate };
	int ret;

	if (!state->zero) {
		ret = description_region(&state->source, state->count, &spec.from, &job->source_path);
		if (ret)
			return ret;
	}
	for (unsigned int dest_index = 0; dest_index < state->num_dests; dest_index++) {
		ret = description_region(&state->dests[dest_index].where, state->count, &spec.dests[dest_index],
					 &job->dest_paths[dest_index]);
		if (ret)
			return ret;
	}
	/* A canonical description with every count is taken up to JOBSPEC_MAX_CANONICAL_LINE bytes. */
	ret = jobspec_render(&spec, buf, len);
	if (ret < 0 || (size_t)ret - 1 > JOBSPEC_MAX_CANONICAL_LINE) {
		complain("the job description is longer than the %u bytes kcopydfs takes (long paths?)",
			 JOBSPEC_MAX_CANONICAL_LINE);
		return -E2BIG;
	}
	return 0;
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
 * read_status_progress() - the "progress: DONE/TOTAL" of a status text,
 * and the verify phase from its "verify: running DONE/TOTAL" line.
 * Return: true if the progress line is there.
 */
static bool read_status_progress(const char *status, struct progress_reading *reading)
{
	unsigned long long done, total;
	char field[128];

	if (!proto_status_field(status, "progress", field, sizeof(field)) ||
	    sscanf(field, "%llu/%llu", &done, &total) != 2)
		return false;
	reading->sectors_done = done;
	reading->sectors_total = total;
	reading->phase = KCOPYD_PHASE_COPY;
	if (proto_status_field(status, "verify", field, sizeof(field)) &&
	    sscanf(field, "running %llu/%llu", &done, &total) == 2) {
		reading->phase = KCOPYD_PHASE_VERIFY;
		reading->sectors_verified = done;
		reading->sectors_verify_total = total;
	}
	return true;
}

/*
 * read_via_progress() - the job_control's progress: the job's status, read
 * now; on a failure to read it the last progress is left as it was.
 */
static void read_via_progress(struct progress_reading *reading, void *context)
{
	const struct via_job *job = context;
	char status[STATUS_MAX];

	if (job->status_fd >= 0 && read_file_at(job->status_fd, NULL, status, sizeof(status)) >= 0)
		read_status_progress(status, reading);
}

/*
 * ctl_word() - write @word to the job's ctl (its clone descriptor).
 * Return: 0, or -errno (reported, with the daemon's reason if it gave one).
 */
static int ctl_word(const struct via_job *job, const char *word)
{
	char errbuf[ERRNO_TEXT_LEN];
	size_t len = strlen(word);
	int ret;

	if (write(job->clone_fd, word, len) == (ssize_t)len)
		return 0;
	ret = -errno;
	complain("%s: job %llu: cannot %.*s it: %s", job->mount, job->id, (int)len - 1, word,
		 errno_text(ret, errbuf, sizeof(errbuf)));
	return ret;
}

/*
 * pause_via_job() - the job_control's pause (SIGTSTP): the daemon's job
 * would go on while kcopy is stopped; "pause" holds it (a daemon before
 * pause refuses the word, reported: the job then goes on).
 */
static int pause_via_job(void *context)
{
	return ctl_word(context, "pause\n");
}

/* resume_via_job() - the job_control's resume (SIGCONT after pause_via_job()). */
static int resume_via_job(void *context)
{
	return ctl_word(context, "resume\n");
}

static const struct job_control via_job_control = {
	.cancel = cancel_via_job,
	.read_progress = read_via_progress,
	.pause = pause_via_job,
	.resume = resume_via_job,
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
	    !proto_status_field(status, "rejected", reason, sizeof(reason)) || strcmp(reason, "none") == 0) {
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
		struct progress_reading reading = { 0 };
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
		read_status_progress(status, &reading);
		ended = proto_status_field(status, "state", field, sizeof(field)) && proto_is_final_state(field);
		if (ended)
			break;
		progress_update(progress, &reading);
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
	char path[PATH_MAX], description[JOBSPEC_MAX_CANONICAL], status[STATUS_MAX], errbuf[ERRNO_TEXT_LEN];
	struct via_job job = { .mount = state->via, .clone_fd = -1, .status_fd = -1 };
	struct progress_reading reading = { 0 };
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
	read_status_progress(status, &reading);
	progress_end(&state->progress, &reading);
	ret = parse_final_status(&job, state->num_dests, status, outcome);
	if (!ret) {
		if (outcome->failed_otherwise || !outcome->checkpoint_known ||
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
