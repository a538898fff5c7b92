/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Opening a job's regions with exactly its owner's rights: see regions.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kcopyd.h"
#include "kcopydfs/regions.h"

/*
 * How long a helper may take to open a job's regions.  An open that hangs
 * (a path on a stalled network filesystem, or on a FUSE filesystem of the
 * writer's own that never answers; a helper the writer stopped with
 * SIGSTOP, which as the same user it may) would otherwise hold a FUSE
 * worker thread for ever: after this the helper is killed and the write
 * refused with ETIMEDOUT.
 */
#define HELPER_TIMEOUT_MS 10000

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif

/*
 * Helpers of one user that may be running, or stuck and not yet reaped, at
 * once.  A helper stuck for good (in a lookup on a FUSE filesystem the user
 * serves and never answers, which even SIGKILL cannot end) is reaped when
 * it ends; until then it counts, so that a user cannot tie up the FUSE
 * worker threads that serve everybody.  Root is not held to it.
 */
#define HELPERS_PER_USER 4
#define HELPERS_MAX 256
/* How long a helper that answered may take to exit before it is left to be reaped later. */
#define HELPER_EXIT_MS 1000

struct helper {
	pid_t pid;
	uid_t uid;
};

struct kfs_opener {
	/*
	 * The helpers forked and not yet reaped, under ->helpers_lock (taken
	 * alone, never held across a fork or a wait that may block).
	 */
	pthread_mutex_t helpers_lock;
	struct helper helpers[HELPERS_MAX];
	unsigned int helper_count;

	uid_t uid;			/* the daemon's effective ids; read-only after create */
	gid_t gid;
	unsigned int group_count;
	gid_t groups[KFS_MAX_GROUPS];
	uint64_t caps;			/* its effective capabilities */
	bool can_switch;		/* euid 0: may become any owner */
	bool overrides_modes;		/* with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH */
	bool user_ns_known;		/* the kernel has user namespaces: user_ns is the daemon's */
	struct stat mount_ns, root, user_ns;
	bool net_ns_known;		/* net_ns is the daemon's network namespace */
	struct stat net_ns;

	/* Users' NBD handshakes in progress, under ->helpers_lock (see kfs_opener_enter()). */
	struct helper handshakes[HELPERS_MAX];
	unsigned int handshake_count;
};

__attribute__((format(printf, 3, 4)))
static int say(char *why, size_t why_len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, why_len, fmt, ap);
	va_end(ap);
	return 0;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

static uint64_t bit(unsigned int cap)
{
	return (uint64_t)1 << cap;
}

/* The calling thread's effective capabilities, or 0. */
static uint64_t own_capabilities(void)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	if (syscall(SYS_capget, &header, data) < 0)
		return 0;
	return (uint64_t)data[0].effective | (uint64_t)data[1].effective << 32;
}

int kfs_opener_create(struct kfs_opener **result)
{
	struct kfs_opener *opener = calloc(1, sizeof(*opener));
	int count;

	if (!opener)
		return -ENOMEM;
	opener->uid = geteuid();
	opener->gid = getegid();
	count = getgroups(KFS_MAX_GROUPS, opener->groups);
	opener->group_count = count > 0 ? (unsigned int)count : 0;
	opener->caps = own_capabilities();
	opener->can_switch = opener->uid == 0;
	opener->overrides_modes = opener->can_switch && (opener->caps & bit(CAP_DAC_OVERRIDE)) &&
				  (opener->caps & bit(CAP_DAC_READ_SEARCH));
	/* Writers are known by their /proc: without it, every write is refused (learn_writer()). */
	if (stat("/proc/self/ns/mnt", &opener->mount_ns) < 0 || stat("/", &opener->root) < 0)
		memset(&opener->mount_ns, 0, sizeof(opener->mount_ns));
	opener->user_ns_known = stat("/proc/self/ns/user", &opener->user_ns) == 0;
	opener->net_ns_known = stat("/proc/self/ns/net", &opener->net_ns) == 0;
	pthread_mutex_init(&opener->helpers_lock, NULL);
	*result = opener;
	return 0;
}

/* Under helpers_lock: reap the helpers that have ended. */
static void reap_helpers_locked(struct kfs_opener *opener)
{
	unsigned int index = 0;

	while (index < opener->helper_count) {
		/* A place taken for a helper not forked yet (pid 0) is not waited for: waitpid(0) is any child. */
		pid_t got = opener->helpers[index].pid > 0 ? waitpid(opener->helpers[index].pid, NULL, WNOHANG) : 0;

		if (got == 0) {
			index++;
			continue;
		}
		opener->helpers[index] = opener->helpers[--opener->helper_count];
	}
}

