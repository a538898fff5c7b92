/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Opening a job's regions with exactly its owner's rights.
 *
 * One root daemon serves every user of the mount, so it must never open a
 * file for a user that the user could not open itself.  A region is opened
 * by a short-lived helper process, forked for the purpose, that fully
 * becomes the job's owner before it opens anything: its uid, gid and
 * supplementary groups (real, effective, saved and filesystem ids), no
 * capabilities (a root owner keeps the effective capabilities it had
 * itself, and only in the daemon's user namespace), not dumpable, its own
 * process (so /proc/self is not the daemon).  Paths are resolved in the
 * owner's view: from its root (/proc/PID/root with RESOLVE_IN_ROOT) when
 * its mount namespace or root differs from the daemon's; and no magic
 * link (/proc/PID/fd/N, /proc/PID/root, /dev/fd/N ...) is ever followed,
 * whoever the owner is.  The helper hands the descriptors back over a
 * socket (SCM_RIGHTS) and exits; what follows (claims, the engine) works
 * on descriptors only.  The same helper connects the sockets of a job's
 * NBD regions (a Unix socket as the owner, from its view; TCP from the
 * writer's network namespace) and opens their TLS key files as the owner.
 *
 * An owner that is the daemon itself (root with every capability the
 * daemon has, in the daemon's view) needs no helper: its regions are
 * opened in the daemon, with the same resolve flags.
 *
 * Nothing here knows of FUSE or of the engine.
 */
#ifndef KCOPYDFS_REGIONS_H
#define KCOPYDFS_REGIONS_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define KFS_MAX_GROUPS 256
/* kfs_run_requests()'s "a file on FUSE, for a job not root's": refused with EPERM (its own code, for the reason). */
#define KFS_EFUSE EMEDIUMTYPE

/* The identity a job description is written with (from the FUSE request). */
struct kfs_cred {
	uid_t uid;
	gid_t gid;
	pid_t pid;			/* the writer's thread, in the daemon's pid namespace; 0 if unknown */
	bool groups_irrelevant;		/* see kfs_groups_matter(); then the groups are not read */
	unsigned int group_count;
	gid_t groups[KFS_MAX_GROUPS];
};

/* Where a job's paths are resolved: the daemon's own view, or another mount namespace and root. */
struct kfs_view {
	bool daemon;			/* as the daemon sees them */
	uint64_t mnt_ns;		/* else: the inode of the owner's mount namespace */
	uint64_t root_dev;		/* and of its root directory */
	uint64_t root_ino;
};

/* Who a job's regions are opened as, for its life (a resume opens them as the same owner). */
struct kfs_owner {
	uid_t uid;
	gid_t gid;
	uint64_t caps;			/* effective capabilities kept (a root owner's own, within the daemon's) */
	struct kfs_view view;
	unsigned int group_count;
	gid_t groups[KFS_MAX_GROUPS];
};

struct kfs_opener;

/*
 * kfs_opener_create() - learn the daemon's own identity, capabilities and
 * view, which owners are compared with.  Return: 0 or -ENOMEM.
 */
int kfs_opener_create(struct kfs_opener **result);

void kfs_opener_destroy(struct kfs_opener *opener);

/*
 * kfs_opener_overrides_modes() - 1 if the daemon runs as root with CAP_DAC_OVERRIDE
 * and CAP_DAC_READ_SEARCH (a root writer's groups are then read from its
 * /proc status only when needed, not by the front end).
 */
int kfs_opener_overrides_modes(const struct kfs_opener *opener);

/*
 * kfs_owner_of_writer() - the owner a job written by @cred gets: its ids,
 * groups, capabilities (a root writer's, read from /proc/PID/status, kept
 * only in the daemon's user namespace and within the daemon's own) and
 * view.  *@root_fd is an O_PATH descriptor of the writer's root when its
 * view is not the daemon's (the caller closes it), else -1.
 * A writer the daemon cannot see (pid 0: not in its pid namespace) gets
 * the daemon's view and no capabilities.
 * Return: 0; or -errno with the reason in @why: -EPERM for a writer that
 * changed identity under us, -ESRCH for one that is gone.
 */
int kfs_owner_of_writer(const struct kfs_opener *opener, const struct kfs_cred *cred, struct kfs_owner *owner,
			int *root_fd, char *why, size_t why_len);

/*
 * kfs_owner_root() - for a resume written by @writer: the root to resolve
 * @owner's paths from.  The daemon's view needs none (-1); another view
 * must be the one @writer sees now (same mount namespace and root), else
 * the paths cannot be resolved as the owner saw them.
 * Return: 0 and *@root_fd (or -1); -ESTALE with the reason in @why when
 * the owner's view cannot be had; another -errno.
 */
int kfs_owner_root(const struct kfs_opener *opener, const struct kfs_owner *owner, const struct kfs_cred *writer,
		   int *root_fd, char *why, size_t why_len);

/*
 * What a helper does for a job, one request each: open a region, open a
 * file the job reads (a TLS key), or connect a socket to an NBD server.
 * Each gives one descriptor, or -errno.
 */
enum kfs_request_kind {
	KFS_REQ_OPEN,		/* open @path, read-write when @writable (a region) */
	KFS_REQ_KEY,		/* open @path read-only: a file or directory the job reads */
	KFS_REQ_CONNECT_UNIX,	/* connect a stream socket to the Unix socket at @path */
	KFS_REQ_CONNECT_INET,	/* connect a TCP socket to @addr */
};

/* The addresses of one host a TCP connect tries, in getaddrinfo()'s order. */
#define KFS_MAX_ADDRS 4

struct kfs_request {
	enum kfs_request_kind kind;
	const char *path;
	bool writable;
	/*
	 * KFS_REQ_CONNECT_INET: what the host name resolved to, each tried in
	 * turn until one connects (as libnbd, nbdcopy and kcopy do: a name
	 * with an IPv6 address first and a server listening on IPv4 only).
	 */
	unsigned int nr_addrs;
	struct sockaddr_storage addrs[KFS_MAX_ADDRS];
	socklen_t addr_lens[KFS_MAX_ADDRS];
};

/* The most requests one job makes: every region, and for an NBD region its sockets and two keys. */
#define KFS_MAX_REQUESTS 240
/* How long one connect may take; the helper as a whole has 10 s. */
#define KFS_CONNECT_TIMEOUT_MS 5000

/*
 * kfs_writer_netns() - the network namespace a job written by @cred
 * connects from: -1 in *@net_fd for the daemon's own, else a descriptor
 * of the writer's (/proc/PID/ns/net; the caller closes it), so that a
 * writer in a container reaches the hosts it reaches itself, not the
 * daemon's (its loopback above all).
 * Return: 0; -EPERM with the reason in @why for a writer the daemon
 * cannot see (not in its pid namespace); another -errno.
 */
int kfs_writer_netns(const struct kfs_opener *opener, const struct kfs_cred *cred, int *net_fd, char *why,
		     size_t why_len);

/*
 * kfs_run_requests() - do @count requests as @owner, from @root_fd (-1:
 * the daemon's view) and in the network namespace @net_fd (-1: the
 * daemon's).  Paths are resolved never through a magic link; opens are
 * O_NONBLOCK (a FIFO cannot hang the open) and O_CLOEXEC; a socket is
 * connected to its path's inode (so the owner needs write permission on
 * it and search permission on the way, as for its own connect) within
 * KFS_CONNECT_TIMEOUT_MS.  fds[i] is the descriptor or -errno:
 * -KFS_EFUSE for a regular file on a FUSE filesystem opened for an owner
 * other than root (a process serves it, and may never answer a read, a
 * write or even the flush of a close, which would hold the daemon's
 * threads, and so every job, as long as it likes: the helper drops it);
 * -ENOTSOCK for a socket path that is not a socket.
 * Return: 0 (each fds[i] says how its request went); or -errno with the
 * reason in @why when the owner could not be become at all (fork, a
 * refused change of identity, a helper that did not answer in time:
 * -ETIMEDOUT), or -EAGAIN when the owner (not root) already has 4 helpers
 * running or stuck.  Never waits for a helper that cannot end.
 */
int kfs_run_requests(struct kfs_opener *opener, const struct kfs_owner *owner, int root_fd, int net_fd,
		     unsigned int count, const struct kfs_request *requests, int *fds, char *why, size_t why_len);

/*
 * kfs_opener_enter() - take one of @uid's places for a job start that
 * connects to NBD servers, held while the daemon runs the handshakes (a
 * server that does not answer holds the FUSE worker until the timeout);
 * kfs_opener_leave() gives it back.  A user (not root) has 4, so that its
 * servers cannot hold the threads that serve everybody.
 * Return: 0, or -EAGAIN.
 */
int kfs_opener_enter(struct kfs_opener *opener, uid_t uid);
void kfs_opener_leave(struct kfs_opener *opener, uid_t uid);

/*
 * kfs_region_is_storage() - whether the file open as @fd is storage that a
 * copy may read or write: not a file of a pseudo filesystem (proc, sysfs,
 * debugfs, tracefs, securityfs, configfs, cgroup, bpf, efivarfs, pstore,
 * nsfs, ...), whose contents depend on who reads them and when.
 * Return: 1, 0, or -errno from fstatfs(2).
 */
int kfs_region_is_storage(int fd);

#endif /* KCOPYDFS_REGIONS_H */
