/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopydfs: the kcopyd copy engine as a FUSE filesystem.
 *
 *   kcopydfs [--pages N] [--max-jobs N] [--max-jobs-per-user N] [--subjob-kb N] [--depth N]
 *            [--state-dir DIR] [--checkpoint-ms N] [--nbd any|unix|none] [--nbd-connections N]
 *            [--nbd-timeout-ms N] [FUSE options] MOUNTPOINT
 *   kcopydfs --help | --version
 *
 * Build: part of the tree (`autoreconf -fi && ./configure && make`).
 * Run:   mkdir -p /mnt/kcopyd && ./kcopydfs /mnt/kcopyd
 *        echo "copy from=/dev/loop0 to=/dev/loop1" > /mnt/kcopyd/jobs/$(mkdir ...)/ctl
 * See kcopydfs(8) and kcopydfs(5).
 *
 * Shutdown: SIGTERM, SIGINT and SIGHUP are blocked in every thread and taken
 * by one thread with sigwait(); it stops the service (cancel every job),
 * then ends the FUSE loop.  The libfuse of Debian 12 does not wake its loop
 * on a signal, so that thread ends it itself: fuse_session_exit() and one
 * request (a stat of the mountpoint, forced past the attributes the kernel
 * keeps) that a worker answers and then leaves.
 *
 * Messages go through kfs_log() (log.h): to standard error until the daemon
 * goes into the background, to syslog after.  Under a service manager that
 * sets $NOTIFY_SOCKET, the daemon says READY=1 once the mount and the engine
 * are up and STOPPING=1 when a shutdown starts (see notify_service_manager()).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kcopydfs/fs.h"
#include "kcopydfs/log.h"
#include "kcopydfs/state.h"

#define DEFAULT_PAGES 16384u	/* 64 MiB of I/O buffers */

struct options {
	unsigned int pages;
	unsigned int max_jobs;
	unsigned int max_jobs_per_user;
	unsigned int subjob_kb;
	unsigned int depth;
	char *state_dir;
	unsigned int checkpoint_ms;
	char *nbd;
	unsigned int nbd_connections;
	unsigned int nbd_timeout_ms;
	char *io_engine;
	char *rate;
	int show_help;
	int show_version;
	unsigned int operands;		/* arguments that are not options: one, the mountpoint */
	int value_key;			/* the key whose value is the next argument ("--max-jobs N"), or 0 */
	const char *value_option;	/* its name, for a message */
	const char *bad_usage;		/* what is wrong with bad_argument, the first bad one */
	const char *bad_argument;
};

#define OPTION(template, field) { template, offsetof(struct options, field), 1 }

/*
 * The form "--name N" (the value as the next argument) is a key, whose
 * value parse_option() takes; "--name=N" is a template.  Not a template
 * "--name %u": fuse_opt matches a template with a blank by its prefix and
 * applies every template that matches, so that "--pages %u" also took
 * "--pages=4096" (and failed on "=4096"), and "--max-jobs %u" would take
 * "--max-jobs-per-user".
 */
enum option_key {
	KEY_PAGES = 1,
	KEY_MAX_JOBS,
	KEY_MAX_JOBS_PER_USER,
	KEY_SUBJOB_KB,
	KEY_DEPTH,
	KEY_STATE_DIR,
	KEY_CHECKPOINT_MS,
	KEY_NBD,
	KEY_NBD_CONNECTIONS,
	KEY_NBD_TIMEOUT_MS,
	KEY_IO_ENGINE,
	KEY_RATE,
};

/* Where the value after each key goes: an unsigned int, or (is_text) a malloc'd string. */
static const struct {
	enum option_key key;
	size_t offset;
	bool is_text;
} separate_values[] = {
	{ KEY_PAGES, offsetof(struct options, pages), false },
	{ KEY_MAX_JOBS, offsetof(struct options, max_jobs), false },
	{ KEY_MAX_JOBS_PER_USER, offsetof(struct options, max_jobs_per_user), false },
	{ KEY_SUBJOB_KB, offsetof(struct options, subjob_kb), false },
	{ KEY_DEPTH, offsetof(struct options, depth), false },
	{ KEY_STATE_DIR, offsetof(struct options, state_dir), true },
	{ KEY_CHECKPOINT_MS, offsetof(struct options, checkpoint_ms), false },
	{ KEY_NBD, offsetof(struct options, nbd), true },
	{ KEY_NBD_CONNECTIONS, offsetof(struct options, nbd_connections), false },
	{ KEY_NBD_TIMEOUT_MS, offsetof(struct options, nbd_timeout_ms), false },
	{ KEY_IO_ENGINE, offsetof(struct options, io_engine), true },
	{ KEY_RATE, offsetof(struct options, rate), true },
};