void kfs_opener_destroy(struct kfs_opener *opener)
{
	unsigned int index;

	if (!opener)
		return;
	/* Helpers still stuck are killed; what cannot end yet is left to init, never waited for. */
	pthread_mutex_lock(&opener->helpers_lock);
	for (index = 0; index < opener->helper_count; index++)
		if (opener->helpers[index].pid > 0)	/* never kill(0): that is the whole process group */
			kill(opener->helpers[index].pid, SIGKILL);
	reap_helpers_locked(opener);
	pthread_mutex_unlock(&opener->helpers_lock);
	pthread_mutex_destroy(&opener->helpers_lock);
	free(opener);
}

/*
 * Take a place for a helper of @uid, reaping ended ones first.
 * Return: 0, or -EAGAIN when @uid (not root) has HELPERS_PER_USER, or all
 * have HELPERS_MAX, running or stuck.
 */
static int helper_place(struct kfs_opener *opener, uid_t uid)
{
	unsigned int index, of_user = 0;
	int r = 0;

	pthread_mutex_lock(&opener->helpers_lock);
	reap_helpers_locked(opener);
	for (index = 0; index < opener->helper_count; index++)
		of_user += opener->helpers[index].uid == uid;
	if (opener->helper_count == HELPERS_MAX || (uid != 0 && of_user >= HELPERS_PER_USER))
		r = -EAGAIN;
	else
		opener->helpers[opener->helper_count++] = (struct helper){ .pid = 0, .uid = uid };
	pthread_mutex_unlock(&opener->helpers_lock);
	return r;
}

/* The place taken by helper_place() is @pid's now (0: the fork failed, give it back). */
static void helper_started(struct kfs_opener *opener, uid_t uid, pid_t pid)
{
	unsigned int index;

	pthread_mutex_lock(&opener->helpers_lock);
	for (index = 0; index < opener->helper_count; index++) {
		if (opener->helpers[index].pid == 0 && opener->helpers[index].uid == uid) {
			if (pid > 0)
				opener->helpers[index].pid = pid;
			else
				opener->helpers[index] = opener->helpers[--opener->helper_count];
			break;
		}
	}
	pthread_mutex_unlock(&opener->helpers_lock);
}

/*
 * Wait HELPER_EXIT_MS at most for @pid to end (it answered, or was killed),
 * and reap it then; a helper that cannot end yet keeps its place and is
 * reaped by a later helper_place().
 */
static void helper_finish(struct kfs_opener *opener, pid_t pid)
{
	int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

	if (pidfd >= 0) {
		struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

		while (poll(&pfd, 1, HELPER_EXIT_MS) < 0 && errno == EINTR)
			;
		close(pidfd);
	}
	pthread_mutex_lock(&opener->helpers_lock);
	reap_helpers_locked(opener);
	pthread_mutex_unlock(&opener->helpers_lock);
}

int kfs_opener_enter(struct kfs_opener *opener, uid_t uid)
{
	unsigned int index, of_user = 0;
	int r = 0;

	pthread_mutex_lock(&opener->helpers_lock);
	for (index = 0; index < opener->handshake_count; index++)
		of_user += opener->handshakes[index].uid == uid;
	if (opener->handshake_count == HELPERS_MAX || (uid != 0 && of_user >= HELPERS_PER_USER))
		r = -EAGAIN;
	else
		opener->handshakes[opener->handshake_count++] = (struct helper){ .uid = uid };
	pthread_mutex_unlock(&opener->helpers_lock);
	return r;
}

void kfs_opener_leave(struct kfs_opener *opener, uid_t uid)
{
	unsigned int index;

	pthread_mutex_lock(&opener->helpers_lock);
	for (index = 0; index < opener->handshake_count; index++) {
		if (opener->handshakes[index].uid == uid) {
			opener->handshakes[index] = opener->handshakes[--opener->handshake_count];
			break;
		}
	}
	pthread_mutex_unlock(&opener->helpers_lock);
}

int kfs_opener_overrides_modes(const struct kfs_opener *opener)
{
	return opener->overrides_modes;
}

