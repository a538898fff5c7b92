/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metrics file at the top of a kcopydfs mount: the daemon's counters in
 * the Prometheus text exposition format 0.0.4 (doc/METRICS.md, kcopydfs(5)).
 * Aggregate numbers only: no label carries a job's name, owner or path, so
 * anyone who may read stats may read this.
 */
#ifndef KCOPYDFS_METRICS_H
#define KCOPYDFS_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kcopydfs/jobs.h"

/* Room for every enum kfs_state, counted by its value (a job's state is a uint8_t). */
#define KFS_METRICS_STATES 32
/*
 * The longest text kfs_render_metrics() writes, every number at its
 * largest (tests/test_metrics.c checks it): the front end keeps a read's
 * snapshot in a buffer of JOBSPEC_MAX_CANONICAL + 1 bytes, and metrics.c
 * asserts that this fits in it.
 */
#define KFS_METRICS_MAX 8192

/* What one read of the metrics file shows. */
struct kfs_metrics {
	/*
	 * Exactly what the stats file shows: one kfs_service_stats() call,
	 * thus the service's counters copied under its lock and the engine's
	 * from one kcopyd_client_stats() snapshot.
	 */
	struct kfs_stats stats;
	/*
	 * Jobs in each state now, as their state files say it, from one pass
	 * over the table under the lock: by enum kfs_state, but the paused
	 * ones, which are counted apart (a paused job keeps its state, queued,
	 * running or interrupted, and shows "paused" until it ends).
	 */
	uint64_t jobs_by_state[KFS_METRICS_STATES];
	uint64_t jobs_paused;
	struct timespec started;	/* when the daemon started, CLOCK_REALTIME */
};

/*
 * kfs_service_metrics() - take the numbers one read of the metrics file
 * shows: the stats of kfs_service_stats(), then the jobs in each state.
 * @started: when the daemon started (CLOCK_REALTIME), copied into @metrics.
 */
void kfs_service_metrics(struct kfs_service *svc, const struct timespec *started, struct kfs_metrics *metrics);

/*
 * kfs_render_metrics() - @metrics as Prometheus text (a pure function):
 * a HELP and a TYPE line for each family, then its samples; byte counts
 * are the engine's sectors times 512, times in seconds.
 * Return: the length of the whole text (snprintf-like: it was cut if that
 * is @len or more); at most KFS_METRICS_MAX - 1.
 */
int kfs_render_metrics(const struct kfs_metrics *metrics, char *buf, size_t len);

#endif /* KCOPYDFS_METRICS_H */
