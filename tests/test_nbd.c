/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The NBD driver (src/libkcopyd/drv_nbd.c) against real servers: nbdkit
 * (memory, sparse-random, file; the blocksize-policy, log, error, delay
 * and exportname filters; TLS with a pre-shared key) on a Unix socket in a
 * private directory or on a free TCP port of 127.0.0.1, and qemu-nbd over
 * a qcow2 image.  Every test starts its own servers (nbdkit -f
 * --exit-with-parent, so none outlives a crashed test) and checks the
 * bytes: the local side with tests/testutil.c, the exports through
 * libnbd's synchronous calls.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libnbd.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kcopyd.h"
#include "testutil.h"

/* Paths under a mkdtemp() directory are short; GCC cannot know. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define MiB		(1024ull * 1024)
#define EXPORT_BYTES	(64 * MiB)
#define EXPORT_SECTORS	(EXPORT_BYTES >> KCOPYD_SECTOR_SHIFT)
#define SEED		0x6e62646b6370ull
#define OTHER_SEED	0x5eedull
#define CHUNK		(256 * 1024ull)	/* what the tests' own reads and writes take at once: any server's maximum */
#define PSK_KEY		"c0ffee00112233445566778899aabbccddeeff00112233445566778899aabbcc"

static char workdir[PATH_MAX];

/* A server this test started. */
struct server {
	pid_t pid;
	bool ipv6;		/* TCP on ::1 */
	char sock[PATH_MAX];	/* "" for TCP */
	int port;
	char uri[PATH_MAX + 64];
	char log[PATH_MAX];
};

#define MAX_SERVERS 4
static struct server servers[MAX_SERVERS];
static unsigned int nr_servers;

static void setup(void)
{
	snprintf(workdir, sizeof(workdir), "/tmp/kcopyd-test-nbd.XXXXXX");
	cr_assert_not_null(mkdtemp(workdir), "mkdtemp: %s", strerror(errno));
	nr_servers = 0;
}

static void server_stop(struct server *s)
{
	if (s->pid > 0) {
		kill(s->pid, SIGCONT);
		kill(s->pid, SIGKILL);
		waitpid(s->pid, NULL, 0);
		s->pid = 0;
	}
}

static void teardown(void)
{
	char cmd[PATH_MAX + 16];
	unsigned int index;

	for (index = 0; index < nr_servers; index++)
		server_stop(&servers[index]);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", workdir);
	(void)!system(cmd);
}

TestSuite(nbd, .init = setup, .fini = teardown, .timeout = 60);

static int free_port(void)
{
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	cr_assert(fd >= 0);
	cr_assert(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0, "bind: %s", strerror(errno));
	cr_assert(getsockname(fd, (struct sockaddr *)&addr, &len) == 0);
	port = ntohs(addr.sin_port);
	close(fd);
	return port;
}

static bool server_up(const struct server *s)
{
	int fd, r;

	if (s->sock[0]) {
		struct sockaddr_un un = { .sun_family = AF_UNIX };

		snprintf(un.sun_path, sizeof(un.sun_path), "%s", s->sock);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		r = connect(fd, (struct sockaddr *)&un, sizeof(un));
	} else if (s->ipv6) {
		struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)s->port),
					    .sin6_addr = IN6ADDR_LOOPBACK_INIT };

		fd = socket(AF_INET6, SOCK_STREAM, 0);
		r = connect(fd, (struct sockaddr *)&in6, sizeof(in6));
	} else {
		struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)s->port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

		fd = socket(AF_INET, SOCK_STREAM, 0);
		r = connect(fd, (struct sockaddr *)&in, sizeof(in));
	}
	close(fd);
	return r == 0;
}

/*
 * Start `@prog ARGS...` serving on a Unix socket (or TCP with @tcp); the
 * arguments are NULL-terminated, "@SOCK" and "@PORT" in them are replaced.
 * Waits until it accepts connections.  The URI is nbd+unix:///?socket=...
 * or nbd://127.0.0.1:PORT/ (the caller may build its own from sock/port).
 */
static bool next_server_ipv6;	/* the next TCP server listens on ::1 (nbd://[::1]:PORT/) */

static struct server *server_start_prog(bool tcp, const char *const args[])
{
	struct server *s;
	const char *argv[64];
	char port_text[16];
	unsigned int argc = 0, index;
	double deadline;

	cr_assert(nr_servers < MAX_SERVERS);
	s = &servers[nr_servers];
	memset(s, 0, sizeof(*s));
	if (tcp) {
		s->port = free_port();
		s->ipv6 = next_server_ipv6;
		snprintf(port_text, sizeof(port_text), "%d", s->port);
		snprintf(s->uri, sizeof(s->uri), s->ipv6 ? "nbd://[::1]:%d/" : "nbd://127.0.0.1:%d/", s->port);
	} else {
		char sock[PATH_MAX];

		snprintf(sock, sizeof(sock), "%s/s%u.sock", workdir, nr_servers);
		snprintf(s->sock, sizeof(s->sock), "%s", sock);
		snprintf(s->uri, sizeof(s->uri), "nbd+unix:///?socket=%s", sock);
	}
	snprintf(s->log, sizeof(s->log), "%s/server%u.log", workdir, nr_servers);
	for (index = 0; args[index]; index++)
		argv[argc++] = strcmp(args[index], "@SOCK") == 0 ? s->sock
			     : strcmp(args[index], "@PORT") == 0 ? port_text : args[index];
	argv[argc] = NULL;
	nr_servers++;
	s->pid = fork();
	cr_assert(s->pid >= 0);
	if (s->pid == 0) {
		int log = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(log, 2);
		dup2(log, 1);
		execvp(argv[0], (char *const *)argv);
		_exit(127);
	}
	deadline = tu_now() + 10;
	while (!server_up(s)) {
		cr_assert(tu_now() < deadline, "%s did not start (see %s)", argv[0], s->log);
		cr_assert(waitpid(s->pid, NULL, WNOHANG) == 0, "%s exited (see %s)", argv[0], s->log);
		tu_sleep_ms(10);
	}
	return s;
}

/* nbdkit -f --exit-with-parent, on a Unix socket or 127.0.0.1:PORT, with @args (plugin, filters, ...). */
static struct server *nbdkit_start(bool tcp, const char *const args[])
{
	const char *argv[48] = { "nbdkit", "-f", "--exit-with-parent" };
	unsigned int argc = 3, index;

	if (tcp) {
		argv[argc++] = "-i";
		argv[argc++] = next_server_ipv6 ? "::1" : "127.0.0.1";
		argv[argc++] = "-p";
		argv[argc++] = "@PORT";
	} else {
		argv[argc++] = "-U";
		argv[argc++] = "@SOCK";
	}
	for (index = 0; args[index]; index++)
		argv[argc++] = args[index];
	argv[argc] = NULL;
	return server_start_prog(tcp, argv);
}

/* A 64 MiB memory export (zeros) on a Unix socket. */
static struct server *memory_server(void)
{
	return nbdkit_start(false, (const char *const[]){ "memory", "64M", NULL });
}

static struct kcopyd_dev *open_nbd(const char *uri, int flags)
{
	struct kcopyd_dev *dev = NULL;
	char why[256] = "";
	int r = kcopyd_dev_open_nbd(uri, flags, NULL, 0, &dev, why, sizeof(why));

	cr_assert_eq(r, 0, "open %s: %s (%s)", uri, strerror(-r), why);
	return dev;
}

static struct kcopyd_dev *open_file(const char *path, int flags)
{
	struct kcopyd_dev *dev = NULL;
	int r = kcopyd_dev_open(path, flags, &dev);

