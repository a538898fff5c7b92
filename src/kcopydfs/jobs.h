/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The kcopydfs service: the table of jobs, their life from idle to a final
 * state, and the engine client that runs them.  It knows nothing of FUSE:
 * the FUSE layer (fs.c) turns control-file operations into these calls and
 * renders snapshots as text with the pure functions at the end.
 *
 * Jobs are named by a number that is never reused (their id) and by a
 * name (the mkdir name, or the id in decimal for clone jobs).
 */
#ifndef KCOPYDFS_JOBS_H
#define KCOPYDFS_JOBS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "kcopyd.h"
#include "kcopydfs/names.h"
#include "kcopydfs/regions.h"
#include "proto/status.h"

enum kfs_state {
	KFS_IDLE,
	KFS_QUEUED,
	KFS_RUNNING,
	KFS_DONE,
	KFS_FAILED,
	KFS_CANCELLED,
	/*
	 * With --state-dir: a job that was queued or running when the daemon
	 * stopped (killed, crashed, or shut down), restored from its record.
	 * Not final: "resume" written to ctl finishes it from its checkpoint.
	 */
	KFS_INTERRUPTED,
};

/* Everything the front end shows of a job, copied out under the lock. */
struct kfs_job_view {
	uint64_t id;
	char name[KFS_NAME_MAX + 1];
	uid_t uid;
	gid_t gid;
	enum kfs_state state;
	uint64_t generation;		/* bumped on every change a poller should see */
	uint64_t sectors_done;		/* from the job's start, earlier runs included */
	/*
	 * Of sectors_done, what earlier runs made durable before this run
	 * started (a resumed job's checkpoint), 0 for a job never resumed:
	 * this run copied sectors_done - sectors_before_run in elapsed.
	 */
	uint64_t sectors_before_run;
	uint64_t sectors_total;
	/*
	 * How this run's finished sectors were written (kcopyd_job_counts()
	 * while it runs, the result's counts once it ended; all 0 before it
	 * starts and for an interrupted job): sectors_data + sectors_zero ==
	 * sectors_done - sectors_before_run; sectors_offloaded is of sectors_data.
	 */
	uint64_t sectors_data;
	uint64_t sectors_zero;
	uint64_t sectors_offloaded;
	/*
	 * The engine's checkpoint from the job's start, earlier runs included:
	 * every sector below it is written to every destination (not
	 * necessarily flushed).  An interrupted job's is its durable one.
	 */
	uint64_t checkpoint;
	int read_err;
	unsigned int write_err;
	double elapsed;			/* seconds since this run was queued (until it ended) */
	double created;			/* CLOCK_REALTIME seconds */
	char error[KFS_ERROR_MAX];	/* "none", or what failed, where, with the errno name */
	char rejected[KFS_ERROR_MAX];	/* the last refused write to ctl, or "" */
	/*
	 * Added with hashes, verification, pause and rate limits: what the
	 * status's rate:, hash: and verify: lines say (proto/status.h), and
	 * whether "pause" holds it (a queued, running or interrupted job:
	 * its state then reads "paused").
	 */
	bool paused;
	uint64_t rate;			/* bytes per second, 0: none */
	unsigned int hashes;		/* KCOPYD_HASH_* bits of hash= */
	enum proto_hash_state hash_state;
	uint64_t hash_resumed_at;
	struct kcopyd_digest digests[KCOPYD_HASH_COUNT];
	enum proto_verify verify;
	uint64_t sectors_verified, sectors_verify_total, verify_from;
};

/* Which NBD regions the daemon takes (--nbd). */
enum kfs_nbd_policy {
	KFS_NBD_ANY,		/* TCP and Unix sockets (the default) */
	KFS_NBD_UNIX,		/* only Unix sockets: nothing leaves the machine */
	KFS_NBD_NONE,		/* none */
};

struct kfs_config {
	struct kcopyd_config engine;	/* its rate is --rate, the daemon's total */
	unsigned int max_jobs;		/* jobs queued or running at once */
	unsigned int max_jobs_per_user;	/* jobs (any state) a user other than root may have; 0: 1024 */
	const char *mountpoint;		/* regions under it are refused */
	dev_t mount_dev;		/* st_dev of the mount, to refuse regions on it */
	const char *state_dir;		/* --state-dir: where job records live; NULL: nothing is written */
	unsigned int checkpoint_ms;	/* how often running jobs are checkpointed; 0: 1000 */
	enum kfs_nbd_policy nbd_policy;
	unsigned int nbd_connections;	/* per NBD region, with multi-conn; 0: KCOPYD_NBD_DEFAULT_CONNECTIONS */
	unsigned int nbd_timeout_ms;	/* 0: KCOPYD_NBD_DEFAULT_TIMEOUT_MS */
};

