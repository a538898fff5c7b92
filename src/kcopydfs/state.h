/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Job records for kcopydfs --state-dir: what a job needs to outlive the
 * daemon (its id, name, owner, state, canonical description, size, the
 * checkpoint that is durable on every destination, and its error line),
 * one small text file per job in the state directory.
 *
 * A record is written atomically: a temporary file, fdatasync, rename over
 * the old one, fsync of the directory.  After a crash or a power loss each
 * record is the old one or the new one, never a mix.  Each record ends
 * with a checksum of everything before it, so a file damaged some other way
 * (truncated, edited, bit rot) is recognised and refused with a reason.
 *
 * groups, caps and view are who the job's regions are opened as (see
 * regions.h): a resume opens them as that owner, in that view ("daemon",
 * or "mnt:INO root:DEV:INO" for another mount namespace and root).  A
 * version 1 record (written before they were recorded) parses without
 * them, and its job cannot be resumed; its job's later records say
 * "view: unknown".
 *
 * Rendering and parsing are pure functions; the directory functions do only
 * file I/O (and log, through kfs_log(), the files they skip).  Nothing here
 * knows of FUSE or of the engine.
 *
 * The directory is trusted only if nobody but the daemon's user can change
 * what is in it: see kfs_state_dir_open().  Even so, every file in it is
 * reached by openat(2) on the directory's descriptor, never through a
 * symbolic link (O_NOFOLLOW); a temporary record is a new file of a random
 * name (O_EXCL); and a record that is not a regular file of the daemon's
 * user is skipped, not read.
 *
 *   kcopydfs-state 2
 *   id: 42
 *   name: backup
 *   owner: 0:0
 *   groups: 0 6
 *   caps: 000001ffffffffff
 *   view: daemon
 *   state: running
 *   total: 2048
 *   checkpoint: 1024
 *   error: none
 *   description: copy from=/dev/loop0:0+2048 to=/dev/loop1:0+2048
 *   sum: 5e1f0a0c9d3b7a21
 */
#ifndef KCOPYDFS_STATE_H
#define KCOPYDFS_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/jobspec.h"
#include "kcopydfs/names.h"
#include "kcopydfs/regions.h"

#define KFS_STATE_NAME_MAX 16		/* "interrupted" and the others */
/* The longest record: the fixed lines, an error line and a canonical description. */
#define KFS_RECORD_MAX (512 + KFS_MAX_GROUPS * 11 + KFS_ERROR_MAX + JOBSPEC_MAX_CANONICAL)

struct kfs_record {
	uint64_t id;
	char name[KFS_NAME_MAX + 1];
	uid_t uid;
	gid_t gid;
	bool identity_known;		/* the three below were recorded (version 2, view not "unknown") */
	uint64_t caps;
	struct kfs_view view;
	unsigned int group_count;
	gid_t groups[KFS_MAX_GROUPS];
	char state[KFS_STATE_NAME_MAX];	/* the job's state name when it was written */
	uint64_t sectors_total;
	uint64_t checkpoint;		/* sectors from the start, durable on every destination */
	char error[KFS_ERROR_MAX];	/* the job's error line, "none" if none */
	char description[JOBSPEC_MAX_CANONICAL];	/* canonical, one line, no newline */
};

/*
 * kfs_record_render() - @record as the text of its file, checksum last.
 * Return: the length written (without the NUL), or -ENOSPC if @len is too
 * small, -EINVAL if a field holds a newline or the name is not valid.
 */
int kfs_record_render(const struct kfs_record *record, char *buf, size_t len);

/*
 * kfs_record_parse() - the record in @text (@len bytes, not NUL-terminated).
 * Return: 0 and *@record filled; -EINVAL with a one-line reason in @why
 * for anything else: a bad header or version, a missing, repeated or
 * unknown line, a number out of range, a checkpoint past the total, a bad
 * name, a checksum that does not match, a file cut short.
 */
int kfs_record_parse(const char *text, size_t len, struct kfs_record *record, char *why, size_t why_len);

struct kfs_state_dir;

/*
 * kfs_state_dir_open() - use @dir as the state directory.
 *
 * @dir's parent must exist; @dir itself is made with mode 0700 if missing
 * (its parents are not made).  It must be a directory, not a symbolic link,
 * owned by the daemon's effective user and writable by nobody else (no
 * group or other write bit).  Each of its parents up to / (as realpath(3)
 * resolves them) must belong to root or to the daemon's user, and must not
 * be writable by its group or others unless it is sticky, as /tmp is.
 * sshd's StrictModes asks the same; ACLs are not looked at.
 *
 * Then takes an exclusive flock(2) on DIR/lock so that two daemons never
 * share one (anything but a regular file of the daemon's user by that name
 * is removed, not followed), and removes the temporary files a crash left.
 *
 * @why (@why_len bytes) gets a one-line reason on failure, naming the path.
 * Return: 0; -EPERM for an owner or a mode refused as above; -ELOOP for a
 * @dir that is a symbolic link; -ENOTDIR; -EBUSY if another process holds
 * the directory; or the -errno of realpath(3), mkdir(2), open(2) or flock(2).
 */
int kfs_state_dir_open(const char *dir, char *why, size_t why_len, struct kfs_state_dir **result);

/* kfs_state_dir_close() - release the lock and free.  NULL is a no-op. */
void kfs_state_dir_close(struct kfs_state_dir *state);

/*
 * kfs_state_dir_save() - write @record as DIR/ID.job, atomically and durably.
 * Saves of different ids may run at once; the caller keeps saves of one
 * id from overlapping.  Return: 0 or the -errno of the failed step.
 */
int kfs_state_dir_save(struct kfs_state_dir *state, const struct kfs_record *record);

/* kfs_state_dir_delete() - remove the record of job @id.  Return: 0 (also if there was none) or -errno. */
int kfs_state_dir_delete(struct kfs_state_dir *state, uint64_t id);

/*
 * Called by kfs_state_dir_load() for each record file: @record when it parsed
 * (and its id matches its file name), else NULL and @why says what is
 * wrong with it; @id is the id its file name gives.
 */
typedef void (*kfs_record_fn)(uint64_t id, const struct kfs_record *record, const char *why, void *context);

/*
 * kfs_state_dir_load() - call @fn for every DIR/ID.job, in ascending id order.
 * A name that is not a regular file owned by the daemon's user (a symbolic
 * link, a FIFO, a directory, another user's file) is logged and skipped:
 * @fn does not hear of it.
 * Return: the number of files handed to @fn, or -errno if the directory
 * cannot be read (a file that cannot be read is reported to @fn as damaged).
 */
int kfs_state_dir_load(struct kfs_state_dir *state, kfs_record_fn fn, void *context);

#endif /* KCOPYDFS_STATE_H */
