/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * stall_fuse: a FUSE filesystem that never answers a lookup, as a user
 * could serve one to hold whoever walks into it: the kernel has sent the
 * request, so the walker waits uninterruptibly, SIGKILL or not, until the
 * server answers or goes.  For tests/test-adversary-regions.sh.
 *
 * Build: part of the tree (`make` builds tests/stall-fuse).
 * Run:   stall-fuse MOUNTPOINT    (foreground, one thread, -o allow_other)
 */
#include "config.h"

#define FUSE_USE_VERSION 35
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void stall_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st = { .st_ino = ino, .st_mode = S_IFDIR | 0755, .st_nlink = 2 };

	(void)fi;
	if (ino != FUSE_ROOT_ID) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fuse_reply_attr(req, &st, 0);
}

/* Never answered: the request stays with us until we are killed or unmounted. */
static void stall_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	(void)req;
	(void)parent;
	(void)name;
}

static const struct fuse_lowlevel_ops stall_ops = {
	.getattr = stall_getattr,
	.lookup = stall_lookup,
};

int main(int argc, char *argv[])
{
	char *fuse_argv[] = { argv[0], "-o", "allow_other", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
	struct fuse_session *session;
	int r = 1;

	if (argc != 2) {
		fprintf(stderr, "usage: %s MOUNTPOINT\n", argv[0]);
		return 2;
	}
	session = fuse_session_new(&args, &stall_ops, sizeof(stall_ops), NULL);
	if (!session)
		goto out_free_args;
	if (fuse_set_signal_handlers(session) == 0) {
		/* One thread is enough: a lookup returns at once, its request left unanswered. */
		if (fuse_session_mount(session, argv[1]) == 0) {
			r = fuse_session_loop(session) != 0;
			fuse_session_unmount(session);
		}
		fuse_remove_signal_handlers(session);
	}
	fuse_session_destroy(session);
out_free_args:
	fuse_opt_free_args(&args);
	return r;
}
