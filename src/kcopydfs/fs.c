/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The FUSE front end of kcopydfs, on the low-level API.  It only turns
 * paths and file operations into calls on the service (jobs.h) and renders
 * what the service says as text.  The low-level API lets a read of `wait`
 * be answered later, from the engine's completion thread, so blocked
 * waiters hold no worker thread.
 *
 * Inodes are computed, not stored: fixed numbers for the top level, and
 * JOB_INO_BASE + id * 8 + kind for a job's directory and files.  Job ids are
 * never reused, so an inode number never changes meaning.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kcopydfs/fs.h"
#include "kcopydfs/metrics.h"
#include "proto/jobspec.h"

enum node_kind {
	NODE_NONE,
	NODE_ROOT,
	NODE_VERSION,
	NODE_STATS,
	NODE_CLONE,
	NODE_CLONE_AUTOREMOVE,		/* a clone whose job goes when the descriptor is closed */
	NODE_JOBS,
	NODE_METRICS,			/* after the others: their inode numbers stay */
	/* a job's, in this order */
	NODE_JOB_DIR,
	NODE_CTL,
	NODE_STATE,
	NODE_STATUS,
	NODE_WAIT,
};

#define JOB_INO_BASE 16u
#define JOB_INO_STRIDE 8u
#define SNAPSHOT_MAX (JOBSPEC_MAX_CANONICAL + 1)	/* the longest file: a canonical description */
/* The longest line ctl holds, without its newline: the longest any command can be. */
#define CTL_LINE_MAX JOBSPEC_MAX_CANONICAL_LINE
#define CONTROL_BLKSIZE 65536
/*
 * How long the kernel may keep what we told it.  No attribute ever changes
 * in the life of a node (a job's owner, modes and times are fixed when it
 * is made, sizes are 0), so attributes are kept long: with
 * default_permissions every path walk would otherwise ask for the
 * attributes of each directory and file it passes (a getattr each).  The
 * top-level names never change either.  A job's entries are kept for no
 * time: every walk through jobs/NAME looks the job up, so a job removed by
 * any means is found gone without our having to invalidate anything, and a
 * name made again gets its new inode.
 */
#define ATTR_TIMEOUT 3600.0
#define TOP_ENTRY_TIMEOUT 3600.0
#define JOB_ENTRY_TIMEOUT 0.0

static const struct {
	const char *name;
	enum node_kind kind;
} top_entries[] = {
	{ "version", NODE_VERSION },
	{ "stats", NODE_STATS },
	{ "metrics", NODE_METRICS },
	{ "clone", NODE_CLONE },
	{ "clone-autoremove", NODE_CLONE_AUTOREMOVE },
	{ "jobs", NODE_JOBS },
}, job_entries[] = {
	{ "ctl", NODE_CTL },
	{ "state", NODE_STATE },
	{ "status", NODE_STATUS },
	{ "wait", NODE_WAIT },
};

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Per open file (fi->fh).  ->ctl_lock serializes the writes and flushes of
 * one ctl or clone descriptor and protects its line in progress (held,
 * held_len, discard_error); commands run under it, without fs->lock.  It
 * is taken before fs->lock and the service's lock, never under them, and
 * replies are sent after it is dropped (a reply may let the release come).
 */
struct open_file {
	enum node_kind kind;
	uint64_t job_id;
	pthread_mutex_t ctl_lock;
	char *held;			/* written text with no newline yet; malloc'd, NULL when empty */
	size_t held_len;
	uint64_t held_owner;		/* the lock_owner that wrote the held text, 0 if the kernel did not say */
	int discard_error;		/* a positive errno: discarding up to the next newline, refusing with it */
	char *snapshot;			/* rendered by the read at offset 0; malloc'd to fit */
	size_t snapshot_len;
	bool has_snapshot;
	uint64_t seen_generation;	/* of the job, when last read or opened */
	/*
	 * A clone-autoremove descriptor whose job was started: a read at
	 * offset 0 is a read of the job's wait (set by the first such read).
	 */
	_Atomic bool reads_wait;	/* set under fs->lock; render() reads it without */
	struct fuse_pollhandle *ph;	/* a poll waiting for a change */
	struct open_file *poll_prev, *poll_next;	/* fs->pollers while ph is set */
	struct open_file *open_prev, *open_next;	/* fs->open_files, until released */
};

/* A read of `wait` parked until its job ends. */
struct waiter {
	uint64_t cookie;		/* names it to the interrupt routine */
	fuse_req_t req;
	uint64_t job_id;
	size_t size;
	off_t offset;
	struct waiter *next;
};

/*
 * The front end.  ->lock protects the waiter list, the poller list and
 * every open_file's snapshot, generation and poll handle.  It is taken
 * before the service's lock, never after; replies are sent without it.
 */
struct kfs_fs {
	struct kfs_service *svc;
	uid_t owner_uid;
	gid_t owner_gid;
	struct timespec started;

	pthread_mutex_t lock;
	struct waiter *waiters;
	uint64_t next_cookie;
	struct open_file *pollers;
	struct open_file *open_files;	/* freed at the end if never released */

	/*
	 * With one FUSE thread (-s), a write to ctl is handled on a thread of
	 * its own, so that opening a region that leads back into the mount
	 * (a symlink) is answered by the loop instead of waiting on itself.
	 */
	bool offload_ctl;
	unsigned int ctl_threads;	/* running; under ->lock */
	pthread_cond_t ctl_threads_done;
};

