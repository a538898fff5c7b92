/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A job's ctl and its life on the engine: a description or "resume" that
 * starts it, "cancel", a refused write kept as its "rejected" line; the
 * engine's callbacks when it starts running and when it ends (and what a
 * shutdown's stopped job logs).  The locking rules are on struct
 * kfs_service (service-internal.h) and in doc/DESIGN.md; the callbacks
 * find a job queued with its run because kfs_job_ctl() submits it under
 * svc->lock.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kcopydfs/log.h"
#include "kcopydfs/service-internal.h"
#include "proto/status.h"

/*
 * A shutdown logs what became of each job it stopped (see log_fate), up to
 * this many; the rest are counted in one line at the end, so that a full
 * table does not flood syslog.
 */
#define SHUTDOWN_FATES_LOGGED 256u

/* Under svc->lock: make an idle, interrupted, queued or running job end as cancelled. */
void job_cancel_locked(struct kfs_service *svc, struct kfs_job *job)
{
	if ((job->state == KFS_IDLE || job->state == KFS_INTERRUPTED) && !job->starting) {
		job->state = KFS_CANCELLED;
		svc->jobs_cancelled++;
		job->ended_ns = clock_ns(CLOCK_MONOTONIC);
		job->queued_ns = job->ended_ns;
		job->generation++;
	} else if (job->run && job->run->handle && (job->state == KFS_QUEUED || job->state == KFS_RUNNING)) {
		/* -EALREADY just means it is ending anyway. */
		(void)kcopyd_job_cancel(job->run->handle);
	}
}

/* Under svc->lock: @job takes a place among the jobs queued, running or starting. */
static void active_take_locked(struct kfs_service *svc, const struct kfs_job *job)
{
	svc->jobs_active++;
	if (job->uid != 0)
		svc->jobs_active_others++;
}

/* Under svc->lock: @job gives its place back (it ended, or did not start). */
static void active_give_locked(struct kfs_service *svc, const struct kfs_job *job)
{
	svc->jobs_active--;
	if (job->uid != 0)
		svc->jobs_active_others--;
}

void on_start(void *context)
{
	struct kfs_run *run = context;
	struct kfs_service *svc = run->svc;
	struct kfs_job *job = run->job;		/* cannot be removed before on_done */
	uint64_t id;

	pthread_mutex_lock(&svc->lock);
	if (job->state == KFS_QUEUED) {
		job->state = KFS_RUNNING;
		job->generation++;
	}
	id = job->id;
	/* A checkpointer asleep because nothing ran has work again (--state-dir only). */
	if (svc->checkpointer_started)
		pthread_cond_signal(&svc->checkpointer_wake);
	pthread_mutex_unlock(&svc->lock);
	svc->on_change(id, svc->context);
}

/*
 * After the error line: what an NBD server, or the loss of one, said of a
 * region that failed (libnbd's text), so that "EIO" comes with its cause.
 */
static void append_server_errors(const struct kfs_run *run, const struct kcopyd_result *result, char *buf,
				 size_t len)
{
	unsigned int index;

	for (index = 0; index < run->region_count; index++) {
		bool failed = index == 0 ? result->read.error != 0 : result->write[index - 1].error != 0;
		const char *text = run->devs[index] && failed ? kcopyd_dev_error(run->devs[index]) : NULL;

		/* In the shared grammar, which kcopy --via parses (proto/status.c). */
		if (text)
			proto_failure_append_said(buf, len, run->paths[index], text);
	}
}

/*
 * A job that a shutdown (a signal, or an unmount) stopped has ended: say
 * what became of it, by name, since nobody can read its status any more:
 * cancelled, or with --state-dir interrupted and how to resume it; or
 * done or failed, when it ended on its own before the cancel took.
 */
