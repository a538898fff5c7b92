/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kcopydfs: the kcopyd copy engine as a FUSE filesystem.
 *
 *   kcopydfs [--pages N] [--max-jobs N] [--subjob-kb N] [--depth N] [FUSE options] MOUNTPOINT
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
 */
#include "config.h"

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
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kcopydfs/fs.h"
#include "kcopydfs/state.h"

#define DEFAULT_PAGES 16384u	/* 64 MiB of I/O buffers */

struct options {
	unsigned int pages;
	unsigned int max_jobs;
	unsigned int subjob_kb;
	unsigned int depth;
	char *state_dir;
	unsigned int checkpoint_ms;
	int show_help;
};

#define OPTION(template, field) { template, offsetof(struct options, field), 1 }
static const struct fuse_opt option_spec[] = {
	OPTION("--pages=%u", pages),
	OPTION("--pages %u", pages),
	OPTION("--max-jobs=%u", max_jobs),
	OPTION("--max-jobs %u", max_jobs),
	OPTION("--subjob-kb=%u", subjob_kb),
	OPTION("--subjob-kb %u", subjob_kb),
	OPTION("--depth=%u", depth),
	OPTION("--depth %u", depth),
	OPTION("--state-dir=%s", state_dir),
	OPTION("--state-dir %s", state_dir),
	OPTION("--checkpoint-ms=%u", checkpoint_ms),
	OPTION("--checkpoint-ms %u", checkpoint_ms),
	OPTION("-h", show_help),
	OPTION("--help", show_help),
	FUSE_OPT_END,
};

struct daemon {
	struct fuse_session *se;
	struct kfs_service *svc;
	char *mountpoint;
	sigset_t signals;
	pthread_mutex_t lock;		/* orders the signal thread's shutdown against main()'s teardown */
	bool loop_over;
};