/* A write to ctl, or a flush of it (@flush: then @cred and @text are unused), on a thread of its own. */
struct ctl_write {
	struct kfs_fs *fs;
	fuse_req_t req;
	struct open_file *of;
	bool flush;
	uint64_t lock_owner;		/* whose descriptor table writes or closes (fi->lock_owner), 0 if not said */
	struct kfs_cred cred;
	size_t size;
	char text[];
};

static enum node_kind decode_ino(fuse_ino_t ino, uint64_t *job_id)
{
	*job_id = 0;
	if (ino >= FUSE_ROOT_ID && ino <= NODE_METRICS - NODE_ROOT + FUSE_ROOT_ID)
		return (enum node_kind)(ino - FUSE_ROOT_ID + NODE_ROOT);
	if (ino >= JOB_INO_BASE + JOB_INO_STRIDE) {
		unsigned int kind = (unsigned int)((ino - JOB_INO_BASE) % JOB_INO_STRIDE);

		*job_id = (ino - JOB_INO_BASE) / JOB_INO_STRIDE;
		if (kind <= NODE_WAIT - NODE_JOB_DIR)
			return (enum node_kind)(NODE_JOB_DIR + kind);
	}
	return NODE_NONE;
}

static fuse_ino_t encode_ino(enum node_kind kind, uint64_t job_id)
{
	if (kind < NODE_JOB_DIR)
		return FUSE_ROOT_ID + (kind - NODE_ROOT);
	return JOB_INO_BASE + job_id * JOB_INO_STRIDE + (kind - NODE_JOB_DIR);
}

static bool is_job_node(enum node_kind kind)
{
	return kind >= NODE_JOB_DIR;
}

/* Opening it makes a job; its descriptor reads the job's number and writes to its ctl. */
static bool is_clone(enum node_kind kind)
{
	return kind == NODE_CLONE || kind == NODE_CLONE_AUTOREMOVE;
}

static struct kfs_fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* ------------------------------------------------------------------ */
/* Attributes                                                          */
/* ------------------------------------------------------------------ */

static int fill_attr(struct kfs_fs *fs, enum node_kind kind, uint64_t job_id, struct stat *st)
{
	struct kfs_job_view view;

	memset(st, 0, sizeof(*st));
	st->st_ino = encode_ino(kind, job_id);
	st->st_uid = fs->owner_uid;
	st->st_gid = fs->owner_gid;
	st->st_atim = st->st_mtim = st->st_ctim = fs->started;
	st->st_nlink = 1;
	/*
	 * stdio sizes its buffer by st_blksize when it first writes to a
	 * descriptor: a large one makes most lines one write(2).  Nothing
	 * depends on it: ctl is a line protocol, and a buffer sized earlier for
	 * a pipe (4096 bytes) cuts a line into writes that are joined again.
	 */
	st->st_blksize = CONTROL_BLKSIZE;
	if (is_job_node(kind)) {
		if (kfs_job_view(fs->svc, job_id, &view) < 0)
			return -ENOENT;
		st->st_uid = view.uid;
		st->st_gid = view.gid;
		st->st_mtim.tv_sec = (time_t)view.created;
		st->st_mtim.tv_nsec = (long)((view.created - (double)(time_t)view.created) * 1e9);
		st->st_atim = st->st_ctim = st->st_mtim;
	}
	switch (kind) {
	case NODE_ROOT:
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = 3;
		break;
	case NODE_JOBS:
		st->st_mode = S_IFDIR | S_ISVTX | 0777;
		st->st_nlink = 2;
		break;
	case NODE_JOB_DIR:
		st->st_mode = S_IFDIR | 0700;
		st->st_nlink = 2;
		break;
	case NODE_VERSION:
	case NODE_STATS:
	case NODE_METRICS:	/* what stats shows, in another form: the same readers */
		st->st_mode = S_IFREG | 0444;
		break;
	case NODE_CLONE:
	case NODE_CLONE_AUTOREMOVE:
		st->st_mode = S_IFREG | 0666;
		break;
	case NODE_CTL:
		st->st_mode = S_IFREG | 0600;
		break;
	case NODE_STATE:
	case NODE_STATUS:
	case NODE_WAIT:
		st->st_mode = S_IFREG | 0400;
		break;
	default:
		return -ENOENT;
	}
	return 0;
}

static void reply_entry(fuse_req_t req, enum node_kind kind, uint64_t job_id)
{
	struct fuse_entry_param entry = { 0 };
	int r = fill_attr(fs_of(req), kind, job_id, &entry.attr);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	entry.ino = entry.attr.st_ino;
	entry.generation = 1;
	entry.attr_timeout = ATTR_TIMEOUT;
	entry.entry_timeout = is_job_node(kind) ? JOB_ENTRY_TIMEOUT : TOP_ENTRY_TIMEOUT;
	fuse_reply_entry(req, &entry);
}

static void kfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct kfs_fs *fs = fs_of(req);
	uint64_t job_id;
	enum node_kind kind = decode_ino(parent, &job_id);
	unsigned int index;

	if (kind == NODE_ROOT) {
		for (index = 0; index < ARRAY_SIZE(top_entries); index++)
			if (strcmp(name, top_entries[index].name) == 0)
				return reply_entry(req, top_entries[index].kind, 0);
	} else if (kind == NODE_JOBS) {
		if (kfs_job_find(fs->svc, name, &job_id) == 0)
			return reply_entry(req, NODE_JOB_DIR, job_id);
	} else if (kind == NODE_JOB_DIR) {
		for (index = 0; index < ARRAY_SIZE(job_entries); index++)
			if (strcmp(name, job_entries[index].name) == 0)
				return reply_entry(req, job_entries[index].kind, job_id);
	} else {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	fuse_reply_err(req, ENOENT);
}