/* The value of the line "KEY:\t..." of a /proc status text, or NULL. */
static const char *status_value(const char *status, const char *key)
{
	size_t key_len = strlen(key);
	const char *line;

	for (line = status; line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
		if (strncmp(line, key, key_len) == 0 && line[key_len] == ':')
			return line + key_len + 1;
	return NULL;
}

/*
 * The writer's directory in /proc, opened once: everything read of the
 * writer goes through it (openat, fstatat), so all of it is of that one
 * task.  Should the writer die and its pid be reused meanwhile, the reads
 * fail instead of reading the next process's.
 * Return: an O_PATH descriptor, or -errno (-ESRCH: it has gone).
 */
static int writer_dir(pid_t pid)
{
	char path[32];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd >= 0 ? fd : errno == ENOENT ? -ESRCH : -errno;
}

/*
 * What the writer's status says: its filesystem uid (the fourth of the
 * Uid line), effective capabilities and groups.
 * Return: 0, or -errno (-ESRCH: it has gone).
 */
static int read_writer_status(int proc_fd, uid_t *fsuid, uint64_t *caps, unsigned int *group_count, gid_t *groups)
{
	char text[4096 + 1];
	const char *value;
	unsigned long long number;
	unsigned long ids[4];
	unsigned int count = 0;
	ssize_t len;
	int fd, consumed;

	fd = openat(proc_fd, "status", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	len = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (len <= 0)
		return len < 0 ? -errno : -ESRCH;
	text[len] = '\0';
	value = status_value(text, "Uid");
	if (!value || sscanf(value, "%lu %lu %lu %lu", &ids[0], &ids[1], &ids[2], &ids[3]) != 4)
		return -EPROTO;
	*fsuid = (uid_t)ids[3];
	value = status_value(text, "CapEff");
	if (!value || sscanf(value, "%llx", &number) != 1)
		return -EPROTO;
	*caps = number;
	value = status_value(text, "Groups");
	if (!value)
		return -EPROTO;
	while (count < KFS_MAX_GROUPS && sscanf(value, "%llu%n", &number, &consumed) == 1) {
		groups[count++] = (gid_t)number;
		value += consumed;
	}
	*group_count = count;
	return 0;
}

/*
 * The writer's view: the daemon's, or its mount namespace and root, with
 * an O_PATH descriptor of that root in *@root_fd.
 */
static int writer_view(const struct kfs_opener *opener, int proc_fd, struct kfs_view *view, int *root_fd)
{
	struct stat mount_ns, root;

	*root_fd = -1;
	memset(view, 0, sizeof(*view));
	view->daemon = true;
	if (fstatat(proc_fd, "ns/mnt", &mount_ns, 0) < 0 || fstatat(proc_fd, "root", &root, 0) < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	if (same_file(&mount_ns, &opener->mount_ns) && same_file(&root, &opener->root))
		return 0;
	*root_fd = openat(proc_fd, "root", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (*root_fd < 0)
		return errno == ENOENT ? -ESRCH : -errno;
	view->daemon = false;
	view->mnt_ns = mount_ns.st_ino;
	view->root_dev = root.st_dev;
	view->root_ino = root.st_ino;
	return 0;
}

/* Is the writer's user namespace the daemon's?  Capabilities mean something only there. */
static bool in_daemon_user_ns(const struct kfs_opener *opener, int proc_fd)
{
	struct stat user_ns;

	if (!opener->user_ns_known)	/* a kernel without user namespaces: there is only one */
		return true;
	return fstatat(proc_fd, "ns/user", &user_ns, 0) == 0 && same_file(&user_ns, &opener->user_ns);
}

/*
 * What the writer of @cred is, read through @proc_fd: its status (the
 * fsuid must still be the request's; a root writer's capabilities and
 * groups go into @owner) and its view (into @view, and *@root_fd).
 */
static int read_writer(const struct kfs_opener *opener, const struct kfs_cred *cred, int proc_fd,
		       struct kfs_owner *owner, struct kfs_view *view, int *root_fd, char *why, size_t why_len)
{
	gid_t groups[KFS_MAX_GROUPS];
	unsigned int group_count = 0;
	uint64_t caps = 0;
	uid_t fsuid = (uid_t)-1;
	int r;

	r = read_writer_status(proc_fd, &fsuid, &caps, &group_count, groups);
	if (r < 0) {
		say(why, why_len, "cannot read the status of the writer (process %d): %s", (int)cred->pid,
		    strerror(-r));
		return r;
	}
	/* The writer still, as it wrote: else it changed identity since. */
	if (fsuid != cred->uid) {
		say(why, why_len, "the writer (process %d) is no longer uid %u", (int)cred->pid, (unsigned int)cred->uid);
		return -EPERM;
	}
	if (cred->uid == 0) {
		owner->group_count = group_count;
		memcpy(owner->groups, groups, group_count * sizeof(gid_t));
		if (in_daemon_user_ns(opener, proc_fd))
			owner->caps = caps & opener->caps;
	}
	r = writer_view(opener, proc_fd, view, root_fd);
	if (r < 0)
		say(why, why_len, "cannot find the root of the writer (process %d): %s", (int)cred->pid,
		    strerror(-r));
	return r;
}

/* Read what the writer of @cred is (see read_writer()), from its /proc directory. */
static int learn_writer(const struct kfs_opener *opener, const struct kfs_cred *cred, struct kfs_owner *owner,
			struct kfs_view *view, int *root_fd, char *why, size_t why_len)
{
	int proc_fd, r;

	*root_fd = -1;
	if (cred->pid <= 0) {
		/*
		 * Not in the daemon's pid namespace (the daemon in a container,
		 * the writer on the host): nothing more can be known of it.  Its
		 * paths are the daemon's, and it gets no capability, root or not.
		 */
		memset(view, 0, sizeof(*view));
		view->daemon = true;
		return 0;
	}
	proc_fd = writer_dir(cred->pid);
	if (proc_fd < 0) {
		say(why, why_len, "the writer (process %d) has gone: %s", (int)cred->pid, strerror(-proc_fd));
		return proc_fd;
	}
	r = read_writer(opener, cred, proc_fd, owner, view, root_fd, why, why_len);
	close(proc_fd);
	return r;
}

int kfs_owner_of_writer(const struct kfs_opener *opener, const struct kfs_cred *cred, struct kfs_owner *owner,
			int *root_fd, char *why, size_t why_len)
{
	*root_fd = -1;
	memset(owner, 0, offsetof(struct kfs_owner, groups));
	owner->uid = cred->uid;
	owner->gid = cred->gid;
	owner->view.daemon = true;
	if (!cred->groups_irrelevant) {
		owner->group_count = cred->group_count;
		memcpy(owner->groups, cred->groups, cred->group_count * sizeof(gid_t));
	}
	return learn_writer(opener, cred, owner, &owner->view, root_fd, why, why_len);
}

int kfs_owner_root(const struct kfs_opener *opener, const struct kfs_owner *owner, const struct kfs_cred *writer,
		   int *root_fd, char *why, size_t why_len)
{
	struct kfs_owner scratch = { 0 };	/* what is learnt of the resume's writer, unused: the owner is recorded */
	struct kfs_view view;
	int r;

	*root_fd = -1;
	if (owner->view.daemon)
		return 0;
	r = learn_writer(opener, writer, &scratch, &view, root_fd, why, why_len);
	if (r < 0)
		return r;
	if (view.daemon || view.mnt_ns != owner->view.mnt_ns || view.root_dev != owner->view.root_dev ||
	    view.root_ino != owner->view.root_ino) {
		if (*root_fd >= 0)
			close(*root_fd);
		*root_fd = -1;
		say(why, why_len,
		    "the job's paths were written in mount namespace %llu (root %llu:%llu), which this writer "
		    "does not see: resume it from there, or write the description again",
		    (unsigned long long)owner->view.mnt_ns, (unsigned long long)owner->view.root_dev,
		    (unsigned long long)owner->view.root_ino);
		return -ESTALE;
	}
	return 0;
}

int kfs_writer_netns(const struct kfs_opener *opener, const struct kfs_cred *cred, int *net_fd, char *why,
		     size_t why_len)
{
	struct stat net_ns;
	int proc_fd, fd;

	*net_fd = -1;
	if (!opener->net_ns_known)	/* a kernel without network namespaces: there is only one */
		return 0;
	if (cred->pid <= 0) {
		say(why, why_len, "the writer is not in kcopydfs's pid namespace, so the network it sees is "
			 "not known: connect through a Unix socket");
		return -EPERM;
	}
	proc_fd = writer_dir(cred->pid);
	if (proc_fd < 0) {
		say(why, why_len, "the writer (process %d) has gone: %s", (int)cred->pid, strerror(-proc_fd));
		return proc_fd;
	}
	fd = openat(proc_fd, "ns/net", O_RDONLY | O_CLOEXEC);
	close(proc_fd);
	if (fd < 0 || fstat(fd, &net_ns) < 0) {
		int r = errno == ENOENT ? -ESRCH : -errno;

		if (fd >= 0)
			close(fd);
		say(why, why_len, "cannot find the network namespace of the writer (process %d): %s", (int)cred->pid,
		    strerror(-r));
		return r;
	}
	if (same_file(&net_ns, &opener->net_ns)) {
		close(fd);
		return 0;
	}
	*net_fd = fd;
	return 0;
}

/* One open, never through a magic link, and only within @root_fd's tree when it is given. */
static int open_one(int root_fd, const char *path, bool writable)
{
	struct open_how how = {
		.flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
		.resolve = RESOLVE_NO_MAGICLINKS | (root_fd >= 0 ? RESOLVE_IN_ROOT : 0),
	};
	int fd = (int)syscall(SYS_openat2, root_fd >= 0 ? root_fd : AT_FDCWD, path, &how, sizeof(how));

	return fd < 0 ? -errno : fd;
}

/*
 * Connect @fd (non-blocking) to @addr within KFS_CONNECT_TIMEOUT_MS, and
 * make it blocking again.  System calls only (it runs in a helper).
 * Return: 0, or -errno (-EAGAIN: a Unix socket whose backlog is full).
 */
static int connect_in_time(int fd, const struct sockaddr *addr, socklen_t addr_len)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	socklen_t len = sizeof(int);
	int error = 0, r;

	if (connect(fd, addr, addr_len) < 0) {
		if (errno != EINPROGRESS)
			return -errno;
		do
			r = poll(&pfd, 1, KFS_CONNECT_TIMEOUT_MS);
		while (r < 0 && errno == EINTR);
		if (r == 0)
			return -ETIMEDOUT;
		if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
			return -errno;
		if (error)
			return -error;
	}
	return fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0 ? -errno : 0;
}

/* "/proc/self/fd/" and @fd, in @buf (without stdio: it runs in a helper). */
static void proc_fd_path(char *buf, int fd)
{
	static const char prefix[] = "/proc/self/fd/";
	char digits[12];
	unsigned int count = 0, value = (unsigned int)fd;

	do
		digits[count++] = (char)('0' + value % 10);
	while ((value /= 10) && count < sizeof(digits));
	memcpy(buf, prefix, sizeof(prefix) - 1);
	buf += sizeof(prefix) - 1;
	while (count)
		*buf++ = digits[--count];
	*buf = '\0';
}

/*
 * Connect to the Unix socket at @path, resolved as open_one() does: the
 * path is opened O_PATH (search permission on the way is checked there),
 * and the socket connected through that descriptor's /proc/self/fd link,
 * so no other path is ever looked up (connect checks write permission on
 * the socket itself).
 */
static int connect_unix(int root_fd, const char *path)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC,
		.resolve = RESOLVE_NO_MAGICLINKS | (root_fd >= 0 ? RESOLVE_IN_ROOT : 0),
	};
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int path_fd = (int)syscall(SYS_openat2, root_fd >= 0 ? root_fd : AT_FDCWD, path, &how, sizeof(how));
	struct stat st;
	int fd, r;

	if (path_fd < 0)
		return -errno;
	/* st is read only when fstat() filled it. */
	r = fstat(path_fd, &st) < 0 ? -errno : !S_ISSOCK(st.st_mode) ? -ENOTSOCK : 0;
	if (r < 0) {
		close(path_fd);
		return r;
	}
	proc_fd_path(sun.sun_path, path_fd);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	r = fd < 0 ? -errno : connect_in_time(fd, (const struct sockaddr *)&sun, sizeof(sun));
	close(path_fd);
	if (r < 0 && fd >= 0)
		close(fd);
	return r < 0 ? r : fd;
}

static int connect_inet_one(const struct sockaddr_storage *addr, socklen_t addr_len)
{
	int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1, r;

	if (fd < 0)
		return -errno;
	/* NBD requests are small and many: as libnbd does for its own TCP connections. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	r = connect_in_time(fd, (const struct sockaddr *)addr, addr_len);
	if (r < 0) {
		close(fd);
		return r;
	}
	return fd;
}

/* Each address of @request in turn, as libnbd's own connect does.  Return: the socket, or the last -errno. */
static int connect_inet(const struct kfs_request *request)
{
	unsigned int index;
	int r = -EDESTADDRREQ;

	for (index = 0; index < request->nr_addrs && index < KFS_MAX_ADDRS; index++) {
		r = connect_inet_one(&request->addrs[index], request->addr_lens[index]);
		if (r >= 0)
			break;
	}
	return r;
}

/* Are @a and @b the same connection to make (so that a failure of one is the other's)? */
static bool same_target(const struct kfs_request *a, const struct kfs_request *b)
{
	if (a->kind != b->kind)
		return false;
	if (a->kind == KFS_REQ_CONNECT_UNIX)
		return strcmp(a->path, b->path) == 0;
	if (a->kind != KFS_REQ_CONNECT_INET || a->nr_addrs != b->nr_addrs)
		return false;
	for (unsigned int index = 0; index < a->nr_addrs && index < KFS_MAX_ADDRS; index++)
		if (a->addr_lens[index] != b->addr_lens[index] ||
		    memcmp(&a->addrs[index], &b->addrs[index], a->addr_lens[index]) != 0)
			return false;
	return true;
}

/* One request, as the calling process is.  @previous: the one before it and its result, or NULL. */
static int run_request(int root_fd, const struct kfs_request *request, const struct kfs_request *previous,
		       int previous_result)
{
	/* Several connections to one server: one that failed is not tried again at once (one timeout, not four). */
	if (previous && previous_result < 0 && same_target(request, previous))
		return previous_result;
	switch (request->kind) {
	case KFS_REQ_OPEN:
		return open_one(root_fd, request->path, request->writable);
	case KFS_REQ_KEY:
		return open_one(root_fd, request->path, false);
	case KFS_REQ_CONNECT_UNIX:
		return connect_unix(root_fd, request->path);
	case KFS_REQ_CONNECT_INET:
		return connect_inet(request);
	}
	return -EINVAL;
}

/* Does the daemon itself have exactly @owner's rights, so that it can open for it? */
static bool owner_is_daemon(const struct kfs_opener *opener, const struct kfs_owner *owner)
{
	if (!opener->can_switch)
		return owner->uid == opener->uid;
	if (owner->uid != opener->uid || owner->caps != opener->caps)
		return false;
	/* With the mode overrides, groups and gid change nothing an open checks. */
	return opener->overrides_modes ||
	       (owner->gid == opener->gid && owner->group_count == opener->group_count &&
		memcmp(owner->groups, opener->groups, owner->group_count * sizeof(gid_t)) == 0);
}

/* Set the calling process's capabilities (all three sets) to @caps.  Return: 0 or -errno. */
static int set_capabilities(uint64_t caps)
{
	struct __user_cap_header_struct header = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { 0 };

	data[0].effective = data[0].permitted = (uint32_t)caps;
	data[1].effective = data[1].permitted = (uint32_t)(caps >> 32);
	if (syscall(SYS_capset, &header, data) < 0)
		return -errno;
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &header, data) < 0)
		return -errno;
	if (((uint64_t)data[0].effective | (uint64_t)data[1].effective << 32) != caps ||
	    ((uint64_t)data[0].permitted | (uint64_t)data[1].permitted << 32) != caps)
		return -EPERM;
	return 0;
}