static void usage(const char *program)
{
	printf("usage: %s [options] MOUNTPOINT\n\n"
	       "kcopydfs options:\n"
	       "    --pages=N              engine I/O buffer budget in 4 KiB pages (default %u)\n"
	       "    --max-jobs=N           jobs queued or running at once (default 4096)\n"
	       "    --subjob-kb=N          sub-job size in KiB (default 512)\n"
	       "    --depth=N              sub-jobs in flight per job (default 8)\n"
	       "    --state-dir=DIR        keep job records in DIR, to resume them after a crash\n"
	       "    --checkpoint-ms=N      with --state-dir, record progress every N ms (default 1000)\n\n",
	       program, DEFAULT_PAGES);
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

/*
 * A daemon killed with SIGKILL leaves its mount behind, answering ENOTCONN
 * ("Transport endpoint is not connected").  Clear it so we can mount again.
 */
static void clean_dead_mount(const char *mountpoint)
{
	struct statx stx;
	pid_t pid;

	/* Forced: the kernel may still hold the root's attributes, and answer a plain stat from them. */
	if (statx(AT_FDCWD, mountpoint, AT_STATX_FORCE_SYNC, STATX_BASIC_STATS, &stx) == 0 || errno != ENOTCONN)
		return;
	fprintf(stderr, "kcopydfs: %s: a dead mount is left from an earlier daemon; unmounting it\n", mountpoint);
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
	if (daemon->loop_over) {
		/* The loop ended on its own (an external unmount): main() tears down. */
		pthread_mutex_unlock(&daemon->lock);
		return NULL;
	}
	fprintf(stderr, "kcopydfs: signal %d: cancelling jobs and unmounting %s\n", sig, daemon->mountpoint);
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

	if (fuse_opt_parse(&args, &options, option_spec, NULL) < 0)
		return 2;
	if (fuse_parse_cmdline(&args, &cmdline) < 0)
		goto out_free_args;
	if (options.show_help || cmdline.show_help) {
		usage(argv[0]);
		fuse_cmdline_help();
		fuse_lowlevel_help();
		status = 0;
		goto out_free_args;
	}
	if (cmdline.show_version) {
		printf("kcopydfs %s\n", PACKAGE_VERSION);
		status = 0;
		goto out_free_args;
	}
	if (!cmdline.mountpoint) {
		fprintf(stderr, "kcopydfs: no mountpoint (see --help)\n");
		status = 2;
		goto out_free_args;
	}
	if (options.pages == 0 || (options.subjob_kb && options.subjob_kb % 4)) {
		fprintf(stderr, "kcopydfs: --pages must be at least 1 and --subjob-kb a multiple of 4\n");
		status = 2;
		goto out_free_args;
	}
	if (options.state_dir) {
		/* Absolute, since a daemon runs in /; checked now, so a bad one fails before the mount. */
		struct kfs_state_dir *probe;
		char *absolute;

		if (mkdir(options.state_dir, 0700) < 0 && errno != EEXIST) {
			fprintf(stderr, "kcopydfs: --state-dir %s: %s\n", options.state_dir, strerror(errno));
			goto out_free_args;
		}
		absolute = realpath(options.state_dir, NULL);
		if (!absolute) {
			fprintf(stderr, "kcopydfs: --state-dir %s: %s\n", options.state_dir, strerror(errno));
			goto out_free_args;
		}
		free(options.state_dir);
		options.state_dir = absolute;
		r = kfs_state_dir_open(options.state_dir, &probe);
		if (r < 0) {
			fprintf(stderr, "kcopydfs: --state-dir %s: %s%s\n", options.state_dir, strerror(-r),
				r == -EBUSY ? " (another kcopydfs uses it)" : "");
			goto out_free_args;
		}
		kfs_state_dir_close(probe);
	}
	daemon.mountpoint = cmdline.mountpoint;
	/* The kernel checks the modes of the job files; without this FUSE would let anyone in. */
	fuse_opt_add_arg(&args, "-odefault_permissions");
	fuse_opt_add_arg(&args, "-ofsname=kcopydfs");
	fuse_opt_add_arg(&args, "-osubtype=kcopydfs");

	r = kfs_fs_create(cmdline.singlethread, &fs);
	if (r < 0)
		goto out_free_args;
	daemon.se = fuse_session_new(&args, &kfs_fs_ops, sizeof(kfs_fs_ops), fs);
	if (!daemon.se)
		goto out_free_fs;
	clean_dead_mount(cmdline.mountpoint);
	if (fuse_session_mount(daemon.se, cmdline.mountpoint) != 0)
		goto out_destroy_session;
	if (fuse_daemonize(cmdline.foreground) != 0)
		goto out_unmount;

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
	config.mountpoint = cmdline.mountpoint;
	config.mount_dev = mount_dev_of(cmdline.mountpoint);
	config.state_dir = options.state_dir;
	config.checkpoint_ms = options.checkpoint_ms;
	r = kfs_service_create(&config, kfs_fs_on_change, fs, &daemon.svc);
	if (r < 0) {
		fprintf(stderr, "kcopydfs: cannot start the copy engine: %s\n", strerror(-r));
		goto out_unmount;
	}
	kfs_fs_attach(fs, daemon.svc);
	pthread_mutex_init(&daemon.lock, NULL);
	r = -pthread_create(&signal_tid, NULL, signal_thread, &daemon);
	if (r < 0)
		goto out_destroy_service;
	pthread_detach(signal_tid);

	/* -o clone_fd and -o max_idle_threads=N, when given, win over our defaults. */
	loop_config.clone_fd = cmdline.clone_fd;
	if (cmdline.max_idle_threads != UINT_MAX)
		loop_config.max_idle_threads = cmdline.max_idle_threads;
	if (cmdline.singlethread)
		r = fuse_session_loop(daemon.se);
	else
		r = fuse_session_loop_mt(daemon.se, &loop_config);
	status = r == 0 ? 0 : 1;

	pthread_mutex_lock(&daemon.lock);
	daemon.loop_over = true;
	pthread_mutex_unlock(&daemon.lock);
	kfs_fs_drain(fs);
out_destroy_service:
	/* Cancels what is left and waits for in-flight I/O; waiters get their answers. */
	kfs_service_destroy(daemon.svc);
out_unmount:
	fuse_session_unmount(daemon.se);
out_destroy_session:
	fuse_session_destroy(daemon.se);
out_free_fs:
	kfs_fs_destroy(fs);
out_free_args:
	free(options.state_dir);
	free(cmdline.mountpoint);
	fuse_opt_free_args(&args);
	return status;
}