static void kfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	uint64_t job_id;
	enum node_kind kind = decode_ino(ino, &job_id);
	struct stat st;
	int r = fill_attr(fs_of(req), kind, job_id, &st);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* Only a truncation to 0 is accepted, so that `echo ... > ctl` (O_TRUNC) works. */
static void kfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	uint64_t job_id;
	enum node_kind kind = decode_ino(ino, &job_id);
	struct stat st;
	int r;

	if ((to_set & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
			FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)) ||
	    ((to_set & FUSE_SET_ATTR_SIZE) && attr->st_size != 0)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	r = fill_attr(fs_of(req), kind, job_id, &st);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* ------------------------------------------------------------------ */
/* Directories                                                         */
/* ------------------------------------------------------------------ */

static bool add_dirent(fuse_req_t req, char *buf, size_t size, size_t *used, const char *name,
		       enum node_kind kind, uint64_t job_id, off_t next_offset)
{
	struct stat st = { .st_ino = encode_ino(kind, job_id),
			   .st_mode = (kind == NODE_ROOT || kind == NODE_JOBS || kind == NODE_JOB_DIR) ? S_IFDIR
												    : S_IFREG };
	size_t need = fuse_add_direntry(req, buf + *used, size - *used, name, &st, next_offset);

	if (need > size - *used)
		return false;
	*used += need;
	return true;
}

/*
 * Offsets: 1 and 2 are "." and "..", then 3 + index for fixed entries, and
 * 3 + job id for jobs, so a listing continues correctly across mkdir and
 * rmdir.
 */
static void kfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi)
{
	struct kfs_fs *fs = fs_of(req);
	uint64_t job_id, next_id;
	enum node_kind kind = decode_ino(ino, &job_id);
	struct kfs_job_view view;
	size_t used = 0;
	char *buf;
	unsigned int index;

	if (kind != NODE_ROOT && kind != NODE_JOBS && kind != NODE_JOB_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (offset < 1 && !add_dirent(req, buf, size, &used, ".", kind, job_id, 1))
		goto reply;
	if (offset < 2 && !add_dirent(req, buf, size, &used, "..", NODE_ROOT, 0, 2))
		goto reply;
	if (kind == NODE_ROOT) {
		for (index = offset > 2 ? (unsigned int)offset - 2 : 0; index < ARRAY_SIZE(top_entries); index++)
			if (!add_dirent(req, buf, size, &used, top_entries[index].name, top_entries[index].kind, 0,
					3 + index))
				goto reply;
	} else if (kind == NODE_JOB_DIR) {
		for (index = offset > 2 ? (unsigned int)offset - 2 : 0; index < ARRAY_SIZE(job_entries); index++)
			if (!add_dirent(req, buf, size, &used, job_entries[index].name, job_entries[index].kind,
					job_id, 3 + index))
				goto reply;
	} else {
		uint64_t after = offset > 2 ? (uint64_t)offset - 3 : 0;

		while (kfs_job_next(fs->svc, after, &next_id) == 0) {
			after = next_id;
			if (kfs_job_view(fs->svc, next_id, &view) < 0)
				continue;
			if (!add_dirent(req, buf, size, &used, view.name, NODE_JOB_DIR, next_id,
					(off_t)(3 + next_id)))
				break;
		}
	}
reply:
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void kfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	uint64_t job_id;
	int r;

	if (decode_ino(parent, &job_id) != NODE_JOBS) {
		fuse_reply_err(req, EPERM);
		return;
	}
	r = kfs_job_create(fs_of(req)->svc, name, ctx->uid, ctx->gid, &job_id);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, NODE_JOB_DIR, job_id);
}

static void kfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct kfs_fs *fs = fs_of(req);
	uint64_t job_id;
	int r;

	if (decode_ino(parent, &job_id) != NODE_JOBS) {
		fuse_reply_err(req, EPERM);
		return;
	}
	r = kfs_job_find(fs->svc, name, &job_id);
	if (r == 0)
		r = kfs_job_remove(fs->svc, job_id);
	fuse_reply_err(req, -r);
}

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

static struct open_file *open_file_new(enum node_kind kind, uint64_t job_id)
{
	struct open_file *of = calloc(1, sizeof(*of));

	if (!of)
		return NULL;
	of->kind = kind;
	of->job_id = job_id;
	pthread_mutex_init(&of->ctl_lock, NULL);
	return of;
}

static void open_file_free(struct open_file *of)
{
	pthread_mutex_destroy(&of->ctl_lock);
	free(of->held);
	free(of->snapshot);
	free(of);
}

/* Under fs->lock. */
static void open_file_link(struct kfs_fs *fs, struct open_file *of)
{
	of->open_prev = NULL;
	of->open_next = fs->open_files;
	if (fs->open_files)
		fs->open_files->open_prev = of;
	fs->open_files = of;
}

/* Under fs->lock. */
static void open_file_unlink(struct kfs_fs *fs, struct open_file *of)
{
	if (of->open_prev)
		of->open_prev->open_next = of->open_next;
	else
		fs->open_files = of->open_next;
	if (of->open_next)
		of->open_next->open_prev = of->open_prev;
}

