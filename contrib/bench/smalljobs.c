/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * smalljobs: how many small copy jobs per second, through the library or
 * through a kcopydfs mount.
 *
 * Build: part of the tree (`make` builds contrib/bench/smalljobs).
 * Run:   smalljobs lib SRC DST [JOBS] [SECTORS] [THREADS]
 *        smalljobs mount MOUNTPOINT SRC DST [JOBS] [SECTORS] [THREADS]
 *        smalljobs mount-rmdir MOUNTPOINT SRC DST [JOBS] [SECTORS] [THREADS]
 *
 * Each job copies SECTORS (default 8: 4 KiB) from SRC to DST at its own
 * offset.  "lib" submits with kcopyd_copy() from THREADS threads (default 4)
 * and counts completions.  "mount" has THREADS threads each doing, per job,
 * what issue 4's client does (clone, write, wait): open clone-autoremove,
 * read the id, write the description, read the descriptor again at offset
 * 0 (which waits for the end and gives the final status), close it (the
 * job goes with it, so nothing is left behind).  "mount-rmdir" is the
 * client of plain clone that tidies up itself: open clone, read the id,
 * write, open jobs/ID/wait, read it, close both, rmdir the job.  Prints
 * jobs/s.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kcopyd.h"

struct bench {
	const char *mountpoint, *src, *dst;
	bool rmdir;			/* mount-rmdir: plain clone, then rmdir of each job */
	unsigned long jobs, sectors, threads;
	struct kcopyd_client *kc;
	struct kcopyd_dev *src_dev, *dst_dev;
	atomic_ulong next_job;
	atomic_ulong failures;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned long completed;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void job_done(int read_err, unsigned int write_err, void *context)
{
	struct bench *bench = context;

	if (read_err || write_err)
		atomic_fetch_add(&bench->failures, 1);
	pthread_mutex_lock(&bench->lock);
	if (++bench->completed == bench->jobs)
		pthread_cond_signal(&bench->cond);
	pthread_mutex_unlock(&bench->lock);
}

static void *lib_submitter(void *arg)
{
	struct bench *bench = arg;
	unsigned long job;

	while ((job = atomic_fetch_add(&bench->next_job, 1)) < bench->jobs) {
		struct io_region from = { bench->src_dev, (job * bench->sectors) % kcopyd_dev_sectors(bench->src_dev),
					  bench->sectors };
		struct io_region to = { bench->dst_dev, job * bench->sectors, bench->sectors };
		int r = kcopyd_copy(bench->kc, &from, 1, &to, 0, job_done, bench);

		if (r < 0) {
			fprintf(stderr, "kcopyd_copy: %s\n", strerror(-r));
			exit(1);
		}
	}
	return NULL;
}

static void *mount_client(void *arg)
{
	struct bench *bench = arg;
	char path[4096], text[4096], id[32];
	unsigned long job;

	while ((job = atomic_fetch_add(&bench->next_job, 1)) < bench->jobs) {
		int clone_fd, wait_fd, len;
		ssize_t got;

		snprintf(path, sizeof(path), "%s/%s", bench->mountpoint, bench->rmdir ? "clone" : "clone-autoremove");
		clone_fd = open(path, O_RDWR);
		got = clone_fd < 0 ? -1 : read(clone_fd, id, sizeof(id) - 1);
		if (got <= 0) {
			perror("clone");
			exit(1);
		}
		id[got - 1] = '\0';
		len = snprintf(text, sizeof(text), "copy from=%s:%lu+%lu to=%s:%lu\n", bench->src,
			       (job * bench->sectors) % 2048, bench->sectors, bench->dst, job * bench->sectors);
		if (write(clone_fd, text, (size_t)len) != len) {
			perror("write description");
			exit(1);
		}
		if (bench->rmdir) {
			snprintf(path, sizeof(path), "%s/jobs/%s/wait", bench->mountpoint, id);
			wait_fd = open(path, O_RDONLY);
			got = wait_fd < 0 ? -1 : read(wait_fd, text, sizeof(text) - 1);
			close(wait_fd);
		} else {
			/* A clone-autoremove descriptor read at 0 after the write is the job's wait. */
			got = pread(clone_fd, text, sizeof(text) - 1, 0);
		}
		if (got <= 0 || strncmp(text, "state: done\n", 12) != 0)
			atomic_fetch_add(&bench->failures, 1);
		close(clone_fd);
		/* A tidy client of plain clone removes its finished job. */
		snprintf(path, sizeof(path), "%s/jobs/%s", bench->mountpoint, id);
		if (bench->rmdir && rmdir(path) < 0)
			atomic_fetch_add(&bench->failures, 1);
	}
	return NULL;
}

int main(int argc, char *argv[])
{
	struct bench bench = { .jobs = 20000, .sectors = 8, .threads = 4 };
	bool rmdir_mode = argc > 1 && strcmp(argv[1], "mount-rmdir") == 0;
	bool mount_mode = argc > 1 && (strcmp(argv[1], "mount") == 0 || rmdir_mode);
	int first = mount_mode ? 3 : 2;
	pthread_t threads[64];
	unsigned long index;
	double start, elapsed;

	if (argc < first + 2 || (!mount_mode && strcmp(argv[1], "lib") != 0)) {
		fprintf(stderr, "usage: %s lib SRC DST [JOBS] [SECTORS] [THREADS]\n"
				"       %s mount|mount-rmdir MOUNTPOINT SRC DST [JOBS] [SECTORS] [THREADS]\n",
			argv[0], argv[0]);
		return 2;
	}
	bench.mountpoint = mount_mode ? argv[2] : NULL;
	bench.rmdir = rmdir_mode;
	bench.src = argv[first];
	bench.dst = argv[first + 1];
	if (argc > first + 2)
		bench.jobs = strtoul(argv[first + 2], NULL, 0);
	if (argc > first + 3)
		bench.sectors = strtoul(argv[first + 3], NULL, 0);
	if (argc > first + 4)
		bench.threads = strtoul(argv[first + 4], NULL, 0);
	if (bench.threads < 1 || bench.threads > 64)
		bench.threads = 4;
	pthread_mutex_init(&bench.lock, NULL);
	pthread_cond_init(&bench.cond, NULL);

	if (!mount_mode) {
		int r = kcopyd_client_create(16384, &bench.kc);

		if (r == 0)
			r = kcopyd_dev_open(bench.src, O_RDONLY, &bench.src_dev);
		if (r == 0)
			r = kcopyd_dev_open(bench.dst, O_RDWR, &bench.dst_dev);
		if (r < 0) {
			fprintf(stderr, "setup: %s\n", strerror(-r));
			return 1;
		}
		if (bench.jobs * bench.sectors > kcopyd_dev_sectors(bench.dst_dev)) {
			fprintf(stderr, "DST holds %llu sectors, %lu jobs need %lu\n",
				(unsigned long long)kcopyd_dev_sectors(bench.dst_dev), bench.jobs,
				bench.jobs * bench.sectors);
			return 1;
		}
	}
	start = now();
	for (index = 0; index < bench.threads; index++)
		pthread_create(&threads[index], NULL, mount_mode ? mount_client : lib_submitter, &bench);
	for (index = 0; index < bench.threads; index++)
		pthread_join(threads[index], NULL);
	if (!mount_mode) {
		pthread_mutex_lock(&bench.lock);
		while (bench.completed < bench.jobs)
			pthread_cond_wait(&bench.cond, &bench.lock);
		pthread_mutex_unlock(&bench.lock);
	}
	elapsed = now() - start;
	if (!mount_mode) {
		kcopyd_client_destroy(bench.kc);
		kcopyd_dev_close(bench.src_dev);
		kcopyd_dev_close(bench.dst_dev);
	}
	printf("%s: %lu jobs of %lu sectors, %lu threads, %.3f s, %.0f jobs/s, %lu failed\n", argv[1], bench.jobs,
	       bench.sectors, bench.threads, elapsed, (double)bench.jobs / elapsed, atomic_load(&bench.failures));
	return atomic_load(&bench.failures) ? 1 : 0;
}
