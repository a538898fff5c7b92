/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A job's run: its regions opened as its owner (regions.c does the
 * opening), checked to be storage and not on the mount, destination block
 * devices claimed (shared among our jobs, under svc->claims_lock), counts
 * settled and the description made canonical; and freed when the job
 * ends.  Nothing here takes svc->lock: a run being prepared is no other
 * thread's yet.  The rules are on struct kfs_service (service-internal.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcopydfs/service-internal.h"

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
struct kfs_run *run_alloc(struct kfs_service *svc, struct kfs_job *job, unsigned int num_dests)
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
void run_free(struct kfs_run *run)
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
int prepare_job(struct kfs_service *svc, struct kfs_run *run, struct jobspec *spec,
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
	 * TEMPORARY (branch grammar): the grammar takes NBD URIs, but opening
	 * them as the writer is the lead's part of issue 15 (regions.c); until
	 * then a URI is refused here, never opened as a path.
	 */
	for (index = 0; index <= spec->num_dests; index++) {
		const struct jobspec_region *region = index == 0 ? &spec->from : &spec->dests[index - 1];

		if ((index > 0 || spec->op == JOBSPEC_COPY) && region->is_uri) {
			set_text(why, why_len, "%s=\"%.200s\": NBD regions are not opened by this daemon yet",
				 index == 0 ? "from" : "to", region->path);
			return -EPROTONOSUPPORT;
		}
	}

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
