/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job table: jobs by name and by id and in id order, the per-user
 * counts that hold users other than root to their limits and keep root's
 * reserve, creating, finding, viewing and removing jobs (names.c says
 * which names are valid).  Everything here runs under svc->lock or takes
 * it; the rules are on struct kfs_service (service-internal.h).
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kcopydfs/service-internal.h"

static unsigned int hash_name(const char *name)
{
	unsigned int hash = 2166136261u;

	while (*name)
		hash = (hash ^ (unsigned char)*name++) * 16777619u;
	return hash % HASH_BUCKETS;
}

static unsigned int hash_id(uint64_t id)
{
	return (unsigned int)(id % HASH_BUCKETS);
}

/* Under svc->lock. */
struct kfs_job *find_by_id(struct kfs_service *svc, uint64_t id)
{
	struct kfs_job *job;

	for (job = svc->by_id[hash_id(id)]; job; job = job->next_by_id)
		if (job->id == id)
			return job;
	return NULL;
}

/* Under svc->lock. */
static struct kfs_job *find_by_name(struct kfs_service *svc, const char *name)
{
	struct kfs_job *job;

	for (job = svc->by_name[hash_name(name)]; job; job = job->next_by_name)
		if (strcmp(job->name, name) == 0)
			return job;
	return NULL;
}

void job_free(struct kfs_job *job)
{
	run_free(job->run);
	free(job->owner);
	free(job->error);
	free(job->rejected);
	free(job->description);
	free(job->digests);
	free(job);
}

/* Under svc->lock: the job's error line (see kcopydfs(5), STATUS). */
const char *job_error_text(const struct kfs_job *job)
{
	switch (job->state) {
	case KFS_IDLE:
		/* While idle, the error line shows why the last write was refused. */
		return job->rejected ? job->rejected : "none";
	case KFS_QUEUED:
	case KFS_RUNNING:
		return "none";
	default:
		if (job->error)
			return job->error;
		return job->state == KFS_CANCELLED ? "none (cancelled)" : "none";
	}
}

/* Under svc->lock: the count of @uid's jobs, or NULL if it has none. */
static struct kfs_user *find_user_locked(struct kfs_service *svc, uid_t uid)
{
	struct kfs_user *user;

	for (user = svc->users[uid % USER_BUCKETS]; user && user->uid != uid; user = user->next)
		;
	return user;
}

/*
 * Under svc->lock: make sure @uid has a count, so that job_link_locked()
 * cannot fail.  Return: 0 or -ENOMEM.
 */
static int user_prepare_locked(struct kfs_service *svc, uid_t uid)
{
	struct kfs_user *user = find_user_locked(svc, uid);

	if (user)
		return 0;
	user = calloc(1, sizeof(*user));
	if (!user)
		return -ENOMEM;
	user->uid = uid;
	user->next = svc->users[uid % USER_BUCKETS];
	svc->users[uid % USER_BUCKETS] = user;
	return 0;
}

/* Under svc->lock: @uid has one job fewer; a user with none left is forgotten. */
static void user_release_locked(struct kfs_service *svc, uid_t uid)
{
	struct kfs_user **link, *user;

	for (link = &svc->users[uid % USER_BUCKETS]; (user = *link) && user->uid != uid; link = &user->next)
		;
	if (!user)
		return;
	if (uid != 0)
		svc->jobs_others--;
	if (--user->jobs == 0) {
		*link = user->next;
		free(user);
	}
}

/*
 * Under svc->lock: may @uid have one more job?  Root is held only to the
 * table; another user to its own limit and to the table less root's part.
 * Return: 0, -ENOSPC or -EDQUOT.
 */
static int user_may_create_locked(struct kfs_service *svc, uid_t uid)
{
	struct kfs_user *user;

	if (svc->jobs >= svc->max_objects)
		return -ENOSPC;
	if (uid == 0)
		return 0;
	user = find_user_locked(svc, uid);
	if (user && user->jobs >= svc->max_jobs_per_user)
		return -EDQUOT;
	if (svc->jobs_others >= svc->max_objects_others)
		return -ENOSPC;
	return 0;
}

/*
 * Under svc->lock: enter @job (id, name and owner set, the name free) in the
 * table, as the newest.  user_prepare_locked() must have run for its owner.
 */
