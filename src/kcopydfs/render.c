/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The text of a job's state and status files, of the stats file and of a
 * failed job's error line: pure functions.  The status text and the error
 * line are src/proto/status.c's, which kcopy --via parses back; here a
 * job's view is only handed to it of what they are given (a view
 * copied out under the lock, stats, an engine result), with no lock and
 * no service, so that they are tested without a mount (tests/test_render.c).
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "kcopydfs/service-internal.h"
#include "proto/status.h"

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

const char *kfs_view_state_name(const struct kfs_job_view *view)
{
	return view->paused && !kfs_state_final(view->state) ? "paused" : kfs_state_name(view->state);
}

int kfs_render_state(const struct kfs_job_view *view, char *buf, size_t len)
{
	return snprintf(buf, len, "%s\n", kfs_view_state_name(view));
}

int kfs_render_status(const struct kfs_job_view *view, char *buf, size_t len)
{
	/* Only this run's sectors were copied in elapsed: not those a resume started from. */
	uint64_t this_run = view->sectors_done > view->sectors_before_run ? view->sectors_done - view->sectors_before_run : 0;
	struct proto_status status = {
		.state = kfs_view_state_name(view),
		.sectors_done = view->sectors_done,
		.sectors_total = view->sectors_total,
		.read_err = view->read_err,
		.write_err = view->write_err,
		.error = view->error,
		.bytes_per_sec = view->elapsed > 0 ? (double)this_run * KCOPYD_SECTOR_SIZE / view->elapsed : 0,
		.elapsed = view->elapsed,
		.uid = (unsigned int)view->uid,
		.gid = (unsigned int)view->gid,
		.rejected = view->rejected,
		.has_counts = true,
		.sectors_data = view->sectors_data,
		.sectors_zero = view->sectors_zero,
		.sectors_offloaded = view->sectors_offloaded,
		.has_checkpoint = true,
		.checkpoint = view->checkpoint,
		.has_rate = true,
		.rate = view->rate,
		.hashes = view->hashes,
		.hash_state = view->hash_state,
		.hash_resumed_at = view->hash_resumed_at,
		.has_verify = true,
		.verify = view->verify,
		.sectors_verified = view->sectors_verified,
		.sectors_verify_total = view->sectors_verify_total,
		.verify_from = view->verify_from,
	};

	memcpy(status.digests, view->digests, sizeof(status.digests));
	return proto_status_render(&status, buf, len);
}

int kfs_render_stats(const struct kfs_stats *stats, char *buf, size_t len)
{
	char rate[24] = "none";	/* the daemon's --rate: a word when there is none, as io_engine is a word */

	if (stats->engine.rate)
		snprintf(rate, sizeof(rate), "%llu", (unsigned long long)stats->engine.rate);
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
			"offload_fallbacks: %llu\n"
			/* Added with the io_uring engine. */
			"io_engine: %s\n"
			/* Added with hashes, verification, pause and rate limits. */
			"sectors_hashed: %llu\n"
			"sectors_verified: %llu\n"
			"verify_errors: %llu\n"
			"jobs_paused: %llu\n"
			"throttled_ns: %llu\n"
			"rate: %s\n",
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
			(unsigned long long)stats->engine.offload_fallbacks,
			kcopyd_io_engine_name(stats->engine.io_engine),
			(unsigned long long)stats->engine.sectors_hashed, (unsigned long long)stats->engine.sectors_verified,
			(unsigned long long)stats->engine.verify_errors, (unsigned long long)stats->engine.jobs_paused,
			(unsigned long long)stats->engine.throttled_ns, rate);
}

int kfs_render_failure(const struct kcopyd_result *result, const char *source_path, const char *const *dest_paths,
		       char *buf, size_t len)
{
	return proto_failure_render(result, source_path, dest_paths, buf, len);
}
