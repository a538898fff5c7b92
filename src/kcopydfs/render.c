/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The text of a job's state and status files, of the stats file and of a
 * failed job's error line: pure functions of what they are given (a view
 * copied out under the lock, stats, an engine result), with no lock and
 * no service, so that they are tested without a mount (tests/test_render.c).
 */
#include "config.h"

#include <stdio.h>

#include "kcopydfs/service-internal.h"

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
			"rejected: %s\n"
			/* Added with sparse copies: after the first nine, which readers may count on. */
			"sectors_data: %llu\n"
			"sectors_zero: %llu\n"
			"sectors_offloaded: %llu\n"
			"checkpoint: %llu\n",
			kfs_state_name(view->state), (unsigned long long)view->sectors_done,
			(unsigned long long)view->sectors_total, view->read_err, view->write_err, view->error, rate,
			view->elapsed, (unsigned int)view->uid, (unsigned int)view->gid,
			view->rejected[0] ? view->rejected : "none", (unsigned long long)view->sectors_data,
			(unsigned long long)view->sectors_zero, (unsigned long long)view->sectors_offloaded,
			(unsigned long long)view->checkpoint);
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
			"heap_in_use: %llu\n"
			/* Added with sparse copies, at the end. */
			"sectors_zero: %llu\n"
			"sectors_offloaded: %llu\n"
			"zero_fallbacks: %llu\n"
			"offload_fallbacks: %llu\n",
			(unsigned long long)stats->jobs, (unsigned long long)stats->jobs_active,
			(unsigned long long)stats->engine.jobs_total, (unsigned long long)stats->jobs_done,
			(unsigned long long)stats->jobs_failed, (unsigned long long)stats->jobs_cancelled,
			stats->max_jobs, (unsigned long long)stats->engine.sectors_read,
			(unsigned long long)stats->engine.sectors_written,
			(unsigned long long)stats->engine.read_errors, (unsigned long long)stats->engine.write_errors,
			stats->engine.pages_total, stats->engine.pages_in_use, stats->engine.pages_peak,
			stats->engine.subjob_sectors, stats->engine.depth, (unsigned long long)stats->heap_in_use,
			(unsigned long long)stats->engine.sectors_zero, (unsigned long long)stats->engine.sectors_offloaded,
			(unsigned long long)stats->engine.zero_fallbacks,
			(unsigned long long)stats->engine.offload_fallbacks);
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