static void job_link_locked(struct kfs_service *svc, struct kfs_job *job)
{
	unsigned int bucket;

	bucket = hash_name(job->name);
	job->next_by_name = svc->by_name[bucket];
	svc->by_name[bucket] = job;
	bucket = hash_id(job->id);
	job->next_by_id = svc->by_id[bucket];
	svc->by_id[bucket] = job;
	job->list_prev = svc->last;
	if (svc->last)
		svc->last->list_next = job;
	else
		svc->first = job;
	svc->last = job;
	svc->jobs++;
	svc->jobs_created++;
	find_user_locked(svc, job->uid)->jobs++;
	if (job->uid != 0)
		svc->jobs_others++;
}

int kfs_job_create(struct kfs_service *svc, const char *name, uid_t uid, gid_t gid, uint64_t *id)
{
	/* Room for the name, or for a clone job's number in decimal. */
	size_t name_room = name ? strlen(name) + 1 : sizeof("18446744073709551615");
	struct kfs_job *job;
	int r;

	/* Too long is its own errno, as for any filesystem with a short NAME_MAX. */
	if (name && strlen(name) > KFS_NAME_MAX)
		return -ENAMETOOLONG;
	if (name && !kfs_name_valid(name))
		return -EINVAL;
	job = calloc(1, sizeof(*job) + name_room);
	if (!job)
		return -ENOMEM;
	job->uid = uid;
	job->gid = gid;
	job->state = KFS_IDLE;
	job->created_ns = clock_ns(CLOCK_REALTIME);

	pthread_mutex_lock(&svc->lock);
	if (svc->shutting_down) {
		pthread_mutex_unlock(&svc->lock);
		free(job);
		return -ESHUTDOWN;
	}
	if (name && find_by_name(svc, name)) {
		pthread_mutex_unlock(&svc->lock);
		free(job);
		return -EEXIST;
	}
	r = user_may_create_locked(svc, uid);
	if (r == 0)
		r = user_prepare_locked(svc, uid);
	if (r < 0) {
		pthread_mutex_unlock(&svc->lock);
		free(job);
		return r;
	}
	job->id = svc->next_id++;
	if (name) {
		strcpy(job->name, name);
	} else {
		/* A clone job is named by its id; skip ids a mkdir already took as names. */
		snprintf(job->name, name_room, "%llu", (unsigned long long)job->id);
		while (find_by_name(svc, job->name)) {
			job->id = svc->next_id++;
			snprintf(job->name, name_room, "%llu", (unsigned long long)job->id);
		}
	}
	job_link_locked(svc, job);
	*id = job->id;
	pthread_mutex_unlock(&svc->lock);
	return 0;
}

int kfs_job_find(struct kfs_service *svc, const char *name, uint64_t *id)
{
	struct kfs_job *job;

	pthread_mutex_lock(&svc->lock);
	job = find_by_name(svc, name);
	if (job)
		*id = job->id;
	pthread_mutex_unlock(&svc->lock);
	return job ? 0 : -ENOENT;
}

int kfs_job_next(struct kfs_service *svc, uint64_t after, uint64_t *id)
{
	struct kfs_job *job;
	int r = -ENOENT;

	pthread_mutex_lock(&svc->lock);
	/*
	 * A listing continues after the job it returned last: while that job
	 * exists, its successor is one step away.  Otherwise (the start, or a
	 * job removed meanwhile) walk back from the newest.
	 */
	job = after ? find_by_id(svc, after) : NULL;
	if (job) {
		job = job->list_next;
	} else if (svc->last && svc->last->id > after) {
		for (job = svc->last; job->list_prev && job->list_prev->id > after; job = job->list_prev)
			;
	}
	if (job) {
		*id = job->id;
		r = 0;
	}
	pthread_mutex_unlock(&svc->lock);
	return r;
}

/* Under svc->lock. */
static void unlink_job(struct kfs_service *svc, struct kfs_job *job)
{
	struct kfs_job **link;

	for (link = &svc->by_name[hash_name(job->name)]; *link != job; link = &(*link)->next_by_name)
		;
	*link = job->next_by_name;
	for (link = &svc->by_id[hash_id(job->id)]; *link != job; link = &(*link)->next_by_id)
		;
	*link = job->next_by_id;
	if (job->list_prev)
		job->list_prev->list_next = job->list_next;
	else
		svc->first = job->list_next;
	if (job->list_next)
		job->list_next->list_prev = job->list_prev;
	else
		svc->last = job->list_prev;
	svc->jobs--;
	user_release_locked(svc, job->uid);
}