static void kfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kfs_fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	uint64_t job_id;
	enum node_kind kind = decode_ino(ino, &job_id);
	bool writing = (fi->flags & O_ACCMODE) != O_RDONLY;
	struct kfs_job_view view;
	struct open_file *of;
	int r;

	if (kind == NODE_ROOT || kind == NODE_JOBS || kind == NODE_JOB_DIR) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (writing && kind != NODE_CTL && !is_clone(kind)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	of = open_file_new(kind, job_id);
	if (!of) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (is_clone(kind)) {
		r = kfs_job_create(fs->svc, NULL, ctx->uid, ctx->gid, &of->job_id);
		if (r < 0)
			goto err_free;
	}
	if (is_job_node(kind) || is_clone(kind)) {
		r = kfs_job_view(fs->svc, of->job_id, &view);
		if (r < 0)
			goto err_free;
		of->seen_generation = view.generation;
	}
	fi->fh = (uintptr_t)of;
	fi->direct_io = 1;
#if FUSE_MAJOR_VERSION > 3 || (FUSE_MAJOR_VERSION == 3 && FUSE_MINOR_VERSION >= 11)
	/* Only a descriptor that writes to ctl can hold a line for its close to refuse: no flush for the rest. */
	fi->noflush = !(writing && (kind == NODE_CTL || is_clone(kind)));
#endif
	pthread_mutex_lock(&fs->lock);
	open_file_link(fs, of);
	pthread_mutex_unlock(&fs->lock);
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* The opener is gone (interrupted): nobody will ever release this. */
		if (is_clone(kind))
			kfs_job_remove_if_idle(fs->svc, of->job_id);
		pthread_mutex_lock(&fs->lock);
		open_file_unlink(fs, of);
		pthread_mutex_unlock(&fs->lock);
		open_file_free(of);
	}
	return;

err_free:
	open_file_free(of);
	fuse_reply_err(req, -r);
}

/*
 * Render what a read at offset 0 of @of shows now.  For a job's state,
 * status and wait, *@generation is the job's generation it shows (else
 * untouched).  Takes no fs->lock: reads of different files do not wait on
 * each other.
 */
static int render(struct kfs_fs *fs, const struct open_file *of, char *buf, size_t len, uint64_t *generation)
{
	struct kfs_job_view view;
	struct kfs_stats stats;
	struct kfs_metrics metrics;
	int r;

	switch (of->kind) {
	case NODE_VERSION:
		return snprintf(buf, len, "kcopydfs %s\n", PACKAGE_VERSION);
	case NODE_STATS:
		kfs_service_stats(fs->svc, &stats);
		return kfs_render_stats(&stats, buf, len);
	case NODE_METRICS:
		kfs_service_metrics(fs->svc, &fs->started, &metrics);
		return kfs_render_metrics(&metrics, buf, len);
	case NODE_CLONE:
	case NODE_CLONE_AUTOREMOVE:
		if (of->kind == NODE_CLONE_AUTOREMOVE && atomic_load_explicit(&of->reads_wait, memory_order_relaxed)) {
			r = kfs_job_view(fs->svc, of->job_id, &view);
			if (r < 0)
				return r;
			*generation = view.generation;
			return kfs_render_status(&view, buf, len);
		}
		return snprintf(buf, len, "%llu\n", (unsigned long long)of->job_id);
	case NODE_CTL:
		return kfs_job_description(fs->svc, of->job_id, buf, len);
	case NODE_STATE:
	case NODE_STATUS:
	case NODE_WAIT:
		r = kfs_job_view(fs->svc, of->job_id, &view);
		if (r < 0)
			return r;
		*generation = view.generation;
		return of->kind == NODE_STATE ? kfs_render_state(&view, buf, len) : kfs_render_status(&view, buf, len);
	default:
		return -EINVAL;
	}
}

/*
 * The text a read at @offset sees, into @text (SNAPSHOT_MAX bytes): a fresh
 * rendering at offset 0 (or when there is no snapshot yet), kept as the
 * snapshot that later offsets continue.  Renders without fs->lock, from
 * @view when the caller already took one of the job (a status or wait).
 */
static int read_snapshot(struct kfs_fs *fs, struct open_file *of, off_t offset, const struct kfs_job_view *view,
			 char *text, size_t *text_len)
{
	uint64_t generation = 0;
	char *copy, *old;
	bool fresh;
	int r;

	pthread_mutex_lock(&fs->lock);
	fresh = offset == 0 || !of->has_snapshot;
	if (!fresh) {
		*text_len = of->snapshot_len;
		memcpy(text, of->snapshot, *text_len);
	}
	pthread_mutex_unlock(&fs->lock);
	if (!fresh)
		return 0;

	if (view) {
		r = kfs_render_status(view, text, SNAPSHOT_MAX);
		generation = view->generation;
	} else {
		r = render(fs, of, text, SNAPSHOT_MAX, &generation);
	}
	if (r < 0)
		return r;
	*text_len = (size_t)r < SNAPSHOT_MAX ? (size_t)r : SNAPSHOT_MAX - 1;
	/* Sized to the text: an open file costs what it shows, not the longest file there is. */
	copy = malloc(*text_len ? *text_len : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, text, *text_len);
	pthread_mutex_lock(&fs->lock);
	old = of->snapshot;
	of->snapshot = copy;
	of->snapshot_len = *text_len;
	of->has_snapshot = true;
	/* Generations only grow: a slower concurrent read must not step back. */
	if (generation > of->seen_generation)
		of->seen_generation = generation;
	pthread_mutex_unlock(&fs->lock);
	free(old);
	return 0;
}

static void reply_slice(fuse_req_t req, const char *text, size_t text_len, size_t size, off_t offset)
{
	if ((size_t)offset >= text_len)
		fuse_reply_buf(req, NULL, 0);
	else
		fuse_reply_buf(req, text + offset, text_len - (size_t)offset < size ? text_len - (size_t)offset : size);
}

