/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kcopydfs service: jobs from idle to a final state on one libkcopyd
 * client.  See jobs.h; the locking rules are on struct kfs_service.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#ifdef HAVE_MALLINFO2
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kcopydfs/jobs.h"
#include "kcopydfs/jobspec.h"
#include "kcopydfs/log.h"
#include "kcopydfs/state.h"

#define HASH_BUCKETS 4096u
#define DEFAULT_MAX_JOBS 4096u
/*
 * Jobs that may exist in any state (or --max-jobs, if that is more): what
 * keeps the daemon within its memory bound, --pages x 4 KiB + 16 MiB, with
 * --max-jobs (4096) of them queued.  Measured with --pages 256 (see the
 * kcopydfs section of doc/DESIGN.md): the daemon itself takes 2 MiB, a
 * queued job about 2.6 KiB (1.9 KiB of it the engine's job), a finished
 * one about 240 bytes; 4096 queued and 12,288 finished peak at 15.5-16.3
 * MiB, too close to the bound, 4096 and 61,440 at 27 MiB.  With 12,288 in
 * all (8192 finished) the peak is 2 MiB under the bound, left for what is
 * not counted here (threads, libfuse, malloc).
 */
#define MAX_JOB_OBJECTS 12288u
#define DEFAULT_CHECKPOINT_MS 1000u
/* The filesystem uid of the engine's threads in a root daemon: the kernel's overflow uid, nobody. */
#define ENGINE_FSUID 65534u
/*
 * Jobs (any state) one user other than root may have at once: a twelfth of
 * the table, so that one user cannot take it all, and enough for any
 * client seen so far (the soak runs as root).  --max-jobs-per-user.
 */
#define DEFAULT_MAX_JOBS_PER_USER 1024u
/*
 * The part of the job table, and of --max-jobs, kept for root: users other
 * than root together get the rest (an eighth kept, as ext4 keeps 5% of its
 * blocks for root), so that root can still make, start and clean up jobs
 * when other users have taken all they may.
 */
#define ROOT_RESERVE_DIVISOR 8u
#define USER_BUCKETS 256u
/*
 * A shutdown logs what became of each job it stopped (see log_fate), up to
 * this many; the rest are counted in one line at the end, so that a full
 * table does not flood syslog.
 */
#define SHUTDOWN_FATES_LOGGED 256u

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
	int read_err;
	unsigned int write_err;

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
/*
 * A destination block device held with O_EXCL, so that nobody mounts it
 * or claims it while we write to it, and so that one already mounted is
 * refused.  Our own jobs share the claim: several jobs may write to
 * different parts of one device at once, as with the kernel's kcopyd.
 */
struct claim {
	dev_t rdev;
	int fd;
	unsigned int refs;
	struct claim *next;
};

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
	unsigned int fates_unlogged;	/* and those past SHUTDOWN_FATES_LOGGED, not logged one by one */
	struct kfs_user *users[USER_BUCKETS];	/* every user that has a job, by uid */
	uint64_t jobs_others;		/* jobs of users other than root */
	uint64_t jobs_active_others;	/* of jobs_active, those of users other than root */
	uint64_t jobs, jobs_active, jobs_created;
	uint64_t jobs_done, jobs_failed, jobs_cancelled;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

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