static const struct fuse_opt option_spec[] = {
	OPTION("--pages=%u", pages),
	FUSE_OPT_KEY("--pages", KEY_PAGES),
	OPTION("--max-jobs=%u", max_jobs),
	FUSE_OPT_KEY("--max-jobs", KEY_MAX_JOBS),
	OPTION("--max-jobs-per-user=%u", max_jobs_per_user),
	FUSE_OPT_KEY("--max-jobs-per-user", KEY_MAX_JOBS_PER_USER),
	OPTION("--subjob-kb=%u", subjob_kb),
	FUSE_OPT_KEY("--subjob-kb", KEY_SUBJOB_KB),
	OPTION("--depth=%u", depth),
	FUSE_OPT_KEY("--depth", KEY_DEPTH),
	OPTION("--state-dir=%s", state_dir),
	FUSE_OPT_KEY("--state-dir", KEY_STATE_DIR),
	OPTION("--checkpoint-ms=%u", checkpoint_ms),
	FUSE_OPT_KEY("--checkpoint-ms", KEY_CHECKPOINT_MS),
	OPTION("--nbd=%s", nbd),
	FUSE_OPT_KEY("--nbd", KEY_NBD),
	OPTION("--nbd-connections=%u", nbd_connections),
	FUSE_OPT_KEY("--nbd-connections", KEY_NBD_CONNECTIONS),
	OPTION("--nbd-timeout-ms=%u", nbd_timeout_ms),
	FUSE_OPT_KEY("--nbd-timeout-ms", KEY_NBD_TIMEOUT_MS),
	OPTION("--io-engine=%s", io_engine),
	FUSE_OPT_KEY("--io-engine", KEY_IO_ENGINE),
	OPTION("--rate=%s", rate),
	FUSE_OPT_KEY("--rate", KEY_RATE),
	OPTION("-h", show_help),
	OPTION("--help", show_help),
	OPTION("-V", show_version),
	OPTION("--version", show_version),
	FUSE_OPT_END,
};

struct daemon {
	struct fuse_session *se;
	struct kfs_service *svc;
	char *mountpoint;
	sigset_t signals;
	pthread_mutex_t lock;		/* orders the signal thread's shutdown against main()'s teardown */
	bool loop_over;
	bool stopping;			/* the signal thread has begun a shutdown */
	const char *stopping_jobs;	/* what a shutdown does to jobs: "cancelling", or "interrupting" (--state-dir) */
};

/* The --help text, on standard output; libfuse's own option help follows it. */
static void usage(void)
{
	printf("Usage: kcopydfs [OPTION]... MOUNTPOINT\n"
	       "Serve the kcopyd copy engine as a FUSE filesystem of control files at MOUNTPOINT.\n"
	       "Without -f it goes into the background once mounted and logs to syslog.\n\n"
	       "kcopydfs options:\n"
	       "    --pages=N              engine I/O buffer budget in 4 KiB pages (default %u)\n"
	       "    --max-jobs=N           jobs queued or running at once (default 4096)\n"
	       "    --max-jobs-per-user=N  jobs (any state) a user other than root may have\n"
	       "                           (default 1024; over it mkdir and clone fail with EDQUOT)\n"
	       "    --subjob-kb=N          sub-job size in KiB (default %u)\n"
	       "    --depth=N              sub-jobs in flight per job (default %u)\n"
	       "    --state-dir=DIR        keep job records in DIR, to resume them after a crash\n"
	       "    --checkpoint-ms=N      with --state-dir, record progress every N ms (default 1000)\n"
	       "    --nbd=any|unix|none    which NBD regions jobs may name: over TCP and Unix\n"
	       "                           sockets (default), Unix sockets only, or none\n"
	       "    --nbd-connections=N    connections per NBD region when its server allows\n"
	       "                           several (multi-conn; default %u, at most %u)\n"
	       "    --nbd-timeout-ms=N     give up an NBD server that does not answer for N ms\n"
	       "                           (default %u)\n"
	       "    --io-engine=ENGINE     auto (io_uring where the kernel allows it, else\n"
	       "                           libaio; the default, or $KCOPYD_IO_ENGINE), io_uring\n"
	       "                           or libaio (one named that cannot run: exit 1)\n"
	       "    --rate=BYTES           bytes read per second by all jobs together, at\n"
	       "                           least 4K (K, M, G, T: powers of 1024; default none)\n\n"
	       "Exit status: 0 unmounted or help shown, 1 failure, 2 usage error.  See kcopydfs(8).\n\n"
	       "FUSE options:\n",
	       DEFAULT_PAGES, KCOPYD_DEFAULT_SUBJOB_SECTORS / 2, KCOPYD_DEFAULT_DEPTH, KCOPYD_NBD_DEFAULT_CONNECTIONS,
	       KCOPYD_NBD_MAX_CONNECTIONS, KCOPYD_NBD_DEFAULT_TIMEOUT_MS);
}