/*
 * Become @owner for good: groups, gid and uid (all four of each), then
 * exactly its capabilities.  Only in a helper: there is no way back.
 */
static int become_owner(const struct kfs_owner *owner)
{
	gid_t rgid, egid, sgid, groups[KFS_MAX_GROUPS];
	uid_t ruid, euid, suid;
	long group_count;

	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return -errno;
	/*
	 * Raw system calls: the helper is one thread, and glibc's would signal
	 * threads it no longer has.  Groups that are already the owner's are
	 * left alone: in a user namespace whose setgroups is "deny" (rootless
	 * podman, unshare -r) the call fails even when it changes nothing.
	 */
	group_count = syscall(SYS_getgroups, KFS_MAX_GROUPS, groups);
	if ((group_count != (long)owner->group_count ||
	     memcmp(groups, owner->groups, owner->group_count * sizeof(gid_t)) != 0) &&
	    syscall(SYS_setgroups, (size_t)owner->group_count, owner->groups) < 0)
		return -errno;
	if (syscall(SYS_setresgid, owner->gid, owner->gid, owner->gid) < 0)
		return -errno;
	if (syscall(SYS_setresuid, owner->uid, owner->uid, owner->uid) < 0)
		return -errno;
	if (syscall(SYS_getresuid, &ruid, &euid, &suid) < 0 || syscall(SYS_getresgid, &rgid, &egid, &sgid) < 0)
		return -errno;
	if (ruid != owner->uid || euid != owner->uid || suid != owner->uid || rgid != owner->gid ||
	    egid != owner->gid || sgid != owner->gid)
		return -EPERM;
	/* Also where a secure bit kept them across the change of uid. */
	return set_capabilities(owner->caps);
}

