/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * nbdround: one whole-device copy through the library, for the NBD rounds
 * of the benchmark (kcopy itself creates a missing destination file and so
 * does not take an NBD URI there until the front ends learn URIs).
 *
 * Build: part of the tree (`make` builds contrib/bench/nbdround).
 * Run:   [NBDROUND_DEPTH=N] [NBDROUND_SUBJOB_KB=K] nbdround SRC DST [PAGES]
 *        SRC and DST are paths or NBD URIs (kcopyd_dev_open() opens both);
 *        the copy is SRC's whole size, DST is synced at the end (an NBD
 *        flush, or fdatasync), as kcopy does.
 * Prints: "SECONDS MB/s" of the copy (open and close excluded).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kcopyd.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct kcopyd_dev *src, *dst;
	struct kcopyd_client *kc;
	struct kcopyd_job *job;
	struct kcopyd_result result;
	struct io_region from, to;
	unsigned int pages = argc > 3 ? (unsigned int)strtoul(argv[3], NULL, 0) : 16384;
	double start, seconds;
	int r;

	if (argc < 3) {
		fprintf(stderr, "usage: nbdround SRC DST [PAGES]\n");
		return 2;
	}
	r = kcopyd_dev_open(argv[1], O_RDONLY, &src);
	if (r == 0)
		r = kcopyd_dev_open(argv[2], O_RDWR, &dst);
	if (r == 0) {
		struct kcopyd_config config = {
			.num_pages = pages,
			.depth = getenv("NBDROUND_DEPTH") ? (unsigned int)atoi(getenv("NBDROUND_DEPTH")) : 0,
			.subjob_sectors = getenv("NBDROUND_SUBJOB_KB") ? (unsigned int)atoi(getenv("NBDROUND_SUBJOB_KB")) * 2 : 0,
		};

		r = kcopyd_client_create_sized(&config, sizeof(config), &kc);
	}
	if (r < 0) {
		fprintf(stderr, "nbdround: %s\n", strerror(-r));
		return 1;
	}
	from = (struct io_region){ .bdev = src, .count = kcopyd_dev_sectors(src) };
	to = (struct io_region){ .bdev = dst, .count = from.count };
	start = now();
	r = kcopyd_submit(kc, &from, 1, &to, 0, NULL, NULL, &job);
	if (r == 0) {
		kcopyd_job_wait(job);
		kcopyd_job_result(job, &result);
		kcopyd_job_release(job);
		r = result.error;
	}
	if (r == 0)
		r = kcopyd_dev_sync(dst);
	seconds = now() - start;
	if (r < 0) {
		fprintf(stderr, "nbdround: copy: %s (%s)\n", strerror(-r),
			kcopyd_dev_error(src) ? kcopyd_dev_error(src) : kcopyd_dev_error(dst) ? kcopyd_dev_error(dst) : "");
		return 1;
	}
	printf("%.3f %.0f\n", seconds, (double)(from.count << KCOPYD_SECTOR_SHIFT) / seconds / 1e6);
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(src);
	kcopyd_dev_close(dst);
	return 0;
}