struct kfs_stats {
	uint64_t jobs;			/* jobs that exist (any state) */
	uint64_t jobs_active;		/* queued or running */
	uint64_t jobs_created;		/* ever */
	uint64_t jobs_done, jobs_failed, jobs_cancelled;
	unsigned int max_jobs;
	uint64_t heap_in_use;		/* bytes the daemon has malloc'd now (mallinfo2), 0 if unknown */
	struct kcopyd_stats engine;
};

struct kfs_service;

/*
 * Called whenever a job changed (state, progress at the end, error line) or
 * was removed, after the service's lock was dropped, from whatever thread
 * made the change (a FUSE worker or the engine's completion thread).
 */
typedef void (*kfs_change_fn)(uint64_t job_id, void *context);

/*
 * kfs_service_create() - start the engine; with config->state_dir, restore
 * the jobs recorded there (queued or running ones as interrupted, a damaged
 * record as a failed job saying why) and start the checkpointer.
 * Return: 0 or -errno (-EBUSY: another daemon holds the state directory).
 */
int kfs_service_create(const struct kfs_config *config, kfs_change_fn on_change, void *context,
		       struct kfs_service **result);

/*
 * kfs_service_shutdown() - refuse new jobs, cancel every idle, queued and
 * running one.  Returns at once; jobs end as their in-flight I/O finishes.
 */
void kfs_service_shutdown(struct kfs_service *svc);

/* kfs_service_destroy() - wait for every job to end, stop the engine, free. */
void kfs_service_destroy(struct kfs_service *svc);

/*
 * kfs_job_create() - a new idle job owned by @uid:@gid.
 * @name: the job's name, or NULL for the next free number (clone).
 *
 * The table holds at most max_objects jobs (12288, or --max-jobs if more).
 * A user other than root may own at most --max-jobs-per-user of them (1024
 * by default), and all such users together at most max_objects less an
 * eighth, which is kept for root; root (uid 0) is held only to the table.
 * Return: 0 and *@id; -ENAMETOOLONG for a name over KFS_NAME_MAX bytes;
 * -EINVAL for another bad name; -EEXIST; -ESHUTDOWN; -ENOMEM; -EDQUOT when
 * @uid already owns its --max-jobs-per-user jobs; -ENOSPC when the table
 * is full, or (for @uid other than 0) the part of it other users may take.
 */
int kfs_job_create(struct kfs_service *svc, const char *name, uid_t uid, gid_t gid, uint64_t *id);

/* kfs_job_find() - the id of the job called @name.  Return: 0 or -ENOENT. */
int kfs_job_find(struct kfs_service *svc, const char *name, uint64_t *id);

/*
 * kfs_job_next() - the smallest job id above @after, for listing in order.
 * Return: 0 and *@id, or -ENOENT when there is none.
 */
int kfs_job_next(struct kfs_service *svc, uint64_t after, uint64_t *id);

/* kfs_job_view() - copy a job's state.  Return: 0 or -ENOENT. */
int kfs_job_view(struct kfs_service *svc, uint64_t id, struct kfs_job_view *view);

/*
 * kfs_job_description() - the canonical description of a started job
 * ("" while idle), into @buf.  Return: its length, or -ENOENT.
 */
int kfs_job_description(struct kfs_service *svc, uint64_t id, char *buf, size_t len);

/*
 * kfs_job_ctl() - a write to the job's ctl file: a job description (starts
 * an idle job), "cancel", "pause" (a queued or running job starts no more
 * sub-jobs), "resume" (continues a paused job, or finishes an interrupted
 * one from its checkpoint) or "rate=BYTES" (a queued, running, paused or
 * interrupted job's rate limit, from its next sub-job on).  Only the job's owner may write (-EPERM for anyone else,
 * root included, and the job is not touched).  A description's regions are
 * opened as @cred, with exactly its rights (regions.h); a resume opens
 * them as the owner recorded when the job started, in that owner's view
 * (-ESTALE when @cred cannot show that view).
 * Return: 0; or -errno, with the reason kept as the job's "rejected" line
 * (and its error line while idle): -EPERM, -ESTALE, -EINVAL, -E2BIG, -ENOENT, -EACCES,
 * -ERANGE, -EBUSY (already started, or a device in use), -EAGAIN (job
 * limit: --max-jobs queued or running, or, for a job not root's, the part
 * of --max-jobs that users other than root may take: all but an eighth),
 * -EDEADLK (a region on the kcopydfs mount), -ESHUTDOWN; for pause,
 * resume and rate=: -EINVAL (a job in a state the word does not apply to:
 * pause of an idle, interrupted or finished job, resume of one neither
 * paused nor interrupted, rate= of an idle or finished one; a rate that
 * jobspec_parse_rate() refuses), -EALREADY (pause of a paused job),
 * -EBUSY (a job whose description is being opened).  A refused word
 * changes nothing.
 */
