/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * --state-dir: the service's side of the job records (state.c holds the
 * files): a record saved when a job starts, at each checkpoint and when it
 * ends, deleted with the job; the checkpointer thread; the jobs restored
 * at create.  Saves are ordered by svc->state_lock, taken before svc->lock:
 * see struct kfs_service (service-internal.h) and doc/DESIGN.md.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kcopydfs/log.h"
#include "kcopydfs/service-internal.h"
#include "kcopydfs/state.h"

#define DEFAULT_CHECKPOINT_MS 1000u

/*
 * Records are the daemon's, but they are also written from the engine's
 * completion thread, whose filesystem uid is ENGINE_FSUID (service.c): these
 * take the daemon's own for the calling thread (the raw call), and give it back.
 */
static uid_t records_fsuid_begin(void)
{
	return (uid_t)syscall(SYS_setfsuid, geteuid());
}

static void records_fsuid_end(uid_t fsuid)
{
	syscall(SYS_setfsuid, fsuid);
}

/* Under svc->lock: the record of @job as it is now.  False for a job with nothing to record (idle). */
static bool job_record_locked(const struct kfs_job *job, struct kfs_record *record)
{
	size_t len;

	if (!job->description)
		return false;
	memset(record, 0, offsetof(struct kfs_record, description));
	record->id = job->id;
	snprintf(record->name, sizeof(record->name), "%s", job->name);
	record->uid = job->uid;
	record->gid = job->gid;
	if (job->owner) {
		record->identity_known = true;
		record->caps = job->owner->caps;
		record->view = job->owner->view;
		record->group_count = job->owner->group_count;
		memcpy(record->groups, job->owner->groups, job->owner->group_count * sizeof(gid_t));
	}
	/*
	 * A paused job is recorded as "paused", also when a shutdown stopped
	 * it, so that it comes back paused; an older daemon takes that state
	 * as it takes "running": interrupted.
	 */
	if (job->paused &&
	    (!kfs_state_final(job->state) || (job->stopped_by_shutdown && job->state == KFS_CANCELLED)))
		snprintf(record->state, sizeof(record->state), "paused");
	else
		snprintf(record->state, sizeof(record->state), "%s",
			 job->stopped_by_shutdown && job->state == KFS_CANCELLED ? "interrupted"
										 : kfs_state_name(job->state));
	record->sectors_total = job->sectors_total;
	record->checkpoint = job->durable;
	snprintf(record->error, sizeof(record->error), "%s", job_error_text(job));
	len = strlen(job->description);
	if (len > 0 && job->description[len - 1] == '\n')
		len--;
	snprintf(record->description, sizeof(record->description), "%.*s", (int)len, job->description);
	return true;
}

/*
 * Write the record of job @id as it is now: after it started, at each
 * checkpoint, when it ended.  Without --state-dir, or for an idle job, it
 * does nothing.  A failed save is logged and leaves the previous record,
 * which is still true (only older).
 */
void job_persist(struct kfs_service *svc, uint64_t id)
{
	struct kfs_record *record;
	struct kfs_job *job;
	bool have = false;
	int r;

	if (!svc->state_dir)
		return;
	record = malloc(sizeof(*record));
	if (!record) {
		kfs_log(LOG_ERR, "no memory to save the record of job %llu", (unsigned long long)id);
		return;
	}
	pthread_mutex_lock(&svc->state_lock);
	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (job)
		have = job_record_locked(job, record);
	pthread_mutex_unlock(&svc->lock);
	if (have) {
		uid_t fsuid = records_fsuid_begin();

		r = kfs_state_dir_save(svc->state_dir, record);
		records_fsuid_end(fsuid);
		if (r < 0)
			kfs_log(LOG_ERR, "cannot save the record of job %s: %s", record->name, strerror(-r));
	}
	pthread_mutex_unlock(&svc->state_lock);
	free(record);
}

/*
 * Delete the record of @job, which has left the table: under state_lock
 * (remove_job takes it), so that no save in progress brings it back.
 * A failure is logged.
 */
void job_record_delete(struct kfs_service *svc, const struct kfs_job *job)
{
	uid_t fsuid = records_fsuid_begin();
	int r = kfs_state_dir_delete(svc->state_dir, job->id);

	records_fsuid_end(fsuid);

	if (r < 0)
		kfs_log(LOG_ERR, "cannot remove the record of job %s: %s", job->name, strerror(-r));
}