/* A regular file on a FUSE filesystem?  (A failed fstat or fstatfs: no, the daemon looks again.) */
static bool is_fuse_file(int fd)
{
	struct statfs sfs;
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && fstatfs(fd, &sfs) == 0 &&
	       (unsigned long)sfs.f_type == FUSE_SUPER_MAGIC;
}

/* The answer a helper sends: each open's result, and the descriptors of those that succeeded. */
struct helper_answer {
	int32_t become_error;		/* 0, or why the helper could not become the owner (nothing was opened) */
	int32_t results[KFS_MAX_REQUESTS];	/* >= 0: opened (the index among the descriptors); -errno */
};

/* Close every descriptor but the @count in @keep (-1 among them: none). */
static void close_all_but_these(const int *keep, unsigned int count)
{
	unsigned int low = 0, index, next;

	for (;;) {
		/* The lowest kept descriptor at or above @low: close what lies between. */
		next = ~0u;
		for (index = 0; index < count; index++)
			if (keep[index] >= 0 && (unsigned int)keep[index] >= low && (unsigned int)keep[index] < next)
				next = (unsigned int)keep[index];
		if (next == ~0u) {
			syscall(SYS_close_range, low, ~0u, 0u);
			return;
		}
		if (next > low)
			syscall(SYS_close_range, low, next - 1, 0u);
		low = next + 1;
	}
}

