/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * uring_deny: run a program under a seccomp filter that refuses io_uring
 * the way Docker's default profile does: io_uring_setup(2),
 * io_uring_enter(2) and io_uring_register(2) fail with EPERM, every other
 * system call is allowed.  The filter is inherited by the program's
 * threads and children, so a kcopydfs started under it keeps it.  For
 * tests/test-io-engine.sh.
 *
 * Build: part of the tree when configure found libseccomp (`make` builds
 *        tests/uring-deny; Debian: libseccomp-dev).
 * Run:   uring-deny PROGRAM [ARGUMENTS...]
 *
 * The filter sets no_new_privs (as libseccomp does by default, and as an
 * unprivileged caller must): a set-user-ID program run under it does not
 * gain its owner's rights.
 *
 * Exit status: the program's; 125 if the filter could not be installed,
 * 126 if the program could not be run, 127 if it was not found (as env(1)).
 */
#include "config.h"

#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The system calls refused, by name: a libseccomp that does not know one fails the install. */
static const char *const refused[] = { "io_uring_setup", "io_uring_enter", "io_uring_register" };

/*
 * deny_io_uring() - install the filter on this thread (the only one).
 * Return: 0, or -errno of the libseccomp call that failed (said on stderr).
 */
static int deny_io_uring(void)
{
	scmp_filter_ctx ctx;
	unsigned int index;
	int r;

	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx) {
		fprintf(stderr, "uring-deny: seccomp_init failed\n");
		return -ENOMEM;
	}
	for (index = 0; index < sizeof(refused) / sizeof(refused[0]); index++) {
		int nr = seccomp_syscall_resolve_name(refused[index]);

		if (nr == __NR_SCMP_ERROR) {
			fprintf(stderr, "uring-deny: this libseccomp does not know %s\n", refused[index]);
			r = -ENOSYS;
			goto out_release;
		}
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
		if (r < 0) {
			fprintf(stderr, "uring-deny: seccomp_rule_add(%s): %s\n", refused[index], strerror(-r));
			goto out_release;
		}
	}
	r = seccomp_load(ctx);
	if (r < 0)
		fprintf(stderr, "uring-deny: seccomp_load: %s\n", strerror(-r));
out_release:
	seccomp_release(ctx);
	return r;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: uring-deny PROGRAM [ARGUMENTS...]\n");
		return 125;
	}
	if (deny_io_uring() < 0)
		return 125;
	execvp(argv[1], argv + 1);
	fprintf(stderr, "uring-deny: %s: %s\n", argv[1], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