int remove_job(struct kfs_service *svc, uint64_t id, enum remove_how how)
{
	struct kfs_job *job;
	bool active;

	/* Its record goes with it, under state_lock, so that no save in progress brings it back. */
	if (svc->state_dir)
		pthread_mutex_lock(&svc->state_lock);
	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (!job) {
		pthread_mutex_unlock(&svc->lock);
		if (svc->state_dir)
			pthread_mutex_unlock(&svc->state_lock);
		return -ENOENT;
	}
	active = job->starting || job->state == KFS_QUEUED || job->state == KFS_RUNNING;
	if (how == REMOVE_NOW_OR_AT_THE_END && active)
		job->remove_when_ended = true;	/* on_done (or a failed start) removes it */
	if (active || (how == REMOVE_IF_UNTOUCHED && job->ever_written) ||
	    (how == REMOVE_IF_MARKED && !job->remove_when_ended)) {
		pthread_mutex_unlock(&svc->lock);
		if (svc->state_dir)
			pthread_mutex_unlock(&svc->state_lock);
		return -EBUSY;
	}
	unlink_job(svc, job);
	pthread_mutex_unlock(&svc->lock);
	if (svc->state_dir) {
		job_record_delete(svc, job);
		pthread_mutex_unlock(&svc->state_lock);
	}
	job_free(job);
	svc->on_change(id, svc->context);
	return 0;
}

int kfs_job_remove(struct kfs_service *svc, uint64_t id)
{
	return remove_job(svc, id, REMOVE_UNLESS_ACTIVE);
}

int kfs_job_autoremove(struct kfs_service *svc, uint64_t id)
{
	int r = remove_job(svc, id, REMOVE_NOW_OR_AT_THE_END);

	return r == -EBUSY ? 0 : r;
}

int kfs_job_remove_if_idle(struct kfs_service *svc, uint64_t id)
{
	return remove_job(svc, id, REMOVE_IF_UNTOUCHED);
}

/*
 * Under svc->lock: the view's pause, rate, hash and verify fields (the
 * verify progress of a running job is set already, from its counts).
 */
static void view_trust_locked(const struct kfs_job *job, struct kfs_job_view *view)
{
	bool final = kfs_state_final(job->state);

	view->paused = job->paused && !final;
	view->rate = job->rate;
	view->hashes = job->state == KFS_IDLE ? 0 : job->hashes;
	memset(view->digests, 0, sizeof(view->digests));
	view->hash_resumed_at = 0;
	if (job->resumed_at > 0 && !final) {
		/* This run hashes nothing: the sectors before it were read by an earlier daemon. */
		view->hash_state = PROTO_HASH_NONE;
		view->hash_resumed_at = job->resumed_at;
	} else if (!final) {
		view->hash_state = PROTO_HASH_PENDING;
	} else if (job->digests && (job->hashes_done & job->hashes) == job->hashes) {
		view->hash_state = PROTO_HASH_DONE;
		memcpy(view->digests, job->digests, sizeof(view->digests));
	} else {
		view->hash_state = PROTO_HASH_NONE;
		view->hash_resumed_at = job->resumed_at;
	}

	view->verify_from = 0;
	if (!(job->flags & KCOPYD_VERIFY) || job->state == KFS_IDLE) {
		view->verify = PROTO_VERIFY_NONE;
	} else if (!final) {
		if (view->verify != PROTO_VERIFY_RUNNING)
			view->verify = PROTO_VERIFY_PENDING;
	} else if (job->verified > 0) {
		view->verify = PROTO_VERIFY_OK;
		view->verify_from = job->resumed_at;
	} else {
		view->verify = job->verified < 0 ? PROTO_VERIFY_MISMATCH : PROTO_VERIFY_NOT_DONE;
	}
}