/*
 * check_io_engine() - before the mount: the engine asked for (--io-engine,
 * else $KCOPYD_IO_ENGINE, resolved by the library as the client's
 * creation will) must be one, and io_uring asked for must be able to run
 * here, else say why on standard error.
 * Return: the exit status: 0 (go on), 2 (the variable names no engine: a
 * usage error, as a bad --io-engine is) or 1 (io_uring cannot run here).
 */
static int check_io_engine(unsigned int asked)
{
	char why[256];
	int r = kcopyd_io_engine_probe(asked, why, sizeof(why));

	if (r == -EINVAL) {
		kfs_log(LOG_ERR, "%s", why);
		return 2;
	}
	if (r < 0) {
		kfs_log(LOG_ERR, "the io_uring engine cannot run here: %s", why);
		return 1;
	}
	return 0;
}

static void version(void)
{
	printf("kcopydfs (kcopyd) %s\n"
	       "License LGPLv2.1+: GNU LGPL version 2.1 or later <https://gnu.org/licenses/lgpl-2.1.html>.\n"
	       "This is free software: you are free to change and redistribute it.\n"
	       "There is NO WARRANTY, to the extent permitted by law.\n",
	       PACKAGE_VERSION);
}

/* Report a usage error the GNU way: what is wrong, then where to look. */
static void usage_error(const char *what, const char *argument)
{
	if (argument)
		kfs_log(LOG_ERR, "%s '%s'", what, argument);
	else
		kfs_log(LOG_ERR, "%s", what);
	fputs("Try 'kcopydfs --help' for more information.\n", stderr);
}

/* @arg is the value of options->value_key: store it.  Return: 0 (the argument is used up). */
static int take_value(struct options *options, const char *arg)
{
	unsigned int index;

	for (index = 0; (int)separate_values[index].key != options->value_key; index++)
		;
	options->value_key = 0;
	if (separate_values[index].is_text) {
		char **field = (char **)((char *)options + separate_values[index].offset);

		free(*field);
		*field = strdup(arg);
		if (!*field) {
			options->bad_usage = "out of memory for";
			options->bad_argument = options->value_option;
		}
	} else {
		unsigned int *field = (unsigned int *)((char *)options + separate_values[index].offset);
		unsigned long value;
		char *end;

		errno = 0;
		value = strtoul(arg, &end, 10);
		if (arg[0] < '0' || arg[0] > '9' || *end != '\0' || errno || value > UINT_MAX) {
			options->bad_usage = "bad number for";
			options->bad_argument = options->value_option;
		}
		*field = (unsigned int)value;
	}
	return 0;
}

/*
 * fuse_opt_parse()'s callback for what option_spec does not match: the
 * mountpoint and libfuse's options, kept (return 1) for fuse_parse_cmdline()
 * and fuse_session_new().  libfuse's only long options are --debug and the
 * --help and --version that option_spec takes, so any other "--name" is
 * unknown; a second operand is one too many.  The first such argument is
 * recorded for main() to report, after --help and --version, which win.
 */
static int parse_option(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *options = data;

	if (options->bad_usage)
		return 1;
	if (options->value_key)
		return take_value(options, arg);
	if (key >= KEY_PAGES && key <= KEY_RATE) {
		options->value_key = key;
		options->value_option = arg;
		return 0;
	}
	if (key == FUSE_OPT_KEY_NONOPT && ++options->operands > 1) {
		options->bad_usage = "extra operand";
		options->bad_argument = arg;
	} else if (key == FUSE_OPT_KEY_OPT && strncmp(arg, "--", 2) == 0 && strcmp(arg, "--debug") != 0 &&
		   strcmp(arg, "--") != 0) {
		options->bad_usage = "unrecognized option";
		options->bad_argument = arg;
	}
	return 1;
}

/*
 * Tell the service manager how we are, as sd_notify(3) does, without
 * linking libsystemd: one datagram to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace).  Nothing
 * when it is not set, as when not run by systemd with Type=notify.
 * Return: 0 or -errno (the caller logs it; the daemon serves either way).
 */