/* A clock's time in nanoseconds: 8 bytes a stamp, where a timespec takes 16. */
static int64_t clock_ns(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

__attribute__((format(printf, 3, 4)))
static void set_text(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static const char *errno_name(int error)
{
	const char *name = strerrorname_np(error < 0 ? -error : error);

	return name ? name : "E?";
}

/*
 * Records are the daemon's, but they are also written from the engine's
 * completion thread, whose filesystem uid is ENGINE_FSUID: these take the
 * daemon's own for the calling thread (the raw call), and give it back.
 */
static uid_t records_fsuid_begin(void)
{
	return (uid_t)syscall(SYS_setfsuid, geteuid());
}

static void records_fsuid_end(uid_t fsuid)
{
	syscall(SYS_setfsuid, fsuid);
}

/* The bytes of @owner that matter: its groups end it. */
static size_t owner_size(const struct kfs_owner *owner)
{
	return offsetof(struct kfs_owner, groups) + owner->group_count * sizeof(gid_t);
}

/* A copy of @owner sized to its groups, for the job to keep; NULL without memory. */
static struct kfs_owner *owner_dup(const struct kfs_owner *owner)
{
	struct kfs_owner *copy = malloc(owner_size(owner));

	if (copy)
		memcpy(copy, owner, owner_size(owner));
	return copy;
}

/* Under svc->lock. */
static struct kfs_job *find_by_id(struct kfs_service *svc, uint64_t id)
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

int kfs_name_valid(const char *name)
{
	size_t len = strlen(name), index;

	if (len == 0 || len > KFS_NAME_MAX || name[0] == '.')
		return 0;
	for (index = 0; index < len; index++) {
		char c = name[index];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------------------ */
/* The service                                                         */
/* ------------------------------------------------------------------ */

static void on_start(void *context);
static int state_start(struct kfs_service *svc, const struct kfs_config *config);

int kfs_groups_matter(struct kfs_service *svc, uid_t uid)
{
	/* A root writer's groups come with its capabilities, from its status (kfs_owner_of_writer()). */
	return !(uid == 0 && kfs_opener_overrides_modes(svc->opener));
}

/* The calling thread's capabilities, as engine_caps_lower() found them. */
struct saved_caps {
	bool valid;
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
};

/* Take CAP_FSETID and CAP_SYS_RESOURCE out of the calling thread's effective set (they stay permitted). */
static void engine_caps_lower(struct saved_caps *saved)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct lowered[_LINUX_CAPABILITY_U32S_3];
	static const unsigned int caps[] = { CAP_FSETID, CAP_SYS_RESOURCE };
	unsigned int index;

	saved->valid = syscall(SYS_capget, &header, saved->data) == 0;
	if (!saved->valid)
		return;
	memcpy(lowered, saved->data, sizeof(lowered));
	for (index = 0; index < sizeof(caps) / sizeof(caps[0]); index++)
		lowered[CAP_TO_INDEX(caps[index])].effective &= ~CAP_TO_MASK(caps[index]);
	if (syscall(SYS_capset, &header, lowered) < 0)
		kfs_log(LOG_WARNING, "cannot lower the engine's capabilities: %s", strerror(errno));
}

static void engine_caps_restore(const struct saved_caps *saved)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	if (!saved->valid)
		return;
	memcpy(data, saved->data, sizeof(data));
	(void)syscall(SYS_capset, &header, data);
}

int kfs_service_create(const struct kfs_config *config, kfs_change_fn on_change, void *context,
		       struct kfs_service **result)
{
	struct saved_caps saved_caps;
	struct kcopyd_config engine = config->engine;
	pthread_condattr_t wake_attr;
	struct kfs_service *svc;
	int r;

	svc = calloc(1, sizeof(*svc));
	if (!svc)
		return -ENOMEM;
	svc->on_change = on_change;
	svc->context = context;
	svc->max_jobs = config->max_jobs ? config->max_jobs : DEFAULT_MAX_JOBS;
	svc->max_objects = svc->max_jobs > MAX_JOB_OBJECTS ? svc->max_jobs : MAX_JOB_OBJECTS;
	svc->max_jobs_per_user = config->max_jobs_per_user ? config->max_jobs_per_user : DEFAULT_MAX_JOBS_PER_USER;
	svc->max_objects_others = svc->max_objects - svc->max_objects / ROOT_RESERVE_DIVISOR;
	svc->max_jobs_others = svc->max_jobs - svc->max_jobs / ROOT_RESERVE_DIVISOR;
	svc->mount_dev = config->mount_dev;
	svc->next_id = 1;
	r = kfs_opener_create(&svc->opener);
	if (r < 0)
		goto err_free_svc;
	if (config->mountpoint) {
		svc->mountpoint = strdup(config->mountpoint);
		if (!svc->mountpoint) {
			r = -ENOMEM;
			goto err_destroy_opener;
		}
	}
	pthread_mutex_init(&svc->lock, NULL);
	pthread_mutex_init(&svc->claims_lock, NULL);
	pthread_mutex_init(&svc->state_lock, NULL);
	/*
	 * The checkpointer's deadline is on CLOCK_MONOTONIC (a clock that an
	 * NTP step or settimeofday cannot move): its condition variable must
	 * measure on the same clock, or every wait returns at once.
	 */
	pthread_condattr_init(&wake_attr);
	pthread_condattr_setclock(&wake_attr, CLOCK_MONOTONIC);
	pthread_cond_init(&svc->checkpointer_wake, &wake_attr);
	pthread_condattr_destroy(&wake_attr);
	engine.start_fn = on_start;
	/*
	 * The engine's threads write every job's destinations.  They are made
	 * (a thread inherits both) with filesystem uid ENGINE_FSUID, so that no
	 * write takes the blocks a filesystem keeps for root (ext4 lets fsuid
	 * 0 have them, whatever the capabilities), and without CAP_FSETID and
	 * CAP_SYS_RESOURCE in their effective set, so that a write clears the
	 * setuid and setgid bits as the owner's own would, and quotas hold: a
	 * user's copy must not do what its own write could not.  Root's copies
	 * are held the same.  Only this thread changes (raw calls), and only
	 * for the creation: the FUSE workers keep them, since reading a root
	 * writer's /proc/PID/root is a ptrace access that needs the writer's
	 * permitted capabilities in the reader's effective set.
	 */
	if (geteuid() == 0)
		syscall(SYS_setfsuid, ENGINE_FSUID);
	engine_caps_lower(&saved_caps);
	r = kcopyd_client_create_config(&engine, &svc->kc);
	engine_caps_restore(&saved_caps);
	if (geteuid() == 0)
		syscall(SYS_setfsuid, 0);
	if (r < 0)
		goto err_destroy_lock;
	if (config->state_dir) {
		r = state_start(svc, config);
		if (r < 0) {
			/* Nothing runs yet: destroy frees what was restored. */
			kfs_service_destroy(svc);
			return r;
		}
	}
	*result = svc;
	return 0;

err_destroy_lock:
	pthread_cond_destroy(&svc->checkpointer_wake);
	pthread_mutex_destroy(&svc->state_lock);
	pthread_mutex_destroy(&svc->claims_lock);
	pthread_mutex_destroy(&svc->lock);
	free(svc->mountpoint);
err_destroy_opener:
	kfs_opener_destroy(svc->opener);
err_free_svc:
	free(svc);
	return r;
}

/* Take a claim on the block device open as @fd (the caller may open it); shared among our jobs. */
static int claim_get(struct kfs_service *svc, dev_t rdev, int fd)
{
	char proc_path[64];
	struct claim *claim;
	int r = 0;

	pthread_mutex_lock(&svc->claims_lock);
	for (claim = svc->claims; claim && claim->rdev != rdev; claim = claim->next)
		;
	if (claim) {
		claim->refs++;
		goto out;
	}
	claim = calloc(1, sizeof(*claim));
	if (!claim) {
		r = -ENOMEM;
		goto out;
	}
	/* Reopen what the writer opened, so the claim needs no second permission check. */
	snprintf(proc_path, sizeof(proc_path), "/proc/self/fd/%d", fd);
	claim->fd = open(proc_path, O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK);
	if (claim->fd < 0) {
		r = -errno;
		free(claim);
		goto out;
	}
	claim->rdev = rdev;
	claim->refs = 1;
	claim->next = svc->claims;
	svc->claims = claim;
out:
	pthread_mutex_unlock(&svc->claims_lock);
	return r;
}

static void claim_put(struct kfs_service *svc, dev_t rdev)
{
	struct claim **link, *claim;

	pthread_mutex_lock(&svc->claims_lock);
	for (link = &svc->claims; (claim = *link) && claim->rdev != rdev; link = &claim->next)
		;
	if (claim && --claim->refs == 0) {
		*link = claim->next;
		close(claim->fd);
		free(claim);
	}
	pthread_mutex_unlock(&svc->claims_lock);
}

/* A run for a description of @num_dests destinations, every slot empty.  NULL without memory. */
static struct kfs_run *run_alloc(struct kfs_service *svc, struct kfs_job *job, unsigned int num_dests)
{
	unsigned int region_count = num_dests + 1;
	struct kfs_run *run;

	run = calloc(1, sizeof(*run) + region_count * (sizeof(*run->devs) + sizeof(*run->paths)) +
				num_dests * sizeof(*run->claimed));
	if (!run)
		return NULL;
	run->svc = svc;
	run->job = job;
	run->region_count = region_count;
	pthread_mutex_init(&run->sync_lock, NULL);
	run->devs = (struct kcopyd_dev **)(run + 1);
	run->paths = (char **)(run->devs + region_count);
	run->claimed = (dev_t *)(run->paths + region_count);
	return run;
}

/* Close what @run opened, drop its claims and free it.  Takes claims_lock; never under svc->lock. */
static void run_free(struct kfs_run *run)
{
	unsigned int index;

	if (!run)
		return;
	kcopyd_job_release(run->handle);
	for (index = 0; index < run->region_count; index++) {
		kcopyd_dev_close(run->devs[index]);
		free(run->paths[index]);
	}
	for (index = 0; index < run->claimed_count; index++)
		claim_put(run->svc, run->claimed[index]);
	pthread_mutex_destroy(&run->sync_lock);
	free(run);
}

static void job_free(struct kfs_job *job)
{
	run_free(job->run);
	free(job->owner);
	free(job->error);
	free(job->rejected);
	free(job->description);
	free(job);
}

/* Under svc->lock: the job's error line (see kcopydfs(5), STATUS). */
static const char *job_error_text(const struct kfs_job *job)
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

/* Under svc->lock: make an idle, interrupted, queued or running job end as cancelled. */
static void job_cancel_locked(struct kfs_service *svc, struct kfs_job *job)
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

void kfs_service_shutdown(struct kfs_service *svc)
{
	struct kfs_job *job;
	uint64_t *changed;
	size_t count = 0, index;

	pthread_mutex_lock(&svc->lock);
	svc->shutting_down = true;
	changed = calloc(svc->jobs + 1, sizeof(*changed));
	for (job = svc->first; job; job = job->list_next) {
		enum kfs_state before = job->state;

		/* An interrupted job has no I/O to stop, and stays resumable. */
		if (job->state == KFS_INTERRUPTED)
			continue;
		/* With --state-dir a copy stopped by the shutdown is recorded as interrupted, not cancelled. */
		if (job->state == KFS_QUEUED || job->state == KFS_RUNNING || job->starting)
			job->stopped_by_shutdown = true;
		job_cancel_locked(svc, job);
		if (changed && job->state != before)
			changed[count++] = job->id;
	}
	pthread_mutex_unlock(&svc->lock);
	for (index = 0; index < count; index++)
		svc->on_change(changed[index], svc->context);
	free(changed);
}

void kfs_service_destroy(struct kfs_service *svc)
{
	struct kfs_user *user, *next_user;
	struct kfs_job *job, *next;
	unsigned int bucket;

	if (!svc)
		return;
	kfs_service_shutdown(svc);
	if (svc->checkpointer_started) {
		pthread_mutex_lock(&svc->lock);
		svc->checkpointer_exit = true;
		pthread_cond_signal(&svc->checkpointer_wake);
		pthread_mutex_unlock(&svc->lock);
		pthread_join(svc->checkpointer, NULL);
	}
	/* Waits for every job's completion routine, which needs svc->lock: not held here. */
	kcopyd_client_destroy(svc->kc);
	if (svc->fates_unlogged)
		kfs_log(LOG_NOTICE, "%u more jobs stopped by the shutdown are not listed: %s", svc->fates_unlogged,
			svc->state_dir ? "each is interrupted or ended as its record says" : "each is cancelled or ended");
	kfs_state_dir_close(svc->state_dir);
	pthread_mutex_destroy(&svc->state_lock);
	pthread_cond_destroy(&svc->checkpointer_wake);
	for (job = svc->first; job; job = next) {
		next = job->list_next;
		job_free(job);
	}
	for (bucket = 0; bucket < USER_BUCKETS; bucket++) {
		for (user = svc->users[bucket]; user; user = next_user) {
			next_user = user->next;
			free(user);
		}
	}
	pthread_mutex_destroy(&svc->claims_lock);
	pthread_mutex_destroy(&svc->lock);
	free(svc->mountpoint);
	free(svc->state_dir_path);
	kfs_opener_destroy(svc->opener);
	free(svc);
}

void kfs_service_stats(struct kfs_service *svc, struct kfs_stats *stats)
{
	pthread_mutex_lock(&svc->lock);
	stats->jobs = svc->jobs;
	stats->jobs_active = svc->jobs_active;
	stats->jobs_created = svc->jobs_created;
	stats->jobs_done = svc->jobs_done;
	stats->jobs_failed = svc->jobs_failed;
	stats->jobs_cancelled = svc->jobs_cancelled;
	stats->max_jobs = svc->max_jobs;
	pthread_mutex_unlock(&svc->lock);
	kcopyd_client_stats(svc->kc, &stats->engine);
	/*
	 * What is allocated, not what the allocator keeps: after a burst RSS
	 * stays up while the heap is back, so this is the number that shows a
	 * leak (the soak test compares it before and after).
	 */
	stats->heap_in_use = 0;
#ifdef HAVE_MALLINFO2
	{
		struct mallinfo2 info = mallinfo2();

		stats->heap_in_use = info.uordblks + info.hblkhd;
	}
#endif
}

/* ------------------------------------------------------------------ */
/* The job table                                                       */
/* ------------------------------------------------------------------ */

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

enum remove_how {
	REMOVE_UNLESS_ACTIVE,		/* rmdir */
	REMOVE_IF_UNTOUCHED,		/* a clone descriptor closed */
	REMOVE_NOW_OR_AT_THE_END,	/* a clone-autoremove descriptor closed */
	REMOVE_IF_MARKED,		/* the end of a job whose autoremove descriptor is closed */
};

static int remove_job(struct kfs_service *svc, uint64_t id, enum remove_how how)
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
		uid_t fsuid = records_fsuid_begin();
		int r = kfs_state_dir_delete(svc->state_dir, id);

		records_fsuid_end(fsuid);

		if (r < 0)
			kfs_log(LOG_ERR, "cannot remove the record of job %s: %s", job->name, strerror(-r));
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
	view->elapsed = 0;
	if (job->run && job->run->handle) {
		kcopyd_job_progress(job->run->handle, &view->sectors_done, NULL);
		view->sectors_done += job->resume_base;
	} else if (kfs_state_final(job->state)) {
		view->sectors_done = job->sectors_done;
	} else if (job->state == KFS_INTERRUPTED) {
		view->sectors_done = job->durable;
	}
	if (job->state == KFS_QUEUED || job->state == KFS_RUNNING)
		view->elapsed = (double)(now - job->queued_ns) / 1e9;
	else if (kfs_state_final(job->state))
		view->elapsed = (double)(job->ended_ns - job->queued_ns) / 1e9;
	snprintf(view->error, sizeof(view->error), "%s", job_error_text(job));
	snprintf(view->rejected, sizeof(view->rejected), "%s", job->rejected ? job->rejected : "");
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

/* ------------------------------------------------------------------ */
/* Records (--state-dir)                                               */
/* ------------------------------------------------------------------ */

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
	snprintf(record->state, sizeof(record->state), "%s",
		 job->stopped_by_shutdown && job->state == KFS_CANCELLED ? "interrupted" : kfs_state_name(job->state));
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
static void job_persist(struct kfs_service *svc, uint64_t id)
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
 * Under svc->lock: a job of @uid for a record being restored, entered in
 * the table, or NULL.  Only the table's size holds: what a user had before
 * comes back even if over --max-jobs-per-user (they can make no more).
 */
static struct kfs_job *restore_job_locked(struct kfs_service *svc, uint64_t id, const char *name, uid_t uid)
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
			job->durable = job->resume_base = record->checkpoint;
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
				job->state = KFS_INTERRUPTED;
			}
			restored = true;
		}
	}
	pthread_mutex_unlock(&svc->lock);
	if (!restored)
		kfs_log(LOG_WARNING, "record %llu.job not restored (its id or name is taken, or too many jobs)",
			(unsigned long long)id);
}