/* Under svc->lock: the running job with the smallest id above @after, or NULL. */
static struct kfs_job *next_running_locked(struct kfs_service *svc, uint64_t after)
{
	struct kfs_job *job = after ? find_by_id(svc, after) : NULL;

	job = job ? job->list_next : svc->first;
	while (job && (job->id <= after || !job->run || !job->run->handle || job->state != KFS_RUNNING))
		job = job->list_next;
	return job;
}

/*
 * The checkpointer thread: every checkpoint_ms, for each running job whose
 * engine checkpoint moved, flush its destinations and then record the
 * checkpoint, so that a recorded checkpoint is always durable.
 *
 * While no job is queued or running it sleeps without a deadline: an idle
 * daemon does not wake at all.  on_start() wakes it when a job begins to
 * run, and kfs_service_destroy() when it must exit.
 */
static void *checkpointer_main(void *arg)
{
	struct kfs_service *svc = arg;
	struct timespec deadline;

	pthread_mutex_lock(&svc->lock);
	while (!svc->checkpointer_exit) {
		struct kfs_job *job;
		uint64_t after = 0;

		if (svc->jobs_active == 0) {
			pthread_cond_wait(&svc->checkpointer_wake, &svc->lock);
			continue;
		}
		clock_gettime(CLOCK_MONOTONIC, &deadline);
		deadline.tv_sec += svc->checkpoint_ms / 1000;
		deadline.tv_nsec += (long)(svc->checkpoint_ms % 1000) * 1000000L;
		if (deadline.tv_nsec >= 1000000000L) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000L;
		}
		while (!svc->checkpointer_exit &&
		       pthread_cond_timedwait(&svc->checkpointer_wake, &svc->lock, &deadline) == 0)
			;
		while (!svc->checkpointer_exit && (job = next_running_locked(svc, after))) {
			struct kfs_run *run = job->run;
			uint64_t id = job->id, engine_checkpoint, point;
			unsigned int index;
			bool flushed = true;

			after = id;
			/* Taken while the run is the job's: on_done frees it only after taking this too. */
			pthread_mutex_lock(&run->sync_lock);
			kcopyd_job_checkpoint(run->handle, &engine_checkpoint);
			point = job->resume_base + engine_checkpoint;
			if (point <= job->durable) {
				pthread_mutex_unlock(&run->sync_lock);
				continue;
			}
			pthread_mutex_unlock(&svc->lock);
			for (index = 1; index < run->region_count; index++)
				if (kcopyd_dev_sync(run->devs[index]) < 0)
					flushed = false;
			pthread_mutex_unlock(&run->sync_lock);
			pthread_mutex_lock(&svc->lock);
			/* If it ended meanwhile, on_done records its own (later) checkpoint. */
			job = find_by_id(svc, id);
			if (!flushed || !job || job->state != KFS_RUNNING || job->durable >= point)
				continue;
			job->durable = point;
			pthread_mutex_unlock(&svc->lock);
			job_persist(svc, id);
			pthread_mutex_lock(&svc->lock);
		}
	}
	pthread_mutex_unlock(&svc->lock);
	return NULL;
}

/*
 * Under svc->lock: a restored job's flags, hashes and rate, from its
 * description, for its status (a resume parses the description again).
 */
static void restore_options_locked(struct kfs_job *job)
{
	struct jobspec spec;

	if (!job->description || jobspec_parse(job->description, strlen(job->description), &spec, NULL, 0) < 0)
		return;
	job->flags = spec.flags;
	job->hashes = spec.hashes;
	job->rate = spec.rate;
	jobspec_free(&spec);
	/*
	 * How its verification ended, as far as the record tells: a job done
	 * verified (a mismatch fails it), a failed one whose error line names
	 * a verify error did not.  Its digests are not recorded: "none".
	 */
	if ((job->flags & KCOPYD_VERIFY) && job->state == KFS_DONE)
		job->verified = 1;
	else if ((job->flags & KCOPYD_VERIFY) && job->state == KFS_FAILED && job->error &&
		 strstr(job->error, "verify error on "))
		job->verified = -1;
}

