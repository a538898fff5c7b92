/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * sparse-copy: copy SOURCE to every DEST (or zero every DEST) with the
 * library, from sector 0 for the smallest size, and print what the job
 * and the client counted.  Driven by tests/test-sparse-devices.sh, which
 * makes the filesystems and checks bytes and allocation.
 *
 *   sparse-copy [-f FLAG,...] [-z] [SOURCE] DEST...
 *   FLAG: dest_zero, allocated, no_offload, ignore_error, write_seq
 *
 * Prints one line: "done D data A zero Z offloaded O zero_fallbacks F
 * offload_fallbacks G read R".  Exit: 0, 1 if the job failed (the errno
 * on stderr), 2 for bad usage or a device that would not open.
 */
#include "config.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kcopyd.h"

static unsigned int parse_flags(char *text)
{
	unsigned int flags = 0;
	char *word;

	for (word = strtok(text, ","); word; word = strtok(NULL, ",")) {
		if (strcmp(word, "dest_zero") == 0)
			flags |= KCOPYD_DEST_ZERO;
		else if (strcmp(word, "allocated") == 0)
			flags |= KCOPYD_ALLOCATED;
		else if (strcmp(word, "no_offload") == 0)
			flags |= KCOPYD_NO_OFFLOAD;
		else if (strcmp(word, "ignore_error") == 0)
			flags |= KCOPYD_IGNORE_ERROR;
		else if (strcmp(word, "write_seq") == 0)
			flags |= KCOPYD_WRITE_SEQ;
		else {
			fprintf(stderr, "sparse-copy: unknown flag %s\n", word);
			exit(2);
		}
	}
	return flags;
}

int main(int argc, char **argv)
{
	struct kcopyd_dev *devs[1 + KCOPYD_MAX_REGIONS] = { 0 };
	struct io_region from, dests[KCOPYD_MAX_REGIONS];
	struct kcopyd_client *kc;
	struct kcopyd_result result;
	struct kcopyd_stats stats;
	struct kcopyd_job *job;
	unsigned int flags = 0, nr_dests, index;
	uint64_t count = UINT64_MAX;
	int opt, zero = 0, first, r;
	char why[256];

	while ((opt = getopt(argc, argv, "f:z")) != -1) {
		if (opt == 'f')
			flags |= parse_flags(optarg);
		else if (opt == 'z')
			zero = 1;
		else
			return 2;
	}
	first = optind;
	nr_dests = (unsigned int)(argc - first - (zero ? 0 : 1));
	if (argc - first < (zero ? 1 : 2) || nr_dests > KCOPYD_MAX_REGIONS) {
		fprintf(stderr, "usage: sparse-copy [-f FLAG,...] [-z] [SOURCE] DEST...\n");
		return 2;
	}
	for (index = 0; (int)index < argc - first; index++) {
		int source = !zero && index == 0;

		r = kcopyd_dev_open(argv[first + (int)index], source ? O_RDONLY : O_RDWR, &devs[index]);
		if (r < 0) {
			fprintf(stderr, "sparse-copy: %s: %s\n", argv[first + (int)index], strerror(-r));
			return 2;
		}
		if (kcopyd_dev_sectors(devs[index]) < count)
			count = kcopyd_dev_sectors(devs[index]);
	}
	from = (struct io_region){ .bdev = zero ? NULL : devs[0], .sector = 0, .count = count };
	for (index = 0; index < nr_dests; index++)
		dests[index] = (struct io_region){ .bdev = devs[index + (zero ? 0 : 1)], .sector = 0, .count = count };
	r = kcopyd_validate(zero ? NULL : &from, nr_dests, dests, flags, why, sizeof(why));
	if (r < 0) {
		fprintf(stderr, "sparse-copy: refused: %s\n", why);
		return 2;
	}
	r = kcopyd_client_create(4096, &kc);
	if (r < 0) {
		fprintf(stderr, "sparse-copy: kcopyd_client_create: %s\n", strerror(-r));
		return 2;
	}
	r = kcopyd_submit(kc, zero ? NULL : &from, nr_dests, dests, flags, NULL, NULL, &job);
	if (r < 0) {
		fprintf(stderr, "sparse-copy: kcopyd_submit: %s\n", strerror(-r));
		return 2;
	}
	kcopyd_job_wait(job);
	kcopyd_job_result(job, &result);
	kcopyd_job_release(job);
	kcopyd_client_stats(kc, &stats);
	kcopyd_client_destroy(kc);
	printf("done %" PRIu64 " data %" PRIu64 " zero %" PRIu64 " offloaded %" PRIu64 " zero_fallbacks %" PRIu64
	       " offload_fallbacks %" PRIu64 " read %" PRIu64 "\n",
	       result.counts.sectors_done, result.counts.sectors_data, result.counts.sectors_zero,
	       result.counts.sectors_offloaded, stats.zero_fallbacks, stats.offload_fallbacks, stats.sectors_read);
	for (index = 0; (int)index < argc - first; index++)
		kcopyd_dev_close(devs[index]);
	if (result.error) {
		fprintf(stderr, "sparse-copy: the job failed: %s (write_err %#x)\n", strerror(-result.error),
			result.write_err);
		return 1;
	}
	return 0;
}
