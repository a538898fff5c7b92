/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metrics file: the numbers of the stats file, the jobs in each state
 * and what the daemon was started with, as Prometheus text (exposition
 * format 0.0.4), for a scraper or node_exporter's textfile collector.
 *
 * Taking the numbers needs the service's lock (kfs_service_metrics());
 * rendering them is a pure function (kfs_render_metrics()), tested
 * without a mount (tests/test_metrics.c).  The front end renders the text
 * at a read at offset 0 and serves later offsets from that snapshot, as
 * for stats, so a reader that reads in pieces gets one consistent text.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kcopydfs/metrics.h"
#include "kcopydfs/service-internal.h"

/* The front end's snapshot of a read (fs.c, SNAPSHOT_MAX) must hold the longest text. */
_Static_assert(KFS_METRICS_MAX <= JOBSPEC_MAX_CANONICAL + 1, "the metrics text must fit a read's snapshot");
_Static_assert(KFS_INTERRUPTED < KFS_METRICS_STATES, "every job state must have a slot");

/*
 * Under svc->lock: does @job's state file say "paused"?  Pause (issue 17)
 * keeps a paused job in its state (queued, running, or interrupted when it
 * came back paused from its record) with a flag beside it, and the state
 * file shows "paused" while the job has not ended: kfs_view_state_name()'s rule.
 */
static bool job_paused(const struct kfs_job *job)
{
	return job->paused && !kfs_state_final(job->state);
}

void kfs_service_metrics(struct kfs_service *svc, const struct timespec *started, struct kfs_metrics *metrics)
{
	const struct kfs_job *job;

	memset(metrics, 0, sizeof(*metrics));
	kfs_service_stats(svc, &metrics->stats);
	metrics->started = *started;
	/*
	 * A second hold of the lock, not the one kfs_service_stats() took:
	 * the counters stay exactly what stats computes, and the gauges are
	 * consistent among themselves (they add up to the jobs that existed at
	 * one instant).  A pass over at most the table's size (12288 jobs by
	 * default), each a byte read.
	 */
	pthread_mutex_lock(&svc->lock);
	for (job = svc->first; job; job = job->list_next) {
		if (job_paused(job))
			metrics->jobs_paused++;
		else if (job->state < KFS_METRICS_STATES)
			metrics->jobs_by_state[job->state]++;
	}
	pthread_mutex_unlock(&svc->lock);
}

/* Text appended to a buffer, snprintf-like: ->used counts what would have been written. */
struct text_out {
	char *buf;
	size_t len;
	size_t used;
};

__attribute__((format(printf, 2, 3)))
static void out_printf(struct text_out *out, const char *fmt, ...)
{
	size_t room = out->used < out->len ? out->len - out->used : 0;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vsnprintf(room ? out->buf + out->used : NULL, room, fmt, ap);
	va_end(ap);
	if (r > 0)
		out->used += (size_t)r;
}

