/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * uring_deny: run a program under a seccomp filter that refuses io_uring
 * the way Docker's default profile does: io_uring_setup(2),
 * io_uring_enter(2) and io_uring_register(2) fail with EPERM, every other
 * system call is allowed; or, with -e and -c, the way other profiles might:
 * crun's and podman's answer ENOSYS, and one could allow the ring to be
 * made and refuse io_uring_enter alone.  The filter is inherited by the
 * program's threads and children, so a kcopydfs started under it keeps
 * it.  For tests/test-io-engine.sh and tests/test-adversary-uring.sh.
 *
 * Build: part of the tree when configure found libseccomp (`make` builds
 *        tests/uring-deny; Debian: libseccomp-dev).
 * Run:   uring-deny [-e ERRNO] [-c setup,enter,register] PROGRAM [ARGUMENTS...]
 *        (ERRNO a number, 1 (EPERM) by default; the calls refused, all
 *        three by default)
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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The system calls that may be refused, by name: a libseccomp that does not know one fails the install. */
static const struct {
	const char *word;	/* in -c */
	const char *name;
} calls[] = {
	{ "setup", "io_uring_setup" },
	{ "enter", "io_uring_enter" },
	{ "register", "io_uring_register" },
};

/*
 * deny_io_uring() - install the filter on this thread (the only one): the
 * calls whose bits are set in @which fail with @err.
 * Return: 0, or -errno of the libseccomp call that failed (said on stderr).
 */
static int deny_io_uring(unsigned int which, int err)
{
	scmp_filter_ctx ctx;
	unsigned int index;
	int r;

	ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (!ctx) {
		fprintf(stderr, "uring-deny: seccomp_init failed\n");
		return -ENOMEM;
	}
	r = 0;
	for (index = 0; index < sizeof(calls) / sizeof(calls[0]); index++) {
		int nr;

		if (!(which & 1u << index))
			continue;
		nr = seccomp_syscall_resolve_name(calls[index].name);
		if (nr == __NR_SCMP_ERROR) {
			fprintf(stderr, "uring-deny: this libseccomp does not know %s\n", calls[index].name);
			r = -ENOSYS;
			goto out_release;
		}
		r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0);
		if (r < 0) {
			fprintf(stderr, "uring-deny: seccomp_rule_add(%s): %s\n", calls[index].name, strerror(-r));
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

/* parse_calls() - "setup,enter" into bits of calls[].  Return: the bits, or 0 for a word not of them. */
static unsigned int parse_calls(char *list)
{
	unsigned int which = 0, index;
	char *word, *save;

	for (word = strtok_r(list, ",", &save); word; word = strtok_r(NULL, ",", &save)) {
		for (index = 0; index < sizeof(calls) / sizeof(calls[0]); index++)
			if (strcmp(word, calls[index].word) == 0)
				break;
		if (index == sizeof(calls) / sizeof(calls[0]))
			return 0;
		which |= 1u << index;
	}
	return which;
}

int main(int argc, char **argv)
{
	unsigned int which = (1u << (sizeof(calls) / sizeof(calls[0]))) - 1;
	int option, err = EPERM;
	char *end;

	while ((option = getopt(argc, argv, "+e:c:")) != -1) {
		switch (option) {
		case 'e':
			err = (int)strtol(optarg, &end, 10);
			if (*end || err <= 0 || err > 4095)
				goto usage;
			break;
		case 'c':
			which = parse_calls(optarg);
			if (!which)
				goto usage;
			break;
		default:
			goto usage;
		}
	}
	if (optind >= argc)
		goto usage;
	if (deny_io_uring(which, err) < 0)
		return 125;
	execvp(argv[optind], argv + optind);
	fprintf(stderr, "uring-deny: %s: %s\n", argv[optind], strerror(errno));
	return errno == ENOENT ? 127 : 126;

usage:
	fprintf(stderr, "usage: uring-deny [-e ERRNO] [-c setup,enter,register] PROGRAM [ARGUMENTS...]\n");
	return 125;
}