static void close_all_but(int keep_a, int keep_b, int keep_c)
{
	const int keep[] = { keep_a, keep_b, keep_c };

	close_all_but_these(keep, 3);
}

/*
 * The helper process: enter the writer's network namespace (@net_fd, or
 * stay), become the owner, do the requests, send the answer, exit.  Only
 * system calls.
 */
__attribute__((noreturn))
static void helper_main(int sock, const struct kfs_owner *owner, int root_fd, int net_fd, unsigned int count,
			const struct kfs_request *requests)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * KFS_MAX_REQUESTS)];
		struct cmsghdr align;
	} control;
	struct helper_answer answer;
	int fds[KFS_MAX_REQUESTS];
	struct iovec iov = { &answer, sizeof(answer) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	unsigned int index, opened = 0;
	int previous = 0;

	/* Should the daemon die, so does its helper. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	/* Nothing of the daemon's stays open here: not its claims, not other jobs' files, not /dev/fuse. */
	close_all_but(sock, root_fd, net_fd);
	memset(&answer, 0, sizeof(answer));
	if (net_fd >= 0 && syscall(SYS_setns, net_fd, CLONE_NEWNET) < 0)
		answer.become_error = -errno;
	if (net_fd >= 0)
		close(net_fd);
	if (answer.become_error == 0)
		answer.become_error = become_owner(owner);
	for (index = 0; index < count; index++) {
		int fd = answer.become_error < 0 ? answer.become_error :
			 run_request(root_fd, &requests[index], index ? &requests[index - 1] : NULL, previous);

		/*
		 * A regular file on FUSE never reaches the daemon for a user's job:
		 * even its close there (a FLUSH the server need never answer)
		 * could hold a daemon thread.  Here only this helper waits.
		 */
		if (fd >= 0 && requests[index].kind <= KFS_REQ_KEY && owner->uid != 0 && is_fuse_file(fd)) {
			close(fd);
			fd = -KFS_EFUSE;
		}
		previous = fd;
		answer.results[index] = fd < 0 ? fd : (int32_t)opened;
		if (fd >= 0)
			fds[opened++] = fd;
	}
	if (opened) {
		struct cmsghdr *cmsg;

		memset(&control, 0, sizeof(control));
		msg.msg_control = control.buf;
		msg.msg_controllen = CMSG_SPACE(sizeof(int) * opened);
		cmsg = CMSG_FIRSTHDR(&msg);
		cmsg->cmsg_level = SOL_SOCKET;
		cmsg->cmsg_type = SCM_RIGHTS;
		cmsg->cmsg_len = CMSG_LEN(sizeof(int) * opened);
		memcpy(CMSG_DATA(cmsg), fds, sizeof(int) * opened);
	}
	_exit(sendmsg(sock, &msg, MSG_NOSIGNAL) == (ssize_t)sizeof(answer) ? 0 : 1);
}

