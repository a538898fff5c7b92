/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * race-nbd: the NBD driver's concurrency in a plain C program, so that
 * ThreadSanitizer can watch it (Criterion cannot start under TSan).  It
 * runs in every build.
 *
 * One nbdkit memory export (multi-conn: four connections), opened once,
 * is shared by two clients, so two I/O threads drive the same libnbd
 * handles and each completion must find its own queue.  Submitter threads
 * copy a file's slices to the export and back through both clients at
 * once, while another thread flushes the export (kcopyd_dev_sync() from a
 * thread of its own) and a job on a third client, over a server stopped
 * with SIGSTOP, is cancelled.  Every copy is verified.  Prints "N passed,
 * M failed"; exit 77 without nbdkit.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kcopyd.h"

#define SUBMITTERS 4
#define JOBS_PER_SUBMITTER 24
#define JOB_SECTORS 512u		/* 256 KiB a job */
#define AREA_SECTORS (SUBMITTERS * JOBS_PER_SUBMITTER * JOB_SECTORS)
#define AREA_BYTES ((size_t)AREA_SECTORS << KCOPYD_SECTOR_SHIFT)

static unsigned int passed, failed;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond, ...)                                                     \
	do {                                                                 \
		pthread_mutex_lock(&report_lock);                            \
		if (cond) {                                                  \
			passed++;                                            \
		} else {                                                     \
			failed++;                                            \
			fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
			fprintf(stderr, __VA_ARGS__);                        \
			fputc('\n', stderr);                                 \
		}                                                            \
		pthread_mutex_unlock(&report_lock);                          \
	} while (0)

static char dir[64];
static struct kcopyd_dev *export_dev, *src_dev, *back_dev;
static struct kcopyd_client *clients[2];
static atomic_bool flushing_done;
static unsigned int nr_clients = 2;	/* RACE_NBD_CLIENTS=1: one client (a debugging aid) */

static pid_t nbdkit_start(const char *sock, const char *extra)
{
	pid_t pid = fork();
	int tries;

	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		if (extra)
			execlp("nbdkit", "nbdkit", "-f", "--exit-with-parent", "-U", sock, extra, "memory", "64M",
			       "rdelay=10ms", (char *)NULL);
		else
			execlp("nbdkit", "nbdkit", "-f", "--exit-with-parent", "-U", sock, "memory", "64M",
			       (char *)NULL);
		_exit(127);
	}
	for (tries = 0; tries < 1000; tries++) {
		struct sockaddr_un un = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_STREAM, 0), r;

		snprintf(un.sun_path, sizeof(un.sun_path), "%s", sock);
		r = connect(fd, (struct sockaddr *)&un, sizeof(un));
		close(fd);
		if (r == 0)
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			break;
		usleep(10000);
	}
	return -1;
}

static int copy(struct kcopyd_client *kc, struct kcopyd_dev *from_dev, struct kcopyd_dev *to_dev, uint64_t sector)
{
	struct io_region from = { .bdev = from_dev, .sector = sector, .count = JOB_SECTORS };
	struct io_region to = { .bdev = to_dev, .sector = sector, .count = JOB_SECTORS };
	struct kcopyd_result result;
	struct kcopyd_job *job;
	int r = kcopyd_submit(kc, &from, 1, &to, 0, NULL, NULL, &job);

	if (r < 0)
		return r;
	kcopyd_job_wait(job);
	kcopyd_job_result(job, &result);
	kcopyd_job_release(job);
	return result.error;
}

static void *submitter(void *arg)
{
	unsigned int index = (unsigned int)(uintptr_t)arg, job;

	for (job = 0; job < JOBS_PER_SUBMITTER; job++) {
		uint64_t sector = ((uint64_t)index * JOBS_PER_SUBMITTER + job) * JOB_SECTORS;
		int r = copy(clients[job % nr_clients], src_dev, export_dev, sector);

		CHECK(r == 0, "file -> nbd at %llu: %d", (unsigned long long)sector, r);
		r = copy(clients[(job + 1) % nr_clients], export_dev, back_dev, sector);
		CHECK(r == 0, "nbd -> file at %llu: %d", (unsigned long long)sector, r);
	}
	return NULL;
}

static void *flusher(void *arg)
{
	(void)arg;
	while (!atomic_load(&flushing_done)) {
		int r = kcopyd_dev_sync(export_dev);

		CHECK(r == 0, "flush: %d", r);
		usleep(2000);
	}
	return NULL;
}

