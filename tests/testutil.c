/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * testutil: helpers shared by the device tests.  See testutil.h.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <criterion/criterion.h>

#include "testutil.h"

extern char **environ;

#define TU_ALIGN	4096u		/* alignment of O_DIRECT buffers and offsets */
#define TU_IO_CHUNK	(1u << 20)	/* bytes compared or written per step */
#define TU_TMP_PREFIX	"/tmp/kcopyd-test."

/* ---------------------------------------------------------------------
 * Small tools
 * --------------------------------------------------------------------- */

void tu_sleep_ms(unsigned int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

double tu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Read a small sysfs-style file into @buf, without the trailing newline. */
static int tu_read_line(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0) {
		n = -errno;
		close(fd);
		return (int)n;
	}
	close(fd);
	buf[n] = '\0';
	while (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	return 0;
}

const char *tu_run_tag(void)
{
	static char fallback[32];
	const char *tag = getenv("TU_RUN_TAG");

	if (tag && *tag)
		return tag;
	if (!fallback[0])
		snprintf(fallback, sizeof(fallback), "%ld", (long)getpid());
	return fallback;
}

/* Make a fresh directory /tmp/kcopyd-test.<tag>.XXXXXX. */
static int tu_mkdtemp(char *dir, size_t dir_len)
{
	int n = snprintf(dir, dir_len, TU_TMP_PREFIX "%s.XXXXXX", tu_run_tag());

	if (n < 0 || (size_t)n >= dir_len)
		return -ENAMETOOLONG;
	if (!mkdtemp(dir)) {
		int r = -errno;

		dir[0] = '\0';
		return r;
	}
	return 0;
}

/*
 * Run @argv (searched in PATH) with stdin from /dev/null and stdout and
 * stderr appended to @log (or /dev/null), and default signal handling.
 * Return: the pid, or -errno.
 */
static pid_t tu_spawn(const char *const argv[], const char *log)
{
	posix_spawn_file_actions_t actions;
	posix_spawnattr_t attr;
	sigset_t empty, defaults;
	pid_t pid;
	int r;

	sigemptyset(&empty);
	sigemptyset(&defaults);
	sigaddset(&defaults, SIGPIPE);
	sigaddset(&defaults, SIGTERM);
	sigaddset(&defaults, SIGINT);
	sigaddset(&defaults, SIGHUP);
	sigaddset(&defaults, SIGCHLD);

	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&actions, 1, log ? log : "/dev/null",
					 O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&actions, 1, 2);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setsigmask(&attr, &empty);
	posix_spawnattr_setsigdefault(&attr, &defaults);

	r = posix_spawnp(&pid, argv[0], &actions, &attr, (char *const *)argv, environ);

	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&actions);
	return r ? -r : pid;
}

/* Run @argv to its end.  Return: 0 if it exited 0, -EIO otherwise, or -errno. */
static int tu_run(const char *const argv[])
{
	int status;
	pid_t pid = tu_spawn(argv, NULL);

	if (pid < 0)
		return (int)pid;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

/* Whether @name is an executable file in one of the PATH directories. */
static bool tu_in_path(const char *name)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t len = strcspn(path, ":");

		if (len > 0 && (size_t)snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, path, name) <
		    sizeof(buf) && access(buf, X_OK) == 0)
			return true;
		path += len;
		if (*path == ':')
			path++;
	}
	return false;
}

/* ---------------------------------------------------------------------
 * The pattern
 * --------------------------------------------------------------------- */

/* The word at index @index of the pattern of @seed: splitmix64's mixer on
 * a counter, so any word can be computed on its own. */
