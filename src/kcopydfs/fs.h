/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The FUSE front end of kcopydfs: control-file operations into service calls. */
#ifndef KCOPYDFS_FS_H
#define KCOPYDFS_FS_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <stdbool.h>

#include "kcopydfs/jobs.h"

struct kfs_fs;

/*
 * kfs_fs_create() - the front end's state; attach the service with
 * kfs_fs_attach().  @single_threaded: the loop runs one thread (-s), so
 * writes to ctl get threads of their own.  Return: 0 or -ENOMEM.
 */
int kfs_fs_create(bool single_threaded, struct kfs_fs **result);

/* kfs_fs_drain() - wait for writes to ctl still being handled; call before destroying the service. */
void kfs_fs_drain(struct kfs_fs *fs);

/* The low-level operations, with a struct kfs_fs as userdata. */
extern const struct fuse_lowlevel_ops kfs_fs_ops;

/* kfs_fs_attach() - the service that requests go to (created after daemonizing). */
void kfs_fs_attach(struct kfs_fs *fs, struct kfs_service *svc);

/* kfs_fs_on_change() - the service's kfs_change_fn: answer waiters, wake pollers. */
void kfs_fs_on_change(uint64_t job_id, void *context);

/* kfs_fs_destroy() - free what is left: waiters get EINTR, poll handles are dropped. */
void kfs_fs_destroy(struct kfs_fs *fs);

#endif /* KCOPYDFS_FS_H */