	cr_assert_eq(r, 0, "open %s: %s", path, strerror(-r));
	return dev;
}

static void local_path(char *path, size_t len, const char *name)
{
	snprintf(path, len, "%s/%s", workdir, name);
}

/* Write the pattern of @seed to the whole export @uri (libnbd, synchronous). */
static void export_fill(const char *uri, uint64_t off, uint64_t bytes, uint64_t seed)
{
	struct nbd_handle *h = nbd_create();
	char *buf = malloc(CHUNK);
	uint64_t done;

	cr_assert(h && buf);
	cr_assert_eq(nbd_connect_uri(h, uri), 0, "%s", nbd_get_error());
	for (done = 0; done < bytes; done += CHUNK) {
		size_t len = bytes - done < CHUNK ? (size_t)(bytes - done) : CHUNK;

		tu_pattern_fill(buf, len, seed, off + done);
		cr_assert_eq(nbd_pwrite(h, buf, len, off + done, 0), 0, "%s", nbd_get_error());
	}
	cr_assert_eq(nbd_flush(h, 0), 0, "%s", nbd_get_error());
	nbd_shutdown(h, 0);
	nbd_close(h);
	free(buf);
}

/* Whether @bytes of export @uri at @off hold the pattern of @seed (0: zeros), from pattern byte @pattern_off. */
static bool export_check(const char *uri, uint64_t off, uint64_t bytes, uint64_t seed, uint64_t pattern_off)
{
	struct nbd_handle *h = nbd_create();
	char *buf = malloc(CHUNK), *want = malloc(CHUNK);
	uint64_t done;
	bool same = true;

	cr_assert(h && buf && want);
	cr_assert_eq(nbd_connect_uri(h, uri), 0, "%s", nbd_get_error());
	for (done = 0; done < bytes && same; done += CHUNK) {
		size_t len = bytes - done < CHUNK ? (size_t)(bytes - done) : CHUNK;

		cr_assert_eq(nbd_pread(h, buf, len, off + done, 0), 0, "%s", nbd_get_error());
		tu_pattern_fill(want, len, seed, pattern_off + done);
		same = memcmp(buf, want, len) == 0;
	}
	nbd_shutdown(h, 0);
	nbd_close(h);
	free(buf);
	free(want);
	return same;
}

/* Copy the way kcopy does: submit, wait, result; then sync every destination. */
static int run_job(struct kcopyd_client *kc, struct io_region *from, unsigned int num_dests,
		   struct io_region *dests, unsigned int flags, struct kcopyd_result *result)
{
	struct kcopyd_job *job = NULL;
	unsigned int index;
	int r = kcopyd_submit(kc, from, num_dests, dests, flags, NULL, NULL, &job);

	if (r < 0)
		return r;
	kcopyd_job_wait(job);
	memset(result, 0, sizeof(*result));
	kcopyd_job_result(job, result);
	kcopyd_job_release(job);
	if (result->error)
		return result->error;
	for (index = 0; index < num_dests; index++) {
		r = kcopyd_dev_sync(dests[index].bdev);
		if (r < 0)
			return r;
	}
	return 0;
}

static struct kcopyd_client *client(void)
{
	struct kcopyd_client *kc = NULL;

	cr_assert_eq(kcopyd_client_create(1024, &kc), 0);
	return kc;
}

static struct io_region whole(struct kcopyd_dev *dev)
{
	return (struct io_region){ .bdev = dev, .sector = 0, .count = EXPORT_SECTORS };
}

/* ------------------------------------------------------------------ */

Test(nbd, uri_split)
{
	static const struct {
		const char *uri;
		int error;
		enum kcopyd_nbd_transport transport;
		const char *host, *port, *export_name, *socket_path;
	} cases[] = {
		{ "nbd://host:10809", 0, KCOPYD_NBD_TCP, "host", "10809", "", NULL },
		{ "nbd://host/disk", 0, KCOPYD_NBD_TCP, "host", NULL, "disk", NULL },
		{ "NBD://host/a:b", 0, KCOPYD_NBD_TCP, "host", NULL, "a:b", NULL },
		{ "nbd://[::1]:10809/disk", 0, KCOPYD_NBD_TCP, "::1", "10809", "disk", NULL },
		{ "nbd://host/vm%3A1", 0, KCOPYD_NBD_TCP, "host", NULL, "vm:1", NULL },
		{ "nbd:///", 0, KCOPYD_NBD_TCP, "localhost", NULL, "", NULL },
		{ "nbd+unix:///disk?socket=/run/s.sock", 0, KCOPYD_NBD_UNIX, NULL, NULL, "disk", "/run/s.sock" },
		{ "nbd+unix:///?socket=/run/a%20b.sock", 0, KCOPYD_NBD_UNIX, NULL, NULL, "", "/run/a b.sock" },
		{ "nbd+vsock://3:1234/x", 0, KCOPYD_NBD_VSOCK, "3", "1234", "x", NULL },
		{ "nbd+unix:///disk", -EINVAL, 0, NULL, NULL, NULL, NULL },
		{ "nbd://host/?socket=/x", -EINVAL, 0, NULL, NULL, NULL, NULL },
		{ "nbd://host/?tls-psk-file=/k", -EINVAL, 0, NULL, NULL, NULL, NULL },
		{ "nbds://host/?tls-pks-file=/k", -EINVAL, 0, NULL, NULL, NULL, NULL },
		{ "nbd+unix://host/?socket=/x", -EINVAL, 0, NULL, NULL, NULL, NULL },
		{ "http://host/", -EINVAL, 0, NULL, NULL, NULL, NULL },
		{ "nbd:host", -EINVAL, 0, NULL, NULL, NULL, NULL },
	};
	unsigned int index;

	for (index = 0; index < sizeof(cases) / sizeof(cases[0]); index++) {
		struct kcopyd_nbd_uri parts;
		char why[128] = "";
		int r = kcopyd_nbd_uri_parse(cases[index].uri, &parts, why, sizeof(why));

		cr_assert_eq(r, cases[index].error, "%s: %d (%s), expected %d", cases[index].uri, r, why,
			     cases[index].error);
		cr_assert_eq(kcopyd_is_nbd_uri(cases[index].uri),
			     strncmp(cases[index].uri, "http", 4) != 0 && strcmp(cases[index].uri, "nbd:host") != 0,
			     "%s: kcopyd_is_nbd_uri", cases[index].uri);
		if (r < 0) {
			cr_assert(why[0], "%s: no reason given", cases[index].uri);
			continue;
		}
		cr_assert_eq(parts.transport, cases[index].transport, "%s", cases[index].uri);
		cr_assert_str_eq(parts.export_name, cases[index].export_name, "%s", cases[index].uri);
		if (cases[index].host)
			cr_assert_str_eq(parts.host, cases[index].host, "%s", cases[index].uri);
		if (cases[index].port)
			cr_assert_str_eq(parts.port, cases[index].port, "%s", cases[index].uri);
		else
			cr_assert_null(parts.port, "%s", cases[index].uri);
		if (cases[index].socket_path)
			cr_assert_str_eq(parts.socket_path, cases[index].socket_path, "%s", cases[index].uri);
		kcopyd_nbd_uri_free(&parts);
	}
}