static void log_fate(struct kfs_service *svc, uint64_t id)
{
	char name[KFS_NAME_MAX + 1], error[KFS_ERROR_MAX];
	unsigned long long done, durable, total;
	enum kfs_state state;
	struct kfs_job *job;
	bool removed, paused;

	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (!job) {
		pthread_mutex_unlock(&svc->lock);
		return;
	}
	snprintf(name, sizeof(name), "%s", job->name);
	snprintf(error, sizeof(error), "%s", job_error_text(job));
	state = job->state;
	done = job->sectors_done;
	durable = job->durable;
	total = job->sectors_total;
	removed = job->remove_when_ended;	/* its record goes with it: nothing to resume */
	paused = job->paused;
	pthread_mutex_unlock(&svc->lock);

	if (state == KFS_CANCELLED && svc->state_dir && !removed)
		kfs_log(LOG_NOTICE, "job %s: %s at %llu of %llu sectors (%llu durable), resumable: start "
			"kcopydfs again with --state-dir %s and write \"resume\" to jobs/%s/ctl", name,
			paused ? "paused, and stays paused," : "interrupted", done, total, durable, svc->state_dir_path,
			name);
	else if (state == KFS_CANCELLED)
		kfs_log(LOG_NOTICE, "job %s: cancelled at %llu of %llu sectors, its destinations partly written",
			name, done, total);
	else if (state == KFS_FAILED)
		kfs_log(LOG_NOTICE, "job %s: failed while kcopydfs stopped: %s", name, error);
	else
		kfs_log(LOG_NOTICE, "job %s: %s before the shutdown stopped it", name, kfs_state_name(state));
}

static void on_done(int read_err, unsigned int write_err, void *context)
{
	struct kfs_run *run = context;
	struct kfs_service *svc = run->svc;
	struct kfs_job *job = run->job;
	struct kcopyd_result result;
	char failure[KFS_ERROR_MAX];
	uint64_t id, engine_checkpoint = 0;
	int sync_error = 0;
	unsigned int sync_dest = 0, index;
	bool remove, log_end = false, unflushed = false;

	/*
	 * The final checkpoint, for the status and (with --state-dir) the
	 * record.  (The handle is set before the lock the submitter holds is
	 * dropped, and on_done cannot run before that: see kfs_job_ctl.)
	 */
	pthread_mutex_lock(&svc->lock);
	kcopyd_job_checkpoint(run->handle, &engine_checkpoint);
	(void)kcopyd_job_result(run->handle, &result);
	pthread_mutex_unlock(&svc->lock);
	/*
	 * With --state-dir, flush the destinations before the end is known to
	 * anyone, so that a record that says how far it got is true.  An NBD
	 * destination is flushed always (NBD_CMD_FLUSH), as kcopy flushes it:
	 * a local file's owner can sync(1) it after the job, an export's
	 * cannot, and a server may cache writes (qemu-nbd's writeback).
	 */
	for (index = 1; index < run->region_count; index++) {
		int r;

		if (!run->devs[index] || (!svc->state_dir && !kcopyd_is_nbd_uri(run->paths[index])))
			continue;
		r = kcopyd_dev_sync(run->devs[index]);
		if (r == -ECANCELED && result.cancelled) {
			/* The cancel shut a hung server's connections: no failure, but nothing is durable. */
			unflushed = true;
			continue;
		}
		if (r < 0 && sync_error == 0) {
			sync_error = r;
			sync_dest = index - 1;
		}
	}

	/* Under the lock: the submitter sets run->handle while holding it. */
	pthread_mutex_lock(&svc->lock);
	/* The result is ready from the completion routine on. */
	(void)kcopyd_job_result(run->handle, &result);
	if (sync_error) {
		/* What was written may not be on the disk: that is a failed write. */
		result.write_err |= 1u << sync_dest;
		if (result.error == 0)
			result.error = sync_error;
	}
	if (result.read_err || result.write_err || result.error || result.verified < 0) {
		job->state = KFS_FAILED;
		svc->jobs_failed++;
	} else if (result.cancelled) {
		job->state = KFS_CANCELLED;
		svc->jobs_cancelled++;
	} else {
		job->state = KFS_DONE;
		svc->jobs_done++;
	}
	/* The error line is kept only when something failed (else it is "none" by the state). */
	kfs_render_failure(&result, run->paths[0], (const char *const *)&run->paths[1], failure, sizeof(failure));
	if (sync_error) {
		size_t used = strncmp(failure, "none", 4) == 0 ? 0 : strlen(failure);

		snprintf(failure + used, sizeof(failure) - used, "%sflushing %s (to #%u) failed: %s (%s)",
			 used ? "; " : "", run->paths[1 + sync_dest], sync_dest, errno_name(sync_error),
			 strerror(-sync_error));
	}
	append_server_errors(run, &result, failure, sizeof(failure));
	if (strncmp(failure, "none", 4) != 0)
		job->error = strdup(failure);
	job->read_err = result.read_err;
	job->write_err = result.write_err;
	job->verified = result.verified;
	job->hashes_done = result.hashes;
	if (result.hashes && !job->digests) {
		/* Kept with the finished job for its status; without memory the status says none. */
		job->digests = malloc(sizeof(result.digests));
		if (job->digests)
			memcpy(job->digests, result.digests, sizeof(result.digests));
	}
	job->sectors_done = job->resume_base + result.sectors_done;
	job->sectors_data = result.counts.sectors_data;
	job->sectors_zero = result.counts.sectors_zero;
	job->sectors_offloaded = result.counts.sectors_offloaded;
	job->checkpoint = job->resume_base + engine_checkpoint;
	if (svc->state_dir && !sync_error && !unflushed)
		job->durable = job->resume_base + engine_checkpoint;
	job->ended_ns = clock_ns(CLOCK_MONOTONIC);
	job->run = NULL;
	active_give_locked(svc, job);
	job->generation++;
	id = job->id;
	remove = job->remove_when_ended;
	if (job->stopped_by_shutdown) {
		log_end = svc->fates_logged < SHUTDOWN_FATES_LOGGED;
		if (log_end)
			svc->fates_logged++;
		else
			svc->fates_unlogged++;
	}
	pthread_mutex_unlock(&svc->lock);
	/* A flush of the checkpointer's (--state-dir only) may still be using the devices: wait for it. */
	if (svc->state_dir) {
		pthread_mutex_lock(&run->sync_lock);
		pthread_mutex_unlock(&run->sync_lock);
	}
	/* Its devices are closed and its claims dropped before anyone is told it ended. */
	run_free(run);
	job_persist(svc, id);
	/* After its record: "resumable" is true once the record says interrupted. */
	if (log_end)
		log_fate(svc, id);
	/* Waiters get the final status first; then a job whose autoremove descriptor is closed goes. */
	svc->on_change(id, svc->context);
	if (remove)
		(void)remove_job(svc, id, REMOVE_IF_MARKED);
}

