/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * via.h: kcopy --via MOUNT, the job run by a kcopydfs daemon through the
 * files of its mount (kcopydfs(5)) instead of by the engine in-process.
 * Plain file I/O only: kcopy does not link libfuse.
 */
#ifndef KCOPY_VIA_H
#define KCOPY_VIA_H

#include "kcopy.h"

/*
 * via_check_mount() - check that @mount is a kcopydfs mount, by its
 * version file.
 * Return: 0; -EINVAL if it is not one (reported, a usage error); the
 * -errno of reading it otherwise (reported: a mount whose daemon died
 * gives -ENOTCONN).
 */
int via_check_mount(const char *mount);

/*
 * via_run_job() - run the job of @state in the daemon mounted at
 * @state->via: write its description (absolute paths, every region as
 * PATH:SECTOR+COUNT) to a descriptor of clone-autoremove, follow its status
 * for the progress bar, cancel it through that descriptor on SIGINT or
 * SIGTERM, and read its final status into @outcome.  Closing the
 * descriptor at the end removes the job from the mount.
 * Return: 0 once the job ran (whatever its result); the -errno with which
 * the daemon refused the description (reported with the daemon's reason:
 * -EINVAL and -ERANGE for regions it refuses); the -errno of another step
 * (reported).
 */
int via_run_job(struct kcopy *state, struct run_outcome *outcome);

#endif /* KCOPY_VIA_H */