Test(nbd, tls_parts)
{
	struct kcopyd_nbd_uri parts;
	char why[128] = "";

	cr_assert_eq(kcopyd_nbd_uri_parse("nbds+unix://alice@/e?socket=/s&tls-psk-file=/k%2Bey&tls-verify-peer=false",
					  &parts, why, sizeof(why)), 0, "%s", why);
	cr_assert_eq(parts.tls, 1);
	cr_assert_str_eq(parts.tls_psk_file, "/k+ey");
	cr_assert_str_eq(parts.tls_username, "alice");
	cr_assert_eq(parts.tls_verify_peer, 0);
	kcopyd_nbd_uri_free(&parts);
}

Test(nbd, file_to_nbd_to_file_unix)
{
	struct server *s = memory_server();
	char src[PATH_MAX], dst[PATH_MAX];
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *file, *nbd, *out;
	struct kcopyd_result result;
	struct io_region from, to;

	local_path(src, sizeof(src), "src");
	local_path(dst, sizeof(dst), "dst");
	cr_assert_eq(tu_file_create(src, EXPORT_BYTES, SEED), 0);
	cr_assert_eq(tu_file_create(dst, EXPORT_BYTES, 0), 0);
	file = open_file(src, O_RDONLY);
	nbd = open_nbd(s->uri, O_RDWR);
	cr_assert_eq(kcopyd_dev_sectors(nbd), EXPORT_SECTORS);
	cr_assert_eq(kcopyd_dev_block_size(nbd), 512u);
	cr_assert_eq(kcopyd_dev_is_direct(nbd), 0);
	from = whole(file);
	to = whole(nbd);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "file -> nbd: %s", strerror(-result.error));
	cr_assert(export_check(s->uri, 0, EXPORT_BYTES, SEED, 0), "the export differs from the source");

	out = open_file(dst, O_RDWR);
	from = whole(nbd);
	to = whole(out);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "nbd -> file: %s", strerror(-result.error));
	cr_assert_eq(tu_pattern_check(dst, 0, EXPORT_BYTES, SEED, 0, NULL), 0, "the copy back differs");
	cr_assert_eq(result.counts.sectors_done, EXPORT_SECTORS);
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(file);
	kcopyd_dev_close(nbd);
	kcopyd_dev_close(out);
}

Test(nbd, nbd_to_nbd_and_mixed_tcp)
{
	struct server *a = nbdkit_start(true, (const char *const[]){ "memory", "64M", NULL });
	struct server *b = nbdkit_start(true, (const char *const[]){ "memory", "64M", NULL });
	char dst[PATH_MAX], dst2[PATH_MAX];
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *src, *nbd_dst, *file_dst, *file_dst2;
	struct kcopyd_result result;
	struct io_region from, to[3];

	export_fill(a->uri, 0, EXPORT_BYTES, SEED);
	local_path(dst, sizeof(dst), "dst");
	local_path(dst2, sizeof(dst2), "dst2");
	cr_assert_eq(tu_file_create(dst, EXPORT_BYTES, OTHER_SEED), 0);
	cr_assert_eq(tu_file_create(dst2, EXPORT_BYTES, OTHER_SEED), 0);
	src = open_nbd(a->uri, O_RDONLY);
	nbd_dst = open_nbd(b->uri, O_RDWR);
	file_dst = open_file(dst, O_RDWR);
	file_dst2 = open_file(dst2, O_RDWR);
	from = whole(src);
	to[0] = whole(nbd_dst);
	cr_assert_eq(run_job(kc, &from, 1, to, 0, &result), 0, "nbd -> nbd: %s", strerror(-result.error));
	cr_assert(export_check(b->uri, 0, EXPORT_BYTES, SEED, 0), "nbd -> nbd differs");

	/* One read feeds an export and two files. */
	export_fill(b->uri, 0, EXPORT_BYTES, OTHER_SEED);
	to[0] = whole(file_dst);
	to[1] = whole(nbd_dst);
	to[2] = whole(file_dst2);
	cr_assert_eq(run_job(kc, &from, 3, to, 0, &result), 0, "nbd -> mix: %s", strerror(-result.error));
	cr_assert(export_check(b->uri, 0, EXPORT_BYTES, SEED, 0), "nbd -> mix: the export differs");
	cr_assert_eq(tu_pattern_check(dst, 0, EXPORT_BYTES, SEED, 0, NULL), 0, "nbd -> mix: file differs");
	cr_assert_eq(tu_pattern_check(dst2, 0, EXPORT_BYTES, SEED, 0, NULL), 0, "nbd -> mix: file 2 differs");
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(src);
	kcopyd_dev_close(nbd_dst);
	kcopyd_dev_close(file_dst);
	kcopyd_dev_close(file_dst2);
}

Test(nbd, dev_open_takes_a_uri)
{
	struct server *s = memory_server();
	struct kcopyd_dev *dev = NULL;

	cr_assert_eq(kcopyd_dev_open(s->uri, O_RDONLY, &dev), 0);
	cr_assert_eq(kcopyd_dev_sectors(dev), EXPORT_SECTORS);
	cr_assert_null(kcopyd_dev_error(dev));
	kcopyd_dev_close(dev);
}

/* A memory export with 2 MiB of data at 8 MiB: the copy reads only that. */
Test(nbd, sparse_memory_source_skips_holes)
{
	struct server *s = memory_server();
	char dst[PATH_MAX];
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *src, *out;
	struct kcopyd_result result;
	struct kcopyd_stats stats;
	struct io_region from, to;

	export_fill(s->uri, 8 * MiB, 2 * MiB, SEED);
	local_path(dst, sizeof(dst), "dst");
	cr_assert_eq(tu_file_create(dst, EXPORT_BYTES, OTHER_SEED), 0);
	src = open_nbd(s->uri, O_RDONLY);
	out = open_file(dst, O_RDWR);
	from = whole(src);
	to = whole(out);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
	kcopyd_client_stats(kc, &stats);
	cr_assert_eq(result.counts.sectors_data, 2 * MiB / 512, "data sectors %" PRIu64, result.counts.sectors_data);
	cr_assert_eq(result.counts.sectors_zero, (EXPORT_BYTES - 2 * MiB) / 512);
	cr_assert_eq(stats.sectors_read, 2 * MiB / 512, "read %" PRIu64 " sectors", stats.sectors_read);
	cr_assert_eq(tu_pattern_check(dst, 0, 8 * MiB, 0, 0, NULL), 0);
	cr_assert_eq(tu_pattern_check(dst, 8 * MiB, 2 * MiB, SEED, 8 * MiB, NULL), 0);
	cr_assert_eq(tu_pattern_check(dst, 10 * MiB, EXPORT_BYTES - 10 * MiB, 0, 0, NULL), 0);

	/*
	 * Data written through the device where it had holes: the extents it
	 * learnt are forgotten, the next copy reads the new data.
	 */
	{
		char data[PATH_MAX];
		struct kcopyd_dev *in, *rw = open_nbd(s->uri, O_RDWR);

		local_path(data, sizeof(data), "data");
		cr_assert_eq(tu_file_create(data, EXPORT_BYTES, OTHER_SEED), 0);
		in = open_file(data, O_RDONLY);
		from = whole(rw);
		cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
		from = (struct io_region){ .bdev = in, .sector = 32 * MiB / 512, .count = MiB / 512 };
		to = (struct io_region){ .bdev = rw, .sector = 32 * MiB / 512, .count = MiB / 512 };
		cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
		from = whole(rw);
		to = whole(out);
		cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
		cr_assert_eq(tu_pattern_check(dst, 32 * MiB, MiB, OTHER_SEED, 32 * MiB, NULL), 0,
			     "data written where the export had a hole was not copied");
		kcopyd_dev_close(in);
		kcopyd_dev_close(rw);
	}
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(src);
	kcopyd_dev_close(out);
}