/* Is @text the word @word, with blanks around it and one trailing newline allowed? */
static bool is_word(const char *text, size_t len, const char *word)
{
	size_t word_len = strlen(word);

	if (len > 0 && text[len - 1] == '\n')
		len--;
	while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	while (len > 0 && (text[0] == ' ' || text[0] == '\t')) {
		text++;
		len--;
	}
	return len == word_len && memcmp(text, word, len) == 0;
}

static int job_cancel(struct kfs_service *svc, uint64_t id)
{
	struct kfs_job *job;
	uint64_t generation;
	bool changed;

	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (!job) {
		pthread_mutex_unlock(&svc->lock);
		return -ENOENT;
	}
	job->ever_written = true;
	generation = job->generation;
	if (!kfs_state_final(job->state))
		job->cancelled_by_user = true;
	/* Cancelling a job that has ended changes nothing and is no error: it races with the end. */
	if (job->starting)
		job->cancel_when_started = true;
	else
		job_cancel_locked(svc, job);
	changed = job->generation != generation;
	pthread_mutex_unlock(&svc->lock);
	if (changed) {
		/* An interrupted job cancelled: its record says so (a running one's does when it ends). */
		job_persist(svc, id);
		svc->on_change(id, svc->context);
	}
	return 0;
}

/*
 * @text, without its newline and the blanks around it, starts with @prefix:
 * *@rest is what follows it (*@rest_len bytes).
 */
static bool has_prefix_word(const char *text, size_t len, const char *prefix, const char **rest, size_t *rest_len)
{
	size_t prefix_len = strlen(prefix);

	if (len > 0 && text[len - 1] == '\n')
		len--;
	while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t'))
		len--;
	while (len > 0 && (text[0] == ' ' || text[0] == '\t')) {
		text++;
		len--;
	}
	if (len < prefix_len || memcmp(text, prefix, prefix_len) != 0)
		return false;
	*rest = text + prefix_len;
	*rest_len = len - prefix_len;
	return true;
}