static void interrupt_wait(fuse_req_t req, void *data)
{
	struct kfs_fs *fs = fs_of(req);
	uint64_t cookie = (uintptr_t)data;
	struct waiter **link, *found = NULL;

	pthread_mutex_lock(&fs->lock);
	for (link = &fs->waiters; *link; link = &(*link)->next) {
		if ((*link)->cookie == cookie) {
			found = *link;
			*link = found->next;
			break;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	if (found) {
		fuse_reply_err(found->req, EINTR);
		free(found);
	}
}

/* A read of `wait` before the job ended: park it, unless told not to block. */
static void read_wait(fuse_req_t req, struct kfs_fs *fs, struct open_file *of, size_t size, off_t offset,
		      int flags)
{
	struct kfs_job_view view;
	struct waiter *waiter;
	char text[SNAPSHOT_MAX];
	size_t text_len = 0;
	int r;

	if (flags & O_NONBLOCK) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	waiter = calloc(1, sizeof(*waiter));
	if (!waiter) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	waiter->cookie = ++fs->next_cookie;
	pthread_mutex_unlock(&fs->lock);
	waiter->req = req;
	waiter->job_id = of->job_id;
	waiter->size = size;
	waiter->offset = offset;
	/* Before the waiter is visible: once it is, another thread may reply and free the request. */
	fuse_req_interrupt_func(req, interrupt_wait, (void *)(uintptr_t)waiter->cookie);

	pthread_mutex_lock(&fs->lock);
	r = kfs_job_view(fs->svc, of->job_id, &view);
	if (r == 0 && !kfs_state_final(view.state) && !fuse_req_interrupted(req)) {
		waiter->next = fs->waiters;
		fs->waiters = waiter;
		pthread_mutex_unlock(&fs->lock);
		return;
	}
	/* It ended (or went, or the reader gave up) while we were setting up. */
	pthread_mutex_unlock(&fs->lock);
	free(waiter);
	if (r == 0 && kfs_state_final(view.state))
		r = read_snapshot(fs, of, 0, &view, text, &text_len);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (fuse_req_interrupted(req) && !kfs_state_final(view.state))
		fuse_reply_err(req, EINTR);
	else
		reply_slice(req, text, text_len, size, offset);
}

static void kfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, struct fuse_file_info *fi)
{
	struct kfs_fs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct kfs_job_view view;
	char text[SNAPSHOT_MAX];
	bool continuing = false, have_view = false, waits = of->kind == NODE_WAIT;
	size_t text_len = 0;
	int r;

	/*
	 * A clone-autoremove descriptor is the job's wait once a description
	 * was accepted through it: a read at offset 0 blocks until the end and
	 * gives the final status, so a client needs one descriptor per job.
	 */
	if (of->kind == NODE_CLONE_AUTOREMOVE) {
		if (offset == 0) {
			r = kfs_job_view(fs->svc, of->job_id, &view);
			if (r < 0) {
				fuse_reply_err(req, -r);
				return;
			}
			if (view.state != KFS_IDLE) {
				pthread_mutex_lock(&fs->lock);
				of->reads_wait = true;
				pthread_mutex_unlock(&fs->lock);
			}
		}
		pthread_mutex_lock(&fs->lock);
		waits = of->reads_wait;
		pthread_mutex_unlock(&fs->lock);
	}
	/* A read of wait blocks until the end, unless it continues the final snapshot. */
	if (waits) {
		pthread_mutex_lock(&fs->lock);
		continuing = offset > 0 && of->has_snapshot;
		pthread_mutex_unlock(&fs->lock);
	}
	if (waits && !continuing) {
		r = kfs_job_view(fs->svc, of->job_id, &view);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		if (!kfs_state_final(view.state)) {
			read_wait(req, fs, of, size, offset, fi->flags);
			return;
		}
		have_view = true;	/* the final status: rendered from this view, not a second one */
	}
	r = read_snapshot(fs, of, offset, have_view ? &view : NULL, text, &text_len);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_slice(req, text, text_len, size, offset);
}

/* ------------------------------------------------------------------ */
/* ctl: a line protocol                                                */
/* ------------------------------------------------------------------ */

/*
 * A ctl or clone descriptor takes lines: a command is the text up to a
 * newline, however it was cut into writes (stdio, bufio and the like cut a
 * long line at their buffer's size).  The text after the last newline is
 * held until its newline comes; a partial line is never run, and one still
 * held when the descriptor is closed is refused.  See kcopydfs(5).
 */

/* Under of->ctl_lock: forget the line in progress. */
static void ctl_drop_held(struct open_file *of)
{
	free(of->held);
	of->held = NULL;
	of->held_len = 0;
}

/* Under of->ctl_lock: add @len bytes to the line in progress.  Return: 0 or -ENOMEM. */
static int ctl_hold(struct open_file *of, const char *text, size_t len)
{
	char *grown = realloc(of->held, of->held_len + len);

	if (!grown)
		return -ENOMEM;
	memcpy(grown + of->held_len, text, len);
	of->held = grown;
	of->held_len += len;
	return 0;
}

/* Refuse a line for its length (@len bytes, its newline included if it came), with the job's reason. */
static int ctl_refuse_long_line(struct kfs_fs *fs, struct open_file *of, size_t len, bool complete)
{
	char why[256];

	if (complete)
		snprintf(why, sizeof(why), "the line is %zu bytes, at most %d", len - 1, JOBSPEC_MAX_LINE);
	else
		snprintf(why, sizeof(why),
			 "the line is over %d bytes with no newline yet (at most %d, %d for a canonical "
			 "description): refused, and discarded up to its newline",
			 CTL_LINE_MAX, JOBSPEC_MAX_LINE, CTL_LINE_MAX);
	return kfs_job_reject(fs->svc, of->job_id, -E2BIG, why);
}

/*
 * Under of->ctl_lock: take @size bytes written to @of.  Each line they
 * complete runs as a command, in order, as @cred; the first refusal stops
 * the write, and the rest of it goes with it.  Text after the last newline
 * is held.  A line that cannot be a command (over CTL_LINE_MAX bytes) is
 * refused with E2BIG when it overflows, and then, like the rest of a line
 * a refused write began, discarded up to its newline: each write until
 * then is refused with the same error, so no tail of a line ever runs.
 * Return: 0 when every byte was taken, or the -errno of the refusal.
 */
static int ctl_feed(struct kfs_fs *fs, struct open_file *of, const struct kfs_cred *cred, uint64_t lock_owner,
		    const char *buf, size_t size)
{
	size_t pos = 0;
	int r;

	/* Nobody but the owner adds to its lines, nor learns anything of them from a refusal. */
	r = kfs_job_may_write(fs->svc, of->job_id, cred->uid);
	if (r < 0 || size == 0)
		return r;
	if (of->discard_error) {
		const char *newline = memchr(buf, '\n', size);

		r = -of->discard_error;
		if (newline)
			goto err_refused;	/* the end of the discarded line: refused too, and what follows */
		return r;
	}
	while (pos < size) {
		const char *newline = memchr(buf + pos, '\n', size - pos);
		size_t piece = newline ? (size_t)(newline - buf) + 1 - pos : size - pos;
		size_t line_len = of->held_len + piece;

		if (!newline) {
			if (line_len > CTL_LINE_MAX) {
				r = ctl_refuse_long_line(fs, of, line_len, false);
				goto err_refused;
			}
			r = ctl_hold(of, buf + pos, piece);
			if (r < 0)
				goto err_refused;
			of->held_owner = lock_owner;
			return 0;
		}
		if (line_len - 1 > CTL_LINE_MAX) {
			r = ctl_refuse_long_line(fs, of, line_len, true);
		} else if (of->held_len) {
			r = ctl_hold(of, buf + pos, piece);
			if (r == 0)
				r = kfs_job_ctl(fs->svc, of->job_id, of->held, of->held_len, cred);
		} else {
			r = kfs_job_ctl(fs->svc, of->job_id, buf + pos, piece, cred);
		}
		ctl_drop_held(of);
		pos += piece;
		if (r < 0)
			goto err_refused;
	}
	return 0;

err_refused:
	/* The write is refused whole: if it ends inside a line, that line's rest is discarded too. */
	ctl_drop_held(of);
	of->discard_error = buf[size - 1] != '\n' ? -r : 0;
	return r;
}

/*
 * Under of->ctl_lock: a descriptor of @of is being closed by @lock_owner
 * (0 at the release, when the last one goes).  A line still held is
 * refused (never run: a writer killed between two writes would start a
 * truncated job), and its rest, should a duplicate of the descriptor write
 * it later, is discarded with EINVAL.  Only the close of the descriptor
 * table that wrote it does that (the kernel sends a flush at every close
 * of every duplicate: a forked child's exit, a $(...) subshell); the others
 * leave the line to its writer.
 * Return: 0, or -EINVAL when a partial line was refused.
 */
static int ctl_close_line(struct kfs_fs *fs, struct open_file *of, uint64_t lock_owner)
{
	char why[200];
	size_t held_len = of->held_len;

	if (held_len == 0 || (lock_owner && of->held_owner && lock_owner != of->held_owner))
		return 0;
	ctl_drop_held(of);
	of->discard_error = EINVAL;
	snprintf(why, sizeof(why),
		 "closed after %zu bytes with no newline: a command must end with a newline, and a partial "
		 "line is never run",
		 held_len);
	return kfs_job_reject(fs->svc, of->job_id, -EINVAL, why);
}

/* A write or a flush of @write->of, under its ctl_lock.  Return: 0 or -errno. */
static int ctl_write_run(const struct ctl_write *write)
{
	struct open_file *of = write->of;
	int r;

	pthread_mutex_lock(&of->ctl_lock);
	if (write->flush)
		r = ctl_close_line(write->fs, of, write->lock_owner);
	else
		r = ctl_feed(write->fs, of, &write->cred, write->lock_owner, write->text, write->size);
	pthread_mutex_unlock(&of->ctl_lock);
	return r;
}

static void ctl_write_reply(const struct ctl_write *write, int r)
{
	if (r < 0 || write->flush)
		fuse_reply_err(write->req, -r);
	else
		fuse_reply_write(write->req, write->size);
}

static void *ctl_write_thread(void *arg)
{
	struct ctl_write *write = arg;
	struct kfs_fs *fs = write->fs;

	ctl_write_reply(write, ctl_write_run(write));
	free(write);
	pthread_mutex_lock(&fs->lock);
	if (--fs->ctl_threads == 0)
		pthread_cond_broadcast(&fs->ctl_threads_done);
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

/* Hand @write (malloc'd) to a thread of its own, which frees it.  Return: 0 if it will reply, or -errno. */
static int ctl_write_offload(struct kfs_fs *fs, struct ctl_write *write)
{
	pthread_attr_t attr;
	pthread_t thread;
	int r;

	pthread_mutex_lock(&fs->lock);
	fs->ctl_threads++;
	pthread_mutex_unlock(&fs->lock);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&thread, &attr, ctl_write_thread, write);
	pthread_attr_destroy(&attr);
	if (r < 0) {
		pthread_mutex_lock(&fs->lock);
		fs->ctl_threads--;
		pthread_mutex_unlock(&fs->lock);
	}
	return r;
}

/*
 * Run @write (a write or a flush of ctl): on a thread of its own with one
 * FUSE thread, since a command may open a region that leads back into the
 * mount, and a flush may wait for such a command's ctl_lock; else here.
 */
static void ctl_write_dispatch(struct kfs_fs *fs, struct ctl_write *write)
{
	if (fs->offload_ctl && ctl_write_offload(fs, write) == 0)
		return;
	ctl_write_reply(write, ctl_write_run(write));
	free(write);
}

void kfs_fs_drain(struct kfs_fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	while (fs->ctl_threads > 0)
		pthread_cond_wait(&fs->ctl_threads_done, &fs->lock);
	pthread_mutex_unlock(&fs->lock);
}

static void kfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t offset,
		      struct fuse_file_info *fi)
{
	struct kfs_fs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct ctl_write *write;
	int r;