Test(nbd, sparse_random_source)
{
	struct server *s = nbdkit_start(false, (const char *const[]){ "sparse-random", "size=64M", "percent=10",
								     "seed=42", NULL });
	char dst[PATH_MAX];
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *src, *out;
	struct kcopyd_result result;
	struct kcopyd_stats stats;
	struct io_region from, to;
	struct nbd_handle *h;
	char *want = malloc(EXPORT_BYTES), *got = malloc(EXPORT_BYTES);

	local_path(dst, sizeof(dst), "dst");
	cr_assert_eq(tu_file_create(dst, EXPORT_BYTES, 0), 0);
	src = open_nbd(s->uri, O_RDONLY);
	out = open_file(dst, O_RDWR);
	from = whole(src);
	to = whole(out);
	cr_assert_eq(run_job(kc, &from, 1, &to, KCOPYD_DEST_ZERO, &result), 0, "%s", strerror(-result.error));
	kcopyd_client_stats(kc, &stats);
	cr_assert(stats.sectors_read < EXPORT_SECTORS / 4, "read %" PRIu64 " of %llu sectors", stats.sectors_read,
		  EXPORT_SECTORS);
	cr_assert(result.counts.sectors_zero > EXPORT_SECTORS / 2, "zero %" PRIu64, result.counts.sectors_zero);
	h = nbd_create();
	cr_assert_eq(nbd_connect_uri(h, s->uri), 0);
	cr_assert_eq(nbd_pread(h, want, EXPORT_BYTES, 0, 0), 0);
	nbd_close(h);
	cr_assert_eq(tu_read(dst, 0, got, EXPORT_BYTES), 0);
	cr_assert(memcmp(want, got, EXPORT_BYTES) == 0, "the copy differs from the export");
	free(want);
	free(got);
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(src);
	kcopyd_dev_close(out);
}

/* Allocated blocks of @path, in bytes. */
static uint64_t allocated(const char *path)
{
	struct stat st;

	cr_assert_eq(stat(path, &st), 0);
	return (uint64_t)st.st_blocks * 512;
}

/*
 * Zero ranges reach an export as NBD_CMD_WRITE_ZEROES: nbdkit's file
 * plugin punches them without NO_HOLE, and keeps them allocated with it
 * (KCOPYD_ALLOCATED).
 */
Test(nbd, zeroes_punch_or_allocate)
{
	char image[PATH_MAX], src[PATH_MAX];
	struct server *s;
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *in, *nbd;
	struct kcopyd_result result;
	struct kcopyd_stats stats;
	struct io_region from, to;
	char file_arg[PATH_MAX + 8];

	local_path(image, sizeof(image), "image");
	local_path(src, sizeof(src), "src");
	cr_assert_eq(tu_file_create(image, EXPORT_BYTES, OTHER_SEED), 0);
	cr_assert_eq(tu_file_create(src, EXPORT_BYTES, 0), 0);
	cr_assert_eq(tu_pattern_write(src, 0, 1 * MiB, SEED, 0), 0);
	snprintf(file_arg, sizeof(file_arg), "file=%s", image);
	s = nbdkit_start(false, (const char *const[]){ "file", file_arg, NULL });
	in = open_file(src, O_RDONLY);
	nbd = open_nbd(s->uri, O_RDWR);
	from = whole(in);
	to = whole(nbd);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
	kcopyd_client_stats(kc, &stats);
	cr_assert_eq(stats.zero_fallbacks, 0);
	cr_assert(allocated(image) <= 4 * MiB, "%" PRIu64 " bytes still allocated after punching", allocated(image));
	cr_assert_eq(tu_pattern_check(image, 0, MiB, SEED, 0, NULL), 0);
	cr_assert_eq(tu_pattern_check(image, MiB, EXPORT_BYTES - MiB, 0, 0, NULL), 0);

	cr_assert_eq(run_job(kc, &from, 1, &to, KCOPYD_ALLOCATED, &result), 0, "%s", strerror(-result.error));
	cr_assert(allocated(image) >= EXPORT_BYTES, "only %" PRIu64 " bytes allocated with KCOPYD_ALLOCATED",
		  allocated(image));
	cr_assert_eq(tu_pattern_check(image, MiB, EXPORT_BYTES - MiB, 0, 0, NULL), 0);
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(in);
	kcopyd_dev_close(nbd);
}

/* An export without zeroes gets zeros written. */
Test(nbd, no_zero_export_gets_written_zeros)
{
	struct server *s = nbdkit_start(false, (const char *const[]){ "--filter=nozero", "memory", "64M", NULL });
	char src[PATH_MAX];
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *in, *nbd;
	struct kcopyd_result result;
	struct kcopyd_stats stats;
	struct io_region from, to;

	export_fill(s->uri, 0, EXPORT_BYTES, OTHER_SEED);
	local_path(src, sizeof(src), "src");
	cr_assert_eq(tu_file_create(src, EXPORT_BYTES, 0), 0);
	in = open_file(src, O_RDONLY);
	nbd = open_nbd(s->uri, O_RDWR);
	from = whole(in);
	to = whole(nbd);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
	kcopyd_client_stats(kc, &stats);
	cr_assert_eq(stats.sectors_zero, EXPORT_SECTORS);
	cr_assert(export_check(s->uri, 0, EXPORT_BYTES, 0, 0), "zeros were not written");
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(in);
	kcopyd_dev_close(nbd);
}

/* A 4 KiB minimum and a 256 KiB maximum (smaller than a sub-job), enforced by the server. */
Test(nbd, block_size_constraints)
{
	struct server *s = nbdkit_start(false, (const char *const[]){
		"--filter=blocksize-policy", "memory", "64M", "blocksize-minimum=4096", "blocksize-preferred=65536",
		"blocksize-maximum=262144", "blocksize-error-policy=error", NULL });
	char src[PATH_MAX], dst[PATH_MAX];
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *in, *nbd, *out;
	struct kcopyd_result result;
	struct io_region from, to;

	local_path(src, sizeof(src), "src");
	local_path(dst, sizeof(dst), "dst");
	cr_assert_eq(tu_file_create(src, EXPORT_BYTES, SEED), 0);
	cr_assert_eq(tu_file_create(dst, EXPORT_BYTES, 0), 0);
	in = open_file(src, O_RDONLY);
	out = open_file(dst, O_RDWR);
	nbd = open_nbd(s->uri, O_RDWR);
	cr_assert_eq(kcopyd_dev_block_size(nbd), 4096u);
	/* Unaligned regions are refused before they reach the server. */
	from = (struct io_region){ .bdev = in, .sector = 1, .count = 8 };
	to = (struct io_region){ .bdev = nbd, .sector = 1, .count = 8 };
	cr_assert_eq(kcopyd_validate(&from, 1, &to, 0, NULL, 0), -EINVAL);
	from = whole(in);
	to = whole(nbd);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "file -> nbd: %s", strerror(-result.error));
	from = whole(nbd);
	to = whole(out);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "nbd -> file: %s", strerror(-result.error));
	cr_assert_eq(tu_pattern_check(dst, 0, EXPORT_BYTES, SEED, 0, NULL), 0);
	/* A zero job, whose sub-jobs are 64 MiB, is cut to the server's maximum too. */
	cr_assert_eq(kcopyd_zero(kc, 1, &from, 0, NULL, NULL), 0);
	kcopyd_client_destroy(kc);
	cr_assert(export_check(s->uri, 0, EXPORT_BYTES, 0, 0), "the zero job left data");
	kcopyd_dev_close(in);
	kcopyd_dev_close(out);
	kcopyd_dev_close(nbd);
}