/* Wait for the helper's answer (HELPER_TIMEOUT_MS at most) and take its descriptors. */
static int receive_answer(int sock, unsigned int count, int *fds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * (KFS_MAX_REQUESTS))];
		struct cmsghdr align;
	} control;
	struct helper_answer answer;
	struct iovec iov = { &answer, sizeof(answer) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
			      .msg_controllen = sizeof(control.buf) };
	struct pollfd pfd = { .fd = sock, .events = POLLIN };
	int received[KFS_MAX_REQUESTS], received_count = 0;
	struct cmsghdr *cmsg;
	unsigned int index;
	ssize_t len;
	int r;

	do
		r = poll(&pfd, 1, HELPER_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;
	do
		len = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	while (len < 0 && errno == EINTR);
	if (len < 0)
		return -errno;
	for (cmsg = CMSG_FIRSTHDR(&msg); cmsg; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
		if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
			received_count = (int)((cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			memcpy(received, CMSG_DATA(cmsg), sizeof(int) * (size_t)received_count);
		}
	}
	r = 0;
	if (len != (ssize_t)sizeof(answer) || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
		r = -EPROTO;	/* the helper died before it answered, or answered something else */
	for (index = 0; r == 0 && index < count; index++)
		if (answer.results[index] >= received_count)
			r = -EPROTO;
	if (r == 0 && answer.become_error < 0)
		r = answer.become_error;
	for (index = 0; index < count; index++)
		fds[index] = r < 0 ? r : answer.results[index] < 0 ? answer.results[index] : received[answer.results[index]];
	if (r < 0)
		for (index = 0; index < (unsigned int)received_count; index++)
			close(received[index]);
	return r;
}

int kfs_run_requests(struct kfs_opener *opener, const struct kfs_owner *owner, int root_fd, int net_fd,
		     unsigned int count, const struct kfs_request *requests, int *fds, char *why, size_t why_len)
{
	unsigned int index;
	int sv[2], r;
	pid_t pid;

	if (count > KFS_MAX_REQUESTS)
		return -E2BIG;
	/* Another network namespace can only be entered by a process of one thread. */
	if (owner_is_daemon(opener, owner) && net_fd < 0) {
		for (index = 0; index < count; index++)
			fds[index] = run_request(root_fd, &requests[index], index ? &requests[index - 1] : NULL,
						 index ? fds[index - 1] : 0);
		return 0;
	}
	if (!opener->can_switch) {
		say(why, why_len, "kcopydfs runs as uid %u and cannot open files as uid %u", (unsigned int)opener->uid,
		    (unsigned int)owner->uid);
		return -EPERM;
	}
	r = helper_place(opener, owner->uid);
	if (r < 0) {
		say(why, why_len,
		    "uid %u already has %u region opens in progress or stuck (on a filesystem that does not "
		    "answer?): try again later", (unsigned int)owner->uid, HELPERS_PER_USER);
		return r;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		r = -errno;
		helper_started(opener, owner->uid, 0);
		say(why, why_len, "cannot open the regions as uid %u: socketpair: %s", (unsigned int)owner->uid,
		    strerror(-r));
		return r;
	}
	pid = fork();
	r = pid < 0 ? -errno : 0;
	if (pid == 0)
		helper_main(sv[1], owner, root_fd, net_fd, count, requests);
	helper_started(opener, owner->uid, pid);
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		say(why, why_len, "cannot open the regions as uid %u: fork: %s", (unsigned int)owner->uid,
		    strerror(-r));
		return r;
	}
	close(sv[1]);
	r = receive_answer(sv[0], count, fds);
	close(sv[0]);
	if (r == -ETIMEDOUT)
		kill(pid, SIGKILL);
	/* Never a blocking wait: a helper stuck in the kernel for good must not hold this thread. */
	helper_finish(opener, pid);
	if (r < 0)
		say(why, why_len, "cannot open the regions as uid %u gid %u: %s", (unsigned int)owner->uid,
		    (unsigned int)owner->gid,
		    r == -ETIMEDOUT ? "the opens and connects took too long (over 10 s)" :
		    r == -EPROTO ? "the process that opens them ended without an answer" : strerror(-r));
	return r;
}

int kfs_region_is_storage(int fd)
{
	static const unsigned long pseudo[] = {
		PROC_SUPER_MAGIC, SYSFS_MAGIC,	   DEBUGFS_MAGIC,	TRACEFS_MAGIC,	     SECURITYFS_MAGIC,
		SELINUX_MAGIC,	  SMACK_MAGIC,	   CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, BPF_FS_MAGIC,
		EFIVARFS_MAGIC,	  PSTOREFS_MAGIC,  NSFS_MAGIC,		BINFMTFS_MAGIC,	     DEVPTS_SUPER_MAGIC,
		RDTGROUP_SUPER_MAGIC, 0x62656570 /* configfs */, 0x65735543 /* fusectl */,
	};
	struct statfs st;
	unsigned int index;

	if (fstatfs(fd, &st) < 0)
		return -errno;
	for (index = 0; index < sizeof(pseudo) / sizeof(pseudo[0]); index++)
		if ((unsigned long)st.f_type == pseudo[index])
			return 0;
	return 1;
}