int kfs_job_ctl(struct kfs_service *svc, uint64_t id, const char *text, size_t len,
		const struct kfs_cred *cred);

/*
 * kfs_job_may_write() - may a writer with @uid write to the job's ctl?
 * Only its owner may (root included: see kcopydfs(8) SECURITY).
 * Return: 0, -EPERM, or -ENOENT.
 */
int kfs_job_may_write(struct kfs_service *svc, uint64_t id, uid_t uid);

/*
 * kfs_job_reject() - record a write to the job's ctl that the front end
 * refused before it became a command (a line too long to be one, a line
 * without its newline at close): @why becomes the job's "rejected" line,
 * with the name of @error after it (and its error line while idle), as for
 * a refused description, and pollers are told.
 * Return: @error (a -errno), also when the job is gone.
 */
int kfs_job_reject(struct kfs_service *svc, uint64_t id, int error, const char *why);

/*
 * kfs_job_remove() - remove an idle or finished job.
 * Return: 0; -ENOENT; -EBUSY while queued or running.
 */
int kfs_job_remove(struct kfs_service *svc, uint64_t id);

/*
 * kfs_job_remove_if_idle() - remove the job if nothing was ever written to
 * it (a clone fd closed without a description).  Return: 0, -ENOENT or -EBUSY.
 */
int kfs_job_remove_if_idle(struct kfs_service *svc, uint64_t id);

/*
 * kfs_job_autoremove() - a clone-autoremove descriptor was closed: remove
 * the job now if it is idle or has ended, else when it ends (after its
 * waiters had the final status).  Return: 0 or -ENOENT.
 */
int kfs_job_autoremove(struct kfs_service *svc, uint64_t id);

/*
 * kfs_groups_matter() - whether the supplementary groups of a writer with
 * @uid can change what opening its regions allows: not for uid 0 when the
 * daemon runs as root with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (the
 * open then bypasses every mode check), so the front end need not read
 * them (a read of /proc/PID/task/TID/status per write).  Return: 0 or 1.
 */
int kfs_groups_matter(struct kfs_service *svc, uid_t uid);

void kfs_service_stats(struct kfs_service *svc, struct kfs_stats *stats);

/* kfs_service_io_engine() - the engine's I/O engine and why (kcopyd_client_io_engine()). */
unsigned int kfs_service_io_engine(struct kfs_service *svc, char *why, size_t why_len);

/* ---- rendering: pure functions, each returns the length written (snprintf-like) ---- */

const char *kfs_state_name(enum kfs_state state);
/* The state a view shows: "paused" for a paused job that has not ended, else kfs_state_name(). */
const char *kfs_view_state_name(const struct kfs_job_view *view);
/* 1 for done, failed and cancelled. */
int kfs_state_final(enum kfs_state state);
int kfs_render_state(const struct kfs_job_view *view, char *buf, size_t len);
/*
 * kfs_render_status() - the text of a job's status file.  bytes_per_sec is
 * what this run copied (sectors_done - sectors_before_run, in bytes) over
 * elapsed, so a resumed job's rate leaves out what earlier runs copied.
 * The lines: state, progress, read_err, write_err, error, bytes_per_sec,
 * elapsed, owner, rejected, then sectors_data, sectors_zero,
 * sectors_offloaded (this run's) and checkpoint, then rate, one hash line
 * per algorithm and verify (kcopydfs(5), STATUS).
 */
int kfs_render_status(const struct kfs_job_view *view, char *buf, size_t len);
int kfs_render_stats(const struct kfs_stats *stats, char *buf, size_t len);
/* "read error on PATH sectors S+C: EIO (Input/output error)" and so on, "none" if no error. */
int kfs_render_failure(const struct kcopyd_result *result, const char *source_path,
		       const char *const *dest_paths, char *buf, size_t len);

#endif /* KCOPYDFS_JOBS_H */