/* Open the state directory, restore its jobs, start the checkpointer.  Return: 0 or -errno. */
static int state_start(struct kfs_service *svc, const struct kfs_config *config)
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

/* ------------------------------------------------------------------ */
/* Starting a job                                                      */
/* ------------------------------------------------------------------ */

static bool path_on_mount(const struct kfs_service *svc, const char *path)
{
	size_t len;

	if (!svc->mountpoint)
		return false;
	len = strlen(svc->mountpoint);
	while (len > 1 && svc->mountpoint[len - 1] == '/')
		len--;
	return strncmp(path, svc->mountpoint, len) == 0 && (path[len] == '/' || path[len] == '\0');
}

static bool run_holds_claim(const struct kfs_run *run, dev_t rdev)
{
	unsigned int index;

	for (index = 0; index < run->claimed_count; index++)
		if (run->claimed[index] == rdev)
			return true;
	return false;
}

/*
 * Make a device of what kfs_open_as() gave (@fd, or -errno), as the daemon
 * itself: check what it is (a block device, or a regular file that is
 * storage, not a file of /proc or /sys), and claim a destination block
 * device (so a mounted one is refused with EBUSY).  On failure @fd is
 * closed and @why says which region and what.
 */
static int settle_region(struct kfs_service *svc, struct kfs_run *run, const char *key, const char *path,
			 bool writable, int fd, struct kcopyd_dev **dev, char *why, size_t why_len)
{
	struct stat st;
	int r;

	if (fd == -EDEADLK) {
		set_text(why, why_len, "%s=%s: is on the kcopydfs mount itself", key, path);
		return fd;
	}
	if (fd == -KFS_EFUSE) {
		set_text(why, why_len, "%s=%s: is on a FUSE filesystem: a process serves it and could hold the "
			 "daemon's threads, so only root's jobs may use one", key, path);
		return -EPERM;
	}
	if (fd < 0) {
		set_text(why, why_len, "%s=%s: %s", key, path, strerror(-fd));
		return fd;
	}
	if (fstat(fd, &st) < 0 || fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		r = -errno;
		close(fd);
		set_text(why, why_len, "%s=%s: %s", key, path, strerror(-r));
		return r;
	}
	if (st.st_dev == svc->mount_dev && svc->mountpoint) {
		close(fd);
		set_text(why, why_len, "%s=%s: is on the kcopydfs mount itself", key, path);
		return -EDEADLK;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		set_text(why, why_len, "%s=%s: neither a block device nor a regular file", key, path);
		return -EINVAL;
	}
	if (S_ISREG(st.st_mode) && (r = kfs_region_is_storage(fd)) <= 0) {
		close(fd);
		if (r == 0)
			r = -EINVAL;
		set_text(why, why_len, "%s=%s: %s", key, path,
			 r == -EINVAL ? "is on a pseudo filesystem (proc, sysfs, ...), not storage" : strerror(-r));
		return r;
	}
	if (writable && S_ISBLK(st.st_mode) && !run_holds_claim(run, st.st_rdev)) {
		r = claim_get(svc, st.st_rdev, fd);
		if (r < 0) {
			close(fd);
			set_text(why, why_len, "%s=%s: %s%s", key, path, strerror(-r),
				 r == -EBUSY ? " (mounted, or held exclusively)" : "");
			return r;
		}
		run->claimed[run->claimed_count++] = st.st_rdev;
	}
	r = kcopyd_dev_from_fd(fd, dev);
	if (r < 0)
		set_text(why, why_len, "%s=%s: %s", key, path, strerror(-r));
	return r;
}