	if (of->kind != NODE_CTL && !is_clone(of->kind)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	/* Offsets are ignored, as sysfs does: the descriptor's lines are one stream. */
	write = malloc(sizeof(*write) + size);
	if (!write) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	*write = (struct ctl_write){ .fs = fs, .req = req, .of = of, .size = size, .lock_owner = fi->lock_owner,
				     .cred = { .uid = ctx->uid, .gid = ctx->gid, .pid = ctx->pid } };
	memcpy(write->text, buf, size);
	/* The groups (a read of /proc) only for a write that completes a line: held text needs no cred. */
	if (!memchr(buf, '\n', size)) {
		/* Nothing runs: the cred is not used. */
	} else if (kfs_groups_matter(fs->svc, ctx->uid)) {
		r = fuse_req_getgroups(req, KFS_MAX_GROUPS, write->cred.groups);
		write->cred.group_count = r > 0 ? (unsigned int)(r < KFS_MAX_GROUPS ? r : KFS_MAX_GROUPS) : 0;
	} else {
		write->cred.groups_irrelevant = true;
	}
	ctl_write_dispatch(fs, write);
}

/*
 * Every close(2) of every descriptor of an open file (duplicates, and
 * those a child inherited, included) flushes it: for ctl and clone, a line
 * in progress is refused then, so that close(2) reports it.
 */
static void kfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kfs_fs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct ctl_write *flush;