static int notify_service_manager(const char *state)
{
	const char *socket_name = getenv("NOTIFY_SOCKET");
	struct sockaddr_un address = { .sun_family = AF_UNIX };
	size_t name_length;
	socklen_t address_length;
	ssize_t sent;
	int fd, r = 0;

	if (!socket_name || !*socket_name)
		return 0;
	name_length = strlen(socket_name);
	if ((socket_name[0] != '/' && socket_name[0] != '@') || name_length >= sizeof(address.sun_path))
		return -EINVAL;
	memcpy(address.sun_path, socket_name, name_length);
	if (address.sun_path[0] == '@')
		address.sun_path[0] = '\0';	/* abstract: no terminating NUL counted */
	address_length = offsetof(struct sockaddr_un, sun_path) + name_length + (socket_name[0] == '/');
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	sent = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&address, address_length);
	if (sent < 0)
		r = -errno;
	close(fd);
	return r;
}

/* The dev_t of the filesystem mounted at @mountpoint, from /proc/self/mountinfo (a stat would ask ourselves). */
static dev_t mount_dev_of(const char *mountpoint)
{
	FILE *mountinfo = fopen("/proc/self/mountinfo", "re");
	char line[4096], point[PATH_MAX];
	unsigned int major_number, minor_number;
	dev_t dev = 0;

	if (!mountinfo)
		return 0;
	while (fgets(line, sizeof(line), mountinfo)) {
		if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &major_number, &minor_number, point) == 3 &&
		    strcmp(point, mountpoint) == 0)
			dev = makedev(major_number, minor_number);	/* the last one is on top */
	}
	fclose(mountinfo);
	return dev;
}

/* A mount from /proc/self/mountinfo: where it is and its type ("fuse.kcopydfs", "ext4", ...). */
struct mount_entry {
	char point[PATH_MAX];
	char fstype[64];
};

#define KCOPYDFS_FSTYPE "fuse.kcopydfs"	/* what -osubtype=kcopydfs shows in mountinfo */
#define PROBE_MS 3000			/* how long a FUSE mount at the mountpoint has to answer */
#define HIDDEN_COUNT_MAX 10000u		/* entries counted in a non-empty mountpoint, at most */

/* Undo mountinfo's octal escapes (\040 a blank, \011, \012, \134 a backslash) in place. */
static void unescape_mountinfo(char *field)
{
	char *from = field, *to = field;

	while (*from) {
		if (from[0] == '\\' && from[1] >= '0' && from[1] <= '3' && from[2] >= '0' && from[2] <= '7' &&
		    from[3] >= '0' && from[3] <= '7') {
			*to++ = (char)((from[1] - '0') << 6 | (from[2] - '0') << 3 | (from[3] - '0'));
			from += 4;
		} else {
			*to++ = *from++;
		}
	}
	*to = '\0';
}

/* Is the mount point @point @path, or a directory above it?  Both absolute and canonical. */
static bool point_holds(const char *point, const char *path)
{
	size_t len = strlen(point);

	if (strcmp(point, "/") == 0)
		return true;
	return strncmp(point, path, len) == 0 && (path[len] == '\0' || path[len] == '/');
}

/*
 * The mount that holds @path (absolute and canonical, as libfuse's
 * fuse_parse_cmdline() leaves the mountpoint): the one with the longest
 * mount point that is @path or above it, and of equals the last listed,
 * which is on top.  From /proc/self/mountinfo only: asking the path itself
 * would ask a FUSE daemon, which may not answer.
 * Return: 0 and *@found, -ENOENT when no mount holds it, or -errno.
 */
static int mount_holding(const char *path, struct mount_entry *found)
{
	FILE *mountinfo = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, *fields[64], *saveptr, *field;
	size_t line_size = 0, best_len = 0, count;
	bool have = false;

	if (!mountinfo)
		return -errno;
	while (getline(&line, &line_size, mountinfo) > 0) {
		/* ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER-OPTIONS */
		count = 0;
		for (field = strtok_r(line, " \n", &saveptr); field && count < 64; field = strtok_r(NULL, " \n", &saveptr))
			fields[count++] = field;
		if (count < 8)
			continue;
		for (size_t index = 6; index + 1 < count; index++) {
			if (strcmp(fields[index], "-") != 0)
				continue;
			unescape_mountinfo(fields[4]);
			if (point_holds(fields[4], path) && strlen(fields[4]) >= best_len) {
				best_len = strlen(fields[4]);
				snprintf(found->point, sizeof(found->point), "%s", fields[4]);
				snprintf(found->fstype, sizeof(found->fstype), "%s", fields[index + 1]);
				have = true;
			}
			break;
		}
	}
	free(line);
	fclose(mountinfo);
	return have ? 0 : -ENOENT;
}