/* Connections the log filter saw open. */
static unsigned int log_connections(const char *log)
{
	FILE *f = fopen(log, "r");
	char line[1024];
	unsigned int count = 0;

	cr_assert_not_null(f, "%s", log);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, " Connect "))
			count++;
	fclose(f);
	return count;
}

Test(nbd, multi_conn)
{
	char logfile[PATH_MAX], logarg[PATH_MAX + 16], logfile2[PATH_MAX], logarg2[PATH_MAX + 16];
	struct kcopyd_nbd_config config = { .connections = 2, .tls_psk_fd = -1, .tls_certificates_fd = -1 };
	struct kcopyd_dev *dev = NULL;
	struct server *s, *single;
	char why[256];

	local_path(logfile, sizeof(logfile), "log");
	snprintf(logarg, sizeof(logarg), "logfile=%s", logfile);
	s = nbdkit_start(false, (const char *const[]){ "--filter=log", "memory", "64M", logarg, NULL });
	dev = open_nbd(s->uri, O_RDWR);
	cr_assert_eq(log_connections(logfile), KCOPYD_NBD_DEFAULT_CONNECTIONS, "%u connections",
		     log_connections(logfile));
	/* A copy spreads its writes over them all. */
	{
		char src[PATH_MAX], line[1024];
		struct kcopyd_client *kc = client();
		struct kcopyd_dev *in;
		struct kcopyd_result result;
		struct io_region from, to;
		unsigned int used = 0, conn;
		FILE *f;

		local_path(src, sizeof(src), "src");
		cr_assert_eq(tu_file_create(src, EXPORT_BYTES, SEED), 0);
		in = open_file(src, O_RDONLY);
		from = whole(in);
		to = whole(dev);
		cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
		kcopyd_client_destroy(kc);
		kcopyd_dev_close(in);
		f = fopen(logfile, "r");
		cr_assert_not_null(f);
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "%*s %*s connection=%u Write", &conn) == 1 && strstr(line, " Write id=") &&
			    conn < 32)
				used |= 1u << conn;
		fclose(f);
		cr_assert_eq(__builtin_popcount(used), (int)KCOPYD_NBD_DEFAULT_CONNECTIONS,
			     "writes went to connections 0x%x", used);
	}
	kcopyd_dev_close(dev);
	cr_assert_eq(kcopyd_dev_open_nbd(s->uri, O_RDWR, &config, sizeof(config), &dev, why, sizeof(why)), 0, "%s",
		     why);
	cr_assert_eq(log_connections(logfile), KCOPYD_NBD_DEFAULT_CONNECTIONS + 2);
	kcopyd_dev_close(dev);

	local_path(logfile2, sizeof(logfile2), "log2");
	snprintf(logarg2, sizeof(logarg2), "logfile=%s", logfile2);
	single = nbdkit_start(false, (const char *const[]){ "--filter=log", "--filter=multi-conn", "memory", "64M",
							   logarg2, "multi-conn-mode=disable", NULL });
	dev = open_nbd(single->uri, O_RDWR);
	cr_assert_eq(log_connections(logfile2), 1u, "%u connections without multi-conn", log_connections(logfile2));
	kcopyd_dev_close(dev);
}

Test(nbd, read_only_export_refused_as_destination)
{
	struct server *s = nbdkit_start(false, (const char *const[]){ "-r", "memory", "64M", NULL });
	struct kcopyd_dev *dev = NULL;
	char why[256] = "";

	cr_assert_eq(kcopyd_dev_open_nbd(s->uri, O_RDWR, NULL, 0, &dev, why, sizeof(why)), -EROFS, "%s", why);
	cr_assert(strstr(why, "read-only"), "why: %s", why);
	dev = open_nbd(s->uri, O_RDONLY);
	kcopyd_dev_close(dev);
}

Test(nbd, past_the_end_and_overlap)
{
	struct server *s = memory_server();
	char other[PATH_MAX + 64], why[256];
	struct kcopyd_dev *a = open_nbd(s->uri, O_RDWR), *b = open_nbd(s->uri, O_RDWR), *c;
	struct io_region from = { .bdev = a, .sector = 0, .count = 1024 }, to = { .bdev = b, .sector = 512, .count = 1024 };

	cr_assert_eq(kcopyd_validate(&from, 1, &to, 0, why, sizeof(why)), -EINVAL, "same export: %s", why);
	cr_assert(strstr(why, "overlaps"), "%s", why);
	to.sector = 1024;
	cr_assert_eq(kcopyd_validate(&from, 1, &to, 0, why, sizeof(why)), 0, "%s", why);
	to.sector = EXPORT_SECTORS - 512;
	cr_assert_eq(kcopyd_validate(&from, 1, &to, 0, why, sizeof(why)), -ERANGE);
	/* Another export name on the same server is other storage (nbdkit memory serves one disk per name? no: */
	snprintf(other, sizeof(other), "nbd+unix:///other?socket=%s", s->sock);
	c = open_nbd(other, O_RDWR);
	to = (struct io_region){ .bdev = c, .sector = 512, .count = 1024 };
	cr_assert_eq(kcopyd_validate(&from, 1, &to, 0, why, sizeof(why)), 0, "other export name: %s", why);
	kcopyd_dev_close(a);
	kcopyd_dev_close(b);
	kcopyd_dev_close(c);
}

static void write_psk(const char *path, const char *key)
{
	FILE *f = fopen(path, "w");

	cr_assert_not_null(f);
	fprintf(f, "alice:%s\n", key);
	fclose(f);
	chmod(path, 0600);
}

