/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * verify-copy: copy SOURCE to every DEST with the library, from sector 0
 * for the smallest size, with job options, and print what the result
 * says, one fact a line, for tests/test-verify-lossy.sh to check.
 *
 *   verify-copy [-s SUBJOB_KB] [-f FLAG,...] [-H ALG,...] [-r BYTES] SOURCE DEST...
 *   FLAG:  verify, ignore_error, no_offload, write_seq
 *   ALG:   as kcopyd_hash_parse()
 *   BYTES: the job's rate limit, bytes per second (contrib/bench/trust
 *          times it when kcopy has no --rate)
 *
 * Prints:
 *   error: ERRNO NAME              (0 OK for none; NAME as strerrorname_np)
 *   verified: 1|0|-1
 *   verify_err: 0xBITS
 *   write_err: 0xBITS
 *   read_err: 0|1
 *   verify I: ok | NAME SECTOR+COUNT     (one per destination, with verify)
 *   write I: NAME SECTOR+COUNT           (only for destinations that failed)
 *   sectors_verified: DONE/TOTAL
 *   hash ALG: HEX                        (one per algorithm the result has)
 *   stats: verified V verify_errors E hashed H
 * Exit: 0, 1 if the job failed, 2 for bad usage or a device that would
 * not open or a job that was refused.
 */
#include "config.h"

#include <errno.h>
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
		if (strcmp(word, "verify") == 0)
			flags |= KCOPYD_VERIFY;
		else if (strcmp(word, "ignore_error") == 0)
			flags |= KCOPYD_IGNORE_ERROR;
		else if (strcmp(word, "no_offload") == 0)
			flags |= KCOPYD_NO_OFFLOAD;
		else if (strcmp(word, "write_seq") == 0)
			flags |= KCOPYD_WRITE_SEQ;
		else {
			fprintf(stderr, "verify-copy: unknown flag %s\n", word);
			exit(2);
		}
	}
	return flags;
}

static unsigned int parse_hashes(char *text)
{
	unsigned int hashes = 0, hash;
	char *word;

	for (word = strtok(text, ","); word; word = strtok(NULL, ",")) {
		if (kcopyd_hash_parse(word, &hash) < 0) {
			fprintf(stderr, "verify-copy: unknown hash %s\n", word);
			exit(2);
		}
		hashes |= hash;
	}
	return hashes;
}

/* "EBADMSG" for -EBADMSG, "OK" for 0. */
static const char *errno_name(int error)
{
	const char *name;

	if (error == 0)
		return "OK";
	name = strerrorname_np(-error);
	return name ? name : "E?";
}

int main(int argc, char **argv)
{
	struct kcopyd_dev *devs[1 + KCOPYD_MAX_REGIONS] = { 0 };
	struct kcopyd_job_options options = { 0 };
	struct io_region from, dests[KCOPYD_MAX_REGIONS];
	struct kcopyd_config config = { .num_pages = 1024 };
	struct kcopyd_client *kc;
	struct kcopyd_result result;
	struct kcopyd_stats stats;
	struct kcopyd_job *job;
	unsigned int nr_dests, index, bit;
	uint64_t count = UINT64_MAX;
	int opt, first, r, status = 2;
	char why[256] = "";

	while ((opt = getopt(argc, argv, "s:f:H:r:")) != -1) {
		if (opt == 's')
			config.subjob_sectors = (unsigned int)strtoul(optarg, NULL, 10) * 2;
		else if (opt == 'f')
			options.flags |= parse_flags(optarg);
		else if (opt == 'H')
			options.hashes |= parse_hashes(optarg);
		else if (opt == 'r')
			options.rate = strtoull(optarg, NULL, 10);
		else
			return 2;
	}
	first = optind;
	nr_dests = (unsigned int)(argc - first - 1);
	if (argc - first < 2 || nr_dests > KCOPYD_MAX_REGIONS) {
		fprintf(stderr, "usage: verify-copy [-s SUBJOB_KB] [-f FLAG,...] [-H ALG,...] [-r BYTES] SOURCE DEST...\n");
		return 2;
	}
	for (index = 0; index <= nr_dests; index++) {
		r = kcopyd_dev_open(argv[first + (int)index], index == 0 ? O_RDONLY : O_RDWR, &devs[index]);
		if (r < 0) {
			fprintf(stderr, "verify-copy: %s: %s\n", argv[first + (int)index], strerror(-r));
			goto out_close;
		}
		if (kcopyd_dev_sectors(devs[index]) < count)
			count = kcopyd_dev_sectors(devs[index]);
	}
	from = (struct io_region){ devs[0], 0, count };
	for (index = 0; index < nr_dests; index++)
		dests[index] = (struct io_region){ devs[index + 1], 0, count };

	r = kcopyd_client_create_config(&config, &kc);
	if (r < 0) {
		fprintf(stderr, "verify-copy: kcopyd_client_create_config: %s\n", strerror(-r));
		goto out_close;
	}
	r = kcopyd_validate(&from, nr_dests, dests, options.flags & ~KCOPYD_VERIFY, why, sizeof(why));
	if (r == 0)
		r = kcopyd_submit_options(kc, &from, nr_dests, dests, &options, sizeof(options), NULL, NULL, &job);
	if (r < 0) {
		fprintf(stderr, "verify-copy: refused: %s%s%s\n", strerror(-r), why[0] ? ": " : "", why);
		goto out_destroy;
	}
	kcopyd_job_wait(job);
	r = kcopyd_job_result(job, &result);
	kcopyd_job_release(job);
	if (r < 0) {
		fprintf(stderr, "verify-copy: kcopyd_job_result: %s\n", strerror(-r));
		goto out_destroy;
	}

	printf("error: %d %s\n", result.error, errno_name(result.error));
	printf("verified: %d\n", result.verified);
	printf("verify_err: 0x%x\n", result.verify_err);
	printf("write_err: 0x%x\n", result.write_err);
	printf("read_err: %d\n", result.read_err);
	for (index = 0; index < nr_dests; index++) {
		const struct kcopyd_failure *verify = &result.verify[index], *write = &result.write[index];

		if (options.flags & KCOPYD_VERIFY) {
			if (verify->error == 0)
				printf("verify %u: ok\n", index);
			else
				printf("verify %u: %s %" PRIu64 "+%" PRIu64 "\n", index, errno_name(verify->error),
				       verify->sector, verify->count);
		}
		if (write->error)
			printf("write %u: %s %" PRIu64 "+%" PRIu64 "\n", index, errno_name(write->error), write->sector,
			       write->count);
	}
	printf("sectors_verified: %" PRIu64 "/%" PRIu64 "\n", result.counts.sectors_verified,
	       result.counts.sectors_verify_total);
	for (bit = 0; bit < KCOPYD_HASH_COUNT; bit++) {
		const struct kcopyd_digest *digest = &result.digests[bit];
		unsigned int byte;

		if (!(result.hashes & (1u << bit)))
			continue;
		printf("hash %s: ", kcopyd_hash_name(1u << bit));
		for (byte = 0; byte < digest->size; byte++)
			printf("%02x", digest->bytes[byte]);
		printf("\n");
	}
	kcopyd_client_stats(kc, &stats);
	printf("stats: verified %" PRIu64 " verify_errors %" PRIu64 " hashed %" PRIu64 "\n", stats.sectors_verified,
	       stats.verify_errors, stats.sectors_hashed);
	status = result.error ? 1 : 0;

out_destroy:
	kcopyd_client_destroy(kc);
out_close:
	for (index = 0; index <= nr_dests; index++)
		kcopyd_dev_close(devs[index]);
	return status;
}