/* "fuse", "fuseblk" or "fuse.SUBTYPE": a filesystem whose every answer comes from a process. */
static bool is_fuse(const char *fstype)
{
	return strncmp(fstype, "fuse", 4) == 0;
}

/*
 * Does the FUSE mount at @mountpoint answer?  A forced statx asks its
 * daemon (a plain one may be answered from the attributes the kernel kept).
 * It is made in a child, so that a daemon that is stopped or stuck holds
 * the child and not us; such a child is killed and reaped, or left if it
 * does not die within 100 ms.
 * Return: 0 it answered; -ENOTCONN its daemon is gone; -ETIMEDOUT no answer
 * within PROBE_MS; or another -errno.
 */
static int probe_mount(const char *mountpoint)
{
	struct statx stx;
	int child_status, waited;
	pid_t pid, done;

	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		if (statx(AT_FDCWD, mountpoint, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &stx) == 0)
			_exit(0);
		_exit(errno > 0 && errno < 256 ? errno : EIO);
	}
	for (waited = 0; waited < PROBE_MS; waited += 10) {
		done = waitpid(pid, &child_status, WNOHANG);
		if (done == pid)
			return WIFEXITED(child_status) ? -WEXITSTATUS(child_status) : -EIO;
		if (done < 0)
			return -errno;
		usleep(10 * 1000);
	}
	/* A FUSE request waits killably: the child is usually gone at once, so reap it (100 ms at most). */
	kill(pid, SIGKILL);
	for (waited = 0; waited < 100 && waitpid(pid, &child_status, WNOHANG) == 0; waited += 10)
		usleep(10 * 1000);
	return -ETIMEDOUT;
}

/* read_proc() - up to @len - 1 bytes of /proc/@pid/@name into @buf; the bytes read, or -1. */
static ssize_t read_proc(pid_t pid, const char *name, char *buf, size_t len)
{
	char path[64];
	ssize_t got;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	got = read(fd, buf, len - 1);
	close(fd);
	return got;
}

/*
 * A kcopydfs process whose last argument is @mountpoint, for a message:
 * a guess (another kcopydfs may have been started with a relative path),
 * 0 when none is found.
 */
static pid_t daemon_serving(const char *mountpoint)
{
	DIR *proc = opendir("/proc");
	struct dirent *entry;
	pid_t found = 0;

	if (!proc)
		return 0;
	while (!found && (entry = readdir(proc))) {
		char comm[32] = "", args[PATH_MAX + 512];
		const char *last = args;
		pid_t pid = (pid_t)atoi(entry->d_name);
		ssize_t len;

		if (pid <= 0 || pid == getpid())
			continue;
		len = read_proc(pid, "comm", comm, sizeof(comm));
		if (len <= 0 || strncmp(comm, "kcopydfs\n", 9) != 0)
			continue;
		len = read_proc(pid, "cmdline", args, sizeof(args));
		if (len <= 1 || args[len - 1] != '\0')
			continue;
		for (ssize_t index = 0; index < len - 1; index++) {
			if (args[index] == '\0')
				last = &args[index + 1];
		}
		if (strcmp(last, mountpoint) == 0)
			found = pid;
	}
	closedir(proc);
	return found;
}

/*
 * A daemon killed with SIGKILL leaves its mount behind, answering ENOTCONN
 * ("Transport endpoint is not connected").  Detach it so we can mount again.
 */
