/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The FUSE front end of kcopydfs: control-file operations into service calls. */
#ifndef KCOPYDFS_FS_H
#define KCOPYDFS_FS_H

#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include "kcopydfs/jobs.h"

struct kfs_fs;

/* kfs_fs_create() - the front end's state; attach the service with kfs_fs_attach(). */
int kfs_fs_create(struct kfs_fs **result);

/* The low-level operations, with a struct kfs_fs as userdata. */
extern const struct fuse_lowlevel_ops kfs_fs_ops;

/* kfs_fs_attach() - the service that requests go to (created after daemonizing). */
void kfs_fs_attach(struct kfs_fs *fs, struct kfs_service *svc);

/* kfs_fs_on_change() - the service's kfs_change_fn: answer waiters, wake pollers. */
void kfs_fs_on_change(uint64_t job_id, void *context);

/* kfs_fs_destroy() - free what is left: waiters get EINTR, poll handles are dropped. */
void kfs_fs_destroy(struct kfs_fs *fs);

#endif /* KCOPYDFS_FS_H */