static inline uint64_t tu_mix(uint64_t seed, uint64_t index)
{
	uint64_t z = seed * 0xD1342543DE82EF95ull + (index + 1) * 0x9E3779B97F4A7C15ull;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

void tu_pattern_fill(void *buf, size_t len, uint64_t seed, uint64_t pattern_off)
{
	unsigned char *p = buf;

	if (seed == 0) {
		memset(buf, 0, len);
		return;
	}
	while (len > 0 && (pattern_off & 7)) {
		*p++ = (unsigned char)(tu_mix(seed, pattern_off >> 3) >> (8 * (pattern_off & 7)));
		pattern_off++;
		len--;
	}
	while (len >= 8) {
		uint64_t word = htole64(tu_mix(seed, pattern_off >> 3));

		memcpy(p, &word, 8);
		p += 8;
		pattern_off += 8;
		len -= 8;
	}
	while (len > 0) {
		*p++ = (unsigned char)(tu_mix(seed, pattern_off >> 3) >> (8 * (pattern_off & 7)));
		pattern_off++;
		len--;
	}
}

static int tu_write_all(int fd, const void *buf, size_t len, uint64_t off)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int tu_file_create(const char *path, uint64_t bytes, uint64_t seed)
{
	void *buf = NULL;
	uint64_t done;
	int fd, r = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (seed != 0) {
		buf = malloc(TU_IO_CHUNK);
		if (!buf) {
			r = -ENOMEM;
			goto out_close;
		}
		for (done = 0; done < bytes && r == 0; done += TU_IO_CHUNK) {
			size_t len = bytes - done < TU_IO_CHUNK ? (size_t)(bytes - done) : TU_IO_CHUNK;

			tu_pattern_fill(buf, len, seed, done);
			r = tu_write_all(fd, buf, len, done);
		}
	}
	if (r == 0 && ftruncate(fd, (off_t)bytes) < 0)
		r = -errno;
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	free(buf);
out_close:
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

int tu_pattern_write(const char *path, uint64_t off, uint64_t bytes, uint64_t seed,
		     uint64_t pattern_off)
{
	bool aligned = off % TU_ALIGN == 0 && bytes % TU_ALIGN == 0;
	void *buf;
	uint64_t done;
	int fd = -1, r = 0;

	if (aligned)
		fd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0) {
		fd = open(path, O_WRONLY | O_CLOEXEC);
		aligned = false;
	}
	if (fd < 0)
		return -errno;
	if (posix_memalign(&buf, TU_ALIGN, TU_IO_CHUNK)) {
		close(fd);
		return -ENOMEM;
	}
	for (done = 0; done < bytes && r == 0; done += TU_IO_CHUNK) {
		size_t len = bytes - done < TU_IO_CHUNK ? (size_t)(bytes - done) : TU_IO_CHUNK;

		tu_pattern_fill(buf, len, seed, pattern_off + done);
		r = tu_write_all(fd, buf, len, off + done);
	}
	/* Buffered writes must reach the device before O_DIRECT reads look. */
	if (r == 0 && !aligned && fsync(fd) < 0)
		r = -errno;
	free(buf);
	if (close(fd) < 0 && r == 0)
		r = -errno;
	return r;
}

/* ---------------------------------------------------------------------
 * Reading back
 * --------------------------------------------------------------------- */

struct tu_reader {
	int fd;
	bool direct;
	unsigned char *buf;	/* TU_IO_CHUNK + 2 * TU_ALIGN, aligned */
};

static int tu_reader_open(struct tu_reader *rd, const char *path)
{
	rd->direct = true;
	rd->fd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (rd->fd < 0 && errno == EINVAL) {
		rd->direct = false;
		rd->fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (rd->fd < 0)
		return -errno;
	if (posix_memalign((void **)&rd->buf, TU_ALIGN, TU_IO_CHUNK + 2 * TU_ALIGN)) {
		close(rd->fd);
		return -ENOMEM;
	}
	return 0;
}

static void tu_reader_close(struct tu_reader *rd)
{
	free(rd->buf);
	close(rd->fd);
}

/*
 * Make bytes [@off, @off + @len) of the file available at *@data (@len at
 * most TU_IO_CHUNK), reading the aligned window around them.
 * Return: 0, -ENODATA if the file ends before, or -errno.
 */
static int tu_reader_get(struct tu_reader *rd, uint64_t off, size_t len, const unsigned char **data)
{
	uint64_t start = off & ~(uint64_t)(TU_ALIGN - 1);
	uint64_t end = (off + len + TU_ALIGN - 1) & ~(uint64_t)(TU_ALIGN - 1);
	size_t want = (size_t)(end - start), done = 0;

	while (done < want) {
		ssize_t n = pread(rd->fd, rd->buf + done, want - done, (off_t)(start + done));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
		/* An O_DIRECT read that stops short of a block is at the end. */
		if (rd->direct && done % TU_ALIGN)
			break;
	}
	if (start + done < off + len)
		return -ENODATA;
	*data = rd->buf + (off - start);
	return 0;
}

static size_t tu_first_mismatch(const unsigned char *a, const unsigned char *b, size_t len)
{
	size_t i;

	for (i = 0; i < len && a[i] == b[i]; i++)
		;
	return i;
}

int tu_compare(const char *path_a, uint64_t off_a, const char *path_b, uint64_t off_b,
	       uint64_t bytes, uint64_t *first_diff)
{
	struct tu_reader ra, rb;
	uint64_t done;
	int r;

	r = tu_reader_open(&ra, path_a);
	if (r < 0)
		return r;
	r = tu_reader_open(&rb, path_b);
	if (r < 0)
		goto out_close_a;
	for (done = 0; done < bytes; done += TU_IO_CHUNK) {
		size_t len = bytes - done < TU_IO_CHUNK ? (size_t)(bytes - done) : TU_IO_CHUNK;
		const unsigned char *a, *b;

		r = tu_reader_get(&ra, off_a + done, len, &a);
		if (r == 0)
			r = tu_reader_get(&rb, off_b + done, len, &b);
		if (r < 0)
			break;
		if (memcmp(a, b, len) != 0) {
			if (first_diff)
				*first_diff = done + tu_first_mismatch(a, b, len);
			r = 1;
			break;
		}
	}
	tu_reader_close(&rb);
out_close_a:
	tu_reader_close(&ra);
	return r;
}

int tu_pattern_check(const char *path, uint64_t off, uint64_t bytes, uint64_t seed,
		     uint64_t pattern_off, uint64_t *first_diff)
{
	struct tu_reader rd;
	unsigned char *expect;
	uint64_t done;
	int r;

	expect = malloc(TU_IO_CHUNK);
	if (!expect)
		return -ENOMEM;
	r = tu_reader_open(&rd, path);
	if (r < 0)
		goto out_free;
	for (done = 0; done < bytes; done += TU_IO_CHUNK) {
		size_t len = bytes - done < TU_IO_CHUNK ? (size_t)(bytes - done) : TU_IO_CHUNK;
		const unsigned char *got;

		r = tu_reader_get(&rd, off + done, len, &got);
		if (r < 0)
			break;
		tu_pattern_fill(expect, len, seed, pattern_off + done);
		if (memcmp(got, expect, len) != 0) {
			if (first_diff)
				*first_diff = done + tu_first_mismatch(got, expect, len);
			r = 1;
			break;
		}
	}
	tu_reader_close(&rd);
out_free:
	free(expect);
	return r;
}

int tu_read(const char *path, uint64_t off, void *buf, size_t len)
{
	struct tu_reader rd;
	size_t done;
	int r;

	r = tu_reader_open(&rd, path);
	if (r < 0)
		return r;
	for (done = 0; done < len; done += TU_IO_CHUNK) {
		size_t step = len - done < TU_IO_CHUNK ? len - done : TU_IO_CHUNK;
		const unsigned char *data;

		r = tu_reader_get(&rd, off + done, step, &data);
		if (r < 0)
			break;
		memcpy((unsigned char *)buf + done, data, step);
	}
	tu_reader_close(&rd);
	return r;
}

int tu_find_nonzero(const char *path, uint64_t off, uint64_t bytes, uint64_t *first_nonzero)
{
	return tu_pattern_check(path, off, bytes, 0, 0, first_nonzero);
}

int tu_is_zero(const char *path, uint64_t off, uint64_t bytes)
{
	int r = tu_find_nonzero(path, off, bytes, NULL);

	return r < 0 ? r : r == 0;
}

/* ---------------------------------------------------------------------
 * tmpfs
 * --------------------------------------------------------------------- */

int tu_tmpfs_mount(size_t bytes, char *dir, size_t dir_len)
{
	char opts[64];
	int r;

	r = tu_mkdtemp(dir, dir_len);
	if (r < 0)
		return r;
	snprintf(opts, sizeof(opts), "size=%zu,mode=0700", bytes);
	if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0) {
		r = -errno;
		rmdir(dir);
		dir[0] = '\0';
		return r;
	}
	return 0;
}

void tu_tmpfs_unmount(const char *dir)
{
	if (!dir || !dir[0])
		return;
	umount2(dir, MNT_DETACH);
	rmdir(dir);
}

/* ---------------------------------------------------------------------
 * Loop devices
 * --------------------------------------------------------------------- */

static int tu_loop_bind(const char *file, unsigned int sector_size, bool direct_io, bool read_only,
			uint64_t offset, char *dev, size_t dev_len)
{
	char attr[96], value[32];
	int file_fd, ctl_fd, loop_fd = -1, attempt, r = -EBUSY;

	if (sector_size != 512 && sector_size != 4096)
		return -EINVAL;
	file_fd = open(file, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (file_fd < 0 && !read_only && (errno == EACCES || errno == EROFS || errno == EPERM)) {
		read_only = true;
		file_fd = open(file, O_RDONLY | O_CLOEXEC);
	}
	if (file_fd < 0)
		return -errno;
	ctl_fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
	if (ctl_fd < 0) {
		r = -errno;
		goto out_close_file;
	}
	/*
	 * Tests run in parallel: another process may take the free device
	 * between LOOP_CTL_GET_FREE and LOOP_CONFIGURE (EBUSY), then ask
	 * again.
	 */
	for (attempt = 0; attempt < 200; attempt++) {
		struct loop_config config;
		int nr = ioctl(ctl_fd, LOOP_CTL_GET_FREE);

		if (nr < 0) {
			r = -errno;
			break;
		}
		snprintf(dev, dev_len, "/dev/loop%d", nr);
		loop_fd = open(dev, O_RDWR | O_CLOEXEC);
		if (loop_fd < 0) {
			r = -errno;
			if (r == -ENOENT || r == -ENXIO) {
				tu_sleep_ms(5);
				continue;
			}
			break;
		}
		memset(&config, 0, sizeof(config));
		config.fd = (unsigned int)file_fd;
		config.block_size = sector_size;
		config.info.lo_offset = offset;
		config.info.lo_flags = (direct_io ? LO_FLAGS_DIRECT_IO : 0) |
				       (read_only ? LO_FLAGS_READ_ONLY : 0);
		strncpy((char *)config.info.lo_file_name, file, LO_NAME_SIZE - 1);
		if (ioctl(loop_fd, LOOP_CONFIGURE, &config) == 0) {
			r = 0;
			break;
		}
		r = -errno;
		close(loop_fd);
		loop_fd = -1;
		if (r != -EBUSY)
			break;
		tu_sleep_ms(1 + (unsigned int)(attempt % 7));
	}
	if (r < 0)
		goto out_close_ctl;

	/* Make sure the kernel gave what was asked. */
	snprintf(attr, sizeof(attr), "/sys/block/%s/loop/dio", dev + strlen("/dev/"));
	if (direct_io && (tu_read_line(attr, value, sizeof(value)) < 0 || strcmp(value, "1") != 0))
		r = -EOPNOTSUPP;
	snprintf(attr, sizeof(attr), "/sys/block/%s/queue/logical_block_size",
		 dev + strlen("/dev/"));
	if (r == 0 && (tu_read_line(attr, value, sizeof(value)) < 0 ||
		       strtoul(value, NULL, 10) != sector_size))
		r = -EOPNOTSUPP;
	if (r < 0) {
		ioctl(loop_fd, LOOP_CLR_FD, 0);
		dev[0] = '\0';
	}
	close(loop_fd);
out_close_ctl:
	close(ctl_fd);
out_close_file:
	close(file_fd);
	if (r < 0 && dev_len > 0)
		dev[0] = '\0';
	return r;
}

int tu_loop_attach(const char *file, unsigned int sector_size, bool direct_io, char *dev,
		   size_t dev_len)
{
	return tu_loop_bind(file, sector_size, direct_io, false, 0, dev, dev_len);
}

int tu_loop_attach_at(const char *file, uint64_t offset, char *dev, size_t dev_len)
{
	return tu_loop_bind(file, 512, true, false, offset, dev, dev_len);
}

/*
 * Switch off request merging on @dev, so that each I/O the engine submits
 * reaches the backing file on its own: a bad block then fails only the
 * engine I/O that holds it, not the neighbours the block layer merged it
 * with.
 */
static int tu_loop_nomerges(const char *dev)
{
	char attr[96];
	int fd, r = 0;

	snprintf(attr, sizeof(attr), "/sys/block/%s/queue/nomerges", dev + strlen("/dev/"));
	fd = open(attr, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, "2", 1) != 1)
		r = -errno;
	close(fd);
	return r;
}

int tu_loop_detach(const char *dev)
{
	int fd, attempt, r = 0;

	if (!dev || !dev[0])
		return -EINVAL;
	fd = open(dev, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	for (attempt = 0; attempt < 100; attempt++) {
		r = ioctl(fd, LOOP_CLR_FD, 0) < 0 ? -errno : 0;
		if (r != -EBUSY)
			break;
		tu_sleep_ms(10);
	}
	close(fd);
	return r;
}

const char *tu_loop_rig_missing(void)
{
	if (geteuid() != 0)
		return "loop devices and tmpfs mounts: needs root";
	if (access("/dev/loop-control", R_OK | W_OK) != 0)
		return "loop devices: /dev/loop-control is missing";
	return NULL;
}

/* ---------------------------------------------------------------------
 * The NBD rig
 * --------------------------------------------------------------------- */

int tu_nbd_prepare(struct tu_nbd *nbd)
{
	int r;

	memset(nbd, 0, sizeof(*nbd));
	r = tu_mkdtemp(nbd->dir, sizeof(nbd->dir));
	if (r < 0)
		return r;
	snprintf(nbd->mnt, sizeof(nbd->mnt), "%s/mnt", nbd->dir);
	snprintf(nbd->disk, sizeof(nbd->disk), "%s/disk", nbd->mnt);
	snprintf(nbd->trigger, sizeof(nbd->trigger), "%s/trigger", nbd->dir);
	snprintf(nbd->mapfile, sizeof(nbd->mapfile), "%s/ddrescue.map", nbd->dir);
	snprintf(nbd->log, sizeof(nbd->log), "%s/nbdfuse.log", nbd->dir);
	if (mkdir(nbd->mnt, 0700) < 0) {
		r = -errno;
		rmdir(nbd->dir);
		nbd->dir[0] = '\0';
		return r;
	}
	return 0;
}

static void tu_nbd_dump_log(const struct tu_nbd *nbd)
{
	char line[512];
	FILE *f = fopen(nbd->log, "re");

	if (!f)
		return;
	fprintf(stderr, "--- %s ---\n", nbd->log);
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fprintf(stderr, "---\n");
	fclose(f);
}

int tu_nbd_start(struct tu_nbd *nbd, bool readonly, const char *const nbdkit_args[])
{
	const char *argv[64];
	unsigned int argc = 0, i;
	double deadline;
	struct stat st;
	pid_t pid;
	int r;

	argv[argc++] = "nbdfuse";
	if (readonly)
		argv[argc++] = "-r";
	argv[argc++] = nbd->disk;
	argv[argc++] = "--command";
	argv[argc++] = "nbdkit";
	argv[argc++] = "-s";
	argv[argc++] = "--exit-with-parent";
	if (readonly)
		argv[argc++] = "-r";
	for (i = 0; nbdkit_args[i]; i++) {
		if (argc + 1 >= sizeof(argv) / sizeof(argv[0]))
			return -E2BIG;
		argv[argc++] = nbdkit_args[i];
	}
	argv[argc] = NULL;

	pid = tu_spawn(argv, nbd->log);
	if (pid < 0)
		return (int)pid;
	nbd->pid = pid;

	/* The mount point is an empty directory until nbdfuse has mounted. */
	r = -ETIMEDOUT;
	for (deadline = tu_now() + 10.0; tu_now() < deadline; tu_sleep_ms(10)) {
		int status;

		if (waitpid(nbd->pid, &status, WNOHANG) == nbd->pid) {
			nbd->pid = 0;
			r = -ECHILD;
			break;
		}
		if (stat(nbd->disk, &st) == 0 && S_ISREG(st.st_mode)) {
			r = 0;
			break;
		}
	}
	if (r == 0)
		r = tu_loop_bind(nbd->disk, 512, true, readonly, 0, nbd->loop, sizeof(nbd->loop));
	if (r == 0)
		r = tu_loop_nomerges(nbd->loop);
	if (r < 0) {
		fprintf(stderr, "tu_nbd_start: %s: %s\n", nbd->disk, strerror(-r));
		tu_nbd_dump_log(nbd);
		tu_nbd_stop(nbd);
	}
	return r;
}

int tu_nbd_start_write_errors(struct tu_nbd *nbd, uint64_t bytes)
{
	char size[32], wfile[320], zfile[320], tfile[320];
	int r = tu_nbd_prepare(nbd);

	if (r < 0)
		return r;
	snprintf(size, sizeof(size), "%llu", (unsigned long long)bytes);
	snprintf(wfile, sizeof(wfile), "error-pwrite-file=%s", nbd->trigger);
	snprintf(zfile, sizeof(zfile), "error-zero-file=%s", nbd->trigger);
	snprintf(tfile, sizeof(tfile), "error-trim-file=%s", nbd->trigger);
	{
		const char *const args[] = {
			"--filter=error", "memory", size, "error=EIO",
			"error-pwrite-rate=100%", wfile,
			"error-zero-rate=100%", zfile,
			"error-trim-rate=100%", tfile,
			NULL,
		};

		return tu_nbd_start(nbd, false, args);
	}
}

int tu_nbd_start_read_errors(struct tu_nbd *nbd, uint64_t bytes)
{
	char size[32], rfile[320];
	int r = tu_nbd_prepare(nbd);

	if (r < 0)
		return r;
	snprintf(size, sizeof(size), "%llu", (unsigned long long)bytes);
	snprintf(rfile, sizeof(rfile), "error-pread-file=%s", nbd->trigger);
	{
		const char *const args[] = {
			"--filter=error", "memory", size, "error=EIO",
			"error-pread-rate=100%", rfile,
			NULL,
		};

		return tu_nbd_start(nbd, false, args);
	}
}

int tu_nbd_start_flaky(struct tu_nbd *nbd, uint64_t bytes, const char *read_rate, const char *write_rate)
{
	char size[32], rrate[64], wrate[64], rfile[320], wfile[320];
	const char *args[16];
	unsigned int argc = 0;
	int r = tu_nbd_prepare(nbd);

	if (r < 0)
		return r;
	snprintf(size, sizeof(size), "%llu", (unsigned long long)bytes);
	args[argc++] = "--filter=error";
	args[argc++] = "memory";
	args[argc++] = size;
	args[argc++] = "error=EIO";
	if (read_rate) {
		snprintf(rrate, sizeof(rrate), "error-pread-rate=%s", read_rate);
		snprintf(rfile, sizeof(rfile), "error-pread-file=%s", nbd->trigger);
		args[argc++] = rrate;
		args[argc++] = rfile;
	}
	if (write_rate) {
		snprintf(wrate, sizeof(wrate), "error-pwrite-rate=%s", write_rate);
		snprintf(wfile, sizeof(wfile), "error-pwrite-file=%s", nbd->trigger);
		args[argc++] = wrate;
		args[argc++] = wfile;
	}
	args[argc] = NULL;
	return tu_nbd_start(nbd, false, args);
}

int tu_nbd_start_slow(struct tu_nbd *nbd, uint64_t bytes, unsigned int delay_ms)
{
	char size[32], read_delay[64], write_delay[64];
	int r = tu_nbd_prepare(nbd);

	if (r < 0)
		return r;
	snprintf(size, sizeof(size), "%llu", (unsigned long long)bytes);
	snprintf(read_delay, sizeof(read_delay), "delay-read=%ums", delay_ms);
	snprintf(write_delay, sizeof(write_delay), "delay-write=%ums", delay_ms);
	{
		const char *const args[] = { "--filter=delay", "memory", size, read_delay, write_delay, NULL };

		return tu_nbd_start(nbd, false, args);
	}
}

int tu_nbd_kill_server(struct tu_nbd *nbd)
{
	char path[300], stat_line[512];
	struct dirent *entry;
	pid_t child = 0;
	DIR *proc;

	if (nbd->pid <= 0)
		return -ESRCH;
	/* nbdfuse runs nbdkit as its child (--command): find the process whose parent it is. */
	proc = opendir("/proc");
	if (!proc)
		return -errno;
	while (!child && (entry = readdir(proc))) {
		const char *after_name;
		long parent = 0;
		FILE *f;

		if (entry->d_name[0] < '0' || entry->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", entry->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		/* "PID (COMM) STATE PPID ...": COMM may hold blanks, so start after the last ')'. */
		if (fgets(stat_line, sizeof(stat_line), f) && (after_name = strrchr(stat_line, ')')) &&
		    sscanf(after_name + 1, " %*c %ld", &parent) == 1 && parent == (long)nbd->pid)
			child = (pid_t)strtol(entry->d_name, NULL, 10);
		fclose(f);
	}
	closedir(proc);
	if (child <= 0)
		return -ESRCH;
	return kill(child, SIGKILL) == 0 ? 0 : -errno;
}

/* Write a GNU ddrescue mapfile: @bad ranges are '-', the rest '+'. */
static int tu_write_mapfile(const char *path, uint64_t size, const struct tu_range *bad,
			    unsigned int n)
{
	uint64_t pos = 0;
	unsigned int i;
	FILE *f;

	for (i = 0; i < n; i++) {
		if (bad[i].len == 0 || bad[i].off < pos || bad[i].off + bad[i].len > size)
			return -EINVAL;
		pos = bad[i].off + bad[i].len;
	}
	f = fopen(path, "we");
	if (!f)
		return -errno;
	fprintf(f, "# Mapfile. Created by kcopyd's testutil\n");
	fprintf(f, "# current_pos  current_status  current_pass\n");
	fprintf(f, "0x00000000     +               1\n");
	fprintf(f, "#      pos        size  status\n");
	for (pos = 0, i = 0; i < n; i++) {
		if (bad[i].off > pos)
			fprintf(f, "0x%08llx  0x%08llx  +\n", (unsigned long long)pos,
				(unsigned long long)(bad[i].off - pos));
		fprintf(f, "0x%08llx  0x%08llx  -\n", (unsigned long long)bad[i].off,
			(unsigned long long)bad[i].len);
		pos = bad[i].off + bad[i].len;
	}
	if (pos < size)
		fprintf(f, "0x%08llx  0x%08llx  +\n", (unsigned long long)pos,
			(unsigned long long)(size - pos));
	return fclose(f) == 0 ? 0 : -errno;
}

int tu_nbd_start_bad_ranges(struct tu_nbd *nbd, const char *image, const struct tu_range *bad,
			    unsigned int n)
{
	char file[PATH_MAX + 8], map[320];
	struct stat st;
	int r;

	if (stat(image, &st) < 0)
		return -errno;
	r = tu_nbd_prepare(nbd);
	if (r < 0)
		return r;
	r = tu_write_mapfile(nbd->mapfile, (uint64_t)st.st_size, bad, n);
	if (r < 0) {
		tu_nbd_stop(nbd);
		return r;
	}
	snprintf(file, sizeof(file), "file=%s", image);
	snprintf(map, sizeof(map), "ddrescue-mapfile=%s", nbd->mapfile);
	{
		const char *const args[] = { "--filter=ddrescue", "file", file, map, NULL };

		return tu_nbd_start(nbd, true, args);
	}
}

/* The lossy plugin: the source tree's script (Makefile.am defines the path). */
#ifndef TU_LOSSY_PLUGIN
#define TU_LOSSY_PLUGIN "tests/lossy-nbdkit.sh"
#endif

int tu_nbd_start_lossy(struct tu_nbd *nbd, const char *image, struct tu_range lie, bool flip)
{
	char file[PATH_MAX + 8], lo[48], len[48], log[320];
	int r;

	if (access(image, R_OK | W_OK) < 0)
		return -errno;
	r = tu_nbd_prepare(nbd);
	if (r < 0)
		return r;
	snprintf(file, sizeof(file), "file=%s", image);
	snprintf(lo, sizeof(lo), "lo=%llu", (unsigned long long)lie.off);
	snprintf(len, sizeof(len), "len=%llu", (unsigned long long)lie.len);
	/* The map file's name is free in a lossy rig: the log of the lies goes there. */
	snprintf(log, sizeof(log), "log=%s", nbd->mapfile);
	{
		const char *const args[] = {
			"sh", TU_LOSSY_PLUGIN, file, lo, len, flip ? "mode=flip" : "mode=drop", log, NULL,
		};

		return tu_nbd_start(nbd, false, args);
	}
}

int tu_nbd_lies(const struct tu_nbd *nbd, struct tu_range *first)
{
	unsigned long long off, len;
	char mode[16], line[128];
	int count = 0;
	FILE *f = fopen(nbd->mapfile, "re");

	if (!f)
		return errno == ENOENT ? 0 : -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%15s %llu %llu", mode, &off, &len) != 3)
			continue;
		if (count++ == 0 && first)
			*first = (struct tu_range){ .off = off, .len = len };
	}
	fclose(f);
	return count;
}

const char *tu_nbd_lossy_missing(void)
{
	static const char *const probe[] = { "nbdkit", "sh", TU_LOSSY_PLUGIN, "--dump-plugin", NULL };
	const char *missing = tu_nbd_rig_missing();

	if (missing)
		return missing;
	if (tu_run(probe) < 0)
		return "lossy rig: nbdkit cannot run its sh plugin (nbdkit-plugin-sh) over tests/lossy-nbdkit.sh";
	return NULL;
}

int tu_nbd_errors(struct tu_nbd *nbd, bool on)
{
	if (on) {
		int fd = open(nbd->trigger, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

		if (fd < 0)
			return -errno;
		close(fd);
		return 0;
	}
	if (unlink(nbd->trigger) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

void tu_nbd_stop(struct tu_nbd *nbd)
{
	if (nbd->loop[0]) {
		tu_loop_detach(nbd->loop);
		nbd->loop[0] = '\0';
	}
	if (nbd->pid > 0) {
		const char *const fusermount[] = { "fusermount3", "-u", "-q", nbd->mnt, NULL };
		double deadline;
		int status;
		bool reaped = false;

		if (tu_run(fusermount) < 0)
			umount2(nbd->mnt, MNT_DETACH);
		for (deadline = tu_now() + 5.0; !reaped && tu_now() < deadline; tu_sleep_ms(10))
			reaped = waitpid(nbd->pid, &status, WNOHANG) == nbd->pid;
		if (!reaped) {
			fprintf(stderr, "tu_nbd_stop: nbdfuse %ld did not exit, killing it\n",
				(long)nbd->pid);
			kill(nbd->pid, SIGKILL);
			waitpid(nbd->pid, &status, 0);
			umount2(nbd->mnt, MNT_DETACH);
		}
		nbd->pid = 0;
	}
	if (nbd->dir[0]) {
		unlink(nbd->trigger);
		unlink(nbd->mapfile);
		unlink(nbd->log);
		rmdir(nbd->mnt);
		rmdir(nbd->dir);
		nbd->dir[0] = '\0';
	}
}

const char *tu_nbd_rig_missing(void)
{
	static const char *const probe_memory[] = {
		"nbdkit", "--filter=error", "--filter=ddrescue", "memory", "--dump-plugin", NULL
	};
	static const char *const probe_file[] = {
		"nbdkit", "--filter=error", "--filter=ddrescue", "file", "--dump-plugin", NULL
	};
	const char *loop = tu_loop_rig_missing();

	if (loop)
		return loop;
	if (access("/dev/fuse", R_OK | W_OK) != 0)
		return "nbd rig: /dev/fuse is missing";
	if (!tu_in_path("nbdfuse"))
		return "nbd rig: nbdfuse is not in PATH (libnbd-bin)";
	if (!tu_in_path("nbdkit"))
		return "nbd rig: nbdkit is not in PATH";
	if (tu_run(probe_memory) < 0 || tu_run(probe_file) < 0)
		return "nbd rig: nbdkit lacks the error or ddrescue filter, or the memory or file plugin";
	return NULL;
}

/* ---------------------------------------------------------------------
 * The engine
 * --------------------------------------------------------------------- */

int tu_copy_sync(struct kcopyd_client *kc, const struct io_region *from, unsigned int n,
		 const struct io_region *dests, unsigned int flags, struct kcopyd_result *res)
{
	struct kcopyd_result local;
	struct kcopyd_job *job;
	int r;

	r = kcopyd_submit(kc, from, n, dests, flags, NULL, NULL, &job);
	if (r < 0)
		return r;
	kcopyd_job_wait(job);
	r = kcopyd_job_result(job, res ? res : &local);
	kcopyd_job_release(job);
	return r;
}

/* ---------------------------------------------------------------------
 * Running the tests
 * --------------------------------------------------------------------- */

static int tu_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

int tu_sweep_leftovers(void)
{
	char prefix[96], attr[320], backing[PATH_MAX], mount_points[64][PATH_MAX / 4];
	unsigned int nr_mounts = 0;
	struct dirent *de;
	glob_t dirs;
	FILE *mountinfo;
	DIR *block;
	size_t i;
	int swept = 0;

	snprintf(prefix, sizeof(prefix), TU_TMP_PREFIX "%s.", tu_run_tag());

	/* Loop devices first: they hold files on the mounts. */
	block = opendir("/sys/block");
	while (block && (de = readdir(block))) {
		char dev[300];

		if (strncmp(de->d_name, "loop", 4) != 0)
			continue;
		snprintf(attr, sizeof(attr), "/sys/block/%s/loop/backing_file", de->d_name);
		if (tu_read_line(attr, backing, sizeof(backing)) < 0 ||
		    strncmp(backing, prefix, strlen(prefix)) != 0)
			continue;
		snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
		fprintf(stderr, "leftover: loop device %s on %s: detaching\n", dev, backing);
		tu_loop_detach(dev);
		swept++;
	}
	if (block)
		closedir(block);

	/* Then the mounts, the most recent (innermost) first. */
	mountinfo = fopen("/proc/self/mountinfo", "re");
	if (mountinfo) {
		char line[4096];

		while (fgets(line, sizeof(line), mountinfo) && nr_mounts < 64) {
			char point[PATH_MAX / 4];

			if (sscanf(line, "%*s %*s %*s %*s %1023s", point) == 1 &&
			    strncmp(point, prefix, strlen(prefix)) == 0)
				strcpy(mount_points[nr_mounts++], point);
		}
		fclose(mountinfo);
	}
	while (nr_mounts > 0) {
		const char *point = mount_points[--nr_mounts];

		fprintf(stderr, "leftover: mount on %s: unmounting\n", point);
		umount2(point, MNT_DETACH);
		swept++;
	}

	/* Then the directories. */
	snprintf(attr, sizeof(attr), "%s*", prefix);
	if (glob(attr, GLOB_NOSORT, NULL, &dirs) == 0) {
		for (i = 0; i < dirs.gl_pathc; i++) {
			fprintf(stderr, "leftover: directory %s: removing\n", dirs.gl_pathv[i]);
			nftw(dirs.gl_pathv[i], tu_remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
			swept++;
		}
		globfree(&dirs);
	}
	return swept;
}

int tu_criterion_main(int argc, char *argv[])
{
	struct criterion_test_set *tests;
	char tag[32];
	int result = 0, left;

	/* The test workers inherit the tag, so the sweep finds what they made. */
	snprintf(tag, sizeof(tag), "%ld", (long)getpid());
	/* A reader that goes away (make check | head) must not stop the sweep. */
	signal(SIGPIPE, SIG_IGN);
	setenv("TU_RUN_TAG", tag, 1);

	tests = criterion_initialize();
	if (criterion_handle_args(argc, argv, true))
		result = !criterion_run_all_tests(tests);
	criterion_finalize(tests);

	left = tu_sweep_leftovers();
	if (left > 0) {
		fprintf(stderr, "FAIL: the tests left %d mounts, loop devices or directories "
			"behind (cleaned up now)\n", left);
		result = 1;
	}
	return result;
}
