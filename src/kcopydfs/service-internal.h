/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kcopydfs service's insides: the structs of the service, its jobs and
 * their runs, and what its files share.  Only those files include it; the
 * front end (fs.c, main.c) sees jobs.h.
 *
 *   service.c  create, shutdown, destroy, stats; the engine threads' credentials
 *   table.c    the job table: names, lookups, per-user limits, removal, views
 *   records.c  --state-dir: saving and deleting records, the checkpointer, restoring
 *   run.c      a job's run: its regions opened as its owner, checked and claimed
 *   start.c    ctl (start, resume, cancel, refusals) and the engine's callbacks
 *   render.c   status and stats text: pure functions
 *   metrics.c  the metrics file: stats and the jobs in each state, as Prometheus text
 *
 * The locking rules are stated once, on struct kfs_service below (and with
 * the front end's lock in doc/DESIGN.md); every function here that says
 * "Under svc->lock" expects its caller to hold it.
 */
#ifndef KCOPYDFS_SERVICE_INTERNAL_H
#define KCOPYDFS_SERVICE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#include "kcopydfs/jobs.h"
#include "proto/jobspec.h"

#define HASH_BUCKETS 4096u
#define USER_BUCKETS 256u

struct claim;			/* a claim on a destination block device (run.c) */

/* How many jobs (any state) a user has: one per user that has any. */
struct kfs_user {
	uid_t uid;
	unsigned int jobs;
	struct kfs_user *next;		/* hash chain */
};

/*
 * What a job holds from the start of a description until it ends: its
 * open regions, their claims and paths, and the engine's handle.  One
 * allocation sized to the job's regions; freed when the job ends, so a
 * finished job keeps none of it.
 */
struct kfs_run {
	struct kfs_service *svc;
	struct kfs_job *job;		/* whose run it is (the engine's context) */
	struct kcopyd_job *handle;	/* set by kcopyd_submit() under svc->lock, until the job ends */
	unsigned int region_count;	/* 1 + the number of destinations */
	unsigned int claimed_count;
	/*
	 * Held by the checkpointer while it flushes the destinations (without
	 * svc->lock), and taken by on_done before it frees the run, which
	 * thus waits for a flush in progress.
	 */
	pthread_mutex_t sync_lock;
	struct kcopyd_dev **devs;	/* [0]: source (NULL for zero), [1 + i]: dests */
	char **paths;			/* the same order; taken from the parsed description */
	dev_t *claimed;			/* destination block devices it holds a claim on */
};

/*
 * A job.  Its memory is what it uses: the name and the texts are sized to
 * fit, an error line is kept only for a job that failed, a refused write
 * only while there is one, and the regions only while it runs (->run).
 */
struct kfs_job {
	uint64_t id;
	uid_t uid;
	gid_t gid;
	struct kfs_job *next_by_name;	/* hash chain */
	struct kfs_job *next_by_id;	/* hash chain */
	struct kfs_job *list_prev, *list_next;	/* all jobs, ascending id */

	uint8_t state;			/* enum kfs_state */
	bool starting;			/* a description is being opened and checked */
	bool ever_written;		/* something was written to ctl */
	bool cancel_when_started;	/* "cancel" came while it was starting */
	bool remove_when_ended;		/* its clone-autoremove descriptor was closed before the end */
	bool cancelled_by_user;		/* "cancel" was written (a shutdown's cancel is not one) */
	bool stopped_by_shutdown;	/* queued or running at a shutdown: recorded as interrupted */
	uint64_t generation;
	int64_t created_ns;		/* CLOCK_REALTIME */
	int64_t queued_ns;		/* CLOCK_MONOTONIC */
	int64_t ended_ns;		/* CLOCK_MONOTONIC */
	char *error;			/* once final: what failed, NULL for "none" (see job_error_text) */
	char *rejected;			/* the last refused write to ctl, NULL for none */

	/* Set when started. */
	struct kfs_owner *owner;	/* who its regions are opened as (sized to its groups) */
	char *description;		/* canonical, with its newline */
	struct kfs_run *run;		/* while starting, queued or running */
	uint64_t sectors_total;
	/*
	 * With --state-dir: the sectors an earlier run made durable, where a
	 * resumed run starts (its regions moved on by it), and the prefix now
	 * durable on every destination (flushed, then recorded).
	 */
	uint64_t resume_base;
	uint64_t durable;

	/* Once final: what the engine said. */
	uint64_t sectors_done;
	/* Of this run (kcopyd_result.counts): the ones since resume_base. */
	uint64_t sectors_data, sectors_zero, sectors_offloaded;
	uint64_t checkpoint;		/* resume_base + the engine's checkpoint at the end */
	int read_err;
	unsigned int write_err;

	/*
	 * Hashes, verification, pause and rate limits.  flags, hashes and
	 * rate are set when it starts (from its description; rate follows
	 * ctl's rate=, and the description is rendered again with it, so a
	 * resume takes the rate last set); paused while "pause" holds it,
	 * kept through an interruption.  digests (malloc'd, only for a job
	 * with hashes that ended with them) and verified once final.
	 */
	bool paused;
	unsigned int flags;
	unsigned int hashes;
	uint64_t rate;
	unsigned int hashes_done;	/* result.hashes: the algorithms of digests, 0 if it stopped first */
	struct kcopyd_digest *digests;	/* KCOPYD_HASH_COUNT of them, or NULL */
	int verified;			/* result.verified */
	uint64_t resumed_at;		/* the sector this daemon resumed it at ("resume" of an interrupted job), 0 */

	char name[];			/* NUL-terminated, sized to fit */
};

/*
 * The service.  ->lock protects the job table and every field of every job
 * and the counters below.  Lock order: the FUSE layer's lock, then ->lock,
 * then ->claims_lock, then the engine's own lock (taken inside kcopyd_*
 * calls).  The engine calls on_start/on_done without its lock, and they
 * take ->lock; ->lock is never held while calling on_change or destroying
 * the client.
 */
struct kfs_service {
	struct kcopyd_client *kc;
	kfs_change_fn on_change;
	void *context;
	unsigned int max_jobs;
	unsigned int max_objects;	/* jobs that may exist in any state */
	unsigned int max_jobs_per_user;	/* jobs one user other than root may have */
	unsigned int max_objects_others;	/* jobs all users other than root may have together */
	unsigned int max_jobs_others;	/* of max_jobs, what users other than root may have queued or running */
	char *mountpoint;
	dev_t mount_dev;
	struct kfs_opener *opener;	/* opens regions as their owners (regions.h); read-only after create */
	enum kfs_nbd_policy nbd_policy;	/* --nbd; these three read-only after create */
	unsigned int nbd_connections;	/* sockets a job connects per NBD region (used with multi-conn) */
	unsigned int nbd_timeout_ms;

	pthread_mutex_t claims_lock;	/* the claims list; taken after ->lock, never before */
	struct claim *claims;

	/*
	 * --state-dir.  ->state_lock orders the writes of records, so that the
	 * last one written of a job shows its latest state: a record is taken
	 * from the job under ->lock while ->state_lock is held, and saved before
	 * it is released.  Taken before ->lock, never while holding it.
	 */
	struct kfs_state_dir *state_dir;	/* NULL without --state-dir */
	char *state_dir_path;		/* its path as given, for messages; NULL without --state-dir */
	pthread_mutex_t state_lock;
	unsigned int checkpoint_ms;
	pthread_t checkpointer;
	bool checkpointer_started;
	bool checkpointer_exit;		/* under ->lock */
	pthread_cond_t checkpointer_wake;	/* with ->lock, on CLOCK_MONOTONIC; signalled by on_start and destroy */

	pthread_mutex_t lock;
	struct kfs_job *by_name[HASH_BUCKETS];
	struct kfs_job *by_id[HASH_BUCKETS];
	struct kfs_job *first, *last;	/* ascending id */
	uint64_t next_id;
	bool shutting_down;
	unsigned int fates_logged;	/* jobs a shutdown stopped whose end was logged */
	unsigned int fates_unlogged;	/* and those past SHUTDOWN_FATES_LOGGED (start.c), not logged one by one */
	struct kfs_user *users[USER_BUCKETS];	/* every user that has a job, by uid */
	uint64_t jobs_others;		/* jobs of users other than root */
	uint64_t jobs_active_others;	/* of jobs_active, those of users other than root */
	uint64_t jobs, jobs_active, jobs_created;
	uint64_t jobs_done, jobs_failed, jobs_cancelled;
};

/* Small helpers */

/* A clock's time in nanoseconds: 8 bytes a stamp, where a timespec takes 16. */
static inline int64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * A reason, for an error: or rejected: line: one line, whatever went into
 * it.  Parts of a URI are decoded (socket=/x%0Astate:%20done) and libnbd
 * quotes them, so a control character is shown as '?', never taken as the
 * end of the line and the start of a line the writer made up.
 */
__attribute__((format(printf, 3, 4)))
static inline void set_text(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;
	char *c;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	for (c = buf; len && *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
}

static inline const char *errno_name(int error)
{
	const char *name = strerrorname_np(error < 0 ? -error : error);

	return name ? name : "E?";
}

/* The bytes of @owner that matter: its groups end it. */
static inline size_t owner_size(const struct kfs_owner *owner)
{
	return offsetof(struct kfs_owner, groups) + owner->group_count * sizeof(gid_t);
}

/* A copy of @owner sized to its groups, for the job to keep; NULL without memory. */
static inline struct kfs_owner *owner_dup(const struct kfs_owner *owner)
{
	struct kfs_owner *copy = malloc(owner_size(owner));

	if (copy)
		memcpy(copy, owner, owner_size(owner));
	return copy;
}

/* table.c */

/* Under svc->lock. */
struct kfs_job *find_by_id(struct kfs_service *svc, uint64_t id);
/* Free @job and its run (closing its regions, dropping its claims): not under svc->lock. */
void job_free(struct kfs_job *job);
/* Under svc->lock: the job's error line (see kcopydfs(5), STATUS). */
const char *job_error_text(const struct kfs_job *job);

enum remove_how {
	REMOVE_UNLESS_ACTIVE,		/* rmdir */
	REMOVE_IF_UNTOUCHED,		/* a clone descriptor closed */
	REMOVE_NOW_OR_AT_THE_END,	/* a clone-autoremove descriptor closed */
	REMOVE_IF_MARKED,		/* the end of a job whose autoremove descriptor is closed */
};

/*
 * Remove job @id, with its record (under ->state_lock), as @how allows.
 * Takes the locks itself.  Return: 0, -ENOENT or -EBUSY.
 */
int remove_job(struct kfs_service *svc, uint64_t id, enum remove_how how);
/* Under svc->lock: a job for a record being restored, entered in the table, or NULL. */
struct kfs_job *restore_job_locked(struct kfs_service *svc, uint64_t id, const char *name, uid_t uid);

/* records.c */

/* Open the state directory, restore its jobs, start the checkpointer.  Return: 0 or -errno. */
int state_start(struct kfs_service *svc, const struct kfs_config *config);
/* Write the record of job @id as it is now (--state-dir only).  Takes ->state_lock, then ->lock. */
void job_persist(struct kfs_service *svc, uint64_t id);
/* Under ->state_lock, not ->lock: delete @job's record (it is no longer in the table); a failure is logged. */
void job_record_delete(struct kfs_service *svc, const struct kfs_job *job);

/* run.c */

/* A run for a description of @num_dests destinations, every slot empty.  NULL without memory. */
struct kfs_run *run_alloc(struct kfs_service *svc, struct kfs_job *job, unsigned int num_dests);
/* Close what @run opened, drop its claims and free it.  Takes claims_lock; never under svc->lock. */
void run_free(struct kfs_run *run);
/*
 * Open @spec's regions as @owner into @run, settle and check them, and
 * render the canonical description (malloc'd).  Without svc->lock.
 * Return: 0, or -errno with the reason in @why.
 */
int prepare_job(struct kfs_service *svc, struct kfs_run *run, struct jobspec *spec,
		const struct kfs_owner *owner, const struct kfs_cred *cred, int root_fd, struct io_region *from,
		struct io_region *dests, char **canonical, char *why, size_t why_len);

/* start.c */

/* The engine's start_fn: a queued job begins to run. */
void on_start(void *context);
/* Under svc->lock: make an idle, interrupted, queued or running job end as cancelled. */
void job_cancel_locked(struct kfs_service *svc, struct kfs_job *job);

#endif /* KCOPYDFS_SERVICE_INTERNAL_H */