/* A family's HELP and TYPE lines. */
static void family(struct text_out *out, const char *name, const char *type, const char *help)
{
	out_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family of one sample without labels. */
static void single(struct text_out *out, const char *name, const char *type, const char *help, uint64_t value)
{
	family(out, name, type, help);
	out_printf(out, "%s %llu\n", name, (unsigned long long)value);
}

/*
 * A byte count from sectors: exact as an integer while it fits in 64 bits
 * (16 EiB); past that as a float, which is what a scraper keeps anyway.
 */
static void bytes_of_sectors(struct text_out *out, const char *name, const char *help, uint64_t sectors)
{
	family(out, name, "counter", help);
	if (sectors <= UINT64_MAX / KCOPYD_SECTOR_SIZE)
		out_printf(out, "%s %llu\n", name, (unsigned long long)(sectors * KCOPYD_SECTOR_SIZE));
	else
		out_printf(out, "%s %.17g\n", name, (double)sectors * KCOPYD_SECTOR_SIZE);
}

int kfs_render_metrics(const struct kfs_metrics *metrics, char *buf, size_t len)
{
	const struct kfs_stats *stats = &metrics->stats;
	const struct kcopyd_stats *engine = &stats->engine;
	struct text_out out = { .buf = buf, .len = len };
	unsigned int state;

	if (len)
		buf[0] = '\0';
	/*
	 * Label values are fixed words (the version, an engine's name, a
	 * state's name): none needs escaping, and none is a user's.
	 */
	family(&out, "kcopyd_build_info", "gauge",
	       "The kcopydfs version and the I/O engine of its local files and devices; always 1.");
	out_printf(&out, "kcopyd_build_info{version=\"%s\",io_engine=\"%s\"} 1\n", PACKAGE_VERSION,
		   kcopyd_io_engine_name(engine->io_engine));
	family(&out, "kcopyd_start_time_seconds", "gauge", "When the daemon started, in seconds since the Unix epoch.");
	out_printf(&out, "kcopyd_start_time_seconds %lld.%03ld\n", (long long)metrics->started.tv_sec,
		   metrics->started.tv_nsec / 1000000);

	/* Jobs */
	family(&out, "kcopyd_jobs", "gauge",
	       "Jobs that exist now, by state (one being started by a write to its ctl is still idle).");
	for (state = 0; state < KFS_METRICS_STATES; state++) {
		const char *name = kfs_state_name((enum kfs_state)state);

		/* Every state the service names, 0 included, so that a series never vanishes. */
		if (strcmp(name, "unknown") != 0)
			out_printf(&out, "kcopyd_jobs{state=\"%s\"} %llu\n", name,
				   (unsigned long long)metrics->jobs_by_state[state]);
		if (state == KFS_RUNNING)
			out_printf(&out, "kcopyd_jobs{state=\"paused\"} %llu\n",
				   (unsigned long long)metrics->jobs_paused);
	}
	single(&out, "kcopyd_jobs_max", "gauge", "The limit on jobs queued and running at once (--max-jobs).",
	       stats->max_jobs);
	single(&out, "kcopyd_jobs_created_total", "counter",
	       "Jobs made (mkdir in jobs/, or an open of clone) since the daemon started.", stats->jobs_created);
	single(&out, "kcopyd_jobs_started_total", "counter",
	       "Job descriptions accepted and handed to the copy engine since the daemon started (stats jobs_total).",
	       engine->jobs_total);
	family(&out, "kcopyd_jobs_ended_total", "counter",
	       "Jobs that ended in each final state since the daemon started, removed ones included "
	       "(stats jobs_done, jobs_failed, jobs_cancelled; cancelled idle jobs included).");
	out_printf(&out, "kcopyd_jobs_ended_total{state=\"done\"} %llu\n", (unsigned long long)stats->jobs_done);
	out_printf(&out, "kcopyd_jobs_ended_total{state=\"failed\"} %llu\n", (unsigned long long)stats->jobs_failed);
	out_printf(&out, "kcopyd_jobs_ended_total{state=\"cancelled\"} %llu\n",
		   (unsigned long long)stats->jobs_cancelled);

	/* Bytes, from the engine's sectors */
	bytes_of_sectors(&out, "kcopyd_read_bytes_total",
			 "Bytes read successfully from sources (stats sectors_read times 512).", engine->sectors_read);
	bytes_of_sectors(&out, "kcopyd_written_bytes_total",
			 "Bytes written successfully to destinations, once per destination: as data, as zeros, "
			 "offloaded, or skipped on a zero destination (stats sectors_written times 512).",
			 engine->sectors_written);
	bytes_of_sectors(&out, "kcopyd_zeroed_bytes_total",
			 "Of the bytes written, those of zero ranges: zeroed, written from the zero page, or skipped "
			 "with dest_zero (stats sectors_zero times 512).",
			 engine->sectors_zero);
	bytes_of_sectors(&out, "kcopyd_offloaded_bytes_total",
			 "Of the bytes written, those copied by copy_file_range(2) "
			 "(stats sectors_offloaded times 512).",
			 engine->sectors_offloaded);
	bytes_of_sectors(&out, "kcopyd_hashed_bytes_total",
			 "Source bytes digested by jobs with hash=, each byte once whatever the algorithms "
			 "(stats sectors_hashed times 512).",
			 engine->sectors_hashed);
	bytes_of_sectors(&out, "kcopyd_verified_bytes_total",
			 "Destination bytes read back and compared by jobs with flags=verify "
			 "(stats sectors_verified times 512).",
			 engine->sectors_verified);

	/* Errors and fallbacks */
	single(&out, "kcopyd_read_errors_total", "counter", "Failed reads of sources, in sub-jobs (stats read_errors).",
	       engine->read_errors);
	single(&out, "kcopyd_write_errors_total", "counter",
	       "Failed writes to destinations, one per destination of a sub-job (stats write_errors).",
	       engine->write_errors);
	single(&out, "kcopyd_verify_errors_total", "counter",
	       "Destinations of jobs that did not read back as the source was read, one per destination and job "
	       "(stats verify_errors).",
	       engine->verify_errors);
	single(&out, "kcopyd_zero_fallbacks_total", "counter",
	       "Zero ranges written from the zero page because the destination could not zero (stats zero_fallbacks).",
	       engine->zero_fallbacks);
	single(&out, "kcopyd_offload_fallbacks_total", "counter",
	       "Ranges copied through the buffers because copy_file_range(2) was refused (stats offload_fallbacks).",
	       engine->offload_fallbacks);

	/* Rate limit */
	single(&out, "kcopyd_rate_limit_bytes_per_second", "gauge",
	       "The daemon's limit on the bytes all its jobs read per second (--rate), 0 for none "
	       "(stats rate, the word none for 0).",
	       engine->rate);
	family(&out, "kcopyd_throttled_seconds_total", "counter",
	       "Time jobs ready to start a sub-job waited for the rate limits, summed over jobs "
	       "(stats throttled_ns).");
	out_printf(&out, "kcopyd_throttled_seconds_total %llu.%09llu\n",
		   (unsigned long long)(engine->throttled_ns / 1000000000),
		   (unsigned long long)(engine->throttled_ns % 1000000000));

	/* Buffers and memory */
	single(&out, "kcopyd_pages_budget", "gauge", "The I/O buffer budget, in 4096-byte pages (stats pages_total).",
	       engine->pages_total);
	single(&out, "kcopyd_pages_in_use", "gauge",
	       "I/O buffer pages held by sub-jobs in flight now (stats pages_in_use).", engine->pages_in_use);
	single(&out, "kcopyd_pages_peak", "gauge",
	       "The most I/O buffer pages ever held at once since the daemon started (stats pages_peak).",
	       engine->pages_peak);
	single(&out, "kcopyd_subjob_size_bytes", "gauge", "The size of a sub-job (stats subjob_sectors times 512).",
	       (uint64_t)engine->subjob_sectors * KCOPYD_SECTOR_SIZE);
	single(&out, "kcopyd_subjob_depth", "gauge", "Sub-jobs each job keeps in flight at most (stats depth).",
	       engine->depth);
	single(&out, "kcopyd_heap_bytes", "gauge",
	       "Bytes the daemon has allocated now, 0 if unknown (stats heap_in_use).", stats->heap_in_use);
	return out.used > (size_t)INT32_MAX ? INT32_MAX : (int)out.used;
}