static void clean_dead_mount(const char *mountpoint)
{
	pid_t pid;

	kfs_log(LOG_WARNING, "%s: a dead mount is left from an earlier daemon; unmounting it", mountpoint);
	if (umount2(mountpoint, MNT_DETACH) == 0)
		return;
	pid = fork();
	if (pid == 0) {
		execlp("fusermount3", "fusermount3", "-u", "-z", mountpoint, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

/* Say so when mounting on @mountpoint hides what is in it (fuse3 mounts over it without a word). */
static void warn_if_not_empty(const char *mountpoint)
{
	DIR *dir = opendir(mountpoint);
	struct dirent *entry;
	unsigned int entries = 0;

	if (!dir)
		return;	/* fuse_session_mount() will say what is wrong with it */
	while (entries < HIDDEN_COUNT_MAX && (entry = readdir(dir))) {
		if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0)
			entries++;
	}
	closedir(dir);
	if (entries)
		kfs_log(LOG_WARNING, "%s is not empty: its %s%u entr%s hidden while kcopydfs is mounted there",
			mountpoint, entries == HIDDEN_COUNT_MAX ? "more than " : "", entries,
			entries == 1 ? "y is" : "ies are");
}

/*
 * Before mounting on @mountpoint: refuse a mountpoint that is a live
 * kcopydfs mount (a second mount on it would hide the first one's jobs
 * until it is unmounted) or is inside one; detach a dead FUSE mount left
 * there; warn when the directory is not empty.  A FUSE mount is asked
 * nothing but probe_mount()'s one statx, in a child.
 * Return: 0 to mount, or -errno when refused (the reason is logged).
 */
static int check_mountpoint(const char *mountpoint)
{
	struct mount_entry holder;
	char served_by[32] = "";
	pid_t pid;
	int r;

	if (mount_holding(mountpoint, &holder) < 0)
		return 0;	/* no /proc/self/mountinfo: mount as libfuse would */
	if (strcmp(holder.fstype, KCOPYDFS_FSTYPE) == 0 && strcmp(holder.point, mountpoint) != 0) {
		kfs_log(LOG_ERR, "%s is inside the kcopydfs mount at %s: mount on a directory outside it", mountpoint,
			holder.point);
		return -EBUSY;
	}
	if (strcmp(holder.point, mountpoint) == 0 && is_fuse(holder.fstype)) {
		r = probe_mount(mountpoint);
		if (r == -ENOTCONN) {
			clean_dead_mount(mountpoint);
			if (mount_holding(mountpoint, &holder) < 0)
				return 0;
		} else if (strcmp(holder.fstype, KCOPYDFS_FSTYPE) == 0) {
			pid = daemon_serving(mountpoint);
			if (pid)
				snprintf(served_by, sizeof(served_by), " (pid %d)", (int)pid);
			if (r == -ETIMEDOUT)
				kfs_log(LOG_ERR, "%s is a kcopydfs mount%s that does not answer (its daemon stopped or stuck?); "
					"unmount it first: fusermount3 -u -z %s", mountpoint, served_by, mountpoint);
			else
				kfs_log(LOG_ERR, "%s is already a kcopydfs mount%s; unmount it first: fusermount3 -u %s",
					mountpoint, served_by, mountpoint);
			return -EBUSY;
		}
	}
	/* Listing a FUSE mount's directory would ask its daemon, which need not answer: not looked at. */
	if (!is_fuse(holder.fstype))
		warn_if_not_empty(mountpoint);
	return 0;
}

/*
 * Each queued or running job holds a descriptor per region (and --max-jobs
 * is 4096 by default), which the usual soft limit of 1024 would refuse with
 * EMFILE.  Nothing here uses select(2), so the soft limit can be the hard one.
 */
static void raise_fd_limit(void)
{
	struct rlimit limit;

	if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
		limit.rlim_cur = limit.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &limit);
	}
}