	if (of->kind != NODE_CTL && !is_clone(of->kind)) {
		fuse_reply_err(req, 0);
		return;
	}
	flush = malloc(sizeof(*flush));
	if (!flush) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	*flush = (struct ctl_write){ .fs = fs, .req = req, .of = of, .flush = true, .lock_owner = fi->lock_owner };
	ctl_write_dispatch(fs, flush);
}

/* Under fs->lock: take @of off the poller list; returns its poll handle. */
static struct fuse_pollhandle *poller_unlink(struct kfs_fs *fs, struct open_file *of)
{
	struct fuse_pollhandle *ph = of->ph;

	of->ph = NULL;
	if (of->poll_prev)
		of->poll_prev->poll_next = of->poll_next;
	else
		fs->pollers = of->poll_next;
	if (of->poll_next)
		of->poll_next->poll_prev = of->poll_prev;
	of->poll_prev = of->poll_next = NULL;
	return ph;
}

/* Under fs->lock. */
static void poller_drop(struct kfs_fs *fs, struct open_file *of)
{
	if (of->ph)
		fuse_pollhandle_destroy(poller_unlink(fs, of));
}

/*
 * `wait` is readable once the job ended; `state` and `status` once the job
 * changed since this descriptor last read them (or ended); the others always.
 */
static void kfs_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct fuse_pollhandle *ph)
{
	struct kfs_fs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct kfs_job_view view;
	unsigned int revents = POLLIN | POLLRDNORM;

	pthread_mutex_lock(&fs->lock);
	if (of->kind == NODE_WAIT || of->kind == NODE_STATE || of->kind == NODE_STATUS) {
		if (kfs_job_view(fs->svc, of->job_id, &view) < 0)
			revents = POLLERR;
		else if (!kfs_state_final(view.state) &&
			 (of->kind == NODE_WAIT || view.generation == of->seen_generation))
			revents = 0;
	} else if (of->kind == NODE_CLONE_AUTOREMOVE) {
		/* Writable always; readable, once its job started, like its wait. */
		revents |= POLLOUT | POLLWRNORM;
		if (kfs_job_view(fs->svc, of->job_id, &view) < 0)
			revents = POLLERR;
		else if (view.state != KFS_IDLE && !kfs_state_final(view.state))
			revents &= ~(unsigned int)(POLLIN | POLLRDNORM);
	} else if (of->kind == NODE_CTL || is_clone(of->kind)) {
		revents |= POLLOUT | POLLWRNORM;
	}
	if (ph) {
		poller_drop(fs, of);
		/* Kept until the job changes when it is not readable yet. */
		if (!(revents & (POLLIN | POLLERR))) {
			of->ph = ph;
			of->poll_next = fs->pollers;
			if (fs->pollers)
				fs->pollers->poll_prev = of;
			fs->pollers = of;
		} else {
			fuse_pollhandle_destroy(ph);
		}
	}
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_poll(req, revents);
}