/* A job on a stopped server, cancelled: it ends well before any timeout. */
static void cancel_on_hung_server(void)
{
	char sock[128], uri[192];
	struct kcopyd_client *kc;
	struct kcopyd_dev *dev;
	struct kcopyd_job *job;
	struct kcopyd_result result;
	struct io_region from, to;
	struct timespec start, end;
	pid_t pid;

	snprintf(sock, sizeof(sock), "%s/slow.sock", dir);
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", sock);
	pid = nbdkit_start(sock, "--filter=delay");
	CHECK(pid > 0, "slow nbdkit did not start");
	if (pid <= 0)
		return;
	/*
	 * The stopped server is the destination: as a source, its zeros
	 * could be known for holes without asking it (the extents learnt at
	 * the start), and the job end done before the cancel.
	 */
	CHECK(kcopyd_dev_open(uri, O_RDWR, &dev) == 0, "open the slow export");
	CHECK(kcopyd_client_create(256, &kc) == 0, "client");
	from = (struct io_region){ .bdev = src_dev, .count = AREA_SECTORS };
	to = (struct io_region){ .bdev = dev, .count = AREA_SECTORS };
	kill(pid, SIGSTOP);
	CHECK(kcopyd_submit(kc, &from, 1, &to, 0, NULL, NULL, &job) == 0, "submit");
	usleep(50000);
	clock_gettime(CLOCK_MONOTONIC, &start);
	CHECK(kcopyd_job_cancel(job) == 0, "cancel");
	kcopyd_job_wait(job);
	clock_gettime(CLOCK_MONOTONIC, &end);
	kcopyd_job_result(job, &result);
	kcopyd_job_release(job);
	CHECK(result.cancelled == 1, "cancelled %d error %d read_err %d write_err %u done %llu", result.cancelled, result.error, result.read_err, result.write_err, (unsigned long long)result.sectors_done);
	CHECK(end.tv_sec - start.tv_sec < 2, "the cancel took %ld s", (long)(end.tv_sec - start.tv_sec));
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(dev);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

int main(void)
{
	char sock[128], uri[192], path[128], cmd[160];
	pthread_t threads[SUBMITTERS], flush_thread;
	unsigned char *want, *got;
	unsigned int index;
	pid_t pid;
	int fd;

	if (system("command -v nbdkit >/dev/null") != 0) {
		printf("SKIP: needs nbdkit\n");
		return 77;
	}
	snprintf(dir, sizeof(dir), "/tmp/kcopyd-race-nbd.XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	snprintf(sock, sizeof(sock), "%s/m.sock", dir);
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s", sock);
	pid = nbdkit_start(sock, NULL);
	CHECK(pid > 0, "nbdkit did not start");
	want = malloc(AREA_BYTES);
	got = malloc(AREA_BYTES);
	for (index = 0; index < AREA_BYTES; index++)
		want[index] = (unsigned char)(index * 131 + index / 4096);
	snprintf(path, sizeof(path), "%s/src", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && write(fd, want, AREA_BYTES) == (ssize_t)AREA_BYTES, "write the source");
	close(fd);
	CHECK(kcopyd_dev_open(path, O_RDONLY, &src_dev) == 0, "open the source");
	snprintf(path, sizeof(path), "%s/back", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, (off_t)AREA_BYTES) == 0, "make the copy-back file");
	close(fd);
	CHECK(kcopyd_dev_open(path, O_RDWR, &back_dev) == 0, "open the copy-back file");
	{
		struct kcopyd_nbd_config config = { .timeout_ms = getenv("RACE_NBD_TIMEOUT_MS") ? (unsigned int)atoi(getenv("RACE_NBD_TIMEOUT_MS")) : 0,
						    .tls_psk_fd = -1, .tls_certificates_fd = -1 };

		CHECK(kcopyd_dev_open_nbd(uri, O_RDWR, &config, sizeof(config), &export_dev, NULL, 0) == 0,
		      "open the export");
	}
	CHECK(kcopyd_client_create(512, &clients[0]) == 0 && kcopyd_client_create(512, &clients[1]) == 0,
	      "clients");

	if (getenv("RACE_NBD_CLIENTS"))
		nr_clients = atoi(getenv("RACE_NBD_CLIENTS")) == 1 ? 1 : 2;
	if (getenv("RACE_NBD_NO_FLUSH"))
		atomic_store(&flushing_done, true);
	pthread_create(&flush_thread, NULL, flusher, NULL);
	for (index = 0; index < SUBMITTERS; index++)
		pthread_create(&threads[index], NULL, submitter, (void *)(uintptr_t)index);
	for (index = 0; index < SUBMITTERS; index++)
		pthread_join(threads[index], NULL);
	atomic_store(&flushing_done, true);
	pthread_join(flush_thread, NULL);

	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && read(fd, got, AREA_BYTES) == (ssize_t)AREA_BYTES, "read the copy back");
	close(fd);
	CHECK(memcmp(want, got, AREA_BYTES) == 0, "the round trip through the export differs");

	cancel_on_hung_server();

	kcopyd_client_destroy(clients[0]);
	kcopyd_client_destroy(clients[1]);
	kcopyd_dev_close(export_dev);
	kcopyd_dev_close(src_dev);
	kcopyd_dev_close(back_dev);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	(void)!system(cmd);
	free(want);
	free(got);
	printf("%u passed, %u failed\n", passed, failed);
	return failed ? 1 : 0;
}
