/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * pkgconfig_client: a program of the kind a user writes against an
 * installed libkcopyd, built by tests/test-install.sh with nothing but
 * `pkg-config --cflags --libs libkcopyd` (so it sees only <kcopyd.h> and the
 * installed library).  It copies SRC onto DST, both whole, and checks the
 * bytes itself.
 *
 * Build: cc pkgconfig_client.c $(pkg-config --cflags --libs libkcopyd)
 * Run:   ./a.out SRC DST   (DST must exist and be as large as SRC)
 * Exit status: 0 when DST reads back equal to SRC; 1 otherwise, with why.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kcopyd.h>

static int read_whole(const char *path, unsigned char **data, long *size)
{
	FILE *file = fopen(path, "rb");

	if (!file)
		return -errno;
	fseek(file, 0, SEEK_END);
	*size = ftell(file);
	rewind(file);
	*data = malloc(*size ? *size : 1);
	if (!*data || fread(*data, 1, *size, file) != (size_t)*size) {
		fclose(file);
		return -EIO;
	}
	fclose(file);
	return 0;
}

int main(int argc, char *argv[])
{
	struct kcopyd_client *kc;
	struct kcopyd_dev *source, *dest;
	struct kcopyd_job *job;
	struct kcopyd_result result;
	unsigned char *source_data, *dest_data;
	long source_size, dest_size;
	int r;

	if (argc != 3) {
		fprintf(stderr, "usage: %s SRC DST\n", argv[0]);
		return 2;
	}
	printf("libkcopyd %s\n", kcopyd_version());
	r = kcopyd_client_create(256, &kc);
	if (r < 0) {
		fprintf(stderr, "kcopyd_client_create: %s\n", strerror(-r));
		return 1;
	}
	r = kcopyd_dev_open(argv[1], O_RDONLY, &source);
	if (r < 0) {
		fprintf(stderr, "kcopyd_dev_open %s: %s\n", argv[1], strerror(-r));
		return 1;
	}
	r = kcopyd_dev_open(argv[2], O_RDWR, &dest);
	if (r < 0) {
		fprintf(stderr, "kcopyd_dev_open %s: %s\n", argv[2], strerror(-r));
		return 1;
	}
	struct io_region from = { source, 0, kcopyd_dev_sectors(source) };
	struct io_region to = { dest, 0, from.count };
	r = kcopyd_submit(kc, &from, 1, &to, 0, NULL, NULL, &job);
	if (r < 0) {
		fprintf(stderr, "kcopyd_submit: %s\n", strerror(-r));
		return 1;
	}
	kcopyd_job_wait(job);
	kcopyd_job_result(job, &result);
	kcopyd_job_release(job);
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(dest);
	kcopyd_dev_close(source);
	if (result.error || result.read_err || result.write_err || result.sectors_done != from.count) {
		fprintf(stderr, "copy failed: error %d, read_err %d, write_err %#x, %llu of %llu sectors\n",
			result.error, result.read_err, result.write_err, (unsigned long long)result.sectors_done,
			(unsigned long long)from.count);
		return 1;
	}
	if (read_whole(argv[1], &source_data, &source_size) < 0 || read_whole(argv[2], &dest_data, &dest_size) < 0) {
		fprintf(stderr, "cannot read the files back\n");
		return 1;
	}
	if (source_size != dest_size || memcmp(source_data, dest_data, source_size) != 0) {
		fprintf(stderr, "%s differs from %s after the copy (%ld and %ld bytes)\n", argv[2], argv[1],
			dest_size, source_size);
		return 1;
	}
	printf("copied %llu sectors, the bytes match\n", (unsigned long long)from.count);
	free(source_data);
	free(dest_data);
	return 0;
}