/* Refuse a write: keep the reason where status shows it. */
static int reject(struct kfs_service *svc, uint64_t id, int error, const char *why)
{
	struct kfs_job *job;

	char *rejected = NULL;

	/* Without memory for the text the write is still refused, with "rejected: none". */
	if (asprintf(&rejected, "%s (%s)", why, errno_name(error)) < 0)
		rejected = NULL;
	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (job) {
		job->ever_written = true;
		free(job->rejected);
		job->rejected = rejected;
		rejected = NULL;
		job->generation++;
	}
	pthread_mutex_unlock(&svc->lock);
	free(rejected);
	if (job)
		svc->on_change(id, svc->context);
	return error;
}

/*
 * Under svc->lock: may a description start @job now (or, @resuming, may
 * "resume" finish it)?  0, or -errno and why not.
 */
static int job_startable_locked(struct kfs_service *svc, struct kfs_job *job, bool resuming, char *why,
				size_t why_len)
{
	if (resuming && job->state != KFS_INTERRUPTED && !job->starting) {
		set_text(why, why_len, "job %s is %s: only a paused or interrupted job can be resumed", job->name,
			 kfs_state_name(job->state));
		return -EINVAL;
	}
	if (!resuming && job->state == KFS_INTERRUPTED) {
		set_text(why, why_len, "job %s is interrupted: write \"resume\" to finish it, or \"cancel\"",
			 job->name);
		return -EBUSY;
	}
	if (kfs_state_final(job->state)) {
		set_text(why, why_len, "job %s has already ended (%s)", job->name, kfs_state_name(job->state));
		return -EBUSY;
	}
	if ((job->state != KFS_IDLE && job->state != KFS_INTERRUPTED) || job->starting) {
		set_text(why, why_len, "job %s was already started", job->name);
		return -EBUSY;
	}
	if (svc->shutting_down) {
		set_text(why, why_len, "kcopydfs is shutting down");
		return -ESHUTDOWN;
	}
	if (svc->jobs_active >= svc->max_jobs) {
		set_text(why, why_len, "%u jobs are queued or running, the limit (--max-jobs)", svc->max_jobs);
		return -EAGAIN;
	}
	if (job->uid != 0 && svc->jobs_active_others >= svc->max_jobs_others) {
		set_text(why, why_len,
			 "%u jobs of users other than root are queued or running, all they may have: the rest of "
			 "--max-jobs (%u) is kept for root",
			 svc->max_jobs_others, svc->max_jobs);
		return -EAGAIN;
	}
	return 0;
}

/*
 * Under svc->lock: render @job's description again with rate= @rate, so
 * that its record, and thus a resume after a restart, keeps the rate last
 * set.  Return: 0 or -ENOMEM (the description is then left as it was).
 */
static int description_set_rate_locked(struct kfs_job *job, uint64_t rate)
{
	struct jobspec spec;
	char *rendered;
	int r;

	if (!job->description)
		return 0;
	r = jobspec_parse(job->description, strlen(job->description), &spec, NULL, 0);
	if (r < 0)
		return r == -ENOMEM ? r : 0;	/* it parsed when it started: nothing else can happen */
	spec.rate = rate;
	rendered = malloc(JOBSPEC_MAX_CANONICAL);
	if (!rendered) {
		jobspec_free(&spec);
		return -ENOMEM;
	}
	r = jobspec_render(&spec, rendered, JOBSPEC_MAX_CANONICAL);
	jobspec_free(&spec);
	if (r < 0) {
		free(rendered);
		return 0;
	}
	free(job->description);
	job->description = rendered;
	return 0;
}

/*
 * The end of a control word that changed a job (pause, resume of a paused
 * job, rate=), called without svc->lock: its refusal (@r < 0, @why), or
 * its record written again (with --state-dir a paused job comes back
 * paused after a restart, and a new rate stays) and its change told.
 */
static int word_done(struct kfs_service *svc, uint64_t id, int r, const char *why)
{
	if (r < 0)
		return reject(svc, id, r, why);
	job_persist(svc, id);
	svc->on_change(id, svc->context);
	return 0;
}

/*
 * Under svc->lock: why @job is in no state for @word ("pause", "rate="),
 * into @why; the errno is the caller's.
 */