static void *signal_thread(void *arg)
{
	struct daemon *daemon = arg;
	struct statx stx;
	int sig;

	while (sigwait(&daemon->signals, &sig) != 0)
		;
	pthread_mutex_lock(&daemon->lock);
	daemon->stopping = true;
	if (daemon->loop_over) {
		/* The loop ended on its own (an external unmount): main() tears down. */
		pthread_mutex_unlock(&daemon->lock);
		return NULL;
	}
	kfs_log(LOG_NOTICE, "signal %d (%s): %s jobs and unmounting %s", sig, strsignal(sig), daemon->stopping_jobs,
		daemon->mountpoint);
	(void)notify_service_manager("STOPPING=1");
	kfs_service_shutdown(daemon->svc);
	fuse_session_exit(daemon->se);
	pthread_mutex_unlock(&daemon->lock);
	/*
	 * One request wakes a worker, which answers it and sees the session has
	 * exited.  If some other request did that first, nobody answers this
	 * one: it ends when main() closes the session, or with the process.
	 * A plain stat would be answered by the kernel from the attributes we
	 * let it keep, and wake nobody.
	 */
	(void)statx(AT_FDCWD, daemon->mountpoint, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &stx);
	return NULL;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts cmdline = { 0 };
	struct options options = { .pages = DEFAULT_PAGES };
	struct kfs_config config = { 0 };
	struct daemon daemon = { 0 };
	struct fuse_loop_config loop_config = { .clone_fd = 0, .max_idle_threads = 16 };
	struct kfs_fs *fs = NULL;
	pthread_t signal_tid;
	int status = 1, r;

	kfs_log_init();
	if (fuse_opt_parse(&args, &options, option_spec, parse_option) < 0) {
		/* libfuse has said which option lacks its number, or has a bad one. */
		usage_error("bad option value", NULL);
		return 2;
	}
	/* --help and --version win over any other argument, good or bad, as in GNU programs. */
	if (options.show_help) {
		usage();
		fuse_cmdline_help();
		fuse_lowlevel_help();
		status = 0;
		goto out_free_args;
	}
	if (options.show_version) {
		version();
		status = 0;
		goto out_free_args;
	}
	if (!options.bad_usage && options.value_key) {
		options.bad_usage = "missing number after";
		options.bad_argument = options.value_option;
	}
	if (options.bad_usage) {
		usage_error(options.bad_usage, options.bad_argument);
		status = 2;
		goto out_free_args;
	}
	if (fuse_parse_cmdline(&args, &cmdline) < 0)
		goto out_free_args;	/* libfuse has said why: a mountpoint that cannot be resolved */
	if (!cmdline.mountpoint) {
		usage_error("missing mountpoint", NULL);
		status = 2;
		goto out_free_args;
	}
	if (options.pages == 0 || (options.subjob_kb && options.subjob_kb % 4)) {
		usage_error("--pages must be at least 1 and --subjob-kb a multiple of 4", NULL);
		status = 2;
		goto out_free_args;
	}
	if (options.nbd && strcmp(options.nbd, "any") != 0 && strcmp(options.nbd, "unix") != 0 &&
	    strcmp(options.nbd, "none") != 0) {
		usage_error("--nbd takes any, unix or none, not", options.nbd);
		status = 2;
		goto out_free_args;
	}
	if (options.nbd_connections > KCOPYD_NBD_MAX_CONNECTIONS) {
		usage_error("--nbd-connections is at most 16", NULL);
		status = 2;
		goto out_free_args;
	}
	if (options.io_engine && kcopyd_io_engine_parse(options.io_engine, &config.engine.io_engine) < 0) {
		usage_error("--io-engine takes auto, io_uring or libaio, not", options.io_engine);
		status = 2;
		goto out_free_args;
	}
	if (options.rate) {
		char why[256], message[300];

		/* The grammar of rate= in a job description (proto/jobspec.h), for the daemon's total. */
		if (jobspec_parse_rate(options.rate, strlen(options.rate), &config.engine.rate, why, sizeof(why)) < 0) {
			snprintf(message, sizeof(message), "--rate: %s", why);
			usage_error(message, NULL);
			status = 2;
			goto out_free_args;
		}
	}
	status = check_io_engine(config.engine.io_engine);
	if (status)
		goto out_free_args;
	status = 1;
	if (options.state_dir) {
		/*
		 * Checked (and made if missing) now, so that a bad one fails before
		 * the mount, with its reason on standard error.  Then made absolute,
		 * since a daemon runs in /: once its owner and modes passed, nobody
		 * else can change what the path leads to.
		 */
		struct kfs_state_dir *probe;
		char why[512], *absolute;

		r = kfs_state_dir_open(options.state_dir, why, sizeof(why), &probe);
		if (r < 0) {
			kfs_log(LOG_ERR, "--state-dir %s: %s", options.state_dir, why[0] ? why : strerror(-r));
			goto out_free_args;
		}
		kfs_state_dir_close(probe);
		absolute = realpath(options.state_dir, NULL);
		if (!absolute) {
			kfs_log(LOG_ERR, "--state-dir %s: %s", options.state_dir, strerror(errno));
			goto out_free_args;
		}
		free(options.state_dir);
		options.state_dir = absolute;
	}
	daemon.mountpoint = cmdline.mountpoint;
	daemon.stopping_jobs = options.state_dir ? "interrupting" : "cancelling";
	/* The kernel checks the modes of the job files; without this FUSE would let anyone in. */
	fuse_opt_add_arg(&args, "-odefault_permissions");
	fuse_opt_add_arg(&args, "-ofsname=kcopydfs");
	fuse_opt_add_arg(&args, "-osubtype=kcopydfs");

	r = kfs_fs_create(cmdline.singlethread, &fs);
	if (r < 0) {
		kfs_log(LOG_ERR, "cannot start: %s", strerror(-r));
		goto out_free_args;
	}
	daemon.se = fuse_session_new(&args, &kfs_fs_ops, sizeof(kfs_fs_ops), fs);
	if (!daemon.se) {
		/* libfuse has named the option it does not know ("fuse: unknown option(s)"). */
		fputs("Try 'kcopydfs --help' for more information.\n", stderr);
		status = 2;
		goto out_free_fs;
	}
	if (check_mountpoint(cmdline.mountpoint) < 0)
		goto out_destroy_session;
	if (fuse_session_mount(daemon.se, cmdline.mountpoint) != 0)
		goto out_destroy_session;	/* libfuse has said why */
	if (fuse_daemonize(cmdline.foreground) != 0)
		goto out_unmount;
	/* From here on standard error is /dev/null unless -f (or -d) was given. */
	if (!cmdline.foreground)
		kfs_log_to_syslog();

	/* Block the shutdown signals before any thread starts: every thread inherits the mask. */
	sigemptyset(&daemon.signals);
	sigaddset(&daemon.signals, SIGTERM);
	sigaddset(&daemon.signals, SIGINT);
	sigaddset(&daemon.signals, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &daemon.signals, NULL);
	signal(SIGPIPE, SIG_IGN);

	raise_fd_limit();
	config.engine.num_pages = options.pages;
	config.engine.subjob_sectors = options.subjob_kb * 2;
	config.engine.depth = options.depth;
	config.max_jobs = options.max_jobs;
	config.max_jobs_per_user = options.max_jobs_per_user;
	config.mountpoint = cmdline.mountpoint;
	config.mount_dev = mount_dev_of(cmdline.mountpoint);
	config.state_dir = options.state_dir;
	config.checkpoint_ms = options.checkpoint_ms;
	config.nbd_policy = !options.nbd || strcmp(options.nbd, "any") == 0 ? KFS_NBD_ANY :
			    strcmp(options.nbd, "unix") == 0 ? KFS_NBD_UNIX : KFS_NBD_NONE;
	config.nbd_connections = options.nbd_connections;
	config.nbd_timeout_ms = options.nbd_timeout_ms;
	r = kfs_service_create(&config, kfs_fs_on_change, fs, &daemon.svc);
	if (r < 0) {
		kfs_log(LOG_ERR, "%s: cannot start the copy engine: %s", cmdline.mountpoint, strerror(-r));
		goto out_unmount;
	}
	kfs_fs_attach(fs, daemon.svc);
	pthread_mutex_init(&daemon.lock, NULL);
	r = -pthread_create(&signal_tid, NULL, signal_thread, &daemon);
	if (r < 0) {
		kfs_log(LOG_ERR, "%s: cannot start the signal thread: %s", cmdline.mountpoint, strerror(-r));
		goto out_destroy_service;
	}
	pthread_detach(signal_tid);
	{
		char why[256];
		unsigned int engine = kfs_service_io_engine(daemon.svc, why, sizeof(why));

		kfs_log(LOG_INFO, "serving %s (version %s): %u pages (%u MiB) of I/O buffers, I/O engine %s, %s%s",
			cmdline.mountpoint, PACKAGE_VERSION, options.pages, options.pages / 256,
			kcopyd_io_engine_name(engine), options.state_dir ? "job records in " : "no state directory",
			options.state_dir ? options.state_dir : "");
		if (why[0])
			kfs_log(LOG_NOTICE, "%s: I/O engine %s: %s", cmdline.mountpoint, kcopyd_io_engine_name(engine), why);
	}
	r = notify_service_manager("READY=1");
	if (r < 0)
		kfs_log(LOG_WARNING, "cannot tell the service manager we are ready ($NOTIFY_SOCKET): %s", strerror(-r));

	/* -o clone_fd and -o max_idle_threads=N, when given, win over our defaults. */
	loop_config.clone_fd = cmdline.clone_fd;
	if (cmdline.max_idle_threads != UINT_MAX)
		loop_config.max_idle_threads = cmdline.max_idle_threads;
	if (cmdline.singlethread)
		r = fuse_session_loop(daemon.se);
	else
		r = fuse_session_loop_mt(daemon.se, &loop_config);
	status = r == 0 ? 0 : 1;
	if (r != 0)
		kfs_log(LOG_ERR, "%s: the FUSE loop failed: %s", cmdline.mountpoint, r < 0 ? strerror(-r) : "signal");

	pthread_mutex_lock(&daemon.lock);
	daemon.loop_over = true;
	if (!daemon.stopping) {
		kfs_log(LOG_NOTICE, "%s was unmounted: %s jobs", cmdline.mountpoint, daemon.stopping_jobs);
		(void)notify_service_manager("STOPPING=1");
	}
	pthread_mutex_unlock(&daemon.lock);
	kfs_fs_drain(fs);
out_destroy_service:
	/* Cancels what is left and waits for in-flight I/O; waiters get their answers. */
	kfs_service_destroy(daemon.svc);
out_unmount:
	fuse_session_unmount(daemon.se);
	if (status == 0)
		kfs_log(LOG_INFO, "%s: unmounted, exiting", cmdline.mountpoint);
out_destroy_session:
	fuse_session_destroy(daemon.se);
out_free_fs:
	kfs_fs_destroy(fs);
out_free_args:
	free(options.state_dir);
	free(options.nbd);
	free(options.io_engine);
	free(options.rate);
	free(cmdline.mountpoint);
	fuse_opt_free_args(&args);
	kfs_log_close();
	return status;
}