Test(nbd, tls_psk)
{
	char psk[PATH_MAX], wrong[PATH_MAX], psk_arg[PATH_MAX + 16], uri[2 * PATH_MAX], why[256];
	struct kcopyd_nbd_config config = { .tls_psk_fd = -1, .tls_certificates_fd = -1 };
	struct kcopyd_dev *dev = NULL;
	struct server *s;
	int r;

	local_path(psk, sizeof(psk), "keys.psk");
	local_path(wrong, sizeof(wrong), "wrong.psk");
	write_psk(psk, PSK_KEY);
	write_psk(wrong, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
	snprintf(psk_arg, sizeof(psk_arg), "--tls-psk=%s", psk);
	s = nbdkit_start(false, (const char *const[]){ "--tls=require", psk_arg, "memory", "64M", NULL });

	snprintf(uri, sizeof(uri), "nbds+unix://alice@/?socket=%s&tls-psk-file=%s", s->sock, psk);
	dev = open_nbd(uri, O_RDWR);
	cr_assert_eq(kcopyd_dev_sectors(dev), EXPORT_SECTORS);
	kcopyd_dev_close(dev);

	snprintf(uri, sizeof(uri), "nbds+unix://alice@/?socket=%s&tls-psk-file=%s", s->sock, wrong);
	r = kcopyd_dev_open_nbd(uri, O_RDWR, NULL, 0, &dev, why, sizeof(why));
	cr_assert_eq(r, -EACCES, "wrong key: %d (%s)", r, why);
	cr_assert(why[0]);

	r = kcopyd_dev_open_nbd(s->uri, O_RDWR, NULL, 0, &dev, why, sizeof(why));
	cr_assert_eq(r, -EACCES, "no TLS: %d (%s)", r, why);
	cr_assert(strstr(why, "TLS"), "%s", why);

	/* The key through a descriptor, the URI naming no file. */
	snprintf(uri, sizeof(uri), "nbds+unix://alice@/?socket=%s", s->sock);
	config.tls_psk_fd = open(psk, O_RDONLY | O_CLOEXEC);
	cr_assert(config.tls_psk_fd >= 0);
	r = kcopyd_dev_open_nbd(uri, O_RDWR, &config, sizeof(config), &dev, why, sizeof(why));
	cr_assert_eq(r, 0, "tls_psk_fd: %d (%s)", r, why);
	kcopyd_dev_close(dev);
	/* A descriptor that grants no reading (O_PATH) gives no key. */
	config.tls_psk_fd = open(psk, O_PATH | O_CLOEXEC);
	r = kcopyd_dev_open_nbd(uri, O_RDWR, &config, sizeof(config), &dev, why, sizeof(why));
	cr_assert_eq(r, -EBADF, "O_PATH key: %d (%s)", r, why);
	config.tls_psk_fd = -1;
	/* Pre-connected (a service for its caller): a key named in the URI would be read as the service. */
	{
		struct sockaddr_un un = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		snprintf(un.sun_path, sizeof(un.sun_path), "%s", s->sock);
		cr_assert_eq(connect(fd, (struct sockaddr *)&un, sizeof(un)), 0);
		config.socket_fds = &fd;
		config.num_socket_fds = 1;
		snprintf(uri, sizeof(uri), "nbds+unix://alice@/?socket=%s&tls-psk-file=%s", s->sock, psk);
		r = kcopyd_dev_open_nbd(uri, O_RDWR, &config, sizeof(config), &dev, why, sizeof(why));
		cr_assert_eq(r, -EPERM, "key by name with a pre-connected socket: %d (%s)", r, why);
		cr_assert(fcntl(fd, F_GETFD) < 0, "the socket was not taken over on failure");
		/* The same with the key as a descriptor works. */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert_eq(connect(fd, (struct sockaddr *)&un, sizeof(un)), 0);
		config.tls_psk_fd = open(psk, O_RDONLY | O_CLOEXEC);
		r = kcopyd_dev_open_nbd(uri, O_RDWR, &config, sizeof(config), &dev, why, sizeof(why));
		cr_assert_eq(r, 0, "pre-connected, key by descriptor: %d (%s)", r, why);
		kcopyd_dev_close(dev);
		/* TLS with no key at all is X.509: this process's own certificates, for a caller who has none. */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert_eq(connect(fd, (struct sockaddr *)&un, sizeof(un)), 0);
		snprintf(uri, sizeof(uri), "nbds+unix://alice@/?socket=%s", s->sock);
		config.tls_psk_fd = -1;
		r = kcopyd_dev_open_nbd(uri, O_RDWR, &config, sizeof(config), &dev, why, sizeof(why));
		cr_assert_eq(r, -EPERM, "pre-connected, X.509: %d (%s)", r, why);
		cr_assert(fcntl(fd, F_GETFD) < 0, "the socket was not taken over on failure");
		config.socket_fds = NULL;
		config.num_socket_fds = 0;
		config.tls_psk_fd = -1;
		snprintf(uri, sizeof(uri), "nbds+unix://alice@/?socket=%s", s->sock);
	}
	config.tls_certificates_fd = open(workdir, O_RDONLY | O_DIRECTORY);
	r = kcopyd_dev_open_nbd(uri, O_RDWR, &config, sizeof(config), &dev, why, sizeof(why));
	cr_assert_eq(r, -EOPNOTSUPP, "tls_certificates_fd: %d (%s)", r, why);
}

Test(nbd, preconnected_socket)
{
	struct server *s = memory_server();
	struct kcopyd_nbd_config config = { .tls_psk_fd = -1, .tls_certificates_fd = -1 };
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	int fds[2], index;
	struct kcopyd_dev *dev = NULL, *other;
	char why[256];
	struct io_region a, b;

	snprintf(un.sun_path, sizeof(un.sun_path), "%s", s->sock);
	for (index = 0; index < 2; index++) {
		fds[index] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert_eq(connect(fds[index], (struct sockaddr *)&un, sizeof(un)), 0);
	}
	config.socket_fds = fds;
	config.num_socket_fds = 2;
	cr_assert_eq(kcopyd_dev_open_nbd(s->uri, O_RDWR, &config, sizeof(config), &dev, why, sizeof(why)), 0, "%s",
		     why);
	cr_assert_eq(kcopyd_dev_sectors(dev), EXPORT_SECTORS);
	other = open_nbd(s->uri, O_RDONLY);
	a = (struct io_region){ .bdev = other, .sector = 0, .count = 64 };
	b = (struct io_region){ .bdev = dev, .sector = 0, .count = 64 };
	/* By the bound name the peer reports: still the same export. */
	cr_assert(kcopyd_regions_overlap(&a, &b));
	kcopyd_dev_close(dev);
	kcopyd_dev_close(other);
}

Test(nbd, connection_errors)
{
	struct server *s = nbdkit_start(false, (const char *const[]){ "--filter=exportname", "memory", "64M",
								     "exportname=disk", "exportname-strict=true",
								     NULL });
	struct kcopyd_dev *dev = NULL;
	char uri[PATH_MAX + 64], why[256];
	int r;

	snprintf(uri, sizeof(uri), "nbd://127.0.0.1:%d/", free_port());
	r = kcopyd_dev_open_nbd(uri, O_RDONLY, NULL, 0, &dev, why, sizeof(why));
	cr_assert_eq(r, -ECONNREFUSED, "refused: %d (%s)", r, why);
	cr_assert(why[0]);
	r = kcopyd_dev_open_nbd("nbd://no-such-host.invalid/", O_RDONLY, NULL, 0, &dev, why, sizeof(why));
	cr_assert_eq(r, -ENOENT, "no host: %d (%s)", r, why);
	cr_assert(strstr(why, "no-such-host"), "%s", why);
	snprintf(uri, sizeof(uri), "nbd+unix:///nope?socket=%s", s->sock);
	r = kcopyd_dev_open_nbd(uri, O_RDONLY, NULL, 0, &dev, why, sizeof(why));
	cr_assert_eq(r, -ENOENT, "no export: %d (%s)", r, why);
	cr_assert(strstr(why, "nope"), "%s", why);
	snprintf(uri, sizeof(uri), "nbd+unix:///disk?socket=%s", s->sock);
	dev = open_nbd(uri, O_RDONLY);
	kcopyd_dev_close(dev);
	snprintf(uri, sizeof(uri), "nbd+unix:///?socket=%s/missing.sock", workdir);
	r = kcopyd_dev_open_nbd(uri, O_RDONLY, NULL, 0, &dev, why, sizeof(why));
	cr_assert_eq(r, -ENOENT, "no socket: %d (%s)", r, why);
	r = kcopyd_dev_open_nbd("nbd+unix:///", O_RDONLY, NULL, 0, &dev, why, sizeof(why));
	cr_assert_eq(r, -EINVAL, "no socket=: %d (%s)", r, why);
}

/* A fresh export and a small job work: the client is still usable after a fault. */
static void check_client_still_works(struct kcopyd_client *kc)
{
	struct server *s = memory_server();
	char dst[PATH_MAX];
	struct kcopyd_dev *src, *out;
	struct kcopyd_result result;
	struct io_region from, to;

	export_fill(s->uri, 0, 4 * MiB, SEED);
	local_path(dst, sizeof(dst), "after");
	cr_assert_eq(tu_file_create(dst, 4 * MiB, 0), 0);
	src = open_nbd(s->uri, O_RDONLY);
	out = open_file(dst, O_RDWR);
	from = (struct io_region){ .bdev = src, .sector = 0, .count = 4 * MiB / 512 };
	to = (struct io_region){ .bdev = out, .sector = 0, .count = 4 * MiB / 512 };
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "after the fault: %s", strerror(-result.error));
	cr_assert_eq(tu_pattern_check(dst, 0, 4 * MiB, SEED, 0, NULL), 0);
	kcopyd_dev_close(src);
	kcopyd_dev_close(out);
}

