/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What a job may be called, and how long its error line may be: what the
 * service (jobs.h) and its records (state.h) both need, in a header of its
 * own so that neither of those includes the other.
 */
#ifndef KCOPYDFS_NAMES_H
#define KCOPYDFS_NAMES_H

#define KFS_NAME_MAX 64
#define KFS_ERROR_MAX 1024

/* kfs_name_valid() - 1 if @name is 1-64 of [A-Za-z0-9._-] not starting with '.'. */
int kfs_name_valid(const char *name);

#endif /* KCOPYDFS_NAMES_H */