/*
 * kfs_state_dir_load()'s callback: a job queued or running when its record
 * was written comes back interrupted at its durable checkpoint; a finished
 * one as it ended; a damaged record as a failed job (named by its id) that
 * says why.
 */
static void restore_record(uint64_t id, const struct kfs_record *record, const char *why, void *context)
{
	struct kfs_service *svc = context;
	char name[32], error[KFS_ERROR_MAX];
	struct kfs_job *job;
	bool restored = false;

	pthread_mutex_lock(&svc->lock);
	if (!record) {
		snprintf(name, sizeof(name), "%llu", (unsigned long long)id);
		job = restore_job_locked(svc, id, name, 0);
		if (job) {
			job->state = KFS_FAILED;
			snprintf(error, sizeof(error), "its record %llu.job in the state directory is damaged: %s",
				 (unsigned long long)id, why);
			job->error = strdup(error);
			svc->jobs_failed++;
			restored = true;
		}
	} else {
		job = restore_job_locked(svc, id, record->name, record->uid);
		if (job) {
			job->uid = record->uid;
			job->gid = record->gid;
			if (record->identity_known) {
				struct kfs_owner owner = { .uid = record->uid, .gid = record->gid, .caps = record->caps,
							   .view = record->view, .group_count = record->group_count };

				memcpy(owner.groups, record->groups, record->group_count * sizeof(gid_t));
				job->owner = owner_dup(&owner);	/* NULL without memory: then it cannot be resumed */
			}
			job->sectors_total = record->sectors_total;
			/*
			 * Where it got to, as of the earlier daemon: a finished
			 * job shows no counts of a run (its run was before).
			 */
			job->durable = job->resume_base = job->checkpoint = record->checkpoint;
			if (asprintf(&job->description, "%s\n", record->description) < 0)
				job->description = NULL;
			if (!job->description) {
				/* Without its description it could never be resumed: it ends here, saying why. */
				job->state = KFS_FAILED;
				job->error = strdup("no memory to restore its record");
				svc->jobs_failed++;
			} else if (strcmp(record->state, "done") == 0) {
				job->state = KFS_DONE;
				job->sectors_done = record->checkpoint;
				svc->jobs_done++;
			} else if (strcmp(record->state, "failed") == 0) {
				job->state = KFS_FAILED;
				job->sectors_done = record->checkpoint;
				job->error = strdup(record->error);
				svc->jobs_failed++;
			} else if (strcmp(record->state, "cancelled") == 0) {
				job->state = KFS_CANCELLED;
				job->sectors_done = record->checkpoint;
				svc->jobs_cancelled++;
			} else {
				/* Queued, running or paused: it waits for "resume", a paused one as paused. */
				job->state = KFS_INTERRUPTED;
				job->paused = strcmp(record->state, "paused") == 0;
			}
			restore_options_locked(job);
			restored = true;
		}
	}
	pthread_mutex_unlock(&svc->lock);
	if (!restored)
		kfs_log(LOG_WARNING, "record %llu.job not restored (its id or name is taken, or too many jobs)",
			(unsigned long long)id);
}

/* Open the state directory, restore its jobs, start the checkpointer.  Return: 0 or -errno. */
int state_start(struct kfs_service *svc, const struct kfs_config *config)
{
	char why[512];
	int r;

	svc->checkpoint_ms = config->checkpoint_ms ? config->checkpoint_ms : DEFAULT_CHECKPOINT_MS;
	svc->state_dir_path = strdup(config->state_dir);
	if (!svc->state_dir_path)
		return -ENOMEM;
	r = kfs_state_dir_open(config->state_dir, why, sizeof(why), &svc->state_dir);
	if (r < 0) {
		kfs_log(LOG_ERR, "--state-dir %s: %s", config->state_dir, why[0] ? why : strerror(-r));
		return r;
	}
	r = kfs_state_dir_load(svc->state_dir, restore_record, svc);
	if (r < 0) {
		kfs_log(LOG_ERR, "--state-dir %s: cannot read it: %s", config->state_dir, strerror(-r));
		return r;
	}
	r = -pthread_create(&svc->checkpointer, NULL, checkpointer_main, svc);
	if (r < 0)
		return r;
	svc->checkpointer_started = true;
	return 0;
}