Test(nbd, read_and_write_errors)
{
	char trigger[PATH_MAX], trigger_arg[PATH_MAX + 16], dst[PATH_MAX], src[PATH_MAX];
	struct server *s;
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *nbd, *file;
	struct kcopyd_result result;
	struct io_region from, to;
	int fd;

	local_path(trigger, sizeof(trigger), "trigger");
	snprintf(trigger_arg, sizeof(trigger_arg), "error-file=%s", trigger);
	s = nbdkit_start(false, (const char *const[]){ "--filter=error", "memory", "64M", "error=EIO",
						       "error-pread-rate=100%", "error-pwrite-rate=100%", trigger_arg,
						       NULL });
	export_fill(s->uri, 0, EXPORT_BYTES, SEED);
	local_path(dst, sizeof(dst), "dst");
	local_path(src, sizeof(src), "src");
	cr_assert_eq(tu_file_create(dst, EXPORT_BYTES, 0), 0);
	cr_assert_eq(tu_file_create(src, EXPORT_BYTES, OTHER_SEED), 0);
	nbd = open_nbd(s->uri, O_RDWR);
	file = open_file(dst, O_RDWR);
	fd = open(trigger, O_CREAT | O_WRONLY, 0600);
	close(fd);
	from = whole(nbd);
	to = whole(file);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), -EIO, "read: %d", result.error);
	cr_assert_eq(result.read_err, 1);
	cr_assert_eq(result.read.error, -EIO);
	cr_assert_eq(result.read.sector, 0);
	cr_assert_not_null(kcopyd_dev_error(nbd));
	cr_assert(strstr(kcopyd_dev_error(nbd), "read"), "%s", kcopyd_dev_error(nbd));
	kcopyd_dev_close(file);

	file = open_file(src, O_RDONLY);
	from = whole(file);
	to = whole(nbd);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), -EIO, "write: %d", result.error);
	cr_assert_eq(result.write_err, 1u);
	cr_assert_eq(result.write[0].error, -EIO);
	cr_assert_eq(result.write[0].sector, 0);
	/* The trigger gone, the same device works again. */
	unlink(trigger);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
	cr_assert(export_check(s->uri, 0, EXPORT_BYTES, OTHER_SEED, 0));
	kcopyd_dev_close(file);
	kcopyd_dev_close(nbd);
	check_client_still_works(kc);
	kcopyd_client_destroy(kc);
}

/* A copy from a slow server, with the job handle, for the tests that hurt the server mid-copy. */
static struct kcopyd_job *slow_copy(struct kcopyd_client *kc, struct server **server, unsigned int timeout_ms,
				    struct kcopyd_dev **src, struct kcopyd_dev **out)
{
	struct kcopyd_nbd_config config = { .timeout_ms = timeout_ms, .tls_psk_fd = -1, .tls_certificates_fd = -1 };
	char dst[PATH_MAX], why[256];
	struct kcopyd_job *job = NULL;
	struct io_region from, to;
	struct kcopyd_counts counts;
	double deadline;

	*server = nbdkit_start(false, (const char *const[]){ "--filter=delay", "memory", "64M", "rdelay=20ms", NULL });
	local_path(dst, sizeof(dst), "dst");
	cr_assert_eq(tu_file_create(dst, EXPORT_BYTES, 0), 0);
	cr_assert_eq(kcopyd_dev_open_nbd((*server)->uri, O_RDONLY, &config, sizeof(config), src, why, sizeof(why)),
		     0, "%s", why);
	export_fill((*server)->uri, 0, EXPORT_BYTES, SEED);
	*out = open_file(dst, O_RDWR);
	from = whole(*src);
	to = whole(*out);
	cr_assert_eq(kcopyd_submit(kc, &from, 1, &to, 0, NULL, NULL, &job), 0);
	/* Wait until it is under way. */
	deadline = tu_now() + 10;
	do {
		tu_sleep_ms(10);
		cr_assert_eq(kcopyd_job_counts(job, &counts, sizeof(counts)), 0);
		cr_assert(tu_now() < deadline);
	} while (counts.sectors_done == 0);
	return job;
}

Test(nbd, server_killed_mid_copy)
{
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *src, *out;
	struct kcopyd_result result;
	struct server *s;
	struct kcopyd_job *job = slow_copy(kc, &s, 0, &src, &out);

	kill(s->pid, SIGKILL);
	kcopyd_job_wait(job);
	kcopyd_job_result(job, &result);
	kcopyd_job_release(job);
	cr_assert_eq(result.read_err, 1, "read_err %d", result.read_err);
	cr_assert(result.error == -ENOTCONN || result.error == -ECONNRESET || result.error == -EIO ||
		  result.error == -ESHUTDOWN, "error %d (%s)", result.error, strerror(-result.error));
	cr_assert(result.read.count > 0);
	cr_assert(result.sectors_done < EXPORT_SECTORS);
	cr_assert_not_null(kcopyd_dev_error(src));
	kcopyd_dev_close(src);
	kcopyd_dev_close(out);
	check_client_still_works(kc);
	kcopyd_client_destroy(kc);
}

Test(nbd, hung_server_times_out)
{
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *src, *out;
	struct kcopyd_result result;
	struct server *s;
	struct kcopyd_job *job = slow_copy(kc, &s, 1000, &src, &out);
	double start;

	kill(s->pid, SIGSTOP);
	start = tu_now();
	kcopyd_job_wait(job);
	kcopyd_job_result(job, &result);
	kcopyd_job_release(job);
	cr_assert(tu_now() - start < 3.0, "the job took %.1f s to time out", tu_now() - start);
	cr_assert_eq(result.error, -ETIMEDOUT, "error %d", result.error);
	cr_assert_eq(result.read_err, 1);
	cr_assert(strstr(kcopyd_dev_error(src), "did not answer"), "%s", kcopyd_dev_error(src));
	/* A flush on the dead device fails, it does not hang. */
	kcopyd_dev_close(src);
	kcopyd_dev_close(out);
	check_client_still_works(kc);
	kcopyd_client_destroy(kc);
}

Test(nbd, cancel_while_the_server_hangs)
{
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *src, *out;
	struct kcopyd_result result;
	struct server *s;
	struct kcopyd_job *job = slow_copy(kc, &s, 0, &src, &out);
	double start;

	kill(s->pid, SIGSTOP);
	tu_sleep_ms(100);
	start = tu_now();
	cr_assert_eq(kcopyd_job_cancel(job), 0);
	kcopyd_job_wait(job);
	kcopyd_job_result(job, &result);
	kcopyd_job_release(job);
	cr_assert(tu_now() - start < 1.0, "the cancel took %.2f s", tu_now() - start);
	cr_assert_eq(result.cancelled, 1);
	cr_assert_eq(result.read_err, 0, "a cancel is no read error");
	kcopyd_dev_close(src);
	kcopyd_dev_close(out);
	check_client_still_works(kc);
	kcopyd_client_destroy(kc);
}