/* The count of a region written without one. */
static uint64_t rest_of_device(const struct kcopyd_dev *dev, uint64_t sector)
{
	uint64_t sectors = kcopyd_dev_sectors(dev);

	return sector < sectors ? sectors - sector : 0;
}

/*
 * Open every region of @spec as @owner (from @root_fd, -1 for the daemon's
 * view) into @run, settle the counts, check the job as the engine will,
 * and render its canonical description into *@canonical (malloc'd).  Runs
 * without svc->lock: the run is not yet the job's, so no other thread sees
 * it.  The paths move from @spec to @run.
 */
static int prepare_job(struct kfs_service *svc, struct kfs_run *run, struct jobspec *spec,
		       const struct kfs_owner *owner, int root_fd, struct io_region *from, struct io_region *dests,
		       char **canonical, char *why, size_t why_len)
{
	char description[JOBSPEC_MAX_CANONICAL];
	const char *paths[KCOPYD_MAX_REGIONS + 1];
	bool writable[KCOPYD_MAX_REGIONS + 1];
	int fds[KCOPYD_MAX_REGIONS + 1];	/* [0]: source, [1 + i]: dests; an fd or -errno */
	int opened[KCOPYD_MAX_REGIONS + 1];	/* what kfs_open_as() gave, in the order of paths[] */
	int slot[KCOPYD_MAX_REGIONS + 1];	/* the region's place in paths[], or -1 if not opened */
	unsigned int index, count = 0;
	int r;

	/*
	 * Every region is opened as the owner at once (one helper process for
	 * the job); what follows works on the descriptors (a claim is taken
	 * as the daemon).  A path on the mount itself is not opened at all.
	 * Failures are reported in the order of the regions.
	 */
	for (index = 0; index <= spec->num_dests; index++) {
		const char *path = index == 0 ? spec->from.path : spec->dests[index - 1].path;

		fds[index] = index == 0 && spec->op != JOBSPEC_COPY ? -EBADF : -EDEADLK;
		slot[index] = -1;
		if (fds[index] == -EDEADLK && !path_on_mount(svc, path)) {
			slot[index] = (int)count;
			paths[count] = path;
			writable[count++] = index > 0;
		}
	}
	r = kfs_open_as(svc->opener, owner, root_fd, count, paths, writable, opened, why, why_len);
	if (r < 0)
		return r;
	for (index = 0; index <= spec->num_dests; index++)
		if (slot[index] >= 0)
			fds[index] = opened[slot[index]];

	if (spec->op == JOBSPEC_COPY) {
		r = settle_region(svc, run, "from", spec->from.path, false, fds[0], &run->devs[0], why, why_len);
		fds[0] = -EBADF;	/* settled: closed, or the device's */
		if (r < 0)
			goto err_close_fds;
		if (!spec->from.has_count) {
			spec->from.count = rest_of_device(run->devs[0], spec->from.sector);
			spec->from.has_count = true;
		}
		*from = (struct io_region){ run->devs[0], spec->from.sector, spec->from.count };
	}
	for (index = 0; index < spec->num_dests; index++) {
		struct jobspec_region *dest = &spec->dests[index];

		r = settle_region(svc, run, "to", dest->path, true, fds[1 + index], &run->devs[1 + index], why,
				  why_len);
		fds[1 + index] = -EBADF;
		if (r < 0)
			goto err_close_fds;
		if (!dest->has_count) {
			dest->count = spec->op == JOBSPEC_COPY ? spec->from.count
							       : rest_of_device(run->devs[1 + index], dest->sector);
			dest->has_count = true;
		}
		dests[index] = (struct io_region){ run->devs[1 + index], dest->sector, dest->count };
	}
	r = kcopyd_validate(spec->op == JOBSPEC_COPY ? from : NULL, spec->num_dests, dests, spec->flags, why,
			    (unsigned int)why_len);
	if (r < 0)
		return r;
	r = jobspec_render(spec, description, sizeof(description));
	if (r < 0) {
		set_text(why, why_len, "description too long to render");
		return r;
	}
	*canonical = strdup(description);
	if (!*canonical)
		return -ENOMEM;
	/* Kept for the error line at the end; jobspec_free() leaves what is taken. */
	if (spec->op == JOBSPEC_COPY) {
		run->paths[0] = spec->from.path;
		spec->from.path = NULL;
	}
	for (index = 0; index < spec->num_dests; index++) {
		run->paths[1 + index] = spec->dests[index].path;
		spec->dests[index].path = NULL;
	}
	return 0;

err_close_fds:
	/* The regions after the one that failed were opened but not settled. */
	for (index = 0; index <= spec->num_dests; index++)
		if (fds[index] >= 0)
			close(fds[index]);
	return r;
}