static void wrong_state(const struct kfs_job *job, const char *word, const char *wanted, char *why, size_t why_len)
{
	if (kfs_state_final(job->state))
		set_text(why, why_len, "job %s has already ended (%s): %s applies only to %s", job->name,
			 kfs_state_name(job->state), word, wanted);
	else
		set_text(why, why_len, "job %s is %s: %s applies only to %s", job->name,
			 job->paused ? "paused" : kfs_state_name(job->state), word, wanted);
}

/*
 * "pause": a queued or running job starts no more sub-jobs (those in
 * flight finish); it stays queued or running underneath, and shows as
 * paused.  Return: 0 or -errno, with the reason as its rejected line.
 */
static int job_pause(struct kfs_service *svc, uint64_t id)
{
	char why[KFS_ERROR_MAX];
	struct kfs_job *job;
	int r;

	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (!job) {
		pthread_mutex_unlock(&svc->lock);
		return -ENOENT;
	}
	if (job->starting) {
		r = -EBUSY;
		set_text(why, sizeof(why), "job %s is starting: pause it once it is queued", job->name);
	} else if (job->paused && !kfs_state_final(job->state)) {
		r = -EALREADY;
		set_text(why, sizeof(why), "job %s is paused already", job->name);
	} else if ((job->state == KFS_QUEUED || job->state == KFS_RUNNING) && job->run && job->run->handle) {
		r = kcopyd_job_pause(job->run->handle);
		if (r == -EALREADY)
			set_text(why, sizeof(why), "job %s is paused already", job->name);
		else if (r < 0)
			set_text(why, sizeof(why), "job %s is ending: its I/O is over (%s)", job->name, strerror(-r));
	} else {
		r = -EINVAL;
		wrong_state(job, "pause", "a queued or running job", why, sizeof(why));
	}
	if (r == 0) {
		job->paused = true;
		job->generation++;
	}
	pthread_mutex_unlock(&svc->lock);
	return word_done(svc, id, r, why);
}

/*
 * "resume" of a paused job that is still queued or running: it starts
 * sub-jobs again.  Return: 1 if @job is not such a job (the caller
 * resumes an interrupted one, or refuses), else 0 or -errno.
 */
static int job_unpause(struct kfs_service *svc, uint64_t id)
{
	char why[KFS_ERROR_MAX];
	struct kfs_job *job;
	int r;

	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (!job || !job->paused || job->state == KFS_INTERRUPTED || !job->run || !job->run->handle) {
		pthread_mutex_unlock(&svc->lock);
		return 1;
	}
	r = kcopyd_job_resume(job->run->handle);
	if (r == 0 || r == -EALREADY) {
		r = 0;
		job->paused = false;
		job->generation++;
	} else {
		set_text(why, sizeof(why), "job %s is ending: its I/O is over (%s)", job->name, strerror(-r));
	}
	pthread_mutex_unlock(&svc->lock);
	return word_done(svc, id, r, why);
}

/*
 * "rate=BYTES": the job's rate limit from its next sub-job on; of an
 * interrupted job, for when it is resumed.  "rate=none" lifts it (the
 * status's word for no limit; 0 is refused as a rate, as in descriptions).
 * Return: 0 or -errno, with the reason as its rejected line.
 */
static int job_set_rate(struct kfs_service *svc, uint64_t id, const char *value, size_t value_len)
{
	char why[KFS_ERROR_MAX];
	struct kfs_job *job;
	uint64_t rate;
	int r;

	if (value_len == 4 && memcmp(value, "none", 4) == 0)
		rate = 0;
	else if ((r = jobspec_parse_rate(value, value_len, &rate, why, sizeof(why))) < 0)
		return reject(svc, id, r, why);
	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (!job) {
		pthread_mutex_unlock(&svc->lock);
		return -ENOENT;
	}
	if (job->starting) {
		r = -EBUSY;
		set_text(why, sizeof(why), "job %s is starting: set its rate once it is queued", job->name);
	} else if (job->description && strncmp(job->description, "zero ", 5) == 0) {
		/* As its description could not take rate=: it reads nothing a rate counts. */
		r = -EINVAL;
		set_text(why, sizeof(why), "job %s is a zero job: rate= applies only to copies (it reads nothing)",
			 job->name);
	} else if ((job->state == KFS_QUEUED || job->state == KFS_RUNNING) && job->run && job->run->handle) {
		r = kcopyd_job_set_rate(job->run->handle, rate);
		if (r < 0)
			set_text(why, sizeof(why), "job %s is ending: its I/O is over (%s)", job->name, strerror(-r));
	} else if (job->state == KFS_INTERRUPTED) {
		r = 0;
	} else {
		r = -EINVAL;
		wrong_state(job, "rate=", "a queued, running, paused or interrupted job (an idle one takes rate= in its "
			    "description)", why, sizeof(why));
	}
	if (r == 0 && description_set_rate_locked(job, rate) < 0) {
		/* The engine has the new rate; only a restart would forget it. */
		kfs_log(LOG_WARNING, "job %s: no memory to record its new rate", job->name);
	}
	if (r == 0) {
		job->rate = rate;
		job->generation++;
	}
	pthread_mutex_unlock(&svc->lock);
	return word_done(svc, id, r, why);
}