Test(nbd, qemu_nbd_qcow2)
{
	char image[PATH_MAX], src[PATH_MAX], cmd[4 * PATH_MAX];
	struct server *s;
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *in, *nbd;
	struct kcopyd_result result;
	struct io_region from, to;

	local_path(image, sizeof(image), "disk.qcow2");
	local_path(src, sizeof(src), "src");
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 '%s' 64M", image);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	cr_assert_eq(tu_file_create(src, EXPORT_BYTES, 0), 0);
	cr_assert_eq(tu_pattern_write(src, 4 * MiB, 16 * MiB, SEED, 0), 0);
	cr_assert_eq(tu_pattern_write(src, 40 * MiB, 1 * MiB, SEED, 0), 0);
	s = server_start_prog(false, (const char *const[]){ "qemu-nbd", "-k", "@SOCK", "-f", "qcow2", "-t", "-e", "4",
							    image, NULL });
	in = open_file(src, O_RDONLY);
	nbd = open_nbd(s->uri, O_RDWR);
	from = whole(in);
	to = whole(nbd);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), 0, "%s", strerror(-result.error));
	kcopyd_dev_close(nbd);
	server_stop(s);
	snprintf(cmd, sizeof(cmd), "qemu-img compare -q -f raw -F qcow2 '%s' '%s'", src, image);
	cr_assert_eq(system(cmd), 0, "%s: the image differs", cmd);
	kcopyd_dev_close(in);
	kcopyd_client_destroy(kc);
}

/* A read error at a chosen offset (a ddrescue mapfile): the failing sub-job is told, everything below it is copied. */
Test(nbd, read_error_at_an_offset)
{
	char image[PATH_MAX], map[PATH_MAX], dst[PATH_MAX], file_arg[PATH_MAX + 8], map_arg[PATH_MAX + 24];
	const uint64_t bad = 20 * MiB + 4096;
	struct kcopyd_client *kc = client();
	struct kcopyd_dev *src, *out;
	struct kcopyd_result result;
	struct io_region from, to;
	struct server *s;
	FILE *f;

	local_path(image, sizeof(image), "image");
	local_path(map, sizeof(map), "ddrescue.map");
	local_path(dst, sizeof(dst), "dst");
	cr_assert_eq(tu_file_create(image, EXPORT_BYTES, SEED), 0);
	cr_assert_eq(tu_file_create(dst, EXPORT_BYTES, 0), 0);
	f = fopen(map, "w");
	cr_assert_not_null(f);
	fprintf(f, "# Mapfile\n0x00000000     +               1\n#      pos        size  status\n");
	fprintf(f, "0x%08llx  0x%08llx  +\n", 0ull, (unsigned long long)bad);
	fprintf(f, "0x%08llx  0x%08llx  -\n", (unsigned long long)bad, 4096ull);
	fprintf(f, "0x%08llx  0x%08llx  +\n", (unsigned long long)bad + 4096, (unsigned long long)(EXPORT_BYTES - bad - 4096));
	fclose(f);
	snprintf(file_arg, sizeof(file_arg), "file=%s", image);
	snprintf(map_arg, sizeof(map_arg), "ddrescue-mapfile=%s", map);
	s = nbdkit_start(false, (const char *const[]){ "-r", "--filter=ddrescue", "file", file_arg, map_arg, NULL });
	src = open_nbd(s->uri, O_RDONLY);
	out = open_file(dst, O_RDWR);
	from = whole(src);
	to = whole(out);
	cr_assert_eq(run_job(kc, &from, 1, &to, 0, &result), -EIO, "error %d", result.error);
	cr_assert_eq(result.read_err, 1);
	cr_assert_eq(result.read.sector, 20 * MiB / 512, "failing sector %" PRIu64, result.read.sector);
	cr_assert_eq(result.read.count, KCOPYD_DEFAULT_SUBJOB_SECTORS);
	cr_assert_eq(result.write_err, 0u);
	cr_assert_eq(tu_pattern_check(dst, 0, 20 * MiB, SEED, 0, NULL), 0, "below the failure");
	/* With IGNORE_ERROR the failing chunk is zeros and the rest is copied. */
	cr_assert_eq(run_job(kc, &from, 1, &to, KCOPYD_IGNORE_ERROR, &result), -EIO);
	cr_assert_eq(tu_pattern_check(dst, 20 * MiB, MiB, 0, 0, NULL), 0, "the failing chunk");
	cr_assert_eq(tu_pattern_check(dst, 21 * MiB, EXPORT_BYTES - 21 * MiB, SEED, 21 * MiB, NULL), 0, "above it");
	kcopyd_client_destroy(kc);
	kcopyd_dev_close(src);
	kcopyd_dev_close(out);
}

/* A server that accepts but never answers the handshake: -ETIMEDOUT at open, after the configured time. */
Test(nbd, handshake_timeout)
{
	struct server *s = memory_server();
	struct kcopyd_nbd_config config = { .timeout_ms = 500, .tls_psk_fd = -1, .tls_certificates_fd = -1 };
	struct kcopyd_dev *dev = NULL;
	char why[256] = "";
	double start;
	int r;

	kill(s->pid, SIGSTOP);
	start = tu_now();
	r = kcopyd_dev_open_nbd(s->uri, O_RDONLY, &config, sizeof(config), &dev, why, sizeof(why));
	cr_assert_eq(r, -ETIMEDOUT, "%d (%s)", r, why);
	cr_assert(tu_now() - start >= 0.45 && tu_now() - start < 2.0, "took %.2f s", tu_now() - start);
	cr_assert(strstr(why, "500 ms"), "%s", why);
}

/* An IPv6 literal: nbd://[::1]:PORT/EXPORT; the same export twice is the same storage. */
Test(nbd, ipv6_literal)
{
	struct server *s;
	char uri[128], why[256];
	struct kcopyd_dev *a, *b;
	struct io_region ra, rb;

	next_server_ipv6 = true;
	s = nbdkit_start(true, (const char *const[]){ "memory", "64M", NULL });
	next_server_ipv6 = false;
	snprintf(uri, sizeof(uri), "nbd://[::1]:%d/disk", s->port);
	a = open_nbd(uri, O_RDWR);
	b = open_nbd(uri, O_RDONLY);
	cr_assert_eq(kcopyd_dev_sectors(a), EXPORT_SECTORS);
	ra = (struct io_region){ .bdev = b, .sector = 0, .count = 1024 };
	rb = (struct io_region){ .bdev = a, .sector = 512, .count = 1024 };
	cr_assert_eq(kcopyd_validate(&ra, 1, &rb, 0, why, sizeof(why)), -EINVAL, "%s", why);
	kcopyd_dev_close(a);
	kcopyd_dev_close(b);
}

Test(nbd, preconnected_socket_taken_over_when_the_handle_refuses_the_uri)
{
	struct kcopyd_nbd_config config = { .tls_psk_fd = -1, .tls_certificates_fd = -1 };
	struct kcopyd_dev *dev = NULL;
	char uri[8192], why[256] = "";
	int sv[2], r;
	size_t len;

	/* An export name longer than NBD allows (4096 bytes): libnbd's nbd_set_export_name() refuses it. */
	len = (size_t)snprintf(uri, sizeof(uri), "nbd+unix:///");
	memset(uri + len, 'a', 5000);
	snprintf(uri + len + 5000, sizeof(uri) - len - 5000, "?socket=/nonexistent.sock");
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	config.socket_fds = &sv[0];
	config.num_socket_fds = 1;
	r = kcopyd_dev_open_nbd(uri, O_RDONLY, &config, sizeof(config), &dev, why, sizeof(why));
	cr_assert_lt(r, 0, "a 5000-byte export name opened");
	cr_assert(fcntl(sv[0], F_GETFD) < 0, "the socket was not taken over on failure (%s)", why);
	close(sv[1]);
}
