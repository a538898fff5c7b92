/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kcopydfs service as a whole: create (the engine's client, whose
 * threads get lowered credentials, and with --state-dir the records), the
 * shutdown that cancels every job, destroy, and the stats.  The locking
 * rules are on struct kfs_service (service-internal.h).
 */
#include "config.h"

#include <errno.h>
#ifdef HAVE_MALLINFO2
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kcopydfs/log.h"
#include "kcopydfs/service-internal.h"
#include "kcopydfs/state.h"

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
	svc->nbd_policy = config->nbd_policy;
	svc->nbd_connections = config->nbd_connections ? config->nbd_connections : KCOPYD_NBD_DEFAULT_CONNECTIONS;
	svc->nbd_timeout_ms = config->nbd_timeout_ms ? config->nbd_timeout_ms : KCOPYD_NBD_DEFAULT_TIMEOUT_MS;
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

unsigned int kfs_service_io_engine(struct kfs_service *svc, char *why, size_t why_len)
{
	return kcopyd_client_io_engine(svc->kc, why, why_len);
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