int kfs_job_view(struct kfs_service *svc, uint64_t id, struct kfs_job_view *view)
{
	int64_t now = clock_ns(CLOCK_MONOTONIC);
	struct kfs_job *job;

	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (!job) {
		pthread_mutex_unlock(&svc->lock);
		return -ENOENT;
	}
	view->id = job->id;
	snprintf(view->name, sizeof(view->name), "%s", job->name);
	view->uid = job->uid;
	view->gid = job->gid;
	view->state = job->state;
	view->generation = job->generation;
	view->created = (double)job->created_ns / 1e9;
	view->read_err = job->read_err;
	view->write_err = job->write_err;
	view->sectors_total = job->sectors_total;
	view->sectors_done = 0;
	view->sectors_before_run = job->resume_base;
	view->sectors_data = view->sectors_zero = view->sectors_offloaded = 0;
	view->checkpoint = 0;
	view->elapsed = 0;
	view->verify = PROTO_VERIFY_NONE;
	view->sectors_verified = view->sectors_verify_total = 0;
	if (job->run && job->run->handle) {
		struct kcopyd_counts counts;
		uint64_t engine_checkpoint;

		/*
		 * The checkpoint first: the engine adds a sub-job to the counts
		 * before it moves the checkpoint past it, so read in this order
		 * the checkpoint never passes the progress shown.  One snapshot
		 * of the counts, so that data + zero is that progress.
		 */
		kcopyd_job_checkpoint(job->run->handle, &engine_checkpoint);
		(void)kcopyd_job_counts(job->run->handle, &counts, sizeof(counts));
		view->sectors_done = job->resume_base + counts.sectors_done;
		view->sectors_data = counts.sectors_data;
		view->sectors_zero = counts.sectors_zero;
		view->sectors_offloaded = counts.sectors_offloaded;
		view->checkpoint = job->resume_base + engine_checkpoint;
		/* Verify's progress: read back and compared, summed over the destinations. */
		if ((job->flags & KCOPYD_VERIFY) && counts.phase != KCOPYD_PHASE_COPY) {
			view->verify = PROTO_VERIFY_RUNNING;
			view->sectors_verified = counts.sectors_verified;
			view->sectors_verify_total = counts.sectors_verify_total;
		}
	} else if (kfs_state_final(job->state)) {
		view->sectors_done = job->sectors_done;
		view->sectors_data = job->sectors_data;
		view->sectors_zero = job->sectors_zero;
		view->sectors_offloaded = job->sectors_offloaded;
		view->checkpoint = job->checkpoint;
	} else if (job->state == KFS_INTERRUPTED) {
		view->sectors_done = job->durable;
		view->checkpoint = job->durable;
	}
	if (job->state == KFS_QUEUED || job->state == KFS_RUNNING)
		view->elapsed = (double)(now - job->queued_ns) / 1e9;
	else if (kfs_state_final(job->state))
		view->elapsed = (double)(job->ended_ns - job->queued_ns) / 1e9;
	snprintf(view->error, sizeof(view->error), "%s", job_error_text(job));
	snprintf(view->rejected, sizeof(view->rejected), "%s", job->rejected ? job->rejected : "");
	view_trust_locked(job, view);
	pthread_mutex_unlock(&svc->lock);
	return 0;
}

int kfs_job_description(struct kfs_service *svc, uint64_t id, char *buf, size_t len)
{
	struct kfs_job *job;
	int r;

	pthread_mutex_lock(&svc->lock);
	job = find_by_id(svc, id);
	if (!job)
		r = -ENOENT;
	else
		r = snprintf(buf, len, "%s", job->description ? job->description : "");
	pthread_mutex_unlock(&svc->lock);
	return r;
}

/*
 * Under svc->lock: a job of @uid for a record being restored, entered in
 * the table, or NULL.  Only the table's size holds: what a user had before
 * comes back even if over --max-jobs-per-user (they can make no more).
 */
struct kfs_job *restore_job_locked(struct kfs_service *svc, uint64_t id, const char *name, uid_t uid)
{
	struct kfs_job *job;

	if (svc->jobs >= svc->max_objects || find_by_id(svc, id) || find_by_name(svc, name) ||
	    user_prepare_locked(svc, uid) < 0)
		return NULL;
	job = calloc(1, sizeof(*job) + strlen(name) + 1);
	if (!job)
		return NULL;
	job->id = id;
	job->uid = uid;
	strcpy(job->name, name);
	job->created_ns = clock_ns(CLOCK_REALTIME);
	job->queued_ns = job->ended_ns = clock_ns(CLOCK_MONOTONIC);
	job->ever_written = true;
	job_link_locked(svc, job);
	if (id >= svc->next_id)
		svc->next_id = id + 1;
	return job;
}