static void on_start(void *context)
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
	pthread_mutex_unlock(&svc->lock);

	if (state == KFS_CANCELLED && svc->state_dir)
		kfs_log(LOG_NOTICE, "job %s: interrupted at %llu of %llu sectors (%llu durable), resumable: start "
			"kcopydfs again with --state-dir %s and write \"resume\" to jobs/%s/ctl", name, done, total,
			durable, svc->state_dir_path, name);
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
	bool remove, log_end = false;

	/*
	 * With --state-dir, flush the destinations before the end is known to
	 * anyone, so that a record that says how far it got is true.  (The
	 * handle is set before the lock the submitter holds is dropped, and
	 * on_done cannot run before that: see kfs_job_ctl.)
	 */
	if (svc->state_dir) {
		pthread_mutex_lock(&svc->lock);
		kcopyd_job_checkpoint(run->handle, &engine_checkpoint);
		pthread_mutex_unlock(&svc->lock);
		for (index = 1; index < run->region_count; index++) {
			int r = kcopyd_dev_sync(run->devs[index]);

			if (r < 0 && sync_error == 0) {
				sync_error = r;
				sync_dest = index - 1;
			}
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
	if (result.read_err || result.write_err || result.error) {
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
	if (strncmp(failure, "none", 4) != 0)
		job->error = strdup(failure);
	job->read_err = result.read_err;
	job->write_err = result.write_err;
	job->sectors_done = job->resume_base + result.sectors_done;
	if (svc->state_dir && !sync_error)
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
		set_text(why, why_len, "job %s is %s: only an interrupted job can be resumed", job->name,
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
	/* "resume" runs the job's own description again, from its durable checkpoint. */
	resuming = is_word(text, len, "resume");

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
		r = prepare_job(svc, run, &spec, &owner, root_fd, &from, dests, &canonical, why, sizeof(why));
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
		job->run = run;
		r = kcopyd_submit(svc->kc, is_copy ? &from : NULL, spec.num_dests, dests, spec.flags, on_done, run,
				  &run->handle);
		if (r < 0) {
			job->run = NULL;
			set_text(why, sizeof(why), "the engine refused the job: %s", strerror(-r));
		}
	}
	job->starting = false;
	if (r == 0) {
		job->state = KFS_QUEUED;
		if (resuming) {
			/* It keeps its own description and size; this run covers the rest. */
			free(canonical);
			job->resume_base = resume_from;
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

/* ------------------------------------------------------------------ */
/* Rendering                                                           */
/* ------------------------------------------------------------------ */

const char *kfs_state_name(enum kfs_state state)
{
	static const char *const names[] = {
		[KFS_IDLE] = "idle",	 [KFS_QUEUED] = "queued", [KFS_RUNNING] = "running",
		[KFS_DONE] = "done",	 [KFS_FAILED] = "failed", [KFS_CANCELLED] = "cancelled",
		[KFS_INTERRUPTED] = "interrupted",
	};

	return state <= KFS_INTERRUPTED ? names[state] : "unknown";
}

int kfs_state_final(enum kfs_state state)
{
	return state == KFS_DONE || state == KFS_FAILED || state == KFS_CANCELLED;
}

int kfs_render_state(const struct kfs_job_view *view, char *buf, size_t len)
{
	return snprintf(buf, len, "%s\n", kfs_state_name(view->state));
}

int kfs_render_status(const struct kfs_job_view *view, char *buf, size_t len)
{
	/* Only this run's sectors were copied in elapsed: not those a resume started from. */
	uint64_t this_run = view->sectors_done > view->sectors_before_run ? view->sectors_done - view->sectors_before_run : 0;
	double rate = view->elapsed > 0 ? (double)this_run * KCOPYD_SECTOR_SIZE / view->elapsed : 0;

	return snprintf(buf, len,
			"state: %s\n"
			"progress: %llu/%llu\n"
			"read_err: %d\n"
			"write_err: 0x%x\n"
			"error: %s\n"
			"bytes_per_sec: %.0f\n"
			"elapsed: %.3f\n"
			"owner: %u:%u\n"
			"rejected: %s\n",
			kfs_state_name(view->state), (unsigned long long)view->sectors_done,
			(unsigned long long)view->sectors_total, view->read_err, view->write_err, view->error, rate,
			view->elapsed, (unsigned int)view->uid, (unsigned int)view->gid,
			view->rejected[0] ? view->rejected : "none");
}

int kfs_render_stats(const struct kfs_stats *stats, char *buf, size_t len)
{
	return snprintf(buf, len,
			"jobs: %llu\n"
			"jobs_active: %llu\n"
			"jobs_total: %llu\n"
			"jobs_done: %llu\n"
			"jobs_failed: %llu\n"
			"jobs_cancelled: %llu\n"
			"jobs_max: %u\n"
			"sectors_read: %llu\n"
			"sectors_written: %llu\n"
			"read_errors: %llu\n"
			"write_errors: %llu\n"
			"pages_total: %u\n"
			"pages_in_use: %u\n"
			"pages_peak: %u\n"
			"subjob_sectors: %u\n"
			"depth: %u\n"
			"heap_in_use: %llu\n",
			(unsigned long long)stats->jobs, (unsigned long long)stats->jobs_active,
			(unsigned long long)stats->engine.jobs_total, (unsigned long long)stats->jobs_done,
			(unsigned long long)stats->jobs_failed, (unsigned long long)stats->jobs_cancelled,
			stats->max_jobs, (unsigned long long)stats->engine.sectors_read,
			(unsigned long long)stats->engine.sectors_written,
			(unsigned long long)stats->engine.read_errors, (unsigned long long)stats->engine.write_errors,
			stats->engine.pages_total, stats->engine.pages_in_use, stats->engine.pages_peak,
			stats->engine.subjob_sectors, stats->engine.depth, (unsigned long long)stats->heap_in_use);
}

static int append_failure(char *buf, size_t len, size_t used, const char *what, const char *path, int dest_index,
			  const struct kcopyd_failure *failure)
{
	char where[32] = "";

	if (dest_index >= 0)
		snprintf(where, sizeof(where), " (to #%d)", dest_index);
	if (used >= len)
		return 0;	/* the line is full: the first failures are the ones that show */
	return snprintf(buf + used, len - used, "%s%s error on %s%s sectors %llu+%llu: %s (%s)",
			used ? "; " : "", what, path ? path : "?", where, (unsigned long long)failure->sector,
			(unsigned long long)failure->count, errno_name(failure->error), strerror(-failure->error));
}

int kfs_render_failure(const struct kcopyd_result *result, const char *source_path, const char *const *dest_paths,
		       char *buf, size_t len)
{
	size_t used = 0;
	int dest_index;

	if (len)
		buf[0] = '\0';
	if (result->read.error)
		used += (size_t)append_failure(buf, len, used, "read", source_path, -1, &result->read);
	for (dest_index = 0; dest_index < KCOPYD_MAX_REGIONS; dest_index++)
		if (result->write[dest_index].error)
			used += (size_t)append_failure(buf, len, used, "write", dest_paths[dest_index], dest_index,
						       &result->write[dest_index]);
	if (used == 0)
		return snprintf(buf, len, "%s", result->cancelled ? "none (cancelled)" : "none");
	return (int)used;
}