/* Move every region of @spec on by @sectors, for a resume: a canonical description has every count. */
static void spec_skip(struct jobspec *spec, uint64_t sectors)
{
	unsigned int index;

	if (spec->op == JOBSPEC_COPY) {
		spec->from.sector += sectors;
		spec->from.count -= sectors;
	}
	for (index = 0; index < spec->num_dests; index++) {
		spec->dests[index].sector += sectors;
		spec->dests[index].count -= sectors;
	}
}

int kfs_job_ctl(struct kfs_service *svc, uint64_t id, const char *text, size_t len, const struct kfs_cred *cred)
{
	struct io_region from = { 0 }, dests[KCOPYD_MAX_REGIONS];
	char why[KFS_ERROR_MAX], *canonical = NULL, *recorded = NULL;
	struct kfs_owner owner, *kept_owner = NULL;
	struct kfs_run *run = NULL;
	struct jobspec spec;
	struct kfs_job *job;
	bool is_copy, resuming;
	uint64_t resume_from = 0;
	int root_fd = -1, r;

	/*
	 * Only the owner writes to a job's ctl: a descriptor passed to another
	 * process, or root writing to a job somebody made under a name it
	 * expected, must not lend one's rights to the other.  The job is left
	 * as it was.  (Its owner never changes, so one look is enough.)
	 */
	r = kfs_job_may_write(svc, id, cred->uid);
	if (r < 0)
		return r;

	if (is_word(text, len, "cancel"))
		return job_cancel(svc, id);
	if (is_word(text, len, "pause"))
		return job_pause(svc, id);
	{
		const char *value;
		size_t value_len;

		if (has_prefix_word(text, len, "rate=", &value, &value_len))
			return job_set_rate(svc, id, value, value_len);
	}
	/* "resume" goes on with a paused job, or runs an interrupted one's description again from its checkpoint. */
	resuming = is_word(text, len, "resume");
	if (resuming) {
		r = job_unpause(svc, id);
		if (r <= 0)
			return r;
	}

	/* A started job refuses any further description, well formed or not. */
	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	r = job ? job_startable_locked(svc, job, resuming, why, sizeof(why)) : -ENOENT;
	if (r == 0 && resuming && !job->owner) {
		r = -ESTALE;
		set_text(why, sizeof(why), "job %s was recorded without its owner's groups and view (by an older "
			 "kcopydfs): write the description again", job->name);
	} else if (r == 0 && resuming) {
		/* A resume opens the regions as the owner recorded at the start, never as its writer. */
		memcpy(&owner, job->owner, owner_size(job->owner));
		if (!(recorded = strdup(job->description))) {
			r = -ENOMEM;
			set_text(why, sizeof(why), "out of memory");
		}
	}
	pthread_mutex_unlock(&svc->lock);
	if (r == 0 && resuming)
		r = jobspec_parse(recorded, strlen(recorded), &spec, why, sizeof(why));
	else if (r == 0)
		r = jobspec_parse(text, len, &spec, why, sizeof(why));
	free(recorded);
	if (r < 0)
		return r == -ENOENT ? r : reject(svc, id, r, why);

	/* Again under the lock, which is kept while the job is reserved. */
	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	r = job ? job_startable_locked(svc, job, resuming, why, sizeof(why)) : -ENOENT;
	if (r == 0) {
		/* Reserve the job and a place: the opens below run without the lock. */
		job->starting = true;
		job->ever_written = true;
		active_take_locked(svc, job);
		if (resuming)
			resume_from = job->durable;
	}
	pthread_mutex_unlock(&svc->lock);
	if (r < 0) {
		jobspec_free(&spec);
		return r == -ENOENT ? r : reject(svc, id, r, why);
	}
	if (resuming)
		spec_skip(&spec, resume_from);

	/* The job cannot be removed while starting, so it is safe to use unlocked. */
	is_copy = spec.op == JOBSPEC_COPY;
	if (resuming)
		r = kfs_owner_root(svc->opener, &owner, cred, &root_fd, why, sizeof(why));
	else
		r = kfs_owner_of_writer(svc->opener, cred, &owner, &root_fd, why, sizeof(why));
	if (r == 0 && !resuming && !(kept_owner = owner_dup(&owner)))
		r = -ENOMEM;
	if (r == 0 && !(run = run_alloc(svc, job, spec.num_dests)))
		r = -ENOMEM;
	if (r == 0)
		r = prepare_job(svc, run, &spec, &owner, cred, root_fd, &from, dests, &canonical, why, sizeof(why));
	if (root_fd >= 0)
		close(root_fd);
	if (r == -ENOMEM)
		set_text(why, sizeof(why), "out of memory");

	/* Submit under the lock, so on_start and on_done find the job queued with its run. */
	pthread_mutex_lock(&svc->lock);
	if (r == 0 && svc->shutting_down) {
		r = -ESHUTDOWN;
		set_text(why, sizeof(why), "kcopydfs is shutting down");
	}
	if (r == 0) {
		/*
		 * A resumed run hashes nothing: the source before its checkpoint
		 * was read by an earlier daemon, so no digest of the whole range
		 * could come out of it (its status says so).  It verifies what
		 * it copies.  Its rate is the job's, as ctl last set it.
		 */
		struct kcopyd_job_options options = {
			.flags = spec.flags,
			.hashes = resuming && resume_from > 0 ? 0 : spec.hashes,
			.rate = spec.rate,
		};

		job->run = run;
		r = kcopyd_submit_options(svc->kc, is_copy ? &from : NULL, spec.num_dests, dests, &options,
					  sizeof(options), on_done, run, &run->handle);
		if (r < 0) {
			job->run = NULL;
			set_text(why, sizeof(why), "the engine refused the job: %s", strerror(-r));
		}
	}
	job->starting = false;
	if (r == 0) {
		job->state = KFS_QUEUED;
		job->flags = spec.flags;
		job->hashes = spec.hashes;
		job->rate = spec.rate;
		job->paused = false;
		if (resuming) {
			/* It keeps its own description and size; this run covers the rest. */
			free(canonical);
			job->resume_base = resume_from;
			job->resumed_at = resume_from;
		} else {
			job->description = canonical;
			job->owner = kept_owner;
			kept_owner = NULL;
			job->sectors_total = dests[0].count;
		}
		job->queued_ns = clock_ns(CLOCK_MONOTONIC);
		free(job->rejected);
		job->rejected = NULL;
		job->generation++;
		if (job->cancel_when_started)
			(void)kcopyd_job_cancel(run->handle);
	} else {
		active_give_locked(svc, job);
		if (job->cancel_when_started)
			job_cancel_locked(svc, job);
	}
	pthread_mutex_unlock(&svc->lock);
	jobspec_free(&spec);
	free(kept_owner);
	if (r < 0) {
		run_free(run);
		free(canonical);
		r = reject(svc, id, r, why);
		/* Its autoremove descriptor was closed while it was starting: nobody will see why. */
		(void)remove_job(svc, id, REMOVE_IF_MARKED);
		return r;
	}
	/* With --state-dir the write returns once the job's record is durable. */
	job_persist(svc, id);
	svc->on_change(id, svc->context);
	return 0;
}

int kfs_job_may_write(struct kfs_service *svc, uint64_t id, uid_t uid)
{
	struct kfs_job *job;
	int r;

	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	r = !job ? -ENOENT : job->uid != uid ? -EPERM : 0;
	pthread_mutex_unlock(&svc->lock);
	return r;
}

int kfs_job_reject(struct kfs_service *svc, uint64_t id, int error, const char *why)
{
	return reject(svc, id, error, why);
}