static void kfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct kfs_fs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;

	/* A release may come without a flush: a partial line is refused here then (nobody sees the error). */
	if (of->kind == NODE_CTL || is_clone(of->kind)) {
		pthread_mutex_lock(&of->ctl_lock);
		(void)ctl_close_line(fs, of, 0);
		pthread_mutex_unlock(&of->ctl_lock);
	}
	pthread_mutex_lock(&fs->lock);
	poller_drop(fs, of);
	open_file_unlink(fs, of);
	pthread_mutex_unlock(&fs->lock);
	/*
	 * A clone descriptor closed without a description takes its job with
	 * it; a clone-autoremove descriptor takes it in any case, now or when
	 * it ends.
	 */
	if (of->kind == NODE_CLONE)
		kfs_job_remove_if_idle(fs->svc, of->job_id);
	else if (of->kind == NODE_CLONE_AUTOREMOVE)
		kfs_job_autoremove(fs->svc, of->job_id);
	open_file_free(of);
	fuse_reply_err(req, 0);
}

static void kfs_init(void *userdata, struct fuse_conn_info *conn)
{
	/* Every read and write is a request of its own: no caching, no readahead to speak of. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
}

const struct fuse_lowlevel_ops kfs_fs_ops = {
	.init = kfs_init,
	.lookup = kfs_lookup,
	.getattr = kfs_getattr,
	.setattr = kfs_setattr,
	.readdir = kfs_readdir,
	.mkdir = kfs_mkdir,
	.rmdir = kfs_rmdir,
	.open = kfs_open,
	.read = kfs_read,
	.write = kfs_write,
	.flush = kfs_flush,
	.poll = kfs_poll,
	.release = kfs_release,
};

/* ------------------------------------------------------------------ */
/* Changes from the service                                            */
/* ------------------------------------------------------------------ */

void kfs_fs_on_change(uint64_t job_id, void *context)
{
	struct kfs_fs *fs = context;
	struct waiter *ready = NULL, **link, *waiter;
	struct fuse_pollhandle **handles = NULL;
	size_t handle_count = 0, handle_room = 0, index;
	struct open_file *of, *next;
	struct kfs_job_view view;
	char text[SNAPSHOT_MAX];
	int text_len = 0;
	int r;

	pthread_mutex_lock(&fs->lock);
	/* Most changes concern nobody: look for a waiter or poller before asking the service. */
	for (waiter = fs->waiters; waiter && waiter->job_id != job_id; waiter = waiter->next)
		;
	for (of = fs->pollers; !waiter && of && of->job_id != job_id; of = of->poll_next)
		;
	if (!waiter && !of) {
		pthread_mutex_unlock(&fs->lock);
		return;
	}
	r = kfs_job_view(fs->svc, job_id, &view);
	if (r < 0 || kfs_state_final(view.state)) {
		for (link = &fs->waiters; *link;) {
			waiter = *link;
			if (waiter->job_id == job_id) {
				*link = waiter->next;
				waiter->next = ready;
				ready = waiter;
			} else {
				link = &waiter->next;
			}
		}
	}
	for (of = fs->pollers; of; of = next) {
		next = of->poll_next;
		if (of->job_id == job_id) {
			if (handle_count == handle_room) {
				size_t room = handle_room ? handle_room * 2 : 16;
				struct fuse_pollhandle **grown = realloc(handles, room * sizeof(*handles));

				if (!grown)
					break;	/* the rest are woken by the next change */
				handles = grown;
				handle_room = room;
			}
			handles[handle_count++] = poller_unlink(fs, of);
		}
	}
	pthread_mutex_unlock(&fs->lock);

	if (ready && r == 0)
		text_len = kfs_render_status(&view, text, sizeof(text));
	if (text_len >= (int)sizeof(text))
		text_len = (int)sizeof(text) - 1;
	while ((waiter = ready)) {
		ready = waiter->next;
		if (r < 0)
			fuse_reply_err(waiter->req, -r);
		else
			reply_slice(waiter->req, text, (size_t)text_len, waiter->size, waiter->offset);
		free(waiter);
	}
	for (index = 0; index < handle_count; index++) {
		fuse_lowlevel_notify_poll(handles[index]);
		fuse_pollhandle_destroy(handles[index]);
	}
	free(handles);
}

/* ------------------------------------------------------------------ */
/* Life                                                                */
/* ------------------------------------------------------------------ */

int kfs_fs_create(bool single_threaded, struct kfs_fs **result)
{
	struct kfs_fs *fs = calloc(1, sizeof(*fs));

	if (!fs)
		return -ENOMEM;
	fs->offload_ctl = single_threaded;
	pthread_cond_init(&fs->ctl_threads_done, NULL);
	fs->owner_uid = getuid();
	fs->owner_gid = getgid();
	clock_gettime(CLOCK_REALTIME, &fs->started);
	pthread_mutex_init(&fs->lock, NULL);
	*result = fs;
	return 0;
}

void kfs_fs_attach(struct kfs_fs *fs, struct kfs_service *svc)
{
	fs->svc = svc;
}

void kfs_fs_destroy(struct kfs_fs *fs)
{
	struct waiter *waiter;

	if (!fs)
		return;
	while ((waiter = fs->waiters)) {
		fs->waiters = waiter->next;
		fuse_reply_err(waiter->req, EINTR);
		free(waiter);
	}
	while (fs->pollers)
		poller_drop(fs, fs->pollers);
	/* Files still open when the session ended: their release never comes. */
	while (fs->open_files) {
		struct open_file *of = fs->open_files;

		open_file_unlink(fs, of);
		open_file_free(of);
	}
	pthread_cond_destroy(&fs->ctl_threads_done);
	pthread_mutex_destroy(&fs->lock);
	free(fs);
}
